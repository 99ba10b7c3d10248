//! `cvw-load api`: the click-to-call API of a real `cvw serve` (a child process, the `cvw`
//! binary beside this tool) under load and abuse, on loopback. Places no call: the
//! authenticated requests read a call that does not exist (`GET /v1/calls/{id}`, 404
//! after the token is checked), so what is measured is the front door and authentication.
//!
//! - Requests/s and the server's CPU per request over keep-alive connections, in rounds:
//!   a valid token, a wrong token (401, with the bad-token throttle off so every request
//!   is checked), and a source the throttle has blocked (429; the default settings but
//!   a window longer than the run), each against the valid-token figure of the same
//!   round. Any other answer is counted and printed by status (0: no answer).
//! - Resident memory of `cvw serve` with `--idle` connections open and silent, against
//!   its RSS before them: with the cap raised above them (every one held), and with the
//!   default settings (1024 held, the rest refused; after the header timeout, none held).
//!
//! Each idle round starts a fresh `cvw serve` (RSS does not shrink after a round) and
//! uses source addresses of its own (127.0.x.y), so no round waits for another's
//! TIME_WAIT ports.

use crate::measure::{median_percent, process_cpu, rss_kib};
use crate::serve::{ServeProcess, cvw_binary};
use anyhow::bail;
use cvw_testkit::process::free_port;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::runtime::Runtime;

const TOKEN: &str = "load-alice-token";
const ALICE: &str = "sip:alice@corp.example";

pub struct Options {
    pub cvw: Option<PathBuf>,
    pub seconds: u64,
    pub connections: usize,
    pub rounds: u32,
    pub idle: usize,
}

/// A `cvw serve` child process and where its API listens.
struct Serve {
    process: ServeProcess,
    api: SocketAddr,
}

impl Serve {
    fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Start `cvw serve` with `[api]` extras (`http = {...}`, `auth_failures = {...}`).
    fn start(cvw: &Path, tmp: &Path, name: &str, extra: &str) -> anyhow::Result<Serve> {
        let dir = tmp.join(name);
        std::fs::create_dir_all(&dir)?;
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let directory = std::path::absolute(repo.join("examples/directory.toml"))?;
        std::fs::write(
            dir.join("tokens.toml"),
            format!(
                "[[tokens]]\nuser = \"{ALICE}\"\nsha256 = \"{}\"\n",
                cvw::click_to_call::auth::hash_hex(TOKEN)
            ),
        )?;
        let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let control = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = format!(
            "directory = {directory:?}\n[policy]\nwatch = false\n[control]\nlisten = \"{control}\"\n\
             [decision]\n[api]\nlisten = \"{api}\"\ntokens_file = \"tokens.toml\"\n\
             call_log = \"calls.jsonl\"\n{extra}\n\
             [api.sip]\nbind = \"127.0.0.1:0\"\noutbound_proxy = \"sip:127.0.0.1:9\"\n"
        );
        std::fs::write(dir.join("cvw.toml"), config)?;
        let process =
            ServeProcess::spawn(cvw, &dir.join("cvw.toml"), &dir.join("serve.log"), "warn")?;
        let serve = Serve { process, api };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(api).is_err() {
            if Instant::now() > deadline {
                bail!("cvw serve did not listen on {api}; see {}", dir.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(serve)
    }
}

/// Open files allowed, raised to the hard limit if `needed` is more (the children inherit it).
fn raise_nofile(needed: u64) -> anyhow::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the one struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        if limit.rlim_cur < needed {
            limit.rlim_cur = needed.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                bail!("setrlimit: {}", std::io::Error::last_os_error());
            }
        }
    }
    Ok(limit.rlim_cur)
}

async fn connect_from(source: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(to).await
}

/// One keep-alive connection sending `GET /v1/calls/none` as the bearer of `token` until
/// `until` or `max` requests; (requests answered `expect`, other answers or errors, the
/// other answers' statuses with 0 for no answer).
async fn hammer(
    api: SocketAddr,
    source: [u8; 4],
    token: String,
    expect: u16,
    until: Instant,
    max: u64,
) -> (u64, u64, BTreeMap<u16, u64>) {
    let (mut ok, mut other) = (0u64, 0u64);
    let mut unexpected = BTreeMap::new();
    let more = |ok: u64, other: u64| Instant::now() < until && ok + other < max;
    'connect: while more(ok, other) {
        let Ok(stream) = connect_from(source, api).await else {
            other += 1;
            *unexpected.entry(0).or_default() += 1;
            continue;
        };
        let Ok((mut sender, connection)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            other += 1;
            *unexpected.entry(0).or_default() += 1;
            continue;
        };
        tokio::spawn(connection);
        while more(ok, other) {
            let request = hyper::Request::get("/v1/calls/none")
                .header(hyper::header::HOST, "cvw")
                .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Empty::<Bytes>::new());
            let Ok(request) = request else { break 'connect };
            if sender.ready().await.is_err() {
                other += 1;
                *unexpected.entry(0).or_default() += 1;
                continue 'connect;
            }
            match sender.send_request(request).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await;
                    if status == expect {
                        ok += 1;
                    } else {
                        other += 1;
                        *unexpected.entry(status).or_default() += 1;
                    }
                }
                Err(_) => {
                    other += 1;
                    *unexpected.entry(0).or_default() += 1;
                    continue 'connect;
                }
            }
        }
    }
    (ok, other, unexpected)
}

