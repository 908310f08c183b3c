//! The layers, later winning: built-in defaults, the TOML file, then the
//! `MDE_POLLER_*` environment (figment); which layer set a key, so that a
//! problem can name the variable behind it; and serde's errors turned into
//! problems that name their dotted key.

use std::collections::HashSet;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Tag, Value};
use figment::{Profile, Provider};

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
    /// Every dotted key the TOML file itself sets, tables included, to tell
    /// file keys from environment keys (an unknown key in the file is an
    /// error, from the environment a warning). Its keys, not its values:
    /// those are moved into the merged layers, so a file of 5,000 tenants
    /// is not held twice while it loads.
    file_keys: HashSet<String>,
    /// `(dotted key, value as written)` of every variable figment reads.
    env: Vec<(String, String)>,
    /// Warnings about variables figment skips (an empty key segment).
    pub(super) malformed: Vec<String>,
}

impl Layers {
    /// Reads the file and the environment, and merges them over the
    /// defaults (returned beside the layers, for [`Layers::deserialize`]);
    /// a TOML syntax error is the one problem then.
    ///
    /// Each provider is read once and merged in place. Through a `Figment`,
    /// the file was parsed twice and the merged value copied twice more
    /// (`extract` clones it, then deserializes a copy): with thousands of
    /// tenants, that peak (~5 KB a tenant) was most of the daemon's
    /// resident memory, which the allocator keeps after it is freed.
    pub(super) fn read(file: &Path) -> Result<(Layers, Dict), Vec<Problem>> {
        let file_dict = provided(&Toml::file_exact(file))?;
        let mut file_keys = HashSet::new();
        collect_keys(&file_dict, "", &mut file_keys);
        let env = env_provider();
        let mut merged = provided(&Serialized::defaults(RawConfig::default()))?;
        merge(&mut merged, file_dict);
        merge(&mut merged, provided(&env)?);
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
        let layers = Layers {
            file_keys,
            env: vars,
            malformed,
        };
        Ok((layers, merged))
    }

    /// Whether the file itself sets `key` (dotted).
    pub(super) fn in_file(&self, key: &str) -> bool {
        self.file_keys.contains(key)
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
    pub(super) fn deserialize(&self, mut merged: Dict, checker: &mut Checker) -> RawConfig {
        self.drop_env_only_tenants(&mut merged, checker);
        loop {
            // Moved in and out, not copied: it is the whole config.
            let value = Value::Dict(Tag::Default, merged);
            let result = value.deserialize::<RawConfig>();
            merged = match value {
                Value::Dict(_, dict) => dict,
                _ => Dict::new(),
            };
            let error = match result {
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

/// What `provider` gives, as a `Figment` of it would extract it: its
/// default profile with the global one merged over it.
fn provided(provider: &impl Provider) -> Result<Dict, Vec<Problem>> {
    let mut profiles = provider.data().map_err(figment_problems)?;
    let mut dict = profiles.remove(&Profile::Default).unwrap_or_default();
    if let Some(global) = profiles.remove(&Profile::Global) {
        merge(&mut dict, global);
    }
    Ok(dict)
}

/// figment's `merge`, in place: tables merge key by key, and any other
/// value of `over` replaces the one in `base`.
fn merge(base: &mut Dict, over: Dict) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Dict(_, inner)), Value::Dict(_, more)) => merge(inner, more),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Every dotted key of `dict` under `prefix`, tables included.
fn collect_keys(dict: &Dict, prefix: &str, keys: &mut HashSet<String>) {
    for (key, value) in dict {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if let Value::Dict(_, inner) = value {
            collect_keys(inner, &dotted, keys);
        }
        keys.insert(dotted);
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
