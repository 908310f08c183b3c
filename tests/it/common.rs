//! The harness: a simulator with the partner app, tenants added by name, a
//! temporary directory holding the config, secret, database and output, and
//! helpers to run the binary and read what it emitted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mde_poller::sim::{ClientConfig, RequestRecord, SimApp, SimOptions, SimTenant, Simulator};
use mde_poller::timestamp::Timestamp;
use serde_json::Value;

pub const APP_ID: &str = "0a0b0c0d-1111-4222-8333-444455556666";
pub const SECRET: &str = "TEST-secret-value-0123456789";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mde-poller")
}

pub struct World {
    pub sim: Simulator,
    pub dir: tempfile::TempDir,
    tenants: Vec<(String, String)>,
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl World {
    pub async fn new() -> World {
        Self::with_options(SimOptions::default()).await
    }

    pub async fn with_options(opts: SimOptions) -> World {
        let sim = Simulator::start(opts).expect("simulator starts");
        sim.add_app(SimApp::with_secret(APP_ID, SECRET));
        let dir = tempfile::tempdir().expect("tempdir");
        // Configs written by hand (config_errors) name it too.
        std::fs::write(dir.path().join("client-secret"), SECRET).unwrap();
        World {
            sim,
            dir,
            tenants: Vec::new(),
        }
    }

    /// Adds a tenant that consented to the app with the Alert.Read.All role.
    pub fn tenant(&mut self, name: &str) -> String {
        self.tenant_with(name, true, &["Alert.Read.All"])
    }

    pub fn tenant_with(&mut self, name: &str, consented: bool, roles: &[&str]) -> String {
        let n = self.tenants.len() as u32 + 1;
        let id = format!("{n:08x}-aaaa-4bbb-8ccc-{:012x}", u64::from(n) * 7919);
        self.sim.add_tenant(SimTenant {
            tenant_id: id.clone(),
            consented_apps: if consented {
                vec![APP_ID.to_owned()]
            } else {
                vec![]
            },
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            has_mde: true,
        });
        self.tenants.push((name.to_owned(), id.clone()));
        id
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn output_path(&self) -> PathBuf {
        self.path("alerts.ndjson")
    }

    /// Writes `config.toml` for every tenant added so far; `poll` is the body
    /// of the `[poll]` table.
    pub fn config(&self, poll: &str) -> PathBuf {
        self.config_with(poll, "")
    }

    pub fn config_with(&self, poll: &str, extra: &str) -> PathBuf {
        self.write_config(poll, extra, &self.tenants)
    }

    fn write_config(&self, poll: &str, extra: &str, tenants: &[(String, String)]) -> PathBuf {
        self.sim
            .write_client_config(
                self.dir.path(),
                &ClientConfig {
                    client_id: APP_ID,
                    secret: SECRET,
                    poll,
                    extra,
                    tenants,
                    ..ClientConfig::default()
                },
            )
            .expect("config written")
    }

    /// Runs the binary to completion with `args` after `--config`.
    pub async fn run(&self, config: &Path, args: &[&str]) -> Run {
        let out = tokio::process::Command::new(bin())
            .arg("--config")
            .arg(config)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("binary runs");
        // Whatever the command did, it left no partial line behind.
        let text = std::fs::read_to_string(self.output_path()).unwrap_or_default();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "the output ends with a whole line"
        );
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub async fn once(&self, config: &Path) -> Run {
        self.run(config, &["once"]).await
    }

    /// Every whole record in the output file, in order. A test reads while
    /// the daemon may be in the middle of a write: a partial last line is
    /// what a shipper tailing the file waits on, so it is left out here.
    pub fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.output_path()).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |end| &text[..=end]);
        parse_lines(whole)
    }

    /// Every record, asserting the file ends with a whole line: for when the
    /// daemon has stopped.
    pub fn records_at_rest(&self) -> Vec<Value> {
        read_records(&self.output_path())
    }
}

pub fn read_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the output ends with a whole line"
    );
    parse_lines(&text)
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("line is not JSON ({e}): {l}")))
        .collect()
}

/// The alert ids of `records`.
pub fn alert_ids(records: &[Value]) -> std::collections::HashSet<String> {
    records
        .iter()
        .map(|r| {
            r["alert"]["id"]
                .as_str()
                .expect("a record has an alert id")
                .to_owned()
        })
        .collect()
}

