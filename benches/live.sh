#!/usr/bin/env bash
#
# live.sh - live benchmark of pinhole inline on NFQUEUE against the Linux kernel's own
# FTP/TFTP conntrack helpers, with real servers and clients in network namespaces.
#
# The test bed is the one of scripts/netns-lib.sh: client <-> fw (the router) <-> server, with
# vsftpd and tftpd-hpa in the server namespace. Four configurations of the router are compared
# in one run:
#
#   none         plain forwarding: FORWARD policy ACCEPT, no rules (no conntrack either)
#   kernel       the kernel's way to do what rules/edge-router.toml does: FORWARD policy DROP,
#                the ftp and tftp conntrack helpers attached in the raw table (CT --helper),
#                ESTABLISHED,RELATED accepted, NEW FTP/TFTP (and ping) to the server accepted,
#                inside -> outside accepted
#   offload      pinhole run --mode offload     --queues 0-1 --install-rules, rules/edge-router.toml
#   inspect-all  pinhole run --mode inspect-all --queues 0-1 --install-rules, rules/edge-router.toml
#                (both with FORWARD policy DROP, as tests/e2e/nfqueue.sh runs it)
#
# and, on a NAT router (the test bed of scripts/nat-lib.sh: an outside client reaches the
# private server 10.0.1.10 through the router's public address 203.0.113.1, which DNATs tcp 21
# and udp 69 to it and masquerades the inside), three more, selected with --nat or --only:
#
#   nat-kernel       the kernel's way (nat_fw_kernel_up): the ftp and tftp helpers attached in
#                    the raw table, which also translate (nf_nat_ftp rewrites the 227, the
#                    expectation DNATs the data connection), FORWARD policy DROP,
#                    ESTABLISHED,RELATED and new tcp 21 / udp 69 accepted
#   nat-offload      pinhole run --mode offload     --queues 0-1 --install-rules, with the same
#   nat-inspect-all  pinhole run --mode inspect-all --queues 0-1 --install-rules  translations:
#                    pinhole filters (FORWARD policy DROP, rules/edge-router.toml with the NAT
#                    test bed's addresses) and the kernel translates (pinhole's PINHOLE_HELPERS
#                    raw chain attaches the helpers; pinhole reads each control-connection
#                    packet's conntrack entry for the translation and sequence adjustments)
#
# and for each it measures
#
#   a. bulk FTP download throughput: a passive-mode RETR of a large file (tmpfs, in the server
#      namespace) by curl to /dev/null, Gbit/s; the byte count must be right, or it is an error;
#   b. FTP data connections set up per second: CLIENTS processes, each with one logged-in control
#      connection, looping PASV + connect + RETR of a 1 KiB file for DURATION seconds;
#   c. TFTP transfers per second (not in the NAT configurations): CLIENTS processes looping
#      RRQ / DATA / ACK of a 500-byte file (one block) for DURATION seconds, each transfer from
#      a fresh socket whose port the kernel picks (so ports come back soon, as with any busy
#      client; --tftp-distinct-ports makes each client cycle through its own slice of
#      20000-59999 instead); a request with no answer within 2 s is an error and costs its
#      client those 2 s;
#   d. CPU per GB during the bulk download: busy time of all CPUs (/proc/stat) and, for
#      pinhole, the daemon's own utime + stime (/proc/PID/stat, all its threads; with tick
#      accounting this includes kernel work done in its system calls, such as forwarding the
#      packets its verdicts accept).
#
# Client, server and router share this machine's CPUs, so the machine's CPU per GB includes
# curl's and vsftpd's work; what a configuration adds over `none` is the firewall's cost.
# Anything else running on the machine is counted too: the busy CPUs measured for a second
# before each download are reported ("background busy CPUs") so a noisy run can be told.
#
# Repetitions are rounds: each round builds a fresh test bed for every configuration in turn
# (fresh namespaces: no conntrack entries, TIME_WAIT sockets or pinhole state carried over)
# and runs one of each measurement. Rounds interleave the configurations (the order rotates
# each round), so background load that comes and goes spreads over all of them.
#
# The medians are compared with `kernel` (ratios) and with the issue's targets: offload >= 0.9
# of kernel for bulk throughput and >= 0.8 for the connection setup rate, inspect-all >= 0.3
# for bulk throughput. The NAT configurations are compared with `nat-kernel`: nat-offload >= 0.9
# for bulk throughput and for the setup rate (issue 16), nat-inspect-all >= 0.3 for bulk
# throughput and >= 0.9 for the setup rate. Targets are reported (PASS/MISS), not enforced.
#
# Checks that keep the comparison honest: each bulk download must deliver the whole file;
# before measuring (first round), a connection from the client to a closed port in vsftpd's
# passive range is refused by the server under `none` and must time out (dropped) under the
# other three; under `kernel` the helper rules' counters must grow (the data connections can
# only pass as RELATED); under pinhole, its chain must be first in FORWARD, `pinhole stats`
# must show the bulk transfer's pinhole used and flows offloaded in offload mode (none in
# inspect-all), and a SIGTERM must stop it with exit status 0 and no rules left. Under NAT
# (first round) a connection to a closed passive-range port of the server, DNAT'd to it by a
# temporary rule, is refused before the firewall is up and must time out after; the 227
# replies the setup-rate clients get must name the public address (the kernel's nf_nat_ftp
# rewrote them, so the data connections go through its expectation's DNAT); under nat-kernel
# the raw-table helper rules' counters must grow; under pinhole its PINHOLE_HELPERS chain must
# be in the raw table and its ftp rule's counter grow, and `pinhole stats` must show the bulk
# transfer's pinhole used and its control connection's translation learned, and, for the
# setup-rate run, at least one pinhole used per completed data connection and one translated
# control connection per client that completed one.
#
# Usage:  benches/live.sh [OPTIONS]                    (as root)
#   --quick               smoke run: --size-mib 128 --reps 1 --duration 2 (about a minute)
#   --only CFG[,CFG...]   configurations to run (none, kernel, offload, inspect-all, nat-kernel,
#                         nat-offload, nat-inspect-all; default: the first four)
#   --nat                 the NAT configurations: --only nat-kernel,nat-offload,nat-inspect-all
#   --size-mib N          bulk file size in MiB (default 1024)
#   --reps N              rounds (default 5)
#   --duration S          seconds per setup-rate and TFTP-rate run (default 10)
#   --clients N           concurrent FTP clients for the setup rate (default 8)
#   --tftp-clients N      concurrent TFTP clients (default 8)
#   --tftp-distinct-ports TFTP clients do not let the kernel pick their ports: each cycles
#                         through its own slice of 20000-59999, so no transfer ID (client
#                         port) comes back within a run of a few seconds
#   --json FILE           also write the results as JSON to FILE
# Environment:
#   PINHOLE_BIN=path      the pinhole binary (default target/release/pinhole, built with
#                         `cargo build --release --locked` only if missing); copied into the
#                         work dir at start so every configuration runs the same binary
#   PH_PREFIX=phbench-    namespace name prefix (see scripts/netns-lib.sh)
#   PH_KEEP_WORKDIR=1     keep the work dir (on /dev/shm: logs, configs) after the run
#   BENCH_OFFLOADS=on     veth offloads (TSO, GSO, GRO, checksums): on (default) or off
#   BENCH_TIME_LIMIT=S    stop the whole run after S seconds (default: estimated from the
#                         parameters, generously)
#
# Exit status 0 when every configuration was measured and every check passed, 1 otherwise,
# 2 on a usage error. Traffic only flows between the namespaces this script creates;
# everything it starts is stopped and removed on any exit.

