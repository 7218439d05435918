//! Flow identity: the oriented [`FlowTuple`] and the direction-normalised [`FlowKey`].

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

use crate::wire::transport::{self, Transport, proto};
use crate::wire::{LinkType, ip, link};

/// A flow as its initiator opened it: the first packet's source and destination.
///
/// For ICMP echo flows both ports hold the echo identifier; for protocols without ports both
/// are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowTuple {
    /// IP protocol number.
    pub proto: u8,
    /// Initiator address.
    pub src: IpAddr,
    /// Initiator port.
    pub sport: u16,
    /// Responder address.
    pub dst: IpAddr,
    /// Responder port.
    pub dport: u16,
}

impl FlowTuple {
    /// The tuple seen from the other side.
    #[must_use]
    pub fn reversed(&self) -> FlowTuple {
        FlowTuple {
            proto: self.proto,
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }

    /// The key both directions of this flow share.
    pub fn key(&self) -> FlowKey {
        FlowKey::new(self.proto, (self.src, self.sport), (self.dst, self.dport))
    }

    /// The addresses and ports of a packet as it travels (sender first), when its headers
    /// decode: what a drop record names when the packet belongs to no flow, and how a report
    /// tells a packet's direction. Ports are 0 for protocols without them and for fragments
    /// after the first.
    pub fn of_frame(link: LinkType, frame: &[u8]) -> Option<FlowTuple> {
        let bytes = link::ip_bytes(link, frame).ok()?;
        let packet = ip::decode(bytes).ok()?;
        let first = packet.fragment.is_none_or(|f| f.offset == 0);
        let (sport, dport) = match transport::decode(packet.proto, packet.is_ipv6(), packet.payload)
        {
            Ok(Transport::Tcp(tcp)) if first => (tcp.sport, tcp.dport),
            Ok(Transport::Udp(udp)) if first => (udp.sport, udp.dport),
            _ => (0, 0),
        };
        Some(FlowTuple {
            proto: packet.proto,
            src: packet.src,
            sport,
            dst: packet.dst,
            dport,
        })
    }

    /// True when `packet` (a packet's own tuple, sender first) travels from this flow's
    /// responder to its initiator.
    pub fn is_reply(&self, packet: &FlowTuple) -> bool {
        // Ports are 0 for ICMP and later fragments: then the addresses decide.
        let from_responder =
            packet.src == self.dst && (packet.sport == self.dport || packet.sport == 0);
        let from_initiator =
            packet.src == self.src && (packet.sport == self.sport || packet.sport == 0);
        from_responder && !from_initiator
    }

    /// The direction of a packet from `(src, sport)` within this flow.
    pub fn direction_of(&self, src: IpAddr, sport: u16) -> Direction {
        if src == self.src && sport == self.sport {
            Direction::Original
        } else {
            Direction::Reply
        }
    }
}

/// Lower-case protocol name for output: `tcp`, `udp`, `icmp`, `icmpv6`, or the number.
pub fn proto_name(proto: u8) -> ProtoName {
    ProtoName(proto)
}

/// Displays an IP protocol number by name where it has one.
#[derive(Clone, Copy, Debug)]
pub struct ProtoName(u8);

impl fmt::Display for ProtoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            proto::TCP => f.write_str("tcp"),
            proto::UDP => f.write_str("udp"),
            proto::ICMP => f.write_str("icmp"),
            proto::ICMPV6 => f.write_str("icmpv6"),
            other => write!(f, "{other}"),
        }
    }
}

impl Serialize for ProtoName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// An address and port written the way people read them: `192.0.2.1:21`, `[2001:db8::1]:21`.
pub(crate) struct SocketDisplay(pub(crate) IpAddr, pub(crate) u16);

impl fmt::Display for SocketDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

impl fmt::Display for FlowTuple {
    /// `tcp 198.51.100.10:40000 -> 192.0.2.10:21`; `icmp 198.51.100.10 -> 192.0.2.10 id 7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.proto {
            proto::TCP | proto::UDP => write!(
                f,
                "{} {} -> {}",
                proto_name(self.proto),
                SocketDisplay(self.src, self.sport),
                SocketDisplay(self.dst, self.dport)
            ),
            proto::ICMP | proto::ICMPV6 => write!(
                f,
                "{} {} -> {} id {}",
                proto_name(self.proto),
                self.src,
                self.dst,
                self.sport
            ),
            other => write!(f, "proto {other} {} -> {}", self.src, self.dst),
        }
    }
}

