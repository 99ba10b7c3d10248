//! `cvw-load sip`: a two-branch simultaneous ring through a real Kamailio or OpenSIPS (the
//! example config, run by `cvw_testkit::kamailio` / `cvw_testkit::opensips`), the cvw
//! decision against the same fork written in the config, calls/s with the proxy's and the
//! host's CPU per call. The SIP caller and the busy phones are here; the config is the
//! example's, plus the static baseline.
//!
//! Messages are `cvw_sip::message`'s. The generator shares two cores with Kamailio, so it
//! reads only start lines ([`StartLine::peek`]) of what it drops (100 Trying, ACKs) and
//! parses only the INVITEs it answers and the final responses it counts.

use crate::measure::{Lat, median_percent, process_cpu, thread_cpu};
use crate::service::{self, ALICE};
use anyhow::{Context, bail};
use cvw_sip::message::{Headers, Message, Method, Request, StartLine};
use cvw_testkit::{kamailio, opensips};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

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

/// The same baselines in `opensips.cfg`: `static-` forks to the desk (via the trunk) and
/// Alice's registration; `timed-static-` also gives the desk branch its own ring timeout
/// (CVW-51) the way the shipped config does, from a per-branch reply route. Applied before
/// the runner replaces the addresses, so the trunk is written as the example writes it.
fn add_static_fork_opensips(cfg: String) -> String {
    let cfg = cfg.replacen(
        "\t\trecord_route();\n\t\troute(cvw);",
        "\t\trecord_route();\n\t\tif ($rU =~ \"^(timed-)?static-\") {\n\t\t\troute(static_fork);\n\t\t\texit;\n\t\t}\n\t\troute(cvw);",
        1,
    );
    cfg + r#"
route[static_fork] {
	$var(st_timed) = 0;
	if ($rU =~ "^timed-") $var(st_timed) = 1;
	$ru = "sip:alice@" + $rd;
	if (!lookup("location")) { send_reply(404, "Not Found"); exit; }
	append_msg_branch("sip:+14255550101@pbx.corp.example;user=phone");
	t_on_branch("static_branch");
	if (!t_relay()) send_reply(500, "Relay failed");
	exit;
}

branch_route[static_branch] {
	if ($rU == "+14255550101") {
		$du = "sip:127.0.0.1:5090";
		append_hf("X-CVW-Leg: desk\r\n");
		if ($var(st_timed) == 1) $bavp(st_ring) = 15;
	}
	if ($var(st_timed) == 1) t_on_reply("static_reply");
}

onreply_route[static_reply] {
	if ($rs >= 200) return;
	if ($bavp(st_ring) != NULL) {
		$T_fr_inv_timeout = $bavp(st_ring);
	} else {
		$T_fr_inv_timeout = NULL;
	}
}
"#
}

/// The proxy under load, either kind.
enum Proxied {
    Kamailio(kamailio::Kamailio),
    OpenSips(opensips::OpenSips),
}

impl Proxied {
    fn sip(&self) -> SocketAddr {
        match self {
            Proxied::Kamailio(k) => k.sip,
            Proxied::OpenSips(o) => o.sip,
        }
    }
    fn pids(&self) -> Vec<u32> {
        match self {
            Proxied::Kamailio(k) => k.pids(),
            Proxied::OpenSips(o) => o.pids(),
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Proxied::Kamailio(_) => "Kamailio",
            Proxied::OpenSips(_) => "OpenSIPS",
        }
    }
    /// How often the proxy said it ran out of shared memory (the figures are void then).
    fn out_of_memory(&self) -> usize {
        match self {
            Proxied::Kamailio(k) => k.log().matches("could not allocate shared memory").count(),
            Proxied::OpenSips(o) => {
                let log = o.log();
                log.matches("no more shm").count() + log.matches("not enough free shm").count()
            }
        }
    }
}

/// Which proxy `cvw-load sip` drives.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum ProxyKind {
    Kamailio,
    Opensips,
}

