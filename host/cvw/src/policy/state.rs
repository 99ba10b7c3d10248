//! What a policy instance's store holds, and the host side of the contract's imports:
//! the lent `request` resource, directory lookup, log, metrics and clock.
//!
//! Owns nothing long-lived: the directory and counters are shared `Arc`s of the policy
//! version and of the host. Does not decide what to do when a call fails (`runtime.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::component::{HasSelf, Linker, Resource};

use super::DirectoryView;
use super::bindings::{Policy, cvw::policy as imports, wit};
use super::engine::{Limiter, Overtime};
use super::metrics::Counters;
use crate::message::SipRequest;

/// The `rep` of the one request a hook may read. Each call lends exactly one request, so a
/// single slot replaces a resource table (and its allocation per call).
const LENT_REQUEST: u32 = 0;

/// What every version of one host shares with its stores: the counters the policy bumps
/// and the clock it reads. Lives here, beside the imports that use it, so the runtime
/// depends on this module and not the other way round.
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    /// A fixed `clock.now`, `u64::MAX` for the real time.
    clock: AtomicU64,
}

impl Shared {
    /// Counters at zero and the clock pinned to `clock` (`None`: real time).
    pub(crate) fn new(clock: Option<u64>) -> Self {
        Shared {
            counters: Counters::default(),
            clock: AtomicU64::new(clock.unwrap_or(u64::MAX)),
        }
    }

    pub(crate) fn set_clock(&self, unix_seconds: Option<u64>) {
        self.clock
            .store(unix_seconds.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn now(&self) -> u64 {
        match self.clock.load(Ordering::Relaxed) {
            u64::MAX => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            fixed => fixed,
        }
    }
}

/// Facts fixed for one published policy version.
pub(crate) struct VersionEnv {
    pub(crate) generation: u64,
    pub(crate) directory: Arc<dyn DirectoryView>,
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct HostState {
    pub(crate) env: Arc<VersionEnv>,
    pub(crate) limiter: Limiter,
    /// The request lent to the running hook; `None` between calls.
    lent: Option<SipRequest>,
    /// Which hook runs, for log lines.
    hook: &'static str,
    /// The running call's time past its deadline.
    pub(crate) overtime: Overtime,
}

impl HostState {
    pub(crate) fn new(env: Arc<VersionEnv>, memory_limit_bytes: usize) -> Self {
        Self {
            env,
            limiter: Limiter::new(memory_limit_bytes),
            lent: None,
            hook: "",
            overtime: Overtime::default(),
        }
    }

    /// Marks the start of a guest call (of `hook`, for logs).
    pub(crate) fn begin_call(&mut self, hook: &'static str) {
        self.hook = hook;
        self.overtime = Overtime::default();
    }

    /// Lends `request` for one call; the returned handle is what the hook receives.
    pub(crate) fn lend(&mut self, request: &SipRequest) -> Resource<SipRequest> {
        self.lent = Some(request.clone());
        Resource::new_borrow(LENT_REQUEST)
    }

    pub(crate) fn end_call(&mut self) {
        self.lent = None;
        self.hook = "";
    }

    fn request(&self, handle: &Resource<SipRequest>) -> wasmtime::Result<&SipRequest> {
        match &self.lent {
            Some(request) if handle.rep() == LENT_REQUEST => Ok(request),
            // The component model keeps a borrow from outliving its call, so this is a
            // host bug rather than a guest one; trapping keeps it from going unnoticed.
            _ => Err(wasmtime::format_err!(
                "request handle used outside its hook call"
            )),
        }
    }

    fn call_id(&self) -> &str {
        self.lent.as_ref().map_or("-", SipRequest::call_id)
    }
}

/// Adds the contract's imports to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    Policy::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
}

impl wit::Host for HostState {}

impl wit::HostRequest for HostState {
    fn method(&mut self, this: Resource<SipRequest>) -> wasmtime::Result<String> {
        Ok(self.request(&this)?.method().to_owned())
    }

    fn request_uri(&mut self, this: Resource<SipRequest>) -> wasmtime::Result<String> {
        Ok(self.request(&this)?.request_uri().to_owned())
    }

    fn call_id(&mut self, this: Resource<SipRequest>) -> wasmtime::Result<String> {
        Ok(self.request(&this)?.call_id().to_owned())
    }

    fn from(&mut self, this: Resource<SipRequest>) -> wasmtime::Result<wit::NameAddr> {
        Ok(self.request(&this)?.from().clone().into())
    }

    fn to(&mut self, this: Resource<SipRequest>) -> wasmtime::Result<wit::NameAddr> {
        Ok(self.request(&this)?.to().clone().into())
    }

    fn header(
        &mut self,
        this: Resource<SipRequest>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.request(&this)?.header(&name).map(str::to_owned))
    }

    fn headers(
        &mut self,
        this: Resource<SipRequest>,
        name: String,
    ) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .request(&this)?
            .headers(&name)
            .map(str::to_owned)
            .collect())
    }

    fn has_any_header(
        &mut self,
        this: Resource<SipRequest>,
        names: Vec<String>,
    ) -> wasmtime::Result<bool> {
        let request = self.request(&this)?;
        Ok(names.iter().any(|name| request.header(name).is_some()))
    }

    fn body(&mut self, this: Resource<SipRequest>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.request(&this)?.body().to_vec())
    }

    fn drop(&mut self, _this: Resource<SipRequest>) -> wasmtime::Result<()> {
        // Only borrows are ever lent; the host owns every request.
        Ok(())
    }
}

impl imports::directory::Host for HostState {
    fn lookup(&mut self, address: String) -> Option<wit::User> {
        self.env.directory.lookup(&address).map(wit::User::from)
    }
}

impl imports::log::Host for HostState {
    fn write(&mut self, level: wit::Level, message: String) {
        let (generation, call_id, hook) = (self.env.generation, self.call_id(), self.hook);
        // A policy's line must not forge log lines or flood the log.
        let message = super::bounds::printable(&message, super::bounds::MAX_LOG_LINE);
        match level {
            wit::Level::Debug => tracing::debug!(generation, call_id, hook, "policy: {message}"),
            wit::Level::Info => tracing::info!(generation, call_id, hook, "policy: {message}"),
            wit::Level::Warn => tracing::warn!(generation, call_id, hook, "policy: {message}"),
            wit::Level::Error => tracing::error!(generation, call_id, hook, "policy: {message}"),
        }
    }
}

impl imports::metrics::Host for HostState {
    fn count(&mut self, name: String, delta: u64) {
        self.env.shared.counters.count_guest(name, delta);
    }
}

impl imports::clock::Host for HostState {
    fn now(&mut self) -> u64 {
        self.env.shared.now()
    }
}
