# inline-lib.sh - what the end-to-end tests that run `pinhole run` inline (tests/e2e/nfqueue.sh,
# tests/e2e/ftps.sh) share: asking the daemon, its start and stop, its kernel rules, the event
# log, the TAP hooks. Sourced after scripts/netns-lib.sh and tests/e2e/tap.sh; the script
# defines PINHOLE_BIN, CTL, PJ, EVENTS, RULES, PINHOLE_PID, PINHOLE_LOG, MODE, events_match and
# snapshot_stats.
# shellcheck shell=bash

# The chain is in place, for IPv4 and IPv6, first in FORWARD, exactly once.
chain_installed() {
    local fam first n rc=0
    for fam in iptables ip6tables; do
        first=$(ph_in_fw "$fam" -S FORWARD | sed -n 2p)
        n=$(jumps_to_pinhole "$fam")
        echo "$fam: first FORWARD rule: $first; jumps to PINHOLE: $n"
        [[ $first == *"-j PINHOLE"* ]] && [ "$n" = 1 ] || rc=1
    done
    return $rc
}

# Run in the client namespace, in the client work dir.
client() { (cd "$PH_WORKDIR/client" && ph_in_client "$@"); }

# ctl COMMAND [ARGS]: query the running daemon (bounded: a stopped daemon
# must not hang the test).
ctl() { timeout 5 "$PINHOLE_BIN" "$@" --control "$CTL"; }

events_has() { ph_wait_for "event log record" 5 events_match "$1" || events_match "$1"; }

# Kernel rules in the fw namespace.
fw_save() { ph_in_fw iptables-save; ph_in_fw ip6tables-save; }

# jumps_to_pinhole iptables|ip6tables: how many FORWARD rules jump to PINHOLE.
jumps_to_pinhole() { ph_in_fw "$1" -S FORWARD | grep -cE -- '-j PINHOLE( |$)'; }

pinhole_alive() {
    [ -n "$PINHOLE_PID" ] && kill -0 "$PINHOLE_PID" 2>/dev/null &&
        [ "$(ps -o stat= -p "$PINHOLE_PID" 2>/dev/null | cut -c1)" != Z ]
}

# pinhole_signal_exit SIGNAL: send SIGNAL, wait for the exit, forget the pid.
pinhole_signal_exit() {
    kill "-$1" "$PINHOLE_PID" || return 1
    if ! wait_exit "$PINHOLE_PID" 10; then
        echo "pinhole still running 10 s after SIG$1"
        return 1
    fi
    echo "pinhole exited after SIG$1 with status $EXIT_STATUS"
    ph_stop pinhole
    PINHOLE_PID=""
}

pstatus() { ctl status --json | python3 "$PJ" "g('$1', None)"; }

# Remove what a killed daemon left: every rule and chain naming PINHOLE.
purge_leftover_rules() {
    local fam
    for fam in iptables ip6tables; do
        ph_in_fw "$fam-save" | grep -vi pinhole | ph_in_fw "$fam-restore" || return 1
    done
}

# reload_with FILE: install FILE as the rules file and SIGHUP; wait for the
# reload (status "reloads" grows).
reload_with() {
    local r0
    r0=$(pstatus reloads) || return 1
    cp "$1" "$RULES"
    kill -HUP "$PINHOLE_PID"
    if ! ph_wait_for "reload of $1" 10 status_at_least reloads $((r0 + 1)); then
        echo "no reload within 10 s; status:"
        ctl status
        return 1
    fi
    echo "reloaded $(basename "$1"): reloads $r0 -> $(pstatus reloads)"
}

# status_at_least FIELD N
status_at_least() { local v; v=$(pstatus "$1") && [ "$v" -ge "$2" ]; }

tap_label() { echo "$MODE"; }

tap_on_failure() { snapshot_stats "$1"; }

# wait_exit PID SECONDS: wait for a child to exit; its status in EXIT_STATUS.
wait_exit() {
    local pid=$1
    ph_wait_gone "$pid" "$2" || return 1
    wait "$pid" 2>/dev/null
    EXIT_STATUS=$?
}

# wait_ready: wait up to 10 s for the daemon started as PINHOLE_PID to answer `status`.
wait_ready() {
    local i
    for ((i = 0; i < 100; i++)); do
        if ! pinhole_alive; then
            echo "pinhole exited during start-up:"
            tail -n 20 "$PINHOLE_LOG"
            return 1
        fi
        if ctl status >/dev/null 2>&1; then
            echo "ready after $((i / 10)).$((i % 10)) s"
            return 0
        fi
        sleep 0.1
    done
    echo "pinhole did not answer 'status' within 10 s:"
    tail -n 20 "$PINHOLE_LOG"
    return 1
}

# finish_run START LOG_LINES EVENT_LINES: the end of a run. After failures, the stats the checks
# saved and the tails of pinhole's logs and event logs; then the clean-up, so that the summary
# is the last line (its warnings are expected: vsftpd session processes run in their own
# session, and those whose client pinhole reset are still open); status 0 when nothing failed.
finish_run() {
    local t0=$1 log_lines=$2 event_lines=$3 log warnings
    MODE=end
    if [ "$FAIL" -gt 0 ]; then
        note "--- pinhole stats at the failures"
        sed 's/^/# /' "$PH_WORKDIR/failure-stats.txt" 2>/dev/null
        for log in "$PH_WORKDIR"/pinhole-*.log; do
            [ -e "$log" ] || continue
            note "--- $(basename "$log") (last $log_lines lines)"
            tail -n "$log_lines" "$log" | sed 's/^/# /'
        done
        for log in "$PH_WORKDIR"/events-*.jsonl; do
            if [ "$event_lines" -gt 0 ] && [ -e "$log" ]; then
                note "--- $(basename "$log") (last $event_lines records)"
                tail -n "$event_lines" "$log" | sed 's/^/# /'
            fi
        done
    fi
    note "total: $((SECONDS - t0)) s"
    warnings=$(mktemp)
    ph_cleanup 2>"$warnings"
    sed 's/^/# cleanup: /' "$warnings"
    rm -f "$warnings"
    echo "e2e: $PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ]
}
