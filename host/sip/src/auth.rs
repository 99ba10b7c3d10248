//! Digest authentication of the requests the user agent sends (RFC 3261 §22, RFC 2617,
//! RFC 7616 / RFC 8760 for SHA-256): a PBX trunk or a proxy answers 401 or 407 with a
//! challenge, and the request goes again with the answer to it. Credentials are chosen by
//! the challenge's realm, so one host can reach several trunks, each with its own account.
//!
//! The password never leaves this module except inside the hash; [`Credentials`]' Debug
//! prints neither it nor anything derived from it.

use std::fmt;

use crate::message::Response;
use crate::random;

/// One account: the realm it is for (`None`: any realm without its own entry), the user
/// name and the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub realm: Option<String>,
    pub username: String,
    password: String,
}

impl Credentials {
    pub fn new(realm: Option<String>, username: impl Into<String>, password: String) -> Self {
        Credentials {
            realm,
            username: username.into(),
            password,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The hash a challenge asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
}

impl Algorithm {
    fn parse(name: Option<&str>) -> Option<Algorithm> {
        match name.map(str::to_ascii_uppercase).as_deref() {
            None | Some("MD5") => Some(Algorithm::Md5),
            Some("MD5-SESS") => Some(Algorithm::Md5Sess),
            Some("SHA-256") => Some(Algorithm::Sha256),
            Some("SHA-256-SESS") => Some(Algorithm::Sha256Sess),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    fn hash(self, text: &str) -> String {
        self.hash_bytes(text.as_bytes())
    }

    fn hash_bytes(self, bytes: &[u8]) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => {
                use md5::Digest;
                format!("{:x}", md5::Md5::digest(bytes))
            }
            Algorithm::Sha256 | Algorithm::Sha256Sess => {
                use sha2::Digest;
                format!("{:x}", sha2::Sha256::digest(bytes))
            }
        }
    }

    fn session(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }
}

/// The quality of protection an answer is computed with (RFC 2617 §3.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qop {
    /// No qop offered: the RFC 2069 form.
    None,
    Auth,
    /// Only `auth-int` offered: the body is hashed into the answer (RFC 2617 §3.2.2.3).
    AuthInt,
}

impl Qop {
    fn name(self) -> Option<&'static str> {
        match self {
            Qop::None => None,
            Qop::Auth => Some("auth"),
            Qop::AuthInt => Some("auth-int"),
        }
    }
}

/// A `Digest` challenge from `WWW-Authenticate` (401) or `Proxy-Authenticate` (407).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Whether it came in a 407, so the answer goes into `Proxy-Authorization`.
    pub proxy: bool,
    pub realm: String,
    nonce: String,
    opaque: Option<String>,
    algorithm: Algorithm,
    /// `auth` when offered, else `auth-int` when that alone is offered.
    qop: Qop,
    /// The nonce was merely old (RFC 2617 §3.2.1): answering again is not a new failure.
    pub stale: bool,
}

