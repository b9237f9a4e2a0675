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

/// Hands memory the allocator holds but no longer uses back to the OS (glibc `malloc_trim`).
/// For after a rare, large, short-lived allocation such as a compaction's replay, whose freed
/// pages glibc would otherwise keep in a thread arena for the life of the process.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no pointer is passed.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Heap bytes the allocator has handed out and not had back (glibc `mallinfo2`: chunks in use
/// plus mmapped blocks); `None` off glibc. Unlike resident memory it falls when state is freed.
pub fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 takes no arguments and returns a plain struct by value.
        let m = unsafe { libc::mallinfo2() };
        Some((m.uordblks + m.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
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

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn heap_in_use_rises_with_live_state_and_falls_when_it_is_freed() {
        let before = heap_in_use().unwrap();
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let during = heap_in_use().unwrap();
        drop(block);
        let after = heap_in_use().unwrap();
        // Other tests allocate concurrently: a margin of 16 MiB either way.
        assert!(during >= before + (48 << 20), "{before} -> {during}");
        assert!(after + (48 << 20) <= during, "{during} -> {after}");
    }
}
