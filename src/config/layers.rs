//! The layers, later winning: built-in defaults, the TOML file, then the
//! `MDE_POLLER_*` environment (figment); which layer set a key, so that a
//! problem can name the variable behind it; and serde's errors turned into
//! problems that name their dotted key.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Tag, Value};
use figment::Figment;

use super::check::Checker;
use super::raw::RawConfig;
use super::{Problem, FILE_KEY};

/// Every environment variable with this prefix is a config key.
pub(super) const ENV_PREFIX: &str = "MDE_POLLER_";
/// The CLI's config-path variable: shares the prefix, but is not a key.
const CONFIG_PATH_VAR: &str = "MDE_POLLER_CONFIG";

/// figment's own mapping of the environment: prefix stripped
/// (case-insensitively), `__` → `.`, keys lower-cased.
fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX)
        .ignore(&[&CONFIG_PATH_VAR[ENV_PREFIX.len()..].to_ascii_lowercase()])
        .split("__")
}

/// The variable that sets `key`, as an operator writes it.
pub(super) fn env_var_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

pub(super) struct Layers {
    /// The TOML file alone, to tell file keys from environment keys (an
    /// unknown key in the file is an error, from the environment a warning).
    file: Dict,
    /// Defaults, file and environment merged.
    merged: Dict,
    /// `(dotted key, value as written)` of every variable figment reads.
    env: Vec<(String, String)>,
    /// Warnings about variables figment skips (an empty key segment).
    pub(super) malformed: Vec<String>,
}

impl Layers {
    /// Reads the file and the environment; a TOML syntax error is the one
    /// problem then.
    pub(super) fn read(file: &Path) -> Result<Layers, Vec<Problem>> {
        let file_dict = Figment::from(Toml::file_exact(file))
            .extract::<Dict>()
            .map_err(figment_problems)?;
        let env = env_provider();
        let merged = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::file_exact(file))
            .merge(env.clone())
            .extract::<Dict>()
            .map_err(figment_problems)?;
        let mut vars: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v))
            .collect();
        vars.sort();
        let malformed = std::env::vars_os()
            .filter_map(|(name, _)| {
                let name = name.to_string_lossy().trim().to_owned();
                let prefix = name.get(..ENV_PREFIX.len())?;
                let key = &name[ENV_PREFIX.len()..];
                let skipped = prefix.eq_ignore_ascii_case(ENV_PREFIX)
                    && !name.eq_ignore_ascii_case(CONFIG_PATH_VAR)
                    && key.split("__").any(str::is_empty);
                skipped
                    .then(|| format!("environment variable {name} matches no config key; ignored"))
            })
            .collect();
        Ok(Layers {
            file: file_dict,
            merged,
            env: vars,
            malformed,
        })
    }

    /// Whether the file itself sets `key` (dotted).
    pub(super) fn in_file(&self, key: &str) -> bool {
        let path: Vec<String> = key.split('.').map(String::from).collect();
        dict_get(&self.file, &path).is_some()
    }

    /// The value of the variable that sets exactly `key`, as written (figment
    /// parses values: "0123" would become the number 123).
    pub(super) fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The variables that set `key` or anything below it.
    fn env_vars_under<'a>(&'a self, key: &'a str) -> impl Iterator<Item = String> + 'a {
        self.env
            .iter()
            .filter(move |(k, _)| {
                k == key || (k.starts_with(key) && k.as_bytes().get(key.len()) == Some(&b'.'))
            })
            .map(|(k, _)| env_var_name(k))
    }

    /// The merged layers as [`RawConfig`], every error recorded in `checker`.
    ///
    /// serde stops at the first error; to report them all at once, the
    /// failing key is recorded and removed, and the rest is tried again (a
    /// removed key falls back to its default). Each round removes a key, so
    /// this ends.
    pub(super) fn deserialize(&self, checker: &mut Checker) -> RawConfig {
        let mut merged = self.merged.clone();
        self.drop_env_only_tenants(&mut merged, checker);
        loop {
            let value = Value::Dict(Tag::Default, merged.clone());
            let error = match value.deserialize::<RawConfig>() {
                Ok(raw) => return raw,
                Err(e) => e,
            };
            let mut path = error.path.clone();
            if let figment::error::Kind::UnknownField(field, _) = &error.kind {
                // figment's path usually ends with the field already.
                if path.last() != Some(field) {
                    path.push(field.clone());
                }
            }
            self.report(&path.join("."), &error.kind, checker);
            if !dict_remove(&mut merged, &path) {
                // The error is not about one key: report it and give up on
                // the rest of the file.
                return RawConfig::default();
            }
        }
    }

    fn report(&self, key: &str, kind: &figment::error::Kind, checker: &mut Checker) {
        use figment::error::Kind;
        let Kind::UnknownField(_, expected) = kind else {
            checker.problem(key, deserialize_message(kind));
            return;
        };
        let from_env: Vec<String> = self.env_vars_under(key).collect();
        if !self.in_file(key) && !from_env.is_empty() {
            for var in from_env {
                checker.warnings.push(format!(
                    "environment variable {var} matches no config key ({key}); ignored"
                ));
            }
        } else if expected.is_empty() {
            checker.problem(key, "unknown key");
        } else {
            checker.problem(
                key,
                format!("unknown key; expected one of: {}", expected.join(", ")),
            );
        }
    }

    /// A variable like `MDE_POLLER_TENANTS__TYPO__ENABLED=false` would
    /// otherwise create a tenant `typo` with no id: a tenant the file does not
    /// define, and whose id the environment does not give, matches no key.
    fn drop_env_only_tenants(&self, merged: &mut Dict, checker: &mut Checker) {
        let Some(Value::Dict(_, tenants)) = merged.get_mut("tenants") else {
            return;
        };
        tenants.retain(|name, _| {
            let key = format!("tenants.{name}");
            if self.in_file(&key) || self.env_value(&format!("{key}.tenant_id")).is_some() {
                return true;
            }
            for var in self.env_vars_under(&key) {
                checker.warnings.push(format!(
                    "environment variable {var} names tenant {name:?}, which the config file does not define; ignored"
                ));
            }
            false
        });
    }
}

