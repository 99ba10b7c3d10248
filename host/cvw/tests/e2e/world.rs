//! The world of one test: a Kamailio from the example config on free loopback ports, the
//! host's decision service, a PBX trunk and the host's own user agent as phones; and the
//! checks several tests share.

use super::*;

pub const DOMAIN: &str = "corp.example";
pub const ALICE: &str = "sip:alice@corp.example";
pub const CAROL: &str = "sip:carol@corp.example";
pub const BOB: &str = "sip:bob@corp.example";
pub const ALICE_DESK: &str = "+14255550101";
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a phone listens to be sure that nothing arrives.
pub const QUIET: Duration = Duration::from_millis(1500);
pub const COMPLETED_ELSEWHERE: &str = "SIP;cause=200;text=\"Call completed elsewhere\"";

pub struct World {
    pub kam: Kamailio,
    pub service: Option<Running>,
    pub host: PolicyHost,
    pub directory: PathBuf,
    pub pbx: Phone,
    pub host_ua: Phone,
}

/// A directory fixture of `tests/fixtures/kamailio-e2e/` with the test's PBX trunk
/// address in place of `@PBX@`.
pub fn directory_text(fixture: &str, pbx: SocketAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/kamailio-e2e")
        .join(fixture);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("directory fixture {}: {e}", path.display()));
    assert!(text.contains("@PBX@"), "{} names no @PBX@", path.display());
    text.replace("@PBX@", &pbx.to_string())
}

impl World {
    pub async fn new() -> World {
        Self::with_directory("directory.toml").await
    }

    /// `fixture`: a directory file of `tests/fixtures/kamailio-e2e/`.
    pub async fn with_directory(fixture: &str) -> World {
        Self::with_transport(fixture, false).await
    }

    /// The config's other transport: Kamailio asks the host over JSON-RPC (janssonrpcc).
    pub async fn over_janssonrpcc() -> World {
        Self::with_transport("directory.toml", true).await
    }

    pub async fn with_transport(fixture: &str, janssonrpcc: bool) -> World {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("cvw=debug")
            .with_test_writer()
            .try_init();
        let pbx_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ua_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let pbx_addr = pbx_sock.local_addr().unwrap();
        let ua_addr = ua_sock.local_addr().unwrap();

        let dir = std::env::temp_dir().join(unique("cvw-e2e-dir-"));
        std::fs::create_dir_all(&dir).unwrap();
        let directory = dir.join("directory.toml");
        std::fs::write(&directory, directory_text(fixture, pbx_addr)).unwrap();
        let host = PolicyHost::new(RuntimeSettings::default()).unwrap();
        let wasm = builtin::default_policy().expect("default policy built");
        host.publish(
            wasm,
            builtin::DEFAULT_ORIGIN,
            Arc::new(Directory::load(&directory).unwrap()),
        )
        .expect("default policy publishes with the test directory");

        let mut service = DecisionService::new(Arc::new(host.clone()))
            .start(
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
            )
            .await
            .unwrap();
        let kam = Kamailio::start(&Setup {
            host_jsonrpc: service.jsonrpc,
            host_http: service.http,
            pbx: pbx_addr,
            host_ua: ua_addr,
            decision_timeout_ms: 1000,
            extra: vec![],
            transform: None,
            shm_mb: 128,
            janssonrpcc,
        })
        .unwrap();
        if !janssonrpcc {
            kam.connect_host(&mut service).await.unwrap();
        }
        let pbx = Phone::with_udp("pbx", kam.sip, pbx_sock);
        let host_ua = Phone::with_udp("host-ua", kam.sip, ua_sock);
        World {
            kam,
            service: Some(service),
            host,
            directory,
            pbx,
            host_ua,
        }
    }

    pub async fn udp(&self, name: &str) -> Phone {
        Phone::udp(name, self.kam.sip).await
    }

    pub async fn tcp(&self, name: &str) -> Phone {
        Phone::tcp(name, self.kam.sip).await
    }

    /// Alice's two soft clients, one on UDP and one on TCP, registered.
    pub async fn alice_clients(&self) -> (Phone, Phone) {
        let mut c1 = self.udp("alice-udp").await;
        c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
        let mut c2 = self.tcp("alice-tcp").await;
        c2.register("alice", DOMAIN, "UC-Mobile/1.0").await;
        (c1, c2)
    }

    pub async fn stop_service(&mut self) {
        if let Some(s) = self.service.take() {
            s.stop().await;
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // The directory file lives in a temporary directory of its own.
        if let Some(dir) = self.directory.parent() {
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

pub fn assert_completed_elsewhere(cancel: &Request, who: &str) {
    assert_eq!(
        cancel.headers.get("Reason"),
        Some(COMPLETED_ELSEWHERE),
        "{who}: CANCEL must say the call was completed elsewhere (CVW-31)"
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

/// Kamailio (decision timeout 300 ms) whose JSON-RPC/HTTP host accepts connections and
/// never answers.
pub async fn silent_host_setup(janssonrpcc: bool) -> (Kamailio, tokio::net::UdpSocket) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let pbx_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pbx_addr = pbx_sock.local_addr().unwrap();
    let kam = Kamailio::start(&Setup {
        host_jsonrpc: silent_addr,
        host_http: silent_addr,
        pbx: pbx_addr,
        host_ua: "127.0.0.1:9".parse().unwrap(),
        decision_timeout_ms: 300,
        extra: vec![],
        transform: None,
        shm_mb: 128,
        janssonrpcc,
    })
    .unwrap();
    (kam, pbx_sock)
}
