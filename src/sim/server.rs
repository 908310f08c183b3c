//! The HTTP face: the two token endpoints, `GET /api/alerts` and
//! `GET /v1.0/security/alerts_v2`, with the order of checks the real services
//! apply (token faults → tenant → app → credential → resource; bearer →
//! audience → expiry → role → faults → budget → query), then the latency model.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rand::Rng;
use serde_json::json;

use super::alerts::GraphQuery;
use super::alerts::Query;
use super::faults::{ApiFault, EndlessBody, TokenFault};
use super::graph;
use super::odata::Filter;
use super::tokens::{
    self, AadError, IssuedToken, CLIENT_ASSERTION_TYPE, GRAPH_RESOURCES, MDE_RESOURCES,
};
use super::{lock, read, Api, RequestKind, RequestRecord, Shared};
use crate::timestamp::Timestamp;

const MAX_TOP: usize = 10_000;
/// Graph's cap on `$top`: a larger value is served as this, silently.
const GRAPH_MAX_TOP: usize = 1_000;
const GRAPH_PATH: &str = "/v1.0/security/alerts_v2";
/// Either role lets an app list alerts_v2.
const GRAPH_ALERT_ROLES: &[&str] = &["SecurityAlert.Read.All", "SecurityAlert.ReadWrite.All"];
const ODATA_JSON: &str =
    "application/json; odata.metadata=minimal; odata.streaming=true; charset=utf-8";

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token_v2))
        .route("/{tenant}/oauth2/token", post(token_v1))
        .route("/api/alerts", get(alerts))
        .route(GRAPH_PATH, get(graph_alerts))
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "NotFound", "Resource not found") })
        .with_state(shared)
}

async fn token_v2(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token(s, tenant, &headers, body, false).await
}

async fn token_v1(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    token(s, tenant, &headers, body, true).await
}

fn header_text(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    header_text(headers, header::USER_AGENT)
}

fn prefer(headers: &HeaderMap) -> Option<String> {
    header_text(headers, "prefer")
}

/// The resource a token request names: `scope` without `/.default`, or v1's
/// `resource`, as sent.
fn scope_asked(form: &HashMap<String, String>) -> Option<String> {
    form.get("scope")
        .map(|s| s.strip_suffix("/.default").unwrap_or(s).to_owned())
        .or_else(|| form.get("resource").cloned())
}

async fn token(
    s: Arc<Shared>,
    tenant: String,
    headers: &HeaderMap,
    body: Bytes,
    v1: bool,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let client_id = form.get("client_id").cloned();
    let scope = scope_asked(&form);
    let faults = s.faults_for(Some(&tenant));
    let fault = faults.draw_token(&mut *lock(&s.rng));
    let result = match fault {
        TokenFault::Internal => Err(AadError::new(
            500,
            "server_error",
            50000,
            "There was an error issuing a token or an issue with our sign-in service.",
        )),
        TokenFault::Transient if rand::thread_rng().gen_bool(0.5) => Err(AadError::new(
            400,
            "temporarily_unavailable",
            90055,
            "The request has been throttled. Too many requests to the tenant. Retry later.",
        )),
        TokenFault::Transient => Err(AadError::new(
            400,
            "invalid_request",
            50196,
            "The server terminated an operation because it encountered a client request loop. Retry later.",
        )),
        TokenFault::None => issue(&s, faults.token_tid.as_deref().unwrap_or(&tenant), &form, v1)
            .map(|body| faults.rewrite_token_body(body)),
    };
    let (status, body) = match result {
        Ok(body) => (200, body),
        Err(e) => (e.status, e.body()),
    };
    s.record(RequestRecord {
        at: SystemTime::now(),
        at_instant: tokio::time::Instant::now(),
        kind: RequestKind::Token,
        tenant_id: Some(tenant),
        client_id,
        status,
        filter: None,
        top: None,
        skip: None,
        retry_after: None,
        user_agent: user_agent(headers),
        prefer: prefer(headers),
        scope,
        served: None,
        next_link: false,
    });
    let mut resp = if faults.token_endless_body && status == 200 {
        Response::new(Body::new(EndlessBody::new()))
    } else {
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store, no-cache"),
    );
    resp
}

