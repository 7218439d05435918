#!/usr/bin/env bash
#
# nat.sh - end-to-end test of FTP and TFTP through a NAT router: an edge router that forwards
# FTP and TFTP from its one public address to a private server (DNAT) and masquerades an inside
# network, with real servers and clients in network namespaces (scripts/nat-lib.sh):
#
#   outside client 203.0.113.10 --+                    +-- lan0 -- private server 10.0.1.10
#   outside server 203.0.113.20 --+-- wan0 [router] ---+            (vsftpd, tftpd-hpa; DNAT'd)
#                                   203.0.113.1        +-- lan1 -- inside device 10.0.2.10
#                                                                    (masqueraded)
#   (and 2001:db8:113::/64, fd00:1::/64, fd00:2::/64: NAT66 the same way)
#
# The same checks run under each firewall of the router, in a fresh test bed each:
#
#   kernel       no pinhole: the kernel's ftp and tftp conntrack helpers attached in the raw
#                table (CT --helper), FORWARD policy DROP, ESTABLISHED,RELATED and new tcp 21 /
#                udp 69 accepted. nf_nat_ftp / nf_nat_tftp do the translation. The baseline: it
#                validates the test bed and is what pinhole is compared with.
#   offload      pinhole run --mode offload     --install-rules --rules rules/default.toml
#   inspect-all  pinhole run --mode inspect-all --install-rules --rules rules/default.toml
#                (FORWARD policy DROP; pinhole's chain does the filtering, the nat rules stay)
#
# Checks (file contents compared byte for byte; IPv4 unless said):
#   outside client -> 203.0.113.1 (DNAT'd private server): PASV with clients that honour the
#     227 address (python ftplib trust_server_pasv_ipv4_address, lftp ftp:fix-pasv-address no),
#     curl PASV, EPSV, PORT, EPRT (downloads; PASV and PORT uploads), TFTP read and write;
#     IPv6 through 2001:db8:113::1: curl EPSV, EPRT, TFTP read;
#   the same server with vsftpd's pasv_address=203.0.113.1 and the passive range DNAT'd (the
#     "pasv_address recipe"): ftplib trusting the 227, curl PASV, curl EPSV;
#   inside device -> outside server 203.0.113.20 (masqueraded): curl PORT, EPRT, PASV, EPSV,
#     TFTP write (a config backup) and read; IPv6: curl EPRT, EPSV, TFTP write and read;
#   long control sessions: ftplib from the inside device in active mode, 25 RETRs (each PORT
#     names 10.0.2.10 and is rewritten to 203.0.113.1: two bytes longer, so the kernel's TCP
#     sequence offset grows with each), then PWD, NOOP, SYST, LIST, NOOP and a last RETR; and
#     an outside client trusting 25 227 replies from the DNAT'd server (each rewritten from
#     10.0.1.10). Under pinhole: no packet dropped with a tcp_* reason meanwhile;
#   refusals (asserted under pinhole, with a violation or drop record in its event log, and for
#     the PORTs no kernel expectation for the port they named (`conntrack -L expect`): the
#     kernel's helper never saw them; only reported under kernel): a bounce PORT from the inside device naming the outside client
#     (whose listener must see no connection), a PORT naming a privileged port, a connection
#     into the forwarded passive range with no PASV before it, a second connection to a port a
#     PASV announced;
#   pinhole only: its raw-table PINHOLE_HELPERS chain attaches the ftp and tftp helpers (v4, v6);
#     what it shows of translated sessions (a nat record per inspected session with the public
#     address, parent_nat on pinholes, `pinhole sessions --json` mid-session, the
#     passive_address_translated notice of the pasv_address recipe with its pinhole for the
#     private server); captures taken outside (wan0) and inside (lan0) during the outside ->
#     DNAT checks replay with no violation and no drop but a few capture-order ones on data
#     connections (each side is consistent in itself; see replay_clean);
#     a clean stop (exit status 0, no PINHOLE rule or chain left in any table).
#
# Usage:  tests/e2e/nat.sh                  (as root)
# Environment:
#   NAT_FIREWALLS="kernel offload inspect-all"   the firewalls to run, in this order (default:
#                        all three, kernel first)
#   PINHOLE_BIN=path     the binary to test (default: `cargo build --locked --bin pinhole`,
#                        target/debug/pinhole, as tests/e2e/nfqueue.sh); copied into the
#                        work dir at start, so a rebuild during the run changes nothing
#   NAT_PINHOLE_ARGS="..."  extra options for `pinhole run` (e.g. --no-kernel-helpers)
#   NAT_TESTBED_HELPERS=1   under pinhole too, attach the test bed's own raw-table CT --helper
#                        rules (TESTBED_HELPERS), as under kernel: for a pinhole that does not
#                        install its own (builds before its NAT support)
#   PH_PREFIX=phnat-     namespace name prefix (see scripts/netns-lib.sh)
#   PH_KEEP_WORKDIR=1    keep the work dir (logs, event logs, check outputs) after the run
#   E2E_TIME_LIMIT=420   seconds before the whole run is stopped
#
# Output: one "PASS [firewall] check" / "FAIL [firewall] check" line per check (a failure is
# followed by the end of its output and, under pinhole, the drop and violation records of the
# event log written meanwhile), "INFO" lines for what is only reported, "SKIP" with a reason,
# and a last line "nat: N passed, N failed, N skipped, N informational". Exit status 0 when no
# check failed (or when skipped: not root), 1 otherwise, 2 on a usage error. Traffic only flows
# between the namespaces this script creates; everything it starts is stopped and removed on
# any exit.

set -uo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$E2E_DIR/../.." && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "# skip: tests/e2e/nat.sh needs root (network namespaces, iptables, NFQUEUE)"
    exit 0
fi

read -ra FIREWALLS <<<"${NAT_FIREWALLS:-kernel offload inspect-all}"
read -ra PINHOLE_EXTRA <<<"${NAT_PINHOLE_ARGS:-}"
: "${NAT_TESTBED_HELPERS:=0}"
[ ${#FIREWALLS[@]} -gt 0 ] || { echo "NAT_FIREWALLS is empty" >&2; exit 2; }
NEED_PINHOLE=0
for fw in "${FIREWALLS[@]}"; do
    case $fw in
        kernel) ;;
        offload|inspect-all) NEED_PINHOLE=1 ;;
        *) echo "NAT_FIREWALLS: unknown firewall '$fw' (kernel, offload, inspect-all)" >&2; exit 2 ;;
    esac
