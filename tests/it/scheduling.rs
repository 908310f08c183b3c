//! When polls happen: on a cron schedule as well as an interval, never two
//! polls of one tenant at once.

use std::time::Duration;

use mde_poller::sim::Faults;

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
