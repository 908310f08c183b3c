//! When each tenant is polled: a table of due times driven by one
//! tokio-cron-scheduler ticker, a poll at start-up, polls spread over the
//! interval by a stable per-tenant phase, no overlapping polls of one tenant,
//! at most `concurrency` tenants at once, a growing pause for tenants whose
//! credentials cannot work, and the diff that a reload applies.
//!
//! Why one ticker and not one job per tenant: tokio-cron-scheduler scans
//! every job twice a second under one lock and announces each run on
//! broadcast channels of 200 slots; with a job per tenant, a minute's worth
//! of 1,000 tenants overflowed them (`Error receiving value Lagged(290)`),
//! and every job of one interval fired in the same second. So the crate runs
//! two jobs at most: a ticker every second (also the heartbeat the watchdog
//! and `/healthz` watch), and, when `[poll] schedule` asks for the clock, one
//! cron job that makes every tenant due at once. The table says when each
//! tenant is due; one dispatcher task takes due tenants in order, each once
//! a slot of `concurrency` is free, so only that many polls exist at a time
//! however many tenants wait.
//!
//! The phase: with `interval`, a tenant's polls fall at a fixed offset into
//! each interval of the wall clock (a hash of its tenant id), so 5,000
//! tenants at 5 minutes are about 17 a second instead of 5,000 in one, and a
//! tenant keeps its offset across restarts and reloads. A tenant polled out
//! of its phase (at start-up, when added or changed, after a `[poll]`
//! change) is next polled at its first phase slot at least half an interval
//! later: never twice within half an interval, never more than one and a
//! half intervals apart.
//!
//! Tokio-cron-scheduler starts a job again while its previous run still
//! goes; here a tenant holds a lock for the length of its poll, and a tenant
//! that is due while it is polled or still queued is skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::AlertsApi;
use crate::auth::{AppShare, AuthError, TokenRequest, TokenSource};
use crate::config::{HttpSettings, PollSettings, Settings, TenantSettings};
use crate::events;
use crate::output::AlertSource;
use crate::poll::{self, PollEnv, TenantPoll};
use crate::ratelimit::CallBudget;
use crate::timestamp::Timestamp;

/// The longest pause of a tenant whose token requests fail for a reason the
/// operator must fix.
const MAX_AUTH_BACKOFF: Duration = Duration::from_secs(3600);

/// How often the ticker looks at the table (tokio-cron-scheduler's repeated
/// jobs count whole seconds): a tenant is polled within about a second of
/// its slot.
const TICK: Duration = Duration::from_secs(1);

/// A tenant's state as the last poll left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Pending,
    Ok,
    Failing(String),
}

/// Things the scheduler tells the world about, as they happen (sd_notify).
pub trait Observer: Send + Sync + 'static {
    /// After every poll: every tenant's health, by name. Called with the
    /// scheduler's health map locked: it must not call back into it.
    fn cycle(&self, health: &BTreeMap<String, Health>);
    /// The scheduler made progress (a tick ran): feeds the watchdog.
    fn progress(&self) {}
}

impl Observer for () {
    fn cycle(&self, _: &BTreeMap<String, Health>) {}
}

/// Where in each interval a tenant's polls fall: a hash of its key (the
/// tenant id) modulo the interval, in milliseconds. Stable across restarts
/// and reloads for as long as the interval stays; spread evenly over the
/// interval for any set of distinct keys.
pub(crate) fn phase(key: &str, interval: Duration) -> Duration {
    let span = interval.as_millis().clamp(1, u64::MAX as u128) as u64;
    Duration::from_millis(xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % span)
}

/// Tokio's clock tied to the wall clock once, so that a phase means the
/// same offset into each interval of the wall clock (`12:00:00 + k ×
/// interval + phase`) in every run, while the slots themselves are tokio
/// instants (a clock step of the wall clock moves no slot).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grid {
    origin: Instant,
    /// Milliseconds since the Unix epoch at `origin`.
    origin_wall_ms: u64,
}

impl Grid {
    /// The grid of this process: now on both clocks.
    pub(crate) fn now() -> Grid {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        Grid::at(Instant::now(), wall)
    }

