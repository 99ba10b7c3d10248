//! Kamailio's evapi answer layout: what the evapi transport sends back to
//! `event_route[evapi:message-received]`, specified byte for byte in
//! `docs/evapi-answer.md` (whose examples the tests below check, so neither can drift).
//!
//! ```text
//! v1 TTTTTTTTTT LLLLLLLLLL A NNNNNN <part 1: N bytes><part 2: the rest>
//! ```
//! A layout the config slices with string transformations instead of parsing JSON:
//! Kamailio's evapi dispatcher is one process for every call, and each jansson parse there
//! is paid by every call. The leading version mark lets the config refuse a layout it was
//! not written for instead of misreading it.
//!
//! Owns the layout and its size limit; the rtjson routes and the branch table inside it
//! are [`super::kamailio`]'s, the connection and the events [`crate::decision::transport::evapi`]'s.

use super::kamailio::{BranchTable, Rtjson, routes};
use super::{Dialect, MapError, ProxyAnswer, final_reply};
use crate::decision::Verdict;
use crate::policy::model::{Decision, ForkMode};
use crate::policy::{Outcome, bounds};
use std::fmt::Write as _;

/// The layout version, the answer's first field. A config checks it before reading on.
pub const VERSION: &str = "v1";

/// evapi reads a client's frames into a 32 KB buffer: a bigger answer could never arrive
/// whole, so it is answered as an error (and the call routed without Call via Work).
pub const MAX_ANSWER: usize = 16 * 1024;

/// Bytes before part 1: `v1 TTTTTTTTTT LLLLLLLLLL A NNNNNN `.
const HEADER: usize = 34;

/// The evapi dialect for one suspended transaction (`$T(id_index)`/`$T(id_label)`), which
/// the answer names so that the config can `t_continue` it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KamailioEvapi {
    pub tindex: u32,
    pub tlabel: u32,
}

impl KamailioEvapi {
    pub fn new(tindex: u32, tlabel: u32) -> Self {
        Self { tindex, tlabel }
    }

    /// The answer for a route or failure decision: `P` parallel fork (part 1 the
    /// [`BranchTable`]), `S` serial fork (part 1 the rtjson document), `R` final reply
    /// (part 1 `CCC reason`, part 2 the header lines), `C` continue.
    pub fn decision(&self, decision: &Decision) -> Result<ProxyAnswer, MapError> {
        if let Some((code, reason, headers)) = final_reply(decision)? {
            return Ok(self.layout('R', &format!("{code:03} {reason}"), &headers));
        }
        match decision {
            Decision::Continue => Ok(self.layout('C', "", "")),
            Decision::Fork(fork) => {
                let routes = routes(fork)?;
                Ok(match fork.mode {
                    ForkMode::Parallel => self.layout('P', BranchTable::of(&routes).as_str(), ""),
                    ForkMode::Serial => {
                        let rtjson = serde_json::to_string(&Rtjson::of(fork.mode, routes))
                            .map_err(MapError::Encode)?;
                        self.layout('S', &rtjson, "")
                    }
                })
            }
            Decision::Originate(_) => Err(MapError::Unsupported("originate")),
            _ => Err(MapError::Unsupported("unknown")),
        }
    }

    /// An `E` answer: no decision, part 1 says why (the config logs it and routes as
    /// without Call via Work). One printable line: `why` may quote what the caller sent
    /// (rsip's errors quote the message), and a line break would forge a log line.
    pub fn error(&self, why: &str) -> ProxyAnswer {
        self.layout('E', &bounds::printable(why, bounds::MAX_LOG_LINE), "")
    }

    /// An answer too big for evapi's buffer becomes an error answer, so the call still goes
    /// on at once.
    fn layout(&self, action: char, part1: &str, part2: &str) -> ProxyAnswer {
        let size = HEADER + part1.len() + part2.len();
        if size > MAX_ANSWER {
            return self.error(&format!(
                "decision of {size} bytes exceeds evapi's {MAX_ANSWER}"
            ));
        }
        let mut out = String::with_capacity(size);
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "{VERSION} {:010} {:010} {action} {:06} ",
            self.tindex,
            self.tlabel,
            part1.len()
        );
        out.push_str(part1);
        out.push_str(part2);
        ProxyAnswer(out)
    }
}

