#!/usr/bin/env bash
# The main job: shows pinhole judging real FTP and TFTP traffic.
#
# As root (the live demo, about a minute after the build): builds pinhole (release), creates three
# network namespaces -- a client outside, a router, a server inside running vsftpd and tftpd-hpa --
# gives the router the base policy DROP and runs pinhole inline on NFQUEUE there with
# rules/edge-router.toml. Then it shows, with real clients (curl, tftp-hpa, python ftplib):
#   1. passive and active FTP and TFTP working through pinhole;
#   2. the same policy with inspection off (pinhole --no-inspect), where they break;
#   3. inspection on again: attacks refused, and what `pinhole sessions`, `pinhole pinholes` and
#      `pinhole stats` show while an FTP session is open.
# Everything runs inside the namespaces it creates and is removed at the end.
#
# Not as root: replays the captures in pcaps/ (recorded from real servers and clients by
# scripts/record-pcaps.sh, plus crafted attacks) through the engine with the embedded default
# policy, and prints what it decided, capture by capture. It needs no cargo when pinhole is
# built already (target/release/pinhole) or PINHOLE_BIN names a binary.
#
# Environment: PINHOLE_BIN (use this binary, build nothing), PH_PREFIX (namespace names, default
# phdemo-).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO_DIR=$PWD

load_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-}/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "${HOME:-}/.cargo/env"
    fi
}

