//! The call log (CVW-50): one record per Call-via-Work call, written when the call ends.
//!
//! Owns the record's shape and the sinks; does not decide what a call is (the origination
//! engine and the decision service fill records in). The sink is a small trait so that a
//! database can follow the JSON-lines file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// What kind of Call-via-Work call a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallKind {
    /// A two-leg call placed for a user (CVW-10).
    ClickToCall,
    /// A meeting dialling out to a user (CVW-20, CVW-21).
    DialOut,
    /// An incoming call forked to the desk phone and soft clients (CVW-30).
    SimultaneousRing,
}

/// One leg of a call as the log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegRecord {
    /// `callback`, `callee`, `desk`, `client`.
    pub label: String,
    pub uri: String,
    /// The leg's final SIP status, `None` when it never got one (e.g. never sent).
    pub sip_code: Option<u16>,
    /// Why the proxy cancelled this leg, when it did (a simultaneous ring's losing legs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
}

/// How a call ended, for people reading the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `connected-then-ended`, `callback-busy`, `callee-failed`, `refused`, ...
    pub result: String,
    /// A sentence for the person.
    pub reason: String,
    /// The SIP status that decided the outcome, when there was one.
    pub sip_code: Option<u16>,
}

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// One Call-via-Work call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The host's id of the call (also in the API).
    pub id: String,
    pub kind: CallKind,
    /// The user on whose behalf the call ran (UC address).
    pub user: String,
    pub legs: Vec<LegRecord>,
    pub started_ms: Millis,
    /// When the two parties were connected, if they were.
    pub connected_ms: Option<Millis>,
    pub ended_ms: Millis,
    pub outcome: Outcome,
    /// The policy generation and digest that decided the call.
    pub policy_generation: u64,
    pub policy_digest: String,
}

/// Where call records go.
pub trait CallLogSink: Send + Sync {
    fn write(&self, record: &CallRecord) -> Result<(), CallLogError>;
}

#[derive(Debug, thiserror::Error)]
pub enum CallLogError {
    #[error("cannot open call log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write call log {path}: {source} ({lost} records lost since the start)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
        /// Records this log could not write so far, this one included.
        lost: u64,
    },
    #[error("cannot encode call record {id}: {source}")]
    Encode {
        id: String,
        source: serde_json::Error,
    },
}

/// JSON lines appended to a file, one record a line, each written whole with one call so
/// that a crash loses nothing already ended. A record that cannot be written (disk full,
/// file gone read-only) is counted and reported, never half-kept: no buffer holds a
/// partial line for the next record to complete.
pub struct JsonLinesFile {
    path: PathBuf,
    out: Mutex<File>,
    lost: AtomicU64,
}

impl JsonLinesFile {
    pub fn open(path: &Path) -> Result<Self, CallLogError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| CallLogError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            path: path.to_owned(),
            out: Mutex::new(file),
            lost: AtomicU64::new(0),
        })
    }

    /// Records not written so far.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl CallLogSink for JsonLinesFile {
    fn write(&self, record: &CallRecord) -> Result<(), CallLogError> {
        let mut line = serde_json::to_vec(record).map_err(|source| CallLogError::Encode {
            id: record.id.clone(),
            source,
        })?;
        line.push(b'\n');
        // A poisoned lock only means another writer panicked mid-line; the file is still
        // append-only, so keep logging.
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(&line).map_err(|source| CallLogError::Write {
            path: self.path.clone(),
            source,
            lost: self.lost.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }
}

/// Keeps records in memory: for tests and for `GET` of recent calls.
#[derive(Default)]
pub struct MemorySink {
    records: Mutex<Vec<CallRecord>>,
}

impl MemorySink {
    pub fn records(&self) -> Vec<CallRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl CallLogSink for MemorySink {
    fn write(&self, record: &CallRecord) -> Result<(), CallLogError> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record.clone());
        Ok(())
    }
}

