//! Floods, measured: what each table holds while an attacker fills it, what the engine counts,
//! that legitimate sessions survive, and how much heap the engine uses while it happens.
//!
//! Every allocation of this test binary goes through `stats_alloc`'s instrumented allocator, so
//! the live heap (bytes allocated minus bytes freed) is sampled after every packet. The tests
//! share the process-wide counter, so they run one at a time (`SERIAL`). Each memory bound is
//! computed from the caps the test configures, with per-entry budgets taken from
//! BENCHMARKS.md ("Scale and memory": about 500 heap bytes per flow at scale, 715 at 10k flows,
//! 580 per pending FTP pinhole) and doubled, because hash tables and the flow slab grow by
//! doubling and a sample may land just after a growth.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_wrap,  // heap totals and counters are far below 2^63
    clippy::cast_sign_loss,      // likewise, the other way
    clippy::cast_precision_loss  // only in printed figures
)]

use std::alloc::System;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pinhole::conntrack::FlowKey;
use pinhole::event::{CloseCause, Event, PinholeAction};
use pinhole::testkit::{self, TcpBuilder, TcpSession, flags, sock, tftp};
use pinhole::wire::LinkType;
use pinhole::{Decision, Engine, Expired, Instant, PacketInfo, Policy, Reason, Verdict};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The allocator's counters are process-wide: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

const KIB: i64 = 1024;
const MIB: i64 = 1024 * KIB;

/// Heap budget per tracked flow: BENCHMARKS.md measures 500-715 bytes; doubled for growth.
const FLOW_BUDGET: i64 = 1024;
/// Heap budget per pending pinhole: BENCHMARKS.md measures 580 bytes; doubled for growth.
const PINHOLE_BUDGET: i64 = 1024;
/// Fixed part of every bound: the policy, empty tables' first allocations, the test's own
/// frames and decisions in flight.
const SLACK: i64 = 64 * KIB;

/// Heap that may come and go outside the engine while a test measures: the test harness's
/// other threads (spawning, output capture) allocate while a test runs (seen: up to 11 KiB).
const NOISE: i64 = 32 * KIB;

/// Live heap bytes of the whole process.
fn live() -> i64 {
    // Reallocations are folded into both totals by stats_alloc.
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

/// Live heap relative to a baseline, with its peak.
struct Heap {
    baseline: i64,
    peak: i64,
}

impl Heap {
    fn start() -> Heap {
        Heap {
            baseline: live(),
            peak: 0,
        }
    }

    /// Bytes above the baseline now; updates the peak.
    fn sample(&mut self) -> i64 {
        let now = live() - self.baseline;
        self.peak = self.peak.max(now);
        now
    }
}

/// Peak resident set size of the process (`VmHWM`), in bytes.
fn vm_hwm() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * KIB)
}

fn mib(bytes: i64) -> String {
    format!("{:.2} MiB", bytes as f64 / MIB as f64)
}

/// splitmix64: a deterministic generator, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    fn port(&mut self, lo: u16, hi: u16) -> u16 {
        self.range(u64::from(lo), u64::from(hi)) as u16
    }
}

/// An engine with a clock, packet numbering, and the heap sampled after every packet.
struct Rig {
    engine: Engine,
    now: Instant,
    next: u64,
    /// Clock advance per packet.
    step: Duration,
    heap: Heap,
}

impl Rig {
    /// The baseline is taken before the engine exists: everything it allocates counts.
    fn new(policy: &str, step: Duration) -> Rig {
        let heap = Heap::start();
        let policy = Policy::parse(policy, "floods").unwrap();
        Rig {
            engine: Engine::new(Arc::new(policy)),
            now: Instant::from_secs(1000),
            next: 0,
            step,
            heap,
        }
    }

    fn send(&mut self, frame: &[u8]) -> Decision {
        self.now = self.now + self.step;
        let info = PacketInfo::new(self.next, LinkType::Ethernet);
        self.next += 1;
        let d = self.engine.process(self.now, &info, frame);
        self.heap.sample();
        d
    }

    fn expect(&mut self, frame: &[u8], verdict: Verdict, reason: Option<Reason>) -> Decision {
        let d = self.send(frame);
        assert_eq!((d.verdict, d.reason), (verdict, reason), "{d:?}");
        d
    }

    fn accept(&mut self, frame: &[u8]) -> Decision {
        self.expect(frame, Verdict::Accept, None)
    }

    fn drop(&mut self, frame: &[u8], reason: Reason) -> Decision {
        self.expect(frame, Verdict::Drop, Some(reason))
    }

    fn reject(&mut self, frame: &[u8], reason: Reason) -> Decision {
        self.expect(frame, Verdict::Reject, Some(reason))
    }

    /// Moves the clock by `secs` and runs the timers.
    fn advance(&mut self, secs: u64) -> Expired {
        self.now = self.now + Duration::from_secs(secs);
        let expired = self.engine.expire(self.now);
        self.heap.sample();
        expired
    }

    fn drops(&self, reason: Reason) -> u64 {
        self.engine.counters().drops.get(reason)
    }

    /// Ends a flood and returns its peak heap: checks the peak against `bound`, lets every
    /// timer fire (every flow and pinhole must go), measures what the engine still holds (its
    /// tables keep their capacity: hash tables and the flow slab do not shrink), then drops
    /// the engine and checks the heap is back at the baseline (nothing kept outside it). The
    /// test's own allocations made after `Rig::new` must be gone by then.
    fn finish(mut self, name: &str, bound: i64) -> i64 {
        let peak = self.heap.peak;
        for _ in 0..3 {
            // Beyond every timeout: established TCP (3600 s), then what its end started.
            drop(self.advance(3601));
        }
        drop(self.engine.flush());
        assert!(
            self.engine.flows().is_empty(),
            "{name}: {} flows left",
            self.engine.flows().len()
        );
        assert!(self.engine.pinholes().is_empty(), "{name}: pinholes left");
        assert_eq!(
            self.engine.flows().sources(),
            0,
            "{name}: sources still counted"
        );
        let kept = live() - self.heap.baseline;
        let Rig { engine, heap, .. } = self;
        drop(engine);
        let left = live() - heap.baseline;
        eprintln!(
            "{name}: peak {} (bound {}), kept after expiry {}, left after drop {left} B",
            mib(peak),
            mib(bound),
            mib(kept)
        );
        assert!(
            peak < bound,
            "{name}: peak {} over {}",
            mib(peak),
            mib(bound)
        );
        assert!(kept <= peak + NOISE, "{name}: expiry grew the heap");
        assert!(left.abs() < NOISE, "{name}: {left} bytes left");
        peak
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(a, b, c, d), port))
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A bare SYN (no options) from `src` to `dst`.
fn syn(src: SocketAddr, dst: SocketAddr, isn: u32) -> Vec<u8> {
    TcpBuilder::new(src, dst, flags::SYN, isn, 0, 64_240).build(&[])
}

/// Violation details carried by a decision.
fn details(d: &Decision) -> Vec<&str> {
    d.events
        .iter()
        .filter_map(|e| match e {
            Event::Violation { detail, .. } => Some(detail.as_str()),
            _ => None,
        })
        .collect()
}

fn pinhole_actions(events: &[Event], wanted: PinholeAction) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Pinhole { action, .. } if *action == wanted))
        .count()
}

fn via_pinhole(d: &Decision) -> bool {
    d.events.iter().any(|e| {
        matches!(
            e,
            Event::FlowOpened {
                via_pinhole: true,
                ..
            }
        )
    })
}

/// A control connection through the handshake and the banner.
fn ftp_login(rig: &mut Rig, client: SocketAddr, server: SocketAddr, isn: u32) -> TcpSession {
    let mut s = TcpSession::new(client, server, isn, isn.wrapping_mul(7));
    for frame in s.handshake() {
        rig.accept(&frame);
    }
    rig.accept(&s.server_data(b"220 ready\r\n"));
    s
}

/// 227 reply text for `port` on 192.0.2.10.
fn reply_227(port: u16) -> String {
    format!(
        "227 Entering Passive Mode (192,0,2,10,{},{}).\r\n",
        port >> 8,
        port & 0xff
    )
}

const SERVER_IP: &str = "192.0.2.10";

fn server(port: u16) -> SocketAddr {
    SocketAddr::new(ip(SERVER_IP), port)
}

// ---- SYN floods ----------------------------------------------------------------------------

const SYN_FLOOD: u32 = 100_000;
const SYN_MAX_FLOWS: usize = 2000;

fn syn_flood_policy() -> String {
    format!(
        r#"
        default_action = "deny"
        [zones.server]
        networks = ["{SERVER_IP}"]
        [[rule]]
        name = "ftp"
        to = "server"
        action = "allow"
        inspect = "ftp"
        [[rule]]
        name = "low-ports"
        to = "server"
        proto = "tcp"
        ports = ["1-32767"]
        action = "allow"
        [limits]
        max_flows = {SYN_MAX_FLOWS}
        "#
    )
}

