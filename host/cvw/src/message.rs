//! The SIP request as the policy sees it: a read-only view over `cvw_sip`'s one message
//! model, with the getters the policy runtime lends to a module.
//!
//! Owns what the policy needs beyond the wire form: From, To and Call-ID required and read
//! once (From/To as name-addr, without tag or other parameters), and a builder for
//! adapters that only get fields from their proxy. Parsing, header order, compact names
//! and case-insensitive lookup are `cvw_sip::message`'s. Does not own SIP transport,
//! transactions or replies (`cvw-sip` and the adapters do).
//!
//! A [`SipRequest`] is immutable and cheap to clone (one reference count): the policy
//! runtime lends the same parsed message to every hook of a call without copying it.

use std::fmt;
use std::sync::Arc;

use cvw_model::NameAddr;
use cvw_sip::message::{self as sip, Headers, Method, ParseError, Request};

/// Why bytes are not a SIP request the policy can read.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("not a SIP request: {}", syntax(.0))]
    Parse(#[source] ParseError),
    #[error("header `{name}` is required")]
    MissingHeader { name: &'static str },
    #[error("header `{name}` value {value:?} is not a name-addr")]
    BadNameAddr { name: &'static str, value: String },
}

/// What rsip said, without `cvw_sip`'s own "not a SIP message" in front: the answer to the
/// proxy stays as short as it was.
fn syntax(error: &ParseError) -> String {
    match error {
        ParseError::Syntax(rsip) => rsip.to_string(),
        other => other.to_string(),
    }
}

/// An initial SIP request, immutable after construction.
#[derive(Clone)]
pub struct SipRequest(Arc<Parts>);

struct Parts {
    request: Request,
    from: NameAddr,
    to: NameAddr,
}

impl SipRequest {
    /// Parses a request from the wire. Requires From, To and Call-ID (the policy's getters
    /// for them cannot say "missing").
    pub fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        Request::parse(bytes)
            .map_err(MessageError::Parse)?
            .try_into()
    }

    /// Starts a request from parts, for adapters that get fields rather than bytes.
    pub fn builder(method: impl Into<String>, uri: impl Into<String>) -> SipRequestBuilder {
        SipRequestBuilder {
            method: method.into(),
            uri: uri.into(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// The request this view reads.
    pub fn request(&self) -> &Request {
        &self.0.request
    }

    pub fn method(&self) -> &str {
        self.0.request.method.as_str()
    }

    pub fn request_uri(&self) -> &str {
        &self.0.request.uri
    }

    pub fn call_id(&self) -> &str {
        self.0.request.headers.call_id()
    }

    /// From without tag or other parameters.
    pub fn from(&self) -> &NameAddr {
        &self.0.from
    }

    /// To without tag or other parameters.
    pub fn to(&self) -> &NameAddr {
        &self.0.to
    }

    /// The first value of header `name` (case-insensitive, compact forms accepted).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.0.request.headers.get(name)
    }

    /// Every value of header `name`, in message order (one per header line).
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.request.headers.lines(name)
    }

    /// Every header in message order, compact names expanded.
    pub fn all_headers(&self) -> &[sip::Header] {
        self.0.request.headers.as_slice()
    }

    pub fn body(&self) -> &[u8] {
        &self.0.request.body
    }
}

impl TryFrom<Request> for SipRequest {
    type Error = MessageError;

    /// Views `request`, once its From, To and Call-ID are known to be readable.
    fn try_from(request: Request) -> Result<Self, MessageError> {
        let first = |name: &'static str| {
            request
                .headers
                .get(name)
                .ok_or(MessageError::MissingHeader { name })
        };
        let name_addr = |name: &'static str| {
            let value = first(name)?;
            sip::NameAddr::parse(value)
                .map(|sip::NameAddr { display, uri }| NameAddr { display, uri })
                .ok_or_else(|| MessageError::BadNameAddr {
                    name,
                    value: value.to_owned(),
                })
        };
        let from = name_addr("From")?;
        let to = name_addr("To")?;
        first("Call-ID")?;
        Ok(SipRequest(Arc::new(Parts { request, from, to })))
    }
}

impl fmt::Debug for SipRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipRequest")
            .field("method", &self.method())
            .field("uri", &self.request_uri())
            .field("call_id", &self.call_id())
            .field("headers", &self.all_headers().len())
            .field("body_len", &self.body().len())
            .finish()
    }
}

