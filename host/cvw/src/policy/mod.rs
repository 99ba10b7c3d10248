//! The policy runtime: one wasmtime engine, pre-instantiated components, per-thread
//! instances, limits and hot swap.
//!
//! Callers (adapters, scenario runner, origination) use [`PolicyHost`] and the types of
//! [`model`]; the generated bindings stay private to this module. The runtime never fails
//! a call: a policy that traps, loops, exhausts its memory or answers out of place gets
//! the operator's [`FailureMode`], and the [`Outcome`] says so.

mod bindings;
pub mod bounds;
pub mod builtin;
mod contract;
pub mod directory_view;
mod engine;
mod metrics;
pub mod model;
mod runtime;
mod state;
pub mod static_directory;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use directory_view::DirectoryView;
pub use metrics::MetricsSnapshot;
pub use runtime::PolicyHost;
pub use static_directory::StaticDirectory;

use model::{Decision, PolicyInfo, Reply};

/// The contract every loaded component must implement.
pub const CONTRACT: &str = "cvw:policy@1.0.0";

/// Limits and failure handling of every hook call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// Wall-clock time a hook call may take. A call still running at the deadline is
    /// interrupted within the next 5 ms if its thread is using CPU (a loop); one that only
    /// waited for a core (a busy machine) is given up to 5× the deadline. Keep it well
    /// above a scheduler slice.
    pub deadline: Duration,
    /// Linear memory one instance may grow to.
    pub memory_limit_bytes: usize,
    /// Native stack the guest may use; deeper recursion traps.
    pub max_wasm_stack: usize,
    pub failure_mode: FailureMode,
    /// What the policy's `clock.now` returns (Unix seconds); `None` is the real time.
    /// Scenario files pin it with `now = ...`; see also [`PolicyHost::set_clock`].
    pub clock: Option<u64>,
    /// Compile on a thread pool. Off in a process that forks after compiling (Kamailio's
    /// `mod_init`): the pool's threads would not exist in the children, whose next compile
    /// would wait for them forever.
    pub parallel_compile: bool,
    /// How often the epoch ticks: a deadline's resolution, and a wake-up of the ticking
    /// thread each time. A process that runs a ticker per worker (Kamailio's module)
    /// takes a coarser tick.
    pub epoch_tick: Duration,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(20),
            memory_limit_bytes: 16 << 20,
            max_wasm_stack: 512 << 10,
            failure_mode: FailureMode::Open,
            clock: None,
            parallel_compile: true,
            epoch_tick: engine::TICK,
        }
    }
}

/// What a request gets when the policy fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureMode {
    /// Route as if there were no policy (`Decision::Continue`): calls keep working, Call
    /// via Work features are off until the policy is fixed.
    Open,
    /// Answer with this reply: nothing is routed around the policy.
    Closed(Reply),
}

impl FailureMode {
    /// The decision of a failed request, failure or origination hook.
    pub fn decision(&self) -> Decision {
        match self {
            FailureMode::Open => Decision::Continue,
            FailureMode::Closed(reply) => Decision::Reply(reply.clone()),
        }
    }

    /// The failure decision within the bounds of a policy's decisions: it replaces those
    /// that are not, so it must reach every proxy itself.
    pub fn check(&self) -> Result<(), String> {
        contract::Hook::Request.check(&self.decision())
    }
}

/// The answer of one hook call.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<T> {
    /// The policy's answer, or the failure mode's when `failure` is set.
    pub value: T,
    /// The policy version that answered (or failed); 0 when none was published.
    pub generation: u64,
    pub failure: Option<PolicyFailure>,
}

/// Why a hook call got the failure mode's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFailure {
    pub kind: FailureKind,
    /// What wasmtime or the validation said, for logs.
    pub detail: String,
}

/// Kinds of policy failure, counted separately in [`MetricsSnapshot::failures`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The call ran past [`RuntimeSettings::deadline`] (e.g. an endless loop).
    Deadline,
    /// The instance wanted more than [`RuntimeSettings::memory_limit_bytes`].
    Memory,
    /// Recursion deeper than [`RuntimeSettings::max_wasm_stack`].
    StackOverflow,
    /// Any other trap: `unreachable`, a panic, a call to an import it was not granted.
    Trap,
    /// The answer does not fit the hook (e.g. `fork` from click-to-call, a fork without
    /// targets, a reply code outside 300..=699) or a field is out of bounds
    /// ([`bounds`]: too long, too many, a line break in a header).
    InvalidDecision,
    /// A fresh instance for this thread could not be created and configured.
    Instantiate,
    /// No policy has been published yet.
    NoPolicy,
}

impl FailureKind {
    pub const ALL: [FailureKind; 7] = [
        FailureKind::Deadline,
        FailureKind::Memory,
        FailureKind::StackOverflow,
        FailureKind::Trap,
        FailureKind::InvalidDecision,
        FailureKind::Instantiate,
        FailureKind::NoPolicy,
    ];
}

/// A published policy: what `cvw policy status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyVersion {
    /// Increases by one with every publish (swap or directory republish); starts at 1.
    pub generation: u64,
    /// SHA-256 of the component bytes, lowercase hex.
    pub digest: String,
    /// Where the bytes came from (a path, `built-in`, ...).
    pub origin: String,
    pub info: PolicyInfo,
    pub contract: &'static str,
}

/// Why a module (or a directory for it) was not published. The old version keeps serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: not a WebAssembly component this host can compile: {reason}")]
    Compile { origin: String, reason: String },
    #[error("{origin}: does not implement the {CONTRACT} world: {reason}")]
    Link { origin: String, reason: String },
    #[error("{origin}: instantiation failed: {reason}")]
    Instantiate { origin: String, reason: String },
    #[error("{origin}: describe failed: {reason}")]
    Describe { origin: String, reason: String },
    #[error("{origin}: configure refused the configuration: {reason}")]
    Configure { origin: String, reason: String },
    /// The policy trapped (or panicked) in `step` instead of answering.
    #[error("{origin}: {step} trapped: {reason}")]
    Trap {
        origin: String,
        step: &'static str,
        reason: String,
    },
    #[error("{origin}: check-user refused user {user}: {reason}")]
    CheckUser {
        origin: String,
        user: String,
        reason: String,
    },
    #[error("no policy is published yet")]
    NothingPublished,
    #[error("the built-in policy was not built with this binary: {reason}")]
    NotBuiltIn { reason: String },
}

impl LoadError {
    /// The publish step that refused the module, for logs and the control API.
    pub fn step(&self) -> &'static str {
        match self {
            LoadError::Read { .. } => "read",
            LoadError::Compile { .. } => "compile",
            LoadError::Link { .. } => "link",
            LoadError::Instantiate { .. } => "instantiate",
            LoadError::Describe { .. } => "describe",
            LoadError::Configure { .. } => "configure",
            LoadError::Trap { step, .. } => step,
            LoadError::CheckUser { .. } => "check-user",
            LoadError::NothingPublished => "republish",
            LoadError::NotBuiltIn { .. } => "built-in",
        }
    }
}
