//! What an operator asks of the module (RPC `cvw.swap`, `cvw.reload`, `cvw.status`) and the
//! watcher's check for changed files. Runs in the process that asks (an RPC process, the
//! watcher), which compiles and checks there; the SIP workers only map the result.

use crate::generations::{self, Record, mtime};
use crate::worker::{self, Worker};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

/// Publishes `policy` (or, for a reload, the current generation's file) with the
/// directory read again. `Ok` and `Err` are the line to show the operator.
pub fn swap(policy: Option<&str>) -> Result<String, String> {
    worker::with(|w| {
        let (current_policy, directory) = sources(w)?;
        let policy = policy.map_or(current_policy, PathBuf::from);
        publish(w, policy, directory)
    })
    .map_err(|e| format!("cvw: {e}"))?
}

/// The lines of `cvw.status`.
pub fn status() -> Vec<String> {
    let Some(shared) = generations::shared() else {
        return vec!["cvw: not initialised".to_owned()];
    };
    let mut lines = Vec::new();
    let generation = shared.generation();
    let store = worker::settings().map(|s| generations::Store::new(s.work_dir.clone()));
    let digest = |g: u64| {
        store
            .as_ref()
            .and_then(|s| s.record(g).ok())
            .map_or_else(|| "-".to_owned(), |r| r.digest)
    };
    let head = store
        .as_ref()
        .and_then(|store| store.record(generation).ok());
    lines.push(match head {
        Some(r) => format!(
            "generation {generation} sha256 {} policy {} directory {}",
            r.digest,
            r.policy.display(),
            r.directory.display()
        ),
        None => format!("generation {generation}"),
    });
    let (p50, calls) = generations::quantile(shared, 0.5);
    let (p99, _) = generations::quantile(shared, 0.99);
    lines.push(format!(
        "policy calls {calls} time p50 <= {p50} us p99 <= {p99} us"
    ));
    for (process_no, slot) in shared.slots() {
        let g = slot.generation.load(Ordering::Relaxed);
        lines.push(format!(
            "process {process_no} pid {} generation {g} sha256 {} calls {} failures {}",
            slot.pid.load(Ordering::Relaxed),
            digest(g),
            slot.calls.load(Ordering::Relaxed),
            slot.failures.load(Ordering::Relaxed),
        ));
    }
    lines
}

/// The file modification times last refused, so that a broken file is reported once, not
/// every second, and tried again when it changes.
static REFUSED: Mutex<Option<(u128, u128)>> = Mutex::new(None);

/// 1 published, 0 nothing changed, -1 refused.
pub fn watch() -> i32 {
    let result = worker::with(|w| {
        let Some(record) = w.record.clone() else {
            return 0;
        };
        let now = (mtime(&record.policy), mtime(&record.directory));
        if now == (record.policy_mtime, record.directory_mtime) {
            return 0;
        }
        let mut refused = REFUSED.lock().unwrap_or_else(|p| p.into_inner());
        if *refused == Some(now) {
            return 0;
        }
        match publish(w, record.policy.clone(), record.directory.clone()) {
            Ok(line) => {
                tracing::info!("{line} (file changed)");
                *refused = None;
                1
            }
            Err(line) => {
                tracing::error!("{line} (file changed)");
                *refused = Some(now);
                -1
            }
        }
    });
    result.unwrap_or(-1)
}

/// The files of the generation this process runs, or the configured ones.
fn sources(w: &Worker) -> Result<(PathBuf, PathBuf), String> {
    if let Some(r) = &w.record {
        return Ok((r.policy.clone(), r.directory.clone()));
    }
    let s = worker::settings().ok_or("cvw: not initialised")?;
    Ok((s.policy.clone(), s.directory.clone()))
}

fn publish(w: &mut Worker, policy: PathBuf, directory: PathBuf) -> Result<String, String> {
    match w.store.publish(w.shared, &w.host, &policy, &directory) {
        Ok(record) => {
            let line = published(&record);
            w.generation = record.generation;
            w.slot()
                .generation
                .store(record.generation, Ordering::Relaxed);
            w.record = Some(record);
            Ok(line)
        }
        Err(e) => Err(format!(
            "cvw: {} refused at {e}; generation {} keeps serving",
            policy.display(),
            w.shared.generation()
        )),
    }
}

fn published(r: &Record) -> String {
    format!(
        "cvw: generation {} published: {} (sha256 {}) with {}",
        r.generation,
        r.policy.display(),
        r.digest,
        r.directory.display()
    )
}
