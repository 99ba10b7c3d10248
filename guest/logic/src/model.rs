//! The contract's data, as the logic speaks it: the types live in `cvw-model` (shared with
//! the host) and are re-exported here so that policies keep writing
//! `cvw_guest_logic::model::Decision`. `component.rs` converts them to and from the
//! generated bindings. Not here: any type of its own.

pub use cvw_model::*;
