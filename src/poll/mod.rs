//! One poll of one tenant: time windows → fetch → dedup → emit → commit.
//!
//! This is the only place that decides what counts as new. The API promises no
//! order and no `@odata.nextLink`, and `$skip` over changing data skips or
//! repeats items, so a poll pages **by time**: a window whose answer is shorter
//! than `$top` is complete; a full one is split in two and each half read
//! again. Every page is emitted (written, flushed, fsynced) before the store
//! records it, and the cursor moves only after the whole poll succeeded, so a
//! crash at any point repeats at most the page in flight and loses nothing.

mod classify;
pub(crate) mod planner;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::api::{AlertsApi, PageBody, Query};
use crate::backoff::Backoff;
use crate::config::PollSettings;
use crate::output::{AlertSource, AlertVersion, Record};
use crate::store::{Cursor, EmittedVersion, PollOutcome, Store};
use crate::timestamp::Timestamp;

/// What a failed poll wraps, for callers that match on it.
pub use crate::api::ApiError;
pub(crate) use crate::output::Emitter;
pub(crate) use crate::store::blocking;
pub use crate::store::StoreError;
pub(crate) use classify::{classify, Class, Version};
use planner::{Answer, Answered, FullPage, IsComplete, PlanError, Planner, Read, ReadId, Step};

/// How far ahead of our clock a lastUpdateTime may be and still move the cursor.
const CURSOR_HORIZON: std::time::Duration = std::time::Duration::from_secs(3600);

/// Links followed in one `@odata.nextLink` chain before it is cut and the
/// window split by time instead (a $top of 10,000 in pages of 100 is 100).
const MAX_CHAIN_LINKS: usize = 200;

/// The largest `$top` the API accepts.
const MAX_TOP: u32 = 10_000;

/// Retries of a page that arrived as malformed JSON (a truncated body).
const MALFORMED_RETRIES: u32 = 5;

/// The MDE alerts API's rule: `$top` is honoured, so an answer shorter than
/// `$top` holds the whole window, and one as long as `$top` may not (a
/// nextLink chain counts as one answer: `$top` may cap the whole chain).
pub(crate) fn mde_is_complete(a: Answered) -> bool {
    a.count < a.top as usize
}

/// What a poll needs besides the tenant.
#[derive(Clone)]
pub struct PollEnv {
    pub(crate) store: Arc<Store>,
    pub(crate) emitter: Arc<Emitter>,
    pub settings: PollSettings,
}

/// The tenant being polled.
#[derive(Debug)]
pub struct TenantPoll {
    /// Shared with the tenant's token source and the scheduler's table.
    pub name: Arc<str>,
    pub tenant_id: Arc<str>,
    pub(crate) api: AlertsApi,
}

/// What one successful poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Alerts returned by complete windows (an alert re-read is counted again).
    pub seen: u64,
    /// Lines written.
    pub emitted: u64,
    /// Calls to the alerts API, including the full windows that were split.
    pub requests: u64,
    /// The cursor after this poll.
    pub cursor: Option<String>,
}

/// Why a poll failed. `Display` says what happened, `summary` a few words for
/// `STATUS=`, `hint` the operator's next step.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("writing the output: {0}")]
    Output(std::io::Error),
    #[error("a page of alerts could not be parsed after {MALFORMED_RETRIES} tries: {0}")]
    Malformed(String),
    /// One instant kept answering full pages however far `$skip` went: the
    /// server (or a proxy) drops `$skip`, and that instant cannot be read whole.
    #[error("the alerts API answered {pages} full pages for the one instant {at} whatever the $skip: it ignores $skip, so the alerts of that instant cannot all be read")]
    SkipIgnored { at: Timestamp, pages: u32 },
}

impl PollError {
    /// A token error the operator must fix (consent, secret, certificate, …).
    pub(crate) fn persistent_auth(&self) -> Option<&crate::auth::AuthError> {
        match self {
            PollError::Api(ApiError::Auth(e)) if e.is_persistent() => Some(e),
            _ => None,
        }
    }

