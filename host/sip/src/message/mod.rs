//! SIP messages, the one model every part of cvw reads: a request or response with its
//! header list and body, parsed from the wire with `rsip` (its typed headers moved, not
//! printed and split again) and written back by hand so that `Content-Length` is always
//! right. The header list and value helpers are in [`header`].
//!
//! It does not route, match transactions or keep any state; see `transaction` and `dialog`.

use std::fmt;

mod header;

pub use header::{CSeq, Header, Headers, NameAddr, addr_uri, full_name, param, split_list};

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
    /// RFC 3262: acknowledges a reliable provisional response.
    Prack,
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
            Method::Prack => "PRACK",
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
            "PRACK" => Method::Prack,
            other => Method::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// What a message's start line says, read without parsing the rest: a caller that drops
/// most of what arrives unread (the load generator skipping 100 Trying and hop-by-hop
/// ACKs) pays for rsip only on the messages it keeps. Nothing else is checked; parse
/// those with [`Message::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request { method: &'a str },
    Response { code: u16 },
}

impl<'a> StartLine<'a> {
    /// The start line of `bytes`, or `None` when it is not one (RFC 3261 §7.1, §7.2).
    pub fn peek(bytes: &'a [u8]) -> Option<StartLine<'a>> {
        let end = bytes
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(bytes.len());
        let line = std::str::from_utf8(&bytes[..end]).ok()?;
        if let Some(status) = line.strip_prefix("SIP/2.0 ") {
            let code = status.split(' ').next()?;
            return match code.parse::<u16>() {
                Ok(code) if code.to_string().len() == 3 && code >= 100 => {
                    Some(StartLine::Response { code })
                }
                _ => None,
            };
        }
        let mut parts = line.split(' ');
        let (method, uri, version) = (parts.next()?, parts.next()?, parts.next()?);
        let token = !method.is_empty() && method.bytes().all(|b| b.is_ascii_alphabetic());
        (token && !uri.is_empty() && version == "SIP/2.0" && parts.next().is_none())
            .then_some(StartLine::Request { method })
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
    /// rsip reads a line break or other control character into the Request-URI; written
    /// back it would end the start line and add a header of the sender's choosing.
    #[error("the Request-URI {0:?} has white space or a control character")]
    BadUri(String),
}

impl Message {
    /// Parses one complete message with the header fields every layer relies on. Never
    /// panics: rsip is guarded, because a parser bug must not take the user agent down
    /// with it.
    pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
        let message = match guarded(|| rsip::SipMessage::try_from(bytes))? {
            rsip::SipMessage::Request(r) => Message::Request(Request::from_rsip(r)?),
            rsip::SipMessage::Response(r) => Message::Response(Response {
                code: r.status_code.code(),
                reason: reason_phrase(bytes),
                headers: Headers::from_rsip(r.headers),
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

/// The Reason-Phrase of a status line as the peer sent it. Not from rsip: for a code it
/// knows, rsip drops the phrase and renders its own variant name (`486 BusyHere`), which
/// then reached the other leg's Reason header.
fn reason_phrase(bytes: &[u8]) -> String {
    let end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    let line = String::from_utf8_lossy(&bytes[..end]);
    let after_version = line.split_once(' ').map_or("", |(_, rest)| rest);
    let phrase = after_version.split_once(' ').map_or("", |(_, p)| p);
    phrase.to_owned()
}

/// rsip's parser behind `catch_unwind`: a parser bug is a refused message, not a crash.
fn guarded<T>(parse: impl FnOnce() -> Result<T, rsip::Error>) -> Result<T, ParseError> {
    Ok(
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse))
            .map_err(|_| ParseError::ParserPanicked)??,
    )
}

impl Request {
    /// Parses a request as it is, without the checks of [`Message::parse`]: what a proxy
    /// hands over (Kamailio's `$mb`) is read, not answered, so only its reader knows which
    /// headers it needs. The body is kept whole.
    pub fn parse(bytes: &[u8]) -> Result<Request, ParseError> {
        guarded(|| rsip::Request::try_from(bytes)).and_then(Request::from_rsip)
    }

    /// The request rsip read, once its Request-URI is one token (RFC 3261 §25.1: no white
    /// space or control character), as the start line needs it.
    fn from_rsip(r: rsip::Request) -> Result<Request, ParseError> {
        let uri = r.uri.to_string();
        if uri.is_empty() || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ParseError::BadUri(uri));
        }
        Ok(Request {
            method: Method::parse(&r.method.to_string()),
            uri,
            headers: Headers::from_rsip(r.headers),
            body: r.body,
        })
    }

    /// `INVITE sip:alice@corp.example SIP/2.0`.
    pub fn start_line(&self) -> String {
        format!("{} {} SIP/2.0", self.method, self.uri)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        encode(&self.start_line(), &self.headers, &self.body)
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
    /// Gives To this tag when it has none: the answer of a UAS that opens (or refuses) a
    /// dialog (RFC 3261 §8.2.6.2).
    pub fn tag_to(&mut self, tag: &str) {
        if self.headers.to_tag().is_none()
            && let Some(to) = self.headers.get("To")
        {
            let tagged = format!("{to};tag={tag}");
            self.headers.set("To", tagged);
        }
    }

    /// `SIP/2.0 486 Busy Here`.
    pub fn start_line(&self) -> String {
        format!("SIP/2.0 {} {}", self.code, self.reason)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        encode(&self.start_line(), &self.headers, &self.body)
    }
}

impl From<Request> for Message {
    fn from(request: Request) -> Self {
        Message::Request(request)
    }
}

impl From<Response> for Message {
    fn from(response: Response) -> Self {
        Message::Response(response)
    }
}

impl Message {
    pub fn start_line(&self) -> String {
        match self {
            Message::Request(r) => r.start_line(),
            Message::Response(r) => r.start_line(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.to_bytes(),
            Message::Response(r) => r.to_bytes(),
        }
    }
}

fn encode(start: &str, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut out = String::with_capacity(512 + body.len());
    // The start line too: a line break there would start a header.
    out.extend(start.chars().map(|c| if c.is_control() { ' ' } else { c }));
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
    fn a_request_alone_is_read_without_the_transaction_checks() {
        let text =
            "OPTIONS sip:x@h SIP/2.0\r\nf: <sip:a@h>\r\nX-Any: 1\r\nContent-Length: 2\r\n\r\nab";
        let req = Request::parse(text.as_bytes()).unwrap();
        assert_eq!(req.method, Method::Options);
        assert_eq!(req.headers.get("From"), Some("<sip:a@h>"));
        assert_eq!(req.headers.as_slice()[1].name, "X-Any");
        assert_eq!(req.body, b"ab");
        assert!(
            Message::parse(text.as_bytes()).is_err(),
            "no Via, Call-ID, To, CSeq"
        );
        assert!(Request::parse(b"SIP/2.0 200 OK\r\n\r\n").is_err());
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
    fn start_line_is_read_without_parsing_the_rest() {
        assert_eq!(
            StartLine::peek(INVITE.as_bytes()),
            Some(StartLine::Request { method: "INVITE" })
        );
        assert_eq!(
            StartLine::peek(b"SIP/2.0 100 Trying\r\nVia: x\r\n\r\n"),
            Some(StartLine::Response { code: 100 })
        );
        assert_eq!(
            StartLine::peek(b"SIP/2.0 486 Busy Here"),
            Some(StartLine::Response { code: 486 })
        );
        for input in [
            &b""[..],
            b"\r\n",
            b"SIP/2.0 99 Low\r\n",
            b"SIP/2.0 2000 Long\r\n",
            b"SIP/2.0 +20 Sign\r\n",
            b"INVITE sip:x\r\n",
            b"INVITE sip:x SIP/2.0 more\r\n",
            b"IN-VITE sip:x SIP/2.0\r\n",
            b"\xff\xfe garbage",
        ] {
            assert_eq!(StartLine::peek(input), None, "{input:?}");
        }
        // Whatever the truncation, no panic.
        for i in 0..INVITE.len() {
            let _ = StartLine::peek(&INVITE.as_bytes()[..i]);
        }
    }

    #[test]
    fn a_reason_phrase_is_kept_as_the_peer_sent_it() {
        for (line, phrase) in [
            ("SIP/2.0 486 Busy Here", "Busy Here"),
            ("SIP/2.0 486 Occupied, try later", "Occupied, try later"),
            ("SIP/2.0 603 Decline", "Decline"),
            ("SIP/2.0 200 ", ""),
        ] {
            let mut bytes = req_for_response().response(486, "x").to_bytes();
            let first = bytes.iter().position(|&b| b == b'\r').unwrap();
            bytes.splice(..first, line.bytes());
            let Message::Response(r) = Message::parse(&bytes).unwrap() else {
                panic!("response expected");
            };
            assert_eq!(r.reason, phrase, "{line}");
        }
    }

    fn req_for_response() -> Request {
        let Message::Request(req) = Message::parse(INVITE.as_bytes()).unwrap() else {
            panic!("request expected");
        };
        req
    }

    #[test]
    fn a_refusal_tags_to_once() {
        let Message::Request(req) = Message::parse(INVITE.as_bytes()).unwrap() else {
            panic!("request expected");
        };
        let mut resp = req.response(486, "Busy Here");
        resp.tag_to("uas");
        assert_eq!(resp.headers.to_tag(), Some("uas"));
        resp.tag_to("other");
        assert_eq!(
            resp.headers.get("To"),
            Some("<sip:bob@corp.example>;tag=uas")
        );
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
        let text = String::from_utf8(encode("OPTIONS sip:x\r\nBYE: y SIP/2.0", &headers, b""));
        assert!(
            text.unwrap()
                .starts_with("OPTIONS sip:x  BYE: y SIP/2.0\r\nX-Policy")
        );
    }

    /// Found by the fuzz target `sip_message` (fuzz/corpus/sip_message/crash-6ca7f2ab…):
    /// rsip read `sip\nMa:a@pbx` as the Request-URI, and the writer put the line break
    /// back on the wire, ending the start line early.
    #[test]
    fn a_request_uri_with_a_line_break_is_refused() {
        let crash = b"INVITE sip\nMa:a@pbx SIP/2.0\r\nVia: SIP/2.0/UDP 127.0all-ID: c1\r\n\
            CSeq: 1 I\0VITE\r\nCantcot: <sip:cvw@127.0.0&1:5060>\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(Request::parse(crash), Err(ParseError::BadUri(_))));
        let invite = String::from_utf8(INVITE.as_bytes().to_vec()).unwrap();
        for uri in ["sip:bob@127.0.0.1\nX: 1", "sip:bob@127.0.0.1\rX: 1"] {
            let bytes = invite.replacen("sip:bob@127.0.0.1:5060", uri, 1);
            assert!(Message::parse(bytes.as_bytes()).is_err(), "{uri:?}");
            assert!(Request::parse(bytes.as_bytes()).is_err(), "{uri:?}");
        }
    }
}
