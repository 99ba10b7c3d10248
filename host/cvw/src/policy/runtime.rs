//! [`PolicyHost`]: publishing policy versions (compile → link → instantiate → describe →
//! configure → check-user → atomic swap) and calling their hooks on per-thread instances
//! under limits, with the failure mode applied when a call fails.
//!
//! Owns the published snapshot, the per-thread instance cache and failure classification.
//! Does not own the engine knobs (`engine.rs`), the imports and what the stores share
//! (`state.rs`), which decisions each hook may answer (`contract.rs`) or the mapping to the
//! host model (`bindings.rs`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwapOption;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use super::bindings::{self, Policy, PolicyPre, wit};
use super::bounds;
use super::contract::Hook;
use super::engine::{self, EpochTicker};
use super::model::{BranchReply, ClickToCall, Decision, DialOut, ReplyAction, RequestContext};
use super::state::{self, HostState, Shared, VersionEnv};
use super::{
    CONTRACT, DirectoryView, FailureKind, LoadError, MetricsSnapshot, Outcome, PolicyFailure,
};
use super::{PolicyVersion, RuntimeSettings};
use crate::message::SipRequest;

/// Compiled components kept by digest, so swapping back to a recent version (or
/// republishing for a new directory) skips Cranelift.
const COMPILED_CACHE: usize = 8;
/// Warm instances kept per thread, across hosts (tests and benchmarks run several).
const WARM_PER_THREAD: usize = 4;

static NEXT_HOST_ID: AtomicU64 = AtomicU64::new(1);

/// Runs policy components. Cheap to clone; every clone shares the engine, the published
/// version and the counters.
#[derive(Clone)]
pub struct PolicyHost {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    engine: Engine,
    linker: Linker<HostState>,
    settings: RuntimeSettings,
    deadline_ticks: u64,
    /// Ticks of one overtime window ([`engine::PROBE`]).
    probe_ticks: u64,
    shared: Arc<Shared>,
    current: ArcSwapOption<Snapshot>,
    publishing: Mutex<PublishState>,
    _ticker: EpochTicker,
}

/// One published version: what a thread needs to make its own instance.
struct Snapshot {
    version: PolicyVersion,
    component: Component,
    pre: PolicyPre<HostState>,
    env: Arc<VersionEnv>,
    config: Vec<(String, String)>,
}

/// What a successful probe learnt about a module.
struct Probed {
    pre: PolicyPre<HostState>,
    info: super::model::PolicyInfo,
    config: Vec<(String, String)>,
}

#[derive(Default)]
struct PublishState {
    last_generation: u64,
    compiled: HashMap<String, Component>,
}

/// A thread's instance of one version of one host.
struct Warm {
    host: u64,
    generation: u64,
    store: Store<HostState>,
    exports: Exports,
}

/// What the hooks are called through: the generated bindings, and `on-request` checked
/// for [`bindings::call_on_request`].
struct Exports {
    policy: Policy,
    on_request: bindings::OnRequestFunc,
}

thread_local! {
    static WARM: RefCell<Vec<Warm>> = const { RefCell::new(Vec::new()) };
}

/// Takes this thread's instance of `host` if it runs `generation`; an instance of an
/// older generation is dropped.
fn take_warm(host: u64, generation: u64) -> Option<Warm> {
    WARM.with_borrow_mut(|warm| {
        let index = warm.iter().position(|w| w.host == host)?;
        let found = warm.swap_remove(index);
        (found.generation == generation).then_some(found)
    })
}

fn put_warm(instance: Warm) {
    WARM.with_borrow_mut(|warm| {
        if warm.len() >= WARM_PER_THREAD {
            warm.remove(0);
        }
        warm.push(instance);
    });
}

