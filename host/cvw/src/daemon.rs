//! The daemon behind `cvw serve`: reads its configuration and wires the long-running parts
//! together — the [`Deployment`], the file watcher, the admin API, the decision service and
//! the click-to-call API — until the one shutdown signal every task selects on.
//!
//! Named for what it is (the process `cvw serve` starts) rather than after the subcommand,
//! so it is not taken for [`crate::decision`], the service the proxies ask.
//!
//! Owns the serve configuration file (`examples/cvw.toml`) and the watcher. Does not own
//! publishing ([`crate::deployment`]), the policy runtime ([`crate::policy`]), the admin
//! routes ([`crate::admin`]) or the decision service ([`crate::decision`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use cvw_sip::transport::Protocol;
use cvw_sip::ua::{UaConfig, UserAgent};

use crate::admin::{self, AdminToken};
use crate::calllog::JsonLinesFile;
use crate::click_to_call::{
    self, Api,
    auth::Tokens,
    calls::Calls,
    limits::{LimitSettings, Limits},
    throttle::{AuthFailureSettings, AuthThrottle},
    transport::HttpSettings,
};
use crate::deployment::{Deployment, PolicySource};
use crate::origination::sip::SipOriginator;
use crate::policy::model::Reply;
use crate::policy::{FailureMode, PolicyHost, RuntimeSettings};
use crate::shutdown::Shutdown;

/// Editors write a file in several steps (truncate, write, rename); act once they settle.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// The serve configuration file. Relative paths are relative to the file's folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The directory file (users, policies, `[policy.config]`).
    pub directory: PathBuf,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub decision: DecisionConfig,
    /// The click-to-call API and the SIP user agent behind it; off when absent.
    #[serde(default)]
    pub api: Option<ApiConfig>,
}

/// `[api]`: click to call and conference dial-out (CVW-10..22), and the call log (CVW-50).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Per-user tokens, as SHA-256 hashes (`[[tokens]] user = ... sha256 = ...`).
    pub tokens_file: PathBuf,
    /// The call log, JSON lines, appended.
    pub call_log: PathBuf,
    #[serde(default)]
    pub limits: LimitSettings,
    /// `[api.http]`: connection cap, timeouts and size limits of the HTTP front door.
    #[serde(default)]
    pub http: HttpSettings,
    /// `[api.auth_failures]`: bad tokens per source before it gets 429.
    #[serde(default)]
    pub auth_failures: AuthFailureSettings,
    pub sip: SipConfig,
}

/// `[api.sip]`: the host's own SIP user agent, which places both legs through the proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// Local address of the user agent (UDP and TCP); port 0 picks one.
    pub bind: SocketAddr,
    /// The proxy every leg goes through, e.g. `sip:127.0.0.1:5060`.
    pub outbound_proxy: String,
    /// `udp` or `tcp` toward the proxy.
    #[serde(default)]
    pub transport: SipTransport,
    /// Added to the legs' `X-CVW-Origination` marker so the proxy can tell forged markers apart.
    #[serde(default)]
    pub leg_token: Option<String>,
    /// Digest accounts of the PBX trunks (and proxies) that challenge the host's legs,
    /// `[[api.sip.trunks]]`, chosen by the challenge's realm.
    #[serde(default)]
    pub trunks: Vec<TrunkAccount>,
    /// Every connected call's legs are refreshed this often (in-dialog UPDATE with
    /// Session-Expires, RFC 4028); a leg that does not answer ends the call. 0: never.
    #[serde(default = "default_session_refresh_s")]
    pub session_refresh_s: u64,
}

fn default_session_refresh_s() -> u64 {
    // Half of RFC 4028's recommended 1800 s Session-Expires.
    900
}

/// `[[api.sip.trunks]]`: one digest account.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkAccount {
    /// The realm of the trunk's challenges; absent: any realm without its own account.
    #[serde(default)]
    pub realm: Option<String>,
    pub username: String,
    /// A file holding the password (preferred: keeps it out of this file), or
    pub password_file: Option<PathBuf>,
    /// the password itself.
    pub password: Option<String>,
}

