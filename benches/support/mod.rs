//! What both benchmarks need the same way: the app they poll as, their
//! numeric knobs, the poller binary they run and the tenant ids they make.

use std::path::PathBuf;

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
