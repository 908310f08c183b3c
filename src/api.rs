//! The alerts API of one tenant: one `GET /api/alerts` (MDE) or
//! `GET /v1.0/security/alerts_v2` (Microsoft Graph) with its OData query, the
//! call budget, the bearer token, retries, and the mapping of every answer to
//! a page of raw alerts or a typed error.
//!
//! Retries live here, below the poll, so that one page either arrives whole or
//! the poll fails and the cursor stays where it was.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthError, TokenSource};
use crate::backoff::Backoff;
use crate::output::AlertSource;
use crate::ratelimit::CallBudget;
use crate::timestamp::Timestamp;

/// Graph's cap on `$top` (API-NOTES, "Paging"): a larger `page_size` is
/// asked as this for Graph tenants.
pub(crate) const GRAPH_MAX_TOP: u32 = 1000;

/// Sent on every Graph request: without it, newer members of evolvable enums
/// (`serviceSource` `microsoftDefenderForCloud`, …) arrive as `unknownFutureValue`.
pub(crate) const GRAPH_PREFER: &str = "include-unknown-enum-members";

/// Retries of one request within one poll (beyond the first try).
const MAX_RETRIES: u32 = 5;

/// A `Retry-After` longer than this ends the poll instead of being waited out.
const LONG_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The longest `Retry-After` taken at its word; a larger one (a day, a bogus
/// date) is treated as an hour, the span of the API's largest window.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What to ask for: a half-open `lastUpdateTime` window and a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    /// `lastUpdateTime ge from`.
    pub from: Timestamp,
    /// `lastUpdateTime lt to`, or no upper bound.
    pub to: Option<Timestamp>,
    pub top: u32,
    pub skip: u32,
    pub expand_evidence: bool,
    /// Ask alerts_v2 for `@odata.count`, what the whole window holds (the
    /// MDE API documents no `$count`: it is not sent there).
    pub count: bool,
}

impl Query {
    /// The OData `$filter`. `ge` (not `gt`) on the lower bound because several
    /// alerts can share one 100 ns instant; dedup drops the re-read ones.
    pub(crate) fn filter(&self) -> String {
        match self.to {
            Some(to) => format!(
                "lastUpdateTime ge {} and lastUpdateTime lt {}",
                self.from, to
            ),
            None => format!("lastUpdateTime ge {}", self.from),
        }
    }

    /// The `$filter` of Graph's `alerts_v2`: the same half-open window on
    /// `lastUpdateDateTime`, and the products asked for, if any.
    pub(crate) fn graph_filter(&self, service_sources: &[String]) -> String {
        let mut f = match self.to {
            Some(to) => format!(
                "lastUpdateDateTime ge {} and lastUpdateDateTime lt {}",
                self.from, to
            ),
            None => format!("lastUpdateDateTime ge {}", self.from),
        };
        if !service_sources.is_empty() {
            // `eq … or …` rather than `in (…)`: plain OData 4.0, which every
            // Graph version parses. Values were checked against the enum.
            let any: Vec<String> = service_sources
                .iter()
                .map(|s| format!("serviceSource eq '{s}'"))
                .collect();
            f.push_str(&format!(" and ({})", any.join(" or ")));
        }
        f
    }

    fn graph_query_string(&self, service_sources: &[String]) -> String {
        // Evidence is always part of a Graph alert: no `$expand`.
        let mut q = format!(
            "$filter={}&$top={}",
            encode(&self.graph_filter(service_sources)),
            self.top.min(GRAPH_MAX_TOP)
        );
        if self.skip > 0 {
            q.push_str(&format!("&$skip={}", self.skip));
        }
        if self.count {
            q.push_str("&$count=true");
        }
        q
    }

    fn query_string(&self) -> String {
        let mut q = format!("$filter={}&$top={}", encode(&self.filter()), self.top);
        if self.skip > 0 {
            q.push_str(&format!("&$skip={}", self.skip));
        }
        if self.expand_evidence {
            q.push_str("&$expand=evidence");
        }
        q
    }
}

