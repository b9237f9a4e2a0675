//! One shard of the appliance: the sans-IO [`Core`] plus the shard's journal, driven by the
//! engine's loop through [`Handler`].
//!
//! Invariant (DECISIONS.md "Registrar and persistence"): in [`Handler::after_batch`], which the
//! loop calls after a turn's input and timers and *before* that turn's sends, every binding change
//! the core made is encoded into the journal and handed to the kernel in one `write(2)`. So a
//! binding whose 200 OK left the box is in the page cache and survives `kill -9`. Nothing here
//! fsyncs: the persistence thread group-commits (`persist.rs`), and compaction's slow part runs
//! on a worker thread that hands its result back through the control path.

use std::sync::mpsc::Sender;

use crate::core::io::{Datagram, Inbound, Outbox};
use crate::core::metrics::MetricSink;
use crate::core::persist::PersistOp;
use crate::core::shard::ShardId;
use crate::core::Core;
use crate::engine::persist::journal::{Compacted, CompactionJob};
use crate::engine::persist::Journal;
use crate::engine::shard::Handler;
use crate::time::Instant;

/// The request or status line of a datagram (at most 160 bytes), for the debug log.
fn first_line(bytes: &[u8]) -> String {
    let end = memchr::memchr2(b'\r', b'\n', bytes)
        .unwrap_or(bytes.len())
        .min(160);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A compaction job on its way to a worker thread, with the shard it belongs to.
pub type CompactionRequest = (ShardId, CompactionJob);

/// Counters of a shard's journal.
#[derive(Clone, Copy, Debug, Default)]
struct JournalCounters {
    puts: u64,
    deletes: u64,
    write_outs: u64,
    write_errors: u64,
    record_errors: u64,
    compactions: u64,
    compaction_errors: u64,
}

fn export_journal(c: &JournalCounters, file_len: u64, shard: &str, sink: &mut MetricSink) {
    let labels = [("shard", shard)];
    let counters = [
        (
            "sipfork_journal_puts_total",
            "Binding upserts written to the journal",
            c.puts,
        ),
        (
            "sipfork_journal_deletes_total",
            "Binding deletes written to the journal",
            c.deletes,
        ),
        (
            "sipfork_journal_write_outs_total",
            "write(2) calls handing journal records to the kernel",
            c.write_outs,
        ),
        (
            "sipfork_journal_write_errors_total",
            "Failed journal writes (the records stay buffered and are retried)",
            c.write_errors,
        ),
        (
            "sipfork_journal_record_errors_total",
            "Binding changes the journal refused (too large); not persisted",
            c.record_errors,
        ),
        (
            "sipfork_journal_compactions_total",
            "Background compactions committed",
            c.compactions,
        ),
        (
            "sipfork_journal_compaction_errors_total",
            "Background compactions abandoned (the old journal stays)",
            c.compaction_errors,
        ),
    ];
    for (name, help, value) in counters {
        sink.counter(name, help, &labels, value);
    }
    sink.gauge(
        "sipfork_journal_bytes",
        "Size of the shard's journal file",
        &labels,
        file_len,
    );
}

/// The shard's journal and where it sends compaction work.
struct ShardJournal {
    journal: Journal,
    compactions: Sender<CompactionRequest>,
    counters: JournalCounters,
}

/// What the engine runs on each shard thread.
pub struct Shard {
    core: Core,
    journal: Option<ShardJournal>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard")
            .field("shard", &self.core.env().shard)
            .field("journal", &self.journal.as_ref().map(|j| j.journal.path()))
            .finish_non_exhaustive()
    }
}

impl Shard {
    /// A shard serving `core`; with a journal when bindings are persisted. Bindings recovered
    /// from the journal must already be restored into `core`.
    pub fn new(core: Core, journal: Option<(Journal, Sender<CompactionRequest>)>) -> Self {
        Self {
            core,
            journal: journal.map(|(journal, compactions)| ShardJournal {
                journal,
                compactions,
                counters: JournalCounters::default(),
            }),
        }
    }

