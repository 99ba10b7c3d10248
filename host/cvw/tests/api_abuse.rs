//! The click-to-call API under abuse, over real TCP on loopback through its own front door
//! (`click_to_call::transport::serve`): oversized bodies and headers, slow and idle
//! clients, more connections than the cap, and repeated bad tokens from one source. Each
//! gets a clear answer or a closed connection within the configured time, nothing is
//! placed, and the server goes on serving everybody else. Raw sockets, so a test can be
//! as rude as a real attacker (partial heads, trickled bytes, another source address).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cvw::calllog::MemorySink;
use cvw::click_to_call::auth::Tokens;
use cvw::click_to_call::calls::Calls;
use cvw::click_to_call::limits::{LimitSettings, Limits};
use cvw::click_to_call::throttle::{AuthFailureSettings, AuthThrottle};
use cvw::click_to_call::transport::{HttpSettings, serve};
use cvw::click_to_call::{Api, router};
use cvw::directory::Directory;
use cvw::origination::{CallControl, OriginateError, Originator};
use cvw::policy::model::OriginationPlan;
use cvw::policy::{PolicyHost, RuntimeSettings, builtin};
use cvw::shutdown::{Shutdown, ShutdownTrigger};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const ALICE: &str = "sip:alice@corp.example";
const TOKEN: &str = "alice-secret-token-7f3a";

/// Counts what would have been placed, and places nothing.
#[derive(Default)]
struct CountingOriginator(AtomicUsize);

impl Originator for CountingOriginator {
    fn start(&self, _id: &str, _plan: &OriginationPlan) -> Result<CallControl, OriginateError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(OriginateError::Unavailable(std::io::Error::other("test")))
    }
}

struct Server {
    addr: SocketAddr,
    placed: Arc<CountingOriginator>,
    _stop: ShutdownTrigger,
}

