//! The `ocsf` format: OCSF 1.1.0 Detection Finding (class 2004), valid under
//! the rules of the OCSF server's validator: only attributes of the class,
//! of its objects and of the profiles named in `metadata.profiles`; the
//! required ones always; values of the dictionary's types (`hostname_t`,
//! `ip_t`, lengths); enum ids that exist, with their captions as OCSF spells
//! them.

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::formats::{one_line, record_id_of, Obj};
use super::view::{Evidence, File, Host, Process, Severity, Status, User, View};
use super::{Change, Record};

/// The OCSF schema version the `ocsf` mapping follows.
pub(super) const OCSF_VERSION: &str = "1.1.0";

/// `string_t`'s `max_len` in the 1.1.0 dictionary.
const MAX_STRING: usize = 65_535;

#[derive(Serialize)]
struct Doc<'a> {
    #[serde(flatten)]
    fields: Map<String, Value>,
    unmapped: Unmapped<'a>,
}

#[derive(Serialize)]
struct Unmapped<'a> {
    alert: &'a RawValue,
    tenant: Tenant<'a>,
    source: &'static str,
}

#[derive(Serialize)]
struct Tenant<'a> {
    name: &'a str,
    id: &'a str,
}

pub(super) fn render(buf: &mut Vec<u8>, rec: &Record) -> Result<(), serde_json::Error> {
    let v = View::read(rec.source, rec.alert);
    let alert = one_line(rec.alert);
    let doc = Doc {
        fields: fields(rec, &v),
        unmapped: Unmapped {
            alert: &alert,
            tenant: Tenant {
                name: rec.tenant_name,
                id: rec.tenant_id,
            },
            source: rec.source.as_str(),
        },
    };
    serde_json::to_writer(&mut *buf, &doc)
}

/// A `string_t` value: at most 65,535 characters, cut on a character.
fn s(text: &str) -> Value {
    if text.len() <= MAX_STRING {
        return Value::String(text.to_owned());
    }
    let mut end = MAX_STRING;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Value::String(text[..end].to_owned())
}

fn put_s(o: &mut Obj, key: &str, text: Option<&str>) {
    o.put(key, text.map(s));
}

/// The product as Microsoft names it.
fn product_name(v: &View) -> String {
    match v.service_source.as_deref() {
        None | Some("microsoftDefenderForEndpoint") => "Microsoft Defender for Endpoint".into(),
        Some("microsoftDefenderForIdentity") => "Microsoft Defender for Identity".into(),
        Some("microsoftDefenderForCloudApps") => "Microsoft Defender for Cloud Apps".into(),
        Some("microsoftDefenderForOffice365") => "Microsoft Defender for Office 365".into(),
        Some("microsoft365Defender") => "Microsoft Defender XDR".into(),
        Some("azureAdIdentityProtection") => "Microsoft Entra ID Protection".into(),
        Some("microsoftAppGovernance") => "Microsoft App Governance".into(),
        Some("dataLossPrevention") => "Microsoft Purview Data Loss Prevention".into(),
        Some("microsoftDefenderForCloud") => "Microsoft Defender for Cloud".into(),
        Some(other) => other.to_owned(),
    }
}

