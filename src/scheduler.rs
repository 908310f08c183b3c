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
use crate::auth::TokenSource;
use crate::config::{Credential, HttpSettings, PollSettings, Settings, TenantSettings};
use crate::poll::{self, PollEnv, PollError, PollReport, TenantPoll};
use crate::ratelimit::CallBudget;

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
}

struct TenantRuntime {
    poll: TenantPoll,
    lock: Arc<tokio::sync::Mutex<()>>,
    interval: Duration,
    auth_pause: Mutex<Option<(Instant, Duration)>>,
}

struct Entry {
    job: Uuid,
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
        let http = crate::http::client(&settings.http, settings.poll.timeout)?;
        let inner = Arc::new(Inner {
            permits: RwLock::new(Arc::new(Semaphore::new(settings.poll.concurrency.max(1)))),
            env: RwLock::new(env),
            http: RwLock::new(http),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            health: Mutex::new(BTreeMap::new()),
            locks: Mutex::new(HashMap::new()),
            budgets: Mutex::new(HashMap::new()),
            observer: Box::new(observer),
        });
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
        scheduler.apply_tenants(settings, true).await?;
        Ok(scheduler)
    }

    /// Applies a reloaded config: added tenants start, removed ones stop after
    /// their poll in flight, changed ones restart with the change.
    pub async fn reload(&mut self, settings: &Settings) -> Result<(), SchedulerError> {
        // Tenants whose settings (the [http] ones included) did not change
        // keep the client they hold; new and changed ones get this one.
        *self.inner.http.write().expect("http lock") =
            crate::http::client(&settings.http, settings.poll.timeout)?;
        if settings.poll != self.poll_settings {
            *self.inner.permits.write().expect("permits lock") =
                Arc::new(Semaphore::new(settings.poll.concurrency.max(1)));
            self.inner.env.write().expect("env lock").settings = settings.poll.clone();
            self.poll_settings = settings.poll.clone();
            // Every job's interval may have changed: rebuild them all.
            for (_, entry) in self.entries.drain() {
                self.jobs.remove(&entry.job).await?;
            }
        }
        self.apply_tenants(settings, false).await
    }

    async fn apply_tenants(
        &mut self,
        settings: &Settings,
        first: bool,
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
                tracing::info!(event = "tenant_removed", tenant_id = %id, "tenant no longer polled (a poll in flight finishes)");
            }
        }
        {
            let mut health = self.inner.health.lock().expect("health lock");
            health.retain(|name, _| tenants.iter().any(|t| t.enabled && &t.name == name));
        }
        for tenant in settings.enabled_tenants() {
            let fingerprint = fingerprint(tenant, &settings.http);
            let changed = match self.entries.get(&tenant.tenant_id) {
                Some(entry) if entry.fingerprint == fingerprint => continue,
                Some(_) => true,
                None => false,
            };
            // Built before the old job goes: a new credential that does not
            // load leaves the tenant polling with the one it had.
            let runtime = match self.runtime(tenant) {
                Ok(r) => Arc::new(r),
                Err(e) => {
                    let kept = if changed {
                        "; the previous settings stay in force"
                    } else {
                        ""
                    };
                    tracing::error!(event = "tenant_credential_invalid", tenant = %tenant.name, error = %e, "tenant cannot use its new credential{kept}");
                    if !changed {
                        self.set_health(&tenant.name, Health::Failing(e.to_string()));
                    }
                    continue;
                }
            };
            if changed {
                if let Some(entry) = self.entries.remove(&tenant.tenant_id) {
                    self.jobs.remove(&entry.job).await?;
                }
                tracing::info!(event = "tenant_changed", tenant = %tenant.name, "tenant settings changed; restarting its schedule");
            } else if !first {
                tracing::info!(event = "tenant_added", tenant = %tenant.name, "tenant added");
            }
            let job = self.job(Arc::clone(&runtime))?;
            let job = self.jobs.add(job).await?;
            self.entries
                .insert(tenant.tenant_id.clone(), Entry { job, fingerprint });
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

    fn runtime(&self, tenant: &TenantSettings) -> Result<TenantRuntime, crate::auth::AuthError> {
        let http = self.inner.http.read().expect("http lock").clone();
        let tokens = Arc::new(TokenSource::new(http.clone(), tenant)?);
        let budget = Arc::clone(
            self.inner
                .budgets
                .lock()
                .expect("budgets lock")
                .entry(tenant.tenant_id.clone())
                .or_default(),
        );
        let lock = Arc::clone(
            self.inner
                .locks
                .lock()
                .expect("locks lock")
                .entry(tenant.tenant_id.clone())
                .or_default(),
        );
        Ok(TenantRuntime {
            poll: TenantPoll {
                name: tenant.name.clone(),
                tenant_id: tenant.tenant_id.clone(),
                api: AlertsApi::new(http, &tenant.api_url, tokens, budget),
            },
            lock,
            interval: self.poll_settings.interval,
            auth_pause: Mutex::new(None),
        })
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
            tracing::warn!(
                event = "shutdown_timeout",
                "polls still running after {grace:?}; stopping anyway"
            );
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

/// One scheduled poll of one tenant, unless one is running or the tenant is
/// paused for a credential problem.
async fn tick(inner: Arc<Inner>, runtime: Arc<TenantRuntime>) {
    if inner.cancel.is_cancelled() {
        return;
    }
    let name = &runtime.poll.name;
    let Ok(_guard) = runtime.lock.clone().try_lock_owned() else {
        tracing::debug!(event = "poll_skipped", tenant = %name, "previous poll still running");
        return;
    };
    if let Some((until, _)) = *runtime.auth_pause.lock().expect("pause lock") {
        if Instant::now() < until {
            tracing::debug!(event = "poll_skipped", tenant = %name, "paused after a credential error");
            return;
        }
    }
    if let Some(left) = runtime.poll.api.blocked_for() {
        tracing::debug!(event = "poll_skipped", tenant = %name, retry_after_s = left.as_secs(), "the API's Retry-After still holds");
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
            log_success(name, &report, elapsed_ms);
            *runtime.auth_pause.lock().expect("pause lock") = None;
            set_health(&inner, name, Health::Ok);
        }
        Err(e) if e.is_cancelled() => {
            tracing::info!(event = "poll_abandoned", tenant = %name, "poll stopped by shutdown; its unfinished pages will be read again");
        }
        Err(e) => {
            let summary = failure_summary(&e);
            if let Some(auth) = e.persistent_auth() {
                let mut pause = runtime.auth_pause.lock().expect("pause lock");
                let delay = match *pause {
                    None => runtime.interval,
                    Some((_, d)) => (d * 2).min(MAX_AUTH_BACKOFF),
                }
                .max(Duration::from_secs(1));
                *pause = Some((Instant::now() + delay, delay));
                tracing::error!(
                    event = "tenant_auth_failed",
                    tenant = %name,
                    code = auth.code().unwrap_or(0),
                    error = %auth,
                    hint = auth.hint(),
                    retry_in_s = delay.as_secs(),
                    "token request refused; tenant paused"
                );
            } else if e.needs_operator() {
                tracing::error!(event = "poll_failed", tenant = %name, error = %e, elapsed_ms, "poll failed; cursor unchanged, the next poll tries again");
            } else {
                tracing::warn!(event = "poll_failed", tenant = %name, error = %e, elapsed_ms, "poll failed; cursor unchanged, the next poll tries again");
            }
            set_health(&inner, name, Health::Failing(summary));
        }
    }
}

fn log_success(name: &str, report: &PollReport, elapsed_ms: u64) {
    tracing::info!(
        event = "poll_finished",
        tenant = %name,
        seen = report.seen,
        emitted = report.emitted,
        requests = report.requests,
        cursor = report.cursor.as_deref().unwrap_or("-"),
        elapsed_ms,
        "poll finished"
    );
}

/// A few words for `STATUS=` and `check`.
pub fn failure_summary(e: &PollError) -> String {
    if let PollError::Api(crate::api::ApiError::Auth(auth)) = e {
        if let Some(code) = auth.code() {
            let words = match code {
                700016 => "consent missing",
                7000215 => "invalid client secret",
                7000222 => "client secret expired",
                90002 => "tenant not found",
                500011 => "no Defender for Endpoint",
                700027 | 50048 | 500133 => "certificate rejected",
                7000112 => "app disabled",
                53003 => "blocked by Conditional Access",
                _ => "token refused",
            };
            return format!("{words} (AADSTS{code})");
        }
    }
    match e {
        PollError::Api(crate::api::ApiError::Forbidden { .. }) => {
            "role missing (HTTP 403)".to_owned()
        }
        PollError::Api(crate::api::ApiError::Throttled { .. }) => "throttled".to_owned(),
        other => {
            let text = other.to_string();
            text.chars().take(80).collect()
        }
    }
}

/// A tenant's settings, secrets included (hashed), so that a rotated secret
/// counts as a change.
fn fingerprint(t: &TenantSettings, http: &HttpSettings) -> u64 {
    let credential = match &t.credential {
        Credential::Secret(s) => format!(
            "secret:{:x}",
            xxhash_rust::xxh3::xxh3_64(s.expose_secret().as_bytes())
        ),
        Credential::Certificate { path, legacy_rs256 } => {
            let contents = std::fs::read(path).unwrap_or_default();
            format!(
                "cert:{}:{legacy_rs256}:{:x}",
                path.display(),
                xxhash_rust::xxh3::xxh3_64(&contents)
            )
        }
    };
    // The HTTP settings too: a changed proxy, CA bundle or User-Agent means
    // a new client for the tenant's token source and API.
    let text = format!(
        "{}|{}|{}|{}|{}|{}|{}|{:?}",
        t.name, t.tenant_id, t.client_id, t.login_url, t.api_url, t.token_scope, credential, http
    );
    xxhash_rust::xxh3::xxh3_64(text.as_bytes())
}

/// `once`: polls every enabled tenant one time, `concurrency` at a time, and
/// returns each tenant's outcome.
pub async fn poll_all_once(
    settings: &Settings,
    env: PollEnv,
    cancel: &CancellationToken,
) -> Result<Vec<(String, Result<PollReport, String>)>, SchedulerError> {
    let http = crate::http::client(&settings.http, settings.poll.timeout)?;
    let permits = Arc::new(Semaphore::new(settings.poll.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for tenant in settings.enabled_tenants() {
        let name = tenant.name.clone();
        let tokens = match TokenSource::new(http.clone(), tenant) {
            Ok(t) => Arc::new(t),
            Err(e) => {
                tracing::error!(event = "tenant_credential_invalid", tenant = %name, error = %e, "tenant cannot be polled");
                tasks.spawn(async move { (name, Err(e.to_string())) });
                continue;
            }
        };
        let poll = TenantPoll {
            name: name.clone(),
            tenant_id: tenant.tenant_id.clone(),
            api: AlertsApi::new(
                http.clone(),
                &tenant.api_url,
                tokens,
                Arc::new(CallBudget::default()),
            ),
        };
        let (env, permits, cancel) = (env.clone(), Arc::clone(&permits), cancel.clone());
        tasks.spawn(async move {
            let started = Instant::now();
            let result = crate::slots::hold(permits, poll::poll_tenant(&env, &poll, &cancel)).await;
            match &result {
                Ok(report) => log_success(&name, report, started.elapsed().as_millis() as u64),
                Err(e) => match e.persistent_auth() {
                    Some(auth) => tracing::error!(event = "tenant_auth_failed", tenant = %name, code = auth.code().unwrap_or(0), error = %auth, hint = auth.hint(), "token request refused"),
                    None => tracing::warn!(event = "poll_failed", tenant = %name, error = %e, "poll failed; cursor unchanged"),
                },
            }
            (name, result.map_err(|e| failure_summary(&e)))
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        results.push(joined.expect("poll task panicked"));
    }
    results.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(results)
}
