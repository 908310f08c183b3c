//! `[tenants.NAME]`: each tenant resolved against what `[app]`, `cloud` and
//! `[endpoints]` give every tenant (client id, credential, hosts).

use std::collections::BTreeMap;

use super::check::Checker;
use super::cloud::cloud_endpoints;
use super::credentials::{Sources, APP_CREDENTIAL, TENANT_CREDENTIAL_PREFIX};
use super::raw::{RawConfig, RawTenant};
use super::settings::TenantSettings;
use crate::auth::Credential;
use crate::output::AlertSource;

/// Every member of Graph's `microsoft.graph.security.serviceSource` that
/// names a product (API-NOTES, "Enumerations", and the evolvable members
/// after `unknownFutureValue`, sent because every request asks for them).
pub(crate) const GRAPH_SERVICE_SOURCES: &[&str] = &[
    "microsoftDefenderForEndpoint",
    "microsoftDefenderForIdentity",
    "microsoftDefenderForCloudApps",
    "microsoftDefenderForOffice365",
    "microsoft365Defender",
    "azureAdIdentityProtection",
    "microsoftAppGovernance",
    "dataLossPrevention",
    "microsoftDefenderForCloud",
    "microsoftSentinel",
    "microsoftInsiderRiskManagement",
];

/// What every tenant inherits unless it names its own. A `None` value whose
/// key was given had a problem, already reported.
struct Shared {
    login_url: Option<String>,
    api_url: Option<String>,
    token_scope: Option<String>,
    graph_url: Option<String>,
    graph_scope: Option<String>,
    /// `[poll] source`; `None` when it had a problem (reported).
    source: Option<AlertSource>,
    service_sources: Option<Vec<String>>,
    client_id: Option<String>,
    client_id_given: bool,
    credential: Option<Credential>,
    credential_given: bool,
    legacy_rs256: bool,
}

