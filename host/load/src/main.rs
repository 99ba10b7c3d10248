//! `cvw-load`: load figures for the decision service and for Kamailio with Call via Work
//! (SIP over loopback). A measuring tool, not a test: it prints what it measured.
//!
//! - `cvw-load decisions`: JSON-RPC decisions/s against the in-process decision service
//!   (its own 2-thread runtime, the generator on another thread), latency percentiles,
//!   and host CPU per decision; `--rate` for latency at a fixed offered load.
//! - `cvw-load sip`: calls/s of a two-branch simultaneous ring through a real Kamailio,
//!   once with the cvw decision and once with the same fork written statically in the
//!   config, in one run; Kamailio and host CPU per call.
//! - `cvw-load originate`: two-leg click-to-call setups (RFC 3725 Flow IV) through the
//!   host's own SIP user agent (`SipOriginator` over `cvw-sip`), to a scripted desk phone
//!   and callee phone that run in a child process of the tool (`cvw-load phones`), so the
//!   host's memory and CPU are this process's alone. Setups/s (open or closed loop), failed
//!   calls, host memory per connected call and host CPU per call; `--kamailio` puts a
//!   real Kamailio in between as the host's outbound proxy.

use cvw_testkit::{kamailio, sip};

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use cvw::decision::transport::netstring::{self, NetstringCodec};
use cvw::decision::{DecisionService, Running};
use cvw::directory::Directory;
use cvw::policy::{PolicyHost, RuntimeSettings, builtin};
use serde_json::json;
use sip::Msg;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder as _;

/// Counts live heap bytes, for `originate`'s memory per call: RSS also holds the
/// allocator's free lists and per-thread arenas, so both are reported.
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    pub struct Counting;

    static LIVE: AtomicUsize = AtomicUsize::new(0);

    /// Bytes allocated and not freed, as requested (without the allocator's overhead).
    pub fn live() -> usize {
        LIVE.load(Relaxed)
    }

    // SAFETY: every call is forwarded to `System` unchanged; only a counter is added.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract is System's.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                LIVE.fetch_add(layout.size(), Relaxed);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as above.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                LIVE.fetch_add(layout.size(), Relaxed);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as above.
            unsafe { System.dealloc(ptr, layout) };
            LIVE.fetch_sub(layout.size(), Relaxed);
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: as above.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                LIVE.fetch_add(new_size, Relaxed);
                LIVE.fetch_sub(layout.size(), Relaxed);
            }
            p
        }
    }
}

#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

#[derive(Parser)]
#[command(about = "Load figures for the cvw decision service and Kamailio with Call via Work")]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Decision service alone: JSON-RPC `route` calls over netstring TCP connections.
    Decisions {
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// TCP connections (janssonrpcc opens one per server by default).
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Requests in flight per connection (closed loop); ignored with --rate.
        #[arg(long, default_value_t = 32)]
        depth: usize,
        /// Offered load in decisions/s (open loop), to read latency at that rate.
        #[arg(long)]
        rate: Option<u64>,
        /// Play Kamailio's evapi instead of janssonrpcc: the host connects to the load
        /// tool, which sends route events (one connection, as with one Kamailio).
        #[arg(long)]
        evapi: bool,
    },
    /// Two-branch simultaneous ring through Kamailio: cvw decision vs static fork.
    Sip {
        /// Seconds per variant.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Calls in flight.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// Kamailio SIP worker processes.
        #[arg(long, default_value_t = 4)]
        children: u32,
        /// Decide over JSON-RPC (janssonrpcc) instead of evapi, the config's default.
        #[arg(long)]
        janssonrpcc: bool,
        /// Start calls at this rate (open loop, for latency) instead of keeping
        /// `--concurrency` in flight.
        #[arg(long)]
        rate: Option<u32>,
        /// Rounds of all variants in turn; the medians of the rounds are reported.
        #[arg(long, default_value_t = 1)]
        rounds: u32,
    },
    /// Two-leg call setups through the host's SIP user agent to phones in a child process.
    Originate {
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Offered setups/s (open loop); without it, closed loop with --concurrency.
        #[arg(long)]
        rate: Option<u64>,
        /// Calls in flight in the closed loop.
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        /// Calls held connected at once for the memory figure, before the load (0: skip).
        #[arg(long, default_value_t = 2000)]
        hold: usize,
        /// Through a real Kamailio (examples/kamailio/kamailio.cfg, with the decision
        /// service in this process) as outbound proxy, instead of straight to the phones.
        #[arg(long)]
        kamailio: bool,
        /// Hold the calls of the memory figure through the click-to-call HTTP API (the
        /// default policy plans them) instead of handing plans to the originator.
        #[arg(long)]
        api: bool,
    },
    /// The scripted desk and callee phones of `originate` (run by it as a child process).
    #[command(hide = true)]
    Phones,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let service_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cvw-svc")
        .enable_all()
        .build()?;
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("cvw-load")
        .enable_all()
        .build()?;
    let tmp = std::env::temp_dir().join(format!("cvw-load-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = match args.mode {
        Mode::Decisions {
            seconds,
            connections,
            depth,
            rate,
            evapi,
        } => {
            let (host, mut service) =
                service_rt.block_on(start_service(&tmp, "127.0.0.1:5090".parse()?))?;
            let wire = if evapi {
                let kamailio = std::net::TcpListener::bind("127.0.0.1:0")?;
                let addr = kamailio.local_addr()?;
                let _in_service_rt = service_rt.enter();
                let _status = service.connect_evapi(addr);
                Wire::Evapi(kamailio)
            } else {
                Wire::JsonRpc(service.jsonrpc)
            };
            let r = load_rt.block_on(decisions(wire, seconds, connections, depth, rate));
            report_metrics(&host);
            service_rt.block_on(service.stop());
            r
        }
        Mode::Sip {
            seconds,
            concurrency,
            children,
            janssonrpcc,
            rate,
            rounds,
        } => sip_run(
            &service_rt,
            &load_rt,
            &tmp,
            &SipOptions {
                seconds,
                pace: rate.map_or(Pace::InFlight(concurrency), Pace::Rate),
                children,
                janssonrpcc,
                rounds,
            },
        ),
        Mode::Originate {
            seconds,
            rate,
            concurrency,
            hold,
            kamailio,
            api,
        } => originate::run(
            &service_rt,
            &load_rt,
            &originate::Options {
                seconds,
                rate,
                concurrency,
                hold,
                kamailio: kamailio.then_some(tmp.as_path()),
                api: api.then_some(tmp.as_path()),
            },
        ),
        Mode::Phones => service_rt.block_on(originate::phones()),
    };
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn report_metrics(host: &PolicyHost) {
    let m = host.metrics();
    println!(
        "policy metrics: decisions={} failures={}",
        m.decisions,
        m.total_failures()
    );
}

const ALICE: &str = "sip:alice@corp.example";
const DESK: &str = "+14255550101";

/// The default policy published with a directory of Alice alone, her PBX trunk and
/// domain as given (written to `tmp/file`).
fn alice_policy(
    tmp: &std::path::Path,
    file: &str,
    pbx_trunk: SocketAddr,
    pbx_domain: &str,
) -> anyhow::Result<PolicyHost> {
    let dir = tmp.join(file);
    std::fs::write(
        &dir,
        format!(
            r#"[policy.config]
global_caller_id = "+14255550000"
pbx_trunk = "sip:{pbx_trunk}"
pbx_domain = "{pbx_domain}"
desk_ring_timeout_ms = 15000
pbx_voicemail_timeout_ms = 20000

[policies.global]
enabled = true

[[users]]
uc_address = "{ALICE}"
display_name = "Alice Smith"
line_uri = "tel:{DESK}"
"#
        ),
    )?;
    let host = PolicyHost::new(RuntimeSettings::default())?;
    let wasm = builtin::default_policy().context("default policy not built")?;
    host.publish(
        wasm,
        builtin::DEFAULT_ORIGIN,
        Arc::new(Directory::load(&dir)?),
    )?;
    Ok(host)
}

async fn start_service(
    tmp: &std::path::Path,
    pbx: SocketAddr,
) -> anyhow::Result<(PolicyHost, Running)> {
    let host = alice_policy(tmp, "directory.toml", pbx, "pbx.corp.example")?;
    let service = DecisionService::new(Arc::new(host.clone()))
        .start("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?)
        .await?;
    Ok((host, service))
}

// ---------------------------------------------------------------- CPU accounting

/// CPU seconds used so far by this process's threads, split by thread-name prefix.
fn thread_cpu(prefix: &str) -> (f64, f64) {
    let (mut matching, mut total) = (0u64, 0u64);
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
                continue;
            };
            let Some((comm, ticks)) = parse_stat(&stat) else {
                continue;
            };
            total += ticks;
            if comm.starts_with(prefix) {
                matching += ticks;
            }
        }
    }
    (ticks_to_s(matching), ticks_to_s(total))
}

