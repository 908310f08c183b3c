//! STUB (replaced by the store branch).
use std::collections::HashMap;
use std::path::Path;
use crate::timestamp::Timestamp;
#[derive(Debug, thiserror::Error)]
#[error("store")]
pub struct StoreError;
impl StoreError { pub fn is_retryable(&self) -> bool { todo!() } }
#[derive(Debug, Clone)]
pub struct Cursor { pub text: String, pub at: Timestamp }
pub struct Known { pub last_update: Timestamp, pub content_hash: u64 }
pub struct EmittedVersion { pub alert_id: String, pub last_update_text: String, pub last_update: Timestamp, pub content_hash: u64 }
pub struct PollOutcome { pub ended: Timestamp, pub seen: u64, pub emitted: u64, pub error: Option<String>, pub cursor: Option<Cursor> }
#[derive(Debug, Clone)]
pub struct TenantStatus { pub name: String, pub tenant_id: String, pub last_poll_started: Option<Timestamp>, pub last_poll_ended: Option<Timestamp>, pub last_success: Option<Timestamp>, pub cursor: Option<Cursor>, pub alerts_stored: u64, pub last_error: Option<String> }
pub struct Store;
impl Store {
    pub fn open(_p: &Path) -> Result<Store, StoreError> { todo!() }
    pub fn open_read_only(_p: &Path) -> Result<Store, StoreError> { todo!() }
    pub fn cursor(&self, _t: &str) -> Result<Option<Cursor>, StoreError> { todo!() }
    pub fn known_versions(&self, _t: &str, _ids: &[&str]) -> Result<HashMap<String, Known>, StoreError> { todo!() }
    pub fn record_emitted(&self, _t: &str, _v: &[EmittedVersion], _at: Timestamp) -> Result<(), StoreError> { todo!() }
    pub fn begin_poll(&self, _n: &str, _t: &str, _s: Timestamp) -> Result<i64, StoreError> { todo!() }
    pub fn finish_poll(&self, _id: i64, _t: &str, _o: &PollOutcome) -> Result<(), StoreError> { todo!() }
    pub fn status(&self) -> Result<Vec<TenantStatus>, StoreError> { todo!() }
    pub fn prune(&self, _older: Timestamp) -> Result<(usize, usize), StoreError> { todo!() }
}
