#!/usr/bin/env bash
#
# monitor.sh - end-to-end test of `pinhole monitor`: pinhole watching a live interface
# (AF_PACKET) in a firewall namespace that forwards everything, with its Prometheus metrics
# endpoint, its JSON Lines event log and its capture of the packets it would have dropped.
#
# Builds the test bed of scripts/netns-lib.sh (client <-> fw <-> server; the client is
# "outside" on wan0, the server "inside" on lan0), runs vsftpd and tftpd-hpa (--port-range
# 30000:30009) in the server namespace, lets the firewall forward everything (FORWARD policy
# ACCEPT, v4 and v6: nothing inline) and runs in it
#
#     pinhole monitor --iface wan0 --rules rules.toml --events events.jsonl
#                     --dump-drops drops.pcap --metrics 127.0.0.1:9465 -v
#
# where rules.toml is a copy of rules/edge-router.toml, the policy tests/e2e/nfqueue.sh runs
# inline. Then it checks, with real clients (curl, tftp-hpa, python sockets), that:
#   - transfers pass untouched (FTP PASV, EPSV, PORT, EPRT over IPv4, EPSV over IPv6, TFTP
#     reads over IPv4 and IPv6; contents compared with the originals), and the event log has
#     an `open` and a `use` pinhole record for each, with the right alg and a child flow that
#     is the pinhole's;
#   - what inline would drop is reported while it still flows: a SYN into the passive range
#     that no PASV announced (the server answers it with a reset) as a default_deny drop, an
#     FTP bounce (vsftpd answers the PORT) as an ftp_bounce violation, a TFTP write the
#     read-only policy forbids (the file arrives) as tftp_write_denied;
#   - the metrics endpoint: Prometheus text with HELP/TYPE, counters that agree with the
#     traffic, 404 elsewhere, listening on loopback only;
#   - SIGHUP after `mv events.jsonl events.jsonl.1` starts a fresh events.jsonl (and re-reads
#     the rules); SIGTERM exits 0 with a last `summary` record; every record keeps the
#     contract (file "iface:wan0", RFC 3339 "ts", verdict records for drops only);
#   - the drop capture reads back with tcpdump, pinhole replay and a pcap reader (nanosecond
#     pcap, Ethernet) and holds the unannounced SYN and the bounce PORT command;
#   - a second run with --events-rate 20 --events - under a flood of 3000 UDP datagrams no
#     rule allows: few verdict records, `suppressed` records (written + suppressed = dropped),
#     every drop still counted in the summary, and the drop capture rotated
#     (--dump-drops-size 1 --dump-drops-files 3);
#   - a third run with --format text prints readable lines.
# About 30 seconds.
#
# Usage:  tests/e2e/monitor.sh        (as root)
# Environment:
#   PINHOLE_BIN=path     the binary to test; default: `cargo build --locked --bin
#                        pinhole` first, then target/debug/pinhole
#   PH_PREFIX=phmon-     namespace name prefix (see scripts/netns-lib.sh)
#   PH_KEEP_WORKDIR=1    keep the work dir (logs, event logs, captures) after the run
#   E2E_TIME_LIMIT=300   seconds before the whole run is stopped
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
    echo "# skip: tests/e2e/monitor.sh needs root (network namespaces, AF_PACKET);" \
         "run it as root to test pinhole monitor"
    exit 0
