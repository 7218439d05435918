#!/usr/bin/env bash
# Replay throughput and scale: generates the benchmark workload at several sizes with
# `pinhole gen-pcap` and runs `pinhole replay --bench` on each (pinhole beside the bare
# etherparse + hash lookup loop, capture in memory), on 1 worker and on 2.
#
# Usage: benches/replay.sh [--sizes "10000 100000 1000000"] [--reps 5] [--dir DIR] [--json FILE]
#   --sizes  concurrent sessions per capture (10 packets per session are generated)
#   --dir    where the captures go (default /tmp/pinhole-bench; ~5 GB for the 1M size)
#   --json   also write every report as one JSON line to FILE
# Needs: cargo (builds the release binary unless PINHOLE_BIN is set), about 8 GB of RAM for
# the 1M size (the capture is held in memory). See BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
# cargo's linker, and python3 for the JSON summary (as root they are installed when missing;
# otherwise the command that installs them is printed).
scripts/install-deps.sh build python

sizes="10000 100000 1000000"
reps=5
dir=/tmp/pinhole-bench
json=""
while [ $# -gt 0 ]; do
    case "$1" in
        --sizes) sizes=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --dir) dir=$2; shift 2 ;;
        --json) json=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done

if [ -z "${PINHOLE_BIN:-}" ]; then
    if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-}/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "${HOME:-}/.cargo/env"
    fi
    cargo build --release --locked --quiet
    PINHOLE_BIN=target/release/pinhole
fi
mkdir -p "$dir"
[ -n "$json" ] && : >"$json"

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(uname -r)"
echo "pinhole $($PINHOLE_BIN --version | cut -d' ' -f2), $reps repetitions, median [min..max]"
for size in $sizes; do
    pcap="$dir/mix-$size.pcap"
    if [ ! -s "$pcap" ]; then
        "$PINHOLE_BIN" gen-pcap --flows "$size" -o "$pcap" >/dev/null
    fi
    for workers in 1 2; do
        report=$("$PINHOLE_BIN" replay --bench --reps "$reps" --workers "$workers" \
            --rules rules/bench.toml --format json "$pcap")
        [ -n "$json" ] && echo "$report" >>"$json"
        python3 - "$size" "$workers" "$report" <<'PY'
import json, sys
size, workers, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
s = lambda t, f, d=2: f"{t[f]['median']:.{d}f} [{t[f]['min']:.{d}f}..{t[f]['max']:.{d}f}]"
print(f"sessions {size:>8}, {workers} worker(s): {r['packets']} packets, {r['flows']} flows, "
      f"{r['pinholes']} pinholes open")
print(f"  pinhole   Mpps/core {s(r['pinhole'], 'mpps_per_core')}  ns/packet {s(r['pinhole'], 'ns_per_packet', 0)}")
print(f"  bare loop Mpps/core {s(r['bare'], 'mpps_per_core')}  ns/packet {s(r['bare'], 'ns_per_packet', 0)}")
print(f"  ratio {r['ratio']:.2f}; engine RSS {r['engine_rss_bytes'] / 2**20:.1f} MiB = "
      f"{r['rss_bytes_per_flow']:.0f} bytes/flow; drops {r['drops']}")
PY
    done
done
