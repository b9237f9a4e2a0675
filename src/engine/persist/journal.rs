//! Append-only journal of key → value upserts and deletes, one file per shard.
//!
//! # Format (version 1, little-endian)
//! ```text
//! header  : magic "SIPFKJNL" (8) | version u32 | reserved u32 (0)
//! record  : payload_len u32 | crc32 u32 (over payload_len bytes and payload) | payload
//! payload : op u8 (1 = put, 2 = delete) | key_len u16 | key | value (put only; the rest)
//! ```
//! 11 bytes of framing per record. A file may end in zeros: space allocated ahead and not yet
//! written (see "Durability"). A zero length word with nothing but zeros after it is the end of
//! the log, not damage; the file's logical length (the end of its last record, [`Journal::file_len`])
//! is what compaction decisions and `/metrics` use, never its size on disk. Readers that predate
//! this treat such a tail as a torn one and cut it, losing nothing, so the format stays version 1.
//!
//! A record that is short, too long or fails its CRC is damage:
//! when valid records follow it (found by scanning for the next offset where a whole record
//! passes its checks), the damaged bytes are appended to `NAME.journal.corrupt`, reported
//! ([`Journal::corrupt_on_open`]), and [`Journal::open`] recovers the records after them and
//! rewrites the journal without the damage. When nothing valid follows, it is a torn tail after
//! `kill -9` or power loss and is cut off: that costs at most the records of the last unsynced
//! writes, never an earlier record.
//!
//! # Durability (DECISIONS.md "Registrar and persistence")
//! [`Journal::put`] and [`Journal::delete`] only encode into a userspace buffer.
//! [`Journal::write_out`] hands the whole buffer to the kernel; the shard calls it once per loop
//! turn *before* submitting that turn's sends, so a binding whose 200 OK left the box is in the
//! page cache and survives `kill -9` of the process.
//!
//! The file is mapped shared (`mapped.rs`), and `write_out` is a copy into the mapping at the
//! logical end: the mapping *is* the page cache, so no syscall is needed for `kill -9` safety.
//! Stores into the mapping never go past what `fallocate` has allocated (a store past the end of
//! the file, or into a hole the file system cannot fill, would be a SIGBUS): the persistence
//! thread allocates [`SEGMENT`]s ahead of the shard (and writes zeros over them before the shard
//! may store there, so that the group commits have no unwritten extents to convert), and a batch
//! that would cross the allocated limit anyway makes the shard call `fallocate` itself before
//! copying (a [`BRIDGE`]; where the file system cannot give one, just the pages the batch needs). A refused allocation (ENOSPC,
//! EIO) fails `write_out` before any byte of the batch is copied, exactly as a failed `write(2)`
//! did: the caller rolls back and refuses the REGISTERs behind it. Where the file system has no
//! `fallocate` (EOPNOTSUPP) or `mmap` fails, the journal appends with one `pwrite(2)` per turn
//! instead ([`Journal::mapped`] says why).
//!
//! `fdatasync` runs off the hot path: a persistence thread calls [`SyncHandle::sync_if_dirty`]
//! every ~10 ms; it writes back the pages stored through the mapping like written ones (on Linux
//! `fdatasync` and `msync(MS_SYNC)` flush the same page cache). The power-loss window is
//! therefore that interval plus one `fdatasync`: bindings acknowledged within roughly the last
//! 10–20 ms before a power cut may be lost (the phone re-registers). Writeback of mapped pages in
//! an arbitrary order can leave a zeroed page *before* written ones after a power cut: that is
//! damage in the middle, kept aside and recovered around as below.
//!
//! # When the disk fails
//! A failed [`Journal::write_out`] (a refused `fallocate`, or a failed `pwrite`) drops its batch (the caller rolls those changes back and
//! refuses the REGISTERs behind them, so no backlog grows in memory) after cutting any partial
//! write off the file; when even the cut fails the journal is poisoned. A failed `fdatasync` (or
//! directory fsync) is never retried: after an EIO Linux may have dropped the dirty pages, so a
//! second call could succeed over lost data. Both show in [`Journal::problem`], and the only way
//! back is [`Journal::begin_rewrite`]: the caller's live set written and fsynced as a new file on
//! another thread, committed by the rename of [`Journal::finish_compaction`].
//!
//! # Compaction
//! When the file outgrows twice its live data ([`Journal::needs_compaction`]),
//! [`Journal::compact`] writes the caller's live set to `NAME.journal.tmp`, fsyncs it, renames it
//! over `NAME.journal` and fsyncs the directory. A crash at any step leaves either the old or the
//! new complete file under the name; [`Journal::open`] deletes a leftover `.tmp`.
//!
//! A shard must not fsync, so it compacts in the background instead (`background.rs`):
//! [`Journal::begin_compaction`] hands another thread a [`CompactionJob`] that replays the
//! file's first `upto` bytes (everything written so far) and writes and fsyncs their live set as
//! `NAME.journal.tmp`, while the shard keeps appending to the old file and keeps a copy of what it
//! appends since; [`Journal::finish_compaction`], back on the shard, appends that copy to the
//! temporary file, writes every later batch to both files (to the new one with `write(2)`: phase
//! 2 is short and rare), and hands the worker a second job that
//! fsyncs the temporary file; only after that does the shard rename it over the journal (the
//! persistence thread syncs the directory on its next round). So the shard never fsyncs, and the
//! tail is durable before the rename. The old file is complete until the rename, the new one from
//! the rename on. After the rename the shard maps the new file (and allocates for it as it
//! appends).
//!
//! # Changing the shard count
//! [`repartition`] reads every journal in the directory, splits the union by owner, writes the
//! new set atomically file by file, and only then deletes files that are not in the new set.
//! Names must encode the partitioning (e.g. `shard-0-of-4`), so a re-partition never overwrites
//! a file it still has to read; a crash part-way leaves copies of the same data, which the next
//! start merges again.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

