//! The user directory (CVW-1, CVW-3): users and named policies from a TOML file.
//!
//! Owns parsing and validating the directory file, resolving each user's most specific
//! policy (user tag → site → `global` → built-in defaults) and the lookup index (UC address
//! or number digits) behind the policy's `directory` import. It does not decide anything
//! about calls, and it does not check Call-via-Work prerequisites (CVW-4): that is the
//! policy's `check-user`. A [`Directory`] is an immutable snapshot; a reload builds a new
//! one and the caller keeps the old one when the new file is bad.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::policy::DirectoryView;
use crate::policy::model::{Settings, User};

/// The name of the deployment-wide policy, and of the built-in defaults when it is absent.
pub const GLOBAL_POLICY: &str = "global";

/// A place in a directory file, printed as `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based; 0 when the parser could not say where.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{}:{}", self.file.display(), self.line)
        }
    }
}

/// Why a directory file was refused. Every variant names where, and which user or policy.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("{}: cannot read the directory: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// TOML syntax, a wrong type or an unknown key; `user` when it happened inside a record.
    #[error("{at}: {}{detail}", user_prefix(.user))]
    Syntax {
        at: Location,
        user: Option<String>,
        detail: String,
    },
    #[error("{at}: {owner}: {field} {value:?} is not a number")]
    BadNumber {
        at: Location,
        owner: Owner,
        field: &'static str,
        value: String,
    },
    #[error("{at}: user {value:?}: uc_address must be a sip: or sips: URI with a user part")]
    BadAddress { at: Location, value: String },
    #[error("{at}: {owner}: unknown policy {name:?}")]
    UnknownPolicy {
        at: Location,
        owner: Owner,
        name: String,
    },
    #[error("{at}: user {user}: duplicate uc_address (first defined on line {first_line})")]
    DuplicateUser {
        at: Location,
        user: String,
        first_line: usize,
    },
    #[error("{at}: user {user}: line_uri {number:?} is already the line of {other}")]
    DuplicateLine {
        at: Location,
        user: String,
        number: String,
        other: String,
    },
    #[error("{at}: [policy.config] {key}: a table cannot be handed to the policy as a string")]
    BadConfigValue { at: Location, key: String },
}

fn user_prefix(user: &Option<String>) -> String {
    user.as_ref()
        .map(|u| format!("user {u}: "))
        .unwrap_or_default()
}

