//! What no shipped policy asks for but the config must apply: per-branch From, next hop
//! and headers of a parallel fork, from a scripted evapi host.

use super::*;

/// The config's side of a parallel fork's per-branch data, for what the default policy
/// never asks for: a scripted evapi host answers with cvw's own encoding of a fork whose
/// second route has its own From and a next hop (an appended branch), and whose third has
/// a header of its own. Each lands on its branch only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_fork_applies_from_next_hop_and_headers_per_branch() {
    use cvw::decision::dialect::KamailioEvapi;
    use cvw::decision::transport::netstring;
    use cvw::policy::model::{Decision, Fork, ForkMode, Header, NameAddr, Target};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (kam, pbx_sock) = silent_host_setup(false).await;
    let pbx_addr = pbx_sock.local_addr().unwrap();
    let mut pbx = Phone::with_udp("pbx", kam.sip, pbx_sock);
    let mut c1 = Phone::udp("alice-udp", kam.sip).await;
    c1.register("alice", DOMAIN, "UC-Desktop/1.0").await;
    let mut c2 = Phone::tcp("alice-tcp", kam.sip).await;
    c2.register("alice", DOMAIN, "UC-Mobile/1.0").await;
    let header = |name: &str, value: &str| Header {
        name: name.into(),
        value: value.into(),
    };
    let target = |label: &str, uri: String| Target {
        label: label.into(),
        uri,
        next_hop: None,
        from: None,
        asserted_identity: None,
        headers: vec![],
        ring_timeout_ms: None,
    };
    let fork = Decision::Fork(Fork {
        mode: ForkMode::Parallel,
        targets: vec![
            Target {
                next_hop: Some(format!("sip:{pbx_addr}")),
                headers: vec![header("X-CVW-Leg", "desk")],
                ..target(
                    "desk",
                    format!("sip:{ALICE_DESK}@pbx.corp.example;user=phone"),
                )
            },
            Target {
                // Reached only through its next hop: the name does not resolve.
                next_hop: Some(format!("sip:{}", c1.local)),
                from: Some(NameAddr {
                    display: "Call via Work".into(),
                    uri: "sip:+14255550000@corp.example".into(),
                }),
                ..target("client", "sip:alice@alice-udp.invalid".into())
            },
            Target {
                headers: vec![header("X-Only", "the TCP client")],
                ..target("client", format!("sip:alice@{};transport=tcp", c2.local))
            },
        ],
    });

    let (mut host, mut frames) = evapi_host_of_the_test(&kam, "scripted").await;
    let answering = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            while let Some(frame) = NetstringCodec.decode(&mut frames).unwrap() {
                let event: serde_json::Value = serde_json::from_slice(&frame).unwrap();
                let id = |k: &str| event[k].as_u64().unwrap() as u32;
                let answer = KamailioEvapi::new(id("tindex"), id("tlabel"))
                    .decision(&fork)
                    .unwrap();
                let frame = netstring::encode(answer.as_str().as_bytes());
                host.write_all(&frame).await.unwrap();
            }
            let n = host.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return; // Kamailio stopped
            }
            frames.extend_from_slice(&buf[..n]);
        }
    });

    let mut bob = Phone::udp("bob", kam.sip).await;
    let mut call = bob.invite(ALICE, BOB, &[]);
    let desk = pbx.expect_invite(WAIT).await;
    let i1 = c1.expect_invite(WAIT).await;
    let i2 = c2.expect_invite(WAIT).await;
    assert_eq!(uri_user(&desk), ALICE_DESK);
    assert_eq!(desk.headers.get("X-CVW-Leg"), Some("desk"));
    assert!(desk.headers.get("From").unwrap_or("").contains(BOB));
    assert_eq!(
        i1.uri, "sip:alice@alice-udp.invalid",
        "sent to its next hop"
    );
    let from = i1.headers.get("From").unwrap_or("");
    assert!(
        from.starts_with("Call via Work <sip:+14255550000@corp.example>;tag="),
        "the second branch's own From: {from}"
    );
    assert_eq!(i1.headers.get("X-CVW-Leg"), None);
    assert_eq!(i1.headers.get("X-Only"), None);
    assert!(i2.headers.get("From").unwrap_or("").contains(BOB));
    assert_eq!(i2.headers.get("X-Only"), Some("the TCP client"));
    assert_eq!(desk.headers.get("X-Only"), None);

    bob.cancel(&call);
    pbx.expect_cancel(&desk, WAIT).await;
    c1.expect_cancel(&i1, WAIT).await;
    c2.expect_cancel(&i2, WAIT).await;
    assert_eq!(bob.final_response(&mut call, WAIT).await.code, 487);
    answering.abort();
}
