//! Flow-table designs under threads: is one table per worker (pinhole's design) worth it against
//! one table shared by all workers? Run with `cargo bench --bench table`.
//!
//! Each benchmark replays the same replay-like stream of operations on 5-tuple keys
//! (`pinhole::conntrack::FlowKey`, 42 bytes) with `u32` values (the slot index pinhole's table
//! stores), for a table of `n` steady flows:
//!
//! - the `n` steady flows are in the table before the stream starts; the stream looks up `2n`
//!   of them, drawn at random (so each about twice, in no particular order);
//! - `n / 8` short flows arrive during the stream: each is looked up (a miss) and inserted,
//!   looked up 6 times, and removed, so the table ends each run as it started and every
//!   iteration does the same work.
//!
//! That is `3n` operations: 92% lookups that hit, 4% inserts (each after a lookup that misses),
//! 4% removes.
//!
//! The stream is split over the threads by a hash of the key, as NFQUEUE's `--queue-balance`
//! splits flows over workers (so one key's operations stay in order on one thread), and the
//! designs differ only in where the keys live:
//!
//! - `per_worker`: each thread owns a `hashbrown::HashMap` with `foldhash` holding its shard
//!   (pinhole: one engine, and so one flow table, per worker; no locks);
//! - `dashmap`: one `dashmap::DashMap` (sharded `RwLock`s inside) shared by all threads;
//! - `mutex`: one `Mutex<hashbrown::HashMap>` shared by all threads, locked per operation;
//! - `rwlock`: the same behind an `RwLock` (read lock for lookups).
//!
//! An iteration is the whole stream, spread over 1 or 2 scoped threads and joined, timed by the
//! wall clock; divan's `items/s` is the total operations per second over all threads. All maps
//! use `foldhash`, so only the concurrency design differs. With 2 threads on a 2-core machine any
//! other load shows directly in the 2-thread rows: run it on an idle machine, or read the
//! `fastest` column. Under `cargo test` (each benchmark once, unoptimised) the tables hold 1000
//! flows instead.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, RwLock};

use dashmap::DashMap;
use divan::counter::ItemsCount;
use divan::{Bencher, black_box};
use hashbrown::HashMap;
use pinhole::conntrack::FlowKey;
use pinhole::wire::transport::proto;

fn main() {
    divan::main();
}

type Hasher = foldhash::fast::RandomState;

/// Steady flows in the table.
const SIZES: &[usize] = &[100_000, 1_000_000];

/// True under `cargo test` / `--test`.
fn test_mode() -> bool {
    let mut bench = false;
    for arg in std::env::args() {
        match arg.as_str() {
            "--test" => return true,
            "--bench" => bench = true,
            _ => {}
        }
    }
    !bench
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// A packet of a tracked flow.
    Lookup,
    /// The first packet of a new flow: a lookup that misses, then an insert.
    Insert,
    /// The flow ends.
    Remove,
}

#[derive(Clone, Copy)]
struct Step {
    op: Op,
    key: FlowKey,
}

/// The `i`-th distinct TCP flow: clients spread over 10.0.0.0/8 and their ports, servers in
/// 192.0.2.0/24 on port 443.
fn key(i: u32) -> FlowKey {
    FlowKey::new(
        proto::TCP,
        (
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i >> 8))),
            1024 + (i & 0xff) as u16,
        ),
        (IpAddr::V4(Ipv4Addr::new(192, 0, 2, (i % 251) as u8)), 443),
    )
}

/// A fixed xorshift generator: the same stream every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The steady keys and the stream of operations (see the module docs).
struct Workload {
    steady: Vec<FlowKey>,
    /// The stream split over 1 and 2 threads: `shards[t - 1][i]` is thread i's part.
    shards: [Vec<Vec<Step>>; 2],
    ops: usize,
    lookups: usize,
}