fn process_cpu(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| parse_stat(&s).map(|(_, t)| t))
        .sum();
    ticks_to_s(ticks)
}

/// `(comm, utime + stime)` of a /proc stat line.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // Fields after the comm start at "state" (field 3): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// USER_HZ is 100 on every Linux this runs on.
fn ticks_to_s(t: u64) -> f64 {
    t as f64 / 100.0
}

// ---------------------------------------------------------------- decisions

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

#[derive(Default)]
struct Lat(Vec<u32>);

impl Lat {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_micros().min(u128::from(u32::MAX)) as u32);
    }
    fn report(&mut self, what: &str) {
        self.0.sort_unstable();
        let n = self.0.len();
        if n == 0 {
            println!("{what}: no samples");
            return;
        }
        let p = |q: f64| self.0[((n as f64 * q) as usize).min(n - 1)];
        println!(
            "{what}: n={n} p50={}us p90={}us p99={}us p99.9={}us max={}us",
            p(0.5),
            p(0.9),
            p(0.99),
            p(0.999),
            self.0[n - 1]
        );
    }
}

/// What the decision load speaks: janssonrpcc's JSON-RPC (the tool connects) or
/// Kamailio's evapi (the host connects to the tool).
enum Wire {
    JsonRpc(SocketAddr),
    Evapi(std::net::TcpListener),
}

async fn decisions(
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

// ---------------------------------------------------------------- SIP through Kamailio

/// The baselines: the same two-branch fork (desk via the trunk + Alice's registration),
/// written in the config, for Request-URIs starting with `static-`; `timed-static-` also
/// gives the desk branch its own ring timeout (CVW-51) the only way tm allows, the second
/// pass through the proxy the shipped config uses.
fn add_static_fork(cfg: String) -> String {
    // Analysis only: what the per-branch ring timeout (CVW-51, a second pass through the
    // proxy) costs, by turning it off.
    let cfg = if std::env::var_os("CVW_LOAD_NO_RING_TIMEOUT").is_some() {
        cfg.replace("if ($(var(r){s.select,3,.}) != \"\") {", "if (0) {")
    } else {
        cfg
    };
    let cfg = cfg.replacen(
        "\tif (is_method(\"INVITE\")) {\n\t\troute(CVW);",
        "\tif (is_method(\"INVITE\") && $rU =~ \"^(timed-)?static-\") {\n\t\troute(STATIC_FORK);\n\t\texit;\n\t}\n\tif (is_method(\"INVITE\")) {\n\t\troute(CVW);",
        1,
    );
    cfg + r#"
route[STATIC_FORK] {
	$var(st_timed) = 0;
	if ($rU =~ "^timed-") $var(st_timed) = 1;
	$ru = "sip:alice@" + $rd;
	if (!lookup("location")) { sl_send_reply("404", "Not Found"); exit; }
	append_branch("sip:+14255550101@pbx.corp.example;user=phone");
	t_on_branch("STATIC_BRANCH");
	if (!t_relay()) sl_reply_error();
	exit;
}

branch_route[STATIC_BRANCH] {
	if ($rU == "+14255550101") {
		$du = "CVW_PBX_TRUNK";
		append_hf("X-CVW-Leg: desk\r\n");
		if ($var(st_timed) == 1) {
			append_hf("X-CVW-Ring-Timeout: 15000\r\n");
			append_hf("X-CVW-Next-Hop: $du\r\n");
			$du = "sip:CVW_SIP_IP:CVW_SIP_PORT";
		}
	}
}
"#
}

/// A UAS that answers every INVITE at once with 486 (like the reference measurement) and
/// ignores everything else.
async fn busy_uas(sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65536];
    while let Ok((n, from)) = sock.recv_from(&mut buf).await {
        let Some(m) = Msg::parse(&buf[..n]) else {
            continue;
        };
        if std::env::var_os("CVW_LOAD_TRACE").is_some() {
            eprintln!(
                "uas {} <- {} ({}) from {from}",
                sock.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                m.start,
                m.call_id()
            );
        }
        if m.is_request() && m.method() == "INVITE" {
            let r = m.response(486, "Busy Here", Some("uas"));
            let _ = sock.send_to(&r.to_bytes(), from).await;
        }
    }
}

