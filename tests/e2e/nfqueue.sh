#!/usr/bin/env bash
#
# nfqueue.sh - end-to-end test of `pinhole run`: pinhole inline on NFQUEUE in a
# firewall namespace, between real FTP/TFTP clients and servers.
#
# Builds the test bed of scripts/netns-lib.sh (client <-> fw <-> server; the
# client is "outside" on wan0, the server "inside" on lan0), runs vsftpd and
# tftpd-hpa in the server namespace, gives the firewall the base policy of a
# real router (FORWARD policy DROP, v4 and v6) and runs
#
#     pinhole run --install-rules --queues 0-1 --mode MODE --rules rules.toml -v
#
# in it, where rules.toml is a copy of rules/edge-router.toml. Then, for each
# mode (offload, inspect-all), it checks with real clients (curl, lftp,
# tftp-hpa, python ftplib and raw sockets) that what the policy allows works,
# with file contents compared against the originals, and that what it refuses
# is dropped by the firewall: every refusal is shown so that it could not
# pass by accident (a time-out where a server would answer with a reset, a
# server log or a capture that never saw the packet, the drop counter).
# Also: SIGHUP reloads (a broken file keeps the old policy and the open
# sessions), `pinhole sessions` / `pinholes` / `stats`, failing closed
# (SIGKILL, SIGSTOP), failing open (--fail-open), a clean stop on SIGTERM,
# and what the same rules do with --no-inspect. About 2 minutes.
#
# Usage:  tests/e2e/nfqueue.sh [MODE...]        (as root; MODE: offload, inspect-all)
# Environment:
#   PINHOLE_BIN=path     the binary to test; default: `cargo build --locked --bin
#                        pinhole` first, then target/debug/pinhole
#   PH_PREFIX=phe2e-     namespace name prefix (see scripts/netns-lib.sh)
#   PH_KEEP_WORKDIR=1    keep the work dir (logs, configs, files) after the run
#   E2E_TIME_LIMIT=540   seconds before the whole run is stopped
#
# Output is TAP-like: one "ok N - ..." / "not ok N - ..." line per check,
# diagnostics as "# ..." lines, and a last line "e2e: N passed, N failed".
# Exit status 0 when every check passed (or when skipped: not root), 1 when
# any failed. Traffic only flows between the namespaces this script creates;
# everything it starts is stopped and removed on any exit.

set -uo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$E2E_DIR/../.." && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "# skip: tests/e2e/nfqueue.sh needs root (network namespaces, iptables, NFQUEUE);" \
         "run it as root to test pinhole inline"
    exit 0
fi

MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(offload inspect-all)
for m in "${MODES[@]}"; do
    case $m in
        offload|inspect-all) ;;
        *) echo "usage: $0 [offload|inspect-all]..." >&2; exit 2 ;;
    esac
done

# --------------------------------------------------------------------------
# Test bed library, tools (installed if missing), pinhole
# --------------------------------------------------------------------------
: "${PH_PREFIX:=phe2e-}"
# shellcheck source=scripts/netns-lib.sh
. "$REPO_DIR/scripts/netns-lib.sh"

ph_ensure_tools || { echo "Bail out! missing tools could not be installed"; exit 1; }

ph_pinhole_bin run || exit 1

# --------------------------------------------------------------------------
# Test bed
# --------------------------------------------------------------------------
SV4=$PH_SERVER_V4 SV6=$PH_SERVER_V6 CV4=$PH_CLIENT_V4 CV6=$PH_CLIENT_V6
FTP_PROBE=$E2E_DIR/ftp_probe.py
TFTP_PROBE=$E2E_DIR/tftp_probe.py
PJ=$E2E_DIR/pj.py

# Clients: never a proxy, bounded time, no URL globbing (IPv6 brackets).
CURL=(curl -sS --noproxy '*' --globoff --max-time 30)
# How long a TFTP transfer that must work may take, and one that must fail.
TFTP_WAIT=20
BLOCKED_WAIT=5

# --------------------------------------------------------------------------
# TAP-like reporting
# --------------------------------------------------------------------------
# shellcheck source=tests/e2e/tap.sh
. "$E2E_DIR/tap.sh"
# shellcheck source=tests/e2e/inline-lib.sh
. "$E2E_DIR/inline-lib.sh"
# shellcheck source=tests/e2e/nfqueue-policy.sh
. "$E2E_DIR/nfqueue-policy.sh"
MODE=setup

# --------------------------------------------------------------------------
# pinhole: start, stop, query
# --------------------------------------------------------------------------
RULES=""            # the file pinhole loads (a copy of rules/edge-router.toml)
CTL=""              # its control socket
STATE=""            # its state file (saved at SIGTERM, read by --restore)
PINHOLE_PID=""
PINHOLE_LOG=""
PINHOLE_STARTS=0
EXIT_STATUS=""

pstat()   { ctl stats --json | python3 "$PJ" "g('$1')"; }    # a stats counter (0 if absent)
drops()   { pstat "engine.drops.$1"; }

snapshot_stats() {
    pinhole_alive || return 0
    [ "$(ps -o stat= -p "$PINHOLE_PID" 2>/dev/null | cut -c1)" = T ] && return 0
    { echo "== after: $1"; ctl stats 2>&1; } >> "$PH_WORKDIR/failure-stats.txt"
}

# pinhole_start [EXTRA_ARGS...]: start the daemon in the fw namespace (its
# pid is registered, so cleanup stops it) and wait until it answers
# `pinhole status` (at most 10 s; fails at once if it exits).
pinhole_start() {
    PINHOLE_STARTS=$((PINHOLE_STARTS + 1))
    PINHOLE_LOG=$PH_WORKDIR/pinhole-$PINHOLE_STARTS-$MODE.log
    echo "pinhole run --mode $MODE $* (log $PINHOLE_LOG)"
    # Offload mode runs with the kernel's helpers attached (the default). Inspect-all runs
    # without: this test bed translates nothing, and attaching helpers brings connection
    # tracking, and with it the kernel's defragmentation, into the router's namespace, which
    # would reassemble fragments before pinhole sees them (check_fragments tests pinhole's
    # own reassembly). tests/e2e/nat.sh runs both modes with the helpers.
    local -a mode_args=()
    [ "$MODE" = inspect-all ] && mode_args=(--no-kernel-helpers)
    ph_start_bg pinhole "$PH_NS_FW" "$PINHOLE_LOG" \
        "$PINHOLE_BIN" run --rules "$RULES" --queues 0-1 --mode "$MODE" \
        --install-rules --control "$CTL" --state-file "$STATE" \
        --events "$EVENTS" --dump-drops "$DROPS" --metrics "$METRICS_ADDR" -v \
        "${mode_args[@]}" "$@"
    PINHOLE_PID=$PH_LAST_PID
    wait_ready
}

no_pinhole_rules() {
    if fw_save | grep -i pinhole; then
        echo "^ left in the fw namespace's iptables/ip6tables rules"
        return 1
    fi
    echo "no PINHOLE chain or rule left (v4, v6)"
}

# counter_at_least PATH N: the stats counter PATH is >= N.
counter_at_least() { local v; v=$(pstat "$1") && [ "$v" -ge "$2" ]; }

# expect_grown PATH BEFORE [MIN]: the counter grew by at least MIN (default
# 1) from BEFORE, within 5 s (workers publish counters asynchronously).
expect_grown() {
    local path=$1 before=$2 min=${3:-1}
    if ph_wait_for "$path >= $((before + min))" 5 counter_at_least "$path" $((before + min)); then
        echo "$path: $before -> $(pstat "$path")"
        return 0
    fi
    echo "$path did not grow by $min: $before -> $(pstat "$path")"
    return 1
}

# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

# ftp_get HOST FILE [CURL_OPTIONS...]: download FILE, compare with the original.
ftp_get() {
    local host=$1 file=$2 out
    shift 2
    out=$PH_WORKDIR/client/ftp-got-$file
    rm -f "$out"
    client "${CURL[@]}" "$@" -o "$out" "ftp://$host/$file" &&
        cmp "$PH_WORKDIR/ftp/$file" "$out" && echo "$file: $(stat -c %s "$out") bytes, identical"
}

# ftp_put HOST LOCAL REMOTE [CURL_OPTIONS...]: upload client/LOCAL as
# upload/REMOTE (anonymous), compare what the server stored.
ftp_put() {
    local host=$1 src=$PH_WORKDIR/client/$2 remote=$3
    shift 3
    client "${CURL[@]}" "$@" -T "$src" "ftp://$host/upload/$remote" &&
        cmp "$src" "$PH_WORKDIR/ftp/upload/$remote" &&
        echo "upload/$remote: $(stat -c %s "$src") bytes, identical"
}

