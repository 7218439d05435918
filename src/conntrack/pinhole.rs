//! The pinhole (expectation) table: exact, short-lived, single-use openings for connections an
//! inspector saw negotiated.
//!
//! A pinhole names the protocol, the one peer allowed to connect (exact address; source port
//! any, exact or a range), the exact destination address and port, the control flow that
//! negotiated it, and an expiry. The first new flow that matches consumes it. Pinholes close
//! with their parent, the oldest of a parent is evicted when the parent exceeds its quota, and
//! the table as a whole has a hard cap beyond which new pinholes are refused.

use std::fmt;
use std::net::IpAddr;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::alg::{Alg, ChildInit};
use crate::conntrack::key::FlowTuple;
use crate::conntrack::table::FlowHandle;
use crate::time::{Instant, TimerSet};

/// Which source ports a pinhole admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PortMatch {
    /// Any port.
    Any,
    /// Exactly this port.
    Exact(u16),
    /// A port within this inclusive range.
    Range(u16, u16),
}

impl PortMatch {
    /// True when `port` is admitted.
    pub fn matches(self, port: u16) -> bool {
        match self {
            PortMatch::Any => true,
            PortMatch::Exact(p) => p == port,
            PortMatch::Range(lo, hi) => (lo..=hi).contains(&port),
        }
    }

    /// The bounds of a range (the JSON `sport_range` field), if it is one.
    pub fn range(self) -> Option<[u16; 2]> {
        match self {
            PortMatch::Range(lo, hi) => Some([lo, hi]),
            PortMatch::Any | PortMatch::Exact(_) => None,
        }
    }

    /// The exact port, if there is one (the JSON `sport` field; `null` otherwise).
    pub fn exact(self) -> Option<u16> {
        match self {
            PortMatch::Exact(p) => Some(p),
            PortMatch::Any | PortMatch::Range(..) => None,
        }
    }
}

impl fmt::Display for PortMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortMatch::Any => f.write_str("*"),
            PortMatch::Exact(p) => write!(f, "{p}"),
            PortMatch::Range(lo, hi) => write!(f, "{lo}-{hi}"),
        }
    }
}

/// Identifies a pinhole for the lifetime of an engine (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PinholeId(pub u64);

/// The control flow that negotiated a pinhole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ParentRef {
    /// Its handle in the flow table.
    pub handle: FlowHandle,
    /// Its tuple, for events after it is gone.
    #[serde(with = "crate::conntrack::key::tuple_fields")]
    pub flow: FlowTuple,
}

/// Who may connect to what through a pinhole: what an inspector's request, an open pinhole
/// and the events about it have in common.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Opening {
    /// The inspector that negotiated it.
    pub alg: Alg,
    /// IP protocol of the expected connection.
    pub proto: u8,
    /// The only peer allowed to connect.
    pub src: IpAddr,
    /// Its source port(s).
    pub sport: PortMatch,
    /// Where it may connect to.
    pub dst: IpAddr,
    /// The destination port.
    pub dport: u16,
}

impl fmt::Display for Opening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}:{}", self.src, self.dst, self.dport)
    }
}

/// A pinhole to open in the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinholeSpec {
    /// Who may connect to what.
    pub opening: Opening,
    /// The control flow that negotiated it.
    pub parent: Option<ParentRef>,
    /// When it closes unused.
    pub expires: Instant,
    /// What the admitted connection is inspected with.
    pub child: Option<ChildInit>,
}

impl PinholeSpec {
    /// The index key: protocol, destination address and port.
    fn destination(&self) -> (u8, IpAddr, u16) {
        (self.opening.proto, self.opening.dst, self.opening.dport)
    }

    fn same_opening(&self, other: &PinholeSpec) -> bool {
        self.opening == other.opening
            && self.parent.map(|p| p.handle) == other.parent.map(|p| p.handle)
            && self.child == other.child
    }
}

/// An open pinhole.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinhole {
    /// Its id.
    pub id: PinholeId,
    /// What it admits.
    pub spec: PinholeSpec,
    /// When it was opened.
    pub opened: Instant,
}

