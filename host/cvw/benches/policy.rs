//! Cost of a policy decision through the wasm runtime against the same logic compiled
//! natively (the `cvw-guest` crate called through its `Message`/`Services` traits), in
//! the same run; the cost of publishing a version; and decisions during swaps under load.
//!
//! Run: `cargo bench -p cvw --bench policy -- --warm-up-time 1 --measurement-time 3`.
//! Besides criterion's estimates it prints a per-call p50 of each path and their ratio.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use cvw::message::SipRequest;
use cvw::policy::model::{self, Contact, Decision, RequestContext, Source};
use cvw::policy::{DirectoryView, PolicyHost, RuntimeSettings, StaticDirectory, builtin};
use cvw_guest::model as g;
use cvw_guest::{CallViaWork, Hooks, Message, Services};

const SDP: &str = "v=0\r\no=bob 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\n\
c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 9 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\n\
a=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n\
a=ptime:20\r\na=sendrecv\r\n";

/// An INVITE with 12 headers and a ~300-byte SDP offer, parsed from the wire.
fn invite() -> SipRequest {
    let text = format!(
        "INVITE sip:alice@corp.example SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:5071;branch=z9hG4bK-bench-1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: \"Bob Jones\" <sip:bob@corp.example>;tag=a73kszlfl\r\n\
         To: <sip:alice@corp.example>\r\n\
         Call-ID: 1j9FpLxk3uxtm8tn@127.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:bob@127.0.0.1:5071;transport=tcp>\r\n\
         Supported: replaces, timer\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, REFER, NOTIFY, OPTIONS\r\n\
         User-Agent: UC/1.0\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    SipRequest::parse(text.as_bytes()).expect("benchmark INVITE parses")
}

fn context() -> RequestContext {
    RequestContext {
        source: Source::Uc,
        contacts: vec![Contact {
            uri: "sip:alice@127.0.0.1:5072;transport=tcp".into(),
            next_hop: None,
            instance: None,
            user_agent: Some("UC/1.0".into()),
        }],
    }
}

fn directory() -> Arc<StaticDirectory> {
    let user = |uc: &str, line: &str| StaticDirectory::user(uc, line, true);
    let users = (0..50)
        .map(|i| {
            user(
                &format!("sip:user{i}@corp.example"),
                &format!("tel:+1425555{:04}", 1000 + i),
            )
        })
        .chain([user("sip:alice@corp.example", "tel:+14255550101")])
        .collect();
    Arc::new(StaticDirectory::new(
        users,
        StaticDirectory::minimal_config(),
    ))
}

// ---- the same logic natively: cvw-guest's traits over the host's types ----

struct NativeMessage<'a>(&'a SipRequest);

impl Message for NativeMessage<'_> {
    fn method(&self) -> String {
        self.0.method().to_owned()
    }
    fn request_uri(&self) -> String {
        self.0.request_uri().to_owned()
    }
    fn call_id(&self) -> String {
        self.0.call_id().to_owned()
    }
    fn from(&self) -> g::NameAddr {
        self.0.from().clone()
    }
    fn to(&self) -> g::NameAddr {
        self.0.to().clone()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.0.header(name).map(str::to_owned)
    }
    fn headers(&self, name: &str) -> Vec<String> {
        self.0.headers(name).map(str::to_owned).collect()
    }
    fn body(&self) -> Vec<u8> {
        self.0.body().to_vec()
    }
}

struct NativeServices(Arc<StaticDirectory>);

impl Services for NativeServices {
    fn lookup(&self, address: &str) -> Option<g::User> {
        // The host and the policy share cvw-model: the host's record is the policy's.
        self.0.lookup(address)
    }
    fn log(&self, _level: g::Level, _message: &str) {}
    fn count(&self, _name: &str, _delta: u64) {}
    fn now(&self) -> u64 {
        1_764_151_200
    }
}

/// What the wasm path copies into the guest, copied for the native baseline too.
fn native_context(ctx: &RequestContext) -> g::RequestContext {
    ctx.clone()
}

