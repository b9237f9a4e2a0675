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

/// The allocator of every binary built on this crate (sipfork, its tests, the harness): jemalloc.
///
/// A proxy's heap is mostly message-sized buffers that live from milliseconds to Timer J/K's
/// 32 s. glibc's malloc keeps them in one contiguous heap per thread and never returns a free
/// page inside it; when the traffic's message sizes shift (every Call-ID growing a digit, say), the
/// new sizes do not fit the old holes, the heap grows at its top while the holes are still
/// pinned by live neighbours, and the resident high-water mark stays for the life of the process
/// (the soak's one-time RSS step at 34 minutes, `loadtest/README.md` run 6). jemalloc keeps each
/// size class on its own pages and purges pages no class uses after its decay time, so resident
/// memory follows the live state. `engine::os::heap_in_use` reads its statistics. Fuzz builds
/// (`cfg(fuzzing)`) keep the system allocator, which the sanitizers instrument.
#[cfg(all(target_os = "linux", not(fuzzing)))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

pub mod app;
pub mod config;
pub mod core;
pub mod engine;
pub(crate) mod simd;
pub mod sip;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
