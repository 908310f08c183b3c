//! TokenSource against a tiny fake token endpoint on 127.0.0.1:0 that records
//! every form it receives and answers from a script.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Form, Router};
use secrecy::SecretString;

use super::*;
use crate::auth::assertion::tests::{test_cert, verify_assertion};
use crate::auth::claims::tests::jwt_with;

const TENANT_ID: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const SECRET: &str = "s3cr3t-VALUE-never-shown";
const SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";

type FormFields = Vec<(String, String)>;

/// What the fake answers to the n-th request (the last one repeats).
#[derive(Clone)]
enum Reply {
    /// A token named `tok-{n}-…` with this `expires_in` (number or string).
    Token(serde_json::Value),
    Status(u16, &'static str),
}

#[derive(Default)]
struct Fake {
    script: Vec<Reply>,
    /// Each request's tenant path segment and form fields, in order.
    requests: Mutex<Vec<(String, FormFields)>>,
    /// Answer only after this long (lets concurrent callers pile up).
    delay: Duration,
}

impl Fake {
    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn form(&self, i: usize) -> Vec<(String, String)> {
        self.requests.lock().unwrap()[i].1.clone()
    }
}

/// The token value the fake issues for request `n` (1-based) of `tenant`.
fn token_value(n: usize, tenant: &str) -> String {
    jwt_with(
        &serde_json::json!({"tid": tenant, "roles": ["Alert.Read.All"], "n": n, "marker": "TOKENBODY"}),
    )
}

async fn token_endpoint(
    State(fake): State<Arc<Fake>>,
    Path(tenant): Path<String>,
    Form(form): Form<Vec<(String, String)>>,
) -> (StatusCode, String) {
    let n = {
        let mut reqs = fake.requests.lock().unwrap();
        reqs.push((tenant.clone(), form));
        reqs.len()
    };
    tokio::time::sleep(fake.delay).await;
    let reply = fake.script[(n - 1).min(fake.script.len() - 1)].clone();
    match reply {
        Reply::Token(expires_in) => (
            StatusCode::OK,
            serde_json::json!({
                "token_type": "Bearer",
                "expires_in": expires_in,
                "ext_expires_in": expires_in,
                "access_token": token_value(n, &tenant),
            })
            .to_string(),
        ),
        Reply::Status(status, body) => (StatusCode::from_u16(status).unwrap(), body.to_owned()),
    }
}

/// Starts the fake; returns it and its login URL.
async fn start(fake: Fake) -> (Arc<Fake>, String) {
    let fake = Arc::new(fake);
    let app = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token_endpoint))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, format!("http://{addr}"))
}

fn scripted(script: Vec<Reply>) -> Fake {
    Fake {
        script,
        ..Fake::default()
    }
}

fn tenant(login_url: &str, credential: Credential) -> TokenRequest {
    TokenRequest {
        tenant: "contoso".into(),
        tenant_id: TENANT_ID.into(),
        app: Arc::new(TokenApp::new(
            CLIENT_ID.into(),
            login_url.into(),
            SCOPE.into(),
            credential,
        )),
    }
}

/// A certificate credential as the config builds it: loaded once, shared.
fn certificate(path: &std::path::Path) -> Credential {
    Credential::Certificate(Arc::new(ClientCertificate::load(path, false).unwrap()))
}

fn secret() -> Credential {
    Credential::Secret(SecretString::from(SECRET))
}

/// No client timeout: under paused time it would fire while the runtime
/// merely waits for the loopback socket.
fn source(login_url: &str, credential: Credential) -> TokenSource {
    TokenSource::new(reqwest::Client::new(), tenant(login_url, credential))
}

const CONSENT_MISSING: &str = r#"{"error":"unauthorized_client","error_description":"AADSTS700016: Application with identifier 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee' was not found in the directory 'Contoso'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.\r\nTrace ID: 0\r\nCorrelation ID: 1\r\nTimestamp: 2026-11-26 10:00:00Z","error_codes":[700016],"timestamp":"2026-11-26 10:00:00Z","trace_id":"0","correlation_id":"1"}"#;

