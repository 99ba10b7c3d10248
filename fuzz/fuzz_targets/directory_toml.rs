//! The directory file (`Directory::parse`): users, site and named policies,
//! `[policy.config]`, read when `cvw serve` or `cvw.so` starts and on every change.
//!
//! Properties: no panic escapes, not even in an error's message (line numbers from
//! spans); every user of a directory that loads is found by its own UC address; address
//! and number normalisation are idempotent.
#![no_main]

use cvw::directory::{Directory, normalize_address, number_digits};
use cvw::policy::DirectoryView;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| cvw_fuzz::run(|| check(data)));

fn check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines().take(4) {
        if let Some(a) = normalize_address(line) {
            assert_eq!(
                normalize_address(&a).as_deref(),
                Some(a.as_str()),
                "{line:?}"
            );
        }
        if let Some(d) = number_digits(line) {
            assert_eq!(number_digits(&d).as_deref(), Some(d.as_str()), "{line:?}");
        }
    }
    let directory = match Directory::parse(text, Path::new("directory.toml")) {
        Ok(d) => d,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    for user in directory.users() {
        let found = directory
            .find(&user.uc_address)
            .unwrap_or_else(|| panic!("{:?} not found by its own address", user.uc_address));
        assert_eq!(found.uc_address, user.uc_address);
    }
    let _ = directory.policy_config();
}
