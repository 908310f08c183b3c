//! One OAuth 2.0 client-credentials token per customer tenant: requested with
//! a client secret or a certificate assertion, cached until shortly before it
//! expires, fetched by one caller at a time, retried when Entra fails
//! transiently, and explained (AADSTS code → operator hint) when it refuses.
//!
//! - [`token`]: the token value and the endpoint's wire format.
//! - [`errors`]: [`AuthError`], its retry class and the AADSTS table.
//! - [`assertion`]: the certificate file and the signed client assertion.
//! - [`claims`]: decoding a token's claims for `check`.
//!
//! `auth` knows nothing of the config: [`TokenRequest`] is everything a token
//! request needs, and `config` builds it (with the certificate already loaded).

pub(crate) mod assertion;
pub(crate) mod claims;
pub(crate) mod errors;
pub(crate) mod token;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;

pub(crate) use assertion::ClientCertificate;
pub(crate) use claims::Claims;
pub(crate) use errors::AuthError;
pub(crate) use token::AccessToken;

use crate::backoff::Backoff;
use crate::timestamp::Timestamp;

/// Retries of one token request after its first attempt, for transient errors.
pub(crate) const MAX_RETRIES: u32 = 4;

/// How a tenant proves the partner app's identity.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    /// A client secret, already read from its source.
    Secret(SecretString),
    /// A certificate and its key, read and checked once when the config is
    /// loaded and shared from then on: a token request never reads the file,
    /// and a reload sees a changed file by its thumbprint.
    Certificate(Arc<ClientCertificate>),
}

/// Everything one tenant's token requests need: the tenant's own name and
/// id, and the app side, which every tenant of that app shares.
#[derive(Debug, Clone)]
pub(crate) struct TokenRequest {
    /// The tenant's name, for logs.
    pub tenant: Arc<str>,
    pub tenant_id: Arc<str>,
    pub app: Arc<TokenApp>,
}

impl TokenRequest {
    /// `{login}/{tenant}/oauth2/v2.0/token`: also the `aud` of a client assertion.
    #[cfg(test)]
    pub(crate) fn token_url(&self) -> String {
        self.app.token_url(&self.tenant_id)
    }
}

/// The app side of a token request: client id, credential, login host and
/// scope. The same for every tenant that uses one app with one cloud and
/// source, so a daemon holds it once per app, not once per tenant
/// ([`AppShare`]): with 5,000 tenants of one app, one copy of its secret,
/// URL and scope instead of 5,000 (docs/BENCHMARKS.md, "Many tenants").
#[derive(Debug)]
pub(crate) struct TokenApp {
    pub client_id: String,
    /// e.g. `https://login.microsoftonline.com` (no trailing slash).
    pub login_url: String,
    pub scope: String,
    pub credential: Credential,
    /// `host[:port]` of the login URL, for transport errors.
    host: String,
}

impl TokenApp {
    pub(crate) fn new(
        client_id: String,
        login_url: String,
        scope: String,
        credential: Credential,
    ) -> TokenApp {
        let host = url::Url::parse(&login_url)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?.to_owned();
                Some(match u.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                })
            })
            .unwrap_or_else(|| login_url.clone());
        TokenApp {
            client_id,
            login_url,
            scope,
            credential,
            host,
        }
    }

    /// The token endpoint of `tenant_id`: built for each request (one an
    /// hour or so) rather than kept per tenant.
    pub(crate) fn token_url(&self, tenant_id: &str) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.login_url, tenant_id)
    }

    /// Everything that tells two apps apart, the secret hashed: equal
    /// digests of equal apps, so that [`AppShare`] can key on it.
    fn digest(&self) -> u64 {
        let text = format!(
            "{}|{}|{}|{}",
            self.client_id,
            self.login_url,
            self.scope,
            self.credential.digest()
        );
        xxhash_rust::xxh3::xxh3_64(text.as_bytes())
    }
}

/// Equal when every request would be the same (a certificate by its file,
/// algorithm and thumbprint, as a reload compares it).
impl PartialEq for TokenApp {
    fn eq(&self, other: &Self) -> bool {
        self.client_id == other.client_id
            && self.login_url == other.login_url
            && self.scope == other.scope
            && self.credential.digest() == other.credential.digest()
            && match (&self.credential, &other.credential) {
                (Credential::Secret(a), Credential::Secret(b)) => {
                    a.expose_secret() == b.expose_secret()
                }
                (Credential::Certificate(_), Credential::Certificate(_)) => true,
                _ => false,
            }
    }
}

