//! What the fuzz targets share: panics that product code catches on purpose, a decider
//! for the decision service, policy decisions as `arbitrary` makes them, and the checks
//! every proxy answer must pass (no header line break, codes in range, bounded size).
//!
//! The checks read the answers the way the proxies' configs do (`docs/evapi-answer.md`,
//! `examples/*/`), so they do not trust the encoders they check.

use arbitrary::{Arbitrary, Result as ArbResult, Unstructured};
use base64::Engine as _;
use cvw::decision::dialect::{KamailioEvapi, NativeAnswer, NativeBranch, ProxyAnswer};
use cvw::decision::{Decider, Verdict};
use cvw::message::SipRequest;
use cvw::policy::Outcome;
use cvw::policy::bounds;
use cvw::policy::model::{
    BranchReply, Decision, Flow, Fork, ForkMode, Header, Leg, NameAddr, OriginationPlan, Refusal,
    Reply, ReplyAction, RequestContext, Target,
};
use serde_json::Value;
use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs one input. `cvw-sip` parses with rsip behind `catch_unwind` (a parser bug is a
/// refused message, by design), but libfuzzer-sys' panic hook aborts on every panic,
/// caught or not: this hook only remembers the message, and a panic that escapes `body`
/// is printed and aborts, so libFuzzer saves it as a crash. With
/// `CVW_FUZZ_ABORT_ON_CAUGHT=1` caught panics abort too (to look for rsip's bugs).
pub fn run(body: impl FnOnce()) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        if std::env::var_os("CVW_FUZZ_ABORT_ON_CAUGHT").is_some() {
            return;
        }
        std::panic::set_hook(Box::new(|info| {
            LAST_PANIC.with(|p| *p.borrow_mut() = info.to_string());
        }));
    });
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).is_err() {
        LAST_PANIC.with(|p| eprintln!("uncaught panic: {}", p.borrow()));
        std::process::abort();
    }
}

/// Forks to a desk phone and to every contact a route call brings, cancels a branch on
/// 181: the shape of the default policy's answers, so a decoded call reaches every
/// encoder.
pub struct Echo;

fn decided<T>(value: T) -> Outcome<T> {
    Outcome {
        value,
        generation: 1,
        failure: None,
    }
}

impl Decider for Echo {
    fn on_request(&self, req: &SipRequest, ctx: &RequestContext) -> Outcome<Decision> {
        let mut targets = vec![Target {
            label: "desk".into(),
            uri: req.request_uri().to_owned(),
            next_hop: None,
            from: Some(req.from().clone()),
            asserted_identity: None,
            headers: vec![],
            ring_timeout_ms: Some(15000),
        }];
        targets.extend(ctx.contacts.iter().map(|c| Target {
            label: "client".into(),
            uri: c.uri.clone(),
            next_hop: c.next_hop.clone(),
            from: None,
            asserted_identity: None,
            headers: vec![],
            ring_timeout_ms: None,
        }));
        decided(Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets,
        }))
    }
    fn on_reply(&self, _: &SipRequest, r: &BranchReply) -> Outcome<ReplyAction> {
        decided(if r.code == 181 {
            ReplyAction::CancelBranch
        } else {
            ReplyAction::Continue
        })
    }
    fn on_failure(&self, _: &SipRequest, r: &BranchReply) -> Outcome<Decision> {
        decided(Decision::Reply(Reply {
            code: r.code,
            reason: r.reason.clone(),
            headers: r.headers.clone(),
        }))
    }
}

/// Answers every hook with one fixed decision: a policy's answer, as the decision service
/// would get it from the runtime.
pub struct Fixed(pub Decision);

impl Decider for Fixed {
    fn on_request(&self, _: &SipRequest, _: &RequestContext) -> Outcome<Decision> {
        decided(self.0.clone())
    }
    fn on_reply(&self, _: &SipRequest, _: &BranchReply) -> Outcome<ReplyAction> {
        decided(ReplyAction::Continue)
    }
    fn on_failure(&self, _: &SipRequest, _: &BranchReply) -> Outcome<Decision> {
        decided(self.0.clone())
    }
}

/// Text as a policy could return it: mostly short runs of the characters that matter to
/// SIP and JSON (CR, LF, NUL, quotes, brackets, commas, Unicode line ends), whole
/// tokens, any `char`, and long runs, so a short input reaches the size limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

const ALPHABET: &[char] = &[
    'a', 'b', 'z', 'A', '0', '9', '+', '-', '.', '@', ':', ';', '=', ' ', '\t', '\r', '\n', '\0',
    '"', '\\', '<', '>', ',', '/', '%', '\u{7f}', '\u{85}', '\u{2028}', 'é', '€',
];
const WORDS: &[&str] = &[
    "sip:alice@corp.example",
    "sip:+14255550101@127.0.0.1:5090;transport=tcp",
    "\r\n",
    "\r\nVia: SIP/2.0/UDP evil\r\n",
    "\r\n\r\n",
    "X-CVW-Leg",
    "P-Asserted-Identity",
    "Content-Length",
    "\"Alice\" <sip:a@b>",
    ";tag=1",
    "%0d%0a",
    "\u{feff}",
];