/// Never the password: the configuration may be printed or logged.
impl std::fmt::Debug for TrunkAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkAccount")
            .field("realm", &self.realm)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl TrunkAccount {
    /// The account for the user agent; the error names the entry and the field.
    fn credentials(&self, index: usize) -> anyhow::Result<cvw_sip::ua::Credentials> {
        let at = format!("api.sip.trunks[{index}]");
        let password = match (&self.password_file, &self.password) {
            (Some(file), None) => std::fs::read_to_string(file)
                .with_context(|| format!("{at}.password_file: cannot read {}", file.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (None, Some(password)) => password.clone(),
            _ => anyhow::bail!("{at}: give exactly one of password_file and password"),
        };
        if self.username.is_empty() {
            anyhow::bail!("{at}.username: must not be empty");
        }
        Ok(cvw_sip::ua::Credentials::new(
            self.realm.clone(),
            self.username.clone(),
            password,
        ))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SipTransport {
    #[default]
    Udp,
    Tcp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `"built-in"` for the default policy compiled into this binary, or a `.wasm` path.
    #[serde(default = "builtin_module")]
    pub module: String,
    /// Publish again when the module or directory file changes.
    #[serde(default = "yes")]
    pub watch: bool,
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    #[serde(default = "default_memory_mib")]
    pub memory_limit_mib: usize,
    /// `open`: route as if there were no policy when it fails; `closed`: `failure_reply`.
    #[serde(default)]
    pub failure_mode: FailureModeName,
    #[serde(default = "default_failure_reply")]
    pub failure_reply: Reply,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureModeName {
    #[default]
    Open,
    Closed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Loopback by default: the control API can replace the routing logic.
    #[serde(default = "default_control_listen")]
    pub listen: SocketAddr,
    /// A file holding the admin token; without it `CVW_ADMIN_TOKEN` must be set.
    pub token_file: Option<PathBuf>,
}

/// Where the decision service ([`crate::decision`]) listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionConfig {
    /// JSON-RPC over TCP (netstrings), for Kamailio `janssonrpcc`.
    pub jsonrpc: Option<SocketAddr>,
    /// HTTP JSON, for Kamailio `http_client`/OpenSIPS `rest_client`.
    pub http: Option<SocketAddr>,
    /// Kamailio's evapi listener (`modparam("evapi", "bind_addr", ...)`): the host
    /// connects there and decides the calls the config relays to it.
    #[serde(default)]
    pub evapi: Option<SocketAddr>,
}

const BUILT_IN: &str = "built-in";

fn builtin_module() -> String {
    BUILT_IN.to_string()
}
fn yes() -> bool {
    true
}
fn default_deadline_ms() -> u64 {
    20
}
fn default_memory_mib() -> usize {
    16
}
fn default_failure_reply() -> Reply {
    Reply {
        code: 503,
        reason: "Call via Work unavailable".to_string(),
        headers: Vec::new(),
    }
}
fn default_control_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8448))
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            module: builtin_module(),
            watch: true,
            deadline_ms: default_deadline_ms(),
            memory_limit_mib: default_memory_mib(),
            failure_mode: FailureModeName::Open,
            failure_reply: default_failure_reply(),
        }
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            listen: default_control_listen(),
            token_file: None,
        }
    }
}

impl Default for DecisionConfig {
    fn default() -> Self {
        DecisionConfig {
            jsonrpc: Some(SocketAddr::from(([127, 0, 0, 1], 8449))),
            http: Some(SocketAddr::from(([127, 0, 0, 1], 8090))),
            evapi: None,
        }
    }
}

impl ServeConfig {
    /// Read the configuration and make its paths absolute against its folder.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the serve configuration {}", path.display()))?;
        let mut config: ServeConfig = toml::from_str(&text)
            .with_context(|| format!("{}: invalid serve configuration", path.display()))?;
        if let Err(why) = config.runtime_settings().failure_mode.check() {
            anyhow::bail!("{}: policy.failure_reply: {why}", path.display());
        }
        let base = path.parent().unwrap_or(Path::new("."));
        config.directory = base.join(&config.directory);
        if config.policy.module != BUILT_IN {
            config.policy.module = base.join(&config.policy.module).display().to_string();
        }
        if let Some(file) = &config.control.token_file {
            config.control.token_file = Some(base.join(file));
        }
        if let Some(api) = &mut config.api {
            api.tokens_file = base.join(&api.tokens_file);
            api.call_log = base.join(&api.call_log);
            for trunk in &mut api.sip.trunks {
                if let Some(file) = &trunk.password_file {
                    trunk.password_file = Some(base.join(file));
                }
            }
        }
        Ok(config)
    }

    pub fn policy_source(&self) -> PolicySource {
        if self.policy.module == BUILT_IN {
            PolicySource::BuiltIn
        } else {
            PolicySource::File(PathBuf::from(&self.policy.module))
        }
    }

    pub fn runtime_settings(&self) -> RuntimeSettings {
        RuntimeSettings {
            deadline: Duration::from_millis(self.policy.deadline_ms),
            memory_limit_bytes: self.policy.memory_limit_mib << 20,
            failure_mode: match self.policy.failure_mode {
                FailureModeName::Open => FailureMode::Open,
                FailureModeName::Closed => FailureMode::Closed(self.policy.failure_reply.clone()),
            },
            ..RuntimeSettings::default()
        }
    }
}

