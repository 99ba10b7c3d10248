//! A [`DirectoryView`] over a fixed list of users and a config table, for tests,
//! benchmarks and embedders that hold their directory elsewhere. Lookup follows the
//! directory file's rule (CVW-3): UC address case-insensitively, or any number of the
//! user by its digits. Owns nothing of the directory file format (`crate::directory`).

use std::borrow::Cow;

use super::DirectoryView;
use super::model::{Settings, User};

#[derive(Debug, Clone, Default)]
pub struct StaticDirectory {
    users: Vec<User>,
    /// The digits of each user's line and callback numbers, computed once.
    numbers: Vec<Vec<String>>,
    config: Vec<(String, String)>,
}

impl StaticDirectory {
    pub fn new(users: Vec<User>, config: Vec<(String, String)>) -> Self {
        let numbers = users
            .iter()
            .map(|u| {
                [&u.line_uri, &u.callback_number]
                    .into_iter()
                    .flatten()
                    .map(|n| digits(n))
                    .filter(|d| !d.is_empty())
                    .collect()
            })
            .collect();
        Self {
            users,
            numbers,
            config,
        }
    }
}

impl StaticDirectory {
    /// A user under the `global` policy with only a UC address and a line, enabled for
    /// Call via Work or not: the record tests and benchmarks need most.
    pub fn user(uc_address: &str, line_uri: &str, enabled: bool) -> User {
        User {
            uc_address: uc_address.into(),
            display_name: String::new(),
            line_uri: Some(line_uri.into()),
            callback_number: None,
            site: None,
            settings: Settings {
                name: "global".into(),
                enabled,
                admin_callback_number: None,
                use_admin_callback_number: false,
            },
            delegation: false,
            team_call: false,
            response_group: false,
        }
    }

    /// The keys the default policy requires, with a PBX trunk on 127.0.0.1:5090.
    pub fn minimal_config() -> Vec<(String, String)> {
        [
            ("global_caller_id", "+14255550000"),
            ("pbx_trunk", "sip:127.0.0.1:5090"),
            ("pbx_domain", "pbx.corp.example"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec()
    }

    fn find(&self, address: &str) -> Option<&User> {
        let digits = digits(address);
        self.users
            .iter()
            .zip(&self.numbers)
            .find(|(u, numbers)| {
                u.uc_address.eq_ignore_ascii_case(address)
                    || (!digits.is_empty() && numbers.contains(&digits))
            })
            .map(|(u, _)| u)
    }
}

impl DirectoryView for StaticDirectory {
    fn lookup(&self, address: &str) -> Option<User> {
        self.find(address).cloned()
    }

    fn lookup_ref(&self, address: &str) -> Option<Cow<'_, User>> {
        self.find(address).map(Cow::Borrowed)
    }

    fn users(&self) -> Vec<User> {
        self.users.clone()
    }

    fn policy_config(&self) -> Vec<(String, String)> {
        self.config.clone()
    }
}

/// The digits of a number address (`tel:+1 425`, `sip:+1425@pbx;user=phone`); empty when
/// the user part is not a number.
fn digits(address: &str) -> String {
    let rest = address.split_once(':').map_or(address, |(_, rest)| rest);
    let user = rest.split(['@', ';']).next().unwrap_or("");
    let is_number = !user.is_empty()
        && user
            .chars()
            .all(|c| c.is_ascii_digit() || " +-.()".contains(c));
    if is_number {
        user.chars().filter(char::is_ascii_digit).collect()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_by_digits() {
        assert_eq!(digits("tel:+1 425 555 0101"), "14255550101");
        assert_eq!(digits("sip:+14255550101@pbx;user=phone"), "14255550101");
        assert_eq!(digits("sip:alice@corp.example"), "");
    }
}
