//! Test support shared by `tests/`, `benches/` and `fuzz/` (compiled with the `testing` feature).
//!
//! Code here may panic: a panic is how a test or a fuzz target reports a broken invariant.
//!
//! - [`sim`]: the proxy's shard cores, scripted phones and a seeded network on virtual time.
//! - [`phone`]: the scripted phone.
//! - [`sip_checks`]: invariant checks on parsed messages.
//! - [`forked_call`]: a whole 3-way forked call through one core, for the core bench and seeds.
//! - [`core_fuzz`]: the `core_datagrams` fuzz target: datagram sequences into a core.
//! - [`seq_fuzz`]: the `core_sequences` fuzz target: whole conversations of scripted phones
//!   through one or two cores on a lossy network; every call ends.
//! - [`build_checks`]: what the builder writes parses back to the fields it was built from.
//! - [`ws_fuzz`]: the `ws_framer` fuzz target: the WebSocket codec fed a stream cut into reads.

pub mod build_checks;
pub mod core_fuzz;
pub mod forked_call;
pub mod phone;
pub mod seq_fuzz;
pub mod sim;
pub mod sip_checks;
pub mod ws_fuzz;
