//! The per-tenant call budget: at most 100 API calls in any minute and 1,500 in
//! any hour, and no call at all while a `Retry-After` holds.
//!
//! Microsoft counts calls per application and tenant, so each tenant gets its
//! own budget. A sliding log (not a token bucket) because the limits are stated
//! as "calls per minute/hour" and a sliding window is never looser than the
//! server's count, however the server aligns its windows. A back-fill of many
//! pages then slows down here instead of being throttled there.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// The published limits of the alerts API.
pub const PER_MINUTE: usize = 100;
pub const PER_HOUR: usize = 1500;

#[derive(Debug)]
pub struct CallBudget {
    per_minute: usize,
    per_hour: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Instants of the calls granted in the last hour, oldest first.
    granted: VecDeque<Instant>,
    /// No call before this instant (the server's `Retry-After`).
    blocked_until: Option<Instant>,
}

impl Default for CallBudget {
    fn default() -> Self {
        Self::new(PER_MINUTE, PER_HOUR)
    }
}

impl CallBudget {
    pub fn new(per_minute: usize, per_hour: usize) -> Self {
        CallBudget {
            per_minute: per_minute.max(1),
            per_hour: per_hour.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Waits until a call is allowed, then counts it. Cancel-safe: a call is
    /// only counted when this returns.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut state = self.state.lock().expect("budget lock");
                let now = Instant::now();
                match self.next_slot(&mut state, now) {
                    None => {
                        state.granted.push_back(now);
                        return;
                    }
                    Some(at) => at,
                }
            };
            tokio::time::sleep_until(wait).await;
        }
    }

    /// When the next call may be made, `None` for now.
    pub fn next_allowed(&self) -> Option<Instant> {
        let mut state = self.state.lock().expect("budget lock");
        self.next_slot(&mut state, Instant::now())
    }

    /// The server said `Retry-After: d`: no call for `d` from now.
    pub fn block_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut state = self.state.lock().expect("budget lock");
        state.blocked_until = Some(state.blocked_until.map_or(until, |b| b.max(until)));
    }

    fn next_slot(&self, state: &mut State, now: Instant) -> Option<Instant> {
        while state
            .granted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            state.granted.pop_front();
        }
        let mut earliest = now;
        if let Some(until) = state.blocked_until {
            if until > now {
                earliest = until;
            } else {
                state.blocked_until = None;
            }
        }
        if state.granted.len() >= self.per_hour {
            let oldest = state.granted[state.granted.len() - self.per_hour];
            earliest = earliest.max(oldest + HOUR);
        }
        let in_last_minute = state
            .granted
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) < MINUTE)
            .count();
        if in_last_minute >= self.per_minute {
            let oldest = state.granted[state.granted.len() - self.per_minute];
            earliest = earliest.max(oldest + MINUTE);
        }
        (earliest > now).then_some(earliest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_100_calls_in_any_minute() {
        let budget = CallBudget::default();
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..250 {
            budget.acquire().await;
            times.push(start.elapsed());
        }
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..].iter().take_while(|u| **u < *t + MINUTE).count();
            assert!(
                in_window <= 100,
                "{in_window} calls within a minute from {t:?}"
            );
        }
        // 250 calls need at least two full minutes of waiting.
        assert!(times[249] >= Duration::from_secs(120));
        assert!(times[249] < Duration::from_secs(121));
    }

    #[tokio::test(start_paused = true)]
    async fn the_hourly_cap_binds_past_1500_calls() {
        let budget = CallBudget::default();
        let start = Instant::now();
        for _ in 0..1500 {
            budget.acquire().await;
        }
        let before = start.elapsed();
        assert!(before < HOUR);
        budget.acquire().await;
        assert!(
            start.elapsed() >= HOUR,
            "call 1501 waited for the hour to roll"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_blocks_every_call_until_it_passes() {
        let budget = CallBudget::default();
        budget.acquire().await;
        budget.block_for(Duration::from_secs(30));
        let start = Instant::now();
        budget.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        // A shorter Retry-After never shortens a longer one already in force.
        budget.block_for(Duration::from_secs(20));
        budget.block_for(Duration::from_secs(5));
        let start = Instant::now();
        budget.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_secs(20));
    }
}