/// `(tenant id, alert id, lastUpdateTime)` of a record.
pub fn version_of(record: &Value) -> (String, String, String) {
    (
        record["tenant"]["id"].as_str().unwrap().to_owned(),
        record["alert"]["id"].as_str().unwrap().to_owned(),
        record["alert"]["lastUpdateTime"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

/// Asserts no alert version appears twice, and returns the count per version.
pub fn assert_no_duplicates(records: &[Value]) -> HashMap<(String, String, String), usize> {
    let mut counts = HashMap::new();
    for r in records {
        *counts.entry(version_of(r)).or_insert(0usize) += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "versions emitted more than once: {dups:?}");
    counts
}

pub fn ago(d: Duration) -> Timestamp {
    Timestamp::now().saturating_sub(d)
}

pub const MIN: Duration = Duration::from_secs(60);
pub const HOUR: Duration = Duration::from_secs(3600);

/// The JSON log events on stderr with `event == name`.
pub fn events(stderr: &str, name: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == name)
        .collect()
}

// ---- The daemon under test, and waiting with deadlines ----

impl World {
    /// Writes `config.toml` naming only `tenants` (by the names given to
    /// [`World::tenant`]), so a test can add and remove tenants between reloads.
    pub fn config_for(&self, poll: &str, tenants: &[&str]) -> PathBuf {
        let chosen: Vec<(String, String)> = tenants
            .iter()
            .map(|name| ((*name).to_owned(), self.tenant_id(name)))
            .collect();
        self.write_config(poll, "", &chosen)
    }

    /// The tenant id given to `name` by [`World::tenant`].
    pub fn tenant_id(&self, name: &str) -> String {
        self.tenants
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id.clone())
            .unwrap_or_else(|| panic!("no tenant named {name}"))
    }

    /// Starts `mde-poller run`; each start gets its own stderr file.
    pub fn daemon(&self, config: &Path) -> Daemon {
        Daemon::start(config, &[])
    }
}

/// A running `mde-poller run`, its stderr in a file of its own, killed
/// (SIGKILL) and reaped on drop so that no test leaves a process behind.
pub struct Daemon {
    child: std::process::Child,
    pub log: PathBuf,
    exited: Option<std::process::ExitStatus>,
}

impl Daemon {
    /// Starts `mde-poller --config <config> run` with `env` added. A shell
    /// sets `WATCHDOG_PID` to its own pid and then execs the binary, which
    /// keeps that pid: the watchdog is honoured only by the process it names,
    /// and a test learns the pid only after the spawn.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Daemon {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = config.with_file_name(format!("daemon-{n}.stderr"));
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"export WATCHDOG_PID=$$; exec "$0" "$@""#)
            .arg(bin())
            .arg("--config")
            .arg(config)
            .arg("run")
            .env_remove("RUST_LOG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("daemon log"))
            .spawn()
            .expect("the daemon starts");
        Daemon {
            child,
            log,
            exited: None,
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("signal delivered");
    }

    /// Everything the daemon logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The JSON log events named `name` so far.
    pub fn events(&self, name: &str) -> Vec<Value> {
        events(&self.stderr(), name)
    }

    /// Waits until `count` events named `name` match `pred`; returns them all.
    pub async fn wait_for_events(
        &mut self,
        name: &str,
        count: usize,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let found: Vec<Value> = self.events(name).into_iter().filter(|e| pred(e)).collect();
            if found.len() >= count {
                return found;
            }
            assert!(
                self.is_running(),
                "the daemon exited while waiting for {name}:\n{}",
                self.stderr()
            );
            assert!(
                std::time::Instant::now() < deadline,
                "no {count} `{name}` events within {within:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited.is_none()
    }

    /// Waits for the process to exit; `None` if it is still running after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        while self.is_running() {
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.exited
    }

    /// SIGTERM, and the clean stop the daemon promises: exit 0 within 10 s.
    pub async fn stop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("stops within 10 s of SIGTERM");
        assert_eq!(status.code(), Some(0), "{}", self.stderr());
    }

    /// SIGKILL, then reap: a crash at whatever point the daemon had reached.
    pub fn kill9(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            self.exited = Some(self.child.wait().expect("reaped"));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Replaces `from` (which must be there) with `to` in a config file.
pub fn edit_file(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} holds no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after `within`.
/// Tests wait for a condition, never for a fixed time.
pub async fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The output's records, tolerating a torn last line (a kill -9 may cut a
/// write short); returns the records and the count of lines that did not parse.
pub fn read_records_lenient(path: &Path) -> (Vec<Value>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut bad = 0;
    let records = text
        .lines()
        .filter_map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) => Some(v),
            Err(_) => {
                bad += 1;
                None
            }
        })
        .collect();
    (records, bad)
}

/// A request reaching the simulator this soon after a throttled answer was
/// already on its way: the poller has several reads of a tenant out at once,
/// and one sent before the 429/503 reached it does not breach Retry-After.
const ON_THE_WIRE: Duration = Duration::from_millis(250);

/// The earliest moment a client told `Retry-After: secs` at `at` may call
/// again. The simulator sends every other injected one as an HTTP date, which
/// has whole seconds: that form allows a call at the start of the second.
fn retry_allowed_at(at: std::time::SystemTime, secs: u64) -> std::time::SystemTime {
    let due = at + Duration::from_secs(secs);
    let since = due
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .unwrap();
    std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs())
}

/// Every 429/503 with a Retry-After among `calls` (one tenant's alerts
/// requests) was obeyed: the refused request was not asked again before its
/// time, and no other request came later than [`ON_THE_WIRE`] after the
/// refusal before that time. Returns how many refusals were checked (those
/// some later call can be held against).
pub fn assert_retry_after_obeyed(calls: &[RequestRecord], tenant: &str) -> usize {
    let slack = Duration::from_millis(50);
    let mut calls = calls.to_vec();
    calls.sort_by_key(|r| r.at);
    let mut checked = 0;
    for (i, r) in calls.iter().enumerate() {
        let Some(secs) = r.retry_after else { continue };
        let later = &calls[i + 1..];
        if later.is_empty() {
            continue;
        }
        let allowed = retry_allowed_at(r.at, secs);
        for next in later.iter().take_while(|n| n.at + slack < allowed) {
            let after = next.at.duration_since(r.at).unwrap_or_default();
            let same = (&next.filter, next.top, next.skip) == (&r.filter, r.top, r.skip);
            assert!(
                !same && after <= ON_THE_WIRE,
                "{tenant}: {} {after:?} after a {} with Retry-After {secs}s",
                if same { "asked again" } else { "called" },
                r.status
            );
        }
        checked += 1;
    }
    checked
}