impl Dialect for KamailioEvapi {
    fn encode(&self, answer: &Outcome<Verdict>) -> Result<ProxyAnswer, MapError> {
        match &answer.value {
            Verdict::Decision(d) => self.decision(d),
            // The example config asks the reply hook over HTTP, never over evapi.
            Verdict::ReplyAction(_) => Err(MapError::Unsupported("reply-action")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kamailio::tests::{client, desk, desk_and_client_branches, read_table};
    use super::*;
    use crate::policy::model::{Fork, Header, Refusal, Reply};
    use serde_json::Value;

    /// The spec the examples are read from: a change to either shows here.
    const SPEC: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/evapi-answer.md"
    ));

    /// The examples of the spec: fenced blocks opened with `evapi-answer <name>`, each
    /// holding one answer as a JSON string (so CR, LF and a trailing space are visible).
    fn spec_examples() -> Vec<(String, String)> {
        let mut examples = Vec::new();
        let mut lines = SPEC.lines();
        while let Some(line) = lines.next() {
            let Some(name) = line.strip_prefix("```evapi-answer ") else {
                continue;
            };
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            let text: String = serde_json::from_str(&body.join("\n"))
                .unwrap_or_else(|e| panic!("example {name}: not one JSON string: {e}"));
            examples.push((name.trim().to_owned(), text));
        }
        examples
    }

    /// The answer each example of the spec shows, made by the encoder.
    fn encoded(name: &str) -> String {
        let fork = |mode, targets| Decision::Fork(Fork { mode, targets });
        let answer = match name {
            "parallel-fork" => KamailioEvapi::new(123, 4567)
                .decision(&fork(ForkMode::Parallel, vec![client()]))
                .unwrap(),
            "serial-fork" => KamailioEvapi::new(123, 4567)
                .decision(&fork(ForkMode::Serial, vec![client()]))
                .unwrap(),
            "reply" => KamailioEvapi::new(1, 2)
                .decision(&Decision::Reply(Reply {
                    code: 486,
                    reason: "Busy Here".into(),
                    headers: vec![Header {
                        name: "X-Why".into(),
                        value: "dnd".into(),
                    }],
                }))
                .unwrap(),
            "refuse" => KamailioEvapi::new(1, 2)
                .decision(&Decision::Refuse(Refusal {
                    code: 403,
                    reason: "Forbidden".into(),
                    explanation: "Hold is not available on a \"Call via Work\" call.".into(),
                    rule: "CVW-41".into(),
                }))
                .unwrap(),
            "continue" => KamailioEvapi::new(7, 8)
                .decision(&Decision::Continue)
                .unwrap(),
            "error" => KamailioEvapi::new(5, 77).error("params.msg: missing"),
            other => panic!("the spec shows an example the tests do not know: {other}"),
        };
        answer.into_string()
    }

    #[test]
    fn every_example_of_the_spec_is_what_the_encoder_writes_byte_for_byte() {
        let examples = spec_examples();
        let names: Vec<&str> = examples.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "parallel-fork",
                "serial-fork",
                "reply",
                "refuse",
                "continue",
                "error"
            ],
            "docs/evapi-answer.md shows one example of each action"
        );
        for (name, text) in &examples {
            assert_eq!(&encoded(name), text, "example {name}");
        }
    }

    /// The answer to transaction 123:4567 of a fork to [`desk`] and [`client`].
    fn fork_answer(mode: ForkMode) -> String {
        let d = Decision::Fork(Fork {
            mode,
            targets: vec![desk(), client()],
        });
        KamailioEvapi::new(123, 4567)
            .decision(&d)
            .unwrap()
            .into_string()
    }

    #[test]
    fn parallel_fork_is_a_branch_table_after_fixed_offsets() {
        let answer = fork_answer(ForkMode::Parallel);
        // What the config checks, then takes with {s.substr} once it dropped the mark.
        assert_eq!(&answer[..3], "v1 ");
        let answer = &answer[3..];
        assert_eq!(&answer[..10], "0000000123");
        assert_eq!(&answer[11..21], "0000004567");
        assert_eq!(&answer[22..23], "P");
        let len: usize = answer[24..30].parse().unwrap();
        assert_eq!(answer.len(), 31 + len, "part 1 is all of it");
        assert_eq!(read_table(&answer[31..]), desk_and_client_branches());
    }

    #[test]
    fn serial_fork_is_an_rtjson_document() {
        let answer = fork_answer(ForkMode::Serial);
        assert_eq!(&answer[25..26], "S");
        let rtjson: Value = serde_json::from_str(&answer[34..]).unwrap();
        assert_eq!(rtjson["routing"], "serial");
        assert_eq!(rtjson["routes"][0]["fr_inv_timer"], 15000);
        assert_eq!(
            rtjson["routes"][1]["headers"]["from"]["uri"],
            "sip:+14255550000@corp.example"
        );
    }

    #[test]
    fn an_oversized_answer_is_an_error_answer() {
        let mut huge = desk();
        huge.headers[0].value = "x".repeat(MAX_ANSWER);
        let d = Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets: vec![huge],
        });
        let answer = KamailioEvapi::new(7, 8).decision(&d).unwrap().into_string();
        assert!(
            answer.starts_with("v1 0000000007 0000000008 E "),
            "{answer}"
        );
        assert!(answer.ends_with("exceeds evapi's 16384"), "{answer}");
    }

    /// Found by the fuzz target `evapi_event` (fuzz/corpus/evapi_event/crash-0d5d24c9…): a
    /// message with bare LF line ends made rsip's error quote it, line breaks and all, into
    /// the `E` answer the config logs.
    #[test]
    fn an_error_answer_is_one_printable_line() {
        let why = "params.msg: not a SIP request: could not tokenize: \nVia: x\r\nL_FORGED";
        let answer = KamailioEvapi::new(3, 77).error(why).into_string();
        assert!(!answer.contains(['\r', '\n']), "{answer:?}");
        assert!(answer.ends_with("tokenize: \u{fffd}Via: x\u{fffd}\u{fffd}L_FORGED"));
        let long = KamailioEvapi::new(3, 77)
            .error(&"y".repeat(5000))
            .into_string();
        assert!(long.len() < 1100, "cut to a log line: {}", long.len());
    }

    #[test]
    fn a_decision_the_proxy_cannot_carry_out_is_an_error_not_an_answer() {
        let e = KamailioEvapi::new(1, 2).decision(&Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets: vec![],
        }));
        assert!(matches!(e, Err(MapError::EmptyFork)));
    }
}
