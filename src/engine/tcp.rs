//! The TCP path: state tracking, then the flow's inspector.

use std::sync::Arc;

use crate::alg::{Alg, AlgState, AlgVerdict};
use crate::conntrack::{
    Direction, Flow, FlowHandle, FlowKey, FlowOrigin, FlowState, FlowTuple, TcpState, TcpTracker,
    TcpVerdict,
};
use crate::decision::{Decision, Reason};
use crate::event::{CloseCause, Event, PinholeAction, TransferResult};
use crate::policy::Action;
use crate::time::Instant;
use crate::wire::{TcpFlags, TcpSegment, transport};

use super::{Engine, Packet, PacketInfo, with_events};

/// Flags whose segments change connection state; their checksums are always verified.
const STATE_FLAGS: u8 = TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST;

impl Engine {
    pub(super) fn tcp(
        &mut self,
        now: Instant,
        info: &PacketInfo,
        packet: Packet,
        seg: &TcpSegment<'_>,
    ) -> Decision {
        // Acknowledgements of data the kernel's helper rewrote are in the shifted space.
        let unshifted = info
            .kernel
            .as_ref()
            .and_then(|k| super::nat::unshifted(k, seg));
        let seg = unshifted.as_ref().unwrap_or(seg);
        if info.offloaded
            && let Some(decision) = self.offloaded_segment(now, packet, seg)
        {
            return decision;
        }
        let key = FlowKey::new(
            packet.proto,
            (packet.src, seg.sport),
            (packet.dst, seg.dport),
        );
        let existing = self.flows.lookup(&key);
        let inspected = existing
            .and_then(|h| self.flows.get(h))
            .is_some_and(|f| f.alg.is_some());
        let needs_checksum =
            seg.flags.0 & STATE_FLAGS != 0 || (inspected && !seg.payload.is_empty());
        if info.verify_checksums
            && needs_checksum
            && !transport::checksum_valid(packet.src, packet.dst, packet.proto, seg.bytes)
        {
            return Decision::drop(
                Reason::BadChecksum,
                existing.and_then(|h| self.flows.get(h)).map(|f| f.tuple),
            );
        }
        let mut events = Vec::new();
        if let Some(handle) = existing {
            match self.tcp_existing(now, handle, packet, seg, info.offloaded) {
                Some(decision) => return decision,
                None => {
                    // A SYN reusing a finished connection's tuple: forget the old one.
                    if let Some(old) = self.flows.remove(handle) {
                        self.flow_removed(handle, &old, CloseCause::Reused, &mut events);
                    }
                }
            }
        }
        let flags = seg.flags;
        if !crate::conntrack::tcp::valid_flags(flags) {
            return with_events(Decision::drop(Reason::TcpInvalidFlags, None), events);
        }
        let decision = if flags.syn() && !flags.ack() {
            // Data in a SYN (TCP Fast Open) goes to the inspector like a datagram's payload.
            let syn_data = (!seg.payload.is_empty()).then_some(seg.payload);
            let decision = self.open_flow(
                now,
                info,
                packet,
                (seg.sport, seg.dport),
                FlowState::Tcp(TcpTracker::from_syn(seg)),
                syn_data,
            );
            let via_pinhole = decision.events.iter().any(|e| {
                matches!(e, Event::Pinhole { action: PinholeAction::Use, pinhole, .. } if pinhole.opening.alg == Alg::Ftp)
            });
            if via_pinhole {
                self.note_data_syn(packet, seg);
            }
            decision
        } else if info.synced && !flags.syn() {
            self.take_over(now, info, packet, seg)
        } else if self.policy.tcp.midstream_pickup && !flags.rst() && !flags.syn() {
            self.pick_up(now, info, packet, seg)
        } else {
            Decision::drop(Reason::TcpNoHandshake, None)
        };
        with_events(decision, events)
    }

