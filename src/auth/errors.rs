//! Token errors: what went wrong, whether retrying can help, a few words for
//! `STATUS=` (`summary`), and the operator's next step (`hint`) for each
//! AADSTS code partners actually meet.
//!
//! The classification is deliberately three-way (transient, persistent,
//! neither): only transient errors are retried, and only persistent ones are
//! reported as "needs a human". An error we do not recognise is neither, so it
//! is not retried in a loop against Entra, nor presented as a diagnosis.

/// Why a token could not be obtained.
///
/// No variant ever holds the request (client secret, assertion) or a token:
/// `Display` and `Debug` are safe to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Entra answered with an error status.
    #[error("{}", rejected_text(*.status, .error, .codes, .description))]
    Rejected {
        status: u16,
        /// The OAuth `error` field (`unauthorized_client`, …); empty when the
        /// body was not the usual JSON (a gateway's HTML page, no body).
        error: String,
        /// `error_codes`, the AADSTS numbers.
        codes: Vec<u32>,
        /// First line of `error_description`, e.g.
        /// `AADSTS700016: Application with identifier '…' was not found …`.
        description: String,
    },
    /// No answer: timeout, connection refused, DNS, TLS. Names the host.
    #[error("token request failed: {0}")]
    Transport(String),
    /// A 200 whose body is not a usable token response. Never quotes the body,
    /// which may hold a token.
    #[error("unusable token response: {0}")]
    Malformed(String),
    /// The certificate file cannot be used (unreadable, not PEM, no RSA key,
    /// key and certificate do not match). Names the path, never the key.
    #[error("{0}")]
    Credential(String),
    /// The token's `tid` claim names another tenant than the one asked for:
    /// the token is refused before any use, so no other tenant's alerts can
    /// be emitted under this one.
    #[error("the token endpoint {host} answered for tenant {got}, not {asked}: token refused")]
    WrongTenant {
        host: String,
        asked: String,
        got: String,
    },
}

/// How retrying a failed token request is expected to fare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Transient,
    Persistent,
    Unknown,
}

/// One row of the AADSTS table (API-NOTES.md "Token errors").
struct Entry {
    code: u32,
    /// What the code means, for the error's `Display`.
    meaning: &'static str,
    /// A few words for `STATUS=` and `status`, where a line holds many tenants.
    summary: &'static str,
    hint: &'static str,
    class: Class,
}

const THROTTLED_HINT: &str =
    "Entra ID throttled the request or failed transiently: it is retried with backoff; act only if it persists (check https://status.cloud.microsoft)";
const ASSERTION_HINT: &str =
    "the certificate's client assertion was refused: check that this certificate is uploaded to the app registration (compare thumbprints), that `legacy_rs256` matches the setup, and that this host's clock is right (NTP)";

