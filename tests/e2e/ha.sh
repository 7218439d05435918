#!/usr/bin/env bash
#
# ha.sh - end-to-end test of a pinhole failover pair: two routers with keepalived (VRRP,
# unicast) moving the gateway addresses and conntrackd (FTFW on a dedicated link) replicating
# the kernel's connection tracking, `pinhole run --ha` inline on both with the same rules, real
# vsftpd, tftpd-hpa, curl and probes. The active router fails in the middle of:
#
#   - a passive download of 200 MiB (curl, rate-limited so that it spans the failover),
#   - an active-mode upload of 64 MiB (curl -P -),
#   - a TFTP read older than 30 s at the failover (the kernel's own pitfall: a transfer whose
#     request entry has expired cannot be carried by the tftp helper's expectation),
#   - an idle control session,
#   - a control session that received its 227 and has not connected yet,
#
# and every one must complete intact through the standby, which then still refuses a bounce,
# a privileged data port, an unsolicited connection to the passive range (also refused by the
# active router before), a second use of the pending pinhole, and a third host's TFTP
# datagram. Then the failed router comes back, and the standby fails: failback, checked the
# same way. The time from each failure to the first forwarded packet (a ping every 50 ms) and
# the sessions lost are reported.
#
# Topology (IPv4; prefix PH_PREFIX, default phha-):
#
#   client 198.51.100.10 --- [out: bridge] --- wan0 .2 r1 lan0 192.0.2.2 --- [in: bridge] --- server
#                                          \-- wan0 .3 r2 lan0 192.0.2.3 --/                192.0.2.10
#   virtual addresses (keepalived): 198.51.100.1 and 192.0.2.1, the hosts' gateways
#   sync link: r1 sync0 10.255.0.1/30 <-> r2 sync0 10.255.0.2/30 (conntrackd, direct veth)
#
# The routers use the configuration pinhole ships in examples/ha/, its UPPER_CASE words
# replaced. A failure takes the router's wan0 and lan0 down (its sync link stays).
#
# Usage: sudo tests/e2e/ha.sh [offload|inspect-all]...   (default both; the README's test
#        command runs it)
# Environment: PINHOLE_BIN (default: cargo build), PH_KEEP_WORKDIR=1, E2E_TIME_LIMIT.

set -uo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$E2E_DIR/../.." && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "# skip: tests/e2e/ha.sh needs root (network namespaces, iptables, keepalived, conntrackd)"
    exit 0
fi

: "${PH_PREFIX:=phha-}"
# shellcheck source=scripts/netns-lib.sh
. "$REPO_DIR/scripts/netns-lib.sh"

ph_ensure_tools ha || { echo "Bail out! missing tools could not be installed"; exit 1; }

ph_pinhole_bin run || exit 1

# shellcheck source=tests/e2e/tap.sh
. "$E2E_DIR/tap.sh"
PHASE=setup
tap_label() { echo "$PHASE"; }
tap_on_failure() {
    local r
    for r in r1 r2; do
        { echo "== $1: $r"; ctl "$r" stats 2>&1; } >> "$PH_WORKDIR/failure-stats.txt"
    done
}

# --------------------------------------------------------------------------
# Names and addresses
# --------------------------------------------------------------------------
NS_CLIENT=$PH_NS_CLIENT NS_SERVER=$PH_NS_SERVER
NS_R1=${PH_PREFIX}r1 NS_R2=${PH_PREFIX}r2
NS_OUT=${PH_PREFIX}out NS_IN=${PH_PREFIX}in
HA_NAMESPACES=("$NS_OUT" "$NS_IN" "$NS_R1" "$NS_R2" "$NS_CLIENT" "$NS_SERVER")

CV4=198.51.100.10 SV4=192.0.2.10 THIRD=$PH_THIRD_V4
VIP_OUT=198.51.100.1 VIP_IN=192.0.2.1
declare -A OUT_ADDR=([r1]=198.51.100.2 [r2]=198.51.100.3)
declare -A IN_ADDR=([r1]=192.0.2.2 [r2]=192.0.2.3)
declare -A SYNC_ADDR=([r1]=10.255.0.1 [r2]=10.255.0.2)
declare -A PEER=([r1]=r2 [r2]=r1)
declare -A NS_OF=([r1]=$NS_R1 [r2]=$NS_R2)
declare -A PRIORITY=([r1]=150 [r2]=100)