/// Tenants of one app hold its secret, login URL and scope once between
/// them (the daemon's memory per tenant), and each still asks for its own
/// tenant's token; an app with another secret (a rotation) is not mixed up
/// with the one in use.
#[tokio::test(start_paused = true)]
async fn tenants_of_one_app_share_it_and_each_asks_for_its_own_token() {
    let (fake, login) = start(scripted(vec![Reply::Token(3600.into())])).await;
    let apps = AppShare::default();
    let app = || TokenApp::new(CLIENT_ID.into(), login.clone(), SCOPE.into(), secret());
    let other_id = "99999999-8888-4777-8666-555555555555";
    let a = apps.share(app());
    let b = apps.share(app());
    assert!(Arc::ptr_eq(&a, &b), "one app, held once");
    let rotated = apps.share(TokenApp::new(
        CLIENT_ID.into(),
        login.clone(),
        SCOPE.into(),
        Credential::Secret(SecretString::from("the-new-secret")),
    ));
    assert!(!Arc::ptr_eq(&a, &rotated));
    let request = |id: &str, app: &Arc<TokenApp>| TokenRequest {
        tenant: id.into(),
        tenant_id: id.into(),
        app: Arc::clone(app),
    };
    let sources = [
        TokenSource::new(reqwest::Client::new(), request(TENANT_ID, &a)),
        TokenSource::new(reqwest::Client::new(), request(other_id, &b)),
        TokenSource::new(reqwest::Client::new(), request(other_id, &rotated)),
    ];
    for s in &sources {
        s.token().await.unwrap();
    }
    let sent: Vec<(String, String)> = fake
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(tenant, form)| {
            let secret = form.iter().find(|(k, _)| k == "client_secret").unwrap();
            (tenant.clone(), secret.1.clone())
        })
        .collect();
    assert_eq!(
        sent,
        [
            (TENANT_ID.to_owned(), SECRET.to_owned()),
            (other_id.to_owned(), SECRET.to_owned()),
            (other_id.to_owned(), "the-new-secret".to_owned()),
        ]
    );
}

#[test]
fn token_sources_and_tokens_can_be_shared_across_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<TokenSource>();
    send_sync::<AccessToken>();
    send_sync::<AuthError>();
}

#[tokio::test(start_paused = true)]
async fn cached_token_is_reused_until_the_margin_then_refreshed() {
    let (fake, login) = start(scripted(vec![Reply::Token(3600.into())])).await;
    let src = source(&login, secret());
    let first = src.token().await.unwrap();
    assert_eq!(fake.count(), 1);
    // Five minutes before expiry, not earlier.
    assert_eq!(
        first.expires_at() - first.fresh_until(),
        Duration::from_secs(300)
    );
    tokio::time::advance(first.fresh_until() - Instant::now() - Duration::from_secs(1)).await;
    let again = src.token().await.unwrap();
    assert!(again.same_as(&first));
    assert_eq!(fake.count(), 1, "still fresh: no request");
    tokio::time::advance(Duration::from_secs(2)).await;
    let renewed = src.token().await.unwrap();
    assert_eq!(fake.count(), 2, "inside the margin: a new request");
    assert_ne!(renewed.bearer(), first.bearer());
    assert!(renewed.expires_at() > first.expires_at());
}

