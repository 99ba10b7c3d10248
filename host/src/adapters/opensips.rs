//! OpenSIPS' terms: a flat JSON document its script walks with `$json(r/routes[i]/...)`,
//! route 0 into `$ru`/`$du`, the others with `append_msg_branch` (3.6) / `append_branch`
//! (3.5), per-branch headers with `append_hf` in a `branch_route`. Flat string fields,
//! because OpenSIPS' `$json` reads nested objects only one path at a time and a missing
//! key is simply NULL.

use super::{Dialect, MapError, final_reply, header_lines, line_safe, name_addr};
use crate::policy::model::{Decision, ForkMode, Target};
use serde_json::{Map, Value, json};

/// The OpenSIPS dialect (rest_client, async).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenSips;

impl Dialect for OpenSips {
    fn decision(&self, decision: &Decision) -> Result<Value, MapError> {
        if let Some((code, reason, headers)) = final_reply(decision)? {
            let action = if matches!(decision, Decision::Refuse(_)) {
                "refuse"
            } else {
                "reply"
            };
            return Ok(
                json!({ "action": action, "code": code, "reason": reason, "headers": headers }),
            );
        }
        match decision {
            Decision::Continue => Ok(json!({ "action": "continue" })),
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
                Ok(json!({ "action": "relay", "mode": mode, "routes": routes }))
            }
            Decision::Originate(_) => Err(MapError::Unsupported("originate")),
            _ => Err(MapError::Unsupported("unknown")),
        }
    }
}

fn route(i: usize, t: &Target) -> Result<Value, MapError> {
    let field = |name: &str| format!("targets[{i}].{name}");
    let mut hdrs = header_lines(&field("headers"), &t.headers)?;
    for (name, id) in [("P-Asserted-Identity", &t.asserted_identity)] {
        if let Some(na) = id {
            line_safe(|| field("asserted_identity"), &na.display)?;
            line_safe(|| field("asserted_identity"), &na.uri)?;
            hdrs.push_str(&format!("{name}: {}\r\n", name_addr(&na.display, &na.uri)));
        }
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
    if !hdrs.is_empty() {
        r.insert("headers".into(), Value::String(hdrs));
    }
    if let Some(from) = &t.from {
        r.insert(
            "from_display".into(),
            Value::String(line_safe(|| field("from"), &from.display)?.into()),
        );
        r.insert(
            "from_uri".into(),
            Value::String(line_safe(|| field("from"), &from.uri)?.into()),
        );
    }
    if let Some(ms) = t.ring_timeout_ms {
        // OpenSIPS timers are whole seconds; round up so a branch never rings shorter.
        r.insert("ring_timeout_s".into(), json!(ms.div_ceil(1000)));
    }
    Ok(Value::Object(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{Fork, Header, Reply};

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
            OpenSips.decision(&d).unwrap(),
            json!({
                "action": "relay", "mode": "parallel",
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
            OpenSips.decision(&d).unwrap(),
            json!({ "action": "reply", "code": 480, "reason": "Temporarily Unavailable", "headers": "Retry-After: 60\r\n" })
        );
    }
}
