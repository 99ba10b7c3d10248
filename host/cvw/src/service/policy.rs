//! The runtime behind the service: [`PolicyHost`] as a [`Decider`]. Only the outcome's
//! shape changes here; fail-open/closed is the runtime's business.

use super::{Decided, Decider};
use crate::message::SipRequest;
use crate::policy::model::{BranchReply, Decision, ReplyAction, RequestContext};
use crate::policy::{Outcome, PolicyHost};

fn decided<T>(o: Outcome<T>) -> Decided<T> {
    Decided {
        value: o.value,
        generation: o.generation,
        failure: o.failure.map(|f| format!("{:?}: {}", f.kind, f.detail)),
    }
}

impl Decider for PolicyHost {
    fn on_request(&self, req: &SipRequest, ctx: &RequestContext) -> Decided<Decision> {
        decided(PolicyHost::on_request(self, req, ctx))
    }
    fn on_reply(&self, req: &SipRequest, reply: &BranchReply) -> Decided<ReplyAction> {
        decided(PolicyHost::on_reply(self, req, reply))
    }
    fn on_failure(&self, req: &SipRequest, failure: &BranchReply) -> Decided<Decision> {
        decided(PolicyHost::on_failure(self, req, failure))
    }
}