impl Checker<'_> {
    /// The tenants without a problem; every tenant left out has one recorded.
    pub(super) fn tenants(&mut self, raw: &RawConfig) -> Vec<TenantSettings> {
        let shared = self.shared(raw);
        // Tenant id → the first tenant's name, to refuse a duplicate.
        let mut ids: BTreeMap<String, String> = BTreeMap::new();
        let mut out = Vec::new();
        for (name, t) in &raw.tenants {
            if let Some(tenant) = self.tenant(name, t, &shared, &mut ids) {
                out.push(tenant);
            }
        }
        out
    }

    fn shared(&mut self, raw: &RawConfig) -> Shared {
        let cloud = raw.cloud.trim().to_ascii_lowercase();
        let preset = cloud_endpoints(&cloud).unwrap_or_else(|| {
            self.problem(
                "cloud",
                format!("{:?} is not one of global, gcc, gcc-high, dod", raw.cloud),
            );
            cloud_endpoints("global").expect("global preset")
        });
        let ep = &raw.endpoints;
        let login_url = self.endpoint(
            "endpoints.login_url",
            ep.login_url.as_deref().unwrap_or(preset.login_url),
        );
        let api_url = self.endpoint(
            "endpoints.api_url",
            ep.api_url.as_deref().unwrap_or(preset.api_url),
        );
        let token_scope = ep.token_scope.as_deref().unwrap_or(preset.token_scope);
        // The scope's host is checked like a URL, but the scope is kept as given.
        let token_scope = self
            .endpoint("endpoints.token_scope", token_scope)
            .map(|_| token_scope.trim().to_owned());
        let graph_url = self.endpoint(
            "endpoints.graph_url",
            ep.graph_url.as_deref().unwrap_or(preset.graph_url),
        );
        let graph_scope = ep.graph_scope.as_deref().unwrap_or(preset.graph_scope);
        let graph_scope = self
            .endpoint("endpoints.graph_scope", graph_scope)
            .map(|_| graph_scope.trim().to_owned());
        let source = self.source("poll.source", &raw.poll.source);
        let service_sources = self.service_sources(&raw.poll.service_sources);

        let app = &raw.app;
        let client_id = app
            .client_id
            .as_deref()
            .and_then(|id| self.guid("app.client_id", id, "client id"));
        let sources = Sources {
            prefix: "app",
            client_secret: app.client_secret.as_deref(),
            client_secret_file: app.client_secret_file.as_deref(),
            client_secret_credential: app.client_secret_credential.as_deref(),
            certificate_file: app.certificate_file.as_deref(),
            legacy_rs256: app.certificate_legacy_rs256,
        };
        let (credential, credential_given) = if sources.any() {
            (self.credential(&sources), true)
        } else if let Some(path) = self.implicit_credential(APP_CREDENTIAL) {
            let secret = self.read_secret("app.client_secret_credential", &path);
            (secret.map(Credential::Secret), true)
        } else {
            (None, false)
        };
        Shared {
            login_url,
            api_url,
            token_scope,
            graph_url,
            graph_scope,
            source,
            service_sources,
            client_id,
            client_id_given: app.client_id.is_some(),
            credential,
            credential_given,
            legacy_rs256: app.certificate_legacy_rs256,
        }
    }

    fn tenant(
        &mut self,
        name: &str,
        t: &RawTenant,
        shared: &Shared,
        ids: &mut BTreeMap<String, String>,
    ) -> Option<TenantSettings> {
        let prefix = format!("tenants.{name}");
        let name_ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            self.problem(
                &prefix,
                format!("tenant name {name:?} must be lower case letters, digits, _ and - only"),
            );
        }
        let id_key = format!("{prefix}.tenant_id");
        let tenant_id = match &t.tenant_id {
            None => {
                self.problem(&id_key, "missing: the customer's tenant id (a GUID)");
                None
            }
            Some(id) => self.guid(&id_key, id, "tenant id"),
        };
        if let Some(id) = &tenant_id {
            if let Some(first) = ids.get(id) {
                let message = format!("{id} is also the tenant id of tenants.{first}");
                self.problem(&id_key, message);
            } else {
                ids.insert(id.clone(), name.to_owned());
            }
        }
        let own_client_id = t
            .client_id
            .as_deref()
            .and_then(|id| self.guid(&format!("{prefix}.client_id"), id, "client id"));
        let client_id = self.tenant_client_id(&prefix, t, own_client_id.as_deref(), shared);
        let credential = self.tenant_credential(name, &prefix, t, own_client_id.as_deref(), shared);
        let api_url = match &t.api_url {
            Some(url) => self.endpoint(&format!("{prefix}.api_url"), url),
            None => shared.api_url.clone(),
        };
        let source = match &t.source {
            Some(text) => self.source(&format!("{prefix}.source"), text),
            None => shared.source,
        };
        if !name_ok {
            return None;
        }
        Some(TenantSettings {
            name: name.to_owned(),
            tenant_id: tenant_id?,
            enabled: t.enabled,
            client_id: client_id?,
            credential: credential?,
            login_url: shared.login_url.clone()?,
            api_url: api_url?,
            token_scope: shared.token_scope.clone()?,
            source: source?,
            graph_url: shared.graph_url.clone()?,
            graph_scope: shared.graph_scope.clone()?,
            service_sources: shared.service_sources.clone()?,
        })
    }

    /// `mde` or `graph`.
    fn source(&mut self, key: &str, text: &str) -> Option<AlertSource> {
        match text.trim().to_ascii_lowercase().as_str() {
            "mde" => Some(AlertSource::Mde),
            "graph" => Some(AlertSource::Graph),
            _ => {
                self.problem(
                    key,
                    format!(
                        "{text:?} is not one of mde, graph (graph reads Microsoft Graph alerts_v2; mde, the Defender for Endpoint API, stops working after 1 February 2027)"
                    ),
                );
                None
            }
        }
    }

    /// Each value one of Graph's `serviceSource` members, spelled as Graph
    /// spells it (the filter is sent as written: a near miss would match
    /// nothing, silently).
    fn service_sources(&mut self, values: &[String]) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (i, v) in values.iter().enumerate() {
            let v = v.trim();
            if GRAPH_SERVICE_SOURCES.contains(&v) {
                if !out.iter().any(|o| o == v) {
                    out.push(v.to_owned());
                }
                continue;
            }
            ok = false;
            let near = GRAPH_SERVICE_SOURCES
                .iter()
                .find(|m| m.eq_ignore_ascii_case(v))
                .map(|m| format!(" (did you mean {m:?}?)"))
                .unwrap_or_default();
            self.problem(
                "poll.service_sources",
                format!(
                    "value {} {v:?} is not one of Graph's serviceSource members{near}: {}",
                    i + 1,
                    GRAPH_SERVICE_SOURCES.join(", ")
                ),
            );
        }
        ok.then_some(out)
    }

    /// The tenant's own client id, else `[app]`'s.
    fn tenant_client_id(
        &mut self,
        prefix: &str,
        t: &RawTenant,
        own: Option<&str>,
        shared: &Shared,
    ) -> Option<String> {
        // A `None` for a key that was given: its problem is already reported.
        if t.client_id.is_some() {
            return own.map(str::to_owned);
        }
        if shared.client_id_given {
            return shared.client_id.clone();
        }
        self.problem(
            &format!("{prefix}.client_id"),
            "no client id: set [app] client_id, or this tenant's own client_id",
        );
        None
    }

    /// The tenant's own credential (keys, or the systemd credential
    /// `client-secret-NAME`), else `[app]`'s, unless the tenant uses an app
    /// of its own, whose credential `[app]`'s cannot be.
    fn tenant_credential(
        &mut self,
        name: &str,
        prefix: &str,
        t: &RawTenant,
        own_client_id: Option<&str>,
        shared: &Shared,
    ) -> Option<Credential> {
        let sources = Sources {
            prefix,
            client_secret: t.client_secret.as_deref(),
            client_secret_file: t.client_secret_file.as_deref(),
            client_secret_credential: t.client_secret_credential.as_deref(),
            certificate_file: t.certificate_file.as_deref(),
            legacy_rs256: t.certificate_legacy_rs256.unwrap_or(shared.legacy_rs256),
        };
        if sources.any() {
            return self.credential(&sources);
        }
        let conventional = format!("{TENANT_CREDENTIAL_PREFIX}{name}");
        if let Some(path) = self.implicit_credential(&conventional) {
            let secret = self.read_secret(&format!("{prefix}.client_secret_credential"), &path);
            return secret.map(Credential::Secret);
        }
        let app_id_failed = shared.client_id_given && shared.client_id.is_none();
        let own_app = own_client_id
            .is_some_and(|own| !app_id_failed && shared.client_id.as_deref() != Some(own));
        if own_app {
            self.problem(
                prefix,
                format!(
                    "this tenant has its own client_id but no credential for it: set \
                     {prefix}.client_secret_credential, .client_secret_file or .certificate_file, \
                     or provide the systemd credential {conventional}"
                ),
            );
            return None;
        }
        if shared.credential_given {
            // `None`: reported under [app].
            return shared.credential.clone();
        }
        self.problem(
            prefix,
            format!(
                "no credential: set one in [app] or [{prefix}] (client_secret_credential, \
                 client_secret_file, MDE_POLLER_APP__CLIENT_SECRET, client_secret or \
                 certificate_file), or provide the systemd credential {APP_CREDENTIAL} \
                 or {conventional}"
            ),
        );
        None
    }

    fn guid(&mut self, key: &str, text: &str, what: &str) -> Option<String> {
        let text = text.trim();
        if is_guid(text) {
            Some(text.to_ascii_lowercase())
        } else {
            self.problem(
                key,
                format!(
                    "{text:?} is not a {what} (a GUID like 00000000-0000-0000-0000-000000000000)"
                ),
            );
            None
        }
    }
}

/// `8-4-4-4-12` hex digits, the only form Entra ID shows.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}
