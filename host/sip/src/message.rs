//! SIP messages as the rest of this crate sees them: a request or response with its header
//! list and body, parsed from the wire with `rsip` and written back by hand so that
//! `Content-Length` is always right. Also the small value helpers (parameters, name-addr
//! URIs, comma lists, CSeq) that every layer needs.
//!
//! It does not route, match transactions or keep any state; see `transaction` and `dialog`.

use std::fmt;

/// The SIP methods this user agent sends or answers; anything else is kept by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Info,
    Update,
    Options,
    Other(String),
}

impl Method {
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Options => "OPTIONS",
            Method::Other(name) => name,
        }
    }

    pub fn parse(token: &str) -> Method {
        match token {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header line. Compact names (`i`, `f`, `v`, ...) are expanded on parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// The header list in wire order; lookups ignore ASCII case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push(Header {
            name: name.into(),
            value: value.into(),
        });
    }

    /// The first header line with this name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every element of every header line with this name, comma lists split (RFC 3261 §7.3.1).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| split_list(&h.value))
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.push(name, value);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// The Call-ID, or an empty string when it is missing (such messages never match).
    pub fn call_id(&self) -> &str {
        self.get("Call-ID").unwrap_or("")
    }

    pub fn cseq(&self) -> Option<CSeq> {
        self.get("CSeq").and_then(CSeq::parse)
    }

    /// The branch of the topmost Via (RFC 3261 §17: the transaction key).
    pub fn top_branch(&self) -> Option<&str> {
        self.get_all("Via").next().and_then(|v| param(v, "branch"))
    }

    pub fn from_tag(&self) -> Option<&str> {
        self.get("From").and_then(|v| param(v, "tag"))
    }

    pub fn to_tag(&self) -> Option<&str> {
        self.get("To").and_then(|v| param(v, "tag"))
    }
}

/// A parsed `CSeq: 314 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub number: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(value: &str) -> Option<CSeq> {
        let mut parts = value.split_whitespace();
        let number = parts.next()?.parse().ok()?;
        let method = Method::parse(parts.next()?);
        Some(CSeq { number, method })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub code: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_provisional(&self) -> bool {
        self.code < 200
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The method of the request this answers, from CSeq.
    pub fn method(&self) -> Option<Method> {
        self.headers.cseq().map(|c| c.method)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

/// Why bytes from the network are not a SIP message we can use.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not a SIP message: {0}")]
    Syntax(#[from] rsip::Error),
    #[error("the SIP parser failed on this input")]
    ParserPanicked,
    #[error("mandatory header {0} is missing")]
    Missing(&'static str),
}

impl Message {
    /// Parses one complete message. Never panics: rsip is guarded, because a parser bug
    /// must not take the user agent down with it.
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        let parsed = std::panic::catch_unwind(|| rsip::SipMessage::try_from(bytes))
            .map_err(|_| ParseError::ParserPanicked)??;
        let message = match parsed {
            rsip::SipMessage::Request(r) => Message::Request(Request {
                method: Method::parse(&r.method.to_string()),
                uri: r.uri.to_string(),
                headers: convert_headers(&r.headers),
                body: r.body,
            }),
            rsip::SipMessage::Response(r) => Message::Response(Response {
                code: r.status_code.code(),
                reason: reason_of(&r.status_code),
                headers: convert_headers(&r.headers),
                body: r.body,
            }),
        };
        message.checked()
    }

    /// The header fields every layer relies on (RFC 3261 §8.1.1), and the body cut to
    /// Content-Length (a datagram may carry padding).
    fn checked(mut self) -> Result<Message, ParseError> {
        let (headers, body) = match &mut self {
            Message::Request(r) => (&r.headers, &mut r.body),
            Message::Response(r) => (&r.headers, &mut r.body),
        };
        for name in ["Via", "Call-ID", "From", "To"] {
            if headers.get(name).is_none() {
                return Err(ParseError::Missing(name));
            }
        }
        if headers.cseq().is_none() {
            return Err(ParseError::Missing("CSeq"));
        }
        if let Some(len) = headers
            .get("Content-Length")
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            body.truncate(len);
        }
        Ok(self)
    }

    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }
}

fn reason_of(code: &rsip::StatusCode) -> String {
    // rsip renders "486 Busy Here"; keep only the phrase.
    let text = code.to_string();
    match text.split_once(' ') {
        Some((_, reason)) => reason.to_owned(),
        None => String::new(),
    }
}

fn convert_headers(headers: &rsip::Headers) -> Headers {
    let mut out = Headers::new();
    for header in headers.iter() {
        let line = header.to_string();
        if let Some((name, value)) = line.split_once(':') {
            out.push(expand_compact(name.trim()), value.trim());
        }
    }
    out
}

