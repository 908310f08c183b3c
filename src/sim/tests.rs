//! The simulator driven over loopback HTTP as a client would see it.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use serde_json::{json, Value};

use super::*;

const T1: &str = "11111111-1111-1111-1111-111111111111";
const T2: &str = "22222222-2222-2222-2222-222222222222";
const APP: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const SECRET: &str = "s3cret~value";
const SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";

fn sim(opts: SimOptions) -> Simulator {
    let sim = Simulator::start(opts).unwrap();
    sim.add_app(SimApp::with_secret(APP, SECRET));
    sim.add_tenant(SimTenant::consented(T1, APP));
    sim
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

async fn post_token(sim: &Simulator, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = http()
        .post(format!("{}/{path}", sim.url()))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn token_for(sim: &Simulator, tenant: &str) -> String {
    let (st, body) = post_token(
        sim,
        &format!("{tenant}/oauth2/v2.0/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(st, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

async fn list(
    sim: &Simulator,
    token: &str,
    query: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let r = http()
        .get(format!("{}/api/alerts{query}", sim.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn ids(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap();
    v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect()
}

fn alert(id: &str, lut: &str) -> Value {
    json!({"id": id, "lastUpdateTime": lut, "alertCreationTime": "2021-01-26T20:00:00Z", "status": "New",
           "evidence": [{"entityType": "File"}]})
}

#[tokio::test]
async fn filter_compares_at_full_precision_whatever_the_digit_count() {
    let sim = sim(SimOptions::default());
    sim.insert_alert(T1, alert("below", "2021-01-26T20:33:59.1999999Z"))
        .unwrap();
    sim.insert_alert(T1, alert("equal", "2021-01-26T20:33:59.2Z"))
        .unwrap();
    sim.insert_alert(T1, alert("above", "2021-01-26T20:33:59.2000001Z"))
        .unwrap();
    let tok = token_for(&sim, T1).await;

    let (st, _, body) = list(
        &sim,
        &tok,
        "?$filter=lastUpdateTime%20ge%202021-01-26T20:33:59.2000000Z",
    )
    .await;
    assert_eq!(st, 200);
    let mut got = ids(&body);
    got.sort();
    assert_eq!(got, ["above", "equal"]);

    // `+` is a space too, and the bound may be written with one digit.
    let (_, _, body) = list(
        &sim,
        &tok,
        "?$filter=lastUpdateTime+lt+2021-01-26T20:33:59.2Z",
    )
    .await;
    assert_eq!(ids(&body), ["below"]);

    let (_, _, body) = list(
        &sim,
        &tok,
        "?$filter=lastUpdateTime gt 2021-01-26T20:33:59.1999999Z and lastUpdateTime le 2021-01-26T20:33:59.2000000Z",
    )
    .await;
    assert_eq!(ids(&body), ["equal"]);

    // The text is served as written, at its own precision.
    assert!(
        body.contains("\"lastUpdateTime\":\"2021-01-26T20:33:59.2Z\""),
        "{body}"
    );
}

#[tokio::test]
async fn results_come_in_no_time_order_but_stable_while_nothing_changes() {
    let sim = sim(SimOptions::default());
    let from = ts("2026-11-26T10:00:00Z");
    sim.generate_alerts(
        T1,
        300,
        from,
        from.saturating_add(Duration::from_secs(3600)),
    );
    let tok = token_for(&sim, T1).await;

    let (_, _, body) = list(&sim, &tok, "").await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["@odata.context"],
        "https://api.securitycenter.microsoft.com/api/$metadata#Alerts"
    );
    let times: Vec<Timestamp> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| ts(a["lastUpdateTime"].as_str().unwrap()))
        .collect();
    assert_eq!(times.len(), 300);
    assert!(
        !times.is_sorted() && !times.iter().rev().is_sorted(),
        "results must not be time-ordered"
    );

    // Unchanged data: identical requests agree, so $skip pages partition the set.
    let (_, _, again) = list(&sim, &tok, "").await;
    assert_eq!(ids(&body), ids(&again));
    let mut paged = Vec::new();
    for skip in [0, 100, 200, 300] {
        let (st, _, page) = list(&sim, &tok, &format!("?$top=100&$skip={skip}")).await;
        assert_eq!(st, 200);
        paged.extend(ids(&page));
    }
    assert_eq!(paged, ids(&body));

    // A change reshuffles, as $skip over changing data is unreliable.
    sim.generate_alerts(T1, 1, from, from.saturating_add(Duration::from_secs(1)));
    let (_, _, after) = list(&sim, &tok, "?$top=100").await;
    assert_ne!(ids(&after), ids(&body)[..100]);
}

#[tokio::test]
async fn top_skip_and_expand_follow_the_service() {
    let sim = sim(SimOptions::default());
    let from = ts("2026-11-26T10:00:00Z");
    sim.generate_alerts(T1, 20, from, from.saturating_add(Duration::from_secs(60)));
    let tok = token_for(&sim, T1).await;

    assert_eq!(ids(&list(&sim, &tok, "?$top=5").await.2).len(), 5);
    assert_eq!(ids(&list(&sim, &tok, "?$top=5&$skip=18").await.2).len(), 2);
    assert_eq!(ids(&list(&sim, &tok, "?$top=0").await.2).len(), 0);
    for bad in [
        "?$top=10001",
        "?$top=-1",
        "?$top=ten",
        "?$skip=-3",
        "?$filter=lastUpdateTime%20ge%20'2026-11-26T10:00:00Z'",
        "?$top=1&$top=2",
    ] {
        let (st, _, body) = list(&sim, &tok, bad).await;
        assert_eq!(st, 400, "{bad}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "ODataError", "{bad}");
    }

    let plain: Value = serde_json::from_str(&list(&sim, &tok, "").await.2).unwrap();
    assert!(plain["value"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["evidence"] == json!([])));
    let expanded: Value =
        serde_json::from_str(&list(&sim, &tok, "?$expand=evidence").await.2).unwrap();
    assert!(expanded["value"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| !a["evidence"].as_array().unwrap().is_empty()));
}

#[tokio::test]
async fn expired_missing_or_foreign_tokens_get_401_and_roleless_403() {
    let sim = sim(SimOptions {
        token_lifetime: Duration::ZERO,
        ..SimOptions::default()
    });
    let tok = token_for(&sim, T1).await;
    let (st, _, body) = list(&sim, &tok, "").await;
    assert_eq!(st, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        "Unauthorized"
    );
    assert_eq!(list(&sim, "not-a-token", "").await.0, 401);
    let r = http()
        .get(format!("{}/api/alerts", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let sim2 = self::sim(SimOptions::default());
    sim2.add_tenant(SimTenant {
        roles: vec![],
        ..SimTenant::consented(T2, APP)
    });
    let tok = token_for(&sim2, T2).await;
    let claims = tok.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    assert!(claims.get("roles").is_none());
    assert_eq!(claims["tid"], T2);
    let (st, _, body) = list(&sim2, &tok, "").await;
    assert_eq!(st, 403, "{body}");
    // A token of another simulator (never issued here) is unknown.
    assert_eq!(list(&sim2, &token_for(&sim, T1).await, "").await.0, 401);
}

#[tokio::test]
async fn tokens_carry_the_documented_claims_and_v1_uses_strings() {
    let sim = sim(SimOptions::default());
    let tok = token_for(&sim, T1).await;
    let claims = tok.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], "https://api.securitycenter.microsoft.com");
    assert_eq!(claims["iss"], format!("https://sts.windows.net/{T1}/"));
    assert_eq!(claims["appid"], APP);
    assert_eq!(claims["roles"], json!(["Alert.Read.All"]));
    assert_eq!(claims["ver"], "1.0");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3599
    );

    let (st, v2) = post_token(
        &sim,
        &format!("{T1}/oauth2/v2.0/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v2["expires_in"], 3599);
    assert_eq!(v2["token_type"], "Bearer");

    let (st, v1) = post_token(
        &sim,
        &format!("{T1}/oauth2/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("resource", "https://api.securitycenter.microsoft.com"),
        ],
    )
    .await;
    assert_eq!(st, 200, "{v1}");
    assert_eq!(v1["expires_in"], "3599");
    assert!(v1["expires_on"].as_str().unwrap().parse::<i64>().is_ok());
    assert_eq!(
        list(&sim, v1["access_token"].as_str().unwrap(), "").await.0,
        200
    );
}

#[tokio::test]
async fn each_token_refusal_has_its_aadsts_code() {
    let sim = sim(SimOptions::default());
    let expired = "bbbbbbbb-0000-4000-8000-000000000002";
    let disabled = "cccccccc-0000-4000-8000-000000000003";
    let no_mde = "33333333-3333-3333-3333-333333333333";
    sim.add_app(SimApp {
        secret_expired: true,
        ..SimApp::with_secret(expired, SECRET)
    });
    sim.add_app(SimApp {
        disabled: true,
        ..SimApp::with_secret(disabled, SECRET)
    });
    sim.add_tenant(SimTenant {
        consented_apps: vec![APP.into(), expired.into(), disabled.into()],
        ..SimTenant::consented(T2, APP)
    });
    sim.add_tenant(SimTenant {
        has_mde: false,
        ..SimTenant::consented(no_mde, APP)
    });
    let cases: &[(&str, &str, &str, &str, u16, &str, u32)] = &[
        (
            "44444444-4444-4444-4444-444444444444",
            APP,
            SECRET,
            SCOPE,
            400,
            "invalid_request",
            90002,
        ),
        (
            "contoso.onmicrosoft.com",
            APP,
            SECRET,
            SCOPE,
            400,
            "invalid_request",
            90002,
        ),
        (
            T1,
            "dddddddd-0000-4000-8000-000000000009",
            SECRET,
            SCOPE,
            400,
            "unauthorized_client",
            700016,
        ),
        (
            T1,
            expired,
            SECRET,
            SCOPE,
            400,
            "unauthorized_client",
            700016,
        ),
        (
            T1,
            APP,
            "the-secret-id",
            SCOPE,
            401,
            "invalid_client",
            7000215,
        ),
        (T2, expired, SECRET, SCOPE, 401, "invalid_client", 7000222),
        (
            T2,
            disabled,
            SECRET,
            SCOPE,
            400,
            "unauthorized_client",
            7000112,
        ),
        (no_mde, APP, SECRET, SCOPE, 400, "invalid_resource", 500011),
        (
            T1,
            APP,
            SECRET,
            "https://api.securitycenter.microsoft.com",
            400,
            "invalid_scope",
            1002012,
        ),
    ];
    for &(tenant, client, secret, scope, status, error, code) in cases {
        let (st, body) = post_token(
            &sim,
            &format!("{tenant}/oauth2/v2.0/token"),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client),
                ("client_secret", secret),
                ("scope", scope),
            ],
        )
        .await;
        assert_eq!(
            (st, body["error"].as_str().unwrap()),
            (status, error),
            "{tenant} {client}: {body}"
        );
        assert_eq!(body["error_codes"], json!([code]), "{body}");
        assert!(body["error_description"]
            .as_str()
            .unwrap()
            .starts_with(&format!("AADSTS{code}: ")));
        assert!(!body.to_string().contains(SECRET), "no secret echoed");
    }

    // Revoking consent refuses new tokens.
    sim.set_consent(T1, APP, false);
    let (st, body) = post_token(
        &sim,
        &format!("{T1}/oauth2/v2.0/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!((st, body["error_codes"].clone()), (400, json!([700016])));
}

#[tokio::test]
async fn certificate_assertions_are_verified_by_the_token_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, key) = tokens::tests::openssl_cert(dir.path(), "app");
    let (_, other_key) = tokens::tests::openssl_cert(dir.path(), "other");
    let sim = sim(SimOptions::default());
    let cert_app = "eeeeeeee-0000-4000-8000-000000000005";
    sim.add_app(SimApp {
        client_id: cert_app.into(),
        certificate_pem: Some(pem.clone()),
        ..SimApp::default()
    });
    sim.add_tenant(SimTenant::consented(T2, cert_app));
    let aud = format!("{}/{T2}/oauth2/v2.0/token", sim.url());
    let now = Timestamp::now().unix_seconds();
    let post = |assertion: String| {
        let sim = sim.clone();
        async move {
            post_token(
                &sim,
                &format!("{T2}/oauth2/v2.0/token"),
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", cert_app),
                    ("client_assertion_type", tokens::CLIENT_ASSERTION_TYPE),
                    ("client_assertion", &assertion),
                    ("scope", SCOPE),
                ],
            )
            .await
        }
    };
    let (st, body) = post(tokens::tests::sign(
        "PS256",
        &pem,
        &key,
        &tokens::tests::claims(cert_app, &aud, now),
    ))
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = post(tokens::tests::sign(
        "RS256",
        &pem,
        &key,
        &tokens::tests::claims(cert_app, &aud, now),
    ))
    .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = post(tokens::tests::sign(
        "PS256",
        &pem,
        &other_key,
        &tokens::tests::claims(cert_app, &aud, now),
    ))
    .await;
    assert_eq!((st, body["error_codes"].clone()), (401, json!([700027])));
    let wrong_aud = "https://login.microsoftonline.com/x/oauth2/v2.0/token";
    let (st, body) = post(tokens::tests::sign(
        "PS256",
        &pem,
        &key,
        &tokens::tests::claims(cert_app, wrong_aud, now),
    ))
    .await;
    assert_eq!((st, body["error_codes"].clone()), (401, json!([700027])));
    assert!(body["error_description"].as_str().unwrap().contains("aud"));
}

#[tokio::test]
async fn the_call_budget_answers_429_with_retry_after() {
    let sim = sim(SimOptions {
        per_minute: 3,
        ..SimOptions::default()
    });
    sim.add_tenant(SimTenant::consented(T2, APP));
    let tok = token_for(&sim, T1).await;
    for _ in 0..3 {
        assert_eq!(list(&sim, &tok, "").await.0, 200);
    }
    let (st, headers, body) = list(&sim, &tok, "").await;
    assert_eq!(st, 429);
    let secs: u64 = headers[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]["code"],
        "TooManyRequests"
    );
    // The budget is per tenant.
    let tok2 = token_for(&sim, T2).await;
    assert_eq!(list(&sim, &tok2, "").await.0, 200);
    let rec = sim.requests();
    let throttled: Vec<_> = rec.iter().filter(|r| r.status == 429).collect();
    assert_eq!(throttled.len(), 1);
    assert_eq!(throttled[0].retry_after, Some(secs));
    assert_eq!(throttled[0].tenant_id.as_deref(), Some(T1));
}

#[tokio::test]
async fn scheduled_faults_answer_the_requests_named_and_count_afresh_when_set() {
    let sim = sim(SimOptions::default());
    sim.add_tenant(SimTenant::consented(T2, APP));
    sim.generate_alerts(
        T1,
        5,
        ts("2026-01-01T00:00:00Z"),
        ts("2026-01-02T00:00:00Z"),
    );
    let tok = token_for(&sim, T1).await;
    let tok2 = token_for(&sim, T2).await;
    let schedule = Faults {
        throttle_at: vec![2, 3],
        unavailable_at: vec![5],
        retry_after_secs: 4,
        ..Faults::none()
    };
    sim.set_faults(None, schedule.clone());
    // A request without a valid token is not one of the tenant's.
    assert_eq!(list(&sim, "not-a-token", "").await.0, 401);
    let mut got = Vec::new();
    for _ in 0..6 {
        let (st, h, _) = list(&sim, &tok, "").await;
        got.push((st, h.get(RETRY_AFTER).is_some()));
    }
    assert_eq!(
        got,
        [
            (200, false),
            (429, true),
            (429, true),
            (200, false),
            (503, true),
            (200, false)
        ]
    );
    // Another tenant has its own count.
    assert_eq!(list(&sim, &tok2, "").await.0, 200);
    assert_eq!(list(&sim, &tok2, "").await.0, 429);
    let throttled: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.status == 429)
        .collect();
    assert_eq!(throttled.len(), 3);
    assert!(throttled.iter().all(|r| r.retry_after == Some(4)));
    // Setting faults starts the count again.
    sim.set_faults(Some(T1), schedule);
    assert_eq!(list(&sim, &tok, "").await.0, 200);
    assert_eq!(list(&sim, &tok, "").await.0, 429);
}

#[tokio::test]
async fn injected_faults_produce_their_failures() {
    let sim = sim(SimOptions::default());
    sim.generate_alerts(
        T1,
        50,
        ts("2026-01-01T00:00:00Z"),
        ts("2026-01-02T00:00:00Z"),
    );
    let tok = token_for(&sim, T1).await;
    let set = |f: Faults| sim.set_faults(Some(T1), f);

    set(Faults {
        p_500: 1.0,
        ..Faults::none()
    });
    assert_eq!(list(&sim, &tok, "").await.0, 500);
    set(Faults {
        p_503: 1.0,
        retry_after_secs: 7,
        ..Faults::none()
    });
    let (st, h, _) = list(&sim, &tok, "").await;
    assert_eq!(st, 503);
    assert!(h.contains_key(RETRY_AFTER));
    let (_, h2, _) = list(&sim, &tok, "").await;
    let forms = [
        h[RETRY_AFTER].to_str().unwrap(),
        h2[RETRY_AFTER].to_str().unwrap(),
    ];
    assert!(
        forms.contains(&"7") && forms.iter().any(|f| httpdate::parse_http_date(f).is_ok()),
        "{forms:?}"
    );
    set(Faults {
        p_429: 1.0,
        ..Faults::none()
    });
    assert_eq!(list(&sim, &tok, "").await.0, 429);

    set(Faults {
        p_truncated: 1.0,
        ..Faults::none()
    });
    let (st, _, body) = list(&sim, &tok, "").await;
    assert_eq!(st, 200);
    assert!(
        serde_json::from_str::<Value>(&body).is_err(),
        "truncated body must not parse"
    );

    set(Faults {
        p_reset: 1.0,
        ..Faults::none()
    });
    let r = http()
        .get(format!("{}/api/alerts", sim.url()))
        .bearer_auth(&tok)
        .send()
        .await;
    let failed = match r {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(failed, "a reset must surface as a transport error");

    set(Faults {
        p_stall: 1.0,
        stall: Duration::from_secs(30),
        ..Faults::none()
    });
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = client
        .get(format!("{}/api/alerts", sim.url()))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());

    // Faults are per tenant: T2 is unaffected by T1's.
    sim.add_tenant(SimTenant::consented(T2, APP));
    let tok2 = token_for(&sim, T2).await;
    assert_eq!(list(&sim, &tok2, "").await.0, 200);

    // Token faults.
    sim.set_faults(
        Some(T2),
        Faults {
            token_p_500: 1.0,
            ..Faults::none()
        },
    );
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", APP),
        ("client_secret", SECRET),
        ("scope", SCOPE),
    ];
    assert_eq!(
        post_token(&sim, &format!("{T2}/oauth2/v2.0/token"), &form)
            .await
            .0,
        500
    );
    sim.set_faults(
        Some(T2),
        Faults {
            token_p_transient: 1.0,
            ..Faults::none()
        },
    );
    let (st, body) = post_token(&sim, &format!("{T2}/oauth2/v2.0/token"), &form).await;
    assert_eq!(st, 400);
    let code = body["error_codes"][0].as_u64().unwrap();
    assert!(code == 90055 || code == 50196, "{body}");
    sim.shutdown();
}

#[tokio::test]
async fn updates_and_late_arrivals_are_new_versions() {
    let sim = sim(SimOptions::default());
    let from = ts("2026-11-26T10:00:00Z");
    let ids_ = sim.generate_alerts(T1, 3, from, from.saturating_add(Duration::from_secs(60)));
    let later = ts("2026-11-26T11:00:00.5Z");
    assert!(sim.update_alert(T1, &ids_[0], later));
    assert!(
        !sim.update_alert(T1, &ids_[0], later),
        "an update must move time forward"
    );
    assert!(!sim.update_alert(T1, "nope", later));
    assert!(sim.update_alert(T1, &ids_[0], ts("2026-11-26T11:00:01Z")));
    let cur = sim.current(T1);
    let a = cur.iter().find(|a| a["id"] == ids_[0].as_str()).unwrap();
    assert_eq!(a["lastUpdateTime"], "2026-11-26T11:00:01.0Z");
    assert_eq!(a["status"], "Resolved");
    assert!(a["resolvedTime"].is_string());
    assert!(a["comments"].as_array().unwrap().len() >= 2);
    assert_eq!(sim.versions(T1).len(), 5);
    assert_eq!(sim.alert_count(T1), 3);

    // A late arrival: older than what was visible; caught by a lookback filter.
    sim.insert_alert(T1, alert("late", "2026-11-26T10:00:30.25Z"))
        .unwrap();
    let tok = token_for(&sim, T1).await;
    let (_, _, body) = list(
        &sim,
        &tok,
        "?$filter=lastUpdateTime ge 2026-11-26T10:00:30.25Z",
    )
    .await;
    assert!(ids(&body).contains(&"late".to_owned()));
    assert!(sim.insert_alert(T1, json!({"id": "x"})).is_err());
}

#[tokio::test]
async fn requests_are_recorded_with_their_query() {
    let sim = sim(SimOptions::default());
    let tok = token_for(&sim, T1).await;
    sim.clear_requests();
    list(
        &sim,
        &tok,
        "?$filter=lastUpdateTime%20ge%202026-11-26T10:00:00Z&$top=50&$skip=5",
    )
    .await;
    let rec = sim.requests();
    assert_eq!(rec.len(), 1);
    let r = &rec[0];
    assert_eq!(r.kind, RequestKind::Alerts);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.filter.as_deref(),
        Some("lastUpdateTime ge 2026-11-26T10:00:00Z")
    );
    assert_eq!((r.top, r.skip), (Some(50), Some(5)));
    assert_eq!(r.client_id.as_deref(), Some(APP));
}

#[tokio::test]
async fn live_activity_adds_alerts_until_shutdown() {
    let sim = sim(SimOptions::default());
    let task = sim.spawn_activity(
        T1,
        Activity {
            every: Duration::from_millis(10),
            new: 2,
            updates: 1,
            late_fraction: 0.5,
            max_late: Duration::from_secs(60),
        },
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(sim.alert_count(T1) >= 4);
    sim.shutdown();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
}

/// Not a unit test: `cargo test --release --lib sim::tests::page_of_10k -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn page_of_10k_out_of_100k_is_fast() {
    let sim = sim(SimOptions {
        per_minute: 0,
        per_hour: 0,
        ..SimOptions::default()
    });
    let from = ts("2026-01-01T00:00:00Z");
    let t0 = std::time::Instant::now();
    sim.generate_alerts(
        T1,
        100_000,
        from,
        from.saturating_add(Duration::from_secs(86_400)),
    );
    println!("generate 100k: {:?}", t0.elapsed());
    let tok = token_for(&sim, T1).await;
    for q in [
        "?$top=10000",
        "?$top=10000&$filter=lastUpdateTime%20ge%202026-01-01T12:00:00Z",
        "?$top=10000&$expand=evidence",
    ] {
        let t0 = std::time::Instant::now();
        let (st, _, body) = list(&sim, &tok, q).await;
        println!("{q}: {:?}, {} bytes", t0.elapsed(), body.len());
        assert_eq!(st, 200);
    }
}

#[tokio::test]
async fn tenant_ids_match_whatever_their_case() {
    let sim = sim(SimOptions::default());
    let lower = "abcdef00-0000-4000-8000-00000000abcd";
    sim.add_tenant(SimTenant::consented(lower, APP));
    let tok = token_for(&sim, &lower.to_uppercase()).await;
    let claims = tok.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap();
    // The token names the tenant as registered, and reads its alerts.
    assert_eq!(claims["tid"], lower);
    sim.insert_alert(lower, alert("a", "2026-01-01T00:00:00Z"))
        .unwrap();
    assert_eq!(ids(&list(&sim, &tok, "").await.2), ["a"]);
}

// ---- Microsoft Graph alerts_v2 ----

const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const PREFER: &str = "include-unknown-enum-members";

async fn token_with_scope(sim: &Simulator, tenant: &str, scope: &str) -> (u16, Value) {
    post_token(
        sim,
        &format!("{tenant}/oauth2/v2.0/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_id", APP),
            ("client_secret", SECRET),
            ("scope", scope),
        ],
    )
    .await
}

