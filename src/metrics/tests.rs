//! The registry's names, labels and series life cycle, on a registry of
//! the test's own (the process-wide one counts whatever other tests do).

use super::*;

/// The value of the sample `name` (with its labels, as encoded), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.split(' ').next().unwrap().parse().unwrap())
}

#[test]
fn every_name_in_the_spec_is_exported_with_its_type() {
    let m = Metrics::new();
    m.alerts_emitted(&Emitted { new: 3, update: 1 });
    m.api_request(SOURCE_MDE, Some(200));
    m.throttled(SOURCE_MDE);
    m.token_request("ok");
    m.poll_succeeded("contoso", Some("2026-11-26T20:00:00.1234567Z"), 250);
    m.set_audit_missing("contoso", 0);
    let text = m.encode();
    for (name, kind) in [
        ("mde_poller_alerts_emitted", "counter"),
        ("mde_poller_polls", "counter"),
        ("mde_poller_api_requests", "counter"),
        ("mde_poller_throttled", "counter"),
        ("mde_poller_token_requests", "counter"),
        ("mde_poller_poll_duration_seconds", "histogram"),
        ("mde_poller_tenants", "gauge"),
        ("mde_poller_tenant_last_success_timestamp_seconds", "gauge"),
        ("mde_poller_tenant_cursor_timestamp_seconds", "gauge"),
        ("mde_poller_tenant_consecutive_failures", "gauge"),
        ("mde_poller_audit_missing_versions", "gauge"),
        ("mde_poller_build_info", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} as a {kind} in:\n{text}"
        );
    }
    assert_eq!(
        sample(&text, "mde_poller_alerts_emitted_total{change=\"new\"}"),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, "mde_poller_alerts_emitted_total{change=\"update\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "mde_poller_api_requests_total{source=\"mde\",status_class=\"2xx\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "mde_poller_polls_total{outcome=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "mde_poller_poll_duration_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "mde_poller_tenant_cursor_timestamp_seconds{tenant=\"contoso\"}"
        ),
        Some(1_795_723_200.1234567)
    );
    assert!(
        text.contains(&format!(
            "mde_poller_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends on # EOF");
}

#[test]
fn tenants_are_counted_by_state_and_failures_run_until_a_success() {
    let m = Metrics::new();
    m.poll_succeeded("contoso", None, 10);
    m.poll_failed("fabrikam", Some(10), false);
    m.poll_failed("fabrikam", Some(10), false);
    m.poll_failed("northwind", None, true);
    let text = m.encode();
    let state = |s: &str| sample(&text, &format!("mde_poller_tenants{{state=\"{s}\"}}"));
    assert_eq!(
        (
            state("ok"),
            state("failing"),
            state("paused"),
            state("disabled")
        ),
        (Some(1.0), Some(1.0), Some(1.0), Some(0.0))
    );
    let failures = |t: &str, text: &str| {
        sample(
            text,
            &format!("mde_poller_tenant_consecutive_failures{{tenant=\"{t}\"}}"),
        )
    };
    assert_eq!(failures("fabrikam", &text), Some(2.0));
    assert_eq!(failures("contoso", &text), Some(0.0));
    // Counts as integers, tenants in name order: each scrape reads alike.
    let contoso = text
        .find("mde_poller_tenant_consecutive_failures{tenant=\"contoso\"} 0\n")
        .expect("contoso's failures as an integer");
    let fabrikam = text
        .find("mde_poller_tenant_consecutive_failures{tenant=\"fabrikam\"} 2\n")
        .expect("fabrikam's failures as an integer");
    assert!(contoso < fabrikam, "{text}");
    assert_eq!(
        sample(&text, "mde_poller_polls_total{outcome=\"failed\"}"),
        Some(3.0)
    );
    m.poll_succeeded("fabrikam", None, 10);
    assert_eq!(failures("fabrikam", &m.encode()), Some(0.0));
}

fn settings_with(tenants: &[(&str, bool)]) -> Settings {
    let dir = tempfile::tempdir().unwrap();
    let mut toml = String::from(
        "[app]\nclient_id = \"0a0b0c0d-1111-4222-8333-444455556666\"\nclient_secret_file = \"secret\"\n",
    );
    for (i, (name, enabled)) in tenants.iter().enumerate() {
        toml.push_str(&format!(
            "[tenants.{name}]\ntenant_id = \"{:08x}-aaaa-4bbb-8ccc-000000000000\"\nenabled = {enabled}\n",
            i + 1
        ));
    }
    std::fs::write(dir.path().join("secret"), "s3cr3t-value").unwrap();
    std::fs::write(dir.path().join("config.toml"), toml).unwrap();
    crate::config::load(&dir.path().join("config.toml")).expect("a valid config")
}

#[test]
fn a_tenant_that_leaves_the_config_takes_its_series_along() {
    let m = Metrics::new();
    m.poll_succeeded("contoso", Some("2026-11-26T20:00:00Z"), 10);
    m.poll_failed("fabrikam", Some(10), false);
    m.set_audit_missing("fabrikam", 2);
    m.configured(&settings_with(&[("contoso", true), ("fabrikam", false)]));
    let text = m.encode();
    assert!(!text.contains("tenant=\"fabrikam\""), "{text}");
    assert!(text.contains("tenant=\"contoso\""), "{text}");
    assert_eq!(
        sample(&text, "mde_poller_tenants{state=\"disabled\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "mde_poller_tenants{state=\"failing\"}"),
        Some(0.0)
    );
}

/// Every sample name the registry exports once each family has a series.
fn exported_names() -> std::collections::BTreeSet<String> {
    let m = Metrics::new();
    m.alerts_emitted(&Emitted { new: 1, update: 1 });
    m.api_request(SOURCE_MDE, Some(200));
    m.throttled(SOURCE_MDE);
    m.token_request("ok");
    m.poll_succeeded("contoso", Some("2026-11-26T20:00:00Z"), 10);
    m.set_audit_missing("contoso", 0);
    m.encode()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l[..l.find(['{', ' ']).unwrap()].to_owned())
        .collect()
}

/// The `mde_poller_*` names a text mentions.
fn names_in(text: &str) -> Vec<String> {
    text.match_indices("mde_poller_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn the_dashboard_and_the_alert_rules_query_only_metrics_the_daemon_exports() {
    let exported = exported_names();
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../config/grafana-dashboard.json"))
            .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            queries.push(target["expr"].as_str().expect("an expr").to_owned());
        }
    }
    queries.push(dashboard["templating"]["list"][0]["query"].to_string());
    let rules = include_str!("../../config/prometheus-rules.yml");
    for (source, text) in [
        ("dashboard", queries.join("\n")),
        ("rules", rules.to_owned()),
    ] {
        let names = names_in(&text);
        assert!(names.len() >= 7, "{source} names only {names:?}");
        for name in names {
            assert!(
                exported.contains(&name),
                "{source} queries {name}, which the daemon does not export ({exported:?})"
            );
        }
    }
    // Each topic the operator looks for has a panel.
    for metric in [
        "mde_poller_tenants",
        "mde_poller_alerts_emitted_total",
        "mde_poller_polls_total",
        "mde_poller_tenant_cursor_timestamp_seconds",
        "mde_poller_throttled_total",
        "mde_poller_audit_missing_versions",
    ] {
        assert!(
            queries
                .iter()
                .any(|q| names_in(q).contains(&metric.to_owned())),
            "no panel on {metric}"
        );
    }
}
