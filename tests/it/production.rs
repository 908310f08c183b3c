//! Production on systemd: what `NOTIFY_SOCKET` hears (READY, STATUS, RELOADING,
//! WATCHDOG, STOPPING), certificate credentials end to end, secrets kept out
//! of every artefact, private file modes, and the partner User-Agent.
//!
//! Not covered here: the watchdog being withheld when the scheduler wedges.
//! Wedging the real binary's scheduler from outside takes a fault hook the
//! daemon does not have; SIGSTOP would also stop the watchdog task itself
//! and so proves nothing about the heartbeat check.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mde_poller::sim::{RequestKind, SimApp};
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::common::*;

const POLL: &str = r#"interval = "1s"
lookback = "10m"
first_lookback = "3h"
page_size = 50
timeout = "5s""#;

const LONG: Duration = Duration::from_secs(30);

/// One datagram systemd would have received.
#[derive(Debug, Clone)]
struct Note {
    at: Instant,
    text: String,
    /// Whether every watched file existed when the datagram arrived.
    files_existed: bool,
}

impl Note {
    fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

/// A Unix datagram socket standing in for systemd's `NOTIFY_SOCKET`.
struct NotifySocket {
    path: PathBuf,
    notes: Arc<Mutex<Vec<Note>>>,
    stop: Arc<AtomicBool>,
}

impl NotifySocket {
    /// Binds at `path`; each datagram is stamped with whether `watch` all exist
    /// at that moment (checked on arrival, before anything else happens).
    fn bind(path: PathBuf, watch: Vec<PathBuf>) -> NotifySocket {
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let notes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, s) = (notes.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while !s.load(Ordering::Relaxed) {
                if let Ok(len) = socket.recv(&mut buf) {
                    let files_existed = watch.iter().all(|p| p.exists());
                    n.lock().unwrap().push(Note {
                        at: Instant::now(),
                        text: String::from_utf8_lossy(&buf[..len]).into_owned(),
                        files_existed,
                    });
                }
            }
        });
        NotifySocket { path, notes, stop }
    }

    fn notes(&self) -> Vec<Note> {
        self.notes.lock().unwrap().clone()
    }

    /// The notes from index `from` on that hold `line`.
    fn with(&self, line: &str, from: usize) -> Vec<Note> {
        self.notes()
            .into_iter()
            .skip(from)
            .filter(|n| n.has(line))
            .collect()
    }

    fn position(&self, line: &str, from: usize) -> Option<usize> {
        self.notes()
            .iter()
            .skip(from)
            .position(|n| n.has(line))
            .map(|i| i + from)
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_status_reload_watchdog_and_stopping() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.tenant_with("fabrikam", false, &["Alert.Read.All"]);
    w.sim.generate_alerts(&t, 5, ago(HOUR), ago(MIN));
    let config = w.config(POLL);
    let db = w.path("state/state.db");
    edit_file(&config, "path = \"state.db\"", "path = \"state/state.db\"");
    let socket = NotifySocket::bind(w.path("notify.sock"), vec![db.clone(), w.output_path()]);
    let mut daemon = Daemon::start(
        &config,
        &[
            ("NOTIFY_SOCKET", socket.path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );

    wait_until("READY=1", LONG, || socket.position("READY=1", 0).is_some()).await;
    let ready = &socket.with("READY=1", 0)[0];
    assert!(
        ready.files_existed,
        "READY=1 came before the database and the output file existed"
    );

    // STATUS in words, once both tenants have been polled.
    let expected = "2 tenants: 1 ok, 1 failing (fabrikam: consent missing (AADSTS700016))";
    wait_until(&format!("STATUS={expected}"), LONG, || {
        socket
            .notes()
            .iter()
            .any(|n| n.value("STATUS") == Some(expected))
    })
    .await;

    // The watchdog: WATCHDOG_USEC=2 s, so a ping about every second, and
    // never a gap as long as the whole interval (systemd would kill us).
    wait_until("six WATCHDOG=1 pings", LONG, || {
        socket.with("WATCHDOG=1", 0).len() >= 6
    })
    .await;
    let pings: Vec<Instant> = socket.with("WATCHDOG=1", 0).iter().map(|n| n.at).collect();
    let gaps: Vec<Duration> = pings.windows(2).map(|p| p[1] - p[0]).collect();
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
    assert!(
        mean >= Duration::from_millis(700) && mean <= Duration::from_millis(1400),
        "mean watchdog gap {mean:?} is not about half of WatchdogSec=2s: {gaps:?}"
    );
    assert!(
        gaps.iter().all(|g| *g < Duration::from_secs(2)),
        "a watchdog gap reached WatchdogSec: {gaps:?}"
    );

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC in the same datagram, then READY=1.
    let before = socket.notes().len();
    daemon.signal(Signal::SIGHUP);
    wait_until("RELOADING=1 after SIGHUP", LONG, || {
        socket.position("RELOADING=1", before).is_some()
    })
    .await;
    let reloading_at = socket.position("RELOADING=1", before).unwrap();
    let reloading = &socket.notes()[reloading_at];
    let usec: u64 = reloading
        .value("MONOTONIC_USEC")
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {:?}", reloading.text))
        .parse()
        .expect("MONOTONIC_USEC is a number of microseconds");
    assert!(usec > 0);
    wait_until("READY=1 after the reload", LONG, || {
        socket.position("READY=1", reloading_at + 1).is_some()
    })
    .await;

    // SIGTERM: STOPPING=1 and a clean exit.
    let before = socket.notes().len();
    daemon.stop().await;
    wait_until("STOPPING=1", Duration::from_secs(5), || {
        socket.position("STOPPING=1", before).is_some()
    })
    .await;
    assert!(socket.notes().iter().all(|n| !n.text.contains(SECRET)));
}

// ---- certificates ----

/// A self-signed certificate and its RSA key from the `openssl` CLI.
struct Cert {
    /// Certificate then key, one PEM file, mode 0600.
    path: PathBuf,
    cert_pem: String,
    /// The base64 body of the private key, lines joined.
    key_body: String,
}

fn openssl_cert(dir: &Path, name: &str) -> Cert {
    let (key, cert) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
    );
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=mde-poller-test",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("the openssl CLI is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert_pem = std::fs::read_to_string(&cert).unwrap();
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, format!("{cert_pem}{key_pem}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(&key).unwrap();
    let key_body = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    Cert {
        path,
        cert_pem,
        key_body,
    }
}

/// The app registration with `cert` uploaded (and no secret).
fn register(w: &World, cert: &Cert) {
    w.sim.add_app(SimApp {
        client_id: APP_ID.to_owned(),
        certificate_pem: Some(cert.cert_pem.clone()),
        ..SimApp::default()
    });
}

/// The world's config, with `[app]` using `pem` instead of the secret file.
fn cert_config(w: &World, pem: &Path) -> PathBuf {
    let config = w.config(POLL);
    let name = pem.file_name().unwrap().to_str().unwrap();
    edit_file(
        &config,
        "client_secret_file = \"client-secret\"",
        &format!("certificate_file = \"{name}\""),
    );
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_credentials_fetch_alerts_with_ps256_and_legacy_rs256() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    let cert = openssl_cert(w.dir.path(), "app");
    register(&w, &cert);
    w.sim.generate_alerts(&t, 7, ago(HOUR), ago(MIN));
    let config = cert_config(&w, &cert.path);
    let run = w.once(&config).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(w.records().len(), 7);

    // The older signature: RS256 with a SHA-1 x5t. A new process, so a new token.
    edit_file(
        &config,
        "[app]\n",
        "[app]\ncertificate_legacy_rs256 = true\n",
    );
    w.sim
        .generate_alerts(&t, 3, ago(MIN), ago(Duration::from_secs(1)));
    w.sim.clear_requests();
    let run = w.once(&config).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(w.records().len(), 10);
    let tokens: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Token)
        .collect();
    assert!(
        !tokens.is_empty() && tokens.iter().all(|r| r.status == 200),
        "{tokens:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_not_uploaded_is_refused_with_a_hint() {
    let mut w = World::new().await;
    w.tenant("contoso");
    let uploaded = openssl_cert(w.dir.path(), "uploaded");
    let other = openssl_cert(w.dir.path(), "other");
    register(&w, &uploaded);
    let config = cert_config(&w, &other.path);

    let run = w.once(&config).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(w.records().is_empty());

    let check = w.run(&config, &["check", "--json"]).await;
    assert_eq!(check.code, Some(1), "{}", check.stderr);
    let results: Vec<Value> = serde_json::from_str(&check.stdout).expect("one JSON array");
    assert_eq!(results[0]["stage"], "token");
    assert!(
        results[0]["problem"]
            .as_str()
            .unwrap()
            .contains("AADSTS700027"),
        "{}",
        results[0]
    );
    let hint = results[0]["hint"].as_str().unwrap();
    assert!(
        hint.contains("uploaded") && hint.contains("clock"),
        "{hint}"
    );
}

/// A certificate replaced at the same path is seen by its thumbprint when a
/// reload loads the config (never read by a poll): the tenant restarts, and
/// its next token is asked for with the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_at_the_same_path_is_used_after_a_reload() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    let old = openssl_cert(w.dir.path(), "old");
    let new = openssl_cert(w.dir.path(), "new");
    register(&w, &old);
    let config = cert_config(&w, &old.path);
    let mut d = w.daemon(&config);
    d.wait_for_events("poll_finished", 1, LONG, |_| true).await;

    // The rotation: the app registration and the file both hold the new one.
    // Tokens already issued stay valid, so only a new token source asks again.
    register(&w, &new);
    std::fs::copy(&new.path, &old.path).unwrap();
    w.sim.clear_requests();
    d.signal(Signal::SIGHUP);
    d.wait_for_events("tenant_changed", 1, LONG, |_| true).await;
    let late = w.sim.generate_alerts(
        &t,
        1,
        ago(Duration::from_secs(3)),
        ago(Duration::from_secs(2)),
    );
    wait_until("an alert after the rotation", LONG, || {
        w.records()
            .iter()
            .any(|r| r["alert"]["id"] == late[0].as_str())
    })
    .await;
    let tokens: Vec<_> = w
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Token)
        .collect();
    assert!(
        !tokens.is_empty() && tokens.iter().all(|r| r.status == 200),
        "a token signed with the new certificate: {tokens:?}"
    );
}

