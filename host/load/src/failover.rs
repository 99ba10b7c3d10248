//! `cvw-load failover`: `cvw serve` killed with SIGKILL under an open-loop call load
//! through Kamailio over evapi (the example config), then started again (issue 11: faults
//! under load). Each call is a two-branch ring of Alice (her desk through the trunk, her
//! soft client); a call that reached the desk was decided by the host (forked), one that
//! did not was routed plain. The figures:
//!
//! - how long after the kill calls are routed plain at once (Kamailio sees the evapi
//!   connection close and stops asking), and how many calls in between waited for the
//!   config's decision timeout;
//! - calls left without a final response (the goal is none);
//! - how long after the restart calls are forked again (the host reconnects to evapi);
//! - then Kamailio itself restarted under the same load (`--kamailio-restart-at`): how
//!   long after it is back the host decides again, and what became of the calls it had
//!   when it stopped (they die with it; a phone would send its INVITE again, this load
//!   generator does not) — every call without a final response must be one of those or
//!   one sent while Kamailio was down, and the host logs the decisions it could not
//!   deliver.

use crate::serve::{ServeProcess, cvw_binary};
use crate::service::{self, ALICE};
use crate::sip::{CallTrace, Pace, busy_uas, calls, register};
use anyhow::{Context, bail};
use cvw_testkit::kamailio;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

pub struct Options {
    pub rate: u32,
    pub seconds: u64,
    pub kill_at: u64,
    pub restart_at: u64,
    /// 0: Kamailio is not restarted.
    pub kamailio_restart_at: u64,
}

/// The example's decision timeout (`CVW_DECISION_TIMEOUT_MS`): a call asked of a host
/// that died waits this long, then is routed plain.
const DECISION_TIMEOUT_MS: u32 = 500;

pub fn run(load_rt: &tokio::runtime::Runtime, tmp: &Path, o: &Options) -> anyhow::Result<()> {
    if !(o.kill_at < o.restart_at && o.restart_at < o.seconds) {
        bail!("--kill-at < --restart-at < --seconds, please");
    }
    if o.kamailio_restart_at != 0
        && !(o.restart_at < o.kamailio_restart_at && o.kamailio_restart_at < o.seconds)
    {
        bail!("--restart-at < --kamailio-restart-at < --seconds, please");
    }
    load_rt.block_on(run_async(tmp, o))
}

