//! Where the lines go: stdout, or a file appended to and reopened on SIGHUP.
//!
//! A batch is acknowledged (and then recorded as emitted in the store) only
//! after it is written, flushed and, for a file, `fdatasync`ed: that is the
//! half of the "nothing lost" guarantee that lives here.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::config::OutputTarget;

/// The output stream.
#[derive(Debug)]
pub(crate) struct Sink {
    target: OutputTarget,
    inner: Inner,
    /// A previous write failed part-way, so the file may end in half a line;
    /// the next batch starts with a newline to keep that fragment from
    /// gluing onto (and corrupting) a good line. The failed batch itself is
    /// not recorded and is written again whole.
    torn: bool,
}

#[derive(Debug)]
enum Inner {
    Stdout {
        /// A duplicate of fd 1, only for `fdatasync` when stdout is
        /// redirected to a file; `None` once fsync proved meaningless
        /// (a pipe, a terminal, journald's socket).
        sync: Option<File>,
    },
    File(File),
}

impl Sink {
    /// Opens the target: stdout as is, a file for appending (created with
    /// mode 0640 so that a shipper in the service's group can read it; its
    /// parent directory must exist).
    pub(crate) fn open(target: &OutputTarget) -> io::Result<Sink> {
        let inner = match target {
            OutputTarget::Stdout => Inner::Stdout {
                sync: io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .ok()
                    .map(File::from),
            },
            OutputTarget::File(path) => Inner::File(open_append(path)?),
        };
        // A crash (kill -9, power loss) in the middle of a write leaves the
        // file ending in half a line: treat it as torn, so the first new
        // line does not glue onto the fragment and become unreadable.
        let torn = match target {
            OutputTarget::File(path) => ends_mid_line(path),
            OutputTarget::Stdout => false,
        };
        Ok(Sink {
            target: target.clone(),
            inner,
            torn,
        })
    }

    /// What this sink writes to.
    #[cfg(test)]
    pub(crate) fn target(&self) -> &OutputTarget {
        &self.target
    }

    /// Writes whole lines and makes them durable before returning `Ok`.
    ///
    /// The file is opened with `O_APPEND`, so every write lands at the
    /// current end of the file: after a logrotate `copytruncate` the next
    /// lines start at offset 0 instead of leaving a hole of NUL bytes up to
    /// the old offset.
    pub(crate) fn write_batch(&mut self, bytes: &[u8]) -> io::Result<()> {
        debug_assert!(
            bytes.is_empty() || bytes.ends_with(b"\n"),
            "a batch must hold whole lines"
        );
        if bytes.is_empty() {
            return Ok(());
        }
        let result = self.write_inner(bytes);
        self.torn = result.is_err();
        result
    }

    fn write_inner(&mut self, bytes: &[u8]) -> io::Result<()> {
        let torn = self.torn;
        match &mut self.inner {
            Inner::Stdout { sync } => {
                let mut out = io::stdout().lock();
                if torn {
                    out.write_all(b"\n")?;
                }
                out.write_all(bytes)?;
                out.flush()?;
                if let Some(file) = sync {
                    if let Err(e) = file.sync_data() {
                        if is_unsyncable(&e) {
                            *sync = None;
                        } else {
                            return Err(e);
                        }
                    }
                }
                Ok(())
            }
            Inner::File(file) => {
                if torn {
                    file.write_all(b"\n")?;
                }
                file.write_all(bytes)?;
                file.flush()?;
                file.sync_data()
            }
        }
    }

    /// Opens the file path anew (SIGHUP after logrotate moved the file away
    /// and `create`d a new one). If the new open fails, the old handle is
    /// kept, so lines still go somewhere, and the error is returned.
    /// On stdout this does nothing.
    pub(crate) fn reopen(&mut self) -> io::Result<()> {
        if let OutputTarget::File(path) = &self.target {
            let file = open_append(path)?;
            self.inner = Inner::File(file);
            // A fragment at the end of the old file belongs to the old file.
            self.torn = ends_mid_line(path);
        }
        Ok(())
    }
}

/// `fsync` on a pipe, a terminal or a socket fails with EINVAL (or
/// ENOTSUP/EROFS on some special files): there is nothing to make durable.
fn is_unsyncable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EINVAL) | Some(nix::libc::ENOTSUP) | Some(nix::libc::EROFS)
    )
}

/// Whether a regular file's last byte is something other than a newline.
fn ends_mid_line(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    // Checked before opening: reading a FIFO or a device could block.
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0) {
        return false;
    }
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    let mut last = [0u8; 1];
    file.seek(SeekFrom::End(-1)).is_ok() && file.read_exact(&mut last).is_ok() && last[0] != b'\n'
}

