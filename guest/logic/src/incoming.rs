//! Requests that reach the proxy (the request, reply and failure hooks): simultaneous ring
//! of the desk phone and the soft clients (CVW-30, CVW-33, CVW-51), loop protection for
//! the host's own legs (CVW-34), the desk-phone side's transfers (CVW-45), number
//! addressing reports (CVW-46), and which UC-side requests meet a limitation (CVW-40..44,
//! the refusals themselves live in `limits`). Not here: two-leg origination.
//!
//! Hot path (an INVITE to a Call-via-Work user): `method`, `request-uri`, one directory
//! lookup, `Replaces`/`Join` presence, then the fork is built from precomputed pieces.

use crate::config::{Config, DivertHeader};
use crate::env::{Message, Services};
use crate::limits::{self, Limit};
use crate::model::{
    BranchReply, Decision, Fork, ForkMode, Header, Level, ReplyAction, RequestContext, Source,
    Target, User,
};
use crate::numbers;

/// Label of the desk-phone branch (reported in logs and the call log).
pub const DESK: &str = "desk";
/// Label of a soft-client branch.
pub const CLIENT: &str = "client";
/// Label of the no-answer fallback branch.
pub const VOICEMAIL: &str = "voicemail";

/// The request hook.
pub fn on_request(
    config: &Config,
    msg: &dyn Message,
    ctx: RequestContext,
    svc: &dyn Services,
) -> Decision {
    // CVW-34: the host's own legs are never forked back, whatever they address.
    if ctx.source == Source::Origination {
        return Decision::Continue;
    }
    let method = msg.method();
    match method.as_str() {
        "INVITE" => invite(config, msg, ctx, svc),
        // CVW-45: the desk phone's transfers (REFER, with or without Replaces) pass.
        "REFER" if ctx.source == Source::Uc => refuse_if_cvw_caller(msg, svc, Limit::Transfer),
        // CVW-42: MESSAGE, INFO, SUBSCRIBE, ... are never blocked.
        _ => Decision::Continue,
    }
}

fn invite(config: &Config, msg: &dyn Message, ctx: RequestContext, svc: &dyn Services) -> Decision {
    let request_uri = msg.request_uri();
    if ctx.source == Source::Pbx && msg.header("Replaces").is_some() {
        // CVW-45: a transfer made on the desk phone replaces the UC side's dialog.
        return Decision::Continue;
    }
    if is_gruu(&request_uri) {
        // One device (or a conference focus, CVW-42), not the user's address: never forked.
        return uc_side_limits(config, &request_uri, msg, ctx.source, true, svc);
    }
    let by_number = numbers::is_number_address(&request_uri);
    let callee = lookup(svc, &request_uri);
    match callee {
        Some(user) if !by_number && user.enabled() => ring_user(config, msg, ctx, user, svc),
        Some(user) if by_number => {
            report_number_addressing(&request_uri, &user, svc);
            uc_side_limits(config, &request_uri, msg, ctx.source, false, svc)
        }
        Some(_) => uc_side_limits(config, &request_uri, msg, ctx.source, false, svc),
        None => uc_side_limits(config, &request_uri, msg, ctx.source, true, svc),
    }
}

/// The directory knows users by their `sip:` address of record; a client that reaches
/// the proxy over TLS names the same person as `sips:` (RFC 3261 §19.1), and must get the
/// same simultaneous ring (CVW-30) and the same limitations (CVW-41).
fn lookup(svc: &dyn Services, uri: &str) -> Option<User> {
    let uri = uri.trim();
    let uri = uri.strip_prefix('<').unwrap_or(uri);
    match uri.get(..5) {
        Some(scheme) if scheme.eq_ignore_ascii_case("sips:") => {
            let mut plain = String::with_capacity(uri.len() - 1);
            plain.push_str("sip:");
            plain.push_str(&uri[5..]);
            svc.lookup(&plain)
        }
        _ => svc.lookup(uri),
    }
}

/// A GRUU (RFC 5627 `;gr`, or an `opaque=` instance such as a conference focus)
/// addresses one device or conference, not a user's address of record.
fn is_gruu(request_uri: &str) -> bool {
    request_uri.split(';').skip(1).any(|param| {
        param == "gr" || param == "gruu" || param.starts_with("gr=") || param.starts_with("opaque=")
    })
}

