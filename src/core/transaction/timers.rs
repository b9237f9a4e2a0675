//! RFC 3261 §17 timers (Table 4) and how a transaction arms them.
//!
//! Transactions keep the [`TimerId`]s of the timers they armed and cancel them on every state
//! change, so a timer that fires always belongs to the current state; the generational wheel
//! makes a stale id harmless anyway.

use crate::core::slab::Key;
use crate::core::timer::{TimerId, TimerWheel};
use crate::core::TimerKey;
use crate::time::{Duration, Instant};

/// The RFC 3261 timer values for UDP (Table 4), adjustable for tests and tuning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerValues {
    /// T1: round-trip estimate (500 ms).
    pub t1: Duration,
    /// T2: longest retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// T4: longest time a message stays in the network (5 s).
    pub t4: Duration,
}

impl Default for TimerValues {
    fn default() -> Self {
        TimerValues {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerValues {
    /// 64·T1: Timers B, F, H, J, L, M (32 s by default).
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
    /// Timer D: at least 32 s for UDP (§17.1.1.2).
    pub fn timer_d(&self) -> Duration {
        self.t1x64().max(Duration::from_secs(32))
    }
}

/// The timers of RFC 3261 §17 (and RFC 6026's L and M), one line each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timer {
    /// INVITE client: retransmit the INVITE (T1, doubling).
    A,
    /// INVITE client: give up waiting for any response (64·T1).
    B,
    /// Proxy: give up on a branch that rings too long (> 3 min, reset by provisionals; §16.6).
    C,
    /// INVITE client: absorb retransmitted non-2xx finals (≥ 32 s).
    D,
    /// Non-INVITE client: retransmit the request (T1, doubling up to T2).
    E,
    /// Non-INVITE client: give up (64·T1).
    F,
    /// INVITE server: retransmit the non-2xx final (T1, doubling up to T2).
    G,
    /// INVITE server: give up waiting for the ACK (64·T1).
    H,
    /// INVITE server: absorb ACK retransmissions (T4).
    I,
    /// Non-INVITE server: absorb request retransmissions (64·T1).
    J,
    /// Non-INVITE client: absorb response retransmissions (T4).
    K,
    /// INVITE server, RFC 6026: absorb INVITE retransmissions after a 2xx (64·T1).
    L,
    /// INVITE client, RFC 6026: keep forwarding retransmitted 2xx (64·T1).
    M,
}

impl Timer {
    /// Whether the timer only ends a wait that absorbs retransmissions (D, I, J, K, L, M): its
    /// firing sends nothing and frees state, so firing it a little late changes nothing on the
    /// wire (a late retransmission meanwhile is absorbed or answered as it would have been just
    /// before; for Timer D RFC 3261 says "at least 32 s" outright).
    pub fn lingers(self) -> bool {
        matches!(
            self,
            Timer::D | Timer::I | Timer::J | Timer::K | Timer::L | Timer::M
        )
    }
}

/// Lingering timers are rounded up to this grid: at a thousand calls a second each call ends
/// about eight such waits, and exact deadlines would wake an idle shard for almost every one;
/// on the grid they end together, one wake-up per grid step at most.
pub const LINGER_GRID: Duration = Duration::from_millis(32);

/// `at` rounded up to the next multiple of `grid` (since the clock's zero).
fn round_up(at: Instant, grid: Duration) -> Instant {
    let g = grid.as_micros() as u64;
    Instant::from_micros(at.as_micros().div_ceil(g) * g)
}

/// Which transaction of a call a timer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnSlot {
    /// The server transaction of the call.
    Server,
    /// The client transaction of branch `n`.
    Branch(u8),
    /// The CANCEL client transaction of branch `n`.
    Cancel(u8),
}

/// What a transaction needs to arm and cancel its timers.
pub struct Sched<'a> {
    /// The shard's timer wheel.
    pub wheel: &'a mut TimerWheel<TimerKey>,
    /// Current time.
    pub now: Instant,
    /// The call the transaction belongs to.
    pub call: Key,
    /// Which of the call's transactions is arming.
    pub slot: TxnSlot,
    /// Timer values.
    pub values: TimerValues,
}

impl Sched<'_> {
    /// Arms `timer` to fire `after` from now; a lingering timer (see [`Timer::lingers`]) fires
    /// at the next multiple of [`LINGER_GRID`] at or after that.
    pub fn arm(&mut self, timer: Timer, after: Duration) -> TimerId {
        let key = TimerKey::Txn {
            call: self.call,
            slot: self.slot,
            timer,
        };
        let mut at = self.now + after;
        if timer.lingers() && after > Duration::ZERO {
            at = round_up(at, LINGER_GRID);
        }
        self.wheel.insert(at, key)
    }

    /// Cancels a timer if armed, and forgets its id.
    pub fn cancel(&mut self, id: &mut Option<TimerId>) {
        if let Some(id) = id.take() {
            self.wheel.cancel(id);
        }
    }
}
