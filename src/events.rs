//! Every log line the daemon writes, by name: one function per event, with
//! fixed fields (`tenant` first on every line about a tenant, the message
//! last) and a fixed level: ERROR only for what an operator must act on, WARN
//! for a problem the daemon recovers from or retries, INFO for what happened,
//! DEBUG for detail.
//!
//! Call sites pass values, never a level or a message, so two places that
//! report the same thing cannot drift apart. docs/DEPLOY.md's "Log events"
//! table lists them all; a test below keeps the table and this file equal,
//! and another that no other module calls `tracing` itself.
//!
//! The metrics that count these events are counted here too, beside their
//! line, so that a log line and its counter cannot disagree.

use std::fmt::{Debug, Display};
use std::path::Path;
use std::time::Duration;

use crate::auth::AuthError;
use crate::metrics;
use crate::poll::{PollError, PollReport};
use crate::timestamp::Timestamp;

// ---- The daemon's life --------------------------------------------------

pub(crate) fn daemon_started(tenants: usize, config: &Path) {
    tracing::info!(event = "daemon_started", tenants, config = %config.display(), "polling");
}

pub(crate) fn daemon_stopping() {
    tracing::info!(
        event = "daemon_stopping",
        "stopping: no new polls; finishing the pages in flight"
    );
}

pub(crate) fn daemon_stopped() {
    tracing::info!(event = "daemon_stopped", "stopped");
}

/// Start-up and each reload, one line for all the tenants still reading the
/// MDE API, which stops working after 1 February 2027: how many, the first
/// few by name, and how to switch. One line, not one per tenant: a fleet of
/// 5,000 MDE tenants must not start with 5,000 WARN lines that bury the rest.
/// WARN: nothing fails yet, but someone must act. Nothing when there are none.
pub(crate) fn mde_retirement_notice(tenants: &[&str]) {
    if tenants.is_empty() {
        return;
    }
    tracing::warn!(
        event = "mde_retirement_notice",
        tenants = tenants.len(),
        names = %first_names(tenants, MDE_NAMES_SHOWN),
        hint = MDE_RETIREMENT_HINT,
        "tenants still read the Defender for Endpoint API, which stops working after 1 February 2027; switch each to source = \"graph\""
    );
}

/// How many tenant names `mde_retirement_notice` shows; DEBUG lists them all.
const MDE_NAMES_SHOWN: usize = 5;

/// What an operator does for each tenant the notice counts.
const MDE_RETIREMENT_HINT: &str = "Microsoft retires the Defender for Endpoint API after 1 February 2027 (MC1220762). For each tenant: add Microsoft Graph → Application permissions → SecurityAlert.Read.All to the app, have the customer consent again (mde-poller consent-url), then set source = \"graph\" in its [tenants.NAME] table; its cursor is kept. `mde-poller check` names every tenant still on mde; see README \"Moving to Microsoft Graph before 1 February 2027\"";

/// `a, b, c` or, past `shown` names, `a, b, c and 12 more`.
fn first_names(names: &[&str], shown: usize) -> String {
    let mut text = names[..names.len().min(shown)].join(", ");
    if names.len() > shown {
        text.push_str(&format!(" and {} more", names.len() - shown));
    }
    text
}

/// Start-up and each reload, at DEBUG, per tenant the WARN above counts: the
/// full list, for whoever works through it (`check` says it per tenant too).
pub(crate) fn mde_retirement_tenant(tenant: &str) {
    tracing::debug!(
        event = "mde_retirement_tenant",
        tenant,
        "this tenant reads the Defender for Endpoint API, which stops working after 1 February 2027"
    );
}

/// Start-up and each reload, once: `page_size` is above Graph's cap, so Graph tenants ask
/// for 1,000 a page (not an error: one config serves both sources).
pub(crate) fn graph_page_size_clamped(page_size: u32, top: u32, tenants: usize) {
    tracing::info!(
        event = "graph_page_size_clamped",
        page_size,
        top,
        tenants,
        "poll.page_size is above Microsoft Graph's 1000: Graph tenants ask for 1000 alerts a page"
    );
}

