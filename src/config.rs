//! Configuration: figment layering (defaults → TOML file → `MDE_POLLER_*` env),
//! validation that names the file and the key, cloud presets, secret resolution.
//!
//! CONTRACT (other modules use these resolved types; keep their shape):
//! `load(path) -> Result<Settings, ConfigError>`; `Settings`, `TenantSettings`,
//! `Credential`, `PollSettings`, `StoreSettings`, `OutputSettings`,
//! `OutputFormat`, `OutputTarget`, `LogSettings`, `LogFormat`, `HttpSettings`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Tag, Value};
use figment::Figment;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};

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
    pub metrics: MetricsSettings,
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

/// `[metrics]`: the Prometheus endpoint, off unless `listen` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    pub listen: Option<std::net::SocketAddr>,
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

/// The key used for problems of the file as a whole (missing, unreadable,
/// not TOML).
const FILE_KEY: &str = "(file)";
/// Every environment variable with this prefix is a config key.
const ENV_PREFIX: &str = "MDE_POLLER_";
/// The CLI's config-path variable: shares the prefix, but is not a key.
const CONFIG_PATH_VAR: &str = "MDE_POLLER_CONFIG";
/// Set by systemd for a unit with `LoadCredential=`.
const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";
/// The systemd credential `[app]` uses when it names no secret of its own.
const APP_CREDENTIAL: &str = "client-secret";
/// `client-secret-<tenant>`: a tenant naming no secret of its own uses it.
const TENANT_CREDENTIAL_PREFIX: &str = "client-secret-";

/// Loads, layers, validates and resolves the configuration at `path`.
///
/// Layers, later winning: built-in defaults, the TOML file (which must
/// exist), then `MDE_POLLER_*` environment variables (`__` separates keys).
/// Every problem found is returned at once, each naming its dotted key.
/// Secret files, credentials and certificate paths are read or checked here;
/// nothing touches the network, so this is what `check --config-only` runs.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let fail = |problems| ConfigError {
        file: file.clone(),
        problems,
    };
    if let Some(problem) = check_file(&file) {
        return Err(fail(vec![problem]));
    }
    let env = EnvSnapshot::capture();

    // Parsed once alone so that a key can be traced to the file (an unknown
    // key there is an error, from the environment only a warning).
    let file_dict = match Figment::from(Toml::file_exact(&file)).extract::<Dict>() {
        Ok(dict) => dict,
        Err(e) => return Err(fail(figment_problems(e))),
    };
    let figment = Figment::from(Serialized::defaults(RawConfig::default()))
        .merge(Toml::file_exact(&file))
        .merge(
            Env::prefixed(ENV_PREFIX)
                .ignore(&[&CONFIG_PATH_VAR[ENV_PREFIX.len()..].to_ascii_lowercase()])
                .split("__"),
        );
    let merged = match figment.extract::<Dict>() {
        Ok(dict) => dict,
        Err(e) => return Err(fail(figment_problems(e))),
    };

    let base = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut checker = Checker {
        file: &file,
        base,
        env: &env,
        file_dict: &file_dict,
        problems: Vec::new(),
        warnings: env.malformed.clone(),
    };
    let raw = checker.deserialize(merged);
    let settings = checker.resolve(raw);
    if checker.problems.is_empty() {
        let mut settings = settings.expect("resolved without problems");
        settings.warnings = checker.warnings;
        Ok(settings)
    } else {
        Err(fail(checker.problems))
    }
}

impl Settings {
    /// The tenants to poll, by name.
    pub fn enabled_tenants(&self) -> impl Iterator<Item = &TenantSettings> {
        self.tenants.iter().filter(|t| t.enabled)
    }
}

impl ConfigError {
    /// The problem about `key`, if any (handy in tests and `check --json`).
    pub fn problem(&self, key: &str) -> Option<&Problem> {
        self.problems.iter().find(|p| p.key == key)
    }
}

// ---------------------------------------------------------------------------
// The file as written. Every struct denies unknown keys; every field is
// documented for the operator (these docs are the reference for
// `config/example.toml`). Strings are read leniently (`scalar`) because an
// environment override like `MDE_POLLER_POLL__INTERVAL=300` arrives as a
// number; the validation then says what is wrong with it.
// ---------------------------------------------------------------------------

/// The whole config file.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    /// Which Microsoft cloud the tenants live in: `global`, `gcc`, `gcc-high`
    /// or `dod`. Picks the login host, the API host and the token scope;
    /// `[endpoints]` overrides each of them.
    #[serde(deserialize_with = "scalar")]
    cloud: String,
    /// The partner's multi-tenant Entra ID application.
    app: RawApp,
    /// Hosts, when the ones `cloud` implies are not right.
    endpoints: RawEndpoints,
    /// How the daemon reaches Microsoft: extra CA bundle, proxy.
    http: RawHttp,
    /// When and how far back each tenant is polled.
    poll: RawPoll,
    /// The SQLite database of alerts already emitted and cursors.
    store: RawStore,
    /// Where the alert lines go and in which shape.
    output: RawOutput,
    /// The daemon's own diagnostics on stderr.
    log: RawLog,
    /// The Prometheus endpoint (`/metrics`, `/healthz`); off unless set.
    metrics: RawMetrics,
    /// One table per customer tenant; the key is the tenant's name.
    tenants: BTreeMap<String, RawTenant>,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            cloud: "global".into(),
            app: RawApp::default(),
            endpoints: RawEndpoints::default(),
            http: RawHttp::default(),
            poll: RawPoll::default(),
            store: RawStore::default(),
            output: RawOutput::default(),
            log: RawLog::default(),
            metrics: RawMetrics::default(),
            tenants: BTreeMap::new(),
        }
    }
}

/// `[app]`: the partner's application, used by every tenant that does not
/// name its own.
#[derive(Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawApp {
    /// The application (client) id, a GUID, from the app registration.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    client_id: Option<String>,
    /// Your company name: the User-Agent becomes
    /// `MdePartner-{partner}-MdePoller/{version}` (Microsoft's partner
    /// convention). No spaces or slashes.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    partner: Option<String>,
    /// The client secret written inline. Accepted with a warning: prefer
    /// `client_secret_credential`, `client_secret_file`, or the environment
    /// variable `MDE_POLLER_APP__CLIENT_SECRET`.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    client_secret: Option<String>,
    /// A file holding the client secret (trailing newline ignored). Relative
    /// paths are relative to the config file's folder. Keep it mode 0600.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    client_secret_file: Option<String>,
    /// The name of a systemd credential (`LoadCredential=NAME:...`) holding
    /// the client secret: read from `$CREDENTIALS_DIRECTORY/NAME`. When no
    /// secret is named at all, the credential `client-secret` is used if present.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    client_secret_credential: Option<String>,
    /// A PEM file with the app's certificate and its RSA private key: tokens
    /// are then requested with a signed client assertion instead of a secret.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    certificate_file: Option<String>,
    /// Sign the client assertion the older way (RS256 with an `x5t` SHA-1
    /// thumbprint) instead of PS256 with `x5t#S256`.
    certificate_legacy_rs256: bool,
}

/// `[endpoints]`: overrides of the hosts `cloud` picks.
#[derive(Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawEndpoints {
    /// The Entra ID login host, e.g. `https://login.microsoftonline.com`.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    login_url: Option<String>,
    /// The Defender for Endpoint API host, e.g.
    /// `https://api.securitycenter.microsoft.com` or a regional one such as
    /// `https://eu.api.security.microsoft.com`.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    api_url: Option<String>,
    /// The OAuth scope asked for, e.g.
    /// `https://api.securitycenter.microsoft.com/.default` (regional hosts
    /// take this global scope).
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    token_scope: Option<String>,
}

/// `[http]`: how Microsoft is reached.
#[derive(Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawHttp {
    /// An extra PEM CA bundle to trust, e.g. for a TLS-inspecting proxy.
    /// Relative paths are relative to the config file's folder.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    ca_file: Option<String>,
    /// A proxy URL (`http://` or `https://`). Without it, `HTTPS_PROXY` and
    /// `NO_PROXY` from the environment apply.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    proxy: Option<String>,
}

/// `[poll]`: when and how each tenant is polled.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawPoll {
    /// Time between two polls of one tenant, e.g. `"5m"`; at least `"1s"`.
    #[serde(deserialize_with = "scalar")]
    interval: String,
    /// A cron expression with seconds (`"0 */5 * * * *"`): polls on the clock
    /// instead of every `interval`.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    schedule: Option<String>,
    /// Each poll re-reads this far behind the newest `lastUpdateTime` already
    /// seen, to catch alerts that reach the API late. `"0s"` disables it.
    #[serde(deserialize_with = "scalar")]
    lookback: String,
    /// How far back a tenant's very first poll reaches, e.g. `"24h"`.
    #[serde(deserialize_with = "scalar")]
    first_lookback: String,
    /// Alerts asked for per request (`$top`), 1 to 10000.
    page_size: i64,
    /// How many tenants are polled at the same time (at least 1).
    concurrency: i64,
    /// Time limit of one HTTP request, e.g. `"30s"`.
    #[serde(deserialize_with = "scalar")]
    timeout: String,
    /// Ask for each alert's evidence too (`$expand=evidence`).
    expand_evidence: bool,
}

