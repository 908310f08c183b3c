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
//! Several reads may be out at once and answered in any order: each carries
//! an id, and [`Planner::answer`] takes the answer to one of them. Against a
//! slow API the requests are the cost, so a full page is not halved level by
//! level (a back-fill of ten pages would fetch and throw away a full page at
//! every level): what the page holds says where to cut.
//!
//! - A full page's update times are a sample of its window, but of which
//!   kind is unknown: the MDE API promises no order (a fair sample of the
//!   window), alerts_v2 serves the newest first (one end of it). One *probe*
//!   read of the sample's newest twelfth tells them apart: it holds about as
//!   many alerts as the sample put there (one end) or many times more (a
//!   fair sample, scaled by how many more).
//! - A fair sample: the rest of the window is cut at the sample's quantiles
//!   into pieces expected to fill 90 % of a page, all read at once.
//! - One end: the sampled span is one read; below it, pieces as wide as the
//!   sampled density says hold 85 % of a page are laid out backwards, as many
//!   as the server's `$count` says are left (a few without one), and one
//!   catch-all piece takes whatever lies below them.
//! - Estimates are guesses: every piece is still checked for fullness and
//!   planned again when full, so a wrong guess costs a read, never an alert.
//!   Every window planned from an answer lies strictly inside the one that
//!   answered, so a plan always ends.
//! - A crowded instant (half a page or more at one time) is cut out at once;
//!   a window one tick wide is read with `$skip` (the only place `$skip` is
//!   used: no narrower window exists). A small page (a `$top` under
//!   [`PROBE_FROM`]) is halved, as is a chain the rule says may be cut short.

use std::collections::{HashMap, VecDeque};

use crate::timestamp::{Timestamp, TICKS_PER_SECOND};

/// Pages of `$skip` within one instant before the server is taken to ignore
/// `$skip` (a million alerts at the largest page size: none really exist).
pub(crate) const MAX_INSTANT_PAGES: u32 = 100;

/// The fewest times a full page must hold to be probed; below, it is halved.
pub(crate) const PROBE_FROM: usize = 24;

/// The probe reads the newest `1 / PROBE_SHARE` of a full page's times.
const PROBE_SHARE: usize = 12;

/// A probe holding this many alerts per sampled time or more: the page was a
/// fair sample (one end gives 1; a fair sample of `n` alerts gives `n / top`,
/// so a window under 1.5 pages reads as one end: both plans then fit it).
const FAIR_SCALE: f64 = 1.5;

/// The share of a page a quantile piece is planned to hold: a twelfth of a
/// 10,000-alert sample places a cut within ~3 %, so 90 % stays under a page.
const QUANTILE_FILL: f64 = 0.9;

/// The share of a page a piece of a walk is planned to hold: its width comes
/// from a density measured on one span and applied to others.
const WALK_FILL: f64 = 0.85;

/// The most pieces one answer is cut into (what is left is planned again).
const MAX_PIECES: usize = 256;

/// Pieces of a walk laid out when the server gave no count of what is left.
const BLIND_WALK: usize = 8;

/// A window `[from, to)`; `to = None` is open-ended, so that an alert stamped
/// by a server clock ahead of ours is not left for a later poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub from: Timestamp,
    pub to: Option<Timestamp>,
}

/// Which read an answer belongs to.
pub(crate) type ReadId = u64;

/// One read to make: a filter on the update time, `$top` and `$skip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Read {
    pub id: ReadId,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The page may be a subset of the window: nothing of it was taken.
    Withheld(FullPage),
    /// The page (and its chain, if any) was taken.
    Emitted { count: usize, chained: bool },
}

/// What a withheld page says about where its alerts are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct FullPage {
    /// Its newest update time.
    pub newest: Option<Timestamp>,
    /// An instant that holds half the page or more.
    pub crowded: Option<Timestamp>,
    /// Its update times, sorted: the sample the cuts are placed by.
    pub times: Vec<Timestamp>,
    /// How many alerts the whole window holds, when the server said so
    /// (`@odata.count`).
    pub matched: Option<u64>,
    /// Alerts on the page.
    pub count: usize,
}

impl FullPage {
    /// Reads the facts off the update times of a page of `count` alerts
    /// (alerts without a parseable time are counted but not placed).
    pub(crate) fn from_times(count: usize, times: impl IntoIterator<Item = Timestamp>) -> Self {
        let mut times: Vec<Timestamp> = times.into_iter().collect();
        times.sort_unstable();
        let newest = times.last().copied();
        // The longest run of one instant in the sorted times.
        let mut crowded: Option<(Timestamp, usize)> = None;
        let mut run_start = 0;
        for i in 1..=times.len() {
            if i == times.len() || times[i] != times[run_start] {
                let n = i - run_start;
                if crowded.is_none_or(|(_, best)| n > best) {
                    crowded = Some((times[run_start], n));
                }
                run_start = i;
            }
        }
        let crowded = crowded.filter(|(_, n)| n * 2 >= count).map(|(at, _)| at);
        FullPage {
            newest,
            crowded,
            times,
            matched: None,
            count,
        }
    }

