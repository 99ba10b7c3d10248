//! Test support shared by this crate's tests and by policies built on it (feature
//! `testkit`): fake [`Message`] and [`Services`], the example users, and a native runner
//! for the scenario files in `examples/scenarios/` (the agreed format, the same matching
//! rules as `cvw policy test`), so each scenario's expectation is checked against the
//! plain logic before the component exists. Not part of the component.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::env::{Message, Services};
use crate::model::{
    BranchReply, ClickToCall, Contact, Decision, DialOut, Header, Level, MeetingKind, NameAddr,
    RequestContext, Settings, Source, User,
};
use crate::numbers;
use crate::policy::Hooks;

/// A SIP request held in memory.
#[derive(Debug, Clone, Default)]
pub struct FakeMessage {
    pub method: String,
    pub request_uri: String,
    pub call_id: String,
    pub from: NameAddr,
    pub to: NameAddr,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
    /// How often a hook asked for the body (a copy across the component boundary).
    pub body_reads: Cell<u32>,
}

impl FakeMessage {
    pub fn new(method: &str, request_uri: &str) -> Self {
        FakeMessage {
            method: method.to_owned(),
            request_uri: request_uri.to_owned(),
            call_id: "test-call@127.0.0.1".to_owned(),
            from: NameAddr {
                display: String::new(),
                uri: "sip:someone@elsewhere.example".to_owned(),
            },
            to: NameAddr {
                display: String::new(),
                uri: request_uri.to_owned(),
            },
            ..FakeMessage::default()
        }
    }

    pub fn invite(request_uri: &str) -> Self {
        FakeMessage::new("INVITE", request_uri)
    }

    pub fn from(mut self, uri: &str) -> Self {
        self.from = parse_name_addr(uri);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = body.as_bytes().to_vec();
        self
    }
}

/// `"Bob" <sip:bob@x>` or a bare URI.
fn parse_name_addr(text: &str) -> NameAddr {
    match (text.find('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close => NameAddr {
            display: text[..open].trim().trim_matches('"').to_owned(),
            uri: text[open + 1..close].to_owned(),
        },
        _ => NameAddr {
            display: String::new(),
            uri: text.trim().to_owned(),
        },
    }
}

impl Message for FakeMessage {
    fn method(&self) -> String {
        self.method.clone()
    }
    fn request_uri(&self) -> String {
        self.request_uri.clone()
    }
    fn call_id(&self) -> String {
        self.call_id.clone()
    }
    fn from(&self) -> NameAddr {
        self.from.clone()
    }
    fn to(&self) -> NameAddr {
        self.to.clone()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.clone())
    }
    fn headers(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.clone())
            .collect()
    }
    fn body(&self) -> Vec<u8> {
        self.body_reads.set(self.body_reads.get() + 1);
        self.body.clone()
    }
}

/// Directory, log, metrics and clock in memory; what the policy logged and counted is
/// kept for assertions.
#[derive(Debug, Default)]
pub struct FakeServices {
    pub users: Vec<User>,
    pub logs: RefCell<Vec<(Level, String)>>,
    pub counts: RefCell<Vec<(String, u64)>>,
    pub lookups: Cell<u32>,
    pub clock: Cell<u64>,
}

impl FakeServices {
    pub fn with_users(users: Vec<User>) -> Self {
        FakeServices {
            users,
            ..FakeServices::default()
        }
    }

    /// The four example users of `examples/directory.toml`.
    pub fn example() -> Self {
        FakeServices::with_users(users::all())
    }

    pub fn count_of(&self, name: &str) -> u64 {
        self.counts
            .borrow()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, d)| d)
            .sum()
    }
}

/// UC addresses compare without parameters and `<>`, case-insensitively.
fn address_key(address: &str) -> String {
    let a = address.trim();
    let a = match (a.find('<'), a.rfind('>')) {
        (Some(open), Some(close)) if open < close => &a[open + 1..close],
        _ => a,
    };
    let end = a.find([';', '?']).unwrap_or(a.len());
    a[..end].to_ascii_lowercase()
}

/// The directory's lookup rule: by UC address, or by line/callback number (digits).
pub fn find_user<'a>(users: &'a [User], address: &str) -> Option<&'a User> {
    if let Some(number) = numbers::number(address) {
        let matches = |n: &Option<String>| {
            n.as_deref()
                .and_then(numbers::number)
                .is_some_and(|n| numbers::same(&n, &number))
        };
        return users
            .iter()
            .find(|u| matches(&u.line_uri) || matches(&u.callback_number));
    }
    let key = address_key(address);
    users.iter().find(|u| address_key(&u.uc_address) == key)
}

