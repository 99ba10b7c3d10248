//! The decision service the proxies ask: one path from a proxy's bytes to its answer.
//!
//! ```text
//! transport (frames bytes)  →  HookCall  →  DecisionService::handle  →  Outcome<Verdict>
//!                                               (asks the Decider)          │
//! transport (frames bytes)  ←  ProxyAnswer  ←  dialect (the proxy's terms)  ┘
//! ```
//!
//! - [`transport`]: evapi (the host connects to Kamailio; the cheapest for Kamailio),
//!   JSON-RPC 2.0 in netstring frames (Kamailio's janssonrpcc) and HTTP JSON (OpenSIPS
//!   rest_client, Kamailio http_client). Each only frames bytes and decodes them into the
//!   one request type, [`HookCall`] ([`request`]).
//! - [`DecisionService::handle`]: the one place a hook call meets the policy.
//! - [`dialect`]: the one answer, [`Outcome<Verdict>`], in a proxy's terms: Kamailio's
//!   evapi layout (`docs/evapi-answer.md`), Kamailio's JSON (rtjson), OpenSIPS' JSON.
//!
//! Named `decision` for what the proxies get from it. Does not own the policy runtime
//! (behind [`Decider`]) nor `cvw serve`'s wiring ([`crate::daemon`]).

pub mod calls;
pub mod dialect;
pub mod request;
pub mod transport;

#[cfg(test)]
pub(crate) mod fake;

use crate::message::SipRequest;
use crate::policy::model::{BranchReply, Decision, ReplyAction, RequestContext};
use crate::policy::{FailureKind, Outcome, PolicyFailure, PolicyHost};
use dialect::{Dialect, MapError, ProxyAnswer};
use std::sync::Arc;

pub use request::{Hook, HookArgs, HookCall, HookError};
pub use transport::{Endpoints, Running, spawn_configured};

/// What the service needs from the policy runtime. [`PolicyHost`] implements it; service
/// tests use a fixed fake.
///
/// Calls are synchronous and bounded by the runtime's deadline (20 ms by default), so the
/// transports call them inline on their task instead of paying a thread hand-off per
/// decision.
pub trait Decider: Send + Sync + 'static {
    fn on_request(&self, req: &SipRequest, ctx: &RequestContext) -> Outcome<Decision>;
    fn on_reply(&self, req: &SipRequest, reply: &BranchReply) -> Outcome<ReplyAction>;
    fn on_failure(&self, req: &SipRequest, failure: &BranchReply) -> Outcome<Decision>;
    /// The operator's failure decision, for an answer no proxy can be given.
    fn failure_decision(&self) -> Decision {
        Decision::Continue
    }
    /// The SHA-256 of the published policy, for the call log; empty when unknown.
    fn policy_digest(&self) -> String {
        String::new()
    }
}

impl Decider for PolicyHost {
    fn on_request(&self, req: &SipRequest, ctx: &RequestContext) -> Outcome<Decision> {
        PolicyHost::on_request(self, req, ctx)
    }
    fn on_reply(&self, req: &SipRequest, reply: &BranchReply) -> Outcome<ReplyAction> {
        PolicyHost::on_reply(self, req, reply)
    }
    fn on_failure(&self, req: &SipRequest, failure: &BranchReply) -> Outcome<Decision> {
        PolicyHost::on_failure(self, req, failure)
    }
    fn failure_decision(&self) -> Decision {
        self.settings().failure_mode.decision()
    }
    fn policy_digest(&self) -> String {
        self.current().map(|v| v.digest).unwrap_or_default()
    }
}

/// What the policy answered to one hook call: a decision (`route`, `failure`) or what to do
/// with a branch (`reply`).
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Decision(Decision),
    ReplyAction(ReplyAction),
}

/// The hooks behind every transport. Cheap to clone.
#[derive(Clone)]
pub struct DecisionService {
    decider: Arc<dyn Decider>,
    /// Forks kept for the call log until the proxy says how they ended (evapi).
    calls: Option<Arc<calls::CallBook>>,
}

