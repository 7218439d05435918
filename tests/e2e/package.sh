#!/usr/bin/env bash
#
# package.sh - the Debian package and its systemd units, end to end.
#
# Builds the package with the README's command (scripts/build-deb.sh), then checks that:
#   - its files are exactly the list in the README's Install section, and lintian (--pedantic)
#     has nothing to say about it;
#   - `dpkg -i` installs it on this machine: the installed binary runs, its rules check ok, its
#     man pages and bash/zsh/fish completions are where man and the shells look;
#   - `systemd-analyze verify` accepts both units without a single warning, `systemd-analyze
#     security` rates them below 2.5, and logrotate reads the snippet;
#   - each unit's exact command line (ExecStart, with /etc/default/pinhole as EnvironmentFile= and
#     %I expanded) runs inline in this test's namespaces as systemd would start it: root with only
#     the unit's capabilities (CapabilityBoundingSet), no new privileges, its umask, its runtime
#     and log directories, a $NOTIFY_SOCKET (systemd itself does not run here). pinhole.service:
#     READY=1 once the kernel rules are in, passive and active FTP and a TFTP read pass under a
#     DROP policy, the event log in /var/log/pinhole fills, the queries answer on the default
#     socket, ExecReload reloads (RELOADING=1, READY=1), a stop saves the state to
#     /run/pinhole/state.json and the next start restores it: an FTP session open across the
#     restart downloads afterwards. pinhole-monitor@wan0.service: ready, its event log fills,
#     a clean stop;
#   - a reinstall keeps a changed conffile; `dpkg -r` removes the binary and keeps
#     /etc/pinhole/rules.toml; `dpkg -P` removes it, the logs and /run/pinhole.
# About 30 seconds after the release build.
#
# Usage:  tests/e2e/package.sh        (as root; skipped when a pinhole package is already
#                                      installed, which it would replace and then remove)
# Environment: PH_PREFIX=phpkg-, PH_KEEP_WORKDIR=1, E2E_TIME_LIMIT=600 (as the other e2e tests)
#
# Output is TAP-like, last line "e2e: N passed, N failed"; exit status 1 when a check failed.
# Traffic only flows between the namespaces this script creates; everything it starts is stopped,
# and the package is purged, on any exit.

set -uo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$E2E_DIR/../.." && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "# skip: tests/e2e/package.sh needs root (dpkg -i, network namespaces, iptables)"
    exit 0
fi
if [ "$(dpkg-query -W -f '${db:Status-Status}' pinhole 2>/dev/null)" = installed ]; then
    echo "# skip: a pinhole package is installed on this machine; this test would replace it"
    exit 0
fi

: "${PH_PREFIX:=phpkg-}"
# shellcheck source=scripts/netns-lib.sh
. "$REPO_DIR/scripts/netns-lib.sh"
# shellcheck source=tests/e2e/tap.sh
. "$E2E_DIR/tap.sh"

ph_ensure_tools test || { echo "Bail out! missing tools could not be installed"; exit 1; }

PHASE=package
tap_label() { echo "$PHASE"; }
tap_on_failure() { :; }

INSTALLED=0
package_cleanup() {
    if [ "$INSTALLED" = 1 ]; then
        dpkg -P pinhole >/dev/null 2>&1 || true
    fi
    ph_cleanup
}
ph_init || { echo "Bail out! cannot initialise"; exit 1; }
trap 'package_cleanup' EXIT
trap 'package_cleanup; trap - INT; kill -INT $$' INT
trap 'package_cleanup; trap - TERM; kill -TERM $$' TERM
mkdir -p "$PH_WORKDIR/checks"
start_watchdog 600

UNITS=/usr/lib/systemd/system
SV4=$PH_SERVER_V4 CV4=$PH_CLIENT_V4
FTP_PROBE=$E2E_DIR/ftp_probe.py
DEB=""

# ------------------------------------------------------------------------------------------------
# Building, listing, installing
# ------------------------------------------------------------------------------------------------
build() {
    DEB=$("$REPO_DIR/scripts/build-deb.sh") || return 1
    echo "$DEB"
    [ -s "$DEB" ]
}

