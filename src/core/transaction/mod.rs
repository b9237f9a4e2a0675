//! RFC 3261 §17 transactions (with RFC 6026), one file per figure.
//!
//! Each machine tracks only its state and its timers; the bytes it sends and retransmits belong
//! to its owner (the proxy's call context), which acts on the verdicts the machines return. That
//! keeps the machines small enough to embed by value in a call, and testable edge by edge.
//! Transaction matching (§17.1.3, §17.2.3) lives with the owner, which knows the keys.

pub mod client_invite;
pub mod client_non_invite;
pub mod server_invite;
pub mod server_non_invite;
pub mod timers;

pub use timers::{Sched, Timer, TimerValues, TxnSlot, LINGER_GRID};

#[cfg(test)]
mod tests;
