//! The window planner: which slice of time to read next, decided from what the
//! last read answered. Pure: no I/O and no clock (the caller passes `now`), so
//! any source that filters by time and caps a page with `$top` can drive it.
//!
//! A read asks for `[from, to)` with `$top`. Its answer is either *emitted*
//! (the page, and any nextLink chain after it, was taken) or *withheld* (the
//! page may hold only part of the window, so nothing of it was taken). What
//! proves a window complete differs per source — for MDE a page shorter than
//! `$top`, for a server that clamps `$top` silently only the absence of a
//! nextLink — so that rule is a parameter ([`IsComplete`]), not code here.
//!
//! What the planner does with an answer:
//! - withheld: split the window in two; isolate an instant that holds half the
//!   page at once; a window one tick wide is read instant by instant with
//!   `$skip` (the only place `$skip` is used: no narrower window exists);
//! - emitted after a chain that the rule says may be cut short: split it too
//!   (what was already emitted is skipped by dedup on the second read);
//! - complete: remember its density, and cut the next wide window into pieces
//!   expected to fit a page before asking for it, so a back-fill does not
//!   fetch (and throw away) a full page at every level of a split.

use std::collections::{HashMap, VecDeque};

use crate::timestamp::{Timestamp, TICKS_PER_SECOND};

/// Pages of `$skip` within one instant before the server is taken to ignore
/// `$skip` (a million alerts at the largest page size: none really exist).
pub(crate) const MAX_INSTANT_PAGES: u32 = 100;

/// A window `[from, to)`; `to = None` is open-ended, so that an alert stamped
/// by a server clock ahead of ours is not left for a later poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub from: Timestamp,
    pub to: Option<Timestamp>,
}

/// One read to make: a filter on the update time, `$top` and `$skip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Read {
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
pub(crate) struct Answered {
    /// Alerts in the answer: the one page, or the whole nextLink chain.
    pub count: usize,
    /// The `$top` asked for.
    pub top: u32,
    /// Whether nextLinks were followed to get `count`.
    pub chained: bool,
}

/// A source's rule: does an answer whose last page had no nextLink prove that
/// its window held nothing more?
pub(crate) type IsComplete = fn(Answered) -> bool;

/// What a read answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The page may be a subset of the window: nothing of it was taken.
    Withheld(FullPage),
    /// The page (and its chain, if any) was taken.
    Emitted { count: usize, chained: bool },
}

/// What a withheld page says about where its alerts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FullPage {
    /// Its newest update time.
    pub newest: Option<Timestamp>,
    /// An instant that holds half the page or more.
    pub crowded: Option<Timestamp>,
}

impl FullPage {
    /// Reads the facts off the update times of a page of `count` alerts
    /// (alerts without a parseable time are counted but not placed).
    pub(crate) fn from_times(count: usize, times: impl IntoIterator<Item = Timestamp>) -> Self {
        let mut per_instant: HashMap<Timestamp, usize> = HashMap::new();
        for at in times {
            *per_instant.entry(at).or_default() += 1;
        }
        let newest = per_instant.keys().max().copied();
        let crowded = per_instant
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .filter(|(_, n)| n * 2 >= count)
            .map(|(at, _)| at);
        FullPage { newest, crowded }
    }
}

/// What the planner made of an answer (for the caller's log lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The window is read; the next read (if any) is another window.
    Complete,
    /// A window split in two at `mid`.
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
pub(crate) enum PlanError {
    /// The same instant answered a full page `pages` times: `$skip` is ignored.
    #[error(
        "the API returned {pages} full pages for the one instant {at}: it seems to ignore $skip"
    )]
    SkipIgnored { at: Timestamp, pages: u32 },
}

/// The read in flight, as it was when it was handed out.
#[derive(Debug, Clone, Copy)]
enum Asked {
    Window {
        window: Window,
        /// Its width in ticks against the `now` it was planned at.
        width: i64,
    },
    Instant {
        at: Timestamp,
        skip: u32,
        /// Pages of this instant answered so far, this one excluded.
        pages: u32,
    },
}

