//! The local state in SQLite: schema migrations, the alert versions already
//! emitted (dedup), each tenant's cursor, poll history and retention.
//!
//! The API is synchronous (rusqlite); async callers wrap each call in
//! `spawn_blocking` ([`blocking`] does it, with a short retry of a busy
//! database). One connection behind a `Mutex` is enough: the daemon's
//! writes are a few short transactions per poll, and it makes `Store`
//! `Send + Sync` so one `Arc<Store>` serves every tenant task.
//!
//! Tenants are keyed by tenant id (GUID), not by config name, so a renamed
//! tenant keeps its state. Times are stored as 100 ns ticks
//! ([`Timestamp::ticks`]), the API's own resolution.

use std::collections::HashMap;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::timestamp::Timestamp;

/// The embedded migrations: entry `i` brings the schema to version `i + 1`.
/// Append only; never edit a released file.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_status_budget_audit.sql"),
    include_str!("../migrations/0003_alert_source.sql"),
    include_str!("../migrations/0004_alert_keys.sql"),
];

/// WAL pages written before SQLite copies them back into the database (its
/// default is 1,000). A back-fill page dirties most of its tenant's part of
/// `alert_versions` (~1,800 pages at 100,000 alerts), so at the default every
/// commit was followed by a checkpoint that copied it all again and synced
/// twice; at 8,192 (32 MB of WAL) a checkpoint covers several pages' commits
/// and copies each database page once. It changes nothing a process crash
/// or `kill -9` can do (a commit is in the WAL); see `open` for power loss.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 8192;

/// The WAL file is cut back to this size after a checkpoint, so the 32 MB
/// a back-fill needs are not kept on disk for good.
const WAL_SIZE_LIMIT_BYTES: i64 = 8 << 20;

/// How `alert_versions` keys an alert (migration 0004): the tenant's part of
/// the table, and the alert's 128-bit key within it as (`id_key`,
/// `id_check`). The one definition, used by the store's statements and,
/// registered as SQL functions, by the migration that converted the rows.
pub(crate) fn tenant_key(tenant_id: &str) -> i64 {
    xxhash_rust::xxh3::xxh3_64(tenant_id.as_bytes()) as i64
}

/// See [`tenant_key`]: `(id_key, id_check)` of `alert_id` of `tenant_id`.
pub(crate) fn version_key(tenant_id: &str, alert_id: &str) -> (i64, i64) {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(tenant_id.as_bytes());
    h.update(b"\0");
    h.update(alert_id.as_bytes());
    let d = h.digest128();
    (d as u64 as i64, (d >> 64) as u64 as i64)
}

/// Registers the key functions migration 0004 (and `status`) call.
fn register_key_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("mde_tenant_key", 1, flags, |ctx| {
        Ok(tenant_key(&ctx.get::<String>(0)?))
    })?;
    conn.create_scalar_function("mde_id_key", 2, flags, |ctx| {
        Ok(version_key(&ctx.get::<String>(0)?, &ctx.get::<String>(1)?).0)
    })?;
    conn.create_scalar_function("mde_id_check", 2, flags, |ctx| {
        Ok(version_key(&ctx.get::<String>(0)?, &ctx.get::<String>(1)?).1)
    })
}

/// The newest schema version this build knows.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Why the store failed. Every message names the database file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "state database {} was written by a newer mde-poller (schema version {found}, this build \
         supports up to {supported}): upgrade mde-poller, or restore a backup of the database made \
         by this version",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    #[error(
        "state database {} is corrupt or not an SQLite database: stop mde-poller, move the file \
         aside (with its -wal and -shm files) and start again; a fresh database is created and \
         each tenant's first poll back-fills `poll.first_lookback`, which re-emits the alerts of \
         that period once",
        path.display()
    )]
    Corrupt { path: PathBuf },

    #[error(
        "state database {} does not exist (has the daemon run yet? is `store.path` right?)",
        path.display()
    )]
    Missing { path: PathBuf },

    #[error(
        "state database {} holds no mde-poller schema yet (schema version 0): start the daemon once",
        path.display()
    )]
    Uninitialized { path: PathBuf },

    #[error(
        "store.path {} is a directory: name a database file inside it, e.g. {}/state.db",
        path.display(),
        path.display()
    )]
    IsDirectory { path: PathBuf },

    #[error(
        "disk full while writing the state database {}: free space on that filesystem; the \
         transaction was rolled back and its batch will be repeated",
        path.display()
    )]
    DiskFull { path: PathBuf },

    #[error(
        "state database {} is read-only for this process ({detail}): the service user must own \
         the database file and its directory, and be able to write both",
        path.display()
    )]
    ReadOnly { path: PathBuf, detail: String },

    #[error("state database {} is busy (locked by another process): {source}", path.display())]
    Busy {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("cannot prepare the state database {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("state database {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// True when the same call may succeed if simply tried again later
    /// (another process held a lock past `busy_timeout`).
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Busy { .. })
    }

    fn from_sqlite(path: &Path, e: rusqlite::Error) -> Self {
        let path = path.to_owned();
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                StoreError::Busy { path, source: e }
            }
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
                StoreError::Corrupt { path }
            }
            Some(ErrorCode::DiskFull) => StoreError::DiskFull { path },
            Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => StoreError::ReadOnly {
                path,
                detail: e.to_string(),
            },
            _ => StoreError::Sqlite { path, source: e },
        }
    }

    fn from_io(path: &Path, e: io::Error) -> Self {
        let path = path.to_owned();
        match e.kind() {
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                StoreError::ReadOnly {
                    path,
                    detail: e.to_string(),
                }
            }
            io::ErrorKind::StorageFull => StoreError::DiskFull { path },
            _ => StoreError::Io { path, source: e },
        }
    }
}

pub(crate) type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A tenant's cursor: the newest `lastUpdateTime` it has emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// As the server wrote it (1 to 7 fractional digits).
    pub text: String,
    pub at: Timestamp,
}

