//! Microbenchmarks of the inspection core: decoding, the FTP and TFTP grammars, the flow table,
//! the pinhole table, and single engine steps. Run with `cargo bench --bench core` (a filter
//! narrows it: `cargo bench --bench core -- flow_table`).
//!
//! Every benchmark builds its input (frames, tables of the size given as argument) before the
//! timed closure; only the operation named in its doc comment is timed. Under `cargo test`
//! (divan's test mode: each benchmark runs once, unoptimised) the 1M-entry tables are built
//! with 1k entries instead, to keep CI fast. Sample sizes are fixed (1000 iterations a sample, 100
//! for engine steps): left to itself divan may settle on one iteration a sample after a cold
//! first run, which the 20 ns timer cannot resolve.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use divan::{Bencher, black_box};
use pinhole::alg::Alg;
use pinhole::conntrack::{
    Flow, FlowKey, FlowOrigin, FlowState, FlowTable, FlowTuple, Opening, PinholeSpec, PinholeTable,
    PortMatch,
};
use pinhole::testkit::{TcpSession, sock};
use pinhole::wire::transport::proto;
use pinhole::wire::{LinkType, ftp, ip, link, tftp, transport};
use pinhole::{Engine, Instant, PacketInfo, Policy};

fn main() {
    divan::main();
}

/// True under `cargo test` / `--test` (divan runs each benchmark once, to check it works).
fn test_mode() -> bool {
    let mut bench = false;
    for arg in std::env::args() {
        match arg.as_str() {
            "--test" => return true,
            "--bench" => bench = true,
            _ => {}
        }
    }
    !bench
}

/// The table size to build: `n`, or at most 1000 in test mode.
fn size(n: usize) -> usize {
    if test_mode() { n.min(1000) } else { n }
}

/// Flow-table sizes: 1k flows fit in L2; 1M (hundreds of MB of index and slots) fit in no cache,
/// so a lookup pays cache and TLB misses.
const FLOWS: &[usize] = &[1_000, 1_000_000];
/// Open pinholes: one, and a full passive port range's worth.
const PINHOLES: &[usize] = &[1, 10_000];

// ---- decode -----------------------------------------------------------------------------------

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
#[divan::bench(sample_size = 1000)]
fn decode_tcp(bencher: Bencher<'_, '_>) {
    let (mut s, _) = data_segment();
    let frame = s.server_data(&[0u8; 1400]);
    bencher.bench(|| {
        let bytes = link::ip_bytes(LinkType::Ethernet, black_box(&frame)).unwrap();
        let packet = ip::decode(bytes).unwrap();
        black_box(transport::decode(packet.proto, packet.is_ipv6(), packet.payload).unwrap());
    });
}

// ---- FTP grammar ------------------------------------------------------------------------------

/// `wire::ftp::parse_command` on one client line (CRLF already stripped): the verb match plus,
/// for PORT and EPRT, the address parse. `RETR` is the common case (no argument parsed).
#[divan::bench(sample_size = 1000, args = [
    "RETR pub/firmware-2.4.1.bin",
    "PASV",
    "PORT 198,51,100,10,156,65",
    "EPRT |1|198.51.100.10|40001|",
    "EPRT |2|2001:db8:100::10|40001|",
])]
fn ftp_parse_command(bencher: Bencher<'_, '_>, line: &str) {
    let line = line.as_bytes();
    bencher.bench(|| black_box(ftp::parse_command(black_box(line))));
}

/// `wire::ftp::parse_port` on a PORT argument alone.
#[divan::bench(sample_size = 1000)]
fn ftp_parse_port(bencher: Bencher<'_, '_>) {
    let arg = b"198,51,100,10,156,65";
    bencher.bench(|| black_box(ftp::parse_port(black_box(arg))));
}

/// `wire::ftp::parse_eprt` on an EPRT argument alone, IPv4 and IPv6.
#[divan::bench(sample_size = 1000, args = ["|1|198.51.100.10|40001|", "|2|2001:db8:100::10|40001|"])]
fn ftp_parse_eprt(bencher: Bencher<'_, '_>, arg: &str) {
    let arg = arg.as_bytes();
    bencher.bench(|| black_box(ftp::parse_eprt(black_box(arg))));
}

/// `wire::ftp::parse_reply_line` on one server line: code, continuation, text.
#[divan::bench(sample_size = 1000, args = [
    "226 Transfer complete.",
    "230-Welcome to the firmware mirror",
    "227 Entering Passive Mode (192,0,2,10,156,65).",
])]
fn ftp_parse_reply_line(bencher: Bencher<'_, '_>, line: &str) {
    let line = line.as_bytes();
    bencher.bench(|| black_box(ftp::parse_reply_line(black_box(line))));
}

