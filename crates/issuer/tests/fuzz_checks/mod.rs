//! The properties the fuzz targets in `fuzz/roles/` check (issuer side). Compiled by
//! `fuzz/roles/` (with `#[path]`) and by the ordinary test `fuzz_regressions.rs`, which replays
//! `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The test suite's device credentials and ACME client, shared with the fuzz targets.
#[path = "../common/mod.rs"]
mod common;

pub(crate) mod acme_handler;
pub(crate) mod jws;
pub(crate) mod validation;

/// A target's name and its check, for the replay test.
pub(crate) type Target = (&'static str, fn(&[u8]));

/// The issuer targets of `fuzz/roles/`.
pub(crate) const TARGETS: &[Target] = &[
    ("jws", jws::jws),
    ("validation", validation::validation),
    ("acme_handler", acme_handler::acme_handler),
];
