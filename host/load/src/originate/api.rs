//! Held calls as users place them: `POST /v1/calls` to the click-to-call API served
//! in this process, the default policy planning each call, `DELETE` to hang up. The
//! memory per call then includes what the API keeps (the call's record, its event
//! feed, its follower task), which a real `cvw serve` keeps too.

use super::SETTLE;
use crate::measure::Footprint;
use crate::phones::PhonesChild;
use crate::service::{ALICE, alice_policy};
use anyhow::bail;
use cvw::calllog::JsonLinesFile;
use cvw::click_to_call::auth::Tokens;
use cvw::click_to_call::calls::Calls;
use cvw::click_to_call::limits::{LimitSettings, Limits};
use cvw::click_to_call::{Api, router};
use cvw::origination::CallState;
use cvw::origination::sip::SipOriginator;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "load-token";

pub struct Served {
    addr: SocketAddr,
    calls: Arc<Calls>,
}

/// The API with Alice's token, limits out of the way, and a policy whose PBX
/// (trunk and domain) is the phones' desk address: both legs go straight there.
pub async fn serve(
    tmp: &std::path::Path,
    phones: &PhonesChild,
    originator: SipOriginator,
) -> anyhow::Result<Served> {
    // Both legs' numbers go straight to the phones' desk address.
    let desk = phones.desk.to_string();
    let policy = alice_policy(tmp, "api-directory.toml", phones.desk, &desk)?;
    let calls = Arc::new(Calls::default());
    let api = Arc::new(Api {
        policy,
        originator: Arc::new(originator),
        tokens: Tokens::single(ALICE, TOKEN),
        throttle: cvw::click_to_call::throttle::AuthThrottle::new(Default::default()),
        limits: Arc::new(Limits::new(LimitSettings {
            calls_per_window: u32::MAX,
            window_s: 1,
            max_concurrent: u32::MAX,
        })),
        calls: calls.clone(),
        call_log: Arc::new(JsonLinesFile::open(&tmp.join("api-calls.jsonl"))?),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router(api)).await });
    Ok(Served { addr, calls })
}

/// One request as Alice's client; the status and the body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let body = body.map(str::to_owned);
    Ok(cvw_testkit::http::request(&addr.to_string(), method, path, Some(TOKEN), body).await?)
}

/// Alice clicks to call the callee; the new call's id.
async fn place(addr: SocketAddr) -> anyhow::Result<String> {
    let (code, body) = http(
        addr,
        "POST",
        "/v1/calls",
        Some(r#"{"destination":"+14255550142"}"#),
    )
    .await?;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    match (code, v["id"].as_str()) {
        (201, Some(id)) => Ok(id.to_owned()),
        _ => bail!("POST /v1/calls answered {code}: {body}"),
    }
}

fn state(calls: &Calls, id: &str) -> Option<CallState> {
    calls.get(id, ALICE).and_then(|c| c.snapshot().state)
}

async fn wait_all(
    calls: &Calls,
    ids: &[String],
    done: impl Fn(Option<CallState>) -> bool,
) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let n = ids.iter().filter(|id| done(state(calls, id))).count();
        if n == ids.len() || tokio::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn held_calls(api: Served, phones: &PhonesChild, hold: usize) -> anyhow::Result<()> {
    let Served { addr, calls } = api;
    // One call first: the policy's instance, the API's first-use allocations.
    place(addr).await?;
    tokio::time::sleep(SETTLE).await;
    let before = Footprint::now(phones.pid());
    let mut ids = Vec::with_capacity(hold);
    for _ in 0..hold {
        ids.push(place(addr).await?);
    }
    let up = wait_all(&calls, &ids, |s| s == Some(CallState::Connected)).await;
    if up < ids.len()
        && let Some(id) = ids
            .iter()
            .find(|id| state(&calls, id) != Some(CallState::Connected))
    {
        println!("through the API: call {id} is {:?}", state(&calls, id));
    }
    tokio::time::sleep(SETTLE).await;
    let after = Footprint::now(phones.pid());
    // The id strings this tool keeps are not the host's.
    let own = ids.iter().map(|i| i.capacity()).sum::<usize>();
    let (heap, rss, phones_rss) = before.per_call(&after, up, own);
    println!(
        "through the API: {up} of {hold} calls connected at once: host live heap {heap:.0} bytes per call, RSS {} -> {} KiB = {rss:.0} bytes per call; phones {phones_rss:.0} bytes per call",
        before.host_kib, after.host_kib
    );
    for id in &ids {
        let (code, body) = http(addr, "DELETE", &format!("/v1/calls/{id}"), None).await?;
        if code >= 300 {
            bail!("DELETE /v1/calls/{id} answered {code}: {body}");
        }
    }
    // Ended calls beyond the API's memory of them are forgotten: ended too.
    let ended = wait_all(&calls, &ids, |s| !matches!(s, Some(CallState::Connected))).await;
    println!("through the API: {ended} of {hold} calls ended after DELETE");
    Ok(())
}