fn build(n: usize) -> Workload {
    const SPAN: u64 = 1 << 40;
    let steady: Vec<FlowKey> = (0..n as u32).map(key).collect();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut timed: Vec<(u64, Step)> = Vec::with_capacity(3 * n);
    for _ in 0..2 * n {
        let k = steady[rng.below(n as u64) as usize];
        timed.push((
            rng.below(SPAN),
            Step {
                op: Op::Lookup,
                key: k,
            },
        ));
    }
    for j in 0..(n / 8) as u32 {
        let k = key(n as u32 + j);
        let start = rng.below(SPAN - SPAN / 16);
        let gap = 1 + rng.below(SPAN / 256);
        timed.push((
            start,
            Step {
                op: Op::Insert,
                key: k,
            },
        ));
        for l in 1..=6 {
            timed.push((
                start + l * gap,
                Step {
                    op: Op::Lookup,
                    key: k,
                },
            ));
        }
        timed.push((
            start + 7 * gap,
            Step {
                op: Op::Remove,
                key: k,
            },
        ));
    }
    timed.sort_by_key(|(t, _)| *t);
    let stream: Vec<Step> = timed.into_iter().map(|(_, s)| s).collect();
    let lookups = stream.iter().filter(|s| s.op == Op::Lookup).count();
    let shard_hasher = foldhash::fast::FixedState::with_seed(7);
    let split = |threads: usize| {
        let mut parts = vec![Vec::with_capacity(stream.len() / threads + 1); threads];
        for step in &stream {
            parts[(shard_hasher.hash_one(step.key) % threads as u64) as usize].push(*step);
        }
        parts
    };
    Workload {
        ops: stream.len(),
        lookups,
        shards: [split(1), split(2)],
        steady,
    }
}

/// The workload for `n` steady flows, built once per size.
fn workload(n: usize) -> Arc<Workload> {
    static CACHE: Mutex<Vec<(usize, Arc<Workload>)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap();
    if let Some((_, w)) = cache.iter().find(|(size, _)| *size == n) {
        return Arc::clone(w);
    }
    let w = Arc::new(build(n));
    cache.push((n, Arc::clone(&w)));
    w
}

/// The map operations every design provides.
trait Map: Sync {
    fn lookup(&self, key: &FlowKey) -> Option<u32>;
    fn insert(&self, key: FlowKey, slot: u32);
    fn remove(&self, key: &FlowKey) -> Option<u32>;
}

impl Map for DashMap<FlowKey, u32, Hasher> {
    fn lookup(&self, key: &FlowKey) -> Option<u32> {
        self.get(key).map(|r| *r)
    }
    fn insert(&self, key: FlowKey, slot: u32) {
        DashMap::insert(self, key, slot);
    }
    fn remove(&self, key: &FlowKey) -> Option<u32> {
        DashMap::remove(self, key).map(|(_, v)| v)
    }
}

impl Map for Mutex<HashMap<FlowKey, u32, Hasher>> {
    fn lookup(&self, key: &FlowKey) -> Option<u32> {
        self.lock().unwrap().get(key).copied()
    }
    fn insert(&self, key: FlowKey, slot: u32) {
        self.lock().unwrap().insert(key, slot);
    }
    fn remove(&self, key: &FlowKey) -> Option<u32> {
        self.lock().unwrap().remove(key)
    }
}

impl Map for RwLock<HashMap<FlowKey, u32, Hasher>> {
    fn lookup(&self, key: &FlowKey) -> Option<u32> {
        self.read().unwrap().get(key).copied()
    }
    fn insert(&self, key: FlowKey, slot: u32) {
        self.write().unwrap().insert(key, slot);
    }
    fn remove(&self, key: &FlowKey) -> Option<u32> {
        self.write().unwrap().remove(key)
    }
}

/// One thread's part of the stream on a shared map; returns the lookups that hit.
fn run_shared(map: &impl Map, steps: &[Step]) -> usize {
    let mut hits = 0;
    let mut slot = 0u32;
    for step in steps {
        match step.op {
            Op::Lookup => hits += usize::from(map.lookup(&step.key).is_some()),
            Op::Insert => {
                if map.lookup(&step.key).is_none() {
                    map.insert(step.key, slot);
                    slot = slot.wrapping_add(1);
                }
            }
            Op::Remove => {
                black_box(map.remove(&step.key));
            }
        }
    }
    hits
}

