//! The directory file (CVW-1, CVW-3): bad records are named with file and line, policies
//! resolve from the most specific scope, and users are found by address or number.

use std::path::Path;

use cvw::directory::{Directory, DirectoryError};
use cvw::policy::DirectoryView;

const FILE: &str = "directory.toml";

fn parse(text: &str) -> Result<Directory, DirectoryError> {
    Directory::parse(text, Path::new(FILE))
}

const GOOD: &str = r#"
[policy.config]
global_caller_id = "+14255550000"
emergency_numbers = ["911", "112", "999"]
desk_ring_timeout_ms = 15000

[policies.global]
enabled = true
admin_callback_number = "+14255550100"

[policies.admins-only]
enabled = true
admin_callback_number = "+14255550100"
use_admin_callback_number = true

[policies.off]
enabled = false

[sites]
redmond = "admins-only"

[[users]]
uc_address = "sip:alice@corp.example"
display_name = "Alice Smith"
line_uri = "tel:+14255550101"
callback_number = "+14255550199"
site = "redmond"

[[users]]
uc_address = "sip:bob@corp.example"
display_name = "Bob Jones"
line_uri = "tel:+14255550102"
site = "redmond"
policy = "off"

[[users]]
uc_address = "sip:carol@corp.example"
display_name = "Carol White"
line_uri = "tel:+14255550103"
"#;

#[test]
fn cvw_3_a_bad_number_names_the_file_line_user_and_field() {
    let text = GOOD.replace("tel:+14255550102", "tel:abc");
    let err = parse(&text).unwrap_err().to_string();
    let line = text.lines().position(|l| l.contains("tel:abc")).unwrap() + 1;
    assert_eq!(
        err,
        format!("{FILE}:{line}: user sip:bob@corp.example: line_uri \"tel:abc\" is not a number")
    );
}

#[test]
fn cvw_1_an_admin_number_that_is_not_digits_is_refused() {
    let text = GOOD.replacen("+14255550100", "call-me", 1);
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("policy global: admin_callback_number \"call-me\" is not a number"),
        "{err}"
    );
    assert!(err.starts_with(&format!("{FILE}:9:")), "{err}");
}

#[test]
fn cvw_3_an_unknown_policy_is_refused_with_the_user_named() {
    let text = GOOD.replace("policy = \"off\"", "policy = \"of\"");
    let err = parse(&text).unwrap_err();
    let line = text.lines().position(|l| l.contains("\"of\"")).unwrap() + 1;
    assert!(matches!(err, DirectoryError::UnknownPolicy { .. }));
    assert_eq!(
        err.to_string(),
        format!("{FILE}:{line}: user sip:bob@corp.example: unknown policy \"of\"")
    );
}

#[test]
fn cvw_1_a_site_assigned_to_an_unknown_policy_is_refused() {
    let text = GOOD.replace("redmond = \"admins-only\"", "redmond = \"admin-only\"");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.ends_with("site redmond: unknown policy \"admin-only\""),
        "{err}"
    );
}

#[test]
fn cvw_3_a_duplicate_user_is_refused_with_both_lines() {
    let text = format!(
        "{GOOD}\n[[users]]\nuc_address = \"SIP:alice@CORP.example\"\nline_uri = \"tel:+14255550109\"\n"
    );
    let err = parse(&text).unwrap_err().to_string();
    let last = text.lines().position(|l| l.contains("SIP:alice")).unwrap() + 1;
    let first = text.lines().position(|l| l.contains("sip:alice")).unwrap() + 1;
    assert_eq!(
        err,
        format!(
            "{FILE}:{last}: user SIP:alice@CORP.example: duplicate uc_address (first defined on line {first})"
        )
    );
}

#[test]
fn cvw_3_two_users_on_one_desk_line_are_refused() {
    let text = GOOD.replace("tel:+14255550103", "+1 425 555 0101");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("user sip:carol@corp.example: line_uri \"+1 425 555 0101\" is already the line of sip:alice@corp.example"),
        "{err}"
    );
}

#[test]
fn cvw_3_an_unknown_key_in_a_record_names_the_user_and_line() {
    let text = GOOD.replace("policy = \"off\"", "polcy = \"off\"");
    let err = parse(&text).unwrap_err().to_string();
    let line = text.lines().position(|l| l.contains("polcy")).unwrap() + 1;
    assert!(
        err.starts_with(&format!(
            "{FILE}:{line}: user sip:bob@corp.example: unknown field `polcy`"
        )),
        "{err}"
    );
}

