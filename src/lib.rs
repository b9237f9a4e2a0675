//! sipfork: a carrier-edge SIP forking proxy and registrar.
//!
//! One extension number, many devices: a call to the extension rings every registered device (or
//! rings them in q-value groups), the first answer wins, and every other branch is cancelled.
//!
//! # Layout
//! - [`sip`]: zero-copy parser and splicing builder for SIP messages. No I/O.
//! - [`core`]: the sans-IO state machines (registrar, transactions, proxy). They take
//!   `(now, datagram from address)` and return datagrams to send plus the next timer deadline.
//! - [`engine`]: the thin layer around the core: pinned shard threads, UDP backends (io_uring,
//!   recvmmsg), cross-shard mailboxes, the binding journals, loop counters.
//! - [`config`]: TOML configuration, validated with errors that name the key and line.
//! - [`app`]: the appliance: command line, configuration → journals → engine with one core per
//!   shard → persistence thread → admin listener, and the clean stop on SIGTERM/SIGINT.
//! - [`time`]: time as a value ([`time::Instant`] in microseconds); the core never reads a clock.
//! - `testing` (feature `testing`): invariant checks and harnesses shared by tests, benches, fuzz.
#![warn(missing_docs)]

/// The unit tests run on the `sipfork` binary's allocator, jemalloc (`src/main.rs`), so that
/// `engine::os` can test what the binary relies on. Benches and examples keep their own (some
/// count allocations).
#[cfg(all(test, target_os = "linux"))]
#[global_allocator]
static TEST_ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod app;
pub mod config;
pub mod core;
pub mod engine;
pub(crate) mod simd;
pub mod sip;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