/// CVW-30 / CVW-33: ring an enabled user.
fn ring_user(
    config: &Config,
    msg: &dyn Message,
    ctx: RequestContext,
    user: User,
    svc: &dyn Services,
) -> Decision {
    if ctx.source == Source::Uc
        && let Some(limit) = limits::joins_dialog(msg)
    {
        // CVW-42: nobody joins or takes over a Call-via-Work user's call.
        return Decision::Refuse(limit.refusal());
    }
    if user.delegation || user.team_call || user.response_group {
        // check-user refuses such records; a directory loaded without it still gets a
        // clear answer rather than a fork that half works (CVW-40).
        return Decision::Refuse(Limit::ConflictingFeature.refusal());
    }
    let desk = desk_target(config, &user);
    if desk.is_none() {
        let line = format!(
            "user {}: enabled but line_uri {:?} is not a number; desk phone not rung (CVW-4)",
            user.uc_address, user.line_uri
        );
        svc.log(Level::Warn, &line);
    }
    let clients = if ctx.source == Source::Pbx {
        // CVW-33: the PBX side reaches only the desk phone.
        Vec::new()
    } else {
        ctx.contacts
    };
    let mut targets = Vec::with_capacity(1 + clients.len());
    targets.extend(desk);
    targets.extend(clients.into_iter().map(|c| Target {
        label: CLIENT.to_owned(),
        uri: c.uri,
        next_hop: c.next_hop,
        ring_timeout_ms: config.client_ring_timeout_ms,
        ..Target::default()
    }));
    if targets.is_empty() {
        return Decision::Continue;
    }
    Decision::Fork(Fork {
        mode: ForkMode::Parallel,
        targets,
    })
}

/// The desk-phone branch of `user` (CVW-30, CVW-51), `None` without a line number.
pub fn desk_target(config: &Config, user: &User) -> Option<Target> {
    let uri = numbers::pbx_uri_of(user.line_uri.as_deref()?, &config.pbx_uri_suffix)?;
    let divert = divert_header(config.desk_divert_header, &user.uc_address, &uri, None);
    Some(Target {
        label: DESK.to_owned(),
        next_hop: config.pbx_trunk.clone(),
        headers: vec![divert, Header::new("X-CVW-Leg", DESK)],
        ring_timeout_ms: Some(config.desk_ring_timeout_ms),
        uri,
        ..Target::default()
    })
}

/// History-Info (RFC 7044) or Diversion (RFC 5806) naming the UC user, so the PBX's
/// missed-call and voicemail logic picks the right person. `cause` marks a no-answer
/// retarget (RFC 4458) for the fallback branch.
fn divert_header(
    kind: DivertHeader,
    uc_address: &str,
    target: &str,
    cause: Option<&str>,
) -> Header {
    let mut value = String::with_capacity(uc_address.len() + target.len() + 40);
    value.push('<');
    value.push_str(uc_address);
    match kind {
        DivertHeader::HistoryInfo => {
            value.push_str(">;index=1,<");
            value.push_str(target);
            if let Some(cause) = cause {
                value.push_str(";cause=");
                value.push_str(cause);
            }
            // rc: the same person, retargeted to another device.
            value.push_str(">;index=1.1;rc=1");
            Header::new("History-Info", value)
        }
        DivertHeader::Diversion => {
            value.push_str(if cause.is_some() {
                ">;reason=no-answer;counter=1"
            } else {
                ">;reason=follow-me;counter=1"
            });
            Header::new("Diversion", value)
        }
    }
}

/// CVW-46: a number that belongs to someone's callback number was dialled instead of
/// their name; meetings should address people by name.
fn report_number_addressing(request_uri: &str, user: &User, svc: &dyn Services) {
    let Some(dialled) = numbers::number(request_uri) else {
        return;
    };
    let is_callback = user
        .callback_number
        .as_deref()
        .and_then(numbers::number)
        .is_some_and(|cb| numbers::same(&cb, &dialled));
    if is_callback {
        svc.count("cvw_addressed_by_number", 1);
        let mut line = String::with_capacity(96);
        line.push_str("CVW-46: request addressed by number to the callback number of ");
        line.push_str(&user.uc_address);
        line.push_str("; address people by name");
        svc.log(Level::Warn, &line);
    }
}