const TABLE: &[Entry] = &[
    Entry {
        code: 700016,
        meaning: "application not found in the tenant",
        summary: "consent missing",
        hint: "the customer's Global Administrator has not consented (or revoked consent, or tenant_id is wrong): send them the link from `mde-poller consent-url`",
        class: Class::Persistent,
    },
    Entry {
        code: 90002,
        meaning: "tenant not found",
        summary: "tenant not found",
        hint: "check tenant_id for a typo, and `cloud`: a GCC High or DoD tenant is not known to the commercial login host",
        class: Class::Persistent,
    },
    Entry {
        code: 900023,
        meaning: "invalid tenant identifier",
        summary: "invalid tenant id",
        hint: "check tenant_id: it must be the customer's directory (tenant) ID, a GUID",
        class: Class::Persistent,
    },
    Entry {
        code: 7000215,
        meaning: "invalid client secret",
        summary: "invalid client secret",
        hint: "paste the client secret's Value, not its Secret ID, from the app registration's \"Certificates & secrets\"",
        class: Class::Persistent,
    },
    Entry {
        code: 7000222,
        meaning: "client secret expired",
        summary: "client secret expired",
        hint: "create a new client secret in the app registration (or move to a certificate) and update the config",
        class: Class::Persistent,
    },
    Entry {
        code: 500011,
        meaning: "resource principal not found in the tenant",
        summary: "no Defender for Endpoint",
        hint: "the customer tenant has no Microsoft Defender for Endpoint (WindowsDefenderATP): confirm the customer's licence and onboarding, and `cloud`",
        class: Class::Persistent,
    },
    Entry {
        code: 700027,
        meaning: "client assertion signature invalid",
        summary: "certificate rejected",
        hint: ASSERTION_HINT,
        class: Class::Persistent,
    },
    Entry {
        code: 50048,
        meaning: "client assertion subject does not match its issuer",
        summary: "certificate rejected",
        hint: ASSERTION_HINT,
        class: Class::Persistent,
    },
    Entry {
        code: 500133,
        meaning: "client assertion outside its valid time",
        summary: "certificate rejected",
        hint: "this host's clock is off: fix time synchronisation (NTP); also check the certificate upload",
        class: Class::Persistent,
    },
    Entry {
        code: 700024,
        meaning: "client assertion not within its valid time range",
        summary: "host clock off",
        hint: "this host's clock is off: fix time synchronisation (NTP)",
        class: Class::Persistent,
    },
    Entry {
        code: 7000112,
        meaning: "application disabled in the tenant",
        summary: "app disabled",
        hint: "ask the customer to re-enable the enterprise application (Entra admin center → Enterprise applications → Properties → Enabled for users to sign-in)",
        class: Class::Persistent,
    },
    Entry {
        code: 53003,
        meaning: "blocked by Conditional Access",
        summary: "blocked by Conditional Access",
        hint: "the customer's Conditional Access policy for workload identities blocks this app: ask the customer to exclude it or allow this host's IP",
        class: Class::Persistent,
    },
    Entry {
        code: 70011,
        meaning: "invalid scope",
        summary: "invalid scope",
        hint: "check `cloud` and any `[endpoints]` token_scope override: the scope must be the API's `/.default`",
        class: Class::Persistent,
    },
    Entry {
        code: 50196,
        meaning: "too many identical requests",
        summary: "login throttled",
        hint: THROTTLED_HINT,
        class: Class::Transient,
    },
    Entry {
        code: 90055,
        meaning: "too many requests",
        summary: "login throttled",
        hint: THROTTLED_HINT,
        class: Class::Transient,
    },
    Entry {
        code: 90024,
        meaning: "transient error at the login service",
        summary: "login service busy",
        hint: THROTTLED_HINT,
        class: Class::Transient,
    },
    Entry {
        code: 50033,
        meaning: "retryable error at the login service",
        summary: "login service busy",
        hint: THROTTLED_HINT,
        class: Class::Transient,
    },
];

fn entry(code: u32) -> Option<&'static Entry> {
    TABLE.iter().find(|e| e.code == code)
}

/// The operator's next step for an AADSTS code, if it is one we know.
pub(crate) fn hint_for(code: u32) -> Option<&'static str> {
    entry(code).map(|e| e.hint)
}

/// What an AADSTS code means, in a few words, if it is one we know.
pub(crate) fn meaning_for(code: u32) -> Option<&'static str> {
    entry(code).map(|e| e.meaning)
}

impl AuthError {
    /// Retrying soon may succeed: 5xx, 429, no answer, a garbled 200,
    /// `temporarily_unavailable` and the throttling codes.
    pub(crate) fn is_transient(&self) -> bool {
        self.class() == Class::Transient
    }

    /// Retrying will not help until someone changes something (consent,
    /// secret, tenant id, certificate, the customer's policies).
    pub(crate) fn is_persistent(&self) -> bool {
        self.class() == Class::Persistent
    }

