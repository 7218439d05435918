//! IPv4 and IPv6 headers, the IPv6 extension header chain, and fragment information.

use std::net::{IpAddr, Ipv4Addr};

use etherparse::err::ipv4::HeaderError as Ipv4HeaderError;
use etherparse::err::ipv4::HeaderSliceError as Ipv4SliceError;
use etherparse::err::ipv6::HeaderSliceError as Ipv6SliceError;
use etherparse::{
    IpAuthHeaderSlice, IpNumber, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice,
    Ipv6RawExtHeaderSlice,
};

use crate::decision::Reason;

/// An IP datagram (or fragment of one) after header validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpPacket<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol number. For an IPv6 fragment this is the Next Header of the fragment
    /// header, which may still be an extension header; [`ipv6_upper_layer`] finishes the walk
    /// once the datagram is reassembled.
    pub proto: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Set when this packet is a fragment of a larger datagram (atomic fragments are not).
    pub fragment: Option<FragmentInfo>,
    /// The transport payload, or for a fragment, the fragment's data.
    pub payload: &'a [u8],
}

impl IpPacket<'_> {
    /// True for IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }
}

/// Where a fragment sits in its datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentInfo {
    /// IPv4 identification (widened) or IPv6 fragment identification.
    pub id: u32,
    /// Offset of this fragment's data in the datagram, in bytes.
    pub offset: u32,
    /// More fragments follow.
    pub more: bool,
    /// Largest payload the reassembled datagram may have: 65535 minus the IPv4 header, or for
    /// IPv6 minus the extension headers in front of the fragment header.
    pub max_payload: u32,
}

/// Longest IPv6 extension header chain accepted. Real traffic has two or three; long chains are
/// used to push the transport header out of the first fragment (RFC 7112).
const MAX_IPV6_EXTENSIONS: usize = 8;

/// Validates the IP header(s) at the start of `bytes`.
///
/// Trailing bytes after the datagram (Ethernet padding) are ignored; a datagram longer than the
/// bytes present is [`Reason::TruncatedIp`].
pub fn decode(bytes: &[u8]) -> Result<IpPacket<'_>, Reason> {
    match bytes.first().map(|b| b >> 4) {
        None => Err(Reason::TruncatedIp),
        Some(4) => decode_v4(bytes),
        Some(6) => decode_v6(bytes),
        Some(_) => Err(Reason::BadIpVersion),
    }
}

fn decode_v4(bytes: &[u8]) -> Result<IpPacket<'_>, Reason> {
    let header = Ipv4HeaderSlice::from_slice(bytes).map_err(|err| match err {
        Ipv4SliceError::Len(_) => Reason::TruncatedIp,
        Ipv4SliceError::Content(Ipv4HeaderError::UnexpectedVersion { .. }) => Reason::BadIpVersion,
        Ipv4SliceError::Content(Ipv4HeaderError::HeaderLengthSmallerThanHeader { .. }) => {
            Reason::BadIpHeaderLength
        }
    })?;
    let header_len = header.slice().len();
    let total_len = usize::from(header.total_len());
    if total_len < header_len {
        return Err(Reason::BadIpTotalLength);
    }
    let payload = bytes
        .get(header_len..total_len)
        .ok_or(Reason::TruncatedIp)?;
    let offset = u32::from(header.fragments_offset().value()) * 8;
    let more = header.more_fragments();
    let fragment = (offset != 0 || more).then_some(FragmentInfo {
        id: u32::from(header.identification()),
        offset,
        more,
        // RFC 791: the total length, header included, is at most 65535.
        max_payload: 65_535 - header_len as u32,
    });
    let src = IpAddr::V4(header.source_addr());
    check_source(src)?;
    Ok(IpPacket {
        src,
        dst: IpAddr::V4(header.destination_addr()),
        proto: header.protocol().0,
        ttl: header.ttl(),
        fragment,
        payload,
    })
}

