//! `GET /metrics`: every shard's core and journal counters, the engine's per-shard I/O, loop and
//! mailbox counters (labelled with the shard's backend) and histograms, and the persistence
//! thread's, exposed in the Prometheus text format 0.0.4 through the `prometheus-client` crate.
//!
//! The core writes plain samples into its [`MetricSink`] (it stays sans-IO and knows nothing of
//! Prometheus); [`Exposition`] groups them into metric families, in the order the names first
//! appear, and hands them to a `prometheus-client` [`Collector`] for encoding. The same families
//! describe themselves for `docs/metrics.md` ([`Exposition::reference`]).

use std::collections::HashMap;
use std::fmt::Write;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::core::metrics::{MetricKind, MetricSink, Sample};
use crate::engine::io::IoStats;
use crate::engine::mailbox::MailboxStats;
use crate::engine::shard::{LoopStats, ShardSnapshot, BATCH_BOUNDS, TURN_US_BOUNDS};

/// The `Content-Type` of what [`Exposition::render`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// One sample's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A counter.
    Counter(u64),
    /// A gauge.
    Gauge(u64),
    /// A gauge of seconds.
    Seconds(f64),
    /// `(upper bound, count in this bucket alone)` per bucket, the count and the sum.
    #[allow(missing_docs)]
    Histogram {
        buckets: Vec<(f64, u64)>,
        count: u64,
        sum: f64,
    },
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: a name, its help, type and samples.
#[derive(Clone, Debug)]
struct Family {
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

/// Samples grouped into families, ready to encode.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    order: Vec<&'static str>,
    families: HashMap<&'static str, Family>,
}

/// One line of the metrics reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Described {
    /// Name as exposed (with `_total` for counters).
    pub name: &'static str,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// Label names.
    pub labels: Vec<&'static str>,
    /// Help text.
    pub help: &'static str,
}

impl Exposition {
    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        labels: Labels,
        value: Value,
    ) {
        let family = self.families.entry(name).or_insert_with(|| {
            self.order.push(name);
            Family {
                help,
                kind,
                samples: Vec::new(),
            }
        });
        family.samples.push((labels, value));
    }

    /// Adds what a [`MetricSink`] collected.
    pub fn add_samples(&mut self, samples: impl IntoIterator<Item = Sample>) {
        for s in samples {
            let (kind, value) = match s.kind {
                MetricKind::Counter => (MetricType::Counter, Value::Counter(s.value)),
                MetricKind::Gauge => (MetricType::Gauge, Value::Gauge(s.value)),
            };
            self.push(s.name, s.help, kind, s.labels, value);
        }
    }

    /// Adds one sample (the family's type follows from the value).
    pub fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        value: Value,
    ) {
        self.push(name, help, value.metric_type(), own(labels), value);
    }

    /// Adds a histogram sample from integer `bounds` and per-bucket counts; `per_unit` integer
    /// units make one exposed unit (1e6 for µs → seconds, 1 for counts).
    #[allow(clippy::too_many_arguments)]
    pub fn histogram<const B: usize>(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        bounds: &[u64; B],
        h: &crate::engine::counters::Histogram<B>,
        per_unit: f64,
    ) {
        // Per-bucket counts: the encoder accumulates them.
        let mut buckets: Vec<(f64, u64)> = bounds
            .iter()
            .zip(h.buckets)
            .map(|(&le, n)| (le as f64 / per_unit, n))
            .collect();
        let above = h.count.saturating_sub(h.buckets.iter().sum());
        buckets.push((f64::INFINITY, above));
        let value = Value::Histogram {
            buckets,
            count: h.count,
            sum: h.sum as f64 / per_unit,
        };
        self.push(name, help, MetricType::Histogram, own(labels), value);
    }

    /// Prometheus text format 0.0.4, encoded by `prometheus-client`.
    pub fn render(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing into a String cannot fail; a family the encoder refused would be a bug here.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }

    /// Every family: its exposed name, type, label names and help (for `docs/metrics.md`).
    pub fn reference(&self) -> Vec<Described> {
        self.order
            .iter()
            .map(|name| {
                let f = &self.families[name];
                let mut labels: Vec<&'static str> = Vec::new();
                for (l, _) in &f.samples {
                    for (k, _) in l {
                        if !labels.contains(k) {
                            labels.push(k);
                        }
                    }
                }
                Described {
                    name,
                    kind: match f.kind {
                        MetricType::Counter => "counter",
                        MetricType::Histogram => "histogram",
                        _ => "gauge",
                    },
                    labels,
                    help: f.help,
                }
            })
            .collect()
    }
}