impl Default for RawPoll {
    fn default() -> Self {
        Self {
            interval: "5m".into(),
            schedule: None,
            lookback: "15m".into(),
            first_lookback: "24h".into(),
            page_size: 1000,
            concurrency: 8,
            timeout: "30s".into(),
            expand_evidence: false,
        }
    }
}

/// `[store]`: the local SQLite database.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawStore {
    /// The database file; relative paths are relative to the config file's folder.
    #[serde(deserialize_with = "scalar")]
    path: String,
    /// Forget alerts not updated for this long, e.g. `"90d"`.
    #[serde(deserialize_with = "scalar")]
    retention: String,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            path: "/var/lib/mde-poller/state.db".into(),
            retention: "90d".into(),
        }
    }
}

/// `[output]`: the alert lines.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawOutput {
    /// `raw` (the alert as the API returned it), `ecs` (Elastic Common
    /// Schema) or `ocsf` (OCSF Detection Finding).
    #[serde(deserialize_with = "scalar")]
    format: String,
    /// `"-"` for stdout, else a file appended to (and reopened on SIGHUP);
    /// relative paths are relative to the config file's folder.
    #[serde(deserialize_with = "scalar")]
    path: String,
}

impl Default for RawOutput {
    fn default() -> Self {
        Self {
            format: "raw".into(),
            path: "-".into(),
        }
    }
}

/// `[log]`: the daemon's own logs on stderr.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    /// A level (`error`, `warn`, `info`, `debug`, `trace`) or a tracing
    /// filter such as `"info,mde_poller::api=debug"`. `RUST_LOG` wins when set.
    #[serde(deserialize_with = "scalar")]
    level: String,
    /// `json` (one object per line, for journald/SIEM) or `text`.
    #[serde(deserialize_with = "scalar")]
    format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "json".into(),
        }
    }
}

/// `[metrics]`: Prometheus metrics and a health check over HTTP.
#[derive(Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawMetrics {
    /// `"127.0.0.1:9464"` serves `/metrics` and `/healthz` there; unset, no
    /// port is opened. Name another address than loopback only when
    /// Prometheus must reach it from elsewhere: nothing asks who scrapes.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    listen: Option<String>,
}

/// `[tenants.NAME]`: one customer tenant. NAME is lower case letters,
/// digits, `_` and `-`; it names the tenant in the output and the logs.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawTenant {
    /// The customer's tenant id, a GUID (the customer gives it to you).
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    tenant_id: Option<String>,
    /// `false` keeps the tenant in the file but stops polling it.
    enabled: bool,
    /// This tenant's own application (client) id, instead of `[app]`'s.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    client_id: Option<String>,
    /// This tenant's own client secret, inline (accepted with a warning).
    /// Giving any credential key here replaces `[app]`'s credential entirely.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    client_secret: Option<String>,
    /// A file holding this tenant's own client secret.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    client_secret_file: Option<String>,
    /// A systemd credential holding this tenant's own client secret. Without
    /// any credential key here, `$CREDENTIALS_DIRECTORY/client-secret-NAME`
    /// is used when it exists.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    client_secret_credential: Option<String>,
    /// A PEM certificate + private key for this tenant's own application.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    certificate_file: Option<String>,
    /// Like `[app] certificate_legacy_rs256`, for this tenant's certificate
    /// (defaults to `[app]`'s value).
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_legacy_rs256: Option<bool>,
    /// This tenant's API host (e.g. a regional one); the token scope stays.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    api_url: Option<String>,
}

impl Default for RawTenant {
    fn default() -> Self {
        Self {
            tenant_id: None,
            enabled: true,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            client_secret_credential: None,
            certificate_file: None,
            certificate_legacy_rs256: None,
            api_url: None,
        }
    }
}

/// Reads any scalar (string, number, boolean) as its text.
fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(ScalarVisitor)
}

fn opt_scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_option(OptScalarVisitor)
}

struct ScalarVisitor;

impl serde::de::Visitor<'_> for ScalarVisitor {
    type Value = String;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

struct OptScalarVisitor;

impl<'de> serde::de::Visitor<'de> for OptScalarVisitor {
    type Value = Option<String>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        scalar(d).map(Some)
    }
}

// ---------------------------------------------------------------------------
// Where values came from.
// ---------------------------------------------------------------------------

/// The `MDE_POLLER_*` variables, as figment's `Env` provider maps them
/// (prefix stripped case-insensitively, `__` → `.`, lower case), kept so that
/// a problem can name the variable that caused it.
struct EnvSnapshot {
    /// `(variable name, dotted key)`.
    vars: Vec<(String, String)>,
    /// Warnings about variables figment skips (an empty key segment).
    malformed: Vec<String>,
    credentials_dir: Option<PathBuf>,
}

impl EnvSnapshot {
    fn capture() -> Self {
        let mut vars = Vec::new();
        let mut malformed = Vec::new();
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().trim().to_string();
            let upper = name.to_ascii_uppercase();
            if !upper.starts_with(ENV_PREFIX) || upper == CONFIG_PATH_VAR {
                continue;
            }
            let key = name[ENV_PREFIX.len()..]
                .replace("__", ".")
                .to_ascii_lowercase();
            if key.split('.').any(str::is_empty) {
                malformed.push(format!(
                    "environment variable {name} matches no config key; ignored"
                ));
                continue;
            }
            vars.push((name, key));
        }
        vars.sort();
        let credentials_dir = std::env::var_os(CREDENTIALS_DIRECTORY)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Self {
            vars,
            malformed,
            credentials_dir,
        }
    }

    /// The variable that sets exactly `key`.
    fn var_for(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(_, k)| k == key)
            .map(|(name, _)| name.as_str())
    }

    /// The variables that set `key` or anything below it.
    fn vars_under<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.vars
            .iter()
            .filter(move |(_, k)| {
                k == key || (k.starts_with(key) && k.as_bytes().get(key.len()) == Some(&b'.'))
            })
            .map(|(name, _)| name.as_str())
    }
}

fn dict_get<'a>(dict: &'a Dict, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let value = dict.get(first)?;
    if rest.is_empty() {
        return Some(value);
    }
    match value {
        Value::Dict(_, inner) => dict_get(inner, rest),
        _ => None,
    }
}

fn dict_remove(dict: &mut Dict, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => dict.remove(last).is_some(),
        [first, rest @ ..] => match dict.get_mut(first) {
            Some(Value::Dict(_, inner)) => dict_remove(inner, rest),
            _ => false,
        },
    }
}

/// The file exists and is a readable regular file.
fn check_file(file: &Path) -> Option<Problem> {
    let message = match std::fs::metadata(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("config file {} does not exist", file.display())
        }
        Err(e) => format!("cannot read config file {}: {e}", file.display()),
        Ok(md) if !md.is_file() => format!("{} is not a file", file.display()),
        Ok(_) => match std::fs::File::open(file) {
            Ok(_) => return None,
            Err(e) => format!("cannot read config file {}: {e}", file.display()),
        },
    };
    Some(Problem {
        key: FILE_KEY.into(),
        message,
    })
}

/// Problems from figment before deserialization: in practice a TOML syntax
/// error. The toml crate's message quotes the offending line, which may hold
/// an inline secret, so only its position and explanation are kept.
fn figment_problems(error: figment::Error) -> Vec<Problem> {
    error
        .into_iter()
        .map(|e| Problem {
            key: if e.path.is_empty() {
                FILE_KEY.into()
            } else {
                e.path.join(".")
            },
            message: without_source_excerpt(&e.kind.to_string()),
        })
        .collect()
}

/// Drops the `N | text` and caret lines of a toml error, keeping e.g.
/// "TOML parse error at line 3, column 17: invalid basic string".
fn without_source_excerpt(message: &str) -> String {
    let kept: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .filter(|line| {
            let gutter = line
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start();
            !gutter.starts_with('|')
        })
        .collect();
    kept.join(": ")
}

// ---------------------------------------------------------------------------
// Validation and resolution.
// ---------------------------------------------------------------------------

/// Hosts per cloud (API-NOTES.md "Hosts per cloud").
struct Endpoints {
    login_url: &'static str,
    api_url: &'static str,
    token_scope: &'static str,
}

fn cloud_endpoints(cloud: &str) -> Option<Endpoints> {
    let (login_url, api_url, token_scope) = match cloud {
        "global" => (
            "https://login.microsoftonline.com",
            "https://api.securitycenter.microsoft.com",
            "https://api.securitycenter.microsoft.com/.default",
        ),
        "gcc" => (
            "https://login.microsoftonline.com",
            "https://api-gcc.securitycenter.microsoft.us",
            "https://api-gcc.securitycenter.microsoft.us/.default",
        ),
        "gcc-high" | "dod" => (
            "https://login.microsoftonline.us",
            "https://api-gov.securitycenter.microsoft.us",
            "https://api-gov.securitycenter.microsoft.us/.default",
        ),
        _ => return None,
    };
    Some(Endpoints {
        login_url,
        api_url,
        token_scope,
    })
}

