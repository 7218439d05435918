//! Memory per tracked flow and per open pinhole, measured: the live heap bytes (every
//! allocation counted by an instrumented global allocator) an engine holds after the
//! benchmark workload has opened N flows, divided by N; and the bytes that N pending FTP
//! pinholes add. Run with `cargo bench --bench memory` (about a minute; prints a table).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    clippy::cast_possible_wrap,   // heap totals are far below 2^63
    clippy::cast_precision_loss,  // printed figures
    clippy::cast_sign_loss
)]

use std::alloc::System;
use std::sync::Arc;

use pinhole::testkit::{TcpSession, sock};
use pinhole::time::Instant;
use pinhole::wire::LinkType;
use pinhole::workload::{self, BENCH_RULES, Params};
use pinhole::{Engine, PacketInfo, Policy};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes currently allocated by the whole process.
fn live() -> i64 {
    // Reallocations are already folded into both totals.
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

fn policy() -> Arc<Policy> {
    Arc::new(Policy::parse(BENCH_RULES, "rules/bench.toml").unwrap())
}

/// The engine after the benchmark workload with `flows` concurrent sessions (10 packets each):
/// (flows tracked, pinholes open, live heap bytes of the engine).
fn workload_engine(flows: u32) -> (usize, usize, i64) {
    let before = live();
    let mut engine = Engine::new(policy());
    let mut n = 0u64;
    workload::generate(
        Params {
            flows,
            packets: u64::from(flows) * 10,
            ..Params::default()
        },
        |at, frame| {
            let mut info = PacketInfo::new(n, LinkType::Ethernet);
            info.verify_checksums = false;
            n += 1;
            if engine.next_timeout().is_some_and(|t| t <= at) {
                engine.expire(at);
            }
            engine.process(at, &info, frame);
            Ok(())
        },
    )
    .unwrap();
    // The generator's own sessions are freed when `generate` returns: what is left is the
    // engine's (its tables at their current capacity, flows, inspector state, pinholes).
    let bytes = live() - before;
    let result = (engine.flows().len(), engine.pinholes().len(), bytes);
    drop(engine);
    result
}

/// Heap bytes that `count` replies to PASV add to an engine that already tracks their control
/// connections: the reply is the only difference. With `code` 227 each reply opens a pending
/// pinhole; with 502 (PASV refused, a reply of the same length) none, which gives what the
/// reply itself costs the control connection (its line buffers grow to the reply's length).
fn reply_bytes(count: u32, code: u16) -> (usize, i64) {
    let mut engine = Engine::new(Arc::new(Policy::embedded_default()));
    let mut sessions = Vec::new();
    let now = Instant::from_secs(1);
    let mut n = 0u64;
    let mut send = |engine: &mut Engine, frame: Vec<u8>| {
        let mut info = PacketInfo::new(n, LinkType::Ethernet);
        info.verify_checksums = false;
        n += 1;
        engine.process(now, &info, &frame);
    };
    for i in 0..count {
        let client = std::net::SocketAddr::from((
            std::net::Ipv4Addr::from(0xc612_0000 | (i >> 8)),
            (1024 + (i & 0xff)) as u16,
        ));
        let mut s = TcpSession::new(client, sock("192.0.2.10:21"), i, i);
        for frame in s.handshake() {
            send(&mut engine, frame);
        }
        send(&mut engine, s.server_data(b"220 ready\r\n"));
        send(&mut engine, s.client_data(b"PASV\r\n"));
        sessions.push(s);
    }
    let before = live();
    for (i, s) in sessions.iter_mut().enumerate() {
        let port = 30_000 + (i % 30_000) as u16;
        let reply = format!(
            "{code} Entering Passive Mode (192,0,2,10,{},{}).\r\n",
            port >> 8,
            port & 0xff
        );
        send(&mut engine, s.server_data(reply.as_bytes()));
    }
    let bytes = live() - before;
    (engine.pinholes().len(), bytes)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this target without it,
    // to prove it works: then small inputs only (the 1M-session run takes minutes and 800 MiB).
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: &[u32] = if quick {
        &[1_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    println!(
        "{:>10} {:>10} {:>9} {:>12} {:>14}",
        "sessions", "flows", "pinholes", "heap MiB", "bytes/flow"
    );
    for &size in sizes {
        let (flows, pinholes, bytes) = workload_engine(size);
        println!(
            "{size:>10} {flows:>10} {pinholes:>9} {:>12.1} {:>14.0}",
            bytes as f64 / f64::from(1u32 << 20),
            bytes as f64 / flows as f64
        );
        assert!(flows > 0 && bytes > 0);
    }
    let count = if quick { 1_000 } else { 50_000 };
    let (open, bytes) = reply_bytes(count, 227);
    assert_eq!(open, count as usize, "every 227 reply opens a pinhole");
    let (none, refusal_bytes) = reply_bytes(count, 502);
    assert_eq!(none, 0, "a 502 reply opens no pinhole");
    println!(
        "{open} pending FTP pinholes add {:.1} MiB: {:.0} bytes per pinhole, of which {:.0} \
         are the control connection's line buffers growing to the reply's length (what a \
         502 reply of the same length adds) and {:.0} the pinhole table's",
        bytes as f64 / f64::from(1u32 << 20),
        bytes as f64 / f64::from(count),
        refusal_bytes as f64 / f64::from(count),
        (bytes - refusal_bytes) as f64 / f64::from(count)
    );
    println!(
        "sizes: Flow {} bytes, FlowKey {} bytes, Pinhole {} bytes",
        size_of::<pinhole::conntrack::flow::Flow>(),
        size_of::<pinhole::conntrack::key::FlowKey>(),
        size_of::<pinhole::conntrack::Pinhole>()
    );
}
