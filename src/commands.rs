//! The operator's commands besides `run` and `once`: `check` (is each tenant
//! ready to poll, and if not, what to do), `status` (what the database says),
//! and `consent-url` (the link a customer's Global Administrator opens).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, Query};
use crate::auth::Claims;
use crate::config::{Settings, TenantSettings};
use crate::output::AlertSource;
use crate::ratelimit::{CallBudget, PER_HOUR, PER_MINUTE};
use crate::scheduler;
use crate::store::Store;
use crate::timestamp::Timestamp;

/// One tenant's verdict, as `check --json` prints it. Never holds a secret or
/// a token.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckResult {
    pub tenant: String,
    pub tenant_id: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub roles: Vec<String>,
    /// `mde` or `graph`: the API checked.
    pub source: &'static str,
    /// Said whatever the verdict: for an `mde` tenant, that the MDE API stops
    /// working after 1 February 2027 and how to switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

/// What `check` and start-up say once for each tenant still on `mde`.
pub(crate) const MDE_RETIREMENT_NOTICE: &str = "the Defender for Endpoint API stops working after 1 February 2027 (Microsoft MC1220762): add Microsoft Graph → Application permissions → SecurityAlert.Read.All to the app, have the customer consent again (mde-poller consent-url), then set source = \"graph\" for this tenant; its cursor is kept (README: \"Moving to Microsoft Graph before 1 February 2027\")";

fn notice_for(t: &TenantSettings) -> Option<String> {
    (t.source == AlertSource::Mde).then(|| MDE_RETIREMENT_NOTICE.to_owned())
}

impl CheckResult {
    fn failed(
        t: &TenantSettings,
        stage: &'static str,
        problem: String,
        hint: &str,
        roles: Vec<String>,
    ) -> Self {
        CheckResult {
            tenant: t.name.clone(),
            tenant_id: t.tenant_id.clone(),
            ok: false,
            stage: Some(stage),
            problem: Some(problem),
            hint: Some(hint.to_owned()),
            roles,
            source: t.source.as_str(),
            notice: notice_for(t),
        }
    }
}

/// Gets a token for every enabled tenant, checks its claims, and lists one
/// alert with it.
pub async fn check(settings: &Settings) -> anyhow::Result<Vec<CheckResult>> {
    let http = crate::http::client(&settings.http, settings.poll.timeout)?;
    // As many tenants at once as a poll would: a thousand tenants must not
    // become a thousand simultaneous token requests.
    let permits = Arc::new(tokio::sync::Semaphore::new(
        settings.poll.concurrency.max(1),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for tenant in settings.enabled_tenants().cloned() {
        let (http, permits) = (http.clone(), Arc::clone(&permits));
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            check_tenant(http, tenant).await
        });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r.expect("check task panicked"));
    }
    results.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(results)
}

/// What `check` finds wrong in a token's claims, with the next step for each.
#[derive(Debug, thiserror::Error)]
enum ClaimsProblem {
    #[error("the token cannot be decoded: {0}")]
    NotJwt(crate::auth::AuthError),
    #[error("the token carries no tid (tenant) claim")]
    NoTenant,
    #[error("the token was issued for tenant {tid}, not {expected}")]
    OtherTenant { tid: String, expected: String },
    #[error("the token carries no Alert.Read.All or Alert.ReadWrite.All role")]
    NoRole,
    #[error("the Microsoft Graph token carries no SecurityAlert.Read.All or SecurityAlert.ReadWrite.All role")]
    NoGraphRole,
}

impl ClaimsProblem {
    fn hint(&self) -> &'static str {
        match self {
            ClaimsProblem::NotJwt(_) => {
                "the token endpoint returned a token that is not a JWT: check login_url"
            }
            ClaimsProblem::NoTenant => {
                "check login_url: the token endpoint does not look like Entra ID's"
            }
            ClaimsProblem::OtherTenant { .. } => {
                "check tenant_id and login_url: the token endpoint answered for another tenant"
            }
            ClaimsProblem::NoGraphRole => {
                "add Microsoft Graph → Application permissions → SecurityAlert.Read.All to the app registration, grant admin consent, then have the customer's Global Administrator consent again (mde-poller consent-url)"
            }
            ClaimsProblem::NoRole => {
                "add the WindowsDefenderATP application permission Alert.Read.All to the app registration, then have the customer's Global Administrator consent again (mde-poller consent-url)"
            }
        }
    }
}

