//! The one decision of what counts as new: an incoming alert version against
//! the previous version of the same id (in the store, or earlier in this
//! page). Pure, so its table is tested without a store or a server.

use crate::output::Change;
use crate::timestamp::Timestamp;

/// What dedup compares: an alert version's update time and content hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version {
    /// `lastUpdateTime` at 100 ns ([`Timestamp::MIN`] when absent or unparseable).
    pub last_update: Timestamp,
    /// xxh3 of the alert's JSON text as the API returned it.
    pub hash: u64,
}

/// What to do with an incoming version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Emit it as the first version of its id.
    New,
    /// Emit it as a newer (or same-time but changed) version.
    Update,
    /// Emitted already, or older than what was emitted.
    Skip,
}

impl Class {
    /// The output's `change` field, `None` for a version not emitted.
    pub(crate) fn change(self) -> Option<Change> {
        match self {
            Class::New => Some(Change::New),
            Class::Update => Some(Change::Update),
            Class::Skip => None,
        }
    }
}

/// Classifies `incoming` against the `previous` version emitted for its id,
/// `now` being our clock (a version stamped ahead of it orders nothing).
pub(crate) fn classify(previous: Option<Version>, incoming: Version, now: Timestamp) -> Class {
    match previous {
        None => Class::New,
        // One instant with two contents (replicas that disagree): the larger
        // content hash wins, so each content is emitted at most once and the
        // two never take turns on later polls. The price: a real change that
        // kept lastUpdateTime and hashes lower is not emitted.
        Some(p) if p.last_update == incoming.last_update && incoming.hash <= p.hash => Class::Skip,
        // An older version read again (a lagging replica): emitting it would
        // make the SIEM's state go backwards. Unless the version held is
        // stamped ahead of our clock: a server clock ahead must not hide the
        // real, earlier-stamped updates that follow it.
        Some(p) if incoming.last_update < p.last_update && p.last_update <= now => Class::Skip,
        // Newer, or the same instant with other content (a field changed
        // without the server moving lastUpdateTime).
        Some(_) => Class::Update,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ticks: i64, hash: u64) -> Version {
        Version {
            last_update: Timestamp::from_ticks(ticks),
            hash,
        }
    }

    #[test]
    fn classify_table() {
        let cases = [
            ("first sight", None, v(10, 1), Class::New),
            ("first sight without a time", None, v(0, 1), Class::New),
            ("same version again", Some(v(10, 1)), v(10, 1), Class::Skip),
            ("newer time", Some(v(10, 1)), v(11, 2), Class::Update),
            (
                "newer time, same content",
                Some(v(10, 1)),
                v(11, 1),
                Class::Update,
            ),
            (
                "same time, other content (larger hash wins)",
                Some(v(10, 1)),
                v(10, 2),
                Class::Update,
            ),
            (
                "same time, other content with a smaller hash: no flip-flop",
                Some(v(10, 2)),
                v(10, 1),
                Class::Skip,
            ),
            (
                "older than a version stamped ahead of our clock",
                Some(v(1_000, 1)),
                v(50, 2),
                Class::Update,
            ),
            (
                "older version (lagging replica)",
                Some(v(10, 1)),
                v(9, 2),
                Class::Skip,
            ),
            ("older, same content", Some(v(10, 1)), v(9, 1), Class::Skip),
            (
                "time lost, content changed",
                Some(v(10, 1)),
                v(0, 3),
                Class::Skip,
            ),
        ];
        for (what, previous, incoming, want) in cases {
            assert_eq!(
                classify(previous, incoming, v(100, 0).last_update),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn only_emitted_classes_have_a_change() {
        assert_eq!(Class::New.change(), Some(Change::New));
        assert_eq!(Class::Update.change(), Some(Change::Update));
        assert_eq!(Class::Skip.change(), None);
    }
}
