//! The flow table: a hash index over a slab of flows, with timers and a hard cap.
//!
//! The index holds slot numbers only; a probe compares the key with the slot's flow's own
//! tuple (`FlowKey::is_key_of`: no second copy of the key per flow). Timers are kept in two
//! heaps (`flow_timers`), one for embryonic flows (handshake not complete, datagram
//! unanswered) and one for the rest. A flow's entry holds the deadline it is filed under;
//! traffic that pushes the deadline later does not touch the timers (the common case costs
//! nothing), and [`FlowTable::expire`] re-files an entry whose flow turned out to have a later
//! deadline. A deadline moved earlier is re-filed at once. A re-filed or removed flow leaves a
//! stale heap entry behind, which is skipped when it comes to the top; a heap whose stale
//! entries outnumber its live ones is rebuilt, so memory stays proportional to the number of
//! flows.
//!
//! When the table is full, inserting evicts the embryonic flow closest to its timeout (the
//! oldest handshake, which is what a SYN flood fills the table with), and only if there is none,
//! the established flow closest to its timeout.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

use std::hash::BuildHasher;

use hashbrown::{HashMap, HashTable};

use crate::conntrack::flow::Flow;
use crate::conntrack::flow_timers::{FlowTimers, Timer};
use crate::conntrack::key::FlowKey;
use crate::time::Instant;

/// A reference to a flow that stays valid (and detects reuse) after the flow is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowHandle {
    slot: u32,
    generation: u32,
}

struct Entry {
    /// The flow.
    flow: Flow,
    /// When the flow expires without further traffic.
    deadline: Instant,
    /// The deadline its timer entry is filed under (never later than `deadline`).
    indexed: Instant,
    /// Which timer set holds it.
    embryonic: bool,
}

/// A place in the slab. The index holds only slot numbers; a probe compares the key with the
/// flow's own tuple in place (a copy of the key here would cost 40 bytes a flow to save a few
/// instructions a probe).
struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

impl Slot {
    /// The key of the flow in this slot (`None` while the slot is free).
    fn key(&self) -> Option<FlowKey> {
        self.entry.as_ref().map(|e| e.flow.tuple.key())
    }
}

/// The result of [`FlowTable::insert`].
#[derive(Debug)]
pub struct Inserted {
    /// The new flow's handle.
    pub handle: FlowHandle,
    /// The flow evicted to make room, with the handle it had.
    pub evicted: Option<(FlowHandle, Flow)>,
}

/// The table cannot hold any flow (its cap is zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull;

/// How many stale timer entries eviction re-files before it gives up looking for the true
/// earliest deadline.
const EVICTION_PROBES: usize = 16;

type Hasher = foldhash::fast::RandomState;

/// Up to this many slots the slab doubles as a `Vec` does (small tables stay small).
const SLAB_STEP: usize = 4096;

/// Flows by key, with expiry and a cap.
pub struct FlowTable {
    /// Slot numbers, hashed by their flow's key.
    index: HashTable<u32>,
    hasher: Hasher,
    slots: Vec<Slot>,
    free: Vec<u32>,
    embryonic_timers: FlowTimers,
    settled_timers: FlowTimers,
    /// Flows each address initiated through the rules (see [`crate::conntrack::FlowOrigin::counts_against_source`]).
    per_source: HashMap<IpAddr, u32, Hasher>,
    max: usize,
}

impl FlowTable {
    /// An empty table holding at most `max` flows.
    pub fn new(max: usize) -> Self {
        FlowTable {
            index: HashTable::new(),
            hasher: Hasher::default(),
            slots: Vec::new(),
            free: Vec::new(),
            embryonic_timers: FlowTimers::default(),
            settled_timers: FlowTimers::default(),
            per_source: HashMap::with_hasher(Hasher::default()),
            max,
        }
    }

    /// Number of flows `src` initiated through the rules.
    pub fn count_from(&self, src: IpAddr) -> usize {
        self.per_source.get(&src).map_or(0, |&n| n as usize)
    }

    /// Number of distinct addresses with flows counted by [`FlowTable::count_from`].
    pub fn sources(&self) -> usize {
        self.per_source.len()
    }