/// What [`PinholeTable::match_and_consume`] found for a new flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinholeMatch {
    /// No pinhole expects a connection to that destination.
    None,
    /// Pinholes expect a connection to that destination, from another peer or port.
    WrongPeer {
        /// The inspector of the (oldest) pinhole expecting it.
        alg: Alg,
        /// The peer's address was right, only its port was not.
        address_matched: bool,
    },
    /// This pinhole admitted the flow and is gone now.
    Hit(Pinhole),
}

impl PinholeMatch {
    /// The pinhole, if one admitted the flow.
    pub fn hit(self) -> Option<Pinhole> {
        match self {
            PinholeMatch::Hit(p) => Some(p),
            PinholeMatch::None | PinholeMatch::WrongPeer { .. } => None,
        }
    }
}

/// Why a pinhole could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinholeError {
    /// The table is at its cap.
    TableFull,
    /// The client that negotiated it already holds its quota of pending pinholes.
    ClientQuota,
}

/// The result of [`PinholeTable::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOutcome {
    /// The pinhole now open (an existing one when `refreshed`).
    pub id: PinholeId,
    /// An identical pinhole was already open; its expiry was extended instead.
    pub refreshed: bool,
    /// The parent's oldest pinhole, closed to stay within its quota.
    pub evicted: Option<Pinhole>,
}

type Hasher = foldhash::fast::RandomState;

/// The pinholes of one destination or one parent, oldest first. Nearly always one or two
/// (a destination port is named by one reply; a control connection holds few pending
/// pinholes), so they are kept inline: no allocation per list.
type Ids = SmallVec<[PinholeId; 2]>;

/// The pinholes of one engine.
pub struct PinholeTable {
    /// Boxed: the map keeps spare buckets (up to half of them after it grows), and a spare
    /// bucket of a boxed pinhole is 16 bytes instead of 200.
    pinholes: HashMap<PinholeId, Box<Pinhole>, Hasher>,
    /// (protocol, destination, destination port) to the pinholes expecting it, oldest first.
    by_destination: HashMap<(u8, IpAddr, u16), Ids, Hasher>,
    /// Parent flow to its pinholes, oldest first.
    by_parent: HashMap<FlowHandle, Ids, Hasher>,
    /// Pinholes per (inspector, destination address).
    per_destination: HashMap<(Alg, IpAddr), usize, Hasher>,
    /// Pinholes per client: the address that opened the parent (control or request) flow.
    per_client: HashMap<IpAddr, usize, Hasher>,
    timers: TimerSet<PinholeId>,
    next_id: u64,
    max: usize,
    max_per_client: usize,
}

impl PinholeTable {
    /// An empty table holding at most `max` pinholes.
    pub fn new(max: usize) -> Self {
        PinholeTable {
            pinholes: HashMap::with_hasher(Hasher::default()),
            by_destination: HashMap::with_hasher(Hasher::default()),
            by_parent: HashMap::with_hasher(Hasher::default()),
            per_destination: HashMap::with_hasher(Hasher::default()),
            per_client: HashMap::with_hasher(Hasher::default()),
            timers: TimerSet::default(),
            next_id: 1,
            max,
            max_per_client: usize::MAX,
        }
    }

    /// Sets how many pending pinholes one client may hold over all its parent flows (for a
    /// policy reload too; existing pinholes stay).
    pub fn set_per_client(&mut self, max: usize) {
        self.max_per_client = max;
    }

    /// Number of pending pinholes negotiated by flows that `client` opened.
    pub fn count_for_client(&self, client: IpAddr) -> usize {
        self.per_client.get(&client).copied().unwrap_or(0)
    }

    /// Number of open pinholes.
    pub fn len(&self) -> usize {
        self.pinholes.len()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.pinholes.is_empty()
    }

    /// Changes the cap (for a policy reload); existing pinholes stay.
    pub fn set_capacity(&mut self, max: usize) {
        self.max = max;
    }

    /// Number of pinholes of `alg` open toward `dst`.
    pub fn count_to(&self, alg: Alg, dst: IpAddr) -> usize {
        self.per_destination.get(&(alg, dst)).copied().unwrap_or(0)
    }

    /// Number of pinholes `parent` has open.
    pub fn count_for_parent(&self, parent: FlowHandle) -> usize {
        self.by_parent.get(&parent).map_or(0, SmallVec::len)
    }