/// CVW-41..44 for a UC-side INVITE that does not ring a Call-via-Work user.
fn uc_side_limits(
    config: &Config,
    request_uri: &str,
    msg: &dyn Message,
    source: Source,
    to_device: bool,
    svc: &dyn Services,
) -> Decision {
    if source != Source::Uc {
        return Decision::Continue;
    }
    match limits::invite_limit(config, request_uri, msg, to_device) {
        Some(limit) => refuse_if_cvw_caller(msg, svc, limit),
        None => Decision::Continue,
    }
}

/// Refuse with `limit` when the caller (From) is an enabled Call-via-Work user.
fn refuse_if_cvw_caller(msg: &dyn Message, svc: &dyn Services, limit: Limit) -> Decision {
    let caller = msg.from();
    match lookup(svc, &caller.uri) {
        Some(user) if user.enabled() => Decision::Refuse(limit.refusal()),
        _ => Decision::Continue,
    }
}

/// The reply hook: a desk branch diverted to the PBX voicemail is cancelled so the soft
/// clients keep ringing (CVW-51). Diverted = `181 Call Is Being Forwarded`, or a
/// provisional reply with `Diversion`, or with History-Info that records a retarget cause
/// (RFC 4458 `cause=`, or an escaped `Reason` with `cause%3D`).
pub fn on_reply(reply: &BranchReply) -> ReplyAction {
    if reply.label != DESK || !(100..200).contains(&reply.code) {
        return ReplyAction::Continue;
    }
    if reply.code == 181 || diverted(reply) {
        ReplyAction::CancelBranch
    } else {
        ReplyAction::Continue
    }
}

fn diverted(reply: &BranchReply) -> bool {
    reply.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("Diversion")
            || (h.name.eq_ignore_ascii_case("History-Info") && {
                let v = h.value.to_ascii_lowercase();
                v.contains("cause=") || v.contains("cause%3d")
            })
    })
}

