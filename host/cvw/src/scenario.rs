//! Policy scenarios (CVW-53): a request, a directory and the expected decision.
//!
//! Owns the scenario file format, building the hook's input from it, running one hook
//! through a [`PolicyHost`] made for the scenario (its directory, its `[config]` over the
//! directory's `[policy.config]`, its clock) and the partial match of the decision against
//! `[expect]`. It does not print anything: `cvw policy test` formats the [`Report`]s.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::directory::{Directory, DirectoryError, config_value_string};
use crate::message::SipRequest;
use crate::policy::model::{
    BranchReply, ClickToCall, Contact, DialOut, Header, RequestContext, Source,
};
use crate::policy::{LoadError, PolicyFailure, PolicyHost};

/// Which hook a scenario calls, with that hook's input.
#[derive(Debug, Clone)]
pub enum Input {
    Request(RequestSpec, RequestContext),
    Reply(RequestSpec, BranchReply),
    Failure(RequestSpec, BranchReply),
    ClickToCall(ClickToCall),
    DialOut(DialOut),
}

/// The `[request]` table: enough of a SIP request to build one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Default `INVITE`.
    #[serde(default = "invite")]
    pub method: String,
    pub uri: String,
    /// Default: the RFC 3261 anonymous From.
    #[serde(default = "anonymous")]
    pub from: String,
    /// Default: the request URI.
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub call_id: Option<String>,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub headers: Vec<Header>,
    #[serde(default)]
    source: Source,
    #[serde(default)]
    contacts: Vec<Contact>,
}

fn invite() -> String {
    "INVITE".to_string()
}

fn anonymous() -> String {
    "\"Anonymous\" <sip:anonymous@anonymous.invalid>".to_string()
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum HookName {
    #[default]
    Request,
    Reply,
    Failure,
    ClickToCall,
    DialOut,
}

impl HookName {
    fn table(self) -> &'static str {
        match self {
            HookName::Request => "request",
            HookName::Reply | HookName::Failure => "reply",
            HookName::ClickToCall => "click_to_call",
            HookName::DialOut => "dial_out",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    directory: PathBuf,
    #[serde(default)]
    hook: HookName,
    now: Option<u64>,
    #[serde(default)]
    config: toml::Table,
    request: Option<RequestSpec>,
    reply: Option<BranchReply>,
    click_to_call: Option<ClickToCall>,
    dial_out: Option<DialOut>,
    expect: toml::Table,
}

/// A parsed scenario file.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub file: PathBuf,
    /// Resolved against the scenario file's folder.
    pub directory: PathBuf,
    pub now: Option<u64>,
    pub config: Vec<(String, String)>,
    pub input: Input,
    /// A subset of the decision, in its serde JSON form.
    pub expect: Value,
}

/// Why a scenario could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{}: cannot read the scenario: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {detail}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("{}: hook {hook:?} needs a [{table}] table", file.display())]
    MissingInput {
        file: PathBuf,
        hook: &'static str,
        table: &'static str,
    },
    #[error("{}: [config] {key}: a table cannot be handed to the policy", file.display())]
    BadConfig { file: PathBuf, key: String },
    #[error("{}: [expect] cannot be compared: {source}", file.display())]
    BadExpect {
        file: PathBuf,
        source: serde_json::Error,
    },
}

