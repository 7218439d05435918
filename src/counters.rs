//! Counters: what the engine did, by kind and reason. Plain integers owned by one engine;
//! adapters sum them across workers.

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::decision::{Reason, Verdict};

/// Number of distinct drop reasons.
const REASONS: usize = Reason::ALL.len();

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
    /// Packets of offloaded connections the engine no longer tracked, accepted on the
    /// kernel's word (a FIN or RST after the engine's own timeout).
    pub offloaded_untracked: u64,
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
            offloaded_untracked: 0,
            pinholes_opened: 0,
            pinholes_used: 0,
            pinholes_expired: 0,
            pinholes_closed: 0,
            pinholes_refused: 0,
            violations: 0,
            datagrams_reassembled: 0,
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
            offloaded_untracked,
            pinholes_opened,
            pinholes_used,
            pinholes_expired,
            pinholes_closed,
            pinholes_refused,
            violations,
            datagrams_reassembled,
        } = other;
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
        self.offloaded_untracked += offloaded_untracked;
        self.pinholes_opened += pinholes_opened;
        self.pinholes_used += pinholes_used;
        self.pinholes_expired += pinholes_expired;
        self.pinholes_closed += pinholes_closed;
        self.pinholes_refused += pinholes_refused;
        self.violations += violations;
        self.datagrams_reassembled += datagrams_reassembled;
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
