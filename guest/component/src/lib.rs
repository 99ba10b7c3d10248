//! The default Call-via-Work policy component (`cvw:policy@1.0.0`): exports
//! [`CallViaWork`] from `cvw-guest-logic`, where the logic, its tests and the wit-bindgen
//! skin live. Re-exports that crate so users of `cvw-guest` as a library see one API.

pub use cvw_guest_logic::*;

#[cfg(all(target_arch = "wasm32", feature = "component"))]
cvw_guest_logic::export_policy!(CvwComponent, cvw_guest_logic::CallViaWork);