/// The version of an alert last emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Known {
    pub last_update: Timestamp,
    pub content_hash: u64,
    /// Read from Microsoft Graph (else from the MDE API).
    pub from_graph: bool,
}

/// One alert version that was just written to the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EmittedVersion {
    pub alert_id: String,
    pub last_update: Timestamp,
    pub content_hash: u64,
    /// Read from Microsoft Graph (else from the MDE API).
    pub from_graph: bool,
}

/// How a poll ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PollOutcome {
    pub ended: Timestamp,
    /// Alerts returned by the API (all pages).
    pub seen: u64,
    /// Alert versions written to the output.
    pub emitted: u64,
    /// Calls to the alerts API (for the budget `status` shows).
    pub requests: u64,
    /// `None` on success.
    pub error: Option<String>,
    /// On success: what the server did wrong that the poll worked around;
    /// shown by `status` where errors are.
    pub warning: Option<String>,
    /// The newest `lastUpdateTime` emitted; stored only if newer than the
    /// current cursor.
    pub cursor: Option<Cursor>,
}

/// One tenant as `mde-poller status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TenantStatus {
    /// The config name at the tenant's latest poll.
    pub name: String,
    pub tenant_id: String,
    pub last_poll_started: Option<Timestamp>,
    pub last_poll_ended: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub cursor: Option<Cursor>,
    pub alerts_stored: u64,
    /// The error of the latest poll, cleared by a success.
    pub last_error: Option<String>,
    /// Alerts seen by the latest finished poll.
    pub last_poll_seen: Option<u64>,
    /// Alert versions emitted by the latest finished poll.
    pub last_poll_emitted: Option<u64>,
    /// Finished polls that failed since the last one that succeeded.
    pub consecutive_failures: u64,
    /// API calls recorded by polls started in the last minute and hour.
    pub calls_last_minute: u64,
    pub calls_last_hour: u64,
    /// The last audit; `None` until the tenant's first.
    pub last_audit: Option<AuditSummary>,
}

/// One audit of one tenant, as `status` shows it and the audit records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditSummary {
    pub ended: Timestamp,
    /// The start of the range compared (its end is `ended`).
    pub since: Timestamp,
    /// Alert versions the API holds in the range.
    pub in_api: u64,
    /// Of them, versions already emitted.
    pub emitted: u64,
    /// Versions in the API never emitted.
    pub missing: u64,
    /// Missing versions the audit emitted.
    pub repaired: u64,
}

/// The state database.
#[derive(Debug)]
pub(crate) struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

