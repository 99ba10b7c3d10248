//! `cvw-sip`: the SIP user agent the cvw host uses to originate two-leg calls (RFC 3725).
//!
//! Layers, bottom up (each its own module, in the spirit of RFC 3261 §5):
//! `message` (wire format, via rsip), `transport` (UDP/TCP sockets), `transaction`
//! (§17 state machines and timers), `dialog` (§12 dialog state), `ua` (a small user agent
//! core: legs, ACK, CANCEL, BYE, INFO, re-INVITE) and `third_party` (the two-leg call).
//! It knows nothing of policies, wasm or the `cvw` crate: the host converts its
//! `OriginationPlan` into [`third_party::CallPlan`].

pub mod auth;
pub mod dialog;
pub mod message;
pub mod queue;
pub mod sdp;
#[cfg(feature = "testing")]
pub mod testing;
pub mod third_party;
pub mod transaction;
pub mod transport;
pub mod ua;

mod random;
