//! Bindings on disk: recovery at start and the persistence thread (group commit, compaction
//! workers).
//!
//! # What a crash can lose (the README repeats this)
//! - `kill -9` (or a panic, or the OOM killer) loses nothing whose answer left: a shard hands its
//!   journal records to the kernel before it sends the turn's datagrams, by copying them into
//!   its journal's shared mapping (the page cache; no syscall) or, where the file system cannot
//!   allocate ahead, with one `pwrite(2)`. When a shard nears the end of its allocated space, the
//!   sync round hands the allocation of the next segment to the allocator thread (`fallocate`,
//!   then zeros written over it and one `fdatasync`, so later group commits convert no unwritten
//!   extents; tens of milliseconds, which must not stretch the group commit), so a shard rarely
//!   allocates itself.
//! - Power loss or a kernel crash loses what was written since the last group commit: the
//!   persistence thread `fdatasync`s every shard's journal that changed every [`SYNC_INTERVAL`]
//!   (10 ms), so a binding is durable at most 10 ms plus one `fdatasync` (typically 1–10 ms on
//!   SSDs) after its 200 OK left. The phone re-registers and the binding comes back. While every
//!   journal is clean the thread sleeps; the first write after that wakes it (a [`Doorbell`]) and
//!   is synced at once.
//!
//! # Recovery
//! Each shard's journal is `DATA_DIR/shard-I-of-N.journal`. At start every journal in the
//! directory is read; when the set differs from what `N` shards need (the shard count changed, or
//! an earlier re-partition was interrupted) the records are re-partitioned by the owner of their
//! extension (`journal::repartition`). Each shard restores its records into its core before it
//! serves its first datagram.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::app::metrics::{Exposition, Value};
use crate::app::shard::{CompactionRequest, Shard};
use crate::core::metrics::MetricSink;
use crate::core::shard::ShardId;
use crate::engine::control::{ControlError, Controller};
use crate::engine::counters::{Histogram, PublishedHistogram};
use crate::engine::os;
use crate::engine::persist::journal::{self, Records};
use crate::engine::persist::{Doorbell, Journal, SyncHandle};

/// How often the persistence thread group-commits (fdatasync) the journals.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(10);

/// The journal name of shard `i` of `n` (the name encodes the partitioning, so a re-partition
/// never overwrites a file it still has to read).
pub fn journal_name(i: usize, n: usize) -> String {
    format!("shard-{i}-of-{n}")
}

/// Opens (re-partitioning when needed) the journals of `shards` shards in `dir`; `owner` maps a
/// record key to its shard. Returns each shard's journal and the records to restore.
pub fn recover(
    dir: &Path,
    shards: usize,
    owner: impl Fn(&[u8]) -> usize,
) -> std::io::Result<Vec<(Journal, Records)>> {
    let names: Vec<String> = (0..shards).map(|i| journal_name(i, shards)).collect();
    let before = journal::journal_names(dir)?;
    let started = Instant::now();
    let opened = journal::repartition(dir, &names, owner)?;
    let records: usize = opened.iter().map(|(_, r)| r.len()).sum();
    let discarded: u64 = opened.iter().map(|(j, _)| j.discarded_on_open()).sum();
    let mut wanted = names.clone();
    wanted.sort();
    if !before.is_empty() && before != wanted {
        tracing::info!(from = ?before, to = shards, records, "journals re-partitioned for a new shard count");
    }
    for (journal, _) in &opened {
        if let Some((bytes, kept)) = journal.corrupt_on_open() {
            tracing::error!(
                journal = %journal.path().display(),
                bytes,
                kept = %kept.display(),
                "damaged records in the middle of a journal: kept aside, the records after them recovered"
            );
        }
    }
    if discarded > 0 {
        tracing::warn!(
            bytes = discarded,
            "cut a torn journal tail (a crash during a write; the records before it are kept)"
        );
    }
    tracing::info!(
        dir = %dir.display(),
        records,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "journals recovered"
    );
    Ok(opened)
}

/// Upper bounds (µs) of the fdatasync-time histogram.
pub const FSYNC_US_BOUNDS: [u64; 12] = [
    100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];
type FsyncHistogram = Histogram<{ FSYNC_US_BOUNDS.len() }>;

/// Counters of the persistence thread.
#[derive(Debug, Default)]
pub struct PersistStats {
    syncs: AtomicU64,
    sync_errors: AtomicU64,
    sync_rounds: AtomicU64,
    zeroing_failures: AtomicU64,
    slowest_sync_us: AtomicU64,
    fsync_us: PublishedHistogram<{ FSYNC_US_BOUNDS.len() }>,
}

