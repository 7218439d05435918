# shellcheck shell=bash
# tap.sh - TAP-like reporting and the time limit shared by the e2e scripts
# (sourced by tests/e2e/nfqueue.sh and tests/e2e/monitor.sh).
#
# The sourcing script defines:
#   tap_label          prints the label of the current checks ([offload], [main], ...)
#   tap_on_failure D   keeps what helps explain failed check D (stats, metrics)
# and calls start_watchdog LIMIT once its work dir exists.

CHECK_N=0 PASS=0 FAIL=0

# check DESCRIPTION CMD...: run CMD (a function of the script, in its shell),
# its output to a file; print ok/not ok; on failure show the output's end and
# call tap_on_failure.
check() {
    local desc=$1 out label
    shift
    CHECK_N=$((CHECK_N + 1))
    out=$PH_WORKDIR/checks/$CHECK_N.out
    label=$(tap_label)
    if "$@" >"$out" 2>&1; then
        PASS=$((PASS + 1))
        echo "ok $CHECK_N - [$label] $desc"
        return 0
    fi
    FAIL=$((FAIL + 1))
    echo "not ok $CHECK_N - [$label] $desc"
    tail -n 40 "$out" | sed 's/^/#   /'
    tap_on_failure "$CHECK_N [$label] $desc"
    return 1
}

note() { echo "# $*"; }

# start_watchdog DEFAULT: stop the whole run after E2E_TIME_LIMIT (default
# DEFAULT) seconds; cleanup runs from the script's traps.
start_watchdog() {
    local limit=${E2E_TIME_LIMIT:-$1}
    setsid bash -c "sleep $limit; echo 'Bail out! time limit of $limit s reached' >&2; kill -TERM $$" \
        </dev/null &
    printf 'watchdog %s\n' $! >> "$PH_WORKDIR/pids"
}