    /// Local trouble (disk full, read-only database, unwritable output), a
    /// missing role, or an API that does not page as documented: retrying
    /// will not help until someone acts.
    pub(crate) fn needs_operator(&self) -> bool {
        match self {
            PollError::Store(e) => !e.is_retryable(),
            PollError::Output(_) | PollError::SkipIgnored { .. } => true,
            PollError::Api(e) => e.needs_operator(),
            PollError::Malformed(_) => false,
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        matches!(self, PollError::Api(ApiError::Cancelled))
    }

    /// A few words for `STATUS=` and `status`.
    pub(crate) fn summary(&self) -> String {
        match self {
            PollError::Api(e) => e.summary(),
            PollError::Store(_) => "database error".to_owned(),
            PollError::Output(_) => "output not writable".to_owned(),
            PollError::Malformed(_) => "malformed pages".to_owned(),
            PollError::SkipIgnored { .. } => "API ignores $skip".to_owned(),
        }
    }

    /// The operator's next step, written to be printed under the error.
    pub(crate) fn hint(&self) -> &'static str {
        match self {
            PollError::Api(e) => e.hint(),
            PollError::Store(e) if e.is_retryable() => {
                "the database was busy: the next poll tries again; act only if it persists"
            }
            PollError::Store(_) => {
                "check the database file named in the error: disk space, permissions, and that no other process holds it (store.path)"
            }
            PollError::Output(_) => {
                "check the output: disk space and permissions of output.target, or that the process reading stdout is still running"
            }
            PollError::Malformed(_) => {
                "pages kept arriving truncated or garbled: check any proxy between this host and the API; the next poll tries again"
            }
            PollError::SkipIgnored { .. } => {
                "check api_url and `cloud`, and any proxy in between that drops query parameters; if they are right, report this line (the API no longer honours $skip)"
            }
        }
    }
}

/// Where a poll started at `now` begins reading.
pub(crate) fn poll_lower_bound(
    cursor: Option<&Cursor>,
    now: Timestamp,
    settings: &PollSettings,
) -> Timestamp {
    match cursor {
        // Re-read `lookback` behind the newest change seen: alerts reach the
        // API late, with a lastUpdateTime older than ones already returned.
        // Never from a cursor ahead of our clock (a fast replica stamped an
        // alert minutes ahead): `lookback` counts back from now at the latest.
        Some(c) => c.at.min(now).saturating_sub(settings.lookback),
        None => now.saturating_sub(settings.first_lookback),
    }
}

/// What an audit of one range found: alert versions (one per id, the
/// newest the API showed) the API holds, those already emitted, those not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AuditCounts {
    pub in_api: u64,
    pub emitted: u64,
    pub missing: u64,
    /// Missing versions written to the output and recorded (repair only).
    pub repaired: u64,
    /// Calls to the alerts API.
    pub requests: u64,
}

/// The versions an audit has seen, by alert id: the newest, and whether it
/// was missing when first seen (a repaired version read again stays missing).
#[derive(Debug, Default)]
pub(crate) struct AuditTally {
    repair: bool,
    seen: Mutex<HashMap<String, (Version, bool)>>,
}

impl AuditTally {
    fn saw(&self, id: &str, version: Version, missing: bool) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(id) {
            Some((v, _)) if v.last_update > version.last_update || *v == version => {}
            _ => {
                seen.insert(id.to_owned(), (version, missing));
            }
        }
    }
}

/// Compares the alert versions the API holds with `lastUpdateTime` in
/// `[from, to)` against the store, reading through the very windows, pages
/// and dedup a poll uses; with `repair`, emits the missing ones as a poll
/// would (`new` or `update`), each recorded only once written. Never moves
/// the cursor and records no poll.
pub(crate) async fn audit_tenant(
    env: &PollEnv,
    tenant: &TenantPoll,
    from: Timestamp,
    to: Timestamp,
    repair: bool,
    cancel: &CancellationToken,
) -> Result<AuditCounts, PollError> {
    let tally = Arc::new(AuditTally {
        repair,
        seen: Mutex::default(),
    });
    let run = Run::new(env, tenant, cancel, None, Some(Arc::clone(&tally)));
    let plan = Planner::between(from, Some(to), run.top, run.is_complete);
    run.windows(plan).await?;
    let requests = run.state().report.requests;
    let seen = tally.seen.lock().unwrap_or_else(|p| p.into_inner());
    let in_api = seen.len() as u64;
    let missing = seen.values().filter(|(_, m)| *m).count() as u64;
    Ok(AuditCounts {
        in_api,
        emitted: in_api - missing,
        missing,
        repaired: if repair { missing } else { 0 },
        requests,
    })
}

/// Graph's rule: besides the absence of a nextLink (a page that carries one
/// is withheld before this is asked), a page as long as `$top` is not taken
/// as proof either, in case something on the way dropped the nextLink.
pub(crate) fn graph_is_complete(a: Answered) -> bool {
    a.chained || a.count < a.top as usize
}

