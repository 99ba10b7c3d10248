//! JSON-RPC 2.0 in netstrings, as Kamailio's janssonrpcc speaks it: the framing
//! (`transport::netstring::NetstringCodec`) and each frame's answer
//! (`transport::jsonrpc::answer_frame`) with the Kamailio JSON dialect.
//!
//! The first byte of an input is the size of the reads the stream arrives in; the rest is
//! the stream.
//!
//! Properties: no panic escapes; the frames (or the error) do not depend on how the stream
//! was cut into reads; a frame encoded again decodes to itself; every answer is a JSON-RPC
//! 2.0 response (or a batch of them) whose result obeys the line and code rules.
#![no_main]

use cvw::decision::DecisionService;
use cvw::decision::transport::jsonrpc::answer_frame;
use cvw::decision::transport::netstring::{self, NetstringCodec};
use cvw_fuzz::Echo;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::{Arc, LazyLock};
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

static SERVICE: LazyLock<DecisionService> = LazyLock::new(|| DecisionService::new(Arc::new(Echo)));

fuzz_target!(|data: &[u8]| cvw_fuzz::run(|| check(data)));

/// The frames of `stream` read `read` bytes at a time, and whether the framing failed.
fn frames(stream: &[u8], read: usize) -> (Vec<Vec<u8>>, bool) {
    let mut codec = NetstringCodec;
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in stream.chunks(read.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => out.push(frame.to_vec()),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fn check(data: &[u8]) {
    let Some((&read, stream)) = data.split_first() else {
        return;
    };
    let (whole, whole_failed) = frames(stream, stream.len());
    let (cut, cut_failed) = frames(stream, usize::from(read));
    assert_eq!(whole, cut, "frames depend on the reads");
    assert_eq!(
        whole_failed, cut_failed,
        "framing error depends on the reads"
    );

    for frame in &whole {
        let (again, failed) = frames(&netstring::encode(frame), usize::MAX);
        assert!(
            !failed && again.len() == 1 && &again[0] == frame,
            "netstring round trip"
        );

        let Some(answer) = answer_frame(&SERVICE, frame) else {
            continue;
        };
        let answer: Value = serde_json::from_slice(&answer).expect("the answer is JSON");
        match answer {
            Value::Array(answers) => {
                assert!(!answers.is_empty(), "an empty batch answer");
                answers.iter().for_each(assert_response);
            }
            one => assert_response(&one),
        }
    }
}

fn assert_response(r: &Value) {
    assert_eq!(r.get("jsonrpc"), Some(&Value::from("2.0")), "{r}");
    assert!(r.get("id").is_some(), "no id in {r}");
    match (r.get("result"), r.get("error")) {
        (Some(result), None) => {
            let doc = serde_json::to_string(result).expect("re-encodes");
            cvw_fuzz::assert_json_answer("jsonrpc", &doc);
        }
        (None, Some(e)) => {
            assert!(e.get("code").and_then(Value::as_i64).is_some(), "{r}");
            assert!(e.get("message").and_then(Value::as_str).is_some(), "{r}");
        }
        _ => panic!("neither result nor error: {r}"),
    }
}
