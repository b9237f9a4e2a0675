//! Password-guessing throttle (`[security]`): failed digest checks are counted per (source IP,
//! username) and per source IP inside a sliding window; past `max_auth_failures` the pair is
//! blocked, past five times that the whole address, for `block_seconds`. Requests from a blocked
//! pair or address are dropped without an answer (an answer would tell the guesser to go on).
//!
//! Only a wrong response to a fresh, valid nonce of ours counts as a failure: a stale nonce or a
//! replayed nonce-count says nothing about the password. Phones behind the same NAT with the
//! right passwords are not affected by a pair block of another username.
//!
//! State is per shard and bounded ([`MAX_TRACKED`] entries per table; stale entries go first).
//! A REGISTER is handled on its address-of-record's shard, so guessing one account's password
//! meets one throttle; INVITE guesses spread over the callees' shards, so there an address gets
//! at most `shards` times the limit before every shard has blocked it.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::config::SecurityConfig;
use crate::time::{Duration, Instant};

/// Entries kept per table at most.
pub const MAX_TRACKED: usize = 65_536;

/// A block the throttle started or ended (for the log line and the metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockEvent {
    /// The source address.
    pub source: IpAddr,
    /// The username, or `None` for a block of the whole address.
    pub user: Option<Vec<u8>>,
    /// Failures counted when the block started.
    pub failures: u32,
}

#[derive(Clone, Debug)]
struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
    /// The username (pair entries only), for the unblock line.
    user: Option<Vec<u8>>,
}

impl Entry {
    fn new(now: Instant, user: Option<&[u8]>) -> Entry {
        Entry {
            window_start: now,
            failures: 0,
            blocked_until: None,
            user: user.map(<[u8]>::to_vec),
        }
    }

    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| now < t)
    }

    /// Counts a failure; true when it crosses `limit` (the block starts).
    fn fail(&mut self, now: Instant, window: Duration, limit: u32, block: Duration) -> bool {
        if now >= self.window_start + window {
            self.window_start = now;
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= limit && self.blocked_until.is_none() {
            self.blocked_until = Some(now + block);
            return true;
        }
        false
    }

    fn stale(&self, now: Instant, window: Duration) -> bool {
        self.blocked_until.is_none() && now >= self.window_start + window
    }
}

/// What [`Throttle::check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// The pair (source, username) is blocked.
    Pair,
    /// The whole source address is blocked.
    Source,
}

/// One shard's guessing throttle.
#[derive(Debug)]
pub struct Throttle {
    limit: u32,
    window: Duration,
    block: Duration,
    pairs: HashMap<(IpAddr, Vec<u8>), Entry>,
    sources: HashMap<IpAddr, Entry>,
    /// Earliest end of a running block (when the next sweep is due).
    next_unblock: Option<Instant>,
}

impl Throttle {
    /// A throttle with the limits of `cfg`.
    pub fn new(cfg: &SecurityConfig) -> Throttle {
        Throttle {
            limit: cfg.max_auth_failures.max(1),
            window: cfg.auth_window,
            block: cfg.block,
            pairs: HashMap::new(),
            sources: HashMap::new(),
            next_unblock: None,
        }
    }

    /// Is `source` (or `source` with `user`) blocked now?
    pub fn check(&self, now: Instant, source: IpAddr, user: Option<&[u8]>) -> Option<Blocked> {
        if self.sources.is_empty() {
            return None;
        }
        if self.sources.get(&source).is_some_and(|e| e.blocked(now)) {
            return Some(Blocked::Source);
        }
        let user = user?;
        self.pairs
            .get(&(source, user.to_vec()))
            .filter(|e| e.blocked(now))
            .map(|_| Blocked::Pair)
    }

    /// Counts one failed digest check of `user` from `source`; returns the blocks it started.
    pub fn failure(&mut self, now: Instant, source: IpAddr, user: &[u8]) -> Vec<BlockEvent> {
        let mut started = Vec::new();
        let (window, limit, block) = (self.window, self.limit, self.block);
        let key = (source, user.to_vec());
        if self.pairs.len() >= MAX_TRACKED && !self.pairs.contains_key(&key) {
            evict(&mut self.pairs, now, window);
        }
        if self.pairs.len() < MAX_TRACKED || self.pairs.contains_key(&key) {
            let e = self
                .pairs
                .entry(key)
                .or_insert_with(|| Entry::new(now, Some(user)));
            if e.fail(now, window, limit, block) {
                started.push(BlockEvent {
                    source,
                    user: Some(user.to_vec()),
                    failures: e.failures,
                });
            }
        }
        if self.sources.len() >= MAX_TRACKED && !self.sources.contains_key(&source) {
            evict(&mut self.sources, now, window);
        }
        if self.sources.len() < MAX_TRACKED || self.sources.contains_key(&source) {
            let e = self
                .sources
                .entry(source)
                .or_insert_with(|| Entry::new(now, None));
            if e.fail(now, window, limit.saturating_mul(5), block) {
                started.push(BlockEvent {
                    source,
                    user: None,
                    failures: e.failures,
                });
            }
        }
        if !started.is_empty() {
            let until = now + block;
            self.next_unblock = Some(self.next_unblock.map_or(until, |t| t.min(until)));
        }
        started
    }