/// `wire::ftp::parse_227` on a 227 reply's text (scan to the first digit, six numbers).
#[divan::bench(sample_size = 1000)]
fn ftp_parse_227(bencher: Bencher<'_, '_>) {
    let text = b"Entering Passive Mode (192,0,2,10,156,65).";
    bencher.bench(|| black_box(ftp::parse_227(black_box(text))));
}

/// `wire::ftp::parse_229` on a 229 reply's text (`(|||port|)`).
#[divan::bench(sample_size = 1000)]
fn ftp_parse_229(bencher: Bencher<'_, '_>) {
    let text = b"Entering Extended Passive Mode (|||40001|)";
    bencher.bench(|| black_box(ftp::parse_229(black_box(text))));
}

// ---- TFTP grammar -----------------------------------------------------------------------------

/// A TFTP payload by name: a read request with the four RFC 2348/2349/7440 options, a DATA
/// block of 512 bytes, an ACK, an OACK accepting two options.
fn tftp_payload(name: &str) -> Vec<u8> {
    match name {
        "rrq_options" => {
            b"\x00\x01firmware/router-2.4.1.bin\x00octet\x00blksize\x001428\x00tsize\x000\x00timeout\x005\x00windowsize\x004\x00".to_vec()
        }
        "data_512" => {
            let mut p = vec![0, 3, 0x12, 0x34];
            p.extend_from_slice(&[0xa5; 512]);
            p
        }
        "ack" => vec![0, 4, 0x12, 0x34],
        "oack" => b"\x00\x06blksize\x001428\x00tsize\x0018350080\x00".to_vec(),
        other => panic!("no TFTP payload {other}"),
    }
}

/// `wire::tftp::parse` on one UDP payload (options parsed and range-checked for RRQ and OACK).
#[divan::bench(args = ["rrq_options", "data_512", "ack", "oack"], sample_size = 1000)]
fn tftp_parse(bencher: Bencher<'_, '_>, packet: &str) {
    let payload = tftp_payload(packet);
    assert!(tftp::parse(&payload).is_ok(), "{packet}");
    bencher.bench(|| black_box(tftp::parse(black_box(&payload))));
}

// ---- flow table -------------------------------------------------------------------------------

/// The `i`-th distinct TCP tuple: clients spread over 10.0.0.0/8 and their ports, to servers
/// in 192.0.2.0/24 on port 21.
fn tuple(i: u32) -> FlowTuple {
    FlowTuple {
        proto: proto::TCP,
        src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 8))),
        sport: 1024 + (i & 0xff) as u16,
        dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, (i % 251) as u8)),
        dport: 21,
    }
}

fn flow(tuple: FlowTuple, origin: &FlowOrigin) -> Flow {
    Flow::new(
        tuple,
        FlowState::Datagram { replied: true },
        origin.clone(),
        None,
        Instant::from_secs(1),
    )
}

/// A deterministic permutation of `0..n` (Fisher-Yates with a fixed xorshift), so lookups
/// walk the table in an order the hardware prefetcher cannot follow.
fn shuffled(n: usize) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// A table of `n` flows (tuples `0..n`), deadlines spread over 10 minutes.
fn flow_table(n: usize) -> FlowTable {
    let origin = FlowOrigin::Rule(Arc::from("bench"));
    let mut table = FlowTable::new(n + 1);
    for i in 0..n as u32 {
        let deadline = Instant::from_nanos((1_000 + u64::from(i) * 600_000 / n as u64) * 1_000_000);
        table.insert(flow(tuple(i), &origin), deadline).unwrap();
    }
    table
}

/// `FlowTable::lookup` of a key that is present, in a table of `n` flows, keys visited in a
/// shuffled order (each iteration the next one).
#[divan::bench(args = FLOWS, sample_size = 1000)]
fn flow_table_lookup_hit(bencher: Bencher<'_, '_>, n: usize) {
    let n = size(n);
    let table = flow_table(n);
    let keys: Vec<FlowKey> = shuffled(n).into_iter().map(|i| tuple(i).key()).collect();
    let mut i = 0;
    bencher.bench_local(|| {
        let key = &keys[i];
        i = if i + 1 == keys.len() { 0 } else { i + 1 };
        black_box(table.lookup(black_box(key)))
    });
}

