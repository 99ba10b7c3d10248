//! `cvw-load originate`: two-leg calls placed by the host's `SipOriginator`, the way the
//! API places a click to call (CVW-10..14), to phones in a child process ([`crate::phones`]).
//! The phones are a second `cvw-sip` user agent stack, so they cost about what the host
//! costs: in the same process they would halve every figure and blur the memory one. This
//! module drives the calls and tallies them; [`api`] holds calls through the HTTP API
//! instead of the originator.

mod api;

use crate::measure::{Footprint, Lat, process_cpu, thread_cpu};
use crate::phones::PhonesChild;
use crate::service::{self, ALICE, DESK};
use anyhow::bail;
use cvw::decision::Running;
use cvw::origination::sip::SipOriginator;
use cvw::origination::{CallState, Originator};
use cvw::policy::model;
use cvw_sip::transport::Protocol;
use cvw_sip::ua::{UaConfig, UserAgent};
use cvw_testkit::kamailio;
use std::collections::BTreeMap;
use std::net::SocketAddr;
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

/// A click to call from Alice's desk phone to the callee, both phones reached directly.
fn plan(phones: &PhonesChild) -> model::OriginationPlan {
    model::OriginationPlan {
        user: ALICE.into(),
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
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
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
    kamailio: kamailio::Kamailio,
    service: Running,
}

fn start_proxy(
    host_rt: &Runtime,
    tmp: &std::path::Path,
    phones: &PhonesChild,
    host_ua: SocketAddr,
) -> anyhow::Result<Proxy> {
    let (_policy, service) = host_rt.block_on(service::start(tmp, phones.desk))?;
    let kamailio = kamailio::Kamailio::start(&kamailio::Setup {
        host_jsonrpc: service.jsonrpc,
        host_http: service.http,
        pbx: phones.desk,
        host_ua,
        decision_timeout_ms: 1000,
        extra: vec![("CVW_CHILDREN".into(), "4".into())],
        transform: None,
        shm_mb: 1024,
        janssonrpcc: false,
        module: None,
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
            let api = host_rt.block_on(api::serve(tmp, &phones, originator))?;
            load_rt.block_on(api::held_calls(api, &phones, hold))?;
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
    let before = Footprint::now(phones.pid());
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
    let after = Footprint::now(phones.pid());
    let (heap, rss, phones_rss) = before.per_call(&after, n_up, 0);
    println!("{n_up} of {hold} calls connected at once: host live heap {heap:.0} bytes per call");
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
