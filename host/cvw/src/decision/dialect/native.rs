//! A decision as an in-process proxy module applies it (Kamailio's `cvw.so`): typed data
//! instead of a document, because the module sets branches and headers through the proxy's
//! C API and has nothing to parse. The same checks as every other dialect (line breaks,
//! header names, codes) through the same helpers, so a policy cannot inject SIP here either.

use super::kamailio::{Route, routes};
use super::{MapError, final_reply};
use crate::policy::model::{Decision, ForkMode, ReplyAction};
use serde::{Deserialize, Serialize};

/// What the module does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NativeAnswer {
    /// Route it as without Call via Work.
    Continue,
    /// Answer the caller: `headers` are CRLF-terminated lines (a refusal's `Warning`).
    Reply {
        code: u16,
        reason: String,
        headers: String,
    },
    /// Fork to `branches`, all at once or one after another.
    Fork {
        serial: bool,
        branches: Vec<NativeBranch>,
    },
}

/// One target of a fork, ready for the proxy's API. Serde: a serial fork's later targets
/// wait in the transaction as JSON until the failure route needs the next one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NativeBranch {
    pub label: String,
    pub uri: String,
    /// The next hop (`$du`); `None` to resolve `uri`.
    pub dst_uri: Option<String>,
    /// Header lines of this branch only (CRLF-terminated), P-Asserted-Identity included.
    pub headers: String,
    /// `(display, uri)` of this branch's own From.
    pub from: Option<(String, String)>,
    /// The branch's own ring timeout (CVW-51).
    pub ring_ms: Option<u32>,
}

impl NativeAnswer {
    /// `decision` (a route or failure decision) in the module's terms.
    pub fn of(decision: &Decision) -> Result<NativeAnswer, MapError> {
        if let Some((code, reason, headers)) = final_reply(decision)? {
            return Ok(NativeAnswer::Reply {
                code,
                reason,
                headers,
            });
        }
        match decision {
            Decision::Continue => Ok(NativeAnswer::Continue),
            Decision::Fork(fork) => Ok(NativeAnswer::Fork {
                serial: fork.mode == ForkMode::Serial,
                branches: routes(fork)?.iter().map(NativeBranch::of).collect(),
            }),
            Decision::Originate(_) => Err(MapError::Unsupported("originate")),
            _ => Err(MapError::Unsupported("unknown")),
        }
    }
}

impl NativeBranch {
    fn of(route: &Route<'_>) -> NativeBranch {
        NativeBranch {
            label: route.label.to_owned(),
            uri: route.uri.to_owned(),
            dst_uri: route.dst_uri.map(str::to_owned),
            headers: route.headers.extra.clone(),
            from: route
                .headers
                .from
                .as_ref()
                .map(|f| (f.display.to_owned(), f.uri.to_owned())),
            ring_ms: route.fr_inv_timer,
        }
    }
}

/// Whether the reply hook asked to cancel the branch.
pub fn cancels_branch(action: ReplyAction) -> bool {
    action == ReplyAction::CancelBranch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::dialect::kamailio::tests::{client, desk};
    use crate::policy::model::{Fork, Header, Refusal};

    #[test]
    fn a_parallel_fork_keeps_every_branch_and_its_own_data() {
        let answer = NativeAnswer::of(&Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets: vec![desk(), client()],
        }))
        .unwrap();
        let NativeAnswer::Fork { serial, branches } = answer else {
            panic!("a fork: {answer:?}");
        };
        assert!(!serial);
        assert_eq!(branches[0].label, "desk");
        assert_eq!(branches[0].dst_uri.as_deref(), Some("sip:127.0.0.1:5090"));
        assert_eq!(branches[0].ring_ms, Some(15000));
        assert_eq!(
            branches[0].headers,
            "X-CVW-Leg: desk\r\nP-Asserted-Identity: \"Bob \\\"B\\\"\" <sip:bob@corp.example>\r\n"
        );
        assert_eq!(branches[0].from, None);
        assert_eq!(
            branches[1].from,
            Some((
                "Call via Work".to_owned(),
                "sip:+14255550000@corp.example".to_owned()
            ))
        );
        assert_eq!(branches[1].dst_uri, None);
    }

    #[test]
    fn a_refusal_is_a_reply_that_says_why() {
        let answer = NativeAnswer::of(&Decision::Refuse(Refusal::new(
            403,
            "Forbidden",
            "toll",
            "r1",
        )))
        .unwrap();
        assert_eq!(
            answer,
            NativeAnswer::Reply {
                code: 403,
                reason: "Forbidden".into(),
                headers: "Warning: 399 cvw \"toll\"\r\n".into(),
            }
        );
    }

    #[test]
    fn a_header_with_a_line_break_is_refused_not_applied() {
        let mut target = client();
        target.headers = vec![Header {
            name: "X-A".into(),
            value: "1\r\nX-Injected: 2".into(),
        }];
        let fork = Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets: vec![target],
        });
        assert!(matches!(
            NativeAnswer::of(&fork),
            Err(MapError::LineBreak { .. })
        ));
    }
}
