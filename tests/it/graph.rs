//! The Microsoft Graph source (`source = "graph"`, alerts_v2): back-fills with
//! alerts changing while they page, a server that clamps `$top`, a tenant
//! without the Graph role, the Prefer header, `service_sources`, Retry-After,
//! the switch from `mde` to `graph`, and a retired MDE API.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mde_poller::output::AlertSource;
use mde_poller::poll::poll_tenant;
use mde_poller::scheduler::{budget_for, tenant_poll};
use mde_poller::sim::{ClientConfig, Faults, Latency, RequestKind, RequestRecord, ServiceSource};
use mde_poller::timestamp::Timestamp;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::common::*;

const GRAPH_ROLE: &[&str] = &["SecurityAlert.Read.All"];
const BOTH_ROLES: &[&str] = &["Alert.Read.All", "SecurityAlert.Read.All"];

const POLL: &str = r#"source = "graph"
interval = "1s"
lookback = "10m"
first_lookback = "3h"
page_size = 200
timeout = "5s""#;

/// `config.toml` with `graph_url` pointing at the simulator, for `tenants`
/// (names given to `World::tenant_with`); `tenant_extra` goes into each
/// tenant's table.
fn graph_config(w: &World, poll: &str, tenants: &[&str]) -> PathBuf {
    let chosen: Vec<(String, String)> = tenants
        .iter()
        .map(|n| ((*n).to_owned(), w.tenant_id(n)))
        .collect();
    w.sim
        .write_client_config(
            w.dir.path(),
            &ClientConfig {
                client_id: APP_ID,
                secret: SECRET,
                poll,
                tenants: &chosen,
                graph: true,
                ..ClientConfig::default()
            },
        )
        .expect("config written")
}

/// `(tenant id, alert id, lastUpdateDateTime)` of a Graph record.
fn graph_version(r: &Value) -> (String, String, String) {
    (
        r["tenant"]["id"].as_str().unwrap().to_owned(),
        r["alert"]["id"].as_str().unwrap().to_owned(),
        r["alert"]["lastUpdateDateTime"]
            .as_str()
            .expect("a Graph record has lastUpdateDateTime")
            .to_owned(),
    )
}

fn assert_no_graph_duplicates(records: &[Value]) {
    let mut counts: HashMap<_, usize> = HashMap::new();
    for r in records {
        *counts.entry(graph_version(r)).or_default() += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "versions emitted more than once: {dups:?}");
}

fn graph_calls(w: &World, tenant: &str) -> Vec<RequestRecord> {
    let mut calls: Vec<RequestRecord> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::GraphAlerts && r.tenant_id.as_deref() == Some(tenant))
        .collect();
    // In the order they reached it: several reads are out at once.
    calls.sort_by_key(|r| r.at);
    calls
}

