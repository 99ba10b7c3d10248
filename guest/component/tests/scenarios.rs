//! The example scenarios (`examples/scenarios/*.toml`, one or more per CVW id) run against
//! the default policy's logic natively, with the same matching rules as `cvw policy test`.

use std::path::Path;

use cvw_guest::CallViaWork;
use cvw_guest::testkit::run_scenarios;

#[test]
fn every_example_scenario_matches_the_default_policy() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/scenarios");
    let ran = run_scenarios::<CallViaWork>(&dir).unwrap_or_else(|failures| panic!("{failures}"));
    assert!(ran >= 30, "only {ran} scenarios found");
}
