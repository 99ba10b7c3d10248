//! The policy components built with this binary by `host/build.rs`: the default
//! Call-via-Work policy embedded (so `cvw serve` needs no path), and the example and
//! misbehaving policies as paths for tests and benchmarks. Owns nothing else.

mod generated {
    include!(concat!(env!("OUT_DIR"), "/policies.rs"));
}

/// The default policy's bytes (empty when the guest did not build: prefer
/// [`default_policy`], which says why).
pub use generated::DEFAULT_POLICY;
pub use generated::{DEFAULT_POLICY_PATH, MISBEHAVING_PATH, OFFICE_HOURS_PATH};

use super::LoadError;

/// Origin reported for the embedded default policy.
pub const DEFAULT_ORIGIN: &str = "built-in:cvw-guest";

/// The default policy's component bytes; `Err` when the guest did not build (the build
/// printed a warning saying why).
pub fn default_policy() -> Result<&'static [u8], LoadError> {
    match generated::BUILD_ERROR {
        None => Ok(generated::DEFAULT_POLICY),
        Some(reason) => Err(LoadError::NotBuiltIn {
            reason: reason.to_owned(),
        }),
    }
}
