//! What the kernel's connection tracking knows about a queued packet's connection, handed to
//! the engine as data with the packet (the engine never asks the kernel anything).
//!
//! On a NAT router the kernel translates addresses (DNAT in PREROUTING, SNAT in POSTROUTING)
//! and its FTP/TFTP helpers (`nf_nat_ftp`, `nf_nat_tftp`) rewrite the addresses in FTP payloads
//! and set up the translation of the data connections. pinhole judges packets in the FORWARD
//! chain, between the two: it sees every host by its own address (the server's private address
//! behind DNAT, the inside client's private address behind SNAT), and the payload before the
//! helper rewrites it. Two facts from the kernel complete that view:
//!
//! * the connection's two tuples (`CTA_TUPLE_ORIG`, `CTA_TUPLE_REPLY`), from which the
//!   addresses each end uses for the other follow ([`Translation`]);
//! * the sequence adjustments (`CTA_SEQ_ADJ_ORIG`, `CTA_SEQ_ADJ_REPLY`: `struct
//!   nf_ct_seqadj` in `include/net/netfilter/nf_conntrack_seqadj.h`). A rewrite that changes a
//!   payload's length shifts every later sequence number of that direction by the difference;
//!   the kernel applies the shift in POSTROUTING (`nf_ct_seq_adjust`,
//!   `net/netfilter/nf_conntrack_seqadj.c`), after pinhole. So pinhole sees each side's
//!   sequence numbers as that side sent them, but its acknowledgements in the other side's
//!   *shifted* space: [`KernelConn::unshifted_ack`] undoes the shift the way the kernel does.

use std::net::IpAddr;

use serde::Serialize;

use super::key::{FlowTuple, SocketDisplay};

/// The kernel's sequence adjustment for one direction of a connection (`struct
/// nf_ct_seqadj`): sequence numbers after `correction_pos` move by `offset_after`, earlier
/// ones by `offset_before`. The kernel keeps one correction point per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqAdjust {
    /// The sequence number of the last rewritten segment (`CTA_SEQADJ_CORRECTION_POS`).
    pub correction_pos: u32,
    /// The shift before it (`CTA_SEQADJ_OFFSET_BEFORE`).
    pub offset_before: i32,
    /// The shift after it (`CTA_SEQADJ_OFFSET_AFTER`).
    pub offset_after: i32,
}

impl SeqAdjust {
    /// The shift the kernel subtracts from an acknowledgement `ack` of this direction's data
    /// (the `ackoff` of `nf_ct_seq_adjust`).
    pub fn ack_offset(&self, ack: u32) -> i32 {
        let unshifted = ack.wrapping_sub(self.offset_before.cast_unsigned());
        // `after(a, b)` of the kernel: (s32)(b - a) < 0.
        if self.correction_pos.wrapping_sub(unshifted).cast_signed() < 0 {
            self.offset_after
        } else {
            self.offset_before
        }
    }

    /// True when nothing was ever shifted.
    pub fn is_zero(&self) -> bool {
        self.offset_before == 0 && self.offset_after == 0
    }
}

/// The kernel's connection a queued packet belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelConn {
    /// The connection as its first packet arrived, before any translation.
    pub original: FlowTuple,
    /// The tuple its replies carry, after translation.
    pub reply: FlowTuple,
    /// This packet travels in the connection's reply direction.
    pub packet_is_reply: bool,
    /// Sequence adjustments of the original and the reply direction.
    pub seq_adjust: [SeqAdjust; 2],
}

impl KernelConn {
    /// The acknowledgement number of this packet in the other side's own sequence space:
    /// `ack` minus the shift the kernel applied to the other direction's data.
    pub fn unshifted_ack(&self, ack: u32) -> u32 {
        let other = &self.seq_adjust[usize::from(!self.packet_is_reply)];
        if other.is_zero() {
            return ack;
        }
        ack.wrapping_sub(other.ack_offset(ack).cast_unsigned())
    }

    /// How the ends of the flow `client -> server` (the hosts' own addresses, as pinhole
    /// sees them) address each other, when the kernel translates the connection; `None` when
    /// it does not, or when the flow is not this connection.
    pub fn translation(&self, client: (IpAddr, u16), server: (IpAddr, u16)) -> Option<Translation> {
        let (from_client, from_server) = if (self.original.src, self.original.sport) == client {
            (&self.original, &self.reply)
        } else if (self.reply.src, self.reply.sport) == client {
            (&self.reply, &self.original)
        } else {
            return None;
        };
        if (from_server.src, from_server.sport) != server {
            return None;
        }
        let translation = Translation {
            client: (from_server.dst, from_server.dport),
            server: (from_client.dst, from_client.dport),
        };
        (translation.client != client || translation.server != server).then_some(translation)
    }
}

