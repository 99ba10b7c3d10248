//! `cvw-sip`'s parser, the one every SIP byte from the network goes through
//! (`Message::parse`, and `Request::parse` for what a proxy hands over), and its writer.
//!
//! Properties: no panic escapes; what the writer makes of a parsed message has no line
//! break inside a header line and frames its body by Content-Length; written once it
//! reads back as the same message (parse → write → parse → write is stable); and the
//! cheap start-line peek agrees with the parser on what it wrote.
#![no_main]

use cvw_sip::message::{Message, Request, StartLine};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cvw_fuzz::run(|| check(data)));

fn check(data: &[u8]) {
    let _ = StartLine::peek(data);
    if let Ok(request) = Request::parse(data) {
        let written = request.to_bytes();
        assert_framed(&written, &request.body);
        if let Ok(again) = Request::parse(&written) {
            let third = Request::parse(&again.to_bytes())
                .unwrap_or_else(|e| panic!("a request the writer wrote twice does not parse: {e}"));
            assert_eq!(third, again, "parse(write(r)) != r");
        }
    }
    let Ok(message) = Message::parse(data) else {
        return;
    };
    let body = match &message {
        Message::Request(r) => &r.body,
        Message::Response(r) => &r.body,
    };
    let written = message.to_bytes();
    assert_framed(&written, body);
    // Whatever the first pass normalised (compact names, trimmed values, a control
    // character written as a space), the second pass must read exactly what it wrote.
    let Ok(again) = Message::parse(&written) else {
        return;
    };
    let rewritten = again.to_bytes();
    let third = Message::parse(&rewritten)
        .unwrap_or_else(|e| panic!("a message the writer wrote twice does not parse: {e}"));
    assert_eq!(third, again, "parse(write(m)) != m for m = {again:?}");
    match (&again, StartLine::peek(&rewritten)) {
        (Message::Response(r), peek) if (100..=999).contains(&r.code) => {
            assert_eq!(peek, Some(StartLine::Response { code: r.code }))
        }
        (Message::Request(r), Some(StartLine::Request { method })) => {
            assert_eq!(method, r.method.as_str())
        }
        _ => {}
    }
}

/// Head lines with no bare CR or LF, then exactly `Content-Length` bytes of body.
fn assert_framed(bytes: &[u8], body: &[u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of head");
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut length = None;
    for line in head.split("\r\n") {
        assert!(!line.contains(['\r', '\n']), "a line break inside {line:?}");
        if let Some(v) = line.strip_prefix("Content-Length: ") {
            assert!(length.is_none(), "two Content-Length lines");
            length = v.parse::<usize>().ok();
        }
    }
    assert_eq!(length, Some(body.len()), "Content-Length");
    assert_eq!(&bytes[end + 4..], body, "body");
}
