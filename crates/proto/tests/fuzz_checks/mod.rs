//! The properties the fuzz targets in `fuzz/` check, one function per target.
//!
//! This file is compiled twice: by `fuzz/` (each target includes it with `#[path]`) and by the
//! ordinary test `fuzz_regressions.rs`, which replays every seed and every crash input found
//! (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`) through the same function. So a crash
//! stays fixed without a fuzzing toolchain. Every function panics when the property breaks.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub(crate) mod frames;
pub(crate) mod values;

/// A target's name and its check, for the replay test.
pub(crate) type Target = (&'static str, fn(&[u8]));

/// Every target of `fuzz/`, by the name of its `fuzz_targets/*.rs` file.
pub(crate) const TARGETS: &[Target] = &[
    ("frame_reassembler", frames::reassembler),
    ("frame_round_trip", frames::round_trip),
    ("message", values::message),
    ("attestation_object", values::attestation_object),
    ("names", values::names),
    ("origin_binding", values::origin_binding),
];