fn is_guid(s: &str) -> bool {
    uuid::Uuid::try_parse(s).is_ok() && s.len() == 36
}

/// The client-credentials grant: a token body, or the AADSTS refusal.
fn issue(
    s: &Shared,
    tenant_id: &str,
    form: &HashMap<String, String>,
    v1: bool,
) -> Result<String, AadError> {
    let missing = |p: &str| {
        AadError::new(
            400,
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{p}'."),
        )
    };
    let grant = form
        .get("grant_type")
        .ok_or_else(|| missing("grant_type"))?;
    if grant != "client_credentials" {
        return Err(AadError::new(
            400,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant}'."),
        ));
    }
    // Entra matches tenant GUIDs case-insensitively.
    let tenant = read(&s.tenants)
        .get(&tenant_id.to_ascii_lowercase())
        .filter(|_| is_guid(tenant_id))
        .cloned();
    let Some(tenant) = tenant else {
        return Err(AadError::new(
            400,
            "invalid_request",
            90002,
            format!("Tenant '{tenant_id}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."),
        ));
    };
    let client_id = form.get("client_id").ok_or_else(|| missing("client_id"))?;
    let not_found = AadError::new(
        400,
        "unauthorized_client",
        700016,
        format!("Application with identifier '{client_id}' was not found in the directory '{tenant_id}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."),
    );
    if !tenant.consented_apps.iter().any(|c| c == client_id) {
        return Err(not_found);
    }
    let apps = read(&s.apps);
    let app = apps.get(client_id.as_str()).ok_or(not_found)?;
    if app.app.disabled {
        return Err(AadError::new(
            400,
            "unauthorized_client",
            7000112,
            format!("Application '{client_id}' is disabled."),
        ));
    }
    let path_tenant = tenant_id;
    let tenant_id = tenant.tenant_id.as_str();
    // The credential.
    let assertion_type = form.get("client_assertion_type");
    let (appidacr, _) = if let Some(secret) = form.get("client_secret") {
        let ok = app.app.secret.as_deref() == Some(secret.as_str());
        if !ok {
            return Err(AadError::new(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '".to_owned() + client_id + "'.",
            ));
        }
        if app.app.secret_expired {
            return Err(AadError::new(
                401,
                "invalid_client",
                7000222,
                format!("The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app."),
            ));
        }
        ("1", ())
    } else if let Some(assertion) = form.get("client_assertion") {
        if assertion_type.map(String::as_str) != Some(CLIENT_ASSERTION_TYPE) {
            return Err(AadError::new(
                400,
                "invalid_request",
                50027,
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            ));
        }
        let auds = vec![
            format!("{}/{path_tenant}/oauth2/v2.0/token", s.base_url),
            format!("{}/{path_tenant}/oauth2/token", s.base_url),
        ];
        tokens::verify_assertion(assertion, client_id, &app.certs, &auds, SystemTime::now())?;
        ("2", ())
    } else {
        return Err(AadError::new(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ));
    };
    drop(apps);
    // The resource.
    let resource = if v1 {
        form.get("resource")
            .ok_or_else(|| missing("resource"))?
            .clone()
    } else {
        let scope = form.get("scope").ok_or_else(|| missing("scope"))?;
        match scope.strip_suffix("/.default") {
            Some(r) if !scope.contains(' ') => r.to_owned(),
            _ => {
                return Err(AadError::new(
                    400,
                    "invalid_scope",
                    1002012,
                    format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
                ))
            }
        }
    };
    let resource = resource.trim_end_matches('/').to_owned();
    let is = |list: &[&str]| list.iter().any(|r| r.eq_ignore_ascii_case(&resource));
    // Every tenant has Microsoft Graph; only some have Defender for Endpoint.
    let api = if is(MDE_RESOURCES) && tenant.has_mde {
        Some(Api::Mde)
    } else if is(GRAPH_RESOURCES) {
        Some(Api::Graph)
    } else {
        None
    };
    let Some(api) = api else {
        return Err(AadError::new(
            400,
            "invalid_resource",
            500011,
            format!("The resource principal named {resource} was not found in the tenant named {tenant_id}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."),
        ));
    };

    let lifetime = s.opts.token_lifetime;
    let now = SystemTime::now();
    let expires = now + lifetime;
    let iat = Timestamp::from_system_time(now).unix_seconds();
    let exp = Timestamp::from_system_time(expires).unix_seconds();
    let mut claims = json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{tenant_id}/"),
        "iat": iat, "nbf": iat, "exp": exp,
        "aio": "E2ZgYJj8sim",
        "app_displayname": "mde-poller (simulated)",
        "appid": client_id,
        "appidacr": appidacr,
        "idp": format!("https://sts.windows.net/{tenant_id}/"),
        "idtyp": "app",
        "oid": uuid::Uuid::from_u64_pair(xxhash_rust::xxh3::xxh3_64(client_id.as_bytes()), xxhash_rust::xxh3::xxh3_64(tenant_id.as_bytes())).to_string(),
        "sub": client_id,
        "tid": tenant_id,
        "uti": uuid::Uuid::new_v4().simple().to_string(),
        "ver": "1.0",
    });
    // The token carries the roles of its audience's API only.
    let roles = tokens::roles_for(api, &tenant.roles);
    if !roles.is_empty() {
        claims["roles"] = json!(roles);
    }
    let token = tokens::access_token(&claims);
    lock(&s.tokens).insert(
        token.clone(),
        IssuedToken {
            tenant_id: tenant_id.to_owned(),
            client_id: client_id.clone(),
            expires,
            api,
            roles,
        },
    );
    let secs = lifetime.as_secs();
    let body = if v1 {
        json!({
            "token_type": "Bearer",
            "expires_in": secs.to_string(),
            "ext_expires_in": secs.to_string(),
            "expires_on": exp.to_string(),
            "not_before": iat.to_string(),
            "resource": resource,
            "access_token": token,
        })
    } else {
        json!({"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": token})
    };
    Ok(body.to_string())
}

fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"code": code, "message": message, "target": uuid::Uuid::new_v4().to_string()}});
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// The query options, parsed from the raw (URL-encoded) query string.
struct Options {
    filter: Option<String>,
    top: Option<String>,
    skip: Option<String>,
    expand: Option<String>,
    duplicate: Option<String>,
}

fn options(raw: Option<&str>) -> Options {
    let mut o = Options {
        filter: None,
        top: None,
        skip: None,
        expand: None,
        duplicate: None,
    };
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let slot = match k.as_ref() {
            "$filter" => &mut o.filter,
            "$top" => &mut o.top,
            "$skip" => &mut o.skip,
            "$expand" => &mut o.expand,
            _ => continue,
        };
        if slot.is_some() {
            o.duplicate = Some(k.into_owned());
        }
        *slot = Some(v.into_owned());
    }
    o
}

async fn alerts(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let opts = options(raw.as_deref());
    let mut rec = RequestRecord {
        at: SystemTime::now(),
        at_instant: tokio::time::Instant::now(),
        kind: RequestKind::Alerts,
        tenant_id: None,
        client_id: None,
        status: 0,
        filter: opts.filter.clone(),
        top: opts.top.as_deref().and_then(|t| t.parse().ok()),
        skip: opts.skip.as_deref().and_then(|t| t.parse().ok()),
        retry_after: None,
        user_agent: user_agent(&headers),
        prefer: prefer(&headers),
        scope: None,
        served: None,
        next_link: false,
    };
    let resp = answer(&s, &headers, &opts, &mut rec).await;
    finish(&s, resp, rec).await
}

