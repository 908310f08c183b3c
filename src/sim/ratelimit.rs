//! The service's call budget: sliding windows of a minute and an hour over the
//! calls it accepted, per (application, tenant), as Microsoft counts them.
//!
//! Instants are tokio's, so tests on paused time can walk past a window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

pub(crate) struct RateLimiter {
    per_minute: u32,
    per_hour: u32,
    calls: Mutex<HashMap<(String, String), VecDeque<Instant>>>,
}

impl RateLimiter {
    /// A limit of 0 means no limit.
    pub(crate) fn new(per_minute: u32, per_hour: u32) -> Self {
        RateLimiter {
            per_minute,
            per_hour,
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// Counts the call and returns `Ok`, or refuses it (not counted) with the
    /// whole seconds until a slot frees in every exhausted window (≥ 1).
    pub(crate) fn try_acquire(
        &self,
        client_id: &str,
        tenant_id: &str,
        now: Instant,
    ) -> Result<(), u64> {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let q = calls
            .entry((client_id.to_owned(), tenant_id.to_owned()))
            .or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= HOUR) {
            q.pop_front();
        }
        let in_minute = q.len() - q.partition_point(|t| now.duration_since(*t) >= MINUTE);
        let mut wait = Duration::ZERO;
        if self.per_minute > 0 && in_minute >= self.per_minute as usize {
            // The call that must leave the window before one more fits.
            let oldest = q[q.len() - self.per_minute as usize];
            wait = wait.max((oldest + MINUTE).saturating_duration_since(now));
        }
        if self.per_hour > 0 && q.len() >= self.per_hour as usize {
            let oldest = q[q.len() - self.per_hour as usize];
            wait = wait.max((oldest + HOUR).saturating_duration_since(now));
        }
        let refused = (self.per_minute > 0 && in_minute >= self.per_minute as usize)
            || (self.per_hour > 0 && q.len() >= self.per_hour as usize);
        if refused {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(secs.max(1));
        }
        q.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_window_refuses_then_frees_a_slot() {
        let rl = RateLimiter::new(3, 0);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(
                rl.try_acquire("app", "t", t0 + Duration::from_secs(i * 10)),
                Ok(())
            );
        }
        // The first call (t0) leaves the window at t0+60: 35 s after t0+25.
        assert_eq!(
            rl.try_acquire("app", "t", t0 + Duration::from_secs(25)),
            Err(35)
        );
        assert_eq!(
            rl.try_acquire("app", "t", t0 + Duration::from_millis(59_500)),
            Err(1)
        );
        assert_eq!(
            rl.try_acquire("app", "t", t0 + Duration::from_secs(60)),
            Ok(())
        );
        // Another tenant of the same app has its own budget.
        assert_eq!(rl.try_acquire("app", "other", t0), Ok(()));
    }

    #[test]
    fn hour_window_binds_when_minutes_are_fine() {
        let rl = RateLimiter::new(100, 4);
        let t0 = Instant::now();
        for i in 0..4 {
            assert_eq!(
                rl.try_acquire("a", "t", t0 + Duration::from_secs(i * 120)),
                Ok(())
            );
        }
        assert_eq!(
            rl.try_acquire("a", "t", t0 + Duration::from_secs(600)),
            Err(3000)
        );
        assert_eq!(rl.try_acquire("a", "t", t0 + HOUR), Ok(()));
    }
}