    /// `origin` is `wall_ms` milliseconds after the Unix epoch.
    pub(crate) fn at(origin: Instant, wall_ms: u64) -> Grid {
        Grid {
            origin,
            origin_wall_ms: wall_ms,
        }
    }

    /// The first instant strictly after `after` that lies `phase` into an
    /// interval of the wall clock.
    pub(crate) fn next_slot(&self, phase: Duration, interval: Duration, after: Instant) -> Instant {
        let span = interval.as_millis().max(1) as u64;
        let phase = phase.as_millis() as u64 % span;
        let after_ms =
            self.origin_wall_ms + after.saturating_duration_since(self.origin).as_millis() as u64;
        let mut slot = after_ms - after_ms % span + phase;
        if slot <= after_ms {
            slot += span;
        }
        self.origin + Duration::from_millis(slot - self.origin_wall_ms)
    }
}

/// How polls are timed: every `interval` at the tenant's phase, or all
/// tenants together at each time of the operator's cron `schedule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Every(Duration),
    OnTheClock,
}

impl Plan {
    fn of(settings: &PollSettings) -> Plan {
        match settings.schedule {
            Some(_) => Plan::OnTheClock,
            None => Plan::Every(settings.interval),
        }
    }
}

/// When each tenant is due next. Pure bookkeeping, no I/O: the ticker asks
/// it which tenants are due, the reload diff adds and removes them.
struct Table<T> {
    plan: Plan,
    grid: Grid,
    /// By tenant id: the tenant, its phase and its next slot (`None` on the
    /// clock's plan, where the cron job makes every tenant due).
    tenants: HashMap<Arc<str>, Due<T>>,
    /// (slot, tenant id) of every tenant with a slot, earliest first.
    slots: BTreeSet<(Instant, Arc<str>)>,
}

struct Due<T> {
    tenant: T,
    phase: Duration,
    next: Option<Instant>,
}

impl<T: Clone> Table<T> {
    fn new(plan: Plan, grid: Grid) -> Self {
        Table {
            plan,
            grid,
            tenants: HashMap::new(),
            slots: BTreeSet::new(),
        }
    }

    /// Adds or replaces `id`, polled out of its phase at `now` (start-up, a
    /// new or changed tenant): its next slot is its first at least half an
    /// interval later. `id` is kept as given (the scheduler passes the one
    /// `Arc` its tenant's poller holds).
    fn insert_polled(&mut self, id: impl Into<Arc<str>>, tenant: T, now: Instant) {
        let id: Arc<str> = id.into();
        self.remove(&id);
        let phase = match self.plan {
            Plan::Every(interval) => phase(&id, interval),
            Plan::OnTheClock => Duration::ZERO,
        };
        let next = self.handover(phase, now);
        if let Some(at) = next {
            self.slots.insert((at, Arc::clone(&id)));
        }
        self.tenants.insert(
            id,
            Due {
                tenant,
                phase,
                next,
            },
        );
    }

    fn handover(&self, phase: Duration, now: Instant) -> Option<Instant> {
        match self.plan {
            Plan::Every(interval) => Some(self.grid.next_slot(phase, interval, now + interval / 2)),
            Plan::OnTheClock => None,
        }
    }

    /// Replaces the tenant `id` holds, keeping its slot (a rebuilt poller
    /// of an unchanged tenant).
    fn replace(&mut self, id: &str, tenant: T) -> Option<T> {
        self.tenants
            .get_mut(id)
            .map(|d| std::mem::replace(&mut d.tenant, tenant))
    }

    fn remove(&mut self, id: &str) -> Option<T> {
        let (id, due) = self.tenants.remove_entry(id)?;
        if let Some(at) = due.next {
            self.slots.remove(&(at, id));
        }
        Some(due.tenant)
    }

    fn get(&self, id: &str) -> Option<&T> {
        self.tenants.get(id).map(|d| &d.tenant)
    }

