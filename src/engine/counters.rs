//! Plain `u64` counter structs that shard threads publish and other threads read without locks.
//!
//! [`counters!`] declares a struct of named `u64` counters together with its field names and an
//! array view; [`Published`] is the matching row of atomics a shard stores into once per loop
//! turn (relaxed stores to a line only a metrics reader touches) and anyone snapshots. A snapshot
//! is consistent per counter, not across counters, which is all metrics need.

use std::sync::atomic::{AtomicU64, Ordering};

/// Declares a `Copy` struct of `pub` `u64` counters with `NAMES`, `to_array` and `from_array`.
macro_rules! counters {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name { $($(#[$fmeta])* pub $field: u64,)* }

        impl $name {
            /// Field names, in declaration order (metric names).
            pub const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];
            /// Number of counters.
            pub const LEN: usize = Self::NAMES.len();

            /// The counters in declaration order.
            pub fn to_array(&self) -> [u64; Self::LEN] {
                [$(self.$field),*]
            }

            /// Rebuilds the struct from `to_array`'s layout.
            pub fn from_array(a: [u64; Self::LEN]) -> Self {
                let [$($field),*] = a;
                Self { $($field),* }
            }
        }
    };
}
pub(crate) use counters;

/// A row of atomics mirroring a counter struct of `N` fields.
#[derive(Debug)]
pub struct Published<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Published<N> {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl<const N: usize> Published<N> {
    /// Stores every counter (the owning shard only).
    pub fn store(&self, values: [u64; N]) {
        for (cell, v) in self.0.iter().zip(values) {
            cell.store(v, Ordering::Relaxed);
        }
    }

    /// Reads every counter (any thread).
    pub fn load(&self) -> [u64; N] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}
