//! End-to-end: real Kamailio 5.6 with `examples/kamailio/kamailio.cfg`, the host's
//! decision service in-process (PolicyHost with the default policy), and SIP test phones
//! on loopback (UDP and TCP). Every check is on the wire: who receives which request.
//!
//! Fails, never skips, when `kamailio` is missing (`.ci/run` installs it).

use cvw_testkit as support;

use cvw::decision::transport::netstring::NetstringCodec;
use cvw::decision::{DecisionService, Running};
use cvw::directory::Directory;
use cvw::policy::{PolicyHost, RuntimeSettings, builtin};
use cvw_sip::message::{Message, Method, Request};
use cvw_sip::testing::wire::{Call, Phone, unique};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use support::kamailio::{Kamailio, Setup};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder as _;

const DOMAIN: &str = "corp.example";
const ALICE: &str = "sip:alice@corp.example";
const CAROL: &str = "sip:carol@corp.example";
const BOB: &str = "sip:bob@corp.example";
const ALICE_DESK: &str = "+14255550101";
const WAIT: Duration = Duration::from_secs(5);
/// How long a phone listens to be sure that nothing arrives.
const QUIET: Duration = Duration::from_millis(1500);
const COMPLETED_ELSEWHERE: &str = "SIP;cause=200;text=\"Call completed elsewhere\"";

struct World {
    kam: Kamailio,
    service: Option<Running>,
    host: PolicyHost,
    directory: PathBuf,
    pbx: Phone,
    host_ua: Phone,
}

/// A directory fixture of `tests/fixtures/kamailio-e2e/` with the test's PBX trunk
/// address in place of `@PBX@`.
fn directory_text(fixture: &str, pbx: SocketAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/kamailio-e2e")
        .join(fixture);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("directory fixture {}: {e}", path.display()));
    assert!(text.contains("@PBX@"), "{} names no @PBX@", path.display());
    text.replace("@PBX@", &pbx.to_string())
}

impl World {
    async fn new() -> World {
        Self::with_directory("directory.toml").await
    }

    /// `fixture`: a directory file of `tests/fixtures/kamailio-e2e/`.
    async fn with_directory(fixture: &str) -> World {
        Self::with_transport(fixture, false).await
    }

    /// The config's other transport: Kamailio asks the host over JSON-RPC (janssonrpcc).
    async fn over_janssonrpcc() -> World {
        Self::with_transport("directory.toml", true).await
    }

