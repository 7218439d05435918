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
use crate::io::ct_events::DestroyedConn;
use crate::io::ctnetlink::{Counter, CtQuery};
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
            let Some(counters) = facts.and_then(|f| f.counters) else {
                self.missing += 1;
                continue;
            };
            set_kernel_bytes(transfer, headers, data, counters);
            self.filled += 1;
        }
    }

    /// Fills in the transfer records among `events` whose offloaded data connection is the
    /// kernel's entry `ended` just destroyed (an FTPS session's range connection, whose record
    /// is made when it ends), from the counts the destroy event carries.
    pub fn fill_ended(&mut self, events: &mut [Event], ended: &DestroyedConn) {
        for event in events {
            let Event::Transfer(transfer) = event else {
                continue;
            };
            let (Some(data), Some(headers)) = (transfer.data, transfer.data_headers) else {
                continue;
            };
            if !transfer.data_offloaded
                || transfer.bytes_source != BytesSource::None
                || data != ended.tuple()
            {
                continue;
            }
            match ended.counters {
                Some(counters) => {
                    set_kernel_bytes(transfer, headers, data, counters);
                    self.filled += 1;
                }
                None => self.missing += 1,
            }
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

/// Sets a transfer record's bytes from the kernel's counts of its data connection `data`:
/// each direction's payload, its packets' headers (sized from the SYN) taken off.
fn set_kernel_bytes(
    transfer: &mut crate::event::Transfer,
    headers: crate::wire::transport::SynHeaders,
    data: crate::conntrack::FlowTuple,
    [orig, reply]: [Counter; 2],
) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alg::Alg;
    use crate::event::{Transfer, TransferDirection, TransferResult};
    use crate::time::Instant;
    use crate::wire::transport::SynHeaders;

    fn tuple(text: &str) -> crate::conntrack::FlowTuple {
        let (src, dst) = text.split_once(" -> ").unwrap();
        let src: std::net::SocketAddr = src.parse().unwrap();
        let dst: std::net::SocketAddr = dst.parse().unwrap();
        crate::conntrack::FlowTuple {
            proto: proto::TCP,
            src: src.ip(),
            sport: src.port(),
            dst: dst.ip(),
            dport: dst.port(),
        }
    }

    #[test]
    fn a_destroyed_range_connection_gets_the_bytes_its_destroy_event_counted() {
        let data = tuple("198.51.100.10:41001 -> 192.0.2.10:40010");
        let headers = SynHeaders {
            ip: 20,
            syn_tcp: 40,
            timestamps: true,
        };
        let record = Transfer {
            alg: Alg::Ftp,
            session: tuple("198.51.100.10:40000 -> 192.0.2.10:21"),
            user: None,
            command: "FTPS",
            path: None,
            path_guessed: false,
            direction: TransferDirection::Unknown,
            opened: None,
            closed: None,
            mode: None,
            options: Vec::new(),
            blocks: None,
            data: Some(data),
            data_handle: None,
            data_headers: Some(headers),
            data_offloaded: true,
            data_nat: None,
            bytes_up: None,
            bytes_down: None,
            bytes_source: BytesSource::None,
            started: Instant::ZERO,
            ended: Instant::ZERO,
            result: TransferResult::Complete,
            detail: String::new(),
        };
        let mut events = vec![Event::Transfer(Box::new(record))];
        let counts = |packets, bytes| Counter { packets, bytes };
        // Client to server: SYN (60 bytes), 5 ACKs (52 each), FIN; server: SYN-ACK, 4 data
        // segments of 1000 bytes (1052 each), FIN.
        let ended = DestroyedConn {
            original: data,
            reply: data.reversed(),
            mark: 1,
            tcp_state: Some(7),
            deleted: false,
            counters: Some([counts(7, 60 + 6 * 52), counts(6, 60 + 4 * 1052 + 52)]),
        };
        let mut reader = KernelTransferBytes::default();
        reader.fill_ended(&mut events, &ended);
        let Event::Transfer(t) = &events[0] else {
            panic!()
        };
        assert_eq!((t.bytes_up, t.bytes_down), (Some(0), Some(4000)));
        assert_eq!(t.bytes_source, BytesSource::Kernel);
        assert_eq!(reader.filled, 1);
        // Another connection's end fills nothing.
        let mut other = events.clone();
        if let Event::Transfer(t) = &mut other[0] {
            t.bytes_source = BytesSource::None;
        }
        let elsewhere = DestroyedConn {
            original: tuple("198.51.100.10:41002 -> 192.0.2.10:40010"),
            ..ended
        };
        reader.fill_ended(&mut other, &elsewhere);
        let Event::Transfer(t) = &other[0] else {
            panic!()
        };
        assert_eq!(t.bytes_source, BytesSource::None);
    }
}