/// A UAS that answers every INVITE at once with 486 (like the reference measurement) and
/// ignores everything else; the Call-IDs of the INVITEs it got go to `seen` if given.
pub(crate) async fn busy_uas(sock: Arc<UdpSocket>, seen: Option<Arc<Mutex<HashSet<String>>>>) {
    let mut buf = vec![0u8; 65536];
    while let Ok((n, from)) = sock.recv_from(&mut buf).await {
        let trace = std::env::var_os("CVW_LOAD_TRACE").is_some();
        let invite = StartLine::peek(&buf[..n]) == Some(StartLine::Request { method: "INVITE" });
        if !invite && !trace {
            continue;
        }
        let Ok(m) = Message::parse(&buf[..n]) else {
            continue;
        };
        if trace {
            eprintln!(
                "uas {} <- {} ({}) from {from}",
                sock.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                m.start_line(),
                m.headers().call_id()
            );
        }
        if let Message::Request(m) = m
            && m.method == Method::Invite
        {
            if let Some(seen) = &seen {
                seen.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(m.headers.call_id().to_owned());
            }
            let mut r = m.response(486, "Busy Here");
            r.tag_to("uas");
            let _ = sock.send_to(&r.to_bytes(), from).await;
        }
    }
}

pub struct Options {
    pub seconds: u64,
    pub pace: Pace,
    pub children: u32,
    pub janssonrpcc: bool,
    pub rounds: u32,
    pub proxy: ProxyKind,
    /// Then the same with `cvw.so` deciding in Kamailio's workers (a second Kamailio).
    pub module: bool,
}

pub fn run(
    service_rt: &tokio::runtime::Runtime,
    load_rt: &tokio::runtime::Runtime,
    tmp: &std::path::Path,
    o: &Options,
) -> anyhow::Result<()> {
    let Options {
        seconds: _,
        pace: _,
        children,
        janssonrpcc,
        rounds: _,
        proxy,
        module,
    } = *o;
    if janssonrpcc && proxy == ProxyKind::Opensips {
        bail!("--janssonrpcc is Kamailio's transport; OpenSIPS asks the host over HTTP");
    }
    let pbx = load_rt.block_on(UdpSocket::bind("127.0.0.1:0"))?;
    let pbx_addr = pbx.local_addr()?;
    let (host, mut service) = service_rt.block_on(service::start(tmp, pbx_addr))?;
    // ~20 KB per two-branch INVITE transaction, kept for the 5 s wait timer after it
    // ends; at 5 000 calls/s (and a second transaction per timed branch) that is about
    // 1 GB. Less, and tm runs out of memory mid-run and calls are lost.
    let shm_mb = 3072;
    let (kam, transport, cfg) = match proxy {
        ProxyKind::Kamailio => {
            let kam = kamailio::Kamailio::start(&kamailio::Setup {
                host_jsonrpc: service.jsonrpc,
                host_http: service.http,
                pbx: pbx_addr,
                host_ua: "127.0.0.1:9".parse()?,
                decision_timeout_ms: 1000,
                extra: vec![("CVW_CHILDREN".into(), children.to_string())],
                transform: Some(add_static_fork),
                shm_mb,
                janssonrpcc,
                module: None,
            })?;
            if !janssonrpcc {
                service_rt.block_on(kam.connect_host(&mut service))?;
            }
            let transport = if janssonrpcc { "janssonrpcc" } else { "evapi" };
            (Proxied::Kamailio(kam), transport, "kamailio.cfg")
        }
        ProxyKind::Opensips => {
            let os = opensips::OpenSips::start(&opensips::Setup {
                udp_workers: children,
                shm_mb,
                transform: Some(add_static_fork_opensips),
                ..opensips::Setup::new(service.http, pbx_addr, "127.0.0.1:9".parse()?)
            })?;
            (
                Proxied::OpenSips(os),
                "HTTP, rest_client async",
                "opensips.cfg",
            )
        }
    };
    let pbx = Arc::new(pbx);
    load_rt.spawn(busy_uas(pbx, None));
    let mut rss = Vec::new();
    // Analysis only: the module alone.
    if std::env::var_os("CVW_LOAD_MODULE_ONLY").is_none() {
        let decided = format!("cvw decision ({transport})");
        load_rt.block_on(measure(&kam, cfg, &decided, o))?;
        rss.push((decided, worker_rss(&kam.pids())));
    }
    drop(kam);
    if module && proxy == ProxyKind::Opensips {
        let os = opensips::OpenSips::start(&opensips::Setup {
            udp_workers: children,
            shm_mb,
            transform: Some(add_static_fork_opensips),
            module: Some(module_files(tmp, opensips::module_path("release")?)?),
            ..opensips::Setup::new(service.http, pbx_addr, "127.0.0.1:9".parse()?)
        })?;
        let decided = "cvw decision (cvw.so in OpenSIPS)".to_owned();
        let os = Proxied::OpenSips(os);
        load_rt.block_on(measure(&os, "opensips-module.cfg", &decided, o))?;
        rss.push((decided, worker_rss(&os.pids())));
    } else if module {
        // Analysis only: the branch ring timeout by a second pass instead of the module's
        // timer (CVW_LOAD_RING=second_pass).
        let ring = std::env::var("CVW_LOAD_RING").unwrap_or_else(|_| "timer".into());
        let kam = kamailio::Kamailio::start(&kamailio::Setup {
            host_jsonrpc: service.jsonrpc,
            host_http: service.http,
            pbx: pbx_addr,
            host_ua: "127.0.0.1:9".parse()?,
            decision_timeout_ms: 1000,
            extra: vec![
                ("CVW_CHILDREN".into(), children.to_string()),
                ("CVW_RING_TIMEOUT".into(), ring.clone()),
            ],
            transform: Some(add_static_fork),
            shm_mb,
            janssonrpcc: false,
            module: Some(module_files(tmp, kamailio::module_path("release")?)?),
        })?;
        let log = if std::env::var_os("CVW_LOAD_CALL_LOG").is_some() {
            "call log on"
        } else {
            "call log off"
        };
        let decided = format!("cvw decision (cvw.so in Kamailio, ring timeout by {ring}, {log})");
        let kam = Proxied::Kamailio(kam);
        load_rt.block_on(measure(&kam, cfg, &decided, o))?;
        if let Proxied::Kamailio(k) = &kam {
            let status = k.rpc(&["cvw.status"])?;
            if let Some(line) = status.lines().find(|l| l.starts_with("policy calls")) {
                println!("  in the workers: {line}");
            }
        }
        rss.push((decided, worker_rss(&kam.pids())));
    }
    for (name, (mb, n)) in &rss {
        println!("{name}: private RSS {mb:.1} MB per proxy process on average ({n} processes)");
    }
    service::report_metrics(&host);
    service_rt.block_on(service.stop());
    Ok(())
}