/// `count` SYNs from distinct random sources in 10.0.0.0/8 (an odd multiplier permutes the low
/// 24 bits) and random ports to random ports of the server: those to ports the rule allows
/// are admitted, the others denied. Checks the cap after every packet and that every flow
/// evicted is a flood flow. Returns (admitted, denied).
fn random_syn_flood(rig: &mut Rig, seed: u64, count: u32) -> (u64, u64) {
    let mut rng = Rng(seed);
    let (mut admitted, mut denied) = (0, 0);
    for i in 0..count {
        let host = i.wrapping_mul(0x9E37_79B1) & 0x00ff_ffff;
        let src = SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | host), rng.port(1024, 65535)));
        let dport = rng.port(1, 65535);
        let d = rig.send(&syn(src, server(dport), rng.next() as u32));
        if dport <= 32767 {
            admitted += 1;
            assert_eq!((d.verdict, d.reason), (Verdict::Accept, None), "{d:?}");
        } else {
            denied += 1;
            assert_eq!(d.reason, Some(Reason::DefaultDeny), "{d:?}");
        }
        assert!(rig.engine.flows().len() <= SYN_MAX_FLOWS);
        for event in &d.events {
            if let Event::FlowClosed { flow, cause, .. } = event {
                assert_eq!(*cause, CloseCause::Evicted);
                assert!(
                    matches!(flow.src, IpAddr::V4(a) if a.octets()[0] == 10),
                    "a legitimate flow was evicted: {flow}"
                );
            }
        }
    }
    (admitted, denied)
}

/// 50 connections to port 80 through the handshake and a request and reply.
fn web_sessions(rig: &mut Rig) -> Vec<TcpSession> {
    let mut web: Vec<TcpSession> = (0..50u8)
        .map(|i| {
            let client = v4(198, 51, 100, i + 1, 40_000);
            TcpSession::new(client, server(80), u32::from(i) * 1000, 9_000_000)
        })
        .collect();
    for s in &mut web {
        for frame in s.handshake() {
            rig.accept(&frame);
        }
        rig.accept(&s.client_data(b"GET / HTTP/1.1\r\n\r\n"));
        rig.accept(&s.server_data(b"HTTP/1.1 200 OK\r\n\r\n"));
    }
    web
}

/// PASV on `control`, then a data connection through the pinhole, with data.
fn passive_transfer(rig: &mut Rig, control: &mut TcpSession, port: u16) {
    rig.accept(&control.client_data(b"PASV\r\n"));
    let d = rig.accept(&control.server_data(reply_227(port).as_bytes()));
    assert_eq!(pinhole_actions(&d.events, PinholeAction::Open), 1);
    let from = SocketAddr::new(control.client().ip(), 50_000);
    let mut data = TcpSession::new(from, server(port), 77, 88);
    let d = rig.accept(&data.syn());
    assert!(via_pinhole(&d), "{d:?}");
    rig.accept(&data.syn_ack());
    rig.accept(&data.client_ack());
    rig.accept(&data.server_data(&[0x5a; 1000]));
    rig.accept(&data.client_ack());
}

/// 100,000 SYNs from 100,000 random sources to random ports of a server, with
/// `max_flows = 2000`, while 50 established connections and an FTP session are tracked:
/// every SYN past the cap evicts the oldest handshake (counted exactly), never an established
/// flow; afterwards all 50 connections pass data both ways and the FTP session opens a passive
/// data connection.
///
/// Memory bound: `FLOW_BUDGET` (1 KiB, twice BENCHMARKS.md's per-flow heap) × `max_flows` +
/// 256 KiB (the per-source index, timer sets, inspector boxes of the SYNs that hit port 21,
/// the test's own sessions): 2.2 MiB, where 100,000 tracked flows would need ~50 MiB. After
/// every flow expired the engine keeps its tables' capacity (hash tables and the slab do not
/// shrink), so the heap does not return to the baseline until the engine is dropped; a second
/// flood reuses that capacity without growing. `VmHWM` of the whole test binary stays under
/// 256 MiB.
#[test]
fn syn_flood_from_random_sources_keeps_established_sessions() {
    let _serial = serial();
    let started = std::time::Instant::now();
    // 100 µs a packet: the flood lasts 10 s, inside the 30 s handshake timeout, so every flow
    // that leaves the table is evicted (none times out) and the counts are exact.
    let mut rig = Rig::new(&syn_flood_policy(), Duration::from_micros(100));
    let mut web = web_sessions(&mut rig);
    let mut control = ftp_login(&mut rig, v4(198, 51, 100, 200, 41_000), server(21), 5_000);
    let legit = rig.engine.flows().len();
    assert_eq!(legit, 51);

    let (admitted, denied) = random_syn_flood(&mut rig, 0x5EED, SYN_FLOOD);
    let room = (SYN_MAX_FLOWS - legit) as u64;
    let c = rig.engine.counters();
    assert_eq!(admitted + denied, u64::from(SYN_FLOOD));
    assert_eq!(c.drops.get(Reason::DefaultDeny), denied);
    assert_eq!(
        (c.dropped, c.flows_opened),
        (denied, legit as u64 + admitted)
    );
    assert_eq!(
        c.flows_evicted,
        admitted - room,
        "every SYN past the cap evicts one"
    );
    assert_eq!(c.flows_closed, c.flows_evicted, "nothing timed out");
    assert_eq!(rig.engine.flows().len(), SYN_MAX_FLOWS);
    assert_eq!(rig.engine.flows().embryonic_len(), SYN_MAX_FLOWS - legit);
    let flood_peak = rig.heap.peak;

    // Every established connection still passes data both ways, and the FTP session opens a
    // data connection, which the full table admits (evicting one more handshake).
    for s in &mut web {
        rig.accept(&s.client_data(b"GET /again HTTP/1.1\r\n\r\n"));
        rig.accept(&s.server_data(b"HTTP/1.1 200 OK\r\n\r\n"));
    }
    passive_transfer(&mut rig, &mut control, 40_001);
    let c = rig.engine.counters();
    assert_eq!((c.pinholes_used, c.flows_evicted), (1, admitted - room + 1));
    assert_eq!(rig.engine.flows().len(), SYN_MAX_FLOWS);
    drop(web);

    // Everything times out; the tables keep their capacity, which a second flood reuses.
    let closed = rig.advance(3601).events.len();
    assert_eq!(closed, SYN_MAX_FLOWS, "one close event per flow");
    assert!(rig.engine.flows().is_empty());
    let kept = rig.heap.sample();
    rig.heap.peak = 0;
    let (admitted2, _) = random_syn_flood(&mut rig, 0xD00D, SYN_FLOOD / 10);
    assert!(admitted2 > room, "the second flood fills the table again");
    let reflood_peak = rig.heap.peak;
    assert!(
        reflood_peak <= flood_peak + NOISE,
        "a second flood grew the heap: {} then {}",
        mib(flood_peak),
        mib(reflood_peak)
    );
    rig.heap.peak = flood_peak.max(reflood_peak);
    let bound = FLOW_BUDGET * SYN_MAX_FLOWS as i64 + 256 * KIB;
    rig.finish("syn flood", bound);

    let hwm = vm_hwm().expect("VmHWM in /proc/self/status");
    eprintln!(
        "syn flood: {SYN_FLOOD} SYNs ({admitted} admitted) in {:.1?}; peak {}, kept after the \
         first expiry {}, second flood's peak {}; VmHWM {}",
        started.elapsed(),
        mib(flood_peak),
        mib(kept),
        mib(reflood_peak),
        mib(hwm)
    );
    assert!(
        hwm < 256 * MIB,
        "peak resident set {} (bound 256 MiB)",
        mib(hwm)
    );
}

const PER_SOURCE: usize = 100;
const PER_SOURCE_FLOOD: u16 = 20_000;

/// SYNs from one address to ports `1..=count`: the first `PER_SOURCE` are admitted, the rest
/// dropped as `flow_source_limit` with no state change.
fn one_source_flood(rig: &mut Rig, attacker: IpAddr, count: u16) {
    for port in 1..=count {
        let d = rig.send(&syn(SocketAddr::new(attacker, 50_000), server(port), 7));
        if usize::from(port) <= PER_SOURCE {
            assert_eq!((d.verdict, d.reason), (Verdict::Accept, None), "{d:?}");
        } else {
            assert_eq!(d.reason, Some(Reason::FlowSourceLimit), "{d:?}");
            assert!(d.events.is_empty(), "a refused SYN changes nothing: {d:?}");
        }
        assert!(rig.engine.flows().count_from(attacker) <= PER_SOURCE);
    }
}

