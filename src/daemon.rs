//! The daemon's life: open the store and the output, start the scheduler,
//! reload on SIGHUP, stop on the `shutdown` future, tell systemd each step.
//!
//! Shutdown is a parameter: production passes SIGTERM/SIGINT, `demo` and tests
//! pass their own future.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Settings};
use crate::events;
use crate::logging::LogHandle;
use crate::metrics::server;
use crate::notify::{self, SystemdObserver};
use crate::output::Sink;
use crate::poll::{Emitter, PollEnv};
use crate::scheduler::{self, Scheduler};
use crate::store::Store;
use crate::storelock::StoreLock;
use crate::timestamp::Timestamp;

/// How long polls get to finish after SIGTERM before they are abandoned;
/// well inside systemd's default 90 s and the 10 s we promise.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Without a systemd watchdog, `/healthz` calls a heartbeat (it beats every
/// second) older than this a stall.
const HEALTHZ_STALE_AFTER: Duration = Duration::from_secs(30);

/// Threads for blocking work: SQLite (one connection behind a lock, so more
/// would only wait for it), file writes and DNS. Tokio's default of 512 let
/// thousands of steady tenants keep dozens of threads alive, each with its
/// stack and malloc arena resident (docs/SCALE.md).
const BLOCKING_THREADS: usize = 4;

/// The runtime every command runs on.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
}

/// Opens the store and the output named by `settings`.
pub async fn open_env(settings: &Settings) -> anyhow::Result<PollEnv> {
    let path = settings.store.path.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&path))
        .await
        .expect("store open panicked")
        .with_context(|| format!("opening the database {}", settings.store.path.display()))?;
    let sink = Sink::open(&settings.output.target)
        .with_context(|| format!("opening the output {:?}", settings.output.target))?;
    Ok(PollEnv {
        store: Arc::new(store),
        emitter: Arc::new(Emitter::new(sink, settings.output.format)),
        settings: settings.poll.clone(),
    })
}

/// `run`: polls every enabled tenant on its schedule until `shutdown` resolves.
pub async fn run(
    config_path: &Path,
    settings: Settings,
    log: Option<LogHandle>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // First of all: SIGHUP's default action is to end the process, and
    // logrotate or an operator may send one at any moment after the start.
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let _lock = StoreLock::acquire(&settings.store.path)?;
    let env = open_env(&settings).await?;
    let observer = SystemdObserver::default();
    let background = CancellationToken::new();
    serve_metrics(&settings, &env, &observer, background.clone()).await?;
    let mut scheduler = Scheduler::start(&settings, env.clone(), observer.clone()).await?;
    observer.spawn_watchdog(background.clone());
    spawn_pruning(env.clone(), settings.store.retention, background.clone());
    notify::ready();
    events::daemon_started(settings.enabled_tenants().count(), config_path);
    source_notices(&settings);

    let mut current = without_tenants(settings);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = hangup.recv() => {
                notify::reloading();
                reload(config_path, &mut current, &env, &mut scheduler, log.as_ref()).await;
                notify::ready();
            }
        }
    }

    notify::stopping();
    events::daemon_stopping();
    background.cancel();
    scheduler.shutdown(SHUTDOWN_GRACE).await;
    events::daemon_stopped();
    Ok(())
}

/// The settings a reload compares the new ones with, without the tenants:
/// the scheduler holds what it built from them (their pollers), and a
/// reload diffs against those, so a second copy of every tenant's names,
/// URLs and secret would only take memory (about 1 KB a tenant).
fn without_tenants(mut settings: Settings) -> Settings {
    settings.tenants = Vec::new();
    settings
}

/// Applies a new config, or keeps the running one if the new one is bad.
async fn reload(
    path: &Path,
    current: &mut Settings,
    env: &PollEnv,
    scheduler: &mut Scheduler,
    log: Option<&LogHandle>,
) {
    let path_owned: PathBuf = path.to_owned();
    let loaded = tokio::task::spawn_blocking(move || config::load(&path_owned))
        .await
        .expect("config load panicked");
    let new = match loaded {
        Ok(new) => new,
        Err(e) => {
            events::reload_failed(&e);
            // Rotation still happens on a bad reload: logrotate sent this HUP.
            reopen_output(env);
            return;
        }
    };
    for w in &new.warnings {
        events::config_warning(w);
    }
    if let Some(log) = log {
        log.set_level(&new.log.level);
    }
    if new.log.format != current.log.format {
        events::restart_needed("log.format");
    }
    if new.store.path != current.store.path {
        events::restart_needed("store.path");
    }
    if new.metrics != current.metrics {
        events::restart_needed("metrics.listen");
    }
    if new.output != current.output {
        match Sink::open(&new.output.target) {
            Ok(sink) => {
                env.emitter.replace(sink, new.output.format);
                events::output_changed(&new.output.target);
            }
            Err(e) => {
                events::output_open_failed(&e);
            }
        }
    } else {
        reopen_output(env);
    }
    match scheduler.reload(&new).await {
        Ok(()) => {
            crate::metrics::global().configured(&new);
            events::reloaded(new.enabled_tenants().count());
            source_notices(&new);
            *current = without_tenants(new);
        }
        Err(e) => events::reload_failed(&e),
    }
}

