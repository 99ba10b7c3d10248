//! A third-party SIP tool (SIPp) as the caller.

use super::*;

/// SIPp, where the test installs it (`scripts/setup`); fails, never skips, without it.
fn sipp() -> PathBuf {
    ["/usr/bin/sipp", "/usr/local/bin/sipp"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("sipp is not installed: run scripts/setup (apt-get install sip-tester)")
}

/// A third-party SIP tool as the caller (SIPp, its own scenario file) sees what our phones
/// see (CVW-30, CVW-31): Alice's desk and both soft clients ring, the client that answers
/// gets the call and SIPp's BYE, the others are cancelled as completed elsewhere.
async fn cvw30_31_with_sipp_as_the_caller(proxy: Proxy) {
    let mut w = World::new(proxy).await;
    let (mut c1, mut c2) = w.alice_clients().await;
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/sipp/call-and-hang-up.xml");
    let port = support::process::free_port().to_string();
    let media = support::process::free_port().to_string();
    let mut cmd = std::process::Command::new(sipp());
    cmd.arg("-sf")
        .arg(&scenario)
        .args(["-s", "alice", "-i", "127.0.0.1", "-p", &port, "-mp", &media])
        .args(["-m", "1", "-l", "1", "-timeout", "20", "-timeout_error"])
        .arg("-nostdin")
        .arg(w.sip.to_string())
        .stdin(std::process::Stdio::null());
    let sipp = tokio::task::spawn_blocking(move || cmd.output());

    let desk = w.pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;
    let i2 = c2.expect_invite(WAIT).await;
    assert_eq!(uri_user(&desk), ALICE_DESK);
    assert_eq!(
        i1.headers.call_id(),
        desk.headers.call_id(),
        "one call, three branches"
    );
    assert_eq!(i2.headers.call_id(), desk.headers.call_id());
    // The three 180s must reach the proxy before the answer: a branch still silent when
    // the 2xx arrives is cancelled with `Reason: SIP;cause=200` and no text.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c1.answer(&i1);
    let desk_cancel = w.pbx.gets_request(Method::Cancel, WAIT).await;
    let client_cancel = c2.gets_request(Method::Cancel, WAIT).await;
    let bye = c1.gets_request(Method::Bye, WAIT).await;
    if let Some(b) = &bye {
        c1.send(c1.response_to(b, 200, "OK"));
    }
    let out = tokio::time::timeout(Duration::from_secs(30), sipp)
        .await
        .expect("SIPp ends")
        .expect("SIPp task")
        .expect("SIPp runs");
    let sipp_said = format!(
        "SIPp ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_completed_elsewhere(&desk_cancel.expect(&sipp_said), "desk");
    assert_completed_elsewhere(&client_cancel.expect(&sipp_said), "alice-tcp");
    let bye = bye.expect(&sipp_said);
    assert_eq!(
        bye.headers.call_id(),
        i1.headers.call_id(),
        "SIPp's hang-up reaches the client"
    );
    assert!(out.status.success(), "the call failed for {sipp_said}");
}

per_proxy!(cvw30_31_with_sipp_as_the_caller);