FTP_PROBE=$E2E_DIR/ftp_probe.py
TFTP_PROBE=$E2E_DIR/tftp_probe.py
PJ=$E2E_DIR/pj.py
CURL=(curl -sS --noproxy '*' --globoff)

# --------------------------------------------------------------------------
# Test bed
# --------------------------------------------------------------------------
HA_CREATED=0
ha_down() {
    [ "$HA_CREATED" = 1 ] || return 0
    ph_delete_namespaces "${HA_NAMESPACES[@]}"
    HA_CREATED=0
}

# link NS_A DEV_A NS_B DEV_B: a veth pair between two namespaces, offloads off, both ends up.
link() {
    ip -n "$1" link add "$2" type veth peer name "$4" netns "$3" || return 1
    _ph_no_offload "$1" "$2"
    _ph_no_offload "$3" "$4"
    ip -n "$1" link set "$2" up && ip -n "$3" link set "$4" up
}

topology_up() {
    local ns r
    for ns in "${HA_NAMESPACES[@]}"; do
        ph_ns_exists "$ns" && { ph_warn "$ns exists already"; return 1; }
    done
    HA_CREATED=1
    ph_on_cleanup ha_down
    for ns in "${HA_NAMESPACES[@]}"; do
        _ph_ns_base "$ns" || return 1
    done
    for ns in "$NS_OUT" "$NS_IN"; do
        ip -n "$ns" link add br0 type bridge stp_state 0 forward_delay 0 || return 1
        ip -n "$ns" link set br0 up || return 1
    done
    link "$NS_CLIENT" eth0 "$NS_OUT" p-client || return 1
    link "$NS_SERVER" eth0 "$NS_IN" p-server || return 1
    for r in r1 r2; do
        link "${NS_OF[$r]}" wan0 "$NS_OUT" "p-$r" || return 1
        link "${NS_OF[$r]}" lan0 "$NS_IN" "p-$r" || return 1
    done
    link "$NS_R1" sync0 "$NS_R2" sync0 || return 1
    for ns in "$NS_OUT" "$NS_IN"; do
        for p in $(ip -n "$ns" -o link show | awk -F': ' '$2 ~ /^p-/ { sub(/@.*/, "", $2); print $2 }'); do
            ip -n "$ns" link set "$p" master br0 || return 1
        done
    done
    ip -n "$NS_CLIENT" addr add "$CV4/24" dev eth0 &&
        ip -n "$NS_CLIENT" route add default via "$VIP_OUT" || return 1
    ip -n "$NS_SERVER" addr add "$SV4/24" dev eth0 &&
        ip -n "$NS_SERVER" route add default via "$VIP_IN" || return 1
    for r in r1 r2; do
        ns=${NS_OF[$r]}
        ip -n "$ns" addr add "${OUT_ADDR[$r]}/24" dev wan0 &&
            ip -n "$ns" addr add "${IN_ADDR[$r]}/24" dev lan0 &&
            ip -n "$ns" addr add "${SYNC_ADDR[$r]}/30" dev sync0 || return 1
        ph_in "$ns" sysctl -qw net.ipv4.ip_forward=1 || return 1
        # Every entry gets the event extension conntrackd listens with.
        ph_in "$ns" sysctl -qw net.netfilter.nf_conntrack_events=1 || return 1
        ph_in "$ns" iptables -P FORWARD DROP || return 1
        ph_in "$ns" ip6tables -P FORWARD DROP || return 1
    done
    ph_add_third_host
}

