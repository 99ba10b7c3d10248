//! The world of one test: a proxy (`Proxy`: Kamailio over evapi or JSON-RPC, or OpenSIPS
//! over HTTP, each from its example config) on free loopback ports in front of the host's
//! decision service, a PBX trunk and the host's own user agent as phones; and the checks
//! several tests share. Nothing here is a check of its own: a test body asks for a world
//! and judges what the phones receive, the same for every proxy.

use super::*;

pub const DOMAIN: &str = "corp.example";
pub const ALICE: &str = "sip:alice@corp.example";
pub const CAROL: &str = "sip:carol@corp.example";
pub const BOB: &str = "sip:bob@corp.example";
pub const ALICE_DESK: &str = "+14255550101";
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a phone listens to be sure that nothing arrives.
pub const QUIET: Duration = Duration::from_millis(1500);

/// The proxy in front of the host, and how it asks the host. A new kind is a variant
/// here, its start in [`start_proxy`], and a line in `per_proxy!`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// Kamailio 5.6 with `examples/kamailio/kamailio.cfg`, the host connected to its evapi
    /// (the config's default transport).
    KamailioEvapi,
    /// The same config asking the host over JSON-RPC (janssonrpcc, `-A WITH_JANSSONRPCC`).
    KamailioJsonRpc,
    /// OpenSIPS 3.6 with `examples/opensips/opensips.cfg`, asking over HTTP (rest_client).
    OpenSips,
    /// Kamailio deciding itself: `cvw.so` runs the policy in its workers (`-A
    /// WITH_CVW_MODULE`); no host service on the call path.
    KamailioModule,
    /// OpenSIPS deciding itself: its `cvw.so` runs the policy in its workers
    /// (`examples/opensips/opensips-module.cfg`); no host service on the call path.
    OpenSipsModule,
}

impl Proxy {
    /// Whether the policy runs inside the proxy (a `cvw.so`), from files it loads.
    pub fn is_module(self) -> bool {
        matches!(self, Proxy::KamailioModule | Proxy::OpenSipsModule)
    }

    /// The debug `cvw.so` this kind loads (a module kind).
    pub fn module_so(self) -> PathBuf {
        match self {
            Proxy::OpenSipsModule => support::opensips::module_path("debug"),
            _ => support::kamailio::module_path("debug"),
        }
        .unwrap()
    }
}

/// A running proxy of any kind.
pub enum ProxyRun {
    Kamailio(Kamailio),
    OpenSips(OpenSips),
}

impl ProxyRun {
    /// Where its SIP listens (UDP and TCP).
    pub fn sip(&self) -> SocketAddr {
        match self {
            ProxyRun::Kamailio(k) => k.sip,
            ProxyRun::OpenSips(o) => o.sip,
        }
    }
}

/// Where the host's decision service listens (or where a silent one accepts).
#[derive(Clone, Copy)]
pub struct HostAddrs {
    pub jsonrpc: SocketAddr,
    pub http: SocketAddr,
}

/// Starts `proxy` in front of a host at `host`; `pbx` and `host_ua` are the addresses the
/// config classifies by (CVW-33, CVW-34). `decision_timeout_ms` is Kamailio's; OpenSIPS'
/// is rest_client's whole second.
pub fn start_proxy(
    proxy: Proxy,
    host: HostAddrs,
    pbx: SocketAddr,
    host_ua: SocketAddr,
    decision_timeout_ms: u32,
    module: Option<ModuleFiles>,
) -> ProxyRun {
    match proxy {
        Proxy::KamailioEvapi | Proxy::KamailioJsonRpc | Proxy::KamailioModule => {
            ProxyRun::Kamailio(
                Kamailio::start(&Setup {
                    host_jsonrpc: host.jsonrpc,
                    host_http: host.http,
                    pbx,
                    host_ua,
                    decision_timeout_ms,
                    extra: vec![],
                    transform: None,
                    shm_mb: 128,
                    janssonrpcc: proxy == Proxy::KamailioJsonRpc,
                    module,
                })
                .unwrap(),
            )
        }
        Proxy::OpenSips | Proxy::OpenSipsModule => ProxyRun::OpenSips(
            OpenSips::start(&support::opensips::Setup {
                module,
                ..support::opensips::Setup::new(host.http, pbx, host_ua)
            })
            .unwrap(),
        ),
    }
}

