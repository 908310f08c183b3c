//! Every value checked and turned into its resolved type, each problem named
//! by its dotted key: `[poll]`, `[store]`, `[output]`, `[log]`, `[http]`, and
//! the checks several sections share (durations, paths, files). Credentials
//! and tenants have their own files.
//!
//! A check that fails records a problem and returns `None`; `load` returns
//! the problems whenever there is one, so "absent" and "already reported"
//! need no telling apart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::layers::{env_var_name, Layers};
use super::raw::{
    RawApp, RawAudit, RawConfig, RawHttp, RawLog, RawMetrics, RawOutput, RawPoll, RawStore,
};
use super::settings::{
    AuditSettings, CaBundle, HttpSettings, LogFormat, LogSettings, MetricsSettings, OutputFormat,
    OutputSettings, OutputTarget, PollSettings, Settings, StoreSettings,
};
use super::Problem;

pub(super) struct Checker<'a> {
    file: &'a Path,
    /// The config file's folder: relative paths resolve against it.
    base: PathBuf,
    pub(super) layers: &'a Layers,
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<String>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(file: &'a Path, layers: &'a Layers) -> Checker<'a> {
        Checker {
            file,
            base: file
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/")),
            layers,
            problems: Vec::new(),
            warnings: layers.malformed.clone(),
        }
    }

    pub(super) fn file(&self) -> &Path {
        self.file
    }

    /// Records a problem; when an environment variable set this very key,
    /// names it too, since the file is then not where to look.
    pub(super) fn problem(&mut self, key: &str, message: impl Into<String>) {
        let mut message = message.into();
        if self.layers.env_value(key).is_some() {
            let var = env_var_name(key);
            message.push_str(&format!(" (set by environment variable {var})"));
        }
        self.problems.push(Problem {
            key: key.to_owned(),
            message,
        });
    }

    /// The settings, or `None` when a part has a problem (recorded).
    pub(super) fn resolve(&mut self, raw: &RawConfig) -> Option<Settings> {
        let poll = self.poll(&raw.poll);
        let store = self.store(&raw.store, poll.as_ref());
        let output = self.output(&raw.output);
        let log = self.log(&raw.log);
        let http = self.http(&raw.http, &raw.app);
        let metrics = self.metrics(&raw.metrics);
        let audit = self.audit(&raw.audit);
        let tenants = self.tenants(raw);
        if raw.tenants.is_empty() {
            self.warnings
                .push("no [tenants.NAME] table: there is nothing to poll".into());
        }
        Some(Settings {
            source: self.file.to_path_buf(),
            poll: poll?,
            store: store?,
            output: output?,
            log: log?,
            http: http?,
            metrics: metrics?,
            audit: audit?,
            tenants,
            warnings: Vec::new(),
        })
    }

    fn metrics(&mut self, raw: &RawMetrics) -> Option<MetricsSettings> {
        let Some(text) = &raw.listen else {
            return Some(MetricsSettings::default());
        };
        match text.trim().parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(MetricsSettings { listen: Some(addr) }),
            Err(_) => {
                self.problem(
                    "metrics.listen",
                    format!("{text:?} is not an address and port; write e.g. \"127.0.0.1:9464\" (or \"[::1]:9464\"), or remove the key to serve no metrics"),
                );
                None
            }
        }
    }

    fn audit(&mut self, raw: &RawAudit) -> Option<AuditSettings> {
        let window = self.positive_duration("audit.window", &raw.window);
        let every = match &raw.every {
            None => None,
            Some(text) => Some(self.positive_duration("audit.every", text)?),
        };
        Some(AuditSettings {
            every,
            window: window?,
        })
    }

    fn duration(&mut self, key: &str, text: &str) -> Option<Duration> {
        match humantime::parse_duration(text.trim()) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(
                    key,
                    format!("{text:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"24h\" or \"90d\""),
                );
                None
            }
        }
    }

    /// A duration that must be more than zero.
    fn positive_duration(&mut self, key: &str, text: &str) -> Option<Duration> {
        let d = self.duration(key, text)?;
        if d.is_zero() {
            self.problem(key, "must be more than 0");
            return None;
        }
        Some(d)
    }

    fn poll(&mut self, raw: &RawPoll) -> Option<PollSettings> {
        let interval = match self.duration("poll.interval", &raw.interval) {
            Some(d) if d < Duration::from_secs(1) => {
                self.problem(
                    "poll.interval",
                    format!("{:?} is under 1s; poll less often", raw.interval),
                );
                None
            }
            other => other,
        };
        let schedule = raw.schedule.as_deref().and_then(|s| self.schedule(s));
        let lookback = self.duration("poll.lookback", &raw.lookback);
        let first_lookback = self.positive_duration("poll.first_lookback", &raw.first_lookback);
        let page_size = match u32::try_from(raw.page_size) {
            Ok(n) if (1..=10_000).contains(&n) => Some(n),
            _ => {
                self.problem(
                    "poll.page_size",
                    format!(
                        "{} is outside 1..=10000 (the API returns at most 10000 alerts per request)",
                        raw.page_size
                    ),
                );
                None
            }
        };
        let concurrency = match usize::try_from(raw.concurrency) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                self.problem(
                    "poll.concurrency",
                    format!("{} tenants at once: must be at least 1", raw.concurrency),
                );
                None
            }
        };
        let timeout = self.positive_duration("poll.timeout", &raw.timeout);
        Some(PollSettings {
            interval: interval?,
            schedule,
            lookback: lookback?,
            first_lookback: first_lookback?,
            page_size: page_size?,
            concurrency: concurrency?,
            timeout: timeout?,
            expand_evidence: raw.expand_evidence,
        })
    }

    /// Checked with the parser the scheduler itself uses (tokio-cron-scheduler
    /// → croner, seconds required), so what passes here is what runs. The
    /// field count is checked first only for a friendlier message.
    fn schedule(&mut self, text: &str) -> Option<String> {
        let text = text.trim();
        let fields = text.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            self.problem(
                "poll.schedule",
                format!(
                    "{text:?} has {fields} fields; a schedule is a cron expression with seconds: \
                     \"sec min hour day-of-month month day-of-week\", e.g. \"0 */5 * * * *\""
                ),
            );
            return None;
        }
        let parsed = tokio_cron_scheduler::Job::new_async(text, |_, _| Box::pin(async {}));
        if parsed.is_err() {
            self.problem(
                "poll.schedule",
                format!(
                    "{text:?} is not a valid cron expression with seconds, e.g. \"0 */5 * * * *\""
                ),
            );
            return None;
        }
        Some(text.to_owned())
    }

    /// `poll` is `None` when `[poll]` has a problem of its own; the retention
    /// is then checked on its own.
    fn store(&mut self, raw: &RawStore, poll: Option<&PollSettings>) -> Option<StoreSettings> {
        let path = self.path("store.path", &raw.path);
        let retention = self.positive_duration("store.retention", &raw.retention)?;
        // The store forgets an alert after `retention`; a poll that re-reads
        // further back than that would find it unknown and emit it again as
        // new, on every restart. The farther of the two reaches is the
        // retention that works.
        let reach = poll.map(|p| {
            [
                ("poll.lookback", p.lookback),
                ("poll.first_lookback", p.first_lookback),
            ]
            .into_iter()
            .max_by_key(|(_, d)| *d)
            .expect("two reaches")
        });
        if let Some((key, reach)) = reach.filter(|(_, reach)| retention < *reach) {
            self.problem(
                "store.retention",
                format!(
                    "{:?} is shorter than {key} ({}): alerts the store forgot would be \
                     emitted again as new; make store.retention at least {key}",
                    raw.retention.trim(),
                    humantime::format_duration(reach)
                ),
            );
            return None;
        }
        Some(StoreSettings {
            path: path?,
            retention,
        })
    }

    fn output(&mut self, raw: &RawOutput) -> Option<OutputSettings> {
        let format = match raw.format.trim().to_ascii_lowercase().as_str() {
            "raw" => Some(OutputFormat::Raw),
            "ecs" => Some(OutputFormat::Ecs),
            "ocsf" => Some(OutputFormat::Ocsf),
            _ => {
                self.problem(
                    "output.format",
                    format!("{:?} is not one of raw, ecs, ocsf", raw.format),
                );
                None
            }
        };
        let target = if raw.path.trim() == "-" {
            Some(OutputTarget::Stdout)
        } else {
            self.path("output.path", &raw.path).map(OutputTarget::File)
        };
        Some(OutputSettings {
            format: format?,
            target: target?,
        })
    }

    fn log(&mut self, raw: &RawLog) -> Option<LogSettings> {
        let level = raw.level.trim().to_owned();
        let level = match tracing_subscriber::EnvFilter::try_new(&level) {
            Ok(_) if !level.is_empty() => Some(level),
            _ => {
                self.problem(
                    "log.level",
                    format!(
                        "{:?} is not a level (error, warn, info, debug, trace) or a tracing filter",
                        raw.level
                    ),
                );
                None
            }
        };
        let format = match raw.format.trim().to_ascii_lowercase().as_str() {
            "json" => Some(LogFormat::Json),
            "text" => Some(LogFormat::Text),
            _ => {
                self.problem(
                    "log.format",
                    format!("{:?} is not one of json, text", raw.format),
                );
                None
            }
        };
        Some(LogSettings {
            level: level?,
            format: format?,
        })
    }

    fn http(&mut self, raw: &RawHttp, app: &RawApp) -> Option<HttpSettings> {
        let ca_bundle = raw.ca_file.as_deref().and_then(|text| self.ca_bundle(text));
        let proxy = raw.proxy.as_deref().and_then(|text| self.proxy(text));
        let version = env!("CARGO_PKG_VERSION");
        let user_agent = match &app.partner {
            None => Some(format!("mde-poller/{version}")),
            Some(partner) => {
                let partner = partner.trim();
                let fine = !partner.is_empty()
                    && partner.chars().all(|c| c.is_ascii_graphic() && c != '/');
                if fine {
                    Some(format!("MdePartner-{partner}-MdePoller/{version}"))
                } else {
                    self.problem(
                        "app.partner",
                        format!(
                            "{partner:?} cannot go in a User-Agent: use a non-empty name without spaces or slashes"
                        ),
                    );
                    None
                }
            }
        };
        Some(HttpSettings {
            ca_bundle,
            proxy,
            user_agent: user_agent?,
        })
    }

    /// Parsed now, so a bad bundle is a config error (exit 78) rather than a
    /// failure at the first request, and a client is built without a read.
    fn ca_bundle(&mut self, text: &str) -> Option<CaBundle> {
        let key = "http.ca_file";
        let path = self.path(key, text)?;
        let pem = self.read_file(key, &path)?;
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certificates) if !certificates.is_empty() => Some(CaBundle {
                digest: xxhash_rust::xxh3::xxh3_64(&pem),
                path,
                certificates,
            }),
            _ => {
                self.problem(
                    key,
                    format!(
                        "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                        path.display()
                    ),
                );
                None
            }
        }
    }

    /// A proxy URL may carry a password, so it is never quoted back.
    fn proxy(&mut self, text: &str) -> Option<String> {
        let text = text.trim();
        match url::Url::parse(text) {
            Err(e) => {
                self.problem("http.proxy", format!("not a URL ({e})"));
                None
            }
            Ok(u) if !matches!(u.scheme(), "http" | "https") || u.host().is_none() => {
                self.problem(
                    "http.proxy",
                    "must be an http:// or https:// URL with a host, e.g. \"http://proxy.corp:3128\"",
                );
                None
            }
            Ok(_) => Some(text.to_owned()),
        }
    }

    /// A path from the config, made absolute against the config's folder.
    pub(super) fn path(&mut self, key: &str, text: &str) -> Option<PathBuf> {
        let text = text.trim();
        if text.is_empty() {
            self.problem(key, "is empty: give a path");
            return None;
        }
        let path = Path::new(text);
        Some(if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        })
    }

    /// The bytes of the file at `path`, or a problem under `key`.
    pub(super) fn read_file(&mut self, key: &str, path: &Path) -> Option<Vec<u8>> {
        let read = readable_file(path).and_then(|()| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        });
        read.map_err(|message| self.problem(key, message)).ok()
    }
}

/// The one check of a file the config names (the config file itself, secret
/// files, certificates, the CA bundle): it exists, is a regular file and can
/// be opened. The message names the path.
pub(super) fn readable_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{} does not exist", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        Ok(md) if !md.is_file() => Err(format!("{} is not a file", path.display())),
        Ok(_) => std::fs::File::open(path)
            .map(drop)
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
    }
}
