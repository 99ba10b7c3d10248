//! What a hook is given besides the SIP request itself: the proxy's facts about an
//! initial request, a branch's reply, a click to call and a conference dial-out; and the
//! two SIP pieces every type shares, [`Header`] and [`NameAddr`]. Not here: the request
//! (the host owns it; a policy reads it through getters) and what a hook answers
//! (`decision`).

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

/// One SIP header as it appears on the wire: `name: value`. Names compare
/// case-insensitively; the host expands compact forms (`f`, `t`, `i`, `m`, `v`) before a
/// policy sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Header {
    /// The header's name, as written (e.g. `History-Info`).
    pub name: String,
    /// Everything after the colon, without the leading whitespace.
    pub value: String,
}

impl Header {
    /// `name: value`.
    pub fn new(name: &str, value: impl Into<String>) -> Self {
        Header {
            name: name.to_owned(),
            value: value.into(),
        }
    }
}

/// A SIP name-addr: the display name and URI of From, To or P-Asserted-Identity (tag and
/// other header parameters removed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct NameAddr {
    /// Display name; empty for none (and when absent from JSON/TOML).
    #[cfg_attr(feature = "serde", serde(default))]
    pub display: String,
    /// A `sip:`, `sips:` or `tel:` URI.
    pub uri: String,
}

/// Where a request entered the proxy. The proxy decides this from the transport (source
/// address lists, the host's own mark), never from anything a caller can forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Source {
    /// A UC soft client or another user of the proxy.
    Uc,
    /// A PBX trunk: the call comes from the desk-phone side (CVW-33).
    Pbx,
    /// A leg the host itself originated (a callback or callee leg, CVW-34).
    Origination,
    /// Any other peer (a carrier, an unknown address); the default when the proxy says
    /// nothing.
    #[default]
    Other,
}

/// One registered contact of the called user, as the proxy's location service holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Contact {
    /// The Contact URI the client registered.
    pub uri: String,
    /// Where to send it (received address / outbound path); `None` to resolve `uri`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub next_hop: Option<String>,
    /// `+sip.instance` of the registration; `None` when the client sent none.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub instance: Option<String>,
    /// The User-Agent of the registration (e.g. to tell a mobile client); `None` when
    /// unknown.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub user_agent: Option<String>,
}

/// Facts about an initial request that are not in the message itself. (The contract's
/// `request-context` also carries the method, the Request-URI, `joins-dialog` and an
/// `INVITE`'s callee; the host fills those in from the message and its directory when it
/// calls the policy, and the policy's skin reads them back through its `Message` and
/// `Services`, so they are not part of this model.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct RequestContext {
    /// Where the request came from; [`Source::Other`] when absent.
    #[cfg_attr(feature = "serde", serde(default))]
    pub source: Source,
    /// The called user's registered soft clients; empty when the proxy did not look them
    /// up or the user has none.
    #[cfg_attr(feature = "serde", serde(default))]
    pub contacts: Vec<Contact>,
}

/// A branch's reply, as the reply and failure hooks see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct BranchReply {
    /// The target's label (`desk`, `client`, ...); empty when the branch was not the
    /// policy's own.
    #[cfg_attr(feature = "serde", serde(default))]
    pub label: String,
    /// The branch's Request-URI; empty when the proxy did not say.
    #[cfg_attr(feature = "serde", serde(default))]
    pub uri: String,
    /// The status code; 408 when the branch timed out without a reply.
    pub code: u16,
    /// The reason phrase; empty when the proxy did not say.
    #[cfg_attr(feature = "serde", serde(default))]
    pub reason: String,
    /// The reply's headers (e.g. History-Info, Diversion, Reason); empty for none.
    #[cfg_attr(feature = "serde", serde(default))]
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

/// A click-to-call request (CVW-10, CVW-15), after the host authenticated the user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ClickToCall {
    /// The authenticated requester (UC address).
    pub user: String,
    /// What the user asked to call: a URI or a dialled number.
    pub destination: String,
    /// A callback number the user picked for this call; `None` for the usual one.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub callback_override: Option<String>,
}

/// Which kind of meeting dials out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum MeetingKind {
    /// A scheduled meeting the user joins (CVW-20).
    Scheduled,
    /// An ad-hoc "meet now" meeting (CVW-21).
    MeetNow,
}

/// A conference dial-out (CVW-20, CVW-21): the meeting service calls the user's callback
/// number and joins it to the conference.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct DialOut {
    /// The authenticated user (UC address).
    pub user: String,
    /// The conference's URI.
    pub conference_uri: String,
    pub kind: MeetingKind,
}