fn open_append(path: &Path) -> io::Result<File> {
    let with_path =
        |e: io::Error| io::Error::new(e.kind(), format!("output file {}: {e}", path.display()));
    // `create_new` first, to know whether we made the file: only then is its
    // mode ours to set. The explicit chmod overrides a restrictive umask
    // (hardened units often run with 0077), which would otherwise hide the
    // file from the shipper's group; an existing file keeps the mode the
    // operator gave it.
    match OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o640)
        .open(path)
    {
        Ok(file) => {
            file.set_permissions(Permissions::from_mode(0o640))
                .map_err(with_path)?;
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(with_path),
        Err(e) => Err(with_path(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn file_sink(path: &Path) -> Sink {
        Sink::open(&OutputTarget::File(path.to_owned())).unwrap()
    }

    #[test]
    fn appends_to_an_existing_file_and_creates_it_group_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.ndjson");
        let mut sink = file_sink(&path);
        assert_eq!(sink.target(), &OutputTarget::File(path.clone()));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
        sink.write_batch(b"{\"a\":1}\n{\"a\":2}\n").unwrap();
        drop(sink);

        // A restart appends; it never truncates.
        let mut sink = file_sink(&path);
        sink.write_batch(b"{\"a\":3}\n").unwrap();
        sink.write_batch(b"").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"
        );
    }

    #[test]
    fn an_existing_file_keeps_the_mode_the_operator_chose() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.ndjson");
        fs::write(&path, b"").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        file_sink(&path);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir/alerts.ndjson");
        let e = Sink::open(&OutputTarget::File(path.clone())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn reopen_after_rename_writes_new_lines_to_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.ndjson");
        let rotated = dir.path().join("alerts.ndjson.1");
        let mut sink = file_sink(&path);
        sink.write_batch(b"old 1\n").unwrap();
        fs::rename(&path, &rotated).unwrap();
        // Until the reopen, lines follow the open handle into the old file.
        sink.write_batch(b"old 2\n").unwrap();
        sink.reopen().unwrap();
        sink.write_batch(b"new 1\n").unwrap();
        assert_eq!(fs::read_to_string(&rotated).unwrap(), "old 1\nold 2\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "new 1\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn a_failed_reopen_keeps_writing_to_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("out");
        fs::create_dir(&sub).unwrap();
        let path = sub.join("alerts.ndjson");
        let moved = dir.path().join("moved");
        let mut sink = file_sink(&path);
        sink.write_batch(b"one\n").unwrap();
        // The directory disappears (renamed), so the path cannot be opened.
        fs::rename(&sub, &moved).unwrap();
        let e = sink.reopen().unwrap_err();
        assert!(e.to_string().contains("alerts.ndjson"), "{e}");
        sink.write_batch(b"two\n").unwrap();
        assert_eq!(
            fs::read_to_string(moved.join("alerts.ndjson")).unwrap(),
            "one\ntwo\n"
        );
    }

    #[test]
    fn after_copytruncate_new_lines_start_at_the_new_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.ndjson");
        let mut sink = file_sink(&path);
        sink.write_batch(&b"an old line that was copied away\n".repeat(100))
            .unwrap();
        // logrotate's copytruncate: copy, then truncate in place; our handle
        // is not reopened.
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        sink.write_batch(b"{\"after\":1}\n").unwrap();
        // Only whole new lines, at offset 0: no NUL hole where the old
        // offset was.
        assert_eq!(fs::read(&path).unwrap(), b"{\"after\":1}\n");
    }

    #[test]
    fn a_file_left_mid_line_by_a_crash_gets_a_newline_before_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.ndjson");
        fs::write(&path, "{\"a\":1}\n{\"a\":").unwrap();
        let mut sink = file_sink(&path);
        sink.write_batch(b"{\"a\":3}\n").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"a\":\n{\"a\":3}\n"
        );
    }

    #[test]
    fn reopening_stdout_is_harmless() {
        let mut sink = Sink::open(&OutputTarget::Stdout).unwrap();
        assert_eq!(sink.target(), &OutputTarget::Stdout);
        sink.reopen().unwrap();
        // The test harness's stdout may be a pipe: fsync there must not fail.
        sink.write_batch(b"").unwrap();
    }

    #[test]
    fn a_full_disk_is_reported_not_swallowed() {
        if !Path::new("/dev/full").exists() {
            return;
        }
        let mut sink = file_sink(Path::new("/dev/full"));
        let e = sink.write_batch(b"{\"a\":1}\n").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e:?}");
    }

    #[test]
    fn fsync_on_a_socket_counts_as_nothing_to_sync() {
        // journald's stdout is a socket; a pipe behaves the same way.
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = File::from(std::os::fd::OwnedFd::from(a));
        let e = file.sync_data().unwrap_err();
        assert!(is_unsyncable(&e), "{e:?}");
    }
}