mod background;
mod mapped;
pub use background::{Compacted, CompactionJob};
pub use mapped::{Ahead, BRIDGE, SEGMENT};
use mapped::{Mapping, SharedFile};

/// First bytes of every journal file.
pub const MAGIC: [u8; 8] = *b"SIPFKJNL";
/// Format version written and understood.
pub const VERSION: u32 = 1;
/// Longest key.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;
/// Longest payload (op, key length, key and value).
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;
/// Framing bytes per record (length, CRC, op, key length).
pub const RECORD_OVERHEAD: usize = FRAME_LEN + PAYLOAD_HEAD_LEN;
/// Below this size a journal is never compacted.
pub const DEFAULT_COMPACTION_MIN_BYTES: u64 = 4 << 20;

const HEADER_LEN: usize = 16;
const FRAME_LEN: usize = 8;
const PAYLOAD_HEAD_LEN: usize = 3;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const EXTENSION: &str = "journal";
const TMP_EXTENSION: &str = "journal.tmp";
const CORRUPT_EXTENSION: &str = "journal.corrupt";

/// A live set as replay returns it.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// One shard's journal, open for appending.
pub struct Journal {
    dir: PathBuf,
    name: String,
    file: File,
    /// The file mapped for appending (`None`: appends use `pwrite(2)`).
    map: Option<Mapping>,
    /// Why appends use `pwrite(2)` rather than the mapping, when they do.
    unmapped: Option<String>,
    /// Encoded records not yet handed to the kernel.
    buf: Vec<u8>,
    /// The file's logical length: header and every record written so far (the file may be
    /// longer: its allocated tail is zeros).
    file_len: u64,
    /// File size when it last held only live records (after open or compaction).
    live_len: u64,
    compaction_min: u64,
    /// A failed write could not be rolled back: appending more would hide records behind a
    /// torn one, so every later call fails until the journal is reopened.
    poisoned: bool,
    discarded_on_open: u64,
    /// Damaged stretches in the middle of the file found by [`Self::open`]: (bytes, where they
    /// were kept).
    corrupt_on_open: Option<(u64, PathBuf)>,
    sync: Arc<SyncShared>,
    /// While a background compaction runs: its phase (`background.rs`).
    compaction: Option<background::Phase>,
    /// The running background job rewrites the journal from the caller's live set (recovery
    /// from a failed write or sync) rather than compacting the file.
    rewriting: bool,
}

struct SyncShared {
    /// The file the persistence thread syncs (and allocates ahead). Held only to swap or clone
    /// the `Arc`, never across a sync, so a shard replacing the file never waits behind an
    /// `fdatasync`.
    file: Mutex<Arc<SharedFile>>,
    dirty: AtomicBool,
    /// A rename in the directory is not yet durable.
    dir_dirty: AtomicBool,
    dir: PathBuf,
    /// The last `fdatasync` (of the file or the directory) failed: the kernel may have dropped
    /// the dirty pages, so syncing again could "succeed" over lost data. The shard rewrites the
    /// journal from its live bindings instead; until then the journal is unhealthy.
    sync_failed: Mutex<Option<String>>,
    /// Whether ranges allocated ahead are zeroed before they are published (`mapped.rs`,
    /// "Written zeros"); on unless turned off for a measurement.
    zero_ahead: AtomicBool,
    /// Rung when the journal turns dirty, for a persistence thread that sleeps while every
    /// journal is clean ([`SyncHandle::attach_doorbell`]).
    doorbell: OnceLock<Arc<Doorbell>>,
}

