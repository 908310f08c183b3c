//! Diagnostics: `tracing` events on stderr, JSON or text, with a level that a
//! reload can change. Alert records never go here; they go to the output.

use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogFormat, LogSettings, Settings};

/// Changes the level after start-up (SIGHUP).
#[derive(Clone)]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
}

fn filter(level: &str) -> EnvFilter {
    // RUST_LOG, when set, wins over the config file.
    // tokio-cron-scheduler narrates its internals at INFO: quieter by default.
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},tokio_cron_scheduler=warn")))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber. Call once.
pub(crate) fn init(settings: &LogSettings) -> LogHandle {
    let (filter_layer, handle) = reload::Layer::new(filter(&settings.level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    type Base = Layered<reload::Layer<EnvFilter, Registry>, Registry>;
    let fmt: Box<dyn Layer<Base> + Send + Sync> = match settings.format {
        LogFormat::Json => Box::new(fmt.json().flatten_event(true).with_current_span(false)),
        LogFormat::Text => Box::new(fmt.with_ansi(false)),
    };
    let _ = tracing_subscriber::registry()
        .with(filter_layer)
        .with(fmt)
        .try_init();
    LogHandle { filter: handle }
}

/// Installs the subscriber for `settings` and logs the config's warnings.
pub fn init_with_warnings(settings: &Settings) -> LogHandle {
    let handle = init(&settings.log);
    for warning in &settings.warnings {
        crate::events::config_warning(warning);
    }
    handle
}

impl LogHandle {
    pub(crate) fn set_level(&self, level: &str) {
        if let Err(e) = self.filter.reload(filter(level)) {
            crate::events::log_level_unchanged(&e);
        }
    }
}
