//! Builds the policy components (`cvw-guest`, `cvw-office-hours`,
//! `cvw-misbehaving-policy`) for `wasm32-wasip2` with a nested cargo, so that a plain
//! `cargo build`/`cargo test` of the host always carries up-to-date policies.
//!
//! The pattern is wasmtime's `crates/test-programs/artifacts/build.rs`: the nested build
//! uses its own target directory under `OUT_DIR` (no wait on the outer build lock) and an
//! environment without the outer build's flags (host RUSTFLAGS, a clippy wrapper, the
//! target triple) that would otherwise leak into the wasm build. Every input listed in the
//! components' `.d` files becomes a `rerun-if-changed`.
//!
//! A failed guest build does not fail the host build: the workspace is shared by people
//! editing the guests right now, and a broken guest must not stop everyone else's host
//! build. The failure is printed as a cargo warning and recorded in the generated
//! `BUILD_ERROR`, which `policy::builtin` reports when the default policy is asked for.
//!
//! Owns: the nested build and `$OUT_DIR/policies.rs`. Copies the components to
//! `<target-dir>/policies/*.wasm` (best effort) for `cvw policy test target/policies/...`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (package, artifact file stem, generated path constant) of every component the host
/// embeds or tests with. The first one is the default policy.
const GUESTS: [(&str, &str, &str); 3] = [
    ("cvw-guest", "cvw_guest", "DEFAULT_POLICY_PATH"),
    ("cvw-office-hours", "cvw_office_hours", "OFFICE_HOURS_PATH"),
    (
        "cvw-misbehaving-policy",
        "cvw_misbehaving_policy",
        "MISBEHAVING_PATH",
    ),
];
const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "guest";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    // host/cvw → the workspace root.
    let workspace = manifest_dir
        .ancestors()
        .nth(2)
        .unwrap_or(&manifest_dir)
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    let target_dir = out_dir.join("guest-target");

    for input in [
        "wit",
        "Cargo.toml",
        "Cargo.lock",
        "model/Cargo.toml",
        "guest/component/Cargo.toml",
        "guest/logic/Cargo.toml",
        "examples/policies/office-hours/Cargo.toml",
        "tests/fixtures/misbehaving-policy/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=CVW_SKIP_GUEST_BUILD");

    let error = if env::var_os("CVW_SKIP_GUEST_BUILD").is_some() {
        Some("CVW_SKIP_GUEST_BUILD is set".to_string())
    } else {
        build_guests(&workspace, &target_dir).err()
    };
    if let Some(error) = &error {
        for line in error.lines().take(30) {
            println!("cargo:warning=policy components not built: {line}");
        }
        // Without artifacts there is no `.d` file: watch the sources so that fixing the
        // guest re-runs this script.
        for dir in [
            "model/src",
            "guest/component/src",
            "guest/logic/src",
            "examples/policies/office-hours/src",
            "tests/fixtures/misbehaving-policy/src",
        ] {
            println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
        }
    }

    let artifact_dir = target_dir.join(TARGET).join(PROFILE);
    let mut artifacts = Vec::new();
    for (_, stem, constant) in GUESTS {
        let wasm = artifact_dir.join(format!("{stem}.wasm"));
        if error.is_none() {
            rerun_for_dep_file(&artifact_dir.join(format!("{stem}.d")));
        }
        artifacts.push(Artifact {
            stem,
            constant,
            wasm,
        });
    }
    if error.is_none() {
        copy_to_target_dir(&out_dir, &artifacts);
    }
    write_generated(&out_dir, &artifacts, error.as_deref());
}

/// Runs the nested `cargo build`; `Err` carries cargo's stderr.
fn build_guests(workspace: &Path, target_dir: &Path) -> Result<(), String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--profile", PROFILE, "--target", TARGET])
        .arg("--target-dir")
        .arg(target_dir);
    for (package, _, _) in GUESTS {
        cmd.args(["-p", package]);
    }
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if leaks_into_nested_build(key) {
            cmd.env_remove(key);
        }
    }
    let output = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    // Progress lines hide the diagnostics in a cargo warning; keep only what went wrong.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let progress = [
        "Compiling",
        "Blocking",
        "Downloaded",
        "Downloading",
        "Updating",
        "Locking",
        "Adding",
    ];
    let diagnostics: Vec<&str> = stderr
        .lines()
        .filter(|line| !progress.iter().any(|p| line.trim_start().starts_with(p)))
        .collect();
    Err(diagnostics.join("\n"))
}

