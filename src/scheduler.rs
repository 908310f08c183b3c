//! When each tenant is polled: one tokio-cron-scheduler job per tenant, a poll
//! at start-up, no overlapping polls of one tenant, at most `concurrency`
//! tenants at once, a growing pause for tenants whose credentials cannot work,
//! and the diff that a reload applies.
//!
//! Two traps of tokio-cron-scheduler are handled here: its first run of a
//! repeated job comes one interval late (so every tenant is polled once right
//! away), and it starts a job again while the previous run is still going (so
//! each tenant holds a lock for the length of its poll and a tick that finds it
//! taken is skipped).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::api::AlertsApi;
use crate::auth::{AuthError, TokenSource};
use crate::config::{Credential, HttpSettings, PollSettings, Settings, TenantSettings};
use crate::events;
use crate::output::AlertSource;
use crate::poll::{self, PollEnv, TenantPoll};
use crate::ratelimit::CallBudget;
use crate::timestamp::Timestamp;

/// The longest pause of a tenant whose token requests fail for a reason the
/// operator must fix.
const MAX_AUTH_BACKOFF: Duration = Duration::from_secs(3600);

/// A tenant's state as the last poll left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Pending,
    Ok,
    Failing(String),
}

/// Things the scheduler tells the world about, as they happen (sd_notify).
pub trait Observer: Send + Sync + 'static {
    /// After every poll: every tenant's health, by name.
    fn cycle(&self, health: &BTreeMap<String, Health>);
    /// The scheduler made progress (a tick ran): feeds the watchdog.
    fn progress(&self) {}
}

impl Observer for () {
    fn cycle(&self, _: &BTreeMap<String, Health>) {}
}

struct Inner {
    env: RwLock<PollEnv>,
    http: RwLock<reqwest::Client>,
    permits: RwLock<Arc<Semaphore>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    health: Mutex<BTreeMap<String, Health>>,
    /// Per tenant id, kept across reloads: a tenant whose settings changed
    /// must still never be polled twice at once, and its API budget is the
    /// server's count, which a reload does not reset.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    budgets: Mutex<HashMap<String, Arc<CallBudget>>>,
    observer: Box<dyn Observer>,
    /// `[audit]` and the retention that clamps it (`once` never audits).
    audit: RwLock<AuditPlan>,
    /// When each tenant's next self-audit is due, by tenant id.
    audit_due: Mutex<HashMap<String, Instant>>,
    /// One self-audit at a time across tenants: low priority, spread out.
    audits: Arc<Semaphore>,
}

#[derive(Debug, Clone, PartialEq)]
struct AuditPlan {
    every: Option<Duration>,
    window: Duration,
    retention: Duration,
}

impl AuditPlan {
    fn of(settings: &Settings) -> Self {
        AuditPlan {
            every: settings.audit.every,
            window: settings.audit.window,
            retention: settings.store.retention,
        }
    }
}

struct TenantRuntime {
    poll: TenantPoll,
    lock: Arc<tokio::sync::Mutex<()>>,
    interval: Duration,
    auth_pause: Mutex<Option<(Instant, Duration)>>,
}

struct Entry {
    job: Uuid,
    name: String,
    fingerprint: u64,
}

