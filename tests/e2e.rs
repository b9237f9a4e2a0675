//! End-to-end tests: the real `sipfork` binary on 127.0.0.1 with a generated configuration,
//! driven over UDP and its admin API, on both I/O backends (ARCHITECTURE.md §8).
//!
//! - `basics`: start-up, OPTIONS ping, `/health`, `/metrics` (backend per shard), clean stop on
//!   SIGTERM and SIGINT with the journal flushed.
//! - `cli`: `check-config` on good and bad files, a bad `--config` that must not start, the
//!   `devices` command against a running instance.
//!
//! Each appliance gets its own free ports and scratch directory, so the tests run in parallel.

#[path = "e2e/basics.rs"]
mod basics;
#[path = "e2e/cli.rs"]
mod cli;
#[path = "e2e/harness.rs"]
mod harness;
#[path = "e2e/phone.rs"]
mod phone;
