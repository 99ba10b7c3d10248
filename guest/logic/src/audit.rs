//! `check-user`: the directory record checks of CVW-3 and CVW-4, run for every user when
//! a directory or policy is loaded. A problem names the user and the field. Not here: the
//! directory file's own syntax (the host's directory loader owns that).

use std::fmt;

use crate::model::User;
use crate::numbers;

/// Why a user record is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserProblem {
    /// CVW-4: enabled without a desk phone to ring.
    NoLineUri { user: String, policy: String },
    /// CVW-4, CVW-40: enabled together with delegation, team call or response group.
    ConflictingFeatures { user: String, features: String },
    /// CVW-1: the policy insists on the admin number but has none.
    NoAdminNumber { user: String, policy: String },
    /// CVW-3: a number field that is not a phone number.
    BadNumber {
        user: String,
        field: &'static str,
        value: String,
    },
}

impl fmt::Display for UserProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserProblem::NoLineUri { user, policy } => write!(
                f,
                "user {user}: Call via Work is enabled (policy {policy:?}) but line_uri is \
                 missing; the desk phone's number is required (CVW-4)"
            ),
            UserProblem::ConflictingFeatures { user, features } => write!(
                f,
                "user {user}: Call via Work cannot be combined with {features}; turn one of \
                 them off (CVW-4, CVW-40)"
            ),
            UserProblem::NoAdminNumber { user, policy } => write!(
                f,
                "user {user}: policy {policy:?} sets use_admin_callback_number but has no \
                 admin_callback_number (CVW-1)"
            ),
            UserProblem::BadNumber { user, field, value } => {
                write!(
                    f,
                    "user {user}: {field} {value:?} is not a phone number (CVW-3)"
                )
            }
        }
    }
}

impl std::error::Error for UserProblem {}

/// Check one record (CVW-3, CVW-4). Numbers are checked for every user, the
/// prerequisites only for enabled ones.
pub fn check_user(user: &User) -> Result<(), UserProblem> {
    let bad = |field: &'static str, value: &str| UserProblem::BadNumber {
        user: user.uc_address.clone(),
        field,
        value: value.to_owned(),
    };
    let numbered = [
        ("line_uri", user.line_uri.as_deref()),
        ("callback_number", user.callback_number.as_deref()),
        (
            "admin_callback_number",
            user.settings.admin_callback_number.as_deref(),
        ),
    ];
    for (field, value) in numbered {
        if let Some(value) = value
            && numbers::number(value).is_none()
        {
            return Err(bad(field, value));
        }
    }
    if !user.enabled() {
        return Ok(());
    }
    if user.line_uri.is_none() {
        return Err(UserProblem::NoLineUri {
            user: user.uc_address.clone(),
            policy: user.settings.name.clone(),
        });
    }
    let features = user.conflicting_features();
    if !features.is_empty() {
        return Err(UserProblem::ConflictingFeatures {
            user: user.uc_address.clone(),
            features,
        });
    }
    if user.settings.use_admin_callback_number && user.settings.admin_callback_number.is_none() {
        return Err(UserProblem::NoAdminNumber {
            user: user.uc_address.clone(),
            policy: user.settings.name.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::users;

    #[test]
    fn cvw_3_a_complete_enabled_user_passes() {
        assert_eq!(check_user(&users::alice()), Ok(()));
        assert_eq!(check_user(&users::carol()), Ok(()));
    }

    #[test]
    fn cvw_4_enabled_without_line_uri_is_refused_naming_the_user() {
        let mut u = users::dave();
        u.line_uri = None;
        let err = check_user(&u).unwrap_err().to_string();
        assert!(
            err.contains("sip:dave@corp.example") && err.contains("line_uri"),
            "{err}"
        );
    }

    #[test]
    fn cvw_4_enabled_with_delegation_team_call_or_response_group_is_refused() {
        let mut u = users::dave();
        u.delegation = true;
        u.response_group = true;
        let err = check_user(&u).unwrap_err().to_string();
        assert!(err.contains("sip:dave@corp.example"), "{err}");
        assert!(err.contains("delegation, response group"), "{err}");
        // Not enabled: the features are none of our business.
        let mut c = users::carol();
        c.team_call = true;
        assert_eq!(check_user(&c), Ok(()));
    }

    #[test]
    fn cvw_3_numbers_must_parse_even_for_users_not_enabled() {
        let mut c = users::carol();
        c.callback_number = Some("my mobile".into());
        let err = check_user(&c).unwrap_err().to_string();
        assert!(
            err.contains("callback_number") && err.contains("my mobile"),
            "{err}"
        );
    }

    #[test]
    fn cvw_1_admin_only_policy_needs_an_admin_number() {
        let mut b = users::bob();
        b.settings.admin_callback_number = None;
        let err = check_user(&b).unwrap_err().to_string();
        assert!(
            err.contains("admins-only") && err.contains("sip:bob@corp.example"),
            "{err}"
        );
    }
}
