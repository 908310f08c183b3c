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
use crate::logging::LogHandle;
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
    let mut scheduler = Scheduler::start(&settings, env.clone(), observer.clone()).await?;
    let background = CancellationToken::new();
    observer.spawn_watchdog(background.clone());
    spawn_pruning(env.clone(), settings.store.retention, background.clone());
    notify::ready();
    tracing::info!(
        event = "daemon_started",
        tenants = settings.enabled_tenants().count(),
        config = %config_path.display(),
        "polling"
    );

    let mut current = settings;
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
    tracing::info!(
        event = "daemon_stopping",
        "stopping: no new polls; finishing the pages in flight"
    );
    background.cancel();
    scheduler.shutdown(SHUTDOWN_GRACE).await;
    tracing::info!(event = "daemon_stopped", "stopped");
    Ok(())
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
            tracing::error!(event = "reload_failed", error = %e, "the new config is invalid; the running config stays in force");
            // Rotation still happens on a bad reload: logrotate sent this HUP.
            reopen_output(env);
            return;
        }
    };
    for w in &new.warnings {
        tracing::warn!(event = "config_warning", "{w}");
    }
    if let Some(log) = log {
        log.set_level(&new.log.level);
    }
    if new.log.format != current.log.format {
        tracing::warn!(
            event = "restart_needed",
            key = "log.format",
            "log.format changes at the next restart"
        );
    }
    if new.store.path != current.store.path {
        tracing::warn!(
            event = "restart_needed",
            key = "store.path",
            "store.path changes at the next restart"
        );
    }
    if new.output != current.output {
        match Sink::open(&new.output.target) {
            Ok(sink) => {
                env.emitter.replace(sink, new.output.format);
                tracing::info!(
                    event = "output_changed",
                    "output now {:?}",
                    new.output.target
                );
            }
            Err(e) => {
                tracing::error!(event = "output_open_failed", error = %e, "cannot open the new output; keeping the old one");
            }
        }
    } else {
        reopen_output(env);
    }
    match scheduler.reload(&new).await {
        Ok(()) => {
            tracing::info!(
                event = "reloaded",
                tenants = new.enabled_tenants().count(),
                "config reloaded"
            );
            *current = new;
        }
        Err(e) => {
            tracing::error!(event = "reload_failed", error = %e, "could not apply the new config")
        }
    }
}

fn reopen_output(env: &PollEnv) {
    if let Err(e) = env.emitter.reopen() {
        tracing::error!(event = "output_reopen_failed", error = %e, "cannot reopen the output file; still writing to the old one");
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
                Ok((alerts, polls)) if alerts + polls > 0 => {
                    tracing::info!(
                        event = "store_pruned",
                        alerts,
                        polls,
                        "forgot rows older than store.retention"
                    )
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(event = "store_prune_failed", error = %e, "pruning failed; will try again")
                }
            }
        }
    });
}

/// `once`: every enabled tenant polled one time. True when all succeeded.
pub async fn once(settings: &Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<bool> {
    let _lock = StoreLock::acquire(&settings.store.path)?;
    let env = open_env(settings).await?;
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
    Ok(results.iter().all(|(_, r)| r.is_ok()))
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