    /// A new plan (`[poll]` changed): as at start-up, every tenant is
    /// polled now (returned) and takes its phase on the new interval from
    /// its first slot at least half an interval on.
    fn replan(&mut self, plan: Plan, now: Instant) -> Vec<T> {
        self.plan = plan;
        self.slots.clear();
        let mut all = Vec::with_capacity(self.tenants.len());
        let ids: Vec<Arc<str>> = self.tenants.keys().cloned().collect();
        for id in ids {
            let phase = match plan {
                Plan::Every(interval) => phase(&id, interval),
                Plan::OnTheClock => Duration::ZERO,
            };
            let next = self.handover(phase, now);
            let due = self.tenants.get_mut(&id).expect("a listed tenant");
            due.phase = phase;
            due.next = next;
            all.push(due.tenant.clone());
            if let Some(at) = next {
                self.slots.insert((at, id));
            }
        }
        all
    }

    /// The tenants whose slot has come by `now`, earliest first; each gets
    /// its next slot after `now` (slots missed while the ticker was late are
    /// not made up for: one poll, not a burst).
    fn take_due(&mut self, now: Instant) -> Vec<T> {
        let Plan::Every(interval) = self.plan else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(first) = self.slots.first() {
            if first.0 > now {
                break;
            }
            let (_, id) = self.slots.pop_first().expect("a first slot");
            let Some(due) = self.tenants.get_mut(&id) else {
                continue;
            };
            let at = self.grid.next_slot(due.phase, interval, now);
            due.next = Some(at);
            out.push(due.tenant.clone());
            self.slots.insert((at, id));
        }
        out
    }

    /// Every tenant (the cron job's "now").
    fn all(&self) -> Vec<T> {
        self.tenants.values().map(|d| d.tenant.clone()).collect()
    }
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
    /// server's count, which a reload does not reset. The key is the one
    /// `Arc` of the id that the tenant's poller, token source and table
    /// entry share.
    kept: Mutex<HashMap<Arc<str>, Kept>>,
    /// The app side of every tenant's token requests, one per app.
    apps: AppShare,
    observer: Box<dyn Observer>,
    /// `[audit]` and the retention that clamps it (`once` never audits).
    audit: RwLock<AuditPlan>,
    /// When each tenant's next self-audit is due, by tenant id.
    audit_due: Mutex<HashMap<Arc<str>, Instant>>,
    /// One self-audit at a time across tenants: low priority, spread out.
    audits: Arc<Semaphore>,
    /// Every enabled tenant whose poller loaded, and when it is due.
    table: Mutex<Table<Arc<TenantRuntime>>>,
    /// Tenants waiting for a slot, in the order they came due; the one
    /// dispatcher drains it. `None` once `once` has queued every tenant.
    queue: Mutex<Option<mpsc::UnboundedSender<Arc<TenantRuntime>>>>,
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

/// What a tenant keeps across reloads (see `Inner::kept`).
#[derive(Default)]
struct Kept {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Its budget on each API: a tenant switched to Graph starts on Graph's
    /// budget, and the MDE one it leaves is not spent by it.
    mde: Option<Arc<CallBudget>>,
    graph: Option<Arc<CallBudget>>,
}

struct TenantRuntime {
    poll: TenantPoll,
    lock: Arc<tokio::sync::Mutex<()>>,
    auth_pause: Mutex<Option<(Instant, Duration)>>,
    /// A settings fingerprint: a reload restarts the tenant when it changes.
    fingerprint: u64,
    /// In the queue: a tenant is queued once at most, so the queue never
    /// holds more than the tenants, however long the polls take.
    queued: AtomicBool,
    /// Removed or replaced by a reload: never polled again.
    retired: AtomicBool,
}

pub struct Scheduler {
    jobs: JobScheduler,
    inner: Arc<Inner>,
    /// The job of `[poll] schedule`, when one is set.
    cron_job: Option<uuid::Uuid>,
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
        // The ticker, also the heartbeat: if the scheduler wedges, it stops,
        // and so do the watchdog pings, and systemd restarts us.
        let ticker = Arc::clone(&inner);
        jobs.add(Job::new_repeated_async(TICK, move |_, _| {
            let inner = Arc::clone(&ticker);
            Box::pin(async move {
                inner.observer.progress();
                inner.tick(Instant::now());
            })
        })?)
        .await?;
        jobs.start().await?;
        let mut scheduler = Scheduler {
            jobs,
            inner,
            cron_job: None,
            poll_settings: settings.poll.clone(),
        };
        scheduler
            .replace_cron(settings.poll.schedule.as_deref())
            .await?;
        scheduler.apply_tenants(settings, true, false);
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
        let poll_changed = settings.poll != self.poll_settings;
        // The request timeout lives in each tenant's HTTP client.
        let rebuild = settings.poll.timeout != self.poll_settings.timeout;
        if poll_changed {
            if settings.poll.schedule != self.poll_settings.schedule {
                self.replace_cron(settings.poll.schedule.as_deref()).await?;
            }
            *self.inner.permits.write().expect("permits lock") =
                Arc::new(Semaphore::new(settings.poll.concurrency.max(1)));
            self.inner.env.write().expect("env lock").settings = settings.poll.clone();
            self.poll_settings = settings.poll.clone();
            // Every tenant's slot may have moved: each is polled now, as at
            // start-up (bounded by the new concurrency), then at its phase on
            // the new interval; one line of log rather than a `tenant_added`
            // per tenant.
            let all = self
                .inner
                .table
                .lock()
                .expect("table lock")
                .replan(Plan::of(&settings.poll), Instant::now());
            events::poll_settings_changed(settings.enabled_tenants().count());
            for runtime in all {
                self.inner.enqueue(runtime);
            }
        }
        self.apply_tenants(settings, false, rebuild);
        Ok(())
    }

