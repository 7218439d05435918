//! Microbenchmarks of the inspection core: decoding, one engine step on an established flow,
//! and a new flow through the policy. Run with `cargo bench --bench core`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use divan::{Bencher, black_box};
use pinhole::testkit::{TcpSession, sock};
use pinhole::wire::{LinkType, ip, link, transport};
use pinhole::{Engine, Instant, PacketInfo, Policy};

fn main() {
    divan::main();
}

fn data_segment() -> (TcpSession, Vec<Vec<u8>>) {
    let mut s = TcpSession::new(
        sock("198.51.100.10:40000"),
        sock("192.0.2.10:21"),
        1,
        1_000_000,
    );
    let mut frames = s.handshake();
    frames.push(s.server_data(b"220 ready\r\n"));
    (s, frames)
}

/// Link, IP and TCP decode of a 1400-byte segment (the one decode every packet gets).
#[divan::bench]
fn decode_tcp(bencher: Bencher<'_, '_>) {
    let (mut s, _) = data_segment();
    let frame = s.server_data(&[0u8; 1400]);
    bencher.bench(|| {
        let bytes = link::ip_bytes(LinkType::Ethernet, black_box(&frame)).unwrap();
        let packet = ip::decode(bytes).unwrap();
        black_box(transport::decode(packet.proto, packet.is_ipv6(), packet.payload).unwrap());
    });
}

/// One engine step for a packet of an established flow: lookup, window check, accounting.
#[divan::bench]
fn engine_established_step(bencher: Bencher<'_, '_>) {
    let (mut s, setup) = data_segment();
    let mut engine = Engine::new(Arc::new(Policy::embedded_default()));
    for (i, frame) in setup.iter().enumerate() {
        engine.process(
            Instant::from_secs(1),
            &PacketInfo::new(i as u64, LinkType::Ethernet),
            frame,
        );
    }
    // Retransmissions of one in-window segment: the state stays the same every iteration.
    let frame = s.server_data(&[0u8; 1400]);
    let info = PacketInfo::new(9, LinkType::Ethernet);
    bencher
        .bench_local(|| black_box(engine.process(Instant::from_secs(2), &info, black_box(&frame))));
}

/// A new flow: decode, pinhole lookup, policy, flow insert (and, once the table is at its cap,
/// the eviction that keeps it there). Every iteration is a SYN of a connection never seen.
#[divan::bench]
fn engine_new_flow(bencher: Bencher<'_, '_>) {
    let mut engine = Engine::new(Arc::new(Policy::embedded_default()));
    let mut n = 0u32;
    bencher
        .with_inputs(|| {
            n = n.wrapping_add(1);
            let client = std::net::SocketAddr::from((
                std::net::Ipv4Addr::from(0x0a00_0000 | (n >> 16)),
                (n & 0xffff) as u16,
            ));
            (
                u64::from(n),
                TcpSession::new(client, sock("192.0.2.10:21"), n, 0).syn(),
            )
        })
        .bench_local_values(|(i, syn)| {
            let info = PacketInfo::new(i, LinkType::Ethernet);
            black_box(engine.process(Instant::from_nanos(i), &info, &syn))
        });
}