async fn run_async(tmp: &Path, o: &Options) -> anyhow::Result<()> {
    let pbx = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let pbx_addr = pbx.local_addr()?;
    // The directory `cvw serve` reads (the in-process host it also makes is not used).
    drop(service::alice_policy(
        tmp,
        "directory.toml",
        pbx_addr,
        "pbx.corp.example",
    )?);
    let unused: SocketAddr = "127.0.0.1:9".parse()?;
    let mut kam = kamailio::Kamailio::start(&kamailio::Setup {
        host_jsonrpc: unused,
        host_http: unused,
        pbx: pbx_addr,
        host_ua: unused,
        decision_timeout_ms: DECISION_TIMEOUT_MS,
        extra: vec![],
        transform: None,
        shm_mb: 1024,
        janssonrpcc: false,
        module: None,
    })?;
    let client = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    register(&client, kam.sip).await?;
    let desk_calls: Arc<Mutex<HashSet<String>>> = Arc::default();
    tokio::spawn(busy_uas(pbx, Some(desk_calls.clone())));
    tokio::spawn(busy_uas(client, None));

    let cvw = cvw_binary(None)?;
    let config = host_config(tmp, kam.evapi)?;
    let log = tmp.join("failover-serve.log");
    let mut host = ServeProcess::spawn(&cvw, &config, &log, "cvw=info")?;
    wait_until_forking(&kam, &desk_calls).await?;
    println!(
        "Kamailio {} over evapi, `cvw serve` pid {}; {} calls/s for {} s, SIGKILL at {} s, started again at {} s",
        kam.sip,
        host.pid(),
        o.rate,
        o.seconds,
        o.kill_at,
        o.restart_at
    );

    let started = Instant::now();
    let sip = kam.sip;
    let seconds = o.seconds;
    let rate = o.rate;
    let load = tokio::spawn(async move {
        let mut traces = Vec::new();
        let r = calls(
            sip,
            ALICE,
            Pace::Rate(rate),
            Duration::from_secs(seconds),
            Some(&mut traces),
        )
        .await;
        r.map(|_| traces)
    });
    tokio::time::sleep_until((started + Duration::from_secs(o.kill_at)).into()).await;
    let killed = Instant::now();
    host.kill()?;
    tokio::time::sleep_until((started + Duration::from_secs(o.restart_at)).into()).await;
    let restarted = Instant::now();
    let mut host = ServeProcess::spawn(&cvw, &config, &log, "cvw=info")?;
    let mut proxy_restart = None;
    if o.kamailio_restart_at != 0 {
        tokio::time::sleep_until((started + Duration::from_secs(o.kamailio_restart_at)).into())
            .await;
        let stopped = Instant::now();
        // Blocking (stop, start, wait until it listens): off the load's one thread.
        kam = tokio::task::spawn_blocking(move || kam.restart().map(|()| kam))
            .await
            .context("restart task")??;
        proxy_restart = Some((stopped, Instant::now()));
    }
    let traces = load.await.context("load task")??;
    host.kill()?;

    let desk = desk_calls.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let host_restart = (started, killed, restarted);
    report(&traces, &desk, host_restart, proxy_restart.map(|(s, _)| s));
    if let Some((stopped, back)) = proxy_restart {
        report_proxy_restart(&traces, &desk, stopped, back);
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        let undelivered: u64 = log
            .lines()
            .filter_map(|l| {
                l.split("undelivered=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        println!(
            "the host logged {undelivered} decisions it could not deliver, {} lost connections and {} reconnections",
            log.matches("connection lost").count() + log.matches("closed the connection").count(),
            log.matches("Kamailio confirmed the connection").count()
        );
    }
    drop(kam);
    Ok(())
}

fn host_config(tmp: &Path, evapi: SocketAddr) -> anyhow::Result<PathBuf> {
    let control = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let path = tmp.join("failover-cvw.toml");
    std::fs::write(
        &path,
        format!(
            "directory = \"{}\"\n[control]\nlisten = \"{control}\"\n[decision]\nevapi = \"{evapi}\"\n",
            tmp.join("directory.toml").display()
        ),
    )?;
    Ok(path)
}

/// Single calls until one rings the desk: the host is connected and deciding.
async fn wait_until_forking(
    kam: &kamailio::Kamailio,
    desk: &Mutex<HashSet<String>>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let _ = calls(
            kam.sip,
            ALICE,
            Pace::InFlight(1),
            Duration::from_millis(200),
            None,
        )
        .await?;
        if !desk.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            return Ok(());
        }
    }
    bail!(
        "the host did not start deciding within 30 s:\n{}",
        kam.log_tail()
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The host's kill and restart; `until`: where the proxy's restart begins (calls from
/// then on are [`report_proxy_restart`]'s).
fn report(
    traces: &[CallTrace],
    desk: &HashSet<String>,
    (started, killed, restarted): (Instant, Instant, Instant),
    until: Option<Instant>,
) {
    let forked = |c: &CallTrace| desk.contains(&c.call_id);
    let latency = |c: &CallTrace| c.final_response.map(|(at, _)| at - c.sent);
    let quick = |c: &CallTrace| {
        latency(c).is_some_and(|l| l < Duration::from_millis(u64::from(DECISION_TIMEOUT_MS) / 2))
    };
    let lost = traces.iter().filter(|c| c.final_response.is_none()).count();
    let before = traces.iter().filter(|c| c.sent < killed);
    let (before_n, before_forked) =
        before.fold((0, 0), |(n, f), c| (n + 1, f + usize::from(forked(c))));
    // After the kill: the first call routed plain without waiting for the timeout.
    let down: Vec<&CallTrace> = traces
        .iter()
        .filter(|c| c.sent >= killed && c.sent < restarted)
        .collect();
    let plain_at = down
        .iter()
        .find(|c| !forked(c) && quick(c))
        .map(|c| c.sent - killed);
    let waited: Vec<&&CallTrace> = down.iter().filter(|c| !quick(c)).collect();
    let waited_max = waited.iter().filter_map(|c| latency(c)).max();
    // Calls in flight at the kill (sent before it, answered after it): asked of the host
    // that died, they get their final response once the decision timeout routes them.
    let in_flight: Vec<&CallTrace> = traces
        .iter()
        .filter(|c| c.sent < killed && c.final_response.is_none_or(|(at, _)| at >= killed))
        .collect();
    let in_flight_plain = in_flight.iter().filter(|c| !forked(c)).count();
    let in_flight_max = in_flight.iter().filter_map(|c| latency(c)).max();
    let up: Vec<&CallTrace> = traces
        .iter()
        .filter(|c| c.sent >= restarted && until.is_none_or(|u| c.sent < u))
        .collect();
    let forked_again = up.iter().position(|c| forked(c));
    let plain_after = forked_again.map_or(0, |i| up[i..].iter().filter(|c| !forked(c)).count());

    let total = traces.len();
    let wall = traces.last().map_or(Duration::ZERO, |c| {
        c.sent.saturating_duration_since(started)
    });
    println!(
        "{total} calls in {:.1} s ({:.0} calls/s offered); {lost} without a final response",
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64().max(0.001)
    );
    println!("before the kill: {before_n} calls, {before_forked} forked by the host");
    println!(
        "in flight at the kill: {} ({in_flight_plain} of them routed plain; longest {:.0} ms to a final response)",
        in_flight.len(),
        in_flight_max.map_or(0.0, ms)
    );
    match plain_at {
        Some(d) => println!(
            "after the kill: calls routed plain at once from {:.0} ms after it; {} calls waited for the {DECISION_TIMEOUT_MS} ms decision timeout (longest {:.0} ms to their final response)",
            ms(d),
            waited.len(),
            waited_max.map_or(0.0, ms)
        ),
        None => println!("after the kill: no call was routed plain at once"),
    }
    match forked_again {
        Some(i) => println!(
            "after the restart: forked again from {:.0} ms after `cvw serve` was started ({} calls routed plain before that, {plain_after} after)",
            ms(up[i].sent - restarted),
            i
        ),
        None => println!("after the restart: no call was forked again"),
    }
}

/// Kamailio stopped at `stopped` and listening again at `back`.
fn report_proxy_restart(
    traces: &[CallTrace],
    desk: &HashSet<String>,
    stopped: Instant,
    back: Instant,
) {
    let forked = |c: &CallTrace| desk.contains(&c.call_id);
    let answered_by = |c: &CallTrace, t: Instant| c.final_response.is_some_and(|(at, _)| at < t);
    let in_flight: Vec<&CallTrace> = traces
        .iter()
        .filter(|c| c.sent < stopped && !answered_by(c, stopped))
        .collect();
    let in_flight_lost = in_flight
        .iter()
        .filter(|c| c.final_response.is_none())
        .count();
    let down: Vec<&CallTrace> = traces
        .iter()
        .filter(|c| c.sent >= stopped && c.sent < back)
        .collect();
    let down_lost = down.iter().filter(|c| c.final_response.is_none()).count();
    let after: Vec<&CallTrace> = traces.iter().filter(|c| c.sent >= back).collect();
    let after_lost = after.iter().filter(|c| c.final_response.is_none()).count();
    let forked_again = after.iter().position(|c| forked(c));
    println!(
        "Kamailio restarted: down for {:.0} ms; {} calls in flight when it stopped ({in_flight_lost} died with it), {} sent while it was down ({down_lost} unanswered)",
        ms(back - stopped),
        in_flight.len(),
        down.len()
    );
    match forked_again {
        Some(i) => println!(
            "after Kamailio was back: forked again from {:.0} ms ({i} calls routed plain before that); {after_lost} of {} calls without a final response",
            ms(after[i].sent - back),
            after.len()
        ),
        None => println!(
            "after Kamailio was back: no call was forked again; {after_lost} of {} calls without a final response",
            after.len()
        ),
    }
}