/// One source sends 20,000 SYNs to 20,000 ports with `max_flows_per_source = 100`: exactly
/// 100 flows are kept from it and the other 19,900 SYNs are dropped as `flow_source_limit`
/// without touching the table (no eviction), so another source still connects. When the
/// handshakes time out the source may connect again, up to the cap again.
///
/// Memory bound: `FLOW_BUDGET` × (100 flows + the other connection) + `SLACK`: 165 KiB, where
/// 20,000 tracked flows would need ~10 MiB.
#[test]
fn syn_flood_from_one_source_hits_the_per_source_cap() {
    let _serial = serial();
    let policy = format!(
        "[[rule]]\nproto = \"tcp\"\naction = \"allow\"\n[limits]\nmax_flows = 2000\n\
         max_flows_per_source = {PER_SOURCE}\n"
    );
    let mut rig = Rig::new(&policy, Duration::from_micros(100));
    let attacker = ip("203.0.113.66");
    one_source_flood(&mut rig, attacker, PER_SOURCE_FLOOD);
    let excess = u64::from(PER_SOURCE_FLOOD) - PER_SOURCE as u64;
    let c = rig.engine.counters();
    assert_eq!(c.drops.get(Reason::FlowSourceLimit), excess);
    assert_eq!(
        (c.dropped, c.flows_opened, c.flows_evicted),
        (excess, 100, 0)
    );
    assert_eq!(rig.engine.flows().count_from(attacker), PER_SOURCE);
    assert_eq!(rig.engine.flows().len(), PER_SOURCE);

    // Another source connects and talks.
    let mut other = TcpSession::new(v4(198, 51, 100, 7, 40_000), server(80), 1, 2);
    for frame in other.handshake() {
        rig.accept(&frame);
    }
    rig.accept(&other.client_data(b"hello"));
    rig.accept(&other.server_data(b"world"));
    // The attacker's handshakes time out after tcp_handshake (30 s); the other stays.
    let closed = rig.advance(31).events.len();
    assert_eq!(closed, PER_SOURCE);
    assert_eq!(rig.engine.flows().count_from(attacker), 0);
    assert_eq!(rig.engine.flows().len(), 1);
    rig.accept(&other.client_data(b"still here"));

    // The source may connect again, to the cap again.
    one_source_flood(&mut rig, attacker, 2 * PER_SOURCE as u16);
    assert_eq!(
        rig.drops(Reason::FlowSourceLimit),
        excess + PER_SOURCE as u64
    );
    assert_eq!(rig.engine.flows().count_from(attacker), PER_SOURCE);
    rig.finish(
        "per-source flood",
        FLOW_BUDGET * (PER_SOURCE as i64 + 1) + SLACK,
    );
}

/// `max_flows_per_source` counts addresses, as documented, so an IPv6 host that rotates the
/// interface identifier within its /64 is not held to it: 5,000 SYNs from 5,000 addresses of
/// one /64 are all admitted, and past `max_flows` they evict other handshakes. This measures a
/// weakness of the design (the per-source and per-client quotas would need an IPv6 prefix
/// length to bite); change it if the quotas learn prefixes.
#[test]
fn per_source_cap_counts_addresses_not_ipv6_prefixes() {
    let _serial = serial();
    let policy = "[[rule]]\nproto = \"tcp\"\naction = \"allow\"\n[limits]\n\
                  max_flows = 2000\nmax_flows_per_source = 100\n";
    let mut rig = Rig::new(policy, Duration::from_micros(100));
    let target = sock("[2001:db8:2::10]:80");
    for i in 0..5000u16 {
        let src = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 1, i));
        rig.accept(&syn(SocketAddr::new(src, 40_000), target, u32::from(i)));
    }
    let c = rig.engine.counters();
    assert_eq!(c.drops.get(Reason::FlowSourceLimit), 0);
    assert_eq!((c.flows_opened, c.flows_evicted), (5000, 3000));
    assert_eq!(rig.engine.flows().sources(), 2000);
    rig.finish("ipv6 /64 flood", FLOW_BUDGET * 2000 + 256 * KIB);
}

// ---- FTP pinhole floods ---------------------------------------------------------------------

/// Heap budget per FTP control connection's inspector state (streams, line buffers, pending
/// commands, reply text) when its peers acknowledge what they receive (measured: ~1.2 KiB
/// with its flow).
const CONTROL_BUDGET: i64 = 4 * KIB;

const FTP_RULE: &str = r#"
[[rule]]
name = "ftp"
action = "allow"
inspect = "ftp"
"#;

fn control_key(client: SocketAddr, server: SocketAddr) -> FlowKey {
    FlowKey::new(
        pinhole::wire::transport::proto::TCP,
        (client.ip(), client.port()),
        (server.ip(), server.port()),
    )
}

const PASV_REQUESTS: u16 = 3000;
const MAX_PENDING: usize = 4;

/// One control connection asks for 3,000 passive data connections (PASV and EPSV in turn)
/// and the server answers each with a new port: the connection never holds more than
/// `max_pending` (4) pinholes, each new one closes the oldest (counted in `pinholes_closed`),
/// and only the newest four admit a data connection.
///
/// Memory bound: 3 flows × `FLOW_BUDGET` + 4 pinholes × `PINHOLE_BUDGET` + `CONTROL_BUDGET` +
/// `SLACK`: 75 KiB, where 3,000 pinholes would need ~1.7 MiB.
#[test]
fn pasv_flood_on_one_connection_is_capped_per_connection() {
    let _serial = serial();
    let mut rig = Rig::new(FTP_RULE, Duration::from_micros(500));
    let client = v4(198, 51, 100, 10, 40_000);
    let mut control = ftp_login(&mut rig, client, server(21), 1_000);
    let handle = rig
        .engine
        .flows()
        .lookup(&control_key(client, server(21)))
        .unwrap();
    for i in 0..PASV_REQUESTS {
        let port = 10_000 + i;
        let (command, reply) = if i % 2 == 0 {
            (&b"PASV\r\n"[..], reply_227(port))
        } else {
            let reply = format!("229 Entering Extended Passive Mode (|||{port}|)\r\n");
            (&b"EPSV\r\n"[..], reply)
        };
        rig.accept(&control.client_data(command));
        let d = rig.accept(&control.server_data(reply.as_bytes()));
        assert_eq!(pinhole_actions(&d.events, PinholeAction::Open), 1);
        let closed = usize::from(usize::from(i) >= MAX_PENDING);
        assert_eq!(pinhole_actions(&d.events, PinholeAction::Close), closed);
        let pending = rig.engine.pinholes().count_for_parent(handle);
        assert_eq!(pending, (usize::from(i) + 1).min(MAX_PENDING));
        assert_eq!(rig.engine.pinholes().len(), pending);
    }
    let c = rig.engine.counters();
    let total = u64::from(PASV_REQUESTS);
    assert_eq!(
        (c.pinholes_opened, c.pinholes_closed, c.pinholes_refused),
        (total, total - MAX_PENDING as u64, 0)
    );
    assert_eq!((c.dropped, c.violations), (0, 0));
    assert_eq!(rig.engine.flows().len(), 1);

    // An old port is closed; the newest ones admit their data connection.
    let old = SocketAddr::new(client.ip(), 41_000);
    rig.drop(&syn(old, server(10_000), 1), Reason::DefaultDeny);
    for (n, port) in (PASV_REQUESTS - 2..PASV_REQUESTS).enumerate() {
        let from = SocketAddr::new(client.ip(), 41_001 + n as u16);
        let d = rig.accept(&syn(from, server(10_000 + port), 1));
        assert!(via_pinhole(&d), "{d:?}");
    }
    assert_eq!(rig.engine.counters().pinholes_used, 2);
    assert_eq!(rig.engine.pinholes().len(), MAX_PENDING - 2);
    let bound = 3 * FLOW_BUDGET + MAX_PENDING as i64 * PINHOLE_BUDGET + CONTROL_BUDGET + SLACK;
    rig.finish("pasv flood", bound);
}

/// The PORT or EPRT command for `port` of `client` (alternating by `i`).
fn active_command(i: usize, client: IpAddr, port: u16) -> String {
    let IpAddr::V4(a) = client else {
        unreachable!("IPv4 clients only")
    };
    let [o1, o2, o3, o4] = a.octets();
    if i.is_multiple_of(2) {
        format!("PORT {o1},{o2},{o3},{o4},{},{}\r\n", port >> 8, port & 0xff)
    } else {
        format!("EPRT |1|{a}|{port}|\r\n")
    }
}

const PORT_PER_CLIENT: usize = 20;
const PORT_TABLE: usize = 30;
const PORT_COMMANDS: usize = 50;

