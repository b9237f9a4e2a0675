//! Counters the core keeps, and one way to export them.
//!
//! Each part of the core (dispatch, registrar, proxy) owns plain `u64` counters on its shard (no
//! atomics on the hot path) and writes them into a [`MetricSink`] when the engine asks; the
//! engine sums shards and renders Prometheus text. Every rejection and every drop is counted here
//! under a reason, so nothing the core refuses goes unseen.

/// Prometheus metric kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter,
    /// Value that goes up and down.
    Gauge,
}

/// One exported sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Metric name (`sipfork_...`).
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Kind.
    pub kind: MetricKind,
    /// Label pairs.
    pub labels: Vec<(&'static str, String)>,
    /// Value.
    pub value: u64,
}

/// Collects samples from the parts of a core.
#[derive(Default, Debug)]
pub struct MetricSink {
    /// Samples in the order they were written.
    pub samples: Vec<Sample>,
}

impl MetricSink {
    /// Adds a counter sample.
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: u64,
    ) {
        self.push(name, help, MetricKind::Counter, labels, value);
    }

    /// Adds a gauge sample.
    pub fn gauge(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: u64,
    ) {
        self.push(name, help, MetricKind::Gauge, labels, value);
    }

    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricKind,
        labels: &[(&'static str, &str)],
        value: u64,
    ) {
        self.samples.push(Sample {
            name,
            help,
            kind,
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            value,
        });
    }
}

/// A fixed set of counters indexed by a reason enum, exported as one labelled metric.
#[derive(Clone, Debug)]
pub struct ReasonCounters<const N: usize> {
    counts: [u64; N],
}

impl<const N: usize> Default for ReasonCounters<N> {
    fn default() -> Self {
        ReasonCounters { counts: [0; N] }
    }
}

impl<const N: usize> ReasonCounters<N> {
    /// Adds one under reason index `i`.
    pub fn bump(&mut self, i: usize) {
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
    }

    /// Count under reason index `i`.
    pub fn get(&self, i: usize) -> u64 {
        self.counts.get(i).copied().unwrap_or(0)
    }

    /// Writes one sample per reason (labels `reason=<name>`), named by `names`.
    pub fn export(
        &self,
        sink: &mut MetricSink,
        name: &'static str,
        help: &'static str,
        names: &[&'static str; N],
        extra: &[(&'static str, &str)],
    ) {
        for (i, reason) in names.iter().enumerate() {
            let mut labels: Vec<(&'static str, &str)> = extra.to_vec();
            labels.push(("reason", reason));
            sink.counter(name, help, &labels, self.counts[i]);
        }
    }
}
