//! Runs a real OpenSIPS 3.6 for a test: the config is `examples/opensips/opensips.cfg`
//! (or, with [`Setup::module`], `opensips-module.cfg`), its `include_file` of
//! `cvw-routes.cfg` inlined, with its addresses replaced (OpenSIPS has no `#!substdef`: the example writes each
//! address always in one form, and each form is replaced as a whole string), on loopback
//! ports that were free a moment ago, written into a run directory of its own. The whole
//! process group is killed on drop, so no OpenSIPS outlives its test. It does not judge
//! the config: the tests do.
//!
//! OpenSIPS is not packaged for Debian: `scripts/build-opensips` (run by `scripts/setup`)
//! builds it into [`prefix`], the one place this runner looks.

use crate::kamailio::ModuleFiles;
use crate::process::{ProxyProcess, free_port};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The OpenSIPS release `scripts/build-opensips` builds.
pub const VERSION: &str = "3.6.8";

/// The addresses as the example config writes them, each replaced as a whole string.
pub const PROXY: &str = "127.0.0.1:5060";
pub const PBX_TRUNK: &str = "127.0.0.1:5090";
pub const HOST_UA: &str = "127.0.0.1:5095";
pub const HOST_HTTP: &str = "127.0.0.1:8090";

/// What the generated config points at.
pub struct Setup {
    /// The HTTP address of the host's decision service (route, reply and failure hooks).
    pub host_http: SocketAddr,
    /// The PBX trunk (calls from it are `pbx`; numbers go to it).
    pub pbx: SocketAddr,
    /// The host's own user agent (its legs are `origination`, CVW-34).
    pub host_ua: SocketAddr,
    /// UDP worker processes (`udp_workers`).
    pub udp_workers: u32,
    /// Shared memory (MB).
    pub shm_mb: u32,
    /// An edit of the example's text before its addresses are replaced (the load tool adds
    /// its static baseline), so that what it adds may name them as the example does.
    pub transform: Option<fn(String) -> String>,
    /// `cvw.so` deciding in OpenSIPS' workers (`opensips-module.cfg`) with these files;
    /// `None`: the host over HTTP (`opensips.cfg`). Its call log is not used.
    pub module: Option<ModuleFiles>,
}

impl Setup {
    /// A setup for one test: few workers, little memory.
    pub fn new(host_http: SocketAddr, pbx: SocketAddr, host_ua: SocketAddr) -> Setup {
        Setup {
            host_http,
            pbx,
            host_ua,
            udp_workers: 4,
            shm_mb: 128,
            transform: None,
            module: None,
        }
    }
}

pub struct OpenSips {
    process: ProxyProcess,
    pub sip: SocketAddr,
    pub dir: PathBuf,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where OpenSIPS is installed: `$CVW_OPENSIPS_PREFIX`, else `target/opensips-3.6.8` in
/// the workspace — the same rule as `scripts/build-opensips` (the workspace's `target/`
/// whatever `CARGO_TARGET_DIR` says, so that a shared cargo target directory does not
/// move it).
pub fn prefix() -> PathBuf {
    match std::env::var_os("CVW_OPENSIPS_PREFIX") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace()
            .join("target")
            .join(format!("opensips-{VERSION}")),
    }
}

/// Fails (never skips) when OpenSIPS is not built: these tests are the proof that the
/// example config works.
pub fn binary() -> anyhow::Result<PathBuf> {
    let bin = prefix().join("sbin/opensips");
    if bin.exists() {
        return Ok(bin);
    }
    bail!(
        "OpenSIPS {VERSION} is not built at {}: run scripts/setup (it runs scripts/build-opensips, \
         about 2 minutes on 2 cores), or point CVW_OPENSIPS_PREFIX at an install of it",
        prefix().display()
    )
}

pub fn module_dir() -> PathBuf {
    prefix().join("lib64/opensips/modules")
}

pub fn example_config() -> PathBuf {
    workspace().join("examples/opensips/opensips.cfg")
}

/// The config that loads `cvw.so`.
pub fn module_config() -> PathBuf {
    workspace().join("examples/opensips/opensips-module.cfg")
}

/// The routes both configs include.
const ROUTES_INCLUDE: &str = "include_file \"cvw-routes.cfg\"";

/// `cvw.so` for OpenSIPS as `scripts/build-opensips-module` builds it (debug, or
/// `release`). Fails, never skips, when it is missing.
pub fn module_path(profile: &str) -> anyhow::Result<PathBuf> {
    crate::process::built_module("opensips-module", "build-opensips-module", profile)
}

