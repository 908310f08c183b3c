//! The one output stream all tenants write to, its format, and the page
//! writer that holds both for the whole of one page.
//!
//! A reload may replace the sink and the format at any time. A page takes the
//! lock once and keeps it until its last line is durable, so every line of a
//! page goes to the same sink in the same format; a reload waits for the page
//! in flight. Lines are still flushed in ~2 MB chunks, so a 10,000-alert page
//! never needs a second full copy of itself in memory.

use std::io;
use std::sync::{Mutex, MutexGuard};

use crate::config::OutputFormat;
use crate::output::{render, Record, Sink};

/// Output is flushed in chunks of about this size.
const WRITE_CHUNK: usize = 2 << 20;

/// Room past `WRITE_CHUNK` for the line that crosses it: without it, that
/// line would make the buffer double to 4 MB on every full chunk.
const CHUNK_HEADROOM: usize = 64 << 10;

struct Current {
    sink: Sink,
    format: OutputFormat,
}

/// The output stream and its format, shared by every tenant's poll.
pub(crate) struct Emitter {
    current: Mutex<Current>,
}

impl Emitter {
    pub(crate) fn new(sink: Sink, format: OutputFormat) -> Self {
        Emitter {
            current: Mutex::new(Current { sink, format }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Current> {
        self.current.lock().expect("sink lock")
    }

    /// Starts writing one page: holds the sink and its format until the
    /// writer is finished or dropped. `buf` is the caller's reusable buffer;
    /// `page_bytes` the page body's size, to reserve no more than it needs.
    pub(crate) fn page<'a>(&'a self, buf: &'a mut Vec<u8>, page_bytes: usize) -> PageWriter<'a> {
        buf.clear();
        buf.reserve((WRITE_CHUNK + CHUNK_HEADROOM).min(page_bytes + 4096));
        PageWriter {
            current: self.lock(),
            buf,
        }
    }

    /// Reopens the output file (SIGHUP after logrotate moved it away).
    pub(crate) fn reopen(&self) -> io::Result<()> {
        self.lock().sink.reopen()
    }

    /// Replaces the sink and format (a reload changed them); a page being
    /// written keeps the old pair to its end, and the old sink is dropped
    /// only after it.
    pub(crate) fn replace(&self, sink: Sink, format: OutputFormat) {
        *self.lock() = Current { sink, format };
    }
}

/// One page's lines, all to one sink in one format.
pub(crate) struct PageWriter<'a> {
    current: MutexGuard<'a, Current>,
    buf: &'a mut Vec<u8>,
}

impl PageWriter<'_> {
    /// Renders `rec` as one line; writes (and makes durable) the buffered
    /// lines once they reach a chunk.
    pub(crate) fn push(&mut self, rec: &Record) -> io::Result<()> {
        // Rendering cannot fail (formats replace what cannot be encoded).
        let Ok(()) = render(self.buf, self.current.format, rec);
        if self.buf.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.current.sink.write_batch(self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes the rest of the page; when it returns `Ok`, every line pushed
    /// is durable and the page may be recorded as emitted.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.flush()?;
        }
        Ok(())
    }
}
