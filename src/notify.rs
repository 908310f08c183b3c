//! sd_notify: READY, RELOADING, STOPPING, STATUS and the watchdog. Every call
//! is a no-op outside systemd (no `NOTIFY_SOCKET`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::scheduler::{Health, Observer};

fn send(states: &[NotifyState]) {
    // Failing to reach systemd is not worth stopping the daemon for; without
    // NOTIFY_SOCKET this returns Ok at once.
    if let Err(e) = sd_notify::notify(false, states) {
        crate::events::sd_notify_failed(&e);
    }
}

pub(crate) fn ready() {
    send(&[NotifyState::Ready]);
}

pub(crate) fn reloading() {
    // systemd 253+ wants MONOTONIC_USEC with RELOADING=1 (Type=notify-reload).
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub(crate) fn stopping() {
    send(&[NotifyState::Stopping]);
}

pub(crate) fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// "12 tenants: 11 ok, 1 failing (fabrikam: consent missing (AADSTS700016))".
pub(crate) fn status_line(health: &BTreeMap<String, Health>) -> String {
    let ok = health.values().filter(|h| **h == Health::Ok).count();
    let failing: Vec<String> = health
        .iter()
        .filter_map(|(name, h)| match h {
            Health::Failing(why) => Some(format!("{name}: {why}")),
            _ => None,
        })
        .collect();
    let pending = health.len() - ok - failing.len();
    let mut line = format!(
        "{} tenant{}: {ok} ok",
        health.len(),
        if health.len() == 1 { "" } else { "s" }
    );
    if !failing.is_empty() {
        let shown: Vec<&str> = failing.iter().take(3).map(String::as_str).collect();
        let more = if failing.len() > 3 {
            format!(", and {} more", failing.len() - 3)
        } else {
            String::new()
        };
        line.push_str(&format!(
            ", {} failing ({}{more})",
            failing.len(),
            shown.join("; ")
        ));
    }
    if pending > 0 {
        line.push_str(&format!(", {pending} not polled yet"));
    }
    line
}

/// Tells systemd how the tenants are doing, and feeds the watchdog only while
/// the scheduler's heartbeat job keeps running.
#[derive(Clone)]
pub struct SystemdObserver {
    started: Instant,
    last_progress_ms: Arc<AtomicU64>,
}

impl Default for SystemdObserver {
    fn default() -> Self {
        SystemdObserver {
            started: Instant::now(),
            last_progress_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Observer for SystemdObserver {
    fn cycle(&self, health: &BTreeMap<String, Health>) {
        status(&status_line(health));
    }

    fn progress(&self) {
        self.last_progress_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl SystemdObserver {
    /// How long ago the scheduler's heartbeat last beat (`/healthz` asks).
    pub fn silence(&self) -> Duration {
        let now_ms = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now_ms.saturating_sub(self.last_progress_ms.load(Ordering::Relaxed)))
    }

    /// systemd's `WatchdogSec`, when it set one for us.
    pub(crate) fn watchdog_period() -> Option<Duration> {
        let mut usec = 0u64;
        (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
            .then(|| Duration::from_micros(usec))
    }

    /// Sends `WATCHDOG=1` every half `WatchdogSec`, but only while the
    /// scheduler made progress within the last `WatchdogSec`: a wedged daemon
    /// goes quiet and systemd restarts it.
    pub(crate) fn spawn_watchdog(&self, cancel: CancellationToken) {
        let Some(period) = Self::watchdog_period() else {
            return;
        };
        tokio::spawn(
            self.clone()
                .watchdog(period, cancel, || send(&[NotifyState::Watchdog])),
        );
    }

    async fn watchdog(self, period: Duration, cancel: CancellationToken, ping: impl Fn()) {
        let mut ticker = tokio::time::interval(period / 2);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now_ms = self.started.elapsed().as_millis() as u64;
            let last = self.last_progress_ms.load(Ordering::Relaxed);
            if now_ms.saturating_sub(last) <= period.as_millis() as u64 {
                ping();
            } else {
                crate::events::scheduler_stalled(now_ms - last);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_is_fed_only_while_the_scheduler_makes_progress() {
        let observer = SystemdObserver::default();
        let pings = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&pings);
        let cancel = CancellationToken::new();
        tokio::spawn(observer.clone().watchdog(
            Duration::from_secs(10),
            cancel.clone(),
            move || {
                counted.fetch_add(1, Ordering::Relaxed);
            },
        ));
        // The heartbeat job beats every second for 30 s: pings every 5 s.
        for _ in 0..30 {
            observer.progress();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let fed = pings.load(Ordering::Relaxed);
        assert!(
            (6..=7).contains(&fed),
            "{fed} pings in 30 s at a 10 s watchdog"
        );
        // The scheduler wedges: after at most one more period, no more pings.
        tokio::time::sleep(Duration::from_secs(60)).await;
        let after = pings.load(Ordering::Relaxed);
        assert!(
            after - fed <= 2,
            "pings went on without progress: {}",
            after - fed
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            pings.load(Ordering::Relaxed),
            after,
            "no ping at all once the heartbeat stopped"
        );
        // It comes back: pings resume.
        observer.progress();
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(pings.load(Ordering::Relaxed) > after);
        cancel.cancel();
    }

    #[test]
    fn status_line_names_the_failing_tenants() {
        let mut h = BTreeMap::new();
        h.insert("contoso".to_owned(), Health::Ok);
        h.insert(
            "fabrikam".to_owned(),
            Health::Failing("consent missing (AADSTS700016)".into()),
        );
        h.insert("northwind".to_owned(), Health::Pending);
        assert_eq!(
            status_line(&h),
            "3 tenants: 1 ok, 1 failing (fabrikam: consent missing (AADSTS700016)), 1 not polled yet"
        );
    }
}
