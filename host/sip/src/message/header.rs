//! Header fields as every layer reads them: one [`Header`] per line in message order, names
//! with compact forms expanded (RFC 3261 §7.3.3), looked up ignoring ASCII case; and the
//! small value helpers (parameters, name-addr, comma lists, CSeq).
//!
//! It does not parse start lines or bodies (`message`) and never fails: a value it cannot
//! read is `None`, not an error.

use super::Method;

/// One header line. Compact names (`i`, `f`, `v`, ...) are expanded when it is added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// The header list in wire order; lookups ignore ASCII case and accept compact names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a header line; a compact name is stored in its full form.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let name = match full_name(&name) {
            full if full.len() != name.len() => full.to_owned(),
            _ => name,
        };
        self.0.push(Header {
            name,
            value: value.into(),
        });
    }

    /// The first header line with this name.
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = full_name(name);
        self.0
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The value of every header line with this name, in message order (comma lists as
    /// they came).
    pub fn lines<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let name = full_name(name);
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// Every element of every header line with this name, comma lists split (RFC 3261 §7.3.1).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lines(name).flat_map(split_list)
    }

    pub fn remove(&mut self, name: &str) {
        let name = full_name(name);
        self.0.retain(|h| !h.name.eq_ignore_ascii_case(name));
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.push(name, value);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }

    /// Every header line in message order.
    pub fn as_slice(&self) -> &[Header] {
        &self.0
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

    /// rsip's header list, each header moved rather than printed and split again: the
    /// typed variants give their canonical name, the others come as name and value.
    pub(super) fn from_rsip(headers: rsip::Headers) -> Headers {
        let mut out = Headers(Vec::with_capacity(headers.iter().count()));
        for header in headers.into_iter() {
            let (name, value) = name_and_value(header);
            out.push(trimmed(name), trimmed(value));
        }
        out
    }
}

/// The name and value of one rsip header (`Header::Other` for those rsip has no type for:
/// compact forms, X-…, History-Info, P-Asserted-Identity, …).
fn name_and_value(header: rsip::Header) -> (String, String) {
    macro_rules! typed {
        ($($variant:ident => $name:literal),* $(,)?) => {
            match header {
                $(rsip::Header::$variant(h) => ($name.to_owned(), h.into()),)*
                rsip::Header::Other(name, value) => (name, value),
            }
        };
    }
    typed! {
        Accept => "Accept", AcceptEncoding => "Accept-Encoding",
        AcceptLanguage => "Accept-Language", AlertInfo => "Alert-Info", Allow => "Allow",
        AuthenticationInfo => "Authentication-Info", Authorization => "Authorization",
        CSeq => "CSeq", CallId => "Call-ID", CallInfo => "Call-Info", Contact => "Contact",
        ContentDisposition => "Content-Disposition", ContentEncoding => "Content-Encoding",
        ContentLanguage => "Content-Language", ContentLength => "Content-Length",
        ContentType => "Content-Type", Date => "Date", ErrorInfo => "Error-Info",
        Event => "Event", Expires => "Expires", From => "From", InReplyTo => "In-Reply-To",
        MaxForwards => "Max-Forwards", MimeVersion => "Mime-Version",
        MinExpires => "Min-Expires", Organization => "Organization", Priority => "Priority",
        ProxyAuthenticate => "Proxy-Authenticate", ProxyAuthorization => "Proxy-Authorization",
        ProxyRequire => "Proxy-Require", RecordRoute => "Record-Route", ReplyTo => "Reply-To",
        Require => "Require", RetryAfter => "Retry-After", Route => "Route",
        Server => "Server", Subject => "Subject", SubscriptionState => "Subscription-State",
        Supported => "Supported", Timestamp => "Timestamp", To => "To",
        Unsupported => "Unsupported", UserAgent => "User-Agent", Via => "Via",
        Warning => "Warning", WwwAuthenticate => "WWW-Authenticate",
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
pub fn full_name(name: &str) -> &str {
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

    /// Reads `"Display" <uri>;params`, `Display <uri>`, `<uri>` or `uri;params` (a From or
    /// To value) as display name and bare URI; header parameters are dropped. A `<` inside
    /// the quoted display name is not the URI's.
    pub fn parse(value: &str) -> Option<NameAddr> {
        let value = value.trim();
        if let Some(open) = find_unquoted(value, '<') {
            let close = value[open..].find('>')? + open;
            let display = value[..open].trim().trim_matches('"').trim().to_owned();
            let uri = value[open + 1..close].trim();
            return (!uri.is_empty()).then(|| NameAddr::new(display, uri));
        }
        // addr-spec form: header parameters follow the first `;` (RFC 3261 §20.10).
        let uri = value.split(';').next().unwrap_or("").trim();
        (!uri.is_empty() && !uri.contains(char::is_whitespace)).then(|| NameAddr::new("", uri))
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

    #[test]
    fn name_addr_parse() {
        let na = NameAddr::parse("\"a <b>\" <sip:x@y>;tag=1").unwrap();
        assert_eq!((na.display.as_str(), na.uri.as_str()), ("a <b>", "sip:x@y"));
        let na = NameAddr::parse("sip:alice@corp.example;tag=y").unwrap();
        assert_eq!(
            (na.display.as_str(), na.uri.as_str()),
            ("", "sip:alice@corp.example")
        );
        assert_eq!(NameAddr::parse("<>"), None);
        assert_eq!(NameAddr::parse("\"x\" <sip:a@b"), None);
        assert_eq!(NameAddr::parse("two words"), None);
    }

    #[test]
    fn compact_names_are_expanded_and_looked_up_either_way() {
        let mut h = Headers::new();
        h.push("m", "<sip:a@b>");
        h.push("Supported", "replaces");
        h.push("k", "timer");
        assert_eq!(h.as_slice()[0].name, "Contact");
        assert_eq!(h.get("CONTACT"), Some("<sip:a@b>"));
        assert_eq!(h.get("m"), Some("<sip:a@b>"));
        assert_eq!(
            h.lines("supported").collect::<Vec<_>>(),
            ["replaces", "timer"]
        );
        h.remove("k");
        assert_eq!(h.get("Supported"), None);
    }
}
