//! OpenSIPS' terms: a flat JSON document its script walks with `$json(r/routes[i]/...)`,
//! route 0 into `$ru`/`$du`, the others with `append_msg_branch` (3.6) / `append_branch`
//! (3.5), per-branch headers with `append_hf` in a `branch_route`. Flat string fields,
//! because OpenSIPS' `$json` reads nested objects only one path at a time and a missing
//! key is simply NULL.

use super::{
    Dialect, MapError, ProxyAnswer, final_reply, header_lines, line_safe, name_addr,
    reply_action_json,
};
use crate::decision::Verdict;
use crate::policy::Outcome;
use crate::policy::model::{Decision, ForkMode, Target};
use serde::Serialize;

/// OpenSIPS' JSON dialect (rest_client, async).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenSipsJson;

#[derive(Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
enum Answer<'a> {
    Relay {
        mode: &'static str,
        routes: Vec<Route<'a>>,
        generation: u64,
    },
    Reply {
        code: u16,
        reason: String,
        headers: String,
        generation: u64,
    },
    Refuse {
        code: u16,
        reason: String,
        headers: String,
        generation: u64,
    },
    Continue {
        generation: u64,
    },
}

#[derive(Serialize)]
struct Route<'a> {
    label: &'a str,
    uri: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_uri: Option<&'a str>,
    #[serde(skip_serializing_if = "String::is_empty")]
    headers: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_display: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_uri: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ring_timeout_s: Option<u32>,
}

impl Dialect for OpenSipsJson {
    fn encode(&self, answer: &Outcome<Verdict>) -> Result<ProxyAnswer, MapError> {
        match &answer.value {
            Verdict::Decision(d) => self.decision(d, answer.generation),
            Verdict::ReplyAction(a) => reply_action_json(*a, answer.generation),
        }
    }
}

impl OpenSipsJson {
    /// The document of a route or failure decision made by policy `generation`.
    pub fn decision(&self, decision: &Decision, generation: u64) -> Result<ProxyAnswer, MapError> {
        if let Some((code, reason, headers)) = final_reply(decision)? {
            return ProxyAnswer::json(&match decision {
                Decision::Refuse(_) => Answer::Refuse {
                    code,
                    reason,
                    headers,
                    generation,
                },
                _ => Answer::Reply {
                    code,
                    reason,
                    headers,
                    generation,
                },
            });
        }
        match decision {
            Decision::Continue => ProxyAnswer::json(&Answer::Continue { generation }),
            Decision::Fork(fork) => {
                if fork.targets.is_empty() {
                    return Err(MapError::EmptyFork);
                }
                let mode = match fork.mode {
                    ForkMode::Parallel => "parallel",
                    ForkMode::Serial => "serial",
                };
                let routes = fork
                    .targets
                    .iter()
                    .enumerate()
                    .map(|(i, t)| route(i, t))
                    .collect::<Result<Vec<_>, _>>()?;
                ProxyAnswer::json(&Answer::Relay {
                    mode,
                    routes,
                    generation,
                })
            }
            Decision::Originate(_) => Err(MapError::Unsupported("originate")),
            _ => Err(MapError::Unsupported("unknown")),
        }
    }
}

fn route(i: usize, t: &Target) -> Result<Route<'_>, MapError> {
    let field = |name: &str| format!("targets[{i}].{name}");
    let mut headers = header_lines(&field("headers"), &t.headers)?;
    if let Some(pai) = &t.asserted_identity {
        line_safe(|| field("asserted_identity"), &pai.display)?;
        line_safe(|| field("asserted_identity"), &pai.uri)?;
        headers.push_str("P-Asserted-Identity: ");
        headers.push_str(&name_addr(&pai.display, &pai.uri));
        headers.push_str("\r\n");
    }
    let (from_display, from_uri) = match &t.from {
        Some(f) => (
            Some(line_safe(|| field("from"), &f.display)?),
            Some(line_safe(|| field("from"), &f.uri)?),
        ),
        None => (None, None),
    };
    Ok(Route {
        label: line_safe(|| field("label"), &t.label)?,
        uri: line_safe(|| field("uri"), &t.uri)?,
        dst_uri: t
            .next_hop
            .as_deref()
            .map(|hop| line_safe(|| field("next_hop"), hop))
            .transpose()?,
        headers,
        from_display,
        from_uri,
        // OpenSIPS timers are whole seconds; round up so a branch never rings shorter.
        ring_timeout_s: t.ring_timeout_ms.map(|ms| ms.div_ceil(1000)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{Fork, Header, Reply};
    use serde_json::{Value, json};

    fn doc(d: &Decision) -> Value {
        serde_json::from_str(OpenSipsJson.decision(d, 3).unwrap().as_str()).unwrap()
    }

    #[test]
    fn cvw30_parallel_fork_is_a_flat_route_list() {
        let d = Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets: vec![
                Target {
                    label: "desk".into(),
                    uri: "sip:+14255550101@pbx.corp.example;user=phone".into(),
                    next_hop: Some("sip:127.0.0.1:5090".into()),
                    from: None,
                    asserted_identity: None,
                    headers: vec![Header {
                        name: "X-CVW-Leg".into(),
                        value: "desk".into(),
                    }],
                    ring_timeout_ms: Some(15500),
                },
                Target {
                    label: "client".into(),
                    uri: "sip:alice@127.0.0.1:5071".into(),
                    next_hop: None,
                    from: None,
                    asserted_identity: None,
                    headers: vec![],
                    ring_timeout_ms: None,
                },
            ],
        });
        assert_eq!(
            doc(&d),
            json!({
                "action": "relay", "mode": "parallel", "generation": 3,
                "routes": [
                    { "label": "desk", "uri": "sip:+14255550101@pbx.corp.example;user=phone",
                      "dst_uri": "sip:127.0.0.1:5090", "headers": "X-CVW-Leg: desk\r\n", "ring_timeout_s": 16 },
                    { "label": "client", "uri": "sip:alice@127.0.0.1:5071" }
                ]
            })
        );
    }

    #[test]
    fn reply_keeps_its_headers() {
        let d = Decision::Reply(Reply {
            code: 480,
            reason: "Temporarily Unavailable".into(),
            headers: vec![Header {
                name: "Retry-After".into(),
                value: "60".into(),
            }],
        });
        assert_eq!(
            doc(&d),
            json!({ "action": "reply", "generation": 3, "code": 480, "reason": "Temporarily Unavailable", "headers": "Retry-After: 60\r\n" })
        );
    }
}
