//! The three hooks a proxy calls — `route` (initial request), `reply` (a branch's reply),
//! `failure` (a failed branch) — from JSON params to a document in the proxy's terms.
//! Owns the params format; transports ([`super::jsonrpc`], [`super::http`]) own framing
//! and error envelopes.
//!
//! Params (all hooks): `msg`, the whole SIP request base64-encoded (`$(mb{s.encode.base64})`
//! in Kamailio, `$(mb{s.b64encode})` in OpenSIPS: base64 keeps the bytes intact whatever
//! the message holds). `route` adds `source` (`uc`, `pbx`, `origination`, `other`, decided
//! by the proxy config) and `contacts` (the called user's registrations); `reply` and
//! `failure` add `reply` (label, uri, code, reason, headers of the branch).

use super::{Decided, DecisionService};
use crate::adapters::{Dialect, Document, MapError};
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

    fn msg(&self) -> Result<SipRequest, HookError> {
        parse_msg(self.msg.as_deref().ok_or(HookError::MissingParam("msg"))?)
    }

    fn reply(&self) -> Result<&BranchReply, HookError> {
        self.reply.as_ref().ok_or(HookError::MissingParam("reply"))
    }
}

/// `source` as proxies send it: empty means "not classified".
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum SourceParam {
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

// An absent `source` is `Other` by `cvw-model`'s `From<Option<_>> for Source`.
impl From<SourceParam> for Source {
    fn from(s: SourceParam) -> Self {
        match s {
            SourceParam::Uc => Source::Uc,
            SourceParam::Pbx => Source::Pbx,
            SourceParam::Origination => Source::Origination,
            SourceParam::Other | SourceParam::Empty => Source::Other,
        }
    }
}

fn parse_msg(b64: &str) -> Result<SipRequest, HookError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(HookError::Base64)?;
    SipRequest::parse(&bytes).map_err(HookError::Message)
}

impl DecisionService {
    /// Answers one hook call with the dialect's document (which carries the generation).
    pub fn handle(
        &self,
        dialect: &dyn Dialect,
        hook: Hook,
        params: Params,
    ) -> Result<Document, HookError> {
        let req = params.msg()?;
        match hook {
            Hook::Route => {
                let ctx = RequestContext {
                    source: params.source.into(),
                    contacts: params.contacts.into_iter().map(Contact::from).collect(),
                };
                let _enter = route_span(&req, &ctx).entered();
                decision_doc(dialect, self.decider.on_request(&req, &ctx))
            }
            Hook::Failure => {
                let reply = params.reply()?;
                let span =
                    tracing::debug_span!("failure", call_id = %req.call_id(), code = reply.code);
                let _enter = span.enter();
                let d = self.decider.on_failure(&req, reply);
                decision_doc(dialect, d)
            }
            Hook::Reply => {
                let reply = params.reply()?;
                let span =
                    tracing::debug_span!("reply", call_id = %req.call_id(), code = reply.code);
                let _enter = span.enter();
                let d = self.decider.on_reply(&req, reply);
                log_failure(&d);
                dialect
                    .reply_action(d.value, d.generation)
                    .map_err(|source| HookError::Map {
                        generation: d.generation,
                        source,
                    })
            }
        }
    }

    /// The route hook for a transport that brings its own event format (evapi): the
    /// message as base64 and the facts the proxy gathered.
    pub(super) fn route_decided(
        &self,
        msg_b64: &str,
        ctx: &RequestContext,
    ) -> Result<Decided<crate::policy::model::Decision>, HookError> {
        let req = parse_msg(msg_b64)?;
        let _enter = route_span(&req, ctx).entered();
        let d = self.decider.on_request(&req, ctx);
        log_failure(&d);
        Ok(d)
    }

    /// [`Self::handle`] for params as a JSON value.
    pub fn handle_value(
        &self,
        dialect: &dyn Dialect,
        hook: Hook,
        params: Value,
    ) -> Result<Document, HookError> {
        self.handle(dialect, hook, Params::from_value(params)?)
    }
}

/// The span a route hook's logs carry, with the call it is about.
fn route_span(req: &SipRequest, ctx: &RequestContext) -> tracing::Span {
    tracing::debug_span!("route", call_id = %req.call_id(), source = ?ctx.source)
}

fn log_failure<T>(d: &Decided<T>) {
    if let Some(why) = &d.failure {
        tracing::warn!(
            generation = d.generation,
            "policy did not decide: {why}; failure mode applied"
        );
    }
}

