//! STUB (replaced by the auth branch).
use crate::config::TenantSettings;
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("rejected")]
    Rejected { status: u16, error: String, codes: Vec<u32>, description: String },
    #[error("transport {0}")]
    Transport(String),
}
impl AuthError {
    pub fn is_transient(&self) -> bool { todo!() }
    pub fn is_persistent(&self) -> bool { todo!() }
    pub fn code(&self) -> Option<u32> { todo!() }
    pub fn hint(&self) -> &'static str { todo!() }
}
#[derive(Clone, Debug)]
pub struct AccessToken;
impl AccessToken {
    pub fn bearer(&self) -> &str { todo!() }
    pub fn claims(&self) -> Result<Claims, AuthError> { todo!() }
}
pub struct Claims { pub tid: Option<String>, pub roles: Vec<String>, pub appid: Option<String>, pub aud: Option<String>, pub exp: Option<i64> }
#[derive(Debug)]
pub struct TokenSource;
impl TokenSource {
    pub fn new(_http: reqwest::Client, _t: &TenantSettings) -> Result<TokenSource, AuthError> { todo!() }
    pub async fn token(&self) -> Result<AccessToken, AuthError> { todo!() }
    pub async fn invalidate(&self, _stale: &AccessToken) { todo!() }
    pub async fn fetch_fresh(&self) -> Result<AccessToken, AuthError> { todo!() }
}