impl<'a> Arbitrary<'a> for Text {
    fn arbitrary(u: &mut Unstructured<'a>) -> ArbResult<Self> {
        let mut s = String::new();
        let pieces = u.int_in_range(0..=6)?;
        for _ in 0..pieces {
            match u.int_in_range(0u8..=9)? {
                0..=4 => {
                    for _ in 0..u.int_in_range(1..=8)? {
                        s.push(*u.choose(ALPHABET)?);
                    }
                }
                5 | 6 => s.push_str(u.choose(WORDS)?),
                7 => s.push(char::arbitrary(u)?),
                8 => {
                    let c = *u.choose(ALPHABET)?;
                    let n = u.int_in_range(0..=1100)?;
                    s.extend(std::iter::repeat_n(c, n));
                }
                _ => s.push_str(<&str>::arbitrary(u)?),
            }
        }
        Ok(Text(s))
    }
}

/// A status code: the edges of every range that matters, or any `u16`.
#[derive(Debug, Clone, Copy)]
pub struct Code(pub u16);

impl<'a> Arbitrary<'a> for Code {
    fn arbitrary(u: &mut Unstructured<'a>) -> ArbResult<Self> {
        const EDGES: &[u16] = &[
            0,
            99,
            100,
            180,
            181,
            199,
            200,
            299,
            300,
            302,
            399,
            400,
            403,
            486,
            603,
            699,
            700,
            999,
            1000,
            u16::MAX,
        ];
        Ok(Code(if u.ratio(3, 4)? {
            *u.choose(EDGES)?
        } else {
            u16::arbitrary(u)?
        }))
    }
}

#[derive(Debug, Arbitrary)]
struct AHeader {
    name: Text,
    value: Text,
}

#[derive(Debug, Arbitrary)]
struct ANameAddr {
    display: Text,
    uri: Text,
}

#[derive(Debug, Arbitrary)]
struct ATarget {
    label: Text,
    uri: Text,
    next_hop: Option<Text>,
    from: Option<ANameAddr>,
    asserted_identity: Option<ANameAddr>,
    headers: Vec<AHeader>,
    ring_timeout_ms: Option<u32>,
}

#[derive(Debug, Arbitrary)]
struct ALeg {
    uri: Text,
    shows: ANameAddr,
    ring_timeout_ms: u32,
}

#[derive(Debug, Arbitrary)]
enum ADecision {
    Continue,
    Reply {
        code: Code,
        reason: Text,
        headers: Vec<AHeader>,
    },
    Refuse {
        code: Code,
        reason: Text,
        explanation: Text,
        rule: Text,
    },
    Fork {
        serial: bool,
        targets: Vec<ATarget>,
        /// Copies of the last target, to reach the target limit with a short input.
        repeat_last: u8,
    },
    Originate {
        user: Text,
        callback: ALeg,
        callee: ALeg,
        flow_i: bool,
        max_duration_s: u32,
    },
}

fn headers(h: Vec<AHeader>) -> Vec<Header> {
    h.into_iter()
        .map(|h| Header {
            name: h.name.0,
            value: h.value.0,
        })
        .collect()
}

fn name_addr(n: ANameAddr) -> NameAddr {
    NameAddr {
        display: n.display.0,
        uri: n.uri.0,
    }
}

fn leg(l: ALeg) -> Leg {
    Leg {
        uri: l.uri.0,
        shows: name_addr(l.shows),
        ring_timeout_ms: l.ring_timeout_ms,
    }
}

