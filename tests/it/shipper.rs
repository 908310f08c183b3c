//! The alert file as a SIEM shipper sees it: a real rsyslogd (imfile +
//! mmjsonparse) tails the daemon's output across a logrotate-style rotation,
//! and every record must arrive parsed, once, and whole, 100 KB ones included.
//!
//! Runs only where `rsyslogd` is installed (`.ci/run` installs it); elsewhere
//! it prints a SKIP line. The rsyslog config loads no system inputs (no
//! imuxsock, no imklog), so it touches nothing outside its temporary folder.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mde_poller::timestamp::Timestamp;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::common::*;

const LONG: Duration = Duration::from_secs(30);

fn rsyslogd() -> Option<PathBuf> {
    ["rsyslogd", "/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| {
            Command::new(p)
                .arg("-v")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        })
}

/// A foreground rsyslogd; killed on drop.
struct Rsyslog {
    child: Child,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipper config documented in docs/DEPLOY.md, with the paths of `dir`.
fn rsyslog_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"global(workDirectory="{d}" maxMessageSize="512k")
module(load="imfile" mode="inotify")
module(load="mmjsonparse")
template(name="mde_json" type="string" string="%$!all-json%\n")
ruleset(name="mde") {{
  action(type="mmjsonparse" cookie="")
  action(type="omfile" file="{d}/received.ndjson" template="mde_json")
}}
input(type="imfile" file="{d}/alerts.ndjson" tag="mde" ruleset="mde"
      addMetadata="off" reopenOnTruncate="on")
"#
    )
}

fn start_rsyslog(binary: &Path, dir: &Path) -> Rsyslog {
    let conf = dir.join("rsyslog.conf");
    std::fs::write(&conf, rsyslog_conf(dir)).unwrap();
    let check = Command::new(binary)
        .arg("-N1")
        .arg("-f")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "rsyslogd -N1: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(binary)
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("rsyslogd.log")).unwrap())
        .spawn()
        .expect("rsyslogd starts");
    Rsyslog { child }
}

fn line_count(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

/// An alert whose evidence makes its line about `kb` KB long.
fn big_alert(id: &str, at: Timestamp, kb: usize) -> Value {
    let evidence: Vec<Value> = (0..kb)
        .map(|i| {
            json!({
                "entityType": "File",
                "sha256": format!("{i:064x}"),
                "filePath": format!("C:\\Users\\contoso\\AppData\\Local\\Temp\\{}", "x".repeat(900)),
                "fileName": format!("payload-{i}.exe"),
            })
        })
        .collect();
    json!({"id": id, "lastUpdateTime": at.to_string(), "status": "New", "title": "Large evidence", "evidence": evidence})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_receives_every_record_whole_and_once_across_a_rotation() {
    let Some(binary) = rsyslogd() else {
        eprintln!("SKIP rsyslog_receives_every_record_whole_and_once_across_a_rotation: rsyslogd is not installed");
        return;
    };
    let mut w = World::new().await;
    let t = w.tenant("contoso");
    w.sim.generate_alerts(&t, 30, ago(HOUR), ago(MIN));
    for i in 0..3 {
        w.sim
            .insert_alert(
                &t,
                big_alert(&format!("big-before-{i}"), ago(30 * MIN), 110),
            )
            .unwrap();
    }
    let config = w.config(
        "interval = \"1s\"\nlookback = \"10m\"\nfirst_lookback = \"3h\"\nexpand_evidence = true",
    );
    let _rsyslog = start_rsyslog(&binary, w.dir.path());
    let mut daemon = Daemon::start(&config, &[]);
    let (current, rotated) = (w.output_path(), w.path("alerts.ndjson.1"));

    wait_until("the back-fill written", LONG, || line_count(&current) >= 33).await;
    // More alerts, then rotation the logrotate `create` way: the daemon keeps
    // writing to the renamed file until SIGHUP makes it open a new one.
    w.sim
        .generate_alerts(&t, 10, ago(Duration::from_secs(2)), Timestamp::now());
    std::fs::rename(&current, &rotated).unwrap();
    w.sim
        .insert_alert(&t, big_alert("big-during", Timestamp::now(), 120))
        .unwrap();
    wait_until("a line in the renamed file", LONG, || {
        line_count(&rotated) >= 44
    })
    .await;
    daemon.signal(Signal::SIGHUP);
    wait_until("the daemon reopened its output", LONG, || current.exists()).await;
    w.sim
        .generate_alerts(&t, 10, ago(Duration::from_secs(2)), Timestamp::now());
    w.sim
        .insert_alert(&t, big_alert("big-after", Timestamp::now(), 150))
        .unwrap();
    let total = 30 + 3 + 10 + 1 + 10 + 1;
    wait_until("every alert written", LONG, || {
        line_count(&rotated) + line_count(&current) >= total
    })
    .await;
    daemon.stop().await;

    let mut emitted = read_records(&rotated);
    emitted.extend(read_records(&current));
    assert_eq!(emitted.len(), total, "the daemon emitted each alert once");
    let received_path = w.path("received.ndjson");
    wait_until("rsyslog delivered every record", LONG, || {
        line_count(&received_path) >= total
    })
    .await;
    // A moment for any line that should not be there to show up too.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let text = std::fs::read_to_string(&received_path).unwrap();
    let received: Vec<Value> = text
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("rsyslog wrote a line that is not JSON ({e}): {l:.200}"))
        })
        .collect();
    for r in &received {
        assert!(
            r["alert"]["id"].is_string(),
            "a record arrived unparsed: {:.200}",
            r.to_string()
        );
    }
    assert_eq!(received.len(), total, "each record arrived once");
    assert_no_duplicates(&received);
    let by_version: HashMap<_, &Value> = received.iter().map(|r| (version_of(r), r)).collect();
    for e in &emitted {
        let r = by_version
            .get(&version_of(e))
            .unwrap_or_else(|| panic!("{:?} never arrived", version_of(e)));
        assert_eq!(*r, e, "a record arrived changed");
    }
    let big: HashSet<&str> = received
        .iter()
        .filter(|r| r.to_string().len() > 100_000)
        .map(|r| r["alert"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(big.len(), 5, "the 100 KB+ records arrived whole: {big:?}");
}