/// Connects and reads the schema version. This is the first statement that
/// reads the file: a corrupt file or one that is not a database fails here
/// (NOTADB), and a newer schema is refused before anything (even the journal
/// mode) is written to it.
fn connect(path: &Path, mode: OpenFlags) -> Result<(Connection, i64)> {
    let err = |e| StoreError::from_sqlite(path, e);
    let conn =
        Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(err)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
    register_key_functions(&conn).map_err(err)?;
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok((conn, found))
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date.
    pub(crate) fn open(path: &Path) -> Result<Store> {
        prepare_file(path)?;
        let err = |e| StoreError::from_sqlite(path, e);
        let (mut conn, _) = connect(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            crate::events::store_not_wal(path, &mode);
        }
        // In WAL mode, NORMAL survives a process crash or kill -9 (the WAL is
        // in the OS cache); only a power loss can drop the last commits. That
        // causes repeats, never losses: the output is written and fsynced
        // before the commit that records it, so a lost commit means those
        // versions are emitted again on the next poll. FULL would cost an
        // fsync per commit for nothing we need.
        //
        // With NORMAL the WAL is synced only at a checkpoint, so a power loss
        // may drop the commits since the last one (`WAL_AUTOCHECKPOINT_PAGES`
        // bounds how many): those versions are emitted again, with the same
        // `record_id`, never lost.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            .map_err(err)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        migrate(&mut conn, path)?;
        // The file may have been created by SQLite's WAL machinery with the
        // process umask: keep them as private as the database itself.
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            let _ = std::fs::set_permissions(&side, Permissions::from_mode(0o600));
        }
        Ok(Store {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    /// Opens an existing database for reading only (`mde-poller status`):
    /// never creates, never migrates, and reads while the daemon writes
    /// (WAL readers do not block the writer).
    pub(crate) fn open_read_only(path: &Path) -> Result<Store> {
        if path.is_dir() {
            return Err(StoreError::IsDirectory {
                path: path.to_owned(),
            });
        }
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_owned(),
            });
        }
        let (conn, found) = connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        if found == 0 {
            return Err(StoreError::Uninitialized {
                path: path.to_owned(),
            });
        }
        Ok(Store {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock dropped its transaction (rolled
        // back), so the connection itself is still sound.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError::from_sqlite(&self.path, e)
    }

    /// The tenant's cursor, `None` before its first successful poll.
    pub(crate) fn cursor(&self, tenant_id: &str) -> Result<Option<Cursor>> {
        let conn = self.lock();
        let row = conn
            .prepare_cached(
                "SELECT cursor_text, cursor_ticks FROM tenants \
                 WHERE tenant_id = ?1 AND cursor_ticks IS NOT NULL",
            )
            .and_then(|mut st| {
                st.query_row([tenant_id], |r| {
                    Ok(Cursor {
                        text: r.get(0)?,
                        at: Timestamp::from_ticks(r.get(1)?),
                    })
                })
                .optional()
            })
            .map_err(|e| self.err(e))?;
        Ok(row)
    }

    /// The last emitted version of each of `ids` that has one; ids never
    /// emitted are absent from the map.
    pub(crate) fn known_versions(
        &self,
        tenant_id: &str,
        ids: &[&str],
    ) -> Result<HashMap<String, Known>> {
        let mut conn = self.lock();
        let run = |conn: &mut Connection| -> rusqlite::Result<HashMap<String, Known>> {
            // One read transaction: one consistent snapshot and one lock
            // acquisition for the whole batch instead of one per id.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
            let mut found = HashMap::with_capacity(ids.len());
            {
                let mut st = tx.prepare_cached(
                    "SELECT id_check, last_update_ticks, content_hash, from_graph \
                     FROM alert_versions WHERE tenant_key = ?1 AND id_key = ?2",
                )?;
                let tenant = tenant_key(tenant_id);
                // In key order, like `record_emitted`: one visit per B-tree page.
                let mut sorted: Vec<(i64, i64, &str)> = ids
                    .iter()
                    .map(|id| {
                        let (key, check) = version_key(tenant_id, id);
                        (key, check, *id)
                    })
                    .collect();
                sorted.sort_unstable();
                sorted.dedup();
                for (key, check, id) in sorted {
                    let row = st
                        .query_row(params![tenant, key], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                Known {
                                    last_update: Timestamp::from_ticks(r.get(1)?),
                                    content_hash: r.get::<_, i64>(2)? as u64,
                                    from_graph: r.get::<_, i64>(3)? != 0,
                                },
                            ))
                        })
                        .optional()?;
                    // Another alert's row (a 64-bit collision): this one is
                    // unknown, and emitting it again is the safe side.
                    if let Some((stored_check, known)) = row {
                        if stored_check == check {
                            found.insert(id.to_owned(), known);
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(found)
        };
        run(&mut conn).map_err(|e| self.err(e))
    }

    /// Records versions just written (and flushed) to the output, in one
    /// transaction: the latest version per alert id replaces the previous.
    pub(crate) fn record_emitted(
        &self,
        tenant_id: &str,
        versions: &[EmittedVersion],
    ) -> Result<()> {
        if versions.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock();
        let run = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The alerts row references its tenant; `begin_poll` normally made
            // the tenant row already, this keeps a direct caller from failing
            // on the foreign key (the id stands in for the name until then).
            tx.prepare_cached("INSERT OR IGNORE INTO tenants (tenant_id, name) VALUES (?1, ?1)")?
                .execute([tenant_id])?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO alert_versions (tenant_key, id_key, id_check, \
                         last_update_ticks, content_hash, from_graph) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                     ON CONFLICT (tenant_key, id_key) DO UPDATE SET \
                         id_check = excluded.id_check, \
                         last_update_ticks = excluded.last_update_ticks, \
                         content_hash = excluded.content_hash, \
                         from_graph = excluded.from_graph",
                )?;
                let tenant = tenant_key(tenant_id);
                // In key order: each B-tree page is visited once per batch
                // instead of at random, which keeps a 10,000-version page from
                // thrashing SQLite's page cache (stable: a later version of
                // the same id still lands last).
                let mut sorted: Vec<(i64, i64, &EmittedVersion)> = versions
                    .iter()
                    .map(|v| {
                        let (key, check) = version_key(tenant_id, &v.alert_id);
                        (key, check, v)
                    })
                    .collect();
                sorted.sort_by_key(|&(key, _, _)| key);
                for (key, check, v) in sorted {
                    st.execute(params![
                        tenant,
                        key,
                        check,
                        v.last_update.ticks(),
                        v.content_hash as i64,
                        i64::from(v.from_graph),
                    ])?;
                }
            }
            tx.commit()
        };
        run(&mut conn).map_err(|e| self.err(e))
    }

    /// Starts a poll: creates or renames the tenant row, records the start,
    /// and returns the new poll's id for [`Store::finish_poll`].
    pub(crate) fn begin_poll(
        &self,
        tenant_name: &str,
        tenant_id: &str,
        started: Timestamp,
    ) -> Result<i64> {
        let mut conn = self.lock();
        let run = |conn: &mut Connection| -> rusqlite::Result<i64> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT INTO tenants (tenant_id, name, last_poll_started) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET \
                     name = excluded.name, last_poll_started = excluded.last_poll_started",
            )?
            .execute(params![tenant_id, tenant_name, started.ticks()])?;
            tx.prepare_cached("INSERT INTO polls (tenant_id, started) VALUES (?1, ?2)")?
                .execute(params![tenant_id, started.ticks()])?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(id)
        };
        run(&mut conn).map_err(|e| self.err(e))
    }

    /// Ends a poll in one transaction: its row, the tenant's last result, and
    /// the cursor, which only ever moves forward.
    pub(crate) fn finish_poll(
        &self,
        poll_id: i64,
        tenant_id: &str,
        outcome: &PollOutcome,
    ) -> Result<()> {
        let mut conn = self.lock();
        let ended = outcome.ended.ticks();
        let run = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "UPDATE polls SET ended = ?2, seen = ?3, emitted = ?4, error = ?5, requests = ?6 \
                 WHERE id = ?1",
            )?
            .execute(params![
                poll_id,
                ended,
                outcome.seen as i64,
                outcome.emitted as i64,
                outcome.error,
                outcome.requests as i64,
            ])?;
            match &outcome.error {
                None => tx
                    .prepare_cached(
                        "UPDATE tenants SET last_poll_ended = ?2, last_success = ?2, \
                         last_error = ?3 WHERE tenant_id = ?1",
                    )?
                    .execute(params![tenant_id, ended, outcome.warning])?,
                Some(error) => tx
                    .prepare_cached(
                        "UPDATE tenants SET last_poll_ended = ?2, last_error = ?3 \
                         WHERE tenant_id = ?1",
                    )?
                    .execute(params![tenant_id, ended, error])?,
            };
            if let Some(cursor) = &outcome.cursor {
                // Never backwards: a late poll or a clock oddity must not
                // widen the next window past what `lookback` already covers
                // or, worse, shrink the stored cursor and re-read old days.
                tx.prepare_cached(
                    "UPDATE tenants SET cursor_text = ?2, cursor_ticks = ?3 \
                     WHERE tenant_id = ?1 AND (cursor_ticks IS NULL OR cursor_ticks < ?3)",
                )?
                .execute(params![tenant_id, cursor.text, cursor.at.ticks()])?;
            }
            tx.commit()
        };
        run(&mut conn).map_err(|e| self.err(e))
    }

    /// When the tenant's oldest recorded poll started (`None`: never polled):
    /// with `first_lookback`, how far back the store can hold its alerts.
    pub(crate) fn first_poll(&self, tenant_id: &str) -> Result<Option<Timestamp>> {
        let conn = self.lock();
        conn.prepare_cached("SELECT min(started) FROM polls WHERE tenant_id = ?1")
            .and_then(|mut st| st.query_row([tenant_id], |r| r.get::<_, Option<i64>>(0)))
            .map(|t| t.map(Timestamp::from_ticks))
            .map_err(|e| self.err(e))
    }

    /// When the tenant's last audit ended (`None` before its first).
    pub(crate) fn last_audit_ended(&self, tenant_id: &str) -> Result<Option<Timestamp>> {
        let conn = self.lock();
        conn.prepare_cached("SELECT last_audit_ended FROM tenants WHERE tenant_id = ?1")
            .and_then(|mut st| {
                st.query_row([tenant_id], |r| r.get::<_, Option<i64>>(0))
                    .optional()
            })
            .map(|t| t.flatten().map(Timestamp::from_ticks))
            .map_err(|e| self.err(e))
    }

    /// Records the tenant's last audit (the audit calls it when it ends).
    pub(crate) fn record_audit(&self, tenant_id: &str, audit: &AuditSummary) -> Result<()> {
        let conn = self.lock();
        conn.prepare_cached(
            "UPDATE tenants SET last_audit_ended = ?2, last_audit_since = ?3, \
             last_audit_in_api = ?4, last_audit_emitted = ?5, last_audit_missing = ?6, \
             last_audit_repaired = ?7 WHERE tenant_id = ?1",
        )
        .and_then(|mut st| {
            st.execute(params![
                tenant_id,
                audit.ended.ticks(),
                audit.since.ticks(),
                audit.in_api as i64,
                audit.emitted as i64,
                audit.missing as i64,
                audit.repaired as i64,
            ])
        })
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// Every tenant the database knows, sorted by name; the call counts are
    /// over the minute and hour before `now`.
    pub(crate) fn status(&self) -> Result<Vec<TenantStatus>> {
        self.status_at(Timestamp::now())
    }

    pub(crate) fn status_at(&self, now: Timestamp) -> Result<Vec<TenantStatus>> {
        let minute_ago = now.saturating_sub(Duration::from_secs(60)).ticks();
        let hour_ago = now.saturating_sub(Duration::from_secs(3600)).ticks();
        let conn = self.lock();
        let run = || -> rusqlite::Result<Vec<TenantStatus>> {
            let mut st = conn.prepare(
                "SELECT t.name, t.tenant_id, t.last_poll_started, t.last_poll_ended, \
                        t.last_success, t.cursor_text, t.cursor_ticks, t.last_error, \
                        (SELECT count(*) FROM alert_versions a \
                            WHERE a.tenant_key = mde_tenant_key(t.tenant_id)), \
                        p.seen, p.emitted, \
                        (SELECT count(*) FROM polls f WHERE f.tenant_id = t.tenant_id \
                            AND f.ended IS NOT NULL AND f.error IS NOT NULL \
                            AND f.id > coalesce((SELECT max(id) FROM polls s \
                                WHERE s.tenant_id = t.tenant_id AND s.ended IS NOT NULL \
                                AND s.error IS NULL), 0)), \
                        (SELECT coalesce(sum(requests), 0) FROM polls m \
                            WHERE m.tenant_id = t.tenant_id AND m.started >= ?1), \
                        (SELECT coalesce(sum(requests), 0) FROM polls h \
                            WHERE h.tenant_id = t.tenant_id AND h.started >= ?2), \
                        t.last_audit_ended, t.last_audit_since, t.last_audit_in_api, \
                        t.last_audit_emitted, t.last_audit_missing, t.last_audit_repaired \
                 FROM tenants t \
                 LEFT JOIN polls p ON p.id = (SELECT max(id) FROM polls \
                     WHERE tenant_id = t.tenant_id AND ended IS NOT NULL) \
                 ORDER BY t.name, t.tenant_id",
            )?;
            let rows = st.query_map([minute_ago, hour_ago], |r| {
                let ts = |i: usize| -> rusqlite::Result<Option<Timestamp>> {
                    Ok(r.get::<_, Option<i64>>(i)?.map(Timestamp::from_ticks))
                };
                let cursor = match (r.get::<_, Option<String>>(5)?, ts(6)?) {
                    (Some(text), Some(at)) => Some(Cursor { text, at }),
                    _ => None,
                };
                Ok(TenantStatus {
                    name: r.get(0)?,
                    tenant_id: r.get(1)?,
                    last_poll_started: ts(2)?,
                    last_poll_ended: ts(3)?,
                    last_success: ts(4)?,
                    cursor,
                    last_error: r.get(7)?,
                    alerts_stored: r.get::<_, i64>(8)? as u64,
                    last_poll_seen: r.get::<_, Option<i64>>(9)?.map(|n| n as u64),
                    last_poll_emitted: r.get::<_, Option<i64>>(10)?.map(|n| n as u64),
                    consecutive_failures: r.get::<_, i64>(11)? as u64,
                    calls_last_minute: r.get::<_, i64>(12)? as u64,
                    calls_last_hour: r.get::<_, i64>(13)? as u64,
                    last_audit: audit(r, 14)?,
                })
            })?;
            rows.collect()
        };
        run().map_err(|e| self.err(e))
    }

    /// Retention: forgets alerts last updated before `older_than` and polls
    /// started before it. Returns (alerts, polls) deleted.
    ///
    /// A forgotten alert that comes back later is emitted again as `new`;
    /// with a retention far longer than `lookback` that only happens when the
    /// alert really changed after months.
    pub(crate) fn prune(&self, older_than: Timestamp) -> Result<(usize, usize)> {
        let mut conn = self.lock();
        let run = |conn: &mut Connection| -> rusqlite::Result<(usize, usize)> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let alerts = tx.execute(
                "DELETE FROM alert_versions WHERE last_update_ticks < ?1",
                [older_than.ticks()],
            )?;
            let polls = tx.execute("DELETE FROM polls WHERE started < ?1", [older_than.ticks()])?;
            tx.commit()?;
            Ok((alerts, polls))
        };
        run(&mut conn).map_err(|e| self.err(e))
    }
}

