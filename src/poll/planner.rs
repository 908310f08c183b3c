//! The window planner: which slices of time to read, decided from what the
//! reads answered. Pure: no I/O and no clock (the caller passes `now`), so
//! any source that filters by time and caps a page with `$top` can drive it.
//!
//! A read asks for `[from, to)` with `$top`. Its answer is either *emitted*
//! (the page, and any nextLink chain after it, was taken) or *withheld* (the
//! page may hold only part of the window, so nothing of it was taken). What
//! proves a window complete differs per source — for MDE a page shorter than
//! `$top`, for a server that clamps `$top` silently only the absence of a
//! nextLink — so that rule is a parameter ([`IsComplete`]), not code here.
//!
//! Several reads may be in flight at once: [`next`](Planner::next) hands out
//! reads, each with an id, and [`answer_to`](Planner::answer_to) takes their
//! answers in any order. Windows never overlap, so each alert is in exactly
//! one complete window whatever the order.
//!
//! What the planner does with an answer:
//! - withheld: the page is a sample of its window (the API answers in no
//!   particular order), so its update times say *where* the alerts are. The
//!   window is cut at the sample's quantiles: first a small probe (1/16 of
//!   the sample) whose count gives alerts per sample point, then the rest
//!   into pieces expected to hold ~90 % of a page each. An instant that holds
//!   half the page is isolated at once; a window one tick wide is read
//!   instant by instant with `$skip` (the only place `$skip` is used: no
//!   narrower window exists); a page without usable times is split in two;
//! - emitted after a chain that the rule says may be cut short: split it too
//!   (what was already emitted is skipped by dedup on the second read);
//! - complete: remember its density, and cut the next wide window into pieces
//!   expected to fit a page before asking for it, so a back-fill does not
//!   fetch (and throw away) a full page at every level of a split.

use std::collections::{BTreeMap, VecDeque};

use crate::timestamp::{Timestamp, TICKS_PER_SECOND};

/// Pages of `$skip` within one instant before the server is taken to ignore
/// `$skip` (a million alerts at the largest page size: none really exist).
pub const MAX_INSTANT_PAGES: u32 = 100;

/// The share of a page a piece cut from a sample is expected to hold: the
/// sample's estimate is good to a few per cent at 10,000 alerts a page.
const SAMPLE_FILL: f64 = 0.9;

/// The share of the sample a probe covers (its count scales the sample).
const PROBE_SHARE: usize = 16;

/// A window `[from, to)`; `to = None` is open-ended, so that an alert stamped
/// by a server clock ahead of ours is not left for a later poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: Timestamp,
    pub to: Option<Timestamp>,
}

/// One read to make: a filter on the update time, `$top` and `$skip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Names this read in [`Planner::answer_to`].
    pub id: u64,
    pub from: Timestamp,
    pub to: Option<Timestamp>,
    pub top: u32,
    pub skip: u32,
    /// A page of a single instant: its answer is emitted even when full,
    /// since no narrower window could hold less.
    pub instant: bool,
}

/// How many alerts an emitted answer held, for the source's [`IsComplete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    /// Alerts in the answer: the one page, or the whole nextLink chain.
    pub count: usize,
    /// The `$top` asked for.
    pub top: u32,
    /// Whether nextLinks were followed to get `count`.
    pub chained: bool,
}

/// A source's rule: does an answer whose last page had no nextLink prove that
/// its window held nothing more?
pub type IsComplete = fn(Answered) -> bool;

/// What a read answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The page may be a subset of the window: nothing of it was taken.
    Withheld(FullPage),
    /// The page (and its chain, if any) was taken.
    Emitted { count: usize, chained: bool },
}

/// What a withheld page says about where its alerts are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FullPage {
    /// Its newest update time.
    pub newest: Option<Timestamp>,
    /// An instant that holds half the page or more.
    pub crowded: Option<Timestamp>,
    /// Every update time of the page, sorted: a sample of the window.
    pub times: Vec<Timestamp>,
}

impl FullPage {
    /// Reads the facts off the update times of a page of `count` alerts
    /// (alerts without a parseable time are counted but not placed).
    pub fn from_times(count: usize, times: impl IntoIterator<Item = Timestamp>) -> Self {
        let mut times: Vec<Timestamp> = times.into_iter().collect();
        times.sort_unstable();
        let newest = times.last().copied();
        // The longest run of one instant in the sorted times.
        let mut crowded: Option<(Timestamp, usize)> = None;
        let mut i = 0;
        while i < times.len() {
            let run = times[i..].iter().take_while(|t| **t == times[i]).count();
            if crowded.is_none_or(|(_, n)| run > n) {
                crowded = Some((times[i], run));
            }
            i += run;
        }
        let crowded = crowded.filter(|(_, n)| n * 2 >= count).map(|(at, _)| at);
        FullPage {
            newest,
            crowded,
            times,
        }
    }
}

