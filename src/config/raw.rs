//! The config file as written: every key, its default and its documentation
//! for the operator (these docs are the reference for `config/example.toml`).
//!
//! Every struct denies unknown keys. Strings are read leniently (`scalar`)
//! because an environment override like `MDE_POLLER_POLL__INTERVAL=300`
//! arrives as a number; `check` then says what is wrong with the value.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// The whole config file.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawConfig {
    /// Which Microsoft cloud the tenants live in: `global`, `gcc`, `gcc-high`
    /// or `dod`. Picks the login host, the API host and the token scope;
    /// `[endpoints]` overrides each of them.
    #[serde(deserialize_with = "scalar")]
    pub(super) cloud: String,
    /// The partner's multi-tenant Entra ID application.
    pub(super) app: RawApp,
    /// Hosts, when the ones `cloud` implies are not right.
    pub(super) endpoints: RawEndpoints,
    /// How the daemon reaches Microsoft: extra CA bundle, proxy.
    pub(super) http: RawHttp,
    /// When and how far back each tenant is polled.
    pub(super) poll: RawPoll,
    /// The SQLite database of alerts already emitted and cursors.
    pub(super) store: RawStore,
    /// Where the alert lines go and in which shape.
    pub(super) output: RawOutput,
    /// The daemon's own diagnostics on stderr.
    pub(super) log: RawLog,
    /// The Prometheus endpoint (`/metrics`, `/healthz`); off unless set.
    pub(super) metrics: RawMetrics,
    /// The daemon's self-audit against the API; off unless `every` is set.
    pub(super) audit: RawAudit,
    /// One table per customer tenant; the key is the tenant's name.
    pub(super) tenants: BTreeMap<String, RawTenant>,
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
            audit: RawAudit::default(),
            tenants: BTreeMap::new(),
        }
    }
}

/// `[app]`: the partner's application, used by every tenant that does not
/// name its own.
#[derive(Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawApp {
    /// The application (client) id, a GUID, from the app registration.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) client_id: Option<String>,
    /// Your company name: the User-Agent becomes
    /// `MdePartner-{partner}-MdePoller/{version}` (Microsoft's partner
    /// convention). No spaces or slashes.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) partner: Option<String>,
    /// The client secret written inline. Accepted with a warning: prefer
    /// `client_secret_credential`, `client_secret_file`, or the environment
    /// variable `MDE_POLLER_APP__CLIENT_SECRET`.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) client_secret: Option<String>,
    /// A file holding the client secret (trailing newline ignored). Relative
    /// paths are relative to the config file's folder. Keep it mode 0600.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) client_secret_file: Option<String>,
    /// The name of a systemd credential (`LoadCredential=NAME:...`) holding
    /// the client secret: read from `$CREDENTIALS_DIRECTORY/NAME`. When no
    /// secret is named at all, the credential `client-secret` is used if present.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) client_secret_credential: Option<String>,
    /// A PEM file with the app's certificate and its RSA private key: tokens
    /// are then requested with a signed client assertion instead of a secret.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) certificate_file: Option<String>,
    /// Sign the client assertion the older way (RS256 with an `x5t` SHA-1
    /// thumbprint) instead of PS256 with `x5t#S256`.
    pub(super) certificate_legacy_rs256: bool,
}

/// `[endpoints]`: overrides of the hosts `cloud` picks.
#[derive(Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawEndpoints {
    /// The Entra ID login host, e.g. `https://login.microsoftonline.com`.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) login_url: Option<String>,
    /// The Defender for Endpoint API host, e.g.
    /// `https://api.securitycenter.microsoft.com` or a regional one such as
    /// `https://eu.api.security.microsoft.com`.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) api_url: Option<String>,
    /// The OAuth scope asked for, e.g.
    /// `https://api.securitycenter.microsoft.com/.default` (regional hosts
    /// take this global scope).
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) token_scope: Option<String>,
    /// The Microsoft Graph host for tenants with `source = "graph"`; `cloud`
    /// picks it: `https://graph.microsoft.com` (global, gcc),
    /// `https://graph.microsoft.us` (gcc-high), `https://dod-graph.microsoft.us` (dod).
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) graph_url: Option<String>,
    /// The OAuth scope of Graph tenants' tokens, e.g.
    /// `https://graph.microsoft.com/.default` (`cloud` picks it).
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) graph_scope: Option<String>,
}

/// `[http]`: how Microsoft is reached.
#[derive(Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawHttp {
    /// An extra PEM CA bundle to trust, e.g. for a TLS-inspecting proxy.
    /// Relative paths are relative to the config file's folder.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) ca_file: Option<String>,
    /// A proxy URL (`http://` or `https://`). Without it, `HTTPS_PROXY` and
    /// `NO_PROXY` from the environment apply.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) proxy: Option<String>,
}

