//! IP fragment reassembly with bounded memory and a timeout.
//!
//! Fragments are held (not forwarded) until their datagram is complete, so the engine inspects
//! the whole datagram once, and every fragment then gets the datagram's verdict. That closes the
//! tiny-fragment and overlapping-fragment evasions (RFC 1858, RFC 3128): any overlap, exact
//! duplicates aside, poisons the datagram (RFC 5722 requires this for IPv6; pinhole applies it
//! to IPv4 too), and later fragments of a poisoned datagram are dropped until its timeout.
//!
//! Memory is bounded three ways, all from `[limits]`: datagrams in progress (the oldest is
//! evicted for a new one), bytes held (oldest evicted), and fragments per datagram (the
//! datagram is poisoned). The timer starts with the first fragment and is not extended
//! (RFC 791, RFC 8200 section 4.5).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use hashbrown::HashMap;

use crate::decision::Reason;
use crate::time::Instant;
use crate::wire::{FragmentInfo, IpPacket};

/// Largest IP datagram.
const MAX_DATAGRAM: u32 = 65_535;

/// Reassembly limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefragLimits {
    /// Datagrams in progress.
    pub max_datagrams: usize,
    /// Fragment bytes held in all.
    pub max_bytes: usize,
    /// Fragments of one datagram.
    pub max_fragments: usize,
    /// Fragments held in all.
    pub max_held: usize,
    /// Time from the first fragment to giving up.
    pub timeout: Duration,
}

/// Identifies a datagram: source, destination, identification, and for IPv4 the protocol
/// (RFC 791; RFC 8200 uses no protocol, stored as 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct DatagramKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

#[derive(Default)]
struct Datagram {
    deadline: Instant,
    /// Fragment data by offset, sorted, never overlapping.
    pieces: Vec<(u32, Vec<u8>)>,
    /// Length of the datagram's payload, known once the last fragment arrived.
    total: Option<u32>,
    /// Protocol (IPv6: Next Header) of the first fragment.
    first_proto: Option<u8>,
    /// Caller handles of the fragments held.
    held: Vec<u64>,
    bytes: usize,
    /// Set once the datagram is refused; later fragments get the same reason.
    poisoned: Option<Reason>,
}

/// What happened to one fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Held until the datagram completes or times out.
    Held,
    /// This fragment completed its datagram.
    Complete {
        /// Upper-layer protocol (IPv6: the Next Header of the first fragment's fragment
        /// header, possibly an extension header still).
        proto: u8,
        /// The reassembled payload.
        payload: Vec<u8>,
        /// Handles of the other fragments, which get this datagram's verdict.
        held: Vec<u64>,
    },
    /// This fragment is dropped, and so are the held fragments in `released`.
    Dropped {
        /// Why.
        reason: Reason,
        /// Fragments of the same datagram held earlier, now dropped for the same reason.
        released: Vec<u64>,
    },
}

impl Outcome {
    fn dropped(reason: Reason) -> Outcome {
        Outcome::Dropped {
            reason,
            released: Vec::new(),
        }
    }
}

/// The result of [`Defragmenter::add`].
#[derive(Debug, PartialEq, Eq)]
pub struct AddResult {
    /// This fragment's fate.
    pub outcome: Outcome,
    /// Fragments of other datagrams evicted to make room ([`Reason::FragmentEvicted`]).
    pub evicted: Vec<u64>,
}

/// Reassembly state of one engine.
pub struct Defragmenter {
    datagrams: HashMap<DatagramKey, Datagram, foldhash::fast::RandomState>,
    timers: BTreeSet<(Instant, DatagramKey)>,
    bytes: usize,
    /// Fragments held in all datagrams.
    held: usize,
    limits: DefragLimits,
}

impl Defragmenter {
    /// Empty, with these limits.
    pub fn new(limits: DefragLimits) -> Self {
        Defragmenter {
            datagrams: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            timers: BTreeSet::new(),
            bytes: 0,
            held: 0,
            limits,
        }
    }

    /// Replaces the limits (policy reload); they apply to new fragments.
    pub fn set_limits(&mut self, limits: DefragLimits) {
        self.limits = limits;
    }