/// What the planner made of an answer (for the caller's log lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The window is read; the next read (if any) is another window.
    Complete,
    /// A window split at `mid` (in two, or at its sample's quantiles).
    Split { from: Timestamp, mid: Timestamp },
    /// A crowded instant cut out of its window.
    Isolated { at: Timestamp },
    /// A single instant holds a full page: paging it with `$skip` starts.
    Instant { at: Timestamp },
    /// The next `$skip` page of the instant being paged.
    NextSkip { at: Timestamp, skip: u32 },
}

/// Why the plan cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The same instant answered a full page `pages` times: `$skip` is ignored.
    #[error(
        "the API returned {pages} full pages for the one instant {at}: it seems to ignore $skip"
    )]
    SkipIgnored { at: Timestamp, pages: u32 },
}

/// A read in flight, as it was when it was handed out.
#[derive(Debug, Clone, Copy)]
enum Asked {
    Window {
        window: Window,
        /// Its width in ticks against the `now` it was planned at.
        width: i64,
        basis: Option<usize>,
    },
    Instant {
        at: Timestamp,
        skip: u32,
        /// Pages of this instant answered so far, this one excluded.
        pages: u32,
    },
}

/// A window waiting to be read.
#[derive(Debug, Clone, Copy)]
struct Pending {
    window: Window,
    /// The sample it is cut by.
    basis: Option<usize>,
    /// Not handed out until its basis is scaled (while anything is in flight).
    hold: bool,
}

/// The sorted update times of a withheld page, and once known how many
/// alerts of the window one of them stands for.
#[derive(Debug)]
struct Basis {
    times: Vec<Timestamp>,
    scale: Option<f64>,
}

impl Basis {
    /// The index range of the sample's times in `[from, to)`.
    fn range(&self, from: Timestamp, to: Option<Timestamp>) -> (usize, usize) {
        let lo = self.times.partition_point(|t| *t < from);
        let hi = to.map_or(self.times.len(), |to| {
            self.times.partition_point(|t| *t < to)
        });
        (lo, hi.max(lo))
    }
}

/// Plans the reads of one poll: [`next`](Self::next) hands out reads,
/// [`answer_to`](Self::answer_to) takes what they returned.
#[derive(Debug)]
pub struct Planner {
    top: u32,
    is_complete: IsComplete,
    pending: VecDeque<Pending>,
    /// The next `$skip` pages of instants being paged (one per instant: an
    /// instant is paged one page after the other).
    ready: VecDeque<Asked>,
    /// Alerts per tick in the last complete window, for the pre-cut.
    density: Option<f64>,
    in_flight: BTreeMap<u64, Asked>,
    next_id: u64,
    bases: Vec<Basis>,
}

impl Planner {
    /// A plan for `[lower, ∞)` at `top` alerts a page.
    pub fn new(lower: Timestamp, top: u32, is_complete: IsComplete) -> Self {
        Planner {
            top,
            is_complete,
            pending: VecDeque::from([Pending {
                window: Window {
                    from: lower,
                    to: None,
                },
                basis: None,
                hold: false,
            }]),
            ready: VecDeque::new(),
            density: None,
            in_flight: BTreeMap::new(),
            next_id: 0,
            bases: Vec::new(),
        }
    }

    /// A plan for `[lower, upper)` (the audit's range; `upper = None` is
    /// open-ended, as a poll's plan is).
    pub fn between(
        lower: Timestamp,
        upper: Option<Timestamp>,
        top: u32,
        is_complete: IsComplete,
    ) -> Self {
        let mut plan = Planner::new(lower, top, is_complete);
        plan.pending = VecDeque::from([Pending {
            window: Window {
                from: lower,
                to: upper,
            },
            basis: None,
            hold: false,
        }]);
        plan
    }

    /// The `$top` of every read.
    pub fn top(&self) -> u32 {
        self.top
    }

