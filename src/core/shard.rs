//! Which shard owns what.
//!
//! Extension `X` lives on shard `hash(X) mod N`. The hash is fixed (FNV-1a, 64 bit), never
//! `RandomState`: journals written by one process are re-partitioned by the next, possibly with a
//! different shard count, so the hash must be the same across runs, versions and machines.

/// Index of a shard (one per pinned core).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The index as usize, for slices of per-shard things.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// FNV-1a over `bytes`: stable, dependency-free, good enough for short numeric strings.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short keys that differ in the last digit; fold the high half in.
    h ^ (h >> 32)
}

/// The shard that owns extension (or AOR user part) `key` among `shards` shards.
pub fn owner_of(key: &[u8], shards: u16) -> ShardId {
    let n = u64::from(shards.max(1));
    ShardId((stable_hash(key) % n) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_across_builds() {
        // Pinned values: a change here breaks re-partitioning of existing journals.
        assert_eq!(
            stable_hash(b""),
            0xcbf2_9ce4_8422_2325 ^ (0xcbf2_9ce4_8422_2325 >> 32)
        );
        assert_eq!(owner_of(b"1000", 1), ShardId(0));
    }

    #[test]
    fn consecutive_extensions_spread_evenly() {
        let shards = 4u16;
        let mut count = [0u32; 4];
        for ext in 1000..2000 {
            count[owner_of(ext.to_string().as_bytes(), shards).index()] += 1;
        }
        for c in count {
            assert!((200..300).contains(&c), "uneven spread: {count:?}");
        }
    }
}
