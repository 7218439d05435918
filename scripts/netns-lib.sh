# shellcheck shell=bash
#
# netns-lib.sh - reusable helpers for pinhole's network-namespace test bed.
#
# Source this file from bash (it is not meant to be executed):
#
#     . "$(dirname "$0")/netns-lib.sh"
#     ph_ensure_tools         # apt-get install what is missing (root, Debian)
#     ph_init                 # work dir + cleanup trap
#     ph_topology_up          # 3 namespaces: client <-> fw <-> server
#     ph_add_third_host       # optional: a second client address (198.51.100.66)
#     ph_start_vsftpd         # real servers inside the server namespace
#     ph_capture_start -w /tmp/x.pcap
#     ph_in_client curl -s http://192.0.2.10/small.txt
#     ph_capture_stop
#     # ph_cleanup runs from the EXIT trap installed by ph_init
#
# It is used by scripts/record-pcaps.sh, tests/e2e/nfqueue.sh and
# scripts/demo.sh.  Everything it starts is recorded so that
# ph_cleanup can stop exactly those processes (by pid / own process group)
# and delete exactly the namespaces it created.  Traffic only ever flows
# between the namespaces created here; nothing is routed to the outside.
#
# Topology (default prefix "ph-"; override with PH_PREFIX=xyz- so parallel
# runs do not collide):
#
#   ph-client                     ph-fw                        ph-server
#   eth0 198.51.100.10/24  <--> wan0 198.51.100.1/24
#        2001:db8:100::10/64       2001:db8:100::1/64
#                                  lan0 192.0.2.1/24    <--> eth0 192.0.2.10/24
#                                       2001:db8:2::1/64          2001:db8:2::10/64
#
# ph-fw forwards IPv4 and IPv6 and has no filtering rules.  The client and
# the server use ph-fw as their default gateway (v4 and v6).  The veth pairs
# are created directly inside the namespaces, so no interface ever appears
# in the root namespace and interface names can be fixed (wan0/lan0/eth0).
#
# Requirements: root and the packages of scripts/install-deps.sh's testbed group (ph_ensure_tools
# installs them); dumpcap for ph_capture_start -t dumpcap (the record group).
#
# Conventions:
#   * All public functions are prefixed ph_ and return non-zero on failure;
#     they never call `exit` (the caller decides about `set -e`).
#   * Diagnostic messages go to stderr via ph_log / ph_warn.

# --------------------------------------------------------------------------
# Configuration (all overridable from the environment before sourcing)
# --------------------------------------------------------------------------
: "${PH_PREFIX:=ph-}"

PH_NS_CLIENT="${PH_PREFIX}client"
PH_NS_FW="${PH_PREFIX}fw"
PH_NS_SERVER="${PH_PREFIX}server"

# Interface names (inside their namespaces).
: "${PH_IF_CLIENT:=eth0}"   # client side of client<->fw link
: "${PH_IF_WAN:=wan0}"      # fw side of client<->fw link
: "${PH_IF_LAN:=lan0}"      # fw side of fw<->server link
: "${PH_IF_SERVER:=eth0}"   # server side of fw<->server link

# Addresses.  198.51.100.0/24 and 192.0.2.0/24 are TEST-NET-2/TEST-NET-1,
# 2001:db8::/32 is the IPv6 documentation prefix.
: "${PH_CLIENT_V4:=198.51.100.10}"
: "${PH_WAN_V4:=198.51.100.1}"
: "${PH_LAN_V4:=192.0.2.1}"
: "${PH_SERVER_V4:=192.0.2.10}"
: "${PH_CLIENT_V6:=2001:db8:100::10}"
: "${PH_WAN_V6:=2001:db8:100::1}"
: "${PH_LAN_V6:=2001:db8:2::1}"
: "${PH_SERVER_V6:=2001:db8:2::10}"
# A second ("third host") address for the client namespace, added on demand by
# ph_add_third_host: another host on the outside network, for bounce and
# spoofing checks.
: "${PH_THIRD_V4:=198.51.100.66}"
: "${PH_THIRD_V6:=2001:db8:100::66}"

# vsftpd's passive-mode data port range (pasv_min_port / pasv_max_port).
# Every 227 / 229 reply announces a port in PH_PASV_MIN..PH_PASV_MAX, so
# tests can assert on it (and a firewall policy could pin it).
: "${PH_PASV_MIN:=40000}"
: "${PH_PASV_MAX:=40100}"

