//! Injected failures: the outages, throttles, cut connections and stalls that
//! the real service produces now and then, drawn at random per request so the
//! reliability tests exercise the client's retry paths.

use std::time::Duration;

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
    /// Token endpoint: 500 with an Entra-shaped body.
    pub token_p_500: f64,
    /// Token endpoint: a transient 400 (`temporarily_unavailable` AADSTS90055,
    /// or AADSTS50196), which clients must retry rather than report.
    pub token_p_transient: f64,
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
            token_p_500: 0.0,
            token_p_transient: 0.0,
        }
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
}
