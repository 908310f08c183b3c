//! The service's call budget: sliding windows of a minute and an hour over the
//! calls it accepted, per (application, tenant), as Microsoft counts them.
//!
//! Instants are tokio's, so tests on paused time can walk past a window.
//! The windows themselves are the client's [`CallBudget`]: the same rules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::ratelimit::CallBudget;

/// One [`CallBudget`] per (application, tenant): the client's own sliding
/// windows, asked without waiting.
pub(crate) struct RateLimiter {
    per_minute: usize,
    per_hour: usize,
    budgets: Mutex<HashMap<(String, String), Arc<CallBudget>>>,
}

impl RateLimiter {
    /// A limit of 0 means no limit.
    pub(crate) fn new(per_minute: u32, per_hour: u32) -> Self {
        let limit = |n: u32| if n == 0 { usize::MAX } else { n as usize };
        RateLimiter {
            per_minute: limit(per_minute),
            per_hour: limit(per_hour),
            budgets: Mutex::new(HashMap::new()),
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
        let budget = Arc::clone(
            self.budgets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry((client_id.to_owned(), tenant_id.to_owned()))
                .or_insert_with(|| Arc::new(CallBudget::exact(self.per_minute, self.per_hour))),
        );
        budget.try_acquire_at(now).map_err(|wait| {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            secs.max(1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const HOUR: Duration = Duration::from_secs(3600);

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
