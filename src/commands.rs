//! The operator's commands besides `run` and `once`: `check` (is each tenant
//! ready to poll, and if not, what to do), `status` (what the database says),
//! and `consent-url` (the link a customer's Global Administrator opens).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::api::{AlertsApi, ApiError, Query};
use crate::auth::TokenSource;
use crate::config::{Settings, TenantSettings};
use crate::ratelimit::CallBudget;
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
        }
    }
}

/// Gets a token for every enabled tenant, checks its claims, and lists one
/// alert with it.
pub async fn check(settings: &Settings) -> anyhow::Result<Vec<CheckResult>> {
    let http = crate::http::client(&settings.http, settings.poll.timeout)?;
    let mut tasks = tokio::task::JoinSet::new();
    for tenant in settings.enabled_tenants().cloned() {
        let http = http.clone();
        tasks.spawn(async move { check_tenant(http, tenant).await });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r.expect("check task panicked"));
    }
    results.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(results)
}

async fn check_tenant(http: reqwest::Client, t: TenantSettings) -> CheckResult {
    let tokens = match TokenSource::new(http.clone(), &t) {
        Ok(s) => Arc::new(s),
        Err(e) => return CheckResult::failed(&t, "token", e.to_string(), e.hint(), vec![]),
    };
    let token = match tokens.fetch_fresh().await {
        Ok(tok) => tok,
        Err(e) => return CheckResult::failed(&t, "token", e.to_string(), e.hint(), vec![]),
    };
    let claims = match token.claims() {
        Ok(c) => c,
        Err(e) => {
            return CheckResult::failed(
                &t,
                "claims",
                e.to_string(),
                "the token endpoint returned a token that is not a JWT: check login_url",
                vec![],
            )
        }
    };
    let roles = claims.roles.clone();
    let Some(tid) = &claims.tid else {
        return CheckResult::failed(
            &t,
            "claims",
            "the token carries no tid (tenant) claim".to_owned(),
            "check login_url: the token endpoint does not look like Entra ID's",
            roles,
        );
    };
    if !tid.eq_ignore_ascii_case(&t.tenant_id) {
        return CheckResult::failed(
            &t,
            "claims",
            format!("the token was issued for tenant {tid}, not {}", t.tenant_id),
            "check tenant_id and login_url: the token endpoint answered for another tenant",
            roles,
        );
    }
    if !claims.can_read_alerts() {
        return CheckResult::failed(
            &t,
            "claims",
            "the token carries no Alert.Read.All or Alert.ReadWrite.All role".to_owned(),
            "add the WindowsDefenderATP application permission Alert.Read.All to the app registration, then have the customer's Global Administrator consent again (mde-poller consent-url)",
            roles,
        );
    }
    let api = AlertsApi::new(http, &t.api_url, tokens, Arc::new(CallBudget::default()));
    let query = Query {
        from: Timestamp::now().saturating_sub(Duration::from_secs(86_400)),
        to: None,
        top: 1,
        skip: 0,
        expand_evidence: false,
    };
    match api
        .fetch(&query, &CancellationToken::new())
        .await
        .map(|body| body.parse().map(|p| p.value.len()))
    {
        Ok(Ok(_)) => CheckResult {
            tenant: t.name.clone(),
            tenant_id: t.tenant_id.clone(),
            ok: true,
            stage: None,
            problem: None,
            hint: None,
            roles,
        },
        Ok(Err(e)) => CheckResult::failed(
            &t,
            "api",
            format!("malformed answer: {e}"),
            "check api_url: it does not look like the Defender for Endpoint API",
            roles,
        ),
        Err(e) => {
            let hint = match &e {
                ApiError::Forbidden { .. } => "the app lacks the Alert.Read.All permission in this tenant: add it and have the customer consent again",
                ApiError::Auth(a) => a.hint(),
                ApiError::Transport(_) => "check api_url, the proxy and the CA bundle ([http] ca_file)",
                ApiError::Throttled { .. } => "the tenant is throttled; wait and check again",
                _ => "see the problem; check api_url and the cloud setting",
            };
            CheckResult::failed(&t, "api", e.to_string(), hint, roles)
        }
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
        } else {
            out.push_str(&format!(
                "FAIL  {:<20} {}  at {}: {}\n      next step: {}\n",
                r.tenant,
                r.tenant_id,
                r.stage.unwrap_or("?"),
                r.problem.as_deref().unwrap_or(""),
                r.hint.as_deref().unwrap_or("")
            ));
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
pub fn consent_urls(settings: &Settings) -> Vec<(String, String)> {
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
        })
        .collect())
}

/// What `status` prints: a table for people, or one JSON array.
pub fn status_report(rows: &[StatusRow], json: bool) -> String {
    if json {
        return serde_json::to_string_pretty(rows).expect("plain data serializes") + "\n";
    }
    let mut out = format!(
        "{:<20} {:<25} {:<25} {:<30} {:>8} {:>8}  LAST ERROR\n",
        "TENANT", "LAST POLL", "LAST SUCCESS", "CURSOR", "LAG", "ALERTS"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<20} {:<25} {:<25} {:<30} {:>8} {:>8}  {}\n",
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
            r.last_error.as_deref().unwrap_or("")
        ));
    }
    out
}
