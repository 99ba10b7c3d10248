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
    let by_number = numbers::is_number_address(&request_uri);
    let callee = svc.lookup(&request_uri);
    match callee {
        Some(user) if !by_number && user.enabled() => ring_user(config, msg, ctx, user, svc),
        Some(user) if by_number => {
            report_number_addressing(&request_uri, &user, svc);
            uc_side_limits(config, &request_uri, msg, ctx.source, svc)
        }
        _ => uc_side_limits(config, &request_uri, msg, ctx.source, svc),
    }
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
        svc.log(
            Level::Warn,
            "enabled user without a usable line_uri: desk not rung",
        );
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
    let line = numbers::number(user.line_uri.as_deref()?)?;
    let uri = numbers::pbx_uri(&line, &config.pbx_uri_suffix);
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
    svc: &dyn Services,
) -> Decision {
    if source != Source::Uc {
        return Decision::Continue;
    }
    match limits::invite_limit(config, request_uri, msg) {
        Some(limit) => refuse_if_cvw_caller(msg, svc, limit),
        None => Decision::Continue,
    }
}

/// Refuse with `limit` when the caller (From) is an enabled Call-via-Work user.
fn refuse_if_cvw_caller(msg: &dyn Message, svc: &dyn Services, limit: Limit) -> Decision {
    let caller = msg.from();
    match svc.lookup(&caller.uri) {
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