# Capture filter: drop ARP, IPv6 neighbour discovery / router discovery
# (ICMPv6 types 133..137), MLDv2 reports (143) and anything carried behind a
# hop-by-hop header (in practice MLD), but keep ICMPv6 echo and errors.
# ip6[40] is the ICMPv6 type only when there are no extension headers, which
# is exactly the case for ND; MLD always uses a hop-by-hop header (ip6[6]==0).
: "${PH_CAPTURE_FILTER:=not arp and not (icmp6 and ip6[40] >= 133 and ip6[40] <= 137) and not (icmp6 and ip6[40] == 143) and not (ip6 and ip6[6] == 0)}"

# Set PH_VERBOSE=1 for more chatter.
: "${PH_VERBOSE:=0}"

# Runtime state (filled in by ph_init / ph_start_bg).
PH_WORKDIR="${PH_WORKDIR:-}"
PH_CAPTURE_PID=""
PH_CAPTURE_FILE=""
PH_CAPTURE_LOG=""
PH_TOPOLOGY_CREATED=0
PH_CLEANED_UP=0

# --------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------
ph_log()  { printf '[%s] %s\n' "${PH_PREFIX%-}" "$*" >&2; }
ph_warn() { printf '[%s] WARNING: %s\n' "${PH_PREFIX%-}" "$*" >&2; }
ph_debug() { if [ "$PH_VERBOSE" = 1 ]; then ph_log "$@"; fi; }

# --------------------------------------------------------------------------
# Generic helpers
# --------------------------------------------------------------------------

# Run a command inside a namespace.  `ip netns exec` exec()s the command
# after setns(), so the pid of a backgrounded call is the command's pid.
ph_in()        { local ns=$1; shift; ip netns exec "$ns" "$@"; }
ph_in_client() { ph_in "$PH_NS_CLIENT" "$@"; }
ph_in_fw()     { ph_in "$PH_NS_FW" "$@"; }
ph_in_server() { ph_in "$PH_NS_SERVER" "$@"; }

# ph_ensure_tools [GROUP...]: install (Debian, apt-get, as root) the packages of the groups in
# scripts/install-deps.sh that are missing (default group: testbed, every tool the test bed
# calls). scripts/check-deps.py checks that every command this file and the scripts sourcing it
# call is in the groups those scripts install.
PH_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ph_ensure_tools() {
    "$PH_LIB_DIR/install-deps.sh" "${@:-testbed}"
}