/// The `$top` a tenant's reads ask for: `page_size`, or Graph's cap of 1,000
/// for Graph tenants (one config serves both sources).
pub(crate) fn page_top(source: AlertSource, page_size: u32) -> u32 {
    match source {
        AlertSource::Mde => page_size,
        AlertSource::Graph => page_size.min(crate::api::GRAPH_MAX_TOP),
    }
}

/// Polls `tenant` once. The poll is recorded in the store's history whatever
/// its outcome; the cursor moves only on success.
pub async fn poll_tenant(
    env: &PollEnv,
    tenant: &TenantPoll,
    cancel: &CancellationToken,
) -> Result<PollReport, PollError> {
    let started = Timestamp::now();
    let (name, id) = (tenant.name.clone(), tenant.tenant_id.clone());
    let poll_id = blocking(&env.store, move |s| s.begin_poll(&name, &id, started)).await?;
    let id = tenant.tenant_id.clone();
    let cursor = blocking(&env.store, move |s| s.cursor(&id)).await?;

    let run = Run::new(env, tenant, cancel, cursor.clone(), None);
    let lower = poll_lower_bound(cursor.as_ref(), started, &env.settings);
    let result = run
        .windows(Planner::new(lower, run.top, run.is_complete))
        .await;

    let mut state = std::mem::take(&mut *run.state());
    let mut report = std::mem::take(&mut state.report);
    report.cursor = state.cursor.as_ref().map(|c| c.text.clone());
    let ended = Timestamp::now();
    let moved = state
        .cursor
        .map(|c| not_ahead_of(c, ended))
        .filter(|c| cursor.as_ref().is_none_or(|old| c.at > old.at));
    let outcome = PollOutcome {
        ended,
        seen: report.seen,
        emitted: report.emitted,
        requests: report.requests,
        error: result.as_ref().err().map(|e| e.to_string()),
        warning: state.warning.take(),
        cursor: if result.is_ok() { moved } else { None },
    };
    let id = tenant.tenant_id.clone();
    blocking(&env.store, move |s| s.finish_poll(poll_id, &id, &outcome)).await?;
    result.map(|()| report)
}

/// A stored cursor never runs ahead of the poll that stores it: the next
/// lower bound is `min(cursor, now) − lookback`, so a cursor ahead of the
/// clock (an alert stamped by a server clock ahead) would, after a gap longer
/// than `lookback`, start the next poll at `now − lookback` and skip the gap.
fn not_ahead_of(c: Cursor, end: Timestamp) -> Cursor {
    if c.at <= end {
        c
    } else {
        Cursor {
            text: end.to_string(),
            at: end,
        }
    }
}

/// Reads of one tenant out at once. Against a slow API the requests are the
/// cost (hundreds of milliseconds each); twelve cover the pieces a 10,000-alert
/// page is cut into, and stay well inside the API's 100 calls a minute, which
/// the tenant's budget enforces anyway. Bodies held at once are bounded apart
/// from this, process-wide (`api::BODY_BUDGET`), so that reads out at once
/// cost sockets, not memory.
const READS_IN_FLIGHT: usize = 12;

/// What the reads of one poll share while several are out at once.
struct Run<'a> {
    env: &'a PollEnv,
    tenant: &'a TenantPoll,
    cancel: &'a CancellationToken,
    source: AlertSource,
    /// The `$top` of every read.
    top: u32,
    /// The source's rule for an answer that holds its whole window.
    is_complete: IsComplete,
    /// An audit's tally: pages are counted, and emitted only to repair.
    audit: Option<Arc<AuditTally>>,
    /// One page of the tenant is read and handled at a time, in the order
    /// the answers came: the store then classifies an alert updated during
    /// the poll (its old version in one window, its new one in another) as it
    /// would sequentially, new then update, never new twice; and a tenant
    /// holds one body at a time, however many reads it has out.
    turn: crate::api::Turn,
    state: Mutex<RunState>,
}

/// What the reads of a poll add up to.
#[derive(Default)]
struct RunState {
    report: PollReport,
    /// The newest lastUpdateTime seen so far (server text, exact ticks).
    cursor: Option<Cursor>,
    /// What the server does wrong that this poll worked around, for `status`.
    warning: Option<String>,
}

/// What one read answered, for the planner; `digest` names the ids of a full
/// page of an instant, to tell a server that ignores `$skip`.
struct ReadDone {
    answer: Answer,
    digest: Option<u64>,
}