impl Services for FakeServices {
    fn lookup(&self, address: &str) -> Option<User> {
        self.lookups.set(self.lookups.get() + 1);
        find_user(&self.users, address).cloned()
    }
    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }
    fn count(&self, name: &str, delta: u64) {
        self.counts.borrow_mut().push((name.to_owned(), delta));
    }
    fn now(&self) -> u64 {
        self.clock.get()
    }
}

/// The users of `examples/directory.toml`, as the directory resolves them.
pub mod users {
    use super::*;

    fn user(name: &str, display: &str, line: &str, settings: Settings) -> User {
        User {
            uc_address: format!("sip:{name}@corp.example"),
            display_name: display.to_owned(),
            line_uri: Some(line.to_owned()),
            settings,
            ..User::default()
        }
    }

    fn global() -> Settings {
        Settings {
            name: "global".into(),
            enabled: true,
            admin_callback_number: None,
            use_admin_callback_number: false,
        }
    }

    /// Enabled, with her own callback number (CVW-1).
    pub fn alice() -> User {
        User {
            callback_number: Some("+14255550199".into()),
            ..user("alice", "Alice Smith", "tel:+14255550101", global())
        }
    }

    /// Enabled through site `redmond`'s `admins-only` policy: only the admin number.
    pub fn bob() -> User {
        User {
            callback_number: Some("+14255550198".into()),
            site: Some("redmond".into()),
            ..user(
                "bob",
                "Bob Jones",
                "tel:+14255550102",
                Settings {
                    name: "admins-only".into(),
                    enabled: true,
                    admin_callback_number: Some("+14255550100".into()),
                    use_admin_callback_number: true,
                },
            )
        }
    }

    /// Not enabled (policy `off`).
    pub fn carol() -> User {
        user(
            "carol",
            "Carol White",
            "tel:+14255550103",
            Settings {
                name: "off".into(),
                enabled: false,
                admin_callback_number: None,
                use_admin_callback_number: false,
            },
        )
    }

    /// Enabled, no callback number of his own: the desk line is rung.
    pub fn dave() -> User {
        user("dave", "Dave Brown", "tel:+14255550104", global())
    }

    pub fn all() -> Vec<User> {
        vec![alice(), bob(), carol(), dave()]
    }
}