fi
if [ $# -gt 0 ]; then
    echo "usage: $0   (no arguments; see the comment at its top for the environment)" >&2
    exit 2
fi

# --------------------------------------------------------------------------
# Test bed library, tools (installed if missing), pinhole
# --------------------------------------------------------------------------
: "${PH_PREFIX:=phmon-}"
# shellcheck source=scripts/netns-lib.sh
. "$REPO_DIR/scripts/netns-lib.sh"

ph_ensure_tools || { echo "Bail out! missing tools could not be installed"; exit 1; }

ph_pinhole_bin monitor || exit 1

# --------------------------------------------------------------------------
# Test bed
# --------------------------------------------------------------------------
SV4=$PH_SERVER_V4 SV6=$PH_SERVER_V6 CV4=$PH_CLIENT_V4 CV6=$PH_CLIENT_V6
FTP_PROBE=$E2E_DIR/ftp_probe.py
MC=$E2E_DIR/monitor_check.py

# Clients: never a proxy, bounded time, no URL globbing (IPv6 brackets).
CURL=(curl -sS --noproxy '*' --globoff --max-time 30)
# How long a TFTP transfer may take.
TFTP_WAIT=20
# How long a record may take to reach the event log, a counter the metrics.
EVENT_WAIT=5

# The monitor's source name in its records.
SOURCE=iface:$PH_IF_WAN
# The flood of the rate-limit run: datagrams, bytes each, the limit.
FLOOD_COUNT=3000
FLOOD_SIZE=1200
RATE=20

# --------------------------------------------------------------------------
# TAP-like reporting
# --------------------------------------------------------------------------
# shellcheck source=tests/e2e/tap.sh
. "$E2E_DIR/tap.sh"
PHASE=setup
tap_label() { echo "$PHASE"; }
tap_on_failure() { snapshot_metrics "$1"; }

# --------------------------------------------------------------------------
# pinhole monitor: start, stop, scrape
# --------------------------------------------------------------------------
RULES=""            # the file the monitor loads (a copy of rules/edge-router.toml)
RULES_SHIPPED=""    # rules/edge-router.toml as shipped (TFTP read-only)
RULES_WRITE=""      # the same with write = true
MON_PID=""
MON_OUT=""          # its stdout (events with --events -)
MON_LOG=""          # its stderr (logs)
MON_PORT=""         # its metrics port on 127.0.0.1
MON_T0=""           # when it was started (date +%s.%N)
MON_T1=""           # when it exited
EXIT_STATUS=""

mon_alive() {
    [ -n "$MON_PID" ] && kill -0 "$MON_PID" 2>/dev/null &&
        [ "$(ps -o stat= -p "$MON_PID" 2>/dev/null | cut -c1)" != Z ]
}

# scrape FILE [PATH]: GET http://127.0.0.1:MON_PORT/PATH (default metrics) from inside the fw
# namespace into FILE; false unless the answer is 200.
scrape() {
    ph_in_fw curl -sS -f --noproxy '*' --max-time 5 -o "$1" \
        "http://127.0.0.1:$MON_PORT/${2:-metrics}"
}

# prom_test EXPR: a fresh scrape satisfies EXPR (see monitor_check.py prom).
prom_test() {
    local f=$PH_WORKDIR/metrics-poll.txt
    scrape "$f" && python3 "$MC" prom -t "$f" "$1"
}

snapshot_metrics() {
    mon_alive || return 0
    local f=$PH_WORKDIR/metrics-snap.txt
    { echo "== after: $1"; scrape "$f" && grep -v '^#' "$f"; } \
        >> "$PH_WORKDIR/failure-metrics.txt" 2>&1
}

# mon_start NAME PORT [ARGS...]: start `pinhole monitor --iface wan0 --rules RULES --metrics
# 127.0.0.1:PORT ARGS -v` in the fw namespace, stdout to mon-NAME.out, stderr to mon-NAME.log
# (its pid is registered, so cleanup stops it). Ready when the metrics answer (at most 10 s;
# fails at once if it exits) and it has counted a packet (a ping from the client).
mon_start() {
    local name=$1 i
    MON_PORT=$2
    shift 2
    MON_OUT=$PH_WORKDIR/mon-$name.out
    MON_LOG=$PH_WORKDIR/mon-$name.log
    echo "pinhole monitor --iface $PH_IF_WAN --rules $RULES --metrics 127.0.0.1:$MON_PORT $* -v"
    echo "(stdout $MON_OUT, stderr $MON_LOG)"
    MON_T0=$(date +%s.%N)
    MON_T1=""
    # (bash execs pinhole: the registered pid is pinhole's; only stderr goes to the log.)
    # shellcheck disable=SC2016
    ph_start_bg monitor "$PH_NS_FW" "$MON_OUT" \
        bash -c 'log=$1; shift; exec "$@" 2>"$log"' monitor-stderr "$MON_LOG" \
        "$PINHOLE_BIN" monitor --iface "$PH_IF_WAN" --rules "$RULES" \
        --metrics "127.0.0.1:$MON_PORT" "$@" -v
    MON_PID=$PH_LAST_PID
    for ((i = 0; ; i++)); do
        if ! mon_alive; then
            echo "pinhole monitor exited during start-up:"
            tail -n 20 "$MON_LOG" "$MON_OUT"
            return 1
        fi
        scrape "$PH_WORKDIR/metrics-poll.txt" 2>/dev/null && break
        if [ "$i" -ge 100 ]; then
            echo "the metrics endpoint did not answer within 10 s:"
            tail -n 20 "$MON_LOG"
            return 1
        fi
        sleep 0.1
    done
    echo "metrics answer after $((i / 10)).$((i % 10)) s"
    for ((i = 0; i < 20; i++)); do
        ph_in_client ping -n -q -c 1 -W 1 "$SV4" >/dev/null 2>&1
        if prom_test "(m('pinhole_packets_total') or 0) > 0" >/dev/null 2>&1; then
            echo "capturing: pinhole_packets_total = $(mval "m('pinhole_packets_total')")"
            return 0
        fi
        sleep 0.2
    done
    echo "pinhole_packets_total stays 0 while the client pings the server"
    tail -n 20 "$MON_LOG"
    return 1
}

# mval EXPR: EXPR over a fresh scrape, printed.
mval() {
    local f=$PH_WORKDIR/metrics-val.txt
    scrape "$f" && python3 "$MC" prom "$f" "$1"
}

# wait_exit PID SECONDS: wait for a child to exit; its status in EXIT_STATUS.
wait_exit() {
    local pid=$1
    ph_wait_gone "$pid" "$2" || return 1
    wait "$pid" 2>/dev/null
    EXIT_STATUS=$?
}

# mon_signal_exit SIGNAL: send SIGNAL, wait for the exit, forget the pid; its exit status in
# EXIT_STATUS.
mon_signal_exit() {
    EXIT_STATUS=""
    kill "-$1" "$MON_PID" || return 1
    if ! wait_exit "$MON_PID" 10; then
        echo "pinhole monitor still running 10 s after SIG$1"
        return 1
    fi
    MON_T1=$(date +%s.%N)
    echo "pinhole monitor exited after SIG$1 with status $EXIT_STATUS"
    ph_stop monitor
    MON_PID=""
}

# mon_stopped_cleanly: SIGTERM, exit status 0.
mon_stopped_cleanly() {
    mon_signal_exit TERM || return 1
    [ "$EXIT_STATUS" = 0 ] || {
        echo "exit status $EXIT_STATUS, not 0; its log:"
        tail -n 20 "$MON_LOG"
        return 1
    }
}

# --------------------------------------------------------------------------
# The event log
# --------------------------------------------------------------------------
EV=""               # the first run's --events file
DUMP=""             # the first run's --dump-drops file

ev_lines() { if [ -f "$1" ]; then wc -l < "$1"; else echo 0; fi; }

# wait_events DESCRIPTION [--skip N] [--min K] PRED: wait (EVENT_WAIT s) until the event log
# EV has a record satisfying PRED (see monitor_check.py events), then print the matches.
wait_events() {
    local desc=$1
    shift
    ph_wait_for "$desc" "$EVENT_WAIT" python3 "$MC" events "$EV" "$@"
    python3 "$MC" events "$EV" "$@"
}

# Transfers and the use records attributed to them.
declare -A XFER_SKIP=()   # transfer name -> lines of the event log before it
USED_IDS=""               # ids of the use records already attributed to a transfer
FTP_DONE=0 TFTP_DONE=0    # transfers that completed intact

# events_used NAME USED_ARGS...: wait for the pinhole `use` record of transfer NAME (after
# the lines the log had before it; see monitor_check.py used), print it with its `open`.
events_used() {
    local name=$1 skip out rc
    shift
    skip=${XFER_SKIP[$name]:-0}
    ph_wait_for "pinhole use record for $name" "$EVENT_WAIT" \
        python3 "$MC" used "$EV" --skip "$skip" --exclude "$USED_IDS" "$@"
    out=$(python3 "$MC" used "$EV" --skip "$skip" --exclude "$USED_IDS" "$@")
    rc=$?
    echo "$out"
    [ "$rc" = 0 ] || return 1
    USED_IDS+="${USED_IDS:+,}$(awk '$1 == "id" { print $2 }' <<<"$out" | tail -n 1)"
}

# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------
# Run in the client namespace, in the client work dir.
client() { (cd "$PH_WORKDIR/client" && ph_in_client "$@"); }

# ftp_get HOST FILE [CURL_OPTIONS...]: download FILE, compare with the original.
ftp_get() {
    local host=$1 file=$2 out
    shift 2
    out=$PH_WORKDIR/client/ftp-got-$file
    rm -f "$out"
    client "${CURL[@]}" "$@" -o "$out" "ftp://$host/$file" &&
        cmp "$PH_WORKDIR/ftp/$file" "$out" && echo "$file: $(stat -c %s "$out") bytes, identical"
}

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

# curl's four ways to get an FTP data connection.
declare -A FTP_FLAGS=(
    [PASV]="--ftp-pasv --disable-epsv"
    [EPSV]="--ftp-pasv"
    [PORT]="--ftp-port - --disable-eprt"
    [EPRT]="--ftp-port -"
)
ftp_flags() { read -ra FLAGS <<<"${FTP_FLAGS[$1]}"; }

# ftp_xfer NAME HOST FILE [CURL_OPTIONS...]: a download that is also looked up in the event
# log (events_used NAME).
ftp_xfer() {
    local name=$1
    shift
    XFER_SKIP[$name]=$(ev_lines "$EV")
    ftp_get "$@" || return 1
    FTP_DONE=$((FTP_DONE + 1))
}

# tftp_xfer NAME [-6] HOST FILE: the same for a TFTP read.
tftp_xfer() {
    local name=$1
    shift
    XFER_SKIP[$name]=$(ev_lines "$EV")
    tftp_get "$@" || return 1
    TFTP_DONE=$((TFTP_DONE + 1))
}

# --------------------------------------------------------------------------
# Checks: what inline would drop, reported while it flows
# --------------------------------------------------------------------------
SYN_PORT=""

# A SYN into vsftpd's passive range that no PASV announced: the server answers it with a reset
# (so the monitor let it through: nothing listens there), and the monitor reports the drop
# inline would have made. (A packet of no tracked flow has "flow": null, as in a replay; the
# monitor adds the packet's own 5-tuple as "tuple".)
check_unannounced_syn() {
    local port=$((PH_PASV_MIN + 50)) skip
    while ph_listening "$PH_NS_SERVER" tcp "$port"; do port=$((port + 1)); done
    SYN_PORT=$port
    skip=$(ev_lines "$EV")
    client python3 "$FTP_PROBE" connect "$SV4" "$port" --timeout 3 --expect refused || return 1
    wait_events "default_deny drop of the SYN to $SV4:$port" --skip "$skip" \
        "r['type'] == 'verdict' and r['verdict'] == 'drop' and r['reason'] == 'default_deny' \
         and fl(r.get('flow') or r.get('tuple'), proto='tcp', src='$CV4', dst='$SV4', dport=$port)"
}

# FTP bounce (RFC 2577): PORT naming a third host. The monitor lets it through, so vsftpd
# answers it ("500 Illegal PORT command") and logs it; the monitor reports ftp_bounce.
check_bounce() {
    local skip out rc
    skip=$(ev_lines "$EV")
    out=$(client python3 "$FTP_PROBE" bounce "$SV4" "$PH_THIRD_V4" --timeout 5)
    rc=$?
    echo "$out"
    # (ftp_probe.py bounce exits 1 when the server answered.)
    if [ "$rc" != 1 ] || ! grep -q '^reply: 5' <<<"$out"; then
        echo "vsftpd did not answer the PORT command: the monitor is not passive?"
        return 1
    fi
    if ! grep -F "${PH_THIRD_V4//./,}" "$PH_WORKDIR/vsftpd-plain.log"; then
        echo "vsftpd's log does not show the PORT command"
        return 1
    fi
    wait_events "ftp_bounce violation" --skip "$skip" \
        "r['type'] == 'violation' and r['alg'] == 'ftp' and r['reason'] == 'ftp_bounce' \
         and fl(r['flow'], proto='tcp', src='$CV4', dst='$SV4', dport=21)"
}

# The monitor logs each transfer it watched, with the bytes it counted itself.
check_transfer_records() {
    wait_events "FTP transfer records" --min 5 \
        "r['type'] == 'transfer' and r['alg'] == 'ftp' and r['command'] == 'RETR' \
         and r['path'] == '/medium.bin' and r['bytes_down'] == 204800 and r['result'] == 'complete'" &&
    wait_events "TFTP transfer records" --min 2 \
        "r['type'] == 'transfer' and r['alg'] == 'tftp' and r['path'] == 'image.bin' \
         and r['bytes_down'] == 102400 and r['result'] == 'complete'"
}

# A TFTP write under the shipped read-only policy: the monitor lets it through (the file
# arrives intact) and reports tftp_write_denied (a violation and/or a drop record).
check_tftp_write_denied() {
    local skip
    skip=$(ev_lines "$EV")
    tftp_put "$SV4" tftp-up.bin monitored-write.bin || {
        echo "the write did not complete: the monitor is not passive?"
        return 1
    }
    wait_events "tftp_write_denied record" --skip "$skip" \
        "r['type'] in ('violation', 'verdict') and r['reason'] == 'tftp_write_denied' \
         and fl(r.get('flow') or r.get('tuple'), proto='udp', src='$CV4', dst='$SV4', dport=69)"
}

# --------------------------------------------------------------------------
# Checks: metrics
# --------------------------------------------------------------------------
METRIC_FAMILIES=(
    pinhole_up pinhole_info pinhole_packets_total pinhole_verdicts_total pinhole_drops_total
    pinhole_flows_opened_total pinhole_flows_closed_total pinhole_pinholes_total
    pinhole_violations_total pinhole_flows pinhole_pinholes pinhole_events_written_total
    pinhole_events_suppressed_total pinhole_dropdump_packets_total
    pinhole_capture_kernel_drops_total
)

check_metrics_http() {
    local hdr=$PH_WORKDIR/metrics.hdr body=$PH_WORKDIR/metrics.txt code ctype
    code=$(ph_in_fw curl -sS --noproxy '*' --max-time 5 -D "$hdr" -o "$body" \
        -w '%{http_code}' "http://127.0.0.1:$MON_PORT/metrics") || return 1
    tr -d '\r' < "$hdr"
    echo "status $code, $(wc -l < "$body") lines"
    [ "$code" = 200 ] || return 1
    ctype=$(tr -d '\r' < "$hdr" | awk -F': *' 'tolower($1) == "content-type" { print $2 }')
    if [[ $ctype != "text/plain; version=0.0.4"* ]]; then
        echo "Content-Type '$ctype', not 'text/plain; version=0.0.4'"
        return 1
    fi
    python3 "$MC" prom-format "$body" "${METRIC_FAMILIES[@]}"
}

# The counters agree with what happened so far.
METRIC_CONDS=()
metrics_agree() {
    local f=$PH_WORKDIR/metrics-agree.txt c
    scrape "$f" || return 1
    for c in "${METRIC_CONDS[@]}"; do
        python3 "$MC" prom -t "$f" "$c" || return 1
    done
}
check_metrics_counters() {
    local class="**{'class': 'events'}"
    METRIC_CONDS=(
        "m('pinhole_up') == 1"
        "m('pinhole_info', mode='monitor') == 1"
        "m('pinhole_packets_total') > 0"
        "m('pinhole_verdicts_total', verdict='accept') > 0"
        "m('pinhole_verdicts_total', verdict='drop') >= 3"
        "m('pinhole_pinholes_total', alg='ftp', outcome='opened') >= $FTP_DONE"
        "m('pinhole_pinholes_total', alg='ftp', outcome='used') >= $FTP_DONE"
        "m('pinhole_pinholes_total', alg='tftp', outcome='used') >= $((TFTP_DONE > 0 ? TFTP_DONE : 1))"
        "m('pinhole_drops_total', reason='default_deny') >= 1"
        "m('pinhole_drops_total', reason='tftp_write_denied') >= 1"
        "m('pinhole_drops_total', reason='fragment_overlap') == 0"
        "m('pinhole_violations_total', alg='ftp', reason='ftp_bounce') >= 1"
        "m('pinhole_flows_opened_total') >= $((FTP_DONE + TFTP_DONE))"
        "m('pinhole_flows') is not None and m('pinhole_pinholes') is not None"
        "m('pinhole_events_written_total', $class) > 0"
        "m('pinhole_dropdump_packets_total') >= 2"
        "m('pinhole_capture_kernel_drops_total') is not None"
    )
    local ok=0 f=$PH_WORKDIR/metrics-agree.txt c
    ph_wait_for "the counters" "$EVENT_WAIT" metrics_agree && ok=1
    echo "after $FTP_DONE FTP and $TFTP_DONE TFTP transfers:"
    grep -E '^pinhole_(up|info|packets_total|verdicts_total|pinholes_total|violations_total|flows|pinholes|flows_opened_total|dropdump|capture|events)' "$f" |
        sed 's/^/  /'
    grep -E '^pinhole_drops_total' "$f" | grep -v ' 0$' | sed 's/^/  /'
    echo "  ($(grep -c '^pinhole_drops_total' "$f") pinhole_drops_total series)"
    [ "$ok" = 1 ] && return 0
    for c in "${METRIC_CONDS[@]}"; do
        python3 "$MC" prom -t "$f" "$c" >/dev/null 2>&1 || echo "false: $c (${c%%)*}) = $(
            python3 "$MC" prom "$f" "${c%%)*})" 2>&1))"
    done
    return 1
}