    /// The same facts with the server's count of the whole window.
    pub(crate) fn with_matched(mut self, matched: Option<u64>) -> Self {
        self.matched = matched;
        self
    }
}

/// What the planner made of an answer (for the caller's log lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The window is read.
    Complete,
    /// A window split in two at `mid`.
    Split { from: Timestamp, mid: Timestamp },
    /// A crowded instant cut out of its window.
    Isolated { at: Timestamp },
    /// A single instant holds a full page: paging it with `$skip` starts.
    Instant { at: Timestamp },
    /// The next `$skip` page of the instant being paged.
    NextSkip { at: Timestamp, skip: u32 },
    /// A full window's newest part is read first, to measure its page.
    Probe { from: Timestamp, at: Timestamp },
    /// What is left of a probed window is cut into `pieces` reads.
    Cut { from: Timestamp, pieces: usize },
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

/// A full page whose probe is out: what the probe's answer is read against.
#[derive(Debug, Clone)]
struct Sampled {
    /// The part of the window below the probe.
    rest: Window,
    /// The page's times in `rest`, sorted.
    below: Vec<Timestamp>,
    /// The page's times in the probe's window.
    in_probe: usize,
    /// The server's count of the whole window, if it gave one.
    matched: Option<u64>,
    /// Where the page's window ended (its sampled span ends there).
    end: Timestamp,
    /// Alerts a page held: `$top`, or fewer where the server pages smaller.
    page: usize,
}

/// A read not yet handed out.
#[derive(Debug, Clone)]
enum Pending {
    Window {
        window: Window,
        /// May be cut by the last measured density before it is asked for
        /// (a piece already sized from a sample may not).
        precut: bool,
        probe: Option<Box<Sampled>>,
    },
    Instant {
        at: Timestamp,
        skip: u32,
        /// Pages of this instant answered so far.
        pages: u32,
    },
}

/// A read out, as it was when it was handed out.
#[derive(Debug, Clone)]
enum Asked {
    Window {
        window: Window,
        /// Its width in ticks against the `now` it was planned at.
        width: i64,
        probe: Option<Box<Sampled>>,
    },
    Instant {
        at: Timestamp,
        skip: u32,
        pages: u32,
    },
}

/// Plans the reads of one poll: [`next`](Self::next) hands out reads (as many
/// as the caller wants out at once), [`answer`](Self::answer) takes what one
/// returned, and the plan is over when [`is_done`](Self::is_done).
#[derive(Debug)]
pub(crate) struct Planner {
    top: u32,
    is_complete: IsComplete,
    pending: VecDeque<Pending>,
    asked: HashMap<ReadId, Asked>,
    next_id: ReadId,
    /// Alerts per tick in the last complete window, for the pre-cut.
    density: Option<f64>,
}

impl Planner {
    /// A plan for `[lower, ∞)` at `top` alerts a page.
    pub(crate) fn new(lower: Timestamp, top: u32, is_complete: IsComplete) -> Self {
        Planner::between(lower, None, top, is_complete)
    }

    /// A plan for `[lower, upper)` (the audit's range; `upper = None` is
    /// open-ended, as a poll's plan is).
    pub(crate) fn between(
        lower: Timestamp,
        upper: Option<Timestamp>,
        top: u32,
        is_complete: IsComplete,
    ) -> Self {
        Planner {
            top,
            is_complete,
            pending: VecDeque::from([Pending::Window {
                window: Window {
                    from: lower,
                    to: upper,
                },
                precut: true,
                probe: None,
            }]),
            asked: HashMap::new(),
            next_id: 0,
            density: None,
        }
    }

    /// Whether every read has been handed out and answered.
    pub(crate) fn is_done(&self) -> bool {
        self.pending.is_empty() && self.asked.is_empty()
    }

