//! Microsoft Graph's view of the alerts (`#microsoft.graph.security.alert`):
//! an MDE alert mapped to Graph's shape (API-NOTES, "MDE alert ↔ Graph alert"),
//! the alerts only Graph has (the other Defender products), updates to them,
//! the evolvable enums masked as `unknownFutureValue`, and Graph's error body.

use crate::config::tenants::GRAPH_SERVICE_SOURCES;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::timestamp::Timestamp;

/// A Defender product as Graph's `serviceSource` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceSource {
    DefenderForEndpoint,
    DefenderForOffice365,
    DefenderForIdentity,
    DefenderForCloudApps,
    EntraIdProtection,
    DataLossPrevention,
    /// An evolvable member: `unknownFutureValue` without the Prefer header.
    DefenderForCloud,
}

impl ServiceSource {
    /// The products whose alerts only Graph serves.
    pub const GRAPH_ONLY: [ServiceSource; 6] = [
        ServiceSource::DefenderForOffice365,
        ServiceSource::DefenderForIdentity,
        ServiceSource::DefenderForCloudApps,
        ServiceSource::EntraIdProtection,
        ServiceSource::DataLossPrevention,
        ServiceSource::DefenderForCloud,
    ];

    /// Graph's spelling, as in `serviceSource eq '…'`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ServiceSource::DefenderForEndpoint => "microsoftDefenderForEndpoint",
            ServiceSource::DefenderForOffice365 => "microsoftDefenderForOffice365",
            ServiceSource::DefenderForIdentity => "microsoftDefenderForIdentity",
            ServiceSource::DefenderForCloudApps => "microsoftDefenderForCloudApps",
            ServiceSource::EntraIdProtection => "azureAdIdentityProtection",
            ServiceSource::DataLossPrevention => "dataLossPrevention",
            ServiceSource::DefenderForCloud => "microsoftDefenderForCloud",
        }
    }
}

/// The first member of `microsoft.graph.security.serviceSource` after
/// `unknownFutureValue`: it and those after it (in the config's list, which
/// keeps Graph's order) are evolvable.
const FIRST_EVOLVABLE_SERVICE_SOURCE: &str = "microsoftDefenderForCloud";

/// Whether Graph's serviceSource enumeration has `v`: the products the
/// config accepts, plus the two sentinel members.
pub(crate) fn is_service_source(v: &str) -> bool {
    matches!(v, "unknown" | "unknownFutureValue") || GRAPH_SERVICE_SOURCES.contains(&v)
}

/// The `detectionSource` members after `unknownFutureValue` (evolvable).
const EVOLVABLE_DETECTION_SOURCES: &[&str] = &[
    "microsoftDefenderForCloud",
    "microsoftDefenderForIoT",
    "microsoftDefenderForServers",
    "microsoftDefenderForStorage",
    "microsoftDefenderForDNS",
    "microsoftDefenderForDatabases",
    "microsoftDefenderForContainers",
    "microsoftDefenderForNetwork",
    "microsoftDefenderForAppService",
    "microsoftDefenderForKeyVault",
    "microsoftDefenderForResourceManager",
    "microsoftDefenderForApiManagement",
    "nrtAlerts",
    "scheduledAlerts",
    "microsoftDefenderThreatIntelligenceAnalytics",
    "builtInMl",
    "microsoftInsiderRiskManagement",
    "microsoftSentinel",
];

fn evolvable_service_source(v: &str) -> bool {
    let at = |m: &str| GRAPH_SERVICE_SOURCES.iter().position(|s| *s == m);
    at(v)
        .zip(at(FIRST_EVOLVABLE_SERVICE_SOURCE))
        .is_some_and(|(i, first)| i >= first)
}

pub(crate) const ODATA_CONTEXT: &str =
    "https://graph.microsoft.com/v1.0/$metadata#security/alerts_v2";
const ALERT_TYPE: &str = "#microsoft.graph.security.alert";

/// One alert rendered in Graph's shape, once per version: `full` as served with
/// `Prefer: include-unknown-enum-members`, `masked` (only when it differs) as
/// served without it.
pub(crate) struct Rendered {
    pub full: Arc<str>,
    pub masked: Option<Arc<str>>,
}