# The rules both routers load: rules/edge-router.toml's rules toward the server, without its
# inside-to-outside ones (which would admit the server's side of a TFTP transfer or an
# active-mode data connection as new connections, and hide whether they were taken over).
rules_file() {
    RULES=$PH_WORKDIR/rules.toml
    cat > "$RULES" <<'EOF'
default_action = "deny"

[zones.server]
networks = ["192.0.2.10"]

[zones.outside]
interfaces = ["wan0"]
networks = ["0.0.0.0/0", "::/0"]

[[rule]]
name = "ftp-to-server"
from = "outside"
to = "server"
action = "allow"
inspect = "ftp"

[[rule]]
name = "tftp-to-server"
from = "outside"
to = "server"
action = "allow"
inspect = "tftp"
[rule.tftp]
read = true
write = false
server_ports = "30000-30009"

[[rule]]
name = "ping-server"
from = "outside"
to = "server"
proto = "icmp"
action = "allow"
EOF
    "$PINHOLE_BIN" check-rules "$RULES"
}

servers_up() {
    mkdir -p "$PH_WORKDIR/ftp/upload" "$PH_WORKDIR/empty" "$PH_WORKDIR/client" "$PH_WORKDIR/tftp"
    chmod 0777 "$PH_WORKDIR/ftp/upload"
    head -c $((200 << 20)) /dev/urandom > "$PH_WORKDIR/ftp/big.bin" || return 1
    head -c $((64 << 20)) /dev/urandom > "$PH_WORKDIR/client/up.bin" || return 1
    echo "small file through a failover pair" > "$PH_WORKDIR/ftp/small.txt"
    # 700 blocks: with 70 ms between ACKs, about 50 s.
    head -c $((700 * 512 + 100)) /dev/urandom > "$PH_WORKDIR/tftp/slow.bin" || return 1
    head -c $((40 * 512 + 7)) /dev/urandom > "$PH_WORKDIR/tftp/fast.bin" || return 1
    chmod -R a+rX "$PH_WORKDIR/ftp" "$PH_WORKDIR/tftp"
    ph_start_vsftpd || return 1
    ph_start_tftpd --port-range 30000:30009
}

# The shipped configuration, its UPPER_CASE words replaced for router R.
configure() {
    local r=$1 d=$PH_WORKDIR/$1 peer=${PEER[$1]}
    # Fresh for each mode: a killed conntrackd leaves its lock file and socket behind.
    rm -rf "$d"
    mkdir -p "$d" && chmod 0700 "$d"
    sed -e "s|SYNC_LOCAL|${SYNC_ADDR[$r]}|; s|SYNC_PEER|${SYNC_ADDR[$peer]}|" \
        -e "s|SYNC_DEV|sync0|; s|VIP_OUTSIDE|$VIP_OUT|; s|VIP_INSIDE|$VIP_IN|" \
        -e "s|CONNTRACKD_LOG|$d/conntrackd.log|; s|CONNTRACKD_LOCK|$d/conntrackd.lock|" \
        -e "s|CONNTRACKD_SOCKET|$d/conntrackd.ctl|" \
        "$REPO_DIR/examples/ha/conntrackd.conf" > "$d/conntrackd.conf" || return 1
    install -m 0755 "$REPO_DIR/examples/ha/pinhole-ha-notify.sh" "$d/notify.sh" || return 1
    sed -e "s|ROUTER_ID|pinhole-$r|; s|NOTIFY_SCRIPT|$d/notify.sh|; s|CONNTRACKD_CONF|$d/conntrackd.conf|" \
        -e "s|OUTSIDE_DEV|wan0|g; s|INSIDE_DEV|lan0|g; s|PRIORITY|${PRIORITY[$r]}|" \
        -e "s|OUTSIDE_LOCAL|${OUT_ADDR[$r]}|; s|OUTSIDE_PEER|${OUT_ADDR[$peer]}|" \
        -e "s|INSIDE_LOCAL|${IN_ADDR[$r]}|; s|INSIDE_PEER|${IN_ADDR[$peer]}|" \
        -e "s|VIP_OUTSIDE|$VIP_OUT|; s|VIP_INSIDE|$VIP_IN|" \
        "$REPO_DIR/examples/ha/keepalived.conf" > "$d/keepalived.conf" || return 1
    if grep -n '[A-Z][A-Z]*_[A-Z_]*' "$d/conntrackd.conf" "$d/keepalived.conf" |
        grep -v '^[^:]*:[0-9]*:[[:space:]]*#' | grep -E 'SYNC_|VIP_|CONNTRACKD_|NOTIFY_|OUTSIDE_|INSIDE_|ROUTER_|PRIORITY'; then
        echo "placeholders left in $r's configuration"
        return 1
    fi
}

