#!/usr/bin/env bash
#
# ftps.sh - end-to-end test of pinhole's FTPS support (issue 20): pinhole inline on NFQUEUE in
# the firewall namespace of scripts/netns-lib.sh's test bed (client 198.51.100.10 outside on
# wan0, server 192.0.2.10 inside on lan0), between real FTPS servers and clients, run as
# tests/e2e/nfqueue.sh runs it:
#
#     pinhole run --install-rules --queues 0-1 --mode MODE --rules rules.toml -v ...
#
# with FORWARD policy DROP (v4, v6) under it, so only what pinhole admits passes. The rules are
# written here (no other rule admits anything): one inspected FTP rule per server,
#
#   port 21    vsftpd, explicit FTPS (AUTH TLS), PROT P, passive range 40000-40099:
#              ftps = "allow-passive-range", ftps_passive_ports = "40000-40100",
#              ftps_max_connections = 2
#   port 990   a second vsftpd, implicit FTPS (implicit_ssl=YES): implicit_tls = true, the same
#              range
#   port 2121  proftpd with mod_tls, which implements CCC (RFC 4217 section 12.3): TLSRequired
#              auth+data, passive range 41000-41099: ftps = "allow-uninspected", no range: its
#              data connections get through only because pinhole reads the cleared control
#              connection's PASV/EPSV/PORT
#   port 2122  a fake FTP server (tests/e2e/ftps_probe.py fake-server) that answers 234 to AUTH
#              TLS and then reads cleartext: ftps = "allow-uninspected"
#
# and, in the server namespace, a plain TCP listener on 0.0.0.0:40100 (in pinhole's range, not
# in vsftpd's) and a second server address, 192.0.2.20; the client namespace has a second
# address, 198.51.100.66 (ph_add_third_host).
#
# Checks, in each mode (offload, inspect-all), file contents compared byte for byte:
#  1. lftp (ftp:ssl-force, ftp:ssl-protect-data) downloads and uploads over FTPS; curl
#     --ssl-reqd downloads and uploads; the event log has a tls_started notice and an admit
#     record (pinhole, event "admit", parent the control connection) for each data connection,
#     and no pinhole "open" for the encrypted session (pinhole cannot read its PASV).
#  2. With an FTPS session held open (ftplib.FTP_TLS, logged in, PROT P): with two connections
#     to the range held open a third times out (ftps_max_connections = 2). Another session, after
#     one download: the client's second address does not reach server:40100 (time-out: only a
#     firewall that drops can make a listening port time out); nor does the server's second
#     address; the client's own address does, and connections that ended do not count: two more,
#     one after the other, connect too; after QUIT and the close, the own address no longer
#     reaches server:40100. The listener's log shows it never saw the refused connections, the
#     event log admits none of them.
#  3. CCC with proftpd: curl --ftp-ssl-ccc downloads and uploads (PROT P data connections after
#     the cleared control connection); python ftplib FTP_TLS.ccc() then a passive and an active
#     download and a passive upload; a tls_cleared notice and normal pinholes (open, then use)
#     for the session. ftplib ccc() then PORT naming the client's second address: reset,
#     violation ftp_bounce, and proftpd's command log never shows the PORT.
#     lftp's ftp:ssl-use-ccc is not used: see check_ccc_lftp_note below for why.
#  4. The fake server: AUTH TLS, 234, then cleartext USER/PORT instead of a TLS handshake: the
#     connection is reset, violation ftp_tls_invalid, and the fake server's log never shows the
#     USER.
#  5. Implicit FTPS on port 990: curl ftps:// downloads and uploads; admit records for them.
#  6. A SIGHUP reload with ftps = "deny" on the port 21 rule: curl --ssl-reqd fails at once,
#     violation ftp_tls_denied, vsftpd never received the AUTH; then a clean stop (SIGTERM: exit
#     status 0, no PINHOLE rule left).
#
# Mode "bare" (not run by default) runs the same clients without pinhole, through a router that
# forwards everything (FORWARD policy ACCEPT): it validates the test bed (every server, client and
# probe works; TLS handshakes, PROT P, CCC, uploads) and shows that each refusal above is the
# firewall's: without it the second addresses, the third connection, the connection after the
# session, the bounce PORT (proftpd answers it: 500) and the fake server's cleartext USER all get
# through. No pinhole binary is needed for it.
#
# Usage:  tests/e2e/ftps.sh [MODE...]        (as root; MODE: offload, inspect-all, bare;
#                                             default: offload inspect-all)
# Environment:
#   PINHOLE_BIN=path     the binary to test; default: `cargo build --locked --bin pinhole` first,
#                        then target/debug/pinhole (as tests/e2e/nfqueue.sh)
#   PH_PREFIX=phftps-    namespace name prefix (see scripts/netns-lib.sh)
#   PH_KEEP_WORKDIR=1    keep the work dir (logs, configs, files) after the run
#   E2E_TIME_LIMIT=300   seconds before the whole run is stopped
#
# Output is TAP-like (tests/e2e/tap.sh): one "ok N - ..." / "not ok N - ..." line per check,
# diagnostics as "# ..." lines, and a last line "e2e: N passed, N failed". Exit status 0 when
# every check passed (or when skipped: not root), 1 when any failed. Traffic only flows between
# the namespaces this script creates; everything it starts is stopped and removed on any exit.
# About a minute per mode.

set -uo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$E2E_DIR/../.." && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "# skip: tests/e2e/ftps.sh needs root (network namespaces, iptables, NFQUEUE);" \
         "run it as root to test pinhole's FTPS support inline"
    exit 0