struct SipOptions {
    seconds: u64,
    pace: Pace,
    children: u32,
    janssonrpcc: bool,
    rounds: u32,
}

fn sip_run(
    service_rt: &tokio::runtime::Runtime,
    load_rt: &tokio::runtime::Runtime,
    tmp: &std::path::Path,
    o: &SipOptions,
) -> anyhow::Result<()> {
    let SipOptions {
        seconds,
        pace,
        children,
        janssonrpcc,
        rounds,
    } = *o;
    let pbx = load_rt.block_on(UdpSocket::bind("127.0.0.1:0"))?;
    let pbx_addr = pbx.local_addr()?;
    let (host, mut service) = service_rt.block_on(start_service(tmp, pbx_addr))?;
    let kam = kamailio::Kamailio::start(&kamailio::Setup {
        host_jsonrpc: service.jsonrpc,
        host_http: service.http,
        pbx: pbx_addr,
        host_ua: "127.0.0.1:9".parse()?,
        decision_timeout_ms: 1000,
        extra: vec![("CVW_CHILDREN".into(), children.to_string())],
        transform: Some(add_static_fork),
        // ~20 KB per two-branch INVITE transaction, kept for the 5 s wait timer after it
        // ends; at 5 000 calls/s (and a second transaction per timed branch) that is
        // about 1 GB. Less, and tm runs out of memory mid-run and calls are lost.
        shm_mb: 3072,
        janssonrpcc,
    })?;
    if !janssonrpcc {
        service_rt.block_on(kam.connect_host(&mut service))?;
    }
    let transport = if janssonrpcc { "janssonrpcc" } else { "evapi" };
    let load = match pace {
        Pace::InFlight(n) => format!("{n} calls in flight"),
        Pace::Rate(r) => format!("{r} calls/s started (open loop)"),
    };
    println!(
        "kamailio {} with {children} workers; {load}; {seconds} s per variant",
        kam.sip
    );
    let r = load_rt.block_on(async {
        let pbx = Arc::new(pbx);
        tokio::spawn(busy_uas(pbx));
        let client = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        register(&client, kam.sip).await?;
        tokio::spawn(busy_uas(client));
        let variants = [
            ("static fork in kamailio.cfg", "sip:static-alice@corp.example"),
            (
                "static fork + desk ring timeout (CVW-51) in kamailio.cfg",
                "sip:timed-static-alice@corp.example",
            ),
            (&format!("cvw decision ({transport})"), ALICE),
        ];
        // A fresh Kamailio's shared memory is one big free block that every allocation
        // splits; once calls have come and gone, most allocations find a free block of
        // their size. Unwarmed, the first variant measured ran up to a third slower than
        // the same variant in later rounds, so every variant runs once, unmeasured, first.
        for (_, ruri) in variants {
            calls(kam.sip, ruri, pace, Duration::from_secs(3)).await?;
        }
        // Rounds of all variants in turn: a machine that slows down for a while slows
        // every variant of a round alike, and the medians of the rounds say the rest.
        let mut ratios: Vec<(f64, f64)> = Vec::new();
        for round in 1..=rounds {
            if rounds > 1 {
                println!("round {round} of {rounds}");
            }
            let mut rates = Vec::new();
            for (name, ruri) in variants {
                rates.push(variant(&kam, name, ruri, pace, seconds).await?);
            }
            if let [plain, timed, cvw] = rates[..] {
                println!(
                    "cvw / static = {:.0} %; cvw / static with the same desk ring timeout = {:.0} %",
                    cvw / plain * 100.0,
                    cvw / timed * 100.0
                );
                ratios.push((cvw / plain, cvw / timed));
            }
        }
        let oom = kam.log().matches("could not allocate shared memory").count();
        if oom > 0 {
            println!("WARNING: Kamailio ran out of shared memory {oom} times: these figures are not valid");
        }
        if ratios.len() > 1 {
            let median = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2] * 100.0
            };
            println!(
                "median of {} rounds: cvw / static = {:.0} %; cvw / static with the same desk ring timeout = {:.0} %",
                ratios.len(),
                median(ratios.iter().map(|r| r.0).collect()),
                median(ratios.iter().map(|r| r.1).collect())
            );
        }
        anyhow::Ok(())
    });
    report_metrics(&host);
    drop(kam);
    service_rt.block_on(service.stop());
    r
}

