//! UDP, ICMP echo and other protocols: request/reply flows; ICMP errors and informational ICMP.

use crate::alg::AlgVerdict;
use crate::conntrack::{Direction, FlowHandle, FlowKey, FlowState};
use crate::decision::{Decision, Reason};
use crate::policy::{Action, FlowContext};
use crate::time::Instant;
use crate::wire::icmp::decode_quoted;
use crate::wire::transport::{self, proto};

use super::{Engine, Packet, PacketInfo};

impl Engine {
    /// A UDP datagram (`udp` holds its bytes, for the checksum, and its payload, for an
    /// inspector) or a packet of another protocol tracked by address pair.
    pub(super) fn datagram(
        &mut self,
        now: Instant,
        info: &PacketInfo,
        packet: Packet,
        ports: (u16, u16),
        udp: Option<(&[u8], &[u8])>,
    ) -> Decision {
        let (sport, dport) = ports;
        let key = FlowKey::new(packet.proto, (packet.src, sport), (packet.dst, dport));
        let existing = self.flows.lookup(&key);
        // A datagram that opens a flow, or feeds an inspector, must be what the receiver gets.
        let matters = existing.is_none_or(|h| self.flows.get(h).is_some_and(|f| f.alg.is_some()));
        if let Some((bytes, _)) = udp
            && info.verify_checksums
            && matters
            && !transport::checksum_valid(packet.src, packet.dst, packet.proto, bytes)
        {
            return Decision::drop(Reason::BadChecksum, None);
        }
        let payload = udp.map(|(_, payload)| payload);
        match existing {
            Some(handle) => self.datagram_existing(now, handle, packet, sport, payload),
            None => self.open_flow(
                now,
                info,
                packet,
                ports,
                FlowState::Datagram { replied: false },
                payload,
            ),
        }
    }

    fn datagram_existing(
        &mut self,
        now: Instant,
        handle: FlowHandle,
        packet: Packet,
        sport: u16,
        payload: Option<&[u8]>,
    ) -> Decision {
        let Some(flow) = self.flows.get_mut(handle) else {
            return Decision::drop(Reason::FlowLimit, None);
        };
        let tuple = flow.tuple;
        let dir = tuple.direction_of(packet.src, sport);
        let outcome = match (payload, flow.alg.as_mut()) {
            (Some(payload), Some(state)) => state.on_datagram(dir, payload),
            _ => None,
        };
        if outcome
            .as_ref()
            .is_some_and(|o| o.verdict != AlgVerdict::Pass)
        {
            // Refused by the inspector: it changes nothing about the flow.
            return match outcome {
                Some(outcome) => self.apply_inspection(now, handle, tuple, dir, outcome),
                None => Decision::accept(Some(tuple)),
            };
        }
        if dir == Direction::Reply {
            flow.state = FlowState::Datagram { replied: true };
        }
        flow.account(dir, packet.len, now);
        self.refresh_deadline(now, handle);
        let mut decision = match outcome {
            Some(outcome) => self.apply_inspection(now, handle, tuple, dir, outcome),
            None => Decision::accept(Some(tuple)),
        };
        self.maybe_offload(handle, &mut decision);
        decision
    }

    pub(super) fn echo_request(
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
                (id, id),
                FlowState::Datagram { replied: false },
                None,
            ),
            Some(handle) => match self.flows.get(handle) {
                Some(flow) if flow.tuple.src == packet.src => {
                    self.datagram_existing(now, handle, packet, id, None)
                }
                other => Decision::drop(Reason::IcmpEchoWrongDirection, other.map(|f| f.tuple)),
            },
        }
    }

    pub(super) fn echo_reply(&mut self, now: Instant, packet: Packet, id: u16) -> Decision {
        let key = FlowKey::new(packet.proto, (packet.src, id), (packet.dst, id));
        match self.flows.lookup(&key) {
            Some(handle)
                if self
                    .flows
                    .get(handle)
                    .is_some_and(|f| f.tuple.dst == packet.src) =>
            {
                self.datagram_existing(now, handle, packet, id, None)
            }
            _ => Decision::drop(Reason::IcmpNoRequest, None),
        }
    }

    /// An ICMP error passes only when it quotes a packet of a tracked flow, travels back to
    /// that packet's sender, and (for TCP) quotes a plausible sequence number.
    pub(super) fn icmp_error(&mut self, packet: Packet, quoted: &[u8], v6: bool) -> Decision {
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
    pub(super) fn stateless(&self, info: &PacketInfo, packet: Packet) -> Decision {
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
}

/// How long a request/reply flow lives without traffic.
pub(super) fn datagram_timeout(
    timeouts: &crate::policy::Timeouts,
    ip_proto: u8,
    state: &FlowState,
) -> std::time::Duration {
    let replied = matches!(state, FlowState::Datagram { replied: true });
    match ip_proto {
        proto::UDP if replied => timeouts.udp_replied,
        proto::UDP => timeouts.udp_unreplied,
        proto::ICMP | proto::ICMPV6 => timeouts.icmp,
        _ => timeouts.other,
    }
}