    /// Reads handed out and not answered yet.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.asked.len()
    }

    /// The next read, or `None` when none can be planned before one of those
    /// out is answered (or none is left: see [`is_done`](Self::is_done)).
    pub(crate) fn next(&mut self, now: Timestamp) -> Option<Read> {
        while let Some(pending) = self.pending.pop_front() {
            let id = self.next_id;
            self.next_id += 1;
            match pending {
                Pending::Instant { at, skip, pages } => {
                    self.asked.insert(id, Asked::Instant { at, skip, pages });
                    return Some(self.instant_read(id, at, skip));
                }
                Pending::Window {
                    window,
                    precut,
                    probe,
                } => {
                    let Window { from, to } = window;
                    let end = to.unwrap_or(now).max(from);
                    let width = end.ticks() - from.ticks();
                    if let (true, None, Some(d)) = (precut, &probe, self.density) {
                        let expected = d * width as f64;
                        if expected > f64::from(self.top) && width > 1 {
                            self.pre_cut(window, end, width, expected);
                            // Estimates are guesses: each piece is still checked for fullness.
                            self.density = None;
                            continue;
                        }
                    }
                    self.asked.insert(
                        id,
                        Asked::Window {
                            window,
                            width,
                            probe,
                        },
                    );
                    return Some(Read {
                        id,
                        from,
                        to,
                        top: self.top,
                        skip: 0,
                        instant: false,
                    });
                }
            }
        }
        None
    }

    /// Cuts `window` into pieces expected to hold ~70 % of a page each.
    fn pre_cut(&mut self, window: Window, end: Timestamp, width: i64, expected: f64) {
        let pieces = (expected / (0.7 * f64::from(self.top))).ceil().min(64.0) as i64;
        let step = (width / pieces).max(1);
        let mut cuts = Vec::new();
        let mut a = window.from;
        for _ in 1..pieces {
            let b = Timestamp::from_ticks(a.ticks() + step);
            if b >= end {
                break;
            }
            cuts.push(b);
            a = b;
        }
        self.push_pieces(window, &cuts, false);
    }

    /// Queues `window` cut at `cuts` (ascending, strictly inside it), in
    /// time order ahead of what was queued before.
    fn push_pieces(&mut self, window: Window, cuts: &[Timestamp], precut: bool) {
        let mut bounds = Vec::with_capacity(cuts.len() + 2);
        bounds.push(window.from);
        bounds.extend(cuts.iter().copied());
        let mut pieces: Vec<Window> = bounds
            .windows(2)
            .map(|w| Window {
                from: w[0],
                to: Some(w[1]),
            })
            .collect();
        pieces.push(Window {
            from: *bounds.last().expect("bounds hold window.from"),
            to: window.to,
        });
        for window in pieces.into_iter().rev() {
            self.pending.push_front(Pending::Window {
                window,
                precut,
                probe: None,
            });
        }
    }

    fn instant_read(&self, id: ReadId, at: Timestamp, skip: u32) -> Read {
        Read {
            id,
            from: at,
            to: Some(Timestamp::from_ticks(at.ticks() + 1)),
            top: self.top,
            skip,
            instant: true,
        }
    }

    /// Takes the answer to read `id` (an id not out, or answered already, is
    /// ignored).
    pub(crate) fn answer(
        &mut self,
        id: ReadId,
        answer: Answer,
        now: Timestamp,
    ) -> Result<Step, PlanError> {
        let Some(asked) = self.asked.remove(&id) else {
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
                self.pending
                    .push_front(Pending::Instant { at, skip, pages });
                Ok(Step::NextSkip { at, skip })
            }
            Asked::Window {
                window,
                width,
                probe,
            } => {
                let complete = match &answer {
                    Answer::Emitted { count, chained } => {
                        !chained
                            || (self.is_complete)(Answered {
                                count: *count,
                                top: self.top,
                                chained: true,
                            })
                    }
                    Answer::Withheld(_) => false,
                };
                match (answer, complete) {
                    (Answer::Emitted { count, .. }, true) => {
                        if let Some(sampled) = probe {
                            return Ok(self.after_probe(*sampled, count as u64));
                        }
                        // A window under a second (a crowded instant just
                        // read) says nothing about the density around it.
                        if width >= TICKS_PER_SECOND {
                            self.density = Some(count as f64 / width as f64);
                        }
                        Ok(Step::Complete)
                    }
                    // A chain adding up to a page, where `$top` may cap the
                    // whole chain: it may hide more.
                    (Answer::Emitted { .. }, false) => {
                        if let Some(sampled) = probe {
                            self.pending.push_front(Pending::Window {
                                window: sampled.rest,
                                precut: true,
                                probe: None,
                            });
                        }
                        Ok(self.full(window, FullPage::default(), now))
                    }
                    (Answer::Withheld(full), _) => {
                        if let Some(sampled) = probe {
                            match full.matched {
                                // The probe's own count measures the page.
                                Some(c) => {
                                    self.after_probe(*sampled, c);
                                }
                                None => self.pending.push_front(Pending::Window {
                                    window: sampled.rest,
                                    precut: true,
                                    probe: None,
                                }),
                            }
                        }
                        Ok(self.full(window, full, now))
                    }
                }
            }
        }
    }

    /// `window` answered a full page: plan it again from what the page says.
    fn full(&mut self, Window { from, to }: Window, full: FullPage, now: Timestamp) -> Step {
        let end = match to {
            Some(to) => to,
            None => {
                let past_newest = full.newest.map(|t| Timestamp::from_ticks(t.ticks() + 1));
                now.max(past_newest.unwrap_or(from)).max(from)
            }
        };
        let width = end.ticks() - from.ticks();
        if width <= 1 {
            if to.is_none() && full.newest.is_some() {
                // An open window whose page sits at its first instant still
                // holds whatever lies after it (ahead of our clock). (With
                // no page to go by, a chain the rule doubts, nothing places
                // an end: the chain's alerts were taken, and the instant is
                // all that can be read again.)
                self.pending.push_front(Pending::Window {
                    window: Window {
                        from: Timestamp::from_ticks(from.ticks() + 1),
                        to: None,
                    },
                    precut: true,
                    probe: None,
                });
            }
            self.pending.push_front(Pending::Instant {
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
            let mut cuts = Vec::new();
            if t > from {
                cuts.push(t);
            }
            // (A closed window that ends at `after` needs no piece past it.)
            if after < end || to.is_none() {
                cuts.push(after);
            }
            self.push_pieces(Window { from, to }, &cuts, true);
            return Step::Isolated { at: t };
        }
        // A hostile page may hold times outside the window asked for.
        let times: Vec<Timestamp> = full
            .times
            .iter()
            .copied()
            .filter(|t| *t >= from && *t < end)
            .collect();
        if times.len() >= PROBE_FROM {
            let split = times.len() - times.len() / PROBE_SHARE;
            let at = times[split];
            // Ties at `at` go to the probe: the rest is strictly below it.
            let below_len = times.partition_point(|t| *t < at);
            if at > from {
                let in_probe = times.len() - below_len;
                let mut below = times;
                below.truncate(below_len);
                let sampled = Sampled {
                    rest: Window { from, to: Some(at) },
                    below,
                    in_probe,
                    matched: full.matched,
                    end,
                    page: full.count.clamp(1, self.top as usize),
                };
                self.pending.push_front(Pending::Window {
                    window: Window { from: at, to },
                    precut: false,
                    probe: Some(Box::new(sampled)),
                });
                return Step::Probe { from, at };
            }
        }
        let mid = Timestamp::from_ticks(from.ticks() + width / 2);
        self.push_pieces(Window { from, to }, &[mid], true);
        Step::Split { from, mid }
    }

    /// The probe of a full page held `probed` alerts: plan the rest of its
    /// window from the scale that measures.
    fn after_probe(&mut self, s: Sampled, probed: u64) -> Step {
        let rest = s.rest;
        let rest_end = rest.to.expect("a probed window's rest is closed");
        let page = s.page as f64;
        let scale = probed as f64 / s.in_probe.max(1) as f64;
        if scale >= FAIR_SCALE {
            // A fair sample: pieces at its quantiles, each the same share.
            let expected = match s.matched {
                Some(n) => n.saturating_sub(probed) as f64,
                None => s.below.len() as f64 * scale,
            };
            let pieces = ((expected / (QUANTILE_FILL * page)).ceil() as usize).clamp(1, MAX_PIECES);
            let mut cuts: Vec<Timestamp> = Vec::with_capacity(pieces);
            // No sampled time below the probe (a page of alerts without
            // times): nothing to place cuts by; the rest is one read.
            let pieces = if s.below.is_empty() { 1 } else { pieces };
            for j in 1..pieces {
                let at = s.below[j * s.below.len() / pieces];
                if at > cuts.last().copied().unwrap_or(rest.from) && at < rest_end {
                    cuts.push(at);
                }
            }
            self.push_pieces(rest, &cuts, false);
            return Step::Cut {
                from: rest.from,
                pieces: cuts.len() + 1,
            };
        }
        // One end: the sample holds every alert of its span.
        let Some(&oldest) = s.below.first() else {
            self.push_pieces(rest, &[], true);
            return Step::Cut {
                from: rest.from,
                pieces: 1,
            };
        };
        let mut cuts = Vec::new();
        if oldest > rest.from {
            let sampled = (s.below.len() + s.in_probe) as f64;
            let span = (s.end.ticks() - oldest.ticks()).max(1) as f64;
            let step = ((WALK_FILL * page) / (sampled / span)).max(1.0) as i64;
            let walk = match s.matched {
                Some(n) => {
                    let left = n.saturating_sub(probed + s.below.len() as u64) as f64;
                    ((left / (WALK_FILL * page)).ceil() as usize).min(MAX_PIECES)
                }
                None => BLIND_WALK,
            };
            let mut at = oldest;
            cuts.push(oldest);
            for _ in 0..walk {
                at = Timestamp::from_ticks(at.ticks().saturating_sub(step));
                if at <= rest.from {
                    break;
                }
                cuts.push(at);
            }
            cuts.reverse();
        }
        self.push_pieces(rest, &cuts, false);
        Step::Cut {
            from: rest.from,
            pieces: cuts.len() + 1,
        }
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

    /// Hands out and answers reads one at a time with `answer`, until the
    /// plan ends; returns the windows read.
    fn drain(
        plan: &mut Planner,
        now: Timestamp,
        mut answer: impl FnMut(&Read) -> Answer,
    ) -> Vec<(i64, Option<i64>)> {
        let mut reads = Vec::new();
        while let Some(read) = plan.next(now) {
            reads.push(window(read));
            let a = answer(&read);
            plan.answer(read.id, a, now).unwrap();
        }
        assert!(plan.is_done());
        reads
    }

    #[test]
    fn an_empty_window_is_one_read() {
        let mut plan = Planner::new(t(100), 10, short_page);
        let read = plan.next(t(200)).unwrap();
        assert_eq!(window(read), (100, None));
        assert_eq!((read.top, read.skip, read.instant), (10, 0, false));
        assert_eq!(plan.answer(read.id, emitted(0), t(200)), Ok(Step::Complete));
        assert_eq!(plan.next(t(200)), None);
        assert!(plan.is_done());
    }

    #[test]
    fn a_small_full_page_splits_its_window_in_two_up_to_now() {
        let mut plan = Planner::new(t(0), 10, short_page);
        let read = plan.next(t(1000)).unwrap();
        let full = FullPage {
            newest: Some(t(500)),
            ..FullPage::default()
        };
        let step = plan
            .answer(read.id, Answer::Withheld(full), t(1000))
            .unwrap();
        assert_eq!(
            step,
            Step::Split {
                from: t(0),
                mid: t(500)
            }
        );
        let lower = plan.next(t(1000)).unwrap();
        assert_eq!(window(lower), (0, Some(500)));
        // Both halves are out at once; the upper one stays open-ended.
        let upper = plan.next(t(1000)).unwrap();
        assert_eq!(window(upper), (500, None));
        assert_eq!(plan.in_flight(), 2);
        plan.answer(upper.id, emitted(3), t(1000)).unwrap();
        assert!(!plan.is_done());
        plan.answer(lower.id, emitted(3), t(1000)).unwrap();
        assert!(plan.is_done());
    }

    #[test]
    fn an_open_window_splits_past_its_newest_alert_when_that_is_ahead_of_now() {
        let mut plan = Planner::new(t(0), 10, short_page);
        let read = plan.next(t(100)).unwrap();
        let full = FullPage {
            newest: Some(t(299)),
            ..FullPage::default()
        };
        let step = plan
            .answer(read.id, Answer::Withheld(full), t(100))
            .unwrap();
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
        let read = plan.next(t(1000)).unwrap();
        let full = FullPage {
            newest: Some(t(700)),
            crowded: Some(t(700)),
            ..FullPage::default()
        };
        let step = plan
            .answer(read.id, Answer::Withheld(full), t(1000))
            .unwrap();
        assert_eq!(step, Step::Isolated { at: t(700) });
        let reads = drain(&mut plan, t(1000), |_| emitted(1));
        assert_eq!(reads, [(0, Some(700)), (700, Some(701)), (701, None)]);
    }

    #[test]
    fn a_full_instant_is_paged_with_skip_until_a_short_page() {
        let mut plan = Planner::between(t(5), Some(t(6)), 10, short_page);
        let read = plan.next(t(6)).unwrap();
        let step = plan.answer(read.id, Answer::Withheld(FullPage::default()), t(5));
        assert_eq!(step, Ok(Step::Instant { at: t(5) }));
        let first = plan.next(t(6)).unwrap();
        assert_eq!(
            (window(first), first.skip, first.instant),
            ((5, Some(6)), 0, true)
        );
        // One page of an instant at a time: the next skip waits for this one.
        assert_eq!(plan.next(t(6)), None);
        assert_eq!(
            plan.answer(first.id, emitted(10), t(6)),
            Ok(Step::NextSkip { at: t(5), skip: 10 })
        );
        let second = plan.next(t(6)).unwrap();
        assert_eq!(second.skip, 10);
        assert_eq!(plan.answer(second.id, emitted(4), t(6)), Ok(Step::Complete));
        assert_eq!(plan.next(t(6)), None);
        assert!(plan.is_done());
    }

    #[test]
    fn a_server_that_ignores_skip_is_named_after_a_bounded_number_of_pages() {
        let mut plan = Planner::between(t(5), Some(t(6)), 10, short_page);
        let read = plan.next(t(6)).unwrap();
        plan.answer(read.id, Answer::Withheld(FullPage::default()), t(5))
            .unwrap();
        let mut reads = 0;
        let err = loop {
            let read = plan.next(t(6)).unwrap();
            reads += 1;
            match plan.answer(read.id, emitted(10), t(6)) {
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
        let read = mde.next(t(100)).unwrap();
        assert!(matches!(
            mde.answer(read.id, chain.clone(), t(100)),
            Ok(Step::Split { .. })
        ));

        let mut graph = Planner::new(t(0), 10, no_next_link);
        let read = graph.next(t(100)).unwrap();
        assert_eq!(graph.answer(read.id, chain, t(100)), Ok(Step::Complete));
        assert_eq!(graph.next(t(100)), None);
    }

    #[test]
    fn a_dense_window_cuts_the_next_one_before_asking() {
        let s = TICKS_PER_SECOND;
        let mut plan = Planner::new(t(0), 100, short_page);
        let read = plan.next(t(1000 * s)).unwrap();
        plan.answer(read.id, Answer::Withheld(FullPage::default()), t(1000 * s))
            .unwrap();
        // [0, 500 s) held 90 alerts: 0.18 a second, so [500 s, 1000 s) is
        // expected to hold 90 too (under a page: one read), and a wider
        // window at that density is cut into ~70-alert pieces.
        let lower = plan.next(t(1000 * s)).unwrap();
        plan.answer(lower.id, emitted(90), t(1000 * s)).unwrap();
        let read = plan.next(t(5000 * s)).unwrap();
        // 4,500 s at 0.18/s = 810 alerts: ⌈810 / 70⌉ = 12 pieces of 375 s.
        assert_eq!(window(read), (500 * s, Some(875 * s)));
    }

    #[test]
    fn full_page_facts_name_the_newest_and_a_half_page_instant() {
        let full = FullPage::from_times(4, [t(3), t(9), t(3), t(1)]);
        assert_eq!(full.newest, Some(t(9)));
        assert_eq!(full.crowded, Some(t(3)));
        assert_eq!(full.times, [t(1), t(3), t(3), t(9)]);
        let spread = FullPage::from_times(5, [t(3), t(9), t(3), t(1), t(2)]);
        assert_eq!(spread.crowded, None);
        assert_eq!(FullPage::from_times(0, []), FullPage::default());
    }

    /// Alert times of an evenly spread window: `n` alerts over `[0, span)`.
    fn spread(n: usize, span: i64) -> Vec<i64> {
        (0..n as i64).map(|i| i * span / n as i64).collect()
    }

    /// A fair sample (every `k`-th alert) of `alerts` in `[from, to)`, or all
    /// of them; the count of the window.
    fn fair(alerts: &[i64], read: &Read) -> (Vec<Timestamp>, usize) {
        let hits: Vec<i64> = alerts
            .iter()
            .copied()
            .filter(|a| *a >= read.from.ticks() && read.to.is_none_or(|to| *a < to.ticks()))
            .collect();
        let top = read.top as usize;
        if hits.len() <= top {
            let n = hits.len();
            return (hits.into_iter().map(t).collect(), n);
        }
        let step = hits.len() as f64 / top as f64;
        let sample = (0..top)
            .map(|i| t(hits[(i as f64 * step) as usize]))
            .collect();
        (sample, hits.len())
    }

    #[test]
    fn a_fair_sample_is_probed_then_cut_at_its_quantiles_and_read_at_once() {
        // Ten pages' worth: the minimum is 10 full reads and the short one
        // proving the end; halving needs about twice that.
        let alerts = spread(10_000, 1_000_000);
        let now = t(1_000_000);
        let mut plan = Planner::new(t(0), 1000, short_page);
        let first = plan.next(now).unwrap();
        let (sample, _) = fair(&alerts, &first);
        let full = FullPage::from_times(sample.len(), sample);
        let step = plan.answer(first.id, Answer::Withheld(full), now).unwrap();
        assert!(matches!(step, Step::Probe { .. }), "{step:?}");
        // The probe is the newest twelfth, open-ended; nothing else is out.
        let probe = plan.next(now).unwrap();
        assert_eq!(probe.to, None);
        assert!(
            probe.from > t(900_000) && probe.from < t(930_000),
            "{probe:?}"
        );
        assert_eq!(plan.next(now), None);
        let (held, n) = fair(&alerts, &probe);
        assert!(n < 1000);
        let step = plan.answer(probe.id, emitted(held.len()), now).unwrap();
        let Step::Cut { pieces, .. } = step else {
            panic!("{step:?}")
        };
        // ⌈9,167 / 900⌉ = 11 pieces, all out at once, none full.
        assert_eq!(pieces, 11);
        let mut out = Vec::new();
        while let Some(read) = plan.next(now) {
            out.push(read);
        }
        assert_eq!(out.len(), 11);
        for read in out {
            let (held, n) = fair(&alerts, &read);
            assert!(n < 1000, "{read:?} holds {n}");
            plan.answer(read.id, emitted(held.len()), now).unwrap();
        }
        assert!(plan.is_done());
    }

    #[test]
    fn one_end_of_a_window_with_a_count_is_walked_back_by_its_density() {
        // alerts_v2: the newest `$top` of the window, and `@odata.count`.
        let alerts = spread(10_000, 1_000_000);
        let newest = |read: &Read| -> (Vec<Timestamp>, usize) {
            let mut hits: Vec<i64> = alerts
                .iter()
                .copied()
                .filter(|a| *a >= read.from.ticks() && read.to.is_none_or(|to| *a < to.ticks()))
                .collect();
            hits.sort_unstable_by(|a, b| b.cmp(a));
            let n = hits.len();
            hits.truncate(read.top as usize);
            (hits.into_iter().map(t).collect(), n)
        };
        let now = t(1_000_000);
        let mut plan = Planner::new(t(0), 1000, no_next_link);
        let mut reads = 0;
        let mut full_reads = 0;
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<Read> = Vec::new();
        loop {
            while let Some(read) = plan.next(now) {
                out.push(read);
            }
            let Some(read) = out.pop() else { break };
            reads += 1;
            let (page, n) = newest(&read);
            let answer = if n > page.len() {
                full_reads += 1;
                let len = page.len();
                Answer::Withheld(FullPage::from_times(len, page).with_matched(Some(n as u64)))
            } else {
                seen.extend(page.iter().copied());
                emitted(n)
            };
            plan.answer(read.id, answer, now).unwrap();
        }
        assert!(plan.is_done());
        assert_eq!(seen.len(), 10_000);
        // The minimum is 11; the plan pays one read for the probe, one for
        // the sampled span and ~6 % for pieces planned under a page.
        assert_eq!(full_reads, 1, "only the first read is thrown away");
        assert!(reads <= 14, "{reads} reads");
    }

    #[test]
    fn a_page_whose_times_all_sit_in_its_probe_still_plans_its_rest() {
        // A hostile page: 1,000 alerts, 30 of them with a time, all one
        // instant (too few to count as crowded), and a huge count.
        let now = t(1000);
        let mut plan = Planner::new(t(0), 1000, no_next_link);
        let first = plan.next(now).unwrap();
        let full = FullPage::from_times(1000, [t(500); 30]).with_matched(Some(1 << 40));
        let step = plan.answer(first.id, Answer::Withheld(full), now).unwrap();
        assert!(matches!(step, Step::Probe { .. }), "{step:?}");
        let probe = plan.next(now).unwrap();
        let step = plan.answer(probe.id, emitted(999), now).unwrap();
        assert_eq!(
            step,
            Step::Cut {
                from: t(0),
                pieces: 1
            }
        );
        let rest = plan.next(now).unwrap();
        assert_eq!(window(rest), (0, Some(500)));
        plan.answer(rest.id, emitted(0), now).unwrap();
        assert!(plan.is_done());
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

    /// In which order the in-memory server lists a window's alerts.
    #[derive(Debug, Clone, Copy)]
    enum Order {
        /// The order of the tenant's list (random: MDE promises none).
        Random,
        /// Newest first, as alerts_v2 documents.
        NewestFirst,
        OldestFirst,
    }

    /// One alert of the test tenant: its id, update time, and what the store
    /// already holds for it before the poll.
    #[derive(Debug, Clone, Copy)]
    struct Alert {
        id: usize,
        version: Version,
        prior: Option<Version>,
    }

    /// How the in-memory server behaves.
    #[derive(Debug, Clone, Copy)]
    struct Server {
        paging: Paging,
        order: Order,
        /// It answers `@odata.count` on full pages.
        counts: bool,
        /// A window's answer with a nextLink is withheld, as the Graph
        /// source does (only an instant's pages follow links).
        withhold_linked: bool,
    }

    /// The server's answer to `read`, from `offset` into its result (a
    /// nextLink is that offset): the page, whether a nextLink follows, and
    /// how many alerts the window holds.
    fn serve(
        alerts: &[Alert],
        read: &Read,
        offset: usize,
        server: Server,
    ) -> (Vec<Alert>, bool, usize) {
        let mut hits: Vec<Alert> = alerts
            .iter()
            .filter(|a| {
                a.version.last_update >= read.from
                    && read.to.is_none_or(|to| a.version.last_update < to)
            })
            .copied()
            .collect();
        match server.order {
            Order::Random => {}
            Order::NewestFirst => hits.sort_by_key(|a| std::cmp::Reverse(a.version.last_update)),
            Order::OldestFirst => hits.sort_by_key(|a| a.version.last_update),
        }
        let start = (read.skip as usize + offset).min(hits.len());
        let per_page = match server.paging {
            Paging::Top => read.top as usize,
            Paging::NextLink(n) => n.min(read.top as usize),
        };
        let end = (start + per_page).min(hits.len());
        let more = matches!(server.paging, Paging::NextLink(_)) && end < hits.len();
        (hits[start..end].to_vec(), more, hits.len())
    }

    /// Drives a planner against the in-memory server the way `Run` drives it
    /// against the API, with up to `flight` reads out at once, answered in
    /// the order `picks` draws; returns every version emitted, with its
    /// class, and the number of reads.
    fn poll(
        alerts: &[Alert],
        top: u32,
        server: Server,
        rule: IsComplete,
        (lower, now): (Timestamp, Timestamp),
        flight: usize,
        picks: &[usize],
    ) -> (Vec<(usize, Version, Class)>, usize) {
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
        let mut out_reads: Vec<Read> = Vec::new();
        loop {
            while out_reads.len() < flight {
                match plan.next(now) {
                    Some(read) => out_reads.push(read),
                    None => break,
                }
            }
            if out_reads.is_empty() {
                break;
            }
            let pick = picks.get(reads % picks.len().max(1)).copied().unwrap_or(0);
            let read = out_reads.remove(pick % out_reads.len());
            reads += 1;
            assert!(reads < 20_000, "the plan does not end");
            let (page, mut more, matched) = serve(alerts, &read, 0, server);
            let full_graph = more && !read.instant && server.withhold_linked;
            let withheld = full_graph
                || (!more
                    && !read.instant
                    && !rule(Answered {
                        count: page.len(),
                        top,
                        chained: false,
                    }));
            let answer = if withheld {
                let times = page.iter().map(|a| a.version.last_update);
                let counted = server.counts.then_some(matched as u64);
                Answer::Withheld(FullPage::from_times(page.len(), times).with_matched(counted))
            } else {
                take(&page, &mut out);
                let chained = more;
                let mut count = page.len();
                while more {
                    let (next, again, _) = serve(alerts, &read, count, server);
                    reads += 1;
                    take(&next, &mut out);
                    count += next.len();
                    more = again;
                }
                Answer::Emitted { count, chained }
            };
            plan.answer(read.id, answer, now)
                .expect("the server honours $skip");
        }
        assert!(plan.is_done());
        (out, reads)
    }

    /// Alert times as small offsets (so that instants repeat) times a scale
    /// (so that windows are both narrower and wider than a second), each
    /// with a server-order key and what the store already holds for it.
    fn tenant() -> impl Strategy<Value = (Vec<Alert>, i64)> {
        let scale = prop_oneof![Just(1i64), Just(997), Just(TICKS_PER_SECOND / 3)];
        let alert = (0i64..1500, any::<u32>(), 0u8..4);
        (scale, prop::collection::vec(alert, 0..300)).prop_map(|(scale, raw)| {
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

    fn server() -> impl Strategy<Value = (Server, bool)> {
        let paging = prop_oneof![
            Just((Paging::Top, true)),
            (1usize..30).prop_map(|n| (Paging::NextLink(n), true)),
            (1usize..30).prop_map(|n| (Paging::NextLink(n), false)),
        ];
        let order = prop_oneof![
            Just(Order::Random),
            Just(Order::NewestFirst),
            Just(Order::OldestFirst)
        ];
        (paging, order, any::<bool>(), any::<bool>()).prop_map(
            |((paging, mde_rule), order, counts, withhold_linked)| {
                (
                    Server {
                        paging,
                        order,
                        counts,
                        withhold_linked,
                    },
                    mde_rule,
                )
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// For any multiset of alert times, page size, server order, paging
        /// and count, with 1-4 reads out at once answered in any order, the
        /// planned reads emit every version the store lacks exactly once,
        /// classified against what the store held, and never one it already
        /// has.
        #[test]
        fn planned_reads_cover_every_alert_and_classify_each_version_once(
            (alerts, scale) in tenant(),
            top in prop_oneof![2u32..25, 25u32..60],
            (server, mde_rule) in server(),
            now_offset in 0i64..2000,
            flight in 1usize..5,
            picks in prop::collection::vec(0usize..4, 1..8),
        ) {
            let rule: IsComplete = if mde_rule { short_page } else { no_next_link };
            // Some alerts lie ahead of `now` (a server clock ahead of ours).
            let now = t(1_000_000 + now_offset * scale);
            let (out, _) = poll(&alerts, top, server, rule, (t(1_000_000), now), flight, &picks);

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