async fn graph_token_for(sim: &Simulator, tenant: &str) -> String {
    let (st, body) = token_with_scope(sim, tenant, GRAPH_SCOPE).await;
    assert_eq!(st, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

fn claims_of(token: &str) -> Value {
    let claims = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).unwrap(),
    )
    .unwrap()
}

/// `GET {url}` (a path and query on the simulator, or an absolute nextLink).
async fn graph_get(
    sim: &Simulator,
    token: &str,
    url: &str,
    prefer: bool,
) -> (u16, reqwest::header::HeaderMap, String) {
    let url = if url.starts_with("http") {
        url.to_owned()
    } else {
        format!("{}/v1.0/security/alerts_v2{url}", sim.url())
    };
    let mut req = http()
        .get(url)
        .bearer_auth(token)
        .header("client-request-id", "c1d2e3f4-0000-4000-8000-000000000042")
        .header(reqwest::header::USER_AGENT, "MdePartner-Contoso-Poller/1.0");
    if prefer {
        req = req.header("Prefer", PREFER);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn graph_sim(opts: SimOptions) -> Simulator {
    let sim = Simulator::start(opts).unwrap();
    sim.add_app(SimApp::with_secret(APP, SECRET));
    sim.add_tenant(SimTenant::both(T1, APP));
    sim
}

fn graph_alert(id: &str, lut: &str, source: &str) -> Value {
    json!({"@odata.type": "#microsoft.graph.security.alert", "id": id, "lastUpdateDateTime": lut,
           "createdDateTime": "2021-01-26T20:00:00Z", "serviceSource": source, "status": "new", "evidence": []})
}

fn assert_graph_error(status: u16, body: &str, want_status: u16, code: &str) -> Value {
    assert_eq!(status, want_status, "{body}");
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], code, "{body}");
    assert!(v["error"]["message"].is_string(), "{body}");
    let inner = &v["error"]["innerError"];
    assert!(
        inner["date"].is_string() && inner["request-id"].is_string(),
        "{body}"
    );
    assert_eq!(
        inner["client-request-id"],
        "c1d2e3f4-0000-4000-8000-000000000042"
    );
    v
}

