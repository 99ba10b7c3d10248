//! The call log of forked calls (CVW-50), written by the module: the facts at the fork
//! (a note the transaction keeps), the record when the final response goes to the caller,
//! and for a connected call its end, when Kamailio's dialog module says the call is over.
//! Same record and JSON-lines format as the calls `cvw serve` originates.

use crate::worker;
use cvw::calllog::{self, BranchEnd, CallLogSink, CallRecord, ForkedCall, JsonLinesFile};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// This process's handle on the log file (opened on first use, after the fork).
static FILE: Mutex<Option<(u32, JsonLinesFile)>> = Mutex::new(None);
/// Records that could not be written in this process: counted and logged, never silent.
pub static LOST: AtomicU64 = AtomicU64::new(0);

/// The facts of a call forked now, as JSON for the transaction to keep; `None` without a
/// call log.
pub fn note(call_id: &str, user: &str, labels: Vec<String>, w: &worker::Worker) -> Option<String> {
    worker::settings()?.call_log.as_ref()?;
    let (generation, digest) = w
        .record
        .as_ref()
        .map_or((w.generation, String::new()), |r| {
            (r.generation, r.digest.clone())
        });
    let call = ForkedCall {
        id: call_id.to_owned(),
        user: user.to_owned(),
        started_ms: calllog::now_ms(),
        policy_generation: generation,
        policy_digest: digest,
        labels,
        uris: Vec::new(),
    };
    serde_json::to_string(&call).ok()
}

/// The final response `final_code` went to the caller: a call that did not connect is
/// logged now; a connected one's record is returned (JSON) to be logged when it ends.
pub fn finished(
    note: &[u8],
    final_code: u16,
    branches: &[BranchEnd],
) -> Result<Option<String>, String> {
    let call: ForkedCall = serde_json::from_slice(note).map_err(|e| format!("call note: {e}"))?;
    let record = call.record(final_code, branches, calllog::now_ms());
    if record.connected_ms.is_some() {
        return serde_json::to_string(&record)
            .map(Some)
            .map_err(|e| e.to_string());
    }
    write(&record);
    Ok(None)
}

/// A connected call ended (`how`, for people): its record is logged.
pub fn ended(partial: &[u8], how: &str) -> Result<(), String> {
    let record: CallRecord =
        serde_json::from_slice(partial).map_err(|e| format!("call record: {e}"))?;
    write(&calllog::ended(record, calllog::now_ms(), how));
    Ok(())
}

fn write(record: &CallRecord) {
    let Some(path) = worker::settings().and_then(|s| s.call_log.clone()) else {
        return;
    };
    let me = std::process::id();
    let mut file = FILE.lock().unwrap_or_else(|p| p.into_inner());
    if file.as_ref().is_none_or(|(pid, _)| *pid != me) {
        match JsonLinesFile::open(&path) {
            Ok(f) => *file = Some((me, f)),
            Err(e) => return lost(record, &e.to_string()),
        }
    }
    if let Some((_, f)) = file.as_ref()
        && let Err(e) = f.write(record)
    {
        lost(record, &e.to_string());
    }
}

fn lost(record: &CallRecord, why: &str) {
    let n = LOST.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::error!(
        call_id = %record.id,
        "cvw: call record not written ({n} lost in this process): {why}"
    );
}
