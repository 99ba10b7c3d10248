//! Kamailio's evapi events as the host reads them (`transport::evapi::read_frame`): route
//! events (JSON with base64 contacts and message), call events for the call log, and the
//! `ready <nonce>` confirmation; the answer in the evapi layout.
//!
//! An input is one connection's frame payloads, separated by the byte 0xFF (never in
//! UTF-8 JSON), read by one service with its call log on, so a route event and the call
//! events of the same call meet.
//!
//! Properties: no panic escapes; every answer has the layout of `docs/evapi-answer.md`,
//! names the transaction its event named, has no header line break and a code in range,
//! and fits evapi's buffer; every call-log record is one JSON line.
#![no_main]

use cvw::calllog::{CallLogError, CallLogSink, CallRecord};
use cvw::decision::DecisionService;
use cvw::decision::dialect::KamailioEvapi;
use cvw::decision::transport::evapi::{Frame, read_frame};
use cvw_fuzz::Echo;
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

const NONCE: &str = "0123456789abcdef0123456789abcdef";

/// Checks each record as the JSON-lines file would write it.
struct OneLine;

impl CallLogSink for OneLine {
    fn write(&self, record: &CallRecord) -> Result<(), CallLogError> {
        let line = serde_json::to_string(record).expect("a call-log record encodes");
        assert!(!line.contains('\n'), "call-log record on two lines: {line}");
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| cvw_fuzz::run(|| check(data)));

fn check(data: &[u8]) {
    let svc = DecisionService::new(Arc::new(Echo)).with_call_log(Arc::new(OneLine));
    for frame in data.split(|&b| b == 0xFF) {
        match read_frame(&svc, frame, NONCE) {
            Frame::Ready => assert_eq!(frame, format!("ready {NONCE}").as_bytes()),
            Frame::Nothing => {}
            Frame::Answer(answer) => {
                // The transaction the event named, read as leniently as the host reads
                // it (serde skips the other fields unchecked).
                #[derive(serde::Deserialize)]
                struct Transaction {
                    tindex: u32,
                    tlabel: u32,
                }
                let t: Transaction = serde_json::from_slice(frame)
                    .expect("answered a frame without its transaction");
                let dialect = KamailioEvapi::new(t.tindex, t.tlabel);
                cvw_fuzz::assert_evapi_answer(&answer, dialect);
            }
        }
    }
}
