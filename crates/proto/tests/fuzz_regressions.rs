//! Replays every seed and every crash input of the protocol's fuzz targets through the check
//! the target runs. See `fuzz/README.md`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod fuzz_checks;
#[path = "support/fuzz_replay.rs"]
mod fuzz_replay;

use fuzz_replay::replay;

#[test]
fn seeds_pass_their_checks() {
    let count = replay(fuzz_checks::TARGETS, "seeds");
    // Guards against a moved directory making this test vacuous.
    assert!(count >= 60, "only {count} seeds found under fuzz/seeds");
}

#[test]
fn crash_inputs_stay_fixed() {
    replay(fuzz_checks::TARGETS, "regressions");
}

#[test]
fn every_target_has_a_check() {
    let mut checked: Vec<String> = fuzz_checks::TARGETS
        .iter()
        .map(|t| t.0.to_owned())
        .collect();
    checked.sort();
    assert_eq!(
        fuzz_replay::target_names("."),
        checked,
        "fuzz/fuzz_targets and fuzz_checks::TARGETS"
    );
}
