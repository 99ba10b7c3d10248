//! Runs a real Kamailio for a test: the config is `examples/kamailio/kamailio.cfg` with
//! its `#!substdef` values replaced (ports, trunk, address list, run directory), on
//! loopback ports that were free a moment ago, written into a run directory of its own
//! beside the transport files it includes. The whole process group is killed on drop, so
//! no Kamailio outlives its test. It does not judge the config: the tests do.

use crate::process::ProxyProcess;
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub use crate::process::free_port;

/// What the generated config points at.
pub struct Setup {
    /// The JSON-RPC (netstring) address of the host's decision service.
    pub host_jsonrpc: SocketAddr,
    /// Its HTTP address (reply and failure hooks).
    pub host_http: SocketAddr,
    /// The PBX trunk (address group 1, next hop for numbers).
    pub pbx: SocketAddr,
    /// The host's own user agent (address group 2, CVW-34).
    pub host_ua: SocketAddr,
    pub decision_timeout_ms: u32,
    /// Extra `#!substdef` overrides.
    pub extra: Vec<(String, String)>,
    /// A last edit of the generated config text (the load tool adds its static baseline).
    pub transform: Option<fn(String) -> String>,
    /// Kamailio shared memory (MB): ~20 KB per two-branch INVITE transaction in flight.
    pub shm_mb: u32,
    /// Decide over JSON-RPC (`-A WITH_JANSSONRPCC`, which includes `cvw-janssonrpcc.cfg`)
    /// instead of evapi (`cvw-evapi.cfg`), the config's default.
    pub janssonrpcc: bool,
    /// Decide inside Kamailio with the native module (`-A WITH_CVW_MODULE`, which
    /// includes `cvw-module.cfg`); the host addresses above are then unused.
    pub module: Option<ModuleFiles>,
}

/// What `cvw-module.cfg` loads: the module and the files it reads.
#[derive(Debug, Clone)]
pub struct ModuleFiles {
    pub so: PathBuf,
    pub policy: PathBuf,
    pub directory: PathBuf,
    /// The call log it writes; `None`: off.
    pub call_log: Option<PathBuf>,
}

/// `cvw.so` as `scripts/build-kamailio-module` builds it for the tests (debug, or
/// `release`). Fails, never skips, when it is missing.
pub fn module_path(profile: &str) -> anyhow::Result<PathBuf> {
    crate::process::built_module("kamailio-module", "build-kamailio-module", profile)
}

pub struct Kamailio {
    process: ProxyProcess,
    /// How it was started, to start it again ([`Kamailio::restart`]).
    launch: Launch,
    pub sip: SocketAddr,
    /// Where its evapi listens for the host (`CVW_EVAPI_ADDR`).
    pub evapi: SocketAddr,
    pub dir: PathBuf,
}

/// The command line a Kamailio was started with.
struct Launch {
    bin: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl Launch {
    /// The command, in a process group of its own, its output into the log (`append`: after
    /// what an earlier run wrote).
    fn command(&self, append: bool) -> anyhow::Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        Ok(cmd)
    }
}

/// Fails (never skips) when Kamailio is not installed: these tests are the proof that the
/// example config works.
pub fn binary() -> anyhow::Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join("kamailio");
        if p.exists() {
            return Ok(p);
        }
    }
    if std::env::var_os("CI").is_some() {
        bail!(
            "kamailio is not installed on this CI machine; the Kamailio end-to-end tests cannot run"
        );
    }
    bail!(
        "kamailio is not installed: run .ci/run (it installs kamailio 5.6 and sipp) or `apt-get install kamailio kamailio-extra-modules`"
    )
}

/// `examples/kamailio/`: the base `kamailio.cfg`, the transport files it includes and the
/// address list.
pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kamailio")
}

pub fn example_config() -> PathBuf {
    example_dir().join("kamailio.cfg")
}

/// The files `kamailio.cfg` includes (`include_file`), one per transport to the host.
pub const INCLUDED: [&str; 3] = ["cvw-evapi.cfg", "cvw-janssonrpcc.cfg", "cvw-module.cfg"];

/// Writes the example config with `values` substituted (and `transform` applied) as
/// `run/kamailio.cfg`, with the files it includes copied beside it: Kamailio looks for a
/// relative `include_file` in its working directory, then beside the including file. The
/// `#!substdef` lines of the base apply to the included files too, so they are copied as
/// they are. Returns the config's path.
pub fn write_config(
    run: &Path,
    values: &[(String, String)],
    transform: Option<fn(String) -> String>,
) -> anyhow::Result<PathBuf> {
    let example = example_config();
    let text =
        std::fs::read_to_string(&example).with_context(|| format!("read {}", example.display()))?;
    let mut text = substitute(&text, values)?;
    if let Some(edit) = transform {
        text = edit(text);
    }
    let cfg = run.join("kamailio.cfg");
    std::fs::write(&cfg, text).with_context(|| format!("write {}", cfg.display()))?;
    for name in INCLUDED {
        let from = example_dir().join(name);
        std::fs::copy(&from, run.join(name))
            .with_context(|| format!("copy {} to {}", from.display(), run.display()))?;
    }
    Ok(cfg)
}