/// Percent-encodes a query value. Written by hand because form encoders also
/// escape the `$` of OData's system query options when used for names.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 16);
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The most bytes of alert pages the process holds at once, received and not
/// yet handled, across every tenant and read (a 10,000-alert MDE page is
/// ~12 MB): reads out at once wait for their turn with their bodies still on
/// the wire, so memory does not grow with reads in flight or tenants
/// back-filling together.
pub(crate) const BODY_BUDGET: usize = 24 << 20;

/// What a body without a `Content-Length` is taken to weigh.
const UNDECLARED_BODY: usize = 8 << 20;

/// The process-wide [`BODY_BUDGET`], in bytes.
fn body_budget() -> Arc<tokio::sync::Semaphore> {
    static BUDGET: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    Arc::clone(BUDGET.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(BODY_BUDGET))))
}

/// The most large buffers kept for reuse: bodies held at once are bounded
/// by [`BODY_BUDGET`] (two 10,000-alert pages) and each page handled needs
/// one output buffer besides.
const POOLED_BUFFERS: usize = 4;

/// Buffers of finished pages, for the next ones, process-wide: ~12 MB apiece
/// at 10,000 alerts, which glibc would keep around per thread if allocated
/// and freed for every page, and which a buffer per tenant would multiply by
/// the tenants back-filling at once.
fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A buffer from the pool (the largest kept), or a new one.
pub(crate) fn take_buffer() -> Vec<u8> {
    let mut pool = pool();
    let largest = (0..pool.len()).max_by_key(|&i| pool[i].capacity());
    largest.map(|i| pool.swap_remove(i)).unwrap_or_default()
}

/// Gives `buf` back to the pool (dropped if the pool is full).
pub(crate) fn give_back_buffer(mut buf: Vec<u8>) {
    buf.clear();
    let mut pool = pool();
    if pool.len() < POOLED_BUFFERS {
        pool.push(buf);
    }
}

/// A caller's turn to hold a body: one at a time (a tenant's reads out at
/// once hold one body, the one its poll handles).
pub(crate) type Turn = Arc<tokio::sync::Semaphore>;

/// A new turn.
pub(crate) fn turn() -> Turn {
    Arc::new(tokio::sync::Semaphore::new(1))
}

/// One HTTP answer's body, kept as bytes so that alerts can be borrowed from
/// it without a copy. It holds its turn (if read under one) and its share of
/// the [`BODY_BUDGET`] until dropped; its buffer then goes back to the pool.
#[derive(Debug)]
pub(crate) struct PageBody {
    bytes: Vec<u8>,
    _turn: Option<tokio::sync::OwnedSemaphorePermit>,
    _share: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Drop for PageBody {
    fn drop(&mut self) {
        if self._share.is_some() {
            give_back_buffer(std::mem::take(&mut self.bytes));
        }
    }
}

/// A parsed page: the alerts as raw JSON borrowed from the body.
#[derive(Debug, Deserialize)]
pub(crate) struct Page<'a> {
    #[serde(borrow)]
    pub value: Vec<&'a RawValue>,
    #[serde(rename = "@odata.nextLink", default)]
    pub next_link: Option<String>,
    /// What the whole window holds (`$count=true`); anything but a
    /// non-negative integer is no count, not a broken page.
    #[serde(rename = "@odata.count", default, deserialize_with = "lenient_count")]
    pub count: Option<u64>,
}

fn lenient_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(serde_json::Value::deserialize(d)?.as_u64())
}

impl PageBody {
    pub(crate) fn parse(&self) -> Result<Page<'_>, serde_json::Error> {
        serde_json::from_slice(self.bytes())
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn len_bytes(&self) -> usize {
        self.bytes().len()
    }
}

