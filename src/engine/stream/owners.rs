//! Which shard owns the connection with a peer, shared by every shard of the process.
//!
//! A connection is read and written only by the shard that accepted it, but a binding lives on
//! its extension's owner shard and a call on the shard that took its INVITE: a message one shard
//! addresses to a peer whose connection another shard owns is handed to that shard through the
//! mailbox ([`crate::engine::mailbox::LetterKind::Transmit`]), which writes it to the connection.
//!
//! The table is written at accept, connect and close only, but read for every transmit a shard
//! sends to a peer it holds no connection with (most UDP transmits, once a connection is open
//! anywhere), so a read writes no shared memory. The table is cut into [`PARTS`] parts by a hash
//! of the peer address, each an immutable map behind an `Arc` with a generation number: a change
//! copies its part (1/[`PARTS`] of the table) and bumps the part's generation. A shard reads
//! through its own [`View`], which keeps the snapshot of each part it last read: a lookup loads
//! the part's generation and looks into that snapshot; only when the part changed since does it
//! take the part's read lock and clone the new snapshot's `Arc`. While no connection is open
//! anywhere, a lookup loads one counter and returns. (A view keeps the copy of a part it read
//! last alive until it reads that part again: at most one older copy of the table per shard.)
//!
//! Ordering: a change is made and its generation bumped under the part's write lock, with release
//! ordering; a lookup loads the generation with acquire ordering. A shard that learns of a peer
//! after its connection was entered (a message from it handed over through the mailbox, which
//! synchronises the two shards) therefore sees the new generation and reads the entry.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use crate::core::shard::ShardId;
use crate::core::transport::Transport;

/// Parts of the table (a power of two).
pub const PARTS: usize = 64;

/// Peer -> the shard owning its connection, and the connection's transport (a transmit that must
/// go over TLS is never handed to a plain one).
type Map = HashMap<SocketAddr, (ShardId, Transport)>;

/// One part: a snapshot of its entries and the number of changes made to it.
#[derive(Debug, Default)]
struct Part {
    map: RwLock<Arc<Map>>,
    /// Changes made to `map`, bumped under its write lock after each.
    generation: AtomicU64,
}

/// Peer address -> owning shard, for every open TCP or TLS connection of the process.
#[derive(Debug)]
pub struct FlowOwners {
    parts: Box<[Part]>,
    /// Entries in all parts, readable without a lock.
    open: AtomicUsize,
}

impl Default for FlowOwners {
    fn default() -> Self {
        FlowOwners {
            parts: (0..PARTS).map(|_| Part::default()).collect(),
            open: AtomicUsize::new(0),
        }
    }
}

/// The part holding `peer`'s entry: a multiplicative hash of its address and port.
fn part_of(peer: SocketAddr) -> usize {
    let ip = match peer.ip() {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            (v as u64) ^ ((v >> 64) as u64)
        }
    };
    let h = (ip ^ (u64::from(peer.port()) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> (64 - PARTS.trailing_zeros())) as usize
}

impl FlowOwners {
    /// An empty table.
    pub fn new() -> FlowOwners {
        FlowOwners::default()
    }

    /// `shard` accepted (or opened) a connection with `peer` (a newer connection from the same
    /// peer on another shard takes the entry over).
    pub fn insert(&self, peer: SocketAddr, shard: ShardId, transport: Transport) {
        let part = &self.parts[part_of(peer)];
        let mut map = part.map.write().unwrap_or_else(|e| e.into_inner());
        if map.get(&peer) == Some(&(shard, transport)) {
            return;
        }
        if Arc::make_mut(&mut map)
            .insert(peer, (shard, transport))
            .is_none()
        {
            self.open.fetch_add(1, Ordering::Release);
        }
        part.generation.fetch_add(1, Ordering::Release);
    }

    /// `shard` closed its connection with `peer` (the entry stays if another shard holds it).
    pub fn remove(&self, peer: SocketAddr, shard: ShardId) {
        let part = &self.parts[part_of(peer)];
        let mut map = part.map.write().unwrap_or_else(|e| e.into_inner());
        if map.get(&peer).map(|&(owner, _)| owner) != Some(shard) {
            return;
        }
        Arc::make_mut(&mut map).remove(&peer);
        self.open.fetch_sub(1, Ordering::Release);
        part.generation.fetch_add(1, Ordering::Release);
    }

    /// True when no connection is open anywhere.
    pub fn is_empty(&self) -> bool {
        self.open.load(Ordering::Acquire) == 0
    }
}

impl Part {
    /// Its generation and entries now.
    fn snapshot(&self) -> (u64, Arc<Map>) {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        // Under the read lock: no change is being made, the generation is that of `map`.
        (self.generation.load(Ordering::Relaxed), Arc::clone(&map))
    }
}

/// One shard's view of the [`FlowOwners`] table: the snapshot of each part it read last
/// (module doc).
#[derive(Debug)]
pub struct View {
    table: Arc<FlowOwners>,
    /// Per part: the generation and snapshot this shard read last.
    seen: Box<[(u64, Arc<Map>)]>,
}