/// Why a scenario could not be run (as opposed to: ran and did not match).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error("the policy refused the scenario's directory or configuration: {0}")]
    Load(#[from] LoadError),
    #[error("{}: [request] does not make a SIP request: {source}", file.display())]
    Request {
        file: PathBuf,
        source: crate::message::MessageError,
    },
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// `file` names the scenario in messages and anchors its relative `directory`.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| ScenarioError::Syntax {
            file: file.to_path_buf(),
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0),
            detail: e.message().trim().to_string(),
        })?;
        let missing = |hook: HookName| ScenarioError::MissingInput {
            file: file.to_path_buf(),
            hook: hook_name(hook),
            table: hook.table(),
        };
        let request = |raw: &RawScenario| raw.request.clone().ok_or(missing(HookName::Request));
        let reply = |raw: &RawScenario| raw.reply.clone().ok_or(missing(raw.hook));
        let input = match raw.hook {
            HookName::Request => {
                let spec = request(&raw)?;
                let context = RequestContext {
                    source: spec.source,
                    contacts: spec.contacts.clone(),
                };
                Input::Request(spec, context)
            }
            HookName::Reply => Input::Reply(request(&raw)?, reply(&raw)?),
            HookName::Failure => Input::Failure(request(&raw)?, reply(&raw)?),
            HookName::ClickToCall => {
                Input::ClickToCall(raw.click_to_call.clone().ok_or(missing(raw.hook))?)
            }
            HookName::DialOut => Input::DialOut(raw.dial_out.clone().ok_or(missing(raw.hook))?),
        };
        let config = raw
            .config
            .iter()
            .map(|(key, value)| {
                config_value_string(value)
                    .map(|s| (key.clone(), s))
                    .ok_or_else(|| ScenarioError::BadConfig {
                        file: file.to_path_buf(),
                        key: key.clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let expect =
            serde_json::to_value(&raw.expect).map_err(|source| ScenarioError::BadExpect {
                file: file.to_path_buf(),
                source,
            })?;
        let base = file.parent().unwrap_or(Path::new("."));
        Ok(Scenario {
            name: raw.name,
            file: file.to_path_buf(),
            directory: base.join(&raw.directory),
            now: raw.now,
            config,
            input,
            expect,
        })
    }

    /// Publish `wasm` on `host` with this scenario's directory, config and clock, run the
    /// hook and compare the decision with `[expect]`. One host serves many scenarios: it
    /// compiles a module once and republishes it per scenario.
    pub fn run(&self, host: &PolicyHost, wasm: &[u8], origin: &str) -> Result<Report, RunError> {
        let directory = Directory::load(&self.directory)?.with_config(self.config.clone());
        host.set_clock(self.now);
        host.publish(wasm, origin, Arc::new(directory))?;
        let (actual, failure) = self.call(host)?;
        Ok(Report {
            name: self.name.clone(),
            file: self.file.clone(),
            differences: compare(&self.expect, &actual),
            failure,
            actual,
        })
    }

    fn call(&self, host: &PolicyHost) -> Result<(Value, Option<String>), RunError> {
        let json = |v: Result<Value, serde_json::Error>| v.unwrap_or(Value::Null);
        Ok(match &self.input {
            Input::Request(spec, context) => {
                let out = host.on_request(&self.sip_request(spec)?, context);
                (
                    json(serde_json::to_value(&out.value)),
                    out.failure.map(describe_failure),
                )
            }
            Input::Reply(spec, reply) => {
                let out = host.on_reply(&self.sip_request(spec)?, reply);
                let action = json(serde_json::to_value(out.value));
                (
                    serde_json::json!({ "action": action }),
                    out.failure.map(describe_failure),
                )
            }
            Input::Failure(spec, reply) => {
                let out = host.on_failure(&self.sip_request(spec)?, reply);
                (
                    json(serde_json::to_value(&out.value)),
                    out.failure.map(describe_failure),
                )
            }
            Input::ClickToCall(request) => {
                let out = host.on_click_to_call(request);
                (
                    json(serde_json::to_value(&out.value)),
                    out.failure.map(describe_failure),
                )
            }
            Input::DialOut(request) => {
                let out = host.on_dial_out(request);
                (
                    json(serde_json::to_value(&out.value)),
                    out.failure.map(describe_failure),
                )
            }
        })
    }

    fn sip_request(&self, spec: &RequestSpec) -> Result<SipRequest, RunError> {
        let call_id = spec
            .call_id
            .clone()
            .unwrap_or_else(|| format!("scenario-{}@cvw.test", self.file.display()));
        let mut builder = SipRequest::builder(&spec.method, &spec.uri)
            .from(&spec.from)
            .to(spec.to.as_deref().unwrap_or(&spec.uri))
            .call_id(&call_id);
        for header in &spec.headers {
            builder = builder.header(&header.name, &header.value);
        }
        builder
            .body(spec.body.as_bytes())
            .build()
            .map_err(|source| RunError::Request {
                file: self.file.clone(),
                source,
            })
    }
}

fn describe_failure(failure: PolicyFailure) -> String {
    format!("{:?}: {}", failure.kind, failure.detail)
}

fn hook_name(hook: HookName) -> &'static str {
    match hook {
        HookName::Request => "request",
        HookName::Reply => "reply",
        HookName::Failure => "failure",
        HookName::ClickToCall => "click-to-call",
        HookName::DialOut => "dial-out",
    }
}

/// The result of one scenario.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub file: PathBuf,
    pub differences: Vec<Difference>,
    /// The policy trapped, ran out of time or memory; the decision is the failure mode's.
    pub failure: Option<String>,
    /// The whole decision, for a verbose listing.
    pub actual: Value,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.differences.is_empty() && self.failure.is_none()
    }
}

/// One way the decision differs from `[expect]`, at a path such as `targets[0].uri`.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub path: String,
    pub kind: Mismatch,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mismatch {
    Value { expected: Value, got: Value },
    Missing { expected: Value },
    Length { expected: usize, got: usize },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "decision"
        } else {
            &self.path
        };
        match &self.kind {
            Mismatch::Value { expected, got } => {
                write!(f, "{path}: expected {expected}, got {got}")
            }
            Mismatch::Missing { expected } => write!(f, "{path}: expected {expected}, got nothing"),
            Mismatch::Length { expected, got } => {
                write!(f, "{path}: expected {expected} elements, got {got}")
            }
        }
    }
}