# (check_* and pinhole_stop are called through `check NAME FUNCTION ARGS`.)
# shellcheck disable=SC2317
set -uo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
LIVE=$BENCH_DIR/live
PJ=$REPO_DIR/tests/e2e/pj.py
FTP_PROBE=$REPO_DIR/tests/e2e/ftp_probe.py

DEFAULT_CONFIGS=(none kernel offload inspect-all)
NAT_CONFIGS=(nat-kernel nat-offload nat-inspect-all)
ALL_CONFIGS=("${DEFAULT_CONFIGS[@]}" "${NAT_CONFIGS[@]}")

usage() {
    sed -n '/^# Usage:/,/^# Exit status/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------
QUICK=0 ONLY="" JSON_OUT="" TFTP_DISTINCT=0
SIZE_MIB="" REPS="" DURATION="" CLIENTS=8 TFTP_CLIENTS=8
need_arg() {
    if [ $# -lt 2 ] || [ -z "$2" ]; then
        echo "live.sh: $1 needs a value" >&2
        exit 2
    fi
}
while [ $# -gt 0 ]; do
    case $1 in
        --quick) QUICK=1 ;;
        --only) need_arg "$@"; ONLY=${ONLY:+$ONLY,}$2; shift ;;
        --nat) ONLY=${ONLY:+$ONLY,}$(IFS=,; echo "${NAT_CONFIGS[*]}") ;;
        --size-mib) need_arg "$@"; SIZE_MIB=$2; shift ;;
        --reps) need_arg "$@"; REPS=$2; shift ;;
        --duration) need_arg "$@"; DURATION=$2; shift ;;
        --clients) need_arg "$@"; CLIENTS=$2; shift ;;
        --tftp-clients) need_arg "$@"; TFTP_CLIENTS=$2; shift ;;
        --tftp-distinct-ports) TFTP_DISTINCT=1 ;;
        --json) need_arg "$@"; JSON_OUT=$2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "live.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    : "${SIZE_MIB:=128}" "${REPS:=1}" "${DURATION:=2}"
else
    : "${SIZE_MIB:=1024}" "${REPS:=5}" "${DURATION:=10}"
fi
for v in SIZE_MIB REPS DURATION CLIENTS TFTP_CLIENTS; do
    if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
        echo "live.sh: ${v,,} must be a positive whole number, not '${!v}'" >&2
        exit 2
    fi
done
CONFIGS=()
if [ -n "$ONLY" ]; then
    IFS=, read -ra wanted <<<"$ONLY"
    for c in "${ALL_CONFIGS[@]}"; do
        for w in "${wanted[@]}"; do [ "$w" = "$c" ] && { CONFIGS+=("$c"); break; }; done
    done
    for w in "${wanted[@]}"; do
        [[ " ${ALL_CONFIGS[*]} " == *" $w "* ]] ||
            { echo "live.sh: unknown configuration '$w' (${ALL_CONFIGS[*]})" >&2; exit 2; }
    done
else
    CONFIGS=("${DEFAULT_CONFIGS[@]}")
