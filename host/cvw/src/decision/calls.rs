//! The call log of forks decided over evapi (CVW-50): the decision service keeps each
//! fork's facts by Call-ID, and Kamailio tells over the same connection when the call was
//! answered (which branch) and when it ended; the record is then written in the format of
//! every other call (`cvw.so` writes its own the same way).

use crate::calllog::{self, BranchEnd, CallLogSink, ForkedCall, Millis};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Forks still ringing or connected; one more is not logged (and the loss is logged).
const MAX_OPEN: usize = 100_000;

/// What Kamailio says of a call it forked (`{"call": ...}` frames on evapi).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "call", rename_all = "kebab-case")]
pub enum CallEvent {
    /// A branch answered: `branch` counts the decision's targets from 0.
    Answered { call_id: String, branch: usize },
    /// A connected call ended (`how` for people).
    Ended { call_id: String, how: String },
    /// The call never connected; `code` is its final response.
    Failed { call_id: String, code: u16 },
}

struct Open {
    call: ForkedCall,
    answered: Option<(usize, Millis)>,
}

/// The open forks of one decision service.
pub struct CallBook {
    sink: Arc<dyn CallLogSink>,
    open: Mutex<HashMap<String, Open>>,
}

impl CallBook {
    pub fn new(sink: Arc<dyn CallLogSink>) -> Self {
        CallBook {
            sink,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A fork was decided.
    pub fn forked(&self, call: ForkedCall) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= MAX_OPEN {
            tracing::error!(call_id = %call.id, "call log: {MAX_OPEN} calls open, this one is not logged");
            return;
        }
        open.insert(
            call.id.clone(),
            Open {
                call,
                answered: None,
            },
        );
    }

    /// Kamailio said what happened to a call; an unknown call (not forked by this
    /// service) is ignored.
    pub fn event(&self, event: CallEvent) {
        let now = calllog::now_ms();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let record = match event {
            CallEvent::Answered { call_id, branch } => {
                if let Some(o) = open.get_mut(&call_id) {
                    o.answered.get_or_insert((branch, now));
                }
                return;
            }
            CallEvent::Ended { call_id, how } => {
                let Some(o) = open.remove(&call_id) else {
                    return;
                };
                let Some((branch, at)) = o.answered else {
                    return;
                };
                let ends = branches(&o.call, Some(branch));
                calllog::ended(o.call.record(200, &ends, at), now, &how)
            }
            CallEvent::Failed { call_id, code } => {
                let Some(o) = open.remove(&call_id) else {
                    return;
                };
                o.call.record(code, &branches(&o.call, None), now)
            }
        };
        drop(open);
        if let Err(e) = self.sink.write(&record) {
            tracing::error!(call_id = %record.id, "call log: record not written: {e}");
        }
    }
}

/// The branches as far as Kamailio's events tell: the one that answered (200), the others
/// without a final status of their own.
fn branches(call: &ForkedCall, answered: Option<usize>) -> Vec<BranchEnd> {
    (0..call.labels.len())
        .map(|i| BranchEnd {
            uri: call.uris.get(i).cloned().unwrap_or_default(),
            code: (answered == Some(i)).then_some(200),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calllog::{CallKind, MemorySink};

    fn book() -> (CallBook, Arc<MemorySink>) {
        let sink = Arc::new(MemorySink::default());
        (CallBook::new(sink.clone()), sink)
    }

    fn call(id: &str) -> ForkedCall {
        ForkedCall {
            id: id.into(),
            user: "sip:alice@corp.example".into(),
            started_ms: 1,
            policy_generation: 3,
            policy_digest: "ab".into(),
            labels: vec!["desk".into(), "client".into()],
            uris: vec!["sip:+1@pbx".into(), "sip:alice@127.0.0.1:5071".into()],
        }
    }

    #[test]
    fn an_answered_call_is_logged_when_it_ends_with_the_branch_that_answered() {
        let (book, sink) = book();
        book.forked(call("c1"));
        book.event(CallEvent::Answered {
            call_id: "c1".into(),
            branch: 1,
        });
        assert!(sink.records().is_empty(), "not before it ends");
        book.event(CallEvent::Ended {
            call_id: "c1".into(),
            how: "The call ended.".into(),
        });
        let r = &sink.records()[0];
        assert_eq!(
            (r.kind, r.outcome.result.as_str()),
            (CallKind::SimultaneousRing, "answered-client")
        );
        assert_eq!(r.legs[1].sip_code, Some(200));
        assert_eq!(
            r.legs[0].cancel_reason.as_deref(),
            Some(calllog::COMPLETED_ELSEWHERE)
        );
        assert_eq!(r.legs[0].uri, "sip:+1@pbx");
    }

    #[test]
    fn a_call_that_never_connected_is_logged_with_its_final_response_and_others_ignored() {
        let (book, sink) = book();
        book.forked(call("c2"));
        book.event(CallEvent::Failed {
            call_id: "c2".into(),
            code: 486,
        });
        book.event(CallEvent::Failed {
            call_id: "not-ours".into(),
            code: 486,
        });
        let records = sink.records();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].outcome.result, "busy");
    }
}