    /// The cron job of `schedule` in place of the one running, if any.
    async fn replace_cron(&mut self, schedule: Option<&str>) -> Result<(), SchedulerError> {
        if let Some(id) = self.cron_job.take() {
            self.jobs.remove(&id).await?;
        }
        if let Some(cron) = schedule {
            let clock = Arc::clone(&self.inner);
            let id = self
                .jobs
                .add(Job::new_async(cron, move |_, _| {
                    let inner = Arc::clone(&clock);
                    Box::pin(async move { inner.on_the_clock() })
                })?)
                .await?;
            self.cron_job = Some(id);
        }
        Ok(())
    }

    /// Starts, restarts and stops tenants so that they match `settings`:
    /// `first` at start-up (nothing is "added"). A new or changed tenant is
    /// polled right away, then at its phase; with `rebuild` (a new request
    /// timeout) an unchanged one gets a new poller in its place and slot.
    fn apply_tenants(&mut self, settings: &Settings, first: bool, rebuild: bool) {
        let tenants = &settings.tenants;
        let wanted: HashMap<&str, &TenantSettings> = tenants
            .iter()
            .filter(|t| t.enabled)
            .map(|t| (t.tenant_id.as_str(), t))
            .collect();
        let inner = &self.inner;
        {
            let mut table = inner.table.lock().expect("table lock");
            let gone: Vec<Arc<str>> = table
                .tenants
                .keys()
                .filter(|id| !wanted.contains_key(&***id))
                .cloned()
                .collect();
            for id in gone {
                if let Some(old) = table.remove(&id) {
                    old.retired.store(true, Ordering::Release);
                    events::tenant_removed(&old.poll.name, &id);
                }
            }
        }
        {
            let mut health = inner.health.lock().expect("health lock");
            health.retain(|name, _| tenants.iter().any(|t| t.enabled && &t.name == name));
        }
        let now = Instant::now();
        for tenant in settings.enabled_tenants() {
            let fingerprint = fingerprint(tenant, &settings.http);
            let existing = inner
                .table
                .lock()
                .expect("table lock")
                .get(&tenant.tenant_id)
                .map(|r| r.fingerprint);
            if existing == Some(fingerprint) && !rebuild {
                continue;
            }
            // Built before the old poller goes: a new credential that does
            // not load leaves the tenant polling with the one it had.
            let runtime = match runtime(inner, tenant, fingerprint) {
                Ok(r) => Arc::new(r),
                Err(e) => {
                    events::tenant_credential_invalid(&tenant.name, &e, existing.is_some());
                    if existing.is_none() {
                        set_health(inner, &tenant.name, Health::Failing(e.summary()));
                    }
                    continue;
                }
            };
            if existing == Some(fingerprint) {
                // Same tenant, new client: it keeps its slot, unpolled now.
                let mut table = inner.table.lock().expect("table lock");
                if let Some(old) = table.replace(&tenant.tenant_id, runtime) {
                    old.retired.store(true, Ordering::Release);
                }
                continue;
            }
            if existing.is_some() {
                events::tenant_changed(&tenant.name);
            } else if !first {
                events::tenant_added(&tenant.name);
            }
            {
                let mut table = inner.table.lock().expect("table lock");
                if let Some(old) = table.remove(&tenant.tenant_id) {
                    old.retired.store(true, Ordering::Release);
                }
                table.insert_polled(
                    Arc::clone(&runtime.poll.tenant_id),
                    Arc::clone(&runtime),
                    now,
                );
            }
            inner
                .health
                .lock()
                .expect("health lock")
                .entry(tenant.name.clone())
                .or_insert(Health::Pending);
            // Polled right away; its phase takes over from the next slot.
            inner.enqueue(runtime);
        }
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

/// Records `name`'s health and tells the observer, under the lock: a copy
/// of every tenant's health per poll would cost O(tenants) allocations each
/// time, O(tenants²) a cycle.
fn set_health(inner: &Inner, name: &str, health: Health) {
    let mut map = inner.health.lock().expect("health lock");
    match map.get_mut(name) {
        Some(h) => *h = health,
        None => {
            map.insert(name.to_owned(), health);
        }
    }
    inner.observer.cycle(&map);
}

impl Inner {
    fn new(
        settings: &Settings,
        env: PollEnv,
        observer: Box<dyn Observer>,
        cancel: CancellationToken,
    ) -> Result<Arc<Inner>, SchedulerError> {
        let http = crate::http::client(&settings.http, settings.poll.timeout)?;
        let (queue, queued) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            permits: RwLock::new(Arc::new(Semaphore::new(settings.poll.concurrency.max(1)))),
            env: RwLock::new(env),
            http: RwLock::new(http),
            cancel,
            tracker: TaskTracker::new(),
            health: Mutex::new(BTreeMap::new()),
            kept: Mutex::new(HashMap::new()),
            apps: AppShare::default(),
            observer,
            audit: RwLock::new(AuditPlan::of(settings)),
            audit_due: Mutex::new(HashMap::new()),
            audits: Arc::new(Semaphore::new(1)),
            table: Mutex::new(Table::new(Plan::of(&settings.poll), Grid::now())),
            queue: Mutex::new(Some(queue)),
        });
        inner.tracker.spawn(dispatch(
            Arc::downgrade(&inner),
            queued,
            inner.cancel.clone(),
        ));
        Ok(inner)
    }

