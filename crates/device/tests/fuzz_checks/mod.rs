//! The properties the fuzz targets in `fuzz/roles/` check (device side), one function per
//! target. Compiled by `fuzz/roles/` (with `#[path]`) and by the ordinary test
//! `fuzz_regressions.rs`, which replays `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub(crate) mod cors;
pub(crate) mod engine;

/// A target's name and its check, for the replay test.
pub(crate) type Target = (&'static str, fn(&[u8]));

/// The device targets of `fuzz/roles/`.
pub(crate) const TARGETS: &[Target] = &[
    ("device_engine", engine::device_engine),
    ("cors", cors::cors),
];
