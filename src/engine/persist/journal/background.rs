//! Background compaction: the slow parts (replay, write, every fsync) on another thread, the
//! commit (appends and a rename, never an fsync) on the journal's own thread. See the parent
//! module's doc.
//!
//! Two phases, each a job for the worker and a [`Journal::finish_compaction`] on the shard:
//! 1. **Writing**: the worker writes and fsyncs the live set as `NAME.journal.tmp`; every byte
//!    the shard hands the old file meanwhile is also kept in memory (the tail).
//! 2. **Syncing**: the shard appends the tail to the temporary file and from then on writes
//!    every batch to both files; the worker fsyncs the temporary file. Back on the shard, the
//!    rename makes it the journal. So the tail is durable before the rename, and what was
//!    written after the worker's fsync is exactly as durable as in the old file (the next group
//!    commit syncs it). An empty tail skips phase 2.
//!
//! Invariant: during phase 1, the temporary file plus the tail holds exactly the live set of what
//! the old file holds; during phase 2 the temporary file alone does.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::{journal_path, replay, tmp_path, write_tmp, Journal, Records};

/// The part of a compaction that runs away from the journal's thread.
#[derive(Debug)]
pub struct CompactionJob {
    dir: PathBuf,
    name: String,
    source: Source,
}

/// What the new file holds.
#[derive(Debug)]
enum Source {
    /// The live set of the file's first `upto` bytes (header and whole records written before
    /// the compaction began).
    Replay { upto: u64 },
    /// The caller's live set (a rewrite after a failed write or sync: the file itself is not
    /// to be trusted).
    Live(Records),
    /// Phase 2: fsync the temporary file (its tail appended) before the shard renames it; the
    /// live records phase 1 wrote, for the report.
    Sync(File, usize),
}

/// Where a background compaction stands (the journal's side).
#[derive(Debug)]
pub(super) enum Phase {
    /// The worker writes the temporary file; `tail` is every byte written since it began.
    Writing { tail: Vec<u8> },
    /// The worker fsyncs `tmp`, which the shard keeps appending to (`len` bytes so far).
    /// `broken`: an append to it failed, so it will not be committed.
    Syncing {
        tmp: File,
        len: u64,
        broken: Option<io::Error>,
    },
}

/// A written and fsynced `NAME.journal.tmp`, ready to be committed.
#[derive(Debug)]
pub struct Compacted {
    len: u64,
    records: usize,
}

impl Compacted {
    /// Live records the compacted file holds (before the tail is appended).
    pub fn records(&self) -> usize {
        self.records
    }
}

impl CompactionJob {
    /// Replays the journal's first `upto` bytes and writes their live set to the temporary file,
    /// fsynced. Reads only bytes the journal's thread no longer changes (it only appends).
    pub fn run(self) -> io::Result<Compacted> {
        let upto = match self.source {
            Source::Replay { upto } => upto,
            Source::Sync(tmp, records) => {
                tmp.sync_data()?;
                return Ok(Compacted { len: 0, records });
            }
            Source::Live(live) => {
                let len = write_tmp(
                    &self.dir,
                    &self.name,
                    live.iter().map(|(k, v)| (&k[..], &v[..])),
                )?;
                return Ok(Compacted {
                    len,
                    records: live.len(),
                });
            }
        };
        let path = journal_path(&self.dir, &self.name);
        let file = File::open(&path)?;
        let replayed = replay(
            &mut BufReader::with_capacity(1 << 20, file.take(upto)),
            &path,
        )?;
        if replayed.valid_len != upto || !replayed.corrupt.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: only {} of {} written bytes replay; not compacting",
                    path.display(),
                    replayed.valid_len,
                    upto
                ),
            ));
        }
        let records = replayed.live.len();
        let len = write_tmp(
            &self.dir,
            &self.name,
            replayed.live.iter().map(|(k, v)| (&k[..], &v[..])),
        )?;
        Ok(Compacted { len, records })
    }
}

impl Journal {
    /// True while a background compaction (or rewrite) is out.
    pub fn is_compacting(&self) -> bool {
        self.compaction.is_some()
    }

    /// Starts a background compaction: writes out what is buffered, and returns the job to run on
    /// another thread. Until [`Self::finish_compaction`], appends also go to an in-memory tail.
    pub fn begin_compaction(&mut self) -> io::Result<CompactionJob> {
        self.check_not_compacting()?;
        self.write_out()?;
        self.compaction = Some(Phase::Writing { tail: Vec::new() });
        Ok(CompactionJob {
            dir: self.dir.clone(),
            name: self.name.clone(),
            source: Source::Replay {
                upto: self.file_len,
            },
        })
    }