impl PolicyHost {
    /// Creates the engine and starts its epoch ticker. Nothing is published yet: hooks get
    /// the failure mode (kind `no-policy`) until [`PolicyHost::publish`] succeeds.
    pub fn new(settings: RuntimeSettings) -> anyhow::Result<Self> {
        let engine = engine::new_engine(settings.max_wasm_stack, settings.parallel_compile)
            .map_err(|e| anyhow::anyhow!("wasmtime engine: {e:#}"))?;
        let mut linker = Linker::new(&engine);
        state::add_to_linker(&mut linker).map_err(|e| anyhow::anyhow!("policy imports: {e:#}"))?;
        let ticker = EpochTicker::start(engine.clone(), settings.epoch_tick)?;
        let shared = Arc::new(Shared::new(settings.clock));
        Ok(Self {
            inner: Arc::new(Inner {
                id: NEXT_HOST_ID.fetch_add(1, Ordering::Relaxed),
                engine,
                linker,
                deadline_ticks: engine::deadline_ticks(settings.deadline, settings.epoch_tick),
                probe_ticks: engine::deadline_ticks(engine::PROBE, settings.epoch_tick),
                settings,
                shared,
                current: ArcSwapOption::empty(),
                publishing: Mutex::new(PublishState::default()),
                _ticker: ticker,
            }),
        })
    }

    pub fn settings(&self) -> &RuntimeSettings {
        &self.inner.settings
    }

    /// Pins what the policy's clock returns (`None`: real time), for scenario runs.
    pub fn set_clock(&self, unix_seconds: Option<u64>) {
        self.inner.shared.set_clock(unix_seconds);
    }

    /// Compiles `wasm` (on the caller's thread, never on a request thread), checks it
    /// end to end against `directory`, and only then makes it the current version.
    pub fn publish(
        &self,
        wasm: &[u8],
        origin: &str,
        directory: Arc<dyn DirectoryView>,
    ) -> Result<PolicyVersion, LoadError> {
        let digest = hex(&Sha256::digest(wasm));
        let mut state = self.lock_publishing();
        let component = match state.compiled.get(&digest) {
            Some(component) => component.clone(),
            None => {
                let component = Component::new(&self.inner.engine, wasm).map_err(|e| {
                    self.refused(LoadError::Compile {
                        origin: origin.to_owned(),
                        reason: render(&e),
                    })
                })?;
                if state.compiled.len() >= COMPILED_CACHE {
                    state.compiled.clear();
                }
                state.compiled.insert(digest.clone(), component.clone());
                component
            }
        };
        self.validate_and_swap(&mut state, component, digest, origin, directory)
    }

    pub fn publish_file(
        &self,
        path: &Path,
        directory: Arc<dyn DirectoryView>,
    ) -> Result<PolicyVersion, LoadError> {
        let wasm = std::fs::read(path).map_err(|source| {
            self.refused(LoadError::Read {
                path: path.to_owned(),
                source,
            })
        })?;
        self.publish(&wasm, &path.display().to_string(), directory)
    }

    /// Compiles `wasm` to this engine's native code without publishing it: the artifact a
    /// process that forks its workers (Kamailio) compiles once and every worker loads with
    /// [`PolicyHost::publish_precompiled`]. Runs no guest code and starts no thread.
    pub fn precompile(&self, wasm: &[u8], origin: &str) -> Result<Vec<u8>, LoadError> {
        self.inner.engine.precompile_component(wasm).map_err(|e| {
            self.refused(LoadError::Compile {
                origin: origin.to_owned(),
                reason: render(&e),
            })
        })
    }

    /// Publishes an artifact of [`PolicyHost::precompile`] (mapped from the file, not
    /// compiled again), checked end to end like [`PolicyHost::publish`]. `digest` is the
    /// SHA-256 of the component it was compiled from.
    ///
    /// # Safety
    /// `artifact` must be a file written from [`PolicyHost::precompile`]'s output by a
    /// host with the same [`RuntimeSettings`], and must not change while it is mapped:
    /// wasmtime runs its machine code as it finds it.
    pub unsafe fn publish_precompiled(
        &self,
        artifact: &Path,
        digest: String,
        origin: &str,
        directory: Arc<dyn DirectoryView>,
    ) -> Result<PolicyVersion, LoadError> {
        let mut state = self.lock_publishing();
        // SAFETY: the caller vouches that the file is our own precompiled artifact.
        let component = unsafe { Component::deserialize_file(&self.inner.engine, artifact) }
            .map_err(|e| {
                self.refused(LoadError::Compile {
                    origin: origin.to_owned(),
                    reason: render(&e),
                })
            })?;
        self.validate_and_swap(&mut state, component, digest, origin, directory)
    }

