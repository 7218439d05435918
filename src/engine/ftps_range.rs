//! The session-bound passive range of FTPS (`ftps = "allow-passive-range"`).
//!
//! An encrypted control connection hides its PASV replies, so no exact pinhole can be opened
//! for its data connections. Instead, while it is encrypted, the session itself admits new TCP
//! connections from its client address to its server address, on the ports of the server's
//! passive range, at most `ftps_max_connections` at a time, and none once its connection
//! starts to close. An index of the control connections whose range is open, by (client,
//! server), makes the check a hash lookup; it is kept in step with the control connections:
//! registered when a range opens (the 234, the handshake of an implicit-TLS connection),
//! unregistered when the range closes (a CCC) or the connection leaves the table.

use std::net::IpAddr;

use crate::alg::{Alg, AlgState};
use crate::conntrack::{Flow, FlowHandle, FlowState, FlowTuple, Opening, PortMatch, TcpState};
use crate::decision::Reason;
use crate::event::{Event, PinholeAction, PinholeInfo, TransferResult};
use crate::time::Instant;
use crate::wire::transport::proto;

use super::Engine;

/// The control connection whose passive range admits a new connection, and the range.
pub(super) struct RangeAdmission {
    /// The control connection.
    pub parent: FlowHandle,
    /// Its tuple.
    pub parent_tuple: FlowTuple,
    /// The range's ports.
    pub ports: (u16, u16),
}

impl Engine {
    /// Keeps the index in step with the passive range of the FTP control connection `handle`
    /// after one of its segments.
    pub(super) fn sync_passive_range(&mut self, handle: FlowHandle) {
        let Some(flow) = self.flows.get(handle) else {
            return;
        };
        let Some(AlgState::Ftp(ftp)) = &flow.alg else {
            return;
        };
        let key = (flow.tuple.src, flow.tuple.dst);
        if ftp.passive_range().is_some() {
            let sessions = self.ftps_sessions.entry(key).or_default();
            if !sessions.contains(&handle) {
                sessions.push(handle);
            }
        } else if !self.ftps_sessions.is_empty() {
            self.unregister_passive_range(key, handle);
        }
    }

    /// Drops `handle` from the index (its range closed, or it left the table).
    pub(super) fn unregister_passive_range(&mut self, key: (IpAddr, IpAddr), handle: FlowHandle) {
        if let Some(sessions) = self.ftps_sessions.get_mut(&key) {
            sessions.retain(|&h| h != handle);
            if sessions.is_empty() {
                self.ftps_sessions.remove(&key);
            }
        }
    }

    /// The FTPS session whose passive range admits the new TCP connection `tuple`: `None`
    /// when none does, `Some(Err(reason))` when one would but holds its maximum.
    pub(super) fn passive_range_for(
        &self,
        tuple: &FlowTuple,
    ) -> Option<Result<RangeAdmission, Reason>> {
        if tuple.proto != proto::TCP || self.ftps_sessions.is_empty() {
            return None;
        }
        let sessions = self.ftps_sessions.get(&(tuple.src, tuple.dst))?;
        let mut refusal = None;
        for &parent in sessions {
            let Some(flow) = self.flows.get(parent) else {
                continue;
            };
            let Some(AlgState::Ftp(ftp)) = &flow.alg else {
                continue;
            };
            // None after the control connection starts to end (a FIN or RST seen).
            let open =
                matches!(&flow.state, FlowState::Tcp(tcp) if tcp.state() == TcpState::Established);
            if !open {
                continue;
            }
            match ftp.range_admits(tuple.dport, self.open_range_children(ftp)) {
                Ok(ports) => {
                    return Some(Ok(RangeAdmission {
                        parent,
                        parent_tuple: flow.tuple,
                        ports,
                    }));
                }
                Err(Some(reason)) => refusal = Some(reason),
                Err(None) => {}
            }
        }
        refusal.map(Err)
    }

    /// How many of the connections `ftp`'s range admitted are open: every state but
    /// `TIME_WAIT` and closed (a half-closed connection still carries data one way). They stay
    /// with pinhole, so their FINs are seen.
    fn open_range_children(&self, ftp: &crate::alg::ftp::FtpControl) -> usize {
        ftp.range_children()
            .iter()
            .filter(|&&child| {
                self.flows.get(child).is_some_and(|flow| {
                    matches!(&flow.state, FlowState::Tcp(tcp) if !matches!(tcp.state(), TcpState::TimeWait | TcpState::Closed))
                })
            })
            .count()
    }

    /// Whether `handle` is a connection an FTPS session's passive range admitted, while that
    /// session lives: it stays with pinhole in offload mode, so that its end is seen when it
    /// happens, frees its place in the session's maximum at once (the kernel's destroy event
    /// would come only after `TIME_WAIT`) and its bytes are counted.
    pub(super) fn is_live_range_child(
        &self,
        handle: FlowHandle,
        parent: Option<FlowHandle>,
    ) -> bool {
        parent.and_then(|p| self.flows.get(p)).is_some_and(
            |p| matches!(&p.alg, Some(AlgState::Ftp(ftp)) if ftp.is_range_child(handle)),
        )
    }