/// A credential found (or not) at one level: `[app]` or one tenant.
enum Resolved {
    /// Nothing named at this level.
    NotGiven,
    Ready(Credential),
    /// Named but unusable; the problem is already recorded.
    Failed,
}

/// The credential keys of one level.
struct Sources<'a> {
    /// `app` or `tenants.NAME`.
    prefix: &'a str,
    client_secret: Option<&'a str>,
    client_secret_file: Option<&'a str>,
    client_secret_credential: Option<&'a str>,
    certificate_file: Option<&'a str>,
    legacy_rs256: bool,
}

impl Sources<'_> {
    fn any(&self) -> bool {
        self.client_secret.is_some()
            || self.client_secret_file.is_some()
            || self.client_secret_credential.is_some()
            || self.certificate_file.is_some()
    }
}

struct Checker<'a> {
    file: &'a Path,
    /// The config file's folder: relative paths resolve against it.
    base: PathBuf,
    env: &'a EnvSnapshot,
    /// The TOML file alone, to tell file keys from environment keys.
    file_dict: &'a Dict,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Checker<'_> {
    /// Records a problem; when an environment variable set this very key,
    /// names it too, since the file is then not where to look.
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        let mut message = message.into();
        if let Some(var) = self.env.var_for(key) {
            message.push_str(&format!(" (set by environment variable {var})"));
        }
        self.problems.push(Problem {
            key: key.to_owned(),
            message,
        });
    }

    fn in_file(&self, key: &[String]) -> bool {
        dict_get(self.file_dict, key).is_some()
    }

    /// Deserializes the merged layers, collecting every error instead of
    /// stopping at the first: each failing key is recorded and removed, and
    /// the rest is tried again (a removed key falls back to its default).
    fn deserialize(&mut self, mut merged: Dict) -> RawConfig {
        self.drop_env_only_tenants(&mut merged);
        // Bounded: each round removes one key, and a config has few.
        for _ in 0..1000 {
            let value = Value::Dict(Tag::Default, merged.clone());
            let error = match value.deserialize::<RawConfig>() {
                Ok(raw) => return raw,
                Err(e) => e,
            };
            let mut path = error.path.clone();
            let unknown = match &error.kind {
                figment::error::Kind::UnknownField(field, _) => {
                    // figment's path usually ends with the field already.
                    if path.last() != Some(field) {
                        path.push(field.clone());
                    }
                    true
                }
                _ => false,
            };
            let key = path.join(".");
            if unknown {
                let from_env: Vec<String> = self.env.vars_under(&key).map(String::from).collect();
                if !self.in_file(&path) && !from_env.is_empty() {
                    for var in from_env {
                        self.warnings.push(format!(
                            "environment variable {var} matches no config key ({key}); ignored"
                        ));
                    }
                } else {
                    let message = match &error.kind {
                        figment::error::Kind::UnknownField(_, expected) if !expected.is_empty() => {
                            format!("unknown key; expected one of: {}", expected.join(", "))
                        }
                        _ => "unknown key".to_string(),
                    };
                    self.problem(&key, message);
                }
            } else {
                self.problem(&key, deserialize_message(&error.kind));
            }
            if !dict_remove(&mut merged, &path) {
                // Cannot make progress (the error is not about one key):
                // report it and give up on the rest of the file.
                break;
            }
        }
        RawConfig::default()
    }

    /// A variable like `MDE_POLLER_TENANTS__TYPO__ENABLED=false` would
    /// otherwise create a tenant `typo` with no id: a tenant the file does not
    /// define, and whose id the environment does not give, matches no key.
    fn drop_env_only_tenants(&mut self, merged: &mut Dict) {
        let Some(Value::Dict(_, tenants)) = merged.get_mut("tenants") else {
            return;
        };
        let names: Vec<String> = tenants.keys().cloned().collect();
        for name in names {
            let path = ["tenants".to_string(), name.clone()];
            let defines_id = self
                .env
                .var_for(&format!("tenants.{name}.tenant_id"))
                .is_some();
            if self.in_file(&path) || defines_id {
                continue;
            }
            let key = format!("tenants.{name}");
            for var in self.env.vars_under(&key) {
                self.warnings.push(format!(
                    "environment variable {var} names tenant {name:?}, which the config file does not define; ignored"
                ));
            }
            tenants.remove(&name);
        }
    }

    fn resolve(&mut self, raw: RawConfig) -> Option<Settings> {
        let poll = self.poll(&raw.poll);
        let store = self.store(&raw.store);
        let output = self.output(&raw.output);
        let log = self.log(&raw.log);
        let http = self.http(&raw.http, &raw.app);
        let metrics = self.metrics(&raw.metrics);
        let tenants = self.tenants(&raw);
        if raw.tenants.is_empty() {
            self.warnings
                .push("no [tenants.NAME] table: there is nothing to poll".into());
        }
        Some(Settings {
            source: self.file.to_path_buf(),
            poll: poll?,
            store: store?,
            output: output?,
            log: log?,
            http: http?,
            metrics: metrics?,
            tenants: tenants?,
            warnings: Vec::new(),
        })
    }

    fn metrics(&mut self, raw: &RawMetrics) -> Option<MetricsSettings> {
        let Some(text) = &raw.listen else {
            return Some(MetricsSettings::default());
        };
        match text.trim().parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(MetricsSettings { listen: Some(addr) }),
            Err(_) => {
                self.problem(
                    "metrics.listen",
                    format!("{text:?} is not an address and port; write e.g. \"127.0.0.1:9464\" (or \"[::1]:9464\"), or remove the key to serve no metrics"),
                );
                None
            }
        }
    }

    fn duration(&mut self, key: &str, text: &str) -> Option<Duration> {
        match humantime::parse_duration(text.trim()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(
                    key,
                    format!("{text:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"24h\" or \"90d\""),
                );
                None
            }
        }
    }

    /// A duration that must be more than zero.
    fn positive_duration(&mut self, key: &str, text: &str) -> Option<Duration> {
        let d = self.duration(key, text)?;
        if d.is_zero() {
            self.problem(key, "must be more than 0");
            return None;
        }
        Some(d)
    }

    fn poll(&mut self, raw: &RawPoll) -> Option<PollSettings> {
        let interval = self.duration("poll.interval", &raw.interval);
        let interval = match interval {
            Some(d) if d < Duration::from_secs(1) => {
                self.problem(
                    "poll.interval",
                    format!("{:?} is under 1s; poll less often", raw.interval),
                );
                None
            }
            other => other,
        };
        let schedule = match &raw.schedule {
            Some(s) => self.schedule(s),
            None => Some(None),
        };
        let lookback = self.duration("poll.lookback", &raw.lookback);
        let first_lookback = self.positive_duration("poll.first_lookback", &raw.first_lookback);
        let page_size = match u32::try_from(raw.page_size) {
            Ok(n) if (1..=10_000).contains(&n) => Some(n),
            _ => {
                self.problem(
                    "poll.page_size",
                    format!(
                        "{} is outside 1..=10000 (the API returns at most 10000 alerts per request)",
                        raw.page_size
                    ),
                );
                None
            }
        };
        let concurrency = match usize::try_from(raw.concurrency) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                self.problem(
                    "poll.concurrency",
                    format!("{} tenants at once: must be at least 1", raw.concurrency),
                );
                None
            }
        };
        let timeout = self.positive_duration("poll.timeout", &raw.timeout);
        Some(PollSettings {
            interval: interval?,
            schedule: schedule?,
            lookback: lookback?,
            first_lookback: first_lookback?,
            page_size: page_size?,
            concurrency: concurrency?,
            timeout: timeout?,
            expand_evidence: raw.expand_evidence,
        })
    }

    /// Checked with the parser the scheduler itself uses (tokio-cron-scheduler
    /// → croner, seconds required), so what passes here is what runs. The
    /// field count is checked first only for a friendlier message.
    fn schedule(&mut self, text: &str) -> Option<Option<String>> {
        let text = text.trim();
        let fields = text.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            self.problem(
                "poll.schedule",
                format!(
                    "{text:?} has {fields} fields; a schedule is a cron expression with seconds: \
                     \"sec min hour day-of-month month day-of-week\", e.g. \"0 */5 * * * *\""
                ),
            );
            return None;
        }
        let parsed = tokio_cron_scheduler::Job::new_async(text, |_, _| Box::pin(async {}));
        if parsed.is_err() {
            self.problem(
                "poll.schedule",
                format!(
                    "{text:?} is not a valid cron expression with seconds, e.g. \"0 */5 * * * *\""
                ),
            );
            return None;
        }
        Some(Some(text.to_owned()))
    }

    fn store(&mut self, raw: &RawStore) -> Option<StoreSettings> {
        let path = self.path("store.path", &raw.path);
        let retention = self.positive_duration("store.retention", &raw.retention);
        Some(StoreSettings {
            path: path?,
            retention: retention?,
        })
    }

    fn output(&mut self, raw: &RawOutput) -> Option<OutputSettings> {
        let format = match raw.format.trim().to_ascii_lowercase().as_str() {
            "raw" => Some(OutputFormat::Raw),
            "ecs" => Some(OutputFormat::Ecs),
            "ocsf" => Some(OutputFormat::Ocsf),
            _ => {
                self.problem(
                    "output.format",
                    format!("{:?} is not one of raw, ecs, ocsf", raw.format),
                );
                None
            }
        };
        let target = if raw.path.trim() == "-" {
            Some(OutputTarget::Stdout)
        } else {
            self.path("output.path", &raw.path).map(OutputTarget::File)
        };
        Some(OutputSettings {
            format: format?,
            target: target?,
        })
    }

    fn log(&mut self, raw: &RawLog) -> Option<LogSettings> {
        let level = raw.level.trim().to_owned();
        let level = match tracing_subscriber::EnvFilter::try_new(&level) {
            Ok(_) if !level.is_empty() => Some(level),
            _ => {
                self.problem(
                    "log.level",
                    format!(
                        "{:?} is not a level (error, warn, info, debug, trace) or a tracing filter",
                        raw.level
                    ),
                );
                None
            }
        };
        let format = match raw.format.trim().to_ascii_lowercase().as_str() {
            "json" => Some(LogFormat::Json),
            "text" => Some(LogFormat::Text),
            _ => {
                self.problem(
                    "log.format",
                    format!("{:?} is not one of json, text", raw.format),
                );
                None
            }
        };
        Some(LogSettings {
            level: level?,
            format: format?,
        })
    }

    fn http(&mut self, raw: &RawHttp, app: &RawApp) -> Option<HttpSettings> {
        let ca_file = match &raw.ca_file {
            Some(text) => {
                let path = self.path("http.ca_file", text);
                match path {
                    Some(p) if self.readable_file("http.ca_file", &p) => {
                        // Parsed now, so a bad bundle is a config error (exit
                        // 78) rather than a failure at the first request.
                        let pem = std::fs::read(&p).unwrap_or_default();
                        match reqwest::Certificate::from_pem_bundle(&pem) {
                            Ok(certs) if !certs.is_empty() => Some(Some(p)),
                            _ => {
                                self.problem(
                                    "http.ca_file",
                                    format!(
                                        "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                                        p.display()
                                    ),
                                );
                                None
                            }
                        }
                    }
                    _ => None,
                }
            }
            None => Some(None),
        };
        let proxy = match &raw.proxy {
            Some(text) => self.proxy(text).map(Some),
            None => Some(None),
        };
        let version = env!("CARGO_PKG_VERSION");
        let user_agent = match &app.partner {
            None => Some(format!("mde-poller/{version}")),
            Some(partner) => {
                let partner = partner.trim();
                let fine = !partner.is_empty()
                    && partner.chars().all(|c| c.is_ascii_graphic() && c != '/');
                if fine {
                    Some(format!("MdePartner-{partner}-MdePoller/{version}"))
                } else {
                    self.problem(
                        "app.partner",
                        format!(
                            "{partner:?} cannot go in a User-Agent: use a non-empty name without spaces or slashes"
                        ),
                    );
                    None
                }
            }
        };
        Some(HttpSettings {
            ca_file: ca_file?,
            proxy: proxy?,
            user_agent: user_agent?,
        })
    }

    /// A proxy URL may carry a password, so it is never quoted back.
    fn proxy(&mut self, text: &str) -> Option<String> {
        let text = text.trim();
        match url::Url::parse(text) {
            Err(e) => {
                self.problem("http.proxy", format!("not a URL ({e})"));
                None
            }
            Ok(u) if !matches!(u.scheme(), "http" | "https") || u.host().is_none() => {
                self.problem(
                    "http.proxy",
                    "must be an http:// or https:// URL with a host, e.g. \"http://proxy.corp:3128\"",
                );
                None
            }
            Ok(_) => Some(text.to_owned()),
        }
    }

    /// A URL the daemon sends tokens or secrets to: `https://`, or plain
    /// `http://` to a loopback host only (tests and the simulator). Returned
    /// without trailing slashes, since paths are appended to it.
    fn endpoint(&mut self, key: &str, text: &str) -> Option<String> {
        let trimmed = text.trim().trim_end_matches('/');
        let url = match url::Url::parse(trimmed) {
            Ok(u) => u,
            Err(e) => {
                self.problem(key, format!("{text:?} is not a URL ({e})"));
                return None;
            }
        };
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => {
                self.problem(key, format!("{text:?} has no host"));
                return None;
            }
        };
        match url.scheme() {
            "https" => Some(trimmed.to_owned()),
            "http" if loopback => Some(trimmed.to_owned()),
            scheme => {
                self.problem(
                    key,
                    format!(
                        "{text:?} must be https:// (not {scheme}://); plain http:// is allowed only to a loopback host (127.0.0.1, ::1, localhost)"
                    ),
                );
                None
            }
        }
    }

    fn path(&mut self, key: &str, text: &str) -> Option<PathBuf> {
        let text = text.trim();
        if text.is_empty() {
            self.problem(key, "is empty: give a path");
            return None;
        }
        let path = Path::new(text);
        Some(if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        })
    }

    /// The file exists, is a regular file and can be opened.
    fn readable_file(&mut self, key: &str, path: &Path) -> bool {
        let problem = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                format!("{} does not exist", path.display())
            }
            Err(e) => format!("cannot read {}: {e}", path.display()),
            Ok(md) if !md.is_file() => format!("{} is not a file", path.display()),
            Ok(_) => match std::fs::File::open(path) {
                Ok(_) => return true,
                Err(e) => format!("cannot read {}: {e}", path.display()),
            },
        };
        self.problem(key, problem);
        false
    }

    fn warn_if_shared(&mut self, key: &str, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(md) = std::fs::metadata(path) {
            let mode = md.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                self.warnings.push(format!(
                    "{key}: {} holds a secret and is accessible by group or others (mode {mode:04o}); chmod 600 it",
                    path.display()
                ));
            }
        }
    }

    /// Reads a secret file; trailing whitespace (the newline editors add) is
    /// not part of the secret. Error texts name the file, never its content.
    fn read_secret(&mut self, key: &str, path: &Path) -> Option<SecretString> {
        use secrecy::zeroize::Zeroize;
        if !self.readable_file(key, path) {
            return None;
        }
        self.warn_if_shared(key, path);
        let mut text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.problem(key, format!("cannot read {}: {e}", path.display()));
                return None;
            }
        };
        let secret = text.trim_end();
        let result = if secret.is_empty() {
            self.problem(key, format!("{} is empty", path.display()));
            None
        } else {
            Some(SecretString::from(secret))
        };
        text.zeroize();
        result
    }

    fn read_credential(&mut self, key: &str, name: &str) -> Option<SecretString> {
        let name = name.trim();
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            self.problem(
                key,
                format!("{name:?} is not a credential name (the NAME of LoadCredential=NAME:...)"),
            );
            return None;
        }
        let Some(dir) = self.env.credentials_dir.clone() else {
            self.problem(
                key,
                format!(
                    "names the systemd credential {name:?}, but {CREDENTIALS_DIRECTORY} is not set \
                     (systemd sets it for a unit with LoadCredential={name}:...)"
                ),
            );
            return None;
        };
        let path = dir.join(name);
        if !path.exists() {
            self.problem(
                key,
                format!(
                    "credential {name:?} is not in {CREDENTIALS_DIRECTORY} ({}); add LoadCredential={name}:... to the unit",
                    dir.display()
                ),
            );
            return None;
        }
        self.read_secret(key, &path)
    }

    /// The optional credential file `name` in `$CREDENTIALS_DIRECTORY`.
    fn implicit_credential(&self, name: &str) -> Option<PathBuf> {
        let path = self.env.credentials_dir.as_ref()?.join(name);
        path.is_file().then_some(path)
    }

    /// One level's credential, by preference: systemd credential, secret
    /// file, the environment, inline. A certificate excludes secrets.
    fn credential(&mut self, s: &Sources) -> Resolved {
        let p = s.prefix;
        let secret_keys: Vec<String> = [
            (
                "client_secret_credential",
                s.client_secret_credential.is_some(),
            ),
            ("client_secret_file", s.client_secret_file.is_some()),
            ("client_secret", s.client_secret.is_some()),
        ]
        .into_iter()
        .filter(|(_, given)| *given)
        .map(|(k, _)| format!("{p}.{k}"))
        .collect();
        if let Some(cert) = s.certificate_file {
            let key = format!("{p}.certificate_file");
            if !secret_keys.is_empty() {
                self.problem(
                    &key,
                    format!(
                        "give either a certificate or a client secret, not both (also set: {})",
                        secret_keys.join(", ")
                    ),
                );
                return Resolved::Failed;
            }
            let Some(path) = self.path(&key, cert) else {
                return Resolved::Failed;
            };
            if !self.readable_file(&key, &path) {
                return Resolved::Failed;
            }
            // Parsed now, so a half-written PEM or an encrypted key is a
            // config error (exit 78, and a rejected reload) rather than a
            // tenant that silently stops polling.
            if let Err(e) = crate::auth::ClientCertificate::load(&path, s.legacy_rs256) {
                self.problem(&key, e.to_string());
                return Resolved::Failed;
            }
            self.warn_if_shared(&key, &path);
            return Resolved::Ready(Credential::Certificate {
                path,
                legacy_rs256: s.legacy_rs256,
            });
        }
        if let [used, ignored @ ..] = secret_keys.as_slice() {
            for key in ignored {
                self.warnings
                    .push(format!("{key} is ignored: {used} takes precedence"));
            }
        }
        let secret = if let Some(name) = s.client_secret_credential {
            self.read_credential(&format!("{p}.client_secret_credential"), name)
        } else if let Some(file) = s.client_secret_file {
            let key = format!("{p}.client_secret_file");
            match self.path(&key, file) {
                Some(path) => self.read_secret(&key, &path),
                None => None,
            }
        } else if let Some(inline) = s.client_secret {
            self.direct_secret(p, inline)
        } else {
            return Resolved::NotGiven;
        };
        match secret {
            Some(secret) => Resolved::Ready(Credential::Secret(secret)),
            None => Resolved::Failed,
        }
    }

    /// `client_secret` from the environment or written in the file.
    fn direct_secret(&mut self, prefix: &str, value: &str) -> Option<SecretString> {
        let key = format!("{prefix}.client_secret");
        let path: Vec<String> = key.split('.').map(String::from).collect();
        if self.in_file(&path) {
            self.warnings.push(format!(
                "{key} is written inline in {}; prefer client_secret_file or client_secret_credential (a systemd credential)",
                self.file.display()
            ));
        }
        // figment parses variable values ("0123" becomes the number 123), so
        // a secret from the environment is taken from the variable verbatim.
        let text = match self.env.var_for(&key) {
            Some(var) => std::env::var(var).unwrap_or_else(|_| value.to_owned()),
            None => value.to_owned(),
        };
        let secret = text.trim_end();
        if secret.is_empty() {
            self.problem(&key, "is empty");
            return None;
        }
        Some(SecretString::from(secret))
    }

    fn guid(&mut self, key: &str, text: &str, what: &str) -> Option<String> {
        let text = text.trim();
        if is_guid(text) {
            Some(text.to_ascii_lowercase())
        } else {
            self.problem(
                key,
                format!(
                    "{text:?} is not a {what} (a GUID like 00000000-0000-0000-0000-000000000000)"
                ),
            );
            None
        }
    }

    fn tenants(&mut self, raw: &RawConfig) -> Option<Vec<TenantSettings>> {
        let cloud = raw.cloud.trim().to_ascii_lowercase();
        let preset = cloud_endpoints(&cloud).unwrap_or_else(|| {
            self.problem(
                "cloud",
                format!("{:?} is not one of global, gcc, gcc-high, dod", raw.cloud),
            );
            cloud_endpoints("global").expect("global preset")
        });
        let ep = &raw.endpoints;
        let login_url = self.endpoint(
            "endpoints.login_url",
            ep.login_url.as_deref().unwrap_or(preset.login_url),
        );
        let api_url = self.endpoint(
            "endpoints.api_url",
            ep.api_url.as_deref().unwrap_or(preset.api_url),
        );
        let token_scope = ep.token_scope.as_deref().unwrap_or(preset.token_scope);
        // The scope's host is checked like a URL, but the scope is kept as given.
        let token_scope = self
            .endpoint("endpoints.token_scope", token_scope)
            .map(|_| token_scope.trim().to_owned());

        let app = &raw.app;
        let app_client_id = match &app.client_id {
            Some(id) => self.guid("app.client_id", id, "client id").map(Some),
            None => Some(None),
        };
        let app_sources = Sources {
            prefix: "app",
            client_secret: app.client_secret.as_deref(),
            client_secret_file: app.client_secret_file.as_deref(),
            client_secret_credential: app.client_secret_credential.as_deref(),
            certificate_file: app.certificate_file.as_deref(),
            legacy_rs256: app.certificate_legacy_rs256,
        };
        let mut app_credential = self.credential(&app_sources);
        if matches!(app_credential, Resolved::NotGiven) {
            if let Some(path) = self.implicit_credential(APP_CREDENTIAL) {
                app_credential = match self.read_secret("app.client_secret_credential", &path) {
                    Some(secret) => Resolved::Ready(Credential::Secret(secret)),
                    None => Resolved::Failed,
                };
            }
        }

        let mut out = Vec::new();
        let mut ids: BTreeMap<String, String> = BTreeMap::new();
        for (name, t) in &raw.tenants {
            let prefix = format!("tenants.{name}");
            let name_ok = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !name_ok {
                self.problem(
                    &prefix,
                    format!(
                        "tenant name {name:?} must be lower case letters, digits, _ and - only"
                    ),
                );
            }
            let id_key = format!("{prefix}.tenant_id");
            let tenant_id = match &t.tenant_id {
                None => {
                    self.problem(&id_key, "missing: the customer's tenant id (a GUID)");
                    None
                }
                Some(id) => self.guid(&id_key, id, "tenant id"),
            };
            if let Some(id) = &tenant_id {
                if let Some(first) = ids.get(id) {
                    let first = first.clone();
                    self.problem(
                        &id_key,
                        format!("{id} is also the tenant id of tenants.{first}"),
                    );
                } else {
                    ids.insert(id.clone(), name.clone());
                }
            }

            let cid_key = format!("{prefix}.client_id");
            let own_client_id = match &t.client_id {
                Some(id) => self.guid(&cid_key, id, "client id").map(Some),
                None => Some(None),
            };
            let client_id = match (&own_client_id, &app_client_id) {
                (Some(Some(own)), _) => Some(own.clone()),
                (Some(None), Some(Some(app))) => Some(app.clone()),
                (Some(None), Some(None)) => {
                    self.problem(
                        &cid_key,
                        "no client id: set [app] client_id, or this tenant's own client_id",
                    );
                    None
                }
                _ => None, // already reported
            };

            let sources = Sources {
                prefix: &prefix,
                client_secret: t.client_secret.as_deref(),
                client_secret_file: t.client_secret_file.as_deref(),
                client_secret_credential: t.client_secret_credential.as_deref(),
                certificate_file: t.certificate_file.as_deref(),
                legacy_rs256: t
                    .certificate_legacy_rs256
                    .unwrap_or(app.certificate_legacy_rs256),
            };
            let credential = if sources.any() {
                match self.credential(&sources) {
                    Resolved::Ready(c) => Some(c),
                    _ => None,
                }
            } else if let Some(path) =
                self.implicit_credential(&format!("{TENANT_CREDENTIAL_PREFIX}{name}"))
            {
                self.read_secret(&format!("{prefix}.client_secret_credential"), &path)
                    .map(Credential::Secret)
            } else {
                let own_app = matches!((&own_client_id, &app_client_id),
                    (Some(Some(own)), Some(app)) if app.as_deref() != Some(own.as_str()));
                match &app_credential {
                    _ if own_app => {
                        self.problem(
                            &prefix,
                            format!(
                                "this tenant has its own client_id but no credential for it: set \
                                 {prefix}.client_secret_credential, .client_secret_file or .certificate_file, \
                                 or provide the systemd credential {TENANT_CREDENTIAL_PREFIX}{name}"
                            ),
                        );
                        None
                    }
                    Resolved::Ready(c) => Some(c.clone()),
                    Resolved::Failed => None, // reported under [app]
                    Resolved::NotGiven => {
                        self.problem(
                            &prefix,
                            format!(
                                "no credential: set one in [app] or [{prefix}] (client_secret_credential, \
                                 client_secret_file, MDE_POLLER_APP__CLIENT_SECRET, client_secret or \
                                 certificate_file), or provide the systemd credential {APP_CREDENTIAL} \
                                 or {TENANT_CREDENTIAL_PREFIX}{name}"
                            ),
                        );
                        None
                    }
                }
            };

            let tenant_api = match &t.api_url {
                Some(url) => self.endpoint(&format!("{prefix}.api_url"), url),
                None => api_url.clone(),
            };

            if let (
                true,
                Some(tenant_id),
                Some(client_id),
                Some(credential),
                Some(login_url),
                Some(api_url),
                Some(token_scope),
            ) = (
                name_ok,
                tenant_id,
                client_id,
                credential,
                login_url.clone(),
                tenant_api,
                token_scope.clone(),
            ) {
                out.push(TenantSettings {
                    name: name.clone(),
                    tenant_id,
                    enabled: t.enabled,
                    client_id,
                    credential,
                    login_url,
                    api_url,
                    token_scope,
                });
            }
        }
        // Problems were recorded for every tenant left out; the caller
        // discards this list then.
        Some(out)
    }
}