    /// Datagrams in progress (poisoned ones included).
    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    /// True when nothing is being reassembled.
    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds the fragment `ip` (its `fragment` must be set), held under `handle`.
    pub fn add(&mut self, now: Instant, handle: u64, ip: &IpPacket<'_>) -> AddResult {
        let mut evicted = Vec::new();
        let outcome = self.add_inner(now, handle, ip, &mut evicted);
        AddResult { outcome, evicted }
    }

    fn add_inner(
        &mut self,
        now: Instant,
        handle: u64,
        ip: &IpPacket<'_>,
        evicted: &mut Vec<u64>,
    ) -> Outcome {
        let Some(frag) = ip.fragment else {
            return Outcome::dropped(Reason::FragmentMalformed);
        };
        let data = ip.payload;
        let key = DatagramKey {
            src: ip.src,
            dst: ip.dst,
            id: frag.id,
            proto: if ip.is_ipv6() { 0 } else { ip.proto },
        };
        let shape = check_shape(frag, data.len());
        if self.held >= self.limits.max_held {
            self.make_room_for_held(key, evicted);
        }
        if !self.datagrams.contains_key(&key) {
            if let Err(reason) = shape {
                return Outcome::dropped(reason);
            }
            self.make_room(data.len(), None, evicted);
            let deadline = now + self.limits.timeout;
            self.timers.insert((deadline, key));
            self.datagrams.insert(
                key,
                Datagram {
                    deadline,
                    ..Datagram::default()
                },
            );
        }
        if let Err(reason) = shape {
            return self.poison(key, reason);
        }
        let Some(datagram) = self.datagrams.get(&key) else {
            return Outcome::dropped(Reason::FragmentEvicted);
        };
        if let Some(reason) = datagram.poisoned {
            return Outcome::dropped(reason);
        }
        match datagram.place(frag, data, self.limits.max_fragments) {
            Err(reason) => return self.poison(key, reason),
            // The original is held and forwarded with its datagram; a copy adds nothing but
            // queue slots (and would let a flood of copies past the fragment limit).
            Ok(Placement::Duplicate) => return Outcome::dropped(Reason::FragmentDuplicate),
            Ok(Placement::New) => {}
        }
        if self.bytes + data.len() > self.limits.max_bytes {
            self.make_room(data.len(), Some(key), evicted);
        }
        if self.bytes + data.len() > self.limits.max_bytes || self.held >= self.limits.max_held {
            return self.poison(key, Reason::FragmentEvicted);
        }
        let Some(datagram) = self.datagrams.get_mut(&key) else {
            return Outcome::dropped(Reason::FragmentEvicted);
        };
        datagram.insert(frag, data, ip.proto, handle);
        self.bytes += data.len();
        self.held += 1;
        if is_complete(datagram) {
            self.take_complete(key, handle, ip.proto)
        } else {
            Outcome::Held
        }
    }

    /// Removes a complete datagram and assembles its payload.
    fn take_complete(&mut self, key: DatagramKey, handle: u64, proto: u8) -> Outcome {
        let Some(datagram) = self.datagrams.remove(&key) else {
            return Outcome::Held;
        };
        self.timers.remove(&(datagram.deadline, key));
        self.bytes -= datagram.bytes;
        self.held -= datagram.held.len();
        let mut payload = Vec::with_capacity(datagram.bytes);
        for (_, piece) in &datagram.pieces {
            payload.extend_from_slice(piece);
        }
        let held = datagram.held.into_iter().filter(|h| *h != handle).collect();
        Outcome::Complete {
            proto: datagram.first_proto.unwrap_or(proto),
            payload,
            held,
        }
    }

    /// Refuses a datagram: frees its bytes, drops its held fragments, and remembers the reason
    /// for fragments still to come.
    fn poison(&mut self, key: DatagramKey, reason: Reason) -> Outcome {
        let Some(datagram) = self.datagrams.get_mut(&key) else {
            return Outcome::Dropped {
                reason,
                released: Vec::new(),
            };
        };
        self.bytes -= datagram.bytes;
        datagram.bytes = 0;
        datagram.pieces = Vec::new();
        datagram.poisoned = Some(reason);
        let released = std::mem::take(&mut datagram.held);
        self.held -= released.len();
        Outcome::Dropped { reason, released }
    }