fn dict_get<'a>(dict: &'a Dict, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let value = dict.get(first)?;
    if rest.is_empty() {
        return Some(value);
    }
    match value {
        Value::Dict(_, inner) => dict_get(inner, rest),
        _ => None,
    }
}

fn dict_remove(dict: &mut Dict, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => dict.remove(last).is_some(),
        [first, rest @ ..] => match dict.get_mut(first) {
            Some(Value::Dict(_, inner)) => dict_remove(inner, rest),
            _ => false,
        },
    }
}

/// Problems from figment before deserialization: in practice a TOML syntax
/// error. The toml crate's message quotes the offending line, which may hold
/// an inline secret, so only its position and explanation are kept.
fn figment_problems(error: figment::Error) -> Vec<Problem> {
    error
        .into_iter()
        .map(|e| Problem {
            key: if e.path.is_empty() {
                FILE_KEY.into()
            } else {
                e.path.join(".")
            },
            message: without_source_excerpt(&e.kind.to_string()),
        })
        .collect()
}

/// Drops the `N | text` and caret lines of a toml error, keeping e.g.
/// "TOML parse error at line 3, column 17: invalid basic string".
fn without_source_excerpt(message: &str) -> String {
    let kept: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .filter(|line| {
            let gutter = line
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start();
            !gutter.starts_with('|')
        })
        .collect();
    kept.join(": ")
}

/// A deserialization error in the operator's words; the raw struct names are
/// no business of theirs.
fn deserialize_message(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(actual, expected) => {
            let expected = if expected.starts_with("struct ") || expected.starts_with("a map") {
                "a table".to_string()
            } else {
                expected.clone()
            };
            format!("expected {expected}, found {actual}")
        }
        other => other.to_string(),
    }
}
