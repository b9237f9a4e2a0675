//! Several harness processes against one proxy: `--instance i/N` gives process `i` its own
//! block of extensions (and so of device ports), its own caller ports and `1/N` of the rate and
//! of the call limit; `merge` adds their results into one.
//!
//! Whole-run latencies merge exactly: every result carries its histograms as `(value, count)`
//! pairs (`histograms`), which are added. Per-second latencies of the merged timeline are
//! approximate (counts added, p50 weighted by count, p99/p99.9/max the largest of the
//! instances'); counters, verdicts, races and registration are added. The proxy's CPU is what the
//! instance with the longest window measured (each measured the same proxy), per call over every
//! instance's calls; the harness's CPU is the sum of the instances'.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::metrics::Summary;
use crate::result::{Cpu, Point, RunResult};
use crate::scenario::Scenario;

/// Parses `i/N` (`0 ≤ i < N ≤ 1024`).
pub fn parse_instance(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("--instance {text:?}: want i/N with 0 ≤ i < N, e.g. 0/4");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let (i, n): (u32, u32) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n || n > 1024 {
        return Err(bad());
    }
    Ok((i, n))
}

/// Narrows `s` to instance `i` of `n`: the `i`-th of `n` contiguous blocks of extensions (their
/// devices keep the ports they have in the whole scenario), callers from `caller_port + i ×
/// callers`, rate and call limit divided by `n`, the seed offset by `i`.
pub fn apply_instance(s: &mut Scenario, i: u32, n: u32) -> Result<(), String> {
    let t = &mut s.topology;
    if t.extensions < n {
        return Err(format!(
            "--instance {i}/{n}: {} extensions cannot be split {n} ways",
            t.extensions
        ));
    }
    let (all, per, rem) = (t.extensions, t.extensions / n, t.extensions % n);
    let start = i * per + i.min(rem);
    let count = per + u32::from(i < rem);
    let callers_end = u64::from(t.caller_port) + u64::from(n) * u64::from(t.callers);
    let devices = u64::from(t.device_port)..u64::from(t.device_port) + u64::from(all * t.devices);
    if callers_end > 65_535
        || (u64::from(t.caller_port) < devices.end && callers_end > devices.start)
    {
        return Err(format!(
            "--instance {i}/{n}: {n} × {} caller ports from {} overlap the device ports",
            t.callers, t.caller_port
        ));
    }
    t.first_extension += start;
    t.extensions = count;
    t.device_port += (start * t.devices) as u16;
    t.caller_port += (i * t.callers) as u16;
    s.load.rate /= f64::from(n);
    s.load.max = s.load.max.div_ceil(u64::from(n));
    s.load.seed = s.load.seed.wrapping_add(u64::from(i));
    s.validate()
}

/// A histogram as `(value, count)` pairs (every recorded bucket, at its highest equivalent
/// value), what `RunResult::histograms` holds.
pub fn pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| {
            (
                h.highest_equivalent(v.value_iterated_to()),
                v.count_at_value(),
            )
        })
        .collect()
}

fn histogram(pairs: &[(u64, u64)]) -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .expect("invariant: static histogram bounds");
    for &(v, n) in pairs {
        let _ = h.record_n(v.clamp(1, 3_600_000_000), n);
    }
    h
}

