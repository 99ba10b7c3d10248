//! What the policy needs from its surroundings, as two small traits: the SIP message a hook
//! reads ([`Message`]) and the host's services ([`Services`]: directory, log, metrics,
//! clock). The component skin implements them over the WIT imports; native tests use
//! fakes. Not here: any decision.

use crate::model::{Level, NameAddr, User};

/// A SIP request lent to one hook call. Each getter may cost a host call: call each at
/// most once per decision.
pub trait Message {
    fn method(&self) -> String;
    fn request_uri(&self) -> String;
    fn call_id(&self) -> String;
    fn from(&self) -> NameAddr;
    fn to(&self) -> NameAddr;
    /// First value of a header (name case-insensitive), `None` when absent.
    fn header(&self, name: &str) -> Option<String>;
    /// Every value of a header, in message order.
    fn headers(&self, name: &str) -> Vec<String>;
    /// Whether any of these headers is present: one host call for a set of markers.
    fn has_any_header(&self, names: &[&str]) -> bool {
        names.iter().any(|name| self.header(name).is_some())
    }
    /// The request has `Replaces` (RFC 3891) or `Join` (RFC 3911): it takes over or joins
    /// an existing dialog.
    fn joins_dialog(&self) -> bool {
        self.has_any_header(&["Replaces", "Join"])
    }
    /// The body, empty for none.
    fn body(&self) -> Vec<u8>;
}

/// The host's services.
pub trait Services {
    /// A user by UC address or by number (digits compare).
    fn lookup(&self, address: &str) -> Option<User>;
    fn log(&self, level: Level, message: &str);
    /// Add `delta` to counter `name`.
    fn count(&self, name: &str, delta: u64);
    /// Seconds since the Unix epoch, UTC.
    fn now(&self) -> u64;
}
