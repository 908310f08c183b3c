//! Benchmark: `mde-poller run` with many tenants (default 5,000 × 5 alerts)
//! against the simulator: the first cycle's time, how evenly the steady
//! polls and the token refreshes spread over the interval, steady-state RSS,
//! CPU per cycle per tenant, and the WARN/ERROR lines. See
//! `docs/BENCHMARKS.md`, "Many tenants".
//!
//! The simulator runs in this process; the poller is the release binary,
//! spawned by a small "launcher" copy of this bench (`TENANTS_LAUNCHER=1`)
//! started before the simulator fills up, so the poller's figures are its
//! own (see `benches/backfill.rs` for why).
//!
//! Environment: `TENANTS_N` (5000), `TENANTS_ALERTS` (5 per tenant),
//! `TENANTS_INTERVAL` (seconds, 60), `TENANTS_CYCLES` (steady cycles
//! watched, 2), `TENANTS_TOKEN_LIFETIME` (seconds; default twice the
//! interval, so that the refresh of every start-up token falls inside the
//! run), `TENANTS_CONCURRENCY` (unset: the default of `poll.concurrency`),
//! `TENANTS_BIN` (the poller binary).
//!
//! The run: spawn → first cycle (every tenant polled once) → the hand-over
//! (each tenant's second poll at its phase, between half an interval and
//! one and a half intervals after start) → `TENANTS_CYCLES` steady cycles,
//! measured from 1.5 intervals after start → SIGTERM.

mod support;

use support::{env_num, poller_bin, start_simulator, tenant_id, APP_ID, SECRET};

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mde_poller::sim::{ClientConfig, RequestKind, SimOptions, SimTenant};
use mde_poller::timestamp::Timestamp;
use nix::sys::resource::{getrusage, UsageWho};

/// `(config name, tenant id)` of `n` tenants.
fn tenants(n: usize) -> Vec<(String, String)> {
    (0..n).map(|i| (format!("t{i:05}"), tenant_id(i))).collect()
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// User + system CPU seconds of `pid` so far, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    // In USER_HZ, which Linux fixes at 100 for /proc.
    (ticks(11) + ticks(12)) / 100.0
}

/// The `field` of `/proc/PID/status` in KiB (`VmRSS`, `RssAnon`, ...).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident memory of `pid` in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

