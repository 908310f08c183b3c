//! Injected failures: the outages, throttles, cut connections and stalls that
//! the real service produces now and then, drawn at random per request so the
//! reliability tests exercise the client's retry paths; throttles and outages
//! scheduled on chosen requests, for tests that must see one every run; and the hostile
//! servers (issue 8) that bend a rule on every answer: odd token lifetimes,
//! another tenant's token, endless bodies, looping or foreign nextLinks,
//! `$skip` ignored, twin versions of one alert.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use rand::Rng;

/// Probabilities (each in `0.0..=1.0`) of each failure on one request.
///
/// The API-side ones (`p_500`, `p_503`, `p_429`, `p_reset`, `p_truncated`) are
/// exclusive: one uniform draw picks at most one of them, so their sum should
/// stay at or below 1. `p_stall` is drawn separately and delays the answer
/// (whatever it is) by `stall`.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// 500 `InternalServerError`.
    pub p_500: f64,
    /// 503 with `Retry-After`.
    pub p_503: f64,
    /// 429 `TooManyRequests` with `Retry-After`, regardless of the call budget.
    pub p_429: f64,
    /// The connection is cut after the status line and a few bytes of body.
    pub p_reset: f64,
    /// 200 whose JSON body stops in the middle (Content-Length matches what is sent).
    pub p_truncated: f64,
    /// The answer is delayed by `stall` (tests set it beyond the client timeout).
    pub p_stall: f64,
    pub stall: Duration,
    /// `Retry-After` on injected 429 and 503, in seconds (at least 1 is sent).
    pub retry_after_secs: u64,
    /// Alerts API (MDE and Graph alike): these requests of the tenant are
    /// answered 429 with `Retry-After: retry_after_secs`, whatever the draws.
    /// Numbered from 1 among the tenant's alerts requests that pass the token
    /// checks, counted from when these faults were set ([`set_faults`]). A
    /// random `p_429` throttles whichever request the draws land on, which
    /// depends on how many requests came before; this one is the same every run.
    ///
    /// [`set_faults`]: super::Simulator::set_faults
    pub throttle_at: Vec<u64>,
    /// Alerts API: these requests (numbered as in `throttle_at`) are answered
    /// 503 with `Retry-After: retry_after_secs`. A request in both lists gets
    /// the 429.
    pub unavailable_at: Vec<u64>,
    /// Token endpoint: 500 with an Entra-shaped body.
    pub token_p_500: f64,
    /// Token endpoint: a transient 400 (`temporarily_unavailable` AADSTS90055,
    /// or AADSTS50196), which clients must retry rather than report.
    pub token_p_transient: f64,
    /// Token endpoint: `expires_in` replaced by this JSON value (`1e300`,
    /// `u64::MAX`, `-5`, `"soon"`; `null` removes it).
    pub token_expires_in: Option<serde_json::Value>,
    /// Token endpoint: answers with a token of this other tenant (its `tid`,
    /// valid for that tenant's alerts), as a mixed-up endpoint would.
    pub token_tid: Option<String>,
    /// Token endpoint: 200 with a body that never ends.
    pub token_endless_body: bool,
    /// Alerts API: 200 with a body that never ends (chunked, no length).
    pub endless_body: bool,
    /// Alerts API: every answer carries a nextLink to itself (a cycle).
    pub next_link_loop: bool,
    /// Alerts API: every full answer carries a nextLink to another host.
    pub foreign_next_link: bool,
    /// Alerts API: `$skip` is ignored (the first page comes back each time).
    pub ignore_skip: bool,
    /// Alerts API: each alert is served twice in one answer, the second copy
    /// with the same id and lastUpdateTime but another `title` (two replicas
    /// disagreeing).
    pub twin_versions: bool,
}

impl Faults {
    /// No failure at all.
    pub fn none() -> Self {
        Faults {
            p_500: 0.0,
            p_503: 0.0,
            p_429: 0.0,
            p_reset: 0.0,
            p_truncated: 0.0,
            p_stall: 0.0,
            stall: Duration::ZERO,
            retry_after_secs: 1,
            throttle_at: Vec::new(),
            unavailable_at: Vec::new(),
            token_p_500: 0.0,
            token_p_transient: 0.0,
            token_expires_in: None,
            token_tid: None,
            token_endless_body: false,
            endless_body: false,
            next_link_loop: false,
            foreign_next_link: false,
            ignore_skip: false,
            twin_versions: false,
        }
    }

