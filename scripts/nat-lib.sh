# shellcheck shell=bash
#
# nat-lib.sh - a NAT router test bed: an edge router that masquerades an inside network and
# forwards FTP and TFTP from its one public address to a private server (DNAT), with real
# servers and clients in network namespaces. Source it after scripts/netns-lib.sh:
#
#     . "$REPO/scripts/netns-lib.sh"
#     . "$REPO/scripts/nat-lib.sh"
#     ph_ensure_tools; ph_init
#     nat_topology_up               # six namespaces (below); registered for ph_cleanup
#     nat_servers_up                # vsftpd + tftpd-hpa on the private and the outside server
#     nat_router_nat_up             # DNAT 21/69 of the public address, MASQUERADE (v4 and v6)
#     nat_fw_kernel_up              # optional: the kernel's helpers as the firewall
#     ph_in "$NAT_NS_CLIENT" curl ftp://203.0.113.1/small.txt
#     nat_topology_down             # or let ph_cleanup do it
#
# Used by tests/e2e/nat.sh. The functions build and tear down; they check nothing but that
# what they set up is in place (no test assertions), so a benchmark can reuse them.
#
# Topology (prefix PH_PREFIX, as in netns-lib.sh; NAT_NS_* are the names):
#
#   PREFIXclient  eth0 203.0.113.10/24 2001:db8:113::10/64 --+
#   (outside client)                                         |  PREFIXswitch: bridge br0
#   PREFIXoserver eth0 203.0.113.20/24 2001:db8:113::20/64 --+  (the outside segment)
#   (outside server: vsftpd, tftpd-hpa)                      |
#                                                            |
#   PREFIXfw      wan0 203.0.113.1/24  2001:db8:113::1/64  --+  the router's public address
#   (the router)  lan0 10.0.1.1/24     fd00:1::1/64  <--> eth0 10.0.1.10 fd00:1::10  PREFIXserver
#                                                          (private server: vsftpd, tftpd-hpa)
#                 lan1 10.0.2.1/24     fd00:2::1/64  <--> eth0 10.0.2.10 fd00:2::10  PREFIXinside
#                                                          (inside device, masqueraded)
#
# The outside hosts have only their connected /24 and /64: no route to 10.0.0.0/8 or
# fd00::/8, so they reach the private network only through the router's translations. The
# private hosts route everything through the router. netns-lib.sh's names are reused where
# they mean the same thing (PH_NS_FW is the router, PH_NS_SERVER the private server,
# PH_NS_CLIENT the outside client, and PH_*_V4/V6 are set to this topology's addresses), so
# ph_in_fw, ph_start_vsftpd, ph_start_tftpd and the like work on it.
#
# The router's translations (nat_router_nat_up), in chains of their own in the nat table of
# both families (the filter and raw tables are the firewall's):
#   TESTBED_DNAT (from PREROUTING):  tcp 21 and udp 69 of the public address -> private server;
#                                    with nat_pasv_range on, also tcp PH_PASV_MIN..PH_PASV_MAX
#                                    (IPv4 only: the vsftpd pasv_address recipe)
#   TESTBED_MASQ (from POSTROUTING): MASQUERADE what leaves wan0 from 10.0.0.0/8, fd00::/8
# The kernel firewall (nat_fw_kernel_up): FORWARD policy DROP, chain TESTBED_FWD accepting
# ESTABLISHED,RELATED and new tcp 21 / udp 69 (and, with the recipe, the forwarded passive
# range), the ftp and tftp conntrack helpers attached in the raw table (TESTBED_HELPERS,
# nat_fw_helpers_up, also usable alone).
#
# Requirements: root, scripts/install-deps.sh's testbed group.

# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------
NAT_NS_CLIENT=$PH_NS_CLIENT           # the outside client
NAT_NS_FW=$PH_NS_FW                   # the router
NAT_NS_SERVER=$PH_NS_SERVER           # the private server (behind DNAT)
NAT_NS_INSIDE="${PH_PREFIX}inside"    # the inside device (masqueraded)
NAT_NS_OSERVER="${PH_PREFIX}oserver"  # the outside server
NAT_NS_SWITCH="${PH_PREFIX}switch"    # the outside segment's bridge
NAT_NAMESPACES=("$NAT_NS_SWITCH" "$NAT_NS_FW" "$NAT_NS_CLIENT" "$NAT_NS_OSERVER"
    "$NAT_NS_SERVER" "$NAT_NS_INSIDE")

: "${NAT_IF_LAN1:=lan1}"   # router side of the router <-> inside device link

