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

/// The most read of one alerts API answer. 10,000 simulated alerts with
/// evidence (the largest page) weigh 23.4 MB, 3.5 KB the largest alert; this
/// leaves room for real alerts ten times as heavy, and stops a broken server
/// or proxy (an endless chunked body grew the process to 6 GB) at the limit.
pub(crate) const MAX_RESPONSE: usize = 256 << 20;

/// The most read of one token endpoint answer: a token response is a few KB.
pub(crate) const MAX_TOKEN_RESPONSE: usize = 1 << 20;

/// Why a body could not be read whole.
#[derive(Debug)]
pub(crate) enum ReadError {
    Transport(reqwest::Error),
    /// The body (or its `Content-Length`) went past `limit` bytes; what was
    /// read of it is dropped.
    TooLarge {
        limit: usize,
    },
}

/// The whole body into `buf` (cleared first), at most `limit` bytes; sized by
/// `Content-Length` when given, each network chunk dropped once copied.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<(), ReadError> {
    buf.clear();
    let declared = response.content_length().unwrap_or(0);
    if declared > limit as u64 {
        return Err(ReadError::TooLarge { limit });
    }
    // Capped: the header is the server's word, not a promise.
    buf.reserve((declared as usize).min(64 << 20));
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if buf.len() + chunk.len() > limit {
            // Let the oversized buffer go now, not when the caller reuses it.
            *buf = Vec::new();
            return Err(ReadError::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(())
}