impl SyncShared {
    /// Something was written (and, with `dir`, renamed) that the next group commit must sync;
    /// the first change after a sync wakes a sleeping persistence thread.
    fn mark_dirty(&self, dir: bool) {
        if dir {
            self.dir_dirty.store(true, Ordering::SeqCst);
        }
        // SeqCst with `Doorbell::arm` and `SyncHandle::is_dirty`: either the sleeper sees this
        // store on its last look, or this sees it armed and wakes it.
        let was_dirty = self.dirty.swap(true, Ordering::SeqCst);
        if !was_dirty || dir {
            self.wake_persistence();
        }
    }

    fn wake_persistence(&self) {
        if let Some(bell) = self.doorbell.get() {
            bell.ring();
        }
    }

    /// The journal's current file.
    fn current(&self) -> Arc<SharedFile> {
        Arc::clone(&self.file.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn fail(&self, what: &str, e: &io::Error) {
        *self
            .sync_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(format!("{what} failed: {e}"));
    }
}

/// How a shard wakes a persistence thread that sleeps while every journal is clean: the sleeper
/// arms the bell, takes a last look at every journal ([`SyncHandle::is_dirty`]) and parks; the
/// first write after a sync rings it (a load of one flag per first write, an `unpark` only when
/// it sleeps).
#[derive(Debug)]
pub struct Doorbell {
    armed: AtomicBool,
    sleeper: std::thread::Thread,
}

impl Doorbell {
    /// A bell that wakes `sleeper`.
    pub fn new(sleeper: std::thread::Thread) -> Self {
        Doorbell {
            armed: AtomicBool::new(false),
            sleeper,
        }
    }

    /// Before the sleeper's last look: a ring from now on unparks it.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// After the sleeper woke (or decided not to sleep).
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// Wakes the sleeper if it armed the bell (the `unpark` token also covers a ring that comes
    /// between its last look and its `park`).
    pub fn ring(&self) {
        if self.armed.load(Ordering::SeqCst) && self.armed.swap(false, Ordering::SeqCst) {
            self.sleeper.unpark();
        }
    }
}

/// What a persistence thread holds to `fdatasync` a shard's journal off the shard's hot path.
#[derive(Clone)]
pub struct SyncHandle {
    shared: Arc<SyncShared>,
}

impl SyncHandle {
    /// `fdatasync`s the journal if anything was written since the last sync (and the directory
    /// after a background compaction's rename); returns whether it synced. Writes racing with the
    /// sync set the flag again and are covered by the next call. A failed sync is not retried:
    /// it marks the journal unhealthy ([`Journal::problem`]) until the shard rewrote it.
    pub fn sync_if_dirty(&self) -> io::Result<bool> {
        let dir_dirty = self.shared.dir_dirty.swap(false, Ordering::AcqRel);
        let dirty = self.shared.dirty.swap(false, Ordering::AcqRel);
        if dirty {
            // Pages stored through the shared mapping are the file's page cache: fdatasync
            // writes them back like pages written with write(2).
            if let Err(e) = self.shared.current().file.sync_data() {
                self.shared.fail("journal fdatasync", &e);
                return Err(e);
            }
        }
        // The renamed file's data first, then the directory entry that names it.
        if dir_dirty {
            if let Err(e) = sync_dir(&self.shared.dir) {
                self.shared.fail("journal directory fsync", &e);
                return Err(e);
            }
        }
        Ok(dirty || dir_dirty)
    }

    /// Whether the next [`Self::sync_if_dirty`] has work (the persistence thread's last look
    /// before it sleeps).
    pub fn is_dirty(&self) -> bool {
        self.shared.dirty.load(Ordering::SeqCst) || self.shared.dir_dirty.load(Ordering::SeqCst)
    }

    /// From now on the journal's first change after a sync rings `bell` (once per journal; a
    /// second bell is ignored).
    pub fn attach_doorbell(&self, bell: Arc<Doorbell>) {
        let _ = self.shared.doorbell.set(bell);
    }

    /// Whether the shard asked for space ahead that is not allocated yet (the current file's
    /// `Arc` under its lock, then two atomic loads: the group commit asks every round, and hands
    /// the work to [`Self::allocate_ahead`] elsewhere).
    pub fn wants_space_ahead(&self) -> bool {
        self.shared.current().wants_extension()
    }

    /// Allocates the mapped file ahead of the shard when the shard asked for it, and makes that
    /// range written (zeros and one `fdatasync`, see `mapped.rs`) before the shard may store into
    /// it. Off the group commit's thread: zeroing a segment takes tens of milliseconds, which
    /// would stretch the group commit's 10 ms. A refused allocation is not an error here (the
    /// shard allocates itself when it needs the space, and reports that refusal), nor is a
    /// failed zeroing (the range is allocated: [`Ahead::zero_error`]). A failed `fdatasync` is
    /// the journal's, as in [`Self::sync_if_dirty`] (it may have dropped the shard's dirty pages
    /// too).
    ///
    /// Unless a compaction replaced the file while it was zeroed: the new file holds every
    /// record and the group commit syncs it, so a failed sync of the old, unlinked file's zeros
    /// is only a failed zeroing ([`Ahead::zero_error`]).
    pub fn allocate_ahead(&self) -> io::Result<Ahead> {
        let file = self.shared.current();
        let (mut ahead, synced) = file.extend_ahead(self.shared.zero_ahead.load(Ordering::Relaxed));
        match synced {
            Ok(()) => Ok(ahead),
            Err(e) if !Arc::ptr_eq(&file, &self.shared.current()) => {
                ahead.zero_error = Some(e);
                Ok(ahead)
            }
            Err(e) => {
                self.shared.fail("journal fdatasync", &e);
                Err(e)
            }
        }
    }
}

impl Journal {
    /// Opens (or creates) `dir/NAME.journal`, replays it, truncates a torn or corrupt tail, and
    /// returns the live set. `name` is a file stem of ASCII letters, digits, `-` and `_`.
    pub fn open(dir: &Path, name: &str) -> io::Result<(Journal, Records)> {
        check_name(name)?;
        fs::create_dir_all(dir)?;
        let path = journal_path(dir, name);
        let tmp = tmp_path(dir, name);
        if tmp.exists() {
            // A compaction died before its rename: the journal under `path` is still complete.
            fs::remove_file(&tmp)?;
            sync_dir(dir)?;
        }
        if !path.exists() {
            return Self::create(dir, name, std::iter::empty());
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let actual_len = file.metadata()?.len();
        let replay = replay(&mut BufReader::with_capacity(1 << 20, &file), &path)?;
        let records: Records = replay.live.into_iter().collect();
        if !replay.corrupt.is_empty() {
            // Keep the damaged bytes for a post-mortem, then start from a clean file holding
            // everything that replayed (before and after the damage).
            let corrupt = keep_corrupt(dir, name, &replay.corrupt)?;
            drop(file);
            let (mut journal, _) =
                Self::create(dir, name, records.iter().map(|(k, v)| (&k[..], &v[..])))?;
            journal.discarded_on_open = actual_len - replay.valid_len - replay.zero_tail;
            journal.corrupt_on_open = Some(corrupt);
            return Ok((journal, records));
        }
        // A zero tail (allocated ahead, never written) is the end of the log and stays; any
        // other bytes after the last valid record are a torn write, cut off so that nothing
        // written later sits behind them.
        let discarded = actual_len - replay.valid_len - replay.zero_tail;
        if discarded > 0 {
            file.set_len(replay.valid_len)?;
            file.sync_all()?;
        }
        let mut journal = Self::from_file(dir, name, file, replay.valid_len, live_len(&records))?;
        journal.discarded_on_open = discarded;
        Ok((journal, records))
    }

    /// Atomically replaces (or creates) `dir/NAME.journal` with exactly `records` and opens it.
    pub fn create<'a>(
        dir: &Path,
        name: &str,
        records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> io::Result<(Journal, Records)> {
        check_name(name)?;
        fs::create_dir_all(dir)?;
        let len = write_atomically(dir, name, records)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(journal_path(dir, name))?;
        let journal = Self::from_file(dir, name, file, len, len)?;
        Ok((journal, Vec::new()))
    }

    fn from_file(
        dir: &Path,
        name: &str,
        file: File,
        file_len: u64,
        live_len: u64,
    ) -> io::Result<Journal> {
        let shared = Arc::new(SharedFile::new(file.try_clone()?, file_len));
        let sync = Arc::new(SyncShared {
            file: Mutex::new(Arc::clone(&shared)),
            dirty: AtomicBool::new(false),
            dir_dirty: AtomicBool::new(false),
            dir: dir.to_owned(),
            sync_failed: Mutex::new(None),
            zero_ahead: AtomicBool::new(true),
            doorbell: OnceLock::new(),
        });
        let (map, unmapped) = match Mapping::new(shared, file_len) {
            Ok(map) => (Some(map), None),
            Err(e) => (None, Some(format!("mmap failed: {e}"))),
        };
        Ok(Journal {
            dir: dir.to_owned(),
            name: name.to_owned(),
            file,
            map,
            unmapped,
            buf: Vec::new(),
            file_len,
            live_len,
            compaction_min: DEFAULT_COMPACTION_MIN_BYTES,
            poisoned: false,
            discarded_on_open: 0,
            corrupt_on_open: None,
            sync,
            compaction: None,
            rewriting: false,
        })
    }

    /// Buffers an upsert of `key` (no syscall).
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.check_usable()?;
        encode(&mut self.buf, OP_PUT, key, value)
    }

    /// Buffers a delete of `key` (no syscall).
    pub fn delete(&mut self, key: &[u8]) -> io::Result<()> {
        self.check_usable()?;
        encode(&mut self.buf, OP_DELETE, key, &[])
    }

    /// Hands everything buffered to the kernel: copies it into the mapped file at its logical
    /// end (no syscall, unless the batch crosses the allocated limit: then `fallocate` first), or,
    /// where the file is not mapped, one `pwrite(2)`. Call once per loop turn, before that turn's
    /// sends. On error the batch is dropped (the caller rolls its changes back, so nothing waits
    /// in memory) and nothing of it stays in the file: a refused allocation copies nothing, a
    /// partial write is cut off, and when even that fails the journal is poisoned until rewritten.
    pub fn write_out(&mut self) -> io::Result<()> {
        if let Err(e) = self.check_usable() {
            self.buf.clear();
            return Err(e);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Some(map) = &mut self.map {
            match map.write(self.file_len, &self.buf) {
                Ok(()) => {
                    self.written();
                    return Ok(());
                }
                Err(e) if mapped::unsupported(&e) => {
                    // No fallocate on this file system: nothing was allocated, write instead.
                    self.map = None;
                    self.unmapped = Some(format!("fallocate unsupported: {e}"));
                }
                Err(e) => {
                    self.buf.clear();
                    return Err(e);
                }
            }
        }
        // Zeroing skips what is published (`mapped.rs`): the bytes are claimed before written.
        self.sync
            .current()
            .claim(self.file_len + self.buf.len() as u64);
        if let Err(e) = self.file.write_all_at(&self.buf, self.file_len) {
            self.buf.clear();
            // A partial write would sit between good records and the next batch: cut it off.
            if self.file.set_len(self.file_len).is_err() {
                self.poisoned = true;
            }
            return Err(e);
        }
        self.written();
        Ok(())
    }

    /// The buffered batch is in the file.
    fn written(&mut self) {
        self.file_len += self.buf.len() as u64;
        let batch = std::mem::take(&mut self.buf);
        self.follow_compaction(&batch);
        self.buf = batch;
        self.buf.clear();
        self.sync.mark_dirty(false);
    }

    /// Whether appends go through the shared mapping (else `pwrite(2)`), and why not.
    pub fn mapped(&self) -> Result<(), &str> {
        match &self.unmapped {
            None => Ok(()),
            Some(why) => Err(why),
        }
    }

    /// Appends with `pwrite(2)` (`false`) or through the mapping (`true`) from now on; for
    /// measurements and tests (the journal maps its file when it can).
    pub fn set_mapped(&mut self, mapped: bool) -> io::Result<()> {
        if !mapped {
            self.map = None;
            self.unmapped = Some("mapping turned off".into());
        } else if self.map.is_none() {
            let shared = self.sync.current();
            // Unmapped, the file may have been cut back below what was once allocated (a failed
            // write's truncation): a store past its end would fault, so trust only its size now.
            shared.allocated_at_most(shared.file.metadata()?.len());
            self.map = Some(Mapping::new(shared, self.file_len)?);
            self.unmapped = None;
        }
        Ok(())
    }

    /// Whether the persistence thread zeroes the ranges it allocates ahead before the shard may
    /// store into them (on by default; off leaves them unwritten extents, as `fallocate` made
    /// them: for measurements).
    pub fn set_zero_ahead(&mut self, on: bool) {
        self.sync.zero_ahead.store(on, Ordering::Relaxed);
    }

    /// Wakes the persistence thread if it sleeps (after handing it work other than records,
    /// such as a compaction job).
    pub fn wake_persistence(&self) {
        self.sync.wake_persistence();
    }

    /// `fdatasync` on the caller's thread (shutdown, tests); the hot path uses [`SyncHandle`].
    pub fn sync(&self) -> io::Result<()> {
        self.sync.dirty.store(true, Ordering::Release);
        SyncHandle {
            shared: Arc::clone(&self.sync),
        }
        .sync_if_dirty()
        .map(drop)
    }

    /// A handle for the persistence thread; it follows the journal across compactions.
    pub fn sync_handle(&self) -> SyncHandle {
        SyncHandle {
            shared: Arc::clone(&self.sync),
        }
    }

    /// Why the journal cannot take records now, if it cannot: a write it could not roll back
    /// (poisoned) or a failed `fdatasync`. Either way only [`Self::begin_rewrite`] (the live set,
    /// written afresh) makes it usable again.
    pub fn problem(&self) -> Option<String> {
        if self.poisoned {
            return Some(format!(
                "journal {}: a failed write could not be cut off",
                self.path().display()
            ));
        }
        self.sync
            .sync_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Bytes buffered and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes in the file (header and written records).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Bytes of torn or corrupt tail [`Self::open`] cut off (0 after a clean shutdown).
    pub fn discarded_on_open(&self) -> u64 {
        self.discarded_on_open
    }

    /// Damaged bytes [`Self::open`] found *between* valid records, and the `NAME.journal.corrupt`
    /// file they were appended to; the records after them were recovered and the journal
    /// rewritten without the damage.
    pub fn corrupt_on_open(&self) -> Option<&(u64, PathBuf)> {
        self.corrupt_on_open.as_ref()
    }

    /// The journal's file.
    pub fn path(&self) -> PathBuf {
        journal_path(&self.dir, &self.name)
    }

    /// Sets the size below which [`Self::needs_compaction`] stays false.
    pub fn set_compaction_min_bytes(&mut self, bytes: u64) {
        self.compaction_min = bytes;
    }

    /// True when the file has grown past twice its live size at the last open or compaction
    /// (and past the minimum), and no background compaction is running: then compaction costs
    /// O(1) amortized per record written.
    pub fn needs_compaction(&self) -> bool {
        let len = self.file_len + self.buf.len() as u64;
        self.compaction.is_none() && len > self.compaction_min && len > 2 * self.live_len
    }

    /// Rewrites the journal as exactly `live` (the caller's current live set, which must include
    /// every put and delete made so far), crash-safely; see the module doc. Cost is one write of
    /// the live set plus two fsyncs, on the caller's thread. Fails while a background compaction
    /// runs (both use the same temporary file).
    pub fn compact<'a>(
        &mut self,
        live: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> io::Result<()> {
        self.check_not_compacting()?;
        // The old file stays the complete truth until the rename.
        self.write_out()?;
        let len = write_atomically(&self.dir, &self.name, live)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path())?;
        self.replace_file(file, len)?;
        self.file_len = len;
        self.live_len = len;
        Ok(())
    }

    /// Appends from now on to `file` of `len` bytes (now under the journal's name), mapped when
    /// the old file was, and syncs that one.
    fn replace_file(&mut self, file: File, len: u64) -> io::Result<()> {
        let shared = Arc::new(SharedFile::new(file.try_clone()?, len));
        *self
            .sync
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::clone(&shared);
        self.file = file;
        if self.map.take().is_some() {
            match Mapping::new(shared, len) {
                Ok(map) => self.map = Some(map),
                Err(e) => self.unmapped = Some(format!("mmap failed: {e}")),
            }
        }
        Ok(())
    }

    fn check_not_compacting(&self) -> io::Result<()> {
        if self.compaction.is_some() {
            return Err(io::Error::other(format!(
                "journal {}: a background compaction is running",
                self.path().display()
            )));
        }
        Ok(())
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other(format!(
                "journal {} could not roll back a failed write; reopen it",
                self.path().display()
            )));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path())
            .field("file_len", &self.file_len)
            .field("pending", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// Names of the journals in `dir` (file stems of `*.journal`), sorted.
pub fn journal_names(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let file_name = entry?.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if let Some(stem) = file_name.strip_suffix(".journal") {
            if check_name(stem).is_ok() {
                names.push(stem.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// The union of every journal's live set in `dir`, read-only (torn tails are skipped, not cut).
/// When two journals hold the same key (copies left by an interrupted re-partition), the one
/// whose name sorts last wins.
pub fn read_all(dir: &Path) -> io::Result<Records> {
    read_union(dir, false)
}

/// [`read_all`], optionally appending damaged stretches to each journal's `.corrupt` file (a
/// re-partition, which deletes the old journals afterwards).
fn read_union(dir: &Path, keep_damage: bool) -> io::Result<Records> {
    let mut union: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for name in journal_names(dir)? {
        let path = journal_path(dir, &name);
        let file = File::open(&path)?;
        let replayed = replay(&mut BufReader::with_capacity(1 << 20, file), &path)?;
        if keep_damage && !replayed.corrupt.is_empty() {
            keep_corrupt(dir, &name, &replayed.corrupt)?;
        }
        union.extend(replayed.live);
    }
    Ok(union.into_iter().collect())
}

/// Opens the journals `names` in `dir`, re-partitioning first when the directory holds any
/// other set (the shard count changed, or an earlier re-partition was interrupted): every record
/// goes to journal `owner(key)` (an index into `names`). Returns the journals with their live
/// sets, in `names` order.
pub fn repartition(
    dir: &Path,
    names: &[String],
    owner: impl Fn(&[u8]) -> usize,
) -> io::Result<Vec<(Journal, Records)>> {
    for name in names {
        check_name(name)?;
    }
    let mut wanted = names.to_vec();
    wanted.sort();
    wanted.dedup();
    if wanted.len() != names.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "journal names repeat",
        ));
    }
    let existing = journal_names(dir)?;
    if existing.is_empty() || existing == wanted {
        return names.iter().map(|name| Journal::open(dir, name)).collect();
    }
    let mut parts: Vec<Records> = vec![Vec::new(); names.len()];
    for (key, value) in read_union(dir, true)? {
        let shard = owner(&key);
        let part = parts.get_mut(shard).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("owner {shard} out of range"),
            )
        })?;
        part.push((key, value));
    }
    let mut opened = Vec::with_capacity(names.len());
    for (name, part) in names.iter().zip(parts) {
        let (journal, _) = Journal::create(dir, name, part.iter().map(|(k, v)| (&k[..], &v[..])))?;
        opened.push((journal, part));
    }
    // Every new file is durable (create fsyncs file and directory): only now drop the old ones.
    for old in existing.iter().filter(|old| !wanted.contains(old)) {
        fs::remove_file(journal_path(dir, old))?;
    }
    sync_dir(dir)?;
    Ok(opened)
}

fn journal_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.{EXTENSION}"))
}

/// Appends each damaged stretch to `NAME.journal.corrupt` (a text line naming the offset and
/// length, then the raw bytes), fsynced. Returns the bytes kept and the file.
fn keep_corrupt(dir: &Path, name: &str, corrupt: &[(u64, Vec<u8>)]) -> io::Result<(u64, PathBuf)> {
    let path = dir.join(format!("{name}.{CORRUPT_EXTENSION}"));
    let mut out = OpenOptions::new().create(true).append(true).open(&path)?;
    let mut total = 0;
    for (offset, bytes) in corrupt {
        writeln!(
            out,
            "-- damaged journal bytes at offset {offset}, {} bytes:",
            bytes.len()
        )?;
        out.write_all(bytes)?;
        out.write_all(b"\n")?;
        total += bytes.len() as u64;
    }
    out.sync_all()?;
    Ok((total, path))
}

fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.{TMP_EXTENSION}"))
}

