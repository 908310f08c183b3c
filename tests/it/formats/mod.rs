//! The line formats against the published schemas: every record of every
//! format, for MDE alerts from the simulator and for MDE and Graph
//! fixtures, checked by our validators over the vendored official schema
//! files (`tests/data/schemas/`, see its README); the validators shown to
//! reject what the schemas reject; the idempotency key and hostile input.

mod ecs_schema;
mod ocsf_schema;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mde_poller::config::OutputFormat;
use mde_poller::output::{render, AlertSource, Change, Record};
use mde_poller::sim::{SimOptions, Simulator};
use mde_poller::timestamp::Timestamp;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use ecs_schema::Ecs;
use ocsf_schema::Ocsf;

const TENANT_ID: &str = "11111111-1111-1111-1111-111111111111";
const EMITTED: &str = "2026-11-26T20:00:00.1234567Z";

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn ecs() -> &'static Ecs {
    static ECS: OnceLock<Ecs> = OnceLock::new();
    ECS.get_or_init(|| Ecs::load(&data("schemas/ecs-8.11.0/ecs_flat.yml")))
}

thread_local! {
    static OCSF: Ocsf = Ocsf::load(&data("schemas/ocsf-1.1.0"));
}

fn fixtures(rel: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(data(rel)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// One rendered line, checked to be one line of JSON.
fn line(format: OutputFormat, source: AlertSource, change: Change, alert: &RawValue) -> Value {
    let rec = Record {
        timestamp: Timestamp::parse(EMITTED).unwrap(),
        change,
        source,
        tenant_name: "contoso",
        tenant_id: TENANT_ID,
        alert,
        version: None,
    };
    let mut buf = Vec::new();
    render(&mut buf, format, &rec).unwrap();
    let text = String::from_utf8(buf).expect("a line is UTF-8");
    assert!(
        text.ends_with('\n') && text.matches('\n').count() == 1,
        "not one line: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The three records of one alert version (as `new`).
struct Lines {
    raw: Value,
    ecs: Value,
    ocsf: Value,
}

fn lines(source: AlertSource, alert: &Value) -> Lines {
    let raw = RawValue::from_string(alert.to_string()).unwrap();
    Lines {
        raw: line(OutputFormat::Raw, source, Change::New, &raw),
        ecs: line(OutputFormat::Ecs, source, Change::New, &raw),
        ocsf: line(OutputFormat::Ocsf, source, Change::New, &raw),
    }
}

/// Every problem of every record of every format of `alerts`, labelled with
/// the alert's index and id. The lead feeds simulator Graph alerts in here.
pub fn problems(source: AlertSource, alerts: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, alert) in alerts.iter().enumerate() {
        let raw = RawValue::from_string(alert.to_string()).unwrap();
        let label = format!("{source:?} alert #{i} ({})", alert["id"]);
        for change in [Change::New, Change::Update] {
            let r = line(OutputFormat::Raw, source, change, &raw);
            let e = line(OutputFormat::Ecs, source, change, &raw);
            let o = line(OutputFormat::Ocsf, source, change, &raw);
            if r["type"] != source_type(source) || r["alert"] != *alert {
                out.push(format!("{label} raw: wrong envelope: {r}"));
            }
            let key = r["record_id"].as_str().unwrap_or_default().to_owned();
            if key.len() != 32 || e["mde"]["record_id"] != key || o["metadata"]["uid"] != key {
                out.push(format!(
                    "{label}: record ids differ across formats: raw {key:?}, ecs {}, ocsf {}",
                    e["mde"]["record_id"], o["metadata"]["uid"]
                ));
            }
            for p in ecs().validate(&e, &["mde"]) {
                out.push(format!("{label} ecs: {p}"));
            }
            OCSF.with(|v| {
                for p in v.validate(&o) {
                    out.push(format!("{label} ocsf: {p}"));
                }
            });
        }
    }
    out
}

fn source_type(source: AlertSource) -> &'static str {
    match source {
        AlertSource::Mde => "mde.alert",
        AlertSource::Graph => "graph.alert",
    }
}

fn assert_valid(source: AlertSource, alerts: &[Value]) {
    let p = problems(source, alerts);
    assert!(
        p.is_empty(),
        "{} problems, the first ones:\n{}",
        p.len(),
        p[..p.len().min(40)].join("\n")
    );
}

fn simulated_mde_alerts(count: usize) -> Vec<Value> {
    let sim = Simulator::start(SimOptions::default()).unwrap();
    let from = Timestamp::parse("2026-11-26T10:00:00Z").unwrap();
    let to = Timestamp::parse("2026-11-26T12:00:00Z").unwrap();
    sim.generate_alerts(TENANT_ID, count, from, to);
    let alerts = sim.current(TENANT_ID);
    sim.shutdown();
    alerts
}

#[tokio::test]
async fn every_simulated_mde_alert_is_valid_in_every_format() {
    let alerts = simulated_mde_alerts(500);
    assert_eq!(alerts.len(), 500);
    assert!(alerts
        .iter()
        .all(|a| !a["evidence"].as_array().unwrap().is_empty()));
    assert_valid(AlertSource::Mde, &alerts);

    // The evidence is mapped, every kind the simulator makes.
    let mut kinds = std::collections::BTreeSet::new();
    for a in &alerts {
        let l = lines(AlertSource::Mde, a);
        let ev = l.ocsf["evidences"].as_array().expect("evidences");
        assert_eq!(ev.len(), a["evidence"].as_array().unwrap().len());
        for e in ev {
            kinds.extend(e.as_object().unwrap().keys().cloned());
        }
        assert_eq!(l.ocsf["metadata"]["profiles"], json!(["host"]));
    }
    for k in ["file", "process", "actor", "dst_endpoint", "data"] {
        assert!(kinds.contains(k), "no {k} evidence in {kinds:?}");
    }
}

#[test]
fn mde_fixtures_are_valid_in_every_format() {
    assert_valid(AlertSource::Mde, &fixtures("mde/alerts.json"));
}

#[test]
fn graph_fixtures_are_valid_in_every_format() {
    assert_valid(AlertSource::Graph, &fixtures("graph/alerts.json"));
}

/// Today's (before this change) OCSF line of the API-NOTES alert.
const OCSF_BEFORE: &str = r#"{"activity_id":1,"activity_name":"Create","attacks":[{"technique":{"uid":"T1064"}},{"technique":{"uid":"T1085"}},{"technique":{"uid":"T1220"}}],"category_name":"Findings","category_uid":2,"class_name":"Detection Finding","class_uid":2004,"device":{"groups":[{"name":"A"}],"hostname":"temp123.middleeast.corp.microsoft.com","name":"temp123.middleeast.corp.microsoft.com","type":"Unknown","type_id":0,"uid":"111e6dd8c833c8a052ea231ec1b19adaf497b625"},"finding_info":{"analytic":{"category":"Execution","name":"WindowsDefenderAtp","type":"Unknown","type_id":0,"uid":"17e10bbc-3a68-474a-8aad-faef14d43952"},"created_time":1611693237722,"desc":"Binaries signed by Microsoft …","first_seen_time":1611693092956,"last_seen_time":1611693093057,"modified_time":1611693239200,"title":"Low-reputation arbitrary code executed by signed executable","types":["Execution"],"uid":"da637472900382838869_1364969609"},"message":"Low-reputation arbitrary code executed by signed executable","metadata":{"product":{"name":"Microsoft Defender for Endpoint","vendor_name":"Microsoft"},"tenant_uid":"1111","uid":"da637472900382838869_1364969609@2021-01-26T20:33:59.2Z","version":"1.1.0"},"severity":"Low","severity_id":2,"status":"New","status_id":1,"time":1795723200123,"type_name":"Detection Finding: Create","type_uid":200401,"unmapped":{"alert":{},"tenant":{"name":"contoso","id":"1111"}}}"#;

/// What is planted, how, and words of the problem the validator must report.
type Plant = (&'static str, fn(&mut Value), &'static str);

fn ocsf_problems(v: &Value) -> Vec<String> {
    OCSF.with(|o| o.validate(v))
}

fn has(problems: &[String], needle: &str) -> bool {
    problems.iter().any(|p| p.contains(needle))
}

#[test]
fn the_ocsf_validator_rejects_todays_output_and_planted_faults() {
    let before: Value = serde_json::from_str(OCSF_BEFORE).unwrap();
    let p = ocsf_problems(&before);
    assert!(
        has(
            &p,
            "device: attribute not defined in detection_finding (of profile"
        ),
        "{p:#?}"
    );
    assert!(has(&p, "attacks: attribute not defined"), "{p:#?}");

    let good = lines(AlertSource::Mde, &fixtures("mde/alerts.json")[0]).ocsf;
    assert_eq!(ocsf_problems(&good), Vec::<String>::new());
    let planted: &[Plant] = &[
        (
            "a hostname with _",
            |v| v["device"]["hostname"] = json!("lap_jsmith"),
            "device.hostname",
        ),
        (
            "no host profile",
            |v| {
                v["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("profiles")
                    .map(drop)
                    .unwrap_or(())
            },
            "device: attribute not defined",
        ),
        (
            "a caption not OCSF's",
            |v| v["severity"] = json!("low"),
            "severity: \"low\" is not the caption",
        ),
        (
            "a severity id that does not exist",
            |v| v["severity_id"] = json!(7),
            "severity_id: enum value 7",
        ),
        (
            "no title",
            |v| {
                v["finding_info"]
                    .as_object_mut()
                    .unwrap()
                    .remove("title")
                    .map(drop)
                    .unwrap_or(())
            },
            "finding_info.title: required",
        ),
        (
            "an unknown attribute",
            |v| v["finding_info"]["tactic"] = json!("x"),
            "finding_info.tactic: attribute not defined",
        ),
        (
            "an empty evidence",
            |v| v["evidences"] = json!([{}]),
            "constraint at_least_one",
        ),
        (
            "a string time",
            |v| v["time"] = json!("2021-01-26T20:33:59.2Z"),
            "time: ",
        ),
        (
            "an ip that is none",
            |v| v["device"]["ip"] = json!("999.1.1.1"),
            "device.ip",
        ),
        (
            "a wrong type_uid",
            |v| v["type_uid"] = json!(200402),
            "type_uid",
        ),
        (
            "an unknown profile",
            |v| v["metadata"]["profiles"] = json!(["host", "nope"]),
            "unknown profile",
        ),
        (
            "a later version",
            |v| v["metadata"]["version"] = json!("1.3.0"),
            "metadata.version",
        ),
        (
            "a string over max_len",
            |v| v["message"] = json!("x".repeat(65_536)),
            "message: 65536 characters",
        ),
    ];
    for (what, plant, expect) in planted {
        let mut v = good.clone();
        plant(&mut v);
        let p = ocsf_problems(&v);
        assert!(has(&p, expect), "{what}: expected {expect:?} in {p:#?}");
    }
}

#[test]
fn the_ecs_validator_rejects_planted_faults() {
    let good = lines(AlertSource::Mde, &fixtures("mde/alerts.json")[0]).ecs;
    assert_eq!(ecs().validate(&good, &["mde"]), Vec::<String>::new());
    assert!(
        ecs().fields.len() > 1000,
        "ecs_flat.yml read: {} fields",
        ecs().fields.len()
    );
    let planted: &[Plant] = &[
        (
            "an unknown field",
            |v| v["host"]["nick"] = json!("x"),
            "host.nick: not an ECS",
        ),
        (
            "an ip that is none",
            |v| v["related"]["ip"] = json!(["not-an-ip"]),
            "related.ip",
        ),
        (
            "a kind ECS does not allow",
            |v| v["event"]["kind"] = json!("finding"),
            "event.kind",
        ),
        (
            "a type the category does not expect",
            |v| v["event"]["type"] = json!(["connection"]),
            "event.type",
        ),
        (
            "one value for an array field",
            |v| v["threat"]["technique"]["id"] = json!("T1064"),
            "threat.technique.id",
        ),
        (
            "a date that is none",
            |v| v["event"]["created"] = json!("yesterday"),
            "event.created",
        ),
        (
            "no @timestamp",
            |v| {
                v.as_object_mut()
                    .unwrap()
                    .remove("@timestamp")
                    .map(drop)
                    .unwrap_or(())
            },
            "@timestamp: required",
        ),
        (
            "a string severity",
            |v| v["event"]["severity"] = json!("Low"),
            "event.severity",
        ),
    ];
    for (what, plant, expect) in planted {
        let mut v = good.clone();
        plant(&mut v);
        let p = ecs().validate(&v, &["mde"]);
        assert!(has(&p, expect), "{what}: expected {expect:?} in {p:#?}");
    }
}

#[test]
fn ecs_lines_up_with_elastics_integration() {
    let alert = &fixtures("mde/alerts.json")[0];
    let v = lines(AlertSource::Mde, alert).ecs;
    assert_eq!(
        v["@timestamp"], "2021-01-26T20:33:59.2Z",
        "when this version came to be"
    );
    assert_eq!(
        v["event"]["ingested"], "2026-11-26T20:00:00.123Z",
        "when it was emitted"
    );
    assert_eq!(v["host"]["name"], "temp123.middleeast.corp.microsoft.com");
    assert_eq!(v["observer"]["name"], "WindowsDefenderAtp");
    assert_eq!(v["event"]["duration"], 101_466_100i64);
    assert_eq!(v["process"]["pid"], 3276);
    assert_eq!(v["process"]["parent"]["pid"], 8420);
    assert_eq!(
        v["process"]["executable"],
        "C:\\Windows\\SysWOW64\\rundll32.exe"
    );
    assert_eq!(
        v["file"]["hash"]["sha256"],
        "a4752c71d81afd3d5865d24ddb11a6b0c615062fcc448d24050c2172d2cbccd6"
    );
    assert_eq!(
        v["related"]["hash"][0],
        "ff836cfb1af40252bd2a2ea843032e99a5b262ed"
    );
    assert_eq!(
        v["related"]["hosts"],
        json!(["temp123.middleeast.corp.microsoft.com"])
    );
    assert_eq!(v["related"]["user"], json!(["temp123"]));

    let mixed = &fixtures("mde/alerts.json")[1];
    let v = lines(AlertSource::Mde, mixed).ecs;
    assert_eq!(v["host"]["name"], "lap_jsmith.corp.contoso.com");
    assert_eq!(v["threat"]["technique"]["id"], json!(["T1059"]));
    assert_eq!(
        v["threat"]["technique"]["subtechnique"]["id"],
        json!(["T1059.001"])
    );
    assert_eq!(v["related"]["ip"], json!(["2001:db8::7"]));
    assert_eq!(v["url"]["domain"], "malicious.example.net");
    assert_eq!(v["user"]["name"], "jsmith");
    let v = lines(AlertSource::Mde, &fixtures("mde/alerts.json")[5]).ecs;
    assert_eq!(v["host"]["hostname"], "WKS-0142.EMEA.Contoso.com.");
    assert_eq!(v["host"]["name"], "wks-0142.emea.contoso.com.");
}

#[test]
fn graph_alerts_map_their_product_evidence_and_enums() {
    let g = fixtures("graph/alerts.json");
    let l = lines(AlertSource::Graph, &g[0]);
    assert_eq!(l.raw["type"], "graph.alert");
    assert_eq!(l.ecs["event"]["dataset"], "graph.alert");
    assert_eq!(l.ecs["@timestamp"], "2021-05-02T14:19:01.3266667Z");
    assert_eq!(l.ecs["host"]["name"], "tempdns");
    assert_eq!(l.ecs["host"]["ip"], json!(["1.1.1.1"]));
    assert_eq!(l.ecs["process"]["user"]["name"], "SYSTEM");
    assert_eq!(l.ecs["observer"]["product"], "Defender for Endpoint");
    assert_eq!(
        l.ecs["event"]["url"],
        "https://security.microsoft.com/alerts/da637...?tid=b3c1..."
    );
    assert_eq!(l.ocsf["severity_id"], 2);
    assert_eq!(l.ocsf["severity"], "Low");
    assert_eq!(l.ocsf["status"], "New");
    assert_eq!(l.ocsf["device"]["os"]["type_id"], 100);
    assert_eq!(
        l.ocsf["finding_info"]["attacks"],
        json!([{"technique": {"uid": "T1564"}, "sub_technique": {"uid": "T1564.001"}}])
    );
    assert_eq!(l.ocsf["metadata"]["correlation_uid"], "28282");

    let l = lines(AlertSource::Graph, &g[1]);
    assert_eq!(
        l.ocsf["metadata"]["product"]["name"],
        "Microsoft Defender for Office 365"
    );
    assert_eq!(l.ocsf["status_id"], 2);
    assert_eq!(l.ocsf["status"], "In Progress");
    assert_eq!(l.ocsf["severity"], "High");
    assert_eq!(l.ocsf["finding_info"]["analytic"]["type"], "Rule");
    // A name hostname_t cannot hold keeps only `name`; IDNA names are punycode.
    assert_eq!(l.ocsf["device"]["name"], "LAP_JSMITH.corp.contoso.com");
    assert!(
        l.ocsf["device"].get("hostname").is_none(),
        "{}",
        l.ocsf["device"]
    );
    assert_eq!(
        l.ocsf["evidences"][1]["src_endpoint"]["hostname"],
        "xn--bcher-pc-65a.example.de"
    );
    // No duplicate attacks; T1055 alone is covered by T1055.002.
    let attacks = l.ocsf["finding_info"]["attacks"].as_array().unwrap();
    let uids: Vec<String> = attacks
        .iter()
        .map(|a| format!("{}/{}", a["technique"]["uid"], a["sub_technique"]["uid"]))
        .collect();
    assert_eq!(
        uids,
        ["\"T1566\"/\"T1566.002\"", "\"T1055\"/\"T1055.002\""],
        "{attacks:?}"
    );
    let ev = l.ocsf["evidences"].as_array().unwrap();
    assert_eq!(
        ev.len(),
        g[1]["evidence"].as_array().unwrap().len() - 1,
        "all but the null one"
    );
    assert_eq!(ev[2]["actor"]["user"]["email_addr"], "jsmith@contoso.com");
    assert_eq!(ev[3]["dst_endpoint"]["ip"], "203.0.113.9");
    assert_eq!(
        ev[7]["actor"]["user"]["email_addr"],
        "j.smith+work@contoso.com"
    );
    assert_eq!(l.ecs["url"]["port"], 8443);
    assert_eq!(
        l.ecs["related"]["ip"],
        json!(["10.0.0.7", "::1", "203.0.113.9"])
    );

    let l = lines(AlertSource::Graph, &g[4]);
    assert_eq!(
        (l.ocsf["severity_id"].clone(), l.ocsf["status_id"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(l.ocsf["metadata"]["product"]["name"], "microsoftSentinel");
    assert!(
        l.ecs["event"].get("duration").is_none(),
        "last before first"
    );
}

#[test]
fn the_record_id_names_one_version_of_one_alert_of_one_tenant() {
    let mde = json!({"id": "da63", "lastUpdateTime": "2021-01-26T20:33:59.2Z"});
    let same = json!({"id": "da63", "lastUpdateTime": "2021-01-26T20:33:59.2000000Z", "status": "Resolved"});
    let graph = json!({"id": "da63", "lastUpdateDateTime": "2021-01-26T20:33:59.20Z"});
    let later = json!({"id": "da63", "lastUpdateTime": "2021-01-26T20:33:59.3Z"});
    let other = json!({"id": "da64", "lastUpdateTime": "2021-01-26T20:33:59.2Z"});
    let key = |s, a: &Value| lines(s, a).raw["record_id"].as_str().unwrap().to_owned();
    let k = key(AlertSource::Mde, &mde);
    assert_eq!(k, key(AlertSource::Mde, &same));
    assert_eq!(
        k,
        key(AlertSource::Graph, &graph),
        "a switch of source overwrites"
    );
    assert_ne!(k, key(AlertSource::Mde, &later));
    assert_ne!(k, key(AlertSource::Mde, &other));
    assert!(
        k.bytes().all(|b| b.is_ascii_hexdigit()) && k.len() == 32,
        "{k}"
    );
    // Another tenant's alert of the same id is another document.
    let raw = RawValue::from_string(mde.to_string()).unwrap();
    let rec = Record {
        timestamp: Timestamp::parse(EMITTED).unwrap(),
        change: Change::New,
        source: AlertSource::Mde,
        tenant_name: "fabrikam",
        tenant_id: "22222222-2222-2222-2222-222222222222",
        alert: &raw,
        version: None,
    };
    let mut buf = Vec::new();
    render(&mut buf, OutputFormat::Raw, &rec).unwrap();
    let v: Value = serde_json::from_slice(&buf).unwrap();
    assert_ne!(v["record_id"], k);
}

/// Text serde_json accepts as a raw value but not as a `Value`.
fn hostile() -> Vec<(&'static str, String)> {
    let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
    vec![
        (
            "a lone surrogate",
            r#"{"id":"s1","lastUpdateTime":"2026-11-26T10:00:00Z","title":"bad \ud800 half","computerDnsName":"h\udc00st","evidence":[{"entityType":"File","fileName":"\ud83d\ude00.exe"}]}"#.to_owned(),
        ),
        (
            "nesting past the recursion limit",
            format!(r#"{{"id":"d1","lastUpdateTime":"2026-11-26T10:00:00Z","title":"deep","computerDnsName":"wks-1","comments":{deep}}}"#),
        ),
        (
            "deep evidence",
            format!(r#"{{"id":"d2","lastUpdateTime":"2026-11-26T10:00:00Z","evidence":[{deep}]}}"#),
        ),
        (
            "a 3 MB title",
            format!(r#"{{"id":"h1","lastUpdateTime":"2026-11-26T10:00:00Z","title":"{}"}}"#, "é".repeat(1_500_000)),
        ),
        ("a deep array as the alert", deep),
    ]
}

#[test]
fn hostile_alerts_are_rendered_never_refused() {
    for (what, text) in hostile() {
        let raw = RawValue::from_string(text.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
        for source in [AlertSource::Mde, AlertSource::Graph] {
            for format in [OutputFormat::Raw, OutputFormat::Ecs, OutputFormat::Ocsf] {
                let rec = Record {
                    timestamp: Timestamp::parse(EMITTED).unwrap(),
                    change: Change::New,
                    source,
                    tenant_name: "contoso",
                    tenant_id: TENANT_ID,
                    alert: &raw,
                    version: None,
                };
                let mut buf = Vec::new();
                render(&mut buf, format, &rec).unwrap();
                assert_eq!(
                    buf.iter().filter(|&&b| b == b'\n').count(),
                    1,
                    "{what} {format:?}"
                );
                let line = std::str::from_utf8(&buf).unwrap();
                // Strict parsers must accept it: no lone surrogate is left.
                assert!(
                    !line.contains("\\ud800") && !line.contains("\\udc00"),
                    "{what}"
                );
                let mut de = serde_json::Deserializer::from_str(line);
                let v = <&RawValue as serde::Deserialize>::deserialize(&mut de)
                    .unwrap_or_else(|e| panic!("{what} {format:?}: {e}"));
                let _ = v;
                if format == OutputFormat::Ocsf && !what.contains("deep array") {
                    if let Ok(v) = serde_json::from_str::<Value>(line) {
                        let p = ocsf_problems(&v);
                        assert!(p.is_empty(), "{what}: {p:?}");
                    }
                }
            }
        }
    }
    // A lone surrogate becomes U+FFFD; a proper pair is kept.
    let raw = RawValue::from_string(hostile()[0].1.clone()).unwrap();
    let v = line(OutputFormat::Ecs, AlertSource::Mde, Change::New, &raw);
    assert_eq!(v["message"], "bad \u{fffd} half");
    assert_eq!(
        v["mde"]["alert"]["evidence"][0]["fileName"],
        "\u{1f600}.exe"
    );
    // A deep property costs only itself.
    let raw = RawValue::from_string(hostile()[1].1.clone()).unwrap();
    let v: Value = {
        let rec = Record {
            timestamp: Timestamp::parse(EMITTED).unwrap(),
            change: Change::New,
            source: AlertSource::Mde,
            tenant_name: "contoso",
            tenant_id: TENANT_ID,
            alert: &raw,
            version: None,
        };
        let mut buf = Vec::new();
        render(&mut buf, OutputFormat::Ocsf, &rec).unwrap();
        // The line nests as deep as the alert: read only the mapped part.
        let text = std::str::from_utf8(&buf).unwrap();
        let cut = text.find(",\"unmapped\"").expect("unmapped last");
        serde_json::from_str(&format!("{}}}", &text[..cut])).unwrap()
    };
    assert_eq!(v["finding_info"]["title"], "deep");
    assert_eq!(v["device"]["name"], "wks-1");
}