/// The failure hook: nobody answered. When the branches simply went unanswered (408,
/// 480) and `no_answer_uri` is set, the caller is sent on, serially, to that URI (a
/// voicemail deposit or attendant), naming the called user; busy and declined pass.
pub fn on_failure(config: &Config, msg: &dyn Message, failure: &BranchReply) -> Decision {
    let ours = failure.label == DESK || failure.label == CLIENT;
    let unanswered = matches!(failure.code, 408 | 480);
    let Some(uri) = config.no_answer_uri.as_deref() else {
        return Decision::Continue;
    };
    if !ours || !unanswered {
        return Decision::Continue;
    }
    let called = msg.request_uri();
    let divert = divert_header(config.desk_divert_header, &called, uri, Some("408"));
    Decision::Fork(Fork {
        mode: ForkMode::Serial,
        targets: vec![Target {
            label: VOICEMAIL.to_owned(),
            uri: uri.to_owned(),
            next_hop: config.pbx_trunk.clone(),
            headers: vec![divert, Header::new("X-CVW-Leg", VOICEMAIL)],
            ..Target::default()
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Contact;
    use crate::testkit::{FakeMessage, FakeServices, config};

    fn contacts() -> Vec<Contact> {
        vec![
            Contact {
                uri: "sip:alice@127.0.0.1:5071;transport=tcp".into(),
                next_hop: Some("sip:127.0.0.1:5071;transport=tcp".into()),
                ..Contact::default()
            },
            Contact {
                uri: "sip:alice@127.0.0.1:5072".into(),
                ..Contact::default()
            },
        ]
    }

    fn ctx(source: Source) -> RequestContext {
        RequestContext {
            source,
            contacts: contacts(),
        }
    }

    fn fork(d: Decision) -> Fork {
        match d {
            Decision::Fork(f) => f,
            other => panic!("expected a fork, got {other:?}"),
        }
    }

    fn refusal_rule(d: &Decision) -> &str {
        match d {
            Decision::Refuse(r) => &r.rule,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn cvw_30_uc_call_to_an_enabled_user_rings_desk_and_every_client_at_once() {
        let svc = FakeServices::example();
        let msg = FakeMessage::invite("sip:alice@corp.example").from("sip:dave@corp.example");
        let f = fork(on_request(&config(), &msg, ctx(Source::Uc), &svc));
        assert_eq!(f.mode, ForkMode::Parallel);
        let labels: Vec<_> = f.targets.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["desk", "client", "client"]);
        let desk = &f.targets[0];
        assert_eq!(desk.uri, "sip:+14255550101@pbx.corp.example;user=phone");
        assert_eq!(desk.next_hop.as_deref(), Some("sip:127.0.0.1:5090"));
        // CVW-51: the desk gives up before the PBX voicemail (20 s) would answer.
        assert_eq!(desk.ring_timeout_ms, Some(15_000));
        assert!(desk.headers.contains(&Header::new("X-CVW-Leg", "desk")));
        let hi = &desk.headers[0];
        assert_eq!(hi.name, "History-Info");
        assert!(
            hi.value.starts_with("<sip:alice@corp.example>;index=1,"),
            "{}",
            hi.value
        );
        // The soft clients keep where the proxy said to send them.
        assert_eq!(f.targets[1].uri, "sip:alice@127.0.0.1:5071;transport=tcp");
        assert_eq!(
            f.targets[1].next_hop.as_deref(),
            Some("sip:127.0.0.1:5071;transport=tcp")
        );
        // The hot path pays one directory lookup.
        assert_eq!(svc.lookups.get(), 1);
    }

    #[test]
    fn the_hot_paths_read_no_body_and_look_up_once() {
        let svc = FakeServices::example();
        let sdp = "v=0\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n";
        for uri in ["sip:alice@corp.example", "sip:carol@corp.example"] {
            let msg = FakeMessage::invite(uri)
                .from("sip:dave@corp.example")
                .body(sdp);
            on_request(&config(), &msg, ctx(Source::Uc), &svc);
            assert_eq!(msg.body_reads.get(), 0, "{uri}");
        }
        assert_eq!(svc.lookups.get(), 2);
    }

    #[test]
    fn cvw_30_diversion_instead_of_history_info_when_configured() {
        let mut c = config();
        c.desk_divert_header = DivertHeader::Diversion;
        let svc = FakeServices::example();
        let f = fork(on_request(
            &c,
            &FakeMessage::invite("sip:dave@corp.example"),
            ctx(Source::Uc),
            &svc,
        ));
        assert_eq!(
            f.targets[0].headers[0],
            Header::new(
                "Diversion",
                "<sip:dave@corp.example>;reason=follow-me;counter=1"
            )
        );
    }

    #[test]
    fn cvw_30_users_not_found_or_not_enabled_route_as_usual() {
        let svc = FakeServices::example();
        for uri in ["sip:carol@corp.example", "sip:nobody@corp.example"] {
            let d = on_request(&config(), &FakeMessage::invite(uri), ctx(Source::Uc), &svc);
            assert_eq!(d, Decision::Continue, "{uri}");
        }
    }

    #[test]
    fn cvw_30_an_enabled_user_without_clients_still_gets_the_desk() {
        let svc = FakeServices::example();
        let msg = FakeMessage::invite("sip:dave@corp.example");
        let f = fork(on_request(&config(), &msg, RequestContext::default(), &svc));
        assert_eq!(f.targets.len(), 1);
        assert_eq!(f.targets[0].label, "desk");
    }

    #[test]
    fn cvw_30_a_gruu_reaches_one_device_and_is_never_forked() {
        let svc = FakeServices::example();
        let msg = FakeMessage::invite("sip:alice@corp.example;gr=urn:uuid:1234");
        assert_eq!(
            on_request(&config(), &msg, ctx(Source::Uc), &svc),
            Decision::Continue
        );
        assert!(!is_gruu("sip:alice@corp.example;green=1"));
    }

    #[test]
    fn cvw_33_a_call_from_the_pbx_side_rings_only_the_desk() {
        let svc = FakeServices::example();
        let msg = FakeMessage::invite("sip:alice@corp.example");
        let f = fork(on_request(&config(), &msg, ctx(Source::Pbx), &svc));
        assert_eq!(f.targets.len(), 1);
        assert_eq!(f.targets[0].label, "desk");
    }

    #[test]
    fn cvw_34_the_hosts_own_legs_are_never_forked() {
        let svc = FakeServices::example();
        let msg = FakeMessage::invite("sip:alice@corp.example");
        let d = on_request(&config(), &msg, ctx(Source::Origination), &svc);
        assert_eq!(d, Decision::Continue);
        assert_eq!(svc.lookups.get(), 0);
    }

    #[test]
    fn cvw_41_refer_from_a_cvw_users_uc_side_is_refused_others_pass() {
        let svc = FakeServices::example();
        let refer = |from: &str| {
            FakeMessage::new("REFER", "sip:bob@127.0.0.1:5072")
                .from(from)
                .header("Refer-To", "<sip:carol@corp.example>")
        };
        let d = on_request(
            &config(),
            &refer("sip:alice@corp.example"),
            ctx(Source::Uc),
            &svc,
        );
        assert_eq!(refusal_rule(&d), "CVW-41");
        if let Decision::Refuse(r) = &d {
            assert_eq!(r.code, 403);
        }
        let d = on_request(
            &config(),
            &refer("sip:carol@corp.example"),
            ctx(Source::Uc),
            &svc,
        );
        assert_eq!(d, Decision::Continue);
    }

    #[test]
    fn cvw_41_hold_reinvite_from_a_cvw_user_is_refused() {
        let svc = FakeServices::example();
        let msg = FakeMessage::invite("sip:bob@127.0.0.1:5072")
            .from("\"Alice\" <sip:alice@corp.example>")
            .body("v=0\r\nm=audio 4000 RTP/AVP 0\r\na=inactive\r\n");
        let d = on_request(&config(), &msg, ctx(Source::Uc), &svc);
        assert_eq!(refusal_rule(&d), "CVW-41");
    }

    #[test]
    fn cvw_41_rfc_2543_hold_from_a_sips_user_is_refused() {
        let svc = FakeServices::example();
        let msg = FakeMessage::invite("sips:bob@127.0.0.1:5072")
            .from("\"Alice\" <sips:alice@corp.example>")
            .body("v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n");
        let d = on_request(&config(), &msg, ctx(Source::Uc), &svc);
        assert_eq!(refusal_rule(&d), "CVW-41");
    }

    #[test]
    fn cvw_30_a_user_called_as_sips_rings_desk_and_clients() {
        let svc = FakeServices::example();
        let msg = FakeMessage::invite("sips:alice@corp.example").from("sips:dave@corp.example");
        let f = fork(on_request(&config(), &msg, ctx(Source::Uc), &svc));
        let labels: Vec<_> = f.targets.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["desk", "client", "client"]);
    }

    #[test]
    fn cvw_42_replaces_into_a_cvw_users_call_is_refused_from_the_uc_side() {
        let svc = FakeServices::example();
        let msg = FakeMessage::invite("sip:alice@corp.example")
            .from("sip:carol@corp.example")
            .header("Replaces", "call-1@host;to-tag=a;from-tag=b");
        let d = on_request(&config(), &msg, ctx(Source::Uc), &svc);
        assert_eq!(refusal_rule(&d), "CVW-42");
    }

    #[test]
    fn cvw_42_messages_and_app_sharing_are_never_blocked() {
        let svc = FakeServices::example();
        let im = FakeMessage::new("MESSAGE", "sip:bob@corp.example").from("sip:alice@corp.example");
        assert_eq!(
            on_request(&config(), &im, ctx(Source::Uc), &svc),
            Decision::Continue
        );
        let sharing = FakeMessage::invite("sip:carol@corp.example")
            .from("sip:alice@corp.example")
            .body("v=0\r\nm=applicationsharing 5000 TCP/RTP/AVP 127\r\na=sendrecv\r\n");
        assert_eq!(
            on_request(&config(), &sharing, ctx(Source::Uc), &svc),
            Decision::Continue
        );
    }

    #[test]
    fn cvw_43_cvw_44_pbx_voicemail_and_call_trace_are_refused_to_cvw_users() {
        let svc = FakeServices::example();
        for (uri, rule) in [
            ("sip:+14255559000@corp.example;user=phone", "CVW-43"),
            ("sip:%2A57@corp.example", "CVW-44"),
        ] {
            let msg = FakeMessage::invite(uri).from("sip:dave@corp.example");
            let d = on_request(&config(), &msg, ctx(Source::Uc), &svc);
            assert_eq!(refusal_rule(&d), rule, "{uri}");
            let msg = FakeMessage::invite(uri).from("sip:carol@corp.example");
            assert_eq!(
                on_request(&config(), &msg, ctx(Source::Uc), &svc),
                Decision::Continue
            );
        }
    }

    #[test]
    fn cvw_45_refer_with_replaces_and_replacing_invites_from_the_pbx_pass() {
        let svc = FakeServices::example();
        let refer = FakeMessage::new("REFER", "sip:alice@127.0.0.1:5071")
            .from("sip:+14255550101@pbx.corp.example")
            .header(
                "Refer-To",
                "<sip:+14255550142@pbx?Replaces=abc%3Bto-tag%3D1>",
            );
        assert_eq!(
            on_request(&config(), &refer, ctx(Source::Pbx), &svc),
            Decision::Continue
        );
        let replacing = FakeMessage::invite("sip:alice@corp.example")
            .header("Replaces", "abc;to-tag=1;from-tag=2");
        assert_eq!(
            on_request(&config(), &replacing, ctx(Source::Pbx), &svc),
            Decision::Continue
        );
    }

    #[test]
    fn cvw_46_addressing_by_callback_number_is_logged_and_counted_then_routed() {
        let svc = FakeServices::example();
        let msg = FakeMessage::invite("sip:+14255550199@corp.example;user=phone");
        let d = on_request(&config(), &msg, ctx(Source::Uc), &svc);
        assert_eq!(d, Decision::Continue);
        assert_eq!(svc.count_of("cvw_addressed_by_number"), 1);
        let logs = svc.logs.borrow();
        assert!(logs.iter().any(|(l, m)| *l == Level::Warn
            && m.contains("CVW-46")
            && m.contains("sip:alice@corp.example")));
    }

    #[test]
    fn cvw_46_calling_a_desk_line_number_is_not_reported() {
        let svc = FakeServices::example();
        let msg = FakeMessage::invite("tel:+14255550101");
        assert_eq!(
            on_request(&config(), &msg, ctx(Source::Uc), &svc),
            Decision::Continue
        );
        assert_eq!(svc.count_of("cvw_addressed_by_number"), 0);
    }

    fn desk_reply(code: u16, headers: Vec<Header>) -> BranchReply {
        BranchReply {
            label: DESK.into(),
            uri: "sip:+14255550101@pbx.corp.example;user=phone".into(),
            code,
            headers,
            ..BranchReply::default()
        }
    }

    #[test]
    fn cvw_51_desk_diverted_to_voicemail_is_cancelled() {
        assert_eq!(
            on_reply(&desk_reply(181, vec![])),
            ReplyAction::CancelBranch
        );
        let diversion = Header::new("Diversion", "<sip:+14255550101@pbx>;reason=no-answer");
        assert_eq!(
            on_reply(&desk_reply(183, vec![diversion])),
            ReplyAction::CancelBranch
        );
        let hi = Header::new(
            "history-info",
            "<sip:+14255550101@pbx>;index=1,<sip:vm@pbx;cause=408>;index=1.1",
        );
        assert_eq!(
            on_reply(&desk_reply(180, vec![hi])),
            ReplyAction::CancelBranch
        );
    }

    #[test]
    fn cvw_51_plain_ringing_and_client_replies_pass() {
        assert_eq!(on_reply(&desk_reply(180, vec![])), ReplyAction::Continue);
        assert_eq!(on_reply(&desk_reply(200, vec![])), ReplyAction::Continue);
        let mut client = desk_reply(181, vec![]);
        client.label = CLIENT.into();
        assert_eq!(on_reply(&client), ReplyAction::Continue);
    }

    #[test]
    fn failure_with_no_answer_goes_on_to_the_no_answer_uri_serially() {
        let mut c = config();
        let msg = FakeMessage::invite("sip:alice@corp.example");
        let timeout = desk_reply(408, vec![]);
        assert_eq!(on_failure(&c, &msg, &timeout), Decision::Continue);
        c.no_answer_uri = Some("sip:+14255559001@pbx.corp.example;user=phone".into());
        let f = fork(on_failure(&c, &msg, &timeout));
        assert_eq!(f.mode, ForkMode::Serial);
        assert_eq!(f.targets[0].label, VOICEMAIL);
        assert!(
            f.targets[0].headers[0]
                .value
                .contains("sip:alice@corp.example")
        );
        // Busy and declined are the callee's answer; a failed fallback does not loop.
        assert_eq!(
            on_failure(&c, &msg, &desk_reply(486, vec![])),
            Decision::Continue
        );
        let mut vm = desk_reply(408, vec![]);
        vm.label = VOICEMAIL.into();
        assert_eq!(on_failure(&c, &msg, &vm), Decision::Continue);
    }
}
