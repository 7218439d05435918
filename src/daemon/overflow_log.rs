//! Rate-limited log lines for overflows: a flood that fills a table produces one warning per
//! kind per interval, carrying how many happened since the last line, instead of a line per
//! packet. The counters (`pinhole stats`) count every one regardless.

use std::time::Duration;

use crate::decision::{Decision, Reason};
use crate::event::{CloseCause, Event};
use crate::time::Instant;

/// At most one line per kind per this interval.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// What overflowed: a drop reason, or an eviction that made room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// A packet dropped because a cap was reached ([`Reason::is_overflow`]).
    Drop(Reason),
    /// A flow evicted from a full table to make room for a new one.
    FlowEvicted,
}

impl Overflow {
    fn name(self) -> &'static str {
        match self {
            Overflow::Drop(reason) => reason.as_str(),
            Overflow::FlowEvicted => "flow_evicted",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Overflow::Drop(reason) => reason.help(),
            Overflow::FlowEvicted => "flow table full: a flow was evicted for a new one",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    kind: Overflow,
    /// When the last line was written.
    logged: Instant,
    /// Occurrences since then (not yet in a line).
    pending: u64,
}

/// The log's state: one slot per kind seen.
#[derive(Debug, Default)]
pub struct OverflowLog {
    slots: Vec<Slot>,
}

/// A line to write: the kind, and how many occurrences it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line {
    /// What overflowed.
    pub kind: Overflow,
    /// Occurrences since the previous line (this one included).
    pub count: u64,
}

impl OverflowLog {
    /// Records one occurrence at `now`; returns the line to write, if one is due.
    pub fn note(&mut self, kind: Overflow, now: Instant) -> Option<Line> {
        let Some(i) = self.slots.iter().position(|s| s.kind == kind) else {
            // The first of its kind is logged at once.
            self.slots.push(Slot {
                kind,
                logged: now,
                pending: 0,
            });
            return Some(Line { kind, count: 1 });
        };
        let slot = &mut self.slots[i];
        slot.pending += 1;
        if now.saturating_since(slot.logged) < INTERVAL {
            return None;
        }
        let line = Line {
            kind,
            count: slot.pending,
        };
        slot.logged = now;
        slot.pending = 0;
        Some(line)
    }

    /// Notes the overflows of a decision (its drop reason, its released fragments, its
    /// evictions) and writes the lines due.
    pub fn note_decision(&mut self, decision: &Decision, now: Instant, queue: u16) {
        let reasons = decision
            .reason
            .into_iter()
            .chain(decision.released.iter().filter_map(|r| r.reason));
        for reason in reasons.filter(|r| r.is_overflow()) {
            self.write(Overflow::Drop(reason), now, queue);
        }
        for event in &decision.events {
            if let Event::FlowClosed {
                cause: CloseCause::Evicted,
                ..
            } = event
            {
                self.write(Overflow::FlowEvicted, now, queue);
            }
        }
    }

    fn write(&mut self, kind: Overflow, now: Instant, queue: u16) {
        if let Some(line) = self.note(kind, now) {
            tracing::warn!(
                queue,
                overflow = line.kind.name(),
                count = line.count,
                "{} ({} since the last such line; at most one a second)",
                line.kind.help(),
                line.count
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_occurrence_logs_then_one_line_per_interval_with_the_count() {
        let mut log = OverflowLog::default();
        let t0 = Instant::from_secs(100);
        let flow = Overflow::Drop(Reason::FlowLimit);
        assert_eq!(
            log.note(flow, t0),
            Some(Line {
                kind: flow,
                count: 1
            })
        );
        for i in 1..=999 {
            assert_eq!(log.note(flow, t0 + Duration::from_millis(i)), None, "{i}");
        }
        // A second later: one line for the 999 silent ones and this one.
        assert_eq!(
            log.note(flow, t0 + INTERVAL),
            Some(Line {
                kind: flow,
                count: 1000
            })
        );
        // Kinds are limited separately.
        let evicted = Overflow::FlowEvicted;
        assert_eq!(
            log.note(evicted, t0 + INTERVAL),
            Some(Line {
                kind: evicted,
                count: 1
            })
        );
        assert_eq!(
            log.note(flow, t0 + INTERVAL + Duration::from_millis(5)),
            None
        );
    }

    #[test]
    fn decisions_are_noted_by_reason_fragments_and_evictions() {
        let mut log = OverflowLog::default();
        let now = Instant::from_secs(5);
        log.note_decision(&Decision::drop(Reason::DefaultDeny, None), now, 0);
        assert!(log.slots.is_empty(), "a policy drop is no overflow");
        log.note_decision(&Decision::drop(Reason::FlowSourceLimit, None), now, 0);
        assert_eq!(log.slots.len(), 1);
        assert_eq!(log.slots[0].kind, Overflow::Drop(Reason::FlowSourceLimit));
    }
}
