#!/usr/bin/env bash
#
# monitor.sh - how many packets a second `pinhole monitor` judges on a live interface, with 1
# and 2 workers, against `pinhole replay --bench` on the same capture.
#
# A sender namespace pushes the frames of a `pinhole gen-pcap --flows N --packets P` capture
# (10,000 concurrent sessions, 1M frames: long enough not to be looped, since a looped capture
# replays its sessions into their own still-tracked flows) into a veth pair as fast as the
# kernel takes them (examples/pcap_blast.rs: AF_PACKET, sendmmsg in batches of 256, qdisc
# bypassed); pinhole monitor (rules/bench.toml, event
# log to /dev/null, metrics on 127.0.0.1) watches the other end in a second namespace. Two
# measurements per worker count, each repeated REPS times on a fresh monitor (the median is
# reported):
#
#   live   the sender sends the capture (LOOPS passes, default 1) while the monitor runs: offered
#          frames/s (what the sender managed), judged packets/s (judged / time from the first
#          frame sent, after the sender has read the capture, to the last judged packet), kernel drops and ring freezes. Sender and monitor
#          share the machine's CPUs, and the kernel's own receive work (copying each frame into
#          the ring, the fanout program) runs on the sender's CPU.
#   drain  the monitor is stopped (SIGSTOP), the capture's frames are sent into its rings
#          (sized to hold them all: --ring-mib DRAIN_RING per worker), and it is continued (SIGCONT): judged
#          packets/s while it empties the rings with the machine to itself, which is what its
#          workers can do; no drops allowed.
#
# and, first, `pinhole replay --bench --reps REPS --rules rules/bench.toml` on the capture
# (pinhole's median Mpps per core). The report gives monitor/replay per core (1 worker) and
# 2 workers / 1 worker. About 3 minutes (--quick: well under one).
#
# Usage:  benches/monitor.sh [--quick] [--reps N] [--flows N] [--packets P] [--loops K]
#                            [--ring-mib MIB] [--keep]   (as root)
# Environment: PINHOLE_BIN, BLAST_BIN (default: built with cargo --release), PH_PREFIX
# (namespace prefix, default phbm-). Traffic only flows inside the two namespaces this script
# creates; they are removed on any exit.
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPS=3 FLOWS=10000 PACKETS=1000000 LOOPS=1 RING=64 KEEP=0
while [ $# -gt 0 ]; do
    case $1 in
        --quick) REPS=1 PACKETS=200000; shift ;;
        --reps) REPS=$2; shift 2 ;;
        --flows) FLOWS=$2; shift 2 ;;
        --loops) LOOPS=$2; shift 2 ;;
        --packets) PACKETS=$2; shift 2 ;;
        --ring-mib) RING=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "monitor.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" != 0 ]; then
    echo "monitor.sh: needs root (network namespaces, AF_PACKET)" >&2
    exit 1
fi
cd "$REPO_DIR"
# ip (iproute2), python3 for the polling and the report; cargo's linker (as root they are
# installed when missing).
scripts/install-deps.sh testbed

if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-}/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "${HOME:-}/.cargo/env"
fi
TARGET=${CARGO_TARGET_DIR:-$REPO_DIR/target}
if [ -z "${PINHOLE_BIN:-}" ] || [ -z "${BLAST_BIN:-}" ]; then
    echo "== cargo build --release --locked --bin pinhole --example pcap_blast"
    (cd "$REPO_DIR" && cargo build --release --locked --quiet --bin pinhole --example pcap_blast)
fi
PINHOLE_BIN=${PINHOLE_BIN:-$TARGET/release/pinhole}
BLAST_BIN=${BLAST_BIN:-$TARGET/release/examples/pcap_blast}

P=${PH_PREFIX:-phbm-}
NS_TX=${P}tx NS_RX=${P}rx
WORK=$(mktemp -d "/tmp/${P}work.XXXXXX")
MON_PID=""
cleanup() {
    if [ -n "$MON_PID" ]; then
        kill -CONT "$MON_PID" 2>/dev/null || true
        kill -TERM "$MON_PID" 2>/dev/null || true
        wait "$MON_PID" 2>/dev/null || true
    fi
    ip netns del "$NS_TX" 2>/dev/null || true
    ip netns del "$NS_RX" 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# A scraper and poller of the monitor's metrics (run inside the receiving namespace).
cat > "$WORK/poll.py" <<'EOF'
import json, sys, time, urllib.request

def scrape(port):
    text = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % port, timeout=5).read().decode()
    out = {"packets": 0, "drops": 0, "freezes": 0, "kernel": 0, "workers": {}}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        v = int(float(value))
        if name.startswith("pinhole_packets_total{"):
            out["packets"] += v
            out["workers"][name.split('"')[1]] = v
        elif name == "pinhole_capture_kernel_drops_total":
            out["drops"] = v
        elif name == "pinhole_capture_ring_freezes_total":
            out["freezes"] = v
        elif name == "pinhole_capture_kernel_packets_total":
            out["kernel"] = v
    out["t"] = time.time()
    return out

