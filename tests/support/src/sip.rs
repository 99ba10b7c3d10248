//! A small SIP message type for the load tool (`host/load`): enough to read what
//! arrives on the wire (start line, headers in order, body) and to build requests and
//! responses. Not a SIP stack: no transactions beyond what a test needs.

#![allow(dead_code)]

use std::fmt::Write as _;

/// One SIP message as received or about to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// `INVITE sip:x SIP/2.0` or `SIP/2.0 200 OK`.
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Compact header forms (RFC 3261 §7.3.3) expanded, so lookups use one name.
fn long_name(name: &str) -> &str {
    match name.to_ascii_lowercase().as_str() {
        "v" => "Via",
        "f" => "From",
        "t" => "To",
        "i" => "Call-ID",
        "m" => "Contact",
        "l" => "Content-Length",
        "c" => "Content-Type",
        "k" => "Supported",
        _ => name,
    }
}

impl Msg {
    pub fn request(method: &str, uri: &str) -> Self {
        Msg {
            start: format!("{method} {uri} SIP/2.0"),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn parse(bytes: &[u8]) -> Option<Msg> {
        let split = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&bytes[..split]).ok()?;
        let mut lines = head.split("\r\n");
        let start = lines.next()?.to_owned();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            let (n, v) = line.split_once(':')?;
            headers.push((long_name(n.trim()).to_owned(), v.trim().to_owned()));
        }
        let body = bytes[split + 4..].to_vec();
        Some(Msg {
            start,
            headers,
            body,
        })
    }

    /// Bytes of one whole message in a stream (TCP), by Content-Length.
    pub fn frame_len(buf: &[u8]) -> Option<usize> {
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&buf[..split]).ok()?;
        let len = head
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| long_name(n.trim()).eq_ignore_ascii_case("Content-Length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let total = split + 4 + len;
        (buf.len() >= total).then_some(total)
    }

    pub fn is_request(&self) -> bool {
        !self.start.starts_with("SIP/2.0 ")
    }

    pub fn method(&self) -> &str {
        if self.is_request() {
            self.start.split(' ').next().unwrap_or("")
        } else {
            self.cseq_method()
        }
    }

    pub fn uri(&self) -> &str {
        self.start.split(' ').nth(1).unwrap_or("")
    }

    pub fn code(&self) -> u16 {
        if self.is_request() {
            return 0;
        }
        self.start
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    pub fn cseq_method(&self) -> &str {
        self.header("CSeq")
            .and_then(|c| c.split_whitespace().nth(1))
            .unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or("")
    }

    pub fn push(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.push(name, value)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = String::new();
        let _ = write!(s, "{}\r\n", self.start);
        for (n, v) in &self.headers {
            if n.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            let _ = write!(s, "{n}: {v}\r\n");
        }
        let _ = write!(s, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// A response to this request: Via, From, To (with `to_tag` when it has none), Call-ID,
    /// CSeq and Record-Route copied as RFC 3261 §8.2.6 says.
    pub fn response(&self, code: u16, reason: &str, to_tag: Option<&str>) -> Msg {
        let mut r = Msg {
            start: format!("SIP/2.0 {code} {reason}"),
            headers: Vec::new(),
            body: Vec::new(),
        };
        for (n, v) in &self.headers {
            match n.to_ascii_lowercase().as_str() {
                "via" | "from" | "call-id" | "cseq" => r.headers.push((n.clone(), v.clone())),
                "record-route" if (101..300).contains(&code) => {
                    r.headers.push((n.clone(), v.clone()))
                }
                "to" => {
                    let mut to = v.clone();
                    if let Some(tag) = to_tag.filter(|_| !v.contains(";tag=")) {
                        to.push_str(";tag=");
                        to.push_str(tag);
                    }
                    r.headers.push((n.clone(), to));
                }
                _ => {}
            }
        }
        r
    }
}

/// The value of a `;name=value` parameter in a header value.
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then_some(v.trim().trim_end_matches('>'))
    })
}

/// The URI inside `<...>` of a name-addr, or the whole value up to `;`.
pub fn addr_uri(value: &str) -> &str {
    if let (Some(a), Some(b)) = (value.find('<'), value.find('>')) {
        &value[a + 1..b]
    } else {
        value.split(';').next().unwrap_or(value).trim()
    }
}