ctl() { timeout 5 "$PINHOLE_BIN" "$2" --json --control "$PH_WORKDIR/$1/pinhole.sock" 2>&1; }
pstat() { ctl "$1" stats | python3 "$PJ" "g('$2')"; }

# router_up R: conntrackd, then pinhole, then keepalived (the order a boot should have:
# the sync before any traffic, pinhole's rules before the addresses arrive).
router_up() {
    local r=$1 ns=${NS_OF[$1]} d=$PH_WORKDIR/$1
    ph_start_bg "conntrackd-$r" "$ns" "$d/conntrackd.out" conntrackd -C "$d/conntrackd.conf"
    ph_wait_for "conntrackd of $r" 10 ph_in "$ns" conntrackd -C "$d/conntrackd.conf" -s || {
        tail -n 5 "$d/conntrackd.out" "$d/conntrackd.log"; return 1; }
    ph_start_bg "pinhole-$r" "$ns" "$d/pinhole.log" \
        "$PINHOLE_BIN" run --rules "$RULES" --ha --install-rules \
        --queues 0 --mode "$MODE" --control "$d/pinhole.sock" --state-file "$d/state.json" \
        --events "$d/events.jsonl" -v
    ph_wait_for "pinhole of $r" 10 ctl "$r" status || { tail -n 20 "$d/pinhole.log"; return 1; }
    ctl "$r" status | python3 "$PJ" -t "data['ha'] is True and data['mode'] == '$MODE'"
    ph_start_bg "keepalived-$r" "$ns" "$d/keepalived.out" \
        keepalived -n -l -D -P -f "$d/keepalived.conf" -p "$d/keepalived.pid" \
        -r "$d/vrrp.pid" -c "$d/checkers.pid"
}

# holds_vips R: router R has both virtual addresses.
holds_vips() {
    local ns=${NS_OF[$1]}
    [ -n "$(ip -n "$ns" -4 -o addr show dev wan0 to "$VIP_OUT/32")" ] &&
        [ -n "$(ip -n "$ns" -4 -o addr show dev lan0 to "$VIP_IN/32")" ]
}
holds_none() {
    local ns=${NS_OF[$1]}
    [ -z "$(ip -n "$ns" -4 -o addr show to "$VIP_OUT/32")" ] &&
        [ -z "$(ip -n "$ns" -4 -o addr show to "$VIP_IN/32")" ]
}

fail_router() { ip -n "${NS_OF[$1]}" link set wan0 down && ip -n "${NS_OF[$1]}" link set lan0 down; }
revive_router() { ip -n "${NS_OF[$1]}" link set wan0 up && ip -n "${NS_OF[$1]}" link set lan0 up; }

# stop_mode: stop every process this mode started (all registered but the watchdog).
stop_mode() {
    local name pid
    while read -r name pid; do
        # (The block's stderr takes bash's "Killed" notices of its background jobs.)
        [ "$name" = watchdog ] || { ph_kill_pid "$pid" KILL; } 2>/dev/null
    done < <(tac "$PH_WORKDIR/pids")
    awk '$1 == "watchdog"' "$PH_WORKDIR/pids" > "$PH_WORKDIR/pids.tmp" &&
        mv "$PH_WORKDIR/pids.tmp" "$PH_WORKDIR/pids"
}

# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------
client() { (cd "$PH_WORKDIR/client" && ph_in_client "$@"); }

