#!/usr/bin/env bash
# The install step: every Debian package whose commands pinhole's scripts and tests call, in
# groups. Every script that calls a command outside Debian's essential/required base installs the
# group that provides it through this file (directly, or with netns-lib.sh's ph_ensure_tools), and
# scripts/check-deps.py, run by scripts/test.sh, fails when a script calls a command its install
# step does not provide. Add a package here, to the group of the script that needs it, never to a
# machine by hand.
#
# Usage:
#   scripts/install-deps.sh [--update] GROUP...   install what is missing (root, apt-get); --update
#                                                 runs apt-get update and install even when nothing
#                                                 is missing (CI does, on a clean machine)
#   scripts/install-deps.sh --list GROUP...       print the groups' packages (unpacked ones too), one
#                                                 per line
#   scripts/install-deps.sh --missing GROUP...    print the packages not installed; exit 1 if any
#   scripts/install-deps.sh --unpacked-root       print the directory the unpacked packages are in
#
# Groups (a group includes the groups it names first):
#   python    python3 alone: benches/replay.sh's report
#   build     the C linker and libraries cargo needs (every script that builds pinhole)
#   fuzz      build + the C++ compiler libFuzzer needs: scripts/fuzz-smoke.sh
#   testbed   python + build + network namespaces with real servers and clients: demo.sh, tests/e2e,
#             the benches
#   ftps      testbed + proftpd (unpacked, see below): tests/e2e/ftps.sh
#   ha        testbed + keepalived and conntrackd: tests/e2e/ha.sh
#   package   build + what scripts/build-deb.sh calls to build the Debian package
#   test      testbed + ftps + ha + package + fuzz + what scripts/test.sh itself runs: the dependency check,
#             the systemd unit, man page and package checks
#   record    testbed + Wireshark's tools and atftp: scripts/record-pcaps.sh
#   bench     testbed + kmod (the kernel helpers' modules): benches/live.sh
#
# Unpacked packages: a group line "unpack:PACKAGE" names a package that cannot be installed beside
# the others (every FTP server Debian packages declares Conflicts: ftp-server, so proftpd cannot be
# installed beside vsftpd). It is fetched with `apt-get download` and its files are unpacked
# (dpkg-deb -x: no maintainer script runs, no service starts) under UNPACKED_ROOT, with a stamp
# naming the version in UNPACKED_ROOT/.unpacked/PACKAGE; the group installs its libraries as usual.
# Scripts run it from there (`install-deps.sh --unpacked-root`).
#
# Not root: nothing is installed; what is missing is printed with the command that installs it.
set -euo pipefail

UNPACKED_ROOT=${PINHOLE_UNPACKED_ROOT:-/var/cache/pinhole-tests/unpacked}

