//! mde-poller: pulls Microsoft Defender for Endpoint alerts of many customer
//! tenants into a SIEM, one JSON line per new or changed alert.
//!
//! # Layout
//!
//! - [`config`]: figment layering, validation (exit 78), cloud presets, secrets;
//!   certificates and the CA bundle parsed once, at load.
//! - [`auth`]: one client-credentials token per tenant (secret or certificate),
//!   cached and single-flight; AADSTS errors with operator hints; claim decoding.
//! - [`api`]: the alerts API: OData filter text, time-windowed paging, error
//!   mapping, retries, and the per-tenant call budget ([`ratelimit`]).
//! - [`poll`]: one poll of one tenant: windows → fetch → dedup → emit → commit.
//! - [`scheduler`]: tokio-cron-scheduler jobs per tenant, no overlap, a
//!   concurrency bound, and the reload diff.
//! - [`store`]: SQLite: migrations, versions emitted, cursors, poll history.
//! - [`output`]: the NDJSON sink (stdout or an appended file) and formats.
//! - [`daemon`]: `run()`: signals, reload, sd_notify, shutdown as a parameter.
//! - `sim`: the simulator of Entra ID + the alerts API used by the tests,
//!   `mde-poller demo` and the benchmark; with `demo`, behind the cargo
//!   feature `sim` (on by default, off in the packaged daemon).
//!
//! Around them: [`cli`] (the command line), [`commands`] (`check`, `status`,
//! `consent-url`), `demo`, [`events`] (every log line, by name),
//! [`logging`] (tracing on stderr), [`metrics`] (Prometheus counters and
//! gauges, `/metrics` and `/healthz`), [`notify`]
//! (sd_notify and the watchdog), [`http`] (the shared client), [`backoff`],
//! and [`timestamp`] (the API's 100 ns timestamps).
//!
//! Data flows one way: config → scheduler → poll (auth, api) → output → store.
//! The store never calls the API; the output never sees tokens; `poll` alone
//! decides what counts as new.

pub mod api;
pub mod auth;
pub mod backoff;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
#[cfg(feature = "sim")]
pub mod demo;
pub mod events;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod output;
pub mod poll;
pub mod ratelimit;
pub mod scheduler;
#[cfg(feature = "sim")]
pub mod sim;
pub mod slots;
pub mod store;
pub mod storelock;
pub mod timestamp;