fn add_map<K: Ord + Clone>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// Merges the results of N instances into one result labelled `label`.
pub fn merge(label: &str, runs: &[RunResult]) -> Result<RunResult, String> {
    let Some(first) = runs.first() else {
        return Err("merge: no results".into());
    };
    for r in runs {
        if r.histograms.is_empty() && r.load.started > 0 {
            return Err(format!(
                "merge: {} has no histograms (written by an older sipfork-load)",
                r.label
            ));
        }
        if r.scenario.name != first.scenario.name || r.load.kind != first.load.kind {
            return Err(format!(
                "merge: {} ran {} ({}), {} ran {} ({})",
                first.label,
                first.scenario.name,
                first.load.kind,
                r.label,
                r.scenario.name,
                r.load.kind
            ));
        }
    }
    let mut m = first.clone();
    m.label = label.to_owned();
    m.instance = Some(format!("merged {}", runs.len()));
    m.harness.command = format!(
        "merge {}",
        runs.iter()
            .map(|r| r.label.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let rest = &runs[1..];
    m.scenario.topology.extensions = runs.iter().map(|r| r.scenario.topology.extensions).sum();
    m.scenario.topology.first_extension = runs
        .iter()
        .map(|r| r.scenario.topology.first_extension)
        .min()
        .unwrap_or(0);
    m.scenario.load.rate = runs.iter().map(|r| r.scenario.load.rate).sum();
    m.scenario.load.max = runs.iter().map(|r| r.scenario.load.max).sum();
    m.started_unix_s = runs
        .iter()
        .map(|r| r.started_unix_s)
        .fold(f64::MAX, f64::min);
    // Load, registration, counters, verdicts: sums (and the longest durations).
    for r in rest {
        m.load.rate += r.load.rate;
        m.load.planned += r.load.planned;
        m.load.started += r.load.started;
        m.load.generation_s = m.load.generation_s.max(r.load.generation_s);
        m.load.window_s = m.load.window_s.max(r.load.window_s);
        let (g, h) = (&mut m.registration, &r.registration);
        g.devices += h.devices;
        g.registered += h.registered;
        g.failed += h.failed;
        g.clear_failed += h.clear_failed;
        g.failures_allowed &= h.failures_allowed;
        g.seconds = g.seconds.max(h.seconds);
        g.storm_ok += h.storm_ok;
        g.storm_failed += h.storm_failed;
        m.counters.add(&r.counters);
        m.harness.sockets += r.harness.sockets;
        add_map(&mut m.harness.io_counters, &r.harness.io_counters);
        m.partial |= r.partial;
        if let (Some(v), Some(w)) = (&mut m.verdicts, &r.verdicts) {
            v.calls += w.calls;
            v.ok += w.ok;
            v.failed += w.failed;
            add_map(&mut v.failures, &w.failures);
            for (race, c) in &w.races {
                let mine = v.races.entry(*race).or_default();
                mine.provoked += c.provoked;
                mine.scripted += c.scripted;
                mine.not_provoked += c.not_provoked;
                add_map(&mut mine.outcomes, &c.outcomes);
            }
            for (e, rec) in w.examples.iter().zip(&w.example_records) {
                if v.examples.len() < 10 {
                    v.examples.push(e.clone());
                    v.example_records.push(format!("[{}] {rec}", r.label));
                }
            }
        }
    }
    // Latencies: exact, from the histograms.
    let mut names: Vec<&String> = runs.iter().flat_map(|r| r.histograms.keys()).collect();
    names.sort();
    names.dedup();
    let mut histograms = BTreeMap::new();
    for name in names {
        let mut all: Vec<(u64, u64)> = Vec::new();
        for r in runs {
            all.extend(r.histograms.get(name).into_iter().flatten());
        }
        let h = histogram(&all);
        if name == crate::result::REGISTRATION_HISTOGRAM {
            m.registration.latency = Summary::of(&h, false);
        } else {
            m.latency_us.insert(name.clone(), Summary::of(&h, true));
        }
        histograms.insert(name.clone(), pairs(&h));
    }
    m.histograms = histograms;
    m.timeline = merge_timeline(runs);
    m.cpu = merge_cpu(runs, m.load.started);
    crate::result::judge_run(&mut m);
    Ok(m)
}

fn merge_timeline(runs: &[RunResult]) -> Vec<Point> {
    let len = runs.iter().map(|r| r.timeline.len()).max().unwrap_or(0);
    (0..len)
        .map(|t| {
            let mut p = Point {
                t: t as u32,
                ..Point::default()
            };
            let mut weighted: BTreeMap<String, f64> = BTreeMap::new();
            for q in runs.iter().filter_map(|r| r.timeline.get(t)) {
                p.counts.add(&q.counts);
                for (name, l) in &q.latency_us {
                    let e = p.latency_us.entry(name.clone()).or_default();
                    e.count += l.count;
                    e.p99 = e.p99.max(l.p99);
                    e.p999 = e.p999.max(l.p999);
                    e.max = e.max.max(l.max);
                    *weighted.entry(name.clone()).or_default() += l.p50 as f64 * l.count as f64;
                }
            }
            for (name, e) in &mut p.latency_us {
                e.p50 = (weighted[name] / e.count.max(1) as f64).round() as u64;
            }
            p
        })
        .collect()
}

fn merge_cpu(runs: &[RunResult], calls: u64) -> Option<Cpu> {
    let proxy = runs
        .iter()
        .filter_map(|r| r.cpu.as_ref())
        .max_by(|a, b| a.window_s.total_cmp(&b.window_s))?
        .clone();
    let harness_ms: f64 = runs
        .iter()
        .filter_map(|r| r.cpu.as_ref())
        .map(|c| c.harness_ms)
        .sum();
    let per = |ms: f64| ms * 1000.0 / calls.max(1) as f64;
    let pct = |ms: f64| 100.0 * ms / 1000.0 / proxy.window_s.max(1e-9);
    Some(Cpu {
        proxy_us_per_call: per(proxy.proxy_ms),
        harness_ms,
        harness_pct: pct(harness_ms),
        harness_us_per_call: per(harness_ms),
        other_pct: (proxy.machine_busy_pct - pct(proxy.proxy_ms) - pct(harness_ms)).max(0.0),
        ..proxy
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_split_extensions_ports_rate_and_limit_without_overlap() {
        assert_eq!(parse_instance("0/4"), Ok((0, 4)));
        assert_eq!(parse_instance("3/4"), Ok((3, 4)));
        for bad in ["4/4", "1", "a/2", "0/0", "-1/2"] {
            assert!(parse_instance(bad).is_err(), "{bad:?}");
        }
        let whole = Scenario::preset("fork3").unwrap();
        let parts: Vec<Scenario> = (0..3)
            .map(|i| {
                let mut s = whole.clone();
                apply_instance(&mut s, i, 3).unwrap();
                s
            })
            .collect();
        // 1000 extensions: 334 + 333 + 333, contiguous, devices on the ports they had.
        let ext: Vec<(u32, u32)> = parts
            .iter()
            .map(|s| (s.topology.first_extension, s.topology.extensions))
            .collect();
        assert_eq!(ext, vec![(1000, 334), (1334, 333), (1667, 333)]);
        assert_eq!(parts[1].topology.device_port, 20_000 + 334 * 3);
        let callers: Vec<u16> = parts.iter().map(|s| s.topology.caller_port).collect();
        assert_eq!(callers, vec![19_000, 19_001, 19_002]);
        let rate: f64 = parts.iter().map(|s| s.load.rate).sum();
        assert!((rate - whole.load.rate).abs() < 1e-9);
        assert!(parts.iter().map(|s| s.load.max).sum::<u64>() >= whole.load.max);
        let mut tiny = whole.clone();
        tiny.topology.extensions = 2;
        assert!(apply_instance(&mut tiny, 0, 3).is_err());
    }

    #[test]
    fn histogram_pairs_round_trip() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in [1, 5, 5, 1234, 999_999] {
            h.record(v).unwrap();
        }
        let back = histogram(&pairs(&h));
        assert_eq!(back.len(), 5);
        for q in [0.0, 0.5, 0.9, 1.0] {
            assert_eq!(back.value_at_quantile(q), h.value_at_quantile(q));
        }
    }
}