/// The subset rule: every key of `expected` must be in `actual` with an equal value; tables
/// compare recursively as subsets, arrays by length and element-wise as subsets.
pub fn compare(expected: &Value, actual: &Value) -> Vec<Difference> {
    let mut out = Vec::new();
    compare_at(String::new(), expected, actual, &mut out);
    out
}

fn compare_at(path: String, expected: &Value, actual: &Value, out: &mut Vec<Difference>) {
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, want_value) in want {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match have.get(key) {
                    Some(have_value) => compare_at(child, want_value, have_value, out),
                    None => out.push(Difference {
                        path: child,
                        kind: Mismatch::Missing {
                            expected: want_value.clone(),
                        },
                    }),
                }
            }
        }
        (Value::Array(want), Value::Array(have)) if want.len() != have.len() => {
            out.push(Difference {
                path,
                kind: Mismatch::Length {
                    expected: want.len(),
                    got: have.len(),
                },
            });
        }
        (Value::Array(want), Value::Array(have)) => {
            for (i, (w, h)) in want.iter().zip(have).enumerate() {
                compare_at(format!("{path}[{i}]"), w, h, out);
            }
        }
        (Value::Number(w), Value::Number(h)) if w.as_f64() == h.as_f64() => {}
        (w, h) if w == h => {}
        (w, h) => out.push(Difference {
            path,
            kind: Mismatch::Value {
                expected: w.clone(),
                got: h.clone(),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fork() -> Value {
        json!({
            "decision": "fork",
            "mode": "parallel",
            "targets": [
                { "label": "desk", "uri": "sip:+14255550101@pbx", "ring_timeout_ms": 20000 },
                { "label": "client", "uri": "sip:alice@127.0.0.1:5071" }
            ]
        })
    }

    #[test]
    fn a_subset_of_keys_matches() {
        let expect = json!({ "decision": "fork", "targets": [{ "label": "desk" }, {}] });
        assert_eq!(compare(&expect, &fork()), vec![]);
    }

    #[test]
    fn a_wrong_value_is_reported_by_its_path() {
        let expect = json!({ "targets": [{ "ring_timeout_ms": 15000 }, { "label": "client" }] });
        let diffs = compare(&expect, &fork());
        assert_eq!(diffs.len(), 1);
        assert_eq!(
            diffs[0].to_string(),
            "targets[0].ring_timeout_ms: expected 15000, got 20000"
        );
    }

    #[test]
    fn a_key_the_decision_lacks_is_a_difference() {
        let expect = json!({ "targets": [{}, { "ring_timeout_ms": 5000 }] });
        let diffs = compare(&expect, &fork());
        assert_eq!(
            diffs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["targets[1].ring_timeout_ms: expected 5000, got nothing"]
        );
    }

    #[test]
    fn arrays_must_have_the_same_length() {
        let expect = json!({ "targets": [{ "label": "desk" }] });
        let diffs = compare(&expect, &fork());
        assert_eq!(diffs[0].to_string(), "targets: expected 1 elements, got 2");
    }

    #[test]
    fn a_different_decision_kind_is_one_difference_per_key() {
        let expect = json!({ "decision": "refuse", "code": 488 });
        let diffs = compare(&expect, &fork());
        assert_eq!(
            diffs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "code: expected 488, got nothing",
                "decision: expected \"refuse\", got \"fork\""
            ]
        );
    }

    #[test]
    fn a_scenario_without_its_hook_input_is_refused() {
        let text = "name = \"x\"\ndirectory = \"d.toml\"\nhook = \"click-to-call\"\n[expect]\ndecision = \"refuse\"\n";
        let err = Scenario::parse(text, Path::new("s.toml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "s.toml: hook \"click-to-call\" needs a [click_to_call] table"
        );
    }

    #[test]
    fn toml_integers_in_expect_equal_decision_numbers() {
        let text = "name = \"x\"\ndirectory = \"../d.toml\"\n[request]\nmethod = \"INVITE\"\nuri = \"sip:a@b\"\nfrom = \"sip:b@b\"\nto = \"sip:a@b\"\nsource = \"uc\"\n[expect]\ntargets = [{ ring_timeout_ms = 20000 }, {}]\n";
        let scenario = Scenario::parse(text, Path::new("dir/s.toml")).unwrap();
        assert_eq!(scenario.directory, Path::new("dir/../d.toml"));
        assert_eq!(compare(&scenario.expect, &fork()), vec![]);
        let Input::Request(_, context) = scenario.input else {
            panic!("a request scenario")
        };
        assert_eq!(context.source, Source::Uc);
    }
}
