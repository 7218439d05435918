//! What a worker reports about itself to the control socket: counters, sessions, pinholes.
//! These are the JSON shapes of `pinhole stats|sessions|pinholes --json` (a public contract:
//! add fields, never rename them).

use std::net::IpAddr;

use serde::Serialize;

use crate::conntrack::key::{ProtoName, proto_name};
use crate::conntrack::{Flow, FlowOrigin, FlowTuple, Pinhole};
use crate::counters::Counters;
use crate::engine::Engine;
use crate::time::Instant;

/// Counters of one queue's netlink socket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounters {
    /// Packets received from the kernel.
    pub received: u64,
    /// GSO super-packets among them.
    pub gso: u64,
    /// Packets whose payload was cut to the copy range.
    pub truncated: u64,
    /// Times the kernel reported `ENOBUFS`: it dropped (or, fail-open, accepted) packets
    /// because the socket buffer was full.
    pub enobufs: u64,
    /// Verdicts sent.
    pub verdicts: u64,
    /// Verdict batches that failed to send.
    pub verdict_errors: u64,
    /// Accepts that asked the kernel to carry the connection from now on.
    pub offload_verdicts: u64,
    /// Rejects carried out by the kernel's REJECT rule.
    pub reject_verdicts: u64,
    /// Accepts sent with a rewritten payload (refused FTP commands, defanged).
    pub rewrite_verdicts: u64,
    /// Packets that should have been rewritten but could not be (not a plain TCP segment):
    /// dropped instead, so a refused command never reaches the server intact.
    pub rewrite_errors: u64,
    /// Packets that came back with pinhole's reject mark: the kernel rules lack the mark rules.
    pub mark_loops: u64,
    /// Packets held for reassembly right now.
    pub held: u64,
    /// Receive errors other than `ENOBUFS`.
    pub recv_errors: u64,
    /// Connection tracking entries asked for over ctnetlink (kernels that do not attach them
    /// to queued packets; see `daemon::kernel_ct`).
    pub conntrack_queries: u64,
    /// Such queries that failed (other than "no such entry").
    pub conntrack_query_errors: u64,
    /// The kernel's destroy events of offloaded connections read (every worker reads every
    /// event; the one tracking the flow ends it).
    pub conntrack_destroy_events: u64,
    /// Times the destroy-event socket overflowed (`ENOBUFS`): events were lost.
    pub conntrack_event_overruns: u64,
}

impl QueueCounters {
    /// Adds `other` into `self` (destructured, so a new counter cannot be forgotten here).
    pub fn add(&mut self, other: &QueueCounters) {
        let QueueCounters {
            received,
            gso,
            truncated,
            enobufs,
            verdicts,
            verdict_errors,
            offload_verdicts,
            reject_verdicts,
            rewrite_verdicts,
            rewrite_errors,
            mark_loops,
            held,
            recv_errors,
            conntrack_queries,
            conntrack_query_errors,
            conntrack_destroy_events,
            conntrack_event_overruns,
        } = other;
        self.received += received;
        self.gso += gso;
        self.truncated += truncated;
        self.enobufs += enobufs;
        self.verdicts += verdicts;
        self.verdict_errors += verdict_errors;
        self.offload_verdicts += offload_verdicts;
        self.reject_verdicts += reject_verdicts;
        self.rewrite_verdicts += rewrite_verdicts;
        self.rewrite_errors += rewrite_errors;
        self.mark_loops += mark_loops;
        self.held += held;
        self.recv_errors += recv_errors;
        self.conntrack_queries += conntrack_queries;
        self.conntrack_query_errors += conntrack_query_errors;
        self.conntrack_destroy_events += conntrack_destroy_events;
        self.conntrack_event_overruns += conntrack_event_overruns;
    }
}

/// One worker's counters and table sizes.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerStats {
    /// The queue it serves.
    pub queue: u16,
    /// Its engine's counters.
    pub engine: Counters,
    /// Its socket's counters.
    pub queue_counters: QueueCounters,
    /// Flows tracked now.
    pub flows: usize,
    /// Pinholes open now.
    pub pinholes: usize,
}

/// One tracked flow, as `pinhole sessions` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct SessionRow {
    /// The worker (queue) tracking it.
    pub worker: u16,
    /// IP protocol.
    pub proto: ProtoName,
    /// Initiator address.
    pub src: IpAddr,
    /// Initiator port (ICMP: echo id).
    pub sport: u16,
    /// Responder address.
    pub dst: IpAddr,
    /// Responder port.
    pub dport: u16,
    /// Protocol state (`established`, `replied`, ...).
    pub state: &'static str,
    /// The inspector following it, if any.
    pub alg: Option<&'static str>,
    /// What admitted it: `rule NAME`, `pinhole ALG`, `pickup NAME`.
    pub origin: String,
    /// The control flow whose pinhole admitted it.
    pub parent: Option<FlowTuple>,
    /// Carried by the kernel (offload mode).
    pub offloaded: bool,
    /// Seconds since its first packet.
    pub age_secs: u64,
    /// Seconds since its last packet (for an offloaded flow: since it was offloaded, or its
    /// last FIN).
    pub idle_secs: u64,
    /// Packets both ways (as seen by pinhole).
    pub packets: u64,
    /// IP bytes both ways (as seen by pinhole).
    pub bytes: u64,
    /// How the kernel translates it (NAT): the addresses its ends use for each other. Absent
    /// when it is not translated or not learned (pinhole learns it for inspected flows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat: Option<crate::conntrack::Translation>,
}

