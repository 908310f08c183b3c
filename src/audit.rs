//! The audit: per tenant, the alert versions the API holds over a range
//! against the versions the store recorded as emitted — `mde-poller audit`
//! and the daemon's `[audit]` self-audit.
//!
//! The reading and the comparison are [`poll::audit_tenant`]: the same
//! windows, pages and dedup a poll uses, so the audit works for whatever
//! source the poll reads. This file decides the range, the budget, how the
//! command coexists with a running daemon, and what is printed and logged.
//!
//! The range is `[now − since, next poll's lower bound)`, where:
//! - it never starts before `now − store.retention` (the store forgot older
//!   alerts: they would all look missing) nor before the tenant's first poll
//!   minus `first_lookback` (older alerts were never meant to be emitted);
//! - it ends where the tenant's next poll will start reading (cursor −
//!   `lookback`): newer versions are still the poll's to read, so they are
//!   not "missing" yet, and a version the audit reports is one polling will
//!   never emit on its own.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{PollSettings, Settings};
use crate::output::{Emitter, Sink};
use crate::poll::{self, AuditCounts, PollEnv, PollError, TenantPoll};
use crate::ratelimit::{CallBudget, PER_HOUR, PER_MINUTE};
use crate::store::{AuditSummary, Store, StoreError};
use crate::storelock::{LockError, StoreLock};
use crate::timestamp::Timestamp;

/// The range one audit of one tenant compares, and why it is narrower than
/// asked (each note names the setting that clamped it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Range {
    pub from: Timestamp,
    pub to: Timestamp,
    pub clamped: Vec<String>,
}

/// The range to audit for `tenant_id`, or `None` when it was never polled
/// (its first poll reads `first_lookback`: there is nothing to compare yet).
pub(crate) fn range(
    store: &Store,
    tenant_id: &str,
    since: Duration,
    poll: &PollSettings,
    retention: Duration,
    now: Timestamp,
) -> Result<Option<Range>, StoreError> {
    let Some(first_poll) = store.first_poll(tenant_id)? else {
        return Ok(None);
    };
    let cursor = store.cursor(tenant_id)?;
    let to = poll::poll_lower_bound(cursor.as_ref(), now, poll);
    let mut from = now.saturating_sub(since);
    let mut clamped = Vec::new();
    let forgotten = now.saturating_sub(retention);
    if from < forgotten {
        from = forgotten;
        clamped.push(format!(
            "starts at {from} (store.retention = {}): the store forgets older alerts",
            humantime::format_duration(retention)
        ));
    }
    let reached = first_poll.saturating_sub(poll.first_lookback);
    if from < reached {
        from = reached;
        clamped.push(format!(
            "starts at {from}: the tenant's first poll reached back that far (poll.first_lookback = {})",
            humantime::format_duration(poll.first_lookback)
        ));
    }
    Ok(Some(Range {
        from: from.min(to),
        to,
        clamped,
    }))
}

/// What `audit` asks for.
#[derive(Debug, Clone)]
pub struct Options {
    pub since: Duration,
    pub tenant: Option<String>,
    pub repair: bool,
}

/// One tenant's audit, as the table and `--json` show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct TenantAudit {
    pub tenant: String,
    pub tenant_id: String,
    /// The range compared (`null` when the tenant was never polled).
    pub from: Option<String>,
    pub to: Option<String>,
    /// Why the range is narrower than `--since` asked.
    pub clamped: Vec<String>,
    pub in_api: u64,
    pub emitted: u64,
    pub missing: u64,
    pub repaired: u64,
    /// Calls made to the alerts API.
    pub requests: u64,
    /// Why the tenant was not audited or the audit failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl TenantAudit {
    fn new(tenant: &str, tenant_id: &str) -> Self {
        TenantAudit {
            tenant: tenant.to_owned(),
            tenant_id: tenant_id.to_owned(),
            from: None,
            to: None,
            clamped: Vec::new(),
            in_api: 0,
            emitted: 0,
            missing: 0,
            repaired: 0,
            requests: 0,
            error: None,
            hint: None,
        }
    }

    /// Nothing missing, or everything missing repaired, and no failure.
    pub(crate) fn ok(&self) -> bool {
        self.error.is_none() && self.missing == self.repaired
    }

    fn counts(&mut self, c: &AuditCounts) {
        self.in_api = c.in_api;
        self.emitted = c.emitted;
        self.missing = c.missing;
        self.repaired = c.repaired;
        self.requests = c.requests;
    }
}

