//! Configuration: figment layering (defaults → TOML file → `MDE_POLLER_*` env),
//! validation that names the file and the key, cloud presets, secret resolution.
//!
//! CONTRACT (other modules use these resolved types; keep their shape):
//! `load(path) -> Result<Settings, ConfigError>`; `Settings`, `TenantSettings`,
//! `Credential`, `PollSettings`, `StoreSettings`, `OutputSettings`,
//! `OutputFormat`, `OutputTarget`, `LogSettings`, `LogFormat`, `HttpSettings`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

/// Everything the daemon needs, validated and resolved (secrets read, cloud
/// presets applied, relative paths made absolute).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file this came from (for messages and reloads).
    pub source: PathBuf,
    pub poll: PollSettings,
    pub store: StoreSettings,
    pub output: OutputSettings,
    pub log: LogSettings,
    pub http: HttpSettings,
    /// Every tenant, enabled or not, sorted by name.
    pub tenants: Vec<TenantSettings>,
    /// Things an operator should know that are not errors (inline secret,
    /// secret file readable by others, unknown `MDE_POLLER_*` variable); logged
    /// as WARN once tracing is up.
    pub warnings: Vec<String>,
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
pub struct StoreSettings {
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
pub struct OutputSettings {
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

#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    pub ca_file: Option<PathBuf>,
    pub proxy: Option<String>,
    /// `MdePartner-{partner}-MdePoller/{version}` when `[app] partner` is set,
    /// else `mde-poller/{version}`.
    pub user_agent: String,
}

/// How a tenant proves the partner app's identity.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A client secret, already read from its source.
    Secret(SecretString),
    /// A PEM file holding the certificate and its RSA private key; read by
    /// `auth` (so a reload re-reads it).
    Certificate {
        path: PathBuf,
        /// `x5t` + RS256 instead of `x5t#S256` + PS256, for older setups.
        legacy_rs256: bool,
    },
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
    pub credential: Credential,
    /// e.g. `https://login.microsoftonline.com` (no trailing slash).
    pub login_url: String,
    /// e.g. `https://api.securitycenter.microsoft.com` (no trailing slash).
    pub api_url: String,
    /// e.g. `https://api.securitycenter.microsoft.com/.default`.
    pub token_scope: String,
}

impl TenantSettings {
    /// `{login}/{tenant}/oauth2/v2.0/token`: also the `aud` of a client assertion.
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.login_url, self.tenant_id)
    }
}

/// Every problem found in one config, each naming its key.
#[derive(Debug, thiserror::Error)]
#[error("config error in {}:\n{}", file.display(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

/// One problem: the dotted key (or `(file)` for file-level problems) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Loads, layers, validates and resolves the configuration at `path`.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let _ = path;
    todo!("config helper")
}