# The outside segment (TEST-NET-3, and an IPv6 documentation prefix).
: "${NAT_PUBLIC_V4:=203.0.113.1}"
: "${NAT_PUBLIC_V6:=2001:db8:113::1}"
: "${NAT_CLIENT_V4:=203.0.113.10}"
: "${NAT_CLIENT_V6:=2001:db8:113::10}"
: "${NAT_OSERVER_V4:=203.0.113.20}"
: "${NAT_OSERVER_V6:=2001:db8:113::20}"
# The private networks.
: "${NAT_LAN0_V4:=10.0.1.1}"
: "${NAT_LAN0_V6:=fd00:1::1}"
: "${NAT_SERVER_V4:=10.0.1.10}"
: "${NAT_SERVER_V6:=fd00:1::10}"
: "${NAT_LAN1_V4:=10.0.2.1}"
: "${NAT_LAN1_V6:=fd00:2::1}"
: "${NAT_INSIDE_V4:=10.0.2.10}"
: "${NAT_INSIDE_V6:=fd00:2::10}"
: "${NAT_PRIVATE_V4:=10.0.0.0/8}"
: "${NAT_PRIVATE_V6:=fd00::/8}"

# netns-lib.sh's addresses, for its helpers: client = outside client, wan = the public
# address, lan/server = the private server's link.
PH_CLIENT_V4=$NAT_CLIENT_V4 PH_CLIENT_V6=$NAT_CLIENT_V6
PH_WAN_V4=$NAT_PUBLIC_V4 PH_WAN_V6=$NAT_PUBLIC_V6
PH_LAN_V4=$NAT_LAN0_V4 PH_LAN_V6=$NAT_LAN0_V6
PH_SERVER_V4=$NAT_SERVER_V4 PH_SERVER_V6=$NAT_SERVER_V6

NAT_TOPOLOGY_CREATED=0

ph_in_inside()  { ph_in "$NAT_NS_INSIDE" "$@"; }
ph_in_oserver() { ph_in "$NAT_NS_OSERVER" "$@"; }

# --------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------

# _nat_host NS IFACE V4 V6 [GW4 GW6]: addresses (/24, /64) on IFACE in NS, up, and the
# default routes when gateways are given.
_nat_host() {
    local ns=$1 dev=$2 v4=$3 v6=$4 gw4=${5:-} gw6=${6:-}
    _ph_no_offload "$ns" "$dev"
    ph_in "$ns" ip addr add "$v4/24" dev "$dev" || return 1
    ph_in "$ns" ip -6 addr add "$v6/64" dev "$dev" nodad || return 1
    ph_in "$ns" ip link set "$dev" up || return 1
    if [ -n "$gw4" ]; then
        ph_in "$ns" ip route add default via "$gw4" || return 1
        ph_in "$ns" ip -6 route add default via "$gw6" || return 1
    fi
}