struct Figure {
    per_s: f64,
    cpu_us: f64,
    unexpected: BTreeMap<u16, u64>,
}

/// `connections` connections from `source` for `seconds`: requests/s answered `expect`
/// and the server's CPU per request.
fn load(
    rt: &Runtime,
    serve: &Serve,
    source: [u8; 4],
    token: &str,
    expect: u16,
    o: &Options,
) -> Figure {
    let cpu0 = process_cpu(&[serve.pid()]);
    let started = Instant::now();
    let until = started + Duration::from_secs(o.seconds);
    let results = rt.block_on(async {
        let tasks: Vec<_> = (0..o.connections)
            .map(|_| {
                tokio::spawn(hammer(
                    serve.api,
                    source,
                    token.to_owned(),
                    expect,
                    until,
                    u64::MAX,
                ))
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.push(task.await.unwrap_or_default());
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu(&[serve.pid()]) - cpu0;
    let ok: u64 = results.iter().map(|r| r.0).sum();
    let mut unexpected = BTreeMap::new();
    for (status, n) in results.iter().flat_map(|r| r.2.iter()) {
        *unexpected.entry(*status).or_default() += n;
    }
    Figure {
        per_s: ok as f64 / elapsed,
        cpu_us: cpu * 1e6 / ok.max(1) as f64,
        unexpected,
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn run(rt: &Runtime, tmp: &Path, o: &Options) -> anyhow::Result<()> {
    let cvw = cvw_binary(o.cvw.clone())?;
    let nofile = raise_nofile(o.idle as u64 + 1024)?;
    println!(
        "cvw serve: {}; {} connections x {} s per variant, {} rounds; open files {nofile}",
        cvw.display(),
        o.connections,
        o.seconds,
        o.rounds
    );
    throughput(rt, &cvw, tmp, o)?;
    if o.idle > 0 {
        idle(rt, &cvw, tmp, o)?;
    }
    Ok(())
}

fn throughput(rt: &Runtime, cvw: &Path, tmp: &Path, o: &Options) -> anyhow::Result<()> {
    // Every wrong token is checked: the 401 path itself.
    let open = Serve::start(cvw, tmp, "open", "auth_failures = { max_per_source = 0 }")?;
    // The defaults: a source with 10 bad tokens is blocked.
    // A window longer than the run, so the blocked source stays blocked in every round.
    let guarded = Serve::start(cvw, tmp, "guarded", "auth_failures = { window_s = 3600 }")?;
    let blocked = [127, 0, 0, 9];
    for n in 0..10 {
        let token = format!("guess-{n}");
        rt.block_on(hammer(guarded.api, blocked, token, 401, far(), 1));
    }
    let mut ratios: [Vec<f64>; 4] = Default::default();
    let mut figures: [Vec<f64>; 6] = Default::default();
    for round in 1..=o.rounds {
        let good = load(rt, &open, [127, 0, 0, 1], TOKEN, 404, o);
        let bad = load(rt, &open, [127, 0, 0, 1], "wrong-token", 401, o);
        let good_g = load(rt, &guarded, [127, 0, 0, 1], TOKEN, 404, o);
        let shut = load(rt, &guarded, blocked, "wrong-token", 429, o);
        println!(
            "round {round}: valid token {:.0}/s {:.1} us CPU each | wrong token (401) {:.0}/s {:.1} us | \
             throttle on: valid {:.0}/s {:.1} us, blocked source (429) {:.0}/s {:.1} us | \
             other answers by status (0: none) {:?} {:?} {:?} {:?}",
            good.per_s,
            good.cpu_us,
            bad.per_s,
            bad.cpu_us,
            good_g.per_s,
            good_g.cpu_us,
            shut.per_s,
            shut.cpu_us,
            good.unexpected,
            bad.unexpected,
            good_g.unexpected,
            shut.unexpected
        );
        ratios[0].push(bad.per_s / good.per_s);
        ratios[1].push(bad.cpu_us / good.cpu_us);
        ratios[2].push(shut.per_s / good_g.per_s);
        ratios[3].push(shut.cpu_us / good_g.cpu_us);
        for (i, v) in [
            good.per_s,
            good.cpu_us,
            bad.per_s,
            bad.cpu_us,
            shut.per_s,
            shut.cpu_us,
        ]
        .into_iter()
        .enumerate()
        {
            figures[i].push(v);
        }
    }
    let [gp, gc, bp, bc, sp, sc] = figures.map(median);
    let [r0, r1, r2, r3] = ratios.map(median_percent);
    println!(
        "medians: valid token {gp:.0}/s, {gc:.1} us server CPU each; wrong token {bp:.0}/s \
         ({r0:.0} %), {bc:.1} us ({r1:.0} %); blocked source {sp:.0}/s ({r2:.0} %), {sc:.1} us ({r3:.0} %)"
    );
    Ok(())
}

/// Server file descriptors open (sockets included).
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Open `n` connections, `per_source` from each source address 127.`net`.x.y; with
/// `request`, each sends one request first and leaves the answer unread (an idle
/// keep-alive connection, hyper's buffers allocated); without, each stays silent.
async fn open_idle(
    api: SocketAddr,
    n: usize,
    per_source: usize,
    net: u8,
    request: bool,
) -> Vec<TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let s = i / per_source.max(1) + 1;
        let source = [127, net, (s >> 8) as u8, (s & 0xff) as u8];
        if let Ok(mut stream) = connect_from(source, api).await {
            if request {
                let _ = stream
                    .write_all(b"GET /nothing-here HTTP/1.1\r\nHost: cvw\r\n\r\n")
                    .await;
            }
            streams.push(stream);
        }
    }
    streams
}

/// One way of opening the idle connections.
struct IdleVariant {
    name: &'static str,
    /// `[api]` extras of the serve configuration.
    extra: String,
    per_source: usize,
    request: bool,
    /// Wait out the default header timeout and count what is left.
    wait_timeout: bool,
}

fn idle(rt: &Runtime, cvw: &Path, tmp: &Path, o: &Options) -> anyhow::Result<()> {
    let raised = format!(
        "http = {{ max_connections = {}, max_connections_per_source = 0, header_read_timeout_ms = 600000 }}",
        o.idle + 1000
    );
    let variants = [
        IdleVariant {
            name: "cap raised, silent",
            extra: raised.clone(),
            per_source: 100,
            request: false,
            wait_timeout: false,
        },
        IdleVariant {
            name: "cap raised, one request each",
            extra: raised,
            per_source: 100,
            request: true,
            wait_timeout: false,
        },
        IdleVariant {
            name: "defaults, 100 per source",
            extra: String::new(),
            per_source: 100,
            request: true,
            wait_timeout: true,
        },
        IdleVariant {
            name: "defaults, one source",
            extra: String::new(),
            per_source: usize::MAX,
            request: true,
            wait_timeout: false,
        },
    ];
    let mut deltas: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut holds: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 1..=o.rounds {
        for (v, variant) in variants.iter().enumerate() {
            let name = format!("idle-{round}-{v}");
            let serve = Serve::start(cvw, tmp, &name, &variant.extra)?;
            // A few requests first, so the baseline has the request path warmed up.
            rt.block_on(hammer(
                serve.api,
                [127, 0, 0, 1],
                TOKEN.into(),
                404,
                far(),
                100,
            ));
            std::thread::sleep(Duration::from_millis(300));
            let (base_kib, base_fds) = (rss_kib(serve.pid()), fds(serve.pid()));
            let net = u8::try_from(10 + round as usize * variants.len() + v).unwrap_or(250);
            let streams = rt.block_on(open_idle(
                serve.api,
                o.idle,
                variant.per_source,
                net,
                variant.request,
            ));
            std::thread::sleep(Duration::from_secs(2));
            let (kib, open_fds) = (rss_kib(serve.pid()), fds(serve.pid()));
            let held = open_fds.saturating_sub(base_fds);
            // Is another client (127.0.0.1) still served while they are open?
            let (answered, refused, _) = rt.block_on(async {
                let until = Instant::now() + Duration::from_millis(500);
                hammer(
                    serve.api,
                    [127, 0, 0, 1],
                    TOKEN.into(),
                    404,
                    until,
                    u64::MAX,
                )
                .await
            });
            let delta = kib.saturating_sub(base_kib);
            println!(
                "round {round}, {}: {} connected, server holds {held}; RSS {base_kib} -> {kib} KiB \
                 (+{delta} KiB, {:.1} KiB per held connection); another client: {answered} served, \
                 {refused} refused in 0.5 s",
                variant.name,
                streams.len(),
                delta as f64 / held.max(1) as f64
            );
            deltas[v].push(delta as f64);
            holds[v].push(held as f64);
            if variant.wait_timeout {
                std::thread::sleep(Duration::from_secs(11));
                println!(
                    "round {round}, {}: after the 10 s header timeout the server holds {} of them; RSS {} KiB",
                    variant.name,
                    fds(serve.pid()).saturating_sub(base_fds),
                    rss_kib(serve.pid())
                );
            }
            drop(streams);
        }
    }
    println!(
        "medians over {} rounds, {} idle connections:",
        o.rounds, o.idle
    );
    for (v, variant) in variants.iter().enumerate() {
        let delta = median(deltas[v].clone());
        let held = median(holds[v].clone());
        println!(
            "  {}: server holds {held:.0}, RSS +{:.1} MiB, {:.1} KiB per held connection",
            variant.name,
            delta / 1024.0,
            delta / held.max(1.0)
        );
    }
    Ok(())
}
