//! The daemon's life under trouble: SIGHUP with good and bad configs, SIGTERM
//! while a request hangs, `kill -9` in the middle of a back-fill, and storage
//! that cannot be read or written.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use mde_poller::sim::{Faults, RequestKind, SimOptions};
use mde_poller::timestamp::Timestamp;
use nix::sys::signal::Signal;

use crate::common::*;

const POLL: &str = r#"interval = "1s"
lookback = "2m"
first_lookback = "3h"
page_size = 50
timeout = "5s""#;

/// The alert ids of every record of `tenant_id`.
fn alert_ids_of(records: &[serde_json::Value], tenant_id: &str) -> HashSet<String> {
    let mine: Vec<_> = records
        .iter()
        .filter(|r| r["tenant"]["id"] == tenant_id)
        .cloned()
        .collect();
    alert_ids(&mine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_good_config_and_keeps_the_running_one_on_a_bad_one() {
    let mut w = World::new().await;
    let a = w.tenant("alpha");
    let b = w.tenant("beta");
    w.sim.generate_alerts(&a, 10, ago(HOUR), ago(MIN));
    let b_ids: HashSet<String> = w
        .sim
        .generate_alerts(&b, 10, ago(HOUR), ago(MIN))
        .into_iter()
        .collect();
    let mut d = w.daemon(&w.config_for(POLL, &["alpha"]));
    wait_until("alpha's back-fill", Duration::from_secs(20), || {
        w.records().len() >= 10
    })
    .await;
    assert!(
        alert_ids_of(&w.records(), &b).is_empty(),
        "beta is not configured yet"
    );

    // A good config adds beta.
    w.config_for(POLL, &["alpha", "beta"]);
    d.signal(Signal::SIGHUP);
    d.wait_for_events("reloaded", 1, Duration::from_secs(10), |_| true)
        .await;
    wait_until(
        "beta's back-fill after the reload",
        Duration::from_secs(20),
        || alert_ids_of(&w.records(), &b) == b_ids,
    )
    .await;

    // A bad config is refused, named, and the running one keeps polling.
    let good = std::fs::read_to_string(w.path("config.toml")).unwrap();
    std::fs::write(
        w.path("config.toml"),
        good.replace("page_size = 50", "page_size = 0"),
    )
    .unwrap();
    d.signal(Signal::SIGHUP);
    let failed = d
        .wait_for_events("reload_failed", 1, Duration::from_secs(10), |_| true)
        .await;
    assert_eq!(failed[0]["level"], "ERROR");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("poll.page_size"),
        "{}",
        failed[0]
    );
    let fresh = w
        .sim
        .generate_alerts(&a, 3, ago(Duration::from_secs(2)), Timestamp::now());
    wait_until(
        "alpha's new alerts under the kept config",
        Duration::from_secs(20),
        || {
            let got = alert_ids_of(&w.records(), &a);
            fresh.iter().all(|id| got.contains(id))
        },
    )
    .await;
    assert!(d.is_running());

    // A good config without alpha: alpha is no longer polled.
    w.config_for(POLL, &["beta"]);
    d.signal(Signal::SIGHUP);
    d.wait_for_events("reloaded", 2, Duration::from_secs(10), |_| true)
        .await;
    // A poll of alpha already in flight may finish: give it its timeout.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mark = std::time::SystemTime::now();
    let after_mark = |tenant: &str| {
        w.sim
            .requests()
            .into_iter()
            .filter(|r| {
                r.kind == RequestKind::Alerts
                    && r.at > mark
                    && r.tenant_id.as_deref() == Some(tenant)
            })
            .count()
    };
    wait_until("three more polls of beta", Duration::from_secs(20), || {
        after_mark(&b) >= 3
    })
    .await;
    assert_eq!(
        after_mark(&a),
        0,
        "alpha was still polled after it was removed"
    );
    let removed = d.events("tenant_removed");
    assert_eq!(removed.len(), 1);
    // Keyed like every other line about a tenant: by its name.
    assert_eq!(removed[0]["tenant"], "alpha");
    assert_eq!(removed[0]["tenant_id"], a.as_str());

    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_stalled_request_exits_0_within_10_seconds() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.sim.generate_alerts(&t, 30, ago(HOUR), ago(MIN));
    let config = w.config(&POLL.replace("timeout = \"5s\"", "timeout = \"30s\""));
    let mut d = w.daemon(&config);
    d.wait_for_events("poll_finished", 1, Duration::from_secs(20), |_| true)
        .await;
    assert_eq!(w.records().len(), 30);

    // Every answer from now on takes a minute, twice the client's timeout.
    w.sim.set_faults(
        None,
        Faults {
            p_stall: 1.0,
            stall: Duration::from_secs(60),
            ..Faults::none()
        },
    );
    let answered = |w: &World| {
        w.sim
            .requests()
            .iter()
            .filter(|r| r.kind == RequestKind::Alerts)
            .count()
    };
    let before = answered(&w);
    // The next poll starts within the 1 s interval and its request hangs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        answered(&w),
        before,
        "a request sent after the stall began was answered"
    );

    let sent = Instant::now();
    d.signal(Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10)).await;
    let took = sent.elapsed();
    let status =
        status.unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", d.stderr()));
    assert_eq!(status.code(), Some(0), "{}", d.stderr());
    assert_eq!(
        d.events("poll_abandoned").len(),
        1,
        "the hanging poll was abandoned:\n{}",
        d.stderr()
    );
    assert_eq!(d.events("daemon_stopped").len(), 1);
    let records = w.records_at_rest();
    assert_eq!(records.len(), 30);
    eprintln!("SIGTERM to exit with a request hanging: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_backfill_loses_nothing() {
    const ALERTS: usize = 2000;
    const PAGE: usize = 50;
    // No server-side budget: the restarts would otherwise carry the server's
    // count over into a client whose own count starts at zero.
    let mut w = World::with_options(SimOptions {
        per_minute: 0,
        per_hour: 0,
        ..SimOptions::default()
    })
    .await;
    let t = w.tenant("contoso");
    let expected: HashSet<String> = w
        .sim
        .generate_alerts(&t, ALERTS, ago(170 * MIN), ago(MIN))
        .into_iter()
        .collect();
    // Slow the back-fill down so the kills land in the middle of it.
    w.sim.set_faults(
        None,
        Faults {
            p_stall: 0.3,
            stall: Duration::from_millis(300),
            ..Faults::none()
        },
    );
    let config = w.config(POLL);
    let lines = |w: &World| read_records_lenient(&w.output_path()).0.len();
    let mut kills = 0;
    for at_least in [300, 800, 1300] {
        let mut d = w.daemon(&config);
        wait_until(
            &format!("{at_least} lines"),
            Duration::from_secs(60),
            || lines(&w) >= at_least,
        )
        .await;
        assert!(d.is_running());
        assert!(
            d.events("poll_finished").is_empty(),
            "the back-fill finished before the kill"
        );
        d.kill9();
        kills += 1;
    }
    w.sim.set_faults(None, Faults::none());
    let mut d = w.daemon(&config);
    d.wait_for_events("poll_finished", 1, Duration::from_secs(60), |_| true)
        .await;

    let (records, torn) = read_records_lenient(&w.output_path());
    let mut per_version: HashMap<(String, String, String), usize> = HashMap::new();
    for r in &records {
        *per_version.entry(version_of(r)).or_default() += 1;
    }
    let got = alert_ids(&records);
    let missing: Vec<_> = expected.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} alerts lost after {kills} kills, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    let repeats = records.len() - per_version.len();
    eprintln!(
        "kill -9 ×{kills}: {} lines, {repeats} repeated, {torn} torn",
        records.len()
    );
    assert!(
        repeats <= kills * PAGE,
        "{repeats} repeats after {kills} kills of pages of {PAGE}"
    );
    assert!(torn <= kills, "{torn} lines that are not JSON");

    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_stops_run_at_once_naming_the_file_and_the_fix() {
    let mut w = World::new().await;
    w.tenant("contoso");
    let config = w.config(POLL);
    std::fs::write(
        w.path("state.db"),
        "this is not an SQLite database\n".repeat(200),
    )
    .unwrap();
    let mut d = w.daemon(&config);
    let status = d
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("run gives up at once");
    assert_ne!(status.code(), Some(0));
    let stderr = d.stderr();
    assert!(
        stderr.contains(&w.path("state.db").display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("corrupt") && stderr.contains("move the file aside"),
        "{stderr}"
    );
    assert!(
        w.sim.requests().is_empty(),
        "no tenant was polled with a broken database"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_output_fails_polls_without_moving_the_cursor_and_recovers() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    let ids: HashSet<String> = w
        .sim
        .generate_alerts(&t, 20, ago(HOUR), ago(MIN))
        .into_iter()
        .collect();
    let good = w.config(POLL);
    let text = std::fs::read_to_string(&good).unwrap();
    std::fs::write(
        &good,
        text.replace("path = \"alerts.ndjson\"", "path = \"/dev/full\""),
    )
    .unwrap();
    let mut d = w.daemon(&good);
    let failed = d
        .wait_for_events("poll_failed", 2, Duration::from_secs(20), |_| true)
        .await;
    assert_eq!(failed[0]["level"], "ERROR", "a full disk needs an operator");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("writing the output"),
        "{}",
        failed[0]
    );
    let status = w.run(&good, &["status", "--json"]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&status.stdout).unwrap();
    assert!(
        rows[0]["cursor"].is_null(),
        "the cursor moved past alerts never written: {}",
        rows[0]
    );
    assert!(d.is_running());

    // The operator points the output somewhere writable: every alert arrives.
    std::fs::write(&good, text).unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_for_events("output_changed", 1, Duration::from_secs(10), |_| true)
        .await;
    wait_until(
        "the alerts held back by the full disk",
        Duration::from_secs(20),
        || alert_ids_of(&w.records(), &t) == ids,
    )
    .await;
    assert_no_duplicates(&w.records());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_torn_by_a_crash_does_not_swallow_the_next_record() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    let ids: HashSet<String> = w
        .sim
        .generate_alerts(&t, 5, ago(HOUR), ago(MIN))
        .into_iter()
        .collect();
    // What a kill -9 in the middle of a write leaves behind: half a line.
    std::fs::write(
        w.output_path(),
        "{\"@timestamp\":\"2026-01-01T00:00:00Z\",\"type\":\"mde.al",
    )
    .unwrap();
    let run = w.once(&w.config(POLL)).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let (records, torn) = read_records_lenient(&w.output_path());
    assert_eq!(torn, 1, "the fragment stays a line of its own");
    let text = std::fs::read_to_string(w.output_path()).unwrap();
    assert_eq!(
        alert_ids_of(&records, &t),
        ids,
        "every alert is a whole line after the fragment:\n{}",
        &text[..text.len().min(300)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_http_settings_applies_to_running_tenants() {
    let mut w = World::new().await;
    w.tenant("contoso");
    let config = w.config(POLL);
    let mut d = w.daemon(&config);
    d.wait_for_events("poll_finished", 1, Duration::from_secs(20), |_| true)
        .await;
    // The partner name goes into the User-Agent of the HTTP client.
    edit_file(&config, "[app]\n", "[app]\npartner = \"Contoso\"\n");
    w.sim.clear_requests();
    d.signal(Signal::SIGHUP);
    d.wait_for_events("reloaded", 1, Duration::from_secs(20), |_| true)
        .await;
    wait_until(
        "a request with the new User-Agent",
        Duration::from_secs(20),
        || {
            w.sim.requests().iter().any(|r| {
                r.user_agent
                    .as_deref()
                    .is_some_and(|ua| ua.starts_with("MdePartner-Contoso-MdePoller/"))
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_does_not_parse_is_rejected_on_reload_and_polling_goes_on() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    let config = w.config(POLL);
    let mut d = w.daemon(&config);
    d.wait_for_events("poll_finished", 1, Duration::from_secs(20), |_| true)
        .await;
    std::fs::write(w.path("half.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    edit_file(
        &config,
        "client_secret_file = \"client-secret\"",
        "certificate_file = \"half.pem\"",
    );
    d.signal(Signal::SIGHUP);
    let failed = d
        .wait_for_events("reload_failed", 1, Duration::from_secs(20), |_| true)
        .await;
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("app.certificate_file"),
        "{:?}",
        failed[0]
    );
    // The running config (the secret) stays in force.
    let late = w.sim.generate_alerts(
        &t,
        1,
        ago(Duration::from_secs(3)),
        ago(Duration::from_secs(2)),
    );
    wait_until(
        "an alert after the rejected reload",
        Duration::from_secs(20),
        || {
            w.records()
                .iter()
                .any(|r| r["alert"]["id"] == late[0].as_str())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_settings_change_restarts_every_tenant_without_calling_them_added() {
    let mut w = World::new().await;
    for name in ["alpha", "beta"] {
        let t = w.tenant(name);
        w.sim.generate_alerts(&t, 5, ago(HOUR), ago(MIN));
    }
    let config = w.config(POLL);
    let mut d = w.daemon(&config);
    wait_until("both back-fills", Duration::from_secs(20), || {
        w.records().len() >= 10
    })
    .await;

    edit_file(&config, "interval = \"1s\"", "interval = \"2s\"");
    d.signal(Signal::SIGHUP);
    d.wait_for_events("reloaded", 1, Duration::from_secs(10), |_| true)
        .await;
    let changed = d.events("poll_settings_changed");
    assert_eq!(changed.len(), 1, "{}", d.stderr());
    assert_eq!(changed[0]["tenants"], 2);
    assert!(
        d.events("tenant_added").is_empty() && d.events("tenant_changed").is_empty(),
        "a [poll] change is not a change of any tenant: {}",
        d.stderr()
    );
    // Both tenants are still polled on the new schedule.
    let before = d.events("poll_finished").len();
    d.wait_for_events("poll_finished", before + 2, Duration::from_secs(20), |_| {
        true
    })
    .await;

    d.stop().await;
}