/// The `[policy.config]` of `examples/directory.toml` as pairs.
pub fn config_pairs() -> Vec<(String, String)> {
    [
        ("global_caller_id", "+14255550000"),
        ("pbx_trunk", "sip:127.0.0.1:5090"),
        ("pbx_domain", "pbx.corp.example"),
        ("desk_ring_timeout_ms", "15000"),
        ("pbx_voicemail_timeout_ms", "20000"),
        ("emergency_numbers", "911,112,999"),
        ("destination_deny_prefixes", "1900,1976,44909"),
        ("bridge_numbers", "+14255558000"),
        ("pbx_voicemail_pilot", "+14255559000"),
        ("malicious_call_trace_codes", "*57"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// The example configuration, parsed.
pub fn config() -> crate::config::Config {
    match crate::config::Config::parse(&config_pairs()) {
        Ok(parsed) => parsed.config,
        Err(e) => unreachable!("the example configuration is valid: {e}"),
    }
}

/// A directory file read the way the host reads it (enough for scenarios).
#[derive(Debug, Clone)]
pub struct Directory {
    pub users: Vec<User>,
    pub config: Vec<(String, String)>,
}

/// A TOML value as the `configure` string the host hands over (arrays comma-joined).
fn config_string(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(items) => items
            .iter()
            .map(config_string)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

fn table<'a>(t: &'a toml::Table, key: &str) -> Option<&'a toml::Table> {
    t.get(key).and_then(toml::Value::as_table)
}

fn text(t: &toml::Table, key: &str) -> Option<String> {
    t.get(key).and_then(toml::Value::as_str).map(str::to_owned)
}

fn flag(t: &toml::Table, key: &str) -> bool {
    t.get(key).and_then(toml::Value::as_bool).unwrap_or(false)
}

/// Read a directory file: `[policy.config]`, `[policies.*]`, `[sites]`, `[[users]]`.
pub fn load_directory(path: &Path) -> Result<Directory, String> {
    let source = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let doc: toml::Table = source
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let config = table(&doc, "policy")
        .and_then(|p| table(p, "config"))
        .map(|c| {
            c.iter()
                .map(|(k, v)| (k.clone(), config_string(v)))
                .collect()
        })
        .unwrap_or_default();
    let empty = toml::Table::new();
    let policies = table(&doc, "policies").unwrap_or(&empty);
    let sites = table(&doc, "sites").unwrap_or(&empty);
    let settings = |name: &str| -> Result<Settings, String> {
        let p = table(policies, name)
            .ok_or_else(|| format!("{}: unknown policy {name:?}", path.display()))?;
        Ok(Settings {
            name: name.to_owned(),
            enabled: flag(p, "enabled"),
            admin_callback_number: text(p, "admin_callback_number"),
            use_admin_callback_number: flag(p, "use_admin_callback_number"),
        })
    };
    let mut users = Vec::new();
    for u in doc
        .get("users")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
    {
        let site = text(u, "site");
        let assigned = text(u, "policy").or_else(|| {
            site.as_deref()
                .and_then(|s| sites.get(s))
                .and_then(toml::Value::as_str)
                .map(str::to_owned)
        });
        let resolved = match assigned {
            Some(name) => settings(&name)?,
            None if policies.contains_key("global") => settings("global")?,
            None => Settings::default(),
        };
        users.push(User {
            uc_address: text(u, "uc_address").unwrap_or_default(),
            display_name: text(u, "display_name").unwrap_or_default(),
            line_uri: text(u, "line_uri"),
            callback_number: text(u, "callback_number"),
            site,
            settings: resolved,
            delegation: flag(u, "delegation"),
            team_call: flag(u, "team_call"),
            response_group: flag(u, "response_group"),
        });
    }
    Ok(Directory { users, config })
}

/// The decision in the host's serde form (`cvw-model`'s `serde` feature, tag `decision`).
pub fn decision_json(decision: &Decision) -> Result<Value, serde_json::Error> {
    serde_json::to_value(decision)
}

/// `expected` ⊆ `actual` by the scenario rules; every difference as `path: ...`.
pub fn subset_differences(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    let at = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else if key.starts_with('[') {
            format!("{path}{key}")
        } else {
            format!("{path}.{key}")
        }
    };
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                match a.get(k) {
                    Some(av) => subset_differences(ev, av, &at(k), out),
                    None => out.push(format!("{}: expected {ev}, got nothing", at(k))),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                subset_differences(ev, av, &at(&format!("[{i}]")), out);
            }
        }
        (Value::Array(e), Value::Array(a)) => out.push(format!(
            "{path}: expected {} elements, got {}",
            e.len(),
            a.len()
        )),
        (e, a) if e == a => {}
        (e, a) => out.push(format!("{path}: expected {e}, got {a}")),
    }
}

/// One scenario file: what runs and what must come out.
fn run_with<H: Hooks>(path: &Path) -> Result<(), String> {
    let named = |e: String| format!("{}: {e}", path.display());
    let source = std::fs::read_to_string(path).map_err(|e| named(e.to_string()))?;
    let doc: toml::Table = source
        .parse()
        .map_err(|e: toml::de::Error| named(e.to_string()))?;
    let name = text(&doc, "name").unwrap_or_default();
    let dir_rel = text(&doc, "directory").ok_or_else(|| named("no `directory`".into()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut directory = load_directory(&base.join(dir_rel))?;
    if let Some(over) = table(&doc, "config") {
        for (k, v) in over {
            directory.config.retain(|(key, _)| key != k);
            directory.config.push((k.clone(), config_string(v)));
        }
    }
    let svc = FakeServices::with_users(directory.users.clone());
    if let Some(now) = doc.get("now").and_then(toml::Value::as_integer) {
        svc.clock
            .set(u64::try_from(now).map_err(|e| named(e.to_string()))?);
    }
    let policy = H::configure(&directory.config, &svc).map_err(&named)?;
    for user in &directory.users {
        policy.check_user(user).map_err(&named)?;
    }
    let hook = text(&doc, "hook").unwrap_or_else(|| "request".to_owned());
    let request = table(&doc, "request");
    let msg = request.map(message).unwrap_or_default();
    let reply = table(&doc, "reply").map(branch_reply).unwrap_or_default();
    let actual = match hook.as_str() {
        "request" => decision_json(&policy.on_request(&msg, context(request), &svc)),
        "failure" => decision_json(&policy.on_failure(&msg, &reply, &svc)),
        "reply" => serde_json::to_value(policy.on_reply(&msg, &reply, &svc))
            .map(|action| json!({ "action": action })),
        "click-to-call" => {
            let t =
                table(&doc, "click_to_call").ok_or_else(|| named("no [click_to_call]".into()))?;
            let req = ClickToCall {
                user: text(t, "user").unwrap_or_default(),
                destination: text(t, "destination").unwrap_or_default(),
                callback_override: text(t, "callback_override"),
            };
            decision_json(&policy.on_click_to_call(&req, &svc))
        }
        "dial-out" => {
            let t = table(&doc, "dial_out").ok_or_else(|| named("no [dial_out]".into()))?;
            let req = DialOut {
                user: text(t, "user").unwrap_or_default(),
                conference_uri: text(t, "conference_uri").unwrap_or_default(),
                kind: match text(t, "kind").as_deref() {
                    Some("meet-now") => MeetingKind::MeetNow,
                    _ => MeetingKind::Scheduled,
                },
            };
            decision_json(&policy.on_dial_out(&req, &svc))
        }
        other => return Err(named(format!("unknown hook {other:?}"))),
    }
    .map_err(|e| named(e.to_string()))?;
    let expected = doc
        .get("expect")
        .ok_or_else(|| named("no [expect]".into()))
        .and_then(|e| serde_json::to_value(e).map_err(|e| named(e.to_string())))?;
    let mut diffs = Vec::new();
    subset_differences(&expected, &actual, "", &mut diffs);
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} ({}):\n  {}\n  actual: {actual}",
            name,
            path.display(),
            diffs.join("\n  ")
        ))
    }
}