/// `text` with each `#!substdef "!NAME!...!g"` line set to `value`.
pub fn substitute(text: &str, values: &[(String, String)]) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut seen = Vec::new();
    for line in text.lines() {
        let replaced = values
            .iter()
            .find(|(name, _)| line.starts_with(&format!("#!substdef \"!{name}!")));
        match replaced {
            Some((name, value)) => {
                out.push_str(&format!("#!substdef \"!{name}!{value}!g\""));
                seen.push(name.clone());
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    for (name, _) in values {
        if !seen.contains(name) {
            bail!("examples/kamailio/kamailio.cfg has no #!substdef for {name}");
        }
    }
    Ok(out)
}

impl Kamailio {
    pub fn start(setup: &Setup) -> anyhow::Result<Kamailio> {
        let bin = binary()?;
        let port = free_port();
        let evapi = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dir = std::env::temp_dir().join(format!("cvw-e2e-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let address_file = dir.join("cvw-address.list");
        std::fs::write(
            &address_file,
            format!(
                "1 {} 32 {} pbx\n2 {} 32 {} cvw-host\n",
                setup.pbx.ip(),
                setup.pbx.port(),
                setup.host_ua.ip(),
                setup.host_ua.port()
            ),
        )?;
        let mut values: Vec<(String, String)> = [
            ("CVW_SIP_PORT", port.to_string()),
            ("CVW_PBX_TRUNK", format!("sip:{}", setup.pbx)),
            ("CVW_HOST_IP", setup.host_jsonrpc.ip().to_string()),
            ("CVW_HOST_PORT", setup.host_jsonrpc.port().to_string()),
            ("CVW_HOST_HTTP_PORT", setup.host_http.port().to_string()),
            ("CVW_EVAPI_ADDR", evapi.to_string()),
            (
                "CVW_DECISION_TIMEOUT_MS",
                setup.decision_timeout_ms.to_string(),
            ),
            ("CVW_ADDRESS_FILE", address_file.display().to_string()),
            ("CVW_RUNDIR", dir.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let Some(m) = &setup.module {
            for (name, path) in [
                ("CVW_MODULE_FILE", &m.so),
                ("CVW_POLICY", &m.policy),
                ("CVW_DIRECTORY", &m.directory),
            ] {
                values.push((name.to_owned(), path.display().to_string()));
            }
            let log = m.call_log.as_ref().map(|p| p.display().to_string());
            values.push(("CVW_CALL_LOG".to_owned(), log.unwrap_or_default()));
        }
        values.extend(setup.extra.iter().cloned());
        let cfg = write_config(&dir, &values, setup.transform)?;
        let log_path = dir.join("kamailio.log");
        let defines: &[&str] = if setup.module.is_some() {
            &["-A", "WITH_CVW_MODULE"]
        } else if setup.janssonrpcc {
            &["-A", "WITH_JANSSONRPCC"]
        } else {
            &[]
        };
        let mut args: Vec<String> = defines.iter().map(|d| (*d).to_owned()).collect();
        args.extend(["-f".to_owned(), cfg.display().to_string()]);
        args.extend(["-DD", "-E", "-m"].map(str::to_owned));
        args.extend([setup.shm_mb.to_string(), "-M".to_owned(), "16".to_owned()]);
        args.extend(
            std::env::var("CVW_KAMAILIO_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned),
        );
        args.extend([
            "-P".to_owned(),
            dir.join("kamailio.pid").display().to_string(),
        ]);
        let launch = Launch {
            bin,
            args,
            log: log_path.clone(),
        };
        let mut process = ProxyProcess::spawn(
            "kamailio",
            launch.command(false)?,
            dir.clone(),
            log_path,
            "CVW_KEEP_KAMAILIO",
        )?;
        let sip = SocketAddr::from(([127, 0, 0, 1], port));
        process.wait_listening(sip, Duration::from_secs(10))?;
        Ok(Kamailio {
            process,
            launch,
            sip,
            evapi,
            dir,
        })
    }

    /// Stops this Kamailio (SIGTERM to all its processes) and starts it again with the
    /// same config and ports, as an operator's restart would; returns once it listens.
    /// Its log goes on in the same file.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.process.respawn(self.launch.command(true)?)?;
        self.process
            .wait_listening(self.sip, Duration::from_secs(10))
    }

    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// Process ids of Kamailio and its workers (for CPU accounting).
    pub fn pids(&self) -> Vec<u32> {
        self.process.pids()
    }

    /// Connects the host's decision service to this Kamailio's evapi and waits until
    /// Kamailio has confirmed it (from then on its calls are decided by the host).
    pub async fn connect_host(&self, service: &mut cvw::decision::Running) -> anyhow::Result<()> {
        let mut status = service.connect_evapi(self.evapi);
        tokio::time::timeout(Duration::from_secs(10), status.ready())
            .await
            .with_context(|| {
                format!(
                    "the host did not get Kamailio's evapi confirmation within 10 s:\n{}",
                    self.log_tail()
                )
            })
    }

    /// Runs an RPC command (`kamcmd` over the ctl socket of the run directory) and returns
    /// what it printed; an RPC fault is printed as `error: CODE - text` (kamcmd still
    /// exits 0). `Err` when kamcmd itself failed.
    pub fn rpc(&self, args: &[&str]) -> anyhow::Result<String> {
        let socket = format!("unix:{}", self.dir.join("kamailio_ctl").display());
        let out = Command::new("kamcmd")
            .args(["-s", &socket])
            .args(args)
            .output()
            .context("run kamcmd")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            bail!("kamcmd {}: {text}", args.join(" "))
        }
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}