/// Plans the reads of one poll: [`next`](Self::next) hands out a read,
/// [`answer`](Self::answer) takes what it returned.
#[derive(Debug)]
pub(crate) struct Planner {
    top: u32,
    is_complete: IsComplete,
    pending: VecDeque<Window>,
    /// Alerts per tick in the last complete window, for the pre-cut.
    density: Option<f64>,
    asked: Option<Asked>,
}

impl Planner {
    /// A plan for `[lower, ∞)` at `top` alerts a page.
    pub(crate) fn new(lower: Timestamp, top: u32, is_complete: IsComplete) -> Self {
        Planner {
            top,
            is_complete,
            pending: VecDeque::from([Window {
                from: lower,
                to: None,
            }]),
            density: None,
            asked: None,
        }
    }

    /// A plan for `[lower, upper)` (the audit's range; `upper = None` is
    /// open-ended, as a poll's plan is).
    pub(crate) fn between(
        lower: Timestamp,
        upper: Option<Timestamp>,
        top: u32,
        is_complete: IsComplete,
    ) -> Self {
        let mut plan = Planner::new(lower, top, is_complete);
        plan.pending = VecDeque::from([Window {
            from: lower,
            to: upper,
        }]);
        plan
    }

    /// The next read, or `None` when everything from `lower` up to `now` has
    /// been read. Call [`answer`](Self::answer) before asking again.
    pub(crate) fn next(&mut self, now: Timestamp) -> Option<Read> {
        if let Some(Asked::Instant { at, skip, .. }) = self.asked {
            return Some(self.instant_read(at, skip));
        }
        while let Some(Window { from, to }) = self.pending.pop_front() {
            let end = to.unwrap_or(now).max(from);
            let width = end.ticks() - from.ticks();
            let page = f64::from(self.top);
            if let Some(d) = self.density {
                let expected = d * width as f64;
                if expected > page && width > 1 {
                    self.pre_cut(from, to, end, width, expected);
                    // Estimates are guesses: each piece is still checked for fullness.
                    self.density = None;
                    continue;
                }
            }
            self.asked = Some(Asked::Window {
                window: Window { from, to },
                width,
            });
            return Some(Read {
                from,
                to,
                top: self.top,
                skip: 0,
                instant: false,
            });
        }
        None
    }

    /// Cuts `[from, to)` into pieces expected to hold ~70 % of a page each.
    fn pre_cut(
        &mut self,
        from: Timestamp,
        to: Option<Timestamp>,
        end: Timestamp,
        width: i64,
        expected: f64,
    ) {
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
        for w in cuts.into_iter().rev() {
            self.pending.push_front(w);
        }
    }

    fn instant_read(&self, at: Timestamp, skip: u32) -> Read {
        Read {
            from: at,
            to: Some(Timestamp::from_ticks(at.ticks() + 1)),
            top: self.top,
            skip,
            instant: true,
        }
    }