    /// Number of flows.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when there are no flows.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The cap.
    pub fn capacity(&self) -> usize {
        self.max
    }

    /// Changes the cap, evicting (embryonic flows first) down to it; returns the evicted
    /// flows with the handles they had.
    pub fn set_capacity(&mut self, max: usize) -> Vec<(FlowHandle, Flow)> {
        self.max = max;
        let mut evicted = Vec::new();
        while self.len() > self.max {
            match self.evict_one() {
                Some(flow) => evicted.push(flow),
                None => break,
            }
        }
        evicted
    }

    /// Number of flows in the embryonic timer set.
    pub fn embryonic_len(&self) -> usize {
        self.embryonic_timers.len()
    }

    /// The flow with this key.
    pub fn lookup(&self, key: &FlowKey) -> Option<FlowHandle> {
        let slots = &self.slots;
        self.index
            .find(self.hasher.hash_one(key), |&slot| {
                slots[slot as usize]
                    .entry
                    .as_ref()
                    .is_some_and(|e| key.is_key_of(&e.flow.tuple))
            })
            .map(|&slot| FlowHandle {
                slot,
                generation: slots[slot as usize].generation,
            })
    }

    /// Takes `slot`, filed under `key`, out of the index.
    fn unindex(&mut self, key: &FlowKey, slot: u32) {
        if let Ok(entry) = self
            .index
            .find_entry(self.hasher.hash_one(key), |&s| s == slot)
        {
            entry.remove();
        }
    }

    fn entry(&self, handle: FlowHandle) -> Option<&Entry> {
        let slot = self.slots.get(handle.slot as usize)?;
        if slot.generation == handle.generation {
            slot.entry.as_ref()
        } else {
            None
        }
    }

    fn entry_mut(&mut self, handle: FlowHandle) -> Option<&mut Entry> {
        let slot = self.slots.get_mut(handle.slot as usize)?;
        if slot.generation == handle.generation {
            slot.entry.as_mut()
        } else {
            None
        }
    }

    /// The flow behind a handle, if it still exists.
    pub fn get(&self, handle: FlowHandle) -> Option<&Flow> {
        self.entry(handle).map(|e| &e.flow)
    }

    /// The flow behind a handle, mutably.
    pub fn get_mut(&mut self, handle: FlowHandle) -> Option<&mut Flow> {
        self.entry_mut(handle).map(|e| &mut e.flow)
    }

    /// The deadline of a flow.
    pub fn deadline(&self, handle: FlowHandle) -> Option<Instant> {
        self.entry(handle).map(|e| e.deadline)
    }

