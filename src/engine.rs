//! The sans-IO engine: `process(now, packet) -> Decision`, `next_timeout()`, `expire(now)`.
//!
//! It never reads a clock, a socket or a file. Adapters (replay, NFQUEUE, capture) own the
//! I/O and pass the time in; the same capture therefore replays identically every time. Time
//! that goes backwards (out-of-order capture timestamps) is clamped to the latest seen.
//!
//! A packet goes: link layer → IP (→ reassembly if a fragment) → transport → the flow it
//! belongs to (state checks) or, for a new flow, a pinhole or the policy rules.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::conntrack::{
    Direction, Flow, FlowHandle, FlowKey, FlowOrigin, FlowState, FlowTable, FlowTuple, OpenOutcome,
    Pinhole, PinholeError, PinholeSpec, PinholeTable, TcpState, TcpTracker, TcpVerdict,
};
use crate::counters::Counters;
use crate::decision::{Decision, Expired, Reason, Released, Verdict};
use crate::defrag::{DefragLimits, Defragmenter, Outcome};
use crate::event::{CloseCause, Event, PinholeAction, PinholeInfo};
use crate::policy::{Action, FlowContext, IfaceName, Policy};
use crate::time::Instant;
use crate::wire::icmp::decode_quoted;
use crate::wire::transport::{self, proto};
use crate::wire::{IcmpKind, IpPacket, LinkType, TcpSegment, Transport, ip, link};

/// What the caller knows about a packet besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// The caller's id for the packet (NFQUEUE packet id, index in a capture). Verdicts for
    /// held packets come back under it.
    pub handle: u64,
    /// How the bytes are framed.
    pub link: LinkType,
    /// Interface the packet arrived on, if known.
    pub ingress: Option<IfaceName>,
    /// Interface it will leave by, if known.
    pub egress: Option<IfaceName>,
}

impl PacketInfo {
    /// A packet with no interface information.
    pub fn new(handle: u64, link: LinkType) -> Self {
        PacketInfo {
            handle,
            link,
            ingress: None,
            egress: None,
        }
    }
}

/// The network-layer facts the flow logic needs.
#[derive(Clone, Copy)]
struct Packet {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    /// IP datagram length, for byte counters.
    len: usize,
}

/// One inspection engine: flow table, pinholes, reassembly, counters. Single-threaded; run one
/// per worker.
pub struct Engine {
    policy: Arc<Policy>,
    flows: FlowTable,
    pinholes: PinholeTable,
    defrag: Defragmenter,
    counters: Counters,
    now: Instant,
}

fn defrag_limits(policy: &Policy) -> DefragLimits {
    DefragLimits {
        max_datagrams: policy.limits.max_fragment_datagrams,
        max_bytes: policy.limits.max_fragment_bytes,
        max_fragments: policy.limits.max_fragments_per_datagram,
        timeout: policy.timeouts.fragment,
    }
}

