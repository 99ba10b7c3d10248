//! What a policy says about itself ([`PolicyInfo`]) and the severity of its log lines
//! ([`Level`]). Not here: where the host writes them.

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// What a policy says about itself (`describe`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct PolicyInfo {
    /// Short name, e.g. `call-via-work`.
    pub name: String,
    /// The policy's own version.
    pub version: String,
    /// One sentence for operators.
    pub description: String,
}

/// Severity of a log line a policy writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}
