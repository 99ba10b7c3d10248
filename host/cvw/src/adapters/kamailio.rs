//! Kamailio's terms: an action plus, for forks, an rtjson document
//! (`rtjson_init_routes`/`rtjson_push_routes`).
//!
//! rtjson applies a route's headers and timers itself only in serial mode. A parallel fork
//! is built by the config from a [`BranchTable`] instead (Request-URI, next hop, and in
//! `branch_route` the extra headers, From and the per-branch ring timeout of CVW-51):
//! plain text read with `{s.select}` in the worker's own memory, because rtjson and
//! xavps put the document and every field into shared memory (an allocation under the
//! shm lock each, on every call). The JSON form still carries the rtjson document of
//! every fork, for configs of an operator's own that use rtjson.
//!
//! Over evapi ([`EvapiAnswer`]) the same decision travels in a layout the config slices
//! with string transformations instead of parsing JSON: Kamailio's evapi dispatcher is
//! one process for every call, and each jansson parse there is paid by every call.

use super::{Dialect, Document, MapError, final_reply, header_lines, line_safe, name_addr};
use crate::policy::model::{Decision, Fork, ForkMode, Target};
use base64::Engine as _;
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
                let routes = routes(fork)?;
                let branches = match fork.mode {
                    ForkMode::Parallel => Some(BranchTable::of(&routes)),
                    ForkMode::Serial => None,
                };
                Document::of(&Doc::Relay {
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

/// A decision as the evapi transport sends it to `event_route[evapi:message-received]`:
///
/// ```text
/// TTTTTTTTTT LLLLLLLLLL A NNNNNN <part 1: N bytes><part 2: the rest>
/// ```
/// `T`/`L` the suspended transaction's `$T(id_index)`/`$T(id_label)`, zero-padded to ten
/// digits (so the config takes them with `{s.substr}`); `A` the action:
/// - `P` parallel fork: part 1 the routes' [`BranchTable`];
/// - `S` serial fork: part 1 the rtjson document (rtjson applies each route's data);
/// - `R` final reply: part 1 `CCC reason`, part 2 the header lines to add;
/// - `C` continue: route as without Call via Work;
/// - `E` no decision: part 1 says why (the config logs it and routes as without Call
///   via Work).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvapiAnswer {
    Parallel(BranchTable),
    Serial {
        rtjson: String,
    },
    Reply {
        code: u16,
        reason: String,
        headers: String,
    },
    Continue,
    Error(String),
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
    fn of(routes: &[Route<'_>]) -> BranchTable {
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

/// evapi reads a client's frames into a 32 KB buffer: a bigger answer could never arrive
/// whole, so it is answered as an error (and the call routed without Call via Work).
pub const EVAPI_MAX_ANSWER: usize = 16 * 1024;

impl Kamailio {
    /// The evapi form of a route or failure decision.
    pub fn evapi_answer(&self, decision: &Decision) -> Result<EvapiAnswer, MapError> {
        if let Some((code, reason, headers)) = final_reply(decision)? {
            return Ok(EvapiAnswer::Reply {
                code,
                reason,
                headers,
            });
        }
        match decision {
            Decision::Continue => Ok(EvapiAnswer::Continue),
            Decision::Fork(fork) => {
                let routes = routes(fork)?;
                Ok(match fork.mode {
                    ForkMode::Parallel => EvapiAnswer::Parallel(BranchTable::of(&routes)),
                    ForkMode::Serial => EvapiAnswer::Serial {
                        rtjson: serde_json::to_string(&Rtjson::of(fork.mode, routes))
                            .map_err(MapError::Encode)?,
                    },
                })
            }
            Decision::Originate(_) => Err(MapError::Unsupported("originate")),
            _ => Err(MapError::Unsupported("unknown")),
        }
    }
}

impl EvapiAnswer {
    /// The frame payload for transaction `tindex:tlabel`. An answer too big for evapi's
    /// buffer becomes an error answer, so the call still goes on at once.
    pub fn encode(&self, tindex: u32, tlabel: u32) -> Vec<u8> {
        let (action, part1, part2): (char, std::borrow::Cow<str>, &str) = match self {
            EvapiAnswer::Parallel(branches) => ('P', branches.as_str().into(), ""),
            EvapiAnswer::Serial { rtjson } => ('S', rtjson.into(), ""),
            EvapiAnswer::Reply {
                code,
                reason,
                headers,
            } => ('R', format!("{code:03} {reason}").into(), headers),
            EvapiAnswer::Continue => ('C', "".into(), ""),
            EvapiAnswer::Error(why) => ('E', why.as_str().into(), ""),
        };
        let size = 32 + part1.len() + part2.len();
        if size > EVAPI_MAX_ANSWER {
            let why = format!("decision of {size} bytes exceeds evapi's {EVAPI_MAX_ANSWER}");
            return EvapiAnswer::Error(why).encode(tindex, tlabel);
        }
        let mut out = format!("{tindex:010} {tlabel:010} {action} {:06} ", part1.len());
        out.push_str(&part1);
        out.push_str(part2);
        out.into_bytes()
    }
}

/// A fork's targets as rtjson routes, checked for what a SIP header line can carry.
fn routes(fork: &Fork) -> Result<Vec<Route<'_>>, MapError> {
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
    fn of(mode: ForkMode, routes: Vec<Route<'a>>) -> Rtjson<'a> {
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

    /// The branch table read the way the config reads it: route `i` is field `i + 1`
    /// between `|`, its fields between `.`, base64 but for the ring timeout.
    fn read_table(table: &str) -> Vec<Vec<String>> {
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

    const DESK_EXTRA: &str =
        "X-CVW-Leg: desk\r\nP-Asserted-Identity: \"Bob \\\"B\\\"\" <sip:bob@corp.example>\r\n";

    /// The branch table of a fork to [`desk`] and [`client`], as the config reads it.
    fn desk_and_client_branches() -> Vec<Vec<String>> {
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

    /// The evapi answer to transaction 123:4567 of a fork to [`desk`] and [`client`].
    fn evapi_fork_frame(mode: ForkMode) -> String {
        let d = Decision::Fork(Fork {
            mode,
            targets: vec![desk(), client()],
        });
        let frame = Kamailio.evapi_answer(&d).unwrap().encode(123, 4567);
        String::from_utf8(frame).unwrap()
    }

    #[test]
    fn evapi_parallel_fork_is_a_branch_table_after_fixed_offsets() {
        let frame = evapi_fork_frame(ForkMode::Parallel);
        // What route[CVW_DECIDED] takes with {s.substr}.
        assert_eq!(&frame[..10], "0000000123");
        assert_eq!(&frame[11..21], "0000004567");
        assert_eq!(&frame[22..23], "P");
        let len: usize = frame[24..30].parse().unwrap();
        assert_eq!(frame.len(), 31 + len, "part 1 is all of it");
        assert_eq!(read_table(&frame[31..]), desk_and_client_branches());
    }

    #[test]
    fn evapi_serial_fork_is_an_rtjson_document() {
        let frame = evapi_fork_frame(ForkMode::Serial);
        assert_eq!(&frame[22..23], "S");
        let rtjson: Value = serde_json::from_str(&frame[31..]).unwrap();
        assert_eq!(rtjson["routing"], "serial");
        assert_eq!(rtjson["routes"][0]["fr_inv_timer"], 15000);
        assert_eq!(
            rtjson["routes"][1]["headers"]["from"]["uri"],
            "sip:+14255550000@corp.example"
        );
    }

    #[test]
    fn branch_table_layout_is_exact() {
        let d = Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets: vec![client()],
        });
        let Ok(EvapiAnswer::Parallel(branches)) = Kamailio.evapi_answer(&d) else {
            panic!("not a parallel fork");
        };
        assert_eq!(
            branches.as_str(),
            "1|c2lwOmFsaWNlQDEyNy4wLjAuMTo1MDcxO3RyYW5zcG9ydD10Y3A=..Y2xpZW50...\
             Q2FsbCB2aWEgV29yaw==.c2lwOisxNDI1NTU1MDAwMEBjb3JwLmV4YW1wbGU="
        );
    }

    #[test]
    fn evapi_reply_continue_and_oversized_answers() {
        let r = Decision::Reply(Reply {
            code: 486,
            reason: "Busy Here".into(),
            headers: vec![Header {
                name: "X-Why".into(),
                value: "dnd".into(),
            }],
        });
        let frame = Kamailio.evapi_answer(&r).unwrap().encode(1, 2);
        assert_eq!(
            String::from_utf8(frame).unwrap(),
            "0000000001 0000000002 R 000013 486 Busy HereX-Why: dnd\r\n"
        );
        let c = Kamailio.evapi_answer(&Decision::Continue).unwrap();
        assert_eq!(c.encode(7, 8), b"0000000007 0000000008 C 000000 ".to_vec());
        let mut huge = desk();
        huge.headers[0].value = "x".repeat(EVAPI_MAX_ANSWER);
        let d = Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets: vec![huge],
        });
        let frame = String::from_utf8(Kamailio.evapi_answer(&d).unwrap().encode(7, 8)).unwrap();
        assert!(frame.starts_with("0000000007 0000000008 E "), "{frame}");
        assert!(frame.ends_with("exceeds evapi's 16384"), "{frame}");
    }
}