type ReadFuture<'r> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (ReadId, Result<ReadDone, PollError>)> + Send + 'r>,
>;

impl<'a> Run<'a> {
    /// A run over `tenant`'s source: its `$top` and its completeness rule.
    fn new(
        env: &'a PollEnv,
        tenant: &'a TenantPoll,
        cancel: &'a CancellationToken,
        cursor: Option<Cursor>,
        audit: Option<Arc<AuditTally>>,
    ) -> Self {
        let source = tenant.api.source();
        Run {
            env,
            tenant,
            cancel,
            source,
            top: page_top(source, env.settings.page_size),
            is_complete: match source {
                AlertSource::Mde => mde_is_complete,
                AlertSource::Graph => graph_is_complete,
            },
            audit,
            turn: crate::api::turn(),
            state: Mutex::new(RunState {
                cursor,
                ..RunState::default()
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads what the planner asks for until it has nothing left, up to
    /// [`READS_IN_FLIGHT`] at once. The first error ends the poll; reads
    /// still out are dropped (nothing is written for a read until its page
    /// has been handled, and a page being handled finishes on its thread).
    async fn windows(&self, mut plan: Planner) -> Result<(), PollError> {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        // The ids of each crowded instant's first page, to tell a server that
        // ignores `$skip` (it answers that page again at every `$skip`).
        let mut instant_first: HashMap<Timestamp, Option<u64>> = HashMap::new();
        let mut reads: HashMap<ReadId, Read> = HashMap::new();
        let mut out: FuturesUnordered<ReadFuture<'_>> = FuturesUnordered::new();
        loop {
            while out.len() < READS_IN_FLIGHT {
                let Some(read) = plan.next(Timestamp::now()) else {
                    break;
                };
                if self.cancel.is_cancelled() {
                    return Err(ApiError::Cancelled.into());
                }
                reads.insert(read.id, read);
                out.push(Box::pin(async move { (read.id, self.read(read).await) }));
            }
            let Some((id, done)) = out.next().await else {
                break;
            };
            let read = reads.remove(&id).expect("every read out is listed");
            let ReadDone { answer, digest } = done?;
            let full_instant_page = read.instant
                && matches!(answer, Answer::Emitted { count, chained: false } if count >= read.top as usize);
            if full_instant_page {
                if read.skip == 0 {
                    instant_first.insert(read.from, digest);
                } else if digest.is_some() && instant_first.get(&read.from) == Some(&digest) {
                    // Read as far as this server allows, then the instant is done.
                    out.push(Box::pin(async move {
                        let done = self.skip_ignored(read.from).await.map(|()| ReadDone {
                            answer: Answer::Emitted {
                                count: 0,
                                chained: false,
                            },
                            digest: None,
                        });
                        (read.id, done)
                    }));
                    reads.insert(read.id, read);
                    continue;
                }
            }
            match plan.answer(id, answer, Timestamp::now()) {
                Ok(Step::Split { from, mid }) => {
                    crate::events::window_split(&self.tenant.name, from, mid);
                }
                Ok(Step::Instant { at }) => {
                    crate::events::instant_paging(&self.tenant.name, at);
                }
                Ok(Step::Probe { from, at }) => {
                    crate::events::window_probe(&self.tenant.name, from, at);
                }
                Ok(Step::Cut { from, pieces }) => {
                    crate::events::window_cut(&self.tenant.name, from, pieces);
                }
                Ok(Step::Complete | Step::Isolated { .. } | Step::NextSkip { .. }) => {}
                Err(PlanError::SkipIgnored { at, pages }) => {
                    return Err(PollError::SkipIgnored { at, pages });
                }
            }
        }
        debug_assert!(plan.is_done(), "the loop ends only when nothing is out");
        Ok(())
    }

    /// One read of the plan: its page, and the nextLink chain after it.
    async fn read(&self, read: Read) -> Result<ReadDone, PollError> {
        let query = Query {
            from: read.from,
            to: read.to,
            top: read.top,
            skip: read.skip,
            expand_evidence: self.env.settings.expand_evidence,
            // What a full window holds places its cuts (alerts_v2 only).
            count: !read.instant,
        };
        let (handled, digest) = self
            .fetch_and_handle(Source::Query(&query), read.instant)
            .await?;
        let answer = match handled {
            Handled::Full(full) => Answer::Withheld(full),
            Handled::Done {
                count,
                next_link: None,
            } => Answer::Emitted {
                count,
                chained: false,
            },
            Handled::Done {
                count,
                next_link: Some(link),
            } => {
                // Server-driven paging. A chain cut short (too long, or a
                // link refused) may hide more: the answer counts as
                // withheld, so the window is split (or the instant paged
                // on with $skip) and re-read; what it emitted dedups.
                let (linked, cut) = self.follow_links(link).await?;
                if cut {
                    Answer::Withheld(FullPage::default())
                } else {
                    Answer::Emitted {
                        count: count + linked,
                        chained: true,
                    }
                }
            }
        };
        Ok(ReadDone { answer, digest })
    }

    /// The server answered the same page whatever the `$skip`: read the
    /// instant once more with the largest `$top` the API takes, which is all
    /// that still works, and say so in `status`; the poll goes on.
    async fn skip_ignored(&self, at: Timestamp) -> Result<(), PollError> {
        let query = Query {
            from: at,
            to: Some(Timestamp::from_ticks(at.ticks() + 1)),
            top: MAX_TOP,
            skip: 0,
            expand_evidence: self.env.settings.expand_evidence,
            count: false,
        };
        let count = match self.fetch_and_handle(Source::Query(&query), true).await?.0 {
            Handled::Done { count, .. } => count,
            Handled::Full { .. } => MAX_TOP as usize,
        };
        let note = if count >= MAX_TOP as usize {
            format!("the API ignores $skip: alerts past the first {MAX_TOP} of the instant {at} cannot be read")
        } else {
            format!("the API ignores $skip: the instant {at} ({count} alerts) was read with $top={MAX_TOP} instead")
        };
        crate::events::skip_ignored(&self.tenant.name, at, count, &note);
        self.state().warning = Some(note);
        Ok(())
    }

    /// Follows a chain of `@odata.nextLink`s; returns how many alerts it held
    /// and whether the chain was cut short, so that more may exist: after
    /// [`MAX_CHAIN_LINKS`] links, or at a link refused (another host). A link
    /// seen before ends the chain (a cycle hands out nothing new).
    async fn follow_links(&self, first: String) -> Result<(usize, bool), PollError> {
        let mut link = Some(first);
        let mut total = 0;
        let mut seen = std::collections::HashSet::new();
        while let Some(url) = link.take() {
            if self.cancel.is_cancelled() {
                return Err(ApiError::Cancelled.into());
            }
            if let Some(cut) = self.chain_check(&mut seen, &url) {
                return Ok((total, cut));
            }
            if let (Handled::Done { count, next_link }, _) =
                self.fetch_and_handle(Source::Link(&url), true).await?
            {
                total += count;
                link = next_link;
            }
        }
        Ok((total, false))
    }

    /// Whether to stop before following `url`: `Some(true)` cuts the chain
    /// (more may exist), `Some(false)` ends it (a cycle).
    fn chain_check(&self, seen: &mut std::collections::HashSet<String>, url: &str) -> Option<bool> {
        let tenant = &self.tenant.name;
        if !self.tenant.api.owns_link(url) {
            let host = reqwest::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "an unparsable address".to_owned());
            crate::events::next_link_refused(tenant, &host);
            return Some(true);
        }
        if !seen.insert(url.to_owned()) {
            crate::events::next_link_cycle(tenant, seen.len());
            return Some(false);
        }
        if seen.len() > MAX_CHAIN_LINKS {
            crate::events::next_link_chain_cut(tenant, MAX_CHAIN_LINKS);
            return Some(true);
        }
        None
    }

    /// Fetches one page and handles it; a body that does not parse (truncated
    /// in transit) is fetched again, a bounded number of times. For a full
    /// page of an instant (a query taken even when full) it also returns the
    /// digest of the page's ids, to tell a server that ignores `$skip`; no
    /// other page pays for that second parse.
    async fn fetch_and_handle(
        &self,
        source: Source<'_>,
        accept_full: bool,
    ) -> Result<(Handled, Option<u64>), PollError> {
        let mut backoff = Backoff::for_requests();
        loop {
            let api = &self.tenant.api;
            let turn = Some(&self.turn);
            let body = match source {
                Source::Query(query) => api.fetch_into(query, self.cancel, turn).await?,
                Source::Link(url) => api.fetch_link(url, self.cancel, turn).await?,
            };
            self.state().report.requests += 1;
            let mut out = crate::api::take_buffer();
            let top = self.top as usize;
            let wants_digest = accept_full && matches!(source, Source::Query(_));
            let ctx = PageContext {
                env: self.env.clone(),
                tenant_name: self.tenant.name.clone(),
                tenant_id: self.tenant.tenant_id.clone(),
                source: self.source,
                top: self.top,
                is_complete: self.is_complete,
                accept_full,
                audit: self.audit.clone(),
            };
            let (outcome, digest) = tokio::task::spawn_blocking(move || {
                let outcome = handle_page(&ctx, &body, &mut out);
                let full = matches!(&outcome, Ok(PageOutcome::Done { count, .. }) if *count >= top);
                let digest = if wants_digest && full {
                    id_digest(body.bytes())
                } else {
                    None
                };
                drop(body);
                crate::api::give_back_buffer(out);
                (outcome, digest)
            })
            .await
            .expect("page handler panicked");
            match outcome {
                Ok(page) => {
                    let mut state = self.state();
                    if let PageOutcome::Done {
                        seen,
                        emitted,
                        newest,
                        ..
                    } = &page
                    {
                        state.report.seen += *seen as u64;
                        state.report.emitted += *emitted as u64;
                        if let Some(newest) = newest {
                            if state.cursor.as_ref().is_none_or(|c| newest.at > c.at) {
                                state.cursor = Some(newest.clone());
                            }
                        }
                    }
                    return Ok((page.into(), digest));
                }
                Err(PageError::Malformed(e)) => {
                    if backoff.attempts() >= MALFORMED_RETRIES {
                        return Err(PollError::Malformed(e));
                    }
                    let delay = backoff.next_delay();
                    crate::events::api_retry(&self.tenant.name, &e, backoff.attempts(), delay);
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(ApiError::Cancelled.into()),
                        _ = crate::slots::idle(tokio::time::sleep(delay)) => {}
                    }
                }
                Err(PageError::Store(e)) => return Err(e.into()),
                Err(PageError::Output(e)) => return Err(PollError::Output(e)),
            }
        }
    }
}

/// Where a page comes from: a query of ours, or a server's nextLink.
#[derive(Clone, Copy)]
enum Source<'a> {
    Query(&'a Query),
    Link(&'a str),
}

enum Handled {
    Full(FullPage),
    Done {
        count: usize,
        next_link: Option<String>,
    },
}

impl From<PageOutcome> for Handled {
    fn from(p: PageOutcome) -> Self {
        match p {
            PageOutcome::Full(full) => Handled::Full(full),
            PageOutcome::Done {
                count, next_link, ..
            } => Handled::Done { count, next_link },
        }
    }
}

struct PageContext {
    env: PollEnv,
    tenant_name: Arc<str>,
    tenant_id: Arc<str>,
    source: AlertSource,
    /// The `$top` asked for, and the source's rule for a complete answer.
    top: u32,
    is_complete: IsComplete,
    /// A page of an instant or of a nextLink chain: taken even when full.
    accept_full: bool,
    audit: Option<Arc<AuditTally>>,
}

#[derive(Debug)]
enum PageOutcome {
    /// As many alerts as `$top`: possibly more exist; nothing was emitted.
    Full(FullPage),
    Done {
        count: usize,
        seen: usize,
        emitted: usize,
        newest: Option<Cursor>,
        next_link: Option<String>,
    },
}

#[derive(Debug)]
enum PageError {
    Malformed(String),
    Store(StoreError),
    Output(std::io::Error),
}

impl From<std::io::Error> for PageError {
    fn from(e: std::io::Error) -> Self {
        PageError::Output(e)
    }
}

/// The fields dedup needs, read from an alert without copying it.
#[derive(Deserialize)]
struct AlertKey<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "lastUpdateTime", borrow, default)]
    last_update: Option<Cow<'a, str>>,
    /// Graph's name for the same instant: the version time of Graph alerts.
    #[serde(rename = "lastUpdateDateTime", borrow, default)]
    last_update_graph: Option<Cow<'a, str>>,
}

