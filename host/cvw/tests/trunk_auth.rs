//! `cvw serve` toward a PBX trunk that challenges the host's legs (issue 11, item 4): the
//! account in `[[api.sip.trunks]]` (its password in a file) answers the trunk's 407 on
//! the wire, and neither the password nor the answer shows in the log, even at trace
//! level. The trunk is a raw UDP socket standing in for proxy and PBX (the host's
//! outbound proxy), so every message is checked as sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cvw_sip::message::{Message, Method, Request};
use sha2::{Digest, Sha256};

const CVW: &str = env!("CARGO_BIN_EXE_cvw");
const PASSWORD: &str = "trunk-secret-4711";
const REALM: &str = "pbx.corp.example";

const DIRECTORY: &str = r#"
[policy.config]
global_caller_id = "+14255550000"
pbx_domain = "pbx.corp.example"

[policies.global]
enabled = true

[[users]]
uc_address = "sip:alice@corp.example"
display_name = "Alice Smith"
line_uri = "tel:+14255550101"
"#;

struct Serve {
    child: Child,
    dir: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Serve {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn start(trunk: SocketAddr, api: SocketAddr) -> Serve {
    let dir = std::env::temp_dir().join(format!("cvw-trunk-auth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("directory.toml"), DIRECTORY).unwrap();
    std::fs::write(
        dir.join("tokens.toml"),
        format!(
            "[[tokens]]\nuser = \"sip:alice@corp.example\"\nsha256 = \"{}\"\n",
            sha256("alice-token")
        ),
    )
    .unwrap();
    std::fs::write(dir.join("trunk.pw"), format!("{PASSWORD}\n")).unwrap();
    let config = format!(
        "directory = \"directory.toml\"\n\
         [control]\nlisten = \"127.0.0.1:0\"\n\
         [api]\nlisten = \"{api}\"\ntokens_file = \"tokens.toml\"\ncall_log = \"calls.jsonl\"\n\
         [api.sip]\nbind = \"127.0.0.1:0\"\noutbound_proxy = \"sip:{trunk}\"\n\
         [[api.sip.trunks]]\nrealm = \"{REALM}\"\nusername = \"cvw-host\"\npassword_file = \"trunk.pw\"\n"
    );
    std::fs::write(dir.join("cvw.toml"), config).unwrap();
    let mut child = Command::new(CVW)
        .args(["serve", "--config"])
        .arg(dir.join("cvw.toml"))
        .env("CVW_ADMIN_TOKEN", "admin")
        // Everything the host and its user agent log, not the runtime's own tracing.
        .env("RUST_LOG", "cvw=trace,cvw_sip=trace")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let serve = Serve { child, dir };
    loop {
        let mut line = String::new();
        assert_ne!(
            stdout.read_line(&mut line).unwrap(),
            0,
            "cvw serve exited: {}",
            serve.log()
        );
        if line.starts_with("control: ") {
            break;
        }
    }
    // The API listens once the control line is out; wait until it accepts.
    for _ in 0..400 {
        if TcpStream::connect(api).is_ok() {
            return serve;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the click-to-call API did not listen: {}", serve.log());
}

fn click_to_call(api: SocketAddr, destination: &str) -> String {
    let body = format!("{{\"destination\":\"{destination}\"}}");
    let mut stream = TcpStream::connect(api).unwrap();
    write!(
        stream,
        "POST /v1/calls HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer alice-token\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The next request from the host, skipping retransmissions.
fn next_request(trunk: &UdpSocket, seen: &mut Vec<String>) -> (Request, SocketAddr) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, from) = trunk.recv_from(&mut buf).expect("a request from the host");
        let Ok(Message::Request(r)) = Message::parse(&buf[..n]) else {
            continue;
        };
        let key = format!(
            "{} {}",
            r.headers.top_branch().unwrap_or_default(),
            r.method
        );
        if !seen.contains(&key) {
            seen.push(key);
            return (r, from);
        }
    }
}

fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(", ").find_map(|p| {
        let (n, v) = p.trim_start_matches("Digest ").split_once('=')?;
        (n == name).then(|| v.trim_matches('"'))
    })
}

#[test]
fn a_challenging_trunk_gets_the_configured_account_and_the_log_never_shows_it() {
    let trunk = UdpSocket::bind("127.0.0.1:0").unwrap();
    trunk
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let serve = start(trunk.local_addr().unwrap(), api);

    let answer = click_to_call(api, "+14255550142");
    assert!(answer.starts_with("HTTP/1.1 20"), "{answer}");
    let mut seen = Vec::new();
    let (first, from) = next_request(&trunk, &mut seen);
    assert_eq!(first.method, Method::Invite);
    let mut challenge = first.response(407, "Proxy Authentication Required");
    challenge.headers.push(
        "Proxy-Authenticate",
        format!("Digest realm=\"{REALM}\", nonce=\"n-1\", qop=\"auth\", algorithm=SHA-256"),
    );
    trunk
        .send_to(&Message::Response(challenge).to_bytes(), from)
        .unwrap();
    let second = loop {
        let (r, _) = next_request(&trunk, &mut seen);
        if r.method == Method::Invite {
            break r;
        }
    };
    assert_eq!(second.headers.call_id(), first.headers.call_id());
    assert_eq!(second.headers.cseq().map(|c| c.number), Some(2));
    let value = second
        .headers
        .get("Proxy-Authorization")
        .unwrap_or_else(|| panic!("no answer in {second:?}"))
        .to_owned();
    assert_eq!(param(&value, "username"), Some("cvw-host"));
    let (cnonce, nc) = (
        param(&value, "cnonce").unwrap(),
        param(&value, "nc").unwrap(),
    );
    let ha1 = sha256(&format!("cvw-host:{REALM}:{PASSWORD}"));
    let ha2 = sha256(&format!("INVITE:{}", second.uri));
    let want = sha256(&format!("{ha1}:n-1:{nc}:{cnonce}:auth:{ha2}"));
    let response = param(&value, "response").unwrap().to_owned();
    assert_eq!(
        response, want,
        "the trunk accepts the account from the file"
    );

    // Busy: the call ends, then the log is read.
    trunk
        .send_to(
            &Message::Response(second.response(486, "Busy Here")).to_bytes(),
            from,
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let log = serve.log();
    assert!(
        log.contains("INVITE"),
        "the host's SIP debug lines are in the log: {log}"
    );
    assert!(!log.contains(PASSWORD), "the password is in the log");
    assert!(!log.contains(&response), "the digest answer is in the log");
}