/// Connects the host's decision service to the proxy where the proxy does not connect to
/// the host (Kamailio's evapi), and waits until the proxy confirms it.
pub async fn connect_host(proxy: Proxy, running: &ProxyRun, service: &mut Running) {
    if let ProxyRun::Kamailio(k) = running
        && proxy == Proxy::KamailioEvapi
    {
        k.connect_host(service).await.unwrap();
    }
}

/// What answers the proxy's questions.
pub enum Host {
    /// The default policy with a directory fixture of `tests/fixtures/e2e/`.
    Policy(&'static str),
    /// A decider the test scripts (what no shipped policy asks for).
    Scripted(Arc<dyn Decider>),
    /// A host that accepts the proxy's connection (or connects, for evapi) and never
    /// answers.
    Silent,
}

pub struct World {
    /// Kept for its lifetime: dropping it stops the proxy.
    _proxy: ProxyRun,
    /// The proxy's SIP address.
    pub sip: SocketAddr,
    pub service: Option<Running>,
    /// The policy runtime behind the service ([`Host::Policy`] only).
    host: Option<PolicyHost>,
    directory: Option<PathBuf>,
    /// The policy file `cvw.so` loads ([`Proxy::is_module`]).
    policy_file: Option<PathBuf>,
    pub pbx: Phone,
    pub host_ua: Phone,
    /// A silent host's connection to Kamailio's evapi, kept open.
    _silent: Option<tokio::net::TcpStream>,
}

/// A directory fixture of `tests/fixtures/e2e/` with the test's PBX trunk address in
/// place of `@PBX@`.
pub fn directory_text(fixture: &str, pbx: SocketAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/e2e")
        .join(fixture);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("directory fixture {}: {e}", path.display()));
    assert!(text.contains("@PBX@"), "{} names no @PBX@", path.display());
    text.replace("@PBX@", &pbx.to_string())
}

/// A TCP listener that accepts every connection and never answers.
async fn silent_listener() -> SocketAddr {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    addr
}

impl World {
    /// `proxy` in front of the default policy with `tests/fixtures/e2e/directory.toml`.
    pub async fn new(proxy: Proxy) -> World {
        Self::start(proxy, Host::Policy("directory.toml")).await
    }

    /// `fixture`: a directory file of `tests/fixtures/e2e/`.
    pub async fn with_directory(proxy: Proxy, fixture: &'static str) -> World {
        Self::start(proxy, Host::Policy(fixture)).await
    }