cmd, port = sys.argv[1], sys.argv[2]
if cmd == "ready":
    for _ in range(100):
        try:
            scrape(port)
            sys.exit(0)
        except OSError:
            time.sleep(0.1)
    sys.exit(1)
elif cmd == "scrape":
    print(json.dumps(scrape(port)))
elif cmd == "stable":
    # Poll every 20 ms until the judged count has not moved for 0.5 s (and is at least
    # MIN); print the last scrape with the time of the last change.
    least = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    last = scrape(port)
    changed = last["t"]
    while True:
        time.sleep(0.02)
        now = scrape(port)
        if now["packets"] != last["packets"]:
            changed = now["t"]
        last = now
        if now["packets"] >= least and now["t"] - changed >= 0.5:
            break
    # Kernel counters are read by the workers every 100 ms: one more look for them.
    time.sleep(0.25)
    final = scrape(port)
    final["changed"] = changed
    print(json.dumps(final))
EOF

echo "== capture: pinhole gen-pcap --flows $FLOWS --packets $PACKETS"
"$PINHOLE_BIN" gen-pcap --flows "$FLOWS" --packets "$PACKETS" -o "$WORK/mix.pcap" | head -n 1
# The drain's rings hold the whole capture even on one worker: a frame takes its length plus
# about 100 bytes of ring headers, rounded to 16.
DRAIN=$PACKETS
DRAIN_RING=$(python3 -c 'import os,sys; n=int(sys.argv[2]); print(int((os.path.getsize(sys.argv[1]) + n * 120) * 1.2) // (1 << 20) + 8)' "$WORK/mix.pcap" "$PACKETS")
echo "== pinhole replay --bench --reps $REPS --rules rules/bench.toml (the same capture)"
"$PINHOLE_BIN" replay --bench --reps "$REPS" --rules "$REPO_DIR/rules/bench.toml" \
    --format json "$WORK/mix.pcap" > "$WORK/replay.json"
REPLAY_MPPS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pinhole"]["mpps_per_core"]["median"])' "$WORK/replay.json")
echo "replay: $REPLAY_MPPS Mpps per core (median of $REPS)"

echo "== namespaces $NS_TX, $NS_RX and a veth pair"
ip netns add "$NS_TX"
ip netns add "$NS_RX"
ip link add bm-tx netns "$NS_TX" type veth peer name bm-rx netns "$NS_RX"
# (The capture has 802.1Q-tagged full-size frames: room above 1500.)
ip -n "$NS_TX" link set bm-tx mtu 9000 up
ip -n "$NS_RX" link set bm-rx mtu 9000 up
ip -n "$NS_RX" link set lo up

PORT=9600
# mon_start WORKERS RING_MIB: a fresh monitor on bm-rx.
mon_start() {
    ip netns exec "$NS_RX" "$PINHOLE_BIN" monitor --iface bm-rx --rules "$REPO_DIR/rules/bench.toml" \
        --workers "$1" --ring-mib "$2" --metrics "127.0.0.1:$PORT" --events - \
        >/dev/null 2>"$WORK/mon.log" &
    MON_PID=$!
    ip netns exec "$NS_RX" python3 "$WORK/poll.py" ready "$PORT" ||
        { tail -n 20 "$WORK/mon.log"; exit 1; }
}
mon_stop() {
    kill -TERM "$MON_PID"
    wait "$MON_PID" || true
    MON_PID=""
}
poll() { ip netns exec "$NS_RX" python3 "$WORK/poll.py" "$@" "$PORT"; }
poll_stable() { ip netns exec "$NS_RX" python3 "$WORK/poll.py" stable "$PORT" "$1"; }
blast() { ip netns exec "$NS_TX" "$BLAST_BIN" --iface bm-tx "$@" "$WORK/mix.pcap"; }

