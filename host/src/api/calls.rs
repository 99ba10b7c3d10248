//! The calls the API placed: their states as a feed the requester follows (CVW-14), the
//! hang-up handle, and the call-log record written when each ends (CVW-50).
//!
//! One task per call forwards the originator's states into the call's feed; nothing
//! else writes to it, so the feed is always in order and ends with `ended`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use super::ApiError;
use super::limits::Limits;
use crate::calllog::{self, CallKind, CallLogSink, CallRecord, LegRecord, Outcome};
use crate::origination::{CallState, CallStates, Hangup, Originator, Side};
use crate::policy::model::OriginationPlan;
use axum::http::StatusCode;

/// Ended calls kept for `GET` before the oldest are forgotten.
const KEEP_ENDED: usize = 1000;

/// One call as the API shows it.
pub struct Call {
    pub id: String,
    pub user: String,
    pub kind: CallKind,
    pub plan: OriginationPlan,
    feed: Mutex<Vec<CallState>>,
    changed: watch::Sender<usize>,
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
            id: self.id.clone(),
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
        let mut changed = self.changed.subscribe();
        let _ = tokio::time::timeout(wait, changed.wait_for(|n| *n > since)).await;
        let feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
        let from = since.min(feed.len());
        (feed[from..].to_vec(), feed.len())
    }

    fn push(&self, state: CallState) {
        let len = {
            let mut feed = self.feed.lock().unwrap_or_else(|p| p.into_inner());
            feed.push(state);
            feed.len()
        };
        self.changed.send_replace(len);
    }
}

/// All calls, by id.
#[derive(Default)]
pub struct Calls {
    calls: Mutex<HashMap<String, Arc<Call>>>,
    ended: Mutex<VecDeque<String>>,
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
            id: id.clone(),
            user: plan.user.clone(),
            kind,
            plan: plan.clone(),
            feed: Mutex::new(Vec::new()),
            changed: watch::channel(0).0,
            hangup: Mutex::new(Some(control.hangup)),
        });
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), call.clone());
        let follow = Follow {
            call,
            started_ms: calllog::now_ms(),
            policy,
            call_log: call_log.clone(),
            limits: limits.clone(),
            registry: self.clone(),
        };
        tokio::spawn(follow.run(control.states));
        Ok(StartedCall { id, plan })
    }

    /// Forget the oldest ended calls beyond [`KEEP_ENDED`].
    fn ended(&self, id: &str) {
        let mut ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        ended.push_back(id.to_owned());
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
    policy: (u64, String),
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
        let plan = &self.call.plan;
        let record = CallRecord {
            id: self.call.id.clone(),
            kind: self.call.kind,
            user: self.call.user.clone(),
            legs: vec![
                LegRecord {
                    label: "callback".into(),
                    uri: plan.callback.uri.clone(),
                    sip_code: code_of(Side::Callback, callback_answered),
                },
                LegRecord {
                    label: "callee".into(),
                    uri: plan.callee.uri.clone(),
                    sip_code: code_of(Side::Callee, connected_ms.is_some()),
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
            policy_digest: self.policy.1.clone(),
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
