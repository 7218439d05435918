//! Instruction counts of whole workloads through the engine, measured with gungraun (Callgrind),
//! so a 2% regression shows on a noisy machine where wall-clock benchmarks cannot see it. The
//! counts vary a little between runs only because the hash tables' `foldhash` seeds are random
//! per process (different probe sequences): measured, `replay_captures` within 0.001%,
//! `synthetic_mix` within 0.6% (mostly 0.1%).
//!
//! - `replay_captures`: every capture in `pcaps/` and `pcaps/crafted/`, each through a fresh
//!   engine with the embedded default policy, packet by packet as `pinhole replay` does (run the
//!   timers when due, then process; flush at the end).
//! - `synthetic_mix`: a fixed mix built with `pinhole::testkit` (plain TCP connections, FTP
//!   passive sessions with their data connections, refused connection attempts), so the count
//!   does not depend on capture files.
//!
//! Loading the captures and building the frames is setup: Callgrind counts only the benchmark
//! functions.
//!
//! Running it needs valgrind and the runner of the same version as the `gungraun` library:
//!
//! ```sh
//! cargo install --locked gungraun-runner --version 0.20.0    # into ~/.cargo/bin, on PATH
//! cargo bench --bench instructions                           # compares with the previous run
//! cargo bench --bench instructions -- --save-baseline=main   # on the reference commit
//! cargo bench --bench instructions -- --baseline=main        # on the change
//! ```
//!
//! A benchmark whose instruction count (`Ir`) grew by more than 2% over what it is compared with
//! fails the run with exit status 3 (`IR_LIMIT_PERCENT`; override on the command line with
//! `-- --callgrind-limits='ir=5%'`). Results and Callgrind profiles go to
//! `target/gungraun/`. A runner of another version refuses to run.
//!
//! Under `cargo test` (no `--bench` argument) the workloads run once natively, without the
//! runner or valgrind, and their outcome is checked: CI builds and runs this file without
//! either installed.

// gungraun's macros expand to paths the crate's `unused_qualifications` lint flags.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unused_qualifications
)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gungraun::{
    Callgrind, EventKind, LibraryBenchmarkConfig, library_benchmark, library_benchmark_group,
};
use pinhole::counters::Counters;
use pinhole::io::pcap::read_capture;
use pinhole::policy::IfaceName;
use pinhole::testkit::{TcpSession, sock};
use pinhole::wire::LinkType;
use pinhole::{Engine, Instant, PacketInfo, Policy};

/// The regression limit: a benchmark whose instruction count grew by more than this many
/// percent over the baseline it is compared with fails the run.
const IR_LIMIT_PERCENT: f64 = 2.0;

/// One captured packet, owned.
struct Packet {
    index: u64,
    timestamp: Instant,
    link: LinkType,
    interface: Option<IfaceName>,
    data: Vec<u8>,
}

/// Captures loaded into memory, in file-name order.
struct Captures {
    policy: Arc<Policy>,
    files: Vec<Vec<Packet>>,
}

fn capture_paths() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps");
    let mut paths = Vec::new();
    for dir in [root.clone(), root.join("crafted")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .extension()
                .is_some_and(|e| e == "pcap" || e == "pcapng")
            {
                paths.push(path);
            }
        }
    }
    paths.sort();
    paths
}

fn load_captures() -> Captures {
    let files = capture_paths()
        .iter()
        .map(|path| {
            let mut packets = Vec::new();
            read_capture(path, |p| -> Result<(), ()> {
                packets.push(Packet {
                    index: p.index,
                    timestamp: p.timestamp,
                    link: p.link,
                    interface: p.interface,
                    data: p.data.to_vec(),
                });
                Ok(())
            })
            .unwrap()
            .unwrap();
            packets
        })
        .collect();
    Captures {
        policy: Arc::new(Policy::embedded_default()),
        files,
    }
}

/// What `pinhole replay` does per file, without the output: a fresh engine, timers run when due,
/// then the packet; held fragments flushed at the end. Checksums are not verified (replay's
/// default). Returns the counters summed over the files.
fn replay(captures: &Captures) -> Counters {
    let mut total = Counters::default();
    for packets in &captures.files {
        let mut engine = Engine::new(Arc::clone(&captures.policy));
        for packet in packets {
            let now = packet.timestamp;
            if engine.next_timeout().is_some_and(|at| at <= now) {
                black_box(engine.expire(now));
            }
            let mut info = PacketInfo::new(packet.index, packet.link);
            info.ingress = packet.interface;
            info.verify_checksums = false;
            black_box(engine.process(now, &info, &packet.data));
        }
        black_box(engine.flush());
        let c = engine.counters();
        total.packets += c.packets;
        total.accepted += c.accepted;
        total.dropped += c.dropped;
        total.flows_opened += c.flows_opened;
        total.pinholes_opened += c.pinholes_opened;
        total.pinholes_used += c.pinholes_used;
    }
    total
}

