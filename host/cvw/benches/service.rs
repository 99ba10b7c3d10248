//! Cost of one decision through the decision service, split into its parts, in one run:
//! the whole JSON-RPC frame (JSON + base64 + SIP parse + policy + rtjson + JSON out), the
//! whole evapi event (the same, answered in the evapi layout), the policy call alone, and
//! each dialect alone. The difference is what the service adds around the policy.
//!
//! Run: `cargo bench -p cvw --bench service -- --warm-up-time 1 --measurement-time 3`.

use base64::Engine as _;
use criterion::Criterion;
use cvw::decision::DecisionService;
use cvw::decision::dialect::{KamailioEvapi, KamailioJson, OpenSipsJson};
use cvw::decision::transport::{evapi, jsonrpc, netstring};
use cvw::message::SipRequest;
use cvw::policy::model::{Contact, RequestContext, Source};
use cvw::policy::{PolicyHost, RuntimeSettings, StaticDirectory, builtin};
use serde_json::json;
use std::hint::black_box;
use std::sync::Arc;

const INVITE: &str = "INVITE sip:alice@corp.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-bench-1;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Bob Jones\" <sip:bob@corp.example>;tag=a73kszlfl\r\n\
To: <sip:alice@corp.example>\r\n\
Call-ID: 1j9FpLxk3uxtm8tn@127.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:bob@127.0.0.1:5071>\r\n\
Supported: replaces, timer\r\n\
User-Agent: UC/1.0\r\n\
Content-Length: 0\r\n\r\n";

fn host() -> PolicyHost {
    let alice = StaticDirectory::user("sip:alice@corp.example", "tel:+14255550101", true);
    let config = StaticDirectory::minimal_config();
    let host = PolicyHost::new(RuntimeSettings::default()).expect("runtime");
    let wasm = builtin::default_policy().expect("default policy built");
    host.publish(
        wasm,
        "bench",
        Arc::new(StaticDirectory::new(vec![alice], config)),
    )
    .expect("publish");
    host
}

fn contacts() -> Vec<Contact> {
    vec![
        Contact {
            uri: "sip:alice@127.0.0.1:5071".into(),
            next_hop: None,
            instance: None,
            user_agent: Some("UC/1.0".into()),
        },
        Contact {
            uri: "sip:alice@127.0.0.1:5072;transport=tcp".into(),
            next_hop: None,
            instance: None,
            user_agent: Some("UC-Mobile/1.0".into()),
        },
    ]
}

fn frame() -> Vec<u8> {
    let params = json!({
        "msg": base64::engine::general_purpose::STANDARD.encode(INVITE),
        "source": "uc",
        "contacts": contacts(),
    });
    json!({ "jsonrpc": "2.0", "id": 1, "method": "route", "params": params })
        .to_string()
        .into_bytes()
}

/// The route event the example config's `route[CVW]` sends over evapi.
fn event() -> Vec<u8> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        r#"{{"hook":"route","tindex":1,"tlabel":2,"source":"uc","contacts":[["{}","","{}",""],["{}","","{}",""]],"msg":"{}"}}"#,
        b64("sip:alice@127.0.0.1:5071"),
        b64("UC/1.0"),
        b64("sip:alice@127.0.0.1:5072;transport=tcp"),
        b64("UC-Mobile/1.0"),
        b64(INVITE)
    )
    .into_bytes()
}

fn main() {
    let host = host();
    let svc = DecisionService::new(Arc::new(host.clone()));
    let payload = frame();
    let route_event = event();
    let req = SipRequest::parse(INVITE.as_bytes()).expect("INVITE parses");
    let ctx = RequestContext {
        source: Source::Uc,
        contacts: contacts(),
    };
    let decision = host.on_request(&req, &ctx).value;

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("service/jsonrpc route frame (whole decision)", |b| {
        b.iter(|| {
            netstring::encode(&jsonrpc::answer_frame(&svc, black_box(&payload)).unwrap_or_default())
        })
    });
    c.bench_function("service/evapi route event (whole decision)", |b| {
        b.iter(|| evapi::answer_event(&svc, black_box(&route_event)))
    });
    c.bench_function("service/policy on_request only", |b| {
        b.iter(|| host.on_request(black_box(&req), black_box(&ctx)))
    });
    c.bench_function("service/SIP parse only", |b| {
        b.iter(|| SipRequest::parse(black_box(INVITE.as_bytes())))
    });
    c.bench_function("adapters/kamailio rtjson mapping", |b| {
        b.iter(|| KamailioJson.decision(black_box(&decision), 1))
    });
    c.bench_function("adapters/kamailio evapi answer", |b| {
        b.iter(|| KamailioEvapi::new(1, 2).decision(black_box(&decision)))
    });
    c.bench_function("adapters/opensips mapping", |b| {
        b.iter(|| OpenSipsJson.decision(black_box(&decision), 1))
    });
    c.final_summary();
}
