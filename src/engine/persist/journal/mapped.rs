//! The journal's file as a shared memory mapping, allocated ahead with `fallocate`. See the
//! parent module's doc ("Durability").
//!
//! The shard copies each turn's records into the mapping at the file's logical end: a `memcpy`
//! into the page cache (a shared mapping is the page cache), so a process crash keeps them, and
//! no syscall. A store into a mapped page past the file's end, or into a page the file system
//! cannot back (a hole on a full disk), raises SIGBUS, so the mapping is only ever written below
//! [`SharedFile::allocated`]: bytes `fallocate` has returned success for. The persistence thread
//! (through its allocator thread, `app/persist.rs`, so that zeroing never delays a group commit)
//! keeps that limit one to two [`SEGMENT`]s ahead of the logical end
//! ([`SharedFile::extend_ahead`], asked for by the shard through [`SharedFile::wanted`]); when a
//! batch would cross it anyway, the shard allocates itself before copying (a [`BRIDGE`], or just
//! the pages the batch needs when the file system cannot give one), and a refusal (ENOSPC, EIO)
//! fails the batch before any byte of it is copied, exactly like a failed `write(2)`.
//!
//! # Written zeros
//! `fallocate` leaves *unwritten* extents: blocks reserved, data not yet valid on disk. Each
//! `fdatasync` after stores into such a range must convert the stored part to written extents
//! and write that metadata (on ext4 `ext4_write_inode`, about a third of the sync's CPU). So the
//! allocator thread, after allocating a range ahead and before publishing it, makes its blocks
//! written: zeros in 4 KiB `pwrite`s (small writes keep 4 KiB folios in the page cache; one large
//! write makes large folios, and each later store through the mapping then dirties, and
//! writeback writes, a whole large folio), written back every [`ZERO_STEP`] so that a group
//! commit running meanwhile finds few of them dirty, then one `fdatasync` (the extents); the group
//! commits after it have no extents to convert. (Not `FALLOC_FL_WRITE_ZEROES`: it leaves written
//! blocks outside the page cache, so the shard's first store into each page would read it from
//! the disk.)
//! Zeroing is an optimisation: when it fails the range is still allocated, and is published
//! anyway (the failure is counted: [`Ahead::zero_error`]).
//!
//! The shard's own allocation (a batch crossing the limit) does not zero: it must not wait on a
//! disk. It allocates only a [`BRIDGE`] (a few hundred ms of appends) so that little of a file is
//! ever left unwritten: the persistence thread zeroes the segments after it. Zeroing must never
//! overwrite a record, and the shard may publish a higher limit (and then store below it) while
//! the persistence thread is zeroing the range: so every publication of [`SharedFile::allocated`]
//! and every zeroing write (one page) is made under
//! one mutex, and a zeroing write only touches bytes at or above the limit it reads under that
//! mutex. A shard that crosses the limit during a zeroing waits for at most one such write, and
//! the zeroing skips what the shard took. (The alternative, the shard waiting for the whole
//! zeroing and its `fdatasync`, would stall the shard's turn behind the disk.)

#[cfg(test)]
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Allocation step ahead of the logical end.
pub const SEGMENT: u64 = 8 << 20;
/// What the shard allocates itself when a batch crosses the allocated limit (left unwritten: the
/// persistence thread zeroes the segments above it).
pub const BRIDGE: u64 = 256 << 10;
/// Zeros written are written back (`sync_file_range`) every this many bytes, outside the lock:
/// a group commit's `fdatasync` of the same file would otherwise write back and wait for all of
/// them (measured: 7–13 ms instead of ~1 ms for commits overlapping a 16 MiB zeroing).
const ZERO_STEP: u64 = 256 << 10;
/// Smallest address-space reservation of a mapping (grown by doubling, with `mremap`).
const MIN_RESERVATION: u64 = 64 << 20;
const PAGE: u64 = 4096;

