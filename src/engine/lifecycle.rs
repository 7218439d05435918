//! Flows coming and going: a new flow through a pinhole or the rules, insertion under the
//! cap, the inspectors' outcomes (pinholes to open or close), removal with pending pinholes and
//! (by policy) child flows.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::alg::{Alg, AlgOutcome, AlgState, AlgVerdict, PinholeRequest};
use crate::conntrack::{
    Direction, Flow, FlowHandle, FlowOrigin, FlowState, FlowTuple, Opening, ParentRef, Pinhole,
    PinholeError, PinholeMatch, PinholeSpec,
};
use crate::counters::PinholeOutcome;
use crate::decision::{Decision, Reason};
use crate::event::{CloseCause, Event, PinholeAction, TransferResult};
use crate::policy::Action;
use crate::time::Instant;

use super::datagram::datagram_timeout;
use super::ftps_range::RangeAdmission;
use super::tcp::tcp_timeout;
use super::{Engine, Packet, PacketInfo, pinhole_event, with_events};

/// Why an inspector's pinhole was not opened.
#[derive(Clone, Copy)]
enum Refusal {
    /// The inspector's quota per peer (TFTP requests pending for one client).
    PeerQuota,
    /// The table refused it: full, or the client's quota.
    Table(PinholeError),
}

/// A new flow admitted without a pinhole: the flow, the rule's name, its inspector, and
/// whether it was taken over (see [`crate::PacketInfo::synced`]).
type Admitted = (Flow, Option<Arc<str>>, Option<Alg>, bool);

/// What the rules say of a new flow they allow.
struct RuleAdmission {
    /// The allowing rule's name.
    rule: Arc<str>,
    /// Its inspector's state for the flow.
    alg: Option<AlgState>,
    /// Which inspector.
    kind: Option<Alg>,
}

impl Engine {
    /// The first packet of a new flow: a pinhole admits it, or the rules decide. `first` is
    /// its payload (a datagram's, or data in a SYN), which the flow's inspector reads before
    /// the flow exists: a refused TFTP request, or a refused SYN, leaves no state behind.
    pub(super) fn open_flow(
        &mut self,
        now: Instant,
        info: &PacketInfo,
        packet: Packet,
        ports: (u16, u16),
        state: FlowState,
        first: Option<&[u8]>,
    ) -> Decision {
        let (sport, dport) = ports;
        let tuple = FlowTuple {
            proto: packet.proto,
            src: packet.src,
            sport,
            dst: packet.dst,
            dport,
        };
        let mut range = None;
        let found = self.pinholes.match_and_consume(
            packet.proto,
            packet.src,
            sport,
            packet.dst,
            dport,
            now,
        );
        let (mut flow, pinhole, rule, alg, takeover) = match found {
            PinholeMatch::Hit(pinhole) => {
                let flow = admitted_by_pinhole(&pinhole, tuple, state, now);
                (flow, Some(pinhole), None, None, false)
            }
            miss => match self.admit_on_miss(now, info, tuple, state, &miss) {
                Ok(((flow, rule, alg, takeover), admission)) => {
                    range = admission;
                    (flow, None, rule, alg, takeover)
                }
                Err(refused) => return refused,
            },
        };
        // The inspector reads the opening packet's payload before anything is kept.
        let outcome = match (first, flow.alg.as_mut()) {
            (Some(payload), Some(state)) => state.on_opening_payload(Direction::Original, payload),
            _ => None,
        };
        if let Some(refused) = outcome
            .as_ref()
            .and_then(|o| self.refusal_of_first(tuple, o))
        {
            if let Some(pinhole) = pinhole {
                self.pinholes.restore(pinhole);
            }
            return refused;
        }
        let alg = alg.or_else(|| flow.alg_kind());
        flow.parent = pinhole
            .as_ref()
            .and_then(|p| p.spec.parent)
            .map(|p| p.handle)
            .or(range.as_ref().map(|r| r.parent));
        flow.account(Direction::Original, packet.len, now);
        let mut events = Vec::new();
        match self.insert_flow(flow, &mut events) {
            Ok(handle) => {
                if let Some(pinhole) = &pinhole {
                    self.counters
                        .pinhole(pinhole.spec.opening.alg, PinholeOutcome::Used);
                    events.push(pinhole_event(
                        &self.flows,
                        PinholeAction::Use,
                        pinhole,
                        Some(tuple),
                    ));
                    events.extend(other_address_notice(pinhole, tuple));
                    self.adopt(pinhole, handle, tuple);
                }
                if let Some(admission) = &range {
                    self.counters
                        .pinhole(Alg::Ftp, PinholeOutcome::RangeAdmitted);
                    events.push(self.admitted_by_range(now, admission, handle, tuple));
                }
                events.push(Event::FlowOpened {
                    flow: tuple,
                    rule,
                    alg,
                    via_pinhole: pinhole.is_some() || range.is_some(),
                    pickup: false,
                    takeover,
                });
                if takeover {
                    self.counters.flows_taken_over += 1;
                }
                let mut decision = match outcome {
                    Some(outcome) => {
                        self.apply_inspection(now, handle, tuple, Direction::Original, outcome)
                    }
                    None => Decision::accept(Some(tuple)),
                };
                self.refresh_deadline(now, handle);
                // (A pinhole's TCP data connection goes to the kernel at its SYN.)
                self.maybe_offload(handle, &mut decision);
                with_events(decision, events)
            }
            Err(reason) => {
                if let Some(pinhole) = pinhole {
                    self.pinholes.restore(pinhole);
                }
                with_events(Decision::drop(reason, None), events)
            }
        }
    }

