//! STUB (replaced by the sim branch).
use std::time::Duration;
use crate::timestamp::Timestamp;
#[derive(Default)]
pub struct SimOptions { pub token_lifetime: Duration }
#[derive(Default)]
pub struct SimApp { pub client_id: String, pub secret: Option<String> }
pub struct SimTenant { pub tenant_id: String, pub consented_apps: Vec<String>, pub roles: Vec<String>, pub has_mde: bool }
pub struct Activity { pub every: Duration, pub new: u32, pub updates: u32, pub late_fraction: f64, pub max_late: Duration }
pub struct Simulator;
impl Simulator {
    pub async fn start(_o: SimOptions) -> std::io::Result<Simulator> { todo!() }
    pub fn url(&self) -> String { todo!() }
    pub fn add_app(&self, _a: SimApp) {}
    pub fn add_tenant(&self, _t: SimTenant) {}
    pub fn generate_alerts(&self, _t: &str, _n: usize, _f: Timestamp, _to: Timestamp) -> Vec<String> { todo!() }
    pub fn spawn_activity(&self, _t: &str, _a: Activity) {}
    pub fn shutdown(&self) {}
}
