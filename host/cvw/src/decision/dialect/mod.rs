//! The one answer of the decision service ([`Outcome<Verdict>`]) in each proxy's terms:
//! Kamailio's JSON (an rtjson document plus an action, [`kamailio`]), Kamailio's evapi
//! layout (sliced with string transformations, [`evapi`], specified in
//! `docs/evapi-answer.md`), OpenSIPS' flat JSON walked with `$json` ([`opensips`]).
//!
//! Owns the wire shape of an answer and the checks that keep a policy from injecting SIP
//! (line breaks in headers, codes out of range). Does not own transports
//! ([`super::transport`]) nor the policy call ([`super::DecisionService`]).

pub mod evapi;
pub mod kamailio;
pub mod native;
pub mod opensips;

use super::Verdict;
use crate::policy::Outcome;
use crate::policy::model::{Decision, Header, ReplyAction};
use serde::Serialize;
use thiserror::Error;

pub use evapi::KamailioEvapi;
pub use kamailio::KamailioJson;
pub use native::{NativeAnswer, NativeBranch};
pub use opensips::OpenSipsJson;

/// A proxy's way of reading an answer. One small trait: a transport picks the dialect (by
/// connection or path) and never looks inside what it encodes.
pub trait Dialect: Send + Sync {
    /// The answer made by policy generation `answer.generation`, in this proxy's terms.
    fn encode(&self, answer: &Outcome<Verdict>) -> Result<ProxyAnswer, MapError>;
}

/// The JSON dialects' answer to the reply hook: the action and the generation.
fn reply_action_json(action: ReplyAction, generation: u64) -> Result<ProxyAnswer, MapError> {
    #[derive(Serialize)]
    struct ActionOnly {
        action: &'static str,
        generation: u64,
    }
    let action = match action {
        ReplyAction::CancelBranch => "cancel-branch",
        _ => "continue",
    };
    ProxyAnswer::json(&ActionOnly { action, generation })
}

/// An answer in a proxy's terms: the text its config reads (a JSON object, or the evapi
/// layout). Built from typed structs straight to text, because this is on every call's
/// path and a `serde_json::Value` tree costs several allocations per field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAnswer(String);

impl ProxyAnswer {
    pub(crate) fn json(doc: &impl Serialize) -> Result<Self, MapError> {
        serde_json::to_string(doc)
            .map(ProxyAnswer)
            .map_err(MapError::Encode)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Why a decision cannot be put into a proxy's terms. The proxy then falls back as it
/// does when the host does not answer (fail-open), so none of these drop a call.
#[derive(Debug, Error)]
pub enum MapError {
    #[error("decision has a fork with no targets")]
    EmptyFork,
    #[error("{field}: status code {code} is outside {min}..=699")]
    BadCode {
        field: &'static str,
        code: u16,
        min: u16,
    },
    #[error("{field}: contains a line break or a NUL byte")]
    LineBreak { field: String },
    #[error("{field}: header name {name:?} is not a SIP token")]
    BadHeaderName { field: String, name: String },
    #[error("decision kind {0} cannot be carried out by the proxy")]
    Unsupported(&'static str),
    #[error("cannot encode the document: {0}")]
    Encode(#[source] serde_json::Error),
}

/// `text` if it can go on a SIP header line unchanged.
pub(crate) fn line_safe(field: impl Fn() -> String, text: &str) -> Result<&str, MapError> {
    if text.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(MapError::LineBreak { field: field() });
    }
    Ok(text)
}

/// RFC 3261 `token` characters, for header names.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// Headers as CRLF-terminated lines, the form `append_hf`/`append_to_reply` take.
pub(crate) fn header_lines(field: &str, headers: &[Header]) -> Result<String, MapError> {
    let mut out = String::new();
    for (i, h) in headers.iter().enumerate() {
        if !is_token(&h.name) {
            return Err(MapError::BadHeaderName {
                field: format!("{field}[{i}].name"),
                name: h.name.clone(),
            });
        }
        let value = line_safe(|| format!("{field}[{i}].value"), &h.value)?;
        out.push_str(&h.name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    Ok(out)
}

/// A name-addr for a header value: `"Display" <uri>` or `<uri>`.
pub(crate) fn name_addr(display: &str, uri: &str) -> String {
    if display.is_empty() {
        format!("<{uri}>")
    } else {
        format!("\"{}\" <{uri}>", quoted(display))
    }
}

/// Escapes a quoted-string's content (RFC 3261 §25.1).
pub(crate) fn quoted(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A reply or refusal code within `min..=699`.
pub(crate) fn checked_code(field: &'static str, code: u16, min: u16) -> Result<u16, MapError> {
    if (min..=699).contains(&code) {
        Ok(code)
    } else {
        Err(MapError::BadCode { field, code, min })
    }
}

/// The reply a proxy sends for `Decision::Reply` / `Decision::Refuse`, common to every
/// dialect: `(code, reason, header lines)`.
pub(crate) fn final_reply(decision: &Decision) -> Result<Option<(u16, String, String)>, MapError> {
    match decision {
        Decision::Reply(r) => {
            let code = checked_code("reply.code", r.code, 300)?;
            let reason = line_safe(|| "reply.reason".into(), &r.reason)?;
            Ok(Some((
                code,
                reason.to_owned(),
                header_lines("reply.headers", &r.headers)?,
            )))
        }
        Decision::Refuse(r) => {
            let code = checked_code("refuse.code", r.code, 400)?;
            let reason = line_safe(|| "refuse.reason".into(), &r.reason)?;
            let text = line_safe(|| "refuse.explanation".into(), &r.explanation)?;
            let warning = format!("Warning: 399 cvw \"{}\"\r\n", quoted(text));
            Ok(Some((code, reason.to_owned(), warning)))
        }
        _ => Ok(None),
    }
}
