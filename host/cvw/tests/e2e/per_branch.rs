//! What no shipped policy asks for but the config must apply: per-branch From, next hop
//! and headers of a parallel fork, from a scripted decider behind the host's own decision
//! service (so each proxy gets it in its own transport and dialect).

use super::*;
use cvw::message::SipRequest;
use cvw::policy::Outcome;
use cvw::policy::model::{
    BranchReply, Decision, Fork, ForkMode, Header, NameAddr, ReplyAction, RequestContext, Target,
};
use std::sync::Mutex;

/// Answers every initial request with the decision the test set (continue before that).
#[derive(Default)]
struct Scripted(Mutex<Option<Decision>>);

fn decided<T>(value: T) -> Outcome<T> {
    Outcome {
        value,
        generation: 1,
        failure: None,
    }
}

impl Decider for Scripted {
    fn on_request(&self, _: &SipRequest, _: &RequestContext) -> Outcome<Decision> {
        let d = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        decided(d.unwrap_or(Decision::Continue))
    }
    fn on_reply(&self, _: &SipRequest, _: &BranchReply) -> Outcome<ReplyAction> {
        decided(ReplyAction::Continue)
    }
    fn on_failure(&self, _: &SipRequest, _: &BranchReply) -> Outcome<Decision> {
        decided(Decision::Continue)
    }
}

/// The config's side of a parallel fork's per-branch data, for what the default policy
/// never asks for: the decision is a fork whose second route has its own From and a next
/// hop (an appended branch), and whose third has a header of its own. Each lands on its
/// branch only.
async fn parallel_fork_applies_from_next_hop_and_headers_per_branch(proxy: Proxy) {
    let script = Arc::new(Scripted::default());
    let mut w = World::start(proxy, Host::Scripted(script.clone())).await;
    let pbx_addr = w.pbx.local;
    let mut c1 = w.udp("alice-udp").await;
    c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
    let mut c2 = w.tcp("alice-tcp").await;
    c2.register("alice", DOMAIN, "UC-Mobile/1.0").await;
    let header = |name: &str, value: &str| Header {
        name: name.into(),
        value: value.into(),
    };
    let target = |label: &str, uri: String| Target {
        label: label.into(),
        uri,
        next_hop: None,
        from: None,
        asserted_identity: None,
        headers: vec![],
        ring_timeout_ms: None,
    };
    *script.0.lock().unwrap() = Some(Decision::Fork(Fork {
        mode: ForkMode::Parallel,
        targets: vec![
            Target {
                next_hop: Some(format!("sip:{pbx_addr}")),
                headers: vec![header("X-CVW-Leg", "desk")],
                ..target(
                    "desk",
                    format!("sip:{ALICE_DESK}@pbx.corp.example;user=phone"),
                )
            },
            Target {
                // Reached only through its next hop: the name does not resolve.
                next_hop: Some(format!("sip:{}", c1.local)),
                from: Some(NameAddr {
                    display: "Call via Work".into(),
                    uri: "sip:+14255550000@corp.example".into(),
                }),
                ..target("client", "sip:alice@alice-udp.invalid".into())
            },
            Target {
                headers: vec![header("X-Only", "the TCP client")],
                ..target("client", format!("sip:alice@{};transport=tcp", c2.local))
            },
        ],
    }));

    let mut bob = w.udp("bob").await;
    let call = bob.invite(ALICE, BOB, &[]);
    let desk = w.pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;
    let i2 = c2.expect_invite(WAIT).await;
    assert_eq!(uri_user(&desk), ALICE_DESK);
    assert_eq!(desk.headers.get("X-CVW-Leg"), Some("desk"));
    assert!(desk.headers.get("From").unwrap_or("").contains(BOB));
    assert_eq!(
        i1.uri, "sip:alice@alice-udp.invalid",
        "sent to its next hop"
    );
    // As a phone shows it: the display name (quoted or not: both are the same name) and
    // the address, with the caller's tag.
    let from = i1.headers.get("From").unwrap_or("");
    let (display, rest) = from.split_once('<').unwrap_or(("", from));
    assert!(
        display.trim().trim_matches('"') == "Call via Work"
            && rest.starts_with("sip:+14255550000@corp.example>;tag="),
        "the second branch's own From: {from}"
    );
    assert_eq!(i1.headers.get("X-CVW-Leg"), None);
    assert_eq!(i1.headers.get("X-Only"), None);
    assert!(i2.headers.get("From").unwrap_or("").contains(BOB));
    assert_eq!(i2.headers.get("X-Only"), Some("the TCP client"));
    assert_eq!(desk.headers.get("X-Only"), None);

    // All three ring before the caller gives up: the proxy cancels a branch only once it
    // has a provisional answer, which a loaded machine can hold back past the wait.
    bob.expect_ringing(3, WAIT).await;
    w.caller_gives_up(&mut bob, &mut c1, &mut c2, Ringing { call, desk, i1, i2 })
        .await;
}

per_proxy!(
    parallel_fork_applies_from_next_hop_and_headers_per_branch,
    [kamailio_evapi, kamailio_jsonrpc, opensips]
);