    /// A token success body with `expires_in` replaced (or removed by `null`).
    pub(crate) fn rewrite_token_body(&self, body: String) -> String {
        let Some(value) = &self.token_expires_in else {
            return body;
        };
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&body) else {
            return body;
        };
        if value.is_null() {
            v.as_object_mut().map(|o| o.remove("expires_in"));
        } else {
            v["expires_in"] = value.clone();
        }
        v.to_string()
    }

    /// The nextLink a hostile server sends instead of (or where there is no)
    /// honest one: the same query again, or the same path on another host.
    pub(crate) fn hostile_next_link(&self, this_page: impl FnOnce() -> String) -> Option<String> {
        if self.next_link_loop {
            Some(this_page())
        } else if self.foreign_next_link {
            let link = this_page();
            let path = link.find("/api/").map_or("/api/alerts", |i| &link[i..]);
            Some(format!("https://alerts.example.invalid{path}"))
        } else {
            None
        }
    }

    /// An answer's body with every alert served twice (`twin_versions`).
    pub(crate) fn twin_alerts(&self, body: String) -> String {
        if !self.twin_versions {
            return body;
        }
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&body) else {
            return body;
        };
        if let Some(list) = v["value"].as_array_mut() {
            let twins: Vec<serde_json::Value> = list
                .iter()
                .map(|a| {
                    let mut twin = a.clone();
                    let title = a["title"].as_str().unwrap_or("").to_owned();
                    twin["title"] = format!("{title} (other replica)").into();
                    twin
                })
                .collect();
            list.extend(twins);
        }
        v.to_string()
    }

    /// The failure of the tenant's `n`-th alerts request (see `throttle_at`):
    /// the scheduled one if `n` is scheduled, else the random draw. The draw
    /// is made either way, so a schedule leaves the random sequence of the
    /// other requests as it was.
    pub(crate) fn api_fault(&self, n: u64, rng: &mut impl Rng) -> (bool, ApiFault) {
        let (stall, drawn) = self.draw_api(rng);
        let fault = if self.throttle_at.contains(&n) {
            ApiFault::Throttled
        } else if self.unavailable_at.contains(&n) {
            ApiFault::Unavailable
        } else {
            drawn
        };
        (stall, fault)
    }

    pub(crate) fn draw_api(&self, rng: &mut impl Rng) -> (bool, ApiFault) {
        let stall = self.p_stall > 0.0 && rng.gen::<f64>() < self.p_stall;
        let x: f64 = rng.gen();
        let mut acc = 0.0;
        for (p, fault) in [
            (self.p_500, ApiFault::Internal),
            (self.p_503, ApiFault::Unavailable),
            (self.p_429, ApiFault::Throttled),
            (self.p_reset, ApiFault::Reset),
            (self.p_truncated, ApiFault::Truncated),
        ] {
            acc += p;
            if p > 0.0 && x < acc {
                return (stall, fault);
            }
        }
        (stall, ApiFault::None)
    }

    pub(crate) fn draw_token(&self, rng: &mut impl Rng) -> TokenFault {
        let x: f64 = rng.gen();
        if self.token_p_500 > 0.0 && x < self.token_p_500 {
            TokenFault::Internal
        } else if self.token_p_transient > 0.0 && x < self.token_p_500 + self.token_p_transient {
            TokenFault::Transient
        } else {
            TokenFault::None
        }
    }
}

impl Default for Faults {
    fn default() -> Self {
        Self::none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiFault {
    None,
    Internal,
    Unavailable,
    Throttled,
    Reset,
    Truncated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenFault {
    None,
    Internal,
    Transient,
}

/// A 200 body that never ends: the start of a JSON page, then whitespace
/// (valid inside JSON, so only a size limit stops a reader) forever.
pub(crate) struct EndlessBody {
    started: bool,
}

impl EndlessBody {
    pub(crate) fn new() -> Self {
        EndlessBody { started: false }
    }
}

const ENDLESS_CHUNK: usize = 256 << 10;

impl http_body::Body for EndlessBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        static SPACES: [u8; ENDLESS_CHUNK] = [b' '; ENDLESS_CHUNK];
        let chunk = if self.started {
            Bytes::from_static(&SPACES)
        } else {
            self.started = true;
            Bytes::from_static(br#"{"access_token":"x","value":["#)
        };
        Poll::Ready(Some(Ok(http_body::Frame::data(chunk))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn no_faults_never_fire_and_certain_ones_always_do() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let none = Faults::none();
        let all_503 = Faults {
            p_503: 1.0,
            ..Faults::none()
        };
        for _ in 0..1000 {
            assert_eq!(none.draw_api(&mut rng), (false, ApiFault::None));
            assert_eq!(none.draw_token(&mut rng), TokenFault::None);
            assert_eq!(all_503.draw_api(&mut rng).1, ApiFault::Unavailable);
        }
    }

    #[test]
    fn scheduled_faults_hit_exactly_the_requests_named() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let f = Faults {
            throttle_at: vec![2, 5],
            unavailable_at: vec![3, 5],
            ..Faults::none()
        };
        let got: Vec<ApiFault> = (1..=6).map(|n| f.api_fault(n, &mut rng).1).collect();
        use ApiFault::*;
        assert_eq!(got, [None, Throttled, Unavailable, None, Throttled, None]);
        // With noise too, the scheduled requests still get theirs.
        let noisy = Faults { p_500: 1.0, ..f };
        assert_eq!(noisy.api_fault(2, &mut rng).1, Throttled);
        assert_eq!(noisy.api_fault(3, &mut rng).1, Unavailable);
        assert_eq!(noisy.api_fault(4, &mut rng).1, Internal);
    }
}
