//! A token bucket: at most `rate` records a second on average, `rate` at once after a quiet
//! second. What it refuses is counted, so the log can say how much it left out.

use std::time::{Duration, Instant};

/// One class of records' budget.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u32,
    tokens: f64,
    last: Instant,
    /// Records refused since the last [`TokenBucket::take_suppressed`].
    suppressed: u64,
}

impl TokenBucket {
    /// A full bucket allowing `rate` records a second (0: none at all).
    pub fn new(rate: u32, now: Instant) -> Self {
        TokenBucket {
            rate,
            tokens: f64::from(rate),
            last: now,
            suppressed: 0,
        }
    }

    /// True when one record may be written at `now`; false counts it as suppressed.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        let rate = f64::from(self.rate);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * rate).min(rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// The records refused since the last call, resetting the count.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }

    /// Records refused and not yet reported.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

/// How often a class's suppressed count is reported while it keeps being suppressed.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_rate_then_rate_per_second() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, t0);
        let passed = (0..100).filter(|_| bucket.allow(t0)).count();
        assert_eq!(passed, 10);
        assert_eq!(bucket.take_suppressed(), 90);
        assert_eq!(bucket.suppressed(), 0);
        // Half a second refills half the bucket.
        let t1 = t0 + Duration::from_millis(500);
        let passed = (0..100).filter(|_| bucket.allow(t1)).count();
        assert_eq!(passed, 5);
        // A long quiet time refills no more than the burst.
        let t2 = t1 + Duration::from_secs(60);
        let passed = (0..100).filter(|_| bucket.allow(t2)).count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn rate_zero_suppresses_everything() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(0, t0);
        assert!(!bucket.allow(t0 + Duration::from_secs(5)));
        assert_eq!(bucket.suppressed(), 1);
    }
}