# session NAME: an ftp_probe session (logged in through the active router); commands are
# appended to $PH_WORKDIR/NAME.cmd, results read from NAME.res.
session_start() {
    local name=$1
    : > "$PH_WORKDIR/$name.cmd"
    : > "$PH_WORKDIR/$name.res"
    ph_start_bg "$name" "$NS_CLIENT" "$PH_WORKDIR/$name.out" \
        python3 "$FTP_PROBE" session "$SV4" "$PH_WORKDIR/$name.cmd" "$PH_WORKDIR/$name.res" \
        --lifetime 600
    ph_wait_for "$name logged in" 10 grep -q '^0 ok' "$PH_WORKDIR/$name.res"
}
# session_do NAME N COMMAND...: run command number N, wait (30 s) for its result line.
session_do() {
    local name=$1 n=$2
    shift 2
    echo "$*" >> "$PH_WORKDIR/$name.cmd"
    ph_wait_for "$name command $n" 30 grep -q "^$n " "$PH_WORKDIR/$name.res" || return 1
    grep "^$n " "$PH_WORKDIR/$name.res"
}
session_ok() { session_do "$@" | grep -q '^[0-9]* ok'; }

download_start() { # NAME: 200 MiB at 20 MiB/s, passive
    rm -f "$PH_WORKDIR/client/$1"
    ph_start_bg "$1" "$NS_CLIENT" "$PH_WORKDIR/$1.out" \
        "${CURL[@]}" --max-time 120 --limit-rate 20M --ftp-pasv --disable-epsv \
        -o "$PH_WORKDIR/client/$1" "ftp://$SV4/big.bin"
    DL_PID=$PH_LAST_PID
}
upload_start() { # NAME: 64 MiB at 8 MiB/s, active (PORT)
    rm -f "$PH_WORKDIR/ftp/upload/$1"
    ph_start_bg "$1" "$NS_CLIENT" "$PH_WORKDIR/$1.out" \
        "${CURL[@]}" --max-time 120 --limit-rate 8M --ftp-port - --disable-eprt \
        -T "$PH_WORKDIR/client/up.bin" "ftp://$SV4/upload/$1"
    UL_PID=$PH_LAST_PID
}
# age FILE: whole seconds since FILE was written.
age() { echo $(($(date +%s) - $(stat -c %Y "$1"))); }

# finished PID: wait for a background client and return its exit status.
finished() { wait "$1"; }

# ping_start: a ping every 50 ms from the client to the server, timestamped (-D), through
# whichever router holds the addresses.
ping_start() {
    ph_start_bg ping "$NS_CLIENT" "$PH_WORKDIR/ping.log" ping -D -n -i 0.05 -W 1 "$SV4"
}
# outage_since T0: seconds from T0 to the first ping answered after it.
outage_since() {
    python3 - "$1" "$PH_WORKDIR/ping.log" <<'EOF'
import re, sys
t0 = float(sys.argv[1])
for line in open(sys.argv[2]):
    m = re.match(r"\[(\d+\.\d+)\] \d+ bytes from", line)
    if m and float(m.group(1)) > t0:
        print("%.2f" % (float(m.group(1)) - t0))
        sys.exit(0)
sys.exit(1)
EOF
}

# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------
LOST=0
lost_if_failed() { "$@" || { LOST=$((LOST + 1)); return 1; }; }

