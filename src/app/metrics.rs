//! `GET /metrics`: every shard's core and journal counters, the engine's per-shard I/O, loop and
//! mailbox counters (labelled with the shard's backend), and the persistence thread's, rendered
//! as Prometheus text format 0.0.4.
//!
//! Samples of one metric name are grouped under a single `# HELP`/`# TYPE` header, in the order
//! the names first appear, as the format requires.

use std::collections::HashMap;
use std::fmt::Write;

use crate::core::metrics::{MetricKind, MetricSink, Sample};
use crate::engine::io::IoStats;
use crate::engine::mailbox::MailboxStats;
use crate::engine::shard::{LoopStats, ShardSnapshot};

/// Adds the engine's counters of every shard to `sink` (names `sipfork_io_*_total`,
/// `sipfork_loop_*_total`, `sipfork_mailbox_*_total`, and `sipfork_shard_info` carrying the
/// backend).
pub fn export_engine(snapshots: &[ShardSnapshot], sink: &mut MetricSink) {
    for s in snapshots {
        let shard = s.shard.0.to_string();
        let labels = [("shard", shard.as_str()), ("backend", s.backend)];
        sink.gauge(
            "sipfork_shard_info",
            "One per shard; the backend label names its UDP I/O backend",
            &labels,
            1,
        );
        let groups: [(&str, &[&str], Vec<u64>); 3] = [
            ("io", IoStats::NAMES, s.io.to_array().to_vec()),
            ("loop", LoopStats::NAMES, s.looping.to_array().to_vec()),
            (
                "mailbox",
                MailboxStats::NAMES,
                s.mailbox.to_array().to_vec(),
            ),
        ];
        for (group, names, values) in groups {
            for (name, value) in names.iter().zip(values) {
                sink.samples.push(Sample {
                    name: leak_name(group, name),
                    help: engine_help(group),
                    kind: MetricKind::Counter,
                    labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
                    value,
                });
            }
        }
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
        _ => "Cross-shard mailbox counter (see engine::mailbox::MailboxStats)",
    }
}

/// Renders samples as Prometheus text.
pub fn render(samples: &[Sample]) -> String {
    let mut order: Vec<&'static str> = Vec::new();
    let mut families: HashMap<&'static str, Vec<&Sample>> = HashMap::new();
    for s in samples {
        families
            .entry(s.name)
            .or_insert_with(|| {
                order.push(s.name);
                Vec::new()
            })
            .push(s);
    }
    let mut out = String::with_capacity(samples.len() * 64);
    for name in order {
        let family = &families[name];
        let first = family[0];
        let kind = match first.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        let _ = writeln!(out, "# HELP {name} {}", escape_help(first.help));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in family {
            out.push_str(name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", s.value);
        }
    }
    out
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
        let text = render(&sink.samples);
        assert_eq!(
            text,
            "# HELP a_total A\n# TYPE a_total counter\na_total{shard=\"0\"} 1\n\
             a_total{shard=\"1\",x=\"q\\\"uote\"} 2\n\
             # HELP b B with \\\\ and\\nnewline\n# TYPE b gauge\nb 7\n"
        );
    }

    #[test]
    fn engine_counters_carry_shard_and_backend() {
        let mut snap = ShardSnapshot {
            shard: ShardId(1),
            backend: "io_uring",
            ..Default::default()
        };
        snap.io.rx_datagrams = 42;
        let mut sink = MetricSink::default();
        export_engine(&[snap], &mut sink);
        let text = render(&sink.samples);
        assert!(text.contains("sipfork_shard_info{shard=\"1\",backend=\"io_uring\"} 1\n"));
        assert!(
            text.contains("sipfork_io_rx_datagrams_total{shard=\"1\",backend=\"io_uring\"} 42\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE sipfork_loop_turns_total counter\n"));
        assert!(text.contains("sipfork_mailbox_sent_total{"));
    }
}
