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

/// A fixed-bucket histogram of integer observations (microseconds, datagrams), kept as plain
/// `u64`s by the one thread that observes. `buckets[i]` counts observations `<= bounds[i]` and
/// `> bounds[i - 1]` (not cumulative); observations above the last bound count only in `count`
/// (the `+Inf` bucket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Histogram<const B: usize> {
    /// Observations per bucket (not cumulative).
    pub buckets: [u64; B],
    /// Observations.
    pub count: u64,
    /// Sum of the observations.
    pub sum: u64,
}

impl<const B: usize> Default for Histogram<B> {
    fn default() -> Self {
        Self {
            buckets: [0; B],
            count: 0,
            sum: 0,
        }
    }
}

impl<const B: usize> Histogram<B> {
    /// Records `value` against the ascending upper `bounds`.
    pub fn observe(&mut self, bounds: &[u64; B], value: u64) {
        let i = bounds.partition_point(|&b| b < value);
        if let Some(bucket) = self.buckets.get_mut(i) {
            *bucket += 1;
        }
        self.count += 1;
        self.sum = self.sum.wrapping_add(value);
    }
}

/// A [`Histogram`] as published for other threads (relaxed stores by its one writer).
#[derive(Debug)]
pub struct PublishedHistogram<const B: usize> {
    buckets: Published<B>,
    count: AtomicU64,
    sum: AtomicU64,
}

impl<const B: usize> Default for PublishedHistogram<B> {
    fn default() -> Self {
        Self {
            buckets: Published::default(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

impl<const B: usize> PublishedHistogram<B> {
    /// Stores the histogram (its one writer only).
    pub fn store(&self, h: &Histogram<B>) {
        self.buckets.store(h.buckets);
        self.count.store(h.count, Ordering::Relaxed);
        self.sum.store(h.sum, Ordering::Relaxed);
    }

    /// Reads the histogram (any thread).
    pub fn load(&self) -> Histogram<B> {
        Histogram {
            buckets: self.buckets.load(),
            count: self.count.load(Ordering::Relaxed),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds_and_publish_whole() {
        const BOUNDS: [u64; 3] = [1, 10, 100];
        let mut h = Histogram::<3>::default();
        for v in [0, 1, 2, 10, 11, 100, 101, 5000] {
            h.observe(&BOUNDS, v);
        }
        assert_eq!(h.buckets, [2, 2, 2]);
        assert_eq!(h.count, 8);
        assert_eq!(h.sum, 5225);
        let p = PublishedHistogram::<3>::default();
        p.store(&h);
        assert_eq!(p.load(), h);
    }
}
