//! Each tenant's alerts: realistic generated objects, caller-built ones, their
//! updates, and the query that answers `GET /api/alerts`.
//!
//! Every alert is rendered to JSON once, when it changes, and a response is
//! built by concatenating those strings: a page of 10,000 alerts out of
//! 100,000 must cost a scan and a copy, never a serialisation.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::graph::{self, ServiceSource};
use super::odata::{Fields, Filter};
use crate::timestamp::{Timestamp, TICKS_PER_SECOND};

pub(crate) const ODATA_CONTEXT: &str =
    "https://api.securitycenter.microsoft.com/api/$metadata#Alerts";

/// Why a caller-built alert was refused by `insert_alert`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("an alert must be a JSON object with a string \"id\"")]
    NoId,
    #[error("alert {0}: \"lastUpdateTime\" is missing or not an ISO 8601 UTC timestamp")]
    BadLastUpdateTime(String),
    #[error("alert {0}: \"lastUpdateDateTime\" is missing or not an ISO 8601 UTC timestamp")]
    BadLastUpdateDateTime(String),
}

/// One alert as stored. An MDE alert keeps its rendered MDE JSON split around
/// `evidence`, so that a response can include or leave out the evidence
/// without re-rendering, and gets its Graph form rendered on the first Graph
/// read of that version; an alert only Graph has has no MDE form.
#[derive(Clone)]
struct Stored {
    id: Arc<str>,
    id_hash: u64,
    last_update: Timestamp,
    last_update_text: Arc<str>,
    created: Timestamp,
    /// Graph's `serviceSource` (`microsoftDefenderForEndpoint` for MDE alerts).
    service_source: Arc<str>,
    mde: Option<MdeForm>,
    graph: OnceLock<Arc<graph::Rendered>>,
}

#[derive(Clone)]
struct MdeForm {
    /// The object without `evidence` and without its closing brace, ending in
    /// `{` or `,`, so `head + "\"evidence\":" + evidence + "}"` is the alert.
    head: Arc<str>,
    evidence: Arc<str>,
    generated: bool,
}

impl Stored {
    fn from_value(mut v: Value, generated: bool) -> Result<Stored, AlertError> {
        let obj = v.as_object_mut().ok_or(AlertError::NoId)?;
        let id: Arc<str> = obj
            .get("id")
            .and_then(Value::as_str)
            .ok_or(AlertError::NoId)?
            .into();
        let lut_text: Arc<str> = obj
            .get("lastUpdateTime")
            .and_then(Value::as_str)
            .ok_or_else(|| AlertError::BadLastUpdateTime(id.to_string()))?
            .into();
        let last_update = Timestamp::parse(&lut_text)
            .map_err(|_| AlertError::BadLastUpdateTime(id.to_string()))?;
        let created = obj
            .get("alertCreationTime")
            .and_then(Value::as_str)
            .and_then(|s| Timestamp::parse(s).ok())
            .unwrap_or(last_update);
        let evidence = obj.remove("evidence").unwrap_or(Value::Array(Vec::new()));
        let evidence = if evidence.is_null() {
            Value::Array(Vec::new())
        } else {
            evidence
        };
        let rest = serde_json::to_string(&v).expect("a JSON value always serialises");
        Ok(Stored::new(
            id,
            last_update,
            lut_text,
            created,
            rest,
            evidence.to_string(),
            generated,
        ))
    }

    fn from_generated(a: &GenAlert) -> Stored {
        let rest = serde_json::to_string(a).expect("a generated alert always serialises");
        let evidence = serde_json::to_string(&a.evidence).expect("evidence always serialises");
        let last_update = Timestamp::parse(&a.last_update_time).expect("generated times parse");
        let created = Timestamp::parse(&a.alert_creation_time).expect("generated times parse");
        Stored::new(
            a.id.as_str().into(),
            last_update,
            a.last_update_time.as_str().into(),
            created,
            rest,
            evidence,
            true,
        )
    }

