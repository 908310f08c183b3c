//! A small OCSF validator over the schema's own source files (vendored in
//! `tests/data/schemas/ocsf-1.1.0`), applying the rules of the OCSF
//! server's validator (`lib/schema/validator2.ex`): required attributes;
//! no attribute the class or object does not define, where attributes that
//! come from a profile count only when `metadata.profiles` names it; the
//! dictionary's types (primitives, `max_len`, `range`, the regex of
//! `hostname_t`, `ip_t`, `email_t`, …); enum values that exist; the
//! objects' `at_least_one` / `just_one` constraints; `type_uid`; the version.
//! Stricter than the server in one place: an enum sibling that does not
//! carry OCSF's caption is an error here (the server warns).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde_json::{Map, Value};

#[derive(Debug, Clone, Default)]
struct Attr {
    /// A dictionary type (`string_t`, `hostname_t`) or an object name.
    ty: String,
    is_array: bool,
    requirement: String,
    /// Enum value → caption.
    enumeration: Option<BTreeMap<String, String>>,
    sibling: Option<String>,
    /// The profiles this attribute comes from; empty = always there.
    profiles: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct Item {
    name: String,
    attrs: BTreeMap<String, Attr>,
    constraints: Vec<(String, Vec<String>)>,
}

pub struct Ocsf {
    root: PathBuf,
    version: String,
    dictionary: Map<String, Value>,
    types: Map<String, Value>,
    profiles: BTreeSet<String>,
    cache: RefCell<HashMap<String, Rc<Item>>>,
    /// Every schema file read, to know which ones validation needs.
    pub read: RefCell<BTreeSet<String>>,
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (vendor it from ocsf-schema)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Ocsf {
    pub fn load(root: &Path) -> Ocsf {
        let dict = read_json(&root.join("dictionary.json"));
        let version = read_json(&root.join("version.json"))["version"]
            .as_str()
            .expect("version.json has a version")
            .to_owned();
        let profiles = std::fs::read_dir(root.join("profiles"))
            .expect("profiles/")
            .filter_map(|e| {
                let p = e.ok()?.path();
                read_json(&p)["name"].as_str().map(str::to_owned)
            })
            .collect();
        Ocsf {
            root: root.to_owned(),
            version,
            dictionary: dict["attributes"].as_object().cloned().unwrap_or_default(),
            types: dict["types"]["attributes"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
            profiles,
            cache: RefCell::default(),
            read: RefCell::default(),
        }
    }

    fn file(&self, rel: &str) -> Value {
        self.read.borrow_mut().insert(rel.to_owned());
        read_json(&self.root.join(rel))
    }

    /// Attributes of one definition file (its `$include`s first, then its own),
    /// completed from the dictionary.
    fn merge_attrs(&self, def: &Value, into: &mut BTreeMap<String, Attr>) {
        let Some(attrs) = def["attributes"].as_object() else {
            return;
        };
        if let Some(includes) = attrs.get("$include").and_then(Value::as_array) {
            for inc in includes.iter().filter_map(Value::as_str) {
                let included = self.file(inc);
                let profile = (included["meta"] == "profile")
                    .then(|| included["name"].as_str().unwrap_or_default().to_owned());
                let mut tmp = BTreeMap::new();
                self.merge_attrs(&included, &mut tmp);
                for (k, mut a) in tmp {
                    if let Some(p) = &profile {
                        a.profiles.insert(p.clone());
                    }
                    merge_attr(into.entry(k).or_default(), &a);
                }
            }
        }
        for (name, local) in attrs {
            if name == "$include" {
                continue;
            }
            let entry = into
                .entry(name.clone())
                .or_insert_with(|| self.dictionary_attr(name));
            merge_attr(entry, &attr_of(local));
        }
    }

    fn dictionary_attr(&self, name: &str) -> Attr {
        self.dictionary
            .get(name)
            .map(attr_of)
            .unwrap_or_else(|| panic!("attribute {name} is not in the dictionary"))
    }

    fn load_item(&self, rel: String, find: &dyn Fn(&str) -> String) -> Rc<Item> {
        if let Some(i) = self.cache.borrow().get(&rel) {
            return i.clone();
        }
        let def = self.file(&rel);
        let mut item = Item {
            name: def["name"].as_str().unwrap_or_default().to_owned(),
            ..Item::default()
        };
        if let Some(parent) = def["extends"].as_str() {
            let p = self.load_item(find(parent), find);
            item.attrs = p.attrs.clone();
            item.constraints = p.constraints.clone();
        }
        self.merge_attrs(&def, &mut item.attrs);
        if let Some(c) = def.get("constraints").and_then(Value::as_object) {
            item.constraints = c
                .iter()
                .map(|(k, v)| {
                    let keys = v
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    (k.clone(), keys)
                })
                .collect();
        }
        let item = Rc::new(item);
        self.cache.borrow_mut().insert(rel, item.clone());
        item
    }

    fn object(&self, name: &str) -> Rc<Item> {
        self.load_item(format!("objects/{name}.json"), &|p| {
            format!("objects/{p}.json")
        })
    }

    fn class(&self, uid: u64) -> Option<Rc<Item>> {
        let rel = match uid {
            2004 => "events/findings/detection_finding.json",
            _ => return None,
        };
        let class = self.load_item(rel.to_owned(), &|p| match p {
            "base_event" => "events/base_event.json".to_owned(),
            other => format!("events/findings/{other}.json"),
        });
        Some(self.with_uids(rel, class))
    }

    /// What the server's schema compiler adds to a class: `category_uid`,
    /// `class_uid` and `type_uid` enums of exactly this class's values
    /// (class uid = category uid × 1000 + the class's own uid).
    fn with_uids(&self, rel: &str, class: Rc<Item>) -> Rc<Item> {
        let def = self.file(rel);
        let categories = self.file("categories.json");
        let cat_name = def["category"].as_str().unwrap_or_default();
        let cat = &categories["attributes"][cat_name];
        let cat_uid = cat["uid"].as_u64().unwrap_or_default();
        let class_uid = cat_uid * 1000 + def["uid"].as_u64().unwrap_or_default();
        let caption = def["caption"].as_str().unwrap_or_default();
        let mut item = Item {
            name: class.name.clone(),
            attrs: class.attrs.clone(),
            constraints: class.constraints.clone(),
        };
        let one = |k: u64, v: &str| Some(BTreeMap::from([(k.to_string(), v.to_owned())]));
        if let Some(a) = item.attrs.get_mut("category_uid") {
            a.enumeration = one(cat_uid, cat["caption"].as_str().unwrap_or_default());
        }
        if let Some(a) = item.attrs.get_mut("class_uid") {
            a.enumeration = one(class_uid, caption);
        }
        let activities = item
            .attrs
            .get("activity_id")
            .and_then(|a| a.enumeration.clone());
        if let (Some(a), Some(acts)) = (item.attrs.get_mut("type_uid"), activities) {
            a.enumeration = Some(
                acts.iter()
                    .filter_map(|(id, name)| {
                        let id: u64 = id.parse().ok()?;
                        Some((
                            (class_uid * 100 + id).to_string(),
                            format!("{caption}: {name}"),
                        ))
                    })
                    .collect(),
            );
        }
        Rc::new(item)
    }

    /// Every rule the record breaks, as `path: problem`; empty when valid.
    pub fn validate(&self, event: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        let Some(obj) = event.as_object() else {
            return vec!["the event is not an object".into()];
        };
        let Some(class) = obj
            .get("class_uid")
            .and_then(Value::as_u64)
            .and_then(|u| self.class(u))
        else {
            return vec![format!(
                "class_uid {:?} is not a vendored class",
                obj.get("class_uid")
            )];
        };
        let mut profiles = BTreeSet::new();
        match event.pointer("/metadata/profiles") {
            None => {}
            Some(Value::Array(list)) => {
                for (i, p) in list.iter().enumerate() {
                    match p.as_str() {
                        Some(p) if self.profiles.contains(p) => {
                            profiles.insert(p.to_owned());
                        }
                        _ => errors.push(format!("metadata.profiles[{i}]: unknown profile {p}")),
                    }
                }
            }
            Some(other) => errors.push(format!("metadata.profiles: not an array: {other}")),
        }
        self.check_item(obj, &class, "", &profiles, &mut errors);
        if let Some(v) = event.pointer("/metadata/version").and_then(Value::as_str) {
            if v != self.version {
                errors.push(format!("metadata.version: {v}, schema is {}", self.version));
            }
        }
        let n = |k: &str| obj.get(k).and_then(Value::as_i64);
        if let (Some(c), Some(a), Some(t)) = (n("class_uid"), n("activity_id"), n("type_uid")) {
            if t != c * 100 + a {
                errors.push(format!("type_uid: {t}, expected {}", c * 100 + a));
            }
        }
        errors
    }

    fn check_item(
        &self,
        value: &Map<String, Value>,
        item: &Item,
        path: &str,
        profiles: &BTreeSet<String>,
        errors: &mut Vec<String>,
    ) {
        let visible: BTreeMap<&String, &Attr> = item
            .attrs
            .iter()
            .filter(|(_, a)| a.profiles.is_empty() || !a.profiles.is_disjoint(profiles))
            .collect();
        let at = |k: &str| {
            if path.is_empty() {
                k.to_owned()
            } else {
                format!("{path}.{k}")
            }
        };
        for (name, attr) in &visible {
            match value.get(name.as_str()) {
                None | Some(Value::Null) => {
                    if attr.requirement == "required" {
                        errors.push(format!("{}: required attribute missing", at(name)));
                    }
                }
                Some(v) => self.check_attr(v, attr, &at(name), profiles, errors),
            }
        }
        // "object" (unmapped, xattributes) defines no attributes: anything goes.
        if !visible.is_empty() {
            for key in value.keys() {
                if !visible.contains_key(key) {
                    let why = match item.attrs.get(key) {
                        Some(a) => format!(" (of profile {:?}, not declared)", a.profiles),
                        None => String::new(),
                    };
                    errors.push(format!(
                        "{}: attribute not defined in {}{why}",
                        at(key),
                        item.name
                    ));
                }
            }
        }
        for (name, attr) in &visible {
            let (Some(en), Some(v)) = (&attr.enumeration, value.get(name.as_str())) else {
                continue;
            };
            let key = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match en.get(&key) {
                None => errors.push(format!("{}: enum value {v} not defined", at(name))),
                Some(caption) => {
                    if let Some(sib) = attr.sibling.as_deref().and_then(|s| value.get(s)) {
                        if key != "99" && sib.as_str() != Some(caption) {
                            errors.push(format!(
                                "{}: {sib} is not the caption {caption:?} of {name} {key}",
                                at(attr.sibling.as_deref().unwrap_or_default())
                            ));
                        }
                    }
                }
            }
        }
        for (kind, keys) in &item.constraints {
            let count = keys
                .iter()
                .filter(|k| value.contains_key(k.as_str()))
                .count();
            let ok = match kind.as_str() {
                "at_least_one" => count >= 1,
                "just_one" => count == 1,
                other => {
                    errors.push(format!("{path}: unknown constraint {other}"));
                    true
                }
            };
            if !ok {
                errors.push(format!(
                    "{}: constraint {kind} of {keys:?} ({}) failed with {count}",
                    if path.is_empty() { "<event>" } else { path },
                    item.name
                ));
            }
        }
    }

    fn check_attr(
        &self,
        v: &Value,
        attr: &Attr,
        path: &str,
        profiles: &BTreeSet<String>,
        errors: &mut Vec<String>,
    ) {
        if attr.is_array {
            match v {
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check_value(item, attr, &format!("{path}[{i}]"), profiles, errors);
                    }
                }
                _ => errors.push(format!("{path}: expected an array of {}", attr.ty)),
            }
        } else {
            self.check_value(v, attr, path, profiles, errors);
        }
    }