    fn class(&self) -> Class {
        match self {
            AuthError::Transport(_) | AuthError::Malformed(_) => Class::Transient,
            AuthError::Credential(_) | AuthError::WrongTenant { .. } => Class::Persistent,
            AuthError::Rejected {
                status,
                error,
                codes,
                ..
            } => {
                // A known code is the most specific evidence; persistent wins
                // over transient when Entra lists both.
                let classes: Vec<Class> = codes
                    .iter()
                    .filter_map(|c| entry(*c))
                    .map(|e| e.class)
                    .collect();
                if classes.contains(&Class::Persistent) {
                    Class::Persistent
                } else if classes.contains(&Class::Transient)
                    || error == "temporarily_unavailable"
                    || *status >= 500
                    || *status == 429
                {
                    Class::Transient
                } else if matches!(
                    error.as_str(),
                    "invalid_client" | "unauthorized_client" | "invalid_request" | "invalid_scope"
                ) {
                    Class::Persistent
                } else {
                    Class::Unknown
                }
            }
        }
    }

    /// The first AADSTS code with an entry in our table, else the first code.
    pub(crate) fn code(&self) -> Option<u32> {
        match self {
            AuthError::Rejected { codes, .. } => codes
                .iter()
                .copied()
                .find(|c| entry(*c).is_some())
                .or_else(|| codes.first().copied()),
            _ => None,
        }
    }

    /// The operator's next step, written to be printed under the error.
    pub(crate) fn hint(&self) -> &'static str {
        if let Some(hint) = self.code().and_then(hint_for) {
            return hint;
        }
        match self {
            AuthError::Rejected { status, error, .. } => match error.as_str() {
                "temporarily_unavailable" => THROTTLED_HINT,
                "unauthorized_client" => {
                    "the app is not usable in this tenant: check tenant_id and client_id, and that the customer consented (`mde-poller consent-url`)"
                }
                "invalid_client" => "check client_id and the client secret or certificate of this tenant",
                "invalid_request" => "check tenant_id, client_id and `cloud` of this tenant",
                "invalid_scope" => "check `cloud` and any `[endpoints]` token_scope override",
                _ if *status >= 500 || *status == 429 => THROTTLED_HINT,
                _ if error.is_empty() => {
                    "the login host answered without an OAuth error body: check `cloud`, any `[endpoints]` login override, and proxies in between"
                }
                _ => "see the AADSTS error reference (https://login.microsoftonline.com/error) for this code",
            },
            AuthError::Transport(_) => {
                "check network access from this host to the login host: DNS, firewall, `http.proxy`, `http.ca_file`"
            }
            AuthError::Malformed(_) => {
                "the login host answered 200 without a usable token: check `cloud` / `[endpoints]` login URL and any proxy that rewrites responses"
            }
            AuthError::WrongTenant { .. } => {
                "check tenant_id of this tenant and the login URL (`cloud` / `[endpoints]`): the token endpoint, or a proxy before it, hands out another tenant's tokens"
            }
            AuthError::Credential(_) => {
                "the certificate file must hold the certificate and its unencrypted RSA private key (PKCS#8 or PKCS#1) in PEM, readable by this user"
            }
        }
    }

    /// A few words for `STATUS=` and the `status` table, where one line
    /// holds many tenants: "consent missing (AADSTS700016)". The full story
    /// is the `Display` text, the next step [`hint`](Self::hint).
    pub(crate) fn summary(&self) -> String {
        match self {
            AuthError::Rejected { status, .. } => match self.code() {
                Some(code) => {
                    let words = entry(code).map_or("token refused", |e| e.summary);
                    format!("{words} (AADSTS{code})")
                }
                None => format!("token refused (HTTP {status})"),
            },
            AuthError::Transport(_) => "login host unreachable".to_owned(),
            AuthError::Malformed(_) => "unusable token response".to_owned(),
            AuthError::Credential(_) => "unusable certificate file".to_owned(),
            AuthError::WrongTenant { .. } => "token for another tenant".to_owned(),
        }
    }
}