# nat_topology_up: build the six namespaces and check that each host reaches its router
# address (v4 and v6). Fails if one of them already exists.
nat_topology_up() {
    local ns port
    for ns in "${NAT_NAMESPACES[@]}"; do
        if ph_ns_exists "$ns"; then
            ph_warn "namespace $ns already exists (stale run? try PH_PREFIX=other-)"
            return 1
        fi
    done
    NAT_TOPOLOGY_CREATED=1
    ph_on_cleanup nat_topology_down
    for ns in "${NAT_NAMESPACES[@]}"; do
        _ph_ns_base "$ns" || return 1
    done

    # The outside segment: a bridge in the switch namespace, one port per outside host and
    # one for the router's wan0. No addresses, no IPv6, no multicast snooping in the switch.
    ph_in "$NAT_NS_SWITCH" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
        net.ipv6.conf.default.disable_ipv6=1
    ph_in "$NAT_NS_SWITCH" ip link add br0 type bridge stp_state 0 mcast_snooping 0 ||
        return 1
    ip link add name "$PH_IF_WAN" netns "$NAT_NS_FW" type veth \
        peer name p-fw netns "$NAT_NS_SWITCH" || return 1
    ip link add name eth0 netns "$NAT_NS_CLIENT" type veth \
        peer name p-client netns "$NAT_NS_SWITCH" || return 1
    ip link add name eth0 netns "$NAT_NS_OSERVER" type veth \
        peer name p-oserver netns "$NAT_NS_SWITCH" || return 1
    for port in p-fw p-client p-oserver; do
        _ph_no_offload "$NAT_NS_SWITCH" "$port"
        ph_in "$NAT_NS_SWITCH" ip link set "$port" master br0 up || return 1
    done
    ph_in "$NAT_NS_SWITCH" ip link set br0 up || return 1

    # The private links.
    ip link add name "$PH_IF_LAN" netns "$NAT_NS_FW" type veth \
        peer name eth0 netns "$NAT_NS_SERVER" || return 1
    ip link add name "$NAT_IF_LAN1" netns "$NAT_NS_FW" type veth \
        peer name eth0 netns "$NAT_NS_INSIDE" || return 1

    # The router.
    ph_in_fw sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
        net.ipv6.conf.default.forwarding=1
    _nat_host "$NAT_NS_FW" "$PH_IF_WAN" "$NAT_PUBLIC_V4" "$NAT_PUBLIC_V6" || return 1
    _nat_host "$NAT_NS_FW" "$PH_IF_LAN" "$NAT_LAN0_V4" "$NAT_LAN0_V6" || return 1
    _nat_host "$NAT_NS_FW" "$NAT_IF_LAN1" "$NAT_LAN1_V4" "$NAT_LAN1_V6" || return 1

    # The hosts: outside ones with their connected prefixes only, private ones through the
    # router.
    _nat_host "$NAT_NS_CLIENT" eth0 "$NAT_CLIENT_V4" "$NAT_CLIENT_V6" || return 1
    _nat_host "$NAT_NS_OSERVER" eth0 "$NAT_OSERVER_V4" "$NAT_OSERVER_V6" || return 1
    _nat_host "$NAT_NS_SERVER" eth0 "$NAT_SERVER_V4" "$NAT_SERVER_V6" \
        "$NAT_LAN0_V4" "$NAT_LAN0_V6" || return 1
    _nat_host "$NAT_NS_INSIDE" eth0 "$NAT_INSIDE_V4" "$NAT_INSIDE_V6" \
        "$NAT_LAN1_V4" "$NAT_LAN1_V6" || return 1

    nat_topology_check
}

# nat_topology_check: every host reaches the router on its link (v4, v6); this also primes
# the neighbour caches.
nat_topology_check() {
    local rc=0 ns addr
    local -a pairs=(
        "$NAT_NS_CLIENT $NAT_PUBLIC_V4" "$NAT_NS_CLIENT $NAT_PUBLIC_V6"
        "$NAT_NS_OSERVER $NAT_PUBLIC_V4" "$NAT_NS_OSERVER $NAT_PUBLIC_V6"
        "$NAT_NS_CLIENT $NAT_OSERVER_V4" "$NAT_NS_CLIENT $NAT_OSERVER_V6"
        "$NAT_NS_SERVER $NAT_LAN0_V4" "$NAT_NS_SERVER $NAT_LAN0_V6"
        "$NAT_NS_INSIDE $NAT_LAN1_V4" "$NAT_NS_INSIDE $NAT_LAN1_V6"
    )
    local p
    for p in "${pairs[@]}"; do
        read -r ns addr <<<"$p"
        ph_wait_for "$ns -> $addr" 5 ph_in "$ns" ping -c 1 -W 1 "$addr" || rc=1
    done
    return $rc
}

# nat_topology_down: stop what still runs in the namespaces (by pid), delete them.
nat_topology_down() {
    [ "$NAT_TOPOLOGY_CREATED" = 1 ] || return 0
    ph_delete_namespaces "${NAT_NAMESPACES[@]}"
    NAT_TOPOLOGY_CREATED=0
}

# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------

# nat_content_init: netns-lib's content (ftp/, tftp/, client/) for the private server and the
# outside client, plus inside/ (the inside device's files), oftp/ and otftp/ (the outside
# server's roots, the same files as the private server's).
nat_content_init() {
    local d=$PH_WORKDIR
    ph_content_init || return 1
    mkdir -p "$d/inside" "$d/oftp/upload" "$d/otftp" || return 1
    chmod 0755 "$d/inside" "$d/oftp"
    cp "$d/ftp/small.txt" "$d/ftp/medium.bin" "$d/oftp/" || return 1
    chmod 0644 "$d/oftp/small.txt" "$d/oftp/medium.bin"
    if chown ftp:ftp "$d/oftp/upload" 2>/dev/null; then
        chmod 0755 "$d/oftp/upload"
    else
        chmod 0777 "$d/oftp/upload"
    fi
    cp "$d/tftp/small.txt" "$d/tftp/config.txt" "$d/tftp/image.bin" "$d/otftp/" || return 1
    chmod 0777 "$d/otftp"
    cp "$d/tftp/config.txt" "$d/inside/config.txt"
    cp "$d/client/upload.bin" "$d/inside/upload.bin"
}