done

# --------------------------------------------------------------------------
# Test bed library, tools (installed if missing), pinhole
# --------------------------------------------------------------------------
: "${PH_PREFIX:=phnat-}"
# shellcheck source=scripts/netns-lib.sh
. "$REPO_DIR/scripts/netns-lib.sh"
# shellcheck source=scripts/nat-lib.sh
. "$REPO_DIR/scripts/nat-lib.sh"

ph_ensure_tools || { echo "Bail out! missing tools could not be installed"; exit 1; }

if [ "$NEED_PINHOLE" = 1 ]; then
    ph_pinhole_bin run || exit 1
fi

NAT_PROBE=$E2E_DIR/nat_probe.py
FTP_PROBE=$E2E_DIR/ftp_probe.py
PJ=$E2E_DIR/pj.py

PUB4=$NAT_PUBLIC_V4 PUB6=$NAT_PUBLIC_V6
OCLI4=$NAT_CLIENT_V4 OCLI6=$NAT_CLIENT_V6
OSRV4=$NAT_OSERVER_V4 OSRV6=$NAT_OSERVER_V6
SRV4=$NAT_SERVER_V4 IN4=$NAT_INSIDE_V4 IN6=$NAT_INSIDE_V6

# Clients: never a proxy, no URL globbing (IPv6 brackets), short time-outs so that a failing
# transfer fails fast.
CURL=(curl -sS --noproxy '*' --globoff --connect-timeout 3 --max-time 8)
TFTP_WAIT=8         # seconds a TFTP transfer may take
PROBE_TIMEOUT=5     # seconds the python probes wait for a reply or a connection

# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------
FW=setup            # the firewall under test
CHECK_N=0 PASS=0 FAIL=0 SKIP=0 INFO=0
EVENTS=""           # pinhole's event log (pinhole firewalls)
declare -a FAILED=()

is_pinhole() { [ "$FW" = offload ] || [ "$FW" = inspect-all ]; }

events_lines() { if [ -n "$EVENTS" ] && [ -f "$EVENTS" ]; then wc -l <"$EVENTS"; else echo 0; fi; }

# events_show FROM [REASON_PREFIX]: the drop, violation and notice records of the event log
# after line FROM (only reasons starting with REASON_PREFIX if given), grouped: one line per
# kind of record and packet direction, with its count.
events_show() {
    [ -n "$EVENTS" ] && [ -f "$EVENTS" ] || return 0
    sleep 0.3   # (the writer flushes every 200 ms)
    python3 - "$EVENTS" "$1" "${2:-}" <<'PY'
import collections, json, sys
path, start, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
recs = [json.loads(l) for l in open(path).read().splitlines()[start:] if l.strip()]
groups = collections.OrderedDict()
for r in recs:
    if r.get("type") not in ("violation", "verdict", "notice"):
        continue
    what = r.get("reason") or r.get("event") or ""
    if not what.startswith(prefix):
        continue
    key = (r["type"], what, r.get("tuple") or r.get("flow") or "")
    groups.setdefault(key, [0, r.get("detail") or ""])[0] += 1
for (kind, what, where), (n, detail) in list(groups.items())[:8]:
    print("event: %3dx %-9s %-26s %s %s" % (n, kind, what, where, detail[:100]))
if len(groups) > 8:
    print("event: ... %d more kinds" % (len(groups) - 8))
if not groups:
    print("no drop, violation or notice record in the event log meanwhile")
PY
}

# check NAME CMD...: run CMD (a function of this script) with its output to a file; print
# PASS or FAIL; on failure the end of the output and, under pinhole, the event log's records.
check() {
    local name=$1 out ev0 rc
    shift
    CHECK_N=$((CHECK_N + 1))
    out=$PH_WORKDIR/checks/$CHECK_N.out
    ev0=$(events_lines)
    "$@" >"$out" 2>&1
    rc=$?
    if [ $rc = 0 ]; then
        PASS=$((PASS + 1))
        echo "PASS [$FW] $name"
        return 0
    fi
    FAIL=$((FAIL + 1))
    FAILED+=("[$FW] $name")
    echo "FAIL [$FW] $name"
    tail -n 14 "$out" | sed 's/^/    | /'
    if is_pinhole && ! grep -q '^event: ' "$out"; then
        events_show "$ev0" | sed 's/^/    | /'
    fi
    return 1
}

skip() {   # NAME REASON
    SKIP=$((SKIP + 1))
    echo "SKIP [$FW] $1: $2"
}

# refusal NAME CMD...: under pinhole a check; under kernel only reported (INFO, with the
# outcome: the last "refused:"/"accepted:"/"connect ..." line of the output).
refusal() {
    local name=$1 out what
    shift
    if is_pinhole; then
        check "$name" "$@"
        return
    fi
    CHECK_N=$((CHECK_N + 1))
    out=$PH_WORKDIR/checks/$CHECK_N.out
    "$@" >"$out" 2>&1
    what=$(grep -E '^(refused|accepted|connect |second connection|target:|kernel expectations)' "$out" | tr '\n' ';' |
        sed 's/;$//; s/;/; /g')
    INFO=$((INFO + 1))
    echo "INFO [$FW] $name: ${what:-see $out}"
}

note() { echo "# $*"; }

# --------------------------------------------------------------------------
# pinhole
# --------------------------------------------------------------------------
PINHOLE="" PINHOLE_PID="" PINHOLE_LOG="" CTL="" EXIT_STATUS=""

ctl() { timeout 5 "$PINHOLE" "$@" --control "$CTL"; }
pstat() { ctl stats --json | python3 "$PJ" "g('$1')"; }

pinhole_alive() {
    [ -n "$PINHOLE_PID" ] && kill -0 "$PINHOLE_PID" 2>/dev/null &&
        [ "$(ps -o stat= -p "$PINHOLE_PID" 2>/dev/null | cut -c1)" != Z ]
}

