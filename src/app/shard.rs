//! One shard of the appliance: the sans-IO [`Core`] plus the shard's journal, driven by the
//! engine's loop through [`Handler`].
//!
//! Invariant (DECISIONS.md "Registrar and persistence"): in [`Handler::after_batch`], which the
//! loop calls after a turn's input and timers and *before* that turn's sends, every binding change
//! the core made is encoded into the journal and handed to the kernel: copied into the journal's
//! shared mapping (no syscall; `pwrite(2)` where the file system cannot allocate ahead). So a
//! binding whose 200 OK left the box is in the page cache and survives `kill -9`. Nothing here
//! fsyncs: the persistence thread group-commits (`persist.rs`), and compaction's slow part runs
//! on a worker thread that hands its result back through the control path.
//!
//! # When the journal cannot take a record
//! The core holds each turn's REGISTER answers that changed bindings until the write's outcome
//! is known (`Core::persist_written` / `Core::persist_failed`, see `core::Durability`). When the
//! write fails (ENOSPC, EIO, a poisoned journal) the core rolls the turn's changes back and turns
//! those answers into `503` + `Retry-After`; the batch is dropped, so no backlog builds up. The
//! shard then marks its journal unhealthy ([`Shard::journal_problem`], `/health` answers 503 with
//! the reason) and tells the core, which from the next REGISTER on refuses every change at once.
//! A failed `fdatasync` on the persistence thread does the same: it is never retried (the kernel
//! may have dropped the pages). The way back is one road for both: the shard hands its live
//! bindings (`Core::for_each_binding_record`) to a worker that writes and fsyncs them as a new
//! journal (`Journal::begin_rewrite`), committed by a rename on the shard; tried after 1 s, then
//! with a doubling pause up to [`RECOVERY_MAX_PAUSE`]. Collecting the live set is a walk of the
//! shard's table on the shard thread, paid only on this error path.

use std::sync::mpsc::Sender;
use std::time::Duration;

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

/// First pause before rewriting an unhealthy journal.
pub const RECOVERY_FIRST_PAUSE: Duration = Duration::from_secs(1);
/// Longest pause between two attempts to rewrite an unhealthy journal.
pub const RECOVERY_MAX_PAUSE: Duration = Duration::from_secs(16);

fn export_journal(
    c: &JournalCounters,
    file_len: u64,
    unhealthy: bool,
    mapped: bool,
    shard: &str,
    sink: &mut MetricSink,
) {
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
            "Loop turns that handed journal records to the kernel (a copy into the mapped journal, or one pwrite(2))",
            c.write_outs,
        ),
        (
            "sipfork_journal_write_errors_total",
            "Failed journal writes (the turn's binding changes are rolled back, their REGISTERs get 503)",
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
        "sipfork_journal_unhealthy",
        "1 while the journal takes no records (REGISTERs that change bindings get 503)",
        &labels,
        u64::from(unhealthy),
    );
    sink.gauge(
        "sipfork_journal_mapped",
        "1 while the journal appends through its shared mapping (no syscall per turn); 0: one pwrite(2) per turn (no fallocate or mmap here, logged)",
        &labels,
        u64::from(mapped),
    );
    sink.gauge(
        "sipfork_journal_bytes",
        "Logical size of the shard's journal (the file is allocated ahead, its tail zeros)",
        &labels,
        file_len,
    );
}

/// The shard's journal and where it sends compaction work.
struct ShardJournal {
    journal: Journal,
    compactions: Sender<CompactionRequest>,
    counters: JournalCounters,
    /// Why the journal takes no records now (`None`: healthy).
    problem: Option<String>,
    /// When to try the next rewrite, and the pause after that one.
    next_recovery: Option<(Instant, Duration)>,
    /// The journal appended through its mapping when last looked at (a change is logged).
    mapped: bool,
}

impl ShardJournal {
    /// Sends a compaction or rewrite job to the persistence thread's workers; without them
    /// (shutting down) the job is given up.
    fn hand_to_worker(&mut self, shard: ShardId, job: CompactionJob) {
        if self.compactions.send((shard, job)).is_err() {
            let _ = self
                .journal
                .finish_compaction(Err(std::io::Error::other("no compaction worker")));
        } else {
            self.journal.wake_persistence();
        }
    }

    /// Marks the journal unhealthy (the caller tells the core).
    fn fail(&mut self, shard: ShardId, now: Instant, why: String) {
        if self.problem.is_none() {
            tracing::error!(shard = shard.0, reason = %why, "journal unhealthy: REGISTERs that change bindings get 503 until it is rewritten");
            self.next_recovery = Some((now + RECOVERY_FIRST_PAUSE, RECOVERY_FIRST_PAUSE));
        }
        self.problem = Some(why);
    }
}

