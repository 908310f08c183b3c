//! The one simulator of Entra ID's token endpoint, the Defender for Endpoint
//! alerts API and Microsoft Graph's `alerts_v2`, on loopback, for the
//! integration tests, `mde-poller demo` and the benchmark.
//!
//! It behaves like the real service wherever a client could get it wrong
//! (see `API-NOTES.md`): AADSTS errors in Entra's exact shape, tokens that
//! expire, 401/403, the OData filter at 100 ns precision, results in no time
//! order, `$skip` that is unreliable over changing data, the per-app-and-tenant
//! call budget with `Retry-After`, late arrivals, and injected faults.
//!
//! Layout: [`server`] axum routes; [`odata`] the filter; [`alerts`] storage,
//! generator and query; [`tokens`] Entra errors, issued tokens, assertions;
//! [`faults`]; [`ratelimit`].

mod alerts;
mod client;
mod faults;
mod graph;
mod odata;
mod ratelimit;
mod server;
mod tokens;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

pub(crate) use alerts::AlertError;
pub use client::ClientConfig;
use faults::ApiFault;
pub use faults::Faults;
pub use graph::ServiceSource;

use crate::timestamp::Timestamp;

/// How the simulated service behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Lifetime of issued access tokens (`expires_in`), on the wall clock.
    pub token_lifetime: Duration,
    /// API calls accepted per (client id, tenant) in any sliding minute; 0 = no limit.
    pub per_minute: u32,
    /// …and in any sliding hour; 0 = no limit.
    pub per_hour: u32,
    /// Faults applied to every tenant that has none of its own.
    pub faults: Faults,
    /// Seeds the alert generator, the fault draws and the result order.
    pub seed: u64,
    /// Server-driven paging: at most this many alerts per answer, the rest of
    /// `$top` behind an `@odata.nextLink`. Microsoft does not document this for
    /// `/api/alerts`, but a client must follow a nextLink if one ever comes.
    pub server_page: Option<usize>,
    /// Graph's own call budget per (client id, tenant) in any sliding minute;
    /// 0 = no limit. Counted apart from `per_minute` / `per_hour`.
    pub graph_per_minute: u32,
    /// Graph serves at most this many alerts a page whatever `$top` asks
    /// (below Graph's own cap of 1,000), silently: a server that serves fewer
    /// than asked. Per tenant: [`Simulator::set_graph_clamp`].
    pub graph_clamp: Option<usize>,
    /// Time every answer of either alerts API takes.
    pub latency: Latency,
    /// `Some(status)`: `/api/alerts` answers every call with that status (404
    /// or 410 as a retired endpoint would, or e.g. 403) and a body naming the
    /// retirement. Changeable at run time: [`Simulator::set_mde_retired`].
    pub mde_retired: Option<u16>,
}

/// How long an answer of an alerts API takes: `fixed` plus `per_alert` for
/// each alert it serves (issue 10's latency-bound benchmark: e.g. 300 ms +
/// 50 µs). Slept on tokio's timer, so it never blocks the runtime and paused
/// test time skips it. Zero by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    pub fixed: Duration,
    pub per_alert: Duration,
}

impl Latency {
    pub(crate) fn for_alerts(&self, n: usize) -> Duration {
        self.fixed.saturating_add(
            self.per_alert
                .saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)),
        )
    }
}

/// Which alerts API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Api {
    /// `GET /api/alerts`, tokens with `aud` `https://api.securitycenter.microsoft.com`.
    Mde,
    /// `GET /v1.0/security/alerts_v2`, tokens with `aud` `https://graph.microsoft.com`.
    Graph,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            token_lifetime: Duration::from_secs(3599),
            per_minute: 100,
            per_hour: 1500,
            faults: Faults::none(),
            seed: 0x5eed,
            server_page: None,
            graph_per_minute: 150,
            graph_clamp: None,
            latency: Latency::default(),
            mde_retired: None,
        }
    }
}

