//! The bounds of what a policy hands the host, enforced where it enters (the runtime, right
//! after a hook returns): every field of a decision and the whole decision have limits,
//! documented in `wit/policy-1.0.0/types.wit`, so that no adapter, proxy or phone ever
//! sees a decision a hostile or buggy policy could make unbounded or inject SIP with; and
//! the text a policy has printed or logged (`describe`, `log`) is made printable and
//! short.
//!
//! Owns the limits and the checks. Does not own which decision fits which hook
//! (`contract.rs`) nor what happens to a refused decision (the failure mode, `runtime.rs`).

use super::model::{Decision, Fork, Header, Leg, NameAddr, OriginationPlan, PolicyInfo, Target};

/// Branches of one fork: a user's desk phone and soft clients, with room to spare.
pub const MAX_TARGETS: usize = 16;
/// Extra headers on one branch or reply.
pub const MAX_HEADERS: usize = 16;
pub const MAX_HEADER_NAME: usize = 64;
pub const MAX_HEADER_VALUE: usize = 1024;
/// A Request-URI, next hop or identity URI.
pub const MAX_URI: usize = 512;
/// A reason phrase.
pub const MAX_REASON: usize = 128;
/// A refusal's explanation (a Warning header for the person).
pub const MAX_EXPLANATION: usize = 512;
/// A target's label, a refusal's rule.
pub const MAX_LABEL: usize = 64;
pub const MAX_DISPLAY: usize = 128;
/// Five minutes: longer than any phone rings (RFC 3261 Timer C is "> 3 min").
pub const MAX_RING_TIMEOUT_MS: u32 = 300_000;
/// One day: the toll-fraud bound of a two-leg call.
pub const MAX_DURATION_S: u32 = 86_400;
/// All the text of one decision. It bounds every proxy answer: the evapi answer may take
/// 16 KiB of the 32 KB Kamailio's evapi reads in one frame (a bigger one becomes an `E`
/// answer, `decision::dialect::evapi::MAX_ANSWER`), and a JSON answer stays within
/// [`MAX_JSON_ANSWER`].
pub const MAX_DECISION_BYTES: usize = 16 * 1024;
/// The most a JSON answer (Kamailio JSON, OpenSIPS JSON) to a decision within these
/// bounds takes: JSON escaping at most doubles the text (control characters other than a
/// header value's tab are refused; `\t`, `\"` and `\\` take two bytes), Kamailio's answer
/// carries the text once more as the base64 branch table (4/3), and each branch adds its
/// field names: 2 + 4/3 times [`MAX_DECISION_BYTES`] plus under 4 KiB. Not a check: what
/// the checks above guarantee, shown by the fuzz target `decision_adapters` and by
/// `decision::dialect::kamailio`'s test `the_largest_answer_within_bounds_fits`.
pub const MAX_JSON_ANSWER: usize = 64 * 1024;

/// What `describe` may say, after [`printable`].
pub const MAX_INFO_NAME: usize = 64;
pub const MAX_INFO_VERSION: usize = 32;
pub const MAX_INFO_DESCRIPTION: usize = 256;
/// One line a policy logs.
pub const MAX_LOG_LINE: usize = 1024;

/// Why a decision is out of bounds: the field's path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct OutOfBounds {
    pub field: String,
    pub problem: String,
}

