//! What the kernel knows of an FTP transfer's data connection, read with a ctnetlink GET when
//! the transfer record is made (the final reply: the data has passed the router by then, and
//! the entry lingers in `TIME_WAIT`): how it is translated (NAT), and, when the kernel carried
//! it (offload mode: pinhole saw only its SYN), its byte counts from the conntrack accounting.
//!
//! The kernel counts IP bytes and packets each way (`nf_conntrack_acct.c`); the record wants
//! file bytes. [`SynHeaders::payload`](crate::wire::transport::SynHeaders::payload) takes the
//! headers off, sized from the data connection's SYN. Accounting must be on when the entry is
//! created: [`enable_accounting`] sets `net.netfilter.nf_conntrack_acct` at start.

use crate::event::{BytesSource, Event};
use crate::io::ctnetlink::CtQuery;
use crate::wire::transport::proto;

/// The sysctl that turns the kernel's per-connection accounting on (per network namespace).
const ACCT_SYSCTL: &str = "/proc/sys/net/netfilter/nf_conntrack_acct";

/// Turns on the kernel's conntrack accounting if it is off, so offloaded data connections
/// created from now on are counted; says what it did.
pub fn enable_accounting() {
    match std::fs::read_to_string(ACCT_SYSCTL) {
        Ok(value) if value.trim() == "1" => {}
        Ok(_) => match std::fs::write(ACCT_SYSCTL, "1\n") {
            Ok(()) => tracing::info!(
                target: crate::observe::LIFECYCLE,
                "turned on net.netfilter.nf_conntrack_acct: the transfer log counts offloaded data connections from the kernel's accounting"
            ),
            Err(err) => tracing::warn!(
                %err,
                "cannot turn on net.netfilter.nf_conntrack_acct: transfer records of offloaded data connections will have no byte counts"
            ),
        },
        Err(err) => tracing::warn!(
            %err,
            "cannot read net.netfilter.nf_conntrack_acct: transfer records of offloaded data connections may have no byte counts"
        ),
    }
}

/// A worker's reader of the kernel's entries of transfers' data connections.
#[derive(Default)]
pub struct KernelTransferBytes {
    query: Option<CtQuery>,
    /// Opening the socket failed: not tried again.
    unavailable: bool,
    /// Records whose bytes came from the kernel's counts.
    pub filled: u64,
    /// Records whose data connection the kernel had no counts for (gone, or accounting off).
    pub missing: u64,
}

impl KernelTransferBytes {
    /// Fills in the FTP transfer records among `events`: the data connection's translation,
    /// and its bytes when the kernel carried it.
    pub fn fill(&mut self, events: &mut [Event]) {
        for event in events {
            let Event::Transfer(transfer) = event else {
                continue;
            };
            let Some(data) = transfer.data.filter(|d| d.proto == proto::TCP) else {
                continue;
            };
            let Some(query) = self.socket() else {
                return;
            };
            // In FORWARD the data tuple pinhole sees is the entry's original tuple or the
            // inverse of its reply tuple (after DNAT, before SNAT): `lookup` tries both.
            let facts = match query.lookup(&data) {
                Ok(facts) => facts,
                Err(err) => {
                    tracing::debug!(%err, flow = %data, "ctnetlink GET for a transfer's data connection failed");
                    None
                }
            };
            transfer.data_nat = facts.and_then(|f| {
                f.with_direction(false)
                    .translation((data.src, data.sport), (data.dst, data.dport))
            });
            let (Some(headers), true) = (
                transfer.data_headers,
                transfer.data_offloaded && transfer.bytes_source == BytesSource::None,
            ) else {
                continue;
            };
            let Some([orig, reply]) = facts.and_then(|f| f.counters) else {
                self.missing += 1;
                continue;
            };
            let orig = headers.payload(orig.packets, orig.bytes);
            let reply = headers.payload(reply.packets, reply.bytes);
            let (up, down) = if data.src == transfer.session.src {
                (orig, reply)
            } else {
                (reply, orig)
            };
            transfer.bytes_up = Some(up);
            transfer.bytes_down = Some(down);
            transfer.bytes_source = BytesSource::Kernel;
            self.filled += 1;
        }
    }

    fn socket(&mut self) -> Option<&mut CtQuery> {
        if self.query.is_none() && !self.unavailable {
            match CtQuery::open() {
                Ok(query) => self.query = Some(query),
                Err(err) => {
                    self.unavailable = true;
                    tracing::warn!(%err, "cannot open a ctnetlink socket: transfer records of offloaded data connections will have no byte counts");
                }
            }
        }
        self.query.as_mut()
    }
}