download_intact() { finished "$1" && cmp "$PH_WORKDIR/ftp/big.bin" "$PH_WORKDIR/client/$2" && echo "$2: 200 MiB identical"; }
upload_intact() { finished "$1" && cmp "$PH_WORKDIR/client/up.bin" "$PH_WORKDIR/ftp/upload/$2" && echo "$2: 64 MiB identical"; }
tftp_intact() { finished "$1" && cat "$PH_WORKDIR/$2.out" && grep -q 'received' "$PH_WORKDIR/$2.out"; }
idle_transfers() { # NAME N: a PASV download then a PORT download on the session
    session_ok "$1" "$2" get small.txt "$PH_WORKDIR/client/$1-pasv.txt" pasv &&
        session_ok "$1" $(($2 + 1)) get small.txt "$PH_WORKDIR/client/$1-port.txt" port &&
        cmp "$PH_WORKDIR/ftp/small.txt" "$PH_WORKDIR/client/$1-pasv.txt" &&
        cmp "$PH_WORKDIR/ftp/small.txt" "$PH_WORKDIR/client/$1-port.txt" &&
        echo "$1: PASV and PORT downloads identical"
}
held_once() { # NAME N: the held 227's data connection works, once, for its client only
    local port
    port=$(awk '$1 == 1 { print $3 }' "$PH_WORKDIR/$1.res")
    client python3 "$FTP_PROBE" connect "$SV4" "$port" --source "$THIRD" --timeout 2 \
        --expect timeout || return 1
    session_ok "$1" "$2" retr-held small.txt "$PH_WORKDIR/client/$1-held.txt" &&
        cmp "$PH_WORKDIR/ftp/small.txt" "$PH_WORKDIR/client/$1-held.txt" &&
        session_do "$1" $(($2 + 1)) connect-held 3 | grep -q ' ok timeout' &&
        echo "$1: the pending pinhole admitted its connection once"
}
taken_over() { # R MIN: router R took over at least MIN flows
    local n
    n=$(pstat "$1" engine.flows_taken_over) || return 1
    echo "$1 took over $n flows"
    [ "$n" -ge "$2" ]
}
refused_connect() { client python3 "$FTP_PROBE" connect "$SV4" "$1" --timeout 2 --expect timeout; }
refused_bounce() { client python3 "$FTP_PROBE" bounce "$SV4" "$THIRD" --timeout 4; }
refused_privileged_port() { # NAME N: PORT naming the client's port 25 ends the session
    local out
    out=$(session_do "$1" "$2" port "$CV4" 25)
    echo "$out"
    grep -q '^[0-9]* fail' <<<"$out"
}
refused_third_tftp() {
    local d=$PH_WORKDIR/tftp-third
    mkdir -p "$d"
    client python3 "$TFTP_PROBE" read "$SV4" fast.bin "$PH_WORKDIR/tftp/fast.bin" \
        --state-dir "$d" --third "$THIRD" --pause 1
}

# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(offload inspect-all)
for m in "${MODES[@]}"; do
    case $m in
        offload|inspect-all) ;;
        *) echo "usage: $0 [offload|inspect-all]..." >&2; exit 2 ;;
    esac
done
OUTAGES=()
ph_init || exit 1
mkdir -p "$PH_WORKDIR/checks"
start_watchdog 1200
echo "# pinhole failover pair: keepalived $(keepalived --version 2>&1 | head -n 1 | awk '{print $2}'), conntrackd $(conntrackd -v 2>&1 | grep -o 'v[0-9][0-9.]*' | head -n 1)"

failover() { # FROM TO: takes FROM down and returns when TO holds the addresses
    local from=$1 to=$2
    T0=$(date +%s.%N)
    fail_router "$from" || return 1
    ph_wait_for "$to holds the addresses" 20 holds_vips "$to" || return 1
    VIPS_AFTER=$(python3 -c "import sys, time; print('%.2f' % (time.time() - float(sys.argv[1])))" "$T0")
    echo "$to holds the addresses $VIPS_AFTER s after $from failed"
}

# within_takeover OUTAGE: the first packet was forwarded at most 1 s after keepalived moved
# the addresses (VIPS_AFTER, polled every 0.1 s): pinhole adds nothing to the takeover.
within_takeover() {
    echo "addresses moved after $VIPS_AFTER s, first packet forwarded after $1 s"
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) + 1.0 else 1)" \
        "$1" "$VIPS_AFTER"
}

