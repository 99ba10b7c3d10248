//! The one wasmtime [`Engine`] of a [`super::PolicyHost`], the epoch ticker that gives
//! every hook call its wall-clock deadline, and the per-store memory limiter.
//!
//! Owns the `Config` knobs (why each is set is said beside it). Does not own stores or
//! instances (`runtime.rs`) nor the host imports (`state.rs`).

use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, OptLevel, ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// One epoch tick by default ([`super::RuntimeSettings::epoch_tick`]). Deadlines are
/// whole ticks, so 1 ms gives them a 1 ms resolution while costing one atomic increment
/// (and one wake-up of the ticking thread) per millisecond.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Builds the engine shared by every policy version of one host.
pub(crate) fn new_engine(max_wasm_stack: usize, parallel: bool) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
    config.parallel_compilation(parallel);
    // Epochs rather than fuel: a deadline is wall-clock anyway, and the guest code only
    // pays a load+compare at loop heads and function entries (fuel costs ~10% more).
    config.epoch_interruption(true);
    config.max_wasm_stack(max_wasm_stack);
    config.cranelift_opt_level(OptLevel::Speed);
    // The contract has no async functions; leaving concurrency support on makes every
    // export call several times slower (measured: 4× for an empty call).
    config.concurrency_support(false);
    // Instances are created once per worker thread and policy version, not per call, so
    // the on-demand allocator is as fast as pooling where it matters and reserves no
    // memory up front.
    Engine::new(&config)
}

/// Increments the engine's epoch every tick until the returned guard is dropped, and
/// joins its thread then: a host dropped before a process forks (Kamailio's `mod_init`)
/// leaves no thread behind.
pub(crate) struct EpochTicker {
    // Dropping the sender wakes the thread at once (`Disconnected`), without waiting a tick.
    stop: Option<SyncSender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only ticks; it cannot panic, and if it did there is nothing to add.
            let _ = thread.join();
        }
    }
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let tick = tick.max(Duration::from_micros(100));
        let (stop, stopped) = mpsc::sync_channel::<()>(0);
        let thread = thread::Builder::new()
            .name("cvw-epoch".into())
            .spawn(move || {
                // On a loaded machine this thread wakes late too; catching up on the ticks
                // that are due keeps epochs on wall-clock time rather than on its luck.
                let started = Instant::now();
                let mut ticks: u128 = 0;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    let due = started.elapsed().as_nanos() / tick.as_nanos();
                    while ticks < due {
                        engine.increment_epoch();
                        ticks += 1;
                    }
                }
            })?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Ticks of `tick` a call may run: `deadline` rounded up, at least one.
pub(crate) fn deadline_ticks(deadline: Duration, tick: Duration) -> u64 {
    let tick = tick.as_nanos().max(1);
    u64::try_from(deadline.as_nanos().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// What happens when a call reaches its wall-clock deadline. The deadline is wall-clock
/// (epochs), so a healthy call that merely waited for a core — a 2-core machine compiling
/// a new policy version, say — would be killed with a loop's verdict. At the deadline the
/// call gets [`PROBE`] more; if in that window its thread burned at least [`BUSY`] of CPU
/// it is running guest code without end and is interrupted, otherwise it was descheduled
/// and is given another window, up to [`OVERTIME_FACTOR`] × the deadline in all.
///
/// Costs nothing on a call that finishes in time: the check runs only at the deadline.
#[derive(Debug, Default)]
pub(crate) struct Overtime {
    /// Thread CPU time when the current window started; `None` before the deadline.
    window_cpu: Option<Duration>,
    windows: u64,
}

pub(crate) const PROBE: Duration = Duration::from_millis(5);
/// A healthy hook call needs microseconds of CPU in all; a quarter millisecond within one
/// window means guest code is running, even with the thread getting only 5% of a core.
pub(crate) const BUSY: Duration = Duration::from_micros(250);
pub(crate) const OVERTIME_FACTOR: u64 = 5;

impl Overtime {
    /// Called by the epoch callback at the deadline (`deadline` ticks after the call
    /// started) and at the end of each window:
    /// `Some(ticks)` extends the call, `None` interrupts it.
    pub(crate) fn extend(&mut self, deadline: u64, probe_ticks: u64) -> Option<u64> {
        let max_windows = deadline.saturating_mul(OVERTIME_FACTOR - 1) / probe_ticks;
        let now = thread_cpu_time()?;
        let burned = self.window_cpu.map(|start| now.saturating_sub(start));
        if burned.is_some_and(|b| b >= BUSY) || self.windows >= max_windows {
            return None;
        }
        self.window_cpu = Some(now);
        self.windows += 1;
        Some(probe_ticks)
    }
}

/// CPU time of the calling thread; `None` where it cannot be read (then a call at its
/// deadline is interrupted, as with a plain epoch deadline).
#[cfg(unix)]
fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec for the call's duration, and
    // CLOCK_THREAD_CPUTIME_ID is a clock id every supported unix accepts.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec).ok()?;
    (rc == 0).then(|| Duration::new(secs, nanos))
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

/// [`StoreLimits`] (memory cap, growth failure traps) that also remembers whether the cap
/// was hit, so that a memory bomb is reported as such and not as a generic trap.
pub(crate) struct Limiter {
    limits: StoreLimits,
    pub(crate) hit: bool,
}

impl Limiter {
    pub(crate) fn new(memory_limit_bytes: usize) -> Self {
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_limit_bytes)
            // A policy has no use for big tables; this bounds `table.grow` bombs too.
            .table_elements(100_000)
            .trap_on_grow_failure(true)
            .build();
        Self { limits, hit: false }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum);
        self.hit |= !matches!(allowed, Ok(true));
        allowed
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.hit = true;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.table_growing(current, desired, maximum);
        self.hit |= !matches!(allowed, Ok(true));
        allowed
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.hit = true;
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_rounds_up_to_whole_ticks() {
        assert_eq!(deadline_ticks(Duration::from_millis(20), TICK), 20);
        assert_eq!(deadline_ticks(Duration::from_micros(20_500), TICK), 21);
        assert_eq!(deadline_ticks(Duration::ZERO, TICK), 1);
    }

    #[test]
    fn a_busy_call_is_interrupted_after_one_window() {
        let mut overtime = Overtime::default();
        assert_eq!(
            overtime.extend(20, 5),
            Some(5),
            "the first window is granted"
        );
        let start = thread_cpu_time().unwrap();
        while thread_cpu_time().unwrap() - start < BUSY * 2 {
            std::hint::black_box(0);
        }
        assert_eq!(
            overtime.extend(20, 5),
            None,
            "a thread that burned CPU is interrupted"
        );
    }

    #[test]
    fn a_descheduled_call_gets_windows_up_to_the_cap() {
        let mut overtime = Overtime::default();
        let granted = std::iter::from_fn(|| overtime.extend(20, 5))
            .take(100)
            .count();
        // 20 ms deadline × (5 - 1) = 80 ms of windows of 5 ms.
        assert_eq!(granted, 16);
    }
}