struct Parsed<'a> {
    raw: &'a serde_json::value::RawValue,
    id: Cow<'a, str>,
    /// `id` is the alert's own (not its content standing in).
    has_id: bool,
    last_update: Option<(Timestamp, Cow<'a, str>)>,
    hash: u64,
}

/// Below this many alerts a page's keys are read on one thread.
const PARALLEL_KEYS_FROM: usize = 2048;

/// Reads each alert's key fields and content hash. A large page is split
/// over two threads: while a page is handled nothing else of the poll runs
/// (the next request waits for it), and this scan of every alert's text is
/// a fifth of the page's CPU. The first malformed alert in page order is the
/// error either way.
fn parse_keys<'a>(
    value: &'a [&'a serde_json::value::RawValue],
    source: AlertSource,
) -> Result<Vec<Parsed<'a>>, PageError> {
    let run = |part: &'a [&'a serde_json::value::RawValue]| {
        part.iter()
            .map(|raw| parse_key(raw, source))
            .collect::<Result<Vec<_>, _>>()
    };
    if value.len() < PARALLEL_KEYS_FROM {
        return run(value);
    }
    let (first, second) = value.split_at(value.len() / 2);
    let (a, b) = std::thread::scope(|s| {
        let b = s.spawn(|| run(second));
        (run(first), b.join())
    });
    let mut parsed = a?;
    // A panic in the scan is a bug, not bad input: surface it as one.
    parsed.extend(b.expect("page key reader panicked")?);
    Ok(parsed)
}

