//! The `cvw` commands other than `serve`: `policy check`, `policy test`, `policy swap` and
//! `status`. Owns what they print (stdout is their output; logs go to stderr) and their
//! exit codes. Does not own loading or running policies ([`crate::policy`]), scenarios
//! ([`crate::scenario`]) or the admin API's server side ([`crate::admin`]).

/// `println!` that ignores a closed stdout (`cvw policy test ... | head`) instead of
/// panicking: the command's result is its exit code, not whether anyone read all lines.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod client;
pub mod inspect;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::directory::Directory;
use crate::policy::{PolicyHost, PolicyVersion, RuntimeSettings, builtin};
use crate::scenario::{Report, Scenario};

/// The argument that names the module compiled into this binary instead of a file.
pub const BUILT_IN: &str = "built-in";

/// The module bytes and the origin to report for them.
pub fn read_module(module: &str) -> anyhow::Result<(Vec<u8>, String)> {
    if module == BUILT_IN {
        return Ok((
            builtin::default_policy()?.to_vec(),
            builtin::DEFAULT_ORIGIN.to_string(),
        ));
    }
    let bytes = std::fs::read(module).with_context(|| format!("cannot read policy {module}"))?;
    Ok((bytes, module.to_string()))
}

/// `cvw policy check`: the component's shape, its describe(), then configure and
/// check-user against the directory. Any failure is an error naming the step.
pub fn check(module: &str, directory: &Path) -> anyhow::Result<()> {
    let (wasm, origin) = read_module(module)?;
    if !wasm.starts_with(b"\0asm") {
        anyhow::bail!("{origin}: not a WebAssembly file (it does not start with \\0asm)");
    }
    let shape = inspect::Shape::of(&wasm)
        .map_err(|e| anyhow::anyhow!("{origin}: not a WebAssembly component: {e:#}"))?;
    say!("module:    {origin} ({} bytes)", wasm.len());
    shape.print();
    let directory = Directory::load(directory)?;
    let users = directory.len();
    let host =
        PolicyHost::new(RuntimeSettings::default()).context("cannot start the policy runtime")?;
    let version = host.publish(&wasm, &origin, Arc::new(directory))?;
    print_version(&version);
    say!("directory: {users} users accepted by configure and check-user");
    say!("ok");
    Ok(())
}

pub fn print_version(version: &PolicyVersion) {
    say!("contract:  {}", version.contract);
    say!("policy:    {} {}", version.info.name, version.info.version);
    if !version.info.description.is_empty() {
        say!("           {}", version.info.description);
    }
    say!("digest:    sha256:{}", version.digest);
}

/// Scenario files named on the command line; a folder stands for its `*.toml` files.
pub fn scenario_files(args: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for arg in args {
        if arg.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(arg)
                .with_context(|| format!("cannot list {}", arg.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(arg.clone());
        }
    }
    Ok(files)
}

/// Totals of a `policy test` run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
}

impl Tally {
    pub fn success(&self) -> bool {
        self.failed == 0 && self.errors == 0 && self.passed > 0
    }
}

/// `cvw policy test`: one line per scenario, the differences of each failing one, totals.
pub fn test(module: &str, scenarios: &[PathBuf]) -> anyhow::Result<Tally> {
    let (wasm, origin) = read_module(module)?;
    let host =
        PolicyHost::new(RuntimeSettings::default()).context("cannot start the policy runtime")?;
    let mut tally = Tally::default();
    for file in scenario_files(scenarios)? {
        let result = Scenario::load(&file)
            .map_err(crate::scenario::RunError::from)
            .and_then(|scenario| scenario.run(&host, &wasm, &origin));
        match result {
            Ok(report) if report.passed() => {
                tally.passed += 1;
                say!("ok    {} ({})", report.name, file.display());
            }
            Ok(report) => {
                tally.failed += 1;
                print_failure(&report);
            }
            Err(e) => {
                tally.errors += 1;
                say!("ERROR {}: {e}", file.display());
            }
        }
    }
    say!(
        "{} passed, {} failed, {} could not run",
        tally.passed,
        tally.failed,
        tally.errors
    );
    Ok(tally)
}

fn print_failure(report: &Report) {
    say!("FAIL  {} ({})", report.name, report.file.display());
    if let Some(failure) = &report.failure {
        say!("      the policy failed: {failure}");
    }
    for difference in &report.differences {
        say!("      {difference}");
    }
    say!("      decision: {}", report.actual);
}