    /// Opens a pinhole at `now`. A parent holds at most `per_parent` pinholes; opening one
    /// more closes its oldest. An identical pending pinhole is refreshed instead of duplicated.
    pub fn open(
        &mut self,
        spec: PinholeSpec,
        per_parent: usize,
        now: Instant,
    ) -> Result<OpenOutcome, PinholeError> {
        let dest = spec.destination();
        if let Some(ids) = self.by_destination.get(&dest) {
            let existing = ids.iter().copied().find(|id| {
                self.pinholes
                    .get(id)
                    .is_some_and(|p| p.spec.same_opening(&spec))
            });
            if let Some(id) = existing {
                if let Some(pinhole) = self.pinholes.get_mut(&id) {
                    self.timers.remove(pinhole.spec.expires, id);
                    pinhole.spec.expires = spec.expires;
                    self.timers.insert(spec.expires, id);
                }
                return Ok(OpenOutcome {
                    id,
                    refreshed: true,
                    evicted: None,
                });
            }
        }
        let over_quota = spec
            .parent
            .map(|p| p.handle)
            .filter(|parent| per_parent > 0 && self.count_for_parent(*parent) >= per_parent);
        // The quota's eviction makes room too; without it a full table refuses, and nothing
        // is evicted for a pinhole that is not opened.
        if self.pinholes.len() - usize::from(over_quota.is_some()) >= self.max {
            return Err(PinholeError::TableFull);
        }
        if let Some(parent) = spec.parent
            && self.count_for_client(parent.flow.src) - usize::from(over_quota.is_some())
                >= self.max_per_client
        {
            return Err(PinholeError::ClientQuota);
        }
        let evicted = over_quota
            .and_then(|parent| {
                self.by_parent
                    .get(&parent)
                    .and_then(|ids| ids.first().copied())
            })
            .and_then(|id| self.remove(id));
        let id = PinholeId(self.next_id);
        self.next_id += 1;
        self.insert(Pinhole {
            id,
            spec,
            opened: now,
        });
        Ok(OpenOutcome {
            id,
            refreshed: false,
            evicted,
        })
    }

    fn insert(&mut self, pinhole: Pinhole) {
        let id = pinhole.id;
        let spec = &pinhole.spec;
        self.timers.insert(spec.expires, id);
        self.by_destination
            .entry(spec.destination())
            .or_default()
            .push(id);
        if let Some(parent) = spec.parent {
            self.by_parent.entry(parent.handle).or_default().push(id);
            *self.per_client.entry(parent.flow.src).or_default() += 1;
        }
        *self
            .per_destination
            .entry((spec.opening.alg, spec.opening.dst))
            .or_default() += 1;
        self.pinholes.insert(id, Box::new(pinhole));
    }