# pinhole_start MODE: in the router namespace, with the event log, a drop capture and its
# own control socket and state file; waits until it answers `status`.
pinhole_start() {
    local mode=$1 i
    PINHOLE_LOG=$PH_WORKDIR/pinhole-$mode.log
    CTL=$PH_WORKDIR/ctl-$mode.sock
    EVENTS=$PH_WORKDIR/events-$mode.jsonl
    ph_start_bg pinhole "$NAT_NS_FW" "$PINHOLE_LOG" \
        "$PINHOLE" run --rules "$PH_WORKDIR/rules.toml" --queues 0-1 --mode "$mode" \
        --install-rules --control "$CTL" --state-file "$PH_WORKDIR/state-$mode.json" \
        --events "$EVENTS" --dump-drops "$PH_WORKDIR/drops-$mode.pcap" -v "${PINHOLE_EXTRA[@]}"
    PINHOLE_PID=$PH_LAST_PID
    for ((i = 0; i < 100; i++)); do
        if ! pinhole_alive; then
            echo "pinhole exited during start-up:"
            tail -n 20 "$PINHOLE_LOG"
            return 1
        fi
        if ctl status >/dev/null 2>&1; then
            echo "pinhole run --mode $mode answers after $((i / 10)).$((i % 10)) s"
            local first
            first=$(ph_in_fw iptables -S FORWARD | sed -n 2p)
            echo "first FORWARD rule: $first"
            [[ $first == *"-j PINHOLE"* ]]
            return
        fi
        sleep 0.1
    done
    echo "pinhole did not answer 'status' within 10 s:"
    tail -n 20 "$PINHOLE_LOG"
    return 1
}

# pinhole_stop: SIGTERM, exit status 0, and nothing named PINHOLE left in any table of
# either family (its FORWARD chain, and any helper chain it installed in the raw table).
pinhole_stop() {
    pinhole_alive || { echo "pinhole is not running"; return 1; }
    kill -TERM "$PINHOLE_PID"
    if ! ph_wait_gone "$PINHOLE_PID" 10; then
        echo "pinhole still running 10 s after SIGTERM"
        return 1
    fi
    wait "$PINHOLE_PID" 2>/dev/null
    EXIT_STATUS=$?
    ph_stop pinhole
    PINHOLE_PID=""
    echo "pinhole exited with status $EXIT_STATUS"
    local left
    left=$(ph_in_fw iptables-save; ph_in_fw ip6tables-save)
    if grep -i pinhole <<<"$left"; then
        echo "^ left in the router's iptables/ip6tables rules"
        return 1
    fi
    echo "no PINHOLE rule or chain left (all tables, v4 and v6)"
    [ "$EXIT_STATUS" = 0 ]
}

# tcp_drops: the sum of pinhole's drop counters with a tcp_* reason.
tcp_drops() {
    ctl stats --json |
        python3 "$PJ" "sum(v for k, v in g('engine.drops', {}).items() if k.startswith('tcp_'))"
}

# events_match FROM EXPR: some record r after line FROM of the event log makes the Python
# expression EXPR true (retried for 3 s: the writer flushes every 200 ms).
events_match_once() {
    python3 - "$EVENTS" "$1" "$2" <<'PY'
import json, sys
path, start, expr = sys.argv[1], int(sys.argv[2]), sys.argv[3]
recs = [json.loads(l) for l in open(path).read().splitlines()[start:] if l.strip()]
hits = [r for r in recs if eval(expr, {}, {"r": r})]
print("%d of %d records match: %s" % (len(hits), len(recs), expr))
if hits:
    print(json.dumps(hits[0]))
sys.exit(0 if hits else 1)
PY
}
events_match() {
    ph_wait_for "event log record" 3 events_match_once "$1" "$2" >/dev/null 2>&1
    events_match_once "$1" "$2"
}

# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------
# Every check writes what it downloads under got/, named after the check.
got() { echo "$PH_WORKDIR/got/$CHECK_N-$1"; }

# ftp_get NS HOST FILE ROOT [CURL_OPTIONS...]: curl downloads FILE from HOST (a URL host:
# an address, IPv6 in brackets); compared with ROOT/FILE.
ftp_get() {
    local ns=$1 host=$2 file=$3 root=$4 out
    shift 4
    out=$(got "$file")
    ph_in "$ns" "${CURL[@]}" "$@" -o "$out" "ftp://$host/$file" || return 1
    cmp "$root/$file" "$out" && echo "$file: $(stat -c %s "$out") bytes, identical"
}

# ftp_put NS HOST LOCAL REMOTE ROOT [CURL_OPTIONS...]: curl uploads LOCAL as upload/REMOTE;
# compared with what the server stored (ROOT/upload/REMOTE).
ftp_put() {
    local ns=$1 host=$2 src=$3 remote=$4 root=$5
    shift 5
    ph_in "$ns" "${CURL[@]}" "$@" -T "$src" "ftp://$host/upload/$remote" || return 1
    cmp "$src" "$root/upload/$remote" &&
        echo "upload/$remote: $(stat -c %s "$src") bytes stored, identical"
}

# tftp_get NS [-6] HOST FILE ROOT: tftp-hpa reads FILE (octet); compared with ROOT/FILE.
# tftp-hpa exits 0 even after a time-out, so only the comparison tells.
tftp_get() {
    local ns=$1
    shift
    local -a fam=()
    if [ "$1" = -6 ]; then fam=(-6); shift; fi
    local host=$1 file=$2 root=$3 out
    out=$(got "$file")
    ph_in "$ns" timeout "$TFTP_WAIT" tftp "${fam[@]}" -m octet "$host" -c get "$file" "$out"
    cmp "$root/$file" "$out" && echo "$file: $(stat -c %s "$out") bytes, identical"
}

# tftp_put NS [-6] HOST LOCAL REMOTE ROOT: tftp-hpa writes LOCAL as REMOTE; compared with
# what the server stored (ROOT/REMOTE).
tftp_put() {
    local ns=$1
    shift
    local -a fam=()
    if [ "$1" = -6 ]; then fam=(-6); shift; fi
    local host=$1 src=$2 remote=$3 root=$4
    ph_in "$ns" timeout "$TFTP_WAIT" tftp "${fam[@]}" -m octet "$host" -c put "$src" "$remote"
    cmp "$src" "$root/$remote" && echo "$remote: $(stat -c %s "$src") bytes stored, identical"
}

# ftplib NS ARGS...: nat_probe.py session (one control connection; see the probe).
ftplib() {
    local ns=$1
    shift
    ph_in "$ns" python3 "$NAT_PROBE" session "$@" --timeout "$PROBE_TIMEOUT"
}