# Runs the workloads across a failover of FROM to TO and checks them; TFTP_SLOW: also the
# transfer older than 30 s.
run_failover() {
    local from=$1 to=$2 tag=$3 slow=$4 tftp_pid="" outage
    PHASE="$MODE $tag: $from fails"
    if [ "$slow" = 1 ]; then
        rm -rf "$PH_WORKDIR/tftp-slow"
        mkdir -p "$PH_WORKDIR/tftp-slow"
        ph_start_bg tftp-slow "$NS_CLIENT" "$PH_WORKDIR/tftp-slow.out" \
            python3 "$TFTP_PROBE" read "$SV4" slow.bin "$PH_WORKDIR/tftp/slow.bin" \
            --state-dir "$PH_WORKDIR/tftp-slow" --pause 0 --ack-delay 0.07 --retries 15
        tftp_pid=$PH_LAST_PID
    fi
    if [ -n "$tftp_pid" ]; then
        # The read must be older than 30 s when the router fails: the rest starts 5 s before.
        ph_wait_for "the TFTP read's first block" 10 test -f "$PH_WORKDIR/tftp-slow/tid.json" || return 1
        while [ "$(age "$PH_WORKDIR/tftp-slow/tid.json")" -lt 28 ]; do
            sleep 0.5
        done
    fi
    check "an unsolicited connection to the passive range is refused by $from" refused_connect 40050
    session_start "idle-$tag" && session_start "held-$tag"
    check "a control session that got its 227 and waits (through $from)" \
        session_ok "held-$tag" 1 pasv-hold
    download_start "dl-$tag"
    local dl=$DL_PID
    upload_start "ul-$tag"
    local ul=$UL_PID
    ping_start
    # Transfers under way for 3 s.
    sleep 3
    [ -n "$tftp_pid" ] && note "the TFTP read is $(age "$PH_WORKDIR/tftp-slow/tid.json") s old"
    check "$from fails (links down); $to takes the addresses" failover "$from" "$to"
    local t0=$T0
    PHASE="$MODE $tag: through $to"
    check "a passive download of 200 MiB completes intact" lost_if_failed download_intact "$dl" "dl-$tag"
    check "an active-mode upload of 64 MiB completes intact" lost_if_failed upload_intact "$ul" "ul-$tag"
    if [ -n "$tftp_pid" ]; then
        check "a TFTP read older than 30 s at the failover completes intact" \
            lost_if_failed tftp_intact "$tftp_pid" tftp-slow
    fi
    check "the idle control session does a PASV and a PORT transfer" \
        lost_if_failed idle_transfers "idle-$tag" 1
    check "the pending 227's data connection is admitted, once, for its client only" \
        lost_if_failed held_once "held-$tag" 2
    check "$to took over the sessions it never saw open" taken_over "$to" 3
    check "an FTP bounce is refused by $to" refused_bounce
    check "a PORT to a privileged port ends the session on $to" refused_privileged_port "idle-$tag" 3
    check "an unsolicited connection to the passive range is refused by $to" refused_connect 40050
    check "a third host's datagram into a TFTP transfer is refused by $to" refused_third_tftp
    if outage=$(outage_since "$t0"); then
        note "$MODE $tag: first packet forwarded $outage s after $from failed"
        OUTAGES+=("$MODE/$tag: $outage s")
        check "the outage is keepalived's takeover, nothing more" within_takeover "$outage"
    else
        check "a ping is answered after the failover" false
    fi
    ph_stop ping
}

back_as_backup() { revive_router r1 && sleep 4 && holds_vips r2 && holds_none r1; }

# A session the standby was never told of is refused when it gets there (closed, not open):
# its next command gets no answer.
refused_unsynced() { # NAME N
    local out
    out=$(session_do "$1" "$2" noop)
    echo "$out"
    grep -q '^[0-9]* fail' <<<"$out"
}
fresh_session_works() { # NAME
    session_start "$1" && session_ok "$1" 1 get small.txt "$PH_WORKDIR/client/$1.txt" pasv &&
        cmp "$PH_WORKDIR/ftp/small.txt" "$PH_WORKDIR/client/$1.txt"
}
restore_pair() { # FAILED: back as backup, the sync settled (resync, then the backup's purge)
    revive_router "$1" && sleep 4 && holds_none "$1" && sleep 14
}
both_hold_vips() { holds_vips r1 && holds_vips r2; }

