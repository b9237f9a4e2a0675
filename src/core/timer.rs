//! Per-shard hierarchical timer wheel with 1 ms ticks (sans-IO).
//!
//! One wheel per shard drives every deadline the core has: RFC 3261 §17 transaction timers
//! (T1 = 500 ms retransmissions up to Timer C's 3 minutes) and binding expiry (hours), for
//! millions of entries. Time is a [`crate::time::Instant`] passed in; the wheel never reads a clock.
//!
//! # Shape
//! - Entries live in a slab (`Vec` + free list), linked into doubly linked slot lists, so
//!   [`TimerWheel::insert`] and [`TimerWheel::cancel`] are O(1) and allocate nothing once the slab
//!   has grown to its working size.
//! - [`LEVELS`] levels of 64 slots each; level `L` slot covers `64^L` ticks of 1 ms. Nine levels
//!   span 2^54 ms, more than [`Instant::FAR_FUTURE`], so there is no overflow list: an `at` at or
//!   past `FAR_FUTURE` is *parked* (kept, cancellable, never fires).
//! - Placement follows the usual hierarchical rule (tokio's wheel): an entry sits at the level of
//!   the highest 6-bit digit in which its tick differs from `elapsed`. Reaching a slot of level
//!   `L ≥ 1` re-links its entries one level down ("cascade"); reaching a level-0 slot moves its
//!   entries into `ready`, a small binary heap ordered by `(at, insertion sequence)`.
//! - `ready` makes the wheel exact at microsecond resolution: a timer fires when `at <= now`, not
//!   at the end of its millisecond, and equal deadlines fire in insertion order.
//!
//! # Invariants (a reader must not break them)
//! 1. Every `ready` entry's tick is `< elapsed`; every wheel entry's tick is `>= elapsed`; so the
//!    top of `ready` is the earliest timer of all.
//! 2. A wheel entry at level `L` shares every digit above `L` with `elapsed`; a slot of level
//!    `L ≥ 1` starts strictly after `elapsed` (slots are cascaded when reached).
//! 3. The top of `ready` is live (cancelled refs below the top are dropped lazily).
//! 4. `ready` is empty only if level 0 is empty: when `ready` runs dry the earliest level-0 slot
//!    is drained at once (this may move `elapsed` up to 64 ms past `now`, which invariant 1 keeps
//!    correct). Hence [`TimerWheel::next_deadline`] is exact whenever the next timer is within
//!    the current 64 ms block, and otherwise the start of the slot that holds it (a lower bound).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::time::Instant;

const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
/// Levels of the wheel: 9 × 6 bits = 2^54 ticks of 1 ms, beyond [`Instant::FAR_FUTURE`].
pub const LEVELS: usize = 9;
const TICK_US: u64 = 1000;
/// Ticks at and after this are never reached; `elapsed` is clamped to it.
const FAR_TICK: u64 = Instant::FAR_FUTURE.as_micros() / TICK_US;
const NIL: u32 = u32::MAX;

/// Handle of an armed timer. Generational: once its timer fired or was cancelled, the id
/// matches nothing, even after the slab slot is reused for a newer timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

/// Where a slab entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// On the free list.
    Free,
    /// `at >= FAR_FUTURE`: kept for `cancel`/`len`, never fires.
    Parked,
    /// Referenced from the `ready` heap.
    Ready,
    /// Linked into slot list `level * SLOTS + slot`.
    Wheel(u16),
}

struct Entry<K> {
    /// Deadline in microseconds.
    at: u64,
    /// Insertion sequence: orders equal deadlines and identifies `ready` refs.
    seq: u64,
    key: K,
    /// Next in the slot list (or the free list).
    next: u32,
    prev: u32,
    generation: u32,
    place: Place,
}

/// A `ready` heap element; `Ord` by deadline, then insertion order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ReadyRef {
    at: u64,
    seq: u64,
    index: u32,
}