# The README's list, braces expanded: one path per line.
readme_files() {
    sed -n '/^<!-- package-files: begin -->$/,/^<!-- package-files: end -->$/p' "$REPO_DIR/README.md" |
        grep '^/' | awk '{ print $1 }' | python3 -c '
import re, sys
def expand(word):
    m = re.search(r"\{([^{}]*)\}", word)
    if not m:
        return [word]
    return [w for alt in m.group(1).split(",") for w in expand(word[:m.start()] + alt + word[m.end():])]
for line in sys.stdin:
    for path in expand(line.strip()):
        print(path)
' | LC_ALL=C sort
}

files_match_readme() {
    local listed packaged
    listed=$(readme_files)
    packaged=$(dpkg-deb -c "$DEB" | awk '$NF !~ /\/$/ { sub(/^\./, "", $NF); print $NF }' | LC_ALL=C sort)
    echo "$packaged"
    [ "$(wc -l <<<"$listed")" -ge 20 ] || { echo "README list too short"; return 1; }
    diff <(echo "$listed") <(echo "$packaged") && echo "the README lists all $(wc -l <<<"$listed") files"
}

lintian_clean() {
    local out rc
    out=$(lintian -I --pedantic --fail-on error,warning,info,pedantic "$DEB" 2>&1)
    rc=$?
    out=$(grep -v 'running with root privileges' <<<"$out")
    echo "lintian exit $rc"
    echo "$out"
    [ $rc = 0 ] && [ -z "$out" ]
}

installs() {
    dpkg -i "$DEB" </dev/null || return 1
    INSTALLED=1
    [ "$(dpkg-query -W -f '${db:Status-Status}' pinhole)" = installed ]
}

binary_runs() {
    local version
    version=$(/usr/bin/pinhole --version) || return 1
    echo "$version"
    [[ $DEB == */pinhole_"${version#pinhole }"-1_*.deb ]] || { echo "not the packaged version"; return 1; }
    /usr/bin/pinhole check-rules /etc/pinhole/rules.toml
}

docs_in_place() {
    man -w pinhole pinhole-run pinhole-monitor || return 1
    man pinhole-run 2>/dev/null | grep -q 'SIGHUP re-reads the rules file' || { echo "man pinhole-run"; return 1; }
    bash -c '. /usr/share/bash-completion/completions/pinhole && complete -p pinhole' || return 1
    head -n 1 /usr/share/zsh/vendor-completions/_pinhole | grep -qx '#compdef pinhole' || return 1
    grep -q '^complete -c pinhole ' /usr/share/fish/vendor_completions.d/pinhole.fish
}

# systemd-analyze verify exits 0 after warnings (an unknown key is "ignoring"): any output fails.
units_verify() {
    local out
    out=$(systemd-analyze verify "$UNITS/pinhole.service" pinhole-monitor@lo.service 2>&1) || {
        echo "$out"; return 1; }
    echo "${out:-no warnings}"
    [ -z "$out" ]
}

units_hardened() {
    local unit score ok=0
    cp "$UNITS/pinhole-monitor@.service" "$PH_WORKDIR/pinhole-monitor@wan0.service"
    for unit in "$UNITS/pinhole.service" "$PH_WORKDIR/pinhole-monitor@wan0.service"; do
        score=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1 |
            sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
        echo "$(basename "$unit"): $score"
        awk -v s="$score" 'BEGIN { exit !(s != "" && s < 2.5) }' || ok=1
    done
    return $ok
}

logrotate_reads_it() {
    local out
    out=$(logrotate -d /etc/logrotate.d/pinhole 2>&1) || { echo "$out"; return 1; }
    echo "$out" | head -n 5
    grep -q 'rotating pattern: /var/log/pinhole/\*.jsonl' <<<"$out" && ! grep -qi 'error' <<<"$out"
}

# ------------------------------------------------------------------------------------------------
# A unit's command line, as systemd runs it
# ------------------------------------------------------------------------------------------------
# unit_line UNIT KEY: the value of KEY= in the installed unit file.
unit_line() { sed -n "s/^$2=//p" "$UNITS/$1"; }

# exec_start UNIT INSTANCE: CMD=(argv of ExecStart), %I and %i expanded to INSTANCE, $VARS from
# /etc/default/pinhole (EnvironmentFile=) split at whitespace, as systemd splits an unbraced $VAR.
CMD=()
exec_start() {
    local line word PINHOLE_RUN_OPTS="" PINHOLE_MONITOR_OPTS=""
    line=$(unit_line "$1" ExecStart)
    line=${line//%I/$2}
    line=${line//%i/$2}
    # shellcheck disable=SC1091
    . /etc/default/pinhole
    CMD=()
    set -f
    for word in $line; do
        case $word in
            '$PINHOLE_RUN_OPTS') CMD+=($PINHOLE_RUN_OPTS) ;;
            '$PINHOLE_MONITOR_OPTS') CMD+=($PINHOLE_MONITOR_OPTS) ;;
            '$'*) set +f; echo "unknown variable $word in $1"; return 1 ;;
            *) CMD+=("$word") ;;
        esac
    done
    set +f
}

