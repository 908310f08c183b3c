//! STUB (replaced by the store branch).
use crate::config::{OutputFormat, OutputTarget};
use crate::timestamp::Timestamp;
use serde_json::value::RawValue;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change { New, Update }
pub struct Record<'a> { pub timestamp: Timestamp, pub change: Change, pub tenant_name: &'a str, pub tenant_id: &'a str, pub alert: &'a RawValue }
pub fn render(_buf: &mut Vec<u8>, _f: OutputFormat, _r: &Record) -> Result<(), serde_json::Error> { todo!() }
pub struct Sink;
impl Sink {
    pub fn open(_t: &OutputTarget) -> std::io::Result<Sink> { todo!() }
    pub fn write_batch(&mut self, _b: &[u8]) -> std::io::Result<()> { todo!() }
    pub fn reopen(&mut self) -> std::io::Result<()> { todo!() }
    pub fn target(&self) -> &OutputTarget { todo!() }
}