fn own(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Value {
    fn metric_type(&self) -> MetricType {
        match self {
            Value::Counter(_) => MetricType::Counter,
            Value::Gauge(_) | Value::Seconds(_) => MetricType::Gauge,
            Value::Histogram { .. } => MetricType::Histogram,
        }
    }
}

/// One sample handed to the encoder as a metric of its own.
#[derive(Debug)]
struct Encoded<'a>(&'a Value);

impl EncodeMetric for Encoded<'_> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self.0 {
            Value::Counter(v) => encoder.encode_counter::<NoLabelSet, u64, u64>(v, None),
            Value::Gauge(v) => encoder.encode_gauge(v),
            Value::Seconds(v) => encoder.encode_gauge(v),
            Value::Histogram {
                buckets,
                count,
                sum,
            } => encoder.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None),
        }
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for name in &self.order {
            let family = &self.families[name];
            // The encoder appends `_total` to counters itself.
            let base = match family.kind {
                MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
                _ => name,
            };
            let mut metric = encoder.encode_descriptor(base, family.help, None, family.kind)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                Encoded(value).encode(sample)?;
            }
        }
        Ok(())
    }
}

/// `sipfork_steering{state}`: 1 for the state datagram steering is in. With the per-shard
/// `sipfork_handoffs_total` and `sipfork_io_rx_datagrams_total` it gives the hand-offs per
/// datagram that steering exists to bring to ~0.
pub fn export_steering(state: &crate::engine::steer::SteeringState, out: &mut Exposition) {
    out.add(
        "sipfork_steering",
        "Kernel steering of datagrams to their owner shard: 1 on the state it is in (kernel: the reuseport program chooses; off: not asked for or one shard; unavailable: the kernel refused it, or io = xdp bypasses it; see the log)",
        &[("state", state.name())],
        Value::Gauge(1),
    );
}

/// `sipfork_heap_in_use_bytes`: the bytes the allocator has handed out and not had back
/// (jemalloc `stats.allocated`), and `sipfork_heap_resident_bytes`: the allocator's pages that
/// hold data (`stats.resident`, freed pages not yet purged included). Resident memory also counts
/// the journal's mapped pages, so a soak compares these to tell live state from allocator
/// retention. Absent where the allocator gives no statistics.
pub fn export_heap(out: &mut Exposition) {
    let Some(heap) = crate::engine::os::heap_stats() else {
        return;
    };
    out.add(
        "sipfork_heap_in_use_bytes",
        "Heap bytes in use (jemalloc stats.allocated); unlike resident memory it falls when state is freed",
        &[],
        Value::Gauge(heap.in_use),
    );
    out.add(
        "sipfork_heap_resident_bytes",
        "Resident bytes of the allocator's pages (jemalloc stats.resident): the heap in use plus freed pages not yet purged",
        &[],
        Value::Gauge(heap.resident),
    );
}

/// Adds the engine's counters and histograms of every shard (names `sipfork_io_*_total`,
/// `sipfork_loop_*_total`, `sipfork_mailbox_*_total`, `sipfork_loop_turn_seconds`,
/// `sipfork_loop_batch_size`, and `sipfork_shard_info` carrying the backend).
pub fn export_engine(snapshots: &[ShardSnapshot], out: &mut Exposition) {
    for s in snapshots {
        let shard = s.shard.0.to_string();
        let labels = [("shard", shard.as_str()), ("backend", s.backend)];
        out.add(
            "sipfork_shard_info",
            "One per shard; the backend label names its UDP I/O backend",
            &labels,
            Value::Gauge(1),
        );
        let groups: [(&str, &[&str], Vec<u64>); 4] = [
            ("io", IoStats::NAMES, s.io.to_array().to_vec()),
            ("loop", LoopStats::NAMES, s.looping.to_array().to_vec()),
            (
                "mailbox",
                MailboxStats::NAMES,
                s.mailbox.to_array().to_vec(),
            ),
            (
                "tcp",
                crate::engine::stream::StreamStats::NAMES,
                s.streams.to_array().to_vec(),
            ),
        ];
        let mut sink = MetricSink::default();
        for (group, names, values) in groups {
            for (name, value) in names.iter().zip(values) {
                sink.counter(leak_name(group, name), engine_help(group), &labels, value);
            }
        }
        out.add_samples(sink.samples);
        let shard_only = [("shard", shard.as_str())];
        out.histogram(
            "sipfork_loop_turn_seconds",
            "Time a shard loop turn worked (input, letters, control jobs, timers, journal write-out, sends)",
            &shard_only,
            &TURN_US_BOUNDS,
            &s.turn_us,
            1e6,
        );
        out.histogram(
            "sipfork_loop_batch_size",
            "Datagrams and letters handled in one busy loop turn",
            &shard_only,
            &BATCH_BOUNDS,
            &s.batch,
            1.0,
        );
    }
}