/// Hierarchical timer wheel keyed by `K` (what the owner wants back when the timer fires).
pub struct TimerWheel<K: Copy> {
    entries: Vec<Entry<K>>,
    free_head: u32,
    heads: [[u32; SLOTS]; LEVELS],
    occupied: [u64; LEVELS],
    /// Tick (ms) up to which the wheel has been swept; see the module invariants.
    elapsed: u64,
    ready: BinaryHeap<Reverse<ReadyRef>>,
    next_seq: u64,
    len: usize,
}

impl<K: Copy> TimerWheel<K> {
    /// An empty wheel whose clock starts at `now`.
    pub fn new(now: Instant) -> Self {
        TimerWheel {
            entries: Vec::new(),
            free_head: NIL,
            heads: [[NIL; SLOTS]; LEVELS],
            occupied: [0; LEVELS],
            elapsed: tick_of(now.as_micros()),
            ready: BinaryHeap::new(),
            next_seq: 0,
            len: 0,
        }
    }

    /// An empty wheel with room for `capacity` timers before the slab grows.
    pub fn with_capacity(now: Instant, capacity: usize) -> Self {
        let mut wheel = Self::new(now);
        wheel.entries.reserve(capacity);
        wheel
    }

    /// Arms a timer that fires `key` once `now >= at`. An `at` in the past fires at the next
    /// poll; an `at` at or after [`Instant::FAR_FUTURE`] never fires.
    pub fn insert(&mut self, at: Instant, key: K) -> TimerId {
        let at = at.as_micros();
        let seq = self.next_seq;
        self.next_seq += 1;
        let index = self.alloc(at, seq, key);
        if at >= Instant::FAR_FUTURE.as_micros() {
            self.entries[index as usize].place = Place::Parked;
        } else {
            let tick = at / TICK_US;
            if tick < self.elapsed {
                self.push_ready(index);
            } else {
                self.link(index, tick);
            }
        }
        self.len += 1;
        self.settle();
        TimerId {
            index,
            generation: self.entries[index as usize].generation,
        }
    }