# curl's four ways to get an FTP data connection.
declare -A FTP_FLAGS=(
    [PASV]="--ftp-pasv --disable-epsv"
    [EPSV]="--ftp-pasv"
    [PORT]="--ftp-port - --disable-eprt"
    [EPRT]="--ftp-port -"
)
ftp_flags() { read -ra FLAGS <<<"${FTP_FLAGS[$1]}"; }

# tftp_get [-6] HOST FILE: read FILE with tftp-hpa (octet), compare. tftp-hpa
# exits 0 even on an error reply or a time-out and leaves an empty local
# file, so only the comparison tells.
tftp_get() {
    local -a fam=()
    if [ "$1" = -6 ]; then fam=(-6); shift; fi
    local host=$1 file=$2 out
    out=$PH_WORKDIR/client/tftp-got-$file
    rm -f "$out"
    client timeout "$TFTP_WAIT" tftp "${fam[@]}" -m octet "$host" -c get "$file" "$out"
    cmp "$PH_WORKDIR/tftp/$file" "$out" && echo "$file: $(stat -c %s "$out") bytes, identical"
}

# tftp_put [-6] HOST LOCAL REMOTE: write client/LOCAL as REMOTE, compare.
tftp_put() {
    local -a fam=()
    if [ "$1" = -6 ]; then fam=(-6); shift; fi
    local host=$1 src=$2 remote=$3
    client timeout "$TFTP_WAIT" tftp "${fam[@]}" -m octet "$host" -c put "$src" "$remote"
    cmp "$PH_WORKDIR/client/$src" "$PH_WORKDIR/tftp/$remote" &&
        echo "$remote: $(stat -c %s "$PH_WORKDIR/tftp/$remote") bytes written, identical"
}

# Transfers that must fail, quickly. Both run in parallel.
curl_blocked() {
    if ftp_get "$SV4" small.txt --max-time "$BLOCKED_WAIT" --ftp-pasv; then
        echo "FTP download unexpectedly worked"
        return 1
    fi
    echo "FTP download failed, as it must"
}
tftp_blocked() {
    local TFTP_WAIT=$BLOCKED_WAIT
    if tftp_get "$SV4" small.txt; then
        echo "TFTP read unexpectedly worked"
        return 1
    fi
    echo "TFTP read failed, as it must"
}
# in_parallel A B: run the functions A and B at the same time (each waits for
# a time-out); true when both succeed.
in_parallel() {
    local pa ra rb
    "$1" > "$PH_WORKDIR/parallel-a.out" 2>&1 &
    pa=$!
    "$2" > "$PH_WORKDIR/parallel-b.out" 2>&1
    rb=$?
    wait "$pa"
    ra=$?
    cat "$PH_WORKDIR/parallel-a.out" "$PH_WORKDIR/parallel-b.out"
    [ "$ra" = 0 ] && [ "$rb" = 0 ]
}
ftp_tftp_blocked() { in_parallel curl_blocked tftp_blocked; }
# Without inspection: a passive data connection (outside to the server) and
# the reply of a TFTP server outside to a WRQ from inside are new inbound
# flows no rule allows.
backup_blocked() {
    local TFTP_WAIT=$BLOCKED_WAIT
    if tftp_backup "blocked-$MODE" "$CV4"; then
        echo "TFTP backup unexpectedly worked"
        return 1
    fi
    echo "TFTP backup failed, as it must"
}
no_inspect_blocked() { in_parallel curl_blocked backup_blocked; }
ftp_tftp_work() {
    ftp_get "$SV4" small.txt --ftp-pasv --disable-epsv && tftp_get "$SV4" small.txt
}

# lftp_session NAME PASSIVE(true|false) COMMANDS...: one lftp session.
lftp_session() {
    local name=$1 passive=$2 script out
    shift 2
    script=$PH_WORKDIR/client/lftp-$name.lftp
    out=$PH_WORKDIR/client/lftp-$name.out
    {
        echo "set cmd:fail-exit yes"
        echo "set ftp:ssl-allow no"
        echo "set ftp:passive-mode $passive"
        # Fail fast instead of retrying for minutes.
        echo "set net:max-retries 1"
        echo "set net:timeout 5"
        echo "set net:reconnect-interval-base 1"
        echo "set xfer:clobber yes"
        echo "open ftp://$SV4"
        printf '%s\n' "$@"
        echo "quit"
    } > "$script"
    (cd "$PH_WORKDIR/client" &&
        HOME=$PH_WORKDIR/client ph_in_client timeout 60 lftp -f "$script") > "$out" 2>&1
    local rc=$?
    cat "$out"
    return $rc
}

# Held FTP control sessions (ftp_probe.py session): commands appended to a
# file, one result line each.
declare -A SESSION_N=()
SESSION_PORT=""
session_open() {   # NAME
    local dir=$PH_WORKDIR/sess-$1
    ph_stop "sess-$1"   # one left by a failed check would read the new command file too
    rm -rf "$dir"
    mkdir -p "$dir"
    : > "$dir/cmd"
    SESSION_N[$1]=0
    ph_start_bg "sess-$1" "$PH_NS_CLIENT" "$dir/log" \
        python3 "$FTP_PROBE" session "$SV4" "$dir/cmd" "$dir/res" --lifetime 600
    if ! ph_wait_for "FTP session $1" 15 grep -q '^0 ' "$dir/res" ||
            ! grep -q '^0 ok' "$dir/res"; then
        cat "$dir/res" "$dir/log" 2>/dev/null
        return 1
    fi
    SESSION_PORT=$(awk '$1 == 0 { print $4 }' "$dir/res")
    echo "FTP control session $1 open from $CV4 port $SESSION_PORT"
}
# session_do NAME COMMAND...: run one command, print its result line.
SESSION_RESULT=""
session_do() {
    local name=$1 dir=$PH_WORKDIR/sess-$1 n
    shift
    n=$((SESSION_N[$name] + 1))
    SESSION_N[$name]=$n
    echo "$*" >> "$dir/cmd"
    if ! ph_wait_for "session $name command $n" 30 grep -q "^$n " "$dir/res"; then
        tail -n 5 "$dir/log"
        return 1
    fi
    SESSION_RESULT=$(grep "^$n " "$dir/res")
    echo "session $name: $* -> $SESSION_RESULT"
    [[ $SESSION_RESULT == "$n ok"* ]]
}
# session_get NAME FILE: download FILE over the held session (PASV), compare.
session_get() {
    local out=$PH_WORKDIR/client/sess-$1-$2
    rm -f "$out"
    session_do "$1" get "$2" "$out" pasv && cmp "$PH_WORKDIR/ftp/$2" "$out"
}
session_close() {
    session_do "$1" quit >/dev/null 2>&1
    ph_stop "sess-$1"
}

# --------------------------------------------------------------------------
# Checks: allowed traffic
# --------------------------------------------------------------------------
check_started() {
    pinhole_start || return 1
    chain_installed || return 1
    local st
    st=$(ctl status --json) || return 1
    echo "status: $st"
    python3 "$PJ" -t "data['mode'] == '$MODE' and data['queues'] == [0, 1]" <<<"$st" ||
        { echo "status does not say mode $MODE, queues [0, 1]"; return 1; }
    ctl stats --json | python3 "$PJ" -t "g('workers') == 2" ||
        { echo "stats do not say 2 workers"; return 1; }
}

# A second daemon started by mistake (same queues, other control socket) must fail on the
# queues before it touches the kernel rules: the first one's chain stays and keeps working.
check_second_daemon_refused() {
    local out rc
    out=$(timeout 20 ip netns exec "$PH_NS_FW" "$PINHOLE_BIN" run --rules "$RULES" \
        --queues 0-1 --mode "$MODE" --install-rules \
        --control "$PH_WORKDIR/second.sock" 2>&1)
    rc=$?
    echo "second daemon: exit $rc: $out"
    [ "$rc" = 1 ] || return 1
    [[ $out == *"binding NFQUEUE queue 0"* ]] || return 1
    chain_installed || return 1
    ftp_get "$SV4" small.txt --ftp-pasv --disable-epsv
}

ftp_curl_checks() {
    local m
    for m in PASV EPSV PORT EPRT; do
        ftp_flags "$m"
        check "FTP $m download over IPv4 (curl ${FTP_FLAGS[$m]})" \
            ftp_get "$SV4" medium.bin "${FLAGS[@]}"
        check "FTP $m upload over IPv4 (curl -T ${FTP_FLAGS[$m]})" \
            ftp_put "$SV4" upload-1m.bin "$MODE-$m-v4.bin" "${FLAGS[@]}"
    done
    for m in EPSV EPRT; do
        ftp_flags "$m"
        check "FTP $m download over IPv6 (curl ${FTP_FLAGS[$m]})" \
            ftp_get "[$SV6]" medium.bin "${FLAGS[@]}"
        check "FTP $m upload over IPv6" \
            ftp_put "[$SV6]" upload-1m.bin "$MODE-$m-v6.bin" "${FLAGS[@]}"
    done
}

