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
//! config takes its series with it.

pub mod server;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
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
struct TenantLabel {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

type Seconds = Gauge<f64, AtomicU64>;

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

#[derive(Debug, Default)]
struct Book {
    /// Enabled tenants by name, once polled (or refused) at least once.
    tenants: HashMap<String, (State, i64)>,
    /// Every tenant some per-tenant series is labelled with: `Family` cannot
    /// list its label sets, and a tenant that leaves must take them along.
    labelled: HashSet<String>,
    disabled: i64,
}

impl Book {
    fn label(&mut self, tenant: &str) -> TenantLabel {
        if !self.labelled.contains(tenant) {
            self.labelled.insert(tenant.to_owned());
        }
        tenant_label(tenant)
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
    last_success: Family<TenantLabel, Seconds>,
    cursor: Family<TenantLabel, Seconds>,
    consecutive_failures: Family<TenantLabel, Gauge>,
    audit_missing: Family<TenantLabel, Gauge>,
    book: Mutex<Book>,
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
            last_success: Family::default(),
            cursor: Family::default(),
            consecutive_failures: Family::default(),
            audit_missing: Family::default(),
            book: Mutex::new(Book::default()),
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
        registry.register(
            "tenant_last_success_timestamp_seconds",
            "When the tenant's last successful poll ended (Unix seconds)",
            m.last_success.clone(),
        );
        registry.register(
            "tenant_cursor_timestamp_seconds",
            "The tenant's cursor: the newest lastUpdateTime emitted (Unix seconds)",
            m.cursor.clone(),
        );
        registry.register(
            "tenant_consecutive_failures",
            "Polls of the tenant that failed since its last success",
            m.consecutive_failures.clone(),
        );
        registry.register(
            "audit_missing_versions",
            "Alert versions the last audit found in the API but not emitted",
            m.audit_missing.clone(),
        );
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
        let label = self.book.lock().expect("metrics book").label(tenant);
        self.last_success
            .get_or_create(&label)
            .set(unix_seconds(Timestamp::now()));
        if let Some(at) = cursor.and_then(|c| Timestamp::parse(c).ok()) {
            self.cursor.get_or_create(&label).set(unix_seconds(at));
        }
        self.set_state(tenant, State::Ok);
    }

    /// A poll that failed; `paused` when the tenant waits for a person.
    pub(crate) fn poll_failed(&self, tenant: &str, elapsed_ms: Option<u64>, paused: bool) {
        self.poll_ended("failed", elapsed_ms);
        self.set_state(
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
        let failures = book.tenants.get(tenant).map_or(0, |(_, f)| *f);
        book.tenants
            .insert(tenant.to_owned(), (State::Failing, failures));
        self.publish_states(&book);
    }

    /// Sets the last audit's count of missing versions for `tenant` (the
    /// audit calls it).
    pub(crate) fn set_audit_missing(&self, tenant: &str, missing: u64) {
        let label = self.book.lock().expect("metrics book").label(tenant);
        self.audit_missing.get_or_create(&label).set(missing as i64);
    }

    /// The config in force (at start-up and after each reload): tenants no
    /// longer enabled lose their series, disabled ones are counted.
    pub(crate) fn configured(&self, settings: &Settings) {
        let mut book = self.book.lock().expect("metrics book");
        book.disabled = settings.tenants.iter().filter(|t| !t.enabled).count() as i64;
        let gone: Vec<String> = book
            .tenants
            .keys()
            .filter(|name| !settings.enabled_tenants().any(|t| &t.name == *name))
            .cloned()
            .collect();
        for name in gone {
            book.tenants.remove(&name);
        }
        let unlabel: Vec<String> = book
            .labelled
            .iter()
            .filter(|name| !settings.enabled_tenants().any(|t| &t.name == *name))
            .cloned()
            .collect();
        for name in unlabel {
            let label = tenant_label(&name);
            self.last_success.remove(&label);
            self.cursor.remove(&label);
            self.consecutive_failures.remove(&label);
            self.audit_missing.remove(&label);
            book.labelled.remove(&name);
        }
        self.publish_states(&book);
    }

    /// What the store knows from earlier runs, so that a restart does not
    /// blank the per-tenant gauges until each tenant's next poll ends.
    pub(crate) fn seed(&self, settings: &Settings, rows: &[TenantStatus]) {
        let mut book = self.book.lock().expect("metrics book");
        for row in rows {
            let Some(tenant) = settings
                .enabled_tenants()
                .find(|t| t.tenant_id == row.tenant_id)
            else {
                continue;
            };
            let label = book.label(&tenant.name);
            if let Some(at) = row.last_success {
                self.last_success
                    .get_or_create(&label)
                    .set(unix_seconds(at));
            }
            if let Some(c) = &row.cursor {
                self.cursor.get_or_create(&label).set(unix_seconds(c.at));
            }
            if let Some(audit) = &row.last_audit {
                self.audit_missing
                    .get_or_create(&label)
                    .set(audit.missing as i64);
            }
            let failures = row.consecutive_failures as i64;
            self.consecutive_failures
                .get_or_create(&label)
                .set(failures);
            let state = if failures > 0 {
                State::Failing
            } else {
                State::Ok
            };
            book.tenants.insert(tenant.name.clone(), (state, failures));
        }
        self.publish_states(&book);
    }

    fn poll_ended(&self, outcome: &'static str, elapsed_ms: Option<u64>) {
        self.polls.get_or_create(&OutcomeLabel { outcome }).inc();
        if let Some(ms) = elapsed_ms {
            self.poll_duration.observe(ms as f64 / 1000.0);
        }
    }

    fn set_state(&self, tenant: &str, state: State) {
        let mut book = self.book.lock().expect("metrics book");
        let entry = book
            .tenants
            .entry(tenant.to_owned())
            .or_insert((State::Ok, 0));
        entry.0 = state;
        entry.1 = if state == State::Ok { 0 } else { entry.1 + 1 };
        let failures = entry.1;
        let label = book.label(tenant);
        self.consecutive_failures
            .get_or_create(&label)
            .set(failures);
        self.publish_states(&book);
    }

    fn publish_states(&self, book: &Book) {
        let count = |s: State| book.tenants.values().filter(|(st, _)| *st == s).count() as i64;
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

fn tenant_label(tenant: &str) -> TenantLabel {
    TenantLabel {
        tenant: tenant.to_owned(),
    }
}

fn unix_seconds(at: Timestamp) -> f64 {
    at.ticks() as f64 / TICKS_PER_SECOND as f64
}

#[cfg(test)]
mod tests;
