//! The few access-token claims `check` shows: decoded from the JWT payload
//! **for diagnostics only**. The signature is not verified: the API verifies
//! tokens, we only read what Entra put in ours to explain a 403.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

use super::AuthError;

/// The roles that let the app list alerts.
pub(crate) const ALERT_ROLES: [&str; 2] = ["Alert.Read.All", "Alert.ReadWrite.All"];

/// The Microsoft Graph roles that let the app list `alerts_v2`.
pub(crate) const GRAPH_ALERT_ROLES: [&str; 2] =
    ["SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"];

/// Claims of a Defender for Endpoint access token (a v1.0 JWT).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct Claims {
    /// The tenant the token was issued in: must be the one asked for.
    pub tid: Option<String>,
    /// Application roles; absent (→ empty) when consent predates the
    /// permission, and then the API answers 403.
    pub roles: Vec<String>,
    pub appid: Option<String>,
    pub aud: Option<String>,
    /// Expiry, Unix seconds. Read leniently (a float or a string is taken,
    /// anything else is `None`): it is shown, never relied on, and a token
    /// must not be rejected for its shape.
    #[serde(deserialize_with = "lenient_seconds")]
    pub exp: Option<i64>,
}

fn lenient_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    let secs = match &v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    Ok(secs.filter(|f| f.is_finite()).map(|f| f as i64))
}

impl Claims {
    /// Decodes the payload of a compact JWT. Errors never quote the token.
    pub(crate) fn from_jwt(jwt: &str) -> Result<Claims, AuthError> {
        let mut parts = jwt.split('.');
        let payload = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(_), Some(payload), Some(_), None) => payload,
            _ => {
                return Err(AuthError::Malformed(
                    "the access token is not a JWT (expected three dot-separated parts)".into(),
                ))
            }
        };
        // Some encoders pad; the JWT spec does not, so accept both.
        let bytes = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|_| {
                AuthError::Malformed("the access token's payload is not base64url".into())
            })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            AuthError::Malformed(format!(
                "the access token's payload is not the expected JSON ({})",
                json_category(&e)
            ))
        })
    }

    /// Whether `roles` lets the app read alerts.
    pub(crate) fn can_read_alerts(&self) -> bool {
        self.roles.iter().any(|r| ALERT_ROLES.contains(&r.as_str()))
    }

    /// Whether `roles` lets the app read Graph's `alerts_v2`.
    pub(crate) fn can_read_graph_alerts(&self) -> bool {
        self.roles
            .iter()
            .any(|r| GRAPH_ALERT_ROLES.contains(&r.as_str()))
    }
}

/// serde_json's error category without its position or the offending text
/// (which could be part of a token).
pub(crate) fn json_category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "I/O",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected types",
        serde_json::error::Category::Eof => "truncated",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An unsigned JWT with this payload, as the tests' fake Entra issues.
    pub(crate) fn jwt_with(payload: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256"}"#);
        let body = URL_SAFE_NO_PAD.encode(payload.to_string());
        format!("{header}.{body}.c2lnbmF0dXJl")
    }

    #[test]
    fn reads_tenant_roles_app_audience_and_expiry() {
        let jwt = jwt_with(&serde_json::json!({
            "aud": "https://api.securitycenter.microsoft.com",
            "tid": "11111111-2222-3333-4444-555555555555",
            "appid": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
            "roles": ["Alert.Read.All", "Machine.Read.All"],
            "exp": 1_800_000_000,
            "ver": "1.0"
        }));
        let c = Claims::from_jwt(&jwt).unwrap();
        assert_eq!(
            c.tid.as_deref(),
            Some("11111111-2222-3333-4444-555555555555")
        );
        assert_eq!(
            c.appid.as_deref(),
            Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
        );
        assert_eq!(
            c.aud.as_deref(),
            Some("https://api.securitycenter.microsoft.com")
        );
        assert_eq!(c.exp, Some(1_800_000_000));
        assert!(c.can_read_alerts());
    }

    #[test]
    fn a_token_without_roles_has_none_and_cannot_read_alerts() {
        let c = Claims::from_jwt(&jwt_with(&serde_json::json!({"tid": "t"}))).unwrap();
        assert!(c.roles.is_empty());
        assert!(!c.can_read_alerts());
    }

    #[test]
    fn garbage_is_malformed_and_never_quoted() {
        for bad in [
            "opaque-token-value",
            "a.!!!.c",
            "a.b.c.d",
            &format!("x.{}.y", URL_SAFE_NO_PAD.encode("secretish")),
        ] {
            let e = Claims::from_jwt(bad).unwrap_err();
            assert!(matches!(e, AuthError::Malformed(_)), "{bad}");
            assert!(
                !e.to_string().contains("opaque-token-value")
                    && !e.to_string().contains("secretish")
            );
        }
    }

    #[test]
    fn an_exp_claim_that_is_not_an_integer_does_not_reject_the_token() {
        for (exp, want) in [
            (serde_json::json!(1.8e9), Some(1_800_000_000)),
            (serde_json::json!("1800000000"), Some(1_800_000_000)),
            (serde_json::json!("soon"), None),
            (serde_json::json!(null), None),
        ] {
            let jwt = jwt_with(&serde_json::json!({"tid": "t", "exp": exp}));
            let c = Claims::from_jwt(&jwt).expect("claims read");
            assert_eq!(c.exp, want, "exp {exp}");
            assert_eq!(c.tid.as_deref(), Some("t"));
        }
    }
}
