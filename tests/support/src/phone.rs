//! SIP test phones: user agents on loopback that register, ring, answer, cancel and hang
//! up, over UDP or TCP, and keep every message they received so tests can check the wire.
//! Waits are bounded: a phone that hears nothing in time fails the test with its log.

#![allow(dead_code)]

use super::sip::{Msg, addr_uri, param};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn via(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// A unique token for tags, branches and Call-IDs.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

const SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";

/// An outgoing call: what is needed for ACK, CANCEL and BYE.
#[derive(Debug, Clone)]
pub struct Call {
    pub invite: Msg,
    pub call_id: String,
    pub answer: Option<Msg>,
}

pub struct Phone {
    pub name: String,
    pub transport: Transport,
    pub local: SocketAddr,
    proxy: SocketAddr,
    out: mpsc::UnboundedSender<Vec<u8>>,
    inbox: mpsc::UnboundedReceiver<Msg>,
    /// Everything received, in order.
    pub log: Vec<Msg>,
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
                if let Some(m) = Msg::parse(&buf[..n])
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
        Phone {
            name: name.into(),
            transport: Transport::Udp,
            local,
            proxy,
            out,
            inbox,
            log: Vec::new(),
            cseq: 1,
        }
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
                while let Some(len) = Msg::frame_len(&buf) {
                    let frame: Vec<u8> = buf.drain(..len).collect();
                    if let Some(m) = Msg::parse(&frame)
                        && in_tx.send(m).is_err()
                    {
                        return;
                    }
                }
                // Keep-alive CRLFs between messages.
                while buf.starts_with(b"\r\n") {
                    buf.drain(..2);
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
        Phone {
            name: name.into(),
            transport: Transport::Tcp,
            local,
            proxy,
            out,
            inbox,
            log: Vec::new(),
            cseq: 1,
        }
    }

    pub fn send(&self, m: &Msg) {
        let _ = self.out.send(m.to_bytes());
    }

    fn via(&self) -> String {
        format!(
            "SIP/2.0/{} {};branch={};rport",
            self.transport.via(),
            self.local,
            unique("z9hG4bK")
        )
    }

    pub fn contact(&self, user: &str) -> String {
        match self.transport {
            Transport::Udp => format!("<sip:{user}@{}>", self.local),
            Transport::Tcp => format!("<sip:{user}@{};transport=tcp>", self.local),
        }
    }

    /// The next message within `wait`, or `None`.
    pub async fn next(&mut self, wait: Duration) -> Option<Msg> {
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
            .map(|m| format!("  {} ({})\n", m.start, m.call_id()))
            .collect()
    }

    /// Waits for a request with `method`, answering anything else sensibly on the way.
    pub async fn expect_request(&mut self, method: &str, wait: Duration) -> Msg {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(m) if m.is_request() && m.method() == method => return m,
                Some(_) => continue,
                None => panic!(
                    "{}: no {method} within {wait:?}; received:\n{}",
                    self.name,
                    self.describe()
                ),
            }
        }
    }

    /// True if a request with `method` arrives within `wait`.
    pub async fn gets_request(&mut self, method: &str, wait: Duration) -> Option<Msg> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(m) if m.is_request() && m.method() == method => return Some(m),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// Waits for a response to `cseq_method` with a code of at least `min_code`.
    pub async fn expect_response(
        &mut self,
        cseq_method: &str,
        min_code: u16,
        wait: Duration,
    ) -> Msg {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(m)
                    if !m.is_request()
                        && m.cseq_method() == cseq_method
                        && m.code() >= min_code =>
                {
                    return m;
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

    pub async fn register(&mut self, user: &str, domain: &str, user_agent: &str) {
        let mut m = Msg::request("REGISTER", &format!("sip:{domain}"));
        let aor = format!("<sip:{user}@{domain}>");
        self.cseq += 1;
        m.push("Via", self.via())
            .push("Max-Forwards", "70")
            .push("From", format!("{aor};tag={}", unique("r")))
            .push("To", aor)
            .push("Call-ID", unique("reg-"))
            .push("CSeq", format!("{} REGISTER", self.cseq))
            .push("Contact", self.contact(user))
            .push("Expires", "300")
            .push("User-Agent", user_agent);
        self.send(&m);
        let r = self
            .expect_response("REGISTER", 200, Duration::from_secs(5))
            .await;
        assert_eq!(
            r.code(),
            200,
            "{}: REGISTER {user}@{domain}: {}",
            self.name,
            r.start
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
        let mut m = Msg::request("INVITE", uri);
        m.push("Via", self.via())
            .push("Max-Forwards", "70")
            .push("From", format!("<{from}>;tag={}", unique("f")))
            .push("To", format!("<{uri}>"))
            .push("Call-ID", call_id.clone())
            .push("CSeq", format!("{} INVITE", self.cseq))
            .push("Contact", self.contact(&user))
            .push("Content-Type", "application/sdp");
        for (n, v) in extra {
            m.push(n, *v);
        }
        m.body = SDP.as_bytes().to_vec();
        self.send(&m);
        Call {
            invite: m,
            call_id,
            answer: None,
        }
    }

    /// Waits for the final response of `call`; ACKs it (2xx end to end, others hop by hop).
    pub async fn final_response(&mut self, call: &mut Call, wait: Duration) -> Msg {
        let deadline = tokio::time::Instant::now() + wait;
        let r = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let r = self.expect_response("INVITE", 200, left).await;
            if r.call_id() == call.call_id {
                break r;
            }
        };
        if r.code() < 300 {
            self.send(
                &self.in_dialog(
                    &r,
                    "ACK",
                    r.header("CSeq")
                        .and_then(|c| c.split(' ').next())
                        .unwrap_or("1"),
                ),
            );
            call.answer = Some(r.clone());
        } else {
            let mut ack = Msg::request("ACK", call.invite.uri());
            for h in ["Via", "From", "Call-ID", "Max-Forwards"] {
                if let Some(v) = call.invite.header(h) {
                    ack.push(h, v);
                }
            }
            ack.push("To", r.header("To").unwrap_or(""));
            let n = call
                .invite
                .header("CSeq")
                .and_then(|c| c.split(' ').next())
                .unwrap_or("1");
            ack.push("CSeq", format!("{n} ACK"));
            self.send(&ack);
        }
        r
    }

    /// Waits until `branches` different branches (To tags) have rung back (18x).
    pub async fn expect_ringing(&mut self, branches: usize, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        let mut tags = std::collections::HashSet::new();
        while tags.len() < branches {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let r = self.expect_response("INVITE", 180, left).await;
            if r.code() < 200 {
                tags.insert(
                    param(r.header("To").unwrap_or(""), "tag")
                        .unwrap_or("")
                        .to_owned(),
                );
            }
        }
    }

    /// CANCELs a pending INVITE (same branch, RFC 3261 §9.1).
    pub fn cancel(&self, call: &Call) {
        let mut c = Msg::request("CANCEL", call.invite.uri());
        for h in ["Via", "From", "To", "Call-ID", "Max-Forwards"] {
            if let Some(v) = call.invite.header(h) {
                c.push(h, v);
            }
        }
        let n = call
            .invite
            .header("CSeq")
            .and_then(|c| c.split(' ').next())
            .unwrap_or("1");
        c.push("CSeq", format!("{n} CANCEL"));
        self.send(&c);
    }

    /// An in-dialog request of the caller side, from a 2xx: Request-URI = the remote
    /// Contact, Route = the Record-Route set reversed.
    fn in_dialog(&self, answer: &Msg, method: &str, cseq: &str) -> Msg {
        let target = answer
            .header("Contact")
            .map(addr_uri)
            .unwrap_or("")
            .to_owned();
        let mut m = Msg::request(method, &target);
        m.push("Via", self.via()).push("Max-Forwards", "70");
        let mut routes: Vec<&str> = answer
            .all("Record-Route")
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        routes.reverse();
        for r in routes {
            m.push("Route", r);
        }
        m.push("From", answer.header("From").unwrap_or(""))
            .push("To", answer.header("To").unwrap_or(""))
            .push("Call-ID", answer.call_id())
            .push("CSeq", format!("{cseq} {method}"));
        m
    }

    /// Hangs up an answered outgoing call and waits for the BYE's 200.
    pub async fn bye(&mut self, call: &Call) {
        let Some(answer) = &call.answer else { return };
        self.cseq += 1;
        let bye = self.in_dialog(answer, "BYE", &self.cseq.to_string());
        self.send(&bye);
        let r = self
            .expect_response("BYE", 200, Duration::from_secs(5))
            .await;
        assert_eq!(r.code(), 200, "{}: BYE answered {}", self.name, r.start);
    }

    // ---- the called side ----

    /// Waits for an INVITE and rings (180): a CANCEL can only follow a provisional reply
    /// (RFC 3261 §9.1), so a phone that never rings cannot be cancelled. The phone's name
    /// is its To tag.
    pub async fn expect_invite(&mut self, wait: Duration) -> Msg {
        let invite = self.expect_request("INVITE", wait).await;
        self.ring(&invite);
        invite
    }

    /// Rings (180) for an incoming INVITE.
    pub fn ring(&self, invite: &Msg) {
        self.send(&invite.response(180, "Ringing", Some(&self.name)));
    }

    /// Answers an incoming INVITE with 200 OK and an SDP answer.
    pub fn answer(&self, invite: &Msg) {
        let mut r = invite.response(200, "OK", Some(&self.name));
        r.push("Contact", self.contact("uas"))
            .push("Content-Type", "application/sdp");
        r.body = SDP.as_bytes().to_vec();
        self.send(&r);
    }

    pub fn reject(&self, invite: &Msg, code: u16, reason: &str) {
        self.send(&invite.response(code, reason, Some(&self.name)));
    }

    /// Waits for a CANCEL of `invite`, answers it (200, then 487 to the INVITE) and
    /// returns it so the test can read its Reason header.
    pub async fn expect_cancel(&mut self, invite: &Msg, wait: Duration) -> Msg {
        let tag = self.name.clone();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let c = self.expect_request("CANCEL", left).await;
            if c.call_id() == invite.call_id()
                && param(c.header("Via").unwrap_or(""), "branch")
                    == param(invite.header("Via").unwrap_or(""), "branch")
            {
                self.send(&c.response(200, "OK", Some(&tag)));
                self.send(&invite.response(487, "Request Terminated", Some(&tag)));
                return c;
            }
        }
    }

    /// Answers an in-dialog BYE that arrives within `wait`.
    pub async fn expect_bye(&mut self, wait: Duration) -> Msg {
        let b = self.expect_request("BYE", wait).await;
        self.send(&b.response(200, "OK", None));
        b
    }
}
