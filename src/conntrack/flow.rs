//! One tracked flow.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::alg::{Alg, AlgState};
use crate::conntrack::key::{Direction, FlowTuple};
use crate::conntrack::table::FlowHandle;
use crate::conntrack::tcp::TcpTracker;
use crate::time::Instant;

/// Protocol state of a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlowState {
    /// TCP, with its sequence-window tracker.
    Tcp(TcpTracker),
    /// UDP, ICMP echo, or another protocol: request/reply tracking only.
    Datagram {
        /// The responder answered.
        replied: bool,
    },
}

impl FlowState {
    /// True while the flow is not yet confirmed by the responder (TCP handshake incomplete,
    /// datagram unanswered). Such flows are evicted first when the table is full.
    pub fn is_embryonic(&self) -> bool {
        match self {
            FlowState::Tcp(tcp) => tcp.is_embryonic(),
            FlowState::Datagram { replied } => !replied,
        }
    }

    /// Short lower-case state name for tables and logs.
    pub fn name(&self) -> &'static str {
        match self {
            FlowState::Tcp(tcp) => tcp.state().as_str(),
            FlowState::Datagram { replied: true } => "replied",
            FlowState::Datagram { replied: false } => "unreplied",
        }
    }
}

/// What admitted a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlowOrigin {
    /// A policy rule (by name) allowed its first packet.
    Rule(Arc<str>),
    /// A pinhole opened by this inspector admitted it.
    Pinhole(Alg),
    /// Picked up mid-stream (`[tcp] midstream_pickup`), allowed by this rule.
    Pickup(Arc<str>),
    /// Taken over from the kernel's entry of a connection a pinhole admitted, on the router
    /// of a failover pair that did not see it open (see [`crate::PacketInfo::synced`]); the
    /// rule that allows it, if one does (the rules allow a control connection, not the data
    /// connections its pinholes admitted).
    TakenOver(Option<Arc<str>>),
}

impl FlowOrigin {
    /// Whether a flow of this origin counts against its initiator's
    /// `limits.max_flows_per_source`: flows the rules admitted (or picked up) do; flows a
    /// pinhole admitted (negotiated by an inspector, capped by its own quotas) do not.
    pub fn counts_against_source(&self) -> bool {
        matches!(self, FlowOrigin::Rule(_) | FlowOrigin::Pickup(_))
    }
}

/// A tracked flow.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flow {
    /// Who opened it, to whom.
    #[serde(with = "crate::conntrack::key::tuple_fields")]
    pub tuple: FlowTuple,
    /// Protocol state.
    pub state: FlowState,
    /// What admitted it.
    pub origin: FlowOrigin,
    /// The inspector following it and its state, if any.
    pub alg: Option<AlgState>,
    /// The control flow whose pinhole admitted this one.
    pub parent: Option<FlowHandle>,
    /// When its first packet was seen.
    pub created: Instant,
    /// When its last packet was seen.
    pub last_seen: Instant,
    /// Packets per direction (original, reply).
    pub packets: [u64; 2],
    /// IP bytes per direction (original, reply).
    pub bytes: [u64; 2],
    /// Handed to the kernel (offload mode): only its FIN and RST segments are still seen.
    pub offloaded: bool,
    /// How the kernel translates it, once a packet brought that from the kernel's conntrack
    /// (see [`crate::conntrack::kernel`]). Not saved in the state file: the next packet brings
    /// it again.
    #[serde(skip)]
    pub nat: Option<Box<crate::conntrack::kernel::Translation>>,
}

impl Flow {
    /// A new flow whose first packet is seen at `now`.
    pub fn new(
        tuple: FlowTuple,
        state: FlowState,
        origin: FlowOrigin,
        alg: Option<AlgState>,
        now: Instant,
    ) -> Self {
        Flow {
            tuple,
            state,
            origin,
            alg,
            parent: None,
            created: now,
            last_seen: now,
            packets: [0; 2],
            bytes: [0; 2],
            offloaded: false,
            nat: None,
        }
    }

    /// Counts a packet of `len` IP bytes in direction `dir` seen at `now`.
    pub fn account(&mut self, dir: Direction, len: usize, now: Instant) {
        let i = dir.index();
        self.packets[i] += 1;
        self.bytes[i] += len as u64;
        if now > self.last_seen {
            self.last_seen = now;
        }
    }

    /// The inspector following the flow.
    pub fn alg_kind(&self) -> Option<Alg> {
        self.alg.as_ref().map(AlgState::alg)
    }

    /// Total packets both ways.
    pub fn total_packets(&self) -> u64 {
        self.packets[0] + self.packets[1]
    }

    /// Total bytes both ways.
    pub fn total_bytes(&self) -> u64 {
        self.bytes[0] + self.bytes[1]
    }
}
