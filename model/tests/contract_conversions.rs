//! `contract_conversions!` against a mirror of the generated types (the shapes both
//! wasmtime's `bindgen!` and wit-bindgen give `cvw:policy/types`): every type goes to the
//! bindings and back unchanged. That the mirror matches the real bindings is checked by
//! the host and the policies, which invoke the macro on theirs.

use cvw_model::{
    BranchReply, ClickToCall, Contact, Decision, DialOut, Flow, Fork, ForkMode, Header, Leg, Level,
    MeetingKind, NameAddr, OriginationPlan, PolicyInfo, Refusal, Reply, ReplyAction, Settings,
    Source, Target, User,
};

/// The generated types, as the bindings generators write them.
mod bindings {
    pub mod types {
        pub struct Header {
            pub name: String,
            pub value: String,
        }
        pub struct NameAddr {
            pub display: String,
            pub uri: String,
        }
        pub enum Source {
            Uc,
            Pbx,
            Origination,
            Other,
        }
        pub struct Contact {
            pub uri: String,
            pub next_hop: Option<String>,
            pub instance: Option<String>,
            pub user_agent: Option<String>,
        }
        pub struct Settings {
            pub name: String,
            pub enabled: bool,
            pub admin_callback_number: Option<String>,
            pub use_admin_callback_number: bool,
        }
        pub struct User {
            pub uc_address: String,
            pub display_name: String,
            pub line_uri: Option<String>,
            pub callback_number: Option<String>,
            pub site: Option<String>,
            pub settings: Settings,
            pub delegation: bool,
            pub team_call: bool,
            pub response_group: bool,
        }
        pub struct Reply {
            pub code: u16,
            pub reason: String,
            pub headers: Vec<Header>,
        }
        pub struct Refusal {
            pub code: u16,
            pub reason: String,
            pub explanation: String,
            pub rule: String,
        }
        pub enum ForkMode {
            Parallel,
            Serial,
        }
        pub struct Target {
            pub label: String,
            pub uri: String,
            pub next_hop: Option<String>,
            pub from: Option<NameAddr>,
            pub asserted_identity: Option<NameAddr>,
            pub headers: Vec<Header>,
            pub ring_timeout_ms: Option<u32>,
        }
        pub struct Fork {
            pub mode: ForkMode,
            pub targets: Vec<Target>,
        }
        pub enum Flow {
            FlowIv,
            FlowI,
        }
        pub struct Leg {
            pub uri: String,
            pub shows: NameAddr,
            pub ring_timeout_ms: u32,
        }
        pub struct OriginationPlan {
            pub user: String,
            pub callback: Leg,
            pub callee: Leg,
            pub flow: Flow,
            pub max_duration_s: u32,
        }
        pub enum Decision {
            Continue,
            Reply(Reply),
            Fork(Fork),
            Originate(OriginationPlan),
            Refuse(Refusal),
        }
        pub struct BranchReply {
            pub label: String,
            pub uri: String,
            pub code: u16,
            pub reason: String,
            pub headers: Vec<Header>,
        }
        pub enum ReplyAction {
            Continue,
            CancelBranch,
        }
        pub struct ClickToCall {
            pub user: String,
            pub destination: String,
            pub callback_override: Option<String>,
        }
        pub enum MeetingKind {
            Scheduled,
            MeetNow,
        }
        pub struct DialOut {
            pub user: String,
            pub conference_uri: String,
            pub kind: MeetingKind,
        }
        pub struct PolicyInfo {
            pub name: String,
            pub version: String,
            pub description: String,
        }
        pub enum Level {
            Debug,
            Info,
            Warn,
            Error,
        }
    }
}

cvw_model::contract_conversions!(self::bindings::types);

use bindings::types as wit;

/// `value` converted to its generated twin `W` and back.
fn round_trip<W, T>(value: &T) -> T
where
    T: Clone + Into<W>,
    W: Into<T>,
{
    let generated: W = value.clone().into();
    generated.into()
}

fn name_addr(display: &str, uri: &str) -> NameAddr {
    NameAddr {
        display: display.to_owned(),
        uri: uri.to_owned(),
    }
}

fn leg(uri: &str, shows: NameAddr) -> Leg {
    Leg {
        uri: uri.to_owned(),
        shows,
        ring_timeout_ms: 30_000,
    }
}

