//! Counters of the policy runtime: decisions, failures by kind, swaps, refused loads, and
//! the counters a policy bumps through its `metrics` import. Owns counting and the
//! snapshot; exporting them (control API, Prometheus text) belongs to the CLI/service.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use super::FailureKind;

/// Distinct guest counter names kept; more are dropped (and counted) so a policy that
/// invents names per call cannot grow the host's memory.
const MAX_GUEST_COUNTERS: usize = 256;

#[derive(Default)]
pub(crate) struct Counters {
    decisions: AtomicU64,
    failures: [AtomicU64; FailureKind::ALL.len()],
    swaps: AtomicU64,
    refused_loads: AtomicU64,
    guest: Mutex<BTreeMap<String, u64>>,
    guest_dropped: AtomicU64,
}

impl Counters {
    pub(crate) fn decision(&self) {
        self.decisions.fetch_add(1, Relaxed);
    }

    pub(crate) fn failure(&self, kind: FailureKind) {
        self.failures[kind as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn swap(&self) {
        self.swaps.fetch_add(1, Relaxed);
    }

    pub(crate) fn refused_load(&self) {
        self.refused_loads.fetch_add(1, Relaxed);
    }

    pub(crate) fn count_guest(&self, name: String, delta: u64) {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        // A poisoned lock only means another thread panicked mid-increment; the map is
        // still a map.
        let mut guest = self.guest.lock().unwrap_or_else(|p| p.into_inner());
        if valid && (guest.len() < MAX_GUEST_COUNTERS || guest.contains_key(&name)) {
            let counter = guest.entry(name).or_default();
            *counter = counter.saturating_add(delta);
        } else {
            self.guest_dropped.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            decisions: self.decisions.load(Relaxed),
            failures: FailureKind::ALL
                .iter()
                .map(|&kind| (kind, self.failures[kind as usize].load(Relaxed)))
                .collect(),
            swaps: self.swaps.load(Relaxed),
            refused_loads: self.refused_loads.load(Relaxed),
            guest: self.guest.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            guest_dropped: self.guest_dropped.load(Relaxed),
        }
    }
}

/// The runtime's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Hook calls that returned the policy's own answer.
    pub decisions: u64,
    /// Hook calls answered by the failure mode instead, by kind (every kind present).
    pub failures: BTreeMap<FailureKind, u64>,
    /// Policy versions published (first load, swaps and directory republishes).
    pub swaps: u64,
    /// Modules or directories refused at publish.
    pub refused_loads: u64,
    /// The policy's own counters (`metrics.count`).
    pub guest: BTreeMap<String, u64>,
    /// `metrics.count` calls ignored: bad name or too many names.
    pub guest_dropped: u64,
}

impl MetricsSnapshot {
    /// Failures of every kind together.
    pub fn total_failures(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn failures_of(&self, kind: FailureKind) -> u64 {
        self.failures.get(&kind).copied().unwrap_or(0)
    }
}