# 8 MiB over a PASV data connection; in offload mode the kernel must have
# carried flows (the data connection needs no inspection once admitted), in
# inspect-all mode pinhole saw every packet and offloaded nothing.
check_bulk() {
    ftp_get "$SV4" big.bin --ftp-pasv --disable-epsv || return 1
    local off
    off=$(pstat engine.flows_offloaded) || return 1
    echo "engine.flows_offloaded = $off, engine.packets = $(pstat engine.packets)"
    if [ "$MODE" = offload ]; then
        [ "$off" -gt 0 ]
    else
        [ "$off" -eq 0 ]
    fi
}

# Offload mode: the kernel forwards an offloaded data connection to its last
# packet, FINs included, and pinhole learns that it ended from the kernel's
# conntrack destroy event. TIME_WAIT is shortened to 1 s in the fw namespace so
# the kernel removes the finished connection at once (a conntrack dump reaps
# expired entries), instead of 120 s later.
check_offload_ends_by_events() {
    local before tw rc=0
    before=$(pstat engine.flows_ended_in_kernel) || return 1
    tw=$(ph_in_fw sysctl -n net.netfilter.nf_conntrack_tcp_timeout_time_wait) || return 1
    ph_in_fw sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_time_wait=1 || return 1
    ftp_get "$SV4" medium.bin --ftp-pasv --disable-epsv || rc=1
    sleep 2
    ended_in_kernel() {
        ph_in_fw conntrack -L >/dev/null 2>&1
        [ "$(pstat engine.flows_ended_in_kernel)" -gt "$before" ]
    }
    ph_wait_for "the data connection's end from a destroy event" 10 ended_in_kernel || rc=1
    ph_in_fw sysctl -qw "net.netfilter.nf_conntrack_tcp_timeout_time_wait=$tw"
    echo "engine.flows_ended_in_kernel $before -> $(pstat engine.flows_ended_in_kernel)," \
        "queue.conntrack_destroy_events $(pstat queue.conntrack_destroy_events)," \
        "queue.conntrack_event_overruns $(pstat queue.conntrack_event_overruns)"
    [ "$(pstat queue.conntrack_event_overruns)" -eq 0 ] || rc=1
    return $rc
}

offloaded_session_closing() {
    ctl sessions --json | python3 "$PJ" -t "any(s['offloaded'] and s['state'] in
        ('fin_wait', 'closing', 'time_wait', 'closed') for s in data)"
}

# A router whose kernel sends no conntrack events: the daemon notices at start and installs
# the rules that queue offloaded connections' FIN and RST instead.
check_fallback_to_segments() {
    local old rc=0
    old=$(ph_in_fw sysctl -n net.netfilter.nf_conntrack_events) || return 1
    ph_in_fw sysctl -qw net.netfilter.nf_conntrack_events=0 || return 1
    if pinhole_start; then
        ph_in_fw iptables -S PINHOLE | grep -- '--tcp-flags FIN,RST NONE -j ACCEPT' || rc=1
        grep "nf_conntrack_events is 0" "$PINHOLE_LOG" || { echo "no warning in $PINHOLE_LOG"; rc=1; }
        check_clean_stop || rc=1
    else
        rc=1
    fi
    ph_in_fw sysctl -qw "net.netfilter.nf_conntrack_events=$old"
    return $rc
}

start_offload_ends_by_segments() {
    pinhole_start --offload-ends segments || return 1
    ph_in_fw iptables -S PINHOLE | grep -- '--tcp-flags FIN,RST NONE -j ACCEPT'
}

# With --offload-ends segments the offloaded data connection's FINs come to pinhole
# (marked): its session moves past established, and no destroy event is read.
check_offload_ends_by_segments() {
    ftp_get "$SV4" medium.bin --ftp-pasv --disable-epsv || return 1
    ph_wait_for "an offloaded session past its FINs" 5 offloaded_session_closing ||
        { ctl sessions; return 1; }
    [ "$(pstat engine.flows_ended_in_kernel)" -eq 0 ] && [ "$(pstat queue.conntrack_destroy_events)" -eq 0 ]
}

# IP fragments: a 4000-byte ping (allowed by ping-server) in 3 fragments each way, v4 and
# v6. In inspect-all mode (run with --no-kernel-helpers) the kernel queues the fragments (no
# conntrack defrag in the fw namespace): pinhole holds them until the datagram is whole and
# then gives every fragment the datagram's verdict. In offload mode conntrack reassembles
# before the queue.
check_fragments() {
    ph_in_client ping -c 2 -W 3 -s 4000 "$SV4" || return 1
    ph_in_client ping -6 -c 2 -W 3 -s 4000 "$SV6" || return 1
    local n held
    n=$(pstat engine.datagrams_reassembled) || return 1
    held=$(pstat queue.held) || return 1
    echo "engine.datagrams_reassembled = $n, queue.held = $held"
    [ "$held" -eq 0 ] || return 1
    if [ "$MODE" = inspect-all ]; then
        [ "$n" -ge 8 ]
    fi
}

check_lftp_passive() {
    lftp_session "pasv-$MODE" true \
        "cls -l" \
        "get medium.bin -o $PH_WORKDIR/client/lftp-$MODE-medium.bin" \
        "put $PH_WORKDIR/client/upload.bin -o upload/lftp-$MODE.bin" \
        "cls upload/lftp-$MODE.bin" || return 1
    # LIST (cls) came back through its data connection: the listing names the files.
    grep -q 'medium.bin' "$PH_WORKDIR/client/lftp-pasv-$MODE.out" &&
        grep -q "upload/lftp-$MODE.bin" "$PH_WORKDIR/client/lftp-pasv-$MODE.out" &&
        cmp "$PH_WORKDIR/ftp/medium.bin" "$PH_WORKDIR/client/lftp-$MODE-medium.bin" &&
        cmp "$PH_WORKDIR/client/upload.bin" "$PH_WORKDIR/ftp/upload/lftp-$MODE.bin"
}

check_lftp_active() {
    lftp_session "port-$MODE" false \
        "cls" \
        "get small.txt -o $PH_WORKDIR/client/lftp-$MODE-small.txt" || return 1
    grep -q 'medium.bin' "$PH_WORKDIR/client/lftp-port-$MODE.out" &&
        cmp "$PH_WORKDIR/ftp/small.txt" "$PH_WORKDIR/client/lftp-$MODE-small.txt"
}

check_abort() {   # STYLE
    client python3 "$FTP_PROBE" abort "$SV4" big.bin small.txt "$PH_WORKDIR/ftp/small.txt" \
        --style "$1"
}

# While a control session is held open, `pinhole sessions` lists it (text and
# JSON), and a PASV on it shows up in `pinhole pinholes`.
check_sessions_listing() {
    session_open list || return 1
    local port=$SESSION_PORT out
    out=$(ctl sessions) || { echo "pinhole sessions failed"; return 1; }
    echo "$out"
    # (Every grep reads all its input: `grep -q` at the end of a pipeline can
    # fail it under pipefail.)
    if ! grep -F "$CV4:$port" <<<"$out" | grep -F "$SV4:21"; then
        echo "no line with $CV4 port $port -> $SV4 in 'pinhole sessions'"
        return 1
    fi
    ctl sessions --json | python3 "$PJ" -t "any(s['sport'] == $port and s['dport'] == 21 \
        and s['src'] == '$CV4' and s['alg'] == 'ftp' for s in data)" ||
        { echo "sessions --json lacks the control session"; return 1; }
}

check_pinholes_listing() {
    session_do list pasv || return 1
    local port
    port=$(awk '{ print $3 }' <<<"$SESSION_RESULT")
    ctl pinholes || { echo "pinhole pinholes failed"; return 1; }
    ctl pinholes --json | python3 "$PJ" -t "any(p['dport'] == $port and p['dst'] == '$SV4' \
        and p['src'] == '$CV4' and p['alg'] == 'ftp' for p in data)" ||
        { echo "pinholes --json lacks $CV4 -> $SV4:$port"; return 1; }
    echo "pinhole $CV4 -> $SV4:$port listed"
}

# --------------------------------------------------------------------------
# Checks: SIGHUP reloads
# --------------------------------------------------------------------------
RULES_COUNT="" RELOADS="" RELOAD_FAILURES=""