    async fn with_transport(fixture: &str, janssonrpcc: bool) -> World {
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

    async fn udp(&self, name: &str) -> Phone {
        Phone::udp(name, self.kam.sip).await
    }

    async fn tcp(&self, name: &str) -> Phone {
        Phone::tcp(name, self.kam.sip).await
    }

    /// Alice's two soft clients, one on UDP and one on TCP, registered.
    async fn alice_clients(&self) -> (Phone, Phone) {
        let mut c1 = self.udp("alice-udp").await;
        c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
        let mut c2 = self.tcp("alice-tcp").await;
        c2.register("alice", DOMAIN, "UC-Mobile/1.0").await;
        (c1, c2)
    }

    async fn stop_service(&mut self) {
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
fn uri_user(m: &Request) -> String {
    m.uri
        .trim_start_matches("sip:")
        .split(['@', ';'])
        .next()
        .unwrap_or("")
        .to_owned()
}

/// The client, still ringing, answers `invite`: its answer reaches the caller, and the
/// client was never cancelled (`when` says what happened to the desk leg before).
async fn client_answer_wins(
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

fn assert_completed_elsewhere(cancel: &Request, who: &str) {
    assert_eq!(
        cancel.headers.get("Reason"),
        Some(COMPLETED_ELSEWHERE),
        "{who}: CANCEL must say the call was completed elsewhere (CVW-31)"
    );
}

/// CVW-30: a UC call to Alice rings her desk phone (through the PBX trunk) and both
/// registered soft clients at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cvw30_uc_call_rings_desk_and_every_soft_client() {
    rings_desk_and_every_soft_client(World::new().await).await;
}

/// CVW-30 with the config's other transport (JSON-RPC, janssonrpcc): same calls, same
/// branches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cvw30_over_janssonrpcc_too() {
    rings_desk_and_every_soft_client(World::over_janssonrpcc().await).await;
}

async fn rings_desk_and_every_soft_client(mut w: World) {
    let (mut c1, mut c2) = w.alice_clients().await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(ALICE, BOB, &[]);

    let desk = w.pbx.expect_invite(WAIT).await;
    assert_eq!(
        uri_user(&desk),
        ALICE_DESK,
        "desk leg goes to Alice's line number"
    );
    let i1 = c1.expect_invite(WAIT).await;
    let i2 = c2.expect_invite(WAIT).await;
    assert_eq!(i1.headers.call_id(), call.call_id);
    assert_eq!(i2.headers.call_id(), call.call_id);
    // Per-branch headers of a parallel fork land on their own branch only; the proxy's
    // own timer plumbing (CVW-51) does not leak to the PBX.
    assert_eq!(desk.headers.get("X-CVW-Leg"), Some("desk"));
    assert_eq!(i1.headers.get("X-CVW-Leg"), None);
    assert_eq!(desk.headers.get("X-CVW-Ring-Timeout"), None);
    assert_eq!(desk.headers.get("X-CVW-Next-Hop"), None);
    assert!(
        i2.headers.get("Via").unwrap_or("").contains("SIP/2.0/TCP"),
        "TCP client reached over TCP"
    );

    // Clean up: the caller gives up; every branch is cancelled.
    bob.cancel(&call);
    w.pbx.expect_cancel(&desk, WAIT).await;
    c1.expect_cancel(&i1, WAIT).await;
    c2.expect_cancel(&i2, WAIT).await;
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 487);
}

/// CVW-31 (and CVW-32, answered in a soft client): the first answer wins; the desk phone
/// and the other client get CANCEL with Reason "Call completed elsewhere".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cvw31_first_answer_wins_others_cancelled_as_completed_elsewhere() {
    let mut w = World::new().await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let desk = w.pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;
    let i2 = c2.expect_invite(WAIT).await;
    bob.expect_ringing(3, WAIT).await;

    c2.answer(&i2);
    let ok = bob.final_response(&mut call, WAIT).await;
    assert_eq!(ok.code, 200);
    assert!(
        ok.headers.get("To").unwrap_or("").contains("tag=alice-tcp"),
        "the TCP client's answer reached the caller"
    );
    let cd = w.pbx.expect_cancel(&desk, WAIT).await;
    assert_completed_elsewhere(&cd, "desk");
    let cc = c1.expect_cancel(&i1, WAIT).await;
    assert_completed_elsewhere(&cc, "alice-udp");

    // The session stays with the client that answered: the caller's BYE reaches it.
    let bye = async { c2.expect_bye(WAIT).await };
    let (_, b) = tokio::join!(bob.bye(&call), bye);
    assert_eq!(b.headers.call_id(), call.call_id);
}

/// CVW-32: answered on the desk phone — the soft clients stop ringing (CANCEL, completed
/// elsewhere), and the call is the voice call through the PBX trunk only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cvw32_answered_on_desk_stops_the_soft_clients() {
    let mut w = World::new().await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let desk = w.pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;
    let i2 = c2.expect_invite(WAIT).await;
    // All three ring before the desk answers: a branch whose 180 reached Kamailio only
    // after the 2xx was seen cancelled with `Reason: SIP;cause=200` and no text.
    bob.expect_ringing(3, WAIT).await;

    w.pbx.answer(&desk);
    let ok = bob.final_response(&mut call, WAIT).await;
    assert_eq!(ok.code, 200);
    assert!(
        ok.headers.get("To").unwrap_or("").contains("tag=pbx"),
        "the desk phone's answer reached the caller"
    );
    assert_completed_elsewhere(&c1.expect_cancel(&i1, WAIT).await, "alice-udp");
    assert_completed_elsewhere(&c2.expect_cancel(&i2, WAIT).await, "alice-tcp");

    let desk_bye = async { w.pbx.expect_bye(WAIT).await };
    let (_, b) = tokio::join!(bob.bye(&call), desk_bye);
    assert_eq!(
        b.headers.call_id(),
        call.call_id,
        "the hang-up reaches the desk leg"
    );
}

