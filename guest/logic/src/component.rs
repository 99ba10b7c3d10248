//! The wit-bindgen skin: the `cvw:policy@1.0.0` bindings, the conversions between them and
//! the plain model (field by field from [`cvw_model::contract_conversions!`], the request
//! context by hand), [`Message`]/[`Services`] over the imports, and [`export_policy!`],
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

// `From` both ways between every generated record/enum/variant and its model twin (the
// same macro as the host's bindings); `request-context` is mapped by hand in `on_request`.
cvw_model::contract_conversions!(self::bindings::cvw::policy::types);

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
        self.request.from().into()
    }
    fn to(&self) -> model::NameAddr {
        self.request.to().into()
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
            return user.map(model::User::from);
        }
        directory::lookup(address).map(model::User::from)
    }
    fn log(&self, level: model::Level, message: &str) {
        log::write(level.into(), message);
    }
    fn count(&self, name: &str, delta: u64) {
        metrics::count(name, delta);
    }
    fn now(&self) -> u64 {
        clock::now()
    }
}

/// The model's part of `request-context`: the rest (method, Request-URI, callee,
/// `joins-dialog`) is read back through [`WitMessage`] and [`HostServices`], so this is
/// not a field-by-field mapping for the macro.
fn context_in(source: wit::Source, contacts: Vec<wit::Contact>) -> model::RequestContext {
    model::RequestContext {
        source: source.into(),
        contacts: contacts.into_iter().map(model::Contact::from).collect(),
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
    H::describe().into()
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
    let user = model::User::from(user);
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
        p.on_request(&msg, ctx, &svc).into()
    })
}

#[doc(hidden)]
pub fn on_reply<H: Hooks + 'static>(
    slot: &'static Slot<H>,
    request: &wit::Request,
    reply: wit::BranchReply,
) -> wit::ReplyAction {
    let reply = model::BranchReply::from(reply);
    with_policy(slot, wit::ReplyAction::Continue, |p| {
        p.on_reply(&WitMessage::new(request), &reply, &HostServices::default())
            .into()
    })
}

#[doc(hidden)]
pub fn on_failure<H: Hooks + 'static>(
    slot: &'static Slot<H>,
    request: &wit::Request,
    failure: wit::BranchReply,
) -> wit::Decision {
    let failure = model::BranchReply::from(failure);
    with_policy(slot, wit::Decision::Continue, |p| {
        p.on_failure(
            &WitMessage::new(request),
            &failure,
            &HostServices::default(),
        )
        .into()
    })
}

#[doc(hidden)]
pub fn on_click_to_call<H: Hooks + 'static>(
    slot: &'static Slot<H>,
    request: wit::ClickToCall,
) -> wit::Decision {
    let req = model::ClickToCall::from(request);
    with_policy(slot, wit::Decision::Continue, |p| {
        p.on_click_to_call(&req, &HostServices::default()).into()
    })
}

#[doc(hidden)]
pub fn on_dial_out<H: Hooks + 'static>(
    slot: &'static Slot<H>,
    request: wit::DialOut,
) -> wit::Decision {
    let req = model::DialOut::from(request);
    with_policy(slot, wit::Decision::Continue, |p| {
        p.on_dial_out(&req, &HostServices::default()).into()
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
