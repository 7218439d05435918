//! The file bytes of FTP transfers whose data connection the kernel carried (offload mode):
//! pinhole saw only its SYN, so the transfer record's counts come from the kernel's conntrack
//! accounting, read with a ctnetlink GET when the record is made (the final reply: the data
//! has passed the router by then, and the entry lingers in `TIME_WAIT`).
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

/// A worker's reader of the kernel's counts for transfer records.
#[derive(Default)]
pub struct KernelTransferBytes {
    query: Option<CtQuery>,
    /// Opening the socket failed: not tried again.
    unavailable: bool,
    /// Records filled from the kernel's counts.
    pub filled: u64,
    /// Records whose data connection the kernel had no counts for (gone, or accounting off).
    pub missing: u64,
}

impl KernelTransferBytes {
    /// Fills in the transfer records among `events` whose data connection was offloaded.
    pub fn fill(&mut self, events: &mut [Event]) {
        for event in events {
            let Event::Transfer(transfer) = event else {
                continue;
            };
            let (Some(data), Some(headers), true) = (
                transfer.data,
                transfer.data_headers,
                transfer.data_offloaded && transfer.bytes_source == BytesSource::None,
            ) else {
                continue;
            };
            if data.proto != proto::TCP {
                continue;
            }
            let Some(query) = self.socket() else {
                return;
            };
            let counters = match query.get(&data) {
                Ok(facts) => facts.and_then(|f| f.counters),
                Err(err) => {
                    tracing::debug!(%err, flow = %data, "ctnetlink GET for a transfer's counts failed");
                    None
                }
            };
            let Some([orig, reply]) = counters else {
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