group_packages() {
    case $1 in
        python)
            # python3: the FTP/TFTP probes, content generation, JSON checks, reports
            echo python3
            ;;
        build)
            # cc, the linker cargo runs, with the C library's startup files: a Rust toolchain
            # from rustup brings neither
            echo gcc
            echo libc6-dev
            ;;
        fuzz)
            group_packages build
            # g++: libFuzzer's C++ sources (scripts/fuzz-smoke.sh)
            echo g++
            ;;
        testbed)
            group_packages python
            group_packages build
            # ip, ss: namespaces, veth pairs, addresses, listening sockets
            echo iproute2
            # ping: the test bed's reachability check
            echo iputils-ping
            # ps: process states while waiting for a process to end
            echo procps
            # iptables, ip6tables, *-save, *-restore: the router's base policy; pinhole's own
            # --install-rules runs iptables-restore too
            echo iptables
            # conntrack: the kernel's expectations, to show its helper never saw what pinhole
            # refused (tests/e2e/nat.sh)
            echo conntrack
            # ethtool: checksum and segmentation offloads off on the veth pairs
            echo ethtool
            # the servers: vsftpd (FTP, FTPS), tftpd-hpa (in.tftpd)
            echo vsftpd
            echo tftpd-hpa
            # the clients: tftp (tftp-hpa's, whose options the tests use), curl, lftp
            echo tftp-hpa
            echo curl
            echo lftp
            # tcpdump: captures, and reading pinhole's drop capture
            echo tcpdump
            # openssl: the FTPS server's throw-away certificate
            echo openssl
            ;;
        package)
            group_packages build
            # dpkg-shlibdeps (the package's library dependencies) and, through binutils, strip
            echo dpkg-dev
            # git: the changelog names the commit, file times are the commit's
            echo git
            ;;
        test)
            group_packages testbed
            group_packages ftps
            group_packages ha
            group_packages package
            group_packages fuzz
            # shfmt: parses the scripts for scripts/check-deps.py
            echo shfmt
            # systemd-analyze: verifies the systemd units
            echo systemd
            # man: renders the generated manual pages in the package test
            echo man-db
            # lintian: the package test's Debian policy check
            echo lintian
            # logrotate: reads the package's logrotate snippet in the package test
            echo logrotate
            # debootstrap, systemd-nspawn: a minimal Debian booted with systemd for the units
            echo debootstrap
            echo systemd-container
            ;;
        record)
            group_packages testbed
            # tshark; capinfos and dumpcap (wireshark-common)
            echo tshark
            echo wireshark-common
            # atftp: a second TFTP client for the captures
            echo atftp
            ;;
        ftps)
            group_packages testbed
            # proftpd with mod_tls (proftpd-mod-crypto): the FTPS server that implements CCC
            # (RFC 4217 section 12.3), which vsftpd does not (tests/e2e/ftps.sh). It Conflicts:
            # ftp-server like vsftpd, so it is unpacked (see above), and the libraries it links
            # that a Debian base lacks are installed
            # (proftpd-basic is what Debian calls the proftpd server; since 1.3.7 a transitional
            # package of proftpd-core, proftpd-mod-crypto and proftpd-mod-wrap: the first two
            # carry what the test runs)
            echo unpack:proftpd-basic
            echo unpack:proftpd-core
            echo unpack:proftpd-mod-crypto
            echo libhiredis0.14
            echo libmemcached11
            echo libmemcachedutil2
            echo libpcre2-posix3
            ;;
        ha)
            group_packages testbed
            # keepalived (VRRP) and conntrackd (connection tracking sync): the failover pair of
            # tests/e2e/ha.sh
            echo keepalived
            echo conntrackd
            ;;
        bench)
            group_packages testbed
            # modprobe: loads the kernel's FTP/TFTP helpers for the comparison
            echo kmod
            ;;
        *)
            echo "install-deps.sh: unknown group '$1' (python, build, fuzz, testbed, ftps, ha, package, test, record, bench)" >&2
            return 1
            ;;
    esac
}

packages_of() {
    local group
    for group in "$@"; do
        group_packages "$group"
    done | awk '!seen[$0]++'
}

installed() {
    case $1 in
        unpack:*) [ -s "$UNPACKED_ROOT/.unpacked/${1#unpack:}" ] ;;
        *) [ "$(dpkg-query -W -f '${db:Status-Status}' "$1" 2>/dev/null)" = installed ] ;;
    esac
}

missing_of() {
    local pkg
    for pkg in "$@"; do
        installed "$pkg" || echo "$pkg"
    done
}

