//! Per-user limits on click to call (CVW-15): how many calls a user may start in a window
//! and how many may be up at once. Both legs of every call are billable, so these bound
//! what a stolen token can cost.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Calls a user may start per `window_s`.
    #[serde(default = "default_calls_per_window")]
    pub calls_per_window: u32,
    #[serde(default = "default_window_s")]
    pub window_s: u64,
    /// Calls a user may have up at the same time.
    #[serde(default = "default_concurrent")]
    pub max_concurrent: u32,
}

fn default_calls_per_window() -> u32 {
    10
}
fn default_window_s() -> u64 {
    60
}
fn default_concurrent() -> u32 {
    2
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            calls_per_window: default_calls_per_window(),
            window_s: default_window_s(),
            max_concurrent: default_concurrent(),
        }
    }
}

/// Why a user may not start another call now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("{user} already has {active} calls up (at most {max})")]
    Concurrent { user: String, active: u32, max: u32 },
    #[error("{user} started {max} calls in the last {window_s} s; try again in {retry_after_s} s")]
    Rate {
        user: String,
        max: u32,
        window_s: u64,
        retry_after_s: u64,
    },
}

#[derive(Default)]
struct UserUse {
    active: u32,
    started: VecDeque<Instant>,
}

/// The limits' bookkeeping, shared by all API requests.
pub struct Limits {
    settings: LimitSettings,
    users: Mutex<HashMap<String, UserUse>>,
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            settings,
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Take a slot for a new call of `user`, or say which limit stops it. The slot is
    /// given back with [`Limits::release`] when the call ends.
    pub fn acquire(&self, user: &str, now: Instant) -> Result<(), LimitExceeded> {
        let window = Duration::from_secs(self.settings.window_s);
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let entry = users.entry(user.to_owned()).or_default();
        while entry
            .started
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            entry.started.pop_front();
        }
        if entry.active >= self.settings.max_concurrent {
            return Err(LimitExceeded::Concurrent {
                user: user.to_owned(),
                active: entry.active,
                max: self.settings.max_concurrent,
            });
        }
        if entry.started.len() >= self.settings.calls_per_window as usize {
            let oldest = entry.started.front().copied().unwrap_or(now);
            let retry = window.saturating_sub(now.duration_since(oldest));
            return Err(LimitExceeded::Rate {
                user: user.to_owned(),
                max: self.settings.calls_per_window,
                window_s: self.settings.window_s,
                retry_after_s: retry.as_secs().max(1),
            });
        }
        entry.active += 1;
        entry.started.push_back(now);
        Ok(())
    }

    /// A call of `user` ended (or never started): its concurrency slot is free again.
    pub fn release(&self, user: &str) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = users.get_mut(user) {
            entry.active = entry.active.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "sip:alice@corp.example";

    #[test]
    fn concurrency_limit_obeyed_then_violated_then_freed() {
        let limits = Limits::new(LimitSettings {
            calls_per_window: 100,
            window_s: 60,
            max_concurrent: 2,
        });
        let now = Instant::now();
        assert!(limits.acquire(ALICE, now).is_ok());
        assert!(limits.acquire(ALICE, now).is_ok());
        let err = limits.acquire(ALICE, now).unwrap_err();
        assert!(matches!(
            err,
            LimitExceeded::Concurrent {
                active: 2,
                max: 2,
                ..
            }
        ));
        // Another user is not affected by Alice's calls.
        assert!(limits.acquire("sip:bob@corp.example", now).is_ok());
        limits.release(ALICE);
        assert!(limits.acquire(ALICE, now).is_ok());
    }

    #[test]
    fn rate_limit_counts_starts_in_the_window_even_after_calls_end() {
        let limits = Limits::new(LimitSettings {
            calls_per_window: 3,
            window_s: 60,
            max_concurrent: 10,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            limits.acquire(ALICE, t0).unwrap();
            limits.release(ALICE);
        }
        let err = limits
            .acquire(ALICE, t0 + Duration::from_secs(20))
            .unwrap_err();
        assert!(
            matches!(
                err,
                LimitExceeded::Rate {
                    retry_after_s: 40,
                    ..
                }
            ),
            "{err:?}"
        );
        // Once the window has passed, calls may start again.
        assert!(limits.acquire(ALICE, t0 + Duration::from_secs(60)).is_ok());
    }
}