check_metrics_404() {
    local code
    code=$(ph_in_fw curl -sS --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code}' \
        "http://127.0.0.1:$MON_PORT/nope") || return 1
    echo "GET /nope: $code"
    [ "$code" = 404 ]
}

# The listener is on 127.0.0.1 only: ss shows it there and nowhere else, and from the client
# the firewall's own addresses refuse the port.
check_metrics_loopback() {
    local ls
    ls=$(ph_in_fw ss -Hltn "sport = :$MON_PORT")
    echo "ss -ltn in $PH_NS_FW: $ls"
    [ -n "$ls" ] || return 1
    if awk '$4 != "127.0.0.1:'"$MON_PORT"'" { bad = 1 } END { exit !bad }' <<<"$ls"; then
        echo "a listener not on 127.0.0.1:$MON_PORT"
        return 1
    fi
    client python3 "$FTP_PROBE" connect "$PH_WAN_V4" "$MON_PORT" --expect refused &&
        client python3 "$FTP_PROBE" connect "$PH_WAN_V6" "$MON_PORT" --expect refused
}

# --------------------------------------------------------------------------
# Checks: SIGHUP, SIGTERM, the event log, the drop capture
# --------------------------------------------------------------------------
OLD_LINES=""
# logrotate: move the events file away, SIGHUP (with the write = true rules in place: it
# re-reads them too). A new events file appears; the monitor runs on.
check_hup_reopen() {
    mv "$EV" "$EV.1" || return 1
    cp "$RULES_WRITE" "$RULES"
    kill -HUP "$MON_PID" || return 1
    ph_wait_for "a new $EV" "$EVENT_WAIT" test -e "$EV" || {
        echo "no new $EV after SIGHUP; log:"
        tail -n 10 "$MON_LOG"
        return 1
    }
    sleep 0.5
    mon_alive || { echo "the monitor died"; return 1; }
    OLD_LINES=$(wc -l < "$EV.1")
    echo "new $(basename "$EV") created; the old one has $OLD_LINES lines"
    grep -i -E 'reopen|reload|hup' "$MON_LOG" | tail -n 5 || true
}

