#!/bin/sh
# pinhole-ha-notify.sh primary|backup|fault CONNTRACKD_CONF
#
# keepalived's notify script for a router of a pinhole failover pair: hands the kernel's
# connection tracking over with conntrackd (the steps of conntrack-tools' primary-backup.sh).
# pinhole itself needs nothing at a takeover: it runs with the same rules on both routers and
# takes over the connections whose kernel entries conntrackd commits.
#
#   primary: commit the peer's entries to the kernel (connections first, then the FTP
#            expectations: pending pinholes), flush the caches, re-read the kernel's table,
#            send it to the peer
#   backup:  flush the kernel's table after PurgeTimeout, ask the peer for a full resync
#   fault:   flush the kernel's table after PurgeTimeout
set -u
conf=${2:-/etc/conntrackd/conntrackd.conf}
ctd() { /usr/sbin/conntrackd -C "$conf" "$@" || echo "pinhole-ha-notify: conntrackd $* failed" >&2; }
echo "pinhole-ha-notify: $1" >&2
case ${1:-} in
    primary)
        ctd -c ct
        ctd -c expect
        ctd -f
        ctd -R
        ctd -B
        ;;
    backup)
        ctd -t
        ctd -n
        ;;
    fault)
        ctd -t
        ;;
    *)
        echo "usage: $0 primary|backup|fault [CONNTRACKD_CONF]" >&2
        exit 2
        ;;
esac
exit 0