# ftplib_trusting_227 FILE: the outside client downloads FILE through 203.0.113.1 with ftplib
# connecting to the address the 227 names; that address must be the public one.
ftplib_trusting_227() {
    ftplib "$NAT_NS_CLIENT" "$PUB4" "$1" "$PH_WORKDIR/ftp/$1" --trust-pasv | tee "$(got ftplib)" ||
        return 1
    grep -q "227 Entering Passive Mode ($(tr . , <<<"$PUB4")," "$(got ftplib)" ||
        { echo "the 227 does not name $PUB4"; return 1; }
}

# lftp_pasv FILE: the outside client downloads FILE through 203.0.113.1 with lftp in PASV
# mode honouring the 227's address (ftp:fix-pasv-address no); the debug log must show the
# data connection made to the address the 227 named.
lftp_pasv() {
    local file=$1 script out log
    script=$PH_WORKDIR/checks/$CHECK_N.lftp
    out=$(got "$file")
    log=$(got lftp.log)
    cat >"$script" <<EOF
set cmd:fail-exit yes
set ftp:ssl-allow no
set ftp:passive-mode on
set ftp:prefer-epsv no
set ftp:fix-pasv-address no
set net:max-retries 1
set net:timeout 5
set net:reconnect-interval-base 1
set xfer:clobber yes
debug 9
open ftp://$PUB4
get $file -o $out
quit
EOF
    HOME=$PH_WORKDIR/client ph_in "$NAT_NS_CLIENT" timeout 20 lftp -f "$script" >"$log" 2>&1
    local rc=$?
    grep -E '^(<--- 227|---> PASV|---- Connecting data socket)' "$log"
    [ $rc = 0 ] || { tail -n 5 "$log"; return 1; }
    cmp "$PH_WORKDIR/ftp/$file" "$out" && echo "$file: $(stat -c %s "$out") bytes, identical"
}

# curl's four ways to get a data connection; PORT/EPRT name the client's own address.
curl_flags() {   # MODE ADDR
    case $1 in
        PASV) FLAGS=(--ftp-pasv --disable-epsv) ;;
        EPSV) FLAGS=(--ftp-pasv) ;;
        PORT) FLAGS=(--ftp-port "$2" --disable-eprt) ;;
        EPRT) FLAGS=(--ftp-port "$2") ;;
    esac
}

# --------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------
check_testbed() {
    local ns dst rc=0
    for ns in "$NAT_NS_CLIENT" "$NAT_NS_OSERVER"; do
        for dst in "$SRV4" "$IN4" "$NAT_SERVER_V6" "$IN6"; do
            if ph_in "$ns" ip route get "$dst" >/dev/null 2>&1; then
                echo "$ns has a route to $dst"
                rc=1
            fi
        done
    done
    [ $rc = 0 ] && echo "the outside hosts have no route to the private networks"
    # The router forwards nothing yet it should not: the private server answers only through
    # the translations, and the FORWARD policy is DROP.
    echo "FORWARD policy: $(ph_in_fw iptables -S FORWARD | head -n 1)," \
        "$(ph_in_fw ip6tables -S FORWARD | head -n 1)"
    ph_in_fw iptables -t nat -S TESTBED_DNAT && ph_in_fw ip6tables -t nat -S TESTBED_MASQ || rc=1
    return $rc
}

# The outside client through the router's public address to the DNAT'd private server.
checks_outside_to_dnat() {
    local m
    check "outside -> $PUB4 (DNAT): PASV, python ftplib trusting the 227 address" \
        ftplib_trusting_227 medium.bin
    check "outside -> $PUB4 (DNAT): PASV, lftp honouring the 227 (ftp:fix-pasv-address no)" \
        lftp_pasv medium.bin
    for m in PASV EPSV PORT EPRT; do
        curl_flags "$m" "$OCLI4"
        check "outside -> $PUB4 (DNAT): $m download, curl ${FLAGS[*]}" \
            ftp_get "$NAT_NS_CLIENT" "$PUB4" medium.bin "$PH_WORKDIR/ftp" "${FLAGS[@]}"
    done
    for m in PASV PORT; do
        curl_flags "$m" "$OCLI4"
        check "outside -> $PUB4 (DNAT): $m upload, curl -T ${FLAGS[*]}" \
            ftp_put "$NAT_NS_CLIENT" "$PUB4" "$PH_WORKDIR/client/upload-1m.bin" \
            "$FW-$m.bin" "$PH_WORKDIR/ftp" "${FLAGS[@]}"
    done
    check "outside -> $PUB4 (DNAT): TFTP read" \
        tftp_get "$NAT_NS_CLIENT" "$PUB4" image.bin "$PH_WORKDIR/tftp"
    check "outside -> $PUB4 (DNAT): TFTP write" \
        tftp_put "$NAT_NS_CLIENT" "$PUB4" "$PH_WORKDIR/client/tftp-up.bin" "$FW-up.bin" \
        "$PH_WORKDIR/tftp"
    for m in EPSV EPRT; do
        curl_flags "$m" "$OCLI6"
        check "outside -> [$PUB6] (NAT66 DNAT): $m download, curl ${FLAGS[*]}" \
            ftp_get "$NAT_NS_CLIENT" "[$PUB6]" medium.bin "$PH_WORKDIR/ftp" "${FLAGS[@]}"
    done
    check "outside -> [$PUB6] (NAT66 DNAT): TFTP read" \
        tftp_get "$NAT_NS_CLIENT" -6 "$PUB6" image.bin "$PH_WORKDIR/tftp"
}