    pub async fn start(proxy: Proxy, host: Host) -> World {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("cvw=debug")
            .with_test_writer()
            .try_init();
        let pbx_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ua_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let pbx_addr = pbx_sock.local_addr().unwrap();
        let ua_addr = ua_sock.local_addr().unwrap();

        let mut directory = None;
        let mut policy = None;
        let mut policy_file = None;
        let mut module = None;
        let mut call_log = None;
        let decider: Option<Arc<dyn Decider>> = match host {
            Host::Policy(fixture) if proxy.is_module() => {
                let dir = std::env::temp_dir().join(unique("cvw-e2e-dir-"));
                std::fs::create_dir_all(&dir).unwrap();
                let file = dir.join("directory.toml");
                std::fs::write(&file, directory_text(fixture, pbx_addr)).unwrap();
                let wasm = dir.join("policy.wasm");
                std::fs::write(&wasm, builtin::default_policy().unwrap()).unwrap();
                module = Some(ModuleFiles {
                    so: proxy.module_so(),
                    policy: wasm.clone(),
                    directory: file.clone(),
                    call_log: Some(dir.join("calls.jsonl")),
                });
                directory = Some(file);
                policy_file = Some(wasm);
                None
            }
            Host::Policy(fixture) => {
                let dir = std::env::temp_dir().join(unique("cvw-e2e-dir-"));
                std::fs::create_dir_all(&dir).unwrap();
                call_log = Some(dir.join("calls.jsonl"));
                let file = dir.join("directory.toml");
                std::fs::write(&file, directory_text(fixture, pbx_addr)).unwrap();
                let host = PolicyHost::new(RuntimeSettings::default()).unwrap();
                let wasm = builtin::default_policy().expect("default policy built");
                host.publish(
                    wasm,
                    builtin::DEFAULT_ORIGIN,
                    Arc::new(Directory::load(&file).unwrap()),
                )
                .expect("default policy publishes with the test directory");
                directory = Some(file);
                policy = Some(host.clone());
                Some(Arc::new(host))
            }
            Host::Scripted(d) => Some(d),
            Host::Silent => None,
        };
        let (mut service, addrs, timeout_ms) = match decider {
            Some(d) => {
                let mut svc = DecisionService::new(d);
                if let Some(path) = &call_log {
                    svc = svc.with_call_log(Arc::new(JsonLinesFile::open(path).unwrap()));
                }
                let s = svc
                    .start(
                        "127.0.0.1:0".parse().unwrap(),
                        "127.0.0.1:0".parse().unwrap(),
                    )
                    .await
                    .unwrap();
                let addrs = HostAddrs {
                    jsonrpc: s.jsonrpc,
                    http: s.http,
                };
                (Some(s), addrs, 1000)
            }
            None => {
                let addr = silent_listener().await;
                let addrs = HostAddrs {
                    jsonrpc: addr,
                    http: addr,
                };
                (None, addrs, 300)
            }
        };
        let running = start_proxy(proxy, addrs, pbx_addr, ua_addr, timeout_ms, module);
        let mut silent = None;
        if let Some(s) = service.as_mut() {
            connect_host(proxy, &running, s).await;
        } else if let ProxyRun::Kamailio(k) = &running
            && proxy == Proxy::KamailioEvapi
        {
            silent = Some(evapi_host_of_the_test(k, "silent").await.0);
        }
        let sip = running.sip();
        World {
            _proxy: running,
            sip,
            service,
            host: policy,
            directory,
            policy_file,
            pbx: Phone::with_udp("pbx", sip, pbx_sock),
            host_ua: Phone::with_udp("host-ua", sip, ua_sock),
            _silent: silent,
        }
    }

    /// The policy runtime serving this world's calls.
    pub fn policy(&self) -> &PolicyHost {
        self.host.as_ref().expect("a world with Host::Policy")
    }

    /// The Kamailio in front (for its RPC, log and processes).
    pub fn kamailio(&self) -> &Kamailio {
        match &self._proxy {
            ProxyRun::Kamailio(k) => k,
            ProxyRun::OpenSips(_) => panic!("a world with OpenSIPS in front"),
        }
    }

    /// The OpenSIPS in front (for its log and processes).
    pub fn opensips(&self) -> &OpenSips {
        match &self._proxy {
            ProxyRun::OpenSips(o) => o,
            ProxyRun::Kamailio(_) => panic!("a world with Kamailio in front"),
        }
    }

    /// The policy file `cvw.so` loads.
    pub fn policy_file(&self) -> &Path {
        self.policy_file.as_deref().expect("a world with a cvw.so")
    }

