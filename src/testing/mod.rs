//! Test support shared by `tests/`, `benches/` and `fuzz/` (compiled with the `testing` feature).
//!
//! Code here may panic: a panic is how a test or a fuzz target reports a broken invariant.
//!
//! - [`sim`]: the proxy's shard cores, scripted phones and a seeded network on virtual time.
//! - [`phone`]: the scripted phone.
//! - [`sip_checks`]: invariant checks on parsed messages.
//! - [`build_checks`]: what the builder writes parses back to the fields it was built from.

pub mod build_checks;
pub mod phone;
pub mod sim;
pub mod sip_checks;