# nat_start_vsftpd NS NAME ROOT [KEY=VALUE...]: vsftpd (netns-lib's anonymous configuration
# with anon_root=ROOT, each KEY=VALUE replacing the line of that KEY or added) in NS,
# registered as NAME, config $PH_WORKDIR/NAME.conf, protocol log $PH_WORKDIR/vsftpd-NAME.log;
# waits for :21.
nat_start_vsftpd() {
    local ns=$1 name=$2 root=$3 conf kv
    shift 3
    conf=$PH_WORKDIR/$name.conf
    ph_write_vsftpd_conf "$conf" "$name"
    for kv in "anon_root=$root" "$@"; do
        if grep -q "^${kv%%=*}=" "$conf"; then
            sed -i "s|^${kv%%=*}=.*|$kv|" "$conf"
        else
            printf '%s\n' "$kv" >> "$conf"
        fi
    done
    ph_start_bg "$name" "$ns" "$PH_WORKDIR/$name.out" vsftpd "$conf"
    ph_wait_listen "$ns" tcp 21 || { cat "$PH_WORKDIR/$name.out" >&2; return 1; }
}

# nat_servers_up: content, then vsftpd ("vsftpd") and tftpd-hpa ("tftpd") on the private
# server, vsftpd ("vsftpd-out") and tftpd-hpa ("tftpd-out") on the outside server.
nat_servers_up() {
    nat_content_init || return 1
    nat_start_vsftpd "$NAT_NS_SERVER" vsftpd "$PH_WORKDIR/ftp" || return 1
    ph_start_tftpd || return 1
    nat_start_vsftpd "$NAT_NS_OSERVER" vsftpd-out "$PH_WORKDIR/oftp" || return 1
    ph_start_tftpd_in "$NAT_NS_OSERVER" tftpd-out "$PH_WORKDIR/otftp"
}

# nat_pasv_address_recipe on|off: restart the private server's vsftpd with (on) or without
# (off) `pasv_address=PUBLIC` and `pasv_addr_resolve=NO`: its 227 replies then name the
# router's public address (what an operator does when the router's FTP helper is not used),
# and forward the passive range to it (nat_pasv_range). vsftpd's pasv_address is IPv4 only,
# and ignored on a dual-stack socket (a v4-mapped client gets "227 (0,0,0,0,...)"): with the
# recipe on, vsftpd listens on IPv4 only (listen=YES, listen_ipv6=NO).
nat_pasv_address_recipe() {
    local -a extra=()
    [ "$1" = on ] && extra=("pasv_address=$NAT_PUBLIC_V4" "pasv_addr_resolve=NO"
        listen=YES listen_ipv6=NO)
    ph_stop vsftpd
    nat_start_vsftpd "$NAT_NS_SERVER" vsftpd "$PH_WORKDIR/ftp" "${extra[@]}"
}

# --------------------------------------------------------------------------
# The router's translations
# --------------------------------------------------------------------------

# nat_router_nat_up: DNAT of tcp 21 / udp 69 of the public address to the private server,
# MASQUERADE of the private networks leaving wan0; IPv4 and IPv6 (NAT66).
nat_router_nat_up() {
    local fam pub srv priv
    for fam in iptables ip6tables; do
        if [ "$fam" = iptables ]; then
            pub=$NAT_PUBLIC_V4 srv=$NAT_SERVER_V4 priv=$NAT_PRIVATE_V4
        else
            pub=$NAT_PUBLIC_V6 srv=$NAT_SERVER_V6 priv=$NAT_PRIVATE_V6
        fi
        ph_in_fw "$fam" -t nat -N TESTBED_DNAT || return 1
        ph_in_fw "$fam" -t nat -A PREROUTING -j TESTBED_DNAT || return 1
        ph_in_fw "$fam" -t nat -A TESTBED_DNAT -d "$pub" -p tcp --dport 21 \
            -j DNAT --to-destination "$srv" || return 1
        ph_in_fw "$fam" -t nat -A TESTBED_DNAT -d "$pub" -p udp --dport 69 \
            -j DNAT --to-destination "$srv" || return 1
        ph_in_fw "$fam" -t nat -N TESTBED_MASQ || return 1
        ph_in_fw "$fam" -t nat -A POSTROUTING -j TESTBED_MASQ || return 1
        ph_in_fw "$fam" -t nat -A TESTBED_MASQ -o "$PH_IF_WAN" -s "$priv" -j MASQUERADE ||
            return 1
    done
}

