//! `check`: per tenant, a plain-words verdict with the stage that failed and
//! the next step; `--json` for machines; never a secret or a token.

use serde_json::Value;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_json_reports_healthy_unconsented_and_roleless_tenants() {
    let mut w = World::new().await;
    let healthy = w.tenant("contoso");
    w.tenant_with("fabrikam", false, &["Alert.Read.All"]);
    w.tenant_with("northwind", true, &[]);
    let run = w.run(&w.config(""), &["check", "--json"]).await;
    assert_eq!(
        run.code,
        Some(1),
        "one failing tenant makes check exit 1: {}",
        run.stderr
    );
    let results: Vec<Value> = serde_json::from_str(&run.stdout).expect("one JSON array");
    assert_eq!(results.len(), 3);

    let contoso = &results[0];
    assert_eq!(contoso["tenant"], "contoso");
    assert_eq!(contoso["tenant_id"], healthy.as_str());
    assert_eq!(contoso["ok"], true);
    assert_eq!(contoso["roles"], serde_json::json!(["Alert.Read.All"]));

    let fabrikam = &results[1];
    assert_eq!(fabrikam["ok"], false);
    assert_eq!(fabrikam["stage"], "token");
    assert!(fabrikam["problem"]
        .as_str()
        .unwrap()
        .contains("AADSTS700016"));
    assert!(fabrikam["hint"].as_str().unwrap().contains("consent-url"));

    let northwind = &results[2];
    assert_eq!(northwind["ok"], false);
    assert_eq!(northwind["stage"], "claims");
    assert!(northwind["problem"]
        .as_str()
        .unwrap()
        .contains("Alert.Read.All"));
    assert_eq!(northwind["roles"], serde_json::json!([]));

    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(SECRET), "no secret in check output");
        assert!(!text.contains("eyJ"), "no token in check output");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exits_zero_and_prints_a_table_when_all_is_well() {
    let mut w = World::new().await;
    w.tenant("contoso");
    let run = w.run(&w.config(""), &["check"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains("ok    contoso"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_url_points_at_the_login_host_with_the_app() {
    let mut w = World::new().await;
    w.tenant("contoso");
    let run = w.run(&w.config(""), &["consent-url"]).await;
    assert_eq!(run.code, Some(0));
    let url = run.stdout.lines().next().unwrap();
    assert_eq!(
        url,
        format!("{}/common/oauth2/authorize?prompt=consent&client_id={APP_ID}&response_type=code&sso_reload=true", w.sim.url())
    );
}