/// The audit columns from `at` on, `None` when no audit ran.
fn audit(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<AuditSummary>> {
    let Some(ended) = r.get::<_, Option<i64>>(at)? else {
        return Ok(None);
    };
    let n = |i: usize| -> rusqlite::Result<u64> {
        Ok(r.get::<_, Option<i64>>(at + i)?.unwrap_or(0) as u64)
    };
    Ok(Some(AuditSummary {
        ended: Timestamp::from_ticks(ended),
        since: Timestamp::from_ticks(r.get::<_, Option<i64>>(at + 1)?.unwrap_or(0)),
        in_api: n(2)?,
        emitted: n(3)?,
        missing: n(4)?,
        repaired: n(5)?,
    }))
}

/// Creates the directory (0700) and the file (0600) before SQLite opens it,
/// so the database is never readable by others, not even for an instant.
fn prepare_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(StoreError::IsDirectory {
            path: path.to_owned(),
        });
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| StoreError::from_io(path, e))?;
        }
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::from_io(path, e))?;
    // An existing file (older install, restored backup) may be wider.
    let meta = file.metadata().map_err(|e| StoreError::from_io(path, e))?;
    if meta.permissions().mode() & 0o777 != 0o600 {
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(|e| StoreError::from_io(path, e))?;
    }
    Ok(())
}