/// The claims a poll needs: this tenant, and a role that reads alerts.
fn verify_claims(claims: &Claims, t: &TenantSettings) -> Result<(), ClaimsProblem> {
    let tid = claims.tid.as_deref().ok_or(ClaimsProblem::NoTenant)?;
    if !tid.eq_ignore_ascii_case(&t.tenant_id) {
        return Err(ClaimsProblem::OtherTenant {
            tid: tid.to_owned(),
            expected: t.tenant_id.clone(),
        });
    }
    match t.source {
        AlertSource::Mde if !claims.can_read_alerts() => return Err(ClaimsProblem::NoRole),
        AlertSource::Graph if !claims.can_read_graph_alerts() => {
            return Err(ClaimsProblem::NoGraphRole)
        }
        _ => {}
    }
    Ok(())
}

async fn check_tenant(http: reqwest::Client, t: TenantSettings) -> CheckResult {
    // The same poller `run` and `once` build, so `check` tries what they use.
    let poll = scheduler::tenant_poll(&http, &t, Arc::new(CallBudget::default()));
    let token = match poll.api.tokens().fetch_fresh().await {
        Ok(tok) => tok,
        Err(e) => return CheckResult::failed(&t, "token", e.to_string(), e.hint(), vec![]),
    };
    let claims = match token.claims() {
        Ok(c) => c,
        Err(e) => {
            let p = ClaimsProblem::NotJwt(e);
            return CheckResult::failed(&t, "claims", p.to_string(), p.hint(), vec![]);
        }
    };
    let roles = claims.roles.clone();
    if let Err(p) = verify_claims(&claims, &t) {
        return CheckResult::failed(&t, "claims", p.to_string(), p.hint(), roles);
    }
    // `$top=1` on the tenant's own API (alerts_v2 for a Graph tenant).
    let query = Query {
        from: Timestamp::now().saturating_sub(Duration::from_secs(86_400)),
        to: None,
        top: 1,
        skip: 0,
        expand_evidence: false,
        count: false,
    };
    let answer = poll
        .api
        .fetch(&query, &CancellationToken::new())
        .await
        .and_then(|body| {
            body.parse()
                .map(|_| ())
                .map_err(|e| ApiError::Malformed(e.to_string()))
        });
    match answer {
        Ok(()) => CheckResult {
            tenant: t.name.clone(),
            tenant_id: t.tenant_id.clone(),
            ok: true,
            stage: None,
            problem: None,
            hint: None,
            roles,
            source: t.source.as_str(),
            notice: notice_for(&t),
        },
        Err(e) => CheckResult::failed(&t, "api", e.to_string(), e.hint(), roles),
    }
}

/// What `check --config-only` prints when the config is valid.
pub fn config_ok(settings: &Settings) -> String {
    let enabled = settings.enabled_tenants().count();
    format!(
        "{}: config OK, {} tenants ({enabled} enabled)\n",
        settings.source.display(),
        settings.tenants.len()
    )
}

/// What `check` prints: a table for people, or one JSON array.
pub fn check_report(results: &[CheckResult], json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(results).expect("plain data serializes") + "\n";
    }
    let mut out = String::new();
    for r in results {
        if r.ok {
            out.push_str(&format!(
                "ok    {:<20} {}  roles: {}\n",
                r.tenant,
                r.tenant_id,
                r.roles.join(",")
            ));
            if let Some(n) = &r.notice {
                out.push_str(&format!("      note: {n}\n"));
            }
        } else {
            out.push_str(&format!(
                "FAIL  {:<20} {}  at {}: {}\n      next step: {}\n",
                r.tenant,
                r.tenant_id,
                r.stage.unwrap_or("?"),
                r.problem.as_deref().unwrap_or(""),
                r.hint.as_deref().unwrap_or("")
            ));
            if let Some(n) = &r.notice {
                out.push_str(&format!("      note: {n}\n"));
            }
        }
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    out.push_str(&format!(
        "{} tenant(s) checked, {} failed\n",
        results.len(),
        failed
    ));
    out
}

/// What `consent-url` prints; an error when no tenant names an app yet.
pub fn consent_report(settings: &Settings) -> anyhow::Result<String> {
    let urls = consent_urls(settings);
    anyhow::ensure!(
        !urls.is_empty(),
        "no tenant in {}: add a [tenants.NAME] table with the customer's tenant_id first",
        settings.source.display()
    );
    Ok(urls
        .into_iter()
        .map(|(url, tenants)| format!("{url}\n  (for: {tenants})\n"))
        .collect())
}

/// The admin-consent link(s): one per distinct app and login host.
pub(crate) fn consent_urls(settings: &Settings) -> Vec<(String, String)> {
    let mut seen = std::collections::BTreeMap::new();
    for t in &settings.tenants {
        let url = format!(
            "{}/common/oauth2/authorize?prompt=consent&client_id={}&response_type=code&sso_reload=true",
            t.login_url, t.client_id
        );
        seen.entry(url)
            .or_insert_with(Vec::new)
            .push(t.name.clone());
    }
    seen.into_iter()
        .map(|(url, names)| (url, names.join(", ")))
        .collect()
}

