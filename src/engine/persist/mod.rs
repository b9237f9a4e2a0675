//! Persistence of registrar bindings (ARCHITECTURE.md §7, DECISIONS.md "Registrar and
//! persistence").
//!
//! [`journal`] is the storage: a per-shard append-only file of key → value upserts and deletes
//! that the shard writes to the kernel before it sends the answers depending on them, and that a
//! persistence thread fsyncs in groups. The binding encoding and the shard-side wiring live with
//! the registrar and the shard loop. [`lock`] keeps a second process out of the directory.

pub mod journal;
pub mod lock;

pub use journal::{Doorbell, Journal, SyncHandle};
pub use lock::{lock_dir, DirLock, LockError};