# One run (in this shell, not a subshell: MON_PID must reach the cleanup if anything fails):
# prints a JSON line {mode, workers, offered, judged, pps, drops, freezes, split}.
run_live() {
    local w=$1 s0 t0 out s1
    mon_start "$w" "$RING"
    s0=$(poll scrape)
    t0=$(date +%s.%N)
    out=$(blast --loops "$LOOPS")
    s1=$(poll_stable "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["packets"])' "$s0")")
    mon_stop
    python3 - "$w" "$t0" "$s0" "$out" "$s1" <<'EOF'
import json, sys
w, t0, s0, sent, s1 = int(sys.argv[1]), float(sys.argv[2]), *map(json.loads, sys.argv[3:])
judged = s1["packets"] - s0["packets"]
print(json.dumps({"mode": "live", "workers": w, "offered": sent["sent"], "offered_pps": sent["pps"],
    "judged": judged, "pps": judged / (s1["changed"] - max(t0, sent["started_unix"])),
    "drops": s1["drops"] - s0["drops"], "freezes": s1["freezes"] - s0["freezes"],
    "split": [s1["workers"][k] - s0["workers"].get(k, 0) for k in sorted(s1["workers"])]}))
EOF
}

run_drain() {
    local w=$1 s0 out t0 s1
    mon_start "$w" "$DRAIN_RING"
    s0=$(poll scrape)
    kill -STOP "$MON_PID"
    out=$(blast --count "$DRAIN")
    sleep 0.5
    t0=$(date +%s.%N)
    kill -CONT "$MON_PID"
    s1=$(poll_stable 1)
    mon_stop
    python3 - "$w" "$t0" "$s0" "$out" "$s1" <<'EOF'
import json, sys
w, t0, s0, sent, s1 = int(sys.argv[1]), float(sys.argv[2]), *map(json.loads, sys.argv[3:])
judged = s1["packets"] - s0["packets"]
print(json.dumps({"mode": "drain", "workers": w, "offered": sent["sent"], "offered_pps": sent["pps"],
    "judged": judged, "pps": judged / (s1["changed"] - t0),
    "drops": s1["drops"] - s0["drops"], "freezes": s1["freezes"] - s0["freezes"],
    "split": [s1["workers"][k] - s0["workers"].get(k, 0) for k in sorted(s1["workers"])]}))
EOF
}

RESULTS=$WORK/results.jsonl
: > "$RESULTS"
for rep in $(seq "$REPS"); do
    for w in 1 2; do
        echo "== rep $rep, --workers $w: live ($LOOPS passes, ring $RING MiB per worker)"
        run_live "$w" > "$WORK/one.json"
        tee -a "$RESULTS" < "$WORK/one.json"
        echo "== rep $rep, --workers $w: drain ($DRAIN frames into a stopped monitor, ring $DRAIN_RING MiB per worker)"
        run_drain "$w" > "$WORK/one.json"
        tee -a "$RESULTS" < "$WORK/one.json"
    done
done

echo "== report (median of $REPS; Mpps = million packets judged per second)"
python3 - "$RESULTS" "$REPLAY_MPPS" "$(nproc)" <<'EOF'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
replay, cpus = float(sys.argv[2]), sys.argv[3]
def med(mode, w, key):
    vals = [r[key] for r in recs if r["mode"] == mode and r["workers"] == w]
    return statistics.median(vals), min(vals), max(vals)
print("machine: %s CPUs; replay --bench: %.2f Mpps per core" % (cpus, replay))
print("| mode | workers | offered Mpps | judged Mpps [min..max] | kernel drops | ring freezes | per worker (last run) |")
print("|---|---|---|---|---|---|---|")
for mode in ("live", "drain"):
    for w in (1, 2):
        j = med(mode, w, "pps")
        o = med(mode, w, "offered_pps")[0]
        d = med(mode, w, "drops")[0]
        f = med(mode, w, "freezes")[0]
        last = [r for r in recs if r["mode"] == mode and r["workers"] == w][-1]
        print("| %s | %d | %.2f | %.2f [%.2f..%.2f] | %d | %d | %s |" % (
            mode, w, o / 1e6, j[0] / 1e6, j[1] / 1e6, j[2] / 1e6, d, f, last["split"]))
d1, d2 = med("drain", 1, "pps")[0], med("drain", 2, "pps")[0]
l1, l2 = med("live", 1, "pps")[0], med("live", 2, "pps")[0]
print()
print("monitor (drain, 1 worker) / replay per core: %.2f (goal >= 0.7)" % (d1 / 1e6 / replay))
print("2 workers / 1 worker, drain: %.2f; live: %.2f (goal >= 1.6)" % (d2 / d1, l2 / l1))
EOF
