//! The sans-IO core: registrar, transactions, proxy and policy as plain state machines.
//!
//! No sockets, threads, locks, clocks or OS randomness in here: every method takes `now` as a
//! value and writes what must be sent into an [`io::Outbox`]. The engine (`crate::engine`) owns
//! all of that, and the simulator (`crate::testing`) drives the same code on virtual time.
#![forbid(unsafe_code)]

pub mod ids;
pub mod io;
pub mod registrar;
pub mod shard;
pub mod slab;
pub mod timer;
pub mod transaction;

use crate::core::slab::Key;
use crate::core::transaction::{Timer, TxnSlot};

/// What a timer in the shard's wheel is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKey {
    /// A transaction timer of one of a call's transactions.
    Txn {
        /// The call.
        call: Key,
        /// Which of its transactions.
        slot: TxnSlot,
        /// Which RFC 3261 timer.
        timer: Timer,
    },
}
