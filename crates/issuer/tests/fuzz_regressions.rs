//! Replays the seeds and crash inputs of the issuer's fuzz targets (`fuzz/roles/`) through
//! the check the target runs. See `fuzz/README.md`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]

mod fuzz_checks;
#[macro_use]
#[path = "../../proto/tests/support/fuzz_replay.rs"]
mod fuzz_replay;

role_regression_tests!("issuer");
