//! The call log (CVW-50): one record per Call-via-Work call, written when the call ends.
//!
//! Owns the record's shape and the sinks; does not decide what a call is (the origination
//! engine and the decision service fill records in). The sink is a small trait so that a
//! database can follow the JSON-lines file.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
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
    #[error("cannot write call log {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode call record {id}: {source}")]
    Encode {
        id: String,
        source: serde_json::Error,
    },
}

/// JSON lines appended to a file, one record a line, flushed per record so that a crash
/// loses nothing already ended.
pub struct JsonLinesFile {
    path: PathBuf,
    out: Mutex<BufWriter<File>>,
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
            out: Mutex::new(BufWriter::new(file)),
        })
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
        out.write_all(&line)
            .and_then(|()| out.flush())
            .map_err(|source| CallLogError::Write {
                path: self.path.clone(),
                source,
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
}