fi

MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(offload inspect-all)
NEED_PINHOLE=0
for m in "${MODES[@]}"; do
    case $m in
        offload|inspect-all) NEED_PINHOLE=1 ;;
        bare) ;;
        *) echo "usage: $0 [offload|inspect-all|bare]..." >&2; exit 2 ;;
    esac
done

# --------------------------------------------------------------------------
# Test bed library, tools (installed if missing), pinhole
# --------------------------------------------------------------------------
: "${PH_PREFIX:=phftps-}"
# vsftpd's passive range: 40000-40099. pinhole's range for the session is 40000-40100, so
# port 40100 is in pinhole's range but no vsftpd data port: the plain listener's.
PH_PASV_MIN=40000
PH_PASV_MAX=40099
# shellcheck source=scripts/netns-lib.sh
. "$REPO_DIR/scripts/netns-lib.sh"

ph_ensure_tools ftps || { echo "Bail out! missing tools could not be installed"; exit 1; }

# proftpd (the FTPS server with CCC) cannot be installed beside vsftpd (both Conflict:
# ftp-server): scripts/install-deps.sh unpacks it (ftps group) under this directory.
UNPACKED=$("$REPO_DIR/scripts/install-deps.sh" --unpacked-root)
PROFTPD=$UNPACKED/usr/sbin/proftpd
[ -x "$PROFTPD" ] || { echo "Bail out! no $PROFTPD (scripts/install-deps.sh ftps unpacks it)"; exit 1; }

if [ "$NEED_PINHOLE" = 1 ]; then
    ph_pinhole_bin run || exit 1
fi

# --------------------------------------------------------------------------
# Test bed
# --------------------------------------------------------------------------
SV4=$PH_SERVER_V4 CV4=$PH_CLIENT_V4
CV4_OTHER=$PH_THIRD_V4          # the client namespace's second address
SV4_OTHER=192.0.2.20            # the server namespace's second address
RANGE_PORT=40100                # the plain listener: in pinhole's range, outside vsftpd's
PORT_CCC=2121 PORT_FAKE=2122 PORT_IMPLICIT=990
PROBE=$E2E_DIR/ftps_probe.py
FTP_PROBE=$E2E_DIR/ftp_probe.py
PJ=$E2E_DIR/pj.py

# Clients: never a proxy, bounded time, no URL globbing.
CURL=(curl -sS --noproxy '*' --globoff --max-time 30)
# How long a connection that must be refused is given before it counts as timed out.
BLOCKED_WAIT=3

# --------------------------------------------------------------------------
# TAP-like reporting
# --------------------------------------------------------------------------
# shellcheck source=tests/e2e/tap.sh
. "$E2E_DIR/tap.sh"
# shellcheck source=tests/e2e/inline-lib.sh
. "$E2E_DIR/inline-lib.sh"
MODE=setup

with_pinhole() { [ "$MODE" != bare ]; }

# --------------------------------------------------------------------------
# pinhole: start, stop, query (as tests/e2e/nfqueue.sh)
# --------------------------------------------------------------------------
RULES=""            # the file pinhole loads
CTL=""              # its control socket
STATE=""            # its state file
EVENTS=""           # its event log (one per mode)
PINHOLE_PID=""
PINHOLE_LOG=""
PINHOLE_STARTS=0
EXIT_STATUS=""

snapshot_stats() {
    pinhole_alive || return 0
    { echo "== after: $1"; ctl stats 2>&1; } >> "$PH_WORKDIR/failure-stats.txt"
}

# pinhole_start: start the daemon in the fw namespace and wait until it answers
# `pinhole status` (at most 10 s; fails at once if it exits).
pinhole_start() {
    PINHOLE_STARTS=$((PINHOLE_STARTS + 1))
    PINHOLE_LOG=$PH_WORKDIR/pinhole-$PINHOLE_STARTS-$MODE.log
    echo "pinhole run --mode $MODE (log $PINHOLE_LOG)"
    # As nfqueue.sh: offload mode with the kernel's helpers attached (the default), inspect-all
    # without them.
    local -a mode_args=()
    [ "$MODE" = inspect-all ] && mode_args=(--no-kernel-helpers)
    ph_start_bg pinhole "$PH_NS_FW" "$PINHOLE_LOG" \
        "$PINHOLE_BIN" run --rules "$RULES" --queues 0-1 --mode "$MODE" \
        --install-rules --control "$CTL" --state-file "$STATE" --events "$EVENTS" -v \
        "${mode_args[@]}"
    PINHOLE_PID=$PH_LAST_PID
    wait_ready
}

check_started() {
    pinhole_start || return 1
    chain_installed
}

check_clean_stop() {
    pinhole_signal_exit TERM || return 1
    [ "$EXIT_STATUS" = 0 ] || { echo "exit status $EXIT_STATUS, not 0"; return 1; }
    if fw_save | grep -i pinhole; then
        echo "^ left in the fw namespace's iptables/ip6tables rules"
        return 1
    fi
    echo "no PINHOLE chain or rule left (v4, v6)"
}

# --------------------------------------------------------------------------
# The event log (as tests/e2e/nfqueue.sh)
# --------------------------------------------------------------------------
# events_match EXPR: some record r of the event log makes the Python expression EXPR true.
events_match() {
    python3 - "$EVENTS" "$1" <<'PY'
import json, sys
path, expr = sys.argv[1], sys.argv[2]
try:
    records = [json.loads(line) for line in open(path)]
except FileNotFoundError:
    records = []
hits = [r for r in records if eval(expr, {}, {"r": r})]
print("%d of %d records match: %s" % (len(hits), len(records), expr))
if hits:
    print(json.dumps(hits[-1]))
sys.exit(0 if hits else 1)
PY
}

