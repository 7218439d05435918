#!/usr/bin/env bash
# Runs every test of pinhole: formatting, lints, unit, property, golden-replay, CLI and fuzz smoke tests.
# Usage: scripts/test.sh        (from anywhere; as root it may install missing tools with apt)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

# The peer captures are read in place from ../shared (never copied into the repository).
if [ ! -d ../shared/pcaps/suricata-verify ]; then
    echo "error: ../shared/pcaps/suricata-verify not found beside the checkout" >&2
    exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test (unit, integration, golden replays, property tests)"
cargo test --locked --all-targets
echo "== doc tests"
cargo test --locked --doc
echo "== fuzz smoke (every fuzz target for 30 s on stable Rust, seeded from pcaps/)"
scripts/fuzz-smoke.sh 30
echo "== end-to-end: pinhole run inline between real servers and clients in network namespaces"
if [ "$(id -u)" = 0 ]; then
    tests/e2e/nfqueue.sh
    echo "== end-to-end: pinhole monitor on a live interface (event log, drop capture, metrics)"
    tests/e2e/monitor.sh
else
    echo "skipped: the end-to-end tests need root (network namespaces, iptables, NFQUEUE, AF_PACKET)"
fi
echo "== all tests passed"
