//! `cvw-load`: load figures for the decision service and for Kamailio with Call via Work
//! (SIP over loopback). A measuring tool, not a test: it prints what it measured. This
//! file holds the command line and hands each mode to its module; what is measured and
//! how lives in [`measure`].
//!
//! - `cvw-load decisions` ([`decisions`]): JSON-RPC decisions/s against the in-process
//!   decision service (its own 2-thread runtime, the generator on another thread), latency
//!   percentiles, and host CPU per decision; `--rate` for latency at a fixed offered load.
//! - `cvw-load sip` ([`sip`]): calls/s of a two-branch simultaneous ring through a real
//!   Kamailio or (`--proxy opensips`) OpenSIPS, once with the cvw decision and once with
//!   the same fork written statically in the config, in one run; proxy and host CPU per
//!   call.
//! - `cvw-load originate` ([`originate`]): two-leg click-to-call setups (RFC 3725 Flow IV)
//!   through the host's own SIP user agent (`SipOriginator` over `cvw-sip`), to a scripted
//!   desk phone and callee phone that run in a child process of the tool (`cvw-load
//!   phones`, [`phones`]), so the host's memory and CPU are this process's alone.
//!   Setups/s (open or closed loop), failed calls, host memory per connected call and host
//!   CPU per call; `--kamailio` puts a real Kamailio in between as the host's outbound
//!   proxy.
//! - `cvw-load failover` ([`failover`]): `cvw serve` killed (SIGKILL) under an open-loop
//!   load through Kamailio over evapi and started again: time until calls are routed
//!   plain, calls without a final response, time until the host decides again.
//! - `cvw-load api` ([`api`]): the click-to-call API of a real `cvw serve` under load and
//!   abuse: requests/s and server CPU per request with a valid token, a wrong one (401)
//!   and from a blocked source (429), and RSS with 10 000 idle connections open.

mod api;
mod decisions;
mod failover;
mod measure;
mod originate;
mod phones;
mod serve;
mod service;
mod sip;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    about = "Load figures for the cvw decision service and Kamailio/OpenSIPS with Call via Work"
)]
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
    /// Two-branch simultaneous ring through a proxy: cvw decision vs static fork.
    Sip {
        /// The proxy: Kamailio (examples/kamailio/) or OpenSIPS (examples/opensips/, built
        /// by scripts/build-opensips).
        #[arg(long, value_enum, default_value_t = sip::ProxyKind::Kamailio)]
        proxy: sip::ProxyKind,
        /// Seconds per variant.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Calls in flight.
        #[arg(long, default_value_t = 100)]
        concurrency: usize,
        /// SIP worker processes (Kamailio `children`, OpenSIPS `udp_workers`).
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
        /// Then the same with `cvw.so` deciding in the proxy's workers (a second proxy;
        /// needs `scripts/build-kamailio-module --release` or, with `--proxy opensips`,
        /// `scripts/build-opensips-module --release`).
        #[arg(long)]
        module: bool,
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
    /// `cvw serve` killed with SIGKILL under an open-loop load through Kamailio (evapi),
    /// then started again: how soon calls are routed plain, calls lost, how soon the
    /// restarted host decides again. Needs `cargo build --release -p cvw` beside this tool.
    Failover {
        /// Offered calls/s (open loop).
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// Seconds of load.
        #[arg(long, default_value_t = 14)]
        seconds: u64,
        /// When to kill the host (seconds into the load).
        #[arg(long, default_value_t = 4)]
        kill_at: u64,
        /// When to start it again.
        #[arg(long, default_value_t = 7)]
        restart_at: u64,
        /// When to restart Kamailio itself (0: not).
        #[arg(long, default_value_t = 10)]
        kamailio_restart_at: u64,
    },
    /// The click-to-call API of a `cvw serve` child process: auth throughput, the 401
    /// path's cost, memory with idle connections.
    Api {
        /// The `cvw` binary (default: the one beside this tool).
        #[arg(long)]
        cvw: Option<std::path::PathBuf>,
        /// Seconds per variant and round.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Keep-alive connections sending requests.
        #[arg(long, default_value_t = 8)]
        connections: usize,
        /// Rounds; the medians are reported.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Idle connections for the memory figure (0: skip).
        #[arg(long, default_value_t = 10_000)]
        idle: usize,
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
                service_rt.block_on(service::start(&tmp, "127.0.0.1:5090".parse()?))?;
            let wire = if evapi {
                let kamailio = std::net::TcpListener::bind("127.0.0.1:0")?;
                let addr = kamailio.local_addr()?;
                let _in_service_rt = service_rt.enter();
                let _status = service.connect_evapi(addr);
                decisions::Wire::Evapi(kamailio)
            } else {
                decisions::Wire::JsonRpc(service.jsonrpc)
            };
            let r = load_rt.block_on(decisions::run(wire, seconds, connections, depth, rate));
            service::report_metrics(&host);
            service_rt.block_on(service.stop());
            r
        }
        Mode::Sip {
            proxy,
            seconds,
            concurrency,
            children,
            janssonrpcc,
            rate,
            rounds,
            module,
        } => sip::run(
            &service_rt,
            &load_rt,
            &tmp,
            &sip::Options {
                seconds,
                pace: rate.map_or(sip::Pace::InFlight(concurrency), sip::Pace::Rate),
                children,
                janssonrpcc,
                module,
                rounds,
                proxy,
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
        Mode::Failover {
            rate,
            seconds,
            kill_at,
            restart_at,
            kamailio_restart_at,
        } => failover::run(
            &load_rt,
            &tmp,
            &failover::Options {
                rate,
                seconds,
                kill_at,
                restart_at,
                kamailio_restart_at,
            },
        ),
        Mode::Api {
            cvw,
            seconds,
            connections,
            rounds,
            idle,
        } => api::run(
            &load_rt,
            &tmp,
            &api::Options {
                cvw,
                seconds,
                connections,
                rounds,
                idle,
            },
        ),
        Mode::Phones => service_rt.block_on(phones::serve()),
    };
    let _ = std::fs::remove_dir_all(&tmp);
    result
}