impl Credential {
    /// What tells two credentials apart, without the secret: a hash of the
    /// secret, or the certificate's file, algorithm and thumbprint (loaded
    /// with the config, so a replaced file shows as a new thumbprint).
    pub(crate) fn digest(&self) -> String {
        match self {
            Credential::Secret(s) => format!(
                "secret:{:x}",
                xxhash_rust::xxh3::xxh3_64(s.expose_secret().as_bytes())
            ),
            Credential::Certificate(c) => format!(
                "cert:{}:{}:{}",
                c.path().display(),
                c.algorithm(),
                c.thumbprint()
            ),
        }
    }
}

/// One [`TokenApp`] per distinct app among the tenants built through it:
/// an equal app already in use is handed out again. Holds them weakly: an
/// app no tenant uses any more (a reload changed it) goes with its last
/// tenant.
#[derive(Debug, Default)]
pub(crate) struct AppShare {
    apps: Mutex<HashMap<u64, Weak<TokenApp>>>,
}

impl AppShare {
    pub(crate) fn share(&self, app: TokenApp) -> Arc<TokenApp> {
        let key = app.digest();
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = apps.get(&key).and_then(Weak::upgrade) {
            if *known == app {
                return known;
            }
            // Two apps with one digest: this one goes unshared.
            return Arc::new(app);
        }
        apps.retain(|_, w| w.strong_count() > 0);
        let app = Arc::new(app);
        apps.insert(key, Arc::downgrade(&app));
        app
    }
}

/// The token source of one tenant. `Send + Sync`: share it in an `Arc`.
pub(crate) struct TokenSource {
    http: reqwest::Client,
    name: Arc<str>,
    tenant_id: Arc<str>,
    app: Arc<TokenApp>,
    /// The current token; a plain mutex, never held across an await.
    cached: Mutex<Option<AccessToken>>,
    /// Held across a fetch so concurrent callers wait for one request instead
    /// of each sending their own; keeps the last fetch's error so the callers
    /// that waited for it share it rather than repeating it one by one.
    /// Boxed: an error is rare, and inline it would take its size in every
    /// tenant's source.
    flight: tokio::sync::Mutex<Option<Box<AuthError>>>,
    /// Fetches completed under `flight`, to tell "someone fetched while I
    /// waited" from "I arrived after that fetch".
    flights_done: AtomicU64,
}

impl TokenSource {
    /// Takes a `&TenantSettings` (or a [`TokenRequest`]). Reads no file: a
    /// certificate was loaded with the config.
    pub(crate) fn new(http: reqwest::Client, tenant: impl Into<TokenRequest>) -> TokenSource {
        let tenant: TokenRequest = tenant.into();
        TokenSource {
            http,
            name: tenant.tenant,
            tenant_id: tenant.tenant_id,
            app: tenant.app,
            cached: Mutex::new(None),
            flight: tokio::sync::Mutex::new(None),
            flights_done: AtomicU64::new(0),
        }
    }

    pub(crate) fn tenant_name(&self) -> &str {
        &self.name
    }

    /// The certificate in use, if any (for `check` to show its thumbprint).
    #[cfg(test)]
    pub(crate) fn certificate(&self) -> Option<&ClientCertificate> {
        match &self.app.credential {
            Credential::Certificate(c) => Some(c),
            Credential::Secret(_) => None,
        }
    }

    /// A token fresh enough to use: the cached one until `refresh_margin`
    /// before its expiry, else a new one (one request for all concurrent
    /// callers; transient failures retried up to [`MAX_RETRIES`] times).
    pub(crate) async fn token(&self) -> Result<AccessToken, AuthError> {
        if let Some(t) = self.cached_fresh() {
            return Ok(t);
        }
        let seen = self.flights_done.load(Ordering::Acquire);
        let mut last_error = self.flight.lock().await;
        if let Some(t) = self.cached_fresh() {
            return Ok(t);
        }
        if self.flights_done.load(Ordering::Acquire) != seen {
            if let Some(e) = last_error.as_deref() {
                return Err(e.clone());
            }
        }
        let result = self.fetch_with_retries().await;
        match &result {
            Ok(t) => {
                *last_error = None;
                self.store(t.clone());
            }
            Err(e) => *last_error = Some(Box::new(e.clone())),
        }
        self.flights_done.fetch_add(1, Ordering::Release);
        result
    }

    /// Forgets `stale` if it is still the cached token (the API answered 401
    /// to it); a newer token fetched meanwhile is kept.
    pub(crate) async fn invalidate(&self, stale: &AccessToken) {
        let mut cached = self.lock_cached();
        if cached.as_ref().is_some_and(|t| t.same_as(stale)) {
            *cached = None;
            crate::events::token_invalidated(&self.name);
        }
    }

    /// A new token regardless of the cache (for `check`); it replaces the
    /// cached one.
    pub(crate) async fn fetch_fresh(&self) -> Result<AccessToken, AuthError> {
        let t = self.fetch_with_retries().await?;
        self.store(t.clone());
        Ok(t)
    }

