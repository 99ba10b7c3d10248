//! The Call-via-Work limitations (CVW-40..44): which requests from a Call-via-Work call are
//! refused, the SIP markers that recognise them, and the refusal each gets. Markers are
//! cheap string tests; only when one matches does the caller pay for a directory lookup.
//! Not here: whether the requester is a Call-via-Work user (see `incoming`).
//!
//! Markers (documented for operators in `guest/README.md`):
//! - CVW-41 transfer / park: a `REFER` (blind, attended, or to a park orbit).
//! - CVW-41 hold: an `INVITE` whose SDP has `a=sendonly`, `a=inactive` or the RFC 2543
//!   hold address `c=IN IP4 0.0.0.0` (`c=IN IP6 ::`).
//! - CVW-41 recording: an `INVITE` whose SDP has `a=record:on` (RFC 7866).
//! - CVW-42 third party: an `INVITE` with `Replaces` (RFC 3891) or `Join` (RFC 3911).
//! - CVW-42 escalation: an `INVITE` whose Request-URI contains one of
//!   `conference_escalation_markers` (default the audio/video and data-conferencing MCUs,
//!   `app:conf:audio-video`, `app:conf:data-conf`). IM (`MESSAGE`, `app:conf:chat`),
//!   application sharing and file transfer never match.
//! - CVW-43 PBX voicemail: an `INVITE` to `pbx_voicemail_pilot`.
//! - CVW-44 malicious-call trace: an `INVITE` to a number starting with one of
//!   `malicious_call_trace_codes` (default `*57`).

use crate::config::Config;
use crate::env::Message;
use crate::model::Refusal;
use crate::numbers;

/// A limitation a request runs into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// CVW-40: the user also has delegation, team call or response group.
    ConflictingFeature,
    /// CVW-41
    Transfer,
    /// CVW-41
    Hold,
    /// CVW-41
    Recording,
    /// CVW-42: Replaces / Join adds a third person to a two-party call.
    ThirdParty,
    /// CVW-42: escalation into a multi-party meeting with video, presentations, whiteboard.
    Escalation,
    /// CVW-43
    Voicemail,
    /// CVW-44
    MaliciousCallTrace,
}

impl Limit {
    /// The refusal the person gets.
    pub fn refusal(self) -> Refusal {
        let (code, reason, text, rule) = match self {
            Limit::ConflictingFeature => (
                403,
                "Forbidden",
                "Call via Work cannot be combined with delegation, team call or response groups.",
                "CVW-40",
            ),
            Limit::Transfer => (
                403,
                "Forbidden",
                "Transfer and park are not available on a Call-via-Work call; use your desk phone.",
                "CVW-41",
            ),
            Limit::Hold => (
                403,
                "Forbidden",
                "Hold is not available on a Call-via-Work call; use your desk phone.",
                "CVW-41",
            ),
            Limit::Recording => (
                403,
                "Forbidden",
                "Recording is not available on a Call-via-Work call.",
                "CVW-41",
            ),
            Limit::ThirdParty => (
                403,
                "Forbidden",
                "A third person cannot be added to a Call-via-Work call; start a meeting instead.",
                "CVW-42",
            ),
            Limit::Escalation => (
                488,
                "Not Acceptable Here",
                "A Call-via-Work call cannot become a video or presentation meeting; \
                 instant messages, sharing and file transfer still work.",
                "CVW-42",
            ),
            Limit::Voicemail => (
                403,
                "Forbidden",
                "PBX voicemail is not reachable through Call via Work; use your desk phone.",
                "CVW-43",
            ),
            Limit::MaliciousCallTrace => (
                403,
                "Forbidden",
                "Malicious-call tracing is not available through Call via Work; \
                 use your desk phone.",
                "CVW-44",
            ),
        };
        Refusal::new(code, reason, text, rule)
    }
}

/// The limitation an `INVITE` from the UC side runs into, judged from `request_uri` and the
/// message; `None` for an ordinary call. Cheapest tests first. `to_device`: the
/// Request-URI is no directory user's address (a contact, as in a re-INVITE), so the SDP
/// is read for hold and recording; a new call to a person skips that copy.
pub fn invite_limit(
    config: &Config,
    request_uri: &str,
    msg: &dyn Message,
    to_device: bool,
) -> Option<Limit> {
    if let Some(limit) = destination_limit(config, request_uri) {
        return Some(limit);
    }
    if config
        .conference_escalation_markers
        .iter()
        .any(|marker| request_uri.contains(marker.as_str()))
    {
        return Some(Limit::Escalation);
    }
    if let Some(limit) = joins_dialog(msg) {
        return Some(limit);
    }
    if !to_device {
        return None;
    }
    sdp_limit(&msg.body())
}

/// CVW-43 / CVW-44 by what is dialled: a Request-URI or a click-to-call destination.
pub fn destination_limit(config: &Config, destination: &str) -> Option<Limit> {
    let dialled = numbers::dialled(destination)?;
    if config
        .malicious_call_trace_codes
        .iter()
        .any(|code| dialled.starts_with(code.as_str()))
    {
        return Some(Limit::MaliciousCallTrace);
    }
    match &config.pbx_voicemail_pilot {
        Some(pilot)
            if numbers::same(pilot, &dialled)
                || numbers::same(pilot, &config.dial_plan.canonical(&dialled)) =>
        {
            Some(Limit::Voicemail)
        }
        _ => None,
    }
}

