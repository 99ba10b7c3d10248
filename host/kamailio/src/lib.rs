//! The Rust half of `cvw.so`, the Kamailio module that runs the Call-via-Work policy inside
//! Kamailio's own workers: no sidecar, no suspend/resume, on the call path.
//!
//! The C half (`c/cvw_mod.c`) is only Kamailio's module interface: parameters, the route
//! functions, RPC, and applying an answer with Kamailio's C API (branches, headers,
//! replies). Everything else is here, and most of it is the host's own code: the policy
//! runtime ([`cvw::policy::PolicyHost`]), the directory, the decision path
//! ([`cvw::decision::DecisionService::verdict`]) and its checks
//! ([`cvw::decision::dialect::NativeAnswer`]).
//!
//! Data flows one way: Kamailio's request (bytes, source, contacts) → [`hooks`] →
//! the policy → [`answer::Held`] (what C applies).
//!
//! OpenSIPS' `cvw.so` (`host/opensips/c/`) links this same library and applies the same
//! answers with OpenSIPS' C API. The crate keeps its first name; nothing in it is
//! Kamailio's but the C half's use of it.
//!
//! Kamailio's process model shapes [`worker`] and [`generations`]: `mod_init` runs in the
//! main process before the workers fork, so it compiles and checks the policy once and
//! leaves no thread running; each worker makes its own runtime (and epoch thread) on its
//! first call; a swap compiles once, in the process that asked for it, and every worker
//! switches to the new generation at its next request.

pub mod answer;
pub mod calls;
pub mod control;
pub mod ffi;
pub mod generations;
pub mod hooks;
pub mod log;
pub mod ring;
pub mod settings;
pub mod worker;
