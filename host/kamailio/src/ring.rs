//! Ring timeouts of single branches (CVW-51) without a timer per call in Kamailio's shared
//! memory: a worker that relays a branch with its own ring timeout pushes an entry onto a
//! bounded queue in the shared block (no lock, no allocation); the module's ring-timer
//! process drains it every few milliseconds into a heap of its own and hands back the
//! entries that are due, which it cancels through tm if the branch still rings.
//!
//! A timer per call (`timer_alloc`, freed when it fired) was measured: at 14 000 calls/s
//! the timer process spent its time in the shared-memory lock and Kamailio stalled.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Entries in flight at once: a drain every 20 ms empties it long before 14 000 calls/s
/// could fill it.
pub const CAPACITY: usize = 1 << 16;
const MASK: u64 = CAPACITY as u64 - 1;

/// One branch whose ring timeout runs (`cvw_ring_t` in C).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Due {
    /// When, in ms of `CLOCK_MONOTONIC` (the same clock in every process).
    pub at_ms: u64,
    /// tm's identity of the transaction.
    pub hash_index: u32,
    pub label: u32,
    pub branch: u32,
}

/// A bounded multi-producer queue (Vyukov's) of plain atomics, so it can live in shared
/// memory and be used from every Kamailio process; one process consumes.
#[repr(C)]
pub struct Queue {
    enqueue: AtomicU64,
    dequeue: AtomicU64,
    slots: [Slot; CAPACITY],
}

#[repr(C)]
struct Slot {
    seq: AtomicU64,
    at_ms: AtomicU64,
    hash_index: AtomicU32,
    label: AtomicU32,
    branch: AtomicU32,
}

impl Queue {
    /// Makes a zeroed queue ready (before any process uses it).
    pub fn init(&self) {
        for (i, s) in self.slots.iter().enumerate() {
            s.seq.store(i as u64, Ordering::Relaxed);
        }
        self.enqueue.store(0, Ordering::Relaxed);
        self.dequeue.store(0, Ordering::Release);
    }

    /// Adds `due`; `false` when the queue is full.
    pub fn push(&self, due: Due) -> bool {
        let mut pos = self.enqueue.load(Ordering::Relaxed);
        loop {
            let slot = &self.slots[(pos & MASK) as usize];
            let seq = slot.seq.load(Ordering::Acquire);
            match seq.cmp(&pos) {
                std::cmp::Ordering::Equal => {
                    match self.enqueue.compare_exchange_weak(
                        pos,
                        pos + 1,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {
                            slot.at_ms.store(due.at_ms, Ordering::Relaxed);
                            slot.hash_index.store(due.hash_index, Ordering::Relaxed);
                            slot.label.store(due.label, Ordering::Relaxed);
                            slot.branch.store(due.branch, Ordering::Relaxed);
                            slot.seq.store(pos + 1, Ordering::Release);
                            return true;
                        }
                        Err(now) => pos = now,
                    }
                }
                std::cmp::Ordering::Less => return false,
                std::cmp::Ordering::Greater => pos = self.enqueue.load(Ordering::Relaxed),
            }
        }
    }

    /// The oldest entry, if one is complete. One consumer only.
    pub fn pop(&self) -> Option<Due> {
        let pos = self.dequeue.load(Ordering::Relaxed);
        let slot = &self.slots[(pos & MASK) as usize];
        if slot.seq.load(Ordering::Acquire) != pos + 1 {
            return None;
        }
        let due = Due {
            at_ms: slot.at_ms.load(Ordering::Relaxed),
            hash_index: slot.hash_index.load(Ordering::Relaxed),
            label: slot.label.load(Ordering::Relaxed),
            branch: slot.branch.load(Ordering::Relaxed),
        };
        slot.seq.store(pos + MASK + 1, Ordering::Release);
        self.dequeue.store(pos + 1, Ordering::Relaxed);
        Some(due)
    }
}

/// Milliseconds of `CLOCK_MONOTONIC`.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let d = Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    );
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The consumer's entries not yet due, soonest first.
static WAITING: Mutex<BinaryHeap<Reverse<Due>>> = Mutex::new(BinaryHeap::new());

/// Moves what the queue holds into the consumer's heap and fills `out` with entries due
/// by `now_ms`; returns how many.
pub fn due(queue: &Queue, now_ms: u64, out: &mut [Due]) -> usize {
    let mut waiting = WAITING.lock().unwrap_or_else(|p| p.into_inner());
    while let Some(d) = queue.pop() {
        waiting.push(Reverse(d));
    }
    let mut n = 0;
    while n < out.len() {
        match waiting.peek() {
            Some(Reverse(d)) if d.at_ms <= now_ms => {
                out[n] = *d;
                waiting.pop();
                n += 1;
            }
            _ => break,
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Box<Queue> {
        // SAFETY: a Queue is atomics only, for which all-zero is a valid value.
        let q: Box<Queue> = unsafe { Box::new_zeroed().assume_init() };
        q.init();
        q
    }

    fn entry(at_ms: u64, branch: u32) -> Due {
        Due {
            at_ms,
            hash_index: 7,
            label: 9,
            branch,
        }
    }

    #[test]
    fn entries_come_back_when_due_soonest_first() {
        let q = queue();
        assert!(q.push(entry(300, 1)));
        assert!(q.push(entry(100, 2)));
        let mut out = [Due::default(); 4];
        assert_eq!(due(&q, 50, &mut out), 0, "nothing is due yet");
        assert_eq!(due(&q, 150, &mut out), 1);
        assert_eq!(out[0].branch, 2);
        assert_eq!(due(&q, 1000, &mut out), 1);
        assert_eq!(out[0], entry(300, 1));
    }

    #[test]
    fn a_full_queue_refuses_and_takes_again_once_drained() {
        let q = queue();
        for i in 0..CAPACITY {
            assert!(q.push(entry(1, i as u32)));
        }
        assert!(!q.push(entry(1, 0)), "full");
        assert!(q.pop().is_some());
        assert!(q.push(entry(1, 0)), "one slot free again");
    }

    #[test]
    fn producers_on_several_threads_lose_nothing() {
        let q = queue();
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let q = &q;
                s.spawn(move || {
                    for i in 0..1000u64 {
                        assert!(q.push(entry(i, t)));
                    }
                });
            }
        });
        let mut n = 0;
        while q.pop().is_some() {
            n += 1;
        }
        assert_eq!(n, 4000);
    }
}
