#!/usr/bin/env bash
#
# systemd.sh - the Debian package under a real systemd: the README's install commands in a
# fresh, minimal Debian booted in a container.
#
# tests/e2e/package.sh runs the units' command lines with their credentials; this runs the units
# themselves, with every sandboxing directive enforced by systemd (a missing /bin/kill in a
# minimal system was found this way). It makes a minimal Debian (debootstrap --variant=minbase,
# plus systemd) in a directory of its own, installs the package there with `apt install
# ./pinhole_*.deb` (which must pull in its dependencies), boots it with systemd-nspawn on a
# private network (loopback only: no traffic leaves the container) and, inside, checks that:
#   - `systemctl enable --now pinhole` starts it (Type=notify: active once READY=1), the PINHOLE
#     chain is in, the daemon holds only CAP_NET_ADMIN and CAP_NET_RAW, `pinhole status` answers;
#   - `systemctl reload pinhole` succeeds, and fails with the error in the journal when the rules
#     file is broken (the old rules stay);
#   - `systemctl restart pinhole` saves the state to /run/pinhole/state.json and restores it;
#   - an upgrade (`dpkg -i` of the package again) restarts the running daemon;
#   - `systemctl stop pinhole` removes the chain; the journal has no warning or error;
#   - pinhole-monitor@lo.service runs (a container has no udev, so the test's copy of the unit in
#     /etc drops its BindsTo= on the interface's device) and writes its event log;
#   - `apt remove pinhole` stops the daemon; `apt purge` leaves nothing in /etc/pinhole.
# About two minutes, most of it debootstrap (downloads about 60 MB from the Debian mirror in
# /etc/apt/sources.list.d).
#
# Usage:  tests/e2e/systemd.sh        (as root; PINHOLE_DEB=path tests that package instead of
#                                      building one with scripts/build-deb.sh)
# Environment: PH_KEEP_WORKDIR=1 keeps the container's directory; E2E_TIME_LIMIT=900.
# Output is TAP-like, last line "e2e: N passed, N failed".

set -uo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$E2E_DIR/../.." && pwd)

if [ "$(id -u)" != 0 ]; then
    echo "# skip: tests/e2e/systemd.sh needs root (debootstrap, systemd-nspawn)"
    exit 0
fi

: "${PH_PREFIX:=phsd-}"
# shellcheck source=scripts/netns-lib.sh
. "$REPO_DIR/scripts/netns-lib.sh"
# shellcheck source=tests/e2e/tap.sh
. "$E2E_DIR/tap.sh"

ph_ensure_tools test || { echo "Bail out! missing tools could not be installed"; exit 1; }

PHASE=systemd
tap_label() { echo "$PHASE"; }
tap_on_failure() {
    [ -n "$LEADER" ] && in_box journalctl --no-pager -o cat -n 30 -u pinhole -u 'pinhole-monitor@*' 2>&1 |
        sed 's/^/#   journal: /'
}

PH_WORKDIR=$(mktemp -d /var/tmp/phsd.XXXXXX) || exit 1
mkdir -p "$PH_WORKDIR/checks"
ROOT=$PH_WORKDIR/root
MACHINE=phsd$$
NSPAWN_PID=""
LEADER=""

cleanup() {
    if [ -n "$LEADER" ] && kill -0 "$LEADER" 2>/dev/null; then
        in_box systemctl poweroff >/dev/null 2>&1
        ph_wait_gone "$NSPAWN_PID" 20 || kill -KILL "$NSPAWN_PID" 2>/dev/null
    fi
    [ -n "$NSPAWN_PID" ] && kill -KILL "$NSPAWN_PID" 2>/dev/null
    # The watchdog (tap.sh's start_watchdog).
    local pid
    for pid in $(awk '$1 == "watchdog" { print $2 }' "$PH_WORKDIR/pids" 2>/dev/null); do
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ "${PH_KEEP_WORKDIR:-0}" != 1 ]; then
        rm -rf --one-file-system -- "$PH_WORKDIR"
    fi
}
trap cleanup EXIT
trap 'cleanup; trap - INT; kill -INT $$' INT
trap 'cleanup; trap - TERM; kill -TERM $$' TERM
start_watchdog 900

