//! Log setup: text or JSON lines to stderr, level from config or `RUST_LOG`.
//!
//! A running node formats each line on the thread that logs it and appends it to a batch; a
//! flusher thread writes the batch out every [`FLUSH`]. A per-line hand-off (tracing-appender's
//! channel) wakes the writer thread for every request's access-log line, and on a node pinned
//! to one CPU each wake-up preempts the data path: batching costs one write(2) per interval
//! instead. Under overload (more than [`MAX_BATCH`] bytes waiting) lines are dropped and
//! counted rather than stalling traffic; lines reach stderr at most [`FLUSH`] after they are
//! logged.
mod text;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tracing_subscriber::EnvFilter;
use weir_config::LogFormat;

/// How often the flusher writes the waiting lines.
const FLUSH: Duration = Duration::from_millis(50);
/// Bytes of lines that may wait; beyond that new lines are dropped.
const MAX_BATCH: usize = 16 << 20;

/// Logging for a running node. Hold the guard until the node has stopped: dropping it writes
/// out what is still waiting.
pub fn init(format: LogFormat, level: &str) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let batch = Arc::new(Batch::default());
    let flusher = {
        let batch = batch.clone();
        std::thread::Builder::new().name("weir-log".into()).spawn(move || batch.flush_until_stopped()).ok()
    };
    let writer = BatchWriter(batch.clone());
    // Colour codes only for a person at a terminal, not in files or collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        // A person at a terminal gets the default's colours; files and collectors get the
        // same layout from the cheaper formatter.
        LogFormat::Text if ansi => builder.try_init(),
        LogFormat::Text => builder.event_format(text::TextLine).try_init(),
    };
    LogGuard { batch, flusher }
}

/// Logging for one-shot commands: warnings only unless `RUST_LOG` says otherwise, written
/// directly (a command that exits right after an error must not lose the line).
pub fn init_cli() {
    init_cli_at("warn");
}

/// Logging for a long-running command without a config file (`weir ca serve`): what it does
/// is worth a line, so `info` unless RUST_LOG says otherwise.
pub fn init_service() {
    init_cli_at("info");
}

fn init_cli_at(level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Stops the flusher when dropped, after it has written every waiting line.
pub struct LogGuard {
    batch: Arc<Batch>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        *lock(&self.batch.stopped) = true;
        self.batch.wake.notify_one();
        match self.flusher.take() {
            Some(thread) => _ = thread.join(),
            // No flusher thread could be started: write out here.
            None => self.batch.flush(),
        }
    }
}

/// Lines waiting to be written.
#[derive(Default)]
struct Batch {
    lines: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Batch {
    fn append(&self, line: &[u8]) {
        let mut lines = lock(&self.lines);
        if lines.len() + line.len() > MAX_BATCH {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        lines.extend_from_slice(line);
    }

    fn flush_until_stopped(&self) {
        loop {
            let stop = {
                let stopped = lock(&self.stopped);
                if *stopped {
                    true
                } else {
                    *self.wake.wait_timeout(stopped, FLUSH).map_or_else(|e| e.into_inner().0, |(g, _)| g)
                }
            };
            self.flush();
            if stop {
                return;
            }
        }
    }

    /// Writes the waiting lines (taken out under the lock, written without it).
    fn flush(&self) {
        let waiting = std::mem::take(&mut *lock(&self.lines));
        let mut err = std::io::stderr().lock();
        if !waiting.is_empty() {
            let _ = err.write_all(&waiting);
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(err, "weir: {dropped} log lines dropped: more than {MAX_BATCH} bytes were waiting");
        }
    }
}

/// A poisoned lock still guards plain bytes and a flag: logging goes on.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The subscriber's writer: each formatted line is appended to the batch whole.
struct BatchWriter(Arc<Batch>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(&self.0)
    }
}

struct LineWriter<'a>(&'a Batch);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_cap_are_dropped_and_counted_not_kept() {
        let batch = Batch::default();
        let line = vec![b'x'; 1 << 20];
        for _ in 0..(MAX_BATCH >> 20) + 3 {
            batch.append(&line);
        }
        assert_eq!(lock(&batch.lines).len(), MAX_BATCH);
        assert_eq!(batch.dropped.load(Ordering::Relaxed), 3);
    }
}