fn rejected_text(status: u16, error: &str, codes: &[u32], description: &str) -> String {
    let paren = if error.is_empty() {
        format!("HTTP {status}")
    } else {
        error.to_owned()
    };
    if let Some((code, meaning)) = codes.iter().find_map(|c| meaning_for(*c).map(|m| (*c, m))) {
        return format!("AADSTS{code}: {meaning} ({paren})");
    }
    // Entra's own first line already starts with "AADSTSnnn: ".
    if !description.is_empty() {
        return format!("{description} ({paren})");
    }
    if let Some(code) = codes.first() {
        return format!("AADSTS{code} ({paren})");
    }
    if error.is_empty() {
        format!("token request rejected: HTTP {status} without an error body")
    } else {
        format!("token request rejected: {error} (HTTP {status})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16, error: &str, codes: &[u32]) -> AuthError {
        AuthError::Rejected {
            status,
            error: error.to_owned(),
            codes: codes.to_vec(),
            description: codes
                .first()
                .map(|c| format!("AADSTS{c}: Something happened."))
                .unwrap_or_default(),
        }
    }

    #[test]
    fn consent_missing_reads_as_the_operator_needs_it() {
        let e = rejected(400, "unauthorized_client", &[700016]);
        assert_eq!(
            e.to_string(),
            "AADSTS700016: application not found in the tenant (unauthorized_client)"
        );
        assert!(e.hint().contains("mde-poller consent-url"));
        assert!(e.is_persistent() && !e.is_transient());
        assert_eq!(e.code(), Some(700016));
        assert_eq!(e.summary(), "consent missing (AADSTS700016)");
    }

    #[test]
    fn every_persistent_code_of_the_notes_is_persistent_with_a_hint() {
        for code in [
            700016, 7000215, 7000222, 90002, 500011, 700027, 50048, 500133, 7000112, 53003,
        ] {
            let e = rejected(400, "invalid_client", &[code]);
            assert!(e.is_persistent(), "{code}");
            assert!(hint_for(code).is_some(), "{code}");
            assert_eq!(e.hint(), hint_for(code).unwrap());
        }
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        for code in [50196, 90055, 90024, 50033] {
            assert!(
                rejected(400, "invalid_request", &[code]).is_transient(),
                "{code}"
            );
        }
        assert!(rejected(400, "temporarily_unavailable", &[]).is_transient());
        assert!(rejected(503, "", &[]).is_transient());
        assert!(rejected(429, "", &[]).is_transient());
        assert!(AuthError::Transport("login.microsoftonline.com: timed out".into()).is_transient());
        assert!(AuthError::Malformed("no access_token".into()).is_transient());
        // A persistent code wins even on a 5xx.
        assert!(rejected(500, "", &[700016]).is_persistent());
    }

    #[test]
    fn oauth_errors_without_a_known_code_are_persistent_others_unknown() {
        for error in ["invalid_client", "unauthorized_client", "invalid_request"] {
            assert!(rejected(400, error, &[]).is_persistent(), "{error}");
            assert!(rejected(400, error, &[12345]).is_persistent(), "{error}");
        }
        let odd = rejected(400, "invalid_grant", &[99999]);
        assert!(!odd.is_persistent() && !odd.is_transient());
        assert_eq!(odd.code(), Some(99999));
        assert_eq!(
            odd.to_string(),
            "AADSTS99999: Something happened. (invalid_grant)"
        );
        assert!(AuthError::Credential("x".into()).is_persistent());
    }

    #[test]
    fn an_empty_gateway_answer_still_says_something_useful() {
        let e = rejected(502, "", &[]);
        assert_eq!(
            e.to_string(),
            "token request rejected: HTTP 502 without an error body"
        );
        assert_eq!(e.summary(), "token refused (HTTP 502)");
        assert!(e.is_transient());
        let e = rejected(404, "", &[]);
        assert!(e.hint().contains("login"));
    }
}