# pinhole_binary: sets PINHOLE_BIN to the binary to run. PINHOLE_BIN as given; otherwise
# target/release/pinhole, built with cargo when it is missing or older than the sources (and said
# so only then); an existing build is used as it is when there is no cargo.
pinhole_binary() {
    if [ -n "${PINHOLE_BIN:-}" ]; then
        case $PINHOLE_BIN in /*) ;; *) PINHOLE_BIN=$REPO_DIR/$PINHOLE_BIN ;; esac
        [ -x "$PINHOLE_BIN" ] || { echo "demo: PINHOLE_BIN=$PINHOLE_BIN is not an executable" >&2; return 1; }
        return 0
    fi
    PINHOLE_BIN=$REPO_DIR/target/release/pinhole
    if [ -x "$PINHOLE_BIN" ] &&
        [ -z "$(find src rules Cargo.toml Cargo.lock -newer "$PINHOLE_BIN" -print -quit)" ]; then
        return 0
    fi
    load_cargo
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "$PINHOLE_BIN" ]; then
            echo "(cargo is not in PATH: using target/release/pinhole, older than the sources)"
            return 0
        fi
        echo "demo: pinhole is not built and cargo is not in PATH: build it with" >&2
        echo "  cargo build --release    (as a user with the Rust toolchain), or set PINHOLE_BIN" >&2
        return 1
    fi
    echo "Building pinhole (cargo build --release; a few minutes the first time)"
    cargo build --release --locked --quiet --bin pinhole
}

replay_demo() {
    set -e
    pinhole_binary
    local bin=$PINHOLE_BIN capture
    echo "pinhole $($bin --version | cut -d' ' -f2): replaying pcaps/ with the embedded default policy"
    echo "(new TCP 21 and UDP 69 allowed and inspected; everything else needs a pinhole)"
    echo
    $bin default-rules | grep -v '^#' | sed '/^$/d' | sed 's/^/    /'
    for capture in pcaps/*.pcap pcaps/*.pcapng pcaps/crafted/*.pcap; do
        echo
        $bin replay --format text "$capture"
    done
}

if [ "$(id -u)" != 0 ]; then
    echo "Not root: the live demo needs root (network namespaces, iptables, NFQUEUE); run"
    echo "scripts/demo.sh as root to see pinhole inline. Meanwhile, this replays the captures in"
    echo "pcaps/ (recorded from real servers and clients, and crafted attacks)."
    echo
    replay_demo
    exit
fi

# ------------------------------------------------------------------------------------------------
# Live demo
# ------------------------------------------------------------------------------------------------
: "${PH_PREFIX:=phdemo-}"
# shellcheck source=scripts/netns-lib.sh
. "$REPO_DIR/scripts/netns-lib.sh"

FTP_PROBE=$REPO_DIR/tests/e2e/ftp_probe.py
SV4=$PH_SERVER_V4 SV6=$PH_SERVER_V6 CV4=$PH_CLIENT_V4
RULES=$REPO_DIR/rules/edge-router.toml

heading() { printf '\n== %s\n' "$*"; }
say() { printf '   %s\n' "$*"; }
fail() { echo "demo: $*" >&2; exit 1; }

ph_ensure_tools || fail "missing tools"
pinhole_binary || fail "no pinhole binary"

ph_init || fail "cannot initialise"
CTL=$PH_WORKDIR/ctl.sock
EVENTS=$PH_WORKDIR/events.jsonl
DROPS=$PH_WORKDIR/drops.pcap
PINHOLE_PID=""
PINHOLE_LOG=""
ctl() { timeout 5 "$PINHOLE_BIN" "$@" --control "$CTL"; }

# How long a transfer may take: generous while it should work, short while it should not.
WAIT=20
# What a transfer that did not work is called.
FAILED=FAILED

# ------------------------------------------------------------------------------------------------
# Narrated transfers: the command as a user would type it, then one outcome line:
#    OK       204800 bytes, identical, in 23 ms
#    FAILED   after 4.0 s: timed out
#    REFUSED  after 0.1 s: <what the client saw>
# ------------------------------------------------------------------------------------------------
# Microseconds since the epoch (EPOCHREALTIME without its decimal separator, whatever the locale).
now_us() { local t=${EPOCHREALTIME/[.,]/}; echo $((10#$t)); }
T0=0
start_clock() { T0=$(now_us); }
# elapsed: time since start_clock, "31 ms" below a second (transfers inside the test bed are
# quick), "4.0 s" above.
elapsed() {
    local d=$(( $(now_us) - T0 ))
    if [ $d -lt 1000000 ]; then
        printf '%d ms' $((d / 1000))
    else
        printf '%d.%d s' $((d / 1000000)) $((d / 100000 % 10))
    fi
}
# outcome WORD TEXT: the outcome line, its first word in a column of its own.
outcome() { say "   $(printf '%-8s' "$1") $2"; }

# result ORIGINAL COPY ERRFILE: compare, print the outcome line; returns 0 when identical.
result() {
    if [ -s "$2" ] && cmp -s "$1" "$2"; then
        outcome OK "$(stat -c %s "$2") bytes, identical, in $(elapsed)"
        return 0
    fi
    local why
    why=$(grep -v '^$' "$3" 2>/dev/null | tail -n 1)
    [ -n "$why" ] || why="no data"
    outcome "$FAILED" "after $(elapsed): $why"
    return 1
}

# ftp_show LABEL HOST FILE [CURL_OPTIONS...]: download over FTP from the client.
ftp_show() {
    local label=$1 host=$2 file=$3 out=$PH_WORKDIR/client/$3
    shift 3
    say "$label"
    say "   client\$ curl $* -o $file ftp://$host/$file"
    rm -f "$out"
    start_clock
    ph_in_client curl -sS --noproxy '*' --globoff --max-time "$WAIT" "$@" \
        -o "$out" "ftp://$host/$file" 2>"$PH_WORKDIR/err"
    result "$PH_WORKDIR/ftp/$file" "$out" "$PH_WORKDIR/err"
}

# tftp_show LABEL [-6] HOST FILE: TFTP read from the client.
tftp_show() {
    local label=$1 fam=()
    shift
    if [ "$1" = -6 ]; then fam=(-6); shift; fi
    local host=$1 file=$2 out=$PH_WORKDIR/client/$2
    say "$label"
    say "   client\$ tftp ${fam[*]}${fam[*]:+ }-m octet $host -c get $file"
    rm -f "$out"
    start_clock
    (cd "$PH_WORKDIR/client" && ph_in_client timeout "$WAIT" \
        tftp "${fam[@]}" -m octet "$host" -c get "$file") >"$PH_WORKDIR/err" 2>&1
    [ $? = 124 ] && echo "timed out" >> "$PH_WORKDIR/err"
    result "$PH_WORKDIR/tftp/$file" "$out" "$PH_WORKDIR/err"
}

# tftp_put_show LABEL PROMPT NS HOST SRC_DIR FILE DEST_DIR NAME: a TFTP write.
tftp_put_show() {
    local label=$1 prompt=$2 ns=$3 host=$4 src=$5 file=$6 dest=$7 name=$8
    say "$label"
    say "   $prompt\$ tftp -m octet $host -c put $file $name"
    rm -f "$dest/$name"
    start_clock
    (cd "$src" && ph_in "$ns" timeout "$WAIT" tftp -m octet "$host" -c put "$file" "$name") \
        >"$PH_WORKDIR/err" 2>&1
    [ $? = 124 ] && echo "timed out" >> "$PH_WORKDIR/err"
    result "$src/$file" "$dest/$name" "$PH_WORKDIR/err"
}

# The full set, run with and without inspection.
transfers() {
    ftp_show "passive FTP (PASV), what outside clients use" \
        "$SV4" medium.bin --ftp-pasv --disable-epsv
    ftp_show "passive FTP (EPSV) over IPv6" "[$SV6]" medium.bin -g --ftp-pasv
    ftp_show "active FTP (PORT): the server connects back to the client" \
        "$SV4" medium.bin --ftp-port - --disable-eprt
    tftp_show "TFTP read: the server answers from a new port (30000-30009)" "$SV4" image.bin
    tftp_put_show "TFTP backup from a device inside to a TFTP server outside" \
        server "$PH_NS_SERVER" "$CV4" "$PH_WORKDIR/tftp" config.txt \
        "$PH_WORKDIR/tftp-out" "router1-confg-$1"
}

# ------------------------------------------------------------------------------------------------
# pinhole
# ------------------------------------------------------------------------------------------------
STARTS=0
pinhole_start() {   # [EXTRA_ARGS...]
    STARTS=$((STARTS + 1))
    PINHOLE_LOG=$PH_WORKDIR/pinhole-$STARTS.log
    say "fw\$ pinhole run --rules rules/edge-router.toml --install-rules --queues 0-1 \\"
    say "         --events events.jsonl --dump-drops drops.pcap --metrics 9464${*:+ $*}"
    ph_start_bg pinhole "$PH_NS_FW" "$PINHOLE_LOG" "$PINHOLE_BIN" run --rules "$RULES" \
        --install-rules --queues 0-1 --mode offload --control "$CTL" \
        --events "$EVENTS" --dump-drops "$DROPS" --metrics 9464 -v "$@"
    PINHOLE_PID=$PH_LAST_PID
    if ! ph_wait_for "pinhole status" 10 ctl status; then
        cat "$PINHOLE_LOG" >&2
        fail "pinhole did not start"
    fi
}

pinhole_stop() {
    kill -TERM "$PINHOLE_PID" 2>/dev/null
    ph_wait_gone "$PINHOLE_PID" 10
    wait "$PINHOLE_PID" 2>/dev/null
    local rc=$?
    ph_stop pinhole
    PINHOLE_PID=""
    return $rc
}

# wrap_json: JSON Lines on stdin, each record wrapped between its fields at 92 columns (a field is
# never cut), continuation lines indented.
wrap_json() {
    python3 -c '
import json, sys
for line in sys.stdin:
    record = json.loads(line)
    fields = [json.dumps({k: v}, separators=(",", ":"))[1:-1] for k, v in record.items()]
    lines, current = [], "{"
    for i, f in enumerate(fields):
        piece = f + ("," if i < len(fields) - 1 else "}")
        if len(current) + len(piece) > 92 and current.strip() != "{":
            lines.append(current)
            current = "  " + piece
        else:
            current += piece
    lines.append(current)
    print("\n".join(lines))
'
}

# drops_line: "default_deny 3, ftp_bounce 1" from pinhole stats.
drops_line() {
    ctl stats --json | python3 -c '
import json, sys
d = json.load(sys.stdin)["engine"]["drops"]
print(", ".join("%s %d" % kv for kv in sorted(d.items())) or "none")'
}

# log_line REASON: the detail of the last violation with REASON in pinhole's log (it runs -v).
log_line() {
    grep "reason=$1" "$PINHOLE_LOG" | tail -n 1 |
        sed -n 's/.*reason=\([a-z_]*\).*detail="\(.*\)"$/\1: \2/p' | sed 's/\\"/"/g'
}

# ------------------------------------------------------------------------------------------------
# Test bed
# ------------------------------------------------------------------------------------------------
heading "Test bed: three network namespaces"
cat <<EOF
   ${PH_NS_CLIENT} (outside)            ${PH_NS_FW} (the router)                 ${PH_NS_SERVER} (inside)
   $CV4        <--> wan0 ... pinhole ... lan0 <-->  $SV4
   2001:db8:100::10                                             2001:db8:2::10
   curl, tftp, python           iptables FORWARD policy DROP      vsftpd (passive 40000-40100)
   tftpd-hpa (backups)          + pinhole on NFQUEUE 0-1          tftpd-hpa --port-range 30000:30009
EOF
ph_topology_up >/dev/null || fail "cannot create the namespaces"
ph_add_third_host || fail "cannot add the third host"
ph_content_init
ph_start_vsftpd plain || fail "vsftpd did not start"
ph_start_tftpd --port-range 30000:30009 || fail "tftpd-hpa did not start"
ph_start_tftpd_in "$PH_NS_CLIENT" tftpd-out "$PH_WORKDIR/tftp-out" || fail "tftpd-hpa did not start"
# The router's base policy: nothing is forwarded unless pinhole's rules accept it, so a stopped
# pinhole leaves the router closed.
if ! ph_in_fw iptables -P FORWARD DROP || ! ph_in_fw ip6tables -P FORWARD DROP; then
    fail "iptables failed"
fi
say "fw\$ iptables -P FORWARD DROP; ip6tables -P FORWARD DROP"
say "Policy rules/edge-router.toml: $("$PINHOLE_BIN" check-rules "$RULES" | sed 's/^[^:]*: //')"
say "  outside may open only FTP (21) and TFTP (69, read-only) to the server, both inspected;"
say "  inside may go anywhere, FTP and TFTP inspected; nothing else comes in."

# ------------------------------------------------------------------------------------------------
heading "1. pinhole inline, inspecting FTP and TFTP"
pinhole_start
transfers inspect

# ------------------------------------------------------------------------------------------------
heading "2. The same rules without inspection (--no-inspect): a port-based firewall"
say "Control connections and requests still pass (21 and 69 are open), but nothing reads them."
pinhole_stop
pinhole_start --no-inspect
WAIT=4
transfers no-inspect
say "pinhole dropped: $(drops_line)"
say "Passive data connections and the outside TFTP server's reply are new inbound connections no"
say "rule allows: they break. What the server sends out passes anyway (inside may go anywhere),"
say "which is why active FTP and the TFTP read still work -- and so would a TFTP write to the"
say "server, which the policy forbids: only the inspector reads the request."
tftp_put_show "TFTP write to the server (the policy says read-only)" \
    client "$PH_NS_CLIENT" "$SV4" "$PH_WORKDIR/client" upload.bin "$PH_WORKDIR/tftp" \
    "written-without-inspection.bin"
WAIT=20

# ------------------------------------------------------------------------------------------------
heading "3. Inspection on again: attacks refused"
pinhole_stop
pinhole_start
WAIT=4

say "FTP bounce (RFC 2577): PORT naming a third host, $PH_THIRD_V4, on a logged-in session"
say "   client\$ python3 -c 'ftp.sendcmd(\"PORT ${PH_THIRD_V4//./,},156,64\")'"
start_clock
if out=$(ph_in_client python3 "$FTP_PROBE" bounce "$SV4" "$PH_THIRD_V4" --timeout 4 2>&1); then
    if grep -qF "${PH_THIRD_V4//./,}" "$PH_WORKDIR/vsftpd-plain.log"; then
        seen="but vsftpd received the command"
    else
        seen="vsftpd never saw the command"
    fi
    outcome REFUSED "after $(elapsed): $(tail -n 1 <<<"$out"); $seen"
    say "   pinhole: $(log_line ftp_bounce)"
else
    outcome ADMITTED "after $(elapsed): $(tail -n 1 <<<"$out")"
fi

say "A connection into the passive port range without PASV"
say "   client\$ python3 -c 'socket.create_connection((\"$SV4\", $PH_PASV_MIN), timeout=3)'"
start_clock
if ph_in_client python3 "$FTP_PROBE" connect "$SV4" "$PH_PASV_MIN" --timeout 3 >/dev/null 2>&1; then
    outcome REFUSED "after $(elapsed): timed out -- dropped; the server itself would have reset it"
else
    outcome ADMITTED "after $(elapsed): the connection was answered"
fi

FAILED=REFUSED
tftp_put_show "TFTP write to the read-only server" \
    client "$PH_NS_CLIENT" "$SV4" "$PH_WORKDIR/client" upload.bin "$PH_WORKDIR/tftp" \
    "written-with-inspection.bin"
say "   pinhole: $(log_line tftp_write_denied)"
FAILED=FAILED
WAIT=20

# ------------------------------------------------------------------------------------------------
heading "4. What pinhole sees, while an FTP session is open"
dir=$PH_WORKDIR/session
mkdir -p "$dir"
: > "$dir/cmd"
ph_start_bg session "$PH_NS_CLIENT" "$dir/log" \
    python3 "$FTP_PROBE" session "$SV4" "$dir/cmd" "$dir/res" --lifetime 120
ph_wait_for "FTP session" 15 grep -q '^0 ok' "$dir/res" || fail "FTP session did not open"
echo "pasv" >> "$dir/cmd"
ph_wait_for "PASV" 15 grep -q '^1 ' "$dir/res"
say "client: logged in from $CV4 port $(awk '$1 == 0 { print $4 }' "$dir/res"), sent PASV:" \
    "$(awk '$1 == 1 { $1 = $2 = $3 = ""; print }' "$dir/res" | sed 's/^ *//')"
echo
say "\$ pinhole sessions"
ctl sessions | sed 's/^/     /'
echo
say "\$ pinhole pinholes"
ctl pinholes | sed 's/^/     /'
echo
say "\$ pinhole stats | sed '/flows_opened/q'      (the first lines: packets and drops by reason)"
ctl stats | sed '/flows_opened/q' | sed 's/^/     /'
echo "quit" >> "$dir/cmd"
ph_wait_for "QUIT" 10 grep -q '^2 ' "$dir/res"
ph_stop session
echo
say "\$ grep -E '\"(violation|pinhole)\"' events.jsonl | tail -n 3      (the event log, JSON Lines;"
say "                                                               a record per line, wrapped here)"
grep -E '"type":"(violation|pinhole)"' "$EVENTS" | tail -n 3 | wrap_json | sed 's/^/     /'
echo
say "\$ tcpdump -q -nr drops.pcap | head -n 3      (every dropped packet, for Wireshark)"
tcpdump -q -nr "$DROPS" 2>/dev/null | head -n 3 | sed 's/^/     /'
echo
say "\$ curl -s 127.0.0.1:9464/metrics | grep -E '^pinhole_(pinholes|violations)_total' | grep -v ' 0\$'"
ph_in_fw curl -s --max-time 5 http://127.0.0.1:9464/metrics |
    grep -E '^pinhole_(pinholes|violations)_total' | grep -v ' 0$' | sed 's/^/     /'

# ------------------------------------------------------------------------------------------------
heading "5. Stopping"
if pinhole_stop; then
    say "pinhole stopped (SIGTERM, exit status 0) and removed its rules; the router is closed again:"
else
    say "pinhole stopped with an error; the router's FORWARD rules now:"
fi
ph_in_fw iptables -S FORWARD | sed 's/^/     fw$ iptables -S FORWARD: /'
# Clean up now (quietly: server processes still closing their sessions are killed).
ph_cleanup 2>/dev/null
echo
echo "Done: namespaces and processes removed."
