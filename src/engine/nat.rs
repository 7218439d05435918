//! What the kernel's connection tracking says about a packet (`PacketInfo::kernel`): the
//! acknowledgement numbers the kernel shifted, and the translation of inspected flows.
//! See [`crate::conntrack::kernel`] for the coordinate system.

use crate::alg::AlgState;
use crate::conntrack::{FlowKey, FlowTuple, KernelConn};
use crate::event::Event;
use crate::wire::TcpSegment;

use super::Engine;

/// `seg` with its acknowledgement number in the other side's own sequence space, when the
/// kernel's payload rewrites (`nf_nat_ftp`) shifted the other direction; `None` when nothing
/// changes.
pub(super) fn unshifted<'a>(kernel: &KernelConn, seg: &TcpSegment<'a>) -> Option<TcpSegment<'a>> {
    if !seg.flags.ack() {
        return None;
    }
    let ack = kernel.unshifted_ack(seg.ack);
    (ack != seg.ack).then(|| TcpSegment { ack, ..seg.clone() })
}

impl Engine {
    /// Records how the kernel translates the flow `tuple` (after its packet was accepted):
    /// only for inspected flows (the adapter reads the kernel's entries for the inspected
    /// ports only), once, with an event.
    /// An FTP control connection's inspector learns the server's address as the client sees
    /// it (a 227 naming it is the server's own, translated).
    pub(super) fn learn_translation(
        &mut self,
        tuple: &FlowTuple,
        kernel: &KernelConn,
        events: &mut Vec<Event>,
    ) {
        let key = FlowKey::new(
            tuple.proto,
            (tuple.src, tuple.sport),
            (tuple.dst, tuple.dport),
        );
        let Some(flow) = self.flows.lookup(&key).and_then(|h| self.flows.get_mut(h)) else {
            return;
        };
        if flow.alg.is_none() {
            return;
        }
        let own = flow.tuple;
        let Some(nat) = kernel.translation((own.src, own.sport), (own.dst, own.dport)) else {
            return;
        };
        if flow.nat.as_deref() == Some(&nat) {
            return;
        }
        flow.nat = Some(Box::new(nat));
        if let Some(AlgState::Ftp(ftp)) = &mut flow.alg {
            ftp.set_server_seen_by_client(nat.server.0);
        }
        self.counters.flows_translated += 1;
        events.push(Event::Translated { flow: own, nat });
    }
}