fn main() {
    if std::env::var_os("TENANTS_LAUNCHER").is_some() {
        launcher();
        return;
    }
    let n = env_num("TENANTS_N", 5000).max(1) as usize;
    let per_tenant = env_num("TENANTS_ALERTS", 5) as usize;
    let interval = Duration::from_secs(env_num("TENANTS_INTERVAL", 60).max(1));
    let cycles = env_num("TENANTS_CYCLES", 2).max(1) as u32;
    let lifetime =
        Duration::from_secs(env_num("TENANTS_TOKEN_LIFETIME", 2 * interval.as_secs()).max(1));
    let concurrency = std::env::var("TENANTS_CONCURRENCY").ok();
    let bin = poller_bin("TENANTS_BIN");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --release` or `cargo bench --bench tenants`",
        bin.display()
    );
    println!(
        "tenants: `mde-poller run`, {n} tenants x {per_tenant} alerts, interval {}s, {cycles} steady cycle(s), token lifetime {}s, concurrency {}\n  poller: {}",
        interval.as_secs(),
        lifetime.as_secs(),
        concurrency.as_deref().unwrap_or("default"),
        bin.display()
    );
    let mut launcher = Launcher::spawn();

    let (_rt, sim) = start_simulator(SimOptions {
        token_lifetime: lifetime,
        ..SimOptions::default()
    });
    let tenants = tenants(n);
    let now = Timestamp::now();
    let from = now.saturating_sub(Duration::from_secs(3600));
    for (_, id) in &tenants {
        sim.add_tenant(SimTenant::consented(id, APP_ID));
        sim.generate_alerts(id, per_tenant, from, now);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut poll = format!(
        "interval = \"{}s\"\nfirst_lookback = \"24h\"",
        interval.as_secs()
    );
    if let Some(c) = &concurrency {
        poll.push_str(&format!("\nconcurrency = {c}"));
    }
    let config = sim
        .write_client_config(
            dir.path(),
            &ClientConfig {
                client_id: APP_ID,
                secret: SECRET,
                poll: &poll,
                log_level: "warn",
                tenants: &tenants,
                ..ClientConfig::default()
            },
        )
        .expect("config written");
    let log = dir.path().join("poller.log");
    sim.clear_requests();

    let started = SystemTime::now();
    let pid = launcher.start(&config, &log);
    let cpu_at_start = cpu_seconds(pid);
    // The first cycle: every tenant's first alerts request answered.
    let mut first_cycle = None;
    let deadline = started + interval * 3 / 2;
    while SystemTime::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        if first_cycle.is_none() {
            let polled: HashSet<String> = sim
                .requests()
                .into_iter()
                .filter(|r| r.kind == RequestKind::Alerts && r.status == 200)
                .filter_map(|r| r.tenant_id)
                .collect();
            if polled.len() == n {
                first_cycle = Some(started.elapsed().unwrap_or_default());
            }
        }
    }
    let first_cycle = first_cycle.expect("every tenant polled within 1.5 intervals");
    let cpu_first = cpu_seconds(pid) - cpu_at_start;
    let rss_after_first = rss_kib(pid);

    // The steady cycles: RSS sampled every second, CPU over the window,
    // and the log lines written from here on.
    let steady_from = SystemTime::now();
    let log_at_steady = std::fs::metadata(&log).map_or(0, |m| m.len());
    let cpu0 = cpu_seconds(pid);
    let mut rss = Vec::new();
    let steady_until = steady_from + interval * cycles;
    while SystemTime::now() < steady_until {
        std::thread::sleep(Duration::from_secs(1));
        rss.push(rss_kib(pid));
    }
    let cpu_steady = cpu_seconds(pid) - cpu0;
    // What the resident memory is: the heap and stacks (anonymous), or the
    // pages of the binary and its libraries (file-backed, clean: shared,
    // and dropped by the kernel first under pressure).
    let (anon, file) = (status_kib(pid, "RssAnon"), status_kib(pid, "RssFile"));
    let (peak_rss, cpu_total, ok) = launcher.stop(pid);
    let requests = sim.requests();
    sim.shutdown();

    // Requests per wall-clock second.
    let per_second = |kind: RequestKind, from: SystemTime, until: SystemTime| {
        let mut seconds: BTreeMap<u64, usize> = BTreeMap::new();
        for r in requests
            .iter()
            .filter(|r| r.kind == kind && r.at >= from && r.at < until)
        {
            *seconds.entry(unix_ms(r.at) / 1000).or_default() += 1;
        }
        seconds
    };
    let polls = per_second(RequestKind::Alerts, steady_from, steady_until);
    let polls_total: usize = polls.values().sum();
    let polls_max = polls.values().max().copied().unwrap_or(0);
    let after_first = started + first_cycle;
    let handover = per_second(RequestKind::Alerts, after_first, steady_from);
    let handover_max = handover.values().max().copied().unwrap_or(0);
    let tokens_first = per_second(RequestKind::Token, started, after_first);
    let tokens_later = per_second(RequestKind::Token, after_first, steady_until);
    let tokens_later_total: usize = tokens_later.values().sum();
    let tokens_later_max = tokens_later.values().max().copied().unwrap_or(0);
    let throttled = requests.iter().filter(|r| r.status == 429).count();

    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let level = |line: &str| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["level"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into())
    };
    let count = |lines: &str| {
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for l in lines.lines().filter(|l| !l.trim().is_empty()) {
            let key = serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .map(|v| {
                    format!(
                        "{} {}",
                        v["level"].as_str().unwrap_or("?"),
                        v["event"].as_str().or(v["message"].as_str()).unwrap_or("?")
                    )
                })
                .unwrap_or_else(|| format!("? {}", &l[..l.len().min(80)]));
            *by.entry(key).or_default() += 1;
        }
        by
    };
    let split = (log_at_steady as usize).min(text.len());
    let start_lines = count(&text[..split]);
    let steady_text = &text[split..];
    let steady_lines = count(steady_text);
    let steady_bad = steady_text
        .lines()
        .filter(|l| matches!(level(l).as_str(), "WARN" | "ERROR"))
        .count();

    rss.sort_unstable();
    let median_rss = rss.get(rss.len() / 2).copied().unwrap_or(0);
    let max_rss = rss.last().copied().unwrap_or(0);
    let pct = |x: usize| 100.0 * x as f64 / n as f64;
    let mean = n as f64 / interval.as_secs_f64();
    println!("  first cycle       {:>10.1} s  (spawn to every tenant's first poll answered; poller CPU {:.1} s)", first_cycle.as_secs_f64(), cpu_first);
    println!(
        "  steady polls      {:>10}  in {} s ({} cycle(s)); mean {:.1} a second",
        polls_total,
        (interval * cycles).as_secs(),
        cycles,
        mean
    );
    println!(
        "  max in a second   {:>10}  = {:.2} % of the tenants (target at 5 m: <= 2 %); hand-over window: {} = {:.2} %",
        polls_max,
        pct(polls_max),
        handover_max,
        pct(handover_max)
    );
    println!(
        "  token requests    first cycle {} (max {} a second); after it {} (max {} a second, {:.2} % of the tenants)",
        tokens_first.values().sum::<usize>(),
        tokens_first.values().max().copied().unwrap_or(0),
        tokens_later_total,
        tokens_later_max,
        pct(tokens_later_max)
    );
    println!(
        "  steady RSS        {:>10.1} MB median, {:.1} MB max (after the first cycle {:.1} MB; peak {:.1} MB)",
        median_rss as f64 / 1024.0,
        max_rss as f64 / 1024.0,
        rss_after_first as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
    println!(
        "    at the end    {:>10.1} MB anonymous (heap, stacks), {:.1} MB file-backed (the binary's code, libraries)",
        anon as f64 / 1024.0,
        file as f64 / 1024.0
    );
    println!(
        "  CPU               {:>10.3} ms per steady cycle per tenant ({:.2} s a cycle; whole run {:.1} s)",
        1000.0 * cpu_steady / cycles as f64 / n as f64,
        cpu_steady / cycles as f64,
        cpu_total
    );
    println!("  429s              {throttled:>10}");
    println!("  WARN/ERROR lines  {steady_bad:>10}  in the steady cycles");
    for (what, k) in [("start-up", &start_lines), ("steady", &steady_lines)] {
        for (line, c) in k.iter() {
            println!("    {what}: {c} x {line}");
        }
    }
    assert!(ok, "the poller did not stop cleanly");
}

/// A copy of this bench, started early, that runs one poller.
struct Launcher {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Launcher {
    fn spawn() -> Launcher {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .env("TENANTS_LAUNCHER", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("launcher starts");
        let out = std::io::BufReader::new(child.stdout.take().expect("launcher stdout"));
        Launcher { child, out }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("launcher stdin");
        writeln!(stdin, "{line}").expect("launcher told");
        stdin.flush().expect("launcher told");
    }

    fn hear(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("launcher answers");
        line.trim_end().to_owned()
    }

    /// Starts `mde-poller --config CONFIG run`, its stderr into `log`.
    fn start(&mut self, config: &Path, log: &Path) -> u32 {
        self.say(&format!("{}\t{}", config.display(), log.display()));
        let pid = self.hear();
        pid.parse()
            .unwrap_or_else(|_| panic!("launcher said {pid:?}"))
    }

    /// SIGTERM, then (peak RSS KiB, CPU seconds, clean exit).
    fn stop(&mut self, _pid: u32) -> (u64, f64, bool) {
        self.say("stop");
        let line = self.hear();
        let _ = self.child.wait();
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            [rss, cpu, ok] => (
                rss.parse().unwrap_or(0),
                cpu.parse().unwrap_or(0.0),
                *ok == "ok",
            ),
            _ => panic!("launcher answered {line:?}"),
        }
    }
}

/// Launcher mode: reads `CONFIG\tLOG`, starts the poller, prints its pid;
/// on `stop` sends SIGTERM, waits, prints `MAXRSS_KIB CPU_S ok|failed`.
fn launcher() {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let Some(Ok(first)) = lines.next() else {
        return;
    };
    let Some((config, log)) = first.split_once('\t') else {
        return;
    };
    let log = std::fs::File::create(log).expect("log file");
    let mut child = Command::new(poller_bin("TENANTS_BIN"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .env_remove("RUST_LOG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("poller starts");
    println!("{}", child.id());
    let _ = std::io::stdout().flush();
    let _ = lines.next(); // "stop", or the bench went away
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let status = child.wait().expect("poller exits");
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let cpu = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    println!(
        "{} {} {}",
        usage.max_rss(),
        cpu(usage.user_time()) + cpu(usage.system_time()),
        if status.success() { "ok" } else { "failed" }
    );
}
