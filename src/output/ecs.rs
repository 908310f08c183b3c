//! The `ecs` format: Elastic Common Schema 8.11, lined up with Elastic's own
//! `microsoft_defender_endpoint` integration where that serves a SIEM
//! engineer (the same alert shows the same fields), and apart from it where
//! it is not ECS-correct (documented in `docs/FORMATS.md`).

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::formats::{one_line, record_id_of, strings, Obj};
use super::view::{Evidence, File, View};
use super::{AlertSource, Change, Record};

/// The ECS version the `ecs` mapping follows.
pub(super) const ECS_VERSION: &str = "8.11.0";

const VENDOR: &str = "Microsoft";

/// The mapped fields plus our own namespace, with the original alert nested
/// as raw JSON so that it is copied, not re-serialised (key order and
/// number spelling preserved).
#[derive(Serialize)]
struct Doc<'a> {
    #[serde(flatten)]
    fields: Map<String, Value>,
    mde: Ours<'a>,
}

#[derive(Serialize)]
struct Ours<'a> {
    alert: &'a RawValue,
    change: Change,
    source: &'static str,
    record_id: &'a str,
}

pub(super) fn render(buf: &mut Vec<u8>, rec: &Record) -> Result<(), serde_json::Error> {
    let v = View::read(rec.source, rec.alert);
    let key = record_id_of(rec);
    let alert = one_line(rec.alert);
    let doc = Doc {
        fields: fields(rec, &v),
        mde: Ours {
            alert: &alert,
            change: rec.change,
            source: rec.source.as_str(),
            record_id: &key,
        },
    };
    serde_json::to_writer(&mut *buf, &doc)
}

/// The product as Elastic's integration names it in `observer.product`.
fn product(v: &View) -> Option<&'static str> {
    match v.service_source.as_deref() {
        None | Some("microsoftDefenderForEndpoint") => Some("Defender for Endpoint"),
        Some("microsoftDefenderForIdentity") => Some("Defender for Identity"),
        Some("microsoftDefenderForCloudApps") => Some("Defender for Cloud Apps"),
        Some("microsoftDefenderForOffice365") => Some("Defender for Office 365"),
        Some("microsoft365Defender") => Some("Defender XDR"),
        Some("azureAdIdentityProtection") => Some("Entra ID Protection"),
        Some("microsoftAppGovernance") => Some("App Governance"),
        Some("dataLossPrevention") => Some("Purview Data Loss Prevention"),
        Some("microsoftDefenderForCloud") => Some("Defender for Cloud"),
        Some(_) => None,
    }
}

