//! `pinhole replay --bench`: replay throughput with the capture already in memory, measured
//! beside a bare loop that only decodes each packet with etherparse and does one hash lookup
//! (the practical ceiling of any per-packet inspector on this machine).
//!
//! Each repetition runs pinhole first, on a fresh engine, then the bare loop; the report gives
//! the median, minimum and maximum of each and the ratio of the medians. With `workers > 1` the
//! packets are split by the hash of their address pair, as NFQUEUE's `--queue-balance` splits
//! them, and each worker thread runs its own engine (or its own bare table) on its share.

// Throughput and memory figures are reports: f64 precision is plenty for them.
#![allow(clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::hash::BuildHasher as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use hashbrown::HashMap;

use crate::counters::Counters;
use crate::decision::Verdict;
use crate::engine::{Engine, PacketInfo};
use crate::io::pcap::{CaptureError, read_capture};
use crate::policy::{IfaceName, Policy};
use crate::time::Instant;
use crate::wire::{LinkType, link};

/// A capture held in memory.
pub struct Capture {
    bytes: Vec<u8>,
    packets: Vec<Packet>,
    /// The file ended inside a record.
    pub truncated: bool,
}

struct Packet {
    at: Instant,
    start: usize,
    len: u32,
    link: LinkType,
    interface: Option<IfaceName>,
}

impl Capture {
    /// Reads every packet of the capture at `path` into memory.
    pub fn load(path: &Path) -> Result<Capture, CaptureError> {
        let mut capture = Capture {
            bytes: Vec::new(),
            packets: Vec::new(),
            truncated: false,
        };
        let summary = read_capture(path, |packet| -> Result<(), std::convert::Infallible> {
            capture.packets.push(Packet {
                at: packet.timestamp,
                start: capture.bytes.len(),
                len: packet.data.len() as u32,
                link: packet.link,
                interface: packet.interface,
            });
            capture.bytes.extend_from_slice(packet.data);
            Ok(())
        })?;
        capture.truncated = summary.is_ok_and(|s| s.truncated);
        Ok(capture)
    }

    /// Number of packets.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// True when the capture has no packets.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Bytes of all frames.
    pub fn frame_bytes(&self) -> usize {
        self.bytes.len()
    }

    fn frame(&self, packet: &Packet) -> &[u8] {
        &self.bytes[packet.start..packet.start + packet.len as usize]
    }
}

/// How to run the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchOptions {
    /// Repetitions of each loop.
    pub reps: u32,
    /// Worker threads, each with its own engine and its own share of the flows.
    pub workers: u32,
    /// Verify TCP/UDP checksums, as `replay --verify-checksums`.
    pub verify_checksums: bool,
}

/// Median, minimum and maximum of the repetitions.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
        };
        Spread {
            median,
            min: sorted.first().copied().unwrap_or(0.0),
            max: sorted.last().copied().unwrap_or(0.0),
        }
    }
}

/// Throughput of one loop over the repetitions.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Throughput {
    /// Million packets per second, all workers together.
    pub mpps: Spread,
    /// Million packets per second per worker thread (per core when each has one).
    pub mpps_per_core: Spread,
    /// Nanoseconds per packet on one worker (wall time × workers / packets).
    pub ns_per_packet: Spread,
}

impl Throughput {
    fn of(packets: usize, workers: u32, runs: &[Duration]) -> Throughput {
        let mpps: Vec<f64> = runs
            .iter()
            .map(|d| packets as f64 / d.as_secs_f64().max(1e-9) / 1e6)
            .collect();
        let per_core: Vec<f64> = mpps.iter().map(|m| m / f64::from(workers)).collect();
        let ns: Vec<f64> = per_core.iter().map(|m| 1e3 / m.max(1e-12)).collect();
        Throughput {
            mpps: Spread::of(&mpps),
            mpps_per_core: Spread::of(&per_core),
            ns_per_packet: Spread::of(&ns),
        }
    }
}