/// The addresses the two ends of a translated connection use for each other: the other side
/// of the router's view, beside pinhole's own (the hosts' own addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Translation {
    /// The client as the server sees it (its public address behind SNAT/masquerade).
    #[serde(serialize_with = "socket")]
    pub client: (IpAddr, u16),
    /// The server as the client sees it (the router's public address behind DNAT).
    #[serde(serialize_with = "socket")]
    pub server: (IpAddr, u16),
}

impl std::fmt::Display for Translation {
    /// `client 203.0.113.1:5000, server 203.0.113.20:21`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "client {}, server {}",
            SocketDisplay(self.client.0, self.client.1),
            SocketDisplay(self.server.0, self.server.1)
        )
    }
}

fn socket<S: serde::Serializer>(end: &(IpAddr, u16), serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&SocketDisplay(end.0, end.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::transport::proto;

    fn tuple(src: &str, sport: u16, dst: &str, dport: u16) -> FlowTuple {
        FlowTuple {
            proto: proto::TCP,
            src: src.parse().unwrap(),
            sport,
            dst: dst.parse().unwrap(),
            dport,
        }
    }

    fn end(addr: &str, port: u16) -> (IpAddr, u16) {
        (addr.parse().unwrap(), port)
    }

    #[test]
    fn dnat_shows_the_public_server_address() {
        // Outside client to the router's public address, DNAT'd to a private server.
        let conn = KernelConn {
            original: tuple("198.51.100.10", 40000, "203.0.113.1", 21),
            reply: tuple("10.0.1.10", 21, "198.51.100.10", 40000),
            packet_is_reply: false,
            seq_adjust: [SeqAdjust::default(); 2],
        };
        let t = conn
            .translation(end("198.51.100.10", 40000), end("10.0.1.10", 21))
            .unwrap();
        assert_eq!(t.server, end("203.0.113.1", 21));
        assert_eq!(t.client, end("198.51.100.10", 40000));
        assert_eq!(
            t.to_string(),
            "client 198.51.100.10:40000, server 203.0.113.1:21"
        );
        // Not this flow.
        assert_eq!(
            conn.translation(end("198.51.100.10", 40001), end("10.0.1.10", 21)),
            None
        );
    }

    #[test]
    fn masquerade_shows_the_public_client_address_from_either_orientation() {
        let conn = KernelConn {
            original: tuple("10.0.2.10", 5000, "203.0.113.20", 21),
            reply: tuple("203.0.113.20", 21, "203.0.113.1", 5000),
            packet_is_reply: true,
            seq_adjust: [SeqAdjust::default(); 2],
        };
        let t = conn
            .translation(end("10.0.2.10", 5000), end("203.0.113.20", 21))
            .unwrap();
        assert_eq!(t.client, end("203.0.113.1", 5000));
        assert_eq!(t.server, end("203.0.113.20", 21));
        // A flow pinhole tracks the other way round (picked up from the reply).
        let swapped = conn
            .translation(end("203.0.113.20", 21), end("10.0.2.10", 5000))
            .unwrap();
        assert_eq!(swapped.server, end("203.0.113.1", 5000));
    }

    #[test]
    fn untranslated_connections_have_no_translation() {
        let conn = KernelConn {
            original: tuple("198.51.100.10", 40000, "192.0.2.10", 21),
            reply: tuple("192.0.2.10", 21, "198.51.100.10", 40000),
            packet_is_reply: false,
            seq_adjust: [SeqAdjust::default(); 2],
        };
        assert_eq!(
            conn.translation(end("198.51.100.10", 40000), end("192.0.2.10", 21)),
            None
        );
    }

    #[test]
    fn acknowledgements_are_unshifted_like_the_kernel_does() {
        // The reply direction (server to client) was rewritten at sequence 1000, growing by
        // 5 bytes, after an earlier rewrite of +3.
        let adjust = SeqAdjust {
            correction_pos: 1000,
            offset_before: 3,
            offset_after: 8,
        };
        let conn = KernelConn {
            original: tuple("10.0.2.10", 5000, "203.0.113.20", 21),
            reply: tuple("203.0.113.20", 21, "203.0.113.1", 5000),
            packet_is_reply: false,
            seq_adjust: [SeqAdjust::default(), adjust],
        };
        // The client acknowledges up to the rewritten segment: shifted by the earlier +3.
        assert_eq!(conn.unshifted_ack(1003), 1000);
        // Beyond it: by +8.
        assert_eq!(conn.unshifted_ack(1108), 1100);
        // Around the wrap of the sequence space.
        let wrapped = KernelConn {
            seq_adjust: [
                SeqAdjust::default(),
                SeqAdjust {
                    correction_pos: u32::MAX - 10,
                    offset_before: 0,
                    offset_after: -4,
                },
            ],
            ..conn
        };
        assert_eq!(wrapped.unshifted_ack(20), 24);
        // A packet of the reply direction uses the original direction's (zero) adjustment.
        let reply = KernelConn {
            packet_is_reply: true,
            ..conn
        };
        assert_eq!(reply.unshifted_ack(1108), 1108);
    }
}