fn check_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("journal name {name:?}: use ASCII letters, digits, '-' and '_'"),
        ))
    }
}

/// Makes a rename or unlink in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Appends one framed record to `buf`.
fn encode(buf: &mut Vec<u8>, op: u8, key: &[u8], value: &[u8]) -> io::Result<()> {
    let payload_len = PAYLOAD_HEAD_LEN + key.len() + value.len();
    if key.len() > MAX_KEY_LEN || payload_len > MAX_PAYLOAD_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "journal record too large: key {} bytes (max {MAX_KEY_LEN}), payload {payload_len} bytes (max {MAX_PAYLOAD_LEN})",
                key.len()
            ),
        ));
    }
    let len_bytes = (payload_len as u32).to_le_bytes();
    let start = buf.len();
    buf.reserve(FRAME_LEN + payload_len);
    buf.extend_from_slice(&len_bytes);
    buf.extend_from_slice(&[0; 4]);
    buf.push(op);
    buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len_bytes);
    crc.update(&buf[start + FRAME_LEN..]);
    buf[start + 4..start + FRAME_LEN].copy_from_slice(&crc.finalize().to_le_bytes());
    Ok(())
}

/// Bytes a file holding exactly `records` takes.
fn live_len(records: &Records) -> u64 {
    let body: usize = records
        .iter()
        .map(|(k, v)| RECORD_OVERHEAD + k.len() + v.len())
        .sum();
    (HEADER_LEN + body) as u64
}