    fn lock_cached(&self) -> std::sync::MutexGuard<'_, Option<AccessToken>> {
        // A panic elsewhere cannot leave an Option half-written.
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached_fresh(&self) -> Option<AccessToken> {
        let now = Instant::now();
        self.lock_cached()
            .as_ref()
            .filter(|t| t.is_fresh(now))
            .cloned()
    }

    fn store(&self, token: AccessToken) {
        *self.lock_cached() = Some(token);
    }

    async fn fetch_with_retries(&self) -> Result<AccessToken, AuthError> {
        let mut backoff = Backoff::for_requests();
        loop {
            let result = self.request_once().await;
            crate::metrics::global().token_request(crate::metrics::token_outcome(&result));
            match result {
                Ok(t) => {
                    crate::events::token_acquired(
                        &self.name,
                        t.expires_at().saturating_duration_since(Instant::now()),
                    );
                    return Ok(t);
                }
                Err(e) if e.is_transient() && backoff.attempts() < MAX_RETRIES => {
                    let delay = backoff.next_delay();
                    crate::events::token_retry(&self.name, &e, backoff.attempts(), delay);
                    crate::slots::idle(tokio::time::sleep(delay)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn request_once(&self) -> Result<AccessToken, AuthError> {
        let assertion;
        let app = &*self.app;
        let token_url = app.token_url(&self.tenant_id);
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("client_id", &app.client_id),
            ("scope", &app.scope),
        ];
        match &app.credential {
            Credential::Secret(s) => form.push(("client_secret", s.expose_secret())),
            Credential::Certificate(c) => {
                assertion = c.assertion(&app.client_id, &token_url, Timestamp::now())?;
                form.push(("client_assertion_type", assertion::ASSERTION_TYPE));
                form.push(("client_assertion", &assertion));
            }
        }
        let sent_at = Instant::now();
        let response = self
            .http
            .post(&token_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = response.status();
        let mut body = Vec::new();
        crate::http::read_capped(response, &mut body, crate::http::MAX_TOKEN_RESPONSE)
            .await
            .map_err(|e| match e {
                crate::http::ReadError::Transport(e) => self.transport(&e),
                crate::http::ReadError::TooLarge { limit } => AuthError::Malformed(format!(
                    "{}: an answer over {} KiB, not a token response",
                    self.app.host,
                    limit >> 10
                )),
            })?;
        if status.is_success() {
            let (value, lifetime) =
                token::parse_success(&body, Timestamp::now()).map_err(|e| match e {
                    AuthError::Malformed(what) => {
                        AuthError::Malformed(format!("{}: {what}", self.app.host))
                    }
                    other => other,
                })?;
            self.check_tenant(&value)?;
            Ok(AccessToken::new(value, sent_at, lifetime))
        } else {
            Err(token::parse_error(status.as_u16(), &body))
        }
    }

    /// Refuses a token whose `tid` claim names another tenant. A token whose
    /// claims cannot be read, or that has no `tid`, is let through: the API
    /// decides about it, and it cannot be told apart from a foreign one.
    fn check_tenant(&self, token: &str) -> Result<(), AuthError> {
        match Claims::from_jwt(token).ok().and_then(|c| c.tid) {
            Some(tid) if !tid.eq_ignore_ascii_case(&self.tenant_id) => {
                Err(AuthError::WrongTenant {
                    host: self.app.host.clone(),
                    asked: self.tenant_id.to_string(),
                    got: tid,
                })
            }
            _ => Ok(()),
        }
    }

    /// Names the host and the kind of failure. reqwest's own text is not used
    /// verbatim: only the innermost cause (e.g. "Connection refused").
    fn transport(&self, e: &reqwest::Error) -> AuthError {
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else if e.is_body() || e.is_decode() {
            "the answer broke off"
        } else {
            "request failed"
        };
        let mut root: &dyn std::error::Error = e;
        while let Some(next) = root.source() {
            root = next;
        }
        let cause = if e.is_timeout() || std::error::Error::source(e).is_none() {
            String::new()
        } else {
            format!(" ({root})")
        };
        AuthError::Transport(format!("{}: {kind}{cause}", self.app.host))
    }
}

/// Names the tenant and the kind of credential, never the secret, key or token.
impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credential = match &self.app.credential {
            Credential::Secret(_) => "client secret".to_owned(),
            Credential::Certificate(c) => {
                format!("certificate {} ({})", c.path().display(), c.algorithm())
            }
        };
        let cached = self.lock_cached().as_ref().map(|t| format!("{t:?}"));
        f.debug_struct("TokenSource")
            .field("tenant", &self.name)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.app.client_id)
            .field("token_url", &self.app.token_url(&self.tenant_id))
            .field("scope", &self.app.scope)
            .field("credential", &credential)
            .field("cached", &cached)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "token source of tenant {} ({})",
            self.name, self.tenant_id
        )
    }
}

#[cfg(test)]
mod tests;