/// Variables of the outer build that would change what the nested build compiles.
/// Kept: CARGO_HOME, the registry/network settings, the jobserver (`CARGO_MAKEFLAGS`,
/// so both builds share the machine's cores).
fn leaks_into_nested_build(key: &str) -> bool {
    const KEEP: [&str; 4] = [
        "CARGO_HOME",
        "CARGO_MAKEFLAGS",
        "CARGO_NET_OFFLINE",
        "CARGO_HTTP_CAINFO",
    ];
    if KEEP.contains(&key) || key.starts_with("CARGO_REGISTRIES_") || key.starts_with("CARGO_NET_")
    {
        return false;
    }
    key.starts_with("CARGO_")
        || matches!(
            key,
            "RUSTFLAGS"
                | "RUSTDOCFLAGS"
                | "RUSTC_WRAPPER"
                | "RUSTC_WORKSPACE_WRAPPER"
                | "TARGET"
                | "HOST"
                | "PROFILE"
                | "OPT_LEVEL"
                | "DEBUG"
                | "OUT_DIR"
        )
}

/// Turns `out.wasm: a.rs b.rs` (spaces in paths escaped as `\ `) into rerun lines.
fn rerun_for_dep_file(dep_file: &Path) {
    let Ok(text) = fs::read_to_string(dep_file) else {
        return;
    };
    for line in text.lines() {
        let Some((_, deps)) = line.split_once(": ") else {
            continue;
        };
        let mut current = String::new();
        let mut chars = deps.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek() == Some(&' ') => {
                    current.push(' ');
                    chars.next();
                }
                ' ' => flush(&mut current),
                c => current.push(c),
            }
        }
        flush(&mut current);
    }

    fn flush(path: &mut String) {
        if !path.is_empty() {
            println!("cargo:rerun-if-changed={path}");
            path.clear();
        }
    }
}

/// The target directory is the ancestor of OUT_DIR holding cargo's `CACHEDIR.TAG`.
fn copy_to_target_dir(out_dir: &Path, artifacts: &[Artifact]) {
    let Some(target) = out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
    else {
        return;
    };
    let dest = target.join("policies");
    if fs::create_dir_all(&dest).is_err() {
        return;
    }
    for Artifact { stem, wasm, .. } in artifacts {
        if let Err(e) = fs::copy(wasm, dest.join(format!("{stem}.wasm"))) {
            println!(
                "cargo:warning=cannot copy {} to {}: {e}",
                wasm.display(),
                dest.display()
            );
        }
    }
}

struct Artifact {
    stem: &'static str,
    constant: &'static str,
    wasm: PathBuf,
}

fn write_generated(out_dir: &Path, artifacts: &[Artifact], error: Option<&str>) {
    let mut code = String::from("// @generated by host/build.rs\n");
    for Artifact { constant, wasm, .. } in artifacts {
        code.push_str(&format!(
            "pub const {constant}: &str = {:?};\n",
            wasm.display().to_string()
        ));
    }
    match (error, artifacts.first()) {
        (None, Some(guest)) => {
            code.push_str(&format!(
                "pub const DEFAULT_POLICY: &[u8] = include_bytes!({:?});\n",
                guest.wasm.display().to_string()
            ));
            code.push_str("pub const BUILD_ERROR: Option<&str> = None;\n");
        }
        _ => {
            code.push_str("pub const DEFAULT_POLICY: &[u8] = &[];\n");
            code.push_str(&format!(
                "pub const BUILD_ERROR: Option<&str> = Some({:?});\n",
                error.unwrap_or("")
            ));
        }
    }
    let path = out_dir.join("policies.rs");
    if let Err(e) = fs::write(&path, code) {
        println!("cargo:warning=cannot write {}: {e}", path.display());
    }
}
