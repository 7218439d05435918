//! Offload mode: flows that need no more inspection are handed to the kernel.
//!
//! On the router, the NFQUEUE adapter marks such a flow's connection (a connmark), and the
//! kernel then forwards its packets without queueing them, to the last one. Only new
//! connections and inspected flows (FTP control connections, TFTP requests and transfers)
//! still reach the engine as packets. The end of an offloaded connection reaches it as data:
//! the adapter reads the kernel's conntrack destroy event and calls [`Engine::kernel_ended`],
//! so the flow leaves the table and its place among its parent's children. With
//! `--offload-ends segments` (kernels without conntrack events) the kernel queues the FIN and
//! RST segments of offloaded connections instead, marked, and `Engine::offloaded_segment`
//! follows them. An offloaded flow whose end is never learned (an event lost, a FIN lost
//! before the queue) leaves the table when its idle timeout runs out, counted from the moment
//! it was offloaded.
//!
//! A flow qualifies once it is confirmed (TCP handshake complete, or a datagram answered),
//! has no inspector, and is not a data connection that must close with its FTP control
//! connection (`data_outlives_control = false`): the kernel could not be told to cut it.
//! A TCP data connection a pinhole admitted qualifies at its SYN already: the pinhole was
//! negotiated for exactly that tuple and is spent, and the kernel's connection tracking
//! checks the handshake and the windows from there (`TcpTracker::hand_over`). That saves the
//! queue round trips of the SYN-ACK and the handshake's last ACK on every data connection.

use crate::alg::AlgState;
use crate::conntrack::{FlowHandle, FlowKey, FlowOrigin, FlowState, FlowTuple, TcpState};
use crate::decision::Decision;
use crate::event::{CloseCause, Event};
use crate::time::Instant;
use crate::wire::TcpSegment;

use super::tcp::tcp_timeout;
use super::{Engine, Packet};

impl Engine {
    /// Turns offload mode on or off. Off (the default, and always in replay), every packet is
    /// judged here; on, [`Decision::offload`] says when a flow may go to the kernel.
    pub fn set_offload(&mut self, enabled: bool) {
        self.offload = enabled;
    }

    /// Marks the flow of an accepted packet as offloaded when it qualifies.
    pub(super) fn maybe_offload(&mut self, handle: FlowHandle, decision: &mut Decision) {
        if !self.offload || !decision.is_accept() {
            return;
        }
        let Some(flow) = self.flows.get(handle) else {
            return;
        };
        // A data connection a pinhole admitted goes at its SYN: its tuple was negotiated
        // exactly and the pinhole is spent, so the kernel's connection tracking can check the
        // handshake (a SYN flood cannot use this: every SYN needs its own negotiation).
        let opening_child = matches!(flow.origin, FlowOrigin::Pinhole(_))
            && matches!(&flow.state, FlowState::Tcp(tcp) if tcp.state() == TcpState::SynSent);
        let confirmed = match &flow.state {
            FlowState::Tcp(tcp) => tcp.state() == TcpState::Established && !tcp.is_embryonic(),
            FlowState::Datagram { replied } => *replied,
        };
        if flow.offloaded || flow.alg.is_some() || !(confirmed || opening_child) {
            return;
        }
        if self.is_live_range_child(handle, flow.parent) {
            return;
        }
        let parent_lets_go = flow.parent.is_none_or(|parent| {
            match self.flows.get(parent).and_then(|p| p.alg.as_ref()) {
                Some(AlgState::Ftp(ftp)) => ftp.options().data_outlives_control,
                _ => true,
            }
        });
        if !parent_lets_go {
            return;
        }
        let timeouts = &self.policy.timeouts;
        let Some(flow) = self.flows.get_mut(handle) else {
            return;
        };
        flow.offloaded = true;
        self.counters.flows_offloaded += 1;
        decision.offload = true;
        if opening_child && let FlowState::Tcp(tracker) = &mut flow.state {
            tracker.hand_over();
            let timeout = tcp_timeout(timeouts, tracker);
            self.flows.set_deadline(handle, self.now + timeout);
        }
    }

    /// The kernel's connection tracking removed the connection `tuple` (either direction),
    /// which ended as `cause` says (a destroy event, read by the adapter). An offloaded flow
    /// of that connection ends here; every other flow is left alone (the engine follows its
    /// packets itself). Returns the events of the removal: nothing when no offloaded flow had
    /// that tuple.
    pub fn kernel_ended(
        &mut self,
        now: Instant,
        tuple: &FlowTuple,
        cause: CloseCause,
    ) -> Vec<Event> {
        let _ = self.clamp(now);
        let mut events = Vec::new();
        let Some(handle) = self.flows.lookup(&tuple.key()) else {
            return events;
        };
        if !self.flows.get(handle).is_some_and(|f| f.offloaded) {
            return events;
        }
        if let Some(flow) = self.flows.remove(handle) {
            self.counters.flows_ended_in_kernel += 1;
            self.flow_removed(handle, &flow, cause, &mut events);
        }
        events
    }

    /// A segment the kernel says belongs to an offloaded connection (a FIN or a RST). `None`
    /// for a SYN, and when the engine tracks that tuple as a flow it did not offload (a new
    /// connection reused the tuple): then the segment goes the normal way.
    pub(super) fn offloaded_segment(
        &mut self,
        now: Instant,
        packet: Packet,
        seg: &TcpSegment<'_>,
    ) -> Option<Decision> {
        if seg.flags.syn() {
            // A SYN on an offloaded connection's tuple (a retransmitted SYN-ACK, a new
            // connection after TIME-WAIT, an attack) is judged the normal way.
            return None;
        }
        let key = FlowKey::new(
            packet.proto,
            (packet.src, seg.sport),
            (packet.dst, seg.dport),
        );
        let Some(handle) = self.flows.lookup(&key) else {
            self.counters.offloaded_untracked += 1;
            return Some(Decision::accept(None));
        };
        let timeouts = &self.policy.timeouts;
        let flow = self.flows.get_mut(handle)?;
        if !flow.offloaded {
            return None;
        }
        let tuple = flow.tuple;
        let dir = tuple.direction_of(packet.src, seg.sport);
        let FlowState::Tcp(tracker) = &mut flow.state else {
            return Some(Decision::accept(Some(tuple)));
        };
        tracker.on_offloaded_segment(dir, seg);
        let timeout = tcp_timeout(timeouts, tracker);
        flow.account(dir, packet.len, now);
        self.flows.set_deadline(handle, now + timeout);
        Some(Decision::accept(Some(tuple)))
    }
}
