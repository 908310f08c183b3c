//! What the three line formats share, and `raw` itself: the alert verbatim
//! in an envelope. `ecs` and `ocsf` (in `ecs.rs`, `ocsf.rs`) map the
//! source-neutral reading of the alert in `view.rs`. Every mapping is
//! documented field by field in `docs/FORMATS.md`; keep the two in step.
//!
//! Any alert property may be null, absent or of an unexpected type: a
//! mapped field whose source is unusable is omitted, never guessed, and the
//! original object always travels along.

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Record;

/// `{"@timestamp":…,"type":"mde.alert","change":…,"record_id":…,"tenant":{…},"alert":{…}}`.
///
/// Written byte by byte rather than through serde: this is the hot path of a
/// back-fill (100k alerts/s) and the alert itself is copied, not re-parsed.
pub(super) fn raw(buf: &mut Vec<u8>, rec: &Record) {
    let alert = clean_text(rec.alert.get());
    buf.extend_from_slice(b"{\"@timestamp\":\"");
    write_millis(buf, rec.timestamp);
    buf.extend_from_slice(b"\",\"type\":\"");
    buf.extend_from_slice(rec.source.record_type().as_bytes());
    buf.extend_from_slice(b"\",\"change\":\"");
    buf.extend_from_slice(rec.change.as_str().as_bytes());
    buf.extend_from_slice(b"\",\"record_id\":\"");
    buf.extend_from_slice(&key_of(rec, &alert));
    buf.extend_from_slice(b"\",\"tenant\":{\"name\":");
    write_json_str(buf, rec.tenant_name);
    buf.extend_from_slice(b",\"id\":");
    write_json_str(buf, rec.tenant_id);
    buf.extend_from_slice(b"},\"alert\":");
    write_one_line(buf, &alert);
    buf.push(b'}');
}

/// `rec.timestamp` with millisecond precision. Every record of a page has
/// the same one, so the text is kept from the previous call of the thread.
fn write_millis(buf: &mut Vec<u8>, at: crate::timestamp::Timestamp) {
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    LAST.with_borrow_mut(|(ticks, text)| {
        if *ticks != at.ticks() {
            *text = at.to_millis_string();
            *ticks = at.ticks();
        }
        buf.extend_from_slice(text.as_bytes());
    });
}

/// The idempotency key of a record: the same for every emission of the same
/// version of the same alert of the same tenant, in every format and from
/// either source (the MDE and Graph forms of one version share it, so a
/// switch of source overwrites downstream instead of duplicating).
///
/// 32 hex digits of SHA-256 over (tenant id, alert id, update time in 100 ns
/// ticks), so `…59.2Z` and `…59.2000000Z` give the same key. An alert without
/// a usable id or update time has its text hashed in their place.
fn record_id(
    tenant_id: &str,
    alert_id: Option<&str>,
    updated_ticks: Option<i64>,
    alert_text: &str,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"mde-poller record v1\0");
    if tenant_id.bytes().any(|b| b.is_ascii_uppercase()) {
        h.update(tenant_id.to_ascii_lowercase().as_bytes());
    } else {
        h.update(tenant_id.as_bytes());
    }
    h.update(b"\0");
    match (alert_id, updated_ticks) {
        (Some(id), Some(ticks)) => {
            h.update(id.as_bytes());
            h.update(b"\0");
            let mut digits = [0u8; 20];
            h.update(decimal(ticks, &mut digits));
        }
        _ => {
            h.update(b"text\0");
            h.update(alert_text.as_bytes());
        }
    }
    let digest = h.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (pair, b) in out.chunks_exact_mut(2).zip(&digest[..16]) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    out
}

/// `n` in decimal, as `i64::to_string` writes it, without allocating.
fn decimal(n: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

/// The record's idempotency key (see [`record_id`]).
pub(super) fn record_id_of(rec: &Record) -> String {
    let key = match usable(rec) {
        Some((id, ticks)) => record_id(rec.tenant_id, Some(id), Some(ticks), ""),
        None => key_from_text(rec, &clean_text(rec.alert.get())),
    };
    // Hex digits only.
    String::from_utf8_lossy(&key).into_owned()
}

/// The id and update time the caller read, when they make a key.
fn usable<'a>(rec: &Record<'a>) -> Option<(&'a str, i64)> {
    rec.version
        .filter(|v| !v.id.is_empty())
        .map(|v| (v.id, v.updated.ticks()))
}