# A transfer after the SIGHUP: its records go to the new file, none to the old one.
check_after_hup() {
    XFER_SKIP[after-hup]=0
    ftp_xfer after-hup "$SV4" small.txt --ftp-pasv --disable-epsv || return 1
    events_used after-hup --alg ftp --proto tcp --src "$CV4" --dst "$SV4" \
        --dport "$PH_PASV_MIN-$PH_PASV_MAX" || return 1
    local now
    now=$(wc -l < "$EV.1")
    if [ "$now" != "$OLD_LINES" ]; then
        echo "the old file grew after the reopen: $OLD_LINES -> $now lines:"
        tail -n "+$((OLD_LINES + 1))" "$EV.1" | head -n 5
        return 1
    fi
    echo "the old file still has $now lines"
}

# The SIGHUP re-read the rules (write = true): a TFTP write is no longer refused, and its
# transfer comes in through a pinhole.
check_hup_rules() {
    local skip
    skip=$(ev_lines "$EV")
    XFER_SKIP[write]=$skip
    tftp_put "$SV4" tftp-up.bin write-after-hup.bin || return 1
    events_used write --alg tftp --proto udp --src "$SV4" --dst "$CV4" || {
        echo "no TFTP pinhole for the write: the rules were not re-read?"
        return 1
    }
    if python3 "$MC" events "$EV" --skip "$skip" "r.get('reason') == 'tftp_write_denied'"; then
        echo "^ tftp_write_denied after the reload to write = true"
        return 1
    fi
}

check_sigterm_summary() {
    mon_stopped_cleanly || return 1
    echo "last record: $(tail -n 1 "$EV")"
    python3 "$MC" jl -t "$EV" "recs[-1]['type'] == 'summary' and recs[-1]['file'] == '$SOURCE' \
        and recs[-1]['dropped'] >= 1 and recs[-1]['truncated'] is False \
        and recs[-1]['packets'] >= recs[-1]['accepted'] + recs[-1]['dropped'] \
        and recs[-1]['pinholes_used'] >= $((FTP_DONE + TFTP_DONE)) \
        and recs[-1]['drops'].get('default_deny', 0) >= 1 \
        and sum(1 for r in recs if r['type'] == 'summary') == 1"
}

check_lifecycle_info() {
    grep -E 'pinhole monitoring|stopping' "$MON_LOG"
    grep -qE ' INFO pinhole::lifecycle: pinhole monitoring' "$MON_LOG" &&
        grep -qE ' INFO pinhole::lifecycle: stopping' "$MON_LOG" &&
        ! grep -E 'WARN.*(pinhole monitoring|stopping)' "$MON_LOG"
}

check_events_format() {
    local f rc=0
    for f in "$EV.1" "$EV"; do
        echo "$(basename "$f"):"
        python3 "$MC" format "$f" --file "$SOURCE" --no-flows || rc=1
    done
    return $rc
}

check_dump_tcpdump() {
    local out
    out=$(tcpdump -nr "$DUMP" 2>&1) || { echo "$out" | tail -n 5; return 1; }
    echo "$out" | head -n 20
    echo "... $(wc -l <<<"$out") lines"
    if ! grep -F "> $SV4.$SYN_PORT: Flags [S]" <<<"$out"; then
        echo "tcpdump shows no SYN to $SV4.$SYN_PORT"
        return 1
    fi
}

check_dump_contents() {
    python3 "$MC" pcap "$DUMP" | head -n 40
    python3 "$MC" pcap -t "$DUMP" "hdr['magic'] == 0xa1b23c4d and hdr['endian'] == 'little' \
        and hdr['linktype'] == 1 and not hdr.get('trailing') and not hdr.get('truncated')" ||
        { echo "not a little-endian nanosecond pcap of Ethernet frames"; return 1; }
    python3 "$MC" pcap -t "$DUMP" "any(p['proto'] == 'tcp' and p['src'] == '$CV4' \
        and p['dst'] == '$SV4' and p['dport'] == $SYN_PORT and 'S' in p['flags'] \
        and 'A' not in p['flags'] for p in pk)" ||
        { echo "no SYN to $SV4:$SYN_PORT"; return 1; }
    python3 "$MC" pcap -t "$DUMP" "any(p['proto'] == 'tcp' and p['dst'] == '$SV4' \
        and p['dport'] == 21 and b'PORT ${PH_THIRD_V4//./,},' in p['payload'] for p in pk)" ||
        { echo "no packet carrying the bounce PORT command"; return 1; }
    echo "the SYN to port $SYN_PORT and the bounce PORT command are there"
}

check_dump_replay() {
    local out=$PH_WORKDIR/replay-drops.jsonl rc n
    "$PINHOLE_BIN" replay --rules "$RULES" --verdicts "$DUMP" > "$out" 2> "$out.err"
    rc=$?
    echo "pinhole replay exit status $rc"
    tail -n 3 "$out" "$out.err"
    [ "$rc" = 0 ] || return 1
    n=$(python3 "$MC" pcap "$DUMP" "len(pk)") || return 1
    python3 "$MC" jl -t "$out" "[r for r in recs if r['type'] == 'summary'][-1]['packets'] == $n \
        and sum(1 for r in recs if r['type'] == 'verdict') == $n" || {
        echo "the replay did not read the $n packets"
        return 1
    }
}

# --------------------------------------------------------------------------
# The rate-limit run
# --------------------------------------------------------------------------
RDUMP=""
LOST=""
# About 2000 datagrams a second (bursts of 20 every 10 ms): the limit, not the capture, is
# what is tested.
check_flood() {
    client python3 "$MC" flood "$SV4" 9 "$FLOOD_COUNT" --size "$FLOOD_SIZE" \
        --burst 20 --gap 0.01 || return 1
    sleep 1.5
    local f=$PH_WORKDIR/metrics-flood.txt
    scrape "$f" || return 1
    grep -E '^pinhole_(packets_total|verdicts_total|events_|dropdump|capture)' "$f"
    # Records the writer could not keep up with (counted apart from the rate limit).
    LOST=$(python3 "$MC" prom "$f" "int(m('pinhole_events_lost_total') or 0)") || LOST=0
    mon_stopped_cleanly
}

