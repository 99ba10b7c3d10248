//! What a hook answers: a [`Decision`] for a request or a failed branch (continue, reply,
//! fork, originate, refuse) with its parts, and a [`ReplyAction`] for a branch's reply.
//! Not here: how a proxy applies a decision (the host's adapters) or places a two-leg
//! call (the host's origination).

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use crate::request::{Header, NameAddr};

/// What the proxy does with a request (or a failed branch). In JSON/TOML the case is the
/// `"decision"` key beside the fields of its data, e.g.
/// `{"decision": "reply", "code": 486, "reason": "Busy Here"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "decision", rename_all = "kebab-case"))]
pub enum Decision {
    /// Route as the proxy would without Call via Work.
    Continue,
    /// Answer with this final reply.
    Reply(Reply),
    /// Send the request to these targets.
    Fork(Fork),
    /// Answer the request and place this two-leg call instead (click to call over SIP,
    /// the click-to-call and dial-out hooks).
    Originate(OriginationPlan),
    /// Refuse: a Call-via-Work limitation applies (CVW-40..46).
    Refuse(Refusal),
}

/// A final reply the proxy sends itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Reply {
    /// 300..=699.
    pub code: u16,
    /// The reason phrase.
    pub reason: String,
    /// Extra headers for the reply; empty for none (and then left out of JSON).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub headers: Vec<Header>,
}

/// A request that Call via Work does not support for this user. The proxy answers with
/// `code` and `reason`; `explanation` is shown to the person (Warning header and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Refusal {
    /// 4xx-6xx, typically 403, 405, 488 or 606.
    pub code: u16,
    /// The reason phrase.
    pub reason: String,
    /// A sentence for the person, e.g. "Dial emergency numbers from your desk phone."
    pub explanation: String,
    /// The CVW rule that applies, e.g. `CVW-41`.
    pub rule: String,
}

impl Refusal {
    /// A refusal under rule `rule` (e.g. `CVW-41`).
    pub fn new(code: u16, reason: &str, explanation: impl Into<String>, rule: &str) -> Self {
        Refusal {
            code,
            reason: reason.to_owned(),
            explanation: explanation.into(),
            rule: rule.to_owned(),
        }
    }
}

/// Parallel (simultaneous ring) or serial (one after the other) forking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum ForkMode {
    Parallel,
    Serial,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Fork {
    pub mode: ForkMode,
    /// At least one target. Serial forking tries them in order.
    pub targets: Vec<Target>,
}

/// One branch of a fork. Each `None` or empty field (left out of JSON) keeps what the
/// proxy would do anyway.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Target {
    /// What the branch reaches, e.g. `desk` or `client`; reported in logs and the call log.
    pub label: String,
    /// The Request-URI of the branch.
    pub uri: String,
    /// Where to send it (outbound proxy, PBX trunk); `None` to resolve `uri`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub next_hop: Option<String>,
    /// From shown on this branch; `None` keeps the caller's.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub from: Option<NameAddr>,
    /// P-Asserted-Identity on this branch; `None` keeps what the request had.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub asserted_identity: Option<NameAddr>,
    /// Extra headers on this branch (e.g. History-Info, Diversion, X-CVW-Leg); empty for
    /// none.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub headers: Vec<Header>,
    /// Ring timeout of this branch in milliseconds (CVW-51); `None` is the proxy's default.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub ring_timeout_ms: Option<u32>,
}

/// How the two legs of a call are set up (RFC 3725).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Flow {
    /// Flow IV, the default: the callback leg gets an offer without media lines, the
    /// callee is invited without SDP, the callee's offer is carried to the callback leg by
    /// re-INVITE.
    #[default]
    FlowIv,
    /// Flow I: for callees that answer at once (conference bridges, IVRs): the callback
    /// leg is invited without SDP and its offer is sent to the callee.
    FlowI,
}

/// One leg of an origination.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Leg {
    /// Request-URI of the leg.
    pub uri: String,
    /// The identity this leg shows (From and P-Asserted-Identity).
    pub shows: NameAddr,
    /// Ring timeout in milliseconds.
    pub ring_timeout_ms: u32,
}

/// A two-leg call the host places (CVW-10..15, CVW-20..22): ring `callback` first, and
/// only when it answers, `callee`; then bridge them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct OriginationPlan {
    /// The user on whose behalf the call is placed (UC address).
    pub user: String,
    /// The first leg: the user's callback number, showing the global caller ID (CVW-2).
    pub callback: Leg,
    /// The second leg: the callee, seeing the user's work identity (CVW-11).
    pub callee: Leg,
    pub flow: Flow,
    /// The call is cleared after this many seconds (toll-fraud bound).
    pub max_duration_s: u32,
}

/// What to do with a branch after a provisional or final reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum ReplyAction {
    /// Let the reply through.
    Continue,
    /// Cancel this branch (e.g. it was diverted to voicemail); other branches ring on.
    CancelBranch,
}
