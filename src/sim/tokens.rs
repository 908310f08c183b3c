//! The Entra ID side: Entra-shaped errors (AADSTS codes), issued access tokens
//! and the verification of certificate client assertions (PS256 / RS256).

use std::time::SystemTime;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use rand::RngCore;
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::RsaPublicKey;
use serde_json::{json, Value};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, Encode};

use crate::timestamp::Timestamp;

pub(crate) const CLIENT_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Resources a token may be asked for: the Defender for Endpoint API under its
/// names in every cloud, and its app id.
pub(crate) const MDE_RESOURCES: &[&str] = &[
    "https://api.securitycenter.microsoft.com",
    "https://api.security.microsoft.com",
    "https://securitycenter.onmicrosoft.com/windowsatpservice",
    "https://api-gcc.securitycenter.microsoft.us",
    "https://api-gov.securitycenter.microsoft.us",
    "fc780465-2017-40d4-a0c5-307022471b92",
];

/// Microsoft Graph under its names in every cloud (global and gcc share one
/// host), and its app id.
pub(crate) const GRAPH_RESOURCES: &[&str] = &[
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "00000003-0000-0000-c000-000000000000",
];

/// Application roles that belong to Microsoft Graph; every other role a
/// tenant grants is taken as one of the WindowsDefenderATP API (`Alert.Read.All`,
/// `Machine.Read.All`, …). A token carries only the roles of its audience.
pub(crate) const GRAPH_ROLES: &[&str] = &[
    "SecurityAlert.Read.All",
    "SecurityAlert.ReadWrite.All",
    "SecurityIncident.Read.All",
    "SecurityIncident.ReadWrite.All",
    "SecurityEvents.Read.All",
    "SecurityEvents.ReadWrite.All",
    "ThreatHunting.Read.All",
];

/// The roles of `granted` that a token for `api` carries.
pub(crate) fn roles_for(api: super::Api, granted: &[String]) -> Vec<String> {
    granted
        .iter()
        .filter(|r| GRAPH_ROLES.contains(&r.as_str()) == (api == super::Api::Graph))
        .cloned()
        .collect()
}

/// A token-endpoint refusal, rendered exactly as Entra writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AadError {
    pub status: u16,
    pub error: &'static str,
    pub code: u32,
    pub text: String,
}

impl AadError {
    pub(crate) fn new(
        status: u16,
        error: &'static str,
        code: u32,
        text: impl Into<String>,
    ) -> Self {
        AadError {
            status,
            error,
            code,
            text: text.into(),
        }
    }

    pub(crate) fn body(&self) -> String {
        let trace = uuid::Uuid::new_v4();
        let corr = uuid::Uuid::new_v4();
        let now = Timestamp::now();
        let stamp = now.to_string();
        let short = format!("{} {}Z", &stamp[..10], &stamp[11..19]);
        json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {short}",
                self.code, self.text
            ),
            "error_codes": [self.code],
            "timestamp": short,
            "trace_id": trace.to_string(),
            "correlation_id": corr.to_string(),
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        })
        .to_string()
    }
}

/// What the sim remembers of a token it issued.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub tenant_id: String,
    pub client_id: String,
    pub expires: SystemTime,
    /// Which API the token's `aud` names.
    pub api: super::Api,
    /// The `roles` claim (empty: no claim).
    pub roles: Vec<String>,
}

impl IssuedToken {
    pub(crate) fn has_any(&self, roles: &[&str]) -> bool {
        self.roles.iter().any(|r| roles.contains(&r.as_str()))
    }
}

/// A v1.0 access token: real JWT header and claims, random "signature".
pub(crate) fn access_token(claims: &Value) -> String {
    let header = json!({"typ": "JWT", "alg": "RS256", "x5t": "sim-key", "kid": "sim-key"});
    let mut sig = [0u8; 256];
    rand::thread_rng().fill_bytes(&mut sig);
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string()),
        B64.encode(sig)
    )
}

/// A certificate credential of an app: the thumbprints the assertion header
/// names it by, and the key its signature must verify with.
pub(crate) struct AppCert {
    sha1: String,
    sha256: String,
    key: RsaPublicKey,
}

impl AppCert {
    /// Reads the first CERTIFICATE block of a PEM (which may also hold a key).
    pub(crate) fn from_pem(pem_text: &str) -> Result<AppCert, String> {
        let blocks = pem::parse_many(pem_text).map_err(|e| format!("bad PEM: {e}"))?;
        let der = blocks
            .iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .ok_or("no CERTIFICATE block in the PEM")?
            .contents()
            .to_vec();
        let cert =
            x509_cert::Certificate::from_der(&der).map_err(|e| format!("bad certificate: {e}"))?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| format!("bad public key: {e}"))?;
        let key =
            RsaPublicKey::from_public_key_der(&spki).map_err(|e| format!("not an RSA key: {e}"))?;
        Ok(AppCert {
            sha1: B64.encode(Sha1::digest(&der)),
            sha256: B64.encode(Sha256::digest(&der)),
            key,
        })
    }
}