    /// A fresh id, unique among this table's pinholes, for a record that is pinhole-like but
    /// no pinhole (a connection an FTPS session's passive range admitted).
    pub fn allocate_id(&mut self) -> PinholeId {
        let id = PinholeId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Adds a pinhole saved by another engine (a restore), under a new id of this table;
    /// returns the id. Quotas are not applied: the pinhole was admitted under them.
    pub fn adopt(&mut self, spec: PinholeSpec, opened: Instant) -> PinholeId {
        let id = self.allocate_id();
        self.insert(Pinhole { id, spec, opened });
        id
    }

    /// Puts back a pinhole taken by [`PinholeTable::match_and_consume`] whose connection could
    /// not be admitted after all.
    pub fn restore(&mut self, pinhole: Pinhole) {
        self.insert(pinhole);
    }

    /// Finds the oldest unexpired pinhole admitting a new flow from `src:sport` to
    /// `dst:dport`, removes it and returns it.
    pub fn match_and_consume(
        &mut self,
        proto: u8,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        now: Instant,
    ) -> PinholeMatch {
        let Some(ids) = self.by_destination.get(&(proto, dst, dport)) else {
            return PinholeMatch::None;
        };
        let mut expected: Option<(Alg, bool)> = None;
        let mut hit = None;
        for id in ids {
            let Some(p) = self.pinholes.get(id) else {
                continue;
            };
            if p.spec.expires <= now {
                continue;
            }
            // The peer's own address, or one it may also answer from (a TFTP server's
            // `reply_addresses`).
            let address_matched = p.spec.opening.src == src
                || p.spec.child.as_ref().is_some_and(|c| c.answers_from(src));
            match &mut expected {
                None => expected = Some((p.spec.opening.alg, address_matched)),
                Some((_, matched)) => *matched |= address_matched,
            }
            if address_matched && p.spec.opening.sport.matches(sport) {
                hit = Some(*id);
                break;
            }
        }
        match hit.and_then(|id| self.remove(id)) {
            Some(pinhole) => PinholeMatch::Hit(pinhole),
            None => match expected {
                Some((alg, address_matched)) => PinholeMatch::WrongPeer {
                    alg,
                    address_matched,
                },
                None => PinholeMatch::None,
            },
        }
    }

    /// True when no pinhole can be added without evicting one.
    pub fn is_full(&self) -> bool {
        self.pinholes.len() >= self.max
    }

    /// True when a pinhole identical to `spec` (same opening, same parent) is pending:
    /// opening `spec` would refresh it.
    pub fn is_pending(&self, spec: &PinholeSpec) -> bool {
        let (proto, dst, dport) = spec.destination();
        self.pending_to(proto, dst, dport)
            .any(|p| p.spec.same_opening(spec))
    }

    /// The pinholes waiting for a connection to `dst:dport` over `proto`.
    pub fn pending_to(&self, proto: u8, dst: IpAddr, dport: u16) -> impl Iterator<Item = &Pinhole> {
        self.by_destination
            .get(&(proto, dst, dport))
            .into_iter()
            .flatten()
            .filter_map(|id| self.pinholes.get(id).map(|p| &**p))
    }

    /// The pinhole with this id.
    pub fn get(&self, id: PinholeId) -> Option<&Pinhole> {
        self.pinholes.get(&id).map(|p| &**p)
    }

    /// Removes a pinhole, returning it.
    pub fn remove(&mut self, id: PinholeId) -> Option<Pinhole> {
        let pinhole = *self.pinholes.remove(&id)?;
        self.timers.remove(pinhole.spec.expires, id);
        let dest = pinhole.spec.destination();
        remove_from(&mut self.by_destination, &dest, id);
        if let Some(parent) = pinhole.spec.parent {
            remove_from(&mut self.by_parent, &parent.handle, id);
            if let Some(count) = self.per_client.get_mut(&parent.flow.src) {
                *count -= 1;
                if *count == 0 {
                    self.per_client.remove(&parent.flow.src);
                }
            }
        }
        let key = (pinhole.spec.opening.alg, pinhole.spec.opening.dst);
        if let Some(count) = self.per_destination.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.per_destination.remove(&key);
            }
        }
        Some(pinhole)
    }

    /// Closes every pinhole of `parent` (its control flow ended), appending them to `out`.
    pub fn close_with_parent(&mut self, parent: FlowHandle, out: &mut Vec<Pinhole>) {
        let Some(ids) = self.by_parent.remove(&parent) else {
            return;
        };
        for id in ids {
            if let Some(pinhole) = self.remove(id) {
                out.push(pinhole);
            }
        }
    }

    /// Closes `parent`'s pending pinholes for `opening`, appending them to `out`.
    pub fn close_matching(
        &mut self,
        parent: FlowHandle,
        opening: &Opening,
        out: &mut Vec<Pinhole>,
    ) {
        let ids: Vec<PinholeId> = self
            .by_parent
            .get(&parent)
            .map(|ids| {
                ids.iter()
                    .copied()
                    .filter(|id| {
                        self.pinholes
                            .get(id)
                            .is_some_and(|p| p.spec.opening == *opening)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for id in ids {
            if let Some(pinhole) = self.remove(id) {
                out.push(pinhole);
            }
        }
    }

    /// When the next pinhole expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| at)
    }

    /// Removes every pinhole expiring at or before `now`, appending them to `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Pinhole>) {
        while let Some((at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            if let Some(pinhole) = self.remove(id) {
                out.push(pinhole);
            } else {
                self.timers.pop_first();
            }
        }
    }

    /// Every open pinhole, oldest id first.
    pub fn iter(&self) -> impl Iterator<Item = &Pinhole> {
        let mut all: Vec<&Pinhole> = self.pinholes.values().map(|p| &**p).collect();
        all.sort_by_key(|p| p.id);
        all.into_iter()
    }
}

fn remove_from<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Ids, Hasher>, key: &K, id: PinholeId) {
    if let Some(ids) = map.get_mut(key) {
        ids.retain(|x| *x != id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::table::FlowTable;
    use crate::conntrack::{Flow, FlowOrigin, FlowState, FlowTuple};
    use crate::wire::transport::proto;

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn parents() -> (ParentRef, ParentRef) {
        let mut table = FlowTable::new(10);
        let mut handles = Vec::new();
        for port in [1, 2] {
            let tuple = FlowTuple {
                proto: proto::TCP,
                src: addr("198.51.100.10"),
                sport: port,
                dst: addr("192.0.2.10"),
                dport: 21,
            };
            let flow = Flow::new(
                tuple,
                FlowState::Datagram { replied: true },
                FlowOrigin::Rule("r".into()),
                None,
                Instant::ZERO,
            );
            handles.push(ParentRef {
                handle: table.insert(flow, Instant::from_secs(100)).unwrap().handle,
                flow: tuple,
            });
        }
        (handles[0], handles[1])
    }

    fn passive(parent: ParentRef, port: u16, expires: u64) -> PinholeSpec {
        PinholeSpec {
            opening: Opening {
                alg: Alg::Ftp,
                proto: proto::TCP,
                src: addr("198.51.100.10"),
                sport: PortMatch::Any,
                dst: addr("192.0.2.10"),
                dport: port,
            },
            parent: Some(parent),
            expires: Instant::from_secs(expires),
            child: None,
        }
    }

    #[test]
    fn open_match_consume_once() {
        let (p, _) = parents();
        let mut table = PinholeTable::new(10);
        let opened = table.open(passive(p, 50000, 60), 4, Instant::ZERO).unwrap();
        assert!(!opened.refreshed);
        let now = Instant::from_secs(1);
        // Wrong peer, wrong port, wrong protocol: nothing.
        assert!(
            table
                .match_and_consume(
                    proto::TCP,
                    addr("203.0.113.9"),
                    4000,
                    addr("192.0.2.10"),
                    50000,
                    now
                )
                .hit()
                .is_none()
        );
        assert!(
            table
                .match_and_consume(
                    proto::TCP,
                    addr("198.51.100.10"),
                    4000,
                    addr("192.0.2.10"),
                    50001,
                    now
                )
                .hit()
                .is_none()
        );
        assert!(
            table
                .match_and_consume(
                    proto::UDP,
                    addr("198.51.100.10"),
                    4000,
                    addr("192.0.2.10"),
                    50000,
                    now
                )
                .hit()
                .is_none()
        );
        let hit = table
            .match_and_consume(
                proto::TCP,
                addr("198.51.100.10"),
                4000,
                addr("192.0.2.10"),
                50000,
                now,
            )
            .hit()
            .unwrap();
        assert_eq!(hit.id, opened.id);
        // Single use.
        assert!(
            table
                .match_and_consume(
                    proto::TCP,
                    addr("198.51.100.10"),
                    4001,
                    addr("192.0.2.10"),
                    50000,
                    now
                )
                .hit()
                .is_none()
        );
        assert!(table.is_empty());
    }

    #[test]
    fn wrong_peers_are_told_apart_from_no_pinhole() {
        let (p, _) = parents();
        let mut table = PinholeTable::new(10);
        let mut spec = passive(p, 50000, 60);
        spec.opening.sport = PortMatch::Range(30000, 30009);
        table.open(spec, 4, Instant::ZERO).unwrap();
        let now = Instant::from_secs(1);
        assert_eq!(
            table.match_and_consume(
                proto::TCP,
                addr("198.51.100.10"),
                40000,
                addr("192.0.2.10"),
                50000,
                now
            ),
            PinholeMatch::WrongPeer {
                alg: Alg::Ftp,
                address_matched: true
            }
        );
        assert_eq!(
            table.match_and_consume(
                proto::TCP,
                addr("203.0.113.1"),
                30000,
                addr("192.0.2.10"),
                50000,
                now
            ),
            PinholeMatch::WrongPeer {
                alg: Alg::Ftp,
                address_matched: false
            }
        );
        assert_eq!(
            table.match_and_consume(
                proto::TCP,
                addr("198.51.100.10"),
                1,
                addr("192.0.2.10"),
                50001,
                now
            ),
            PinholeMatch::None
        );
        assert_eq!(table.count_to(Alg::Ftp, addr("192.0.2.10")), 1);
    }

    #[test]
    fn source_port_ranges() {
        let (p, _) = parents();
        let mut table = PinholeTable::new(10);
        let mut spec = passive(p, 50000, 60);
        spec.opening.sport = PortMatch::Range(30000, 30009);
        table.open(spec, 4, Instant::ZERO).unwrap();
        let now = Instant::from_secs(1);
        assert!(
            table
                .match_and_consume(
                    proto::TCP,
                    addr("198.51.100.10"),
                    30010,
                    addr("192.0.2.10"),
                    50000,
                    now
                )
                .hit()
                .is_none()
        );
        assert!(
            table
                .match_and_consume(
                    proto::TCP,
                    addr("198.51.100.10"),
                    30009,
                    addr("192.0.2.10"),
                    50000,
                    now
                )
                .hit()
                .is_some()
        );
    }

    #[test]
    fn expired_pinholes_do_not_match_and_are_reaped() {
        let (p, _) = parents();
        let mut table = PinholeTable::new(10);
        table.open(passive(p, 50000, 60), 4, Instant::ZERO).unwrap();
        let late = Instant::from_secs(60);
        assert!(
            table
                .match_and_consume(
                    proto::TCP,
                    addr("198.51.100.10"),
                    1,
                    addr("192.0.2.10"),
                    50000,
                    late
                )
                .hit()
                .is_none()
        );
        assert_eq!(table.next_deadline(), Some(late));
        let mut out = Vec::new();
        table.expire(late, &mut out);
        assert_eq!(out.len(), 1);
        assert!(table.is_empty());
        assert_eq!(table.next_deadline(), None);
    }

    #[test]
    fn per_parent_quota_evicts_the_oldest() {
        let (p, q) = parents();
        let mut table = PinholeTable::new(10);
        let first = table
            .open(passive(p, 50000, 60), 2, Instant::ZERO)
            .unwrap()
            .id;
        table.open(passive(p, 50001, 60), 2, Instant::ZERO).unwrap();
        table.open(passive(q, 50005, 60), 2, Instant::ZERO).unwrap();
        let third = table.open(passive(p, 50002, 60), 2, Instant::ZERO).unwrap();
        assert_eq!(third.evicted.unwrap().id, first);
        assert_eq!(table.count_for_parent(p.handle), 2);
        assert_eq!(table.count_for_parent(q.handle), 1);
    }

    #[test]
    fn global_cap_refuses() {
        let (p, q) = parents();
        let mut table = PinholeTable::new(2);
        table.open(passive(p, 50000, 60), 4, Instant::ZERO).unwrap();
        table.open(passive(q, 50001, 60), 4, Instant::ZERO).unwrap();
        assert_eq!(
            table.open(passive(p, 50002, 60), 4, Instant::ZERO),
            Err(PinholeError::TableFull)
        );
    }

    #[test]
    fn identical_pinhole_is_refreshed_not_duplicated() {
        let (p, _) = parents();
        let mut table = PinholeTable::new(10);
        let a = table.open(passive(p, 50000, 60), 4, Instant::ZERO).unwrap();
        let b = table
            .open(passive(p, 50000, 90), 4, Instant::from_secs(30))
            .unwrap();
        assert!(b.refreshed);
        assert_eq!(a.id, b.id);
        assert_eq!(table.len(), 1);
        assert_eq!(table.next_deadline(), Some(Instant::from_secs(90)));
    }

    #[test]
    fn close_with_parent_closes_only_its_pinholes() {
        let (p, q) = parents();
        let mut table = PinholeTable::new(10);
        table.open(passive(p, 50000, 60), 4, Instant::ZERO).unwrap();
        table.open(passive(p, 50001, 60), 4, Instant::ZERO).unwrap();
        table.open(passive(q, 50002, 60), 4, Instant::ZERO).unwrap();
        let mut out = Vec::new();
        table.close_with_parent(p.handle, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(table.len(), 1);
        assert_eq!(table.iter().next().unwrap().spec.opening.dport, 50002);
    }
}
