//! The host under load: the default policy published with a directory of Alice alone,
//! and the decision service that serves it, started in this process. The modes drive it;
//! they do not configure it.

use anyhow::Context;
use cvw::decision::{DecisionService, Running};
use cvw::directory::Directory;
use cvw::policy::{PolicyHost, RuntimeSettings, builtin};
use std::net::SocketAddr;
use std::sync::Arc;

pub fn report_metrics(host: &PolicyHost) {
    let m = host.metrics();
    println!(
        "policy metrics: decisions={} failures={}",
        m.decisions,
        m.total_failures()
    );
}

pub const ALICE: &str = "sip:alice@corp.example";
pub const DESK: &str = "+14255550101";

/// The default policy published with a directory of Alice alone, her PBX trunk and
/// domain as given (written to `tmp/file`).
pub fn alice_policy(
    tmp: &std::path::Path,
    file: &str,
    pbx_trunk: SocketAddr,
    pbx_domain: &str,
) -> anyhow::Result<PolicyHost> {
    let dir = tmp.join(file);
    std::fs::write(
        &dir,
        format!(
            r#"[policy.config]
global_caller_id = "+14255550000"
pbx_trunk = "sip:{pbx_trunk}"
pbx_domain = "{pbx_domain}"
desk_ring_timeout_ms = 15000
pbx_voicemail_timeout_ms = 20000

[policies.global]
enabled = true

[[users]]
uc_address = "{ALICE}"
display_name = "Alice Smith"
line_uri = "tel:{DESK}"
"#
        ),
    )?;
    let host = PolicyHost::new(RuntimeSettings::default())?;
    let wasm = builtin::default_policy().context("default policy not built")?;
    host.publish(
        wasm,
        builtin::DEFAULT_ORIGIN,
        Arc::new(Directory::load(&dir)?),
    )?;
    Ok(host)
}

pub async fn start(
    tmp: &std::path::Path,
    pbx: SocketAddr,
) -> anyhow::Result<(PolicyHost, Running)> {
    let host = alice_policy(tmp, "directory.toml", pbx, "pbx.corp.example")?;
    let service = DecisionService::new(Arc::new(host.clone()))
        .start("127.0.0.1:0".parse()?, "127.0.0.1:0".parse()?)
        .await?;
    Ok((host, service))
}
