//! Binding changes the engine must journal, as plain bytes (raft-rs style "outputs").
//!
//! The registrar encodes each change as a key/value upsert or a delete; the engine drains the
//! log once per loop turn into the shard's journal and issues the journal's `write(2)` before
//! that turn's sends, so a binding whose 200 OK left the box survives `kill -9` (DECISIONS.md).
//!
//! Each operation also carries the value its key had before (the undo value), so a turn whose
//! journal write failed can be rolled back in memory ([`PersistLog::split_off`], used by
//! `Core::persist_failed`): the registrar calls [`PersistLog::remember_old`] before changing or
//! removing a binding it holds.

use std::ops::Range;

/// One journal operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PersistOp<'a> {
    /// Insert or replace `key`.
    Put {
        /// Key bytes.
        key: &'a [u8],
        /// Value bytes.
        value: &'a [u8],
    },
    /// Remove `key`.
    Delete {
        /// Key bytes.
        key: &'a [u8],
    },
}

/// One logged operation: its key, its new value (`None`: a delete) and the value the key had
/// before (`None`: it did not exist), as ranges in the arena.
#[derive(Clone, Debug)]
struct Op {
    key: Range<usize>,
    value: Option<Range<usize>>,
    old: Option<Range<usize>>,
}

/// Pending journal operations of one shard, in order.
#[derive(Default, Debug)]
pub struct PersistLog {
    arena: Vec<u8>,
    ops: Vec<Op>,
    /// The undo value [`Self::remember_old`] wrote for the next operation.
    pending_old: Option<Range<usize>>,
}

impl PersistLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the value (which `write` appends) that the key of the next [`Self::put`] or
    /// [`Self::delete`] has before that change. Without it the key counts as new.
    pub fn remember_old(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.arena.len();
        write(&mut self.arena);
        self.pending_old = Some(start..self.arena.len());
    }

    /// Records an upsert of `key` with the value `write` appends.
    pub fn put(&mut self, key: &[u8], write: impl FnOnce(&mut Vec<u8>)) {
        let k = self.push(key);
        let start = self.arena.len();
        write(&mut self.arena);
        let old = self.pending_old.take();
        self.ops.push(Op {
            key: k,
            value: Some(start..self.arena.len()),
            old,
        });
    }

    /// Records a delete of `key`.
    pub fn delete(&mut self, key: &[u8]) {
        let k = self.push(key);
        let old = self.pending_old.take();
        self.ops.push(Op {
            key: k,
            value: None,
            old,
        });
    }

    fn push(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        start..self.arena.len()
    }

    /// Number of pending operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Hands every pending operation to `apply`, in order, and forgets them (keeping memory).
    pub fn drain(&mut self, apply: impl FnMut(PersistOp<'_>)) {
        self.for_each(apply);
        self.clear();
    }

    /// Hands every pending operation to `apply`, in order, and keeps them.
    pub fn for_each(&self, mut apply: impl FnMut(PersistOp<'_>)) {
        for op in &self.ops {
            let key = &self.arena[op.key.clone()];
            match &op.value {
                Some(v) => apply(PersistOp::Put {
                    key,
                    value: &self.arena[v.clone()],
                }),
                None => apply(PersistOp::Delete { key }),
            }
        }
    }

    /// Forgets every pending operation (keeping memory).
    pub fn clear(&mut self) {
        self.ops.clear();
        self.arena.clear();
        self.pending_old = None;
    }

    /// Takes the operations from index `from` on out of the log (a failure path: it copies).
    pub fn split_off(&mut self, from: usize) -> PersistLog {
        let mut taken = PersistLog::new();
        for op in self.ops.drain(from.min(self.ops.len())..) {
            let copy = |r: &Range<usize>, arena: &mut Vec<u8>| {
                let start = arena.len();
                arena.extend_from_slice(&self.arena[r.clone()]);
                start..arena.len()
            };
            let key = copy(&op.key, &mut taken.arena);
            let value = op.value.as_ref().map(|v| copy(v, &mut taken.arena));
            let old = op.old.as_ref().map(|v| copy(v, &mut taken.arena));
            taken.ops.push(Op { key, value, old });
        }
        // The arena only grows, so what the kept operations use ends where the last one ends.
        let end = self.ops.last().map_or(0, |op| {
            [Some(&op.key), op.value.as_ref(), op.old.as_ref()]
                .into_iter()
                .flatten()
                .map(|r| r.end)
                .max()
                .unwrap_or(0)
        });
        self.arena.truncate(end);
        self.pending_old = None;
        taken
    }

    /// Hands each operation's key and undo value to `undo`, newest first: replaying them in this
    /// order leaves every key as it was before the first operation.
    pub fn for_each_undo(&self, mut undo: impl FnMut(&[u8], Option<&[u8]>)) {
        for op in self.ops.iter().rev() {
            undo(
                &self.arena[op.key.clone()],
                op.old.as_ref().map(|r| &self.arena[r.clone()]),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_drain_in_order() {
        let mut log = PersistLog::new();
        log.put(b"k1", |v| v.extend_from_slice(b"v1"));
        log.delete(b"k2");
        log.put(b"k1", |v| v.extend_from_slice(b"v3"));
        let mut seen = Vec::new();
        log.drain(|op| seen.push(format!("{op:?}")));
        assert_eq!(seen.len(), 3);
        assert!(seen[0].contains("Put") && seen[1].contains("Delete") && seen[2].contains("Put"));
        assert!(log.is_empty());
        let mut again = 0;
        log.drain(|_| again += 1);
        assert_eq!(again, 0);
    }

    #[test]
    fn split_off_takes_the_newest_operations_with_their_undo_values() {
        let mut log = PersistLog::new();
        log.put(b"k1", |v| v.extend_from_slice(b"v1"));
        log.remember_old(|v| v.extend_from_slice(b"v1"));
        log.put(b"k1", |v| v.extend_from_slice(b"v2"));
        log.remember_old(|v| v.extend_from_slice(b"old3"));
        log.delete(b"k3");
        let taken = log.split_off(1);
        assert_eq!(log.len(), 1);
        assert_eq!(taken.len(), 2);
        let mut undo = Vec::new();
        taken.for_each_undo(|k, old| undo.push((k.to_vec(), old.map(<[u8]>::to_vec))));
        assert_eq!(
            undo,
            vec![
                (b"k3".to_vec(), Some(b"old3".to_vec())),
                (b"k1".to_vec(), Some(b"v1".to_vec())),
            ]
        );
        let mut left = Vec::new();
        log.for_each(|op| left.push(format!("{op:?}")));
        assert_eq!(left.len(), 1);
        assert!(left[0].contains("Put"));
        // What stays keeps working after the split.
        log.delete(b"k1");
        let mut kept = 0;
        log.drain(|_| kept += 1);
        assert_eq!(kept, 2);
    }
}