    fn new(
        id: Arc<str>,
        last_update: Timestamp,
        last_update_text: Arc<str>,
        created: Timestamp,
        rest: String,
        evidence: String,
        generated: bool,
    ) -> Stored {
        let mut head = rest;
        head.pop(); // the closing brace
        if head.len() > 1 {
            head.push(',');
        }
        Stored {
            id_hash: xxhash_rust::xxh3::xxh3_64(id.as_bytes()),
            id,
            last_update,
            last_update_text,
            created,
            service_source: ServiceSource::DefenderForEndpoint.as_str().into(),
            mde: Some(MdeForm {
                head: head.into(),
                evidence: evidence.into(),
                generated,
            }),
            graph: OnceLock::new(),
        }
    }

    /// An alert only Graph has, from its Graph-form object.
    fn from_graph_value(v: &Value) -> Result<Stored, AlertError> {
        let id: Arc<str> = v
            .get("id")
            .and_then(Value::as_str)
            .ok_or(AlertError::NoId)?
            .into();
        let lut_text: Arc<str> = v
            .get("lastUpdateDateTime")
            .and_then(Value::as_str)
            .ok_or_else(|| AlertError::BadLastUpdateDateTime(id.to_string()))?
            .into();
        let last_update = Timestamp::parse(&lut_text)
            .map_err(|_| AlertError::BadLastUpdateDateTime(id.to_string()))?;
        let created = v
            .get("createdDateTime")
            .and_then(Value::as_str)
            .and_then(|s| Timestamp::parse(s).ok())
            .unwrap_or(last_update);
        let service_source = v
            .get("serviceSource")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .into();
        let graph = OnceLock::new();
        let _ = graph.set(Arc::new(graph::Rendered::new(v)));
        Ok(Stored {
            id_hash: xxhash_rust::xxh3::xxh3_64(id.as_bytes()),
            id,
            last_update,
            last_update_text: lut_text,
            created,
            service_source,
            mde: None,
            graph,
        })
    }

    fn graph_only(&self) -> bool {
        self.mde.is_none()
    }

    /// The MDE form with evidence; `None` for an alert only Graph has.
    fn full_json(&self) -> Option<String> {
        let m = self.mde.as_ref()?;
        let mut s = String::with_capacity(m.head.len() + m.evidence.len() + 16);
        self.write(&mut s, true);
        Some(s)
    }

    fn write(&self, out: &mut String, expand: bool) {
        let Some(m) = &self.mde else { return };
        out.push_str(&m.head);
        out.push_str("\"evidence\":");
        out.push_str(if expand { &m.evidence } else { "[]" });
        out.push('}');
    }

    /// The Graph form of this version, rendered on first use.
    fn graph(&self) -> &graph::Rendered {
        self.graph.get_or_init(|| {
            let mde: Value = self
                .full_json()
                .and_then(|j| serde_json::from_str(&j).ok())
                .unwrap_or(Value::Null);
            Arc::new(graph::Rendered::new(&graph::from_mde(&mde)))
        })
    }

    fn fields(&self) -> Fields<'_> {
        Fields {
            last_update: self.last_update,
            created: self.created,
            service_source: &self.service_source,
        }
    }
}

/// One tenant's alerts.
#[derive(Default)]
pub(crate) struct AlertSet {
    alerts: Vec<Stored>,
    index: HashMap<Arc<str>, usize>,
    /// Bumped on every change: the MDE response order is a function of it, so
    /// an unchanged set answers an identical request identically (and `$skip`
    /// pages over one instant work) while any change reshuffles.
    generation: u64,
    /// (id, update time as written, only Graph has it)
    versions: Vec<(String, String, bool)>,
}

/// What a `GET /api/alerts` asks for.
pub(crate) struct Query<'a> {
    pub filter: Option<&'a Filter>,
    pub top: usize,
    pub skip: usize,
    pub expand: bool,
    pub seed: u64,
}

/// What a `GET /v1.0/security/alerts_v2` asks for, `top` already clamped.
pub(crate) struct GraphQuery<'a> {
    pub filter: Option<&'a Filter>,
    pub top: usize,
    pub skip: usize,
    /// `Prefer: include-unknown-enum-members` was sent.
    pub include_unknown: bool,
    /// `$count=true`.
    pub count: bool,
    /// Where more is to come: the nextLink for `$skip = skip + top` is this
    /// prefix followed by that number.
    pub next_link_prefix: &'a str,
    pub next_link_suffix: &'a str,
}

/// A page as served.
pub(crate) struct Page {
    pub body: String,
    pub served: usize,
    pub has_next: bool,
}