/// Why a page could not be had. `Display` says what happened, [`summary`]
/// a few words for `STATUS=`, [`hint`] the operator's next step.
///
/// [`summary`]: ApiError::summary
/// [`hint`]: ApiError::hint
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("token: {0}")]
    Auth(#[from] AuthError),
    #[error("HTTP 401 from the alerts API twice in a row, even with a new token: {message}")]
    Unauthorized { message: String },
    #[error("HTTP 403 from the alerts API: {message}")]
    Forbidden { message: String },
    #[error("HTTP 400 from the alerts API: {message}")]
    BadRequest { message: String },
    #[error("throttled (HTTP {status}), retry after {retry_after:?}")]
    Throttled { status: u16, retry_after: Duration },
    #[error("HTTP {status} from the alerts API: {message}")]
    Server { status: u16, message: String },
    #[error("HTTP {status} from the alerts API: {message}")]
    Unexpected { status: u16, message: String },
    #[error("request to the alerts API failed: {0}")]
    Transport(String),
    #[error("the alerts API answered with malformed JSON: {0}")]
    Malformed(String),
    /// An `@odata.nextLink` to another host: not followed, since following
    /// it would send the tenant's bearer token there.
    #[error("the alerts API's @odata.nextLink points to {host}, not to {api}: not followed, so the token is not sent there")]
    ForeignNextLink { host: String, api: String },
    /// Graph's 403: the app lacks Microsoft Graph's SecurityAlert role.
    #[error("HTTP 403 from Microsoft Graph alerts_v2: {message}")]
    GraphForbidden { message: String },
    /// The MDE API answered as a retired API would (404 or 410 on
    /// `/api/alerts`, or an error that names the retirement).
    #[error("HTTP {status} from the Defender for Endpoint API, which Microsoft retired (MC1220762; it no longer functions after 1 February 2027): {message}")]
    Retired { status: u16, message: String },
    #[error("the alerts API sent an answer over {} MiB, the most one page may take: refused (a broken server or proxy: 10,000 alerts with evidence weigh about 25 MB)", limit >> 20)]
    TooLarge { limit: usize },
    #[error("stopped by shutdown")]
    Cancelled,
}

impl ApiError {
    /// Worth another try within the same poll. Token errors are not: the
    /// token source has already retried the transient ones.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::Throttled { .. }
                | ApiError::Server { .. }
                | ApiError::Transport(_)
                | ApiError::Malformed(_)
        )
    }

    /// Retrying will not help until someone changes something: a missing
    /// role, a query the API refuses, a host that is not the API's.
    pub(crate) fn needs_operator(&self) -> bool {
        match self {
            ApiError::Auth(e) => e.is_persistent(),
            ApiError::Forbidden { .. }
            | ApiError::GraphForbidden { .. }
            | ApiError::Retired { .. }
            | ApiError::BadRequest { .. }
            | ApiError::ForeignNextLink { .. } => true,
            _ => false,
        }
    }

    /// A few words for `STATUS=` and `status`: "role missing (HTTP 403)".
    pub(crate) fn summary(&self) -> String {
        match self {
            ApiError::Auth(e) => e.summary(),
            ApiError::Unauthorized { .. } => "token refused by the API (HTTP 401)".to_owned(),
            ApiError::Forbidden { .. } => "role missing (HTTP 403)".to_owned(),
            ApiError::BadRequest { .. } => "query refused (HTTP 400)".to_owned(),
            ApiError::Throttled { .. } => "throttled".to_owned(),
            ApiError::Server { status, .. } => format!("API server error (HTTP {status})"),
            ApiError::Unexpected { status, .. } => format!("unexpected answer (HTTP {status})"),
            ApiError::Transport(_) => "API unreachable".to_owned(),
            ApiError::Malformed(_) => "malformed API answer".to_owned(),
            ApiError::ForeignNextLink { host, .. } => format!("nextLink to {host} refused"),
            ApiError::GraphForbidden { .. } => "Graph role missing (HTTP 403)".to_owned(),
            ApiError::Retired { .. } => "MDE API retired: switch to graph".to_owned(),
            ApiError::TooLarge { .. } => "API answer too large".to_owned(),
            ApiError::Cancelled => "stopped by shutdown".to_owned(),
        }
    }

    /// The operator's next step, written to be printed under the error.
    pub(crate) fn hint(&self) -> &'static str {
        match self {
            ApiError::Auth(e) => e.hint(),
            ApiError::Unauthorized { .. } => {
                "the API refuses this tenant's tokens: check `cloud` (the token scope must match the API host) and that the customer consented (`mde-poller consent-url`)"
            }
            ApiError::Forbidden { .. } => {
                "the app's token lacks the Alert.Read.All role in this tenant: add the WindowsDefenderATP application permission Alert.Read.All to the app registration, then have the customer's Global Administrator consent again (`mde-poller consent-url`)"
            }
            ApiError::BadRequest { .. } => {
                "the API refused the query: check api_url and `cloud`; if they are right, report this line (the API may have changed)"
            }
            ApiError::Throttled { .. } => {
                "the API throttled this tenant: polls resume after its Retry-After; act only if it persists (another tool using the same app registration shares the budget)"
            }
            ApiError::Server { .. } => {
                "the API failed on its side: the next poll tries again; act only if it persists (check https://status.cloud.microsoft)"
            }
            ApiError::Unexpected { .. } | ApiError::Malformed(_) => {
                "the answer is not the Defender for Endpoint alerts API's: check api_url and `cloud`, and any proxy in between that rewrites responses"
            }
            ApiError::Transport(_) => {
                "check network access from this host to api_url: DNS, firewall, `http.proxy`, `http.ca_file`"
            }
            ApiError::ForeignNextLink { .. } => {
                "the API's answer sent paging to another host: check api_url and `cloud` (api_url must be the host the API answers from), and any proxy in between that rewrites responses"
            }
            ApiError::GraphForbidden { .. } => {
                "the app's Graph token lacks SecurityAlert.Read.All in this tenant: add Microsoft Graph → Application permissions → SecurityAlert.Read.All to the app registration, grant admin consent, then have the customer's Global Administrator consent again (`mde-poller consent-url`)"
            }
            ApiError::Retired { .. } => {
                "the Defender for Endpoint API no longer serves alerts: switch this tenant to Microsoft Graph (set source = \"graph\" in its [tenants.NAME] table or in [poll], add the SecurityAlert.Read.All permission and have the customer consent again; see README \"Moving to Microsoft Graph before 1 February 2027\")"
            }
            ApiError::TooLarge { .. } => {
                "an answer was larger than any real page: check api_url and any proxy in between; lower `poll.page_size` if pages with evidence are really that large"
            }
            ApiError::Cancelled => "none: the daemon is stopping",
        }
    }
}