/// `sipfork_<group>_<name>_total`, interned: metric names are a fixed, small set, so each is
/// allocated once per process rather than per scrape.
fn leak_name(group: &str, name: &str) -> &'static str {
    use std::sync::{Mutex, OnceLock, PoisonError};
    static NAMES: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let full = format!("sipfork_{group}_{name}_total");
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    names
        .entry(full)
        .or_insert_with_key(|k| Box::leak(k.clone().into_boxed_str()))
}

fn engine_help(group: &str) -> &'static str {
    match group {
        "io" => "UDP backend counter of the shard (see engine::io::IoStats)",
        "loop" => "Shard loop counter (see engine::shard::LoopStats)",
        "tcp" => "TCP/TLS connection counter of the shard (see engine::stream::StreamStats)",
        _ => "Cross-shard mailbox counter (see engine::mailbox::MailboxStats)",
    }
}

/// `docs/metrics.md`: every metric family `families` holds, as a Markdown reference.
pub fn reference_markdown(families: &[Described]) -> String {
    let mut out = String::from(
        "# Metrics reference\n\n\
         Generated from the code by `sipfork metrics-doc` (a test fails when this file is not \
         current; `sipfork metrics-doc > docs/metrics.md` regenerates it). Every metric is served \
         by `GET /metrics` on the admin listener (`[server] admin`) in the Prometheus text format \
         0.0.4. Per-shard metrics carry a `shard` label; `reason` labels enumerate every reason \
         the code counts (all are exported, zero or not). Journal metrics appear only with \
         `[server] data_dir`.\n\n\
         | metric | type | labels | meaning |\n| --- | --- | --- | --- |\n",
    );
    for d in families {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            d.name,
            d.kind,
            if d.labels.is_empty() {
                "—".to_owned()
            } else {
                d.labels
                    .iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            d.help.replace('|', "\\|")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::shard::ShardId;

    #[test]
    fn families_are_grouped_under_one_header_with_escaped_labels() {
        let mut sink = MetricSink::default();
        sink.counter("a_total", "A", &[("shard", "0")], 1);
        sink.gauge("b", "B with \\ and\nnewline", &[], 7);
        sink.counter("a_total", "A", &[("shard", "1"), ("x", "q\"uote")], 2);
        let mut e = Exposition::default();
        e.add_samples(sink.samples);
        let text = e.render();
        assert_eq!(
            text,
            "# HELP a_total A\n# TYPE a_total counter\na_total{shard=\"0\"} 1\n\
             a_total{shard=\"1\",x=\"q\\\"uote\"} 2\n\
             # HELP b B with \\\\ and\\nnewline\n# TYPE b gauge\nb 7\n"
        );
    }

    #[test]
    fn engine_counters_carry_shard_and_backend_and_histograms_are_cumulative() {
        let mut snap = ShardSnapshot {
            shard: ShardId(1),
            backend: "io_uring",
            ..Default::default()
        };
        snap.io.rx_datagrams = 42;
        snap.batch.observe(&BATCH_BOUNDS, 1);
        snap.batch.observe(&BATCH_BOUNDS, 3);
        snap.batch.observe(&BATCH_BOUNDS, 5000);
        snap.turn_us.observe(&TURN_US_BOUNDS, 7);
        let mut e = Exposition::default();
        export_engine(&[snap], &mut e);
        let text = e.render();
        assert!(text.contains("sipfork_shard_info{shard=\"1\",backend=\"io_uring\"} 1\n"));
        assert!(
            text.contains("sipfork_io_rx_datagrams_total{shard=\"1\",backend=\"io_uring\"} 42\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE sipfork_loop_turns_total counter\n"));
        assert!(text.contains("sipfork_mailbox_sent_total{"));
        assert!(
            text.contains("# TYPE sipfork_loop_batch_size histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("sipfork_loop_batch_size_bucket{shard=\"1\",le=\"1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("le=\"4\"} 2\n"), "{text}");
        assert!(text.contains("le=\"1024\"} 2\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 3\n"), "{text}");
        assert!(
            text.contains("sipfork_loop_batch_size_count{shard=\"1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("sipfork_loop_batch_size_sum{shard=\"1\"} 5004"),
            "{text}"
        );
        assert!(text.contains("sipfork_loop_turn_seconds_bucket{"), "{text}");
    }
}