# nat_pasv_range on|off: DNAT (and, when the kernel firewall is up, accept) the passive range
# PH_PASV_MIN..PH_PASV_MAX of the public address to the private server (IPv4): the
# pasv_address recipe.
nat_pasv_range() {
    local op=-A
    [ "$1" = off ] && op=-D
    local range="$PH_PASV_MIN:$PH_PASV_MAX"
    ph_in_fw iptables -t nat "$op" TESTBED_DNAT -d "$NAT_PUBLIC_V4" -p tcp --dport "$range" \
        -j DNAT --to-destination "$NAT_SERVER_V4" || return 1
    if ph_in_fw iptables -n -L TESTBED_FWD >/dev/null 2>&1; then
        ph_in_fw iptables "$op" TESTBED_FWD -i "$PH_IF_WAN" -d "$NAT_SERVER_V4" -p tcp \
            --dport "$range" -m conntrack --ctstate NEW --ctorigdst "$NAT_PUBLIC_V4" \
            -j ACCEPT || return 1
    fi
}

# --------------------------------------------------------------------------
# Firewalls
# --------------------------------------------------------------------------

# nat_forward_policy ACCEPT|DROP: the FORWARD policy of both families.
nat_forward_policy() {
    ph_in_fw iptables -P FORWARD "$1" && ph_in_fw ip6tables -P FORWARD "$1"
}

# nat_fw_helpers_up: attach the ftp and tftp conntrack helpers to tcp 21 / udp 69 in the raw
# table of both families (chain TESTBED_HELPERS; automatic assignment is off in current
# kernels): what lets nf_nat_ftp / nf_nat_tftp translate payloads and data connections.
nat_fw_helpers_up() {
    local fam
    for fam in iptables ip6tables; do
        ph_in_fw "$fam" -t raw -N TESTBED_HELPERS || return 1
        ph_in_fw "$fam" -t raw -A PREROUTING -j TESTBED_HELPERS || return 1
        ph_in_fw "$fam" -t raw -A TESTBED_HELPERS -p tcp --dport 21 -j CT --helper ftp ||
            return 1
        ph_in_fw "$fam" -t raw -A TESTBED_HELPERS -p udp --dport 69 -j CT --helper tftp ||
            return 1
    done
}

nat_fw_helpers_down() {
    local fam
    for fam in iptables ip6tables; do
        ph_in_fw "$fam" -t raw -D PREROUTING -j TESTBED_HELPERS 2>/dev/null
        ph_in_fw "$fam" -t raw -F TESTBED_HELPERS 2>/dev/null
        ph_in_fw "$fam" -t raw -X TESTBED_HELPERS 2>/dev/null
    done
    return 0
}

# nat_fw_kernel_up: the kernel's way: the helpers (nat_fw_helpers_up), FORWARD policy DROP,
# and a chain that accepts ESTABLISHED,RELATED (what the helpers expect) and new tcp 21 /
# udp 69 in either direction. With the pasv_address recipe's range DNAT'd, call
# nat_pasv_range on after this to accept it too.
nat_fw_kernel_up() {
    local fam
    nat_fw_helpers_up || return 1
    for fam in iptables ip6tables; do
        ph_in_fw "$fam" -P FORWARD DROP || return 1
        ph_in_fw "$fam" -N TESTBED_FWD || return 1
        ph_in_fw "$fam" -A FORWARD -j TESTBED_FWD || return 1
        ph_in_fw "$fam" -A TESTBED_FWD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT ||
            return 1
        ph_in_fw "$fam" -A TESTBED_FWD -p tcp --dport 21 -m conntrack --ctstate NEW \
            -j ACCEPT || return 1
        ph_in_fw "$fam" -A TESTBED_FWD -p udp --dport 69 -m conntrack --ctstate NEW \
            -j ACCEPT || return 1
    done
}

# nat_fw_kernel_down: remove nat_fw_kernel_up's chains (the FORWARD policy stays).
nat_fw_kernel_down() {
    local fam
    nat_fw_helpers_down
    for fam in iptables ip6tables; do
        ph_in_fw "$fam" -D FORWARD -j TESTBED_FWD 2>/dev/null
        ph_in_fw "$fam" -F TESTBED_FWD 2>/dev/null
        ph_in_fw "$fam" -X TESTBED_FWD 2>/dev/null
    done
    return 0
}

# nat_helper_hits ftp|tftp [iptables|ip6tables]: packets the raw table's CT --helper rules for
# that helper matched (TESTBED_HELPERS and any other chain, e.g. pinhole's own).
nat_helper_hits() {
    ph_in_fw "${2:-iptables}" -t raw -L -v -n -x 2>/dev/null |
        awk -v h="CT helper $1" 'index($0, h) { n += $1 } END { print n + 0 }'
}
