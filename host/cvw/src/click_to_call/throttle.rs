//! Repeated bad tokens from one source are slowed down: after `max_per_source` failed
//! authentications in `window_s`, every request from that source is answered 429 with
//! `Retry-After` until the window has passed, without looking at its token. Guessing
//! tokens then costs a window per `max_per_source` guesses, and a blocked source learns
//! nothing, not even when it guessed right. Sources are IP addresses, IPv6 ones by their
//! /64 (what one host usually gets); a good token from another source is not affected.
//!
//! The table is capped at `max_sources`: when it is full, expired entries go first, then
//! the one whose window started earliest. A token is never stored or logged here.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// `[api.auth_failures]` in the serve configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFailureSettings {
    /// Failed authentications one source may make per window; 0 turns the check off.
    #[serde(default = "default_max_per_source")]
    pub max_per_source: u32,
    /// The window, in seconds, which starts with a source's first failure.
    #[serde(default = "default_window_s")]
    pub window_s: u64,
    /// Sources tracked at most (memory bound under many addresses).
    #[serde(default = "default_max_sources")]
    pub max_sources: usize,
}

fn default_max_per_source() -> u32 {
    10
}
fn default_window_s() -> u64 {
    60
}
fn default_max_sources() -> usize {
    10_000
}

impl Default for AuthFailureSettings {
    fn default() -> Self {
        Self {
            max_per_source: default_max_per_source(),
            window_s: default_window_s(),
            max_sources: default_max_sources(),
        }
    }
}

/// A source as counted: an IPv4 address or an IPv6 /64; `None` when the server did not
/// say where a request came from (all such requests share one count).
pub(crate) type SourceKey = Option<IpAddr>;

pub(crate) fn key(source: Option<IpAddr>) -> SourceKey {
    source.map(|ip| match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
        v4 => v4,
    })
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// The failure counts of the API's sources, shared by all requests.
pub struct AuthThrottle {
    settings: AuthFailureSettings,
    sources: Mutex<HashMap<SourceKey, Failures>>,
}

impl AuthThrottle {
    pub fn new(settings: AuthFailureSettings) -> Self {
        Self {
            settings,
            sources: Mutex::new(HashMap::new()),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_secs(self.settings.window_s)
    }

    /// `Err(retry_after)` when `source` has used up its failures in the current window.
    pub fn check(&self, source: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        if self.settings.max_per_source == 0 {
            return Ok(());
        }
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        match sources.get(&key(source)) {
            Some(f) if f.count >= self.settings.max_per_source => {
                let left = self.window().saturating_sub(now.duration_since(f.since));
                if left.is_zero() { Ok(()) } else { Err(left) }
            }
            _ => Ok(()),
        }
    }

    /// Count a failed authentication of `source`; true when this one blocks it.
    pub fn failed(&self, source: Option<IpAddr>, now: Instant) -> bool {
        if self.settings.max_per_source == 0 {
            return false;
        }
        let window = self.window();
        let key = key(source);
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if !sources.contains_key(&key) && sources.len() >= self.settings.max_sources.max(1) {
            sources.retain(|_, f| now.duration_since(f.since) < window);
            if sources.len() >= self.settings.max_sources.max(1)
                && let Some(oldest) = sources.iter().min_by_key(|(_, f)| f.since).map(|(k, _)| *k)
            {
                sources.remove(&oldest);
            }
        }
        let entry = sources.entry(key).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.duration_since(entry.since) >= window {
            *entry = Failures {
                since: now,
                count: 0,
            };
        }
        entry.count = entry.count.saturating_add(1);
        entry.count == self.settings.max_per_source
    }

    /// Sources currently tracked.
    pub fn tracked(&self) -> usize {
        self.sources.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn throttle(max_per_source: u32, max_sources: usize) -> AuthThrottle {
        AuthThrottle::new(AuthFailureSettings {
            max_per_source,
            window_s: 60,
            max_sources,
        })
    }

    #[test]
    fn a_source_is_blocked_after_its_failures_until_the_window_passes() {
        let t = throttle(3, 100);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert!(!t.failed(a, t0));
        assert!(!t.failed(a, t0));
        assert!(t.check(a, t0).is_ok());
        assert!(
            t.failed(a, t0 + Duration::from_secs(10)),
            "the third blocks"
        );
        assert_eq!(
            t.check(a, t0 + Duration::from_secs(20)),
            Err(Duration::from_secs(40))
        );
        // Another source is not affected.
        assert!(t.check(ip("192.0.2.2"), t0).is_ok());
        // Once the window has passed, the source may try again, with a fresh count.
        let later = t0 + Duration::from_secs(60);
        assert!(t.check(a, later).is_ok());
        assert!(!t.failed(a, later));
        assert!(t.check(a, later).is_ok());
    }

    #[test]
    fn ipv6_sources_are_counted_by_their_64_and_mapped_ipv4_as_ipv4() {
        let t = throttle(2, 100);
        let now = Instant::now();
        t.failed(ip("2001:db8:1:2::1"), now);
        t.failed(ip("2001:db8:1:2::ffff"), now);
        assert!(t.check(ip("2001:db8:1:2:abcd::9"), now).is_err());
        assert!(t.check(ip("2001:db8:1:3::1"), now).is_ok());
        t.failed(ip("::ffff:192.0.2.7"), now);
        t.failed(ip("192.0.2.7"), now);
        assert!(t.check(ip("192.0.2.7"), now).is_err());
    }

    #[test]
    fn the_table_is_capped() {
        let t = throttle(2, 100);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let source = Some(IpAddr::from(i.to_be_bytes()));
            t.failed(source, t0 + Duration::from_millis(u64::from(i)));
            t.failed(source, t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(t.tracked(), 100);
        // The newest sources are the ones kept.
        assert!(
            t.check(Some(IpAddr::from(999u32.to_be_bytes())), t0)
                .is_err()
        );
    }

    #[test]
    fn zero_turns_it_off() {
        let t = throttle(0, 100);
        let now = Instant::now();
        for _ in 0..100 {
            assert!(!t.failed(ip("192.0.2.1"), now));
        }
        assert!(t.check(ip("192.0.2.1"), now).is_ok());
        assert_eq!(t.tracked(), 0);
    }
}
