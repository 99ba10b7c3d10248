//! The Call-via-Work policy (CVW-1..51) as plain Rust: the logic compiles and tests
//! natively; `component` is the thin wit-bindgen skin that turns it into a
//! `cvw:policy@1.0.0` component on `wasm32`. Other policies depend on this crate with
//! `default-features = false` (no exports of its own) and reuse [`policy::CallViaWork`]
//! and the skin's [`export_policy!`] macro.

pub mod audit;
pub mod config;
pub mod env;
pub mod incoming;
pub mod limits;
pub mod model;
pub mod numbers;
pub mod origination;
pub mod policy;

#[cfg(target_arch = "wasm32")]
pub mod component;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use env::{Message, Services};
pub use policy::{CallViaWork, Hooks};
