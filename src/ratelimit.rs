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

/// Added to both windows of a client's budget. The client counts a call when
/// it sends it, the server when it arrives: with latency that varies from
/// call to call, a call sent exactly a window after the first can arrive
/// while the server still counts the first (a Graph back-fill at 150 a minute
/// was throttled twice that way). A second of slack keeps the client's count
/// never looser than the server's.
const CLIENT_SLACK: Duration = Duration::from_secs(1);

/// The published limits of the alerts API.
pub(crate) const PER_MINUTE: usize = 100;
pub(crate) const PER_HOUR: usize = 1500;

/// Microsoft Graph's limit for the security API's alerts: 150 calls a
/// minute per app and tenant (no hourly limit is published; the hour
/// window is then 60 minutes' worth, i.e. no tighter than the minute).
pub(crate) const GRAPH_PER_MINUTE: usize = 150;

#[derive(Debug)]
pub struct CallBudget {
    /// (calls, window): the minute limit, then the hour limit. The long window
    /// must be the longer one: the log keeps calls for its length.
    short: (usize, Duration),
    long: (usize, Duration),
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
    /// Graph's budget: [`GRAPH_PER_MINUTE`], with `Retry-After` as for MDE.
    pub(crate) fn graph() -> Self {
        Self::new(GRAPH_PER_MINUTE, GRAPH_PER_MINUTE * 60)
    }

    /// A client's budget: the published limits over a minute and an hour,
    /// each window padded by [`CLIENT_SLACK`].
    pub(crate) fn new(per_minute: usize, per_hour: usize) -> Self {
        Self::with_windows(
            (per_minute, MINUTE + CLIENT_SLACK),
            (per_hour, HOUR + CLIENT_SLACK),
        )
    }

    /// The server's own count (the simulator): exactly a minute and an hour.
    #[cfg(feature = "sim")]
    pub(crate) fn exact(per_minute: usize, per_hour: usize) -> Self {
        Self::with_windows((per_minute, MINUTE), (per_hour, HOUR))
    }

    /// Limits over other windows than a minute and an hour: the same logic on
    /// a faster clock, so that a test of the whole poll can watch the budget
    /// spread calls out in seconds rather than minutes.
    pub fn with_windows(short: (usize, Duration), long: (usize, Duration)) -> Self {
        CallBudget {
            short: (short.0.max(1), short.1),
            long: (long.0.max(1), long.1.max(short.1)),
            state: Mutex::new(State::default()),
        }
    }

    /// Waits until a call is allowed, then counts it. Cancel-safe: a call is
    /// only counted when this returns.
    pub(crate) async fn acquire(&self) {
        while let Err(wait) = self.try_acquire_at(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Counts a call at `now` if the limits allow one, else says how long
    /// until they do (nothing counted). The simulator's server side uses
    /// this too: one implementation of the windows for both ends.
    pub(crate) fn try_acquire_at(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().expect("budget lock");
        match self.next_slot(&mut state, now) {
            None => {
                state.granted.push_back(now);
                Ok(())
            }
            Some(at) => Err(at - now),
        }
    }

    /// Calls the limits still allow now: (in the short window, in the long).
    pub(crate) fn left(&self) -> (usize, usize) {
        let now = Instant::now();
        let mut state = self.state.lock().expect("budget lock");
        self.next_slot(&mut state, now);
        let count = |window: Duration| {
            state
                .granted
                .iter()
                .rev()
                .take_while(|t| now.duration_since(**t) < window)
                .count()
        };
        (
            self.short.0.saturating_sub(count(self.short.1)),
            self.long.0.saturating_sub(count(self.long.1)),
        )
    }

    /// Counts calls another process made (read from the store): `last_short`
    /// in the short window and `last_long` in the long one, the ones older
    /// than the short window taken as leaving the long one last.
    pub(crate) fn already_spent(&self, last_short: usize, last_long: usize) {
        let now = Instant::now();
        let older = now.checked_sub(self.short.1).unwrap_or(now);
        let mut state = self.state.lock().expect("budget lock");
        let mut earlier: Vec<Instant> =
            std::iter::repeat_n(older, last_long.saturating_sub(last_short))
                .chain(std::iter::repeat_n(now, last_short))
                .collect();
        earlier.extend(state.granted.drain(..));
        earlier.sort();
        state.granted = earlier.into();
    }

    /// Time left on the server's last `Retry-After`, if any.
    pub(crate) fn blocked_for(&self) -> Option<Duration> {
        let state = self.state.lock().expect("budget lock");
        let now = Instant::now();
        state.blocked_until.filter(|u| *u > now).map(|u| u - now)
    }

    /// The server said `Retry-After: d`: no call for `d` from now.
    pub(crate) fn block_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut state = self.state.lock().expect("budget lock");
        state.blocked_until = Some(state.blocked_until.map_or(until, |b| b.max(until)));
    }

    fn next_slot(&self, state: &mut State, now: Instant) -> Option<Instant> {
        let long_window = self.long.1;
        while state
            .granted
            .front()
            .is_some_and(|t| now.duration_since(*t) >= long_window)
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
        for (calls, window) in [self.long, self.short] {
            let in_window = state
                .granted
                .iter()
                .rev()
                .take_while(|t| now.duration_since(**t) < window)
                .count();
            if in_window >= calls {
                // The call that must leave the window before another may enter.
                let oldest = state.granted[state.granted.len() - calls];
                earliest = earliest.max(oldest + window);
            }
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
        // 250 calls need at least two full minutes of waiting (plus the
        // client's slack on each).
        assert!(times[249] >= Duration::from_secs(120));
        assert!(times[249] < Duration::from_secs(120) + 2 * CLIENT_SLACK + Duration::from_secs(1));
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
    async fn calls_spent_elsewhere_count_against_the_budget() {
        let budget = CallBudget::default();
        assert_eq!(budget.left(), (100, 1500));
        budget.already_spent(30, 1000);
        assert_eq!(budget.left(), (70, 500));
        budget.acquire().await;
        assert_eq!(budget.left(), (69, 499));
        tokio::time::advance(MINUTE + CLIENT_SLACK).await;
        assert_eq!(
            budget.left(),
            (100, 499),
            "the minute's calls left the window"
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