/// An application registration (the partner's multi-tenant app).
#[derive(Debug, Clone, Default)]
pub struct SimApp {
    pub client_id: String,
    pub secret: Option<String>,
    /// The secret exists but is past its end date (AADSTS7000222).
    pub secret_expired: bool,
    /// The uploaded certificate (PEM; a key block beside it is ignored).
    /// One that does not parse makes every assertion fail with AADSTS700027.
    pub certificate_pem: Option<String>,
    /// Disabled as an enterprise app in customer tenants (AADSTS7000112).
    pub disabled: bool,
}

impl SimApp {
    pub fn with_secret(client_id: impl Into<String>, secret: impl Into<String>) -> Self {
        SimApp {
            client_id: client_id.into(),
            secret: Some(secret.into()),
            ..SimApp::default()
        }
    }
}

/// A customer tenant.
#[derive(Debug, Clone, Default)]
pub struct SimTenant {
    /// A GUID; requests for any other tenant get AADSTS90002.
    pub tenant_id: String,
    /// Client ids whose admin consent this tenant granted.
    pub consented_apps: Vec<String>,
    /// Application roles granted, of either API: WindowsDefenderATP's (e.g.
    /// `Alert.Read.All`) and Microsoft Graph's (`SecurityAlert.Read.All`, …;
    /// the list is `tokens::GRAPH_ROLES`). A token carries only the roles of
    /// the API it is for; none → no `roles` claim and that API answers 403.
    pub roles: Vec<String>,
    /// Whether the tenant has Defender for Endpoint (else AADSTS500011).
    pub has_mde: bool,
}

impl SimTenant {
    /// A tenant with MDE that consented to `client_id` with `Alert.Read.All`.
    pub fn consented(tenant_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        SimTenant {
            tenant_id: tenant_id.into(),
            consented_apps: vec![client_id.into()],
            roles: vec!["Alert.Read.All".into()],
            has_mde: true,
        }
    }

    /// A tenant that consented to `client_id` with Graph's
    /// `SecurityAlert.Read.All` only (its MDE tokens carry no role).
    pub fn graph(tenant_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self::consented(tenant_id, client_id).with_roles(&["SecurityAlert.Read.All"])
    }

    /// A tenant with both `Alert.Read.All` and `SecurityAlert.Read.All`: a
    /// tenant moving from MDE to Graph.
    #[cfg(test)]
    pub(crate) fn both(tenant_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self::consented(tenant_id, client_id)
            .with_roles(&["Alert.Read.All", "SecurityAlert.Read.All"])
    }

    pub(crate) fn with_roles(mut self, roles: &[&str]) -> Self {
        self.roles = roles.iter().map(|r| (*r).to_owned()).collect();
        self
    }
}

/// Live activity for the demo: every `every`, `new` alerts appear and
/// `updates` existing ones change, stamped about now; a `late_fraction` of the
/// new ones arrive late, stamped up to `max_late` in the past.
#[derive(Debug, Clone)]
pub(crate) struct Activity {
    pub every: Duration,
    pub new: u32,
    pub updates: u32,
    pub late_fraction: f64,
    pub max_late: Duration,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            every: Duration::from_secs(2),
            new: 3,
            updates: 1,
            late_fraction: 0.2,
            max_late: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Token,
    /// `GET /api/alerts`.
    Alerts,
    /// `GET /v1.0/security/alerts_v2`.
    GraphAlerts,
}

/// One request the simulator answered, for tests to assert on.
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub at: SystemTime,
    pub at_instant: tokio::time::Instant,
    pub kind: RequestKind,
    /// The tenant in the token path, or the tenant of the bearer token.
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub status: u16,
    /// `$filter`, URL-decoded.
    pub filter: Option<String>,
    pub top: Option<u32>,
    pub skip: Option<u32>,
    /// `Retry-After` sent, in seconds (an HTTP-date form counts as its delay).
    pub retry_after: Option<u64>,
    /// The `User-Agent` header, if any (the partner convention is checked on it).
    pub user_agent: Option<String>,
    /// The `Prefer` header, if any (`include-unknown-enum-members` on Graph).
    pub prefer: Option<String>,
    /// Token requests: the resource asked (`scope` without `/.default`, or v1's
    /// `resource`), as sent.
    pub scope: Option<String>,
    /// Alert requests: how many alerts the answer carried (`None` unless 200).
    pub served: Option<usize>,
    /// Graph: whether the answer carried an `@odata.nextLink`.
    pub next_link: bool,
}

