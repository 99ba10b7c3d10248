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
    if config
        .emergency_numbers
        .iter()
        .any(|e| numbers::same(e, &dialled))
    {
        return Err(emergency_refusal());
    }
    if let Some(limit) = limits::destination_limit(config, &dialled) {
        return Err(limit.refusal());
    }
    allowed(
        config,
        &dialled,
        "You cannot call this number through Call via Work.",
    )?;
    Ok(Callee {
        uri: numbers::pbx_uri(&dialled, &config.pbx_uri_suffix),
        number: Some(dialled),
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

/// CVW-15 toll-fraud guard: the deny prefixes win; a non-empty allow list must match.
fn allowed(config: &Config, number: &str, explanation: &str) -> Result<(), Refusal> {
    let denied = numbers::has_prefix(number, &config.destination_deny_prefixes);
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
        if config
            .emergency_numbers
            .iter()
            .any(|e| numbers::same(e, &number))
        {
            return Err(emergency_refusal());
        }
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
