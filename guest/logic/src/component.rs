//! The wit-bindgen skin: the `cvw:policy@1.0.0` bindings, the conversions between them and
//! the plain model, [`Message`]/[`Services`] over the imports, and [`export_policy!`],
//! which exports any [`Hooks`] implementation as the component's `hooks`. This crate
//! exports nothing itself (every policy crate exports once, see `cvw-guest`). Not here:
//! decisions.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::env::{Message, Services};
use crate::model;
use crate::policy::Hooks;

/// The generated bindings (public so that [`export_policy!`] works in other crates).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/policy-1.0.0",
        world: "policy",
        pub_export_macro: true,
    });
}

/// The contract's types, for signatures in [`export_policy!`].
#[doc(hidden)]
pub mod wit {
    pub use super::bindings::cvw::policy::types::*;
}

use bindings::cvw::policy::{clock, directory, log, metrics};

/// A configured policy instance's state (set by `configure`).
pub type Slot<H> = LocalKey<RefCell<Option<H>>>;

/// [`Message`] over the host's borrowed request. `line` (method and Request-URI) and
/// `joins_dialog` are set when the host sent them with the call (`on-request`), so
/// reading them costs no host call.
struct WitMessage<'a> {
    request: &'a wit::Request,
    line: Option<(&'a str, &'a str)>,
    joins_dialog: Option<bool>,
}

impl<'a> WitMessage<'a> {
    fn new(request: &'a wit::Request) -> Self {
        WitMessage {
            request,
            line: None,
            joins_dialog: None,
        }
    }
}

impl Message for WitMessage<'_> {
    fn method(&self) -> String {
        match self.line {
            Some((method, _)) => method.to_owned(),
            None => self.request.method(),
        }
    }
    fn request_uri(&self) -> String {
        match self.line {
            Some((_, uri)) => uri.to_owned(),
            None => self.request.request_uri(),
        }
    }
    fn call_id(&self) -> String {
        self.request.call_id()
    }
    fn from(&self) -> model::NameAddr {
        name_addr_in(self.request.from())
    }
    fn to(&self) -> model::NameAddr {
        name_addr_in(self.request.to())
    }
    fn header(&self, name: &str) -> Option<String> {
        self.request.header(name)
    }
    fn headers(&self, name: &str) -> Vec<String> {
        self.request.headers(name)
    }
    fn has_any_header(&self, names: &[&str]) -> bool {
        let names: Vec<String> = names.iter().map(|&name| name.to_owned()).collect();
        self.request.has_any_header(&names)
    }
    fn joins_dialog(&self) -> bool {
        match self.joins_dialog {
            Some(joins) => joins,
            None => self.has_any_header(&["Replaces", "Join"]),
        }
    }
    fn body(&self) -> Vec<u8> {
        self.request.body()
    }
}

/// [`Services`] over the imports. `callee` is the record the host sent with an `INVITE`
/// (`request-context.callee`): it answers the first lookup of that Request-URI without a
/// host call.
#[derive(Default)]
struct HostServices<'a> {
    callee: Option<Prefetched<'a>>,
}

/// A lookup the host already made: `address` and its answer, until it is taken.
struct Prefetched<'a> {
    address: &'a str,
    user: RefCell<Option<Option<wit::User>>>,
}

impl Services for HostServices<'_> {
    fn lookup(&self, address: &str) -> Option<model::User> {
        if let Some(callee) = &self.callee
            && callee.address == address
            && let Some(user) = callee.user.take()
        {
            return user.map(user_in);
        }
        directory::lookup(address).map(user_in)
    }
    fn log(&self, level: model::Level, message: &str) {
        let level = match level {
            model::Level::Debug => wit::Level::Debug,
            model::Level::Info => wit::Level::Info,
            model::Level::Warn => wit::Level::Warn,
            model::Level::Error => wit::Level::Error,
        };
        log::write(level, message);
    }
    fn count(&self, name: &str, delta: u64) {
        metrics::count(name, delta);
    }
    fn now(&self) -> u64 {
        clock::now()
    }
}

fn name_addr_in(n: wit::NameAddr) -> model::NameAddr {
    model::NameAddr {
        display: n.display,
        uri: n.uri,
    }
}

fn name_addr_out(n: model::NameAddr) -> wit::NameAddr {
    wit::NameAddr {
        display: n.display,
        uri: n.uri,
    }
}

fn headers_in(headers: Vec<wit::Header>) -> Vec<model::Header> {
    headers
        .into_iter()
        .map(|h| model::Header {
            name: h.name,
            value: h.value,
        })
        .collect()
}

fn headers_out(headers: Vec<model::Header>) -> Vec<wit::Header> {
    headers
        .into_iter()
        .map(|h| wit::Header {
            name: h.name,
            value: h.value,
        })
        .collect()
}