/// One variant of the SIP load: calls/s, printed with Kamailio's and the host's CPU per
/// call and the latency.
async fn variant(
    kam: &kamailio::Kamailio,
    name: &str,
    ruri: &str,
    pace: Pace,
    seconds: u64,
) -> anyhow::Result<f64> {
    // Let the previous variant's transactions leave memory (tm's 5 s wait timer).
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Warm up (connections, caches), then measure.
    let _ = calls(kam.sip, ruri, pace, Duration::from_secs(1)).await?;
    let pids = kam.pids();
    let per0: Vec<f64> = pids.iter().map(|p| process_cpu(&[*p])).collect();
    let k0 = process_cpu(&pids);
    let (h0, _) = thread_cpu("cvw-svc");
    let (rate, mut lat, failed, n) =
        calls(kam.sip, ruri, pace, Duration::from_secs(seconds)).await?;
    let k1 = process_cpu(&pids);
    let (h1, _) = thread_cpu("cvw-svc");
    if std::env::var_os("CVW_LOAD_TRACE").is_some() {
        let per: Vec<String> = pids
            .iter()
            .zip(&per0)
            .map(|(p, c0)| format!("{p}:{:.2}", process_cpu(&[*p]) - c0))
            .collect();
        eprintln!("  Kamailio CPU-s by process: {}", per.join(" "));
    }
    println!(
        "{name}: {rate:.0} calls/s ({n} calls, {failed} without a final response); Kamailio CPU {:.0} us/call; host service threads {:.1} us/call",
        (k1 - k0) / n as f64 * 1e6,
        (h1 - h0) / n as f64 * 1e6
    );
    lat.report("  INVITE to final response");
    Ok(rate)
}

async fn register(sock: &UdpSocket, proxy: SocketAddr) -> anyhow::Result<()> {
    let local = sock.local_addr()?;
    let mut m = Msg::request("REGISTER", "sip:corp.example");
    m.push(
        "Via",
        format!("SIP/2.0/UDP {local};branch=z9hG4bK-reg;rport"),
    )
    .push("Max-Forwards", "70")
    .push("From", format!("<{ALICE}>;tag=reg"))
    .push("To", format!("<{ALICE}>"))
    .push("Call-ID", "load-register")
    .push("CSeq", "1 REGISTER")
    .push("Contact", format!("<sip:alice@{local}>"))
    .push("Expires", "3600");
    sock.send_to(&m.to_bytes(), proxy).await?;
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .context("REGISTER: no answer")??;
    let r = Msg::parse(&buf[..n]).context("REGISTER: bad answer")?;
    if r.code() != 200 {
        bail!("REGISTER: {}", r.start);
    }
    Ok(())
}

/// How calls are started: a fixed number in flight (closed loop, the capacity) or at a
/// fixed rate whatever the answers (open loop, the latency at that rate).
#[derive(Clone, Copy)]
enum Pace {
    InFlight(usize),
    Rate(u32),
}

/// Calls to `ruri` for `dur`, started as `pace` says; each call is INVITE → final
/// response → ACK. Returns (calls/s, latencies, calls without a final response,
/// completed calls).
async fn calls(
    proxy: SocketAddr,
    ruri: &str,
    pace: Pace,
    dur: Duration,
) -> anyhow::Result<(f64, Lat, u64, u64)> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let local = sock.local_addr()?;
    let mut inflight: HashMap<String, (Instant, Msg)> = HashMap::new();
    let mut seq = 0u64;
    let mut lat = Lat::default();
    let mut failed = 0u64;
    let mut done = 0u64;
    let started = Instant::now();
    let until = started + dur;
    let mut buf = vec![0u8; 65536];
    let new_call = |seq: u64| {
        let mut m = Msg::request("INVITE", ruri);
        m.push(
            "Via",
            format!(
                "SIP/2.0/UDP {local};branch=z9hG4bK-l{}-{seq};rport",
                local.port()
            ),
        )
        .push("Max-Forwards", "70")
        .push("From", format!("<sip:bob@corp.example>;tag=l{seq}"))
        .push("To", format!("<{ruri}>"))
        .push(
            "Call-ID",
            format!("load-{seq}-{}-{}", local.port(), std::process::id()),
        )
        .push("CSeq", "1 INVITE")
        .push("Contact", format!("<sip:bob@{local}>"));
        m
    };
    let mut sweep = Instant::now();
    let mut next = Instant::now();
    let due = |inflight: usize, next: Instant| match pace {
        Pace::InFlight(n) => inflight < n,
        Pace::Rate(_) => Instant::now() >= next,
    };
    while Instant::now() < until || !inflight.is_empty() {
        while Instant::now() < until && due(inflight.len(), next) {
            if let Pace::Rate(r) = pace {
                next += Duration::from_secs(1) / r.max(1);
            }
            seq += 1;
            let m = new_call(seq);
            if std::env::var_os("CVW_LOAD_TRACE").is_some() {
                eprintln!("uac {local} -> {} ({})", m.start, m.call_id());
            }
            sock.send_to(&m.to_bytes(), proxy).await?;
            inflight.insert(m.call_id().to_owned(), (Instant::now(), m));
        }
        if sweep.elapsed() > Duration::from_secs(1) {
            // A call without a final response in 8 s is lost: free its slot.
            let before = inflight.len();
            inflight.retain(|_, (t, _)| t.elapsed() < Duration::from_secs(8));
            failed += (before - inflight.len()) as u64;
            sweep = Instant::now();
        }
        let wait = match pace {
            Pace::Rate(_) if Instant::now() < until => next
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200)),
            _ => Duration::from_millis(200),
        };
        let Ok(r) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await else {
            if Instant::now() > until + Duration::from_secs(10) {
                failed += inflight.len() as u64;
                break;
            }
            continue;
        };
        let (n, _) = r?;
        let Some(resp) = Msg::parse(&buf[..n]) else {
            continue;
        };
        if resp.is_request() || resp.code() < 200 {
            continue;
        }
        if let Some((t, inv)) = inflight.remove(resp.call_id()) {
            lat.push(t.elapsed());
            done += 1;
            // ACK for a non-2xx final response: hop by hop, same branch as the INVITE.
            let mut ack = Msg::request("ACK", ruri);
            for h in ["Via", "From", "Call-ID", "Max-Forwards"] {
                if let Some(v) = inv.header(h) {
                    ack.push(h, v);
                }
            }
            ack.push("To", resp.header("To").unwrap_or(""))
                .push("CSeq", "1 ACK");
            sock.send_to(&ack.to_bytes(), proxy).await?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(dur.as_secs_f64());
    Ok((done as f64 / elapsed, lat, failed, done))
}

