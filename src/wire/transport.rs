//! TCP, UDP and ICMP/ICMPv6 from a complete IP payload.

use std::net::IpAddr;

use etherparse::{TcpHeaderSlice, TcpOptionElement, UdpHeaderSlice};

use crate::decision::Reason;

/// IP protocol numbers the engine distinguishes.
pub mod proto {
    /// ICMP (RFC 792).
    pub const ICMP: u8 = 1;
    /// TCP (RFC 9293).
    pub const TCP: u8 = 6;
    /// UDP (RFC 768).
    pub const UDP: u8 = 17;
    /// ICMPv6 (RFC 4443).
    pub const ICMPV6: u8 = 58;
}

/// The transport layer of a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport<'a> {
    /// A TCP segment.
    Tcp(TcpSegment<'a>),
    /// A UDP datagram.
    Udp(UdpDatagram<'a>),
    /// An ICMP or ICMPv6 message.
    Icmp(IcmpMessage<'a>),
    /// Any other protocol; tracked by address pair only.
    Other,
}

/// TCP header flags (RFC 9293 section 3.1, RFC 3168 for ECE/CWR).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;

    /// True if every flag in `mask` is set.
    pub const fn has(self, mask: u8) -> bool {
        self.0 & mask == mask
    }

    /// SYN set.
    pub const fn syn(self) -> bool {
        self.has(Self::SYN)
    }
    /// ACK set.
    pub const fn ack(self) -> bool {
        self.has(Self::ACK)
    }
    /// FIN set.
    pub const fn fin(self) -> bool {
        self.has(Self::FIN)
    }
    /// RST set.
    pub const fn rst(self) -> bool {
        self.has(Self::RST)
    }
    /// URG set.
    pub const fn urg(self) -> bool {
        self.has(Self::URG)
    }
}

/// A decoded TCP segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful only with ACK).
    pub ack: u32,
    /// Header flags.
    pub flags: TcpFlags,
    /// Advertised window, unscaled.
    pub window: u16,
    /// Window scale option (RFC 7323 section 2), only read from SYN segments, capped at 14.
    pub wscale: Option<u8>,
    /// Urgent pointer (meaningful only with URG).
    pub urgent: u16,
    /// Segment data.
    pub payload: &'a [u8],
    /// The whole segment, header included (for the checksum).
    pub bytes: &'a [u8],
}

impl TcpSegment<'_> {
    /// Sequence space the segment occupies: data plus one for SYN and one for FIN.
    pub fn seq_len(&self) -> u32 {
        let data = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
        data + u32::from(self.flags.syn()) + u32::from(self.flags.fin())
    }
}

/// A decoded UDP datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Datagram payload (trimmed to the UDP length field).
    pub payload: &'a [u8],
    /// The whole datagram, header included (for the checksum).
    pub bytes: &'a [u8],
}

/// A decoded ICMP or ICMPv6 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpMessage<'a> {
    /// ICMPv6 rather than ICMPv4.
    pub v6: bool,
    /// Type field.
    pub icmp_type: u8,
    /// Code field.
    pub code: u8,
    /// What the message is, for tracking.
    pub kind: IcmpKind<'a>,
}

/// The classes of ICMP message the engine treats differently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IcmpKind<'a> {
    /// Echo request (ICMPv4 type 8, ICMPv6 type 128): opens an echo flow.
    EchoRequest {
        /// Identifier.
        id: u16,
    },
    /// Echo reply (ICMPv4 type 0, ICMPv6 type 129): needs a request.
    EchoReply {
        /// Identifier.
        id: u16,
    },
    /// An error (destination unreachable, time exceeded, parameter problem, packet too big)
    /// quoting the start of the packet that caused it.
    Error {
        /// The quoted packet, starting at its IP header.
        quoted: &'a [u8],
    },
    /// Any other type (router/neighbour discovery, timestamps, ...): judged by policy alone.
    Informational,
}

