//! One poll of one tenant: time windows → fetch → dedup → emit → commit.
//!
//! This is the only place that decides what counts as new. The API promises no
//! order and no `@odata.nextLink`, and `$skip` over changing data skips or
//! repeats items, so a poll pages **by time**: a window whose answer is shorter
//! than `$top` is complete; a full one is split in two and each half read
//! again. Every page is emitted (written, flushed, fsynced) before the store
//! records it, and the cursor moves only after the whole poll succeeded, so a
//! crash at any point repeats at most the page in flight and loses nothing.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::api::{AlertsApi, ApiError, PageBody, Query};
use crate::backoff::Backoff;
use crate::config::{OutputFormat, PollSettings};
use crate::output::{self, Change, Record, Sink};
use crate::store::{Cursor, EmittedVersion, PollOutcome, Store, StoreError};
use crate::timestamp::Timestamp;

/// Output is flushed in chunks of about this size, so that a 10,000-alert page
/// never needs a second full copy of itself in memory.
const WRITE_CHUNK: usize = 2 << 20;

/// How far ahead of our clock a lastUpdateTime may be and still move the cursor.
const CURSOR_HORIZON: std::time::Duration = std::time::Duration::from_secs(3600);

/// Room past `WRITE_CHUNK` for the line that crosses it: without it, that
/// line would make the buffer double to 4 MB on every full chunk.
const CHUNK_HEADROOM: usize = 64 << 10;

/// Pages of `$skip` within one instant before the server is taken to ignore
/// `$skip` (a million alerts at the largest page size: none really exist).
const MAX_INSTANT_PAGES: u32 = 100;

/// Links followed in one `@odata.nextLink` chain before it is cut and the
/// window split by time instead (a $top of 10,000 in pages of 100 is 100).
const MAX_CHAIN_LINKS: usize = 200;

/// The largest `$top` the API accepts.
const MAX_TOP: u32 = 10_000;

/// Retries of a page that arrived as malformed JSON (a truncated body).
const MALFORMED_RETRIES: u32 = 5;

/// The one output stream all tenants write to, and its format.
pub struct Emitter {
    sink: Mutex<Sink>,
    format: std::sync::RwLock<OutputFormat>,
}

impl Emitter {
    pub fn new(sink: Sink, format: OutputFormat) -> Self {
        Emitter {
            sink: Mutex::new(sink),
            format: std::sync::RwLock::new(format),
        }
    }

    /// Writes whole lines and makes them durable before returning.
    fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        self.sink.lock().expect("sink lock").write_batch(bytes)
    }

    /// Reopens the output file (SIGHUP after logrotate moved it away).
    pub fn reopen(&self) -> std::io::Result<()> {
        self.sink.lock().expect("sink lock").reopen()
    }

    pub fn format(&self) -> OutputFormat {
        *self.format.read().expect("format lock")
    }

    /// Replaces the sink and format (a reload changed them); the old sink is
    /// dropped after the page being written, which holds the lock, is done.
    pub fn replace(&self, sink: Sink, format: OutputFormat) {
        let mut current = self.sink.lock().expect("sink lock");
        *current = sink;
        *self.format.write().expect("format lock") = format;
    }
}

/// What a poll needs besides the tenant.
#[derive(Clone)]
pub struct PollEnv {
    pub store: Arc<Store>,
    pub emitter: Arc<Emitter>,
    pub settings: PollSettings,
}

/// The tenant being polled.
#[derive(Debug)]
pub struct TenantPoll {
    pub name: String,
    pub tenant_id: String,
    pub api: AlertsApi,
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
}

impl PollError {
    /// A token error the operator must fix (consent, secret, certificate, …).
    pub fn persistent_auth(&self) -> Option<&crate::auth::AuthError> {
        match self {
            PollError::Api(ApiError::Auth(e)) if e.is_persistent() => Some(e),
            _ => None,
        }
    }

