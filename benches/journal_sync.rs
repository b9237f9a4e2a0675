//! What the persistence thread's group commit costs per `fdatasync`, with the journal's space
//! allocated ahead as written zeros (the default) and as `fallocate` leaves it (unwritten
//! extents, what the journal did before), alternated in the same run.
//!
//! One thread plays a shard: a REGISTER-sized record (7-byte key, 250-byte value) put and
//! written out every millisecond (about one journal's share of 2,000 REGISTER/s on 2 shards).
//! Another plays the persistence thread: `sync_if_dirty` every 10 ms, then `allocate_ahead`
//! (which the appliance runs on its allocator thread instead). Its CPU is read with
//! `getrusage(RUSAGE_THREAD)` around each pair. A round first appends past the bridge the shard
//! allocates itself (the first allocation ahead, and when zeroing, the writes of the two
//! segments after it: that round is reported apart, as "extension"), then measures for
//! SECONDS. The journal lives in the system temp dir (`TMPDIR`): a file system with unwritten
//! extents (ext4, XFS) shows the difference; tmpfs has none.
//!
//! Run: `cargo bench --profile ci --bench journal_sync -- [SECONDS [ROUNDS]]` (default 8 s, 3
//! rounds of each mode).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipfork::engine::persist::journal::BRIDGE;
use sipfork::engine::persist::Journal;

const VALUE_LEN: usize = 250;
const APPEND_EVERY: Duration = Duration::from_millis(1);
const SYNC_EVERY: Duration = Duration::from_millis(10);

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`: the scheduler's exact runtime) and its
/// system part (`getrusage(RUSAGE_THREAD)`, whose user/system split is sampled at ticks: only
/// meaningful summed over many calls).
fn thread_cpu() -> (Duration, Duration) {
    // SAFETY: clock_gettime and getrusage fill the structs they are given.
    let (ts, ru) = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        assert_eq!(
            libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts),
            0
        );
        let mut ru: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut ru), 0);
        (ts, ru)
    };
    let sys = Duration::new(ru.ru_stime.tv_sec as u64, ru.ru_stime.tv_usec as u32 * 1000);
    (Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32), sys)
}

#[derive(Default, Debug)]
struct Figures {
    syncs: u64,
    cpu: Duration,
    sys: Duration,
    wall: Duration,
    /// CPU and wall of the rounds that allocated (and zeroed) ahead.
    extensions: u64,
    extension_cpu: Duration,
    extension_wall: Duration,
}

fn us(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e6 / n.max(1) as f64
}

fn round(dir: &Path, zero: bool, measure: Duration) -> Figures {
    let _ = std::fs::remove_dir_all(dir);
    let (mut j, _) = Journal::open(dir, "bench").expect("open the journal");
    j.set_compaction_min_bytes(u64::MAX);
    j.set_zero_ahead(zero);
    assert!(j.mapped().is_ok(), "{:?}", j.mapped());
    let path = j.path();
    let handle = j.sync_handle();
    let stop = Arc::new(AtomicBool::new(false));
    let len = Arc::new(AtomicU64::new(0));
    let shard = {
        let (stop, len) = (Arc::clone(&stop), Arc::clone(&len));
        std::thread::spawn(move || {
            let value = vec![b'x'; VALUE_LEN];
            let mut next = Instant::now();
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("{}", 1_000_000 + n % 200_000);
                n += 1;
                j.put(key.as_bytes(), &value).unwrap();
                j.write_out().unwrap();
                len.store(j.file_len(), Ordering::Relaxed);
                next += APPEND_EVERY;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        })
    };
    let mut f = Figures::default();
    let mut measuring_since: Option<Instant> = None;
    loop {
        std::thread::sleep(SYNC_EVERY);
        let size = std::fs::metadata(&path).unwrap().len();
        let (c0, s0) = thread_cpu();
        let t0 = Instant::now();
        let synced = handle.sync_if_dirty().expect("fdatasync");
        // The appliance's allocator thread, here in line: such rounds are counted apart below.
        handle.allocate_ahead().expect("fdatasync of the zeros");
        let wall = t0.elapsed();
        let (c1, s1) = thread_cpu();
        let grew = std::fs::metadata(&path).unwrap().len() != size;
        if grew {
            f.extensions += 1;
            f.extension_cpu += c1 - c0;
            f.extension_wall += wall;
            continue;
        }
        match measuring_since {
            None if len.load(Ordering::Relaxed) > BRIDGE + (64 << 10) => {
                measuring_since = Some(Instant::now());
            }
            Some(since) if synced => {
                f.syncs += 1;
                f.cpu += c1 - c0;
                f.sys += s1 - s0;
                f.wall += wall;
                if since.elapsed() >= measure {
                    break;
                }
            }
            _ => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    shard.join().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    f
}

fn main() {
    // `cargo bench` passes `--bench`; take the numbers among the arguments.
    let numbers: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seconds = numbers.first().copied().unwrap_or(8);
    let rounds = numbers.get(1).copied().unwrap_or(3);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("sipfork-bench-journal-sync-{}", std::process::id()));
    println!(
        "per fdatasync of the group commit, {seconds} s per round, journal in {}",
        std::env::temp_dir().display()
    );
    println!("mode      round  syncs  cpu µs  (sys share)  wall µs | extension rounds: n, cpu ms, wall ms");
    for r in 1..=rounds {
        for zero in [false, true] {
            let f = round(&dir, zero, Duration::from_secs(seconds));
            println!(
                "{:<9} {r:>5}  {:>5}  {:>6.1}  {:>10.0} %  {:>7.1} | {}, {:.1}, {:.1}",
                if zero { "zeroed" } else { "unwritten" },
                f.syncs,
                us(f.cpu, f.syncs),
                100.0 * f.sys.as_secs_f64() / f.cpu.as_secs_f64().max(1e-9),
                us(f.wall, f.syncs),
                f.extensions,
                f.extension_cpu.as_secs_f64() * 1e3,
                f.extension_wall.as_secs_f64() * 1e3,
            );
        }
    }
}
