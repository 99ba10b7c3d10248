//! The OpenSIPS examples as shipped pass `opensips -C` (syntax, modules, their
//! `include_file` of the shared routes, and every function in the routes it is used in);
//! the e2e tests run them with other addresses.

use super::*;
use std::path::Path;

/// `opensips -C` on `example` copied beside the shared routes, with only the paths of
/// what the build made changed: the example's are relative to the checkout, and the
/// build may be elsewhere (CVW_OPENSIPS_PREFIX, CARGO_TARGET_DIR).
fn check_as_shipped(example: &Path, edits: &[(&str, String)]) {
    let mut text = std::fs::read_to_string(example).unwrap();
    let mpath = text
        .lines()
        .find(|l| l.starts_with("mpath="))
        .expect("the example sets mpath")
        .to_owned();
    text = text.replace(
        &mpath,
        &format!("mpath=\"{}/\"", support::opensips::module_dir().display()),
    );
    for (from, to) in edits {
        assert!(text.contains(from), "{} has no {from}", example.display());
        text = text.replace(from, to);
    }
    let dir = std::env::temp_dir().join(unique("cvw-opensips-check-"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join(example.file_name().unwrap());
    std::fs::write(&cfg, text).unwrap();
    std::fs::copy(
        example.with_file_name("cvw-routes.cfg"),
        dir.join("cvw-routes.cfg"),
    )
    .unwrap();
    let checked = support::opensips::check(&cfg);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = checked {
        panic!("{e:#}");
    }
}

#[test]
fn opensips_accepts_the_example_config_as_shipped() {
    check_as_shipped(&support::opensips::example_config(), &[]);
}

#[test]
fn opensips_accepts_the_module_config_as_shipped() {
    let so = Proxy::OpenSipsModule.module_so();
    check_as_shipped(
        &support::opensips::module_config(),
        &[(
            "target/opensips-module/release/cvw.so",
            so.display().to_string(),
        )],
    );
}
