//! The scripted phones of `cvw-load originate`: a desk phone and a callee phone on a
//! `cvw-sip` user agent of their own, answering everything at once. `cvw-load phones` runs
//! them in a child process ([`serve`]); [`PhonesChild`] starts and ends that process for
//! the tool. They measure nothing: the tool reads their process's CPU and memory.

use anyhow::{Context, bail};
use cvw_sip::message::Method;
use cvw_sip::transport::Protocol;
use cvw_sip::ua::{Body, IncomingCall, LegEvent, UaConfig, UserAgent};
use std::io::{BufRead, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use tokio::sync::mpsc;

/// The desk phone (callback leg: Flow IV's offer without m= lines, then the callee's
/// offer in a re-INVITE) and the callee phone (INVITE without SDP): each rings (180)
/// and answers at once, answers re-INVITEs and BYEs. Prints their addresses on one line
/// and runs until stdin closes.
pub async fn serve() -> anyhow::Result<()> {
    let (desk, desk_calls) = UserAgent::bind(UaConfig::default()).await?;
    let (callee, callee_calls) = UserAgent::bind(UaConfig::default()).await?;
    tokio::spawn(answer_all(desk_calls, 41_000));
    tokio::spawn(answer_all(callee_calls, 42_000));
    println!(
        "{} {}",
        desk.local_addr(Protocol::Udp),
        callee.local_addr(Protocol::Udp)
    );
    tokio::task::spawn_blocking(|| {
        let mut buf = [0u8; 64];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
    })
    .await?;
    drop((desk, callee));
    Ok(())
}

async fn answer_all(mut calls: mpsc::UnboundedReceiver<IncomingCall>, media_port: u16) {
    while let Some(call) = calls.recv().await {
        tokio::spawn(answer(call, media_port));
    }
}

async fn answer(call: IncomingCall, media_port: u16) {
    let IncomingCall { mut leg, invite } = call;
    let _ = leg.respond(&invite, 180, "Ringing", None);
    let sdp = phone_sdp(Some(&invite.request.body), media_port);
    let _ = leg.respond(&invite, 200, "OK", Some(Body::sdp(sdp)));
    drop(invite);
    while let Some(event) = leg.next().await {
        let LegEvent::Request(r) = event else {
            continue;
        };
        if std::env::var_os("CVW_LOAD_TRACE").is_some() {
            eprintln!(
                "phone {media_port}: {} {:?} in call {} ({} body bytes)",
                r.request.method.as_str(),
                r.request.headers.get("CSeq"),
                r.request.headers.call_id(),
                r.request.body.len()
            );
        }
        match r.request.method {
            Method::Bye => {
                let _ = leg.respond(&r, 200, "OK", None);
                return;
            }
            // The host's re-INVITE with the callee's offer (Flow IV). An INVITE
            // retransmitted after our 2xx no longer gets here: cvw-sip's transaction
            // layer absorbs it (RFC 6026 Accepted) and our 2xx is resent instead.
            Method::Invite => {
                let sdp = phone_sdp(Some(&r.request.body), media_port);
                let _ = leg.respond(&r, 200, "OK", Some(Body::sdp(sdp)));
            }
            Method::Update if !r.request.body.is_empty() => {
                let sdp = phone_sdp(Some(&r.request.body), media_port);
                let _ = leg.respond(&r, 200, "OK", Some(Body::sdp(sdp)));
            }
            _ => {
                let _ = leg.respond(&r, 200, "OK", None);
            }
        }
    }
}

/// An answer with one stream per offered m= line (none for Flow IV's first offer), or
/// this phone's own offer when the INVITE had no SDP.
fn phone_sdp(offer: Option<&[u8]>, port: u16) -> Vec<u8> {
    let mut out = format!(
        "v=0\r\no=phone {port} 1 IN IP4 127.0.0.1\r\ns=phone\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    );
    let offered: Vec<String> = match offer.filter(|o| !o.is_empty()) {
        Some(o) => String::from_utf8_lossy(o)
            .lines()
            .filter_map(|l| l.strip_prefix("m=").map(str::to_owned))
            .collect(),
        None => vec!["audio 0 RTP/AVP 0 101".to_owned()],
    };
    for (i, media) in offered.iter().enumerate() {
        let mut fields = media.split(' ');
        let kind = fields.next().unwrap_or("audio");
        let rest: Vec<&str> = fields.skip(1).collect();
        let stream_port = port + 2 * i as u16;
        out.push_str(&format!("m={kind} {stream_port} {}\r\n", rest.join(" ")));
    }
    out.into_bytes()
}

/// The phones' child process; killed when dropped.
pub struct PhonesChild {
    child: Child,
    pub desk: SocketAddr,
    pub callee: SocketAddr,
}

impl PhonesChild {
    pub fn start() -> anyhow::Result<PhonesChild> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("phones")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the phones' child process")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("phones: no stdout")?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let mut addrs = line.split_whitespace().map(str::parse::<SocketAddr>);
        let (Some(Ok(desk)), Some(Ok(callee))) = (addrs.next(), addrs.next()) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("phones: expected two addresses, got {line:?}");
        };
        Ok(PhonesChild {
            child,
            desk,
            callee,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for PhonesChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