    /// Reads handed out and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn issue(&mut self, asked: Asked) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight.insert(id, asked);
        id
    }

    /// The next read, or `None` when nothing can be asked before a read in
    /// flight is answered — or, with none in flight, when everything from
    /// `lower` up to `now` has been read.
    pub fn next(&mut self, now: Timestamp) -> Option<Read> {
        if let Some(asked) = self.ready.pop_front() {
            let Asked::Instant { at, skip, .. } = asked else {
                unreachable!("only instants wait in `ready`")
            };
            let id = self.issue(asked);
            return Some(self.instant_read(id, at, skip));
        }
        let mut i = 0;
        while i < self.pending.len() {
            let p = self.pending[i];
            let scale = p.basis.and_then(|b| self.bases[b].scale);
            if p.hold && scale.is_none() && !self.in_flight.is_empty() {
                i += 1;
                continue;
            }
            self.pending.remove(i);
            let Window { from, to } = p.window;
            let end = to.unwrap_or(now).max(from);
            let width = end.ticks() - from.ticks();
            let page = f64::from(self.top);
            if let (Some(b), Some(scale)) = (p.basis, scale) {
                let (lo, hi) = self.bases[b].range(from, to);
                let expected = scale * (hi - lo) as f64;
                // No test of `width` here: an open window's width counts
                // only up to `now`, and its sample may lie past it.
                if expected > SAMPLE_FILL * page {
                    let pieces = (expected / (SAMPLE_FILL * page)).ceil() as usize;
                    let cuts = self.quantile_cut(b, p.window, lo, hi, pieces);
                    if cuts.len() > 1 {
                        for (n, w) in cuts.into_iter().enumerate() {
                            let piece = Pending {
                                window: w,
                                basis: Some(b),
                                hold: false,
                            };
                            self.pending.insert(i + n, piece);
                        }
                        continue;
                    }
                }
            } else if let Some(d) = self.density {
                let expected = d * width as f64;
                if expected > page && width > 1 {
                    let cuts = self.pre_cut(from, to, end, width, expected);
                    for (n, w) in cuts.into_iter().enumerate() {
                        let piece = Pending {
                            window: w,
                            basis: None,
                            hold: false,
                        };
                        self.pending.insert(i + n, piece);
                    }
                    // Estimates are guesses: each piece is still checked for fullness.
                    self.density = None;
                    continue;
                }
            }
            let id = self.issue(Asked::Window {
                window: p.window,
                width,
                basis: p.basis,
            });
            return Some(Read {
                id,
                from,
                to,
                top: self.top,
                skip: 0,
                instant: false,
            });
        }
        None
    }

    /// Cuts `window` at the quantiles of its sample `times[lo..hi]` into
    /// `pieces` windows of an equal share of the sample each.
    fn quantile_cut(
        &self,
        b: usize,
        Window { from, to }: Window,
        lo: usize,
        hi: usize,
        pieces: usize,
    ) -> Vec<Window> {
        let times = &self.bases[b].times;
        let n = hi - lo;
        let mut cuts = Vec::with_capacity(pieces);
        let mut a = from;
        for j in 1..pieces {
            let t = times[lo + j * n / pieces];
            if t > a && to.is_none_or(|to| t < to) {
                cuts.push(Window {
                    from: a,
                    to: Some(t),
                });
                a = t;
            }
        }
        cuts.push(Window { from: a, to });
        cuts
    }

    /// Cuts `[from, to)` into pieces expected to hold ~70 % of a page each.
    fn pre_cut(
        &self,
        from: Timestamp,
        to: Option<Timestamp>,
        end: Timestamp,
        width: i64,
        expected: f64,
    ) -> Vec<Window> {
        let pieces = (expected / (0.7 * f64::from(self.top))).ceil().min(64.0) as i64;
        let step = (width / pieces).max(1);
        let mut cuts: Vec<Window> = Vec::new();
        let mut a = from;
        for _ in 1..pieces {
            let b = Timestamp::from_ticks(a.ticks() + step);
            if b >= end {
                break;
            }
            cuts.push(Window {
                from: a,
                to: Some(b),
            });
            a = b;
        }
        cuts.push(Window { from: a, to });
        cuts
    }

    fn instant_read(&self, id: u64, at: Timestamp, skip: u32) -> Read {
        Read {
            id,
            from: at,
            to: Some(Timestamp::from_ticks(at.ticks() + 1)),
            top: self.top,
            skip,
            instant: true,
        }
    }

    /// Takes the answer to the one read in flight (the oldest, if several).
    pub fn answer(&mut self, answer: Answer, now: Timestamp) -> Result<Step, PlanError> {
        match self.in_flight.keys().next().copied() {
            Some(id) => self.answer_to(id, answer, now),
            None => Ok(Step::Complete),
        }
    }

    /// Takes the answer to read `id` handed out by [`next`](Self::next).
    pub fn answer_to(
        &mut self,
        id: u64,
        answer: Answer,
        now: Timestamp,
    ) -> Result<Step, PlanError> {
        let Some(asked) = self.in_flight.remove(&id) else {
            return Ok(Step::Complete);
        };
        match asked {
            Asked::Instant { at, skip, pages } => {
                let done = match answer {
                    // The server paged this instant itself.
                    Answer::Emitted { chained: true, .. } => true,
                    Answer::Emitted { count, .. } => (self.is_complete)(Answered {
                        count,
                        top: self.top,
                        chained: false,
                    }),
                    Answer::Withheld(_) => false,
                };
                if done {
                    return Ok(Step::Complete);
                }
                let pages = pages + 1;
                if pages >= MAX_INSTANT_PAGES {
                    // A server that ignores $skip answers the same full page forever.
                    return Err(PlanError::SkipIgnored { at, pages });
                }
                let skip = skip.saturating_add(self.top);
                self.ready.push_back(Asked::Instant { at, skip, pages });
                Ok(Step::NextSkip { at, skip })
            }
            Asked::Window {
                window,
                width,
                basis,
            } => match answer {
                Answer::Emitted {
                    count,
                    chained: false,
                } => {
                    // A window under a second (a crowded instant just read)
                    // says nothing about the density around it.
                    if width >= TICKS_PER_SECOND {
                        self.density = Some(count as f64 / width as f64);
                    }
                    self.scale_bases(window, count);
                    Ok(Step::Complete)
                }
                Answer::Emitted {
                    count,
                    chained: true,
                } => {
                    let answered = Answered {
                        count,
                        top: self.top,
                        chained: true,
                    };
                    if (self.is_complete)(answered) {
                        self.density = Some(count as f64 / width.max(1) as f64);
                        self.scale_bases(window, count);
                        Ok(Step::Complete)
                    } else {
                        // If `$top` caps the whole chain, a chain adding up
                        // to a full page may hide more: split.
                        Ok(self.split(window, FullPage::default(), basis, now))
                    }
                }
                Answer::Withheld(full) => Ok(self.split(window, full, basis, now)),
            },
        }
    }

    /// A complete window of `count` alerts scales every sample not yet
    /// scaled that has times in it.
    fn scale_bases(&mut self, window: Window, count: usize) {
        for basis in &mut self.bases {
            if basis.scale.is_none() {
                let (lo, hi) = basis.range(window.from, window.to);
                if hi > lo {
                    basis.scale = Some(count as f64 / (hi - lo) as f64);
                }
            }
        }
    }

    /// The answer was an arbitrary subset of `window`: read it again in parts.
    fn split(
        &mut self,
        Window { from, to }: Window,
        full: FullPage,
        parent: Option<usize>,
        now: Timestamp,
    ) -> Step {
        let end = match to {
            Some(to) => to,
            None => {
                let past_newest = full.newest.map(|t| Timestamp::from_ticks(t.ticks() + 1));
                now.max(past_newest.unwrap_or(from)).max(from)
            }
        };
        let width = end.ticks() - from.ticks();
        if width <= 1 {
            self.ready.push_front(Asked::Instant {
                at: from,
                skip: 0,
                pages: 0,
            });
            return Step::Instant { at: from };
        }
        let plain = |window| Pending {
            window,
            basis: None,
            hold: false,
        };
        if let Some(t) = full.crowded.filter(|t| *t >= from && *t < end) {
            // Half the page shares one instant: isolate it at once rather
            // than halving the window ~30 times to reach it.
            let after = Timestamp::from_ticks(t.ticks() + 1);
            if after < end || to.is_none() {
                self.pending.push_front(plain(Window { from: after, to }));
            }
            self.pending.push_front(plain(Window {
                from: t,
                to: Some(after),
            }));
            if t > from {
                self.pending.push_front(plain(Window { from, to: Some(t) }));
            }
            return Step::Isolated { at: t };
        }
        if let Some(step) = self.sample_split(Window { from, to }, full, parent) {
            return step;
        }
        let mid = Timestamp::from_ticks(from.ticks() + width / 2);
        self.pending.push_front(plain(Window { from: mid, to }));
        self.pending.push_front(plain(Window {
            from,
            to: Some(mid),
        }));
        Step::Split { from, mid }
    }

    /// Cuts a window by the sample its withheld page gave: at once if the
    /// sample it was itself cut by says how many alerts it holds, else a
    /// probe of 1/16 of the sample first and the rest held until its count
    /// scales the sample. `None` if the page's times cannot cut the window.
    fn sample_split(
        &mut self,
        window: Window,
        full: FullPage,
        parent: Option<usize>,
    ) -> Option<Step> {
        let Window { from, to } = window;
        let mut times = full.times;
        times.retain(|t| *t >= from && to.is_none_or(|to| *t < to));
        let n = times.len();
        if n < 2 {
            return None;
        }
        let probe_at = times[(n / PROBE_SHARE).max(1)..]
            .iter()
            .copied()
            .find(|t| *t > from)?;
        // The parent sample's estimate of this window, if it had one: the
        // page was full, so at least a page and likely a bit more.
        let inherited = parent.and_then(|b| {
            let basis = &self.bases[b];
            let (lo, hi) = basis.range(from, to);
            basis.scale.map(|s| {
                let estimate = (s * (hi - lo) as f64).max(f64::from(self.top)) * 1.15;
                estimate / n as f64
            })
        });
        let b = self.bases.len();
        self.bases.push(Basis {
            times,
            scale: inherited,
        });
        if inherited.is_some() {
            self.pending.push_front(Pending {
                window,
                basis: Some(b),
                hold: false,
            });
        } else {
            self.pending.push_front(Pending {
                window: Window { from: probe_at, to },
                basis: Some(b),
                hold: true,
            });
            self.pending.push_front(Pending {
                window: Window {
                    from,
                    to: Some(probe_at),
                },
                basis: Some(b),
                hold: false,
            });
        }
        Some(Step::Split {
            from,
            mid: probe_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::classify::{classify, Class, Version};
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn t(ticks: i64) -> Timestamp {
        Timestamp::from_ticks(ticks)
    }

    /// MDE's rule, restated here so the planner's tests need no `poll`.
    fn short_page(a: Answered) -> bool {
        a.count < a.top as usize
    }

    /// A server that clamps `$top`: only a missing nextLink proves completeness.
    fn no_next_link(_: Answered) -> bool {
        true
    }

    fn emitted(count: usize) -> Answer {
        Answer::Emitted {
            count,
            chained: false,
        }
    }

    fn window(read: Read) -> (i64, Option<i64>) {
        (read.from.ticks(), read.to.map(Timestamp::ticks))
    }

    #[test]
    fn an_empty_window_is_one_read() {
        let mut plan = Planner::new(t(100), 10, short_page);
        let read = plan.next(t(200)).unwrap();
        assert_eq!(window(read), (100, None));
        assert_eq!((read.top, read.skip, read.instant), (10, 0, false));
        assert_eq!(plan.answer(emitted(0), t(200)), Ok(Step::Complete));
        assert_eq!(plan.next(t(200)), None);
    }

    #[test]
    fn a_full_page_splits_its_window_in_two_up_to_now() {
        let mut plan = Planner::new(t(0), 10, short_page);
        plan.next(t(1000)).unwrap();
        let full = FullPage {
            newest: Some(t(500)),
            ..FullPage::default()
        };
        let step = plan.answer(Answer::Withheld(full), t(1000)).unwrap();
        assert_eq!(
            step,
            Step::Split {
                from: t(0),
                mid: t(500)
            }
        );
        assert_eq!(window(plan.next(t(1000)).unwrap()), (0, Some(500)));
        plan.answer(emitted(3), t(1000)).unwrap();
        // The upper half stays open-ended.
        assert_eq!(window(plan.next(t(1000)).unwrap()), (500, None));
    }

    #[test]
    fn an_open_window_splits_past_its_newest_alert_when_that_is_ahead_of_now() {
        let mut plan = Planner::new(t(0), 10, short_page);
        plan.next(t(100)).unwrap();
        let full = FullPage {
            newest: Some(t(299)),
            ..FullPage::default()
        };
        let step = plan.answer(Answer::Withheld(full), t(100)).unwrap();
        assert_eq!(
            step,
            Step::Split {
                from: t(0),
                mid: t(150)
            }
        );
    }

    #[test]
    fn a_crowded_instant_is_cut_out_at_once() {
        let mut plan = Planner::new(t(0), 10, short_page);
        plan.next(t(1000)).unwrap();
        let full = FullPage {
            newest: Some(t(700)),
            crowded: Some(t(700)),
            times: vec![t(700); 10],
        };
        let step = plan.answer(Answer::Withheld(full), t(1000)).unwrap();
        assert_eq!(step, Step::Isolated { at: t(700) });
        let mut reads = Vec::new();
        while let Some(read) = plan.next(t(1000)) {
            reads.push(window(read));
            plan.answer(emitted(1), t(1000)).unwrap();
        }
        assert_eq!(reads, [(0, Some(700)), (700, Some(701)), (701, None)]);
    }

    #[test]
    fn a_full_instant_is_paged_with_skip_until_a_short_page() {
        let mut plan = Planner::new(t(5), 10, short_page);
        plan.next(t(6)).unwrap();
        let step = plan.answer(Answer::Withheld(FullPage::default()), t(5));
        assert_eq!(step, Ok(Step::Instant { at: t(5) }));
        let first = plan.next(t(6)).unwrap();
        assert_eq!(
            (window(first), first.skip, first.instant),
            ((5, Some(6)), 0, true)
        );
        assert_eq!(
            plan.answer(emitted(10), t(6)),
            Ok(Step::NextSkip { at: t(5), skip: 10 })
        );
        assert_eq!(plan.next(t(6)).unwrap().skip, 10);
        assert_eq!(plan.answer(emitted(4), t(6)), Ok(Step::Complete));
        assert_eq!(plan.next(t(6)), None);
    }

    #[test]
    fn a_server_that_ignores_skip_is_named_after_a_bounded_number_of_pages() {
        let mut plan = Planner::new(t(5), 10, short_page);
        plan.next(t(6)).unwrap();
        plan.answer(Answer::Withheld(FullPage::default()), t(5))
            .unwrap();
        let mut reads = 0;
        let err = loop {
            plan.next(t(6)).unwrap();
            reads += 1;
            match plan.answer(emitted(10), t(6)) {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(reads, MAX_INSTANT_PAGES);
        assert_eq!(
            err,
            PlanError::SkipIgnored {
                at: t(5),
                pages: MAX_INSTANT_PAGES
            }
        );
        assert!(err.to_string().contains("ignore $skip"), "{err}");
    }

    #[test]
    fn a_chain_that_adds_up_to_a_page_is_split_only_where_top_caps_chains() {
        let chain = Answer::Emitted {
            count: 10,
            chained: true,
        };
        let mut mde = Planner::new(t(0), 10, short_page);
        mde.next(t(100)).unwrap();
        assert!(matches!(
            mde.answer(chain.clone(), t(100)),
            Ok(Step::Split { .. })
        ));

        let mut graph = Planner::new(t(0), 10, no_next_link);
        graph.next(t(100)).unwrap();
        assert_eq!(graph.answer(chain, t(100)), Ok(Step::Complete));
        assert_eq!(graph.next(t(100)), None);
    }

    #[test]
    fn a_dense_window_cuts_the_next_one_before_asking() {
        let s = TICKS_PER_SECOND;
        let mut plan = Planner::new(t(0), 100, short_page);
        plan.next(t(1000 * s)).unwrap();
        plan.answer(Answer::Withheld(FullPage::default()), t(1000 * s))
            .unwrap();
        // [0, 500 s) held 90 alerts: 0.18 a second, so [500 s, 1000 s) is
        // expected to hold 90 too (under a page: one read), and a wider
        // window at that density is cut into ~70-alert pieces.
        plan.next(t(1000 * s)).unwrap();
        plan.answer(emitted(90), t(1000 * s)).unwrap();
        let read = plan.next(t(5000 * s)).unwrap();
        // 4,500 s at 0.18/s = 810 alerts: ⌈810 / 70⌉ = 12 pieces of 375 s.
        assert_eq!(window(read), (500 * s, Some(875 * s)));
    }

    #[test]
    fn full_page_facts_name_the_newest_and_a_half_page_instant() {
        let full = FullPage::from_times(4, [t(3), t(9), t(3), t(1)]);
        assert_eq!(full.newest, Some(t(9)));
        assert_eq!(full.crowded, Some(t(3)));
        let spread = FullPage::from_times(5, [t(3), t(9), t(3), t(1), t(2)]);
        assert_eq!(spread.crowded, None);
        assert_eq!(FullPage::from_times(2, []), FullPage::default());
    }

    /// How the in-memory server pages.
    #[derive(Debug, Clone, Copy)]
    enum Paging {
        /// MDE as documented: `$top` honoured, no nextLink.
        Top,
        /// At most `min($top, n)` a page, a nextLink while more remain
        /// (Graph, which clamps `$top` silently; MDE's server paging).
        NextLink(usize),
    }

    /// One alert of the test tenant: its id, update time, and what the store
    /// already holds for it before the poll.
    #[derive(Debug, Clone, Copy)]
    struct Alert {
        id: usize,
        version: Version,
        prior: Option<Version>,
    }

    /// The server's answer to `read`, from `offset` into its result (a
    /// nextLink is that offset): the page and whether a nextLink follows.
    fn serve(alerts: &[Alert], read: &Read, offset: usize, paging: Paging) -> (Vec<Alert>, bool) {
        let hits: Vec<Alert> = alerts
            .iter()
            .filter(|a| {
                a.version.last_update >= read.from
                    && read.to.is_none_or(|to| a.version.last_update < to)
            })
            .copied()
            .collect();
        let start = (read.skip as usize + offset).min(hits.len());
        let per_page = match paging {
            Paging::Top => read.top as usize,
            Paging::NextLink(n) => n.min(read.top as usize),
        };
        let end = (start + per_page).min(hits.len());
        let more = matches!(paging, Paging::NextLink(_)) && end < hits.len();
        (hits[start..end].to_vec(), more)
    }

    /// The answer the in-memory server gives to `read`, taking (into `take`)
    /// whatever of it is emitted.
    fn serve_read(
        alerts: &[Alert],
        read: &Read,
        top: u32,
        paging: Paging,
        rule: IsComplete,
        take: &mut impl FnMut(&[Alert]),
    ) -> Answer {
        let (page, mut more) = serve(alerts, read, 0, paging);
        let withheld = !more
            && !read.instant
            && !rule(Answered {
                count: page.len(),
                top,
                chained: false,
            });
        if withheld {
            let times = page.iter().map(|a| a.version.last_update);
            return Answer::Withheld(FullPage::from_times(page.len(), times));
        }
        take(&page);
        let chained = more;
        let mut count = page.len();
        while more {
            let (next, again) = serve(alerts, read, count, paging);
            take(&next);
            count += next.len();
            more = again;
        }
        Answer::Emitted { count, chained }
    }

    /// Drives a planner against the in-memory server the way `Run` drives it
    /// against the API: up to `in_flight` reads at once, answered in an order
    /// drawn from `order`; returns every version emitted, with its class, and
    /// how many reads were made.
    #[allow(clippy::too_many_arguments)]
    fn poll_concurrently(
        alerts: &[Alert],
        top: u32,
        paging: Paging,
        rule: IsComplete,
        lower: Timestamp,
        now: Timestamp,
        in_flight: usize,
        mut order: u64,
    ) -> (Vec<(usize, Version, Class)>, usize) {
        let mut store: HashMap<usize, Version> = alerts
            .iter()
            .filter_map(|a| a.prior.map(|p| (a.id, p)))
            .collect();
        let mut out = Vec::new();
        let mut take = |page: &[Alert]| {
            for a in page {
                let class = classify(store.get(&a.id).copied(), a.version, now);
                if class != Class::Skip {
                    store.insert(a.id, a.version);
                    out.push((a.id, a.version, class));
                }
            }
        };
        let mut plan = Planner::new(lower, top, rule);
        let mut reads = 0;
        let mut flying: Vec<Read> = Vec::new();
        loop {
            while flying.len() < in_flight {
                match plan.next(now) {
                    Some(read) => flying.push(read),
                    None => break,
                }
            }
            if flying.is_empty() {
                break;
            }
            assert_eq!(plan.in_flight(), flying.len());
            // A cheap generator is enough to vary the order of answers.
            order = order
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let read = flying.swap_remove((order >> 33) as usize % flying.len());
            reads += 1;
            assert!(reads < 100_000, "the plan does not end");
            let answer = serve_read(alerts, &read, top, paging, rule, &mut take);
            plan.answer_to(read.id, answer, now)
                .expect("the server honours $skip");
        }
        (out, reads)
    }

    /// The back-fill of the benchmark: 100,000 alerts spread over 20 hours
    /// of a 24-hour window, in the API's arbitrary order, 10,000 a page.
    fn back_fill_reads(in_flight: usize, order: u64) -> usize {
        let s = TICKS_PER_SECOND;
        let mut x = order | 1;
        let alerts: Vec<Alert> = (0..100_000)
            .map(|id| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = t(4 * 3600 * s + (x % (20 * 3600 * s as u64)) as i64);
                Alert {
                    id,
                    version: Version {
                        last_update: at,
                        hash: id as u64,
                    },
                    prior: None,
                }
            })
            .collect();
        let (out, reads) = poll_concurrently(
            &alerts,
            10_000,
            Paging::Top,
            short_page,
            t(0),
            t(24 * 3600 * s),
            in_flight,
            order,
        );
        assert_eq!(out.len(), alerts.len(), "every alert once");
        reads
    }

    #[test]
    fn a_back_fill_cut_by_its_first_page_takes_at_most_a_quarter_more_reads_than_pages() {
        // The minimum is ⌈100,000 / 10,000⌉ + 1 = 11 (one full page to learn
        // that the window is full); the target is 1.25 × that.
        for (in_flight, order) in [(1, 7), (4, 99), (8, 12_345)] {
            let reads = back_fill_reads(in_flight, order);
            assert!(reads <= 13, "{reads} reads with {in_flight} in flight");
        }
    }

    #[test]
    fn reads_wait_for_the_probe_that_scales_their_sample() {
        let mut plan = Planner::new(t(0), 10, short_page);
        let first = plan.next(t(1000)).unwrap();
        let times: Vec<Timestamp> = (0..10).map(|i| t(i * 100)).collect();
        let full = FullPage::from_times(10, times);
        plan.answer_to(first.id, Answer::Withheld(full), t(1000))
            .unwrap();
        let probe = plan.next(t(1000)).unwrap();
        assert_eq!(window(probe), (0, Some(100)));
        // The rest waits: its cut depends on the probe's count.
        assert_eq!(plan.next(t(1000)), None);
        // One of the sample's ten times stood for 3 alerts: ~30 in the rest
        // of the window, cut into pieces of ≤ 90 % of a page (nine of the
        // ten times are left: ⌈27 / 9⌉ = 3 pieces at the sample's thirds).
        plan.answer_to(probe.id, emitted(3), t(1000)).unwrap();
        let mut reads = Vec::new();
        while let Some(read) = plan.next(t(1000)) {
            reads.push(window(read));
        }
        assert_eq!(reads, [(100, Some(400)), (400, Some(700)), (700, None)]);
    }

    /// Alert times as small offsets (so that instants repeat) times a scale
    /// (so that windows are both narrower and wider than a second), each
    /// with a server-order key and what the store already holds for it.
    fn tenant() -> impl Strategy<Value = (Vec<Alert>, i64)> {
        let scale = prop_oneof![Just(1i64), Just(997), Just(TICKS_PER_SECOND / 3)];
        let alert = (0i64..1500, any::<u32>(), 0u8..4);
        (scale, prop::collection::vec(alert, 0..150)).prop_map(|(scale, raw)| {
            let mut keyed: Vec<(u32, Alert)> = raw
                .into_iter()
                .enumerate()
                .map(|(id, (offset, order, prior))| {
                    let at = t(1_000_000 + offset * scale);
                    let version = Version {
                        last_update: at,
                        hash: u64::MAX - id as u64,
                    };
                    let older = Version {
                        last_update: t(at.ticks() - 1),
                        hash: id as u64 + 1,
                    };
                    let prior = match prior {
                        0 => Some(version),
                        1 => Some(older),
                        // Same instant, other content with a smaller hash: an
                        // update too (the larger hash wins a same-instant tie).
                        2 => Some(Version {
                            hash: id as u64,
                            ..version
                        }),
                        _ => None,
                    };
                    (order, Alert { id, version, prior })
                })
                .collect();
            // Any server order: the API promises none.
            keyed.sort_by_key(|(order, _)| *order);
            (keyed.into_iter().map(|(_, a)| a).collect(), scale)
        })
    }

    fn paging() -> impl Strategy<Value = (Paging, bool)> {
        prop_oneof![
            Just((Paging::Top, true)),
            (1usize..30).prop_map(|n| (Paging::NextLink(n), true)),
            (1usize..30).prop_map(|n| (Paging::NextLink(n), false)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// For any multiset of alert times, page size, server order, paging,
        /// number of reads in flight and order of their answers, the planned reads emit every version the store lacks
        /// exactly once, classified against what the store held, and never
        /// one it already has.
        #[test]
        fn planned_reads_cover_every_alert_and_classify_each_version_once(
            (alerts, scale) in tenant(),
            top in 2u32..25,
            (paging, mde_rule) in paging(),
            now_offset in 0i64..2000,
            in_flight in 1usize..5,
            order in any::<u64>(),
        ) {
            let rule: IsComplete = if mde_rule { short_page } else { no_next_link };
            // Some alerts lie ahead of `now` (a server clock ahead of ours).
            let now = t(1_000_000 + now_offset * scale);
            let (out, _) = poll_concurrently(
                &alerts, top, paging, rule, t(1_000_000), now, in_flight, order,
            );

            let mut seen: HashMap<usize, (Version, Class)> = HashMap::new();
            for (id, version, class) in &out {
                prop_assert!(
                    seen.insert(*id, (*version, *class)).is_none(),
                    "alert {} emitted twice", id
                );
            }
            for a in &alerts {
                let want = match a.prior {
                    None => Some(Class::New),
                    Some(p) if p == a.version => None,
                    Some(_) => Some(Class::Update),
                };
                let got = seen.get(&a.id).map(|(v, c)| {
                    assert_eq!(*v, a.version);
                    *c
                });
                prop_assert_eq!(got, want, "alert {} prior {:?}", a.id, a.prior);
            }
        }
    }
}
