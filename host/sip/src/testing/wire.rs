//! A phone the test drives step by step: user agents on loopback that register, ring,
//! answer, cancel and hang up, over UDP or TCP through a proxy, with every message built by
//! hand so that tests can send what a real client would (or should not). Every message it
//! received is kept, so tests check the wire. Waits are bounded: a phone that hears
//! nothing in time fails the test with its log.
//!
//! It reads and writes SIP with this crate's [`crate::message`] model and frames TCP with
//! the transport's own framing; it keeps no transaction state beyond what a test needs.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::message::{Headers, Message, Method, Request, Response, addr_uri};
use crate::transport::{Protocol, next_frame};

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// A unique token for tags, branches, Call-IDs and temporary names.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

/// An outgoing call: what is needed for ACK, CANCEL and BYE.
#[derive(Debug, Clone)]
pub struct Call {
    pub invite: Request,
    pub call_id: String,
    pub answer: Option<Response>,
}

pub struct Phone {
    /// Also this phone's To tag on the responses it sends.
    pub name: String,
    pub transport: Protocol,
    pub local: SocketAddr,
    out: mpsc::UnboundedSender<Vec<u8>>,
    inbox: mpsc::UnboundedReceiver<Message>,
    /// Everything received, in order.
    pub log: Vec<Message>,
    cseq: u32,
}

impl Phone {
    /// A UDP phone on a fresh loopback port.
    pub async fn udp(name: &str, proxy: SocketAddr) -> Phone {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        Self::with_udp(name, proxy, socket)
    }