    /// When [`Throttle::sweep`] has blocks to end.
    pub fn next_unblock(&self) -> Option<Instant> {
        self.next_unblock
    }

    /// Ends the blocks that ran out and forgets stale counts; returns the blocks ended.
    pub fn sweep(&mut self, now: Instant) -> Vec<BlockEvent> {
        let mut ended = Vec::new();
        let window = self.window;
        let mut next: Option<Instant> = None;
        let mut visit = |source: IpAddr, e: &mut Entry| -> bool {
            match e.blocked_until {
                Some(t) if now >= t => {
                    ended.push(BlockEvent {
                        source,
                        user: e.user.clone(),
                        failures: e.failures,
                    });
                    false
                }
                Some(t) => {
                    next = Some(next.map_or(t, |n| n.min(t)));
                    true
                }
                None => !e.stale(now, window),
            }
        };
        self.pairs.retain(|(source, _), e| visit(*source, e));
        self.sources.retain(|source, e| visit(*source, e));
        self.next_unblock = next;
        ended
    }

    /// Pairs and addresses blocked right now.
    pub fn blocked_now(&self, now: Instant) -> (usize, usize) {
        (
            self.pairs.values().filter(|e| e.blocked(now)).count(),
            self.sources.values().filter(|e| e.blocked(now)).count(),
        )
    }
}

/// Makes room in a full table: drops stale entries, else one entry that is not blocked.
fn evict<K: Clone + Eq + std::hash::Hash>(
    map: &mut HashMap<K, Entry>,
    now: Instant,
    window: Duration,
) {
    map.retain(|_, e| !e.stale(now, window));
    if map.len() >= MAX_TRACKED {
        if let Some(k) = map
            .iter()
            .find(|(_, e)| !e.blocked(now))
            .map(|(k, _)| k.clone())
        {
            map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(&SecurityConfig {
            max_auth_failures: 3,
            auth_window: std::time::Duration::from_secs(60),
            block: std::time::Duration::from_secs(300),
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 7));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 8));

    #[test]
    fn pair_blocks_at_the_limit_and_unblocks_after_the_block() {
        let mut t = throttle();
        let now = Instant::ZERO;
        assert!(t.failure(now, A, b"1000").is_empty());
        assert!(t.failure(now, A, b"1000").is_empty());
        let started = t.failure(now, A, b"1000");
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].user.as_deref(), Some(&b"1000"[..]));
        assert_eq!(t.check(now, A, Some(b"1000")), Some(Blocked::Pair));
        assert_eq!(
            t.check(now, A, Some(b"1001")),
            None,
            "another user from the NAT"
        );
        assert_eq!(t.check(now, B, Some(b"1000")), None, "another address");
        let later = now + Duration::from_secs(300);
        assert_eq!(t.next_unblock(), Some(later));
        assert!(t.sweep(now + Duration::from_secs(299)).is_empty());
        let ended = t.sweep(later);
        assert_eq!(ended.len(), 1);
        assert_eq!(t.check(later, A, Some(b"1000")), None);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let mut t = throttle();
        let mut now = Instant::ZERO;
        for _ in 0..10 {
            assert!(t.failure(now, A, b"1000").is_empty());
            assert!(t.failure(now, A, b"1000").is_empty());
            now += Duration::from_secs(61);
        }
        assert_eq!(t.check(now, A, Some(b"1000")), None);
    }

    #[test]
    fn an_address_guessing_many_users_is_blocked_at_five_times_the_limit() {
        let mut t = throttle();
        let now = Instant::ZERO;
        let mut source_blocked = false;
        for i in 0..15u32 {
            let user = (1000 + i).to_string();
            // Two failures per user: never a pair block.
            for _ in 0..2 {
                let ev = t.failure(now, A, user.as_bytes());
                source_blocked |= ev.iter().any(|e| e.user.is_none());
            }
            if i < 7 {
                assert!(!source_blocked, "blocked after {} failures", 2 * (i + 1));
            }
        }
        assert!(source_blocked);
        assert_eq!(t.check(now, A, None), Some(Blocked::Source));
        assert_eq!(t.check(now, B, None), None);
    }

    #[test]
    fn tables_stay_bounded() {
        let mut t = throttle();
        let now = Instant::ZERO;
        for i in 0..(MAX_TRACKED as u32 + 100) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x7f00_0000 | i));
            t.failure(now, ip, b"1000");
        }
        assert!(t.pairs.len() <= MAX_TRACKED);
        assert!(t.sources.len() <= MAX_TRACKED);
    }
}
