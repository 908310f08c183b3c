//! The daemon's Prometheus metrics: one registry per process, with the names
//! SPEC.md fixes ("Operating it"), counted where each thing happens (beside
//! its log line in [`crate::events`], and in `api` and `auth` for every
//! request), and served by [`server`] when `[metrics] listen` is set.
//!
//! The registry is process-wide, like the log: events are free functions and
//! a counter belongs beside its log line. Counting costs an atomic add, so it
//! runs whether or not anything serves the numbers.
//!
//! The `tenant` label is only on the per-tenant gauges, so the number of
//! series grows with the tenants and nothing else; a tenant that leaves the
//! config takes its series with it. Those gauges are not `Family`s: one map
//! entry per tenant holds its state and its four values, and a collector
//! writes them at each scrape. Four families would hold a label `String`
//! and an `Arc`'d atomic per tenant each, beside the bookkeeping maps of
//! which tenant has which series (~0.5 KB a tenant, docs/BENCHMARKS.md).

pub mod server;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::config::Settings;
use crate::output::Change;
use crate::store::TenantStatus;
use crate::timestamp::{Timestamp, TICKS_PER_SECOND};

/// Every metric name starts with this (`mde_poller_polls_total`, …).
pub(crate) const PREFIX: &str = "mde_poller";

/// The `source` of API requests to Defender for Endpoint's `/api/alerts`.
#[cfg(test)]
pub(crate) const SOURCE_MDE: &str = "mde";