/// Why a challenge cannot be answered (named in the leg's log line, never the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("no Digest challenge in the {0} header")]
    NoDigest(&'static str),
    #[error("the challenge has no {0} parameter")]
    Missing(&'static str),
    #[error("algorithm {0:?} is not supported (MD5, MD5-sess, SHA-256, SHA-256-sess are)")]
    Algorithm(String),
    #[error("qop {0:?} is not supported (auth and auth-int are)")]
    Qop(String),
}

impl Challenge {
    /// Every Digest challenge of a 401/407, in message order (a proxy and a PBX may both
    /// challenge, RFC 3261 §22.3); the errors of the ones that cannot be answered.
    pub fn all_of(response: &Response) -> Vec<Result<Challenge, ChallengeError>> {
        let (header, proxy) = match response.code {
            401 => ("WWW-Authenticate", false),
            407 => ("Proxy-Authenticate", true),
            _ => return Vec::new(),
        };
        let found: Vec<_> = response
            .headers
            .lines(header)
            .map(|value| Challenge::parse(value, proxy, header))
            .collect();
        if found.is_empty() {
            return vec![Err(ChallengeError::NoDigest(header))];
        }
        found
    }

    fn parse(value: &str, proxy: bool, header: &'static str) -> Result<Challenge, ChallengeError> {
        let value = value.trim();
        let (scheme, params) = value.split_once([' ', '\t']).unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(ChallengeError::NoDigest(header));
        }
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = None;
        let mut qop = None;
        let mut stale = false;
        for param in auth_params(params) {
            let Some((name, raw)) = param.split_once('=') else {
                continue;
            };
            let text = unquote(raw.trim());
            match name.trim().to_ascii_lowercase().as_str() {
                "realm" => realm = Some(text),
                "nonce" => nonce = Some(text),
                "opaque" => opaque = Some(text),
                "algorithm" => algorithm = Some(text),
                "qop" => qop = Some(text),
                "stale" => stale = text.eq_ignore_ascii_case("true"),
                _ => {}
            }
        }
        let algorithm_name = algorithm.clone();
        let algorithm = Algorithm::parse(algorithm.as_deref())
            .ok_or_else(|| ChallengeError::Algorithm(algorithm_name.unwrap_or_default()))?;
        // `auth` is preferred when both are offered: it does not depend on the body.
        let offered = |name: &str| {
            qop.as_deref()
                .is_some_and(|list| list.split(',').any(|q| q.trim().eq_ignore_ascii_case(name)))
        };
        let qop = match &qop {
            None => Qop::None,
            Some(_) if offered("auth") => Qop::Auth,
            Some(_) if offered("auth-int") => Qop::AuthInt,
            Some(list) => return Err(ChallengeError::Qop(list.clone())),
        };
        Ok(Challenge {
            proxy,
            realm: realm.ok_or(ChallengeError::Missing("realm"))?,
            nonce: nonce.ok_or(ChallengeError::Missing("nonce"))?,
            opaque,
            algorithm,
            qop,
            stale,
        })
    }

    /// The header that carries the answer.
    pub fn answer_header(&self) -> &'static str {
        if self.proxy {
            "Proxy-Authorization"
        } else {
            "Authorization"
        }
    }

    /// The account for this challenge: the one for its realm, else the one for any realm.
    pub fn credentials<'a>(&self, all: &'a [Credentials]) -> Option<&'a Credentials> {
        all.iter()
            .find(|c| c.realm.as_deref() == Some(self.realm.as_str()))
            .or_else(|| all.iter().find(|c| c.realm.is_none()))
    }

    /// The `Authorization`/`Proxy-Authorization` value for `method` to `uri` (the
    /// Request-URI as sent) with `body` (the message body as sent, hashed for
    /// `qop=auth-int`), with a fresh client nonce.
    pub fn answer(
        &self,
        credentials: &Credentials,
        method: &str,
        uri: &str,
        body: &[u8],
    ) -> String {
        self.answer_with(credentials, method, uri, body, &random::token(8))
    }

    fn answer_with(
        &self,
        c: &Credentials,
        method: &str,
        uri: &str,
        body: &[u8],
        cnonce: &str,
    ) -> String {
        let h = |text: &str| self.algorithm.hash(text);
        let mut ha1 = h(&format!("{}:{}:{}", c.username, self.realm, c.password));
        if self.algorithm.session() {
            ha1 = h(&format!("{ha1}:{}:{cnonce}", self.nonce));
        }
        // RFC 2617 §3.2.2.3 (RFC 7616 §3.4.3): auth-int adds H(entity-body), the body's
        // hash with the challenge's algorithm (of nothing when there is no body).
        let ha2 = match self.qop {
            Qop::AuthInt => h(&format!(
                "{method}:{uri}:{}",
                self.algorithm.hash_bytes(body)
            )),
            Qop::None | Qop::Auth => h(&format!("{method}:{uri}")),
        };
        const NC: &str = "00000001";
        let response = match self.qop.name() {
            Some(qop) => h(&format!("{ha1}:{}:{NC}:{cnonce}:{qop}:{ha2}", self.nonce)),
            None => h(&format!("{ha1}:{}:{ha2}", self.nonce)),
        };
        let mut value = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm={}",
            quoted(&c.username),
            quoted(&self.realm),
            quoted(&self.nonce),
            self.algorithm.name(),
        );
        if self.qop != Qop::None || self.algorithm.session() {
            value.push_str(&format!(", cnonce=\"{cnonce}\""));
        }
        if let Some(qop) = self.qop.name() {
            value.push_str(&format!(", qop={qop}, nc={NC}"));
        }
        if let Some(opaque) = &self.opaque {
            value.push_str(&format!(", opaque=\"{}\"", quoted(opaque)));
        }
        value
    }
}

/// The comma-separated `name=value` pairs of a challenge; commas inside quoted strings
/// (`qop="auth,auth-int"`) and escaped quotes (`\"`) stay in their value.
fn auth_params(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quoted, mut escaped, mut start) = (false, false, 0);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

fn unquote(text: &str) -> String {
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => text.to_owned(),
    }
}