# A broken rules file: SIGHUP must keep the old policy and log an error that
# names the file and line.
check_hup_broken() {
    RULES_COUNT=$(pstatus rules) && RELOADS=$(pstatus reloads) &&
        RELOAD_FAILURES=$(pstatus reload_failures) || return 1
    echo "before: rules $RULES_COUNT, reloads $RELOADS, reload_failures $RELOAD_FAILURES"
    cp "$RULES_BROKEN" "$RULES"
    kill -HUP "$PINHOLE_PID"
    ph_wait_for "reload failure" 10 status_at_least reload_failures $((RELOAD_FAILURES + 1)) ||
        return 1
    if ! grep -i error "$PINHOLE_LOG" | grep -F "$RULES:$BROKEN_LINE"; then
        echo "no error naming $RULES:$BROKEN_LINE in the log; its last lines:"
        tail -n 5 "$PINHOLE_LOG"
        return 1
    fi
}

check_hup_kept_policy() {
    local st
    st=$(ctl status --json) || return 1
    echo "$st"
    python3 "$PJ" -t "data['rules'] == $RULES_COUNT and data['reloads'] == $RELOADS \
        and data['reload_failures'] == $RELOAD_FAILURES + 1 \
        and data['last_reload_error'] is not None" <<<"$st"
}

check_hup_good() {
    cp "$RULES_SHIPPED" "$RULES"
    kill -HUP "$PINHOLE_PID"
    ph_wait_for "reload" 10 status_at_least reloads $((RELOADS + 1)) || return 1
    echo "reloads $RELOADS -> $(pstatus reloads), rules $(pstatus rules)"
}

# --------------------------------------------------------------------------
# Checks: what the daemon reports (event log, drop capture, metrics)
# --------------------------------------------------------------------------
METRICS_ADDR=127.0.0.1:9464
EVENTS="" DROPS=""

# events_has EXPR: some record r of the event log makes the Python expression
# EXPR true (retried for 5 s: the writer flushes every 200 ms).
events_match() {
    python3 - "$EVENTS" "$1" <<'PY'
import json, sys
path, expr = sys.argv[1], sys.argv[2]
records = [json.loads(line) for line in open(path)]
hits = [r for r in records if eval(expr, {}, {"r": r})]
print("%d of %d records match: %s" % (len(hits), len(records), expr))
if hits:
    print(json.dumps(hits[-1]))
sys.exit(0 if hits else 1)
PY
}

