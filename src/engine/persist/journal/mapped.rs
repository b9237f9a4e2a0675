//! The journal's file as a shared memory mapping, allocated ahead with `fallocate`. See the
//! parent module's doc ("Durability").
//!
//! The shard copies each turn's records into the mapping at the file's logical end: a `memcpy`
//! into the page cache (a shared mapping is the page cache), so a process crash keeps them, and
//! no syscall. A store into a mapped page past the file's end, or into a page the file system
//! cannot back (a hole on a full disk), raises SIGBUS, so the mapping is only ever written below
//! [`SharedFile::allocated`]: bytes `fallocate` has returned success for. The persistence thread
//! keeps that limit one to two [`SEGMENT`]s ahead of the logical end
//! ([`SharedFile::extend_ahead`], asked for by the shard through [`SharedFile::wanted`]); when a
//! batch would cross it anyway, the shard allocates itself before copying (a segment, or just the
//! pages the batch needs when the file system cannot give a segment), and a refusal (ENOSPC, EIO)
//! fails the batch before any byte of it is copied, exactly like a failed `write(2)`.

#[cfg(test)]
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Allocation step ahead of the logical end.
pub const SEGMENT: u64 = 8 << 20;
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
}

impl SharedFile {
    /// `file`, whose first `len` bytes exist.
    pub(super) fn new(file: File, len: u64) -> SharedFile {
        SharedFile {
            file,
            allocated: AtomicU64::new(len),
            wanted: AtomicU64::new(0),
        }
    }

    /// The file holds at most `len` bytes (it was cut back): nothing beyond counts as allocated.
    pub(super) fn allocated_at_most(&self, len: u64) {
        self.allocated.fetch_min(len, Ordering::AcqRel);
    }

    /// On the persistence thread: allocates up to what the shard asked for, if it asked. Returns
    /// whether it allocated. A refusal only drops the request: the shard allocates itself when it
    /// reaches the limit, and that refusal is the one reported (it fails a batch).
    pub(super) fn extend_ahead(&self) -> io::Result<bool> {
        let wanted = self.wanted.load(Ordering::Acquire);
        let have = self.allocated.load(Ordering::Acquire);
        if wanted <= have {
            return Ok(false);
        }
        match fallocate(&self.file, have, wanted) {
            Ok(()) => {
                self.allocated.fetch_max(wanted, Ordering::AcqRel);
                Ok(true)
            }
            Err(e) => {
                let _ =
                    self.wanted
                        .compare_exchange(wanted, 0, Ordering::AcqRel, Ordering::Relaxed);
                Err(e)
            }
        }
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

    /// Makes `..end` writable: allocates (a segment; just the pages needed when the file system
    /// cannot give a segment) and grows the mapping.
    fn make_room(&mut self, end: u64) -> io::Result<()> {
        self.allocated = self
            .allocated
            .max(self.shared.allocated.load(Ordering::Acquire));
        if end > self.allocated {
            let segment = round_up(end, SEGMENT);
            let target = match self.fallocate(segment) {
                Ok(()) => segment,
                Err(e) if unsupported(&e) => return Err(e),
                Err(_) => {
                    let pages = round_up(end, PAGE);
                    self.fallocate(pages)?;
                    pages
                }
            };
            self.allocated = target;
            self.shared.allocated.fetch_max(target, Ordering::AcqRel);
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