    /// Local trouble (disk full, read-only database, unwritable output) or a
    /// missing role: retrying will not help until someone acts.
    pub fn needs_operator(&self) -> bool {
        match self {
            PollError::Store(e) => !e.is_retryable(),
            PollError::Output(_) => true,
            PollError::Api(ApiError::Forbidden { .. } | ApiError::BadRequest { .. }) => true,
            _ => false,
        }
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(self, PollError::Api(ApiError::Cancelled))
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

    let mut run = Run {
        env,
        tenant,
        cancel,
        report: PollReport::default(),
        cursor: cursor.clone(),
        body_buf: Vec::new(),
        out_buf: Vec::new(),
        warning: None,
    };
    let lower = match &cursor {
        // Re-read `lookback` behind the newest change seen: alerts reach the
        // API late, with a lastUpdateTime older than ones already returned.
        // Never from a cursor ahead of our clock (a fast replica stamped an
        // alert minutes ahead): `lookback` counts back from now at the latest.
        Some(c) => c.at.min(started).saturating_sub(env.settings.lookback),
        None => started.saturating_sub(env.settings.first_lookback),
    };
    let result = run.windows(lower).await;

    let mut report = std::mem::take(&mut run.report);
    report.cursor = run.cursor_text();
    let ended = Timestamp::now();
    let moved = run
        .cursor
        .map(|c| not_ahead_of(c, ended))
        .filter(|c| cursor.as_ref().is_none_or(|old| c.at > old.at));
    let outcome = PollOutcome {
        ended,
        seen: report.seen,
        emitted: report.emitted,
        error: result.as_ref().err().map(|e| e.to_string()),
        warning: run.warning.take(),
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

struct Run<'a> {
    env: &'a PollEnv,
    tenant: &'a TenantPoll,
    cancel: &'a CancellationToken,
    report: PollReport,
    /// The newest lastUpdateTime seen so far (server text, exact ticks).
    cursor: Option<Cursor>,
    /// Reused for every page of the poll: one body buffer and one output
    /// buffer, rather than a fresh ~12 MB + 2 MB pair per page.
    body_buf: Vec<u8>,
    out_buf: Vec<u8>,
    /// What the server does wrong that this poll worked around, for `status`.
    warning: Option<String>,
}

/// A window `[from, to)`; `to = None` is open-ended, so that an alert stamped
/// by a server clock ahead of ours is not left for a later poll.
type Window = (Timestamp, Option<Timestamp>);

impl Run<'_> {
    fn cursor_text(&self) -> Option<String> {
        self.cursor.as_ref().map(|c| c.text.clone())
    }

    async fn windows(&mut self, lower: Timestamp) -> Result<(), PollError> {
        let page_size = self.env.settings.page_size;
        let mut pending: VecDeque<Window> = VecDeque::from([(lower, None)]);
        // Alerts per tick in the last complete window: used to cut a wide
        // window before asking for it, so a back-fill does not fetch (and
        // throw away) a full page at every level of the split.
        let mut density: Option<f64> = None;
        while let Some((from, to)) = pending.pop_front() {
            if self.cancel.is_cancelled() {
                return Err(ApiError::Cancelled.into());
            }
            let end = to.unwrap_or_else(Timestamp::now).max(from);
            let width = end.ticks() - from.ticks();
            if let Some(d) = density {
                let expected = d * width as f64;
                if expected > f64::from(page_size) && width > 1 {
                    let pieces = (expected / (0.7 * f64::from(page_size))).ceil().min(64.0) as i64;
                    let step = (width / pieces).max(1);
                    let mut cuts: Vec<Window> = Vec::new();
                    let mut a = from;
                    for _ in 1..pieces {
                        let b = Timestamp::from_ticks(a.ticks() + step);
                        if b >= end {
                            break;
                        }
                        cuts.push((a, Some(b)));
                        a = b;
                    }
                    cuts.push((a, to));
                    for w in cuts.into_iter().rev() {
                        pending.push_front(w);
                    }
                    // Estimates are guesses: each piece is still checked for fullness.
                    density = None;
                    continue;
                }
            }
            let query = Query {
                from,
                to,
                top: page_size,
                skip: 0,
                expand_evidence: self.env.settings.expand_evidence,
            };
            let verdict = match self.fetch_and_handle(Source::Query(&query), false).await? {
                Handled::Full { newest, crowded } => Some((newest, crowded)),
                Handled::Done {
                    count,
                    next_link: None,
                } => {
                    // A window under a second (a crowded instant just read)
                    // says nothing about the density around it.
                    if width >= crate::timestamp::TICKS_PER_SECOND {
                        density = Some(count as f64 / width as f64);
                    }
                    None
                }
                Handled::Done {
                    count,
                    next_link: Some(link),
                } => {
                    // Server-driven paging. If `$top` caps the whole chain, a
                    // chain adding up to a full page may hide more: split. So
                    // does a chain cut short (too long, or a link refused).
                    let (linked, cut) = self.follow_links(link).await?;
                    let total = count + linked;
                    if cut || total >= page_size as usize {
                        Some((None, None))
                    } else {
                        density = Some(total as f64 / width.max(1) as f64);
                        None
                    }
                }
            };
            if let Some((newest, crowded)) = verdict {
                // The answer is an arbitrary subset: split and read both halves.
                let end = match to {
                    Some(to) => to,
                    None => {
                        let past_newest = newest.map(|t| Timestamp::from_ticks(t.ticks() + 1));
                        Timestamp::now().max(past_newest.unwrap_or(from)).max(from)
                    }
                };
                let width = end.ticks() - from.ticks();
                if width <= 1 {
                    self.read_instant(from).await?;
                } else if let Some(t) = crowded.filter(|t| *t >= from && *t < end) {
                    // Half the page shares one instant: isolate it at once
                    // rather than halving the window ~30 times to reach it.
                    let after = Timestamp::from_ticks(t.ticks() + 1);
                    if after < end || to.is_none() {
                        pending.push_front((after, to));
                    }
                    pending.push_front((t, Some(after)));
                    if t > from {
                        pending.push_front((from, Some(t)));
                    }
                } else {
                    let mid = Timestamp::from_ticks(from.ticks() + width / 2);
                    pending.push_front((mid, to));
                    pending.push_front((from, Some(mid)));
                    tracing::debug!(event = "window_split", tenant = %self.tenant.name, from = %from, mid = %mid, "full page: window split in two");
                }
            }
        }
        Ok(())
    }

    /// One 100 ns instant holds a full page or more: the only case where
    /// `$skip` is used, since no narrower time window exists.
    async fn read_instant(&mut self, at: Timestamp) -> Result<(), PollError> {
        let page_size = self.env.settings.page_size;
        let mut skip = 0u32;
        tracing::warn!(event = "instant_paging", tenant = %self.tenant.name, at = %at, "one instant holds a full page: paging with $skip");
        let mut first_page = None;
        for _ in 0..MAX_INSTANT_PAGES {
            let query = Query {
                from: at,
                to: Some(Timestamp::from_ticks(at.ticks() + 1)),
                top: page_size,
                skip,
                expand_evidence: self.env.settings.expand_evidence,
            };
            match self.fetch_and_handle(Source::Query(&query), true).await? {
                Handled::Done {
                    next_link: Some(link),
                    ..
                } => {
                    // The server pages this instant itself; a chain cut short
                    // leaves `$skip` as the way on.
                    if !self.follow_links(link).await?.1 {
                        return Ok(());
                    }
                    skip = skip.saturating_add(page_size);
                }
                Handled::Done { count, .. } if count < page_size as usize => return Ok(()),
                _ => {
                    let digest = id_digest(&self.body_buf);
                    if skip > 0 && digest.is_some() && digest == first_page {
                        return self.skip_ignored(at).await;
                    }
                    first_page = first_page.or(digest);
                    skip = skip.saturating_add(page_size)
                }
            }
        }
        // A server that ignores $skip answers the same full page forever.
        Err(PollError::Malformed(format!(
            "the API returned {MAX_INSTANT_PAGES} full pages for the one instant {at}: it seems to ignore $skip"
        )))
    }

    /// The server answered the same page whatever the `$skip`: read the
    /// instant once more with the largest `$top` the API takes, which is all
    /// that still works, and say so in `status`; the poll goes on.
    async fn skip_ignored(&mut self, at: Timestamp) -> Result<(), PollError> {
        let query = Query {
            from: at,
            to: Some(Timestamp::from_ticks(at.ticks() + 1)),
            top: MAX_TOP,
            skip: 0,
            expand_evidence: self.env.settings.expand_evidence,
        };
        let count = match self.fetch_and_handle(Source::Query(&query), true).await? {
            Handled::Done { count, .. } => count,
            Handled::Full { .. } => MAX_TOP as usize,
        };
        let note = if count >= MAX_TOP as usize {
            format!("the API ignores $skip: alerts past the first {MAX_TOP} of the instant {at} cannot be read")
        } else {
            format!("the API ignores $skip: the instant {at} ({count} alerts) was read with $top={MAX_TOP} instead")
        };
        tracing::warn!(event = "skip_ignored", tenant = %self.tenant.name, at = %at, count, "{note}");
        self.warning = Some(note);
        Ok(())
    }

    /// Follows a chain of `@odata.nextLink`s; returns how many alerts it held
    /// and whether the chain was cut short, so that more may exist: after
    /// [`MAX_CHAIN_LINKS`] links, or at a link refused (another host). A link
    /// seen before ends the chain (a cycle hands out nothing new).
    async fn follow_links(&mut self, first: String) -> Result<(usize, bool), PollError> {
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
            if let Handled::Done { count, next_link } =
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
            tracing::warn!(event = "next_link_refused", tenant = %tenant, "the API sent an @odata.nextLink to another host: not followed (the token goes nowhere else); reading by time windows instead");
            return Some(true);
        }
        if !seen.insert(url.to_owned()) {
            tracing::warn!(event = "next_link_cycle", tenant = %tenant, links = seen.len(), "an @odata.nextLink came back a second time: the chain ends there");
            return Some(false);
        }
        if seen.len() > MAX_CHAIN_LINKS {
            tracing::warn!(event = "next_link_chain_cut", tenant = %tenant, links = MAX_CHAIN_LINKS, "the @odata.nextLink chain is too long: cut, reading by time windows instead");
            return Some(true);
        }
        None
    }