/// Who a field belongs to, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    User(String),
    Policy(String),
    Site(String),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::User(u) => write!(f, "user {u}"),
            Owner::Policy(p) => write!(f, "policy {p}"),
            Owner::Site(s) => write!(f, "site {s}"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    #[serde(default)]
    policy: RawPolicySection,
    #[serde(default)]
    policies: BTreeMap<String, Spanned<RawPolicy>>,
    #[serde(default)]
    sites: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    users: Vec<Spanned<RawUser>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicySection {
    #[serde(default)]
    config: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    enabled: bool,
    admin_callback_number: Option<Spanned<String>>,
    #[serde(default)]
    use_admin_callback_number: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    uc_address: Spanned<String>,
    #[serde(default)]
    display_name: String,
    line_uri: Option<Spanned<String>>,
    callback_number: Option<Spanned<String>>,
    site: Option<String>,
    policy: Option<Spanned<String>>,
    #[serde(default)]
    delegation: bool,
    #[serde(default)]
    team_call: bool,
    #[serde(default)]
    response_group: bool,
}

/// Only the address of each record, read leniently, so that a strict-parse error inside a
/// record can name the user it belongs to.
#[derive(Debug, Deserialize)]
struct LenientDirectory {
    #[serde(default)]
    users: Vec<Spanned<LenientUser>>,
}

#[derive(Debug, Deserialize)]
struct LenientUser {
    uc_address: Option<String>,
}

/// A validated, indexed snapshot of the directory file.
#[derive(Debug, Clone)]
pub struct Directory {
    file: PathBuf,
    users: Vec<User>,
    by_address: HashMap<String, usize>,
    by_digits: HashMap<String, usize>,
    config: Vec<(String, String)>,
}

impl Directory {
    /// Read and validate a directory file.
    pub fn load(path: &Path) -> Result<Self, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Validate directory text; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Self, DirectoryError> {
        let lines = LineIndex::new(text, file);
        let raw: RawDirectory = toml::from_str(text).map_err(|e| syntax_error(text, &lines, e))?;
        let config = config_strings(&raw.policy.config, &lines)?;
        let policies = resolve_policies(&raw.policies, &lines)?;
        let site_policies = resolve_sites(&raw.sites, &policies, &lines)?;
        let mut builder = IndexBuilder::default();
        for record in &raw.users {
            let user = build_user(record, &policies, &site_policies, &lines)?;
            builder.add(user, record, &lines)?;
        }
        Ok(Directory {
            file: file.to_path_buf(),
            users: builder.users,
            by_address: builder.by_address,
            by_digits: builder.by_digits,
            config,
        })
    }

    /// The file this snapshot came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The same users with `overrides` replacing or adding `[policy.config]` keys (a
    /// scenario's `[config]` table).
    pub fn with_config(mut self, overrides: impl IntoIterator<Item = (String, String)>) -> Self {
        for (key, value) in overrides {
            match self.config.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => self.config.push((key, value)),
            }
        }
        self
    }

    /// A user by UC address or by any of their numbers.
    pub fn find(&self, address: &str) -> Option<&User> {
        let by_address = normalize_address(address).and_then(|a| self.by_address.get(&a));
        let index =
            by_address.or_else(|| number_digits(address).and_then(|d| self.by_digits.get(&d)));
        index.and_then(|&i| self.users.get(i))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl DirectoryView for Directory {
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

/// Byte offset → line number for error messages.
struct LineIndex {
    starts: Vec<usize>,
    file: PathBuf,
}

impl LineIndex {
    fn new(text: &str, file: &Path) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex {
            starts,
            file: file.to_path_buf(),
        }
    }

    fn at(&self, offset: usize) -> Location {
        let line = match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        Location {
            file: self.file.clone(),
            line,
        }
    }

    fn of<T>(&self, spanned: &Spanned<T>) -> Location {
        self.at(spanned.span().start)
    }
}

fn syntax_error(text: &str, lines: &LineIndex, error: toml::de::Error) -> DirectoryError {
    let span = error.span();
    let at = match &span {
        Some(s) => lines.at(s.start),
        None => Location {
            file: lines.file.clone(),
            line: 0,
        },
    };
    let user = span.and_then(|s| user_around(text, s.start));
    DirectoryError::Syntax {
        at,
        user,
        detail: error.message().trim().to_string(),
    }
}

/// The UC address of the `[[users]]` record that contains `offset`, if the file parses at
/// all when read leniently. TOML spans of array-of-table elements cover only their
/// `[[users]]` header, so a record runs from its header to the next header line.
fn user_around(text: &str, offset: usize) -> Option<String> {
    let lenient: LenientDirectory = toml::from_str(text).ok()?;
    lenient
        .users
        .into_iter()
        .find(|u| {
            let start = u.span().end;
            let end = next_header(text, start);
            u.span().start <= offset && offset < end
        })
        .and_then(|u| u.into_inner().uc_address)
}

/// The offset of the first table header line after `from`, or the end of the text.
fn next_header(text: &str, from: usize) -> usize {
    let rest = text.get(from..).unwrap_or_default();
    let mut offset = from;
    for line in rest.split_inclusive('\n') {
        if line.trim_start().starts_with('[') {
            return offset;
        }
        offset += line.len();
    }
    text.len()
}

/// A TOML value as the string `configure` receives: arrays comma-joined, tables refused.
pub fn config_value_string(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(config_value_string)
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.join(",")),
        toml::Value::Table(_) => None,
    }
}

