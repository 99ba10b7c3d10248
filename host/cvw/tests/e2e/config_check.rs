//! The OpenSIPS example as shipped passes `opensips -C` (syntax, modules, and every
//! function in the routes it is used in); the e2e tests run it with other addresses.

use super::*;

#[test]
fn opensips_accepts_the_example_config_as_shipped() {
    let example = support::opensips::example_config();
    let text = std::fs::read_to_string(&example).unwrap();
    let mpath = text
        .lines()
        .find(|l| l.starts_with("mpath="))
        .expect("the example sets mpath");
    // Only the module directory changes: the example's is relative to the checkout, and
    // the build may be elsewhere (CVW_OPENSIPS_PREFIX).
    let text = text.replace(
        mpath,
        &format!("mpath=\"{}/\"", support::opensips::module_dir().display()),
    );
    let dir = std::env::temp_dir().join(unique("cvw-opensips-check-"));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("opensips.cfg");
    std::fs::write(&cfg, text).unwrap();
    let checked = support::opensips::check(&cfg);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = checked {
        panic!("{e:#}");
    }
}