    /// A segment of a tracked connection. `None` means "reopen as a new flow".
    ///
    /// A SYN for an offloaded flow that comes without the kernel's offload mark opens a new
    /// connection: the kernel's entry of the old one is gone (its `TIME_WAIT` ended, or it
    /// reopened the tuple), which is why the mark is missing. The engine never saw the old
    /// connection's FINs (the kernel carried them), so its tracker still says established.
    fn tcp_existing(
        &mut self,
        now: Instant,
        handle: FlowHandle,
        packet: Packet,
        seg: &TcpSegment<'_>,
        marked_offloaded: bool,
    ) -> Option<Decision> {
        let timeouts = &self.policy.timeouts;
        let flow = self.flows.get_mut(handle)?;
        if flow.offloaded && !marked_offloaded && seg.flags.syn() && !seg.flags.ack() {
            return None;
        }
        let tuple = flow.tuple;
        let dir = tuple.direction_of(packet.src, seg.sport);
        let FlowState::Tcp(tracker) = &mut flow.state else {
            return Some(Decision::drop(Reason::TcpNoHandshake, Some(tuple)));
        };
        let was = tracker.state();
        match tracker.on_segment(dir, seg) {
            TcpVerdict::Accept => {}
            TcpVerdict::Drop(reason) => return Some(Decision::drop(reason, Some(tuple))),
            TcpVerdict::Reopen => return None,
        }
        let state = tracker.state();
        let timeout = tcp_timeout(timeouts, tracker);
        let stream_start = tracker.stream_start(dir);
        let outcome = match (&mut flow.alg, stream_start) {
            (Some(AlgState::Ftp(ftp)), Some(start)) if !seg.flags.rst() => {
                let before = ftp.buffered();
                if !seg.payload.is_empty()
                    && self.stream_bytes + seg.payload.len() > self.policy.limits.max_stream_bytes
                {
                    // All inspectors together hold their cap: refuse new bytes until
                    // acknowledgements free room (the sender retransmits).
                    return Some(Decision::drop(Reason::FtpReassemblyLimit, Some(tuple)));
                }
                let outcome = ftp.on_segment(now, dir, seg, start);
                self.stream_bytes = self.stream_bytes - before + ftp.buffered();
                Some(outcome)
            }
            _ => None,
        };
        let passes = outcome
            .as_ref()
            .is_none_or(|o| o.verdict == AlgVerdict::Pass);
        if passes {
            flow.account(dir, packet.len, now);
        }
        self.flows.set_deadline(handle, now + timeout);
        let mut decision = match outcome {
            Some(outcome) => self.apply_inspection(now, handle, tuple, dir, outcome),
            None => Decision::accept(Some(tuple)),
        };
        self.maybe_offload(handle, &mut decision);
        // A control connection that ended takes its pending pinholes with it.
        if matches!(state, TcpState::Closed | TcpState::TimeWait)
            || decision.verdict == crate::Verdict::Reject
        {
            self.close_pinholes_of(handle, &mut decision.events);
        }
        // A connection an FTPS session's range admitted is logged when it closes, not after
        // its TIME_WAIT.
        if state != was && matches!(state, TcpState::Closed | TcpState::TimeWait) {
            let result = if state == TcpState::TimeWait {
                TransferResult::Complete
            } else {
                TransferResult::Aborted
            };
            self.range_child_closed(handle, (was, result), &mut decision.events);
        }
        Some(decision)
    }

    /// Tells the control connection of an FTP data connection that just opened the shape of
    /// its SYN's header, from which the transfer log sizes the headers of an offloaded data
    /// connection the kernel counted ([`crate::event::DataHeaders`]).
    fn note_data_syn(&mut self, packet: Packet, seg: &TcpSegment<'_>) {
        let key = FlowKey::new(
            packet.proto,
            (packet.src, seg.sport),
            (packet.dst, seg.dport),
        );
        let Some(parent) = self
            .flows
            .lookup(&key)
            .and_then(|h| self.flows.get(h))
            .and_then(|f| f.parent)
        else {
            return;
        };
        if let Some(Some(AlgState::Ftp(ftp))) = self.flows.get_mut(parent).map(|f| f.alg.as_mut()) {
            ftp.data_syn(transport::syn_headers(packet.src.is_ipv6(), seg));
        }
    }