/// The alerts API as one tenant sees it.
#[derive(Debug)]
pub(crate) struct AlertsApi {
    http: reqwest::Client,
    base: String,
    tokens: Arc<TokenSource>,
    budget: Arc<CallBudget>,
    source: AlertSource,
    /// Graph only: the `serviceSource` values to read (empty = all).
    service_sources: Vec<String>,
    /// The last answer was a 429/503: calls go one at a time until one
    /// succeeds. With several reads out at once, every one of them would
    /// otherwise call again the moment Retry-After has passed, and all but
    /// one be refused again (and counted against the tenant again).
    throttled: std::sync::atomic::AtomicBool,
    recovery: tokio::sync::Semaphore,
}

impl AlertsApi {
    pub(crate) fn new(
        http: reqwest::Client,
        api_url: &str,
        tokens: Arc<TokenSource>,
        budget: Arc<CallBudget>,
    ) -> Self {
        AlertsApi {
            http,
            base: api_url.trim_end_matches('/').to_owned(),
            tokens,
            budget,
            source: AlertSource::Mde,
            service_sources: Vec::new(),
            throttled: std::sync::atomic::AtomicBool::new(false),
            recovery: tokio::sync::Semaphore::new(1),
        }
    }

    /// Microsoft Graph's `alerts_v2` at `graph_url`; `tokens` must be for the
    /// Graph scope and `budget` Graph's own (150 calls a minute).
    pub(crate) fn graph(
        http: reqwest::Client,
        graph_url: &str,
        tokens: Arc<TokenSource>,
        budget: Arc<CallBudget>,
        service_sources: Vec<String>,
    ) -> Self {
        AlertsApi {
            source: AlertSource::Graph,
            service_sources,
            ..Self::new(http, graph_url, tokens, budget)
        }
    }

    /// Which API this is.
    pub(crate) fn source(&self) -> AlertSource {
        self.source
    }

    /// The token source this API authenticates with (`check` asks it for a
    /// fresh token to read its claims).
    pub(crate) fn tokens(&self) -> &TokenSource {
        &self.tokens
    }

    /// Calls the tenant's budget still allows: (this minute, this hour).
    pub(crate) fn budget_left(&self) -> (usize, usize) {
        self.budget.left()
    }

    /// How long the server's last `Retry-After` still forbids calls.
    pub(crate) fn blocked_for(&self) -> Option<Duration> {
        self.budget.blocked_for()
    }