/// Rounds of the static forks in `cfg` and the cvw variant `decided` through `kam`.
async fn measure(kam: &Proxied, cfg: &str, decided: &str, o: &Options) -> anyhow::Result<()> {
    let (seconds, pace, rounds, children) = (o.seconds, o.pace, o.rounds, o.children);
    let load = match pace {
        Pace::InFlight(n) => format!("{n} calls in flight"),
        Pace::Rate(r) => format!("{r} calls/s started (open loop)"),
    };
    println!(
        "{} {} with {children} workers; {load}; {seconds} s per variant",
        kam.name(),
        kam.sip()
    );
    let client = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    register(&client, kam.sip()).await?;
    let answering = tokio::spawn(busy_uas(client, None));
    let static_fork = format!("static fork in {cfg}");
    let timed_static = format!("static fork + desk ring timeout (CVW-51) in {cfg}");
    let variants = [
        (static_fork.as_str(), "sip:static-alice@corp.example"),
        (timed_static.as_str(), "sip:timed-static-alice@corp.example"),
        (decided, ALICE),
    ];
    // A fresh Kamailio's shared memory is one big free block that every allocation
    // splits; once calls have come and gone, most allocations find a free block of
    // their size. Unwarmed, the first variant measured ran up to a third slower than
    // the same variant in later rounds, so every variant runs once, unmeasured, first.
    for (_, ruri) in variants {
        calls(kam.sip(), ruri, pace, Duration::from_secs(3), None).await?;
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
            rates.push(variant(kam, name, ruri, pace, seconds).await?);
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
    let oom = kam.out_of_memory();
    if oom > 0 {
        println!(
            "WARNING: {} ran out of shared memory {oom} times: these figures are not valid",
            kam.name()
        );
    }
    if ratios.len() > 1 {
        println!(
            "median of {} rounds: cvw / static = {:.0} %; cvw / static with the same desk ring timeout = {:.0} %",
            ratios.len(),
            median_percent(ratios.iter().map(|r| r.0).collect()),
            median_percent(ratios.iter().map(|r| r.1).collect())
        );
    }
    answering.abort();
    Ok(())
}

/// The release `cvw.so` and the files it reads: the default policy, and the directory
/// `service::start` wrote; as shipped, with its call log.
/// What a `cvw.so` (`so`) loads: the default policy and the load's directory.
fn module_files(
    tmp: &std::path::Path,
    so: std::path::PathBuf,
) -> anyhow::Result<kamailio::ModuleFiles> {
    let policy = tmp.join("policy.wasm");
    std::fs::write(
        &policy,
        cvw::policy::builtin::default_policy().context("default policy not built")?,
    )?;
    Ok(kamailio::ModuleFiles {
        so,
        policy,
        directory: tmp.join("directory.toml"),
        // Off, as the static forks have none; CVW_LOAD_CALL_LOG measures it (every forked
        // call logged, its end tracked by the dialog module).
        call_log: std::env::var_os("CVW_LOAD_CALL_LOG").map(|_| tmp.join("calls.jsonl")),
    })
}

/// Average private resident memory (RssAnon: the process's own heap, stacks and mappings,
/// not the shared memory every process also touches) of the processes `pids` (MB), and
/// how many there are.
fn worker_rss(pids: &[u32]) -> (f64, usize) {
    let total: u64 = pids
        .iter()
        .filter_map(|p| procfs::process::Process::new(i32::try_from(*p).ok()?).ok())
        .filter_map(|p| p.status().ok()?.rssanon)
        .sum();
    (total as f64 / 1024.0 / pids.len().max(1) as f64, pids.len())
}

/// One variant of the SIP load: calls/s, printed with Kamailio's and the host's CPU per
/// call and the latency.
async fn variant(
    kam: &Proxied,
    name: &str,
    ruri: &str,
    pace: Pace,
    seconds: u64,
) -> anyhow::Result<f64> {
    // Let the previous variant's transactions leave memory (tm's 5 s wait timer).
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Warm up (connections, caches), then measure.
    let _ = calls(kam.sip(), ruri, pace, Duration::from_secs(1), None).await?;
    let pids = kam.pids();
    let per0: Vec<f64> = pids.iter().map(|p| process_cpu(&[*p])).collect();
    let k0 = process_cpu(&pids);
    let (h0, _) = thread_cpu("cvw-svc");
    let (rate, mut lat, failed, n) =
        calls(kam.sip(), ruri, pace, Duration::from_secs(seconds), None).await?;
    let k1 = process_cpu(&pids);
    let (h1, _) = thread_cpu("cvw-svc");
    if std::env::var_os("CVW_LOAD_TRACE").is_some() {
        let per: Vec<String> = pids
            .iter()
            .zip(&per0)
            .map(|(p, c0)| format!("{p}:{:.2}", process_cpu(&[*p]) - c0))
            .collect();
        eprintln!("  {} CPU-s by process: {}", kam.name(), per.join(" "));
    }
    println!(
        "{name}: {rate:.0} calls/s ({n} calls, {failed} without a final response); {} CPU {:.0} us/call; host service threads {:.1} us/call",
        kam.name(),
        (k1 - k0) / n.max(1) as f64 * 1e6,
        (h1 - h0) / n.max(1) as f64 * 1e6
    );
    lat.report("  INVITE to final response");
    Ok(rate)
}

pub(crate) async fn register(sock: &UdpSocket, proxy: SocketAddr) -> anyhow::Result<()> {
    let local = sock.local_addr()?;
    let mut h = Headers::new();
    h.push(
        "Via",
        format!("SIP/2.0/UDP {local};branch=z9hG4bK-reg;rport"),
    );
    h.push("Max-Forwards", "70");
    h.push("From", format!("<{ALICE}>;tag=reg"));
    h.push("To", format!("<{ALICE}>"));
    h.push("Call-ID", "load-register");
    h.push("CSeq", "1 REGISTER");
    h.push("Contact", format!("<sip:alice@{local}>"));
    h.push("Expires", "3600");
    let m = request(Method::Other("REGISTER".into()), "sip:corp.example", h);
    sock.send_to(&m.to_bytes(), proxy).await?;
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .context("REGISTER: no answer")??;
    match Message::parse(&buf[..n]).context("REGISTER: bad answer")? {
        Message::Response(r) if r.code == 200 => Ok(()),
        other => bail!("REGISTER: {}", other.start_line()),
    }
}

fn request(method: Method, uri: &str, headers: Headers) -> Request {
    Request {
        method,
        uri: uri.to_owned(),
        headers,
        body: Vec::new(),
    }
}

/// How calls are started: a fixed number in flight (closed loop, the capacity) or at a
/// fixed rate whatever the answers (open loop, the latency at that rate).
#[derive(Clone, Copy)]
pub enum Pace {
    InFlight(usize),
    Rate(u32),
}

/// Calls to `ruri` for `dur`, started as `pace` says; each call is INVITE → final
/// response → ACK. Returns (calls/s, latencies, calls without a final response,
/// completed calls).
/// One call of [`calls`]: its Call-ID, when it was sent, and when its final response
/// came (`None`: never).
pub struct CallTrace {
    pub call_id: String,
    pub sent: Instant,
    pub final_response: Option<(Instant, u16)>,
}

pub(crate) async fn calls(
    proxy: SocketAddr,
    ruri: &str,
    pace: Pace,
    dur: Duration,
    mut traces: Option<&mut Vec<CallTrace>>,
) -> anyhow::Result<(f64, Lat, u64, u64)> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let local = sock.local_addr()?;
    // Each call in flight: when it was sent, its INVITE (for the ACK), and where its trace
    // is (with `traces`).
    let mut inflight: HashMap<String, (Instant, Request, usize)> = HashMap::new();
    let mut seq = 0u64;
    let mut lat = Lat::default();
    let mut failed = 0u64;
    let mut done = 0u64;
    let started = Instant::now();
    let until = started + dur;
    let mut buf = vec![0u8; 65536];
    let new_call = |seq: u64| {
        let mut h = Headers::new();
        h.push(
            "Via",
            format!(
                "SIP/2.0/UDP {local};branch=z9hG4bK-l{}-{seq};rport",
                local.port()
            ),
        );
        h.push("Max-Forwards", "70");
        h.push("From", format!("<sip:bob@corp.example>;tag=l{seq}"));
        h.push("To", format!("<{ruri}>"));
        h.push(
            "Call-ID",
            format!("load-{seq}-{}-{}", local.port(), std::process::id()),
        );
        h.push("CSeq", "1 INVITE");
        h.push("Contact", format!("<sip:bob@{local}>"));
        request(Method::Invite, ruri, h)
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
                eprintln!(
                    "uac {local} -> {} ({})",
                    m.start_line(),
                    m.headers.call_id()
                );
            }
            sock.send_to(&m.to_bytes(), proxy).await?;
            let trace = traces.as_deref_mut().map_or(0, |t| {
                t.push(CallTrace {
                    call_id: m.headers.call_id().to_owned(),
                    sent: Instant::now(),
                    final_response: None,
                });
                t.len() - 1
            });
            inflight.insert(m.headers.call_id().to_owned(), (Instant::now(), m, trace));
        }
        if sweep.elapsed() > Duration::from_secs(1) {
            // A call without a final response in 8 s is lost: free its slot.
            let before = inflight.len();
            inflight.retain(|_, (t, _, _)| t.elapsed() < Duration::from_secs(8));
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
        // Provisional responses (100 Trying from Kamailio) are half of what arrives:
        // only finals are parsed.
        if !matches!(StartLine::peek(&buf[..n]), Some(StartLine::Response { code }) if code >= 200)
        {
            continue;
        }
        let Ok(Message::Response(resp)) = Message::parse(&buf[..n]) else {
            continue;
        };
        if let Some((t, inv, trace)) = inflight.remove(resp.headers.call_id()) {
            lat.push(t.elapsed());
            if let Some(trace) = traces.as_deref_mut().and_then(|ts| ts.get_mut(trace)) {
                trace.final_response = Some((Instant::now(), resp.code));
            }
            done += 1;
            // ACK for a non-2xx final response: hop by hop, the INVITE's Request-URI,
            // Via (same branch), From and Call-ID (RFC 3261 §17.1.1.3), made from the
            // INVITE itself rather than copied.
            let mut ack = inv;
            ack.method = Method::Ack;
            ack.headers.remove("Contact");
            ack.headers.set("To", resp.headers.get("To").unwrap_or(""));
            ack.headers.set("CSeq", "1 ACK");
            sock.send_to(&ack.to_bytes(), proxy).await?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(dur.as_secs_f64());
    Ok((done as f64 / elapsed, lat, failed, done))
}
