//! The main job: the example setup on one machine — Kamailio 5.6 with
//! `examples/kamailio/kamailio.cfg` deciding by itself with `cvw.so` (the recommended way,
//! `cvw-module.cfg`), and `cvw serve` with `examples/cvw.toml` for click to call, on their
//! default loopback ports — then a simultaneous ring between demo phones, told step by
//! step, then serving until Ctrl-C so a SIP phone or sipp can be pointed at it.
//!
//! Run with `scripts/demo` (it installs Kamailio if missing and builds first).
//! The demo phones are the end-to-end tests' own (`cvw_sip::testing::wire`).

use cvw_testkit as support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use cvw::admin::AdminToken;
use cvw::daemon::{self, ServeConfig};
use cvw_sip::message::Message;
use cvw_sip::testing::wire::Phone;
use tokio::net::UdpSocket;

const KAMAILIO: &str = "127.0.0.1:5060";
const PBX_TRUNK: &str = "127.0.0.1:5090";
const WAIT: Duration = Duration::from_secs(5);

/// Kamailio in the foreground of its own process group, stopped when dropped.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        // Kamailio forks its workers into the group it leads: signal the whole group.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The example config with its run directory and address list pointed at this checkout,
/// deciding with `cvw.so`: the default policy (what `cvw serve`'s "built-in" is) and the
/// same directory as `cvw serve`.
fn start_kamailio(run: &Path) -> anyhow::Result<Proxy> {
    use std::os::unix::process::CommandExt;
    let example = workspace().join("examples/kamailio");
    let policy = run.join("policy.wasm");
    std::fs::write(&policy, cvw::policy::builtin::default_policy()?)?;
    let path = |p: &Path| p.display().to_string();
    let cfg = support::kamailio::write_config(
        run,
        &[
            ("CVW_RUNDIR".into(), path(run)),
            (
                "CVW_ADDRESS_FILE".into(),
                path(&example.join("cvw-address.list")),
            ),
            (
                "CVW_MODULE_FILE".into(),
                path(&support::kamailio::module_path("debug")?),
            ),
            ("CVW_POLICY".into(), path(&policy)),
            (
                "CVW_DIRECTORY".into(),
                path(&workspace().join("examples/directory.toml")),
            ),
            ("CVW_CALL_LOG".into(), path(&run.join("calls.jsonl"))),
        ],
        None,
    )?;
    let log = std::fs::File::create(run.join("kamailio.log"))?;
    let bin = support::kamailio::binary()?;
    let check = Command::new(&bin)
        .args(["-A", "WITH_CVW_MODULE", "-c", "-f"])
        .arg(&cfg)
        .output()?;
    if !check.status.success() {
        bail!(
            "kamailio rejects {}:\n{}",
            cfg.display(),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let child = Command::new(bin)
        .args(["-A", "WITH_CVW_MODULE", "-f"])
        .arg(&cfg)
        .args(["-DD", "-E", "-m", "256", "-M", "16", "-P"])
        .arg(run.join("kamailio.pid"))
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start kamailio")?;
    Ok(Proxy(child))
}

fn say(text: &str) {
    println!("{text}");
}

fn show(who: &str, m: impl Into<Message>, headers: &[&str]) {
    let m = m.into();
    println!("    {who:<13} {}", m.start_line());
    for h in headers {
        if let Some(v) = m.headers().get(h) {
            println!("    {:<13}   {h}: {v}", "");
        }
    }
}

/// Alice's desk phone (behind the PBX trunk) and two soft clients ring at once; she
/// answers on her laptop; the others are cancelled as "completed elsewhere".
async fn simultaneous_ring(proxy: std::net::SocketAddr) -> anyhow::Result<()> {
    let pbx = UdpSocket::bind(PBX_TRUNK)
        .await
        .with_context(|| format!("the demo PBX trunk needs {PBX_TRUNK}"))?;
    let mut desk = Phone::with_udp("desk", proxy, pbx);
    let mut laptop = Phone::udp("laptop", proxy).await;
    let mut mobile = Phone::tcp("mobile", proxy).await;
    let mut dave = Phone::udp("dave", proxy).await;

    say("\n1. Alice's soft clients register (CVW-30 needs to know them)");
    laptop
        .register("alice", "corp.example", "UC-Laptop/1.0")
        .await;
    say(&format!(
        "    laptop        REGISTER sip:alice@corp.example from {} (UDP)",
        laptop.local
    ));
    mobile
        .register("alice", "corp.example", "UC-Mobile/1.0")
        .await;
    say(&format!(
        "    mobile        REGISTER sip:alice@corp.example from {} (TCP)",
        mobile.local
    ));

    say("\n2. Dave calls Alice from his UC client; the policy forks (CVW-30)");
    let mut call = dave.invite("sip:alice@corp.example", "sip:dave@corp.example", &[]);
    let at_desk = desk.expect_invite(WAIT).await;
    show(
        "desk (PBX)",
        at_desk.clone(),
        &["History-Info", "X-CVW-Leg"],
    );
    let at_laptop = laptop.expect_invite(WAIT).await;
    show("laptop", at_laptop.clone(), &[]);
    let at_mobile = mobile.expect_invite(WAIT).await;
    show("mobile", at_mobile.clone(), &[]);

    // Dave hears all three ring before Alice answers, as a person would: a branch whose
    // ringing reaches Kamailio only after the answer is not cancelled (tm cancels a
    // branch once it has replied, RFC 3261 §9.1), and the demo waited for that CANCEL.
    dave.expect_ringing(3, WAIT).await;

    say("\n3. Alice answers on her laptop: first answer wins (CVW-31)");
    laptop.answer(&at_laptop);
    let answer = dave.final_response(&mut call, WAIT).await;
    say(&format!("    dave          got {}", answer.start_line()));
    let cancel = desk.expect_cancel(&at_desk, WAIT).await;
    show("desk (PBX)", cancel, &["Reason"]);
    let cancel = mobile.expect_cancel(&at_mobile, WAIT).await;
    show("mobile", cancel, &["Reason"]);

    say("\n4. Dave hangs up");
    let (_, bye) = tokio::join!(dave.bye(&call), laptop.expect_bye(WAIT));
    show("laptop", bye, &[]);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,cvw=info".into()))
        .with_writer(std::io::stderr)
        .init();
    let run = workspace().join("target/demo");
    std::fs::create_dir_all(&run)?;
    let run = run.canonicalize()?;

    let mut config = ServeConfig::load(&workspace().join("examples/cvw.toml"))?;
    // Kamailio decides itself with cvw.so: no host on its call path to connect to evapi.
    config.decision.evapi = None;
    let token = std::env::var(cvw::admin::TOKEN_ENV).unwrap_or_else(|_| "demo-admin-token".into());
    let admin = AdminToken::new(&token).context("the admin token may not be empty")?;
    let control = tokio::net::TcpListener::bind(config.control.listen)
        .await
        .with_context(|| format!("control API address {} is taken", config.control.listen))?;
    let control_addr = config.control.listen;
    let decision_http = config
        .decision
        .http
        .context("examples/cvw.toml must open the HTTP decision service (Kamailio's hooks)")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let host = tokio::spawn(daemon::run(config, control, admin, async {
        let _ = stopped.await;
    }));
    // Start Kamailio only when the host listens (its hooks call the HTTP endpoint).
    let mut ready = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(decision_http).await.is_ok() {
            ready = true;
            break;
        }
        if host.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ready {
        let _ = stop.send(());
        match host.await {
            Ok(Err(e)) => bail!("cvw serve did not start: {e:#}"),
            _ => bail!("cvw serve did not open the decision service on {decision_http}"),
        }
    }
    let kamailio = start_kamailio(&run)?;
    say("cvw demo: Call via Work on Kamailio 5.6");
    say(&format!(
        "    kamailio      {KAMAILIO} (examples/kamailio/kamailio.cfg, log {}/kamailio.log)",
        run.display()
    ));
    say(&format!(
        "    cvw.so        in Kamailio's workers: the policy and examples/directory.toml, call log {}/calls.jsonl, kamcmd -s unix:{}/kamailio_ctl cvw.status",
        run.display(),
        run.display()
    ));
    say(&format!(
        "    cvw serve     control http://{control_addr}, click-to-call API http://127.0.0.1:8095, its user agent through Kamailio"
    ));
    // The workers are up once Kamailio answers on its SIP port.
    let mut up = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(KAMAILIO).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !up {
        say(&format!(
            "Kamailio did not listen on {KAMAILIO} within 10 s (see {}/kamailio.log)",
            run.display()
        ));
    }

    let proxy = KAMAILIO.parse()?;
    let demo = tokio::spawn(simultaneous_ring(proxy));
    match demo.await {
        Ok(Ok(())) => {
            say("\nSimultaneous ring works. The demo phones are gone; the setup keeps serving.")
        }
        Ok(Err(e)) => say(&format!("\nthe demo could not run: {e:#}")),
        Err(e) => say(&format!(
            "\nthe demo failed: {e} (see {}/kamailio.log)",
            run.display()
        )),
    }
    say(&format!(
        "Point a SIP phone or sipp at {KAMAILIO} (domain corp.example; the PBX trunk is {PBX_TRUNK}).\n\
         Click to call as Alice:\n    curl -s -H 'Authorization: Bearer alice-demo-token' -H 'Content-Type: application/json' \\\n         -d '{{\"destination\": \"+14255550142\"}}' http://127.0.0.1:8095/v1/calls\n\
         Running policy:  curl -s -H 'Authorization: Bearer {token}' http://{control_addr}/v1/policy\n\
         Ctrl-C stops."
    ));
    tokio::signal::ctrl_c().await?;
    say("stopping");
    let _ = stop.send(());
    let _ = host.await;
    drop(kamailio);
    Ok(())
}
