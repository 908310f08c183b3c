//! How `[app]` or a tenant proves the app's identity: a client secret (a
//! systemd credential, a file, the environment or inline, in that order of
//! preference) or a certificate, read and checked here once so that `auth`
//! never reads a file. Messages name files, never their contents.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::SecretString;

use super::check::Checker;
use crate::auth::{ClientCertificate, Credential};

/// Set by systemd for a unit with `LoadCredential=`.
pub(super) const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";
/// The systemd credential `[app]` uses when it names no secret of its own.
pub(super) const APP_CREDENTIAL: &str = "client-secret";
/// `client-secret-<tenant>`: a tenant naming no secret of its own uses it.
pub(super) const TENANT_CREDENTIAL_PREFIX: &str = "client-secret-";

/// The credential keys of one level: `[app]` or one tenant.
pub(super) struct Sources<'a> {
    /// `app` or `tenants.NAME`.
    pub(super) prefix: &'a str,
    pub(super) client_secret: Option<&'a str>,
    pub(super) client_secret_file: Option<&'a str>,
    pub(super) client_secret_credential: Option<&'a str>,
    pub(super) certificate_file: Option<&'a str>,
    pub(super) legacy_rs256: bool,
}

impl Sources<'_> {
    /// Whether this level names a credential at all.
    pub(super) fn any(&self) -> bool {
        self.client_secret.is_some()
            || self.client_secret_file.is_some()
            || self.client_secret_credential.is_some()
            || self.certificate_file.is_some()
    }
}

fn credentials_dir() -> Option<PathBuf> {
    std::env::var_os(CREDENTIALS_DIRECTORY)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

impl Checker<'_> {
    /// The credential this level names (`None`: a problem is recorded, or
    /// [`Sources::any`] is false). A certificate excludes secrets.
    pub(super) fn credential(&mut self, s: &Sources) -> Option<Credential> {
        let p = s.prefix;
        let secret_keys: Vec<String> = [
            (
                "client_secret_credential",
                s.client_secret_credential.is_some(),
            ),
            ("client_secret_file", s.client_secret_file.is_some()),
            ("client_secret", s.client_secret.is_some()),
        ]
        .into_iter()
        .filter(|(_, given)| *given)
        .map(|(k, _)| format!("{p}.{k}"))
        .collect();
        if let Some(cert) = s.certificate_file {
            let key = format!("{p}.certificate_file");
            if !secret_keys.is_empty() {
                self.problem(
                    &key,
                    format!(
                        "give either a certificate or a client secret, not both (also set: {})",
                        secret_keys.join(", ")
                    ),
                );
                return None;
            }
            return self.certificate(&key, cert, s.legacy_rs256);
        }
        if let [used, ignored @ ..] = secret_keys.as_slice() {
            for key in ignored {
                self.warnings
                    .push(format!("{key} is ignored: {used} takes precedence"));
            }
        }
        let secret = if let Some(name) = s.client_secret_credential {
            self.read_credential(&format!("{p}.client_secret_credential"), name)
        } else if let Some(file) = s.client_secret_file {
            let key = format!("{p}.client_secret_file");
            let path = self.path(&key, file)?;
            self.read_secret(&key, &path)
        } else {
            self.direct_secret(p, s.client_secret?)
        };
        secret.map(Credential::Secret)
    }

    /// Parsed now, so a half-written PEM or an encrypted key is a config
    /// error (exit 78, and a rejected reload) rather than a tenant that
    /// silently stops polling; and parsed once: the result is shared.
    fn certificate(&mut self, key: &str, text: &str, legacy_rs256: bool) -> Option<Credential> {
        let path = self.path(key, text)?;
        let pem = self.read_file(key, &path)?;
        let certificate = ClientCertificate::from_pem(&pem, &path, legacy_rs256)
            .map_err(|e| self.problem(key, e.to_string()))
            .ok()?;
        self.warn_if_shared(key, &path);
        Some(Credential::Certificate(Arc::new(certificate)))
    }

    fn warn_if_shared(&mut self, key: &str, path: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(md) = std::fs::metadata(path) {
            let mode = md.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                self.warnings.push(format!(
                    "{key}: {} holds a secret and is accessible by group or others (mode {mode:04o}); chmod 600 it",
                    path.display()
                ));
            }
        }
    }

    /// Reads a secret file; trailing whitespace (the newline editors add) is
    /// not part of the secret.
    pub(super) fn read_secret(&mut self, key: &str, path: &Path) -> Option<SecretString> {
        use secrecy::zeroize::Zeroize;
        let mut bytes = self.read_file(key, path)?;
        self.warn_if_shared(key, path);
        let secret = match std::str::from_utf8(&bytes).map(str::trim_end) {
            Ok("") => {
                self.problem(key, format!("{} is empty", path.display()));
                None
            }
            Ok(secret) => Some(SecretString::from(secret)),
            Err(_) => {
                self.problem(key, format!("{} is not UTF-8 text", path.display()));
                None
            }
        };
        bytes.zeroize();
        secret
    }

    fn read_credential(&mut self, key: &str, name: &str) -> Option<SecretString> {
        let name = name.trim();
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            self.problem(
                key,
                format!("{name:?} is not a credential name (the NAME of LoadCredential=NAME:...)"),
            );
            return None;
        }
        let Some(dir) = credentials_dir() else {
            self.problem(
                key,
                format!(
                    "names the systemd credential {name:?}, but {CREDENTIALS_DIRECTORY} is not set \
                     (systemd sets it for a unit with LoadCredential={name}:...)"
                ),
            );
            return None;
        };
        let path = dir.join(name);
        if !path.exists() {
            self.problem(
                key,
                format!(
                    "credential {name:?} is not in {CREDENTIALS_DIRECTORY} ({}); add LoadCredential={name}:... to the unit",
                    dir.display()
                ),
            );
            return None;
        }
        self.read_secret(key, &path)
    }

    /// The optional systemd credential `name`, used by convention when a
    /// level names no credential of its own.
    pub(super) fn implicit_credential(&self, name: &str) -> Option<PathBuf> {
        let path = credentials_dir()?.join(name);
        path.is_file().then_some(path)
    }

    /// `client_secret` from the environment or written in the file.
    fn direct_secret(&mut self, prefix: &str, value: &str) -> Option<SecretString> {
        let key = format!("{prefix}.client_secret");
        if self.layers.in_file(&key) {
            self.warnings.push(format!(
                "{key} is written inline in {}; prefer client_secret_file or client_secret_credential (a systemd credential)",
                self.file().display()
            ));
        }
        // figment parses variable values ("0123" becomes the number 123), so
        // a secret from the environment is taken as written.
        let text = self.layers.env_value(&key).unwrap_or(value);
        let secret = text.trim_end();
        if secret.is_empty() {
            self.problem(&key, "is empty");
            return None;
        }
        Some(SecretString::from(secret))
    }
}