check_rate_limited() {
    local elapsed limit n
    elapsed=$(awk -v a="$MON_T0" -v b="$MON_T1" 'BEGIN { printf "%d", b - a + 1 }')
    limit=$((RATE * (elapsed + 2)))
    n=$(python3 "$MC" jl "$MON_OUT" "sum(1 for r in recs if r['type'] == 'verdict')") || {
        head -c 600 "$MON_OUT"
        return 1
    }
    echo "monitor ran about $elapsed s: $n verdict records (at most $limit allowed)"
    python3 "$MC" events "$MON_OUT" "r['type'] == 'suppressed'" || true
    [ "$n" -le "$limit" ] || return 1
    python3 "$MC" jl -t "$MON_OUT" "sum(r['count'] for r in recs if r['type'] == 'suppressed' \
        and r['class'] == 'drops' and r['file'] == '$SOURCE') > 0 \
        and all(r['count'] > 0 for r in recs if r['type'] == 'suppressed')" || {
        echo "no suppressed record of class drops with count > 0"
        return 1
    }
    # What was left out is reported at most once a second per class (plus the last report at
    # the stop), not once per record let through.
    local reports
    reports=$(python3 "$MC" jl "$MON_OUT" "sum(1 for r in recs if r['type'] == 'suppressed' \
        and r['class'] == 'drops')") || return 1
    echo "$reports suppressed records of class drops in about $elapsed s"
    [ "$reports" -le $((elapsed + 2)) ] || { echo "more than one suppressed record a second"; return 1; }
    # Every drop is either written or counted as suppressed (or lost: the writer fell behind).
    local acct
    acct=$(python3 "$MC" jl "$MON_OUT" "[sum(1 for r in recs if r['type'] == 'verdict'), \
        sum(r['count'] for r in recs if r['type'] == 'suppressed' and r['class'] == 'drops'), \
        recs[-1].get('dropped')]") || return 1
    echo "[verdict records, suppressed drops, summary dropped] = $acct; lost $LOST"
    python3 -c "import json, sys; v, s, d = json.loads(sys.argv[1]); \
        sys.exit(0 if d is not None and v + s + int(sys.argv[2]) == d else 1)" "$acct" "${LOST:-0}" ||
        { echo "written + suppressed + lost != dropped"; return 1; }
}

check_flood_counted() {
    echo "summary: $(tail -n 1 "$MON_OUT")"
    python3 "$MC" jl -t "$MON_OUT" "recs[-1]['type'] == 'summary' \
        and recs[-1]['file'] == '$SOURCE' and recs[-1]['dropped'] >= $FLOOD_COUNT \
        and recs[-1]['drops'].get('default_deny', 0) >= $FLOOD_COUNT"
}

# --dump-drops-size 1 --dump-drops-files 3 with some 3.6 MiB of drops: three files, each at
# most 1 MiB and a pcap of its own.
check_dump_rotated() {
    local f rc=0 size
    ls -l "$RDUMP"* 2>&1
    for f in "$RDUMP" "$RDUMP.1" "$RDUMP.2"; do
        [ -f "$f" ] || { echo "$f missing"; rc=1; continue; }
        size=$(stat -c %s "$f")
        [ "$size" -le $((1024 * 1024)) ] || { echo "$f: $size bytes > 1 MiB"; rc=1; }
        python3 "$MC" pcap -t "$f" "hdr['linktype'] == 1 and len(pk) > 0 \
            and not hdr.get('trailing') and not hdr.get('truncated')" ||
            { echo "$f is not a whole pcap with packets"; rc=1; }
    done
    [ -e "$RDUMP.3" ] && { echo "$RDUMP.3 kept beyond --dump-drops-files 3"; rc=1; }
    return $rc
}

# --------------------------------------------------------------------------
# The text run
# --------------------------------------------------------------------------
check_text_output() {
    client python3 "$FTP_PROBE" connect "$SV4" "$SYN_PORT" --timeout 3 --expect refused ||
        return 1
    sleep 1
    mon_stopped_cleanly || return 1
    head -n 20 "$MON_OUT"
    if grep -q '^{' "$MON_OUT"; then
        echo "JSON lines in --format text output"
        return 1
    fi
    grep -F default_deny "$MON_OUT" | grep -w DROP | grep -F "$SV4:$SYN_PORT" || {
        echo "no DROP default_deny line for the SYN to $SV4:$SYN_PORT"
        return 1
    }
}

# --------------------------------------------------------------------------
# The workers run: three monitors side by side on the same traffic
# --------------------------------------------------------------------------
# W_NAMES: one monitor with --workers 1 (the reference), one with --workers 2 (the ring), one
# with --workers 2 --no-ring (recvmsg). All three watch wan0 at once, so they judge the very
# same frames; their counters and event logs must agree.
W_NAMES=(w1 w2 w2r)
declare -A W_ARGS=([w1]="--workers 1" [w2]="--workers 2" [w2r]="--workers 2 --no-ring")
declare -A W_PORT=([w1]=9468 [w2]=9469 [w2r]=9470)
declare -A W_PID=() W_LOG=() W_EV=() W_SKIP=()
# Extra client addresses, so that more address pairs than two spread over the workers.
W_EXTRA_V4=(198.51.100.11 198.51.100.12 198.51.100.13 198.51.100.14 198.51.100.15 198.51.100.16)
W_EXTRA_V6=(2001:db8:100::11 2001:db8:100::12 2001:db8:100::13)

