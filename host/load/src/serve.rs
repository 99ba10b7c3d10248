//! `cvw serve` as a child process of the tool (`api`, `failover`): its memory and CPU are
//! its own, and it can be killed.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `cvw serve`, killed (SIGKILL) when dropped.
pub struct ServeProcess(Child);

impl ServeProcess {
    /// `cvw serve --config config`, its output into `log` at `RUST_LOG` level `level`.
    pub fn spawn(
        cvw: &Path,
        config: &Path,
        log: &Path,
        level: &str,
    ) -> anyhow::Result<ServeProcess> {
        let log = std::fs::File::create(log)?;
        let child = Command::new(cvw)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("CVW_ADMIN_TOKEN", "load-admin-token")
            .env("RUST_LOG", level)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", cvw.display()))?;
        Ok(ServeProcess(child))
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL, as a crash would: no goodbye on any connection, the kernel closes them.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `cvw` binary: `given`, or the one built beside this tool.
pub fn cvw_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("cvw"),
    };
    if !path.is_file() {
        bail!(
            "{} not found: build it with `cargo build -p cvw` (same profile), or pass --cvw",
            path.display()
        );
    }
    Ok(path)
}