/// The outcome of `replay --bench` on one capture.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchReport {
    /// Packets in the capture.
    pub packets: usize,
    /// Bytes of all frames.
    pub frame_bytes: usize,
    /// Repetitions of each loop.
    pub reps: u32,
    /// Worker threads.
    pub workers: u32,
    /// pinhole: decode, policy, tracking, inspection.
    pub pinhole: Throughput,
    /// The bare loop: etherparse decode and one hash lookup per packet.
    pub bare: Throughput,
    /// pinhole's median throughput divided by the bare loop's.
    pub ratio: f64,
    /// Flows tracked at the end of the capture (all workers).
    pub flows: usize,
    /// The most flows seen tracked at once (sampled every 65536 packets and at the end).
    pub peak_flows: usize,
    /// Pinholes open at the end of the capture.
    pub pinholes: usize,
    /// Resident memory the engines added over the first repetition, in bytes.
    pub engine_rss_bytes: u64,
    /// `engine_rss_bytes / flows`: resident bytes per tracked flow, tables included.
    pub rss_bytes_per_flow: f64,
    /// Peak resident memory of the process (capture in memory included), in bytes.
    pub peak_rss_bytes: u64,
    /// Packets accepted by the engine (last repetition).
    pub accepted: u64,
    /// Packets dropped or rejected, by reason (last repetition).
    pub drops: BTreeMap<&'static str, u64>,
}

/// The worker NFQUEUE balancing would pick: a symmetric hash of the address pair (ports left
/// out, so an FTP session's data connections go where its control connection goes).
fn worker_of(frame: &[u8], link: LinkType, workers: u32) -> usize {
    if workers <= 1 {
        return 0;
    }
    let Some(key) = bare_key(frame, link) else {
        return 0;
    };
    let (a, b) = (key.lo.0, key.hi.0);
    let pair = if a <= b { (a, b) } else { (b, a) };
    let hash = foldhash::fast::FixedState::with_seed(0).hash_one(pair);
    (hash % u64::from(workers)) as usize
}

fn slice(frame: &[u8], link: LinkType) -> Option<SlicedPacket<'_>> {
    match link {
        LinkType::Ethernet => SlicedPacket::from_ethernet(frame).ok(),
        other => SlicedPacket::from_ip(link::ip_bytes(other, frame).ok()?).ok(),
    }
}

/// The bare loop's flow key: protocol and both endpoints, lower endpoint first.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct BareKey {
    proto: u8,
    lo: ([u8; 16], u16),
    hi: ([u8; 16], u16),
}

fn bare_key(frame: &[u8], link: LinkType) -> Option<BareKey> {
    let sliced = slice(frame, link)?;
    let (proto, src, dst) = match sliced.net? {
        NetSlice::Ipv4(v4) => {
            let h = v4.header();
            (
                h.protocol().0,
                h.source_addr().to_ipv6_mapped().octets(),
                h.destination_addr().to_ipv6_mapped().octets(),
            )
        }
        NetSlice::Ipv6(v6) => {
            let h = v6.header();
            (
                v6.payload().ip_number.0,
                h.source_addr().octets(),
                h.destination_addr().octets(),
            )
        }
        NetSlice::Arp(_) => return None,
    };
    let (sport, dport) = match sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => (tcp.source_port(), tcp.destination_port()),
        Some(TransportSlice::Udp(udp)) => (udp.source_port(), udp.destination_port()),
        _ => (0, 0),
    };
    let (a, b) = ((src, sport), (dst, dport));
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    Some(BareKey { proto, lo, hi })
}

/// One worker's bare loop: decode, then one lookup (insert on a miss) per packet.
fn bare_pass(capture: &Capture, share: &[u32]) -> u64 {
    let mut table: HashMap<BareKey, u32, foldhash::fast::RandomState> = HashMap::default();
    let mut undecoded = 0u64;
    for &index in share {
        let packet = &capture.packets[index as usize];
        match bare_key(capture.frame(packet), packet.link) {
            Some(key) => *table.entry(key).or_insert(0) += 1,
            None => undecoded += 1,
        }
    }
    black_box(table.len() as u64 + undecoded)
}

