//! The generated bindings of `cvw:policy@1.0.0`, fenced in: nothing outside `policy`
//! sees a generated type. Owns the conversions between them and [`super::model`], so a
//! future contract version maps onto the same model here and nowhere else.

use super::model;

wasmtime::component::bindgen!({
    world: "policy",
    path: "../wit/policy-1.0.0",
    with: {
        "cvw:policy/types.request": crate::message::SipRequest,
    },
    // The request getters may trap (a handle used outside its call); the other imports
    // cannot fail.
    imports: {
        "cvw:policy/types": trappable,
    },
});

pub(crate) use cvw::policy::types as wit;

// ---- host model → contract (inputs of hooks and imports) ----

pub(crate) fn name_addr(n: &model::NameAddr) -> wit::NameAddr {
    wit::NameAddr {
        display: n.display.clone(),
        uri: n.uri.clone(),
    }
}

fn header(h: &model::Header) -> wit::Header {
    wit::Header {
        name: h.name.clone(),
        value: h.value.clone(),
    }
}

pub(crate) fn user(u: model::User) -> wit::User {
    wit::User {
        uc_address: u.uc_address,
        display_name: u.display_name,
        line_uri: u.line_uri,
        callback_number: u.callback_number,
        site: u.site,
        settings: wit::Settings {
            name: u.settings.name,
            enabled: u.settings.enabled,
            admin_callback_number: u.settings.admin_callback_number,
            use_admin_callback_number: u.settings.use_admin_callback_number,
        },
        delegation: u.delegation,
        team_call: u.team_call,
        response_group: u.response_group,
    }
}

pub(crate) fn request_context(c: &model::RequestContext) -> wit::RequestContext {
    wit::RequestContext {
        source: match c.source {
            model::Source::Uc => wit::Source::Uc,
            model::Source::Pbx => wit::Source::Pbx,
            model::Source::Origination => wit::Source::Origination,
            model::Source::Other => wit::Source::Other,
        },
        contacts: c
            .contacts
            .iter()
            .map(|c| wit::Contact {
                uri: c.uri.clone(),
                next_hop: c.next_hop.clone(),
                instance: c.instance.clone(),
                user_agent: c.user_agent.clone(),
            })
            .collect(),
    }
}

pub(crate) fn branch_reply(r: &model::BranchReply) -> wit::BranchReply {
    wit::BranchReply {
        label: r.label.clone(),
        uri: r.uri.clone(),
        code: r.code,
        reason: r.reason.clone(),
        headers: r.headers.iter().map(header).collect(),
    }
}

pub(crate) fn click_to_call(r: &model::ClickToCall) -> wit::ClickToCall {
    wit::ClickToCall {
        user: r.user.clone(),
        destination: r.destination.clone(),
        callback_override: r.callback_override.clone(),
    }
}

pub(crate) fn dial_out(r: &model::DialOut) -> wit::DialOut {
    wit::DialOut {
        user: r.user.clone(),
        conference_uri: r.conference_uri.clone(),
        kind: match r.kind {
            model::MeetingKind::Scheduled => wit::MeetingKind::Scheduled,
            model::MeetingKind::MeetNow => wit::MeetingKind::MeetNow,
        },
    }
}

// ---- contract → host model (what a policy answers) ----

fn from_name_addr(n: wit::NameAddr) -> model::NameAddr {
    model::NameAddr {
        display: n.display,
        uri: n.uri,
    }
}

fn from_headers(h: Vec<wit::Header>) -> Vec<model::Header> {
    h.into_iter()
        .map(|h| model::Header {
            name: h.name,
            value: h.value,
        })
        .collect()
}

fn from_leg(l: wit::Leg) -> model::Leg {
    model::Leg {
        uri: l.uri,
        shows: from_name_addr(l.shows),
        ring_timeout_ms: l.ring_timeout_ms,
    }
}

pub(crate) fn decision(d: wit::Decision) -> model::Decision {
    match d {
        wit::Decision::Continue => model::Decision::Continue,
        wit::Decision::Reply(r) => model::Decision::Reply(model::Reply {
            code: r.code,
            reason: r.reason,
            headers: from_headers(r.headers),
        }),
        wit::Decision::Fork(f) => model::Decision::Fork(model::Fork {
            mode: match f.mode {
                wit::ForkMode::Parallel => model::ForkMode::Parallel,
                wit::ForkMode::Serial => model::ForkMode::Serial,
            },
            targets: f
                .targets
                .into_iter()
                .map(|t| model::Target {
                    label: t.label,
                    uri: t.uri,
                    next_hop: t.next_hop,
                    from: t.from.map(from_name_addr),
                    asserted_identity: t.asserted_identity.map(from_name_addr),
                    headers: from_headers(t.headers),
                    ring_timeout_ms: t.ring_timeout_ms,
                })
                .collect(),
        }),
        wit::Decision::Originate(p) => model::Decision::Originate(model::OriginationPlan {
            user: p.user,
            callback: from_leg(p.callback),
            callee: from_leg(p.callee),
            flow: match p.flow {
                wit::Flow::FlowIv => model::Flow::FlowIv,
                wit::Flow::FlowI => model::Flow::FlowI,
            },
            max_duration_s: p.max_duration_s,
        }),
        wit::Decision::Refuse(r) => model::Decision::Refuse(model::Refusal {
            code: r.code,
            reason: r.reason,
            explanation: r.explanation,
            rule: r.rule,
        }),
    }
}

pub(crate) fn reply_action(a: wit::ReplyAction) -> model::ReplyAction {
    match a {
        wit::ReplyAction::Continue => model::ReplyAction::Continue,
        wit::ReplyAction::CancelBranch => model::ReplyAction::CancelBranch,
    }
}

pub(crate) fn policy_info(i: wit::PolicyInfo) -> model::PolicyInfo {
    model::PolicyInfo {
        name: i.name,
        version: i.version,
        description: i.description,
    }
}
