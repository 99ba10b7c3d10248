//! The Call-via-Work policy (CVW-1..51) as plain Rust: the logic compiles and tests
//! natively; `component` is the thin wit-bindgen skin (bindings, conversions and the
//! [`export_policy!`] macro) on `wasm32`. This crate exports no hooks: `cvw-guest` exports
//! [`policy::CallViaWork`], other policies (office hours) export their own. Kept apart
//! from `cvw-guest` because cargo unifies features when several components are built in
//! one invocation: an export switched off by a feature in a shared crate comes back on
//! and collides at link time.

pub mod audit;
pub mod config;
pub mod env;
pub mod incoming;
pub mod limits;
pub mod model;
pub mod numbers;
pub mod origination;
pub mod policy;

pub mod arena;
#[cfg(target_arch = "wasm32")]
pub mod component;

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: arena::HookArena = arena::HookArena;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use env::{Message, Services};
pub use policy::{CallViaWork, Hooks};