fn fields(rec: &Record, v: &View) -> Map<String, Value> {
    let (activity_id, activity_name) = match rec.change {
        Change::New => (1u32, "Create"),
        Change::Update => (2u32, "Update"),
    };
    let emitted_ms = rec.timestamp.ticks().div_euclid(10_000);
    let key = record_id_of(rec);
    let product = product_name(v);

    // severity_id is required: no severity is 0 Unknown. The sibling holds
    // OCSF's caption, and the source's text only for 99 Other.
    let (severity_id, severity): (u32, String) = match &v.severity {
        None => (0, "Unknown".into()),
        Some((sev, text)) => match sev {
            Severity::Unknown => (0, "Unknown".into()),
            Severity::Informational => (1, "Informational".into()),
            Severity::Low => (2, "Low".into()),
            Severity::Medium => (3, "Medium".into()),
            Severity::High => (4, "High".into()),
            Severity::Other => (99, text.clone()),
        },
    };

    let mut doc = Obj::default();
    doc.put("activity_id", Some(Value::from(activity_id)))
        .put_str("activity_name", Some(activity_name))
        .put("category_uid", Some(Value::from(2)))
        .put_str("category_name", Some("Findings"))
        .put("class_uid", Some(Value::from(2004)))
        .put_str("class_name", Some("Detection Finding"))
        .put("type_uid", Some(Value::from(200_400 + activity_id)))
        .put_str(
            "type_name",
            Some(&format!("Detection Finding: {activity_name}")),
        )
        // When this version of the alert came to be; the emission time is
        // metadata.processed_time.
        .put(
            "time",
            Some(Value::from(
                v.updated.as_ref().map(|t| t.millis()).unwrap_or(emitted_ms),
            )),
        )
        .put("severity_id", Some(Value::from(severity_id)))
        .put("severity", Some(s(&severity)));
    put_s(&mut doc, "message", v.title.as_deref());
    doc.put(
        "start_time",
        v.first_activity.as_ref().map(|t| Value::from(t.millis())),
    )
    .put(
        "end_time",
        v.last_activity.as_ref().map(|t| Value::from(t.millis())),
    );
    if let Some((status, text)) = &v.status {
        let (id, caption) = match status {
            Status::New => (1, "New"),
            Status::InProgress => (2, "In Progress"),
            Status::Resolved => (4, "Resolved"),
            Status::Unknown => (0, "Unknown"),
            Status::Other => (99, text.as_str()),
        };
        doc.put("status_id", Some(Value::from(id)))
            .put("status", Some(s(caption)));
    }

    let mut uses_host_profile = false;
    if let Some(h) = &v.host {
        let device = device(h);
        if !device.is_empty() {
            uses_host_profile = true;
            doc.put_obj("device", device);
        }
    }
    if let Some(u) = &v.user {
        let user = user(u);
        if !user.is_empty() {
            uses_host_profile = true;
            let mut actor = Obj::default();
            actor.put_obj("user", user);
            doc.put_obj("actor", actor);
        }
    }
    doc.put_list(
        "evidences",
        v.evidence
            .iter()
            .zip(&v.evidence_raw)
            .map(|(e, raw)| evidence(e, raw).into_value())
            .collect(),
    );

    let mut finding = Obj::default();
    finding.put("uid", Some(s(v.id.as_deref().unwrap_or(key.as_str()))));
    // `title` is required: an alert without one gets a generic one.
    let fallback = format!("{product} alert");
    finding.put("title", Some(s(v.title.as_deref().unwrap_or(&fallback))));
    put_s(&mut finding, "desc", v.description.as_deref());
    finding
        .put(
            "created_time",
            v.created.as_ref().map(|t| Value::from(t.millis())),
        )
        .put(
            "first_seen_time",
            v.first_activity.as_ref().map(|t| Value::from(t.millis())),
        )
        .put(
            "last_seen_time",
            v.last_activity.as_ref().map(|t| Value::from(t.millis())),
        )
        .put(
            "modified_time",
            v.updated.as_ref().map(|t| Value::from(t.millis())),
        );
    if let Some(c) = &v.category {
        finding.put_list("types", vec![s(c)]);
    }
    if let Some(url) = &v.web_url {
        put_s(&mut finding, "src_url", Some(url));
    }
    finding.put_list("data_sources", vec![s(&product)]);
    if v.detector_id.is_some() || v.detection_source.is_some() {
        let custom = v
            .detection_source
            .as_deref()
            .is_some_and(|d| d.eq_ignore_ascii_case("customDetection"));
        let mut analytic = Obj::default();
        put_s(&mut analytic, "uid", v.detector_id.as_deref());
        put_s(&mut analytic, "name", v.detection_source.as_deref());
        put_s(&mut analytic, "category", v.category.as_deref());
        analytic
            .put("type_id", Some(Value::from(if custom { 1 } else { 0 })))
            .put_str("type", Some(if custom { "Rule" } else { "Unknown" }));
        finding.put_obj("analytic", analytic);
    }
    finding.put_list("attacks", attacks(&v.techniques));

    let mut vendor = Obj::default();
    vendor
        .put("name", Some(s(&product)))
        .put_str("vendor_name", Some("Microsoft"));
    let mut metadata = Obj::default();
    metadata
        .put_str("version", Some(OCSF_VERSION))
        .put_obj("product", vendor)
        .put_str("uid", Some(&key))
        .put_str("tenant_uid", Some(rec.tenant_id))
        .put_str("log_name", Some(rec.source.record_type()))
        .put_str(
            "log_provider",
            Some(match rec.source {
                super::AlertSource::Mde => "Microsoft Defender for Endpoint API",
                super::AlertSource::Graph => "Microsoft Graph security API",
            }),
        )
        .put("processed_time", Some(Value::from(emitted_ms)));
    put_s(
        &mut metadata,
        "original_time",
        v.updated.as_ref().map(|t| t.text.as_str()),
    );
    put_s(&mut metadata, "correlation_uid", v.incident_id.as_deref());
    if uses_host_profile {
        metadata.put_list("profiles", vec![Value::from("host")]);
    }

    doc.put_obj("finding_info", finding)
        .put_obj("metadata", metadata);
    doc.0
}

