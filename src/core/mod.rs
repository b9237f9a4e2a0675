//! The sans-IO core: registrar, transactions, proxy and policy as plain state machines.
//!
//! No sockets, threads, locks, clocks or OS randomness in here: every method takes `now` as a
//! value and writes what must be sent into an [`io::Outbox`]. The engine (`crate::engine`) owns
//! all of that, and the simulator (`crate::testing`) drives the same code on virtual time.
#![forbid(unsafe_code)]

pub mod io;
pub mod registrar;
pub mod shard;
pub mod timer;
