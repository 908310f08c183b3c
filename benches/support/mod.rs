//! What the benchmarks need the same way: the app they poll as, their
//! numeric knobs, the poller binary they run, the tenant ids they make, and
//! the back-fill data set `backfill` and its `naive` baseline both read.

// Each bench compiles this module on its own and uses part of it (`naive`
// runs no poller binary, `tenants` makes no back-fill data set).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use mde_poller::sim::{Latency, ServiceSource, SimApp, SimOptions, SimTenant, Simulator};
use mde_poller::timestamp::Timestamp;

/// The partner app the simulator knows and every bench config names.
pub const APP_ID: &str = "0a0b0c0d-1111-4222-8333-444455556666";
pub const SECRET: &str = "BENCH-secret-value-0123456789";

/// The simulator on a runtime of its own (kept alive by the caller while the
/// simulator serves), with the benches' app added.
pub fn start_simulator(options: SimOptions) -> (tokio::runtime::Runtime, Simulator) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sim = rt.block_on(async { Simulator::start(options).expect("simulator starts") });
    sim.add_app(SimApp::with_secret(APP_ID, SECRET));
    (rt, sim)
}

/// The `$top` a tenant of the source asks for: Graph serves at most 1,000
/// a page whatever `page_size` says (the poller asks that much).
pub fn page_top(graph: bool, page_size: usize) -> usize {
    if graph {
        page_size.min(1000)
    } else {
        page_size
    }
}

/// The simulator's default call budget a minute for the source.
pub fn per_minute(graph: bool) -> usize {
    let options = SimOptions::default();
    if graph {
        options.graph_per_minute as usize
    } else {
        options.per_minute as usize
    }
}

/// The number in the environment variable `name` (`_` allowed as a digit
/// separator), else `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// The poller binary: the path in `var` (e.g. another build to compare),
/// else the one cargo builds for benches (`cargo bench` builds
/// `target/release/mde-poller` first and says where in
/// `CARGO_BIN_EXE_mde-poller`).
pub fn poller_bin(var: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_mde-poller")))
}

/// The `i`-th generated tenant id: distinct, GUID-shaped.
pub fn tenant_id(i: usize) -> String {
    format!("{i:08x}-bbbb-4ccc-8ddd-{:012x}", i * 7919)
}

/// The tenant of the one-tenant back-fill (`backfill`'s first, `naive`'s only).
pub const BACKFILL_TENANT: &str = "00000001-aaaa-4bbb-8ccc-000000001eef";

/// Whether the alerts source named in `var` is Graph alerts_v2: `mde` (the
/// default) or `graph`.
pub fn graph_source(var: &str) -> bool {
    match std::env::var(var).as_deref() {
        Err(_) | Ok("mde") => false,
        Ok("graph") => true,
        Ok(other) => panic!("{var}={other:?}: mde or graph"),
    }
}

/// The simulator's latency model from `{prefix}_LATENCY_MS` (fixed cost of
/// an answer) and `{prefix}_PER_ALERT_US` (cost per alert served).
pub fn latency(prefix: &str, default_ms: u64, default_us: u64) -> Latency {
    Latency {
        fixed: Duration::from_millis(env_num(&format!("{prefix}_LATENCY_MS"), default_ms)),
        per_alert: Duration::from_micros(env_num(&format!("{prefix}_PER_ALERT_US"), default_us)),
    }
}

/// Adds a consented tenant with `count` alerts, `lastUpdateTime` uniform over
/// `[from, to)`: MDE alerts, or (`graph`) a Graph tenant with alerts of every
/// Defender product, rendered in Graph's shape now so a timed run measures the
/// poller. The back-fill data set: both back-fill benches build it here, so
/// with the simulator's fixed seed they read the same alerts. Their ids.
pub fn add_backfill_tenant(
    sim: &Simulator,
    tenant_id: &str,
    app_id: &str,
    count: usize,
    (from, to): (Timestamp, Timestamp),
    graph: bool,
) -> Vec<String> {
    if graph {
        let mut products = vec![ServiceSource::DefenderForEndpoint];
        products.extend(ServiceSource::GRAPH_ONLY);
        sim.add_tenant(SimTenant::graph(tenant_id, app_id));
        let ids = sim.generate_graph_alerts(tenant_id, count, from, to, &products);
        sim.prepare_graph(tenant_id);
        ids
    } else {
        sim.add_tenant(SimTenant::consented(tenant_id, app_id));
        sim.generate_alerts(tenant_id, count, from, to)
    }
}

/// The median of `v` (the upper one of an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Waits until `calls` (the tenant and arrival time of the earlier runs'
/// alerts requests) leave room for `need` more of any one tenant in the
/// simulator's sliding minute of `per_minute` calls per app and tenant.
/// Each run's poller starts from an empty state directory, so it knows
/// nothing of the previous run's calls: started at once, a run making more
/// than about half the budget a minute would be throttled for calls it did
/// not make (a Graph back-fill at 300 ms a request makes ~140 in 53 s).
pub fn wait_for_budget(calls: &[(Option<String>, SystemTime)], per_minute: usize, need: usize) {
    let window = Duration::from_secs(61);
    let need = need.min(per_minute);
    let started = std::time::Instant::now();
    loop {
        let now = SystemTime::now();
        let mut per_tenant = std::collections::HashMap::new();
        for (tenant, at) in calls {
            if now.duration_since(*at).map_or(true, |age| age < window) {
                *per_tenant.entry(tenant).or_insert(0usize) += 1;
            }
        }
        if per_tenant.values().max().copied().unwrap_or(0) + need <= per_minute {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let waited = started.elapsed();
    if waited >= Duration::from_secs(1) {
        println!(
            "  (waited {:.0} s for the previous runs' calls to leave the simulator's minute)",
            waited.as_secs_f64()
        );
    }
}