    /// Disarms a timer. Returns false when `id` already fired, was cancelled, or is unknown.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        let Some(entry) = self.entries.get(id.index as usize) else {
            return false;
        };
        if entry.generation != id.generation || entry.place == Place::Free {
            return false;
        }
        let place = entry.place;
        if let Place::Wheel(pos) = place {
            self.unlink(id.index, pos);
        }
        self.release(id.index);
        if place == Place::Ready {
            self.drop_stale_ready_top();
        }
        self.settle();
        true
    }

    /// The deadline of a pending timer, or `None` when `id` is not pending.
    pub fn deadline(&self, id: TimerId) -> Option<Instant> {
        let entry = self.entries.get(id.index as usize)?;
        (entry.generation == id.generation && entry.place != Place::Free)
            .then_some(Instant::from_micros(entry.at))
    }

    /// When the engine must call [`Self::poll_expired`] next, or `None` when nothing will fire.
    ///
    /// Exact when the earliest timer lies in the current 64 ms block (always so under load).
    /// Otherwise it is the start of the wheel slot holding the earliest timer: a lower bound;
    /// polling at it cascades that slot at least one level down, so at most `LEVELS - 1` early
    /// wake-ups precede the exact deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        if let Some(Reverse(top)) = self.ready.peek() {
            return Some(Instant::from_micros(top.at));
        }
        let (_, _, start) = self.next_slot()?;
        Some(Instant::from_micros(start * TICK_US))
    }

    /// Pops one timer with `at <= now`, earliest first; equal deadlines in insertion order.
    /// Call until it returns `None`.
    pub fn poll_expired(&mut self, now: Instant) -> Option<K> {
        let now_us = now.as_micros();
        loop {
            if let Some(&Reverse(top)) = self.ready.peek() {
                if top.at > now_us {
                    return None;
                }
                self.ready.pop();
                let key = self.entries[top.index as usize].key;
                self.release(top.index);
                self.drop_stale_ready_top();
                self.settle();
                return Some(key);
            }
            // `ready` is empty, so level 0 is too (invariant 4): the next slot is level >= 1.
            let now_tick = tick_of(now_us);
            match self.next_slot() {
                Some((level, digit, start)) if start <= now_tick => {
                    self.elapsed = start;
                    self.cascade(level, digit);
                    self.settle();
                }
                // Nothing due. Moving `elapsed` up to `now`, which lies before the next slot's
                // start, keeps every placement valid (all lower levels are empty) and lets new
                // near timers land in level 0 instead of cascading down later.
                _ => {
                    self.elapsed = self.elapsed.max(now_tick);
                    return None;
                }
            }
        }
    }

    /// Pending timers (including parked far-future ones).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes held (slab and ready heap capacity) plus the wheel itself.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.entries.capacity() * std::mem::size_of::<Entry<K>>()
            + self.ready.capacity() * std::mem::size_of::<Reverse<ReadyRef>>()
    }

    /// Bytes of one slab entry for this `K` (the per-timer cost in steady state).
    pub const fn entry_bytes() -> usize {
        std::mem::size_of::<Entry<K>>()
    }

    fn alloc(&mut self, at: u64, seq: u64, key: K) -> u32 {
        if self.free_head != NIL {
            let index = self.free_head;
            let entry = &mut self.entries[index as usize];
            self.free_head = entry.next;
            entry.at = at;
            entry.seq = seq;
            entry.key = key;
            entry.next = NIL;
            entry.prev = NIL;
            return index;
        }
        let index = u32::try_from(self.entries.len())
            .ok()
            .filter(|&i| i != NIL)
            .expect("invariant: fewer than 2^32 - 1 timers per shard");
        self.entries.push(Entry {
            at,
            seq,
            key,
            next: NIL,
            prev: NIL,
            generation: 0,
            place: Place::Free,
        });
        index
    }

    /// Returns a pending entry to the free list; its id stops matching.
    fn release(&mut self, index: u32) {
        let entry = &mut self.entries[index as usize];
        entry.generation = entry.generation.wrapping_add(1);
        entry.place = Place::Free;
        entry.prev = NIL;
        entry.next = self.free_head;
        self.free_head = index;
        self.len -= 1;
    }

    fn push_ready(&mut self, index: u32) {
        let entry = &mut self.entries[index as usize];
        entry.place = Place::Ready;
        self.ready.push(Reverse(ReadyRef {
            at: entry.at,
            seq: entry.seq,
            index,
        }));
    }

    /// Keeps invariant 3: pops refs of cancelled entries off the top of `ready`.
    fn drop_stale_ready_top(&mut self) {
        while let Some(&Reverse(top)) = self.ready.peek() {
            let entry = &self.entries[top.index as usize];
            if entry.place == Place::Ready && entry.seq == top.seq {
                return;
            }
            self.ready.pop();
        }
    }

    /// Links entry `index` (with `tick >= elapsed`) into the slot its tick maps to.
    fn link(&mut self, index: u32, tick: u64) {
        debug_assert!(tick >= self.elapsed && tick <= FAR_TICK);
        let level = level_for(self.elapsed, tick);
        let slot = ((tick >> (SLOT_BITS * level as u32)) as usize) & (SLOTS - 1);
        let head = self.heads[level][slot];
        if head != NIL {
            self.entries[head as usize].prev = index;
        }
        let entry = &mut self.entries[index as usize];
        entry.next = head;
        entry.prev = NIL;
        entry.place = Place::Wheel((level * SLOTS + slot) as u16);
        self.heads[level][slot] = index;
        self.occupied[level] |= 1 << slot;
    }

    fn unlink(&mut self, index: u32, pos: u16) {
        let (level, slot) = (pos as usize / SLOTS, pos as usize % SLOTS);
        let (prev, next) = {
            let entry = &self.entries[index as usize];
            (entry.prev, entry.next)
        };
        if prev == NIL {
            self.heads[level][slot] = next;
            if next == NIL {
                self.occupied[level] &= !(1 << slot);
            }
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
    }

    /// Detaches a whole slot list and returns its first entry.
    fn take_slot(&mut self, level: usize, digit: usize) -> u32 {
        let head = self.heads[level][digit];
        self.heads[level][digit] = NIL;
        self.occupied[level] &= !(1 << digit);
        head
    }

    /// The earliest occupied slot: `(level, digit, start tick)`. The lowest occupied level holds
    /// the earliest timers, because each level's entries lie in `elapsed`'s block of the level
    /// above (invariant 2).
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        let level = self.occupied.iter().position(|&bits| bits != 0)?;
        let shift = SLOT_BITS * level as u32;
        let current = ((self.elapsed >> shift) as usize) & (SLOTS - 1);
        let bits = self.occupied[level];
        let at_or_after = bits & (u64::MAX << current);
        debug_assert_eq!(at_or_after, bits, "invariant: no slot behind elapsed");
        let digit = if at_or_after != 0 { at_or_after } else { bits }.trailing_zeros() as usize;
        let block = self.elapsed & !((1u64 << (shift + SLOT_BITS)) - 1);
        Some((level, digit, block | ((digit as u64) << shift)))
    }

    /// Re-links the entries of a level >= 1 slot relative to `elapsed` (now its start).
    fn cascade(&mut self, level: usize, digit: usize) {
        let mut index = self.take_slot(level, digit);
        while index != NIL {
            let entry = &self.entries[index as usize];
            let (next, tick) = (entry.next, entry.at / TICK_US);
            self.link(index, tick);
            index = next;
        }
    }

    /// Keeps invariant 4: when `ready` is empty, drains the earliest level-0 slot into it.
    fn settle(&mut self) {
        if !self.ready.is_empty() || self.occupied[0] == 0 {
            return;
        }
        let Some((0, digit, tick)) = self.next_slot() else {
            return;
        };
        let mut index = self.take_slot(0, digit);
        while index != NIL {
            let next = self.entries[index as usize].next;
            self.push_ready(index);
            index = next;
        }
        self.elapsed = tick + 1;
        // Crossing into the next 64 ms block may land exactly on a higher slot's start:
        // cascade it now, before anything is placed relative to the new `elapsed`.
        while let Some((level, digit, start)) = self.next_slot() {
            if level == 0 || start > self.elapsed {
                break;
            }
            self.cascade(level, digit);
        }
    }
}