/// Run `cvw serve` until `shutdown` resolves: publish, watch, serve the control API on
/// `control_listener`. Tests pass a listener on port 0 and a future they control.
pub async fn run(
    config: ServeConfig,
    control_listener: tokio::net::TcpListener,
    token: AdminToken,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let host =
        PolicyHost::new(config.runtime_settings()).context("cannot start the policy runtime")?;
    let deployment = {
        let config = config.clone();
        Arc::new(
            tokio::task::spawn_blocking(move || {
                Deployment::start(host, &config.directory, &config.policy_source())
            })
            .await
            .context("start-up task failed")??,
        )
    };
    if let Ok(address) = control_listener.local_addr()
        && !address.ip().is_loopback()
    {
        warn!(%address, "the control API can replace the routing logic; it listens beyond loopback");
    }
    let (stop, signal) = Shutdown::new();
    let mut tasks = tokio::task::JoinSet::new();

    let watcher = if config.policy.watch {
        Some(spawn_watcher(
            &config,
            deployment.clone(),
            signal.clone(),
            &mut tasks,
        )?)
    } else {
        None
    };

    start_decision_service(&config, &deployment, signal.clone(), &mut tasks)?;
    if let Some(api) = &config.api {
        start_api(api, &deployment, signal.clone(), &mut tasks).await?;
    }

    let router = admin::router(deployment.clone(), token);
    // The click-to-call API's front door (connection caps, slow and idle clients timed
    // out, head size), with room for a policy module in a swap's body.
    let control_http = crate::click_to_call::transport::HttpSettings {
        max_body_bytes: admin::MAX_MODULE_BYTES,
        ..Default::default()
    };
    let control_signal = signal.clone();
    tasks.spawn(async move {
        crate::click_to_call::transport::serve(
            control_listener,
            router,
            control_http,
            control_signal,
        )
        .await
        .context("control API failed")
    });

    tokio::select! {
        () = shutdown => info!("shutting down"),
        Some(result) = tasks.join_next() => report_task_end(result),
    }
    // Every task selects on this one signal.
    stop.fire();
    drop(watcher);
    while let Some(result) = tasks.join_next().await {
        report_task_end(result);
    }
    Ok(())
}

fn report_task_end(result: Result<anyhow::Result<()>, tokio::task::JoinError>) {
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!("task stopped: {e:#}"),
        Err(e) => error!("task panicked: {e}"),
    }
}

/// The decision service the proxies ask ([`crate::decision`]), on the addresses of
/// `[decision]`. It asks the `PolicyHost` directly, so swaps reach it without a restart.
fn start_decision_service(
    config: &ServeConfig,
    deployment: &Arc<Deployment>,
    signal: Shutdown,
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let mut svc = crate::decision::DecisionService::new(Arc::new(deployment.host().clone()));
    // Forks decided over evapi go into the same call log as the API's calls (CVW-50).
    if let Some(api) = &config.api {
        svc = svc.with_call_log(Arc::new(JsonLinesFile::open(&api.call_log)?));
    }
    crate::decision::spawn_configured(
        svc,
        crate::decision::Endpoints {
            jsonrpc: config.decision.jsonrpc,
            http: config.decision.http,
            evapi: config.decision.evapi,
        },
        signal,
        tasks,
    )
}

