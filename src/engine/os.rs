//! Process-level OS services the appliance needs besides sockets: secrets from the kernel's
//! random source, and the signals (SIGTERM, SIGINT stop; SIGHUP reloads) taken synchronously.
//!
//! Signals are blocked in the main thread *before* any other thread exists, so every thread
//! inherits the mask and the only way a stop signal is seen is [`StopSignals::wait`] on the main
//! thread: no async-signal-safety concerns, no handler racing with the shard loops.

use std::io;
use std::time::Duration;

/// Fills `buf` from the kernel's CSPRNG (`getrandom(2)`, blocking only until the pool is
/// initialised at boot).
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe the live, writable slice `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

/// Hands memory the allocator holds but no longer uses back to the OS now rather than after its
/// decay time: jemalloc's arenas (the binary's allocator, `src/main.rs`) are purged, and glibc's
/// heap is trimmed (`malloc_trim`: what a process on the system allocator, or a C library in
/// this one, keeps). For after a rare, large, short-lived allocation such as a compaction's replay.
/// `false` when jemalloc refused the purge (nothing was handed back then).
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no pointer is passed.
    unsafe {
        libc::malloc_trim(0);
    }
    #[cfg(target_os = "linux")]
    {
        // `arena.<MALLCTL_ARENAS_ALL>.purge`: a command without a value.
        const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
        // SAFETY: a NUL-terminated name and no old or new value: jemalloc reads and writes no
        // memory of ours.
        let rc = unsafe {
            tikv_jemalloc_sys::mallctl(
                PURGE_ALL.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            )
        };
        rc == 0
    }
    #[cfg(not(target_os = "linux"))]
    true
}

/// The allocator's heap figures, read at one instant (jemalloc's statistics are a snapshot
/// taken when its epoch advances: once for both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes handed out and not had back (`stats.allocated`): the live state; unlike resident
    /// memory it falls when state is freed.
    pub in_use: u64,
    /// Bytes of the allocator's pages that hold data (`stats.resident`): what the heap costs in
    /// resident memory, freed-but-not-yet-purged pages included.
    pub resident: u64,
}

/// The `sipfork` binary's allocator's figures (jemalloc); `None` off Linux.
pub fn heap_stats() -> Option<HeapStats> {
    #[cfg(target_os = "linux")]
    {
        tikv_jemalloc_ctl::epoch::advance().ok()?;
        Some(HeapStats {
            in_use: tikv_jemalloc_ctl::stats::allocated::read().ok()? as u64,
            resident: tikv_jemalloc_ctl::stats::resident::read().ok()? as u64,
        })
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// A stop signal that arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM (service manager, `kill`).
    Term,
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGHUP: re-read the configuration (not a stop).
    Hangup,
}

/// SIGTERM, SIGINT and SIGHUP, blocked for every thread and taken with [`StopSignals::wait`].
#[derive(Debug)]
pub struct StopSignals {
    set: libc::sigset_t,
}

impl StopSignals {
    /// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread. Call it on the main thread before any
    /// thread is spawned, so all threads inherit the mask.
    pub fn block() -> io::Result<Self> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before any other use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a live sigset_t; the signal numbers are valid.
        let rc = unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGHUP);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Self { set })
    }

    /// Waits at most `timeout` for one of the signals; `None` when none came.
    pub fn wait(&self, timeout: Duration) -> io::Result<Option<StopSignal>> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        // SAFETY: `self.set` is an initialised sigset_t, `ts` a live timespec; no siginfo is
        // asked for (null).
        let rc = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        if rc == libc::SIGTERM {
            return Ok(Some(StopSignal::Term));
        }
        if rc == libc::SIGINT {
            return Ok(Some(StopSignal::Interrupt));
        }
        if rc == libc::SIGHUP {
            return Ok(Some(StopSignal::Hangup));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_fill_the_buffer_and_differ() {
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        random_bytes(&mut a).unwrap();
        random_bytes(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }

    /// The soak's RSS step (`loadtest/README.md` run 6): message-sized buffers with lifetimes from
    /// microseconds to Timer J/K's 32 s, whose sizes all grow at once (every Call-ID, branch and
    /// tag gains a digit at call 1,000,000). The allocator must not keep pages for the old sizes
    /// once their buffers are gone: the pages it holds for live data (`stats.arenas.<i>.pactive`)
    /// grow with the live bytes, not with the shift. glibc's malloc, fed the same sequence, grows
    /// its heap from 20.5 to 22.9 MB for 0.4 MB more in use, and keeps it.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_shift_in_message_sizes_leaves_no_pages_behind() {
        use std::collections::VecDeque;
        use tikv_jemalloc_ctl::raw;
        // Run on its own thread bound to an arena of its own: other tests allocate at the same
        // time, and the arena's active pages are this workload's alone.
        std::thread::spawn(|| {
            // SAFETY: `arenas.create` reads an unsigned (the new arena's index), `thread.arena`
            // writes one, and `stats.arenas.<i>.pactive` reads a size_t, as the names' types are.
            let arena: u32 = unsafe { raw::read(b"arenas.create\0") }.unwrap();
            // SAFETY: as above.
            unsafe { raw::write(b"thread.arena\0", arena) }.unwrap();
            let name = format!("stats.arenas.{arena}.pactive\0");
            let pages = || -> usize {
                tikv_jemalloc_ctl::epoch::advance().unwrap();
                // SAFETY: as above.
                unsafe { raw::read(name.as_bytes()) }.unwrap()
            };
            // Per call: the request, kept for the whole window (Timer J/K's wait); a provisional
            // response, freed a few calls later; the final response, kept half the window.
            const WINDOW: usize = 16_000;
            let mut held: [VecDeque<Box<[u8]>>; 3] = Default::default();
            let mut calls = |grow: usize| {
                for c in 0..5 * WINDOW {
                    let msg = |len: usize| vec![c as u8; len + grow].into_boxed_slice();
                    held[0].push_back(msg(900 + c % 40));
                    held[1].push_back(msg(420 + c % 24));
                    held[2].push_back(msg(700 + c % 32));
                    for (queue, keep) in held.iter_mut().zip([WINDOW, 8, WINDOW / 2]) {
                        if queue.len() > keep {
                            queue.pop_front();
                        }
                    }
                }
            };
            calls(0);
            let before = pages();
            // Every message 16 bytes longer from now on.
            calls(16);
            let after = pages();
            // ~20 MB live (5,000 pages); 16 bytes more each is ~0.4 MB (100 pages).
            assert!(before > 4_000, "{before} pages: the workload ran elsewhere");
            assert!(
                after <= before + 200,
                "active pages {before} -> {after} after the size shift"
            );
            std::hint::black_box(&held);
        })
        .join()
        .unwrap();
    }

    /// A purge is accepted and leaves no dirty page in any arena (freed pages waiting for their
    /// decay time): what a compaction's replay map leaves is handed back at once.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_purge_hands_freed_pages_back_at_once() {
        use tikv_jemalloc_ctl::raw;
        // Many small blocks (a replay map's entries), freed: their pages turn dirty.
        let blocks: Vec<Box<[u8; 256]>> = (0..100_000).map(|_| Box::new([7u8; 256])).collect();
        drop(std::hint::black_box(blocks));
        assert!(release_free_memory(), "jemalloc refused the purge");
        tikv_jemalloc_ctl::epoch::advance().unwrap();
        // SAFETY: `stats.arenas.<MALLCTL_ARENAS_ALL>.pdirty` reads a size_t.
        let dirty: usize = unsafe { raw::read(b"stats.arenas.4096.pdirty\0") }.unwrap();
        // Other tests allocate and free at the same time: a few of their pages may be dirty
        // again already, never the 25 MB freed here (6,000 pages).
        assert!(dirty < 1_000, "{dirty} dirty pages after the purge");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn heap_in_use_rises_with_live_state_and_falls_when_it_is_freed() {
        let in_use = || heap_stats().unwrap().in_use;
        // Other tests allocate and free concurrently (tens of MB at a time, now and then): a
        // margin of 16 MiB either way, and a few tries, one of which must see it clean.
        let mut seen = Vec::new();
        for _ in 0..5 {
            let before = in_use();
            let block = std::hint::black_box(vec![1u8; 64 << 20]);
            let during = in_use();
            drop(block);
            let after = in_use();
            if during >= before + (48 << 20) && after + (48 << 20) <= during {
                return;
            }
            seen.push((before, during, after));
        }
        panic!("the 64 MiB block never showed: {seen:?}");
    }
}
