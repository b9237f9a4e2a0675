//! Live public calls per tenancy level, shared by every shard without locks.
//!
//! One `AtomicU32` per level (server level 0, then the tenants). Admission increments each level
//! of a call's path and rolls back if any went over its limit, so concurrent shards can refuse
//! a call spuriously in a race but never admit one too many; release decrements the same levels
//! exactly once ([`Admission`] is consumed by it). A handful of uncontended atomic adds per
//! public call: tens of nanoseconds (`benches/core.rs`, `policy_admission`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::tenancy::{Tenancy, MAX_TENANT_DEPTH};

/// Levels a call may count on: two tenant paths and the server level.
const MAX_LEVELS: usize = 2 * (MAX_TENANT_DEPTH + 1) + 1;

/// The counters of one tenancy tree.
#[derive(Debug)]
pub struct Ledger {
    live: Box<[AtomicU32]>,
    limits: Box<[u32]>,
    refused: Box<[AtomicU64]>,
    /// Per number (of tables with `max_outgoing_calls` or `all_busy`): calls placed now, and
    /// confirmed calls its devices are in.
    lines: Box<[[AtomicU32; 2]]>,
}

/// Which per-number count a [`LineHold`] holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineCount {
    /// Calls the number's devices placed and that are not over.
    Outgoing = 0,
    /// Confirmed calls the number's devices are in (either direction).
    InCall = 1,
}

/// One count on one number's line, given back when dropped.
#[derive(Debug)]
pub struct LineHold {
    ledger: Arc<Ledger>,
    line: u32,
    count: LineCount,
}

impl Drop for LineHold {
    fn drop(&mut self) {
        if let Some(l) = self.ledger.lines.get(self.line as usize) {
            l[self.count as usize].fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The levels one admitted call holds, given back when it is released or dropped: ownership
/// makes the release happen exactly once (a call that is freed while still holding one gives it
/// back then).
#[derive(Debug)]
pub struct Admission {
    ledger: Arc<Ledger>,
    levels: [u16; MAX_LEVELS],
    n: u8,
}

impl Ledger {
    /// Zeroed counters for `tenancy` and `lines` numbers.
    pub fn new(tenancy: &Tenancy, lines: usize) -> Ledger {
        let n = tenancy.len();
        Ledger {
            lines: (0..lines)
                .map(|_| [AtomicU32::new(0), AtomicU32::new(0)])
                .collect(),
            live: (0..n).map(|_| AtomicU32::new(0)).collect(),
            limits: tenancy
                .nodes()
                .iter()
                .map(|t| t.max_public_calls.unwrap_or(u32::MAX))
                .collect(),
            refused: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Takes one call on every level of `levels` (distinct, each < the tree's size), or none:
    /// `Err(level)` names the first level that was full (its refusal is counted there).
    pub fn admit(self: &Arc<Self>, levels: &[usize]) -> Result<Admission, usize> {
        let mut a = Admission {
            ledger: Arc::clone(self),
            levels: [0; MAX_LEVELS],
            n: 0,
        };
        for &level in levels.iter().take(MAX_LEVELS) {
            let (Some(live), Some(&limit)) = (self.live.get(level), self.limits.get(level)) else {
                continue;
            };
            let before = live.fetch_add(1, Ordering::AcqRel);
            a.levels[usize::from(a.n)] = level as u16;
            a.n += 1;
            if before >= limit {
                if let Some(r) = self.refused.get(level) {
                    r.fetch_add(1, Ordering::Relaxed);
                }
                drop(a);
                return Err(level);
            }
        }
        Ok(a)
    }

    /// Takes one `count` on `line` if it stays within `limit` (`None`: always).
    pub fn hold_line(
        self: &Arc<Self>,
        line: usize,
        count: LineCount,
        limit: Option<u32>,
    ) -> Option<LineHold> {
        let c = &self.lines.get(line)?[count as usize];
        let before = c.fetch_add(1, Ordering::AcqRel);
        let hold = LineHold {
            ledger: Arc::clone(self),
            line: line as u32,
            count,
        };
        if limit.is_some_and(|l| before >= l) {
            drop(hold);
            return None;
        }
        Some(hold)
    }

    /// The current `count` of `line`.
    pub fn line(&self, line: usize, count: LineCount) -> u32 {
        self.lines
            .get(line)
            .map_or(0, |c| c[count as usize].load(Ordering::Acquire))
    }

    /// Live public calls counted at `level`.
    pub fn live(&self, level: usize) -> u32 {
        self.live
            .get(level)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Calls refused because `level` was full.
    pub fn refused(&self, level: usize) -> u64 {
        self.refused
            .get(level)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The limit of `level` (`None`: unlimited).
    pub fn limit(&self, level: usize) -> Option<u32> {
        self.limits.get(level).copied().filter(|&l| l != u32::MAX)
    }

    /// Levels in the tree.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True for an empty tree (never: the server level is always there).
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        for &level in &self.levels[..usize::from(self.n)] {
            if let Some(c) = self.ledger.live.get(usize::from(level)) {
                c.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl Admission {
    /// Gives the call's levels back (the same as dropping it; named for the call sites).
    pub fn release(self) {}

    /// The levels held (for CDRs and tests).
    pub fn levels(&self) -> impl Iterator<Item = usize> + '_ {
        self.levels[..usize::from(self.n)]
            .iter()
            .map(|&l| usize::from(l))
    }
}
