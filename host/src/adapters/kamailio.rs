//! Kamailio's terms: an action plus, for forks, an rtjson document
//! (`rtjson_init_routes`/`rtjson_push_routes`).
//!
//! rtjson applies a route's headers and timers itself only in serial mode; for parallel
//! forks the config's `branch_route` reads `routes[i].headers.extra`,
//! `routes[i].headers.from` and `routes[i].fr_inv_timer` (the per-branch ring timeout,
//! CVW-51) and applies them. Both read the same fields, so one document serves both modes.

use super::{Dialect, MapError, final_reply, header_lines, line_safe, name_addr};
use crate::policy::model::{Decision, ForkMode, Target};
use serde_json::{Map, Value, json};

/// The Kamailio dialect (janssonrpcc, http_client).
#[derive(Debug, Clone, Copy, Default)]
pub struct Kamailio;

impl Dialect for Kamailio {
    fn decision(&self, decision: &Decision) -> Result<Value, MapError> {
        if let Some((code, reason, headers)) = final_reply(decision)? {
            let action = if matches!(decision, Decision::Refuse(_)) {
                "refuse"
            } else {
                "reply"
            };
            let mut doc =
                json!({ "action": action, "code": code, "reason": reason, "headers": headers });
            if let Decision::Refuse(r) = decision {
                doc["rule"] = Value::String(r.rule.clone());
            }
            return Ok(doc);
        }
        match decision {
            Decision::Continue => Ok(json!({ "action": "continue" })),
            Decision::Fork(fork) => {
                if fork.targets.is_empty() {
                    return Err(MapError::EmptyFork);
                }
                let routing = match fork.mode {
                    ForkMode::Parallel => "parallel",
                    ForkMode::Serial => "serial",
                };
                let routes = fork
                    .targets
                    .iter()
                    .enumerate()
                    .map(|(i, t)| route(i, t))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(json!({
                    "action": "relay",
                    "rtjson": { "version": "1.0", "routing": routing, "routes": routes },
                }))
            }
            Decision::Originate(_) => Err(MapError::Unsupported("originate")),
            _ => Err(MapError::Unsupported("unknown")),
        }
    }
}