/// One thread's part of the stream on the map it owns; returns the lookups that hit.
fn run_owned(map: &mut HashMap<FlowKey, u32, Hasher>, steps: &[Step]) -> usize {
    let mut hits = 0;
    let mut slot = 0u32;
    for step in steps {
        match step.op {
            Op::Lookup => hits += usize::from(map.get(&step.key).is_some()),
            Op::Insert => {
                if map.get(&step.key).is_none() {
                    map.insert(step.key, slot);
                    slot = slot.wrapping_add(1);
                }
            }
            Op::Remove => {
                black_box(map.remove(&step.key));
            }
        }
    }
    hits
}

fn size(n: usize) -> usize {
    if test_mode() { n.min(1000) } else { n }
}

/// The stream on per-thread maps, each holding its shard (pinhole's design).
#[divan::bench(consts = [1, 2], args = SIZES, sample_count = 20, sample_size = 1)]
fn per_worker<const THREADS: usize>(bencher: Bencher<'_, '_>, n: usize) {
    let w = workload(size(n));
    let shards = &w.shards[THREADS - 1];
    let shard_hasher = foldhash::fast::FixedState::with_seed(7);
    let mut maps: Vec<HashMap<FlowKey, u32, Hasher>> = (0..THREADS)
        .map(|_| HashMap::with_hasher(Hasher::default()))
        .collect();
    for (i, k) in w.steady.iter().enumerate() {
        let t = (shard_hasher.hash_one(k) % THREADS as u64) as usize;
        maps[t].insert(*k, i as u32);
    }
    let mut run = || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = maps
                .iter_mut()
                .zip(shards)
                .map(|(map, steps)| scope.spawn(move || run_owned(map, steps)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum::<usize>()
        })
    };
    assert_eq!(run(), w.lookups, "every lookup hits");
    bencher
        .counter(ItemsCount::new(w.ops))
        .bench_local(|| black_box(run()));
}

/// The stream on one shared map of type `M` built by `new`.
fn shared<M: Map>(bencher: Bencher<'_, '_>, n: usize, threads: usize, new: impl FnOnce() -> M) {
    let w = workload(size(n));
    let shards = &w.shards[threads - 1];
    let map = new();
    for (i, k) in w.steady.iter().enumerate() {
        map.insert(*k, i as u32);
    }
    let run = || {
        std::thread::scope(|scope| {
            let handles: Vec<_> = shards
                .iter()
                .map(|steps| scope.spawn(|| run_shared(&map, steps)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .sum::<usize>()
        })
    };
    assert_eq!(run(), w.lookups, "every lookup hits");
    bencher
        .counter(ItemsCount::new(w.ops))
        .bench_local(|| black_box(run()));
}

/// The stream on one `DashMap` shared by all threads.
#[divan::bench(consts = [1, 2], args = SIZES, sample_count = 20, sample_size = 1)]
fn dashmap<const THREADS: usize>(bencher: Bencher<'_, '_>, n: usize) {
    shared(bencher, n, THREADS, || {
        DashMap::<FlowKey, u32, Hasher>::with_hasher(Hasher::default())
    });
}

/// The stream on one `Mutex<HashMap>` shared by all threads, locked per operation.
#[divan::bench(consts = [1, 2], args = SIZES, sample_count = 20, sample_size = 1)]
fn mutex<const THREADS: usize>(bencher: Bencher<'_, '_>, n: usize) {
    shared(bencher, n, THREADS, || {
        Mutex::new(HashMap::<FlowKey, u32, Hasher>::with_hasher(
            Hasher::default(),
        ))
    });
}

/// The stream on one `RwLock<HashMap>` shared by all threads (read lock for lookups).
#[divan::bench(consts = [1, 2], args = SIZES, sample_count = 20, sample_size = 1)]
fn rwlock<const THREADS: usize>(bencher: Bencher<'_, '_>, n: usize) {
    shared(bencher, n, THREADS, || {
        RwLock::new(HashMap::<FlowKey, u32, Hasher>::with_hasher(
            Hasher::default(),
        ))
    });
}