# The unit's CapabilityBoundingSet as setpriv's --bounding-set, and the mask /proc shows.
caps_of() {
    local caps
    caps=$(unit_line "$1" CapabilityBoundingSet | tr 'A-Z' 'a-z' | sed 's/cap_//g')
    BOUNDING="-all,$(sed 's/\([a-z_]*\)/+\1/g; s/ /,/g' <<<"$caps")"
    CAPMASK=0
    local c
    for c in $caps; do
        case $c in
            net_admin) CAPMASK=$((CAPMASK | 1 << 12)) ;;
            net_raw) CAPMASK=$((CAPMASK | 1 << 13)) ;;
            *) echo "unexpected capability $c"; return 1 ;;
        esac
    done
}

NOTIFY=""
NOTES=""
UNIT_PID=""
UNIT_LOG=""
# unit_start UNIT INSTANCE NAME: start the unit's command in the fw namespace as systemd would:
# RuntimeDirectory and LogsDirectory made with their modes, a clean environment with
# NOTIFY_SOCKET, the capability bounding set, NoNewPrivileges, UMask.
unit_start() {
    local unit=$1 instance=$2 name=$3 umask_value
    exec_start "$unit" "$instance" || return 1
    caps_of "$unit" || return 1
    umask_value=$(unit_line "$unit" UMask)
    [ "$(unit_line "$unit" NoNewPrivileges)" = yes ] || { echo "NoNewPrivileges not set"; return 1; }
    if [ "$(unit_line "$unit" RuntimeDirectory)" = pinhole ]; then
        install -d -m "$(unit_line "$unit" RuntimeDirectoryMode)" /run/pinhole
    fi
    install -d -m "$(unit_line "$unit" LogsDirectoryMode)" /var/log/pinhole
    UNIT_LOG=$PH_WORKDIR/$name.log
    echo "${CMD[*]}"
    echo "(bounding set $BOUNDING, umask $umask_value, log $UNIT_LOG)"
    ph_start_bg "$name" "$PH_NS_FW" "$UNIT_LOG" \
        env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin NOTIFY_SOCKET="$NOTIFY" \
        setpriv --bounding-set "$BOUNDING" --inh-caps -all --no-new-privs \
        bash -c 'umask "$1"; shift; exec "$@"' unit "$umask_value" "${CMD[@]}"
    UNIT_PID=$PH_LAST_PID
}

# notified N STATE: the Nth notification (1-based) or a later one is STATE (e.g. READY=1).
notified() { tail -n "+$1" "$NOTES" | grep -q "^$2"; }
notes_count() { wc -l < "$NOTES"; }

wait_ready() {
    local from=$1
    if ! ph_wait_for "READY=1 from $UNIT_PID" 15 notified "$from" READY=1; then
        tail -n 20 "$UNIT_LOG"
        return 1
    fi
    tail -n "+$from" "$NOTES"
}