/// The click-to-call API and the user agent that places its calls. Calls ask the
/// `PolicyHost` at the time they are requested, so a swap applies to the next call while
/// calls already up go on (CVW-52).
async fn start_api(
    config: &ApiConfig,
    deployment: &Arc<Deployment>,
    signal: Shutdown,
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let tokens = Tokens::load(&config.tokens_file)?;
    let call_log = JsonLinesFile::open(&config.call_log)?;
    let ua_config = UaConfig {
        bind: config.sip.bind,
        protocol: match config.sip.transport {
            SipTransport::Udp => Protocol::Udp,
            SipTransport::Tcp => Protocol::Tcp,
        },
        outbound_proxy: Some(config.sip.outbound_proxy.clone()),
        leg_token: config.sip.leg_token.clone(),
        credentials: config
            .sip
            .trunks
            .iter()
            .enumerate()
            .map(|(i, trunk)| trunk.credentials(i))
            .collect::<anyhow::Result<_>>()?,
        session_refresh: (config.sip.session_refresh_s > 0)
            .then(|| Duration::from_secs(config.sip.session_refresh_s)),
        ..UaConfig::default()
    };
    let (ua, incoming) = UserAgent::bind(ua_config)
        .await
        .with_context(|| format!("cannot start the SIP user agent on {}", config.sip.bind))?;
    // The host places calls; it does not take them. Dropping the receiver answers
    // stray INVITEs with 480.
    drop(incoming);
    let api = Arc::new(Api {
        policy: deployment.host().clone(),
        originator: Arc::new(SipOriginator::new(ua)),
        tokens,
        throttle: AuthThrottle::new(config.auth_failures),
        limits: Arc::new(Limits::new(config.limits)),
        calls: Arc::new(Calls::default()),
        call_log: Arc::new(call_log),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen for the API on {}", config.listen))?;
    info!(address = %config.listen, "click-to-call API listening");
    let router = click_to_call::router(api);
    let http = config.http;
    tasks.spawn(async move {
        click_to_call::transport::serve(listener, router, http, signal)
            .await
            .context("click-to-call API failed")
    });
    Ok(())
}

/// Which file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Changed {
    Policy,
    Directory,
}

/// Watch the folders of the module and directory files (editors replace files by rename,
/// which a watch on the file itself would miss) and publish after each settled change.
fn spawn_watcher(
    config: &ServeConfig,
    deployment: Arc<Deployment>,
    signal: Shutdown,
    tasks: &mut tokio::task::JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::Watcher;

    let policy_file = match config.policy_source() {
        PolicySource::File(path) => Some(absolute(&path)),
        PolicySource::BuiltIn => None,
    };
    let directory_file = absolute(&config.directory);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (policy_match, directory_match) = (policy_file.clone(), directory_file.clone());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        for path in &event.paths {
            if Some(path) == policy_match.as_ref() {
                let _ = tx.send(Changed::Policy);
            } else if *path == directory_match {
                let _ = tx.send(Changed::Directory);
            }
        }
    })
    .context("cannot start the file watcher")?;
    let mut folders: Vec<PathBuf> = policy_file
        .iter()
        .chain([&directory_file])
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .collect();
    folders.dedup();
    for folder in &folders {
        watcher
            .watch(folder, notify::RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", folder.display()))?;
    }

    tasks.spawn(async move {
        let mut signal = signal;
        let stop = signal.wait();
        tokio::pin!(stop);
        loop {
            let first = tokio::select! {
                () = &mut stop => return Ok(()),
                changed = rx.recv() => match changed { Some(c) => c, None => return Ok(()) },
            };
            let mut changes = vec![first];
            // Collect the rest of the burst before acting once per file.
            loop {
                tokio::select! {
                    () = &mut stop => return Ok(()),
                    () = tokio::time::sleep(DEBOUNCE) => break,
                    Some(c) = rx.recv() => changes.push(c),
                }
            }
            let policy = changes
                .contains(&Changed::Policy)
                .then(|| policy_file.clone())
                .flatten();
            let directory = changes.contains(&Changed::Directory);
            let deployment = deployment.clone();
            tokio::task::spawn_blocking(move || {
                apply_changes(&deployment, policy.as_deref(), directory)
            })
            .await
            .context("reload task failed")?;
        }
    });
    Ok(watcher)
}