fn decode_v6(bytes: &[u8]) -> Result<IpPacket<'_>, Reason> {
    let header = Ipv6HeaderSlice::from_slice(bytes).map_err(|err| match err {
        Ipv6SliceError::Len(_) => Reason::TruncatedIp,
        Ipv6SliceError::Content(_) => Reason::BadIpVersion,
    })?;
    let payload_len = usize::from(header.payload_length());
    if payload_len == 0 && header.next_header() == IpNumber::IPV6_HEADER_HOP_BY_HOP {
        // Payload length 0 with a hop-by-hop header is a jumbogram (RFC 2675): never forwarded
        // by an edge router, and a way to hide a length. (Payload length 0 otherwise is just an
        // empty datagram, whatever link padding follows.)
        return Err(Reason::BadIpTotalLength);
    }
    let body = bytes
        .get(Ipv6Header::LEN..Ipv6Header::LEN + payload_len)
        .ok_or(Reason::TruncatedIp)?;
    let walk = walk_extensions(header.next_header().0, body, true)?;
    let src = IpAddr::V6(header.source_addr());
    check_source(src)?;
    Ok(IpPacket {
        src,
        dst: IpAddr::V6(header.destination_addr()),
        proto: walk.proto,
        ttl: header.hop_limit(),
        fragment: walk.fragment,
        payload: walk.payload,
    })
}

/// Finishes the IPv6 extension header walk over a reassembled datagram's fragmentable part,
/// starting at the Next Header value of the fragment header. Returns the upper-layer protocol
/// and its payload. A second fragment header is [`Reason::BadIpExtension`].
pub fn ipv6_upper_layer(next_header: u8, reassembled: &[u8]) -> Result<(u8, &[u8]), Reason> {
    let walk = walk_extensions(next_header, reassembled, false)?;
    Ok((walk.proto, walk.payload))
}

struct Ipv6Header;
impl Ipv6Header {
    const LEN: usize = 40;
}

struct Walk<'a> {
    proto: u8,
    fragment: Option<FragmentInfo>,
    payload: &'a [u8],
}

/// Walks the IPv6 extension headers (RFC 8200 section 4) from `next`, stopping at the upper
/// layer or at a fragment header that really fragments (the rest is fragment data then).
fn walk_extensions(
    mut next: u8,
    mut rest: &[u8],
    first_in_chain: bool,
) -> Result<Walk<'_>, Reason> {
    let truncated = |_| Reason::TruncatedIpExtension;
    let total = rest.len();
    let mut seen_fragment_header = false;
    for position in 0..=MAX_IPV6_EXTENSIONS {
        match IpNumber(next) {
            IpNumber::IPV6_HEADER_HOP_BY_HOP => {
                // RFC 8200 section 4.3: only immediately after the IPv6 header.
                if position != 0 || !first_in_chain {
                    return Err(Reason::BadIpExtension);
                }
                let ext = Ipv6RawExtHeaderSlice::from_slice(rest).map_err(truncated)?;
                next = ext.next_header().0;
                rest = &rest[ext.slice().len()..];
            }
            IpNumber::IPV6_ROUTE_HEADER | IpNumber::IPV6_DESTINATION_OPTIONS => {
                let ext = Ipv6RawExtHeaderSlice::from_slice(rest).map_err(truncated)?;
                next = ext.next_header().0;
                rest = &rest[ext.slice().len()..];
            }
            IpNumber::AUTHENTICATION_HEADER => {
                let ext = IpAuthHeaderSlice::from_slice(rest).map_err(|err| match err {
                    etherparse::err::ip_auth::HeaderSliceError::Len(_) => {
                        Reason::TruncatedIpExtension
                    }
                    etherparse::err::ip_auth::HeaderSliceError::Content(_) => {
                        Reason::BadIpExtension
                    }
                })?;
                next = ext.next_header().0;
                rest = &rest[ext.slice().len()..];
            }
            IpNumber::IPV6_FRAGMENTATION_HEADER => {
                // One fragment header per datagram (RFC 8200 section 4.1).
                if !first_in_chain || seen_fragment_header {
                    return Err(Reason::BadIpExtension);
                }
                seen_fragment_header = true;
                let before_fragment_header = total - rest.len();
                let frag = Ipv6FragmentHeaderSlice::from_slice(rest).map_err(truncated)?;
                next = frag.next_header().0;
                rest = &rest[frag.slice().len()..];
                if frag.is_fragmenting_payload() {
                    // RFC 8200 section 4.5: everything after this header is fragment data.
                    return Ok(Walk {
                        proto: next,
                        fragment: Some(FragmentInfo {
                            id: frag.identification(),
                            offset: u32::from(frag.fragment_offset().value()) * 8,
                            more: frag.more_fragments(),
                            // The payload length field counts the headers before this one.
                            max_payload: 65_535 - before_fragment_header as u32,
                        }),
                        payload: rest,
                    });
                }
                // An atomic fragment (RFC 6946): offset 0, no more fragments. Keep walking.
            }
            _ => {
                return Ok(Walk {
                    proto: next,
                    fragment: None,
                    payload: rest,
                });
            }
        }
    }
    Err(Reason::BadIpExtension)
}

