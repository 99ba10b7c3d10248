//! What every mode measures with, and nothing about what it drives: latency percentiles,
//! CPU time of this process's threads and of other processes (`/proc`, read with
//! `procfs`), resident memory, live heap (this tool's global allocator counts it, with
//! `cap`), the memory footprint of held calls, and the median of rounds.

use cap::Cap;
use procfs::process::Process;
use std::alloc::System;
use std::time::Duration;

/// Counts live heap bytes, for `originate`'s memory per call: RSS also holds the
/// allocator's free lists and per-thread arenas, so both are reported. No limit: only the
/// count is wanted.
#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Bytes allocated and not freed, as requested (without the allocator's overhead).
pub fn live_heap() -> usize {
    ALLOCATOR.allocated()
}

#[derive(Default)]
pub struct Lat(pub Vec<u32>);

impl Lat {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros().min(u128::from(u32::MAX)) as u32);
    }
    pub fn report(&mut self, what: &str) {
        self.0.sort_unstable();
        let n = self.0.len();
        if n == 0 {
            println!("{what}: no samples");
            return;
        }
        let p = |q: f64| self.0[((n as f64 * q) as usize).min(n - 1)];
        println!(
            "{what}: n={n} p50={}us p90={}us p99={}us p99.9={}us max={}us",
            p(0.5),
            p(0.9),
            p(0.99),
            p(0.999),
            self.0[n - 1]
        );
    }
}

/// The median of `ratios`, in percent.
pub fn median_percent(mut ratios: Vec<f64>) -> f64 {
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2] * 100.0
}

/// CPU seconds used so far by this process's threads, split by thread-name prefix:
/// (threads named `prefix*`, all threads).
pub fn thread_cpu(prefix: &str) -> (f64, f64) {
    let (mut matching, mut total) = (0u64, 0u64);
    if let Ok(tasks) = Process::myself().and_then(|p| p.tasks()) {
        for task in tasks.flatten() {
            let Ok(stat) = task.stat() else {
                continue;
            };
            let ticks = stat.utime + stat.stime;
            total += ticks;
            if stat.comm.starts_with(prefix) {
                matching += ticks;
            }
        }
    }
    (ticks_to_s(matching), ticks_to_s(total))
}

/// CPU seconds used so far by these processes (their threads included); a process that
/// is gone counts nothing.
pub fn process_cpu(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|&pid| Process::new(i32::try_from(pid).ok()?).ok()?.stat().ok())
        .map(|stat| stat.utime + stat.stime)
        .sum();
    ticks_to_s(ticks)
}

fn ticks_to_s(ticks: u64) -> f64 {
    ticks as f64 / procfs::ticks_per_second() as f64
}

/// Resident memory of a process in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    i32::try_from(pid)
        .ok()
        .and_then(|pid| Process::new(pid).ok()?.status().ok()?.vmrss)
        .unwrap_or(0)
}

/// What the held calls are measured with: this process's live heap and RSS and the
/// phones' process's RSS, taken before and after the calls are up.
pub struct Footprint {
    pub heap: usize,
    pub host_kib: u64,
    pub phones_kib: u64,
}

impl Footprint {
    pub fn now(phones_pid: u32) -> Footprint {
        Footprint {
            heap: live_heap(),
            host_kib: rss_kib(std::process::id()),
            phones_kib: rss_kib(phones_pid),
        }
    }

    /// Bytes per call from `self` to `later` over `calls` calls, as (host live heap
    /// without `own` bytes the tool itself keeps, host RSS, phones' RSS).
    pub fn per_call(&self, later: &Footprint, calls: usize, own: usize) -> (f64, f64, f64) {
        let calls = calls.max(1) as f64;
        let kib = |a: u64, b: u64| (b.saturating_sub(a) * 1024) as f64 / calls;
        (
            later.heap.saturating_sub(self.heap).saturating_sub(own) as f64 / calls,
            kib(self.host_kib, later.host_kib),
            kib(self.phones_kib, later.phones_kib),
        )
    }
}