    /// Publishes the current component again with a new directory (a directory reload):
    /// configure and check-user run against it before it replaces the old one.
    pub fn republish_with(
        &self,
        directory: Arc<dyn DirectoryView>,
    ) -> Result<PolicyVersion, LoadError> {
        let mut state = self.lock_publishing();
        let Some(current) = self.inner.current.load_full() else {
            return Err(self.refused(LoadError::NothingPublished));
        };
        let digest = current.version.digest.clone();
        self.validate_and_swap(
            &mut state,
            current.component.clone(),
            digest,
            &current.version.origin,
            directory,
        )
    }

    pub fn current(&self) -> Option<PolicyVersion> {
        self.inner
            .current
            .load()
            .as_ref()
            .map(|s| s.version.clone())
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.shared.counters.snapshot()
    }

    pub fn on_request(&self, req: &SipRequest, ctx: &RequestContext) -> Outcome<Decision> {
        self.decide(Hook::Request, Some(req), |store, exports| {
            let directory = store.data().env.directory.clone();
            let callee = bindings::callee_address(req).and_then(|uri| directory.lookup_ref(uri));
            let ctx = bindings::request_context(ctx, req, callee.as_deref());
            let handle = store.data_mut().lend(req);
            bindings::call_on_request(store, &exports.on_request, handle, ctx)
        })
    }

    pub fn on_reply(&self, req: &SipRequest, reply: &BranchReply) -> Outcome<ReplyAction> {
        self.run(
            Hook::Reply,
            Some(req),
            |store, exports| {
                let handle = store.data_mut().lend(req);
                let reply = wit::BranchReply::from(reply.clone());
                exports
                    .policy
                    .cvw_policy_hooks()
                    .call_on_reply(store, handle, &reply)
                    .map(ReplyAction::from)
            },
            |_| Ok(()),
            // A failed reply hook must not cancel a branch that may be the one to answer.
            || ReplyAction::Continue,
        )
    }

    pub fn on_failure(&self, req: &SipRequest, failure: &BranchReply) -> Outcome<Decision> {
        self.decide(Hook::Failure, Some(req), |store, exports| {
            let handle = store.data_mut().lend(req);
            let failure = wit::BranchReply::from(failure.clone());
            exports
                .policy
                .cvw_policy_hooks()
                .call_on_failure(store, handle, &failure)
                .map(Decision::from)
        })
    }

    /// Under [`super::FailureMode::Open`] a failed call returns `Decision::Continue`, which
    /// the origination service treats as "no plan".
    pub fn on_click_to_call(&self, r: &ClickToCall) -> Outcome<Decision> {
        self.decide(Hook::ClickToCall, None, |store, exports| {
            let r = wit::ClickToCall::from(r.clone());
            exports
                .policy
                .cvw_policy_hooks()
                .call_on_click_to_call(store, &r)
                .map(Decision::from)
        })
    }

    pub fn on_dial_out(&self, r: &DialOut) -> Outcome<Decision> {
        self.decide(Hook::DialOut, None, |store, exports| {
            let r = wit::DialOut::from(r.clone());
            exports
                .policy
                .cvw_policy_hooks()
                .call_on_dial_out(store, &r)
                .map(Decision::from)
        })
    }

    fn decide(
        &self,
        hook: Hook,
        req: Option<&SipRequest>,
        call: impl FnOnce(&mut Store<HostState>, &Exports) -> wasmtime::Result<Decision>,
    ) -> Outcome<Decision> {
        let mode = &self.inner.settings.failure_mode;
        self.run(hook, req, call, |d| hook.check(d), || mode.decision())
    }

