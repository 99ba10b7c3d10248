//! A phone that vanishes mid-call (issue 11): a click-to-call placed through the host's
//! own SIP user agent ([`SipOriginator`]) to two test phones on loopback, each behind a
//! relay; once the call is connected the callback phone's relay is cut, so it answers
//! nothing any more. The call must end by itself (on the failed session refresh, or at the
//! maximum duration when refreshes are off), the surviving phone must get a BYE saying
//! why, and the call log record (CVW-50) must say why too (CVW-13). Each test prints how
//! long it took.
//!
//! The SIP-level case of a callee trunk that stops answering is
//! `cvw-sip/tests/pbx_trunk.rs` (`a_callee_that_vanishes_is_noticed_by_the_session_refresh`);
//! these add the callback side, the host's call record, and the maximum-duration path.

use std::sync::Arc;
use std::time::Duration;

use cvw::calllog::{CallKind, CallLogSink, CallRecord, MemorySink};
use cvw::click_to_call::calls::Calls;
use cvw::click_to_call::limits::{LimitSettings, Limits};
use cvw::origination::CallState;
use cvw::origination::sip::SipOriginator;
use cvw::policy::model::{Flow, Leg, NameAddr, OriginationPlan};
use cvw_sip::message::Method;
use cvw_sip::testing::relay::{Loss, Relay};
use cvw_sip::testing::{PhoneEnd, PhoneScript, TestPhone};
use cvw_sip::transaction::Timers;
use cvw_sip::transport::Protocol;
use cvw_sip::ua::{UaConfig, UserAgent};
use tokio::time::{Instant, sleep, timeout};

const USER: &str = "sip:alice@corp.example";

fn timers() -> Timers {
    Timers {
        t1: Duration::from_millis(20),
        t2: Duration::from_millis(80),
        t4: Duration::from_millis(100),
    }
}

/// What a run saw.
struct Run {
    record: CallRecord,
    /// From the cut to the record being written.
    ended_after: Duration,
    /// The BYE the surviving callee phone received.
    callee_bye: cvw_sip::message::Request,
    callee_end: Option<PhoneEnd>,
    /// Datagrams the host sent to the vanished phone after the cut.
    sent_to_vanished: u64,
}

