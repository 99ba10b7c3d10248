//! Policy generations shared by every Kamailio process: the generation number and one
//! status slot per process in Kamailio's shared memory (plain atomics), and per generation
//! three files in the work directory that any process can read:
//!
//! ```text
//! gen-N.cwasm           the component compiled once, mapped by every worker
//! gen-N.directory.toml  the directory exactly as it was checked with that component
//! gen-N.json            digest, origin, the source files and their modification times
//! ```
//!
//! Publishing (at start, `cvw.swap`, `cvw.reload`, a changed file) compiles and checks in
//! the process that asks, writes the files, and only then raises the number; a worker
//! sees the new number at its next request and maps that generation. A module that fails
//! any step is refused with the step and the reason, and the number does not move.

use cvw::directory::Directory;
use cvw::policy::PolicyHost;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::time::SystemTime;

/// Status slots: one per Kamailio process (`process_no`), which is far below this.
pub const MAX_SLOTS: usize = 512;

/// The block Kamailio allocates in shared memory (`shm_malloc`, zeroed) before forking.
#[repr(C)]
pub struct SharedBlock {
    generation: AtomicU64,
    /// The pid of the process publishing now; 0 when none is.
    publisher: AtomicU32,
    slots: [Slot; MAX_SLOTS],
    /// Branches whose own ring timeout runs (CVW-51).
    pub ring: crate::ring::Queue,
}

/// What one process reports in `cvw.status`. Cache-line aligned: workers write theirs on
/// every call.
#[repr(C, align(64))]
pub struct Slot {
    pub pid: AtomicU32,
    pub generation: AtomicU64,
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    /// How long the policy took per call (see [`bucket`]).
    pub time: [AtomicU64; BUCKETS],
}

/// Buckets of a policy call's duration: 1 µs wide below 64 µs, 16 µs wide up to ~1 ms,
/// then one for everything longer.
pub const BUCKETS: usize = 128;

/// The bucket of a call that took `us` microseconds.
pub fn bucket(us: u64) -> usize {
    let b = if us < 64 { us } else { 64 + (us - 64) / 16 };
    usize::try_from(b).unwrap_or(BUCKETS - 1).min(BUCKETS - 1)
}

/// The upper bound (µs) of bucket `b`.
pub fn bucket_limit(b: usize) -> u64 {
    let b = b as u64;
    if b < 64 { b + 1 } else { 64 + (b - 63) * 16 }
}

/// The `q` quantile (0..=1) of all processes' policy call times, in µs, and the count.
pub fn quantile(shared: &SharedBlock, q: f64) -> (u64, u64) {
    let mut sums = [0u64; BUCKETS];
    for (_, slot) in shared.slots() {
        for (sum, b) in sums.iter_mut().zip(&slot.time) {
            *sum += b.load(Ordering::Relaxed);
        }
    }
    let total: u64 = sums.iter().sum();
    let want = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    for (b, n) in sums.iter().enumerate() {
        seen += n;
        if seen >= want.max(1) {
            return (bucket_limit(b), total);
        }
    }
    (0, total)
}

static SHARED: AtomicPtr<SharedBlock> = AtomicPtr::new(std::ptr::null_mut());

/// Bytes the C side allocates.
pub fn shared_size() -> usize {
    std::mem::size_of::<SharedBlock>()
}

/// Adopts the zeroed block at `block` for this process and the ones it forks.
///
/// # Safety
/// `block` points to [`shared_size`] zeroed bytes, aligned to 64, that live as long as
/// the process tree (Kamailio's shared memory).
pub unsafe fn attach(block: *mut u8) {
    SHARED.store(block.cast(), Ordering::Release);
    if let Some(shared) = shared() {
        shared.ring.init();
    }
}

/// The shared block; `None` before `mod_init` attached it.
pub fn shared() -> Option<&'static SharedBlock> {
    // SAFETY: set once by `attach` from Kamailio's shared memory, which outlives every
    // process that can call this; all fields are atomics.
    unsafe { SHARED.load(Ordering::Acquire).as_ref() }
}

impl SharedBlock {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn slot(&self, process_no: usize) -> &Slot {
        &self.slots[process_no % MAX_SLOTS]
    }

    pub fn slots(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.pid.load(Ordering::Relaxed) != 0)
    }
}

/// What a generation is, as `gen-N.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub generation: u64,
    /// SHA-256 of the component bytes.
    pub digest: String,
    /// The component file it was read from.
    pub policy: PathBuf,
    /// The directory file it was checked with.
    pub directory: PathBuf,
    /// Modification times (Unix ns) of both when they were read: a changed file means a
    /// new generation is due.
    pub policy_mtime: u128,
    pub directory_mtime: u128,
}

/// Why a module was not published: the step that refused it and what it said.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {reason}")]
pub struct Refused {
    pub step: &'static str,
    pub reason: String,
}