/// A control connection from `client` port `40000 + n` that sends PORT/EPRT with a fresh port
/// (from `next_port`) `PORT_COMMANDS` times, the server accepting each, until a 200 reply is
/// refused. Checks the quotas after every packet. Returns (pinholes it opened, the refusal's
/// detail).
fn port_connection(
    rig: &mut Rig,
    client: IpAddr,
    n: u16,
    next_port: &mut u16,
) -> (usize, Option<String>) {
    let check = |rig: &Rig| {
        let p = rig.engine.pinholes();
        assert!(p.count_for_client(client) <= PORT_PER_CLIENT);
        assert!(p.len() <= PORT_TABLE);
    };
    let addr = SocketAddr::new(client, 40_000 + n);
    let mut s = ftp_login(rig, addr, server(21), u32::from(n) * 100_000);
    for i in 0..PORT_COMMANDS {
        *next_port += 1;
        rig.accept(&s.client_data(active_command(i, client, *next_port).as_bytes()));
        check(rig);
        let d = rig.send(&s.server_data(b"200 Command okay.\r\n"));
        check(rig);
        if d.verdict == Verdict::Reject {
            assert_eq!(d.reason, Some(Reason::FtpPinholeLimit), "{d:?}");
            // The connection was reset: nothing more passes.
            rig.drop(&s.client_data(b"NOOP\r\n"), Reason::TcpAfterReset);
            return (i, Some(details(&d).concat()));
        }
        assert_eq!((d.verdict, d.reason), (Verdict::Accept, None), "{d:?}");
        assert_eq!(pinhole_actions(&d.events, PinholeAction::Open), 1);
    }
    (PORT_COMMANDS, None)
}

/// One client opens 10 control connections, each sending 50 PORT/EPRT commands the server
/// accepts; a second client does the same. `max_pending = 4` per connection,
/// `max_pinholes_per_client = 20`, `max_pinholes = 30`.
///
/// - The first five connections of client A each keep their newest 4 pinholes (20 in all);
///   each of the other five has its first 200 reply refused (`ftp_pinhole_limit`, the client's
///   quota), which as a violation resets that connection.
/// - Client B is not held to A's quota: its connections get 4 + 4 + 2 pinholes, until the
///   table holds 30; then the refusal names the full table (and the reset closes the two
///   pinholes of the refused connection, so the next one gets two again).
///
/// Memory bound: 15 flows × (`FLOW_BUDGET` + `CONTROL_BUDGET`) + 30 × `PINHOLE_BUDGET` +
/// `SLACK`: 169 KiB, where the 361 pinholes asked for would need ~200 KiB.
#[test]
fn port_flood_across_connections_is_capped_per_client_and_globally() {
    let _serial = serial();
    let policy = format!(
        "{FTP_RULE}\n[limits]\nmax_pinholes = {PORT_TABLE}\n\
         max_pinholes_per_client = {PORT_PER_CLIENT}\n"
    );
    let mut rig = Rig::new(&policy, Duration::from_micros(500));
    let (a, b) = (ip("198.51.100.10"), ip("198.51.100.11"));
    let mut next_port = 2000u16;
    for n in 0..10 {
        let (opened, refused) = port_connection(&mut rig, a, n, &mut next_port);
        if n < 5 {
            assert_eq!((opened, refused), (PORT_COMMANDS, None), "connection {n}");
        } else {
            assert_eq!(opened, 0, "connection {n}");
            let detail = refused.expect("refused");
            let quota = "holds 20 pending pinholes (limits.max_pinholes_per_client)";
            assert!(detail.contains(quota), "{detail}");
        }
    }
    assert_eq!(rig.engine.pinholes().count_for_client(a), PORT_PER_CLIENT);
    let c = rig.engine.counters();
    let per_connection_closes = PORT_COMMANDS as u64 - 4;
    assert_eq!(
        (c.pinholes_opened, c.pinholes_closed, c.pinholes_refused),
        (250, 5 * per_connection_closes, 5)
    );
    assert_eq!(c.drops.get(Reason::FtpPinholeLimit), 5);

    // Client B: its own quota, then the table's.
    let mut got = Vec::new();
    for n in 0..4 {
        let (opened, refused) = port_connection(&mut rig, b, n, &mut next_port);
        got.push(opened.min(4));
        if n < 2 {
            assert_eq!((opened, refused.as_deref()), (PORT_COMMANDS, None));
        } else {
            let detail = refused.expect("refused");
            let full = "pinhole table full (30 pinholes)";
            assert!(detail.starts_with(full), "{detail}");
            assert_eq!(rig.engine.pinholes().len(), PORT_TABLE - 2);
        }
    }
    assert_eq!(got, [4, 4, 2, 2], "B's pinholes before each refusal");
    drop(got);
    assert_eq!(rig.engine.pinholes().count_for_client(b), 8);
    let c = rig.engine.counters();
    assert_eq!((c.pinholes_refused, c.violations), (7, 7));
    assert_eq!(c.drops.get(Reason::FtpPinholeLimit), 7);
    assert_eq!(
        c.dropped,
        7 + 7,
        "each refusal, and one segment after each reset"
    );
    let opened = 250 + 2 * PORT_COMMANDS as u64 + 2 + 2;
    assert_eq!(c.pinholes_opened, opened);

    // The server connects to A's newest port: the pinhole admits it and frees A's quota.
    let d = rig.accept(&syn(server(20), SocketAddr::new(a, 2000 + 250), 9));
    assert!(via_pinhole(&d), "{d:?}");
    drop(d);
    assert_eq!(
        rig.engine.pinholes().count_for_client(a),
        PORT_PER_CLIENT - 1
    );
    let flows = rig.engine.flows().len() as i64;
    assert_eq!(flows, 15);
    let bound = flows * (FLOW_BUDGET + CONTROL_BUDGET) + PORT_TABLE as i64 * PINHOLE_BUDGET + SLACK;
    rig.finish("port flood", bound);
}

// ---- TFTP request flood ---------------------------------------------------------------------

const TFTP_TABLE: usize = 50;
const TFTP_PER_CLIENT: usize = 10;

fn tftp_flood_policy() -> String {
    format!(
        r#"
        [zones.a]
        networks = ["192.0.2.10"]
        [zones.b]
        networks = ["192.0.2.20"]
        [[rule]]
        name = "tftp-a"
        to = "a"
        action = "allow"
        inspect = "tftp"
        [rule.tftp]
        max_pending_per_client = 4
        [[rule]]
        name = "tftp-b"
        to = "b"
        action = "allow"
        inspect = "tftp"
        [rule.tftp]
        max_pending_per_client = 64
        [limits]
        max_pinholes = {TFTP_TABLE}
        max_pinholes_per_client = {TFTP_PER_CLIENT}
        "#
    )
}

/// Read requests, and the refusals counted by the quota their detail names.
struct TftpFlood {
    rrq: Vec<u8>,
    refusals: HashMap<&'static str, u64>,
}

impl TftpFlood {
    /// `count` requests from `client`, each from a new port, to `to`: returns how many opened
    /// a pinhole. Checks after every packet that a refused request left nothing behind (one
    /// request flow per pinhole, as before the flood) and the quotas.
    fn flood(
        &mut self,
        rig: &mut Rig,
        client: IpAddr,
        first: u16,
        count: u16,
        to: SocketAddr,
    ) -> usize {
        let mut accepted = 0;
        let unpaired = rig.engine.flows().len() - rig.engine.pinholes().len();
        for port in first..first + count {
            let d = rig.send(&testkit::udp(SocketAddr::new(client, port), to, &self.rrq));
            if d.verdict == Verdict::Accept {
                assert_eq!(pinhole_actions(&d.events, PinholeAction::Open), 1);
                accepted += 1;
            } else {
                assert_eq!(d.reason, Some(Reason::TftpRequestLimit), "{d:?}");
                let opened = d
                    .events
                    .iter()
                    .any(|e| matches!(e, Event::FlowOpened { .. }));
                assert!(!opened, "{d:?}");
                let detail = details(&d).concat();
                let kind = if detail.contains("requests already pending") {
                    "rule quota"
                } else if detail.contains("limits.max_pinholes_per_client") {
                    "client quota"
                } else if detail.starts_with("pinhole table full") {
                    "table full"
                } else {
                    panic!("unexpected detail {detail:?}")
                };
                *self.refusals.entry(kind).or_default() += 1;
            }
            let (flows, pinholes) = (rig.engine.flows().len(), rig.engine.pinholes());
            assert_eq!(
                flows - pinholes.len(),
                unpaired,
                "a flow per pinhole, no more"
            );
            assert!(pinholes.len() <= TFTP_TABLE);
            assert!(pinholes.count_for_client(client) <= TFTP_PER_CLIENT);
        }
        accepted
    }
}

