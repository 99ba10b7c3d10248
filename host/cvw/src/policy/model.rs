//! The contract's data as the host speaks it: adapters, the origination engine, scenario
//! files and the call log use these types, never the generated bindings, so that several
//! contract versions can map onto one model. The model lives in the `cvw-model` crate,
//! shared with the policies (its `serde` feature, on here, gives the JSON/TOML names of
//! scenario files and the decision service); this module re-exports it so that
//! `crate::policy::model` keeps naming it. Conversions to and from the bindings are in
//! `bindings.rs`. Not here: any type of its own.

pub use cvw_model::*;
