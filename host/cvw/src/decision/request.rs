//! The one request type every transport decodes into, [`HookCall`], and the params format
//! the JSON transports share. A proxy calls one of three hooks — `route` (initial
//! request), `reply` (a branch's reply), `failure` (a failed branch).
//!
//! Owns the params format and the errors of decoding it; transports
//! ([`super::transport`]) own framing and error envelopes, [`super::DecisionService`]
//! what is done with a call.
//!
//! Params (all hooks): `msg`, the whole SIP request base64-encoded (`$(mb{s.encode.base64})`
//! in Kamailio, `$(mb{s.b64encode})` in OpenSIPS: base64 keeps the bytes intact whatever
//! the message holds). `route` adds `source` (`uc`, `pbx`, `origination`, `other`, decided
//! by the proxy config) and `contacts` (the called user's registrations); `reply` and
//! `failure` add `reply` (label, uri, code, reason, headers of the branch).

use super::dialect::MapError;
use crate::message::{MessageError, SipRequest};
use crate::policy::model::{BranchReply, Contact, RequestContext, Source};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use std::str::FromStr;
use thiserror::Error;

/// Which hook a call is for (the JSON-RPC method, the last HTTP path segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Route,
    Reply,
    Failure,
}

impl FromStr for Hook {
    type Err = HookError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "route" => Ok(Hook::Route),
            "reply" => Ok(Hook::Reply),
            "failure" => Ok(Hook::Failure),
            other => Err(HookError::UnknownMethod(other.to_owned())),
        }
    }
}