w_alive() {
    local pid=${W_PID[$1]:-}
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
        [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" != Z ]
}

# w_scrape NAME FILE
w_scrape() {
    ph_in_fw curl -sS -f --noproxy '*' --max-time 5 -o "$2" \
        "http://127.0.0.1:${W_PORT[$1]}/metrics"
}

# w_start NAME: start monitor NAME (see W_ARGS) with its event log and metrics; ready when
# its metrics answer.
w_start() {
    local name=$1 i
    local -a args
    read -ra args <<<"${W_ARGS[$name]}"
    W_LOG[$name]=$PH_WORKDIR/workers/$name.log
    W_EV[$name]=$PH_WORKDIR/workers/$name.jsonl
    echo "pinhole monitor --iface $PH_IF_WAN --rules $RULES ${args[*]} --events ${W_EV[$name]} --metrics 127.0.0.1:${W_PORT[$name]} -v"
    # shellcheck disable=SC2016
    ph_start_bg "monitor-$name" "$PH_NS_FW" "$PH_WORKDIR/workers/$name.out" \
        bash -c 'log=$1; shift; exec "$@" 2>"$log"' monitor-stderr "${W_LOG[$name]}" \
        "$PINHOLE_BIN" monitor --iface "$PH_IF_WAN" --rules "$RULES" "${args[@]}" \
        --events "${W_EV[$name]}" --metrics "127.0.0.1:${W_PORT[$name]}" -v
    W_PID[$name]=$PH_LAST_PID
    for ((i = 0; i < 100; i++)); do
        w_alive "$name" || { echo "$name exited:"; tail -n 20 "${W_LOG[$name]}"; return 1; }
        w_scrape "$name" "$PH_WORKDIR/workers/poll.txt" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$name: the metrics endpoint did not answer within 10 s"
    return 1
}

check_workers_start() {
    local name
    mkdir -p "$PH_WORKDIR/workers"
    for name in "${W_NAMES[@]}"; do
        w_start "$name" || return 1
    done
    # Every monitor counts packets (a few pings), then the link is left quiet and the
    # starting point of each is taken.
    local ok=0
    for ((i = 0; i < 20; i++)); do
        ph_in_client ping -n -q -c 1 -W 1 "$SV4" >/dev/null 2>&1
        ok=1
        for name in "${W_NAMES[@]}"; do
            w_scrape "$name" "$PH_WORKDIR/workers/poll.txt" &&
                python3 "$MC" prom -t "$PH_WORKDIR/workers/poll.txt" \
                    "(m('pinhole_packets_total') or 0) > 0" >/dev/null || ok=0
        done
        [ "$ok" = 1 ] && break
        sleep 0.2
    done
    [ "$ok" = 1 ] || { echo "not every monitor counts the pings"; return 1; }
    sleep 1
    for name in "${W_NAMES[@]}"; do
        w_scrape "$name" "$PH_WORKDIR/workers/$name-0.txt" || return 1
        W_SKIP[$name]=$(ev_lines "${W_EV[$name]}")
    done
    echo "all three count packets; starting points taken"
}

# The ring path is the one used (and the fanout group made), or recvmsg when asked.
check_workers_reader() {
    grep -h 'capture:' "${W_LOG[w1]}" "${W_LOG[w2]}" "${W_LOG[w2r]}"
    grep -q 'INFO pinhole::lifecycle: capture: TPACKET_V3 ring per worker .*workers=1 fanout_group="none"' "${W_LOG[w1]}" &&
        grep -qE 'INFO pinhole::lifecycle: capture: TPACKET_V3 ring per worker .*workers=2 fanout_group="[0-9]+"' "${W_LOG[w2]}" &&
        grep -qE 'INFO pinhole::lifecycle: capture: recvmsg, one frame per call \(--no-ring\) .*workers=2 fanout_group="[0-9]+"' "${W_LOG[w2r]}" &&
        ! grep -h 'could not be set up' "${W_LOG[w1]}" "${W_LOG[w2]}" "${W_LOG[w2r]}"
}

# w_ftp_from ADDR MODE HOST: an FTP download bound to ADDR (curl --interface), compared.
w_ftp_from() {
    local from=$1 mode=$2 host=$3
    ftp_flags "$mode"
    ftp_get "$host" medium.bin --interface "$from" "${FLAGS[@]}"
}

W_XFERS=0
check_workers_traffic() {
    local a m i=0 rc=0 modes=(PASV EPSV PORT EPRT)
    for a in "${W_EXTRA_V4[@]}"; do
        # Each address in two of the four modes, every mode from three addresses.
        for m in "${modes[$((i % 4))]}" "${modes[$(((i + 1) % 4))]}"; do
            w_ftp_from "$a" "$m" "$SV4" >/dev/null || { echo "FTP $m from $a failed"; rc=1; }
            W_XFERS=$((W_XFERS + 1))
        done
        i=$((i + 1))
    done
    for m in PASV EPSV PORT EPRT; do
        w_ftp_from "$CV4" "$m" "$SV4" >/dev/null || { echo "FTP $m from $CV4 failed"; rc=1; }
        W_XFERS=$((W_XFERS + 1))
    done
    for a in "${W_EXTRA_V6[@]}"; do
        for m in EPSV EPRT; do
            w_ftp_from "$a" "$m" "[$SV6]" >/dev/null || { echo "FTP $m from $a failed"; rc=1; }
            W_XFERS=$((W_XFERS + 1))
        done
    done
    tftp_get "$SV4" image.bin >/dev/null || { echo "TFTP read over IPv4 failed"; rc=1; }
    tftp_get -6 "$SV6" image.bin >/dev/null || { echo "TFTP read over IPv6 failed"; rc=1; }
    tftp_get "$SV4" small.txt >/dev/null || { echo "TFTP read of small.txt failed"; rc=1; }
    W_XFERS=$((W_XFERS + 3))
    # What inline would drop: a write the rules forbid, an FTP bounce, an unannounced SYN.
    tftp_put "$SV4" tftp-up.bin workers-write.bin >/dev/null || { echo "TFTP write failed"; rc=1; }
    client python3 "$FTP_PROBE" bounce "$SV4" "$PH_THIRD_V4" --timeout 5 >/dev/null
    client python3 "$FTP_PROBE" connect "$SV4" "$((PH_PASV_MIN + 50))" --timeout 3 \
        --expect refused >/dev/null || rc=1
    echo "$W_XFERS transfers, a refused write, a bounce, an unannounced SYN"
    return $rc
}

# Wait until every monitor has judged as many packets as the others (the rings hand over
# within 20 ms; recvmsg at once), then take the end points.
w_settled() {
    local name f values=()
    for name in "${W_NAMES[@]}"; do
        f=$PH_WORKDIR/workers/$name-1.txt
        w_scrape "$name" "$f" || return 1
        values+=("$(python3 "$MC" prom-delta "$PH_WORKDIR/workers/$name-0.txt" "$f" \
            "m('pinhole_packets_total')")")
    done
    echo "packets judged since the start: ${values[*]}"
    [ "${values[0]}" = "${values[1]}" ] && [ "${values[0]}" = "${values[2]}" ]
}

check_workers_same_counters() {
    sleep 1
    ph_wait_for "the three monitors to have judged as many packets" 10 w_settled
    w_settled
    python3 "$MC" prom-same "$PH_WORKDIR/workers/w1-0.txt" "$PH_WORKDIR/workers/w1-1.txt" \
        "$PH_WORKDIR/workers/w2-0.txt" "$PH_WORKDIR/workers/w2-1.txt" \
        "$PH_WORKDIR/workers/w2r-0.txt" "$PH_WORKDIR/workers/w2r-1.txt"
}

check_workers_spread() {
    local name rc=0
    for name in w2 w2r; do
        echo "$name: packets judged by worker 0 and worker 1: $(
            python3 "$MC" prom-delta "$PH_WORKDIR/workers/$name-0.txt" \
                "$PH_WORKDIR/workers/$name-1.txt" \
                "[m('pinhole_packets_total', worker=0), m('pinhole_packets_total', worker=1)]")"
        python3 "$MC" prom-delta -t "$PH_WORKDIR/workers/$name-0.txt" \
            "$PH_WORKDIR/workers/$name-1.txt" \
            "m('pinhole_packets_total', worker=0) > 0 and m('pinhole_packets_total', worker=1) > 0" ||
            rc=1
        python3 "$MC" prom -t "$PH_WORKDIR/workers/$name-1.txt" \
            "m('pinhole_workers') == 2 and m('pinhole_workers_answered') == 2 \
             and m('pinhole_capture_worker_kernel_packets_total', worker=0) > 0 \
             and m('pinhole_capture_worker_kernel_packets_total', worker=1) > 0" || rc=1
    done
    # Every FTP transfer and TFTP read was seen whole by the worker of its pair.
    python3 "$MC" prom-delta -t "$PH_WORKDIR/workers/w2-0.txt" "$PH_WORKDIR/workers/w2-1.txt" \
        "m('pinhole_pinholes_total', outcome='used') >= $W_XFERS \
         and m('pinhole_drops_total', reason='tftp_write_denied') >= 1 \
         and m('pinhole_violations_total', reason='ftp_bounce') >= 1 \
         and m('pinhole_drops_total', reason='default_deny') >= 1" || {
        echo "pinholes used, refusals: not what the traffic gives"
        rc=1
    }
    return $rc
}

check_workers_no_kernel_drops() {
    local name rc=0
    for name in "${W_NAMES[@]}"; do
        echo "$name: kernel drops $(python3 "$MC" prom "$PH_WORKDIR/workers/$name-1.txt" \
            "m('pinhole_capture_kernel_drops_total')"), ring freezes $(python3 "$MC" prom \
            "$PH_WORKDIR/workers/$name-1.txt" "m('pinhole_capture_ring_freezes_total')")"
        python3 "$MC" prom -t "$PH_WORKDIR/workers/$name-1.txt" \
            "m('pinhole_capture_kernel_drops_total') == 0" || rc=1
    done
    return $rc
}

check_workers_same_events() {
    local name rc=0
    for name in w2 w2r; do
        echo "w1 vs $name:"
        python3 "$MC" events-same "${W_EV[w1]}" "${W_SKIP[w1]}" "${W_EV[$name]}" \
            "${W_SKIP[$name]}" || rc=1
    done
    return $rc
}

