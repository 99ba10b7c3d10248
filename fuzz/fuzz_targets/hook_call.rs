//! The host's message reader: `HookCall::of_bytes`, how `cvw.so` hands over a request
//! exactly as Kamailio received it, with the branch reply of the reply/failure hooks; then
//! the decision as `cvw.so` applies it (`NativeAnswer`).
//!
//! Properties: no panic escapes; a request it accepts has the From, To and Call-ID it
//! promises, read from the first header line of each; the view of what the writer makes
//! of it reads back the same; the native answer obeys the line rules.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use cvw::decision::dialect::NativeAnswer;
use cvw::decision::{DecisionService, HookArgs, HookCall, Verdict};
use cvw::message::SipRequest;
use cvw::policy::model::{BranchReply, Contact, Header, RequestContext, Source};
use cvw_fuzz::{Echo, Text};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};

static SERVICE: LazyLock<DecisionService> = LazyLock::new(|| DecisionService::new(Arc::new(Echo)));

#[derive(Arbitrary, Debug)]
enum Args {
    Route {
        source: u8,
        contacts: Vec<(Text, Option<Text>)>,
    },
    Reply {
        code: u16,
        reason: Text,
        headers: Vec<(Text, Text)>,
    },
    Failure {
        code: u16,
        reason: Text,
        headers: Vec<(Text, Text)>,
    },
}

fn reply(code: u16, reason: Text, headers: Vec<(Text, Text)>) -> BranchReply {
    BranchReply {
        label: "desk".into(),
        uri: "sip:desk@pbx".into(),
        code,
        reason: reason.0,
        headers: headers
            .into_iter()
            .map(|(n, v)| Header {
                name: n.0,
                value: v.0,
            })
            .collect(),
    }
}

fuzz_target!(|data: &[u8]| cvw_fuzz::run(|| check(data)));

fn check(data: &[u8]) {
    // The first byte says how many of the next bytes make the hook's arguments; the
    // rest is the message, so a seed is a raw SIP request after a 0 byte.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (head, msg) = rest.split_at(usize::from(n).min(rest.len()));
    let Ok(args) = Args::arbitrary_take_rest(Unstructured::new(head)) else {
        return;
    };
    let args = match args {
        Args::Route { source, contacts } => HookArgs::Route(RequestContext {
            source: [Source::Uc, Source::Pbx, Source::Origination, Source::Other]
                [usize::from(source % 4)],
            contacts: contacts
                .into_iter()
                .map(|(uri, hop)| Contact {
                    uri: uri.0,
                    next_hop: hop.map(|h| h.0),
                    instance: None,
                    user_agent: None,
                })
                .collect(),
        }),
        Args::Reply {
            code,
            reason,
            headers,
        } => HookArgs::Reply(reply(code, reason, headers)),
        Args::Failure {
            code,
            reason,
            headers,
        } => HookArgs::Failure(reply(code, reason, headers)),
    };
    let Ok(call) = HookCall::of_bytes(msg, args) else {
        return;
    };
    let req = &call.msg;
    let headers = &req.request().headers;
    assert_eq!(Some(req.call_id()), headers.get("Call-ID"));
    assert!(headers.get("From").is_some() && headers.get("To").is_some());

    // The request as the host would write it on: the same view.
    let written = req.request().to_bytes();
    if let Ok(again) = SipRequest::parse(&written) {
        let third = SipRequest::parse(&again.request().to_bytes())
            .unwrap_or_else(|e| panic!("a request written twice does not read back: {e}"));
        assert_eq!(third.request(), again.request());
        assert_eq!(third.from(), again.from());
        assert_eq!(third.to(), again.to());
    }

    match SERVICE.verdict(&call).value {
        Verdict::Decision(d) => {
            if let Ok(answer) = NativeAnswer::of(&d) {
                cvw_fuzz::assert_native_answer(&answer);
            }
        }
        Verdict::ReplyAction(_) => {}
    }
}