/// Records the answer, then holds it for the latency model's time.
async fn finish(s: &Shared, resp: Response, mut rec: RequestRecord) -> Response {
    rec.status = resp.status().as_u16();
    let delay = s.latency().for_alerts(rec.served.unwrap_or(0));
    s.record(rec);
    if !delay.is_zero() {
        let mut stop = s.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|v| *v) => {}
        }
    }
    resp
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
}

async fn answer(
    s: &Shared,
    headers: &HeaderMap,
    opts: &Options,
    rec: &mut RequestRecord,
) -> Response {
    // A retired API answers whatever the token (the tenant is still logged
    // when the token is one the simulator issued).
    if let Some(status) = s.mde_retired() {
        if let Some(t) = bearer(headers).and_then(|b| lock(&s.tokens).get(b).cloned()) {
            rec.tenant_id = Some(t.tenant_id);
            rec.client_id = Some(t.client_id);
        }
        let code = match status {
            404 => "NotFound",
            410 => "Gone",
            403 => "Forbidden",
            _ => "ApiRetired",
        };
        return api_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::GONE),
            code,
            "The Microsoft Defender for Endpoint API has been retired (MC1220762: it no longer functions after 1 February 2027). Use the Microsoft Graph security API: GET https://graph.microsoft.com/v1.0/security/alerts_v2.",
        );
    }
    // The bearer token.
    let Some(bearer) = bearer(headers) else {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Authorization header is missing or is not a Bearer token",
        );
    };
    let Some(token) = lock(&s.tokens).get(bearer).cloned() else {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Invalid token: the signature or the token is not valid",
        );
    };
    rec.tenant_id = Some(token.tenant_id.clone());
    rec.client_id = Some(token.client_id.clone());
    if token.api != Api::Mde {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Invalid token: the audience (aud) is not https://api.securitycenter.microsoft.com",
        );
    }
    if SystemTime::now() >= token.expires {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "The access token has expired",
        );
    }
    if token.roles.is_empty() {
        return api_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "The application does not have any of the required application permissions (Alert.ReadWrite.All, Alert.Read.All) to access the resource.",
        );
    }
    let tenant = token.tenant_id.as_str();

    let (faults, stall, fault) = s.alerts_fault(tenant);
    // An injected 429 is refused before the budget, so it costs nothing.
    if fault == ApiFault::Throttled {
        return with_retry_after(s, api_error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "API calls quota exceeded! Maximum allowed calls are 100 per minute and 1500 per hour."), faults.retry_after_secs, rec, true);
    }
    if let Err(wait) = s
        .limiter
        .try_acquire(&token.client_id, tenant, tokio::time::Instant::now())
    {
        let msg = format!(
            "API calls quota exceeded! Maximum allowed calls are {} per minute and {} per hour. Try again in {wait} seconds.",
            s.opts.per_minute, s.opts.per_hour
        );
        return with_retry_after(
            s,
            api_error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", &msg),
            wait,
            rec,
            false,
        );
    }
    if stall {
        let mut stop = s.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(faults.stall) => {}
            _ = stop.wait_for(|v| *v) => {}
        }
    }
    match fault {
        ApiFault::Internal => {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "An error has occurred.",
            )
        }
        ApiFault::Unavailable => {
            return with_retry_after(
                s,
                api_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable.",
                ),
                faults.retry_after_secs,
                rec,
                true,
            )
        }
        _ => {}
    }

    // The query.
    let bad = |m: String| api_error(StatusCode::BAD_REQUEST, "ODataError", &m);
    if let Some(k) = &opts.duplicate {
        return bad(format!("Query option '{k}' was specified more than once, but it must be specified at most once."));
    }
    let top = match opts.top.as_deref().map(str::parse::<i64>) {
        None => MAX_TOP,
        Some(Ok(t)) if (0..=MAX_TOP as i64).contains(&t) => t as usize,
        Some(Ok(t)) => return bad(format!("The limit of '{MAX_TOP}' for Top query has been exceeded. The value from the incoming request is '{t}'.")),
        Some(Err(_)) => return bad(format!("Invalid value '{}' for $top query option found.", opts.top.as_deref().unwrap_or(""))),
    };
    let skip = match opts.skip.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(k)) if k >= 0 => k as usize,
        _ => {
            return bad(format!(
                "Invalid value '{}' for $skip query option found.",
                opts.skip.as_deref().unwrap_or("")
            ))
        }
    };
    let skip = if faults.ignore_skip { 0 } else { skip };
    if faults.endless_body {
        let mut r = Response::new(Body::new(EndlessBody::new()));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
        return r;
    }
    let expand = match opts.expand.as_deref() {
        None => false,
        Some(e) if e.trim().eq_ignore_ascii_case("evidence") => true,
        Some(e) => {
            return bad(format!(
                "Could not find a property named '{e}' on type 'Alert' to expand."
            ))
        }
    };
    let filter = match opts.filter.as_deref().map(Filter::parse).transpose() {
        Ok(f) => f,
        Err(e) => return bad(format!("{e}")),
    };
    // Server-driven paging hands out `server_page` at a time, the rest of
    // `$top` behind a nextLink that carries the same filter.
    let page = s
        .opts
        .server_page
        .filter(|n| *n > 0 && *n < top)
        .unwrap_or(top);
    let (body, matched) = {
        let sets = read(&s.alerts);
        match sets.get(tenant) {
            Some(set) => set.query(&Query {
                filter: filter.as_ref(),
                top: page,
                skip,
                expand,
                seed: s.opts.seed,
            }),
            None => (
                format!(
                    "{{\"@odata.context\":\"{}\",\"value\":[]}}",
                    super::alerts::ODATA_CONTEXT
                ),
                0,
            ),
        }
    };
    rec.served = Some(matched.saturating_sub(skip).min(page));
    let link_to = |top: usize, skip: usize| {
        let mut link = format!("{}/api/alerts?$top={top}&$skip={skip}", s.base_url);
        if let Some(f) = &opts.filter {
            link.push_str("&$filter=");
            link.push_str(&encode_query_value(f));
        }
        if expand {
            link.push_str("&$expand=evidence");
        }
        link
    };
    let more = skip + page < matched;
    let honest = (page < top && more).then(|| link_to(top - page, skip + page));
    let hostile = (more || faults.next_link_loop)
        .then(|| faults.hostile_next_link(|| link_to(top, skip)))
        .flatten();
    let body = faults.twin_alerts(body);
    let body = if let Some(link) = hostile.or(honest) {
        let mut body = body;
        body.truncate(body.len() - 1);
        body.push_str(&format!(",\"@odata.nextLink\":\"{link}\"}}"));
        body
    } else {
        body
    };
    let body = match fault {
        ApiFault::Truncated => {
            let mut cut = body.len() / 2;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            Body::from(body[..cut].to_owned())
        }
        ApiFault::Reset => {
            let cut = body.len().min(24);
            Body::new(ResetBody {
                first: Some(Body::from(body[..cut].to_owned())),
            })
        }
        _ => Body::from(body),
    };
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
    r
}