#[cfg(feature = "sim")]
pub(crate) fn demo_started(simulator: &str, config: &Path) {
    tracing::info!(event = "demo_started", simulator, config = %config.display(), "demo: the simulator serves 4 tenants; fabrikam never consented, tailspin is read through Microsoft Graph");
}

/// A command could not run at all (the database or output cannot be opened).
pub fn fatal(error: &anyhow::Error) {
    tracing::error!(event = "fatal", error = format!("{error:#}"), "stopping");
}

pub(crate) fn shutdown_timeout(grace: Duration) {
    tracing::warn!(
        event = "shutdown_timeout",
        grace_ms = grace.as_millis() as u64,
        "polls still running after the shutdown grace; stopping anyway"
    );
}

/// The scheduler's heartbeat stopped: systemd's watchdog will restart us.
pub(crate) fn scheduler_stalled(since_ms: u64) {
    tracing::error!(
        event = "scheduler_stalled",
        since_ms,
        "scheduler made no progress; withholding the watchdog ping"
    );
}

pub(crate) fn metrics_listening(address: &impl Display) {
    tracing::info!(event = "metrics_listening", address = %address, "serving /metrics and /healthz");
}

/// `[metrics] listen` names an address other hosts can reach.
pub(crate) fn metrics_exposed(address: &impl Display) {
    tracing::warn!(
        event = "metrics_exposed",
        address = %address,
        "/metrics and /healthz are served beyond loopback, to whoever reaches this address; firewall it, or listen on 127.0.0.1"
    );
}

pub(crate) fn sd_notify_failed(error: &impl Display) {
    tracing::debug!(event = "sd_notify_failed", error = %error, "sd_notify failed");
}

// ---- Configuration and reload -------------------------------------------

/// The warning's own words are the message: each names its key.
pub(crate) fn config_warning(warning: &impl Display) {
    tracing::warn!(event = "config_warning", "{warning}");
}

pub(crate) fn reload_failed(error: &impl Display) {
    tracing::error!(event = "reload_failed", error = %error, "the new config is not applied; the running config stays in force");
}

pub(crate) fn reloaded(tenants: usize) {
    tracing::info!(event = "reloaded", tenants, "config reloaded");
}

pub(crate) fn restart_needed(key: &'static str) {
    tracing::warn!(
        event = "restart_needed",
        key,
        "this setting changes at the next restart"
    );
}

pub(crate) fn log_level_unchanged(error: &impl Display) {
    tracing::warn!(event = "log_level_unchanged", error = %error, "could not change the log level");
}

/// `[poll]` changed: every tenant's schedule restarts with it (one line, not
/// one `tenant_added` per tenant).
pub(crate) fn poll_settings_changed(tenants: usize) {
    tracing::info!(
        event = "poll_settings_changed",
        tenants,
        "[poll] settings changed; every tenant's schedule restarts"
    );
}

// ---- Output and store ---------------------------------------------------

pub(crate) fn output_changed(target: &impl Debug) {
    tracing::info!(event = "output_changed", target = ?target, "output changed");
}

pub(crate) fn output_open_failed(error: &impl Display) {
    tracing::error!(event = "output_open_failed", error = %error, "cannot open the new output; keeping the old one");
}

pub(crate) fn output_reopen_failed(error: &impl Display) {
    tracing::error!(event = "output_reopen_failed", error = %error, "cannot reopen the output file; still writing to the old one");
}

pub(crate) fn store_pruned(alerts: usize, polls: usize) {
    tracing::info!(
        event = "store_pruned",
        alerts,
        polls,
        "forgot rows older than store.retention"
    );
}

pub(crate) fn store_prune_failed(error: &impl Display) {
    tracing::warn!(event = "store_prune_failed", error = %error, "pruning failed; will try again");
}

pub(crate) fn store_not_wal(path: &Path, journal_mode: &str) {
    tracing::warn!(
        event = "store_not_wal",
        path = %path.display(),
        journal_mode,
        "the state database could not switch to WAL mode; `status` may block while polling"
    );
}

// ---- Tenants: the reload diff -------------------------------------------

