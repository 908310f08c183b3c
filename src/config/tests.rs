//! The config unit tests: each loads a whole file in a `figment::Jail` (its
//! own folder and environment) and checks what an operator would see.

// figment::Jail closures return figment::Error, which is large; not ours to box.
#![allow(clippy::result_large_err)]
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::credentials::CREDENTIALS_DIRECTORY;
use super::layers::ENV_PREFIX;
use super::*;
use crate::output::AlertSource;
use figment::Jail;
use secrecy::ExposeSecret;
use std::os::unix::fs::PermissionsExt;

const TENANT_A: &str = "11111111-1111-1111-1111-111111111111";
const TENANT_B: &str = "22222222-2222-2222-2222-222222222222";
const CLIENT: &str = "00000000-0000-0000-0000-0000000000aa";
const SECRET: &str = "s3cr3t~value.from-file";

/// A jail whose environment holds none of the caller's `MDE_POLLER_*`
/// or `CREDENTIALS_DIRECTORY` (restored when the jail drops).
fn jail(f: impl FnOnce(&mut Jail) -> figment::error::Result<()>) {
    Jail::expect_with(|j| {
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.to_ascii_uppercase().starts_with(ENV_PREFIX) || k == CREDENTIALS_DIRECTORY {
                unset(j, &k);
            }
        }
        f(j)
    })
}

fn unset(j: &mut Jail, key: &str) {
    j.set_env(key, ""); // remembers the old value for the jail's drop
    std::env::remove_var(key);
}

