//! The CDR writer thread (`[policy] cdr`): the shards hand finished public calls' records
//! (`core::cdr`) over a bounded channel without ever waiting ([`CdrSink::send`]: a full
//! channel drops the record and counts it); this thread formats each as one JSON line and
//! appends it to the file. A reload or SIGHUP reopens the file (logrotate's `postrotate`
//! sends SIGHUP), at the path the configuration then names.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::app::metrics::{Exposition, Value};
use crate::core::cdr::Cdr;

/// Records that may wait for the writer before shards start dropping them.
pub const QUEUE: usize = 65_536;

/// How long written lines may sit in the writer's buffer before they reach the file.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

enum Msg {
    Record(Cdr),
    Reopen(Option<PathBuf>),
    Stop,
}

#[derive(Debug, Default)]
struct Stats {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

/// The shards' end of the channel (cloned into each shard).
#[derive(Clone, Debug)]
pub struct CdrSink {
    tx: SyncSender<Msg>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Record(c) => write!(f, "Record({})", c.call_id()),
            Msg::Reopen(p) => write!(f, "Reopen({p:?})"),
            Msg::Stop => write!(f, "Stop"),
        }
    }
}

impl CdrSink {
    /// Hands `cdr` to the writer without waiting: a full queue drops it (counted).
    pub fn send(&self, cdr: Cdr) {
        match self.tx.try_send(Msg::Record(cdr)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Reopens the file at `path` (or stops writing: `None`) once the records queued before
    /// are written; waits for room in the queue (never called on a shard).
    pub fn reopen(&self, path: Option<PathBuf>) {
        let _ = self.tx.send(Msg::Reopen(path));
    }

    /// `sipfork_cdr_records_total{result}`.
    pub fn export(&self, out: &mut Exposition) {
        export(out, &self.stats);
    }

    /// The metric family with zero values (for the metrics reference).
    pub fn export_reference(out: &mut Exposition) {
        export(out, &Stats::default());
    }
}

fn export(out: &mut Exposition, stats: &Stats) {
    for (result, n) in [
        ("written", &stats.written),
        ("dropped", &stats.dropped),
        ("failed", &stats.failed),
    ] {
        out.add(
            "sipfork_cdr_records_total",
            "CDRs of public calls: written to [policy] cdr, dropped because the writer's queue \
             was full, or failed (no file open, or a write error)",
            &[("result", result)],
            Value::Counter(n.load(Ordering::Relaxed)),
        );
    }
}

/// The writer thread and its sink.
#[derive(Debug)]
pub struct CdrWriter {
    sink: CdrSink,
    thread: Option<JoinHandle<()>>,
}

impl CdrWriter {
    /// Starts the writer appending to `path` (`None`: records are counted as failed until a
    /// reload names a file) with a queue of `queue` records.
    pub fn start(path: Option<PathBuf>, queue: usize) -> std::io::Result<CdrWriter> {
        let (tx, rx) = mpsc::sync_channel(queue);
        let stats = Arc::new(Stats::default());
        let file = match &path {
            Some(p) => Some(open(p)?),
            None => None,
        };
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("sipfork-cdr".into())
            .spawn(move || run(rx, path, file, &thread_stats))?;
        Ok(CdrWriter {
            sink: CdrSink { tx, stats },
            thread: Some(thread),
        })
    }

    /// The shards' end.
    pub fn sink(&self) -> CdrSink {
        self.sink.clone()
    }

    /// Writes what was queued before, flushes, and ends the thread.
    pub fn stop(mut self) {
        let _ = self.sink.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open(path: &Path) -> std::io::Result<BufWriter<File>> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    Ok(BufWriter::new(file))
}

fn run(
    rx: Receiver<Msg>,
    mut path: Option<PathBuf>,
    mut file: Option<BufWriter<File>>,
    stats: &Stats,
) {
    // Lines written since the last flush, and when it was.
    let mut dirty = false;
    let mut flushed = Instant::now();
    loop {
        let msg = match rx.recv_timeout(FLUSH_EVERY) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match msg {
            None => {}
            Some(Msg::Record(cdr)) => {
                let line = cdr.to_json_line();
                match file.as_mut().map(|f| f.write_all(line.as_bytes())) {
                    Some(Ok(())) => {
                        stats.written.fetch_add(1, Ordering::Relaxed);
                        dirty = true;
                    }
                    Some(Err(e)) => {
                        let n = stats.failed.fetch_add(1, Ordering::Relaxed) + 1;
                        if n.is_power_of_two() {
                            tracing::error!(error = %e, count = n, "CDR not written");
                        }
                    }
                    None => {
                        stats.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Some(Msg::Reopen(next)) => {
                flush(&mut file, &path);
                dirty = false;
                path = next;
                file = path.as_deref().and_then(|p| match open(p) {
                    Ok(f) => {
                        tracing::info!(path = %p.display(), "CDR file (re)opened");
                        Some(f)
                    }
                    Err(e) => {
                        tracing::error!(path = %p.display(), error = %e, "CDR file not opened");
                        None
                    }
                });
            }
            Some(Msg::Stop) => break,
        }
        if dirty && flushed.elapsed() >= FLUSH_EVERY {
            flush(&mut file, &path);
            dirty = false;
            flushed = Instant::now();
        }
    }
    flush(&mut file, &path);
}

fn flush(file: &mut Option<BufWriter<File>>, path: &Option<PathBuf>) {
    if let Some(f) = file {
        if let Err(e) = f.flush() {
            tracing::error!(
                path = %path.as_deref().map_or_else(String::new, |p| p.display().to_string()),
                error = %e,
                "CDR file not flushed"
            );
        }
    }
}
