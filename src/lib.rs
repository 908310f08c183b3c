//! mde-poller: pulls the Microsoft Defender alerts of many customer tenants
//! into a SIEM, from the Defender for Endpoint alerts API or Microsoft Graph's
//! `alerts_v2`, one JSON line per new or changed alert.
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
//! - [`scheduler`]: one tokio-cron-scheduler ticker over a table of due
//!   times, each tenant at its own phase of the interval; no overlap, a
//!   concurrency bound, and the reload diff.
//! - [`store`]: SQLite: migrations, versions emitted, cursors, poll history.
//! - [`output`]: the NDJSON sink (stdout or an appended file) and formats.
//! - [`daemon`]: `run()`: signals, reload, sd_notify, shutdown as a parameter.
//! - `sim`: the simulator of Entra ID + the alerts API used by the tests,
//!   `mde-poller demo` and the benchmark; with `demo`, behind the cargo
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