    /// One hook call on this thread's instance: the heart of the request path.
    fn run<T>(
        &self,
        hook: Hook,
        req: Option<&SipRequest>,
        call: impl FnOnce(&mut Store<HostState>, &Exports) -> wasmtime::Result<T>,
        check: impl FnOnce(&T) -> Result<(), String>,
        fallback: impl FnOnce() -> T,
    ) -> Outcome<T> {
        let call_id = req.map_or("-", SipRequest::call_id);
        let (mut warm, generation) = {
            // The guard is dropped before the hook runs (a slow call must not pin it);
            // only a first call on this thread instantiates under it.
            let current = self.inner.current.load();
            let Some(snapshot) = current.as_ref() else {
                return self.failed(
                    hook,
                    call_id,
                    0,
                    FailureKind::NoPolicy,
                    "no policy published".into(),
                    fallback,
                );
            };
            let generation = snapshot.version.generation;
            match take_warm(self.inner.id, generation) {
                Some(warm) => (warm, generation),
                None => match self.instantiate(snapshot) {
                    Ok(warm) => (warm, generation),
                    Err(detail) => {
                        return self.failed(
                            hook,
                            call_id,
                            generation,
                            FailureKind::Instantiate,
                            detail,
                            fallback,
                        );
                    }
                },
            }
        };
        self.arm(&mut warm.store, hook.name());
        let result = call(&mut warm.store, &warm.exports);
        warm.store.data_mut().end_call();
        let failure = match result {
            Ok(value) => match check(&value) {
                Ok(()) => {
                    put_warm(warm);
                    self.inner.shared.counters.decision();
                    return Outcome {
                        value,
                        generation,
                        failure: None,
                    };
                }
                Err(detail) => (FailureKind::InvalidDecision, detail),
            },
            Err(e) => (classify(warm.store.data(), &e), render(&e)),
        };
        // `warm` is dropped here: after a trap the instance is poisoned, and after a wrong
        // answer its state is suspect.
        self.failed(hook, call_id, generation, failure.0, failure.1, fallback)
    }

    fn failed<T>(
        &self,
        hook: Hook,
        call_id: &str,
        generation: u64,
        kind: FailureKind,
        detail: String,
        fallback: impl FnOnce() -> T,
    ) -> Outcome<T> {
        self.inner.shared.counters.failure(kind);
        tracing::warn!(call_id, generation, hook = hook.name(), ?kind, %detail, "policy failed; failure mode applied");
        Outcome {
            value: fallback(),
            generation,
            failure: Some(PolicyFailure { kind, detail }),
        }
    }

    fn new_store(&self, env: Arc<VersionEnv>) -> Store<HostState> {
        let mut store = Store::new(
            &self.inner.engine,
            HostState::new(env, self.inner.settings.memory_limit_bytes),
        );
        store.limiter(|state| &mut state.limiter);
        let (ticks, probe) = (self.inner.deadline_ticks, self.inner.probe_ticks);
        store.epoch_deadline_callback(move |mut store| {
            Ok(match store.data_mut().overtime.extend(ticks, probe) {
                Some(more) => UpdateDeadline::Continue(more),
                None => UpdateDeadline::Interrupt,
            })
        });
        store
    }

    /// Starts the deadline of one guest call.
    fn arm(&self, store: &mut Store<HostState>, hook: &'static str) {
        store.set_epoch_deadline(self.inner.deadline_ticks);
        store.data_mut().begin_call(hook);
    }

    /// A fresh instance of `snapshot` for this thread, configured as the contract requires.
    fn instantiate(&self, snapshot: &Snapshot) -> Result<Warm, String> {
        let mut store = self.new_store(snapshot.env.clone());
        self.arm(&mut store, "instantiate");
        let exports = Self::exports(&snapshot.pre, &mut store).map_err(|e| render(&e))?;
        let policy = &exports.policy;
        self.arm(&mut store, "configure");
        match policy
            .cvw_policy_hooks()
            .call_configure(&mut store, &snapshot.config)
        {
            Ok(Ok(())) => {}
            Ok(Err(refusal)) => return Err(format!("configure refused: {refusal}")),
            Err(e) => return Err(format!("configure: {}", render(&e))),
        }
        store.data_mut().end_call();
        Ok(Warm {
            host: self.inner.id,
            generation: snapshot.version.generation,
            store,
            exports,
        })
    }