fn out(field: &str, problem: impl Into<String>) -> OutOfBounds {
    OutOfBounds {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// Checks every field of `decision` and its total size.
pub fn check(decision: &Decision) -> Result<(), OutOfBounds> {
    let mut size = Size(0);
    match decision {
        Decision::Continue => {}
        Decision::Reply(r) => {
            size.text("reply.reason", &r.reason, MAX_REASON)?;
            size.headers("reply.headers", &r.headers)?;
        }
        Decision::Refuse(r) => {
            size.text("refuse.reason", &r.reason, MAX_REASON)?;
            size.text("refuse.explanation", &r.explanation, MAX_EXPLANATION)?;
            size.text("refuse.rule", &r.rule, MAX_LABEL)?;
        }
        Decision::Fork(f) => size.fork(f)?,
        Decision::Originate(p) => size.plan(p)?,
    }
    if size.0 > MAX_DECISION_BYTES {
        return Err(out(
            "decision",
            format!("{} bytes of text, at most {MAX_DECISION_BYTES}", size.0),
        ));
    }
    Ok(())
}

/// The text counted so far, checked field by field.
struct Size(usize);

impl Size {
    fn fork(&mut self, fork: &Fork) -> Result<(), OutOfBounds> {
        let n = fork.targets.len();
        if n > MAX_TARGETS {
            return Err(out(
                "fork.targets",
                format!("{n} targets, at most {MAX_TARGETS}"),
            ));
        }
        for (i, t) in fork.targets.iter().enumerate() {
            self.target(&format!("fork.targets[{i}]"), t)?;
        }
        Ok(())
    }

    fn target(&mut self, at: &str, t: &Target) -> Result<(), OutOfBounds> {
        self.text(&format!("{at}.label"), &t.label, MAX_LABEL)?;
        self.uri(&format!("{at}.uri"), &t.uri)?;
        if let Some(hop) = &t.next_hop {
            self.uri(&format!("{at}.next_hop"), hop)?;
        }
        if let Some(from) = &t.from {
            self.name_addr(&format!("{at}.from"), from)?;
        }
        if let Some(pai) = &t.asserted_identity {
            self.name_addr(&format!("{at}.asserted_identity"), pai)?;
        }
        self.headers(&format!("{at}.headers"), &t.headers)?;
        match t.ring_timeout_ms {
            Some(ms) => ring_timeout(&format!("{at}.ring_timeout_ms"), ms),
            None => Ok(()),
        }
    }

    fn plan(&mut self, p: &OriginationPlan) -> Result<(), OutOfBounds> {
        self.uri("originate.user", &p.user)?;
        self.leg("originate.callback", &p.callback)?;
        self.leg("originate.callee", &p.callee)?;
        if p.max_duration_s > MAX_DURATION_S {
            return Err(out(
                "originate.max_duration_s",
                format!("{} s, at most {MAX_DURATION_S}", p.max_duration_s),
            ));
        }
        Ok(())
    }

    fn leg(&mut self, at: &str, leg: &Leg) -> Result<(), OutOfBounds> {
        self.uri(&format!("{at}.uri"), &leg.uri)?;
        self.name_addr(&format!("{at}.shows"), &leg.shows)?;
        ring_timeout(&format!("{at}.ring_timeout_ms"), leg.ring_timeout_ms)
    }

    fn name_addr(&mut self, at: &str, n: &NameAddr) -> Result<(), OutOfBounds> {
        self.text(&format!("{at}.display"), &n.display, MAX_DISPLAY)?;
        self.uri(&format!("{at}.uri"), &n.uri)
    }

    fn headers(&mut self, at: &str, headers: &[Header]) -> Result<(), OutOfBounds> {
        if headers.len() > MAX_HEADERS {
            let n = headers.len();
            return Err(out(at, format!("{n} headers, at most {MAX_HEADERS}")));
        }
        for (i, h) in headers.iter().enumerate() {
            self.header_name(&format!("{at}[{i}].name"), &h.name)?;
            self.header_value(&format!("{at}[{i}].value"), &h.value)?;
        }
        Ok(())
    }

    fn header_name(&mut self, at: &str, name: &str) -> Result<(), OutOfBounds> {
        self.length(at, name, MAX_HEADER_NAME)?;
        let token = |b: u8| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(out(at, format!("{name:?} is not a SIP token")));
        }
        Ok(())
    }

    /// A header value may hold a tab but no other control character: CR or LF would start
    /// a header of the policy's choosing.
    fn header_value(&mut self, at: &str, value: &str) -> Result<(), OutOfBounds> {
        self.length(at, value, MAX_HEADER_VALUE)?;
        match value.chars().find(|&c| c.is_control() && c != '\t') {
            Some(c) => Err(out(at, format!("contains control character {c:?}"))),
            None => Ok(()),
        }
    }

    /// One line of text: no control characters at all.
    fn text(&mut self, at: &str, text: &str, max: usize) -> Result<(), OutOfBounds> {
        self.length(at, text, max)?;
        match text.chars().find(|c| c.is_control()) {
            Some(c) => Err(out(at, format!("contains control character {c:?}"))),
            None => Ok(()),
        }
    }

    /// A URI goes between `<` and `>` in name-addr headers and alone in Request-URIs and
    /// rtjson: any of `<>,"`, a space or a control character could end it early and add a
    /// value of the policy's choosing.
    fn uri(&mut self, at: &str, uri: &str) -> Result<(), OutOfBounds> {
        self.length(at, uri, MAX_URI)?;
        if uri.is_empty() {
            return Err(out(at, "empty"));
        }
        let bad = |c: char| "<>,\"".contains(c) || c.is_whitespace() || c.is_control();
        match uri.chars().find(|&c| bad(c)) {
            Some(c) => Err(out(at, format!("contains {c:?}, which no URI here may"))),
            None => Ok(()),
        }
    }

    fn length(&mut self, at: &str, text: &str, max: usize) -> Result<(), OutOfBounds> {
        if text.len() > max {
            return Err(out(at, format!("{} bytes, at most {max}", text.len())));
        }
        self.0 += text.len();
        Ok(())
    }
}

fn ring_timeout(at: &str, ms: u32) -> Result<(), OutOfBounds> {
    if ms > MAX_RING_TIMEOUT_MS {
        return Err(out(at, format!("{ms} ms, at most {MAX_RING_TIMEOUT_MS}")));
    }
    Ok(())
}

/// `text` fit for a terminal or a log line: each control character (escape sequences, line
/// breaks that would forge a log line) becomes `�`, and the text is cut to `max` chars,
/// with `…` marking the cut.
pub fn printable(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// What `describe` said, made [`printable`] and short before anything prints or logs it.
pub fn policy_info(info: PolicyInfo) -> PolicyInfo {
    PolicyInfo {
        name: printable(&info.name, MAX_INFO_NAME),
        version: printable(&info.version, MAX_INFO_VERSION),
        description: printable(&info.description, MAX_INFO_DESCRIPTION),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{Flow, ForkMode, Refusal, Reply};

    fn header(name: &str, value: &str) -> Header {
        Header::new(name, value)
    }

    fn name_addr(display: &str, uri: &str) -> NameAddr {
        NameAddr {
            display: display.into(),
            uri: uri.into(),
        }
    }

    /// A simultaneous ring as the default policy returns it: desk with its headers and
    /// timeout, two clients.
    fn ring() -> Fork {
        let desk = Target {
            label: "desk".into(),
            uri: "sip:+14255550101@pbx.corp.example;user=phone".into(),
            next_hop: Some("sip:127.0.0.1:5090".into()),
            from: Some(name_addr("Bob", "sip:bob@corp.example")),
            asserted_identity: None,
            headers: vec![
                header("History-Info", "<sip:alice@corp.example>;index=1"),
                header("X-CVW-Leg", "desk"),
            ],
            ring_timeout_ms: Some(15_000),
        };
        let client = |port| Target {
            label: "client".into(),
            uri: format!("sip:alice@127.0.0.1:{port};transport=tcp"),
            ..Target::default()
        };
        Fork {
            mode: ForkMode::Parallel,
            targets: vec![desk, client(5071), client(5072)],
        }
    }

    fn plan() -> OriginationPlan {
        let leg = |uri: &str| Leg {
            uri: uri.into(),
            shows: name_addr("Call via Work", "sip:+14255550000@corp.example"),
            ring_timeout_ms: 15_000,
        };
        OriginationPlan {
            user: "sip:alice@corp.example".into(),
            callback: leg("sip:+14255550101@pbx.corp.example"),
            callee: leg("sip:+14255550142@pbx.corp.example"),
            flow: Flow::FlowIv,
            max_duration_s: 14_400,
        }
    }

    fn refused(decision: Decision) -> String {
        check(&decision).unwrap_err().to_string()
    }

    fn fork_with(edit: impl FnOnce(&mut Fork)) -> Decision {
        let mut fork = ring();
        edit(&mut fork);
        Decision::Fork(fork)
    }

    #[test]
    fn decisions_of_the_default_policy_are_within_bounds() {
        assert_eq!(check(&Decision::Fork(ring())), Ok(()));
        assert_eq!(check(&Decision::Originate(plan())), Ok(()));
        let refusal = Refusal::new(403, "Forbidden", "Dial 911 from your desk phone.", "CVW-44");
        assert_eq!(check(&Decision::Refuse(refusal)), Ok(()));
    }

    #[test]
    fn branches_per_fork_at_the_limit_pass_one_more_is_refused() {
        let many = |n| {
            fork_with(|f| {
                f.targets = (0..n).map(|_| ring().targets[1].clone()).collect();
            })
        };
        assert_eq!(check(&many(MAX_TARGETS)), Ok(()));
        assert_eq!(
            refused(many(10_000)),
            "fork.targets: 10000 targets, at most 16"
        );
    }

    #[test]
    fn ring_timeouts_and_durations_are_bounded() {
        let ring_for = |ms| fork_with(|f| f.targets[0].ring_timeout_ms = Some(ms));
        assert_eq!(check(&ring_for(MAX_RING_TIMEOUT_MS)), Ok(()));
        assert_eq!(
            refused(ring_for(u32::MAX)),
            "fork.targets[0].ring_timeout_ms: 4294967295 ms, at most 300000"
        );
        let mut long_leg = plan();
        long_leg.callee.ring_timeout_ms = MAX_RING_TIMEOUT_MS + 1;
        assert_eq!(
            refused(Decision::Originate(long_leg)),
            "originate.callee.ring_timeout_ms: 300001 ms, at most 300000"
        );
        let mut endless = plan();
        endless.max_duration_s = u32::MAX;
        assert_eq!(
            refused(Decision::Originate(endless)),
            "originate.max_duration_s: 4294967295 s, at most 86400"
        );
    }

    #[test]
    fn reasons_and_header_values_are_bounded() {
        let reply = |reason: String, headers| {
            Decision::Reply(Reply {
                code: 486,
                reason,
                headers,
            })
        };
        assert_eq!(check(&reply("x".repeat(MAX_REASON), vec![])), Ok(()));
        assert_eq!(
            refused(reply("Busy ".repeat(1 << 20), vec![])),
            "reply.reason: 5242880 bytes, at most 128"
        );
        let huge = vec![header("Warning", &"x".repeat(5 << 20))];
        assert_eq!(
            refused(reply("Busy".into(), huge)),
            "reply.headers[0].value: 5242880 bytes, at most 1024"
        );
        let many = vec![header("X-A", "1"); MAX_HEADERS + 1];
        assert_eq!(
            refused(reply("Busy".into(), many)),
            "reply.headers: 17 headers, at most 16"
        );
        let mut refusal = Refusal::new(403, "Forbidden", "x".repeat(600), "CVW-44");
        assert_eq!(
            refused(Decision::Refuse(refusal.clone())),
            "refuse.explanation: 600 bytes, at most 512"
        );
        refusal.explanation = "Dial from the desk phone.\r\nX-Evil: 1".into();
        assert_eq!(
            refused(Decision::Refuse(refusal)),
            "refuse.explanation: contains control character '\\r'"
        );
    }

    /// CR/LF in a header would add headers of the policy's choosing; a name that is not a
    /// token would make the proxy write a broken line.
    #[test]
    fn headers_cannot_inject_lines_or_bad_names() {
        let with_header = |h: Header| fork_with(|f| f.targets[0].headers.push(h));
        assert_eq!(
            refused(with_header(header("X-A", "1\r\nX-Evil: 1"))),
            "fork.targets[0].headers[2].value: contains control character '\\r'"
        );
        assert_eq!(
            refused(with_header(header("X-A: 1\r\nX-Evil", "1"))),
            "fork.targets[0].headers[2].name: \"X-A: 1\\r\\nX-Evil\" is not a SIP token"
        );
        assert_eq!(check(&with_header(header("X-A", "a\tb"))), Ok(()));
    }

    /// A URI that could close its `<...>` and add a value (`sip:a@h>,<sip:b@h`) or a header.
    #[test]
    fn uris_that_could_add_values_are_refused() {
        for (uri, bad) in [
            ("sip:a@h>,<sip:b@h", "'>'"),
            ("sip:a@h,sip:b@h", "','"),
            ("<sip:a@h", "'<'"),
            ("sip:a@h\r\nX-Evil: 1", "'\\r'"),
            ("sip:a b@h", "' '"),
        ] {
            let d = fork_with(|f| f.targets[1].uri = uri.into());
            assert_eq!(
                refused(d),
                format!("fork.targets[1].uri: contains {bad}, which no URI here may"),
                "{uri:?}"
            );
        }
        let d = fork_with(|f| f.targets[0].next_hop = Some(String::new()));
        assert_eq!(refused(d), "fork.targets[0].next_hop: empty");
        let mut plan = plan();
        plan.callback.shows.uri = "sip:x@h>;tag=1".into();
        assert_eq!(
            refused(Decision::Originate(plan)),
            "originate.callback.shows.uri: contains '>', which no URI here may"
        );
        let d = fork_with(|f| f.targets[0].from = Some(name_addr("Bob\nX: y", "sip:b@h")));
        assert_eq!(
            refused(d),
            "fork.targets[0].from.display: contains control character '\\n'"
        );
    }

    /// Each field within its limit, the whole too large: the document bound applies.
    #[test]
    fn the_whole_decision_is_bounded() {
        let d = fork_with(|f| {
            let mut t = ring().targets[0].clone();
            t.headers = vec![header("X-Pad", &"p".repeat(MAX_HEADER_VALUE)); MAX_HEADERS];
            f.targets = vec![t; 2];
        });
        assert!(
            refused(d).starts_with("decision: 33"),
            "two branches of 16 KiB headers"
        );
    }

    #[test]
    fn printed_text_is_made_printable_and_cut() {
        assert_eq!(
            printable("\u{1b}[2Jcleared\nforged line", 100),
            "\u{fffd}[2Jcleared\u{fffd}forged line"
        );
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("abc", 3), "abc");
        let info = policy_info(PolicyInfo {
            name: "x".repeat(10_000),
            version: "1\r\n".into(),
            description: "ok".into(),
        });
        assert_eq!(info.name.chars().count(), MAX_INFO_NAME + 1);
        assert_eq!(info.version, "1\u{fffd}\u{fffd}");
        assert_eq!(info.description, "ok");
    }
}