    fn check_value(
        &self,
        v: &Value,
        attr: &Attr,
        path: &str,
        profiles: &BTreeSet<String>,
        errors: &mut Vec<String>,
    ) {
        if self.types.contains_key(&attr.ty) {
            if let Err(e) = self.check_type(v, &attr.ty) {
                errors.push(format!("{path}: {e}"));
            }
            return;
        }
        let object = self.object(&attr.ty);
        match v.as_object() {
            Some(m) => self.check_item(m, &object, path, profiles, errors),
            None => errors.push(format!("{path}: expected a {} object, got {v}", attr.ty)),
        }
    }

    fn check_type(&self, v: &Value, ty: &str) -> Result<(), String> {
        let def = &self.types[ty];
        let base = def.get("type").and_then(Value::as_str).unwrap_or(ty);
        let ok = match base {
            "boolean_t" => v.is_boolean(),
            // The server's `is_float`: an integer is not a float_t.
            "float_t" => v.is_f64(),
            "integer_t" => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            "long_t" => v.is_i64() || v.as_u64().is_some_and(|n| i64::try_from(n).is_ok()),
            "string_t" => v.is_string(),
            "json_t" => true,
            other => return Err(format!("validator knows no primitive {other}")),
        };
        if !ok {
            return Err(format!("{v} is not a {ty} ({base})"));
        }
        if let Some(s) = v.as_str() {
            for t in [ty, base] {
                if let Some(max) = self.types[t].get("max_len").and_then(Value::as_u64) {
                    let len = s.chars().count() as u64;
                    if len > max {
                        return Err(format!("{len} characters, {t} allows {max}"));
                    }
                }
            }
            if def.get("regex").is_some() && !matches_type_regex(ty, s)? {
                return Err(format!("{s:?} does not match the regex of {ty}"));
            }
        }
        if let (Some(range), Some(n)) = (def.get("range").and_then(Value::as_array), v.as_f64()) {
            let lo = range[0].as_f64().unwrap_or(f64::MIN);
            let hi = range[1].as_f64().unwrap_or(f64::MAX);
            if n < lo || n > hi {
                return Err(format!("{n} is outside {ty}'s range {lo}..={hi}"));
            }
        }
        if let Some(values) = def.get("values").and_then(Value::as_array) {
            if !values.contains(v) {
                return Err(format!("{v} is not one of {ty}'s values"));
            }
        }
        Ok(())
    }
}

fn attr_of(def: &Value) -> Attr {
    Attr {
        ty: def["type"].as_str().unwrap_or_default().to_owned(),
        is_array: def["is_array"].as_bool().unwrap_or(false),
        requirement: def["requirement"].as_str().unwrap_or_default().to_owned(),
        enumeration: def["enum"].as_object().map(|e| {
            e.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v["caption"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        }),
        sibling: def["sibling"].as_str().map(str::to_owned),
        profiles: BTreeSet::new(),
    }
}

/// The later definition wins field by field; enums are merged value by value.
fn merge_attr(into: &mut Attr, over: &Attr) {
    if !over.ty.is_empty() {
        into.ty = over.ty.clone();
    }
    if over.is_array {
        into.is_array = true;
    }
    if !over.requirement.is_empty() {
        into.requirement = over.requirement.clone();
    }
    if let Some(e) = &over.enumeration {
        into.enumeration
            .get_or_insert_with(BTreeMap::new)
            .extend(e.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if over.sibling.is_some() {
        into.sibling = over.sibling.clone();
    }
    into.profiles.extend(over.profiles.iter().cloned());
}

/// The regexes of the 1.1.0 dictionary's types, written out by hand (no
/// regex engine in the project): an unknown one is an error, not a pass.
fn matches_type_regex(ty: &str, s: &str) -> Result<bool, String> {
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    Ok(match ty {
        // ^(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])\.)*([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9])$
        "hostname_t" => s.split('.').all(label),
        // IPv4 or IPv6, optional zone, surrounding blanks allowed.
        "ip_t" => {
            let t = s.trim();
            let t = t.split_once('%').map_or(t, |(a, _)| a);
            t.parse::<std::net::IpAddr>().is_ok()
        }
        // ^[a-zA-Z0-9_.+-]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+$
        "email_t" => match s.split_once('@') {
            Some((local, domain)) => {
                let local_ok = !local.is_empty()
                    && local
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
                let domain_ok = domain.split_once('.').is_some_and(|(a, b)| {
                    !a.is_empty()
                        && a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                        && !b.is_empty()
                        && b.bytes()
                            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
                });
                local_ok && domain_ok
            }
            None => false,
        },
        // ^([0-9A-Fa-f]{2}[:-]){5}([0-9A-Fa-f]{2})$
        "mac_t" => {
            let b = s.as_bytes();
            b.len() == 17
                && b.iter().enumerate().all(|(i, c)| {
                    if i % 3 == 2 {
                        *c == b':' || *c == b'-'
                    } else {
                        c.is_ascii_hexdigit()
                    }
                })
        }
        // [0-9a-fA-F]{8}-[0-9a-fA-F]{4}-… (unanchored in 1.1.0; checked whole here)
        "uuid_t" => uuid::Uuid::try_parse(s).is_ok(),
        other => return Err(format!("the validator has no check for {other}'s regex")),
    })
}