// ---------------------------------------------------------------- two-leg origination

/// `originate`: two-leg calls placed by the host's `SipOriginator`, the way the API places
/// a click to call (CVW-10..14), to phones in a child process. The phones are a second
/// `cvw-sip` user agent stack, so they cost about what the host costs: in the same
/// process they would halve every figure and blur the memory one.
mod originate {
    use super::{DESK, Lat, process_cpu, thread_cpu};
    use anyhow::{Context, bail};
    use cvw::origination::sip::SipOriginator;
    use cvw::origination::{CallState, Originator};
    use cvw::policy::model;
    use cvw_sip::message::Method;
    use cvw_sip::transport::Protocol;
    use cvw_sip::ua::{Body, IncomingCall, LegEvent, UaConfig, UserAgent};
    use std::collections::BTreeMap;
    use std::io::{BufRead, Read};
    use std::net::SocketAddr;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use tokio::runtime::{Handle, Runtime};
    use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

    const CALLEE: &str = "+14255550142";
    /// How long a call may take to end after the load stops before it counts as lost:
    /// longer than Timer B (32 s), so a leg that timed out still reports its end.
    const DRAIN: Duration = Duration::from_secs(40);
    /// Longer than Timer K (T4, 5 s), the last wait of a hung-up call's BYE transaction,
    /// so the previous phase's transactions are gone when a phase starts.
    const SETTLE: Duration = Duration::from_secs(6);