/// The share of a tenant's budget a plain `audit` takes when a daemon may be
/// polling beside it (the daemon does not see the audit's calls): half.
const SHARED_BUDGET_DIVISOR: usize = 2;

/// `mde-poller audit`. Without `repair` the store is opened read-only and no
/// lock is taken, so it runs beside the daemon and disturbs nothing; with
/// `repair` it needs the store to itself (the caller holds the store lock).
pub(crate) async fn command(
    settings: &Settings,
    opts: &Options,
    cancel: CancellationToken,
) -> anyhow::Result<Vec<TenantAudit>> {
    let tenants: Vec<_> = match &opts.tenant {
        Some(name) => {
            let Some(t) = settings.tenants.iter().find(|t| &t.name == name) else {
                let names: Vec<&str> = settings.tenants.iter().map(|t| t.name.as_str()).collect();
                anyhow::bail!(
                    "--tenant {name}: no [tenants.{name}] in {}; the tenants are: {}",
                    settings.source.display(),
                    names.join(", ")
                );
            };
            vec![t.clone()]
        }
        None => settings.enabled_tenants().cloned().collect(),
    };
    let path = settings.store.path.clone();
    let repair = opts.repair;
    // A repair writes (the output and the store) as a poll does: like `run`
    // and `once` it needs the database to itself, for as long as it runs.
    let _lock = match repair.then(|| StoreLock::acquire(&path)).transpose() {
        Ok(lock) => lock,
        Err(e @ LockError::Held { .. }) => anyhow::bail!(
            "{e}\naudit --repair needs the database to itself. While the daemon runs, its \
             self-audit repairs on its own: set [audit] every = \"24h\" (and reload). Or stop \
             the daemon, run `mde-poller audit --repair`, and start it again. A plain \
             `mde-poller audit` (no --repair) runs beside the daemon."
        ),
        Err(e) => return Err(e.into()),
    };
    let store = tokio::task::spawn_blocking(move || {
        if repair {
            Store::open(&path)
        } else {
            Store::open_read_only(&path)
        }
    })
    .await
    .expect("store open panicked")?;
    let store = Arc::new(store);
    // Only a repair writes; a plain audit's emitter never sees a line.
    let target = if repair {
        settings.output.target.clone()
    } else {
        crate::config::OutputTarget::Stdout
    };
    let sink =
        Sink::open(&target).map_err(|e| anyhow::anyhow!("opening the output {target:?}: {e}"))?;
    let env = PollEnv {
        store: Arc::clone(&store),
        emitter: Arc::new(Emitter::new(sink, settings.output.format)),
        settings: settings.poll.clone(),
    };
    let spent = poll::blocking(&store, |s| s.status()).await?;
    let http = crate::http::client(&settings.http, settings.poll.timeout)?;
    let permits = Arc::new(tokio::sync::Semaphore::new(
        settings.poll.concurrency.max(1),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for tenant in tenants {
        let divisor = if repair { 1 } else { SHARED_BUDGET_DIVISOR };
        let budget = Arc::new(CallBudget::new(PER_MINUTE / divisor, PER_HOUR / divisor));
        if let Some(s) = spent.iter().find(|s| s.tenant_id == tenant.tenant_id) {
            budget.already_spent(s.calls_last_minute as usize, s.calls_last_hour as usize);
        }
        let (env, http, permits, cancel) = (
            env.clone(),
            http.clone(),
            Arc::clone(&permits),
            cancel.clone(),
        );
        let (since, retention) = (opts.since, settings.store.retention);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            let mut row = TenantAudit::new(&tenant.name, &tenant.tenant_id);
            let poll = crate::scheduler::tenant_poll(&http, &tenant, budget);
            audit_one(&env, &poll, since, retention, repair, &cancel, &mut row).await;
            row
        });
    }
    let mut rows = Vec::new();
    while let Some(r) = tasks.join_next().await {
        rows.push(r.expect("audit task panicked"));
    }
    rows.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(rows)
}