    /// Mid-stream pickup: the rules decide as if the sender had opened the connection. The
    /// flow stays embryonic (short timeout, evicted first) until the other side answers.
    fn pick_up(
        &mut self,
        now: Instant,
        info: &PacketInfo,
        packet: Packet,
        seg: &TcpSegment<'_>,
    ) -> Decision {
        let tuple = FlowTuple {
            proto: packet.proto,
            src: packet.src,
            sport: seg.sport,
            dst: packet.dst,
            dport: seg.dport,
        };
        let Some((rule, inspect)) = self.allowing_rule(info, &tuple) else {
            return Decision::drop(Reason::TcpNoHandshake, None);
        };
        let alg = inspect.map(|inspect| AlgState::for_pickup(&inspect, &rule, tuple));
        let origin = FlowOrigin::Pickup(rule.clone());
        self.join_midstream(now, packet, seg, tuple, Direction::Original, origin, alg)
    }

    /// A segment of a connection the engine does not track but the kernel knows as admitted
    /// by a pinhole ([`PacketInfo::synced`]): on a failover pair's standby, a connection the
    /// other router admitted, carried over by conntrackd. It is joined mid-stream, whatever
    /// the rules say of new connections, the way the kernel's FTP helper resynchronises after
    /// a failover: the control connection's inspector starts at the next line
    /// (`NF_CT_FTP_SEQ_PICKUP` in `net/netfilter/nf_conntrack_ftp.c`). Its initiator is the
    /// end a rule with an inspector allows to open it (a control connection's client), else
    /// the end any rule allows to, else the sender. A
    /// reset is let through without tracking anything: it ends the kernel's entry.
    fn take_over(
        &mut self,
        now: Instant,
        info: &PacketInfo,
        packet: Packet,
        seg: &TcpSegment<'_>,
    ) -> Decision {
        if seg.flags.rst() {
            return Decision::accept(None);
        }
        let sent = FlowTuple {
            proto: packet.proto,
            src: packet.src,
            sport: seg.sport,
            dst: packet.dst,
            dport: seg.dport,
        };
        // The orientation a rule with an inspector allows wins: a server's reply may come
        // first, and a broad rule (inside to anywhere) also allows the server to "open" it.
        let forward = self.allowing_rule(info, &sent);
        let backward = self.allowing_rule(&info.reversed(), &sent.reversed());
        let inspected = |allowed: &Option<(Arc<str>, Option<crate::alg::Inspect>)>| {
            allowed
                .as_ref()
                .is_some_and(|(_, inspect)| inspect.is_some())
        };
        let (tuple, dir, allowed) = if inspected(&backward) && !inspected(&forward)
            || forward.is_none() && backward.is_some()
        {
            (sent.reversed(), Direction::Reply, backward)
        } else {
            (sent, Direction::Original, forward)
        };
        let (rule, alg) = match allowed {
            Some((rule, inspect)) => {
                let alg = inspect.map(|inspect| AlgState::for_pickup(&inspect, &rule, tuple));
                (Some(rule), alg)
            }
            None => (None, None),
        };
        let origin = FlowOrigin::TakenOver(rule);
        self.join_midstream(now, packet, seg, tuple, dir, origin, alg)
    }

