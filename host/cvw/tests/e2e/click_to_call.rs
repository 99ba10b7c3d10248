//! End-to-end click to call (CVW-10..13, CVW-50), driven only through the HTTP API: the
//! host's SIP user agent places both legs through a real proxy (each [`Proxy`], the host's
//! outbound proxy) running its example config, to SIP test phones on loopback — a PBX
//! trunk that plays Alice's desk phone, and a callee. Every check is on what the phones
//! received.

use super::*;
use cvw::calllog::MemorySink;
use cvw::click_to_call::auth::{Tokens, hash_hex};
use cvw::click_to_call::calls::Calls;
use cvw::click_to_call::limits::{LimitSettings, Limits};
use cvw::click_to_call::{Api, router};
use cvw::origination::sip::SipOriginator;
use cvw_sip::testing::{Answer, PhoneScript, TestPhone, media_ports};
use cvw_sip::transport::Protocol;
use cvw_sip::ua::{UaConfig, UserAgent};
use serde_json::json;
use std::time::Instant;
use support::http::{follow, send, states};

const TOKEN: &str = "alice-e2e-token";
const GLOBAL_CALLER_ID: &str = "+14255550000";
const ALICE_LINE: &str = "+14255550101";
const ALICE_CALLBACK: &str = "+14255550199";
const DESK_MEDIA: u16 = 41_000;
const CALLEE_MEDIA: u16 = 42_000;

struct ClickWorld {
    api: String,
    desk: TestPhone,
    callee: TestPhone,
    log: Arc<MemorySink>,
    _proxy: ProxyRun,
    _service: Running,
    _dir: PathBuf,
}

fn directory_text(pbx: SocketAddr) -> String {
    format!(
        r#"
[policy.config]
global_caller_id = "{GLOBAL_CALLER_ID}"
pbx_trunk = "sip:{pbx}"
pbx_domain = "pbx.corp.example"
desk_ring_timeout_ms = 5000
pbx_voicemail_timeout_ms = 20000
callee_ring_timeout_ms = 5000

[policies.global]
enabled = true

[[users]]
uc_address = "sip:alice@corp.example"
display_name = "Alice Smith"
line_uri = "tel:{ALICE_LINE}"
callback_number = "{ALICE_CALLBACK}"
"#
    )
}