fn key_of(rec: &Record, alert: &str) -> [u8; 32] {
    match usable(rec) {
        Some((id, ticks)) => record_id(rec.tenant_id, Some(id), Some(ticks), alert),
        None => key_from_text(rec, alert),
    }
}

/// Only `id` and the update time are read, the same way for every format
/// so that the keys agree (and agree with what the poll read, `usable`).
fn key_from_text(rec: &Record, alert: &str) -> [u8; 32] {
    // Unexpected types (a numeric id, a null time) must not lose the key.
    #[derive(serde::Deserialize)]
    struct Loose<'a> {
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
        #[serde(borrow, default, rename = "lastUpdateTime")]
        mde: Option<&'a RawValue>,
        #[serde(borrow, default, rename = "lastUpdateDateTime")]
        graph: Option<&'a RawValue>,
    }
    let str_of = |v: Option<&RawValue>| -> Option<String> {
        v.and_then(|v| serde_json::from_str::<String>(v.get()).ok())
    };
    let (id, updated) = match serde_json::from_str::<Loose>(alert) {
        Ok(l) => {
            let updated = match rec.source {
                super::AlertSource::Mde => l.mde,
                super::AlertSource::Graph => l.graph,
            };
            (str_of(l.id), str_of(updated))
        }
        Err(_) => (None, None),
    };
    let ticks = updated
        .as_deref()
        .and_then(|s| crate::timestamp::Timestamp::parse(s).ok())
        .map(|t| t.ticks());
    record_id(
        rec.tenant_id,
        id.as_deref().filter(|s| !s.is_empty()),
        ticks,
        alert,
    )
}

