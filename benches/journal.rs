//! The journal's cost per REGISTER on the shard's path: one binding record (a 7-byte key and a
//! 250-byte value, about what a REGISTER's binding encodes to) put and written out per loop turn,
//! appended with `pwrite(2)` (the fallback, and what the journal did before it was mapped) and
//! copied into the shared mapping, in the same run. A thread plays the persistence thread
//! beside both, as in the appliance: every 10 ms it `fdatasync`s (and, for the mapping,
//! allocates the next segment ahead, written as zeros), so the figures include what writeback
//! costs the shard (a mapped page cleaned by writeback faults again on its next store).
//! `mmap_per_turn_unwritten` leaves the space allocated ahead as `fallocate` makes it
//! (unwritten extents, as before the zeroing); the persistence thread's own cost per
//! `fdatasync` is `benches/journal_sync.rs`.
//!
//! The journal lives in the system temp dir (`TMPDIR`); each journal is replaced by a fresh one
//! after 64 MiB so the file stays bounded.
//!
//! Run: `cargo bench --bench journal -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use sipfork::engine::persist::Journal;

const VALUE_LEN: usize = 250;
const MAX_FILE: u64 = 64 << 20;

/// A journal in a scratch directory with a persistence thread syncing it every 10 ms.
struct Bench {
    dir: PathBuf,
    journal: Option<Journal>,
    stop: Arc<AtomicBool>,
    syncer: Option<std::thread::JoinHandle<()>>,
    mapped: bool,
    zero: bool,
}

impl Bench {
    fn new(mapped: bool, zero: bool) -> Bench {
        let dir = std::env::temp_dir().join(format!(
            "sipfork-bench-journal-{}-{mapped}-{zero}",
            std::process::id()
        ));
        let mut b = Bench {
            dir,
            journal: None,
            stop: Arc::new(AtomicBool::new(false)),
            syncer: None,
            mapped,
            zero,
        };
        b.fresh();
        b
    }

    /// Replaces the journal (and its persistence thread) by an empty one.
    fn fresh(&mut self) {
        self.stop_syncer();
        self.journal = None;
        let _ = std::fs::remove_dir_all(&self.dir);
        let (mut j, _) = Journal::open(&self.dir, "bench").expect("open the journal");
        j.set_compaction_min_bytes(u64::MAX);
        j.set_mapped(self.mapped).expect("choose the append path");
        j.set_zero_ahead(self.zero);
        assert_eq!(j.mapped().is_ok(), self.mapped, "{:?}", j.mapped());
        let handle = j.sync_handle();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        self.syncer = Some(std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                handle.sync_if_dirty().expect("fdatasync");
                // The allocator thread's work, here on the same thread (as in the appliance, never
                // on the shard's).
                handle.allocate_ahead().expect("fdatasync of the zeros");
            }
        }));
        self.stop = stop;
        self.journal = Some(j);
    }

    fn stop_syncer(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.syncer.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop_syncer();
        self.journal = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn journal(c: &mut Criterion) {
    let mut group = c.benchmark_group("journal");
    group.throughput(Throughput::Elements(1));
    let value = vec![b'x'; VALUE_LEN];
    for (name, mapped, zero) in [
        ("pwrite_per_turn", false, true),
        ("mmap_per_turn_unwritten", true, false),
        ("mmap_per_turn", true, true),
    ] {
        let mut bench = Bench::new(mapped, zero);
        let mut n: u64 = 0;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    if bench.journal.as_ref().unwrap().file_len() > MAX_FILE {
                        bench.fresh();
                    }
                    let key = format!("{}", 1_000_000 + n % 200_000);
                    n += 1;
                    let j = bench.journal.as_mut().unwrap();
                    let start = Instant::now();
                    j.put(black_box(key.as_bytes()), black_box(&value)).unwrap();
                    j.write_out().unwrap();
                    spent += start.elapsed();
                }
                spent
            })
        });
    }
    group.finish();
}

criterion_group!(benches, journal);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