// ---- secrets ----

/// Every place a secret could leak to after runs in `w`: the runs' stdout and
/// stderr, the output file, and the database with its WAL.
fn artefacts(w: &World, runs: &[&Run]) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        all.push((format!("run {i} stdout"), run.stdout.clone().into_bytes()));
        all.push((format!("run {i} stderr"), run.stderr.clone().into_bytes()));
    }
    for name in ["alerts.ndjson", "state.db", "state.db-wal"] {
        if let Ok(bytes) = std::fs::read(w.path(name)) {
            all.push((name.to_owned(), bytes));
        }
    }
    all
}

fn assert_absent(artefacts: &[(String, Vec<u8>)], what: &str, needle: &str) {
    assert!(!needle.is_empty());
    for (name, bytes) in artefacts {
        let found = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(!found, "{what} found in {name}");
    }
}

/// Runs `once` and `check --json` at `log.level = "debug"` with one tenant
/// that works and one that fails, so both paths log.
async fn debug_runs(w: &World, config: &Path) -> Vec<Run> {
    edit_file(config, "level = \"info\"", "level = \"debug\"");
    let once = w.once(config).await;
    assert!(
        once.stderr.contains("\"level\":\"DEBUG\""),
        "debug logging is on: {}",
        once.stderr
    );
    let check = w.run(config, &["check", "--json"]).await;
    assert!(check.stdout.starts_with('['), "{}", check.stdout);
    vec![once, check]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_is_written_anywhere_with_a_client_secret() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.tenant_with("fabrikam", false, &["Alert.Read.All"]);
    w.sim.generate_alerts(&t, 20, ago(HOUR), ago(MIN));
    let runs = debug_runs(&w, &w.config(POLL)).await;
    assert_eq!(w.records().len(), 20, "the run did fetch with a token");
    let found = artefacts(&w, &runs.iter().collect::<Vec<_>>());
    assert!(found.iter().any(|(n, _)| n == "state.db"));
    assert_absent(&found, "the client secret", SECRET);
    assert_absent(&found, "an access token", "eyJ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_private_key_assertion_or_token_is_written_anywhere_with_a_certificate() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.tenant_with("fabrikam", false, &["Alert.Read.All"]);
    let cert = openssl_cert(w.dir.path(), "app");
    register(&w, &cert);
    w.sim.generate_alerts(&t, 20, ago(HOUR), ago(MIN));
    let runs = debug_runs(&w, &cert_config(&w, &cert.path)).await;
    assert_eq!(w.records().len(), 20, "the run did fetch with a token");
    let found = artefacts(&w, &runs.iter().collect::<Vec<_>>());
    assert_absent(&found, "the private key", &cert.key_body);
    // Any 40-character run of the key, in case it were printed wrapped.
    for chunk in cert
        .key_body
        .as_bytes()
        .chunks(40)
        .filter(|c| c.len() == 40)
    {
        assert_absent(
            &found,
            "part of the private key",
            std::str::from_utf8(chunk).unwrap(),
        );
    }
    assert_absent(&found, "a client assertion or an access token", "eyJ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_file_readable_by_others_is_warned_about_by_name() {
    let mut w = World::new().await;
    w.tenant("contoso");
    let config = w.config(POLL);
    let secret = w.path("client-secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = w.once(&config).await;
    assert_eq!(run.code, Some(0), "a warning, not an error: {}", run.stderr);
    let warnings = events(&run.stderr, "config_warning");
    let named = warnings
        .iter()
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.contains(secret.to_str().unwrap()));
    let message =
        named.unwrap_or_else(|| panic!("no warning names {}: {warnings:?}", secret.display()));
    assert!(
        message.contains("0644") && message.contains("chmod 600"),
        "{message}"
    );
    assert!(!run.stderr.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_is_private_to_the_service_user() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.sim.generate_alerts(&t, 3, ago(HOUR), ago(MIN));
    let config = w.config(POLL);
    edit_file(&config, "path = \"state.db\"", "path = \"state/state.db\"");
    let run = w.once(&config).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&w.path("state/state.db")), 0o600);
    assert_eq!(
        mode(&w.path("state")),
        0o700,
        "the directory the daemon created"
    );
    for side in ["state/state.db-wal", "state/state.db-shm"] {
        if w.path(side).exists() {
            assert_eq!(mode(&w.path(side)), 0o600, "{side}");
        }
    }
}

// ---- partner User-Agent ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_the_partner_user_agent() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.sim.generate_alerts(&t, 120, ago(HOUR), ago(MIN));
    let config = w.config(POLL);
    edit_file(&config, "[app]\n", "[app]\npartner = \"Contoso\"\n");
    let run = w.once(&config).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let expected = format!("MdePartner-Contoso-MdePoller/{}", env!("CARGO_PKG_VERSION"));
    let requests = w.sim.requests();
    assert!(requests.iter().any(|r| r.kind == RequestKind::Token));
    assert!(
        requests
            .iter()
            .filter(|r| r.kind == RequestKind::Alerts)
            .count()
            > 1,
        "several pages"
    );
    for r in &requests {
        assert_eq!(
            r.user_agent.as_deref(),
            Some(expected.as_str()),
            "{:?} request",
            r.kind
        );
    }
}

/// A forward proxy on loopback that records the first request line of each
/// connection and pipes the bytes to the simulator (which, like any HTTP/1.1
/// server, accepts the absolute-form request target a proxy client sends).
async fn recording_proxy(
    upstream: std::net::SocketAddr,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; 4096];
                let n = client.read(&mut head).await.unwrap_or(0);
                let first = String::from_utf8_lossy(&head[..n])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                log.lock().unwrap().push(first);
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                use tokio::io::AsyncWriteExt;
                if server.write_all(&head[..n]).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_through_the_configured_proxy() {
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.sim.generate_alerts(&t, 4, ago(HOUR), ago(MIN));
    let (proxy, seen) = recording_proxy(w.sim.addr()).await;
    let config = w.config_with("", &format!("[http]\nproxy = \"{proxy}\""));
    let run = w.once(&config).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(w.records().len(), 4);
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the proxy carried the requests");
    assert!(
        seen.iter().all(|l| l.contains(&w.sim.url())),
        "absolute-form requests for the simulator: {seen:?}"
    );
}