# in_box CMD...: run CMD inside the booted container (all its namespaces, and its root and
# working directory: entering its mount namespace alone leaves the root where it was when this
# test runs in a chroot).
in_box() { nsenter -t "$LEADER" -a -r -w "$@"; }
# in_chroot CMD...: run CMD in the container's tree before it boots, with the host's network.
in_chroot() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }

DEB=${PINHOLE_DEB:-}

# ------------------------------------------------------------------------------------------------
package() {
    if [ -z "$DEB" ]; then
        DEB=$("$REPO_DIR/scripts/build-deb.sh") || return 1
    fi
    echo "$DEB"
    [ -s "$DEB" ]
}

minimal_debian() {
    local suite mirror
    suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    : "${mirror:=http://deb.debian.org/debian}"
    echo "debootstrap --variant=minbase $suite from $mirror"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus "$suite" "$ROOT" "$mirror" \
        > "$PH_WORKDIR/debootstrap.log" 2>&1 || { tail -n 20 "$PH_WORKDIR/debootstrap.log"; return 1; }
    cp /etc/apt/sources.list.d/debian.sources "$ROOT/etc/apt/sources.list.d/" 2>/dev/null
    # What a fresh system does not have: the package must bring it.
    for cmd in /usr/sbin/iptables /bin/kill /usr/bin/pinhole; do
        if [ -e "$ROOT$cmd" ]; then
            echo "the minimal system already has $cmd"; return 1
        fi
    done
    echo "minimal: no iptables, no kill, no pinhole"
}

apt_installs() {
    cp "$DEB" "$ROOT/root/"
    in_chroot apt-get update -qq >/dev/null || return 1
    in_chroot apt-get install -y -qq --no-install-recommends "/root/$(basename "$DEB")" \
        > "$PH_WORKDIR/apt.log" 2>&1 || { tail -n 20 "$PH_WORKDIR/apt.log"; return 1; }
    in_chroot dpkg-query -W -f '${Package} ${Version} ${db:Status-Status}\n' pinhole iptables procps
    in_chroot sh -c 'command -v iptables && test -x /bin/kill && pinhole --version'
}

boots() {
    # A container has no udev, so no device units: the monitor's BindsTo= on its interface's
    # device would fail, and a drop-in cannot reset a dependency. Test scaffolding, not part of
    # the package: a copy of the unit in /etc without those two lines.
    sed '/^BindsTo=sys-subsystem-net-devices/d; /^After=sys-subsystem-net-devices/d' \
        "$ROOT/usr/lib/systemd/system/pinhole-monitor@.service" \
        > "$ROOT/etc/systemd/system/pinhole-monitor@.service"
    setsid systemd-nspawn -q -D "$ROOT" -M "$MACHINE" -b --private-network --register=no \
        --keep-unit </dev/null > "$PH_WORKDIR/console.log" 2>&1 &
    NSPAWN_PID=$!
    local i state
    for ((i = 0; i < 300; i++)); do
        LEADER=$(ps -o pid= --ppid "$NSPAWN_PID" 2>/dev/null | awk 'NR == 1 { print $1 }')
        if [ -n "$LEADER" ]; then
            state=$(in_box systemctl is-system-running 2>/dev/null)
            case $state in
                running|degraded) echo "booted: $state"; break ;;
            esac
        fi
        kill -0 "$NSPAWN_PID" 2>/dev/null || { tail -n 20 "$PH_WORKDIR/console.log"; return 1; }
        sleep 0.2
    done
    [ "$state" = running ] || [ "$state" = degraded ] || { tail -n 20 "$PH_WORKDIR/console.log"; return 1; }
    in_box systemctl --failed --no-legend --plain
    return 0
}

main_pid() { in_box systemctl show -P MainPID "$1"; }
chain_in() { in_box iptables -S FORWARD | grep -q -- '-j PINHOLE'; }

starts() {
    in_box systemctl enable --now pinhole || return 1
    in_box systemctl is-active pinhole || return 1
    chain_in || { echo "no PINHOLE chain"; return 1; }
    local pid caps
    pid=$(main_pid pinhole.service)
    caps=$(in_box awk '/^Cap(Eff|Bnd):/ { print $2 }' "/proc/$pid/status" | sort -u)
    echo "main pid $pid, capabilities $caps"
    [ "$caps" = 0000000000003000 ] || return 1
    in_box pinhole status | head -n 12
}

