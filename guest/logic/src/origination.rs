//! Two-leg calls (RFC 3725) the host places for a user: click to call (CVW-10..15) and
//! conference dial-out (CVW-20..22). Decides who is allowed, which callback number the
//! first leg rings (CVW-1), what each leg shows (CVW-2, CVW-11), the timeouts (CVW-13) and
//! the flow. Not here: the SIP of the two legs (the host's origination engine).

use crate::config::Config;
use crate::env::Services;
use crate::limits::{self, Limit};
use crate::model::{
    ClickToCall, Decision, DialOut, Flow, Leg, NameAddr, OriginationPlan, Refusal, User,
};
use crate::numbers;

/// The click-to-call hook.
pub fn on_click_to_call(config: &Config, req: &ClickToCall, svc: &dyn Services) -> Decision {
    match click_to_call(config, req, svc) {
        Ok(plan) => Decision::Originate(plan),
        Err(refusal) => Decision::Refuse(refusal),
    }
}

/// The dial-out hook.
pub fn on_dial_out(config: &Config, req: &DialOut, svc: &dyn Services) -> Decision {
    match dial_out(config, req, svc) {
        Ok(plan) => Decision::Originate(plan),
        Err(refusal) => Decision::Refuse(refusal),
    }
}

fn click_to_call(
    config: &Config,
    req: &ClickToCall,
    svc: &dyn Services,
) -> Result<OriginationPlan, Refusal> {
    let user = requester(&req.user, svc, "CVW-15")?;
    let callee = callee(config, &req.destination)?;
    let callback = callback_number(config, &user, req.callback_override.as_deref())?;
    // CVW-22: bridges and IVRs answer at once and want the first leg's offer (flow I).
    let flow = match &callee.number {
        Some(n) if numbers::has_prefix(n, &config.bridge_numbers) => Flow::FlowI,
        _ => Flow::FlowIv,
    };
    Ok(plan(config, user, &callback, callee.uri, flow))
}

fn dial_out(
    config: &Config,
    req: &DialOut,
    svc: &dyn Services,
) -> Result<OriginationPlan, Refusal> {
    let user = requester(&req.user, svc, "CVW-20")?;
    // The meeting service names the conference, but a dial-out is still an origination:
    // an emergency number there is refused like anywhere else (CVW-15).
    if let Some(dialled) = numbers::dialled(&req.conference_uri)
        && is_emergency(config, &dialled)
    {
        return Err(emergency_refusal());
    }
    let callback = callback_number(config, &user, None)?;
    // CVW-20, CVW-21: the conference answers at once, so flow I.
    Ok(plan(
        config,
        user,
        &callback,
        req.conference_uri.clone(),
        Flow::FlowI,
    ))
}

/// The user on whose behalf a call is placed: known, enabled, without conflicting
/// features, with a desk line (CVW-1, CVW-4, CVW-40).
fn requester(address: &str, svc: &dyn Services, rule: &str) -> Result<User, Refusal> {
    let Some(user) = svc.lookup(address) else {
        return Err(Refusal::new(
            403,
            "Forbidden",
            "Only Call-via-Work users can place calls through Call via Work.",
            rule,
        ));
    };
    if !user.enabled() {
        return Err(Refusal::new(
            403,
            "Forbidden",
            "Call via Work is not enabled for you; ask your administrator.",
            "CVW-1",
        ));
    }
    if user.delegation || user.team_call || user.response_group {
        return Err(Limit::ConflictingFeature.refusal());
    }
    if user.line_uri.is_none() {
        return Err(Refusal::new(
            403,
            "Forbidden",
            "Your account has no desk phone number; ask your administrator.",
            "CVW-4",
        ));
    }
    Ok(user)
}

/// Where the callee leg goes.
struct Callee {
    uri: String,
    /// The dialled number, when the destination is one.
    number: Option<String>,
}

