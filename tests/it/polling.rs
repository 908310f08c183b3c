//! The main path: back-fill, late arrivals, time-window paging, updates,
//! overlapping re-reads, and tenants isolated from each other.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mde_poller::sim::{Faults, Latency, RequestKind, RequestRecord};
use mde_poller::timestamp::Timestamp;

use crate::common::*;

const POLL: &str = r#"interval = "1s"
lookback = "10m"
first_lookback = "3h"
page_size = 25
timeout = "5s""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_poll_backfills_first_lookback_and_no_further() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    let inside = w.sim.generate_alerts(&t, 40, ago(170 * MIN), ago(MIN));
    let outside = w.sim.generate_alerts(&t, 10, ago(6 * HOUR), ago(4 * HOUR));
    let run = w.once(&w.config(POLL)).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let records = w.records();
    let ids: HashSet<&str> = records
        .iter()
        .map(|r| r["alert"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 40);
    assert!(inside.iter().all(|id| ids.contains(id.as_str())));
    assert!(outside.iter().all(|id| !ids.contains(id.as_str())));
    for r in &records {
        assert_eq!(r["type"], "mde.alert");
        assert_eq!(r["change"], "new");
        assert_eq!(r["tenant"]["name"], "contoso");
        assert_eq!(r["tenant"]["id"], t.as_str());
        assert!(Timestamp::parse(r["@timestamp"].as_str().unwrap()).is_ok());
    }
    assert!(
        run.stdout.is_empty(),
        "records go to the output file, nothing to stdout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_emitted_verbatim() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.sim.generate_alerts(&t, 5, ago(HOUR), ago(MIN));
    assert_eq!(w.once(&w.config(POLL)).await.code, Some(0));
    let current = w.sim.current(&t);
    for r in w.records() {
        let mut original = current
            .iter()
            .find(|a| a["id"] == r["alert"]["id"])
            .unwrap()
            .clone();
        // Without $expand=evidence the API sends an empty evidence list.
        original["evidence"] = serde_json::json!([]);
        assert_eq!(
            r["alert"], original,
            "the alert object is passed through unchanged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_alert_inside_lookback_is_emitted() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.sim.generate_alerts(&t, 10, ago(HOUR), ago(MIN));
    let config = w.config(POLL);
    assert_eq!(w.once(&config).await.code, Some(0));
    assert_eq!(w.records().len(), 10);

    // Arrives now, stamped five minutes ago: older than the cursor, inside lookback.
    let late = w
        .sim
        .generate_alerts(&t, 1, ago(5 * MIN), ago(5 * MIN - Duration::from_secs(1)));
    assert_eq!(w.once(&config).await.code, Some(0));
    let records = w.records();
    assert_eq!(records.len(), 11);
    assert_eq!(records[10]["alert"]["id"], late[0].as_str());
    assert_eq!(records[10]["change"], "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_pages_split_and_nothing_is_lost() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    let mut expected: HashSet<String> = w
        .sim
        .generate_alerts(&t, 500, ago(150 * MIN), ago(MIN))
        .into_iter()
        .collect();
    // One instant holding more than a page: only $skip can read it.
    let instant = ago(30 * MIN);
    for i in 0..40 {
        let id = format!("da-same-instant-{i}");
        w.sim
            .insert_alert(&t, serde_json::json!({"id": id, "lastUpdateTime": instant.to_string(), "status": "New"}))
            .unwrap();
        expected.insert(id);
    }
    let run = w.once(&w.config(POLL)).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let records = w.records();
    assert_no_duplicates(&records);
    assert_eq!(
        alert_ids(&records),
        expected,
        "every alert of the window, each once"
    );

    let calls: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Alerts)
        .collect();
    assert!(calls.iter().all(|c| c.top == Some(25)));
    assert!(
        calls
            .iter()
            .any(|c| c.filter.as_deref().unwrap_or("").contains(" lt ")),
        "full windows were split"
    );
    assert!(
        calls.iter().any(|c| c.skip.unwrap_or(0) > 0),
        "the crowded instant was paged with $skip"
    );
}

/// Back-fills 10,000 alerts of one tenant at `page_size = 1000` from a
/// simulator holding every answer `latency`, with `faults`; checks that every
/// alert was written once and returns the alerts requests in arrival order.
async fn slow_backfill(latency: Duration, faults: Faults) -> Vec<RequestRecord> {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    let expected: HashSet<String> = w
        .sim
        .generate_alerts(&t, 10_000, ago(150 * MIN), ago(MIN))
        .into_iter()
        .collect();
    w.sim.set_latency(Latency {
        fixed: latency,
        per_alert: Duration::ZERO,
    });
    w.sim.set_faults(Some(&t), faults);
    let poll = POLL.replace("page_size = 25", "page_size = 1000");
    let run = w.once(&w.config(&poll)).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let records = w.records();
    assert_no_duplicates(&records);
    assert_eq!(alert_ids(&records), expected, "every alert, each once");

    let mut calls: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Alerts)
        .collect();
    calls.sort_by_key(|r| r.at_instant);
    calls
}

/// Issue 10's latency-bound back-fill at a test's scale. Every answer takes
/// 400 ms, so requests are the cost: the poller plans its windows from the
/// first full page (a probe, then pieces where the alerts are) and has the
/// pieces out at once instead of one by one. At the benchmark's 100,000
/// alerts the plan is within 1.25 times the fewest requests (⌈N / page⌉ + 1).
/// Here a probe of ~84 sampled times measures the window within ~11 %: it
/// usually takes 12-14, but an estimate low enough to put every piece over a
/// page (seen once in ~15 runs) costs 48, since each such piece is then
/// probed again and read as one end of its window. The bound allows that
/// known cost; the check that reads are out together is what tells this
/// plan from reading one window at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backfill_reads_its_pieces_at_once_in_few_requests() {
    let calls = slow_backfill(Duration::from_millis(400), Faults::none()).await;
    let fewest = 10_000 / 1000 + 1;
    assert!(
        calls.len() <= 5 * fewest,
        "{} requests for {fewest} pages' worth: {:?}",
        calls.len(),
        calls
            .iter()
            .map(|c| (c.filter.clone().unwrap_or_default(), c.served))
            .collect::<Vec<_>>()
    );
    // Requests that reached the simulator within 300 ms of one another were
    // out together: each answer is held 400 ms (a margin for a busy machine).
    let together = (0..calls.len())
        .map(|i| {
            calls[i..]
                .iter()
                .take_while(|c| c.at_instant - calls[i].at_instant < Duration::from_millis(300))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        (8..=12).contains(&together),
        "{together} requests were out at once (the poller keeps up to 12)"
    );
}

/// Six of the pieces out at once are refused (429, Retry-After 2 s). When
/// the time has passed, one call goes first and the others wait for its
/// answer, rather than all calling again at once and all but one being
/// refused again; nothing is lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_throttle_one_call_goes_first() {
    // The first read and the probe pass; six of the pieces sent together are refused.
    let faults = Faults {
        throttle_at: (3..=8).collect(),
        retry_after_secs: 2,
        ..Faults::none()
    };
    let calls = slow_backfill(Duration::from_millis(200), faults).await;
    assert_eq!(calls.iter().filter(|c| c.status == 429).count(), 6);
    let last_refused = calls.iter().rev().find(|c| c.status == 429).unwrap();
    // Retry-After is at least a second away (2 s, or the start of that
    // second when sent as a date); the pieces answered 200 came with the
    // refused ones.
    let retries: Vec<_> = calls
        .iter()
        .filter(|c| c.at_instant > last_refused.at_instant + Duration::from_millis(900))
        .collect();
    // Each refused read calls once more (and a piece planned meanwhile).
    assert!(
        retries.len() >= 6,
        "{} calls after the refusals",
        retries.len()
    );
    assert!(retries.iter().all(|c| c.status == 200));
    let gap = retries[1].at_instant - retries[0].at_instant;
    assert!(
        gap >= Duration::from_millis(150),
        "the second call came {gap:?} after the first, before its answer (200 ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_is_emitted_once_as_update() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    let ids = w.sim.generate_alerts(&t, 8, ago(HOUR), ago(2 * MIN));
    let config = w.config(POLL);
    assert_eq!(w.once(&config).await.code, Some(0));

    assert!(w.sim.update_alert(&t, &ids[3], Timestamp::now()));
    assert_eq!(w.once(&config).await.code, Some(0));
    assert_eq!(w.once(&config).await.code, Some(0));

    let records = w.records();
    assert_eq!(
        records.len(),
        9,
        "8 new + 1 update, and the third poll emits nothing"
    );
    let update = &records[8];
    assert_eq!(update["change"], "update");
    assert_eq!(update["alert"]["id"], ids[3].as_str());
    let first = records[..8]
        .iter()
        .find(|r| r["alert"]["id"] == ids[3].as_str())
        .unwrap();
    let mut current = w
        .sim
        .current(&t)
        .into_iter()
        .find(|a| a["id"] == ids[3].as_str())
        .unwrap();
    current["evidence"] = serde_json::json!([]);
    assert_eq!(
        update["alert"], current,
        "the update carries the alert as it is now"
    );
    let (old, new) = (
        first["alert"]["lastUpdateTime"].as_str().unwrap(),
        update["alert"]["lastUpdateTime"].as_str().unwrap(),
    );
    assert!(Timestamp::parse(new).unwrap() > Timestamp::parse(old).unwrap());
    assert_no_duplicates(&records);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapping_reread_emits_nothing() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.sim
        .generate_alerts(&t, 30, ago(8 * MIN), ago(Duration::from_secs(5)));
    let config = w.config(POLL);
    assert_eq!(w.once(&config).await.code, Some(0));
    w.sim.clear_requests();
    let second = w.once(&config).await;
    assert_eq!(second.code, Some(0));
    assert_eq!(
        w.records().len(),
        30,
        "the second poll re-read the same window and emitted nothing"
    );
    // The second poll really did re-read: its window starts lookback behind the cursor.
    let calls: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Alerts && r.status == 200)
        .collect();
    assert!(!calls.is_empty());
    let finished = events(&second.stderr, "poll_finished");
    assert_eq!(finished[0]["seen"], 30);
    assert_eq!(finished[0]["emitted"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_without_consent_does_not_delay_the_others() {
    let mut w = World::new().await;
    let good = w.tenant("contoso");
    w.tenant_with("fabrikam", false, &["Alert.Read.All"]);
    w.sim.generate_alerts(&good, 20, ago(HOUR), ago(MIN));
    let started = Instant::now();
    let run = w.once(&w.config(POLL)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(run.code, Some(1), "a failed tenant makes `once` exit 1");
    assert_eq!(
        w.records().len(),
        20,
        "the consented tenant's alerts were all emitted"
    );
    let failed = events(&run.stderr, "tenant_auth_failed");
    assert_eq!(failed.len(), 1, "{}", run.stderr);
    assert_eq!(failed[0]["tenant"], "fabrikam");
    assert_eq!(failed[0]["code"], 700016);
    assert!(failed[0]["hint"].as_str().unwrap().contains("consent-url"));
    // `once` is a scheduler tick: the same line as `run` would log.
    assert!(failed[0]["retry_in_s"].is_u64(), "{}", failed[0]);
    assert!(!run.stderr.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_exits_zero_when_every_tenant_polled() {
    let mut w = World::new().await;
    w.tenant("contoso");
    w.tenant("northwind");
    let run = w.once(&w.config(POLL)).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(events(&run.stderr, "poll_finished").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_of_each_tenant_carry_that_tenant() {
    let mut w = World::new().await;
    let a = w.tenant("contoso");
    let b = w.tenant("northwind");
    let ids_a: HashSet<String> = w
        .sim
        .generate_alerts(&a, 15, ago(HOUR), ago(MIN))
        .into_iter()
        .collect();
    let ids_b: HashSet<String> = w
        .sim
        .generate_alerts(&b, 15, ago(HOUR), ago(MIN))
        .into_iter()
        .collect();
    assert_eq!(w.once(&w.config(POLL)).await.code, Some(0));
    for r in w.records() {
        let id = r["alert"]["id"].as_str().unwrap();
        match r["tenant"]["name"].as_str().unwrap() {
            "contoso" => assert!(ids_a.contains(id) && r["tenant"]["id"] == a.as_str()),
            "northwind" => assert!(ids_b.contains(id) && r["tenant"]["id"] == b.as_str()),
            other => panic!("unknown tenant {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_tenants_cursor_and_counts() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.tenant_with("fabrikam", false, &[]);
    w.sim.generate_alerts(&t, 12, ago(HOUR), ago(MIN));
    let config = w.config(POLL);
    w.once(&config).await;
    let run = w.run(&config, &["status", "--json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    let contoso = rows.iter().find(|r| r["tenant"] == "contoso").unwrap();
    assert_eq!(contoso["alerts_stored"], 12);
    assert!(contoso["cursor"].is_string());
    assert!(contoso["last_error"].is_null());
    let fabrikam = rows.iter().find(|r| r["tenant"] == "fabrikam").unwrap();
    assert!(fabrikam["last_error"].as_str().unwrap().contains("700016"));
    assert!(fabrikam["last_success"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_stamped_far_in_the_future_does_not_drag_the_cursor_along() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.sim.generate_alerts(&t, 3, ago(HOUR), ago(MIN));
    w.sim
        .insert_alert(
            &t,
            serde_json::json!({"id": "from-2099", "lastUpdateTime": "2099-01-01T00:00:00Z"}),
        )
        .unwrap();
    // Within the hour the cursor may follow, but a poll still starts no later
    // than `lookback` before now.
    let ahead = Timestamp::now().saturating_add(40 * MIN);
    w.sim
        .insert_alert(
            &t,
            serde_json::json!({"id": "forty-minutes-ahead", "lastUpdateTime": ahead.to_string()}),
        )
        .unwrap();
    let config = w.config(POLL);
    assert_eq!(w.once(&config).await.code, Some(0));
    assert_eq!(w.records().len(), 5, "the odd alerts are still emitted");
    // An ordinary late alert after it is still found.
    let late = w.sim.generate_alerts(&t, 1, ago(3 * MIN), ago(2 * MIN));
    assert_eq!(w.once(&config).await.code, Some(0));
    assert!(w
        .records()
        .iter()
        .any(|r| r["alert"]["id"] == late[0].as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_link_is_followed_and_a_capped_chain_is_still_split() {
    // The server hands out 10 alerts an answer, the rest behind nextLinks.
    let mut w = World::with_options(mde_poller::sim::SimOptions {
        server_page: Some(10),
        ..Default::default()
    })
    .await;
    let t = w.tenant("contoso");
    let expected: HashSet<String> = w
        .sim
        .generate_alerts(&t, 180, ago(2 * HOUR), ago(MIN))
        .into_iter()
        .collect();
    let run = w.once(&w.config(POLL)).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let records = w.records();
    assert_no_duplicates(&records);
    assert_eq!(alert_ids(&records), expected);
    let calls: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Alerts)
        .collect();
    assert!(
        calls.iter().any(|c| c.skip.unwrap_or(0) > 0),
        "nextLinks were followed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_link_to_another_host_is_refused_named_and_read_by_time_instead() {
    // api_url says localhost, the server's nextLinks say 127.0.0.1: the
    // token must not follow the link to a host it was not configured for,
    // and the alerts behind it are still read, by narrower time windows.
    let mut w = World::with_options(mde_poller::sim::SimOptions {
        server_page: Some(10),
        ..Default::default()
    })
    .await;
    let t = w.tenant("contoso");
    let expected: HashSet<String> = w
        .sim
        .generate_alerts(&t, 30, ago(2 * HOUR), ago(MIN))
        .into_iter()
        .collect();
    let config = w.config(POLL);
    let url = w.sim.url();
    assert!(url.contains("127.0.0.1"), "{url}");
    edit_file(
        &config,
        &format!("api_url = \"{url}\""),
        &format!("api_url = \"{}\"", url.replace("127.0.0.1", "localhost")),
    );
    let run = w.once(&config).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let refused = events(&run.stderr, "next_link_refused");
    assert!(!refused.is_empty(), "{}", run.stderr);
    assert_eq!(refused[0]["level"], "WARN");
    assert_eq!(refused[0]["host"], "127.0.0.1");
    let records = w.records();
    assert_no_duplicates(&records);
    assert_eq!(alert_ids(&records), expected);
    let followed = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Alerts && r.skip.unwrap_or(0) > 0)
        .count();
    assert_eq!(followed, 0, "the foreign link was not followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_and_ocsf_outputs_carry_the_same_alerts_once() {
    for (format, id_of) in [
        (
            "ecs",
            (|r: &serde_json::Value| r["mde"]["alert"]["id"].clone())
                as fn(&serde_json::Value) -> serde_json::Value,
        ),
        ("ocsf", |r: &serde_json::Value| {
            r["unmapped"]["alert"]["id"].clone()
        }),
    ] {
        let mut w = World::new().await;
        let t = w.tenant("contoso");
        let ids: HashSet<String> = w
            .sim
            .generate_alerts(&t, 12, ago(HOUR), ago(MIN))
            .into_iter()
            .collect();
        let config = w.config_with(POLL, "");
        edit_file(
            &config,
            "path = \"alerts.ndjson\"",
            &format!("path = \"alerts.ndjson\"\nformat = \"{format}\""),
        );
        assert_eq!(w.once(&config).await.code, Some(0));
        assert_eq!(
            w.once(&config).await.code,
            Some(0),
            "a second poll emits nothing new"
        );
        let records = w.records();
        let got: HashSet<String> = records
            .iter()
            .map(|r| id_of(r).as_str().unwrap().to_owned())
            .collect();
        assert_eq!(records.len(), 12, "{format}");
        assert_eq!(got, ids, "{format}");
        match format {
            "ecs" => assert!(records.iter().all(|r| r["event"]["kind"] == "alert")),
            _ => assert!(records.iter().all(|r| r["class_uid"] == 2004)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_tenants_are_polled_by_one_process() {
    let mut w = World::new().await;
    let mut expected = HashSet::new();
    for n in 0..200 {
        let id = w.tenant(&format!("customer-{n:03}"));
        for alert in w.sim.generate_alerts(&id, 3, ago(HOUR), ago(MIN)) {
            expected.insert((id.clone(), alert));
        }
    }
    let started = std::time::Instant::now();
    let run = w.once(&w.config(POLL)).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let records = w.records();
    let got: HashSet<(String, String)> = records
        .iter()
        .map(|r| {
            let (tenant, id, _) = version_of(r);
            (tenant, id)
        })
        .collect();
    assert_eq!(records.len(), 600);
    assert_eq!(
        got, expected,
        "every tenant's alerts, under that tenant, once"
    );
    assert_eq!(events(&run.stderr, "poll_finished").len(), 200);
    eprintln!("200 tenants polled once in {:?}", started.elapsed());
}
