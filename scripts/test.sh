#!/usr/bin/env bash
# Runs every test of pinhole: the install-step check, formatting, lints, unit, property,
# golden-replay, CLI and fuzz smoke tests, and as root the end-to-end tests (real servers in
# network namespaces, the Debian package and its systemd units, the demo as a user without cargo).
# Usage: scripts/test.sh        (from anywhere; as root it installs the Debian packages the tests
#                                call, scripts/install-deps.sh test; not root, it says what is
#                                missing and skips what needs root)
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=0
[ "$(id -u)" = 0 ] && ROOT=1

echo "== install step: the Debian packages the tests call (scripts/install-deps.sh test)"
if [ $ROOT = 1 ]; then
    scripts/install-deps.sh test
elif ! missing=$(scripts/install-deps.sh --missing test); then
    echo "not root, and missing: $(echo $missing) (the checks that call them fail or are skipped)"
fi

if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-}/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "${HOME:-}/.cargo/env"
fi

# The peer captures are read in place from ../shared (never copied into the repository).
if [ ! -d ../shared/pcaps/suricata-verify ]; then
    echo "error: ../shared/pcaps/suricata-verify not found beside the checkout" >&2
    exit 1
fi

echo "== every command the scripts call is installed by their install step (scripts/check-deps.py)"
python3 scripts/check-deps.py
echo "== the test bed's wait helper says why it gave up (tests/scripts/wait_for.sh)"
tests/scripts/wait_for.sh
echo "== the lock files are current (Cargo.lock, and fuzz/Cargo.lock, which the fuzz smoke run needs)"
cargo metadata --locked --format-version 1 >/dev/null
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test (unit, integration, golden replays, property tests; benches on small inputs)"
cargo test --locked --all-targets
echo "== doc tests"
cargo test --locked --doc
echo "== fuzz smoke (every fuzz target for 30 s on stable Rust, seeded from pcaps/)"
scripts/fuzz-smoke.sh 30
if [ $ROOT = 1 ]; then
    echo "== end-to-end: pinhole run inline between real servers and clients in network namespaces"
    tests/e2e/nfqueue.sh
    echo "== end-to-end: FTPS through pinhole inline (explicit and implicit TLS, the session's passive range, CCC, a fake 234, ftps = deny)"
    tests/e2e/ftps.sh
    echo "== end-to-end: a NAT router (DNAT'd server, masqueraded inside device): the kernel's helpers alone, then pinhole in both modes"
    tests/e2e/nat.sh
    echo "== end-to-end: a failover pair (keepalived, conntrackd): transfers and sessions survive the active router's failure and the failback"
    tests/e2e/ha.sh
    echo "== end-to-end: pinhole monitor on a live interface (event log, drop capture, metrics)"
    tests/e2e/monitor.sh
    echo "== end-to-end: scripts/demo.sh as a user without root and without cargo"
    tests/e2e/demo-user.sh
    echo "== end-to-end: the Debian package (build, lintian, dpkg -i/-r/-P) and its systemd units' command lines"
    tests/e2e/package.sh
    echo "== end-to-end: the package under a real systemd (a minimal Debian booted with systemd-nspawn)"
    tests/e2e/systemd.sh
else
    echo "skipped: the end-to-end tests need root (network namespaces, iptables, NFQUEUE, AF_PACKET)"
fi
echo "== all tests passed"