    /// A UDP phone on an already bound socket (whose port the proxy config names).
    pub fn with_udp(name: &str, proxy: SocketAddr, socket: UdpSocket) -> Phone {
        let socket = Arc::new(socket);
        let local = socket.local_addr().expect("local addr");
        let (in_tx, inbox) = mpsc::unbounded_channel();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let reader = socket.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, _)) = reader.recv_from(&mut buf).await {
                if let Ok(m) = Message::parse(&buf[..n])
                    && in_tx.send(m).is_err()
                {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(bytes) = out_rx.recv().await {
                let _ = socket.send_to(&bytes, proxy).await;
            }
        });
        Self::new(name, Protocol::Udp, local, out, inbox)
    }

    /// A TCP phone: one connection to the proxy, used both ways (the proxy reaches the
    /// registered contact over it).
    pub async fn tcp(name: &str, proxy: SocketAddr) -> Phone {
        let stream = TcpStream::connect(proxy).await.expect("connect tcp");
        stream.set_nodelay(true).expect("nodelay");
        let local = stream.local_addr().expect("local addr");
        let (mut rd, mut wr) = stream.into_split();
        let (in_tx, inbox) = mpsc::unbounded_channel();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 65536];
            loop {
                // Keep-alive CRLFs between messages are skipped by the framing.
                while let Ok(Some(frame)) = next_frame(&mut buf) {
                    if let Ok(m) = Message::parse(&frame)
                        && in_tx.send(m).is_err()
                    {
                        return;
                    }
                }
                match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
        tokio::spawn(async move {
            while let Some(bytes) = out_rx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        });
        Self::new(name, Protocol::Tcp, local, out, inbox)
    }

    fn new(
        name: &str,
        transport: Protocol,
        local: SocketAddr,
        out: mpsc::UnboundedSender<Vec<u8>>,
        inbox: mpsc::UnboundedReceiver<Message>,
    ) -> Phone {
        Phone {
            name: name.into(),
            transport,
            local,
            out,
            inbox,
            log: Vec::new(),
            cseq: 1,
        }
    }

    /// Sends a request or response to the proxy as it is.
    pub fn send(&self, m: impl Into<Message>) {
        let _ = self.out.send(m.into().to_bytes());
    }

    fn via(&self) -> String {
        format!(
            "SIP/2.0/{} {};branch={};rport",
            self.transport.via_name(),
            self.local,
            unique("z9hG4bK")
        )
    }

    pub fn contact(&self, user: &str) -> String {
        match self.transport {
            Protocol::Udp => format!("<sip:{user}@{}>", self.local),
            Protocol::Tcp => format!("<sip:{user}@{};transport=tcp>", self.local),
        }
    }

    /// The next message within `wait`, or `None`.
    pub async fn next(&mut self, wait: Duration) -> Option<Message> {
        let m = tokio::time::timeout(wait, self.inbox.recv())
            .await
            .ok()
            .flatten()?;
        self.log.push(m.clone());
        Some(m)
    }

    fn describe(&self) -> String {
        self.log
            .iter()
            .map(|m| format!("  {} ({})\n", m.start_line(), m.headers().call_id()))
            .collect()
    }

    /// The next request with `method` within `wait`; anything else on the way is logged.
    pub async fn gets_request(&mut self, method: Method, wait: Duration) -> Option<Request> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await? {
                Message::Request(r) if r.method == method => return Some(r),
                _ => continue,
            }
        }
    }

    /// Waits for a request with `method`; fails the test with the log when none comes.
    pub async fn expect_request(&mut self, method: Method, wait: Duration) -> Request {
        match self.gets_request(method.clone(), wait).await {
            Some(r) => r,
            None => panic!(
                "{}: no {method} within {wait:?}; received:\n{}",
                self.name,
                self.describe()
            ),
        }
    }

    /// Waits for a response to `cseq_method` with a code of at least `min_code`.
    pub async fn expect_response(
        &mut self,
        cseq_method: Method,
        min_code: u16,
        wait: Duration,
    ) -> Response {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Message::Response(r))
                    if r.method().as_ref() == Some(&cseq_method) && r.code >= min_code =>
                {
                    return r;
                }
                Some(_) => continue,
                None => panic!(
                    "{}: no response >= {min_code} to {cseq_method} within {wait:?}; received:\n{}",
                    self.name,
                    self.describe()
                ),
            }
        }
    }

    /// Registers this phone's contact for `user@domain` and waits for the 200.
    pub async fn register(&mut self, user: &str, domain: &str, user_agent: &str) {
        let register = Method::Other("REGISTER".into());
        let aor = format!("<sip:{user}@{domain}>");
        self.cseq += 1;
        let mut headers = Headers::new();
        headers.push("Via", self.via());
        headers.push("Max-Forwards", "70");
        headers.push("From", format!("{aor};tag={}", unique("r")));
        headers.push("To", aor);
        headers.push("Call-ID", unique("reg-"));
        headers.push("CSeq", format!("{} REGISTER", self.cseq));
        headers.push("Contact", self.contact(user));
        headers.push("Expires", "300");
        headers.push("User-Agent", user_agent);
        self.send(Request {
            method: register.clone(),
            uri: format!("sip:{domain}"),
            headers,
            body: Vec::new(),
        });
        let r = self
            .expect_response(register, 200, Duration::from_secs(5))
            .await;
        assert_eq!(
            r.code,
            200,
            "{}: REGISTER {user}@{domain}: {}",
            self.name,
            r.start_line()
        );
    }

    /// Sends an INVITE from `from` (a `sip:` URI) to `uri`, with `extra` headers.
    pub fn invite(&mut self, uri: &str, from: &str, extra: &[(&str, &str)]) -> Call {
        let call_id = unique("call-");
        self.cseq += 1;
        let user = addr_uri(from)
            .trim_start_matches("sip:")
            .split('@')
            .next()
            .unwrap_or("caller")
            .to_owned();
        let mut headers = Headers::new();
        headers.push("Via", self.via());
        headers.push("Max-Forwards", "70");
        headers.push("From", format!("<{from}>;tag={}", unique("f")));
        headers.push("To", format!("<{uri}>"));
        headers.push("Call-ID", call_id.clone());
        headers.push("CSeq", format!("{} INVITE", self.cseq));
        headers.push("Contact", self.contact(&user));
        headers.push("Content-Type", "application/sdp");
        for (n, v) in extra {
            headers.push(*n, *v);
        }
        let invite = Request {
            method: Method::Invite,
            uri: uri.to_owned(),
            headers,
            body: SDP.as_bytes().to_vec(),
        };
        self.send(invite.clone());
        Call {
            invite,
            call_id,
            answer: None,
        }
    }

    /// Waits for the final response of `call`; ACKs it (2xx end to end, others hop by hop).
    pub async fn final_response(&mut self, call: &mut Call, wait: Duration) -> Response {
        let deadline = Instant::now() + wait;
        let r = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.expect_response(Method::Invite, 200, left).await;
            if r.headers.call_id() == call.call_id {
                break r;
            }
        };
        let number = cseq_number(&call.invite.headers);
        if r.code < 300 {
            self.send(self.in_dialog(&r, Method::Ack, number));
            call.answer = Some(r.clone());
        } else {
            let mut ack = Headers::new();
            for h in ["Via", "From", "Call-ID", "Max-Forwards"] {
                if let Some(v) = call.invite.headers.get(h) {
                    ack.push(h, v);
                }
            }
            ack.push("To", r.headers.get("To").unwrap_or(""));
            ack.push("CSeq", format!("{number} ACK"));
            self.send(Request {
                method: Method::Ack,
                uri: call.invite.uri.clone(),
                headers: ack,
                body: Vec::new(),
            });
        }
        r
    }

    /// Waits until `branches` different branches (To tags) have rung back (18x).
    pub async fn expect_ringing(&mut self, branches: usize, wait: Duration) {
        let deadline = Instant::now() + wait;
        let mut tags = HashSet::new();
        while tags.len() < branches {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = self.expect_response(Method::Invite, 180, left).await;
            if r.code < 200 {
                tags.insert(r.headers.to_tag().unwrap_or("").to_owned());
            }
        }
    }

    /// CANCELs a pending INVITE (same branch, RFC 3261 §9.1).
    pub fn cancel(&self, call: &Call) {
        let mut headers = Headers::new();
        for h in ["Via", "From", "To", "Call-ID", "Max-Forwards"] {
            if let Some(v) = call.invite.headers.get(h) {
                headers.push(h, v);
            }
        }
        let number = cseq_number(&call.invite.headers);
        headers.push("CSeq", format!("{number} CANCEL"));
        self.send(Request {
            method: Method::Cancel,
            uri: call.invite.uri.clone(),
            headers,
            body: Vec::new(),
        });
    }

    /// An in-dialog request of the caller side, from a 2xx: Request-URI = the remote
    /// Contact, Route = the Record-Route set reversed.
    fn in_dialog(&self, answer: &Response, method: Method, cseq: u32) -> Request {
        let target = answer.headers.get("Contact").map(addr_uri).unwrap_or("");
        let mut headers = Headers::new();
        headers.push("Via", self.via());
        headers.push("Max-Forwards", "70");
        let routes: Vec<&str> = answer.headers.get_all("Record-Route").collect();
        for r in routes.into_iter().rev() {
            headers.push("Route", r);
        }
        for h in ["From", "To"] {
            headers.push(h, answer.headers.get(h).unwrap_or(""));
        }
        headers.push("Call-ID", answer.headers.call_id());
        headers.push("CSeq", format!("{cseq} {method}"));
        Request {
            method,
            uri: target.to_owned(),
            headers,
            body: Vec::new(),
        }
    }

    /// Hangs up an answered outgoing call and waits for the BYE's 200.
    pub async fn bye(&mut self, call: &Call) {
        let Some(answer) = &call.answer else { return };
        self.cseq += 1;
        let bye = self.in_dialog(answer, Method::Bye, self.cseq);
        self.send(bye);
        let r = self
            .expect_response(Method::Bye, 200, Duration::from_secs(5))
            .await;
        assert_eq!(
            r.code,
            200,
            "{}: BYE answered {}",
            self.name,
            r.start_line()
        );
    }

    // ---- the called side ----

    /// This phone's response to `request`: the headers RFC 3261 §8.2.6 copies, with the
    /// phone's name as To tag when the request's To has none.
    pub fn response_to(&self, request: &Request, code: u16, reason: &str) -> Response {
        let mut response = request.response(code, reason);
        if request.headers.to_tag().is_none()
            && let Some(to) = request.headers.get("To")
        {
            response
                .headers
                .set("To", format!("{to};tag={}", self.name));
        }
        response
    }

    /// Waits for an INVITE and rings (180): a CANCEL can only follow a provisional reply
    /// (RFC 3261 §9.1), so a phone that never rings cannot be cancelled.
    pub async fn expect_invite(&mut self, wait: Duration) -> Request {
        let invite = self.expect_request(Method::Invite, wait).await;
        self.ring(&invite);
        invite
    }

    /// Rings (180) for an incoming INVITE.
    pub fn ring(&self, invite: &Request) {
        self.send(self.response_to(invite, 180, "Ringing"));
    }

    /// Answers an incoming INVITE with 200 OK and an SDP answer.
    pub fn answer(&self, invite: &Request) {
        let mut r = self.response_to(invite, 200, "OK");
        r.headers.push("Contact", self.contact("uas"));
        r.headers.push("Content-Type", "application/sdp");
        r.body = SDP.as_bytes().to_vec();
        self.send(r);
    }

    pub fn reject(&self, invite: &Request, code: u16, reason: &str) {
        self.send(self.response_to(invite, code, reason));
    }

    /// Waits for a CANCEL of `invite`, answers it (200, then 487 to the INVITE) and
    /// returns it so the test can read its Reason header.
    pub async fn expect_cancel(&mut self, invite: &Request, wait: Duration) -> Request {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let c = self.expect_request(Method::Cancel, left).await;
            if c.headers.call_id() == invite.headers.call_id()
                && c.headers.top_branch() == invite.headers.top_branch()
            {
                self.send(self.response_to(&c, 200, "OK"));
                self.send(self.response_to(invite, 487, "Request Terminated"));
                return c;
            }
        }
    }

    /// Answers an in-dialog BYE that arrives within `wait`.
    pub async fn expect_bye(&mut self, wait: Duration) -> Request {
        let b = self.expect_request(Method::Bye, wait).await;
        self.send(self.response_to(&b, 200, "OK"));
        b
    }
}

fn cseq_number(headers: &Headers) -> u32 {
    headers.cseq().map_or(1, |c| c.number)
}
