//! Kamailio's terms in JSON (janssonrpcc, http_client): an action plus, for forks, an
//! rtjson document (`rtjson_init_routes`/`rtjson_push_routes`). Also owns the pieces the
//! evapi layout ([`super::evapi`]) shares: the rtjson routes and the [`BranchTable`].
//!
//! rtjson applies a route's headers and timers itself only in serial mode. A parallel fork
//! is built by the config from a [`BranchTable`] instead (Request-URI, next hop, and in
//! `branch_route` the extra headers, From and the per-branch ring timeout of CVW-51):
//! plain text read with `{s.select}` in the worker's own memory, because rtjson and
//! xavps put the document and every field into shared memory (an allocation under the
//! shm lock each, on every call). The JSON form still carries the rtjson document of
//! every fork, for configs of an operator's own that use rtjson.

use super::{
    Dialect, MapError, ProxyAnswer, final_reply, header_lines, line_safe, name_addr,
    reply_action_json,
};
use crate::decision::Verdict;
use crate::policy::Outcome;
use crate::policy::model::{Decision, Fork, ForkMode, Target};
use base64::Engine as _;
use serde::Serialize;

/// Kamailio's JSON dialect (janssonrpcc, http_client).
#[derive(Debug, Clone, Copy, Default)]
pub struct KamailioJson;

/// What the config reads: `action`, then the fields of that action.
#[derive(Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
enum Answer<'a> {
    Relay {
        rtjson: Rtjson<'a>,
        /// Parallel forks only: what the config builds the fork from (see [`BranchTable`]).
        #[serde(skip_serializing_if = "Option::is_none")]
        branches: Option<BranchTable>,
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
pub(super) struct Rtjson<'a> {
    version: &'static str,
    routing: &'static str,
    routes: Vec<Route<'a>>,
}

/// One rtjson route. `label` is ours; rtjson ignores fields it does not know.
#[derive(Serialize)]
pub(super) struct Route<'a> {
    pub(super) label: &'a str,
    pub(super) uri: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) dst_uri: Option<&'a str>,
    #[serde(skip_serializing_if = "RouteHeaders::is_empty")]
    pub(super) headers: RouteHeaders<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) fr_inv_timer: Option<u32>,
}

#[derive(Serialize)]
pub(super) struct RouteHeaders<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) from: Option<FromHeader<'a>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(super) extra: String,
}

impl RouteHeaders<'_> {
    fn is_empty(&self) -> bool {
        self.from.is_none() && self.extra.is_empty()
    }
}

#[derive(Serialize)]
pub(super) struct FromHeader<'a> {
    pub(super) display: &'a str,
    pub(super) uri: &'a str,
}

impl Dialect for KamailioJson {
    fn encode(&self, answer: &Outcome<Verdict>) -> Result<ProxyAnswer, MapError> {
        match &answer.value {
            Verdict::Decision(d) => self.decision(d, answer.generation),
            Verdict::ReplyAction(a) => reply_action_json(*a, answer.generation),
        }
    }
}