impl Engine {
    /// An empty engine enforcing `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        Engine {
            flows: FlowTable::new(policy.limits.max_flows),
            pinholes: PinholeTable::new(policy.limits.max_pinholes),
            defrag: Defragmenter::new(defrag_limits(&policy)),
            counters: Counters::default(),
            now: Instant::ZERO,
            policy,
        }
    }

    /// Replaces the policy (a reload). Tracked flows and pinholes stay; new limits apply to
    /// new entries, new timeouts from each flow's next packet.
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.flows.set_capacity(policy.limits.max_flows);
        self.pinholes.set_capacity(policy.limits.max_pinholes);
        self.defrag.set_limits(defrag_limits(&policy));
        self.policy = policy;
    }

    /// The policy in force.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The flow table (read-only), for status displays.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// The pinhole table (read-only), for status displays.
    pub fn pinholes(&self) -> &PinholeTable {
        &self.pinholes
    }

    fn clamp(&mut self, now: Instant) -> Instant {
        if now > self.now {
            self.now = now;
        }
        self.now
    }

    /// Judges one packet seen at `now`.
    pub fn process(&mut self, now: Instant, info: &PacketInfo, frame: &[u8]) -> Decision {
        let now = self.clamp(now);
        self.counters.packets += 1;
        let decision = match link::ip_bytes(info.link, frame).and_then(ip::decode) {
            Err(reason) => Decision::drop(reason, None),
            Ok(packet) if packet.fragment.is_some() => self.fragment(now, info, &packet),
            Ok(packet) => {
                let view = Packet {
                    src: packet.src,
                    dst: packet.dst,
                    proto: packet.proto,
                    len: packet.payload.len(),
                };
                match transport::decode(packet.proto, packet.is_ipv6(), packet.payload) {
                    Ok(transport) => self.inspect(now, info, view, &transport),
                    Err(reason) => Decision::drop(reason, None),
                }
            }
        };
        self.counters.verdict(decision.verdict, decision.reason);
        for released in &decision.released {
            self.counters.verdict(released.verdict, released.reason);
        }
        decision
    }

    /// The earliest instant at which [`Engine::expire`] has work. May be early, never late.
    pub fn next_timeout(&self) -> Option<Instant> {
        [
            self.flows.next_deadline(),
            self.pinholes.next_deadline(),
            self.defrag.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs every timer due at `now`: flows and pinholes expire, incomplete datagrams are
    /// given up.
    pub fn expire(&mut self, now: Instant) -> Expired {
        let now = self.clamp(now);
        let mut expired = Expired::default();
        for handle in self.defrag.expire(now) {
            expired
                .released
                .push(dropped(handle, Reason::FragmentTimeout, None));
        }
        let mut pinholes = Vec::new();
        self.pinholes.expire(now, &mut pinholes);
        for pinhole in pinholes {
            self.counters.pinholes_expired += 1;
            expired
                .events
                .push(pinhole_event(PinholeAction::Expire, &pinhole, None));
        }
        let mut flows = Vec::new();
        self.flows.expire(now, &mut flows);
        for (handle, flow) in flows {
            let cause = match &flow.state {
                FlowState::Tcp(tcp) if tcp.state() == TcpState::Closed => CloseCause::Reset,
                FlowState::Tcp(tcp)
                    if matches!(tcp.state(), TcpState::TimeWait | TcpState::Closing) =>
                {
                    CloseCause::Fin
                }
                _ => CloseCause::Timeout,
            };
            self.flow_removed(handle, &flow, cause, &mut expired.events);
        }
        for released in &expired.released {
            self.counters.verdict(released.verdict, released.reason);
        }
        expired
    }

    /// Ends a capture: every packet still held is dropped as incomplete.
    pub fn flush(&mut self) -> Expired {
        let released: Vec<Released> = self
            .defrag
            .flush()
            .into_iter()
            .map(|handle| dropped(handle, Reason::FragmentTimeout, None))
            .collect();
        for r in &released {
            self.counters.verdict(r.verdict, r.reason);
        }
        Expired {
            events: Vec::new(),
            released,
        }
    }

    /// Opens a pinhole for an inspector, reporting it in `events`. A parent keeps at most
    /// `per_parent` pinholes (the oldest closes).
    pub fn open_pinhole(
        &mut self,
        spec: PinholeSpec,
        per_parent: usize,
        events: &mut Vec<Event>,
    ) -> Result<OpenOutcome, PinholeError> {
        let now = self.now;
        match self.pinholes.open(spec, per_parent, now) {
            Ok(outcome) => {
                if let Some(evicted) = &outcome.evicted {
                    self.counters.pinholes_closed += 1;
                    events.push(pinhole_event(PinholeAction::Close, evicted, None));
                }
                if !outcome.refreshed {
                    self.counters.pinholes_opened += 1;
                    if let Some(pinhole) = self.pinholes.get(outcome.id) {
                        events.push(pinhole_event(PinholeAction::Open, pinhole, None));
                    }
                }
                Ok(outcome)
            }
            Err(err) => {
                self.counters.pinholes_refused += 1;
                Err(err)
            }
        }
    }

    // ---- fragments ---------------------------------------------------------------------------

    fn fragment(&mut self, now: Instant, info: &PacketInfo, packet: &IpPacket<'_>) -> Decision {
        let result = self.defrag.add(now, info.handle, packet);
        let mut released: Vec<Released> = result
            .evicted
            .into_iter()
            .map(|handle| dropped(handle, Reason::FragmentEvicted, None))
            .collect();
        let mut decision = match result.outcome {
            Outcome::Held => Decision::held(),
            Outcome::Dropped {
                reason,
                released: others,
            } => {
                released.extend(
                    others
                        .into_iter()
                        .map(|handle| dropped(handle, reason, None)),
                );
                Decision::drop(reason, None)
            }
            Outcome::Complete {
                proto,
                payload,
                held,
            } => {
                self.counters.datagrams_reassembled += 1;
                let decision = self.reassembled(now, info, packet, proto, &payload);
                released.extend(held.into_iter().map(|handle| Released {
                    handle,
                    verdict: decision.verdict,
                    reason: decision.reason,
                    flow: decision.flow,
                }));
                decision
            }
        };
        decision.released.extend(released);
        decision
    }

    fn reassembled(
        &mut self,
        now: Instant,
        info: &PacketInfo,
        packet: &IpPacket<'_>,
        proto: u8,
        payload: &[u8],
    ) -> Decision {
        let v6 = packet.is_ipv6();
        let (proto, l4) = if v6 {
            match ip::ipv6_upper_layer(proto, payload) {
                Ok(upper) => upper,
                Err(reason) => return Decision::drop(reason, None),
            }
        } else {
            (proto, payload)
        };
        let view = Packet {
            src: packet.src,
            dst: packet.dst,
            proto,
            len: payload.len(),
        };
        match transport::decode(proto, v6, l4) {
            Ok(transport) => self.inspect(now, info, view, &transport),
            Err(reason) => Decision::drop(reason, None),
        }
    }

    // ---- dispatch ----------------------------------------------------------------------------

    fn inspect(
        &mut self,
        now: Instant,
        info: &PacketInfo,
        packet: Packet,
        transport: &Transport<'_>,
    ) -> Decision {
        match transport {
            Transport::Tcp(seg) => self.tcp(now, info, packet, seg),
            Transport::Udp(udp) => self.datagram(now, info, packet, udp.sport, udp.dport),
            Transport::Other => self.datagram(now, info, packet, 0, 0),
            Transport::Icmp(icmp) => match icmp.kind {
                IcmpKind::EchoRequest { id } => self.echo_request(now, info, packet, id),
                IcmpKind::EchoReply { id } => self.echo_reply(now, packet, id),
                IcmpKind::Error { quoted } => self.icmp_error(packet, quoted, icmp.v6),
                IcmpKind::Informational => self.stateless(info, packet),
            },
        }
    }

    // ---- TCP ---------------------------------------------------------------------------------

    fn tcp(
        &mut self,
        now: Instant,
        info: &PacketInfo,
        packet: Packet,
        seg: &TcpSegment<'_>,
    ) -> Decision {
        let key = FlowKey::new(
            packet.proto,
            (packet.src, seg.sport),
            (packet.dst, seg.dport),
        );
        let mut events = Vec::new();
        if let Some(handle) = self.flows.lookup(&key) {
            match self.tcp_existing(now, handle, packet, seg) {
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
            self.open_flow(
                now,
                info,
                packet,
                seg.sport,
                seg.dport,
                FlowState::Tcp(TcpTracker::from_syn(seg)),
            )
        } else if self.policy.tcp.midstream_pickup && !flags.rst() && !flags.syn() {
            self.pick_up(now, info, packet, seg)
        } else {
            Decision::drop(Reason::TcpNoHandshake, None)
        };
        with_events(decision, events)
    }

    /// A segment of a tracked connection. `None` means "reopen as a new flow".
    fn tcp_existing(
        &mut self,
        now: Instant,
        handle: FlowHandle,
        packet: Packet,
        seg: &TcpSegment<'_>,
    ) -> Option<Decision> {
        let timeouts = &self.policy.timeouts;
        let flow = self.flows.get_mut(handle)?;
        let tuple = flow.tuple;
        let dir = tuple.direction_of(packet.src, seg.sport);
        let FlowState::Tcp(tracker) = &mut flow.state else {
            return Some(Decision::drop(Reason::TcpNoHandshake, Some(tuple)));
        };
        match tracker.on_segment(dir, seg) {
            TcpVerdict::Accept => {
                let timeout = tcp_timeout(timeouts, tracker.state());
                flow.account(dir, packet.len, now);
                self.flows.set_deadline(handle, now + timeout);
                Some(Decision::accept(Some(tuple)))
            }
            TcpVerdict::Drop(reason) => Some(Decision::drop(reason, Some(tuple))),
            TcpVerdict::Reopen => None,
        }
    }

    /// Mid-stream pickup: the rules decide as if the connection were opened by the sender;
    /// failing that, by the receiver (a capture may start with a server's segment).
    fn pick_up(
        &mut self,
        now: Instant,
        info: &PacketInfo,
        packet: Packet,
        seg: &TcpSegment<'_>,
    ) -> Decision {
        let forward = FlowContext {
            ingress: info.ingress,
            egress: info.egress,
            src: packet.src,
            dst: packet.dst,
            proto: packet.proto,
            dport: seg.dport,
        };
        let reverse = FlowContext {
            ingress: info.egress,
            egress: info.ingress,
            src: packet.dst,
            dst: packet.src,
            proto: packet.proto,
            dport: seg.sport,
        };
        for (ctx, dir) in [(forward, Direction::Original), (reverse, Direction::Reply)] {
            let verdict = self.policy.evaluate(&ctx);
            if verdict.action != Action::Allow {
                continue;
            }
            let rule = verdict
                .rule
                .and_then(|id| self.policy.rule(id))
                .map_or_else(|| Arc::from("default"), |r| r.name.clone());
            let tuple = FlowTuple {
                proto: packet.proto,
                src: ctx.src,
                sport: if dir == Direction::Original {
                    seg.sport
                } else {
                    seg.dport
                },
                dst: ctx.dst,
                dport: ctx.dport,
            };
            let mut flow = Flow::new(
                tuple,
                FlowState::Tcp(TcpTracker::picked_up(dir, seg)),
                FlowOrigin::Pickup(rule.clone()),
                verdict.inspect,
                now,
            );
            flow.account(dir, packet.len, now);
            let mut events = Vec::new();
            return match self.insert_flow(flow, None, &mut events) {
                Ok(_) => {
                    events.push(Event::FlowOpened {
                        flow: tuple,
                        rule: Some(rule),
                        alg: verdict.inspect,
                        via_pinhole: false,
                        pickup: true,
                    });
                    with_events(Decision::accept(Some(tuple)), events)
                }
                Err(reason) => with_events(Decision::drop(reason, None), events),
            };
        }
        Decision::drop(Reason::TcpNoHandshake, None)
    }

    // ---- UDP, ICMP echo, other protocols -----------------------------------------------------

    fn datagram(
        &mut self,
        now: Instant,
        info: &PacketInfo,
        packet: Packet,
        sport: u16,
        dport: u16,
    ) -> Decision {
        let key = FlowKey::new(packet.proto, (packet.src, sport), (packet.dst, dport));
        match self.flows.lookup(&key) {
            Some(handle) => self.datagram_existing(now, handle, packet, sport),
            None => self.open_flow(
                now,
                info,
                packet,
                sport,
                dport,
                FlowState::Datagram { replied: false },
            ),
        }
    }

    fn datagram_existing(
        &mut self,
        now: Instant,
        handle: FlowHandle,
        packet: Packet,
        sport: u16,
    ) -> Decision {
        let timeouts = &self.policy.timeouts;
        let Some(flow) = self.flows.get_mut(handle) else {
            return Decision::drop(Reason::FlowLimit, None);
        };
        let dir = flow.tuple.direction_of(packet.src, sport);
        if dir == Direction::Reply {
            flow.state = FlowState::Datagram { replied: true };
        }
        flow.account(dir, packet.len, now);
        let timeout = datagram_timeout(timeouts, flow.tuple.proto, &flow.state);
        let tuple = flow.tuple;
        self.flows.set_deadline(handle, now + timeout);
        Decision::accept(Some(tuple))
    }

    fn echo_request(
        &mut self,
        now: Instant,
        info: &PacketInfo,
        packet: Packet,
        id: u16,
    ) -> Decision {
        let key = FlowKey::new(packet.proto, (packet.src, id), (packet.dst, id));
        match self.flows.lookup(&key) {
            None => self.open_flow(
                now,
                info,
                packet,
                id,
                id,
                FlowState::Datagram { replied: false },
            ),
            Some(handle) => match self.flows.get(handle) {
                Some(flow) if flow.tuple.src == packet.src => {
                    self.datagram_existing(now, handle, packet, id)
                }
                other => Decision::drop(Reason::IcmpEchoWrongDirection, other.map(|f| f.tuple)),
            },
        }
    }

    fn echo_reply(&mut self, now: Instant, packet: Packet, id: u16) -> Decision {
        let key = FlowKey::new(packet.proto, (packet.src, id), (packet.dst, id));
        match self.flows.lookup(&key) {
            Some(handle)
                if self
                    .flows
                    .get(handle)
                    .is_some_and(|f| f.tuple.dst == packet.src) =>
            {
                self.datagram_existing(now, handle, packet, id)
            }
            _ => Decision::drop(Reason::IcmpNoRequest, None),
        }
    }

    /// An ICMP error passes only when it quotes a packet of a tracked flow, travels back to
    /// that packet's sender, and (for TCP) quotes a plausible sequence number.
    fn icmp_error(&mut self, packet: Packet, quoted: &[u8], v6: bool) -> Decision {
        let quote = match decode_quoted(quoted, v6) {
            Ok(quote) => quote,
            Err(reason) => return Decision::drop(reason, None),
        };
        let key = FlowKey::new(
            quote.proto,
            (quote.src, quote.sport),
            (quote.dst, quote.dport),
        );
        let Some(flow) = self.flows.lookup(&key).and_then(|h| self.flows.get(h)) else {
            return Decision::drop(Reason::IcmpErrorUntracked, None);
        };
        let tuple = flow.tuple;
        if packet.dst != quote.src {
            return Decision::drop(Reason::IcmpErrorMismatch, Some(tuple));
        }
        if let (FlowState::Tcp(tcp), Some(seq)) = (&flow.state, quote.tcp_seq) {
            let dir = tuple.direction_of(quote.src, quote.sport);
            if !tcp.seq_plausible(dir, seq) {
                return Decision::drop(Reason::IcmpErrorMismatch, Some(tuple));
            }
        }
        Decision::accept(Some(tuple))
    }

    /// ICMP messages that belong to no flow (router and neighbour discovery, ...): the rules
    /// decide packet by packet.
    fn stateless(&self, info: &PacketInfo, packet: Packet) -> Decision {
        let ctx = FlowContext {
            ingress: info.ingress,
            egress: info.egress,
            src: packet.src,
            dst: packet.dst,
            proto: packet.proto,
            dport: 0,
        };
        let verdict = self.policy.evaluate(&ctx);
        match verdict.action {
            Action::Allow => Decision::accept(None),
            Action::Deny if verdict.rule.is_some() => Decision::drop(Reason::PolicyDeny, None),
            Action::Deny => Decision::drop(Reason::DefaultDeny, None),
        }
    }

    // ---- new flows ---------------------------------------------------------------------------

    /// The first packet of a new flow: a pinhole admits it, or the rules decide.
    fn open_flow(
        &mut self,
        now: Instant,
        info: &PacketInfo,
        packet: Packet,
        sport: u16,
        dport: u16,
        state: FlowState,
    ) -> Decision {
        let tuple = FlowTuple {
            proto: packet.proto,
            src: packet.src,
            sport,
            dst: packet.dst,
            dport,
        };
        let mut events = Vec::new();
        let pinhole = self.pinholes.match_and_consume(
            packet.proto,
            packet.src,
            sport,
            packet.dst,
            dport,
            now,
        );
        let (mut flow, parent, rule) = if let Some(pinhole) = pinhole {
            self.counters.pinholes_used += 1;
            events.push(pinhole_event(PinholeAction::Use, &pinhole, Some(tuple)));
            let flow = Flow::new(
                tuple,
                state,
                FlowOrigin::Pinhole(pinhole.spec.alg),
                None,
                now,
            );
            (flow, pinhole.spec.parent.map(|p| p.handle), None)
        } else {
            let ctx = FlowContext {
                ingress: info.ingress,
                egress: info.egress,
                src: packet.src,
                dst: packet.dst,
                proto: packet.proto,
                dport,
            };
            let verdict = self.policy.evaluate(&ctx);
            let rule = verdict
                .rule
                .and_then(|id| self.policy.rule(id))
                .map(|r| r.name.clone());
            match (verdict.action, rule) {
                (Action::Deny, Some(_)) => return Decision::drop(Reason::PolicyDeny, None),
                (Action::Deny, None) => return Decision::drop(Reason::DefaultDeny, None),
                (Action::Allow, rule) => {
                    let name = rule.clone().unwrap_or_else(|| Arc::from("default"));
                    (
                        Flow::new(tuple, state, FlowOrigin::Rule(name), verdict.inspect, now),
                        None,
                        rule.or(Some(Arc::from("default"))),
                    )
                }
            }
        };
        flow.parent = parent;
        flow.account(Direction::Original, packet.len, now);
        let alg = flow.alg;
        let via_pinhole = matches!(flow.origin, FlowOrigin::Pinhole(_));
        match self.insert_flow(flow, parent, &mut events) {
            Ok(_) => {
                events.push(Event::FlowOpened {
                    flow: tuple,
                    rule,
                    alg,
                    via_pinhole,
                    pickup: false,
                });
                with_events(Decision::accept(Some(tuple)), events)
            }
            Err(reason) => with_events(Decision::drop(reason, None), events),
        }
    }

    fn insert_flow(
        &mut self,
        flow: Flow,
        parent: Option<FlowHandle>,
        events: &mut Vec<Event>,
    ) -> Result<FlowHandle, Reason> {
        let deadline = self.now + self.flow_timeout(&flow);
        let _ = parent;
        match self.flows.insert(flow, deadline) {
            Ok(inserted) => {
                let handle = inserted.handle;
                self.counters.flows_opened += 1;
                if let Some((old_handle, old)) = inserted.evicted {
                    self.counters.flows_evicted += 1;
                    self.flow_removed(old_handle, &old, CloseCause::Evicted, events);
                }
                Ok(handle)
            }
            Err(_) => Err(Reason::FlowLimit),
        }
    }

    fn flow_timeout(&self, flow: &Flow) -> Duration {
        match &flow.state {
            FlowState::Tcp(tcp) => tcp_timeout(&self.policy.timeouts, tcp.state()),
            state @ FlowState::Datagram { .. } => {
                datagram_timeout(&self.policy.timeouts, flow.tuple.proto, state)
            }
        }
    }

    /// Bookkeeping when a flow leaves the table: its pending pinholes close with it.
    fn flow_removed(
        &mut self,
        handle: FlowHandle,
        flow: &Flow,
        cause: CloseCause,
        events: &mut Vec<Event>,
    ) {
        self.counters.flows_closed += 1;
        let mut orphans: Vec<Pinhole> = Vec::new();
        self.pinholes.close_with_parent(handle, &mut orphans);
        for pinhole in orphans {
            self.counters.pinholes_closed += 1;
            events.push(pinhole_event(PinholeAction::Close, &pinhole, None));
        }
        events.push(Event::FlowClosed {
            flow: flow.tuple,
            cause,
            packets: flow.total_packets(),
            bytes: flow.total_bytes(),
        });
    }
}

fn tcp_timeout(timeouts: &crate::policy::Timeouts, state: TcpState) -> Duration {
    match state {
        TcpState::SynSent | TcpState::SynReceived => timeouts.tcp_handshake,
        TcpState::Established => timeouts.tcp_established,
        TcpState::FinWait => timeouts.tcp_fin_wait,
        TcpState::Closing => timeouts.tcp_closing,
        TcpState::TimeWait => timeouts.tcp_time_wait,
        TcpState::Closed => timeouts.tcp_closed,
    }
}

fn datagram_timeout(
    timeouts: &crate::policy::Timeouts,
    ip_proto: u8,
    state: &FlowState,
) -> Duration {
    let replied = matches!(state, FlowState::Datagram { replied: true });
    match ip_proto {
        proto::UDP if replied => timeouts.udp_replied,
        proto::UDP => timeouts.udp_unreplied,
        proto::ICMP | proto::ICMPV6 => timeouts.icmp,
        _ => timeouts.other,
    }
}

fn dropped(handle: u64, reason: Reason, flow: Option<FlowTuple>) -> Released {
    Released {
        handle,
        verdict: Verdict::Drop,
        reason: Some(reason),
        flow,
    }
}

fn pinhole_event(action: PinholeAction, pinhole: &Pinhole, child: Option<FlowTuple>) -> Event {
    Event::Pinhole {
        action,
        pinhole: PinholeInfo::new(pinhole),
        child,
    }
}

fn with_events(mut decision: Decision, mut events: Vec<Event>) -> Decision {
    if !events.is_empty() {
        events.append(&mut decision.events);
        decision.events = events;
    }
    decision
}
