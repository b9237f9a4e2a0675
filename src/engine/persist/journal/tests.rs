//! Round trips, torn tails at every byte offset, corruption, crash points of compaction and
//! re-partitioning, and a model check against a `HashMap`.

use super::*;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU32;

/// A scratch directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "sipfork-journal-{}-{n}-{label}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn sorted(records: Records) -> BTreeMap<Vec<u8>, Vec<u8>> {
    records.into_iter().collect()
}

fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
    (k.as_bytes().to_vec(), v.as_bytes().to_vec())
}

#[test]
fn round_trip_puts_overwrites_and_deletes() {
    let dir = TempDir::new("round-trip");
    let (mut j, live) = Journal::open(&dir.0, "shard-0").unwrap();
    assert!(live.is_empty());
    j.put(b"1001", b"contact-a").unwrap();
    j.put(b"1002", b"contact-b").unwrap();
    assert_eq!(j.file_len(), HEADER_LEN as u64, "put only buffers");
    j.write_out().unwrap();
    j.put(b"1001", b"contact-a2").unwrap();
    j.delete(b"1002").unwrap();
    j.put(b"", b"empty key").unwrap();
    j.put(b"1003", b"").unwrap();
    j.write_out().unwrap();
    // No sync, no clean shutdown: what a `kill -9` leaves (the page cache survives).
    drop(j);
    let (j, live) = Journal::open(&dir.0, "shard-0").unwrap();
    assert_eq!(j.discarded_on_open(), 0);
    assert_eq!(
        sorted(live),
        BTreeMap::from([
            kv("1001", "contact-a2"),
            kv("", "empty key"),
            kv("1003", "")
        ])
    );
}

#[test]
fn unwritten_records_are_not_on_disk() {
    let dir = TempDir::new("unwritten");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.put(b"a", b"1").unwrap();
    j.write_out().unwrap();
    j.put(b"b", b"2").unwrap();
    assert_eq!(j.pending_bytes(), RECORD_OVERHEAD + 2);
    drop(j); // the shard died before this turn's write_out: its 200 OK was not sent either
    let (_, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(sorted(live), BTreeMap::from([kv("a", "1")]));
}

#[test]
fn record_overhead_is_eleven_bytes() {
    let dir = TempDir::new("overhead");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.put(b"1001", &[7; 200]).unwrap();
    j.write_out().unwrap();
    assert_eq!(
        j.file_len(),
        (HEADER_LEN + RECORD_OVERHEAD + 4 + 200) as u64
    );
    // The file itself is one bridge long (what the shard allocates itself; the persistence
    // thread, not running here, allocates the segments after it), its tail zeros.
    assert_eq!(j.mapped(), Ok(()));
    assert_eq!(fs::metadata(j.path()).unwrap().len(), BRIDGE);
    assert_eq!(RECORD_OVERHEAD, 11);
}

#[test]
fn torn_tail_at_every_offset_keeps_every_earlier_record() {
    let dir = TempDir::new("torn");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    for i in 0..5 {
        j.put(
            format!("key-{i}").as_bytes(),
            format!("value-{i}").as_bytes(),
        )
        .unwrap();
    }
    j.delete(b"key-0").unwrap();
    j.write_out().unwrap();
    let last_start = j.file_len();
    j.put(
        b"key-last",
        b"a value long enough to be torn in many places",
    )
    .unwrap();
    j.write_out().unwrap();
    // The records, without the zero tail allocated ahead.
    let mut full = fs::read(j.path()).unwrap();
    full.truncate(j.file_len() as usize);
    drop(j);
    let expected: BTreeMap<_, _> = (1..5)
        .map(|i| kv(&format!("key-{i}"), &format!("value-{i}")))
        .collect();
    for cut in last_start as usize..full.len() {
        let case = TempDir::new("torn-case");
        fs::write(case.0.join("s.journal"), &full[..cut]).unwrap();
        let (mut j, live) = Journal::open(&case.0, "s").unwrap();
        assert_eq!(sorted(live), expected, "cut at {cut}");
        assert_eq!(
            j.discarded_on_open(),
            cut as u64 - last_start,
            "cut at {cut}"
        );
        assert_eq!(
            fs::metadata(j.path()).unwrap().len(),
            last_start,
            "truncated at cut {cut}"
        );
        // Appending after recovery works and is not hidden behind the torn record.
        j.put(b"after", b"crash").unwrap();
        j.write_out().unwrap();
        drop(j);
        let (_, live) = Journal::open(&case.0, "s").unwrap();
        let mut with_after = expected.clone();
        with_after.insert(b"after".to_vec(), b"crash".to_vec());
        assert_eq!(sorted(live), with_after, "reopen after cut {cut}");
    }
}

/// Buffers puts of `k0`..`k{n-1}` (value "some value"); returns each record's file offset.
fn put_numbered(j: &mut Journal, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            let at = j.file_len() + j.pending_bytes() as u64;
            j.put(format!("k{i}").as_bytes(), b"some value").unwrap();
            at
        })
        .collect()
}

