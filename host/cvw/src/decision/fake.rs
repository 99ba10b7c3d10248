//! A fixed [`Decider`] and a request for the decision service's tests: the transports'
//! and dialects' tests run without a policy runtime.

use super::Decider;
use crate::message::SipRequest;
use crate::policy::Outcome;
use crate::policy::model::{
    BranchReply, Decision, Fork, ForkMode, ReplyAction, RequestContext, Target,
};
use base64::Engine as _;
use std::sync::Mutex;

/// Forks to the desk and to every contact it is given, and remembers what it saw.
#[derive(Default)]
pub(crate) struct Fake {
    pub seen: Mutex<Vec<(String, RequestContext)>>,
}

fn decided<T>(value: T) -> Outcome<T> {
    Outcome {
        value,
        generation: 7,
        failure: None,
    }
}

impl Decider for Fake {
    fn on_request(&self, req: &SipRequest, ctx: &RequestContext) -> Outcome<Decision> {
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
        decided(Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets,
        }))
    }
    fn on_reply(&self, _: &SipRequest, r: &BranchReply) -> Outcome<ReplyAction> {
        decided(if r.code == 181 {
            ReplyAction::CancelBranch
        } else {
            ReplyAction::Continue
        })
    }
    fn on_failure(&self, _: &SipRequest, _: &BranchReply) -> Outcome<Decision> {
        decided(Decision::Fork(Fork {
            mode: ForkMode::Serial,
            targets: vec![],
        }))
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

pub(crate) fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}