    /// One page, retried within bounds; `cancel` abandons a request in flight
    /// (nothing has been written for it yet, so nothing is half done).
    pub(crate) async fn fetch(
        &self,
        query: &Query,
        cancel: &CancellationToken,
    ) -> Result<PageBody, ApiError> {
        self.fetch_into(query, cancel, None).await
    }

    /// [`fetch`](Self::fetch), reading the body once `turn` and a share of
    /// the [`BODY_BUDGET`] are had; the body holds both until dropped.
    pub(crate) async fn fetch_into(
        &self,
        query: &Query,
        cancel: &CancellationToken,
        turn: Option<&Turn>,
    ) -> Result<PageBody, ApiError> {
        let url = match self.source {
            AlertSource::Mde => format!("{}/api/alerts?{}", self.base, query.query_string()),
            AlertSource::Graph => format!(
                "{}/v1.0/security/alerts_v2?{}",
                self.base,
                query.graph_query_string(&self.service_sources)
            ),
        };
        self.get_with_retries(&url, cancel, turn).await
    }

    /// Follows an `@odata.nextLink`, which must point at the same API host: the
    /// bearer token is never sent anywhere else.
    pub(crate) async fn fetch_link(
        &self,
        link: &str,
        cancel: &CancellationToken,
        turn: Option<&Turn>,
    ) -> Result<PageBody, ApiError> {
        if !self.owns_link(link) {
            // Only the host is named: the link's query is long and the
            // operator needs to see where it pointed, not what it asked.
            let host = reqwest::Url::parse(link)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "an unparsable address".to_owned());
            return Err(ApiError::ForeignNextLink {
                host,
                api: self.base.clone(),
            });
        }
        self.get_with_retries(link, cancel, turn).await
    }

    /// Whether `link` points at this API (and so may carry the token).
    pub(crate) fn owns_link(&self, link: &str) -> bool {
        link.strip_prefix(&self.base)
            .is_some_and(|rest| rest.starts_with('/'))
    }

    async fn get_with_retries(
        &self,
        url: &str,
        cancel: &CancellationToken,
        turn: Option<&Turn>,
    ) -> Result<PageBody, ApiError> {
        let mut backoff = Backoff::for_requests();
        let mut renewed_token = false;
        loop {
            let attempt = async {
                let recovering = self.recovering().await;
                let token = self.tokens.token().await?;
                // The budget last, just before sending: it also waits out a
                // Retry-After another read of this tenant was told meanwhile.
                self.budget.acquire().await;
                let result = self.get_once(url, token.bearer(), turn).await;
                Ok::<_, ApiError>((token, result, recovering.is_some()))
            };
            let (token, result, recovered) = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(ApiError::Cancelled),
                r = attempt => match r {
                    Ok(answered) => answered,
                    // The token source already retried transient token errors.
                    Err(e) => return Err(e),
                },
            };
            let err = match result {
                Ok(body) => {
                    // Only the call made in the turn ends it: a read sent
                    // before the refusal may be answered after it.
                    if recovered {
                        self.throttled.store(false, Ordering::Relaxed);
                    }
                    return Ok(body);
                }
                Err(e) => e,
            };
            if let ApiError::Unauthorized { .. } = err {
                if !renewed_token {
                    // The token expired or was revoked early: one new token, one retry.
                    renewed_token = true;
                    self.tokens.invalidate(&token).await;
                    continue;
                }
            }
            if let ApiError::Throttled { retry_after, .. } = &err {
                self.throttled.store(true, Ordering::Relaxed);
                // Obeyed through the budget, so no other call of this tenant
                // slips in before the server's time has passed, in this poll
                // or the next (the budget outlives the poll).
                self.budget.block_for((*retry_after).min(MAX_RETRY_AFTER));
            }
            if !err.is_retryable() || backoff.attempts() >= MAX_RETRIES {
                return Err(err);
            }
            let mut delay = backoff.next_delay();
            if let ApiError::Throttled { retry_after, .. } = &err {
                if *retry_after > LONG_RETRY_AFTER {
                    // Waiting here would hold one of the `concurrency` slots
                    // that other tenants need: end the poll; the scheduler
                    // skips this tenant until the budget opens again.
                    return Err(err);
                }
                delay = Duration::ZERO;
            }
            crate::events::api_retry(self.tokens.tenant_name(), &err, backoff.attempts(), delay);
            // The concurrency slot is lent out meanwhile: waiting tenants go first.
            tokio::select! {
                _ = cancel.cancelled() => return Err(ApiError::Cancelled),
                _ = crate::slots::idle(tokio::time::sleep(delay)) => {}
            }
        }
    }

    /// While the tenant is throttled, the one turn to call (held until the
    /// call is answered); none needed otherwise.
    async fn recovering(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        if !self.throttled.load(Ordering::Relaxed) {
            return None;
        }
        let permit = self
            .recovery
            .acquire()
            .await
            .expect("the recovery turn is never closed");
        // Another call succeeded while this one waited: no turn needed.
        self.throttled.load(Ordering::Relaxed).then_some(permit)
    }

    /// One request: its body on success.
    async fn get_once(
        &self,
        url: &str,
        bearer: &str,
        turn: Option<&Turn>,
    ) -> Result<PageBody, ApiError> {
        let mut request = self
            .http
            .get(url)
            .bearer_auth(bearer)
            .header(reqwest::header::ACCEPT, "application/json");
        if self.source == AlertSource::Graph {
            request = request.header("Prefer", GRAPH_PREFER);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ApiError::Transport(describe(&e)));
        let label = self.source.as_str();
        crate::metrics::global()
            .api_request(label, response.as_ref().ok().map(|r| r.status().as_u16()));
        let response = response?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // A page waits for its turn, then its share, before its body is
        // read; an error body is small and read at once.
        let mut body = if status == 200 {
            let turn = match turn {
                Some(turn) => Some(
                    Arc::clone(turn)
                        .acquire_owned()
                        .await
                        .expect("a turn is never closed"),
                ),
                None => None,
            };
            let declared = response.content_length().map_or(UNDECLARED_BODY, |n| {
                usize::try_from(n).unwrap_or(BODY_BUDGET)
            });
            let weight = declared.clamp(1, BODY_BUDGET) as u32;
            let share = body_budget()
                .acquire_many_owned(weight)
                .await
                .expect("the body budget is never closed");
            PageBody {
                bytes: take_buffer(),
                _turn: turn,
                _share: Some(share),
            }
        } else {
            PageBody {
                bytes: Vec::new(),
                _turn: None,
                _share: None,
            }
        };
        let buf = &mut body.bytes;
        crate::http::read_capped(response, buf, crate::http::MAX_RESPONSE)
            .await
            .map_err(|e| match e {
                crate::http::ReadError::Transport(e) => {
                    ApiError::Transport(format!("reading the body: {}", describe(&e)))
                }
                crate::http::ReadError::TooLarge { limit } => ApiError::TooLarge { limit },
            })?;
        if status == 200 {
            return Ok(body);
        }
        let message = error_message(buf);
        if matches!(status, 429 | 503) {
            crate::metrics::global().throttled(label);
        }
        // What a retired MDE API answers is unknown (API-NOTES): a 404 or 410
        // on /api/alerts, or any refusal that names the retirement, is read
        // as the retirement, so the operator is told to switch to Graph.
        if self.source == AlertSource::Mde
            && !matches!(status, 429 | 503)
            && (matches!(status, 404 | 410) || names_retirement(&message))
        {
            return Err(ApiError::Retired { status, message });
        }
        Err(match status {
            401 => ApiError::Unauthorized { message },
            403 if self.source == AlertSource::Graph => ApiError::GraphForbidden { message },
            403 => ApiError::Forbidden { message },
            400 => ApiError::BadRequest { message },
            429 | 503 => ApiError::Throttled {
                status,
                // Without a Retry-After, a pause the size of a minute window's slot.
                retry_after: retry_after.unwrap_or(Duration::from_secs(if status == 429 {
                    60
                } else {
                    5
                })),
            },
            500..=599 => ApiError::Server { status, message },
            _ => ApiError::Unexpected { status, message },
        })
    }
}