pub struct Scheduler {
    jobs: JobScheduler,
    inner: Arc<Inner>,
    entries: HashMap<String, Entry>,
    poll_settings: PollSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler: {0}")]
    Jobs(#[from] tokio_cron_scheduler::JobSchedulerError),
    #[error(transparent)]
    Http(#[from] crate::http::ClientError),
}

impl Scheduler {
    /// Starts polling every enabled tenant of `settings`, each once right away.
    pub async fn start(
        settings: &Settings,
        env: PollEnv,
        observer: impl Observer,
    ) -> Result<Scheduler, SchedulerError> {
        let inner = Inner::new(settings, env, Box::new(observer), CancellationToken::new())?;
        let jobs = JobScheduler::new().await?;
        // A heartbeat job: if the scheduler wedges, it stops, and so do the
        // watchdog pings, and systemd restarts us.
        let beat = Arc::clone(&inner);
        jobs.add(Job::new_repeated_async(
            Duration::from_secs(1),
            move |_, _| {
                let beat = Arc::clone(&beat);
                Box::pin(async move { beat.observer.progress() })
            },
        )?)
        .await?;
        jobs.start().await?;
        let mut scheduler = Scheduler {
            jobs,
            inner,
            entries: HashMap::new(),
            poll_settings: settings.poll.clone(),
        };
        scheduler.apply_tenants(settings, true, false).await?;
        Ok(scheduler)
    }

    /// Applies a reloaded config: added tenants start, removed ones stop after
    /// their poll in flight, changed ones restart with the change.
    pub(crate) async fn reload(&mut self, settings: &Settings) -> Result<(), SchedulerError> {
        // Tenants whose settings (the [http] ones included) did not change
        // keep the client they hold; new and changed ones get this one.
        *self.inner.http.write().expect("http lock") =
            crate::http::client(&settings.http, settings.poll.timeout)?;
        *self.inner.audit.write().expect("audit lock") = AuditPlan::of(settings);
        let restart_all = settings.poll != self.poll_settings;
        if restart_all {
            *self.inner.permits.write().expect("permits lock") =
                Arc::new(Semaphore::new(settings.poll.concurrency.max(1)));
            self.inner.env.write().expect("env lock").settings = settings.poll.clone();
            self.poll_settings = settings.poll.clone();
            // Every job's interval may have changed: all restart, in one line
            // of log rather than a `tenant_added` per tenant.
            events::poll_settings_changed(settings.enabled_tenants().count());
        }
        self.apply_tenants(settings, false, restart_all).await
    }

    /// Starts, restarts and stops jobs so that they match `settings`:
    /// `first` at start-up (nothing is "added"), `restart_all` when `[poll]`
    /// changed and every job must take the new interval or schedule.
    async fn apply_tenants(
        &mut self,
        settings: &Settings,
        first: bool,
        restart_all: bool,
    ) -> Result<(), SchedulerError> {
        let tenants = &settings.tenants;
        let wanted: HashMap<&str, &TenantSettings> = tenants
            .iter()
            .filter(|t| t.enabled)
            .map(|t| (t.tenant_id.as_str(), t))
            .collect();
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|id| !wanted.contains_key(id.as_str()))
            .cloned()
            .collect();
        for id in gone {
            if let Some(entry) = self.entries.remove(&id) {
                self.jobs.remove(&entry.job).await?;
                events::tenant_removed(&entry.name, &id);
            }
        }
        {
            let mut health = self.inner.health.lock().expect("health lock");
            health.retain(|name, _| tenants.iter().any(|t| t.enabled && &t.name == name));
        }
        for tenant in settings.enabled_tenants() {
            let fingerprint = fingerprint(tenant, &settings.http);
            let (existing, changed) = match self.entries.get(&tenant.tenant_id) {
                Some(entry) if entry.fingerprint == fingerprint && !restart_all => continue,
                Some(entry) => (true, entry.fingerprint != fingerprint),
                None => (false, false),
            };
            // Built before the old job goes: a new credential that does not
            // load leaves the tenant polling with the one it had.
            let runtime = match runtime(&self.inner, tenant, self.poll_settings.interval) {
                Ok(r) => Arc::new(r),
                Err(e) => {
                    events::tenant_credential_invalid(&tenant.name, &e, existing);
                    if !existing {
                        self.set_health(&tenant.name, Health::Failing(e.summary()));
                    }
                    continue;
                }
            };
            if let Some(entry) = self.entries.remove(&tenant.tenant_id) {
                self.jobs.remove(&entry.job).await?;
            }
            if changed {
                events::tenant_changed(&tenant.name);
            } else if !existing && !first {
                events::tenant_added(&tenant.name);
            }
            let job = self.job(Arc::clone(&runtime))?;
            let job = self.jobs.add(job).await?;
            self.entries.insert(
                tenant.tenant_id.clone(),
                Entry {
                    job,
                    name: tenant.name.clone(),
                    fingerprint,
                },
            );
            self.inner
                .health
                .lock()
                .expect("health lock")
                .entry(tenant.name.clone())
                .or_insert(Health::Pending);
            // The first tick of a repeated job comes one interval late.
            let inner = Arc::clone(&self.inner);
            self.inner.tracker.spawn(tick(inner, runtime));
        }
        Ok(())
    }

    fn job(&self, runtime: Arc<TenantRuntime>) -> Result<Job, SchedulerError> {
        let inner = Arc::clone(&self.inner);
        let run = move |_: Uuid, _| {
            let inner = Arc::clone(&inner);
            let runtime = Arc::clone(&runtime);
            let handle = inner.tracker.spawn(tick(Arc::clone(&inner), runtime));
            Box::pin(async move {
                let _ = handle.await;
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        };
        Ok(match &self.poll_settings.schedule {
            Some(cron) => Job::new_async(cron.as_str(), run)?,
            None => Job::new_repeated_async(self.poll_settings.interval, run)?,
        })
    }

    fn set_health(&self, name: &str, health: Health) {
        set_health(&self.inner, name, health);
    }

    /// Stops scheduling, abandons requests in flight (a page being written
    /// and recorded finishes first), and waits at most `grace` for polls to end.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.jobs.shutdown().await;
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_err()
        {
            events::shutdown_timeout(grace);
        }
    }
}

fn set_health(inner: &Inner, name: &str, health: Health) {
    let snapshot = {
        let mut map = inner.health.lock().expect("health lock");
        map.insert(name.to_owned(), health);
        map.clone()
    };
    inner.observer.cycle(&snapshot);
}

impl Inner {
    fn new(
        settings: &Settings,
        env: PollEnv,
        observer: Box<dyn Observer>,
        cancel: CancellationToken,
    ) -> Result<Arc<Inner>, SchedulerError> {
        let http = crate::http::client(&settings.http, settings.poll.timeout)?;
        Ok(Arc::new(Inner {
            permits: RwLock::new(Arc::new(Semaphore::new(settings.poll.concurrency.max(1)))),
            env: RwLock::new(env),
            http: RwLock::new(http),
            cancel,
            tracker: TaskTracker::new(),
            health: Mutex::new(BTreeMap::new()),
            locks: Mutex::new(HashMap::new()),
            budgets: Mutex::new(HashMap::new()),
            observer,
            audit: RwLock::new(AuditPlan::of(settings)),
            audit_due: Mutex::new(HashMap::new()),
            audits: Arc::new(Semaphore::new(1)),
        }))
    }
}

/// The one way a tenant's poller is built (`run`, `once`, `check` and the
/// tests): its token source and its alerts API on `http`, counting calls
/// against `budget`. Nothing here fails: the credential was loaded and checked
/// with the config.
pub fn tenant_poll(
    http: &reqwest::Client,
    tenant: &TenantSettings,
    budget: Arc<CallBudget>,
) -> TenantPoll {
    // The token request carries the scope of the tenant's source.
    let tokens = Arc::new(TokenSource::new(http.clone(), tenant));
    let api = match tenant.source {
        AlertSource::Mde => AlertsApi::new(http.clone(), &tenant.api_url, tokens, budget),
        AlertSource::Graph => AlertsApi::graph(
            http.clone(),
            &tenant.graph_url,
            tokens,
            budget,
            tenant.service_sources.clone(),
        ),
    };
    TenantPoll {
        name: tenant.name.clone(),
        tenant_id: tenant.tenant_id.clone(),
        api,
    }
}

/// A new budget for `source`: Graph counts its calls apart from the MDE
/// API's, at its own limit (150 a minute per app and tenant).
pub fn budget_for(source: AlertSource) -> CallBudget {
    match source {
        AlertSource::Mde => CallBudget::default(),
        AlertSource::Graph => CallBudget::graph(),
    }
}

/// A tenant's poller with the lock and budget it keeps across reloads.
fn runtime(
    inner: &Inner,
    tenant: &TenantSettings,
    interval: Duration,
) -> Result<TenantRuntime, AuthError> {
    let http = inner.http.read().expect("http lock").clone();
    let budget = Arc::clone(
        inner
            .budgets
            .lock()
            .expect("budgets lock")
            // Keyed by source too: a tenant switched to Graph starts on
            // Graph's budget, and the MDE one it leaves is not spent by it.
            .entry(format!("{}:{}", tenant.source.as_str(), tenant.tenant_id))
            .or_insert_with(|| Arc::new(budget_for(tenant.source))),
    );
    let lock = Arc::clone(
        inner
            .locks
            .lock()
            .expect("locks lock")
            .entry(tenant.tenant_id.clone())
            .or_default(),
    );
    Ok(TenantRuntime {
        poll: tenant_poll(&http, tenant, budget),
        lock,
        interval,
        auth_pause: Mutex::new(None),
    })
}

/// One scheduled poll of one tenant, unless one is running or the tenant is
/// paused for a credential problem.
async fn tick(inner: Arc<Inner>, runtime: Arc<TenantRuntime>) {
    if inner.cancel.is_cancelled() {
        return;
    }
    let name = &runtime.poll.name;
    let Ok(_guard) = runtime.lock.clone().try_lock_owned() else {
        events::poll_skipped(name, "previous poll still running", None);
        return;
    };
    if let Some((until, _)) = *runtime.auth_pause.lock().expect("pause lock") {
        if Instant::now() < until {
            events::poll_skipped(name, "paused after a credential error", None);
            return;
        }
    }
    if let Some(left) = runtime.poll.api.blocked_for() {
        events::poll_skipped(
            name,
            "the API's Retry-After still holds",
            Some(left.as_secs()),
        );
        return;
    }
    let permits = inner.permits.read().expect("permits lock").clone();
    let slot = tokio::select! {
        s = crate::slots::take(permits) => s,
        _ = inner.cancel.cancelled() => return,
    };
    let env = inner.env.read().expect("env lock").clone();
    let started = Instant::now();
    let result = slot
        .run(poll::poll_tenant(&env, &runtime.poll, &inner.cancel))
        .await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(report) => {
            events::poll_finished(name, &report, elapsed_ms);
            *runtime.auth_pause.lock().expect("pause lock") = None;
            set_health(&inner, name, Health::Ok);
            // The poll's slot went back with its end: the audit holds none,
            // so it never keeps another tenant's poll waiting.
            self_audit_if_due(&inner, &runtime, &env).await;
        }
        Err(e) if e.is_cancelled() => events::poll_abandoned(name),
        Err(e) => {
            if let Some(auth) = e.persistent_auth() {
                let mut pause = runtime.auth_pause.lock().expect("pause lock");
                let delay = match *pause {
                    None => runtime.interval,
                    Some((_, d)) => (d * 2).min(MAX_AUTH_BACKOFF),
                }
                .max(Duration::from_secs(1));
                *pause = Some((Instant::now() + delay, delay));
                events::tenant_auth_failed(name, auth, delay);
            } else {
                events::poll_failed(name, &e, elapsed_ms);
            }
            set_health(&inner, name, Health::Failing(e.summary()));
        }
    }
}

/// The tenant's self-audit, when `[audit] every` is set and it is due: right
/// after a successful poll (holding the tenant's lock, so no poll of it runs
/// meanwhile and nothing is emitted twice), one tenant at a time, and only
/// while at least half the tenant's call budget is left, so that an audit
/// never takes the calls its polls need. Due `every` after the last audit
/// the database recorded; never audited, within one poll interval of start
/// (spread by tenant id).
async fn self_audit_if_due(inner: &Inner, runtime: &TenantRuntime, env: &PollEnv) {
    let plan = inner.audit.read().expect("audit lock").clone();
    let Some(every) = plan.every else {
        return;
    };
    let id = &runtime.poll.tenant_id;
    let name = &runtime.poll.name;
    let known = inner
        .audit_due
        .lock()
        .expect("audit_due lock")
        .get(id)
        .copied();
    let due = match known {
        Some(due) => due,
        None => {
            // After a restart, the audit the database recorded still counts.
            let tid = id.clone();
            let last = crate::poll::blocking(&env.store, move |s| s.last_audit_ended(&tid))
                .await
                .ok()
                .flatten();
            let wall = Timestamp::now();
            let due = match last.map(|l| l.saturating_add(every)) {
                Some(next) if next > wall => Instant::now() + next.since(wall),
                _ => {
                    let spread = every.min(runtime.interval).as_millis().max(1) as u64;
                    Instant::now()
                        + Duration::from_millis(xxhash_rust::xxh3::xxh3_64(id.as_bytes()) % spread)
                }
            };
            inner
                .audit_due
                .lock()
                .expect("audit_due lock")
                .insert(id.clone(), due);
            due
        }
    };
    let now = Instant::now();
    if now < due {
        return;
    }
    let (minute, hour) = runtime.poll.api.budget_left();
    if minute < crate::ratelimit::PER_MINUTE / 2 || hour < crate::ratelimit::PER_HOUR / 2 {
        events::audit_deferred(name, "less than half of the call budget left");
        return;
    }
    let Ok(_one) = Arc::clone(&inner.audits).try_acquire_owned() else {
        events::audit_deferred(name, "another tenant's audit is running");
        return;
    };
    crate::audit::self_audit(
        env,
        &runtime.poll,
        plan.window,
        plan.retention,
        &inner.cancel,
    )
    .await;
    inner
        .audit_due
        .lock()
        .expect("audit_due lock")
        .insert(id.clone(), Instant::now() + every);
}

/// A tenant's settings, secrets included (hashed), so that a rotated secret
/// counts as a change.
fn fingerprint(t: &TenantSettings, http: &HttpSettings) -> u64 {
    let credential = match &t.credential {
        Credential::Secret(s) => format!(
            "secret:{:x}",
            xxhash_rust::xxh3::xxh3_64(s.expose_secret().as_bytes())
        ),
        // Loaded with the config (off the runtime thread): a replaced file
        // shows as a new thumbprint, and nothing is read here.
        Credential::Certificate(c) => format!(
            "cert:{}:{}:{}",
            c.path().display(),
            c.algorithm(),
            c.thumbprint()
        ),
    };
    // The HTTP settings too: a changed proxy, CA bundle or User-Agent means
    // a new client for the tenant's token source and API.
    let text = format!(
        "{}|{}|{}|{}|{}|{}|{}|{:?}|{}|{}|{}|{:?}",
        t.name,
        t.tenant_id,
        t.client_id,
        t.login_url,
        t.api_url,
        t.token_scope,
        credential,
        http,
        t.source.as_str(),
        t.graph_url,
        t.graph_scope,
        t.service_sources
    );
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// `once`: one scheduler tick for every enabled tenant, without the cron:
/// the same poller, the same logging, `concurrency` at a time. Returns each
/// tenant's health afterwards; a tenant `cancel` stopped stays `Pending`.
pub(crate) async fn poll_all_once(
    settings: &Settings,
    env: PollEnv,
    cancel: &CancellationToken,
) -> Result<BTreeMap<String, Health>, SchedulerError> {
    let inner = Inner::new(settings, env, Box::new(()), cancel.clone())?;
    // `once` polls; auditing is the daemon's (or `mde-poller audit`'s).
    inner.audit.write().expect("audit lock").every = None;
    for tenant in settings.enabled_tenants() {
        match runtime(&inner, tenant, settings.poll.interval) {
            Ok(runtime) => {
                set_health(&inner, &tenant.name, Health::Pending);
                inner
                    .tracker
                    .spawn(tick(Arc::clone(&inner), Arc::new(runtime)));
            }
            Err(e) => {
                events::tenant_credential_invalid(&tenant.name, &e, false);
                set_health(&inner, &tenant.name, Health::Failing(e.summary()));
            }
        }
    }
    inner.tracker.close();
    inner.tracker.wait().await;
    let health = inner.health.lock().expect("health lock").clone();
    Ok(health)
}

#[cfg(test)]
mod tests {
    use crate::api::ApiError;
    use crate::auth::AuthError;
    use crate::poll::PollError;
    use crate::timestamp::Timestamp;

    fn refused(code: u32) -> PollError {
        PollError::Api(ApiError::Auth(AuthError::Rejected {
            status: 400,
            error: "invalid_client".into(),
            codes: vec![code],
            description: String::new(),
        }))
    }

    /// The words `STATUS=` shows per failing tenant, and the next step the
    /// log and `check` show, come from the error itself.
    #[test]
    fn each_failure_says_its_own_few_words_and_next_step() {
        let foreign = PollError::Api(ApiError::ForeignNextLink {
            host: "evil.example".into(),
            api: "https://api.securitycenter.microsoft.com".into(),
        });
        let skip = PollError::SkipIgnored {
            at: Timestamp::parse("2026-11-26T10:00:00Z").unwrap(),
            pages: 100,
        };
        let cases = [
            (
                refused(700016),
                "consent missing (AADSTS700016)",
                "consent-url",
            ),
            (
                refused(7000222),
                "client secret expired (AADSTS7000222)",
                "new client secret",
            ),
            (
                refused(700027),
                "certificate rejected (AADSTS700027)",
                "thumbprints",
            ),
            (refused(12345), "token refused (AADSTS12345)", "client_id"),
            (
                PollError::Api(ApiError::Forbidden {
                    message: "Forbidden: no role".into(),
                }),
                "role missing (HTTP 403)",
                "Alert.Read.All",
            ),
            (foreign, "nextLink to evil.example refused", "api_url"),
            (skip, "API ignores $skip", "$skip"),
        ];
        for (error, summary, hint) in &cases {
            assert_eq!(&error.summary(), summary, "{error}");
            assert!(error.hint().contains(hint), "{error}: {}", error.hint());
        }
    }

    #[test]
    fn errors_are_named_for_what_happened_not_for_json() {
        let foreign = PollError::Api(ApiError::ForeignNextLink {
            host: "evil.example".into(),
            api: "https://api.securitycenter.microsoft.com".into(),
        });
        let text = foreign.to_string();
        assert!(
            text.contains("evil.example") && text.contains("not followed"),
            "{text}"
        );
        assert!(!text.contains("malformed"), "{text}");
        let skip = PollError::SkipIgnored {
            at: Timestamp::parse("2026-11-26T10:00:00Z").unwrap(),
            pages: 100,
        };
        let text = skip.to_string();
        assert!(
            text.contains("ignores $skip") && !text.contains("parsed"),
            "{text}"
        );
        // Neither heals by itself: the poll fails at ERROR, not WARN.
        assert!(foreign.needs_operator() && skip.needs_operator());
        // A 403's message is what the server said; the next step is the hint's.
        let forbidden = ApiError::Forbidden {
            message: "Forbidden: no role".into(),
        };
        assert_eq!(
            forbidden.to_string(),
            "HTTP 403 from the alerts API: Forbidden: no role"
        );
    }
}
