//! The access token value and the token endpoint's wire format: what a
//! success and an error look like, parsed defensively (v1 strings or v2
//! numbers, HTML from a gateway, no body at all).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;

use super::claims::{json_category, Claims};
use super::AuthError;
use crate::timestamp::Timestamp;

/// Refresh at most this long before expiry…
const MAX_MARGIN: Duration = Duration::from_secs(5 * 60);

/// …and at least a tenth of the lifetime early, so that a short token is
/// still reused for most of its life (a 30 s token for 27 s).
pub(crate) fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(MAX_MARGIN)
}

/// A bearer token and when it expires. Cheap to clone; prints no token.
#[derive(Clone)]
pub(crate) struct AccessToken(Arc<Inner>);

struct Inner {
    value: SecretString,
    expires_at: Instant,
    fresh_until: Instant,
}

impl AccessToken {
    /// `issued_at` is when the request was *sent*, so network time only ever
    /// makes us refresh earlier, never use a token past its expiry.
    pub(crate) fn new(value: String, issued_at: Instant, lifetime: Duration) -> AccessToken {
        let expires_at = issued_at + lifetime;
        AccessToken(Arc::new(Inner {
            value: SecretString::from(value),
            expires_at,
            fresh_until: expires_at - refresh_margin(lifetime),
        }))
    }

    /// The value for `Authorization: Bearer …`: the only place it is exposed.
    pub(crate) fn bearer(&self) -> &str {
        self.0.value.expose_secret()
    }

    pub(crate) fn expires_at(&self) -> Instant {
        self.0.expires_at
    }

    /// From then on a new token is fetched: `expires_at - refresh_margin`.
    #[cfg(test)]
    pub(crate) fn fresh_until(&self) -> Instant {
        self.0.fresh_until
    }

    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        now < self.0.fresh_until
    }

    /// Whether both are the very same token (clones of one fetch).
    pub(crate) fn same_as(&self, other: &AccessToken) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The token's claims, for diagnostics only (the signature is not checked).
    pub(crate) fn claims(&self) -> Result<Claims, AuthError> {
        Claims::from_jwt(self.bearer())
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let left = self.0.expires_at.saturating_duration_since(Instant::now());
        f.debug_struct("AccessToken")
            .field("expires_in", &Duration::from_secs(left.as_secs()))
            .finish_non_exhaustive()
    }
}

/// A token endpoint success: v2 sends numbers, v1 strings.
#[derive(Deserialize)]
struct Success {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    expires_on: Option<serde_json::Value>,
}