pub(crate) fn tenant_added(tenant: &str) {
    tracing::info!(event = "tenant_added", tenant, "tenant added");
}

pub(crate) fn tenant_changed(tenant: &str) {
    tracing::info!(
        event = "tenant_changed",
        tenant,
        "tenant settings changed; restarting its schedule"
    );
}

pub(crate) fn tenant_removed(tenant: &str, tenant_id: &str) {
    tracing::info!(
        event = "tenant_removed",
        tenant,
        tenant_id,
        "tenant no longer polled (a poll in flight finishes)"
    );
}

/// The tenant's credential cannot be loaded; `kept` when it had a working
/// one that stays in force.
pub(crate) fn tenant_credential_invalid(tenant: &str, error: &AuthError, kept: bool) {
    if !kept {
        metrics::global().tenant_refused(tenant);
    }
    tracing::error!(
        event = "tenant_credential_invalid",
        tenant,
        error = %error,
        hint = error.hint(),
        previous_kept = kept,
        "tenant cannot use its credential"
    );
}

// ---- Polls ----------------------------------------------------------------

/// A tick that did not poll; `reason` says why, `retry_after_s` when the
/// API's Retry-After is what holds it.
pub(crate) fn poll_skipped(tenant: &str, reason: &'static str, retry_after_s: Option<u64>) {
    tracing::debug!(
        event = "poll_skipped",
        tenant,
        reason,
        retry_after_s,
        "poll skipped"
    );
}

pub(crate) fn poll_finished(tenant: &str, report: &PollReport, elapsed_ms: u64) {
    metrics::global().poll_succeeded(tenant, report.cursor.as_deref(), elapsed_ms);
    tracing::info!(
        event = "poll_finished",
        tenant,
        seen = report.seen,
        emitted = report.emitted,
        requests = report.requests,
        cursor = report.cursor.as_deref().unwrap_or("-"),
        elapsed_ms,
        "poll finished"
    );
}

/// ERROR when retrying cannot help until someone acts, WARN otherwise.
pub(crate) fn poll_failed(tenant: &str, error: &PollError, elapsed_ms: u64) {
    metrics::global().poll_failed(tenant, Some(elapsed_ms), false);
    if error.needs_operator() {
        tracing::error!(event = "poll_failed", tenant, error = %error, hint = error.hint(), elapsed_ms, "poll failed; cursor unchanged, the next poll tries again");
    } else {
        tracing::warn!(event = "poll_failed", tenant, error = %error, hint = error.hint(), elapsed_ms, "poll failed; cursor unchanged, the next poll tries again");
    }
}

/// A server that ignores `$skip` in a crowded instant: read once with the
/// largest `$top`; `note` (also shown by `status`) says what could be read.
pub(crate) fn skip_ignored(tenant: &str, at: Timestamp, count: usize, note: &str) {
    tracing::warn!(event = "skip_ignored", tenant, at = %at, count, "{note}");
}

pub(crate) fn next_link_refused(tenant: &str, host: &str) {
    tracing::warn!(event = "next_link_refused", tenant, host, "the API sent an @odata.nextLink to another host: not followed (the token goes nowhere else); reading by time windows instead");
}

pub(crate) fn next_link_cycle(tenant: &str, links: usize) {
    tracing::warn!(
        event = "next_link_cycle",
        tenant,
        links,
        "an @odata.nextLink came back a second time: the chain ends there"
    );
}

pub(crate) fn next_link_chain_cut(tenant: &str, links: usize) {
    tracing::warn!(
        event = "next_link_chain_cut",
        tenant,
        links,
        "the @odata.nextLink chain is too long: cut, reading by time windows instead"
    );
}

/// A token lifetime over a day (a broken or hostile token endpoint).
pub(crate) fn token_lifetime_clamped(lifetime_s: f64) {
    tracing::warn!(
        event = "token_lifetime_clamped",
        lifetime_s,
        "the token endpoint gave a lifetime over a day; the token is renewed within a day"
    );
}