    /// A new flow no pinhole admitted: an FTPS session's passive range admits it (returned
    /// with the flow), or the rules decide. A connection the range would admit but for the
    /// session's maximum is refused for that (`ftps_range_limit`) unless the rules allow it.
    fn admit_on_miss(
        &self,
        now: Instant,
        info: &PacketInfo,
        tuple: FlowTuple,
        state: FlowState,
        miss: &PinholeMatch,
    ) -> Result<(Admitted, Option<RangeAdmission>), Decision> {
        match self.passive_range_for(&tuple) {
            Some(Ok(admission)) => {
                let origin = FlowOrigin::Pinhole(Alg::Ftp);
                let flow = Flow::new(tuple, state, origin, None, now);
                Ok(((flow, None, None, false), Some(admission)))
            }
            limit => match self.admit_without_pinhole(now, info, tuple, state, miss) {
                Ok(admitted) => Ok((admitted, None)),
                Err(refused) => match limit {
                    Some(Err(reason)) => Err(range_refusal(reason, tuple)),
                    _ => Err(refused),
                },
            },
        }
    }

    /// The drop for a new flow's first datagram when its inspector refused it, or when a
    /// request it carries finds no room for its pinhole (the client's quota or the table):
    /// either way the flow is not kept.
    fn refusal_of_first(&mut self, tuple: FlowTuple, outcome: &AlgOutcome) -> Option<Decision> {
        if let AlgVerdict::Drop(reason) | AlgVerdict::Reject(reason) = outcome.verdict {
            return Some(with_events(
                Decision::drop(reason, None),
                outcome.events.clone(),
            ));
        }
        let (request, cause) = outcome.pinholes.iter().find_map(|r| {
            r.per_peer?;
            let cause = if self.over_peer_quota(r) {
                Refusal::PeerQuota
            } else if self.pinholes.is_full() {
                Refusal::Table(PinholeError::TableFull)
            } else if self.pinholes.count_for_client(tuple.src)
                >= self.policy.limits.max_pinholes_per_client
            {
                Refusal::Table(PinholeError::ClientQuota)
            } else {
                return None;
            };
            Some((r, cause))
        })?;
        let (reason, detail) = self.pinhole_refusal(&request.opening, tuple.src, cause);
        self.counters
            .pinhole(request.opening.alg, PinholeOutcome::Refused);
        let events = vec![Event::Violation {
            alg: request.opening.alg,
            reason,
            flow: Some(tuple),
            detail,
        }];
        Some(with_events(Decision::drop(reason, None), events))
    }