fn config_strings(
    table: &BTreeMap<String, Spanned<toml::Value>>,
    lines: &LineIndex,
) -> Result<Vec<(String, String)>, DirectoryError> {
    table
        .iter()
        .map(|(key, value)| {
            config_value_string(value.get_ref())
                .map(|s| (key.clone(), s))
                .ok_or_else(|| DirectoryError::BadConfigValue {
                    at: lines.of(value),
                    key: key.clone(),
                })
        })
        .collect()
}

fn resolve_policies(
    raw: &BTreeMap<String, Spanned<RawPolicy>>,
    lines: &LineIndex,
) -> Result<BTreeMap<String, Settings>, DirectoryError> {
    let mut out = BTreeMap::new();
    for (name, policy) in raw {
        let admin = policy.get_ref().admin_callback_number.as_ref();
        if let Some(number) = admin {
            check_plain_number(
                number,
                lines,
                Owner::Policy(name.clone()),
                "admin_callback_number",
            )?;
        }
        out.insert(
            name.clone(),
            Settings {
                name: name.clone(),
                enabled: policy.get_ref().enabled,
                admin_callback_number: admin.map(|n| n.get_ref().trim().to_string()),
                use_admin_callback_number: policy.get_ref().use_admin_callback_number,
            },
        );
    }
    Ok(out)
}

fn resolve_sites(
    raw: &BTreeMap<String, Spanned<String>>,
    policies: &BTreeMap<String, Settings>,
    lines: &LineIndex,
) -> Result<BTreeMap<String, String>, DirectoryError> {
    raw.iter()
        .map(|(site, policy)| {
            if policies.contains_key(policy.get_ref()) {
                Ok((site.clone(), policy.get_ref().clone()))
            } else {
                Err(DirectoryError::UnknownPolicy {
                    at: lines.of(policy),
                    owner: Owner::Site(site.clone()),
                    name: policy.get_ref().clone(),
                })
            }
        })
        .collect()
}

/// The built-in settings when no policy is assigned at any scope (CVW-1).
pub fn default_settings() -> Settings {
    Settings {
        name: GLOBAL_POLICY.to_string(),
        enabled: false,
        admin_callback_number: None,
        use_admin_callback_number: false,
    }
}

fn build_user(
    record: &Spanned<RawUser>,
    policies: &BTreeMap<String, Settings>,
    site_policies: &BTreeMap<String, String>,
    lines: &LineIndex,
) -> Result<User, DirectoryError> {
    let raw = record.get_ref();
    let address = raw.uc_address.get_ref().trim();
    if normalize_address(address).is_none() {
        return Err(DirectoryError::BadAddress {
            at: lines.of(&raw.uc_address),
            value: address.to_string(),
        });
    }
    let owner = || Owner::User(address.to_string());
    if let Some(line_uri) = &raw.line_uri {
        check_number(line_uri, lines, owner(), "line_uri")?;
    }
    if let Some(callback) = &raw.callback_number {
        check_plain_number(callback, lines, owner(), "callback_number")?;
    }
    let settings =
        match &raw.policy {
            Some(name) => policies.get(name.get_ref()).cloned().ok_or_else(|| {
                DirectoryError::UnknownPolicy {
                    at: lines.of(name),
                    owner: owner(),
                    name: name.get_ref().clone(),
                }
            })?,
            None => raw
                .site
                .as_ref()
                .and_then(|site| site_policies.get(site))
                .and_then(|name| policies.get(name))
                .or_else(|| policies.get(GLOBAL_POLICY))
                .cloned()
                .unwrap_or_else(default_settings),
        };
    Ok(User {
        uc_address: address.to_string(),
        display_name: raw.display_name.clone(),
        line_uri: raw
            .line_uri
            .as_ref()
            .map(|s| s.get_ref().trim().to_string()),
        callback_number: raw
            .callback_number
            .as_ref()
            .map(|s| s.get_ref().trim().to_string()),
        site: raw.site.clone(),
        settings,
        delegation: raw.delegation,
        team_call: raw.team_call,
        response_group: raw.response_group,
    })
}