    /// Fetches one page and handles it; a body that does not parse (truncated
    /// in transit) is fetched again, a bounded number of times.
    async fn fetch_and_handle(
        &mut self,
        source: Source<'_>,
        accept_full: bool,
    ) -> Result<Handled, PollError> {
        let mut backoff = Backoff::for_requests();
        loop {
            let api = &self.tenant.api;
            let buf = std::mem::take(&mut self.body_buf);
            let body = match source {
                Source::Query(query) => api.fetch_into(query, self.cancel, buf).await?,
                Source::Link(url) => api.fetch_link(url, self.cancel, buf).await?,
            };
            self.report.requests += 1;
            let ctx = PageContext {
                env: self.env.clone(),
                tenant_name: self.tenant.name.clone(),
                tenant_id: self.tenant.tenant_id.clone(),
                page_size: self.env.settings.page_size as usize,
                accept_full,
            };
            let mut out = std::mem::take(&mut self.out_buf);
            let (outcome, body, out) = tokio::task::spawn_blocking(move || {
                let outcome = handle_page(&ctx, &body, &mut out);
                (outcome, body, out)
            })
            .await
            .expect("page handler panicked");
            self.body_buf = body.into_buffer();
            self.out_buf = out;
            match outcome {
                Ok(page) => {
                    if let PageOutcome::Done {
                        seen,
                        emitted,
                        newest,
                        ..
                    } = &page
                    {
                        self.report.seen += *seen as u64;
                        self.report.emitted += *emitted as u64;
                        if let Some(newest) = newest {
                            if self.cursor.as_ref().is_none_or(|c| newest.at > c.at) {
                                self.cursor = Some(newest.clone());
                            }
                        }
                    }
                    return Ok(page.into());
                }
                Err(PageError::Malformed(e)) => {
                    if backoff.attempts() >= MALFORMED_RETRIES {
                        return Err(PollError::Malformed(e));
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(event = "api_retry", tenant = %self.tenant.name, error = %e, attempt = backoff.attempts(), delay_ms = delay.as_millis() as u64, "malformed page; fetching it again");
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
    Full {
        newest: Option<Timestamp>,
        crowded: Option<Timestamp>,
    },
    Done {
        count: usize,
        next_link: Option<String>,
    },
}

impl From<PageOutcome> for Handled {
    fn from(p: PageOutcome) -> Self {
        match p {
            PageOutcome::Full { newest, crowded } => Handled::Full { newest, crowded },
            PageOutcome::Done {
                count, next_link, ..
            } => Handled::Done { count, next_link },
        }
    }
}

struct PageContext {
    env: PollEnv,
    tenant_name: String,
    tenant_id: String,
    page_size: usize,
    accept_full: bool,
}

#[derive(Debug)]
enum PageOutcome {
    /// As many alerts as `$top`: possibly more exist; nothing was emitted.
    Full {
        newest: Option<Timestamp>,
        /// An instant that holds half the page or more.
        crowded: Option<Timestamp>,
    },
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

/// The fields dedup needs, read from an alert without copying it.
#[derive(Deserialize)]
struct AlertKey<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(rename = "lastUpdateTime", borrow, default)]
    last_update: Option<Cow<'a, str>>,
}

struct Parsed<'a> {
    raw: &'a serde_json::value::RawValue,
    id: Cow<'a, str>,
    last_update: Option<(Timestamp, Cow<'a, str>)>,
    hash: u64,
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
    let mut parsed = Vec::with_capacity(count);
    for raw in &page.value {
        let text = raw.get();
        let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
        let key: AlertKey = serde_json::from_str(text)
            .map_err(|e| PageError::Malformed(format!("an alert that is not an object: {e}")))?;
        // An alert without an id cannot be matched to its earlier versions:
        // its content stands in, so an identical one is still emitted once.
        let id = key
            .id
            .unwrap_or_else(|| Cow::Owned(format!("content-{hash:016x}")));
        let last_update = key
            .last_update
            .and_then(|s| Timestamp::parse(&s).ok().map(|t| (t, s)));
        parsed.push(Parsed {
            raw,
            id,
            last_update,
            hash,
        });
    }
    if count >= ctx.page_size && page.next_link.is_none() && !ctx.accept_full {
        let mut per_instant: HashMap<Timestamp, usize> = HashMap::new();
        for at in parsed
            .iter()
            .filter_map(|p| p.last_update.as_ref().map(|l| l.0))
        {
            *per_instant.entry(at).or_default() += 1;
        }
        let newest = per_instant.keys().max().copied();
        let crowded = per_instant
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .filter(|(_, n)| n * 2 >= count)
            .map(|(at, _)| at);
        return Ok(PageOutcome::Full { newest, crowded });
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
    let mut emitted_here: HashMap<&str, (Timestamp, u64)> = HashMap::new();
    let mut versions = Vec::new();
    buf.clear();
    buf.reserve((WRITE_CHUNK + CHUNK_HEADROOM).min(body.len_bytes() + 4096));
    let format = ctx.env.emitter.format();
    for p in &parsed {
        let at = p.last_update.as_ref().map_or(Timestamp::MIN, |l| l.0);
        let previous = emitted_here.get(p.id.as_ref()).copied().or_else(|| {
            known
                .get(p.id.as_ref())
                .map(|k| (k.last_update, k.content_hash))
        });
        let change = match previous {
            None => Change::New,
            // One version with two contents (replicas that disagree): the
            // larger content hash wins, so each content is emitted at most
            // once and the two never take turns on later polls.
            Some((last, hash)) if last == at && p.hash <= hash => continue,
            // An older version read again (a lagging replica): emitting it
            // would make the SIEM's state go backwards. Unless the version we
            // hold is stamped ahead of our clock: a server clock ahead must
            // not hide the real, earlier-stamped updates that follow it.
            Some((last, _)) if at < last && last <= now => continue,
            Some(_) => Change::Update,
        };
        let record = Record {
            timestamp: now,
            change,
            tenant_name: &ctx.tenant_name,
            tenant_id: &ctx.tenant_id,
            alert: p.raw,
        };
        output::render(buf, format, &record)
            .map_err(|e| PageError::Malformed(format!("an alert could not be rendered: {e}")))?;
        if buf.len() >= WRITE_CHUNK {
            ctx.env.emitter.write(buf).map_err(PageError::Output)?;
            buf.clear();
        }
        emitted_here.insert(p.id.as_ref(), (at, p.hash));
        versions.push(EmittedVersion {
            alert_id: p.id.to_string(),
            last_update_text: p
                .last_update
                .as_ref()
                .map_or_else(String::new, |l| l.1.to_string()),
            last_update: at,
            content_hash: p.hash,
        });
    }
    if !buf.is_empty() {
        ctx.env.emitter.write(buf).map_err(PageError::Output)?;
    }
    // Only now, with the lines durable, is the page recorded as emitted.
    if !versions.is_empty() {
        ctx.env
            .store
            .record_emitted(&ctx.tenant_id, &versions, now)
            .map_err(PageError::Store)?;
    }
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

/// Runs a store call on the blocking pool, retrying a busy database briefly.
pub async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl Fn(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || {
        let mut tries = 0;
        loop {
            match f(&store) {
                Err(e) if e.is_retryable() && tries < 5 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100 * tries));
                }
                other => return other,
            }
        }
    })
    .await
    .expect("store task panicked")
}
