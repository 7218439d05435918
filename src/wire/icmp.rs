//! The packet quoted inside an ICMP error (RFC 792, RFC 4443 section 2.4(c), RFC 1812 4.3.2.3).
//!
//! The quote is the start of a packet the error's recipient sent earlier: its IP header and at
//! least the first 8 bytes of its transport header, which carry the ports and, for TCP, the
//! sequence number. Quotes are truncated by design, so lengths in the quoted headers are not
//! checked against the bytes present.

use std::net::IpAddr;

use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice};

use crate::decision::Reason;
use crate::wire::transport::proto;

/// What an ICMP error says about the packet that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotedPacket {
    /// Source of the quoted packet (the ICMP error goes back to it).
    pub src: IpAddr,
    /// Destination of the quoted packet.
    pub dst: IpAddr,
    /// Transport protocol of the quoted packet.
    pub proto: u8,
    /// Source port, or the echo identifier for a quoted ICMP echo request.
    pub sport: u16,
    /// Destination port, or the echo identifier for a quoted ICMP echo request.
    pub dport: u16,
    /// The quoted TCP sequence number.
    pub tcp_seq: Option<u32>,
}

/// Bytes of transport header every ICMP error must quote (RFC 792).
const QUOTED_TRANSPORT_LEN: usize = 8;

/// Reads the quoted packet of an ICMP error that arrived over IPv6 (`v6`) or IPv4.
pub fn decode_quoted(quoted: &[u8], v6: bool) -> Result<QuotedPacket, Reason> {
    let (src, dst, proto, transport) = if v6 {
        let header = Ipv6HeaderSlice::from_slice(quoted).map_err(|_| Reason::IcmpErrorMalformed)?;
        let rest = &quoted[header.slice().len()..];
        let (proto, transport) = skip_ipv6_extensions(header.next_header().0, rest)?;
        (
            IpAddr::V6(header.source_addr()),
            IpAddr::V6(header.destination_addr()),
            proto,
            transport,
        )
    } else {
        let header = Ipv4HeaderSlice::from_slice(quoted).map_err(|_| Reason::IcmpErrorMalformed)?;
        // Only a first fragment carries the ports.
        if header.fragments_offset().value() != 0 {
            return Err(Reason::IcmpErrorMalformed);
        }
        (
            IpAddr::V4(header.source_addr()),
            IpAddr::V4(header.destination_addr()),
            header.protocol().0,
            &quoted[header.slice().len()..],
        )
    };
    if transport.len() < QUOTED_TRANSPORT_LEN {
        return Err(Reason::IcmpErrorMalformed);
    }
    let word = |at: usize| u16::from_be_bytes([transport[at], transport[at + 1]]);
    let (sport, dport, tcp_seq) = match proto {
        proto::TCP => (
            word(0),
            word(2),
            Some(u32::from_be_bytes([
                transport[4],
                transport[5],
                transport[6],
                transport[7],
            ])),
        ),
        proto::UDP => (word(0), word(2), None),
        proto::ICMP | proto::ICMPV6 => {
            let (request, reply) = if v6 { (128, 129) } else { (8, 0) };
            // Only echo messages belong to flows; errors about errors are never sent (RFC 1122
            // section 3.2.2, RFC 4443 section 2.4(e)) and other types have no flow.
            if transport[0] != request && transport[0] != reply {
                return Err(Reason::IcmpErrorMalformed);
            }
            (word(4), word(4), None)
        }
        _ => (0, 0, None),
    };
    Ok(QuotedPacket {
        src,
        dst,
        proto,
        sport,
        dport,
        tcp_seq,
    })
}

/// Skips IPv6 extension headers in a (possibly truncated) quote. Fragments other than the
/// first carry no transport header and cannot be matched.
fn skip_ipv6_extensions(mut next: u8, mut rest: &[u8]) -> Result<(u8, &[u8]), Reason> {
    for _ in 0..8 {
        let len = match next {
            0 | 43 | 60 => usize::from(*rest.get(1).ok_or(Reason::IcmpErrorMalformed)?) * 8 + 8,
            51 => usize::from(*rest.get(1).ok_or(Reason::IcmpErrorMalformed)?) * 4 + 8,
            44 => {
                let frag = rest.get(..8).ok_or(Reason::IcmpErrorMalformed)?;
                if u16::from_be_bytes([frag[2], frag[3]]) >> 3 != 0 {
                    return Err(Reason::IcmpErrorMalformed);
                }
                8
            }
            _ => return Ok((next, rest)),
        };
        next = rest[0];
        rest = rest.get(len..).ok_or(Reason::IcmpErrorMalformed)?;
    }
    Err(Reason::IcmpErrorMalformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    #[test]
    fn reads_a_quoted_tcp_segment_cut_after_8_bytes() {
        let mut out = Vec::new();
        PacketBuilder::ipv4([198, 51, 100, 10], [192, 0, 2, 10], 64)
            .tcp(40000, 21, 0xdead_beef, 1000)
            .write(&mut out, b"")
            .unwrap();
        let quote = &out[..28];
        let quoted = decode_quoted(quote, false).unwrap();
        assert_eq!(quoted.src, IpAddr::from([198, 51, 100, 10]));
        assert_eq!((quoted.proto, quoted.sport, quoted.dport), (6, 40000, 21));
        assert_eq!(quoted.tcp_seq, Some(0xdead_beef));
        for len in 0..28 {
            assert_eq!(
                decode_quoted(&out[..len], false),
                Err(Reason::IcmpErrorMalformed)
            );
        }
    }

    #[test]
    fn reads_a_quoted_ipv6_udp_datagram_behind_extensions() {
        let mut out = Vec::new();
        PacketBuilder::ipv6([0x20; 16], [0x30; 16], 64)
            .udp(5000, 69)
            .write(&mut out, b"x")
            .unwrap();
        // Insert a destination options header between the IPv6 header and UDP.
        let mut quote = out[..40].to_vec();
        quote[6] = 60;
        quote.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        quote.extend_from_slice(&out[40..]);
        let quoted = decode_quoted(&quote, true).unwrap();
        assert_eq!((quoted.proto, quoted.sport, quoted.dport), (17, 5000, 69));
    }

    #[test]
    fn quoted_echo_request_gives_its_identifier() {
        let mut out = Vec::new();
        PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
            .icmpv4_echo_request(0x1234, 1)
            .write(&mut out, b"")
            .unwrap();
        let quoted = decode_quoted(&out, false).unwrap();
        assert_eq!(
            (quoted.proto, quoted.sport, quoted.dport),
            (1, 0x1234, 0x1234)
        );
    }
}
