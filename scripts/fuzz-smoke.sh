#!/usr/bin/env bash
# Fuzz smoke run: builds the fuzz targets of fuzz/ with stable Rust (libFuzzer from libfuzzer-sys,
# compiled by the system C++ compiler; coverage from LLVM's SanitizerCoverage pass; no nightly, no
# cargo-fuzz), seeds their corpora from pcaps/ and fuzz/regressions/, then runs every target for a
# bounded time, as many at once as there are cores. Exits 1 on any crash, timeout or memory blow-up,
# printing the failing input and the commands that reproduce it.
#
# Usage: scripts/fuzz-smoke.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default 30; the README's "Fuzzing" section shows longer runs
#   TARGET              default all: decode ftp_command ftp_reply tftp tls_framing engine_sequence
set -euo pipefail
cd "$(dirname "$0")/.."
# cargo's linker and the C++ compiler libFuzzer is built with (installed as root when missing;
# otherwise the command that installs them is printed).
scripts/install-deps.sh fuzz

if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-}/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "${HOME:-}/.cargo/env"
fi

seconds=${1:-30}
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
fi
shift || true
all_targets=(decode ftp_command ftp_reply tftp tls_framing engine_sequence)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
        echo "unknown fuzz target: $t (one of: ${all_targets[*]})" >&2
        exit 2
    fi
done

# The instrumentation cargo-fuzz uses, minus the nightly-only sanitizer. Passing --target keeps
# these flags off build scripts and proc macros, which run inside the compiler and must not be
# instrumented. `--cfg fuzzing` is what cargo-fuzz sets too.
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares"
export CARGO_TARGET_DIR="$PWD/fuzz/target"
start=$(date +%s)
echo "building the fuzz targets (release with debug assertions and overflow checks)"
cargo build --locked --release --manifest-path fuzz/Cargo.toml --target "$host" --bins
bin="fuzz/target/$host/release"
echo "built in $(($(date +%s) - start)) s"

# The corpus is generated here (fuzz/corpus is not committed); whatever earlier runs added stays.
"$bin/seed_corpus" pcaps fuzz/regressions fuzz/corpus

jobs=$(nproc 2>/dev/null || echo 1)
logs="fuzz/target/smoke-logs"
mkdir -p "$logs"
declare -A pid_of
run_target() {
    local t=$1 max_len=4096
    # Room for the JSON sequences of fuzz/regressions/engine_sequence, which also seed it.
    [ "$t" != engine_sequence ] || max_len=16384
    mkdir -p "fuzz/artifacts/$t"
    # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a leak or a runaway table.
    "$bin/$t" "fuzz/corpus/$t" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" \
        >"$logs/$t.log" 2>&1
}

echo "fuzzing ${targets[*]} for $seconds s each, $jobs at a time"
failed=()
running=0
for t in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    run_target "$t" &
    pid_of[$t]=$!
    running=$((running + 1))
done
for t in "${targets[@]}"; do
    if wait "${pid_of[$t]}"; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log")
        cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -n 1)
        echo "  $t: ok, ${runs:-?} runs, ${cov:-no coverage line}"
    else
        failed+=("$t")
    fi
done

for t in "${failed[@]}"; do
    echo
    echo "== $t FAILED (log: $logs/$t.log)"
    grep -E -A 4 "panicked at" "$logs/$t.log" | head -n 20 || true
    grep -E "ERROR: libFuzzer|SUMMARY" "$logs/$t.log" | head -n 5 || true
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$logs/$t.log" | tail -n 1)
    if [ -n "$artifact" ]; then
        echo "input: $artifact"
        echo "reproduce: $bin/$t $artifact"
        echo "       or: cargo fuzz run -s none $t $artifact   (with cargo-fuzz installed)"
        if [ "$t" = engine_sequence ]; then
            echo "as JSON:   PINHOLE_FUZZ_JSON=fuzz/regressions/engine_sequence/NAME.json $bin/$t $artifact"
            echo "trace:     PINHOLE_FUZZ_TRACE=1 $bin/$t $artifact"
            echo "after the fix, keep the JSON there: tests/fuzz_regressions.rs replays it"
        else
            echo "after the fix: cp $artifact fuzz/regressions/$t/NAME   (tests/fuzz_regressions.rs replays it)"
        fi
    else
        tail -n 20 "$logs/$t.log"
    fi
done
echo
echo "fuzz smoke: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed ($(($(date +%s) - start)) s)"
[ ${#failed[@]} -eq 0 ]