/// CVW-33: a call that comes from the PBX trunk to Alice rings only her desk phone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cvw33_pbx_originated_call_rings_only_the_desk() {
    let mut w = World::new().await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let mut call = w
        .pbx
        .invite(ALICE, "sip:+14255550142@pbx.corp.example", &[]);
    let desk = w.pbx.expect_invite(WAIT).await;
    assert_eq!(uri_user(&desk), ALICE_DESK);
    assert!(
        c1.gets_request(Method::Invite, QUIET).await.is_none(),
        "UDP client must not ring for a PBX call"
    );
    assert!(
        c2.gets_request(Method::Invite, QUIET).await.is_none(),
        "TCP client must not ring for a PBX call"
    );
    w.pbx.reject(&desk, 486, "Busy Here");
    assert_eq!(w.pbx.final_response(&mut call, WAIT).await.code, 486);
}

/// CVW-34: the host's own callback legs (from its user agent, with its mark) are never
/// forked to the soft clients; the same mark from anyone else means nothing and is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cvw34_host_originated_legs_are_not_forked() {
    let mut w = World::new().await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let target = format!("sip:{ALICE_DESK}@pbx.corp.example;user=phone");
    let mut call = w.host_ua.invite(
        &target,
        "sip:+14255550000@corp.example",
        &[("X-CVW-Origination", "callback")],
    );
    let desk = w.pbx.expect_invite(WAIT).await;
    assert_eq!(desk.headers.call_id(), call.call_id);
    assert_eq!(
        desk.headers.get("X-CVW-Origination"),
        None,
        "the host's mark does not leak to the PBX"
    );
    assert!(
        c1.gets_request(Method::Invite, QUIET).await.is_none(),
        "callback leg must not ring a soft client"
    );
    assert!(
        c2.gets_request(Method::Invite, QUIET).await.is_none(),
        "callback leg must not ring a soft client"
    );
    w.pbx.reject(&desk, 486, "Busy Here");
    assert_eq!(w.host_ua.final_response(&mut call, WAIT).await.code, 486);

    // A forged mark from a UC client is stripped and the call is treated as a UC call.
    let mut mallory = w.udp("mallory").await;
    let mut forged = mallory.invite(ALICE, BOB, &[("X-CVW-Origination", "callback")]);
    let i1 = c1.expect_invite(WAIT).await;
    assert_eq!(i1.headers.get("X-CVW-Origination"), None);
    let i2 = c2.expect_invite(WAIT).await;
    let desk = w.pbx.expect_invite(WAIT).await;
    mallory.cancel(&forged);
    w.pbx.expect_cancel(&desk, WAIT).await;
    c1.expect_cancel(&i1, WAIT).await;
    c2.expect_cancel(&i2, WAIT).await;
    assert_eq!(mallory.final_response(&mut forged, WAIT).await.code, 487);
}

/// CVW-51: the desk leg has its own ring timeout: it is cancelled before the PBX's
/// voicemail could answer, while the soft clients keep ringing and can still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cvw51_desk_leg_times_out_while_clients_ring_on() {
    // The desk leg rings 2 s.
    let mut w = World::with_directory("directory-desk-2s.toml").await;
    let mut c1 = w.udp("alice-udp").await;
    c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let desk = w.pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;

    let started = std::time::Instant::now();
    w.pbx.expect_cancel(&desk, WAIT).await;
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1500),
        "desk cancelled too early ({after:?})"
    );
    // The client is still ringing: it was not cancelled, and its answer wins the call.
    client_answer_wins(
        &mut bob,
        &mut call,
        &c1,
        &i1,
        "after the desk leg timed out",
    )
    .await;
}

/// Fail-open: with the host's decision service stopped, calls are routed as without Call
/// via Work: the registered clients still ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_when_the_host_is_stopped() {
    let mut w = World::new().await;
    let (mut c1, mut c2) = w.alice_clients().await;
    w.stop_service().await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let i1 = c1.expect_invite(Duration::from_secs(8)).await;
    let i2 = c2.expect_invite(Duration::from_secs(8)).await;
    bob.expect_ringing(2, WAIT).await;
    c1.answer(&i1);
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 200);
    c2.expect_cancel(&i2, WAIT).await;
    assert!(
        w.pbx
            .gets_request(Method::Invite, Duration::from_millis(300))
            .await
            .is_none(),
        "no desk leg without the host"
    );
}