/// `FlowTable::lookup` of a key that is absent (the first packet of every new flow), in a table
/// of `n` flows.
#[divan::bench(args = FLOWS, sample_size = 1000)]
fn flow_table_lookup_miss(bencher: Bencher<'_, '_>, n: usize) {
    let n = size(n);
    let table = flow_table(n);
    let keys: Vec<FlowKey> = shuffled(n)
        .into_iter()
        .map(|i| tuple(i + n as u32).key())
        .collect();
    let mut i = 0;
    bencher.bench_local(|| {
        let key = &keys[i];
        i = if i + 1 == keys.len() { 0 } else { i + 1 };
        black_box(table.lookup(black_box(key)))
    });
}

/// `FlowTable::insert` of a new flow (deadline later than every other: a fresh flow) and its
/// `FlowTable::remove`, in a table of `n` flows. The `Flow` values are built untimed.
#[divan::bench(args = FLOWS, sample_size = 1000)]
fn flow_table_insert_remove(bencher: Bencher<'_, '_>, n: usize) {
    let n = size(n);
    let mut table = flow_table(n);
    let origin = FlowOrigin::Rule(Arc::from("bench"));
    let fresh: Vec<Flow> = (0..4096)
        .map(|i| flow(tuple(n as u32 + i), &origin))
        .collect();
    let deadline = Instant::from_secs(10_000);
    let mut next = 0;
    bencher
        .with_inputs(|| {
            next = (next + 1) % fresh.len();
            fresh[next].clone()
        })
        .bench_local_values(|flow| {
            let handle = table.insert(flow, deadline).unwrap().handle;
            table.remove(handle)
        });
}

// ---- pinhole table ----------------------------------------------------------------------------

/// A pinhole table with `n` FTP passive pinholes, all toward 192.0.2.10 on ports 30000 + i,
/// each for client 198.51.100.(i % 250), any source port; and the (client, port) pairs.
fn pinhole_table(n: usize) -> (PinholeTable, Vec<(IpAddr, u16)>) {
    let mut table = PinholeTable::new(n + 1);
    let mut holes = Vec::with_capacity(n);
    for i in 0..n {
        let client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, (i % 250) as u8));
        let port = 30_000 + i as u16;
        let spec = PinholeSpec {
            opening: Opening {
                alg: Alg::Ftp,
                proto: proto::TCP,
                src: client,
                sport: PortMatch::Any,
                dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
                dport: port,
            },
            parent: None,
            expires: Instant::from_secs(3_600),
            child: None,
        };
        table.open(spec, 0, Instant::from_secs(1)).unwrap();
        holes.push((client, port));
    }
    (table, holes)
}

const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

/// `PinholeTable::match_and_consume` that finds its pinhole (a data connection arriving),
/// followed by `PinholeTable::restore` of it so the next iteration finds the table as before;
/// `n` pinholes open, visited in turn.
#[divan::bench(args = PINHOLES, sample_size = 1000)]
fn pinhole_match_hit_restore(bencher: Bencher<'_, '_>, n: usize) {
    let (mut table, holes) = pinhole_table(n);
    let now = Instant::from_secs(2);
    let mut i = 0;
    bencher.bench_local(|| {
        let (client, port) = holes[i];
        i = if i + 1 == holes.len() { 0 } else { i + 1 };
        let hit = table
            .match_and_consume(proto::TCP, client, 50_000, SERVER, port, now)
            .hit()
            .unwrap();
        table.restore(black_box(hit));
    });
}

/// `PinholeTable::match_and_consume` for a new flow no pinhole expects (what every new flow
/// the rules decide pays first), with `n` pinholes open.
#[divan::bench(args = PINHOLES, sample_size = 1000)]
fn pinhole_match_miss(bencher: Bencher<'_, '_>, n: usize) {
    let (mut table, _) = pinhole_table(n);
    let now = Instant::from_secs(2);
    let client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    bencher.bench_local(|| {
        black_box(table.match_and_consume(
            proto::TCP,
            black_box(client),
            50_000,
            SERVER,
            black_box(22),
            now,
        ))
    });
}

// ---- engine steps -----------------------------------------------------------------------------

/// One engine step for a packet of an established flow: lookup, window check, accounting. The
/// flow is an FTP control connection (the default policy allows nothing else), so the 1400-byte
/// segment is also checksummed and handed to the FTP inspector's stream reassembly, which sees a
/// retransmission; `engine_established_step_plain` is the same without an inspector.
#[divan::bench(sample_size = 100)]
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

