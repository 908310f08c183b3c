//! Baseline benchmark: the naive poller a partner writes from Microsoft's
//! samples — one token, then pages of one `lastUpdateTime ge X` filter one
//! after the other (`$top`/`$skip` on MDE, `@odata.nextLink` on Graph),
//! SQLite dedup, NDJSON out — against the same simulator, latency model and
//! 100,000 alerts as `benches/backfill.rs`. Issue 10's latency-bound target
//! is a fraction of its wall time (docs/BENCHMARKS.md). Correctness is not
//! its point: `$skip` over changing data skips or repeats (API-NOTES); with
//! no changes during a run it is exact, and the bench checks that it is.
//!
//! Environment: `NAIVE_SOURCE` (`mde`, the default: `/api/alerts`; `graph`:
//! alerts_v2, alerts of every Defender product), `NAIVE_ALERTS` (100000),
//! `NAIVE_RUNS` (3), `NAIVE_PAGE_SIZE` (10000 on MDE, 1000 on Graph),
//! `NAIVE_LATENCY_MS` (300) and `NAIVE_PER_ALERT_US` (50): the simulator's
//! fixed cost per answer and cost per alert served.
//!
//! The poller runs in this process, on the simulator's runtime: its wall time
//! is mostly spent waiting for answers, and it has no process start-up to pay
//! (`once` has a few tens of milliseconds of it).

mod support;

use support::{
    add_backfill_tenant, env_num, graph_source, latency, median, page_top, per_minute,
    start_simulator, wait_for_budget, APP_ID, BACKFILL_TENANT, SECRET,
};

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use mde_poller::sim::{RequestKind, SimOptions};
use mde_poller::timestamp::Timestamp;

/// What one naive poll did.
#[derive(Debug, Default)]
struct Poll {
    alert_requests: usize,
    /// Alerts in all answers, repeats included.
    served: usize,
    /// Lines written (alerts the SQLite table had not seen at that time).
    written: usize,
    /// From sending a request to holding its whole body, summed.
    waiting: Duration,
}

fn main() {
    let graph = graph_source("NAIVE_SOURCE");
    let alerts = env_num("NAIVE_ALERTS", 100_000) as usize;
    let runs = env_num("NAIVE_RUNS", 3).max(1) as usize;
    let page = env_num("NAIVE_PAGE_SIZE", if graph { 1000 } else { 10_000 }).max(1) as usize;
    let latency = latency("NAIVE", 300, 50);
    // The real call budgets: the naive poller must fit them as `once` does.
    let (rt, sim) = start_simulator(SimOptions {
        latency,
        ..SimOptions::default()
    });
    let now = Timestamp::now();
    let from = now.saturating_sub(Duration::from_secs(20 * 3600));
    let ids: HashSet<String> =
        add_backfill_tenant(&sim, BACKFILL_TENANT, APP_ID, alerts, (from, now), graph)
            .into_iter()
            .collect();
    assert_eq!(ids.len(), alerts, "the generator made distinct ids");
    println!(
        "naive: {}, sequential, {alerts} alerts, page {page}, latency {:?} + {:?}/alert, {runs} run(s)",
        if graph {
            "Graph alerts_v2, $top + @odata.nextLink"
        } else {
            "MDE /api/alerts, $top/$skip"
        },
        latency.fixed,
        latency.per_alert
    );
    let top = page_top(graph, page);
    println!(
        "  minimum requests ceil(N/page) + 1 = {}; target for `once`: <= {}",
        alerts.div_ceil(top) + 1,
        (alerts.div_ceil(top) + 1) * 5 / 4
    );

    let per_minute = per_minute(graph);
    let mut calls = Vec::new();
    let mut times = Vec::new();
    let mut requests = Vec::new();
    for run in 1..=runs {
        // The naive poller has no budget of its own: it needs the whole run's.
        wait_for_budget(&calls, per_minute, alerts.div_ceil(top) + 1);
        let dir = tempfile::tempdir().expect("tempdir");
        sim.clear_requests();
        let started = Instant::now();
        let poll = rt
            .block_on(naive_poll(&sim.url(), graph, page, dir.path()))
            .unwrap_or_else(|e| panic!("run {run}: the naive poll failed: {e:#}"));
        let seconds = started.elapsed().as_secs_f64();
        let log = sim.requests();
        calls.extend(
            log.iter()
                .filter(|r| r.kind != RequestKind::Token)
                .map(|r| (r.tenant_id.clone(), r.at)),
        );
        let throttled = log.iter().filter(|r| r.status == 429).count();
        let tokens = log.iter().filter(|r| r.kind == RequestKind::Token).count();
        let (lines, repeated, missing, foreign) =
            check_output(&dir.path().join("alerts.ndjson"), &ids);
        println!(
            "run {run}: {seconds:.3} s ({:.3} s waiting for answers), {} alerts requests + {tokens} token, \
             {} alerts served ({} more than once), {} lines written, duplicates {repeated}, missing {missing}, \
             not in the simulator {foreign}, 429s {throttled}",
            poll.waiting.as_secs_f64(),
            poll.alert_requests,
            poll.served,
            poll.served.saturating_sub(alerts),
            poll.written,
        );
        assert_eq!(lines, poll.written, "lines in the file = lines written");
        assert_eq!(throttled, 0, "the naive poll was throttled");
        times.push(seconds);
        requests.push(poll.alert_requests as f64);
    }
    sim.shutdown();
    let m = median(&times);
    println!(
        "\nmedian of {runs}: {m:.3} s ({:.0} alerts/s), {} alerts requests; 1/3 of it: {:.3} s",
        alerts as f64 / m,
        median(&requests),
        m / 3.0
    );
}