/// One rtjson route. `label` is ours; rtjson ignores fields it does not know.
fn route(i: usize, t: &Target) -> Result<Value, MapError> {
    let field = |name: &str| format!("targets[{i}].{name}");
    let mut extra = header_lines(&field("headers"), &t.headers)?;
    if let Some(pai) = &t.asserted_identity {
        line_safe(|| field("asserted_identity"), &pai.display)?;
        line_safe(|| field("asserted_identity"), &pai.uri)?;
        extra.push_str("P-Asserted-Identity: ");
        extra.push_str(&name_addr(&pai.display, &pai.uri));
        extra.push_str("\r\n");
    }
    let mut headers = Map::new();
    if let Some(from) = &t.from {
        line_safe(|| field("from"), &from.display)?;
        line_safe(|| field("from"), &from.uri)?;
        headers.insert(
            "from".into(),
            json!({ "display": from.display, "uri": from.uri }),
        );
    }
    if !extra.is_empty() {
        headers.insert("extra".into(), Value::String(extra));
    }
    let mut r = Map::new();
    r.insert(
        "label".into(),
        Value::String(line_safe(|| field("label"), &t.label)?.into()),
    );
    r.insert(
        "uri".into(),
        Value::String(line_safe(|| field("uri"), &t.uri)?.into()),
    );
    if let Some(hop) = &t.next_hop {
        r.insert(
            "dst_uri".into(),
            Value::String(line_safe(|| field("next_hop"), hop)?.into()),
        );
    }
    if !headers.is_empty() {
        r.insert("headers".into(), Value::Object(headers));
    }
    if let Some(ms) = t.ring_timeout_ms {
        r.insert("fr_inv_timer".into(), json!(ms));
    }
    Ok(Value::Object(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{Fork, Header, NameAddr, Refusal, Reply};

    fn desk() -> Target {
        Target {
            label: "desk".into(),
            uri: "sip:+14255550101@pbx.corp.example;user=phone".into(),
            next_hop: Some("sip:127.0.0.1:5090".into()),
            from: None,
            asserted_identity: Some(NameAddr {
                display: "Bob \"B\"".into(),
                uri: "sip:bob@corp.example".into(),
            }),
            headers: vec![Header {
                name: "X-CVW-Leg".into(),
                value: "desk".into(),
            }],
            ring_timeout_ms: Some(15000),
        }
    }

    fn client() -> Target {
        Target {
            label: "client".into(),
            uri: "sip:alice@127.0.0.1:5071;transport=tcp".into(),
            next_hop: None,
            from: Some(NameAddr {
                display: "Call via Work".into(),
                uri: "sip:+14255550000@corp.example".into(),
            }),
            asserted_identity: None,
            headers: vec![],
            ring_timeout_ms: None,
        }
    }

    #[test]
    fn cvw30_parallel_fork_is_an_rtjson_document_with_per_branch_data() {
        let d = Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets: vec![desk(), client()],
        });
        let golden = json!({
            "action": "relay",
            "rtjson": {
                "version": "1.0",
                "routing": "parallel",
                "routes": [
                    {
                        "label": "desk",
                        "uri": "sip:+14255550101@pbx.corp.example;user=phone",
                        "dst_uri": "sip:127.0.0.1:5090",
                        "headers": {
                            "extra": "X-CVW-Leg: desk\r\nP-Asserted-Identity: \"Bob \\\"B\\\"\" <sip:bob@corp.example>\r\n"
                        },
                        "fr_inv_timer": 15000
                    },
                    {
                        "label": "client",
                        "uri": "sip:alice@127.0.0.1:5071;transport=tcp",
                        "headers": { "from": { "display": "Call via Work", "uri": "sip:+14255550000@corp.example" } }
                    }
                ]
            }
        });
        assert_eq!(Kamailio.decision(&d).unwrap(), golden);
    }

    #[test]
    fn serial_mode_and_continue() {
        let d = Decision::Fork(Fork {
            mode: ForkMode::Serial,
            targets: vec![client()],
        });
        assert_eq!(
            Kamailio.decision(&d).unwrap()["rtjson"]["routing"],
            "serial"
        );
        assert_eq!(
            Kamailio.decision(&Decision::Continue).unwrap(),
            json!({ "action": "continue" })
        );
    }

    #[test]
    fn refusal_carries_a_warning_the_person_can_read() {
        let d = Decision::Refuse(Refusal {
            code: 403,
            reason: "Forbidden".into(),
            explanation: "Hold is not available on a \"Call via Work\" call.".into(),
            rule: "CVW-41".into(),
        });
        assert_eq!(
            Kamailio.decision(&d).unwrap(),
            json!({
                "action": "refuse", "code": 403, "reason": "Forbidden", "rule": "CVW-41",
                "headers": "Warning: 399 cvw \"Hold is not available on a \\\"Call via Work\\\" call.\"\r\n"
            })
        );
    }

    #[test]
    fn a_policy_cannot_inject_headers_or_bad_codes() {
        let mut t = desk();
        t.headers[0].value = "desk\r\nX-Evil: 1".into();
        let d = Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets: vec![client(), t],
        });
        assert_eq!(
            Kamailio.decision(&d).unwrap_err().to_string(),
            "targets[1].headers[0].value: contains a line break or a NUL byte"
        );
        let r = Decision::Reply(Reply {
            code: 200,
            reason: "OK".into(),
            headers: vec![],
        });
        assert_eq!(
            Kamailio.decision(&r).unwrap_err().to_string(),
            "reply.code: status code 200 is outside 300..=699"
        );
        let e = Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets: vec![],
        });
        assert_eq!(Kamailio.decision(&e), Err(MapError::EmptyFork));
    }
}