fn user_in(u: wit::User) -> model::User {
    model::User {
        uc_address: u.uc_address,
        display_name: u.display_name,
        line_uri: u.line_uri,
        callback_number: u.callback_number,
        site: u.site,
        settings: model::Settings {
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

fn context_in(source: wit::Source, contacts: Vec<wit::Contact>) -> model::RequestContext {
    model::RequestContext {
        source: match source {
            wit::Source::Uc => model::Source::Uc,
            wit::Source::Pbx => model::Source::Pbx,
            wit::Source::Origination => model::Source::Origination,
            wit::Source::Other => model::Source::Other,
        },
        contacts: contacts
            .into_iter()
            .map(|c| model::Contact {
                uri: c.uri,
                next_hop: c.next_hop,
                instance: c.instance,
                user_agent: c.user_agent,
            })
            .collect(),
    }
}

fn branch_reply_in(r: wit::BranchReply) -> model::BranchReply {
    model::BranchReply {
        label: r.label,
        uri: r.uri,
        code: r.code,
        reason: r.reason,
        headers: headers_in(r.headers),
    }
}

fn leg_out(l: model::Leg) -> wit::Leg {
    wit::Leg {
        uri: l.uri,
        shows: name_addr_out(l.shows),
        ring_timeout_ms: l.ring_timeout_ms,
    }
}

fn target_out(t: model::Target) -> wit::Target {
    wit::Target {
        label: t.label,
        uri: t.uri,
        next_hop: t.next_hop,
        from: t.from.map(name_addr_out),
        asserted_identity: t.asserted_identity.map(name_addr_out),
        headers: headers_out(t.headers),
        ring_timeout_ms: t.ring_timeout_ms,
    }
}

fn decision_out(d: model::Decision) -> wit::Decision {
    match d {
        model::Decision::Continue => wit::Decision::Continue,
        model::Decision::Reply(r) => wit::Decision::Reply(wit::Reply {
            code: r.code,
            reason: r.reason,
            headers: headers_out(r.headers),
        }),
        model::Decision::Fork(f) => wit::Decision::Fork(wit::Fork {
            mode: match f.mode {
                model::ForkMode::Parallel => wit::ForkMode::Parallel,
                model::ForkMode::Serial => wit::ForkMode::Serial,
            },
            targets: f.targets.into_iter().map(target_out).collect(),
        }),
        model::Decision::Originate(p) => wit::Decision::Originate(wit::OriginationPlan {
            user: p.user,
            callback: leg_out(p.callback),
            callee: leg_out(p.callee),
            flow: match p.flow {
                model::Flow::FlowIv => wit::Flow::FlowIv,
                model::Flow::FlowI => wit::Flow::FlowI,
            },
            max_duration_s: p.max_duration_s,
        }),
        model::Decision::Refuse(r) => wit::Decision::Refuse(wit::Refusal {
            code: r.code,
            reason: r.reason,
            explanation: r.explanation,
            rule: r.rule,
        }),
    }
}

/// Run `f` on the configured policy; `fallback` when `configure` has not succeeded (the
/// host calls it first, so this is a host bug, answered with default routing).
fn with_policy<H: Hooks + 'static, T>(
    slot: &'static Slot<H>,
    fallback: T,
    f: impl FnOnce(&H) -> T,
) -> T {
    slot.with_borrow(|policy| match policy {
        Some(policy) => f(policy),
        None => {
            log::write(wit::Level::Error, "hook called before configure succeeded");
            fallback
        }
    })
}

#[doc(hidden)]
pub fn describe<H: Hooks>() -> wit::PolicyInfo {
    let info = H::describe();
    wit::PolicyInfo {
        name: info.name,
        version: info.version,
        description: info.description,
    }
}

#[doc(hidden)]
pub fn configure<H: Hooks + 'static>(
    slot: &'static Slot<H>,
    config: Vec<(String, String)>,
) -> Result<(), String> {
    // The configured policy lives as long as the instance: not in the per-call arena.
    crate::arena::outside_arena(|| {
        let policy = H::configure(&config, &HostServices::default())?;
        slot.set(Some(policy));
        Ok(())
    })
}

#[doc(hidden)]
pub fn check_user<H: Hooks + 'static>(
    slot: &'static Slot<H>,
    user: wit::User,
) -> Result<(), String> {
    let user = user_in(user);
    with_policy(slot, Err("policy not configured".to_owned()), |p| {
        p.check_user(&user)
    })
}

