//! The `mde-poller` command line: parse, load the config, set up logging,
//! call into the library, and map every outcome to an exit status here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mde_poller::{commands, config, daemon, demo, logging};

/// Pulls Microsoft Defender for Endpoint alerts of many customer tenants into a SIEM.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "MDE_POLLER_CONFIG", default_value = "/etc/mde-poller/config.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: poll every enabled tenant until SIGTERM/SIGINT.
    Run,
    /// Poll every enabled tenant once and exit (1 if any failed).
    Once,
    /// Check the config, and per tenant the token, its claims and the API (1 if any failed).
    Check {
        /// The config checks alone, no network (for ExecStartPre/ExecReload).
        #[arg(long)]
        config_only: bool,
        /// One JSON array, an object per tenant.
        #[arg(long)]
        json: bool,
    },
    /// Print the admin-consent link a customer's Global Administrator opens.
    ConsentUrl,
    /// Show per tenant: last poll, last success, cursor, lag, alerts stored, last error.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon against the built-in simulator on loopback; no credentials needed.
    Demo {
        /// Stop after this long (e.g. 30s); without it, at Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
}

/// EX_CONFIG from sysexits.h: systemd's RestartPreventExitStatus keys on it.
const EX_CONFIG: u8 = 78;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Demo { duration } = cli.command {
        return exit(demo::run(duration).await.map(|()| true));
    }
    let settings = match config::load(&cli.config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mde-poller: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let log = logging::init_with_warnings(&settings);
    let outcome = match cli.command {
        Command::Run => daemon::run(&cli.config, settings, Some(log), daemon::termination()).await.map(|()| true),
        Command::Once => daemon::once(&settings, daemon::termination()).await,
        Command::Check { config_only: true, .. } => Ok(println!("{}", commands::config_ok(&settings))).map(|()| true),
        Command::Check { json, .. } => commands::check(&settings).await.map(|results| {
            print!("{}", commands::check_report(&results, json));
            results.iter().all(|r| r.ok)
        }),
        Command::ConsentUrl => commands::consent_report(&settings).map(|text| print!("{text}")).map(|()| true),
        Command::Status { json } => commands::status(&settings).map(|rows| print!("{}", commands::status_report(&rows, json))).map(|()| true),
        Command::Demo { .. } => unreachable!("handled above"),
    };
    exit(outcome)
}

fn exit(outcome: anyhow::Result<bool>) -> ExitCode {
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            tracing::error!(event = "fatal", error = format!("{e:#}"), "stopping");
            eprintln!("mde-poller: {e:#}");
            ExitCode::from(1)
        }
    }
}