/// RFC 3261 §7.3.3 compact forms.
fn expand_compact(name: &str) -> String {
    let full = match name.to_ascii_lowercase().as_str() {
        "i" => "Call-ID",
        "m" => "Contact",
        "e" => "Content-Encoding",
        "l" => "Content-Length",
        "c" => "Content-Type",
        "f" => "From",
        "s" => "Subject",
        "k" => "Supported",
        "t" => "To",
        "v" => "Via",
        "call-id" => "Call-ID",
        "cseq" => "CSeq",
        _ => return name.to_owned(),
    };
    full.to_owned()
}

impl Request {
    pub fn to_bytes(&self) -> Vec<u8> {
        let start = format!("{} {} SIP/2.0", self.method, self.uri);
        encode(&start, &self.headers, &self.body)
    }

    /// A response to this request with the headers RFC 3261 §8.2.6.2 copies.
    pub fn response(&self, code: u16, reason: &str) -> Response {
        let mut headers = Headers::new();
        for h in self.headers.iter() {
            let n = h.name.as_str();
            if ["Via", "From", "To", "Call-ID", "CSeq"]
                .iter()
                .any(|c| c.eq_ignore_ascii_case(n))
                || (code > 100 && code < 300 && n.eq_ignore_ascii_case("Record-Route"))
            {
                headers.push(n, h.value.clone());
            }
        }
        Response {
            code,
            reason: reason.to_owned(),
            headers,
            body: Vec::new(),
        }
    }
}

impl Response {
    pub fn to_bytes(&self) -> Vec<u8> {
        let start = format!("SIP/2.0 {} {}", self.code, self.reason);
        encode(&start, &self.headers, &self.body)
    }
}

impl Message {
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

fn encode(start: &str, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut out = String::with_capacity(512 + body.len());
    out.push_str(start);
    out.push_str("\r\n");
    for h in headers.iter() {
        // Values may come from a policy or a peer: a header is never allowed to break the
        // framing (no CR/LF injection, no invalid names).
        let name_ok =
            !h.name.is_empty() && h.name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !name_ok || h.name.eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        out.push_str(&h.name);
        out.push_str(": ");
        out.extend(
            h.value
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c }),
        );
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Splits a header value at top-level commas, outside quotes and `<...>`. (Slicing at the
/// byte index of an ASCII comma is always on a character boundary.)
pub fn split_list(value: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0u32, false, 0usize);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth = depth.saturating_sub(1),
            ',' if !quoted && depth == 0 => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The header parameters of a name-addr or Via value (those after `>` or after the URI).
fn header_params(value: &str) -> &str {
    match value.rfind('>') {
        Some(end) => &value[end + 1..],
        None => value.split_once(';').map_or("", |(_, rest)| rest),
    }
}

/// A header parameter by name (case-insensitive); `Some("")` for a flag such as `lr`.
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    header_params(value)
        .split(';')
        .map(str::trim)
        .find_map(|p| match p.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case(name) => Some(v.trim().trim_matches('"')),
            None if p.eq_ignore_ascii_case(name) => Some(""),
            _ => None,
        })
}

/// The URI of a name-addr (`"Bob" <sip:b@h>;tag=1` → `sip:b@h`) or addr-spec.
pub fn addr_uri(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(start), Some(end)) if start < end => &value[start + 1..end],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

/// A display name and URI, written as a name-addr.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NameAddr {
    pub display: String,
    pub uri: String,
}

impl NameAddr {
    pub fn new(display: impl Into<String>, uri: impl Into<String>) -> Self {
        Self {
            display: display.into(),
            uri: uri.into(),
        }
    }