/// CVW-15: what the user asked to call, authorised.
fn callee(config: &Config, destination: &str) -> Result<Callee, Refusal> {
    let destination = destination.trim();
    let Some(dialled) = numbers::dialled(destination) else {
        if has_sip_scheme(destination) {
            // A person by address: their own routing applies, no number rules.
            return Ok(Callee {
                uri: destination.to_owned(),
                number: None,
            });
        }
        return Err(Refusal::new(
            484,
            "Address Incomplete",
            "That is neither a phone number nor a SIP address.",
            "CVW-15",
        ));
    };
    let in_context = numbers::in_phone_context(destination, &dialled);
    if is_emergency(config, &dialled)
        || in_context
            .as_deref()
            .is_some_and(|n| is_emergency(config, n))
    {
        return Err(emergency_refusal());
    }
    if let Some(limit) = limits::destination_limit(config, &dialled) {
        return Err(limit.refusal());
    }
    let number = config
        .dial_plan
        .canonical(in_context.as_deref().unwrap_or(&dialled));
    if number.contains(['*', '#']) {
        // A feature code would act on the user's own line at the PBX (call forwarding
        // set by a click is toll fraud waiting to happen).
        return Err(Refusal::new(
            484,
            "Address Incomplete",
            "Feature codes with * or # cannot be dialled through Call via Work; use your desk phone.",
            "CVW-15",
        ));
    }
    allowed(
        config,
        &number,
        "You cannot call this number through Call via Work.",
    )?;
    Ok(Callee {
        uri: numbers::pbx_uri(&number, &config.pbx_uri_suffix),
        number: Some(number),
    })
}

/// CVW-15: any reading of the number (outside line, national or international prefix,
/// send key) is on the emergency list.
fn is_emergency(config: &Config, dialled: &str) -> bool {
    config.dial_plan.readings(dialled).iter().any(|reading| {
        config
            .emergency_numbers
            .iter()
            .any(|e| numbers::same(e, reading))
    })
}

fn has_sip_scheme(uri: &str) -> bool {
    let lower = uri.get(..5).unwrap_or(uri).to_ascii_lowercase();
    lower.starts_with("sip:") || lower.starts_with("sips:")
}

fn emergency_refusal() -> Refusal {
    Refusal::new(
        403,
        "Forbidden",
        "Emergency calls cannot be placed through Call via Work: dial from your desk phone.",
        "CVW-15",
    )
}

/// CVW-15 toll-fraud guard: the deny prefixes win, on any reading of the number (with or
/// without the outside line); a non-empty allow list must match the number the PBX gets.
fn allowed(config: &Config, number: &str, explanation: &str) -> Result<(), Refusal> {
    let denied = config
        .dial_plan
        .readings(number)
        .iter()
        .any(|reading| numbers::has_prefix(reading, &config.destination_deny_prefixes));
    let not_allowed = !config.destination_allow_prefixes.is_empty()
        && !numbers::has_prefix(number, &config.destination_allow_prefixes);
    if denied || not_allowed {
        return Err(Refusal::new(403, "Forbidden", explanation, "CVW-15"));
    }
    Ok(())
}

/// CVW-1: the number the first leg rings. With `use_admin_callback_number` only the admin
/// number, and a user-picked one is refused; otherwise the pick, then the user's own
/// callback number, then the admin number, then the desk line.
fn callback_number(config: &Config, user: &User, pick: Option<&str>) -> Result<String, Refusal> {
    let settings = &user.settings;
    let admin = settings
        .admin_callback_number
        .as_deref()
        .and_then(numbers::number);
    if settings.use_admin_callback_number {
        let Some(admin) = admin else {
            return Err(Refusal::new(
                403,
                "Forbidden",
                "Your policy rings the administrator's callback number, but none is set; \
                 ask your administrator.",
                "CVW-1",
            ));
        };
        if let Some(pick) = pick
            && !numbers::number(pick).is_some_and(|p| numbers::same(&p, &admin))
        {
            let mut text = String::from(
                "Your administrator fixed the callback number for your calls; you cannot \
                 pick your own. Calls ring ",
            );
            text.push_str(&admin);
            text.push('.');
            return Err(Refusal::new(403, "Forbidden", text, "CVW-1"));
        }
        return Ok(admin);
    }
    if let Some(pick) = pick {
        let Some(number) = numbers::number(pick) else {
            return Err(Refusal::new(
                484,
                "Address Incomplete",
                "The callback number you picked is not a phone number.",
                "CVW-1",
            ));
        };
        // Both legs are billable: a picked number gets the same guard as a destination.
        if is_emergency(config, &number) {
            return Err(emergency_refusal());
        }
        let number = config.dial_plan.canonical(&number);
        allowed(
            config,
            &number,
            "Call via Work cannot ring the callback number you picked.",
        )?;
        return Ok(number);
    }
    let own = user.callback_number.as_deref().and_then(numbers::number);
    let line = user.line_uri.as_deref().and_then(numbers::number);
    own.or(admin).or(line).ok_or_else(|| {
        Refusal::new(
            403,
            "Forbidden",
            "Your account has no number to call you back on; ask your administrator.",
            "CVW-1",
        )
    })
}