    /// Publishes the default policy again (a new generation) while whatever rings goes on:
    /// on the host, or in Kamailio with `kamcmd cvw.swap`. The generations before and
    /// after.
    pub async fn swap_policy(&mut self) -> (u64, u64) {
        if self.policy_file.is_none() {
            let before = self.policy().current().unwrap().generation;
            let v = self
                .policy()
                .publish(
                    builtin::default_policy().unwrap(),
                    "swap-test",
                    Arc::new(Directory::load(self.directory()).unwrap()),
                )
                .unwrap();
            return (before, v.generation);
        }
        let before = self.module_generation();
        if let ProxyRun::OpenSips(_) = &self._proxy {
            // OpenSIPS' cvw.so: the way without an MI transport, the watcher seeing the
            // policy file replaced.
            let (before, after) = self
                .replace_policy_file(&std::fs::read(self.policy_file()).unwrap())
                .await;
            assert!(after > before, "{}", self.opensips().log_tail());
            return (before, after);
        }
        let file = self.policy_file().display().to_string();
        let swapped = self.kamailio().rpc(&["cvw.swap", &file]).unwrap();
        assert!(swapped.contains("published"), "cvw.swap: {swapped}");
        (before, self.module_generation())
    }

    /// Puts `bytes` in place of the policy file of OpenSIPS' `cvw.so` (written beside it,
    /// then renamed, as an operator's copy would land) and waits until the watcher either
    /// publishes it or refuses it: the generations before and after (the same when
    /// refused).
    pub async fn replace_policy_file(&self, bytes: &[u8]) -> (u64, u64) {
        let before = self.module_generation();
        let tmp = self.policy_file().with_extension("new");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, self.policy_file()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.module_generation() != before || self.opensips().log().contains("refused at") {
                return (before, self.module_generation());
            }
            assert!(
                Instant::now() < deadline,
                "the watcher neither published nor refused the file in 20 s:\n{}",
                self.opensips().log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The generation `kamcmd cvw.status` reports; for OpenSIPS, the newest the module
    /// wrote into its work directory (`gen-N.json`).
    pub fn module_generation(&self) -> u64 {
        if let ProxyRun::OpenSips(_) = &self._proxy {
            let work = self.policy_file().with_file_name("opensips-cvw-work");
            return std::fs::read_dir(&work)
                .unwrap()
                .filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    name.strip_prefix("gen-")?
                        .strip_suffix(".json")?
                        .parse()
                        .ok()
                })
                .max()
                .unwrap_or(0);
        }
        let status = self.kamailio().rpc(&["cvw.status"]).unwrap();
        status
            .split_whitespace()
            .skip_while(|w| *w != "generation")
            .nth(1)
            .and_then(|g| g.parse().ok())
            .unwrap_or_else(|| panic!("no generation in cvw.status: {status}"))
    }

    /// The directory file the policy was published with.
    pub fn directory(&self) -> &Path {
        self.directory
            .as_deref()
            .expect("a world with Host::Policy")
    }

    pub async fn udp(&self, name: &str) -> Phone {
        Phone::udp(name, self.sip).await
    }

    pub async fn tcp(&self, name: &str) -> Phone {
        Phone::tcp(name, self.sip).await
    }

    /// Alice's two soft clients, one on UDP and one on TCP, registered.
    pub async fn alice_clients(&self) -> (Phone, Phone) {
        let mut c1 = self.udp("alice-udp").await;
        c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
        let mut c2 = self.tcp("alice-tcp").await;
        c2.register("alice", DOMAIN, "UC-Mobile/1.0").await;
        (c1, c2)
    }

    /// A UC call from `caller` to Alice, ringing her desk phone and both soft clients, each
    /// heard ringing by the caller.
    pub async fn ring_alice(
        &mut self,
        caller: &mut Phone,
        c1: &mut Phone,
        c2: &mut Phone,
    ) -> Ringing {
        let call = caller.invite(ALICE, BOB, &[]);
        let desk = self.pbx.expect_invite(WAIT).await;
        let i1 = c1.expect_invite(WAIT).await;
        let i2 = c2.expect_invite(WAIT).await;
        caller.expect_ringing(3, WAIT).await;
        Ringing { call, desk, i1, i2 }
    }

