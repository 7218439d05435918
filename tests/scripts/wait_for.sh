#!/usr/bin/env bash
# wait_for.sh - scripts/netns-lib.sh's ph_wait_for says why it gave up: on a timeout, what the
# last attempt printed and its exit status; for a command that cannot run (not installed), that,
# at once. (A missing `ping` once read as "timed out waiting for: IPv4 client->server".)
# Needs no root: it only sources the library. Run by scripts/test.sh.
set -uo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/netns-lib.sh
. scripts/netns-lib.sh

fail=0
check() {   # DESCRIPTION: the last test's outcome
    if [ "$1" = 0 ]; then echo "ok - $2"; else echo "not ok - $2"; fail=1; fi
}

out=$(ph_wait_for "the answer" 1 sh -c 'echo "no route to host" >&2; exit 3' 2>&1)
rc=$?
grep -q 'timed out after 1s waiting for: the answer' <<<"$out" &&
    grep -q 'exit 3' <<<"$out" && grep -q 'no route to host' <<<"$out" && [ $rc = 1 ]
check $? "a timeout names what was waited for, the last attempt's exit status and its output"
[ $fail = 0 ] || echo "$out" | sed 's/^/#   /'

start=$EPOCHSECONDS
out=$(ph_wait_for "IPv4 client->server" 5 no-such-command-pinhole -c 1 2>&1)  # check-deps: optional (missing on purpose)
rc=$?
grep -q 'cannot run (exit 127)' <<<"$out" && grep -q 'no-such-command-pinhole' <<<"$out" &&
    [ $rc = 1 ] && [ $((EPOCHSECONDS - start)) -lt 3 ]
check $? "a command that is not installed is reported at once, by name, not waited out"
[ $fail = 0 ] || echo "$out" | sed 's/^/#   /'

PH_TMP_FLAG=$(mktemp -u)
( sleep 0.3; touch "$PH_TMP_FLAG" ) &
ph_wait_for "a file" 5 test -e "$PH_TMP_FLAG"
check $? "a command that succeeds in time ends the wait"
rm -f "$PH_TMP_FLAG"
exit $fail
