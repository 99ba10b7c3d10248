//! This process's policy runtime. Kamailio forks its workers after `mod_init`, and a
//! forked process keeps no thread of its parent, so each process makes its own
//! [`PolicyHost`] (with its epoch thread) the first time it needs one, and drops an
//! inherited one. It then follows the shared generation: at each call it checks the
//! number and, when it moved, switches to that generation before deciding. A call in
//! progress always finishes on the version it started with (a worker runs one at a time).

use crate::generations::{self, Record, Refused, SharedBlock, Store};
use crate::settings::Settings;
use cvw::decision::DecisionService;
use cvw::policy::PolicyHost;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The checked parameters, set in `mod_init` (before the fork, so every process has them).
static SETTINGS: OnceLock<Settings> = OnceLock::new();
/// Kamailio's `process_no` of this process, for its status slot.
static PROCESS_NO: Mutex<usize> = Mutex::new(0);
static WORKER: Mutex<Option<Worker>> = Mutex::new(None);

pub fn set_settings(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

pub fn settings() -> Option<&'static Settings> {
    SETTINGS.get()
}

pub fn set_process_no(process_no: usize) {
    *PROCESS_NO.lock().unwrap_or_else(|p| p.into_inner()) = process_no;
}

/// One process's runtime and the generation it runs.
pub struct Worker {
    pid: u32,
    pub host: PolicyHost,
    pub service: DecisionService,
    /// The shared generation this process runs; 0 before the first.
    pub generation: u64,
    pub record: Option<Record>,
    pub store: Store,
    pub shared: &'static SharedBlock,
    process_no: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the cvw module was not initialised (mod_init failed or did not run)")]
    NotInitialised,
    #[error("cannot start the policy runtime: {0}")]
    Runtime(String),
}

impl Worker {
    fn new(settings: &Settings, shared: &'static SharedBlock) -> Result<Worker, WorkerError> {
        let host = PolicyHost::new(settings.runtime.clone())
            .map_err(|e| WorkerError::Runtime(format!("{e:#}")))?;
        Ok(Worker {
            pid: std::process::id(),
            service: DecisionService::new(Arc::new(host.clone())),
            host,
            generation: 0,
            record: None,
            store: Store::new(settings.work_dir.clone()),
            shared,
            process_no: *PROCESS_NO.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }

    /// Switches to the shared generation if it moved. A generation that cannot be run here
    /// (its files gone) is logged and skipped: this process keeps the one it runs.
    pub fn follow(&mut self) {
        let current = self.shared.generation();
        if current == self.generation {
            return;
        }
        match self.switch(current) {
            Ok(record) => {
                tracing::info!(
                    generation = current,
                    digest = %record.digest,
                    pid = self.pid,
                    "cvw: this process now runs policy generation {current}"
                );
                self.record = Some(record);
            }
            Err(e) => tracing::error!(
                generation = current,
                "cvw: cannot switch to policy generation {current}: {e}; keeping generation {}",
                self.generation
            ),
        }
        self.generation = current;
        self.slot().generation.store(current, Ordering::Relaxed);
    }

    fn switch(&self, generation: u64) -> Result<Record, Refused> {
        let record = self.store.record(generation)?;
        self.store.run(&self.host, &record)?;
        Ok(record)
    }

    pub fn slot(&self) -> &generations::Slot {
        self.shared.slot(self.process_no)
    }

    /// Counts one hook call, whether it got the failure mode and how long the policy took,
    /// in the status slot.
    pub fn count(&self, failed: bool, took: std::time::Duration) {
        let slot = self.slot();
        slot.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            slot.failures.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        slot.time[generations::bucket(us)].fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs `f` with this process's worker, made on first use and switched to the shared
/// generation.
pub fn with<R>(f: impl FnOnce(&mut Worker) -> R) -> Result<R, WorkerError> {
    let mut guard = lock();
    let me = std::process::id();
    if guard.as_ref().is_none_or(|w| w.pid != me) {
        // An inherited worker's epoch thread did not survive the fork: leak it rather than
        // drop it (dropping would join a thread that does not exist in this process).
        if let Some(inherited) = guard.take() {
            std::mem::forget(inherited);
        }
        let settings = settings().ok_or(WorkerError::NotInitialised)?;
        let shared = generations::shared().ok_or(WorkerError::NotInitialised)?;
        let worker = Worker::new(settings, shared)?;
        worker.slot().pid.store(me, Ordering::Relaxed);
        *guard = Some(worker);
    }
    let worker = guard.as_mut().ok_or(WorkerError::NotInitialised)?;
    worker.follow();
    Ok(f(worker))
}

fn lock() -> MutexGuard<'static, Option<Worker>> {
    // A panic while the lock was held is caught at the C boundary; the worker it left is
    // sound or gets replaced at the next generation.
    WORKER.lock().unwrap_or_else(|p| p.into_inner())
}
