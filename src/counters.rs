//! Counters: what the engine did, by kind and reason. Plain integers owned by one engine;
//! adapters sum them across workers.

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::alg::Alg;
use crate::decision::{Reason, Verdict};
use crate::event::{TransferDirection, TransferResult};

/// Number of distinct drop reasons.
const REASONS: usize = Reason::ALL.len();
/// Number of inspectors.
const ALGS: usize = Alg::ALL.len();

/// Every counter of one engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Packets handed to [`crate::Engine::process`].
    pub packets: u64,
    /// Packets accepted (including held packets released as accepted).
    pub accepted: u64,
    /// Packets dropped (including held packets released as dropped).
    pub dropped: u64,
    /// Drops by reason.
    pub drops: DropCounts,
    /// Flows created.
    pub flows_opened: u64,
    /// Flows that ended (any cause).
    pub flows_closed: u64,
    /// Flows evicted because the table was full.
    pub flows_evicted: u64,
    /// Flows handed to the kernel (offload mode).
    pub flows_offloaded: u64,
    /// Inspected flows the kernel translates, as learned from its connection tracking.
    pub flows_translated: u64,
    /// Packets of offloaded connections the engine no longer tracked, accepted on the
    /// kernel's word (a FIN or RST after the engine's own timeout).
    pub offloaded_untracked: u64,
    /// Offloaded flows that ended when the kernel's connection tracking removed their
    /// connection (a destroy event).
    pub flows_ended_in_kernel: u64,
    /// Flows taken over from the kernel's entries of connections a pinhole admitted (a
    /// failover pair's standby after a takeover; see [`crate::PacketInfo::synced`]).
    pub flows_taken_over: u64,
    /// Pinholes opened.
    pub pinholes_opened: u64,
    /// Pinholes consumed by their connection.
    pub pinholes_used: u64,
    /// Pinholes that expired unused.
    pub pinholes_expired: u64,
    /// Pinholes closed unused (parent ended, quota).
    pub pinholes_closed: u64,
    /// Pinholes refused because the table was full.
    pub pinholes_refused: u64,
    /// Protocol violations reported by inspectors.
    pub violations: u64,
    /// Datagrams reassembled from fragments.
    pub datagrams_reassembled: u64,
    /// Pinhole outcomes by inspector (`pinholes_opened` ... `pinholes_refused`, split by ALG).
    pub pinholes_by_alg: PinholeCounts,
    /// Violations by inspector and reason.
    pub violations_by_reason: ViolationCounts,
    /// Transfer records by inspector, direction and result, and their bytes.
    pub transfers: TransferCounts,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            packets: 0,
            accepted: 0,
            dropped: 0,
            drops: DropCounts([0; REASONS]),
            flows_opened: 0,
            flows_closed: 0,
            flows_evicted: 0,
            flows_offloaded: 0,
            flows_translated: 0,
            offloaded_untracked: 0,
            flows_ended_in_kernel: 0,
            flows_taken_over: 0,
            pinholes_opened: 0,
            pinholes_used: 0,
            pinholes_expired: 0,
            pinholes_closed: 0,
            pinholes_refused: 0,
            violations: 0,
            datagrams_reassembled: 0,
            pinholes_by_alg: PinholeCounts([[0; PinholeOutcome::ALL.len()]; ALGS]),
            violations_by_reason: ViolationCounts([[0; REASONS]; ALGS]),
            transfers: TransferCounts::default(),
        }
    }
}