fn message(t: &toml::Table) -> FakeMessage {
    let mut m = FakeMessage::new(
        &text(t, "method").unwrap_or_else(|| "INVITE".into()),
        &text(t, "uri").unwrap_or_default(),
    );
    if let Some(from) = text(t, "from") {
        m = m.from(&from);
    }
    if let Some(to) = text(t, "to") {
        m.to = parse_name_addr(&to);
    }
    if let Some(body) = text(t, "body") {
        m = m.body(&body);
    }
    for h in t
        .get("headers")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
    {
        m = m.header(
            &text(h, "name").unwrap_or_default(),
            &text(h, "value").unwrap_or_default(),
        );
    }
    m
}

fn context(request: Option<&toml::Table>) -> RequestContext {
    let Some(t) = request else {
        return RequestContext::default();
    };
    let source = match text(t, "source").as_deref() {
        Some("uc") => Source::Uc,
        Some("pbx") => Source::Pbx,
        Some("origination") => Source::Origination,
        _ => Source::Other,
    };
    let contacts = t
        .get("contacts")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
        .map(|c| Contact {
            uri: text(c, "uri").unwrap_or_default(),
            next_hop: text(c, "next_hop"),
            instance: text(c, "instance"),
            user_agent: text(c, "user_agent"),
        })
        .collect();
    RequestContext { source, contacts }
}

fn branch_reply(t: &toml::Table) -> BranchReply {
    BranchReply {
        label: text(t, "label").unwrap_or_default(),
        uri: text(t, "uri").unwrap_or_default(),
        code: t
            .get("code")
            .and_then(toml::Value::as_integer)
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(0),
        reason: text(t, "reason").unwrap_or_default(),
        headers: t
            .get("headers")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(toml::Value::as_table)
            .map(|h| {
                Header::new(
                    &text(h, "name").unwrap_or_default(),
                    text(h, "value").unwrap_or_default(),
                )
            })
            .collect(),
    }
}

/// Run every `*.toml` scenario directly in `dir` with policy `H`; the error lists every
/// failing scenario. Returns how many ran.
pub fn run_scenarios<H: Hooks>(dir: &Path) -> Result<usize, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| run_with::<H>(f).err())
        .collect();
    if failures.is_empty() {
        Ok(files.len())
    } else {
        Err(failures.join("\n\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
    }

    #[test]
    fn the_example_directory_holds_the_fake_users_and_config() {
        let dir = load_directory(&examples().join("directory.toml")).unwrap();
        assert_eq!(dir.users, users::all());
        for pair in config_pairs() {
            assert!(dir.config.contains(&pair), "{pair:?} not in directory.toml");
        }
    }

    #[test]
    fn a_wrong_expectation_is_reported_with_its_path() {
        let expected = json!({ "decision": "fork", "targets": [{ "ring_timeout_ms": 15000 }] });
        let actual = json!({ "decision": "fork", "targets": [{ "label": "desk", "ring_timeout_ms": 20000 }] });
        let mut diffs = Vec::new();
        subset_differences(&expected, &actual, "", &mut diffs);
        assert_eq!(
            diffs,
            ["targets[0].ring_timeout_ms: expected 15000, got 20000"]
        );
    }
}