#[test]
fn every_decision_goes_to_the_bindings_and_back_unchanged() {
    let decisions = [
        Decision::Continue,
        Decision::Reply(Reply {
            code: 486,
            reason: "Busy Here".to_owned(),
            headers: vec![Header::new("Retry-After", "60")],
        }),
        Decision::Fork(Fork {
            mode: ForkMode::Serial,
            targets: vec![
                Target {
                    label: "desk".to_owned(),
                    uri: "sip:+14255550101@pbx".to_owned(),
                    next_hop: Some("sip:pbx.corp.example".to_owned()),
                    from: Some(name_addr("Alice", "sip:alice@corp.example")),
                    asserted_identity: Some(name_addr("", "tel:+14255550101")),
                    headers: vec![Header::new("X-CVW-Leg", "desk")],
                    ring_timeout_ms: Some(20_000),
                },
                Target {
                    label: "client".to_owned(),
                    uri: "sip:alice@10.0.0.1".to_owned(),
                    ..Target::default()
                },
            ],
        }),
        Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets: Vec::new(),
        }),
        Decision::Originate(OriginationPlan {
            user: "sip:alice@corp.example".to_owned(),
            callback: leg("tel:+15550100", name_addr("", "tel:+18005550000")),
            callee: leg("tel:+15550199", name_addr("Alice", "tel:+14255550101")),
            flow: Flow::FlowI,
            max_duration_s: 14_400,
        }),
        Decision::Originate(OriginationPlan {
            user: String::new(),
            callback: leg("", NameAddr::default()),
            callee: leg("", NameAddr::default()),
            flow: Flow::FlowIv,
            max_duration_s: 0,
        }),
        Decision::Refuse(Refusal::new(
            606,
            "Not Acceptable",
            "Dial emergency numbers from your desk phone.",
            "CVW-41",
        )),
    ];
    for decision in decisions {
        assert_eq!(round_trip::<wit::Decision, _>(&decision), decision);
    }
}

#[test]
fn what_a_hook_is_given_goes_to_the_bindings_and_back_unchanged() {
    let user = User {
        uc_address: "sip:alice@corp.example".to_owned(),
        display_name: "Alice".to_owned(),
        line_uri: Some("tel:+14255550101".to_owned()),
        callback_number: None,
        site: Some("redmond".to_owned()),
        settings: Settings {
            name: "sales".to_owned(),
            enabled: true,
            admin_callback_number: Some("+18005550000".to_owned()),
            use_admin_callback_number: true,
        },
        delegation: false,
        team_call: true,
        response_group: false,
    };
    assert_eq!(round_trip::<wit::User, _>(&user), user);

    let contact = Contact {
        uri: "sip:alice@10.0.0.1".to_owned(),
        next_hop: None,
        instance: Some("<urn:uuid:1>".to_owned()),
        user_agent: Some("UC/1.0".to_owned()),
    };
    assert_eq!(round_trip::<wit::Contact, _>(&contact), contact);

    let reply = BranchReply {
        label: "client".to_owned(),
        uri: "sip:alice@10.0.0.1".to_owned(),
        code: 302,
        reason: "Moved".to_owned(),
        headers: vec![
            Header::new("Diversion", "<sip:vm@corp.example>"),
            Header::new("Reason", "SIP;cause=302"),
        ],
    };
    assert_eq!(round_trip::<wit::BranchReply, _>(&reply), reply);

    let click = ClickToCall {
        user: "sip:alice@corp.example".to_owned(),
        destination: "+15550199".to_owned(),
        callback_override: Some("+15550100".to_owned()),
    };
    assert_eq!(round_trip::<wit::ClickToCall, _>(&click), click);

    for kind in [MeetingKind::Scheduled, MeetingKind::MeetNow] {
        let dial_out = DialOut {
            user: "sip:alice@corp.example".to_owned(),
            conference_uri: "sip:conf@corp.example".to_owned(),
            kind,
        };
        assert_eq!(round_trip::<wit::DialOut, _>(&dial_out), dial_out);
    }
    for source in [Source::Uc, Source::Pbx, Source::Origination, Source::Other] {
        assert_eq!(round_trip::<wit::Source, _>(&source), source);
    }
}

#[test]
fn answers_and_words_about_the_policy_go_to_the_bindings_and_back_unchanged() {
    for action in [ReplyAction::Continue, ReplyAction::CancelBranch] {
        assert_eq!(round_trip::<wit::ReplyAction, _>(&action), action);
    }
    for level in [Level::Debug, Level::Info, Level::Warn, Level::Error] {
        assert_eq!(round_trip::<wit::Level, _>(&level), level);
    }
    let info = PolicyInfo {
        name: "call-via-work".to_owned(),
        version: "1.2.3".to_owned(),
        description: "Calls placed from the desk identity.".to_owned(),
    };
    assert_eq!(round_trip::<wit::PolicyInfo, _>(&info), info);
}

#[test]
fn a_case_maps_onto_the_case_of_the_same_name() {
    // Round trips alone would pass with two cases swapped both ways.
    assert!(matches!(wit::Source::from(Source::Pbx), wit::Source::Pbx));
    assert!(matches!(wit::Flow::from(Flow::FlowIv), wit::Flow::FlowIv));
    assert!(matches!(
        wit::ForkMode::from(ForkMode::Serial),
        wit::ForkMode::Serial
    ));
    assert!(matches!(
        wit::ReplyAction::from(ReplyAction::CancelBranch),
        wit::ReplyAction::CancelBranch
    ));
    assert!(matches!(
        wit::MeetingKind::from(MeetingKind::MeetNow),
        wit::MeetingKind::MeetNow
    ));
    assert!(matches!(wit::Level::from(Level::Warn), wit::Level::Warn));
    let target: wit::Target = Target {
        from: Some(name_addr("A", "sip:a@x")),
        ..Target::default()
    }
    .into();
    assert!(target.asserted_identity.is_none());
    assert_eq!(target.from.map(|f| f.uri).as_deref(), Some("sip:a@x"));
}