fn parse_key<'a>(
    raw: &'a serde_json::value::RawValue,
    source: AlertSource,
) -> Result<Parsed<'a>, PageError> {
    let text = raw.get();
    let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
    let key: AlertKey = serde_json::from_str(text)
        .map_err(|e| PageError::Malformed(format!("an alert that is not an object: {e}")))?;
    // An alert without an id cannot be matched to its earlier versions:
    // its content stands in, so an identical one is still emitted once.
    let has_id = key.id.is_some();
    let id = key
        .id
        .unwrap_or_else(|| Cow::Owned(format!("content-{hash:016x}")));
    let last_update = match source {
        AlertSource::Mde => key.last_update,
        AlertSource::Graph => key.last_update_graph,
    };
    let last_update = last_update.and_then(|s| Timestamp::parse(&s).ok().map(|t| (t, s)));
    Ok(Parsed {
        raw,
        id,
        has_id,
        last_update,
        hash,
    })
}

/// Parses, dedups, emits and records one page (blocking: runs on the blocking
/// pool so a fetch → emit → commit cycle is never cut by cancellation).
fn handle_page(
    ctx: &PageContext,
    body: &PageBody,
    buf: &mut Vec<u8>,
) -> Result<PageOutcome, PageError> {
    let page = body
        .parse()
        .map_err(|e| PageError::Malformed(e.to_string()))?;
    let count = page.value.len();
    let parsed = parse_keys(&page.value, ctx.source)?;
    let answered = Answered {
        count,
        top: ctx.top,
        chained: false,
    };
    // Graph pages with nextLinks over live data: an alert updated between
    // two pages moves, and `$skip`-based links then skip or repeat others.
    // So a window whose answer has a nextLink is a full page, withheld and
    // split by time like MDE's, until every window fits one page; only the
    // pages of a single instant (no narrower window exists) follow links.
    let graph_full = ctx.source == AlertSource::Graph && page.next_link.is_some();
    let full = graph_full || (page.next_link.is_none() && !(ctx.is_complete)(answered));
    if full && !ctx.accept_full {
        let times = parsed
            .iter()
            .filter_map(|p| p.last_update.as_ref().map(|l| l.0));
        return Ok(PageOutcome::Full(
            FullPage::from_times(count, times).with_matched(page.count),
        ));
    }
    // A lastUpdateTime far in the future (a bad server clock, a corrupt
    // record) must not drag the cursor there: every later poll would then
    // start past the alerts that are really arriving.
    let horizon = Timestamp::now().saturating_add(CURSOR_HORIZON);
    let newest = parsed
        .iter()
        .filter_map(|p| p.last_update.as_ref())
        .filter(|l| l.0 <= horizon)
        .max_by_key(|l| l.0)
        .map(|(at, text)| Cursor {
            text: text.to_string(),
            at: *at,
        });

    let ids: Vec<&str> = parsed.iter().map(|p| p.id.as_ref()).collect();
    let known = ctx
        .env
        .store
        .known_versions(&ctx.tenant_id, &ids)
        .map_err(PageError::Store)?;

    let now = Timestamp::now();
    let graph = ctx.source == AlertSource::Graph;
    let mut emitted_here: HashMap<&str, Version> = HashMap::new();
    let mut versions = Vec::new();
    // From here to the last line, the page holds the sink and its format.
    let mut writer = ctx.env.emitter.page(buf, body.len_bytes());
    let mut counted = crate::metrics::Emitted::default();
    for p in &parsed {
        let incoming = Version {
            last_update: p.last_update.as_ref().map_or(Timestamp::MIN, |l| l.0),
            hash: p.hash,
        };
        let previous = emitted_here.get(p.id.as_ref()).copied().or_else(|| {
            known.get(p.id.as_ref()).map(|k| Version {
                last_update: k.last_update,
                hash: k.content_hash,
            })
        });
        // The same version stored in the other API's form (a tenant just
        // switched from mde to graph, re-reading its lookback): other
        // content at the same instant, taken once in this form, always,
        // rather than by the larger-hash rule's coin toss.
        let other_form = !emitted_here.contains_key(p.id.as_ref())
            && known
                .get(p.id.as_ref())
                .is_some_and(|k| k.from_graph != graph);
        let class = match previous {
            Some(prev) if other_form && prev.last_update == incoming.last_update => Class::Update,
            _ => classify(previous, incoming, now),
        };
        let change = class.change();
        if let Some(audit) = &ctx.audit {
            audit.saw(&p.id, incoming, change.is_some());
            if !audit.repair {
                continue;
            }
        }
        let Some(change) = change else {
            continue;
        };
        let record = Record {
            timestamp: now,
            change,
            source: ctx.source,
            tenant_name: &ctx.tenant_name,
            tenant_id: &ctx.tenant_id,
            alert: p.raw,
            // What was read here, so the output need not read it again.
            version: match &p.last_update {
                Some((updated, _)) if p.has_id => Some(AlertVersion {
                    id: &p.id,
                    updated: *updated,
                }),
                _ => None,
            },
        };
        writer.push(&record).map_err(PageError::from)?;
        emitted_here.insert(p.id.as_ref(), incoming);
        counted.add(change);
        versions.push(EmittedVersion {
            alert_id: p.id.to_string(),
            last_update: incoming.last_update,
            content_hash: p.hash,
            from_graph: graph,
        });
    }
    writer.finish().map_err(PageError::from)?;
    // Only now, with the lines durable, is the page recorded as emitted.
    if !versions.is_empty() {
        ctx.env
            .store
            .record_emitted(&ctx.tenant_id, &versions)
            .map_err(PageError::Store)?;
    }
    counted.commit();
    Ok(PageOutcome::Done {
        count,
        seen: count,
        emitted: versions.len(),
        newest,
        next_link: page.next_link,
    })
}

