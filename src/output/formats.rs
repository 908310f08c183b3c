//! The three line formats: `raw` (the alert verbatim in an envelope), `ecs`
//! (Elastic Common Schema) and `ocsf` (OCSF 1.1.0 Detection Finding).
//! Every mapping is documented field by field in `docs/FORMATS.md`; keep the
//! two in step.
//!
//! Any alert property may be null, absent or of an unexpected type: a
//! mapped field whose source is unusable is omitted, never guessed, and the
//! original object always travels along unchanged.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{Change, Record};
use crate::timestamp::Timestamp;

/// The ECS version the `ecs` mapping follows.
pub const ECS_VERSION: &str = "8.11.0";
/// The OCSF schema version the `ocsf` mapping follows.
pub const OCSF_VERSION: &str = "1.1.0";

const VENDOR: &str = "Microsoft";
const PRODUCT: &str = "Defender for Endpoint";
const PRODUCT_FULL: &str = "Microsoft Defender for Endpoint";

/// `{"@timestamp":…,"type":"mde.alert","change":…,"tenant":{…},"alert":{…}}`.
///
/// Written byte by byte rather than through serde: this is the hot path of a
/// back-fill (100k alerts/s) and the alert itself is copied, not re-parsed.
pub(super) fn raw(buf: &mut Vec<u8>, rec: &Record) {
    buf.extend_from_slice(b"{\"@timestamp\":\"");
    buf.extend_from_slice(rec.timestamp.to_millis_string().as_bytes());
    buf.extend_from_slice(b"\",\"type\":\"mde.alert\",\"change\":\"");
    buf.extend_from_slice(rec.change.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"tenant\":{\"name\":");
    write_json_str(buf, rec.tenant_name);
    buf.extend_from_slice(b",\"id\":");
    write_json_str(buf, rec.tenant_id);
    buf.extend_from_slice(b"},\"alert\":");
    write_one_line(buf, rec.alert.get());
    buf.push(b'}');
}

fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// Copies valid JSON text, dropping the whitespace between tokens only when
/// it holds a line break: an NDJSON line must never be split, and keys,
/// their order and number spellings stay exactly as the API wrote them
/// (a parse into `Value` and back would reorder and re-spell them).
fn write_one_line(buf: &mut Vec<u8>, json: &str) {
    let bytes = json.as_bytes();
    if !bytes.iter().any(|&b| b == b'\n' || b == b'\r') {
        buf.extend_from_slice(bytes);
        return;
    }
    buf.reserve(bytes.len());
    // JSON strings cannot hold a raw control character, so every CR/LF is
    // whitespace between tokens; only the string state must be tracked to
    // keep spaces inside strings.
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            buf.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else {
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'"' => {
                    in_string = true;
                    buf.push(b);
                }
                _ => buf.push(b),
            }
        }
    }
}

/// The alert as a one-line raw value, for nesting inside a serde document.
fn one_line(alert: &RawValue) -> Cow<'_, RawValue> {
    let text = alert.get();
    if !text.bytes().any(|b| b == b'\n' || b == b'\r') {
        return Cow::Borrowed(alert);
    }
    let mut compact = Vec::with_capacity(text.len());
    write_one_line(&mut compact, text);
    // Removing inter-token whitespace from valid JSON keeps it valid UTF-8
    // and valid JSON; fall back to the original rather than panic.
    match String::from_utf8(compact).ok().map(RawValue::from_string) {
        Some(Ok(v)) => Cow::Owned(v),
        _ => Cow::Borrowed(alert),
    }
}

/// Read-only, forgiving access to the alert's properties.
struct Alert(Value);

impl Alert {
    fn parse(raw: &RawValue) -> Result<Alert, serde_json::Error> {
        Ok(Alert(serde_json::from_str(raw.get())?))
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// A non-empty string property.
    fn str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(non_empty)
    }

    /// A timestamp property, only when it really is one: a date field that
    /// a SIEM cannot parse would make it drop the whole document.
    fn time(&self, key: &str) -> Option<(&str, Timestamp)> {
        let s = self.str(key)?;
        Timestamp::parse(s).ok().map(|t| (s, t))
    }

    /// A timestamp in epoch milliseconds (OCSF).
    fn time_ms(&self, key: &str) -> Option<i64> {
        self.time(key).map(|(_, t)| millis(t))
    }