/// What the proxy knows of a forked call (CVW-30) from the moment it is forked: enough to
/// write its record when it ends, wherever that is seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkedCall {
    /// The Call-ID.
    pub id: String,
    /// The called user (the Request-URI the policy decided on).
    pub user: String,
    pub started_ms: Millis,
    pub policy_generation: u64,
    pub policy_digest: String,
    /// The label of each branch, in the proxy's branch order.
    pub labels: Vec<String>,
    /// The Request-URI of each branch, in the same order (when the proxy does not say).
    #[serde(default)]
    pub uris: Vec<String>,
}

/// How one branch of a fork ended, as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchEnd {
    pub uri: String,
    /// Its final status; `None` when it never got one.
    pub code: Option<u16>,
}

/// Cancel reason of the losing branches when another answered (what the proxy sends, CVW-31).
pub const COMPLETED_ELSEWHERE: &str = "Call completed elsewhere";

impl ForkedCall {
    /// The call's record once its final response `final_code` went to the caller at `now`.
    /// A call that connected still has to end: [`ended`] sets its end.
    pub fn record(&self, final_code: u16, branches: &[BranchEnd], now: Millis) -> CallRecord {
        let answered = branches
            .iter()
            .position(|b| b.code.is_some_and(|c| (200..300).contains(&c)));
        let label = |i: usize| self.labels.get(i).cloned().unwrap_or_default();
        let legs = branches
            .iter()
            .enumerate()
            .map(|(i, b)| LegRecord {
                label: label(i),
                uri: b.uri.clone(),
                sip_code: b.code,
                cancel_reason: cancel_reason(answered, i, final_code, b.code),
            })
            .collect();
        let outcome = match answered {
            Some(i) => Outcome {
                result: format!("answered-{}", or_other(&label(i))),
                reason: format!("Answered on the {} phone.", or_other(&label(i))),
                sip_code: Some(final_code),
            },
            None => unanswered(final_code),
        };
        CallRecord {
            id: self.id.clone(),
            kind: CallKind::SimultaneousRing,
            user: self.user.clone(),
            legs,
            started_ms: self.started_ms,
            connected_ms: answered.map(|_| now),
            ended_ms: now,
            outcome,
            policy_generation: self.policy_generation,
            policy_digest: self.policy_digest.clone(),
        }
    }
}

/// A connected call's record once it ended at `now`; `how` says how (for people).
pub fn ended(mut record: CallRecord, now: Millis, how: &str) -> CallRecord {
    record.ended_ms = now;
    record.outcome.reason = format!("{} {how}", record.outcome.reason);
    record
}

fn or_other(label: &str) -> &str {
    if label.is_empty() { "other" } else { label }
}

fn cancel_reason(
    answered: Option<usize>,
    i: usize,
    final_code: u16,
    code: Option<u16>,
) -> Option<String> {
    let cancelled = code.is_none_or(|c| c == 487);
    match answered {
        Some(a) if a != i && cancelled => Some(COMPLETED_ELSEWHERE.to_owned()),
        None if final_code == 487 && cancelled => Some("caller cancelled".to_owned()),
        _ => None,
    }
}