/// Writes `records` to `NAME.journal.tmp`, fsyncs it, renames it to `NAME.journal` and fsyncs
/// the directory. Returns the file's length.
fn write_atomically<'a>(
    dir: &Path,
    name: &str,
    records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> io::Result<u64> {
    let len = write_tmp(dir, name, records)?;
    fs::rename(tmp_path(dir, name), journal_path(dir, name))?;
    sync_dir(dir)?;
    Ok(len)
}

/// Writes `records` to `NAME.journal.tmp` and fsyncs it. Returns the file's length.
fn write_tmp<'a>(
    dir: &Path,
    name: &str,
    records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> io::Result<u64> {
    let tmp = tmp_path(dir, name);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    out.write_all(&header())?;
    let mut len = HEADER_LEN as u64;
    let mut record = Vec::new();
    for (key, value) in records {
        record.clear();
        encode(&mut record, OP_PUT, key, value)?;
        out.write_all(&record)?;
        len += record.len() as u64;
    }
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    Ok(len)
}

struct Replay {
    live: HashMap<Vec<u8>, Vec<u8>>,
    /// End of the last whole, valid record (the header's end when there is none).
    valid_len: u64,
    /// Zero bytes after it to the end of the file: space allocated ahead and never written (the
    /// end of the log, not damage).
    zero_tail: u64,
    /// Damaged stretches between valid records: (file offset, bytes). Replay went on after each
    /// at the next offset where a whole record passes its checks.
    corrupt: Vec<(u64, Vec<u8>)>,
}

