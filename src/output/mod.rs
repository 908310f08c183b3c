//! The output: each alert version as one JSON line (NDJSON) in the chosen
//! format ([`render`]), written in whole-line batches to stdout or an
//! appended file ([`Sink`]) that SIEM shippers tail.
//!
//! The [`Emitter`] is the one stream all tenants share; a poll writes a page
//! through a [`PageWriter`], which holds that stream and its format for the
//! whole page.
//!
//! The output never sees tokens or the database: `poll` hands it records and
//! records as emitted only what [`PageWriter::finish`] returned `Ok` for.

mod emitter;
mod formats;
mod sink;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::OutputFormat;
use crate::timestamp::Timestamp;

pub use emitter::{Emitter, PageWriteError, PageWriter};
pub use sink::Sink;

/// Why this version of the alert is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// The first version of this alert id seen for this tenant.
    New,
    /// The same id with a different `lastUpdateTime` or content.
    Update,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Update => "update",
        }
    }
}

/// One alert version to emit.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// When it is emitted (the line's `@timestamp`), not an alert time.
    pub timestamp: Timestamp,
    pub change: Change,
    /// The config name of the tenant whose token fetched the alert.
    pub tenant_name: &'a str,
    pub tenant_id: &'a str,
    /// The alert object as the API returned it.
    pub alert: &'a RawValue,
}

/// Appends `rec` in `format` to `buf` as exactly one line ending in `\n`.
///
/// On error `buf` is left as it was, so a batch only ever holds whole lines.
pub fn render(
    buf: &mut Vec<u8>,
    format: OutputFormat,
    rec: &Record,
) -> Result<(), serde_json::Error> {
    let start = buf.len();
    let result = match format {
        OutputFormat::Raw => {
            formats::raw(buf, rec);
            Ok(())
        }
        OutputFormat::Ecs => formats::ecs(buf, rec),
        OutputFormat::Ocsf => formats::ocsf(buf, rec),
    };
    match result {
        Ok(()) => {
            buf.push(b'\n');
            Ok(())
        }
        Err(e) => {
            buf.truncate(start);
            Err(e)
        }
    }
}
