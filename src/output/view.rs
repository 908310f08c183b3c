//! One reading of an alert for the mapped formats, whichever API it came
//! from: the MDE alert (`/api/alerts`, PascalCase enums, flat evidence with
//! `entityType`) and the Graph alert (`alerts_v2`, camelCase enums, evidence
//! typed by `@odata.type`) become the same [`View`], so `ecs` and `ocsf` map
//! one shape and the two sources cannot drift apart.
//!
//! Reading never fails: a property that is null, absent, of another type or
//! unreadable (nesting past the parser's limit) is simply not there.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::formats::clean_text;
use super::AlertSource;
use crate::timestamp::Timestamp;

/// A time property that really is one, with the API's text kept.
#[derive(Debug, Clone)]
pub(super) struct Time {
    pub text: String,
    pub at: Timestamp,
}

impl Time {
    pub(super) fn millis(&self) -> i64 {
        self.at.ticks().div_euclid(10_000)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Severity {
    Informational,
    Low,
    Medium,
    High,
    /// MDE `UnSpecified`, Graph `unknown` / `unknownFutureValue`.
    Unknown,
    /// A value neither API documents (kept as text by the mappings).
    Other,
}

impl Severity {
    fn parse(s: &str) -> Severity {
        match s.to_ascii_lowercase().as_str() {
            "informational" => Severity::Informational,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "unspecified" | "unknown" | "unknownfuturevalue" => Severity::Unknown,
            _ => Severity::Other,
        }
    }

    /// Informational 1 … High 4, Unknown 0 (ECS `event.severity`, OCSF `severity_id`).
    pub(super) fn rank(self) -> Option<u8> {
        match self {
            Severity::Unknown => Some(0),
            Severity::Informational => Some(1),
            Severity::Low => Some(2),
            Severity::Medium => Some(3),
            Severity::High => Some(4),
            Severity::Other => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    New,
    InProgress,
    Resolved,
    Unknown,
    Other,
}

impl Status {
    fn parse(s: &str) -> Status {
        match s.to_ascii_lowercase().as_str() {
            "new" => Status::New,
            "inprogress" => Status::InProgress,
            "resolved" => Status::Resolved,
            "unknown" | "unknownfuturevalue" => Status::Unknown,
            _ => Status::Other,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct Host {
    /// As the API spells it (ECS `host.hostname`).
    pub name: Option<String>,
    pub id: Option<String>,
    pub group: Option<String>,
    pub os: Option<String>,
    pub ips: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct User {
    pub name: Option<String>,
    pub domain: Option<String>,
    pub sid: Option<String>,
    pub upn: Option<String>,
    pub aad_id: Option<String>,
    pub display_name: Option<String>,
    pub email: Option<String>,
}

impl User {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.sid.is_none()
            && self.upn.is_none()
            && self.aad_id.is_none()
            && self.email.is_none()
            && self.display_name.is_none()
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct File {
    pub name: Option<String>,
    /// The folder (both APIs put the folder, not the full path, in `filePath`).
    pub dir: Option<String>,
    pub sha1: Option<String>,
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

impl File {
    /// `dir\name`, with the folder's own separator.
    pub(super) fn full_path(&self) -> Option<String> {
        match (&self.dir, &self.name) {
            (Some(d), Some(n)) => {
                let sep = if d.contains('/') && !d.contains('\\') {
                    '/'
                } else {
                    '\\'
                };
                Some(format!("{}{sep}{n}", d.trim_end_matches(['\\', '/'])))
            }
            (None, Some(n)) => Some(n.clone()),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.name.is_none() && self.dir.is_none() && self.sha1.is_none() && self.sha256.is_none()
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct Process {
    pub pid: Option<u64>,
    pub command_line: Option<String>,
    pub started: Option<Time>,
    pub image: File,
    pub parent_pid: Option<u64>,
    pub parent_started: Option<Time>,
    pub parent_image: File,
    pub user: Option<User>,
}

#[derive(Debug, Clone)]
pub(super) enum Evidence {
    File(File),
    /// Boxed: by far the largest kind.
    Process(Box<Process>),
    User(User),
    Ip(String),
    Url(String),
    Device(Host),
    Mailbox(User),
    /// Every other kind (registry keys and values, mail messages, cloud
    /// resources, …): the mappings carry it as the API wrote it.
    Other,
}

/// The alert as the formats see it.
#[derive(Debug, Default)]
pub(super) struct View {
    pub id: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub severity: Option<(Severity, String)>,
    pub status: Option<(Status, String)>,
    pub detection_source: Option<String>,
    pub detector_id: Option<String>,
    /// Graph `serviceSource`; None for MDE alerts (always Defender for Endpoint).
    pub service_source: Option<String>,
    pub created: Option<Time>,
    pub first_activity: Option<Time>,
    pub last_activity: Option<Time>,
    pub updated: Option<Time>,
    pub techniques: Vec<String>,
    pub incident_id: Option<String>,
    pub web_url: Option<String>,
    pub threat_name: Option<String>,
    pub threat_family: Option<String>,
    pub host: Option<Host>,
    pub user: Option<User>,
    pub evidence: Vec<Evidence>,
    /// Each evidence as the API wrote it, in step with `evidence`.
    pub evidence_raw: Vec<Value>,
}

/// The alert's top-level properties. A document that does not parse whole
/// (nesting past serde_json's limit) is read one property at a time, so one
/// unreadable property costs only itself.
pub(super) fn fields(raw: &RawValue) -> Map<String, Value> {
    let text = clean_text(raw.get());
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => Map::new(),
        Err(_) => {
            let parts: std::collections::BTreeMap<String, Box<RawValue>> =
                serde_json::from_str(&text).unwrap_or_default();
            parts
                .into_iter()
                .filter_map(|(k, v)| serde_json::from_str::<Value>(v.get()).ok().map(|v| (k, v)))
                .collect()
        }
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Ids the APIs send as numbers or strings (`incidentId`).
fn id_text(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::Number(n)) => Some(n.to_string()),
        other => text(other),
    }
}

fn time(v: Option<&Value>) -> Option<Time> {
    let text = text(v)?;
    let at = Timestamp::parse(&text).ok()?;
    Some(Time { text, at })
}

fn number(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_u64)
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => {
            let mut out: Vec<String> = Vec::new();
            for s in items.iter().filter_map(|i| text(Some(i))) {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

impl View {
    pub(super) fn read(source: AlertSource, raw: &RawValue) -> View {
        let f = fields(raw);
        match source {
            AlertSource::Mde => View::mde(&f),
            AlertSource::Graph => View::graph(&f),
        }
    }

    fn common(f: &Map<String, Value>) -> View {
        View {
            id: text(f.get("id")),
            title: text(f.get("title")),
            description: text(f.get("description")),
            category: text(f.get("category")),
            severity: text(f.get("severity")).map(|s| (Severity::parse(&s), s)),
            status: text(f.get("status")).map(|s| (Status::parse(&s), s)),
            detection_source: text(f.get("detectionSource")),
            detector_id: text(f.get("detectorId")),
            techniques: string_list(f.get("mitreTechniques")),
            incident_id: id_text(f.get("incidentId")),
            threat_family: text(f.get("threatFamilyName")),
            ..View::default()
        }
    }

    fn mde(f: &Map<String, Value>) -> View {
        let host = Host {
            name: text(f.get("computerDnsName")),
            id: text(f.get("machineId")),
            group: text(f.get("rbacGroupName")),
            ..Host::default()
        };
        let user = f.get("relatedUser").map(|u| User {
            name: text(u.get("userName")),
            domain: text(u.get("domainName")),
            ..User::default()
        });
        let evidence_raw = evidence_list(f);
        let evidence = evidence_raw.iter().map(mde_evidence).collect();
        View {
            created: time(f.get("alertCreationTime")),
            first_activity: time(f.get("firstEventTime")),
            last_activity: time(f.get("lastEventTime")),
            updated: time(f.get("lastUpdateTime")),
            threat_name: text(f.get("threatName")),
            host: (host.name.is_some() || host.id.is_some()).then_some(host),
            user: user.filter(|u| !u.is_empty()),
            evidence,
            evidence_raw,
            ..View::common(f)
        }
    }

    fn graph(f: &Map<String, Value>) -> View {
        let evidence_raw = evidence_list(f);
        let evidence: Vec<Evidence> = evidence_raw.iter().map(graph_evidence).collect();
        // Graph has no machine or user of the alert itself: the first device
        // and the first user in the evidence stand for them, as the Defender
        // portal shows them.
        let host = evidence.iter().find_map(|e| match e {
            Evidence::Device(h) => Some(h.clone()),
            _ => None,
        });
        let user = evidence.iter().find_map(|e| match e {
            Evidence::User(u) => Some(u.clone()),
            _ => None,
        });
        View {
            created: time(f.get("createdDateTime")),
            first_activity: time(f.get("firstActivityDateTime")),
            last_activity: time(f.get("lastActivityDateTime")),
            updated: time(f.get("lastUpdateDateTime")),
            threat_name: text(f.get("threatDisplayName")),
            service_source: text(f.get("serviceSource")),
            web_url: text(f.get("alertWebUrl")),
            host,
            user,
            evidence,
            evidence_raw,
            ..View::common(f)
        }
    }

    /// Every file the evidence names: files, then process images.
    pub(super) fn files(&self) -> impl Iterator<Item = &File> {
        let files = self.evidence.iter().filter_map(|e| match e {
            Evidence::File(f) => Some(f),
            _ => None,
        });
        let images = self.evidence.iter().filter_map(|e| match e {
            Evidence::Process(p) => Some(&p.image),
            _ => None,
        });
        files.chain(images).filter(|f| !f.is_empty())
    }

    pub(super) fn processes(&self) -> impl Iterator<Item = &Process> {
        self.evidence.iter().filter_map(|e| match e {
            Evidence::Process(p) => Some(p.as_ref()),
            _ => None,
        })
    }

    /// Every user the alert names: its own, evidence users, process owners, mailboxes.
    pub(super) fn users(&self) -> Vec<&User> {
        let mut out: Vec<&User> = self.user.iter().collect();
        for e in &self.evidence {
            match e {
                Evidence::User(u) | Evidence::Mailbox(u) => out.push(u),
                Evidence::Process(p) => out.extend(p.user.as_ref()),
                _ => {}
            }
        }
        out
    }
}

fn evidence_list(f: &Map<String, Value>) -> Vec<Value> {
    match f.get("evidence") {
        // A null entry says nothing; every other one is kept.
        Some(Value::Array(items)) => items.iter().filter(|e| !e.is_null()).cloned().collect(),
        _ => Vec::new(),
    }
}

fn mde_evidence(e: &Value) -> Evidence {
    let Some(kind) = text(e.get("entityType")) else {
        return Evidence::Other;
    };
    let file = File {
        name: text(e.get("fileName")),
        dir: text(e.get("filePath")),
        sha1: text(e.get("sha1")),
        sha256: text(e.get("sha256")),
        size: None,
    };
    let user = User {
        name: text(e.get("accountName")),
        domain: text(e.get("domainName")),
        sid: text(e.get("userSid")),
        upn: text(e.get("userPrincipalName")),
        aad_id: text(e.get("aadUserId")),
        ..User::default()
    };
    match kind.to_ascii_lowercase().as_str() {
        "file" => Evidence::File(file),
        "process" => Evidence::Process(Box::new(Process {
            pid: number(e.get("processId")),
            command_line: text(e.get("processCommandLine")),
            started: time(e.get("processCreationTime")),
            image: file,
            parent_pid: number(e.get("parentProcessId")),
            parent_started: time(e.get("parentProcessCreationTime")),
            parent_image: File {
                name: text(e.get("parentProcessFileName")),
                dir: text(e.get("parentProcessFilePath")),
                ..File::default()
            },
            user: Some(user).filter(|u| !u.is_empty()),
        })),
        "user" if !user.is_empty() => Evidence::User(user),
        "ip" => match text(e.get("ipAddress")) {
            Some(ip) => Evidence::Ip(ip),
            None => Evidence::Other,
        },
        "url" => match text(e.get("url")) {
            Some(url) => Evidence::Url(url),
            None => Evidence::Other,
        },
        "machine" => Evidence::Device(Host {
            name: text(e.get("computerDnsName")),
            id: text(e.get("machineId")),
            ..Host::default()
        }),
        _ => Evidence::Other,
    }
}

fn graph_user(u: Option<&Value>) -> User {
    let Some(u) = u else {
        return User::default();
    };
    User {
        name: text(u.get("accountName")),
        domain: text(u.get("domainName")),
        sid: text(u.get("userSid")),
        upn: text(u.get("userPrincipalName")),
        aad_id: text(u.get("azureAdUserId")),
        display_name: text(u.get("displayName")),
        email: None,
    }
}

fn graph_file(f: Option<&Value>) -> File {
    let Some(f) = f else {
        return File::default();
    };
    File {
        name: text(f.get("fileName")),
        dir: text(f.get("filePath")),
        sha1: text(f.get("sha1")),
        sha256: text(f.get("sha256")),
        size: number(f.get("fileSize")),
    }
}

fn graph_evidence(e: &Value) -> Evidence {
    let Some(odata) = text(e.get("@odata.type")) else {
        return Evidence::Other;
    };
    let kind = odata
        .rsplit('.')
        .next()
        .unwrap_or(odata.as_str())
        .to_owned();
    match kind.as_str() {
        "deviceEvidence" => Evidence::Device(Host {
            name: text(e.get("deviceDnsName")),
            id: text(e.get("mdeDeviceId")),
            group: text(e.get("rbacGroupName")),
            os: text(e.get("osPlatform")),
            ips: string_list(e.get("ipInterfaces")),
        }),
        "fileEvidence" => Evidence::File(graph_file(e.get("fileDetails"))),
        "processEvidence" => Evidence::Process(Box::new(Process {
            pid: number(e.get("processId")),
            command_line: text(e.get("processCommandLine")),
            started: time(e.get("processCreationDateTime")),
            image: graph_file(e.get("imageFile")),
            parent_pid: number(e.get("parentProcessId")),
            parent_started: time(e.get("parentProcessCreationDateTime")),
            parent_image: graph_file(e.get("parentProcessImageFile")),
            user: Some(graph_user(e.get("userAccount"))).filter(|u| !u.is_empty()),
        })),
        "userEvidence" => {
            let u = graph_user(e.get("userAccount"));
            if u.is_empty() {
                Evidence::Other
            } else {
                Evidence::User(u)
            }
        }
        "ipEvidence" => match text(e.get("ipAddress")) {
            Some(ip) => Evidence::Ip(ip),
            None => Evidence::Other,
        },
        "urlEvidence" => match text(e.get("url")) {
            Some(url) => Evidence::Url(url),
            None => Evidence::Other,
        },
        "mailboxEvidence" => {
            let mut u = graph_user(e.get("userAccount"));
            u.email = text(e.get("primaryAddress"));
            if u.display_name.is_none() {
                u.display_name = text(e.get("displayName"));
            }
            if u.is_empty() {
                Evidence::Other
            } else {
                Evidence::Mailbox(u)
            }
        }
        _ => Evidence::Other,
    }
}