/// One engine step for a 1400-byte segment of an established TCP flow no inspector follows (a
/// rule without `inspect`): decode, lookup, window check, accounting; no checksum (data of an
/// uninspected flow changes no state). The same in-window segment every iteration, so the
/// state stays the same.
#[divan::bench(sample_size = 100)]
fn engine_established_step_plain(bencher: Bencher<'_, '_>) {
    let policy = Policy::parse(
        "[[rule]]\nname = \"web\"\nproto = \"tcp\"\nports = [443]\naction = \"allow\"\n",
        "bench",
    )
    .unwrap();
    let mut engine = Engine::new(Arc::new(policy));
    let mut s = TcpSession::new(
        sock("198.51.100.10:40000"),
        sock("192.0.2.10:443"),
        1,
        1_000_000,
    );
    for (i, frame) in s.handshake().iter().enumerate() {
        let d = engine.process(
            Instant::from_secs(1),
            &PacketInfo::new(i as u64, LinkType::Ethernet),
            frame,
        );
        assert!(d.is_accept(), "{d:?}");
    }
    let frame = s.server_data(&[0u8; 1400]);
    let info = PacketInfo::new(9, LinkType::Ethernet);
    assert!(
        engine
            .process(Instant::from_secs(2), &info, &frame)
            .is_accept()
    );
    bencher
        .bench_local(|| black_box(engine.process(Instant::from_secs(2), &info, black_box(&frame))));
}

/// A new flow: decode, pinhole lookup, policy, flow insert (and, once the table is at its cap,
/// the eviction that keeps it there). Every iteration is a SYN of a connection never seen.
#[divan::bench(sample_size = 100)]
fn engine_new_flow(bencher: Bencher<'_, '_>) {
    let mut engine = Engine::new(Arc::new(Policy::embedded_default()));
    let mut n = 0u32;
    bencher
        .with_inputs(|| {
            n = n.wrapping_add(1);
            let client =
                SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | (n >> 16)), (n & 0xffff) as u16));
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

/// Two engine steps of an inspected FTP control connection: the client's `PASV` line, then the
/// server's `227` reply, which the inspector pairs with it and turns into a pinhole (each reply
/// names another port; past the control connection's 4 pending pinholes the oldest closes).
/// Both segments go through TCP tracking, checksum verification, stream reassembly and line
/// parsing. The frames are built untimed.
#[divan::bench(sample_size = 100)]
fn engine_ftp_pasv_exchange(bencher: Bencher<'_, '_>) {
    let mut s = TcpSession::new(
        sock("198.51.100.10:40000"),
        sock("192.0.2.10:21"),
        1,
        1_000_000,
    );
    let mut engine = Engine::new(Arc::new(Policy::embedded_default()));
    let mut handle = 0u64;
    let mut frames = s.handshake();
    frames.push(s.server_data(b"220 ready\r\n"));
    let exchange = |s: &mut TcpSession, handle: &mut u64| {
        *handle += 2;
        let port = 30_000 + (*handle / 2 % 30_000) as u16;
        let reply = format!(
            "227 Entering Passive Mode (192,0,2,10,{},{}).\r\n",
            port >> 8,
            port & 0xff
        );
        (
            *handle,
            s.client_data(b"PASV\r\n"),
            s.server_data(reply.as_bytes()),
        )
    };
    let (_, pasv, reply) = exchange(&mut s, &mut handle);
    frames.push(pasv);
    frames.push(reply);
    let now = Instant::from_secs(2);
    for (i, frame) in frames.iter().enumerate() {
        let d = engine.process(now, &PacketInfo::new(i as u64, LinkType::Ethernet), frame);
        assert!(d.is_accept(), "setup frame {i}: {d:?}");
    }
    assert_eq!(engine.pinholes().len(), 1, "the 227 reply opened a pinhole");
    bencher
        .with_inputs(|| exchange(&mut s, &mut handle))
        .bench_local_values(|(i, pasv, reply)| {
            let a = engine.process(now, &PacketInfo::new(i, LinkType::Ethernet), &pasv);
            let b = engine.process(now, &PacketInfo::new(i + 1, LinkType::Ethernet), &reply);
            (a, b)
        });
    assert_eq!(engine.counters().dropped, 0, "every step was accepted");
    let open = engine.pinholes().len();
    assert!(
        (2..=4).contains(&open),
        "{open} pinholes: one per reply, up to the quota of 4"
    );
}