fn decision_doc(
    dialect: &dyn Dialect,
    d: Decided<crate::policy::model::Decision>,
) -> Result<Document, HookError> {
    log_failure(&d);
    dialect.decision(&d.value, d.generation).map_err(|source| {
        tracing::warn!(generation = d.generation, "unusable decision: {source}");
        HookError::Map {
            generation: d.generation,
            source,
        }
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::adapters::Kamailio;
    use crate::policy::model::{Decision, Fork, ForkMode, ReplyAction, Target};
    use crate::service::Decider;
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    /// Forks to the desk and to every contact it is given, and remembers what it saw.
    #[derive(Default)]
    pub(crate) struct Fake {
        pub seen: Mutex<Vec<(String, RequestContext)>>,
    }

    impl Decider for Fake {
        fn on_request(&self, req: &SipRequest, ctx: &RequestContext) -> Decided<Decision> {
            self.seen
                .lock()
                .unwrap()
                .push((req.call_id().to_string(), ctx.clone()));
            let mut targets = vec![Target {
                label: "desk".into(),
                uri: "sip:+14255550101@pbx".into(),
                next_hop: None,
                from: None,
                asserted_identity: None,
                headers: vec![],
                ring_timeout_ms: Some(15000),
            }];
            targets.extend(ctx.contacts.iter().map(|c| Target {
                label: "client".into(),
                uri: c.uri.clone(),
                next_hop: c.next_hop.clone(),
                from: None,
                asserted_identity: None,
                headers: vec![],
                ring_timeout_ms: None,
            }));
            Decided {
                value: Decision::Fork(Fork {
                    mode: ForkMode::Parallel,
                    targets,
                }),
                generation: 7,
                failure: None,
            }
        }
        fn on_reply(&self, _: &SipRequest, r: &BranchReply) -> Decided<ReplyAction> {
            let value = if r.code == 181 {
                ReplyAction::CancelBranch
            } else {
                ReplyAction::Continue
            };
            Decided {
                value,
                generation: 7,
                failure: None,
            }
        }
        fn on_failure(&self, _: &SipRequest, _: &BranchReply) -> Decided<Decision> {
            Decided {
                value: Decision::Fork(Fork {
                    mode: ForkMode::Serial,
                    targets: vec![],
                }),
                generation: 7,
                failure: None,
            }
        }
    }

    pub(crate) const INVITE: &str = "INVITE sip:alice@corp.example SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
        From: \"Bob\" <sip:bob@corp.example>;tag=1\r\n\
        To: <sip:alice@corp.example>\r\n\
        Call-ID: call-1@test\r\n\
        CSeq: 1 INVITE\r\n\
        Max-Forwards: 70\r\n\
        Content-Length: 0\r\n\r\n";

    pub(crate) fn value(doc: Document) -> Value {
        serde_json::from_str(doc.as_str()).unwrap()
    }

    pub(crate) fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn service() -> (Arc<Fake>, DecisionService) {
        let fake = Arc::new(Fake::default());
        (fake.clone(), DecisionService::new(fake))
    }

    #[test]
    fn cvw30_route_facts_reach_the_policy_and_the_fork_comes_back_as_rtjson() {
        let (fake, svc) = service();
        let params = json!({
            "msg": b64(INVITE),
            "source": "uc",
            "contacts": [{ "uri": "sip:alice@127.0.0.1:5071", "next_hop": "", "user_agent": "UC/1.0", "instance": "" }]
        });
        let doc = value(svc.handle_value(&Kamailio, Hook::Route, params).unwrap());
        assert_eq!(doc["action"], "relay");
        assert_eq!(doc["generation"], 7);
        assert_eq!(
            doc["rtjson"]["routes"][1]["uri"],
            "sip:alice@127.0.0.1:5071"
        );
        let seen = fake.seen.lock().unwrap();
        assert_eq!(seen[0].0, "call-1@test");
        assert_eq!(seen[0].1.source, Source::Uc);
        assert_eq!(
            seen[0].1.contacts,
            vec![Contact {
                uri: "sip:alice@127.0.0.1:5071".into(),
                next_hop: None,
                instance: None,
                user_agent: Some("UC/1.0".into())
            }]
        );
    }

    #[test]
    fn reply_hook_maps_the_action() {
        let (_, svc) = service();
        let params = json!({ "msg": b64(INVITE), "reply": { "label": "desk", "code": 181, "reason": "Forwarded" } });
        assert_eq!(
            value(svc.handle_value(&Kamailio, Hook::Reply, params).unwrap()),
            json!({ "action": "cancel-branch", "generation": 7 })
        );
    }

    #[test]
    fn bad_input_is_named() {
        let (_, svc) = service();
        let err = |p: Value| {
            svc.handle_value(&Kamailio, Hook::Route, p)
                .unwrap_err()
                .to_string()
        };
        assert!(
            err(json!({})).starts_with("params.msg: missing"),
            "{}",
            err(json!({}))
        );
        assert!(err(json!({ "msg": "%%%" })).starts_with("params.msg: not base64"));
        assert!(err(json!({ "msg": b64("hello") })).starts_with("params.msg: not a SIP request"));
        assert!(
            err(json!({ "msg": b64(INVITE), "source": "carrier" }))
                .starts_with("params: unknown variant `carrier`")
        );
        assert_eq!(
            "bye".parse::<Hook>().unwrap_err().to_string(),
            "unknown method \"bye\": expected route, reply or failure"
        );
    }

    #[test]
    fn an_unusable_decision_is_a_host_error_naming_the_generation() {
        let (_, svc) = service();
        let e = svc
            .handle_value(
                &Kamailio,
                Hook::Failure,
                json!({ "msg": b64(INVITE), "reply": { "code": 408 } }),
            )
            .unwrap_err();
        assert!(!e.is_caller_error());
        assert_eq!(
            e.to_string(),
            "decision of policy generation 7 cannot be sent to the proxy: decision has a fork with no targets"
        );
    }
}