check_event_log() {
    local third=${PH_THIRD_V4//./,}
    events_has "r['type'] == 'violation' and r['reason'] == 'ftp_bounce' and r['alg'] == 'ftp' \
        and r['file'].startswith('nfqueue:') and r['ts'].endswith('Z') and '$third' in r['detail']" &&
    events_has "r['type'] == 'verdict' and r['verdict'] == 'drop' and r['reason'] == 'ftp_bounce' \
        and (r['flow'] or '').endswith('$SV4:21')" &&
    events_has "r['type'] == 'verdict' and r['reason'] == 'default_deny' and r['flow'] is None \
        and r.get('tuple', '').startswith('tcp $CV4:') and ' -> $SV4:' in r['tuple'] \
        and $PH_PASV_MIN <= int(r['tuple'].rsplit(':', 1)[1]) <= $PH_PASV_MAX" &&
    events_has "r['type'] == 'pinhole' and r['event'] == 'open' and r['alg'] == 'ftp' \
        and r['dst'] == '$SV4' and (r['parent'] or '').endswith('$SV4:21')" &&
    events_has "r['type'] == 'pinhole' and r['event'] == 'use' and r['alg'] == 'ftp' \
        and (r['child'] or '').startswith('tcp $CV4:')" &&
    ! events_match "r['type'] == 'verdict' and r['verdict'] != 'drop'"
}

check_drop_capture() {
    local dump=$PH_WORKDIR/drops-$MODE.txt third=${PH_THIRD_V4//./,}
    tcpdump -nn -A -r "$DROPS" >"$dump" 2>&1 || { cat "$dump"; return 1; }
    echo "$(grep -c ' IP' "$dump") packets in $DROPS"
    grep -q 'link-type RAW' "$dump" || { echo "not link-type RAW:"; head -n 1 "$dump"; return 1; }
    grep -F "PORT $third" "$dump" || { echo "no PORT $third packet in the capture"; return 1; }
    grep -E "IP $CV4\.[0-9]+ > $SV4\.4[0-9]{4}: Flags \[S\]" "$dump" | head -n 1 ||
        { echo "no SYN into the passive range in the capture"; return 1; }
    "$PINHOLE_BIN" replay --format json --rules "$RULES" "$DROPS" | tail -n 1 |
        python3 "$PJ" -t "data['type'] == 'summary' and data['packets'] >= 2"
}

# metric NAME{LABELS}: its value in the scrape at $METRICS_OUT (empty if absent).
metric() { awk -v m="$1" '$1 == m { print $2 }' "$PH_WORKDIR/metrics.txt"; }
metric_at_least() {
    local v
    v=$(metric "$1")
    echo "$1 = ${v:-absent}"
    [ -n "$v" ] && [ "$v" -ge "$2" ]
}

check_metrics() {
    local headers=$PH_WORKDIR/metrics-headers.txt
    ph_in_fw curl -sS --max-time 5 -D "$headers" -o "$PH_WORKDIR/metrics.txt" \
        "http://$METRICS_ADDR/metrics" || return 1
    grep -q '^HTTP/1.1 200' "$headers" && grep -qi '^Content-Type: text/plain; version=0.0.4' "$headers" ||
        { cat "$headers"; return 1; }
    grep -qx "pinhole_info{version=\"$("$PINHOLE_BIN" --version | cut -d' ' -f2)\",mode=\"$MODE\"} 1" \
        "$PH_WORKDIR/metrics.txt" || { grep pinhole_info "$PH_WORKDIR/metrics.txt"; return 1; }
    metric_at_least 'pinhole_violations_total{alg="ftp",reason="ftp_bounce"}' 1 &&
        metric_at_least 'pinhole_drops_total{reason="ftp_bounce"}' 1 &&
        metric_at_least 'pinhole_drops_total{reason="default_deny"}' 1 &&
        metric_at_least 'pinhole_pinholes_total{alg="ftp",outcome="opened"}' 1 &&
        metric_at_least 'pinhole_pinholes_total{alg="ftp",outcome="used"}' 1 &&
        metric_at_least 'pinhole_packets_total{worker="0"}' 0 &&
        metric_at_least 'pinhole_packets_total{worker="1"}' 0 &&
        metric_at_least 'pinhole_queue_kernel_dropped_total{queue="0"}' 0 &&
        metric_at_least 'pinhole_queue_kernel_dropped_total{queue="1"}' 0 &&
        metric_at_least 'pinhole_queue_received_total{queue="1"}' 0 &&
        metric_at_least 'pinhole_events_written_total{class="drops"}' 1 &&
        metric_at_least 'pinhole_dropdump_packets_total' 2 &&
        metric_at_least 'pinhole_workers_answered' 2 || return 1
    # The client and the server are one address pair, which the kernel's queue balancing
    # puts on one queue: the sum of both workers is what must have moved.
    local packets
    packets=$(awk '$1 ~ /^pinhole_packets_total\{/ { n += $2 } END { print n + 0 }' "$PH_WORKDIR/metrics.txt")
    echo "packets judged, both workers: $packets"
    [ "$packets" -gt 0 ] || return 1
    ph_in_fw curl -s -o /dev/null -w '%{http_code}\n' "http://$METRICS_ADDR/nope" | grep -qx 404 ||
        { echo "/nope did not answer 404"; return 1; }
    # Loopback only: nothing listens on the firewall's other addresses.
    ph_in_fw ss -ltnH "sport = :${METRICS_ADDR##*:}" | tee /dev/stderr |
        awk '{ print $4 }' | grep -vx "$METRICS_ADDR" && { echo "listens beyond loopback"; return 1; }
    return 0
}

check_stats_export() {
    local prom=$PH_WORKDIR/stats-prometheus.txt json
    ctl stats --prometheus >"$prom" || return 1
    grep -qx 'pinhole_up 1' "$prom" || { head "$prom"; return 1; }
    local used_prom
    used_prom=$(awk '$1 == "pinhole_pinholes_total{alg=\"ftp\",outcome=\"used\"}" { print $2 }' "$prom")
    json=$(ctl stats --json) || return 1
    echo "ftp pinholes used: prometheus $used_prom, json $(python3 "$PJ" "g('engine.pinholes_by_alg.ftp.used')" <<<"$json")"
    python3 "$PJ" -t "g('engine.pinholes_by_alg.ftp.used') == $used_prom \
        and g('engine.violations_by_reason.ftp.ftp_bounce') >= 1 \
        and g('observe.events_written.drops') >= 1 and g('observe.dropdump_packets') >= 2 \
        and len(data['kernel_queues']) == 2" <<<"$json"
}

check_event_log_reopened() {
    mv "$EVENTS" "$EVENTS.1" || return 1
    reload_with "$RULES_SHIPPED" || return 1
    ftp_get "$SV4" small.txt --ftp-pasv --disable-epsv || return 1
    ph_wait_for "new event log" 5 test -s "$EVENTS" || { echo "no new $EVENTS"; return 1; }
    events_has "r['type'] == 'pinhole' and r['event'] == 'use' and r['alg'] == 'ftp'" || return 1
    echo "moved file: $(wc -l <"$EVENTS.1") records; new file: $(wc -l <"$EVENTS") records"
}

check_event_log_tftp() {
    events_has "r['type'] == 'pinhole' and r['alg'] == 'tftp' and r['event'] == 'open' \
        and r['proto'] == 'udp' and r['sport_range'] == [30000, 30009]" &&
    events_has "r['type'] == 'pinhole' and r['alg'] == 'tftp' and r['event'] == 'use' \
        and (r['child'] or '').startswith('udp $SV4:300')" &&
    events_has "r['type'] == 'violation' and r['reason'] == 'tftp_write_denied'" &&
    events_has "r['type'] == 'verdict' and r['reason'] == 'tftp_unknown_tid'"
}

# --------------------------------------------------------------------------
# Checks: refused traffic
# --------------------------------------------------------------------------
# A connection into vsftpd's passive range that no PASV announced. First,
# from the firewall itself (not forwarded, so pinhole is not involved), the
# server answers it with a reset: nothing listens there. From the client
# through the firewall the same SYN must time out -- only a firewall that
# drops it can make that happen -- and default_deny counts it.
check_passive_range_closed() {
    local port=$PH_PASV_MIN before
    while ph_listening "$PH_NS_SERVER" tcp "$port"; do port=$((port + 1)); done
    ph_in_fw python3 "$FTP_PROBE" connect "$SV4" "$port" --expect refused || return 1
    before=$(drops default_deny) || return 1
    client python3 "$FTP_PROBE" connect "$SV4" "$port" --timeout 3 --expect timeout || return 1
    expect_grown engine.drops.default_deny "$before"
}

# FTP bounce (RFC 2577): PORT naming a third host. Without a firewall vsftpd
# answers "500 Illegal PORT command" (and logs the command); with pinhole
# the command never reaches it (no reply, the connection is reset), vsftpd's
# protocol log never shows it, and ftp_bounce counts it.
check_bounce() {
    local before
    before=$(drops ftp_bounce) || return 1
    client python3 "$FTP_PROBE" bounce "$SV4" "$PH_THIRD_V4" || return 1
    if grep -F "${PH_THIRD_V4//./,}" "$PH_WORKDIR/vsftpd-plain.log"; then
        echo "^ vsftpd received the PORT command"
        return 1
    fi
    expect_grown engine.drops.ftp_bounce "$before"
}

# A pinhole admits one connection: while the first data connection runs, a
# second one to the same port from a new source port times out (vsftpd
# still listens during the transfer, so without a firewall it would connect).
check_pinhole_single_use() {
    local before
    before=$(drops default_deny) || return 1
    client python3 "$FTP_PROBE" reuse "$SV4" big.bin "$(stat -c %s "$PH_WORKDIR/ftp/big.bin")" \
        --timeout 3 --expect timeout || return 1
    expect_grown engine.drops.default_deny "$before"
}

# TFTP transfer IDs: a python client reads image.bin and pauses after DATA 1.
# Meanwhile (1) the server's address sends a forged DATA block from another
# port to the client's transfer port (tftp_unknown_tid) and (2) a third host
# outside sends a forged ERROR to the server's transfer port. The client
# sees neither, a capture on the server sees nothing from the third host,
# and the transfer completes intact.
TID_DIR=""
check_tftp_tid_probe() {
    TID_DIR=$PH_WORKDIR/tid-$MODE
    rm -rf "$TID_DIR"
    mkdir -p "$TID_DIR"
    TID_UNKNOWN0=$(drops tftp_unknown_tid) && TID_DENY0=$(drops default_deny) || return 1
    ph_capture_start -n "$PH_NS_SERVER" -i "$PH_IF_SERVER" \
        -f "udp and src host $PH_THIRD_V4" -w "$TID_DIR/server.pcap" || return 1
    client python3 "$TFTP_PROBE" read "$SV4" image.bin "$PH_WORKDIR/tftp/image.bin" \
        --state-dir "$TID_DIR" --third "$PH_THIRD_V4" > "$TID_DIR/probe.out" 2>&1 &
    local pid=$! cport rc
    if ph_wait_for "TFTP transfer ports" 10 test -s "$TID_DIR/tid.json"; then
        cport=$(python3 "$PJ" "data['client_port']" < "$TID_DIR/tid.json")
        ph_in_server python3 "$TFTP_PROBE" inject "$SV4" 31999 "$CV4" "$cport"
    fi
    touch "$TID_DIR/go"
    wait "$pid"
    rc=$?
    ph_capture_stop
    cat "$TID_DIR/probe.out"
    return $rc
}
check_tftp_tid_capture() {
    local n
    n=$(tcpdump -n -r "$TID_DIR/server.pcap" 2>/dev/null | wc -l)
    echo "datagrams from $PH_THIRD_V4 captured on the server: $n"
    [ "$n" = 0 ]
}
check_tftp_tid_counters() {
    local unknown deny
    unknown=$(drops tftp_unknown_tid) && deny=$(drops default_deny) || return 1
    echo "tftp_unknown_tid $TID_UNKNOWN0 -> $unknown, default_deny $TID_DENY0 -> $deny"
    [ "$unknown" -gt "$TID_UNKNOWN0" ] &&
        [ $((unknown + deny)) -ge $((TID_UNKNOWN0 + TID_DENY0 + 2)) ]
}

# The shipped policy is read-only from outside: a WRQ to the server is
# dropped (tftp_write_denied), the client times out, nothing is written.
check_tftp_write_denied() {
    local before name=denied-$MODE.bin TFTP_WAIT=$BLOCKED_WAIT
    before=$(drops tftp_write_denied) || return 1
    if tftp_put "$SV4" tftp-up.bin "$name"; then
        echo "the write worked"
        return 1
    fi
    if [ -e "$PH_WORKDIR/tftp/$name" ]; then
        echo "the server created $name"
        return 1
    fi
    expect_grown engine.drops.tftp_write_denied "$before"
}

# server_ports = "30000-30009" while tftpd answers from any port: the reply
# is dropped (tftp_tid_out_of_range), the read fails.
check_tftp_out_of_range() {
    local before TFTP_WAIT=$BLOCKED_WAIT
    before=$(drops tftp_tid_out_of_range) || return 1
    if tftp_get "$SV4" small.txt; then
        echo "the read worked"
        return 1
    fi
    expect_grown engine.drops.tftp_tid_out_of_range "$before"
}

# A device inside writes its backup to a TFTP server outside (the second
# tftpd-hpa, in the client namespace): inside-tftp-out admits the WRQ and
# the server's reply from its new port.
check_backup_out() {   # [-6] HOST
    local name=router1-confg-$MODE${2:+-6} rc
    # (a capture on wan0, shown if the backup fails)
    ph_capture_start -n "$PH_NS_FW" -i "$PH_IF_WAN" -f udp -w "$PH_WORKDIR/backup-$name.pcap" ||
        return 1
    tftp_backup "$name" "$@"
    rc=$?
    ph_capture_stop
    if [ $rc != 0 ]; then
        echo "on wan0:"
        tcpdump -n -r "$PH_WORKDIR/backup-$name.pcap" 2>/dev/null | head -n 20
        tail -n 5 "$PH_WORKDIR/tftpd-out.out"
    fi
    return $rc
}

# tftp_backup NAME [-6] HOST: from the server namespace, write config.txt as
# NAME to the TFTP server in the client namespace; compare.
tftp_backup() {
    local name=$1
    shift
    (cd "$PH_WORKDIR/tftp" &&
        ph_in_server timeout "$TFTP_WAIT" tftp "${@:1:$#-1}" -m octet "${!#}" \
            -c put config.txt "$name")
    cmp "$PH_WORKDIR/tftp/config.txt" "$PH_WORKDIR/tftp-out/$name" &&
        echo "$name arrived intact"
}

restart_tftpd() {   # [EXTRA_ARGS...]
    ph_stop tftpd
    ph_start_tftpd "$@"
}

# --------------------------------------------------------------------------
# Checks: restart without loss, reloads racing traffic, queue overflow
# --------------------------------------------------------------------------
# Sum of a field over the daemon log's "state restored" lines (one per worker).
restored_sum() {
    grep 'state restored' "$PINHOLE_LOG" | grep -o "$1=[0-9]*" | cut -d= -f2 |
        awk '{ s += $1 } END { print s + 0 }'
}

# SIGTERM in the middle of a rate-limited 8 MiB passive download, with a second
# control session idle; start again with --restore. The download completes
# intact, and the idle session then sets up a new passive transfer. In
# inspect-all mode, every segment after the restart needs the restored flow.
check_restart_mid_download() {
    session_open rs || return 1
    # The server sends at 10 Mbit/s for this check: the download lasts about 7 s.
    ph_in_server tc qdisc add dev "$PH_IF_SERVER" root tbf rate 10mbit burst 32kb latency 500ms ||
        { session_close rs; return 1; }
    restart_mid_download
    local rc=$?
    ph_in_server tc qdisc del dev "$PH_IF_SERVER" root
    session_close rs
    return $rc
}

restart_mid_download() {
    local out=$PH_WORKDIR/client/restart-big.bin pid rc size
    rm -f "$out" "$STATE"
    client "${CURL[@]}" --ftp-pasv --disable-epsv -o "$out" "ftp://$SV4/big.bin" &
    pid=$!
    sleep 2
    size=$(stat -c %s "$out" 2>/dev/null || echo 0)
    if ! kill -0 "$pid" 2>/dev/null || [ "$size" -ge $((8 * 1024 * 1024)) ]; then
        echo "the download was over before the restart ($size bytes)"
        wait "$pid"
        return 1
    fi
    pinhole_signal_exit TERM || { wait "$pid"; return 1; }
    if ! grep 'state saved' "$PINHOLE_LOG"; then
        echo "no 'state saved' in the log:"
        tail -n 5 "$PINHOLE_LOG"
        wait "$pid"
        return 1
    fi
    pinhole_start --restore || { wait "$pid"; return 1; }
    local flows
    flows=$(restored_sum flows)
    echo "restored flows: $flows (pinholes $(restored_sum pinholes))"
    [ -e "$STATE" ] && { echo "the state file was not removed after loading"; wait "$pid"; return 1; }
    wait "$pid"
    rc=$?
    if [ "$rc" != 0 ]; then
        echo "curl exit status $rc across the restart"
        restart_stall_report
        return 1
    fi
    cmp "$PH_WORKDIR/ftp/big.bin" "$out" || return 1
    echo "big.bin: intact across the restart ($size bytes before it)"
    # The two control connections and the data connection at least.
    [ "$flows" -ge 3 ] || return 1
    session_get rs small.txt
}

# What a stalled download across the restart left behind: pinhole's drops and
# the kernel's view of the connections (INVALID counts, the entries and their
# marks), so that a failure in CI says which side held the data back.
restart_stall_report() {
    echo "pinhole drops after the restart:"
    ctl stats 2>&1
    tail -n 20 "$PINHOLE_LOG"
    echo "kernel conntrack statistics and entries of the server:"
    ph_in_fw conntrack -S 2>&1
    ph_in_fw conntrack -L -p tcp 2>/dev/null | grep -F "$SV4"
}

# `pinhole snapshot` writes the state file on demand, the daemon keeps running.
check_snapshot_command() {
    rm -f "$STATE"
    local out
    out=$(ctl snapshot --json) || return 1
    echo "$out"
    python3 "$PJ" -t "data['state_file'] == '$STATE' and data['workers_answered'] == 2 \
        and data['bytes'] > 0" <<<"$out" || return 1
    python3 "$PJ" -t "data['format'] == 'pinhole-state' and len(data['workers']) == 2" \
        <"$STATE" || return 1
    pinhole_alive
}

# A state file that cannot be used: refused with a clear error naming the
# file, the daemon starts empty and works.
check_restore_refused() {   # KIND (corrupt|incompatible) EXPECTED_TEXT
    # (The stop writes a good state file; the bad one replaces it.)
    pinhole_signal_exit TERM || return 1
    case $1 in
        corrupt) printf '{"format":"pinhole-state","version":1,"workers":[{' >"$STATE" ;;
        incompatible) printf '{"format":"pinhole-state","version":999,"workers":[]}\n' >"$STATE" ;;
    esac
    pinhole_start --restore || return 1
    if ! grep 'state not restored, starting empty' "$PINHOLE_LOG" | grep -F "$STATE" |
            grep -F "$2"; then
        echo "no refusal naming $STATE and '$2' in the log:"
        tail -n 5 "$PINHOLE_LOG"
        return 1
    fi
    ftp_tftp_work
}