#[tokio::test(start_paused = true)]
async fn a_thirty_second_token_is_reused_for_twenty_seven_seconds() {
    let (fake, login) = start(scripted(vec![Reply::Token(30.into())])).await;
    let src = source(&login, secret());
    let first = src.token().await.unwrap();
    assert_eq!(
        first.expires_at() - first.fresh_until(),
        Duration::from_secs(3)
    );
    tokio::time::advance(first.fresh_until() - Instant::now() - Duration::from_millis(100)).await;
    assert!(src.token().await.unwrap().same_as(&first));
    tokio::time::advance(Duration::from_millis(200)).await;
    assert!(!src.token().await.unwrap().same_as(&first));
    assert_eq!(fake.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_token_request() {
    let (fake, login) = start(Fake {
        delay: Duration::from_millis(500),
        ..scripted(vec![Reply::Token(3600.into())])
    })
    .await;
    let src = Arc::new(source(&login, secret()));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let src = src.clone();
            tokio::spawn(async move { src.token().await })
        })
        .collect();
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap().unwrap());
    }
    assert_eq!(fake.count(), 1);
    assert!(tokens.iter().all(|t| t.same_as(&tokens[0])));
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_failure_too() {
    let (fake, login) = start(Fake {
        delay: Duration::from_millis(500),
        ..scripted(vec![Reply::Status(400, CONSENT_MISSING)])
    })
    .await;
    let src = Arc::new(source(&login, secret()));
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let src = src.clone();
            tokio::spawn(async move { src.token().await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err().code(), Some(700016));
    }
    assert_eq!(
        fake.count(),
        1,
        "the waiters got the same answer without asking again"
    );
    // A later caller asks again (consent may have been granted meanwhile).
    src.token().await.unwrap_err();
    assert_eq!(fake.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn invalidate_after_a_401_fetches_a_new_token_once() {
    let (fake, login) = start(scripted(vec![Reply::Token(3600.into())])).await;
    let src = source(&login, secret());
    let first = src.token().await.unwrap();
    src.invalidate(&first).await;
    let second = src.token().await.unwrap();
    assert_eq!(fake.count(), 2);
    assert_ne!(second.bearer(), first.bearer());
    // A second caller reporting the same stale token does not drop the new one.
    src.invalidate(&first).await;
    assert!(src.token().await.unwrap().same_as(&second));
    assert_eq!(fake.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn fetch_fresh_bypasses_the_cache() {
    let (fake, login) = start(scripted(vec![Reply::Token(3600.into())])).await;
    let src = source(&login, secret());
    let first = src.token().await.unwrap();
    let fresh = src.fetch_fresh().await.unwrap();
    assert_eq!(fake.count(), 2);
    assert!(!fresh.same_as(&first));
    assert!(src.token().await.unwrap().same_as(&fresh));
}

#[tokio::test(start_paused = true)]
async fn a_503_is_retried_then_succeeds() {
    let (fake, login) = start(scripted(vec![
        Reply::Status(503, ""),
        Reply::Token(3600.into()),
    ]))
    .await;
    let src = source(&login, secret());
    src.token().await.unwrap();
    assert_eq!(fake.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn throttling_is_retried_four_times_then_returned() {
    let throttled = r#"{"error":"temporarily_unavailable","error_description":"AADSTS50196: The server terminated an operation because it encountered a client request loop.","error_codes":[50196]}"#;
    let (fake, login) = start(scripted(vec![Reply::Status(400, throttled)])).await;
    let src = source(&login, secret());
    let e = src.token().await.unwrap_err();
    assert!(e.is_transient());
    assert_eq!(e.code(), Some(50196));
    assert_eq!(fake.count(), 1 + MAX_RETRIES as usize);
}

#[tokio::test(start_paused = true)]
async fn consent_missing_is_not_retried_and_says_what_to_do() {
    let (fake, login) = start(scripted(vec![Reply::Status(400, CONSENT_MISSING)])).await;
    let src = source(&login, secret());
    let e = src.token().await.unwrap_err();
    assert_eq!(fake.count(), 1);
    assert!(e.is_persistent());
    assert_eq!(
        e.to_string(),
        "AADSTS700016: application not found in the tenant (unauthorized_client)"
    );
    assert!(e.hint().contains("mde-poller consent-url"));
    match &e {
        AuthError::Rejected {
            status,
            description,
            ..
        } => {
            assert_eq!(*status, 400);
            assert!(description.starts_with("AADSTS700016: Application with identifier"));
            assert!(!description.contains("Trace ID"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_v1_style_string_expires_in_is_accepted() {
    let (_fake, login) = start(scripted(vec![Reply::Token("3599".into())])).await;
    let src = source(&login, secret());
    let t = src.token().await.unwrap();
    assert_eq!(t.expires_at() - t.fresh_until(), Duration::from_secs(300));
    assert!(t.expires_at() - Instant::now() <= Duration::from_secs(3599));
}

#[tokio::test(start_paused = true)]
async fn secret_request_sends_exactly_the_client_credentials_form() {
    let (fake, login) = start(scripted(vec![Reply::Token(3600.into())])).await;
    let src = source(&login, secret());
    let t = src.token().await.unwrap();
    let mut form = fake.form(0);
    form.sort();
    let mut expected: Vec<(String, String)> = [
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
        ("grant_type", "client_credentials"),
        ("scope", SCOPE),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    expected.sort();
    assert_eq!(form, expected);
    assert_eq!(
        fake.requests.lock().unwrap()[0].0,
        TENANT_ID,
        "never /common"
    );
    let claims = t.claims().unwrap();
    assert_eq!(claims.tid.as_deref(), Some(TENANT_ID));
    assert!(claims.can_read_alerts());
}

#[tokio::test(start_paused = true)]
async fn certificate_request_sends_a_verifiable_assertion_and_no_secret() {
    let cert = test_cert();
    let (fake, login) = start(scripted(vec![Reply::Token(3600.into())])).await;
    let src = source(&login, certificate(&cert.pkcs8));
    src.token().await.unwrap();
    src.fetch_fresh().await.unwrap();
    let form = fake.form(0);
    let keys: Vec<&str> = form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "grant_type",
            "client_id",
            "scope",
            "client_assertion_type",
            "client_assertion"
        ]
    );
    let field = |name: &str| form.iter().find(|(k, _)| k == name).unwrap().1.clone();
    assert_eq!(field("grant_type"), "client_credentials");
    assert_eq!(field("client_id"), CLIENT_ID);
    assert_eq!(field("scope"), SCOPE);
    assert_eq!(
        field("client_assertion_type"),
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    );
    let (header, claims) = verify_assertion(&field("client_assertion"), &cert.cert_der);
    assert_eq!(header["alg"], "PS256");
    assert_eq!(
        claims["aud"],
        format!("{login}/{TENANT_ID}/oauth2/v2.0/token")
    );
    assert_eq!(claims["iss"], CLIENT_ID);
    assert_eq!(claims["sub"], CLIENT_ID);
    // Each request signs a new assertion.
    let second = fake.form(1);
    let (_, claims2) = verify_assertion(
        &second
            .iter()
            .find(|(k, _)| k == "client_assertion")
            .unwrap()
            .1,
        &cert.cert_der,
    );
    assert_ne!(claims["jti"], claims2["jti"]);
}

/// The certificate is read when the config loads, never by a token request:
/// a file removed (or half-rewritten) afterwards changes nothing until the
/// next reload parses it again.
#[tokio::test(start_paused = true)]
async fn a_loaded_certificate_signs_without_its_file() {
    let cert = test_cert();
    let (fake, login) = start(scripted(vec![Reply::Token(3600.into())])).await;
    let credential = certificate(&cert.pkcs8);
    std::fs::remove_file(&cert.pkcs8).unwrap();
    let src = source(&login, credential);
    src.token().await.unwrap();
    src.fetch_fresh().await.unwrap();
    assert_eq!(fake.count(), 2);
    let form = fake.form(1);
    let assertion = &form
        .iter()
        .find(|(k, _)| k == "client_assertion")
        .unwrap()
        .1;
    verify_assertion(assertion, &cert.cert_der);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_login_host_is_a_transport_error_naming_the_host() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let src = source(&format!("http://{addr}"), secret());
    let e = src.token().await.unwrap_err();
    assert!(matches!(e, AuthError::Transport(_)), "{e:?}");
    assert!(e.is_transient());
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
}

#[tokio::test(start_paused = true)]
async fn nothing_secret_is_ever_formatted() {
    let cert = test_cert();
    let key_text = std::fs::read_to_string(&cert.pkcs8).unwrap();
    let key_line = key_text
        .lines()
        .skip_while(|l| !l.contains("BEGIN PRIVATE KEY"))
        .nth(2)
        .unwrap()
        .to_owned();
    let (_ok, login_ok) = start(scripted(vec![Reply::Token(3600.into())])).await;
    let (_bad, login_bad) = start(scripted(vec![Reply::Status(401, CONSENT_MISSING)])).await;
    let (_garbled, login_garbled) = start(scripted(vec![Reply::Status(
        200,
        r#"{"access_token":"TOKENBODY-in-garbled-reply","expires_in":"later"}"#,
    )]))
    .await;

    let with_secret = source(&login_ok, secret());
    let with_cert = source(&login_ok, certificate(&cert.pkcs8));
    let token = with_secret.token().await.unwrap();
    with_cert.token().await.unwrap();
    let errors = vec![
        source(&login_bad, secret()).token().await.unwrap_err(),
        source(&login_garbled, secret()).token().await.unwrap_err(),
        source("http://127.0.0.1:1", secret())
            .token()
            .await
            .unwrap_err(),
        AuthError::Credential(format!("certificate file {}: x", cert.pkcs8.display())),
    ];
    let mut shown = vec![
        format!("{with_secret:?}"),
        format!("{with_secret}"),
        format!("{with_cert:?}"),
        format!("{with_cert}"),
        format!("{token:?}"),
        format!("{:?}", with_cert.certificate().unwrap()),
    ];
    for e in &errors {
        shown.push(format!("{e}"));
        shown.push(format!("{e:?}"));
        shown.push(e.hint().to_owned());
        shown.push(e.summary());
    }
    let b64_token_body = token.bearer().split('.').nth(1).unwrap().to_owned();
    for text in &shown {
        for needle in [
            SECRET,
            token.bearer(),
            &b64_token_body,
            "TOKENBODY",
            &key_line,
        ] {
            assert!(!text.contains(needle), "{text:?} shows {needle:?}");
        }
    }
    assert!(shown[0].contains("contoso") && shown[0].contains("client secret"));
    assert!(
        errors[1].to_string().contains(&login_garbled[7..]),
        "a malformed answer names the host"
    );
}
