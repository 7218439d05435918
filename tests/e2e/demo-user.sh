#!/usr/bin/env bash
#
# demo-user.sh - the README's main command, scripts/demo.sh, as a user who is not root and has
# no cargo in PATH (a fresh machine's ordinary user): the replay of pcaps/ it falls back to.
#
# Runs a copy of the repository's scripts, captures, sources and rules (mtimes kept) as `nobody`
# with a minimal environment (PATH=/usr/local/bin:/usr/bin:/bin, no HOME, so no ~/.cargo), and
# checks that:
#   - with target/release/pinhole built (fresh), the demo runs without cargo: exit 0, no
#     "command not found", nothing built or said to be built, no sudo suggested;
#   - every capture in pcaps/ is named in a heading and summarised;
#   - the SYN flood capture is a few lines, its alike sessions counted, not listed;
#   - with a `cargo` in PATH and a fresh build, cargo is not run;
#   - PINHOLE_BIN is used when target/release/pinhole does not exist;
#   - with neither a build nor cargo, it exits 1 saying how to build.
# A few seconds.
#
# Usage:  tests/e2e/demo-user.sh        (as root, to become `nobody`)
# Environment: PINHOLE_BIN=path  the binary to use (default: target/debug/pinhole, built with
#              cargo if missing; the demo's behaviour does not depend on the profile)

set -uo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$E2E_DIR/../.." && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "# skip: tests/e2e/demo-user.sh needs root (it runs the demo as the user nobody)"
    exit 0
fi

# shellcheck source=tests/e2e/tap.sh
. "$E2E_DIR/tap.sh"
tap_label() { echo demo-user; }
tap_on_failure() { :; }

BIN=${PINHOLE_BIN:-$REPO_DIR/target/debug/pinhole}
if [ ! -x "$BIN" ]; then
    if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-}/.cargo/env" ]; then
        # shellcheck disable=SC1091
        . "${HOME:-}/.cargo/env"
    fi
    (cd "$REPO_DIR" && cargo build --locked --quiet --bin pinhole) ||
        { echo "Bail out! cannot build pinhole"; exit 1; }
fi

PH_WORKDIR=$(mktemp -d /tmp/phdemo-user.XXXXXX)
trap 'rm -rf -- "$PH_WORKDIR"' EXIT
chmod 0755 "$PH_WORKDIR"
mkdir -p "$PH_WORKDIR/checks"
COPY=$PH_WORKDIR/repo
mkdir -p "$COPY/target/release" "$PH_WORKDIR/bin" "$PH_WORKDIR/fakebin"
(cd "$REPO_DIR" && cp -a scripts pcaps src rules Cargo.toml Cargo.lock "$COPY/")
install -m 0755 "$BIN" "$COPY/target/release/pinhole"
install -m 0755 "$BIN" "$PH_WORKDIR/bin/pinhole"
# A `cargo` that records being run, and fails.
printf '#!/bin/sh\necho "cargo $*" >> %s/cargo-ran\nexit 1\n' "$PH_WORKDIR" > "$PH_WORKDIR/fakebin/cargo"
chmod 0755 "$PH_WORKDIR/fakebin/cargo"
chmod -R a+rX "$PH_WORKDIR"
touch "$PH_WORKDIR/cargo-ran" && chmod 0666 "$PH_WORKDIR/cargo-ran"

# as_user PATH [VAR=VALUE...]: scripts/demo.sh of the copy as nobody, output to $OUT, status to $RC.
OUT=$PH_WORKDIR/out
RC=0
as_user() {
    local path=$1
    shift
    setpriv --reuid=nobody --regid=nogroup --clear-groups \
        env -i PATH="$path" LANG=C.UTF-8 "$@" "$COPY/scripts/demo.sh" >"$OUT" 2>&1 </dev/null
    RC=$?
}

PLAIN=/usr/local/bin:/usr/bin:/bin

runs_without_cargo() {
    as_user "$PLAIN"
    cat "$OUT"
    [ $RC = 0 ] || { echo "exit status $RC"; return 1; }
    ! grep -qiE 'command not found|No such file' "$OUT" || { echo "a command was missing"; return 1; }
    ! grep -q 'sudo' "$OUT" || { echo "suggests sudo"; return 1; }
    ! grep -q 'Building' "$OUT" || { echo "says it builds"; return 1; }
    grep -q 'Not root' "$OUT"
}

names_every_capture() {
    local capture n=0 missing=0
    for capture in pcaps/*.pcap pcaps/*.pcapng pcaps/crafted/*.pcap; do
        n=$((n + 1))
        if ! grep -qxF "== $capture" "$OUT"; then
            echo "no heading for $capture"; missing=1
        fi
        if ! grep -q "^$capture: [0-9]* packets\?, " "$OUT"; then
            echo "no summary for $capture"; missing=1
        fi
    done
    echo "$n captures"
    [ $missing = 0 ] && [ $n -gt 50 ]
}

syn_flood_is_short() {
    local section
    section=$(sed -n '/^== pcaps\/crafted\/syn-flood.pcap$/,/^pcaps\/crafted\/syn-flood.pcap:/p' "$OUT")
    echo "$section"
    [ "$(wc -l <<<"$section")" -le 6 ] && grep -q '+ 63 more like it' <<<"$section"
}

cargo_not_run_when_fresh() {
    : > "$PH_WORKDIR/cargo-ran"
    as_user "$PH_WORKDIR/fakebin:$PLAIN"
    [ $RC = 0 ] || { tail -n 5 "$OUT"; return 1; }
    [ ! -s "$PH_WORKDIR/cargo-ran" ] || { cat "$PH_WORKDIR/cargo-ran"; return 1; }
}

uses_pinhole_bin() {
    rm -f "$COPY/target/release/pinhole"
    as_user "$PLAIN" PINHOLE_BIN="$PH_WORKDIR/bin/pinhole"
    tail -n 3 "$OUT"
    [ $RC = 0 ] && grep -qxF "== pcaps/ftp-pasv-curl.pcap" "$OUT"
}

says_how_to_build() {
    as_user "$PLAIN"
    cat "$OUT"
    [ $RC != 0 ] && grep -q 'pinhole is not built and cargo is not in PATH' "$OUT" &&
        grep -q 'cargo build --release' "$OUT"
}

cd "$REPO_DIR" || exit 1
check "as nobody without cargo, with a fresh build: the replay runs, builds nothing, no sudo" \
    runs_without_cargo
check "every capture in pcaps/ has its heading and summary" names_every_capture
check "the SYN flood's 64 alike sessions take one line" syn_flood_is_short
check "a fresh build is used as it is: cargo is not run" cargo_not_run_when_fresh
check "PINHOLE_BIN is used when target/release/pinhole does not exist" uses_pinhole_bin
check "no build and no cargo: exit 1, saying how to build" says_how_to_build

echo "e2e: $PASS passed, $FAIL failed"
[ $FAIL = 0 ]