/// A secret file readable by its owner only.
fn secret_file(j: &Jail, name: &str, content: &str) -> PathBuf {
    let path = j.directory().join(name);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn config(j: &Jail, text: &str) {
    j.create_file("config.toml", text).unwrap();
}

fn load_ok() -> Settings {
    load(Path::new("config.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn load_err() -> ConfigError {
    match load(Path::new("config.toml")) {
        Ok(_) => panic!("config loaded, expected an error"),
        Err(e) => e,
    }
}

fn minimal() -> String {
    format!(
        "[app]\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"secret\"\n\n\
         [tenants.contoso]\ntenant_id = \"{TENANT_A}\"\n"
    )
}

fn tenant<'a>(s: &'a Settings, name: &str) -> &'a TenantSettings {
    s.tenants.iter().find(|t| t.name == name).expect("tenant")
}

fn secret(t: &TenantSettings) -> String {
    match &t.credential {
        Credential::Secret(s) => s.expose_secret().to_owned(),
        Credential::Certificate { .. } => panic!("expected a secret"),
    }
}

#[test]
fn keys_left_out_take_the_documented_defaults() {
    jail(|j| {
        secret_file(j, "secret", &format!("{SECRET}\n"));
        config(j, &minimal());
        let s = load_ok();
        assert_eq!(
            s.poll,
            PollSettings {
                interval: Duration::from_secs(300),
                schedule: None,
                lookback: Duration::from_secs(15 * 60),
                first_lookback: Duration::from_secs(24 * 3600),
                page_size: 1000,
                concurrency: 8,
                timeout: Duration::from_secs(30),
                expand_evidence: false,
            }
        );
        assert_eq!(s.store.path, PathBuf::from("/var/lib/mde-poller/state.db"));
        assert_eq!(s.store.retention, Duration::from_secs(90 * 86400));
        assert_eq!(s.output.format, OutputFormat::Raw);
        assert_eq!(s.output.target, OutputTarget::Stdout);
        assert_eq!(s.log.level, "info");
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(
            s.http.user_agent,
            format!("mde-poller/{}", env!("CARGO_PKG_VERSION"))
        );
        assert!(s.http.ca_bundle.is_none());
        let t = tenant(&s, "contoso");
        assert!(t.enabled);
        assert_eq!(t.client_id, CLIENT);
        assert_eq!(
            secret(t),
            SECRET,
            "trailing newline is not part of the secret"
        );
        assert_eq!(
            t.token_request().token_url(),
            format!("https://login.microsoftonline.com/{TENANT_A}/oauth2/v2.0/token")
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        Ok(())
    });
}

#[test]
fn an_empty_file_loads_with_a_warning_that_nothing_is_polled() {
    jail(|j| {
        config(j, "");
        let s = load_ok();
        assert!(s.tenants.is_empty());
        assert!(s.warnings.iter().any(|w| w.contains("nothing to poll")));
        Ok(())
    });
}

#[test]
fn environment_overrides_the_file_and_can_disable_a_tenant() {
    jail(|j| {
        secret_file(j, "secret", SECRET);
        config(j, &format!("{}\n[poll]\ninterval = \"10m\"\n", minimal()));
        j.set_env("MDE_POLLER_POLL__INTERVAL", "1m");
        j.set_env("MDE_POLLER_POLL__PAGE_SIZE", "500");
        j.set_env("MDE_POLLER_OUTPUT__FORMAT", "ecs");
        j.set_env("MDE_POLLER_TENANTS__CONTOSO__ENABLED", "false");
        j.set_env("MDE_POLLER_CONFIG", "/somewhere/else.toml");
        let s = load_ok();
        assert_eq!(s.poll.interval, Duration::from_secs(60));
        assert_eq!(s.poll.page_size, 500);
        assert_eq!(s.output.format, OutputFormat::Ecs);
        assert!(!tenant(&s, "contoso").enabled);
        assert_eq!(s.enabled_tenants().count(), 0);
        assert!(
            s.warnings.is_empty(),
            "MDE_POLLER_CONFIG is the CLI's, not a key: {:?}",
            s.warnings
        );
        Ok(())
    });
}

#[test]
fn environment_variable_matching_no_key_is_warned_not_fatal() {
    jail(|j| {
        secret_file(j, "secret", SECRET);
        config(j, &minimal());
        j.set_env("MDE_POLLER_POLL__INTERVALL", "1m");
        j.set_env("MDE_POLLER_BOGUS", "1");
        j.set_env("MDE_POLLER_TENANTS__FABRIKAM__ENABLED", "false");
        let s = load_ok();
        for var in [
            "MDE_POLLER_POLL__INTERVALL",
            "MDE_POLLER_BOGUS",
            "MDE_POLLER_TENANTS__FABRIKAM__ENABLED",
        ] {
            assert!(
                s.warnings.iter().any(|w| w.contains(var)),
                "{var} not warned: {:?}",
                s.warnings
            );
        }
        assert_eq!(
            s.tenants.len(),
            1,
            "no tenant is made up from a stray variable"
        );
        Ok(())
    });
}

#[test]
fn environment_can_add_a_whole_tenant() {
    jail(|j| {
        secret_file(j, "secret", SECRET);
        config(j, &minimal());
        j.set_env("MDE_POLLER_TENANTS__FABRIKAM__TENANT_ID", TENANT_B);
        let s = load_ok();
        assert_eq!(tenant(&s, "fabrikam").tenant_id, TENANT_B);
        Ok(())
    });
}

#[test]
fn bad_environment_value_names_the_variable() {
    jail(|j| {
        secret_file(j, "secret", SECRET);
        config(j, &minimal());
        j.set_env("MDE_POLLER_POLL__PAGE_SIZE", "0");
        j.set_env("MDE_POLLER_POLL__TIMEOUT", "30");
        let e = load_err();
        let p = e.problem("poll.page_size").expect("page_size problem");
        assert!(p.message.contains("MDE_POLLER_POLL__PAGE_SIZE"), "{p}");
        let p = e.problem("poll.timeout").expect("timeout problem");
        assert!(p.message.contains("MDE_POLLER_POLL__TIMEOUT"), "{p}");
        Ok(())
    });
}

/// Each case is a whole config file and the key its problem must name.
#[test]
fn every_problem_names_its_key() {
    let ok_tenant = format!("[tenants.contoso]\ntenant_id = \"{TENANT_A}\"\n");
    let ok_app = format!("[app]\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"secret\"\n");
    let base = format!("{ok_app}\n{ok_tenant}");
    let with = |extra: &str| format!("{extra}\n{base}");
    let cases: Vec<(&str, String, &str)> = vec![
        ("cloud", format!("cloud = \"azure\"\n{base}"), "cloud"),
        ("bad duration", with("[poll]\ninterval = \"soon\""), "poll.interval"),
        ("interval under 1s", with("[poll]\ninterval = \"500ms\""), "poll.interval"),
        ("lookback", with("[poll]\nlookback = \"a while\""), "poll.lookback"),
        ("first_lookback 0", with("[poll]\nfirst_lookback = \"0s\""), "poll.first_lookback"),
        ("page_size 0", with("[poll]\npage_size = 0"), "poll.page_size"),
        ("page_size big", with("[poll]\npage_size = 10001"), "poll.page_size"),
        ("concurrency 0", with("[poll]\nconcurrency = 0"), "poll.concurrency"),
        ("timeout 0", with("[poll]\ntimeout = \"0s\""), "poll.timeout"),
        ("cron 5 fields", with("[poll]\nschedule = \"*/5 * * * *\""), "poll.schedule"),
        ("cron bad", with("[poll]\nschedule = \"99 * * * * *\""), "poll.schedule"),
        ("retention", with("[store]\nretention = \"ninety days\""), "store.retention"),
        ("store path", with("[store]\npath = \"\""), "store.path"),
        ("output format", with("[output]\nformat = \"csv\""), "output.format"),
        ("log format", with("[log]\nformat = \"xml\""), "log.format"),
        ("log level", with("[log]\nlevel = \"mde_poller=loud\""), "log.level"),
        ("login http", with("[endpoints]\nlogin_url = \"http://login.microsoftonline.com\""), "endpoints.login_url"),
        ("api not url", with("[endpoints]\napi_url = \"api.securitycenter.microsoft.com\""), "endpoints.api_url"),
        ("scope http", with("[endpoints]\ntoken_scope = \"http://api.example.com/.default\""), "endpoints.token_scope"),
        ("proxy scheme", with("[http]\nproxy = \"ftp://proxy.corp:21\""), "http.proxy"),
        ("ca_file missing", with("[http]\nca_file = \"corp-ca.pem\""), "http.ca_file"),
        ("partner space", format!("[app]\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"secret\"\npartner = \"Contoso Ltd\"\n{ok_tenant}"), "app.partner"),
        ("partner empty", format!("[app]\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"secret\"\npartner = \"\"\n{ok_tenant}"), "app.partner"),
        ("app client_id", format!("[app]\nclient_id = \"not-a-guid\"\nclient_secret_file = \"secret\"\n{ok_tenant}"), "app.client_id"),
        ("no client_id", format!("[app]\nclient_secret_file = \"secret\"\n{ok_tenant}"), "tenants.contoso.client_id"),
        ("tenant client_id", format!("{base}client_id = \"xyz\"\nclient_secret_file = \"secret\"\n"), "tenants.contoso.client_id"),
        ("tenant id", format!("{ok_app}[tenants.contoso]\ntenant_id = \"contoso.onmicrosoft.com\"\n"), "tenants.contoso.tenant_id"),
        ("tenant id missing", format!("{ok_app}[tenants.contoso]\nenabled = true\n"), "tenants.contoso.tenant_id"),
        ("tenant name", format!("{ok_app}[tenants.Contoso]\ntenant_id = \"{TENANT_A}\"\n"), "tenants.Contoso"),
        ("tenant name empty", format!("{ok_app}[tenants.\"\"]\ntenant_id = \"{TENANT_A}\"\n"), "tenants."),
        ("duplicate id", format!("{base}[tenants.second]\ntenant_id = \"{}\"\n", TENANT_A.to_uppercase()), "tenants.second.tenant_id"),
        ("tenant api http", format!("{base}api_url = \"http://eu.api.security.microsoft.com\"\n"), "tenants.contoso.api_url"),
        ("no credential", format!("[app]\nclient_id = \"{CLIENT}\"\n{ok_tenant}"), "tenants.contoso"),
        ("own app no credential", format!("{base}client_id = \"{}\"\n", TENANT_B), "tenants.contoso"),
        ("secret file missing", format!("[app]\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"nope\"\n{ok_tenant}"), "app.client_secret_file"),
        ("secret file empty", format!("[app]\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"empty\"\n{ok_tenant}"), "app.client_secret_file"),
        ("tenant secret file missing", format!("{base}client_secret_file = \"/nonexistent/secret\"\n"), "tenants.contoso.client_secret_file"),
        ("certificate missing", format!("[app]\nclient_id = \"{CLIENT}\"\ncertificate_file = \"app.pem\"\n{ok_tenant}"), "app.certificate_file"),
        ("certificate and secret", format!("[app]\nclient_id = \"{CLIENT}\"\ncertificate_file = \"secret\"\nclient_secret = \"x\"\n{ok_tenant}"), "app.certificate_file"),
        ("credential w/o dir", format!("[app]\nclient_id = \"{CLIENT}\"\nclient_secret_credential = \"client-secret\"\n{ok_tenant}"), "app.client_secret_credential"),
        ("unknown poll key", with("[poll]\nintervall = \"5m\""), "poll.intervall"),
        ("unknown section", with("[polling]\ninterval = \"5m\""), "polling"),
        ("unknown tenant key", format!("{base}tenantid = \"x\"\n"), "tenants.contoso.tenantid"),
        ("wrong type", format!("{base}enabled = \"no\"\n"), "tenants.contoso.enabled"),
    ];
    for (name, text, key) in cases {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            secret_file(j, "empty", "\n");
            config(j, &text);
            let e = load_err();
            assert!(
                e.problem(key).is_some(),
                "case {name:?}: no problem for {key}; got:\n{e}"
            );
            let shown = e.to_string();
            assert!(shown.contains("config.toml"), "case {name:?}: {shown}");
            assert!(!shown.contains(SECRET), "case {name:?} leaks the secret");
            Ok(())
        });
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    jail(|j| {
        secret_file(j, "secret", SECRET);
        config(
            j,
            &format!(
                "cloud = \"mars\"\n[poll]\nintervall = \"1m\"\npage_size = 0\ntimeout = \"x\"\n\
                 [output]\nformatt = \"raw\"\n{}",
                minimal()
            ),
        );
        let e = load_err();
        for key in [
            "cloud",
            "poll.intervall",
            "poll.page_size",
            "poll.timeout",
            "output.formatt",
        ] {
            assert!(e.problem(key).is_some(), "{key} missing from:\n{e}");
        }
        Ok(())
    });
}

#[test]
fn toml_syntax_error_shows_the_line_but_not_its_text() {
    jail(|j| {
        config(
            j,
            "[app]\nclient_id = \"x\"\nclient_secret = \"hunter2-not-closed\n[poll]\n",
        );
        let e = load_err();
        let shown = e.to_string();
        assert!(shown.contains("line 3"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(e.problems[0].key, FILE_KEY);
        Ok(())
    });
}

#[test]
fn missing_file_is_an_error_naming_the_path() {
    jail(|_| {
        let e = load(Path::new("nowhere/config.toml")).unwrap_err();
        assert!(e.file.ends_with("nowhere/config.toml"));
        assert!(e.to_string().contains("nowhere/config.toml"), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
        Ok(())
    });
}

#[test]
fn secret_sources_follow_credential_file_env_inline_order() {
    jail(|j| {
        let creds = j.directory().join("creds");
        secret_file(j, "creds/mine", "from-credential\n");
        secret_file(j, "secret", "from-file\n");
        j.set_env(CREDENTIALS_DIRECTORY, creds.display());
        j.set_env("MDE_POLLER_APP__CLIENT_SECRET", "from-env");
        let tenant = format!("[tenants.contoso]\ntenant_id = \"{TENANT_A}\"\n");
        let app = |keys: &str| format!("[app]\nclient_id = \"{CLIENT}\"\n{keys}\n{tenant}");

        config(j, &app("client_secret_credential = \"mine\"\nclient_secret_file = \"secret\"\nclient_secret = \"from-inline\""));
        let s = load_ok();
        assert_eq!(secret(tenant_of(&s)), "from-credential");
        assert!(s
            .warnings
            .iter()
            .any(|w| w.contains("app.client_secret_file is ignored")));

        config(
            j,
            &app("client_secret_file = \"secret\"\nclient_secret = \"from-inline\""),
        );
        assert_eq!(secret(tenant_of(&load_ok())), "from-file");

        config(j, &app("client_secret = \"from-inline\""));
        assert_eq!(secret(tenant_of(&load_ok())), "from-env");

        unset(j, "MDE_POLLER_APP__CLIENT_SECRET");
        let s = load_ok();
        assert_eq!(secret(tenant_of(&s)), "from-inline");
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("app.client_secret is written inline")),
            "{:?}",
            s.warnings
        );
        assert!(s.warnings.iter().all(|w| !w.contains("from-inline")));
        Ok(())
    });
}

fn tenant_of(s: &Settings) -> &TenantSettings {
    tenant(s, "contoso")
}

#[test]
fn secret_from_environment_is_taken_verbatim_without_warning() {
    jail(|j| {
        config(
            j,
            &format!(
                "[app]\nclient_id = \"{CLIENT}\"\n[tenants.contoso]\ntenant_id = \"{TENANT_A}\"\n"
            ),
        );
        j.set_env("MDE_POLLER_APP__CLIENT_SECRET", "000123");
        let s = load_ok();
        assert_eq!(secret(tenant_of(&s)), "000123");
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        Ok(())
    });
}

#[test]
fn systemd_credentials_are_found_by_convention_per_app_and_per_tenant() {
    jail(|j| {
        let creds = j.directory().join("creds");
        secret_file(j, "creds/client-secret", "app-secret");
        secret_file(j, "creds/client-secret-fabrikam", "fabrikam-secret");
        j.set_env(CREDENTIALS_DIRECTORY, creds.display());
        config(
            j,
            &format!(
                "[app]\nclient_id = \"{CLIENT}\"\n\
                 [tenants.contoso]\ntenant_id = \"{TENANT_A}\"\n\
                 [tenants.fabrikam]\ntenant_id = \"{TENANT_B}\"\n"
            ),
        );
        let s = load_ok();
        assert_eq!(secret(tenant(&s, "contoso")), "app-secret");
        assert_eq!(secret(tenant(&s, "fabrikam")), "fabrikam-secret");
        Ok(())
    });
}

/// A self-signed certificate `c.pem` and its key `k.pem` in the jail.
fn openssl_cert(j: &Jail) {
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=t", "-days", "2",
        ])
        .args(["-keyout", "k.pem", "-out", "c.pem"])
        .current_dir(j.directory())
        .output()
        .expect("openssl runs");
    assert!(made.status.success());
}