    /// The ticker: every tenant whose slot has come goes to the queue.
    fn tick(&self, now: Instant) {
        if self.cancel.is_cancelled() {
            return;
        }
        let due = self.table.lock().expect("table lock").take_due(now);
        for runtime in due {
            self.enqueue(runtime);
        }
    }

    /// The cron job: every tenant is due now.
    fn on_the_clock(&self) {
        if self.cancel.is_cancelled() {
            return;
        }
        let all = self.table.lock().expect("table lock").all();
        for runtime in all {
            self.enqueue(runtime);
        }
    }

    /// Queues `runtime` for a poll, unless it is queued already.
    fn enqueue(&self, runtime: Arc<TenantRuntime>) {
        if runtime.queued.swap(true, Ordering::AcqRel) {
            events::poll_skipped(&runtime.poll.name, "still waiting for a slot", None);
            return;
        }
        if let Some(queue) = self.queue.lock().expect("queue lock").as_ref() {
            let _ = queue.send(runtime);
        }
    }
}

/// The dispatcher: takes queued tenants in order and starts each one's poll
/// once a slot is free, so at most `concurrency` polls (and their memory)
/// exist at once, however many tenants are due. Holds the scheduler weakly:
/// it ends when the scheduler is gone, cancelled, or (`once`) the queue is
/// closed and drained.
async fn dispatch(
    inner: std::sync::Weak<Inner>,
    mut queue: mpsc::UnboundedReceiver<Arc<TenantRuntime>>,
    cancel: CancellationToken,
) {
    loop {
        let runtime = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            next = queue.recv() => match next {
                Some(r) => r,
                None => return,
            },
        };
        runtime.queued.store(false, Ordering::Release);
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if runtime.retired.load(Ordering::Acquire) {
            continue;
        }
        let Some(guard) = ready(&runtime) else {
            continue;
        };
        let permits = inner.permits.read().expect("permits lock").clone();
        let slot = tokio::select! {
            s = crate::slots::take(permits) => s,
            _ = cancel.cancelled() => return,
        };
        let task = Arc::clone(&inner);
        inner.tracker.spawn(poll_one(task, runtime, guard, slot));
    }
}