impl Replay {
    fn apply(&mut self, op: u8, key: &[u8], value: &[u8]) {
        match op {
            OP_PUT => {
                self.live.insert(key.to_vec(), value.to_vec());
            }
            _ => {
                self.live.remove(key);
            }
        }
    }
}

/// One whole record at the start of `bytes`, if it passes every check: (its length, op, key,
/// value).
fn parse_record(bytes: &[u8]) -> Option<(usize, u8, &[u8], &[u8])> {
    let frame = bytes.get(..FRAME_LEN)?;
    let len_bytes = [frame[0], frame[1], frame[2], frame[3]];
    let payload_len = u32::from_le_bytes(len_bytes) as usize;
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    if !(PAYLOAD_HEAD_LEN..=MAX_PAYLOAD_LEN).contains(&payload_len) {
        return None;
    }
    let payload = bytes.get(FRAME_LEN..FRAME_LEN + payload_len)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len_bytes);
    hasher.update(payload);
    if hasher.finalize() != crc {
        return None;
    }
    let key_len = usize::from(u16::from_le_bytes([payload[1], payload[2]]));
    let key = payload.get(PAYLOAD_HEAD_LEN..PAYLOAD_HEAD_LEN + key_len)?;
    let value = &payload[PAYLOAD_HEAD_LEN + key_len..];
    match payload[0] {
        OP_PUT => {}
        OP_DELETE if value.is_empty() => {}
        _ => return None,
    }
    Some((FRAME_LEN + payload_len, payload[0], key, value))
}

