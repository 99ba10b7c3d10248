//! The `cvw` binary as an operator uses it: `policy check`, `policy test` (CVW-53) and
//! `serve` with its control API and file watcher (CVW-52). Every server binds port 0 on
//! loopback and prints the address it got.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cvw::cli::client::{Answer, Control};
use cvw::policy::builtin::DEFAULT_POLICY_PATH;
use serde_json::Value;
use sha2::{Digest, Sha256};

const CVW: &str = env!("CARGO_BIN_EXE_cvw");
const TOKEN: &str = "test-admin-token";

const DIRECTORY: &str = r#"
[policy.config]
global_caller_id = "+14255550000"
pbx_trunk = "sip:127.0.0.1:5090"
pbx_domain = "pbx.corp.example"
desk_ring_timeout_ms = 15000
pbx_voicemail_timeout_ms = 20000
emergency_numbers = ["911", "112", "999"]

[policies.global]
enabled = true
admin_callback_number = "+14255550100"

[[users]]
uc_address = "sip:alice@corp.example"
display_name = "Alice Smith"
line_uri = "tel:+14255550101"
"#;

/// A fresh folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("cvw-cli-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cvw(args: &[&str]) -> Output {
    Command::new(CVW)
        .args(args)
        .env_remove("CVW_ADMIN_TOKEN")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn default_policy() -> Vec<u8> {
    std::fs::read(DEFAULT_POLICY_PATH).expect("the default policy is built by host/build.rs")
}

