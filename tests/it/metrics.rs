//! `[metrics]`: what `/metrics` says while alerts flow, checked against the
//! output and the simulator's own record of requests; the exposition as
//! promtool reads it; `/healthz` on the scheduler's heartbeat; the listen
//! address rules.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mde_poller::metrics::server::{self, Health};
use mde_poller::notify::SystemdObserver;
use mde_poller::scheduler::{Observer, Scheduler};
use mde_poller::sim::{Faults, RequestKind};

use crate::common::*;

const WITHIN: Duration = Duration::from_secs(60);

/// `[metrics]` on a free loopback port (the daemon logs which).
const METRICS_ANY_PORT: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// The address the daemon serves metrics on, from its `metrics_listening`.
async fn metrics_address(daemon: &mut Daemon) -> String {
    let events = daemon
        .wait_for_events("metrics_listening", 1, WITHIN, |_| true)
        .await;
    events[0]["address"]
        .as_str()
        .expect("an address")
        .to_owned()
}

async fn get(url: &str) -> (u16, String, String) {
    get_accepting(url, "*/*").await
}

/// What Prometheus 2.x sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

async fn get_accepting(url: &str, accept: &str) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .get(url)
        .header("accept", accept)
        .send()
        .await
        .expect("the metrics server answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// Every sample of the exposition: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("a sample line");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

/// `promtool check metrics` on `text`: `None` when promtool is not installed
/// (outside CI only: .ci/run installs it), else its verdict.
pub fn promtool(args: &[&str], stdin: Option<&str>) -> Option<std::process::Output> {
    use std::io::Write;
    let spawned = std::process::Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!(
                "SKIP: promtool is not installed (apt-get install prometheus); CI runs this check"
            );
            return None;
        }
        Err(e) => panic!("promtool must run in CI (.ci/run installs it): {e}"),
    };
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    Some(child.wait_with_output().expect("promtool runs"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrape_counts_what_the_output_and_the_simulator_saw() {
    let mut w = World::new().await;
    let contoso = w.tenant("contoso");
    let fabrikam = w.tenant("fabrikam");
    let ids = w
        .sim
        .generate_alerts(&contoso, 40, ago(50 * MIN), ago(10 * MIN));
    w.sim
        .generate_alerts(&fabrikam, 25, ago(50 * MIN), ago(10 * MIN));
    // Fabrikam's second and third alerts requests (its first poll's page 2,
    // twice) are throttled with Retry-After 1s: scheduled, not drawn, so the
    // throttle counts below are checked on every run.
    w.sim.set_faults(
        Some(&fabrikam),
        Faults {
            throttle_at: vec![2, 3],
            retry_after_secs: 1,
            ..Faults::none()
        },
    );
    let config = w.config_with(
        "interval = \"1h\"\nfirst_lookback = \"1h\"\npage_size = 10",
        METRICS_ANY_PORT,
    );
    let mut daemon = w.daemon(&config);
    let address = metrics_address(&mut daemon).await;
    let ended = |d: &Daemon| d.events("poll_finished").len() + d.events("poll_failed").len();
    wait_until("both tenants' first polls", WITHIN, || ended(&daemon) >= 2).await;

    // Alerts flow on: new ones and updates, read by a second poll of each
    // (a [poll] change restarts every schedule with a poll right away).
    w.sim.generate_alerts(&contoso, 5, ago(5 * MIN), ago(MIN));
    for id in &ids[..7] {
        assert!(w.sim.update_alert(&contoso, id, ago(MIN)));
    }
    edit_file(&config, "interval = \"1h\"", "interval = \"2h\"");
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until("both tenants' second polls", WITHIN, || ended(&daemon) >= 4).await;

    let (status, content_type, text) =
        get_accepting(&format!("http://{address}/metrics"), PROMETHEUS_ACCEPT).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.ends_with("# EOF\n"), "OpenMetrics for Prometheus");
    let s = samples(&text);
    let records = w.records();
    let by_change = |c: &str| records.iter().filter(|r| r["change"] == c).count() as f64;
    assert_eq!(by_change("update"), 7.0, "the updates reached the output");
    assert_eq!(
        value(&s, "mde_poller_alerts_emitted_total{change=\"new\"}"),
        by_change("new")
    );
    assert_eq!(
        value(&s, "mde_poller_alerts_emitted_total{change=\"update\"}"),
        by_change("update")
    );
    assert_eq!(
        value(&s, "mde_poller_polls_total{outcome=\"ok\"}"),
        daemon.events("poll_finished").len() as f64
    );
    assert_eq!(
        value(&s, "mde_poller_polls_total{outcome=\"failed\"}"),
        daemon.events("poll_failed").len() as f64
    );
    let answered = w.sim.requests();
    let alerts_with = |status: u16| {
        answered
            .iter()
            .filter(|r| r.kind == RequestKind::Alerts && r.status == status)
            .count() as f64
    };
    assert_eq!(alerts_with(429), 2.0, "the two scheduled throttles");
    assert_eq!(
        value(
            &s,
            "mde_poller_api_requests_total{source=\"mde\",status_class=\"2xx\"}"
        ),
        alerts_with(200)
    );
    assert_eq!(
        value(
            &s,
            "mde_poller_api_requests_total{source=\"mde\",status_class=\"4xx\"}"
        ),
        alerts_with(429)
    );
    assert_eq!(
        value(&s, "mde_poller_throttled_total{source=\"mde\"}"),
        alerts_with(429)
    );
    let tokens = answered
        .iter()
        .filter(|r| r.kind == RequestKind::Token && r.status == 200)
        .count() as f64;
    assert_eq!(
        value(&s, "mde_poller_token_requests_total{outcome=\"ok\"}"),
        tokens
    );
    assert_eq!(
        value(&s, "mde_poller_poll_duration_seconds_count"),
        ended(&daemon) as f64
    );
    assert_eq!(value(&s, "mde_poller_tenants{state=\"ok\"}"), 2.0, "{text}");
    // Per tenant: the cursor is the newest lastUpdateTime in the output.
    let newest = records
        .iter()
        .filter(|r| r["tenant"]["name"] == "contoso")
        .map(|r| {
            mde_poller::timestamp::Timestamp::parse(r["alert"]["lastUpdateTime"].as_str().unwrap())
                .unwrap()
        })
        .max()
        .unwrap();
    let cursor = value(
        &s,
        "mde_poller_tenant_cursor_timestamp_seconds{tenant=\"contoso\"}",
    );
    assert!(
        (cursor - newest.ticks() as f64 / 1e7).abs() < 1e-3,
        "cursor gauge {cursor} vs newest {newest}"
    );
    let success = value(
        &s,
        "mde_poller_tenant_last_success_timestamp_seconds{tenant=\"fabrikam\"}",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(now - success < 120.0, "last success {success}, now {now}");

    // The classic text format for everyone else: what promtool reads.
    let (_, content_type, classic) = get(&format!("http://{address}/metrics")).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert_eq!(samples(&classic), s, "the same samples in both formats");
    if let Some(out) = promtool(&["check", "metrics"], Some(&classic)) {
        assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}\n{classic}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (status, _, body) = get(&format!("http://{address}/healthz")).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_removed_by_a_reload_leaves_the_scrape() {
    let mut w = World::new().await;
    w.tenant("contoso");
    w.tenant("fabrikam");
    let both = w.config_with(
        "interval = \"1h\"\nfirst_lookback = \"1h\"",
        METRICS_ANY_PORT,
    );
    let mut daemon = w.daemon(&both);
    let address = metrics_address(&mut daemon).await;
    daemon
        .wait_for_events("poll_finished", 2, WITHIN, |_| true)
        .await;
    let (_, _, text) = get(&format!("http://{address}/metrics")).await;
    assert!(text.contains("tenant=\"fabrikam\""), "{text}");

    edit_file(
        &both,
        "[tenants.fabrikam]",
        "[tenants.fabrikam]\nenabled = false",
    );
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon
        .wait_for_events("reloaded", 1, WITHIN, |_| true)
        .await;
    let (_, _, text) = get(&format!("http://{address}/metrics")).await;
    assert!(!text.contains("tenant=\"fabrikam\""), "{text}");
    assert!(text.contains("tenant=\"contoso\""), "{text}");
    let s = samples(&text);
    assert_eq!(value(&s, "mde_poller_tenants{state=\"disabled\"}"), 1.0);
    assert_eq!(value(&s, "mde_poller_tenants{state=\"ok\"}"), 1.0);
    daemon.stop().await;
}

/// Counts heartbeats and lets the test stop them: the scheduler's beat, as
/// systemd's watchdog would see it.
#[derive(Clone, Default)]
struct Beat(SystemdObserver);

impl Observer for Beat {
    fn cycle(&self, _: &std::collections::BTreeMap<String, mde_poller::scheduler::Health>) {}
    fn progress(&self) {
        self.0.progress();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_turns_503_when_the_scheduler_stops_beating_and_200_when_it_beats_again() {
    let mut w = World::new().await;
    w.tenant("contoso");
    let config = w.config("interval = \"1h\"\nfirst_lookback = \"1h\"");
    let settings = mde_poller::config::load(&config).expect("a valid config");
    let env = mde_poller::daemon::open_env(&settings).await.unwrap();
    let beat = Beat::default();
    let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    let observer = beat.0.clone();
    let cancel = tokio_util::sync::CancellationToken::new();
    server::spawn(
        listener,
        mde_poller::metrics::global(),
        Health {
            heartbeat: Arc::new(move || observer.silence()),
            // Short for the test; the daemon uses WatchdogSec (or 30 s).
            stale_after: Duration::from_secs(3),
        },
        cancel.clone(),
    );
    let scheduler = Scheduler::start(&settings, env, beat.clone())
        .await
        .unwrap();

    let status = || async { get(&url).await.0 };
    // Healthy for as long as the scheduler's 1 s heartbeat job runs.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        assert_eq!(status().await, 200, "a beating scheduler is healthy");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The scheduler stops: no more beats, and after `stale_after`, 503.
    scheduler.shutdown(Duration::from_secs(5)).await;
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let (code, _, body) = get(&url).await;
        if code == 503 {
            assert!(body.contains("no progress"), "{body}");
            break;
        }
        assert_eq!(code, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "still 200 after {WITHIN:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A beat again: healthy at once.
    beat.progress();
    assert_eq!(status().await, 200);
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_off_unless_listen_is_set_and_loopback_is_served_without_a_warning() {
    let mut w = World::new().await;
    w.tenant("contoso");
    let config = w.config("interval = \"1h\"\nfirst_lookback = \"1h\"");
    let mut daemon = w.daemon(&config);
    daemon
        .wait_for_events("poll_finished", 1, WITHIN, |_| true)
        .await;
    assert!(
        daemon.events("metrics_listening").is_empty(),
        "no [metrics]: no port"
    );
    daemon.stop().await;

    let config = w.config_with(
        "interval = \"1h\"\nfirst_lookback = \"1h\"",
        METRICS_ANY_PORT,
    );
    let mut daemon = w.daemon(&config);
    let address = metrics_address(&mut daemon).await;
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    assert!(daemon.events("metrics_exposed").is_empty());
    // Stopped once running (SIGTERM before its handler is set kills it).
    daemon
        .wait_for_events("poll_finished", 1, WITHIN, |_| true)
        .await;
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_listen_address_is_served_with_a_warning() {
    let mut w = World::new().await;
    w.tenant("contoso");
    let config = w.config_with(
        "interval = \"1h\"\nfirst_lookback = \"1h\"",
        "[metrics]\nlisten = \"0.0.0.0:0\"\n",
    );
    let mut daemon = w.daemon(&config);
    let events = daemon
        .wait_for_events("metrics_exposed", 1, WITHIN, |_| true)
        .await;
    assert_eq!(events[0]["level"], "WARN");
    assert!(events[0]["address"]
        .as_str()
        .unwrap()
        .starts_with("0.0.0.0:"));
    daemon
        .wait_for_events("poll_finished", 1, WITHIN, |_| true)
        .await;
    daemon.stop().await;
}

#[tokio::test]
async fn a_listen_value_that_is_no_address_is_a_config_error_naming_the_key() {
    let mut w = World::new().await;
    w.tenant("contoso");
    let config = w.config_with("", "[metrics]\nlisten = \"localhost\"\n");
    let run = w.run(&config, &["check", "--config-only"]).await;
    assert_eq!(run.code, Some(78), "{run:?}");
    assert!(
        run.stderr.contains("metrics.listen") && run.stderr.contains("127.0.0.1:9464"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_failures_the_next_poll_the_budget_left_and_no_audit_yet() {
    let mut w = World::new().await;
    let contoso = w.tenant("contoso");
    w.tenant_with("fabrikam", false, &["Alert.Read.All"]);
    w.sim.generate_alerts(&contoso, 30, ago(50 * MIN), ago(MIN));
    let config = w.config("interval = \"5m\"\nfirst_lookback = \"1h\"\npage_size = 10");
    for _ in 0..2 {
        assert_eq!(
            w.once(&config).await.code,
            Some(1),
            "fabrikam never consented"
        );
    }
    let run = w.run(&config, &["status", "--json"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    let row = |name: &str| rows.iter().find(|r| r["tenant"] == name).unwrap().clone();
    let (c, f) = (row("contoso"), row("fabrikam"));
    assert_eq!(c["consecutive_failures"], 0);
    assert_eq!(f["consecutive_failures"], 2, "{f}");
    assert!(c["lag_seconds"].as_u64().unwrap() < 3600, "{c}");
    let last = mde_poller::timestamp::Timestamp::parse(c["last_poll"].as_str().unwrap()).unwrap();
    assert_eq!(
        c["next_poll"].as_str().unwrap(),
        last.saturating_add(5 * MIN).to_millis_string()
    );
    let calls = w
        .sim
        .requests()
        .iter()
        .filter(|r| r.kind == RequestKind::Alerts && r.tenant_id.as_deref() == Some(&contoso))
        .count() as u64;
    assert!(calls >= 4, "two polls of 30 alerts in pages of 10: {calls}");
    assert_eq!(c["budget_left"]["minute"], 100 - calls, "{c}");
    assert_eq!(c["budget_left"]["hour"], 1500 - calls, "{c}");
    assert!(c["last_audit"].is_null(), "{c}");

    let table = w.run(&config, &["status"]).await.stdout;
    let header = table.lines().next().unwrap();
    for column in ["FAILS", "NEXT POLL", "BUDGET M/H", "AUDIT MISSING"] {
        assert!(header.contains(column), "{header}");
    }
    let fabrikam = table.lines().find(|l| l.starts_with("fabrikam")).unwrap();
    assert!(fabrikam.contains(" 2 "), "{fabrikam}");
}

#[test]
fn the_alert_rules_pass_promtool() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/config/prometheus-rules.yml");
    if let Some(out) = promtool(&["check", "rules", rules], None) {
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "promtool check rules:\n{said}");
        assert!(said.contains("SUCCESS: 7 rules found"), "{said}");
    }
}