impl DecisionService {
    pub fn new(decider: Arc<dyn Decider>) -> Self {
        Self {
            decider,
            calls: None,
        }
    }

    /// Logs the forks it decides (CVW-50) once the proxy says how they ended.
    pub fn with_call_log(mut self, sink: Arc<dyn crate::calllog::CallLogSink>) -> Self {
        self.calls = Some(Arc::new(calls::CallBook::new(sink)));
        self
    }

    /// What the proxy said of a call this service forked.
    pub fn call_event(&self, event: calls::CallEvent) {
        if let Some(book) = &self.calls {
            book.event(event);
        }
    }

    /// Answers one hook call in `dialect`'s terms: the one path every transport takes.
    /// A policy's answer that cannot be put in those terms gets the failure decision, as
    /// a failed policy call does; an error only if even that cannot be encoded.
    pub fn handle(&self, call: &HookCall, dialect: &dyn Dialect) -> Result<ProxyAnswer, HookError> {
        self.handle_reporting(call, dialect).0
    }

    /// [`DecisionService::handle`], and whether the failure mode answered in place of the
    /// policy (for a module's own counters).
    pub fn handle_reporting(
        &self,
        call: &HookCall,
        dialect: &dyn Dialect,
    ) -> (Result<ProxyAnswer, HookError>, bool) {
        let outcome = self.verdict(call);
        self.remember_fork(call, &outcome);
        match dialect.encode(&outcome) {
            Ok(answer) => (Ok(answer), outcome.failure.is_some()),
            Err(source) => {
                tracing::warn!(
                    generation = outcome.generation,
                    "unusable decision: {source}; failure mode applied"
                );
                let fallback = self.failed(&outcome, &source);
                let answer = dialect.encode(&fallback).map_err(|_| HookError::Map {
                    generation: outcome.generation,
                    source,
                });
                (answer, true)
            }
        }
    }

    /// The policy's answer to one hook call, the failure mode's when it failed (logged):
    /// what [`DecisionService::handle`] encodes, and what an in-process proxy module
    /// applies without encoding it.
    pub fn verdict(&self, call: &HookCall) -> Outcome<Verdict> {
        let outcome = self.decide(call);
        if let Some(why) = &outcome.failure {
            tracing::warn!(
                generation = outcome.generation,
                "policy did not decide: {:?}: {}; failure mode applied",
                why.kind,
                why.detail
            );
        }
        outcome
    }

    /// The failure decision in place of `outcome`, which no proxy can be given. A reply
    /// hook's failure lets the branch ring on, as in the runtime.
    fn failed(&self, outcome: &Outcome<Verdict>, why: &MapError) -> Outcome<Verdict> {
        let value = match outcome.value {
            Verdict::Decision(_) => Verdict::Decision(self.decider.failure_decision()),
            Verdict::ReplyAction(_) => Verdict::ReplyAction(ReplyAction::Continue),
        };
        Outcome {
            value,
            generation: outcome.generation,
            failure: Some(PolicyFailure {
                kind: FailureKind::InvalidDecision,
                detail: why.to_string(),
            }),
        }
    }

    /// Keeps a decided fork's facts for the call log.
    fn remember_fork(&self, call: &HookCall, outcome: &Outcome<Verdict>) {
        let (Some(book), HookArgs::Route(_), Verdict::Decision(Decision::Fork(fork))) =
            (&self.calls, &call.args, &outcome.value)
        else {
            return;
        };
        book.forked(crate::calllog::ForkedCall {
            id: call.msg.call_id().to_owned(),
            user: call.msg.request_uri().to_owned(),
            started_ms: crate::calllog::now_ms(),
            policy_generation: outcome.generation,
            policy_digest: self.decider.policy_digest(),
            labels: fork.targets.iter().map(|t| t.label.clone()).collect(),
            uris: fork.targets.iter().map(|t| t.uri.clone()).collect(),
        });
    }