/// Read requests from one client to two servers (rules with `max_pending_per_client` 4 and
/// 64), then from ten more clients, with `max_pinholes_per_client = 10` and
/// `max_pinholes = 50`:
///
/// - to server A the client gets 4 pinholes, then `tftp_request_limit` ("4 requests already
///   pending"), the rule's quota per client;
/// - to server B it gets 6 more, then `tftp_request_limit` naming
///   `limits.max_pinholes_per_client` (10 in all);
/// - four more clients get 10 each, then the table is full (50) and every other request is
///   `tftp_request_limit` with "pinhole table full" (checked before the client's quota).
///
/// A refused request leaves no flow: the flow table holds exactly one request flow per
/// pinhole throughout. When the pinholes expire the client may ask again, and its transfer
/// runs.
///
/// Memory bound: 50 × (`FLOW_BUDGET` + `PINHOLE_BUDGET`) + `SLACK`: 164 KiB, where the 605
/// requests would need ~0.7 MiB if each left a flow and a pinhole.
#[test]
fn tftp_request_flood_is_capped_per_client_and_globally() {
    let _serial = serial();
    let mut t = TftpFlood {
        rrq: tftp::rrq("image.bin", "octet", &[("blksize", "1428")]),
        refusals: HashMap::with_capacity(8),
    };
    let mut rig = Rig::new(&tftp_flood_policy(), Duration::from_micros(500));
    let (server_a, server_b) = (sock("192.0.2.10:69"), sock("192.0.2.20:69"));
    let x = ip("198.51.100.10");

    assert_eq!(t.flood(&mut rig, x, 20_000, 200, server_a), 4);
    assert_eq!(t.flood(&mut rig, x, 30_000, 200, server_b), 6);
    let mut per_client = [0; 10];
    for (n, got) in per_client.iter_mut().enumerate() {
        let client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 20 + n as u8));
        *got = t.flood(&mut rig, client, 20_000, 20, server_b);
    }
    assert_eq!(per_client, [10, 10, 10, 10, 0, 0, 0, 0, 0, 0]);
    // The fourth client filled the table with its tenth request: its other ten find the
    // table full.
    let expected = [
        ("rule quota", 196),
        ("client quota", 194 + 3 * 10),
        ("table full", 10 + 6 * 20),
    ];
    for (kind, n) in expected {
        assert_eq!(t.refusals.get(kind), Some(&n), "{kind}: {:?}", t.refusals);
    }
    let refused: u64 = expected.iter().map(|(_, n)| n).sum();
    let c = rig.engine.counters();
    assert_eq!(c.drops.get(Reason::TftpRequestLimit), refused);
    assert_eq!(
        (c.pinholes_refused, c.violations, c.dropped),
        (refused, refused, refused)
    );
    assert_eq!((c.pinholes_opened, c.flows_opened), (50, 50));
    assert_eq!(rig.engine.pinholes().len(), TFTP_TABLE);

    // The pinholes expire after request_timeout (10 s); the request flows live on for
    // udp_unreplied (30 s). The client may ask again, and its transfer runs.
    let expired = pinhole_actions(&rig.advance(11).events, PinholeAction::Expire);
    assert_eq!(expired, TFTP_TABLE);
    assert!(rig.engine.pinholes().is_empty());
    assert_eq!(rig.engine.counters().pinholes_expired, TFTP_TABLE as u64);
    assert_eq!(t.flood(&mut rig, x, 40_000, 5, server_a), 4);
    let tid = sock("192.0.2.10:45000");
    let client = SocketAddr::new(x, 40_000);
    let d = rig.accept(&testkit::udp(tid, client, &tftp::data(1, 100)));
    assert!(via_pinhole(&d), "{d:?}");
    drop(d);
    rig.accept(&testkit::udp(client, tid, &tftp::ack(1)));
    let bound = TFTP_TABLE as i64 * (FLOW_BUDGET + PINHOLE_BUDGET) + SLACK;
    rig.finish("tftp flood", bound);
}

// ---- stream reassembly floods ---------------------------------------------------------------

/// Out-of-order bytes one direction of a control connection may hold (`alg::stream`).
const MAX_OUT_OF_ORDER: i64 = 16 * KIB;
/// Out-of-order segments it may hold.
const MAX_OUT_OF_ORDER_SEGMENTS: i64 = 16;
/// Delivered bytes it keeps until the receiver acknowledges them.
const MAX_UNACKED: i64 = 64 * KIB;
/// Heap per held segment besides its bytes: the `Vec` and the B-tree entry.
const SEGMENT_OVERHEAD: i64 = 128;
/// Out-of-order segments sent on one connection.
const OOO_FLOOD: u32 = 20_000;
/// Connections that each hold their out-of-order cap.
const HOLDERS: u8 = 32;

fn psh(s: &TcpSession, offset: i64, payload: &[u8]) -> Vec<u8> {
    s.client_raw(flags::PSH | flags::ACK, offset, payload)
}

/// Part 1: 16 slices of the commands the client will send wait for a gap, then
/// `OOO_FLOOD` more out-of-order segments are each refused. Then the gap is filled and the
/// session goes on. Returns (peak heap during the flood, bytes flooded).
fn segment_cap_then_gap_filled(rig: &mut Rig) -> (i64, usize) {
    let client = v4(198, 51, 100, 10, 40_000);
    let mut c = ftp_login(rig, client, server(21), 1_000);
    let mut plan = b"NOOP\r\n".repeat(20);
    plan.extend_from_slice(b"PASV\r\n");
    for k in 1..=16usize {
        let at = 6 * k;
        rig.accept(&psh(&c, at as i64, &plan[at..at + 6]));
    }
    let junk = vec![b'X'; 1400];
    let mut rng = Rng(0x000F_00D5);
    let mut bytes = 0;
    for _ in 0..OOO_FLOOD {
        let at = rng.range(1000, 62_000) as i64;
        let len = rng.range(1, 1400) as usize;
        bytes += len;
        rig.drop(&psh(&c, at, &junk[..len]), Reason::FtpReassemblyLimit);
    }
    assert_eq!(rig.drops(Reason::FtpReassemblyLimit), u64::from(OOO_FLOOD));
    let peak = rig.heap.peak;

    // The gap is filled: the held commands are read, the session goes on.
    rig.accept(&c.client_data(&plan));
    let mut replies = b"200 NOOP ok.\r\n".repeat(20);
    replies.extend_from_slice(reply_227(40_001).as_bytes());
    let d = rig.accept(&c.server_data(&replies));
    assert_eq!(pinhole_actions(&d.events, PinholeAction::Open), 1, "{d:?}");
    let d = rig.accept(&syn(v4(198, 51, 100, 10, 40_100), server(40_001), 5));
    assert!(via_pinhole(&d));
    rig.accept(&c.client_data(b"NOOP\r\n"));
    rig.accept(&c.server_data(b"200 NOOP ok.\r\n"));
    (peak, bytes)
}

/// Part 2: exactly 16,384 bytes are held, one more byte is refused.
fn byte_cap(rig: &mut Rig) {
    let mut c = ftp_login(rig, v4(198, 51, 100, 11, 40_001), server(21), 2_000);
    let ys = vec![b'Y'; 10_000];
    rig.accept(&psh(&c, 100, &ys));
    rig.accept(&psh(&c, 20_000, &ys[..6_384]));
    rig.drop(&psh(&c, 30_000, b"Y"), Reason::FtpReassemblyLimit);
    rig.accept(&c.client_rst());
}

/// Part 3: a client that advertises a 1 GiB window and does not acknowledge: 65,000 bytes of
/// replies are kept, the next 1,000-byte segment is refused (10 times) until the client
/// acknowledges. Returns the heap the connection keeps after the acknowledgement.
fn unacked_cap(rig: &mut Rig) -> i64 {
    let (c3, srv) = (v4(198, 51, 100, 12, 40_002), server(21));
    let (cisn, sisn) = (5_000u32, 9_000u32);
    let before = rig.heap.sample();
    let client_syn = TcpBuilder::new(c3, srv, flags::SYN, cisn, 0, 65_535).syn_options(Some(14));
    rig.accept(&client_syn.build(&[]));
    let syn_ack = TcpBuilder::new(srv, c3, flags::SYN | flags::ACK, sisn, cisn + 1, 65_535);
    rig.accept(&syn_ack.syn_options(Some(7)).build(&[]));
    let ack = |n: u32| TcpBuilder::new(c3, srv, flags::ACK, cisn + 1, sisn + 1 + n, 65_535);
    rig.accept(&ack(0).build(&[]));
    let mut line = b"200 ".to_vec();
    line.resize(98, b'x');
    line.extend_from_slice(b"\r\n");
    let chunk = line.repeat(10);
    let segment = |offset: u32| {
        let seq = sisn + 1 + offset;
        TcpBuilder::new(srv, c3, flags::PSH | flags::ACK, seq, cisn + 1, 509).build(&chunk)
    };
    for k in 0..65 {
        rig.accept(&segment(k * 1000));
    }
    for _ in 0..10 {
        rig.drop(&segment(65_000), Reason::FtpReassemblyLimit);
    }
    rig.accept(&ack(65_000).build(&[]));
    rig.accept(&segment(65_000));
    rig.accept(&ack(66_000).build(&[]));
    rig.heap.sample() - before
}