    fn techniques(&self) -> Vec<&str> {
        match self.get("mitreTechniques") {
            Some(Value::Array(items)) => items.iter().filter_map(non_empty).collect(),
            _ => Vec::new(),
        }
    }

    fn related_user(&self, key: &str) -> Option<&str> {
        self.get("relatedUser")
            .and_then(|u| u.get(key))
            .and_then(non_empty)
    }
}

fn non_empty(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

fn millis(t: Timestamp) -> i64 {
    t.ticks().div_euclid(10_000)
}

/// Collects only the fields that have a value, so nothing is emitted as
/// `null` and an object with no fields is left out entirely.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn put(&mut self, key: &str, value: impl Into<Option<Value>>) -> &mut Self {
        if let Some(v) = value.into() {
            self.0.insert(key.to_owned(), v);
        }
        self
    }

    fn put_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        self.put(key, value.map(|s| Value::String(s.to_owned())))
    }

    fn put_obj(&mut self, key: &str, obj: Obj) -> &mut Self {
        if !obj.0.is_empty() {
            self.0.insert(key.to_owned(), Value::Object(obj.0));
        }
        self
    }
}

fn strings(items: &[&str]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|s| Value::String((*s).to_owned()))
            .collect(),
    )
}

/// Splits `T1059.001` into its technique `T1059` and the sub-technique.
fn split_techniques<'a>(all: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    let (mut techniques, mut subs) = (Vec::new(), Vec::new());
    for &t in all {
        let parent = match t.split_once('.') {
            Some((parent, _)) => {
                subs.push(t);
                parent
            }
            None => t,
        };
        if !techniques.contains(&parent) {
            techniques.push(parent);
        }
    }
    (techniques, subs)
}

/// The MDE severity as an ordinal (also the OCSF `severity_id`):
/// Informational 1, Low 2, Medium 3, High 4; `UnSpecified` and unknown
/// values have none.
fn severity_rank(severity: &str) -> Option<u8> {
    match severity.to_ascii_lowercase().as_str() {
        "informational" => Some(1),
        "low" => Some(2),
        "medium" => Some(3),
        "high" => Some(4),
        _ => None,
    }
}

/// The mapped fields plus the original alert, nested as raw JSON so that it
/// is copied, not re-serialized (key order and number spelling preserved).
#[derive(Serialize)]
struct WithOriginal<T: Serialize> {
    #[serde(flatten)]
    fields: Map<String, Value>,
    #[serde(flatten)]
    original: T,
}

#[derive(Serialize)]
struct EcsOriginal<'a> {
    mde: EcsMde<'a>,
}

#[derive(Serialize)]
struct EcsMde<'a> {
    alert: &'a RawValue,
    change: Change,
}

/// Elastic Common Schema.
pub(super) fn ecs(buf: &mut Vec<u8>, rec: &Record) -> Result<(), serde_json::Error> {
    let a = Alert::parse(rec.alert)?;

    let mut event = Obj::default();
    event
        .put_str("kind", Some("alert"))
        .put("category", Some(ecs_categories(&a)))
        .put("type", Some(strings(&["info"])))
        .put_str("action", Some(rec.change.as_str()))
        .put_str("id", a.str("id"))
        .put_str("created", a.time("alertCreationTime").map(|(s, _)| s))
        .put_str("start", a.time("firstEventTime").map(|(s, _)| s))
        .put_str("end", a.time("lastEventTime").map(|(s, _)| s))
        .put(
            "severity",
            a.str("severity").and_then(severity_rank).map(Value::from),
        )
        .put_str("provider", a.str("detectionSource"))
        .put_str("module", Some("mde"))
        .put_str("dataset", Some("mde.alert"));

    let mut rule = Obj::default();
    rule.put_str("name", a.str("title"))
        .put_str("description", a.str("description"))
        .put_str("id", a.str("detectorId"))
        .put_str("category", a.str("category"));

    let mut threat = Obj::default();
    let (techniques, subs) = split_techniques(&a.techniques());
    if !techniques.is_empty() {
        let mut technique = Obj::default();
        technique.put("id", Some(strings(&techniques)));
        if !subs.is_empty() {
            let mut sub = Obj::default();
            sub.put("id", Some(strings(&subs)));
            technique.put_obj("subtechnique", sub);
        }
        threat
            .put_str("framework", Some("MITRE ATT&CK"))
            .put_obj("technique", technique);
    }

    let mut host = Obj::default();
    host.put_str("hostname", a.str("computerDnsName"))
        .put_str("name", a.str("computerDnsName"))
        .put_str("id", a.str("machineId"));

    let mut user = Obj::default();
    user.put_str("name", a.related_user("userName"))
        .put_str("domain", a.related_user("domainName"));

    let mut observer = Obj::default();
    observer
        .put_str("vendor", Some(VENDOR))
        .put_str("product", Some(PRODUCT))
        .put_str("type", Some("edr"));

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
    doc.put_str("@timestamp", Some(&rec.timestamp.to_millis_string()))
        .put_str("message", a.str("title"))
        .put_obj("ecs", ecs)
        .put_obj("event", event)
        .put_obj("rule", rule)
        .put_obj("threat", threat)
        .put_obj("host", host)
        .put_obj("user", user)
        .put_obj("observer", observer)
        .put_obj("cloud", cloud)
        .put_obj("organization", organization);

    let alert = one_line(rec.alert);
    let out = WithOriginal {
        fields: doc.0,
        original: EcsOriginal {
            mde: EcsMde {
                alert: &alert,
                change: rec.change,
            },
        },
    };
    serde_json::to_writer(&mut *buf, &out)
}