/// What the engine runs on each shard thread.
pub struct Shard {
    core: Core,
    journal: Option<ShardJournal>,
    cdr: Option<crate::app::cdr::CdrSink>,
    /// `[cluster]`: directory snapshots in, presence changes out.
    cluster: Option<crate::app::cluster::link::ShardLink>,
    /// A reload's renewed TLS configuration, until the engine hands it to the TLS listeners.
    tls_renewal: Option<crate::engine::stream::TlsRenewal>,
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
                problem: None,
                next_recovery: None,
                mapped: true,
            }),
            cdr: None,
            cluster: None,
            tls_renewal: None,
        }
    }

    /// Hands the core's CDRs to the writer thread (`app::cdr`) after each batch.
    pub fn with_cdr(mut self, sink: crate::app::cdr::CdrSink) -> Self {
        self.cdr = Some(sink);
        self
    }

    /// Joins the cluster directory (after the journal's bindings were restored into the core).
    pub fn with_cluster(mut self, shared: std::sync::Arc<crate::app::cluster::Shared>) -> Self {
        self.cluster = Some(crate::app::cluster::link::ShardLink::new(
            shared, &self.core,
        ));
        self
    }

    /// Why this shard's journal takes no records now (REGISTERs that would change a binding get
    /// 503), if it does not; `/health` reports it.
    pub fn journal_problem(&self) -> Option<String> {
        self.journal.as_ref().and_then(|j| j.problem.clone())
    }

    /// The shard's core (for admin queries on the shard's own thread).
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// New TLS connections on this shard get `config` (a reload renewed the certificate):
    /// handed to the engine's TLS listeners once the control jobs of this turn ran.
    pub fn renew_tls(&mut self, config: crate::engine::stream::TlsRenewal) {
        self.tls_renewal = Some(config);
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
        export_journal(
            &j.counters,
            j.journal.file_len(),
            j.problem.is_some(),
            j.journal.mapped().is_ok(),
            &shard,
            sink,
        );
    }

    /// The journal's metric families with zero values (for the metrics reference).
    pub fn export_journal_reference(sink: &mut MetricSink) {
        export_journal(&JournalCounters::default(), 0, false, false, "0", sink);
    }

    /// Writes out what is buffered and fsyncs, on the caller's thread (shutdown only).
    pub fn flush_journal(&mut self) -> std::io::Result<()> {
        self.buffer_changes();
        self.core.persist_written();
        match &mut self.journal {
            Some(j) => {
                j.journal.write_out()?;
                j.journal.sync()
            }
            None => Ok(()),
        }
    }

    /// Commits (or abandons) a background compaction or rewrite; runs on the shard through the
    /// control path.
    pub fn finish_compaction(&mut self, result: std::io::Result<Compacted>) {
        let shard = self.core.env().shard;
        let Some(j) = &mut self.journal else { return };
        let records = result.as_ref().map(Compacted::records).unwrap_or(0);
        let rewrite = j.problem.is_some();
        match j.journal.finish_compaction(result) {
            Ok(Some(sync)) => {
                // Phase 2: the worker fsyncs the new file before the shard renames it.
                j.hand_to_worker(shard, sync);
            }
            Ok(None) if rewrite => {
                j.counters.compactions += 1;
                // A sync that failed meanwhile leaves the rewritten file to be synced afresh:
                // only a journal without a problem is healthy.
                if j.journal.problem().is_none() {
                    j.problem = None;
                    j.next_recovery = None;
                    self.core.set_journal_available(true);
                    tracing::info!(
                        shard = shard.0,
                        records,
                        "journal rewritten from the live bindings; REGISTERs accepted again"
                    );
                }
            }
            Ok(None) => {
                j.counters.compactions += 1;
                tracing::info!(
                    shard = shard.0,
                    records,
                    bytes = j.journal.file_len(),
                    "journal compacted"
                );
            }
            Err(e) => {
                j.counters.compaction_errors += 1;
                tracing::error!(shard = shard.0, error = %e, rewrite, "journal compaction abandoned");
            }
        }
    }

    /// While the journal is unhealthy: starts a rewrite from the live bindings when one is due.
    fn recover(&mut self, now: Instant) {
        let shard = self.core.env().shard;
        let Some(j) = &mut self.journal else { return };
        let Some((due, pause)) = j.next_recovery else {
            return;
        };
        if now < due || j.journal.is_compacting() {
            return;
        }
        j.next_recovery = Some((now + pause, (pause * 2).min(RECOVERY_MAX_PAUSE)));
        let mut live = Vec::new();
        self.core
            .for_each_binding_record(|k, v| live.push((k.to_vec(), v.to_vec())));
        match j.journal.begin_rewrite(live) {
            Ok(job) => j.hand_to_worker(shard, job),
            Err(e) => {
                tracing::error!(shard = shard.0, error = %e, "journal rewrite not started");
            }
        }
    }

    /// Copies the core's pending binding changes into the journal's buffer (memory only); the
    /// core keeps them until it hears how the write went.
    fn buffer_changes(&mut self) {
        let Some(j) = &mut self.journal else { return };
        let (journal, counters) = (&mut j.journal, &mut j.counters);
        self.core.pending_persist(|op| {
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
        if let Some(link) = &mut self.cluster {
            link.refresh(&mut self.core);
        }
        self.core.handle_datagram(now, d)
    }

    fn handle_oversize(&mut self, now: Instant, d: Datagram<'_>) {
        self.core.handle_oversize(now, d);
    }

    fn flow_closed(
        &mut self,
        now: Instant,
        peer: std::net::SocketAddr,
        transport: crate::core::transport::Transport,
    ) {
        self.core.flow_closed(now, peer, transport);
    }

    fn flow_failed(
        &mut self,
        now: Instant,
        peer: std::net::SocketAddr,
        transport: crate::core::transport::Transport,
    ) {
        self.core.flow_failed(now, peer, transport);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }

    fn observe_load(&mut self, now: Instant, worked: std::time::Duration, handled: u64) {
        let sample = crate::core::overload::LoadSample { worked, handled };
        self.core.observe_load(now, sample);
    }

    fn outbox(&mut self) -> &mut Outbox {
        self.core.outbox()
    }

    fn handle_note(&mut self, now: Instant, from: ShardId, bytes: &[u8]) {
        self.core.handle_shard_note(now, from, bytes);
    }

    fn drain_notes(&mut self, send: &mut dyn FnMut(ShardId, &[u8])) {
        self.core.drain_shard_notes(send);
    }

    fn take_tls_renewal(&mut self) -> Option<crate::engine::stream::TlsRenewal> {
        self.tls_renewal.take()
    }

    fn after_batch(&mut self, now: Instant) {
        let shard = self.core.env().shard;
        if let Some(link) = &mut self.cluster {
            self.core.pending_persist(|op| link.note(op));
            link.report(&self.core);
        }
        self.core.drain_notices(|n| {
            if n.is_info() {
                tracing::info!("{n}");
            } else {
                tracing::debug!("{n}");
            }
        });
        match &self.cdr {
            Some(sink) => self.core.drain_cdrs(|c| sink.send(c)),
            None => self.core.drain_cdrs(drop),
        }
        let Some(j) = &mut self.journal else {
            self.core.drain_persist(|_| {});
            return;
        };
        if j.problem.is_none() {
            if let Some(why) = j.journal.problem() {
                j.fail(shard, now, why);
                self.core.set_journal_available(false);
            }
        }
        if j.problem.is_some() {
            // The core refused every REGISTER change; what is left are expiry deletes and the
            // like, which a restart re-derives (expired records are dropped on restore), and the
            // rewrite carries the live set that results.
            self.core.persist_written();
            self.recover(now);
            return;
        }
        self.buffer_changes();
        let Some(j) = &mut self.journal else { return };
        if j.journal.pending_bytes() == 0 {
            self.core.persist_written();
            return;
        }
        match j.journal.write_out() {
            Ok(()) => {
                j.counters.write_outs += 1;
                self.core.persist_written();
                if j.mapped {
                    if let Err(why) = j.journal.mapped() {
                        tracing::warn!(
                            shard = shard.0,
                            reason = why,
                            "journal appends with pwrite(2), one syscall per turn"
                        );
                        j.mapped = false;
                    }
                }
            }
            Err(e) => {
                // Nothing of the batch is in the file: undo it in memory and answer 503.
                j.counters.write_errors += 1;
                self.core.persist_failed(now);
                j.fail(shard, now, format!("journal write failed: {e}"));
                self.core.set_journal_available(false);
                return;
            }
        }
        if j.journal.needs_compaction() {
            match j.journal.begin_compaction() {
                Ok(job) => j.hand_to_worker(shard, job),
                Err(e) => {
                    j.counters.compaction_errors += 1;
                    tracing::error!(shard = shard.0, error = %e, "journal compaction not started");
                }
            }
        }
    }
}