    fn exports(
        pre: &PolicyPre<HostState>,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Exports> {
        let instance = pre.instance_pre().instantiate(&mut *store)?;
        Ok(Exports {
            policy: Policy::new(&mut *store, &instance)?,
            on_request: bindings::on_request_func(store, &instance)?,
        })
    }

    fn lock_publishing(&self) -> MutexGuard<'_, PublishState> {
        // Poisoned only if a publish panicked; its state (a counter and a cache) is sound.
        self.inner
            .publishing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn refused(&self, error: LoadError) -> LoadError {
        self.inner.shared.counters.refused_load();
        tracing::warn!(step = error.step(), %error, "policy not published; the current one keeps serving");
        error
    }

    fn validate_and_swap(
        &self,
        state: &mut PublishState,
        component: Component,
        digest: String,
        origin: &str,
        directory: Arc<dyn DirectoryView>,
    ) -> Result<PolicyVersion, LoadError> {
        let generation = state.last_generation + 1;
        let env = Arc::new(VersionEnv {
            generation,
            directory: directory.clone(),
            shared: self.inner.shared.clone(),
        });
        let Probed { pre, info, config } = self
            .probe(&component, &env, origin)
            .map_err(|e| self.refused(e))?;
        let version = PolicyVersion {
            generation,
            digest,
            origin: origin.to_owned(),
            info,
            contract: CONTRACT,
        };
        self.inner.current.store(Some(Arc::new(Snapshot {
            version: version.clone(),
            component,
            pre,
            env,
            config,
        })));
        state.last_generation = generation;
        self.inner.shared.counters.swap();
        tracing::info!(generation, origin, digest = %version.digest, policy = %version.info.name,
            policy_version = %version.info.version, "policy published");
        Ok(version)
    }

    /// Link, instantiate, describe, configure and check every user on a probe instance.
    fn probe(
        &self,
        component: &Component,
        env: &Arc<VersionEnv>,
        origin: &str,
    ) -> Result<Probed, LoadError> {
        let origin = origin.to_owned();
        let reason = |e: wasmtime::Error| render(&e);
        let mut linker = self.inner.linker.clone();
        // Imports beyond the contract (the WASI that a std guest pulls in for panics and
        // stdio) trap when called: the policy gets nothing it was not granted.
        let pre = linker
            .define_unknown_imports_as_traps(component)
            .and_then(|()| linker.instantiate_pre(component))
            .and_then(PolicyPre::new)
            .map_err(|e| LoadError::Link {
                origin: origin.clone(),
                reason: reason(e),
            })?;
        let mut store = self.new_store(env.clone());
        self.arm(&mut store, "instantiate");
        // The same exports as a request thread's instance, so that a mismatch in the
        // on-request check refuses the module here rather than failing each call.
        let exports = Self::exports(&pre, &mut store).map_err(|e| LoadError::Instantiate {
            origin: origin.clone(),
            reason: reason(e),
        })?;
        let hooks = exports.policy.cvw_policy_hooks();
        self.arm(&mut store, "describe");
        let info = hooks
            .call_describe(&mut store)
            .map_err(|e| LoadError::Describe {
                origin: origin.clone(),
                reason: reason(e),
            })?;
        let config = env.directory.policy_config();
        self.arm(&mut store, "configure");
        let trapped = |step, e| LoadError::Trap {
            origin: origin.clone(),
            step,
            reason: reason(e),
        };
        let configured = hooks
            .call_configure(&mut store, &config)
            .map_err(|e| trapped("configure", e))?;
        if let Err(refusal) = configured {
            let reason = bounds::printable(&refusal, bounds::MAX_LOG_LINE);
            return Err(LoadError::Configure { origin, reason });
        }
        for user in env.directory.users() {
            let address = user.uc_address.clone();
            self.arm(&mut store, "check-user");
            let checked = hooks
                .call_check_user(&mut store, &user.into())
                .map_err(|e| trapped("check-user", e))?;
            if let Err(refusal) = checked {
                return Err(LoadError::CheckUser {
                    origin,
                    user: address,
                    reason: bounds::printable(&refusal, bounds::MAX_LOG_LINE),
                });
            }
        }
        Ok(Probed {
            pre,
            // Printed by `cvw policy check` and logged at every publish.
            info: bounds::policy_info(info.into()),
            config,
        })
    }
}

/// Memory first: a refused growth surfaces as a plain error or as a trap further on.
fn classify(state: &HostState, error: &wasmtime::Error) -> FailureKind {
    if state.limiter.hit {
        return FailureKind::Memory;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FailureKind::Deadline,
        Some(Trap::StackOverflow) => FailureKind::StackOverflow,
        _ => FailureKind::Trap,
    }
}

/// The error chain on one line, without the wasm backtrace (frame addresses say nothing
/// to an operator; the trap message does).
fn render(error: &wasmtime::Error) -> String {
    let parts: Vec<String> = error
        .chain()
        .map(|cause| cause.to_string())
        .filter(|text| !text.contains("wasm backtrace"))
        .collect();
    let text = if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    };
    ungranted_import(&text).unwrap_or(text)
}

