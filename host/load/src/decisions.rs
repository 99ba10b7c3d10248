//! `cvw-load decisions`: the decision service alone, driven over JSON-RPC in netstrings as
//! janssonrpcc does (the tool connects), or over evapi as Kamailio does (the host connects
//! to the tool). It writes the route requests and times their answers; no SIP, no proxy.

use crate::measure::{Lat, thread_cpu};
use crate::service::ALICE;
use anyhow::{Context, bail};
use base64::Engine as _;
use cvw::decision::transport::netstring::{self, NetstringCodec};
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder as _;

/// The INVITE every decision load asks about.
fn load_invite(id: u64) -> String {
    format!(
        "INVITE {ALICE} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-{id}\r\n\
         From: \"Bob\" <sip:bob@corp.example>;tag={id}\r\nTo: <{ALICE}>\r\nCall-ID: load-{id}@cvw\r\n\
         CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:bob@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The route event the example config's `route[CVW]` sends over evapi.
fn route_event(id: u64) -> Vec<u8> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let event = format!(
        r#"{{"hook":"route","tindex":{},"tlabel":{},"source":"uc","contacts":[["{}","","{}",""],["{}","","{}",""]],"msg":"{}"}}"#,
        id & 0xffff_ffff,
        id >> 32,
        b64("sip:alice@127.0.0.1:5071"),
        b64("UC/1.0"),
        b64("sip:alice@127.0.0.1:5072;transport=tcp"),
        b64("UC-Mobile/1.0"),
        b64(&load_invite(id))
    );
    netstring::encode(event.as_bytes())
}

fn route_frame(id: u64) -> Vec<u8> {
    let invite = load_invite(id);
    let req = json!({
        "jsonrpc": "2.0", "id": id, "method": "route",
        "params": {
            "msg": base64::engine::general_purpose::STANDARD.encode(invite),
            "source": "uc",
            "contacts": [
                { "uri": "sip:alice@127.0.0.1:5071", "user_agent": "UC/1.0" },
                { "uri": "sip:alice@127.0.0.1:5072;transport=tcp", "user_agent": "UC-Mobile/1.0" }
            ]
        }
    });
    netstring::encode(req.to_string().as_bytes())
}

/// What the decision load speaks: janssonrpcc's JSON-RPC (the tool connects) or
/// Kamailio's evapi (the host connects to the tool).
pub enum Wire {
    JsonRpc(SocketAddr),
    Evapi(std::net::TcpListener),
}

pub async fn run(
    wire: Wire,
    seconds: u64,
    connections: usize,
    depth: usize,
    rate: Option<u64>,
) -> anyhow::Result<()> {
    let (svc0, all0) = thread_cpu("cvw-svc");
    let (gen0, _) = thread_cpu("cvw-load");
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    let connections = match wire {
        Wire::JsonRpc(addr) => {
            for c in 0..connections {
                let per_conn_rate = rate.map(|r| (r as f64 / connections as f64).max(1.0));
                let stream = TcpStream::connect(addr).await?;
                tasks.push(tokio::spawn(connection_load(
                    stream,
                    Frames::JsonRpc,
                    c as u64,
                    depth,
                    per_conn_rate,
                    until,
                )));
            }
            connections
        }
        Wire::Evapi(listener) => {
            let stream = evapi_host(listener).await?;
            let r = rate.map(|r| r as f64);
            tasks.push(tokio::spawn(connection_load(
                stream,
                Frames::Evapi,
                0,
                depth,
                r,
                until,
            )));
            1
        }
    };
    let mut lat = Lat::default();
    let mut errors = 0u64;
    for t in tasks {
        let (l, e) = t.await??;
        lat.0.extend(l.0);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (svc1, all1) = thread_cpu("cvw-svc");
    let (gen1, _) = thread_cpu("cvw-load");
    let n = lat.0.len() as f64;
    let host_cpu = (all1 - all0) - (gen1 - gen0);
    println!(
        "decision service: {:.0} decisions/s over {elapsed:.1} s ({} connections, {}), errors={errors}",
        n / elapsed,
        connections,
        match rate {
            Some(r) => format!("open loop at {r}/s"),
            None => format!("{depth} in flight each"),
        }
    );
    println!(
        "host CPU: {:.1} us/decision (service runtime threads {:.1} us/decision); generator {:.2} CPU-s",
        host_cpu / n * 1e6,
        (svc1 - svc0) / n * 1e6,
        gen1 - gen0
    );
    lat.report("round trip");
    Ok(())
}

/// Accepts the host's evapi connection and confirms it, as the example config does.
async fn evapi_host(listener: std::net::TcpListener) -> anyhow::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .context("the host did not connect to the evapi listener")??;
    let mut dec = BytesMut::new();
    let mut buf = vec![0u8; 4096];
    let hello = loop {
        if let Some(f) = NetstringCodec.decode(&mut dec)? {
            break f;
        }
        let n = stream.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "the host closed the evapi connection");
        dec.extend_from_slice(&buf[..n]);
    };
    let hello: serde_json::Value = serde_json::from_slice(&hello)?;
    let nonce = hello["hello"].as_str().context("no hello from the host")?;
    stream
        .write_all(&netstring::encode(format!("ready {nonce}").as_bytes()))
        .await?;
    Ok(stream)
}