/// Audits one tenant into `row`; with `repair`, records the audit in the
/// store and logs it (the daemon's self-audit and `audit --repair`).
async fn audit_one(
    env: &PollEnv,
    tenant: &TenantPoll,
    since: Duration,
    retention: Duration,
    repair: bool,
    cancel: &CancellationToken,
    row: &mut TenantAudit,
) -> Option<AuditSummary> {
    let now = Timestamp::now();
    let (id, poll_settings) = (tenant.tenant_id.clone(), env.settings.clone());
    let found = poll::blocking(&env.store, move |s| {
        range(s, &id, since, &poll_settings, retention, now)
    })
    .await;
    let range = match found {
        Ok(Some(r)) => r,
        Ok(None) => {
            row.error = Some("never polled: there is nothing to compare yet".into());
            row.hint = Some(
                "start the daemon (or run `mde-poller once`): its first poll reads poll.first_lookback"
                    .into(),
            );
            return None;
        }
        Err(e) => {
            let e = PollError::from(e);
            row.error = Some(e.to_string());
            row.hint = Some(e.hint().to_owned());
            return None;
        }
    };
    row.from = Some(range.from.to_string());
    row.to = Some(range.to.to_string());
    row.clamped = range.clamped.clone();
    match poll::audit_tenant(env, tenant, range.from, range.to, repair, cancel).await {
        Ok(counts) => {
            row.counts(&counts);
            crate::events::audit_finished(&tenant.name, &range, &counts);
            let summary = AuditSummary {
                ended: Timestamp::now(),
                since: range.from,
                in_api: counts.in_api,
                emitted: counts.emitted,
                missing: counts.missing,
                repaired: counts.repaired,
            };
            if repair {
                let (id, s) = (tenant.tenant_id.clone(), summary.clone());
                if let Err(e) = poll::blocking(&env.store, move |st| st.record_audit(&id, &s)).await
                {
                    crate::events::audit_failed(&tenant.name, &PollError::from(e));
                }
            }
            Some(summary)
        }
        Err(e) => {
            if !e.is_cancelled() {
                crate::events::audit_failed(&tenant.name, &e);
            }
            row.error = Some(e.to_string());
            row.hint = Some(e.hint().to_owned());
            None
        }
    }
}

/// The daemon's self-audit of one tenant, over `window`, repairing what is
/// missing; logs `audit_finished` (or `audit_failed`) and sets the metric.
pub(crate) async fn self_audit(
    env: &PollEnv,
    tenant: &TenantPoll,
    window: Duration,
    retention: Duration,
    cancel: &CancellationToken,
) {
    let mut row = TenantAudit::new(&tenant.name, &tenant.tenant_id);
    audit_one(env, tenant, window, retention, true, cancel, &mut row).await;
}