#[test]
fn a_corrupt_record_in_the_middle_is_kept_aside_and_later_records_recovered() {
    let dir = TempDir::new("crc");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    let offsets = put_numbered(&mut j, 6);
    j.delete(b"k0").unwrap();
    j.write_out().unwrap();
    let path = j.path();
    drop(j);
    let mut bytes = fs::read(&path).unwrap();
    bytes[offsets[2] as usize + FRAME_LEN + 5] ^= 0x40; // a value byte of record 2
    bytes[offsets[4] as usize + 1] ^= 0x10; // the length of record 4
    fs::write(&path, &bytes).unwrap();
    let (j, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(
        sorted(live),
        BTreeMap::from([
            kv("k1", "some value"),
            kv("k3", "some value"),
            kv("k5", "some value")
        ]),
        "records after the damage are recovered, the delete after it too"
    );
    let record = offsets[1] - offsets[0];
    let (kept, corrupt) = j.corrupt_on_open().unwrap().clone();
    assert_eq!(kept, 2 * record);
    let aside = fs::read(&corrupt).unwrap();
    assert!(
        aside.starts_with(format!("-- damaged journal bytes at offset {}", offsets[2]).as_bytes())
    );
    assert!(aside
        .windows(record as usize)
        .any(|w| w == &bytes[offsets[2] as usize..offsets[3] as usize]));
    // The journal was rewritten without the damage: it opens clean, and keeps working.
    drop(j);
    let (mut j, live) = Journal::open(&dir.0, "s").unwrap();
    assert!(j.corrupt_on_open().is_none());
    assert_eq!(j.discarded_on_open(), 0);
    assert_eq!(live.len(), 3);
    j.put(b"k6", b"v").unwrap();
    j.write_out().unwrap();
    drop(j);
    assert_eq!(Journal::open(&dir.0, "s").unwrap().1.len(), 4);
}

/// Damage with nothing valid after it is a torn tail: cut, not kept aside.
#[test]
fn a_corrupt_last_record_is_a_torn_tail() {
    let dir = TempDir::new("crc-tail");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    let offsets = put_numbered(&mut j, 4);
    j.write_out().unwrap();
    let path = j.path();
    drop(j);
    let mut bytes = fs::read(&path).unwrap();
    let total = bytes.len() as u64;
    bytes[offsets[3] as usize + FRAME_LEN + 5] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let (j, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(live.len(), 3);
    assert!(j.corrupt_on_open().is_none());
    assert_eq!(j.discarded_on_open(), total - offsets[3]);
}

#[test]
fn zeroed_or_garbage_tails_are_cut() {
    // Power loss can leave a zero-filled block, or a length that points past the end. Zeros
    // to the end of the file are also what allocating ahead leaves: the end of the log, kept
    // and not counted as discarded.
    for tail in [vec![0u8; 4096], vec![0xff; 8], 5u32.to_le_bytes().to_vec()] {
        let dir = TempDir::new("tail");
        let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
        j.put(b"k", b"v").unwrap();
        j.write_out().unwrap();
        let path = j.path();
        let len = j.file_len() as usize;
        drop(j);
        let mut bytes = fs::read(&path).unwrap();
        bytes.truncate(len);
        bytes.extend_from_slice(&tail);
        fs::write(&path, &bytes).unwrap();
        let (j, live) = Journal::open(&dir.0, "s").unwrap();
        assert_eq!(sorted(live), BTreeMap::from([kv("k", "v")]));
        let zeros = tail.iter().all(|&b| b == 0);
        let discarded = if zeros { 0 } else { tail.len() as u64 };
        assert_eq!(j.discarded_on_open(), discarded);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            bytes.len() as u64 - discarded
        );
    }
}

#[test]
fn foreign_files_and_other_versions_are_refused_untouched() {
    let dir = TempDir::new("foreign");
    let path = dir.0.join("s.journal");
    fs::write(&path, b"this is not a journal at all").unwrap();
    let err = Journal::open(&dir.0, "s").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("not a sipfork journal"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), b"this is not a journal at all");
    let mut future = header();
    future[8..12].copy_from_slice(&2u32.to_le_bytes());
    fs::write(&path, future).unwrap();
    let err = Journal::open(&dir.0, "s").unwrap_err();
    assert!(err.to_string().contains("version 2"), "{err}");
}

#[test]
fn oversized_records_and_bad_names_are_rejected() {
    let dir = TempDir::new("limits");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    assert!(j.put(&vec![0; MAX_KEY_LEN + 1], b"").is_err());
    assert!(j.put(b"k", &vec![0; MAX_PAYLOAD_LEN]).is_err());
    assert_eq!(
        j.pending_bytes(),
        0,
        "a rejected record leaves nothing behind"
    );
    for bad in ["", "../etc", "a/b", "a.b", "sp ace"] {
        assert!(Journal::open(&dir.0, bad).is_err(), "{bad:?}");
    }
}