impl Counters {
    /// Adds `other` into `self` (workers' counters into a total).
    pub fn add(&mut self, other: &Counters) {
        let Counters {
            packets,
            accepted,
            dropped,
            drops,
            flows_opened,
            flows_closed,
            flows_evicted,
            flows_offloaded,
            flows_translated,
            offloaded_untracked,
            flows_ended_in_kernel,
            flows_taken_over,
            pinholes_opened,
            pinholes_used,
            pinholes_expired,
            pinholes_closed,
            pinholes_refused,
            violations,
            datagrams_reassembled,
            pinholes_by_alg,
            violations_by_reason,
            transfers,
        } = other;
        self.transfers.add(transfers);
        self.packets += packets;
        self.accepted += accepted;
        self.dropped += dropped;
        for (mine, theirs) in self.drops.0.iter_mut().zip(drops.0.iter()) {
            *mine += theirs;
        }
        self.flows_opened += flows_opened;
        self.flows_closed += flows_closed;
        self.flows_evicted += flows_evicted;
        self.flows_offloaded += flows_offloaded;
        self.flows_translated += flows_translated;
        self.offloaded_untracked += offloaded_untracked;
        self.flows_ended_in_kernel += flows_ended_in_kernel;
        self.flows_taken_over += flows_taken_over;
        self.pinholes_opened += pinholes_opened;
        self.pinholes_used += pinholes_used;
        self.pinholes_expired += pinholes_expired;
        self.pinholes_closed += pinholes_closed;
        self.pinholes_refused += pinholes_refused;
        self.violations += violations;
        self.datagrams_reassembled += datagrams_reassembled;
        for (mine, theirs) in self.pinholes_by_alg.0.iter_mut().zip(&pinholes_by_alg.0) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m += t;
            }
        }
        for (mine, theirs) in self
            .violations_by_reason
            .0
            .iter_mut()
            .zip(&violations_by_reason.0)
        {
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m += t;
            }
        }
    }

    /// Counts a pinhole outcome, in its total and by inspector.
    pub fn pinhole(&mut self, alg: Alg, outcome: PinholeOutcome) {
        let total = match outcome {
            PinholeOutcome::Opened => &mut self.pinholes_opened,
            PinholeOutcome::Used => &mut self.pinholes_used,
            PinholeOutcome::Expired => &mut self.pinholes_expired,
            PinholeOutcome::Closed => &mut self.pinholes_closed,
            PinholeOutcome::Refused => &mut self.pinholes_refused,
            // No pinhole: counted by inspector only.
            PinholeOutcome::RangeAdmitted => {
                self.pinholes_by_alg.0[alg as usize][outcome as usize] += 1;
                return;
            }
        };
        *total += 1;
        self.pinholes_by_alg.0[alg as usize][outcome as usize] += 1;
    }

    /// Counts a transfer record, and its bytes.
    pub fn transfer(&mut self, transfer: &crate::event::Transfer) {
        let (a, d) = (transfer.alg as usize, transfer.direction as usize);
        self.transfers.count[a][d][transfer.result as usize] += 1;
        self.transfer_bytes(transfer);
    }

    /// Counts a transfer record's bytes only.
    pub fn transfer_bytes(&mut self, transfer: &crate::event::Transfer) {
        let (a, d) = (transfer.alg as usize, transfer.direction as usize);
        self.transfers.bytes[a][d] +=
            transfer.bytes_up.unwrap_or(0) + transfer.bytes_down.unwrap_or(0);
    }

    /// Counts a violation an inspector reported.
    pub fn violation(&mut self, alg: Alg, reason: Reason) {
        self.violations += 1;
        self.violations_by_reason.0[alg as usize][reason as usize] += 1;
    }

    /// Counts a final verdict.
    pub fn verdict(&mut self, verdict: Verdict, reason: Option<Reason>) {
        match verdict {
            Verdict::Accept => self.accepted += 1,
            Verdict::Drop | Verdict::Reject => {
                self.dropped += 1;
                if let Some(reason) = reason {
                    self.drops.0[reason as usize] += 1;
                }
            }
            Verdict::Held => {}
        }
    }
}

/// Drop counts indexed by [`Reason`]; serializes as `{"reason": count}` for nonzero counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropCounts([u64; REASONS]);

impl DropCounts {
    /// Drops for one reason.
    pub fn get(&self, reason: Reason) -> u64 {
        self.0[reason as usize]
    }

