//! Background compaction: the slow part (replay, write, fsync) on another thread, the commit (a
//! short append and a rename) on the journal's own thread. See the parent module's doc.
//!
//! Invariant: between [`Journal::begin_compaction`] and [`Journal::finish_compaction`] every
//! byte handed to the old file is also kept in `compaction_tail`, so the temporary file plus the
//! tail holds exactly what the old file holds beyond its first `upto` bytes' live set.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

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
    /// True while a background compaction is out.
    pub fn is_compacting(&self) -> bool {
        self.compaction_tail.is_some()
    }

    /// Starts a background compaction: writes out what is buffered, and returns the job to run on
    /// another thread. Until [`Self::finish_compaction`], appends also go to an in-memory tail.
    pub fn begin_compaction(&mut self) -> io::Result<CompactionJob> {
        self.check_not_compacting()?;
        self.write_out()?;
        self.compaction_tail = Some(Vec::new());
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
        self.compaction_tail = Some(Vec::new());
        self.rewriting = true;
        Ok(CompactionJob {
            dir: self.dir.clone(),
            name: self.name.clone(),
            source: Source::Live(live),
        })
    }

    /// Commits a finished job (appends the tail to the temporary file and renames it over the
    /// journal) or, when the job failed, abandons it and keeps the old file. Either way the
    /// journal is usable afterwards; the error says why nothing changed.
    pub fn finish_compaction(&mut self, job: io::Result<Compacted>) -> io::Result<()> {
        if self.compaction_tail.is_none() {
            return Err(io::Error::other("no background compaction is running"));
        }
        let rewriting = std::mem::take(&mut self.rewriting);
        if !rewriting {
            if let Err(e) = self.check_usable() {
                self.compaction_tail = None;
                let _ = fs::remove_file(tmp_path(&self.dir, &self.name));
                return Err(e);
            }
        }
        // Whatever is buffered belongs to the old file first, and thereby to the tail (a rewrite
        // replaces a file that takes nothing more: its caller buffers nothing meanwhile).
        let written = if rewriting {
            self.buf.clear();
            Ok(())
        } else {
            self.write_out()
        };
        let tail = self.compaction_tail.take().unwrap_or_default();
        let tmp = tmp_path(&self.dir, &self.name);
        let committed = written.and(job).and_then(|done| {
            let mut file = OpenOptions::new().read(true).append(true).open(&tmp)?;
            file.write_all(&tail)?;
            fs::rename(&tmp, self.path())?;
            Ok((done, file))
        });
        match committed {
            Ok((done, file)) => {
                let len = done.len + tail.len() as u64;
                // The rename happened: from here on the new file is the journal, and appending
                // to the old, unlinked one would lose records.
                if let Err(e) = self.replace_file(file) {
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
                self.sync.dirty.store(true, Ordering::Release);
                self.sync.dir_dirty.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}
