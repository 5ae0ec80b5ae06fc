//! Replays the seeds and crash inputs of the issuer's fuzz targets (`fuzz/roles/`) through
//! the check the target runs, so that no fuzzing toolchain is needed to keep a found crash
//! fixed. See `fuzz/README.md`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fuzz_checks;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

fn replay(corpus: &str) -> usize {
    let mut failures = Vec::new();
    let mut count = 0;
    for (target, check) in fuzz_checks::TARGETS {
        for path in inputs(&fuzz_dir().join(corpus).join(target)) {
            let bytes = std::fs::read(&path).unwrap();
            count += 1;
            if catch_unwind(AssertUnwindSafe(|| check(&bytes))).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "inputs that break their check: {failures:#?}"
    );
    count
}

#[test]
fn seeds_pass_their_checks() {
    let count = replay("seeds");
    assert!(
        count >= 3,
        "only {count} issuer seeds found under fuzz/seeds"
    );
}

#[test]
fn crash_inputs_stay_fixed() {
    replay("regressions");
}