/// CVW-42: an INVITE that replaces or joins an existing dialog.
pub fn joins_dialog(msg: &dyn Message) -> Option<Limit> {
    msg.joins_dialog().then_some(Limit::ThirdParty)
}

/// CVW-41 by SDP: hold (`a=sendonly`, `a=inactive`, or the RFC 2543 connection address
/// `0.0.0.0` that older phones and gateways still send, RFC 3264 §8.4) or recording
/// (`a=record:on`).
pub fn sdp_limit(body: &[u8]) -> Option<Limit> {
    if body.is_empty() {
        return None;
    }
    let mut limit = None;
    for line in body.split(|b| *b == b'\n') {
        let line = line.trim_ascii_end();
        match line {
            b"a=sendonly" | b"a=inactive" | b"c=IN IP4 0.0.0.0" | b"c=IN IP6 ::" => {
                return Some(Limit::Hold);
            }
            b"a=record:on" => limit = Some(Limit::Recording),
            _ => {}
        }
    }
    limit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{FakeMessage, config};

    const SDP_HOLD: &str = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\n\
                            t=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";

    #[test]
    fn cvw_41_hold_is_recognised_in_sdp_and_plain_audio_is_not() {
        assert_eq!(sdp_limit(SDP_HOLD.as_bytes()), Some(Limit::Hold));
        assert_eq!(sdp_limit(b"v=0\na=inactive\n"), Some(Limit::Hold));
        assert_eq!(sdp_limit(b"v=0\r\na=record:on\r\n"), Some(Limit::Recording));
        // RFC 2543 hold: the connection address zeroed, at session or media level.
        let old_hold = b"v=0\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert_eq!(sdp_limit(old_hold), Some(Limit::Hold));
        let media_level =
            b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 0.0.0.0 \r\n";
        assert_eq!(sdp_limit(media_level), Some(Limit::Hold));
        assert_eq!(sdp_limit(b"v=0\r\nc=IN IP4 10.0.0.0\r\n"), None);
        // The same unspecified address over IPv6.
        assert_eq!(sdp_limit(b"v=0\r\nc=IN IP6 ::\r\n"), Some(Limit::Hold));
        assert_eq!(sdp_limit(b"v=0\r\nc=IN IP6 ::1\r\n"), None);
        assert_eq!(
            sdp_limit(b"v=0\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n"),
            None
        );
    }

    #[test]
    fn cvw_42_replaces_and_join_are_third_party_but_app_sharing_is_not() {
        let c = config();
        let replaces = FakeMessage::invite("sip:bob@corp.example")
            .header("Replaces", "abc@host;to-tag=1;from-tag=2");
        assert_eq!(
            invite_limit(&c, "sip:bob@corp.example", &replaces, true),
            Some(Limit::ThirdParty)
        );
        let join = FakeMessage::invite("sip:bob@corp.example").header("Join", "x;to-tag=1");
        assert_eq!(
            invite_limit(&c, "sip:bob@corp.example", &join, true),
            Some(Limit::ThirdParty)
        );
        let sharing = FakeMessage::invite("sip:bob@corp.example")
            .body("v=0\r\nm=applicationsharing 5000 TCP/RTP/AVP 127\r\n");
        assert_eq!(
            invite_limit(&c, "sip:bob@corp.example", &sharing, true),
            None
        );
    }

    #[test]
    fn cvw_42_escalation_to_the_av_mcu_is_refused_chat_is_not() {
        let c = config();
        let av = "sip:alice@corp.example;gruu;opaque=app:conf:audio-video:id:42";
        let chat = "sip:alice@corp.example;gruu;opaque=app:conf:chat:id:42";
        let msg = FakeMessage::invite(av);
        assert_eq!(invite_limit(&c, av, &msg, true), Some(Limit::Escalation));
        assert_eq!(
            invite_limit(&c, chat, &FakeMessage::invite(chat), true),
            None
        );
        assert_eq!(Limit::Escalation.refusal().rule, "CVW-42");
    }

    #[test]
    fn cvw_43_and_cvw_44_are_recognised_by_what_is_dialled() {
        let c = config();
        assert_eq!(
            destination_limit(&c, "sip:+14255559000@corp.example;user=phone"),
            Some(Limit::Voicemail)
        );
        assert_eq!(
            destination_limit(&c, "sip:%2A57@corp.example"),
            Some(Limit::MaliciousCallTrace)
        );
        assert_eq!(
            destination_limit(&c, "*57"),
            Some(Limit::MaliciousCallTrace)
        );
        assert_eq!(destination_limit(&c, "sip:bob@corp.example"), None);
        assert_eq!(destination_limit(&c, "+14255550142"), None);
    }

    #[test]
    fn every_refusal_names_its_rule_and_explains() {
        for limit in [
            Limit::ConflictingFeature,
            Limit::Transfer,
            Limit::Hold,
            Limit::Recording,
            Limit::ThirdParty,
            Limit::Escalation,
            Limit::Voicemail,
            Limit::MaliciousCallTrace,
        ] {
            let r = limit.refusal();
            assert!(r.rule.starts_with("CVW-4"), "{limit:?}");
            assert!((400..700).contains(&r.code));
            assert!(r.explanation.ends_with('.'), "{limit:?}");
        }
    }
}
