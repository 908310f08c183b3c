//! `mde-poller demo`: the simulator on loopback with four tenants (one never
//! consented, one read through Microsoft Graph alerts_v2 with the alerts of
//! every Defender product), and the real daemon, with a real config file,
//! polling it.
//! Alerts appear on stdout within seconds; the log on stderr shows what an
//! operator would see, including the unconsented tenant's hint.

use std::time::Duration;

use anyhow::Context;

use crate::config;
use crate::daemon;
use crate::logging;
use crate::sim::{Activity, ClientConfig, ServiceSource, SimApp, SimOptions, SimTenant, Simulator};
use crate::timestamp::Timestamp;

const APP_ID: &str = "8a6e0c4f-1d2b-4c3a-9e5f-0a1b2c3d4e5f";
const DEMO_SECRET: &str = "demo-secret-not-a-real-one";
/// What every demo tenant does while the demo runs: a new alert and an
/// update every 2 s, a quarter of them late by up to 30 s.
const ACTIVITY: Activity = Activity {
    every: Duration::from_secs(2),
    new: 1,
    updates: 1,
    late_fraction: 0.25,
    max_late: Duration::from_secs(30),
};
const TENANTS: [(&str, &str, bool); 3] = [
    ("contoso", "11111111-1111-4111-8111-111111111111", true),
    ("fabrikam", "22222222-2222-4222-8222-222222222222", false),
    ("northwind", "33333333-3333-4333-8333-333333333333", true),
];
/// Read with `source = "graph"`: MDE alerts and the other products' beside them.
const GRAPH_TENANT: (&str, &str) = ("tailspin", "44444444-4444-4444-8444-444444444444");

pub async fn run(duration: Option<Duration>) -> anyhow::Result<()> {
    let sim = Simulator::start(SimOptions {
        token_lifetime: Duration::from_secs(120),
        ..SimOptions::default()
    })
    .context("starting the simulator on 127.0.0.1")?;
    sim.add_app(SimApp {
        client_id: APP_ID.to_owned(),
        secret: Some(DEMO_SECRET.to_owned()),
        ..SimApp::default()
    });
    let now = Timestamp::now();
    for (i, (_, id, consented)) in TENANTS.iter().enumerate() {
        sim.add_tenant(SimTenant {
            tenant_id: (*id).to_owned(),
            consented_apps: if *consented {
                vec![APP_ID.to_owned()]
            } else {
                vec![]
            },
            roles: vec!["Alert.Read.All".to_owned()],
            has_mde: true,
        });
        if *consented {
            sim.generate_alerts(
                id,
                12 + 8 * i,
                now.saturating_sub(Duration::from_secs(20 * 3600)),
                now,
            );
            sim.spawn_activity(id, ACTIVITY);
        }
    }

    let (_, graph_id) = GRAPH_TENANT;
    sim.add_tenant(SimTenant::graph(graph_id, APP_ID));
    let mut products = vec![ServiceSource::DefenderForEndpoint];
    products.extend(ServiceSource::GRAPH_ONLY);
    sim.generate_graph_alerts(
        graph_id,
        30,
        now.saturating_sub(Duration::from_secs(20 * 3600)),
        now,
        &products,
    );
    sim.spawn_graph_activity(graph_id, ACTIVITY, &[]);

    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let tenants: Vec<(String, String)> = TENANTS
        .iter()
        .map(|(name, id, _)| (*name, *id))
        .chain([GRAPH_TENANT])
        .map(|(name, id)| (name.to_owned(), id.to_owned()))
        .collect();
    let config_path = sim.write_client_config(
        dir.path(),
        &ClientConfig {
            client_id: APP_ID,
            secret: DEMO_SECRET,
            poll: "interval = \"3s\"\nlookback = \"1m\"\nfirst_lookback = \"24h\"\npage_size = 25",
            output: "-",
            log_format: "text",
            tenants: &tenants,
            graph: true,
            ..ClientConfig::default()
        },
    )?;
    // The Graph tenant beside the MDE ones: one line in its table.
    let table = format!("[tenants.{}]\n", GRAPH_TENANT.0);
    let text = std::fs::read_to_string(&config_path)?.replacen(
        &table,
        &format!("{table}source = \"graph\"\n"),
        1,
    );
    std::fs::write(&config_path, text)?;
    let settings = config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let log = logging::init(&settings.log);
    crate::events::demo_started(&sim.url(), &config_path);

    let stop = async move {
        match duration {
            Some(d) => tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = daemon::termination() => {}
            },
            None => daemon::termination().await,
        }
    };
    let result = daemon::run(&config_path, settings, Some(log), stop).await;
    sim.shutdown();
    result
}
