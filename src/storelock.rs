//! One writing process per database: an exclusive, non-blocking `flock` on a
//! `<database>.lock` file beside the database, holding the holder's pid.
//!
//! Two writers on one store both poll and both emit every version (SQLite's
//! own locking only serialises their commits). The lock is advisory and the
//! kernel drops it when the process dies, kill -9 included, so a stale lock
//! file never blocks a restart. `status` reads without it.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Held for as long as the process writes to the database.
#[derive(Debug)]
pub(crate) struct StoreLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    #[error(
        "the database {db} is in use by another mde-poller ({holder}); only one `run` or `once` may use a database at a time: stop the other one, or give this one its own store.path"
    )]
    Held { db: String, holder: String },
    #[error("store.path {0} is a directory: name a database file, e.g. {0}/state.db")]
    IsDirectory(String),
    #[error("cannot lock the database {db} ({lock}): {source}")]
    Io {
        db: String,
        lock: String,
        source: std::io::Error,
    },
}

/// The lock file of the database at `db`.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

impl StoreLock {
    /// Takes the lock of the database at `db` without waiting; fails naming
    /// the holder's pid when another process has it.
    pub(crate) fn acquire(db: &Path) -> Result<StoreLock, LockError> {
        if db.is_dir() {
            return Err(LockError::IsDirectory(db.display().to_string()));
        }
        let path = lock_path(db);
        let io = |source| LockError::Io {
            db: db.display().to_string(),
            lock: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The lock is taken before the store opens, so it creates the
            // database's directory, as private as the store would (0700).
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io)?;
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "pid unknown".to_owned(),
                };
                return Err(LockError::Held {
                    db: db.display().to_string(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Ours now: record who holds it, for the next one to name.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StoreLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_database_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let first = StoreLock::acquire(&db).expect("first lock");
        // flock locks belong to the open file description: a second open in
        // this process conflicts just as another process would.
        let err = StoreLock::acquire(&db).unwrap_err().to_string();
        assert!(err.contains(&db.display().to_string()), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        StoreLock::acquire(&db).expect("free again once the holder let go");
    }

    #[test]
    fn a_directory_as_the_database_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let err = StoreLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }
}
