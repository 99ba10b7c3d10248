//! The JSON names of the model (feature `serde`): scenario files, the decision service and
//! the guest's native scenario runner all read and write this form, so a rename here is a
//! break of theirs. Run with `cargo test -p cvw-model --features serde`.

#![cfg(feature = "serde")]

use cvw_model::{
    BranchReply, ClickToCall, Contact, Decision, DialOut, Flow, Fork, ForkMode, Header, Leg,
    MeetingKind, NameAddr, OriginationPlan, Refusal, Reply, ReplyAction, RequestContext, Settings,
    Source, Target, User,
};
use serde_json::{Value, json};

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("the model always serializes")
}

#[test]
fn a_decision_is_tagged_by_its_kebab_case_name() {
    assert_eq!(
        to_json(&Decision::Continue),
        json!({ "decision": "continue" })
    );
    assert_eq!(
        to_json(&Decision::Refuse(Refusal::new(
            403,
            "Forbidden",
            "Dial emergency numbers from your desk phone.",
            "CVW-41"
        ))),
        json!({
            "decision": "refuse", "code": 403, "reason": "Forbidden",
            "explanation": "Dial emergency numbers from your desk phone.", "rule": "CVW-41",
        })
    );
}

#[test]
fn empty_optional_fields_are_left_out_of_a_fork() {
    let fork = Decision::Fork(Fork {
        mode: ForkMode::Serial,
        targets: vec![
            Target {
                label: "desk".into(),
                uri: "sip:+14255550101@pbx".into(),
                ..Target::default()
            },
            Target {
                label: "client".into(),
                uri: "sip:alice@10.0.0.5".into(),
                next_hop: Some("sip:edge".into()),
                from: Some(NameAddr {
                    display: String::new(),
                    uri: "tel:+1".into(),
                }),
                asserted_identity: None,
                headers: vec![Header::new("X-CVW-Leg", "client")],
                ring_timeout_ms: Some(20_000),
            },
        ],
    });
    assert_eq!(
        to_json(&fork),
        json!({
            "decision": "fork", "mode": "serial",
            "targets": [
                { "label": "desk", "uri": "sip:+14255550101@pbx" },
                {
                    "label": "client", "uri": "sip:alice@10.0.0.5", "next_hop": "sip:edge",
                    "from": { "display": "", "uri": "tel:+1" },
                    "headers": [{ "name": "X-CVW-Leg", "value": "client" }],
                    "ring_timeout_ms": 20000,
                },
            ],
        })
    );
    let reply = Decision::Reply(Reply {
        code: 486,
        reason: "Busy Here".into(),
        headers: vec![],
    });
    assert_eq!(
        to_json(&reply),
        json!({ "decision": "reply", "code": 486, "reason": "Busy Here" })
    );
}

#[test]
fn an_origination_names_its_flow_in_kebab_case() {
    let leg = |uri: &str| Leg {
        uri: uri.into(),
        shows: NameAddr {
            display: "Alice".into(),
            uri: "tel:+14255550100".into(),
        },
        ring_timeout_ms: 30_000,
    };
    let plan = Decision::Originate(OriginationPlan {
        user: "sip:alice@corp.example".into(),
        callback: leg("tel:+14255550199"),
        callee: leg("tel:+14255550142"),
        flow: Flow::FlowI,
        max_duration_s: 14_400,
    });
    let json = to_json(&plan);
    assert_eq!(json["decision"], "originate");
    assert_eq!(json["flow"], "flow-i");
    assert_eq!(json["max_duration_s"], 14_400);
    assert_eq!(json["callback"]["ring_timeout_ms"], 30_000);
    assert_eq!(json["callee"]["shows"]["display"], "Alice");
    let back: Decision = serde_json::from_value(json).expect("round trip");
    assert_eq!(back, plan);
}

#[test]
fn inputs_read_with_their_defaults() {
    let context: RequestContext =
        serde_json::from_value(json!({ "contacts": [{ "uri": "sip:a@b" }] })).expect("context");
    assert_eq!(
        context,
        RequestContext {
            source: Source::Other,
            contacts: vec![Contact {
                uri: "sip:a@b".into(),
                ..Contact::default()
            }],
        }
    );
    let context: RequestContext =
        serde_json::from_value(json!({ "source": "origination" })).expect("source");
    assert_eq!(context.source, Source::Origination);

    let reply: BranchReply = serde_json::from_value(json!({ "code": 408 })).expect("reply");
    assert_eq!(
        reply,
        BranchReply {
            code: 408,
            ..BranchReply::default()
        }
    );

    let c2c: ClickToCall =
        serde_json::from_value(json!({ "user": "sip:a@b", "destination": "+1" })).expect("c2c");
    assert_eq!(c2c.callback_override, None);
    assert_eq!(
        to_json(&c2c),
        json!({ "user": "sip:a@b", "destination": "+1" })
    );

    let dial_out: DialOut = serde_json::from_value(
        json!({ "user": "sip:a@b", "conference_uri": "sip:conf@x", "kind": "meet-now" }),
    )
    .expect("dial-out");
    assert_eq!(dial_out.kind, MeetingKind::MeetNow);

    assert_eq!(to_json(&ReplyAction::CancelBranch), json!("cancel-branch"));
}

#[test]
fn a_user_has_every_field_written_out() {
    let user = User {
        uc_address: "sip:alice@corp.example".into(),
        settings: Settings::default(),
        ..User::default()
    };
    assert_eq!(
        to_json(&user),
        json!({
            "uc_address": "sip:alice@corp.example", "display_name": "",
            "line_uri": null, "callback_number": null, "site": null,
            "settings": {
                "name": "global", "enabled": false,
                "admin_callback_number": null, "use_admin_callback_number": false,
            },
            "delegation": false, "team_call": false, "response_group": false,
        })
    );
}