/// One open pinhole, as `pinhole pinholes` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PinholeRow {
    /// The worker (queue) holding it.
    pub worker: u16,
    /// Its id (per worker).
    pub id: u64,
    /// The inspector that opened it.
    pub alg: &'static str,
    /// IP protocol of the expected connection.
    pub proto: ProtoName,
    /// The only peer allowed to connect.
    pub src: IpAddr,
    /// Its port; null for any port (or a range, in `sport_range`).
    pub sport: Option<u16>,
    /// Allowed source port range, when there is one.
    pub sport_range: Option<[u16; 2]>,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
    /// The control flow that negotiated it.
    pub parent: Option<FlowTuple>,
    /// How the kernel translates that control flow (NAT), when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_nat: Option<crate::conntrack::Translation>,
    /// Seconds until it closes unused.
    pub expires_in_secs: u64,
}

impl WorkerStats {
    /// The counters and table sizes of `engine`, serving `queue` with `queue_counters`.
    pub fn of(queue: u16, engine: &Engine, queue_counters: QueueCounters) -> Self {
        WorkerStats {
            queue,
            engine: engine.counters().clone(),
            queue_counters,
            flows: engine.flows().len(),
            pinholes: engine.pinholes().len(),
        }
    }
}

fn secs_between(later: Instant, earlier: Instant) -> u64 {
    later.saturating_since(earlier).as_secs()
}

/// Most rows one worker lists: building them stops its packets, so a table of a million
/// flows is not listed whole (`pinhole stats` has the counts).
pub const MAX_ROWS: usize = 20_000;

/// The sessions of `engine` at `now` (at most [`MAX_ROWS`]), labelled with `worker`.
pub fn sessions(engine: &Engine, worker: u16, now: Instant) -> Vec<SessionRow> {
    let flows = engine.flows();
    flows
        .iter()
        .take(MAX_ROWS)
        .map(|(_, flow)| session_row(flow, worker, now, |h| flows.get(h).map(|p| p.tuple)))
        .collect()
}

fn session_row(
    flow: &Flow,
    worker: u16,
    now: Instant,
    parent_of: impl Fn(crate::conntrack::FlowHandle) -> Option<FlowTuple>,
) -> SessionRow {
    let t = flow.tuple;
    SessionRow {
        worker,
        proto: proto_name(t.proto),
        src: t.src,
        sport: t.sport,
        dst: t.dst,
        dport: t.dport,
        state: flow.state.name(),
        alg: flow.alg_kind().map(crate::alg::Alg::as_str),
        origin: match &flow.origin {
            FlowOrigin::Rule(name) => format!("rule {name}"),
            FlowOrigin::Pinhole(alg) => format!("pinhole {alg}"),
            FlowOrigin::Pickup(name) => format!("pickup {name}"),
            FlowOrigin::TakenOver(Some(name)) => format!("takeover {name}"),
            FlowOrigin::TakenOver(None) => "takeover".to_owned(),
        },
        parent: flow.parent.and_then(parent_of),
        offloaded: flow.offloaded,
        age_secs: secs_between(now, flow.created),
        idle_secs: secs_between(now, flow.last_seen),
        packets: flow.total_packets(),
        bytes: flow.total_bytes(),
        nat: flow.nat.as_deref().copied(),
    }
}

/// The open pinholes of `engine` at `now` (at most [`MAX_ROWS`]), labelled with `worker`.
pub fn pinholes(engine: &Engine, worker: u16, now: Instant) -> Vec<PinholeRow> {
    engine
        .pinholes()
        .iter()
        .take(MAX_ROWS)
        .map(|p| {
            let parent_nat = p
                .spec
                .parent
                .and_then(|parent| engine.flows().get(parent.handle))
                .and_then(|flow| flow.nat.as_deref().copied());
            pinhole_row(p, worker, now, parent_nat)
        })
        .collect()
}

fn pinhole_row(
    pinhole: &Pinhole,
    worker: u16,
    now: Instant,
    parent_nat: Option<crate::conntrack::Translation>,
) -> PinholeRow {
    let o = pinhole.spec.opening;
    PinholeRow {
        worker,
        id: pinhole.id.0,
        alg: o.alg.as_str(),
        proto: proto_name(o.proto),
        src: o.src,
        sport: o.sport.exact(),
        sport_range: o.sport.range(),
        dst: o.dst,
        dport: o.dport,
        parent: pinhole.spec.parent.map(|p| p.flow),
        parent_nat,
        expires_in_secs: secs_between(pinhole.spec.expires, now),
    }
}
