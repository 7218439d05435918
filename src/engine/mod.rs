//! The sans-IO engine: `process(now, packet) -> Decision`, `next_timeout()`, `expire(now)`.
//!
//! It never reads a clock, a socket or a file. Adapters (replay, NFQUEUE, capture) own the
//! I/O and pass the time in; the same capture therefore replays identically every time. Time
//! that goes backwards (out-of-order capture timestamps) is clamped to the latest seen.
//!
//! A packet goes: link layer → IP (→ reassembly if a fragment) → transport → the flow it
//! belongs to (state checks, then its inspector) or, for a new flow, a pinhole or the rules.
//! The per-protocol paths live in [`tcp`] and [`datagram`]; flow creation and removal (with
//! pinholes and child flows) in [`lifecycle`].

mod datagram;
mod ftps_range;
mod lifecycle;
mod nat;
mod offload;
mod state;

pub use state::{EngineState, RestoreSummary, SavedFlow};
mod tcp;
mod tftp_tid;

use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashMap;

use crate::conntrack::{
    FlowHandle, FlowState, FlowTable, FlowTuple, KernelConn, OpenOutcome, Pinhole, PinholeError,
    PinholeSpec, PinholeTable, TcpState,
};
use crate::counters::{Counters, PinholeOutcome};
use crate::decision::{Decision, Expired, Reason, Released, Verdict};
use crate::defrag::{DefragLimits, Defragmenter, Outcome};
use crate::event::{CloseCause, Event, PinholeAction, PinholeInfo};
use crate::policy::{IfaceName, Policy};
use crate::time::Instant;
use crate::wire::transport;
use crate::wire::{IcmpKind, IpPacket, LinkType, Transport, ip, link};

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
    /// Check TCP/UDP checksums of the packets that change state (SYN, FIN, RST, inspected
    /// payloads). Off when the checksums cannot be right: captured on the sending host with
    /// offload, or handed over by the kernel before it computed them (NFQUEUE with GSO).
    pub verify_checksums: bool,
    /// The kernel marks the packet as belonging to a connection this engine offloaded earlier
    /// (offload mode: the connection mark it set came back). Only such a connection's FIN and
    /// RST segments still reach the engine.
    pub offloaded: bool,
    /// What the kernel's connection tracking knows about the packet's connection: its
    /// translation and TCP sequence adjustments (inline only, on a router that translates).
    pub kernel: Option<KernelConn>,
    /// The kernel's connection tracking already knows this packet's connection as admitted
    /// by a pinhole (on a router of a failover pair, `run --ha`: the rules set a packet mark
    /// when the kernel's entry carries the admitted connection mark and existed before this
    /// packet, or was created from an expectation of such a connection; see
    /// [`crate::io::iptables::HaMarks`]). A flow the engine does not track is then taken over
    /// instead of refused: conntrackd carried it from the router that admitted it.
    pub synced: bool,
}

impl PacketInfo {
    /// A packet with no interface information, whose checksums are verified.
    pub fn new(handle: u64, link: LinkType) -> Self {
        PacketInfo {
            handle,
            link,
            ingress: None,
            egress: None,
            verify_checksums: true,
            offloaded: false,
            kernel: None,
            synced: false,
        }
    }

    /// What the rules look at for a new flow `tuple` whose first packet this is.
    pub fn flow_context(&self, tuple: &FlowTuple) -> crate::policy::FlowContext {
        crate::policy::FlowContext {
            ingress: self.ingress,
            egress: self.egress,
            src: tuple.src,
            dst: tuple.dst,
            proto: tuple.proto,
            dport: tuple.dport,
        }
    }

