//! Test support shared by `tests/`, `benches/` and `fuzz/` (compiled with the `testing` feature).
//!
//! Code here may panic: a panic is how a test or a fuzz target reports a broken invariant.

pub mod sip_checks;