# events_count EXPR: how many records match.
events_count() {
    python3 - "$EVENTS" "$1" <<'PY'
import json, sys
path, expr = sys.argv[1], sys.argv[2]
try:
    records = [json.loads(line) for line in open(path)]
except FileNotFoundError:
    records = []
print(sum(1 for r in records if eval(expr, {}, {"r": r})))
PY
}
events_count_at_least() { [ "$(events_count "$1")" -ge "$2" ]; }

# events_grown EXPR BEFORE MIN: the count of matching records grew by MIN from BEFORE (5 s).
events_grown() {
    local expr=$1 before=$2 min=$3
    if ph_wait_for "$min more records" 5 events_count_at_least "$expr" $((before + min)); then
        echo "$before -> $(events_count "$expr") records: $expr"
        events_match "$expr" | tail -n 1
        return 0
    fi
    echo "did not grow by $min: $before -> $(events_count "$expr") records: $expr"
    return 1
}

# Records of one control connection to the server's PORT.
flow_to() { echo "(r.get('flow') or '').endswith('$SV4:$1')"; }
parent_to() { echo "(r.get('parent') or '').endswith('$SV4:$1')"; }
flow_session() { echo "(r.get('session') or '').endswith('$SV4:$1')"; }
admit_to() {
    echo "r['type'] == 'pinhole' and r['event'] == 'admit' and $(parent_to "$1") \
        and (r.get('child') or '').startswith('tcp $CV4:')"
}
notice_on() { echo "r['type'] == 'notice' and r['event'] == '$1' and $(flow_to "$2")"; }
violation_on() { echo "r['type'] == 'violation' and r['reason'] == '$1' and $(flow_to "$2")"; }

# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------
# vsftpd with implicit FTPS on 990: the explicit FTPS config of netns-lib.sh (tls variant, the
# same passive range) with implicit_ssl=YES, its own port and log.
start_vsftpd_implicit() {
    local conf=$PH_WORKDIR/vsftpd-implicit.conf
    ph_write_vsftpd_conf "$conf" tls
    sed -i -e "s/^listen_port=21\$/listen_port=$PORT_IMPLICIT/" \
        -e "s|^vsftpd_log_file=.*|vsftpd_log_file=$PH_WORKDIR/vsftpd-implicit.log|" "$conf"
    echo "implicit_ssl=YES" >> "$conf"
    grep -q "^listen_port=$PORT_IMPLICIT\$" "$conf" || { echo "$conf: no listen_port"; return 1; }
    ph_start_bg vsftpd-implicit "$PH_NS_SERVER" "$PH_WORKDIR/vsftpd-implicit.out" vsftpd "$conf"
    ph_wait_listen "$PH_NS_SERVER" tcp "$PORT_IMPLICIT" ||
        { cat "$PH_WORKDIR/vsftpd-implicit.out"; return 1; }
}

# proftpd with mod_tls (the unpacked package: its modules from the unpacked tree), anonymous
# download and upload like vsftpd, on PORT_CCC.
write_proftpd_conf() {
    cat > "$1" <<EOF
# generated by tests/e2e/ftps.sh: explicit FTPS with CCC (RFC 4217 section 12.3)
ServerName "pinhole test proftpd"
ServerType standalone
DefaultServer on
Port $PORT_CCC
# IPv4 only, on the server's address: with IPv6 on (or no DefaultAddress) proftpd resolves the
# machine's host name at start, an AAAA query that /etc/hosts does not answer, which would go to
# the host's resolver from inside the test namespace.
UseIPv6 off
DefaultAddress $SV4
User nobody
Group nogroup
Umask 022
MaxInstances 30
ScoreboardFile $PH_WORKDIR/proftpd.scoreboard
PidFile $PH_WORKDIR/proftpd.pid
DelayTable none
WtmpLog off
UseReverseDNS off
UseFtpUsers off
RequireValidShell off
ModulePath $UNPACKED/usr/lib/proftpd
LoadModule mod_tls.c
SystemLog $PH_WORKDIR/proftpd-system.log
# Every command with its argument (LogFormat "default": %r is the command line).
ExtendedLog $PH_WORKDIR/proftpd-commands.log ALL
PassivePorts 41000 41099
AllowOverwrite on
TLSEngine on
TLSLog $PH_WORKDIR/proftpd-tls.log
TLSProtocol TLSv1.2 TLSv1.3
# auth+data: the login must be over TLS and the data connections protected (PROT P), but the
# control connection may be cleared (CCC). With TLSRequired on, CCC is refused: "534 Unwilling to
# accept security parameters".
TLSRequired auth+data
TLSRSACertificateFile $PH_WORKDIR/tls/cert.pem
TLSRSACertificateKeyFile $PH_WORKDIR/tls/key.pem
TLSVerifyClient off
# ftplib and curl do not resume the control connection's TLS session on data connections.
TLSOptions NoSessionReuseRequired
<Anonymous $PH_WORKDIR/ftp>
  User ftp
  Group nogroup
  UserAlias anonymous ftp
  AnonRequirePassword off
  RequireValidShell off
  <Directory upload>
    <Limit STOR>
      AllowAll
    </Limit>
  </Directory>
</Anonymous>
EOF
}