/// Why a hook call could not be answered with a decision. The proxy falls back to plain
/// routing on any of these (fail-open); none of them is a crash or a hang.
#[derive(Debug, Error)]
pub enum HookError {
    #[error("unknown method {0:?}: expected route, reply or failure")]
    UnknownMethod(String),
    #[error("params: {0}")]
    Params(#[source] serde_json::Error),
    #[error("params.{0}: missing")]
    MissingParam(&'static str),
    #[error("params.msg: not base64: {0}")]
    Base64(#[source] base64::DecodeError),
    #[error("params.msg: not a SIP request: {0}")]
    Message(#[source] MessageError),
    /// A field of a transport's own event format (evapi) that cannot be read.
    #[error("{field}: {why}")]
    Field { field: String, why: String },
    #[error("decision of policy generation {generation} cannot be sent to the proxy: {source}")]
    Map {
        generation: u64,
        #[source]
        source: MapError,
    },
}

impl HookError {
    /// True when the caller sent something wrong (JSON-RPC -32602, HTTP 400), false when the
    /// host could not carry out its own decision.
    pub fn is_caller_error(&self) -> bool {
        !matches!(self, HookError::Map { .. })
    }
}

/// The params of any hook, read in one pass (the hook says which fields it needs).
#[derive(Deserialize, Default)]
pub struct Params {
    #[serde(default)]
    msg: Option<String>,
    #[serde(default)]
    source: Option<SourceParam>,
    #[serde(default)]
    contacts: Vec<ContactParam>,
    #[serde(default)]
    reply: Option<BranchReply>,
}

impl Params {
    /// Params from an already parsed JSON value (`null` means none).
    pub fn from_value(params: Value) -> Result<Self, HookError> {
        if params.is_null() {
            return Ok(Params::default());
        }
        serde_json::from_value(params).map_err(HookError::Params)
    }
}

/// One hook call, whatever transport brought it: the request and what the hook adds.
#[derive(Clone)]
pub struct HookCall {
    /// The SIP request the hook is about.
    pub msg: SipRequest,
    pub args: HookArgs,
}

/// What each hook adds to the request.
#[derive(Debug, Clone)]
pub enum HookArgs {
    /// Facts the proxy gathered about an initial request.
    Route(RequestContext),
    /// A branch's provisional reply.
    Reply(BranchReply),
    /// The reply that ended a branch.
    Failure(BranchReply),
}

impl HookCall {
    /// The call `params` make for `hook`. The message is read first, so a call without a
    /// usable message is refused for that whatever else it lacks.
    pub fn from_params(hook: Hook, params: Params) -> Result<Self, HookError> {
        let msg = parse_msg(
            params
                .msg
                .as_deref()
                .ok_or(HookError::MissingParam("msg"))?,
        )?;
        let args = match hook {
            Hook::Route => HookArgs::Route(RequestContext {
                source: SourceParam::source(params.source),
                contacts: params.contacts.into_iter().map(Contact::from).collect(),
            }),
            Hook::Reply => HookArgs::Reply(params.reply.ok_or(HookError::MissingParam("reply"))?),
            Hook::Failure => {
                HookArgs::Failure(params.reply.ok_or(HookError::MissingParam("reply"))?)
            }
        };
        Ok(HookCall { msg, args })
    }

    /// A `route` call of a transport that brings its own event format (evapi): the message
    /// as base64 and the facts the proxy gathered.
    pub fn route(msg_b64: &str, ctx: RequestContext) -> Result<Self, HookError> {
        Ok(HookCall {
            msg: parse_msg(msg_b64)?,
            args: HookArgs::Route(ctx),
        })
    }
}

impl HookCall {
    /// A call from a module inside the proxy, which hands over the request as received.
    pub fn of_bytes(msg: &[u8], args: HookArgs) -> Result<Self, HookError> {
        Ok(HookCall {
            msg: SipRequest::parse(msg).map_err(HookError::Message)?,
            args,
        })
    }
}

/// The source class a proxy's config decided, by the names the JSON transports use
/// (`uc`, `pbx`, `origination`); anything else is [`Source::Other`].
pub fn source_named(name: &str) -> Source {
    let said = serde_json::from_value(Value::String(name.to_owned())).ok();
    SourceParam::source(said)
}

/// `source` as proxies send it: empty means "not classified".
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SourceParam {
    Uc,
    Pbx,
    Origination,
    Other,
    #[serde(rename = "")]
    Empty,
}

/// A contact as a proxy config builds it: usrloc gives empty strings for unknown fields.
#[derive(Deserialize)]
struct ContactParam {
    uri: String,
    #[serde(default)]
    next_hop: Option<String>,
    #[serde(default)]
    instance: Option<String>,
    #[serde(default)]
    user_agent: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.is_empty())
}

impl From<ContactParam> for Contact {
    fn from(c: ContactParam) -> Self {
        Contact {
            uri: c.uri,
            next_hop: non_empty(c.next_hop),
            instance: non_empty(c.instance),
            user_agent: non_empty(c.user_agent),
        }
    }
}

impl SourceParam {
    /// What the proxy said, or [`Source::Other`] when it said nothing (the JSON default).
    pub(crate) fn source(said: Option<SourceParam>) -> Source {
        match said {
            Some(SourceParam::Uc) => Source::Uc,
            Some(SourceParam::Pbx) => Source::Pbx,
            Some(SourceParam::Origination) => Source::Origination,
            Some(SourceParam::Other | SourceParam::Empty) | None => Source::Other,
        }
    }
}

fn parse_msg(b64: &str) -> Result<SipRequest, HookError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(HookError::Base64)?;
    SipRequest::parse(&bytes).map_err(HookError::Message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::fake::{INVITE, b64};
    use serde_json::json;

    fn call(hook: Hook, params: Value) -> Result<HookCall, HookError> {
        HookCall::from_params(hook, Params::from_value(params)?)
    }

    #[test]
    fn reply_and_failure_need_the_branch_reply_route_does_not() {
        let msg = b64(INVITE);
        assert!(call(Hook::Route, json!({ "msg": msg })).is_ok());
        for hook in [Hook::Reply, Hook::Failure] {
            let Err(e) = call(hook, json!({ "msg": msg })) else {
                panic!("{hook:?} without a reply");
            };
            assert_eq!(e.to_string(), "params.reply: missing");
            assert!(e.is_caller_error());
        }
        let HookCall { args, .. } = call(
            Hook::Failure,
            json!({ "msg": msg, "reply": { "label": "desk", "code": 480 } }),
        )
        .unwrap();
        assert!(matches!(args, HookArgs::Failure(r) if r.code == 480 && r.label == "desk"));
    }

    #[test]
    fn empty_contact_fields_are_unknown_and_an_empty_source_is_other() {
        let params = json!({
            "msg": b64(INVITE), "source": "",
            "contacts": [{ "uri": "sip:a@h", "next_hop": "", "instance": "", "user_agent": "" }]
        });
        let HookArgs::Route(ctx) = call(Hook::Route, params).unwrap().args else {
            panic!("a route call");
        };
        assert_eq!(ctx.source, Source::Other);
        assert_eq!(
            ctx.contacts,
            vec![Contact {
                uri: "sip:a@h".into(),
                next_hop: None,
                instance: None,
                user_agent: None
            }]
        );
    }
}