fi
[ ${#CONFIGS[@]} -gt 0 ] || { echo "live.sh: no configuration selected" >&2; exit 2; }
: "${BENCH_OFFLOADS:=on}"
case $BENCH_OFFLOADS in on|off) ;; *) echo "live.sh: BENCH_OFFLOADS must be on or off" >&2; exit 2 ;; esac
if [ -n "$JSON_OUT" ]; then
    case $JSON_OUT in /*) ;; *) JSON_OUT=$PWD/$JSON_OUT ;; esac
fi

if [ "$(id -u)" != 0 ]; then
    echo "live.sh: needs root (network namespaces, iptables, NFQUEUE)" >&2
    exit 1
fi

# The small files: 1 KiB for the FTP setup rate; below 512 bytes for TFTP, so that the whole
# transfer is RRQ, one DATA block (the last, being short), one ACK.
FTP_SMALL=1024
TFTP_SMALL=500
BULK_BYTES=$((SIZE_MIB * 1024 * 1024))

# --------------------------------------------------------------------------
# Test bed library, tools
# --------------------------------------------------------------------------
: "${PH_PREFIX:=phbench-}"
# shellcheck source=scripts/netns-lib.sh
. "$REPO_DIR/scripts/netns-lib.sh"
# The NAT test bed reuses netns-lib's names and sets its address variables to its own
# addresses; keep both sets and switch between them per configuration (use_topology).
TOPOLOGY_VARS=(PH_CLIENT_V4 PH_CLIENT_V6 PH_WAN_V4 PH_WAN_V6 PH_LAN_V4 PH_LAN_V6 PH_SERVER_V4
    PH_SERVER_V6)
declare -A PLAIN_ADDR NAT_ADDR
for v in "${TOPOLOGY_VARS[@]}"; do PLAIN_ADDR[$v]=${!v}; done
# shellcheck source=scripts/nat-lib.sh
. "$REPO_DIR/scripts/nat-lib.sh"
for v in "${TOPOLOGY_VARS[@]}"; do NAT_ADDR[$v]=${!v}; done
# use_topology plain|nat: netns-lib's address variables for that test bed, and SV4/SV6, the
# address the client connects to: the server's own, or the NAT router's public address.
use_topology() {
    local v
    if [ "$1" = nat ]; then
        for v in "${TOPOLOGY_VARS[@]}"; do printf -v "$v" '%s' "${NAT_ADDR[$v]}"; done
        SV4=$NAT_PUBLIC_V4 SV6=$NAT_PUBLIC_V6
    else
        for v in "${TOPOLOGY_VARS[@]}"; do printf -v "$v" '%s' "${PLAIN_ADDR[$v]}"; done
        SV4=$PH_SERVER_V4 SV6=$PH_SERVER_V6
    fi
}
use_topology plain

die() { echo "live.sh: $*" >&2; exit 1; }
say() { printf '%s\n' "$*"; }

ph_ensure_tools bench || die "missing tools could not be installed"

is_nat() { [[ $1 == nat-* ]]; }
is_pinhole() { [[ ${1#nat-} == offload || ${1#nat-} == inspect-all ]]; }
uses_pinhole() {
    local c
    for c in "${CONFIGS[@]}"; do is_pinhole "$c" && return 0; done
    return 1
}
uses_nat() {
    local c
    for c in "${CONFIGS[@]}"; do is_nat "$c" && return 0; done
    return 1
}
if uses_pinhole; then
    if [ -z "${PINHOLE_BIN:-}" ]; then
        PINHOLE_BIN=$REPO_DIR/target/release/pinhole
        if [ ! -x "$PINHOLE_BIN" ]; then
            if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-}/.cargo/env" ]; then
                # shellcheck disable=SC1091
                . "${HOME:-}/.cargo/env"
            fi
            say "building pinhole: cargo build --release --locked --bin pinhole"
            (cd "$REPO_DIR" && cargo build --release --locked --quiet --bin pinhole) ||
                die "cargo build failed"
        fi
    fi
    case $PINHOLE_BIN in /*) ;; *) PINHOLE_BIN=$PWD/$PINHOLE_BIN ;; esac
    "$PINHOLE_BIN" run --help >/dev/null 2>&1 || die "$PINHOLE_BIN has no 'run' command"
fi

# The work dir holds the bulk file, which vsftpd must read from memory: put it on tmpfs.
if [ -z "$PH_WORKDIR" ]; then
    [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ] || die "/dev/shm is not a tmpfs"
    avail=$(df --output=avail -B1M /dev/shm | tail -n 1 | tr -d ' ')
    [ "$avail" -gt $((SIZE_MIB + 512)) ] ||
        die "/dev/shm has $avail MiB free; the bulk file needs $SIZE_MIB MiB (+512)"
    PH_WORKDIR=$(mktemp -d "/dev/shm/${PH_PREFIX}work.XXXXXX") || die "mktemp failed"
fi
ph_init || die "cannot initialise"

# Bound the whole run: stop it (and so clean up) if it ever hangs.
if [ -z "${BENCH_TIME_LIMIT:-}" ]; then
    # per round and configuration: test bed and checks, the download at >= 0.25 Gbit/s, two
    # rate runs; times 3, plus a fixed margin.
    BENCH_TIME_LIMIT=$(( (${#CONFIGS[@]} * REPS * (30 + SIZE_MIB / 30 + 2 * (DURATION + 10))) * 3 + 300 ))
fi
setsid bash -c "sleep $BENCH_TIME_LIMIT; echo 'live.sh: time limit of $BENCH_TIME_LIMIT s reached' >&2; kill -TERM $$" \
    </dev/null >/dev/null 2>&1 &
printf 'watchdog %s\n' $! >> "$PH_WORKDIR/pids"

CTL=$PH_WORKDIR/ctl.sock
RESULTS=$PH_WORKDIR/results.jsonl
: > "$RESULTS"
HZ=$(getconf CLK_TCK)
PINHOLE=""
if uses_pinhole; then
    PINHOLE=$PH_WORKDIR/pinhole
    cp "$PINHOLE_BIN" "$PINHOLE" || die "cannot copy $PINHOLE_BIN"
fi

# --------------------------------------------------------------------------
# Results (JSON lines, summarised by live/report.py)
# --------------------------------------------------------------------------
CFG="" ROUND=0 FAILED=0
json_str() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }
record_sample() {   # METRIC VALUE
    printf '{"type":"sample","config":"%s","metric":"%s","value":%s}\n' "$CFG" "$1" "$2" >> "$RESULTS"
}
record_info() {     # KEY JSON_VALUE
    printf '{"type":"info","config":"%s","key":"%s","value":%s}\n' "$CFG" "$1" "$2" >> "$RESULTS"
}
# check NAME CMD...: run CMD, record and print the outcome (its output is the detail).
# (Not in a subshell: pinhole_stop must be able to `wait` for the daemon, its child.)
check() {
    local name=$1 out rc ok=false f=$PH_WORKDIR/check.out
    shift
    "$@" > "$f" 2>&1
    rc=$?
    out=$(cat "$f")
    [ $rc = 0 ] && ok=true
    printf '{"type":"check","config":"%s","name":%s,"ok":%s,"detail":%s}\n' "$CFG" \
        "$(json_str "$name")" "$ok" "$(json_str "$out")" >> "$RESULTS"
    if [ $rc = 0 ]; then
        say "  [$CFG] check ok: $name${out:+ ($(tail -n 1 <<<"$out"))}"
    else
        FAILED=1
        say "  [$CFG] CHECK FAILED: $name"
        tail -n 15 <<<"$out" | sed 's/^/      /'
    fi
    return $rc
}
fail_config() {     # DETAIL
    FAILED=1
    printf '{"type":"error","config":"%s","detail":%s}\n' "$CFG" \
        "$(json_str "round $ROUND: $1")" >> "$RESULTS"
    say "  [$CFG] FAILED (round $ROUND): $1"
}

# --------------------------------------------------------------------------
# CPU accounting
# --------------------------------------------------------------------------
# Busy jiffies of all CPUs: user + nice + system + irq + softirq, i.e. total minus idle and
# iowait. Steal (time the hypervisor gave to other guests) and guest (already in user) are
# left out: they are no work done here. Softirq is where the kernel forwards packets.
cpu_busy() {
    local _cpu user nice system _idle _iowait irq softirq _rest
    read -r _cpu user nice system _idle _iowait irq softirq _rest < /proc/stat
    echo $((user + nice + system + irq + softirq))
}
# utime + stime of a process, all its threads (/proc/PID/stat covers the whole process).
proc_cpu() {
    if [ -z "$1" ] || [ ! -r "/proc/$1/stat" ]; then
        echo 0
        return
    fi
    # Fields after "(comm) ": state is 1, utime 12, stime 13.
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# --------------------------------------------------------------------------
# Test bed: namespaces, offloads, servers
# --------------------------------------------------------------------------
# netns-lib's ph_topology_up turns TSO/GSO/GRO and checksum offload off on the four veth ends
# (so that its captures hold real segments). A real router forwards GRO/GSO super-packets, and
# pinhole takes them whole (NFQA_CFG_F_GSO), so the benchmark turns them back on, identically
# for every configuration (BENCH_OFFLOADS=off keeps netns-lib's setting, also for all).
set_offloads() {
    [ "$BENCH_OFFLOADS" = on ] || return 0
    local ns_dev ns dev
    local -a devs=("$PH_NS_CLIENT:$PH_IF_CLIENT" "$PH_NS_FW:$PH_IF_WAN" "$PH_NS_FW:$PH_IF_LAN"
        "$PH_NS_SERVER:$PH_IF_SERVER")
    # The NAT test bed (nat-lib.sh turns them off too): every veth end, the outside segment's
    # bridge ports included.
    is_nat "$CFG" && devs=("$NAT_NS_CLIENT:eth0" "$NAT_NS_SWITCH:p-client" "$NAT_NS_SWITCH:p-fw"
        "$NAT_NS_SWITCH:p-oserver" "$NAT_NS_OSERVER:eth0" "$NAT_NS_FW:$PH_IF_WAN"
        "$NAT_NS_FW:$PH_IF_LAN" "$NAT_NS_FW:$NAT_IF_LAN1" "$NAT_NS_SERVER:eth0"
        "$NAT_NS_INSIDE:eth0")
    for ns_dev in "${devs[@]}"; do
        ns=${ns_dev%%:*} dev=${ns_dev#*:}
        ph_in "$ns" ethtool -K "$dev" tx on rx on sg on tso on gso on gro on >/dev/null 2>&1 ||
            { echo "ethtool -K $dev on in $ns failed"; return 1; }
    done
}
offload_state() {
    ph_in_fw ethtool -k "$PH_IF_WAN" |
        awk -F': ' '/^(tcp-segmentation-offload|generic-segmentation-offload|generic-receive-offload|tx-checksumming|rx-checksumming):/ {
            printf "%s%s=%s", (n++ ? " " : ""), $1, $2 } END { print "" }'
}

write_vsftpd_conf() {
    local conf=$PH_WORKDIR/vsftpd-bench.conf
    ph_write_vsftpd_conf "$conf" bench
    # Later settings override earlier ones in vsftpd's config.
    cat >> "$conf" <<EOF
# benches/live.sh: many concurrent sessions from one client address, no rate limits, no
# per-command or per-transfer logging, read-only; the passive range is netns-lib's
# (pasv_min_port/pasv_max_port above); data connections only from the control peer.
max_clients=0
max_per_ip=0
anon_max_rate=0
xferlog_enable=NO
log_ftp_protocol=NO
write_enable=NO
anon_upload_enable=NO
anon_mkdir_write_enable=NO
pasv_promiscuous=NO
one_process_model=NO
use_sendfile=YES
EOF
    echo "$conf"
}

testbed_up() {
    if is_nat "$CFG"; then
        # The six namespaces of nat-lib.sh and the router's translations (DNAT of tcp 21 / udp
        # 69 of the public address to the private server, MASQUERADE of the inside); vsftpd
        # and tftpd-hpa (this benchmark's, as below) on the private server only.
        nat_topology_up >/dev/null 2>&1 || { echo "NAT namespaces did not come up"; return 1; }
        nat_router_nat_up || { echo "NAT rules could not be installed"; return 1; }
    else
        ph_topology_up >/dev/null 2>&1 || { echo "namespaces did not come up"; return 1; }
    fi
    set_offloads || return 1
    ph_start_bg vsftpd "$PH_NS_SERVER" "$PH_WORKDIR/vsftpd-bench.out" vsftpd "$VSFTPD_CONF"
    ph_wait_listen "$PH_NS_SERVER" tcp 21 2>/dev/null ||
        { echo "vsftpd did not start"; cat "$PH_WORKDIR/vsftpd-bench.out"; return 1; }
    ph_start_tftpd --port-range "$TFTP_PORT_RANGE" >/dev/null 2>&1 ||
        { echo "tftpd-hpa did not start"; return 1; }
}

testbed_down() {
    if pinhole_alive; then
        check "SIGTERM stops pinhole: exit status 0, no PINHOLE rule left (v4, v6)" pinhole_stop
    fi
    ph_stop vsftpd
    ph_stop tftpd
    ph_stop pinhole
    PINHOLE_PID=""
    # (vsftpd's session processes run in their own sessions: the namespace deletion kills them.)
    if is_nat "$CFG"; then
        nat_topology_down 2>>"$PH_WORKDIR/cleanup.log"
    else
        ph_topology_down 2>>"$PH_WORKDIR/cleanup.log"
    fi
}

# --------------------------------------------------------------------------
# The four firewall configurations (in the fw namespace)
# --------------------------------------------------------------------------
fw_none() {
    local rules
    rules=$(ph_in_fw iptables -S; ph_in_fw ip6tables -S)
    if grep -v '^-P .* ACCEPT$' <<<"$rules"; then
        echo "^ the fw namespace is not empty"
        return 1
    fi
}

fw_kernel() {
    local fam dst match
    local -a icmp
    modprobe nf_conntrack_ftp 2>/dev/null || true
    modprobe nf_conntrack_tftp 2>/dev/null || true
    for fam in iptables ip6tables; do
        if [ "$fam" = iptables ]; then
            dst=$SV4 icmp=(-p icmp --icmp-type echo-request)
        else
            dst=$SV6 icmp=(-p ipv6-icmp --icmpv6-type echo-request)
        fi
        # The helpers, attached explicitly (automatic assignment is off in current kernels);
        # then rules/edge-router.toml's rules: ftp-to-server, tftp-to-server, ping-server,
        # inside-out, with everything they admit (and what the helpers expect) as
        # ESTABLISHED,RELATED.
        ph_in_fw "$fam" -t raw -A PREROUTING -p tcp --dport 21 -j CT --helper ftp || return 1
        ph_in_fw "$fam" -t raw -A PREROUTING -p udp --dport 69 -j CT --helper tftp || return 1
        ph_in_fw "$fam" -P FORWARD DROP || return 1
        ph_in_fw "$fam" -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT || return 1
        for match in "-p tcp --dport 21" "-p udp --dport 69" "${icmp[*]}"; do
            # shellcheck disable=SC2086 # (word splitting of $match intended)
            ph_in_fw "$fam" -A FORWARD -i "$PH_IF_WAN" -o "$PH_IF_LAN" -d "$dst" $match \
                -m conntrack --ctstate NEW -j ACCEPT || return 1
        done
        ph_in_fw "$fam" -A FORWARD -i "$PH_IF_LAN" -o "$PH_IF_WAN" \
            -m conntrack --ctstate NEW -j ACCEPT || return 1
    done
}

# nat-kernel: nat-lib.sh's kernel firewall (the helpers in the raw table's TESTBED_HELPERS,
# FORWARD policy DROP, TESTBED_FWD). The translating halves, nf_nat_ftp and nf_nat_tftp, are
# loaded too, in case they are modules (this is the kernel's figure pinhole is held to).
fw_nat_kernel() {
    local m
    for m in nf_conntrack_ftp nf_conntrack_tftp nf_nat_ftp nf_nat_tftp; do
        modprobe "$m" 2>/dev/null || true
    done
    nat_fw_kernel_up
}

# helper_chain: the raw-table chain holding this configuration's CT --helper rules.
helper_chain() {
    case $CFG in
        nat-kernel) echo TESTBED_HELPERS ;;
        nat-*) echo PINHOLE_HELPERS ;;
        *) echo PREROUTING ;;
    esac
}
# helper_hits ftp|tftp: packets the CT --helper rule (v4) for FTP or TFTP matched (0 when
# there is no such rule).
helper_hits() {
    ph_in_fw iptables -t raw -L "$(helper_chain)" -v -n -x 2>/dev/null |
        awk -v h="CT helper $1" 'index($0, h) { n += $1 } END { print n + 0 }'
}
check_kernel_helper() {   # ftp|tftp BEFORE
    local n
    n=$(helper_hits "$1")
    echo "raw $(helper_chain) CT --helper $1 rule: $2 -> $n packets;" \
        "FORWARD policy: $(ph_in_fw iptables -S FORWARD | head -n 1)"
    [ "$n" -gt "$2" ] && [ "$(ph_in_fw iptables -S FORWARD | head -n 1)" = "-P FORWARD DROP" ]
}

# ---- pinhole (start and readiness as in tests/e2e/nfqueue.sh)
PINHOLE_PID="" PINHOLE_LOG="" EXIT_STATUS=""
ctl() { timeout 5 "$PINHOLE" "$@" --control "$CTL"; }
pstat() { ctl stats --json | python3 "$PJ" "g('$1')"; }

pinhole_alive() {
    [ -n "$PINHOLE_PID" ] && kill -0 "$PINHOLE_PID" 2>/dev/null &&
        [ "$(ps -o stat= -p "$PINHOLE_PID" 2>/dev/null | cut -c1)" != Z ]
}

fw_pinhole() {   # MODE RULES
    local mode=$1 rules=$2 i
    ph_in_fw iptables -P FORWARD DROP && ph_in_fw ip6tables -P FORWARD DROP || return 1
    PINHOLE_LOG=$PH_WORKDIR/pinhole-$CFG-$ROUND.log
    ph_start_bg pinhole "$PH_NS_FW" "$PINHOLE_LOG" \
        "$PINHOLE" run --rules "$rules" --queues 0-1 --mode "$mode" --install-rules \
        --control "$CTL" --state-file "$PH_WORKDIR/state-$CFG-$ROUND.json"
    PINHOLE_PID=$PH_LAST_PID
    for ((i = 0; i < 100; i++)); do
        if ! pinhole_alive; then
            echo "pinhole exited during start-up:"
            tail -n 20 "$PINHOLE_LOG"
            return 1
        fi
        if ctl status >/dev/null 2>&1; then
            echo "pinhole ready after $((i / 10)).$((i % 10)) s (pid $PINHOLE_PID)"
            chain_installed && status_is "$mode" && { ! is_nat "$CFG" || helpers_installed; }
            return
        fi
        sleep 0.1
    done
    echo "pinhole did not answer 'status' within 10 s:"
    tail -n 20 "$PINHOLE_LOG"
    return 1
}

# The chain is in place, for IPv4 and IPv6, first in FORWARD, exactly once.
chain_installed() {
    local fam first n rc=0
    for fam in iptables ip6tables; do
        first=$(ph_in_fw "$fam" -S FORWARD | sed -n 2p)
        n=$(ph_in_fw "$fam" -S FORWARD | grep -cE -- '-j PINHOLE( |$)')
        if [[ $first != *"-j PINHOLE"* ]] || [ "$n" != 1 ]; then
            echo "$fam: first FORWARD rule: $first; jumps to PINHOLE: $n"
            rc=1
        fi
    done
    return $rc
}
# Under NAT: the raw-table chain attaching the kernel's helpers is in place, for IPv4 and
# IPv6, jumped to from PREROUTING, with the ftp helper on tcp 21.
helpers_installed() {
    local fam rc=0
    for fam in iptables ip6tables; do
        if ! ph_in_fw "$fam" -t raw -S PREROUTING | grep -qE -- '^-A PREROUTING -j PINHOLE_HELPERS$' ||
                ! ph_in_fw "$fam" -t raw -S PINHOLE_HELPERS |
                    grep -qE -- '-p tcp .*--dport 21 -j CT --helper ftp$'; then
            echo "$fam: no PINHOLE_HELPERS chain with the ftp helper on tcp 21 in the raw table:"
            ph_in_fw "$fam" -t raw -S
            rc=1
        fi
    done
    return $rc
}
status_is() {
    ctl status --json | python3 "$PJ" -t "data['mode'] == '$1' and data['queues'] == [0, 1]" ||
        { echo "status does not say mode $1, queues [0, 1]: $(ctl status --json)"; return 1; }
}

pinhole_stop() {
    kill -TERM "$PINHOLE_PID" || return 1
    if ! ph_wait_gone "$PINHOLE_PID" 10; then
        echo "pinhole still running 10 s after SIGTERM"
        return 1
    fi
    wait "$PINHOLE_PID" 2>/dev/null
    EXIT_STATUS=$?
    ph_stop pinhole
    PINHOLE_PID=""
    local rules
    rules=$(ph_in_fw iptables-save; ph_in_fw ip6tables-save)
    if grep -i pinhole <<<"$rules"; then
        echo "^ left in the fw namespace's rules"
        return 1
    fi
    echo "exit status $EXIT_STATUS, no PINHOLE rule left"
    [ "$EXIT_STATUS" = 0 ]
}

# After the bulk download: the transfer went through a pinhole, and (offload) the kernel carried
# it or (inspect-all) pinhole saw every packet of it.
check_pinhole_bulk() {   # MODE USED_BEFORE [TRANSLATED_BEFORE]
    local js off used pkts gso tr
    js=$(ctl stats --json) || { echo "pinhole stats failed"; return 1; }
    if [ -n "${3:-}" ]; then
        # Under NAT: pinhole learned the kernel's translation of the control connection from
        # its connection tracking. (flows_translated counts the flows whose packets pinhole
        # reads the kernel's entry for: those on the helpers' ports, so not the data
        # connections.)
        tr=$(python3 "$PJ" "g('engine.flows_translated')" <<<"$js")
        echo "flows_translated $3 -> $tr"
        [ "$tr" -gt "$3" ] || return 1
    fi
    off=$(python3 "$PJ" "g('engine.flows_offloaded')" <<<"$js")
    used=$(python3 "$PJ" "g('engine.pinholes_used')" <<<"$js")
    pkts=$(python3 "$PJ" "g('engine.packets')" <<<"$js")
    gso=$(python3 "$PJ" "g('queue.gso')" <<<"$js")
    echo "flows $(python3 "$PJ" "g('flows')" <<<"$js"), pinholes_used $2 -> $used," \
        "flows_offloaded $off, packets $pkts, queue.gso $gso," \
        "enobufs $(python3 "$PJ" "g('queue.enobufs')" <<<"$js")," \
        "drops $(python3 "$PJ" "g('engine.drops', {})" <<<"$js")"
    [ "$used" -gt "$2" ] || return 1
    if [ "$1" = offload ]; then
        [ "$off" -gt 0 ]
    else
        # Every packet of the download crossed pinhole: at least one per 64 KiB.
        [ "$off" -eq 0 ] && [ "$pkts" -ge $((BULK_BYTES / 65536)) ]
    fi
}
record_pinhole_stats() {
    local js
    js=$(ctl stats --json) || return 0
    say "  [$CFG] pinhole drops this round: $(python3 -c '
import json, sys
d = json.load(sys.stdin)["engine"]["drops"]
print(", ".join("%s %d" % kv for kv in sorted(d.items())) or "none")' <<<"$js")"
    record_info "pinhole_stats_round_$ROUND" "$(python3 -c '
import json, sys
d = json.load(sys.stdin)
e, q = d["engine"], d["queue"]
print(json.dumps({k: e.get(k) for k in ("packets", "accepted", "dropped", "drops", "flows_opened",
    "flows_offloaded", "pinholes_opened", "pinholes_used", "pinholes_refused")}
    | {"queue_" + k: q.get(k) for k in ("received", "gso", "enobufs", "offload_verdicts")}))
' <<<"$js")"
}

# --------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------
# A connection from the client to a closed port in vsftpd's passive range (no PASV announced
# it): the server resets it at once (`none` shows that), so a time-out means the firewall
# dropped it.
check_closed_port() {   # timeout|refused
    local port=$PH_PASV_MAX
    ph_in_client python3 "$FTP_PROBE" connect "$SV4" "$port" --timeout 2 --expect "$1"
}
# Under NAT the outside client reaches the server only through the router's DNAT: a temporary
# rule forwards that port of the public address to the server, so that the server refuses the
# connection before the firewall is up, and the firewall must drop it after (no expectation,
# no pinhole announced it).
check_closed_port_nat() {   # timeout|refused
    local port=$PH_PASV_MAX rc
    local -a rule=(TESTBED_DNAT -d "$NAT_PUBLIC_V4" -p tcp --dport "$port"
        -j DNAT --to-destination "$NAT_SERVER_V4")
    ph_in_fw iptables -t nat -I "${rule[@]}" || return 1
    check_closed_port "$1"
    rc=$?
    ph_in_fw iptables -t nat -D "${rule[@]}" || rc=1
    return $rc
}

# After a setup-rate run under NAT: every 227 reply named the router's public address (the
# kernel's nf_nat_ftp rewrote the server's private one), so the clients' data connections went
# to the public address and through the expectation's DNAT.
check_pasv_public() {
    local hosts
    hosts=$(python3 "$PJ" "g('pasv_hosts', [])" <<<"$RATE_OUT")
    echo "addresses named by the 227 replies: $hosts"
    python3 "$PJ" -t "data['pasv_hosts'] == ['$NAT_PUBLIC_V4']" <<<"$RATE_OUT"
}
# ... and under pinhole, each completed transfer's data connection was admitted by a pinhole,
# and pinhole learned the kernel's translation of the control connection of every client that
# completed one (flows_translated counts control connections: see check_pinhole_bulk).
check_pinhole_setup() {   # USED_BEFORE TRANSLATED_BEFORE
    local js used tr sessions
    js=$(ctl stats --json) || { echo "pinhole stats failed"; return 1; }
    used=$(python3 "$PJ" "g('engine.pinholes_used')" <<<"$js")
    tr=$(python3 "$PJ" "g('engine.flows_translated')" <<<"$js")
    sessions=$(python3 "$PJ" "sum(1 for n in g('per_proc', []) if n > 0)" <<<"$RATE_OUT")
    echo "$RATE_COMPLETED transfers by $sessions clients; pinholes_used $1 -> $used" \
        "(+$((used - $1))), flows_translated $2 -> $tr (+$((tr - $2)))"
    [ $((used - $1)) -ge "$RATE_COMPLETED" ] && [ $((tr - $2)) -ge "$sessions" ]
}

# The machine's background load just before a download (compilers elsewhere, say): busy cores.
background_busy() {
    local b0 b1 t0 t1
    b0=$(cpu_busy) t0=$EPOCHREALTIME
    sleep 1
    b1=$(cpu_busy) t1=$EPOCHREALTIME
    awk -v b=$((b1 - b0)) -v hz="$HZ" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.2f", b / hz / (t1 - t0) }'
}

bulk_once() {
    local c0 c1 p0 p1 out rc size tpre ttot line gbps cpu pcpu secs err=$PH_WORKDIR/curl.err
    c0=$(cpu_busy) p0=$(proc_cpu "$PINHOLE_PID")
    out=$(ph_in_client curl -sS --noproxy '*' --globoff --max-time $((SIZE_MIB / 8 + 60)) \
        --ftp-pasv --disable-epsv -o /dev/null \
        -w '%{size_download} %{time_pretransfer} %{time_total}' "ftp://$SV4/bulk.bin" 2>"$err")
    rc=$?
    c1=$(cpu_busy) p1=$(proc_cpu "$PINHOLE_PID")
    read -r size tpre ttot <<<"$out"
    if [ $rc != 0 ] || [ "${size:-0}" != "$BULK_BYTES" ]; then
        fail_config "bulk download: curl exit $rc, ${size:-0} of $BULK_BYTES bytes: $(tail -n 1 "$err")"
        return 1
    fi
    # Throughput over the data phase (after the control dialogue); CPU-seconds per 10^9 bytes.
    line=$(awk -v s="$size" -v a="$tpre" -v b="$ttot" -v c=$((c1 - c0)) -v p=$((p1 - p0)) \
        -v hz="$HZ" 'BEGIN {
            gb = s / 1e9
            printf "%.4f %.4f %.4f %.3f", s * 8 / (b - a) / 1e9, c / hz / gb, p / hz / gb, b - a }')
    read -r gbps cpu pcpu secs <<<"$line"
    record_sample bulk_gbps "$gbps"
    record_sample cpu_s_per_gb "$cpu"
    [ -n "$PINHOLE_PID" ] && record_sample pinhole_cpu_s_per_gb "$pcpu"
    say "  [$CFG] bulk: $size bytes in $secs s = $gbps Gbit/s; CPU $cpu s/GB" \
        "(machine)${PINHOLE_PID:+, $pcpu s/GB (pinhole)}"
}

# rate_run KIND SCRIPT FILE SIZE PROCS [EXTRA_ARGS...]: one setup-rate or TFTP-rate run.
RATE_OUT="" RATE_COMPLETED=0
rate_run() {
    local kind=$1 script=$2 file=$3 size=$4 procs=$5 out rate errors completed
    shift 5
    RATE_OUT="" RATE_COMPLETED=0
    out=$(ph_in_client timeout $((DURATION + 120)) python3 "$LIVE/$script" "$SV4" "$file" "$size" \
        --procs "$procs" --duration "$DURATION" "$@" 2>"$PH_WORKDIR/$kind.err")
    completed=$(python3 "$PJ" "g('completed')" <<<"$out" 2>/dev/null) || completed=0
    if [ "${completed:-0}" = 0 ]; then
        fail_config "$kind: no transfer completed: ${out:-$(tail -n 3 "$PH_WORKDIR/$kind.err")}"
        return 1
    fi
    RATE_OUT=$out RATE_COMPLETED=$completed
    rate=$(python3 "$PJ" "g('rate')" <<<"$out")
    errors=$(python3 "$PJ" "g('errors')" <<<"$out")
    record_sample "${kind}_per_s" "$rate"
    record_sample "${kind}_errors" "$errors"
    say "  [$CFG] $kind: $completed transfers in $(python3 "$PJ" "g('elapsed')" <<<"$out") s" \
        "= $rate/s, $errors errors$( [ "$errors" = 0 ] ||
            echo " (first: $(python3 "$PJ" "g('first_error')" <<<"$out"))")"
}

# One configuration, one round: fresh test bed, firewall, checks, the three measurements (two
# under NAT).
run_config() {
    CFG=$1
    local t0=$SECONDS out before used0=0 tr0=0 rc
    say "[$CFG] round $ROUND/$REPS"
    if is_nat "$CFG"; then use_topology nat; else use_topology plain; fi
    # (Not in subshells: the test bed's and pinhole's state must stay set in this shell, for
    # the cleanup.)
    if ! testbed_up > "$PH_WORKDIR/testbed.out" 2>&1; then
        fail_config "test bed: $(cat "$PH_WORKDIR/testbed.out")"
        testbed_down
        return
    fi
    [ "$ROUND" = 1 ] && record_info offloads "$(json_str "$(offload_state)")"
    if [ "$ROUND" = 1 ] && is_nat "$CFG"; then
        check "closed passive-range port, DNAT'd: the server refuses it (no firewall yet)" \
            check_closed_port_nat refused || fail_config "the DNAT'd closed port is not refused"
    fi
    case $CFG in
        none) fw_none ;;
        kernel) fw_kernel ;;
        offload|inspect-all) fw_pinhole "$CFG" "$RULES" ;;
        nat-kernel) fw_nat_kernel ;;
        nat-offload|nat-inspect-all) fw_pinhole "${CFG#nat-}" "$RULES_NAT" ;;
    esac > "$PH_WORKDIR/fw.out" 2>&1
    rc=$?
    if [ $rc != 0 ]; then
        fail_config "firewall set-up: $(cat "$PH_WORKDIR/fw.out")"
        testbed_down
        return
    fi
    [ -s "$PH_WORKDIR/fw.out" ] && say "  [$CFG] $(tail -n 1 "$PH_WORKDIR/fw.out")"
    if [ "$ROUND" = 1 ] && is_nat "$CFG"; then
        check "closed passive-range port, DNAT'd: the connection is dropped (times out)" \
            check_closed_port_nat timeout || { fail_config "unrelated connection not dropped"; }
    elif [ "$ROUND" = 1 ]; then
        if [ "$CFG" = none ]; then
            check "closed passive-range port: the server refuses it (no firewall)" \
                check_closed_port refused
        else
            check "closed passive-range port: the connection is dropped (times out)" \
                check_closed_port timeout || { fail_config "unrelated connection not dropped"; }
        fi
    fi
    # A first small download: FTP works through this firewall.
    if ! out=$(ph_in_client curl -sS --noproxy '*' --max-time 10 --ftp-pasv --disable-epsv \
            -o /dev/null -w '%{size_download}' "ftp://$SV4/small.bin" 2>"$PH_WORKDIR/curl.err") ||
            [ "$out" != "$FTP_SMALL" ]; then
        fail_config "small FTP download failed: ${out:-0} of $FTP_SMALL bytes: $(tail -n 1 "$PH_WORKDIR/curl.err")"
        testbed_down
        return
    fi

    # a + d: bulk download with CPU accounting.
    local bg
    bg=$(background_busy)
    record_sample bg_busy_cores "$bg"
    [ -n "$PINHOLE_PID" ] && used0=$(pstat engine.pinholes_used)
    [ -n "$PINHOLE_PID" ] && tr0=$(pstat engine.flows_translated)
    before=$(helper_hits ftp)
    if bulk_once; then
        case $CFG in
            kernel|nat-kernel) check "the ftp helper rule matched the FTP traffic, FORWARD policy DROP" \
                check_kernel_helper ftp "$before" ;;
            offload|inspect-all) check "pinhole stats after the bulk download ($CFG)" \
                check_pinhole_bulk "$CFG" "$used0" ;;
            nat-offload|nat-inspect-all)
                check "pinhole's PINHOLE_HELPERS ftp rule matched the FTP traffic, FORWARD policy DROP" \
                    check_kernel_helper ftp "$before"
                check "pinhole stats after the bulk download ($CFG): pinhole used, control connection translated" \
                    check_pinhole_bulk "${CFG#nat-}" "$used0" "$tr0" ;;
        esac
    else
        testbed_down
        return
    fi

    # b: data connection setup rate.
    [ -n "$PINHOLE_PID" ] && used0=$(pstat engine.pinholes_used)
    [ -n "$PINHOLE_PID" ] && tr0=$(pstat engine.flows_translated)
    if rate_run setup ftp_setup.py small.bin "$FTP_SMALL" "$CLIENTS" && is_nat "$CFG"; then
        check "the 227 replies named the public address (translated by nf_nat_ftp)" \
            check_pasv_public
        is_pinhole "$CFG" &&
            check "every data connection of the setup run came through a pinhole; control connections translated" \
                check_pinhole_setup "$used0" "$tr0"
    fi
    if is_nat "$CFG"; then
        # (TFTP through NAT is not measured: see BENCHMARKS.md.)
        [ -n "$PINHOLE_PID" ] && record_pinhole_stats
        testbed_down
        say "[$CFG] round $ROUND done in $((SECONDS - t0)) s"
        return
    fi
    # c: TFTP transfer rate.
    before=$(helper_hits tftp)
    if rate_run tftp tftp_rate.py small.bin "$TFTP_SMALL" "$TFTP_CLIENTS" "${TFTP_ARGS[@]}" &&
            [ "$CFG" = kernel ]; then
        check "the tftp helper rule matched the TFTP requests" check_kernel_helper tftp "$before"
    fi
    [ -n "$PINHOLE_PID" ] && record_pinhole_stats
    testbed_down
    say "[$CFG] round $ROUND done in $((SECONDS - t0)) s"
}

# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
T_START=$SECONDS
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
TFTP_ARGS=()
[ "$TFTP_DISTINCT" = 1 ] && TFTP_ARGS=(--ports 20000-59999)
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
NPROC=$(nproc)
KERNEL=$(uname -r)
say "pinhole live benchmark"
say "machine:    $CPU_MODEL, $NPROC CPUs, kernel $KERNEL, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, load average $LOADAVG"
TFTP_PORTS_DESC="the kernel's"
[ "$TFTP_DISTINCT" = 1 ] && TFTP_PORTS_DESC="distinct, 20000-59999"
say "parameters: configurations ${CONFIGS[*]}; $REPS round(s); bulk ${SIZE_MIB} MiB per round;" \
    "rate runs ${DURATION} s, $CLIENTS FTP clients (${FTP_SMALL}-byte file), $TFTP_CLIENTS TFTP" \
    "clients (${TFTP_SMALL}-byte file, client ports: $TFTP_PORTS_DESC); veth offloads" \
    "$BENCH_OFFLOADS; passive range $PH_PASV_MIN-$PH_PASV_MAX; time limit $BENCH_TIME_LIMIT s"
[ -n "$PINHOLE" ] && say "pinhole:    $("$PINHOLE" --version) ($PINHOLE_BIN, $(date -r "$PINHOLE_BIN" '+%F %T'))"
say "software:   $(ph_versions | grep -E '^(vsftpd|tftpd-hpa|curl|python3) ' | paste -sd, | sed 's/,/, /g'), $(iptables --version)"
uses_nat && say "NAT:        outside client $NAT_CLIENT_V4 -> public address $NAT_PUBLIC_V4 (DNAT tcp 21," \
    "udp 69) -> private server $NAT_SERVER_V4; nat-* configurations measure bulk and setups/s"
say "work dir:   $PH_WORKDIR"

# Content (on tmpfs): the bulk file, the small files.
mkdir -p "$PH_WORKDIR/ftp" "$PH_WORKDIR/tftp" "$PH_WORKDIR/empty"
chmod 0755 "$PH_WORKDIR/ftp" "$PH_WORKDIR/empty"
head -c "$BULK_BYTES" /dev/zero > "$PH_WORKDIR/ftp/bulk.bin" || die "cannot write the bulk file"
ph_gen_bytes "$FTP_SMALL" 11 > "$PH_WORKDIR/ftp/small.bin"
ph_gen_bytes "$TFTP_SMALL" 12 > "$PH_WORKDIR/tftp/small.bin"
chmod 0644 "$PH_WORKDIR/ftp/bulk.bin" "$PH_WORKDIR/ftp/small.bin" "$PH_WORKDIR/tftp/small.bin"
VSFTPD_CONF=$(write_vsftpd_conf)

# The policy: rules/edge-router.toml with one change. Its TFTP rule says the server answers
# from ports 30000-30009 (server_ports; tests/e2e runs tftpd-hpa --port-range 30000:30009). Ten
# ports are too few for this benchmark: tftpd-hpa forks a process per request, which holds its
# port until it exits, and a client looping RRQs has its next request in before the previous
# child is gone; when no port is free the child exits without a word and the client times out
# (under every configuration, `none` included). So tftpd-hpa gets 30000-30999 and the policy
# variant says so. The TFTP rule also lets a client address have 8 requests awaiting replies;
# with more concurrent TFTP clients the variant raises that, so the limit does not throttle the
# benchmark.
TFTP_PORT_RANGE=30000:30999
RULES="" RULES_NAT=""
if uses_pinhole; then
    RULES=$PH_WORKDIR/edge-router.toml
    grep -q '^server_ports = "30000-30009"$' "$REPO_DIR/rules/edge-router.toml" ||
        die "rules/edge-router.toml no longer has server_ports = \"30000-30009\"; update live.sh"
    sed "s/^server_ports = \"30000-30009\"$/server_ports = \"${TFTP_PORT_RANGE/:/-}\"/" \
        "$REPO_DIR/rules/edge-router.toml" > "$RULES"
    if [ "$TFTP_CLIENTS" -gt 8 ]; then
        sed -i "s/^server_ports = .*/&\nmax_pending_per_client = $((TFTP_CLIENTS * 2))/" "$RULES"
    fi
    "$PINHOLE" check-rules "$RULES" >/dev/null || die "the policy variant does not check"
    # Under NAT the same policy with the NAT test bed's addresses: pinhole sits in FORWARD, after
    # the DNAT, so it sees the private server (10.0.1.10, fd00:1::10) as the destination; the
    # inside is both private links.
    RULES_NAT=$PH_WORKDIR/edge-router-nat.toml
    sed -e "s|^interfaces = \[\"lan0\"\]$|interfaces = [\"lan0\", \"$NAT_IF_LAN1\"]|" \
        -e "s|^networks = \[\"192.0.2.0/24\", \"2001:db8:2::/64\"\]$|networks = [\"$NAT_PRIVATE_V4\", \"$NAT_PRIVATE_V6\"]|" \
        -e "s|^networks = \[\"192.0.2.10\", \"2001:db8:2::10\"\]$|networks = [\"$NAT_SERVER_V4\", \"$NAT_SERVER_V6\"]|" \
        "$RULES" > "$RULES_NAT"
    [ "$(grep -cE "^networks = \[\"($NAT_PRIVATE_V4|$NAT_SERVER_V4)\"|^interfaces = \[\"lan0\", " "$RULES_NAT")" = 3 ] ||
        die "rules/edge-router.toml's inside and server zones are not as live.sh expects; update live.sh"
    "$PINHOLE" check-rules "$RULES_NAT" >/dev/null || die "the NAT policy variant does not check"
fi

for ((ROUND = 1; ROUND <= REPS; ROUND++)); do
    # Rotate the order each round.
    n=${#CONFIGS[@]}
    for ((k = 0; k < n; k++)); do
        run_config "${CONFIGS[$(( (k + ROUND - 1) % n ))]}"
    done
done
CFG=""

# Report.
META=$PH_WORKDIR/meta.json
python3 - "$META" <<PY
import json, sys
meta = {
    "machine": {"cpu_model": $(json_str "$CPU_MODEL"), "nproc": $NPROC, "kernel": $(json_str "$KERNEL"),
                "loadavg_at_start": $(json_str "$LOADAVG")},
    "parameters": {"configs": $(python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "${CONFIGS[@]}"),
                   "rounds": $REPS, "bulk_bytes": $BULK_BYTES, "size_mib": $SIZE_MIB,
                   "duration_s": $DURATION, "ftp_clients": $CLIENTS, "tftp_clients": $TFTP_CLIENTS,
                   "ftp_small_bytes": $FTP_SMALL, "tftp_small_bytes": $TFTP_SMALL,
                   "veth_offloads": $(json_str "$BENCH_OFFLOADS"),
                   "passive_range": [$PH_PASV_MIN, $PH_PASV_MAX],
                   "tftp_port_range": $(json_str "$TFTP_PORT_RANGE"),
                   "tftp_client_ports": $(json_str "$TFTP_PORTS_DESC"),
                   "nat": {"public_v4": $(json_str "$NAT_PUBLIC_V4"), "server_v4": $(json_str "$NAT_SERVER_V4"),
                           "note": "nat-* configurations: outside client -> DNAT of the public address -> private server; no TFTP rate"},
                   "pinhole": $(json_str "$([ -n "$PINHOLE" ] && "$PINHOLE" --version)"),
                   "quick": $([ "$QUICK" = 1 ] && echo True || echo False),
                   "cpu_note": "CPU-s per 1e9 bytes during the bulk download; busy = user+nice+system+irq+softirq of all CPUs; client, server and firewall share the machine"},
    "configs": $(python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "${CONFIGS[@]}"),
}
with open(sys.argv[1], "w") as f:
    json.dump(meta, f)
PY
say ""
say "== pinhole live benchmark: ${CONFIGS[*]}; $REPS round(s), $((SECONDS - T_START)) s"
say "machine: $CPU_MODEL, $NPROC CPUs, kernel $KERNEL"
say "bulk: ${SIZE_MIB} MiB passive RETR per round; rates: ${DURATION} s runs, $CLIENTS FTP / $TFTP_CLIENTS TFTP clients"
say "CPU-s/GB: busy CPU-seconds of the whole machine per 10^9 bytes during the download (client," \
    "server and router share it; 'added over none' is the firewall's cost)"
say ""
python3 "$LIVE/report.py" "$META" "$RESULTS" ${JSON_OUT:+--json "$JSON_OUT"} ||
    { echo "live.sh: report failed" >&2; FAILED=1; }
bg_max=$(python3 -c '
import json, sys
v = [json.loads(l)["value"] for l in open(sys.argv[1]) if "\"bg_busy_cores\"" in l]
print("%.2f" % max(v) if v else "0")' "$RESULTS")
if awk -v b="$bg_max" 'BEGIN { exit !(b > 0.2) }'; then
    say ""
    say "note: up to $bg_max CPUs were busy with something else just before a download: the" \
        "numbers are noisy"
fi
exit $FAILED