/// Builds a [`SipRequest`] from fields. From/To/Call-ID given with their own setters or as
/// plain headers are the same thing.
#[derive(Debug, Clone)]
pub struct SipRequestBuilder {
    method: String,
    uri: String,
    headers: Headers,
    body: Vec<u8>,
}

impl SipRequestBuilder {
    pub fn from(self, value: impl Into<String>) -> Self {
        self.header("From", value)
    }

    pub fn to(self, value: impl Into<String>) -> Self {
        self.header("To", value)
    }

    pub fn call_id(self, value: impl Into<String>) -> Self {
        self.header("Call-ID", value)
    }

    /// Appends a header; a compact name is expanded.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(name, value);
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn build(self) -> Result<SipRequest, MessageError> {
        Request {
            method: Method::parse(&self.method),
            uri: self.uri,
            headers: self.headers,
            body: self.body,
        }
        .try_into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:alice@corp.example SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK776asdhds\r\n\
        Max-Forwards: 70\r\n\
        f: \"Bob Jones\" <sip:bob@corp.example>;tag=1928301774\r\n\
        t: <sip:alice@corp.example>\r\n\
        i: a84b4c76e66710@127.0.0.1\r\n\
        CSeq: 314159 INVITE\r\n\
        m: <sip:bob@127.0.0.1:5071>\r\n\
        Supported: replaces\r\n\
        Supported: timer\r\n\
        c: application/sdp\r\n\
        Content-Length: 4\r\n\
        \r\n\
        v=0\n";

    #[test]
    fn parse_expands_compact_headers() {
        let req = SipRequest::parse(INVITE.as_bytes()).unwrap();
        assert_eq!(req.method(), "INVITE");
        assert_eq!(req.request_uri(), "sip:alice@corp.example");
        assert_eq!(req.call_id(), "a84b4c76e66710@127.0.0.1");
        assert_eq!(req.from().display, "Bob Jones");
        assert_eq!(req.from().uri, "sip:bob@corp.example");
        assert_eq!(req.to().uri, "sip:alice@corp.example");
        assert_eq!(req.header("content-type"), Some("application/sdp"));
        assert_eq!(req.header("CONTACT"), Some("<sip:bob@127.0.0.1:5071>"));
        assert_eq!(req.header("m"), Some("<sip:bob@127.0.0.1:5071>"));
        assert_eq!(
            req.headers("supported").collect::<Vec<_>>(),
            ["replaces", "timer"]
        );
        assert_eq!(req.header("P-Asserted-Identity"), None);
        assert_eq!(req.body(), b"v=0\n");
    }

    #[test]
    fn builder_equals_parse() {
        let req = SipRequest::builder("INVITE", "sip:alice@corp.example")
            .from("Bob <sip:bob@corp.example>;tag=x")
            .to("sip:alice@corp.example;tag=y")
            .call_id("c1")
            .header("k", "replaces")
            .build()
            .unwrap();
        assert_eq!(req.from().display, "Bob");
        assert_eq!(req.from().uri, "sip:bob@corp.example");
        assert_eq!(req.to().uri, "sip:alice@corp.example");
        assert_eq!(req.header("Supported"), Some("replaces"));
        assert_eq!(req.all_headers()[3].name, "Supported");
    }

    #[test]
    fn quoted_angle_bracket_in_display_name() {
        let req = SipRequest::builder("INVITE", "sip:a@b")
            .from("\"a <b>\" <sip:x@y>;tag=1")
            .to("sip:a@b")
            .call_id("c1")
            .build()
            .unwrap();
        assert_eq!(req.from().display, "a <b>");
        assert_eq!(req.from().uri, "sip:x@y");
    }

    #[test]
    fn missing_call_id_is_named() {
        let err = SipRequest::builder("INVITE", "sip:a@b")
            .from("sip:c@d")
            .to("sip:a@b")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("Call-ID"), "{err}");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(SipRequest::parse(b"hello").is_err());
        for to in ["<>", "\"x\" <sip:a@b"] {
            let err = SipRequest::builder("INVITE", "sip:a@b")
                .from("sip:c@d")
                .to(to)
                .call_id("c1")
                .build()
                .unwrap_err();
            assert!(
                matches!(err, MessageError::BadNameAddr { name: "To", .. }),
                "{err}"
            );
        }
    }
}
