//! The one HTTP client shared by token requests and API calls: rustls, the
//! extra CA bundle (parsed when the config loaded), the proxy, the partner
//! User-Agent and a per-request timeout.

use std::time::Duration;

use crate::config::HttpSettings;

/// Why the HTTP client could not be built (a proxy URL reqwest refuses).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("http.proxy {0:?} is not a usable proxy URL")]
    Proxy(String),
    #[error("cannot build the HTTP client: {0}")]
    Build(reqwest::Error),
}

/// Builds the client. Without `http.proxy`, reqwest honours `HTTPS_PROXY`,
/// `HTTP_PROXY` and `NO_PROXY` from the environment.
pub fn client(settings: &HttpSettings, timeout: Duration) -> Result<reqwest::Client, ClientError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(settings.user_agent.clone())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        // Tokens and alerts must not follow a redirect to another host with
        // the bearer header; the API never redirects.
        .redirect(reqwest::redirect::Policy::none())
        .use_rustls_tls();
    for cert in settings.ca_bundle.iter().flat_map(|b| &b.certificates) {
        builder = builder.add_root_certificate(cert.clone());
    }
    if let Some(proxy) = &settings.proxy {
        let proxy =
            reqwest::Proxy::all(proxy.as_str()).map_err(|_| ClientError::Proxy(proxy.clone()))?;
        builder = builder.proxy(proxy);
    }
    builder.build().map_err(ClientError::Build)
}