fn unanswered(code: u16) -> Outcome {
    let (result, reason) = match code {
        487 => (
            "caller-cancelled",
            "The caller hung up before anyone answered.",
        ),
        408 | 480 => ("not-answered", "Nobody answered."),
        486 | 600 => ("busy", "Busy."),
        603 => ("declined", "Declined."),
        _ => ("failed", "The call failed."),
    };
    Outcome {
        result: result.to_owned(),
        reason: reason.to_owned(),
        sip_code: Some(code),
    }
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> CallRecord {
        CallRecord {
            id: id.into(),
            kind: CallKind::ClickToCall,
            user: "sip:alice@corp.example".into(),
            legs: vec![LegRecord {
                label: "callback".into(),
                uri: "sip:+14255550101@pbx.corp.example;user=phone".into(),
                sip_code: Some(486),
                cancel_reason: None,
            }],
            started_ms: 1,
            connected_ms: None,
            ended_ms: 2,
            outcome: Outcome {
                result: "callback-busy".into(),
                reason: "Your phone was busy; the callee was not called.".into(),
                sip_code: Some(486),
            },
            policy_generation: 3,
            policy_digest: "sha256:00".into(),
        }
    }

    #[test]
    fn json_lines_file_appends_one_parseable_record_per_line() {
        let dir = std::env::temp_dir().join(format!("cvw-calllog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("calls.jsonl");
        let _ = std::fs::remove_file(&path);
        let sink = JsonLinesFile::open(&path).unwrap();
        sink.write(&record("a")).unwrap();
        sink.write(&record("b")).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<CallRecord>(l).unwrap().id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
        // Reopening appends instead of truncating: nothing already logged is lost.
        drop(sink);
        JsonLinesFile::open(&path)
            .unwrap()
            .write(&record("c"))
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    }

    #[test]
    fn a_full_disk_loses_records_counted_and_named() {
        // /dev/full: every write fails with ENOSPC, as on a full disk.
        let full = JsonLinesFile::open(Path::new("/dev/full")).unwrap();
        for n in 1..=3 {
            let err = full.write(&record("a")).expect_err("disk full").to_string();
            assert!(err.contains("/dev/full"), "{err}");
            assert!(err.contains(&format!("{n} records lost")), "{err}");
        }
        assert_eq!(full.lost(), 3);
    }

    fn fork() -> ForkedCall {
        ForkedCall {
            id: "c1".into(),
            user: "sip:alice@corp.example".into(),
            started_ms: 10,
            policy_generation: 2,
            policy_digest: "ab".into(),
            labels: vec!["desk".into(), "client".into(), "client".into()],
            uris: vec![],
        }
    }

    fn ends(codes: [Option<u16>; 3]) -> Vec<BranchEnd> {
        codes
            .iter()
            .enumerate()
            .map(|(i, c)| BranchEnd {
                uri: format!("sip:b{i}@x"),
                code: *c,
            })
            .collect()
    }

    #[test]
    fn a_call_answered_on_the_desk_names_the_desk_and_why_the_clients_stopped() {
        let r = fork().record(200, &ends([Some(200), Some(487), None]), 50);
        assert_eq!(r.kind, CallKind::SimultaneousRing);
        assert_eq!(r.outcome.result, "answered-desk");
        assert_eq!(r.connected_ms, Some(50));
        assert_eq!(r.legs[0].cancel_reason, None);
        assert_eq!(
            r.legs[1].cancel_reason.as_deref(),
            Some(COMPLETED_ELSEWHERE)
        );
        assert_eq!(
            r.legs[2].cancel_reason.as_deref(),
            Some(COMPLETED_ELSEWHERE)
        );
        assert_eq!(
            (r.policy_generation, r.legs[1].label.as_str()),
            (2, "client")
        );
        let r = ended(r, 90, "The caller hung up.");
        assert_eq!(r.ended_ms, 90);
        assert!(r.outcome.reason.ends_with("The caller hung up."));
    }

    #[test]
    fn a_call_nobody_answered_ends_with_its_final_response() {
        let r = fork().record(487, &ends([Some(487), Some(487), Some(487)]), 70);
        assert_eq!(r.outcome.result, "caller-cancelled");
        assert_eq!(r.connected_ms, None);
        assert_eq!(r.ended_ms, 70);
        assert!(
            r.legs
                .iter()
                .all(|l| l.cancel_reason.as_deref() == Some("caller cancelled"))
        );
        let busy = fork().record(486, &ends([Some(486), Some(408), Some(408)]), 70);
        assert_eq!(busy.outcome.result, "busy");
        assert!(busy.legs.iter().all(|l| l.cancel_reason.is_none()));
    }
}