impl Serialize for FlowTuple {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// serde for a [`FlowTuple`] as its five fields, for state files (`#[serde(with)]`); its own
/// `Serialize` writes the display string of the JSON output contract.
pub mod tuple_fields {
    use std::net::IpAddr;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::FlowTuple;

    #[derive(Serialize, Deserialize)]
    struct Fields {
        proto: u8,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
    }

    /// Writes the five fields.
    pub fn serialize<S: Serializer>(t: &FlowTuple, serializer: S) -> Result<S::Ok, S::Error> {
        Fields {
            proto: t.proto,
            src: t.src,
            sport: t.sport,
            dst: t.dst,
            dport: t.dport,
        }
        .serialize(serializer)
    }

    /// Reads the five fields.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<FlowTuple, D::Error> {
        let f = Fields::deserialize(deserializer)?;
        Ok(FlowTuple {
            proto: f.proto,
            src: f.src,
            sport: f.sport,
            dst: f.dst,
            dport: f.dport,
        })
    }
}

/// Which way a packet travels within its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the initiator to the responder.
    Original,
    /// From the responder back to the initiator.
    Reply,
}

impl Direction {
    /// Index for per-direction arrays: 0 original, 1 reply.
    pub const fn index(self) -> usize {
        match self {
            Direction::Original => 0,
            Direction::Reply => 1,
        }
    }

    /// The other direction.
    #[must_use]
    pub const fn opposite(self) -> Direction {
        match self {
            Direction::Original => Direction::Reply,
            Direction::Reply => Direction::Original,
        }
    }
}

/// Direction-normalised flow identity: both directions of a flow map to the same key.
///
/// Addresses are held as integers (an IPv4 address in its IPv4-mapped IPv6 form, with the
/// family kept apart so that an IPv6 packet naming `::ffff:a.b.c.d` is not the IPv4 flow):
/// building, comparing and hashing a key are then a few integer operations instead of a walk
/// over `IpAddr` enums, which the flow lookup on every packet pays for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlowKey {
    // (As two `u64` words each, not `u128`: its 16-byte alignment would pad the key to 48.)
    lo: [u64; 2],
    hi: [u64; 2],
    /// `lo`'s port in the high half, `hi`'s in the low half.
    ports: u32,
    proto: u8,
    v6: bool,
}

/// An address as the integer keys hold.
fn address_bits(addr: IpAddr) -> ([u64; 2], bool) {
    let (bits, v6) = match addr {
        IpAddr::V4(a) => (u128::from(a.to_ipv6_mapped()), false),
        IpAddr::V6(a) => (u128::from(a), true),
    };
    ([(bits >> 64) as u64, bits as u64], v6)
}

impl std::hash::Hash for FlowKey {
    /// Five words, each given to the hasher whole (the derived impl adds a length before each
    /// address array and hashes the small fields one by one). Every bit of the key reaches
    /// the seeded hasher: nothing is folded together first, which would let anyone make
    /// colliding keys without knowing the seed.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.lo[0]);
        state.write_u64(self.lo[1]);
        state.write_u64(self.hi[0]);
        state.write_u64(self.hi[1]);
        state.write_u64(
            (u64::from(self.ports) << 16) | (u64::from(self.proto) << 8) | u64::from(self.v6),
        );
    }
}

impl FlowKey {
    /// True when `tuple` has this key (`tuple.key() == *self`), without building the key: the
    /// flow table's probe compares a slot's flow this way.
    pub fn is_key_of(&self, tuple: &FlowTuple) -> bool {
        if self.proto != tuple.proto {
            return false;
        }
        let ((a, v6), (b, _)) = (address_bits(tuple.src), address_bits(tuple.dst));
        let forward = (u32::from(tuple.sport) << 16) | u32::from(tuple.dport);
        let backward = (u32::from(tuple.dport) << 16) | u32::from(tuple.sport);
        v6 == self.v6
            && ((self.ports == forward && self.lo == a && self.hi == b)
                || (self.ports == backward && self.lo == b && self.hi == a))
    }