# faults: what the pair does when its sync is not there. It fails closed: a connection the
# router taking over was not told of is refused there, new connections work, and the
# refusals hold. Starts with r1 active and r2 failed.
faults() {
    PHASE="$MODE fault: sync link down"
    check "r2 back as backup" restore_pair r2
    session_start "told-$MODE" && sleep 1
    ip -n "$NS_R1" link set sync0 down
    session_start "untold-$MODE"
    check "r1 fails with the sync link down; r2 takes the addresses" failover r1 r2
    check "a session synced before the link went down works through r2" \
        idle_transfers "told-$MODE" 1
    check "a session opened while the link was down is refused by r2 (closed, not open)" \
        refused_unsynced "untold-$MODE" 1
    check "a new session works through r2" fresh_session_works "fresh1-$MODE"
    check "an unsolicited connection to the passive range is refused by r2" refused_connect 40050
    ip -n "$NS_R1" link set sync0 up
    check "r1 back as backup, the sync link up again" restore_pair r1

    PHASE="$MODE fault: conntrackd not running on the standby"
    ph_stop conntrackd-r1
    session_start "nosync-$MODE"
    check "r2 fails while r1's conntrackd is down; r1 takes the addresses" failover r2 r1
    check "a session r1's conntrackd never received is refused by r1 (closed, not open)" \
        refused_unsynced "nosync-$MODE" 1
    check "a new session works through r1" fresh_session_works "fresh2-$MODE"
    check "an FTP bounce is refused by r1" refused_bounce
    ph_start_bg conntrackd-r1 "$NS_R1" "$PH_WORKDIR/r1/conntrackd-2.out" \
        conntrackd -C "$PH_WORKDIR/r1/conntrackd.conf"
    check "r2 back as backup" restore_pair r2

    PHASE="$MODE fault: both routers active"
    # r2 stops hearing r1's advertisements and takes the addresses too; r1 keeps them.
    ph_in "$NS_R2" iptables -I INPUT -p vrrp -j DROP
    check "both routers hold the addresses (split brain)" \
        ph_wait_for "split brain" 15 both_hold_vips
    check "an unsolicited connection to the passive range is refused" refused_connect 40050
    check "an FTP bounce is refused" refused_bounce
    ph_in "$NS_R2" iptables -D INPUT -p vrrp -j DROP
    check "healed: r2 hears r1 again and gives the addresses back" \
        ph_wait_for "r2 backup again" 15 holds_none r2
    check "r1 forwards alone again" ph_wait_for "ping through r1" 10 ph_in_client ping -c 1 -W 1 "$SV4"
}

# run_mode MODE: the whole test on a fresh test bed, pinhole in MODE on both routers.
run_mode() {
    MODE=$1 LOST=0
    PHASE="$MODE setup"
    check "test bed: client, server, two routers on shared segments, a sync link" topology_up ||
        { echo "Bail out! no test bed"; exit 1; }
    check "servers: vsftpd, tftpd-hpa (ports 30000-30009)" servers_up || { echo "Bail out! no servers"; exit 1; }
    check "the routers' rules: FTP, TFTP and ping to the server, nothing else" rules_file ||
        { echo "Bail out! no rules"; exit 1; }
    for r in r1 r2; do
        check "$r: the shipped conntrackd and keepalived configurations, filled in" configure "$r" ||
            { echo "Bail out!"; exit 1; }
    done
    for r in r1 r2; do
        check "$r: conntrackd, pinhole run --ha --install-rules, keepalived" router_up "$r" ||
            { echo "Bail out!"; exit 1; }
    done
    check "r1 (priority 150) holds both virtual addresses, r2 none" \
        ph_wait_for "r1 master" 15 holds_vips r1 && check "r2 holds none" holds_none r2
    check "the client reaches the server through the pair" \
        ph_wait_for "ping through r1" 10 ph_in_client ping -c 1 -W 1 "$SV4"

    run_failover r1 r2 failover 1
    PHASE="$MODE failback"
    check "r1 comes back as backup (nopreempt): r2 keeps the addresses" back_as_backup
    # Becoming backup, r1's conntrackd asked r2 for a full resync and scheduled the flush of its
    # own kernel table (PurgeTimeout 15 s): let both happen before r2 fails.
    sleep 14
    run_failover r2 r1 failback 0

    note "$MODE: sessions lost: $LOST"
    check "no session was lost" test "$LOST" = 0
    [ "$MODE" = offload ] && faults
    # Everything of this mode ends with its namespaces.
    stop_mode
    ha_down
}

for mode in "${MODES[@]}"; do
    run_mode "$mode"
done

note "outage (failure to first forwarded packet): ${OUTAGES[*]}"
echo "# ha: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