impl Refused {
    fn new(step: &'static str, reason: impl ToString) -> Self {
        Refused {
            step,
            reason: reason.to_string(),
        }
    }
}

/// The generation files in one work directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: PathBuf) -> Self {
        Store { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, generation: u64, suffix: &str) -> PathBuf {
        self.dir.join(format!("gen-{generation}.{suffix}"))
    }

    pub fn record(&self, generation: u64) -> Result<Record, Refused> {
        let path = self.file(generation, "json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Refused::new("read", format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| Refused::new("read", format!("{}: {e}", path.display())))
    }

    /// Compiles `policy` once in this process, checks it end to end with `directory` on
    /// `host` (which then runs it), writes the generation's files and raises the shared
    /// number. Only one process publishes at a time.
    pub fn publish(
        &self,
        shared: &SharedBlock,
        host: &PolicyHost,
        policy: &Path,
        directory: &Path,
    ) -> Result<Record, Refused> {
        let _turn = Turn::take(shared)?;
        let generation = shared.generation() + 1;
        let policy_mtime = mtime(policy);
        let directory_mtime = mtime(directory);
        let wasm = std::fs::read(policy)
            .map_err(|e| Refused::new("read", format!("{}: {e}", policy.display())))?;
        let digest = hex(&Sha256::digest(&wasm));
        let origin = policy.display().to_string();
        let compiled = host
            .precompile(&wasm, &origin)
            .map_err(|e| Refused::new(e.step(), e))?;
        let artifact = self.file(generation, "cwasm");
        write_new(&artifact, &compiled)?;
        let checked_directory = self.file(generation, "directory.toml");
        let text = std::fs::read(directory)
            .map_err(|e| Refused::new("directory", format!("{}: {e}", directory.display())))?;
        write_new(&checked_directory, &text)?;
        let record = Record {
            generation,
            digest,
            policy: policy.to_owned(),
            directory: directory.to_owned(),
            policy_mtime,
            directory_mtime,
        };
        if let Err(e) = self.run(host, &record) {
            self.remove(generation);
            return Err(e);
        }
        let json = serde_json::to_vec_pretty(&record).map_err(|e| Refused::new("record", e))?;
        write_new(&self.file(generation, "json"), &json)?;
        shared.generation.store(generation, Ordering::Release);
        // Workers map a generation's artifact when they switch; the one before stays for
        // a worker that reads its record right now.
        if generation > 2 {
            self.remove(generation - 2);
        }
        Ok(record)
    }

    /// Makes `host` run generation `record` from its files (a worker switching).
    pub fn run(&self, host: &PolicyHost, record: &Record) -> Result<(), Refused> {
        let path = self.file(record.generation, "directory.toml");
        let directory = Directory::load(&path).map_err(|e| Refused::new("directory", e))?;
        let artifact = self.file(record.generation, "cwasm");
        // SAFETY: the artifact was written by `publish` from `precompile` of a host made
        // with the same settings (the module's), and generation files are never rewritten.
        unsafe {
            host.publish_precompiled(
                &artifact,
                record.digest.clone(),
                &record.policy.display().to_string(),
                Arc::new(directory),
            )
        }
        .map_err(|e| Refused::new(e.step(), e))?;
        Ok(())
    }

    fn remove(&self, generation: u64) {
        for suffix in ["cwasm", "directory.toml", "json"] {
            let _ = std::fs::remove_file(self.file(generation, suffix));
        }
    }
}

/// The publishing turn: held by one process at a time, given back on drop.
struct Turn<'a>(&'a SharedBlock);

impl<'a> Turn<'a> {
    fn take(shared: &'a SharedBlock) -> Result<Self, Refused> {
        let me = std::process::id();
        match shared
            .publisher
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Ok(Turn(shared)),
            Err(other) if !alive(other) => {
                // A publisher that died (killed mid-compile) must not block swaps forever.
                shared
                    .publisher
                    .compare_exchange(other, me, Ordering::AcqRel, Ordering::Acquire)
                    .map(|_| Turn(shared))
                    .map_err(|_| Refused::new("busy", "another process is publishing"))
            }
            Err(other) => Err(Refused::new(
                "busy",
                format!("process {other} is publishing a policy; try again"),
            )),
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.publisher.store(0, Ordering::Release);
    }
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Writes a file that no reader may see half-written: a temporary name, then a rename.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Refused> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Refused::new("write", format!("{}: {e}", path.display())))
}

/// A file's modification time in Unix nanoseconds; 0 when it cannot be read.
pub fn mtime(path: &Path) -> u128 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_fine_where_policy_calls_are_and_bounded_beyond() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(17), 17);
        assert_eq!(bucket_limit(bucket(17)), 18);
        assert_eq!(bucket(64), 64);
        assert!(bucket_limit(bucket(100)) >= 100);
        assert!(bucket_limit(bucket(100)) - 100 < 16);
        assert_eq!(bucket(5_000_000), BUCKETS - 1);
    }
}
