//! Certificate credentials: the PEM file (certificate + RSA private key) read
//! once at start-up, and a freshly signed client-assertion JWT per token request.
//!
//! The key and certificate are checked against each other when loaded, so a
//! mismatched pair is a start-up error naming the file instead of an
//! AADSTS700027 at every poll. Nothing here ever formats key material.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_cert::der::{Decode, Encode};

use super::AuthError;
use crate::timestamp::Timestamp;

/// How long a client assertion is valid: Entra accepts up to 10 minutes.
const ASSERTION_LIFETIME_SECS: i64 = 600;

/// The JWT-bearer assertion type sent with `client_assertion`.
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

enum SigningKey {
    Ps256(rsa::pss::BlindedSigningKey<Sha256>),
    Rs256(rsa::pkcs1v15::SigningKey<Sha256>),
}

/// A certificate and its private key, ready to sign client assertions.
pub(crate) struct ClientCertificate {
    path: PathBuf,
    signing_key: SigningKey,
    /// base64url(SHA-256(DER)): the `x5t#S256` header.
    x5t_s256: String,
    /// base64url(SHA-1(DER)): the legacy `x5t` header.
    x5t: String,
    /// Upper-case hex SHA-1, as the Azure portal lists certificate thumbprints.
    thumbprint_hex: String,
}

fn bad(path: &Path, what: &str) -> AuthError {
    AuthError::Credential(format!("certificate file {}: {what}", path.display()))
}

impl ClientCertificate {
    /// Reads and checks the PEM file at `path`.
    #[cfg(test)]
    pub(crate) fn load(path: &Path, legacy_rs256: bool) -> Result<ClientCertificate, AuthError> {
        let bytes = std::fs::read(path).map_err(|e| bad(path, &format!("cannot read it: {e}")))?;
        Self::from_pem(&bytes, path, legacy_rs256)
    }

