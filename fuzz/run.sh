#!/usr/bin/env bash
# The CI fuzz step: builds the fuzz targets and runs each for a fixed time, seeded from
# fuzz/seeds/. Fails if any target finds a crash; prints executions and result per target.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]      (default 60; FUZZ_SECONDS also works)
#
# FUZZ_SET chooses the fuzz crates: `protocol` (default: this crate, ASan), `roles` (roles/:
# the device engine and CORS layer, the issuer's JWS, validation and ACME handler, built
# without a sanitizer) or `all` (FUZZ_ROLES=1 also means `all`). See README.md for times.
#
# Works with the machine's one stable toolchain: cargo-fuzz passes -Z flags (sanitizer,
# coverage instrumentation) that stable rustc accepts under RUSTC_BOOTSTRAP=1, and the
# AddressSanitizer runtime ships with stable's rust-std. A nightly toolchain is used as is.
set -euo pipefail
cd "$(dirname "$0")"
fuzz_dir=$PWD

seconds="${1:-${FUZZ_SECONDS:-60}}"
cargo_fuzz_version=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
if ! rustc -vV | grep -q '^release:.*nightly'; then
    export RUSTC_BOOTSTRAP=1
fi

mkdir -p logs
summary="$fuzz_dir/logs/summary"
printf '%-20s %12s  %s\n' target executions result > "$summary"
failed=()

# run_crate DIR SANITIZER: builds the targets of the fuzz crate in DIR and runs each.
# --fuzz-dir everywhere: cargo-fuzz would otherwise pick the crate it finds from the cwd.
run_crate() {
    local dir=$1 sanitizer=$2 target log result executions
    echo "== building $dir (release, debug assertions, sanitizer: $sanitizer)"
    cargo fuzz build --fuzz-dir "$dir" --sanitizer "$sanitizer"
    for target in $(cargo fuzz list --fuzz-dir "$dir"); do
        mkdir -p "$dir/corpus/$target"
        log="$fuzz_dir/logs/$target.log"
        echo "== $target: ${seconds}s"
        # The first corpus directory receives new inputs; seeds/ is only read.
        if cargo fuzz run --fuzz-dir "$dir" --sanitizer "$sanitizer" "$target" \
            "$dir/corpus/$target" "$fuzz_dir/seeds/$target" -- \
            -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            >"$log" 2>&1; then
            result=ok
        else
            result="CRASH (see fuzz/logs/$target.log and $dir/artifacts/$target/)"
            failed+=("$target")
            tail -n 40 "$log"
        fi
        executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        printf '%-20s %12s  %s\n' "$target" "${executions:-?}" "$result" >> "$summary"
    done
}

set_="${FUZZ_SET:-protocol}"
if [[ "${FUZZ_ROLES:-0}" == 1 ]]; then
    set_=all
fi
case "$set_" in
    protocol | roles | all) ;;
    *) echo "FUZZ_SET must be protocol, roles or all, not '$set_'" >&2; exit 2 ;;
esac
if [[ "$set_" != roles ]]; then
    run_crate "$fuzz_dir" address
fi
if [[ "$set_" != protocol ]]; then
    run_crate "$fuzz_dir/roles" none
fi

echo "== fuzz summary (${seconds}s per target)"
cat "$summary"
if ((${#failed[@]})); then
    echo "crashes in: ${failed[*]}"
    echo "copy each artifact to fuzz/regressions/<target>/, fix, and check with"
    echo "  cargo test -p localcert-proto -p localcert-device -p localcert-issuer --test fuzz_regressions"
    exit 1
fi
