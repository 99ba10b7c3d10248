//! An example second policy: Call via Work with office hours. Inside office hours it
//! decides exactly like the default policy; outside them a simultaneous ring (CVW-30)
//! rings only the soft clients, so the desk phone stays quiet at night. It reuses
//! `cvw-guest-logic`'s logic and skin; what it owns is the office-hours configuration and the
//! filtering of the desk branch. Not here: any other decision.

pub mod hours;

use cvw_guest_logic::incoming::DESK;
use cvw_guest_logic::model::{
    BranchReply, ClickToCall, Decision, DialOut, PolicyInfo, ReplyAction, RequestContext, User,
};
use cvw_guest_logic::{CallViaWork, Hooks, Message, Services};

use hours::Hours;

/// The default policy plus office hours.
#[derive(Debug, Clone)]
pub struct OfficeHours {
    inner: CallViaWork,
    hours: Hours,
}

impl OfficeHours {
    /// Outside office hours, drop the desk branch of a fork that also rings soft clients.
    /// A desk-only fork (PBX side, CVW-33, or nobody signed in) is kept: the PBX's own
    /// voicemail then takes the call rather than nobody.
    fn after_hours(&self, decision: Decision, svc: &dyn Services) -> Decision {
        let Decision::Fork(mut fork) = decision else {
            return decision;
        };
        let has_clients = fork.targets.iter().any(|t| t.label != DESK);
        if has_clients && !self.hours.is_open(svc.now()) {
            fork.targets.retain(|t| t.label != DESK);
        }
        Decision::Fork(fork)
    }
}

impl Hooks for OfficeHours {
    fn describe() -> PolicyInfo {
        PolicyInfo {
            name: "office-hours".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Call via Work; outside office hours only the soft clients ring."
                .to_owned(),
        }
    }

    fn configure(config: &[(String, String)], svc: &dyn Services) -> Result<Self, String> {
        let hours = Hours::parse(config).map_err(|e| e.to_string())?;
        let inner =
            CallViaWork::with_extra_keys(config, hours::KEYS, svc).map_err(|e| e.to_string())?;
        Ok(OfficeHours { inner, hours })
    }

    fn check_user(&self, user: &User) -> Result<(), String> {
        self.inner.check_user(user)
    }

    fn on_request(&self, msg: &dyn Message, ctx: RequestContext, svc: &dyn Services) -> Decision {
        self.after_hours(self.inner.on_request(msg, ctx, svc), svc)
    }

    fn on_reply(&self, msg: &dyn Message, reply: &BranchReply, svc: &dyn Services) -> ReplyAction {
        self.inner.on_reply(msg, reply, svc)
    }

    fn on_failure(&self, msg: &dyn Message, failure: &BranchReply, svc: &dyn Services) -> Decision {
        self.inner.on_failure(msg, failure, svc)
    }

    fn on_click_to_call(&self, req: &ClickToCall, svc: &dyn Services) -> Decision {
        self.inner.on_click_to_call(req, svc)
    }

    fn on_dial_out(&self, req: &DialOut, svc: &dyn Services) -> Decision {
        self.inner.on_dial_out(req, svc)
    }
}

#[cfg(all(target_arch = "wasm32", feature = "component"))]
cvw_guest_logic::export_policy!(OfficeHoursComponent, crate::OfficeHours);

#[cfg(test)]
mod tests {
    use super::*;
    use cvw_guest_logic::model::{Contact, Source};
    use cvw_guest_logic::testkit::{FakeMessage, FakeServices, config_pairs, run_scenarios};
    use std::path::Path;

    /// Wednesday 2025-11-26 10:00 UTC.
    const WED_10_UTC: u64 = 1_764_151_200;
    const HOUR: u64 = 3600;

    fn policy(extra: &[(&str, &str)]) -> OfficeHours {
        let mut pairs = config_pairs();
        pairs.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        OfficeHours::configure(&pairs, &FakeServices::example()).unwrap()
    }

    fn labels(policy: &OfficeHours, now: u64, contacts: usize, source: Source) -> Vec<String> {
        let svc = FakeServices::example();
        svc.clock.set(now);
        let ctx = RequestContext {
            source,
            contacts: (0..contacts)
                .map(|i| Contact {
                    uri: format!("sip:alice@127.0.0.1:{}", 5071 + i),
                    ..Contact::default()
                })
                .collect(),
        };
        let msg = FakeMessage::invite("sip:alice@corp.example");
        match policy.on_request(&msg, ctx, &svc) {
            Decision::Fork(f) => f.targets.into_iter().map(|t| t.label).collect(),
            other => panic!("expected a fork, got {other:?}"),
        }
    }

    #[test]
    fn cvw_30_inside_office_hours_desk_and_clients_ring() {
        let p = policy(&[]);
        assert_eq!(
            labels(&p, WED_10_UTC, 2, Source::Uc),
            ["desk", "client", "client"]
        );
    }

    #[test]
    fn cvw_30_outside_office_hours_only_the_soft_clients_ring() {
        let p = policy(&[]);
        assert_eq!(
            labels(&p, WED_10_UTC + 10 * HOUR, 2, Source::Uc),
            ["client", "client"]
        );
        // Saturday at 10:00.
        assert_eq!(
            labels(&p, WED_10_UTC + 72 * HOUR, 1, Source::Uc),
            ["client"]
        );
    }

    #[test]
    fn the_utc_offset_moves_the_office_day() {
        // 10:00 UTC is 02:00 in UTC-8: closed.
        let p = policy(&[("utc_offset_minutes", "-480")]);
        assert_eq!(labels(&p, WED_10_UTC, 1, Source::Uc), ["client"]);
        // ... and 18:00 UTC is 10:00 there: open.
        assert_eq!(
            labels(&p, WED_10_UTC + 8 * HOUR, 1, Source::Uc),
            ["desk", "client"]
        );
    }

    #[test]
    fn cvw_33_desk_only_forks_are_kept_after_hours() {
        let p = policy(&[]);
        let night = WED_10_UTC + 12 * HOUR;
        assert_eq!(labels(&p, night, 2, Source::Pbx), ["desk"]);
        assert_eq!(labels(&p, night, 0, Source::Uc), ["desk"]);
    }

    #[test]
    fn office_keys_are_not_reported_as_unknown_and_bad_ones_are_refused() {
        let svc = FakeServices::example();
        let mut pairs = config_pairs();
        pairs.push(("office_open".into(), "09:00".into()));
        OfficeHours::configure(&pairs, &svc).unwrap();
        assert!(svc.logs.borrow().is_empty(), "{:?}", svc.logs.borrow());
        pairs.push(("office_close".into(), "07:00".into()));
        let err = OfficeHours::configure(&pairs, &svc).unwrap_err();
        assert!(err.contains("office_close"), "{err}");
    }

    #[test]
    fn every_office_hours_scenario_matches_the_policy() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/office-hours");
        let ran = run_scenarios::<OfficeHours>(&dir).unwrap_or_else(|f| panic!("{f}"));
        assert!(ran >= 4, "only {ran} scenarios");
    }
}
