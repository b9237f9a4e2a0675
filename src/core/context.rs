//! What every part of a shard's core shares: identity, time, the timer wheel, the outbox.
//!
//! [`Cx`] is built by [`crate::core::Core`] for each call into a handler by borrowing disjoint
//! fields, so the registrar and the proxy stay plain structs with their own state and no
//! back-pointer to the core.

use std::net::SocketAddr;

use crate::config::Config;
use crate::core::ids::Ids;
use crate::core::io::Outbox;
use crate::core::persist::PersistLog;
use crate::core::shard::ShardId;
use crate::core::timer::TimerWheel;
use crate::core::transaction::TimerValues;
use crate::core::TimerKey;
use crate::time::Instant;

/// Fixed facts about one shard.
#[derive(Clone, Debug)]
pub struct Env {
    /// This shard.
    pub shard: ShardId,
    /// Number of shards in the process.
    pub shards: u16,
    /// The address sipfork listens on (Via sent-by, Record-Route, domain check).
    pub local: SocketAddr,
    /// Wall-clock time (µs since the Unix epoch) at `Instant::ZERO`; the engine reads it once at
    /// start so the core can store expiry as wall time without reading a clock.
    pub wall_epoch_us: u64,
    /// RFC 3261 timer values.
    pub timers: TimerValues,
}

impl Env {
    /// Wall-clock seconds since the Unix epoch at `now`.
    pub fn wall_secs(&self, now: Instant) -> u64 {
        (self.wall_epoch_us + now.as_micros()) / 1_000_000
    }

    /// Wall-clock microseconds since the Unix epoch at `now`.
    pub fn wall_us(&self, now: Instant) -> u64 {
        self.wall_epoch_us + now.as_micros()
    }

    /// The `Instant` at which wall-clock time `wall_us` falls (saturating at the epoch).
    pub fn instant_at_wall_us(&self, wall_us: u64) -> Instant {
        Instant::from_micros(wall_us.saturating_sub(self.wall_epoch_us))
    }
}

/// The shared, mutable context of one call into the core.
pub struct Cx<'a> {
    /// Current time.
    pub now: Instant,
    /// Shard facts.
    pub env: &'a Env,
    /// Configuration.
    pub cfg: &'a Config,
    /// Branch, tag and key minting.
    pub ids: &'a mut Ids,
    /// The shard's timer wheel.
    pub timers: &'a mut TimerWheel<TimerKey>,
    /// Datagrams to send.
    pub out: &'a mut Outbox,
    /// Binding changes to journal.
    pub persist: &'a mut PersistLog,
    /// Events for the operator's log (`notice.rs`).
    pub notices: &'a mut Vec<crate::core::notice::Notice>,
    /// Finished public calls' records (`cdr.rs`).
    pub cdrs: &'a mut Vec<crate::core::cdr::Cdr>,
    /// The shard's load level: what relayed responses tell clients that announce RFC 7339.
    pub overload: &'a mut crate::core::overload::Overload,
    /// The stream flows known open (`transport/flows.rs`); a branch that connects enters its
    /// flow (`transport/outbound.rs`).
    pub flows: &'a mut crate::core::transport::flows::Flows,
    /// What the message being handled came on (UDP for timers and restores).
    pub arrival: crate::core::transport::Transport,
}
