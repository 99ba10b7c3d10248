//! The generated bindings of `cvw:policy@1.0.0`, fenced in: nothing outside `policy`
//! sees a generated type. Owns the conversions between them and [`super::model`] (the
//! plain field-by-field ones from [`cvw_model::contract_conversions!`], the borrowed
//! lowering of `request-context` by hand), so a future contract version maps onto the same
//! model here and nowhere else.

use wasmtime::Store;
use wasmtime::component::{ComponentType, Func, Instance, Lower, Resource, TypedFunc};

use super::model;
use crate::message::SipRequest;

wasmtime::component::bindgen!({
    world: "policy",
    path: "../../wit/policy-1.0.0",
    with: {
        "cvw:policy/types.request": crate::message::SipRequest,
    },
    // The request getters may trap (a handle used outside its call); the other imports
    // cannot fail.
    imports: {
        "cvw:policy/types": trappable,
    },
});

pub(crate) use self::cvw::policy::types as wit;

// `From` both ways between every generated record/enum/variant and its model twin (the
// same macro as the policies' skin); `request-context` is lowered by hand below.
cvw_model::contract_conversions!(self::cvw::policy::types);

/// `on-request` called with its context lowered straight from the host's data: the
/// request hook is the hot path, and the generated record would copy every string of the
/// context (and of the callee's record) on the host before copying it into the policy.
pub(crate) type OnRequest<'a> =
    TypedFunc<(Resource<SipRequest>, RequestContextRef<'a>), (wit::Decision,)>;

/// An instance's `hooks.on-request`, whose type was checked against [`OnRequest`]: only
/// [`on_request_func`] makes one, so [`call_on_request`] need not check it on every call.
pub(crate) struct OnRequestFunc(Func);

/// Finds `hooks.on-request` in `instance` and checks its type once.
pub(crate) fn on_request_func<T: 'static>(
    store: &mut Store<T>,
    instance: &Instance,
) -> wasmtime::Result<OnRequestFunc> {
    let hooks = instance
        .get_export_index(&mut *store, None, HOOKS)
        .ok_or_else(|| wasmtime::format_err!("no export {HOOKS}"))?;
    let index = instance
        .get_export_index(&mut *store, Some(&hooks), "on-request")
        .ok_or_else(|| wasmtime::format_err!("no export {HOOKS}#on-request"))?;
    let func = instance
        .get_func(&mut *store, index)
        .ok_or_else(|| wasmtime::format_err!("{HOOKS}#on-request is not a function"))?;
    func.typed::<(Resource<SipRequest>, RequestContextRef<'static>), (wit::Decision,)>(&*store)?;
    Ok(OnRequestFunc(func))
}

const HOOKS: &str = "cvw:policy/hooks@1.0.0";

/// Calls `on-request` with a context that borrows the host's data.
pub(crate) fn call_on_request<T: 'static>(
    store: &mut Store<T>,
    func: &OnRequestFunc,
    request: Resource<SipRequest>,
    context: RequestContextRef<'_>,
) -> wasmtime::Result<model::Decision> {
    // SAFETY: `on_request_func` checked this function against these very types; a
    // lifetime does not change a component type. (A function of another store is still
    // refused by `call`.)
    let typed: OnRequest<'_> = unsafe { TypedFunc::new_unchecked(func.0) };
    let (answer,) = typed.call(store, (request, context))?;
    Ok(answer.into())
}

/// The contract's `request-context`, borrowing the host's data: the proxy's facts, the
/// request line and an `INVITE`'s callee, which every decision reads.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct RequestContextRef<'a> {
    source: wit::Source,
    contacts: Vec<ContactRef<'a>>,
    method: &'a str,
    #[component(name = "request-uri")]
    request_uri: &'a str,
    callee: Option<UserRef<'a>>,
    #[component(name = "joins-dialog")]
    joins_dialog: bool,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct ContactRef<'a> {
    uri: &'a str,
    #[component(name = "next-hop")]
    next_hop: Option<&'a str>,
    instance: Option<&'a str>,
    #[component(name = "user-agent")]
    user_agent: Option<&'a str>,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct UserRef<'a> {
    #[component(name = "uc-address")]
    uc_address: &'a str,
    #[component(name = "display-name")]
    display_name: &'a str,
    #[component(name = "line-uri")]
    line_uri: Option<&'a str>,
    #[component(name = "callback-number")]
    callback_number: Option<&'a str>,
    site: Option<&'a str>,
    settings: SettingsRef<'a>,
    delegation: bool,
    #[component(name = "team-call")]
    team_call: bool,
    #[component(name = "response-group")]
    response_group: bool,
}

#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct SettingsRef<'a> {
    name: &'a str,
    enabled: bool,
    #[component(name = "admin-callback-number")]
    admin_callback_number: Option<&'a str>,
    #[component(name = "use-admin-callback-number")]
    use_admin_callback_number: bool,
}

/// The context of `req`; `callee` is the directory's answer for its Request-URI, which
/// the caller looks up for an `INVITE` only (see [`callee_address`]).
pub(crate) fn request_context<'a>(
    c: &'a model::RequestContext,
    req: &'a SipRequest,
    callee: Option<&'a model::User>,
) -> RequestContextRef<'a> {
    RequestContextRef {
        source: c.source.into(),
        contacts: c
            .contacts
            .iter()
            .map(|c| ContactRef {
                uri: &c.uri,
                next_hop: c.next_hop.as_deref(),
                instance: c.instance.as_deref(),
                user_agent: c.user_agent.as_deref(),
            })
            .collect(),
        method: req.method(),
        request_uri: req.request_uri(),
        callee: callee.map(|u| UserRef {
            uc_address: &u.uc_address,
            display_name: &u.display_name,
            line_uri: u.line_uri.as_deref(),
            callback_number: u.callback_number.as_deref(),
            site: u.site.as_deref(),
            settings: SettingsRef {
                name: &u.settings.name,
                enabled: u.settings.enabled,
                admin_callback_number: u.settings.admin_callback_number.as_deref(),
                use_admin_callback_number: u.settings.use_admin_callback_number,
            },
            delegation: u.delegation,
            team_call: u.team_call,
            response_group: u.response_group,
        }),
        joins_dialog: req.header("Replaces").is_some() || req.header("Join").is_some(),
    }
}

/// The address whose user `request-context.callee` carries: an `INVITE`'s Request-URI.
pub(crate) fn callee_address(req: &SipRequest) -> Option<&str> {
    (req.method() == "INVITE").then(|| req.request_uri())
}