/// Part 4: `HOLDERS` connections each hold the out-of-order cap. Returns (heap per login,
/// heap per holding connection).
fn many_holders(rig: &mut Rig) -> (i64, i64) {
    let before = rig.heap.sample();
    let holders: Vec<TcpSession> = (0..HOLDERS)
        .map(|k| {
            let client = v4(198, 51, 100, 100 + k, 40_000);
            ftp_login(rig, client, server(21), u32::from(k) * 10_000)
        })
        .collect();
    let logged_in = rig.heap.sample();
    let kib = vec![b'Z'; 1024];
    for s in &holders {
        for j in 0..16 {
            rig.accept(&psh(s, 1000 + j * 2000, &kib));
        }
        rig.drop(&psh(s, 40_000, &kib), Reason::FtpReassemblyLimit);
    }
    let holding = rig.heap.sample();
    let n = i64::from(HOLDERS);
    ((logged_in - before) / n, (holding - logged_in) / n)
}

/// Out-of-order segments on FTP control connections, all inside the TCP window:
///
/// 1. On one connection 16 segments wait for a gap (the slices of the commands the client
///    will send), then 20,000 more out-of-order segments come: each is dropped as
///    `ftp_reassembly_limit` (the 16-segment cap), nothing more is held. When the gap is
///    filled the held commands are read and the session negotiates a data connection.
/// 2. The byte cap: 16,384 bytes are held exactly, one more byte is refused.
/// 3. Delivered bytes the receiver does not acknowledge (a client advertising a 1 GiB window):
///    65,000 are kept, the next 1,000-byte segment is refused until the client acknowledges
///    (the memory is not given back: see
///    `acknowledged_bytes_give_their_memory_back`).
/// 4. 32 connections each hold the full 16 KiB: memory grows by about 17 KiB per
///    connection, so the aggregate is bounded only by the flow table: no cap covers the
///    stream buffers of all connections together (the test prints what the default limits
///    allow).
///
/// Memory bounds: part 1 one flow's `FLOW_BUDGET` + `CONTROL_BUDGET` + 16 KiB + 16 ×
/// `SEGMENT_OVERHEAD` + `SLACK` (87 KiB, where the 20,000 segments carry 13 MiB); the whole
/// test: each control connection's `FLOW_BUDGET` + `CONTROL_BUDGET`, each holding
/// connection's out-of-order cap, the unacknowledged cap once, and `SLACK` (916 KiB).
#[test]
fn out_of_order_segment_flood_is_bounded() {
    let _serial = serial();
    let mut rig = Rig::new(FTP_RULE, Duration::from_micros(100));
    let (single_peak, flooded) = segment_cap_then_gap_filled(&mut rig);
    let held_cap = MAX_OUT_OF_ORDER + MAX_OUT_OF_ORDER_SEGMENTS * SEGMENT_OVERHEAD;
    let single_bound = FLOW_BUDGET + CONTROL_BUDGET + held_cap + SLACK;
    assert!(
        single_peak < single_bound,
        "one connection: peak {} over {}",
        mib(single_peak),
        mib(single_bound)
    );
    byte_cap(&mut rig);
    let kept_unacked = unacked_cap(&mut rig);
    let (login, per_holder) = many_holders(&mut rig);
    assert!(
        (MAX_OUT_OF_ORDER..held_cap).contains(&per_holder),
        "{per_holder} bytes held per connection"
    );
    let drops = u64::from(OOO_FLOOD) + 1 + 10 + u64::from(HOLDERS);
    assert_eq!(rig.drops(Reason::FtpReassemblyLimit), drops);
    let violations = rig.engine.counters().violations;
    assert_eq!(violations, 0, "caps refuse, they are not violations");

    let controls = 3 + i64::from(HOLDERS);
    let bound = controls * (FLOW_BUDGET + CONTROL_BUDGET)
        + FLOW_BUDGET
        + (2 + i64::from(HOLDERS)) * held_cap
        + MAX_UNACKED
        + SLACK;
    let peak = rig.finish("out-of-order flood", bound);
    // What the caps allow under the default limits: every connection of one address
    // (max_flows_per_source = 16,384), or of the whole table (max_flows = 262,144), holding
    // the out-of-order cap, and also 64 KiB of replies it does not acknowledge.
    let holding = login + per_holder;
    let unacked = holding + kept_unacked;
    eprintln!(
        "out-of-order flood: {OOO_FLOOD} segments ({}) on one connection, its peak {} (bound \
         {}), whole test peak {}; a login costs {login} B, holding the out-of-order cap \
         {per_holder} B more, a connection that buffered 64 KiB of unacknowledged replies \
         keeps {kept_unacked} B after the ack. Holding out of order, one source could pin {} \
         and a full flow table {}; with unacknowledged replies too, {} and {}",
        mib(flooded as i64),
        mib(single_peak),
        mib(single_bound),
        mib(peak),
        mib(16_384 * holding),
        mib(262_144 * holding),
        mib(16_384 * unacked),
        mib(262_144 * unacked),
    );
}

const LINE_SEGMENTS: usize = 4200;
const LINE_SERVER_SEGMENTS: usize = 1000;

const LONG_LINE_RULES: &str = r#"
[[rule]]
name = "ftp"
ports = [21]
action = "allow"
inspect = "ftp"
[[rule]]
name = "ftp-long"
ports = [2121]
action = "allow"
inspect = "ftp"
[rule.ftp]
on_violation = "drop"
max_line = 65536
"#;

/// Sends `count` 1000-byte segments without a line end from the client (or the server) of
/// `s`, each acknowledged by the other side: the first `ok` pass, the next is
/// `ftp_line_too_long`, the rest are `ftp_blocked` (drop mode).
fn stream_without_crlf(rig: &mut Rig, s: &mut TcpSession, from_client: bool, count: usize) {
    let junk = [b'A'; 1000];
    for n in 1..=count {
        let frame = if from_client {
            s.client_data(&junk)
        } else {
            s.server_data(&junk)
        };
        match n {
            ..=65 => drop(rig.accept(&frame)),
            66 => {
                let d = rig.drop(&frame, Reason::FtpLineTooLong);
                assert_eq!(details(&d), ["line longer than 65536 bytes"]);
            }
            _ => drop(rig.drop(&frame, Reason::FtpBlocked)),
        }
        rig.accept(&if from_client {
            s.server_ack()
        } else {
            s.client_ack()
        });
    }
}

/// Control connections stream megabytes without a line end:
///
/// - with the default `max_line = 1024` and `on_violation = "reject"`, 4.2 MB from the client
///   in 1,000-byte segments: the second segment (byte 1,025) is `ftp_line_too_long` and resets
///   the connection; the other 4,198 segments are dropped as `tcp_after_reset`;
/// - with `max_line = 65536` and `on_violation = "drop"`, the same from the client: 65
///   segments pass, the 66th is `ftp_line_too_long`, the other 4,134 are `ftp_blocked`;
/// - and 1 MB from the server in the same mode: 934 segments `ftp_blocked`, while the client
///   side goes on.
///
/// Memory bound: 3 × (`FLOW_BUDGET` + `CONTROL_BUDGET`) + the line buffers (1 KiB + 2 × 64
/// KiB) + `SLACK`: 208 KiB, where 9.4 MB were streamed.
#[test]
fn overlong_line_flood_is_bounded() {
    let _serial = serial();
    let mut rig = Rig::new(LONG_LINE_RULES, Duration::from_micros(100));
    let junk = [b'A'; 1000];
    let mut r = ftp_login(&mut rig, v4(198, 51, 100, 10, 40_000), server(21), 1_000);
    rig.accept(&r.client_data(&junk));
    rig.accept(&r.server_ack());
    let d = rig.reject(&r.client_data(&junk), Reason::FtpLineTooLong);
    assert_eq!(details(&d), ["line longer than 1024 bytes"]);
    drop(d);
    for _ in 2..LINE_SEGMENTS {
        rig.drop(&r.client_data(&junk), Reason::TcpAfterReset);
    }
    let mut long = ftp_login(&mut rig, v4(198, 51, 100, 11, 40_000), server(2121), 2_000);
    stream_without_crlf(&mut rig, &mut long, true, LINE_SEGMENTS);
    let mut talk = ftp_login(&mut rig, v4(198, 51, 100, 12, 40_000), server(2121), 3_000);
    stream_without_crlf(&mut rig, &mut talk, false, LINE_SERVER_SEGMENTS);
    rig.accept(&talk.client_data(b"NOOP\r\n"));

    let c = rig.engine.counters();
    assert_eq!(c.drops.get(Reason::FtpLineTooLong), 3);
    assert_eq!(c.drops.get(Reason::TcpAfterReset), LINE_SEGMENTS as u64 - 2);
    let blocked = LINE_SEGMENTS - 66 + LINE_SERVER_SEGMENTS - 66;
    assert_eq!(c.drops.get(Reason::FtpBlocked), blocked as u64);
    assert_eq!(c.violations, 3);
    let dropped = 3 + LINE_SEGMENTS - 2 + blocked;
    assert_eq!(c.dropped, dropped as u64);
    let bound = 3 * (FLOW_BUDGET + CONTROL_BUDGET) + KIB + 2 * 64 * KIB + SLACK;
    rig.finish("overlong lines", bound);
}