impl PersistStats {
    /// Writes the counters and the fdatasync-time histogram as metrics.
    pub fn export(&self, out: &mut Exposition) {
        let mut sink = MetricSink::default();
        self.export_counters(&mut sink);
        out.add_samples(sink.samples);
        out.histogram(
            "sipfork_journal_fsync_seconds",
            "Time of each fdatasync of a journal by the group commit",
            &[],
            &FSYNC_US_BOUNDS,
            &self.fsync_us.load(),
            1e6,
        );
        out.add(
            "sipfork_journal_slowest_sync_seconds",
            "Longest group commit round so far (the power-loss window is 10 ms plus this)",
            &[],
            Value::Seconds(self.slowest_sync_us.load(Ordering::Relaxed) as f64 / 1e6),
        );
    }

    fn export_counters(&self, sink: &mut MetricSink) {
        sink.counter(
            "sipfork_journal_syncs_total",
            "fdatasync calls of the group commit (journals that had new records)",
            &[],
            self.syncs.load(Ordering::Relaxed),
        );
        sink.counter(
            "sipfork_journal_sync_errors_total",
            "Failed fdatasync calls (never retried: the shard rewrites its journal from its live bindings)",
            &[],
            self.sync_errors.load(Ordering::Relaxed),
        );
        sink.counter(
            "sipfork_journal_sync_rounds_total",
            "Group commit rounds (one every 10 ms while a journal changes; none while all are clean)",
            &[],
            self.sync_rounds.load(Ordering::Relaxed),
        );
        sink.counter(
            "sipfork_journal_zeroing_failures_total",
            "Failed zeroings of journal space allocated ahead (the space stays allocated; only its first group commits cost more)",
            &[],
            self.zeroing_failures.load(Ordering::Relaxed),
        );
    }
}

/// The running persistence thread.
#[derive(Debug)]
pub struct Persistence {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    allocator: Option<JoinHandle<()>>,
    stats: Arc<PersistStats>,
}

impl Persistence {
    /// Starts the thread: group commit of `handles` every [`SYNC_INTERVAL`], and a worker thread
    /// for each compaction job from `jobs`, whose result goes back to its shard via `control`.
    pub fn start(
        handles: Vec<SyncHandle>,
        jobs: Receiver<CompactionRequest>,
        control: Controller<Shard>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(PersistStats::default());
        let (ahead_tx, ahead_rx) = mpsc::channel();
        let pending: Arc<[AtomicBool]> =
            (0..handles.len()).map(|_| AtomicBool::new(false)).collect();
        let allocator = {
            let (handles, stats, pending) =
                (handles.clone(), Arc::clone(&stats), Arc::clone(&pending));
            std::thread::Builder::new()
                .name("sipfork-allocate".into())
                .spawn(move || allocator_loop(&handles, &ahead_rx, &pending, &stats))?
        };
        let ahead = AheadRequests {
            tx: ahead_tx,
            pending,
        };
        let thread = {
            let (stop, stats) = (Arc::clone(&stop), Arc::clone(&stats));
            std::thread::Builder::new()
                .name("sipfork-persist".into())
                .spawn(move || persistence_loop(&handles, &jobs, &control, &stop, &stats, ahead))?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
            allocator: Some(allocator),
            stats,
        })
    }

    /// The thread's counters.
    pub fn stats(&self) -> Arc<PersistStats> {
        Arc::clone(&self.stats)
    }

    /// Stops the thread after one last sync round.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        // The persistence thread held the last requester: the allocator ends its job and exits.
        if let Some(t) = self.allocator.take() {
            let _ = t.join();
        }
    }
}

fn persistence_loop(
    handles: &[SyncHandle],
    jobs: &Receiver<CompactionRequest>,
    control: &Controller<Shard>,
    stop: &AtomicBool,
    stats: &PersistStats,
    ahead: AheadRequests,
) {
    // While every journal is clean the thread sleeps until a shard writes (no wake-up every
    // 10 ms on an appliance without registrations); the shards ring this bell.
    let bell = Arc::new(Doorbell::new(std::thread::current()));
    for handle in handles {
        handle.attach_doorbell(Arc::clone(&bell));
    }
    let mut next_sync = Instant::now() + SYNC_INTERVAL;
    let mut fsync = FsyncHistogram::default();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if Instant::now() >= next_sync || stopping {
            let synced = sync_round(handles, stats, &mut fsync);
            if !stopping {
                ask_for_space_ahead(handles, &ahead);
            }
            next_sync = Instant::now() + SYNC_INTERVAL;
            if !synced && !stopping {
                bell.arm();
                if !handles.iter().any(SyncHandle::is_dirty) {
                    // Until the first write after this look (it rings), a compaction job (its
                    // sender rings), or `Persistence::stop` (it unparks).
                    std::thread::park();
                    // A write woke it: its 200 OK may be on its way, sync at once.
                    next_sync = Instant::now();
                }
                bell.disarm();
            }
        }
        if stopping {
            return;
        }
        while let Ok((shard, job)) = jobs.try_recv() {
            spawn_compaction(shard, job, control.clone());
        }
        let wait = next_sync.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::park_timeout(wait);
        }
    }
}