    /// Nonzero counts, in reason order.
    pub fn nonzero(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL
            .iter()
            .map(|r| (*r, self.0[*r as usize]))
            .filter(|(_, n)| *n > 0)
    }
}

impl Serialize for DropCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (reason, count) in self.nonzero() {
            map.serialize_entry(reason.as_str(), &count)?;
        }
        map.end()
    }
}

/// What became of a pinhole (the `outcome` label of `pinhole_pinholes_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinholeOutcome {
    /// Opened after a positive reply or a request.
    Opened,
    /// Consumed by the connection it expected.
    Used,
    /// Timed out unused.
    Expired,
    /// Closed unused (its control connection ended, a quota displaced it).
    Closed,
    /// Not opened: a table, quota or per-client cap was full.
    Refused,
    /// Not a pinhole: a connection an FTPS session's passive range admitted
    /// (`ftps = "allow-passive-range"`).
    RangeAdmitted,
}

impl PinholeOutcome {
    /// Every outcome, in index order.
    pub const ALL: [PinholeOutcome; 6] = [
        PinholeOutcome::Opened,
        PinholeOutcome::Used,
        PinholeOutcome::Expired,
        PinholeOutcome::Closed,
        PinholeOutcome::Refused,
        PinholeOutcome::RangeAdmitted,
    ];

    /// Stable lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            PinholeOutcome::Opened => "opened",
            PinholeOutcome::Used => "used",
            PinholeOutcome::Expired => "expired",
            PinholeOutcome::Closed => "closed",
            PinholeOutcome::Refused => "refused",
            PinholeOutcome::RangeAdmitted => "range_admitted",
        }
    }
}

/// Pinhole outcomes by inspector; serializes as `{"ftp":{"opened":N,...},"tftp":{...}}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinholeCounts([[u64; PinholeOutcome::ALL.len()]; ALGS]);

impl PinholeCounts {
    /// The count of one inspector's outcome.
    pub fn get(&self, alg: Alg, outcome: PinholeOutcome) -> u64 {
        self.0[alg as usize][outcome as usize]
    }
}

impl Serialize for PinholeCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(ALGS))?;
        for alg in Alg::ALL {
            let counts: serde_json::Map<String, serde_json::Value> = PinholeOutcome::ALL
                .iter()
                .map(|o| (o.as_str().to_owned(), self.get(alg, *o).into()))
                .collect();
            map.serialize_entry(alg.as_str(), &counts)?;
        }
        map.end()
    }
}

/// Violations by inspector and reason; serializes as `{"ftp":{"ftp_bounce":N},"tftp":{}}`
/// (nonzero counts only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViolationCounts([[u64; REASONS]; ALGS]);

impl ViolationCounts {
    /// Violations of one inspector for one reason.
    pub fn get(&self, alg: Alg, reason: Reason) -> u64 {
        self.0[alg as usize][reason as usize]
    }

    /// Nonzero counts, by inspector then reason order.
    pub fn nonzero(&self) -> impl Iterator<Item = (Alg, Reason, u64)> + '_ {
        Alg::ALL.into_iter().flat_map(move |alg| {
            Reason::ALL
                .iter()
                .map(move |r| (alg, *r, self.get(alg, *r)))
                .filter(|(_, _, n)| *n > 0)
        })
    }
}

impl Serialize for ViolationCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(ALGS))?;
        for alg in Alg::ALL {
            let counts: serde_json::Map<String, serde_json::Value> = Reason::ALL
                .iter()
                .map(|r| (r.as_str().to_owned(), self.get(alg, *r)))
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (r, n.into()))
                .collect();
            map.serialize_entry(alg.as_str(), &counts)?;
        }
        map.end()
    }
}

