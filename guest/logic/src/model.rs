//! The policy's own plain mirror of the contract's data (`cvw:policy@1.0.0` types): what a
//! hook gets and the decision it returns. The logic speaks only these types so that it
//! compiles and tests natively; `component.rs` converts them to and from the generated
//! bindings. Not here: any behaviour.

/// One SIP header, `name: value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

impl Header {
    pub fn new(name: &str, value: impl Into<String>) -> Self {
        Header {
            name: name.to_owned(),
            value: value.into(),
        }
    }
}

/// A display name and URI (From, To, P-Asserted-Identity).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameAddr {
    /// Empty for none.
    pub display: String,
    pub uri: String,
}

/// Where a request entered the proxy (decided by the proxy from the transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    Uc,
    Pbx,
    Origination,
    #[default]
    Other,
}

/// One registered contact of the called user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contact {
    pub uri: String,
    pub next_hop: Option<String>,
    pub instance: Option<String>,
    pub user_agent: Option<String>,
}

/// Facts about an initial request that are not in the message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestContext {
    pub source: Source,
    pub contacts: Vec<Contact>,
}

/// A final reply the proxy sends itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub reason: String,
    pub headers: Vec<Header>,
}

/// A Call-via-Work limitation, with a sentence for the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: String,
    pub explanation: String,
    /// The CVW rule that applies, e.g. `CVW-41`.
    pub rule: String,
}

impl Refusal {
    pub fn new(code: u16, reason: &str, explanation: impl Into<String>, rule: &str) -> Self {
        Refusal {
            code,
            reason: reason.to_owned(),
            explanation: explanation.into(),
            rule: rule.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkMode {
    Parallel,
    Serial,
}

/// One branch of a fork.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    pub label: String,
    pub uri: String,
    pub next_hop: Option<String>,
    pub from: Option<NameAddr>,
    pub asserted_identity: Option<NameAddr>,
    pub headers: Vec<Header>,
    pub ring_timeout_ms: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fork {
    pub mode: ForkMode,
    /// At least one.
    pub targets: Vec<Target>,
}

/// RFC 3725 flow of a two-leg call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flow {
    #[default]
    FlowIv,
    FlowI,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub uri: String,
    pub shows: NameAddr,
    pub ring_timeout_ms: u32,
}

/// A two-leg call: ring `callback`, and when it answers, `callee`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginationPlan {
    pub user: String,
    pub callback: Leg,
    pub callee: Leg,
    pub flow: Flow,
    pub max_duration_s: u32,
}

/// What the proxy does with a request or a failed branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Continue,
    Reply(Reply),
    Fork(Fork),
    Originate(OriginationPlan),
    Refuse(Refusal),
}

/// A branch's reply, for the reply and failure hooks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BranchReply {
    pub label: String,
    pub uri: String,
    pub code: u16,
    pub reason: String,
    pub headers: Vec<Header>,
}

impl BranchReply {
    /// Whether the reply carries a header of this name (case-insensitive).
    pub fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyAction {
    Continue,
    CancelBranch,
}

/// A click-to-call request from an authenticated user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClickToCall {
    pub user: String,
    pub destination: String,
    pub callback_override: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeetingKind {
    Scheduled,
    MeetNow,
}

/// A conference dial-out to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialOut {
    pub user: String,
    pub conference_uri: String,
    pub kind: MeetingKind,
}

/// What a policy says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
    pub description: String,
}

/// A named policy's Call-via-Work settings (CVW-1), resolved for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub name: String,
    pub enabled: bool,
    pub admin_callback_number: Option<String>,
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

/// A user as the directory knows them (CVW-3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub uc_address: String,
    pub display_name: String,
    pub line_uri: Option<String>,
    pub callback_number: Option<String>,
    pub site: Option<String>,
    pub settings: Settings,
    pub delegation: bool,
    pub team_call: bool,
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

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}