/// The alert ids of a page, sorted and hashed: two answers with the same
/// digest hold the same alerts (in whatever order the server sent them).
fn id_digest(body: &[u8]) -> Option<u64> {
    let page: crate::api::Page<'_> = serde_json::from_slice(body).ok()?;
    let mut ids: Vec<String> = page
        .value
        .iter()
        .filter_map(|raw| serde_json::from_str::<AlertKey>(raw.get()).ok()?.id)
        .map(Cow::into_owned)
        .collect();
    ids.sort_unstable();
    Some(xxhash_rust::xxh3::xxh3_64(ids.join("\n").as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn alerts(n: usize, bad_at: Option<usize>) -> Vec<Box<RawValue>> {
        (0..n)
            .map(|i| {
                let text = if Some(i) == bad_at {
                    "[1]".to_owned()
                } else {
                    format!(
                        r#"{{"id":"da{i}","lastUpdateTime":"2026-01-01T00:00:{:02}Z"}}"#,
                        i % 60
                    )
                };
                RawValue::from_string(text).unwrap()
            })
            .collect()
    }

    /// A page large enough to be read on two threads keeps its order, and
    /// a malformed alert in either half fails it.
    #[test]
    fn a_large_page_keeps_its_order_and_a_bad_alert_anywhere_fails_it() {
        let n = PARALLEL_KEYS_FROM * 2 + 1;
        let owned = alerts(n, None);
        let page: Vec<&RawValue> = owned.iter().map(|b| &**b).collect();
        let parsed = parse_keys(&page, AlertSource::Mde).unwrap();
        assert_eq!(parsed.len(), n);
        for (i, p) in parsed.iter().enumerate() {
            assert_eq!(p.id, format!("da{i}"));
            assert!(p.has_id && p.last_update.is_some());
        }
        for bad in [3, n - 3] {
            let owned = alerts(n, Some(bad));
            let page: Vec<&RawValue> = owned.iter().map(|b| &**b).collect();
            assert!(
                matches!(
                    parse_keys(&page, AlertSource::Mde),
                    Err(PageError::Malformed(_))
                ),
                "bad alert at {bad}"
            );
        }
    }
}