/// A loopback UDP port that was free a moment ago (the proxy's address list must name
/// the host's port before the host's user agent, which needs the proxy's address, binds).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ClickWorld {
    async fn start(proxy: Proxy, desk: PhoneScript, callee: PhoneScript) -> ClickWorld {
        let desk = TestPhone::start(desk).await.unwrap();
        let callee = TestPhone::start(callee).await.unwrap();
        let pbx = desk.user_agent().local_addr(Protocol::Udp);

        let dir = std::env::temp_dir().join(format!(
            "cvw-orig-e2e-{}-{}",
            std::process::id(),
            free_udp_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let directory = dir.join("directory.toml");
        std::fs::write(&directory, directory_text(pbx)).unwrap();
        let policy = PolicyHost::new(RuntimeSettings::default()).unwrap();
        policy
            .publish(
                builtin::default_policy().unwrap(),
                builtin::DEFAULT_ORIGIN,
                Arc::new(Directory::load(&directory).unwrap()),
            )
            .unwrap();
        let mut service = DecisionService::new(Arc::new(policy.clone()))
            .start(
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
            )
            .await
            .unwrap();
        let host_ua: SocketAddr = ([127, 0, 0, 1], free_udp_port()).into();
        // With a cvw.so, the proxy decides with the same files; the host keeps the API and
        // the user agent.
        let module = proxy.is_module().then(|| {
            let wasm = dir.join("policy.wasm");
            std::fs::write(&wasm, builtin::default_policy().unwrap()).unwrap();
            ModuleFiles {
                so: proxy.module_so(),
                policy: wasm,
                directory: directory.clone(),
                call_log: None,
            }
        });
        let running = start_proxy(
            proxy,
            HostAddrs {
                jsonrpc: service.jsonrpc,
                http: service.http,
            },
            pbx,
            host_ua,
            1000,
            module,
        );
        connect_host(proxy, &running, &mut service).await;
        let (ua, _incoming) = UserAgent::bind(UaConfig {
            bind: host_ua,
            outbound_proxy: Some(format!("sip:{}", running.sip())),
            ..UaConfig::default()
        })
        .await
        .unwrap();

        let tokens = Tokens::parse(
            &format!(
                "[[tokens]]\nuser = \"sip:alice@corp.example\"\nsha256 = \"{}\"\n",
                hash_hex(TOKEN)
            ),
            &dir.join("tokens.toml"),
        )
        .unwrap();
        let log = Arc::new(MemorySink::default());
        let api = Arc::new(Api {
            policy,
            originator: Arc::new(SipOriginator::new(ua)),
            tokens,
            throttle: cvw::click_to_call::throttle::AuthThrottle::new(Default::default()),
            limits: Arc::new(Limits::new(LimitSettings::default())),
            calls: Arc::new(Calls::default()),
            call_log: log.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, router(api)).await });
        ClickWorld {
            api: api_addr,
            desk,
            callee,
            log,
            _proxy: running,
            _service: service,
            _dir: dir,
        }
    }

    async fn click_to_call(&self, destination: &str) -> String {
        let (status, body) = send(
            &self.api,
            "POST",
            "/v1/calls",
            Some(TOKEN),
            Some(json!({ "destination": destination })),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    async fn wait_for_state(&self, id: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let (_, snap) = send(
                &self.api,
                "GET",
                &format!("/v1/calls/{id}"),
                Some(TOKEN),
                None,
            )
            .await;
            if snap["state"]["state"] == state {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("call {id} never reached {state}");
    }

    async fn call_log_record(&self) -> cvw::calllog::CallRecord {
        for _ in 0..100 {
            if let Some(r) = self.log.records().pop() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no call log record");
    }
}

fn header<'a>(r: &'a Request, name: &str) -> &'a str {
    r.headers.get(name).unwrap_or("")
}

fn phone(answer: Answer, media_port: u16) -> PhoneScript {
    PhoneScript {
        answer,
        media_port,
        ring_for: Duration::from_millis(200),
        ..PhoneScript::default()
    }
}

// CVW-10, CVW-11, CVW-12 with RFC 3725 Flow IV through the proxy: the desk phone rings
// first with a media-less offer showing the global caller ID; only then is the callee
// invited, without SDP, seeing Alice's line; the callee's offer reaches the desk phone in
// a re-INVITE and the desk's answer reaches the callee in the ACK; a hang-up through the
// API ends both legs, and the call log has the call.
async fn click_to_call_flow_iv_through_the_proxy(proxy: Proxy) {
    let world = ClickWorld::start(
        proxy,
        phone(Answer::Accept, DESK_MEDIA),
        phone(Answer::Accept, CALLEE_MEDIA),
    )
    .await;
    let callee_uri = world.callee.uri("carol");
    let id = world.click_to_call(&callee_uri).await;
    world.wait_for_state(&id, "connected").await;

    let desk_invites = world.desk.requests(Method::Invite);
    assert_eq!(
        desk_invites.len(),
        2,
        "initial INVITE and the re-INVITE with the callee's offer"
    );
    let first = &desk_invites[0];
    assert!(
        first.uri.contains(ALICE_CALLBACK),
        "rings Alice's callback number: {}",
        first.uri
    );
    assert!(
        header(first, "From").contains(GLOBAL_CALLER_ID),
        "CVW-2: {}",
        header(first, "From")
    );
    assert!(
        header(first, "P-Asserted-Identity").contains(GLOBAL_CALLER_ID),
        "CVW-2: {}",
        header(first, "P-Asserted-Identity")
    );
    assert!(
        !first.body.is_empty() && media_ports(&first.body).is_empty(),
        "Flow IV: an offer without m= lines"
    );

    let callee_invites = world.callee.requests(Method::Invite);
    assert_eq!(callee_invites.len(), 1);
    let invite_b = &callee_invites[0];
    assert!(
        invite_b.body.is_empty(),
        "Flow IV: the callee is invited without SDP"
    );
    let identity = format!(
        "{} {}",
        header(invite_b, "From"),
        header(invite_b, "P-Asserted-Identity")
    );
    assert!(
        identity.contains(ALICE_LINE),
        "CVW-11: the callee sees Alice's line: {identity}"
    );
    assert!(
        !identity.contains(GLOBAL_CALLER_ID),
        "CVW-11: never the global caller ID: {identity}"
    );

    let reinvite = &desk_invites[1];
    assert_eq!(
        media_ports(&reinvite.body),
        [CALLEE_MEDIA],
        "the callee's offer reaches the desk"
    );
    let callee_ack = world.callee.requests(Method::Ack);
    assert_eq!(callee_ack.len(), 1);
    assert_eq!(
        media_ports(&callee_ack[0].body),
        [DESK_MEDIA],
        "the desk's answer reaches the callee"
    );

    let (status, _) = send(
        &world.api,
        "DELETE",
        &format!("/v1/calls/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let events = follow(&world.api, TOKEN, &id).await;
    assert_eq!(
        states(&events),
        [
            "ringing-callback",
            "callback-answered",
            "ringing-callee",
            "connected",
            "ended"
        ]
    );
    assert_eq!(
        world.desk.requests(Method::Bye).len(),
        1,
        "the desk leg is cleared"
    );
    assert_eq!(
        world.callee.requests(Method::Bye).len(),
        1,
        "the callee leg is cleared"
    );

    let record = world.call_log_record().await;
    assert_eq!(record.id, id);
    assert!(record.connected_ms.is_some());
    assert_eq!(record.legs[0].sip_code, Some(200));
}

// CVW-13: a busy desk phone ends the call with 486 and the callee is never dialled.
async fn busy_desk_phone_never_dials_the_callee(proxy: Proxy) {
    let world = ClickWorld::start(
        proxy,
        phone(Answer::Reject(486), DESK_MEDIA),
        phone(Answer::Accept, CALLEE_MEDIA),
    )
    .await;
    let id = world.click_to_call(&world.callee.uri("carol")).await;
    let events = follow(&world.api, TOKEN, &id).await;
    let end = events.last().unwrap();
    assert_eq!(end["result"], "callback-busy", "{events:?}");
    assert_eq!(end["sip_code"], 486);
    assert!(
        world.callee.requests(Method::Invite).is_empty(),
        "the callee was dialled"
    );
    let record = world.call_log_record().await;
    assert_eq!(record.outcome.sip_code, Some(486));
}

// CVW-13: the callee declines; the desk leg is hung up with the callee's code as reason.
async fn declining_callee_clears_the_desk_leg_with_a_reason(proxy: Proxy) {
    let world = ClickWorld::start(
        proxy,
        phone(Answer::Accept, DESK_MEDIA),
        phone(Answer::Reject(603), CALLEE_MEDIA),
    )
    .await;
    let id = world.click_to_call(&world.callee.uri("carol")).await;
    let events = follow(&world.api, TOKEN, &id).await;
    let end = events.last().unwrap();
    assert_eq!(end["result"], "callee-declined", "{events:?}");
    assert_eq!(end["sip_code"], 603);
    let byes = world.desk.requests(Method::Bye);
    assert_eq!(byes.len(), 1, "the desk leg is cleared");
    assert!(
        header(&byes[0], "Reason").contains("cause=603"),
        "{:?}",
        byes[0].headers
    );
}

per_proxy!(click_to_call_flow_iv_through_the_proxy);
per_proxy!(busy_desk_phone_never_dials_the_callee);
per_proxy!(declining_callee_clears_the_desk_leg_with_a_reason);