    /// Records the connection `child` (`tuple`) as admitted by `admission`'s range and
    /// returns its event: a pinhole record with the action `admit`, a fresh id and the range.
    pub(super) fn admitted_by_range(
        &mut self,
        now: Instant,
        admission: &RangeAdmission,
        child: FlowHandle,
        tuple: FlowTuple,
    ) -> Event {
        let parent_nat = self.flows.get_mut(admission.parent).and_then(|flow| {
            if let Some(AlgState::Ftp(ftp)) = &mut flow.alg {
                ftp.add_range_child(child);
            }
            flow.nat.as_deref().copied()
        });
        Event::Pinhole {
            action: PinholeAction::Admit,
            pinhole: PinholeInfo {
                id: self.pinholes.allocate_id(),
                opening: Opening {
                    alg: Alg::Ftp,
                    proto: proto::TCP,
                    src: tuple.src,
                    sport: PortMatch::Any,
                    dst: tuple.dst,
                    dport: tuple.dport,
                },
                parent: Some(admission.parent_tuple),
                expires: now,
                tftp_request: None,
                parent_nat,
                range: Some(admission.ports),
            },
            child: Some(tuple),
        }
    }

    /// A connection an FTPS session's range admitted closed (`result`: its FINs or RST seen):
    /// its record now, not after its `TIME_WAIT`.
    pub(super) fn range_child_closed(
        &mut self,
        handle: FlowHandle,
        (was, result): (TcpState, TransferResult),
        events: &mut Vec<Event>,
    ) {
        let Some(parent) = self.flows.get(handle).and_then(|f| f.parent) else {
            return;
        };
        let is_range_child = matches!(
            self.flows.get(parent).and_then(|p| p.alg.as_ref()),
            Some(AlgState::Ftp(ftp)) if ftp.is_range_child(handle)
        );
        let Some(flow) = self.flows.get(handle).filter(|_| is_range_child).cloned() else {
            return;
        };
        if let Some(Some(AlgState::Ftp(ftp))) = self.flows.get_mut(parent).map(|p| p.alg.as_mut())
            && let Some(record) = range_record(ftp, handle, &flow, result, opened(was))
        {
            if let Event::Transfer(transfer) = &record {
                self.counters.transfer(transfer);
            }
            events.push(record);
        }
    }

    /// Rebuilds the index from the restored control connections.
    pub(super) fn rebuild_passive_ranges(&mut self) {
        let handles: Vec<FlowHandle> = self
            .flows
            .iter()
            .filter(|(_, flow)| {
                matches!(&flow.alg, Some(AlgState::Ftp(ftp)) if ftp.passive_range().is_some())
            })
            .map(|(handle, _)| handle)
            .collect();
        for handle in handles {
            self.sync_passive_range(handle);
        }
    }
}

/// The transfer record of `handle` (`flow`), if `ftp`'s range admitted it, which ended with
/// `result`; it leaves the session's lists then (logged once, counted no more). A connection
/// that never got past its SYN moved nothing and has no record.
pub(super) fn range_record(
    ftp: &mut crate::alg::ftp::FtpControl,
    handle: FlowHandle,
    flow: &Flow,
    result: TransferResult,
    opened: bool,
) -> Option<Event> {
    if !ftp.is_range_child(handle) {
        return None;
    }
    let bytes = super::lifecycle::data_bytes(flow, ftp.client());
    ftp.forget_child(handle, flow.tuple, bytes);
    opened.then(|| ftp.range_transfer(flow.tuple, bytes, (flow.created, flow.last_seen), result))
}

/// Whether a connection in (or coming from) TCP state `state` got past its handshake: one
/// refused or never answered moved nothing and has no record.
pub(super) fn opened(state: TcpState) -> bool {
    !matches!(state, TcpState::SynSent | TcpState::SynReceived)
}

/// The TCP state of `flow`, for [`opened`].
pub(super) fn tcp_state(flow: &Flow) -> Option<TcpState> {
    match &flow.state {
        FlowState::Tcp(tcp) => Some(tcp.state()),
        FlowState::Datagram { .. } => None,
    }
}

/// The records of the connections `ftp`'s range admitted that are still open when its
/// control connection leaves the table (`unfinished`: the session ended first, with the
/// bytes so far). They stay in the table (or go with it, `data_outlives_control = false`) as
/// orphans, which nothing logs again.
pub(super) fn orphaned_range_records(
    ftp: &crate::alg::ftp::FtpControl,
    flows: &crate::conntrack::FlowTable,
) -> Vec<Event> {
    ftp.range_children()
        .iter()
        .filter_map(|&child| {
            let flow = flows.get(child)?;
            if !opened(tcp_state(flow)?) {
                return None;
            }
            let bytes = super::lifecycle::data_bytes(flow, ftp.client());
            Some(ftp.range_transfer(
                flow.tuple,
                bytes,
                (flow.created, flow.last_seen),
                TransferResult::Unfinished,
            ))
        })
        .collect()
}