/// The bundle is read and parsed by `load`; building the HTTP client reads
/// no file (it once parsed the bundle a second time).
#[test]
fn ca_bundle_is_parsed_at_load_and_the_client_needs_no_file() {
    jail(|j| {
        secret_file(j, "secret", SECRET);
        openssl_cert(j);
        config(j, &format!("[http]\nca_file = \"c.pem\"\n{}", minimal()));
        let s = load_ok();
        let bundle = s.http.ca_bundle.as_ref().expect("a bundle");
        assert_eq!(bundle.path, j.directory().join("c.pem"));
        assert_eq!(bundle.certificates.len(), 1);
        std::fs::remove_file(j.directory().join("c.pem")).unwrap();
        crate::http::client(&s.http, Duration::from_secs(5)).expect("client without the file");
        Ok(())
    });
}

/// One check for every file the config names: a folder where a file should
/// be is named as such, for the config file itself and for a secret file.
#[test]
fn a_folder_where_a_file_belongs_is_named() {
    jail(|j| {
        j.create_dir("config.toml")?;
        let e = load_err();
        assert_eq!(e.problems[0].key, "(file)");
        assert!(e.problems[0].message.contains("is not a file"), "{e}");
        Ok(())
    });
    jail(|j| {
        j.create_dir("secret")?;
        config(j, &minimal());
        let p = load_err();
        let p = p
            .problem("app.client_secret_file")
            .expect("secret file problem");
        assert!(p.message.contains("secret is not a file"), "{p}");
        Ok(())
    });
}