impl KamailioJson {
    /// The document of a route or failure decision made by policy `generation`.
    pub fn decision(&self, decision: &Decision, generation: u64) -> Result<ProxyAnswer, MapError> {
        if let Some((code, reason, headers)) = final_reply(decision)? {
            return ProxyAnswer::json(&match decision {
                Decision::Refuse(r) => Answer::Refuse {
                    code,
                    reason,
                    headers,
                    rule: &r.rule,
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
                let routes = routes(fork)?;
                let branches = match fork.mode {
                    ForkMode::Parallel => Some(BranchTable::of(&routes)),
                    ForkMode::Serial => None,
                };
                ProxyAnswer::json(&Answer::Relay {
                    rtjson: Rtjson::of(fork.mode, routes),
                    branches,
                    generation,
                })
            }
            Decision::Originate(_) => Err(MapError::Unsupported("originate")),
            _ => Err(MapError::Unsupported("unknown")),
        }
    }
}

/// A parallel fork's routes (target, next hop, label, ring timeout, extra header lines,
/// From) as text that `route[CVW_PARALLEL]` and `branch_route[CVW_BRANCH]` read with
/// `{s.select}` and `{s.decode.base64}` alone, no offsets to compute in the config:
///
/// ```text
/// N|<route 0>|<route 1>|…
/// route = b64(uri).b64(dst_uri).b64(label).ring_ms.b64(extra).b64(from_display).b64(from_uri)
/// ```
/// `N` the number of routes; route `i` is field `i + 1` between `|`; in a route the fields
/// are separated by `.`, neither of which base64 uses; an empty field means none
/// (`ring_ms` is decimal milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BranchTable(String);

impl BranchTable {
    pub(super) fn of(routes: &[Route<'_>]) -> BranchTable {
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let mut table = routes.len().to_string();
        for r in routes {
            let from = r.headers.from.as_ref();
            let fields = [
                b64(r.uri),
                b64(r.dst_uri.unwrap_or("")),
                b64(r.label),
                r.fr_inv_timer.map(|ms| ms.to_string()).unwrap_or_default(),
                b64(&r.headers.extra),
                b64(from.map_or("", |f| f.display)),
                b64(from.map_or("", |f| f.uri)),
            ];
            table.push('|');
            table.push_str(&fields.join("."));
        }
        BranchTable(table)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A fork's targets as rtjson routes, checked for what a SIP header line can carry.
pub(super) fn routes(fork: &Fork) -> Result<Vec<Route<'_>>, MapError> {
    if fork.targets.is_empty() {
        return Err(MapError::EmptyFork);
    }
    fork.targets
        .iter()
        .enumerate()
        .map(|(i, t)| route(i, t))
        .collect()
}

impl<'a> Rtjson<'a> {
    pub(super) fn of(mode: ForkMode, routes: Vec<Route<'a>>) -> Rtjson<'a> {
        Rtjson {
            version: "1.0",
            routing: routing(mode),
            routes,
        }
    }
}

fn routing(mode: ForkMode) -> &'static str {
    match mode {
        ForkMode::Parallel => "parallel",
        ForkMode::Serial => "serial",
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
pub(super) mod tests {
    use super::*;
    use crate::policy::model::{Fork, Header, NameAddr, Refusal, Reply};
    use serde_json::{Value, json};

    fn doc(d: &Decision) -> Result<Value, MapError> {
        KamailioJson
            .decision(d, 3)
            .map(|doc| serde_json::from_str(doc.as_str()).unwrap())
    }

    pub(crate) fn desk() -> Target {
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

    pub(crate) fn client() -> Target {
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

    /// The worst case of `bounds::MAX_JSON_ANSWER`: 16 branches whose text is all quotes
    /// (two bytes each in JSON, and again in the base64 branch table): over 48 KiB, more
    /// than the 32 KB the bounds' documentation once promised for every answer. The fuzz
    /// target `decision_adapters` asserts the bound for any decision within bounds.
    #[test]
    fn the_largest_answer_within_bounds_fits() {
        use crate::policy::bounds::{self, MAX_DECISION_BYTES, MAX_JSON_ANSWER, MAX_TARGETS};
        let per_target = MAX_DECISION_BYTES / MAX_TARGETS;
        let uri = "sip:a@b";
        let label = "\"".repeat(bounds::MAX_LABEL);
        let value = "\"".repeat(per_target - uri.len() - label.len() - 1);
        let target = Target {
            label,
            uri: uri.into(),
            next_hop: None,
            from: None,
            asserted_identity: None,
            headers: vec![Header {
                name: "X".into(),
                value,
            }],
            ring_timeout_ms: Some(bounds::MAX_RING_TIMEOUT_MS),
        };
        let d = Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets: vec![target; MAX_TARGETS],
        });
        assert_eq!(bounds::check(&d), Ok(()));
        let size = KamailioJson.decision(&d, u64::MAX).unwrap().as_str().len();
        assert!(size > 48 * 1024 && size <= MAX_JSON_ANSWER, "{size} bytes");
        let opensips = super::super::OpenSipsJson.decision(&d, u64::MAX).unwrap();
        assert!(opensips.as_str().len() <= MAX_JSON_ANSWER);
    }

    /// The branch table read the way the config reads it: route `i` is field `i + 1`
    /// between `|`, its fields between `.`, base64 but for the ring timeout.
    pub(crate) fn read_table(table: &str) -> Vec<Vec<String>> {
        let mut routes = table.split('|');
        let count: usize = routes.next().unwrap().parse().unwrap();
        let routes: Vec<Vec<String>> = routes
            .map(|r| {
                r.split('.')
                    .enumerate()
                    .map(|(k, f)| match k {
                        3 => f.to_owned(),
                        _ => {
                            let bytes = base64::engine::general_purpose::STANDARD.decode(f);
                            String::from_utf8(bytes.unwrap()).unwrap()
                        }
                    })
                    .collect()
            })
            .collect();
        assert_eq!(routes.len(), count);
        routes
    }

    pub(crate) const DESK_EXTRA: &str =
        "X-CVW-Leg: desk\r\nP-Asserted-Identity: \"Bob \\\"B\\\"\" <sip:bob@corp.example>\r\n";

    /// The branch table of a fork to [`desk`] and [`client`], as the config reads it.
    pub(crate) fn desk_and_client_branches() -> Vec<Vec<String>> {
        vec![
            vec![
                "sip:+14255550101@pbx.corp.example;user=phone",
                "sip:127.0.0.1:5090",
                "desk",
                "15000",
                DESK_EXTRA,
                "",
                "",
            ],
            vec![
                "sip:alice@127.0.0.1:5071;transport=tcp",
                "",
                "client",
                "",
                "",
                "Call via Work",
                "sip:+14255550000@corp.example",
            ],
        ]
        .into_iter()
        .map(|route| route.into_iter().map(String::from).collect())
        .collect()
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
                        "headers": { "extra": DESK_EXTRA },
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
        let mut doc = doc(&d).unwrap();
        let branches = doc["branches"].take();
        doc.as_object_mut().unwrap().remove("branches");
        assert_eq!(doc, golden);
        assert_eq!(
            read_table(branches.as_str().unwrap()),
            desk_and_client_branches()
        );
    }

    #[test]
    fn serial_mode_and_continue() {
        let d = Decision::Fork(Fork {
            mode: ForkMode::Serial,
            targets: vec![client()],
        });
        let serial = doc(&d).unwrap();
        assert_eq!(serial["rtjson"]["routing"], "serial");
        assert_eq!(serial.get("branches"), None, "rtjson applies serial routes");
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
