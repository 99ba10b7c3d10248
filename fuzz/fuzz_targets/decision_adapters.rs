//! Across the policy boundary: any decision a policy could return, through every proxy
//! adapter (Kamailio JSON for janssonrpcc/http_client, Kamailio's evapi layout, OpenSIPS
//! JSON, `cvw.so`'s native answer), through the decision service that falls back to the
//! failure decision, and, for a two-leg call, through the user agent that writes the
//! legs' INVITEs.
//!
//! Properties: no panic escapes; nothing any of them writes has a line break inside a
//! header line, a status code outside its range or a header name that is not a token;
//! the evapi answer always fits evapi's buffer; a decision the runtime lets through
//! (codes, `policy::bounds`) is encoded by every proxy adapter, within
//! `MAX_JSON_ANSWER`; the service always has an answer.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use cvw::decision::dialect::{Dialect, KamailioEvapi, KamailioJson, NativeAnswer, OpenSipsJson};
use cvw::decision::{DecisionService, HookArgs, HookCall};
use cvw::policy::bounds::MAX_JSON_ANSWER;
use cvw::policy::model::{Decision, RequestContext, Source};
use cvw_fuzz::Fixed;
use cvw_sip::message::{Message, NameAddr};
use cvw_sip::ua::{Body, LegRole, LegSpec, UaConfig, UserAgent};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};

const INVITE: &[u8] = b"INVITE sip:alice@corp.example SIP/2.0\r\n\
    Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
    From: \"Bob\" <sip:bob@corp.example>;tag=1\r\n\
    To: <sip:alice@corp.example>\r\n\
    Call-ID: call-1@test\r\n\
    CSeq: 1 INVITE\r\n\
    Content-Length: 0\r\n\r\n";

static CALL: LazyLock<HookCall> = LazyLock::new(|| {
    let ctx = RequestContext {
        source: Source::Uc,
        contacts: vec![],
    };
    HookCall::of_bytes(INVITE, HookArgs::Route(ctx)).expect("the fixed INVITE parses")
});

thread_local! {
    /// The host's user agent, bound once on loopback with an outbound proxy: every
    /// INVITE it builds goes there, so any target URI is routable.
    static UA: (tokio::runtime::Runtime, UserAgent) = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let config = UaConfig {
            outbound_proxy: Some("sip:127.0.0.1:9".into()),
            leg_token: Some("fuzz".into()),
            ..UaConfig::default()
        };
        let (ua, _) = rt.block_on(UserAgent::bind(config)).expect("the user agent binds");
        (rt, ua)
    };
}

fuzz_target!(|data: &[u8]| cvw_fuzz::run(|| check(data)));

fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(decision) = cvw_fuzz::decision(&mut u) else {
        return;
    };
    let tindex = u32::arbitrary(&mut u).unwrap_or(0);
    let tlabel = u32::arbitrary(&mut u).unwrap_or(0);
    let accepted = cvw_fuzz::accepted_by_runtime(&decision);
    let proxy_kind = !matches!(decision, Decision::Originate(_));
    let outcome = cvw_fuzz::outcome(decision.clone());
    let evapi = KamailioEvapi::new(tindex, tlabel);
    let service = DecisionService::new(Arc::new(Fixed(decision.clone())));

    let dialects: [(&str, &dyn Dialect); 3] = [
        ("kamailio", &KamailioJson),
        ("opensips", &OpenSipsJson),
        ("evapi", &evapi),
    ];
    for (name, dialect) in dialects {
        let check_doc = |doc: &str| match name {
            "evapi" => {}
            _ => cvw_fuzz::assert_json_answer(name, doc),
        };
        match dialect.encode(&outcome) {
            Ok(doc) => {
                if name == "evapi" {
                    cvw_fuzz::assert_evapi_answer(&doc, evapi);
                } else {
                    check_doc(doc.as_str());
                    if accepted {
                        assert!(
                            doc.as_str().len() <= MAX_JSON_ANSWER,
                            "{name}: {} bytes for a decision within bounds",
                            doc.as_str().len()
                        );
                    }
                }
            }
            Err(e) => {
                assert!(
                    !(accepted && proxy_kind),
                    "{name}: a decision within bounds is refused: {e}"
                );
                // The service then answers with the failure decision (the same document
                // when the encoding works, so only this path is run).
                let answer = service
                    .handle(&CALL, dialect)
                    .unwrap_or_else(|e| panic!("{name}: the service has no answer: {e}"));
                if name == "evapi" {
                    cvw_fuzz::assert_evapi_answer(&answer, evapi);
                } else {
                    check_doc(answer.as_str());
                }
            }
        }
    }

    match NativeAnswer::of(&decision) {
        Ok(answer) => cvw_fuzz::assert_native_answer(&answer),
        Err(e) => assert!(
            !(accepted && proxy_kind),
            "native: a decision within bounds is refused: {e}"
        ),
    }

    if let Decision::Originate(plan) = &decision {
        for (leg, role) in [
            (&plan.callback, LegRole::Callback),
            (&plan.callee, LegRole::Callee),
        ] {
            invite(leg, role);
        }
    }
}

/// The leg's INVITE as `TwoLegCall::start` asks the user agent for it.
fn invite(leg: &cvw::policy::model::Leg, role: LegRole) {
    let shows = NameAddr::new(leg.shows.display.clone(), leg.shows.uri.clone());
    let spec = LegSpec {
        target: leg.uri.clone(),
        from: shows.clone(),
        to: NameAddr::new("", leg.uri.clone()),
        asserted: Some(shows),
        role: Some(role),
        headers: Vec::new(),
    };
    let request = UA.with(|(rt, ua)| {
        let _in_runtime = rt.enter();
        ua.leg(spec)
            .invite_request(Some(Body::sdp(b"v=0\r\n".to_vec())))
    });
    let Ok(request) = request else {
        return;
    };
    let bytes = request.to_bytes();
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an end of head");
    let head = String::from_utf8(bytes[..end].to_vec()).expect("the head is UTF-8");
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default();
    assert_eq!(start.split(' ').count(), 3, "start line {start:?}");
    let mut count = 0;
    for line in lines {
        assert!(
            !line.contains(['\r', '\n', '\0']),
            "a line break inside {line:?}"
        );
        let (name, _) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("no name in {line:?}"));
        assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
        count += 1;
    }
    // One line per header the user agent put in, plus Content-Length: none injected.
    assert_eq!(count, request.headers.iter().count() + 1, "{head}");
    if let Ok(Message::Request(parsed)) = Message::parse(&bytes) {
        for name in ["From", "To", "P-Asserted-Identity", "X-CVW-Origination"] {
            assert_eq!(parsed.headers.lines(name).count(), 1, "{name} in {head}");
        }
    }
}
