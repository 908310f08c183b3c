//! Configuration: the TOML file and `MDE_POLLER_*` variables, layered,
//! checked and resolved into [`Settings`] (secrets read, certificates and the
//! CA bundle parsed, cloud presets applied, relative paths made absolute).
//!
//! Where each concern lives:
//! - [`raw`]: the file as written: every key, its default and its operator doc.
//! - [`layers`]: defaults → file → environment (figment), which layer set a
//!   key, and serde's errors turned into problems.
//! - [`check`]: every value checked, each problem named by its dotted key.
//! - [`credentials`]: client secrets (inline, file, systemd credential) and
//!   certificates.
//! - [`tenants`]: `[tenants.NAME]` resolved against `[app]` and the cloud.
//! - [`cloud`]: the hosts per cloud and the rules for an endpoint URL.
//! - [`settings`]: the resolved types the rest of the daemon uses.
//!
//! CONTRACT (other modules use these resolved types; keep their shape):
//! `load(path) -> Result<Settings, ConfigError>`; `Settings`, `TenantSettings`,
//! `Credential`, `PollSettings`, `StoreSettings`, `OutputSettings`,
//! `OutputFormat`, `OutputTarget`, `LogSettings`, `LogFormat`, `HttpSettings`.

mod check;
mod cloud;
mod credentials;
mod layers;
mod raw;
mod settings;
pub(crate) mod tenants;

use std::path::{Path, PathBuf};

// Named by the contract above; since the scheduler compares credentials
// through `Credential::digest`, only the tests name it here.
#[allow(unused_imports)]
pub(crate) use crate::auth::Credential;
pub use settings::{
    HttpSettings, LogFormat, LogSettings, OutputFormat, OutputTarget, PollSettings, Settings,
    TenantSettings,
};

/// Every problem found in one config, each naming its key.
#[derive(Debug, thiserror::Error)]
#[error("config error in {}:\n{}", file.display(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub file: PathBuf,
    pub(crate) problems: Vec<Problem>,
}

/// One problem: the dotted key (or `(file)` for file-level problems) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl ConfigError {
    /// The problem about `key`, if any (handy in tests and `check --json`).
    #[cfg(test)]
    pub(crate) fn problem(&self, key: &str) -> Option<&Problem> {
        self.problems.iter().find(|p| p.key == key)
    }
}

/// The key used for problems of the file as a whole (missing, unreadable,
/// not TOML).
const FILE_KEY: &str = "(file)";

/// Loads, layers, validates and resolves the configuration at `path`.
///
/// Layers, later winning: built-in defaults, the TOML file (which must
/// exist), then `MDE_POLLER_*` environment variables (`__` separates keys).
/// Every problem found is returned at once, each naming its dotted key.
/// Secret files, credentials, certificates and the CA bundle are read here;
/// nothing touches the network, so this is what `check --config-only` runs.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let file = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let fail = |problems| ConfigError {
        file: file.clone(),
        problems,
    };
    if let Err(message) = check::readable_file(&file) {
        return Err(fail(vec![Problem {
            key: FILE_KEY.into(),
            message,
        }]));
    }
    let (layers, merged) = layers::Layers::read(&file).map_err(fail)?;
    let mut checker = check::Checker::new(&file, &layers);
    let raw = layers.deserialize(merged, &mut checker);
    let settings = checker.resolve(&raw);
    match settings {
        Some(mut settings) if checker.problems.is_empty() => {
            settings.warnings = checker.warnings;
            Ok(settings)
        }
        _ => Err(fail(checker.problems)),
    }
}

#[cfg(test)]
mod tests;