start_proftpd() {
    local conf=$PH_WORKDIR/proftpd.conf
    write_proftpd_conf "$conf"
    # Called by name, from the unpacked tree first on PATH (so scripts/check-deps.py sees the
    # call and checks that the install step provides it).
    ph_in_server env PATH="$UNPACKED/usr/sbin:$PATH" proftpd -t -c "$conf" || return 1
    ph_start_bg proftpd "$PH_NS_SERVER" "$PH_WORKDIR/proftpd.out" \
        env PATH="$UNPACKED/usr/sbin:$PATH" proftpd -n -c "$conf"
    ph_wait_listen "$PH_NS_SERVER" tcp "$PORT_CCC" ||
        { cat "$PH_WORKDIR/proftpd.out" "$PH_WORKDIR/proftpd-system.log"; return 1; }
}

setup_testbed() {
    ph_topology_up || return 1
    ph_add_third_host || return 1
    ph_in_server ip addr add "$SV4_OTHER/24" dev "$PH_IF_SERVER" || return 1
    ph_content_init
    ph_gen_bytes $((1024 * 1024)) 9 > "$PH_WORKDIR/client/upload-1m.bin"
    ph_make_cert || return 1
    ph_start_vsftpd tls || return 1
    start_vsftpd_implicit || return 1
    start_proftpd || return 1
    ph_start_bg listener "$PH_NS_SERVER" "$PH_WORKDIR/listener.out" \
        python3 "$PROBE" listen "$RANGE_PORT" "$PH_WORKDIR/listener.log"
    ph_wait_listen "$PH_NS_SERVER" tcp "$RANGE_PORT" || return 1
    ph_start_bg fake "$PH_NS_SERVER" "$PH_WORKDIR/fake.out" \
        python3 "$PROBE" fake-server "$PORT_FAKE" "$PH_WORKDIR/fake.log"
    ph_wait_listen "$PH_NS_SERVER" tcp "$PORT_FAKE" || return 1
    ph_in_server ss -ltn
}

# --------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------
RULES_FTPS="" RULES_DENY=""

# write_rules FILE VSFTPD_FTPS_LINES: the policy; the port 21 rule's [rule.ftp] lines given.
write_rules() {
    cat > "$1" <<EOF
# generated by tests/e2e/ftps.sh
default_action = "deny"

[zones.inside]
interfaces = ["lan0"]
networks = ["192.0.2.0/24", "2001:db8:2::/64"]

[zones.server]
networks = ["$SV4", "$PH_SERVER_V6"]

[zones.outside]
interfaces = ["wan0"]
networks = ["0.0.0.0/0", "::/0"]

# vsftpd, explicit FTPS (AUTH TLS).
[[rule]]
name = "ftps-vsftpd"
from = "outside"
to = "server"
action = "allow"
inspect = "ftp"
ports = [21]

[rule.ftp]
$2

# vsftpd, implicit FTPS: TLS from the first byte.
[[rule]]
name = "ftps-implicit"
from = "outside"
to = "server"
action = "allow"
inspect = "ftp"
ports = [$PORT_IMPLICIT]

[rule.ftp]
implicit_tls = true
ftps = "allow-passive-range"
ftps_passive_ports = "40000-40100"

# proftpd, explicit FTPS with CCC: no range; after CCC the cleartext is inspected again.
[[rule]]
name = "ftps-ccc"
from = "outside"
to = "server"
action = "allow"
inspect = "ftp"
ports = [$PORT_CCC]

[rule.ftp]
ftps = "allow-uninspected"

# The fake server that answers 234 and speaks no TLS.
[[rule]]
name = "ftps-fake"
from = "outside"
to = "server"
action = "allow"
inspect = "ftp"
ports = [$PORT_FAKE]

[rule.ftp]
ftps = "allow-uninspected"
EOF
}

setup_rules() {
    local d=$PH_WORKDIR/rules
    mkdir -p "$d"
    RULES_FTPS=$d/ftps.toml
    RULES_DENY=$d/ftps-deny.toml
    write_rules "$RULES_FTPS" 'ftps = "allow-passive-range"
ftps_passive_ports = "40000-40100"
ftps_max_connections = 2'
    write_rules "$RULES_DENY" 'ftps = "deny"'
    "$PINHOLE_BIN" check-rules "$RULES_FTPS" "$RULES_DENY"
}

# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

# lftp_ftps NAME COMMANDS...: one lftp session over FTPS to vsftpd.
lftp_ftps() {
    local name=$1 script out
    shift
    script=$PH_WORKDIR/client/lftp-$name.lftp
    out=$PH_WORKDIR/client/lftp-$name.out
    {
        echo "set cmd:fail-exit yes"
        # AUTH TLS or fail; lftp skips TLS for anonymous logins unless told otherwise.
        echo "set ftp:ssl-force yes"
        echo "set ftp:ssl-allow-anonymous yes"
        echo "set ftp:ssl-protect-data yes"
        echo "set ftp:ssl-protect-list yes"
        echo "set ssl:verify-certificate no"
        echo "set ftp:passive-mode true"
        echo "set net:max-retries 1"
        echo "set net:timeout 5"
        echo "set net:reconnect-interval-base 1"
        echo "set xfer:clobber yes"
        echo "debug 5"
        echo "open ftp://$SV4"
        printf '%s\n' "$@"
        echo "quit"
    } > "$script"
    (cd "$PH_WORKDIR/client" &&
        HOME=$PH_WORKDIR/client ph_in_client timeout 60 lftp -f "$script") > "$out" 2>&1
    local rc=$?
    # (the protocol lines, not the certificate warnings)
    grep -aE '^(--->|<---) [A-Z0-9]' "$out"
    echo "lftp exit status $rc"
    return $rc
}

