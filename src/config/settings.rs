//! The resolved settings the rest of the daemon reads: checked, with secrets
//! read, the certificate and the CA bundle parsed, and paths made absolute.

use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{Credential, TokenApp, TokenRequest};
pub(super) use crate::output::AlertSource;

/// Everything the daemon needs, validated and resolved (secrets read, cloud
/// presets applied, relative paths made absolute).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file this came from (for messages and reloads).
    pub source: PathBuf,
    pub poll: PollSettings,
    pub(crate) store: StoreSettings,
    pub(crate) output: OutputSettings,
    pub log: LogSettings,
    pub http: HttpSettings,
    pub(crate) metrics: MetricsSettings,
    pub(crate) audit: AuditSettings,
    /// Every tenant, enabled or not, sorted by name.
    pub tenants: Vec<TenantSettings>,
    /// Things an operator should know that are not errors (inline secret,
    /// secret file readable by others, unknown `MDE_POLLER_*` variable); logged
    /// as WARN once tracing is up.
    pub warnings: Vec<String>,
}

impl Settings {
    /// The tenants to poll, by name.
    pub(crate) fn enabled_tenants(&self) -> impl Iterator<Item = &TenantSettings> {
        self.tenants.iter().filter(|t| t.enabled)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PollSettings {
    pub interval: Duration,
    /// A cron expression with seconds; replaces `interval` when set.
    pub schedule: Option<String>,
    pub lookback: Duration,
    pub first_lookback: Duration,
    pub page_size: u32,
    pub concurrency: usize,
    pub timeout: Duration,
    pub expand_evidence: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoreSettings {
    pub path: PathBuf,
    pub retention: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Raw,
    Ecs,
    Ocsf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputTarget {
    Stdout,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OutputSettings {
    pub format: OutputFormat,
    pub target: OutputTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// An `EnvFilter` directive; `RUST_LOG`, when set, wins.
    pub level: String,
    pub format: LogFormat,
}

/// `[metrics]`: the Prometheus endpoint, off unless `listen` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MetricsSettings {
    pub listen: Option<std::net::SocketAddr>,
}

/// `[audit]`: the daemon's self-audit, off unless `every` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditSettings {
    pub every: Option<Duration>,
    /// How far back an audit compares (before the clamps of the tenant's
    /// first poll and `store.retention`).
    pub window: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            every: None,
            window: Duration::from_secs(7 * 86_400),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// `http.ca_file`, parsed when the config loads.
    pub(crate) ca_bundle: Option<CaBundle>,
    pub proxy: Option<String>,
    /// `MdePartner-{partner}-MdePoller/{version}` when `[app] partner` is set,
    /// else `mde-poller/{version}`.
    pub user_agent: String,
}

/// The extra CA certificates of `http.ca_file`, parsed once at load so that a
/// bad bundle is a config error (exit 78) and building a client reads no file.
#[derive(Clone)]
pub(crate) struct CaBundle {
    pub path: PathBuf,
    pub certificates: Vec<reqwest::Certificate>,
    /// Of the file's bytes: two bundles are the same when their contents are
    /// (a reload sees a replaced bundle behind the same path).
    pub digest: u64,
}

impl PartialEq for CaBundle {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && self.digest == other.digest
    }
}

/// The path and digest: what tells two bundles apart.
impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("path", &self.path)
            .field("certificates", &self.certificates.len())
            .field("digest", &format_args!("{:016x}", self.digest))
            .finish()
    }
}

/// One customer tenant, with the app and endpoints it uses resolved.
#[derive(Debug, Clone)]
pub struct TenantSettings {
    /// The `[tenants.NAME]` key: `[a-z0-9_-]+`.
    pub name: String,
    /// Lower-case GUID.
    pub tenant_id: String,
    pub enabled: bool,
    pub client_id: String,
    pub(crate) credential: Credential,
    /// e.g. `https://login.microsoftonline.com` (no trailing slash).
    pub login_url: String,
    /// e.g. `https://api.securitycenter.microsoft.com` (no trailing slash).
    pub api_url: String,
    /// e.g. `https://api.securitycenter.microsoft.com/.default`.
    pub token_scope: String,
    /// Which API this tenant reads (`source`, else `[poll] source`).
    pub(crate) source: AlertSource,
    /// e.g. `https://graph.microsoft.com` (no trailing slash).
    pub graph_url: String,
    /// e.g. `https://graph.microsoft.com/.default`.
    pub graph_scope: String,
    /// `[poll] service_sources`, checked against Graph's `serviceSource`
    /// members; empty = every product. Read only by Graph tenants.
    pub service_sources: Vec<String>,
}

impl TenantSettings {
    /// What `auth` needs to request this tenant's tokens: for the API of
    /// its `source` (a Graph token is refused by the MDE API and the other
    /// way round). The app side is this tenant's own; the scheduler shares
    /// it among tenants through an [`crate::auth::AppShare`].
    pub(crate) fn token_request(&self) -> TokenRequest {
        TokenRequest {
            tenant: self.name.as_str().into(),
            tenant_id: self.tenant_id.as_str().into(),
            app: std::sync::Arc::new(self.token_app()),
        }
    }

    /// The app side of this tenant's token requests.
    pub(crate) fn token_app(&self) -> TokenApp {
        TokenApp::new(
            self.client_id.clone(),
            self.login_url.clone(),
            self.active_scope().to_owned(),
            self.credential.clone(),
        )
    }
}

impl TenantSettings {
    /// The token scope of the API this tenant reads.
    pub(crate) fn active_scope(&self) -> &str {
        match self.source {
            AlertSource::Mde => &self.token_scope,
            AlertSource::Graph => &self.graph_scope,
        }
    }
}

/// So that `TokenSource::new(http, &tenant)` takes the tenant as it is.
impl From<&TenantSettings> for TokenRequest {
    fn from(tenant: &TenantSettings) -> Self {
        tenant.token_request()
    }
}