impl AlertSet {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.alerts.len()
    }

    fn put(&mut self, s: Stored) {
        self.generation += 1;
        self.versions.push((
            s.id.to_string(),
            s.last_update_text.to_string(),
            s.graph_only(),
        ));
        match self.index.get(&s.id) {
            Some(&i) => self.alerts[i] = s,
            None => {
                self.index.insert(s.id.clone(), self.alerts.len());
                self.alerts.push(s);
            }
        }
    }

    pub(crate) fn insert_value(&mut self, v: Value) -> Result<String, AlertError> {
        let s = Stored::from_value(v, false)?;
        let id = s.id.to_string();
        self.put(s);
        Ok(id)
    }

    #[cfg(test)]
    pub(crate) fn insert_graph_value(&mut self, v: &Value) -> Result<String, AlertError> {
        let s = Stored::from_graph_value(v)?;
        let id = s.id.to_string();
        self.put(s);
        Ok(id)
    }

    fn fresh_id(&self, rng: &mut impl Rng, prefix: &str) -> String {
        loop {
            let id = format!(
                "{prefix}{:018}_{:010}",
                rng.gen_range(0..1_000_000_000_000_000_000u64),
                rng.gen_range(0..10_000_000_000u64)
            );
            if !self.index.contains_key(id.as_str()) {
                break id;
            }
        }
    }

    /// `at` truncated to a random 1–7 fractional digits (never below `floor`).
    fn stamp(rng: &mut impl Rng, at: Timestamp, floor: Timestamp) -> Timestamp {
        let digits = rng.gen_range(1..=7u32);
        let unit = 10i64.pow(7 - digits);
        let lut = Timestamp::from_ticks(at.ticks() - at.ticks().rem_euclid(unit));
        if lut < floor {
            at
        } else {
            lut
        }
    }

    /// A new generated alert whose `lastUpdateTime` is `at`, truncated to a
    /// random 1–7 fractional digits (never below `floor`).
    pub(crate) fn generate_one(
        &mut self,
        rng: &mut impl Rng,
        tenant_id: &str,
        at: Timestamp,
        floor: Timestamp,
    ) -> String {
        let id = self.fresh_id(rng, "da");
        let lut = Self::stamp(rng, at, floor);
        let a = GenAlert::random(rng, id.clone(), tenant_id, lut);
        self.put(Stored::from_generated(&a));
        id
    }

    /// A new alert of `source`: an MDE one (visible through both APIs) for
    /// Defender for Endpoint, else one only Graph has.
    pub(crate) fn generate_source(
        &mut self,
        rng: &mut impl Rng,
        tenant_id: &str,
        source: ServiceSource,
        at: Timestamp,
        floor: Timestamp,
    ) -> String {
        if source == ServiceSource::DefenderForEndpoint {
            return self.generate_one(rng, tenant_id, at, floor);
        }
        let id = self.fresh_id(rng, graph::id_prefix(source));
        let lut = Self::stamp(rng, at, floor);
        let v = graph::generate(rng, &id, tenant_id, source, lut, &format_trimmed(lut));
        let s = Stored::from_graph_value(&v).expect("a generated Graph alert has id and time");
        self.put(s);
        id
    }

    /// Moves an alert on (New → InProgress → Resolved), adds a comment, and
    /// stamps it `at`; refused when `at` is not after its current time.
    pub(crate) fn update(&mut self, rng: &mut impl Rng, id: &str, at: Timestamp) -> bool {
        let Some(&i) = self.index.get(id) else {
            return false;
        };
        let old = &self.alerts[i];
        if at <= old.last_update {
            return false;
        }
        let at_text = format_trimmed(at);
        let comment = Comment {
            comment: COMMENTS
                .choose(rng)
                .copied()
                .unwrap_or("triaged")
                .to_owned(),
            created_by: format!(
                "{}@contoso.com",
                USERS.choose(rng).copied().unwrap_or("soc")
            ),
            created_time: at_text.clone(),
        };
        let Some(json) = old.full_json() else {
            let mut v: Value =
                serde_json::from_str(&old.graph().full).expect("a stored alert parses back");
            graph::update(&mut v, &at_text, &comment.created_by, &comment.comment);
            let s = Stored::from_graph_value(&v).expect("an updated alert keeps its id and time");
            self.put(s);
            return true;
        };
        let generated = old.mde.as_ref().is_some_and(|m| m.generated);
        let s = if generated {
            let mut a: GenAlert =
                serde_json::from_str(&json).expect("a generated alert parses back");
            let (status, resolved) = next_status(&a.status);
            a.status = status.to_owned();
            if resolved {
                a.resolved_time = Some(at_text.clone());
                a.classification = Some("TruePositive".into());
                a.determination = Some("Malware".into());
                a.investigation_state = Some("Benign".into());
            }
            a.assigned_to
                .get_or_insert_with(|| comment.created_by.clone());
            a.comments.push(comment);
            a.last_update_time = at_text;
            Stored::from_generated(&a)
        } else {
            let mut v: Value = serde_json::from_str(&json).expect("a stored alert parses back");
            let obj = v.as_object_mut().expect("stored alerts are objects");
            let current = obj
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("New")
                .to_owned();
            let (status, resolved) = next_status(&current);
            obj.insert("status".into(), status.into());
            if resolved {
                obj.insert("resolvedTime".into(), at_text.clone().into());
            }
            let comments = obj
                .entry("comments")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = comments {
                list.push(serde_json::to_value(&comment).expect("a comment serialises"));
            }
            obj.insert("lastUpdateTime".into(), at_text.into());
            Stored::from_value(v, false).expect("an updated alert keeps its id and time")
        };
        self.put(s);
        true
    }

    /// A random alert id (for live activity), if any.
    pub(crate) fn random_id(&self, rng: &mut impl Rng) -> Option<(String, Timestamp)> {
        self.alerts
            .choose(rng)
            .map(|s| (s.id.to_string(), s.last_update))
    }

    /// The versions `/api/alerts` could ever serve (no Graph-only ones).
    #[cfg(test)]
    pub(crate) fn versions(&self) -> Vec<(String, String)> {
        self.versions
            .iter()
            .filter(|v| !v.2)
            .map(|(id, t, _)| (id.clone(), t.clone()))
            .collect()
    }

    /// The versions alerts_v2 could ever serve (every one).
    pub(crate) fn graph_versions(&self) -> Vec<(String, String)> {
        self.versions
            .iter()
            .map(|(id, t, _)| (id.clone(), t.clone()))
            .collect()
    }

    pub(crate) fn current(&self) -> Vec<Value> {
        self.alerts
            .iter()
            .filter_map(Stored::full_json)
            .map(|j| serde_json::from_str(&j).expect("stored alerts are JSON"))
            .collect()
    }

    pub(crate) fn graph_current(&self) -> Vec<Value> {
        self.alerts
            .iter()
            .map(|s| serde_json::from_str(&s.graph().full).expect("stored alerts are JSON"))
            .collect()
    }

    /// Renders every Graph form now, so that the first Graph read of a large
    /// set costs a copy, not a conversion (benchmarks call it before timing).
    pub(crate) fn render_graph(&self) {
        for s in &self.alerts {
            s.graph();
        }
    }

    /// The response body of a query, and how many alerts matched its filter:
    /// matches in an order that is a hash of the id and of the set's
    /// generation, then `$skip`, then `$top`. Alerts only Graph has are not
    /// served here.
    pub(crate) fn query(&self, q: &Query<'_>) -> (String, usize) {
        let seed = q.seed ^ self.generation.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut hits: Vec<(u64, u32)> = self
            .alerts
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.graph_only() && q.filter.is_none_or(|f| f.matches(&s.fields())))
            .map(|(i, s)| (mix(s.id_hash ^ seed), i as u32))
            .collect();
        let matched = hits.len();
        let end = q.skip.saturating_add(q.top).min(hits.len());
        let start = q.skip.min(end);
        if end < hits.len() {
            hits.select_nth_unstable(end);
            hits.truncate(end);
        }
        hits.sort_unstable();
        let page = &hits[start..end];
        let size: usize = page
            .iter()
            .map(|&(_, i)| {
                let s = &self.alerts[i as usize];
                s.mde.as_ref().map_or(0, |m| {
                    m.head.len() + 16 + if q.expand { m.evidence.len() } else { 2 }
                })
            })
            .sum();
        let mut out = String::with_capacity(size + 128);
        out.push_str("{\"@odata.context\":\"");
        out.push_str(ODATA_CONTEXT);
        out.push_str("\",\"value\":[");
        for (n, &(_, i)) in page.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            self.alerts[i as usize].write(&mut out, q.expand);
        }
        out.push_str("]}");
        (out, matched)
    }

    /// The alerts_v2 page: every alert (MDE and Graph-only) that matches,
    /// most recently updated first as Microsoft documents ("the most recent
    /// alerts are displayed at the top"), ties by id hash, then `$skip` and
    /// `$top` over that live order: an alert updated between two pages moves
    /// to the top, so offset paging skips or repeats, as on the real service.
    pub(crate) fn graph_query(&self, q: &GraphQuery<'_>) -> Page {
        let mut hits: Vec<(std::cmp::Reverse<i64>, u64, u32)> = self
            .alerts
            .iter()
            .enumerate()
            .filter(|(_, s)| q.filter.is_none_or(|f| f.matches(&s.fields())))
            .map(|(i, s)| {
                (
                    std::cmp::Reverse(s.last_update.ticks()),
                    s.id_hash,
                    i as u32,
                )
            })
            .collect();
        let matched = hits.len();
        let end = q.skip.saturating_add(q.top).min(hits.len());
        let start = q.skip.min(end);
        if end < hits.len() {
            hits.select_nth_unstable(end);
            hits.truncate(end);
        }
        hits.sort_unstable();
        let page = &hits[start..end];
        let has_next = q.top > 0 && end < matched;
        let texts: Vec<&str> = page
            .iter()
            .map(|&(_, _, i)| self.alerts[i as usize].graph().text(q.include_unknown))
            .collect();
        let size: usize = texts.iter().map(|t| t.len() + 1).sum();
        let mut out = String::with_capacity(size + 256);
        out.push_str("{\"@odata.context\":\"");
        out.push_str(graph::ODATA_CONTEXT);
        out.push('"');
        if q.count {
            out.push_str(&format!(",\"@odata.count\":{matched}"));
        }
        if has_next {
            // Graph writes the link before `value`; a client must not
            // assume it comes last.
            out.push_str(",\"@odata.nextLink\":\"");
            out.push_str(q.next_link_prefix);
            out.push_str(&end.to_string());
            out.push_str(q.next_link_suffix);
            out.push('"');
        }
        out.push_str(",\"value\":[");
        for (n, t) in texts.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            out.push_str(t);
        }
        out.push_str("]}");
        Page {
            body: out,
            served: page.len(),
            has_next,
        }
    }
}