#[test]
fn tenant_credential_replaces_the_apps_as_a_whole() {
    jail(|j| {
        secret_file(j, "secret", SECRET);
        // A real certificate and key: the file is parsed at load.
        openssl_cert(j);
        let pem = std::fs::read_to_string(j.directory().join("c.pem")).unwrap()
            + &std::fs::read_to_string(j.directory().join("k.pem")).unwrap();
        secret_file(j, "fabrikam.pem", &pem);
        config(
            j,
            &format!(
                "[app]\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"secret\"\ncertificate_legacy_rs256 = true\n\
                 [tenants.contoso]\ntenant_id = \"{TENANT_A}\"\n\
                 [tenants.fabrikam]\ntenant_id = \"{TENANT_B}\"\nclient_id = \"{}\"\ncertificate_file = \"fabrikam.pem\"\n",
                TENANT_B.replace('2', "3").to_uppercase()
            ),
        );
        let s = load_ok();
        let f = tenant(&s, "fabrikam");
        assert_eq!(f.client_id, "33333333-3333-3333-3333-333333333333");
        match &f.credential {
            Credential::Certificate(c) => {
                assert_eq!(c.path(), j.directory().join("fabrikam.pem"));
                assert_eq!(c.algorithm(), "RS256", "legacy_rs256 comes from [app]");
            }
            Credential::Secret(_) => panic!("fabrikam uses its certificate"),
        }
        assert_eq!(secret(tenant(&s, "contoso")), SECRET);
        Ok(())
    });
}

