//! Link layers: find the IP datagram inside a captured or queued frame.

use etherparse::{EtherType, Ethernet2HeaderSlice, SingleVlanHeaderSlice};

use crate::decision::Reason;

/// How the bytes handed to the engine are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// Ethernet II, with any number of 802.1Q / 802.1ad VLAN tags (up to a limit).
    Ethernet,
    /// Linux cooked capture v1 (`tcpdump -i any` on older versions).
    LinuxSll,
    /// Linux cooked capture v2 (`tcpdump -i any`).
    LinuxSll2,
    /// The frame starts with the IP header (NFQUEUE, `LINKTYPE_RAW`, `LINKTYPE_IPV4/6`).
    RawIp,
    /// BSD loopback / `LINKTYPE_NULL` and `LINKTYPE_LOOP`: a 4-byte address family, then IP.
    Null,
    /// Any other `LINKTYPE_*` number: every packet is dropped as [`Reason::UnsupportedLink`].
    Unsupported(u32),
}

impl LinkType {
    /// The link type for a pcap/pcapng `LINKTYPE_*` number.
    pub const fn from_linktype(linktype: u32) -> LinkType {
        match linktype {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            // LINKTYPE_RAW, and DLT_RAW as some systems number it; LINKTYPE_IPV4, LINKTYPE_IPV6.
            101 | 12 | 14 | 228 | 229 => LinkType::RawIp,
            0 | 108 => LinkType::Null,
            other => LinkType::Unsupported(other),
        }
    }

    /// The `LINKTYPE_*` number written into pcap files for this link type.
    pub const fn linktype(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::LinuxSll => 113,
            LinkType::LinuxSll2 => 276,
            LinkType::RawIp => 101,
            LinkType::Null => 0,
            LinkType::Unsupported(n) => n,
        }
    }
}

/// Most VLAN tags accepted in front of the IP header; more is an evasion attempt, not a network.
const MAX_VLAN_TAGS: usize = 3;
/// Length of a Linux cooked v1 header.
const SLL_LEN: usize = 16;
/// Length of a Linux cooked v2 header.
const SLL2_LEN: usize = 20;
/// Length of the BSD loopback address-family word.
const NULL_LEN: usize = 4;

/// Returns the IP datagram carried by `frame`, or why there is none.
pub fn ip_bytes(link: LinkType, frame: &[u8]) -> Result<&[u8], Reason> {
    match link {
        LinkType::Unsupported(_) => Err(Reason::UnsupportedLink),
        LinkType::RawIp => Ok(frame),
        LinkType::Ethernet => ethernet(frame),
        LinkType::LinuxSll => {
            // Linux cooked v1: pkttype(2) arphrd(2) addrlen(2) addr(8) protocol(2). Read by hand:
            // etherparse's SLL slice refuses ARPHRD types other than Ethernet-like ones, and
            // `-i any` captures loopback (ARPHRD_LOOPBACK) and tunnels (ARPHRD_NONE) too.
            if frame.len() < SLL_LEN {
                return Err(Reason::TruncatedLink);
            }
            let protocol = u16::from_be_bytes([frame[14], frame[15]]);
            ip_for_ether_type(protocol, &frame[SLL_LEN..])
        }
        LinkType::LinuxSll2 => {
            // Linux cooked v2: protocol(2) reserved(2) ifindex(4) arphrd(2) pkttype(1)
            // addrlen(1) addr(8); see https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html
            if frame.len() < SLL2_LEN {
                return Err(Reason::TruncatedLink);
            }
            let protocol = u16::from_be_bytes([frame[0], frame[1]]);
            ip_for_ether_type(protocol, &frame[SLL2_LEN..])
        }
        LinkType::Null => {
            // The family word is in the capturing host's byte order (and differs between
            // BSDs for IPv6), so the IP version nibble decides; ip::decode checks it.
            frame.get(NULL_LEN..).ok_or(Reason::TruncatedLink)
        }
    }
}

fn ethernet(frame: &[u8]) -> Result<&[u8], Reason> {
    let header = Ethernet2HeaderSlice::from_slice(frame).map_err(|_| Reason::TruncatedLink)?;
    let mut ether_type = header.ether_type();
    let mut rest = &frame[header.slice().len()..];
    for _ in 0..=MAX_VLAN_TAGS {
        match ether_type {
            EtherType::VLAN_TAGGED_FRAME
            | EtherType::PROVIDER_BRIDGING
            | EtherType::VLAN_DOUBLE_TAGGED_FRAME => {
                let vlan =
                    SingleVlanHeaderSlice::from_slice(rest).map_err(|_| Reason::TruncatedLink)?;
                ether_type = vlan.ether_type();
                rest = &rest[vlan.slice().len()..];
            }
            other => return ip_for_ether_type(other.0, rest),
        }
    }
    Err(Reason::NotIp)
}

fn ip_for_ether_type(ether_type: u16, rest: &[u8]) -> Result<&[u8], Reason> {
    match EtherType(ether_type) {
        EtherType::IPV4 | EtherType::IPV6 => Ok(rest),
        _ => Err(Reason::NotIp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: [u8; 2] = [0x45, 0x00];

    #[test]
    fn ethernet_with_vlan_tags() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
        frame.extend_from_slice(&IP);
        assert_eq!(ip_bytes(LinkType::Ethernet, &frame), Ok(&IP[..]));
    }

    #[test]
    fn too_many_vlan_tags_is_not_ip() {
        let mut frame = vec![0u8; 12];
        for _ in 0..5 {
            frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        }
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&IP);
        assert_eq!(ip_bytes(LinkType::Ethernet, &frame), Err(Reason::NotIp));
    }

    #[test]
    fn arp_is_not_ip() {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x06, 0, 1]);
        assert_eq!(ip_bytes(LinkType::Ethernet, &frame), Err(Reason::NotIp));
    }

    #[test]
    fn sll_v1_and_v2() {
        let mut sll = vec![0, 0, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&IP);
        assert_eq!(ip_bytes(LinkType::LinuxSll, &sll), Ok(&IP[..]));

        let mut sll2 = vec![
            0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 1, 2, 3, 4, 5, 6, 0, 0,
        ];
        sll2.extend_from_slice(&IP);
        assert_eq!(ip_bytes(LinkType::LinuxSll2, &sll2), Ok(&IP[..]));
        assert_eq!(
            ip_bytes(LinkType::LinuxSll2, &sll2[..19]),
            Err(Reason::TruncatedLink)
        );
    }

    #[test]
    fn every_short_header_is_truncated_link() {
        for len in 0..14 {
            assert_eq!(
                ip_bytes(LinkType::Ethernet, &[0u8; 14][..len]),
                Err(Reason::TruncatedLink)
            );
        }
        for len in 0..4 {
            assert_eq!(
                ip_bytes(LinkType::Null, &[0u8; 4][..len]),
                Err(Reason::TruncatedLink)
            );
        }
    }

    #[test]
    fn linktype_numbers_round_trip() {
        for link in [
            LinkType::Ethernet,
            LinkType::LinuxSll,
            LinkType::LinuxSll2,
            LinkType::RawIp,
            LinkType::Null,
        ] {
            assert_eq!(LinkType::from_linktype(link.linktype()), link);
        }
        assert_eq!(LinkType::from_linktype(105), LinkType::Unsupported(105));
        assert_eq!(
            ip_bytes(LinkType::Unsupported(105), &[0x45]),
            Err(Reason::UnsupportedLink)
        );
    }
}