/// `[poll]`: when and how each tenant is polled.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPoll {
    /// Time between two polls of one tenant, e.g. `"5m"`; at least `"1s"`.
    #[serde(deserialize_with = "scalar")]
    pub(super) interval: String,
    /// A cron expression with seconds (`"0 */5 * * * *"`): polls on the clock
    /// instead of every `interval`.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) schedule: Option<String>,
    /// Each poll re-reads this far behind the newest `lastUpdateTime` already
    /// seen, to catch alerts that reach the API late. `"0s"` disables it.
    #[serde(deserialize_with = "scalar")]
    pub(super) lookback: String,
    /// How far back a tenant's very first poll reaches, e.g. `"24h"`.
    #[serde(deserialize_with = "scalar")]
    pub(super) first_lookback: String,
    /// Alerts asked for per request (`$top`), 1 to 10000.
    pub(super) page_size: i64,
    /// How many tenants are polled at the same time (at least 1).
    pub(super) concurrency: i64,
    /// Time limit of one HTTP request, e.g. `"30s"`.
    #[serde(deserialize_with = "scalar")]
    pub(super) timeout: String,
    /// Ask for each alert's evidence too (`$expand=evidence`; MDE only:
    /// Graph always includes evidence).
    pub(super) expand_evidence: bool,
    /// Which API every tenant reads unless it names its own: `mde` (the
    /// Defender for Endpoint API, `/api/alerts`, which stops working after
    /// 1 February 2027) or `graph` (Microsoft Graph `alerts_v2`).
    #[serde(deserialize_with = "scalar")]
    pub(super) source: String,
    /// Graph tenants only: the Defender products to read, as Graph's
    /// `serviceSource` spells them (e.g. `["microsoftDefenderForEndpoint"]`);
    /// empty = every product.
    pub(super) service_sources: Vec<String>,
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
            source: "mde".into(),
            service_sources: Vec::new(),
        }
    }
}

/// `[store]`: the local SQLite database.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawStore {
    /// The database file; relative paths are relative to the config file's folder.
    #[serde(deserialize_with = "scalar")]
    pub(super) path: String,
    /// Forget alerts not updated for this long, e.g. `"90d"`.
    #[serde(deserialize_with = "scalar")]
    pub(super) retention: String,
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
pub(super) struct RawOutput {
    /// `raw` (the alert as the API returned it), `ecs` (Elastic Common
    /// Schema) or `ocsf` (OCSF Detection Finding).
    #[serde(deserialize_with = "scalar")]
    pub(super) format: String,
    /// `"-"` for stdout, else a file appended to (and reopened on SIGHUP);
    /// relative paths are relative to the config file's folder.
    #[serde(deserialize_with = "scalar")]
    pub(super) path: String,
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
pub(super) struct RawLog {
    /// A level (`error`, `warn`, `info`, `debug`, `trace`) or a tracing
    /// filter such as `"info,mde_poller::api=debug"`. `RUST_LOG` wins when set.
    #[serde(deserialize_with = "scalar")]
    pub(super) level: String,
    /// `json` (one object per line, for journald/SIEM) or `text`.
    #[serde(deserialize_with = "scalar")]
    pub(super) format: String,
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
pub(super) struct RawMetrics {
    /// `"127.0.0.1:9464"` serves `/metrics` and `/healthz` there; unset, no
    /// port is opened. Name another address than loopback only when
    /// Prometheus must reach it from elsewhere: nothing asks who scrapes.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) listen: Option<String>,
}

/// `[audit]`: the daemon compares, per tenant, the alert versions the API
/// holds with those it emitted, and emits what is missing.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAudit {
    /// How often each tenant is audited, e.g. `"24h"`; unset, the daemon
    /// never audits (`mde-poller audit` still can).
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) every: Option<String>,
    /// How far back each audit compares, e.g. `"7d"` (never further than
    /// `store.retention` and the tenant's first poll reached).
    #[serde(deserialize_with = "scalar")]
    pub(super) window: String,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            every: None,
            window: "7d".into(),
        }
    }
}

/// `[tenants.NAME]`: one customer tenant. NAME is lower case letters,
/// digits, `_` and `-`; it names the tenant in the output and the logs.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawTenant {
    /// The customer's tenant id, a GUID (the customer gives it to you).
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) tenant_id: Option<String>,
    /// `false` keeps the tenant in the file but stops polling it.
    pub(super) enabled: bool,
    /// This tenant's own application (client) id, instead of `[app]`'s.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) client_id: Option<String>,
    /// This tenant's own client secret, inline (accepted with a warning).
    /// Giving any credential key here replaces `[app]`'s credential entirely.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) client_secret: Option<String>,
    /// A file holding this tenant's own client secret.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) client_secret_file: Option<String>,
    /// A systemd credential holding this tenant's own client secret. Without
    /// any credential key here, `$CREDENTIALS_DIRECTORY/client-secret-NAME`
    /// is used when it exists.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) client_secret_credential: Option<String>,
    /// A PEM certificate + private key for this tenant's own application.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) certificate_file: Option<String>,
    /// Like `[app] certificate_legacy_rs256`, for this tenant's certificate
    /// (defaults to `[app]`'s value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) certificate_legacy_rs256: Option<bool>,
    /// This tenant's API host (e.g. a regional one); the token scope stays.
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) api_url: Option<String>,
    /// `mde` or `graph`: this tenant's API, instead of `[poll] source`.
    /// Switching a tenant keeps its place (its cursor).
    #[serde(
        deserialize_with = "opt_scalar",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) source: Option<String>,
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
            source: None,
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