/// `8-4-4-4-12` hex digits, the only form Entra ID shows.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A deserialization error in the operator's words; the raw struct names are
/// no business of theirs.
fn deserialize_message(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(actual, expected) => {
            let expected = if expected.starts_with("struct ") || expected.starts_with("a map") {
                "a table".to_string()
            } else {
                expected.clone()
            };
            format!("expected {expected}, found {actual}")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
// figment::Jail closures return figment::Error, which is large; not ours to box.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;
    use secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;

    const TENANT_A: &str = "11111111-1111-1111-1111-111111111111";
    const TENANT_B: &str = "22222222-2222-2222-2222-222222222222";
    const CLIENT: &str = "00000000-0000-0000-0000-0000000000aa";
    const SECRET: &str = "s3cr3t~value.from-file";

    /// A jail whose environment holds none of the caller's `MDE_POLLER_*`
    /// or `CREDENTIALS_DIRECTORY` (restored when the jail drops).
    fn jail(f: impl FnOnce(&mut Jail) -> figment::error::Result<()>) {
        Jail::expect_with(|j| {
            for (k, _) in std::env::vars_os() {
                let k = k.to_string_lossy().to_string();
                if k.to_ascii_uppercase().starts_with(ENV_PREFIX) || k == CREDENTIALS_DIRECTORY {
                    unset(j, &k);
                }
            }
            f(j)
        })
    }

    fn unset(j: &mut Jail, key: &str) {
        j.set_env(key, ""); // remembers the old value for the jail's drop
        std::env::remove_var(key);
    }

    /// A secret file readable by its owner only.
    fn secret_file(j: &Jail, name: &str, content: &str) -> PathBuf {
        let path = j.directory().join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn config(j: &Jail, text: &str) {
        j.create_file("config.toml", text).unwrap();
    }

    fn load_ok() -> Settings {
        load(Path::new("config.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn load_err() -> ConfigError {
        match load(Path::new("config.toml")) {
            Ok(_) => panic!("config loaded, expected an error"),
            Err(e) => e,
        }
    }

    fn minimal() -> String {
        format!(
            "[app]\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"secret\"\n\n\
             [tenants.contoso]\ntenant_id = \"{TENANT_A}\"\n"
        )
    }

    fn tenant<'a>(s: &'a Settings, name: &str) -> &'a TenantSettings {
        s.tenants.iter().find(|t| t.name == name).expect("tenant")
    }

    fn secret(t: &TenantSettings) -> String {
        match &t.credential {
            Credential::Secret(s) => s.expose_secret().to_owned(),
            Credential::Certificate { .. } => panic!("expected a secret"),
        }
    }

    #[test]
    fn keys_left_out_take_the_documented_defaults() {
        jail(|j| {
            secret_file(j, "secret", &format!("{SECRET}\n"));
            config(j, &minimal());
            let s = load_ok();
            assert_eq!(
                s.poll,
                PollSettings {
                    interval: Duration::from_secs(300),
                    schedule: None,
                    lookback: Duration::from_secs(15 * 60),
                    first_lookback: Duration::from_secs(24 * 3600),
                    page_size: 1000,
                    concurrency: 8,
                    timeout: Duration::from_secs(30),
                    expand_evidence: false,
                }
            );
            assert_eq!(s.store.path, PathBuf::from("/var/lib/mde-poller/state.db"));
            assert_eq!(s.store.retention, Duration::from_secs(90 * 86400));
            assert_eq!(s.output.format, OutputFormat::Raw);
            assert_eq!(s.output.target, OutputTarget::Stdout);
            assert_eq!(s.log.level, "info");
            assert_eq!(s.log.format, LogFormat::Json);
            assert_eq!(
                s.http.user_agent,
                format!("mde-poller/{}", env!("CARGO_PKG_VERSION"))
            );
            assert_eq!(s.http.ca_file, None);
            let t = tenant(&s, "contoso");
            assert!(t.enabled);
            assert_eq!(t.client_id, CLIENT);
            assert_eq!(
                secret(t),
                SECRET,
                "trailing newline is not part of the secret"
            );
            assert_eq!(
                t.token_url(),
                format!("https://login.microsoftonline.com/{TENANT_A}/oauth2/v2.0/token")
            );
            assert!(s.warnings.is_empty(), "{:?}", s.warnings);
            Ok(())
        });
    }

    #[test]
    fn an_empty_file_loads_with_a_warning_that_nothing_is_polled() {
        jail(|j| {
            config(j, "");
            let s = load_ok();
            assert!(s.tenants.is_empty());
            assert!(s.warnings.iter().any(|w| w.contains("nothing to poll")));
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_the_file_and_can_disable_a_tenant() {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            config(j, &format!("{}\n[poll]\ninterval = \"10m\"\n", minimal()));
            j.set_env("MDE_POLLER_POLL__INTERVAL", "1m");
            j.set_env("MDE_POLLER_POLL__PAGE_SIZE", "500");
            j.set_env("MDE_POLLER_OUTPUT__FORMAT", "ecs");
            j.set_env("MDE_POLLER_TENANTS__CONTOSO__ENABLED", "false");
            j.set_env("MDE_POLLER_CONFIG", "/somewhere/else.toml");
            let s = load_ok();
            assert_eq!(s.poll.interval, Duration::from_secs(60));
            assert_eq!(s.poll.page_size, 500);
            assert_eq!(s.output.format, OutputFormat::Ecs);
            assert!(!tenant(&s, "contoso").enabled);
            assert_eq!(s.enabled_tenants().count(), 0);
            assert!(
                s.warnings.is_empty(),
                "MDE_POLLER_CONFIG is the CLI's, not a key: {:?}",
                s.warnings
            );
            Ok(())
        });
    }

    #[test]
    fn environment_variable_matching_no_key_is_warned_not_fatal() {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            config(j, &minimal());
            j.set_env("MDE_POLLER_POLL__INTERVALL", "1m");
            j.set_env("MDE_POLLER_BOGUS", "1");
            j.set_env("MDE_POLLER_TENANTS__FABRIKAM__ENABLED", "false");
            let s = load_ok();
            for var in [
                "MDE_POLLER_POLL__INTERVALL",
                "MDE_POLLER_BOGUS",
                "MDE_POLLER_TENANTS__FABRIKAM__ENABLED",
            ] {
                assert!(
                    s.warnings.iter().any(|w| w.contains(var)),
                    "{var} not warned: {:?}",
                    s.warnings
                );
            }
            assert_eq!(
                s.tenants.len(),
                1,
                "no tenant is made up from a stray variable"
            );
            Ok(())
        });
    }

    #[test]
    fn environment_can_add_a_whole_tenant() {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            config(j, &minimal());
            j.set_env("MDE_POLLER_TENANTS__FABRIKAM__TENANT_ID", TENANT_B);
            let s = load_ok();
            assert_eq!(tenant(&s, "fabrikam").tenant_id, TENANT_B);
            Ok(())
        });
    }

    #[test]
    fn bad_environment_value_names_the_variable() {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            config(j, &minimal());
            j.set_env("MDE_POLLER_POLL__PAGE_SIZE", "0");
            j.set_env("MDE_POLLER_POLL__TIMEOUT", "30");
            let e = load_err();
            let p = e.problem("poll.page_size").expect("page_size problem");
            assert!(p.message.contains("MDE_POLLER_POLL__PAGE_SIZE"), "{p}");
            let p = e.problem("poll.timeout").expect("timeout problem");
            assert!(p.message.contains("MDE_POLLER_POLL__TIMEOUT"), "{p}");
            Ok(())
        });
    }

    /// Each case is a whole config file and the key its problem must name.
    #[test]
    fn every_problem_names_its_key() {
        let ok_tenant = format!("[tenants.contoso]\ntenant_id = \"{TENANT_A}\"\n");
        let ok_app = format!("[app]\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"secret\"\n");
        let base = format!("{ok_app}\n{ok_tenant}");
        let with = |extra: &str| format!("{extra}\n{base}");
        let cases: Vec<(&str, String, &str)> = vec![
            ("cloud", format!("cloud = \"azure\"\n{base}"), "cloud"),
            ("bad duration", with("[poll]\ninterval = \"soon\""), "poll.interval"),
            ("interval under 1s", with("[poll]\ninterval = \"500ms\""), "poll.interval"),
            ("lookback", with("[poll]\nlookback = \"a while\""), "poll.lookback"),
            ("first_lookback 0", with("[poll]\nfirst_lookback = \"0s\""), "poll.first_lookback"),
            ("page_size 0", with("[poll]\npage_size = 0"), "poll.page_size"),
            ("page_size big", with("[poll]\npage_size = 10001"), "poll.page_size"),
            ("concurrency 0", with("[poll]\nconcurrency = 0"), "poll.concurrency"),
            ("timeout 0", with("[poll]\ntimeout = \"0s\""), "poll.timeout"),
            ("cron 5 fields", with("[poll]\nschedule = \"*/5 * * * *\""), "poll.schedule"),
            ("cron bad", with("[poll]\nschedule = \"99 * * * * *\""), "poll.schedule"),
            ("retention", with("[store]\nretention = \"ninety days\""), "store.retention"),
            ("store path", with("[store]\npath = \"\""), "store.path"),
            ("output format", with("[output]\nformat = \"csv\""), "output.format"),
            ("log format", with("[log]\nformat = \"xml\""), "log.format"),
            ("log level", with("[log]\nlevel = \"mde_poller=loud\""), "log.level"),
            ("login http", with("[endpoints]\nlogin_url = \"http://login.microsoftonline.com\""), "endpoints.login_url"),
            ("api not url", with("[endpoints]\napi_url = \"api.securitycenter.microsoft.com\""), "endpoints.api_url"),
            ("scope http", with("[endpoints]\ntoken_scope = \"http://api.example.com/.default\""), "endpoints.token_scope"),
            ("proxy scheme", with("[http]\nproxy = \"ftp://proxy.corp:21\""), "http.proxy"),
            ("ca_file missing", with("[http]\nca_file = \"corp-ca.pem\""), "http.ca_file"),
            ("partner space", format!("[app]\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"secret\"\npartner = \"Contoso Ltd\"\n{ok_tenant}"), "app.partner"),
            ("partner empty", format!("[app]\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"secret\"\npartner = \"\"\n{ok_tenant}"), "app.partner"),
            ("app client_id", format!("[app]\nclient_id = \"not-a-guid\"\nclient_secret_file = \"secret\"\n{ok_tenant}"), "app.client_id"),
            ("no client_id", format!("[app]\nclient_secret_file = \"secret\"\n{ok_tenant}"), "tenants.contoso.client_id"),
            ("tenant client_id", format!("{base}client_id = \"xyz\"\nclient_secret_file = \"secret\"\n"), "tenants.contoso.client_id"),
            ("tenant id", format!("{ok_app}[tenants.contoso]\ntenant_id = \"contoso.onmicrosoft.com\"\n"), "tenants.contoso.tenant_id"),
            ("tenant id missing", format!("{ok_app}[tenants.contoso]\nenabled = true\n"), "tenants.contoso.tenant_id"),
            ("tenant name", format!("{ok_app}[tenants.Contoso]\ntenant_id = \"{TENANT_A}\"\n"), "tenants.Contoso"),
            ("tenant name empty", format!("{ok_app}[tenants.\"\"]\ntenant_id = \"{TENANT_A}\"\n"), "tenants."),
            ("duplicate id", format!("{base}[tenants.second]\ntenant_id = \"{}\"\n", TENANT_A.to_uppercase()), "tenants.second.tenant_id"),
            ("tenant api http", format!("{base}api_url = \"http://eu.api.security.microsoft.com\"\n"), "tenants.contoso.api_url"),
            ("no credential", format!("[app]\nclient_id = \"{CLIENT}\"\n{ok_tenant}"), "tenants.contoso"),
            ("own app no credential", format!("{base}client_id = \"{}\"\n", TENANT_B), "tenants.contoso"),
            ("secret file missing", format!("[app]\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"nope\"\n{ok_tenant}"), "app.client_secret_file"),
            ("secret file empty", format!("[app]\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"empty\"\n{ok_tenant}"), "app.client_secret_file"),
            ("tenant secret file missing", format!("{base}client_secret_file = \"/nonexistent/secret\"\n"), "tenants.contoso.client_secret_file"),
            ("certificate missing", format!("[app]\nclient_id = \"{CLIENT}\"\ncertificate_file = \"app.pem\"\n{ok_tenant}"), "app.certificate_file"),
            ("certificate and secret", format!("[app]\nclient_id = \"{CLIENT}\"\ncertificate_file = \"secret\"\nclient_secret = \"x\"\n{ok_tenant}"), "app.certificate_file"),
            ("credential w/o dir", format!("[app]\nclient_id = \"{CLIENT}\"\nclient_secret_credential = \"client-secret\"\n{ok_tenant}"), "app.client_secret_credential"),
            ("unknown poll key", with("[poll]\nintervall = \"5m\""), "poll.intervall"),
            ("unknown section", with("[polling]\ninterval = \"5m\""), "polling"),
            ("unknown tenant key", format!("{base}tenantid = \"x\"\n"), "tenants.contoso.tenantid"),
            ("wrong type", format!("{base}enabled = \"no\"\n"), "tenants.contoso.enabled"),
        ];
        for (name, text, key) in cases {
            jail(|j| {
                secret_file(j, "secret", SECRET);
                secret_file(j, "empty", "\n");
                config(j, &text);
                let e = load_err();
                assert!(
                    e.problem(key).is_some(),
                    "case {name:?}: no problem for {key}; got:\n{e}"
                );
                let shown = e.to_string();
                assert!(shown.contains("config.toml"), "case {name:?}: {shown}");
                assert!(!shown.contains(SECRET), "case {name:?} leaks the secret");
                Ok(())
            });
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            config(
                j,
                &format!(
                    "cloud = \"mars\"\n[poll]\nintervall = \"1m\"\npage_size = 0\ntimeout = \"x\"\n\
                     [output]\nformatt = \"raw\"\n{}",
                    minimal()
                ),
            );
            let e = load_err();
            for key in [
                "cloud",
                "poll.intervall",
                "poll.page_size",
                "poll.timeout",
                "output.formatt",
            ] {
                assert!(e.problem(key).is_some(), "{key} missing from:\n{e}");
            }
            Ok(())
        });
    }

    #[test]
    fn toml_syntax_error_shows_the_line_but_not_its_text() {
        jail(|j| {
            config(
                j,
                "[app]\nclient_id = \"x\"\nclient_secret = \"hunter2-not-closed\n[poll]\n",
            );
            let e = load_err();
            let shown = e.to_string();
            assert!(shown.contains("line 3"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert_eq!(e.problems[0].key, FILE_KEY);
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error_naming_the_path() {
        jail(|_| {
            let e = load(Path::new("nowhere/config.toml")).unwrap_err();
            assert!(e.file.ends_with("nowhere/config.toml"));
            assert!(e.to_string().contains("nowhere/config.toml"), "{e}");
            assert!(e.to_string().contains("does not exist"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn secret_sources_follow_credential_file_env_inline_order() {
        jail(|j| {
            let creds = j.directory().join("creds");
            secret_file(j, "creds/mine", "from-credential\n");
            secret_file(j, "secret", "from-file\n");
            j.set_env(CREDENTIALS_DIRECTORY, creds.display());
            j.set_env("MDE_POLLER_APP__CLIENT_SECRET", "from-env");
            let tenant = format!("[tenants.contoso]\ntenant_id = \"{TENANT_A}\"\n");
            let app = |keys: &str| format!("[app]\nclient_id = \"{CLIENT}\"\n{keys}\n{tenant}");

            config(j, &app("client_secret_credential = \"mine\"\nclient_secret_file = \"secret\"\nclient_secret = \"from-inline\""));
            let s = load_ok();
            assert_eq!(secret(tenant_of(&s)), "from-credential");
            assert!(s
                .warnings
                .iter()
                .any(|w| w.contains("app.client_secret_file is ignored")));

            config(
                j,
                &app("client_secret_file = \"secret\"\nclient_secret = \"from-inline\""),
            );
            assert_eq!(secret(tenant_of(&load_ok())), "from-file");

            config(j, &app("client_secret = \"from-inline\""));
            assert_eq!(secret(tenant_of(&load_ok())), "from-env");

            unset(j, "MDE_POLLER_APP__CLIENT_SECRET");
            let s = load_ok();
            assert_eq!(secret(tenant_of(&s)), "from-inline");
            assert!(
                s.warnings
                    .iter()
                    .any(|w| w.contains("app.client_secret is written inline")),
                "{:?}",
                s.warnings
            );
            assert!(s.warnings.iter().all(|w| !w.contains("from-inline")));
            Ok(())
        });
    }

    fn tenant_of(s: &Settings) -> &TenantSettings {
        tenant(s, "contoso")
    }

    #[test]
    fn secret_from_environment_is_taken_verbatim_without_warning() {
        jail(|j| {
            config(j, &format!("[app]\nclient_id = \"{CLIENT}\"\n[tenants.contoso]\ntenant_id = \"{TENANT_A}\"\n"));
            j.set_env("MDE_POLLER_APP__CLIENT_SECRET", "000123");
            let s = load_ok();
            assert_eq!(secret(tenant_of(&s)), "000123");
            assert!(s.warnings.is_empty(), "{:?}", s.warnings);
            Ok(())
        });
    }

    #[test]
    fn systemd_credentials_are_found_by_convention_per_app_and_per_tenant() {
        jail(|j| {
            let creds = j.directory().join("creds");
            secret_file(j, "creds/client-secret", "app-secret");
            secret_file(j, "creds/client-secret-fabrikam", "fabrikam-secret");
            j.set_env(CREDENTIALS_DIRECTORY, creds.display());
            config(
                j,
                &format!(
                    "[app]\nclient_id = \"{CLIENT}\"\n\
                     [tenants.contoso]\ntenant_id = \"{TENANT_A}\"\n\
                     [tenants.fabrikam]\ntenant_id = \"{TENANT_B}\"\n"
                ),
            );
            let s = load_ok();
            assert_eq!(secret(tenant(&s, "contoso")), "app-secret");
            assert_eq!(secret(tenant(&s, "fabrikam")), "fabrikam-secret");
            Ok(())
        });
    }

    #[test]
    fn tenant_credential_replaces_the_apps_as_a_whole() {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            // A real certificate and key: the file is parsed at load.
            let made = std::process::Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=t", "-days", "2",
                ])
                .args(["-keyout", "k.pem", "-out", "c.pem"])
                .current_dir(j.directory())
                .output()
                .expect("openssl runs");
            assert!(made.status.success());
            let pem = std::fs::read_to_string(j.directory().join("c.pem")).unwrap()
                + &std::fs::read_to_string(j.directory().join("k.pem")).unwrap();
            secret_file(j, "fabrikam.pem", &pem);
            config(
                j,
                &format!(
                    "[app]\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"secret\"\ncertificate_legacy_rs256 = true\n\
                     [tenants.contoso]\ntenant_id = \"{TENANT_A}\"\n\
                     [tenants.fabrikam]\ntenant_id = \"{TENANT_B}\"\nclient_id = \"{}\"\ncertificate_file = \"fabrikam.pem\"\n",
                    TENANT_B.replace('2', "3").to_uppercase()
                ),
            );
            let s = load_ok();
            let f = tenant(&s, "fabrikam");
            assert_eq!(f.client_id, "33333333-3333-3333-3333-333333333333");
            match &f.credential {
                Credential::Certificate { path, legacy_rs256 } => {
                    assert_eq!(path, &j.directory().join("fabrikam.pem"));
                    assert!(legacy_rs256);
                }
                Credential::Secret(_) => panic!("fabrikam uses its certificate"),
            }
            assert_eq!(secret(tenant(&s, "contoso")), SECRET);
            Ok(())
        });
    }

    #[test]
    fn secret_file_readable_by_others_is_warned_about() {
        jail(|j| {
            let path = secret_file(j, "secret", SECRET);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            config(j, &minimal());
            let s = load_ok();
            assert!(
                s.warnings
                    .iter()
                    .any(|w| w.contains(&path.display().to_string()) && w.contains("0644")),
                "{:?}",
                s.warnings
            );
            Ok(())
        });
    }

    #[test]
    fn cloud_presets_and_endpoint_overrides() {
        let cases = [
            (
                "global",
                "https://login.microsoftonline.com",
                "https://api.securitycenter.microsoft.com",
            ),
            (
                "gcc",
                "https://login.microsoftonline.com",
                "https://api-gcc.securitycenter.microsoft.us",
            ),
            (
                "gcc-high",
                "https://login.microsoftonline.us",
                "https://api-gov.securitycenter.microsoft.us",
            ),
            (
                "dod",
                "https://login.microsoftonline.us",
                "https://api-gov.securitycenter.microsoft.us",
            ),
        ];
        for (cloud, login, api) in cases {
            jail(|j| {
                secret_file(j, "secret", SECRET);
                config(j, &format!("cloud = \"{cloud}\"\n{}", minimal()));
                let s = load_ok();
                let t = tenant_of(&s);
                assert_eq!(
                    (t.login_url.as_str(), t.api_url.as_str()),
                    (login, api),
                    "{cloud}"
                );
                assert_eq!(t.token_scope, format!("{api}/.default"), "{cloud}");
                Ok(())
            });
        }
        jail(|j| {
            secret_file(j, "secret", SECRET);
            config(
                j,
                &format!(
                    "[endpoints]\nlogin_url = \"https://login.example.net/\"\napi_url = \"https://us.api.security.microsoft.com/\"\n{}\
                     [tenants.fabrikam]\ntenant_id = \"{TENANT_B}\"\napi_url = \"https://eu.api.security.microsoft.com/\"\n",
                    minimal()
                ),
            );
            let s = load_ok();
            let c = tenant(&s, "contoso");
            assert_eq!(c.login_url, "https://login.example.net");
            assert_eq!(c.api_url, "https://us.api.security.microsoft.com");
            let f = tenant(&s, "fabrikam");
            assert_eq!(f.api_url, "https://eu.api.security.microsoft.com");
            assert_eq!(
                f.token_scope,
                "https://api.securitycenter.microsoft.com/.default"
            );
            Ok(())
        });
    }

    #[test]
    fn plain_http_is_allowed_to_loopback_hosts_only() {
        for (url, ok) in [
            ("http://127.0.0.1:8080/", true),
            ("http://127.1.2.3", true),
            ("http://[::1]:9000", true),
            ("http://localhost:3000", true),
            ("https://api.example.com", true),
            ("http://api.example.com", false),
            ("http://10.0.0.1", false),
        ] {
            jail(|j| {
                secret_file(j, "secret", SECRET);
                config(
                    j,
                    &format!(
                        "[endpoints]\napi_url = \"{url}\"\nlogin_url = \"{url}\"\n{}",
                        minimal()
                    ),
                );
                let result = load(Path::new("config.toml"));
                assert_eq!(
                    result.is_ok(),
                    ok,
                    "{url}: {:?}",
                    result.err().map(|e| e.to_string())
                );
                if let Ok(s) = result {
                    assert!(!tenant_of(&s).api_url.ends_with('/'));
                }
                Ok(())
            });
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        jail(|j| {
            secret_file(j, "etc/secret", SECRET);
            j.create_dir("elsewhere")?;
            j.create_file(
                "etc/config.toml",
                &format!(
                    "{}\n[store]\npath = \"state/db.sqlite\"\n[output]\npath = \"out/alerts.ndjson\"\n",
                    minimal()
                ),
            )?;
            j.change_dir("elsewhere")?;
            let s = load(Path::new("../etc/config.toml")).unwrap_or_else(|e| panic!("{e}"));
            let etc = j.directory().join("elsewhere/../etc");
            assert_eq!(s.store.path, etc.join("state/db.sqlite"));
            assert_eq!(
                s.output.target,
                OutputTarget::File(etc.join("out/alerts.ndjson"))
            );
            assert_eq!(secret(tenant_of(&s)), SECRET);
            Ok(())
        });
    }

    #[test]
    fn partner_sets_the_user_agent() {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            config(
                j,
                &minimal().replace("[app]\n", "[app]\npartner = \"Contoso\"\n"),
            );
            let s = load_ok();
            assert_eq!(
                s.http.user_agent,
                format!("MdePartner-Contoso-MdePoller/{}", env!("CARGO_PKG_VERSION"))
            );
            Ok(())
        });
    }

    #[test]
    fn tenant_ids_are_lower_cased() {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            config(
                j,
                &minimal().replace(TENANT_A, "ABCDEF01-2345-6789-ABCD-EF0123456789"),
            );
            assert_eq!(
                tenant_of(&load_ok()).tenant_id,
                "abcdef01-2345-6789-abcd-ef0123456789"
            );
            Ok(())
        });
    }

    #[test]
    fn valid_cron_schedule_is_kept() {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            config(
                j,
                &format!("[poll]\nschedule = \"0 */5 * * * *\"\n{}", minimal()),
            );
            assert_eq!(load_ok().poll.schedule.as_deref(), Some("0 */5 * * * *"));
            Ok(())
        });
    }

    #[test]
    fn debug_output_and_errors_hide_secrets() {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            config(
                j,
                &format!(
                    "{}[tenants.fabrikam]\ntenant_id = \"{TENANT_B}\"\nclient_secret = \"inline-hunter2\"\n",
                    minimal()
                ),
            );
            j.set_env("MDE_POLLER_TENANTS__CONTOSO__CLIENT_SECRET", "env-hunter3");
            let s = load_ok();
            let shown = format!("{s:?}");
            for leak in [SECRET, "inline-hunter2", "env-hunter3"] {
                assert!(!shown.contains(leak), "{leak} in {shown}");
                assert!(s.warnings.iter().all(|w| !w.contains(leak)));
            }
            assert_eq!(secret(tenant(&s, "contoso")), "env-hunter3");

            // An error about the tenants does not quote them either.
            j.set_env("MDE_POLLER_TENANTS__CONTOSO__TENANT_ID", "env-hunter3");
            let e = load_err();
            assert!(!e.to_string().contains("inline-hunter2"));
            Ok(())
        });
    }

    #[test]
    fn example_config_loads() {
        jail(|j| {
            config(j, include_str!("../config/example.toml"));
            let creds = j.directory().join("creds");
            secret_file(j, "creds/client-secret", "app-secret");
            secret_file(j, "creds/fabrikam-client-secret", "fabrikam-secret");
            j.set_env(CREDENTIALS_DIRECTORY, creds.display());
            let s = load_ok();
            assert_eq!(s.tenants.len(), 2);
            assert!(s
                .tenants
                .iter()
                .all(|t| matches!(t.credential, Credential::Secret(_))));
            assert!(s.warnings.is_empty(), "{:?}", s.warnings);
            Ok(())
        });
    }
}