/// True when the TCP or UDP checksum of `segment` (header included) is right for a packet
/// from `src` to `dst` (RFC 9293 section 3.1, RFC 768, RFC 8200 section 8.1). A zero UDP
/// checksum means "none" over IPv4 and is invalid over IPv6.
pub fn checksum_valid(src: IpAddr, dst: IpAddr, ip_proto: u8, segment: &[u8]) -> bool {
    if ip_proto == proto::UDP && segment.get(6..8) == Some(&[0, 0]) {
        return src.is_ipv4();
    }
    ones_complement_sum(src, dst, ip_proto, segment) == Some(0xffff)
}

/// The checksum to write into a TCP or UDP `segment` (header included, its checksum field
/// zero) from `src` to `dst`; `None` when the addresses' families differ.
pub fn checksum(src: IpAddr, dst: IpAddr, ip_proto: u8, segment: &[u8]) -> Option<u16> {
    let sum = !ones_complement_sum(src, dst, ip_proto, segment)?;
    // RFC 768: a computed UDP checksum of zero is sent as all ones.
    Some(if sum == 0 && ip_proto == proto::UDP {
        0xffff
    } else {
        sum
    })
}

/// The folded one's complement sum of the pseudo-header and `segment` (RFC 1071).
fn ones_complement_sum(src: IpAddr, dst: IpAddr, ip_proto: u8, segment: &[u8]) -> Option<u16> {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            sum += u64::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
        }
    };
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            add(&s.octets());
            add(&d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            add(&s.octets());
            add(&d.octets());
        }
        _ => return None,
    }
    add(&[0, ip_proto]);
    add(&u32::try_from(segment.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes());
    add(segment);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    u16::try_from(sum).ok()
}

/// `packet` (an IP datagram carrying one unfragmented TCP segment) with `rewrites` (offset
/// from the first payload byte, bytes) written over its TCP payload and the TCP checksum
/// computed anew over the whole segment, so it is right whatever state the original's was in
/// (a packet from a local socket with checksum offload carries only the pseudo-header's sum).
/// An error says why the packet cannot be rewritten.
pub fn rewrite_tcp_payload<'r>(
    packet: &[u8],
    rewrites: impl IntoIterator<Item = (usize, &'r [u8])>,
) -> Result<Vec<u8>, &'static str> {
    let sliced = etherparse::SlicedPacket::from_ip(packet).map_err(|_| "not a valid IP packet")?;
    let (src, dst) = match &sliced.net {
        Some(etherparse::NetSlice::Ipv4(v4)) if !v4.header().is_fragmenting_payload() => (
            IpAddr::V4(v4.header().source_addr()),
            IpAddr::V4(v4.header().destination_addr()),
        ),
        Some(etherparse::NetSlice::Ipv6(v6)) if !v6.is_payload_fragmented() => (
            IpAddr::V6(v6.header().source_addr()),
            IpAddr::V6(v6.header().destination_addr()),
        ),
        _ => return Err("a fragment, or not IP"),
    };
    let Some(etherparse::TransportSlice::Tcp(tcp)) = &sliced.transport else {
        return Err("not TCP");
    };
    let segment = tcp.slice();
    let start = segment.as_ptr() as usize - packet.as_ptr() as usize;
    let header_len = tcp.header_len();
    let mut out = packet.to_vec();
    let end = start + segment.len();
    for (offset, bytes) in rewrites {
        let at = start + header_len + offset;
        if at + bytes.len() > end {
            return Err("rewrite beyond the payload");
        }
        out[at..at + bytes.len()].copy_from_slice(bytes);
    }
    out[start + 16..start + 18].fill(0);
    let sum = checksum(src, dst, proto::TCP, &out[start..end]).ok_or("address families differ")?;
    out[start + 16..start + 18].copy_from_slice(&sum.to_be_bytes());
    Ok(out)
}

