//! Every config problem exits 78 (EX_CONFIG) with one message naming the file
//! and the key, from every command.

use crate::common::*;

const GOOD_TENANT: &str =
    "[tenants.contoso]\ntenant_id = \"11111111-1111-4111-8111-111111111111\"\n";

fn base(extra: &str) -> String {
    format!(
        "[app]\nclient_id = \"{APP_ID}\"\nclient_secret_file = \"client-secret\"\n[store]\npath = \"state.db\"\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_config_error_exits_78_naming_its_key() {
    let w = World::new().await;
    let cases: Vec<(&str, String, &str)> = vec![
        ("unknown key", base(&format!("[poll]\nintervall = \"5m\"\n{GOOD_TENANT}")), "poll.intervall"),
        ("bad guid", base("[tenants.contoso]\ntenant_id = \"not-a-guid\"\n"), "tenants.contoso.tenant_id"),
        ("bad tenant name", base("[tenants.Contoso]\ntenant_id = \"11111111-1111-4111-8111-111111111111\"\n"), "tenants.Contoso"),
        ("duration", base(&format!("[poll]\ninterval = \"five minutes\"\n{GOOD_TENANT}")), "poll.interval"),
        ("interval under 1s", base(&format!("[poll]\ninterval = \"500ms\"\n{GOOD_TENANT}")), "poll.interval"),
        ("page size 0", base(&format!("[poll]\npage_size = 0\n{GOOD_TENANT}")), "poll.page_size"),
        ("page size too big", base(&format!("[poll]\npage_size = 10001\n{GOOD_TENANT}")), "poll.page_size"),
        ("http url", base(&format!("[endpoints]\napi_url = \"http://api.example.com\"\n{GOOD_TENANT}")), "endpoints.api_url"),
        ("bad cloud", format!("cloud = \"mars\"\n{}", base(GOOD_TENANT)), "cloud"),
        (
            "duplicate tenant id",
            base("[tenants.a]\ntenant_id = \"11111111-1111-4111-8111-111111111111\"\n[tenants.b]\ntenant_id = \"11111111-1111-4111-8111-111111111111\"\n"),
            "tenant_id",
        ),
        ("toml syntax", base("[poll\ninterval = 5\n"), "line"),
        (
            "certificate that does not parse",
            base(GOOD_TENANT).replace("client_secret_file = \"client-secret\"", "certificate_file = \"half.pem\""),
            "app.certificate_file",
        ),
        ("ca bundle not PEM", base(&format!("[http]\nca_file = \"ca.pem\"\n{GOOD_TENANT}")), "http.ca_file"),
    ];
    std::fs::write(w.path("ca.pem"), "not a certificate").unwrap();
    std::fs::write(w.path("half.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
    for (what, text, key) in cases {
        let path = w.path("bad.toml");
        std::fs::write(&path, &text).unwrap();
        for args in [
            &["check", "--config-only"][..],
            &["once"][..],
            &["run"][..],
            &["status"][..],
        ] {
            let run = w.run(&path, args).await;
            assert_eq!(run.code, Some(78), "{what} with {args:?}: {}", run.stderr);
            assert!(
                run.stderr.contains(key),
                "{what}: the message names {key}: {}",
                run.stderr
            );
            assert!(
                run.stderr.contains("bad.toml"),
                "{what}: the message names the file: {}",
                run.stderr
            );
            assert!(run.stdout.is_empty());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_file_exits_78_naming_the_path() {
    let w = World::new().await;
    let run = w
        .run(&w.path("nowhere.toml"), &["check", "--config-only"])
        .await;
    assert_eq!(run.code, Some(78));
    assert!(run.stderr.contains("nowhere.toml"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_passes_the_offline_check() {
    let w = World::new().await;
    let secrets = w.path("creds");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("client-secret"), "x").unwrap();
    std::fs::write(secrets.join("fabrikam-client-secret"), "y").unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let run = tokio::process::Command::new(bin())
        .args(["--config", example, "check", "--config-only"])
        .env("CREDENTIALS_DIRECTORY", &secrets)
        .output()
        .await
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("config OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_bundle_with_a_certificate_is_accepted() {
    let mut w = World::new().await;
    w.tenant("contoso");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=corp-ca",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(w.path("ca.key"))
        .arg("-out")
        .arg(w.path("ca.pem"))
        .output()
        .expect("openssl runs");
    assert!(made.status.success());
    let config = w.config_with("", "[http]\nca_file = \"ca.pem\"");
    let run = w.run(&config, &["check", "--config-only"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // And the client built with it still reaches the (plain-HTTP loopback) simulator.
    assert_eq!(w.once(&config).await.code, Some(0));
}

/// A store that forgets alerts a poll still reaches would emit them again as
/// new on every restart: refused, naming both keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_shorter_than_the_first_lookback_exits_78_naming_both_keys() {
    let w = World::new().await;
    let text = base(GOOD_TENANT).replace("[store]\n", "[store]\nretention = \"12h\"\n");
    let path = w.path("short.toml");
    std::fs::write(&path, text).unwrap();
    for args in [&["check", "--config-only"][..], &["once"][..]] {
        let run = w.run(&path, args).await;
        assert_eq!(run.code, Some(78), "{args:?}: {}", run.stderr);
        for key in ["store.retention", "poll.first_lookback", "short.toml"] {
            assert!(
                run.stderr.contains(key),
                "{args:?}: no {key}: {}",
                run.stderr
            );
        }
        assert!(run.stdout.is_empty());
    }
}