/// The tenant's lock, unless a poll of it runs, it is paused for a
/// credential problem, or the API's `Retry-After` holds.
fn ready(runtime: &TenantRuntime) -> Option<tokio::sync::OwnedMutexGuard<()>> {
    let name = &runtime.poll.name;
    let Ok(guard) = runtime.lock.clone().try_lock_owned() else {
        events::poll_skipped(name, "previous poll still running", None);
        return None;
    };
    if let Some((until, _)) = *runtime.auth_pause.lock().expect("pause lock") {
        if Instant::now() < until {
            events::poll_skipped(name, "paused after a credential error", None);
            return None;
        }
    }
    if let Some(left) = runtime.poll.api.blocked_for() {
        events::poll_skipped(
            name,
            "the API's Retry-After still holds",
            Some(left.as_secs()),
        );
        return None;
    }
    Some(guard)
}

/// One poll of one tenant, holding its lock and a slot.
async fn poll_one(
    inner: Arc<Inner>,
    runtime: Arc<TenantRuntime>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
    slot: crate::slots::Slot,
) {
    let name = &runtime.poll.name;
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
                    None => env.settings.interval,
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

/// The one way a tenant's poller is built (`run`, `once`, `check` and the
/// tests): its token source and its alerts API on `http`, counting calls
/// against `budget`. Nothing here fails: the credential was loaded and checked
/// with the config.
pub fn tenant_poll(
    http: &reqwest::Client,
    tenant: &TenantSettings,
    budget: Arc<CallBudget>,
) -> TenantPoll {
    build_poll(http, tenant, budget, tenant.token_request())
}

/// [`tenant_poll`] with the token request given: the scheduler's, whose app
/// side is shared with the other tenants of the app.
fn build_poll(
    http: &reqwest::Client,
    tenant: &TenantSettings,
    budget: Arc<CallBudget>,
    request: TokenRequest,
) -> TenantPoll {
    let name = Arc::clone(&request.tenant);
    let tenant_id = Arc::clone(&request.tenant_id);
    // The token request carries the scope of the tenant's source.
    let tokens = Arc::new(TokenSource::new(http.clone(), request));
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
        name,
        tenant_id,
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
    fingerprint: u64,
) -> Result<TenantRuntime, AuthError> {
    let http = inner.http.read().expect("http lock").clone();
    let (tenant_id, lock, budget) = {
        let mut kept = inner.kept.lock().expect("kept lock");
        let id: Arc<str> = match kept.get_key_value(tenant.tenant_id.as_str()) {
            Some((id, _)) => Arc::clone(id),
            None => tenant.tenant_id.as_str().into(),
        };
        let k = kept.entry(Arc::clone(&id)).or_default();
        let budget = match tenant.source {
            AlertSource::Mde => &mut k.mde,
            AlertSource::Graph => &mut k.graph,
        }
        .get_or_insert_with(|| Arc::new(budget_for(tenant.source)));
        (id, Arc::clone(&k.lock), Arc::clone(budget))
    };
    let request = TokenRequest {
        tenant: tenant.name.as_str().into(),
        tenant_id,
        app: inner.apps.share(tenant.token_app()),
    };
    Ok(TenantRuntime {
        poll: build_poll(&http, tenant, budget, request),
        lock,
        auth_pause: Mutex::new(None),
        fingerprint,
        queued: AtomicBool::new(false),
        retired: AtomicBool::new(false),
    })
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
                    let spread = every.min(env.settings.interval).as_millis().max(1) as u64;
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
    let credential = t.credential.digest();
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

/// `once`: one poll of every enabled tenant, without the ticker: the same
/// queue and dispatcher, the same logging, `concurrency` at a time. Returns
/// each tenant's health afterwards; a tenant `cancel` stopped stays `Pending`.
pub(crate) async fn poll_all_once(
    settings: &Settings,
    env: PollEnv,
    cancel: &CancellationToken,
) -> Result<BTreeMap<String, Health>, SchedulerError> {
    let inner = Inner::new(settings, env, Box::new(()), cancel.clone())?;
    // `once` polls; auditing is the daemon's (or `mde-poller audit`'s).
    inner.audit.write().expect("audit lock").every = None;
    for tenant in settings.enabled_tenants() {
        match runtime(&inner, tenant, 0) {
            Ok(runtime) => {
                set_health(&inner, &tenant.name, Health::Pending);
                inner.enqueue(Arc::new(runtime));
            }
            Err(e) => {
                events::tenant_credential_invalid(&tenant.name, &e, false);
                set_health(&inner, &tenant.name, Health::Failing(e.summary()));
            }
        }
    }
    // Every tenant queued: the dispatcher ends once it has started them all.
    inner.queue.lock().expect("queue lock").take();
    inner.tracker.close();
    inner.tracker.wait().await;
    let health = inner.health.lock().expect("health lock").clone();
    Ok(health)
}

#[cfg(test)]
mod phase_tests {
    use super::*;

    const MIN5: Duration = Duration::from_secs(300);

    /// Tenant ids as the config has them: GUIDs, here made up.
    fn ids(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("{i:08x}-bbbb-4ccc-8ddd-{:012x}", i * 7919))
            .collect()
    }

    /// Wall-clock milliseconds of `at` on `grid`.
    fn wall_ms(grid: &Grid, at: Instant) -> u64 {
        grid.origin_wall_ms + (at - grid.origin).as_millis() as u64
    }

    #[test]
    fn phases_of_5000_tenants_put_no_second_of_5_minutes_above_2_percent() {
        let mut per_second = vec![0usize; 300];
        for id in ids(5000) {
            let p = phase(&id, MIN5);
            assert!(p < MIN5);
            per_second[p.as_secs() as usize] += 1;
        }
        let max = *per_second.iter().max().unwrap();
        // 2 % of 5,000 is 100; the mean is 16.7 a second.
        assert!(max <= 100, "{max} tenants in one second");
        assert!(per_second.iter().all(|&n| n > 0), "an empty second");
        // The same tenant, the same phase: a restart or reload keeps it.
        assert_eq!(phase("contoso-id", MIN5), phase("contoso-id", MIN5));
    }

    #[test]
    fn a_slot_is_the_phase_into_an_interval_of_the_wall_clock() {
        let t0 = Instant::now();
        // 7.5 s into a 5-minute interval of the wall clock (1.8e12 ms
        // since the epoch is a multiple of 5 minutes).
        let wall = 1_800_000_000_000 + 7_500;
        let grid = Grid::at(t0, wall);
        let phase = Duration::from_secs(60);
        let next = grid.next_slot(phase, MIN5, t0);
        assert_eq!(next - t0, Duration::from_millis(52_500));
        // Strictly after: at a slot, the next one is an interval on.
        assert_eq!(grid.next_slot(phase, MIN5, next), next + MIN5);
        // Another process started elsewhere in the interval finds the same
        // wall-clock slot.
        let later = Grid::at(t0, wall + 123_456);
        let other = later.next_slot(phase, MIN5, t0);
        assert_eq!(wall_ms(&later, other) % 300_000, 60_000);
    }

    #[tokio::test(start_paused = true)]
    async fn start_up_poll_then_every_interval_at_the_tenant_phase() {
        let t0 = Instant::now();
        let grid = Grid::at(t0, 1_800_000_000_000);
        let mut table = Table::new(Plan::Every(MIN5), grid);
        let tenants = ids(5000);
        for id in &tenants {
            table.insert_polled(id.as_str(), id.clone(), t0);
        }
        // The ticker once a second for 20 minutes.
        let mut polls: HashMap<String, Vec<Instant>> = HashMap::new();
        let mut per_second: HashMap<u64, usize> = HashMap::new();
        for s in 1..=1200u64 {
            let now = t0 + Duration::from_secs(s);
            let due = table.take_due(now);
            *per_second.entry(s).or_default() += due.len();
            for id in due {
                polls.entry(id).or_default().push(now);
            }
        }
        for id in &tenants {
            let times = &polls[id];
            // Start-up was t0: the first slot comes half an interval to one
            // and a half intervals later, then one slot per interval.
            let first = times[0] - t0;
            assert!(
                first >= MIN5 / 2 && first <= MIN5 * 3 / 2 + TICK,
                "{id}: first slot {first:?} after start-up"
            );
            for pair in times.windows(2) {
                assert_eq!(pair[1] - pair[0], MIN5, "{id}: {times:?}");
            }
            // At its phase on the wall clock (within the ticker's second).
            let offset = wall_ms(&grid, times[0]) % 300_000;
            let p = phase(id, MIN5).as_millis() as u64;
            let late = (offset + 300_000 - p) % 300_000;
            assert!(late < 1000, "{id}: {offset} vs {p}");
        }
        let max = per_second.values().max().copied().unwrap();
        assert!(max <= 100, "{max} tenants due in one second (2 % is 100)");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_ticker_polls_once_not_once_per_missed_slot() {
        let t0 = Instant::now();
        let interval = Duration::from_secs(10);
        let mut table = Table::new(Plan::Every(interval), Grid::at(t0, 0));
        table.insert_polled("a", "a", t0);
        // Asleep for a minute: six slots passed.
        let now = t0 + Duration::from_secs(60);
        assert_eq!(table.take_due(now), ["a"]);
        assert!(table.take_due(now).is_empty());
        let next = table.tenants["a"].next.unwrap();
        assert!(next > now && next <= now + interval);
    }

    #[tokio::test(start_paused = true)]
    async fn adding_or_removing_a_tenant_moves_no_other_tenant() {
        let t0 = Instant::now();
        let mut table = Table::new(Plan::Every(MIN5), Grid::at(t0, 0));
        for id in ids(50) {
            table.insert_polled(id.as_str(), id.clone(), t0);
        }
        let before: Vec<_> = ids(50)
            .iter()
            .map(|id| table.tenants[id.as_str()].next)
            .collect();
        let later = t0 + Duration::from_secs(100);
        table.insert_polled("new-tenant", "new-tenant".into(), later);
        table.remove(&ids(50)[7]);
        for (i, id) in ids(50).iter().enumerate() {
            if i != 7 {
                assert_eq!(table.tenants[id.as_str()].next, before[i], "{id}");
            }
        }
        assert!(!table.slots.iter().any(|(_, id)| **id == ids(50)[7]));
        assert_eq!(table.slots.len(), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_interval_polls_every_tenant_now_then_at_its_new_phase() {
        let t0 = Instant::now();
        let grid = Grid::at(t0, 0);
        let mut table = Table::new(Plan::Every(MIN5), grid);
        for id in ids(100) {
            table.insert_polled(id.as_str(), id.clone(), t0);
        }
        let minute = Duration::from_secs(60);
        let now = t0 + Duration::from_secs(30);
        assert_eq!(table.replan(Plan::Every(minute), now).len(), 100);
        assert!(table.take_due(now).is_empty(), "no second poll now");
        for id in ids(100) {
            let next = table.tenants[id.as_str()].next.unwrap();
            assert!(next >= now + minute / 2 && next < now + minute * 3 / 2);
            assert_eq!(
                wall_ms(&grid, next) % 60_000,
                phase(&id, minute).as_millis() as u64
            );
        }
        // On the clock: no slots, the cron job makes everyone due.
        assert_eq!(table.replan(Plan::OnTheClock, now).len(), 100);
        assert!(table.take_due(now + MIN5).is_empty());
        assert_eq!(table.all().len(), 100);
    }
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