    /// The desk phone (callback leg: Flow IV's offer without m= lines, then the callee's
    /// offer in a re-INVITE) and the callee phone (INVITE without SDP): each rings (180)
    /// and answers at once, answers re-INVITEs and BYEs. Prints their addresses on one line
    /// and runs until stdin closes.
    pub async fn phones() -> anyhow::Result<()> {
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
    struct PhonesChild {
        child: Child,
        desk: SocketAddr,
        callee: SocketAddr,
    }

    impl PhonesChild {
        fn start() -> anyhow::Result<PhonesChild> {
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

        fn pid(&self) -> u32 {
            self.child.id()
        }
    }

    impl Drop for PhonesChild {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Resident memory of a process in KiB.
    fn rss_kib(pid: u32) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// What the held calls are measured with: this process's live heap and RSS and the
    /// phones' process's RSS, taken before and after the calls are up.
    struct Footprint {
        heap: usize,
        host_kib: u64,
        phones_kib: u64,
    }

    impl Footprint {
        fn now(phones: &PhonesChild) -> Footprint {
            Footprint {
                heap: crate::heap::live(),
                host_kib: rss_kib(std::process::id()),
                phones_kib: rss_kib(phones.pid()),
            }
        }

        /// Bytes per call from `self` to `later` over `calls` calls, as (host live heap
        /// without `own` bytes the tool itself keeps, host RSS, phones' RSS).
        fn per_call(&self, later: &Footprint, calls: usize, own: usize) -> (f64, f64, f64) {
            let calls = calls.max(1) as f64;
            let kib = |a: u64, b: u64| (b.saturating_sub(a) * 1024) as f64 / calls;
            (
                later.heap.saturating_sub(self.heap).saturating_sub(own) as f64 / calls,
                kib(self.host_kib, later.host_kib),
                kib(self.phones_kib, later.phones_kib),
            )
        }
    }

    /// A click to call from Alice's desk phone to the callee, both phones reached directly.
    fn plan(phones: &PhonesChild) -> model::OriginationPlan {
        model::OriginationPlan {
            user: super::ALICE.into(),
            callback: model::Leg {
                uri: format!("sip:{DESK}@{}", phones.desk),
                shows: model::NameAddr {
                    display: String::new(),
                    uri: "sip:+14255550000@pbx.corp.example;user=phone".into(),
                },
                ring_timeout_ms: 15_000,
            },
            callee: model::Leg {
                uri: format!("sip:{CALLEE}@{}", phones.callee),
                shows: model::NameAddr {
                    display: "Alice Smith".into(),
                    uri: format!("sip:{DESK}@pbx.corp.example;user=phone"),
                },
                ring_timeout_ms: 30_000,
            },
            flow: model::Flow::FlowIv,
            max_duration_s: 3_600,
        }
    }

    /// Held calls as users place them: `POST /v1/calls` to the click-to-call API served
    /// in this process, the default policy planning each call, `DELETE` to hang up. The
    /// memory per call then includes what the API keeps (the call's record, its event
    /// feed, its follower task), which a real `cvw serve` keeps too.
    mod api_held {
        use super::{Footprint, PhonesChild, SETTLE};
        use anyhow::{Context, bail};
        use cvw::calllog::JsonLinesFile;
        use cvw::click_to_call::auth::Tokens;
        use cvw::click_to_call::calls::Calls;
        use cvw::click_to_call::limits::{LimitSettings, Limits};
        use cvw::click_to_call::{Api, router};
        use cvw::origination::CallState;
        use cvw::origination::sip::SipOriginator;
        use std::net::SocketAddr;
        use std::sync::Arc;
        use std::time::Duration;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        const TOKEN: &str = "load-token";

        pub struct Served {
            addr: SocketAddr,
            calls: Arc<Calls>,
        }

        /// The API with Alice's token, limits out of the way, and a policy whose PBX
        /// (trunk and domain) is the phones' desk address: both legs go straight there.
        pub async fn serve(
            tmp: &std::path::Path,
            phones: &PhonesChild,
            originator: SipOriginator,
        ) -> anyhow::Result<Served> {
            // Both legs' numbers go straight to the phones' desk address.
            let desk = phones.desk.to_string();
            let policy = crate::alice_policy(tmp, "api-directory.toml", phones.desk, &desk)?;
            let calls = Arc::new(Calls::default());
            let api = Arc::new(Api {
                policy,
                originator: Arc::new(originator),
                tokens: Tokens::single(crate::ALICE, TOKEN),
                limits: Arc::new(Limits::new(LimitSettings {
                    calls_per_window: u32::MAX,
                    window_s: 1,
                    max_concurrent: u32::MAX,
                })),
                calls: calls.clone(),
                call_log: Arc::new(JsonLinesFile::open(&tmp.join("api-calls.jsonl"))?),
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(async move { axum::serve(listener, router(api)).await });
            Ok(Served { addr, calls })
        }

        /// One request, one connection; the status and the body.
        async fn http(
            addr: SocketAddr,
            method: &str,
            path: &str,
            body: &str,
        ) -> anyhow::Result<(u16, String)> {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
                 Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).await?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await?;
            let text = String::from_utf8_lossy(&raw);
            let status = text
                .get(9..12)
                .and_then(|c| c.parse().ok())
                .context("not an HTTP response")?;
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
            Ok((status, body.to_owned()))
        }

        /// Alice clicks to call the callee; the new call's id.
        async fn place(addr: SocketAddr) -> anyhow::Result<String> {
            let (code, body) = http(
                addr,
                "POST",
                "/v1/calls",
                r#"{"destination":"+14255550142"}"#,
            )
            .await?;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            match (code, v["id"].as_str()) {
                (201, Some(id)) => Ok(id.to_owned()),
                _ => bail!("POST /v1/calls answered {code}: {body}"),
            }
        }

        fn state(calls: &Calls, id: &str) -> Option<CallState> {
            calls.get(id, crate::ALICE).and_then(|c| c.snapshot().state)
        }

        async fn wait_all(
            calls: &Calls,
            ids: &[String],
            done: impl Fn(Option<CallState>) -> bool,
        ) -> usize {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
            loop {
                let n = ids.iter().filter(|id| done(state(calls, id))).count();
                if n == ids.len() || tokio::time::Instant::now() > deadline {
                    return n;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }

        pub async fn held_calls(
            api: Served,
            phones: &PhonesChild,
            hold: usize,
        ) -> anyhow::Result<()> {
            let Served { addr, calls } = api;
            // One call first: the policy's instance, the API's first-use allocations.
            place(addr).await?;
            tokio::time::sleep(SETTLE).await;
            let before = Footprint::now(phones);
            let mut ids = Vec::with_capacity(hold);
            for _ in 0..hold {
                ids.push(place(addr).await?);
            }
            let up = wait_all(&calls, &ids, |s| s == Some(CallState::Connected)).await;
            if up < ids.len()
                && let Some(id) = ids
                    .iter()
                    .find(|id| state(&calls, id) != Some(CallState::Connected))
            {
                println!("through the API: call {id} is {:?}", state(&calls, id));
            }
            tokio::time::sleep(SETTLE).await;
            let after = Footprint::now(phones);
            // The id strings this tool keeps are not the host's.
            let own = ids.iter().map(|i| i.capacity()).sum::<usize>();
            let (heap, rss, phones_rss) = before.per_call(&after, up, own);
            println!(
                "through the API: {up} of {hold} calls connected at once: host live heap {heap:.0} bytes per call, RSS {} -> {} KiB = {rss:.0} bytes per call; phones {phones_rss:.0} bytes per call",
                before.host_kib, after.host_kib
            );
            for id in &ids {
                let (code, body) = http(addr, "DELETE", &format!("/v1/calls/{id}"), "").await?;
                if code >= 300 {
                    bail!("DELETE /v1/calls/{id} answered {code}: {body}");
                }
            }
            // Ended calls beyond the API's memory of them are forgotten: ended too.
            let ended = wait_all(&calls, &ids, |s| !matches!(s, Some(CallState::Connected))).await;
            println!("through the API: {ended} of {hold} calls ended after DELETE");
            Ok(())
        }
    }

    /// How one call went. Clean: `connected`, then `ended` as hung up on request.
    struct Outcome {
        connected_at: Option<Instant>,
        setup: Option<Duration>,
        failure: Option<String>,
    }

    /// A call kept connected until `release` turns true.
    struct Held {
        connected: mpsc::UnboundedSender<()>,
        slot: OwnedSemaphorePermit,
        release: watch::Receiver<bool>,
    }

    struct Env {
        originator: SipOriginator,
        plan: model::OriginationPlan,
    }

    /// One call as a requester follows it (the API's call task does the same).
    async fn one_call(env: Arc<Env>, n: u64, mut held: Option<Held>) -> Outcome {
        let started = Instant::now();
        let mut control = match env.originator.start(&format!("load-{n}"), &env.plan) {
            Ok(c) => c,
            Err(e) => {
                return Outcome {
                    connected_at: None,
                    setup: None,
                    failure: Some(format!("not started: {e}")),
                };
            }
        };
        let mut hangup = Some(control.hangup);
        let mut connected_at = None;
        while let Some(state) = control.states.recv().await {
            match state {
                CallState::Connected => {
                    connected_at = Some(Instant::now());
                    if let Some(Held {
                        connected,
                        slot,
                        mut release,
                    }) = held.take()
                    {
                        drop(slot);
                        let _ = connected.send(());
                        let _ = release.wait_for(|r| *r).await;
                    }
                    if let Some(h) = hangup.take() {
                        h.send();
                    }
                }
                CallState::Ended {
                    result,
                    sip_code,
                    side,
                    ..
                } => {
                    let clean = connected_at.is_some() && result == "hung-up";
                    let code = sip_code.map_or("-".into(), |c| c.to_string());
                    return Outcome {
                        connected_at,
                        setup: connected_at.map(|t| t - started),
                        failure: (!clean).then(|| format!("{result} ({side:?} {code})")),
                    };
                }
                _ => {}
            }
        }
        Outcome {
            connected_at,
            setup: connected_at.map(|t| t - started),
            failure: Some("states closed without an end".into()),
        }
    }

    enum Pace {
        /// Offered setups/s.
        Open(u64),
        /// Calls in flight.
        Closed(usize),
    }

    struct Tally {
        started: u64,
        connected_in_window: u64,
        clean: u64,
        failures: BTreeMap<String, u64>,
        setup: Lat,
    }

    /// Starts calls at `pace` until `until` on the host's runtime, then waits for every
    /// call to end (or `DRAIN` to pass).
    async fn load(host: Handle, env: Arc<Env>, pace: Pace, until: Instant) -> Tally {
        let (out, mut outcomes) = mpsc::unbounded_channel();
        let mut started = 0u64;
        let spawn = |n: u64, slot: Option<OwnedSemaphorePermit>| {
            let (env, out) = (env.clone(), out.clone());
            host.spawn(async move {
                let o = one_call(env, n, None).await;
                drop(slot);
                let _ = out.send(o);
            });
        };
        match pace {
            Pace::Open(rate) => {
                let mut tick =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                while Instant::now() < until {
                    tick.tick().await;
                    started += 1;
                    spawn(started, None);
                }
            }
            Pace::Closed(concurrency) => {
                let slots = Arc::new(Semaphore::new(concurrency.max(1)));
                while Instant::now() < until {
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        break;
                    };
                    started += 1;
                    spawn(started, Some(slot));
                }
            }
        }
        drop(out);
        Tally::collect(&mut outcomes, started, until, until + DRAIN).await
    }

    impl Tally {
        /// The outcomes of `started` calls, each as it arrives until `deadline`; calls
        /// connected by `until` count as connected in the window, and calls that never
        /// ended as lost.
        async fn collect(
            outcomes: &mut mpsc::UnboundedReceiver<Outcome>,
            started: u64,
            until: Instant,
            deadline: Instant,
        ) -> Tally {
            let mut tally = Tally {
                started,
                connected_in_window: 0,
                clean: 0,
                failures: BTreeMap::new(),
                setup: Lat::default(),
            };
            let deadline = tokio::time::Instant::from_std(deadline);
            let mut ended = 0u64;
            while ended < started {
                let Ok(Some(o)) = tokio::time::timeout_at(deadline, outcomes.recv()).await else {
                    break;
                };
                ended += 1;
                tally.add(o, until);
            }
            if ended < started {
                *tally.failures.entry("lost (no end)".into()).or_default() += started - ended;
            }
            tally
        }

        fn add(&mut self, o: Outcome, until: Instant) {
            if o.connected_at.is_some_and(|t| t <= until) {
                self.connected_in_window += 1;
            }
            if let Some(d) = o.setup {
                self.setup.push(d);
            }
            match o.failure {
                None => self.clean += 1,
                Some(why) => *self.failures.entry(why).or_default() += 1,
            }
        }

        fn failed(&self) -> u64 {
            self.failures.values().sum()
        }

        fn failures_text(&self) -> String {
            let parts: Vec<String> = self
                .failures
                .iter()
                .map(|(why, n)| format!("{why}: {n}"))
                .collect();
            if parts.is_empty() {
                "none".into()
            } else {
                parts.join(", ")
            }
        }
    }

    pub struct Options<'a> {
        pub seconds: u64,
        pub rate: Option<u64>,
        pub concurrency: usize,
        pub hold: usize,
        /// Through Kamailio, with this scratch directory.
        pub kamailio: Option<&'a std::path::Path>,
        /// Held calls through the HTTP API, with this scratch directory.
        pub api: Option<&'a std::path::Path>,
    }

    /// Kamailio as the host's outbound proxy, the phones' desk as its PBX trunk, and the
    /// decision service it asks about every INVITE (the host's legs included).
    struct Proxy {
        kamailio: super::kamailio::Kamailio,
        service: super::Running,
    }

    fn start_proxy(
        host_rt: &Runtime,
        tmp: &std::path::Path,
        phones: &PhonesChild,
        host_ua: SocketAddr,
    ) -> anyhow::Result<Proxy> {
        let (_policy, service) = host_rt.block_on(super::start_service(tmp, phones.desk))?;
        let kamailio = super::kamailio::Kamailio::start(&super::kamailio::Setup {
            host_jsonrpc: service.jsonrpc,
            host_http: service.http,
            pbx: phones.desk,
            host_ua,
            decision_timeout_ms: 1000,
            extra: vec![("CVW_CHILDREN".into(), "4".into())],
            transform: None,
            shm_mb: 1024,
            janssonrpcc: false,
        })?;
        let mut service = service;
        host_rt.block_on(kamailio.connect_host(&mut service))?;
        Ok(Proxy { kamailio, service })
    }

    pub fn run(host_rt: &Runtime, load_rt: &Runtime, o: &Options) -> anyhow::Result<()> {
        let Options {
            seconds,
            rate,
            concurrency,
            hold,
            ..
        } = *o;
        let phones = PhonesChild::start()?;
        let mut config = UaConfig::default();
        let proxy = match o.kamailio {
            Some(tmp) => {
                // The proxy's address list names the host's port before the host binds.
                config.bind = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
                let proxy = start_proxy(host_rt, tmp, &phones, config.bind)?;
                config.outbound_proxy = Some(format!("sip:{}", proxy.kamailio.sip));
                Some(proxy)
            }
            None => None,
        };
        let (ua, _incoming) = host_rt.block_on(UserAgent::bind(config))?;
        println!(
            "host UA {} (UDP, {}); phones pid {}: desk {}, callee {}",
            ua.local_addr(Protocol::Udp),
            match &proxy {
                Some(p) => format!("through Kamailio {}", p.kamailio.sip),
                None => "no proxy".into(),
            },
            phones.pid(),
            phones.desk,
            phones.callee
        );
        let api_ua = ua.clone();
        let env = Arc::new(Env {
            plan: plan(&phones),
            originator: SipOriginator::new(ua),
        });
        // A light warm-up (threads, code paths), 50 calls: a heavy one would leave freed
        // heap in the allocator that the held calls reuse, hiding their memory.
        let warm = load_rt.block_on(load(
            host_rt.handle().clone(),
            env.clone(),
            Pace::Open(50),
            Instant::now() + Duration::from_secs(1),
        ));
        println!(
            "warm-up: {} calls, failed {} ({})",
            warm.started,
            warm.failed(),
            warm.failures_text()
        );
        match o.api {
            Some(tmp) if hold > 0 => {
                let originator = SipOriginator::new(api_ua);
                let api = host_rt.block_on(api_held::serve(tmp, &phones, originator))?;
                load_rt.block_on(api_held::held_calls(api, &phones, hold))?;
            }
            None if hold > 0 => {
                load_rt.block_on(held_calls(
                    host_rt.handle().clone(),
                    env.clone(),
                    &phones,
                    hold,
                ))?;
            }
            _ => {}
        }
        load_rt.block_on(async { tokio::time::sleep(SETTLE).await });
        let me = std::process::id();
        let (cpu0, phones_cpu0) = (process_cpu(&[me]), process_cpu(&[phones.pid()]));
        let (driver0, _) = thread_cpu("cvw-load");
        let kamailio_pids = proxy
            .as_ref()
            .map(|p| p.kamailio.pids())
            .unwrap_or_default();
        let kamailio0 = process_cpu(&kamailio_pids);
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(seconds);
        let pace = match rate {
            Some(r) => Pace::Open(r),
            None => Pace::Closed(concurrency),
        };
        let mut tally = load_rt.block_on(load(host_rt.handle().clone(), env, pace, until));
        let (cpu1, phones_cpu1) = (process_cpu(&[me]), process_cpu(&[phones.pid()]));
        let (driver1, _) = thread_cpu("cvw-load");
        let kamailio1 = process_cpu(&kamailio_pids);
        let n = tally.started.max(1) as f64;
        println!(
            "{}: {:.0} setups/s sustained over {seconds} s ({} calls started, {} connected in the window, {} clean); failed {} ({})",
            match rate {
                Some(r) => format!("open loop at {r}/s"),
                None => format!("closed loop, {concurrency} in flight"),
            },
            tally.connected_in_window as f64 / seconds as f64,
            tally.started,
            tally.connected_in_window,
            tally.clean,
            tally.failed(),
            tally.failures_text()
        );
        println!(
            "CPU per call (setup + hang-up): host {:.0} us (this process minus the load driver's {:.2} CPU-s); phones {:.0} us (child process, 2 dialogs per call)",
            ((cpu1 - cpu0) - (driver1 - driver0)) / n * 1e6,
            driver1 - driver0,
            (phones_cpu1 - phones_cpu0) / n * 1e6
        );
        if let Some(p) = proxy {
            println!(
                "Kamailio CPU per call: {:.0} us (the host's figure includes its decisions for its own legs)",
                (kamailio1 - kamailio0) / n * 1e6
            );
            let oom = p
                .kamailio
                .log()
                .matches("could not allocate shared memory")
                .count();
            if oom > 0 {
                println!("WARNING: Kamailio ran out of shared memory {oom} times");
            }
            drop(p.kamailio);
            host_rt.block_on(p.service.stop());
        }
        tally.setup.report("start to connected");
        Ok(())
    }

    /// Host memory per connected call: `hold` calls up at once, RSS before and after.
    async fn held_calls(
        host: Handle,
        env: Arc<Env>,
        phones: &PhonesChild,
        hold: usize,
    ) -> anyhow::Result<()> {
        tokio::time::sleep(SETTLE).await;
        let before = Footprint::now(phones);
        let (release_tx, release) = watch::channel(false);
        let (connected, mut up) = mpsc::unbounded_channel();
        let (out, mut outcomes) = mpsc::unbounded_channel();
        // Setups in flight at once, so the phones' sockets are not flooded.
        let slots = Arc::new(Semaphore::new(100));
        for n in 0..hold as u64 {
            let slot = slots.clone().acquire_owned().await?;
            let held = Held {
                connected: connected.clone(),
                slot,
                release: release.clone(),
            };
            let (env, out) = (env.clone(), out.clone());
            host.spawn(async move {
                let _ = out.send(one_call(env, 1_000_000_000 + n, Some(held)).await);
            });
        }
        drop((connected, out, release));
        let mut n_up = 0usize;
        let deadline = tokio::time::Instant::now() + DRAIN;
        while n_up < hold {
            match tokio::time::timeout_at(deadline, up.recv()).await {
                Ok(Some(())) => n_up += 1,
                _ => break,
            }
        }
        tokio::time::sleep(SETTLE).await;
        let after = Footprint::now(phones);
        let (heap, rss, phones_rss) = before.per_call(&after, n_up, 0);
        println!(
            "{n_up} of {hold} calls connected at once: host live heap {heap:.0} bytes per call"
        );
        println!(
            "{n_up} of {hold} calls connected at once: host RSS {} -> {} KiB = {rss:.0} bytes per call (incl. the requester's task per call); phones' process {} -> {} KiB = {phones_rss:.0} bytes per call (2 dialogs)",
            before.host_kib, after.host_kib, before.phones_kib, after.phones_kib
        );
        let _ = release_tx.send(true);
        let far = Instant::now() + DRAIN;
        let tally = Tally::collect(&mut outcomes, hold as u64, far, far).await;
        println!(
            "held calls hung up: {} clean, failed {} ({})",
            tally.clean,
            tally.failed(),
            tally.failures_text()
        );
        if n_up < hold {
            bail!("only {n_up} of {hold} calls connected");
        }
        Ok(())
    }
}
