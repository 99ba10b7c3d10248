//! Kamailio's terms: an action plus, for forks, an rtjson document
//! (`rtjson_init_routes`/`rtjson_push_routes`).
//!
//! rtjson applies a route's headers and timers itself only in serial mode; for parallel
//! forks the config's `branch_route` reads `routes[i].headers.extra`,
//! `routes[i].headers.from` and `routes[i].fr_inv_timer` (the per-branch ring timeout,
//! CVW-51) and applies them. Both read the same fields, so one document serves both modes.

use super::{Dialect, Document, MapError, final_reply, header_lines, line_safe, name_addr};
use crate::policy::model::{Decision, ForkMode, Target};
use serde::Serialize;

/// The Kamailio dialect (janssonrpcc, http_client).
#[derive(Debug, Clone, Copy, Default)]
pub struct Kamailio;

/// What the config reads: `action`, then the fields of that action.
#[derive(Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
enum Doc<'a> {
    Relay {
        rtjson: Rtjson<'a>,
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
        rule: &'a str,
        generation: u64,
    },
    Continue {
        generation: u64,
    },
}

#[derive(Serialize)]
struct Rtjson<'a> {
    version: &'static str,
    routing: &'static str,
    routes: Vec<Route<'a>>,
}

/// One rtjson route. `label` is ours; rtjson ignores fields it does not know.
#[derive(Serialize)]
struct Route<'a> {
    label: &'a str,
    uri: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_uri: Option<&'a str>,
    #[serde(skip_serializing_if = "RouteHeaders::is_empty")]
    headers: RouteHeaders<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fr_inv_timer: Option<u32>,
}

#[derive(Serialize)]
struct RouteHeaders<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<FromHeader<'a>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    extra: String,
}

impl RouteHeaders<'_> {
    fn is_empty(&self) -> bool {
        self.from.is_none() && self.extra.is_empty()
    }
}

#[derive(Serialize)]
struct FromHeader<'a> {
    display: &'a str,
    uri: &'a str,
}

impl Dialect for Kamailio {
    fn decision(&self, decision: &Decision, generation: u64) -> Result<Document, MapError> {
        if let Some((code, reason, headers)) = final_reply(decision)? {
            return Document::of(&match decision {
                Decision::Refuse(r) => Doc::Refuse {
                    code,
                    reason,
                    headers,
                    rule: &r.rule,
                    generation,
                },
                _ => Doc::Reply {
                    code,
                    reason,
                    headers,
                    generation,
                },
            });
        }
        match decision {
            Decision::Continue => Document::of(&Doc::Continue { generation }),
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
                Document::of(&Doc::Relay {
                    rtjson: Rtjson {
                        version: "1.0",
                        routing,
                        routes,
                    },
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
    let mut extra = header_lines(&field("headers"), &t.headers)?;
    if let Some(pai) = &t.asserted_identity {
        line_safe(|| field("asserted_identity"), &pai.display)?;
        line_safe(|| field("asserted_identity"), &pai.uri)?;
        extra.push_str("P-Asserted-Identity: ");
        extra.push_str(&name_addr(&pai.display, &pai.uri));
        extra.push_str("\r\n");
    }
    let from = match &t.from {
        Some(f) => Some(FromHeader {
            display: line_safe(|| field("from"), &f.display)?,
            uri: line_safe(|| field("from"), &f.uri)?,
        }),
        None => None,
    };
    Ok(Route {
        label: line_safe(|| field("label"), &t.label)?,
        uri: line_safe(|| field("uri"), &t.uri)?,
        dst_uri: t
            .next_hop
            .as_deref()
            .map(|hop| line_safe(|| field("next_hop"), hop))
            .transpose()?,
        headers: RouteHeaders { from, extra },
        fr_inv_timer: t.ring_timeout_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{Fork, Header, NameAddr, Refusal, Reply};
    use serde_json::{Value, json};

    fn doc(d: &Decision) -> Result<Value, MapError> {
        Kamailio
            .decision(d, 3)
            .map(|doc| serde_json::from_str(doc.as_str()).unwrap())
    }

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
            "generation": 3,
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
        assert_eq!(doc(&d).unwrap(), golden);
    }

    #[test]
    fn serial_mode_and_continue() {
        let d = Decision::Fork(Fork {
            mode: ForkMode::Serial,
            targets: vec![client()],
        });
        assert_eq!(doc(&d).unwrap()["rtjson"]["routing"], "serial");
        assert_eq!(
            doc(&Decision::Continue).unwrap(),
            json!({ "action": "continue", "generation": 3 })
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
            doc(&d).unwrap(),
            json!({
                "action": "refuse",
                "generation": 3, "code": 403, "reason": "Forbidden", "rule": "CVW-41",
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
            doc(&d).unwrap_err().to_string(),
            "targets[1].headers[0].value: contains a line break or a NUL byte"
        );
        let r = Decision::Reply(Reply {
            code: 200,
            reason: "OK".into(),
            headers: vec![],
        });
        assert_eq!(
            doc(&r).unwrap_err().to_string(),
            "reply.code: status code 200 is outside 300..=699"
        );
        let e = Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets: vec![],
        });
        assert!(matches!(doc(&e), Err(MapError::EmptyFork)));
    }
}
