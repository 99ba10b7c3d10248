//! A user as the directory knows them, with their Call-via-Work settings resolved: what
//! `directory.lookup` answers and `check-user` checks. Not here: how the host's directory
//! stores users and resolves named policies (`host/cvw/src/directory.rs`).

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// The Call-via-Work settings of a named policy (CVW-1), already resolved by the
/// directory to the most specific assignment (user tag, then site, then global).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Settings {
    /// Name of the assigned policy, `global` for the deployment default.
    pub name: String,
    /// Call via Work is on for users under this policy.
    pub enabled: bool,
    /// The administrator's callback number (digits with optional leading `+`); `None`
    /// when the policy sets none.
    pub admin_callback_number: Option<String>,
    /// true: only the admin number is ever rung on the first leg; false: the user's own
    /// callback number may be used, the admin one is the default.
    pub use_admin_callback_number: bool,
}

impl Default for Settings {
    /// The built-in defaults (CVW-1): policy `global`, Call via Work off.
    fn default() -> Self {
        Settings {
            name: "global".to_owned(),
            enabled: false,
            admin_callback_number: None,
            use_admin_callback_number: false,
        }
    }
}

/// A user as the directory knows them (CVW-3), with their settings resolved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct User {
    /// UC address, e.g. `sip:alice@corp.example`.
    pub uc_address: String,
    /// Display name; empty for none.
    pub display_name: String,
    /// The desk phone's number and the user's work identity, e.g. `tel:+14255550101`;
    /// `None` for a user without a desk line.
    pub line_uri: Option<String>,
    /// The user's own callback number; `None` when they set none.
    pub callback_number: Option<String>,
    /// The site the user belongs to; `None` for none.
    pub site: Option<String>,
    /// The user's resolved Call-via-Work settings.
    pub settings: Settings,
    /// Delegation is on: conflicts with Call via Work (CVW-4, CVW-40).
    pub delegation: bool,
    /// Team call is on: conflicts with Call via Work (CVW-4, CVW-40).
    pub team_call: bool,
    /// The user is in a response group: conflicts with Call via Work (CVW-4, CVW-40).
    pub response_group: bool,
}

impl User {
    /// Call via Work is on for this user.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// The features that conflict with Call via Work (CVW-4, CVW-40), comma-joined; empty
    /// when none is on.
    pub fn conflicting_features(&self) -> String {
        let mut out = String::new();
        for (on, name) in [
            (self.delegation, "delegation"),
            (self.team_call, "team call"),
            (self.response_group, "response group"),
        ] {
            if on {
                if !out.is_empty() {
                    out.push_str(", ");
                }
                out.push_str(name);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicting_features_are_named_in_a_fixed_order() {
        let mut user = User::default();
        assert_eq!(user.conflicting_features(), "");
        user.response_group = true;
        user.delegation = true;
        assert_eq!(user.conflicting_features(), "delegation, response group");
        assert!(!user.enabled());
        user.settings.enabled = true;
        assert!(user.enabled());
    }
}
