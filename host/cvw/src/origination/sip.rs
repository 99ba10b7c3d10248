//! The [`Originator`] that places calls with the host's own SIP user agent (`cvw-sip`),
//! through the proxy as outbound proxy, so the legs are routed, recorded and accounted
//! like any other call, and marked so the policy knows them (CVW-34).

use std::task::{Context, Poll};
use std::time::Duration;

use cvw_sip::message::NameAddr as SipNameAddr;
use cvw_sip::queue::Receiver;
use cvw_sip::third_party::{self, CallPlan, EndReason, LegPlan, TwoLegCall};
use cvw_sip::ua::UserAgent;

use super::{
    CallControl, CallState, CallStates, Hangup, OriginateError, Originator, Side, StateSource,
};
use crate::policy::model::{Flow, Leg, OriginationPlan};

/// Places two-leg calls with a bound [`UserAgent`].
pub struct SipOriginator {
    ua: UserAgent,
}

impl SipOriginator {
    pub fn new(ua: UserAgent) -> Self {
        Self { ua }
    }
}

impl Originator for SipOriginator {
    fn start(&self, call_id: &str, plan: &OriginationPlan) -> Result<CallControl, OriginateError> {
        let plan = call_plan(plan)?;
        // The call's task runs under this span, so its logs carry the API's call id.
        let span = tracing::info_span!("origination", call = %call_id);
        let (handle, states) = span.in_scope(|| TwoLegCall::start(&self.ua, plan));
        Ok(CallControl {
            states: CallStates::new(SipStates(states)),
            hangup: Hangup::new(move || handle.hangup()),
        })
    }
}

/// The call's own states, translated as they are read.
struct SipStates(Receiver<third_party::CallState>);

impl StateSource for SipStates {
    fn poll_state(&mut self, cx: &mut Context<'_>) -> Poll<Option<CallState>> {
        self.0.poll_recv(cx).map(|state| state.map(host_state))
    }
}

fn call_plan(plan: &OriginationPlan) -> Result<CallPlan, OriginateError> {
    Ok(CallPlan {
        callback: leg_plan("callback", &plan.callback)?,
        callee: leg_plan("callee", &plan.callee)?,
        flow: match plan.flow {
            Flow::FlowIv => third_party::Flow::Iv,
            Flow::FlowI => third_party::Flow::I,
        },
        max_duration: Duration::from_secs(u64::from(plan.max_duration_s)),
        headers: Vec::new(),
        continue_when_diverted: false,
    })
}

fn leg_plan(leg: &'static str, plan: &Leg) -> Result<LegPlan, OriginateError> {
    if rsip::Uri::try_from(plan.uri.as_str()).is_err() {
        return Err(OriginateError::BadUri {
            leg,
            uri: plan.uri.clone(),
        });
    }
    Ok(LegPlan {
        uri: plan.uri.clone(),
        shows: SipNameAddr::new(plan.shows.display.clone(), plan.shows.uri.clone()),
        ring_timeout: Duration::from_millis(u64::from(plan.ring_timeout_ms)),
    })
}

fn host_state(state: third_party::CallState) -> CallState {
    match state {
        third_party::CallState::RingingCallback => CallState::RingingCallback,
        third_party::CallState::CallbackAnswered => CallState::CallbackAnswered,
        third_party::CallState::RingingCallee => CallState::RingingCallee,
        third_party::CallState::Connected => CallState::Connected,
        third_party::CallState::Ended(ended) => CallState::Ended {
            result: ended.reason.as_str().to_owned(),
            reason: sentence(ended.reason).to_owned(),
            sip_code: ended.code,
            side: match (ended.side, ended.reason) {
                (_, EndReason::HungUp) => Side::Requester,
                (third_party::Side::Callback, _) => Side::Callback,
                (third_party::Side::Callee, _) => Side::Callee,
                (third_party::Side::Host, _) => Side::Host,
            },
        },
    }
}

/// What the person reads about the end of their call (CVW-13).
fn sentence(reason: EndReason) -> &'static str {
    match reason {
        EndReason::CallbackNotAnswered => {
            "Your phone was not answered; the other party was not called."
        }
        EndReason::CallbackBusy => "Your phone was busy; the other party was not called.",
        EndReason::CallbackDeclined => {
            "You declined the call on your phone; the other party was not called."
        }
        EndReason::CallbackFailed => {
            "Your phone could not be reached; the other party was not called."
        }
        EndReason::CallbackDiverted => {
            "Your phone forwarded the call (e.g. to voicemail); the other party was not called."
        }
        EndReason::CalleeNotAnswered => "The other party did not answer.",
        EndReason::CalleeBusy => "The other party was busy.",
        EndReason::CalleeDeclined => "The other party declined the call.",
        EndReason::CalleeFailed => "The other party could not be reached.",
        EndReason::NoOffer => "A phone answered without the media description the call needs.",
        EndReason::MediaRejected => "Your phone could not use the other party's media.",
        EndReason::Glare => {
            "The call could not be connected (both sides kept changing the session)."
        }
        EndReason::CallbackHungUp => "You hung up.",
        EndReason::CalleeHungUp => "The other party hung up.",
        EndReason::CallbackLost => {
            "Your phone's side of the call stopped answering; the call was ended."
        }
        EndReason::CalleeLost => {
            "The other party's side of the call stopped answering; the call was ended."
        }
        EndReason::HungUp => "The call was ended on request.",
        EndReason::MaxDuration => "The call reached its maximum duration.",
        EndReason::Unroutable => "A number of the call cannot be routed.",
    }
}