/// The metrics as the store left them (a restart keeps each tenant's last
/// success, cursor and failures), served on `[metrics] listen` if set, with
/// `/healthz` judged by the scheduler's heartbeat, as the watchdog is.
async fn serve_metrics(
    settings: &Settings,
    env: &PollEnv,
    observer: &SystemdObserver,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let registry = crate::metrics::global();
    // A database that cannot be read fails the first poll loudly; the
    // gauges then fill in as polls end.
    if let Ok(rows) = crate::poll::blocking(&env.store, |s| s.status()).await {
        registry.seed(settings, &rows);
    }
    registry.configured(settings);
    let Some(addr) = settings.metrics.listen else {
        return Ok(());
    };
    let listener = server::bind(addr)
        .await
        .with_context(|| format!("metrics.listen: cannot listen on {addr}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    events::metrics_listening(&bound);
    if !addr.ip().is_loopback() {
        events::metrics_exposed(&bound);
    }
    let beat = observer.clone();
    let health = server::Health {
        heartbeat: Arc::new(move || beat.silence()),
        stale_after: SystemdObserver::watchdog_period().unwrap_or(HEALTHZ_STALE_AFTER),
    };
    server::spawn(listener, registry, health, cancel);
    Ok(())
}

fn reopen_output(env: &PollEnv) {
    if let Err(e) = env.emitter.reopen() {
        events::output_reopen_failed(&e);
    }
}

/// Forgets alerts not updated for `retention`, now and every hour.
fn spawn_pruning(env: PollEnv, retention: Duration, cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = every.tick() => {}
            }
            let older_than = Timestamp::now().saturating_sub(retention);
            match crate::poll::blocking(&env.store, move |s| s.prune(older_than)).await {
                Ok((alerts, polls)) if alerts + polls > 0 => events::store_pruned(alerts, polls),
                Ok(_) => {}
                Err(e) => events::store_prune_failed(&e),
            }
        }
    });
}

/// Said once at start-up and at each reload: the tenants still on the MDE API
/// (it stops after 1 February 2027), in one line, and a `page_size` Graph
/// tenants cannot use as it is.
pub(crate) fn source_notices(settings: &Settings) {
    use crate::output::AlertSource;
    let mut graph = 0;
    let mut mde = Vec::new();
    for t in settings.enabled_tenants() {
        match t.source {
            AlertSource::Mde => mde.push(t.name.as_str()),
            AlertSource::Graph => graph += 1,
        }
    }
    events::mde_retirement_notice(&mde);
    for t in &mde {
        events::mde_retirement_tenant(t);
    }
    let size = settings.poll.page_size;
    let top = crate::poll::page_top(AlertSource::Graph, size);
    if graph > 0 && top < size {
        events::graph_page_size_clamped(size, top, graph);
    }
}

/// `once`: every enabled tenant polled one time. True when all succeeded.
pub async fn once(settings: &Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<bool> {
    let _lock = StoreLock::acquire(&settings.store.path)?;
    let env = open_env(settings).await?;
    source_notices(settings);
    let cancel = CancellationToken::new();
    let polls = scheduler::poll_all_once(settings, env, &cancel);
    tokio::pin!(polls);
    let results = tokio::select! {
        r = &mut polls => r?,
        _ = shutdown => {
            // Abandon requests in flight, but let pages being written finish.
            cancel.cancel();
            polls.await?
        }
    };
    Ok(results.values().all(|h| *h == scheduler::Health::Ok))
}

/// Resolves at SIGTERM or SIGINT. The handlers are installed by this call,
/// not when the future is first polled, so a signal during start-up is not
/// fatal but stops the daemon cleanly once it is running.
pub fn termination() -> impl Future<Output = ()> + Send {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let (Ok(mut term), Ok(mut int)) = (term, int) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}

/// Takes SIGHUP over from its default action (ending the process) for the
/// life of the process; `run` then listens to it. Call as early as possible.
pub fn hold_hangup() {
    // tokio never gives a signal back to its default action once registered.
    let _ = signal(SignalKind::hangup());
}