    /// A new flow no pinhole admitted: by the rules, or taken over when the kernel knows it as
    /// admitted (a failover pair's standby: the router that admitted it checked it, and the
    /// pinhole it used, the kernel FTP helper's expectation carried over by conntrackd, is
    /// spent now). Returns the flow, the rule's name, its inspector and whether it was taken
    /// over.
    fn admit_without_pinhole(
        &self,
        now: Instant,
        info: &PacketInfo,
        tuple: FlowTuple,
        state: FlowState,
        miss: &PinholeMatch,
    ) -> Result<Admitted, Decision> {
        match self.admit_by_rules(info, tuple, miss) {
            Ok(RuleAdmission { rule, alg, kind }) => {
                let origin = FlowOrigin::Rule(rule.clone());
                let flow = Flow::new(tuple, state, origin, alg, now);
                Ok((flow, Some(rule), kind, false))
            }
            Err(_) if info.synced => {
                let flow = Flow::new(tuple, state, FlowOrigin::TakenOver(None), None, now);
                Ok((flow, None, None, true))
            }
            Err(refused) => Err(refused),
        }
    }

    /// A new flow the rules decide (refused before them: TFTP transfer IDs).
    fn admit_by_rules(
        &self,
        info: &PacketInfo,
        tuple: FlowTuple,
        miss: &PinholeMatch,
    ) -> Result<RuleAdmission, Decision> {
        let tftp_violation = |(reason, detail): (Reason, String)| {
            let events = vec![Event::Violation {
                alg: Alg::Tftp,
                reason,
                flow: Some(tuple),
                detail,
            }];
            with_events(Decision::drop(reason, None), events)
        };
        if let Some(refusal) = self.refused_before_rules(&tuple, miss) {
            return Err(tftp_violation(refusal));
        }
        let verdict = self.policy.evaluate(&info.flow_context(&tuple));
        let rule = verdict
            .rule
            .and_then(|id| self.policy.rule(id))
            .map(|r| r.name.clone());
        if verdict.action == Action::Deny
            && let Some(refusal) = self.unknown_tid(&tuple, false)
        {
            return Err(tftp_violation(refusal));
        }
        match (verdict.action, rule) {
            (Action::Deny, _) if matches!(miss, PinholeMatch::WrongPeer { .. }) => {
                Err(Decision::drop(Reason::PinholeWrongPeer, None))
            }
            (Action::Deny, Some(_)) => Err(Decision::drop(Reason::PolicyDeny, None)),
            (Action::Deny, None) => Err(Decision::drop(Reason::DefaultDeny, None)),
            (Action::Allow, rule) => {
                let name = rule.unwrap_or_else(|| Arc::from("default"));
                let alg = verdict
                    .inspect
                    .as_ref()
                    .map(|inspect| AlgState::for_new_flow(inspect, &name, tuple));
                let kind = verdict.inspect.as_ref().map(crate::alg::Inspect::alg);
                Ok(RuleAdmission {
                    rule: name,
                    alg,
                    kind,
                })
            }
        }
    }

    /// Records a flow admitted by a pinhole as a child of the pinhole's parent.
    fn adopt(&mut self, pinhole: &Pinhole, child: FlowHandle, tuple: FlowTuple) {
        if pinhole.spec.opening.alg == Alg::Tftp {
            // The transfer's client end: anything else aimed at it is an unknown TID.
            self.tftp_transfers.insert((tuple.dst, tuple.dport), child);
        }
        let Some(parent) = pinhole.spec.parent else {
            return;
        };
        if let Some(Some(AlgState::Ftp(ftp))) =
            self.flows.get_mut(parent.handle).map(|f| &mut f.alg)
        {
            ftp.add_child(child);
        }
    }