// ---- fragment flood -------------------------------------------------------------------------

/// Fragment caps of the flood test.
const FRAG_DATAGRAMS: usize = 64;
const FRAG_BYTES: usize = 64 * 1024;
const FRAG_PER_DATAGRAM: usize = 8;
const FRAG_HELD: usize = 128;
/// Datagrams of each phase.
const FRAG_P1: u16 = 10_000;
const FRAG_P2: u16 = 1_000;
const FRAG_P3: u16 = 500;
const FRAG_P5: u16 = 500;

/// What the test knows is held, from the engine's own reports: a fragment is held when its
/// verdict is `Held` and leaves when a decision or `expire` releases its handle (exactly once).
struct HeldFragments {
    /// Handle to (datagram tag, bytes).
    held: HashMap<u64, (u64, usize)>,
    /// Released verdicts by reason.
    released: HashMap<Option<Reason>, u64>,
    /// Fragment bytes sent.
    sent: usize,
}

impl HeldFragments {
    fn new() -> Self {
        HeldFragments {
            held: HashMap::with_capacity(4 * FRAG_HELD),
            released: HashMap::with_capacity(16),
            sent: 0,
        }
    }

    fn release(&mut self, released: &[pinhole::Released]) {
        for r in released {
            let held = self.held.remove(&r.handle);
            assert!(held.is_some(), "handle {} released but not held", r.handle);
            *self.released.entry(r.reason).or_default() += 1;
        }
    }

    /// Sends one fragment of datagram `tag` carrying `bytes` of data; checks the caps.
    fn send(&mut self, rig: &mut Rig, frame: &[u8], tag: u64, bytes: usize) -> Decision {
        let handle = rig.next;
        self.sent += frame.len();
        let d = rig.send(frame);
        self.release(&d.released);
        if d.verdict == Verdict::Held {
            self.held.insert(handle, (tag, bytes));
        }
        assert!(self.held.len() <= FRAG_HELD, "{} held", self.held.len());
        let bytes: usize = self.held.values().map(|(_, b)| b).sum();
        assert!(bytes <= FRAG_BYTES, "{bytes} bytes held");
        let datagrams: HashSet<u64> = self.held.values().map(|(t, _)| *t).collect();
        assert!(
            datagrams.len() <= FRAG_DATAGRAMS,
            "{} datagrams",
            datagrams.len()
        );
        d
    }

    /// Sends the first `n` fragments of each datagram; all must be held.
    fn flood(
        &mut self,
        rig: &mut Rig,
        datagrams: impl Iterator<Item = (u64, Vec<Vec<u8>>)>,
        n: usize,
    ) {
        for (tag, pieces) in datagrams {
            for piece in &pieces[..n] {
                let bytes = piece.len() - data_offset(piece);
                let d = self.send(rig, piece, tag, bytes);
                assert_eq!(d.verdict, Verdict::Held, "{d:?}");
            }
        }
    }

    fn advance(&mut self, rig: &mut Rig, secs: u64) -> usize {
        let expired = rig.advance(secs);
        self.release(&expired.released);
        expired.released.len()
    }

    fn count(&self, reason: Reason) -> u64 {
        self.released.get(&Some(reason)).copied().unwrap_or(0)
    }
}

/// Where a fragment's data starts in its Ethernet frame (after the IPv4 header, or the IPv6
/// header and its fragment header).
fn data_offset(frame: &[u8]) -> usize {
    let ip = &frame[testkit::ETHERNET_LEN..];
    testkit::ETHERNET_LEN
        + if ip[0] >> 4 == 6 {
            48
        } else {
            usize::from(ip[0] & 0x0f) * 4
        }
}

/// A UDP datagram to the TFTP port of `payload` bytes from `src`, cut into fragments of
/// `chunk` data bytes with identification `id`.
fn fragments(src: IpAddr, payload: usize, chunk: usize, id: u32) -> Vec<Vec<u8>> {
    let dst = match src {
        IpAddr::V4(_) => ip(SERVER_IP),
        IpAddr::V6(_) => ip("2001:db8:2::10"),
    };
    let frame = testkit::udp(
        SocketAddr::new(src, 5000),
        SocketAddr::new(dst, 69),
        &vec![b'f'; payload],
    );
    testkit::fragment(&frame, chunk, id)
}

fn v6_host(i: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, i >> 8, i & 0xff))
}

fn v4_host(i: u16) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8))
}

/// Phases 1-3: each of the three memory caps alone, then everything times out. Returns the
/// fragments evicted.
fn fragment_caps(rig: &mut Rig, tally: &mut HeldFragments) -> u64 {
    // 1. The datagram cap: one 8-byte fragment each.
    let p1 = (0..FRAG_P1).map(|i| (u64::from(i), fragments(v4_host(i), 100, 8, u32::from(i))));
    tally.flood(rig, p1, 1);
    assert_eq!(tally.held.len(), FRAG_DATAGRAMS);
    let mut evicted = u64::from(FRAG_P1) - FRAG_DATAGRAMS as u64;
    assert_eq!(tally.count(Reason::FragmentEvicted), evicted);
    assert_eq!(tally.advance(rig, 31), FRAG_DATAGRAMS);

    // 2. The byte cap: one 1,600-byte fragment each (IPv6); 40 fit in 65,536 bytes.
    let p2 = (0..FRAG_P2).map(|i| {
        let tag = 10_000 + u64::from(i);
        (tag, fragments(v6_host(i), 3000, 1600, u32::from(i)))
    });
    tally.flood(rig, p2, 1);
    assert_eq!(tally.held.len(), 40);
    evicted += u64::from(FRAG_P2) - 40;
    assert_eq!(tally.count(Reason::FragmentEvicted), evicted);
    assert_eq!(tally.advance(rig, 31), 40);

    // 3. The cap on fragments held: four 16-byte fragments of five each, IPv4 and IPv6.
    let p3 = (0..FRAG_P3).map(|i| {
        let src = if i % 2 == 0 { v4_host(i) } else { v6_host(i) };
        (
            20_000 + u64::from(i),
            fragments(src, 60, 16, 20_000 + u32::from(i)),
        )
    });
    tally.flood(rig, p3, 4);
    assert_eq!(tally.held.len(), FRAG_HELD);
    evicted += (u64::from(FRAG_P3) - 32) * 4;
    assert_eq!(tally.count(Reason::FragmentEvicted), evicted);
    assert_eq!(tally.advance(rig, 31), FRAG_HELD);
    evicted
}

