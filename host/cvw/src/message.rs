//! The SIP request as the policy sees it: parsed once, read lazily through getters.
//!
//! Owns parsing (with rsip) of an initial request from bytes, a builder for adapters that
//! only get fields from their proxy, and cheap getters: header names compare
//! case-insensitively and compact forms (`f`, `t`, `i`, `m`, `v`, ...) are expanded when
//! the message is built, so the policy never sees them. Does not own SIP transport,
//! transactions or replies (`cvw-sip` and the adapters do).
//!
//! A [`SipRequest`] is immutable and cheap to clone (one reference count): the policy
//! runtime lends the same parsed message to every hook of a call without copying it.

use std::fmt::{self, Write as _};
use std::sync::Arc;

use cvw_model::{Header, NameAddr};

/// Why bytes are not a SIP request the policy can read.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("not a SIP request: {0}")]
    Parse(#[source] rsip::Error),
    #[error("header `{name}` is required")]
    MissingHeader { name: &'static str },
    #[error("header `{name}` value {value:?} is not a name-addr")]
    BadNameAddr { name: &'static str, value: String },
}

/// An initial SIP request, immutable after construction.
#[derive(Clone)]
pub struct SipRequest(Arc<Parts>);

struct Parts {
    method: String,
    uri: String,
    call_id: String,
    from: NameAddr,
    to: NameAddr,
    /// Every header in message order, names with compact forms expanded.
    headers: Vec<Header>,
    body: Vec<u8>,
}

impl SipRequest {
    /// Parses a request from the wire. Requires From, To and Call-ID (the policy's getters
    /// for them cannot say "missing").
    pub fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        let rsip::Request {
            method,
            uri,
            headers,
            body,
            ..
        } = rsip::Request::try_from(bytes).map_err(MessageError::Parse)?;
        let mut builder = SipRequest::builder(method.to_string(), uri.to_string());
        let mut line = String::new();
        for header in headers {
            builder = match header {
                // Headers rsip has no type for (X-…, History-Info, P-Asserted-Identity, …)
                // come as name and value already: taken as they are, not formatted again.
                rsip::Header::Other(name, value) => builder.header(trimmed(name), trimmed(value)),
                known => {
                    line.clear();
                    let _ = write!(line, "{known}");
                    let (name, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
                    builder.header(name.trim(), value.trim())
                }
            };
        }
        builder.body(body).build()
    }

    /// Starts a request from parts, for adapters that get fields rather than bytes.
    pub fn builder(method: impl Into<String>, uri: impl Into<String>) -> SipRequestBuilder {
        SipRequestBuilder {
            method: method.into(),
            uri: uri.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn method(&self) -> &str {
        &self.0.method
    }

    pub fn request_uri(&self) -> &str {
        &self.0.uri
    }

    pub fn call_id(&self) -> &str {
        &self.0.call_id
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
        let name = full_name(name);
        self.0
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every value of header `name`, in message order.
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let name = full_name(name);
        self.0
            .headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every header in message order, compact names expanded.
    pub fn all_headers(&self) -> &[Header] {
        &self.0.headers
    }

    pub fn body(&self) -> &[u8] {
        &self.0.body
    }
}

impl fmt::Debug for SipRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipRequest")
            .field("method", &self.0.method)
            .field("uri", &self.0.uri)
            .field("call_id", &self.0.call_id)
            .field("headers", &self.0.headers.len())
            .field("body_len", &self.0.body.len())
            .finish()
    }
}

/// Builds a [`SipRequest`] from fields. From/To/Call-ID given with their own setters or as
/// plain headers are the same thing.
#[derive(Debug, Clone)]
pub struct SipRequestBuilder {
    method: String,
    uri: String,
    headers: Vec<Header>,
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
        let name = name.into();
        let name = match full_name(&name) {
            full if full.len() != name.len() => full.to_owned(),
            _ => name,
        };
        self.headers.push(Header {
            name,
            value: value.into(),
        });
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn build(self) -> Result<SipRequest, MessageError> {
        let first = |name: &'static str| {
            self.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value.as_str())
                .ok_or(MessageError::MissingHeader { name })
        };
        let from = parse_name_addr("From", first("From")?)?;
        let to = parse_name_addr("To", first("To")?)?;
        let call_id = first("Call-ID")?.to_owned();
        Ok(SipRequest(Arc::new(Parts {
            method: self.method,
            uri: self.uri,
            call_id,
            from,
            to,
            headers: self.headers,
            body: self.body,
        })))
    }
}

/// `text` without surrounding white space, reusing its allocation when there is none.
fn trimmed(text: String) -> String {
    match text.trim() {
        t if t.len() == text.len() => text,
        t => t.to_owned(),
    }
}

/// The full header name for a compact form (RFC 3261 §7.3.3 and later RFCs); other names
/// unchanged.
fn full_name(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => name,
    }
}

/// `"Display" <uri>;params`, `Display <uri>`, `<uri>` or `uri;params` → display + bare URI.
fn parse_name_addr(header: &'static str, value: &str) -> Result<NameAddr, MessageError> {
    let bad = || MessageError::BadNameAddr {
        name: header,
        value: value.to_owned(),
    };
    let value = value.trim();
    if let Some(open) = find_unquoted(value, '<') {
        let close = value[open..].find('>').ok_or_else(bad)? + open;
        let display = value[..open].trim().trim_matches('"').trim().to_owned();
        let uri = value[open + 1..close].trim().to_owned();
        if uri.is_empty() {
            return Err(bad());
        }
        return Ok(NameAddr { display, uri });
    }
    // addr-spec form: header parameters follow the first `;` (RFC 3261 §20.10).
    let uri = value.split(';').next().unwrap_or("").trim();
    if uri.is_empty() || uri.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok(NameAddr {
        display: String::new(),
        uri: uri.to_owned(),
    })
}

fn find_unquoted(s: &str, wanted: char) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == wanted && !quoted => return Some(i),
            _ => {}
        }
    }
    None
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
        let na = parse_name_addr("From", "\"a <b>\" <sip:x@y>;tag=1").unwrap();
        assert_eq!(na.display, "a <b>");
        assert_eq!(na.uri, "sip:x@y");
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
        assert!(parse_name_addr("To", "<>").is_err());
        assert!(parse_name_addr("To", "\"x\" <sip:a@b").is_err());
    }
}
