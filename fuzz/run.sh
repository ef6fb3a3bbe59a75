#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) and prints how many inputs each executed.
#
#   bash fuzz/run.sh [SECONDS]
#
# The fuzzer is cargo-fuzz (libFuzzer) on the stable toolchain: RUSTC_BOOTSTRAP=1 lets stable
# rustc take the -Z flags cargo-fuzz passes (sanitizer coverage, AddressSanitizer), so no nightly
# is needed. Install it with `cargo install cargo-fuzz --locked`.
#
# Each target starts from its seeds in fuzz/corpus/<target>/ and writes what it discovers to a
# scratch directory, so the committed corpus stays as it is. On a crash (a panic, a failed
# property, a sanitizer report, a timeout or running out of memory) the input is copied to
# tests/fuzz_regressions/<target>/, where `cargo test --test fuzz_regressions` replays it, and
# printed in base64 (so a CI log is enough to recover it); the script then goes on with the
# other targets and exits 1 at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
targets=(dns_request zone_yaml peer_message ecs_option)
export RUSTC_BOOTSTRAP=1

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

rustc --version
cargo fuzz --version
start=$(date +%s)
cargo fuzz build
echo "fuzz build: $(($(date +%s) - start)) s"

failed=()
summary=()
for target in "${targets[@]}"; do
    work="$scratch/$target"
    mkdir -p "$work/corpus" "$work/artifacts"
    log="$work/log"
    echo "== $target: ${seconds} s"
    status=0
    # -timeout: an input that takes 10 s is a hang, not a slow machine. -rss_limit_mb stays at
    # libFuzzer's 2048.
    cargo fuzz run "$target" "$work/corpus" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    if [ -z "$execs" ]; then
        execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p; s/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$log" | tail -n 1)
    fi
    execs=${execs:-unknown}
    crashes=("$work"/artifacts/*)
    if [ "$status" -ne 0 ] || [ -e "${crashes[0]}" ]; then
        # What failed (the panic message or the sanitizer's report), then how the run ended.
        grep -E -A6 'panicked at|==ERROR|ERROR: libFuzzer' "$log" | head -n 40 || true
        tail -n 12 "$log"
        mkdir -p "tests/fuzz_regressions/$target"
        for crash in "${crashes[@]}"; do
            [ -e "$crash" ] || continue
            dest="tests/fuzz_regressions/$target/$(basename "$crash")"
            cp "$crash" "$dest"
            echo "crash input kept as $dest; base64:"
            base64 -w 0 "$crash"
            echo
        done
        failed+=("$target")
        summary+=("$target: $execs executions in ${seconds} s, FAILED (exit $status)")
    else
        summary+=("$target: $execs executions in ${seconds} s")
    fi
done

echo "== fuzzing summary"
printf '%s\n' "${summary[@]}"
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz targets failed: ${failed[*]}; replay with: cargo test --test fuzz_regressions"
    exit 1
fi