    /// Evicts the oldest datagrams (other than `keep`) until a new datagram, or `extra` more
    /// bytes, fit.
    fn make_room(&mut self, extra: usize, keep: Option<DatagramKey>, evicted: &mut Vec<u64>) {
        let new_datagram = keep.is_none();
        loop {
            let full = (new_datagram && self.datagrams.len() >= self.limits.max_datagrams)
                || self.bytes + extra > self.limits.max_bytes;
            if !full {
                return;
            }
            let Some(&(at, key)) = self.timers.iter().find(|(_, k)| Some(*k) != keep) else {
                return;
            };
            self.timers.remove(&(at, key));
            if let Some(datagram) = self.datagrams.remove(&key) {
                self.bytes -= datagram.bytes;
                self.held -= datagram.held.len();
                evicted.extend(datagram.held);
            }
        }
    }

    /// Evicts the oldest datagrams other than `keep` until fewer than the cap are held.
    fn make_room_for_held(&mut self, keep: DatagramKey, evicted: &mut Vec<u64>) {
        while self.held >= self.limits.max_held {
            let Some(&(at, key)) = self.timers.iter().find(|(_, k)| *k != keep) else {
                return;
            };
            self.timers.remove(&(at, key));
            if let Some(datagram) = self.datagrams.remove(&key) {
                self.bytes -= datagram.bytes;
                self.held -= datagram.held.len();
                evicted.extend(datagram.held);
            }
        }
    }

    /// Fragments held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// When the oldest datagram times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Gives up on datagrams whose time is up; returns the handles of their held fragments.
    pub fn expire(&mut self, now: Instant) -> Vec<u64> {
        let mut released = Vec::new();
        while let Some(&(at, key)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(datagram) = self.datagrams.remove(&key) {
                self.bytes -= datagram.bytes;
                self.held -= datagram.held.len();
                released.extend(datagram.held);
            }
        }
        released
    }

    /// Gives up on everything (end of a capture); returns every held handle.
    pub fn flush(&mut self) -> Vec<u64> {
        self.expire(Instant::MAX)
    }
}

/// Where a new fragment goes.
enum Placement {
    /// An exact copy of a fragment already held.
    Duplicate,
    /// New data that fits.
    New,
}

impl Datagram {
    /// Checks that a fragment fits the datagram: no overlap (an exact duplicate aside), not
    /// past the end announced by the last fragment, not one fragment too many.
    fn place(
        &self,
        frag: FragmentInfo,
        data: &[u8],
        max_fragments: usize,
    ) -> Result<Placement, Reason> {
        let end = frag.offset + data.len() as u32;
        for (offset, piece) in &self.pieces {
            let piece_end = offset + piece.len() as u32;
            if frag.offset < piece_end && *offset < end {
                // A copy must also agree on being the last fragment (MF), which decides the
                // datagram's length at the receiver.
                let was_last = self.total == Some(piece_end);
                return if *offset == frag.offset
                    && piece.as_slice() == data
                    && was_last != frag.more
                {
                    Ok(Placement::Duplicate)
                } else {
                    Err(Reason::FragmentOverlap)
                };
            }
        }
        let beyond_end = match self.total {
            Some(total) => end > total || (!frag.more && end != total),
            None => {
                !frag.more
                    && self
                        .pieces
                        .last()
                        .is_some_and(|(o, p)| o + p.len() as u32 > end)
            }
        };
        if beyond_end {
            Err(Reason::FragmentMalformed)
        } else if self.pieces.len() >= max_fragments {
            Err(Reason::FragmentLimit)
        } else {
            Ok(Placement::New)
        }
    }

    /// Stores a fragment that [`Datagram::place`] accepted.
    fn insert(&mut self, frag: FragmentInfo, data: &[u8], proto: u8, handle: u64) {
        let at = self.pieces.partition_point(|(o, _)| *o < frag.offset);
        self.pieces.insert(at, (frag.offset, data.to_vec()));
        self.bytes += data.len();
        self.held.push(handle);
        if !frag.more {
            self.total = Some(frag.offset + data.len() as u32);
        }
        if frag.offset == 0 {
            self.first_proto = Some(proto);
        }
    }
}