pub(super) fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// The alert's JSON text with every `\uXXXX` escape that names half of a
/// surrogate pair without its other half replaced by `\ufffd`: such text is
/// not Unicode, and strict parsers downstream (and serde_json) refuse it.
/// Everything else is untouched, byte for byte.
pub(super) fn clean_text(json: &str) -> Cow<'_, str> {
    let b = json.as_bytes();
    if memchr::memmem::find(b, b"\\u").is_none() {
        return Cow::Borrowed(json);
    }
    let hex4 = |at: usize| -> Option<u16> {
        let s = json.get(at..at + 4)?;
        u16::from_str_radix(s, 16).ok()
    };
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    let mut in_string = false;
    while i < b.len() {
        let c = b[i];
        if !in_string {
            if c == b'"' {
                in_string = true;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => {
                in_string = false;
                i += 1;
            }
            b'\\' if b.get(i + 1) == Some(&b'u') => {
                let unit = hex4(i + 2);
                let is_high = unit.is_some_and(|u| (0xD800..0xDC00).contains(&u));
                let is_low = unit.is_some_and(|u| (0xDC00..0xE000).contains(&u));
                let paired = is_high
                    && b.get(i + 6) == Some(&b'\\')
                    && b.get(i + 7) == Some(&b'u')
                    && hex4(i + 8).is_some_and(|u| (0xDC00..0xE000).contains(&u));
                if paired {
                    i += 12;
                } else if is_high || is_low {
                    let o = out.get_or_insert_with(|| String::with_capacity(json.len()));
                    o.push_str(&json[copied..i]);
                    o.push_str("\\ufffd");
                    i += 6;
                    copied = i;
                } else {
                    i += 6;
                }
            }
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    match out {
        None => Cow::Borrowed(json),
        Some(mut o) => {
            o.push_str(&json[copied..]);
            Cow::Owned(o)
        }
    }
}

/// Copies valid JSON text, dropping the whitespace between tokens only when
/// it holds a line break: an NDJSON line must never be split, and keys,
/// their order and number spellings stay exactly as the API wrote them
/// (a parse into `Value` and back would reorder and re-spell them).
pub(super) fn write_one_line(buf: &mut Vec<u8>, json: &str) {
    let bytes = json.as_bytes();
    if memchr::memchr2(b'\n', b'\r', bytes).is_none() {
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

/// The alert as a one-line raw value (lone surrogates replaced), for
/// nesting inside a serde document.
pub(super) fn one_line(alert: &RawValue) -> Cow<'_, RawValue> {
    let text = clean_text(alert.get());
    if matches!(text, Cow::Borrowed(_)) && memchr::memchr2(b'\n', b'\r', text.as_bytes()).is_none()
    {
        return Cow::Borrowed(alert);
    }
    let mut compact = Vec::with_capacity(text.len());
    write_one_line(&mut compact, &text);
    // Removing inter-token whitespace from valid JSON keeps it valid UTF-8
    // and valid JSON; fall back to the original rather than panic.
    match String::from_utf8(compact).ok().map(RawValue::from_string) {
        Some(Ok(v)) => Cow::Owned(v),
        _ => Cow::Borrowed(alert),
    }
}

/// Collects only the fields that have a value, so nothing is emitted as
/// `null` and an object with no fields is left out entirely.
#[derive(Default)]
pub(super) struct Obj(pub(super) Map<String, Value>);

impl Obj {
    pub(super) fn put(&mut self, key: &str, value: impl Into<Option<Value>>) -> &mut Self {
        if let Some(v) = value.into() {
            self.0.insert(key.to_owned(), v);
        }
        self
    }

    pub(super) fn put_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        self.put(key, value.map(|s| Value::String(s.to_owned())))
    }

    pub(super) fn put_obj(&mut self, key: &str, obj: Obj) -> &mut Self {
        if !obj.0.is_empty() {
            self.0.insert(key.to_owned(), Value::Object(obj.0));
        }
        self
    }

    pub(super) fn put_list(&mut self, key: &str, items: Vec<Value>) -> &mut Self {
        if !items.is_empty() {
            self.0.insert(key.to_owned(), Value::Array(items));
        }
        self
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

pub(super) fn strings<S: AsRef<str>>(items: &[S]) -> Vec<Value> {
    items
        .iter()
        .map(|s| Value::String(s.as_ref().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutputFormat;
    use crate::output::ecs::ECS_VERSION;
    use crate::output::AlertVersion;
    use crate::output::{render, AlertSource, Change};
    use crate::timestamp::Timestamp;

    const TENANT_ID: &str = "11111111-1111-1111-1111-111111111111";
    /// The record id of EXAMPLE for TENANT_ID. Pinned: a key that changed
    /// between releases would duplicate every alert downstream.
    const EXAMPLE_KEY: &str = "0b952a174ede30271b8a9c2f211df597";

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
            source: AlertSource::Mde,
            tenant_name: name,
            tenant_id: TENANT_ID,
            alert,
            version: None,
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
             \"record_id\":\"351b21c8f02706bfd589594259ea932a\",\"tenant\":{\"name\":\"contoso\",\"id\":\"11111111-1111-1111-1111-111111111111\"},\
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
        // The alert version's time; the emission time is event.ingested.
        assert_eq!(v["@timestamp"], "2021-01-26T20:33:59.2Z");
        assert_eq!(v["event"]["ingested"], "2026-11-26T20:00:00.123Z");
        assert_eq!(v["ecs"]["version"], ECS_VERSION);
        assert_eq!(
            v["message"],
            "Low-reputation arbitrary code executed by signed executable"
        );
        let e = &v["event"];
        assert_eq!(e["kind"], "alert");
        assert_eq!(
            e["category"],
            serde_json::json!(["intrusion_detection", "host", "process"])
        );
        assert_eq!(e["action"], "update");
        assert_eq!(e["id"], "da637472900382838869_1364969609");
        assert_eq!(e["created"], "2021-01-26T20:33:57.7220239Z");
        assert_eq!(e["start"], "2021-01-26T20:31:32.9562661Z");
        assert_eq!(e["end"], "2021-01-26T20:31:33.0577322Z");
        assert_eq!(e["severity"], 2);
        assert_eq!(e["provider"], "defender_endpoint");
        assert_eq!(v["observer"]["name"], "WindowsDefenderAtp");
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
        assert_eq!(v["mde"]["source"], "mde");
        assert_eq!(v["mde"]["record_id"], EXAMPLE_KEY);
        assert_eq!(v["process"]["name"], "rundll32.exe");
        assert_eq!(v["file"]["path"], "C:\\Windows\\SysWOW64\\rundll32.exe");
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
        assert_eq!(v["time"], 1_611_693_239_200i64, "the version's time");
        assert_eq!(v["metadata"]["processed_time"], 1_795_723_200_123i64);
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
        assert_eq!(m["uid"], EXAMPLE_KEY);
        assert_eq!(m["profiles"], serde_json::json!(["host"]));
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
        assert_eq!(f["attacks"][2]["technique"]["uid"], "T1220");
        assert!(
            v.get("attacks").is_none(),
            "top-level attacks need security_control"
        );
        assert_eq!(v["actor"]["user"]["name"], "temp123");
        // Without a processId it cannot be an OCSF process: kept as data.
        assert_eq!(v["evidences"][0]["data"]["fileName"], "rundll32.exe");
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
        assert_eq!(v["event"]["severity"], 0);
    }

    /// The poll hands over the id and update time it read; every format's
    /// `record_id` must be the one the alert itself gives, or a record's key
    /// would depend on who rendered it.
    #[test]
    fn a_record_id_from_the_polls_reading_is_the_alerts_own() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
        let mut cases: Vec<(AlertSource, String)> = Vec::new();
        for (source, file) in [(AlertSource::Mde, "mde"), (AlertSource::Graph, "graph")] {
            let text = std::fs::read_to_string(format!("{dir}/{file}/alerts.json")).unwrap();
            let list: Vec<Value> = serde_json::from_str(&text).unwrap();
            cases.extend(list.iter().map(|v| (source, v.to_string())));
        }
        cases.push((
            AlertSource::Mde,
            r#"{"id":"d\u0061\u00e9","lastUpdateTime":"2021-01-26T20:33:59.2000000Z"}"#.into(),
        ));
        cases.push((
            AlertSource::Graph,
            r#"{"lastUpdateDateTime":"2021-01-26T20:33:59Z","id":"g1","title":"\ud800"}"#.into(),
        ));
        let mut checked = 0;
        for (source, text) in &cases {
            let alert = raw_value(text);
            // As the poll reads them: borrowed or decoded strings.
            #[derive(serde::Deserialize)]
            struct Key<'a> {
                #[serde(borrow)]
                id: Option<Cow<'a, str>>,
                #[serde(borrow, rename = "lastUpdateTime")]
                mde: Option<Cow<'a, str>>,
                #[serde(borrow, rename = "lastUpdateDateTime")]
                graph: Option<Cow<'a, str>>,
            }
            // One the poll refuses (a numeric id) is never rendered.
            let Ok(key) = serde_json::from_str::<Key>(text) else {
                continue;
            };
            let updated = match source {
                AlertSource::Mde => key.mde,
                AlertSource::Graph => key.graph,
            };
            let (Some(id), Some(Ok(updated))) = (key.id, updated.map(|u| Timestamp::parse(&u)))
            else {
                continue;
            };
            let id = &*id;
            checked += 1;
            for tenant_id in [TENANT_ID, "AAAAAAAA-1111-1111-1111-111111111111"] {
                let rec = |version| Record {
                    timestamp: Timestamp::parse("2026-11-26T20:00:00Z").unwrap(),
                    change: Change::New,
                    source: *source,
                    tenant_name: "contoso",
                    tenant_id,
                    alert: &alert,
                    version,
                };
                let read = rec(Some(AlertVersion { id, updated }));
                for format in [OutputFormat::Raw, OutputFormat::Ecs, OutputFormat::Ocsf] {
                    let (mut given, mut own) = (Vec::new(), Vec::new());
                    render(&mut given, format, &read).unwrap();
                    render(&mut own, format, &rec(None)).unwrap();
                    assert_eq!(
                        String::from_utf8_lossy(&given),
                        String::from_utf8_lossy(&own),
                        "{format:?} {text}"
                    );
                }
                assert_eq!(record_id_of(&read), record_id_of(&rec(None)));
            }
        }
        assert!(checked >= cases.len() / 2, "{checked} of {}", cases.len());
    }

    #[test]
    fn decimal_writes_what_to_string_writes() {
        for n in [0, 7, -7, 10, 639_000_000_000_000_000, i64::MAX, i64::MIN] {
            let mut buf = [0u8; 20];
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }
}
