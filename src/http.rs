//! The one HTTP client shared by token requests and API calls: rustls, the
//! extra CA bundle, the proxy, the partner User-Agent and a per-request timeout.

use std::time::Duration;

use crate::config::HttpSettings;

/// Why the HTTP client could not be built (bad CA bundle or proxy URL).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read http.ca_file {path}: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("http.ca_file {path} holds no usable PEM certificate: {source}")]
    CaPem {
        path: String,
        source: reqwest::Error,
    },
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
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|source| ClientError::CaFile {
            path: path.display().to_string(),
            source,
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| ClientError::CaPem {
                path: path.display().to_string(),
                source,
            })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some(proxy) = &settings.proxy {
        let proxy =
            reqwest::Proxy::all(proxy.as_str()).map_err(|_| ClientError::Proxy(proxy.clone()))?;
        builder = builder.proxy(proxy);
    }
    builder.build().map_err(ClientError::Build)
}
