//! The policy runtime: one wasmtime engine, pre-instantiated components, per-thread
//! instances, limits and hot swap.

pub mod directory_view;
pub mod model;

pub use directory_view::DirectoryView;