/// A number URI or plain number (line_uri): `tel:+1…`, `sip:+1…@pbx;user=phone`, `+1 425…`.
fn check_number(
    value: &Spanned<String>,
    lines: &LineIndex,
    owner: Owner,
    field: &'static str,
) -> Result<(), DirectoryError> {
    match number_digits(value.get_ref()) {
        Some(_) => Ok(()),
        None => Err(DirectoryError::BadNumber {
            at: lines.of(value),
            owner,
            field,
            value: value.get_ref().clone(),
        }),
    }
}

/// Digits with an optional leading `+` (CVW-1 admin number, callback numbers); no URI.
fn check_plain_number(
    value: &Spanned<String>,
    lines: &LineIndex,
    owner: Owner,
    field: &'static str,
) -> Result<(), DirectoryError> {
    let text = value.get_ref().trim();
    let body = text.strip_prefix('+').unwrap_or(text);
    if !body.is_empty() && body.chars().all(|c| c.is_ascii_digit()) {
        Ok(())
    } else {
        Err(DirectoryError::BadNumber {
            at: lines.of(value),
            owner,
            field,
            value: value.get_ref().clone(),
        })
    }
}

#[derive(Default)]
struct IndexBuilder {
    users: Vec<User>,
    by_address: HashMap<String, usize>,
    by_digits: HashMap<String, usize>,
    /// Line numbers only: two users on one desk line is an error, a shared callback not.
    lines: HashMap<String, usize>,
    address_lines: HashMap<String, usize>,
}

impl IndexBuilder {
    fn add(
        &mut self,
        user: User,
        record: &Spanned<RawUser>,
        lines: &LineIndex,
    ) -> Result<(), DirectoryError> {
        let at = lines.of(&record.get_ref().uc_address);
        // Validated in build_user, so the address normalizes.
        let key = normalize_address(&user.uc_address).unwrap_or_default();
        if let Some(&first_line) = self.address_lines.get(&key) {
            return Err(DirectoryError::DuplicateUser {
                at,
                user: user.uc_address,
                first_line,
            });
        }
        let index = self.users.len();
        let raw = record.get_ref();
        if let (Some(line_uri), Some(spanned)) = (&user.line_uri, &raw.line_uri) {
            // Validated in build_user, so the line has digits.
            let digits = number_digits(line_uri).unwrap_or_default();
            if let Some(other) = self.lines.get(&digits).and_then(|&i| self.users.get(i)) {
                return Err(DirectoryError::DuplicateLine {
                    at: lines.of(spanned),
                    user: user.uc_address,
                    number: line_uri.clone(),
                    other: other.uc_address.clone(),
                });
            }
            self.lines.insert(digits.clone(), index);
            // A line number wins over someone's earlier callback number.
            self.by_digits.insert(digits, index);
        }
        // A callback number may be shared (a team phone): its first owner is found by it,
        // unless it is somebody's line.
        if let Some(digits) = user.callback_number.as_deref().and_then(number_digits) {
            self.by_digits.entry(digits).or_insert(index);
        }
        self.address_lines.insert(key.clone(), at.line);
        self.by_address.insert(key, index);
        self.users.push(user);
        Ok(())
    }
}

/// `sip:alice@corp.example` with lowercase scheme and host, without parameters, port or
/// angle brackets; `None` when this is not a sip/sips URI with a user part.
pub fn normalize_address(address: &str) -> Option<String> {
    let trimmed = address.trim().trim_start_matches('<').trim_end_matches('>');
    let (scheme, rest) = trimmed.split_once(':')?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "sip" && scheme != "sips" {
        return None;
    }
    let (user, host) = rest.split_once('@')?;
    let host = host.split([';', '?', ':']).next().unwrap_or_default();
    // No URI holds these; kept, they would make the form depend on how often it was
    // normalised (a trailing space or `>` of the host is trimmed the second time).
    let bad = |part: &str| {
        part.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    };
    if user.is_empty() || host.is_empty() || bad(user) || bad(host) {
        return None;
    }
    Some(format!("{scheme}:{user}@{}", host.to_ascii_lowercase()))
}

