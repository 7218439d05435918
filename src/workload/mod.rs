//! A synthetic but realistic mixed workload for replay benchmarks (`pinhole gen-pcap`).
//!
//! `flows` sessions are open at once; each step picks one of them at random and emits its next
//! frame, and a finished session is replaced by a new one, so the capture interleaves many
//! concurrent conversations the way a router sees them. The mix (by sessions started):
//!
//! | kind | share | what |
//! |---|---|---|
//! | web | 54 % | TCP to port 443: handshake, 1–4 requests answered by 1–3 full segments, FIN |
//! | dns | 25 % | one UDP query to port 53 and its answer |
//! | tftp | 10 % | an RFC 1350 read of 1–8 blocks |
//! | ftp | 7 % | login, 2–4 transfers by PASV/EPSV/PORT/EPRT of 4–63 full segments each, QUIT |
//! | attacks | 4 % | an FTP bounce, a port scan SYN, an out-of-window injection, a TFTP TID hijack |
//!
//! One session in ten is IPv6. Clients come from the benchmarking ranges 198.18.0.0/15 and
//! 2001:2::/48; servers are in 192.0.2.0/24 and 2001:db8:2::/64. The policy that goes with it is
//! `rules/bench.toml`: under it every packet is accepted except the one hostile packet of each
//! attack session, which is dropped for the reason [`Kind::expected_drop`] names.
//!
//! Timestamps advance by a fixed interval per packet (`rate` packets per second), so no flow
//! times out during the capture unless it would at that packet rate.

mod session;

use std::io::{self, Write};
use std::time::Duration;

use crate::io::pcap::PcapWriter;
use crate::time::Instant;
use crate::wire::LinkType;

pub use session::Kind;
use session::Session;

/// The bench policy that goes with the generated workload (`rules/bench.toml`).
pub const BENCH_RULES: &str = include_str!("../../rules/bench.toml");

/// What to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Sessions open at once (each is one or two flows).
    pub flows: u32,
    /// Packets to write.
    pub packets: u64,
    /// Simulated packet rate: the timestamps advance by `1 s / rate` per packet.
    pub rate: u64,
    /// Seed of the pseudo-random choices; the same seed gives the same capture.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            flows: 10_000,
            packets: 200_000,
            rate: 1_000_000,
            seed: 1,
        }
    }
}

/// What was generated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Frames written.
    pub packets: u64,
    /// Bytes of the frames written.
    pub bytes: u64,
    /// Sessions started, by kind, in the order of [`Kind::ALL`].
    pub sessions: [u64; 8],
    /// Hostile packets written, by kind, in the order of [`Kind::ALL`] (one per attack session
    /// that got as far as its attack).
    pub attacks: [u64; 8],
}

impl Summary {
    /// Sessions started of `kind`.
    pub fn sessions_of(&self, kind: Kind) -> u64 {
        self.sessions[kind_index(kind)]
    }
}

impl Summary {
    /// What was written, for people, with the command that benchmarks it.
    pub fn render(&self, file: &str) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "{file}: {} packets, {} MiB of frames\nsessions started:",
            self.packets,
            self.bytes / (1 << 20)
        );
        for (kind, n) in Kind::ALL.iter().zip(self.sessions) {
            let _ = write!(out, " {} {n},", kind.name());
        }
        out.pop();
        out.push_str("\nhostile packets:");
        for (kind, n) in Kind::ALL.iter().zip(self.attacks) {
            if let Some(reason) = kind.expected_drop() {
                let _ = write!(out, " {} {n} (drop: {reason}),", kind.name());
            }
        }
        out.pop();
        let _ = writeln!(
            out,
            "\nbenchmark it with: pinhole replay --bench --rules rules/bench.toml {file}"
        );
        out
    }
}

fn kind_index(kind: Kind) -> usize {
    Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

/// SplitMix64: small, fast, and good enough to pick sessions and sizes.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }
}

fn pick_kind(rng: &mut Rng) -> Kind {
    match rng.below(100) {
        0..54 => Kind::Web,
        54..79 => Kind::Dns,
        79..89 => Kind::Tftp,
        89..96 => Kind::Ftp,
        96 => Kind::AttackBounce,
        97 => Kind::AttackScan,
        98 => Kind::AttackInjection,
        _ => Kind::AttackTid,
    }
}

/// Generates the workload, calling `each` with every frame and its timestamp.
pub fn generate(
    params: Params,
    mut each: impl FnMut(Instant, &[u8]) -> io::Result<()>,
) -> io::Result<Summary> {
    let mut rng = Rng::new(params.seed);
    let mut slots: Vec<Option<Session>> = Vec::new();
    slots.resize_with(params.flows.max(1) as usize, || None);
    let mut summary = Summary::default();
    let mut next_id = 0u64;
    let interval = Duration::from_secs(1).as_nanos() as u64 / params.rate.max(1);
    let start = Instant::from_secs(1_700_000_000);
    while summary.packets < params.packets {
        let index = rng.below(slots.len() as u32) as usize;
        let slot = &mut slots[index];
        let (frame, hostile) = loop {
            if let Some(session) = slot.as_mut()
                && let Some(next) = session.next_frame()
            {
                break next;
            }
            let kind = pick_kind(&mut rng);
            summary.sessions[kind_index(kind)] += 1;
            *slot = Some(Session::new(kind, next_id, &mut rng));
            next_id += 1;
        };
        if hostile && let Some(session) = slot.as_ref() {
            summary.attacks[kind_index(session.kind())] += 1;
        }
        let at = start + Duration::from_nanos(summary.packets.saturating_mul(interval));
        each(at, &frame)?;
        summary.packets += 1;
        summary.bytes += frame.len() as u64;
    }
    Ok(summary)
}

/// Generates the workload into a pcap file (Ethernet).
pub fn write_pcap(params: Params, out: impl Write) -> io::Result<Summary> {
    let mut writer = PcapWriter::new(
        io::BufWriter::with_capacity(1 << 20, out),
        LinkType::Ethernet,
    )?;
    let summary = generate(params, |at, frame| writer.write(at, frame))?;
    writer.finish()?.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_capture_other_seed_other_capture() {
        let params = Params {
            flows: 50,
            packets: 2_000,
            ..Params::default()
        };
        let a = write_pcap(params, Vec::new()).unwrap();
        let mut one = Vec::new();
        let mut two = Vec::new();
        write_pcap(params, &mut one).unwrap();
        write_pcap(params, &mut two).unwrap();
        assert_eq!(one, two);
        let mut three = Vec::new();
        write_pcap(Params { seed: 2, ..params }, &mut three).unwrap();
        assert_ne!(one, three);
        assert_eq!(a.packets, 2_000);
        // 24-byte file header, 16 bytes per record header.
        assert_eq!(one.len() as u64, 24 + 16 * a.packets + a.bytes);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Rng::new(7);
        let mut seen = [false; 10];
        for _ in 0..1_000 {
            let n = rng.below(10) as usize;
            seen[n] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