#[doc(hidden)]
pub fn on_request<H: Hooks + 'static>(
    slot: &'static Slot<H>,
    request: &wit::Request,
    context: wit::RequestContext,
) -> wit::Decision {
    let wit::RequestContext {
        source,
        contacts,
        method,
        request_uri,
        callee,
        joins_dialog,
    } = context;
    let ctx = context_in(source, contacts);
    let msg = WitMessage {
        request,
        line: Some((&method, &request_uri)),
        joins_dialog: Some(joins_dialog),
    };
    // `callee` is the host's lookup only for an INVITE; for other methods `none` means
    // "not looked up", not "nobody".
    let svc = HostServices {
        callee: (method == "INVITE").then(|| Prefetched {
            address: &request_uri,
            user: RefCell::new(Some(callee)),
        }),
    };
    with_policy(slot, wit::Decision::Continue, |p| {
        decision_out(p.on_request(&msg, ctx, &svc))
    })
}

#[doc(hidden)]
pub fn on_reply<H: Hooks + 'static>(
    slot: &'static Slot<H>,
    request: &wit::Request,
    reply: wit::BranchReply,
) -> wit::ReplyAction {
    let reply = branch_reply_in(reply);
    with_policy(slot, wit::ReplyAction::Continue, |p| {
        match p.on_reply(&WitMessage::new(request), &reply, &HostServices::default()) {
            model::ReplyAction::Continue => wit::ReplyAction::Continue,
            model::ReplyAction::CancelBranch => wit::ReplyAction::CancelBranch,
        }
    })
}

#[doc(hidden)]
pub fn on_failure<H: Hooks + 'static>(
    slot: &'static Slot<H>,
    request: &wit::Request,
    failure: wit::BranchReply,
) -> wit::Decision {
    let failure = branch_reply_in(failure);
    with_policy(slot, wit::Decision::Continue, |p| {
        decision_out(p.on_failure(
            &WitMessage::new(request),
            &failure,
            &HostServices::default(),
        ))
    })
}

#[doc(hidden)]
pub fn on_click_to_call<H: Hooks + 'static>(
    slot: &'static Slot<H>,
    request: wit::ClickToCall,
) -> wit::Decision {
    let req = model::ClickToCall {
        user: request.user,
        destination: request.destination,
        callback_override: request.callback_override,
    };
    with_policy(slot, wit::Decision::Continue, |p| {
        decision_out(p.on_click_to_call(&req, &HostServices::default()))
    })
}

#[doc(hidden)]
pub fn on_dial_out<H: Hooks + 'static>(
    slot: &'static Slot<H>,
    request: wit::DialOut,
) -> wit::Decision {
    let req = model::DialOut {
        user: request.user,
        conference_uri: request.conference_uri,
        kind: match request.kind {
            wit::MeetingKind::Scheduled => model::MeetingKind::Scheduled,
            wit::MeetingKind::MeetNow => model::MeetingKind::MeetNow,
        },
    };
    with_policy(slot, wit::Decision::Continue, |p| {
        decision_out(p.on_dial_out(&req, &HostServices::default()))
    })
}

/// Export a [`Hooks`] implementation as this component's `cvw:policy/hooks`:
/// `cvw_guest::export_policy!(MyComponent, MyPolicy);` at a crate's root, on `wasm32`.
#[macro_export]
macro_rules! export_policy {
    ($component:ident, $hooks:ty) => {
        struct $component;

        ::std::thread_local! {
            static CVW_POLICY: ::core::cell::RefCell<::core::option::Option<$hooks>> =
                const { ::core::cell::RefCell::new(::core::option::Option::None) };
        }

        impl $crate::component::bindings::exports::cvw::policy::hooks::Guest for $component {
            fn describe() -> $crate::component::wit::PolicyInfo {
                $crate::component::describe::<$hooks>()
            }
            fn configure(
                config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $crate::component::configure(&CVW_POLICY, config)
            }
            fn check_user(
                user: $crate::component::wit::User,
            ) -> ::core::result::Result<(), ::std::string::String> {
                $crate::component::check_user(&CVW_POLICY, user)
            }
            fn on_request(
                request: &$crate::component::wit::Request,
                context: $crate::component::wit::RequestContext,
            ) -> $crate::component::wit::Decision {
                $crate::component::on_request(&CVW_POLICY, request, context)
            }
            fn on_reply(
                request: &$crate::component::wit::Request,
                reply: $crate::component::wit::BranchReply,
            ) -> $crate::component::wit::ReplyAction {
                $crate::component::on_reply(&CVW_POLICY, request, reply)
            }
            fn on_failure(
                request: &$crate::component::wit::Request,
                failure: $crate::component::wit::BranchReply,
            ) -> $crate::component::wit::Decision {
                $crate::component::on_failure(&CVW_POLICY, request, failure)
            }
            fn on_click_to_call(
                request: $crate::component::wit::ClickToCall,
            ) -> $crate::component::wit::Decision {
                $crate::component::on_click_to_call(&CVW_POLICY, request)
            }
            fn on_dial_out(
                request: $crate::component::wit::DialOut,
            ) -> $crate::component::wit::Decision {
                $crate::component::on_dial_out(&CVW_POLICY, request)
            }
        }

        $crate::component::bindings::export!($component with_types_in $crate::component::bindings);
    };
}
