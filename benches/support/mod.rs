//! What the benchmarks need the same way: the app they poll as, their
//! numeric knobs, the poller binary they run, the tenant ids they make, and
//! the back-fill data set `backfill` and its `naive` baseline both read.

// Each bench compiles this module on its own and uses part of it (`naive`
// runs no poller binary, `tenants` makes no back-fill data set).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use mde_poller::sim::{Latency, ServiceSource, SimTenant, Simulator};
use mde_poller::timestamp::Timestamp;

/// The partner app the simulator knows and every bench config names.
pub const APP_ID: &str = "0a0b0c0d-1111-4222-8333-444455556666";
pub const SECRET: &str = "BENCH-secret-value-0123456789";

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