/// The longest lifetime taken at its word. Entra's tokens live 60 to 90
/// minutes (a day at most); a larger value (`1e300`, `2^64-1`) is a broken
/// server, and added to the clock it would overflow it.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Seconds as a number or a numeric string (v1), any size or sign; `None`
/// for anything else, NaN and infinities included.
fn seconds(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

/// Reads a 200 body into the token and its lifetime. `now` is the wall clock,
/// used only when the body gives `expires_on` without `expires_in`.
pub(crate) fn parse_success(body: &[u8], now: Timestamp) -> Result<(String, Duration), AuthError> {
    // The messages never quote the body: it may hold a token.
    let s: Success = serde_json::from_slice(body).map_err(|e| {
        AuthError::Malformed(format!(
            "HTTP 200 with a body that is not a token response ({})",
            json_category(&e)
        ))
    })?;
    let token = s
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| AuthError::Malformed("HTTP 200 without access_token".into()))?;
    if let Some(kind) = s.token_type.as_deref() {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed(format!(
                "token_type {kind:?}, expected Bearer"
            )));
        }
    }
    let lifetime = match (s.expires_in.as_ref(), s.expires_on.as_ref()) {
        (Some(v), _) => {
            seconds(v).ok_or_else(|| AuthError::Malformed("expires_in is not a number".into()))?
        }
        (None, Some(v)) => {
            seconds(v).ok_or_else(|| AuthError::Malformed("expires_on is not a number".into()))?
                - now.unix_seconds() as f64
        }
        (None, None) => {
            return Err(AuthError::Malformed(
                "neither expires_in nor expires_on".into(),
            ))
        }
    };
    if lifetime <= 0.0 {
        return Err(AuthError::Malformed(format!(
            "token already expired (lifetime {lifetime} s)"
        )));
    }
    if lifetime > MAX_LIFETIME.as_secs_f64() {
        crate::events::token_lifetime_clamped(lifetime);
    }
    Ok((
        token,
        Duration::from_secs_f64(lifetime.min(MAX_LIFETIME.as_secs_f64())),
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorBody {
    error: Option<String>,
    error_description: Option<String>,
    error_codes: Option<Vec<u32>>,
}

/// The longest description kept: the first line of Entra's text is short;
/// anything longer is not Entra's and not worth a log line.
const MAX_DESCRIPTION: usize = 400;

/// Reads a non-2xx answer. Never fails: whatever the body, the status is kept.
pub(crate) fn parse_error(status: u16, body: &[u8]) -> AuthError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let description = parsed
        .error_description
        .as_deref()
        .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or_default();
    let description: String = description.chars().take(MAX_DESCRIPTION).collect();
    let mut codes = parsed.error_codes.unwrap_or_default();
    if codes.is_empty() {
        // Some proxies keep the description but drop error_codes.
        if let Some(code) = description
            .strip_prefix("AADSTS")
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|digits| digits.parse().ok())
        {
            codes.push(code);
        }
    }
    AuthError::Rejected {
        status,
        error: parsed.error.unwrap_or_default(),
        codes,
        description,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn now() -> Timestamp {
        Timestamp::from_ticks(NOW * crate::timestamp::TICKS_PER_SECOND)
    }

    #[test]
    fn margin_is_a_tenth_of_the_lifetime_capped_at_five_minutes() {
        assert_eq!(
            refresh_margin(Duration::from_secs(30)),
            Duration::from_secs(3)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(3599)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(5400)),
            Duration::from_secs(300)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_thirty_second_token_is_fresh_for_twenty_seven_seconds() {
        let t0 = Instant::now();
        let t = AccessToken::new("x".into(), t0, Duration::from_secs(30));
        assert!(t.is_fresh(t0 + Duration::from_millis(26_999)));
        assert!(!t.is_fresh(t0 + Duration::from_secs(27)));
        assert_eq!(t.expires_at(), t0 + Duration::from_secs(30));
    }

    #[test]
    fn v2_numbers_and_v1_strings_are_both_accepted() {
        let v2 = br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ.a.b"}"#;
        assert_eq!(
            parse_success(v2, now()).unwrap(),
            ("eyJ.a.b".into(), Duration::from_secs(3599))
        );
        let v1 = format!(
            r#"{{"token_type":"Bearer","expires_in":"3599","ext_expires_in":"3599","expires_on":"{}","not_before":"{}","resource":"https://api.securitycenter.microsoft.com","access_token":"eyJ.a.b"}}"#,
            NOW + 3599,
            NOW
        );
        assert_eq!(
            parse_success(v1.as_bytes(), now()).unwrap().1,
            Duration::from_secs(3599)
        );
        let on_only = format!(
            r#"{{"access_token":"eyJ.a.b","expires_on":{}}}"#,
            NOW + 1200
        );
        assert_eq!(
            parse_success(on_only.as_bytes(), now()).unwrap().1,
            Duration::from_secs(1200)
        );
    }

    #[test]
    fn unusable_200_bodies_are_malformed_and_never_quoted() {
        for body in [
            &b"<html>login</html>"[..],
            br#"{"token_type":"Bearer","expires_in":3599}"#,
            br#"{"access_token":"tok-SECRET","expires_in":"soon"}"#,
            br#"{"access_token":"tok-SECRET"}"#,
            br#"{"access_token":"tok-SECRET","expires_in":0}"#,
            br#"{"access_token":"tok-SECRET","token_type":"pop","expires_in":10}"#,
            br#"{"access_token":"tok-SECRET","#,
        ] {
            let e = parse_success(body, now()).unwrap_err();
            assert!(matches!(e, AuthError::Malformed(_)), "{e:?}");
            assert!(e.is_transient());
            assert!(!format!("{e} {e:?}").contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn entra_error_bodies_keep_error_codes_and_first_description_line() {
        let body = br#"{"error":"unauthorized_client","error_description":"AADSTS700016: Application with identifier 'app' was not found in the directory 'contoso'.\r\nTrace ID: 1\r\nCorrelation ID: 2\r\nTimestamp: 2026-01-01 00:00:00Z","error_codes":[700016],"timestamp":"2026-01-01 00:00:00Z","trace_id":"1","correlation_id":"2"}"#;
        let e = parse_error(400, body);
        assert_eq!(
            e,
            AuthError::Rejected {
                status: 400,
                error: "unauthorized_client".into(),
                codes: vec![700016],
                description: "AADSTS700016: Application with identifier 'app' was not found in the directory 'contoso'."
                    .into(),
            }
        );
    }

    #[test]
    fn gateway_answers_keep_only_the_status() {
        for body in [
            &b""[..],
            b"<html><body>502 Bad Gateway</body></html>",
            b"null",
            b"[1,2]",
        ] {
            let e = parse_error(502, body);
            assert_eq!(
                e,
                AuthError::Rejected {
                    status: 502,
                    error: String::new(),
                    codes: vec![],
                    description: String::new()
                }
            );
        }
    }

    #[test]
    fn a_description_without_error_codes_still_yields_the_code() {
        let e = parse_error(401, br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}"#);
        assert_eq!(e.code(), Some(7000215));
        assert!(e.hint().contains("Value"));
    }
}