/// One attack per distinct technique: `T1055` alone is dropped when
/// `T1055.002` names its sub-technique, and repeats are dropped.
fn attacks(techniques: &[String]) -> Vec<Value> {
    let mut seen: Vec<(&str, Option<&str>)> = Vec::new();
    for t in techniques {
        let entry = match t.split_once('.') {
            Some((parent, _)) => (parent, Some(t.as_str())),
            None => (t.as_str(), None),
        };
        if !seen.contains(&entry) {
            seen.push(entry);
        }
    }
    let with_subs: Vec<&str> = seen
        .iter()
        .filter(|(_, sub)| sub.is_some())
        .map(|(p, _)| *p)
        .collect();
    seen.iter()
        .filter(|(p, sub)| sub.is_some() || !with_subs.contains(p))
        .map(|(parent, sub)| {
            let mut attack = Obj::default();
            let mut technique = Obj::default();
            technique.put("uid", Some(s(parent)));
            attack.put_obj("technique", technique);
            if let Some(sub) = sub {
                let mut st = Obj::default();
                st.put("uid", Some(s(sub)));
                attack.put_obj("sub_technique", st);
            }
            attack.into_value()
        })
        .collect()
}

/// A name as `hostname_t` accepts it (letters, digits and inner hyphens in
/// dot-separated labels): non-ASCII names in their IDNA (punycode) form,
/// lower-cased; None for names no hostname can represent (`lap_jsmith`).
pub(super) fn hostname(name: &str) -> Option<String> {
    let ascii = url::Url::parse(&format!("http://{name}/"))
        .ok()?
        .host_str()?
        .trim_end_matches('.')
        .to_owned();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (!ascii.is_empty() && ascii.split('.').all(label_ok)).then_some(ascii)
}

fn ip(text: &str) -> Option<Value> {
    text.trim()
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| Value::from(ip.to_string()))
}

fn os(platform: &str) -> Obj {
    let p = platform.to_ascii_lowercase();
    let (id, caption) = if p.starts_with("windows") {
        (100, "Windows")
    } else if p.starts_with("linux") || p.contains("ubuntu") || p.contains("redhat") {
        (200, "Linux")
    } else if p.starts_with("android") {
        (201, "Android")
    } else if p.starts_with("mac") {
        (300, "macOS")
    } else if p.starts_with("ios") {
        (301, "iOS")
    } else {
        (0, "Unknown")
    };
    let mut o = Obj::default();
    o.put("name", Some(s(platform)))
        .put("type_id", Some(Value::from(id)))
        .put_str("type", Some(caption));
    o
}

fn device(h: &Host) -> Obj {
    let mut d = Obj::default();
    // `name` keeps the name as the API wrote it (string_t), `hostname` the
    // form hostname_t accepts, or nothing.
    put_s(&mut d, "name", h.name.as_deref());
    d.put_str("hostname", h.name.as_deref().and_then(hostname).as_deref());
    put_s(&mut d, "uid", h.id.as_deref());
    if d.is_empty() {
        return d;
    }
    if let Some(g) = &h.group {
        let mut group = Obj::default();
        group.put("name", Some(s(g)));
        d.put_list("groups", vec![group.into_value()]);
    }
    d.put("ip", h.ips.iter().find_map(|i| ip(i)));
    if let Some(p) = &h.os {
        d.put_obj("os", os(p));
    }
    // Required; neither API says whether a machine is a server or a desktop.
    d.put("type_id", Some(Value::from(0)))
        .put_str("type", Some("Unknown"));
    d
}

fn user(u: &User) -> Obj {
    let mut o = Obj::default();
    put_s(
        &mut o,
        "name",
        u.name
            .as_deref()
            .or(u.upn.as_deref())
            .or(u.display_name.as_deref())
            .or(u.email.as_deref()),
    );
    put_s(&mut o, "domain", u.domain.as_deref());
    put_s(&mut o, "uid", u.sid.as_deref().or(u.aad_id.as_deref()));
    if u.sid.is_some() {
        put_s(&mut o, "uid_alt", u.aad_id.as_deref());
    }
    put_s(&mut o, "full_name", u.display_name.as_deref());
    let email = u
        .email
        .as_deref()
        .or(u.upn.as_deref())
        .filter(|e| is_email(e));
    o.put_str("email_addr", email);
    o
}

