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
}
