//! Replays the seeds and crash inputs of the issuer's fuzz targets (`fuzz/roles/`) through
//! the check the target runs. See `fuzz/README.md`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod fuzz_checks;
#[path = "../../proto/tests/support/fuzz_replay.rs"]
mod fuzz_replay;

use fuzz_replay::replay;

#[test]
fn seeds_pass_their_checks() {
    let count = replay(fuzz_checks::TARGETS, "seeds");
    // Guards against a moved directory making this test vacuous.
    assert!(
        count >= 2 * fuzz_checks::TARGETS.len(),
        "only {count} issuer seeds found under fuzz/seeds"
    );
}

#[test]
fn crash_inputs_stay_fixed() {
    replay(fuzz_checks::TARGETS, "regressions");
}

#[test]
fn every_check_has_a_target() {
    fuzz_replay::assert_each_check_is_a_target(fuzz_checks::TARGETS, "roles");
}
