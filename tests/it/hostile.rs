//! Hostile and broken servers, and operators who do surprising things: each
//! test is one way the poller used to lose, repeat, hang or crash (issue 8).

use std::time::Duration;

use crate::common::*;

const POLL: &str = r#"interval = "1s"
lookback = "2m"
first_lookback = "3h"
page_size = 50
timeout = "5s""#;

/// The pid written into `<db>.lock` by the process holding the database.
fn lock_holder(w: &World) -> Option<u32> {
    std::fs::read_to_string(w.path("state.db.lock"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_database_is_refused_and_status_still_reads() {
    let mut w = World::new().await;
    let a = w.tenant("alpha");
    w.sim.generate_alerts(&a, 20, ago(HOUR), ago(MIN));
    let config = w.config(POLL);
    let mut d = w.daemon(&config);
    wait_until("the daemon's back-fill", Duration::from_secs(20), || {
        w.records().len() >= 20
    })
    .await;
    let pid = d.pid().as_raw() as u32;
    assert_eq!(lock_holder(&w), Some(pid), "the lock file names the daemon");

    // More alerts the second process would emit a second time if it ran.
    w.sim
        .generate_alerts(&a, 20, ago(MIN), ago(Duration::from_secs(1)));
    let second = w.once(&config).await;
    assert_eq!(second.code, Some(1), "{}", second.stderr);
    let db = w.path("state.db").display().to_string();
    assert!(
        second.stderr.contains(&db),
        "names the database: {}",
        second.stderr
    );
    assert!(
        second.stderr.contains(&format!("pid {pid}")),
        "names the holder: {}",
        second.stderr
    );

    let status = w.run(&config, &["status"]).await;
    assert_eq!(
        status.code,
        Some(0),
        "status reads beside the daemon: {}",
        status.stderr
    );
    assert!(status.stdout.contains("alpha"), "{}", status.stdout);

    wait_until("the daemon's next poll", Duration::from_secs(20), || {
        w.records().len() >= 40
    })
    .await;
    d.stop().await;
    assert_eq!(w.records().len(), 40);
    assert_no_duplicates(&w.records());

    // The lock dies with its holder: the next `once` runs.
    let after = w.once(&config).await;
    assert_eq!(after.code, Some(0), "{}", after.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_lifetime_from_the_network_panics_and_huge_ones_still_poll() {
    use mde_poller::sim::Faults;
    // Lifetimes too large for the clock: clamped, and the poll goes on.
    for huge in [
        serde_json::json!(1e300),
        serde_json::json!(u64::MAX),
        serde_json::json!("1e300"),
    ] {
        let mut w = World::new().await;
        let a = w.tenant("alpha");
        w.sim.generate_alerts(&a, 5, ago(HOUR), ago(MIN));
        w.sim.set_faults(
            Some(&a),
            Faults {
                token_expires_in: Some(huge.clone()),
                ..Faults::none()
            },
        );
        let r = w.once(&w.config(POLL)).await;
        assert_eq!(r.code, Some(0), "expires_in {huge}: {}", r.stderr);
        assert_eq!(w.records().len(), 5, "expires_in {huge}");
    }
    // Unusable ones: a clear error and exit 1, never a panic (101).
    for bad in [
        serde_json::json!(-5),
        serde_json::json!("soon"),
        serde_json::json!(null),
        serde_json::json!(-1e300),
    ] {
        let mut w = World::new().await;
        let a = w.tenant("alpha");
        w.sim.set_faults(
            Some(&a),
            Faults {
                token_expires_in: Some(bad.clone()),
                ..Faults::none()
            },
        );
        let r = w.once(&w.config(POLL)).await;
        assert_eq!(r.code, Some(1), "expires_in {bad}: {}", r.stderr);
        assert!(
            !r.stderr.contains("panicked"),
            "expires_in {bad}: {}",
            r.stderr
        );
    }
}

/// The `error` of the `poll_failed` event of tenant `name`, if any.
fn poll_error(stderr: &str, name: &str) -> Option<String> {
    events(stderr, "poll_failed")
        .into_iter()
        .find(|e| e["tenant"] == name)
        .and_then(|e| e["error"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_body_fails_its_request_at_the_size_limit_and_the_others_poll() {
    use mde_poller::sim::Faults;
    let mut w = World::new().await;
    let healthy = w.tenant("healthy");
    let endless_api = w.tenant("endless-api");
    let endless_token = w.tenant("endless-token");
    for id in [&healthy, &endless_api, &endless_token] {
        w.sim.generate_alerts(id, 5, ago(HOUR), ago(MIN));
    }
    w.sim.set_faults(
        Some(&endless_api),
        Faults {
            endless_body: true,
            ..Faults::none()
        },
    );
    w.sim.set_faults(
        Some(&endless_token),
        Faults {
            token_endless_body: true,
            ..Faults::none()
        },
    );
    // A timeout far beyond what reading the limit takes: the limit, not the
    // clock, must end these requests.
    let config = w.config(&POLL.replace(r#"timeout = "5s""#, r#"timeout = "120s""#));
    let started = std::time::Instant::now();
    let r = w.once(&config).await;
    let took = started.elapsed();
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        took < Duration::from_secs(100),
        "ended by the limit, in {took:?}"
    );
    let ids = alert_ids(&w.records());
    assert_eq!(ids.len(), 5, "only the healthy tenant's alerts");
    assert!(w
        .records()
        .iter()
        .all(|r| r["tenant"]["id"] == healthy.as_str()));
    let api = poll_error(&r.stderr, "endless-api").expect("endless-api failed");
    assert!(api.contains("over 256 MiB"), "{api}");
    let token = r
        .stderr
        .lines()
        .find(|l| l.contains("endless-token") && l.contains("not a token response"));
    assert!(token.is_some(), "{}", r.stderr);
}

/// `once` with a deadline: a hang fails the test instead of stalling it.
async fn once_within(w: &World, config: &std::path::Path, within: Duration) -> Run {
    tokio::time::timeout(within, w.once(config))
        .await
        .unwrap_or_else(|_| panic!("`once` did not end within {within:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_or_foreign_next_link_falls_back_to_time_windows_and_loses_nothing() {
    use mde_poller::sim::Faults;
    let mut w = World::new().await;
    let healthy = w.tenant("healthy");
    let looping = w.tenant("looping");
    let foreign = w.tenant("foreign");
    let mut want = std::collections::HashSet::new();
    for id in [&healthy, &looping, &foreign] {
        // More than a page (50), so that full pages and their links come.
        want.extend(w.sim.generate_alerts(id, 120, ago(HOUR), ago(MIN)));
    }
    w.sim.set_faults(
        Some(&looping),
        Faults {
            next_link_loop: true,
            ..Faults::none()
        },
    );
    w.sim.set_faults(
        Some(&foreign),
        Faults {
            foreign_next_link: true,
            ..Faults::none()
        },
    );
    // One slot: a tenant stuck in a chain would hold up the others for good.
    let config = w.config(&format!("{POLL}\nconcurrency = 1"));
    let r = once_within(&w, &config, Duration::from_secs(60)).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(alert_ids(&w.records()), want, "every alert of every tenant");
    assert_no_duplicates(&w.records());
    assert!(!events(&r.stderr, "next_link_cycle").is_empty());
    assert!(!events(&r.stderr, "next_link_refused").is_empty());
    // The fallback costs calls, but a bounded number.
    let calls = w.sim.requests().len();
    assert!(calls < 300, "{calls} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_tenant_is_refused_and_nothing_fetched_with_it_is_emitted() {
    use mde_poller::sim::Faults;
    let mut w = World::new().await;
    let alpha = w.tenant("alpha");
    let beta = w.tenant("beta");
    w.sim.generate_alerts(&beta, 10, ago(HOUR), ago(MIN));
    // alpha's token endpoint hands out beta's tokens.
    w.sim.set_faults(
        Some(&alpha),
        Faults {
            token_tid: Some(beta.clone()),
            ..Faults::none()
        },
    );
    let r = w.once(&w.config_for(POLL, &["alpha"])).await;
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        w.records().is_empty(),
        "beta's alerts under alpha: {:?}",
        w.records()
    );
    let refused = r
        .stderr
        .lines()
        .find(|l| l.contains(&alpha) && l.contains(&beta))
        .unwrap_or_else(|| panic!("an error naming both tenant ids:\n{}", r.stderr));
    assert!(refused.contains("refused"), "{refused}");
    let api_calls = w
        .sim
        .requests()
        .into_iter()
        .filter(|q| q.kind == mde_poller::sim::RequestKind::Alerts)
        .count();
    assert_eq!(api_calls, 0, "the foreign token is never used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_right_at_start_reloads_instead_of_killing_the_daemon() {
    let mut w = World::new().await;
    // Many tenants: a start-up long enough to be hit in the middle.
    for n in 0..300 {
        w.tenant(&format!("tenant-{n:03}"));
    }
    let config = w.config(&POLL.replace(r#"interval = "1s""#, r#"interval = "1h""#));
    let mut d = w.daemon(&config);
    let pid = d.pid().as_raw() as u32;
    // The store lock is taken as `run` begins: from then on a SIGHUP is the
    // operator's (or logrotate's) and must not be fatal.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while lock_holder(&w) != Some(pid) {
        assert!(d.is_running(), "{}", d.stderr());
        assert!(std::time::Instant::now() < deadline, "no lock within 30 s");
        std::thread::sleep(Duration::from_micros(200));
    }
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_for_events("daemon_started", 1, Duration::from_secs(30), |_| true)
        .await;
    d.signal(nix::sys::signal::Signal::SIGHUP);
    d.wait_for_events("reloaded", 1, Duration::from_secs(30), |_| true)
        .await;
    assert!(d.is_running(), "{}", d.stderr());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_whose_requests_time_out_do_not_hold_up_a_healthy_one() {
    use mde_poller::sim::Faults;
    let mut w = World::new().await;
    // Named and added so that the stalled ones queue for the one slot first.
    let stalled: Vec<String> = ["a1-stalled", "a2-stalled"]
        .iter()
        .map(|n| w.tenant(n))
        .collect();
    let healthy = w.tenant("z-healthy");
    w.sim.generate_alerts(&healthy, 5, ago(HOUR), ago(MIN));
    for id in &stalled {
        w.sim.set_faults(
            Some(id),
            Faults {
                p_stall: 1.0,
                stall: Duration::from_secs(60),
                ..Faults::none()
            },
        );
    }
    // One slot and a 2 s timeout: each stalled poll tries 6 times (~13 s)
    // if it keeps its slot while it retries.
    let config = w.config(&format!(
        "{}\nconcurrency = 1",
        POLL.replace(r#"timeout = "5s""#, r#"timeout = "2s""#)
    ));
    let started = std::time::Instant::now();
    let once = {
        let config = config.clone();
        let bin = bin();
        tokio::spawn(async move {
            tokio::process::Command::new(bin)
                .arg("--config")
                .arg(&config)
                .arg("once")
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .expect("once runs")
        })
    };
    wait_until(
        "the healthy tenant's alerts",
        Duration::from_secs(60),
        || w.records().len() >= 5,
    )
    .await;
    let waited = started.elapsed();
    eprintln!("the healthy tenant was polled after {waited:?}");
    // Its turn comes after one timed-out try of each stalled tenant (~4 s).
    assert!(
        waited < Duration::from_secs(10),
        "the healthy tenant waited {waited:?}"
    );
    let out = once.await.unwrap();
    assert_eq!(out.status.code(), Some(1), "the stalled tenants failed");
}

/// A copy of a generated alert of `tenant` with `lastUpdateTime` and `status` set.
fn version(
    w: &World,
    tenant: &str,
    at: mde_poller::timestamp::Timestamp,
    status: &str,
) -> serde_json::Value {
    let mut v = w.sim.current(tenant).pop().expect("one alert");
    v["lastUpdateTime"] = at.to_string().into();
    v["status"] = status.into();
    v
}

/// The last record of alert `id`.
fn last_of(w: &World, id: &str) -> serde_json::Value {
    w.records()
        .into_iter()
        .rfind(|r| r["alert"]["id"] == id)
        .expect("the alert was emitted")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_updates_after_a_future_stamped_version_reach_the_output() {
    use mde_poller::timestamp::Timestamp;
    let mut w = World::new().await;
    let a = w.tenant("alpha");
    let id = w.sim.generate_alerts(&a, 1, ago(HOUR), ago(MIN)).remove(0);
    let config = w.config(POLL);
    // A replica with its clock two hours ahead stamps one read...
    let future = Timestamp::now().saturating_add(2 * HOUR);
    w.sim
        .insert_alert(&a, version(&w, &a, future, "New"))
        .unwrap();
    assert_eq!(w.once(&config).await.code, Some(0));
    assert_eq!(last_of(&w, &id)["alert"]["status"], "New");
    // ...then the real updates come, correctly stamped (earlier than it).
    w.sim
        .insert_alert(&a, version(&w, &a, Timestamp::now(), "InProgress"))
        .unwrap();
    assert_eq!(w.once(&config).await.code, Some(0));
    w.sim
        .insert_alert(&a, version(&w, &a, Timestamp::now(), "Resolved"))
        .unwrap();
    assert_eq!(w.once(&config).await.code, Some(0));
    assert_eq!(
        last_of(&w, &id)["alert"]["status"],
        "Resolved",
        "the final state reaches the output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_ahead_of_the_clock_does_not_skip_a_gap_longer_than_lookback() {
    use mde_poller::timestamp::Timestamp;
    let mut w = World::new().await;
    let a = w.tenant("alpha");
    w.sim.generate_alerts(&a, 1, ago(HOUR), ago(MIN));
    // A lookback of 1 s stands for the usual 15 min: the gap below is longer.
    let config = w.config(&POLL.replace(r#"lookback = "2m""#, r#"lookback = "1s""#));
    // One alert stamped 30 min ahead (within the cursor's horizon).
    let ahead = Timestamp::now().saturating_add(30 * MIN);
    w.sim
        .insert_alert(&a, version(&w, &a, ahead, "New"))
        .unwrap();
    assert_eq!(w.once(&config).await.code, Some(0));
    // Alerts made while no poll ran, stamped after the last poll ended.
    let gap_start = Timestamp::now();
    let gap = w.sim.generate_alerts(
        &a,
        5,
        gap_start,
        Timestamp::now().saturating_add(Duration::from_millis(10)),
    );
    wait_until(
        "a gap longer than lookback",
        Duration::from_secs(30),
        || Timestamp::now() > gap_start.saturating_add(Duration::from_secs(3)),
    )
    .await;
    assert_eq!(w.once(&config).await.code, Some(0));
    let ids = alert_ids(&w.records());
    for id in &gap {
        assert!(ids.contains(id), "alert {id} of the gap was skipped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_contents_under_one_version_are_emitted_once_each_and_do_not_flip_flop() {
    use mde_poller::sim::Faults;
    let mut w = World::new().await;
    let a = w.tenant("alpha");
    let ids = w.sim.generate_alerts(&a, 5, ago(HOUR), ago(MIN));
    w.sim.set_faults(
        Some(&a),
        Faults {
            twin_versions: true,
            ..Faults::none()
        },
    );
    let config = w.config(POLL);
    let mut after = Vec::new();
    for _ in 0..3 {
        assert_eq!(w.once(&config).await.code, Some(0));
        after.push(w.records().len());
    }
    assert_eq!(
        after[1], after[0],
        "the second poll emits nothing: {after:?}"
    );
    assert_eq!(
        after[2], after[0],
        "the third poll emits nothing: {after:?}"
    );
    for id in &ids {
        let n = w
            .records()
            .iter()
            .filter(|r| r["alert"]["id"] == id.as_str())
            .count();
        assert!((1..=2).contains(&n), "alert {id} emitted {n} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_ignoring_skip_is_worked_around_and_the_rest_keeps_flowing() {
    use mde_poller::sim::Faults;
    use mde_poller::timestamp::Timestamp;
    let mut w = World::new().await;
    let a = w.tenant("alpha");
    // 120 alerts in one 100 ns instant (more than a page of 50)...
    let instant = ago(30 * MIN);
    let next = Timestamp::from_ticks(instant.ticks() + 1);
    let mut want: std::collections::HashSet<String> = w
        .sim
        .generate_alerts(&a, 120, instant, next)
        .into_iter()
        .collect();
    // ...and alerts after it, which a stuck poll never reaches.
    want.extend(w.sim.generate_alerts(&a, 20, ago(20 * MIN), ago(MIN)));
    w.sim.set_faults(
        Some(&a),
        Faults {
            ignore_skip: true,
            ..Faults::none()
        },
    );
    let config = w.config(POLL);
    let r = w.once(&config).await;
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(alert_ids(&w.records()), want);
    assert_no_duplicates(&w.records());
    let calls = w.sim.requests().len();
    assert!(calls < 40, "{calls} calls");
    let status = w.run(&config, &["status", "--json"]).await;
    assert!(
        status.stdout.contains("$skip"),
        "status says what the server does wrong: {}",
        status.stdout
    );
    // The next poll is not stuck either.
    assert_eq!(w.once(&config).await.code, Some(0));
}