# SIGHUP reaches every worker: the write = true rules; a write then opens a pinhole on
# whichever worker holds the pair, in all three monitors.
check_workers_reload() {
    local name
    cp "$RULES_WRITE" "$RULES"
    for name in "${W_NAMES[@]}"; do
        w_scrape "$name" "$PH_WORKDIR/workers/$name-2.txt" || return 1
        kill -HUP "${W_PID[$name]}" || return 1
    done
    ph_wait_for "rules reloaded in every monitor" 5 bash -c \
        'for f in "$@"; do grep -q "rules reloaded" "$f" || exit 1; done' - \
        "${W_LOG[w1]}" "${W_LOG[w2]}" "${W_LOG[w2r]}" || return 1
    sleep 0.3
    local a
    for a in "${W_EXTRA_V4[@]:0:4}"; do
        # (tftp-hpa cannot choose its address: monitor_check.py writes from each.)
        client python3 "$MC" tftp-put "$SV4" "after-hup-${a##*.}.bin" --bind "$a" \
            --size 3000 || return 1
    done
    sleep 1
    for name in "${W_NAMES[@]}"; do
        w_scrape "$name" "$PH_WORKDIR/workers/$name-3.txt" || return 1
        echo "$name: tftp pinholes used after the reload: $(python3 "$MC" prom-delta \
            "$PH_WORKDIR/workers/$name-2.txt" "$PH_WORKDIR/workers/$name-3.txt" \
            "m('pinhole_pinholes_total', alg='tftp', outcome='used')"), write denials: $(
            python3 "$MC" prom-delta "$PH_WORKDIR/workers/$name-2.txt" \
                "$PH_WORKDIR/workers/$name-3.txt" "m('pinhole_drops_total', reason='tftp_write_denied')")"
        python3 "$MC" prom-delta -t "$PH_WORKDIR/workers/$name-2.txt" \
            "$PH_WORKDIR/workers/$name-3.txt" \
            "m('pinhole_pinholes_total', alg='tftp', outcome='used') >= 4 \
             and m('pinhole_drops_total', reason='tftp_write_denied') == 0" || return 1
    done
}

check_workers_stop() {
    local name rc=0
    for name in "${W_NAMES[@]}"; do
        kill -TERM "${W_PID[$name]}" || rc=1
    done
    for name in "${W_NAMES[@]}"; do
        if ! wait_exit "${W_PID[$name]}" 10; then
            echo "$name still running 10 s after SIGTERM"
            rc=1
            continue
        fi
        echo "$name: exit status $EXIT_STATUS; $(grep -c 'capture counters' "${W_LOG[$name]}") capture counter lines; last record: $(tail -n 1 "${W_EV[$name]}" | cut -c1-160)..."
        [ "$EXIT_STATUS" = 0 ] || rc=1
        python3 "$MC" jl -t "${W_EV[$name]}" "recs[-1]['type'] == 'summary' \
            and recs[-1]['capture']['kernel_drops'] == 0 \
            and recs[-1]['capture']['kernel_packets'] >= recs[-1]['packets']" || rc=1
    done
    [ "$(grep -c 'INFO pinhole::lifecycle: capture counters' "${W_LOG[w2]}")" = 2 ] || rc=1
    ph_stop monitor-w1
    ph_stop monitor-w2
    ph_stop monitor-w2r
    return $rc
}

# An interface that goes away ends the monitor with an error (systemd restarts it), with both
# workers on the ring; it does not spin on a socket in error.
check_iface_gone() {
    local pid out=$PH_WORKDIR/workers/gone.log
    ph_in_fw ip link add phgone0 type veth peer name phgone1 &&
        ph_in_fw ip link set phgone0 up || return 1
    ph_start_bg monitor-gone "$PH_NS_FW" "$out" \
        "$PINHOLE_BIN" monitor --iface phgone0 --workers 2 --events /dev/null
    pid=$PH_LAST_PID
    sleep 1
    kill -0 "$pid" || { echo "it did not start:"; tail -n 5 "$out"; return 1; }
    ph_in_fw ip link del phgone0 || return 1
    if ! wait_exit "$pid" 5; then
        echo "still running 5 s after its interface was deleted: $(ps -o pcpu=,stat= -p "$pid")"
        ph_stop monitor-gone
        return 1
    fi
    ph_stop monitor-gone
    echo "exit status $EXIT_STATUS: $(grep -E 'pinhole monitor:' "$out")"
    [ "$EXIT_STATUS" = 1 ] && grep -q 'pinhole monitor: capturing on phgone0: Network is down' "$out"
}

run_workers() {
    PHASE=workers
    cp "$RULES_SHIPPED" "$RULES"
    local a
    for a in "${W_EXTRA_V4[@]}"; do
        ph_in_client ip addr add "$a/24" dev "$PH_IF_CLIENT" || return
    done
    for a in "${W_EXTRA_V6[@]}"; do
        ph_in_client ip -6 addr add "$a/64" dev "$PH_IF_CLIENT" nodad || return
    done
    if ! check "three monitors on $PH_IF_WAN at once: --workers 1, --workers 2, --workers 2 --no-ring" \
            check_workers_start; then
        ph_stop monitor-w1
        ph_stop monitor-w2
        ph_stop monitor-w2r
        return
    fi
    check "the ring is used (one fanout group for two workers); --no-ring reads with recvmsg" \
        check_workers_reader
    check "FTP PASV, EPSV, PORT, EPRT from 7 IPv4 and 3 IPv6 client addresses, TFTP reads and a write, a bounce, an unannounced SYN" \
        check_workers_traffic
    check "the three judged the same packets with the same outcome: verdicts, drops by reason, pinholes opened/used/refused, violations" \
        check_workers_same_counters
    check "with two workers, both judged packets (pinhole_packets_total by worker), and every transfer's pinhole was used" \
        check_workers_spread
    check "no kernel drops in any of the three (else the comparison would not hold)" \
        check_workers_no_kernel_drops
    check "event logs: the same pinhole open/use, violation, notice and drop records with two workers as with one" \
        check_workers_same_events
    check "SIGHUP reaches every worker: after the reload to write = true, TFTP writes from four addresses open pinholes in all three" \
        check_workers_reload
    check "SIGTERM: each exits 0 with a summary record carrying the capture counters; per-worker capture counters in the log" \
        check_workers_stop
    check "an interface deleted under a two-worker monitor: exit status 1, 'Network is down', no spinning" \
        check_iface_gone
}

# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
setup_testbed() {
    ph_topology_up || return 1
    ph_content_init
    ph_gen_bytes 102400 10 > "$PH_WORKDIR/client/tftp-up.bin"   # TFTP writes
    ph_start_vsftpd plain || return 1
    ph_start_tftpd --port-range 30000:30009 || return 1
    # The firewall forwards everything: the monitor only watches.
    ph_in_fw iptables -P FORWARD ACCEPT && ph_in_fw ip6tables -P FORWARD ACCEPT || return 1
    ph_in_fw iptables -S FORWARD
    ph_in_fw ip6tables -S FORWARD
    # Without pinhole, transfers work.
    ftp_get "$SV4" small.txt --ftp-pasv --disable-epsv && tftp_get "$SV4" small.txt
}

setup_rules() {
    local d=$PH_WORKDIR/rules
    mkdir -p "$d"
    RULES_SHIPPED=$d/edge-router.toml
    cp "$REPO_DIR/rules/edge-router.toml" "$RULES_SHIPPED"
    RULES_WRITE=$d/write.toml
    sed 's/^write = false/write = true/' "$RULES_SHIPPED" > "$RULES_WRITE"
    if cmp -s "$RULES_SHIPPED" "$RULES_WRITE"; then
        echo "write.toml: sed changed nothing (rules/edge-router.toml changed?)"
        return 1
    fi
    # tftpd-hpa runs with --port-range 30000:30009, as the shipped server_ports say.
    grep -q '^server_ports = "30000-30009"' "$RULES_SHIPPED" || return 1
    RULES=$PH_WORKDIR/rules.toml
    cp "$RULES_SHIPPED" "$RULES"
    "$PINHOLE_BIN" check-rules "$RULES_SHIPPED" "$RULES_WRITE"
}