    /// Takes the answer to the read [`next`](Self::next) handed out last.
    pub(crate) fn answer(&mut self, answer: Answer, now: Timestamp) -> Result<Step, PlanError> {
        let Some(asked) = self.asked.take() else {
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
                self.asked = Some(Asked::Instant { at, skip, pages });
                Ok(Step::NextSkip { at, skip })
            }
            Asked::Window { window, width } => match answer {
                Answer::Emitted {
                    count,
                    chained: false,
                } => {
                    // A window under a second (a crowded instant just read)
                    // says nothing about the density around it.
                    if width >= TICKS_PER_SECOND {
                        self.density = Some(count as f64 / width as f64);
                    }
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
                        Ok(Step::Complete)
                    } else {
                        // If `$top` caps the whole chain, a chain adding up
                        // to a full page may hide more: split.
                        Ok(self.split(window, FullPage::default(), now))
                    }
                }
                Answer::Withheld(full) => Ok(self.split(window, full, now)),
            },
        }
    }

    /// The answer was an arbitrary subset of `window`: read it again in parts.
    fn split(&mut self, Window { from, to }: Window, full: FullPage, now: Timestamp) -> Step {
        let end = match to {
            Some(to) => to,
            None => {
                let past_newest = full.newest.map(|t| Timestamp::from_ticks(t.ticks() + 1));
                now.max(past_newest.unwrap_or(from)).max(from)
            }
        };
        let width = end.ticks() - from.ticks();
        if width <= 1 {
            self.asked = Some(Asked::Instant {
                at: from,
                skip: 0,
                pages: 0,
            });
            return Step::Instant { at: from };
        }
        if let Some(t) = full.crowded.filter(|t| *t >= from && *t < end) {
            // Half the page shares one instant: isolate it at once rather
            // than halving the window ~30 times to reach it.
            let after = Timestamp::from_ticks(t.ticks() + 1);
            if after < end || to.is_none() {
                self.pending.push_front(Window { from: after, to });
            }
            self.pending.push_front(Window {
                from: t,
                to: Some(after),
            });
            if t > from {
                self.pending.push_front(Window { from, to: Some(t) });
            }
            return Step::Isolated { at: t };
        }
        let mid = Timestamp::from_ticks(from.ticks() + width / 2);
        self.pending.push_front(Window { from: mid, to });
        self.pending.push_front(Window {
            from,
            to: Some(mid),
        });
        Step::Split { from, mid }
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
            crowded: None,
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
            crowded: None,
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
        assert!(matches!(mde.answer(chain, t(100)), Ok(Step::Split { .. })));

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

    /// Drives a planner against the in-memory server the way `Run` drives it
    /// against the API; returns every version emitted, with its class.
    fn poll(
        alerts: &[Alert],
        top: u32,
        paging: Paging,
        rule: IsComplete,
        lower: Timestamp,
        now: Timestamp,
    ) -> Vec<(usize, Version, Class)> {
        let mut store: HashMap<usize, Version> = alerts
            .iter()
            .filter_map(|a| a.prior.map(|p| (a.id, p)))
            .collect();
        let mut out = Vec::new();
        let mut take = |page: &[Alert], out: &mut Vec<(usize, Version, Class)>| {
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
        while let Some(read) = plan.next(now) {
            reads += 1;
            assert!(reads < 100_000, "the plan does not end");
            let (page, mut more) = serve(alerts, &read, 0, paging);
            let withheld = !more
                && !read.instant
                && !rule(Answered {
                    count: page.len(),
                    top,
                    chained: false,
                });
            let answer = if withheld {
                let times = page.iter().map(|a| a.version.last_update);
                Answer::Withheld(FullPage::from_times(page.len(), times))
            } else {
                take(&page, &mut out);
                let chained = more;
                let mut count = page.len();
                while more {
                    let (next, again) = serve(alerts, &read, count, paging);
                    take(&next, &mut out);
                    count += next.len();
                    more = again;
                }
                Answer::Emitted { count, chained }
            };
            plan.answer(answer, now).expect("the server honours $skip");
        }
        out
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

        /// For any multiset of alert times, page size, server order and
        /// paging, the planned reads emit every version the store lacks
        /// exactly once, classified against what the store held, and never
        /// one it already has.
        #[test]
        fn planned_reads_cover_every_alert_and_classify_each_version_once(
            (alerts, scale) in tenant(),
            top in 2u32..25,
            (paging, mde_rule) in paging(),
            now_offset in 0i64..2000,
        ) {
            let rule: IsComplete = if mde_rule { short_page } else { no_next_link };
            // Some alerts lie ahead of `now` (a server clock ahead of ours).
            let now = t(1_000_000 + now_offset * scale);
            let out = poll(&alerts, top, paging, rule, t(1_000_000), now);

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