#[tokio::test]
async fn graph_serves_the_mde_alerts_in_graph_shape_beside_alerts_only_graph_has() {
    let sim = graph_sim(SimOptions::default());
    let from = ts("2026-11-26T10:00:00Z");
    let to = from.saturating_add(Duration::from_secs(3600));
    let mde_ids = sim.generate_alerts(T1, 20, from, to);
    let graph_ids = sim.generate_graph_alerts(T1, 30, from, to, &[]);
    let tok = graph_token_for(&sim, T1).await;

    let (st, _, body) = graph_get(&sim, &tok, "", true).await;
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with("$metadata#security/alerts_v2"));
    let value = v["value"].as_array().unwrap();
    assert_eq!(value.len(), 50);
    let mde: Vec<Value> = sim.current(T1);
    assert_eq!(mde.len(), 20, "alerts only Graph has are not MDE's");
    for m in &mde {
        let g = value.iter().find(|g| g["id"] == m["id"]).expect("same id");
        assert_eq!(g["@odata.type"], "#microsoft.graph.security.alert");
        assert_eq!(
            g["lastUpdateDateTime"], m["lastUpdateTime"],
            "same time text"
        );
        assert_eq!(g["createdDateTime"], m["alertCreationTime"]);
        assert_eq!(g["serviceSource"], "microsoftDefenderForEndpoint");
        assert_eq!(
            g["incidentId"],
            m["incidentId"].as_u64().unwrap().to_string()
        );
        assert_eq!(g["tenantId"], T1);
        let status = g["status"].as_str().unwrap();
        assert!(
            ["new", "inProgress", "resolved"].contains(&status),
            "{status}"
        );
        let sev = g["severity"].as_str().unwrap();
        assert!(["unknown", "informational", "low", "medium", "high"].contains(&sev));
        let ev = g["evidence"].as_array().unwrap();
        assert_eq!(ev.len(), m["evidence"].as_array().unwrap().len() + 1);
        assert_eq!(
            ev[0]["@odata.type"],
            "#microsoft.graph.security.deviceEvidence"
        );
        assert_eq!(ev[0]["mdeDeviceId"], m["machineId"]);
        for (e, me) in ev[1..].iter().zip(m["evidence"].as_array().unwrap()) {
            let want = match me["entityType"].as_str().unwrap() {
                "Process" => "processEvidence",
                "File" => "fileEvidence",
                "User" => "userEvidence",
                "Ip" => "ipEvidence",
                "Url" => "urlEvidence",
                "Registry" => "registryValueEvidence",
                other => panic!("{other}"),
            };
            assert_eq!(
                e["@odata.type"],
                format!("#microsoft.graph.security.{want}")
            );
        }
    }
    let only_graph: Vec<&Value> = value
        .iter()
        .filter(|g| graph_ids.contains(&g["id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(only_graph.len(), 30);
    let products: std::collections::HashSet<&str> = only_graph
        .iter()
        .map(|g| g["serviceSource"].as_str().unwrap())
        .collect();
    assert!(products.len() >= 4, "{products:?}");
    assert!(!products.contains("microsoftDefenderForEndpoint"));
    // The MDE API still serves its 20 only.
    let mtok = token_for(&sim, T1).await;
    let mut got = ids(&list(&sim, &mtok, "").await.2);
    got.sort();
    let mut want = mde_ids.clone();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(sim.versions(T1).len(), 20);
    assert_eq!(sim.graph_versions(T1).len(), 50);

    // An update is seen by both, at the same instant and text.
    let later = ts("2026-11-26T12:00:00.1234567Z");
    assert!(sim.update_alert(T1, &mde_ids[0], later));
    assert!(sim.update_alert(T1, &graph_ids[0], later));
    let (_, _, body) = graph_get(
        &sim,
        &tok,
        "?$filter=lastUpdateDateTime ge 2026-11-26T12:00:00.1234567Z",
        true,
    )
    .await;
    let mut got = ids(&body);
    got.sort();
    let mut want = vec![mde_ids[0].clone(), graph_ids[0].clone()];
    want.sort();
    assert_eq!(got, want);
    let g = sim
        .graph_current(T1)
        .into_iter()
        .find(|g| g["id"] == graph_ids[0].as_str())
        .unwrap();
    assert_eq!(g["lastUpdateDateTime"], "2026-11-26T12:00:00.1234567Z");
    assert!(!g["comments"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn graph_filter_takes_time_at_100_ns_and_service_source_with_eq_ne_in() {
    let sim = graph_sim(SimOptions::default());
    for (id, lut, src) in [
        (
            "below",
            "2021-01-26T20:33:59.1999999Z",
            "microsoftDefenderForEndpoint",
        ),
        (
            "equal",
            "2021-01-26T20:33:59.2Z",
            "microsoftDefenderForOffice365",
        ),
        (
            "above",
            "2021-01-26T20:33:59.2000001Z",
            "dataLossPrevention",
        ),
    ] {
        sim.insert_graph_alert(T1, graph_alert(id, lut, src))
            .unwrap();
    }
    let tok = graph_token_for(&sim, T1).await;
    let cases: &[(&str, &[&str])] = &[
        ("lastUpdateDateTime ge 2021-01-26T20:33:59.2000000Z", &["above", "equal"]),
        ("lastUpdateDateTime gt 2021-01-26T20:33:59.2Z", &["above"]),
        ("lastUpdateDateTime lt 2021-01-26T20:33:59.2Z", &["below"]),
        ("lastUpdateDateTime le 2021-01-26T20:33:59.2Z", &["below", "equal"]),
        ("lastUpdateDateTime eq 2021-01-26T20:33:59.20Z", &["equal"]),
        ("lastUpdateDateTime ne 2021-01-26T20:33:59.2Z", &["above", "below"]),
        ("serviceSource eq 'dataLossPrevention'", &["above"]),
        ("serviceSource ne 'dataLossPrevention'", &["below", "equal"]),
        ("serviceSource in ('microsoftDefenderForEndpoint', 'dataLossPrevention')", &["above", "below"]),
        ("serviceSource eq 'microsoftDefenderForOffice365' or serviceSource eq 'dataLossPrevention'", &["above", "equal"]),
        ("lastUpdateDateTime ge 2021-01-26T20:33:59.2Z and serviceSource eq 'microsoftDefenderForOffice365'", &["equal"]),
        ("createdDateTime lt 2021-01-26T20:00:00.0000001Z and createdDateTime ge 2021-01-26T20:00:00Z", &["above", "below", "equal"]),
        ("createdDateTime gt 2021-01-26T20:00:00Z", &[]),
    ];
    for (filter, want) in cases {
        let q = format!("?$filter={}", encode_query_value_for_test(filter));
        let (st, _, body) = graph_get(&sim, &tok, &q, true).await;
        assert_eq!(st, 200, "{filter}: {body}");
        let mut got = ids(&body);
        got.sort();
        assert_eq!(got, *want, "{filter}");
    }
    for bad in [
        "lastUpdateTime ge 2021-01-26T20:33:59Z",
        "lastUpdateDateTime ge '2021-01-26T20:33:59Z'",
        "serviceSource eq 'microsoftDefenderForEndpoin'",
        "status eq 'new'",
    ] {
        let q = format!("?$filter={}", encode_query_value_for_test(bad));
        let (st, _, body) = graph_get(&sim, &tok, &q, true).await;
        assert_graph_error(st, &body, 400, "BadRequest");
    }
    for bad in [
        "?$top=-1",
        "?$top=ten",
        "?$skip=-1",
        "?$count=yes",
        "?$orderby=lastUpdateDateTime%20asc",
        "?$top=1&$top=2",
    ] {
        let (st, _, body) = graph_get(&sim, &tok, bad, true).await;
        assert_graph_error(st, &body, 400, "BadRequest");
    }
}

fn encode_query_value_for_test(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// Follows nextLinks from `first`; the ids of every page, and the request count.
async fn graph_drain(sim: &Simulator, tok: &str, first: &str) -> (Vec<String>, Vec<usize>) {
    let mut url = first.to_owned();
    let mut all = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let (st, _, body) = graph_get(sim, tok, &url, true).await;
        assert_eq!(st, 200, "{body}");
        let page = ids(&body);
        sizes.push(page.len());
        all.extend(page);
        let v: Value = serde_json::from_str(&body).unwrap();
        match v["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
        assert!(sizes.len() < 100, "paging does not end");
    }
    (all, sizes)
}

#[tokio::test]
async fn graph_top_is_clamped_silently_and_the_server_pages_by_next_link() {
    let sim = graph_sim(SimOptions {
        graph_per_minute: 0,
        ..SimOptions::default()
    });
    let from = ts("2026-11-26T10:00:00Z");
    sim.generate_alerts(
        T1,
        1200,
        from,
        from.saturating_add(Duration::from_secs(3600)),
    );
    sim.generate_graph_alerts(
        T1,
        1300,
        from,
        from.saturating_add(Duration::from_secs(3600)),
        &[],
    );
    let tok = graph_token_for(&sim, T1).await;

    // $top above 1,000 is no error: 1,000 come, and a link to the rest.
    let (st, _, body) = graph_get(&sim, &tok, "?$top=5000&$count=true", true).await;
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["value"].as_array().unwrap().len(), 1000);
    assert_eq!(v["@odata.count"], 2500);
    let next = v["@odata.nextLink"].as_str().unwrap();
    assert!(
        next.starts_with(&format!("{}/v1.0/security/alerts_v2?", sim.url())),
        "absolute: {next}"
    );
    assert!(
        next.contains("$skip=1000") && next.contains("$count=true"),
        "{next}"
    );

    let (all, sizes) = graph_drain(&sim, &tok, "?$top=5000").await;
    assert_eq!(sizes, [1000, 1000, 500]);
    let unique: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (2500, 2500));
    // Newest first, as documented.
    let (_, _, body) = graph_get(&sim, &tok, "?$top=50", true).await;
    let times: Vec<Timestamp> = serde_json::from_str::<Value>(&body).unwrap()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| ts(a["lastUpdateDateTime"].as_str().unwrap()))
        .collect();
    assert!(times.iter().rev().is_sorted(), "most recent first");

    // A server that serves fewer than asked, for one tenant: still a nextLink.
    sim.set_graph_clamp(Some(T1), Some(300));
    let (all, sizes) = graph_drain(
        &sim,
        &tok,
        "?$top=1000&$filter=serviceSource%20ne%20'microsoftDefenderForEndpoint'",
    )
    .await;
    assert_eq!(sizes, [300, 300, 300, 300, 100]);
    assert_eq!(all.len(), 1300);
    assert_eq!(
        sim.requests()
            .iter()
            .filter(|r| r.kind == RequestKind::GraphAlerts && r.next_link)
            .filter(|r| r.served == Some(300))
            .count(),
        4
    );
    sim.set_graph_clamp(Some(T1), None);
    let (_, sizes) = graph_drain(&sim, &tok, "?$top=1000").await;
    assert_eq!(sizes, [1000, 1000, 500]);
    // $top=0 serves nothing and links nowhere.
    let (_, _, body) = graph_get(&sim, &tok, "?$top=0", true).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["value"].as_array().unwrap().is_empty() && v.get("@odata.nextLink").is_none());
}

#[tokio::test]
async fn next_links_page_over_live_data_so_an_update_between_pages_skips_and_repeats() {
    let sim = graph_sim(SimOptions::default());
    let from = ts("2026-11-26T10:00:00Z");
    sim.generate_graph_alerts(
        T1,
        30,
        from,
        from.saturating_add(Duration::from_secs(3600)),
        &[],
    );
    let tok = graph_token_for(&sim, T1).await;
    let (_, _, body) = graph_get(&sim, &tok, "?$top=10", true).await;
    let first = ids(&body);
    let v: Value = serde_json::from_str(&body).unwrap();
    let next = v["@odata.nextLink"].as_str().unwrap().to_owned();
    // Which alert is 21st now: update it, so it moves to the top.
    let (_, _, all) = graph_get(&sim, &tok, "", true).await;
    let moved = ids(&all)[20].clone();
    assert!(sim.update_alert(T1, &moved, ts("2026-11-27T00:00:00Z")));

    let (rest, _) = graph_drain(&sim, &tok, &next).await;
    let seen: Vec<&String> = first.iter().chain(rest.iter()).collect();
    let unique: std::collections::HashSet<&&String> = seen.iter().collect();
    assert_eq!(seen.len(), 30, "every page as long as before");
    assert_eq!(unique.len(), 29, "one alert served twice");
    assert!(
        !seen.contains(&&moved),
        "the updated alert is skipped by offset paging"
    );
}

#[tokio::test]
async fn tokens_name_their_api_in_aud_and_carry_its_roles_only() {
    let sim = graph_sim(SimOptions::default());
    sim.add_tenant(SimTenant::consented(T2, APP)); // MDE roles only
    let t3 = "33333333-3333-4333-8333-333333333333";
    sim.add_tenant(SimTenant::graph(t3, APP));
    sim.insert_alert(T1, alert("a", "2026-01-01T00:00:00Z"))
        .unwrap();

    let mtok = token_for(&sim, T1).await;
    let gtok = graph_token_for(&sim, T1).await;
    assert_eq!(
        claims_of(&mtok)["aud"],
        "https://api.securitycenter.microsoft.com"
    );
    assert_eq!(claims_of(&mtok)["roles"], json!(["Alert.Read.All"]));
    assert_eq!(claims_of(&gtok)["aud"], "https://graph.microsoft.com");
    assert_eq!(claims_of(&gtok)["roles"], json!(["SecurityAlert.Read.All"]));
    assert_eq!(claims_of(&gtok)["tid"], T1);
    for (scope, aud) in [
        (
            "https://graph.microsoft.us/.default",
            "https://graph.microsoft.us",
        ),
        (
            "https://dod-graph.microsoft.us/.default",
            "https://dod-graph.microsoft.us",
        ),
        (
            "https://api-gov.securitycenter.microsoft.us/.default",
            "https://api-gov.securitycenter.microsoft.us",
        ),
    ] {
        let (st, body) = token_with_scope(&sim, T1, scope).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(
            claims_of(body["access_token"].as_str().unwrap())["aud"],
            aud
        );
    }
    let scopes: Vec<String> = sim
        .requests()
        .iter()
        .filter(|r| r.kind == RequestKind::Token)
        .filter_map(|r| r.scope.clone())
        .collect();
    assert!(
        scopes.contains(&"https://dod-graph.microsoft.us".to_owned()),
        "{scopes:?}"
    );

    // Each API refuses the other's token with 401.
    assert_eq!(list(&sim, &gtok, "").await.0, 401);
    assert_eq!(list(&sim, &mtok, "").await.0, 200);
    let (st, _, body) = graph_get(&sim, &mtok, "", true).await;
    let v = assert_graph_error(st, &body, 401, "InvalidAuthenticationToken");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Invalid audience"));
    assert_eq!(graph_get(&sim, &gtok, "", true).await.0, 200);
    let (st, _, body) = graph_get(&sim, "not-a-token", "", true).await;
    assert_graph_error(st, &body, 401, "InvalidAuthenticationToken");

    // A tenant with MDE roles only: its Graph token has no role → 403.
    let g2 = graph_token_for(&sim, T2).await;
    assert!(claims_of(&g2).get("roles").is_none());
    let (st, _, body) = graph_get(&sim, &g2, "", true).await;
    let v = assert_graph_error(st, &body, 403, "Forbidden");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Missing application roles. API required roles: SecurityAlert.Read.All"));
    assert_eq!(list(&sim, &token_for(&sim, T2).await, "").await.0, 200);
    // A tenant with the Graph role only: its MDE token has none → 403 there.
    let m3 = token_for(&sim, t3).await;
    assert!(claims_of(&m3).get("roles").is_none());
    assert_eq!(list(&sim, &m3, "").await.0, 403);
    assert_eq!(
        graph_get(&sim, &graph_token_for(&sim, t3).await, "", true)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn graph_budget_is_150_a_minute_with_retry_after_apart_from_the_mde_budget() {
    let sim = graph_sim(SimOptions {
        per_minute: 2,
        ..SimOptions::default()
    });
    sim.add_tenant(SimTenant::both(T2, APP));
    let tok = graph_token_for(&sim, T1).await;
    let mtok = token_for(&sim, T1).await;
    // The MDE budget spent first does not touch Graph's.
    assert_eq!(list(&sim, &mtok, "").await.0, 200);
    assert_eq!(list(&sim, &mtok, "").await.0, 200);
    assert_eq!(list(&sim, &mtok, "").await.0, 429);
    for i in 0..150 {
        assert_eq!(
            graph_get(&sim, &tok, "?$top=1", true).await.0,
            200,
            "call {i}"
        );
    }
    let (st, headers, body) = graph_get(&sim, &tok, "?$top=1", true).await;
    assert_graph_error(st, &body, 429, "TooManyRequests");
    let secs: u64 = headers[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    let rec = sim.requests();
    let throttled: Vec<_> = rec
        .iter()
        .filter(|r| r.kind == RequestKind::GraphAlerts && r.status == 429)
        .collect();
    assert_eq!(throttled.len(), 1);
    assert_eq!(throttled[0].retry_after, Some(secs));
    // Another tenant of the same app has its own.
    assert_eq!(
        graph_get(&sim, &graph_token_for(&sim, T2).await, "", true)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn evolvable_enums_are_unknown_future_value_without_the_prefer_header() {
    let sim = graph_sim(SimOptions::default());
    let from = ts("2026-11-26T10:00:00Z");
    sim.generate_graph_alerts(
        T1,
        10,
        from,
        from.saturating_add(Duration::from_secs(60)),
        &[ServiceSource::DefenderForCloud],
    );
    sim.generate_graph_alerts(
        T1,
        5,
        from,
        from.saturating_add(Duration::from_secs(60)),
        &[ServiceSource::DefenderForIdentity],
    );
    let tok = graph_token_for(&sim, T1).await;
    sim.clear_requests();
    let sources = |body: &str, key: &str| -> Vec<String> {
        let v: Value = serde_json::from_str(body).unwrap();
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a[key].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, _, with) = graph_get(&sim, &tok, "", true).await;
    let (_, _, without) = graph_get(&sim, &tok, "", false).await;
    let count = |list: &[String], v: &str| list.iter().filter(|s| *s == v).count();
    let with_src = sources(&with, "serviceSource");
    let without_src = sources(&without, "serviceSource");
    assert_eq!(count(&with_src, "microsoftDefenderForCloud"), 10);
    assert_eq!(count(&with_src, "unknownFutureValue"), 0);
    assert_eq!(count(&without_src, "unknownFutureValue"), 10);
    assert_eq!(
        count(&without_src, "microsoftDefenderForIdentity"),
        5,
        "older members stay"
    );
    assert_eq!(
        count(&sources(&without, "detectionSource"), "unknownFutureValue"),
        10
    );
    assert!(sources(&with, "detectionSource")
        .iter()
        .all(|d| d != "unknownFutureValue"));
    // The Prefer header and the User-Agent are in the log.
    let rec = sim.requests();
    assert_eq!(rec[0].prefer.as_deref(), Some(PREFER));
    assert_eq!(rec[1].prefer, None);
    assert_eq!(rec[0].kind, RequestKind::GraphAlerts);
    assert_eq!(
        rec[0].user_agent.as_deref(),
        Some("MdePartner-Contoso-Poller/1.0")
    );
    assert_eq!(rec[0].served, Some(15));
}

#[tokio::test]
async fn a_retired_mde_api_answers_404_or_410_naming_the_retirement() {
    let sim = graph_sim(SimOptions {
        mde_retired: Some(410),
        ..SimOptions::default()
    });
    sim.insert_alert(T1, alert("a", "2026-01-01T00:00:00Z"))
        .unwrap();
    let mtok = token_for(&sim, T1).await;
    let (st, _, body) = list(&sim, &mtok, "").await;
    assert_eq!(st, 410);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "Gone");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("retired"),
        "{body}"
    );
    assert_eq!(
        sim.requests().last().unwrap().tenant_id.as_deref(),
        Some(T1)
    );
    sim.set_mde_retired(Some(404));
    let (st, _, body) = list(&sim, &mtok, "").await;
    assert_eq!(st, 404);
    assert!(body.contains("retired"));
    // Graph keeps working, and the MDE API comes back when asked.
    let gtok = graph_token_for(&sim, T1).await;
    assert_eq!(ids(&graph_get(&sim, &gtok, "", true).await.2), ["a"]);
    sim.set_mde_retired(None);
    assert_eq!(list(&sim, &mtok, "").await.0, 200);
}

#[tokio::test]
async fn latency_is_a_fixed_cost_plus_a_cost_per_alert_and_blocks_nothing() {
    let sim = graph_sim(SimOptions {
        latency: Latency {
            fixed: Duration::from_secs(1),
            per_alert: Duration::ZERO,
        },
        ..SimOptions::default()
    });
    let from = ts("2026-11-26T10:00:00Z");
    sim.generate_alerts(T1, 100, from, from.saturating_add(Duration::from_secs(60)));
    let mtok = token_for(&sim, T1).await;
    let gtok = graph_token_for(&sim, T1).await;
    // Four at once on this one-thread runtime: a blocking sleep would take 4 s;
    // the margin is for a loaded machine.
    let t0 = std::time::Instant::now();
    let (a, b, c, d) = tokio::join!(
        list(&sim, &mtok, "?$top=1"),
        list(&sim, &mtok, "?$top=1"),
        graph_get(&sim, &gtok, "?$top=1", true),
        graph_get(&sim, &gtok, "?$top=1", true),
    );
    let took = t0.elapsed();
    assert_eq!((a.0, b.0, c.0, d.0), (200, 200, 200, 200));
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(
        took < Duration::from_millis(3500),
        "answers overlap: {took:?}"
    );

    // The cost per alert, on both APIs.
    sim.set_latency(Latency {
        fixed: Duration::ZERO,
        per_alert: Duration::from_millis(4),
    });
    for api in [Api::Mde, Api::Graph] {
        let t0 = std::time::Instant::now();
        let st = match api {
            Api::Mde => list(&sim, &mtok, "?$top=100").await.0,
            Api::Graph => graph_get(&sim, &gtok, "?$top=100", true).await.0,
        };
        assert_eq!(st, 200);
        assert!(
            t0.elapsed() >= Duration::from_millis(400),
            "{api:?}: {:?}",
            t0.elapsed()
        );
    }
}

#[tokio::test]
async fn injected_faults_apply_to_alerts_v2_with_graph_bodies() {
    let sim = graph_sim(SimOptions::default());
    sim.generate_graph_alerts(
        T1,
        20,
        ts("2026-01-01T00:00:00Z"),
        ts("2026-01-02T00:00:00Z"),
        &[],
    );
    let tok = graph_token_for(&sim, T1).await;
    let set = |f: Faults| sim.set_faults(Some(T1), f);
    set(Faults {
        p_500: 1.0,
        ..Faults::none()
    });
    let (st, _, body) = graph_get(&sim, &tok, "", true).await;
    assert_graph_error(st, &body, 500, "UnknownError");
    set(Faults {
        p_503: 1.0,
        retry_after_secs: 7,
        ..Faults::none()
    });
    let (st, h, body) = graph_get(&sim, &tok, "", true).await;
    assert_graph_error(st, &body, 503, "ServiceUnavailable");
    assert!(h.contains_key(RETRY_AFTER));
    set(Faults {
        p_429: 1.0,
        ..Faults::none()
    });
    let (st, h, body) = graph_get(&sim, &tok, "", true).await;
    assert_graph_error(st, &body, 429, "TooManyRequests");
    assert!(h.contains_key(RETRY_AFTER));
    set(Faults {
        p_truncated: 1.0,
        ..Faults::none()
    });
    let (st, _, body) = graph_get(&sim, &tok, "", true).await;
    assert_eq!(st, 200);
    assert!(serde_json::from_str::<Value>(&body).is_err());
    set(Faults::none());
    assert_eq!(ids(&graph_get(&sim, &tok, "", true).await.2).len(), 20);
}

/// Not a unit test: `cargo test --release --lib sim::tests::graph_pages_of_1k -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn graph_pages_of_1k_out_of_100k_are_fast() {
    let sim = graph_sim(SimOptions {
        graph_per_minute: 0,
        ..SimOptions::default()
    });
    let from = ts("2026-01-01T00:00:00Z");
    let to = from.saturating_add(Duration::from_secs(86_400));
    let t0 = std::time::Instant::now();
    sim.generate_alerts(T1, 100_000, from, to);
    println!("generate 100k MDE: {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();
    sim.prepare_graph(T1);
    println!("render 100k in Graph form: {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();
    sim.generate_graph_alerts(T1, 100_000, from, to, &[]);
    println!("generate 100k Graph-only: {:?}", t0.elapsed());
    let tok = graph_token_for(&sim, T1).await;
    for q in [
        "?$top=1000",
        "?$top=1000&$skip=150000",
        "?$top=1000&$filter=lastUpdateDateTime%20ge%202026-01-01T12:00:00Z",
    ] {
        let t0 = std::time::Instant::now();
        let (st, _, body) = graph_get(&sim, &tok, q, true).await;
        println!("{q}: {:?}, {} bytes", t0.elapsed(), body.len());
        assert_eq!(st, 200);
    }
}

#[tokio::test]
async fn graph_activity_mixes_products_and_graph_alerts_need_id_and_time() {
    let sim = graph_sim(SimOptions::default());
    let task = sim.spawn_graph_activity(
        T1,
        Activity {
            every: Duration::from_millis(10),
            new: 4,
            updates: 1,
            late_fraction: 0.0,
            max_late: Duration::ZERO,
        },
        &[],
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sim.alert_count(T1) < 60 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.shutdown();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let all = sim.graph_current(T1);
    let mde = sim.current(T1);
    assert!(all.len() >= 60, "{}", all.len());
    assert!(
        !mde.is_empty() && mde.len() < all.len(),
        "both kinds appear"
    );
    assert_eq!(
        sim.insert_graph_alert(
            T1,
            json!({"id": "x", "lastUpdateTime": "2026-01-01T00:00:00Z"})
        ),
        Err(AlertError::BadLastUpdateDateTime("x".into()))
    );
    assert_eq!(
        sim.insert_graph_alert(T1, json!({"lastUpdateDateTime": "2026-01-01T00:00:00Z"})),
        Err(AlertError::NoId)
    );
}