#[test]
fn secret_file_readable_by_others_is_warned_about() {
    jail(|j| {
        let path = secret_file(j, "secret", SECRET);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        config(j, &minimal());
        let s = load_ok();
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains(&path.display().to_string()) && w.contains("0644")),
            "{:?}",
            s.warnings
        );
        Ok(())
    });
}

#[test]
fn cloud_presets_and_endpoint_overrides() {
    let cases = [
        (
            "global",
            "https://login.microsoftonline.com",
            "https://api.securitycenter.microsoft.com",
        ),
        (
            "gcc",
            "https://login.microsoftonline.com",
            "https://api-gcc.securitycenter.microsoft.us",
        ),
        (
            "gcc-high",
            "https://login.microsoftonline.us",
            "https://api-gov.securitycenter.microsoft.us",
        ),
        (
            "dod",
            "https://login.microsoftonline.us",
            "https://api-gov.securitycenter.microsoft.us",
        ),
    ];
    for (cloud, login, api) in cases {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            config(j, &format!("cloud = \"{cloud}\"\n{}", minimal()));
            let s = load_ok();
            let t = tenant_of(&s);
            assert_eq!(
                (t.login_url.as_str(), t.api_url.as_str()),
                (login, api),
                "{cloud}"
            );
            assert_eq!(t.token_scope, format!("{api}/.default"), "{cloud}");
            Ok(())
        });
    }
    jail(|j| {
        secret_file(j, "secret", SECRET);
        config(
            j,
            &format!(
                "[endpoints]\nlogin_url = \"https://login.example.net/\"\napi_url = \"https://us.api.security.microsoft.com/\"\n{}\
                 [tenants.fabrikam]\ntenant_id = \"{TENANT_B}\"\napi_url = \"https://eu.api.security.microsoft.com/\"\n",
                minimal()
            ),
        );
        let s = load_ok();
        let c = tenant(&s, "contoso");
        assert_eq!(c.login_url, "https://login.example.net");
        assert_eq!(c.api_url, "https://us.api.security.microsoft.com");
        let f = tenant(&s, "fabrikam");
        assert_eq!(f.api_url, "https://eu.api.security.microsoft.com");
        assert_eq!(
            f.token_scope,
            "https://api.securitycenter.microsoft.com/.default"
        );
        Ok(())
    });
}