/// A value put back between quotes: a challenge's text cannot end the quoted string or
/// the header line.
fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Message, Response};

    fn challenge(code: u16, header: &str, value: &str) -> Response {
        let raw = format!(
            "SIP/2.0 {code} Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n\
             From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
             {header}: {value}\r\nContent-Length: 0\r\n\r\n"
        );
        match Message::parse(raw.as_bytes()) {
            Ok(Message::Response(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    /// RFC 2617 §3.5's worked example, with its published response.
    #[test]
    fn the_rfc_2617_example_gives_the_published_response() {
        let r = challenge(
            401,
            "WWW-Authenticate",
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        );
        let c = Challenge::all_of(&r).remove(0).unwrap();
        let creds = Credentials::new(None, "Mufasa", "Circle Of Life".into());
        let value = c.answer_with(&creds, "GET", "/dir/index.html", b"", "0a4f113b");
        assert!(
            value.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{value}"
        );
        assert!(value.contains("qop=auth, nc=00000001"), "{value}");
        assert!(value.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
    }

    /// RFC 7616 §3.9.1's SHA-256 example.
    #[test]
    fn the_rfc_7616_sha_256_example_gives_the_published_response() {
        let r = challenge(
            401,
            "WWW-Authenticate",
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm=SHA-256, \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        );
        let c = Challenge::all_of(&r).remove(0).unwrap();
        let creds = Credentials::new(None, "Mufasa", "Circle of Life".into());
        let value = c.answer_with(
            &creds,
            "GET",
            "/dir/index.html",
            b"",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(
            value.contains(
                "response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\""
            ),
            "{value}"
        );
    }

    #[test]
    fn a_407_is_answered_in_proxy_authorization_and_credentials_go_by_realm() {
        let r = challenge(
            407,
            "Proxy-Authenticate",
            "Digest realm=\"pbx-b\", nonce=\"n1\", algorithm=MD5",
        );
        let c = Challenge::all_of(&r).remove(0).unwrap();
        assert_eq!(c.answer_header(), "Proxy-Authorization");
        let all = [
            Credentials::new(Some("pbx-a".into()), "a", "pa".into()),
            Credentials::new(Some("pbx-b".into()), "b", "pb".into()),
        ];
        assert_eq!(c.credentials(&all).map(|c| c.username.as_str()), Some("b"));
        assert_eq!(c.credentials(&all[..1]), None);
        // RFC 2069 form without qop: MD5(HA1:nonce:HA2).
        let value = c.answer_with(&all[1], "INVITE", "sip:+1425@pbx", b"", "x");
        let ha1 = Algorithm::Md5.hash("b:pbx-b:pb");
        let ha2 = Algorithm::Md5.hash("INVITE:sip:+1425@pbx");
        let want = Algorithm::Md5.hash(&format!("{ha1}:n1:{ha2}"));
        assert!(value.contains(&format!("response=\"{want}\"")), "{value}");
        assert!(!value.contains("qop"), "{value}");
    }

    #[test]
    fn challenges_that_cannot_be_answered_say_why() {
        let r = challenge(
            401,
            "WWW-Authenticate",
            "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256",
        );
        assert!(
            matches!(&Challenge::all_of(&r)[0], Err(ChallengeError::Algorithm(a)) if a == "SHA-512-256")
        );
        let r = challenge(
            401,
            "WWW-Authenticate",
            "Digest realm=\"r\", nonce=\"n\", qop=\"auth-conf\"",
        );
        assert!(matches!(
            &Challenge::all_of(&r)[0],
            Err(ChallengeError::Qop(_))
        ));
        let r = challenge(401, "WWW-Authenticate", "Basic realm=\"r\"");
        assert!(matches!(
            &Challenge::all_of(&r)[0],
            Err(ChallengeError::NoDigest(_))
        ));
        let r = challenge(401, "WWW-Authenticate", "Digest realm=\"r\"");
        assert_eq!(
            Challenge::all_of(&r)[0],
            Err(ChallengeError::Missing("nonce"))
        );
    }

    #[test]
    fn the_password_is_never_printed() {
        let c = Credentials::new(Some("pbx".into()), "cvw", "s3cret-pw".into());
        let printed = format!("{c:?} {c:#?}");
        assert!(!printed.contains("s3cret-pw"), "{printed}");
        assert!(printed.contains("cvw") && printed.contains("redacted"));
    }

    #[test]
    fn a_hostile_realm_cannot_break_the_answer_header() {
        let r = challenge(
            401,
            "WWW-Authenticate",
            "Digest realm=\"a\\\"b\", nonce=\"n\"",
        );
        let c = Challenge::all_of(&r).remove(0).unwrap();
        let creds = Credentials::new(None, "u", "p".into());
        let value = c.answer_with(&creds, "INVITE", "sip:x@h", b"", "c");
        assert!(value.contains("realm=\"a\\\"b\""), "{value}");
    }
}
