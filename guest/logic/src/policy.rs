//! The hooks a policy implements ([`Hooks`], the contract's `hooks` interface in plain
//! types) and the Call-via-Work policy itself ([`CallViaWork`]), which wires the modules
//! together and counts refusals. The component skin and other policies built on this one
//! (e.g. office hours) use the trait. Not here: any single decision's logic.

use crate::audit;
use crate::config::{Config, ConfigError};
use crate::env::{Message, Services};
use crate::incoming;
use crate::model::{
    BranchReply, ClickToCall, Decision, DialOut, Level, PolicyInfo, ReplyAction, RequestContext,
    User,
};
use crate::origination;

/// A policy's hooks, as the contract's `hooks` interface, in plain types.
pub trait Hooks: Sized {
    fn describe() -> PolicyInfo;
    /// Build the policy from `[policy.config]`; an error names the key.
    fn configure(config: &[(String, String)], svc: &dyn Services) -> Result<Self, String>;
    fn check_user(&self, user: &User) -> Result<(), String>;
    fn on_request(&self, msg: &dyn Message, ctx: RequestContext, svc: &dyn Services) -> Decision;
    fn on_reply(&self, msg: &dyn Message, reply: &BranchReply, svc: &dyn Services) -> ReplyAction;
    fn on_failure(&self, msg: &dyn Message, failure: &BranchReply, svc: &dyn Services) -> Decision;
    fn on_click_to_call(&self, req: &ClickToCall, svc: &dyn Services) -> Decision;
    fn on_dial_out(&self, req: &DialOut, svc: &dyn Services) -> Decision;
}

/// The default Call-via-Work policy.
#[derive(Debug, Clone)]
pub struct CallViaWork {
    config: Config,
}

impl CallViaWork {
    /// Parse `pairs`; keys outside this policy's and `own_keys` (a wrapping policy's) are
    /// logged as warnings, not refused.
    pub fn with_extra_keys(
        pairs: &[(String, String)],
        own_keys: &[&str],
        svc: &dyn Services,
    ) -> Result<Self, ConfigError> {
        let parsed = Config::parse(pairs)?;
        for key in parsed
            .unknown_keys
            .iter()
            .filter(|k| !own_keys.contains(&k.as_str()))
        {
            let mut line = String::from("policy config: unknown key `");
            line.push_str(key);
            line.push_str("` ignored");
            svc.log(Level::Warn, &line);
        }
        Ok(CallViaWork {
            config: parsed.config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Count and log a refusal, so operators see limitations being hit (CVW-40..46).
pub fn note(decision: Decision, svc: &dyn Services) -> Decision {
    if let Decision::Refuse(refusal) = &decision {
        svc.count("cvw_refused", 1);
        let mut line = String::with_capacity(16 + refusal.explanation.len());
        line.push_str(&refusal.rule);
        line.push_str(" refused: ");
        line.push_str(&refusal.explanation);
        svc.log(Level::Info, &line);
    }
    decision
}

impl Hooks for CallViaWork {
    fn describe() -> PolicyInfo {
        PolicyInfo {
            name: "call-via-work".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Call via Work: simultaneous ring of desk phone and soft clients, \
                          two-leg click to call and dial-out, with the CVW limitations."
                .to_owned(),
        }
    }

    fn configure(config: &[(String, String)], svc: &dyn Services) -> Result<Self, String> {
        CallViaWork::with_extra_keys(config, &[], svc).map_err(|e| e.to_string())
    }

    fn check_user(&self, user: &User) -> Result<(), String> {
        audit::check_user(user).map_err(|e| e.to_string())
    }

    fn on_request(&self, msg: &dyn Message, ctx: RequestContext, svc: &dyn Services) -> Decision {
        note(incoming::on_request(&self.config, msg, ctx, svc), svc)
    }

    fn on_reply(
        &self,
        _msg: &dyn Message,
        reply: &BranchReply,
        _svc: &dyn Services,
    ) -> ReplyAction {
        incoming::on_reply(reply)
    }

    fn on_failure(
        &self,
        msg: &dyn Message,
        failure: &BranchReply,
        _svc: &dyn Services,
    ) -> Decision {
        incoming::on_failure(&self.config, msg, failure)
    }

    fn on_click_to_call(&self, req: &ClickToCall, svc: &dyn Services) -> Decision {
        note(origination::on_click_to_call(&self.config, req, svc), svc)
    }

    fn on_dial_out(&self, req: &DialOut, svc: &dyn Services) -> Decision {
        note(origination::on_dial_out(&self.config, req, svc), svc)
    }
}
