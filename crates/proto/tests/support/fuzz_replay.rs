//! The replay shared by the `fuzz_regressions` tests of proto, device and issuer (each
//! includes this file with `#[path]`): every seed (`fuzz/seeds/<target>/`) and every crash
//! input (`fuzz/regressions/<target>/`) goes through the check its fuzz target runs, so that
//! no fuzzing toolchain is needed to keep a found crash fixed. See `fuzz/README.md`.

#![allow(dead_code)] // each test uses a part

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// A fuzz target's name and its check.
pub type Target = (&'static str, fn(&[u8]));

/// The repository's `fuzz/` directory.
pub fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of one corpus directory, sorted; none if it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.is_file() && p.file_name().is_some_and(|n| n != ".gitkeep"));
    files.sort();
    files
}

/// Runs every input of `fuzz/<corpus>/<target>/` through its target's check; fails naming
/// each input that breaks it. Returns how many inputs ran.
pub fn replay(targets: &[Target], corpus: &str) -> usize {
    let mut failures = Vec::new();
    let mut count = 0;
    for (target, check) in targets {
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

/// The fuzz targets of the fuzz crate in `fuzz/<crate_dir>`, by name.
pub fn target_names(crate_dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fuzz_dir().join(crate_dir).join("fuzz_targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    names.sort();
    names
}

/// Fails unless each check has a fuzz target of that name in `fuzz/<crate_dir>`.
pub fn assert_each_check_is_a_target(targets: &[Target], crate_dir: &str) {
    let names = target_names(crate_dir);
    for (target, _) in targets {
        assert!(
            names.iter().any(|n| n == target),
            "no fuzz/{crate_dir}/fuzz_targets/{target}.rs for the check {target}"
        );
    }
}

/// The tests of a role's `fuzz_regressions` (device, issuer): its seeds and crash inputs pass
/// their checks, and each check is a target of `fuzz/roles/`. Expects `fuzz_checks::TARGETS`.
#[allow(unused_macros)] // proto has its own tests
macro_rules! role_regression_tests {
    ($role:literal) => {
        #[test]
        fn seeds_pass_their_checks() {
            let count = fuzz_replay::replay(fuzz_checks::TARGETS, "seeds");
            // Guards against a moved directory making this test vacuous.
            assert!(
                count >= 2 * fuzz_checks::TARGETS.len(),
                "only {count} {} seeds found under fuzz/seeds",
                $role
            );
        }

        #[test]
        fn crash_inputs_stay_fixed() {
            fuzz_replay::replay(fuzz_checks::TARGETS, "regressions");
        }

        #[test]
        fn every_check_has_a_target() {
            fuzz_replay::assert_each_check_is_a_target(fuzz_checks::TARGETS, "roles");
        }
    };
}