/// Applies every migration newer than the file's `user_version`, each in
/// one transaction together with the version bump, so a crash mid-way leaves
/// the previous version intact.
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let err = |e| StoreError::from_sqlite(path, e);
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        // IMMEDIATE takes the write lock first, then re-reads the version:
        // two processes starting at once cannot apply the same step twice.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found >= version {
            continue;
        }
        tx.execute_batch(sql).map_err(err)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(err)?;
        tx.commit().map_err(err)?;
    }
    Ok(())
}

/// Runs a store call on the blocking pool (SQLite calls block: never on a
/// runtime thread), trying a busy database again a few times.
///
/// `busy_timeout` (5 s) already waits for a lock held by another connection,
/// but SQLite returns BUSY at once, without its busy handler, where waiting
/// could deadlock or cannot help (a WAL being recovered by another process, a
/// read snapshot that cannot be upgraded to a write), and a second process (a
/// `status`, a backup) may hold the lock past 5 s. Those are rare and pass in
/// well under a second, so five short retries (1.5 s in all) keep them from
/// failing a poll; a lock held longer still fails it, and the next poll
/// repeats it.
pub(crate) async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl Fn(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || {
        let mut tries = 0;
        loop {
            match f(&store) {
                Err(e) if e.is_retryable() && tries < 5 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100 * tries));
                }
                other => return other,
            }
        }
    })
    .await
    .expect("store task panicked")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const TENANT: &str = "11111111-1111-1111-1111-111111111111";

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn version(id: &str, at: &str, hash: u64) -> EmittedVersion {
        EmittedVersion {
            alert_id: id.to_owned(),
            last_update: ts(at),
            content_hash: hash,
            from_graph: false,
        }
    }

    fn success(ended: &str, cursor: Option<&str>) -> PollOutcome {
        PollOutcome {
            ended: ts(ended),
            seen: 3,
            emitted: 2,
            requests: 4,
            error: None,
            warning: None,
            cursor: cursor.map(|c| Cursor {
                text: c.to_owned(),
                at: ts(c),
            }),
        }
    }

    fn user_version(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn store_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Store>();
    }

    #[test]
    fn migrations_apply_once_and_reopening_keeps_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).unwrap();
        store
            .record_emitted(TENANT, &[version("a", "2026-01-01T00:00:00Z", 1)])
            .unwrap();
        drop(store);
        assert_eq!(user_version(&path), SCHEMA_VERSION);

        let store = Store::open(&path).unwrap();
        assert_eq!(user_version(&path), SCHEMA_VERSION);
        let known = store.known_versions(TENANT, &["a"]).unwrap();
        assert_eq!(known["a"].content_hash, 1);
    }

    #[test]
    fn creates_a_private_directory_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("var/lib/mde-poller/state.db");
        let _store = Store::open(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn tightens_an_existing_world_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(Store::open(&path).unwrap());
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let _store = Store::open(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn refuses_a_database_from_a_newer_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 999)
            .unwrap();

        let e = Store::open(&path).unwrap_err();
        assert!(
            matches!(e, StoreError::TooNew { found: 999, supported, .. } if supported == SCHEMA_VERSION),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("upgrade mde-poller"), "{msg}");
        assert!(msg.contains("backup"), "{msg}");
        // `status` refuses it too rather than misreading a changed schema.
        let e = Store::open_read_only(&path).unwrap_err();
        assert!(matches!(e, StoreError::TooNew { .. }), "{e:?}");
        // And nothing was written: the version is still the newer one.
        assert_eq!(user_version(&path), 999);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_reported_corrupt_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(
            &path,
            b"this is not an SQLite database, just some garbage".repeat(100),
        )
        .unwrap();
        let e = Store::open(&path).unwrap_err();
        assert!(
            matches!(&e, StoreError::Corrupt { path: p } if *p == path),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("move the file"), "{msg}");
        assert!(msg.contains("first_lookback"), "{msg}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn read_only_open_refuses_a_missing_file_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let e = Store::open_read_only(&path).unwrap_err();
        assert!(matches!(e, StoreError::Missing { .. }), "{e:?}");
        assert!(e.to_string().contains(&path.display().to_string()));
        assert!(!path.exists());
    }

    /// Tests run as root, where `chmod 0400` does not stop writes, so a
    /// permission test would pass for the wrong reason. Instead the database
    /// is opened with SQLITE_OPEN_READONLY (what SQLite also falls back to
    /// when the file is not writable), so the write really fails with
    /// SQLITE_READONLY, and we check how that is reported.
    #[test]
    fn a_write_to_a_read_only_database_names_the_path_and_the_owner_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(Store::open(&path).unwrap());
        let ro = Store::open_read_only(&path).unwrap();
        let e = ro
            .record_emitted(TENANT, &[version("a", "2026-01-01T00:00:00Z", 1)])
            .unwrap_err();
        assert!(matches!(e, StoreError::ReadOnly { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("service user must own"), "{msg}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn read_only_store_reads_while_the_daemon_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let rw = Store::open(&path).unwrap();
        let ro = Store::open_read_only(&path).unwrap();
        rw.begin_poll("contoso", TENANT, ts("2026-01-01T00:00:00Z"))
            .unwrap();
        assert_eq!(ro.status().unwrap().len(), 1);
        rw.record_emitted(TENANT, &[version("a", "2026-01-01T00:00:00Z", 1)])
            .unwrap();
        assert_eq!(ro.status().unwrap()[0].alerts_stored, 1);
    }

    #[test]
    fn busy_and_locked_are_retryable_and_others_are_not() {
        let path = Path::new("/var/lib/mde-poller/state.db");
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let e = StoreError::from_sqlite(path, busy);
        assert!(e.is_retryable(), "{e:?}");
        let locked = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_LOCKED),
            None,
        );
        assert!(StoreError::from_sqlite(path, locked).is_retryable());
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let e = StoreError::from_sqlite(path, full);
        assert!(matches!(e, StoreError::DiskFull { .. }), "{e:?}");
        assert!(!e.is_retryable());
        let msg = e.to_string();
        assert!(
            msg.contains("disk full") && msg.contains("/var/lib/mde-poller/state.db"),
            "{msg}"
        );
    }

    #[test]
    fn cursor_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        assert_eq!(store.cursor(TENANT).unwrap(), None);

        let poll = store
            .begin_poll("contoso", TENANT, ts("2026-01-01T00:00:00Z"))
            .unwrap();
        store
            .finish_poll(
                poll,
                TENANT,
                &success("2026-01-01T00:00:01Z", Some("2026-01-01T00:00:00.57Z")),
            )
            .unwrap();
        let c = store.cursor(TENANT).unwrap().unwrap();
        assert_eq!(c.text, "2026-01-01T00:00:00.57Z");
        assert_eq!(c.at, ts("2026-01-01T00:00:00.57Z"));

        // An older cursor is ignored...
        let poll = store
            .begin_poll("contoso", TENANT, ts("2026-01-01T00:05:00Z"))
            .unwrap();
        store
            .finish_poll(
                poll,
                TENANT,
                &success("2026-01-01T00:05:01Z", Some("2026-01-01T00:00:00.5699999Z")),
            )
            .unwrap();
        assert_eq!(
            store.cursor(TENANT).unwrap().unwrap().text,
            "2026-01-01T00:00:00.57Z"
        );
        // ...so is none at all...
        let poll = store
            .begin_poll("contoso", TENANT, ts("2026-01-01T00:10:00Z"))
            .unwrap();
        store
            .finish_poll(poll, TENANT, &success("2026-01-01T00:10:01Z", None))
            .unwrap();
        assert_eq!(
            store.cursor(TENANT).unwrap().unwrap().text,
            "2026-01-01T00:00:00.57Z"
        );
        // ...and one newer by a single tick moves it.
        let poll = store
            .begin_poll("contoso", TENANT, ts("2026-01-01T00:15:00Z"))
            .unwrap();
        store
            .finish_poll(
                poll,
                TENANT,
                &success("2026-01-01T00:15:01Z", Some("2026-01-01T00:00:00.5700001Z")),
            )
            .unwrap();
        assert_eq!(
            store.cursor(TENANT).unwrap().unwrap().text,
            "2026-01-01T00:00:00.5700001Z"
        );
    }

    #[test]
    fn known_versions_round_trip_including_full_64_bit_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        store
            .record_emitted(
                TENANT,
                &[
                    version("a", "2026-01-01T00:00:00.1234567Z", u64::MAX),
                    version("b", "2026-01-01T00:00:01Z", 0),
                ],
            )
            .unwrap();
        let known = store
            .known_versions(TENANT, &["a", "b", "never-seen"])
            .unwrap();
        assert_eq!(known.len(), 2);
        assert_eq!(
            known["a"],
            Known {
                last_update: ts("2026-01-01T00:00:00.1234567Z"),
                content_hash: u64::MAX,
                from_graph: false,
            }
        );
        assert_eq!(known["b"].content_hash, 0);

        // A newer version replaces the old one.
        store
            .record_emitted(TENANT, &[version("a", "2026-01-03T00:00:00Z", 42)])
            .unwrap();
        let known = store.known_versions(TENANT, &["a"]).unwrap();
        assert_eq!(known["a"].last_update, ts("2026-01-03T00:00:00Z"));
        assert_eq!(known["a"].content_hash, 42);

        // Tenants are isolated: the same alert id elsewhere is unknown.
        let other = "22222222-2222-2222-2222-222222222222";
        assert!(store.known_versions(other, &["a"]).unwrap().is_empty());
    }

    #[test]
    fn ten_thousand_versions_are_recorded_and_looked_up_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let versions: Vec<_> = (0..10_000)
            .map(|i| {
                version(
                    &format!("da6374729003828388{i:05}_1364969609"),
                    "2026-01-01T00:00:00Z",
                    i,
                )
            })
            .collect();
        let t = Instant::now();
        store.record_emitted(TENANT, &versions).unwrap();
        let write = t.elapsed();
        let ids: Vec<&str> = versions.iter().map(|v| v.alert_id.as_str()).collect();
        let t = Instant::now();
        let known = store.known_versions(TENANT, &ids).unwrap();
        let read = t.elapsed();
        assert_eq!(known.len(), 10_000);
        assert_eq!(known[ids[1234]].content_hash, 1234);
        // Generous bounds: this runs unoptimised and beside other tests; the
        // release targets are 100 ms / 50 ms (see the report in the log).
        eprintln!("record_emitted 10k: {write:?}, known_versions 10k: {read:?}");
        assert!(
            write < Duration::from_secs(2),
            "record_emitted took {write:?}"
        );
        assert!(
            read < Duration::from_secs(1),
            "known_versions took {read:?}"
        );
    }

    #[test]
    fn status_counts_failures_since_the_last_success_the_calls_and_the_audit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let poll = |at: &str, ended: &str, requests: u64, error: Option<&str>| {
            let p = store.begin_poll("contoso", TENANT, ts(at)).unwrap();
            let outcome = PollOutcome {
                ended: ts(ended),
                seen: 0,
                emitted: 0,
                requests,
                error: error.map(str::to_owned),
                warning: None,
                cursor: None,
            };
            store.finish_poll(p, TENANT, &outcome).unwrap();
        };
        poll(
            "2026-01-01T09:59:00Z",
            "2026-01-01T09:59:01Z",
            7,
            Some("HTTP 503"),
        );
        poll("2026-01-01T10:10:00Z", "2026-01-01T10:10:01Z", 30, None);
        poll(
            "2026-01-01T10:58:00Z",
            "2026-01-01T10:58:01Z",
            5,
            Some("HTTP 503"),
        );
        poll(
            "2026-01-01T10:59:30Z",
            "2026-01-01T10:59:31Z",
            2,
            Some("HTTP 500"),
        );
        // A poll still running counts nothing yet.
        store
            .begin_poll("contoso", TENANT, ts("2026-01-01T10:59:50Z"))
            .unwrap();
        let s = &store.status_at(ts("2026-01-01T11:00:00Z")).unwrap()[0];
        assert_eq!(s.consecutive_failures, 2, "two failures after the success");
        assert_eq!(s.calls_last_minute, 2);
        assert_eq!(
            s.calls_last_hour,
            30 + 5 + 2,
            "the 09:59 poll is over an hour ago"
        );
        assert_eq!(s.last_audit, None);

        let audit = AuditSummary {
            ended: ts("2026-01-01T11:00:00Z"),
            since: ts("2025-12-25T11:00:00Z"),
            in_api: 120,
            emitted: 118,
            missing: 2,
            repaired: 2,
        };
        store.record_audit(TENANT, &audit).unwrap();
        poll("2026-01-01T11:01:00Z", "2026-01-01T11:01:01Z", 1, None);
        let s = &store.status_at(ts("2026-01-01T11:02:00Z")).unwrap()[0];
        assert_eq!(s.consecutive_failures, 0, "a success resets the count");
        assert_eq!(s.last_audit.as_ref(), Some(&audit));
    }

    #[test]
    fn status_reports_each_tenant_by_its_latest_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let other = "22222222-2222-2222-2222-222222222222";

        let p = store
            .begin_poll("old-name", TENANT, ts("2026-01-01T00:00:00Z"))
            .unwrap();
        store
            .record_emitted(
                TENANT,
                &[
                    version("a", "2026-01-01T00:00:00Z", 1),
                    version("b", "2026-01-01T00:00:00Z", 2),
                ],
            )
            .unwrap();
        store
            .finish_poll(
                p,
                TENANT,
                &success("2026-01-01T00:00:02Z", Some("2026-01-01T00:00:00Z")),
            )
            .unwrap();
        // Renamed in the config: same id, same state.
        let p = store
            .begin_poll("contoso", TENANT, ts("2026-01-01T00:05:00Z"))
            .unwrap();
        store
            .finish_poll(
                p,
                TENANT,
                &PollOutcome {
                    ended: ts("2026-01-01T00:05:03Z"),
                    seen: 0,
                    emitted: 0,
                    requests: 1,
                    error: Some("HTTP 503 from the alerts API".into()),
                    warning: None,
                    cursor: None,
                },
            )
            .unwrap();
        // A tenant whose first poll is still running.
        store
            .begin_poll("fabrikam", other, ts("2026-01-01T00:05:00Z"))
            .unwrap();

        let status = store.status().unwrap();
        assert_eq!(status.len(), 2);
        let c = &status[0];
        assert_eq!(c.name, "contoso");
        assert_eq!(c.tenant_id, TENANT);
        assert_eq!(c.last_poll_started, Some(ts("2026-01-01T00:05:00Z")));
        assert_eq!(c.last_poll_ended, Some(ts("2026-01-01T00:05:03Z")));
        assert_eq!(c.last_success, Some(ts("2026-01-01T00:00:02Z")));
        assert_eq!(c.cursor.as_ref().unwrap().text, "2026-01-01T00:00:00Z");
        assert_eq!(c.alerts_stored, 2);
        assert_eq!(
            c.last_error.as_deref(),
            Some("HTTP 503 from the alerts API")
        );
        assert_eq!((c.last_poll_seen, c.last_poll_emitted), (Some(0), Some(0)));

        let f = &status[1];
        assert_eq!(f.name, "fabrikam");
        assert_eq!(f.last_poll_started, Some(ts("2026-01-01T00:05:00Z")));
        assert_eq!(
            (f.last_poll_ended, f.last_success, f.cursor.clone()),
            (None, None, None)
        );
        assert_eq!((f.alerts_stored, f.last_poll_seen), (0, None));

        // A later success clears the error.
        let p = store
            .begin_poll("contoso", TENANT, ts("2026-01-01T00:10:00Z"))
            .unwrap();
        store
            .finish_poll(p, TENANT, &success("2026-01-01T00:10:01Z", None))
            .unwrap();
        let c = &store.status().unwrap()[0];
        assert_eq!(c.last_error, None);
        assert_eq!(c.last_success, Some(ts("2026-01-01T00:10:01Z")));
        assert_eq!((c.last_poll_seen, c.last_poll_emitted), (Some(3), Some(2)));
    }

    #[test]
    fn prune_forgets_old_alerts_and_polls_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let p = store
            .begin_poll("contoso", TENANT, ts("2026-01-01T00:00:00Z"))
            .unwrap();
        store
            .finish_poll(p, TENANT, &success("2026-01-01T00:00:01Z", None))
            .unwrap();
        store
            .begin_poll("contoso", TENANT, ts("2026-03-01T00:00:00Z"))
            .unwrap();
        store
            .record_emitted(
                TENANT,
                &[
                    version("old", "2026-01-01T00:00:00Z", 1),
                    version("new", "2026-03-01T00:00:00Z", 2),
                ],
            )
            .unwrap();

        assert_eq!(store.prune(ts("2026-02-01T00:00:00Z")).unwrap(), (1, 1));
        let known = store.known_versions(TENANT, &["old", "new"]).unwrap();
        assert!(!known.contains_key("old"));
        assert!(known.contains_key("new"));
        // The tenant and its cursor survive retention.
        assert_eq!(store.status().unwrap().len(), 1);
        assert_eq!(store.prune(ts("2026-02-01T00:00:00Z")).unwrap(), (0, 0));
    }

    /// A database as the migrations up to 0003 left it, with `rows` of
    /// (tenant id, alert id, update instant, content hash, from Graph).
    fn version_3_database(path: &Path, rows: &[(&str, &str, &str, u64, bool)]) {
        let mut conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..3] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 3).unwrap();
        for (tenant, id, at, hash, graph) in rows {
            tx.execute(
                "INSERT OR IGNORE INTO tenants (tenant_id, name) VALUES (?1, ?1)",
                [tenant],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO alerts (tenant_id, alert_id, last_update_text, last_update_ticks, \
                     content_hash, first_emitted, last_emitted, from_graph) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, 2, ?6)",
                params![
                    tenant,
                    id,
                    at,
                    ts(at).ticks(),
                    *hash as i64,
                    i64::from(*graph)
                ],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    #[test]
    fn migration_4_keeps_every_version_a_version_3_database_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let other = "22222222-2222-2222-2222-222222222222";
        version_3_database(
            &path,
            &[
                (
                    TENANT,
                    "da1",
                    "2026-01-01T00:00:00.1234567Z",
                    u64::MAX,
                    false,
                ),
                (TENANT, "da2", "2026-01-01T00:00:01Z", 0, true),
                (other, "da1", "2026-01-02T00:00:00Z", 7, false),
            ],
        );

        let store = Store::open(&path).unwrap();
        assert_eq!(user_version(&path), SCHEMA_VERSION);
        let known = store
            .known_versions(TENANT, &["da1", "da2", "da3"])
            .unwrap();
        assert_eq!(known.len(), 2, "{known:?}");
        assert_eq!(
            known["da1"],
            Known {
                last_update: ts("2026-01-01T00:00:00.1234567Z"),
                content_hash: u64::MAX,
                from_graph: false,
            }
        );
        assert_eq!(
            known["da2"],
            Known {
                last_update: ts("2026-01-01T00:00:01Z"),
                content_hash: 0,
                from_graph: true,
            }
        );
        assert_eq!(
            store.known_versions(other, &["da1"]).unwrap()["da1"].content_hash,
            7
        );
        // `status` counts each tenant's own, and retention still works.
        let counts: HashMap<String, u64> = store
            .status()
            .unwrap()
            .into_iter()
            .map(|t| (t.tenant_id, t.alerts_stored))
            .collect();
        assert_eq!(counts[TENANT], 2);
        assert_eq!(counts[other], 1);
        assert_eq!(store.prune(ts("2026-01-01T12:00:00Z")).unwrap().0, 2);
        // The text-keyed table is gone, not left behind to grow.
        let old: i64 = store
            .lock()
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'alerts'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0);
        drop(store);
        // A read-only `status` of the migrated file sees the same.
        let ro = Store::open_read_only(&path).unwrap();
        assert_eq!(
            ro.status()
                .unwrap()
                .iter()
                .map(|t| t.alerts_stored)
                .sum::<u64>(),
            1
        );
    }

    /// Two alert ids that share the 64-bit `id_key` (planted: finding a real
    /// pair takes ~2^32 tries) must not pass for each other: the second is
    /// unknown, so it is emitted, never skipped as seen.
    #[test]
    fn a_row_of_another_alert_under_the_same_key_counts_as_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        store
            .record_emitted(TENANT, &[version("a", "2026-01-01T00:00:00Z", 1)])
            .unwrap();
        let (key, check) = version_key(TENANT, "a");
        store
            .lock()
            .execute(
                "UPDATE alert_versions SET id_check = ?3 WHERE tenant_key = ?1 AND id_key = ?2",
                params![tenant_key(TENANT), key, check ^ 1],
            )
            .unwrap();
        assert!(store.known_versions(TENANT, &["a"]).unwrap().is_empty());
        // Recording it takes the row over: it is known again, by its own check.
        store
            .record_emitted(TENANT, &[version("a", "2026-01-01T00:00:01Z", 2)])
            .unwrap();
        assert_eq!(
            store.known_versions(TENANT, &["a"]).unwrap()["a"].content_hash,
            2
        );
    }
}