/// The imports a policy is not granted trap with wasmtime's link-time wording ("unknown
/// import: `wasi:cli/environment…` has not been defined"), which reads like a broken
/// module. A Rust std policy calls them when it panics (the panic hook reads
/// `RUST_BACKTRACE`, then writes to stderr), so say that it trapped and why.
fn ungranted_import(text: &str) -> Option<String> {
    let rest = text.split_once("unknown import: `")?.1;
    let (name, _) = rest.split_once("` has not been defined")?;
    Some(format!(
        "the policy called `{name}`, an import it is not granted (a Rust policy does so \
         when it panics)"
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Debug for PolicyHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyHost")
            .field("settings", &self.inner.settings)
            .field("current", &self.current())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin;
    use crate::policy::model::{Contact, RequestContext, Source};
    use crate::policy::static_directory::StaticDirectory;

    fn directory() -> Arc<StaticDirectory> {
        let alice = StaticDirectory::user("sip:alice@corp.example", "tel:+14255550101", true);
        let config = StaticDirectory::minimal_config();
        Arc::new(StaticDirectory::new(vec![alice], config))
    }

    fn publish(path: &str) -> PolicyHost {
        let host = PolicyHost::new(RuntimeSettings::default()).unwrap();
        let wasm = std::fs::read(path).unwrap();
        host.publish(&wasm, path, directory()).unwrap();
        host
    }

    fn call_to_alice() -> (SipRequest, RequestContext) {
        let req = SipRequest::builder("INVITE", "sip:alice@corp.example")
            .from("<sip:bob@corp.example>;tag=1")
            .to("<sip:alice@corp.example>")
            .call_id("runtime-test")
            .build()
            .unwrap();
        let ctx = RequestContext {
            source: Source::Uc,
            contacts: vec![Contact {
                uri: "sip:alice@127.0.0.1:5072".into(),
                next_hop: None,
                instance: None,
                user_agent: None,
            }],
        };
        (req, ctx)
    }

    fn labels(decision: &Decision) -> Vec<&str> {
        match decision {
            Decision::Fork(fork) => fork.targets.iter().map(|t| t.label.as_str()).collect(),
            other => panic!("expected a fork, got {other:?}"),
        }
    }

    /// The `clock` import returns the pinned time: office hours ring the desk phone on a
    /// Wednesday at 10:00 UTC and leave it quiet on a Tuesday at 22:00 (CVW-30).
    #[test]
    fn a_pinned_clock_reaches_the_policy() {
        let host = publish(builtin::OFFICE_HOURS_PATH);
        let (req, ctx) = call_to_alice();
        host.set_clock(Some(1_764_151_200));
        assert_eq!(
            labels(&host.on_request(&req, &ctx).value),
            ["desk", "client"]
        );
        host.set_clock(Some(1_764_108_000));
        assert_eq!(labels(&host.on_request(&req, &ctx).value), ["client"]);
    }

    /// The policy's `metrics.count` lands in the host's snapshot: a refused emergency call
    /// from click to call (CVW-44) counts `cvw_refused`.
    #[test]
    fn guest_counters_reach_the_snapshot() {
        let host = publish(builtin::DEFAULT_POLICY_PATH);
        let outcome = host.on_click_to_call(&ClickToCall {
            user: "sip:alice@corp.example".into(),
            destination: "911".into(),
            callback_override: None,
        });
        assert!(
            matches!(outcome.value, Decision::Refuse(_)),
            "{:?}",
            outcome.value
        );
        assert_eq!(host.metrics().guest.get("cvw_refused"), Some(&1));
        assert_eq!(host.metrics().decisions, 1);
    }
}
