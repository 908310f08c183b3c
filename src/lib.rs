//! mde-poller: pulls the Microsoft Defender alerts of many customer tenants
//! into a SIEM, from the Defender for Endpoint alerts API or Microsoft Graph's
//! `alerts_v2`, one JSON line per new or changed alert.
//!
//! # Layout
//!
//! - `config/`: the TOML file and `MDE_POLLER_*` layered by figment
//!   (`layers`), its raw shape (`raw`), every check with its key (`check`,
//!   exit 78), credentials, tenants, cloud presets and the typed
//!   [`config::Settings`]; certificates and the CA bundle are read once, here.
//! - `auth/`: one client-credentials token per tenant (secret or certificate
//!   assertion), cached and single-flight; claims; AADSTS errors with their
//!   summary and hint.
//! - `api`: the alerts APIs (MDE and Graph): OData filter text, pages,
//!   nextLink checks, body limits, error mapping and retries; each call
//!   counted against the tenant's `ratelimit` budget.
//! - [`poll`]: one poll of one tenant. `poll/planner.rs` decides which time
//!   windows to read (pure: no I/O, no clock), `poll/classify.rs` decides what
//!   is new, an update or already emitted (pure); `poll/mod.rs` runs
//!   fetch → dedup → emit → commit and moves the cursor.
//! - [`scheduler`]: the tenants' schedule: one tokio-cron-scheduler ticker
//!   over a table of due times, each tenant at its own phase of the
//!   interval; no overlap per tenant, the `poll.concurrency` bound (`slots`:
//!   given back while a poll only waits to retry), the reload diff;
//!   [`scheduler::tenant_poll`] is the one constructor of a tenant's poller.
//! - `store`: SQLite (migrations in `migrations/`): versions emitted,
//!   cursors, poll history, budgets, audits; `storelock`: one writing process
//!   per database.
//! - [`output`]: the formats (raw, ECS, OCSF) and `record_id`; the emitter
//!   that writes a page under one lock; the sink (stdout or an appended file).
//! - [`daemon`]: `run`: signals, reload, sd_notify ([`notify`]), shutdown.
//! - [`audit`]: the API against the store over a range (`audit` and the
//!   daemon's self-audit), through `poll`'s reading.
//! - [`events`]: every log line, by name and level; [`logging`]: tracing on
//!   stderr; [`metrics`]: Prometheus counters and gauges, `/metrics`,
//!   `/healthz`.
//! - [`cli`] and [`commands`] (`check`, `status`, `consent-url`); [`http`]
//!   (the one client); `backoff`; [`timestamp`] (the APIs' 100 ns times).
//! - [`sim`]: the one simulator of Entra ID, the MDE API and Graph, used by
//!   the tests, `demo` and the benchmarks; with `demo`, behind the cargo
//!   feature `sim` (on by default, off in the packaged daemon).
//!
//! Data flows one way: config → scheduler → poll (auth, api) → output → store.
//! The store never calls the API; the output never sees tokens; `poll` alone
//! decides what counts as new.
//!
//! # Public surface
//!
//! What `main.rs`, the integration tests and the benchmarks use; everything
//! else is `pub(crate)` and `unreachable_pub` warns when that slips. Modules
//! without a link above are private.

#![warn(unreachable_pub)]
// The docs are for the people who work on the daemon, built with
// `cargo doc --document-private-items`: linking a private item is the point.
#![allow(rustdoc::private_intra_doc_links)]

mod api;
pub mod audit;
mod auth;
mod backoff;
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
mod slots;
mod store;
mod storelock;
pub mod timestamp;