# unpack PACKAGE...: fetch each package's .deb (the candidate version) and unpack its files under
# UNPACKED_ROOT, then write its stamp.
unpack() {
    local tmp pkg deb rc=0
    tmp=$(mktemp -d)
    # apt-get download writes as _apt where it can (otherwise it warns and downloads as root)
    chown _apt "$tmp" 2>/dev/null || true
    mkdir -p "$UNPACKED_ROOT/.unpacked"
    for pkg in "$@"; do
        rm -f "$tmp"/*.deb
        if ! (cd "$tmp" && apt-get download -qq "$pkg"); then
            echo "install-deps.sh: apt-get download $pkg failed" >&2
            rc=1
            continue
        fi
        deb=$(echo "$tmp"/*.deb)
        if dpkg-deb -x "$deb" "$UNPACKED_ROOT"; then
            dpkg-deb -f "$deb" Version > "$UNPACKED_ROOT/.unpacked/$pkg"
            echo "install-deps.sh: unpacked $pkg $(cat "$UNPACKED_ROOT/.unpacked/$pkg") in $UNPACKED_ROOT" >&2
        else
            rc=1
        fi
    done
    rm -rf "$tmp"
    return $rc
}

action=install
update=0
case ${1:-} in
    --list) action=list; shift ;;
    --missing) action=missing; shift ;;
    --unpacked-root) echo "$UNPACKED_ROOT"; exit 0 ;;
    --update) update=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
if [ $# -eq 0 ]; then
    echo "usage: install-deps.sh [--update|--list|--missing] GROUP... (python, build, fuzz, testbed, ftps, ha, package, test, record, bench)" >&2
    exit 2
fi
for group in "$@"; do
    group_packages "$group" >/dev/null || exit 2
done
mapfile -t all < <(packages_of "$@")
# What apt-get installs, and what is unpacked instead.
packages=() unpacked=()
for pkg in "${all[@]}"; do
    case $pkg in
        unpack:*) unpacked+=("${pkg#unpack:}") ;;
        *) packages+=("$pkg") ;;
    esac
done
if [ $action = list ]; then
    # Unpacked packages too: scripts/check-deps.py checks the commands scripts call against
    # every package their install step provides, however it provides it.
    printf '%s\n' "${packages[@]}" "${unpacked[@]}"
    exit 0
fi
mapfile -t missing < <(missing_of "${all[@]}")
if [ $action = missing ]; then
    [ ${#missing[@]} -eq 0 ] && exit 0
    printf '%s\n' "${missing[@]}"
    exit 1
fi
if [ ${#missing[@]} -eq 0 ] && [ "$update" = 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-deps.sh: missing Debian packages: ${missing[*]}" >&2
    echo "  install them as root: scripts/install-deps.sh $*" >&2
    exit 1
fi
echo "install-deps.sh: installing ${missing[*]:-(all present; --update)}" >&2
# Debian's vsftpd and tftpd-hpa start their system service (on :21 and :69 of the root
# namespace) from their postinst. The test bed runs its own servers in namespaces, so nothing
# should be left running: a temporary policy-rc.d answering 101 ("action forbidden") keeps
# invoke-rc.d and deb-systemd-invoke from starting them, and under systemd the units enabled for
# the next boot are disabled again.
prc=/usr/sbin/policy-rc.d
made_prc=0
if [ ! -e "$prc" ]; then
    printf '#!/bin/sh\n# temporary, from pinhole scripts/install-deps.sh\nexit 101\n' > "$prc"
    chmod 0755 "$prc"
    made_prc=1
fi
rc=0
DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
if [ $rc = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null || rc=$?
fi
[ "$made_prc" = 1 ] && rm -f "$prc"
if [ -d /run/systemd/system ]; then
    for svc in vsftpd tftpd-hpa keepalived conntrackd; do
        if [[ " ${missing[*]} " == *" $svc "* ]]; then
            systemctl disable --now "$svc" >/dev/null 2>&1 || true  # check-deps: optional (only under systemd)
        fi
    done
fi
if [ $rc != 0 ]; then
    echo "install-deps.sh: apt-get failed (exit $rc) installing: ${packages[*]}" >&2
    exit $rc
fi
# The unpacked packages: those missing, or all of them with --update (a newer version).
to_unpack=()
for pkg in "${unpacked[@]}"; do
    if [ "$update" = 1 ] || ! installed "unpack:$pkg"; then
        to_unpack+=("$pkg")
    fi
done
if [ ${#to_unpack[@]} -gt 0 ]; then
    unpack "${to_unpack[@]}" || { echo "install-deps.sh: unpacking failed: ${to_unpack[*]}" >&2; exit 1; }
fi
mapfile -t still < <(missing_of "${all[@]}")
if [ ${#still[@]} -gt 0 ]; then
    echo "install-deps.sh: still not installed after apt-get: ${still[*]}" >&2
    exit 1
fi
