//! Tokens over a daemon's life: renewed before they expire, and renewed at
//! once when the API refuses one early (401).

use std::time::Duration;

use mde_poller::sim::{RequestKind, SimOptions};

use crate::common::*;

const POLL: &str =
    "interval = \"1s\"\nlookback = \"10m\"\nfirst_lookback = \"1h\"\ntimeout = \"5s\"";

/// Waits (up to 20 s) until `done` holds.
async fn until(what: &str, done: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(20), done).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_renewed_before_it_expires() {
    let mut w = World::with_options(SimOptions {
        token_lifetime: Duration::from_secs(2),
        ..SimOptions::default()
    })
    .await;
    let t = w.tenant("contoso");
    w.sim.generate_alerts(&t, 5, ago(30 * MIN), ago(MIN));
    let _daemon = w.daemon(&w.config(POLL));
    until("three token requests", || {
        w.sim
            .requests()
            .iter()
            .filter(|r| r.kind == RequestKind::Token)
            .count()
            >= 3
    })
    .await;
    // A new alert still arrives: polling never stopped for want of a token.
    let late = w.sim.generate_alerts(
        &t,
        1,
        ago(Duration::from_secs(2)),
        ago(Duration::from_secs(1)),
    );
    until("the new alert", || {
        w.records()
            .iter()
            .any(|r| r["alert"]["id"] == late[0].as_str())
    })
    .await;
    let refused: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Alerts && r.status == 401)
        .collect();
    assert!(
        refused.is_empty(),
        "tokens were renewed before expiry, never used expired: {refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_refused_early_is_replaced_and_the_poll_succeeds() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.sim.generate_alerts(&t, 5, ago(30 * MIN), ago(MIN));
    let daemon = w.daemon(&w.config(POLL));
    until("the back-fill", || w.records().len() == 5).await;

    assert!(w.sim.revoke_tokens(&t) > 0);
    let after = w.sim.generate_alerts(
        &t,
        1,
        ago(Duration::from_secs(2)),
        ago(Duration::from_secs(1)),
    );
    until("the alert after revocation", || {
        w.records()
            .iter()
            .any(|r| r["alert"]["id"] == after[0].as_str())
    })
    .await;

    let calls = w.sim.requests();
    let refused = calls
        .iter()
        .position(|r| r.kind == RequestKind::Alerts && r.status == 401)
        .expect("the revoked token was refused");
    let rest = &calls[refused + 1..];
    assert_eq!(
        rest[0].kind,
        RequestKind::Token,
        "a new token is fetched right after the 401"
    );
    assert!(rest
        .iter()
        .any(|r| r.kind == RequestKind::Alerts && r.status == 200));
    assert!(
        daemon.events("poll_failed").is_empty(),
        "the 401 was recovered within the poll: {}",
        daemon.stderr()
    );
    assert_no_duplicates(&w.records());
}