fn ecs_categories(a: &Alert) -> Value {
    let malware = a
        .str("category")
        .is_some_and(|c| c.eq_ignore_ascii_case("malware"))
        || a.str("threatFamilyName").is_some();
    if malware {
        strings(&["intrusion_detection", "malware"])
    } else {
        strings(&["intrusion_detection"])
    }
}

#[derive(Serialize)]
struct OcsfOriginal<'a> {
    unmapped: OcsfUnmapped<'a>,
}

#[derive(Serialize)]
struct OcsfUnmapped<'a> {
    alert: &'a RawValue,
    tenant: OcsfTenant<'a>,
}

#[derive(Serialize)]
struct OcsfTenant<'a> {
    name: &'a str,
    id: &'a str,
}

/// OCSF 1.1.0, Detection Finding (class 2004).
pub(super) fn ocsf(buf: &mut Vec<u8>, rec: &Record) -> Result<(), serde_json::Error> {
    let a = Alert::parse(rec.alert)?;
    let (activity_id, activity_name) = match rec.change {
        Change::New => (1u32, "Create"),
        Change::Update => (2u32, "Update"),
    };

    let severity = a.str("severity");
    let severity_id =
        match severity {
            None => 0,
            Some(s) => severity_rank(s).map(u32::from).unwrap_or(
                if s.eq_ignore_ascii_case("unspecified") {
                    0
                } else {
                    99
                },
            ),
        };

    let mut analytic = Obj::default();
    if let Some(detector) = a.str("detectorId") {
        let custom = a.str("detectionSource") == Some("CustomDetection");
        analytic
            .put_str("uid", Some(detector))
            .put_str("name", a.str("detectionSource"))
            .put_str("category", a.str("category"))
            .put("type_id", Some(Value::from(if custom { 1 } else { 0 })))
            .put_str("type", Some(if custom { "Rule" } else { "Unknown" }));
    }

    let mut finding = Obj::default();
    finding
        .put_str("uid", a.str("id"))
        // `title` is required by the schema: fall back to a generic one
        // rather than emit an invalid finding.
        .put_str(
            "title",
            Some(
                a.str("title")
                    .unwrap_or("Microsoft Defender for Endpoint alert"),
            ),
        )
        .put_str("desc", a.str("description"))
        .put(
            "created_time",
            a.time_ms("alertCreationTime").map(Value::from),
        )
        .put(
            "first_seen_time",
            a.time_ms("firstEventTime").map(Value::from),
        )
        .put(
            "last_seen_time",
            a.time_ms("lastEventTime").map(Value::from),
        )
        .put(
            "modified_time",
            a.time_ms("lastUpdateTime").map(Value::from),
        )
        .put("types", a.str("category").map(|c| strings(&[c])))
        .put_obj("analytic", analytic);

    let mut product = Obj::default();
    product
        .put_str("name", Some(PRODUCT_FULL))
        .put_str("vendor_name", Some(VENDOR));
    let mut metadata = Obj::default();
    metadata
        .put_str("version", Some(OCSF_VERSION))
        .put_obj("product", product)
        .put_str(
            "uid",
            a.str("id")
                .map(|id| match a.str("lastUpdateTime") {
                    Some(at) => format!("{id}@{at}"),
                    None => id.to_owned(),
                })
                .as_deref(),
        )
        .put_str("tenant_uid", Some(rec.tenant_id));

    let mut device = Obj::default();
    device
        .put_str("hostname", a.str("computerDnsName"))
        .put_str("name", a.str("computerDnsName"))
        .put_str("uid", a.str("machineId"));
    if let Some(group) = a.str("rbacGroupName") {
        device.put(
            "groups",
            Some(Value::Array(vec![serde_json::json!({ "name": group })])),
        );
    }
    if !device.0.is_empty() {
        device
            .put("type_id", Some(Value::from(0)))
            .put_str("type", Some("Unknown"));
    }

    let attacks: Vec<Value> = a
        .techniques()
        .into_iter()
        .map(|t| match t.split_once('.') {
            Some((parent, _)) => serde_json::json!({
                "technique": { "uid": parent },
                "sub_technique": { "uid": t },
            }),
            None => serde_json::json!({ "technique": { "uid": t } }),
        })
        .collect();

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
        .put("time", Some(Value::from(millis(rec.timestamp))))
        .put("severity_id", Some(Value::from(severity_id)))
        .put_str("severity", severity)
        .put_str("message", a.str("title"))
        .put_obj("finding_info", finding)
        .put_obj("metadata", metadata)
        .put_obj("device", device);
    if let Some((id, name)) = a.str("status").map(ocsf_status) {
        doc.put("status_id", Some(Value::from(id)))
            .put_str("status", Some(name));
    }
    if !attacks.is_empty() {
        doc.put("attacks", Some(Value::Array(attacks)));
    }

    let alert = one_line(rec.alert);
    let out = WithOriginal {
        fields: doc.0,
        original: OcsfOriginal {
            unmapped: OcsfUnmapped {
                alert: &alert,
                tenant: OcsfTenant {
                    name: rec.tenant_name,
                    id: rec.tenant_id,
                },
            },
        },
    };
    serde_json::to_writer(&mut *buf, &out)
}

