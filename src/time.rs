//! Time as the engine sees it.
//!
//! The engine never reads a clock: every call that needs the time takes an [`Instant`] from the
//! caller. Replay passes capture timestamps, the NFQUEUE adapter passes a monotonic clock, and
//! tests jump an hour ahead by adding to a number. Durations are [`std::time::Duration`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in nanoseconds since an epoch the caller chooses.
///
/// Only differences between instants mean anything. Arithmetic saturates instead of wrapping, so
/// a hostile or corrupt timestamp can never make a deadline jump into the past.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Instant(u64);

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant(0);
    /// The latest representable instant; used as "never".
    pub const MAX: Instant = Instant(u64::MAX);

    /// An instant `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    /// An instant `secs` seconds after the epoch.
    pub const fn from_secs(secs: u64) -> Self {
        Instant(secs.saturating_mul(1_000_000_000))
    }

    /// An instant from a capture timestamp (seconds and nanoseconds).
    pub const fn from_secs_nanos(secs: u64, nanos: u32) -> Self {
        Instant(
            secs.saturating_mul(1_000_000_000)
                .saturating_add(nanos as u64),
        )
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    fn add(self, rhs: Duration) -> Instant {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(nanos))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;

    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - Instant::from_secs(5), Duration::ZERO);
        assert_eq!(
            Instant::from_secs(10) - Instant::from_secs(4),
            Duration::from_secs(6)
        );
        assert_eq!(Instant::from_secs_nanos(1, 5).as_nanos(), 1_000_000_005);
    }

    #[test]
    fn displays_seconds_and_nanos() {
        assert_eq!(Instant::from_secs_nanos(3, 42).to_string(), "3.000000042");
    }
}

/// Deadlines ordered by time, with the earliest one cached: [`TimerSet::first`] is read for
/// every packet (through [`crate::Engine::next_timeout`]), while a B-tree walk is needed only
/// when the earliest entry itself is removed.
#[derive(Clone, Debug)]
pub struct TimerSet<T> {
    set: std::collections::BTreeSet<(Instant, T)>,
    first: Option<(Instant, T)>,
}

impl<T: Ord + Copy> Default for TimerSet<T> {
    fn default() -> Self {
        TimerSet {
            set: std::collections::BTreeSet::new(),
            first: None,
        }
    }
}

impl<T: Ord + Copy> TimerSet<T> {
    /// The earliest entry.
    pub fn first(&self) -> Option<(Instant, T)> {
        self.first
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Adds an entry; false if it was already there.
    pub fn insert(&mut self, at: Instant, item: T) -> bool {
        if self.first.is_none_or(|first| (at, item) < first) {
            self.first = Some((at, item));
        }
        self.set.insert((at, item))
    }

    /// Removes an entry; false if it was not there.
    pub fn remove(&mut self, at: Instant, item: T) -> bool {
        let removed = self.set.remove(&(at, item));
        if removed && self.first == Some((at, item)) {
            self.first = self.set.first().copied();
        }
        removed
    }

    /// Removes and returns the earliest entry.
    pub fn pop_first(&mut self) -> Option<(Instant, T)> {
        let popped = self.set.pop_first();
        self.first = self.set.first().copied();
        popped
    }
}