    /// The shard's core (for admin queries on the shard's own thread).
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The shard's core, mutably (for control jobs on the shard's own thread).
    pub fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }

    /// Writes the core's metrics and the journal's counters.
    pub fn export_metrics(&self, sink: &mut MetricSink) {
        self.core.export_metrics(sink);
        let Some(j) = &self.journal else { return };
        let shard = self.core.env().shard.0.to_string();
        export_journal(&j.counters, j.journal.file_len(), &shard, sink);
    }

    /// The journal's metric families with zero values (for the metrics reference).
    pub fn export_journal_reference(sink: &mut MetricSink) {
        export_journal(&JournalCounters::default(), 0, "0", sink);
    }

    /// Writes out what is buffered and fsyncs, on the caller's thread (shutdown only).
    pub fn flush_journal(&mut self) -> std::io::Result<()> {
        self.persist_changes();
        match &mut self.journal {
            Some(j) => {
                j.journal.write_out()?;
                j.journal.sync()
            }
            None => Ok(()),
        }
    }

    /// Commits (or abandons) a background compaction; runs on the shard through the control path.
    pub fn finish_compaction(&mut self, result: std::io::Result<Compacted>) {
        let Some(j) = &mut self.journal else { return };
        let records = result.as_ref().map(Compacted::records).unwrap_or(0);
        match j.journal.finish_compaction(result) {
            Ok(()) => {
                j.counters.compactions += 1;
                tracing::info!(
                    shard = self.core.env().shard.0,
                    records,
                    bytes = j.journal.file_len(),
                    "journal compacted"
                );
            }
            Err(e) => {
                j.counters.compaction_errors += 1;
                tracing::error!(shard = self.core.env().shard.0, error = %e, "journal compaction abandoned");
            }
        }
    }

    /// Moves the core's binding changes into the journal's buffer (memory only: no journal
    /// means the changes are dropped).
    fn persist_changes(&mut self) {
        let Some(j) = &mut self.journal else {
            self.core.drain_persist(|_| {});
            return;
        };
        let (journal, counters) = (&mut j.journal, &mut j.counters);
        self.core.drain_persist(|op| {
            let done = match op {
                PersistOp::Put { key, value } => {
                    counters.puts += 1;
                    journal.put(key, value)
                }
                PersistOp::Delete { key } => {
                    counters.deletes += 1;
                    journal.delete(key)
                }
            };
            if let Err(e) = done {
                counters.record_errors += 1;
                if counters.record_errors.is_power_of_two() {
                    tracing::error!(error = %e, count = counters.record_errors, "binding not journaled");
                }
            }
        });
    }
}

impl Handler for Shard {
    fn handle_datagram(&mut self, now: Instant, d: Datagram<'_>) -> Inbound {
        // Per-request log at debug: the fields are only computed when debug is on.
        tracing::debug!(
            shard = self.core.env().shard.0,
            from = %d.from,
            line = %first_line(d.bytes),
            "datagram"
        );
        self.core.handle_datagram(now, d)
    }

    fn handle_oversize(&mut self, now: Instant, d: Datagram<'_>) {
        self.core.handle_oversize(now, d);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    fn outbox(&mut self) -> &mut Outbox {
        self.core.outbox()
    }

    fn after_batch(&mut self, _now: Instant) {
        self.persist_changes();
        let shard = self.core.env().shard;
        let Some(j) = &mut self.journal else { return };
        if j.journal.pending_bytes() == 0 {
            return;
        }
        match j.journal.write_out() {
            Ok(()) => j.counters.write_outs += 1,
            Err(e) => {
                // The batch stays buffered and the next turn retries; the answers of this turn
                // still go out (withholding them would not make the disk writable).
                j.counters.write_errors += 1;
                if j.counters.write_errors.is_power_of_two() {
                    tracing::error!(shard = shard.0, error = %e, count = j.counters.write_errors, "journal write failed");
                }
            }
        }
        if j.journal.needs_compaction() {
            match j.journal.begin_compaction() {
                Ok(job) => {
                    if j.compactions.send((shard, job)).is_err() {
                        // No persistence thread (shutting down): give the compaction up.
                        let _ = j
                            .journal
                            .finish_compaction(Err(std::io::Error::other("no compaction worker")));
                    }
                }
                Err(e) => {
                    j.counters.compaction_errors += 1;
                    tracing::error!(shard = shard.0, error = %e, "journal compaction not started");
                }
            }
        }
    }
}