# The inside device, masqueraded, to the outside server.
checks_inside_to_outside() {
    local m
    for m in PORT EPRT PASV EPSV; do
        curl_flags "$m" "$IN4"
        check "inside (masqueraded) -> $OSRV4: $m download, curl ${FLAGS[*]}" \
            ftp_get "$NAT_NS_INSIDE" "$OSRV4" medium.bin "$PH_WORKDIR/oftp" "${FLAGS[@]}"
    done
    check "inside (masqueraded) -> $OSRV4: TFTP write (config backup)" \
        tftp_put "$NAT_NS_INSIDE" "$OSRV4" "$PH_WORKDIR/inside/config.txt" \
        "router1-confg-$FW" "$PH_WORKDIR/otftp"
    check "inside (masqueraded) -> $OSRV4: TFTP read" \
        tftp_get "$NAT_NS_INSIDE" "$OSRV4" image.bin "$PH_WORKDIR/otftp"
    for m in EPRT EPSV; do
        curl_flags "$m" "$IN6"
        check "inside (NAT66 masquerade) -> [$OSRV6]: $m download, curl ${FLAGS[*]}" \
            ftp_get "$NAT_NS_INSIDE" "[$OSRV6]" medium.bin "$PH_WORKDIR/oftp" "${FLAGS[@]}"
    done
    check "inside (NAT66 masquerade) -> [$OSRV6]: TFTP write (config backup)" \
        tftp_put "$NAT_NS_INSIDE" -6 "$OSRV6" "$PH_WORKDIR/inside/config.txt" \
        "router1-confg-$FW-6" "$PH_WORKDIR/otftp"
    check "inside (NAT66 masquerade) -> [$OSRV6]: TFTP read" \
        tftp_get "$NAT_NS_INSIDE" -6 "$OSRV6" image.bin "$PH_WORKDIR/otftp"
}

# 25 RETRs in active mode from the inside device, and more commands, on one control
# connection; the outside server's protocol log must show each of the 27 PORT commands (25
# RETRs, LIST, the last RETR) naming the public address (rewritten by nf_nat_ftp: the test
# bed's premise).
long_active_inside() {
    local log=$PH_WORKDIR/vsftpd-vsftpd-out.log n0 rc ports public
    n0=$(wc -l <"$log")
    ftplib "$NAT_NS_INSIDE" "$OSRV4" small.txt "$PH_WORKDIR/oftp/small.txt" --mode port \
        --count 25 --more
    rc=$?
    ports=$(tail -n "+$((n0 + 1))" "$log" | grep -c 'FTP command: .*"PORT ')
    public=$(tail -n "+$((n0 + 1))" "$log" | grep -c "FTP command: .*\"PORT ${PUB4//./,},")
    echo "the outside server received $ports PORT commands, $public of them naming $PUB4; the last:"
    tail -n "+$((n0 + 1))" "$log" | grep 'FTP command: .*"PORT ' | tail -n 1
    [ "$rc" = 0 ] && [ "$public" = 27 ] && [ "$ports" = 27 ]
}

# 25 RETRs from the outside client trusting each 227, and more commands; the 27 227 replies
# (25 RETRs, LIST, the last RETR) must all name the public address (rewritten from the
# private server's by nf_nat_ftp).
long_passive_outside() {
    local out
    out=$(got long-passive)
    ftplib "$NAT_NS_CLIENT" "$PUB4" small.txt "$PH_WORKDIR/ftp/small.txt" --trust-pasv \
        --count 25 --more | tee "$out" || return 1
    grep -qx "227 replies naming $PUB4: 27" "$out" ||
        { echo "not every one of the 27 227 replies named $PUB4"; return 1; }
}

TCP_DROPS0="" TCP_EV0=""
no_tcp_drops() {
    local now
    now=$(tcp_drops) || return 1
    echo "drops with a tcp_* reason: $TCP_DROPS0 before the sessions, $now after"
    [ "$now" = "$TCP_DROPS0" ] && return 0
    events_show "$TCP_EV0" tcp_
    return 1
}

checks_long_sessions() {
    if is_pinhole; then
        TCP_DROPS0=$(tcp_drops)
        TCP_EV0=$(events_lines)
    fi
    check "inside -> $OSRV4: one control session, 25 active RETRs (each PORT rewritten), PWD, NOOP, SYST, LIST, NOOP, RETR" \
        long_active_inside
    check "outside -> $PUB4: one control session, 25 PASV RETRs trusting each (rewritten) 227, then PWD, NOOP, SYST, LIST, NOOP, RETR" \
        long_passive_outside
    if is_pinhole; then
        check "no packet dropped with a tcp_* reason during the two long sessions" no_tcp_drops
    fi
}

# The pasv_address recipe: vsftpd names 203.0.113.1 in its 227 replies, the router DNATs the
# passive range.
recipe_on() {
    nat_pasv_address_recipe on && nat_pasv_range on
}
recipe_off() {
    nat_pasv_range off
    nat_pasv_address_recipe off
}

checks_pasv_address_recipe() {
    check "pasv_address recipe: vsftpd restarted with pasv_address=$PUB4, passive range $PH_PASV_MIN-$PH_PASV_MAX DNAT'd" \
        recipe_on || return
    local ev0
    ev0=$(events_lines)
    check "pasv_address recipe: PASV, python ftplib trusting the 227 ($PUB4)" \
        ftplib_trusting_227 medium.bin
    if is_pinhole; then
        check "pasv_address recipe: a passive_address_translated notice, the pinhole for $SRV4 used" \
            recipe_translated "$ev0"
    fi
    local m
    for m in PASV EPSV; do
        curl_flags "$m"
        check "pasv_address recipe: $m download, curl ${FLAGS[*]}" \
            ftp_get "$NAT_NS_CLIENT" "$PUB4" medium.bin "$PH_WORKDIR/ftp" "${FLAGS[@]}"
    done
    refusal "pasv_address recipe: a connection to $PUB4:<passive port> with no PASV before it is not let through" \
        refuse_unsolicited_passive
    refusal "pasv_address recipe: a second connection to the port a PASV announced does not get through" \
        refuse_second_use
    check "pasv_address recipe off: vsftpd restarted without it, passive range no longer forwarded" \
        recipe_off
}

# A connection into the forwarded passive range that no PASV announced: from the router the
# server answers it with a reset (nothing listens there), so a time-out through the router
# can only be the firewall's drop.
refuse_unsolicited_passive() {
    local port=$PH_PASV_MIN ev0
    while ph_listening "$NAT_NS_SERVER" tcp "$port"; do port=$((port + 1)); done
    ph_in_fw python3 "$FTP_PROBE" connect "$SRV4" "$port" --timeout 3 --expect refused ||
        { echo "from the router, $SRV4:$port does not answer with a reset"; return 1; }
    ev0=$(events_lines)
    ph_in "$NAT_NS_CLIENT" python3 "$FTP_PROBE" connect "$PUB4" "$port" --timeout 3 \
        --expect timeout || return 1
    is_pinhole || return 0
    events_match "$ev0" "r['type'] == 'verdict' and r['verdict'] == 'drop' \
        and r.get('tuple', '').startswith('tcp $OCLI4:') and r['tuple'].endswith(':$port')"
}