const DIRECTIONS: [TransferDirection; 4] = [
    TransferDirection::Download,
    TransferDirection::Upload,
    TransferDirection::Listing,
    TransferDirection::Unknown,
];
const RESULTS: [TransferResult; 4] = [
    TransferResult::Complete,
    TransferResult::Failed,
    TransferResult::Aborted,
    TransferResult::Unfinished,
];

/// Transfers by inspector, direction and result, and the file bytes they moved (as counted
/// by pinhole; see [`crate::event::BytesSource`]). Serializes as
/// `{"ftp":{"download":{"complete":N,...,"bytes":B},...},"tftp":{...}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferCounts {
    count: [[[u64; 4]; 4]; ALGS],
    bytes: [[u64; 4]; ALGS],
}

impl TransferCounts {
    /// Transfers of one inspector in one direction with one result.
    pub fn get(&self, alg: Alg, direction: TransferDirection, result: TransferResult) -> u64 {
        self.count[alg as usize][direction as usize][result as usize]
    }

    /// File bytes moved by one inspector's transfers in one direction.
    pub fn bytes(&self, alg: Alg, direction: TransferDirection) -> u64 {
        self.bytes[alg as usize][direction as usize]
    }

    /// Every (inspector, direction, result) with its count, in a fixed order.
    pub fn all(&self) -> impl Iterator<Item = (Alg, TransferDirection, TransferResult, u64)> + '_ {
        Alg::ALL.into_iter().flat_map(move |alg| {
            DIRECTIONS.into_iter().flat_map(move |d| {
                RESULTS
                    .into_iter()
                    .map(move |r| (alg, d, r, self.get(alg, d, r)))
            })
        })
    }

    /// Every (inspector, direction) with its bytes.
    pub fn all_bytes(&self) -> impl Iterator<Item = (Alg, TransferDirection, u64)> + '_ {
        Alg::ALL.into_iter().flat_map(move |alg| {
            DIRECTIONS
                .into_iter()
                .map(move |d| (alg, d, self.bytes(alg, d)))
        })
    }

    fn add(&mut self, other: &TransferCounts) {
        for (mine, theirs) in self
            .count
            .iter_mut()
            .flatten()
            .zip(other.count.iter().flatten())
        {
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m += t;
            }
        }
        for (mine, theirs) in self.bytes.iter_mut().zip(&other.bytes) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                *m += t;
            }
        }
    }
}

impl Serialize for TransferCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(ALGS))?;
        for alg in Alg::ALL {
            let mut by_direction = serde_json::Map::new();
            for d in DIRECTIONS {
                let mut counts: serde_json::Map<String, serde_json::Value> = RESULTS
                    .iter()
                    .map(|r| (r.as_str().to_owned(), self.get(alg, d, *r).into()))
                    .collect();
                counts.insert("bytes".to_owned(), self.bytes(alg, d).into());
                by_direction.insert(d.as_str().to_owned(), counts.into());
            }
            map.serialize_entry(alg.as_str(), &by_direction)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_discriminants_index_all() {
        for (i, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
        }
    }

    #[test]
    fn drop_counts_serialize_nonzero_only() {
        let mut c = Counters::default();
        c.verdict(Verdict::Drop, Some(Reason::TcpNoHandshake));
        c.verdict(Verdict::Drop, Some(Reason::TcpNoHandshake));
        c.verdict(Verdict::Accept, None);
        assert_eq!(
            serde_json::to_string(&c.drops).unwrap(),
            r#"{"tcp_no_handshake":2}"#
        );
        assert_eq!((c.accepted, c.dropped), (1, 2));
    }

    #[test]
    fn add_sums_every_counter_and_reason() {
        let mut a = Counters::default();
        a.verdict(Verdict::Drop, Some(Reason::DefaultDeny));
        a.flows_offloaded = 2;
        let mut total = Counters::default();
        total.add(&a);
        total.add(&a);
        assert_eq!(total.drops.get(Reason::DefaultDeny), 2);
        assert_eq!((total.dropped, total.flows_offloaded), (2, 4));
    }
}
