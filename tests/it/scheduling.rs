//! When polls happen: on a cron schedule as well as an interval, never two
//! polls of one tenant at once, and spread over the interval by each
//! tenant's phase.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mde_poller::sim::Faults;
use nix::sys::signal::Signal;

use crate::common::*;

async fn until(what: &str, done: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(20), done).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_schedule_polls_on_the_clock() {
    let mut w = World::new().await;
    w.tenant("contoso");
    let config = w.config("schedule = \"* * * * * *\"\nfirst_lookback = \"1h\"");
    let daemon = w.daemon(&config);
    until("three polls on a one-second cron schedule", || {
        daemon.events("poll_finished").len() >= 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_poll_is_never_overlapped_by_the_next_tick() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.sim.generate_alerts(&t, 3, ago(30 * MIN), ago(MIN));
    // Every call takes 2.5 s, the interval is 1 s: ticks come while a poll runs.
    w.sim.set_faults(
        Some(&t),
        Faults {
            p_stall: 1.0,
            stall: Duration::from_millis(2500),
            ..Faults::none()
        },
    );
    let config = w.config_with(
        "interval = \"1s\"\ntimeout = \"10s\"\nfirst_lookback = \"1h\"",
        "",
    );
    edit_file(&config, "level = \"info\"", "level = \"debug\"");
    let daemon = w.daemon(&config);
    until("two finished polls", || {
        daemon.events("poll_finished").len() >= 2
    })
    .await;
    assert!(
        !daemon.events("poll_skipped").is_empty(),
        "ticks during a running poll were skipped"
    );
    // Never two requests of this tenant in flight at once: each answer comes
    // a full stall after the previous one.
    let answered: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.kind == mde_poller::sim::RequestKind::Alerts)
        .map(|r| r.at)
        .collect();
    for pair in answered.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
        assert!(
            gap >= Duration::from_millis(2400),
            "overlapping requests {gap:?} apart"
        );
    }
    assert_no_duplicates(&w.records());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_tenants_poll_at_once_than_concurrency_allows() {
    let mut w = World::new().await;
    let tenants: Vec<String> = ["t1", "t2", "t3", "t4"]
        .iter()
        .map(|n| w.tenant(n))
        .collect();
    // Every API answer takes 400 ms: with concurrency 1 the tenants' calls
    // queue one behind the other; with more they would overlap.
    w.sim.set_faults(
        None,
        Faults {
            p_stall: 1.0,
            stall: Duration::from_millis(400),
            ..Faults::none()
        },
    );
    let config =
        w.config("interval = \"1h\"\nconcurrency = 1\ntimeout = \"5s\"\nfirst_lookback = \"1h\"");
    let run = w.once(&config).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mut arrivals: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.kind == mde_poller::sim::RequestKind::Alerts)
        .map(|r| (r.at, r.tenant_id))
        .collect();
    arrivals.sort_by_key(|a| a.0);
    let polled: std::collections::HashSet<_> =
        arrivals.iter().filter_map(|a| a.1.clone()).collect();
    assert_eq!(polled.len(), tenants.len(), "every tenant was polled");
    for pair in arrivals.windows(2) {
        let gap = pair[1].0.duration_since(pair[0].0).unwrap_or_default();
        assert!(
            gap >= Duration::from_millis(350),
            "two polls overlapped ({gap:?} apart)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_after_does_not_hold_a_concurrency_slot() {
    let mut w = World::new().await;
    let throttled = w.tenant("throttled");
    w.tenant("healthy");
    w.sim.set_faults(
        Some(&throttled),
        Faults {
            p_429: 1.0,
            retry_after_secs: 120,
            ..Faults::none()
        },
    );
    // One slot for both tenants: if the throttled one waited out its two
    // minutes inside its poll, the healthy one would not be polled again.
    let config =
        w.config("interval = \"1s\"\nconcurrency = 1\ntimeout = \"5s\"\nfirst_lookback = \"1h\"");
    let daemon = w.daemon(&config);
    until("five polls of the healthy tenant", || {
        daemon
            .events("poll_finished")
            .iter()
            .filter(|e| e["tenant"] == "healthy")
            .count()
            >= 5
    })
    .await;
    let calls: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| {
            r.kind == mde_poller::sim::RequestKind::Alerts
                && r.tenant_id.as_deref() == Some(throttled.as_str())
        })
        .collect();
    assert_eq!(
        calls.len(),
        1,
        "no call while the Retry-After holds: {calls:?}"
    );
}

/// Each tenant's alerts requests, as Unix milliseconds, by tenant id.
fn polls_by_tenant(w: &World) -> HashMap<String, Vec<u64>> {
    let mut by: HashMap<String, Vec<u64>> = HashMap::new();
    for r in w.sim.requests() {
        if r.kind != mde_poller::sim::RequestKind::Alerts {
            continue;
        }
        if let Some(t) = r.tenant_id {
            let ms = r.at.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
            by.entry(t).or_default().push(ms);
        }
    }
    for v in by.values_mut() {
        v.sort_unstable();
    }
    by
}

/// How far `a` is from `b` on a circle of `span` (offsets into an interval).
fn circular(a: u64, b: u64, span: u64) -> u64 {
    let d = (a + span - b % span) % span;
    d.min(span - d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_start_up_poll_each_tenant_keeps_its_own_phase_across_a_reload() {
    const INTERVAL_MS: u64 = 6000;
    let mut w = World::new().await;
    let names: Vec<String> = (0..12).map(|i| format!("t{i:02}")).collect();
    let ids: Vec<String> = names.iter().map(|n| w.tenant(n)).collect();
    let extra = w.tenant("late");
    let poll = "interval = \"6s\"\nfirst_lookback = \"1h\"";
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let config = w.config_for(poll, &all);
    let started = SystemTime::now();
    let mut d = w.daemon(&config);
    let within = Duration::from_secs(60);
    wait_until("three polls of every tenant", within, || {
        let by = polls_by_tenant(&w);
        ids.iter().all(|t| by.get(t).is_some_and(|v| v.len() >= 3))
    })
    .await;
    // A reload that adds a tenant moves nobody else.
    let mut with_late = all.clone();
    with_late.push("late");
    w.config_for(poll, &with_late);
    d.signal(Signal::SIGHUP);
    d.wait_for_events("reloaded", 1, within, |_| true).await;
    let before: HashMap<String, usize> = polls_by_tenant(&w)
        .into_iter()
        .map(|(t, v)| (t, v.len()))
        .collect();
    wait_until(
        "two more polls of every tenant after the reload",
        within,
        || {
            let by = polls_by_tenant(&w);
            ids.iter().all(|t| by[t].len() >= before[t] + 2) && by.contains_key(&extra)
        },
    )
    .await;
    d.stop().await;

    let by = polls_by_tenant(&w);
    let t0 = started.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let mut offsets = Vec::new();
    for t in &ids {
        let polls = &by[t];
        // Polled right at start-up (a dozen tenants take well under 10 s).
        assert!(
            polls[0] - t0 < 10_000,
            "{t}: first poll {} ms after start",
            polls[0] - t0
        );
        // Never twice within a few seconds: the hand-over waits for the
        // phase at least half an interval on, and a slot comes once.
        for pair in polls.windows(2) {
            assert!(pair[1] - pair[0] >= 2000, "{t}: polls {pair:?} too close");
        }
        // After the start-up poll, always at the same offset into the
        // interval (within the ticker's second and some load), before the
        // reload and after it.
        let steady = &polls[1..];
        let phase = steady[0] % INTERVAL_MS;
        for at in steady {
            let off = circular(*at, phase, INTERVAL_MS);
            assert!(
                off <= 2500,
                "{t}: a poll {off} ms off its phase: {steady:?}"
            );
        }
        offsets.push(phase / 1000);
    }
    // Spread over the interval, not all in one second as one job per
    // tenant did.
    let seconds: HashSet<u64> = offsets.into_iter().collect();
    assert!(seconds.len() >= 3, "phases of 12 tenants in {seconds:?}");
}