    /// `"Display" <uri>` with quotes and backslashes in the name escaped (RFC 3261 §25.1).
    pub fn to_header(&self) -> String {
        if self.display.is_empty() {
            return format!("<{}>", self.uri);
        }
        let escaped: String = self
            .display
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c if c.is_control() => vec![],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\" <{}>", self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@127.0.0.1:5060 SIP/2.0\r\n\
        v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc;rport, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKold\r\n\
        Max-Forwards: 70\r\n\
        f: \"Alice, A.\" <sip:alice@corp.example>;tag=1928\r\n\
        To: <sip:bob@corp.example>\r\n\
        i: a84b4c76e66710\r\n\
        CSeq: 314159 INVITE\r\n\
        Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n\
        X-CVW-Origination: callback\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\r\nv=0\nEXTRA";

    #[test]
    fn parses_compact_names_lists_and_cuts_body_to_content_length() {
        let Message::Request(req) = Message::parse(INVITE.as_bytes()).unwrap() else {
            panic!("request expected");
        };
        assert_eq!(req.method, Method::Invite);
        assert_eq!(req.headers.call_id(), "a84b4c76e66710");
        assert_eq!(req.headers.top_branch(), Some("z9hG4bKabc"));
        assert_eq!(req.headers.from_tag(), Some("1928"));
        assert_eq!(req.headers.to_tag(), None);
        assert_eq!(req.headers.get_all("Via").count(), 2);
        let rr: Vec<_> = req.headers.get_all("Record-Route").collect();
        assert_eq!(rr, vec!["<sip:p1;lr>", "<sip:p2;lr>"]);
        assert_eq!(req.headers.get("x-cvw-origination"), Some("callback"));
        assert_eq!(req.body, b"v=0\n");
    }

    #[test]
    fn round_trips_through_the_wire_form() {
        let Message::Request(req) = Message::parse(INVITE.as_bytes()).unwrap() else {
            panic!("request expected");
        };
        let again = Message::parse(&req.to_bytes()).unwrap();
        assert_eq!(again, Message::Request(req));
    }

    #[test]
    fn garbage_and_missing_headers_are_errors_not_panics() {
        for input in [
            &b""[..],
            b"\r\n\r\n",
            b"SIP/2.0 200\r\n\r\n",
            b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n",
            b"\xff\xfe\x00garbage",
            b"INVITE  SIP/2.0\r\nCSeq: x\r\n\r\n",
        ] {
            assert!(Message::parse(input).is_err(), "{input:?}");
        }
    }

    #[test]
    fn response_copies_dialog_headers_and_reason() {
        let Message::Request(req) = Message::parse(INVITE.as_bytes()).unwrap() else {
            panic!("request expected");
        };
        let resp = req.response(180, "Ringing");
        let Message::Response(parsed) = Message::parse(&resp.to_bytes()).unwrap() else {
            panic!("response expected");
        };
        assert_eq!(parsed.code, 180);
        assert_eq!(parsed.reason, "Ringing");
        assert_eq!(parsed.headers.get_all("Record-Route").count(), 2);
        assert_eq!(parsed.method(), Some(Method::Invite));
    }

    /// Never panic on network input: every truncation of a message, and every position
    /// overwritten with bytes that matter to SIP syntax, parses or fails cleanly, and the
    /// helpers the layers use on a parsed message cope with what is left.
    #[test]
    fn mangled_messages_never_panic() {
        let original = INVITE.as_bytes();
        let mut inputs: Vec<Vec<u8>> = (0..original.len())
            .map(|i| original[..i].to_vec())
            .collect();
        for i in 0..original.len() {
            for b in [
                b':', b';', b'<', b'>', b',', b'"', b'=', 0, 0xff, b' ', b'\r',
            ] {
                let mut m = original.to_vec();
                m[i] = b;
                inputs.push(m);
            }
        }
        for input in inputs {
            let Ok(message) = Message::parse(&input) else {
                continue;
            };
            let h = message.headers();
            let _ = (h.top_branch(), h.from_tag(), h.to_tag(), h.cseq());
            for header in h.iter() {
                let _ = (addr_uri(&header.value), param(&header.value, "tag"));
                let _ = split_list(&header.value);
            }
            match &message {
                Message::Request(r) => {
                    let _ = crate::dialog::Dialog::as_uas(r, "t");
                }
                Message::Response(r) => {
                    let _ = crate::dialog::Dialog::as_uac(r);
                }
            }
        }
    }

    #[test]
    fn header_values_cannot_inject_lines() {
        let mut headers = Headers::new();
        headers.push("X-Policy", "a\r\nBYE: injected");
        headers.push("Bad Name", "x");
        headers.push("", "y");
        let text = String::from_utf8(encode("OPTIONS sip:x SIP/2.0", &headers, b"")).unwrap();
        assert_eq!(
            text,
            "OPTIONS sip:x SIP/2.0\r\nX-Policy: a  BYE: injected\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn name_addr_helpers() {
        let v = "\"Bob\" <sip:bob@h;transport=tcp>;tag=xy";
        assert_eq!(addr_uri(v), "sip:bob@h;transport=tcp");
        assert_eq!(param(v, "tag"), Some("xy"));
        assert_eq!(
            param("<sip:p;lr>", "lr"),
            None,
            "URI params are not header params"
        );
        assert_eq!(addr_uri("sip:a@b;tag=1"), "sip:a@b");
        assert_eq!(
            NameAddr::new("Say \"hi\"", "sip:a@b").to_header(),
            "\"Say \\\"hi\\\"\" <sip:a@b>"
        );
    }
}
