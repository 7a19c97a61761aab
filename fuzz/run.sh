#!/usr/bin/env bash
# Runs each fuzz target for a given time (default 600 s), two at a time on a
# 2-core machine. Crashes land in fuzz/artifacts/TARGET/; add each one as a
# regression test (see src/*/tests) before fixing it.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]
#
# cargo fuzz needs nightly features; RUSTC_BOOTSTRAP=1 lets the stable toolchain
# provide them (no other toolchain can be installed here).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pin_parse config_parse hop_by_hop)
command -v cargo-fuzz > /dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O
run() {
    local target=$1
    mkdir -p "corpus/$target"
    cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=8192 -print_final_stats=1 > "run-$target.log" 2>&1 \
        && echo "$target: ok ($(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "run-$target.log" | grep -o '[0-9]*$') runs in ${seconds}s)" \
        || { echo "$target: FAILED, see fuzz/run-$target.log and fuzz/artifacts/$target/"; return 1; }
}
status=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
    run "${targets[i]}" & first=$!
    if [ $((i + 1)) -lt ${#targets[@]} ]; then run "${targets[i + 1]}" || status=1; fi
    wait "$first" || status=1
done
exit $status