# SIGHUPs every 100 ms, alternating two valid rules files, while an FTP
# download and TFTP reads run: every transfer completes, no reload fails.
check_reload_race() {
    local r0 f0 pid i rc=0
    r0=$(pstatus reloads) && f0=$(pstatus reload_failures) || return 1
    local out=$PH_WORKDIR/client/race-big.bin
    rm -f "$out"
    client "${CURL[@]}" --limit-rate 4m --ftp-pasv --disable-epsv -o "$out" \
        "ftp://$SV4/big.bin" &
    pid=$!
    (
        for ((i = 0; i < 30; i++)); do
            if ((i % 2)); then cp "$RULES_WRITE" "$RULES"; else cp "$RULES_SHIPPED" "$RULES"; fi
            kill -HUP "$PINHOLE_PID"
            sleep 0.1
        done
        cp "$RULES_SHIPPED" "$RULES"
        kill -HUP "$PINHOLE_PID"
    ) &
    local hups=$!
    tftp_get "$SV4" image.bin || rc=1
    tftp_get -6 "$SV6" image.bin || rc=1
    wait "$hups"
    wait "$pid" || { echo "curl failed during the reloads"; rc=1; }
    cmp "$PH_WORKDIR/ftp/big.bin" "$out" || rc=1
    ph_wait_for "the last reload" 10 status_at_least reloads $((r0 + 2)) || rc=1
    local r1 f1
    r1=$(pstatus reloads) && f1=$(pstatus reload_failures) || return 1
    echo "reloads $r0 -> $r1 (signals may coalesce), reload_failures $f0 -> $f1"
    [ "$f1" = "$f0" ] || rc=1
    return $rc
}

# The kernel's count of packets dropped because queue N was full (field 6 of
# /proc/net/netfilter/nfnetlink_queue in the firewall namespace).
queue_dropped() {
    ph_in_fw cat /proc/net/netfilter/nfnetlink_queue | awk '{ s += $6 } END { print s + 0 }'
}

# Queue overflow: pinhole stopped (SIGSTOP) with a 16-packet queue, 200 pings
# sent. Fail-closed, the kernel drops what does not fit and counts it, and no
# ping is answered; fail-open (queue bypass and NFQA_CFG_F_FAIL_OPEN), what
# does not fit is accepted and answered.
check_queue_overflow() {   # closed|open
    local d0 d1 got rc=0
    local -a extra=()
    [ "$1" = open ] && extra=(--fail-open)
    pinhole_signal_exit TERM && pinhole_start --queue-maxlen 16 "${extra[@]}" || return 1
    d0=$(queue_dropped)
    kill -STOP "$PINHOLE_PID" || return 1
    got=$(ph_in_client ping -n -q -c 200 -i 0.01 -W 1 "$SV4" 2>&1 | grep -o '[0-9]* received' | cut -d' ' -f1)
    d1=$(queue_dropped)
    kill -CONT "$PINHOLE_PID"
    echo "fail-$1: ${got:-0} of 200 pings answered; kernel queue_dropped $d0 -> $d1"
    case $1 in
        closed) [ "${got:-0}" -eq 0 ] && [ "$d1" -gt "$d0" ] || rc=1 ;;
        open) [ "${got:-0}" -gt 100 ] || rc=1 ;;
    esac
    # Afterwards the daemon catches up and works; then back to the usual queue length.
    ftp_tftp_work || rc=1
    pinhole_signal_exit TERM && pinhole_start "${extra[@]}" || rc=1
    return $rc
}

# --------------------------------------------------------------------------
# Checks: failing closed / open, stopping
# --------------------------------------------------------------------------
check_sigkill_leaves_rules() {
    pinhole_signal_exit KILL || return 1
    local rules
    rules=$(fw_save)    # (not `fw_save | grep -q`: with pipefail, grep -q may SIGPIPE it)
    if ! grep -q PINHOLE <<<"$rules"; then
        echo "no PINHOLE rules left after SIGKILL (nothing queues: fail-closed depends on them)"
        return 1
    fi
    echo "rules stay installed after SIGKILL"
}