/// What the header of a connection's SYN says about the size of its packets' headers: the
/// IP header (without options or extension headers), the SYN's TCP header, and whether it
/// offers timestamps (RFC 7323 section 3), which every later segment then carries when the
/// peer agrees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SynHeaders {
    /// 20 (IPv4) or 40 (IPv6).
    pub ip: u8,
    /// The SYN's TCP header, options included.
    pub syn_tcp: u8,
    /// The SYN offers the timestamp option.
    pub timestamps: bool,
}

impl SynHeaders {
    /// The TCP header of the connection's other segments: 20 bytes, plus 12 for timestamps
    /// (the option padded with two NOPs).
    pub fn tcp(&self) -> u64 {
        if self.timestamps { 32 } else { 20 }
    }

    /// Payload bytes in `bytes` IP bytes of `packets` packets sent one way (SYN or SYN-ACK
    /// included, taken to carry the SYN's options): exact when every other segment carries
    /// just the timestamps, an overestimate by the size of other options (SACK blocks on
    /// acknowledgements).
    pub fn payload(&self, packets: u64, bytes: u64) -> u64 {
        let headers = packets * (u64::from(self.ip) + self.tcp());
        let syn_extra = u64::from(self.syn_tcp).saturating_sub(self.tcp());
        bytes.saturating_sub(headers + syn_extra)
    }
}

/// The [`SynHeaders`] of `seg`, a SYN sent over IPv6 when `ipv6`.
pub fn syn_headers(ipv6: bool, seg: &TcpSegment<'_>) -> SynHeaders {
    let header_len = seg.bytes.len() - seg.payload.len();
    let options = seg.bytes.get(TCP_MIN_HEADER_LEN..header_len).unwrap_or(&[]);
    let mut timestamps = false;
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = usize::from(*options.get(i + 1).unwrap_or(&0));
                if kind == 8 {
                    timestamps = true;
                }
                if len < 2 {
                    break;
                }
                i += len;
            }
        }
    }
    SynHeaders {
        ip: if ipv6 { 40 } else { 20 },
        syn_tcp: u8::try_from(header_len).unwrap_or(u8::MAX),
        timestamps,
    }
}

/// Length of a TCP header without options.
const TCP_MIN_HEADER_LEN: usize = 20;
/// Length of the fixed ICMP header: type, code, checksum, and four type-specific bytes.
const ICMP_HEADER_LEN: usize = 8;

/// Decodes the transport layer of a complete IP payload.
pub fn decode(proto: u8, is_ipv6: bool, payload: &[u8]) -> Result<Transport<'_>, Reason> {
    match proto {
        proto::TCP => tcp(payload).map(Transport::Tcp),
        proto::UDP => udp(payload).map(Transport::Udp),
        proto::ICMP if !is_ipv6 => icmp(payload, false).map(Transport::Icmp),
        proto::ICMPV6 if is_ipv6 => icmp(payload, true).map(Transport::Icmp),
        _ => Ok(Transport::Other),
    }
}

fn tcp(payload: &[u8]) -> Result<TcpSegment<'_>, Reason> {
    if payload.len() < TCP_MIN_HEADER_LEN {
        return Err(Reason::TruncatedTcp);
    }
    // With 20 bytes present, the only failures left are a data offset below 5 or pointing
    // past the segment: the header itself is wrong, not cut off.
    let header = TcpHeaderSlice::from_slice(payload).map_err(|_| Reason::BadTcpHeader)?;
    let flags = TcpFlags(payload[13]);
    let wscale = if flags.syn() {
        header.options_iterator().find_map(|option| match option {
            // RFC 7323 section 2.3: a shift count above 14 is treated as 14.
            Ok(TcpOptionElement::WindowScale(shift)) => Some(shift.min(14)),
            _ => None,
        })
    } else {
        None
    };
    Ok(TcpSegment {
        sport: header.source_port(),
        dport: header.destination_port(),
        seq: header.sequence_number(),
        ack: header.acknowledgment_number(),
        flags,
        window: header.window_size(),
        wscale,
        urgent: header.urgent_pointer(),
        payload: &payload[header.slice().len()..],
        bytes: payload,
    })
}