fn published_host() -> PolicyHost {
    let host = PolicyHost::new(RuntimeSettings::default()).expect("runtime starts");
    let wasm = builtin::default_policy().expect("the default policy was built");
    host.publish(wasm, builtin::DEFAULT_ORIGIN, directory())
        .expect("default policy publishes");
    host
}

/// Median of `n` individually timed calls.
fn p50(n: usize, mut f: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    samples.sort_unstable();
    samples[n / 2]
}

fn decision_latency(c: &mut Criterion) {
    let host = published_host();
    let (req, ctx) = (invite(), context());
    let services = NativeServices(directory());
    let native =
        CallViaWork::configure(&directory().policy_config(), &services).expect("native configure");

    let wasm_decision = host.on_request(&req, &ctx);
    let native_decision = native.on_request(&NativeMessage(&req), native_context(&ctx), &services);
    assert!(
        wasm_decision.failure.is_none(),
        "{:?}",
        wasm_decision.failure
    );
    match (&wasm_decision.value, &native_decision) {
        (Decision::Fork(w), g::Decision::Fork(n)) => {
            assert!(w.targets.len() == 2 && n.targets.len() == 2)
        }
        other => panic!("expected a fork to 2 targets from both: {other:?}"),
    }

    let mut group = c.benchmark_group("invite-fork-2");
    group.bench_function("wasm", |b| {
        b.iter(|| black_box(host.on_request(black_box(&req), black_box(&ctx))))
    });
    group.bench_function("native", |b| {
        b.iter(|| {
            let ctx = native_context(black_box(&ctx));
            black_box(native.on_request(&NativeMessage(black_box(&req)), ctx, &services))
        })
    });
    group.finish();

    let wasm = p50(200_000, || {
        black_box(host.on_request(&req, &ctx));
    });
    let native = p50(200_000, || {
        black_box(native.on_request(&NativeMessage(&req), native_context(&ctx), &services));
    });
    println!(
        "p50 INVITE → fork to 2: wasm {:.2} µs, native {:.2} µs, ratio {:.1}×",
        wasm.as_secs_f64() * 1e6,
        native.as_secs_f64() * 1e6,
        wasm.as_secs_f64() / native.as_secs_f64()
    );

    // The fixed cost of a hook call: a reply hook whose policy does nothing but answer.
    let reply = model::BranchReply {
        label: "desk".into(),
        uri: "sip:+14255550101@pbx.corp.example;user=phone".into(),
        code: 180,
        reason: "Ringing".into(),
        headers: vec![],
    };
    let floor = p50(200_000, || {
        black_box(host.on_reply(&req, &reply));
    });
    println!(
        "p50 on-reply (the per-call floor): wasm {:.2} µs",
        floor.as_secs_f64() * 1e6
    );

    // Where the time goes: the same INVITE without contacts (fork to the desk alone), and
    // to nobody in the directory (lookup misses, no fork).
    let bare = RequestContext {
        source: Source::Uc,
        contacts: vec![],
    };
    let desk_only = p50(100_000, || {
        black_box(host.on_request(&req, &bare));
    });
    let nobody = SipRequest::builder("INVITE", "sip:nobody@corp.example")
        .from("<sip:bob@corp.example>;tag=1")
        .to("<sip:nobody@corp.example>")
        .call_id("bench-nobody")
        .build()
        .expect("request builds");
    let miss = p50(100_000, || {
        black_box(host.on_request(&nobody, &bare));
    });
    let with_sdp = SipRequest::builder("INVITE", "sip:nobody@corp.example")
        .from("<sip:bob@corp.example>;tag=1")
        .to("<sip:nobody@corp.example>")
        .call_id("bench-nobody")
        .body(SDP)
        .build()
        .expect("request builds");
    let miss_sdp = p50(100_000, || {
        black_box(host.on_request(&with_sdp, &bare));
    });
    println!(
        "p50 breakdown: fork to desk only {:.2} µs, unknown callee {:.2} µs, \
         unknown callee with SDP {:.2} µs",
        desk_only.as_secs_f64() * 1e6,
        miss.as_secs_f64() * 1e6,
        miss_sdp.as_secs_f64() * 1e6
    );

    let mut parts = c.benchmark_group("invite-parts");
    parts.bench_function("unknown-callee", |b| {
        b.iter(|| black_box(host.on_request(&nobody, &bare)))
    });
    parts.bench_function("on-reply", |b| {
        b.iter(|| black_box(host.on_reply(&req, &reply)))
    });
    parts.finish();

    // A new version costs each thread one instantiate + configure on its first call.
    let mut first_calls: Vec<Duration> = (0..50)
        .map(|_| {
            host.republish_with(directory()).expect("republishes");
            let t = Instant::now();
            black_box(host.on_request(&req, &ctx));
            t.elapsed()
        })
        .collect();
    first_calls.sort_unstable();
    println!(
        "p50 first call on a thread after a swap (instantiate + configure + decide): {:.1} µs",
        first_calls[25].as_secs_f64() * 1e6
    );

    let mut lookup = c.benchmark_group("directory");
    let dir = directory();
    lookup.bench_function("lookup-native", |b| {
        b.iter(|| black_box(dir.lookup(black_box("sip:alice@corp.example"))))
    });
    lookup.finish();
}

