#!/usr/bin/env bash
# The main job: shows pinhole judging real FTP, TFTP and TCP/UDP traffic.
#
# Today it replays the captures in pcaps/ (recorded from real vsftpd, tftpd-hpa, curl, lftp and
# atftp in network namespaces by scripts/record-pcaps.sh, plus crafted attacks) through the
# engine with the embedded default policy, and prints what it decided. The inline NFQUEUE demo
# with live servers in namespaces is added by the dataplane work (see the roadmap in README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

cargo build --release --locked --quiet
bin=target/release/pinhole

echo "pinhole $($bin --version | cut -d' ' -f2): replaying pcaps/ with the embedded default policy"
echo "(new TCP 21 and UDP 69 allowed and inspected; everything else needs a pinhole)"
echo
$bin default-rules | grep -v '^#' | sed '/^$/d' | sed 's/^/    /'
echo
for capture in pcaps/*.pcap pcaps/*.pcapng pcaps/crafted/*.pcap; do
    $bin replay --format text "$capture" | grep -v '^== '
done
