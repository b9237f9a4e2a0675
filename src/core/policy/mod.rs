//! Call policy, decided in O(1) per call on the hot path without locks: which calls are public
//! and which tenancy levels they count on (`[[tenants]]`, `[server] max_public_calls`), trunks
//! (PBXs at static addresses), emergency numbers.
//!
//! A **public call** has a party outside the platform (a `[[trusted]]` peer, a `[[routes]]` next
//! hop, or an unauthenticated caller when `auth.mode = "none"`) or a trunk as a party. It counts
//! once (not per branch) on the path of each served party that faces the public side — a trunk's
//! tenant when a trunk is a party; an extension's tenant when its other party is outside — and
//! on the server level once; it is admitted only if every level on those paths has room
//! (`ledger.rs`). A trunk calling an extension counts on the trunk's path only.

pub mod keepalive;
pub mod ledger;

use std::sync::Arc;

use crate::config::tenancy::{Tenancy, MAX_TENANT_DEPTH};
use ledger::{Admission, Ledger, LineCount, LineHold};

/// What one call holds on the shared counters, given back when it fails or its last dialog
/// ends ([`Holds::release`]), or at the latest when the call is freed (everything here gives
/// itself back when dropped, so each is released exactly once).
#[derive(Debug, Default)]
pub struct Holds {
    /// Its public-call levels.
    pub admission: Option<Admission>,
    /// One of the caller number's `max_outgoing_calls`.
    pub outgoing: Option<LineHold>,
    /// The caller's and callee's lines, counted "in a call" once the call is confirmed.
    pub lines: [Option<usize>; 2],
    in_call: Vec<LineHold>,
}

impl Holds {
    /// The call was answered (its first dialog): its parties' numbers are in a call now.
    pub fn confirmed(&mut self, ledger: &Arc<Ledger>) {
        if !self.in_call.is_empty() {
            return;
        }
        for line in self.lines.into_iter().flatten() {
            if let Some(h) = ledger.hold_line(line, LineCount::InCall, None) {
                self.in_call.push(h);
            }
        }
    }

    /// The call is over: everything goes back.
    pub fn release(&mut self) {
        *self = Holds::default();
    }
}

/// One party of a call, as policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party {
    /// Outside the platform.
    Outside,
    /// A trunk of tenancy level `tenant`.
    Trunk {
        /// Its level.
        tenant: usize,
    },
    /// An extension (its devices) of tenancy level `tenant`.
    Extension {
        /// Its level.
        tenant: usize,
    },
}

/// Most levels a call counts on.
pub const MAX_CALL_LEVELS: usize = 2 * (MAX_TENANT_DEPTH + 1) + 1;

/// The levels a call between `caller` and `callee` counts on, written into `out` (distinct,
/// server level included); `0` when the call is not public.
pub fn public_levels(
    tenancy: &Tenancy,
    caller: Party,
    callee: Party,
    out: &mut [usize; MAX_CALL_LEVELS],
) -> usize {
    let facing = |me: Party, other: Party| match (me, other) {
        (Party::Trunk { tenant }, _) => Some(tenant),
        (Party::Extension { tenant }, Party::Outside) => Some(tenant),
        _ => None,
    };
    let public = matches!(caller, Party::Outside | Party::Trunk { .. })
        || matches!(callee, Party::Outside | Party::Trunk { .. });
    if !public {
        return 0;
    }
    let mut n = 0;
    // A trunk calling an extension counts on the trunk's path only.
    let callee_counts = !matches!(caller, Party::Trunk { .. });
    let paths = [
        facing(caller, callee),
        facing(callee, caller).filter(|_| callee_counts),
    ];
    for tenant in paths.into_iter().flatten() {
        for level in tenancy.path(tenant) {
            if n < MAX_CALL_LEVELS && !out[..n].contains(&level) {
                out[n] = level;
                n += 1;
            }
        }
    }
    if n < MAX_CALL_LEVELS && !out[..n].contains(&0) {
        out[n] = 0;
        n += 1;
    }
    n
}