impl View {
    /// A view of `table` (a shard takes one when it starts).
    pub fn of(table: Arc<FlowOwners>) -> View {
        let seen = table.parts.iter().map(Part::snapshot).collect();
        View { table, seen }
    }

    /// The shard owning the connection with `peer`, and that connection's transport, if one is
    /// open: from this view's snapshot of `peer`'s part, read again only when that part changed
    /// since.
    pub fn owner(&mut self, peer: SocketAddr) -> Option<(ShardId, Transport)> {
        if self.table.is_empty() {
            return None;
        }
        let i = part_of(peer);
        let part = &self.table.parts[i];
        if part.generation.load(Ordering::Acquire) != self.seen[i].0 {
            self.seen[i] = part.snapshot();
        }
        self.seen[i].1.get(&peer).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_follow_accepts_and_closes() {
        let t = Arc::new(FlowOwners::new());
        let mut v = View::of(Arc::clone(&t));
        let p: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(v.owner(p).map(|o| o.0), None);
        t.insert(p, ShardId(1), Transport::Tcp);
        assert_eq!(v.owner(p).map(|o| o.0), Some(ShardId(1)));
        // A close on a shard that no longer holds the peer leaves the newer owner.
        t.insert(p, ShardId(0), Transport::Tcp);
        t.remove(p, ShardId(1));
        assert_eq!(v.owner(p).map(|o| o.0), Some(ShardId(0)));
        t.remove(p, ShardId(0));
        assert_eq!(v.owner(p).map(|o| o.0), None);
        // The connection's transport is recorded with its owner.
        t.insert(p, ShardId(1), Transport::Tls);
        assert_eq!(v.owner(p), Some((ShardId(1), Transport::Tls)));
        t.remove(p, ShardId(1));
        assert!(t.is_empty());
    }

    /// A shard's snapshots follow every change made after they were taken, on any part, and a
    /// lookup in an unchanged part keeps its snapshot (reads nothing under a lock).
    #[test]
    fn a_shards_snapshots_follow_later_changes() {
        let table = Arc::new(FlowOwners::new());
        let mut a = View::of(Arc::clone(&table));
        let mut b = View::of(Arc::clone(&table));
        let (s0, s1) = (ShardId(0), ShardId(1));
        let peers: Vec<SocketAddr> = (0..500u16)
            .map(|i| SocketAddr::new([127, 0, (i / 250) as u8, 1].into(), 40000 + i))
            .collect();
        assert!(peers.iter().all(|&p| b.owner(p).map(|o| o.0).is_none()));
        for &p in peers.iter().step_by(2) {
            table.insert(p, s0, Transport::Tcp);
        }
        assert_eq!(table.open.load(Ordering::Relaxed), 250);
        for (i, &p) in peers.iter().enumerate() {
            assert_eq!(b.owner(p).map(|o| o.0), (i % 2 == 0).then_some(s0), "{p}");
            assert_eq!(a.owner(p).map(|o| o.0), (i % 2 == 0).then_some(s0), "{p}");
        }
        let snapshots =
            |v: &View| -> Vec<*const Map> { v.seen.iter().map(|(_, m)| Arc::as_ptr(m)).collect() };
        let before = snapshots(&b);
        for &p in &peers {
            b.owner(p);
        }
        assert_eq!(before, snapshots(&b));
        // A close, and a reconnection taken over by the other shard.
        table.remove(peers[0], s0);
        table.insert(peers[2], s1, Transport::Tcp);
        table.remove(peers[2], s0); // no longer shard 0's: the entry stays
        assert_eq!(b.owner(peers[0]).map(|o| o.0), None);
        assert_eq!(a.owner(peers[2]).map(|o| o.0), Some(s1));
        assert_eq!(b.owner(peers[4]).map(|o| o.0), Some(s0));
        for &p in &peers {
            table.remove(p, s0);
            table.remove(p, s1);
        }
        assert!(table.is_empty());
        assert!(peers.iter().all(|&p| b.owner(p).map(|o| o.0).is_none()));
    }

    /// The race the engine relies on: a connection entered on one shard before a message about
    /// it is handed to another shard is known to that shard when the message arrives.
    #[test]
    fn an_entry_made_before_a_hand_over_is_seen_after_it() {
        let table = Arc::new(FlowOwners::new());
        let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
        let mut sending = View::of(Arc::clone(&table));
        // A connection elsewhere, so lookups go past the empty table's shortcut.
        table.insert("127.0.0.9:1".parse().unwrap(), ShardId(0), Transport::Tcp);
        let accepting = Arc::clone(&table);
        let writer = std::thread::spawn(move || {
            for i in 0..2000u16 {
                let p = SocketAddr::new([127, 0, 0, 2].into(), 10000 + i);
                accepting.insert(p, ShardId(0), Transport::Tcp);
                tx.send(p).unwrap();
            }
        });
        let mut seen = 0;
        for p in rx {
            assert_eq!(sending.owner(p).map(|o| o.0), Some(ShardId(0)), "{p}");
            seen += 1;
        }
        writer.join().unwrap();
        assert_eq!(seen, 2000);
    }
}
