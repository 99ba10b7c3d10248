//! Scenario files (`Scenario::parse`), which `cvw policy test` reads: the hook's input
//! (a SIP request from its parts, a reply, a click to call or dial-out) and `[expect]`.
//!
//! Properties: no panic escapes, not even in an error's message; a request built from a
//! scenario's parts is written without a line break inside a header line; `[expect]`
//! compared with itself has no difference.
#![no_main]

use cvw::message::SipRequest;
use cvw::scenario::{Input, RequestSpec, Scenario, compare};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| cvw_fuzz::run(|| check(data)));

fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let scenario = match Scenario::parse(text, Path::new("examples/scenarios/fuzz.toml")) {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(compare(&scenario.expect, &scenario.expect).is_empty());
    let spec = match &scenario.input {
        Input::Request(spec, _) | Input::Reply(spec, _) | Input::Failure(spec, _) => spec,
        Input::ClickToCall(_) | Input::DialOut(_) => return,
    };
    if let Ok(request) = built(spec) {
        let bytes = request.request().to_bytes();
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or(bytes.len());
        for line in String::from_utf8_lossy(&bytes[..end]).split("\r\n").skip(1) {
            assert!(!line.contains(['\r', '\n']), "a line break inside {line:?}");
        }
    }
}

/// The request as `cvw policy test` builds it (`Scenario::sip_request`).
fn built(spec: &RequestSpec) -> Result<SipRequest, cvw::message::MessageError> {
    let mut builder = SipRequest::builder(&spec.method, &spec.uri)
        .from(&spec.from)
        .to(spec.to.as_deref().unwrap_or(&spec.uri))
        .call_id(spec.call_id.as_deref().unwrap_or("scenario@cvw"));
    for h in &spec.headers {
        builder = builder.header(&h.name, &h.value);
    }
    builder.body(spec.body.as_bytes()).build()
}
