//! Binding changes the engine must journal, as plain bytes (raft-rs style "outputs").
//!
//! The registrar encodes each change as a key/value upsert or a delete; the engine drains the
//! log once per loop turn into the shard's journal and issues the journal's `write(2)` before
//! that turn's sends, so a binding whose 200 OK left the box survives `kill -9` (DECISIONS.md).

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

/// Pending journal operations of one shard, in order.
#[derive(Default, Debug)]
pub struct PersistLog {
    arena: Vec<u8>,
    ops: Vec<(Range<usize>, Option<Range<usize>>)>,
}

impl PersistLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an upsert of `key` with the value `write` appends.
    pub fn put(&mut self, key: &[u8], write: impl FnOnce(&mut Vec<u8>)) {
        let k = self.push(key);
        let start = self.arena.len();
        write(&mut self.arena);
        self.ops.push((k, Some(start..self.arena.len())));
    }

    /// Records a delete of `key`.
    pub fn delete(&mut self, key: &[u8]) {
        let k = self.push(key);
        self.ops.push((k, None));
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
    pub fn drain(&mut self, mut apply: impl FnMut(PersistOp<'_>)) {
        for (k, v) in &self.ops {
            let key = &self.arena[k.clone()];
            match v {
                Some(v) => apply(PersistOp::Put {
                    key,
                    value: &self.arena[v.clone()],
                }),
                None => apply(PersistOp::Delete { key }),
            }
        }
        self.ops.clear();
        self.arena.clear();
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
}