/// `email_t`: `^[a-zA-Z0-9_.+-]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+$`.
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
    let Some((first, rest)) = domain.split_once('.') else {
        return false;
    };
    local_ok
        && !first.is_empty()
        && first
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// An OCSF file needs a name; None when the evidence has none.
fn file(f: &File) -> Option<Obj> {
    let name = f.name.as_deref()?;
    let mut o = Obj::default();
    o.put("name", Some(s(name)));
    put_s(&mut o, "path", f.full_path().as_deref());
    put_s(&mut o, "parent_folder", f.dir.as_deref());
    o.put("size", f.size.map(Value::from));
    let mut hashes = Vec::new();
    for (id, caption, value) in [(2, "SHA-1", &f.sha1), (3, "SHA-256", &f.sha256)] {
        // file_hash_t: at most 64 characters.
        if let Some(h) = value.as_deref().filter(|h| h.len() <= 64) {
            let mut fp = Obj::default();
            fp.put("algorithm_id", Some(Value::from(id)))
                .put_str("algorithm", Some(caption))
                .put_str("value", Some(h));
            hashes.push(fp.into_value());
        }
    }
    o.put_list("hashes", hashes);
    o.put("type_id", Some(Value::from(1)))
        .put_str("type", Some("Regular File"));
    Some(o)
}

/// An OCSF process needs a pid (or uid); None when the evidence has none.
fn process(p: &Process) -> Option<Obj> {
    let pid = p.pid.filter(|&pid| i32::try_from(pid).is_ok())?;
    let mut o = Obj::default();
    o.put("pid", Some(Value::from(pid)));
    put_s(&mut o, "cmd_line", p.command_line.as_deref());
    o.put(
        "created_time",
        p.started.as_ref().map(|t| Value::from(t.millis())),
    );
    put_s(&mut o, "name", p.image.name.as_deref());
    if let Some(f) = file(&p.image) {
        o.put_obj("file", f);
    }
    if let Some(ppid) = p.parent_pid.filter(|&pid| i32::try_from(pid).is_ok()) {
        let mut parent = Obj::default();
        parent.put("pid", Some(Value::from(ppid)));
        parent.put(
            "created_time",
            p.parent_started.as_ref().map(|t| Value::from(t.millis())),
        );
        put_s(&mut parent, "name", p.parent_image.name.as_deref());
        if let Some(f) = file(&p.parent_image) {
            parent.put_obj("file", f);
        }
        o.put_obj("parent_process", parent);
    }
    if let Some(u) = &p.user {
        let u = user(u);
        if !u.is_empty() {
            o.put_obj("user", u);
        }
    }
    Some(o)
}

/// One `evidences` entry. 1.1.0's evidence object has no url, user or device
/// of its own: users go in `actor.user`, IPs in `dst_endpoint`, devices in
/// `src_endpoint`, and what has no place (URLs, registry, kinds not mapped,
/// evidence too incomplete for its object) in `data`, as the API wrote it.
fn evidence(e: &Evidence, raw: &Value) -> Obj {
    let mut o = Obj::default();
    match e {
        Evidence::File(f) => {
            if let Some(f) = file(f) {
                o.put_obj("file", f);
            }
        }
        Evidence::Process(p) => {
            if let Some(p) = process(p) {
                o.put_obj("process", p);
            }
        }
        Evidence::User(u) | Evidence::Mailbox(u) => {
            let u = user(u);
            if !u.is_empty() {
                let mut actor = Obj::default();
                actor.put_obj("user", u);
                o.put_obj("actor", actor);
            }
        }
        Evidence::Ip(text) => {
            let mut ep = Obj::default();
            ep.put("ip", ip(text));
            o.put_obj("dst_endpoint", ep);
        }
        Evidence::Url(u) => {
            let mut data = Obj::default();
            data.put_str("url", Some(u));
            o.put_obj("data", data);
            let host = url::Url::parse(u)
                .ok()
                .and_then(|p| p.host_str().and_then(hostname));
            if let Some(h) = host {
                let mut ep = Obj::default();
                ep.put_str("hostname", Some(&h));
                o.put_obj("dst_endpoint", ep);
            }
        }
        Evidence::Device(h) => {
            let mut ep = Obj::default();
            put_s(&mut ep, "name", h.name.as_deref());
            ep.put_str("hostname", h.name.as_deref().and_then(hostname).as_deref());
            put_s(&mut ep, "uid", h.id.as_deref());
            ep.put("ip", h.ips.iter().find_map(|i| ip(i)));
            if let Some(p) = &h.os {
                ep.put_obj("os", os(p));
            }
            o.put_obj("src_endpoint", ep);
        }
        Evidence::Other => {}
    }
    if o.is_empty() {
        // The constraint wants one of its attributes: keep what we had.
        o.put("data", Some(raw.clone()));
    }
    o
}