/// What one worker's engine ended with.
struct EngineOutcome {
    counters: Counters,
    flows: usize,
    peak_flows: usize,
    pinholes: usize,
}

/// One worker's replay through a fresh engine, as `replay` does it but without output.
fn engine_pass(
    capture: &Capture,
    share: &[u32],
    policy: &Arc<Policy>,
    verify_checksums: bool,
    measure: impl FnOnce(),
) -> EngineOutcome {
    let mut engine = Engine::new(Arc::clone(policy));
    let mut peak_flows = 0;
    for (n, &index) in share.iter().enumerate() {
        let packet = &capture.packets[index as usize];
        if engine.next_timeout().is_some_and(|at| at <= packet.at) {
            black_box(engine.expire(packet.at));
        }
        let mut info = PacketInfo::new(u64::from(index), packet.link);
        info.ingress = packet.interface;
        info.verify_checksums = verify_checksums;
        let decision = engine.process(packet.at, &info, capture.frame(packet));
        black_box(decision.verdict == Verdict::Accept);
        if n.trailing_zeros() >= 16 {
            peak_flows = peak_flows.max(engine.flows().len());
        }
    }
    measure();
    EngineOutcome {
        counters: engine.counters().clone(),
        flows: engine.flows().len(),
        peak_flows: peak_flows.max(engine.flows().len()),
        pinholes: engine.pinholes().len(),
    }
}

/// Runs `work` on every share in its own thread, started together; returns the wall time and
/// the results.
fn on_workers<T: Send>(
    shares: &[Vec<u32>],
    work: impl Fn(usize, &[u32]) -> T + Sync,
) -> (Duration, Vec<T>) {
    if let [share] = shares {
        let start = std::time::Instant::now();
        let result = work(0, share);
        return (start.elapsed(), vec![result]);
    }
    let barrier = Barrier::new(shares.len() + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .iter()
            .enumerate()
            .map(|(i, share)| {
                let (barrier, work) = (&barrier, &work);
                scope.spawn(move || {
                    barrier.wait();
                    work(i, share)
                })
            })
            .collect();
        barrier.wait();
        let start = std::time::Instant::now();
        let results: Vec<T> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
        (start.elapsed(), results)
    })
}