/// CVW-52: a policy published while a call rings does not lose that call, and the next
/// call is decided by the new generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_hot_swap_while_calls_ring_loses_no_call() {
    let mut w = World::new().await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let desk = w.pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;
    let i2 = c2.expect_invite(WAIT).await;
    bob.expect_ringing(3, WAIT).await;
    let before = w.host.current().unwrap().generation;

    let wasm = builtin::default_policy().unwrap();
    let v = w
        .host
        .publish(
            wasm,
            "swap-test",
            Arc::new(Directory::load(&w.directory).unwrap()),
        )
        .unwrap();
    assert!(v.generation > before);

    c1.answer(&i1);
    assert_eq!(
        bob.final_response(&mut call, WAIT).await.code,
        200,
        "the ringing call survives the swap"
    );
    w.pbx.expect_cancel(&desk, WAIT).await;
    c2.expect_cancel(&i2, WAIT).await;

    let mut call2 = bob.invite(ALICE, BOB, &[]);
    let desk2 = w.pbx.expect_invite(WAIT).await;
    let j1 = c1.expect_invite(WAIT).await;
    let j2 = c2.expect_invite(WAIT).await;
    bob.expect_ringing(3, WAIT).await;
    w.pbx.answer(&desk2);
    assert_eq!(
        bob.final_response(&mut call2, WAIT).await.code,
        200,
        "the next call is forked by the new policy"
    );
    c1.expect_cancel(&j1, WAIT).await;
    c2.expect_cancel(&j2, WAIT).await;
}

/// CVW-1: a user whose policy is not enabled gets plain routing: only the soft client
/// rings, never a desk leg.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_not_enabled_gets_plain_routing() {
    let mut w = World::new().await;
    let mut carol = w.udp("carol-udp").await;
    carol.register("carol", DOMAIN, "UC-Desktop/1.0").await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(CAROL, BOB, &[]);
    let i = carol.expect_invite(WAIT).await;
    carol.answer(&i);
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 200);
    assert!(
        w.pbx
            .gets_request(Method::Invite, Duration::from_millis(500))
            .await
            .is_none(),
        "no desk leg for Carol"
    );
}

/// The reply hook: the desk phone's PBX answers the desk leg with 181 (forwarded, e.g. to
/// voicemail); the policy cancels that branch so the voicemail cannot steal the call,
/// while the soft client rings on and can answer (CVW-51's goal by another route).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_hook_cancels_a_diverted_desk_leg() {
    let mut w = World::new().await;
    let mut c1 = w.udp("alice-udp").await;
    c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let desk = w.pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;
    let mut forwarded = w.pbx.response_to(&desk, 181, "Call Is Being Forwarded");
    forwarded.headers.push(
        "Diversion",
        "<sip:+14255550101@pbx.corp.example>;reason=no-answer",
    );
    w.pbx.send(forwarded);

    w.pbx.expect_cancel(&desk, WAIT).await;
    client_answer_wins(
        &mut bob,
        &mut call,
        &c1,
        &i1,
        "after the diverted desk leg was cancelled",
    )
    .await;
}

/// The failure hook: nobody answers within the ring timeouts (408); the policy sends the
/// caller on to the configured no-answer destination, through the PBX trunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_hook_sends_an_unanswered_call_to_voicemail() {
    // Every leg rings 2 s; then the caller goes to sip:voicemail@pbx.corp.example.
    let mut w = World::with_directory("directory-voicemail.toml").await;
    let mut c1 = w.udp("alice-udp").await;
    c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
    let mut bob = w.udp("bob").await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let desk = w.pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;
    w.pbx.expect_cancel(&desk, WAIT).await;
    c1.expect_cancel(&i1, WAIT).await;

    let vm = w.pbx.expect_invite(WAIT).await;
    assert_eq!(vm.headers.call_id(), call.call_id);
    assert_eq!(uri_user(&vm), "voicemail");
    assert_eq!(vm.headers.get("X-CVW-Leg"), Some("voicemail"));
    w.pbx.answer(&vm);
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 200);
}

/// Fail-open when the host does not answer in time: a host connects to Kamailio's evapi
/// and confirms, then never answers; after the decision timeout the call is routed as
/// without Call via Work, so the registered client still rings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_when_the_host_does_not_answer_in_time() {
    let (kam, pbx_sock) = silent_host_setup(false).await;
    let (silent, _) = evapi_host_of_the_test(&kam, "silent").await;
    rings_without_a_decision(&kam, pbx_sock).await;
    drop(silent);
}