pub(crate) fn poll_abandoned(tenant: &str) {
    metrics::global().poll_abandoned();
    tracing::info!(
        event = "poll_abandoned",
        tenant,
        "poll stopped by shutdown; its unfinished pages will be read again"
    );
}

/// A token error only a person can fix; the tenant waits `retry_in`.
pub(crate) fn tenant_auth_failed(tenant: &str, error: &AuthError, retry_in: Duration) {
    metrics::global().poll_failed(tenant, None, true);
    tracing::error!(
        event = "tenant_auth_failed",
        tenant,
        code = error.code().unwrap_or(0),
        error = %error,
        hint = error.hint(),
        retry_in_s = retry_in.as_secs(),
        "token request refused; tenant paused"
    );
}

pub(crate) fn window_split(tenant: &str, from: Timestamp, mid: Timestamp) {
    tracing::debug!(event = "window_split", tenant, from = %from, mid = %mid, "full page: window split in two");
}

/// A full window's newest twelfth is read first: what it holds measures the
/// page, and so where the rest of the window is cut.
pub(crate) fn window_probe(tenant: &str, from: Timestamp, at: Timestamp) {
    tracing::debug!(event = "window_probe", tenant, from = %from, at = %at, "full page: its newest part is read first, to place the cuts");
}

pub(crate) fn window_cut(tenant: &str, from: Timestamp, pieces: usize) {
    tracing::debug!(event = "window_cut", tenant, from = %from, pieces, "full page: the rest of its window is read in pieces, at once");
}

pub(crate) fn instant_paging(tenant: &str, at: Timestamp) {
    tracing::warn!(event = "instant_paging", tenant, at = %at, "one instant holds a full page: paging with $skip");
}

/// A page that failed in a way worth another try (throttled, a 5xx, a broken
/// or garbled answer) is fetched again after `delay`.
pub(crate) fn api_retry(tenant: &str, error: &impl Display, attempt: u32, delay: Duration) {
    tracing::warn!(event = "api_retry", tenant, error = %error, attempt, delay_ms = delay.as_millis() as u64, "alerts API page not had; fetching it again");
}

// ---- Audits ---------------------------------------------------------------

/// One tenant's audit ended: WARN when versions were missing (polling alone
/// lost them: `lookback` may be too short), INFO otherwise.
pub(crate) fn audit_finished(
    tenant: &str,
    range: &crate::audit::Range,
    counts: &crate::poll::AuditCounts,
) {
    metrics::global().set_audit_missing(tenant, counts.missing);
    let (from, to) = (range.from, range.to);
    if counts.missing > 0 {
        tracing::warn!(event = "audit_finished", tenant, from = %from, to = %to, in_api = counts.in_api, emitted = counts.emitted, missing = counts.missing, repaired = counts.repaired, requests = counts.requests, "audit found alert versions the API holds that were never emitted");
    } else {
        tracing::info!(event = "audit_finished", tenant, from = %from, to = %to, in_api = counts.in_api, emitted = counts.emitted, missing = counts.missing, repaired = counts.repaired, requests = counts.requests, "audit finished: nothing missing");
    }
}

pub(crate) fn audit_failed(tenant: &str, error: &PollError) {
    tracing::warn!(event = "audit_failed", tenant, error = %error, hint = error.hint(), "audit failed; the next one tries again");
}

/// A due self-audit that waits for a later tick (`reason` says why).
pub(crate) fn audit_deferred(tenant: &str, reason: &'static str) {
    tracing::debug!(event = "audit_deferred", tenant, reason, "audit deferred");
}

// ---- Tokens ---------------------------------------------------------------

pub(crate) fn token_acquired(tenant: &str, expires_in: Duration) {
    tracing::debug!(
        event = "token_acquired",
        tenant,
        expires_in_s = expires_in.as_secs(),
        "token acquired"
    );
}

pub(crate) fn token_retry(tenant: &str, error: &AuthError, attempt: u32, delay: Duration) {
    tracing::warn!(
        event = "token_retry",
        tenant,
        error = %error,
        attempt,
        delay_ms = delay.as_millis() as u64,
        "token request failed; retrying"
    );
}

