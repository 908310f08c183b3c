//! The command line's shape: global options and the commands, with the help
//! text an operator reads. `main.rs` parses it and dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Pulls Microsoft Defender for Endpoint alerts of many customer tenants into a SIEM.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        long,
        global = true,
        env = "MDE_POLLER_CONFIG",
        default_value = "/etc/mde-poller/config.toml"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Compare per tenant the alert versions the API holds with those emitted (1 if any missing).
    ///
    /// Reads the store read-only and takes no lock, so it runs beside the
    /// daemon. `--repair` emits the missing versions through the normal
    /// output and needs the store to itself: stop the daemon first (or let
    /// its `[audit]` repair on its own).
    Audit {
        /// How far back to compare, e.g. 7d, 36h (clamped to store.retention
        /// and to how far the tenant's first poll reached).
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        since: std::time::Duration,
        /// Only this tenant (its [tenants.NAME] key).
        #[arg(long)]
        tenant: Option<String>,
        /// Emit the missing versions (new or update, as a poll would).
        #[arg(long)]
        repair: bool,
        /// One JSON array, an object per tenant.
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon against the built-in simulator on loopback; no credentials needed.
    #[cfg(feature = "sim")]
    Demo {
        /// Stop after this long (e.g. 30s); without it, at Ctrl-C.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
    },
}