/// Refuses source addresses no host may send from (RFC 1812 section 5.3.7, RFC 4291 2.5.2/2.7).
fn check_source(src: IpAddr) -> Result<(), Reason> {
    let martian = match src {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4 == Ipv4Addr::BROADCAST,
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    };
    if martian {
        Err(Reason::MartianSource)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp_v4() -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4([198, 51, 100, 10], [192, 0, 2, 10], 64)
            .udp(40000, 69)
            .write(&mut out, b"\x00\x01file\x00octet\x00")
            .unwrap();
        out
    }

    #[test]
    fn decodes_ipv4() {
        let bytes = udp_v4();
        let packet = decode(&bytes).unwrap();
        assert_eq!(packet.src, IpAddr::from([198, 51, 100, 10]));
        assert_eq!(packet.dst, IpAddr::from([192, 0, 2, 10]));
        assert_eq!(packet.proto, 17);
        assert_eq!(packet.ttl, 64);
        assert_eq!(packet.fragment, None);
        assert_eq!(packet.payload.len(), 8 + 13);
    }

    #[test]
    fn ignores_link_padding_after_the_datagram() {
        let mut bytes = udp_v4();
        let len = bytes.len();
        bytes.extend_from_slice(&[0; 6]);
        assert_eq!(decode(&bytes).unwrap().payload.len(), len - 20);
    }

    #[test]
    fn every_truncated_prefix_of_ipv4_is_truncated_ip() {
        let bytes = udp_v4();
        for len in 0..bytes.len() {
            assert_eq!(
                decode(&bytes[..len]),
                Err(Reason::TruncatedIp),
                "prefix {len}"
            );
        }
    }

    #[test]
    fn bad_ipv4_header_fields() {
        let mut bytes = udp_v4();
        bytes[0] = 0x44; // IHL 4
        assert_eq!(decode(&bytes), Err(Reason::BadIpHeaderLength));
        let mut bytes = udp_v4();
        bytes[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(decode(&bytes), Err(Reason::BadIpTotalLength));
        let mut bytes = udp_v4();
        bytes[0] = 0x55;
        assert_eq!(decode(&bytes), Err(Reason::BadIpVersion));
    }

    #[test]
    fn martian_sources() {
        for src in [[0, 0, 0, 0], [224, 0, 0, 1], [255, 255, 255, 255]] {
            let mut out = Vec::new();
            PacketBuilder::ipv4(src, [192, 0, 2, 10], 64)
                .udp(1, 2)
                .write(&mut out, &[])
                .unwrap();
            assert_eq!(decode(&out), Err(Reason::MartianSource));
        }
    }

    #[test]
    fn ipv4_fragment_information() {
        let mut bytes = udp_v4();
        bytes[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        bytes[6..8].copy_from_slice(&(0x2000u16 | 3).to_be_bytes()); // MF, offset 3*8
        let packet = decode(&bytes).unwrap();
        assert_eq!(
            packet.fragment,
            Some(FragmentInfo {
                id: 0x1234,
                offset: 24,
                more: true,
                max_payload: 65_515
            })
        );
    }

    fn v6_with_extensions(exts: &[u8], first: u8) -> Vec<u8> {
        let mut out = vec![0x60, 0, 0, 0];
        let payload_len = exts.len() + 8;
        out.extend_from_slice(&(payload_len as u16).to_be_bytes());
        out.push(first);
        out.push(64);
        out.extend_from_slice(&[
            0x20, 0x01, 0x0d, 0xb8, 0, 0x64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ]);
        out.extend_from_slice(&[
            0x20, 0x01, 0x0d, 0xb8, 0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ]);
        out.extend_from_slice(exts);
        out.extend_from_slice(&[0x9c, 0x40, 0, 69, 0, 8, 0, 0]); // UDP header, no payload
        out
    }

    #[test]
    fn walks_ipv6_extension_headers() {
        // hop-by-hop (next: dest opts), dest opts (next: UDP)
        let exts = [60, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0];
        let bytes = v6_with_extensions(&exts, 0);
        let packet = decode(&bytes).unwrap();
        assert_eq!(packet.proto, 17);
        assert_eq!(packet.payload.len(), 8);
        assert_eq!(packet.fragment, None);
    }

    #[test]
    fn hop_by_hop_not_first_is_refused() {
        let exts = [0, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0];
        let bytes = v6_with_extensions(&exts, 60);
        assert_eq!(decode(&bytes), Err(Reason::BadIpExtension));
    }

    #[test]
    fn too_many_extension_headers_are_refused() {
        let mut exts = Vec::new();
        for i in 0..10 {
            exts.extend_from_slice(&[if i == 9 { 17 } else { 60 }, 0, 1, 4, 0, 0, 0, 0]);
        }
        let bytes = v6_with_extensions(&exts, 60);
        assert_eq!(decode(&bytes), Err(Reason::BadIpExtension));
    }

    #[test]
    fn ipv6_fragment_and_atomic_fragment() {
        // Fragment header: next UDP, offset 0, M=1, id 7.
        let bytes = v6_with_extensions(&[17, 0, 0, 1, 0, 0, 0, 7], 44);
        let packet = decode(&bytes).unwrap();
        assert_eq!(
            packet.fragment,
            Some(FragmentInfo {
                id: 7,
                offset: 0,
                more: true,
                max_payload: 65_535
            })
        );
        assert_eq!(packet.proto, 17);
        // Atomic fragment: offset 0, M=0 is not a fragment (RFC 6946).
        let bytes = v6_with_extensions(&[17, 0, 0, 0, 0, 0, 0, 7], 44);
        let packet = decode(&bytes).unwrap();
        assert_eq!(packet.fragment, None);
        assert_eq!(packet.payload.len(), 8);
    }

    #[test]
    fn every_truncated_prefix_of_ipv6_is_refused() {
        let exts = [17, 0, 1, 4, 0, 0, 0, 0];
        let bytes = v6_with_extensions(&exts, 60);
        for len in 0..bytes.len() {
            let err = decode(&bytes[..len]).unwrap_err();
            assert_eq!(err, Reason::TruncatedIp, "prefix {len}");
        }
    }

    #[test]
    fn extension_cut_inside_the_datagram_is_truncated_extension() {
        // Dest options claims 24 bytes but the payload length only covers 8 + the UDP header.
        let exts = [17, 2, 1, 4, 0, 0, 0, 0];
        let bytes = v6_with_extensions(&exts, 60);
        assert_eq!(decode(&bytes), Err(Reason::TruncatedIpExtension));
    }

    #[test]
    fn ipv6_jumbogram_is_refused_but_an_empty_padded_datagram_is_not() {
        let exts = [17, 0, 0xc2, 4, 0, 1, 0, 0];
        let mut bytes = v6_with_extensions(&exts, 0);
        bytes[4] = 0;
        bytes[5] = 0;
        assert_eq!(decode(&bytes), Err(Reason::BadIpTotalLength));
        // No next header (59), payload length 0, Ethernet padding behind it.
        let mut empty = v6_with_extensions(&[], 59);
        empty[4] = 0;
        empty[5] = 0;
        let packet = decode(&empty).unwrap();
        assert_eq!((packet.proto, packet.payload.len()), (59, 0));
    }

    #[test]
    fn atomic_fragment_then_real_fragment_header_is_refused() {
        let exts = [44, 0, 0, 0, 0, 0, 0, 7, 17, 0, 0, 1, 0, 0, 0, 8];
        let bytes = v6_with_extensions(&exts, 44);
        assert_eq!(decode(&bytes), Err(Reason::BadIpExtension));
    }

    #[test]
    fn upper_layer_after_reassembly() {
        let data = [17, 0, 1, 4, 0, 0, 0, 0, 1, 2, 3];
        assert_eq!(ipv6_upper_layer(60, &data), Ok((17, &data[8..])));
        assert_eq!(ipv6_upper_layer(44, &data), Err(Reason::BadIpExtension));
    }
}