    pub(super) fn insert_flow(
        &mut self,
        flow: Flow,
        events: &mut Vec<Event>,
    ) -> Result<FlowHandle, Reason> {
        if flow.origin.counts_against_source()
            && self.flows.count_from(flow.tuple.src) >= self.policy.limits.max_flows_per_source
        {
            return Err(Reason::FlowSourceLimit);
        }
        let deadline = self.now + self.flow_timeout(&flow);
        match self.flows.insert(flow, deadline) {
            Ok(inserted) => {
                self.counters.flows_opened += 1;
                if let Some((old_handle, old)) = inserted.evicted {
                    self.counters.flows_evicted += 1;
                    self.flow_removed(old_handle, &old, CloseCause::Evicted, events);
                }
                Ok(inserted.handle)
            }
            Err(_) => Err(Reason::FlowLimit),
        }
    }

    /// How long a flow lives without traffic in its current state.
    pub(super) fn flow_timeout(&self, flow: &Flow) -> Duration {
        let protocol = match &flow.state {
            FlowState::Tcp(tcp) => tcp_timeout(&self.policy.timeouts, tcp),
            state @ FlowState::Datagram { .. } => {
                datagram_timeout(&self.policy.timeouts, flow.tuple.proto, state)
            }
        };
        match &flow.alg {
            Some(alg) => alg.idle_timeout(protocol),
            None => protocol,
        }
    }

    /// Sets a flow's deadline from its state now.
    pub(super) fn refresh_deadline(&mut self, now: Instant, handle: FlowHandle) {
        if let Some(timeout) = self.flows.get(handle).map(|f| self.flow_timeout(f)) {
            self.flows.set_deadline(handle, now + timeout);
        }
    }

    /// Opens or closes the pinholes an inspector asked for and turns its verdict into a
    /// decision for the packet of `handle` sent from `dir`.
    pub(super) fn apply_inspection(
        &mut self,
        now: Instant,
        handle: FlowHandle,
        tuple: FlowTuple,
        dir: Direction,
        outcome: AlgOutcome,
    ) -> Decision {
        let AlgOutcome {
            mut verdict,
            pinholes,
            close,
            close_all,
            mut events,
            rewrites,
        } = outcome;
        self.complete_transfer_records(now, handle, &mut events);
        self.sync_passive_range(handle);
        for event in &events {
            if let Event::Transfer(transfer) = event {
                self.counters.transfer(transfer);
            }
        }
        if close_all {
            self.close_pinholes_of(handle, &mut events);
        }
        self.close_requested(handle, &close, &mut events);
        if verdict == AlgVerdict::Pass {
            for request in pinholes {
                let opening = request.opening;
                let over_quota = self.over_peer_quota(&request);
                let spec = PinholeSpec {
                    opening: request.opening,
                    parent: Some(ParentRef {
                        handle,
                        flow: tuple,
                    }),
                    expires: now + request.timeout,
                    child: request.child,
                };
                // A retransmitted request refreshes its pinhole, whatever the quota.
                let refused = if over_quota && !self.pinholes.is_pending(&spec) {
                    Some(Refusal::PeerQuota)
                } else {
                    self.open_pinhole(spec, request.per_parent, &mut events)
                        .err()
                        .map(Refusal::Table)
                };
                if refused.is_none() && opening.alg == Alg::Tftp {
                    self.end_finished_transfer((opening.dst, opening.dport), &mut events);
                }
                if let Some(cause) = refused {
                    if matches!(cause, Refusal::PeerQuota) {
                        // (Refusals by the table are counted where they happen.)
                        self.counters.pinhole(opening.alg, PinholeOutcome::Refused);
                    }
                    let (reason, detail) = self.pinhole_refusal(&request.opening, tuple.src, cause);
                    let mut refusal = AlgOutcome::default();
                    if let Some(AlgState::Ftp(ftp)) =
                        self.flows.get_mut(handle).and_then(|f| f.alg.as_mut())
                    {
                        ftp.violate(dir, reason, detail, &mut refusal);
                    } else {
                        refusal.verdict = AlgVerdict::Drop(reason);
                        refusal.events.push(Event::Violation {
                            alg: request.opening.alg,
                            reason,
                            flow: Some(tuple),
                            detail,
                        });
                    }
                    events.append(&mut refusal.events);
                    verdict = refusal.verdict;
                    break;
                }
            }
        }
        let decision = match verdict {
            AlgVerdict::Pass => Decision {
                rewrites,
                ..Decision::accept(Some(tuple))
            },
            AlgVerdict::Drop(reason) => Decision::drop(reason, Some(tuple)),
            AlgVerdict::Reject(reason) => {
                // The connection is over: later segments are dropped as after a RST.
                if let Some(FlowState::Tcp(tracker)) =
                    self.flows.get_mut(handle).map(|f| &mut f.state)
                {
                    tracker.reset();
                }
                self.flows
                    .set_deadline(handle, now + self.policy.timeouts.tcp_closed);
                self.close_pinholes_of(handle, &mut events);
                Decision::reject(reason, Some(tuple))
            }
        };
        with_events(decision, events)
    }