fn next_status(current: &str) -> (&'static str, bool) {
    match current {
        "New" | "Unknown" => ("InProgress", false),
        _ => ("Resolved", true),
    }
}

/// splitmix64's finaliser: spreads a hash so nearby seeds give unrelated orders.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The shortest text that is exactly `t`: 1 to 7 fractional digits, as the
/// service writes them (`…:59.2Z`, `…:57.7220239Z`).
pub(crate) fn format_trimmed(t: Timestamp) -> String {
    let full = t.to_string(); // …SS.fffffffZ
    let body = &full[..full.len() - 1];
    let trimmed = body.trim_end_matches('0');
    let trimmed = if trimmed.ends_with('.') {
        &body[..trimmed.len() + 1]
    } else {
        trimmed
    };
    format!("{trimmed}Z")
}

// ---- the generated alert, field order as the service writes it ----

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenAlert {
    id: String,
    incident_id: Option<u64>,
    investigation_id: Option<u64>,
    assigned_to: Option<String>,
    severity: String,
    status: String,
    classification: Option<String>,
    determination: Option<String>,
    investigation_state: Option<String>,
    detection_source: String,
    detector_id: Option<String>,
    category: String,
    threat_family_name: Option<String>,
    title: String,
    description: String,
    alert_creation_time: String,
    first_event_time: String,
    last_event_time: String,
    last_update_time: String,
    resolved_time: Option<String>,
    machine_id: String,
    computer_dns_name: String,
    rbac_group_name: Option<String>,
    aad_tenant_id: String,
    threat_name: Option<String>,
    mitre_techniques: Vec<String>,
    related_user: Option<RelatedUser>,
    comments: Vec<Comment>,
    // Rendered apart (see `Stored::head`); kept last as the service writes it.
    #[serde(skip_serializing, default)]
    evidence: Vec<Evidence>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RelatedUser {
    user_name: String,
    domain_name: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Comment {
    comment: String,
    created_by: String,
    created_time: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Evidence {
    entity_type: String,
    evidence_creation_time: String,
    sha1: Option<String>,
    sha256: Option<String>,
    file_name: Option<String>,
    file_path: Option<String>,
    process_id: Option<u32>,
    process_command_line: Option<String>,
    process_creation_time: Option<String>,
    parent_process_id: Option<u32>,
    parent_process_creation_time: Option<String>,
    parent_process_file_name: Option<String>,
    parent_process_file_path: Option<String>,
    ip_address: Option<String>,
    url: Option<String>,
    registry_key: Option<String>,
    registry_hive: Option<String>,
    registry_value_type: Option<String>,
    registry_value: Option<String>,
    account_name: Option<String>,
    domain_name: Option<String>,
    user_sid: Option<String>,
    aad_user_id: Option<String>,
    user_principal_name: Option<String>,
    detection_status: Option<String>,
}

const SEVERITIES: &[&str] = &[
    "Informational",
    "Low",
    "Low",
    "Medium",
    "Medium",
    "High",
    "UnSpecified",
];
const SOURCES: &[&str] = &[
    "WindowsDefenderAtp",
    "WindowsDefenderAv",
    "CustomDetection",
    "AutomatedInvestigation",
    "MTP",
    "CustomerTI",
];
/// (category, title, description, mitre techniques)
const KINDS: &[(&str, &str, &str, &[&str])] = &[
    (
        "Execution",
        "Low-reputation arbitrary code executed by signed executable",
        "Binaries signed by Microsoft can be used to run low-reputation arbitrary code and bypass application control.",
        &["T1064", "T1085", "T1220"],
    ),
    (
        "CredentialAccess",
        "Suspicious access to LSASS service",
        "A process accessed the memory of the Local Security Authority Subsystem Service, possibly to dump credentials.",
        &["T1003.001"],
    ),
    (
        "Malware",
        "'Emotet' malware was detected",
        "Malware and unwanted software are undesirable applications that perform annoying, disruptive, or harmful actions.",
        &[],
    ),
    (
        "LateralMovement",
        "Suspicious remote PowerShell execution",
        "A remote PowerShell session ran commands associated with lateral movement.",
        &["T1021.006", "T1059.001"],
    ),
    (
        "Persistence",
        "Anomaly detected in ASEP registry",
        "A process registered a suspicious command or file in an autostart registry key.",
        &["T1547.001", "T1112"],
    ),
    (
        "DefenseEvasion",
        "Suspicious process injection observed",
        "A process injected code into another process, a technique used to evade defenses.",
        &["T1055", "T1055.002"],
    ),
    (
        "CommandAndControl",
        "Connection to a custom network indicator",
        "A connection was made to a network indicator on the organization's block list.",
        &["T1071"],
    ),
    (
        "Ransomware",
        "Ransomware behavior detected in the file system",
        "Many files were modified in a way that resembles ransomware encrypting them.",
        &["T1486", "T1490"],
    ),
];
const HOSTS: &[&str] = &[
    "wks-0142",
    "wks-2231",
    "srv-sql01",
    "srv-dc02",
    "lap-jsmith",
    "lap-mlee",
    "kiosk-7",
];
const DOMAINS: &[&str] = &["corp.contoso.com", "emea.contoso.com", "fabrikam.local"];
const USERS: &[&str] = &[
    "jsmith",
    "mlee",
    "akumar",
    "svc_backup",
    "administrator",
    "secop123",
];
const COMMENTS: &[&str] = &[
    "Investigating with the endpoint owner",
    "False positive: approved admin tool",
    "Isolated the device pending review",
    "Escalated to tier 2",
];
const THREATS: &[&str] = &[
    "Trojan:Win32/Emotet.PA!MTB",
    "Ransom:Win32/LockBit.AA",
    "HackTool:Win32/Mimikatz",
];

fn hex(rng: &mut impl Rng, n: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(n);
    while s.len() < n {
        let mut x: u64 = rng.gen();
        for _ in 0..16.min(n - s.len()) {
            s.push(char::from(DIGITS[(x & 15) as usize]));
            x >>= 4;
        }
    }
    s
}

/// A v4 GUID from the seeded generator (not the OS: cheap, and reproducible).
fn guid(rng: &mut impl Rng) -> String {
    uuid::Builder::from_random_bytes(rng.gen())
        .into_uuid()
        .to_string()
}

fn before(rng: &mut impl Rng, t: Timestamp, max_secs: i64) -> Timestamp {
    Timestamp::from_ticks(t.ticks() - rng.gen_range(1..max_secs * TICKS_PER_SECOND))
}

impl GenAlert {
    fn random(rng: &mut impl Rng, id: String, tenant_id: &str, last_update: Timestamp) -> GenAlert {
        let (category, title, description, mitre) = *KINDS.choose(rng).expect("non-empty");
        let created = before(rng, last_update, 3600);
        let last_event = before(rng, created, 300);
        let first_event = before(rng, last_event, 120);
        let status = *["New", "New", "New", "InProgress", "Resolved"]
            .choose(rng)
            .expect("non-empty");
        let resolved = status == "Resolved";
        let host = *HOSTS.choose(rng).expect("non-empty");
        let domain = *DOMAINS.choose(rng).expect("non-empty");
        let user = *USERS.choose(rng).expect("non-empty");
        let malware = category == "Malware" || category == "Ransomware";
        let evidence = (0..rng.gen_range(1..=3))
            .map(|_| Evidence::random(rng, created, user, domain))
            .collect();
        GenAlert {
            id,
            incident_id: Some(rng.gen_range(1_000..2_000_000)),
            investigation_id: rng.gen_bool(0.5).then(|| rng.gen_range(1..100_000)),
            assigned_to: (status != "New").then(|| {
                format!(
                    "{}@contoso.com",
                    USERS.choose(rng).copied().unwrap_or("soc")
                )
            }),
            severity: SEVERITIES.choose(rng).copied().unwrap_or("Low").to_owned(),
            status: status.to_owned(),
            classification: resolved.then(|| "TruePositive".to_owned()),
            determination: resolved.then(|| "Malware".to_owned()),
            investigation_state: Some(
                [
                    "Queued",
                    "Running",
                    "PendingApproval",
                    "Benign",
                    "UnsupportedOs",
                ]
                .choose(rng)
                .copied()
                .unwrap_or("Queued")
                .to_owned(),
            ),
            detection_source: SOURCES
                .choose(rng)
                .copied()
                .unwrap_or("WindowsDefenderAtp")
                .to_owned(),
            detector_id: rng.gen_bool(0.8).then(|| guid(rng)),
            category: category.to_owned(),
            threat_family_name: malware.then(|| "Emotet".to_owned()),
            title: title.to_owned(),
            description: description.to_owned(),
            alert_creation_time: created.to_string(),
            first_event_time: first_event.to_string(),
            last_event_time: last_event.to_string(),
            last_update_time: format_trimmed(last_update),
            resolved_time: resolved.then(|| format_trimmed(last_update)),
            machine_id: hex(rng, 40),
            computer_dns_name: format!("{host}.{domain}"),
            rbac_group_name: rng.gen_bool(0.7).then(|| {
                ["A", "Servers", "Workstations"]
                    .choose(rng)
                    .copied()
                    .unwrap_or("A")
                    .to_owned()
            }),
            aad_tenant_id: tenant_id.to_owned(),
            threat_name: malware
                .then(|| THREATS.choose(rng).copied().unwrap_or("Trojan").to_owned()),
            mitre_techniques: mitre.iter().map(|s| (*s).to_owned()).collect(),
            related_user: rng.gen_bool(0.8).then(|| RelatedUser {
                user_name: user.to_owned(),
                domain_name: domain.split('.').next().unwrap_or("CORP").to_uppercase(),
            }),
            comments: Vec::new(),
            evidence,
        }
    }
}

impl Evidence {
    fn random(rng: &mut impl Rng, created: Timestamp, user: &str, domain: &str) -> Evidence {
        let kind = *["Process", "File", "User", "Ip", "Url", "Registry"]
            .choose(rng)
            .expect("non-empty");
        let proc_time = before(rng, created, 200);
        let file = *[
            "rundll32.exe",
            "powershell.exe",
            "invoice.docm",
            "svchost.exe",
            "payload.dll",
        ]
        .choose(rng)
        .expect("non-empty");
        let is_file = matches!(kind, "Process" | "File");
        let is_proc = kind == "Process";
        Evidence {
            entity_type: kind.to_owned(),
            evidence_creation_time: before(rng, created, 5).to_string(),
            sha1: is_file.then(|| hex(rng, 40)),
            sha256: is_file.then(|| hex(rng, 64)),
            file_name: is_file.then(|| file.to_owned()),
            file_path: is_file.then(|| "C:\\Windows\\SysWOW64".to_owned()),
            process_id: is_proc.then(|| rng.gen_range(100..20_000)),
            process_command_line: is_proc
                .then(|| format!("{file}  c:\\temp\\suspicious.dll,RepeatAfterMe")),
            process_creation_time: is_proc.then(|| proc_time.to_string()),
            parent_process_id: is_proc.then(|| rng.gen_range(100..20_000)),
            parent_process_creation_time: is_proc.then(|| before(rng, proc_time, 60).to_string()),
            parent_process_file_name: is_proc.then(|| "explorer.exe".to_owned()),
            parent_process_file_path: is_proc.then(|| "C:\\Windows".to_owned()),
            ip_address: (kind == "Ip").then(|| format!("203.0.113.{}", rng.gen_range(1..255))),
            url: (kind == "Url").then(|| "http://malicious.example.net/dl".to_owned()),
            registry_key: (kind == "Registry")
                .then(|| "SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run".to_owned()),
            registry_hive: (kind == "Registry").then(|| "HKEY_LOCAL_MACHINE".to_owned()),
            registry_value_type: (kind == "Registry").then(|| "String".to_owned()),
            registry_value: (kind == "Registry")
                .then(|| "C:\\Users\\Public\\updater.exe".to_owned()),
            account_name: (kind == "User").then(|| user.to_owned()),
            domain_name: (kind == "User").then(|| domain.to_uppercase()),
            user_sid: (kind == "User").then(|| {
                format!(
                    "S-1-5-21-{}-{}",
                    rng.gen_range(1_000_000..9_999_999),
                    rng.gen_range(1000..9999)
                )
            }),
            aad_user_id: (kind == "User" && rng.gen_bool(0.5)).then(|| guid(rng)),
            user_principal_name: (kind == "User").then(|| format!("{user}@contoso.com")),
            detection_status: is_file.then(|| {
                ["Detected", "Blocked", "Prevented"]
                    .choose(rng)
                    .copied()
                    .unwrap_or("Detected")
                    .to_owned()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn generated_alerts_carry_every_field_and_round_trip_their_time() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut set = AlertSet::default();
        let from = Timestamp::parse("2026-11-26T10:00:00Z").unwrap();
        let mut digit_counts = std::collections::HashSet::new();
        for i in 0..200 {
            set.generate_one(
                &mut rng,
                "t",
                Timestamp::from_ticks(from.ticks() + i * 1_234_567),
                from,
            );
        }
        for v in set.current() {
            for key in [
                "id",
                "incidentId",
                "severity",
                "status",
                "title",
                "lastUpdateTime",
                "evidence",
                "mitreTechniques",
                "comments",
                "machineId",
            ] {
                assert!(v.get(key).is_some(), "{key} missing in {v}");
            }
            let text = v["lastUpdateTime"].as_str().unwrap();
            let ts = Timestamp::parse(text).unwrap();
            assert_eq!(format_trimmed(ts), text);
            digit_counts.insert(text.len());
            assert!(v["incidentId"].is_u64());
            let ev = v["evidence"].as_array().unwrap().len();
            assert!((1..=3).contains(&ev));
        }
        assert!(
            digit_counts.len() >= 5,
            "times use varied precision: {digit_counts:?}"
        );
    }

    #[test]
    fn trimmed_format_is_the_shortest_exact_text() {
        for s in [
            "2021-01-26T20:33:59.2Z",
            "2021-01-26T20:33:50.19Z",
            "2021-01-26T20:33:57.7220239Z",
            "2021-01-26T20:33:57.0Z",
        ] {
            assert_eq!(format_trimmed(Timestamp::parse(s).unwrap()), s);
        }
    }
}
