//! The policy runtime: one wasmtime engine, pre-instantiated components, per-thread
//! instances, limits and hot swap.

pub mod model;