    /// Starts rewriting the journal as exactly `live` (the caller's live set) on another thread:
    /// the way back from a failed write or `fdatasync` ([`Self::problem`]). Nothing buffered is
    /// written (the caller rolled it back); appends until [`Self::finish_compaction`] go to the
    /// tail as with a compaction. On success the journal is healthy again.
    pub fn begin_rewrite(&mut self, live: Records) -> io::Result<CompactionJob> {
        self.check_not_compacting()?;
        self.buf.clear();
        self.compaction = Some(Phase::Writing { tail: Vec::new() });
        self.rewriting = true;
        Ok(CompactionJob {
            dir: self.dir.clone(),
            name: self.name.clone(),
            source: Source::Live(live),
        })
    }

    /// Takes a finished job's result. After phase 1 it appends the tail to the temporary file
    /// and returns the phase-2 job (fsync it) for the worker, or commits at once when the tail
    /// is empty; after phase 2 it commits (renames the temporary file over the journal):
    /// `Ok(None)`. A failed job is abandoned: the old file stays the journal. Either way the
    /// journal is usable afterwards; the error says why nothing changed.
    pub fn finish_compaction(
        &mut self,
        job: io::Result<Compacted>,
    ) -> io::Result<Option<CompactionJob>> {
        let Some(phase) = self.compaction.take() else {
            return Err(io::Error::other("no background compaction is running"));
        };
        let next = self.advance(phase, job);
        if next.is_err() {
            self.compaction = None;
            self.rewriting = false;
            let _ = fs::remove_file(tmp_path(&self.dir, &self.name));
        }
        next
    }

    fn advance(
        &mut self,
        phase: Phase,
        job: io::Result<Compacted>,
    ) -> io::Result<Option<CompactionJob>> {
        let done = job?;
        if !self.rewriting {
            self.check_usable()?;
        }
        match phase {
            Phase::Syncing {
                broken: Some(e), ..
            } => Err(e),
            Phase::Syncing { tmp, len, .. } => self.commit(tmp, len).map(|()| None),
            Phase::Writing { tail } => {
                let (tmp, len, tail_len) = self.append_tail(tail, done.len)?;
                if tail_len == 0 {
                    return self.commit(tmp, len).map(|()| None);
                }
                let sync = tmp.try_clone()?;
                self.compaction = Some(Phase::Syncing {
                    tmp,
                    len,
                    broken: None,
                });
                Ok(Some(CompactionJob {
                    dir: self.dir.clone(),
                    name: self.name.clone(),
                    source: Source::Sync(sync, done.records),
                }))
            }
        }
    }

    /// Phase 1 done: appends the tail (with whatever is buffered, which belongs to the old file
    /// first) to the fsynced temporary file of `len` bytes. Returns the file, its new length and
    /// the tail's length.
    fn append_tail(&mut self, tail: Vec<u8>, len: u64) -> io::Result<(File, u64, usize)> {
        let tail = if self.rewriting {
            // A rewrite replaces a file that takes nothing more: its caller buffers nothing.
            self.buf.clear();
            tail
        } else {
            self.compaction = Some(Phase::Writing { tail });
            let written = self.write_out();
            let tail = match self.compaction.take() {
                Some(Phase::Writing { tail }) => tail,
                _ => Vec::new(),
            };
            written?;
            tail
        };
        let mut tmp = OpenOptions::new()
            .read(true)
            .write(true)
            .open(tmp_path(&self.dir, &self.name))?;
        // Not O_APPEND: once renamed, the journal writes at its logical end (`pwrite`), which
        // O_APPEND would ignore.
        tmp.seek(SeekFrom::Start(len))?;
        tmp.write_all(&tail)?;
        Ok((tmp, len + tail.len() as u64, tail.len()))
    }

    /// Renames the complete, fsynced temporary file `tmp` of `len` bytes over the journal and
    /// appends to it from now on (no fsync here: the persistence thread syncs the directory).
    fn commit(&mut self, tmp: File, len: u64) -> io::Result<()> {
        self.compaction = None;
        let rewriting = std::mem::take(&mut self.rewriting);
        fs::rename(tmp_path(&self.dir, &self.name), self.path())?;
        // The rename happened: from here on the new file is the journal, and appending to the
        // old, unlinked one would lose records.
        if let Err(e) = self.replace_file(tmp, len) {
            self.poisoned = true;
            return Err(e);
        }
        self.file_len = len;
        self.live_len = len;
        if rewriting {
            self.poisoned = false;
            *self
                .sync
                .sync_failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        self.sync.mark_dirty(true);
        Ok(())
    }

    /// Called by `write_out` after `bytes` reached the old file: keeps them for the compaction
    /// under way (phase 1: the tail; phase 2: appended to the temporary file too).
    pub(super) fn follow_compaction(&mut self, bytes: &[u8]) {
        match &mut self.compaction {
            None => {}
            Some(Phase::Writing { tail }) => tail.extend_from_slice(bytes),
            Some(Phase::Syncing {
                tmp,
                len,
                broken: broken @ None,
            }) => match tmp.write_all(bytes) {
                Ok(()) => *len += bytes.len() as u64,
                Err(e) => *broken = Some(e),
            },
            Some(Phase::Syncing { .. }) => {}
        }
    }
}
