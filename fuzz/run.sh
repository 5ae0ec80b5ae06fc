#!/usr/bin/env bash
# The CI fuzz step: builds the protocol's fuzz targets and runs each for a fixed time, seeded
# from fuzz/seeds/. Fails if any target finds a crash; prints executions and result per target.
#
#   fuzz/run.sh [SECONDS_PER_TARGET]      (default 60; FUZZ_SECONDS also works)
#
# Works with the machine's one stable toolchain: cargo-fuzz passes -Z flags (sanitizer,
# coverage instrumentation) that stable rustc accepts under RUSTC_BOOTSTRAP=1, and the
# AddressSanitizer runtime ships with stable's rust-std. A nightly toolchain is used as is.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-${FUZZ_SECONDS:-60}}"
cargo_fuzz_version=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $cargo_fuzz_version"
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
if ! rustc -vV | grep -q '^release:.*nightly'; then
    export RUSTC_BOOTSTRAP=1
fi

echo "== building (release, debug assertions, AddressSanitizer)"
cargo fuzz build

mkdir -p logs
failed=()
printf '%-20s %12s  %s\n' target executions result > logs/summary
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target"
    log="logs/$target.log"
    echo "== $target: ${seconds}s"
    # The first corpus directory receives new inputs; seeds/ is only read.
    if cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        result=ok
    else
        result="CRASH (see fuzz/$log and fuzz/artifacts/$target/)"
        failed+=("$target")
        tail -n 40 "$log"
    fi
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    printf '%-20s %12s  %s\n' "$target" "${executions:-?}" "$result" >> logs/summary
done

echo "== fuzz summary (${seconds}s per target)"
cat logs/summary
if ((${#failed[@]})); then
    echo "crashes in: ${failed[*]}"
    echo "copy each artifact to fuzz/regressions/<target>/, fix, and check with"
    echo "  cargo test -p localcert-proto --test fuzz_regressions"
    exit 1
fi