fn apply_changes(deployment: &Deployment, policy: Option<&Path>, directory: bool) {
    if directory {
        let file = deployment.directory_path().display();
        match deployment.reload_directory() {
            Ok(v) => info!(generation = v.generation, %file, "directory reloaded"),
            Err(e) => error!(%file, "directory reload refused, the old one stays: {e}"),
        }
    }
    if let Some(path) = policy {
        match deployment.swap_file(path) {
            Ok(v) => info!(generation = v.generation, origin = %v.origin, "policy swapped"),
            Err(e) => error!(
                step = e.step(),
                "policy swap refused, the old one stays: {e}"
            ),
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_loads_with_paths_beside_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cvw.toml");
        let config = ServeConfig::load(&path).unwrap();
        assert_eq!(config.policy_source(), PolicySource::BuiltIn);
        assert!(config.directory.ends_with("examples/directory.toml"));
        assert!(config.directory.is_file());
        assert!(config.control.listen.ip().is_loopback());
        assert_eq!(config.runtime_settings().failure_mode, FailureMode::Open);
        let api = config
            .api
            .expect("the example enables the click-to-call API");
        assert!(api.listen.ip().is_loopback());
        // The example spells out the front door's defaults.
        assert_eq!(api.http, HttpSettings::default());
        assert_eq!(api.auth_failures, AuthFailureSettings::default());
        let tokens = Tokens::load(&api.tokens_file).unwrap();
        assert_eq!(
            tokens.user_of("alice-demo-token"),
            Some("sip:alice@corp.example")
        );
    }

    #[test]
    fn closed_failure_mode_answers_with_the_configured_reply() {
        let text = "directory = \"d.toml\"\n[policy]\nmodule = \"p.wasm\"\nfailure_mode = \"closed\"\n\
                    failure_reply = { code = 480, reason = \"Temporarily Unavailable\" }\n";
        let config: ServeConfig = toml::from_str(text).unwrap();
        let FailureMode::Closed(reply) = config.runtime_settings().failure_mode else {
            panic!("closed mode")
        };
        assert_eq!(
            (reply.code, reply.reason.as_str()),
            (480, "Temporarily Unavailable")
        );
        assert_eq!(config.policy_source(), PolicySource::File("p.wasm".into()));
    }

    /// The failure reply stands in for decisions out of bounds, so it must be in bounds.
    #[test]
    fn a_failure_reply_a_proxy_cannot_send_is_refused_at_load() {
        let dir = std::env::temp_dir().join(format!("cvw-serve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cvw.toml");
        let text = "directory = \"d.toml\"\n[policy]\nfailure_mode = \"closed\"\n\
                    failure_reply = { code = 200, reason = \"OK\" }\n";
        std::fs::write(&path, text).unwrap();
        let err = ServeConfig::load(&path).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            err.ends_with("policy.failure_reply: reply.code: 200 is not 300..=699"),
            "{err}"
        );
    }

    #[test]
    fn trunk_accounts_are_read_and_never_printed() {
        let dir = std::env::temp_dir().join(format!("cvw-trunks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pbx.pw"), "from-a-file\n").unwrap();
        let path = dir.join("cvw.toml");
        let text = "directory = \"d.toml\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
                    tokens_file = \"t.toml\"\ncall_log = \"c.jsonl\"\n\
                    [api.sip]\nbind = \"127.0.0.1:0\"\noutbound_proxy = \"sip:127.0.0.1:5060\"\n\
                    [[api.sip.trunks]]\nrealm = \"pbx-a\"\nusername = \"cvw\"\npassword_file = \"pbx.pw\"\n\
                    [[api.sip.trunks]]\nusername = \"cvw\"\npassword = \"inline-secret\"\n\
                    [[api.sip.trunks]]\nusername = \"cvw\"\n";
        std::fs::write(&path, text).unwrap();
        let config = ServeConfig::load(&path).unwrap();
        let api = config.api.clone().unwrap();
        assert_eq!(api.sip.session_refresh_s, 900);
        let printed = format!("{config:?}");
        assert!(!printed.contains("inline-secret"), "{printed}");
        let a = api.sip.trunks[0].credentials(0).unwrap();
        assert_eq!(a.realm.as_deref(), Some("pbx-a"));
        assert!(!format!("{a:?}").contains("from-a-file"));
        assert!(api.sip.trunks[1].credentials(1).is_ok());
        let err = api.sip.trunks[2].credentials(2).unwrap_err().to_string();
        assert!(err.starts_with("api.sip.trunks[2]"), "{err}");
        std::fs::remove_file(dir.join("pbx.pw")).unwrap();
        let err = api.sip.trunks[0].credentials(0).unwrap_err().to_string();
        assert!(err.starts_with("api.sip.trunks[0].password_file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_misspelt_setting_is_refused() {
        let text = "directory = \"d.toml\"\n[policy]\ndeadline = 20\n";
        let err = toml::from_str::<ServeConfig>(text).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `deadline`"),
            "{err}"
        );
    }
}