/// The synthetic workload's policy: web allowed, FTP inspected, the rest denied.
const SYNTHETIC_POLICY: &str = r#"
default_action = "deny"

[[rule]]
name = "ftp"
proto = "tcp"
ports = [21]
action = "allow"
inspect = "ftp"

[[rule]]
name = "web"
proto = "tcp"
ports = [443]
action = "allow"
"#;

/// Number of plain TCP connections, FTP sessions and refused SYNs in the synthetic mix.
const WEB_FLOWS: u32 = 1000;
const FTP_SESSIONS: u32 = 50;
const REFUSED: u32 = 100;

/// A fixed sequence of frames with timestamps.
struct Synthetic {
    policy: Arc<Policy>,
    frames: Vec<(Instant, Vec<u8>)>,
}

fn client(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        198,
        51,
        100 + (i / 250 % 4) as u8,
        (i % 250) as u8 + 1,
    ))
}

/// A web connection: handshake, a request, 4 segments of 1400 bytes each acknowledged, FINs.
fn web_flow(i: u32) -> Vec<Vec<u8>> {
    let from = SocketAddr::new(client(i), 20_000 + (i % 40_000) as u16);
    let mut s = TcpSession::new(from, sock("192.0.2.80:443"), i * 7919, i * 104_729);
    let mut frames = s.handshake();
    frames.push(s.client_data(&[0x16; 300]));
    for _ in 0..4 {
        frames.push(s.server_data(&[0x17; 1400]));
        frames.push(s.client_ack());
    }
    frames.push(s.client_fin());
    frames.push(s.server_fin());
    frames.push(s.client_ack());
    frames
}

/// An FTP passive session: banner, login, PASV and its data connection (through the pinhole),
/// 226, QUIT, FINs.
fn ftp_session(i: u32) -> Vec<Vec<u8>> {
    let ip = client(i);
    let mut control = TcpSession::new(
        SocketAddr::new(ip, 40_000 + i as u16),
        sock("192.0.2.10:21"),
        i * 31,
        i * 37,
    );
    let mut frames = control.handshake();
    let port = 30_000 + i as u16;
    let reply = format!(
        "227 Entering Passive Mode (192,0,2,10,{},{}).\r\n",
        port >> 8,
        port & 0xff
    );
    for (command, answer) in [
        (None, "220 (vsFTPd 3.0.3)\r\n"),
        (
            Some("USER anonymous\r\n"),
            "331 Please specify the password.\r\n",
        ),
        (Some("PASS bench@\r\n"), "230 Login successful.\r\n"),
        (Some("TYPE I\r\n"), "200 Switching to Binary mode.\r\n"),
        (Some("PASV\r\n"), reply.as_str()),
        (
            Some("RETR firmware.bin\r\n"),
            "150 Opening BINARY mode data connection.\r\n",
        ),
    ] {
        if let Some(command) = command {
            frames.push(control.client_data(command.as_bytes()));
        }
        frames.push(control.server_data(answer.as_bytes()));
    }
    let mut data = TcpSession::new(
        SocketAddr::new(ip, 50_000 + i as u16),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)), port),
        i * 41,
        i * 43,
    );
    frames.extend(data.handshake());
    for _ in 0..8 {
        frames.push(data.server_data(&[0x5a; 1400]));
        frames.push(data.client_ack());
    }
    frames.push(data.server_fin());
    frames.push(data.client_fin());
    frames.push(data.server_ack());
    frames.push(control.server_data(b"226 Transfer complete.\r\n"));
    frames.push(control.client_data(b"QUIT\r\n"));
    frames.push(control.server_data(b"221 Goodbye.\r\n"));
    frames.push(control.server_fin());
    frames.push(control.client_fin());
    frames.push(control.server_ack());
    frames
}

