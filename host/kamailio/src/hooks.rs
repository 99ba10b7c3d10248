//! The three hooks as the module calls them: Kamailio's bytes and facts in, the policy's
//! answer (through the host's one decision path) out, in the module's terms.

use crate::calls;
use crate::worker::{self, Worker, WorkerError};
use cvw::decision::dialect::{NativeAnswer, NativeBranch, native};
use cvw::decision::request::source_named;
use cvw::decision::{Decider, HookArgs, HookCall, HookError, Verdict};
use cvw::policy::Outcome;
use cvw::policy::model::{BranchReply, Contact, Header, RequestContext};
use cvw_sip::message::Message;
use std::time::Instant;

/// Why a hook call could not be made; the proxy then routes as without Call via Work.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error("the reply is not a SIP response: {0}")]
    Reply(String),
    #[error("a serial fork's remaining targets are unreadable: {0}")]
    SerialRest(String),
}

/// A contact of the called user, as usrloc holds it (empty fields: unknown).
pub struct RawContact<'a> {
    pub uri: &'a str,
    pub received: &'a str,
    pub user_agent: &'a str,
    pub instance: &'a str,
}

/// `on-request` for an initial INVITE.
/// With a call log, a fork comes with the call's note (see [`calls::note`]).
pub fn route(
    msg: &[u8],
    source: &str,
    contacts: &[RawContact<'_>],
) -> Result<(NativeAnswer, Option<String>), CallError> {
    let ctx = RequestContext {
        source: source_named(source),
        contacts: contacts.iter().map(contact).collect(),
    };
    let call = HookCall::of_bytes(msg, HookArgs::Route(ctx))?;
    worker::with(|w| {
        let answer = decision(w, &call)?;
        let note = match &answer {
            NativeAnswer::Fork { branches, .. } => calls::note(
                call.msg.call_id(),
                call.msg.request_uri(),
                branches.iter().map(|b| b.label.clone()).collect(),
                w,
            ),
            _ => None,
        };
        Ok((answer, note))
    })?
}

/// `on-failure`: the branch `label` ended with `reply` (a SIP response), or with `code`
/// and no reply at all (tm's own timeout: 408).
pub fn failure(
    request: &[u8],
    reply: Option<&[u8]>,
    code: u16,
    label: &str,
) -> Result<NativeAnswer, CallError> {
    let facts = branch_reply(reply, code, label)?;
    let call = HookCall::of_bytes(request, HookArgs::Failure(facts))?;
    worker::with(|w| decision(w, &call))?
}

/// `on-reply` for a provisional reply of branch `label`: whether to cancel that branch.
pub fn reply(request: &[u8], reply: &[u8], label: &str) -> Result<bool, CallError> {
    let facts = branch_reply(Some(reply), 0, label)?;
    let call = HookCall::of_bytes(request, HookArgs::Reply(facts))?;
    worker::with(|w| {
        let started = Instant::now();
        let outcome = w.service.verdict(&call);
        w.count(outcome.failure.is_some(), started.elapsed());
        matches!(outcome.value, Verdict::ReplyAction(a) if native::cancels_branch(a))
    })
    .map_err(CallError::from)
}

/// The next target of a serial fork, from what the transaction kept (JSON of
/// [`NativeBranch`]es); `None` when there is none left.
pub fn serial_next(rest: &[u8]) -> Result<Option<NativeAnswer>, CallError> {
    let rest: Vec<NativeBranch> =
        serde_json::from_slice(rest).map_err(|e| CallError::SerialRest(e.to_string()))?;
    if rest.is_empty() {
        return Ok(None);
    }
    // The first is tried now, the others kept again (see `answer::Held`).
    Ok(Some(NativeAnswer::Fork {
        serial: true,
        branches: rest,
    }))
}

/// The policy's decision in the module's terms; the failure mode's when the policy failed
/// or answered what cannot be applied.
fn decision(w: &mut Worker, call: &HookCall) -> Result<NativeAnswer, CallError> {
    let started = Instant::now();
    let outcome = w.service.verdict(call);
    w.count(outcome.failure.is_some(), started.elapsed());
    let Outcome {
        value, generation, ..
    } = outcome;
    let Verdict::Decision(decision) = value else {
        return Ok(NativeAnswer::Continue);
    };
    match NativeAnswer::of(&decision) {
        Ok(answer) => Ok(answer),
        Err(e) => {
            tracing::warn!(
                generation,
                call_id = call.msg.call_id(),
                "cvw: unusable decision: {e}; failure mode applied"
            );
            // The same fallback the decision service gives an answer no proxy can take.
            let fallback = Decider::failure_decision(&w.host);
            Ok(NativeAnswer::of(&fallback).unwrap_or(NativeAnswer::Continue))
        }
    }
}

fn contact(c: &RawContact<'_>) -> Contact {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    Contact {
        uri: c.uri.to_owned(),
        next_hop: some(c.received),
        instance: some(c.instance),
        user_agent: some(c.user_agent),
    }
}

fn branch_reply(reply: Option<&[u8]>, code: u16, label: &str) -> Result<BranchReply, CallError> {
    let mut facts = BranchReply {
        label: label.to_owned(),
        code,
        ..BranchReply::default()
    };
    let Some(bytes) = reply.filter(|b| !b.is_empty()) else {
        if code == 408 {
            facts.reason = "Request Timeout".into();
        }
        return Ok(facts);
    };
    match Message::parse(bytes).map_err(|e| CallError::Reply(e.to_string()))? {
        Message::Response(r) => {
            facts.code = r.code;
            facts.reason = r.reason;
            facts.headers = r
                .headers
                .iter()
                .map(|h| Header {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect();
            Ok(facts)
        }
        Message::Request(_) => Err(CallError::Reply("a request".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serial_fork_moves_on_to_its_next_target() {
        let b = |uri: &str| NativeBranch {
            uri: uri.into(),
            ..NativeBranch::default()
        };
        let rest = serde_json::to_vec(&[b("sip:a@x"), b("sip:b@x")]).unwrap();
        let Some(NativeAnswer::Fork { serial, branches }) = serial_next(&rest).unwrap() else {
            panic!("a fork");
        };
        assert!(serial);
        assert_eq!(branches, vec![b("sip:a@x"), b("sip:b@x")]);
        assert_eq!(serial_next(b"[]").unwrap(), None);
        assert!(serial_next(b"{").is_err());
    }

    #[test]
    fn a_reply_gives_its_code_reason_and_headers_to_the_policy() {
        let reply = b"SIP/2.0 181 Call Is Being Forwarded\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK1\r\nFrom: <sip:bob@corp.example>;tag=1\r\nTo: <sip:alice@corp.example>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nDiversion: <sip:+14255550101@pbx>;reason=no-answer\r\nContent-Length: 0\r\n\r\n";
        let facts = branch_reply(Some(reply), 0, "desk").unwrap();
        assert_eq!(facts.code, 181);
        assert_eq!(facts.reason, "Call Is Being Forwarded");
        assert_eq!(facts.label, "desk");
        assert!(
            facts
                .headers
                .iter()
                .any(|h| h.name == "Diversion" && h.value.contains("no-answer"))
        );
        let timeout = branch_reply(None, 408, "client").unwrap();
        assert_eq!(
            (timeout.code, timeout.reason.as_str()),
            (408, "Request Timeout")
        );
    }
}