    /// The same packet as its reply would arrive: the interfaces swapped.
    #[must_use]
    pub fn reversed(&self) -> PacketInfo {
        PacketInfo {
            ingress: self.egress,
            egress: self.ingress,
            ..*self
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
    /// Client ends (address, port) of live TFTP transfers, to their transfer flows.
    tftp_transfers: HashMap<(IpAddr, u16), FlowHandle, foldhash::fast::RandomState>,
    /// FTPS control connections whose passive range is open, by (client, server).
    ftps_sessions: HashMap<(IpAddr, IpAddr), Vec<FlowHandle>, foldhash::fast::RandomState>,
    /// Offload mode: flows that need no more inspection are handed to the kernel.
    offload: bool,
    /// Bytes held by all FTP inspectors (see `limits.max_stream_bytes`).
    stream_bytes: usize,
}

fn defrag_limits(policy: &Policy) -> DefragLimits {
    DefragLimits {
        max_datagrams: policy.limits.max_fragment_datagrams,
        max_bytes: policy.limits.max_fragment_bytes,
        max_fragments: policy.limits.max_fragments_per_datagram,
        max_held: policy.limits.max_fragments_held,
        timeout: policy.timeouts.fragment,
    }
}

impl Engine {
    /// An empty engine enforcing `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        let mut pinholes = PinholeTable::new(policy.limits.max_pinholes);
        pinholes.set_per_client(policy.limits.max_pinholes_per_client);
        Engine {
            flows: FlowTable::new(policy.limits.max_flows),
            pinholes,
            defrag: Defragmenter::new(defrag_limits(&policy)),
            counters: Counters::default(),
            now: Instant::ZERO,
            tftp_transfers: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            ftps_sessions: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            offload: false,
            stream_bytes: 0,
            policy,
        }
    }

    /// Replaces the policy (a reload). Tracked flows and pinholes stay, and flows keep the
    /// inspector options they started with; new limits apply at once (a smaller flow table
    /// evicts down to its new size, reported in the returned events), new timeouts from each
    /// flow's next packet.
    pub fn set_policy(&mut self, policy: Arc<Policy>) -> Vec<Event> {
        let mut events = Vec::new();
        for (handle, flow) in self.flows.set_capacity(policy.limits.max_flows) {
            self.counters.flows_evicted += 1;
            self.flow_removed(handle, &flow, CloseCause::Evicted, &mut events);
        }
        self.pinholes.set_capacity(policy.limits.max_pinholes);
        self.pinholes
            .set_per_client(policy.limits.max_pinholes_per_client);
        self.defrag.set_limits(defrag_limits(&policy));
        self.policy = policy;
        events
    }

    /// The policy in force.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Adds to the transfer byte counters what an adapter learned of a transfer pinhole did
    /// not count itself (an offloaded data connection, from the kernel's accounting).
    pub fn count_kernel_transfer_bytes(&mut self, transfer: &crate::event::Transfer) {
        self.counters.transfer_bytes(transfer);
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The flow table (read-only), for status displays.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// Bytes all FTP inspectors hold (under `limits.max_stream_bytes`).
    pub fn stream_bytes(&self) -> usize {
        self.stream_bytes
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
        let mut decision = decision;
        if let Some(kernel) = &info.kernel
            && decision.verdict == Verdict::Accept
            && let Some(tuple) = decision.flow
        {
            self.learn_translation(&tuple, kernel, &mut decision.events);
        }
        self.count(&decision);
        decision
    }

    fn count(&mut self, decision: &Decision) {
        self.counters.verdict(decision.verdict, decision.reason);
        for released in &decision.released {
            self.counters.verdict(released.verdict, released.reason);
        }
        for event in &decision.events {
            if let Event::Violation {
                alg,
                reason,
                flow,
                detail,
            } = event
            {
                self.counters.violation(*alg, *reason);
                let flow = flow.map(|f| f.to_string()).unwrap_or_default();
                tracing::info!(%alg, %reason, %flow, detail = detail.as_str(), "violation");
            }
        }
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
                .push(dropped(handle, Reason::FragmentTimeout));
        }
        let mut pinholes = Vec::new();
        self.pinholes.expire(now, &mut pinholes);
        for pinhole in pinholes {
            self.counters
                .pinhole(pinhole.spec.opening.alg, PinholeOutcome::Expired);
            expired.events.push(pinhole_event(
                &self.flows,
                PinholeAction::Expire,
                &pinhole,
                None,
            ));
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
            .map(|handle| dropped(handle, Reason::FragmentTimeout))
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
        let alg = spec.opening.alg;
        match self.pinholes.open(spec, per_parent, now) {
            Ok(outcome) => {
                if let Some(evicted) = &outcome.evicted {
                    self.counters.pinhole(alg, PinholeOutcome::Closed);
                    events.push(pinhole_event(
                        &self.flows,
                        PinholeAction::Close,
                        evicted,
                        None,
                    ));
                }
                if !outcome.refreshed {
                    self.counters.pinhole(alg, PinholeOutcome::Opened);
                    if let Some(pinhole) = self.pinholes.get(outcome.id) {
                        events.push(pinhole_event(
                            &self.flows,
                            PinholeAction::Open,
                            pinhole,
                            None,
                        ));
                    }
                }
                Ok(outcome)
            }
            Err(err) => {
                self.counters.pinhole(alg, PinholeOutcome::Refused);
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
            .map(|handle| dropped(handle, Reason::FragmentEvicted))
            .collect();
        let mut decision = match result.outcome {
            Outcome::Held => Decision::held(),
            Outcome::Dropped {
                reason,
                released: others,
            } => {
                released.extend(others.into_iter().map(|handle| dropped(handle, reason)));
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
            Transport::Udp(udp) => self.datagram(
                now,
                info,
                packet,
                (udp.sport, udp.dport),
                Some((udp.bytes, udp.payload)),
            ),
            Transport::Other => self.datagram(now, info, packet, (0, 0), None),
            Transport::Icmp(icmp) => match icmp.kind {
                IcmpKind::EchoRequest { id } => self.echo_request(now, info, packet, id),
                IcmpKind::EchoReply { id } => self.echo_reply(now, packet, id),
                IcmpKind::Error { quoted } => self.icmp_error(packet, quoted, icmp.v6),
                IcmpKind::Informational => self.stateless(info, packet),
            },
        }
    }
}

fn dropped(handle: u64, reason: Reason) -> Released {
    Released {
        handle,
        verdict: Verdict::Drop,
        reason: Some(reason),
        flow: None,
    }
}

/// The event for `pinhole`, with the translation of the flow that negotiated it.
fn pinhole_event(
    flows: &FlowTable,
    action: PinholeAction,
    pinhole: &Pinhole,
    child: Option<FlowTuple>,
) -> Event {
    let parent_nat = pinhole
        .spec
        .parent
        .as_ref()
        .and_then(|parent| flows.get(parent.handle))
        .and_then(|flow| flow.nat.as_deref().copied());
    Event::Pinhole {
        action,
        pinhole: PinholeInfo::new(pinhole, parent_nat),
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