fn fields(rec: &Record, v: &View) -> Map<String, Value> {
    let emitted = rec.timestamp.to_millis_string();
    let is_mde = v.service_source.is_none()
        || v.service_source.as_deref() == Some("microsoftDefenderForEndpoint");

    let mut event = Obj::default();
    event
        .put_str("kind", Some("alert"))
        .put("category", Some(Value::Array(categories(v))))
        .put("type", Some(Value::Array(strings(&["info"]))))
        .put_str("action", Some(rec.change.as_str()))
        .put_str("id", v.id.as_deref())
        .put_str("created", v.created.as_ref().map(|t| t.text.as_str()))
        .put_str("start", v.first_activity.as_ref().map(|t| t.text.as_str()))
        .put_str("end", v.last_activity.as_ref().map(|t| t.text.as_str()))
        .put_str("ingested", Some(&emitted))
        .put(
            "severity",
            v.severity
                .as_ref()
                .and_then(|(s, _)| s.rank())
                .map(Value::from),
        )
        .put_str(
            "provider",
            match rec.source {
                AlertSource::Mde => Some("defender_endpoint"),
                AlertSource::Graph => v.service_source.as_deref(),
            },
        )
        .put_str("module", Some("mde"))
        .put_str("dataset", Some(rec.source.record_type()))
        .put_str("url", v.web_url.as_deref())
        .put_str("timezone", Some("UTC"));
    if let (Some(a), Some(b)) = (&v.first_activity, &v.last_activity) {
        if b.at >= a.at {
            // ECS: nanoseconds; the API's times are 100 ns ticks.
            let nanos = (b.at.ticks() - a.at.ticks()).saturating_mul(100);
            event.put("duration", Some(Value::from(nanos)));
        }
    }

    let mut rule = Obj::default();
    rule.put_str("name", v.title.as_deref())
        .put_str("description", v.description.as_deref())
        .put_str("id", v.detector_id.as_deref())
        .put_str("category", v.category.as_deref());

    let mut threat = Obj::default();
    let (techniques, subs) = split_techniques(&v.techniques);
    if !techniques.is_empty() {
        let mut technique = Obj::default();
        technique.put_list("id", strings(&techniques));
        if !subs.is_empty() {
            let mut sub = Obj::default();
            sub.put_list("id", strings(&subs));
            technique.put_obj("subtechnique", sub);
        }
        threat
            .put_str("framework", Some("MITRE ATT&CK"))
            .put_obj("technique", technique);
    }
    if v.threat_family.is_some() || v.threat_name.is_some() {
        let mut software = Obj::default();
        software
            .put_str(
                "name",
                v.threat_family.as_deref().or(v.threat_name.as_deref()),
            )
            .put_str("type", Some("Malware"));
        threat.put_obj("software", software);
    }

    let mut related = Related::default();

    let mut host = Obj::default();
    if let Some(h) = &v.host {
        let name = h.name.as_deref().map(str::to_lowercase);
        host.put_str("hostname", h.name.as_deref())
            .put_str("name", name.as_deref())
            .put_str("id", h.id.as_deref());
        let ips: Vec<&str> = h
            .ips
            .iter()
            .map(String::as_str)
            .filter(|s| is_ip(s))
            .collect();
        host.put_list("ip", strings(&ips));
        if let Some(os) = &h.os {
            let mut o = Obj::default();
            o.put_str("name", Some(os));
            host.put_obj("os", o);
        }
        related.hosts(name);
        related.ips(ips);
    }

    let mut user = Obj::default();
    if let Some(u) = &v.user {
        user.put_str("name", u.name.as_deref())
            .put_str("domain", u.domain.as_deref())
            .put_str("id", u.sid.as_deref());
    }

    let mut file = Obj::default();
    if let Some(f) = v.files().next() {
        file_fields(&mut file, f);
    }

    let mut process = Obj::default();
    if let Some(p) = v.processes().next() {
        process
            .put("pid", p.pid.map(Value::from))
            .put_str("command_line", p.command_line.as_deref())
            .put_str("start", p.started.as_ref().map(|t| t.text.as_str()))
            .put_str("name", p.image.name.as_deref())
            .put_str("executable", p.image.full_path().as_deref());
        let mut hash = Obj::default();
        hash.put_str("sha1", p.image.sha1.as_deref().filter(|h| is_hex(h)))
            .put_str("sha256", p.image.sha256.as_deref().filter(|h| is_hex(h)));
        process.put_obj("hash", hash);
        let mut parent = Obj::default();
        parent
            .put("pid", p.parent_pid.map(Value::from))
            .put_str("start", p.parent_started.as_ref().map(|t| t.text.as_str()))
            .put_str("name", p.parent_image.name.as_deref())
            .put_str("executable", p.parent_image.full_path().as_deref());
        process.put_obj("parent", parent);
        if let Some(u) = &p.user {
            let mut pu = Obj::default();
            // ECS 8.11 has no process.user.domain.
            pu.put_str("name", u.name.as_deref())
                .put_str("id", u.sid.as_deref());
            process.put_obj("user", pu);
        }
    }

    let mut url = Obj::default();
    for e in &v.evidence {
        match e {
            Evidence::Url(u) if url.is_empty() => url_fields(&mut url, u),
            Evidence::Ip(ip) => related.ips([ip.as_str()].into_iter().filter(|s| is_ip(s))),
            Evidence::Device(h) => {
                related.hosts(h.name.as_deref().map(str::to_lowercase));
                related.ips(h.ips.iter().map(String::as_str).filter(|s| is_ip(s)));
            }
            _ => {}
        }
    }
    for u in v.users() {
        related.user(u.name.as_deref());
        related.user(u.upn.as_deref());
        related.user(u.email.as_deref());
    }
    for f in v.files() {
        related.hash(f.sha1.as_deref());
        related.hash(f.sha256.as_deref());
    }

    let mut observer = Obj::default();
    observer
        .put_str("vendor", Some(VENDOR))
        .put_str("product", product(v).or(v.service_source.as_deref()))
        .put_str("name", v.detection_source.as_deref())
        .put_str("type", is_mde.then_some("edr"));

    let mut account = Obj::default();
    account.put_str("id", Some(rec.tenant_id));
    let mut cloud = Obj::default();
    cloud
        .put_str("provider", Some("azure"))
        .put_obj("account", account);

    let mut organization = Obj::default();
    organization
        .put_str("id", Some(rec.tenant_id))
        .put_str("name", Some(rec.tenant_name));

    let mut ecs = Obj::default();
    ecs.put_str("version", Some(ECS_VERSION));

    let mut doc = Obj::default();
    // When this version of the alert came to be: a SIEM searches and sorts
    // alerts by it. The emission time is `event.ingested`.
    let stamp = v
        .updated
        .as_ref()
        .map(|t| t.text.clone())
        .unwrap_or_else(|| emitted.clone());
    doc.put_str("@timestamp", Some(&stamp))
        .put_str("message", v.title.as_deref())
        .put_obj("ecs", ecs)
        .put_obj("event", event)
        .put_obj("rule", rule)
        .put_obj("threat", threat)
        .put_obj("host", host)
        .put_obj("user", user)
        .put_obj("file", file)
        .put_obj("process", process)
        .put_obj("url", url)
        .put_obj("related", related.into_obj())
        .put_obj("observer", observer)
        .put_obj("cloud", cloud)
        .put_obj("organization", organization);
    doc.0
}