#[test]
fn plain_http_is_allowed_to_loopback_hosts_only() {
    for (url, ok) in [
        ("http://127.0.0.1:8080/", true),
        ("http://127.1.2.3", true),
        ("http://[::1]:9000", true),
        ("http://localhost:3000", true),
        ("https://api.example.com", true),
        ("http://api.example.com", false),
        ("http://10.0.0.1", false),
    ] {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            config(
                j,
                &format!(
                    "[endpoints]\napi_url = \"{url}\"\nlogin_url = \"{url}\"\n{}",
                    minimal()
                ),
            );
            let result = load(Path::new("config.toml"));
            assert_eq!(
                result.is_ok(),
                ok,
                "{url}: {:?}",
                result.err().map(|e| e.to_string())
            );
            if let Ok(s) = result {
                assert!(!tenant_of(&s).api_url.ends_with('/'));
            }
            Ok(())
        });
    }
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    jail(|j| {
        secret_file(j, "etc/secret", SECRET);
        j.create_dir("elsewhere")?;
        j.create_file(
            "etc/config.toml",
            &format!(
                "{}\n[store]\npath = \"state/db.sqlite\"\n[output]\npath = \"out/alerts.ndjson\"\n",
                minimal()
            ),
        )?;
        j.change_dir("elsewhere")?;
        let s = load(Path::new("../etc/config.toml")).unwrap_or_else(|e| panic!("{e}"));
        let etc = j.directory().join("elsewhere/../etc");
        assert_eq!(s.store.path, etc.join("state/db.sqlite"));
        assert_eq!(
            s.output.target,
            OutputTarget::File(etc.join("out/alerts.ndjson"))
        );
        assert_eq!(secret(tenant_of(&s)), SECRET);
        Ok(())
    });
}