    /// The rule that allows a new connection `tuple` (arriving as `info` says), with its
    /// inspector, if one does.
    fn allowing_rule(
        &self,
        info: &PacketInfo,
        tuple: &FlowTuple,
    ) -> Option<(Arc<str>, Option<crate::alg::Inspect>)> {
        let verdict = self.policy.evaluate(&info.flow_context(tuple));
        if verdict.action != Action::Allow {
            return None;
        }
        let rule = verdict
            .rule
            .and_then(|id| self.policy.rule(id))
            .map_or_else(|| Arc::from("default"), |r| r.name.clone());
        Some((rule, verdict.inspect.clone()))
    }

    /// Tracks a connection joined mid-stream at segment `seg`, sent in direction `dir` of
    /// `tuple`, and inspects that segment.
    #[allow(clippy::too_many_arguments)]
    fn join_midstream(
        &mut self,
        now: Instant,
        packet: Packet,
        seg: &TcpSegment<'_>,
        tuple: FlowTuple,
        dir: Direction,
        origin: FlowOrigin,
        alg: Option<AlgState>,
    ) -> Decision {
        let alg_kind = alg.as_ref().map(AlgState::alg);
        let (rule, takeover) = match &origin {
            FlowOrigin::Pickup(rule) => (Some(rule.clone()), false),
            FlowOrigin::TakenOver(rule) => (rule.clone(), true),
            FlowOrigin::Rule(_) | FlowOrigin::Pinhole(_) => (None, false),
        };
        let tracker = TcpTracker::picked_up(dir, seg);
        let mut flow = Flow::new(tuple, FlowState::Tcp(tracker), origin, alg, now);
        flow.account(dir, packet.len, now);
        let mut events = Vec::new();
        match self.insert_flow(flow, &mut events) {
            Ok(handle) => {
                if takeover {
                    self.counters.flows_taken_over += 1;
                }
                events.push(Event::FlowOpened {
                    flow: tuple,
                    rule,
                    alg: alg_kind,
                    via_pinhole: false,
                    pickup: true,
                    takeover,
                });
                // The first segment is inspected like any other.
                let decision = self.inspect_first_segment(now, handle, dir, seg);
                with_events(decision, events)
            }
            Err(reason) => with_events(Decision::drop(reason, None), events),
        }
    }

    /// Runs the inspector on the segment that created a picked-up flow.
    fn inspect_first_segment(
        &mut self,
        now: Instant,
        handle: FlowHandle,
        dir: Direction,
        seg: &TcpSegment<'_>,
    ) -> Decision {
        let Some(flow) = self.flows.get_mut(handle) else {
            return Decision::drop(Reason::FlowLimit, None);
        };
        let tuple = flow.tuple;
        let start = match &flow.state {
            FlowState::Tcp(tracker) => tracker.stream_start(dir),
            FlowState::Datagram { .. } => None,
        };
        let outcome = match (&mut flow.alg, start) {
            (Some(AlgState::Ftp(ftp)), Some(start)) => {
                let before = ftp.buffered();
                let outcome = ftp.on_segment(now, dir, seg, start);
                self.stream_bytes = self.stream_bytes - before + ftp.buffered();
                outcome
            }
            _ => return Decision::accept(Some(tuple)),
        };
        self.apply_inspection(now, handle, tuple, dir, outcome)
    }
}

/// How long a TCP flow in this state lives without traffic; unconfirmed flows (handshake not
/// complete, or a pickup not answered) get the handshake timeout.
pub(super) fn tcp_timeout(
    timeouts: &crate::policy::Timeouts,
    tracker: &TcpTracker,
) -> std::time::Duration {
    if tracker.is_embryonic() {
        return timeouts.tcp_handshake;
    }
    match tracker.state() {
        TcpState::SynSent | TcpState::SynReceived => timeouts.tcp_handshake,
        TcpState::Established => timeouts.tcp_established,
        TcpState::FinWait => timeouts.tcp_fin_wait,
        TcpState::Closing => timeouts.tcp_closing,
        TcpState::TimeWait => timeouts.tcp_time_wait,
        TcpState::Closed => timeouts.tcp_closed,
    }
}