/// The frames of a decision load and how a good answer looks.
#[derive(Clone, Copy)]
enum Frames {
    JsonRpc,
    Evapi,
}

impl Frames {
    fn request(self, id: u64) -> Vec<u8> {
        match self {
            Frames::JsonRpc => route_frame(id),
            Frames::Evapi => route_event(id),
        }
    }

    fn decided(self, answer: &[u8]) -> bool {
        match self {
            Frames::JsonRpc => answer.windows(9).any(|w| w == b"\"result\":"),
            // A fork, parallel (P) or serial (S); E would be an error answer.
            Frames::Evapi => matches!(answer.get(25), Some(b'P' | b'S')),
        }
    }
}

async fn connection_load(
    stream: TcpStream,
    frames: Frames,
    conn: u64,
    depth: usize,
    rate: Option<f64>,
    until: Instant,
) -> anyhow::Result<(Lat, u64)> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let (credit_tx, mut credit_rx) = tokio::sync::mpsc::channel::<()>(depth.max(1));
    // Frames are answered in order on one connection: a FIFO of send times is enough.
    let writer = tokio::spawn(async move {
        let mut id = conn << 40;
        let mut tick = rate.map(|r| {
            let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            i
        });
        while Instant::now() < until {
            match tick.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => {
                    if credit_tx.send(()).await.is_err() {
                        break;
                    }
                }
            }
            id += 1;
            let frame = frames.request(id);
            if sent_tx.send(Instant::now()).is_err() || wr.write_all(&frame).await.is_err() {
                break;
            }
        }
        drop(sent_tx);
        anyhow::Ok(wr)
    });
    let mut lat = Lat::default();
    let mut errors = 0;
    let mut dec = BytesMut::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    let mut writer_done = false;
    loop {
        if writer_done && pending.is_empty() {
            break;
        }
        let n = tokio::select! {
            biased;
            t = sent_rx.recv(), if !writer_done => {
                match t { Some(t) => pending.push_back(t), None => writer_done = true }
                continue;
            }
            n = rd.read(&mut buf) => n?,
            () = tokio::time::sleep(Duration::from_secs(5)) => bail!("connection {conn}: no answer for 5 s"),
        };
        if n == 0 {
            bail!("connection {conn}: service closed");
        }
        dec.extend_from_slice(&buf[..n]);
        while let Some(frame) = NetstringCodec.decode(&mut dec)? {
            // The send time is queued before the frame is written, so it is always here.
            while pending.is_empty() {
                match sent_rx.recv().await {
                    Some(t) => pending.push_back(t),
                    None => bail!("connection {conn}: answer without a request"),
                }
            }
            if let Some(t) = pending.pop_front() {
                lat.push(t.elapsed());
            }
            if !frames.decided(&frame) {
                errors += 1;
            }
            let _ = credit_rx.try_recv();
        }
    }
    let _ = writer.await;
    Ok((lat, errors))
}