#[test]
fn compaction_preserves_the_live_set_and_shrinks_the_file() {
    let dir = TempDir::new("compact");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.set_compaction_min_bytes(1024);
    let mut model = BTreeMap::new();
    for round in 0..50 {
        for k in 0..20 {
            let key = format!("ext-{k}").into_bytes();
            let value = format!("binding {k} round {round}").into_bytes();
            j.put(&key, &value).unwrap();
            model.insert(key, value);
        }
        j.delete(b"ext-3").unwrap();
        model.remove(&b"ext-3"[..]);
        j.write_out().unwrap();
    }
    assert!(j.needs_compaction());
    let before = j.file_len();
    let handle = j.sync_handle();
    j.compact(model.iter().map(|(k, v)| (&k[..], &v[..])))
        .unwrap();
    assert!(j.file_len() < before / 10, "{} -> {}", before, j.file_len());
    assert!(!j.needs_compaction());
    assert!(!dir.0.join("s.journal.tmp").exists());
    // Appends after compaction go to the new file, and the sync handle follows it.
    j.put(b"ext-99", b"new").unwrap();
    j.write_out().unwrap();
    model.insert(b"ext-99".to_vec(), b"new".to_vec());
    assert!(handle.sync_if_dirty().unwrap());
    assert!(!handle.sync_if_dirty().unwrap(), "clean after sync");
    drop(j);
    let (_, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(sorted(live), model);
}

#[test]
fn compaction_crash_points_leave_a_complete_journal() {
    let dir = TempDir::new("compact-crash");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    for i in 0..10 {
        j.put(format!("k{i}").as_bytes(), b"old").unwrap();
    }
    j.write_out().unwrap();
    drop(j);
    let expected: BTreeMap<_, _> = (0..10).map(|i| kv(&format!("k{i}"), "old")).collect();
    let tmp = dir.0.join("s.journal.tmp");

    // Crash while writing the temp file: a partial temp file is left.
    fs::write(&tmp, &header()[..10]).unwrap();
    let (j, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(sorted(live), expected);
    assert!(!tmp.exists(), "leftover temp file removed");
    drop(j);

    // Crash after the temp file was complete and synced, before the rename.
    write_atomically(&dir.0, "scratch", [(&b"k0"[..], &b"new"[..])]).unwrap();
    fs::rename(dir.0.join("scratch.journal"), &tmp).unwrap();
    let (j, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(
        sorted(live),
        expected,
        "the old file is still the truth before the rename"
    );
    assert!(!tmp.exists());
    drop(j);

    // After the rename the new file is the truth, whether or not the directory sync happened.
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.compact([(&b"k0"[..], &b"compacted"[..])]).unwrap();
    drop(j);
    let (_, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(sorted(live), BTreeMap::from([kv("k0", "compacted")]));
}

#[test]
fn compaction_writes_out_pending_records_first() {
    let dir = TempDir::new("compact-pending");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.put(b"a", b"1").unwrap();
    j.compact([(&b"a"[..], &b"1"[..])]).unwrap();
    assert_eq!(j.pending_bytes(), 0);
    drop(j);
    let (_, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(sorted(live), BTreeMap::from([kv("a", "1")]));
}

/// Fills a journal past its compaction threshold; returns the model of its live set.
fn churn(j: &mut Journal, rounds: usize) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for round in 0..rounds {
        for k in 0..20 {
            let key = format!("ext-{k}").into_bytes();
            let value = format!("binding {k} round {round}").into_bytes();
            j.put(&key, &value).unwrap();
            model.insert(key, value);
        }
        j.delete(b"ext-3").unwrap();
        model.remove(&b"ext-3"[..]);
        j.write_out().unwrap();
    }
    model
}

#[test]
fn background_compaction_keeps_what_was_appended_while_it_ran() {
    let dir = TempDir::new("bg-compact");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.set_compaction_min_bytes(1024);
    let mut model = churn(&mut j, 50);
    assert!(j.needs_compaction());
    let before = j.file_len();
    let handle = j.sync_handle();
    let job = j.begin_compaction().unwrap();
    assert!(j.is_compacting() && !j.needs_compaction());
    assert!(j.begin_compaction().is_err(), "one compaction at a time");
    assert!(j.compact(std::iter::empty()).is_err());
    let worker = std::thread::spawn(move || job.run());
    // The shard goes on: overwrites, deletes and new keys, some written out, some only buffered.
    j.put(b"ext-1", b"during").unwrap();
    j.delete(b"ext-2").unwrap();
    j.write_out().unwrap();
    j.put(b"ext-77", b"buffered").unwrap();
    model.insert(b"ext-1".to_vec(), b"during".to_vec());
    model.remove(&b"ext-2"[..]);
    model.insert(b"ext-77".to_vec(), b"buffered".to_vec());
    let done = worker.join().unwrap().unwrap();
    assert_eq!(done.records(), 19);
    handle.sync_if_dirty().unwrap();
    // Phase 1 done: the tail goes to the new file, which is fsynced before any rename.
    let sync = j
        .finish_compaction(Ok(done))
        .unwrap()
        .expect("a tail: phase 2");
    assert!(j.is_compacting());
    assert!(
        dir.0.join("s.journal.tmp").exists(),
        "no rename before the fsync"
    );
    // Batches written meanwhile go to both files.
    j.put(b"ext-79", b"phase two").unwrap();
    j.write_out().unwrap();
    model.insert(b"ext-79".to_vec(), b"phase two".to_vec());
    let synced = std::thread::spawn(move || sync.run()).join().unwrap();
    assert_eq!(synced.as_ref().unwrap().records(), 19);
    assert!(j.finish_compaction(synced).unwrap().is_none(), "committed");
    assert!(!j.is_compacting());
    assert!(j.file_len() < before / 10, "{before} -> {}", j.file_len());
    assert!(!dir.0.join("s.journal.tmp").exists());
    assert!(
        handle.sync_if_dirty().unwrap(),
        "new file and directory get synced"
    );
    assert!(!handle.sync_if_dirty().unwrap());
    j.put(b"ext-78", b"after").unwrap();
    j.write_out().unwrap();
    model.insert(b"ext-78".to_vec(), b"after".to_vec());
    // kill -9 now: no sync of the last record, no clean close.
    drop(j);
    let (_, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(sorted(live), model);
}

#[test]
fn failed_or_interrupted_background_compaction_keeps_the_old_file() {
    let dir = TempDir::new("bg-compact-fail");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.set_compaction_min_bytes(1024);
    let mut model = churn(&mut j, 30);
    let job = j.begin_compaction().unwrap();
    job.run().unwrap();
    j.put(b"ext-5", b"x").unwrap();
    model.insert(b"ext-5".to_vec(), b"x".to_vec());
    // The job's result is lost (e.g. its thread died): the shard reports failure.
    let err = j
        .finish_compaction(Err(io::Error::other("worker gone")))
        .unwrap_err();
    assert!(err.to_string().contains("worker gone"));
    assert!(!dir.0.join("s.journal.tmp").exists());
    assert!(j.needs_compaction(), "can be retried");
    j.write_out().unwrap();
    // A crash between the job's fsync and the commit leaves a complete temp file: ignored.
    let job = j.begin_compaction().unwrap();
    job.run().unwrap();
    assert!(dir.0.join("s.journal.tmp").exists());
    drop(j);
    let (j, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(sorted(live), model);
    assert!(!dir.0.join("s.journal.tmp").exists());
    let mut j = j;
    let err = j
        .finish_compaction(Err(io::Error::other("stray")))
        .unwrap_err();
    assert!(
        err.to_string().contains("no background compaction"),
        "{err}"
    );
}

/// Random puts, deletes, write-outs, compactions and reopen-after-crash against a `HashMap`.
#[test]
fn matches_a_map_model_across_reopens() {
    let dir = TempDir::new("model");
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.set_compaction_min_bytes(4096);
    let mut written: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut buffered = written.clone();
    for step in 0..20_000 {
        let key = format!("{}", next() % 300).into_bytes();
        match next() % 100 {
            0..=59 => {
                let value = vec![b'v'; (next() % 300) as usize];
                j.put(&key, &value).unwrap();
                buffered.insert(key, value);
            }
            60..=84 => {
                j.delete(&key).unwrap();
                buffered.remove(&key);
            }
            85..=96 => {
                j.write_out().unwrap();
                written = buffered.clone();
                if j.needs_compaction() {
                    j.compact(written.iter().map(|(k, v)| (&k[..], &v[..])))
                        .unwrap();
                }
            }
            _ => {
                // Crash: the buffer is lost, what was written survives.
                drop(j);
                let (reopened, live) = Journal::open(&dir.0, "s").unwrap();
                assert_eq!(
                    live.into_iter().collect::<HashMap<_, _>>(),
                    written,
                    "step {step}"
                );
                j = reopened;
                j.set_compaction_min_bytes(4096);
                buffered = written.clone();
            }
        }
    }
    assert!(
        j.file_len() < 4096 + 3 * (300 * 320),
        "compaction kept the file bounded: {}",
        j.file_len()
    );
}

#[test]
fn repartition_moves_every_record_to_its_new_owner() {
    let dir = TempDir::new("repartition");
    let owner_of = |n: usize| move |key: &[u8]| crate::core::shard::owner_of(key, n as u16).index();
    let names = |n: usize| {
        (0..n)
            .map(|i| format!("shard-{i}-of-{n}"))
            .collect::<Vec<_>>()
    };
    let mut model = BTreeMap::new();
    {
        let mut journals = repartition(&dir.0, &names(2), owner_of(2)).unwrap();
        for ext in 1000..1100u32 {
            let key = ext.to_string().into_bytes();
            let shard = owner_of(2)(&key);
            journals[shard]
                .0
                .put(&key, format!("binding {ext}").as_bytes())
                .unwrap();
            model.insert(key, format!("binding {ext}").into_bytes());
        }
        for (j, _) in &mut journals {
            j.write_out().unwrap();
        }
    }
    for n in [3usize, 1, 4] {
        let journals = repartition(&dir.0, &names(n), owner_of(n)).unwrap();
        assert_eq!(journal_names(&dir.0).unwrap(), {
            let mut v = names(n);
            v.sort();
            v
        });
        let mut union = BTreeMap::new();
        for (shard, (_, live)) in journals.into_iter().enumerate() {
            for (k, v) in live {
                assert_eq!(owner_of(n)(&k), shard, "record on the wrong shard");
                union.insert(k, v);
            }
        }
        assert_eq!(union, model, "{n} shards");
        // Reopening with the same set does not re-partition and returns the same data.
        let again: BTreeMap<_, _> = repartition(&dir.0, &names(n), owner_of(n))
            .unwrap()
            .into_iter()
            .flat_map(|(_, live)| live)
            .collect();
        assert_eq!(again, model);
    }
}

#[test]
fn interrupted_repartition_is_redone_from_the_copies() {
    let dir = TempDir::new("repartition-crash");
    let owner3 = |key: &[u8]| crate::core::shard::owner_of(key, 3).index();
    let old: Vec<String> = (0..2).map(|i| format!("shard-{i}-of-2")).collect();
    let new: Vec<String> = (0..3).map(|i| format!("shard-{i}-of-3")).collect();
    let mut model = BTreeMap::new();
    let mut journals: Vec<Journal> = old
        .iter()
        .map(|n| Journal::open(&dir.0, n).unwrap().0)
        .collect();
    for ext in 0..60u32 {
        let key = format!("20{ext:02}").into_bytes();
        let shard = crate::core::shard::owner_of(&key, 2).index();
        journals[shard].put(&key, b"v").unwrap();
        model.insert(key, b"v".to_vec());
    }
    for j in &mut journals {
        j.write_out().unwrap();
    }
    drop(journals);
    // Crash after writing the first new file only: old files still hold everything.
    let everything = read_all(&dir.0).unwrap();
    let first: Records = everything
        .into_iter()
        .filter(|(k, _)| owner3(k) == 0)
        .collect();
    Journal::create(&dir.0, &new[0], first.iter().map(|(k, v)| (&k[..], &v[..]))).unwrap();
    let journals = repartition(&dir.0, &new, owner3).unwrap();
    let union: BTreeMap<_, _> = journals.into_iter().flat_map(|(_, live)| live).collect();
    assert_eq!(union, model);
    assert_eq!(journal_names(&dir.0).unwrap(), new);
}

/// Throughput figures, not a pass/fail test:
/// `cargo test --release --lib engine::persist -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput_figures() {
    let dir = TempDir::new("throughput");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.set_compaction_min_bytes(u64::MAX);
    const N: usize = 1_000_000;
    const BATCH: usize = 32;
    let value = vec![b'x'; 250]; // a binding: contact, call-id, instance, user agent, source
    let clock = std::time::Instant::now();
    for i in 0..N {
        j.put(format!("{}", 1_000_000 + i % 200_000).as_bytes(), &value)
            .unwrap();
        if i % BATCH == BATCH - 1 {
            j.write_out().unwrap();
        }
    }
    j.write_out().unwrap();
    let append = clock.elapsed();
    let clock = std::time::Instant::now();
    j.sync().unwrap();
    let sync = clock.elapsed();
    let bytes = j.file_len();
    drop(j);
    let clock = std::time::Instant::now();
    let (mut j, live) = Journal::open(&dir.0, "s").unwrap();
    let replay = clock.elapsed();
    let clock = std::time::Instant::now();
    j.compact(live.iter().map(|(k, v)| (&k[..], &v[..])))
        .unwrap();
    let compact = clock.elapsed();
    println!(
        "journal: {N} puts of 7+250 bytes in batches of {BATCH}: {:.0} records/s ({:.0} MB/s), {} bytes/record \
         ({RECORD_OVERHEAD} overhead); fdatasync of {} MB {:.0} ms; replay {:.0} records/s; compaction of {} live \
         records {:.0} ms",
        N as f64 / append.as_secs_f64(),
        bytes as f64 / append.as_secs_f64() / 1e6,
        (bytes - HEADER_LEN as u64) / N as u64,
        bytes / 1_000_000,
        sync.as_secs_f64() * 1e3,
        N as f64 / replay.as_secs_f64(),
        live.len(),
        compact.as_secs_f64() * 1e3,
    );
}

/// A write the disk refuses (here `/dev/full`: ENOSPC, and its truncate fails too) drops the
/// batch (nothing waits in memory), poisons the journal and reports why; a rewrite from the
/// caller's live set makes it healthy again, with exactly that set on disk.
#[test]
fn failed_write_drops_the_batch_and_a_rewrite_heals_the_journal() {
    let dir = TempDir::new("failed-write");
    let (mut j, _) = Journal::open(&dir.0, "shard-0").unwrap();
    // The pwrite(2) path (file systems without fallocate); the mapped path's refusal is
    // `a_refused_allocation_fails_the_batch_before_copying_anything`.
    j.set_mapped(false).unwrap();
    j.put(b"1001", b"a").unwrap();
    j.write_out().unwrap();
    let real = std::mem::replace(
        &mut j.file,
        OpenOptions::new().append(true).open("/dev/full").unwrap(),
    );
    j.put(b"1002", b"b").unwrap();
    let e = j.write_out().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(28), "ENOSPC: {e}");
    assert_eq!(j.pending_bytes(), 0, "the failed batch is not kept");
    assert!(j.problem().unwrap().contains("could not be cut off"));
    assert!(j.put(b"1003", b"c").is_err(), "poisoned: refuses records");
    assert!(j.write_out().is_err());
    assert_eq!(j.pending_bytes(), 0);
    drop(real);

    let job = j
        .begin_rewrite(vec![kv("1001", "a"), kv("1004", "d")])
        .unwrap();
    assert!(j.is_compacting());
    assert!(j.finish_compaction(job.run()).unwrap().is_none());
    assert_eq!(j.problem(), None);
    j.put(b"1005", b"e").unwrap();
    j.write_out().unwrap();
    drop(j);
    let (_, live) = Journal::open(&dir.0, "shard-0").unwrap();
    assert_eq!(
        sorted(live),
        BTreeMap::from([kv("1001", "a"), kv("1004", "d"), kv("1005", "e")])
    );
}

/// Mapping turned back on after the file was cut back while unmapped (what a failed write's
/// truncation does) stores only into what the file holds: it allocates again instead of writing
/// past the end (which would fault), and every record is recovered.
#[test]
fn remapping_after_the_file_was_cut_back_allocates_again() {
    let dir = TempDir::new("remap-cut");
    let (mut j, _) = Journal::open(&dir.0, "shard-0").unwrap();
    j.put(b"1001", b"a").unwrap();
    j.write_out().unwrap();
    j.set_mapped(false).unwrap();
    let written = j.file_len();
    OpenOptions::new()
        .write(true)
        .open(j.path())
        .unwrap()
        .set_len(written)
        .unwrap();
    j.set_mapped(true).unwrap();
    for i in 0..64u32 {
        j.put(format!("2{i:03}").as_bytes(), &[b'x'; 200]).unwrap();
        j.write_out().unwrap();
    }
    drop(j);
    let (_, live) = Journal::open(&dir.0, "shard-0").unwrap();
    assert_eq!(live.len(), 65);
}

/// A failed fdatasync is not retried: the journal reports it until rewritten, and the next
/// sync round does not call it clean.
#[test]
fn failed_sync_marks_the_journal_unhealthy_until_rewritten() {
    let dir = TempDir::new("failed-sync");
    let (mut j, _) = Journal::open(&dir.0, "shard-0").unwrap();
    let handle = j.sync_handle();
    // An EIO from fdatasync cannot be provoked on a healthy disk: report it as the sync
    // handle does.
    j.put(b"1001", b"a").unwrap();
    j.write_out().unwrap();
    j.sync.fail(
        "journal fdatasync",
        &io::Error::from_raw_os_error(5), // EIO
    );
    assert!(j.problem().unwrap().contains("fdatasync failed"));
    // The persistence thread keeps syncing other rounds; the flag stays until the rewrite.
    handle.sync_if_dirty().unwrap();
    assert!(j.problem().is_some());
    let job = j.begin_rewrite(vec![kv("1001", "a")]).unwrap();
    assert!(j.finish_compaction(job.run()).unwrap().is_none());
    assert_eq!(j.problem(), None);
    assert!(
        handle.sync_if_dirty().unwrap(),
        "the new file and the directory are synced"
    );
}

/// A normal compaction does not commit over a poisoned journal, and does not stay stuck.
#[test]
fn compaction_of_a_poisoned_journal_is_abandoned() {
    let dir = TempDir::new("poisoned-compaction");
    let (mut j, _) = Journal::open(&dir.0, "shard-0").unwrap();
    j.put(b"1001", b"a").unwrap();
    let job = j.begin_compaction().unwrap();
    j.put(b"1002", b"b").unwrap();
    j.poisoned = true;
    assert!(j.finish_compaction(job.run()).is_err());
    assert!(!j.is_compacting());
    assert!(!tmp_path(&dir.0, "shard-0").exists());
}

/// Phase 2 abandoned: an append to the new file failed (here: the file is swapped for
/// `/dev/full`), or its fsync failed. The old file stays the journal, with every record.
#[test]
fn a_compaction_whose_new_file_fails_in_phase_two_keeps_the_old_file() {
    for fail_sync in [false, true] {
        let dir = TempDir::new("phase-two");
        let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
        j.set_compaction_min_bytes(1024);
        let mut model = churn(&mut j, 30);
        let job = j.begin_compaction().unwrap();
        let done = job.run();
        j.put(b"ext-1", b"tail").unwrap();
        j.write_out().unwrap();
        model.insert(b"ext-1".to_vec(), b"tail".to_vec());
        let sync = j.finish_compaction(done).unwrap().expect("phase 2");
        let result = if fail_sync {
            drop(sync);
            Err(io::Error::from_raw_os_error(5))
        } else {
            if let Some(background::Phase::Syncing { tmp, .. }) = &mut j.compaction {
                *tmp = OpenOptions::new().append(true).open("/dev/full").unwrap();
            }
            sync.run()
        };
        j.put(b"ext-2", b"both").unwrap();
        j.write_out().unwrap();
        model.insert(b"ext-2".to_vec(), b"both".to_vec());
        assert!(j.finish_compaction(result).is_err());
        assert!(!j.is_compacting());
        assert!(!dir.0.join("s.journal.tmp").exists());
        drop(j);
        let (_, live) = Journal::open(&dir.0, "s").unwrap();
        assert_eq!(sorted(live), model, "fail_sync={fail_sync}");
    }
}

/// Power loss with writeback out of order: a page of records never reached the disk (zeros)
/// while later ones did, and the allocated tail after them is zeros. The zeroed page is damage in
/// the middle (kept aside), the records after it are recovered, and the tail is not counted as
/// discarded.
#[test]
fn a_zeroed_page_between_records_is_damage_and_the_zero_tail_is_not() {
    let dir = TempDir::new("zero-page");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.put(b"before", b"1").unwrap();
    j.write_out().unwrap();
    let lost_from = j.file_len();
    j.put(b"lost", &[7; 4000]).unwrap();
    j.write_out().unwrap();
    let lost_to = j.file_len();
    j.put(b"after", b"2").unwrap();
    j.write_out().unwrap();
    let path = j.path();
    drop(j);
    let mut bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, BRIDGE);
    bytes[lost_from as usize..lost_to as usize].fill(0);
    fs::write(&path, &bytes).unwrap();
    let (j, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(
        sorted(live),
        BTreeMap::from([kv("before", "1"), kv("after", "2")])
    );
    assert_eq!(j.corrupt_on_open().unwrap().0, lost_to - lost_from);
    assert_eq!(
        j.discarded_on_open(),
        0,
        "nothing torn after the last record"
    );
}

/// A `kill -9` right after `write_out` (the shard's next step would be the turn's sends): the
/// records were only copied into the shared mapping, never written or synced, and all of them
/// are back; the unwritten tail allocated ahead is the end of the log, not damage.
#[test]
fn kill_9_after_write_out_keeps_what_was_copied_into_the_mapping() {
    let dir = TempDir::new("kill-9");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(j.mapped(), Ok(()));
    let mut model = churn(&mut j, 3);
    j.write_out().unwrap();
    let before = j.file_len();
    for i in 0..50 {
        let (k, v) = kv(&format!("ext-{i}"), &"contact ".repeat(30));
        j.put(&k, &v).unwrap();
        model.insert(k, v);
    }
    // The child only copies (the segment is allocated) and dies: no allocation after fork.
    // SAFETY: fork in a test; the child calls no allocator and no lock before SIGKILL.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork: {}", io::Error::last_os_error());
    if child == 0 {
        let ok = j.write_out().is_ok();
        // SAFETY: ends the child at once, like the OOM killer would.
        unsafe {
            if ok {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            libc::_exit(1);
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "the child's write_out failed (status {status})"
    );
    // This process never wrote the batch: drop its buffer with the journal.
    drop(j);
    let (j, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(sorted(live), model);
    assert!(j.file_len() > before + 50 * 240);
    assert_eq!(j.discarded_on_open(), 0, "the zero tail is not damage");
    assert!(j.corrupt_on_open().is_none());
    assert!(fs::metadata(j.path()).unwrap().len() > j.file_len());
}

/// Reopening a preallocated file recovers exactly its records, keeps the allocated tail, and
/// appends after the last record (not after the tail); dropping without any sync loses nothing.
#[test]
fn reopen_of_a_preallocated_file_recovers_exactly_the_records() {
    let dir = TempDir::new("prealloc");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.set_compaction_min_bytes(u64::MAX);
    let mut model = churn(&mut j, 5);
    let len = j.file_len();
    drop(j);
    let size = fs::metadata(dir.0.join("s.journal")).unwrap().len();
    assert_eq!(size, BRIDGE);
    for round in 0..3 {
        let (mut j, live) = Journal::open(&dir.0, "s").unwrap();
        assert_eq!(sorted(live), model, "round {round}");
        assert_eq!(j.discarded_on_open(), 0);
        assert!(j.file_len() >= len);
        assert_eq!(fs::metadata(j.path()).unwrap().len(), BRIDGE);
        let k = format!("round-{round}").into_bytes();
        j.put(&k, b"v").unwrap();
        j.delete(b"k1").unwrap();
        j.write_out().unwrap();
        model.insert(k, b"v".to_vec());
        model.remove(&b"k1"[..]);
    }
    // The union reader (re-partitioning) reads the preallocated file the same way.
    assert_eq!(sorted(read_all(&dir.0).unwrap()), model);
}

/// A batch that needs space the file system refuses (here injected: ENOSPC for the segment and
/// again for the pages the batch needs) fails before any byte of it is copied: no SIGBUS, the
/// batch is dropped, and the journal takes records again once space returns. When only the
/// segment is refused, the batch's pages are enough.
#[test]
fn a_refused_allocation_fails_the_batch_before_copying_anything() {
    let dir = TempDir::new("enospc");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.put(b"1001", b"a").unwrap();
    j.map
        .as_mut()
        .unwrap()
        .inject
        .extend([libc::ENOSPC, libc::ENOSPC]);
    let e = j.write_out().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    assert_eq!(j.pending_bytes(), 0, "the failed batch is not kept");
    assert_eq!(j.file_len(), HEADER_LEN as u64);
    assert_eq!(j.problem(), None, "not poisoned: nothing reached the file");
    // Only the segment refused: the batch's pages are allocated instead.
    j.map.as_mut().unwrap().inject.push_back(libc::ENOSPC);
    j.put(b"1002", b"b").unwrap();
    j.write_out().unwrap();
    assert_eq!(j.map.as_ref().unwrap().allocated(), 4096);
    assert_eq!(fs::metadata(j.path()).unwrap().len(), 4096);
    drop(j);
    let (_, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(sorted(live), BTreeMap::from([kv("1002", "b")]));
}

/// A file system without fallocate (EOPNOTSUPP): the journal writes with pwrite(2) instead and
/// says why.
#[test]
fn without_fallocate_the_journal_falls_back_to_pwrite() {
    let dir = TempDir::new("eopnotsupp");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.put(b"1001", b"a").unwrap();
    j.map.as_mut().unwrap().inject.push_back(libc::EOPNOTSUPP);
    j.write_out().unwrap();
    assert!(j.mapped().unwrap_err().contains("fallocate unsupported"));
    j.put(b"1002", b"b").unwrap();
    j.write_out().unwrap();
    assert_eq!(fs::metadata(j.path()).unwrap().len(), j.file_len());
    // A compaction's new file stays unmapped too.
    j.compact([(&b"1002"[..], &b"b"[..])]).unwrap();
    assert!(j.mapped().is_err());
    drop(j);
    let (_, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(sorted(live), BTreeMap::from([kv("1002", "b")]));
}

/// The allocator (asked by the persistence thread's round) allocates the next segment before the shard reaches it, so
/// the shard never allocates on its path: here every allocation the shard itself would make is
/// refused, and crossing into the second segment still succeeds.
#[test]
fn the_allocator_allocates_ahead_of_the_shard() {
    let dir = TempDir::new("ahead");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.set_compaction_min_bytes(u64::MAX);
    let handle = j.sync_handle();
    let value = vec![b'x'; 250];
    let mut n = 0;
    // Fill the first segment to past half.
    while j.file_len() < SEGMENT / 2 + 1024 {
        j.put(format!("{n}").as_bytes(), &value).unwrap();
        j.write_out().unwrap();
        n += 1;
    }
    handle.sync_if_dirty().unwrap();
    assert!(handle.allocate_ahead().unwrap().allocated);
    assert_eq!(fs::metadata(j.path()).unwrap().len(), 2 * SEGMENT);
    j.map.as_mut().unwrap().inject.extend([libc::ENOSPC; 8]);
    while j.file_len() < SEGMENT + 4096 {
        j.put(format!("{n}").as_bytes(), &value).unwrap();
        j.write_out().unwrap();
        n += 1;
    }
    assert_eq!(
        j.map.as_ref().unwrap().inject.len(),
        8,
        "the shard never allocated"
    );
    drop(j);
    let (_, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(live.len(), n);
}

/// A real full file system: a 1 MiB tmpfs in a private mount namespace (root only; elsewhere
/// the test says so and passes without it). Batches go in until the allocation is refused with
/// ENOSPC; the process gets no SIGBUS, the refused batch is not in the file, and every batch
/// that was taken is recovered.
#[test]
fn a_full_tmpfs_refuses_a_batch_without_sigbus() {
    let dir = TempDir::new("tmpfs");
    let path = dir.0.clone();
    std::thread::spawn(move || {
        if let Err(why) = private_tmpfs(&path, "1m") {
            eprintln!("skipping the tmpfs test: {why}");
            return;
        }
        let (mut j, _) = Journal::open(&path, "s").unwrap();
        let value = vec![b'x'; 250];
        let mut taken = BTreeMap::new();
        let mut refused = None;
        for n in 0..10_000 {
            let k = format!("ext-{n}").into_bytes();
            j.put(&k, &value).unwrap();
            match j.write_out() {
                Ok(()) => {
                    taken.insert(k, value.clone());
                }
                Err(e) => {
                    refused = Some((k, e));
                    break;
                }
            }
        }
        let (k, e) = refused.expect("a 1 MiB tmpfs ran out of space");
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        assert!(taken.len() > 3000, "only {} records fit", taken.len());
        assert!(j.mapped().is_ok());
        drop(j);
        let (_, live) = Journal::open(&path, "s").unwrap();
        let live = sorted(live);
        assert!(!live.contains_key(&k));
        assert_eq!(live, taken);
    })
    .join()
    .unwrap();
}

/// Mounts a tmpfs of `size` on `dir` in a mount namespace private to the calling thread (it
/// goes away with the thread).
fn private_tmpfs(dir: &Path, size: &str) -> Result<(), String> {
    use std::ffi::CString;
    let err = |what: &str| format!("{what}: {}", io::Error::last_os_error());
    // SAFETY: unshares this thread's mount namespace (and its fs attributes) only.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(err("unshare(CLONE_NEWNS)"));
    }
    let root = CString::new("/").unwrap();
    let none = CString::new("none").unwrap();
    let tmpfs = CString::new("tmpfs").unwrap();
    let target = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let opts = CString::new(format!("size={size}")).unwrap();
    // SAFETY: mount(2) with valid C strings; the first keeps mounts from propagating out.
    unsafe {
        if libc::mount(
            none.as_ptr(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(err("making / private"));
        }
        if libc::mount(
            tmpfs.as_ptr(),
            target.as_ptr(),
            tmpfs.as_ptr(),
            0,
            opts.as_ptr().cast(),
        ) != 0
        {
            return Err(err("mounting a tmpfs"));
        }
    }
    Ok(())
}

/// The allocated-but-unwritten extents of `file` within `from..to`, as FIEMAP reports them
/// (clipped to the range); `None` where the file system has no FIEMAP (tmpfs).
fn unwritten_extents(file: &File, from: u64, to: u64) -> Option<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Fiemap {
        start: u64,
        length: u64,
        flags: u32,
        mapped: u32,
        count: u32,
        reserved: u32,
        extents: [Extent; 128],
    }
    // _IOWR('f', 11, struct fiemap)
    const FS_IOC_FIEMAP: u64 = 0xC020_660B;
    const EXTENT_LAST: u32 = 0x1;
    const EXTENT_UNWRITTEN: u32 = 0x800;
    let mut unwritten = Vec::new();
    let mut at = from;
    while at < to {
        // SAFETY: plain old data; all zeros is a valid value.
        let mut map: Box<Fiemap> = Box::new(unsafe { std::mem::zeroed() });
        map.start = at;
        map.length = to - at;
        map.count = 128;
        // SAFETY: FS_IOC_FIEMAP on an open file, with a buffer for `count` extents.
        if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, &mut *map) } != 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) => return None,
                _ => panic!("FIEMAP: {e}"),
            }
        }
        if map.mapped == 0 {
            break;
        }
        let mut last = false;
        for e in &map.extents[..map.mapped as usize] {
            let (start, end) = (e.logical.max(from), (e.logical + e.length).min(to));
            if e.flags & EXTENT_UNWRITTEN != 0 && start < end {
                unwritten.push((start, end));
            }
            at = e.logical + e.length;
            last |= e.flags & EXTENT_LAST != 0;
        }
        if last {
            break;
        }
    }
    Some(unwritten)
}

/// Appends REGISTER-sized records numbered from `*n` until the journal's logical end reaches
/// `upto`, each batch written out, into `model` too.
fn append_until(j: &mut Journal, upto: u64, n: &mut usize, model: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
    while j.file_len() < upto {
        let (k, v) = kv(&format!("ext-{n}"), &"contact ".repeat(30));
        j.put(&k, &v).unwrap();
        j.write_out().unwrap();
        model.insert(k, v);
        *n += 1;
    }
}

/// Reopens journal `name` in `dir`: it holds exactly `model`, with nothing torn or damaged.
fn assert_reopens_clean(dir: &Path, name: &str, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let (j, live) = Journal::open(dir, name).unwrap();
    let live = sorted(live);
    let lost: Vec<_> = model
        .keys()
        .filter(|k| !live.contains_key(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(lost, Vec::<String>::new(), "{name}: records lost (zeroed?)");
    assert_eq!(&live, model, "{name}");
    assert_eq!(j.discarded_on_open(), 0, "{name}");
    assert!(j.corrupt_on_open().is_none(), "{name}");
}

/// What a journal should hold after replay.
type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// A fresh journal `s` in a scratch directory (compaction off) holding its first records, the
/// shard's bridge allocated: (dir, journal, sync handle, records so far, model).
fn bridged(label: &str) -> (TempDir, Journal, SyncHandle, usize, Model) {
    let dir = TempDir::new(label);
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    j.set_compaction_min_bytes(u64::MAX);
    let handle = j.sync_handle();
    let (mut n, mut model) = (0, BTreeMap::new());
    append_until(&mut j, 1000, &mut n, &mut model);
    assert_eq!(j.sync.current().published(), BRIDGE);
    (dir, j, handle, n, model)
}

/// The allocator (after a sync round asked it) allocates two segments ahead and makes them written (zeros, synced) before it
/// publishes them: FIEMAP shows no unwritten extent above the bridge the shard allocated itself
/// (which stays unwritten past what was stored, as does the same range when zeroing is off: the
/// check sees the difference). Records stored before and after the extension survive a reopen,
/// and the zeroed range is the end of the log, not damage.
#[test]
fn the_allocator_zeroes_what_it_allocates_ahead_and_records_around_it_survive() {
    let dir = TempDir::new("zero-ahead");
    let mut unwritten_above_bridge = Vec::new();
    for zero in [true, false] {
        let name = if zero { "zeroed" } else { "unzeroed" };
        let (mut j, _) = Journal::open(&dir.0, name).unwrap();
        j.set_compaction_min_bytes(u64::MAX);
        j.set_zero_ahead(zero);
        let handle = j.sync_handle();
        let (mut n, mut model) = (0, BTreeMap::new());
        append_until(&mut j, 20_000, &mut n, &mut model);
        assert_eq!(fs::metadata(j.path()).unwrap().len(), BRIDGE);
        assert!(handle.sync_if_dirty().unwrap());
        let ahead = handle.allocate_ahead().unwrap();
        assert!(ahead.allocated && ahead.zero_error.is_none());
        assert_eq!(fs::metadata(j.path()).unwrap().len(), 2 * SEGMENT);
        assert_eq!(j.sync.current().published(), 2 * SEGMENT);
        let file = File::open(j.path()).unwrap();
        match unwritten_extents(&file, 0, 2 * SEGMENT) {
            None => eprintln!("skipping the extent check: no FIEMAP on this file system"),
            Some(unwritten) => {
                // (Left unzeroed, it may merge with the unwritten range above it.)
                assert!(
                    unwritten.iter().any(|&(start, _)| start < BRIDGE),
                    "the shard's bridge is unwritten past the records: {unwritten:?}"
                );
                let above: Vec<_> = unwritten.into_iter().filter(|&(_, e)| e > BRIDGE).collect();
                if zero {
                    assert_eq!(above, [], "unwritten extents in the zeroed range");
                }
                unwritten_above_bridge.push(above);
            }
        }
        // Into the range allocated ahead, and a group commit over it.
        append_until(&mut j, BRIDGE + 64 * 1024, &mut n, &mut model);
        assert!(handle.sync_if_dirty().unwrap());
        drop(j);
        assert_reopens_clean(&dir.0, name, &model);
    }
    if let [zeroed, unzeroed] = &unwritten_above_bridge[..] {
        assert!(zeroed.is_empty());
        assert!(
            !unzeroed.is_empty(),
            "without zeroing the range stays unwritten"
        );
    }
}

/// The race the mutex prevents: the allocator is zeroing the range it allocated (not yet
/// published) when the shard's batch crosses the allocated limit, allocates itself and stores
/// records there. Driven deterministically: the zeroing stops after its first write (a test
/// hook, no lock held) while the shard writes a batch reaching well past that point; then the
/// zeroing goes on. It must skip what the shard published: every record survives, and the
/// range above the shard's limit is still zeroed.
#[test]
fn a_batch_crossing_the_limit_during_the_zeroing_is_never_zeroed() {
    use std::sync::mpsc;
    let (dir, mut j, handle, mut n, mut model) = bridged("zero-race");
    assert_eq!(j.map.as_ref().unwrap().allocated(), BRIDGE);
    let shared = j.sync.current();
    let (reached, at_rx) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let mut first = true;
    *shared.zero_hook.lock().unwrap() = Some(mapped::ZeroHook(Box::new(move |at| {
        if std::mem::take(&mut first) {
            reached.send(at).unwrap();
            go_rx.recv().unwrap();
        }
    })));
    let round = std::thread::spawn(move || handle.allocate_ahead());
    let zeroed_to = at_rx.recv().unwrap();
    assert!(zeroed_to > BRIDGE && zeroed_to < 2 * SEGMENT);
    assert_eq!(shared.published(), BRIDGE, "not yet published");
    // The shard's batch: from below the old limit to 64 KiB past the zeroing's position.
    let value = vec![b'r'; 60_000];
    while j.file_len() + j.pending_bytes() as u64 <= zeroed_to + 64 * 1024 {
        let k = format!("big-{n}").into_bytes();
        j.put(&k, &value).unwrap();
        model.insert(k, value.clone());
        n += 1;
    }
    j.write_out().unwrap();
    let shard_limit = j.map.as_ref().unwrap().allocated();
    assert!(
        shard_limit > zeroed_to + 64 * 1024,
        "the shard allocated itself"
    );
    go.send(()).unwrap();
    assert!(round.join().unwrap().unwrap().allocated);
    assert_eq!(shared.published(), 2 * SEGMENT);
    if let Some(unwritten) = unwritten_extents(&shared.file, shard_limit, 2 * SEGMENT) {
        assert_eq!(unwritten, [], "the range above the shard's limit is zeroed");
    }
    append_until(&mut j, shard_limit + 4096, &mut n, &mut model);
    drop(j);
    assert_reopens_clean(&dir.0, "s", &model);
}

/// Zeroing is an optimisation: when its writes fail (here an injected EIO) the allocated range
/// is published anyway, the failure is counted once, and the journal stays healthy.
#[test]
fn a_failed_zeroing_still_publishes_the_allocated_range() {
    let (dir, mut j, handle, mut n, mut model) = bridged("zero-fail");
    j.sync
        .current()
        .zero_fail
        .store(libc::EIO, Ordering::Relaxed);
    assert!(handle.sync_if_dirty().unwrap());
    let ahead = handle.allocate_ahead().unwrap();
    assert!(ahead.allocated);
    assert_eq!(j.sync.current().published(), 2 * SEGMENT);
    let error = ahead.zero_error.expect("the zeroing failed").to_string();
    assert!(error.contains("Input/output error"), "{error}");
    assert_eq!(j.problem(), None);
    // The shard uses the published range without allocating.
    j.map.as_mut().unwrap().inject.extend([libc::ENOSPC; 4]);
    append_until(&mut j, BRIDGE + 4096, &mut n, &mut model);
    assert_eq!(j.map.as_ref().unwrap().inject.len(), 4);
    drop(j);
    assert_reopens_clean(&dir.0, "s", &model);
}

/// The zeros' `fdatasync` fails (an injected EIO). While the zeroed file is still the journal,
/// that is the journal's failed sync: unhealthy until rewritten. When a compaction replaced the
/// file during the zeroing (driven deterministically: the zeroing waits after its first write
/// while the shard compacts), the new file holds every record and the group commit syncs it, so
/// the journal stays healthy and the failure is reported as a failed zeroing.
#[test]
fn a_failed_sync_of_zeros_in_a_replaced_file_leaves_the_journal_healthy() {
    use std::sync::mpsc;
    for replaced in [false, true] {
        let label = if replaced {
            "zero-replaced"
        } else {
            "zero-current"
        };
        let (dir, mut j, handle, mut n, mut model) = bridged(label);
        let old = j.sync.current();
        old.zero_sync_fail.store(libc::EIO, Ordering::Relaxed);
        let (reached, reached_rx) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let mut first = true;
        *old.zero_hook.lock().unwrap() = Some(mapped::ZeroHook(Box::new(move |_| {
            if std::mem::take(&mut first) {
                reached.send(()).unwrap();
                go_rx.recv().unwrap();
            }
        })));
        assert!(handle.sync_if_dirty().unwrap());
        let round = std::thread::spawn(move || handle.allocate_ahead());
        reached_rx.recv().unwrap();
        if replaced {
            let job = j.begin_compaction().unwrap();
            assert!(j.finish_compaction(job.run()).unwrap().is_none());
            assert!(!Arc::ptr_eq(&old, &j.sync.current()), "a new file");
        }
        go.send(()).unwrap();
        let ahead = round.join().unwrap();
        if replaced {
            let ahead = ahead.expect("not the journal's failure");
            assert!(ahead.allocated);
            let error = ahead.zero_error.expect("reported as a failed zeroing");
            assert_eq!(error.raw_os_error(), Some(libc::EIO));
            assert_eq!(j.problem(), None);
            let past = j.file_len() + 4096;
            append_until(&mut j, past, &mut n, &mut model);
        } else {
            assert_eq!(ahead.unwrap_err().raw_os_error(), Some(libc::EIO));
            assert!(j.problem().unwrap().contains("fdatasync failed"));
        }
        drop(j);
        assert_reopens_clean(&dir.0, "s", &model);
    }
}

/// Appends with `pwrite(2)` (the journal unmapped after it asked for space ahead) go past the
/// published limit without the mapping's allocation: they claim their bytes first, so the sync
/// allocator's zeroing of the space it allocates skips them.
#[test]
fn pwrite_appends_past_the_limit_are_never_zeroed() {
    let (dir, mut j, handle, mut n, mut model) = bridged("zero-pwrite");
    j.set_mapped(false).unwrap();
    append_until(&mut j, BRIDGE + 64 * 1024, &mut n, &mut model);
    assert!(handle.sync_if_dirty().unwrap());
    assert!(handle.allocate_ahead().unwrap().allocated);
    assert_eq!(j.sync.current().published(), 2 * SEGMENT);
    drop(j);
    assert_reopens_clean(&dir.0, "s", &model);
}

/// A persistence thread asleep with every journal clean is woken by the first write after its
/// last look (the doorbell), not by a timeout: without the ring it would sleep 10 s.
#[test]
fn the_first_write_after_a_sync_wakes_a_sleeping_persistence_thread() {
    use std::time::{Duration, Instant};
    let dir = TempDir::new("doorbell");
    let (mut j, _) = Journal::open(&dir.0, "s").unwrap();
    let handle = j.sync_handle();
    let (looked, looked_rx) = std::sync::mpsc::channel();
    let sleeper = std::thread::spawn(move || {
        let bell = Arc::new(Doorbell::new(std::thread::current()));
        handle.attach_doorbell(Arc::clone(&bell));
        handle.sync_if_dirty().unwrap();
        bell.arm();
        assert!(!handle.is_dirty(), "clean at the last look");
        looked.send(()).unwrap();
        let asleep = Instant::now();
        // `park` may return early; only the ring may end the wait before its 10 s.
        while !handle.is_dirty() && asleep.elapsed() < Duration::from_secs(10) {
            std::thread::park_timeout(Duration::from_secs(10));
        }
        bell.disarm();
        (asleep.elapsed(), handle.sync_if_dirty().unwrap())
    });
    looked_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    j.put(b"1000", b"binding").unwrap();
    j.write_out().unwrap();
    let (slept, synced) = sleeper.join().unwrap();
    assert!(synced, "the write was synced");
    assert!(
        slept < Duration::from_secs(5),
        "woken by the write, slept {slept:?}"
    );
    drop(j);
    let (_, live) = Journal::open(&dir.0, "s").unwrap();
    assert_eq!(live.len(), 1);
}