/// Resident and peak resident memory of this process, from `/proc/self/status` (zero where
/// that file is missing).
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Benchmarks `capture` under `policy`.
pub fn bench(capture: &Capture, policy: &Arc<Policy>, options: BenchOptions) -> BenchReport {
    let workers = options.workers.max(1);
    let mut shares = vec![Vec::new(); workers as usize];
    for (index, packet) in capture.packets.iter().enumerate() {
        let worker = worker_of(capture.frame(packet), packet.link, workers);
        shares[worker].push(index as u32);
    }
    let mut pinhole_runs = Vec::new();
    let mut bare_runs = Vec::new();
    let mut last = Vec::new();
    let mut engine_rss_bytes = 0;
    for rep in 0..options.reps.max(1) {
        let before = rss().0;
        let resident = AtomicU64::new(0);
        // In the first repetition every engine stays alive until all have finished and one
        // worker has read the RSS.
        let finished = Barrier::new(shares.len());
        let (elapsed, outcomes) = on_workers(&shares, |worker, share| {
            engine_pass(capture, share, policy, options.verify_checksums, || {
                if rep == 0 {
                    finished.wait();
                    if worker == 0 {
                        resident.store(rss().0, Ordering::Relaxed);
                    }
                    finished.wait();
                }
            })
        });
        if rep == 0 {
            engine_rss_bytes = resident.load(Ordering::Relaxed).saturating_sub(before);
        }
        pinhole_runs.push(elapsed);
        last = outcomes;
        let (elapsed, _) = on_workers(&shares, |_, share| bare_pass(capture, share));
        bare_runs.push(elapsed);
    }
    let packets = capture.len();
    let pinhole = Throughput::of(packets, workers, &pinhole_runs);
    let bare = Throughput::of(packets, workers, &bare_runs);
    let mut counters = Counters::default();
    for outcome in &last {
        counters.add(&outcome.counters);
    }
    let flows = last.iter().map(|o| o.flows).sum();
    let drops = counters
        .drops
        .nonzero()
        .map(|(reason, n)| (reason.as_str(), n))
        .collect();
    BenchReport {
        packets,
        frame_bytes: capture.frame_bytes(),
        reps: options.reps.max(1),
        workers,
        pinhole,
        bare,
        ratio: pinhole.mpps.median / bare.mpps.median.max(1e-12),
        flows,
        peak_flows: last.iter().map(|o| o.peak_flows).sum(),
        pinholes: last.iter().map(|o| o.pinholes).sum(),
        engine_rss_bytes,
        rss_bytes_per_flow: engine_rss_bytes as f64 / (flows.max(1) as f64),
        peak_rss_bytes: rss().1,
        accepted: counters.accepted,
        drops,
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

fn spread(s: Spread, digits: usize) -> String {
    format!(
        "{:.d$} [{:.d$}..{:.d$}]",
        s.median,
        s.min,
        s.max,
        d = digits
    )
}

impl BenchReport {
    /// The report for people.
    pub fn render_text(&self, name: &str) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "== {name}: {} packets, {:.1} MiB of frames in memory, {} repetitions, {} worker{}",
            self.packets,
            mib(self.frame_bytes as u64),
            self.reps,
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            out,
            "{:<11} {:>28} {:>28} {:>26}",
            "", "Mpps per core median [min..max]", "Mpps total", "ns/packet"
        );
        for (label, t) in [("pinhole", &self.pinhole), ("bare loop", &self.bare)] {
            let _ = writeln!(
                out,
                "{label:<11} {:>28} {:>28} {:>26}",
                spread(t.mpps_per_core, 2),
                spread(t.mpps, 2),
                spread(t.ns_per_packet, 1)
            );
        }
        let _ = writeln!(
            out,
            "ratio pinhole / bare loop (medians): {:.2}",
            self.ratio
        );
        let _ = writeln!(
            out,
            "flows tracked: {} at the end, {} at the peak; pinholes open: {}",
            self.flows, self.peak_flows, self.pinholes
        );
        let _ = writeln!(
            out,
            "memory: the engines added {:.1} MiB resident = {:.0} bytes per tracked flow; process peak {:.1} MiB",
            mib(self.engine_rss_bytes),
            self.rss_bytes_per_flow,
            mib(self.peak_rss_bytes)
        );
        let drops: Vec<String> = self.drops.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = writeln!(
            out,
            "verdicts (last repetition): {} accepted; dropped: {}",
            self.accepted,
            if drops.is_empty() {
                "none".to_owned()
            } else {
                drops.join(", ")
            }
        );
        out
    }

    /// The report as one JSON object: `{"type": "bench", "file": ..., ...}`.
    pub fn to_json(&self, name: &str) -> String {
        #[derive(serde::Serialize)]
        struct Tagged<'a> {
            r#type: &'static str,
            file: &'a str,
            #[serde(flatten)]
            report: &'a BenchReport,
        }
        serde_json::to_string(&Tagged {
            r#type: "bench",
            file: name,
            report: self,
        })
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_and_even_counts() {
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
    }

    #[test]
    fn both_directions_share_a_bare_key_and_a_worker() {
        use crate::testkit::{sock, udp};
        let there = udp(sock("198.18.0.1:1000"), sock("192.0.2.53:53"), b"q");
        let back = udp(sock("192.0.2.53:53"), sock("198.18.0.1:1000"), b"a");
        let key = |f: &[u8]| bare_key(f, LinkType::Ethernet).map(|k| (k.proto, k.lo, k.hi));
        assert!(key(&there).is_some());
        assert_eq!(key(&there), key(&back));
        for workers in 2..5 {
            assert_eq!(
                worker_of(&there, LinkType::Ethernet, workers),
                worker_of(&back, LinkType::Ethernet, workers)
            );
        }
    }
}