/// Checks a fragment on its own: RFC 791 / RFC 8200 section 4.5 require every fragment but
/// the last to carry a multiple of 8 bytes, and no datagram exceeds 65535 bytes.
fn check_shape(frag: FragmentInfo, len: usize) -> Result<(), Reason> {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    if len == 0 || (frag.more && len % 8 != 0) {
        Err(Reason::FragmentMalformed)
    } else if frag.offset.saturating_add(len) > frag.max_payload.min(MAX_DATAGRAM) {
        Err(Reason::FragmentTooBig)
    } else {
        Ok(())
    }
}

fn is_complete(datagram: &Datagram) -> bool {
    let Some(total) = datagram.total else {
        return false;
    };
    let mut next = 0;
    for (offset, piece) in &datagram.pieces {
        if *offset != next {
            return false;
        }
        next += piece.len() as u32;
    }
    next == total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DefragLimits {
        DefragLimits {
            max_datagrams: 4,
            max_bytes: 4096,
            max_fragments: 8,
            max_held: 16,
            timeout: Duration::from_secs(30),
        }
    }

    fn frag(id: u32, offset: u32, more: bool, data: &[u8]) -> IpPacket<'_> {
        IpPacket {
            src: "198.51.100.10".parse().unwrap(),
            dst: "192.0.2.10".parse().unwrap(),
            proto: 17,
            ttl: 64,
            fragment: Some(FragmentInfo {
                id,
                offset,
                more,
                max_payload: 65_515,
            }),
            payload: data,
        }
    }

    const A: [u8; 16] = [b'a'; 16];
    const B: [u8; 16] = [b'b'; 16];

    fn now() -> Instant {
        Instant::from_secs(100)
    }

    #[test]
    fn reassembles_out_of_order() {
        let mut d = Defragmenter::new(limits());
        assert_eq!(
            d.add(now(), 1, &frag(7, 16, false, b"tail")).outcome,
            Outcome::Held
        );
        assert_eq!(d.add(now(), 2, &frag(7, 0, true, &A)).outcome, {
            let mut payload = A.to_vec();
            payload.extend_from_slice(b"tail");
            Outcome::Complete {
                proto: 17,
                payload,
                held: vec![1],
            }
        });
        assert!(d.is_empty());
        assert_eq!(d.bytes(), 0);
        assert_eq!(d.next_deadline(), None);
    }

    #[test]
    fn duplicates_are_dropped_overlaps_poison() {
        let mut d = Defragmenter::new(limits());
        let drop = |reason, released| Outcome::Dropped { reason, released };
        assert_eq!(
            d.add(now(), 1, &frag(7, 0, true, &A)).outcome,
            Outcome::Held
        );
        assert_eq!(
            d.add(now(), 2, &frag(7, 0, true, &A)).outcome,
            drop(Reason::FragmentDuplicate, vec![])
        );
        // The same bytes claiming to be the last fragment: the datagram's length changes.
        assert_eq!(
            d.add(now(), 3, &frag(7, 0, false, &A)).outcome,
            drop(Reason::FragmentOverlap, vec![1])
        );
        // The rest of the datagram is dropped too, until the timeout.
        assert_eq!(
            d.add(now(), 4, &frag(7, 16, false, b"end")).outcome,
            drop(Reason::FragmentOverlap, vec![])
        );
        // Same offset, other bytes: the classic overlap rewrite.
        assert_eq!(
            d.add(now(), 5, &frag(8, 0, true, &A)).outcome,
            Outcome::Held
        );
        assert_eq!(
            d.add(now(), 6, &frag(8, 8, true, &B)).outcome,
            drop(Reason::FragmentOverlap, vec![5])
        );
        assert_eq!(d.bytes(), 0);
        assert_eq!(d.held(), 0);
        assert!(d.expire(now() + Duration::from_secs(30)).is_empty());
        assert!(d.is_empty());
    }

    #[test]
    fn held_fragments_are_capped_across_datagrams() {
        let mut d = Defragmenter::new(limits());
        for i in 0..16u32 {
            let id = i / 4;
            assert_eq!(
                d.add(now(), u64::from(i), &frag(id, (i % 4) * 16, true, &A))
                    .outcome,
                Outcome::Held
            );
        }
        let result = d.add(now(), 99, &frag(9, 0, true, &A));
        assert_eq!(result.outcome, Outcome::Held);
        assert_eq!(result.evicted, vec![0, 1, 2, 3]);
        assert_eq!(d.held(), 13);
    }

    #[test]
    fn ipv4_reassembly_stops_at_65535_bytes_with_the_header() {
        let mut d = Defragmenter::new(limits());
        // max_payload 65515 = 65535 - a 20-byte header: 65512 + 8 is one byte-block too many.
        assert_eq!(
            d.add(now(), 1, &frag(1, 65_512, false, &A[..8])).outcome,
            Outcome::Dropped {
                reason: Reason::FragmentTooBig,
                released: vec![]
            }
        );
    }

    #[test]
    fn malformed_fragments() {
        let mut d = Defragmenter::new(limits());
        let drop = |reason| Outcome::Dropped {
            reason,
            released: vec![],
        };
        assert_eq!(
            d.add(now(), 1, &frag(1, 0, true, b"odd")).outcome,
            drop(Reason::FragmentMalformed)
        );
        assert_eq!(
            d.add(now(), 2, &frag(2, 8, false, b"")).outcome,
            drop(Reason::FragmentMalformed)
        );
        assert_eq!(
            d.add(now(), 3, &frag(3, 65_528, false, &A)).outcome,
            drop(Reason::FragmentTooBig)
        );
    }

    #[test]
    fn fragment_past_the_end_poisons() {
        let mut d = Defragmenter::new(limits());
        assert_eq!(
            d.add(now(), 1, &frag(5, 16, false, b"end")).outcome,
            Outcome::Held
        );
        assert_eq!(
            d.add(now(), 2, &frag(5, 24, true, &A)).outcome,
            Outcome::Dropped {
                reason: Reason::FragmentMalformed,
                released: vec![1]
            }
        );
    }

    #[test]
    fn too_many_fragments_poison() {
        let mut d = Defragmenter::new(limits());
        for i in 0..8u32 {
            assert_eq!(
                d.add(now(), u64::from(i), &frag(9, i * 8, true, &A[..8]))
                    .outcome,
                Outcome::Held
            );
        }
        let result = d.add(now(), 99, &frag(9, 64, true, &A[..8]));
        assert_eq!(
            result.outcome,
            Outcome::Dropped {
                reason: Reason::FragmentLimit,
                released: (0..8).collect()
            }
        );
    }

    #[test]
    fn datagram_cap_evicts_the_oldest() {
        let mut d = Defragmenter::new(limits());
        for id in 0..4u32 {
            d.add(
                now() + Duration::from_secs(u64::from(id)),
                u64::from(id),
                &frag(id, 0, true, &A),
            );
        }
        let result = d.add(now() + Duration::from_secs(9), 9, &frag(9, 0, true, &A));
        assert_eq!(result.outcome, Outcome::Held);
        assert_eq!(result.evicted, vec![0]);
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn byte_cap_evicts_the_oldest() {
        let mut d = Defragmenter::new(DefragLimits {
            max_bytes: 40,
            ..limits()
        });
        d.add(now(), 1, &frag(1, 0, true, &A));
        d.add(now(), 2, &frag(2, 0, true, &A));
        let result = d.add(now(), 3, &frag(3, 0, true, &A));
        assert_eq!(result.evicted, vec![1]);
        assert!(d.bytes() <= 40);
    }

    #[test]
    fn timeout_releases_held_fragments() {
        let mut d = Defragmenter::new(limits());
        d.add(now(), 1, &frag(1, 0, true, &A));
        d.add(now(), 2, &frag(1, 32, false, &A));
        assert!(d.expire(now() + Duration::from_secs(29)).is_empty());
        assert_eq!(d.expire(now() + Duration::from_secs(30)), vec![1, 2]);
        assert!(d.is_empty());
        assert_eq!(d.bytes(), 0);
    }
}
