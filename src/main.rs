//! The `mde-poller` command line: parse, load the config, set up logging,
//! call into the library, and map every outcome to an exit status here.

use std::process::ExitCode;

use clap::Parser;
use mde_poller::cli::{Cli, Command};
#[cfg(feature = "sim")]
use mde_poller::demo;
use mde_poller::{commands, config, daemon, logging};

/// EX_CONFIG from sysexits.h: systemd's RestartPreventExitStatus keys on it.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    match daemon::runtime() {
        Ok(rt) => rt.block_on(run()),
        Err(e) => exit(
            Err(anyhow::Error::from(e).context("starting the runtime")),
            false,
        ),
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Run = cli.command {
        // Before the config is read: a SIGHUP this early is not fatal.
        daemon::hold_hangup();
    }
    #[cfg(feature = "sim")]
    if let Command::Demo { duration } = cli.command {
        return exit(demo::run(duration).await.map(|()| true), false);
    }
    let settings = match config::load(&cli.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mde-poller: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let log = logging::init_with_warnings(&settings);
    // The daemon's fatal error goes to its log (journald); a command run by
    // hand says it once, in plain words, on stderr.
    let daemon = matches!(cli.command, Command::Run);
    let outcome = match cli.command {
        Command::Run => daemon::run(&cli.config, settings, Some(log), daemon::termination())
            .await
            .map(|()| true),
        Command::Once => daemon::once(&settings, daemon::termination()).await,
        Command::Check {
            config_only: true, ..
        } => printed(Ok(commands::config_ok(&settings))),
        Command::Check { json, .. } => commands::check(&settings).await.map(|results| {
            print!("{}", commands::check_report(&results, json));
            results.iter().all(|r| r.ok)
        }),
        Command::ConsentUrl => printed(commands::consent_report(&settings)),
        Command::Status { json } => {
            printed(commands::status(&settings).map(|rows| commands::status_report(&rows, json)))
        }
        Command::Audit {
            since,
            tenant,
            repair,
            json,
        } => {
            let opts = mde_poller::audit::Options {
                since,
                tenant,
                repair,
            };
            mde_poller::audit::run(&settings, &opts, json, daemon::termination()).await
        }
        #[cfg(feature = "sim")]
        Command::Demo { .. } => unreachable!("handled above"),
    };
    exit(outcome, daemon)
}

/// Prints a command's report; the command succeeded if it has one.
fn printed(report: anyhow::Result<String>) -> anyhow::Result<bool> {
    report.map(|text| print!("{text}")).map(|()| true)
}

fn exit(outcome: anyhow::Result<bool>, daemon: bool) -> ExitCode {
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            if daemon {
                mde_poller::events::fatal(&e);
            } else {
                eprintln!("mde-poller: {e:#}");
            }
            ExitCode::from(1)
        }
    }
}