/// The partner's loop: a token, then the last 24 h page after page — MDE at
/// `$skip` = 0, page, 2·page, … until a page comes back short; Graph by its
/// `@odata.nextLink` until an answer has none — each page deduped in SQLite
/// (one table of id and update time, one transaction a page) and its new
/// alerts appended to `alerts.ndjson`.
async fn naive_poll(url: &str, graph: bool, page: usize, dir: &Path) -> anyhow::Result<Poll> {
    let http = reqwest::Client::new();
    #[derive(serde::Deserialize)]
    struct Token {
        access_token: String,
    }
    let scope = if graph {
        "https://graph.microsoft.com/.default"
    } else {
        "https://api.securitycenter.microsoft.com/.default"
    };
    let token: Token = http
        .post(format!("{url}/{BACKFILL_TENANT}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", APP_ID),
            ("client_secret", SECRET),
            ("scope", scope),
        ])
        .send()
        .await
        .context("token request")?
        .error_for_status()
        .context("token answer")?
        .json()
        .await
        .context("token body")?;
    let mut db = rusqlite::Connection::open(dir.join("seen.db"))?;
    db.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE seen (id TEXT PRIMARY KEY, updated TEXT);",
    )?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("alerts.ndjson"))?);
    let since = Timestamp::now().saturating_sub(Duration::from_secs(24 * 3600));
    let (path, field) = if graph {
        ("v1.0/security/alerts_v2", "lastUpdateDateTime")
    } else {
        ("api/alerts", "lastUpdateTime")
    };
    // The same filter on every page; the timestamp's ':' percent-encoded.
    let filter = format!("{field}%20ge%20{}", since.to_string().replace(':', "%3A"));
    let page_url = |skip: usize| {
        let mut u = format!("{url}/{path}?$filter={filter}&$top={page}");
        if skip > 0 {
            u.push_str(&format!("&$skip={skip}"));
        }
        u
    };
    let mut poll = Poll::default();
    let mut next = Some(page_url(0));
    let mut skip = 0;
    while let Some(request) = next.take() {
        #[derive(serde::Deserialize)]
        struct Page {
            value: Vec<serde_json::Value>,
            #[serde(rename = "@odata.nextLink")]
            next_link: Option<String>,
        }
        let asked = Instant::now();
        let body = http
            .get(&request)
            .bearer_auth(&token.access_token)
            .send()
            .await
            .with_context(|| format!("GET {request}"))?
            .error_for_status()
            .with_context(|| format!("GET {request}"))?
            .bytes()
            .await
            .with_context(|| format!("GET {request}: body"))?;
        poll.waiting += asked.elapsed();
        poll.alert_requests += 1;
        let body: Page = serde_json::from_slice(&body).context("alerts page")?;
        poll.served += body.value.len();
        let tx = db.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO seen (id, updated) VALUES (?1, ?2) \
                 ON CONFLICT(id) DO UPDATE SET updated = ?2 WHERE updated <> ?2",
            )?;
            for alert in &body.value {
                let id = alert["id"].as_str().unwrap_or_default();
                let updated = alert[field].as_str().unwrap_or_default();
                if upsert.execute((id, updated))? > 0 {
                    serde_json::to_writer(&mut out, alert)?;
                    out.write_all(b"\n")?;
                    poll.written += 1;
                }
            }
        }
        tx.commit()?;
        out.flush()?;
        // Graph: the nextLink, as Microsoft's samples follow it. MDE: the
        // next `$skip` while pages come back full.
        next = if graph {
            body.next_link
        } else if body.value.len() >= page {
            skip += page;
            Some(page_url(skip))
        } else {
            None
        };
    }
    Ok(poll)
}

/// The output's lines, and how they differ from the simulator's alerts:
/// (lines, lines repeating an id, ids missing, ids the simulator does not have).
fn check_output(path: &Path, ids: &HashSet<String>) -> (usize, usize, usize, usize) {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
    }
    let text = std::fs::read_to_string(path).expect("output file");
    let mut seen = HashSet::with_capacity(ids.len());
    let (mut lines, mut repeated, mut foreign) = (0, 0, 0);
    for line in text.lines() {
        lines += 1;
        let l: Line = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {lines} is not an alert ({e})"));
        if !ids.contains(l.id.as_ref()) {
            foreign += 1;
        }
        if !seen.insert(l.id.into_owned()) {
            repeated += 1;
        }
    }
    let missing = ids.iter().filter(|id| !seen.contains(*id)).count();
    (lines, repeated, missing, foreign)
}