run_monitor() {
    PHASE=monitor
    mkdir -p "$PH_WORKDIR/mon"
    EV=$PH_WORKDIR/mon/events.jsonl
    DUMP=$PH_WORKDIR/mon/drops.pcap
    if ! check "monitor starts in $PH_NS_FW on $PH_IF_WAN (events file, drop capture, metrics on 127.0.0.1:9465) and counts packets" \
            mon_start main 9465 --events "$EV" --dump-drops "$DUMP"; then
        note "the monitor did not start: skipping the checks that need it"
        ph_stop monitor
        MON_PID=""
        return
    fi

    # Transfers pass untouched; the event log has their pinholes.
    local m
    for m in PASV EPSV PORT EPRT; do
        ftp_flags "$m"
        check "FTP $m download over IPv4 passes (curl ${FTP_FLAGS[$m]})" \
            ftp_xfer "$m" "$SV4" medium.bin "${FLAGS[@]}"
    done
    ftp_flags EPSV
    check "FTP EPSV download over IPv6 passes" ftp_xfer EPSV-v6 "[$SV6]" medium.bin "${FLAGS[@]}"
    check "TFTP read over IPv4 passes" tftp_xfer tftp-v4 "$SV4" image.bin
    check "TFTP read over IPv6 passes" tftp_xfer tftp-v6 -6 "$SV6" image.bin
    check "events: transfer records of the downloads with the files' sizes (5 FTP medium.bin, 2 TFTP image.bin)" \
        check_transfer_records

    local pasv=(--alg ftp --proto tcp --src "$CV4" --dst "$SV4" --dport "$PH_PASV_MIN-$PH_PASV_MAX")
    local port=(--alg ftp --proto tcp --src "$SV4" --dst "$CV4" --child-sport 20)
    check "events: ftp pinhole open + use for the PASV transfer, child flow $CV4 -> $SV4:passive port" \
        events_used PASV "${pasv[@]}"
    check "events: ftp pinhole open + use for the EPSV transfer" events_used EPSV "${pasv[@]}"
    check "events: ftp pinhole open + use for the PORT transfer, child flow $SV4:20 -> $CV4" \
        events_used PORT "${port[@]}"
    check "events: ftp pinhole open + use for the EPRT transfer" events_used EPRT "${port[@]}"
    check "events: ftp pinhole open + use for the IPv6 EPSV transfer" \
        events_used EPSV-v6 --alg ftp --proto tcp --src "$CV6" --dst "$SV6" \
        --dport "$PH_PASV_MIN-$PH_PASV_MAX"
    check "events: tftp pinhole open + use for the IPv4 read, child flow from the server" \
        events_used tftp-v4 --alg tftp --proto udp --src "$SV4" --dst "$CV4"
    check "events: tftp pinhole open + use for the IPv6 read" \
        events_used tftp-v6 --alg tftp --proto udp --src "$SV6" --dst "$CV6"

    # What inline would have dropped.
    check "unannounced SYN to the passive range: the server resets it (not dropped); verdict drop default_deny recorded" \
        check_unannounced_syn
    check "FTP bounce: vsftpd answers the PORT (not dropped); ftp_bounce violation recorded" \
        check_bounce
    check "TFTP write under the read-only policy completes (not dropped); tftp_write_denied recorded" \
        check_tftp_write_denied

    # Metrics.
    check "metrics: GET /metrics 200, Content-Type text/plain; version=0.0.4, HELP and TYPE for every family" \
        check_metrics_http
    check "metrics: counters agree with the traffic (pinholes used, drops, violations, packets)" \
        check_metrics_counters
    check "metrics: GET /nope is 404" check_metrics_404
    check "metrics: listening on 127.0.0.1:$MON_PORT only (refused on the firewall's wan addresses)" \
        check_metrics_loopback

    # Rotation of the event log, and the rules.
    check "SIGHUP after mv events.jsonl events.jsonl.1: a new events.jsonl, the monitor runs on" \
        check_hup_reopen
    check "a transfer after the SIGHUP is in the new events file, nothing more in the old one" \
        check_after_hup
    check "SIGHUP re-read the rules (write = true): a TFTP write opens a pinhole, no tftp_write_denied" \
        check_hup_rules

    # Stop; what it left.
    check "SIGTERM: exit status 0, last record a summary (file $SOURCE, dropped >= 1)" \
        check_sigterm_summary
    if mon_alive; then
        ph_stop monitor
        MON_PID=""
    fi
    check "start and stop are logged as INFO (target pinhole::lifecycle), not as warnings" \
        check_lifecycle_info
    check "events: every record has file $SOURCE, an RFC 3339 UTC ts, verdicts for drops only, no flow records" \
        check_events_format
    check "drop capture: tcpdump -r reads it and shows the unannounced SYN" check_dump_tcpdump
    check "drop capture: nanosecond pcap, link type 1, holds the SYN and the bounce PORT command" \
        check_dump_contents
    check "drop capture: pinhole replay --rules --verdicts reads it, exit status 0" \
        check_dump_replay
}

run_rate_limit() {
    PHASE=rate-limit
    cp "$RULES_SHIPPED" "$RULES"
    RDUMP=$PH_WORKDIR/rate/drops.pcap
    mkdir -p "$PH_WORKDIR/rate"
    if ! check "monitor starts with --events - --events-rate $RATE --dump-drops-size 1 --dump-drops-files 3" \
            mon_start rate 9466 --events - --events-rate "$RATE" --dump-drops "$RDUMP" \
            --dump-drops-size 1 --dump-drops-files 3; then
        ph_stop monitor
        MON_PID=""
        return
    fi
    check "flood: $FLOOD_COUNT UDP datagrams of $FLOOD_SIZE bytes to $SV4:9 (no rule allows it); SIGTERM, exit status 0" \
        check_flood
    if mon_alive; then
        ph_stop monitor
        MON_PID=""
    fi
    check "rate limit: verdict records <= $RATE x (seconds + 2); suppressed records of class drops; written + suppressed = dropped" \
        check_rate_limited
    check "every drop still counted: summary dropped >= $FLOOD_COUNT" check_flood_counted
    check "drop capture rotated: drops.pcap, .1, .2 each <= 1 MiB, no .3" check_dump_rotated
}

run_text() {
    PHASE=text
    if ! check "monitor starts with --format text" mon_start text 9467 --format text; then
        ph_stop monitor
        MON_PID=""
        return
    fi
    [ -n "$SYN_PORT" ] || SYN_PORT=$((PH_PASV_MIN + 50))
    check "--format text: a readable DROP default_deny line for an unannounced SYN; exit status 0" \
        check_text_output
    if mon_alive; then
        ph_stop monitor
        MON_PID=""
    fi
}

main() {
    local t0=$SECONDS
    ph_init || exit 1
    start_watchdog 300
    mkdir -p "$PH_WORKDIR/checks"
    note "pinhole monitor e2e: $("$PINHOLE_BIN" --version), work dir $PH_WORKDIR"
    ph_versions | sed 's/^/# /'

    check "test bed: namespaces, content, vsftpd, tftpd-hpa; the firewall forwards everything" \
        setup_testbed || { echo "Bail out! no test bed"; exit 1; }
    check "rules: a copy of rules/edge-router.toml and its write = true variant (pinhole check-rules)" \
        setup_rules || { echo "Bail out! no rules"; exit 1; }

    run_monitor
    run_rate_limit
    run_text
    run_workers

    PHASE=end
    if [ "$FAIL" -gt 0 ]; then
        if [ -s "$PH_WORKDIR/failure-metrics.txt" ]; then
            # (Every failure's snapshot is in the work dir: PH_KEEP_WORKDIR=1 keeps it.)
            note "--- metrics at the last failure (nonzero samples)"
            awk '/^== after: / { n = NR } { line[NR] = $0 } END { for (i = n; i <= NR; i++) print line[i] }' \
                "$PH_WORKDIR/failure-metrics.txt" | grep -v ' 0$' | sed 's/^/# /'
        fi
        local log
        for log in "$PH_WORKDIR"/mon-*.log; do
            [ -e "$log" ] || continue
            note "--- $(basename "$log") (last 40 lines)"
            tail -n 40 "$log" | sed 's/^/# /'
        done
    fi
    note "total: $((SECONDS - t0)) s"
    # Clean up now, so that the summary is the last line.
    local warnings
    warnings=$(mktemp)
    ph_cleanup 2>"$warnings"
    sed 's/^/# cleanup: /' "$warnings"
    rm -f "$warnings"
    echo "e2e: $PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ]
}

main
