//! A worker's source of the kernel's connection tracking entries (see
//! [`crate::conntrack::kernel`] for what the engine does with them): attached to queued
//! packets when the kernel can (`NFQA_CT`), else asked for over ctnetlink, for the packets of
//! connections the kernel's helpers follow (the inspected FTP and TFTP ports). Either way
//! the engine gets the same facts for the same packets.

use std::sync::Once;

use crate::conntrack::{FlowTuple, KernelConn};
use crate::io::ctnetlink::{self, CtQuery};
use crate::io::nfqueue::{QueueSocket, QueuedPacket};
use crate::observe::LIFECYCLE;
use crate::policy::KernelHelpers;
use crate::wire::LinkType;

/// Where a worker's entries come from.
enum Source {
    /// The queue attaches them.
    Queue,
    /// Asked for per packet.
    Query(CtQuery),
    /// Not read (no helpers, or no way to read them).
    Off,
}

/// One worker's reader of the kernel's connection tracking.
pub struct KernelConntrack {
    source: Source,
    helpers: KernelHelpers,
    /// Queries that failed (other than "no such entry").
    pub errors: u64,
}

static QUEUE_FALLBACK_LOGGED: Once = Once::new();

impl KernelConntrack {
    /// Sets up reading for `socket`'s packets when `helpers` follow any port.
    pub fn new(socket: &mut QueueSocket, helpers: &KernelHelpers) -> Self {
        let source = if helpers.is_empty() {
            Source::Off
        } else {
            match socket.request_conntrack() {
                Ok(()) => Source::Queue,
                Err(queue_err) => match CtQuery::open() {
                    Ok(query) => {
                        QUEUE_FALLBACK_LOGGED.call_once(|| {
                            tracing::info!(
                                target: LIFECYCLE,
                                %queue_err,
                                "the kernel does not attach connection tracking to queued packets (CONFIG_NETFILTER_NETLINK_GLUE_CT); asking ctnetlink for the packets of inspected ports instead"
                            );
                        });
                        Source::Query(query)
                    }
                    Err(err) => {
                        tracing::warn!(
                            %queue_err,
                            %err,
                            "cannot read the kernel's connection tracking: sessions through NAT are not followed"
                        );
                        Source::Off
                    }
                },
            }
        };
        KernelConntrack {
            source,
            helpers: helpers.clone(),
            errors: 0,
        }
    }

    /// The entry of `packet`'s connection, for packets of the helpers' ports.
    pub fn entry(&mut self, packet: &QueuedPacket<'_>) -> Option<KernelConn> {
        if matches!(self.source, Source::Off) {
            return None;
        }
        let tuple = FlowTuple::of_frame(LinkType::RawIp, packet.payload)?;
        if !self.helpers.covers(&tuple) {
            return None;
        }
        match &mut self.source {
            Source::Queue => ctnetlink::from_queue(packet.ct?, packet.ct_info),
            Source::Query(query) => match query.for_packet(&tuple) {
                Ok(entry) => entry,
                Err(err) => {
                    self.errors += 1;
                    if self.errors.is_power_of_two() {
                        tracing::warn!(%err, errors = self.errors, "ctnetlink query failed");
                    }
                    None
                }
            },
            Source::Off => None,
        }
    }
}

/// The NAT halves of the kernel helpers `helpers` uses (`nf_nat_ftp`, `nf_nat_tftp`) that the
/// kernel has neither loaded (`proc_modules`: `/proc/modules`) nor built in (`builtin`:
/// `/lib/modules/RELEASE/modules.builtin`). iptables' CT target loads a helper's conntrack
/// half by itself, not its NAT half, and without it translated sessions fail. Empty when it
/// cannot be told (a kernel without module support has no `/proc/modules`).
pub fn missing_nat_modules(
    helpers: &KernelHelpers,
    proc_modules: Option<&str>,
    builtin: Option<&str>,
) -> Vec<&'static str> {
    let Some(loaded) = proc_modules else {
        return Vec::new();
    };
    let wanted = [
        (!helpers.ftp.is_empty(), "nf_nat_ftp"),
        (!helpers.tftp.is_empty(), "nf_nat_tftp"),
    ];
    wanted
        .into_iter()
        .filter(|&(used, _)| used)
        .map(|(_, name)| name)
        .filter(|name| {
            let is_loaded = loaded
                .lines()
                .any(|line| line.split(' ').next() == Some(name));
            let is_builtin = builtin.is_some_and(|text| {
                text.lines()
                    .any(|line| line.rsplit('/').next() == Some(&format!("{name}.ko")))
            });
            !is_loaded && !is_builtin
        })
        .collect()
}

/// Warns about [`missing_nat_modules`] on this machine, with the fix.
pub fn warn_missing_nat_modules(helpers: &KernelHelpers) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let proc_modules = std::fs::read_to_string("/proc/modules").ok();
    let builtin = std::fs::read_to_string(format!("/lib/modules/{release}/modules.builtin")).ok();
    let missing = missing_nat_modules(helpers, proc_modules.as_deref(), builtin.as_deref());
    if !missing.is_empty() {
        let list = missing.join(" ");
        tracing::warn!(
            "kernel modules {list} are not loaded: FTP/TFTP sessions the router translates (NAT) will fail; run `modprobe -a {list}` (the Debian package loads them at boot from /usr/lib/modules-load.d/pinhole.conf)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_halves_missing_are_named_when_the_kernel_can_tell() {
        let both = KernelHelpers {
            ftp: vec![21..=21],
            tftp: vec![69..=69],
        };
        let loaded =
            "nf_conntrack_ftp 28672 1 nf_nat_ftp, Live 0x0\nnf_nat_tftp 12288 0 - Live 0x0\n";
        assert_eq!(
            missing_nat_modules(&both, Some(loaded), None),
            vec!["nf_nat_ftp"]
        );
        let builtin = "kernel/net/netfilter/nf_nat_ftp.ko\n";
        assert!(missing_nat_modules(&both, Some(loaded), Some(builtin)).is_empty());
        // Only what the policy uses.
        let ftp_only = KernelHelpers {
            ftp: vec![21..=21],
            tftp: Vec::new(),
        };
        assert_eq!(
            missing_nat_modules(&ftp_only, Some(""), None),
            vec!["nf_nat_ftp"]
        );
        // No /proc/modules: a kernel without modules has everything built in.
        assert!(missing_nat_modules(&both, None, None).is_empty());
    }
}