#[test]
fn partner_sets_the_user_agent() {
    jail(|j| {
        secret_file(j, "secret", SECRET);
        config(
            j,
            &minimal().replace("[app]\n", "[app]\npartner = \"Contoso\"\n"),
        );
        let s = load_ok();
        assert_eq!(
            s.http.user_agent,
            format!("MdePartner-Contoso-MdePoller/{}", env!("CARGO_PKG_VERSION"))
        );
        Ok(())
    });
}

#[test]
fn tenant_ids_are_lower_cased() {
    jail(|j| {
        secret_file(j, "secret", SECRET);
        config(
            j,
            &minimal().replace(TENANT_A, "ABCDEF01-2345-6789-ABCD-EF0123456789"),
        );
        assert_eq!(
            tenant_of(&load_ok()).tenant_id,
            "abcdef01-2345-6789-abcd-ef0123456789"
        );
        Ok(())
    });
}

/// An alert forgotten by the store but still inside a poll's reach would be
/// emitted again as new on every restart (issue 8, case 6).
#[test]
fn retention_shorter_than_a_lookback_is_an_error_naming_both_keys() {
    let cases = [
        // (retention, lookback, first_lookback, the reach named or None if fine)
        ("1h", "15m", "24h", Some("poll.first_lookback")),
        ("90m", "2h", "1h", Some("poll.lookback")),
        ("10m", "15m", "5m", Some("poll.lookback")),
        ("24h", "15m", "24h", None),
        ("90d", "0s", "24h", None),
    ];
    for (retention, lookback, first_lookback, named) in cases {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            config(
                j,
                &format!(
                    "[poll]\nlookback = \"{lookback}\"\nfirst_lookback = \"{first_lookback}\"\n\
                     [store]\nretention = \"{retention}\"\n{}",
                    minimal()
                ),
            );
            let result = load(Path::new("config.toml"));
            match (named, result) {
                (None, Ok(s)) => assert_eq!(
                    s.store.retention,
                    humantime::parse_duration(retention).unwrap()
                ),
                (None, Err(e)) => panic!("retention {retention} refused: {e}"),
                (Some(_), Ok(_)) => {
                    panic!("retention {retention} < {lookback}/{first_lookback} accepted")
                }
                (Some(reach), Err(e)) => {
                    let p = e
                        .problem("store.retention")
                        .unwrap_or_else(|| panic!("{e}"));
                    assert!(p.message.contains(reach), "{retention}: {p}");
                    assert_eq!(e.problems.len(), 1, "{e}");
                }
            }
            Ok(())
        });
    }
}

#[test]
fn valid_cron_schedule_is_kept() {
    jail(|j| {
        secret_file(j, "secret", SECRET);
        config(
            j,
            &format!("[poll]\nschedule = \"0 */5 * * * *\"\n{}", minimal()),
        );
        assert_eq!(load_ok().poll.schedule.as_deref(), Some("0 */5 * * * *"));
        Ok(())
    });
}

#[test]
fn debug_output_and_errors_hide_secrets() {
    jail(|j| {
        secret_file(j, "secret", SECRET);
        config(
            j,
            &format!(
                "{}[tenants.fabrikam]\ntenant_id = \"{TENANT_B}\"\nclient_secret = \"inline-hunter2\"\n",
                minimal()
            ),
        );
        j.set_env("MDE_POLLER_TENANTS__CONTOSO__CLIENT_SECRET", "env-hunter3");
        let s = load_ok();
        let shown = format!("{s:?}");
        for leak in [SECRET, "inline-hunter2", "env-hunter3"] {
            assert!(!shown.contains(leak), "{leak} in {shown}");
            assert!(s.warnings.iter().all(|w| !w.contains(leak)));
        }
        assert_eq!(secret(tenant(&s, "contoso")), "env-hunter3");

        // An error about the tenants does not quote them either.
        j.set_env("MDE_POLLER_TENANTS__CONTOSO__TENANT_ID", "env-hunter3");
        let e = load_err();
        assert!(!e.to_string().contains("inline-hunter2"));
        Ok(())
    });
}