/// The example's text with the shared routes in place of their `include_file` (the
/// generated config is written elsewhere, where a relative include would not resolve).
fn example_text(example: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(example).with_context(|| format!("read {}", example.display()))?;
    let routes = example.with_file_name("cvw-routes.cfg");
    let routes_text =
        std::fs::read_to_string(&routes).with_context(|| format!("read {}", routes.display()))?;
    if !text.contains(ROUTES_INCLUDE) {
        bail!("{} has no {ROUTES_INCLUDE}", example.display());
    }
    Ok(text.replacen(ROUTES_INCLUDE, &routes_text, 1))
}

/// `text` with every `(from, to)` replaced; each `from` must occur, so that a config edit
/// that drops an address fails here, naming it, rather than in a test that times out.
pub fn substitute(text: &str, values: &[(String, String)]) -> anyhow::Result<String> {
    let mut out = text.to_owned();
    for (from, to) in values {
        if !out.contains(from.as_str()) {
            bail!("examples/opensips/opensips.cfg has no {from:?} to replace");
        }
        out = out.replace(from.as_str(), to);
    }
    Ok(out)
}

/// The example config for `setup` with the proxy on `sip`, its `mpath` the built modules.
pub fn config_text(setup: &Setup, sip: SocketAddr) -> anyhow::Result<String> {
    let example = match setup.module {
        Some(_) => module_config(),
        None => example_config(),
    };
    let mut text = example_text(&example)?;
    if let Some(edit) = setup.transform {
        text = edit(text);
    }
    let mpath = text
        .lines()
        .find(|l| l.starts_with("mpath="))
        .context("examples/opensips/opensips.cfg has no mpath= line")?
        .to_owned();
    let mut values: Vec<(String, String)> = vec![
        (mpath, format!("mpath=\"{}/\"", module_dir().display())),
        (PROXY.into(), sip.to_string()),
        (PBX_TRUNK.into(), setup.pbx.to_string()),
        (HOST_UA.into(), setup.host_ua.to_string()),
        (
            "udp_workers=4".into(),
            format!("udp_workers={}", setup.udp_workers),
        ),
    ];
    match &setup.module {
        None => values.push((HOST_HTTP.into(), setup.host_http.to_string())),
        Some(m) => {
            let work_dir = m.policy.with_file_name("opensips-cvw-work");
            for (from, to) in [
                ("target/opensips-module/release/cvw.so", &m.so),
                ("/etc/cvw/policy.wasm", &m.policy),
                ("/etc/cvw/directory.toml", &m.directory),
                ("/var/run/opensips/cvw", &work_dir),
            ] {
                values.push((from.into(), to.display().to_string()));
            }
        }
    }
    substitute(&text, &values)
}

/// `opensips -C`: the config's syntax, its modules and every function in the routes it
/// is used in. The error is OpenSIPS' own output.
pub fn check(cfg: &Path) -> anyhow::Result<()> {
    let out = Command::new(binary()?)
        .arg("-C")
        .arg("-f")
        .arg(cfg)
        .stdin(Stdio::null())
        .output()
        .context("run opensips -C")?;
    if !out.status.success() {
        bail!(
            "opensips -C -f {} failed ({}):\n{}{}",
            cfg.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl OpenSips {
    pub fn start(setup: &Setup) -> anyhow::Result<OpenSips> {
        let bin = binary()?;
        let port = free_port();
        let sip = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = std::env::temp_dir().join(format!("cvw-opensips-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let cfg = dir.join("opensips.cfg");
        std::fs::write(&cfg, config_text(setup, sip)?)
            .with_context(|| format!("write {}", cfg.display()))?;
        let log_path = dir.join("opensips.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(bin);
        cmd.arg("-F")
            .arg("-f")
            .arg(&cfg)
            .args(["-m", &setup.shm_mb.to_string(), "-M", "16"])
            // For analysis (an allocator, -a HP_MALLOC), as CVW_KAMAILIO_ARGS for Kamailio.
            .args(
                std::env::var("CVW_OPENSIPS_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .arg("-w")
            .arg(&dir)
            .arg("-P")
            .arg(dir.join("opensips.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let mut process =
            ProxyProcess::spawn("opensips", cmd, dir.clone(), log_path, "CVW_KEEP_OPENSIPS")?;
        process.wait_listening(sip, Duration::from_secs(10))?;
        Ok(OpenSips { process, sip, dir })
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// Process ids of OpenSIPS and its workers (for CPU accounting).
    pub fn pids(&self) -> Vec<u32> {
        self.process.pids()
    }
}