    /// A new TFTP request from a client port ends the finished transfer (dallying after its
    /// last block or its ERROR) still tracked on that port. A server that reuses its
    /// transfer ID for the new request (tftpd-hpa with a port range, a client that loops
    /// requests from one port) would otherwise find the old flow, whose inspector refuses or
    /// misreads the new blocks, and the new request's pinhole would stay pending against
    /// the client's quota.
    fn end_finished_transfer(&mut self, client_end: (IpAddr, u16), events: &mut Vec<Event>) {
        let Some(&handle) = self.tftp_transfers.get(&client_end) else {
            return;
        };
        let finished = matches!(
            self.flows.get(handle).and_then(|f| f.alg.as_ref()),
            Some(AlgState::TftpTransfer(transfer)) if transfer.is_finished()
        );
        if finished && let Some(flow) = self.flows.remove(handle) {
            self.flow_removed(handle, &flow, CloseCause::Reused, events);
        }
    }

    /// Closes the pending pinholes of `handle` that an inspector asked to close.
    fn close_requested(&mut self, handle: FlowHandle, close: &[Opening], events: &mut Vec<Event>) {
        for opening in close {
            let mut closed = Vec::new();
            self.pinholes.close_matching(handle, opening, &mut closed);
            for pinhole in closed {
                self.counters
                    .pinhole(pinhole.spec.opening.alg, PinholeOutcome::Closed);
                events.push(pinhole_event(
                    &self.flows,
                    PinholeAction::Close,
                    &pinhole,
                    None,
                ));
            }
        }
    }

    /// True when `request` would exceed its inspector's quota of pinholes per peer.
    fn over_peer_quota(&self, request: &PinholeRequest) -> bool {
        request.per_peer.is_some_and(|max| {
            self.pinholes
                .count_to(request.opening.alg, request.opening.dst)
                >= max
        })
    }

