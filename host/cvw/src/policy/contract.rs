//! The hooks of the contract as the runtime calls them, and which decisions each may
//! answer: the check that turns an answer out of place (a `fork` from click to call, a
//! reply code outside 300..=699) or out of bounds (`bounds.rs`) into
//! [`super::FailureKind::InvalidDecision`]. Every decision a policy returns passes here.
//!
//! Owns only that table and its ranges; calling the hooks is `runtime.rs`'.

use super::bounds;
use super::model::Decision;

/// Which hook a call runs; decides which decisions are in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    Request,
    Failure,
    ClickToCall,
    DialOut,
    Reply,
}

impl Hook {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Hook::Request => "on-request",
            Hook::Failure => "on-failure",
            Hook::ClickToCall => "on-click-to-call",
            Hook::DialOut => "on-dial-out",
            Hook::Reply => "on-reply",
        }
    }

    /// Checks a decision against the hook's contract and the records' documented ranges.
    pub(crate) fn check(self, decision: &Decision) -> Result<(), String> {
        let kind = match decision {
            Decision::Continue => "continue",
            Decision::Reply(_) => "reply",
            Decision::Fork(_) => "fork",
            Decision::Originate(_) => "originate",
            Decision::Refuse(_) => "refuse",
        };
        let allowed: &[&str] = match self {
            Hook::Request => &["continue", "reply", "fork", "originate", "refuse"],
            Hook::Failure => &["continue", "reply", "fork", "refuse"],
            Hook::ClickToCall => &["reply", "originate", "refuse"],
            Hook::DialOut => &["originate", "refuse"],
            Hook::Reply => &[],
        };
        if !allowed.contains(&kind) {
            return Err(format!("`{kind}` is not a decision of {}", self.name()));
        }
        match decision {
            Decision::Reply(r) if !(300..=699).contains(&r.code) => {
                Err(format!("reply.code: {} is not 300..=699", r.code))
            }
            Decision::Refuse(r) if !(400..=699).contains(&r.code) => {
                Err(format!("refuse.code: {} is not 400..=699", r.code))
            }
            Decision::Fork(f) if f.targets.is_empty() => {
                Err("fork.targets: none; a fork needs at least one".to_owned())
            }
            _ => bounds::check(decision).map_err(|e| e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{Fork, ForkMode, Refusal, Reply};

    #[test]
    fn decisions_out_of_place_or_out_of_range_are_refused() {
        let reply = |code| {
            Decision::Reply(Reply {
                code,
                reason: "x".into(),
                headers: vec![],
            })
        };
        let refuse = |code| {
            Decision::Refuse(Refusal {
                code,
                reason: "x".into(),
                explanation: "x".into(),
                rule: "CVW-41".into(),
            })
        };
        let no_targets = Decision::Fork(Fork {
            mode: ForkMode::Parallel,
            targets: vec![],
        });
        assert!(Hook::Request.check(&reply(486)).is_ok());
        assert!(Hook::Request.check(&reply(200)).is_err());
        assert!(Hook::Request.check(&refuse(403)).is_ok());
        assert!(Hook::Request.check(&refuse(302)).is_err());
        assert!(Hook::Request.check(&no_targets).is_err());
        assert!(Hook::ClickToCall.check(&Decision::Continue).is_err());
        assert!(Hook::DialOut.check(&reply(486)).is_err());
        assert!(Hook::Failure.check(&Decision::Continue).is_ok());
    }
}
