//! Flows coming and going: a new flow through a pinhole or the rules, insertion under the
//! cap, removal with its pending pinholes and (by policy) its child flows.

use std::sync::Arc;
use std::time::Duration;

use crate::alg::AlgState;
use crate::conntrack::{
    Direction, Flow, FlowHandle, FlowOrigin, FlowState, FlowTuple, Pinhole, PinholeMatch,
};
use crate::decision::{Decision, Reason};
use crate::event::{CloseCause, Event, PinholeAction};
use crate::policy::{Action, FlowContext};
use crate::time::Instant;

use super::datagram::datagram_timeout;
use super::tcp::tcp_timeout;
use super::{Engine, Packet, PacketInfo, pinhole_event, with_events};

impl Engine {
    /// The first packet of a new flow: a pinhole admits it, or the rules decide.
    pub(super) fn open_flow(
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
        let found = self.pinholes.match_and_consume(
            packet.proto,
            packet.src,
            sport,
            packet.dst,
            dport,
            now,
        );
        let wrong_peer = found == PinholeMatch::WrongPeer;
        // The inspector the rule attaches (named in the event even when it keeps no state).
        let (flow, pinhole, rule, alg) = if let PinholeMatch::Hit(pinhole) = found {
            let flow = Flow::new(
                tuple,
                state,
                FlowOrigin::Pinhole(pinhole.spec.alg),
                None,
                now,
            );
            (flow, Some(pinhole), None, None)
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
                // Someone other than the negotiated peer aimed at a pinhole: say so.
                (Action::Deny, _) if wrong_peer => {
                    return Decision::drop(Reason::PinholeWrongPeer, None);
                }
                (Action::Deny, Some(_)) => return Decision::drop(Reason::PolicyDeny, None),
                (Action::Deny, None) => return Decision::drop(Reason::DefaultDeny, None),
                (Action::Allow, rule) => {
                    let name = rule.unwrap_or_else(|| Arc::from("default"));
                    let alg = verdict
                        .inspect
                        .as_ref()
                        .and_then(|inspect| AlgState::for_new_flow(inspect, tuple));
                    (
                        Flow::new(tuple, state, FlowOrigin::Rule(name.clone()), alg, now),
                        None,
                        Some(name),
                        verdict.inspect.as_ref().map(crate::alg::Inspect::alg),
                    )
                }
            }
        };
        let mut flow = flow;
        flow.parent = pinhole
            .as_ref()
            .and_then(|p| p.spec.parent)
            .map(|p| p.handle);
        flow.account(Direction::Original, packet.len, now);
        match self.insert_flow(flow, &mut events) {
            Ok(handle) => {
                if let Some(pinhole) = &pinhole {
                    self.counters.pinholes_used += 1;
                    events.push(pinhole_event(PinholeAction::Use, pinhole, Some(tuple)));
                    self.adopt(pinhole, handle);
                }
                events.push(Event::FlowOpened {
                    flow: tuple,
                    rule,
                    alg,
                    via_pinhole: pinhole.is_some(),
                    pickup: false,
                });
                with_events(Decision::accept(Some(tuple)), events)
            }
            Err(reason) => {
                if let Some(pinhole) = pinhole {
                    self.pinholes.restore(pinhole);
                }
                with_events(Decision::drop(reason, None), events)
            }
        }
    }

    /// Records a flow admitted by a pinhole as a child of the pinhole's parent.
    fn adopt(&mut self, pinhole: &Pinhole, child: FlowHandle) {
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

    fn flow_timeout(&self, flow: &Flow) -> Duration {
        match &flow.state {
            FlowState::Tcp(tcp) => tcp_timeout(&self.policy.timeouts, tcp),
            state @ FlowState::Datagram { .. } => {
                datagram_timeout(&self.policy.timeouts, flow.tuple.proto, state)
            }
        }
    }

    /// Closes the pending pinholes of `parent`.
    pub(super) fn close_pinholes_of(&mut self, parent: FlowHandle, events: &mut Vec<Event>) {
        let mut orphans: Vec<Pinhole> = Vec::new();
        self.pinholes.close_with_parent(parent, &mut orphans);
        for pinhole in orphans {
            self.counters.pinholes_closed += 1;
            events.push(pinhole_event(PinholeAction::Close, &pinhole, None));
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
        events.push(Event::FlowClosed {
            flow: flow.tuple,
            cause,
            packets: flow.total_packets(),
            bytes: flow.total_bytes(),
        });
        if let Some(AlgState::Ftp(ftp)) = &flow.alg
            && !ftp.options().data_outlives_control
        {
            for &child in ftp.children() {
                if let Some(child_flow) = self.flows.remove(child) {
                    self.flow_removed(child, &child_flow, CloseCause::ParentClosed, events);
                }
            }
        }
    }
}
