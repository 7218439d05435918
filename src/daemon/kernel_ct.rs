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