# After a PASV (the recipe's 227 names the public address), connect twice to the port: the
# first connection carries the transfer, the second one must not get through. (Under the
# kernel baseline, where the whole range is forwarded, it connects: vsftpd still listens
# during the transfer.)
refuse_second_use() {
    local out ev0 port
    out=$(got reuse)
    ev0=$(events_lines)
    ph_in "$NAT_NS_CLIENT" python3 "$FTP_PROBE" reuse "$PUB4" medium.bin \
        "$(stat -c %s "$PH_WORKDIR/ftp/medium.bin")" --timeout 3 --expect timeout | tee "$out"
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || return 1
    port=$(awk '/^PASV:/ { print $NF }' "$out")
    is_pinhole || return 0
    events_match "$ev0" "r['type'] == 'verdict' and r['verdict'] == 'drop' \
        and r.get('tuple', '').startswith('tcp $OCLI4:') and r['tuple'].endswith(':$port')"
}

# Refusals on the inside device's control connection to the outside server.
LISTEN_LOG=""
checks_refusals_inside() {
    # The bounce target: a listener on the outside client that must see no connection.
    LISTEN_LOG=$PH_WORKDIR/bounce-target-$FW.log
    : >"$LISTEN_LOG"
    ph_start_bg bounce-target "$NAT_NS_CLIENT" "$PH_WORKDIR/bounce-target-$FW.out" \
        python3 "$NAT_PROBE" listen "$OCLI4" 41000 "$LISTEN_LOG"
    ph_wait_listen "$NAT_NS_CLIENT" tcp 41000 >/dev/null 2>&1
    refusal "inside -> $OSRV4: a bounce PORT naming the outside client $OCLI4 is refused; it sees no connection" \
        refuse_port "$OCLI4" 41000 ftp_bounce
    refusal "inside -> $OSRV4: a PORT naming a privileged port (its own address, port 80) is refused" \
        refuse_port "$IN4" 80 ftp_privileged_port
    ph_stop bounce-target
}

refuse_port() {   # ADDR PORT REASON
    local addr=$1 port=$2 reason=$3 ev0 rc
    ev0=$(events_lines)
    ph_in "$NAT_NS_INSIDE" python3 "$NAT_PROBE" port "$OSRV4" "$addr" "$port" \
        --timeout "$PROBE_TIMEOUT" --then-retr small.txt
    rc=$?
    sleep 0.5
    if [ "$addr" = "$OCLI4" ]; then
        if [ -s "$LISTEN_LOG" ]; then
            echo "target: connected to: $(tr '\n' ' ' <"$LISTEN_LOG")"
            rc=1
        else
            echo "target: no connection"
        fi
    fi
    # The kernel's helper must never have seen a PORT pinhole refused: no expectation for the
    # port it named (under the kernel baseline, the privileged PORT leaves one: the helper
    # rewrites and expects what vsftpd then refuses).
    local expected
    expected=$(ph_in_fw conntrack -L expect 2>/dev/null | grep -c "dport=$port ")
    echo "kernel expectations for port $port: $expected"
    [ $rc = 0 ] || return 1
    is_pinhole || return 0
    [ "$expected" = 0 ] || { ph_in_fw conntrack -L expect; return 1; }
    events_match "$ev0" "r['type'] == 'violation' and r['reason'] == '$reason'"
}

checks_kernel_helpers() {
    local ftp tftp
    ftp=$(nat_helper_hits ftp) tftp=$(nat_helper_hits tftp)
    echo "raw table CT --helper: ftp $ftp packets, tftp $tftp packets (IPv4);" \
        "ftp $(nat_helper_hits ftp ip6tables), tftp $(nat_helper_hits tftp ip6tables) (IPv6)"
    [ "$ftp" -gt 0 ] && [ "$tftp" -gt 0 ]
}

pinhole_summary() {
    local json
    json=$(ctl stats --json) || return 0
    note "pinhole $FW: $(python3 "$PJ" "'packets %d, dropped %d, pinholes opened %d used %d, violations %d, flows offloaded %d' % (g('engine.packets'), g('engine.dropped'), g('engine.pinholes_opened'), g('engine.pinholes_used'), g('engine.violations'), g('engine.flows_offloaded'))" <<<"$json")"
    note "pinhole $FW: $(python3 "$PJ" "'%d ctnetlink queries (%d failed), %d translated sessions' % (g('queue.conntrack_queries'), g('queue.conntrack_query_errors'), g('engine.flows_translated'))" <<<"$json")"
    note "pinhole $FW drops by reason: $(python3 "$PJ" "', '.join('%s %d' % kv for kv in sorted(g('engine.drops', {}).items()) if kv[1]) or 'none'" <<<"$json")"
    note "pinhole $FW: raw-table CT --helper rules matched: ftp $(nat_helper_hits ftp)," \
        "tftp $(nat_helper_hits tftp) packets (IPv4); ftp $(nat_helper_hits ftp ip6tables)," \
        "tftp $(nat_helper_hits tftp ip6tables) (IPv6)"
    if [ -f "$EVENTS" ]; then
        note "pinhole $FW notices: $(python3 -c '
import collections, json, sys
c = collections.Counter(r.get("event") for r in map(json.loads, open(sys.argv[1])) if r.get("type") == "notice")
print(", ".join("%s %d" % kv for kv in sorted(c.items())) or "none")' "$EVENTS")"
    fi
}

# --------------------------------------------------------------------------
# pinhole's view of translated sessions
# --------------------------------------------------------------------------
# helpers_chain: while pinhole runs, its raw-table chain attaches ftp to tcp 21 and tftp to
# udp 69, for both families.
helpers_chain() {
    local fam rules rc=0
    for fam in iptables ip6tables; do
        rules=$(ph_in_fw "$fam" -t raw -S PINHOLE_HELPERS) || { echo "$fam: no PINHOLE_HELPERS"; return 1; }
        echo "$rules" | sed "s/^/$fam: /"
        grep -q -- '--dport 21 .*-j CT --helper ftp' <<<"$rules" || rc=1
        grep -q -- '--dport 69 .*-j CT --helper tftp' <<<"$rules" || rc=1
        ph_in_fw "$fam" -t raw -S PREROUTING | grep -q -- '-j PINHOLE_HELPERS' || rc=1
    done
    return $rc
}