pub(crate) struct AppEntry {
    app: SimApp,
    certs: Vec<tokens::AppCert>,
}

/// The options a test may change while the simulator runs.
pub(crate) struct Knobs {
    latency: Latency,
    graph_clamp: Option<usize>,
    graph_clamp_per_tenant: HashMap<String, Option<usize>>,
    mde_retired: Option<u16>,
}

pub(crate) struct FaultConfig {
    global: Faults,
    per_tenant: HashMap<String, Faults>,
    /// Per tenant: its alerts requests since its faults were set, the count
    /// `Faults::throttle_at` numbers.
    alerts_requests: HashMap<String, u64>,
}

/// Everything the routes and the handle share.
pub(crate) struct Shared {
    opts: SimOptions,
    base_url: String,
    apps: RwLock<HashMap<String, AppEntry>>,
    tenants: RwLock<HashMap<String, SimTenant>>,
    alerts: RwLock<HashMap<String, alerts::AlertSet>>,
    tokens: Mutex<HashMap<String, tokens::IssuedToken>>,
    limiter: ratelimit::RateLimiter,
    graph_limiter: ratelimit::RateLimiter,
    knobs: Mutex<Knobs>,
    faults: Mutex<FaultConfig>,
    rng: Mutex<StdRng>,
    requests: Mutex<Vec<RequestRecord>>,
    retry_after_flip: AtomicU64,
    shutdown: watch::Receiver<bool>,
}

/// Locks, ignoring poisoning: a panicking test thread must not take every
/// later request down with it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn faults_for(&self, tenant_id: Option<&str>) -> Faults {
        let f = lock(&self.faults);
        tenant_id
            .and_then(|t| f.per_tenant.get(t))
            .unwrap_or(&f.global)
            .clone()
    }

    /// The faults of one authenticated alerts request of `tenant`, whether it
    /// stalls, and the failure it gets (scheduled or drawn); counts the request.
    pub(crate) fn alerts_fault(&self, tenant: &str) -> (Faults, bool, ApiFault) {
        let (faults, n) = {
            let mut f = lock(&self.faults);
            let n = f.alerts_requests.entry(tenant.to_owned()).or_default();
            *n += 1;
            let n = *n;
            (f.per_tenant.get(tenant).unwrap_or(&f.global).clone(), n)
        };
        let (stall, fault) = faults.api_fault(n, &mut *lock(&self.rng));
        (faults, stall, fault)
    }

    pub(crate) fn latency(&self) -> Latency {
        lock(&self.knobs).latency
    }

    pub(crate) fn graph_clamp(&self, tenant_id: &str) -> Option<usize> {
        let k = lock(&self.knobs);
        k.graph_clamp_per_tenant
            .get(tenant_id)
            .copied()
            .unwrap_or(k.graph_clamp)
    }

    pub(crate) fn mde_retired(&self) -> Option<u16> {
        lock(&self.knobs).mde_retired
    }

    pub(crate) fn record(&self, r: RequestRecord) {
        lock(&self.requests).push(r);
    }

    fn update(&self, tenant_id: &str, id: &str, at: Timestamp) -> bool {
        let mut rng = lock(&self.rng);
        write(&self.alerts)
            .get_mut(tenant_id)
            .is_some_and(|set| set.update(&mut *rng, id, at))
    }
}

struct Handle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A running simulator. Cheap to clone; stops on [`Simulator::shutdown`] or
/// when the last clone is dropped.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Handle>,
}