# ph_pinhole_bin COMMAND: the pinhole binary to test in PINHOLE_BIN, as an absolute path: the
# environment's, or the tree's own debug build (cargo build, current; after scripts/test.sh's
# cargo test this only links). Says "Bail out! ..." and fails when it cannot be built or has
# no COMMAND.
ph_pinhole_bin() {
    local repo
    repo=$(cd "$PH_LIB_DIR/.." && pwd)
    if [ -z "${PINHOLE_BIN:-}" ]; then
        if ! command -v cargo >/dev/null 2>&1 && [ -f "${HOME:-}/.cargo/env" ]; then
            # shellcheck disable=SC1091
            . "${HOME:-}/.cargo/env"
        fi
        echo "# cargo build --locked --bin pinhole"
        (cd "$repo" && cargo build --locked --quiet --bin pinhole) || {
            echo "Bail out! cargo build failed"; return 1; }
        PINHOLE_BIN=$repo/target/debug/pinhole
    fi
    case $PINHOLE_BIN in /*) ;; *) PINHOLE_BIN=$PWD/$PINHOLE_BIN ;; esac
    "$PINHOLE_BIN" "$1" --help >/dev/null 2>&1 || {
        echo "Bail out! $PINHOLE_BIN has no '$1' command"; return 1; }
}

# ph_init: create the work dir (PH_WORKDIR) and install the cleanup trap.
# Call once, early.  Safe to call when PH_WORKDIR is already set.
ph_init() {
    if [ "$(id -u)" != 0 ]; then
        ph_warn "must run as root"
        return 1
    fi
    # Never let a proxy setting send client traffic anywhere else.
    unset http_proxy https_proxy ftp_proxy all_proxy no_proxy \
          HTTP_PROXY HTTPS_PROXY FTP_PROXY ALL_PROXY NO_PROXY
    if [ -z "$PH_WORKDIR" ]; then
        PH_WORKDIR=$(mktemp -d "/tmp/${PH_PREFIX}work.XXXXXX") || return 1
    fi
    # Servers chroot into subdirectories and drop privileges; make the path
    # traversable for the unprivileged users (ftp, nobody).
    chmod 0755 "$PH_WORKDIR"
    : > "$PH_WORKDIR/pids"
    trap 'ph_cleanup' EXIT
    trap 'ph_cleanup; trap - INT; kill -INT $$' INT
    trap 'ph_cleanup; trap - TERM; kill -TERM $$' TERM
    ph_debug "work dir: $PH_WORKDIR"
}

# ph_wait_for DESCRIPTION TIMEOUT_SECONDS CMD...: poll CMD every 0.1 s until it succeeds. On a
# timeout, says what was waited for and what the last attempt printed (its exit status and the
# last lines of its stdout and stderr); a command that cannot run at all (not installed: exit
# status 127, not executable: 126) is reported at once instead of being retried.
ph_wait_for() {
    local what=$1 timeout=$2 i max out rc=0
    shift 2
    max=$((timeout * 10))
    for ((i = 0; i < max; i++)); do
        out=$("$@" 2>&1) && return 0
        rc=$?
        if [ $rc = 127 ] || [ $rc = 126 ]; then
            ph_warn "cannot wait for: $what: \`$*\` cannot run (exit $rc): $(tail -n 3 <<<"$out")"
            return 1
        fi
        sleep 0.1
    done
    ph_warn "timed out after ${timeout}s waiting for: $what"
    ph_warn "  last attempt: \`$*\` exit $rc${out:+: $(tail -n 3 <<<"$out" | tr '\n' ' ')}"
    return 1
}

# ph_wait_gone PID SECONDS: poll until PID has exited (or is a zombie); false
# if it still runs after SECONDS.
ph_wait_gone() {
    local pid=$1 i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        [ "$(ps -o stat= -p "$pid" 2>/dev/null | cut -c1)" = Z ] && return 0
        sleep 0.1
    done
    return 1
}

# ph_listening NS tcp|udp PORT: true if something listens on PORT in NS.
ph_listening() {
    local ns=$1 proto=$2 port=$3 flag
    case $proto in
        tcp) flag=-Hltn ;;
        udp) flag=-Hlun ;;
        *) return 2 ;;
    esac
    # (No `| grep -q`: under `set -o pipefail` an early-exiting grep can make
    # the pipeline fail with SIGPIPE.)
    [ -n "$(ph_in "$ns" ss "$flag" "sport = :$port")" ]
}

ph_wait_listen() {
    ph_wait_for "$3/$2 listener in $1" "${4:-10}" ph_listening "$1" "$2" "$3"
}

# --------------------------------------------------------------------------
# Background process registry
# --------------------------------------------------------------------------

# ph_start_bg NAME NS LOGFILE CMD...: start CMD inside NS in the background,
# in its own session/process group (setsid), with stdout+stderr to LOGFILE.
# Records "NAME PID" in $PH_WORKDIR/pids and sets PH_LAST_PID.
# (In a non-interactive shell a background job is never a process-group
# leader, so setsid does not fork and $! is the real pid; the process group
# id therefore equals the pid, which ph_stop uses to also reap children such
# as vsftpd's per-session processes.)
PH_LAST_PID=""
ph_start_bg() {
    local name=$1 ns=$2 log=$3
    shift 3
    setsid ip netns exec "$ns" "$@" </dev/null >"$log" 2>&1 &
    PH_LAST_PID=$!
    printf '%s %s\n' "$name" "$PH_LAST_PID" >> "$PH_WORKDIR/pids"
    ph_debug "started $name (pid $PH_LAST_PID) in $ns: $*"
}

# ph_pid_of NAME: pid of the most recently started process called NAME.
ph_pid_of() {
    [ -f "$PH_WORKDIR/pids" ] || return 1
    awk -v n="$1" '$1 == n { p = $2 } END { if (p == "") exit 1; print p }' \
        "$PH_WORKDIR/pids"
}

# ph_kill_pid PID [SIGNAL]: signal the process group PID (falls back to the
# pid itself), wait up to 3 s, then SIGKILL the group.
ph_kill_pid() {
    local pid=$1 sig=${2:-TERM} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null
    for ((i = 0; i < 30; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    fi
    # Reap it if it is our child (ignore "not a child" errors).
    wait "$pid" 2>/dev/null || true
    # Children of the group that outlived the leader.
    kill -KILL -- "-$pid" 2>/dev/null || true
}

# ph_stop NAME: stop every registered process called NAME.
ph_stop() {
    local name=$1 n p
    [ -f "$PH_WORKDIR/pids" ] || return 0
    while read -r n p; do
        [ "$n" = "$name" ] && ph_kill_pid "$p"
    done < "$PH_WORKDIR/pids"
    # Drop the entries.
    awk -v n="$name" '$1 != n' "$PH_WORKDIR/pids" > "$PH_WORKDIR/pids.tmp" &&
        mv "$PH_WORKDIR/pids.tmp" "$PH_WORKDIR/pids"
}

# ph_stop_all: stop every registered process, newest first.
ph_stop_all() {
    local p
    [ -n "$PH_WORKDIR" ] && [ -f "$PH_WORKDIR/pids" ] || return 0
    for p in $(awk '{ print $2 }' "$PH_WORKDIR/pids" | tac); do
        ph_kill_pid "$p"
    done
    : > "$PH_WORKDIR/pids"
}

# --------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------

ph_ns_exists() { ip netns list | awk -v n="$1" '$1 == n { f = 1 } END { exit !f }'; }

# Apply sysctls that must be in place before interfaces get addresses.
_ph_ns_base() {
    local ns=$1
    ip netns add "$ns" || return 1
    ph_in "$ns" ip link set lo up
    # No duplicate address detection: addresses are usable immediately.
    ph_in "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 \
                           net.ipv6.conf.default.accept_dad=0
    # No router advertisements / solicitations noise.
    ph_in "$ns" sysctl -qw net.ipv6.conf.all.accept_ra=0 \
                           net.ipv6.conf.default.accept_ra=0 \
                           net.ipv6.conf.default.router_solicitations=0
}

# Turn off offloads so captures contain real MTU-sized segments with real
# checksums (no 64 KB GSO/GRO super-packets, no CHECKSUM_PARTIAL).
_ph_no_offload() {
    local ns=$1 dev=$2
    ph_in "$ns" ethtool -K "$dev" tso off gso off gro off tx off rx off \
        >/dev/null 2>&1 || ph_warn "ethtool -K $dev in $ns failed"
}

# ph_topology_up: build the three namespaces.  Fails if they already exist
# (use ph_topology_down first, or another PH_PREFIX).
ph_topology_up() {
    local ns
    for ns in "$PH_NS_CLIENT" "$PH_NS_FW" "$PH_NS_SERVER"; do
        if ph_ns_exists "$ns"; then
            ph_warn "namespace $ns already exists (stale run? try PH_PREFIX=other-)"
            return 1
        fi
    done
    PH_TOPOLOGY_CREATED=1
    for ns in "$PH_NS_CLIENT" "$PH_NS_FW" "$PH_NS_SERVER"; do
        _ph_ns_base "$ns" || return 1
    done

    # veth pairs created with both ends directly inside the namespaces.
    ip link add name "$PH_IF_CLIENT" netns "$PH_NS_CLIENT" type veth \
        peer name "$PH_IF_WAN" netns "$PH_NS_FW" || return 1
    ip link add name "$PH_IF_LAN" netns "$PH_NS_FW" type veth \
        peer name "$PH_IF_SERVER" netns "$PH_NS_SERVER" || return 1

    _ph_no_offload "$PH_NS_CLIENT" "$PH_IF_CLIENT"
    _ph_no_offload "$PH_NS_FW" "$PH_IF_WAN"
    _ph_no_offload "$PH_NS_FW" "$PH_IF_LAN"
    _ph_no_offload "$PH_NS_SERVER" "$PH_IF_SERVER"

    # Client.
    ph_in_client ip addr add "$PH_CLIENT_V4/24" dev "$PH_IF_CLIENT"
    ph_in_client ip -6 addr add "$PH_CLIENT_V6/64" dev "$PH_IF_CLIENT" nodad
    ph_in_client ip link set "$PH_IF_CLIENT" up
    ph_in_client ip route add default via "$PH_WAN_V4"
    ph_in_client ip -6 route add default via "$PH_WAN_V6"

    # Firewall / router.
    ph_in_fw sysctl -qw net.ipv4.ip_forward=1 \
                        net.ipv6.conf.all.forwarding=1 \
                        net.ipv6.conf.default.forwarding=1
    ph_in_fw ip addr add "$PH_WAN_V4/24" dev "$PH_IF_WAN"
    ph_in_fw ip -6 addr add "$PH_WAN_V6/64" dev "$PH_IF_WAN" nodad
    ph_in_fw ip addr add "$PH_LAN_V4/24" dev "$PH_IF_LAN"
    ph_in_fw ip -6 addr add "$PH_LAN_V6/64" dev "$PH_IF_LAN" nodad
    ph_in_fw ip link set "$PH_IF_WAN" up
    ph_in_fw ip link set "$PH_IF_LAN" up

    # Server.
    ph_in_server ip addr add "$PH_SERVER_V4/24" dev "$PH_IF_SERVER"
    ph_in_server ip -6 addr add "$PH_SERVER_V6/64" dev "$PH_IF_SERVER" nodad
    ph_in_server ip link set "$PH_IF_SERVER" up
    ph_in_server ip route add default via "$PH_LAN_V4"
    ph_in_server ip -6 route add default via "$PH_LAN_V6"

    ph_topology_check
}

# ph_add_third_host: give the client namespace a second address on its link
# (PH_THIRD_V4, PH_THIRD_V6), i.e. another host outside the firewall, used
# only by programs that bind to it explicitly.  The IPv4 one is a secondary
# address and the IPv6 one is deprecated (preferred_lft 0), so the kernel
# never picks either as a source address: otherwise a server in the client
# namespace (tftpd-hpa over IPv6 does) may answer from the third address.
ph_add_third_host() {
    ph_in_client ip addr add "$PH_THIRD_V4/24" dev "$PH_IF_CLIENT" || return 1
    ph_in_client ip -6 addr add "$PH_THIRD_V6/64" dev "$PH_IF_CLIENT" nodad preferred_lft 0
}

# ph_topology_check: end-to-end reachability (v4 + v6), which also primes
# the neighbour caches so captures start without ARP/ND exchanges.
ph_topology_check() {
    local ok=0
    ph_wait_for "IPv4 client->server" 5 \
        ph_in_client ping -c 1 -W 1 "$PH_SERVER_V4" || ok=1
    ph_wait_for "IPv6 client->server" 5 \
        ph_in_client ping -6 -c 1 -W 1 "$PH_SERVER_V6" || ok=1
    return $ok
}

# ph_delete_namespaces NS...: for a library or test that builds namespaces of its own: kill
# what still runs in each one that exists (only in those namespaces, by pid), then delete it.
ph_delete_namespaces() {
    local ns pid
    for ns in "$@"; do
        ph_ns_exists "$ns" || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            ph_debug "killing leftover pid $pid in $ns ($(cat "/proc/$pid/comm" 2>/dev/null))"
            kill -KILL "$pid" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || ph_warn "could not delete $ns"
    done
}

# ph_topology_down: delete the namespaces (after killing anything that still
# runs inside them -- only processes in *our* namespaces, by pid).
ph_topology_down() {
    local ns pid
    for ns in "$PH_NS_CLIENT" "$PH_NS_FW" "$PH_NS_SERVER"; do
        ph_ns_exists "$ns" || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            ph_warn "killing leftover pid $pid in $ns ($(cat "/proc/$pid/comm" 2>/dev/null))"
            kill -KILL "$pid" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || ph_warn "could not delete $ns"
    done
    PH_TOPOLOGY_CREATED=0
}

# ph_on_cleanup FUNCTION: have ph_cleanup also call FUNCTION, after it stopped
# the registered processes and before it deletes this file's namespaces: for
# a library that builds namespaces of its own (scripts/nat-lib.sh).
PH_CLEANUP_HOOKS=()
ph_on_cleanup() {
    local h
    for h in "${PH_CLEANUP_HOOKS[@]}"; do
        [ "$h" = "$1" ] && return 0
    done
    PH_CLEANUP_HOOKS+=("$1")
}

# ph_cleanup: idempotent; stops captures and servers, removes namespaces and
# the work dir (unless PH_KEEP_WORKDIR=1).  Installed as EXIT trap by ph_init.
ph_cleanup() {
    [ "$PH_CLEANED_UP" = 1 ] && return 0
    PH_CLEANED_UP=1
    if [ -n "$PH_CAPTURE_PID" ]; then
        kill -INT "$PH_CAPTURE_PID" 2>/dev/null || true
        sleep 0.3
    fi
    ph_stop_all
    local hook
    for hook in "${PH_CLEANUP_HOOKS[@]}"; do
        "$hook"
    done
    if [ "$PH_TOPOLOGY_CREATED" = 1 ]; then
        ph_topology_down
    fi
    if [ -n "$PH_WORKDIR" ] && [ -d "$PH_WORKDIR" ] && [ "${PH_KEEP_WORKDIR:-0}" != 1 ]; then
        rm -rf -- "$PH_WORKDIR"
    fi
}

# --------------------------------------------------------------------------
# Packet capture
# --------------------------------------------------------------------------

# ph_capture_start [-n NS] [-i IFACE] [-t tcpdump|dumpcap] [-y LINKTYPE]
#                  [-f FILTER] -w FILE
# Defaults: NS=$PH_NS_FW, IFACE=$PH_IF_LAN, tcpdump, $PH_CAPTURE_FILTER.
# Returns once the capturer is really capturing.  Only one capture at a time.
ph_capture_start() {
    local ns=$PH_NS_FW iface=$PH_IF_LAN tool=tcpdump linktype="" \
          filter=$PH_CAPTURE_FILTER file="" opt
    OPTIND=1
    while getopts "n:i:t:y:f:w:" opt; do
        case $opt in
            n) ns=$OPTARG ;;
            i) iface=$OPTARG ;;
            t) tool=$OPTARG ;;
            y) linktype=$OPTARG ;;
            f) filter=$OPTARG ;;
            w) file=$OPTARG ;;
            *) return 2 ;;
        esac
    done
    [ -n "$file" ] || { ph_warn "ph_capture_start: -w FILE missing"; return 2; }
    rm -f -- "$file"
    PH_CAPTURE_FILE=$file
    PH_CAPTURE_LOG="$PH_WORKDIR/capture.log"
    local -a cmd
    case $tool in
        tcpdump)
            # -s 0: full packets; -U: flush per packet; -Z root: do not drop
            # privileges (the output dir may not be writable for 'tcpdump');
            # -B: 16 MB kernel buffer so bursts are not dropped;
            # --immediate-mode: deliver packets at once.
            cmd=(tcpdump -i "$iface" -s 0 -U -B 16384 --immediate-mode -Z root -n)
            [ -n "$linktype" ] && cmd+=(-y "$linktype")
            cmd+=(-w "$file" "$filter")
            ;;
        dumpcap)
            # -n: pcapng (dumpcap's default, made explicit); -q: quiet. Only scripts that
            # install the record group ask for dumpcap.
            cmd=(dumpcap -i "$iface" -s 0 -n -q -B 16)  # check-deps: optional (record group)
            [ -n "$linktype" ] && cmd+=(-y "$linktype")
            cmd+=(-f "$filter" -w "$file")
            ;;
        *) ph_warn "unknown capture tool $tool"; return 2 ;;
    esac
    ph_start_bg capture "$ns" "$PH_CAPTURE_LOG" "${cmd[@]}"
    PH_CAPTURE_PID=$PH_LAST_PID
    # tcpdump prints "listening on IFACE" after the handle is activated and
    # the filter installed; dumpcap prints "Capturing on 'IFACE'".  Both
    # have written the file header by then.
    if ! ph_wait_for "$tool on $iface" 10 \
            grep -qE "listening on|Capturing on" "$PH_CAPTURE_LOG"; then
        cat "$PH_CAPTURE_LOG" >&2
        return 1
    fi
    ph_wait_for "capture file $file" 5 test -s "$file" || return 1
    sleep 0.3
}

# ph_capture_stop: settle, SIGINT the capturer, wait for it to finish writing.
# Prints the capturer's statistics line(s) to stderr; warns on kernel drops.
ph_capture_stop() {
    [ -n "$PH_CAPTURE_PID" ] || return 0
    sleep "${PH_CAPTURE_SETTLE:-0.5}"
    kill -INT "$PH_CAPTURE_PID" 2>/dev/null
    ph_wait_gone "$PH_CAPTURE_PID" 10
    ph_stop capture
    PH_CAPTURE_PID=""
    ph_debug "$(grep -E 'packets|Packets' "$PH_CAPTURE_LOG" | tr '\n' ' ')"
    if grep -qE '^[1-9][0-9]* packets? dropped by kernel' "$PH_CAPTURE_LOG"; then
        ph_warn "kernel dropped packets while capturing $PH_CAPTURE_FILE"
        grep -E 'dropped' "$PH_CAPTURE_LOG" >&2
    fi
    [ -s "$PH_CAPTURE_FILE" ]
}

# --------------------------------------------------------------------------
# Server content and servers (all run in the server namespace)
# --------------------------------------------------------------------------

# Deterministic pseudo-random-looking bytes: ph_gen_bytes SIZE SEED > file
ph_gen_bytes() {
    python3 - "$1" "$2" <<'PY'
import sys
size, seed = int(sys.argv[1]), int(sys.argv[2])
# xorshift32: simple, fully deterministic across Python versions.
x = (seed * 2654435761) & 0xFFFFFFFF or 1
out = bytearray()
while len(out) < size:
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    out += x.to_bytes(4, "little")
sys.stdout.buffer.write(bytes(out[:size]))
PY
}

# ph_content_init: create the document roots under $PH_WORKDIR:
#   ftp/   vsftpd anon_root (root-owned, not writable - vsftpd insists)
#   ftp/upload/  writable for the 'ftp' user (anonymous uploads)
#   tftp/  tftpd-hpa root (world-writable so --create works as 'nobody')
#   www/   python http.server root
ph_content_init() {
    local d=$PH_WORKDIR
    mkdir -p "$d/ftp/upload" "$d/ftp/pub" "$d/tftp" "$d/www" "$d/empty" "$d/client"
    chmod 0755 "$d/ftp" "$d/ftp/pub" "$d/www" "$d/empty" "$d/client"
    # Upload dir owned by vsftpd's anonymous user (falls back to 0777).
    if chown ftp:ftp "$d/ftp/upload" 2>/dev/null; then
        chmod 0755 "$d/ftp/upload"
    else
        chmod 0777 "$d/ftp/upload"
    fi
    chmod 0777 "$d/tftp"

    printf 'pinhole test file\nline two\nline three\n' > "$d/ftp/small.txt"
    ph_gen_bytes 204800 1 > "$d/ftp/medium.bin"
    printf 'readme for the pub directory\n' > "$d/ftp/pub/README"
    cp "$d/ftp/small.txt" "$d/www/small.txt"

    cp "$d/ftp/small.txt" "$d/tftp/small.txt"
    printf 'hostname router1\ninterface GigabitEthernet0/0\n ip address 192.0.2.10 255.255.255.0\n!\nend\n' \
        > "$d/tftp/config.txt"
    ph_gen_bytes 102400 2 > "$d/tftp/image.bin"

    # Files the clients upload.
    printf 'uploaded by the pinhole test client\n' > "$d/client/upload.txt"
    ph_gen_bytes 3000 3 > "$d/client/upload.bin"

    chmod 0644 "$d/ftp/small.txt" "$d/ftp/medium.bin" "$d/ftp/pub/README" \
               "$d/www/small.txt" "$d/tftp/"*.txt "$d/tftp/image.bin"
}

# ph_write_vsftpd_conf FILE [tls]: vsftpd config for anonymous FTP.
ph_write_vsftpd_conf() {
    local conf=$1 variant=${2:-plain}
    cat > "$conf" <<EOF
# generated by netns-lib.sh ($variant)
# Standalone, foreground, one socket on [::]:21 that also accepts IPv4
# (v4-mapped) connections.
listen=NO
listen_ipv6=YES
listen_port=21
background=NO
# Anonymous only, download + upload into upload/.
anonymous_enable=YES
local_enable=NO
no_anon_password=NO
ftp_username=ftp
anon_root=$PH_WORKDIR/ftp
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_umask=022
# Both data connection modes; active mode connects from port 20, passive
# mode listens on a port in the fixed range PH_PASV_MIN..PH_PASV_MAX.
pasv_enable=YES
pasv_min_port=$PH_PASV_MIN
pasv_max_port=$PH_PASV_MAX
port_enable=YES
connect_from_port_20=YES
# Handle ABOR sent as Telnet IP + Synch (urgent data) during a transfer.
async_abor_enable=YES
# Sandboxing features that do not work (or are not wanted) in our
# namespace test bed: the seccomp filter and the per-session
# PID/IPC/network namespaces.
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
secure_chroot_dir=$PH_WORKDIR/empty
# No PAM for anonymous; keep logging local to the work dir.
pam_service_name=vsftpd
xferlog_enable=YES
xferlog_std_format=NO
log_ftp_protocol=YES
vsftpd_log_file=$PH_WORKDIR/vsftpd-$variant.log
dirmessage_enable=NO
use_localtime=NO
hide_ids=YES
EOF
    if [ "$variant" = tls ]; then
        cat >> "$conf" <<EOF
# Explicit FTPS (AUTH TLS) with a throw-away self-signed certificate.
ssl_enable=YES
allow_anon_ssl=YES
force_anon_logins_ssl=NO
force_anon_data_ssl=NO
force_local_logins_ssl=NO
force_local_data_ssl=NO
require_ssl_reuse=NO
ssl_ciphers=HIGH
rsa_cert_file=$PH_WORKDIR/tls/cert.pem
rsa_private_key_file=$PH_WORKDIR/tls/key.pem
EOF
    fi
}

# ph_make_cert: self-signed certificate in $PH_WORKDIR/tls.
ph_make_cert() {
    mkdir -p "$PH_WORKDIR/tls"
    [ -s "$PH_WORKDIR/tls/cert.pem" ] && return 0
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
        -subj "/CN=$PH_SERVER_V4" \
        -keyout "$PH_WORKDIR/tls/key.pem" -out "$PH_WORKDIR/tls/cert.pem" \
        >/dev/null 2>&1
    chmod 0600 "$PH_WORKDIR/tls/key.pem"
}

# ph_start_vsftpd [tls]: start vsftpd (name "vsftpd") and wait for :21.
ph_start_vsftpd() {
    local variant=${1:-plain} conf
    conf="$PH_WORKDIR/vsftpd-$variant.conf"
    [ "$variant" = tls ] && { ph_make_cert || return 1; }
    ph_write_vsftpd_conf "$conf" "$variant"
    ph_start_bg vsftpd "$PH_NS_SERVER" "$PH_WORKDIR/vsftpd-$variant.out" \
        vsftpd "$conf"
    ph_wait_listen "$PH_NS_SERVER" tcp 21 || {
        cat "$PH_WORKDIR/vsftpd-$variant.out" >&2; return 1; }
}

# ph_start_tftpd [EXTRA_ARGS...]: start tftpd-hpa (name "tftpd") on port 69,
# IPv4 and IPv6 (tftpd-hpa opens one socket per family when no --address is
# given), chrooted into $PH_WORKDIR/tftp, uploads allowed (--create).
# Example: ph_start_tftpd --port-range 30000:30009
ph_start_tftpd() {
    ph_start_tftpd_in "$PH_NS_SERVER" tftpd "$PH_WORKDIR/tftp" "$@"
}

# ph_start_tftpd_in NS NAME ROOT [EXTRA_ARGS...]: the same in any namespace,
# with its own root directory (created world-writable for --create) and log
# $PH_WORKDIR/NAME.out; e.g. a TFTP server outside that a device inside
# writes its backup to:  ph_start_tftpd_in "$PH_NS_CLIENT" tftpd-out DIR
ph_start_tftpd_in() {
    local ns=$1 name=$2 root=$3
    shift 3
    mkdir -p "$root" && chmod 0777 "$root"
    ph_start_bg "$name" "$ns" "$PH_WORKDIR/$name.out" \
        in.tftpd --foreground --listen --address :69 --secure --create \
                 --user nobody -v -v "$@" "$root"
    ph_wait_listen "$ns" udp 69 || {
        cat "$PH_WORKDIR/$name.out" >&2; return 1; }
}

# ph_start_http: python http.server on [::]:80 (dual stack), name "http".
ph_start_http() {
    ph_start_bg http "$PH_NS_SERVER" "$PH_WORKDIR/http.out" \
        python3 -m http.server 80 --bind :: --directory "$PH_WORKDIR/www"
    ph_wait_listen "$PH_NS_SERVER" tcp 80
}

# ph_start_udp_echo [PORT]: tiny dual-stack UDP echo server, name "udpecho".
ph_start_udp_echo() {
    local port=${1:-5353}
    ph_start_bg udpecho "$PH_NS_SERVER" "$PH_WORKDIR/udpecho.out" \
        python3 -u -c '
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data, peer)
' "$port"
    ph_wait_listen "$PH_NS_SERVER" udp "$port"
}

# ph_versions: one line per tool with its exact version.
ph_versions() {
    local p
    for p in vsftpd tftpd-hpa tftp-hpa curl lftp atftp tcpdump libpcap0.8 \
             tshark iproute2 python3 openssl; do
        dpkg-query -W -f '${Package} ${Version}\n' "$p" 2>/dev/null
    done
}
