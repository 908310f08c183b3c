//! Capped exponential backoff with full jitter: a small value that tests can
//! drive without a clock.
//!
//! Full jitter (a uniform draw in `[0, ceiling]`) rather than a fixed doubling,
//! so that hundreds of tenants failing against the same outage do not retry in
//! lock-step.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// Retries of one request inside one poll: short, so a poll that cannot
    /// succeed fails in seconds and the next poll tries again.
    pub(crate) fn for_requests() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(10))
    }

    /// How many delays have been handed out.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the next delay: `base · 2^attempt`, at most `cap`.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay, drawn uniformly in `[0, ceiling]`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }

    #[cfg(test)]
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut ceilings = Vec::new();
        for _ in 0..6 {
            ceilings.push(b.ceiling().as_millis());
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(1));
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_over_the_whole_range() {
        let mut low = false;
        let mut high = false;
        for _ in 0..200 {
            let mut b = Backoff::new(Duration::from_millis(1000), Duration::from_secs(10));
            let d = b.next_delay();
            low |= d < Duration::from_millis(250);
            high |= d > Duration::from_millis(750);
        }
        assert!(
            low && high,
            "full jitter draws from the whole [0, ceiling] range"
        );
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3600));
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(3600));
    }
}