/// The `error.code: message` of an API error body, or a note that there was
/// none (gateways answer with empty or HTML bodies).
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => format!(
            "{}: {}",
            error.code.as_deref().unwrap_or("?"),
            error.message.as_deref().unwrap_or("")
        ),
        Err(_) if body.is_empty() => "no body".to_owned(),
        Err(_) => format!("unparsed body of {} bytes", body.len()),
    }
}

/// An error text that says the API was retired or deprecated.
fn names_retirement(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["retire", "decommission", "deprecated", "no longer function"]
        .iter()
        .any(|w| m.contains(w))
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A transport error in words, without the URL (whose query is harmless, but
/// long) and never with headers.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "connection broke while reading the body"
    } else {
        "failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} ({detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_keeps_full_precision_and_is_half_open() {
        let q = Query {
            from: Timestamp::parse("2026-11-26T10:00:00.1234567Z").unwrap(),
            to: Some(Timestamp::parse("2026-11-26T11:00:00Z").unwrap()),
            top: 25,
            skip: 0,
            expand_evidence: false,
            count: false,
        };
        assert_eq!(
            q.filter(),
            "lastUpdateTime ge 2026-11-26T10:00:00.1234567Z and lastUpdateTime lt 2026-11-26T11:00:00.0000000Z"
        );
        assert_eq!(
            q.query_string(),
            "$filter=lastUpdateTime%20ge%202026-11-26T10:00:00.1234567Z%20and%20lastUpdateTime%20lt%202026-11-26T11:00:00.0000000Z&$top=25"
        );
        let open = Query {
            to: None,
            skip: 50,
            expand_evidence: true,
            count: false,
            ..q
        };
        assert_eq!(
            open.query_string(),
            "$filter=lastUpdateTime%20ge%202026-11-26T10:00:00.1234567Z&$top=25&$skip=50&$expand=evidence"
        );
    }

    #[test]
    fn graph_filter_names_graph_fields_and_products() {
        let q = Query {
            from: Timestamp::parse("2026-11-26T10:00:00.1234567Z").unwrap(),
            to: Some(Timestamp::parse("2026-11-26T11:00:00Z").unwrap()),
            top: 5000,
            skip: 0,
            expand_evidence: true,
            count: false,
        };
        let sources = vec![
            "microsoftDefenderForEndpoint".to_owned(),
            "dataLossPrevention".to_owned(),
        ];
        assert_eq!(
            q.graph_filter(&sources),
            "lastUpdateDateTime ge 2026-11-26T10:00:00.1234567Z and lastUpdateDateTime lt 2026-11-26T11:00:00.0000000Z and (serviceSource eq 'microsoftDefenderForEndpoint' or serviceSource eq 'dataLossPrevention')"
        );
        // $top capped at Graph's 1,000, and no $expand.
        let qs = q.graph_query_string(&[]);
        assert!(qs.ends_with("&$top=1000"), "{qs}");
        assert!(!qs.contains("expand"), "{qs}");
    }

    #[test]
    fn retirement_is_recognised_in_words() {
        assert!(names_retirement("ApiRetired: The API has been retired"));
        assert!(names_retirement("This endpoint is deprecated"));
        assert!(!names_retirement("Forbidden: Missing application roles"));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(61));
        let d = parse_retry_after(&in_a_minute).unwrap();
        assert!(
            d > Duration::from_secs(55) && d <= Duration::from_secs(61),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn error_bodies_are_read_defensively() {
        assert_eq!(
            error_message(br#"{"error":{"code":"Forbidden","message":"no role","target":"x"}}"#),
            "Forbidden: no role"
        );
        assert_eq!(error_message(b""), "no body");
        assert_eq!(error_message(b"<html>"), "unparsed body of 6 bytes");
    }

    #[test]
    fn pages_borrow_alerts_verbatim() {
        let body = PageBody {
            bytes: br#"{"@odata.context":"x","value":[{"id":"a","lastUpdateTime":"2021-01-26T20:33:59.2Z","n":  1}]}"#.to_vec(),
            _turn: None,
            _share: None,
        };
        let page = body.parse().unwrap();
        assert_eq!(page.value.len(), 1);
        assert_eq!(
            page.value[0].get(),
            r#"{"id":"a","lastUpdateTime":"2021-01-26T20:33:59.2Z","n":  1}"#
        );
        assert!(page.next_link.is_none());
    }
}