CAP_OUT="" CAP_IN=""
# captures_start: tcpdump on wan0 (the outside view) and lan0 (the private server's side).
captures_start() {
    CAP_OUT=$PH_WORKDIR/outside-$FW.pcap
    CAP_IN=$PH_WORKDIR/inside-$FW.pcap
    ph_capture_start -n "$NAT_NS_FW" -i wan0 -w "$CAP_OUT" || return 1
    ph_start_bg cap-lan "$NAT_NS_FW" "$PH_WORKDIR/cap-lan-$FW.log" \
        tcpdump -i lan0 -s 0 -U -B 16384 --immediate-mode -Z root -n -w "$CAP_IN" \
        "$PH_CAPTURE_FILTER"
    ph_wait_for "tcpdump on lan0" 5 grep -q "listening on" "$PH_WORKDIR/cap-lan-$FW.log"
}

captures_stop() {
    ph_capture_stop
    ph_stop cap-lan
    ls -l "$CAP_OUT" "$CAP_IN"
    [ -s "$CAP_OUT" ] && [ -s "$CAP_IN" ]
}

# replay_clean outside|inside: the capture of that side replays under the same rules with no
# violation, no drop on a control connection or TFTP request and no drop for another reason
# than the one below, and the pinholes it opens are used. The one allowance: a capture on one
# interface interleaves the two directions in the order that interface saw them, which is not
# always the order pinhole judged them in (an acknowledgement judged before a data segment may
# leave the interface after the segment arrived at it; in offload mode, segments still in the
# queue while a data connection is handed to the kernel can be overtaken by later ones the
# kernel forwards itself). A few segments of a bulk data connection can then fall outside the
# window replay tracks (tcp_out_of_window) where pinhole saw them in window: at most 10, and
# on data connections only.
replay_clean() {
    local cap=$CAP_OUT
    [ "$1" = inside ] && cap=$CAP_IN
    "$PINHOLE" replay --rules "$PH_WORKDIR/rules.toml" --format json --verdicts "$cap" \
        >"$PH_WORKDIR/replay-$1-$FW.jsonl" || return 1
    python3 - "$PH_WORKDIR/replay-$1-$FW.jsonl" "$1" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
s = [r for r in recs if r["type"] == "summary"][0]
print("%s capture: %d packets, %d dropped %s, %d violations, pinholes opened %d used %d" % (
    sys.argv[2], s["packets"], s["dropped"], s["drops"], s["violations"],
    s["pinholes_opened"], s["pinholes_used"]))
for r in recs:
    if r["type"] in ("violation", "notice"):
        print(json.dumps(r))
def control(flow):
    ports = [int(end.rsplit(":", 1)[1]) for end in flow.split(" ", 1)[1].split(" -> ")]
    return 21 in ports or 69 in ports
drops = [r for r in recs if r["type"] == "verdict" and r["verdict"] == "drop"]
allowed = [r for r in drops if r["reason"] == "tcp_out_of_window" and r["flow"]
           and not control(r["flow"])]
for r in drops:
    print(("allowed (capture order): " if r in allowed else "") + json.dumps(r))
ok = (s["packets"] > 1000 and len(drops) == len(allowed) and len(allowed) <= 10
      and s["violations"] == 0 and s["pinholes_used"] >= 8)
sys.exit(0 if ok else 1)
PY
}

# The addresses pinhole shows of the sessions the outside checks made.
checks_translation_views() {
    check "nat record: an outside client's session to $SRV4:21 is seen by the client as $PUB4:21" \
        events_match 0 "r['type'] == 'nat' and r['flow'].startswith('tcp $OCLI4:') \
            and r['flow'].endswith('-> $SRV4:21') and r['server'] == '$PUB4:21'"
    check "pinhole records of translated sessions carry parent_nat (PASV pinhole for $SRV4)" \
        events_match 0 "r['type'] == 'pinhole' and r['event'] == 'open' and r['dst'] == '$SRV4' \
            and r.get('parent_nat', {}).get('server') == '$PUB4:21'"
    check "pinhole sessions --json mid-session: the control session to $SRV4:21 with nat.server $PUB4:21" \
        sessions_show_nat
    check "transfer records carry the data connection's translation: a passive download from $SRV4 seen by the client at $PUB4, complete" \
        events_match 0 "r['type'] == 'transfer' and r['command'] == 'RETR' and r['result'] == 'complete' \
            and (r['data'] or '').startswith('tcp $OCLI4:') and ' -> $SRV4:' in r['data'] \
            and r.get('data_nat', {}).get('server', '').startswith('$PUB4:') \
            and r['session'].endswith('-> $SRV4:21')"
}

sessions_show_nat() {
    local out rc
    out=$(got sessions)
    ftplib "$NAT_NS_CLIENT" "$PUB4" small.txt "$PH_WORKDIR/ftp/small.txt" --pause 3 >"$out" 2>&1 &
    local pid=$!
    sleep 1.5
    ctl sessions --json | python3 -c '
import json, sys
rows = [r for r in json.load(sys.stdin) if r["dst"] == sys.argv[1] and r["dport"] == 21]
for r in rows:
    print(json.dumps(r))
sys.exit(0 if any(r.get("nat", {}).get("server") == sys.argv[2] + ":21" for r in rows) else 1)
' "$SRV4" "$PUB4"
    rc=$?
    ctl sessions | head -n 3
    wait "$pid" || { cat "$out"; rc=1; }
    return $rc
}

# reload_moves_helpers: a reload that adds an inspected FTP port re-attaches the kernel's
# helpers to it; reloading the original rules takes it away again.
reload_moves_helpers() {
    local rules=$PH_WORKDIR/rules.toml fam n
    sed -i 's/^ports = \[21\]$/ports = [21, 2121]/' "$rules"
    grep -q 'ports = \[21, 2121\]' "$rules" || { echo "could not edit $rules"; return 1; }
    ctl reload || return 1
    for fam in iptables ip6tables; do
        ph_in_fw "$fam" -t raw -S PINHOLE_HELPERS | grep -- '--dport 2121 .*--helper ftp' ||
            { echo "$fam: no helper on 2121 after the reload"; return 1; }
    done
    cp "$REPO_DIR/rules/default.toml" "$rules"
    ctl reload || return 1
    for fam in iptables ip6tables; do
        n=$(ph_in_fw "$fam" -t raw -S PINHOLE_HELPERS | grep -c -- '--dport 2121')
        [ "$n" = 0 ] || { echo "$fam: the helper on 2121 stayed after reloading the original rules"; return 1; }
        ph_in_fw "$fam" -t raw -S PINHOLE_HELPERS | grep -q -- '--dport 21 .*--helper ftp' || return 1
    done
    echo "helpers followed both reloads"
}