/// The digits of a telephone number in any of its spellings: `tel:+14255550101`,
/// `+1 (425) 555-0101`, `sip:+14255550101@pbx;user=phone`. `None` when it is not a number.
pub fn number_digits(value: &str) -> Option<String> {
    let trimmed = value.trim().trim_start_matches('<').trim_end_matches('>');
    let lower = trimmed
        .get(..5)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let body = if lower.starts_with("tel:") {
        trimmed.get(4..)?
    } else if lower.starts_with("sip:") || lower.starts_with("sips:") {
        let rest = trimmed.split_once(':')?.1;
        rest.split_once('@').map(|(user, _)| user).unwrap_or(rest)
    } else {
        trimmed
    };
    let body = body.split(';').next().unwrap_or_default();
    let body = body.strip_prefix('+').unwrap_or(body);
    let visual = |c: char| matches!(c, ' ' | '-' | '.' | '(' | ')');
    if !body.chars().all(|c| c.is_ascii_digit() || visual(c)) {
        return None;
    }
    let digits: String = body.chars().filter(char::is_ascii_digit).collect();
    (!digits.is_empty()).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzz target `directory_toml` (fuzz/corpus/directory_toml/crash-e7ef0213…):
    /// a host with a space before its port was kept with the space, and normalising the
    /// result again trimmed it, so a user's own normalised address no longer found them.
    #[test]
    fn normalising_twice_changes_nothing_and_white_space_is_no_address() {
        for address in [
            "sip:# Th@e directory\0\0\0P of :vgicemail@pbx]",
            "sip:alice@corp.example :5060",
            "sip:alice@corp.example >;x",
            "sip:al ice@corp.example",
        ] {
            assert_eq!(normalize_address(address), None, "{address:?}");
        }
        let once = normalize_address(" <SIP:alice@Corp.Example:5060;transport=tcp>").unwrap();
        assert_eq!(once, "sip:alice@corp.example");
        assert_eq!(normalize_address(&once).as_deref(), Some(once.as_str()));
    }

    #[test]
    fn numbers_compare_by_digits_in_every_spelling() {
        let want = Some("14255550101".to_string());
        assert_eq!(number_digits("tel:+14255550101"), want);
        assert_eq!(number_digits("+1 425 555 0101"), want);
        assert_eq!(number_digits("sip:+14255550101@pbx;user=phone"), want);
        assert_eq!(
            number_digits("<sip:+1-425-555-0101@pbx.corp.example>"),
            want
        );
        assert_eq!(number_digits("tel:abc"), None);
        assert_eq!(number_digits("sip:alice@corp.example"), None);
        assert_eq!(number_digits(""), None);
    }

    #[test]
    fn addresses_ignore_case_of_scheme_and_host_and_parameters() {
        assert_eq!(
            normalize_address("SIP:alice@Corp.Example;transport=tcp").as_deref(),
            Some("sip:alice@corp.example")
        );
        assert_eq!(
            normalize_address("<sip:alice@corp.example:5060>").as_deref(),
            Some("sip:alice@corp.example")
        );
        assert_eq!(normalize_address("tel:+14255550101"), None);
        assert_eq!(normalize_address("sip:corp.example"), None);
    }

    #[test]
    fn config_arrays_are_comma_joined() {
        let value: toml::Value = toml::from_str::<toml::Table>("a = [\"911\", 112]")
            .map(|t| t["a"].clone())
            .unwrap();
        assert_eq!(config_value_string(&value).as_deref(), Some("911,112"));
    }
}