/// Incomplete fragmented datagrams from many sources, IPv4 and IPv6, against
/// `max_fragment_datagrams = 64`, `max_fragment_bytes = 65536`,
/// `max_fragments_per_datagram = 8`, `max_fragments_held = 128`. Each cap is hit alone:
///
/// 1. 10,000 datagrams of one 8-byte fragment (IPv4): 64 held, 9,936 evicted.
/// 2. 1,000 datagrams of one 1,600-byte fragment (IPv6): 40 held (64,000 bytes), 960 evicted.
/// 3. 500 datagrams of four 16-byte fragments (IPv4 and IPv6 in turn): 128 fragments of 32
///    datagrams held, 468 datagrams (1,872 fragments) evicted.
/// 4. One datagram of 20 fragments: the ninth poisons it (`fragment_limit`, with the 8 held),
///    the rest follow.
/// 5. After another flood fills the table, a fragmented TFTP request is reassembled and
///    accepted (its first fragment evicts the oldest junk).
///
/// Every held fragment gets exactly one verdict later (evicted, timed out, or its datagram's),
/// and the test's tally of them equals the engine's counters.
///
/// Memory bound: `max_fragment_bytes` + 128 bytes per held fragment + 512 bytes per datagram
/// + `SLACK`: 176 KiB, where the phases send 2.1 MiB of fragments.
#[test]
fn fragment_flood_is_bounded() {
    let _serial = serial();
    let policy = format!(
        "{}\n[limits]\nmax_fragment_datagrams = {FRAG_DATAGRAMS}\nmax_fragment_bytes = {FRAG_BYTES}\n\
         max_fragments_per_datagram = {FRAG_PER_DATAGRAM}\nmax_fragments_held = {FRAG_HELD}\n",
        pinhole::policy::DEFAULT_RULES
    );
    let mut tally = HeldFragments::new();
    let mut rig = Rig::new(&policy, Duration::from_micros(100));
    let mut evicted = fragment_caps(&mut rig, &mut tally);

    // 4. The cap per datagram.
    for (n, piece) in fragments(v4_host(7), 200, 8, 7777)[..20].iter().enumerate() {
        let d = tally.send(&mut rig, piece, 30_000, 8);
        if n < FRAG_PER_DATAGRAM {
            assert_eq!(d.verdict, Verdict::Held);
        } else {
            assert_eq!(d.reason, Some(Reason::FragmentLimit), "fragment {n}: {d:?}");
            let released = if n == FRAG_PER_DATAGRAM { 8 } else { 0 };
            assert_eq!(d.released.len(), released);
        }
    }
    assert!(tally.held.is_empty());
    assert_eq!(rig.drops(Reason::FragmentLimit), 20);
    assert_eq!(tally.advance(&mut rig, 31), 0);

    // 5. Another flood fills the table; then a fragmented request completes.
    let p5 = (0..FRAG_P5).map(|i| {
        (
            40_000 + u64::from(i),
            fragments(v4_host(i), 100, 8, 40_000 + u32::from(i)),
        )
    });
    tally.flood(&mut rig, p5, 1);
    let mut rrq = b"\x00\x01".to_vec();
    rrq.extend_from_slice(&[b'f'; 290]);
    rrq.extend_from_slice(b"\x00octet\x00");
    let request = testkit::udp(sock("198.51.100.10:5000"), sock("192.0.2.10:69"), &rrq);
    let pieces = testkit::fragment(&request, 128, 99);
    assert_eq!(pieces.len(), 3);
    tally.flood(&mut rig, std::iter::once((99, pieces[..2].to_vec())), 2);
    let d = tally.send(&mut rig, &pieces[2], 99, 50);
    assert_eq!((d.verdict, d.reason), (Verdict::Accept, None), "{d:?}");
    assert_eq!(d.released.len(), 2);
    assert!(d.released.iter().all(|r| r.verdict == Verdict::Accept));
    assert_eq!(pinhole_actions(&d.events, PinholeAction::Open), 1);
    assert_eq!(rig.engine.counters().datagrams_reassembled, 1);
    drop((d, pieces, request, rrq));
    assert_eq!(tally.advance(&mut rig, 31), FRAG_DATAGRAMS - 1);
    assert!(tally.held.is_empty(), "every held fragment got its verdict");

    evicted += u64::from(FRAG_P5) - FRAG_DATAGRAMS as u64 + 1;
    let timeouts = 64 + 40 + 128 + 63;
    assert_eq!(tally.count(Reason::FragmentEvicted), evicted);
    assert_eq!(tally.count(Reason::FragmentTimeout), timeouts);
    assert_eq!(tally.count(Reason::FragmentLimit), 8);
    assert_eq!(
        tally.released.get(&None),
        Some(&2),
        "the request's fragments"
    );
    let c = rig.engine.counters();
    assert_eq!(c.drops.get(Reason::FragmentEvicted), evicted);
    assert_eq!(c.drops.get(Reason::FragmentTimeout), timeouts);
    assert_eq!(c.drops.get(Reason::FragmentLimit), 20);
    let sent = tally.sent;
    let bound = FRAG_BYTES as i64 + 128 * FRAG_HELD as i64 + 512 * FRAG_DATAGRAMS as i64 + SLACK;
    rig.finish("fragment flood", bound);
    eprintln!("fragment flood: {} of fragments sent", mib(sent as i64));
}

// ---- found by the floods: failing, ignored until fixed --------------------------------------

/// A control connection with `data_outlives_control = false` admits 65 data connections; the
/// first is still open when the control connection ends. Every one is closed with it (README,
/// `[rule.ftp]`). Regression: the inspector used to remember only the newest 64 children,
/// closed ones included, so the oldest outlived its control connection; it now keeps exactly
/// the live ones (a child that ends leaves the list).
#[test]
fn data_connections_past_64_are_closed_with_their_control_connection() {
    let _serial = serial();
    let policy = format!("{FTP_RULE}\n[rule.ftp]\ndata_outlives_control = false\n");
    let mut rig = Rig::new(&policy, Duration::from_millis(1));
    let client = v4(198, 51, 100, 10, 40_000);
    let mut control = ftp_login(&mut rig, client, server(21), 1_000);
    let mut first = None;
    for n in 0..65u16 {
        rig.accept(&control.client_data(b"PASV\r\n"));
        rig.accept(&control.server_data(reply_227(50_000 + n).as_bytes()));
        let mut data = TcpSession::new(v4(198, 51, 100, 10, 41_000 + n), server(50_000 + n), 1, 2);
        for frame in data.handshake() {
            rig.accept(&frame);
        }
        if n == 0 {
            first = Some(data);
        }
    }
    let mut first = first.unwrap();
    rig.accept(&control.client_rst());
    let expired = rig.advance(11);
    let parent_closed = expired
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::FlowClosed {
                    cause: CloseCause::ParentClosed,
                    ..
                }
            )
        })
        .count();
    assert_eq!(
        parent_closed, 65,
        "every data connection closes with its control connection"
    );
    rig.drop(&first.client_data(b"still open?"), Reason::TcpNoHandshake);
}

/// A TFTP request refused for the rule's `max_pending_per_client` is counted in
/// `pinholes_refused` whether it opens a new request flow or arrives on an existing one (a
/// second request from the same client port). Regression: the second case used to count the
/// drop and the violation but not the refusal.
#[test]
fn every_tftp_request_refusal_is_counted_in_pinholes_refused() {
    let _serial = serial();
    let policy = "[[rule]]\nname = \"tftp\"\naction = \"allow\"\ninspect = \"tftp\"\n\
                  [rule.tftp]\nmax_pending_per_client = 2\n";
    let mut rig = Rig::new(policy, Duration::from_millis(1));
    let server = sock("192.0.2.10:69");
    let request = |port: u16, payload: &[u8]| {
        testkit::udp(SocketAddr::new(ip("198.51.100.10"), port), server, payload)
    };
    let read = tftp::rrq("a", "octet", &[]);
    rig.accept(&request(20_000, &read));
    rig.accept(&request(20_001, &read));
    // A new request flow: refused and counted.
    rig.drop(&request(20_002, &read), Reason::TftpRequestLimit);
    // The first request flow sends a write request (not a retransmission of its read, which
    // would refresh its pinhole): refused, not counted.
    rig.drop(
        &request(20_000, &tftp::wrq("b", "octet", &[])),
        Reason::TftpRequestLimit,
    );
    let c = rig.engine.counters();
    assert_eq!(c.drops.get(Reason::TftpRequestLimit), 2);
    assert_eq!(c.violations, 2);
    assert_eq!(c.pinholes_refused, 2, "both refusals are counted");
}

/// README, FTP inspection: "Delivered bytes are kept only until the receiver acknowledges them
/// (64 KiB at most)." Their memory too: the unacknowledged-bytes buffer grows by doubling only
/// up to the cap (doubling alone took 65,000 bytes to 128,000 bytes of capacity), and gives
/// its capacity back once the bytes are acknowledged (regression: it used to keep it until the
/// connection ended).
#[test]
fn acknowledged_bytes_give_their_memory_back() {
    let _serial = serial();
    let mut rig = Rig::new(FTP_RULE, Duration::from_micros(100));
    let kept = unacked_cap(&mut rig);
    let peak = rig.heap.peak;
    let connection = FLOW_BUDGET + CONTROL_BUDGET;
    // The buffer's capacity (at most the cap, 64 KiB) and the segment being delivered (the
    // inspector's scratch buffer, up to 4 KiB kept).
    assert!(
        peak <= connection + MAX_UNACKED + 4 * KIB + NOISE,
        "{peak} bytes at the peak for 65,000 bytes unacknowledged"
    );
    // What stays is the connection and the 4 KiB of capacity the buffer keeps for the next
    // replies, not the 64 KiB it once held (NOISE: the harness's other threads).
    assert!(
        kept <= connection + 4 * KIB + NOISE,
        "{kept} bytes kept after the acknowledgement"
    );
}
