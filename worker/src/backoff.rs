//! Exponential backoff with jitter, for retrying a coordinator that is down or overloaded.
//!
//! Jitter spreads the retries of many workers that lost the coordinator at the same moment, so
//! they do not all come back at once when it returns.

use std::time::Duration;

/// First delay.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest delay between two attempts.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Longest `Retry-After` obeyed: a larger value is treated as this (a coordinator bug should not
/// park a worker for a day).
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(600);

/// Delays between failed attempts: doubling from `base` up to `cap`, each one drawn at random
/// from the upper half of its step ("equal jitter").
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BACKOFF_BASE, BACKOFF_CAP)
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// The ceiling of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.failures.min(20);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Like [`next_delay`](Self::next_delay), but a server's `Retry-After` wins when it has one.
    pub fn next_delay_after(&mut self, retry_after: Option<Duration>) -> Duration {
        let delay = self.next_delay();
        match retry_after {
            Some(after) => after.min(RETRY_AFTER_CAP),
            None => delay,
        }
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Forgets past failures after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let mut b = Backoff::default();
        let mut last_ceiling = Duration::ZERO;
        for i in 0..40 {
            let ceiling = b.ceiling();
            assert!(ceiling >= last_ceiling, "ceiling shrank at step {i}");
            assert!(ceiling <= BACKOFF_CAP);
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} outside jitter of {ceiling:?}"
            );
            last_ceiling = ceiling;
        }
        assert_eq!(b.ceiling(), BACKOFF_CAP);
        assert_eq!(b.failures(), 40);
    }

    #[test]
    fn starts_near_base_and_doubles() {
        let mut b = Backoff::default();
        assert_eq!(b.ceiling(), BACKOFF_BASE);
        b.next_delay();
        assert_eq!(b.ceiling(), BACKOFF_BASE * 2);
        b.next_delay();
        assert_eq!(b.ceiling(), BACKOFF_BASE * 4);
        b.reset();
        assert_eq!(b.ceiling(), BACKOFF_BASE);
        assert!(b.next_delay() <= BACKOFF_BASE);
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let mut b = Backoff::default();
        let d = b.next_delay_after(Some(Duration::from_secs(7)));
        assert_eq!(d, Duration::from_secs(7));
        assert_eq!(b.failures(), 1);
        let d = b.next_delay_after(Some(Duration::from_secs(86_400)));
        assert_eq!(d, RETRY_AFTER_CAP);
    }
}