/// A host played by the test on Kamailio's evapi: connected, and confirmed by Kamailio
/// (its calls come here from then on). The decoder keeps what arrived after `ready`.
async fn evapi_host_of_the_test(kam: &Kamailio, name: &str) -> (tokio::net::TcpStream, BytesMut) {
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

/// The same over JSON-RPC: the host accepts Kamailio's connection and never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_when_the_host_does_not_answer_over_janssonrpcc() {
    let (kam, pbx_sock) = silent_host_setup(true).await;
    rings_without_a_decision(&kam, pbx_sock).await;
}

/// Kamailio (decision timeout 300 ms) whose JSON-RPC/HTTP host accepts connections and
/// never answers.
async fn silent_host_setup(janssonrpcc: bool) -> (Kamailio, tokio::net::UdpSocket) {
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

async fn rings_without_a_decision(kam: &Kamailio, pbx_sock: tokio::net::UdpSocket) {
    let mut pbx = Phone::with_udp("pbx", kam.sip, pbx_sock);
    let mut c1 = Phone::udp("alice-udp", kam.sip).await;
    c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
    let mut bob = Phone::udp("bob", kam.sip).await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let i1 = c1.expect_invite(WAIT).await;
    c1.answer(&i1);
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 200);
    assert!(
        pbx.gets_request(Method::Invite, Duration::from_millis(300))
            .await
            .is_none(),
        "no desk leg without a decision"
    );
}

/// The config's side of a parallel fork's per-branch data, for what the default policy
/// never asks for: a scripted evapi host answers with cvw's own encoding of a fork whose
/// second route has its own From and a next hop (an appended branch), and whose third has
/// a header of its own. Each lands on its branch only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_fork_applies_from_next_hop_and_headers_per_branch() {
    use cvw::decision::dialect::KamailioEvapi;
    use cvw::decision::transport::netstring;
    use cvw::policy::model::{Decision, Fork, ForkMode, Header, NameAddr, Target};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (kam, pbx_sock) = silent_host_setup(false).await;
    let pbx_addr = pbx_sock.local_addr().unwrap();
    let mut pbx = Phone::with_udp("pbx", kam.sip, pbx_sock);
    let mut c1 = Phone::udp("alice-udp", kam.sip).await;
    c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
    let mut c2 = Phone::tcp("alice-tcp", kam.sip).await;
    c2.register("alice", DOMAIN, "UC-Mobile/1.0").await;
    let header = |name: &str, value: &str| Header {
        name: name.into(),
        value: value.into(),
    };
    let target = |label: &str, uri: String| Target {
        label: label.into(),
        uri,
        next_hop: None,
        from: None,
        asserted_identity: None,
        headers: vec![],
        ring_timeout_ms: None,
    };
    let fork = Decision::Fork(Fork {
        mode: ForkMode::Parallel,
        targets: vec![
            Target {
                next_hop: Some(format!("sip:{pbx_addr}")),
                headers: vec![header("X-CVW-Leg", "desk")],
                ..target(
                    "desk",
                    format!("sip:{ALICE_DESK}@pbx.corp.example;user=phone"),
                )
            },
            Target {
                // Reached only through its next hop: the name does not resolve.
                next_hop: Some(format!("sip:{}", c1.local)),
                from: Some(NameAddr {
                    display: "Call via Work".into(),
                    uri: "sip:+14255550000@corp.example".into(),
                }),
                ..target("client", "sip:alice@alice-udp.invalid".into())
            },
            Target {
                headers: vec![header("X-Only", "the TCP client")],
                ..target("client", format!("sip:alice@{};transport=tcp", c2.local))
            },
        ],
    });

    let (mut host, mut frames) = evapi_host_of_the_test(&kam, "scripted").await;
    let answering = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            while let Some(frame) = NetstringCodec.decode(&mut frames).unwrap() {
                let event: serde_json::Value = serde_json::from_slice(&frame).unwrap();
                let id = |k: &str| event[k].as_u64().unwrap() as u32;
                let answer = KamailioEvapi::new(id("tindex"), id("tlabel"))
                    .decision(&fork)
                    .unwrap();
                let frame = netstring::encode(answer.as_str().as_bytes());
                host.write_all(&frame).await.unwrap();
            }
            let n = host.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return; // Kamailio stopped
            }
            frames.extend_from_slice(&buf[..n]);
        }
    });

    let mut bob = Phone::udp("bob", kam.sip).await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let desk = pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;
    let i2 = c2.expect_invite(WAIT).await;
    assert_eq!(uri_user(&desk), ALICE_DESK);
    assert_eq!(desk.headers.get("X-CVW-Leg"), Some("desk"));
    assert!(desk.headers.get("From").unwrap_or("").contains(BOB));
    assert_eq!(
        i1.uri, "sip:alice@alice-udp.invalid",
        "sent to its next hop"
    );
    let from = i1.headers.get("From").unwrap_or("");
    assert!(
        from.starts_with("Call via Work <sip:+14255550000@corp.example>;tag="),
        "the second branch's own From: {from}"
    );
    assert_eq!(i1.headers.get("X-CVW-Leg"), None);
    assert_eq!(i1.headers.get("X-Only"), None);
    assert!(i2.headers.get("From").unwrap_or("").contains(BOB));
    assert_eq!(i2.headers.get("X-Only"), Some("the TCP client"));
    assert_eq!(desk.headers.get("X-Only"), None);

    bob.cancel(&call);
    pbx.expect_cancel(&desk, WAIT).await;
    c1.expect_cancel(&i1, WAIT).await;
    c2.expect_cancel(&i2, WAIT).await;
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 487);
    answering.abort();
}

