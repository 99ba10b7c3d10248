//! What the proxy runners ([`crate::kamailio`], [`crate::opensips`]) share: loopback ports
//! that were free a moment ago, and a proxy process whose whole process group dies with it
//! (both proxies fork their workers), its log kept when a test fails.

use anyhow::bail;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports already handed out in this process: tests run in parallel, and a port that was
/// free a moment ago may be handed to two of them.
static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());

/// A loopback port free for both UDP and TCP (the proxies listen on both).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let Ok(tcp) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(addr) = tcp.local_addr() else { continue };
        if UdpSocket::bind(addr).is_err() {
            continue;
        }
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr.port();
        }
    }
    panic!("no free loopback port");
}

/// A `cvw.so` that `scripts/<script>` builds into `target/<dir>/<profile>/` (debug, or
/// `release`). Fails, never skips, when it is missing.
pub fn built_module(dir: &str, script: &str, profile: &str) -> anyhow::Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let so = target.join(dir).join(profile).join("cvw.so");
    if !so.exists() {
        let flag = if profile == "release" {
            " --release"
        } else {
            ""
        };
        bail!(
            "{} is missing: build it with scripts/{script}{flag} (scripts/setup and scripts/test do)",
            so.display()
        );
    }
    Ok(so)
}

/// A proxy started in a process group of its own, writing `log` in its run directory
/// `dir`. Dropping it kills the group and removes `dir`, unless the test failed or
/// `keep_env` is set.
pub struct ProxyProcess {
    child: Child,
    name: &'static str,
    pub dir: PathBuf,
    log: PathBuf,
    keep_env: &'static str,
}

impl ProxyProcess {
    /// `cmd` must already be set to start in a process group of its own
    /// (`CommandExt::process_group(0)`), with its output going to `log`.
    pub fn spawn(
        name: &'static str,
        mut cmd: Command,
        dir: PathBuf,
        log: PathBuf,
        keep_env: &'static str,
    ) -> anyhow::Result<ProxyProcess> {
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("spawn {name}: {e}"))?;
        Ok(ProxyProcess {
            child,
            name,
            dir,
            log,
            keep_env,
        })
    }

    /// Waits until the proxy accepts TCP on `sip`, and makes sure it is this proxy that
    /// answered (a port taken by someone else makes ours exit).
    pub fn wait_listening(&mut self, sip: SocketAddr, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited at start ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if std::net::TcpStream::connect_timeout(&sip, Duration::from_millis(100)).is_ok() {
                // The SIP workers are forked right after the listeners: give them a moment.
                std::thread::sleep(Duration::from_millis(300));
                if let Some(status) = self.child.try_wait()? {
                    bail!(
                        "{} exited at start ({status}):\n{}",
                        self.name,
                        self.log_tail()
                    );
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{} did not listen on {sip} within {within:?}:\n{}",
            self.name,
            self.log_tail()
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Process ids of the proxy and its workers (for CPU accounting).
    pub fn pids(&self) -> Vec<u32> {
        let group = self.child.id();
        let mut pids = vec![group];
        if let Ok(out) = Command::new("pgrep")
            .args(["-g", &group.to_string()])
            .output()
        {
            pids.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok()),
            );
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

impl ProxyProcess {
    /// Stops the whole process group (SIGTERM, then SIGKILL after 3 s) and waits for it.
    fn stop_group(&mut self) {
        // The proxy forks its workers into the group we created: signal the whole group.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }

    /// Stops the proxy and starts `cmd` (the same proxy, set up as for
    /// [`ProxyProcess::spawn`]) in its place, keeping the run directory.
    pub fn respawn(&mut self, mut cmd: Command) -> anyhow::Result<()> {
        self.stop_group();
        self.child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("spawn {} again: {e}", self.name))?;
        Ok(())
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.stop_group();
        if std::thread::panicking() {
            eprintln!(
                "{} log kept in {}; its end:\n{}",
                self.name,
                self.dir.display(),
                self.log_tail()
            );
        }
        // Kept when a test fails, or on request, to read the log.
        if !std::thread::panicking() && std::env::var_os(self.keep_env).is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