/// The journal's open file, shared by the shard (which maps and appends) and the persistence
/// thread (which syncs and allocates ahead). One per file: a compaction's commit brings a new one.
#[derive(Debug)]
pub(super) struct SharedFile {
    pub(super) file: File,
    /// Bytes from the start of the file that `fallocate` guaranteed (or that were written before
    /// the file was mapped): stores below this never fault.
    allocated: AtomicU64,
    /// Allocation the shard asks the persistence thread for (0: none).
    wanted: AtomicU64,
    /// Held to publish `allocated` and for each zeroing write (see the module doc).
    extending: Mutex<()>,
    /// Tests: called between zeroing writes with the offset zeroed up to (no lock held).
    #[cfg(test)]
    pub(super) zero_hook: Mutex<Option<ZeroHook>>,
    /// Tests: an errno every zeroing write returns instead of writing (0: none).
    #[cfg(test)]
    pub(super) zero_fail: std::sync::atomic::AtomicI32,
    /// Tests: an errno the zeros' `fdatasync` returns instead of syncing (0: none).
    #[cfg(test)]
    pub(super) zero_sync_fail: std::sync::atomic::AtomicI32,
}

/// Tests: what [`SharedFile::zero`] calls between its writes.
#[cfg(test)]
pub(super) struct ZeroHook(pub(super) Box<dyn FnMut(u64) + Send>);

#[cfg(test)]
impl std::fmt::Debug for ZeroHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ZeroHook")
    }
}

/// What one allocation ahead did ([`SharedFile::extend_ahead`], `SyncHandle::allocate_ahead`).
#[derive(Debug, Default)]
pub struct Ahead {
    /// A range was allocated and published.
    pub allocated: bool,
    /// Bytes made written (zeros) before publishing.
    pub zeroed: u64,
    /// Zeroing failed part-way: the range was published anyway (it is allocated), and only its
    /// group commits cost what they did before zeroing. Also the failed `fdatasync` of zeros
    /// written into a file that a compaction replaced meanwhile (no record is lost with it).
    pub zero_error: Option<io::Error>,
}