fn udp(payload: &[u8]) -> Result<UdpDatagram<'_>, Reason> {
    let header = UdpHeaderSlice::from_slice(payload).map_err(|_| Reason::TruncatedUdp)?;
    let length = usize::from(header.length());
    // RFC 768: the length covers header and data. Longer than the IP payload is malformed;
    // shorter means trailing bytes, which Linux trims (and so do we).
    if length < 8 || length > payload.len() {
        return Err(Reason::BadUdpLength);
    }
    Ok(UdpDatagram {
        sport: header.source_port(),
        dport: header.destination_port(),
        payload: &payload[8..length],
        bytes: &payload[..length],
    })
}

fn icmp(payload: &[u8], v6: bool) -> Result<IcmpMessage<'_>, Reason> {
    if payload.len() < ICMP_HEADER_LEN {
        return Err(Reason::TruncatedIcmp);
    }
    let icmp_type = payload[0];
    let code = payload[1];
    let id = u16::from_be_bytes([payload[4], payload[5]]);
    let body = &payload[ICMP_HEADER_LEN..];
    let kind = match (v6, icmp_type) {
        (false, 8) | (true, 128) => IcmpKind::EchoRequest { id },
        (false, 0) | (true, 129) => IcmpKind::EchoReply { id },
        // RFC 792: destination unreachable, time exceeded, parameter problem.
        // RFC 4443 section 3: destination unreachable, packet too big, time exceeded, parameter problem.
        (false, 3 | 11 | 12) | (true, 1..=4) => IcmpKind::Error { quoted: body },
        _ => IcmpKind::Informational,
    };
    Ok(IcmpMessage {
        v6,
        icmp_type,
        code,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, TcpOptionElement};

    fn tcp_bytes(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
            .tcp(40000, 21, 1000, 64240)
            .syn()
            .options(&[
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::WindowScale(15),
            ])
            .unwrap()
            .write(&mut out, payload)
            .unwrap();
        out.split_off(20)
    }

    #[test]
    fn decodes_tcp_with_window_scale_capped() {
        let bytes = tcp_bytes(b"hi");
        let Transport::Tcp(seg) = decode(proto::TCP, false, &bytes).unwrap() else {
            panic!()
        };
        assert_eq!((seg.sport, seg.dport, seg.seq), (40000, 21, 1000));
        assert!(seg.flags.syn() && !seg.flags.ack());
        assert_eq!(seg.wscale, Some(14));
        assert_eq!(seg.payload, b"hi");
        assert_eq!(seg.seq_len(), 3);
    }

    #[test]
    fn tcp_prefixes_and_bad_offset() {
        let bytes = tcp_bytes(b"");
        for len in 0..20 {
            assert_eq!(
                decode(proto::TCP, false, &bytes[..len]),
                Err(Reason::TruncatedTcp)
            );
        }
        // Options cut off: the data offset points past the segment.
        for len in 20..bytes.len() {
            assert_eq!(
                decode(proto::TCP, false, &bytes[..len]),
                Err(Reason::BadTcpHeader)
            );
        }
        let mut bad = bytes.clone();
        bad[12] = 0x40; // data offset 4
        assert_eq!(decode(proto::TCP, false, &bad), Err(Reason::BadTcpHeader));
    }

    #[test]
    fn checksums() {
        let mut out = Vec::new();
        PacketBuilder::ipv4([198, 51, 100, 10], [192, 0, 2, 10], 64)
            .tcp(40000, 21, 1, 1000)
            .write(&mut out, b"USER a\r\n")
            .unwrap();
        let (src, dst): (IpAddr, IpAddr) = (
            "198.51.100.10".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
        );
        assert!(checksum_valid(src, dst, proto::TCP, &out[20..]));
        // A rewrite of the payload keeps the segment valid, with the checksum recomputed.
        let payload_at = out.len() - 4;
        let rewritten = rewrite_tcp_payload(&out, [(payload_at - 40, &b"XX"[..])]).unwrap();
        assert_eq!(&rewritten[payload_at..payload_at + 2], b"XX");
        assert!(checksum_valid(src, dst, proto::TCP, &rewritten[20..]));
        assert!(rewrite_tcp_payload(&out, [(4, &b"XXXXX"[..])]).is_err());
        out[30] ^= 1;
        assert!(!checksum_valid(src, dst, proto::TCP, &out[20..]));
        let mut udp = Vec::new();
        PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .udp(1, 69)
            .write(&mut udp, b"x")
            .unwrap();
        let (s6, d6): (IpAddr, IpAddr) = (IpAddr::from([1u8; 16]), IpAddr::from([2u8; 16]));
        assert!(checksum_valid(s6, d6, proto::UDP, &udp[40..]));
        udp[46] = 0;
        udp[47] = 0;
        assert!(
            !checksum_valid(s6, d6, proto::UDP, &udp[40..]),
            "zero UDP checksum is invalid over IPv6"
        );
        assert!(
            checksum_valid(src, dst, proto::UDP, &udp[40..]),
            "and means none over IPv4"
        );
    }

    #[test]
    fn udp_length_checks() {
        let good = [0x9c, 0x40, 0, 69, 0, 10, 0, 0, 1, 2, 3];
        let Transport::Udp(udp) = decode(proto::UDP, false, &good).unwrap() else {
            panic!()
        };
        assert_eq!(udp.payload, &[1, 2]); // trimmed to the length field
        for len in 0..8 {
            assert_eq!(
                decode(proto::UDP, false, &good[..len]),
                Err(Reason::TruncatedUdp)
            );
        }
        let mut short = good;
        short[5] = 7;
        assert_eq!(decode(proto::UDP, false, &short), Err(Reason::BadUdpLength));
        let mut long = good;
        long[5] = 12;
        assert_eq!(decode(proto::UDP, false, &long), Err(Reason::BadUdpLength));
    }

    #[test]
    fn icmp_classes() {
        let echo = [8, 0, 0, 0, 0, 7, 0, 1];
        assert_eq!(
            decode(proto::ICMP, false, &echo).unwrap(),
            Transport::Icmp(IcmpMessage {
                v6: false,
                icmp_type: 8,
                code: 0,
                kind: IcmpKind::EchoRequest { id: 7 }
            })
        );
        let reply6 = [129, 0, 0, 0, 0, 7, 0, 1];
        assert!(matches!(
            decode(proto::ICMPV6, true, &reply6).unwrap(),
            Transport::Icmp(IcmpMessage {
                kind: IcmpKind::EchoReply { id: 7 },
                ..
            })
        ));
        let unreachable = [3, 3, 0, 0, 0, 0, 0, 0, 0x45];
        assert!(matches!(
            decode(proto::ICMP, false, &unreachable).unwrap(),
            Transport::Icmp(IcmpMessage {
                kind: IcmpKind::Error { quoted: [0x45] },
                ..
            })
        ));
        let router_solicitation = [133, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            decode(proto::ICMPV6, true, &router_solicitation).unwrap(),
            Transport::Icmp(IcmpMessage {
                kind: IcmpKind::Informational,
                ..
            })
        ));
        for len in 0..8 {
            assert_eq!(
                decode(proto::ICMP, false, &echo[..len]),
                Err(Reason::TruncatedIcmp)
            );
        }
        // ICMPv4 inside IPv6 is not ICMP.
        assert_eq!(decode(proto::ICMP, true, &echo), Ok(Transport::Other));
    }
}
