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

/// The reassembler target's input, built from steps that reach the reordering rules often:
/// initial fragments with small LEN and continuations with SEQ near the window's edges.
fn reassembler_steps() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let fragment = prop_oneof![
        (
            prop::sample::select(vec![0x81u8, 0x82, 0x83, 0xbe, 0x90]),
            0u16..80,
            prop::collection::vec(any::<u8>(), 0..24)
        )
            .prop_map(|(cmd, len, data)| {
                let mut f = vec![cmd];
                f.extend_from_slice(&len.to_be_bytes());
                f.extend(data);
                f
            }),
        (0u8..20, prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(seq, data)| {
            let mut f = vec![seq];
            f.extend(data);
            f
        }),
        (0x70u8..0x80, prop::collection::vec(any::<u8>(), 1..4)).prop_map(|(seq, data)| {
            let mut f = vec![seq];
            f.extend(data);
            f
        }),
    ];
    let step = (0u8..0x80, any::<bool>(), fragment).prop_map(|(h, poll, fragment)| {
        if poll && h > 90 {
            return vec![0x80 | h];
        }
        let h = h % 8;
        let len = u16::try_from(fragment.len()).unwrap();
        let mut s = vec![h];
        s.extend_from_slice(&len.to_be_bytes());
        s.extend(fragment);
        s
    });
    prop::collection::vec(step, 1..40).prop_map(|steps| steps.concat())
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

    #[test]
    fn reassembler_agrees_with_the_spec_model(input in reassembler_steps()) {
        fuzz_checks::frames::reassembler(&input);
    }
}