#[test]
fn an_unknown_top_level_table_is_refused() {
    let text = format!("{GOOD}\n[sitez]\nx = \"y\"\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("unknown field `sitez`"), "{err}");
}

#[test]
fn a_syntax_error_names_the_line() {
    let text = GOOD.replace("display_name = \"Bob Jones\"", "display_name = \"Bob Jones");
    let err = parse(&text).unwrap_err().to_string();
    let line = text.lines().position(|l| l.contains("Bob Jones")).unwrap() + 1;
    assert!(err.starts_with(&format!("{FILE}:{line}:")), "{err}");
}

#[test]
fn cvw_1_the_most_specific_policy_applies() {
    let dir = parse(GOOD).unwrap();
    // Alice: site redmond → admins-only.
    let alice = dir.lookup("sip:alice@corp.example").unwrap();
    assert_eq!(alice.settings.name, "admins-only");
    assert!(alice.settings.use_admin_callback_number);
    // Bob: site redmond, but his own tag wins.
    let bob = dir.lookup("sip:bob@corp.example").unwrap();
    assert_eq!(bob.settings.name, "off");
    assert!(!bob.settings.enabled);
    // Carol: no site, no tag → global.
    let carol = dir.lookup("sip:carol@corp.example").unwrap();
    assert_eq!(carol.settings.name, "global");
    assert!(carol.settings.enabled);
    assert_eq!(
        carol.settings.admin_callback_number.as_deref(),
        Some("+14255550100")
    );
}

#[test]
fn cvw_1_removing_the_global_policy_resets_to_defaults() {
    let text = GOOD.replace(
        "[policies.global]\nenabled = true\nadmin_callback_number = \"+14255550100\"\n",
        "",
    );
    assert_ne!(text, GOOD);
    let dir = parse(&text).unwrap();
    let carol = dir.lookup("sip:carol@corp.example").unwrap();
    assert_eq!(carol.settings.name, "global");
    assert!(!carol.settings.enabled);
    assert_eq!(carol.settings.admin_callback_number, None);
    assert!(!carol.settings.use_admin_callback_number);
}

#[test]
fn cvw_3_users_are_found_by_any_spelling_of_their_numbers() {
    let dir = parse(GOOD).unwrap();
    for address in [
        "tel:+14255550101",
        "+1 425 555 0101",
        "sip:+14255550101@pbx.corp.example;user=phone",
        "+14255550199",
        "SIP:alice@Corp.Example",
    ] {
        let user = dir.lookup(address);
        assert_eq!(
            user.map(|u| u.uc_address).as_deref(),
            Some("sip:alice@corp.example"),
            "{address}"
        );
    }
    assert_eq!(dir.lookup("tel:+14255550999"), None);
    assert_eq!(dir.lookup("sip:dave@corp.example"), None);
}

#[test]
fn policy_config_is_strings_with_arrays_comma_joined() {
    let dir = parse(GOOD).unwrap();
    let config = dir.policy_config();
    assert!(config.contains(&("emergency_numbers".into(), "911,112,999".into())));
    assert!(config.contains(&("desk_ring_timeout_ms".into(), "15000".into())));
    assert!(config.contains(&("global_caller_id".into(), "+14255550000".into())));
}

#[test]
fn every_user_is_handed_to_check_user() {
    let dir = parse(GOOD).unwrap();
    let users: Vec<_> = dir.users().into_iter().map(|u| u.uc_address).collect();
    assert_eq!(
        users,
        [
            "sip:alice@corp.example",
            "sip:bob@corp.example",
            "sip:carol@corp.example"
        ]
    );
}

#[test]
fn the_shipped_example_directory_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/directory.toml");
    let dir = Directory::load(&path).unwrap();
    assert!(!dir.is_empty());
}

#[test]
fn cvw_1_an_unknown_key_in_a_policy_names_its_line() {
    let text = GOOD.replace(
        "use_admin_callback_number = true",
        "use_admin_number = true",
    );
    let err = parse(&text).unwrap_err().to_string();
    let line = text
        .lines()
        .position(|l| l.contains("use_admin_number"))
        .unwrap()
        + 1;
    assert!(
        err.starts_with(&format!("{FILE}:{line}: unknown field `use_admin_number`")),
        "{err}"
    );
}

#[test]
fn cvw_1_a_site_without_an_assigned_policy_falls_back_to_global() {
    let text = GOOD.replace(
        "uc_address = \"sip:carol@corp.example\"",
        "uc_address = \"sip:carol@corp.example\"\nsite = \"paris\"",
    );
    let dir = parse(&text).unwrap();
    let carol = dir.lookup("sip:carol@corp.example").unwrap();
    assert_eq!(carol.site.as_deref(), Some("paris"));
    assert_eq!(carol.settings.name, "global");
}

#[test]
fn cvw_3_a_line_number_finds_its_owner_even_when_it_is_someone_elses_callback() {
    // Alice's callback number is Dave's desk line (Dave is defined later in the file).
    let text = format!(
        "{GOOD}\n[[users]]\nuc_address = \"sip:dave@corp.example\"\nline_uri = \"tel:+14255550199\"\n"
    );
    let dir = parse(&text).unwrap();
    assert_eq!(
        dir.lookup("+14255550199").map(|u| u.uc_address).as_deref(),
        Some("sip:dave@corp.example")
    );
}