reloads() {
    in_box systemctl reload pinhole || return 1
    in_box pinhole status --json | grep -q '"reloads":1' || return 1
    echo 'bogus = 1' >> "$ROOT/etc/pinhole/rules.toml"
    if in_box systemctl reload pinhole; then
        echo "a broken rules file reloaded"; return 1
    fi
    sed -i '/^bogus = 1$/d' "$ROOT/etc/pinhole/rules.toml"
    in_box journalctl --no-pager -o cat -u pinhole | grep -q 'unknown key "bogus"' || return 1
    in_box systemctl is-active pinhole && in_box pinhole status --json | grep -q '"reload_failures":1'
}

restart_keeps_state() {
    local before after
    before=$(main_pid pinhole.service)
    in_box systemctl restart pinhole || return 1
    after=$(main_pid pinhole.service)
    echo "main pid $before -> $after"
    [ "$before" != "$after" ] || return 1
    in_box journalctl --no-pager -o cat -u pinhole _PID="$after" | grep 'state restored' || return 1
    in_box journalctl --no-pager -o cat -u pinhole _PID="$before" | grep 'state saved'
}

upgrade_restarts() {
    local before after
    before=$(main_pid pinhole.service)
    in_box dpkg -i "/root/$(basename "$DEB")" >/dev/null || return 1
    after=$(main_pid pinhole.service)
    echo "main pid $before -> $after"
    [ "$before" != "$after" ] && in_box systemctl is-active pinhole && chain_in
}

monitor_runs() {
    in_box systemctl start pinhole-monitor@lo || return 1
    in_box systemctl is-active pinhole-monitor@lo || return 1
    in_box systemctl reload pinhole-monitor@lo || return 1
    in_box systemctl stop pinhole-monitor@lo || return 1
    in_box tail -n 1 /var/log/pinhole/monitor-lo.jsonl | grep -q '"type":"summary"'
}

stops_clean() {
    in_box systemctl stop pinhole || return 1
    ! chain_in || { echo "PINHOLE chain left behind"; return 1; }
    local noisy
    noisy=$(in_box journalctl --no-pager -o cat -p warning -u pinhole -u 'pinhole-monitor@*' |
        grep -v -e 'unknown key "bogus"' -e 'rules reload failed' -e 'Reload failed for' \
            -e 'Control process exited' -e 'the daemon refused' -e 'help: ' -e '^/etc/pinhole/rules.toml:')
    echo "${noisy:-no other warnings or errors in the journal}"
    [ -z "$noisy" ]
}

removes_and_purges() {
    in_box systemctl start pinhole || return 1
    in_box apt-get remove -y -qq pinhole >/dev/null || return 1
    ! in_box systemctl is-active pinhole || { echo "still active after apt remove"; return 1; }
    ! chain_in || { echo "PINHOLE chain left behind"; return 1; }
    [ -e "$ROOT/etc/pinhole/rules.toml" ] || return 1
    in_box apt-get purge -y -qq pinhole >/dev/null || return 1
    [ ! -e "$ROOT/etc/pinhole" ] && [ ! -e "$ROOT/var/log/pinhole" ]
}

main() {
    check "the package (scripts/build-deb.sh)" package || return
    check "a minimal Debian (debootstrap minbase + systemd): no iptables, no kill, no pinhole" \
        minimal_debian || return
    check "apt install ./pinhole_*.deb brings its dependencies (iptables, procps)" apt_installs || return
    check "it boots with systemd-nspawn (private network)" boots || return
    check "systemctl enable --now pinhole: active (READY=1), chain in, CapEff = CapBnd = NET_ADMIN|NET_RAW" starts || return
    check "systemctl reload: ok; with a broken rules file it fails, the error in the journal, still active" reloads
    check "systemctl restart: state saved by the old daemon, restored by the new" restart_keeps_state
    check "an upgrade (dpkg -i) restarts the running daemon" upgrade_restarts
    check "pinhole-monitor@lo: starts, reloads, stops with a summary in its event log" monitor_runs
    check "systemctl stop: chain removed; no other warning or error in the journal" stops_clean
    check "apt remove stops it and keeps the rules; apt purge removes them and the logs" removes_and_purges
}

main
echo "e2e: $PASS passed, $FAIL failed"
[ "$FAIL" = 0 ] && [ "$PASS" -gt 0 ]