/// alerts_v2's query options, from the raw (URL-encoded) query string.
#[derive(Default)]
struct GraphOptions {
    filter: Option<String>,
    top: Option<String>,
    skip: Option<String>,
    count: Option<String>,
    duplicate: Option<String>,
    /// An option the simulator refuses rather than pretend to honour.
    refused: Option<String>,
}

fn graph_options(raw: Option<&str>) -> GraphOptions {
    let mut o = GraphOptions::default();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let slot = match k.as_ref() {
            "$filter" => &mut o.filter,
            "$top" => &mut o.top,
            "$skip" => &mut o.skip,
            "$count" => &mut o.count,
            // Undocumented for alerts_v2 (API-NOTES): a client relying on an
            // order would be relying on nothing Microsoft promises.
            "$orderby" | "$search" | "$skiptoken" => {
                o.refused = Some(k.into_owned());
                continue;
            }
            _ => continue,
        };
        if slot.is_some() {
            o.duplicate = Some(k.into_owned());
        }
        *slot = Some(v.into_owned());
    }
    o
}

fn graph_error(
    status: StatusCode,
    code: &str,
    message: &str,
    client_request_id: Option<&str>,
) -> Response {
    let mut r = (status, graph::error_body(code, message, client_request_id)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn graph_alerts(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let opts = graph_options(raw.as_deref());
    let mut rec = RequestRecord {
        at: SystemTime::now(),
        at_instant: tokio::time::Instant::now(),
        kind: RequestKind::GraphAlerts,
        tenant_id: None,
        client_id: None,
        status: 0,
        filter: opts.filter.clone(),
        top: opts.top.as_deref().and_then(|t| t.parse().ok()),
        skip: opts.skip.as_deref().and_then(|t| t.parse().ok()),
        retry_after: None,
        user_agent: user_agent(&headers),
        prefer: prefer(&headers),
        scope: None,
        served: None,
        next_link: false,
    };
    let resp = graph_answer(&s, &headers, &opts, &mut rec).await;
    finish(&s, resp, rec).await
}

async fn graph_answer(
    s: &Shared,
    headers: &HeaderMap,
    opts: &GraphOptions,
    rec: &mut RequestRecord,
) -> Response {
    let crid = header_text(headers, "client-request-id");
    let crid = crid.as_deref();
    let unauthorized = |m: &str| {
        graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            m,
            crid,
        )
    };
    let Some(bearer) = bearer(headers) else {
        return unauthorized("Access token is empty.");
    };
    let Some(token) = lock(&s.tokens).get(bearer).cloned() else {
        return unauthorized("Access token validation failure. Invalid signature.");
    };
    rec.tenant_id = Some(token.tenant_id.clone());
    rec.client_id = Some(token.client_id.clone());
    if token.api != Api::Graph {
        return unauthorized("Access token validation failure. Invalid audience.");
    }
    if SystemTime::now() >= token.expires {
        return unauthorized("Lifetime validation failed, the token is expired.");
    }
    if !token.has_any(GRAPH_ALERT_ROLES) {
        let granted = if token.roles.is_empty() {
            "none".to_owned()
        } else {
            token.roles.join(", ")
        };
        return graph_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("Missing application roles. API required roles: SecurityAlert.Read.All, SecurityAlert.ReadWrite.All. API granted roles: {granted}."),
            crid,
        );
    }
    let tenant = token.tenant_id.as_str();

    let (faults, stall, fault) = s.alerts_fault(tenant);
    let throttled = |secs: u64, rec: &mut RequestRecord, may_use_date: bool| {
        with_retry_after(
            s,
            graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests. The application has exceeded 150 requests a minute for this tenant; retry after the time in Retry-After.",
                crid,
            ),
            secs,
            rec,
            may_use_date,
        )
    };
    // An injected 429 is refused before the budget, so it costs nothing.
    if fault == ApiFault::Throttled {
        return throttled(faults.retry_after_secs, rec, true);
    }
    if let Err(wait) =
        s.graph_limiter
            .try_acquire(&token.client_id, tenant, tokio::time::Instant::now())
    {
        return throttled(wait, rec, false);
    }
    if stall {
        let mut stop = s.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(faults.stall) => {}
            _ = stop.wait_for(|v| *v) => {}
        }
    }
    match fault {
        ApiFault::Internal => {
            return graph_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UnknownError",
                "An unexpected error occurred.",
                crid,
            )
        }
        ApiFault::Unavailable => {
            return with_retry_after(
                s,
                graph_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable. Retry after the time in Retry-After.",
                    crid,
                ),
                faults.retry_after_secs,
                rec,
                true,
            )
        }
        _ => {}
    }

    // The query.
    let bad = |m: String| graph_error(StatusCode::BAD_REQUEST, "BadRequest", &m, crid);
    if let Some(k) = &opts.duplicate {
        return bad(format!("Query option '{k}' was specified more than once, but it must be specified at most once."));
    }
    if let Some(k) = &opts.refused {
        return bad(format!("Query option '{k}' is not supported by this simulator: Microsoft does not document it for alerts_v2."));
    }
    let number = |v: Option<&str>, name: &str| match v.map(str::parse::<i64>) {
        None => Ok(None),
        Some(Ok(n)) if n >= 0 => Ok(Some(n as usize)),
        _ => Err(format!(
            "Invalid value '{}' for {name} query option found.",
            v.unwrap_or("")
        )),
    };
    // Above 1,000 is served as 1,000, silently, as Graph does.
    let asked = match number(opts.top.as_deref(), "$top") {
        Ok(t) => t.unwrap_or(GRAPH_MAX_TOP).min(GRAPH_MAX_TOP),
        Err(m) => return bad(m),
    };
    let skip = match number(opts.skip.as_deref(), "$skip") {
        Ok(k) => k.unwrap_or(0),
        Err(m) => return bad(m),
    };
    let count = match opts.count.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(c) => {
            return bad(format!(
                "Invalid value '{c}' for $count query option found."
            ))
        }
    };
    let filter = match opts.filter.as_deref().map(Filter::parse_graph).transpose() {
        Ok(f) => f,
        Err(e) => return bad(format!("{e}")),
    };
    let top = s.graph_clamp(tenant).map_or(asked, |c| asked.min(c.max(1)));
    let include_unknown = rec.prefer.as_deref().is_some_and(|p| {
        p.split(',').any(|v| {
            v.trim()
                .eq_ignore_ascii_case("include-unknown-enum-members")
        })
    });
    // The next page: the same query, $skip past what this one served, over
    // whatever the data is by then.
    let mut prefix = format!("{}{GRAPH_PATH}?", s.base_url);
    if let Some(f) = &opts.filter {
        prefix.push_str("$filter=");
        prefix.push_str(&encode_query_value(f));
        prefix.push('&');
    }
    if count {
        prefix.push_str("$count=true&");
    }
    prefix.push_str(&format!("$top={asked}&$skip="));
    let page = {
        let sets = read(&s.alerts);
        let empty = super::alerts::AlertSet::default();
        sets.get(tenant).unwrap_or(&empty).graph_query(&GraphQuery {
            filter: filter.as_ref(),
            top,
            skip,
            include_unknown,
            count,
            next_link_prefix: &prefix,
            next_link_suffix: "",
        })
    };
    rec.served = Some(page.served);
    rec.next_link = page.has_next;
    let body = page.body;
    let body = match fault {
        ApiFault::Truncated => {
            let mut cut = body.len() / 2;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            Body::from(body[..cut].to_owned())
        }
        ApiFault::Reset => {
            let cut = body.len().min(24);
            Body::new(ResetBody {
                first: Some(Body::from(body[..cut].to_owned())),
            })
        }
        _ => Body::from(body),
    };
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
    r
}

/// Percent-encodes a query value for a nextLink.
fn encode_query_value(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Adds `Retry-After`; injected ones alternate between the seconds and the
/// HTTP-date forms, both of which clients must understand.
fn with_retry_after(
    s: &Shared,
    mut r: Response,
    secs: u64,
    rec: &mut RequestRecord,
    may_use_date: bool,
) -> Response {
    let secs = secs.max(1);
    let use_date = may_use_date && s.retry_after_flip.fetch_add(1, Ordering::Relaxed) % 2 == 1;
    let value = if use_date {
        httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(secs))
    } else {
        secs.to_string()
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    rec.retry_after = Some(secs);
    r
}

/// A body that sends its first chunk and then fails, so the server aborts the
/// connection mid-response: what a client sees on a connection reset.
struct ResetBody {
    first: Option<Body>,
}

impl HttpBody for ResetBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if let Some(first) = self.first.as_mut() {
            match Pin::new(first).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Some(Ok(frame))),
                Poll::Ready(_) => self.first = None,
            }
        }
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "simulated connection reset",
        ))))
    }
}