/// The mix: 1000 web connections, 50 FTP sessions and 100 refused SYNs (to port 23), 64
/// conversations interleaved at a time, a packet every 20 µs.
fn build_synthetic() -> Synthetic {
    let mut conversations: Vec<Vec<Vec<u8>>> = Vec::new();
    for i in 0..WEB_FLOWS {
        conversations.push(web_flow(i));
        if i % (WEB_FLOWS / FTP_SESSIONS) == 0 {
            conversations.push(ftp_session(i / (WEB_FLOWS / FTP_SESSIONS)));
        }
        if i % (WEB_FLOWS / REFUSED) == 0 {
            let from = SocketAddr::new(client(i), 60_000);
            conversations.push(vec![
                TcpSession::new(from, sock("192.0.2.23:23"), i, 0).syn(),
            ]);
        }
    }
    let mut frames = Vec::new();
    let mut now = Instant::from_secs(1_000);
    for batch in conversations.chunks(64) {
        let mut iters: Vec<_> = batch.iter().map(|c| c.iter()).collect();
        loop {
            let mut any = false;
            for it in &mut iters {
                if let Some(frame) = it.next() {
                    frames.push((now, frame.clone()));
                    now = now + Duration::from_micros(20);
                    any = true;
                }
            }
            if !any {
                break;
            }
        }
    }
    Synthetic {
        policy: Arc::new(Policy::parse(SYNTHETIC_POLICY, "synthetic").unwrap()),
        frames,
    }
}

/// The synthetic frames through one fresh engine, checksums verified (as inline).
fn run_synthetic(workload: &Synthetic) -> Counters {
    let mut engine = Engine::new(Arc::clone(&workload.policy));
    for (handle, (now, frame)) in workload.frames.iter().enumerate() {
        let now = *now;
        if engine.next_timeout().is_some_and(|at| at <= now) {
            black_box(engine.expire(now));
        }
        let info = PacketInfo::new(handle as u64, LinkType::Ethernet);
        black_box(engine.process(now, &info, frame));
    }
    black_box(engine.flush());
    engine.counters().clone()
}

// Every capture of `pcaps/` and `pcaps/crafted/` replayed (see the module docs). (gungraun's
// attribute allows no doc comment.)
#[library_benchmark]
#[bench::all(setup = load_captures)]
fn replay_captures(captures: Captures) -> (Counters, Captures) {
    let counters = replay(black_box(&captures));
    (counters, captures)
}

// The synthetic mix through one engine (see the module docs).
#[library_benchmark]
#[bench::mix(setup = build_synthetic)]
fn synthetic_mix(workload: Synthetic) -> (Counters, Synthetic) {
    let counters = run_synthetic(black_box(&workload));
    (counters, workload)
}

library_benchmark_group!(
    name = workloads,
    benchmarks = [replay_captures, synthetic_mix]
);

/// Checks both workloads once, natively: what `cargo test` runs.
fn smoke_test() {
    let captures = load_captures();
    let packets: usize = captures.files.iter().map(Vec::len).sum();
    let counters = replay(&captures);
    assert_eq!(counters.packets as usize, packets);
    assert!(counters.pinholes_used > 0, "{counters:?}");
    println!(
        "replay_captures: {} files, {packets} packets, {} accepted, {} dropped",
        captures.files.len(),
        counters.accepted,
        counters.dropped
    );
    let synthetic = build_synthetic();
    let counters = run_synthetic(&synthetic);
    assert_eq!(counters.packets as usize, synthetic.frames.len());
    assert_eq!(counters.dropped, u64::from(REFUSED), "{counters:?}");
    assert_eq!(
        counters.pinholes_used,
        u64::from(FTP_SESSIONS),
        "{counters:?}"
    );
    println!(
        "synthetic_mix: {} packets, {} flows, {} dropped",
        counters.packets, counters.flows_opened, counters.dropped
    );
    println!("both workloads ran natively (`cargo bench --bench instructions` counts them)");
}

/// gungraun's harness, which hands the benchmarks to `gungraun-runner`.
fn gungraun_main() {
    gungraun::main!(
        config = LibraryBenchmarkConfig::default()
            .tool(Callgrind::default().soft_limits([(EventKind::Ir, IR_LIMIT_PERCENT)]));
        library_benchmark_groups = workloads
    );
    main();
}

fn main() {
    // `cargo bench` passes --bench; the runner starts this binary again under valgrind with
    // --gungraun-run. Anything else is `cargo test`, which must not need the runner.
    let harness = std::env::args()
        .skip(1)
        .any(|a| a == "--bench" || a == "--gungraun-run");
    if harness {
        gungraun_main();
    } else {
        smoke_test();
    }
}
