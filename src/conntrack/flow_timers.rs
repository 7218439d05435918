//! The flow table's timers: a binary heap of (deadline, slot, generation) with lazy removal.
//!
//! A flow's timer is re-filed about three times in its life (leaving the handshake, a FIN, its
//! TIME-WAIT). A B-tree paid a node walk and rebalancing for each insert and remove; a heap
//! push is a few comparisons (deadlines mostly grow, so a new entry rarely climbs), and a
//! removal costs nothing here: the entry stays, and the table, which knows the deadline each
//! live flow is filed under, skips it when it comes to the top. Stale entries are counted, and
//! when they outnumber the live ones the table rebuilds the heap without them, so memory stays
//! proportional to the number of flows.
//!
//! Popping in (deadline, slot) order is the order the B-tree gave, so flows expire and are
//! evicted in the same order as before.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::time::Instant;

/// One filed timer: the deadline, the slot and the slot's generation at filing time.
pub(super) type Timer = (Instant, u32, u32);

/// Timers of one class of flows (embryonic or settled).
#[derive(Default)]
pub(super) struct FlowTimers {
    heap: BinaryHeap<Reverse<Timer>>,
    /// Entries that belong to a flow still filed here.
    live: usize,
}

/// Stale entries tolerated beyond the live ones before the heap is rebuilt.
const STALE_SLACK: usize = 1024;

impl FlowTimers {
    /// Files a flow's timer.
    pub(super) fn push(&mut self, timer: Timer) {
        self.heap.push(Reverse(timer));
        self.live += 1;
    }

    /// A flow filed here left (removed, or re-filed): its entry is now stale. True when
    /// stale entries outnumber live ones enough that the caller should [`FlowTimers::compact`].
    #[must_use]
    pub(super) fn forget(&mut self) -> bool {
        self.live = self.live.saturating_sub(1);
        self.drop_if_none_live();
        self.heap.len() > 2 * self.live + STALE_SLACK
    }

    /// With no live entry left, every entry is stale: dropped at once, so that an empty table
    /// has no deadline.
    fn drop_if_none_live(&mut self) {
        if self.live == 0 {
            self.heap.clear();
        }
    }

    /// Number of flows filed here.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// The earliest entry, live or stale (so possibly early, never late).
    pub(super) fn peek(&self) -> Option<Timer> {
        self.heap.peek().map(|Reverse(t)| *t)
    }

    /// Removes the earliest entry, live or stale. The caller tells which with
    /// [`FlowTimers::taken`] (a live one was taken out).
    pub(super) fn pop(&mut self) -> Option<Timer> {
        self.heap.pop().map(|Reverse(t)| t)
    }

    /// A live entry was popped: one flow fewer filed here.
    pub(super) fn taken(&mut self) {
        self.live = self.live.saturating_sub(1);
        self.drop_if_none_live();
    }

    /// Drops every stale entry (`live` tells which are live).
    pub(super) fn compact(&mut self, live: impl Fn(&Timer) -> bool) {
        let mut timers: Vec<Reverse<Timer>> = std::mem::take(&mut self.heap).into_vec();
        timers.retain(|Reverse(t)| live(t));
        // A flow re-filed back under a deadline it had left is in twice: once is enough.
        timers.sort_unstable();
        timers.dedup();
        timers.shrink_to_fit();
        self.live = timers.len();
        self.heap = BinaryHeap::from(timers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_deadline_then_slot_order() {
        let mut t = FlowTimers::default();
        for (at, slot) in [(30, 2), (10, 5), (30, 1), (20, 0)] {
            t.push((Instant::from_secs(at), slot, 0));
        }
        let order: Vec<u32> = std::iter::from_fn(|| t.pop()).map(|(_, s, _)| s).collect();
        assert_eq!(order, vec![5, 0, 1, 2]);
    }

    #[test]
    fn forgetting_asks_for_compaction_once_stale_entries_pile_up() {
        let mut t = FlowTimers::default();
        let n = 3000u32;
        for slot in 0..n {
            t.push((Instant::from_secs(u64::from(slot)), slot, 0));
        }
        // Every flow re-filed twice under new deadlines: the old entries are stale.
        let mut asked = false;
        for generation in 1..=2 {
            for slot in 0..n {
                asked |= t.forget();
                let at = Instant::from_secs(10_000 * u64::from(generation) + u64::from(slot));
                t.push((at, slot, generation));
            }
        }
        assert!(asked, "{} entries for {} flows", t.heap.len(), t.len());
        t.compact(|&(_, _, generation)| generation == 2);
        assert_eq!(t.heap.len(), n as usize);
        assert_eq!(t.len(), n as usize);
        assert_eq!(
            t.peek().map(|(at, _, _)| at),
            Some(Instant::from_secs(20_000))
        );
    }

    #[test]
    fn no_live_entry_no_deadline() {
        let mut t = FlowTimers::default();
        t.push((Instant::from_secs(5), 0, 0));
        t.push((Instant::from_secs(9), 1, 0));
        let _ = t.forget();
        assert!(t.peek().is_some(), "one flow is still filed");
        let _ = t.forget();
        assert_eq!(t.peek(), None);
        assert_eq!(t.len(), 0);
    }
}