/// The current `(id, lastUpdateDateTime)` of every alert alerts_v2 serves.
fn current_versions(w: &World, tenant: &str) -> HashMap<String, String> {
    w.sim
        .graph_current(tenant)
        .into_iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().to_owned(),
                a["lastUpdateDateTime"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every current version was emitted, no version twice, nothing the server
/// never served.
fn assert_every_current_version_once(w: &World, tenant: &str, records: &[Value]) {
    assert_no_graph_duplicates(records);
    let served: HashSet<(String, String)> = w.sim.graph_versions(tenant).into_iter().collect();
    let emitted: HashSet<(String, String)> = records
        .iter()
        .map(|r| {
            let (_, id, at) = graph_version(r);
            (id, at)
        })
        .collect();
    for v in &emitted {
        assert!(served.contains(v), "emitted a version never served: {v:?}");
    }
    let missing: Vec<_> = current_versions(w, tenant)
        .into_iter()
        .filter(|v| !emitted.contains(v))
        .collect();
    assert!(
        missing.is_empty(),
        "{} current versions never emitted, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_with_alerts_updated_while_it_pages_loses_none_and_repeats_none() {
    let mut w = World::new().await;
    let t = w.tenant_with("contoso", true, GRAPH_ROLE);
    let mut sources = vec![ServiceSource::DefenderForEndpoint];
    sources.extend(ServiceSource::GRAPH_ONLY);
    let ids = w
        .sim
        .generate_graph_alerts(&t, 3000, ago(170 * MIN), ago(MIN), &sources);
    // Slow enough answers that the updates land between pages.
    w.sim.set_latency(Latency {
        fixed: Duration::from_millis(15),
        per_alert: Duration::ZERO,
    });
    let config = graph_config(&w, POLL, &["contoso"]);
    let settings = mde_poller::config::load(&config).expect("config loads");
    let env = mde_poller::daemon::open_env(&settings).await.unwrap();
    let http = mde_poller::http::client(&settings.http, settings.poll.timeout).unwrap();
    let tenant = &settings.tenants[0];
    let poll = tenant_poll(&http, tenant, Arc::new(budget_for(AlertSource::Graph)));

    // 50 alerts, spread over the whole back-fill, updated while it pages:
    // each time the poll has made a few more requests, a few more change.
    let sim = w.sim.clone();
    let tid = t.clone();
    let updated: Vec<String> = ids.iter().step_by(60).take(50).cloned().collect();
    let to_update = updated.clone();
    let updater = tokio::spawn(async move {
        let mut done = 0;
        while done < to_update.len() {
            let calls = sim
                .requests()
                .iter()
                .filter(|r| r.kind == RequestKind::GraphAlerts)
                .count();
            while done < to_update.len() && done < calls * 5 {
                assert!(sim.update_alert(&tid, &to_update[done], Timestamp::now()));
                done += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sim.requests()
            .iter()
            .filter(|r| r.kind == RequestKind::GraphAlerts)
            .count()
    });
    let first = poll_tenant(&env, &poll, &CancellationToken::new())
        .await
        .expect("the poll succeeds");
    let calls_when_updates_ended = updater.await.unwrap();
    // An update after the last window was read is the next poll's.
    let second = poll_tenant(&env, &poll, &CancellationToken::new())
        .await
        .expect("the second poll succeeds");
    assert!(
        calls_when_updates_ended <= first.requests as usize,
        "the updates landed while the back-fill paged ({calls_when_updates_ended} calls, the poll made {})",
        first.requests
    );

    let records = w.records();
    assert_every_current_version_once(&w, &t, &records);
    assert_eq!(
        alert_ids(&records).len(),
        3000,
        "every alert of the back-fill"
    );
    for r in &records {
        assert_eq!(r["type"], "graph.alert");
    }
    let updates: HashSet<&str> = records
        .iter()
        .filter(|r| r["change"] == "update")
        .map(|r| r["alert"]["id"].as_str().unwrap())
        .collect();
    assert!(updates.iter().all(|id| updated.iter().any(|u| u == id)));
    assert!(second.emitted <= 50, "{second:?}");
    // Paged by time: every request asked for at most 200 and named a window.
    for c in graph_calls(&w, &t) {
        assert_eq!(c.status, 200);
        assert!(c.top.unwrap() <= 200);
        assert!(c
            .filter
            .as_deref()
            .unwrap()
            .contains("lastUpdateDateTime ge "));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_clamps_top_loses_nothing() {
    let mut w = World::new().await;
    let t = w.tenant_with("contoso", true, GRAPH_ROLE);
    w.sim
        .generate_graph_alerts(&t, 900, ago(170 * MIN), ago(MIN), &[]);
    // Serves 70 whatever $top says (200 here), silently.
    w.sim.set_graph_clamp(None, Some(70));
    let run = w.once(&graph_config(&w, POLL, &["contoso"])).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let records = w.records();
    assert_every_current_version_once(&w, &t, &records);
    assert_eq!(records.len(), 900);
    let calls = graph_calls(&w, &t);
    assert!(calls.iter().any(|c| c.next_link), "the clamp was in force");
    assert!(calls.iter().all(|c| c.served.unwrap_or(0) <= 70));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_size_above_graphs_cap_is_asked_as_1000_and_said_once() {
    let mut w = World::new().await;
    let t = w.tenant_with("contoso", true, GRAPH_ROLE);
    w.sim
        .generate_graph_alerts(&t, 1500, ago(170 * MIN), ago(MIN), &[]);
    let poll = POLL.replace("page_size = 200", "page_size = 5000");
    let run = w.once(&graph_config(&w, &poll, &["contoso"])).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(w.records().len(), 1500);
    assert!(graph_calls(&w, &t).iter().all(|c| c.top == Some(1000)));
    let said = events(&run.stderr, "graph_page_size_clamped");
    assert_eq!(said.len(), 1, "{}", run.stderr);
    assert_eq!(said[0]["top"], 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_without_the_graph_role_is_explained_and_delays_no_other() {
    let mut w = World::new().await;
    // Consented before the partner added SecurityAlert.Read.All.
    let stale = w.tenant_with("stale", true, &["Alert.Read.All"]);
    let good = w.tenant_with("good", true, GRAPH_ROLE);
    w.sim
        .generate_graph_alerts(&good, 300, ago(170 * MIN), ago(MIN), &[]);
    w.sim
        .generate_graph_alerts(&stale, 10, ago(170 * MIN), ago(MIN), &[]);
    let config = graph_config(&w, POLL, &["stale", "good"]);

    let run = w.once(&config).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let ids = alert_ids(&w.records());
    assert_eq!(ids.len(), 300, "the good tenant's alerts all came");
    let failed = events(&run.stderr, "poll_failed");
    assert_eq!(failed.len(), 1, "{}", run.stderr);
    assert_eq!(failed[0]["tenant"], "stale");
    assert_eq!(failed[0]["level"], "ERROR");
    let hint = failed[0]["hint"].as_str().unwrap();
    assert!(
        hint.contains("Microsoft Graph → Application permissions → SecurityAlert.Read.All")
            && hint.contains("consent-url"),
        "{hint}"
    );
    // The refusal was not retried: one call, and the good tenant went on.
    assert_eq!(graph_calls(&w, &stale).len(), 1);
    let finished = events(&run.stderr, "poll_finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["tenant"], "good");

    // `check` says the same before any poll.
    let check = w.run(&config, &["check"]).await;
    assert_ne!(check.code, Some(0));
    let out = check.stdout;
    assert!(out.contains("FAIL  stale"), "{out}");
    assert!(out.contains("SecurityAlert.Read.All"), "{out}");
    assert!(out.contains("ok    good"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_of_a_graph_tenant_reads_one_alert_with_a_graph_token() {
    let mut w = World::new().await;
    let t = w.tenant_with("contoso", true, GRAPH_ROLE);
    w.sim.generate_graph_alerts(&t, 5, ago(HOUR), ago(MIN), &[]);
    let run = w
        .run(&graph_config(&w, POLL, &["contoso"]), &["check", "--json"])
        .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v[0]["ok"], true);
    assert_eq!(v[0]["source"], "graph");
    assert_eq!(v[0]["roles"], serde_json::json!(["SecurityAlert.Read.All"]));
    assert!(v[0].get("notice").is_none(), "no MDE notice for Graph");
    let calls = graph_calls(&w, &t);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].top, Some(1));
    let token = w
        .sim
        .requests()
        .into_iter()
        .find(|r| r.kind == RequestKind::Token)
        .unwrap();
    assert_eq!(token.scope.as_deref(), Some("https://graph.microsoft.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_prefer_and_new_enum_members_arrive() {
    let mut w = World::new().await;
    let t = w.tenant_with("contoso", true, GRAPH_ROLE);
    w.sim.generate_graph_alerts(
        &t,
        400,
        ago(170 * MIN),
        ago(MIN),
        &[
            ServiceSource::DefenderForCloud,
            ServiceSource::DataLossPrevention,
        ],
    );
    let run = w.once(&graph_config(&w, POLL, &["contoso"])).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let calls = graph_calls(&w, &t);
    assert!(calls.len() > 2, "several pages");
    for c in &calls {
        assert_eq!(
            c.prefer.as_deref(),
            Some("include-unknown-enum-members"),
            "{c:?}"
        );
    }
    let records = w.records();
    assert!(records
        .iter()
        .any(|r| r["alert"]["serviceSource"] == "microsoftDefenderForCloud"));
    assert!(records
        .iter()
        .all(|r| r["alert"]["serviceSource"] != "unknownFutureValue"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_sources_reads_only_the_products_named() {
    let mut w = World::new().await;
    let t = w.tenant_with("contoso", true, GRAPH_ROLE);
    let endpoint = w.sim.generate_graph_alerts(
        &t,
        120,
        ago(170 * MIN),
        ago(MIN),
        &[ServiceSource::DefenderForEndpoint],
    );
    let dlp = w.sim.generate_graph_alerts(
        &t,
        80,
        ago(170 * MIN),
        ago(MIN),
        &[ServiceSource::DataLossPrevention],
    );
    w.sim.generate_graph_alerts(
        &t,
        150,
        ago(170 * MIN),
        ago(MIN),
        &[
            ServiceSource::DefenderForOffice365,
            ServiceSource::EntraIdProtection,
        ],
    );
    let poll = format!(
        "{POLL}\nservice_sources = [\"microsoftDefenderForEndpoint\", \"dataLossPrevention\"]"
    );
    let run = w.once(&graph_config(&w, &poll, &["contoso"])).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let want: HashSet<String> = endpoint.into_iter().chain(dlp).collect();
    assert_eq!(alert_ids(&w.records()), want);
    for c in graph_calls(&w, &t) {
        assert!(
            c.filter.as_deref().unwrap().contains(
                "(serviceSource eq 'microsoftDefenderForEndpoint' or serviceSource eq 'dataLossPrevention')"
            ),
            "{:?}",
            c.filter
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_obeyed_and_nothing_is_lost() {
    let mut w = World::new().await;
    let t = w.tenant_with("contoso", true, GRAPH_ROLE);
    w.sim
        .generate_graph_alerts(&t, 600, ago(170 * MIN), ago(MIN), &[]);
    // Scheduled, not drawn, so every run sees them: the first call throttled,
    // page 2 throttled twice in a row, page 3 answered 503 once; each with
    // Retry-After 1s (sent in seconds and as an HTTP date, in turn).
    w.sim.set_faults(
        Some(&t),
        Faults {
            throttle_at: vec![1, 3, 4],
            unavailable_at: vec![6],
            retry_after_secs: 1,
            ..Faults::none()
        },
    );
    let config = graph_config(&w, POLL, &["contoso"]);
    let run = w.once(&config).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_every_current_version_once(&w, &t, &w.records());
    let calls = graph_calls(&w, &t);
    let statuses: Vec<u16> = calls.iter().map(|c| c.status).collect();
    // (How many pages follow is the poller's business; all of them are 200.)
    assert!(
        statuses.starts_with(&[429, 200, 429, 429, 200, 503, 200])
            && statuses[7..].iter().all(|s| *s == 200),
        "the four scheduled failures, each retried, and nothing else failed: {statuses:?}"
    );
    let checked = assert_retry_after_obeyed(&calls, "contoso");
    assert_eq!(
        checked, 4,
        "every scheduled failure had its Retry-After checked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_from_mde_to_graph_keeps_the_place_and_repeats_only_the_lookback() {
    let mut w = World::new().await;
    let t = w.tenant_with("contoso", true, BOTH_ROLES);
    let ids = w.sim.generate_alerts(&t, 400, ago(170 * MIN), ago(2 * MIN));
    let mde_poll = POLL.replace("source = \"graph\"", "source = \"mde\"");
    let config = graph_config(&w, &mde_poll, &["contoso"]);
    let run = w.once(&config).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let before = w.records();
    assert_eq!(before.len(), 400);
    assert!(before.iter().all(|r| r["type"] == "mde.alert"));
    let cursor = before
        .iter()
        .map(|r| Timestamp::parse(r["alert"]["lastUpdateTime"].as_str().unwrap()).unwrap())
        .max()
        .unwrap();

    // While the switch happens: some alerts change, one only Graph has appears.
    let changed: Vec<String> = ids.iter().step_by(40).cloned().collect();
    for id in &changed {
        assert!(w.sim.update_alert(&t, id, Timestamp::now()));
    }
    let office = w.sim.generate_graph_alerts(
        &t,
        3,
        ago(MIN),
        ago(Duration::from_secs(30)),
        &[ServiceSource::DefenderForOffice365],
    );
    edit_file(&config, "source = \"mde\"", "source = \"graph\"");
    w.sim.clear_requests();
    let run = w.once(&config).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let after: Vec<Value> = w.records().split_off(before.len());

    // Its place was kept: the first Graph read starts at cursor − lookback.
    let first = graph_calls(&w, &t)
        .into_iter()
        .next()
        .expect("a Graph call");
    let lower = cursor.saturating_sub(10 * MIN);
    assert!(
        first
            .filter
            .as_deref()
            .unwrap()
            .starts_with(&format!("lastUpdateDateTime ge {lower}")),
        "{:?} (cursor {cursor})",
        first.filter
    );
    // Repeated: only what changed within lookback of the cursor (now in
    // Graph form, so `update`); besides, the changed alerts' new versions
    // and the alerts only Graph has.
    assert_no_graph_duplicates(&after);
    let within: HashSet<String> = before
        .iter()
        .filter(|r| {
            Timestamp::parse(r["alert"]["lastUpdateTime"].as_str().unwrap()).unwrap() >= lower
        })
        .map(|r| r["alert"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!within.is_empty(), "the lookback held some alerts");
    let want: HashSet<String> = within
        .iter()
        .chain(&changed)
        .chain(&office)
        .cloned()
        .collect();
    assert_eq!(alert_ids(&after), want);
    for r in &after {
        assert_eq!(r["type"], "graph.alert");
        let id = r["alert"]["id"].as_str().unwrap();
        let fresh = office.iter().any(|o| o == id);
        assert_eq!(r["change"], if fresh { "new" } else { "update" }, "{id}");
    }
    // Nothing lost: every alert's current version is out, in one form or the other.
    let all = w.records();
    let emitted: HashSet<(String, String)> = all
        .iter()
        .map(|r| {
            let a = &r["alert"];
            let at = a
                .get("lastUpdateDateTime")
                .or_else(|| a.get("lastUpdateTime"))
                .and_then(Value::as_str)
                .unwrap();
            (a["id"].as_str().unwrap().to_owned(), at.to_owned())
        })
        .collect();
    for v in current_versions(&w, &t) {
        assert!(emitted.contains(&v), "{v:?} never emitted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_mde_api_fails_the_poll_with_an_error_saying_to_switch() {
    let mut w = World::new().await;
    w.tenant("contoso");
    let graph = w.tenant_with("fabrikam", true, BOTH_ROLES);
    w.sim.generate_alerts(&graph, 20, ago(HOUR), ago(MIN));
    let mde_poll = POLL.replace("source = \"graph\"", "source = \"mde\"");
    let config = graph_config(&w, &mde_poll, &["contoso", "fabrikam"]);
    edit_file(
        &config,
        "[tenants.fabrikam]\n",
        "[tenants.fabrikam]\nsource = \"graph\"\n",
    );
    for status in [404, 410] {
        w.sim.set_mde_retired(Some(status));
        let run = w.once(&config).await;
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        let failed = events(&run.stderr, "poll_failed");
        assert_eq!(failed.len(), 1, "{}", run.stderr);
        assert_eq!(failed[0]["tenant"], "contoso");
        assert_eq!(failed[0]["level"], "ERROR");
        assert!(
            failed[0]["error"]
                .as_str()
                .unwrap()
                .contains(&format!("HTTP {status}")),
            "{}",
            failed[0]
        );
        assert!(
            failed[0]["hint"]
                .as_str()
                .unwrap()
                .contains("switch this tenant to Microsoft Graph"),
            "{}",
            failed[0]
        );
        // The start-up notice, once, for the tenant still on mde only.
        let notices = events(&run.stderr, "mde_retirement_notice");
        assert_eq!(notices.len(), 1, "{}", run.stderr);
        assert_eq!(notices[0]["tenants"], 1);
        assert_eq!(notices[0]["names"], "contoso");
    }
    // The Graph tenant read its alerts meanwhile.
    assert_eq!(alert_ids(&w.records()).len(), 20);

    // `check` says it too, for the mde tenant only.
    w.sim.set_mde_retired(None);
    let check = w.run(&config, &["check"]).await;
    assert_eq!(check.code, Some(0), "{}", check.stdout);
    let notes: Vec<&str> = check
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("note:"))
        .collect();
    assert_eq!(notes.len(), 1, "{}", check.stdout);
    assert!(notes[0].contains("stops working after 1 February 2027"));
    let contoso = check.stdout.find("ok    contoso").unwrap();
    let fabrikam = check.stdout.find("ok    fabrikam").unwrap();
    let note = check.stdout.find("note:").unwrap();
    assert!(
        contoso < note && note < fabrikam,
        "the note is under contoso"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_mde_tenants_get_one_retirement_warning_at_start_and_at_each_reload() {
    const WITHIN: Duration = Duration::from_secs(60);
    let mut w = World::new().await;
    let mde: Vec<String> = (1..=12).map(|n| format!("shop{n:02}")).collect();
    for name in &mde {
        w.tenant(name);
    }
    w.tenant_with("tailspin", true, GRAPH_ROLE);
    let mut names: Vec<&str> = mde.iter().map(String::as_str).collect();
    names.push("tailspin");
    let poll = POLL
        .replace("source = \"graph\"", "source = \"mde\"")
        .replace("interval = \"1s\"", "interval = \"1h\"");
    let config = graph_config(&w, &poll, &names);
    edit_file(
        &config,
        "[tenants.tailspin]\n",
        "[tenants.tailspin]\nsource = \"graph\"\n",
    );
    let mut daemon = Daemon::start(&config, &[("MDE_POLLER_LOG__LEVEL", "debug")]);
    daemon
        .wait_for_events("daemon_started", 1, WITHIN, |_| true)
        .await;
    let notices = daemon
        .wait_for_events("mde_retirement_notice", 1, WITHIN, |_| true)
        .await;
    // One WARN line for the twelve, not twelve lines.
    assert_eq!(notices.len(), 1, "{}", daemon.stderr());
    let n = &notices[0];
    assert_eq!(n["level"], "WARN");
    assert_eq!(n["tenants"], 12, "{n}");
    assert_eq!(
        n["names"], "shop01, shop02, shop03, shop04, shop05 and 7 more",
        "{n}"
    );
    let said = format!("{} {}", n["message"], n["hint"]);
    for what in ["1 February 2027", r#"source = \"graph\""#, "README"] {
        assert!(said.contains(what), "{what} not in {n}");
    }
    // DEBUG names each of them, and only them.
    let listed: HashSet<String> = daemon
        .wait_for_events("mde_retirement_tenant", 12, WITHIN, |_| true)
        .await
        .iter()
        .map(|e| {
            assert_eq!(e["level"], "DEBUG");
            e["tenant"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(listed, mde.iter().cloned().collect::<HashSet<_>>());

    // A reload says it again, once.
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon
        .wait_for_events("reloaded", 1, WITHIN, |_| true)
        .await;
    let notices = daemon
        .wait_for_events("mde_retirement_notice", 2, WITHIN, |_| true)
        .await;
    assert_eq!(notices.len(), 2, "{}", daemon.stderr());
    assert_eq!(notices[1]["tenants"], 12);
    daemon
        .wait_for_events("mde_retirement_tenant", 24, WITHIN, |_| true)
        .await;
}

#[tokio::test]
async fn every_simulated_graph_alert_is_valid_in_every_format() {
    let sim = mde_poller::sim::Simulator::start(Default::default()).unwrap();
    let tenant = "b3c1b5fc-828c-45fa-a1e1-10d74f6d6e9c";
    let mut sources = vec![ServiceSource::DefenderForEndpoint];
    sources.extend(ServiceSource::GRAPH_ONLY);
    let ids = sim.generate_graph_alerts(tenant, 400, ago(3 * HOUR), ago(MIN), &sources);
    for id in ids.iter().step_by(7) {
        assert!(sim.update_alert(tenant, id, Timestamp::now()));
    }
    let alerts = sim.graph_current(tenant);
    sim.shutdown();
    assert_eq!(alerts.len(), 400);
    let problems = crate::formats::problems(AlertSource::Graph, &alerts);
    assert!(
        problems.is_empty(),
        "{} problems, the first ones:\n{}",
        problems.len(),
        problems[..problems.len().min(40)].join("\n")
    );
}