pub(crate) fn token_invalidated(tenant: &str) {
    tracing::info!(
        event = "token_invalidated",
        tenant,
        "token refused by the API; a new one will be requested"
    );
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// Event name → the levels it is logged at, read from this file: each
    /// event function must log exactly the event it is named for.
    fn events_in_code() -> BTreeMap<String, BTreeSet<String>> {
        let source = include_str!("events.rs");
        let code = &source[..source
            .find("#[cfg(test)]\nmod tests")
            .expect("a test module")];
        // `fatal` is public (main.rs calls it), the rest `pub(crate)`.
        let code = code.replace("\npub(crate) fn ", "\npub fn ");
        let mut events = BTreeMap::new();
        for function in code.split("\npub fn ").skip(1) {
            let name = &function[..function.find('(').expect("a signature")];
            let mut levels = BTreeSet::new();
            for call in function.split("tracing::").skip(1) {
                let level = &call[..call.find('!').expect("a macro")];
                let at = call.find("event = \"").expect("every call names its event") + 9;
                let event = &call[at..at + call[at..].find('"').unwrap()];
                assert_eq!(event, name, "pub fn {name} logs event {event}");
                levels.insert(level.to_uppercase());
            }
            assert!(!levels.is_empty(), "pub fn {name} logs nothing");
            assert!(
                events.insert(name.to_owned(), levels).is_none(),
                "two functions named {name}"
            );
        }
        events
    }

    /// The rows of docs/DEPLOY.md's event table: `| `name` | LEVEL | … |`.
    fn events_in_docs() -> BTreeMap<String, BTreeSet<String>> {
        let docs = include_str!("../docs/DEPLOY.md");
        let table = &docs[docs.find("### Log events").expect("a Log events section")..];
        table
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2) // the header and its rule
            .map(|row| {
                let cells: Vec<&str> = row.split('|').map(str::trim).collect();
                let name = cells[1].trim_matches('`').to_owned();
                let levels = cells[2].split(',').map(|l| l.trim().to_owned()).collect();
                (name, levels)
            })
            .collect()
    }

    #[test]
    fn the_retirement_notice_names_five_tenants_and_counts_the_rest() {
        let names: Vec<String> = (1..=5000).map(|n| format!("t{n}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            super::first_names(&names, 5),
            "t1, t2, t3, t4, t5 and 4995 more"
        );
        assert_eq!(super::first_names(&names[..5], 5), "t1, t2, t3, t4, t5");
        assert_eq!(super::first_names(&names[..1], 5), "t1");
    }

    #[test]
    fn the_deploy_guide_lists_every_event_at_its_level_and_no_other() {
        let code = events_in_code();
        let docs = events_in_docs();
        let missing: Vec<_> = code.keys().filter(|k| !docs.contains_key(*k)).collect();
        let stale: Vec<_> = docs.keys().filter(|k| !code.contains_key(*k)).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "docs/DEPLOY.md's event table lacks {missing:?} and lists gone events {stale:?}"
        );
        for (name, levels) in &code {
            assert_eq!(&docs[name], levels, "the level of {name} in docs/DEPLOY.md");
        }
        assert!(code.len() > 30, "the parser found only {}", code.len());
    }

    #[test]
    fn no_module_logs_except_through_this_one() {
        // The simulator logs for itself; src/poll* is being restructured
        // and its few calls move here right after (issue 7).
        let exempt = ["src/events.rs", "src/sim/"];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut pending = vec![root.join("src")];
        let mut offenders = Vec::new();
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("src is readable") {
                let path = entry.expect("a directory entry").path();
                let shown = path.strip_prefix(root).unwrap().display().to_string();
                if exempt.iter().any(|e| shown.starts_with(e)) {
                    continue;
                }
                if path.is_dir() {
                    pending.push(path);
                } else if shown.ends_with(".rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for level in ["trace", "debug", "info", "warn", "error", "event"] {
                        if text.contains(&format!("tracing::{level}!")) {
                            offenders.push(format!("{shown}: tracing::{level}!"));
                        }
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "log through crate::events: {offenders:?}"
        );
    }
}