    /// The key of a packet from `a` to `b` (or from `b` to `a`: same key).
    pub fn new(proto: u8, a: (IpAddr, u16), b: (IpAddr, u16)) -> Self {
        let ((a_bits, v6), (b_bits, _)) = (address_bits(a.0), address_bits(b.0));
        let (lo, hi) = if (a_bits, a.1) <= (b_bits, b.1) {
            ((a_bits, a.1), (b_bits, b.1))
        } else {
            ((b_bits, b.1), (a_bits, a.1))
        };
        FlowKey {
            lo: lo.0,
            hi: hi.0,
            ports: (u32::from(lo.1) << 16) | u32::from(hi.1),
            proto,
            v6,
        }
    }

    /// IP protocol number.
    pub fn proto(&self) -> u8 {
        self.proto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple() -> FlowTuple {
        FlowTuple {
            proto: proto::TCP,
            src: "198.51.100.10".parse().unwrap(),
            sport: 40000,
            dst: "192.0.2.10".parse().unwrap(),
            dport: 21,
        }
    }

    #[test]
    fn is_key_of_agrees_with_building_the_key() {
        let addrs = [
            "192.0.2.10",
            "198.51.100.10",
            "::ffff:192.0.2.10",
            "2001:db8::1",
        ];
        let mut tuples = Vec::new();
        for p in [proto::TCP, proto::UDP] {
            for src in addrs {
                for dst in addrs {
                    for (sport, dport) in [(21, 40000), (40000, 21), (21, 21), (0, 0)] {
                        tuples.push(FlowTuple {
                            proto: p,
                            src: src.parse().unwrap(),
                            sport,
                            dst: dst.parse().unwrap(),
                            dport,
                        });
                    }
                }
            }
        }
        for a in &tuples {
            let key = a.key();
            for b in &tuples {
                assert_eq!(key.is_key_of(b), key == b.key(), "{a} / {b}");
            }
        }
    }

    #[test]
    fn both_directions_share_a_key() {
        let t = tuple();
        assert_eq!(t.key(), t.reversed().key());
        assert_ne!(t.key(), FlowTuple { dport: 22, ..t }.key());
    }

    #[test]
    fn keys_tell_families_and_ports_apart() {
        let t = tuple();
        let mapped = FlowTuple {
            src: "::ffff:198.51.100.10".parse().unwrap(),
            dst: "::ffff:192.0.2.10".parse().unwrap(),
            ..t
        };
        assert_ne!(
            t.key(),
            mapped.key(),
            "IPv4 and IPv4-mapped IPv6 are different flows"
        );
        assert_eq!(mapped.key(), mapped.reversed().key());
        // The same addresses with the ports swapped between them: another flow.
        let swapped = FlowTuple {
            sport: t.dport,
            dport: t.sport,
            ..t
        };
        assert_ne!(t.key(), swapped.key());
        assert_eq!(swapped.key(), swapped.reversed().key());
        assert_ne!(
            t.key(),
            FlowTuple {
                proto: proto::UDP,
                ..t
            }
            .key()
        );
    }

    #[test]
    fn direction_of_packets() {
        let t = tuple();
        assert_eq!(t.direction_of(t.src, t.sport), Direction::Original);
        assert_eq!(t.direction_of(t.dst, t.dport), Direction::Reply);
    }

    #[test]
    fn displays_flows() {
        assert_eq!(
            tuple().to_string(),
            "tcp 198.51.100.10:40000 -> 192.0.2.10:21"
        );
        let v6 = FlowTuple {
            proto: proto::UDP,
            src: "2001:db8:100::10".parse().unwrap(),
            sport: 1000,
            dst: "2001:db8:2::10".parse().unwrap(),
            dport: 69,
        };
        assert_eq!(
            v6.to_string(),
            "udp [2001:db8:100::10]:1000 -> [2001:db8:2::10]:69"
        );
        let echo = FlowTuple {
            proto: proto::ICMP,
            sport: 7,
            dport: 7,
            ..tuple()
        };
        assert_eq!(echo.to_string(), "icmp 198.51.100.10 -> 192.0.2.10 id 7");
    }
}