/// One group commit over every journal; returns whether any journal had something to sync.
fn sync_round(handles: &[SyncHandle], stats: &PersistStats, fsync: &mut FsyncHistogram) -> bool {
    let started = Instant::now();
    let mut synced = false;
    for (i, handle) in handles.iter().enumerate() {
        let one = Instant::now();
        match handle.sync_if_dirty() {
            Ok(true) => {
                synced = true;
                stats.syncs.fetch_add(1, Ordering::Relaxed);
                fsync.observe(&FSYNC_US_BOUNDS, one.elapsed().as_micros() as u64);
                stats.fsync_us.store(fsync);
            }
            Ok(false) => {}
            Err(e) => {
                let n = stats.sync_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(shard = i, error = %e, count = n, "journal fdatasync failed");
                }
            }
        }
    }
    stats.sync_rounds.fetch_add(1, Ordering::Relaxed);
    stats
        .slowest_sync_us
        .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    synced
}

/// The persistence thread's line to the allocator thread (dropped with it, which ends the
/// allocator).
struct AheadRequests {
    tx: Sender<usize>,
    /// One per handle: asked for and not yet done (at most one request per journal in flight).
    pending: Arc<[AtomicBool]>,
}

/// After a sync round: each journal whose shard asked for space ahead
/// (`SyncHandle::wants_space_ahead`) goes to the allocator thread, once.
fn ask_for_space_ahead(handles: &[SyncHandle], ahead: &AheadRequests) {
    for (i, handle) in handles.iter().enumerate() {
        if handle.wants_space_ahead() && !ahead.pending[i].swap(true, Ordering::AcqRel) {
            let _ = ahead.tx.send(i);
        }
    }
}

/// The allocator thread: allocates and zeroes the segments ahead that the sync rounds ask for
/// (`SyncHandle::allocate_ahead`), so that the group commit never waits behind a zeroing. It
/// sleeps on its channel; it ends when the persistence thread has stopped (only it sends).
fn allocator_loop(
    handles: &[SyncHandle],
    requests: &Receiver<usize>,
    pending: &[AtomicBool],
    stats: &PersistStats,
) {
    while let Ok(i) = requests.recv() {
        let handle = &handles[i];
        match handle.allocate_ahead() {
            Ok(ahead) => {
                if let Some(error) = ahead.zero_error {
                    if stats.zeroing_failures.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(shard = i, %error, "zeroing journal space allocated ahead failed (it stays allocated; logged once)");
                    }
                }
            }
            Err(e) => {
                // The zeros' fdatasync failed: the journal is unhealthy until rewritten, as after
                // a failed group commit.
                let n = stats.sync_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::error!(shard = i, error = %e, count = n, "journal fdatasync failed");
                }
            }
        }
        pending[i].store(false, Ordering::Release);
    }
}

/// Runs one compaction job on its own thread (it reads and writes a whole journal, which must not
/// delay the group commit) and hands the result to the shard.
fn spawn_compaction(shard: ShardId, job: journal::CompactionJob, control: Controller<Shard>) {
    let spawned = std::thread::Builder::new()
        .name(format!("sipfork-compact-{}", shard.0))
        .spawn(move || {
            let mut result = job.run();
            // The replay's map of the live set is gone; give its pages back.
            if !os::release_free_memory() {
                tracing::warn!(
                    shard = shard.0,
                    "the allocator refused to purge freed pages"
                );
            }
            loop {
                match control.post(shard, move |s: &mut Shard, _| s.finish_compaction(result)) {
                    Ok(()) => return,
                    // The refused job took the result with it. The shard is still compacting (and
                    // keeps appending to the old journal and the tail): tell it to give this round
                    // up, so it starts afresh later.
                    Err(ControlError::Busy(_)) => {
                        std::thread::sleep(SYNC_INTERVAL);
                        result = Err(std::io::Error::other(
                            "the shard's control queue was full; compaction abandoned",
                        ));
                    }
                    // Stopped: the next start deletes the temporary file.
                    Err(_) => return,
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(shard = shard.0, error = %e, "cannot spawn a compaction worker");
    }
}