/// SIPp, where the test installs it (`scripts/setup`); fails, never skips, without it.
fn sipp() -> PathBuf {
    ["/usr/bin/sipp", "/usr/local/bin/sipp"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("sipp is not installed: run scripts/setup (apt-get install sip-tester)")
}

/// A third-party SIP tool as the caller (SIPp, its own scenario file) sees what our phones
/// see (CVW-30, CVW-31): Alice's desk and both soft clients ring, the client that answers
/// gets the call and SIPp's BYE, the others are cancelled as completed elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cvw30_31_with_sipp_as_the_caller() {
    let mut w = World::new().await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/sipp/call-and-hang-up.xml");
    let port = support::kamailio::free_port().to_string();
    let media = support::kamailio::free_port().to_string();
    let mut cmd = std::process::Command::new(sipp());
    cmd.arg("-sf")
        .arg(&scenario)
        .args(["-s", "alice", "-i", "127.0.0.1", "-p", &port, "-mp", &media])
        .args(["-m", "1", "-l", "1", "-timeout", "20", "-timeout_error"])
        .arg("-nostdin")
        .arg(w.kam.sip.to_string())
        .stdin(std::process::Stdio::null());
    let sipp = tokio::task::spawn_blocking(move || cmd.output());

    let desk = w.pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;
    let i2 = c2.expect_invite(WAIT).await;
    assert_eq!(uri_user(&desk), ALICE_DESK);
    assert_eq!(
        i1.headers.call_id(),
        desk.headers.call_id(),
        "one call, three branches"
    );
    assert_eq!(i2.headers.call_id(), desk.headers.call_id());
    // The three 180s must reach the proxy before the answer: a branch still silent when
    // the 2xx arrives is cancelled with `Reason: SIP;cause=200` and no text.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c1.answer(&i1);
    let desk_cancel = w.pbx.gets_request(Method::Cancel, WAIT).await;
    let client_cancel = c2.gets_request(Method::Cancel, WAIT).await;
    let bye = c1.gets_request(Method::Bye, WAIT).await;
    if let Some(b) = &bye {
        c1.send(c1.response_to(b, 200, "OK"));
    }
    let out = tokio::time::timeout(Duration::from_secs(30), sipp)
        .await
        .expect("SIPp ends")
        .expect("SIPp task")
        .expect("SIPp runs");
    let sipp_said = format!(
        "SIPp ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_completed_elsewhere(&desk_cancel.expect(&sipp_said), "desk");
    assert_completed_elsewhere(&client_cancel.expect(&sipp_said), "alice-tcp");
    let bye = bye.expect(&sipp_said);
    assert_eq!(
        bye.headers.call_id(),
        i1.headers.call_id(),
        "SIPp's hang-up reaches the client"
    );
    assert!(out.status.success(), "the call failed for {sipp_said}");
}
