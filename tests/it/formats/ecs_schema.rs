//! A small ECS validator over Elastic's `generated/ecs/ecs_flat.yml`
//! (vendored in `tests/data/schemas/ecs-8.11.0`): every field of a document
//! outside the custom namespaces named by the caller must be an ECS field;
//! its value must fit the field's type (keyword, long, date, ip, …); fields
//! whose `normalize` says `array` must be arrays and no other field may be
//! one; `allowed_values` (event.kind, event.category, event.type,
//! event.outcome) must hold, and each event.type must be one the document's
//! event.category expects; the required fields must be there.
//!
//! `ecs_flat.yml` is read line by line: top-level keys are field names at
//! column 0, their properties are indented two spaces, list items of
//! `allowed_values` carry `name:` and `expected_event_types:` at four.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value};

#[derive(Debug, Default, Clone)]
pub struct Field {
    pub ty: String,
    pub array: bool,
    pub required: bool,
    /// allowed value → the event types it expects (event.category).
    pub allowed: Option<BTreeMap<String, Vec<String>>>,
}

pub struct Ecs {
    pub version: String,
    pub fields: BTreeMap<String, Field>,
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches('\'').trim_matches('"')
}

impl Ecs {
    pub fn load(path: &Path) -> Ecs {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("{}: {e} (vendor it from elastic/ecs)", path.display()));
        let mut fields: BTreeMap<String, Field> = BTreeMap::new();
        let mut current = String::new();
        // The two-space property the following lines belong to.
        let mut section = String::new();
        // The allowed value being read: its name and expected event types.
        let mut item: Option<(Option<String>, Vec<String>)> = None;
        let mut in_expected = false;
        let commit = |fields: &mut BTreeMap<String, Field>,
                      current: &str,
                      item: &mut Option<(Option<String>, Vec<String>)>| {
            if let Some((Some(name), types)) = item.take() {
                if let Some(f) = fields.get_mut(current) {
                    f.allowed
                        .get_or_insert_with(BTreeMap::new)
                        .insert(name, types);
                }
            }
        };
        for line in text.lines() {
            let indent = line.len() - line.trim_start().len();
            let body = line.trim_start();
            match indent {
                0 if body.ends_with(':') => {
                    commit(&mut fields, &current, &mut item);
                    current = unquote(&body[..body.len() - 1]).to_owned();
                    fields.insert(current.clone(), Field::default());
                    section.clear();
                }
                2 if body.starts_with("- ") => {
                    commit(&mut fields, &current, &mut item);
                    let value = &body[2..];
                    let f = fields.get_mut(&current).expect("a field is open");
                    match section.as_str() {
                        "normalize" if value.trim() == "array" => f.array = true,
                        "allowed_values" => {
                            in_expected = false;
                            let name = value.strip_prefix("name: ").map(|n| unquote(n).to_owned());
                            item = Some((name, Vec::new()));
                        }
                        _ => {}
                    }
                }
                2 => {
                    commit(&mut fields, &current, &mut item);
                    let (key, value) = body.split_once(':').unwrap_or((body, ""));
                    section = key.to_owned();
                    let f = fields.get_mut(&current).expect("a field is open");
                    match key {
                        "type" => f.ty = unquote(value).to_owned(),
                        "required" => f.required = value.trim() == "true",
                        _ => {}
                    }
                }
                4 if section == "allowed_values" => {
                    let Some((name, types)) = item.as_mut() else {
                        continue;
                    };
                    if let Some(n) = body.strip_prefix("name: ") {
                        *name = Some(unquote(n).to_owned());
                        in_expected = false;
                    } else if body.starts_with("expected_event_types:") {
                        in_expected = true;
                    } else if let Some(t) = body.strip_prefix("- ").filter(|_| in_expected) {
                        types.push(unquote(t).to_owned());
                    } else {
                        in_expected = false;
                    }
                }
                _ => {}
            }
        }
        commit(&mut fields, &current, &mut item);
        let version = path
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("ecs-"))
            .unwrap_or_default()
            .to_owned();
        Ecs { version, fields }
    }

    /// Every rule the document breaks, as `field: problem`; empty when valid.
    pub fn validate(&self, doc: &Value, custom: &[&str]) -> Vec<String> {
        let mut errors = Vec::new();
        let Some(obj) = doc.as_object() else {
            return vec!["the document is not an object".into()];
        };
        let mut seen = BTreeSet::new();
        self.walk(obj, "", custom, &mut seen, &mut errors);
        for (name, f) in &self.fields {
            if f.required && !seen.contains(name) {
                errors.push(format!("{name}: required field missing"));
            }
        }
        if let Some(v) = doc.pointer("/ecs/version").and_then(Value::as_str) {
            if v != self.version {
                errors.push(format!("ecs.version: {v}, schema is {}", self.version));
            }
        }
        // event.type values must be ones that the categories expect.
        let list = |p: &str| -> Vec<String> {
            match doc.pointer(p) {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                Some(Value::String(s)) => vec![s.clone()],
                _ => Vec::new(),
            }
        };
        let categories = list("/event/category");
        if let Some(expected) = self
            .fields
            .get("event.category")
            .and_then(|f| f.allowed.as_ref())
        {
            for t in list("/event/type") {
                let fits = categories
                    .iter()
                    .any(|c| expected.get(c).is_some_and(|types| types.contains(&t)));
                if !categories.is_empty() && !fits {
                    errors.push(format!(
                        "event.type: {t:?} is expected by none of the categories {categories:?}"
                    ));
                }
            }
        }
        errors
    }

    fn walk(
        &self,
        obj: &Map<String, Value>,
        prefix: &str,
        custom: &[&str],
        seen: &mut BTreeSet<String>,
        errors: &mut Vec<String>,
    ) {
        for (k, v) in obj {
            let name = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if prefix.is_empty() && custom.contains(&k.as_str()) {
                continue;
            }
            match self.fields.get(&name) {
                Some(f) if !matches!(f.ty.as_str(), "object" | "nested" | "flattened") => {
                    seen.insert(name.clone());
                    self.check(&name, f, v, errors);
                }
                Some(_) => {
                    seen.insert(name.clone());
                }
                None => match v {
                    Value::Object(m) => self.walk(m, &name, custom, seen, errors),
                    _ => errors.push(format!("{name}: not an ECS {} field", self.version)),
                },
            }
        }
    }

    fn check(&self, name: &str, f: &Field, v: &Value, errors: &mut Vec<String>) {
        let values: Vec<&Value> = match v {
            Value::Array(items) => {
                if !f.array {
                    errors.push(format!("{name}: an array, but ECS expects one value"));
                }
                items.iter().collect()
            }
            one => {
                if f.array {
                    errors.push(format!(
                        "{name}: one value, but ECS normalizes it to an array"
                    ));
                }
                vec![one]
            }
        };
        for v in values {
            if let Err(e) = type_fits(&f.ty, v) {
                errors.push(format!("{name}: {e}"));
            }
            if let (Some(allowed), Some(s)) = (&f.allowed, v.as_str()) {
                if !allowed.contains_key(s) {
                    errors.push(format!("{name}: {s:?} is not an allowed value"));
                }
            }
        }
    }
}

fn type_fits(ty: &str, v: &Value) -> Result<(), String> {
    let ok = match ty {
        "keyword" | "constant_keyword" | "wildcard" | "text" | "match_only_text" => v.is_string(),
        "long" | "integer" | "short" | "byte" => v.is_i64() || v.is_u64(),
        "unsigned_long" => v.is_u64(),
        "float" | "double" | "scaled_float" | "half_float" => v.is_number(),
        "boolean" => v.is_boolean(),
        // Elasticsearch rejects a date it cannot parse: the whole document.
        "date" => v
            .as_str()
            .is_some_and(|s| mde_poller::timestamp::Timestamp::parse(s).is_ok()),
        "ip" => v
            .as_str()
            .is_some_and(|s| s.parse::<std::net::IpAddr>().is_ok()),
        "geo_point" => v.is_object() || v.is_string() || v.is_array(),
        other => return Err(format!("the validator knows no ECS type {other}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{v} is not a {ty}"))
    }
}