/// The default policy with a custom section appended: the same behaviour, another digest,
/// so that a swap is visible.
fn variant(tag: &str) -> Vec<u8> {
    let mut wasm = default_policy();
    let name = b"cvw-test";
    let payload = tag.as_bytes();
    let size = 1 + name.len() + payload.len();
    assert!(size < 128 && name.len() < 128, "one-byte LEB128 sizes");
    wasm.extend([0u8, size as u8, name.len() as u8]);
    wasm.extend(name);
    wasm.extend(payload);
    wasm
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn policy_check_shows_contract_hooks_and_accepts_the_directory() {
    let dir = TempDir::new("check");
    let directory = dir.write("directory.toml", DIRECTORY);
    let out = cvw(&[
        "policy",
        "check",
        DEFAULT_POLICY_PATH,
        "--directory",
        directory.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("contract:  cvw:policy@1.0.0"), "{stdout}");
    assert!(
        stdout.contains(
            "export:    cvw:policy/hooks@1.0.0 (describe, configure, check-user, on-request"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("import:    cvw:policy/directory@1.0.0 (lookup)"),
        "{stdout}"
    );
    assert!(stdout.contains("directory: 1 users accepted"), "{stdout}");
}

#[test]
fn policy_check_refuses_a_file_that_is_not_a_component() {
    let dir = TempDir::new("garbage");
    let garbage = dir.write("garbage.wasm", "not wasm at all");
    let directory = dir.write("directory.toml", DIRECTORY);
    let out = cvw(&[
        "policy",
        "check",
        garbage.to_str().unwrap(),
        "--directory",
        directory.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("garbage.wasm: not a WebAssembly file"),
        "{stderr}"
    );
}

#[test]
fn cvw_4_policy_check_names_the_user_check_user_refuses() {
    let dir = TempDir::new("check-user");
    let directory = dir.write("directory.toml", format!("{DIRECTORY}delegation = true\n"));
    let out = cvw(&[
        "policy",
        "check",
        DEFAULT_POLICY_PATH,
        "--directory",
        directory.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("check-user refused user sip:alice@corp.example"),
        "{stderr}"
    );
}

#[test]
fn cvw_53_the_shipped_scenarios_pass() {
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios");
    let out = cvw(&[
        "policy",
        "test",
        DEFAULT_POLICY_PATH,
        scenarios.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(" passed, 0 failed, 0 could not run"),
        "{stdout}"
    );
}

#[test]
fn cvw_53_a_wrong_expectation_fails_naming_scenario_and_difference() {
    let dir = TempDir::new("wrong-scenario");
    dir.write("directory.toml", DIRECTORY);
    let scenario = dir.write(
        "wrong.toml",
        r#"
name = "CVW-51: desk phone rings for 12 s"
directory = "directory.toml"
[request]
method = "INVITE"
uri = "sip:alice@corp.example"
from = "\"Bob\" <sip:bob@corp.example>"
to = "sip:alice@corp.example"
source = "uc"
contacts = [{ uri = "sip:alice@127.0.0.1:5071;transport=tcp" }]
[expect]
decision = "fork"
targets = [{ label = "desk", ring_timeout_ms = 12000 }, { label = "client" }]
"#,
    );
    let out = cvw(&[
        "policy",
        "test",
        DEFAULT_POLICY_PATH,
        scenario.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "FAIL  CVW-51: desk phone rings for 12 s ({})",
            scenario.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("targets[0].ring_timeout_ms: expected 12000, got 15000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("0 passed, 1 failed, 0 could not run"),
        "{stdout}"
    );
}

#[test]
fn cvw_53_an_unreadable_scenario_fails_the_run() {
    let dir = TempDir::new("missing-scenario");
    let missing = dir.0.join("missing.toml");
    let out = cvw(&[
        "policy",
        "test",
        DEFAULT_POLICY_PATH,
        missing.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("ERROR") && stdout.contains("missing.toml"),
        "{stdout}"
    );
}

/// A running `cvw serve`, killed when dropped.
struct Server {
    child: Child,
    url: String,
    control: Control,
    dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.0.join("serve.log")).unwrap_or_default();
            eprintln!("--- cvw serve log ---\n{log}");
        }
    }
}

impl Server {
    fn start(name: &str, module: &[u8]) -> Server {
        let dir = TempDir::new(name);
        dir.write("directory.toml", DIRECTORY);
        dir.write("policy.wasm", module);
        let config = dir.write(
            "cvw.toml",
            "directory = \"directory.toml\"\n\
             [policy]\nmodule = \"policy.wasm\"\n\
             [control]\nlisten = \"127.0.0.1:0\"\n\
             [decision]\njsonrpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n",
        );
        let mut child = Command::new(CVW)
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("CVW_ADMIN_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.0.join("serve.log")).unwrap())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let url = loop {
            let mut line = String::new();
            assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "cvw serve exited");
            if let Some(url) = line.trim().strip_prefix("control: ") {
                break url.to_string();
            }
        };
        let control = Control::new(&url, TOKEN).unwrap();
        let server = Server {
            child,
            url,
            control,
            dir,
        };
        // The first answer comes once the first policy is published.
        assert_eq!(server.policy()["generation"], 1);
        server
    }

    fn policy(&self) -> Value {
        let answer = self.control.get("/v1/policy").unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        serde_json::from_str(&answer.body).unwrap()
    }

    /// Waits for the watcher: a file change is picked up after its debounce.
    fn wait_for_generation(&self, generation: u64) -> Value {
        let start = Instant::now();
        loop {
            let policy = self.policy();
            if policy["generation"] == generation || start.elapsed() > Duration::from_secs(20) {
                return policy;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn metric(&self, name: &str) -> u64 {
        let answer = self.control.get("/metrics").unwrap();
        assert_eq!(answer.status, 200);
        answer
            .body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{}", answer.body))
    }
}

fn error_of(answer: &Answer) -> String {
    let json: Value = serde_json::from_str(&answer.body).unwrap();
    json["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn serve_control_api_requires_the_admin_token() {
    let server = Server::start("serve-auth", &default_policy());
    let anonymous = Control::new(&server.url, "wrong").unwrap();
    for path in ["/v1/policy", "/metrics"] {
        assert_eq!(anonymous.get(path).unwrap().status, 401, "{path}");
    }
    let swap = anonymous
        .post("/v1/policy", "application/wasm", &variant("x"))
        .unwrap();
    assert_eq!(swap.status, 401);
    assert_eq!(
        anonymous
            .post("/v1/directory/reload", "text/plain", b"")
            .unwrap()
            .status,
        401
    );
    assert_eq!(server.policy()["generation"], 1, "nothing was swapped");
}

// Issue 11: the control API is not held open by a client that never finishes its request
// (slowloris): its header timeout (10 s) closes the connection.
#[test]
fn serve_control_api_closes_a_client_that_never_finishes_its_request() {
    use std::io::{Read, Write};
    let server = Server::start("serve-slow", &default_policy());
    let addr = server
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /v1/policy HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(25)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = slow.read_to_end(&mut answer);
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(20),
        "still open after {waited:?} ({read:?})"
    );
    // Closed (or reset) without a response to a request it never finished.
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // The API still serves everyone else.
    assert_eq!(server.policy()["generation"], 1);
}

#[test]
fn cvw_52_swaps_via_api_and_file_show_in_get_policy_and_bad_modules_keep_the_old() {
    let first = default_policy();
    let server = Server::start("serve-swap", &first);
    let policy = server.policy();
    assert_eq!(policy["generation"], 1);
    assert_eq!(policy["digest"], sha256(&first));
    assert_eq!(policy["contract"], "cvw:policy@1.0.0");
    assert_eq!(policy["info"]["name"], "call-via-work");

    // Swap by upload.
    let uploaded = variant("upload");
    let answer = server
        .control
        .post("/v1/policy", "application/wasm", &uploaded)
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let policy = server.policy();
    assert_eq!(policy["generation"], 2);
    assert_eq!(policy["digest"], sha256(&uploaded));

    // Swap by path.
    let by_path = server.dir.write("other.wasm", variant("path"));
    let body = serde_json::json!({ "path": by_path }).to_string();
    let answer = server
        .control
        .post("/v1/policy", "application/json", body.as_bytes())
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(server.policy()["digest"], sha256(&variant("path")));

    // A bad upload is refused with the reason; generation 3 keeps serving.
    let answer = server
        .control
        .post("/v1/policy", "application/wasm", b"\0asm garbage")
        .unwrap();
    assert_eq!(answer.status, 422);
    assert!(
        error_of(&answer).contains("not a WebAssembly component"),
        "{}",
        answer.body
    );
    assert_eq!(server.policy()["generation"], 3);

    // Swap by changing the watched module file.
    let edited = variant("edited");
    server.dir.write("policy.wasm", &edited);
    let policy = server.wait_for_generation(4);
    assert_eq!(policy["generation"], 4, "the file change was not published");
    assert_eq!(policy["digest"], sha256(&edited));

    // A broken module file is refused and counted; the edited one keeps serving.
    let refused = server.metric("cvw_policy_refused_loads_total");
    server.dir.write("policy.wasm", "broken");
    let start = Instant::now();
    while server.metric("cvw_policy_refused_loads_total") == refused
        && start.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.metric("cvw_policy_refused_loads_total"), refused + 1);
    assert_eq!(server.policy()["digest"], sha256(&edited));
}

#[test]
fn cvw_3_a_bad_directory_reload_is_refused_with_its_line() {
    let server = Server::start("serve-directory", &default_policy());
    // The watcher may reload the file too; both read the same bad file and refuse it.
    server.dir.write(
        "directory.toml",
        DIRECTORY.replace("line_uri = \"tel:+14255550101\"", "line_uri = \"tel:abc\""),
    );
    let answer = server
        .control
        .post("/v1/directory/reload", "text/plain", b"")
        .unwrap();
    assert_eq!(answer.status, 422, "{}", answer.body);
    let line = DIRECTORY
        .lines()
        .position(|l| l.contains("line_uri"))
        .unwrap()
        + 1;
    assert!(
        error_of(&answer).ends_with(&format!(
            "directory.toml:{line}: user sip:alice@corp.example: line_uri \"tel:abc\" is not a number"
        )),
        "{}",
        answer.body
    );
    assert_eq!(server.policy()["generation"], 1);

    // CVW-4: a file that parses but the policy's check-user refuses is refused as well.
    server
        .dir
        .write("directory.toml", format!("{DIRECTORY}delegation = true\n"));
    let answer = server
        .control
        .post("/v1/directory/reload", "text/plain", b"")
        .unwrap();
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert!(
        error_of(&answer).contains("check-user refused user sip:alice@corp.example"),
        "{}",
        answer.body
    );
    assert_eq!(server.policy()["generation"], 1);

    server.dir.write(
        "directory.toml",
        DIRECTORY.replace("Alice Smith", "Alice S."),
    );
    let answer = server
        .control
        .post("/v1/directory/reload", "text/plain", b"")
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(server.policy()["generation"].as_u64().unwrap() >= 2);
}

#[test]
fn serve_refuses_to_start_without_an_admin_token() {
    let dir = TempDir::new("no-token");
    dir.write("directory.toml", DIRECTORY);
    let config = dir.write(
        "cvw.toml",
        "directory = \"directory.toml\"\n[control]\nlisten = \"127.0.0.1:0\"\n",
    );
    let out = cvw(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no admin token"), "{stderr}");
}

#[test]
fn cvw_52_policy_swap_and_status_commands_talk_to_serve() {
    let server = Server::start("serve-commands", &default_policy());
    let module = server.dir.write("next.wasm", variant("swap-command"));
    let with_token = |args: &[&str]| {
        Command::new(CVW)
            .args(args)
            .env("CVW_ADMIN_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    let out = with_token(&[
        "policy",
        "swap",
        module.to_str().unwrap(),
        "--control",
        &server.url,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("generation: 2"),
        "{}",
        text(&out.stdout)
    );

    let out = with_token(&["status", "--control", &server.url]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("generation: 2"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "digest:     sha256:{}",
            sha256(&variant("swap-command"))
        )),
        "{stdout}"
    );
    assert!(stdout.contains("policy:     call-via-work "), "{stdout}");

    let garbage = server.dir.write("garbage.wasm", "garbage");
    let out = with_token(&[
        "policy",
        "swap",
        garbage.to_str().unwrap(),
        "--control",
        &server.url,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("HTTP 422"),
        "{}",
        text(&out.stderr)
    );

    let out = cvw(&["status", "--control", &server.url]);
    assert!(!out.status.success(), "no token, no status");
}

#[tokio::test]
async fn serve_run_ends_every_task_when_shutdown_resolves() {
    let dir = TempDir::new("shutdown");
    dir.write("directory.toml", DIRECTORY);
    let config_path = dir.write(
        "cvw.toml",
        "directory = \"directory.toml\"\n[decision]\njsonrpc = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n",
    );
    let config = cvw::daemon::ServeConfig::load(&config_path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let token = cvw::admin::AdminToken::new(TOKEN).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cvw::daemon::run(config, listener, token, async {
        let _ = stopped.await;
    }));

    let control = Control::new(&url, TOKEN).unwrap();
    let answer = tokio::task::spawn_blocking(move || control.get("/v1/policy"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);

    stop.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), server).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "serve::run did not end cleanly: {ended:?}"
    );
    let after = Control::new(&url, TOKEN).unwrap();
    let refused = tokio::task::spawn_blocking(move || after.get("/v1/policy"))
        .await
        .unwrap();
    assert!(
        refused.is_err(),
        "the control API still answers after shutdown"
    );
}

#[test]
fn cvw_3_an_edited_directory_file_is_republished_by_the_watcher() {
    let server = Server::start("serve-directory-watch", &default_policy());
    let refused = server.metric("cvw_policy_refused_loads_total");
    server.dir.write(
        "directory.toml",
        format!(
            "{DIRECTORY}\n[[users]]\nuc_address = \"sip:bob@corp.example\"\nline_uri = \"tel:+14255550102\"\n"
        ),
    );
    let policy = server.wait_for_generation(2);
    assert_eq!(
        policy["generation"], 2,
        "the directory change was not published"
    );
    assert_eq!(policy["digest"], sha256(&default_policy()), "same module");
    assert_eq!(server.metric("cvw_policy_refused_loads_total"), refused);
}