    /// Parses PEM text holding at least one `CERTIFICATE` and exactly one RSA
    /// private key (`PRIVATE KEY` = PKCS#8 or `RSA PRIVATE KEY` = PKCS#1);
    /// `path` is only used in error messages.
    pub(crate) fn from_pem(
        pem_text: &[u8],
        path: &Path,
        legacy_rs256: bool,
    ) -> Result<ClientCertificate, AuthError> {
        // Our own messages only: parser errors may quote bytes of the key.
        let blocks = pem::parse_many(pem_text).map_err(|_| bad(path, "is not valid PEM"))?;
        let mut key = None;
        let mut certs = Vec::new();
        for block in &blocks {
            let parsed = match block.tag() {
                "CERTIFICATE" => {
                    certs.push(block.contents());
                    continue;
                }
                "PRIVATE KEY" => RsaPrivateKey::from_pkcs8_der(block.contents())
                    .map_err(|_| bad(path, "its PRIVATE KEY is not an RSA key in PKCS#8"))?,
                "RSA PRIVATE KEY" => RsaPrivateKey::from_pkcs1_der(block.contents())
                    .map_err(|_| bad(path, "its RSA PRIVATE KEY is not a valid PKCS#1 key"))?,
                "ENCRYPTED PRIVATE KEY" => {
                    return Err(bad(
                        path,
                        "its private key is encrypted; store it unencrypted with tight file permissions (openssl pkey -in old.pem -out key.pem)",
                    ))
                }
                _ => continue,
            };
            if key.replace(parsed).is_some() {
                return Err(bad(path, "holds more than one private key"));
            }
        }
        let key = key.ok_or_else(|| {
            bad(
                path,
                "holds no private key (expected PRIVATE KEY or RSA PRIVATE KEY)",
            )
        })?;
        if certs.is_empty() {
            return Err(bad(path, "holds no CERTIFICATE block"));
        }
        // With a chain in the file, the certificate to name is the one whose
        // public key is ours, wherever it sits.
        let public = RsaPublicKey::from(&key);
        let mut cert_der = None;
        for der in certs {
            let cert = x509_cert::Certificate::from_der(der)
                .map_err(|_| bad(path, "a CERTIFICATE block is not an X.509 certificate"))?;
            let spki = cert
                .tbs_certificate
                .subject_public_key_info
                .to_der()
                .map_err(|_| bad(path, "a certificate's public key cannot be encoded"))?;
            if RsaPublicKey::from_public_key_der(&spki).is_ok_and(|k| k == public) {
                cert_der = Some(der);
                break;
            }
        }
        let cert_der =
            cert_der.ok_or_else(|| bad(path, "no certificate in it matches its private key"))?;
        let sha1 = Sha1::digest(cert_der);
        let signing_key = if legacy_rs256 {
            SigningKey::Rs256(rsa::pkcs1v15::SigningKey::new(key))
        } else {
            SigningKey::Ps256(rsa::pss::BlindedSigningKey::new(key))
        };
        Ok(ClientCertificate {
            path: path.to_owned(),
            signing_key,
            x5t_s256: URL_SAFE_NO_PAD.encode(Sha256::digest(cert_der)),
            x5t: URL_SAFE_NO_PAD.encode(sha1),
            thumbprint_hex: sha1.iter().map(|b| format!("{b:02X}")).collect(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The SHA-1 thumbprint in hex, to compare with the app registration's
    /// "Certificates & secrets" page.
    pub(crate) fn thumbprint(&self) -> &str {
        &self.thumbprint_hex
    }

    /// `PS256`, or `RS256` with `legacy_rs256`.
    pub(crate) fn algorithm(&self) -> &'static str {
        match self.signing_key {
            SigningKey::Ps256(_) => "PS256",
            SigningKey::Rs256(_) => "RS256",
        }
    }

    /// A client assertion for `client_id` at the token endpoint `audience`,
    /// valid from `now` for ten minutes, with a fresh `jti`.
    pub(crate) fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: Timestamp,
    ) -> Result<String, AuthError> {
        let now = now.unix_seconds();
        let header = match self.signing_key {
            SigningKey::Ps256(_) => {
                serde_json::json!({"alg": "PS256", "typ": "JWT", "x5t#S256": self.x5t_s256})
            }
            SigningKey::Rs256(_) => {
                serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": self.x5t})
            }
        };
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match &self.signing_key {
            SigningKey::Ps256(k) => k
                .try_sign_with_rng(&mut rand::thread_rng(), signing_input.as_bytes())
                .map(|s| s.to_vec()),
            SigningKey::Rs256(k) => k.try_sign(signing_input.as_bytes()).map(|s| s.to_vec()),
        }
        .map_err(|_| bad(&self.path, "signing the client assertion failed"))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// Names the file and thumbprint, never the key.
impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("path", &self.path)
            .field("thumbprint", &self.thumbprint_hex)
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rsa::signature::Verifier;
    use std::process::Command;

    /// A self-signed certificate and key made by the `openssl` CLI:
    /// `(one PEM with a PKCS#8 key, one PEM with a PKCS#1 key, the cert's DER)`.
    pub(crate) struct TestCert {
        pub dir: tempfile::TempDir,
        pub pkcs8: PathBuf,
        pub pkcs1: PathBuf,
        pub cert_der: Vec<u8>,
    }

    pub(crate) fn test_cert() -> TestCert {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k", "-out", "c", "-subj",
            "/CN=test", "-days", "2",
        ]);
        run(&["rsa", "-traditional", "-in", "k", "-out", "k1"]);
        let cert = std::fs::read_to_string(p("c")).unwrap();
        let k8 = std::fs::read_to_string(p("k")).unwrap();
        let k1 = std::fs::read_to_string(p("k1")).unwrap();
        assert!(k8.contains("BEGIN PRIVATE KEY") && k1.contains("BEGIN RSA PRIVATE KEY"));
        std::fs::write(p("pkcs8.pem"), format!("{cert}{k8}")).unwrap();
        // Key first this time: the order of blocks must not matter.
        std::fs::write(p("pkcs1.pem"), format!("{k1}{cert}")).unwrap();
        let cert_der = pem::parse(cert).unwrap().into_contents();
        TestCert {
            pkcs8: p("pkcs8.pem"),
            pkcs1: p("pkcs1.pem"),
            cert_der,
            dir,
        }
    }

    fn b64json(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    /// Checks `jwt` as Entra would: signature with the certificate's public
    /// key, thumbprint header, claims. Returns (header, claims).
    pub(crate) fn verify_assertion(
        jwt: &str,
        cert_der: &[u8],
    ) -> (serde_json::Value, serde_json::Value) {
        let cert = x509_cert::Certificate::from_der(cert_der).unwrap();
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap();
        let public = RsaPublicKey::from_public_key_der(&spki).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let (header, claims) = (b64json(parts[0]), b64json(parts[1]));
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        match header["alg"].as_str().unwrap() {
            "PS256" => {
                let sig = rsa::pss::Signature::try_from(sig.as_slice()).unwrap();
                rsa::pss::VerifyingKey::<Sha256>::new(public)
                    .verify(signing_input.as_bytes(), &sig)
                    .expect("PS256 signature verifies with the certificate's key");
                assert_eq!(
                    header["x5t#S256"],
                    URL_SAFE_NO_PAD.encode(Sha256::digest(cert_der))
                );
                assert!(header.get("x5t").is_none());
            }
            "RS256" => {
                let sig = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap();
                rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public)
                    .verify(signing_input.as_bytes(), &sig)
                    .expect("RS256 signature verifies with the certificate's key");
                assert_eq!(
                    header["x5t"],
                    URL_SAFE_NO_PAD.encode(Sha1::digest(cert_der))
                );
                assert!(header.get("x5t#S256").is_none());
            }
            other => panic!("unexpected alg {other}"),
        }
        assert_eq!(header["typ"], "JWT");
        (header, claims)
    }

    #[test]
    fn ps256_assertion_verifies_and_carries_the_claims_entra_wants() {
        let t = test_cert();
        let cert = ClientCertificate::load(&t.pkcs8, false).unwrap();
        let now = Timestamp::now();
        let aud = "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token";
        let jwt = cert.assertion("app-id", aud, now).unwrap();
        let (header, claims) = verify_assertion(&jwt, &t.cert_der);
        assert_eq!(header["alg"], "PS256");
        assert_eq!(claims["aud"], aud);
        assert_eq!(claims["iss"], "app-id");
        assert_eq!(claims["sub"], "app-id");
        let n = now.unix_seconds();
        assert_eq!(claims["iat"], n);
        assert_eq!(claims["nbf"], n);
        assert_eq!(claims["exp"], n + 600);
        let jti = claims["jti"].as_str().unwrap();
        assert_eq!(uuid::Uuid::parse_str(jti).unwrap().get_version_num(), 4);
        // A fresh jti each time: Entra refuses a replayed assertion.
        let (_, again) =
            verify_assertion(&cert.assertion("app-id", aud, now).unwrap(), &t.cert_der);
        assert_ne!(again["jti"], claims["jti"]);
    }

    #[test]
    fn legacy_rs256_assertion_from_a_pkcs1_key_verifies() {
        let t = test_cert();
        let cert = ClientCertificate::load(&t.pkcs1, true).unwrap();
        assert_eq!(cert.algorithm(), "RS256");
        let jwt = cert
            .assertion(
                "app-id",
                "https://login.example/t/oauth2/v2.0/token",
                Timestamp::now(),
            )
            .unwrap();
        let (header, claims) = verify_assertion(&jwt, &t.cert_der);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(claims["iss"], "app-id");
        let hex: String = Sha1::digest(&t.cert_der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(cert.thumbprint(), hex);
    }

    #[test]
    fn unusable_files_are_errors_naming_the_path_without_key_material() {
        let t = test_cert();
        let text = std::fs::read_to_string(&t.pkcs8).unwrap();
        let cert_only: String = text
            .split("-----BEGIN PRIVATE KEY")
            .next()
            .unwrap()
            .to_owned();
        let key_only = format!(
            "-----BEGIN PRIVATE KEY{}",
            text.split("-----BEGIN PRIVATE KEY").nth(1).unwrap()
        );
        let other = test_cert();
        let other_cert = std::fs::read_to_string(&other.pkcs8).unwrap();
        let mismatched = format!(
            "{}{key_only}",
            other_cert.split("-----BEGIN PRIVATE KEY").next().unwrap()
        );
        let corrupt = text.replace("BEGIN PRIVATE KEY-----\n", "BEGIN PRIVATE KEY-----\nAAAA");
        let cases = [
            ("cert-only.pem", cert_only, "no private key"),
            ("key-only.pem", key_only.clone(), "no CERTIFICATE"),
            ("mismatch.pem", mismatched, "matches its private key"),
            ("corrupt.pem", corrupt, ""),
            ("empty.pem", String::new(), "no private key"),
        ];
        let key_body: String = key_only.lines().nth(3).unwrap().to_owned();
        for (name, content, expect) in cases {
            let path = t.dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let e = ClientCertificate::load(&path, false).unwrap_err();
            let text = format!("{e} {e:?}");
            assert!(e.is_persistent(), "{name}");
            assert!(text.contains(name), "{name}: {text}");
            assert!(text.contains(expect), "{name}: {text}");
            assert!(
                !text.contains(&key_body),
                "{name} leaks key material: {text}"
            );
        }
        let missing = ClientCertificate::load(&t.dir.path().join("nope.pem"), false).unwrap_err();
        assert!(missing.to_string().contains("nope.pem"));
    }

    #[test]
    fn debug_shows_path_and_thumbprint_only() {
        let t = test_cert();
        let cert = ClientCertificate::load(&t.pkcs8, false).unwrap();
        let shown = format!("{cert:?}");
        assert!(shown.contains("pkcs8.pem") && shown.contains(cert.thumbprint()));
        assert!(!shown.to_lowercase().contains("prime") && !shown.contains("BigUint"));
    }
}