/// Replays a journal. Records stream through until one fails its checks; from there the rest
/// of the file is read into memory (damage is rare, and an allocated tail at most two
/// [`SEGMENT`]s). When it is all zeros it is the unwritten tail of a preallocated file: the end
/// of the log. Otherwise it is scanned for the next offset where a whole
/// record passes them. A damaged stretch followed by valid records is reported in
/// [`Replay::corrupt`] and replay goes on after it; damage with no valid record after it is a
/// torn tail, left beyond [`Replay::valid_len`].
fn replay(reader: &mut impl Read, path: &Path) -> io::Result<Replay> {
    let invalid = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    let mut head = [0u8; HEADER_LEN];
    if read_full(reader, &mut head)? < HEADER_LEN || head[..8] != MAGIC {
        return Err(invalid(
            "not a sipfork journal (bad or missing header)".into(),
        ));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != VERSION {
        return Err(invalid(format!(
            "journal format version {version}; this build reads {VERSION}"
        )));
    }
    let mut r = Replay {
        live: HashMap::new(),
        valid_len: HEADER_LEN as u64,
        zero_tail: 0,
        corrupt: Vec::new(),
    };
    // The bytes of the record being read.
    let mut record = Vec::new();
    loop {
        record.resize(FRAME_LEN, 0);
        let got = read_full(reader, &mut record)?;
        if got < FRAME_LEN {
            record.truncate(got);
            break;
        }
        let payload_len = u32::from_le_bytes([record[0], record[1], record[2], record[3]]) as usize;
        if (PAYLOAD_HEAD_LEN..=MAX_PAYLOAD_LEN).contains(&payload_len) {
            record.resize(FRAME_LEN + payload_len, 0);
            let got = read_full(reader, &mut record[FRAME_LEN..])?;
            record.truncate(FRAME_LEN + got);
        }
        match parse_record(&record) {
            Some((len, op, key, value)) if len == record.len() => {
                r.apply(op, key, value);
                r.valid_len += len as u64;
            }
            _ => break,
        }
    }
    if record.is_empty() {
        return Ok(r);
    }
    // Damage (or a torn tail) at `valid_len`: scan what is left in memory.
    reader.read_to_end(&mut record)?;
    if record.iter().all(|&b| b == 0) {
        // A zero length word and nothing but zeros after it: the allocated, unwritten tail.
        r.zero_tail = record.len() as u64;
        return Ok(r);
    }
    let rest = record;
    let base = r.valid_len;
    let mut at = 0;
    let mut damaged_from: Option<usize> = None;
    while at < rest.len() {
        match parse_record(&rest[at..]) {
            Some((len, op, key, value)) => {
                if let Some(from) = damaged_from.take() {
                    r.corrupt
                        .push((base + from as u64, rest[from..at].to_vec()));
                }
                r.apply(op, key, value);
                at += len;
                r.valid_len = base + at as u64;
            }
            None => {
                damaged_from.get_or_insert(at);
                at += 1;
            }
        }
    }
    // Zeros from the last valid record to the end are the allocated tail, also after damage.
    let after = &rest[(r.valid_len - base) as usize..];
    if after.iter().all(|&b| b == 0) {
        r.zero_tail = after.len() as u64;
    }
    Ok(r)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests;
