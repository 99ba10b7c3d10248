//! A lossy loopback relay between a user agent and a phone, for fault tests: every UDP
//! datagram between the two goes through it, and it drops a share of them in each
//! direction (seeded, so a run's drop decisions can be replayed), or all of them once the
//! phone is [`Relay::cut`] off (a phone that vanished mid-call).
//!
//! Put the relay's address in place of the phone's (e.g. [`Relay::uri`] as a leg's URI).
//! It sends to the phone from its own socket, so the phone answers it (responses go to
//! the source, RFC 3581), and it writes its own address into the Contact of what it
//! forwards, both ways, so that in-dialog requests come through it too. The user agent's
//! address is learned from the first datagram that does not come from the phone: one
//! user agent per relay. 127.0.0.1 only, UDP only.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// The share of datagrams dropped in each direction, 0.0 to 1.0, and the seed of the
/// drop decisions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loss {
    /// From the user agent to the phone.
    pub to_phone: f64,
    /// From the phone to the user agent.
    pub from_phone: f64,
    pub seed: u64,
}

impl Loss {
    /// The same share both ways.
    pub fn both(share: f64, seed: u64) -> Loss {
        Loss {
            to_phone: share,
            from_phone: share,
            seed,
        }
    }
}

/// What went one way through the relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Direction {
    /// Passed on.
    pub forwarded: u64,
    /// Dropped by the loss share.
    pub dropped: u64,
    /// Dropped because the phone was cut off.
    pub cut: u64,
    /// Datagrams identical to an earlier one this way (forwarded or not): the
    /// retransmissions of RFC 3261 §17 and §13.3.1.4 (a re-sent ACK included).
    pub retransmissions: u64,
}

/// Both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub to_phone: Direction,
    pub from_phone: Direction,
}

impl Stats {
    pub fn dropped(&self) -> u64 {
        self.to_phone.dropped + self.from_phone.dropped
    }

    pub fn retransmissions(&self) -> u64 {
        self.to_phone.retransmissions + self.from_phone.retransmissions
    }

    pub fn datagrams(&self) -> u64 {
        let d = |x: &Direction| x.forwarded + x.dropped + x.cut;
        d(&self.to_phone) + d(&self.from_phone)
    }
}

struct Shared {
    stats: Mutex<Stats>,
    cut: AtomicBool,
}

/// A running relay; dropping it stops it.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// A relay on 127.0.0.1 in front of the phone at `phone`.
    pub async fn start(phone: SocketAddr, loss: Loss) -> std::io::Result<Relay> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let shared = Arc::new(Shared {
            stats: Mutex::default(),
            cut: AtomicBool::new(false),
        });
        let task = tokio::spawn(run(socket, addr, phone, loss, shared.clone()));
        Ok(Relay { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A URI that reaches the phone through the relay, e.g. `sip:alice@127.0.0.1:40312`.
    pub fn uri(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.addr)
    }

    /// The phone vanishes: from now on nothing reaches it and nothing of it gets out.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
    }

    pub fn stats(&self) -> Stats {
        *self.shared.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// SplitMix64: small, seedable, good enough to pick which datagrams to drop.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

async fn run(
    socket: UdpSocket,
    relay: SocketAddr,
    phone: SocketAddr,
    loss: Loss,
    shared: Arc<Shared>,
) {
    let mut rng = Rng(loss.seed);
    let mut ua: Option<SocketAddr> = None;
    let mut seen = [HashSet::new(), HashSet::new()];
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let datagram = &buf[..n];
        let from_phone = from == phone;
        let (to, share, way) = if from_phone {
            let Some(ua) = ua else { continue };
            (ua, loss.from_phone, 1)
        } else {
            ua = Some(from);
            (phone, loss.to_phone, 0)
        };
        let mut hasher = DefaultHasher::new();
        datagram.hash(&mut hasher);
        let repeated = !seen[way].insert(hasher.finish());
        let cut = shared.cut.load(Ordering::SeqCst);
        let drop = !cut && rng.next_f64() < share;
        {
            let mut stats = shared.stats.lock().unwrap_or_else(|e| e.into_inner());
            let d = if from_phone {
                &mut stats.from_phone
            } else {
                &mut stats.to_phone
            };
            d.retransmissions += u64::from(repeated);
            if cut {
                d.cut += 1;
            } else if drop {
                d.dropped += 1;
            } else {
                d.forwarded += 1;
            }
        }
        if cut || drop {
            continue;
        }
        let out = rewrite_contact(datagram, &from.to_string(), &relay.to_string());
        let _ = socket.send_to(&out, to).await;
    }
}

/// The datagram with `from` replaced by `to` in its Contact header lines (`Contact:` or
/// the compact `m:`), so that the far end sends its in-dialog requests to the relay.
/// The body is left alone (its length does not change).
fn rewrite_contact(datagram: &[u8], from: &str, to: &str) -> Vec<u8> {
    let end = datagram
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(datagram.len());
    let (head, body) = datagram.split_at(end);
    let Ok(head) = std::str::from_utf8(head) else {
        return datagram.to_vec();
    };
    let mut out = String::with_capacity(datagram.len());
    for (i, line) in head.split("\r\n").enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        let name = line.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("contact") || name.eq_ignore_ascii_case("m") {
            out.push_str(&line.replace(from, to));
        } else {
            out.push_str(line);
        }
    }
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_contact_is_rewritten() {
        let m = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5000;branch=z9hG4bKx\r\n\
                 Contact: <sip:cvw@127.0.0.1:5000;transport=udp>\r\nContent-Length: 4\r\n\r\n\
                 5000";
        let out = rewrite_contact(m.as_bytes(), "127.0.0.1:5000", "127.0.0.1:6000");
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("Via: SIP/2.0/UDP 127.0.0.1:5000;"), "{out}");
        assert!(out.contains("Contact: <sip:cvw@127.0.0.1:6000;"), "{out}");
        assert!(out.ends_with("\r\n\r\n5000"), "{out}");
    }

    #[test]
    fn the_drop_share_follows_the_seed() {
        let mut a = Rng(7);
        let mut b = Rng(7);
        let picks: Vec<bool> = (0..10_000).map(|_| a.next_f64() < 0.3).collect();
        assert!(
            picks
                .iter()
                .zip((0..).map(|_| b.next_f64() < 0.3))
                .all(|(x, y)| *x == y)
        );
        let share = picks.iter().filter(|d| **d).count() as f64 / 10_000.0;
        assert!((0.28..0.32).contains(&share), "{share}");
    }
}