    /// The caller gives up while Alice's phones ring: the desk phone and both clients are
    /// cancelled, and the caller's call ends 487.
    pub async fn caller_gives_up(
        &mut self,
        caller: &mut Phone,
        c1: &mut Phone,
        c2: &mut Phone,
        ringing: Ringing,
    ) {
        let Ringing {
            mut call,
            desk,
            i1,
            i2,
        } = ringing;
        caller.cancel(&call);
        self.pbx.expect_cancel(&desk, WAIT).await;
        c1.expect_cancel(&i1, WAIT).await;
        c2.expect_cancel(&i2, WAIT).await;
        assert_eq!(caller.final_response(&mut call, WAIT).await.code, 487);
    }

    pub async fn stop_service(&mut self) {
        if let Some(s) = self.service.take() {
            s.stop().await;
        }
    }
}

/// A call to Alice ringing everywhere ([`World::ring_alice`]): the caller's call and the
/// INVITEs of the desk phone and the two clients.
pub struct Ringing {
    pub call: Call,
    pub desk: Request,
    pub i1: Request,
    pub i2: Request,
}

impl Drop for World {
    fn drop(&mut self) {
        // The directory file lives in a temporary directory of its own.
        if let Some(dir) = self.directory.as_deref().and_then(Path::parent) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The user part of a Request-URI, without a leading `+`-less difference.
pub fn uri_user(m: &Request) -> String {
    m.uri
        .trim_start_matches("sip:")
        .split(['@', ';'])
        .next()
        .unwrap_or("")
        .to_owned()
}

/// The client, still ringing, answers `invite`: its answer reaches the caller, and the
/// client was never cancelled (`when` says what happened to the desk leg before).
pub async fn client_answer_wins(
    caller: &mut Phone,
    call: &mut Call,
    client: &Phone,
    invite: &Request,
    when: &str,
) {
    client.answer(invite);
    let ok = caller.final_response(call, WAIT).await;
    assert_eq!(ok.code, 200, "the client's answer wins {when}");
    assert!(
        !client
            .log
            .iter()
            .any(|m| matches!(m, Message::Request(r) if r.method == Method::Cancel)),
        "the client was never cancelled {when}"
    );
}

/// `Reason: SIP;cause=200;text="Call completed elsewhere"` (CVW-31) as a phone reads it:
/// protocol, cause and text, whatever whitespace the proxy puts around the `;` (RFC 3261
/// allows it; Kamailio writes none, OpenSIPS a space before each).
pub fn assert_completed_elsewhere(cancel: &Request, who: &str) {
    let reason = cancel.headers.get("Reason").unwrap_or("");
    let mut parts = reason.split(';').map(str::trim);
    let protocol = parts.next().unwrap_or("");
    let mut cause = None;
    let mut text = None;
    for p in parts {
        match p.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("cause", v)) => cause = Some(v),
            Some(("text", v)) => text = Some(v.trim_matches('"')),
            _ => {}
        }
    }
    assert!(
        protocol == "SIP" && cause == Some("200") && text == Some("Call completed elsewhere"),
        "{who}: CANCEL must say the call was completed elsewhere (CVW-31), not {reason:?}"
    );
}

/// A host played by the test on Kamailio's evapi: connected, and confirmed by Kamailio
/// (its calls come here from then on). The decoder keeps what arrived after `ready`.
pub async fn evapi_host_of_the_test(
    kam: &Kamailio,
    name: &str,
) -> (tokio::net::TcpStream, BytesMut) {
    use cvw::decision::transport::netstring;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut host = tokio::net::TcpStream::connect(kam.evapi).await.unwrap();
    let hello = format!("{{\"hello\":\"{name}\"}}");
    host.write_all(&netstring::encode(hello.as_bytes()))
        .await
        .unwrap();
    let ready = format!("ready {name}");
    let mut frames = BytesMut::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(frame) = NetstringCodec.decode(&mut frames).unwrap() {
            if frame == ready.as_bytes() {
                return (host, frames);
            }
        }
        let n = tokio::time::timeout(WAIT, host.read(&mut buf))
            .await
            .expect("Kamailio confirms the test's host")
            .unwrap();
        assert!(n > 0, "Kamailio closed the evapi connection");
        frames.extend_from_slice(&buf[..n]);
    }
}