/// Any decision a policy could return: the contract's types carry no limits of their own.
pub fn decision(u: &mut Unstructured<'_>) -> ArbResult<Decision> {
    Ok(match ADecision::arbitrary(u)? {
        ADecision::Continue => Decision::Continue,
        ADecision::Reply {
            code,
            reason,
            headers: h,
        } => Decision::Reply(Reply {
            code: code.0,
            reason: reason.0,
            headers: headers(h),
        }),
        ADecision::Refuse {
            code,
            reason,
            explanation,
            rule,
        } => Decision::Refuse(Refusal {
            code: code.0,
            reason: reason.0,
            explanation: explanation.0,
            rule: rule.0,
        }),
        ADecision::Fork {
            serial,
            targets,
            repeat_last,
        } => {
            let mut targets: Vec<Target> = targets
                .into_iter()
                .map(|t| Target {
                    label: t.label.0,
                    uri: t.uri.0,
                    next_hop: t.next_hop.map(|t| t.0),
                    from: t.from.map(name_addr),
                    asserted_identity: t.asserted_identity.map(name_addr),
                    headers: headers(t.headers),
                    ring_timeout_ms: t.ring_timeout_ms,
                })
                .collect();
            if let Some(last) = targets.last().cloned() {
                targets.extend(std::iter::repeat_n(last, usize::from(repeat_last % 24)));
            }
            Decision::Fork(Fork {
                mode: if serial {
                    ForkMode::Serial
                } else {
                    ForkMode::Parallel
                },
                targets,
            })
        }
        ADecision::Originate {
            user,
            callback,
            callee,
            flow_i,
            max_duration_s,
        } => Decision::Originate(OriginationPlan {
            user: user.0,
            callback: leg(callback),
            callee: leg(callee),
            flow: if flow_i { Flow::FlowI } else { Flow::FlowIv },
            max_duration_s,
        }),
    })
}

/// Whether the runtime lets `decision` through from `on-request`: the contract's codes
/// and a non-empty fork (`policy::contract`), then every bound (`policy::bounds`).
pub fn accepted_by_runtime(decision: &Decision) -> bool {
    let in_range = match decision {
        Decision::Reply(r) => (300..=699).contains(&r.code),
        Decision::Refuse(r) => (400..=699).contains(&r.code),
        Decision::Fork(f) => !f.targets.is_empty(),
        _ => true,
    };
    in_range && bounds::check(decision).is_ok()
}

/// No byte that ends a SIP line or a C string.
pub fn assert_one_line(what: &str, text: &str) {
    assert!(
        !text.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0),
        "{what}: a line break or NUL in {text:?}"
    );
}

/// CRLF-terminated header lines as `append_hf` takes them: each `token: value`, no other
/// CR, LF or NUL.
pub fn assert_header_lines(what: &str, block: &str) {
    if block.is_empty() {
        return;
    }
    let body = block
        .strip_suffix("\r\n")
        .unwrap_or_else(|| panic!("{what}: header block {block:?} does not end in CRLF"));
    for line in body.split("\r\n") {
        assert_one_line(what, line);
        let (name, _) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("{what}: header line {line:?} has no name"));
        let token = |b: u8| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
        assert!(
            !name.is_empty() && name.bytes().all(token),
            "{what}: header name {name:?} in {block:?} is not a token"
        );
    }
}

fn assert_code(what: &str, code: u64, min: u64) {
    assert!(
        (min..=699).contains(&code),
        "{what}: status code {code} outside {min}..=699"
    );
}

fn str_field<'v>(doc: &'v Value, key: &str) -> Option<&'v str> {
    doc.get(key).and_then(Value::as_str)
}

/// Every string of an rtjson route or an OpenSIPS route that goes on a SIP line.
fn assert_route(what: &str, route: &Value) {
    for key in ["label", "uri", "dst_uri", "from_display", "from_uri"] {
        if let Some(s) = str_field(route, key) {
            assert_one_line(what, s);
        }
    }
    match route.get("headers") {
        Some(Value::String(block)) => assert_header_lines(what, block),
        Some(h @ Value::Object(_)) => {
            if let Some(block) = str_field(h, "extra") {
                assert_header_lines(what, block);
            }
            if let Some(from) = h.get("from") {
                for key in ["display", "uri"] {
                    if let Some(s) = str_field(from, key) {
                        assert_one_line(what, s);
                    }
                }
            }
        }
        Some(other) => panic!("{what}: route headers {other}"),
        None => {}
    }
}

/// `n|uri.dst.label.timer.extra.display.from_uri|…`, fields base64 (`kamailio.cfg`
/// `route[CVW_BRANCH]` reads them with `{s.select}` and `{s.decode.base64}`).
pub fn assert_branch_table(what: &str, table: &str) {
    let mut parts = table.split('|');
    let n: usize = parts
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{what}: branch table {table:?} has no count"));
    let rows: Vec<&str> = parts.collect();
    assert_eq!(rows.len(), n, "{what}: branch count of {table:?}");
    for row in rows {
        let fields: Vec<&str> = row.split('.').collect();
        assert_eq!(fields.len(), 7, "{what}: branch fields of {row:?}");
        let text = |i: usize| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(fields[i])
                .unwrap_or_else(|e| panic!("{what}: field {i} of {row:?}: {e}"));
            String::from_utf8(bytes).unwrap_or_else(|_| panic!("{what}: field {i} not UTF-8"))
        };
        for i in [0, 1, 2, 5, 6] {
            assert_one_line(what, &text(i));
        }
        assert!(
            fields[3].bytes().all(|b| b.is_ascii_digit()),
            "{what}: ring timeout {:?}",
            fields[3]
        );
        assert_header_lines(what, &text(4));
    }
}

