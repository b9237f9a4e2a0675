//! Which shard owns the connection with a peer, shared by every shard of the process.
//!
//! A connection is read and written only by the shard that accepted it, but a binding lives on
//! its extension's owner shard and a call on the shard that took its INVITE: a message one shard
//! addresses to a peer whose connection another shard owns is handed to that shard through the
//! mailbox ([`crate::engine::mailbox::LetterKind::Transmit`]), which writes it to the connection.
//! The table is written at accept and close only; a shard looks into it only for a transmit that
//! is not to one of its own connections, and not at all while no connection is open anywhere.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use crate::core::shard::ShardId;

/// Peer address -> owning shard, for every open TCP or TLS connection of the process.
#[derive(Debug, Default)]
pub struct FlowOwners {
    map: RwLock<HashMap<SocketAddr, ShardId>>,
    /// Entries in `map`, readable without the lock.
    open: AtomicUsize,
}

impl FlowOwners {
    /// An empty table.
    pub fn new() -> FlowOwners {
        FlowOwners::default()
    }

    /// `shard` accepted a connection from `peer` (a newer connection from the same peer on
    /// another shard takes the entry over).
    pub fn insert(&self, peer: SocketAddr, shard: ShardId) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        map.insert(peer, shard);
        self.open.store(map.len(), Ordering::Release);
    }

    /// `shard` closed its connection from `peer` (the entry stays if another shard holds it).
    pub fn remove(&self, peer: SocketAddr, shard: ShardId) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.get(&peer) == Some(&shard) {
            map.remove(&peer);
        }
        self.open.store(map.len(), Ordering::Release);
    }

    /// True when no connection is open anywhere.
    pub fn is_empty(&self) -> bool {
        self.open.load(Ordering::Acquire) == 0
    }

    /// The shard owning the connection with `peer`, if one is open.
    pub fn owner(&self, peer: SocketAddr) -> Option<ShardId> {
        if self.open.load(Ordering::Acquire) == 0 {
            return None;
        }
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(&peer).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_follow_accepts_and_closes() {
        let t = FlowOwners::new();
        let p: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(t.owner(p), None);
        t.insert(p, ShardId(1));
        assert_eq!(t.owner(p), Some(ShardId(1)));
        // A close on a shard that no longer holds the peer leaves the newer owner.
        t.insert(p, ShardId(0));
        t.remove(p, ShardId(1));
        assert_eq!(t.owner(p), Some(ShardId(0)));
        t.remove(p, ShardId(0));
        assert_eq!(t.owner(p), None);
    }
}