fn categories(v: &View) -> Vec<Value> {
    let malware =
        v.category.as_deref().is_some_and(|c| {
            c.eq_ignore_ascii_case("malware") || c.eq_ignore_ascii_case("ransomware")
        }) || v.threat_family.is_some();
    let mut out = vec!["intrusion_detection"];
    if malware {
        out.push("malware");
    }
    if v.host.is_some() {
        out.push("host");
    }
    if v.processes().next().is_some() {
        out.push("process");
    }
    strings(&out)
}

fn file_fields(file: &mut Obj, f: &File) {
    file.put_str("name", f.name.as_deref())
        .put_str("directory", f.dir.as_deref())
        .put_str("path", f.full_path().as_deref())
        .put("size", f.size.map(Value::from));
    let mut hash = Obj::default();
    hash.put_str("sha1", f.sha1.as_deref().filter(|h| is_hex(h)))
        .put_str("sha256", f.sha256.as_deref().filter(|h| is_hex(h)));
    file.put_obj("hash", hash);
}

fn url_fields(url: &mut Obj, text: &str) {
    url.put_str("original", Some(text));
    if let Ok(u) = url::Url::parse(text) {
        url.put_str("full", Some(u.as_str()))
            .put_str("scheme", Some(u.scheme()))
            .put_str("domain", u.host_str())
            .put("port", u.port().map(Value::from))
            .put_str("path", Some(u.path()).filter(|p| !p.is_empty()))
            .put_str("query", u.query())
            .put_str("fragment", u.fragment());
    }
}

/// `related.*`: every value once, in the order first seen.
#[derive(Default)]
struct Related {
    ip: Vec<String>,
    hosts: Vec<String>,
    user: Vec<String>,
    hash: Vec<String>,
}

fn push_unique(list: &mut Vec<String>, s: &str) {
    if !list.iter().any(|x| x == s) {
        list.push(s.to_owned());
    }
}

impl Related {
    fn ips<'a>(&mut self, ips: impl IntoIterator<Item = &'a str>) {
        for ip in ips {
            push_unique(&mut self.ip, ip);
        }
    }

    fn hosts(&mut self, name: Option<String>) {
        if let Some(n) = name {
            push_unique(&mut self.hosts, &n);
        }
    }

    fn user(&mut self, name: Option<&str>) {
        if let Some(n) = name {
            push_unique(&mut self.user, n);
        }
    }

    fn hash(&mut self, h: Option<&str>) {
        if let Some(h) = h.filter(|h| is_hex(h)) {
            push_unique(&mut self.hash, h);
        }
    }

    fn into_obj(self) -> Obj {
        let mut o = Obj::default();
        o.put_list("ip", strings(&self.ip))
            .put_list("hosts", strings(&self.hosts))
            .put_list("user", strings(&self.user))
            .put_list("hash", strings(&self.hash));
        o
    }
}

/// ECS `ip` fields reject anything else: Elasticsearch drops the document.
fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Splits `T1059.001` into its technique `T1059` and the sub-technique.
fn split_techniques(all: &[String]) -> (Vec<&str>, Vec<&str>) {
    let (mut techniques, mut subs) = (Vec::new(), Vec::new());
    for t in all {
        let parent = match t.split_once('.') {
            Some((parent, _)) => {
                subs.push(t.as_str());
                parent
            }
            None => t.as_str(),
        };
        if !techniques.contains(&parent) {
            techniques.push(parent);
        }
    }
    (techniques, subs)
}