# Its capabilities and flags, from /proc.
runs_confined() {
    local status eff bnd nnp
    status=$(cat "/proc/$UNIT_PID/status") || return 1
    eff=$(awk '/^CapEff:/ { print $2 }' <<<"$status")
    bnd=$(awk '/^CapBnd:/ { print $2 }' <<<"$status")
    nnp=$(awk '/^NoNewPrivs:/ { print $2 }' <<<"$status")
    echo "CapEff $eff CapBnd $bnd NoNewPrivs $nnp (want $(printf '%016x' "$CAPMASK"))"
    [ $((16#$eff)) = "$CAPMASK" ] && [ $((16#$bnd)) = "$CAPMASK" ] && [ "$nnp" = 1 ]
}

unit_stop() {
    local n rc
    n=$(( $(notes_count) + 1 ))
    kill -TERM "$UNIT_PID" 2>/dev/null
    ph_wait_gone "$UNIT_PID" 15 || { echo "still running 15 s after SIGTERM"; return 1; }
    wait "$UNIT_PID" 2>/dev/null
    rc=$?
    ph_stop "$1"
    echo "exit status $rc"
    [ $rc = 0 ] || { tail -n 20 "$UNIT_LOG"; return 1; }
    notified "$n" STOPPING=1 || { echo "no STOPPING=1"; return 1; }
}

chain_installed() { ph_in_fw iptables -S FORWARD | grep -q -- '-j PINHOLE'; }

# ------------------------------------------------------------------------------------------------
# Transfers through the router
# ------------------------------------------------------------------------------------------------
ftp_get() {   # LABEL CURL_OPTIONS...
    local out=$PH_WORKDIR/client/$1.bin
    shift
    rm -f "$out"
    ph_in_client curl -sS --noproxy '*' --max-time 20 "$@" -o "$out" "ftp://$SV4/medium.bin" &&
        cmp "$PH_WORKDIR/ftp/medium.bin" "$out"
}

tftp_get() {
    rm -f "$PH_WORKDIR/client/image.bin"
    (cd "$PH_WORKDIR/client" && ph_in_client timeout 20 tftp -m octet "$SV4" -c get image.bin) &&
        cmp "$PH_WORKDIR/tftp/image.bin" "$PH_WORKDIR/client/image.bin"
}

transfers_pass() {
    ftp_get pasv --ftp-pasv --disable-epsv && ftp_get port --ftp-port - --disable-eprt && tftp_get
}

events_logged() {   # FILE: pinhole open and use records of the transfers
    local file=$1
    ph_wait_for "records in $file" 5 grep -q '"event":"use"' "$file" || return 1
    python3 - "$file" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
uses = [r for r in recs if r.get("type") == "pinhole" and r.get("event") == "use"]
algs = sorted({r["alg"] for r in uses})
print(len(recs), "records,", len(uses), "pinhole uses:", algs)
sys.exit(0 if "ftp" in algs and "tftp" in algs else 1)
PY
}

# ------------------------------------------------------------------------------------------------
# pinhole.service
# ------------------------------------------------------------------------------------------------
run_unit_is_the_documented_one() {
    local want='/usr/bin/pinhole run --rules /etc/pinhole/rules.toml --install-rules --restore $PINHOLE_RUN_OPTS'
    echo "ExecStart=$(unit_line pinhole.service ExecStart)"
    [ "$(unit_line pinhole.service ExecStart)" = "$want" ] &&
        [ "$(unit_line pinhole.service Type)" = notify ] &&
        [ "$(unit_line pinhole.service ExecReload)" = /usr/bin/pinhole\ reload ]
}

run_starts() {
    unit_start pinhole.service "" pinhole-unit || return 1
    wait_ready 1 || return 1
    chain_installed || { echo "READY=1 but no PINHOLE chain"; return 1; }
    runs_confined
}

queries_answer() {
    /usr/bin/pinhole status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["rules_file"], s["mode"], s["workers"])
sys.exit(0 if s["rules_file"] == "/etc/pinhole/rules.toml" and s["inspection"] else 1)' &&
        /usr/bin/pinhole sessions >/dev/null
}

reloads() { /usr/bin/pinhole status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["reloads"])'; }

# ExecReload, with the unit's capabilities: the reload happened when it returns.
exec_reload() {
    local cmd
    cmd=$(unit_line pinhole.service ExecReload)
    echo "$cmd"
    # shellcheck disable=SC2086
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin setpriv --bounding-set "$BOUNDING" --inh-caps -all \
        --no-new-privs $cmd
}

reload_waits_for_the_outcome() {
    exec_reload || return 1
    [ "$(reloads)" = 1 ] || { echo "reloads: $(reloads)"; return 1; }
    # An invalid file: the reload fails, says why, and the old rules stay.
    cp /etc/pinhole/rules.toml "$PH_WORKDIR/rules.saved"
    echo 'bogus = 1' >> /etc/pinhole/rules.toml
    local out rc
    out=$(exec_reload 2>&1)
    rc=$?
    cp "$PH_WORKDIR/rules.saved" /etc/pinhole/rules.toml
    echo "$out"
    [ $rc = 1 ] && grep -q 'unknown key "bogus"' <<<"$out" &&
        grep -q 'the old policy stays in force' <<<"$out" && [ "$(reloads)" = 1 ]
}

sighup_notifies() {
    local n
    n=$(( $(notes_count) + 1 ))
    kill -HUP "$UNIT_PID" || return 1
    ph_wait_for "READY=1 after the reload" 10 notified "$((n + 1))" READY=1 || return 1
    tail -n "+$n" "$NOTES"
    notified "$n" RELOADING=1 && [ "$(reloads)" = 2 ]
}

SESSION=""
session_open() {
    SESSION=$PH_WORKDIR/session
    mkdir -p "$SESSION"
    : > "$SESSION/cmd"
    ph_start_bg session "$PH_NS_CLIENT" "$SESSION/log" \
        python3 "$FTP_PROBE" session "$SV4" "$SESSION/cmd" "$SESSION/res" --lifetime 120
    ph_wait_for "FTP login" 15 grep -q '^0 ok' "$SESSION/res" && cat "$SESSION/res"
}

stop_saves_state() {
    unit_stop pinhole-unit || return 1
    ls -l /run/pinhole/state.json || return 1
    [ "$(stat -c %a /run/pinhole/state.json)" = 600 ] || return 1
    ! chain_installed || { echo "PINHOLE chain left behind"; return 1; }
    grep 'state saved' "$UNIT_LOG"
}

restart_restores() {
    local n
    n=$(( $(notes_count) + 1 ))
    unit_start pinhole.service "" pinhole-unit || return 1
    wait_ready "$n" || return 1
    grep 'state restored' "$UNIT_LOG" || { tail -n 20 "$UNIT_LOG"; return 1; }
    [ ! -e /run/pinhole/state.json ] || { echo "the state file was not consumed"; return 1; }
    echo "get medium.bin $PH_WORKDIR/client/after-restart.bin pasv" >> "$SESSION/cmd"
    ph_wait_for "download on the old session" 30 grep -q '^1 ' "$SESSION/res" || return 1
    cat "$SESSION/res"
    grep -q '^1 ok' "$SESSION/res" &&
        cmp "$PH_WORKDIR/ftp/medium.bin" "$PH_WORKDIR/client/after-restart.bin"
}

# ------------------------------------------------------------------------------------------------
# pinhole-monitor@wan0.service
# ------------------------------------------------------------------------------------------------
monitor_unit_is_the_documented_one() {
    local want='/usr/bin/pinhole monitor --iface %I --rules /etc/pinhole/rules.toml --events /var/log/pinhole/monitor-%I.jsonl $PINHOLE_MONITOR_OPTS'
    echo "ExecStart=$(unit_line pinhole-monitor@.service ExecStart)"
    [ "$(unit_line pinhole-monitor@.service ExecStart)" = "$want" ] &&
        [ "$(unit_line pinhole-monitor@.service Type)" = notify ]
}

monitor_starts() {
    local n
    n=$(( $(notes_count) + 1 ))
    unit_start pinhole-monitor@.service "$PH_IF_WAN" monitor-unit || return 1
    wait_ready "$n" || return 1
    runs_confined
}

monitor_stops() {
    unit_stop monitor-unit || return 1
    tail -n 1 "/var/log/pinhole/monitor-$PH_IF_WAN.jsonl" | grep -q '"type":"summary"'
}

# ------------------------------------------------------------------------------------------------
# Reinstall, removal, purge
# ------------------------------------------------------------------------------------------------
reinstall_keeps_changed_conffile() {
    echo "# changed by tests/e2e/package.sh" >> /etc/pinhole/rules.toml
    dpkg -i "$DEB" </dev/null || return 1
    grep -q 'changed by tests/e2e/package.sh' /etc/pinhole/rules.toml
}

remove_keeps_conffiles() {
    dpkg -r pinhole </dev/null || return 1
    [ ! -e /usr/bin/pinhole ] || { echo "/usr/bin/pinhole is still there"; return 1; }
    [ ! -e "$UNITS/pinhole.service" ] || { echo "the unit is still there"; return 1; }
    grep -q 'changed by tests/e2e/package.sh' /etc/pinhole/rules.toml || return 1
    [ -e /etc/default/pinhole ] && [ -e /etc/logrotate.d/pinhole ] || return 1
    local status
    status=$(dpkg-query -W -f '${db:Status-Status}' pinhole)
    echo "status: $status"
    [ "$status" = config-files ]
}

purge_removes_everything() {
    dpkg -P pinhole </dev/null || return 1
    INSTALLED=0
    local left=0 path
    for path in /etc/pinhole /etc/default/pinhole /etc/logrotate.d/pinhole /var/log/pinhole /run/pinhole; do
        if [ -e "$path" ]; then
            echo "left behind: $path"; left=1
        fi
    done
    [ $left = 0 ] && ! dpkg-query -W -f '${db:Status-Status}' pinhole 2>/dev/null | grep -q .
}

# ------------------------------------------------------------------------------------------------
main() {
    check "scripts/build-deb.sh builds the package" build || return
    check "its files are exactly the README's list" files_match_readme
    check "lintian --pedantic has nothing to say" lintian_clean
    check "dpkg -i installs it" installs || return
    check "the installed binary runs, and /etc/pinhole/rules.toml checks ok" binary_runs
    check "man pages (man pinhole-run) and bash, zsh, fish completions are in place" docs_in_place
    check "systemd-analyze verify accepts both units without a warning" units_verify
    check "systemd-analyze security rates both units below 2.5" units_hardened
    check "logrotate reads /etc/logrotate.d/pinhole" logrotate_reads_it

    PHASE=pinhole.service
    if ! ph_topology_up >/dev/null || ! ph_content_init || ! ph_start_vsftpd plain ||
            ! ph_start_tftpd --port-range 30000:30009; then
        echo "Bail out! no test bed"
        return 1
    fi
    ph_in_fw iptables -P FORWARD DROP && ph_in_fw ip6tables -P FORWARD DROP || return 1
    NOTES=$PH_WORKDIR/notify.txt
    NOTIFY=$PH_WORKDIR/notify.sock
    : > "$NOTES"
    ph_start_bg notify "$PH_NS_FW" "$PH_WORKDIR/notify.out" python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as out:
    while True:
        out.write(s.recv(4096).decode().replace("\n", " ") + "\n")
' "$NOTIFY" "$NOTES"
    ph_wait_for "the notify socket" 5 test -S "$NOTIFY" || return 1

    check "ExecStart is pinhole run --rules /etc/pinhole/rules.toml --install-rules --restore \$PINHOLE_RUN_OPTS" \
        run_unit_is_the_documented_one
    if check "started as the unit would be: READY=1 once the kernel rules are in; only CAP_NET_ADMIN and CAP_NET_RAW, no new privileges" \
            run_starts; then
        check "passive and active FTP and a TFTP read pass under FORWARD policy DROP" transfers_pass
        check "the event log /var/log/pinhole/events.jsonl (from /etc/default/pinhole) has their pinholes" \
            events_logged /var/log/pinhole/events.jsonl
        check "pinhole status and sessions answer on the default socket /run/pinhole/pinhole.sock" \
            queries_answer
        check "ExecReload (pinhole reload) returns once reloaded; an invalid file fails it with the errors, old rules kept" \
            reload_waits_for_the_outcome
        check "SIGHUP also reloads, between RELOADING=1 and READY=1" sighup_notifies
        check "an FTP session opens" session_open
        check "SIGTERM: STOPPING=1, exit 0, kernel rules removed, /run/pinhole/state.json (0600) written" \
            stop_saves_state
        check "started again (--restore): state restored; the session open across the restart downloads" \
            restart_restores
        check "stopped again cleanly" unit_stop pinhole-unit
    fi
    ph_stop session

    PHASE=pinhole-monitor@wan0.service
    ph_in_fw iptables -P FORWARD ACCEPT && ph_in_fw ip6tables -P FORWARD ACCEPT || return 1
    check "ExecStart is pinhole monitor --iface %I --rules /etc/pinhole/rules.toml --events /var/log/pinhole/monitor-%I.jsonl" \
        monitor_unit_is_the_documented_one
    if check "started as the unit would be (%I = $PH_IF_WAN): READY=1; only CAP_NET_RAW and CAP_NET_ADMIN" \
            monitor_starts; then
        check "transfers pass the monitored router" transfers_pass
        check "its event log /var/log/pinhole/monitor-$PH_IF_WAN.jsonl has their pinholes" \
            events_logged "/var/log/pinhole/monitor-$PH_IF_WAN.jsonl"
        check "SIGTERM: STOPPING=1, exit 0, a summary last in its event log" monitor_stops
    fi

    PHASE=removal
    check "a reinstall keeps a changed /etc/pinhole/rules.toml" reinstall_keeps_changed_conffile
    check "dpkg -r removes the binary and the units, keeps the conffiles" remove_keeps_conffiles
    check "dpkg -P removes the conffiles, /var/log/pinhole and /run/pinhole" purge_removes_everything
}

main
echo "e2e: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ] && [ "$PASS" -gt 0 ]
