//! Server timestamps at the API's full precision: 100 ns ticks since the Unix epoch.
//!
//! The alerts API writes `lastUpdateTime` with 1 to 7 fractional digits
//! (`…:59.2Z`, `…:57.7220239Z`). Truncating to seconds or milliseconds is how
//! pollers either lose alerts (a `ge` bound rounded up) or repeat them (rounded
//! down), so every comparison here is on exact ticks, and the filter text is
//! always written back with all seven digits.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Ticks (100 ns) in one second.
pub(crate) const TICKS_PER_SECOND: i64 = 10_000_000;

/// A UTC instant with 100 ns resolution, ordered by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Why a timestamp string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an ISO 8601 UTC timestamp: {0:?}")]
pub struct ParseError(pub String);

impl Timestamp {
    /// The earliest instant we ever ask for (used as an open lower bound).
    pub(crate) const MIN: Timestamp = Timestamp(0);

    pub const fn from_ticks(ticks: i64) -> Self {
        Timestamp(ticks)
    }

    pub const fn ticks(self) -> i64 {
        self.0
    }

    /// The wall clock now.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    pub(crate) fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(duration_ticks(d)),
            Err(e) => Timestamp(-duration_ticks(e.duration())),
        }
    }

    #[cfg(test)]
    pub(crate) fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + ticks_duration(self.0)
        } else {
            UNIX_EPOCH - ticks_duration(-self.0)
        }
    }

    /// This instant moved back by `d`, saturating at the epoch.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_ticks(d)).max(0))
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_ticks(d)))
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub(crate) fn since(self, earlier: Timestamp) -> Duration {
        ticks_duration((self.0 - earlier.0).max(0))
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+00:00)`; digits past the seventh
    /// are below the API's resolution and are dropped (never rounded up, so a
    /// `ge` bound derived from the value can only widen).
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        parse_inner(s.as_bytes()).ok_or_else(|| ParseError(s.to_owned()))
    }

    /// Seconds since the epoch, as the JWT `exp`/`iat` claims want them.
    pub(crate) fn unix_seconds(self) -> i64 {
        self.0.div_euclid(TICKS_PER_SECOND)
    }

    /// `2026-11-26T20:00:00.123Z`: millisecond precision for `@timestamp`.
    pub fn to_millis_string(self) -> String {
        let (date, secs_of_day, frac) = self.split();
        let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
        format!(
            "{}T{h:02}:{m:02}:{s:02}.{:03}Z",
            format_date(date),
            frac / 10_000
        )
    }

    fn split(self) -> (i64, i64, i64) {
        let secs = self.0.div_euclid(TICKS_PER_SECOND);
        let frac = self.0.rem_euclid(TICKS_PER_SECOND);
        (secs.div_euclid(86_400), secs.rem_euclid(86_400), frac)
    }
}

/// The OData form: seven fractional digits, unquoted, `Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (date, secs_of_day, frac) = self.split();
        let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
        write!(f, "{}T{h:02}:{m:02}:{s:02}.{frac:07}Z", format_date(date))
    }
}

fn duration_ticks(d: Duration) -> i64 {
    let ticks = d.as_secs() as i128 * TICKS_PER_SECOND as i128 + (d.subsec_nanos() / 100) as i128;
    ticks.min(i64::MAX as i128) as i64
}

fn ticks_duration(ticks: i64) -> Duration {
    let ticks = ticks.max(0) as u64;
    Duration::new(
        ticks / TICKS_PER_SECOND as u64,
        (ticks % TICKS_PER_SECOND as u64) as u32 * 100,
    )
}

fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn parse_inner(b: &[u8]) -> Option<Timestamp> {
    fn num(b: &[u8]) -> Option<i64> {
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(b.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    }
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, s) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut frac = 0i64;
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        for i in 0..7 {
            frac = frac * 10
                + rest
                    .get(1 + i)
                    .filter(|_| i < digits)
                    .map_or(0, |c| i64::from(c - b'0'));
        }
        rest = &rest[1 + digits..];
    }
    if !matches!(rest, b"Z" | b"z" | b"+00:00" | b"-00:00") {
        return None;
    }
    // A leap second (":60") is folded onto the next second, as the API's
    // backing store cannot represent it either.
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
    Some(Timestamp(secs * TICKS_PER_SECOND + frac))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days: exact for the
// proleptic Gregorian calendar, no tables, no allocation.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_precision_the_api_writes() {
        let a = Timestamp::parse("2021-01-26T20:33:59.2Z").unwrap();
        let b = Timestamp::parse("2021-01-26T20:33:59.2000000Z").unwrap();
        let c = Timestamp::parse("2021-01-26T20:33:59.2000001Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(c.ticks() - a.ticks(), 1);
        let d = Timestamp::parse("2021-01-26T20:33:59Z").unwrap();
        assert_eq!(a.ticks() - d.ticks(), 2_000_000);
        assert_eq!(
            Timestamp::parse("2021-01-26T20:33:50.19Z")
                .unwrap()
                .to_string(),
            "2021-01-26T20:33:50.1900000Z"
        );
    }

    #[test]
    fn display_round_trips_at_full_precision() {
        for s in [
            "1970-01-01T00:00:00.0000000Z",
            "2021-01-26T20:33:57.7220239Z",
            "2024-02-29T23:59:59.9999999Z",
            "2026-11-26T10:00:00.1234567Z",
        ] {
            assert_eq!(Timestamp::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn refuses_what_is_not_a_utc_timestamp() {
        for s in [
            "",
            "2021-01-26",
            "2021-13-01T00:00:00Z",
            "2021-02-30T00:00:00Z",
            "2021-01-26T20:33:59.Z",
            "2021-01-26T20:33:59+02:00",
            "2021-01-26T20:33:59.2Zjunk",
        ] {
            assert!(Timestamp::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn matches_the_system_clock_and_millis_format() {
        let t = Timestamp::parse("2026-11-26T20:00:00.1239999Z").unwrap();
        assert_eq!(t.to_millis_string(), "2026-11-26T20:00:00.123Z");
        let now = SystemTime::now();
        let ts = Timestamp::from_system_time(now);
        let back = ts.to_system_time();
        let diff = now.duration_since(back).unwrap_or_default();
        assert!(diff < Duration::from_micros(1));
        assert_eq!(
            ts.saturating_sub(Duration::from_secs(1)).since(ts),
            Duration::ZERO
        );
        assert_eq!(
            ts.since(ts.saturating_sub(Duration::from_secs(1))),
            Duration::from_secs(1)
        );
    }
}