impl SharedFile {
    /// `file`, whose first `len` bytes exist.
    pub(super) fn new(file: File, len: u64) -> SharedFile {
        SharedFile {
            file,
            allocated: AtomicU64::new(len),
            wanted: AtomicU64::new(0),
            extending: Mutex::new(()),
            #[cfg(test)]
            zero_hook: Mutex::new(None),
            #[cfg(test)]
            zero_fail: std::sync::atomic::AtomicI32::new(0),
            #[cfg(test)]
            zero_sync_fail: std::sync::atomic::AtomicI32::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.extending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes `..to` the published limit (never lowers it); the caller holds `extending`.
    fn publish(&self, _held: &MutexGuard<'_, ()>, to: u64) {
        self.allocated.fetch_max(to, Ordering::AcqRel);
    }

    /// The published limit.
    #[cfg(test)]
    pub(super) fn published(&self) -> u64 {
        self.allocated.load(Ordering::Acquire)
    }

    /// Unmapped, the journal is about to `pwrite` `..end`: publishes it first, so that a zeroing
    /// of space allocated ahead (asked for while the journal was mapped) never writes over it.
    pub(super) fn claim(&self, end: u64) {
        self.publish(&self.lock(), end);
    }

    /// The file holds at most `len` bytes (it was cut back): nothing beyond counts as allocated.
    pub(super) fn allocated_at_most(&self, len: u64) {
        let _held = self.lock();
        self.allocated.fetch_min(len, Ordering::AcqRel);
    }

    /// Whether the shard asked for more than is allocated.
    pub(super) fn wants_extension(&self) -> bool {
        self.wanted.load(Ordering::Acquire) > self.allocated.load(Ordering::Acquire)
    }

    /// Off the shard (the persistence thread's allocator thread): allocates up to what the shard
    /// asked for, if it asked, makes the new range's blocks written (zeros, then one
    /// `fdatasync`) and publishes it. A refused allocation only drops the request: the shard
    /// allocates itself when it reaches the limit, and that refusal is the one reported (it
    /// fails a batch). Returns what it did, and the result of the zeros' `fdatasync` (`Ok` when
    /// none was due), the range published either way: a failed sync is the journal's (it may
    /// have dropped the shard's dirty pages too) while this file is still the journal
    /// (`SyncHandle::allocate_ahead` decides). `zero: false` publishes the range as `fallocate`
    /// left it (unwritten; for measurements).
    pub(super) fn extend_ahead(&self, zero: bool) -> (Ahead, io::Result<()>) {
        let wanted = self.wanted.load(Ordering::Acquire);
        let have = self.allocated.load(Ordering::Acquire);
        let mut ahead = Ahead::default();
        if wanted <= have {
            return (ahead, Ok(()));
        }
        if fallocate(&self.file, have, wanted).is_err() {
            let _ = self
                .wanted
                .compare_exchange(wanted, 0, Ordering::AcqRel, Ordering::Relaxed);
            return (ahead, Ok(()));
        }
        let mut synced = Ok(());
        if zero {
            match self.zero(have, wanted) {
                Ok(n) => ahead.zeroed = n,
                Err((n, e)) => {
                    ahead.zeroed = n;
                    ahead.zero_error = Some(e);
                }
            }
            if ahead.zeroed > 0 {
                synced = self.sync_zeros();
            }
        }
        self.publish(&self.lock(), wanted);
        ahead.allocated = true;
        (ahead, synced)
    }

    fn sync_zeros(&self) -> io::Result<()> {
        #[cfg(test)]
        if let errno @ 1.. = self.zero_sync_fail.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.file.sync_data()
    }

    /// Writes zeros over `from..to` (allocated, not yet published), skipping whatever lies below
    /// the published limit when each write is made. Returns the bytes zeroed, and on failure
    /// also the error.
    fn zero(&self, from: u64, to: u64) -> Result<u64, (u64, io::Error)> {
        const ZEROS: [u8; PAGE as usize] = [0; PAGE as usize];
        let mut zeroed = 0;
        let mut at = from;
        loop {
            let held = self.lock();
            // The shard may have published a limit above `at` since: it may store below it.
            let start = at.max(self.allocated.load(Ordering::Acquire));
            if start >= to {
                break;
            }
            let end = round_up(start + 1, PAGE).min(to);
            #[cfg(test)]
            if let errno @ 1.. = self.zero_fail.load(Ordering::Relaxed) {
                return Err((zeroed, io::Error::from_raw_os_error(errno)));
            }
            let done = self
                .file
                .write_all_at(&ZEROS[..(end - start) as usize], start);
            drop(held);
            if let Err(e) = done {
                return Err((zeroed, e));
            }
            zeroed += end - start;
            at = end;
            if at % ZERO_STEP == 0 || at == to {
                // Started and waited for here, so the group commit does not wait for them.
                write_back(&self.file, round_down(at - 1, ZERO_STEP), at);
            }
            #[cfg(test)]
            if let Some(hook) = self
                .zero_hook
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
            {
                (hook.0)(at);
            }
        }
        Ok(zeroed)
    }
}

/// True for the errors that say the file system has no `fallocate` (the journal then writes with
/// `write(2)`).
pub(super) fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
    )
}

fn fallocate(file: &File, from: u64, to: u64) -> io::Result<()> {
    let (Ok(offset), Ok(len)) = (
        libc::off_t::try_from(from),
        libc::off_t::try_from(to - from),
    ) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    loop {
        // SAFETY: plain syscall on an open descriptor.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes back `from..to` of `file` and waits for it (`sync_file_range`; no metadata, no device
/// flush: the `fdatasync` after the zeroing does those). A failure is left to that `fdatasync`.
fn write_back(file: &File, from: u64, to: u64) {
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(from),
        libc::off64_t::try_from(to - from),
    ) else {
        return;
    };
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: plain syscall on an open descriptor.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, flags) };
}

fn round_down(n: u64, to: u64) -> u64 {
    n / to * to
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// A shared, writable mapping of a journal file, written only by the journal's thread.
pub(super) struct Mapping {
    ptr: NonNull<u8>,
    /// Bytes of address space mapped (the file may be shorter: only `allocated` is touched).
    len: u64,
    /// The journal thread's copy of `shared.allocated` (refreshed before any syscall).
    allocated: u64,
    shared: Arc<SharedFile>,
    /// Tests: errors the next `fallocate` calls on this side return instead of calling it.
    #[cfg(test)]
    pub(super) inject: VecDeque<i32>,
}

// SAFETY: the mapping is owned by one `Journal` and written only through `&mut self`; the
// pointer stays valid until `drop` unmaps it.
unsafe impl Send for Mapping {}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("len", &self.len)
            .field("allocated", &self.allocated)
            .finish_non_exhaustive()
    }
}