    /// Asks the policy, in a span naming the call.
    fn decide(&self, call: &HookCall) -> Outcome<Verdict> {
        let req = &call.msg;
        match &call.args {
            HookArgs::Route(ctx) => {
                let span =
                    tracing::debug_span!("route", call_id = %req.call_id(), source = ?ctx.source);
                let _enter = span.enter();
                verdict(self.decider.on_request(req, ctx), Verdict::Decision)
            }
            HookArgs::Failure(reply) => {
                let span =
                    tracing::debug_span!("failure", call_id = %req.call_id(), code = reply.code);
                let _enter = span.enter();
                verdict(self.decider.on_failure(req, reply), Verdict::Decision)
            }
            HookArgs::Reply(reply) => {
                let span =
                    tracing::debug_span!("reply", call_id = %req.call_id(), code = reply.code);
                let _enter = span.enter();
                verdict(self.decider.on_reply(req, reply), Verdict::ReplyAction)
            }
        }
    }

    /// Binds the JSON-RPC and HTTP listeners (port 0 picks a free port) and serves them
    /// until [`Running::stop`]; [`Running::connect_evapi`] adds Kamailio's evapi.
    pub async fn start(
        self,
        jsonrpc: std::net::SocketAddr,
        http: std::net::SocketAddr,
    ) -> std::io::Result<Running> {
        Running::start(self, jsonrpc, http).await
    }
}

fn verdict<T>(o: Outcome<T>, kind: impl FnOnce(T) -> Verdict) -> Outcome<Verdict> {
    Outcome {
        value: kind(o.value),
        generation: o.generation,
        failure: o.failure,
    }
}

#[cfg(test)]
mod tests {
    use super::dialect::KamailioJson;
    use super::fake::{Fake, INVITE, b64};
    use super::request::Params;
    use super::*;
    use crate::policy::model::{Contact, Source};
    use serde_json::{Value, json};

    fn service() -> (Arc<Fake>, DecisionService) {
        let fake = Arc::new(Fake::default());
        (fake.clone(), DecisionService::new(fake))
    }

    /// A hook call as the JSON transports decode it, answered in Kamailio's JSON.
    fn answer(svc: &DecisionService, hook: Hook, params: Value) -> Result<Value, HookError> {
        let call = HookCall::from_params(hook, Params::from_value(params)?)?;
        let text = svc.handle(&call, &KamailioJson)?;
        Ok(serde_json::from_str(text.as_str()).unwrap())
    }

    #[test]
    fn cvw30_route_facts_reach_the_policy_and_the_fork_comes_back_as_rtjson() {
        let (fake, svc) = service();
        let params = json!({
            "msg": b64(INVITE),
            "source": "uc",
            "contacts": [{ "uri": "sip:alice@127.0.0.1:5071", "next_hop": "", "user_agent": "UC/1.0", "instance": "" }]
        });
        let doc = answer(&svc, Hook::Route, params).unwrap();
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
            answer(&svc, Hook::Reply, params).unwrap(),
            json!({ "action": "cancel-branch", "generation": 7 })
        );
    }

    #[test]
    fn bad_input_is_named() {
        let (_, svc) = service();
        let err = |p: Value| answer(&svc, Hook::Route, p).unwrap_err().to_string();
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

    /// A decision the dialect cannot map (the fake's fork without targets) is answered
    /// with the failure decision, never an error the proxy would see as a dead host.
    #[test]
    fn an_unusable_decision_gets_the_failure_decision() {
        let (_, svc) = service();
        let doc = answer(
            &svc,
            Hook::Failure,
            json!({ "msg": b64(INVITE), "reply": { "code": 408 } }),
        )
        .unwrap();
        assert_eq!(doc["action"], "continue", "{doc}");
        assert_eq!(doc["generation"], 7);
    }
}