# Starting over the rules a killed daemon left must work and leave exactly
# one jump to PINHOLE.
check_start_over_leftover() {   # [EXTRA_ARGS...]
    pinhole_start "$@" && chain_installed
}

check_clean_stop() {
    pinhole_signal_exit TERM || return 1
    [ "$EXIT_STATUS" = 0 ] || { echo "exit status $EXIT_STATUS, not 0"; return 1; }
    no_pinhole_rules
}

# --------------------------------------------------------------------------
# One mode
# --------------------------------------------------------------------------
run_mode() {
    MODE=$1
    local t0=$SECONDS
    EVENTS=$PH_WORKDIR/events-$MODE.jsonl
    DROPS=$PH_WORKDIR/drops-$MODE.pcap
    note "--- mode $MODE"
    cp "$RULES_SHIPPED" "$RULES"
    restart_tftpd --port-range 30000:30009 >/dev/null 2>&1

    if ! check "pinhole run starts, installs its chain first in FORWARD (v4, v6), answers status" \
            check_started; then
        note "pinhole did not start in mode $MODE: skipping the rest of this mode"
        ph_stop pinhole
        PINHOLE_PID=""
        purge_leftover_rules
        return
    fi

    check "a second pinhole run on the same queues fails and leaves the first one's rules" \
        check_second_daemon_refused

    # FTP that the policy allows.
    ftp_curl_checks
    check "FTP bulk: 8 MiB PASV download; flows_offloaded $([ "$MODE" = offload ] &&
        echo '> 0' || echo '== 0')" check_bulk
    if [ "$MODE" = offload ]; then
        check "offloaded data connection: its FINs stay in the kernel, its end comes from the conntrack destroy event" \
            check_offload_ends_by_events
    fi
    check "fragmented ping (4000 bytes, v4 and v6) passes; no fragment left held" \
        check_fragments
    check "lftp passive session: LIST, RETR, STOR" check_lftp_passive
    check "lftp active session: LIST, RETR" check_lftp_active
    check "ABOR mid-transfer (close data, ftplib abort), then RETR on the same session" \
        check_abort ftplib
    check "ABOR mid-transfer (RFC 959 IP/Synch), then RETR on the same session" \
        check_abort rfc959

    # Restart without loss.
    check "SIGTERM mid-download, run --restore: the 8 MiB download completes intact and an idle session opens a new PASV" \
        check_restart_mid_download
    check "pinhole snapshot writes the state file (both workers) and the daemon runs on" \
        check_snapshot_command
    check "a corrupt state file is refused with an error naming it; the daemon starts empty and works" \
        check_restore_refused corrupt "is corrupt"
    check "an incompatible state file (version 999) is refused; the daemon starts empty and works" \
        check_restore_refused incompatible "is incompatible"

    # FTP that the policy refuses (no session held open: its pinholes could admit the probes).
    check "SYN into the passive range without PASV times out (server would reset it)" \
        check_passive_range_closed
    check "PORT naming a third host gets no reply, never reaches vsftpd; ftp_bounce counted" \
        check_bounce
    check "second connection through a used pinhole times out; the first transfer completes" \
        check_pinhole_single_use

    # What the daemon reports: event log, drop capture, metrics.
    check "event log: the bounce (violation and drop), the passive-range SYN (drop naming it), FTP pinholes opened and used" \
        check_event_log
    check "drop capture: a pcap tcpdump reads, holding the bounce PORT and the passive-range SYN" \
        check_drop_capture
    check "metrics scraped over loopback: pinholes, violations, drops, workers, kernel queues, writer" \
        check_metrics
    check "pinhole stats --prometheus and --json carry the same counters" check_stats_export

    # Listing sessions and pinholes.
    check "pinhole sessions lists a held FTP control session" check_sessions_listing
    check "pinhole pinholes lists the pinhole a PASV opened" check_pinholes_listing

    # SIGHUP: a broken file keeps the old policy and the held session.
    check "SIGHUP with a broken rules file: refused, error names file:line" check_hup_broken
    check "after the broken reload: old rule count, reload_failures + 1" check_hup_kept_policy
    check "the held control session still transfers (PASV) after the broken reload" \
        session_get list medium.bin
    check "a new control session works after the broken reload" \
        ftp_get "$SV4" small.txt --ftp-pasv --disable-epsv
    check "SIGHUP with the good file again: reloaded" check_hup_good
    check "the held control session still transfers after the good reload" \
        session_get list small.txt
    session_close list
    check "30 SIGHUPs racing an FTP download and TFTP reads: all complete, no reload fails" \
        check_reload_race
    check "SIGHUP after logrotate moved the event log: new records go to a new file" \
        check_event_log_reopened

    # TFTP: tftpd-hpa --port-range 30000:30009, the policy as shipped (read-only).
    check "TFTP read over IPv4 (tftpd --port-range, server_ports)" tftp_get "$SV4" image.bin
    check "TFTP read over IPv6 (tftpd --port-range, server_ports)" tftp_get -6 "$SV6" image.bin
    check "TFTP write refused by the shipped read-only policy (tftp_write_denied)" \
        check_tftp_write_denied
    check "TFTP forged packets from another server port and a third host do not reach" \
        check_tftp_tid_probe
    check "TFTP: the server never saw the third host's datagram" check_tftp_tid_capture
    check "TFTP: tftp_unknown_tid (and default_deny) counted the forged datagrams" \
        check_tftp_tid_counters
    check "event log: TFTP read pinholes opened and used, the refused write, the forged datagrams" \
        check_event_log_tftp

    # Variant (b), write = true: writes to the server.
    check "SIGHUP to the write = true variant" reload_with "$RULES_WRITE"
    check "TFTP write over IPv4 (write = true)" tftp_put "$SV4" tftp-up.bin "up-$MODE-v4.bin"
    check "TFTP write over IPv6 (write = true)" tftp_put -6 "$SV6" tftp-up.bin "up-$MODE-v6.bin"

    # tftpd-hpa without --port-range: its replies come from any port.
    restart_tftpd >/dev/null 2>&1
    check "TFTP reply from outside server_ports dropped (tftp_tid_out_of_range)" \
        check_tftp_out_of_range
    check "SIGHUP to the variant without server_ports" reload_with "$RULES_ANY_PORT"
    check "TFTP read over IPv4 (any server port)" tftp_get "$SV4" image.bin
    check "TFTP read over IPv6 (any server port)" tftp_get -6 "$SV6" image.bin
    check "SIGHUP to the variant without server_ports, write = true" \
        reload_with "$RULES_ANY_PORT_WRITE"
    check "TFTP write over IPv4 (any server port)" tftp_put "$SV4" tftp-up.bin "any-$MODE-v4.bin"
    check "TFTP write over IPv6 (any server port)" tftp_put -6 "$SV6" tftp-up.bin "any-$MODE-v6.bin"
    check "SIGHUP back to the shipped rules" reload_with "$RULES_SHIPPED"
    restart_tftpd --port-range 30000:30009 >/dev/null 2>&1

    # Command, user and path policy; the transfer log.
    check "SIGHUP to the variant with a command, user and path policy" reload_with "$RULES_POLICY"
    check "lftp: mkdir, rm and put *.key refused with 500; get and put on the same session work" \
        check_policy_lftp
    check "ftplib: DELE and MKD refused with 500, then RETR on the same session; USER root refused at once" \
        check_policy_ftplib
    check "curl: a quoted DELE and a login as root fail at once; vsftpd saw XXXX; violations name the rule" \
        check_policy_curl
    check "transfer log: download, upload, TFTP read with their exact sizes; 550, TFTP error and ABOR logged as failed/aborted" \
        check_transfer_log
    check "TFTP size probe as UEFI does it (tsize=0, ERROR 8), then the read: logged failed, then complete" \
        check_tftp_size_probe
    check "metrics count the transfers and their bytes" check_transfer_metrics
    check "SIGHUP back to the shipped rules" reload_with "$RULES_SHIPPED"

    # Inside to outside.
    check "TFTP backup from inside to a server outside, IPv4 (inside-tftp-out)" \
        check_backup_out "$CV4"
    check "TFTP backup from inside to a server outside, IPv6" check_backup_out -6 "$CV6"

    if [ "$MODE" = inspect-all ]; then
        check "inspect-all: nothing was offloaded" counter_at_most_zero engine.flows_offloaded
    fi

    # Failing closed: nobody answers the queue.
    check "SIGSTOP: FTP and TFTP blocked while pinhole is stopped" \
        stopped_blocks
    check "SIGCONT: transfers work again" ftp_tftp_work
    check "queue overflow, fail-closed (queue of 16, pinhole stopped): kernel drops and counts, nothing passes" \
        check_queue_overflow closed
    check "SIGKILL: pinhole dies, its rules stay" check_sigkill_leaves_rules
    check "after SIGKILL: FTP and TFTP blocked (fail-closed)" ftp_tftp_blocked
    if ! check "start with --fail-open over the rules the killed daemon left" \
            check_start_over_leftover --fail-open; then
        note "removing the leftover rules by hand and starting again"
        ph_stop pinhole
        purge_leftover_rules
        pinhole_start --fail-open >/dev/null 2>&1
    fi
    check "with --fail-open running: transfers work" ftp_tftp_work
    check "queue overflow, fail-open (queue of 16, pinhole stopped): what does not fit passes" \
        check_queue_overflow open
    check "SIGKILL the --fail-open daemon" check_sigkill_leaves_rules
    check "after SIGKILL with --fail-open: FTP and TFTP pass (queue bypass)" ftp_tftp_work
    check "leftover rules removed by hand" purge_leftover_rules
    check "pinhole starts again" pinhole_start
    check "SIGTERM: exit status 0, no PINHOLE rule left (v4, v6)" check_clean_stop
    check "after a clean stop: FTP and TFTP blocked (FORWARD policy DROP)" ftp_tftp_blocked

    # The same policy without inspection (--no-inspect): only what the rules
    # name passes. The control connection is allowed by rule; a passive data
    # connection into the server, and the reply of a TFTP server outside to a
    # device inside, are new inbound flows no rule allows. What goes from the
    # server out works anyway -- inside-out lets the inside reach anything --
    # so active FTP and TFTP reads from the server pass, and so does a TFTP
    # write to the server: write = false needs the inspector to read the WRQ.
    check "--no-inspect: pinhole starts" pinhole_start --no-inspect
    check "--no-inspect: the FTP control connection works (login)" check_control_only
    check "--no-inspect: passive FTP and a TFTP backup from inside to outside fail" \
        no_inspect_blocked
    check "--no-inspect: active FTP works (inside-out admits the server's connection)" \
        ftp_get "$SV4" small.txt --ftp-port - --disable-eprt
    check "--no-inspect: TFTP read works (inside-out admits the server's reply)" \
        tftp_get "$SV4" small.txt
    check "--no-inspect: TFTP write to the server is not refused (no inspector reads the WRQ)" \
        tftp_put "$SV4" tftp-up.bin "no-inspect-$MODE.bin"
    check "--no-inspect: SIGTERM, clean stop" check_clean_stop

    # Offload mode for kernels without conntrack events: the rules queue offloaded
    # connections' FIN and RST, marked, and pinhole follows them.
    if [ "$MODE" = offload ]; then
        check "--offload-ends segments: pinhole starts; its rules queue offloaded connections' FIN and RST" \
            start_offload_ends_by_segments
        check "--offload-ends segments: the FINs of an offloaded data connection reach pinhole" \
            check_offload_ends_by_segments
        check "--offload-ends segments: SIGTERM, clean stop" check_clean_stop
        check "nf_conntrack_events=0: pinhole run --install-rules falls back to queueing FIN and RST, and says why" \
            check_fallback_to_segments
    fi
    if pinhole_alive; then
        ph_stop pinhole
        PINHOLE_PID=""
    fi
    purge_leftover_rules
    note "mode $MODE: $((SECONDS - t0)) s"
}

