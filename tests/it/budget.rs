//! The call budget inside a real poll: a back-fill that needs more calls than
//! the budget allows is spread out by the client, not throttled by the server.
//!
//! The budget's minute and hour are scaled down to 1 s and 3 s here (the same
//! code on a faster clock: `CallBudget::with_windows`), so the test watches
//! the limits bind in seconds; the real 100/min and 1,500/h are proven on
//! paused time in `src/ratelimit.rs`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mde_poller::poll::poll_tenant;
use mde_poller::ratelimit::CallBudget;
use mde_poller::scheduler::tenant_poll;
use mde_poller::sim::RequestKind;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// The most requests that arrived within any `window` (less a little slack
/// for the time between the budget's grant and the request's arrival).
fn busiest(arrivals: &[SystemTime], window: Duration) -> usize {
    let window = window - Duration::from_millis(50);
    (0..arrivals.len())
        .map(|i| {
            arrivals[i..]
                .iter()
                .take_while(|t| t.duration_since(arrivals[i]).unwrap_or_default() < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_is_spread_by_the_budget_not_throttled_by_the_server() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    let ids: HashSet<String> = w
        .sim
        .generate_alerts(&t, 240, ago(170 * MIN), ago(MIN))
        .into_iter()
        .collect();
    let config = w.config("first_lookback = \"3h\"\npage_size = 10\ntimeout = \"5s\"");
    let settings = mde_poller::config::load(&config).expect("config loads");
    let env = mde_poller::daemon::open_env(&settings)
        .await
        .expect("store and output open");
    let tenant = &settings.tenants[0];
    let http = mde_poller::http::client(&settings.http, settings.poll.timeout).unwrap();
    let budget =
        CallBudget::with_windows((6, Duration::from_secs(1)), (20, Duration::from_secs(3)));
    // The poller `run` builds, on a faster clock's budget.
    let poll = tenant_poll(&http, tenant, Arc::new(budget));

    let started = Instant::now();
    let report = poll_tenant(&env, &poll, &CancellationToken::new())
        .await
        .expect("the poll succeeds");
    let elapsed = started.elapsed();

    assert_eq!(alert_ids(&w.records()), ids, "every alert, once");
    let calls: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Alerts)
        .collect();
    assert!(
        calls.len() >= 24,
        "the back-fill needed {} calls",
        calls.len()
    );
    assert_eq!(report.requests as usize, calls.len());
    assert!(
        calls.iter().all(|c| c.status == 200),
        "no call was throttled or failed"
    );
    let arrivals: Vec<SystemTime> = calls.iter().map(|c| c.at).collect();
    assert!(
        busiest(&arrivals, Duration::from_secs(1)) <= 6,
        "at most 6 calls in any second"
    );
    assert!(
        busiest(&arrivals, Duration::from_secs(3)) <= 20,
        "at most 20 calls in any 3 s"
    );
    // More than 20 calls cannot fit in one long window: the budget made the
    // poll wait rather than call faster.
    assert!(elapsed >= Duration::from_secs(3), "took only {elapsed:?}");
}