fn publish_time(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish");
    group.sample_size(10);
    let wasm = builtin::default_policy().expect("the default policy was built");
    group.bench_function("compile+validate+swap", |b| {
        b.iter_batched(
            || PolicyHost::new(RuntimeSettings::default()).expect("runtime starts"),
            |host| black_box(host.publish(wasm, "bench", directory()).expect("publishes")),
            BatchSize::PerIteration,
        )
    });
    let host = published_host();
    group.bench_function("validate+swap (compiled, 51 users)", |b| {
        b.iter(|| black_box(host.republish_with(directory()).expect("republishes")))
    });
    group.finish();
}

/// Not a criterion benchmark: counts failed decisions while versions change under load.
fn decisions_during_swaps() {
    let host = published_host();
    let default = builtin::default_policy().expect("the default policy was built");
    let office_hours = std::fs::read(builtin::OFFICE_HOURS_PATH).unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(4));
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (host, stop, start) = (host.clone(), stop.clone(), start.clone());
            thread::spawn(move || {
                let (req, ctx) = (invite(), context());
                let (mut calls, mut failures) = (0u64, Vec::new());
                start.wait();
                while !stop.load(Ordering::Relaxed) {
                    let outcome = host.on_request(&req, &ctx);
                    if let Some(failure) = outcome.failure {
                        failures.push(failure);
                    }
                    calls += 1;
                }
                (calls, failures)
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    let mut publish_times = Vec::new();
    for swap in 0..20 {
        let started = Instant::now();
        let published = match swap % 2 {
            0 if !office_hours.is_empty() => {
                host.publish(&office_hours, "office-hours", directory())
            }
            _ => host.publish(default, "default", directory()),
        };
        publish_times.push(started.elapsed());
        if let Err(e) = published {
            println!("swap {swap} refused: {e}");
        }
        thread::sleep(Duration::from_millis(25));
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = t.elapsed();
    let mut calls = 0;
    for worker in workers {
        let (n, failures) = worker.join().expect("worker finished");
        calls += n;
        for failure in failures {
            println!("failed decision during swap: {failure:?}");
        }
    }
    publish_times.sort_unstable();
    println!(
        "20 swaps under 3 loaded threads: {calls} decisions in {:.2} s, {} failed; publish p50 {:.2} ms, max {:.2} ms",
        elapsed.as_secs_f64(),
        host.metrics().total_failures(),
        publish_times[10].as_secs_f64() * 1e3,
        publish_times[19].as_secs_f64() * 1e3,
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    decision_latency(&mut c);
    publish_time(&mut c);
    decisions_during_swaps();
    c.final_summary();
}