check_control_only() {
    session_open ctl || return 1
    session_do ctl noop
    local rc=$?
    session_close ctl
    return $rc
}

counter_at_most_zero() {
    local v
    v=$(pstat "$1") || return 1
    echo "$1 = $v"
    [ "$v" -eq 0 ]
}

# SIGSTOP: the queue fills and nobody gives verdicts; SIGCONT afterwards
# whatever happened.
stopped_blocks() {
    kill -STOP "$PINHOLE_PID" || return 1
    ftp_tftp_blocked
    local rc=$?
    kill -CONT "$PINHOLE_PID"
    return $rc
}

# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
main() {
    local t0=$SECONDS
    ph_init || exit 1
    start_watchdog 540
    mkdir -p "$PH_WORKDIR/checks"
    RULES=$PH_WORKDIR/rules.toml
    CTL=$PH_WORKDIR/ctl.sock
    STATE=$PH_WORKDIR/state.json
    note "pinhole e2e on NFQUEUE: $("$PINHOLE_BIN" --version), modes ${MODES[*]}, work dir $PH_WORKDIR"
    ph_versions | sed 's/^/# /'

    check "test bed: namespaces, content, vsftpd, tftpd-hpa, third host" setup_testbed ||
        { echo "Bail out! no test bed"; exit 1; }
    check "rules variants generated and checked (pinhole check-rules)" setup_rules ||
        { echo "Bail out! no rules"; exit 1; }

    local m
    for m in "${MODES[@]}"; do
        run_mode "$m"
    done

    finish_run "$t0" 60 0
}

setup_testbed() {
    ph_topology_up || return 1
    ph_add_third_host || return 1
    ph_content_init
    local d=$PH_WORKDIR
    ph_gen_bytes $((8 * 1024 * 1024)) 8 > "$d/ftp/big.bin"      # bulk, ABOR
    ph_gen_bytes $((1024 * 1024)) 9 > "$d/client/upload-1m.bin" # FTP uploads
    ph_gen_bytes 102400 10 > "$d/client/tftp-up.bin"            # TFTP writes
    chmod 0644 "$d/ftp/big.bin"
    ph_start_vsftpd plain || return 1
    ph_start_tftpd --port-range 30000:30009 || return 1
    # A TFTP server outside, for a device inside to back its config up to.
    ph_start_tftpd_in "$PH_NS_CLIENT" tftpd-out "$d/tftp-out" || return 1
    # The firewall's base policy, as on a real router: nothing is forwarded
    # unless pinhole's rules accept it, so a stopped pinhole stays closed.
    ph_in_fw iptables -P FORWARD DROP && ph_in_fw ip6tables -P FORWARD DROP || return 1
    # Without pinhole, nothing passes.
    curl_blocked
}

RULES_SHIPPED="" RULES_ANY_PORT="" RULES_WRITE="" RULES_ANY_PORT_WRITE="" RULES_BROKEN=""
BROKEN_LINE=""
setup_rules() {
    local d=$PH_WORKDIR/rules
    mkdir -p "$d"
    RULES_SHIPPED=$d/edge-router.toml
    cp "$REPO_DIR/rules/edge-router.toml" "$RULES_SHIPPED"
    # (a) tftpd-hpa started without --port-range answers from any port: drop
    #     the server_ports line (as the comment in the file says to).
    RULES_ANY_PORT=$d/any-port.toml
    sed '/^server_ports = /d' "$RULES_SHIPPED" > "$RULES_ANY_PORT"
    # (b) writes to the server allowed (the shipped policy is read-only).
    RULES_WRITE=$d/write.toml
    sed 's/^write = false/write = true/' "$RULES_SHIPPED" > "$RULES_WRITE"
    # (a) + (b)
    RULES_ANY_PORT_WRITE=$d/any-port-write.toml
    sed 's/^write = false/write = true/' "$RULES_ANY_PORT" > "$RULES_ANY_PORT_WRITE"
    # Broken: the first rule to the server names a zone that does not exist.
    RULES_BROKEN=$d/broken.toml
    sed '0,/^to = "server"/s//to = "nowhere"/' "$RULES_SHIPPED" > "$RULES_BROKEN"
    BROKEN_LINE=$(grep -n '^to = "nowhere"' "$RULES_BROKEN" | cut -d: -f1)
    local f rc=0
    for f in "$RULES_ANY_PORT" "$RULES_WRITE" "$RULES_ANY_PORT_WRITE" "$RULES_BROKEN"; do
        if cmp -s "$RULES_SHIPPED" "$f"; then
            echo "$(basename "$f"): sed changed nothing (rules/edge-router.toml changed?)"
            rc=1
        fi
    done
    grep -q '^server_ports = ' "$RULES_WRITE" || rc=1
    "$PINHOLE_BIN" check-rules "$RULES_SHIPPED" "$RULES_ANY_PORT" "$RULES_WRITE" \
        "$RULES_ANY_PORT_WRITE" || rc=1
    setup_policy_rules "$d" || rc=1
    if "$PINHOLE_BIN" check-rules "$RULES_BROKEN"; then
        echo "the broken variant passes check-rules"
        rc=1
    fi
    return $rc
}

main