/// One tenant's line in `status`.
#[derive(Debug, Serialize)]
pub struct StatusRow {
    pub tenant: String,
    pub tenant_id: String,
    pub last_poll: Option<String>,
    pub last_success: Option<String>,
    pub cursor: Option<String>,
    pub lag_seconds: Option<u64>,
    pub alerts_stored: u64,
    pub last_error: Option<String>,
    /// Finished polls that failed since the last success.
    pub consecutive_failures: u64,
    /// When the next poll is due: the last poll's start plus `interval`
    /// (an estimate: a paused or throttled tenant skips ticks); `null` with
    /// a cron `schedule`, whose own times say it, or before any poll.
    pub next_poll: Option<String>,
    /// Calls to the alerts API left in the tenant's budget, from the calls
    /// finished polls recorded (a poll still running is not counted yet).
    pub(crate) budget_left: BudgetLeft,
    /// The last audit's result; `null` until one ran.
    pub(crate) last_audit: Option<AuditRow>,
}

#[derive(Debug, Serialize)]
pub(crate) struct BudgetLeft {
    /// Of 100 in the last minute.
    pub minute: u64,
    /// Of 1,500 in the last hour.
    pub hour: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct AuditRow {
    pub ended: String,
    pub since: String,
    pub in_api: u64,
    pub emitted: u64,
    pub missing: u64,
    pub repaired: u64,
}

/// Reads the database (read-only: works while the daemon runs).
pub fn status(settings: &Settings) -> anyhow::Result<Vec<StatusRow>> {
    let store = Store::open_read_only(&settings.store.path)?;
    let now = Timestamp::now();
    Ok(store
        .status()?
        .into_iter()
        .map(|s| StatusRow {
            tenant: settings
                .tenants
                .iter()
                .find(|t| t.tenant_id == s.tenant_id)
                .map_or(s.name.clone(), |t| t.name.clone()),
            tenant_id: s.tenant_id,
            last_poll: s.last_poll_started.map(|t| t.to_millis_string()),
            last_success: s.last_success.map(|t| t.to_millis_string()),
            lag_seconds: s.cursor.as_ref().map(|c| now.since(c.at).as_secs()),
            cursor: s.cursor.map(|c| c.text),
            alerts_stored: s.alerts_stored,
            last_error: s.last_error,
            consecutive_failures: s.consecutive_failures,
            next_poll: match settings.poll.schedule {
                Some(_) => None,
                None => s
                    .last_poll_started
                    .map(|t| t.saturating_add(settings.poll.interval).to_millis_string()),
            },
            budget_left: BudgetLeft {
                minute: (PER_MINUTE as u64).saturating_sub(s.calls_last_minute),
                hour: (PER_HOUR as u64).saturating_sub(s.calls_last_hour),
            },
            last_audit: s.last_audit.map(|a| AuditRow {
                ended: a.ended.to_millis_string(),
                since: a.since.to_millis_string(),
                in_api: a.in_api,
                emitted: a.emitted,
                missing: a.missing,
                repaired: a.repaired,
            }),
        })
        .collect())
}

/// What `status` prints: a table for people, or one JSON array.
pub fn status_report(rows: &[StatusRow], json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(rows).expect("plain data serializes") + "\n";
    }
    let mut out = format!(
        "{:<20} {:<25} {:<25} {:<30} {:>8} {:>8} {:>5} {:<25} {:>10} {:<14}  LAST ERROR\n",
        "TENANT",
        "LAST POLL",
        "LAST SUCCESS",
        "CURSOR",
        "LAG",
        "ALERTS",
        "FAILS",
        "NEXT POLL",
        "BUDGET M/H",
        "AUDIT MISSING"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<20} {:<25} {:<25} {:<30} {:>8} {:>8} {:>5} {:<25} {:>10} {:<14}  {}\n",
            r.tenant,
            r.last_poll.as_deref().unwrap_or("never"),
            r.last_success.as_deref().unwrap_or("never"),
            r.cursor.as_deref().unwrap_or("-"),
            r.lag_seconds
                .map_or("-".to_owned(), |s| humantime::format_duration(
                    Duration::from_secs(s)
                )
                .to_string()),
            r.alerts_stored,
            r.consecutive_failures,
            r.next_poll.as_deref().unwrap_or("-"),
            format!("{}/{}", r.budget_left.minute, r.budget_left.hour),
            r.last_audit
                .as_ref()
                .map_or("never".to_owned(), |a| a.missing.to_string()),
            r.last_error.as_deref().unwrap_or("")
        ));
    }
    out
}