/// Poll durations: a quiet tenant takes well under a second, a back-fill of
/// many pages minutes.
const DURATION_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabel {
    change: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    source: &'static str,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// A tenant's state as `mde_poller_tenants{state}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ok,
    Failing,
    /// Paused after a token error only a person can fix.
    Paused,
}

/// The states of `mde_poller_tenants`, each always exported (0 included),
/// so that a rule on `state="failing"` sees a value, not an absent series.
pub(crate) const STATES: [&str; 4] = ["ok", "failing", "paused", "disabled"];

/// One enabled tenant as the metrics know it: its state for
/// `mde_poller_tenants` and the values of its per-tenant series, each
/// `None` until something set it (a series appears once it has a value).
#[derive(Debug, Clone, Copy, Default)]
struct TenantEntry {
    /// `None` until its first poll ended (or it was refused).
    state: Option<State>,
    /// Polls failed since the last success; exported once `shown`.
    failures: i64,
    failures_shown: bool,
    last_success: Option<f64>,
    cursor: Option<f64>,
    audit_missing: Option<i64>,
}

#[derive(Debug, Default)]
struct Book {
    /// Enabled tenants by name, once anything about them was recorded.
    tenants: HashMap<Box<str>, TenantEntry>,
    disabled: i64,
}

impl Book {
    fn entry(&mut self, tenant: &str) -> &mut TenantEntry {
        if !self.tenants.contains_key(tenant) {
            self.tenants.insert(tenant.into(), TenantEntry::default());
        }
        self.tenants.get_mut(tenant).expect("just inserted")
    }
}

/// The per-tenant series, written from the book at each scrape.
#[derive(Debug)]
struct TenantSeries(Arc<Mutex<Book>>);

/// A per-tenant value, written as the gauge it was: seconds as a float, a
/// count as an integer.
#[derive(Debug, Clone, Copy)]
enum Value {
    Seconds(f64),
    Count(i64),
}

/// (name, help, value) of each per-tenant gauge, in the order they appear.
type Series = (
    &'static str,
    &'static str,
    fn(&TenantEntry) -> Option<Value>,
);

const TENANT_SERIES: [Series; 4] = [
    (
        "tenant_last_success_timestamp_seconds",
        "When the tenant's last successful poll ended (Unix seconds)",
        |e| e.last_success.map(Value::Seconds),
    ),
    (
        "tenant_cursor_timestamp_seconds",
        "The tenant's cursor: the newest lastUpdateTime emitted (Unix seconds)",
        |e| e.cursor.map(Value::Seconds),
    ),
    (
        "tenant_consecutive_failures",
        "Polls of the tenant that failed since its last success",
        |e| e.failures_shown.then_some(Value::Count(e.failures)),
    ),
    (
        "audit_missing_versions",
        "Alert versions the last audit found in the API but not emitted",
        |e| e.audit_missing.map(Value::Count),
    ),
];

impl Collector for TenantSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let book = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // By name, so that a scrape reads the same order every time.
        let mut tenants: Vec<(&str, &TenantEntry)> =
            book.tenants.iter().map(|(n, e)| (&**n, e)).collect();
        tenants.sort_unstable_by_key(|(n, _)| *n);
        for (name, help, value) in TENANT_SERIES {
            // Like a `Family`, a series none has is not written at all.
            if !tenants.iter().any(|(_, e)| value(e).is_some()) {
                continue;
            }
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (tenant, e) in &tenants {
                let labels = [("tenant", *tenant)];
                match value(e) {
                    None => {}
                    Some(Value::Seconds(v)) => {
                        ConstGauge::new(v).encode(family.encode_family(&labels)?)?
                    }
                    Some(Value::Count(v)) => {
                        ConstGauge::new(v).encode(family.encode_family(&labels)?)?
                    }
                }
            }
        }
        Ok(())
    }
}

/// The registry and every metric in it.
pub struct Metrics {
    registry: Registry,
    alerts_emitted: Family<ChangeLabel, Counter>,
    polls: Family<OutcomeLabel, Counter>,
    api_requests: Family<RequestLabels, Counter>,
    throttled: Family<SourceLabel, Counter>,
    token_requests: Family<OutcomeLabel, Counter>,
    poll_duration: Histogram,
    tenants: Family<StateLabel, Gauge>,
    /// Every enabled tenant's state and per-tenant series.
    book: Arc<Mutex<Book>>,
}

static GLOBAL: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics: what the hooks count and the server shows.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

/// Alert lines counted by their `change`, once they are recorded as emitted.
#[derive(Debug, Default)]
pub(crate) struct Emitted {
    new: u64,
    update: u64,
}

impl Emitted {
    pub(crate) fn add(&mut self, change: Change) {
        match change {
            Change::New => self.new += 1,
            Change::Update => self.update += 1,
        }
    }

    /// Counts them: call once the lines are written and recorded.
    pub(crate) fn commit(self) {
        global().alerts_emitted(&self);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry (the process has [`global`]; tests make their own).
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let m = Metrics {
            alerts_emitted: Family::default(),
            polls: Family::default(),
            api_requests: Family::default(),
            throttled: Family::default(),
            token_requests: Family::default(),
            poll_duration: Histogram::new(DURATION_BUCKETS),
            tenants: Family::default(),
            book: Arc::default(),
            registry: Registry::default(),
        };
        // Counters are registered without `_total`: the encoder adds it.
        registry.register(
            "alerts_emitted",
            "Alert versions written to the output, by change (new, update)",
            m.alerts_emitted.clone(),
        );
        registry.register(
            "polls",
            "Polls ended, by outcome (ok, failed, abandoned)",
            m.polls.clone(),
        );
        registry.register(
            "api_requests",
            "HTTP requests to the alerts APIs, by source (mde, graph) and status class (2xx, 4xx, 5xx, error for no answer)",
            m.api_requests.clone(),
        );
        registry.register(
            "throttled",
            "Answers that throttled us (HTTP 429, or 503 with the API's throttling meaning), by source",
            m.throttled.clone(),
        );
        registry.register(
            "token_requests",
            "Token requests to Entra ID, by outcome (ok, error: may pass on retry, refused: needs the operator)",
            m.token_requests.clone(),
        );
        registry.register(
            "poll_duration_seconds",
            "How long polls took, from the first request to the committed cursor",
            m.poll_duration.clone(),
        );
        registry.register(
            "tenants",
            "Tenants by state: ok, failing, paused (a token error only a person can fix), disabled",
            m.tenants.clone(),
        );
        registry.register_collector(Box::new(TenantSeries(Arc::clone(&m.book))));
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the version label says which mde-poller runs",
            build_info,
        );
        for state in STATES {
            m.tenants.get_or_create(&StateLabel { state }).set(0);
        }
        Metrics { registry, ..m }
    }

    /// The exposition, in the OpenMetrics text format.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    fn alerts_emitted(&self, emitted: &Emitted) {
        for (change, n) in [("new", emitted.new), ("update", emitted.update)] {
            if n > 0 {
                self.alerts_emitted
                    .get_or_create(&ChangeLabel { change })
                    .inc_by(n);
            }
        }
    }

    /// One HTTP exchange with an alerts API: `status` is `None` when no
    /// answer came (connection refused, timeout, a body broken off).
    pub(crate) fn api_request(&self, source: &'static str, status: Option<u16>) {
        let status_class = match status {
            None => "error",
            Some(100..=199) => "1xx",
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            Some(_) => "other",
        };
        self.api_requests
            .get_or_create(&RequestLabels {
                source,
                status_class,
            })
            .inc();
    }

    pub(crate) fn throttled(&self, source: &'static str) {
        self.throttled.get_or_create(&SourceLabel { source }).inc();
    }

    /// `outcome`: `ok`, `error` (may pass on retry) or `refused`.
    pub(crate) fn token_request(&self, outcome: &'static str) {
        self.token_requests
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub(crate) fn poll_succeeded(&self, tenant: &str, cursor: Option<&str>, elapsed_ms: u64) {
        self.poll_ended("ok", Some(elapsed_ms));
        let mut book = self.book.lock().expect("metrics book");
        let entry = book.entry(tenant);
        entry.last_success = Some(unix_seconds(Timestamp::now()));
        if let Some(at) = cursor.and_then(|c| Timestamp::parse(c).ok()) {
            entry.cursor = Some(unix_seconds(at));
        }
        self.set_state(&mut book, tenant, State::Ok);
    }

    /// A poll that failed; `paused` when the tenant waits for a person.
    pub(crate) fn poll_failed(&self, tenant: &str, elapsed_ms: Option<u64>, paused: bool) {
        self.poll_ended("failed", elapsed_ms);
        let mut book = self.book.lock().expect("metrics book");
        self.set_state(
            &mut book,
            tenant,
            if paused {
                State::Paused
            } else {
                State::Failing
            },
        );
    }

    pub(crate) fn poll_abandoned(&self) {
        self.poll_ended("abandoned", None);
    }

    /// A tenant whose credential cannot even be loaded: failing, unpolled.
    pub(crate) fn tenant_refused(&self, tenant: &str) {
        let mut book = self.book.lock().expect("metrics book");
        book.entry(tenant).state = Some(State::Failing);
        self.publish_states(&book);
    }

    /// Sets the last audit's count of missing versions for `tenant` (the
    /// audit calls it).
    pub(crate) fn set_audit_missing(&self, tenant: &str, missing: u64) {
        let mut book = self.book.lock().expect("metrics book");
        book.entry(tenant).audit_missing = Some(missing as i64);
    }

    /// The config in force (at start-up and after each reload): tenants no
    /// longer enabled lose their series, disabled ones are counted.
    pub(crate) fn configured(&self, settings: &Settings) {
        let mut book = self.book.lock().expect("metrics book");
        book.disabled = settings.tenants.iter().filter(|t| !t.enabled).count() as i64;
        let enabled: HashSet<&str> = settings.enabled_tenants().map(|t| &*t.name).collect();
        book.tenants.retain(|name, _| enabled.contains(&**name));
        book.tenants.shrink_to_fit();
        self.publish_states(&book);
    }

    /// What the store knows from earlier runs, so that a restart does not
    /// blank the per-tenant gauges until each tenant's next poll ends.
    pub(crate) fn seed(&self, settings: &Settings, rows: &[TenantStatus]) {
        let mut book = self.book.lock().expect("metrics book");
        let by_id: HashMap<&str, &str> = settings
            .enabled_tenants()
            .map(|t| (&*t.tenant_id, &*t.name))
            .collect();
        for row in rows {
            let Some(name) = by_id.get(row.tenant_id.as_str()) else {
                continue;
            };
            let entry = book.entry(name);
            if let Some(at) = row.last_success {
                entry.last_success = Some(unix_seconds(at));
            }
            if let Some(c) = &row.cursor {
                entry.cursor = Some(unix_seconds(c.at));
            }
            if let Some(audit) = &row.last_audit {
                entry.audit_missing = Some(audit.missing as i64);
            }
            let failures = row.consecutive_failures as i64;
            entry.failures = failures;
            entry.failures_shown = true;
            entry.state = Some(if failures > 0 {
                State::Failing
            } else {
                State::Ok
            });
        }
        self.publish_states(&book);
    }

    fn poll_ended(&self, outcome: &'static str, elapsed_ms: Option<u64>) {
        self.polls.get_or_create(&OutcomeLabel { outcome }).inc();
        if let Some(ms) = elapsed_ms {
            self.poll_duration.observe(ms as f64 / 1000.0);
        }
    }

    fn set_state(&self, book: &mut Book, tenant: &str, state: State) {
        let entry = book.entry(tenant);
        entry.state = Some(state);
        entry.failures = if state == State::Ok {
            0
        } else {
            entry.failures + 1
        };
        entry.failures_shown = true;
        self.publish_states(book);
    }

    fn publish_states(&self, book: &Book) {
        let count = |s: State| book.tenants.values().filter(|e| e.state == Some(s)).count() as i64;
        let values = [
            count(State::Ok),
            count(State::Failing),
            count(State::Paused),
            book.disabled,
        ];
        for (state, value) in STATES.into_iter().zip(values) {
            self.tenants.get_or_create(&StateLabel { state }).set(value);
        }
    }
}

/// The `outcome` of one token request: `ok`, `refused` (only a person can
/// fix it: consent, secret, certificate), or `error` (may pass on retry).
pub(crate) fn token_outcome<T>(result: &Result<T, crate::auth::AuthError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) if e.is_persistent() => "refused",
        Err(_) => "error",
    }
}

fn unix_seconds(at: Timestamp) -> f64 {
    at.ticks() as f64 / TICKS_PER_SECOND as f64
}

#[cfg(test)]
mod tests;