impl Simulator {
    /// Serves on `127.0.0.1` on a free port, on the current tokio runtime.
    pub fn start(opts: SimOptions) -> std::io::Result<Simulator> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), opts)
    }

    /// Serves on `addr`, on the current tokio runtime (panics outside one).
    pub(crate) fn start_on(addr: SocketAddr, opts: SimOptions) -> std::io::Result<Simulator> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            apps: RwLock::default(),
            tenants: RwLock::default(),
            alerts: RwLock::default(),
            tokens: Mutex::default(),
            limiter: ratelimit::RateLimiter::new(opts.per_minute, opts.per_hour),
            graph_limiter: ratelimit::RateLimiter::new(opts.graph_per_minute, 0),
            knobs: Mutex::new(Knobs {
                latency: opts.latency,
                graph_clamp: opts.graph_clamp,
                graph_clamp_per_tenant: HashMap::new(),
                mde_retired: opts.mde_retired,
            }),
            faults: Mutex::new(FaultConfig {
                global: opts.faults.clone(),
                per_tenant: HashMap::new(),
                alerts_requests: HashMap::new(),
            }),
            rng: Mutex::new(StdRng::seed_from_u64(opts.seed)),
            requests: Mutex::default(),
            retry_after_flip: AtomicU64::new(0),
            shutdown: stopped.clone(),
            opts,
        });
        let app = server::router(shared.clone());
        let mut on_stop = stopped;
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = on_stop.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "simulator server stopped");
            }
        });
        Ok(Simulator {
            inner: Arc::new(Handle { shared, addr, stop }),
        })
    }

    /// `http://127.0.0.1:PORT`: the login URL, the MDE API URL and the Graph
    /// URL at once.
    pub fn url(&self) -> String {
        self.inner.shared.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Stops accepting, lets answers in flight finish, ends live activity.
    pub fn shutdown(&self) {
        let _ = self.inner.stop.send(true);
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    pub fn add_app(&self, app: SimApp) {
        let certs = app
            .certificate_pem
            .as_deref()
            .and_then(|p| tokens::AppCert::from_pem(p).ok())
            .into_iter()
            .collect();
        write(&self.shared().apps).insert(app.client_id.clone(), AppEntry { app, certs });
    }

    pub fn add_tenant(&self, tenant: SimTenant) {
        write(&self.shared().tenants).insert(tenant.tenant_id.to_ascii_lowercase(), tenant);
    }

    /// Grants or revokes a tenant's consent to an app (tokens already issued
    /// stay valid until they expire, as in Entra).
    #[cfg(test)]
    pub(crate) fn set_consent(&self, tenant_id: &str, client_id: &str, consented: bool) {
        if let Some(t) = write(&self.shared().tenants).get_mut(&tenant_id.to_ascii_lowercase()) {
            t.consented_apps.retain(|c| c != client_id);
            if consented {
                t.consented_apps.push(client_id.to_owned());
            }
        }
    }

    /// Invalidates every token issued for a tenant before it expires, as a key
    /// rollover or an admin's session revocation does: the API answers 401 to
    /// them and a client must fetch a new token.
    pub fn revoke_tokens(&self, tenant_id: &str) -> usize {
        let tenant_id = tenant_id.to_ascii_lowercase();
        let mut tokens = self.shared().tokens.lock().expect("tokens lock");
        let before = tokens.len();
        tokens.retain(|_, t| t.tenant_id.to_ascii_lowercase() != tenant_id);
        before - tokens.len()
    }

    /// Changes the latency of both alerts APIs from the next answer on.
    pub fn set_latency(&self, latency: Latency) {
        lock(&self.shared().knobs).latency = latency;
    }

    /// Graph's page clamp for one tenant, or for every tenant without its own
    /// (`None`); `clamp` `None` serves up to 1,000 as asked.
    pub fn set_graph_clamp(&self, tenant_id: Option<&str>, clamp: Option<usize>) {
        let mut k = lock(&self.shared().knobs);
        match tenant_id {
            Some(t) => {
                k.graph_clamp_per_tenant.insert(t.to_owned(), clamp);
            }
            None => k.graph_clamp = clamp,
        }
    }

    /// Retires `/api/alerts` (`Some(404)`, `Some(410)`, …) or brings it back.
    pub fn set_mde_retired(&self, status: Option<u16>) {
        lock(&self.shared().knobs).mde_retired = status;
    }

    /// Faults for one tenant, or for every tenant without its own (`None`).
    /// The requests those faults apply to are counted afresh from here, so
    /// `throttle_at: vec![1]` throttles the next alerts request.
    pub fn set_faults(&self, tenant_id: Option<&str>, faults: Faults) {
        let mut f = lock(&self.shared().faults);
        match tenant_id {
            Some(t) => {
                f.per_tenant.insert(t.to_owned(), faults);
                f.alerts_requests.remove(t);
            }
            None => {
                f.global = faults;
                let FaultConfig {
                    per_tenant,
                    alerts_requests,
                    ..
                } = &mut *f;
                alerts_requests.retain(|t, _| per_tenant.contains_key(t));
            }
        }
    }

    /// `count` new alerts with `lastUpdateTime` uniform in `[from, to)`; their ids.
    pub fn generate_alerts(
        &self,
        tenant_id: &str,
        count: usize,
        from: Timestamp,
        to: Timestamp,
    ) -> Vec<String> {
        let shared = self.shared();
        let mut rng = lock(&shared.rng);
        let mut sets = write(&shared.alerts);
        let set = sets.entry(tenant_id.to_owned()).or_default();
        let span = (to.ticks() - from.ticks()).max(1);
        (0..count)
            .map(|_| {
                let at = Timestamp::from_ticks(from.ticks() + rng.gen_range(0..span));
                set.generate_one(&mut *rng, tenant_id, at, from)
            })
            .collect()
    }

    /// `count` new alerts only Graph has, of the products in `sources` (each
    /// alert one drawn at random; empty = every product but MDE), with
    /// `lastUpdateDateTime` uniform in `[from, to)`; their ids.
    /// `ServiceSource::DefenderForEndpoint` in `sources` makes MDE alerts,
    /// visible through both APIs, as [`Simulator::generate_alerts`] does.
    pub fn generate_graph_alerts(
        &self,
        tenant_id: &str,
        count: usize,
        from: Timestamp,
        to: Timestamp,
        sources: &[ServiceSource],
    ) -> Vec<String> {
        let sources: &[ServiceSource] = if sources.is_empty() {
            &ServiceSource::GRAPH_ONLY
        } else {
            sources
        };
        let shared = self.shared();
        let mut rng = lock(&shared.rng);
        let mut sets = write(&shared.alerts);
        let set = sets.entry(tenant_id.to_owned()).or_default();
        let span = (to.ticks() - from.ticks()).max(1);
        (0..count)
            .map(|_| {
                let at = Timestamp::from_ticks(from.ticks() + rng.gen_range(0..span));
                let source = sources[rng.gen_range(0..sources.len())];
                set.generate_source(&mut *rng, tenant_id, source, at, from)
            })
            .collect()
    }

    /// Makes a caller-built alert in Graph's shape visible to alerts_v2 only
    /// (replacing one with the same id). It needs a string `id` and an ISO 8601
    /// `lastUpdateDateTime`; `createdDateTime` and `serviceSource` (default
    /// `unknown`) feed the filter; its text is served verbatim, except that an
    /// evolvable `serviceSource` / `detectionSource` is masked as
    /// `unknownFutureValue` to a caller without the Prefer header.
    #[cfg(test)]
    pub(crate) fn insert_graph_alert(
        &self,
        tenant_id: &str,
        alert: serde_json::Value,
    ) -> Result<(), AlertError> {
        write(&self.shared().alerts)
            .entry(tenant_id.to_owned())
            .or_default()
            .insert_graph_value(&alert)
            .map(drop)
    }

    /// Makes a caller-built alert visible (replacing one with the same id).
    /// It needs a string `id` and an ISO 8601 `lastUpdateTime`; its text is
    /// served verbatim, `evidence` only with `$expand=evidence`.
    pub fn insert_alert(
        &self,
        tenant_id: &str,
        alert: serde_json::Value,
    ) -> Result<(), AlertError> {
        write(&self.shared().alerts)
            .entry(tenant_id.to_owned())
            .or_default()
            .insert_value(alert)
            .map(drop)
    }

    /// Moves an alert on (New → InProgress → Resolved, with a comment) and
    /// stamps it `at`; false if unknown or `at` is not after its current time.
    pub fn update_alert(&self, tenant_id: &str, id: &str, at: Timestamp) -> bool {
        self.shared().update(tenant_id, id, at)
    }

    /// Every `(id, lastUpdateDateTime)` alerts_v2 ever made visible (MDE
    /// alerts and those only Graph has), in order, times as written.
    pub fn graph_versions(&self, tenant_id: &str) -> Vec<(String, String)> {
        read(&self.shared().alerts)
            .get(tenant_id)
            .map(|s| s.graph_versions())
            .unwrap_or_default()
    }

    /// The live alerts in Graph's shape (unmasked), in no particular order.
    pub fn graph_current(&self, tenant_id: &str) -> Vec<serde_json::Value> {
        read(&self.shared().alerts)
            .get(tenant_id)
            .map(|s| s.graph_current())
            .unwrap_or_default()
    }

    /// Renders the Graph form of every alert of a tenant now (it is otherwise
    /// rendered on its first Graph read), so a benchmark's timed run pays a
    /// copy per alert, not a conversion.
    pub fn prepare_graph(&self, tenant_id: &str) {
        if let Some(s) = read(&self.shared().alerts).get(tenant_id) {
            s.render_graph();
        }
    }

    /// Every `(id, lastUpdateTime)` `/api/alerts` ever made visible, in order,
    /// times as written (alerts only Graph has are not in it).
    #[cfg(test)]
    pub(crate) fn versions(&self, tenant_id: &str) -> Vec<(String, String)> {
        read(&self.shared().alerts)
            .get(tenant_id)
            .map(|s| s.versions())
            .unwrap_or_default()
    }

    /// The live MDE alerts, with evidence, in no particular order.
    pub fn current(&self, tenant_id: &str) -> Vec<serde_json::Value> {
        read(&self.shared().alerts)
            .get(tenant_id)
            .map(|s| s.current())
            .unwrap_or_default()
    }

    #[cfg(test)]
    pub(crate) fn alert_count(&self, tenant_id: &str) -> usize {
        read(&self.shared().alerts)
            .get(tenant_id)
            .map_or(0, |s| s.len())
    }

    /// Creates and updates alerts in the background until shutdown.
    pub(crate) fn spawn_activity(
        &self,
        tenant_id: &str,
        activity: Activity,
    ) -> tokio::task::JoinHandle<()> {
        let shared = self.inner.shared.clone();
        let tenant = tenant_id.to_owned();
        let mut stop = shared.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(activity.every.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                activity_tick(&shared, &tenant, &activity, &[]);
            }
        })
    }

    /// As [`Simulator::spawn_activity`], but each new alert is of one of
    /// `sources` at random (empty = every Defender product, MDE included): the
    /// live feed of a tenant read through Graph. Updates touch any alert.
    pub(crate) fn spawn_graph_activity(
        &self,
        tenant_id: &str,
        activity: Activity,
        sources: &[ServiceSource],
    ) -> tokio::task::JoinHandle<()> {
        let shared = self.inner.shared.clone();
        let tenant = tenant_id.to_owned();
        let mut sources = sources.to_vec();
        if sources.is_empty() {
            sources.push(ServiceSource::DefenderForEndpoint);
            sources.extend(ServiceSource::GRAPH_ONLY);
        }
        let mut stop = shared.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(activity.every.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                activity_tick(&shared, &tenant, &activity, &sources);
            }
        })
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared().requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared().requests).clear();
    }
}

/// One step of live activity; `sources` empty = MDE alerts only.
fn activity_tick(shared: &Shared, tenant: &str, a: &Activity, sources: &[ServiceSource]) {
    let now = Timestamp::now();
    let mut rng = lock(&shared.rng);
    let mut sets = write(&shared.alerts);
    let set = sets.entry(tenant.to_owned()).or_default();
    for _ in 0..a.new {
        let at = if a.late_fraction > 0.0 && rng.gen_bool(a.late_fraction.min(1.0)) {
            let late = rng.gen_range(0..=a.max_late.as_millis().min(u64::MAX as u128) as u64);
            now.saturating_sub(Duration::from_millis(late))
        } else {
            now
        };
        if sources.is_empty() {
            set.generate_one(&mut *rng, tenant, at, at);
        } else {
            let source = sources[rng.gen_range(0..sources.len())];
            set.generate_source(&mut *rng, tenant, source, at, at);
        }
    }
    for _ in 0..a.updates {
        if let Some((id, old)) = set.random_id(&mut *rng) {
            if old < now {
                set.update(&mut *rng, &id, now);
            }
        }
    }
}

#[cfg(test)]
mod tests;