    /// Why `opening`, negotiated by a flow `client` opened, was not opened, as a drop reason
    /// and a detail for the violation.
    fn pinhole_refusal(
        &self,
        opening: &Opening,
        client: IpAddr,
        cause: Refusal,
    ) -> (Reason, String) {
        let detail = match cause {
            Refusal::PeerQuota => format!(
                "{} requests already pending for {}",
                self.pinholes.count_to(Alg::Tftp, opening.dst),
                opening.dst
            ),
            Refusal::Table(PinholeError::TableFull) => format!(
                "pinhole table full ({} pinholes); not opening {opening}",
                self.pinholes.len()
            ),
            Refusal::Table(PinholeError::ClientQuota) => format!(
                "client {client} holds {} pending pinholes (limits.max_pinholes_per_client); \
                 not opening {opening}",
                self.pinholes.count_for_client(client)
            ),
        };
        let reason = match opening.alg {
            Alg::Ftp => Reason::FtpPinholeLimit,
            Alg::Tftp => Reason::TftpRequestLimit,
        };
        (reason, detail)
    }

    /// Fills in transfer records what the inspector cannot know: a TFTP transfer's times
    /// (its flow's start, now), an FTP data connection's tuple and bytes while it is still in
    /// the table.
    fn complete_transfer_records(&self, now: Instant, handle: FlowHandle, events: &mut [Event]) {
        for event in events {
            let Event::Transfer(transfer) = event else {
                continue;
            };
            if transfer.alg == Alg::Tftp
                && let Some(flow) = self.flows.get(handle)
            {
                transfer.started = flow.created;
                transfer.ended = now;
            }
            let Some(flow) = transfer.data_handle.and_then(|h| self.flows.get(h)) else {
                continue;
            };
            transfer.data = Some(flow.tuple);
            transfer.data_offloaded = flow.offloaded;
            if let Some((up, down)) = data_bytes(flow, transfer.session.src) {
                transfer.bytes_up = Some(up);
                transfer.bytes_down = Some(down);
                transfer.bytes_source = crate::event::BytesSource::Pinhole;
            }
        }
    }

    /// Closes the pending pinholes of `parent`.
    pub(super) fn close_pinholes_of(&mut self, parent: FlowHandle, events: &mut Vec<Event>) {
        let mut orphans: Vec<Pinhole> = Vec::new();
        self.pinholes.close_with_parent(parent, &mut orphans);
        for pinhole in orphans {
            self.counters
                .pinhole(pinhole.spec.opening.alg, PinholeOutcome::Closed);
            events.push(pinhole_event(
                &self.flows,
                PinholeAction::Close,
                &pinhole,
                None,
            ));
        }
    }

    /// Bookkeeping when a flow leaves the table: its pending pinholes close with it, and its
    /// children too unless the inspector's options let them outlive it.
    pub(super) fn flow_removed(
        &mut self,
        handle: FlowHandle,
        flow: &Flow,
        cause: CloseCause,
        events: &mut Vec<Event>,
    ) {
        self.counters.flows_closed += 1;
        self.close_pinholes_of(handle, events);
        // A data connection leaves its control connection's list of children, which keeps
        // what its transfer record needs.
        let mut range_record = None;
        if let Some(parent) = flow.parent
            && let Some(Some(AlgState::Ftp(ftp))) =
                self.flows.get_mut(parent).map(|f| f.alg.as_mut())
        {
            let result = match cause {
                CloseCause::Fin => TransferResult::Complete,
                CloseCause::Reset => TransferResult::Aborted,
                _ => TransferResult::Unfinished,
            };
            let opened = super::ftps_range::tcp_state(flow).is_some_and(super::ftps_range::opened);
            range_record = super::ftps_range::range_record(ftp, handle, flow, result, opened);
            let bytes = data_bytes(flow, ftp.client());
            ftp.forget_child(handle, flow.tuple, bytes);
        }
        if let Some(AlgState::Ftp(_)) = &flow.alg
            && !self.ftps_sessions.is_empty()
        {
            self.unregister_passive_range((flow.tuple.src, flow.tuple.dst), handle);
        }
        // A transfer the flow's end leaves unfinished is logged as such.
        let unfinished = range_record.or_else(|| match &flow.alg {
            Some(AlgState::Ftp(ftp)) => ftp.unfinished_transfer(flow.last_seen),
            Some(AlgState::TftpTransfer(transfer)) => {
                transfer.unfinished(flow.created, flow.last_seen)
            }
            _ => None,
        });
        if let Some(Event::Transfer(transfer)) = &unfinished {
            self.counters.transfer(transfer);
        }
        events.extend(unfinished);
        if let Some(AlgState::Ftp(ftp)) = &flow.alg
            && !ftp.range_children().is_empty()
        {
            for record in super::ftps_range::orphaned_range_records(ftp, &self.flows) {
                if let Event::Transfer(transfer) = &record {
                    self.counters.transfer(transfer);
                }
                events.push(record);
            }
        }
        events.push(Event::FlowClosed {
            flow: flow.tuple,
            cause,
            packets: flow.total_packets(),
            bytes: flow.total_bytes(),
        });
        if let Some(AlgState::Ftp(ftp)) = &flow.alg {
            self.stream_bytes = self.stream_bytes.saturating_sub(ftp.buffered());
        }
        match &flow.alg {
            Some(AlgState::Ftp(ftp)) if !ftp.options().data_outlives_control => {
                for &child in ftp.children() {
                    if let Some(child_flow) = self.flows.remove(child) {
                        self.flow_removed(child, &child_flow, CloseCause::ParentClosed, events);
                    }
                }
            }
            Some(AlgState::TftpTransfer(_)) => {
                let end = (flow.tuple.dst, flow.tuple.dport);
                if self.tftp_transfers.get(&end) == Some(&handle) {
                    self.tftp_transfers.remove(&end);
                }
            }
            _ => {}
        }
    }
}

