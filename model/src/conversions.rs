//! [`contract_conversions!`](crate::contract_conversions): the `From` impls, both ways,
//! between this model and a side's generated bindings of `cvw:policy@1.0.0`, written once
//! for the host (wasmtime's `bindgen!`) and the policies (wit-bindgen's `generate!`), whose
//! generated types have the same names, fields and cases (the same WIT). Not here: the
//! conversions that are not field-by-field (the request context, which carries parts of
//! the message the model leaves to the request's getters; the host's borrowed lowering of
//! it), which stay hand-written at each side's edge.

/// Implements `From` both ways between every record, enum and variant of the contract's
/// `types` interface and its twin in this crate, for the generated bindings at the given
/// module path: `From<wit::Decision> for cvw_model::Decision`,
/// `From<cvw_model::Decision> for wit::Decision`, and so on for `Header`, `NameAddr`,
/// `Source`, `Contact`, `Settings`, `User`, `Reply`, `Refusal`, `ForkMode`, `Target`,
/// `Fork`, `Flow`, `Leg`, `OriginationPlan`, `Decision`, `BranchReply`, `ReplyAction`,
/// `ClickToCall`, `MeetingKind`, `DialOut`, `PolicyInfo` and `Level`.
///
/// Invoke it once, in the crate that generates the bindings (the orphan rule allows
/// `From<wit::X> for cvw_model::X` only there). The path is one of plain identifiers
/// (`self`, `crate` and `super` included), resolved where the macro is invoked.
///
/// Not covered: `request-context`, whose record carries the method, the Request-URI, the
/// callee and `joins-dialog` beside the model's [`RequestContext`](crate::RequestContext)
/// (each side maps it by hand), and the `request` resource.
///
/// A field or case added to the WIT fails to compile here (each record is destructured
/// without `..` and each enum matched exhaustively) until it is listed below; a new type
/// has to be listed too.
///
/// ```ignore
/// // In a policy component (wit-bindgen) or the host (wasmtime's bindgen!):
/// mod bindings {
///     wit_bindgen::generate!({ path: "../../wit/policy-1.0.0", world: "policy" });
/// }
/// cvw_model::contract_conversions!(self::bindings::cvw::policy::types);
///
/// fn answer(decision: cvw_model::Decision) -> bindings::cvw::policy::types::Decision {
///     decision.into()
/// }
/// ```
///
/// (The example is not compiled here: this crate does not depend on a bindings generator.
/// `model/tests/contract_conversions.rs` runs the macro against a mirror of the generated
/// types; the host and the policies compile it against the real ones.)
#[macro_export]
macro_rules! contract_conversions {
    // A record: `From` both ways, field by field. A field is moved as is (strings,
    // numbers, flags, optional strings), or converted with a kind: `into` (a record or
    // enum), `maybe` (an optional record), `each` (a list of records).
    (@record $w:ident $name:ident { $($field:ident $(: $how:ident)?),* $(,)? }) => {
        impl ::core::convert::From<$w::$name> for $crate::$name {
            fn from(this: $w::$name) -> Self {
                let $w::$name { $($field),* } = this;
                $crate::$name {
                    $($field: $crate::contract_conversions!(@field $field $($how)?)),*
                }
            }
        }
        impl ::core::convert::From<$crate::$name> for $w::$name {
            fn from(this: $crate::$name) -> Self {
                let $crate::$name { $($field),* } = this;
                $w::$name {
                    $($field: $crate::contract_conversions!(@field $field $($how)?)),*
                }
            }
        }
    };
    (@field $v:ident) => { $v };
    (@field $v:ident into) => { ::core::convert::Into::into($v) };
    (@field $v:ident maybe) => { ::core::option::Option::map($v, ::core::convert::Into::into) };
    (@field $v:ident each) => {
        ::core::iter::Iterator::collect(::core::iter::Iterator::map(
            ::core::iter::IntoIterator::into_iter($v),
            ::core::convert::Into::into,
        ))
    };
    // An enum or variant: `From` both ways, case by case; the cases after `;` carry one
    // value, converted with `into`.
    (@cases $w:ident $name:ident { $($unit:ident),* ; $($data:ident),* $(,)? }) => {
        impl ::core::convert::From<$w::$name> for $crate::$name {
            fn from(this: $w::$name) -> Self {
                match this {
                    $($w::$name::$unit => $crate::$name::$unit,)*
                    $($w::$name::$data(v) => $crate::$name::$data(::core::convert::Into::into(v)),)*
                }
            }
        }
        impl ::core::convert::From<$crate::$name> for $w::$name {
            fn from(this: $crate::$name) -> Self {
                match this {
                    $($crate::$name::$unit => $w::$name::$unit,)*
                    $($crate::$name::$data(v) => $w::$name::$data(::core::convert::Into::into(v)),)*
                }
            }
        }
    };
    ($($path:ident)::+) => {
        // A block, not a module: `self::` in the path still names the invoking module.
        const _: () = {
            use $($path)::+ as wit;
            $crate::contract_conversions!(@record wit Header { name, value });
            $crate::contract_conversions!(@record wit NameAddr { display, uri });
            $crate::contract_conversions!(@cases wit Source { Uc, Pbx, Origination, Other; });
            $crate::contract_conversions!(@record wit Contact {
                uri, next_hop, instance, user_agent
            });
            $crate::contract_conversions!(@record wit Settings {
                name, enabled, admin_callback_number, use_admin_callback_number
            });
            $crate::contract_conversions!(@record wit User {
                uc_address, display_name, line_uri, callback_number, site, settings: into,
                delegation, team_call, response_group
            });
            $crate::contract_conversions!(@record wit Reply { code, reason, headers: each });
            $crate::contract_conversions!(@record wit Refusal {
                code, reason, explanation, rule
            });
            $crate::contract_conversions!(@cases wit ForkMode { Parallel, Serial; });
            $crate::contract_conversions!(@record wit Target {
                label, uri, next_hop, from: maybe, asserted_identity: maybe, headers: each,
                ring_timeout_ms
            });
            $crate::contract_conversions!(@record wit Fork { mode: into, targets: each });
            $crate::contract_conversions!(@cases wit Flow { FlowIv, FlowI; });
            $crate::contract_conversions!(@record wit Leg { uri, shows: into, ring_timeout_ms });
            $crate::contract_conversions!(@record wit OriginationPlan {
                user, callback: into, callee: into, flow: into, max_duration_s
            });
            $crate::contract_conversions!(@cases wit Decision {
                Continue; Reply, Fork, Originate, Refuse
            });
            $crate::contract_conversions!(@record wit BranchReply {
                label, uri, code, reason, headers: each
            });
            $crate::contract_conversions!(@cases wit ReplyAction { Continue, CancelBranch; });
            $crate::contract_conversions!(@record wit ClickToCall {
                user, destination, callback_override
            });
            $crate::contract_conversions!(@cases wit MeetingKind { Scheduled, MeetNow; });
            $crate::contract_conversions!(@record wit DialOut {
                user, conference_uri, kind: into
            });
            $crate::contract_conversions!(@record wit PolicyInfo { name, version, description });
            $crate::contract_conversions!(@cases wit Level { Debug, Info, Warn, Error; });
        };
    };
}
