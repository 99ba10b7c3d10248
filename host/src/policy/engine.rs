//! The one wasmtime [`Engine`] of a [`super::PolicyHost`], the epoch ticker that gives
//! every hook call its wall-clock deadline, and the per-store memory limiter.
//!
//! Owns the `Config` knobs (why each is set is said beside it). Does not own stores or
//! instances (`runtime.rs`) nor the host imports (`state.rs`).

use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::thread;
use std::time::Duration;

use wasmtime::{Config, Engine, OptLevel, ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// One epoch tick. Deadlines are whole ticks, so 1 ms gives them a 1 ms resolution while
/// costing one atomic increment per millisecond.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Builds the engine shared by every policy version of one host.
pub(crate) fn new_engine(max_wasm_stack: usize) -> wasmtime::Result<Engine> {
    let mut config = Config::new();
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

/// Increments the engine's epoch every [`TICK`] until the returned guard is dropped.
pub(crate) struct EpochTicker {
    // Dropping the sender wakes the thread at once (`Disconnected`), without waiting a tick.
    _stop: SyncSender<()>,
}

impl EpochTicker {
    pub(crate) fn start(engine: Engine) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::sync_channel::<()>(0);
        thread::Builder::new()
            .name("cvw-epoch".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(TICK) {
                    engine.increment_epoch();
                }
            })?;
        Ok(Self { _stop: stop })
    }
}

/// Ticks a call may run: `deadline` rounded up, at least one.
pub(crate) fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = TICK.as_nanos();
    u64::try_from(deadline.as_nanos().div_ceil(tick))
        .unwrap_or(u64::MAX)
        .max(1)
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
        assert_eq!(deadline_ticks(Duration::from_millis(20)), 20);
        assert_eq!(deadline_ticks(Duration::from_micros(20_500)), 21);
        assert_eq!(deadline_ticks(Duration::ZERO), 1);
    }
}
