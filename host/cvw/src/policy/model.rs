//! The host's own mirror of the policy contract's data: what goes into a hook and the
//! decision that comes out. Adapters, the origination engine and the call log speak these
//! types, never the generated bindings, so that several contract versions can map onto one
//! model. Serde names are the JSON/TOML names used by scenario files and the decision
//! service.

use serde::{Deserialize, Serialize};

/// One SIP header, `name: value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// A display name and URI (From, To, P-Asserted-Identity).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NameAddr {
    #[serde(default)]
    pub display: String,
    pub uri: String,
}

/// Where a request entered the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Uc,
    Pbx,
    Origination,
    #[default]
    Other,
}

/// A registered contact of the called user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// Facts about an initial request that are not in the message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RequestContext {
    #[serde(default)]
    pub source: Source,
    #[serde(default)]
    pub contacts: Vec<Contact>,
}

/// A final reply the proxy sends itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub code: u16,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
}

/// A Call-via-Work limitation, with a sentence for the person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: u16,
    pub reason: String,
    pub explanation: String,
    pub rule: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForkMode {
    Parallel,
    Serial,
}

/// One branch of a fork.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub label: String,
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<NameAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asserted_identity: Option<NameAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_timeout_ms: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fork {
    pub mode: ForkMode,
    pub targets: Vec<Target>,
}

/// RFC 3725 flow of a two-leg call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flow {
    #[default]
    FlowIv,
    FlowI,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub uri: String,
    pub shows: NameAddr,
    pub ring_timeout_ms: u32,
}

/// A two-leg call: ring `callback`, and when it answers, `callee`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginationPlan {
    pub user: String,
    pub callback: Leg,
    pub callee: Leg,
    pub flow: Flow,
    pub max_duration_s: u32,
}

/// What the proxy does with a request or a failed branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Decision {
    Continue,
    Reply(Reply),
    Fork(Fork),
    Originate(OriginationPlan),
    Refuse(Refusal),
}

/// A branch's reply, for the reply and failure hooks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BranchReply {
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub uri: String,
    pub code: u16,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub headers: Vec<Header>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ReplyAction {
    Continue,
    CancelBranch,
}

/// A click-to-call request from an authenticated user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClickToCall {
    pub user: String,
    pub destination: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_override: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MeetingKind {
    Scheduled,
    MeetNow,
}

/// A conference dial-out to a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialOut {
    pub user: String,
    pub conference_uri: String,
    pub kind: MeetingKind,
}

/// What a policy says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
    pub description: String,
}

/// A named policy's Call-via-Work settings (CVW-1), resolved for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub name: String,
    pub enabled: bool,
    pub admin_callback_number: Option<String>,
    pub use_admin_callback_number: bool,
}

/// A user as the policy sees it (CVW-3): the directory record with its settings resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
