//! Property tests: the engine never panics on any bytes, and every strict prefix of a valid
//! packet is dropped with a decode reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use pinhole::testkit::{self, TcpBuilder, sock};
use pinhole::wire::LinkType;
use pinhole::{Engine, Instant, PacketInfo, Policy, Verdict};
use proptest::prelude::*;

fn engine() -> Engine {
    Engine::new(Arc::new(Policy::embedded_default()))
}

fn link() -> impl Strategy<Value = LinkType> {
    prop_oneof![
        Just(LinkType::Ethernet),
        Just(LinkType::LinuxSll),
        Just(LinkType::LinuxSll2),
        Just(LinkType::RawIp),
        Just(LinkType::Null),
    ]
}

/// A well-formed frame: a TCP segment, a UDP datagram, an ICMP echo, or an IP fragment of a UDP
/// datagram, over IPv4 or IPv6.
fn valid_frame() -> impl Strategy<Value = Vec<u8>> {
    let v4 = (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(a, b)| {
        (
            std::net::SocketAddr::from((std::net::Ipv4Addr::from(a), 1000)),
            std::net::SocketAddr::from((std::net::Ipv4Addr::from(b), 21)),
        )
    });
    let v6 = (any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(a, b)| {
        (
            std::net::SocketAddr::from((std::net::Ipv6Addr::from(a), 1000)),
            std::net::SocketAddr::from((std::net::Ipv6Addr::from(b), 69)),
        )
    });
    (
        prop_oneof![v4, v6],
        any::<u8>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..64),
        0..4u8,
    )
        .prop_map(|((src, dst), flags, seq, payload, kind)| match kind {
            0 => TcpBuilder::new(src, dst, flags, seq, seq ^ 0x5555, 1000).build(&payload),
            1 => testkit::udp(src, dst, &payload),
            2 => testkit::icmp_echo(src.ip(), dst.ip(), 7, 1, flags & 1 == 0),
            // One fragment (first, middle or last) of a UDP datagram cut into 16-byte pieces.
            _ => {
                let mut data = payload;
                data.resize(data.len().max(40), 0x5a);
                let pieces = testkit::fragment(&testkit::udp(src, dst, &data), 16, seq);
                pieces[seq as usize % pieces.len()].clone()
            }
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(link in link(), bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut engine = engine();
        let d = engine.process(Instant::from_secs(1), &PacketInfo::new(0, link), &bytes);
        prop_assert!(d.reason.is_some() == (d.verdict == Verdict::Drop));
    }

    #[test]
    fn strict_prefixes_of_valid_frames_are_dropped(frame in valid_frame()) {
        for len in 0..frame.len() {
            let mut engine = engine();
            let d = engine.process(Instant::from_secs(1), &PacketInfo::new(0, LinkType::Ethernet), &frame[..len]);
            prop_assert_eq!(d.verdict, Verdict::Drop, "prefix {} of {:02x?}", len, frame);
        }
    }

    #[test]
    fn corrupted_frames_never_panic(frame in valid_frame(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut corrupt = frame.clone();
        let i = at.index(corrupt.len());
        corrupt[i] = byte;
        let mut engine = engine();
        let _ = engine.process(Instant::from_secs(1), &PacketInfo::new(0, LinkType::Ethernet), &frame);
        let _ = engine.process(Instant::from_secs(2), &PacketInfo::new(1, LinkType::Ethernet), &corrupt);
        let _ = engine.expire(Instant::from_secs(100_000));
    }
}

#[test]
fn a_valid_frame_is_accepted_or_refused_by_policy_not_decoding() {
    let frame = testkit::udp(
        sock("198.51.100.10:1000"),
        sock("192.0.2.10:69"),
        b"\x00\x01a\x00octet\x00",
    );
    let mut engine = engine();
    let d = engine.process(
        Instant::from_secs(1),
        &PacketInfo::new(0, LinkType::Ethernet),
        &frame,
    );
    assert_eq!(d.verdict, Verdict::Accept);
}
