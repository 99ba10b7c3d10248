//! The calls the API placed: their states as a feed the requester follows (CVW-14), the
//! hang-up handle, and the call-log record written when each ends (CVW-50).
//!
//! One task per call forwards the originator's states into the call's feed; nothing
//! else writes to it, so the feed is always in order and ends with `ended`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use super::ApiError;
use super::limits::Limits;
use crate::calllog::{self, CallKind, CallLogSink, CallRecord, LegRecord, Outcome};
use crate::origination::{CallState, CallStates, Hangup, Originator, Side};
use crate::policy::model::OriginationPlan;
use axum::http::StatusCode;

/// Ended calls kept for `GET` before the oldest are forgotten.
const KEEP_ENDED: usize = 1000;

/// One call as the API shows it. Kept small: a host holds thousands of these (issue 4,
/// ≤ 4 KB per call with the SIP call itself).
pub struct Call {
    /// Shared with the registry's key.
    pub id: Arc<str>,
    pub user: String,
    pub kind: CallKind,
    /// The two legs' URIs as planned, for the call log (the plan itself went back to
    /// the requester when the call was placed).
    legs: [Box<str>; 2],
    feed: Mutex<Vec<CallState>>,
    /// Wakes the event feed's long polls when a state is added.
    changed: Notify,
    hangup: Mutex<Option<Hangup>>,
}

#[derive(Serialize)]
pub struct CallSnapshot {
    pub id: String,
    pub user: String,
    pub kind: CallKind,
    pub state: Option<CallState>,
    pub events: usize,
}

/// Returned to the handler that placed a call.
pub struct StartedCall {
    pub id: String,
    pub plan: OriginationPlan,
}

impl Call {
    pub fn snapshot(&self) -> CallSnapshot {
        let feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        CallSnapshot {
            id: self.id.to_string(),
            user: self.user.clone(),
            kind: self.kind,
            state: feed.last().cloned(),
            events: feed.len(),
        }
    }

    /// Ask the originator to end both legs; a second request does nothing.
    pub fn hang_up(&self) {
        if let Some(tx) = self.hangup.lock().unwrap_or_else(|p| p.into_inner()).take() {
            tx.send();
        }
    }

    /// Events after sequence number `since`, waiting up to `wait` for the first new one.
    /// Returns them and the sequence number to ask from next time.
    pub async fn events_after(&self, since: usize, wait: Duration) -> (Vec<CallState>, usize) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the feed is read, so a state pushed in between still wakes us.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (events, next) = self.events_since(since);
            if !events.is_empty() || tokio::time::timeout_at(deadline, changed).await.is_err() {
                return (events, next);
            }
        }
    }

    /// The events after `since` and the next sequence number.
    fn events_since(&self, since: usize) -> (Vec<CallState>, usize) {
        let feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        let from = since.min(feed.len());
        (feed[from..].to_vec(), feed.len())
    }

    fn push(&self, state: CallState) {
        self.feed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(state);
        self.changed.notify_waiters();
    }
}

/// All calls, by id.
#[derive(Default)]
pub struct Calls {
    calls: Mutex<HashMap<Arc<str>, Arc<Call>>>,
    ended: Mutex<VecDeque<Arc<str>>>,
    /// The digest of the latest policy generation a call was placed with, shared by all
    /// its calls instead of a copy each.
    digest: Mutex<Option<(u64, Arc<str>)>>,
}

impl Calls {
    /// A call of `user` (another user's call is "not found", not "forbidden": ids are not
    /// to be probed).
    pub fn get(&self, id: &str, user: &str) -> Option<Arc<Call>> {
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls.get(id).filter(|c| c.user == user).cloned()
    }