/// MDE `status` → OCSF finding `status_id` and its caption; values MDE may
/// add later become Other (99) with the MDE text kept.
fn ocsf_status(status: &str) -> (u32, &str) {
    match status {
        "New" => (1, "New"),
        "InProgress" => (2, "In Progress"),
        "Resolved" => (4, "Resolved"),
        "Unknown" => (0, "Unknown"),
        other => (99, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutputFormat;
    use crate::output::render;

    const TENANT_ID: &str = "11111111-1111-1111-1111-111111111111";

    /// The example alert of API-NOTES.md, as the API pretty-prints it there.
    const EXAMPLE: &str = r#"{
  "id": "da637472900382838869_1364969609",
  "incidentId": 1126093, "investigationId": null, "assignedTo": null,
  "severity": "Low", "status": "New", "classification": null, "determination": null,
  "investigationState": "Queued", "detectionSource": "WindowsDefenderAtp",
  "detectorId": "17e10bbc-3a68-474a-8aad-faef14d43952", "category": "Execution",
  "threatFamilyName": null,
  "title": "Low-reputation arbitrary code executed by signed executable",
  "description": "Binaries signed by Microsoft can be used to run low-reputation arbitrary code...",
  "alertCreationTime": "2021-01-26T20:33:57.7220239Z",
  "firstEventTime": "2021-01-26T20:31:32.9562661Z", "lastEventTime": "2021-01-26T20:31:33.0577322Z",
  "lastUpdateTime": "2021-01-26T20:33:59.2Z", "resolvedTime": null,
  "machineId": "111e6dd8c833c8a052ea231ec1b19adaf497b625",
  "computerDnsName": "temp123.middleeast.corp.microsoft.com", "rbacGroupName": "A",
  "aadTenantId": "a839b112-1253-6432-9bf6-94542403f21c", "threatName": null,
  "mitreTechniques": ["T1064", "T1085", "T1220"],
  "relatedUser": {"userName": "temp123", "domainName": "DOMAIN"},
  "comments": [{"comment": "test comment for docs", "createdBy": "secop123@contoso.com", "createdTime": "2021-01-26T01:00:37.8404534Z"}],
  "evidence": [
    {"entityType": "Process", "fileName": "rundll32.exe", "filePath": "C:\\Windows\\SysWOW64",
     "processCommandLine": "rundll32.exe  c:\\temp\\suspicious.dll,RepeatAfterMe"}
  ]
}"#;

    fn raw_value(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn line(format: OutputFormat, change: Change, name: &str, alert: &RawValue) -> String {
        let rec = Record {
            timestamp: Timestamp::parse("2026-11-26T20:00:00.1234567Z").unwrap(),
            change,
            tenant_name: name,
            tenant_id: TENANT_ID,
            alert,
        };
        let mut buf = Vec::new();
        render(&mut buf, format, &rec).unwrap();
        let s = String::from_utf8(buf).unwrap();
        assert!(s.ends_with('\n'), "{s}");
        assert_eq!(s.matches('\n').count(), 1, "not one line: {s}");
        assert!(!s.contains('\r'));
        s
    }

    fn parsed(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn raw_line_has_the_exact_envelope_and_the_alert_verbatim() {
        let alert = raw_value(
            r#"{"id":"da63","lastUpdateTime":"2021-01-26T20:33:59.2Z","incidentId":1126093,"x":1.50}"#,
        );
        let s = line(OutputFormat::Raw, Change::New, "contoso", &alert);
        assert_eq!(
            s,
            "{\"@timestamp\":\"2026-11-26T20:00:00.123Z\",\"type\":\"mde.alert\",\"change\":\"new\",\
             \"tenant\":{\"name\":\"contoso\",\"id\":\"11111111-1111-1111-1111-111111111111\"},\
             \"alert\":{\"id\":\"da63\",\"lastUpdateTime\":\"2021-01-26T20:33:59.2Z\",\"incidentId\":1126093,\"x\":1.50}}\n"
        );
        let s = line(OutputFormat::Raw, Change::Update, "contoso", &alert);
        assert!(s.contains("\"change\":\"update\""));
    }

    #[test]
    fn raw_line_escapes_tenant_names() {
        let alert = raw_value(r#"{"id":"x"}"#);
        let s = line(OutputFormat::Raw, Change::New, "a\"b\\c\nd", &alert);
        let v = parsed(&s);
        assert_eq!(v["tenant"]["name"], "a\"b\\c\nd");
        assert_eq!(v["tenant"]["id"], TENANT_ID);
    }

    #[test]
    fn a_pretty_printed_alert_becomes_one_line_with_strings_untouched() {
        let alert = raw_value(EXAMPLE);
        let s = line(OutputFormat::Raw, Change::New, "contoso", &alert);
        let v = parsed(&s);
        assert_eq!(v["alert"], parsed(EXAMPLE));
        // Spaces inside strings are data, not layout.
        assert!(
            s.contains(
                r#""processCommandLine":"rundll32.exe  c:\\temp\\suspicious.dll,RepeatAfterMe""#
            ),
            "{s}"
        );
        // The order of keys is the API's, not alphabetical.
        assert!(s.find("\"incidentId\"").unwrap() < s.find("\"assignedTo\"").unwrap());

        let crlf = raw_value(&EXAMPLE.replace('\n', "\r\n"));
        let s = line(OutputFormat::Raw, Change::New, "contoso", &crlf);
        assert_eq!(parsed(&s)["alert"], parsed(EXAMPLE));
    }

    #[test]
    fn a_200_kb_alert_stays_one_line() {
        let evidence: Vec<Value> = (0..2000)
            .map(|i| serde_json::json!({"entityType": "File", "fileName": format!("file{i}.dll"), "sha1": "ff836cfb1af40252bd2a2ea843032e99a5b262ed"}))
            .collect();
        let big =
            serde_json::to_string_pretty(&serde_json::json!({"id": "big", "evidence": evidence}))
                .unwrap();
        assert!(big.len() > 200_000);
        for format in [OutputFormat::Raw, OutputFormat::Ecs, OutputFormat::Ocsf] {
            let s = line(format, Change::New, "contoso", &raw_value(&big));
            assert!(s.len() > 100_000);
            parsed(&s);
        }
    }

    #[test]
    fn ecs_maps_the_example_alert() {
        let alert = raw_value(EXAMPLE);
        let v = parsed(&line(OutputFormat::Ecs, Change::Update, "contoso", &alert));
        assert_eq!(v["@timestamp"], "2026-11-26T20:00:00.123Z");
        assert_eq!(v["ecs"]["version"], ECS_VERSION);
        assert_eq!(
            v["message"],
            "Low-reputation arbitrary code executed by signed executable"
        );
        let e = &v["event"];
        assert_eq!(e["kind"], "alert");
        assert_eq!(e["category"], serde_json::json!(["intrusion_detection"]));
        assert_eq!(e["action"], "update");
        assert_eq!(e["id"], "da637472900382838869_1364969609");
        assert_eq!(e["created"], "2021-01-26T20:33:57.7220239Z");
        assert_eq!(e["start"], "2021-01-26T20:31:32.9562661Z");
        assert_eq!(e["end"], "2021-01-26T20:31:33.0577322Z");
        assert_eq!(e["severity"], 2);
        assert_eq!(e["provider"], "WindowsDefenderAtp");
        assert!(e.get("outcome").is_none());
        assert_eq!(
            v["rule"]["name"],
            "Low-reputation arbitrary code executed by signed executable"
        );
        assert_eq!(v["rule"]["id"], "17e10bbc-3a68-474a-8aad-faef14d43952");
        assert!(v["rule"]["description"]
            .as_str()
            .unwrap()
            .starts_with("Binaries signed"));
        assert_eq!(v["threat"]["framework"], "MITRE ATT&CK");
        assert_eq!(
            v["threat"]["technique"]["id"],
            serde_json::json!(["T1064", "T1085", "T1220"])
        );
        assert_eq!(
            v["host"]["hostname"],
            "temp123.middleeast.corp.microsoft.com"
        );
        assert_eq!(v["host"]["id"], "111e6dd8c833c8a052ea231ec1b19adaf497b625");
        assert_eq!(v["user"]["name"], "temp123");
        assert_eq!(v["user"]["domain"], "DOMAIN");
        assert_eq!(v["observer"]["vendor"], "Microsoft");
        assert_eq!(v["observer"]["product"], "Defender for Endpoint");
        assert_eq!(v["cloud"]["account"]["id"], TENANT_ID);
        assert_eq!(v["organization"]["id"], TENANT_ID);
        assert_eq!(v["organization"]["name"], "contoso");
        assert_eq!(v["mde"]["alert"], parsed(EXAMPLE));
        assert_eq!(v["mde"]["change"], "update");
    }

    #[test]
    fn ecs_splits_sub_techniques_and_flags_malware() {
        let alert = raw_value(
            r#"{"id":"x","category":"Malware","mitreTechniques":["T1059.001","T1059","T1566.002",null,""]}"#,
        );
        let v = parsed(&line(OutputFormat::Ecs, Change::New, "contoso", &alert));
        assert_eq!(
            v["threat"]["technique"]["id"],
            serde_json::json!(["T1059", "T1566"])
        );
        assert_eq!(
            v["threat"]["technique"]["subtechnique"]["id"],
            serde_json::json!(["T1059.001", "T1566.002"])
        );
        assert_eq!(
            v["event"]["category"],
            serde_json::json!(["intrusion_detection", "malware"])
        );
    }

    #[test]
    fn ocsf_maps_the_example_alert_as_a_detection_finding() {
        let alert = raw_value(EXAMPLE);
        let v = parsed(&line(OutputFormat::Ocsf, Change::New, "contoso", &alert));
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["category_uid"], 2);
        assert_eq!(v["activity_id"], 1);
        assert_eq!(v["type_uid"], 200401);
        assert_eq!(v["time"], 1_795_723_200_123i64);
        assert_eq!(v["severity_id"], 2);
        assert_eq!(v["severity"], "Low");
        assert_eq!(v["status_id"], 1);
        assert_eq!(v["status"], "New");
        let f = &v["finding_info"];
        assert_eq!(f["uid"], "da637472900382838869_1364969609");
        assert_eq!(
            f["title"],
            "Low-reputation arbitrary code executed by signed executable"
        );
        assert!(f["desc"].as_str().unwrap().starts_with("Binaries signed"));
        assert_eq!(f["created_time"], 1_611_693_237_722i64);
        assert_eq!(f["first_seen_time"], 1_611_693_092_956i64);
        assert_eq!(f["last_seen_time"], 1_611_693_093_057i64);
        assert_eq!(f["modified_time"], 1_611_693_239_200i64);
        assert_eq!(f["types"], serde_json::json!(["Execution"]));
        assert_eq!(f["analytic"]["uid"], "17e10bbc-3a68-474a-8aad-faef14d43952");
        assert_eq!(f["analytic"]["type_id"], 0);
        let m = &v["metadata"];
        assert_eq!(m["version"], "1.1.0");
        assert_eq!(m["product"]["name"], "Microsoft Defender for Endpoint");
        assert_eq!(m["product"]["vendor_name"], "Microsoft");
        assert_eq!(
            m["uid"],
            "da637472900382838869_1364969609@2021-01-26T20:33:59.2Z"
        );
        assert_eq!(m["tenant_uid"], TENANT_ID);
        assert_eq!(
            v["device"]["hostname"],
            "temp123.middleeast.corp.microsoft.com"
        );
        assert_eq!(
            v["device"]["uid"],
            "111e6dd8c833c8a052ea231ec1b19adaf497b625"
        );
        assert_eq!(v["device"]["type_id"], 0);
        assert_eq!(v["attacks"][2]["technique"]["uid"], "T1220");
        assert_eq!(v["unmapped"]["alert"], parsed(EXAMPLE));
        assert_eq!(v["unmapped"]["tenant"]["name"], "contoso");

        let v = parsed(&line(OutputFormat::Ocsf, Change::Update, "contoso", &alert));
        assert_eq!(
            (v["activity_id"].as_u64(), v["type_uid"].as_u64()),
            (Some(2), Some(200402))
        );
        assert_eq!(v["type_name"], "Detection Finding: Update");
    }

    #[test]
    fn alerts_with_nothing_but_an_id_map_without_nulls_or_panics() {
        let sparse = [
            r#"{"id":"x"}"#,
            r#"{"id":"x","severity":null,"status":null,"title":null,"relatedUser":null,"mitreTechniques":null,"computerDnsName":null,"alertCreationTime":null,"firstEventTime":null}"#,
            // Wrong types and junk dates are dropped, not passed on.
            r#"{"id":"x","severity":7,"status":["New"],"title":{"a":1},"relatedUser":"bob","mitreTechniques":"T1064","alertCreationTime":"yesterday","lastEventTime":12}"#,
            r#"[1,2,3]"#,
            r#""just a string""#,
        ];
        for text in sparse {
            let alert = raw_value(text);
            for format in [OutputFormat::Raw, OutputFormat::Ecs, OutputFormat::Ocsf] {
                let s = line(format, Change::New, "contoso", &alert);
                let v = parsed(&s);
                let mapped = match format {
                    OutputFormat::Raw => continue,
                    OutputFormat::Ecs => {
                        assert_eq!(v["mde"]["alert"], parsed(text));
                        let mut v = v.clone();
                        v.as_object_mut().unwrap().remove("mde");
                        v
                    }
                    OutputFormat::Ocsf => {
                        assert_eq!(v["unmapped"]["alert"], parsed(text));
                        assert_eq!(
                            v["finding_info"]["title"],
                            "Microsoft Defender for Endpoint alert"
                        );
                        assert_eq!(v["severity_id"], 0);
                        let mut v = v.clone();
                        v.as_object_mut().unwrap().remove("unmapped");
                        v
                    }
                };
                assert!(
                    !mapped.to_string().contains("null"),
                    "{format:?} {text}: {mapped}"
                );
                for absent in [
                    "user",
                    "host",
                    "threat",
                    "rule",
                    "device",
                    "attacks",
                    "status_id",
                ] {
                    assert!(
                        mapped.get(absent).is_none(),
                        "{format:?} {text}: {absent} in {mapped}"
                    );
                }
                if format == OutputFormat::Ecs {
                    for absent in ["created", "start", "end", "severity"] {
                        assert!(
                            mapped["event"].get(absent).is_none(),
                            "{text}: event.{absent}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn unknown_severity_and_status_are_kept_as_other() {
        let alert = raw_value(r#"{"id":"x","severity":"Critical","status":"Dismissed"}"#);
        let v = parsed(&line(OutputFormat::Ocsf, Change::New, "contoso", &alert));
        assert_eq!(v["severity_id"], 99);
        assert_eq!(v["severity"], "Critical");
        assert_eq!(v["status_id"], 99);
        assert_eq!(v["status"], "Dismissed");
        let alert = raw_value(r#"{"id":"x","severity":"UnSpecified"}"#);
        let v = parsed(&line(OutputFormat::Ocsf, Change::New, "contoso", &alert));
        assert_eq!(v["severity_id"], 0);
        let v = parsed(&line(OutputFormat::Ecs, Change::New, "contoso", &alert));
        assert!(v["event"].get("severity").is_none());
    }
}