impl Mapping {
    /// Maps `shared`'s file (address space for at least `len` bytes; nothing is allocated).
    pub(super) fn new(shared: Arc<SharedFile>, len: u64) -> io::Result<Mapping> {
        let reserve = len
            .saturating_mul(2)
            .max(MIN_RESERVATION)
            .next_power_of_two();
        let size =
            usize::try_from(reserve).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        // SAFETY: a new shared mapping of an open file; the kernel picks the address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                shared.file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let allocated = shared.allocated.load(Ordering::Acquire);
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            len: reserve,
            allocated,
            shared,
            #[cfg(test)]
            inject: VecDeque::new(),
        })
    }

    /// Copies `bytes` to file offset `at`. Allocates first when they would cross the allocated
    /// limit; an error means nothing was copied.
    pub(super) fn write(&mut self, at: u64, bytes: &[u8]) -> io::Result<()> {
        let end = at + bytes.len() as u64;
        if end > self.allocated || end > self.len {
            self.make_room(end)?;
        }
        debug_assert!(end <= self.allocated && end <= self.len);
        // SAFETY: `at..end` lies inside the mapping and below the allocated limit (checked
        // above), so the pages exist and are backed; only this thread writes the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(at as usize),
                bytes.len(),
            );
        }
        if end + SEGMENT / 2 > self.allocated {
            self.ask_ahead(end);
        }
        Ok(())
    }

    /// Close to the limit: takes what the persistence thread allocated meanwhile, and asks it for
    /// more when that is not enough.
    fn ask_ahead(&mut self, end: u64) {
        self.allocated = self
            .allocated
            .max(self.shared.allocated.load(Ordering::Acquire));
        if end + SEGMENT / 2 > self.allocated {
            let target = round_up(end, SEGMENT) + SEGMENT;
            self.shared.wanted.fetch_max(target, Ordering::AcqRel);
        }
    }

    /// Makes `..end` writable: allocates (a [`BRIDGE`]; just the pages needed when the file
    /// system cannot give that) and grows the mapping. It does not zero (a shard must not wait on
    /// the disk): the persistence thread zeroes the segments above.
    fn make_room(&mut self, end: u64) -> io::Result<()> {
        if end > self.allocated {
            // Under the mutex: a zeroing write of the persistence thread is either done before
            // this publication or sees it and skips what it covers (module doc).
            let shared = Arc::clone(&self.shared);
            let held = shared.lock();
            self.allocated = self.allocated.max(shared.allocated.load(Ordering::Acquire));
            if end > self.allocated {
                let bridge = round_up(end, BRIDGE);
                let target = match self.fallocate(bridge) {
                    Ok(()) => bridge,
                    Err(e) if unsupported(&e) => return Err(e),
                    Err(_) => {
                        let pages = round_up(end, PAGE);
                        self.fallocate(pages)?;
                        pages
                    }
                };
                self.allocated = target;
                shared.publish(&held, target);
            }
        }
        if end > self.len {
            let len = end.saturating_mul(2).next_power_of_two();
            let size =
                usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
            // SAFETY: resizes this mapping (it may move; nothing else holds its address).
            let ptr = unsafe {
                libc::mremap(
                    self.ptr.as_ptr().cast(),
                    self.len as usize,
                    size,
                    libc::MREMAP_MAYMOVE,
                )
            };
            if ptr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            self.ptr =
                NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mremap returned null"))?;
            self.len = len;
        }
        Ok(())
    }

    fn fallocate(&mut self, to: u64) -> io::Result<()> {
        #[cfg(test)]
        if let Some(errno) = self.inject.pop_front() {
            return Err(io::Error::from_raw_os_error(errno));
        }
        fallocate(&self.shared.file, self.allocated, to)
    }

    /// Bytes the journal thread may write without allocating.
    #[cfg(test)]
    pub(super) fn allocated(&self) -> u64 {
        self.allocated
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len as usize);
        }
    }
}