    /// Hand the plan to the originator and follow the call until it ends.
    pub fn start(
        self: &Arc<Self>,
        originator: &dyn Originator,
        limits: &Arc<Limits>,
        call_log: &Arc<dyn CallLogSink>,
        kind: CallKind,
        plan: OriginationPlan,
        policy: (u64, String),
    ) -> Result<StartedCall, ApiError> {
        let id = new_id();
        let control = originator.start(&id, &plan).map_err(|err| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "originate",
                err.to_string(),
            )
        })?;
        let call = Arc::new(Call {
            id: id.as_str().into(),
            user: plan.user.clone(),
            kind,
            legs: [
                plan.callback.uri.as_str().into(),
                plan.callee.uri.as_str().into(),
            ],
            feed: Mutex::new(Vec::new()),
            changed: Notify::new(),
            hangup: Mutex::new(Some(control.hangup)),
        });
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(call.id.clone(), call.clone());
        let follow = Follow {
            call,
            started_ms: calllog::now_ms(),
            policy: (policy.0, self.shared_digest(policy)),
            call_log: call_log.clone(),
            limits: limits.clone(),
            registry: self.clone(),
        };
        tokio::spawn(follow.run(control.states));
        Ok(StartedCall { id, plan })
    }

    fn shared_digest(&self, (generation, digest): (u64, String)) -> Arc<str> {
        let mut cached = self.digest.lock().unwrap_or_else(|p| p.into_inner());
        match &*cached {
            Some((g, d)) if *g == generation && **d == *digest => d.clone(),
            _ => {
                let d: Arc<str> = digest.into();
                *cached = Some((generation, d.clone()));
                d
            }
        }
    }

    /// Forget the oldest ended calls beyond [`KEEP_ENDED`].
    fn ended(&self, id: &Arc<str>) {
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        ended.push_back(id.clone());
        while ended.len() > KEEP_ENDED {
            if let Some(old) = ended.pop_front() {
                self.calls
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&old);
            }
        }
    }
}

struct Follow {
    call: Arc<Call>,
    started_ms: u64,
    policy: (u64, Arc<str>),
    call_log: Arc<dyn CallLogSink>,
    limits: Arc<Limits>,
    registry: Arc<Calls>,
}

impl Follow {
    async fn run(self, mut states: CallStates) {
        let mut connected_ms = None;
        let mut callback_answered = false;
        let mut last = None;
        while let Some(state) = states.recv().await {
            match &state {
                CallState::CallbackAnswered => callback_answered = true,
                CallState::Connected => connected_ms = Some(calllog::now_ms()),
                _ => {}
            }
            let end = state.is_final();
            self.call.push(state.clone());
            last = Some(state);
            if end {
                break;
            }
        }
        // An originator that dropped its channel without `ended` still ends the call.
        let ended = match last {
            Some(state @ CallState::Ended { .. }) => state,
            _ => {
                let state = CallState::Ended {
                    result: "host-error".into(),
                    reason: "the call was lost by the host".into(),
                    sip_code: None,
                    side: Side::Host,
                };
                self.call.push(state.clone());
                state
            }
        };
        self.limits.release(&self.call.user);
        self.write_log(&ended, callback_answered, connected_ms);
        self.registry.ended(&self.call.id);
    }

    fn write_log(&self, ended: &CallState, callback_answered: bool, connected_ms: Option<u64>) {
        let CallState::Ended {
            result,
            reason,
            sip_code,
            side,
        } = ended
        else {
            return;
        };
        let code_of = |leg: Side, reached: bool| {
            if reached {
                Some(200)
            } else if *side == leg {
                *sip_code
            } else {
                None
            }
        };
        let [callback_uri, callee_uri] = &self.call.legs;
        let record = CallRecord {
            id: self.call.id.to_string(),
            kind: self.call.kind,
            user: self.call.user.clone(),
            legs: vec![
                LegRecord {
                    label: "callback".into(),
                    uri: callback_uri.to_string(),
                    sip_code: code_of(Side::Callback, callback_answered),
                    cancel_reason: None,
                },
                LegRecord {
                    label: "callee".into(),
                    uri: callee_uri.to_string(),
                    sip_code: code_of(Side::Callee, connected_ms.is_some()),
                    cancel_reason: None,
                },
            ],
            started_ms: self.started_ms,
            connected_ms,
            ended_ms: calllog::now_ms(),
            outcome: Outcome {
                result: result.clone(),
                reason: reason.clone(),
                sip_code: *sip_code,
            },
            policy_generation: self.policy.0,
            policy_digest: self.policy.1.to_string(),
        };
        if let Err(err) = self.call_log.write(&record) {
            tracing::error!(call = %record.id, %err, "call log write failed");
        }
    }
}

/// A call id: 128 random bits, hex.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No OS randomness is a broken machine; fall back to time so ids stay unique.
        bytes[..8].copy_from_slice(&calllog::now_ms().to_be_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