# recipe_translated FROM: the recipe's 227 named the public address; pinhole recognised it as
# the server's own (a notice) and opened, and the client used, a pinhole for the private server.
recipe_translated() {
    events_match "$1" "r['type'] == 'notice' and r['event'] == 'passive_address_translated' \
        and '$PUB4' in r['detail']" &&
        events_match "$1" "r['type'] == 'pinhole' and r['event'] == 'use' and r['dst'] == '$SRV4' \
            and r['dport'] >= $PH_PASV_MIN and r['dport'] <= $PH_PASV_MAX"
}

# --------------------------------------------------------------------------
# One firewall
# --------------------------------------------------------------------------
testbed_up() {
    nat_topology_up || return 1
    nat_servers_up || return 1
    local d=$PH_WORKDIR
    [ -s "$d/client/upload-1m.bin" ] || ph_gen_bytes $((1024 * 1024)) 9 >"$d/client/upload-1m.bin"
    [ -s "$d/client/tftp-up.bin" ] || ph_gen_bytes 102400 10 >"$d/client/tftp-up.bin"
    nat_router_nat_up
}

firewall_up() {
    case $FW in
        kernel) nat_fw_kernel_up ;;
        *)
            if [ "$NAT_TESTBED_HELPERS" = 1 ]; then
                nat_fw_helpers_up || return 1
                echo "the test bed's CT --helper rules attached (NAT_TESTBED_HELPERS=1)"
            fi
            nat_forward_policy DROP && pinhole_start "$FW"
            ;;
    esac
}

testbed_down() {
    ph_stop pinhole
    PINHOLE_PID=""
    local p
    for p in vsftpd tftpd vsftpd-out tftpd-out bounce-target cap-lan; do
        ph_stop "$p"
    done
    nat_topology_down
}

run_firewall() {
    FW=$1
    EVENTS=""
    local t0=$SECONDS
    note "--- firewall: $FW"
    if ! check "test bed: six namespaces, vsftpd and tftpd-hpa inside and outside, DNAT and MASQUERADE (v4, v6)" \
            testbed_up; then
        testbed_down
        return
    fi
    check "the outside hosts have no route to 10.0.0.0/8 or fd00::/8" check_testbed
    if ! check "firewall $FW up (FORWARD policy DROP)" firewall_up; then
        testbed_down
        return
    fi

    if is_pinhole; then
        check "pinhole attached the kernel's helpers: PINHOLE_HELPERS in the raw table (v4, v6)" \
            helpers_chain
        check "captures started on the router's wan0 and lan0" captures_start
    fi
    checks_outside_to_dnat
    if is_pinhole; then
        check "captures stopped" captures_stop
        check "replay of the outside (wan0) capture: no violation, no drop but capture-order ones on data connections, pinholes used" \
            replay_clean outside
        check "replay of the inside (lan0) capture: no violation, no drop but capture-order ones on data connections, pinholes used" \
            replay_clean inside
        checks_translation_views
    fi
    checks_inside_to_outside
    checks_long_sessions
    checks_pasv_address_recipe
    checks_refusals_inside

    if [ "$FW" = kernel ]; then
        check "the raw table's CT --helper ftp and tftp rules matched the traffic" \
            checks_kernel_helpers
        nat_fw_kernel_down
    else
        pinhole_summary
        check "pinhole reload with FTP also on 2121: PINHOLE_HELPERS follows (v4, v6), and back" \
            reload_moves_helpers
        check "SIGTERM: pinhole exits with status 0, no PINHOLE rule or chain left" pinhole_stop
        nat_fw_helpers_down
    fi
    testbed_down
    note "firewall $FW: $((SECONDS - t0)) s"
}

# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
main() {
    local t0=$SECONDS fw limit=${E2E_TIME_LIMIT:-420}
    ph_init || exit 1
    mkdir -p "$PH_WORKDIR/checks" "$PH_WORKDIR/got"
    chmod 0777 "$PH_WORKDIR/got"
    setsid bash -c "sleep $limit; echo 'Bail out! time limit of $limit s reached' >&2; kill -TERM $$" \
        </dev/null &
    printf 'watchdog %s\n' $! >>"$PH_WORKDIR/pids"
    if [ "$NEED_PINHOLE" = 1 ]; then
        PINHOLE=$PH_WORKDIR/pinhole
        cp "$PINHOLE_BIN" "$PINHOLE" || { echo "Bail out! cannot copy $PINHOLE_BIN"; exit 1; }
        cp "$REPO_DIR/rules/default.toml" "$PH_WORKDIR/rules.toml"
        note "pinhole: $("$PINHOLE" --version) ($PINHOLE_BIN, $(date -r "$PINHOLE_BIN" '+%F %T'))," \
            "rules/default.toml"
    fi
    note "NAT router e2e: firewalls ${FIREWALLS[*]}, work dir $PH_WORKDIR"
    [ ${#PINHOLE_EXTRA[@]} -eq 0 ] || note "extra pinhole run options: ${PINHOLE_EXTRA[*]}"
    [ "$NAT_TESTBED_HELPERS" = 1 ] && note "the test bed's CT --helper rules are attached under pinhole too"
    ph_versions | sed 's/^/# /'

    for fw in "${FIREWALLS[@]}"; do
        run_firewall "$fw"
    done

    FW=end
    note "total: $((SECONDS - t0)) s"
    if [ ${#FAILED[@]} -gt 0 ]; then
        note "failed:"
        printf '#   %s\n' "${FAILED[@]}"
    fi
    local warnings
    warnings=$(mktemp)
    ph_cleanup 2>"$warnings"
    sed 's/^/# cleanup: /' "$warnings"
    rm -f "$warnings"
    echo "nat: $PASS passed, $FAIL failed, $SKIP skipped, $INFO informational"
    [ "$FAIL" -eq 0 ]
}

main