/// `mde-poller audit` from start to end: audits, prints the report, and
/// says whether nothing is left missing. The report goes to stdout, or to
/// stderr when a repair writes alert lines to stdout (`output.path = "-"`),
/// so the alerts stream stays clean.
pub async fn run(
    settings: &Settings,
    opts: &Options,
    json: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<bool> {
    let cancel = CancellationToken::new();
    let audits = command(settings, opts, cancel.clone());
    tokio::pin!(audits);
    let rows = tokio::select! {
        r = &mut audits => r?,
        _ = shutdown => {
            // Abandon requests in flight; a page being written finishes.
            cancel.cancel();
            audits.await?
        }
    };
    let text = report(&rows, json);
    if opts.repair && settings.output.target == crate::config::OutputTarget::Stdout {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    Ok(rows.iter().all(TenantAudit::ok))
}

/// What `audit` prints: a table for people, or one JSON array.
pub(crate) fn report(rows: &[TenantAudit], json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(rows).expect("plain data serializes") + "\n";
    }
    let mut out = format!(
        "{:<20} {:>8} {:>8} {:>8} {:>8}  RANGE\n",
        "TENANT", "IN API", "EMITTED", "MISSING", "REPAIRED"
    );
    for r in rows {
        let range = match (&r.from, &r.to) {
            (Some(from), Some(to)) => format!("{from} .. {to}"),
            _ => "-".to_owned(),
        };
        out.push_str(&format!(
            "{:<20} {:>8} {:>8} {:>8} {:>8}  {range}\n",
            r.tenant, r.in_api, r.emitted, r.missing, r.repaired
        ));
        for note in &r.clamped {
            out.push_str(&format!("      range clamped: {note}\n"));
        }
        if let Some(e) = &r.error {
            out.push_str(&format!("      FAILED: {e}\n"));
        }
        if let Some(h) = &r.hint {
            out.push_str(&format!("      next step: {h}\n"));
        }
    }
    let missing: u64 = rows.iter().map(|r| r.missing - r.repaired).sum();
    let failed = rows.iter().filter(|r| r.error.is_some()).count();
    out.push_str(&format!(
        "{} tenant(s) audited, {failed} failed, {missing} version(s) missing; versions newer than a range's end are the next poll's to read\n",
        rows.len()
    ));
    if missing > 0 {
        out.push_str("repair: stop the daemon and run `mde-poller audit --repair`, or set [audit] every so the daemon repairs by itself\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_settings() -> PollSettings {
        PollSettings {
            interval: Duration::from_secs(300),
            schedule: None,
            lookback: Duration::from_secs(900),
            first_lookback: Duration::from_secs(86_400),
            page_size: 1000,
            concurrency: 8,
            timeout: Duration::from_secs(30),
            expand_evidence: false,
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn the_range_ends_where_the_next_poll_reads_and_is_clamped_by_first_poll_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let now = Timestamp::now();
        let id = "11111111-1111-4111-8111-111111111111";
        assert_eq!(
            range(&store, id, 7 * DAY, &poll_settings(), 90 * DAY, now).unwrap(),
            None,
            "never polled"
        );
        let first = now.saturating_sub(2 * DAY);
        let poll = store.begin_poll("contoso", id, first).unwrap();
        let cursor = now.saturating_sub(Duration::from_secs(3600));
        store
            .finish_poll(
                poll,
                id,
                &crate::store::PollOutcome {
                    ended: first,
                    seen: 0,
                    emitted: 0,
                    requests: 1,
                    error: None,
                    warning: None,
                    cursor: Some(crate::store::Cursor {
                        text: cursor.to_string(),
                        at: cursor,
                    }),
                },
            )
            .unwrap();
        let r = range(&store, id, 7 * DAY, &poll_settings(), 90 * DAY, now)
            .unwrap()
            .unwrap();
        assert_eq!(r.to, cursor.saturating_sub(Duration::from_secs(900)));
        assert_eq!(
            r.from,
            first.saturating_sub(DAY),
            "first poll − first_lookback"
        );
        assert_eq!(r.clamped.len(), 1);
        assert!(
            r.clamped[0].contains("poll.first_lookback"),
            "{:?}",
            r.clamped
        );

        let r = range(&store, id, 7 * DAY, &poll_settings(), 2 * DAY, now)
            .unwrap()
            .unwrap();
        assert_eq!(r.from, now.saturating_sub(2 * DAY));
        assert!(r.clamped[0].contains("store.retention"), "{:?}", r.clamped);

        let r = range(
            &store,
            id,
            Duration::from_secs(600),
            &poll_settings(),
            90 * DAY,
            now,
        )
        .unwrap()
        .unwrap();
        assert!(r.clamped.is_empty());
        assert_eq!(
            r.from, r.to,
            "a range shorter than lookback holds nothing yet"
        );
    }
}