#[test]
fn example_config_loads() {
    jail(|j| {
        config(j, include_str!("../../config/example.toml"));
        let creds = j.directory().join("creds");
        secret_file(j, "creds/client-secret", "app-secret");
        secret_file(j, "creds/fabrikam-client-secret", "fabrikam-secret");
        j.set_env(CREDENTIALS_DIRECTORY, creds.display());
        let s = load_ok();
        assert_eq!(s.tenants.len(), 2);
        assert!(s
            .tenants
            .iter()
            .all(|t| matches!(t.credential, Credential::Secret(_))));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        // The example shows both sources: contoso moved to Graph.
        assert_eq!(tenant(&s, "contoso").source, AlertSource::Graph);
        assert_eq!(tenant(&s, "fabrikam").source, AlertSource::Mde);
        Ok(())
    });
}

#[test]
fn graph_token_scope_and_host_follow_the_cloud() {
    for (cloud, host) in [
        ("global", "https://graph.microsoft.com"),
        ("gcc", "https://graph.microsoft.com"),
        ("gcc-high", "https://graph.microsoft.us"),
        ("dod", "https://dod-graph.microsoft.us"),
    ] {
        jail(|j| {
            secret_file(j, "secret", SECRET);
            config(
                j,
                &format!(
                    "cloud = \"{cloud}\"\n[poll]\nsource = \"graph\"\n{}",
                    minimal()
                ),
            );
            let s = load_ok();
            let t = tenant(&s, "contoso");
            assert_eq!(t.source, AlertSource::Graph);
            assert_eq!(t.graph_url, host, "{cloud}");
            // The token a Graph tenant asks for is Graph's, not the MDE API's.
            assert_eq!(
                t.token_request().app.scope,
                format!("{host}/.default"),
                "{cloud}"
            );
            Ok(())
        });
    }
}

#[test]
fn source_is_mde_by_default_and_per_tenant_wins() {
    jail(|j| {
        secret_file(j, "secret", SECRET);
        config(
            j,
            &format!(
                "{}[tenants.fabrikam]\ntenant_id = \"{TENANT_B}\"\nsource = \"graph\"\n\
                 [endpoints]\ngraph_scope = \"https://graph.example.com/.default\"\n",
                minimal()
            ),
        );
        let s = load_ok();
        let mde = tenant(&s, "contoso");
        assert_eq!(mde.source, AlertSource::Mde);
        assert_eq!(
            mde.token_request().app.scope,
            "https://api.securitycenter.microsoft.com/.default"
        );
        let graph = tenant(&s, "fabrikam");
        assert_eq!(graph.source, AlertSource::Graph);
        assert_eq!(
            graph.token_request().app.scope,
            "https://graph.example.com/.default"
        );
        assert!(graph.service_sources.is_empty());
        Ok(())
    });
}

#[test]
fn bad_sources_and_service_sources_name_their_keys() {
    jail(|j| {
        secret_file(j, "secret", SECRET);
        config(
            j,
            &format!(
                "[poll]\nsource = \"xdr\"\nservice_sources = [\"microsoftDefenderForEndpoint\", \"MicrosoftDefenderForOffice365\", \"office\"]\n\
                 {}[tenants.fabrikam]\ntenant_id = \"{TENANT_B}\"\nsource = \"grpah\"\n",
                minimal()
            ),
        );
        let e = load_err();
        assert!(e
            .problem("poll.source")
            .unwrap()
            .message
            .contains("mde, graph"));
        assert!(e.problem("tenants.fabrikam.source").is_some(), "{e}");
        let bad: Vec<&Problem> = e
            .problems
            .iter()
            .filter(|p| p.key == "poll.service_sources")
            .collect();
        assert_eq!(bad.len(), 2, "{e}");
        assert!(
            bad[0]
                .message
                .contains("did you mean \"microsoftDefenderForOffice365\""),
            "{}",
            bad[0].message
        );
        Ok(())
    });
}

#[test]
fn service_sources_are_kept_as_graph_spells_them() {
    jail(|j| {
        secret_file(j, "secret", SECRET);
        config(
            j,
            &format!(
                "[poll]\nsource = \"graph\"\nservice_sources = [\"dataLossPrevention\", \"microsoftDefenderForCloud\"]\n{}",
                minimal()
            ),
        );
        let s = load_ok();
        assert_eq!(
            tenant(&s, "contoso").service_sources,
            ["dataLossPrevention", "microsoftDefenderForCloud"]
        );
        Ok(())
    });
}
