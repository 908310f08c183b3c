//! The `[metrics]` HTTP server: `GET /metrics` (the registry in the OpenMetrics
//! text format) and `GET /healthz` (200 while the scheduler's heartbeat is
//! fresh, 503 when it is not: the signal that feeds the systemd watchdog).
//!
//! Prometheus asks for OpenMetrics and gets the registry's own encoding.
//! Anything else (curl, `promtool check metrics`, older scrapers) gets the
//! Prometheus text format 0.0.4, which prometheus-client cannot write yet
//! (prometheus/client_rust#51): [`prometheus_text`] renames each counter's
//! `# HELP`/`# TYPE` to its `_total` samples and drops `# EOF`, the only
//! differences for the metric types used here.
//!
//! hyper's own HTTP/1 server rather than axum: hyper is in every build
//! already (reqwest's client), axum only with the simulator, and two fixed
//! routes need no router.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Metrics;

/// What OpenMetrics scrapers ask for and Prometheus parses.
pub(crate) const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The classic Prometheus text format.
pub(crate) const CONTENT_TYPE_PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A request that has not sent its head by then is dropped, so an idle or
/// slow client cannot hold a connection for ever.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long ago the scheduler last made progress.
pub(crate) type Heartbeat = Arc<dyn Fn() -> Duration + Send + Sync>;

/// What `/healthz` judges by.
#[derive(Clone)]
pub struct Health {
    pub heartbeat: Heartbeat,
    /// Silence longer than this is a stall (503).
    pub stale_after: Duration,
}

impl Health {
    /// `Err(silence)` when the heartbeat is older than `stale_after`.
    pub(crate) fn check(&self) -> Result<(), Duration> {
        let silence = (self.heartbeat)();
        if silence <= self.stale_after {
            Ok(())
        } else {
            Err(silence)
        }
    }
}

/// Binds `addr`; port 0 picks a free port (see `local_addr`).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `metrics` and `health` on `listener` until `cancel`.
pub fn spawn(
    listener: TcpListener,
    metrics: &'static Metrics,
    health: Health,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    // Out of file descriptors or a reset before accept: the
                    // next connection may fare better; do not spin.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let health = health.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let health = health.clone();
                    async move { Ok::<_, Infallible>(answer(&req, metrics, &health)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    _ = cancel.cancelled() => {}
                }
            });
        }
    })
}

fn answer(req: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => {
            let openmetrics = req
                .headers()
                .get_all(hyper::header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            let (body, content_type) = if openmetrics {
                (metrics.encode(), CONTENT_TYPE_OPENMETRICS)
            } else {
                (prometheus_text(&metrics.encode()), CONTENT_TYPE_PROMETHEUS)
            };
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        "/healthz" => match health.check() {
            Ok(()) => text(StatusCode::OK, "ok\n".into()),
            Err(silence) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "stalled: the scheduler made no progress for {} s\n",
                    silence.as_secs()
                ),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The registry's OpenMetrics text as Prometheus text format 0.0.4: a
/// counter's family is named for its `_total` samples there, and there is
/// no `# EOF`. Gauges and histograms are written alike in both.
pub(crate) fn prometheus_text(openmetrics: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let counter = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"));
        if let Some(name) = counter {
            let help = format!("# HELP {name} ");
            if let Some(last) = out.last_mut().filter(|l| l.starts_with(&help)) {
                *last = format!("# HELP {name}_total {}", &last[help.len()..]);
            }
            out.push(format!("# TYPE {name}_total counter"));
        } else {
            out.push(line.to_owned());
        }
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::prometheus_text;

    #[test]
    fn counters_are_named_for_their_samples_in_the_prometheus_format() {
        let openmetrics = "# HELP x_polls Polls.\n# TYPE x_polls counter\nx_polls_total{outcome=\"ok\"} 3\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n# EOF\n";
        assert_eq!(
            prometheus_text(openmetrics),
            "# HELP x_polls_total Polls.\n# TYPE x_polls_total counter\nx_polls_total{outcome=\"ok\"} 3\n# HELP x_up Up.\n# TYPE x_up gauge\nx_up 1\n"
        );
    }
}