/// A Kamailio or OpenSIPS JSON answer, read as their configs read it.
pub fn assert_json_answer(what: &str, doc: &str) {
    let v: Value = serde_json::from_str(doc)
        .unwrap_or_else(|e| panic!("{what}: answer is not JSON ({e}): {doc}"));
    let action = str_field(&v, "action").unwrap_or_else(|| panic!("{what}: no action"));
    match action {
        "continue" | "cancel-branch" => {}
        "reply" | "refuse" => {
            let code = v.get("code").and_then(Value::as_u64).unwrap_or(0);
            assert_code(what, code, if action == "refuse" { 400 } else { 300 });
            assert_one_line(what, str_field(&v, "reason").unwrap_or(""));
            assert_header_lines(what, str_field(&v, "headers").unwrap_or(""));
        }
        "relay" => {
            let routes = v
                .get("rtjson")
                .and_then(|r| r.get("routes"))
                .or_else(|| v.get("routes"))
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("{what}: relay without routes"));
            assert!(!routes.is_empty(), "{what}: relay to no route");
            for route in routes {
                assert_route(what, route);
            }
            if let Some(table) = str_field(&v, "branches") {
                assert_branch_table(what, table);
            }
        }
        other => panic!("{what}: unknown action {other:?}"),
    }
}

/// `v1 TTTTTTTTTT LLLLLLLLLL A NNNNNN <part 1><part 2>` (`docs/evapi-answer.md`).
pub fn assert_evapi_answer(doc: &ProxyAnswer, dialect: KamailioEvapi) {
    let what = "evapi";
    let s = doc.as_str();
    assert!(
        s.len() <= cvw::decision::dialect::evapi::MAX_ANSWER,
        "evapi answer of {} bytes",
        s.len()
    );
    let head = s
        .get(..34)
        .unwrap_or_else(|| panic!("evapi answer {s:?} is short"));
    let expected = format!("v1 {:010} {:010} ", dialect.tindex, dialect.tlabel);
    assert_eq!(&head[..25], expected, "evapi head of {s:?}");
    let action = &head[25..26];
    assert_eq!(&head[26..27], " ");
    let n: usize = head[27..33]
        .parse()
        .unwrap_or_else(|_| panic!("evapi part-1 length in {s:?}"));
    assert_eq!(&head[33..34], " ");
    let part1 = s
        .get(34..34 + n)
        .unwrap_or_else(|| panic!("evapi part 1 of {s:?}"));
    let part2 = &s[34 + n..];
    match action {
        "P" => {
            assert_branch_table(what, part1);
            assert!(part2.is_empty());
        }
        "S" => {
            let rtjson: Value = serde_json::from_str(part1)
                .unwrap_or_else(|e| panic!("evapi rtjson not JSON ({e}): {part1}"));
            let routes = rtjson.get("routes").and_then(Value::as_array);
            for route in routes.unwrap_or_else(|| panic!("evapi rtjson without routes")) {
                assert_route(what, route);
            }
            assert!(part2.is_empty());
        }
        "R" => {
            let code: u64 = part1
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("evapi reply code in {part1:?}"));
            assert_code(what, code, 300);
            assert_eq!(part1.get(3..4), Some(" "), "evapi reply {part1:?}");
            assert_one_line(what, &part1[4..]);
            assert_header_lines(what, part2);
        }
        "C" => assert!(part1.is_empty() && part2.is_empty()),
        // The config logs the reason with xlog: one line.
        "E" => {
            assert_one_line(what, part1);
            assert!(part2.is_empty());
        }
        other => panic!("evapi action {other:?} in {s:?}"),
    }
}

/// What `cvw.so` applies: the same rules without a document.
pub fn assert_native_answer(answer: &NativeAnswer) {
    let what = "native";
    match answer {
        NativeAnswer::Continue => {}
        NativeAnswer::Reply {
            code,
            reason,
            headers,
        } => {
            assert_code(what, u64::from(*code), 300);
            assert_one_line(what, reason);
            assert_header_lines(what, headers);
        }
        NativeAnswer::Fork { branches, .. } => {
            assert!(!branches.is_empty(), "native fork to no branch");
            for NativeBranch {
                label,
                uri,
                dst_uri,
                headers,
                from,
                ..
            } in branches
            {
                for s in [label, uri]
                    .into_iter()
                    .chain(dst_uri)
                    .chain(from.iter().flat_map(|(d, u)| [d, u]))
                {
                    assert_one_line(what, s);
                }
                assert_header_lines(what, headers);
            }
        }
    }
}

/// A verdict as the decision service hands it to a dialect.
pub fn outcome(decision: Decision) -> Outcome<Verdict> {
    decided(Verdict::Decision(decision))
}
