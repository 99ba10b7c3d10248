//! The call task alone: what a peer can put in a Reason, and what a held call costs.

use super::*;
use crate::ua::UaConfig;

#[test]
fn reason_text_from_a_peer_cannot_break_the_header() {
    assert_eq!(
        reason(486, "Busy \"Here\"\r\nX: y"),
        "SIP;cause=486;text=\"Busy HereX: y\""
    );
}

/// The per-call budget (≤ 4 KB in the host, issue 4): the call and the state its task
/// keeps while connected take at most 1.5 KiB, leaving the rest for the legs' heap
/// strings (Call-ID, tags, route set, the last ACK), queues and the requester's task.
/// The larger setup state is freed on connection.
#[tokio::test]
async fn a_call_task_stays_within_the_per_call_memory_budget() {
    let (ua, _) = UserAgent::bind(UaConfig::default()).await.unwrap();
    let leg = |role| LegSpec {
        target: "sip:a@127.0.0.1:9".into(),
        from: NameAddr::new("", "sip:x@h"),
        to: NameAddr::new("", "sip:a@h"),
        asserted: None,
        role: Some(role),
        headers: Vec::new(),
    };
    let (states, _rx) = queue::queue();
    let call = Call {
        a: ua.leg(leg(LegRole::Callback)),
        b: ua.leg(leg(LegRole::Callee)),
        settings: Settings {
            flow: Flow::Iv,
            callback_ring: Duration::from_secs(1),
            callee_ring: Duration::from_secs(1),
            max_duration: Duration::from_secs(1),
            continue_when_diverted: false,
            session_refresh: None,
        },
        states,
        hangup: Arc::new(Notify::new()),
        relays: HashMap::new(),
        refreshes: Vec::new(),
    };
    let mut call = call;
    let connected = std::mem::size_of_val(&call.connected());
    let task = std::mem::size_of_val(&call) + std::mem::size_of_val(&call.run());
    assert!(
        task + connected <= 1536,
        "task {task} + connected phase {connected} bytes"
    );
}
