//! The data of the Call-via-Work contract (`cvw:policy@1.0.0`, `wit/policy-1.0.0/`) as
//! plain Rust, the one model both sides speak: the policy's logic (`cvw-guest-logic`,
//! built natively and for `wasm32-wasip2`) and the host (`cvw`: adapters, the decision
//! service, origination, scenario files, the call log).
//!
//! Each side converts these types to and from its own generated bindings at its edge
//! (`guest/logic/src/component.rs`, `host/cvw/src/policy/bindings.rs`), both with the one
//! [`contract_conversions!`] written here; nothing else sees a generated type, so a later
//! contract version maps onto this same model.
//!
//! Feature `serde`: `Serialize`/`Deserialize` with the names scenario files and the
//! decision service's JSON use (snake_case fields, kebab-case cases, a decision tagged by
//! `"decision"`). Golden tests in the host check that form byte for byte.
//!
//! Not here: any behaviour (what a policy decides, how a proxy applies a decision), the
//! SIP request itself (the host's message, read by a policy through getters) and the
//! generated bindings.
//!
//! [`Decision`] and [`ReplyAction`] are deliberately not `#[non_exhaustive]`: both sides
//! are in one workspace and match them exhaustively, so a new case is a compile error at
//! every place that must handle it rather than a silent fallback arm.

mod conversions;
mod decision;
mod directory;
mod info;
mod request;

pub use decision::{
    Decision, Flow, Fork, ForkMode, Leg, OriginationPlan, Refusal, Reply, ReplyAction, Target,
};
pub use directory::{Settings, User};
pub use info::{Level, PolicyInfo};
pub use request::{
    BranchReply, ClickToCall, Contact, DialOut, Header, MeetingKind, NameAddr, RequestContext,
    Source,
};