/// Places a call from the callback phone to the callee phone, cuts the callback phone off
/// `cut_after` once connected, and waits for the call's record.
async fn vanish(session_refresh: Option<Duration>, max_duration_s: u32) -> Run {
    let ua = UserAgent::bind(UaConfig {
        timers: timers(),
        session_refresh,
        ..UaConfig::default()
    })
    .await
    .unwrap()
    .0;
    let phone = |media_port| {
        TestPhone::start_with(
            UaConfig {
                timers: timers(),
                ..UaConfig::default()
            },
            PhoneScript {
                ring_for: Duration::from_millis(50),
                media_port,
                ..PhoneScript::default()
            },
        )
    };
    let a = phone(40_000).await.unwrap();
    let mut b = phone(50_000).await.unwrap();
    let addr = |p: &TestPhone| p.user_agent().local_addr(Protocol::Udp);
    let relay_a = Relay::start(addr(&a), Loss::both(0.0, 1)).await.unwrap();
    let relay_b = Relay::start(addr(&b), Loss::both(0.0, 2)).await.unwrap();
    let leg = |uri: String, shows: &str| Leg {
        uri,
        shows: NameAddr {
            display: String::new(),
            uri: shows.into(),
        },
        ring_timeout_ms: 3000,
    };
    let plan = OriginationPlan {
        user: USER.into(),
        callback: leg(relay_a.uri("+14255550101"), "sip:+14255550000@cvw.example"),
        callee: leg(relay_b.uri("+14255550142"), "sip:+14255550101@corp.example"),
        flow: Flow::FlowIv,
        max_duration_s,
    };
    let log = Arc::new(MemorySink::default());
    let sink: Arc<dyn CallLogSink> = log.clone();
    let calls = Arc::new(Calls::default());
    let started = calls
        .start(
            &SipOriginator::new(ua),
            &Arc::new(Limits::new(LimitSettings::default())),
            &sink,
            CallKind::ClickToCall,
            plan,
            (1, "digest".into()),
        )
        .unwrap();
    let call = calls.get(&started.id, USER).unwrap();
    timeout(Duration::from_secs(5), async {
        while call.snapshot().state != Some(CallState::Connected) {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("connected within 5 s");

    // The callback phone vanishes.
    relay_a.cut();
    let cut_at = Instant::now();
    let record = timeout(Duration::from_secs(15), async {
        loop {
            if let Some(r) = log.records().pop() {
                return r;
            }
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the call ended by itself and was logged");
    let ended_after = cut_at.elapsed();
    let callee_end = timeout(Duration::from_secs(5), b.ended())
        .await
        .ok()
        .flatten();
    let callee_bye = b
        .requests(Method::Bye)
        .pop()
        .expect("the callee phone got a BYE");
    Run {
        record,
        ended_after,
        callee_bye,
        callee_end,
        sent_to_vanished: relay_a.stats().to_phone.cut,
    }
}

fn check_cleared(run: &Run) {
    assert_eq!(run.callee_end, Some(PhoneEnd::HungUpByPeer));
    assert!(
        run.sent_to_vanished > 0,
        "the host went on trying the vanished phone"
    );
    assert_eq!(run.record.kind, CallKind::ClickToCall);
    assert!(run.record.connected_ms.is_some(), "{:?}", run.record);
    let codes: Vec<_> = run.record.legs.iter().map(|l| l.sip_code).collect();
    assert_eq!(codes, [Some(200), Some(200)], "both legs were answered");
}

/// With session refreshes (UPDATE every 300 ms, RFC 4028 style) the vanished phone's
/// refresh times out (Timer F, 64·T1 = 1.28 s here): the call ends as the callback side
/// lost, the callee gets a BYE with `Reason: SIP;cause=408`, the record says so.
#[tokio::test]
async fn a_vanished_callback_phone_ends_the_call_on_its_failed_refresh() {
    let run = vanish(Some(Duration::from_millis(300)), 3600).await;
    eprintln!(
        "vanished callback phone, refresh 300 ms, T1 20 ms: ended after {:.2?} as {:?}; \
         callee BYE Reason {:?}; {} datagrams to the vanished phone",
        run.ended_after,
        run.record.outcome,
        run.callee_bye.headers.get("Reason"),
        run.sent_to_vanished
    );
    check_cleared(&run);
    assert_eq!(run.record.outcome.result, "callback-lost");
    assert_eq!(run.record.outcome.sip_code, Some(408));
    assert!(
        run.record.outcome.reason.contains("stopped answering"),
        "{:?}",
        run.record.outcome
    );
    let reason = run.callee_bye.headers.get("Reason").unwrap_or_default();
    assert!(
        reason.contains("cause=408") && reason.contains("Session refresh failed"),
        "{reason}"
    );
    // At most a refresh interval and Timer F, with room for a busy machine.
    assert!(
        run.ended_after < Duration::from_secs(5),
        "{:?}",
        run.ended_after
    );
}

/// Without session refreshes the host cannot tell a silent phone from a quiet call: the
/// call ends at its maximum duration (2 s here), the callee gets a BYE saying so, and the
/// record says "max-duration". The BYE to the vanished phone times out (64·T1) before the
/// call counts as cleared.
#[tokio::test]
async fn without_refreshes_a_vanished_phone_ends_at_the_maximum_duration() {
    let run = vanish(None, 2).await;
    eprintln!(
        "vanished callback phone, no refresh, max duration 2 s: ended after {:.2?} as {:?}; \
         callee BYE Reason {:?}; {} datagrams to the vanished phone",
        run.ended_after,
        run.record.outcome,
        run.callee_bye.headers.get("Reason"),
        run.sent_to_vanished
    );
    check_cleared(&run);
    assert_eq!(run.record.outcome.result, "max-duration");
    assert!(
        run.record.outcome.reason.contains("maximum duration"),
        "{:?}",
        run.record.outcome
    );
    let reason = run.callee_bye.headers.get("Reason").unwrap_or_default();
    assert!(reason.contains("Maximum call duration"), "{reason}");
    let held = run.record.ended_ms - run.record.connected_ms.unwrap_or_default();
    assert!(
        held >= 2000,
        "ended at the maximum duration, not before: {held} ms"
    );
    assert!(
        run.ended_after < Duration::from_secs(8),
        "{:?}",
        run.ended_after
    );
}