# ftps_get URL FILE [CURL_OPTIONS...]: download, compare with ftp/FILE.
ftps_get() {
    local url=$1 file=$2 out
    shift 2
    out=$PH_WORKDIR/client/got-$MODE-$file
    rm -f "$out"
    client "${CURL[@]}" -k "$@" -o "$out" "$url" &&
        cmp "$PH_WORKDIR/ftp/$file" "$out" && echo "$file: $(stat -c %s "$out") bytes, identical"
}

# ftps_put URL_DIR LOCAL REMOTE [CURL_OPTIONS...]: upload client/LOCAL as upload/REMOTE, compare.
ftps_put() {
    local url=$1 src=$PH_WORKDIR/client/$2 remote=$3
    shift 3
    client "${CURL[@]}" -k "$@" -T "$src" "$url/upload/$remote" &&
        cmp "$src" "$PH_WORKDIR/ftp/upload/$remote" &&
        echo "upload/$remote: $(stat -c %s "$src") bytes, identical"
}

# What a connection that pinhole must refuse does: time out under pinhole, connect without it.
blocked() { if with_pinhole; then echo timeout; else echo connected; fi; }

# --------------------------------------------------------------------------
# 1. Explicit FTPS with vsftpd
# --------------------------------------------------------------------------
ADMITS21=0
# One session, four data connections one after the other (a listing, a download, an upload,
# a download): at most one open at a time, within ftps_max_connections = 2.
check_lftp_ftps() {
    local got=$PH_WORKDIR/client/lftp-$MODE-medium.bin small=$PH_WORKDIR/client/lftp-$MODE-small.txt
    rm -f "$got" "$small"
    lftp_ftps "tls-$MODE" \
        "cls" \
        "get medium.bin -o $got" \
        "put $PH_WORKDIR/client/upload-1m.bin -o upload/lftp-$MODE.bin" \
        "get small.txt -o $small" || return 1
    if ! grep -q '^---> AUTH TLS' "$PH_WORKDIR/client/lftp-tls-$MODE.out" ||
            ! grep -q '^---> PROT P' "$PH_WORKDIR/client/lftp-tls-$MODE.out"; then
        echo "no AUTH TLS / PROT P in the dialogue"
        return 1
    fi
    # The listing came back through its data connection.
    grep -q 'medium.bin' "$PH_WORKDIR/client/lftp-tls-$MODE.out" || { echo "no listing"; return 1; }
    cmp "$PH_WORKDIR/ftp/medium.bin" "$got" &&
        cmp "$PH_WORKDIR/client/upload-1m.bin" "$PH_WORKDIR/ftp/upload/lftp-$MODE.bin" &&
        cmp "$PH_WORKDIR/ftp/small.txt" "$small" &&
        echo "medium.bin, upload/lftp-$MODE.bin, small.txt identical"
}

check_admits_vsftpd() {
    events_has "$(notice_on tls_started 21)" || return 1
    events_grown "$(admit_to 21) and 40000 <= int(r['child'].rsplit(':', 1)[1]) <= 40100" \
        "$ADMITS21" 6 || return 1
    # The session is encrypted: pinhole reads no PASV in it and opens no pinhole of its own.
    ! events_match "r['type'] == 'pinhole' and r['event'] == 'open' and $(parent_to 21)"
}

# The transfer log records what it can of the encrypted sessions: one FTPS record per data
# connection the range admitted, with its bytes; curl's download of medium.bin and its upload of
# upload-1m.bin are there with the files' sizes (PROT P: TLS records add to them, so at least
# the size and less than 2 % more), and no name.
check_transfers_vsftpd() {
    local down up
    down=$(stat -c %s "$PH_WORKDIR/ftp/medium.bin")
    up=$(stat -c %s "$PH_WORKDIR/client/upload-1m.bin")
    local ftps
    ftps="r['type'] == 'transfer' and r['command'] == 'FTPS' and $(flow_session 21) \
        and r['path'] is None and r['bytes_source'] == 'pinhole'"
    events_has "$ftps and r['direction'] == 'download' \
        and $down <= r['bytes_down'] < $down * 1.02" || return 1
    events_has "$ftps and r['direction'] == 'upload' \
        and $up <= r['bytes_up'] < $up * 1.02" || return 1
    events_match "$ftps" | tail -n 2
}

# --------------------------------------------------------------------------
# 2. Connections into the range while an FTPS session is held
# --------------------------------------------------------------------------
# hold_start NAME [--get REMOTE EXPECTED]: an FTPS session held open (ftps_probe.py hold).
HOLD_DIR=""
hold_start() {
    HOLD_DIR=$PH_WORKDIR/hold-$1-$MODE
    shift
    rm -rf "$HOLD_DIR"
    mkdir -p "$HOLD_DIR"
    ph_start_bg hold "$PH_NS_CLIENT" "$HOLD_DIR/log" \
        python3 "$PROBE" hold "$SV4" "$HOLD_DIR" --lifetime 120 "$@"
    if ! ph_wait_for "held FTPS session" 20 test -e "$HOLD_DIR/ready"; then
        cat "$HOLD_DIR/log"
        return 1
    fi
    cat "$HOLD_DIR/log"
}