impl<K: Copy> std::fmt::Debug for TimerWheel<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerWheel")
            .field("len", &self.len)
            .field("elapsed_ms", &self.elapsed)
            .field("ready", &self.ready.len())
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

fn tick_of(micros: u64) -> u64 {
    (micros / TICK_US).min(FAR_TICK)
}

/// The level whose digit is the highest one in which `tick` differs from `elapsed`.
fn level_for(elapsed: u64, tick: u64) -> usize {
    let differing = (elapsed ^ tick) | (SLOTS as u64 - 1);
    let highest_bit = 63 - differing.leading_zeros();
    (highest_bit / SLOT_BITS) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{ms, secs};
    use std::collections::BTreeMap;

    fn t(micros: u64) -> Instant {
        Instant::from_micros(micros)
    }

    fn drain(wheel: &mut TimerWheel<u32>, now: Instant) -> Vec<u32> {
        std::iter::from_fn(|| wheel.poll_expired(now)).collect()
    }

    /// SplitMix64: a seeded generator so a failing case replays exactly.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    #[test]
    fn fires_in_deadline_order_with_insertion_order_for_ties() {
        let mut wheel = TimerWheel::new(Instant::ZERO);
        wheel.insert(t(5_000_300), 1);
        wheel.insert(t(1_700), 2);
        wheel.insert(t(5_000_300), 3);
        wheel.insert(t(64_000), 4);
        wheel.insert(t(1_700), 5);
        wheel.insert(t(3_600_000_000), 6);
        assert_eq!(wheel.len(), 6);
        assert_eq!(
            wheel.next_deadline(),
            Some(t(1_700)),
            "near deadline is exact"
        );
        assert_eq!(drain(&mut wheel, t(1_699)), Vec::<u32>::new());
        assert_eq!(drain(&mut wheel, t(1_700)), vec![2, 5]);
        assert_eq!(drain(&mut wheel, Instant::ZERO + secs(10)), vec![4, 1, 3]);
        assert_eq!(
            drain(&mut wheel, Instant::ZERO + secs(3599)),
            Vec::<u32>::new()
        );
        assert_eq!(drain(&mut wheel, Instant::ZERO + secs(3600)), vec![6]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
    }

    #[test]
    fn sub_millisecond_deadlines_are_exact() {
        let mut wheel = TimerWheel::new(Instant::ZERO);
        wheel.insert(t(2_999), 1);
        wheel.insert(t(2_001), 2);
        assert_eq!(wheel.next_deadline(), Some(t(2_001)));
        assert_eq!(drain(&mut wheel, t(2_500)), vec![2]);
        assert_eq!(wheel.next_deadline(), Some(t(2_999)));
        assert_eq!(drain(&mut wheel, t(2_998)), Vec::<u32>::new());
        assert_eq!(drain(&mut wheel, t(2_999)), vec![1]);
    }

    #[test]
    fn past_deadlines_fire_at_the_next_poll() {
        let mut wheel = TimerWheel::new(Instant::ZERO + secs(100));
        wheel.insert(Instant::ZERO, 1);
        wheel.insert(Instant::ZERO + secs(50), 2);
        assert_eq!(wheel.next_deadline(), Some(Instant::ZERO));
        assert_eq!(drain(&mut wheel, Instant::ZERO + secs(100)), vec![1, 2]);
    }

    #[test]
    fn far_future_never_fires_but_can_be_cancelled() {
        let mut wheel = TimerWheel::new(Instant::ZERO);
        let far = wheel.insert(Instant::FAR_FUTURE, 1);
        let beyond = wheel.insert(Instant::from_micros(u64::MAX), 2);
        let just_before =
            wheel.insert(Instant::from_micros(Instant::FAR_FUTURE.as_micros() - 1), 3);
        assert_eq!(wheel.len(), 3);
        assert_eq!(wheel.deadline(far), Some(Instant::FAR_FUTURE));
        assert_eq!(drain(&mut wheel, Instant::from_micros(u64::MAX)), vec![3]);
        assert!(wheel.cancel(far));
        assert!(wheel.cancel(beyond));
        assert!(!wheel.cancel(just_before), "already fired");
        assert!(wheel.is_empty());
    }

    #[test]
    fn stale_ids_never_cancel_newer_timers() {
        let mut wheel = TimerWheel::new(Instant::ZERO);
        let first = wheel.insert(t(1_000), 1);
        assert_eq!(drain(&mut wheel, t(1_000)), vec![1]);
        assert!(!wheel.cancel(first), "fired ids are stale");
        let second = wheel.insert(t(2_000), 2); // reuses the slab slot
        assert_eq!(second.index, first.index);
        assert!(!wheel.cancel(first));
        assert_eq!(wheel.deadline(first), None);
        assert!(wheel.cancel(second));
        assert!(!wheel.cancel(second), "double cancel");
        let bogus = TimerId {
            index: 999,
            generation: 0,
        };
        assert!(!wheel.cancel(bogus));
        assert_eq!(drain(&mut wheel, t(10_000)), Vec::<u32>::new());
    }

    #[test]
    fn cancelling_the_ready_top_keeps_next_deadline_exact() {
        let mut wheel = TimerWheel::new(Instant::ZERO);
        let a = wheel.insert(t(500), 1);
        wheel.insert(t(800), 2);
        assert_eq!(wheel.next_deadline(), Some(t(500)));
        assert!(wheel.cancel(a));
        assert_eq!(wheel.next_deadline(), Some(t(800)));
    }

    #[test]
    fn lower_bound_deadlines_make_progress() {
        let mut wheel = TimerWheel::new(Instant::ZERO);
        let target = Instant::ZERO + secs(7_199) + ms(3) + Duration::from_micros(17);
        wheel.insert(target, 7);
        let mut wakeups = 0;
        let mut now = Instant::ZERO;
        loop {
            let d = wheel.next_deadline().expect("a timer is pending");
            assert!(
                d <= target && d >= now,
                "deadline {d:?} outside [{now:?}, {target:?}]"
            );
            now = d;
            wakeups += 1;
            if let Some(k) = wheel.poll_expired(now) {
                assert_eq!((k, now), (7, target));
                break;
            }
            assert!(wakeups <= LEVELS, "no progress after {wakeups} wake-ups");
        }
    }

    use crate::time::Duration;

    /// The wheel against a `BTreeMap` model over virtual time from microseconds to hours.
    #[test]
    fn matches_a_sorted_map_model() {
        for seed in 0..24u64 {
            run_model(seed, 3_000);
        }
    }

    fn run_model(seed: u64, steps: usize) {
        let mut rng = Rng(seed);
        let start = Instant::from_micros(rng.below(10_000_000_000));
        let mut now = start;
        let mut wheel = TimerWheel::new(now);
        // (at, seq) -> key: the order the wheel must produce.
        let mut model: BTreeMap<(u64, u64), u32> = BTreeMap::new();
        let mut ids: BTreeMap<u32, (TimerId, u64, u64)> = BTreeMap::new();
        let mut stale: Vec<TimerId> = Vec::new();
        let mut seq = 0u64;
        let mut next_key = 0u32;
        for step in 0..steps {
            match rng.below(10) {
                0..=4 => {
                    let delta = match rng.below(8) {
                        0 => rng.below(2_000),             // sub-ms to 2 ms
                        1 => rng.below(70_000),            // one 64 ms block
                        2 => rng.below(5_000_000),         // transaction timers
                        3 => rng.below(200_000_000),       // Timer C
                        4 => rng.below(8_000_000_000),     // binding expiry
                        5 => 500_000 * (1 + rng.below(3)), // exact ties on T1 multiples
                        6 => 0,                            // now
                        _ => u64::MAX,                     // in the past (see below)
                    };
                    let at = if delta == u64::MAX {
                        now.as_micros().saturating_sub(rng.below(10_000_000))
                    } else if rng.below(50) == 0 {
                        Instant::FAR_FUTURE.as_micros() + rng.below(2)
                    } else {
                        now.as_micros() + delta
                    };
                    let key = next_key;
                    next_key += 1;
                    let id = wheel.insert(Instant::from_micros(at), key);
                    if at < Instant::FAR_FUTURE.as_micros() {
                        model.insert((at, seq), key);
                    }
                    ids.insert(key, (id, at, seq));
                    seq += 1;
                }
                5 | 6 => {
                    if let Some((&key, &(id, at, s))) =
                        ids.iter().nth(rng.below(ids.len() as u64 + 1) as usize)
                    {
                        assert!(
                            wheel.cancel(id),
                            "seed {seed} step {step}: cancel of pending timer failed"
                        );
                        model.remove(&(at, s));
                        ids.remove(&key);
                        stale.push(id);
                    } else if let Some(&id) = stale.get(rng.below(stale.len() as u64 + 1) as usize)
                    {
                        assert!(
                            !wheel.cancel(id),
                            "seed {seed} step {step}: stale id cancelled something"
                        );
                    }
                }
                _ => {
                    let advance = match rng.below(4) {
                        0 => rng.below(3_000),
                        1 => rng.below(600_000),
                        2 => rng.below(40_000_000),
                        _ => {
                            // Jump to (or just before) the wheel's next deadline, as the engine does.
                            match wheel.next_deadline() {
                                Some(d) if d < Instant::FAR_FUTURE => d
                                    .as_micros()
                                    .saturating_sub(now.as_micros())
                                    .saturating_sub(rng.below(2)),
                                _ => rng.below(1_000_000),
                            }
                        }
                    };
                    now = Instant::from_micros(now.as_micros() + advance);
                    while let Some(key) = wheel.poll_expired(now) {
                        let (&(at, s), &expected) =
                            model.iter().next().expect("model has a due timer");
                        assert_eq!(
                            key, expected,
                            "seed {seed} step {step}: wrong order at {now:?}"
                        );
                        assert!(
                            at <= now.as_micros(),
                            "seed {seed} step {step}: fired early"
                        );
                        model.remove(&(at, s));
                        let (id, _, _) = ids.remove(&key).expect("known key");
                        stale.push(id);
                    }
                    if let Some((&(at, _), _)) = model.iter().next() {
                        assert!(
                            at > now.as_micros(),
                            "seed {seed} step {step}: due timer not fired"
                        );
                    }
                }
            }
            assert_eq!(wheel.len(), ids.len(), "seed {seed} step {step}: len");
            let model_next = model.keys().next().map(|&(at, _)| at);
            match (wheel.next_deadline(), model_next) {
                (None, None) => {}
                (Some(d), Some(m)) => assert!(
                    d.as_micros() <= m,
                    "seed {seed} step {step}: deadline after the earliest timer"
                ),
                (d, m) => panic!("seed {seed} step {step}: next_deadline {d:?} but model {m:?}"),
            }
        }
        // Everything left fires in order when time runs to the end.
        let end = Instant::from_micros(Instant::FAR_FUTURE.as_micros() - 1);
        let fired = drain(&mut wheel, end);
        let expected: Vec<u32> = model.values().copied().collect();
        assert_eq!(fired, expected, "seed {seed}: final drain");
    }

    #[test]
    fn a_million_timers_fit_in_small_memory_and_fire_in_order() {
        const N: u64 = 1_000_000;
        let mut wheel: TimerWheel<u64> = TimerWheel::with_capacity(Instant::ZERO, N as usize);
        let mut rng = Rng(42);
        let mut ids = Vec::with_capacity(N as usize);
        let mut deadlines = Vec::with_capacity(N as usize);
        for key in 0..N {
            // Binding expiry spread over two hours, with µs jitter.
            let at = Instant::from_micros(rng.below(7_200_000_000));
            deadlines.push(at);
            ids.push(wheel.insert(at, key));
        }
        let per_timer = wheel.memory_bytes() as f64 / N as f64;
        assert!(per_timer <= 48.0, "{per_timer} bytes per timer");
        for id in ids.iter().step_by(2) {
            assert!(wheel.cancel(*id));
        }
        assert_eq!(wheel.len(), (N / 2) as usize);
        let mut last = Instant::ZERO;
        let mut fired = 0u64;
        let mut now = Instant::ZERO;
        while now < Instant::ZERO + secs(7_300) {
            now += ms(250);
            while let Some(key) = wheel.poll_expired(now) {
                assert_eq!(key % 2, 1, "cancelled timer fired");
                let at = deadlines[key as usize];
                assert!(at >= last && at <= now);
                last = at;
                fired += 1;
            }
        }
        assert_eq!(fired, N / 2);
        assert!(wheel.is_empty());
        // The slab is reused: refilling allocates nothing.
        let cap = wheel.entries.capacity();
        for key in 0..N / 2 {
            wheel.insert(now + secs(1 + key % 3600), key);
        }
        assert_eq!(wheel.entries.capacity(), cap);
    }
}
