//! The output: each alert version as one JSON line (NDJSON) in the chosen
//! format ([`render`]), written in whole-line batches to stdout or an
//! appended file ([`Sink`]) that SIEM shippers tail.
//!
//! The [`Emitter`] is the one stream all tenants share; a poll writes a page
//! through a [`PageWriter`](emitter::PageWriter), which holds that stream and its format for the
//! whole page.
//!
//! The output never sees tokens or the database: `poll` hands it records and
//! records as emitted only what [`PageWriter::finish`](emitter::PageWriter::finish) returned `Ok` for.

mod ecs;
mod emitter;
mod formats;
mod ocsf;
mod sink;
mod view;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::OutputFormat;
use crate::timestamp::Timestamp;

pub(crate) use emitter::Emitter;
pub(crate) use sink::Sink;

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
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Update => "update",
        }
    }
}

/// Which API an alert came from: it decides how the alert object is read
/// and the record's `type` (`mde.alert` / `graph.alert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlertSource {
    /// `GET {api}/api/alerts` (Defender for Endpoint).
    #[default]
    Mde,
    /// `GET {graph}/v1.0/security/alerts_v2` (Microsoft Graph security API).
    Graph,
}

impl AlertSource {
    /// The record `type` of raw lines and the `event.dataset` of ECS.
    pub(crate) fn record_type(self) -> &'static str {
        match self {
            AlertSource::Mde => "mde.alert",
            AlertSource::Graph => "graph.alert",
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AlertSource::Mde => "mde",
            AlertSource::Graph => "graph",
        }
    }
}

/// An alert's id and update time as the poll already read them from the
/// alert, so that rendering computes the record's `record_id` without
/// reading the alert a second time (the back-fill's hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertVersion<'a> {
    /// The alert's `id`, decoded.
    pub id: &'a str,
    /// Its `lastUpdateTime` (MDE) or `lastUpdateDateTime` (Graph).
    pub updated: Timestamp,
}

/// One alert version to emit.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// When it is emitted (raw `@timestamp`, ECS `event.ingested`, OCSF
    /// `metadata.processed_time`), not an alert time.
    pub timestamp: Timestamp,
    pub change: Change,
    pub source: AlertSource,
    /// The config name of the tenant whose token fetched the alert.
    pub tenant_name: &'a str,
    pub tenant_id: &'a str,
    /// The alert object as the API returned it.
    pub alert: &'a RawValue,
    /// Its id and update time when the caller has read them already (they
    /// must be the alert's own); `None`: the output reads them itself.
    pub version: Option<AlertVersion<'a>>,
}

/// Appends `rec` in `format` to `buf` as exactly one line ending in `\n`.
///
/// It cannot fail: whatever the alert holds (lone surrogate escapes, nesting
/// deeper than a parser's limit, huge strings), a line is written, with what
/// cannot be mapped left out of the mapped fields and, as a last resort, the
/// alert in the raw envelope. A page is never held up by one odd alert.
pub fn render(
    buf: &mut Vec<u8>,
    format: OutputFormat,
    rec: &Record,
) -> Result<(), std::convert::Infallible> {
    let start = buf.len();
    let mapped = match format {
        OutputFormat::Raw => {
            formats::raw(buf, rec);
            Ok(())
        }
        OutputFormat::Ecs => ecs::render(buf, rec),
        OutputFormat::Ocsf => ocsf::render(buf, rec),
    };
    if mapped.is_err() {
        // Serialising values we built ourselves does not fail; should it
        // ever, the raw envelope still carries the alert.
        buf.truncate(start);
        formats::raw(buf, rec);
    }
    buf.push(b'\n');
    Ok(())
}