impl Rendered {
    pub(crate) fn new(v: &Value) -> Rendered {
        let full: Arc<str> = v.to_string().into();
        let mut masked = None;
        let evolvable = |key: &str, pred: &dyn Fn(&str) -> bool| {
            v.get(key).and_then(Value::as_str).is_some_and(pred)
        };
        let mask_source = evolvable("serviceSource", &evolvable_service_source);
        let mask_detection = evolvable("detectionSource", &|d| {
            EVOLVABLE_DETECTION_SOURCES.contains(&d)
        });
        if mask_source || mask_detection {
            let mut m = v.clone();
            if mask_source {
                m["serviceSource"] = json!("unknownFutureValue");
            }
            if mask_detection {
                m["detectionSource"] = json!("unknownFutureValue");
            }
            masked = Some(m.to_string().into());
        }
        Rendered { full, masked }
    }

    pub(crate) fn text(&self, include_unknown: bool) -> &str {
        match (&self.masked, include_unknown) {
            (Some(m), false) => m,
            _ => &self.full,
        }
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// An enum value from MDE's PascalCase to Graph's camelCase; null → `unknown`.
fn camel_or_unknown(v: Option<&Value>) -> Value {
    match v.and_then(Value::as_str) {
        Some(s) if !s.is_empty() => json!(lower_first(s)),
        _ => json!("unknown"),
    }
}

fn detection_source(mde: &str) -> String {
    match mde {
        "WindowsDefenderAtp" => "microsoftDefenderForEndpoint".into(),
        "WindowsDefenderAv" => "antivirus".into(),
        "WindowsDefenderSmartScreen" => "smartScreen".into(),
        "CustomerTI" => "customTi".into(),
        "OfficeATP" => "microsoftDefenderForOffice365".into(),
        "ThreatExperts" => "microsoftThreatExperts".into(),
        "MTP" => "microsoft365Defender".into(),
        other => lower_first(other),
    }
}

fn evidence_base(kind: &str, created: &Value, verdict: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "@odata.type".into(),
        json!(format!("#microsoft.graph.security.{kind}")),
    );
    m.insert("createdDateTime".into(), created.clone());
    m.insert("verdict".into(), json!(verdict));
    m.insert("remediationStatus".into(), json!("none"));
    m.insert("remediationStatusDetails".into(), Value::Null);
    m.insert("roles".into(), json!([]));
    m.insert("detailedRoles".into(), json!([]));
    m.insert("tags".into(), json!([]));
    m
}

/// One MDE evidence entity in Graph's shape (`entityType` → `@odata.type`).
fn evidence_from_mde(e: &Value) -> Value {
    let g = |k: &str| e.get(k).cloned().unwrap_or(Value::Null);
    let kind = e.get("entityType").and_then(Value::as_str).unwrap_or("");
    let created = g("evidenceCreationTime");
    let status = e
        .get("detectionStatus")
        .and_then(Value::as_str)
        .map(lower_first);
    let verdict = if status.is_some() {
        "malicious"
    } else {
        "suspicious"
    };
    let file = || {
        json!({"sha1": g("sha1"), "sha256": g("sha256"), "fileName": g("fileName"), "filePath": g("filePath"),
               "fileSize": null, "filePublisher": null, "signer": null, "issuer": null})
    };
    let user = || {
        json!({"accountName": g("accountName"), "domainName": g("domainName"), "userSid": g("userSid"),
               "azureAdUserId": g("aadUserId"), "userPrincipalName": g("userPrincipalName"), "displayName": null})
    };
    let (odata, fields) = match kind {
        "Process" => (
            "processEvidence",
            json!({"processId": g("processId"), "parentProcessId": g("parentProcessId"),
                   "processCommandLine": g("processCommandLine"),
                   "processCreationDateTime": g("processCreationTime"),
                   "parentProcessCreationDateTime": g("parentProcessCreationTime"),
                   "imageFile": file(),
                   "parentProcessImageFile": {"fileName": g("parentProcessFileName"), "filePath": g("parentProcessFilePath")},
                   "userAccount": null, "detectionStatus": status}),
        ),
        "File" => (
            "fileEvidence",
            json!({"detectionStatus": status, "fileDetails": file(), "mdeDeviceId": null}),
        ),
        "User" => ("userEvidence", json!({"userAccount": user()})),
        "Ip" => (
            "ipEvidence",
            json!({"ipAddress": g("ipAddress"), "countryLetterCode": null}),
        ),
        "Url" => ("urlEvidence", json!({"url": g("url")})),
        "Registry" => (
            "registryValueEvidence",
            json!({"registryKey": g("registryKey"), "registryHive": g("registryHive"),
                   "registryValue": g("registryValue"), "registryValueType": g("registryValueType"),
                   "registryValueName": null, "mdeDeviceId": null}),
        ),
        // The ~25 other types: named after the entity, fields kept verbatim.
        other => {
            let kind = format!("{}Evidence", lower_first(other));
            let mut m = evidence_base(&kind, &created, verdict);
            for (k, v) in e.as_object().into_iter().flatten() {
                if k != "entityType" && k != "evidenceCreationTime" {
                    m.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            return Value::Object(m);
        }
    };
    let mut m = evidence_base(odata, &created, verdict);
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    Value::Object(m)
}

/// An MDE alert (with its evidence) as Graph serves it: same id, same update
/// time (same text), camelCase enums, string incidentId, Graph's names.
pub(crate) fn from_mde(a: &Value) -> Value {
    let g = |k: &str| a.get(k).cloned().unwrap_or(Value::Null);
    let id = a.get("id").and_then(Value::as_str).unwrap_or("");
    let tenant = a.get("aadTenantId").and_then(Value::as_str).unwrap_or("");
    let incident = match a.get("incidentId") {
        Some(Value::Number(n)) => json!(n.to_string()),
        Some(Value::String(s)) => json!(s),
        _ => Value::Null,
    };
    let severity = match a.get("severity").and_then(Value::as_str) {
        None | Some("UnSpecified") => json!("unknown"),
        Some(s) => json!(lower_first(s)),
    };
    let status = match a.get("status").and_then(Value::as_str) {
        None => json!("unknown"),
        Some(s) => json!(lower_first(s)),
    };
    let mut evidence = Vec::new();
    if let Some(machine) = a.get("machineId").and_then(Value::as_str) {
        let mut d = evidence_base("deviceEvidence", &g("alertCreationTime"), "suspicious");
        let more = json!({"mdeDeviceId": machine, "deviceDnsName": g("computerDnsName"), "osPlatform": "Windows10",
                          "osBuild": null, "healthStatus": "active", "riskScore": "medium", "rbacGroupName": g("rbacGroupName"),
                          "ipInterfaces": [], "loggedOnUsers": [], "azureAdDeviceId": null, "onboardingStatus": "onboarded"});
        if let Value::Object(more) = more {
            d.extend(more);
        }
        d.insert("roles".into(), json!(["compromised"]));
        evidence.push(Value::Object(d));
    }
    if let Some(list) = a.get("evidence").and_then(Value::as_array) {
        evidence.extend(list.iter().map(evidence_from_mde));
    }
    let comments: Vec<Value> = a
        .get("comments")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .map(|c| {
                    json!({"comment": c.get("comment").cloned().unwrap_or(Value::Null),
                       "createdByDisplayName": c.get("createdBy").cloned().unwrap_or(Value::Null),
                       "createdDateTime": c.get("createdTime").cloned().unwrap_or(Value::Null)})
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "@odata.type": ALERT_TYPE,
        "id": id,
        "providerAlertId": id,
        "incidentId": incident,
        "status": status,
        "severity": severity,
        "classification": camel_or_unknown(a.get("classification")),
        "determination": camel_or_unknown(a.get("determination")),
        "serviceSource": ServiceSource::DefenderForEndpoint.as_str(),
        "detectionSource": a.get("detectionSource").and_then(Value::as_str).map(detection_source),
        "productName": "Microsoft Defender for Endpoint",
        "detectorId": g("detectorId"),
        "tenantId": tenant,
        "title": g("title"),
        "description": g("description"),
        "recommendedActions": "",
        "category": g("category"),
        "assignedTo": g("assignedTo"),
        "alertWebUrl": format!("https://security.microsoft.com/alerts/{id}?tid={tenant}"),
        "incidentWebUrl": match &incident { Value::String(i) => json!(format!("https://security.microsoft.com/incidents/{i}?tid={tenant}")), _ => Value::Null },
        "actorDisplayName": null,
        "threatDisplayName": g("threatName"),
        "threatFamilyName": g("threatFamilyName"),
        "mitreTechniques": a.get("mitreTechniques").cloned().unwrap_or(json!([])),
        "createdDateTime": g("alertCreationTime"),
        "lastUpdateDateTime": g("lastUpdateTime"),
        "resolvedDateTime": g("resolvedTime"),
        "firstActivityDateTime": g("firstEventTime"),
        "lastActivityDateTime": g("lastEventTime"),
        "comments": comments,
        "systemTags": [],
        "alertPolicyId": null,
        "additionalData": {},
        "evidence": evidence,
    })
}

/// (service source, prefix of its ids, product name, detection sources,
///  (category, title, description, mitre) kinds)
type Product = (
    ServiceSource,
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static [(
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
    )],
);

const PRODUCTS: &[Product] = &[
    (
        ServiceSource::DefenderForOffice365,
        "fa",
        "Microsoft Defender for Office 365",
        &["microsoftDefenderForOffice365"],
        &[
            (
                "InitialAccess",
                "Email messages containing malicious URL removed after delivery",
                "Emails with a malicious URL were delivered and later removed.",
                &["T1566.002"],
            ),
            (
                "InitialAccess",
                "A potentially malicious URL click was detected",
                "A user clicked a link that was later found malicious.",
                &["T1204.001"],
            ),
        ],
    ),
    (
        ServiceSource::DefenderForIdentity,
        "aa",
        "Microsoft Defender for Identity",
        &["microsoftDefenderForIdentity"],
        &[
            (
                "CredentialAccess",
                "Suspected Brute Force attack (Kerberos, NTLM)",
                "Many authentication failures were seen from one device.",
                &["T1110"],
            ),
            (
                "Discovery",
                "Account enumeration reconnaissance",
                "An actor enumerated accounts against a domain controller.",
                &["T1087.002"],
            ),
        ],
    ),
    (
        ServiceSource::DefenderForCloudApps,
        "ca",
        "Microsoft Defender for Cloud Apps",
        &["cloudAppSecurity", "appGovernanceDetection"],
        &[
            (
                "Exfiltration",
                "Mass download by a single user",
                "A user downloaded an unusual number of files in one session.",
                &["T1530"],
            ),
            (
                "InitialAccess",
                "Activity from infrequent country",
                "Activity came from a country no one in the organization recently used.",
                &[],
            ),
        ],
    ),
    (
        ServiceSource::EntraIdProtection,
        "ad",
        "Microsoft Entra ID Protection",
        &["azureAdIdentityProtection"],
        &[
            (
                "InitialAccess",
                "Unfamiliar sign-in properties",
                "A sign-in had properties not seen recently for this user.",
                &["T1078"],
            ),
            (
                "InitialAccess",
                "Anonymous IP address",
                "A sign-in came from an anonymous IP address.",
                &["T1090.003"],
            ),
        ],
    ),
    (
        ServiceSource::DataLossPrevention,
        "dl",
        "Microsoft Data Loss Prevention",
        &["microsoftDataLossPrevention"],
        &[(
            "Exfiltration",
            "DLP policy (Credit card numbers) matched for email",
            "An email carried content that matched a DLP policy.",
            &[],
        )],
    ),
    (
        ServiceSource::DefenderForCloud,
        "dc",
        "Microsoft Defender for Cloud",
        // Evolvable, as the real service's newer detection sources are.
        &[
            "microsoftDefenderForServers",
            "microsoftDefenderForStorage",
            "microsoftDefenderForDNS",
        ],
        &[
            (
                "Execution",
                "Suspicious process executed on a virtual machine",
                "A process commonly used by attackers ran on a machine.",
                &["T1059"],
            ),
            (
                "Exfiltration",
                "Unusual amount of data extracted from a storage account",
                "Much more data than usual was read from a storage account.",
                &["T1537"],
            ),
        ],
    ),
];

const USERS: &[&str] = &["jsmith", "mlee", "akumar", "svc_backup", "administrator"];

fn hex(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
        .collect()
}

fn guid(rng: &mut impl Rng) -> String {
    uuid::Builder::from_random_bytes(rng.gen())
        .into_uuid()
        .to_string()
}

/// A Graph-only alert of `source` (for MDE, use the MDE generator: its alerts
/// are visible through both APIs), updated last at `last_update`.
pub(crate) fn generate(
    rng: &mut impl Rng,
    id: &str,
    tenant_id: &str,
    source: ServiceSource,
    last_update: Timestamp,
    last_update_text: &str,
) -> Value {
    let (_, _, product, detections, kinds) = PRODUCTS
        .iter()
        .find(|p| p.0 == source)
        .copied()
        .unwrap_or(PRODUCTS[0]);
    let (category, title, description, mitre) = *kinds.choose(rng).expect("non-empty");
    let back = |rng: &mut dyn rand::RngCore, t: Timestamp, max: i64| {
        Timestamp::from_ticks(t.ticks() - rng.gen_range(1..max * 10_000_000))
    };
    let created = back(rng, last_update, 3600);
    let last_act = back(rng, created, 300);
    let first_act = back(rng, last_act, 120);
    let user = *USERS.choose(rng).expect("non-empty");
    let status = *["new", "new", "inProgress"].choose(rng).expect("non-empty");
    let ev_created = json!(created.to_string());
    let user_ev = {
        let mut m = evidence_base("userEvidence", &ev_created, "suspicious");
        m.insert("roles".into(), json!(["compromised"]));
        m.insert("userAccount".into(), json!({"accountName": user, "domainName": "CONTOSO", "userSid": format!("S-1-5-21-{}-{}", rng.gen_range(1_000_000..9_999_999), rng.gen_range(1000..9999)),
            "azureAdUserId": guid(rng), "userPrincipalName": format!("{user}@contoso.com"), "displayName": user}));
        Value::Object(m)
    };
    let ip = format!("203.0.113.{}", rng.gen_range(1..255));
    let extra = match source {
        ServiceSource::DefenderForOffice365 => {
            let mut m = evidence_base("analyzedMessageEvidence", &ev_created, "malicious");
            m.insert("networkMessageId".into(), json!(guid(rng)));
            m.insert(
                "internetMessageId".into(),
                json!(format!("<{}@mail.example.net>", hex(rng, 12))),
            );
            m.insert("subject".into(), json!("Your invoice is ready"));
            m.insert("senderIp".into(), json!(ip));
            m.insert(
                "recipientEmailAddress".into(),
                json!(format!("{user}@contoso.com")),
            );
            m.insert("p1Sender".into(), json!({"emailAddress": "billing@malicious.example.net", "displayName": "Billing", "domainName": "malicious.example.net"}));
            m.insert("deliveryAction".into(), json!("delivered"));
            m.insert("deliveryLocation".into(), json!("inbox_folder"));
            m.insert(
                "urls".into(),
                json!(["http://malicious.example.net/invoice"]),
            );
            m.insert("threats".into(), json!(["Phish"]));
            m.insert("antiSpamDirection".into(), json!("inbound"));
            Value::Object(m)
        }
        ServiceSource::DefenderForCloudApps => {
            let mut m = evidence_base("cloudApplicationEvidence", &ev_created, "suspicious");
            m.insert("appId".into(), json!(rng.gen_range(10_000..40_000)));
            m.insert("displayName".into(), json!("Microsoft SharePoint Online"));
            m.insert("instanceId".into(), json!(0));
            m.insert("instanceName".into(), json!("Microsoft SharePoint Online"));
            m.insert("saasAppId".into(), json!(20892));
            Value::Object(m)
        }
        ServiceSource::DefenderForCloud => {
            let mut m = evidence_base("azureResourceEvidence", &ev_created, "suspicious");
            let name = format!("vm-{}", hex(rng, 6));
            m.insert("resourceId".into(), json!(format!("/subscriptions/{}/resourceGroups/prod/providers/Microsoft.Compute/virtualMachines/{name}", guid(rng))));
            m.insert("resourceName".into(), json!(name));
            m.insert("resourceType".into(), json!("Virtual Machine"));
            Value::Object(m)
        }
        _ => {
            let mut m = evidence_base("ipEvidence", &ev_created, "suspicious");
            m.insert("ipAddress".into(), json!(ip));
            m.insert(
                "countryLetterCode".into(),
                json!(["NL", "BR", "VN", "US"]
                    .choose(rng)
                    .copied()
                    .unwrap_or("US")),
            );
            Value::Object(m)
        }
    };
    json!({
        "@odata.type": ALERT_TYPE,
        "id": id,
        "providerAlertId": guid(rng),
        "incidentId": rng.gen_range(1_000..2_000_000u32).to_string(),
        "status": status,
        "severity": *["informational", "low", "medium", "medium", "high"].choose(rng).expect("non-empty"),
        "classification": "unknown",
        "determination": "unknown",
        "serviceSource": source.as_str(),
        "detectionSource": *detections.choose(rng).expect("non-empty"),
        "productName": product,
        "detectorId": guid(rng),
        "tenantId": tenant_id,
        "title": title,
        "description": description,
        "recommendedActions": "Review the activity and the user's recent sign-ins.",
        "category": category,
        "assignedTo": (status != "new").then(|| format!("{user}@contoso.com")),
        "alertWebUrl": format!("https://security.microsoft.com/alerts/{id}?tid={tenant_id}"),
        "incidentWebUrl": null,
        "actorDisplayName": null,
        "threatDisplayName": null,
        "threatFamilyName": null,
        "mitreTechniques": mitre,
        "createdDateTime": created.to_string(),
        "lastUpdateDateTime": last_update_text,
        "resolvedDateTime": null,
        "firstActivityDateTime": first_act.to_string(),
        "lastActivityDateTime": last_act.to_string(),
        "comments": [],
        "systemTags": [],
        "alertPolicyId": null,
        "additionalData": {},
        "evidence": [user_ev, extra],
    })
}

/// The id prefix Graph-only alerts of `source` get (as the real ids show the
/// product: `da…` MDE, `fa…` Office 365, `aa…` Identity, …).
pub(crate) fn id_prefix(source: ServiceSource) -> &'static str {
    PRODUCTS
        .iter()
        .find(|p| p.0 == source)
        .map_or("da", |p| p.1)
}

/// Moves a Graph-form alert on (new → inProgress → resolved), adds a comment
/// and stamps it: the update of an alert only Graph has.
pub(crate) fn update(v: &mut Value, at_text: &str, by: &str, comment: &str) {
    let status = v.get("status").and_then(Value::as_str).unwrap_or("new");
    let resolved = !matches!(status, "new" | "unknown");
    v["status"] = json!(if resolved { "resolved" } else { "inProgress" });
    if resolved {
        v["resolvedDateTime"] = json!(at_text);
        v["classification"] = json!("truePositive");
        v["determination"] = json!("malware");
    }
    if v.get("assignedTo").is_none_or(Value::is_null) {
        v["assignedTo"] = json!(by);
    }
    let c = json!({"comment": comment, "createdByDisplayName": by, "createdDateTime": at_text});
    match v.get_mut("comments").and_then(Value::as_array_mut) {
        Some(list) => list.push(c),
        None => v["comments"] = json!([c]),
    }
    v["lastUpdateDateTime"] = json!(at_text);
}

/// Graph's error body: `{"error":{"code","message","innerError":{date,
/// request-id, client-request-id}}}`; the client-request-id is the caller's
/// when it sent one.
pub(crate) fn error_body(code: &str, message: &str, client_request_id: Option<&str>) -> String {
    let request_id = uuid::Uuid::new_v4().to_string();
    let stamp = Timestamp::now().to_string();
    json!({"error": {"code": code, "message": message, "innerError": {
        "date": format!("{}Z", &stamp[..19]),
        "request-id": request_id,
        "client-request-id": client_request_id.map_or_else(|| request_id.clone(), str::to_owned),
    }}})
    .to_string()
}