hold_quit() {
    touch "$HOLD_DIR/quit"
    ph_wait_for "QUIT and close" 10 test -e "$HOLD_DIR/closed" || { cat "$HOLD_DIR/log"; return 1; }
    cat "$HOLD_DIR/log"
    grep -q '^221' "$HOLD_DIR/closed"
}

# range_connect EXPECT [--source ADDR] [HOST]: one connection attempt to HOST:40100.
range_connect() {
    local expect=$1 host=$SV4
    local -a src=()
    shift
    if [ "${1:-}" = --source ]; then src=(--source "$2"); shift 2; fi
    [ $# -gt 0 ] && host=$1
    client python3 "$FTP_PROBE" connect "$host" "$RANGE_PORT" --timeout "$BLOCKED_WAIT" \
        --expect "$expect" "${src[@]}"
}

# listener_saw PATTERN: the listener logged an accept matching the ERE PATTERN.
listener_saw() { grep -E "^accept $1" "$PH_WORKDIR/listener.log"; }

check_range_own() {
    local before
    before=$(grep -c "^accept $CV4 " "$PH_WORKDIR/listener.log")
    range_connect connected || return 1
    ph_wait_for "the listener's accept" 5 \
        test "$(grep -c "^accept $CV4 " "$PH_WORKDIR/listener.log")" -gt "$before" || return 1
    tail -n 1 "$PH_WORKDIR/listener.log"
}

# ftps_max_connections counts the connections open at a time: those that ended (FIN both ways,
# as ftp_probe.py's and the listener's closes) do not count. With the session's download and the
# first connection to the range over, two more, one after the other, must connect.
check_range_sequential() {
    local i
    for i in 1 2; do
        sleep 0.5
        check_range_own || return 1
    done
}

check_range_other_client() {
    range_connect "$(blocked)" --source "$CV4_OTHER" || return 1
    if with_pinhole && listener_saw "$CV4_OTHER "; then
        echo "^ the listener saw a connection from $CV4_OTHER"
        return 1
    fi
    return 0
}

check_range_other_server() {
    range_connect "$(blocked)" "$SV4_OTHER" || return 1
    if with_pinhole && listener_saw "[^ ]+ [0-9]+ $SV4_OTHER "; then
        echo "^ the listener saw a connection to $SV4_OTHER"
        return 1
    fi
    return 0
}

check_range_max() {
    client python3 "$PROBE" many "$SV4" "$RANGE_PORT" 3 --timeout "$BLOCKED_WAIT" \
        --expect-last "$(blocked)"
}

check_range_after_close() {
    range_connect "$(blocked)"
}

# The event log admitted connections of the held session to its own client and server only.
check_admits_session() {
    events_match "$(admit_to 21) and r['child'].endswith('$SV4:$RANGE_PORT')" || return 1
    ! events_match "r['type'] == 'pinhole' and r['event'] == 'admit' \
        and ('$CV4_OTHER' in (r.get('child') or '') or '$SV4_OTHER' in (r.get('child') or ''))"
}

# --------------------------------------------------------------------------
# 3. CCC with proftpd
# --------------------------------------------------------------------------
# Why not lftp's ftp:ssl-use-ccc: with lftp 4.9.2 (Debian 12) it fails against proftpd most of
# the time with "**** Peer closed connection". proftpd answers CCC with "200 Clearing control
# channel protection" and sends its TLS close_notify right behind it. lftp's Ftp::ReceiveResp()
# keeps reading lines after handling the 200 (it only then enters WAITING_CCC_SHUTDOWN); when the
# close_notify arrived in the same read, the TLS buffer is already at EOF, ReceiveOneLine() logs
# "Peer closed connection" and drops the connection. It works only when the alert comes in a
# later read (1 of 6 tries here, without pinhole). curl (--ftp-ssl-ccc, OpenSSL) and python ftplib
# (FTP_TLS.ccc(), ssl unwrap) do the shutdown properly and are used instead. CCC does not need
# ftp:ssl-protect-data no: PROT P data connections work after it (proftpd TLSRequired auth+data).
CCC_OPENS=0 CCC_USES=0
check_ccc_curl() {
    ftps_get "ftp://$SV4:$PORT_CCC/medium.bin" medium.bin --ssl-reqd --ftp-ssl-ccc || return 1
    ftps_put "ftp://$SV4:$PORT_CCC" upload-1m.bin "ccc-curl-$MODE.bin" --ssl-reqd --ftp-ssl-ccc ||
        return 1
    grep -E "\"(CCC|EPSV|PASV|RETR [^\"]*|STOR [^\"]*)\"" \
        "$PH_WORKDIR/proftpd-commands.log" | tail -n 6
}

check_ccc_ftplib() {
    client python3 "$PROBE" ccc-transfer "$SV4" "$PORT_CCC" medium.bin \
        "$PH_WORKDIR/ftp/medium.bin" --upload "$PH_WORKDIR/client/upload.bin" \
        "upload/ccc-ftplib-$MODE.bin" || return 1
    cmp "$PH_WORKDIR/client/upload.bin" "$PH_WORKDIR/ftp/upload/ccc-ftplib-$MODE.bin" &&
        echo "upload/ccc-ftplib-$MODE.bin identical"
}

# After CCC pinhole opens normal pinholes again: curl's download and upload and ftplib's three
# transfers are at least 5 opened and used.
check_ccc_events() {
    # (allow-uninspected: tls_started or the older tls_uninspected at the 234)
    events_has "r['type'] == 'notice' and r['event'] in ('tls_started', 'tls_uninspected') \
        and $(flow_to $PORT_CCC)" &&
        events_has "$(notice_on tls_cleared $PORT_CCC)" &&
        events_grown "r['type'] == 'pinhole' and r['event'] == 'open' and $(parent_to $PORT_CCC)" \
            "$CCC_OPENS" 5 &&
        events_grown "r['type'] == 'pinhole' and r['event'] == 'use' and $(parent_to $PORT_CCC)" \
            "$CCC_USES" 5
}

check_ccc_bounce() {
    local port_cmd="PORT ${CV4_OTHER//./,}"
    if with_pinhole; then
        client python3 "$PROBE" ccc-bounce "$SV4" "$PORT_CCC" "$CV4_OTHER" --expect reset ||
            return 1
        if grep -F "$port_cmd" "$PH_WORKDIR/proftpd-commands.log"; then
            echo "^ proftpd received the PORT"
            return 1
        fi
        events_has "$(violation_on ftp_bounce $PORT_CCC) and '$CV4_OTHER' in r['detail']"
    else
        # Without a firewall proftpd answers it (500 Illegal PORT command) and logs it.
        client python3 "$PROBE" ccc-bounce "$SV4" "$PORT_CCC" "$CV4_OTHER" --expect reply &&
            ph_wait_for "the PORT in proftpd's log" 5 grep -F "$port_cmd" \
                "$PH_WORKDIR/proftpd-commands.log"
    fi
}

# --------------------------------------------------------------------------
# 4. A fake 234: cleartext after AUTH TLS
# --------------------------------------------------------------------------
check_fake_auth() {
    local before
    before=$(grep -c "'USER x'" "$PH_WORKDIR/fake.log")
    if with_pinhole; then
        client python3 "$PROBE" fake-auth "$SV4" "$PORT_FAKE" --expect reset || return 1
        sleep 0.5
        grep "recv " "$PH_WORKDIR/fake.log" | tail -n 3
        if [ "$(grep -c "'USER x'" "$PH_WORKDIR/fake.log")" != "$before" ]; then
            echo "^ the fake server received the cleartext USER"
            return 1
        fi
        events_has "$(violation_on ftp_tls_invalid $PORT_FAKE)"
    else
        client python3 "$PROBE" fake-auth "$SV4" "$PORT_FAKE" --expect reply || return 1
        ph_wait_for "USER x in the fake server's log" 5 \
            test "$(grep -c "'USER x'" "$PH_WORKDIR/fake.log")" -gt "$before"
    fi
}

# --------------------------------------------------------------------------
# 5. Implicit FTPS
# --------------------------------------------------------------------------
ADMITS990=0
check_implicit() {
    ftps_get "ftps://$SV4:$PORT_IMPLICIT/medium.bin" medium.bin &&
        ftps_put "ftps://$SV4:$PORT_IMPLICIT" upload.bin "implicit-$MODE.bin"
}

check_admits_implicit() {
    events_grown "$(admit_to $PORT_IMPLICIT) \
        and 40000 <= int(r['child'].rsplit(':', 1)[1]) <= 40100" "$ADMITS990" 2
}

# --------------------------------------------------------------------------
# 6. ftps = "deny"
# --------------------------------------------------------------------------
check_deny() {
    local auths t0
    auths=$(grep -c '"AUTH ' "$PH_WORKDIR/vsftpd-tls.log")
    t0=$SECONDS
    if ftps_get "ftp://$SV4/small.txt" small.txt --ssl-reqd --max-time 10; then
        echo "the FTPS download worked"
        return 1
    fi
    echo "curl --ssl-reqd failed after $((SECONDS - t0)) s"
    # Reset at once, not a time-out.
    [ $((SECONDS - t0)) -lt 8 ] || return 1
    if [ "$(grep -c '"AUTH ' "$PH_WORKDIR/vsftpd-tls.log")" != "$auths" ]; then
        echo "vsftpd received an AUTH:"
        grep '"AUTH ' "$PH_WORKDIR/vsftpd-tls.log" | tail -n 1
        return 1
    fi
    events_has "$(violation_on ftp_tls_denied 21)"
}

# --------------------------------------------------------------------------
# One mode
# --------------------------------------------------------------------------
run_mode() {
    MODE=$1
    local t0=$SECONDS
    EVENTS=$PH_WORKDIR/events-$MODE.jsonl
    note "--- mode $MODE"
    if with_pinhole; then
        ph_in_fw iptables -P FORWARD DROP && ph_in_fw ip6tables -P FORWARD DROP
        check "FORWARD policy DROP without pinhole: the FTPS control port times out" \
            client python3 "$FTP_PROBE" connect "$SV4" 21 --timeout 2 --expect timeout
        cp "$RULES_FTPS" "$RULES"
        if ! check "pinhole run starts, installs its chain first in FORWARD (v4, v6)" \
                check_started; then
            note "pinhole did not start in mode $MODE: skipping the rest of this mode"
            ph_stop pinhole
            PINHOLE_PID=""
            purge_leftover_rules
            return
        fi
    else
        ph_in_fw iptables -P FORWARD ACCEPT && ph_in_fw ip6tables -P FORWARD ACCEPT
        note "no pinhole: the router forwards everything"
    fi

    # 1. Explicit FTPS, PROT P, pinhole's range.
    with_pinhole && ADMITS21=$(events_count "$(admit_to 21)")
    check "lftp over FTPS (AUTH TLS, PROT P), one session: LIST, RETR, STOR, RETR (4 data connections in turn)" \
        check_lftp_ftps
    check "curl --ssl-reqd: download" ftps_get "ftp://$SV4/medium.bin" medium.bin --ssl-reqd
    check "curl --ssl-reqd -T: upload" \
        ftps_put "ftp://$SV4" upload-1m.bin "curl-$MODE.bin" --ssl-reqd
    with_pinhole && check "event log: tls_started; an admit for each of the 6 data connections, into 40000-40100; no pinhole opened" \
        check_admits_vsftpd
    with_pinhole && check "transfer log: FTPS records for curl's download and upload, with their sizes and no names" \
        check_transfers_vsftpd

    # 2. The range is the held session's only. A fresh session for the limit (its first two
    # connections are the ones held open), another one for the rest.
    if check "FTPS session held (ftplib FTP_TLS, PROT P)" hold_start max; then
        check "session held: two connections to the range held open, a third: $(blocked)" \
            check_range_max
        check "the session QUITs and is closed" hold_quit
    fi
    ph_stop hold
    if check "FTPS session held (ftplib FTP_TLS, PROT P, a RETR)" \
            hold_start range --get small.txt "$PH_WORKDIR/ftp/small.txt"; then
        check "session held: from the client's second address ($CV4_OTHER): $(blocked)" \
            check_range_other_client
        check "session held: to the server's second address ($SV4_OTHER): $(blocked)" \
            check_range_other_server
        check "session held: the client's address reaches server:$RANGE_PORT" check_range_own
        check "session held: connections that ended do not count: two more in turn connect (the session's 3rd and 4th)" \
            check_range_sequential
        with_pinhole && check "event log: admits for the sessions' own client and server only" \
            check_admits_session
        check "the session QUITs and is closed" hold_quit
        sleep 1
        check "session over: the client's address to server:$RANGE_PORT: $(blocked)" \
            check_range_after_close
    fi
    ph_stop hold

    # 3. CCC.
    if with_pinhole; then
        CCC_OPENS=$(events_count "r['type'] == 'pinhole' and r['event'] == 'open' and $(parent_to $PORT_CCC)")
        CCC_USES=$(events_count "r['type'] == 'pinhole' and r['event'] == 'use' and $(parent_to $PORT_CCC)")
    fi
    check "CCC (proftpd): curl --ftp-ssl-ccc download and upload, PROT P" check_ccc_curl
    check "CCC (proftpd): ftplib ccc(), then RETR passive and active, STOR passive" \
        check_ccc_ftplib
    with_pinhole && check "event log: tls_started (or tls_uninspected), tls_cleared, pinholes opened and used after CCC" \
        check_ccc_events
    if with_pinhole; then
        check "CCC, then a bounce PORT naming $CV4_OTHER: reset, ftp_bounce, proftpd never saw it" \
            check_ccc_bounce
    else
        check "CCC, then a bounce PORT naming $CV4_OTHER: proftpd answers it (no firewall)" \
            check_ccc_bounce
    fi

    # 4. The fake 234.
    if with_pinhole; then
        check "fake server: 234, then cleartext USER: reset, ftp_tls_invalid, the server never saw it" \
            check_fake_auth
    else
        check "fake server: 234, then cleartext USER and PORT answered (no firewall)" \
            check_fake_auth
    fi

    # 5. Implicit FTPS.
    with_pinhole && ADMITS990=$(events_count "$(admit_to $PORT_IMPLICIT)")
    check "implicit FTPS (vsftpd on $PORT_IMPLICIT): curl ftps:// download and upload" \
        check_implicit
    with_pinhole && check "event log: admits for the implicit session's data connections" \
        check_admits_implicit

    # 6. ftps = "deny", and the end.
    if with_pinhole; then
        check "SIGHUP to ftps = \"deny\" on the port 21 rule" reload_with "$RULES_DENY"
        check "ftps = \"deny\": curl --ssl-reqd fails at once, ftp_tls_denied, vsftpd saw no AUTH" \
            check_deny
        check "SIGTERM: exit status 0, no PINHOLE rule left (v4, v6)" check_clean_stop
        if pinhole_alive; then
            ph_stop pinhole
            PINHOLE_PID=""
        fi
        purge_leftover_rules
    fi
    note "mode $MODE: $((SECONDS - t0)) s"
}

# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
main() {
    local t0=$SECONDS
    ph_init || exit 1
    start_watchdog 300
    mkdir -p "$PH_WORKDIR/checks"
    RULES=$PH_WORKDIR/rules.toml
    CTL=$PH_WORKDIR/ctl.sock
    STATE=$PH_WORKDIR/state.json
    if [ "$NEED_PINHOLE" = 1 ]; then
        note "pinhole FTPS e2e: $("$PINHOLE_BIN" --version), modes ${MODES[*]}, work dir $PH_WORKDIR"
    else
        note "FTPS test bed without pinhole: modes ${MODES[*]}, work dir $PH_WORKDIR"
    fi
    ph_versions | sed 's/^/# /'
    note "proftpd $(cat "$UNPACKED/.unpacked/proftpd-core" 2>/dev/null) (unpacked in $UNPACKED)"

    check "test bed: namespaces, second addresses, vsftpd (FTPS, implicit), proftpd, listener, fake server" \
        setup_testbed || { echo "Bail out! no test bed"; exit 1; }
    if [ "$NEED_PINHOLE" = 1 ]; then
        check "rules generated and checked (pinhole check-rules)" setup_rules ||
            { echo "Bail out! no rules (a pinhole without FTPS support?)"; exit 1; }
    fi

    local m
    for m in "${MODES[@]}"; do
        run_mode "$m"
    done

    finish_run "$t0" 40 20
}

main