async fn start(http: HttpSettings, auth_failures: AuthFailureSettings) -> Server {
    let directory = Directory::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/directory.toml"),
    )
    .unwrap();
    let policy = PolicyHost::new(RuntimeSettings::default()).unwrap();
    policy
        .publish(
            builtin::default_policy().unwrap(),
            builtin::DEFAULT_ORIGIN,
            Arc::new(directory),
        )
        .unwrap();
    let placed = Arc::new(CountingOriginator::default());
    let api = Arc::new(Api {
        policy,
        originator: placed.clone(),
        tokens: Tokens::single(ALICE, TOKEN),
        throttle: AuthThrottle::new(auth_failures),
        limits: Arc::new(Limits::new(LimitSettings::default())),
        calls: Arc::new(Calls::default()),
        call_log: Arc::new(MemorySink::default()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, signal): (ShutdownTrigger, Shutdown) = Shutdown::new();
    tokio::spawn(serve(listener, router(api), http, signal));
    Server {
        addr,
        placed,
        _stop: stop,
    }
}

/// A connection from `source` (any 127.0.0.0/8 address is loopback on Linux).
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Everything the server sends until it closes; panics after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open past {within:?}"))
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// One raw request from `source` with `Connection: close`; the status and the JSON body.
async fn raw(source: &str, addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = connect_from(source, addr).await;
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let text = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    status_and_body(&text)
}

fn status_and_body(text: &str) -> (u16, String) {
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

fn get(path: &str, token: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: cvw\r\nAuthorization: Bearer {token}\r\n{extra}Connection: close\r\n\r\n"
    )
}

fn post_calls(content_length: Option<usize>, token: &str) -> String {
    let length = match content_length {
        Some(n) => format!("Content-Length: {n}\r\n"),
        None => "Transfer-Encoding: chunked\r\n".to_owned(),
    };
    format!(
        "POST /v1/calls HTTP/1.1\r\nHost: cvw\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\n{length}Connection: close\r\n\r\n"
    )
}

fn code(body: &str) -> String {
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    json["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_and_nothing_is_placed() {
    let http = HttpSettings {
        max_body_bytes: 1024,
        ..HttpSettings::default()
    };
    let s = start(http, AuthFailureSettings::default()).await;
    // Declared too large: refused before a byte of it is read.
    let (status, body) = raw("127.0.0.1", s.addr, &post_calls(Some(5000), TOKEN), b"").await;
    assert_eq!(
        (status, code(&body).as_str()),
        (413, "body-too-large"),
        "{body}"
    );
    assert!(body.contains("1024 bytes"), "{body}");
    // Chunked, with no length given: refused once the limit is passed.
    let padding = "x".repeat(2000);
    let json = format!("{{\"destination\":\"{padding}\"}}");
    let chunked = format!("{:x}\r\n{json}\r\n0\r\n\r\n", json.len());
    let (status, body) = raw(
        "127.0.0.1",
        s.addr,
        &post_calls(None, TOKEN),
        chunked.as_bytes(),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (413, "body-too-large"),
        "{body}"
    );
    // A body within the limit reaches the policy, which refuses an emergency number.
    let small = br#"{"destination":"911"}"#;
    let (status, body) = raw(
        "127.0.0.1",
        s.addr,
        &post_calls(Some(small.len()), TOKEN),
        small,
    )
    .await;
    assert_eq!((status, code(&body).as_str()), (403, "refused"), "{body}");
    assert_eq!(s.placed.0.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn headers_over_the_limit_are_refused_with_431() {
    let http = HttpSettings {
        max_header_bytes: 1024,
        ..HttpSettings::default()
    };
    let s = start(http, AuthFailureSettings::default()).await;
    let pad = |n: usize| format!("X-Pad: {}\r\n", "p".repeat(n));
    let (status, body) = raw(
        "127.0.0.1",
        s.addr,
        &get("/v1/calls/c1", TOKEN, &pad(1500)),
        b"",
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (431, "headers-too-large"),
        "{body}"
    );
    assert!(body.contains("at most 1024"), "{body}");
    // Far over: hyper stops buffering the head and answers 431 itself.
    let (status, _) = raw(
        "127.0.0.1",
        s.addr,
        &get("/v1/calls/c1", TOKEN, &pad(64 * 1024)),
        b"",
    )
    .await;
    assert_eq!(status, 431);
    // Ordinary headers pass.
    let (status, body) = raw("127.0.0.1", s.addr, &get("/v1/calls/c1", TOKEN, ""), b"").await;
    assert_eq!((status, code(&body).as_str()), (404, "not-found"), "{body}");
}

const SHORT: HttpSettings = HttpSettings {
    max_connections: 1024,
    max_connections_per_source: 256,
    header_read_timeout_ms: 300,
    body_read_timeout_ms: 300,
    max_header_bytes: 8192,
    max_body_bytes: 16384,
};

/// Slowloris: a head trickled one byte at a time is cut off at the header timeout,
/// however steadily the bytes come.
#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected() {
    let s = start(SHORT, AuthFailureSettings::default()).await;
    let mut stream = connect_from("127.0.0.1", s.addr).await;
    let head = get(
        "/v1/calls/c1",
        TOKEN,
        &format!("X-Pad: {}\r\n", "p".repeat(200)),
    );
    let started = Instant::now();
    let mut closed = false;
    for byte in head.as_bytes() {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    if !closed {
        let rest = read_until_closed(&mut stream, Duration::from_secs(2)).await;
        assert!(
            !rest.contains(" 200 ") && !rest.contains(" 404 "),
            "{rest:?}"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(2),
        "cut off after {elapsed:?}, timeout 300 ms"
    );
}

/// A connection that sends nothing, and one left idle after a request, are closed at the
/// header timeout.
#[tokio::test]
async fn idle_connections_are_closed() {
    let s = start(SHORT, AuthFailureSettings::default()).await;
    let mut silent = connect_from("127.0.0.1", s.addr).await;
    let started = Instant::now();
    assert_eq!(
        read_until_closed(&mut silent, Duration::from_secs(2)).await,
        ""
    );
    assert!(started.elapsed() >= Duration::from_millis(250));

    let mut kept = connect_from("127.0.0.1", s.addr).await;
    let keep_alive = "GET /v1/calls/c1 HTTP/1.1\r\nHost: cvw\r\nAuthorization: Bearer x\r\n\r\n";
    kept.write_all(keep_alive.as_bytes()).await.unwrap();
    let text = read_until_closed(&mut kept, Duration::from_secs(2)).await;
    assert_eq!(status_and_body(&text).0, 401, "{text}");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_gets_408() {
    let s = start(SHORT, AuthFailureSettings::default()).await;
    let started = Instant::now();
    let (status, body) = raw(
        "127.0.0.1",
        s.addr,
        &post_calls(Some(100), TOKEN),
        b"{\"dest",
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (408, "body-timeout"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(s.placed.0.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn connections_over_the_cap_get_503_and_the_cap_frees_up() {
    let http = HttpSettings {
        max_connections: 2,
        ..HttpSettings::default()
    };
    let s = start(http, AuthFailureSettings::default()).await;
    let first = connect_from("127.0.0.1", s.addr).await;
    let _second = connect_from("127.0.0.1", s.addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = raw("127.0.0.1", s.addr, &get("/v1/calls/c1", TOKEN, ""), b"").await;
    assert_eq!(
        (status, code(&body).as_str()),
        (503, "over-capacity"),
        "{body}"
    );
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = raw("127.0.0.1", s.addr, &get("/v1/calls/c1", TOKEN, ""), b"").await;
    assert_eq!((status, code(&body).as_str()), (404, "not-found"), "{body}");
}

/// One source cannot take every slot: its connections over its own cap are refused
/// while another source is still served.
#[tokio::test]
async fn one_source_cannot_take_every_connection() {
    let http = HttpSettings {
        max_connections: 10,
        max_connections_per_source: 2,
        ..HttpSettings::default()
    };
    let s = start(http, AuthFailureSettings::default()).await;
    let _a = connect_from("127.0.0.4", s.addr).await;
    let _b = connect_from("127.0.0.4", s.addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = raw("127.0.0.4", s.addr, &get("/v1/calls/c1", TOKEN, ""), b"").await;
    assert_eq!(
        (status, code(&body).as_str()),
        (503, "over-capacity"),
        "{body}"
    );
    let (status, body) = raw("127.0.0.5", s.addr, &get("/v1/calls/c1", TOKEN, ""), b"").await;
    assert_eq!((status, code(&body).as_str()), (404, "not-found"), "{body}");
}

/// Captures the log lines of this thread (the tests' runtime is single-threaded).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn repeated_bad_tokens_from_one_source_get_429_and_others_are_unaffected() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let limit = AuthFailureSettings {
        max_per_source: 3,
        window_s: 60,
        max_sources: 100,
    };
    let s = start(HttpSettings::default(), limit).await;
    let guess = |n: usize| format!("guessed-token-{n}");
    for n in 0..3 {
        let (status, body) = raw(
            "127.0.0.2",
            s.addr,
            &get("/v1/calls/c1", &guess(n), ""),
            b"",
        )
        .await;
        assert_eq!(
            (status, code(&body).as_str()),
            (401, "unauthorized"),
            "{body}"
        );
    }
    let mut stream = connect_from("127.0.0.2", s.addr).await;
    stream
        .write_all(get("/v1/calls/c1", &guess(3), "").as_bytes())
        .await
        .unwrap();
    let text = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let (status, body) = status_and_body(&text);
    assert_eq!(
        (status, code(&body).as_str()),
        (429, "too-many-bad-tokens"),
        "{text}"
    );
    let retry_after: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {text}"));
    assert!((59..=60).contains(&retry_after), "{retry_after}");
    // The blocked source is refused even with the right token: it learns nothing.
    let (status, _) = raw("127.0.0.2", s.addr, &get("/v1/calls/c1", TOKEN, ""), b"").await;
    assert_eq!(status, 429);
    // Another source with the good token is served, and its bad tokens count on their own.
    let (status, body) = raw("127.0.0.3", s.addr, &get("/v1/calls/c1", TOKEN, ""), b"").await;
    assert_eq!((status, code(&body).as_str()), (404, "not-found"), "{body}");
    let (status, _) = raw(
        "127.0.0.3",
        s.addr,
        &get("/v1/calls/c1", &guess(9), ""),
        b"",
    )
    .await;
    assert_eq!(status, 401);

    let log = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
    assert!(
        log.contains("too many bad tokens") && log.contains("127.0.0.2"),
        "{log}"
    );
    for secret in [TOKEN, "guessed-token"] {
        assert!(!log.contains(secret), "a token was logged: {log}");
    }
}