/// The flow `pinhole` admits, with the inspector its opener asked for (a TFTP transfer's).
fn admitted_by_pinhole(
    pinhole: &Pinhole,
    tuple: FlowTuple,
    state: FlowState,
    now: Instant,
) -> Flow {
    let alg = pinhole
        .spec
        .child
        .as_ref()
        .map(|child| AlgState::for_child(child, tuple));
    let origin = FlowOrigin::Pinhole(pinhole.spec.opening.alg);
    Flow::new(tuple, state, origin, alg, now)
}

/// The refusal of a connection to an FTPS session's passive range while the session holds
/// its maximum (and no rule allows the connection).
fn range_refusal(reason: Reason, tuple: FlowTuple) -> Decision {
    let events = vec![Event::Violation {
        alg: Alg::Ftp,
        reason,
        flow: Some(tuple),
        detail: format!(
            "the FTPS session of {} with {} holds its ftps_max_connections through its passive range",
            tuple.src, tuple.dst
        ),
    }];
    with_events(Decision::drop(reason, None), events)
}

/// The payload bytes a data connection carried from the session's `client` (up) and to it
/// (down), from its TCP sequence numbers; `None` when pinhole did not follow them (the kernel
/// carried the connection, or it was picked up mid-stream).
pub(super) fn data_bytes(flow: &Flow, client: IpAddr) -> Option<(u64, u64)> {
    let FlowState::Tcp(tracker) = &flow.state else {
        return None;
    };
    if flow.offloaded {
        return None;
    }
    let orig = tracker.payload_sent(Direction::Original)?;
    let reply = tracker.payload_sent(Direction::Reply).unwrap_or(0);
    Some(if flow.tuple.src == client {
        (orig, reply)
    } else {
        (reply, orig)
    })
}

/// The notice of a connection a pinhole admitted from another address of its peer (a TFTP
/// server's `reply_addresses`).
fn other_address_notice(pinhole: &Pinhole, tuple: FlowTuple) -> Option<Event> {
    (pinhole.spec.opening.src != tuple.src).then(|| Event::Notice {
        alg: pinhole.spec.opening.alg,
        flow: Some(tuple),
        kind: "reply_from_other_address",
        detail: format!(
            "the server answered the request to {} from {}, one of its reply_addresses",
            pinhole.spec.opening.src, tuple.src
        ),
    })
}