    /// Adds a flow that expires at `deadline`. When the table is full, one flow is evicted
    /// first and returned with the handle it had. Fails only when the cap is zero.
    pub fn insert(&mut self, flow: Flow, deadline: Instant) -> Result<Inserted, TableFull> {
        let key = flow.tuple.key();
        debug_assert!(self.lookup(&key).is_none(), "insert of a tracked key");
        let evicted = if self.len() >= self.max {
            Some(self.evict_one().ok_or(TableFull)?)
        } else {
            None
        };
        let embryonic = flow.state.is_embryonic();
        if flow.origin.counts_against_source() {
            *self.per_source.entry(flow.tuple.src).or_default() += 1;
        }
        let slot = if let Some(slot) = self.free.pop() {
            slot
        } else {
            let slot = u32::try_from(self.slots.len()).map_err(|_| TableFull)?;
            if self.slots.len() == self.slots.capacity() && self.slots.len() >= SLAB_STEP {
                // Past the first few thousand, a quarter more at a time, not double: the spare
                // room stays under a quarter of the flows (a doubled slab of 300-byte slots
                // held up to 300 bytes a flow unused). Growth stays amortised O(1), and the
                // allocator moves a large block by remapping its pages, not by copying them.
                self.slots.reserve_exact(self.slots.len() / 4);
            }
            self.slots.push(Slot {
                generation: 0,
                entry: None,
            });
            slot
        };
        let record = &mut self.slots[slot as usize];
        record.entry = Some(Entry {
            flow,
            deadline,
            indexed: deadline,
            embryonic,
        });
        let handle = FlowHandle {
            slot,
            generation: record.generation,
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(hasher.hash_one(key), slot, |&s| {
            slots[s as usize].key().map_or(0, |k| hasher.hash_one(k))
        });
        self.timers(embryonic)
            .push((deadline, slot, handle.generation));
        Ok(Inserted { handle, evicted })
    }

    fn timers(&mut self, embryonic: bool) -> &mut FlowTimers {
        if embryonic {
            &mut self.embryonic_timers
        } else {
            &mut self.settled_timers
        }
    }

    /// True when `timer`, from the embryonic or the settled heap, is the one its flow is filed
    /// under (not one a removal or a re-filing left behind).
    fn is_live(slots: &[Slot], embryonic: bool, &(at, slot, generation): &Timer) -> bool {
        slots.get(slot as usize).is_some_and(|record| {
            record.generation == generation
                && record
                    .entry
                    .as_ref()
                    .is_some_and(|e| e.indexed == at && e.embryonic == embryonic)
        })
    }

    /// A flow left the heap of `embryonic` flows: its entry there is stale from now on.
    fn unfile(&mut self, embryonic: bool) {
        if self.timers(embryonic).forget() {
            let slots = &self.slots;
            let timers = if embryonic {
                &mut self.embryonic_timers
            } else {
                &mut self.settled_timers
            };
            timers.compact(|t| Self::is_live(slots, embryonic, t));
        }
    }

    /// Takes the earliest live entry out of one heap, skipping stale ones; with `due`, only
    /// if it is due by then.
    fn pop_live(&mut self, embryonic: bool, due: Option<Instant>) -> Option<(Instant, u32)> {
        loop {
            let (at, _, _) = self.timers(embryonic).peek()?;
            if due.is_some_and(|due| at > due) {
                return None;
            }
            let timer = self.timers(embryonic).pop()?;
            if Self::is_live(&self.slots, embryonic, &timer) {
                self.timers(embryonic).taken();
                return Some((timer.0, timer.1));
            }
        }
    }

    /// Files the flow in `slot` again under `deadline` (its entry was taken out by `pop_live`).
    fn refile(&mut self, slot: u32, deadline: Instant) {
        let record = &mut self.slots[slot as usize];
        let generation = record.generation;
        if let Some(entry) = record.entry.as_mut() {
            entry.indexed = deadline;
            let embryonic = entry.embryonic;
            self.timers(embryonic).push((deadline, slot, generation));
        }
    }

    /// Sets a flow's deadline, and re-files it if it left the embryonic stage or the deadline
    /// moved earlier than its timer entry. Call after every packet of the flow.
    pub fn set_deadline(&mut self, handle: FlowHandle, deadline: Instant) {
        let Some(entry) = self.entry_mut(handle) else {
            return;
        };
        entry.deadline = deadline;
        let embryonic = entry.flow.state.is_embryonic();
        if embryonic == entry.embryonic && deadline >= entry.indexed {
            return;
        }
        let was_embryonic = entry.embryonic;
        entry.indexed = deadline;
        entry.embryonic = embryonic;
        self.unfile(was_embryonic);
        self.timers(embryonic)
            .push((deadline, handle.slot, handle.generation));
    }

    /// Removes a flow, returning it.
    pub fn remove(&mut self, handle: FlowHandle) -> Option<Flow> {
        let embryonic = self.entry(handle)?.embryonic;
        if let Some(key) = self.slots[handle.slot as usize].key() {
            self.unindex(&key, handle.slot);
        }
        let flow = self.release_slot(handle.slot);
        self.unfile(embryonic);
        Some(flow)
    }

    fn release_slot(&mut self, slot: u32) -> Flow {
        let record = &mut self.slots[slot as usize];
        record.generation = record.generation.wrapping_add(1);
        self.free.push(slot);
        let Some(entry) = record.entry.take() else {
            unreachable!("release of an empty slot")
        };
        if entry.flow.origin.counts_against_source()
            && let Some(n) = self.per_source.get_mut(&entry.flow.tuple.src)
        {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&entry.flow.tuple.src);
            }
        }
        entry.flow
    }

    /// The earliest instant at which [`FlowTable::expire`] may find something to do. May be
    /// early (an entry whose flow has since seen traffic), never late.
    pub fn next_deadline(&self) -> Option<Instant> {
        let a = self.embryonic_timers.peek().map(|(t, _, _)| t);
        let b = self.settled_timers.peek().map(|(t, _, _)| t);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Removes every flow whose deadline is at or before `now`, appending them to `out`
    /// together with the handle they had.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<(FlowHandle, Flow)>) {
        for embryonic in [true, false] {
            while let Some((_, slot)) = self.pop_live(embryonic, Some(now)) {
                let record = &self.slots[slot as usize];
                let generation = record.generation;
                let Some(entry) = record.entry.as_ref() else {
                    continue;
                };
                if entry.deadline > now {
                    // Traffic moved the deadline: file it under the real one.
                    let deadline = entry.deadline;
                    self.refile(slot, deadline);
                    continue;
                }
                let key = entry.flow.tuple.key();
                self.unindex(&key, slot);
                let flow = self.release_slot(slot);
                out.push((FlowHandle { slot, generation }, flow));
            }
        }
    }

    /// Evicts one flow to make room: the embryonic flow closest to expiry, else the settled
    /// flow closest to expiry.
    fn evict_one(&mut self) -> Option<(FlowHandle, Flow)> {
        if let Some((_, slot)) = self.pop_live(true, None) {
            return Some(self.evict_slot(slot));
        }
        for _ in 0..EVICTION_PROBES {
            let (at, slot) = self.pop_live(false, None)?;
            let deadline = self.slots[slot as usize].entry.as_ref()?.deadline;
            if deadline <= at {
                return Some(self.evict_slot(slot));
            }
            self.refile(slot, deadline);
        }
        let (_, slot) = self.pop_live(false, None)?;
        Some(self.evict_slot(slot))
    }

    /// Removes the flow in `slot` whose timer entry was already taken out.
    fn evict_slot(&mut self, slot: u32) -> (FlowHandle, Flow) {
        let record = &self.slots[slot as usize];
        let handle = FlowHandle {
            slot,
            generation: record.generation,
        };
        if let Some(key) = record.key() {
            self.unindex(&key, slot);
        }
        (handle, self.release_slot(slot))
    }

    /// Every flow with its handle and deadline, in no particular order (for saving state).
    pub fn iter_with_deadlines(&self) -> impl Iterator<Item = (FlowHandle, &Flow, Instant)> {
        self.slots.iter().enumerate().filter_map(|(slot, record)| {
            record.entry.as_ref().map(|entry| {
                (
                    FlowHandle {
                        slot: slot as u32,
                        generation: record.generation,
                    },
                    &entry.flow,
                    entry.deadline,
                )
            })
        })
    }

    /// Every flow with its handle, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (FlowHandle, &Flow)> {
        self.iter_with_deadlines()
            .map(|(handle, flow, _)| (handle, flow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::flow::{FlowOrigin, FlowState};
    use crate::conntrack::key::FlowTuple;
    use crate::wire::transport::proto;
    use std::time::Duration;

    fn flow(port: u16, replied: bool) -> Flow {
        let tuple = FlowTuple {
            proto: proto::UDP,
            src: "198.51.100.10".parse().unwrap(),
            sport: port,
            dst: "192.0.2.10".parse().unwrap(),
            dport: 69,
        };
        Flow::new(
            tuple,
            FlowState::Datagram { replied },
            FlowOrigin::Rule("r".into()),
            None,
            Instant::ZERO,
        )
    }

    fn at(secs: u64) -> Instant {
        Instant::from_secs(secs)
    }

    #[test]
    fn insert_lookup_remove() {
        let mut table = FlowTable::new(10);
        let f = flow(1000, false);
        let key = f.tuple.key();
        let inserted = table.insert(f, at(30)).unwrap();
        let h = inserted.handle;
        assert!(inserted.evicted.is_none());
        assert_eq!(table.lookup(&key), Some(h));
        assert_eq!(table.lookup(&f_reverse_key()), None);
        assert_eq!(table.remove(h).unwrap().tuple.sport, 1000);
        assert_eq!(table.lookup(&key), None);
        assert!(table.get(h).is_none(), "stale handle must not resolve");
        assert!(table.is_empty());
        assert_eq!(table.next_deadline(), None);
    }

    fn f_reverse_key() -> FlowKey {
        flow(1001, false).tuple.reversed().key()
    }

    #[test]
    fn stale_handles_do_not_see_reused_slots() {
        let mut table = FlowTable::new(10);
        let h1 = table.insert(flow(1, false), at(30)).unwrap().handle;
        table.remove(h1);
        let h2 = table.insert(flow(2, false), at(30)).unwrap().handle;
        assert!(table.get(h1).is_none());
        assert_eq!(table.get(h2).unwrap().tuple.sport, 2);
    }

    #[test]
    fn expiry_follows_moved_deadlines() {
        let mut table = FlowTable::new(10);
        let a = table.insert(flow(1, true), at(30)).unwrap().handle;
        let b = table.insert(flow(2, true), at(30)).unwrap().handle;
        table.set_deadline(a, at(100)); // traffic: later
        table.set_deadline(b, at(10)); // closing: earlier
        assert_eq!(table.next_deadline(), Some(at(10)));
        let mut out = Vec::new();
        table.expire(at(10), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, b);
        out.clear();
        table.expire(at(31), &mut out);
        assert!(out.is_empty(), "a's deadline moved to 100");
        assert_eq!(table.next_deadline(), Some(at(100)));
        table.expire(at(100), &mut out);
        assert_eq!(out.len(), 1);
        assert!(table.is_empty());
    }

    #[test]
    fn full_table_evicts_embryonic_first() {
        let mut table = FlowTable::new(3);
        let settled = table.insert(flow(1, true), at(5)).unwrap().handle;
        table.insert(flow(2, false), at(40)).unwrap();
        table.insert(flow(3, false), at(30)).unwrap();
        let evicted = table.insert(flow(4, false), at(50)).unwrap().evicted;
        assert_eq!(
            evicted.unwrap().1.tuple.sport,
            3,
            "the embryonic flow closest to expiry goes"
        );
        assert!(
            table.get(settled).is_some(),
            "the settled flow stays though it expires sooner"
        );
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn full_table_without_embryonic_evicts_closest_to_expiry() {
        let mut table = FlowTable::new(2);
        let a = table.insert(flow(1, true), at(10)).unwrap().handle;
        let b = table.insert(flow(2, true), at(20)).unwrap().handle;
        table.set_deadline(a, at(1000)); // a is busy
        let evicted = table.insert(flow(3, true), at(30)).unwrap().evicted;
        assert_eq!(evicted.unwrap().1.tuple.sport, 2);
        assert!(table.get(a).is_some());
        assert!(table.get(b).is_none());
    }

    #[test]
    fn shrinking_evicts_down_to_the_new_cap() {
        let mut table = FlowTable::new(10);
        for port in 0..6 {
            table.insert(flow(port, port % 2 == 0), at(30)).unwrap();
        }
        let evicted = table.set_capacity(2);
        assert_eq!(evicted.len(), 4);
        assert_eq!(table.len(), 2);
        assert!(
            evicted[..3].iter().all(|(_, f)| f.state.is_embryonic()),
            "embryonic first"
        );
    }

    #[test]
    fn zero_capacity_refuses() {
        let mut table = FlowTable::new(0);
        assert!(table.insert(flow(1, true), at(10)).is_err());
    }

    #[test]
    fn leaving_embryonic_moves_the_timer() {
        let mut table = FlowTable::new(10);
        let h = table.insert(flow(1, false), at(30)).unwrap().handle;
        assert_eq!(table.embryonic_len(), 1);
        table.get_mut(h).unwrap().state = FlowState::Datagram { replied: true };
        table.set_deadline(h, at(30) + Duration::from_secs(90));
        assert_eq!(table.embryonic_len(), 0);
        assert_eq!(table.iter().count(), 1);
    }
}