/// Checks a client assertion as Entra does: signature by a registered
/// certificate, `iss` = `sub` = client id, the audience, and the time window.
pub(crate) fn verify_assertion(
    jwt: &str,
    client_id: &str,
    certs: &[AppCert],
    expected_aud: &[String],
    now: SystemTime,
) -> Result<(), AadError> {
    let bad = |text: String| {
        AadError::new(
            401,
            "invalid_client",
            700027,
            format!("Client assertion failed signature validation. {text}"),
        )
    };
    let malformed = || {
        AadError::new(
            400,
            "invalid_request",
            50027,
            "JWT token is invalid or malformed.",
        )
    };
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return Err(malformed());
    }
    let decode = |s: &str| B64.decode(s.trim_end_matches('='));
    let header: Value = decode(parts[0])
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(malformed)?;
    let claims: Value = decode(parts[1])
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(malformed)?;
    let sig = decode(parts[2]).map_err(|_| bad("The signature is not base64url.".into()))?;
    let signed = &jwt[..parts[0].len() + 1 + parts[1].len()];
    let alg = header["alg"].as_str().unwrap_or("");
    let cert = match alg {
        "PS256" | "RS256" => {
            let s256 = header["x5t#S256"].as_str();
            let s1 = header["x5t"].as_str();
            certs.iter().find(|c| s256 == Some(c.sha256.as_str()) || s1 == Some(c.sha1.as_str()))
        }
        _ => return Err(bad(format!("Unsupported signing algorithm '{alg}'."))),
    }
    .ok_or_else(|| {
        AadError::new(
            401,
            "invalid_client",
            700027,
            "The certificate with identifier used to sign the client assertion is not registered on application.",
        )
    })?;
    let verified = if alg == "PS256" {
        rsa::pss::Signature::try_from(sig.as_slice())
            .ok()
            .is_some_and(|s| {
                rsa::pss::VerifyingKey::<Sha256>::new(cert.key.clone())
                    .verify(signed.as_bytes(), &s)
                    .is_ok()
            })
    } else {
        rsa::pkcs1v15::Signature::try_from(sig.as_slice())
            .ok()
            .is_some_and(|s| {
                rsa::pkcs1v15::VerifyingKey::<Sha256>::new(cert.key.clone())
                    .verify(signed.as_bytes(), &s)
                    .is_ok()
            })
    };
    if !verified {
        return Err(bad(
            "The signature does not match the registered certificate.".into(),
        ));
    }
    let iss = claims["iss"].as_str().unwrap_or("");
    let sub = claims["sub"].as_str().unwrap_or("");
    if iss != sub {
        return Err(AadError::new(
            401,
            "invalid_client",
            50048,
            format!("Subject mismatches Issuer claim in the client assertion. Subject: '{sub}', Issuer: '{iss}'."),
        ));
    }
    if iss != client_id {
        return Err(bad(format!(
            "The assertion's issuer '{iss}' is not the client id '{client_id}'."
        )));
    }
    let aud = claims["aud"].as_str().unwrap_or("");
    if !expected_aud.iter().any(|a| a == aud) {
        return Err(AadError::new(
            401,
            "invalid_client",
            700027,
            format!(
                "Client assertion contains an invalid audience (aud) claim '{aud}'; expected '{}'.",
                expected_aud[0]
            ),
        ));
    }
    let now = Timestamp::from_system_time(now).unix_seconds();
    let skew = 300;
    let exp = claims["exp"].as_i64();
    let nbf = claims["nbf"].as_i64().unwrap_or(0);
    let window = AadError::new(
        401,
        "invalid_client",
        500133,
        format!("Assertion is not within its valid time range. Ensure that the access token is not expired before using it. Current time: {now}, nbf: {nbf}, expiry time of assertion {}.", exp.unwrap_or(0)),
    );
    match exp {
        Some(exp) if now - skew < exp && nbf - skew <= now && exp <= now + 600 + skew => Ok(()),
        _ => Err(window),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
    use rsa::RsaPrivateKey;
    use std::process::Command;

    /// A fresh self-signed certificate and its key, made by the openssl CLI.
    pub(crate) fn openssl_cert(dir: &std::path::Path, name: &str) -> (String, RsaPrivateKey) {
        let key = dir.join(format!("{name}.key"));
        let crt = dir.join(format!("{name}.crt"));
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=sim-test",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&crt)
            .output()
            .expect("openssl runs");
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let pk = RsaPrivateKey::from_pkcs8_pem(&std::fs::read_to_string(key).unwrap()).unwrap();
        (std::fs::read_to_string(crt).unwrap(), pk)
    }

    /// Signs an assertion as a client would, with `alg` PS256 or RS256.
    pub(crate) fn sign(alg: &str, cert_pem: &str, key: &RsaPrivateKey, claims: &Value) -> String {
        let der = pem::parse(cert_pem).unwrap().contents().to_vec();
        let header = if alg == "PS256" {
            json!({"alg": "PS256", "typ": "JWT", "x5t#S256": B64.encode(Sha256::digest(&der))})
        } else {
            json!({"alg": "RS256", "typ": "JWT", "x5t": B64.encode(Sha1::digest(&der))})
        };
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = if alg == "PS256" {
            rsa::pss::BlindedSigningKey::<Sha256>::new(key.clone())
                .sign_with_rng(&mut rand::thread_rng(), input.as_bytes())
                .to_vec()
        } else {
            rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone())
                .sign(input.as_bytes())
                .to_vec()
        };
        format!("{input}.{}", B64.encode(sig))
    }

    pub(crate) fn claims(client: &str, aud: &str, now: i64) -> Value {
        json!({"aud": aud, "iss": client, "sub": client, "jti": uuid::Uuid::new_v4().to_string(),
               "nbf": now, "iat": now, "exp": now + 600})
    }

    #[test]
    fn assertions_verify_with_ps256_and_rs256_and_fail_with_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let (pem_a, key_a) = openssl_cert(dir.path(), "a");
        let (pem_b, key_b) = openssl_cert(dir.path(), "b");
        let certs = vec![AppCert::from_pem(&pem_a).unwrap()];
        let aud = vec!["http://127.0.0.1:1/t/oauth2/v2.0/token".to_owned()];
        let now = SystemTime::now();
        let secs = Timestamp::now().unix_seconds();
        let c = claims("app", &aud[0], secs);
        for alg in ["PS256", "RS256"] {
            assert_eq!(
                verify_assertion(&sign(alg, &pem_a, &key_a, &c), "app", &certs, &aud, now),
                Ok(())
            );
        }
        // Signed by another key but claiming certificate A's thumbprint.
        let forged = sign("PS256", &pem_a, &key_b, &c);
        assert_eq!(
            verify_assertion(&forged, "app", &certs, &aud, now)
                .unwrap_err()
                .code,
            700027
        );
        // A certificate that was never uploaded.
        let unknown = sign("RS256", &pem_b, &key_b, &c);
        assert_eq!(
            verify_assertion(&unknown, "app", &certs, &aud, now)
                .unwrap_err()
                .code,
            700027
        );

        let mut c2 = c.clone();
        c2["sub"] = json!("someone-else");
        let e = verify_assertion(
            &sign("PS256", &pem_a, &key_a, &c2),
            "app",
            &certs,
            &aud,
            now,
        )
        .unwrap_err();
        assert_eq!(e.code, 50048);
        let mut c3 = c.clone();
        c3["exp"] = json!(secs - 3600);
        let e = verify_assertion(
            &sign("PS256", &pem_a, &key_a, &c3),
            "app",
            &certs,
            &aud,
            now,
        )
        .unwrap_err();
        assert_eq!(e.code, 500133);
        let mut c4 = c.clone();
        c4["exp"] = json!(secs + 3600);
        let e = verify_assertion(
            &sign("PS256", &pem_a, &key_a, &c4),
            "app",
            &certs,
            &aud,
            now,
        )
        .unwrap_err();
        assert_eq!(e.code, 500133);
        let mut c5 = c;
        c5["aud"] = json!("https://login.microsoftonline.com/t/oauth2/v2.0/token");
        let e = verify_assertion(
            &sign("PS256", &pem_a, &key_a, &c5),
            "app",
            &certs,
            &aud,
            now,
        )
        .unwrap_err();
        assert_eq!(e.code, 700027);
        assert!(e.text.contains("aud"), "{}", e.text);
    }

    #[test]
    fn errors_have_entras_shape() {
        let body: Value =
            serde_json::from_str(&AadError::new(400, "unauthorized_client", 700016, "nope").body())
                .unwrap();
        assert_eq!(body["error"], "unauthorized_client");
        assert_eq!(body["error_codes"], json!([700016]));
        let d = body["error_description"].as_str().unwrap();
        assert!(d.starts_with("AADSTS700016: nope\r\nTrace ID: "), "{d}");
        assert!(d.contains("\r\nCorrelation ID: ") && d.contains("\r\nTimestamp: "));
        assert!(body["trace_id"].is_string() && body["correlation_id"].is_string());
    }
}