/// The plan: the callback leg shows the global caller ID (CVW-2), the callee sees the
/// user's work identity (CVW-11); timeouts bound each leg (CVW-13).
fn plan(
    config: &Config,
    user: User,
    callback: &str,
    callee_uri: String,
    flow: Flow,
) -> OriginationPlan {
    let mut caller_id = String::with_capacity(4 + config.global_caller_id.len());
    caller_id.push_str("tel:");
    caller_id.push_str(&config.global_caller_id);
    let identity = user.line_uri.unwrap_or_else(|| user.uc_address.clone());
    OriginationPlan {
        callback: Leg {
            uri: numbers::pbx_uri(callback, &config.pbx_uri_suffix),
            shows: NameAddr {
                display: config.global_caller_id_display.clone(),
                uri: caller_id,
            },
            ring_timeout_ms: config.callback_ring_timeout_ms,
        },
        callee: Leg {
            uri: callee_uri,
            shows: NameAddr {
                display: user.display_name,
                uri: identity,
            },
            ring_timeout_ms: config.callee_ring_timeout_ms,
        },
        user: user.uc_address,
        flow,
        max_duration_s: config.max_duration_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MeetingKind;
    use crate::testkit::{FakeServices, config};

    fn call(user: &str, destination: &str, pick: Option<&str>) -> Decision {
        let req = ClickToCall {
            user: user.into(),
            destination: destination.into(),
            callback_override: pick.map(str::to_owned),
        };
        on_click_to_call(&config(), &req, &FakeServices::example())
    }

    fn plan(d: Decision) -> OriginationPlan {
        match d {
            Decision::Originate(p) => p,
            other => panic!("expected a plan, got {other:?}"),
        }
    }

    fn refusal(d: Decision) -> Refusal {
        match d {
            Decision::Refuse(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn cvw_10_11_callback_leg_shows_global_caller_id_callee_sees_the_work_identity() {
        let p = plan(call("sip:alice@corp.example", "+1 425 555 0142", None));
        assert_eq!(p.user, "sip:alice@corp.example");
        // CVW-1: Alice's own callback number, CVW-2: the global caller ID.
        assert_eq!(
            p.callback.uri,
            "sip:+14255550199@pbx.corp.example;user=phone"
        );
        assert_eq!(p.callback.shows.uri, "tel:+14255550000");
        assert_eq!(p.callee.uri, "sip:+14255550142@pbx.corp.example;user=phone");
        assert_eq!(p.callee.shows.uri, "tel:+14255550101");
        assert_eq!(p.callee.shows.display, "Alice Smith");
        assert_eq!(p.flow, Flow::FlowIv);
        // CVW-13: both legs and the call are bounded.
        assert_eq!(p.callback.ring_timeout_ms, 15_000);
        assert_eq!(p.callee.ring_timeout_ms, 60_000);
        assert_eq!(p.max_duration_s, 14_400);
    }

    #[test]
    fn cvw_10_a_person_by_sip_address_is_called_as_is() {
        let p = plan(call(
            "sip:alice@corp.example",
            "sip:carol@corp.example",
            None,
        ));
        assert_eq!(p.callee.uri, "sip:carol@corp.example");
    }

    #[test]
    fn cvw_1_order_pick_then_own_then_admin_then_line() {
        let p = plan(call(
            "sip:alice@corp.example",
            "+14255550142",
            Some("+1 206 555 0100"),
        ));
        assert_eq!(
            p.callback.uri,
            "sip:+12065550100@pbx.corp.example;user=phone"
        );
        // Dave has no number of his own and his policy no admin number: the desk line.
        let p = plan(call("sip:dave@corp.example", "+14255550142", None));
        assert_eq!(
            p.callback.uri,
            "sip:+14255550104@pbx.corp.example;user=phone"
        );
        let mut dave = crate::testkit::users::dave();
        dave.settings.admin_callback_number = Some("+14255550100".into());
        let svc = FakeServices::with_users(vec![dave]);
        let req = ClickToCall {
            user: "sip:dave@corp.example".into(),
            destination: "+14255550142".into(),
            callback_override: None,
        };
        let p = plan(on_click_to_call(&config(), &req, &svc));
        assert_eq!(
            p.callback.uri,
            "sip:+14255550100@pbx.corp.example;user=phone"
        );
    }

    #[test]
    fn cvw_1_admin_only_policy_rings_the_admin_number_and_refuses_a_pick() {
        let p = plan(call("sip:bob@corp.example", "+14255550142", None));
        assert_eq!(
            p.callback.uri,
            "sip:+14255550100@pbx.corp.example;user=phone"
        );
        let r = refusal(call(
            "sip:bob@corp.example",
            "+14255550142",
            Some("+12065550100"),
        ));
        assert_eq!(r.rule, "CVW-1");
        assert!(
            r.explanation
                .contains("administrator fixed the callback number")
        );
        assert!(r.explanation.contains("+14255550100"));
        // Picking the admin number itself is no conflict.
        assert!(matches!(
            call(
                "sip:bob@corp.example",
                "+14255550142",
                Some("+1 425 555 0100")
            ),
            Decision::Originate(_)
        ));
    }

    #[test]
    fn cvw_1_users_not_enabled_or_unknown_cannot_originate() {
        assert_eq!(
            refusal(call("sip:carol@corp.example", "+14255550142", None)).rule,
            "CVW-1"
        );
        assert_eq!(
            refusal(call("sip:eve@corp.example", "+14255550142", None)).rule,
            "CVW-15"
        );
    }

    #[test]
    fn cvw_15_emergency_numbers_are_refused_with_dial_from_your_desk_phone() {
        // The example deployment names no country: short numbers in international form
        // are still read as the emergency numbers they are.
        for dest in [
            "911",
            "tel:112",
            "sip:999@corp.example",
            "+911",
            "+1 911",
            "tel:+44-999",
        ] {
            let r = refusal(call("sip:alice@corp.example", dest, None));
            assert_eq!(r.rule, "CVW-15", "{dest}");
            assert!(
                r.explanation.contains("dial from your desk phone"),
                "{dest}"
            );
        }
        // Nor may the callback leg ring one.
        let r = refusal(call("sip:alice@corp.example", "+14255550142", Some("911")));
        assert!(r.explanation.contains("desk phone"));
    }

    /// A US deployment whose PBX wants `9` for an outside line.
    fn us_call(destination: &str, pick: Option<&str>) -> Decision {
        let mut pairs = crate::testkit::config_pairs();
        pairs.push(("country_code".into(), "1".into()));
        pairs.push(("outside_line_prefix".into(), "9".into()));
        let config = match Config::parse(&pairs) {
            Ok(parsed) => parsed.config,
            Err(e) => panic!("{e}"),
        };
        let req = ClickToCall {
            user: "sip:alice@corp.example".into(),
            destination: destination.into(),
            callback_override: pick.map(str::to_owned),
        };
        on_click_to_call(&config, &req, &FakeServices::example())
    }

    #[test]
    fn cvw_15_911_as_a_us_user_dials_it_is_refused_in_every_form() {
        for dest in [
            "9911",
            "9-1-911",
            "1 911",
            "+1 (911)",
            "911#",
            "tel:911;phone-context=+1",
            "sip:9911@corp.example",
            "tel:9-911",
        ] {
            let r = refusal(us_call(dest, None));
            assert!(r.explanation.contains("Emergency"), "{dest}: {r:?}");
        }
        let r = refusal(us_call("+14255550142", Some("9 911")));
        assert!(r.explanation.contains("Emergency"), "{r:?}");
    }

    #[test]
    fn cvw_15_the_outside_line_cannot_hide_a_premium_number() {
        for dest in [
            "9 1 (900) 555-0123",
            "1-900-555-0123",
            "900 555 0123",
            "9 011 44 909 1234",
        ] {
            let r = refusal(us_call(dest, None));
            assert_eq!((r.code, r.rule.as_str()), (403, "CVW-15"), "{dest}");
        }
        let r = refusal(us_call("+14255550142", Some("9-1-900-555-0123")));
        assert_eq!(r.rule, "CVW-15");
    }

    #[test]
    fn cvw_15_the_pbx_gets_the_number_without_outside_line_or_separators() {
        let p = plan(us_call("9 (425) 555-0142", None));
        assert_eq!(p.callee.uri, "sip:+14255550142@pbx.corp.example;user=phone");
        let p = plan(us_call("tel:555-0142;phone-context=+1-425", None));
        assert_eq!(p.callee.uri, "sip:+14255550142@pbx.corp.example;user=phone");
        let p = plan(us_call("+14255550142", Some("9 425 555 0177")));
        assert_eq!(
            p.callback.uri,
            "sip:+14255550177@pbx.corp.example;user=phone"
        );
    }

    #[test]
    fn cvw_15_feature_codes_are_refused_not_sent_to_the_pbx() {
        for dest in [
            "*72 425 555 0142",
            "sip:%2A72%234255550142@corp.example",
            "#31#4255550142",
        ] {
            let r = refusal(call("sip:alice@corp.example", dest, None));
            assert_eq!((r.code, r.rule.as_str()), (484, "CVW-15"), "{dest}");
        }
    }

    #[test]
    fn cvw_43_the_voicemail_pilot_through_the_outside_line_is_refused() {
        assert_eq!(refusal(us_call("9 1 425 555 9000", None)).rule, "CVW-43");
    }

    #[test]
    fn cvw_15_premium_destinations_and_picks_are_refused() {
        let r = refusal(call("sip:alice@corp.example", "+1 900 555 0123", None));
        assert_eq!((r.code, r.rule.as_str()), (403, "CVW-15"));
        let r = refusal(call(
            "sip:alice@corp.example",
            "+14255550142",
            Some("+44 909 1234"),
        ));
        assert_eq!(r.rule, "CVW-15");
        assert_eq!(
            refusal(call("sip:alice@corp.example", "call bob", None)).code,
            484
        );
    }

    #[test]
    fn cvw_15_an_allow_list_limits_destinations() {
        let mut c = config();
        c.destination_allow_prefixes = vec!["1425".into()];
        let svc = FakeServices::example();
        let req = |d: &str| ClickToCall {
            user: "sip:alice@corp.example".into(),
            destination: d.into(),
            callback_override: None,
        };
        assert!(matches!(
            on_click_to_call(&c, &req("+14255550142"), &svc),
            Decision::Originate(_)
        ));
        assert!(matches!(
            on_click_to_call(&c, &req("+12065550142"), &svc),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn cvw_43_44_voicemail_pilot_and_call_trace_are_not_originated() {
        assert_eq!(
            refusal(call("sip:alice@corp.example", "+14255559000", None)).rule,
            "CVW-43"
        );
        assert_eq!(
            refusal(call("sip:alice@corp.example", "*57", None)).rule,
            "CVW-44"
        );
    }

    #[test]
    fn cvw_22_bridge_numbers_use_flow_i() {
        let p = plan(call("sip:alice@corp.example", "+1 425 555 8000", None));
        assert_eq!(p.flow, Flow::FlowI);
    }

    #[test]
    fn cvw_20_21_dial_out_rings_the_callback_number_and_joins_the_conference() {
        for kind in [MeetingKind::Scheduled, MeetingKind::MeetNow] {
            let req = DialOut {
                user: "sip:alice@corp.example".into(),
                conference_uri: "sip:conf-1234@meet.corp.example".into(),
                kind,
            };
            let p = plan(on_dial_out(&config(), &req, &FakeServices::example()));
            assert_eq!(
                p.callback.uri,
                "sip:+14255550199@pbx.corp.example;user=phone"
            );
            assert_eq!(p.callback.shows.uri, "tel:+14255550000");
            assert_eq!(p.callee.uri, "sip:conf-1234@meet.corp.example");
            assert_eq!(p.flow, Flow::FlowI);
        }
        let req = DialOut {
            user: "sip:carol@corp.example".into(),
            conference_uri: "sip:conf-1234@meet.corp.example".into(),
            kind: MeetingKind::Scheduled,
        };
        assert!(matches!(
            on_dial_out(&config(), &req, &FakeServices::example()),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn cvw_15_a_dial_out_to_an_emergency_number_is_refused() {
        for conference_uri in ["tel:+1-911", "sip:112@meet.corp.example"] {
            let req = DialOut {
                user: "sip:alice@corp.example".into(),
                conference_uri: conference_uri.into(),
                kind: MeetingKind::MeetNow,
            };
            let r = refusal(on_dial_out(&config(), &req, &FakeServices::example()));
            assert!(
                r.explanation.contains("Emergency"),
                "{conference_uri}: {r:?}"
            );
        }
    }

    #[test]
    fn cvw_40_users_with_conflicting_features_cannot_originate() {
        let mut alice = crate::testkit::users::alice();
        alice.team_call = true;
        let svc = FakeServices::with_users(vec![alice]);
        let req = ClickToCall {
            user: "sip:alice@corp.example".into(),
            destination: "+14255550142".into(),
            callback_override: None,
        };
        assert_eq!(
            refusal(on_click_to_call(&config(), &req, &svc)).rule,
            "CVW-40"
        );
    }
}
