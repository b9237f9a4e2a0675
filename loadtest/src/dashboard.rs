//! Dashboards: one self-contained HTML file per run, and a comparison page for several runs.
//!
//! Everything is inline (CSS, SVG plots, the result JSON in a `<script type="application/json">`
//! block for anyone who wants the numbers); the page fetches nothing and runs no script, so it
//! opens offline in any browser. Plots: throughput over time (started, completed, failed,
//! retransmissions per second), latency percentiles over time (p50/p99/p99.9 per second, log
//! scale), latency distributions (value at each percentile, percentile axis stretched towards the
//! tail), race outcomes, plus the summary tables.

use std::fmt::Write as _;

use crate::metrics::{Metric, Summary};
use crate::result::RunResult;

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One line of a chart.
struct Series {
    name: String,
    color: &'static str,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

impl Series {
    fn line(name: impl Into<String>, color: &'static str, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            color,
            points,
            dashed: false,
        }
    }

    fn dashed(name: impl Into<String>, color: &'static str, points: Vec<(f64, f64)>) -> Self {
        Series {
            dashed: true,
            ..Series::line(name, color, points)
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    /// log10 of microseconds, ticks labelled as durations.
    LogMicros,
    /// Percentile axis: x = -log10(1 - p/100), ticks 0, 90, 99, 99.9, ...
    Percentile,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A µs value for humans: `850 µs`, `1.25 ms`, `2.0 s`.
pub fn dur(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn transform(scale: Scale, v: f64) -> f64 {
    match scale {
        Scale::Linear => v,
        Scale::LogMicros => v.max(1.0).log10(),
        Scale::Percentile => -(1.0 - (v / 100.0).min(0.999_999)).log10(),
    }
}

fn ticks(scale: Scale, lo: f64, hi: f64) -> Vec<(f64, String)> {
    match scale {
        Scale::Linear => {
            let span = (hi - lo).max(1e-9);
            let raw = span / 5.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 5.0, 10.0]
                .iter()
                .map(|m| m * mag)
                .find(|s| span / s <= 6.0)
                .unwrap_or(mag * 10.0);
            let mut t = (lo / step).ceil() * step;
            let mut out = Vec::new();
            while t <= hi + step * 1e-9 && out.len() < 12 {
                let label = if step >= 1.0 {
                    format!("{t:.0}")
                } else {
                    format!("{t:.1}")
                };
                out.push((t, label));
                t += step;
            }
            out
        }
        Scale::LogMicros => (lo.floor() as i32..=hi.ceil() as i32)
            .map(|e| (f64::from(e), dur(10f64.powi(e))))
            .collect(),
        Scale::Percentile => ["0", "90", "99", "99.9", "99.99", "99.999", "99.9999"]
            .iter()
            .enumerate()
            .filter(|(i, _)| (*i as f64) <= hi.ceil().max(1.0))
            .map(|(i, l)| (i as f64, format!("{l}%")))
            .collect(),
    }
}

struct Chart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    x_scale: Scale,
    y_scale: Scale,
    series: Vec<Series>,
}

impl Chart<'_> {
    fn svg(&self) -> String {
        let (w, h) = (640.0, 300.0);
        // The legend sits right of the plot: room for the longest series name.
        let longest = self.series.iter().map(|s| s.name.chars().count()).max();
        let mr = (40.0 + 6.5 * longest.unwrap_or(0) as f64).clamp(150.0, 260.0);
        let (ml, mt, mb) = (70.0, 30.0, 45.0);
        let pts = self
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .map(|&(x, y)| (transform(self.x_scale, x), transform(self.y_scale, y)));
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        let mut out = String::new();
        let _ = write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" class=\"chart\">\
             <text x=\"{}\" y=\"18\" class=\"title\">{}</text>",
            ml,
            esc(self.title)
        );
        if x0 > x1 {
            let _ = write!(
                out,
                "<text x=\"{ml}\" y=\"80\" class=\"empty\">no data</text></svg>"
            );
            return out;
        }
        if self.y_scale == Scale::Linear {
            // Headroom, so that a flat series at the maximum does not hide in the frame's edge.
            y0 = y0.min(0.0);
            y1 += (y1 - y0) * 0.08;
        } else {
            y0 = y0.floor();
            y1 = y1.ceil().max(y0 + 1.0);
        }
        if self.x_scale == Scale::Percentile {
            x0 = 0.0;
            x1 = x1.ceil().max(1.0);
        }
        if x1 - x0 < 1e-9 {
            x1 = x0 + 1.0;
        }
        if y1 - y0 < 1e-9 {
            y1 = y0 + 1.0;
        }
        let px = |x: f64| ml + (x - x0) / (x1 - x0) * (w - ml - mr);
        let py = |y: f64| h - mb - (y - y0) / (y1 - y0) * (h - mt - mb);
        for (t, label) in ticks(self.y_scale, y0, y1) {
            let y = py(t);
            let _ = write!(
                out,
                "<line x1=\"{ml}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/>\
                 <text x=\"{}\" y=\"{:.1}\" class=\"tick\" text-anchor=\"end\">{}</text>",
                w - mr,
                ml - 6.0,
                y + 4.0,
                esc(&label)
            );
        }
        for (t, label) in ticks(self.x_scale, x0, x1) {
            let x = px(t);
            let _ = write!(
                out,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{mt}\" y2=\"{}\" class=\"grid\"/>\
                 <text x=\"{x:.1}\" y=\"{}\" class=\"tick\" text-anchor=\"middle\">{}</text>",
                h - mb,
                h - mb + 16.0,
                esc(&label)
            );
        }
        let _ = write!(
            out,
            "<rect x=\"{ml}\" y=\"{mt}\" width=\"{}\" height=\"{}\" class=\"frame\"/>\
             <text x=\"{}\" y=\"{}\" class=\"axis\" text-anchor=\"middle\">{}</text>\
             <text transform=\"translate(14 {}) rotate(-90)\" class=\"axis\" text-anchor=\"middle\">{}</text>",
            w - ml - mr,
            h - mt - mb,
            ml + (w - ml - mr) / 2.0,
            h - 8.0,
            esc(self.x_label),
            mt + (h - mt - mb) / 2.0,
            esc(self.y_label)
        );
        for (i, s) in self
            .series
            .iter()
            .filter(|s| !s.points.is_empty())
            .enumerate()
        {
            let d: Vec<String> = s
                .points
                .iter()
                .map(|&(x, y)| {
                    format!(
                        "{:.1},{:.1}",
                        px(transform(self.x_scale, x)),
                        py(transform(self.y_scale, y))
                    )
                })
                .collect();
            let _ = write!(
                out,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\"{}><title>{}</title></polyline>",
                d.join(" "),
                s.color,
                if s.dashed { " stroke-dasharray=\"5 3\"" } else { "" },
                esc(&s.name)
            );
            if s.points.len() == 1 {
                let (x, y) = s.points[0];
                let _ = write!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                    px(transform(self.x_scale, x)),
                    py(transform(self.y_scale, y)),
                    s.color
                );
            }
            let ly = mt + 14.0 + 16.0 * i as f64;
            let lx = w - mr + 10.0;
            let _ = write!(
                out,
                "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\"{}/>\
                 <text x=\"{}\" y=\"{}\" class=\"legend\">{}</text>",
                lx + 18.0,
                s.color,
                if s.dashed { " stroke-dasharray=\"5 3\"" } else { "" },
                lx + 22.0,
                ly + 4.0,
                esc(&s.name)
            );
        }
        out.push_str("</svg>");
        out
    }
}

fn bars(title: &str, rows: &[(String, u64, &'static str)]) -> String {
    if rows.is_empty() {
        return format!("<p class=\"sub\">{}: none in this run</p>", esc(title));
    }
    let (w, row_h, ml) = (640.0, 22.0, 250.0);
    let h = 40.0 + row_h * rows.len().max(1) as f64;
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" class=\"chart\">\
         <text x=\"10\" y=\"18\" class=\"title\">{}</text>",
        esc(title)
    );
    for (i, (label, n, color)) in rows.iter().enumerate() {
        let y = 30.0 + row_h * i as f64;
        let bw = (w - ml - 80.0) * (*n as f64) / max;
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">{}</text>\
             <rect x=\"{ml}\" y=\"{y}\" width=\"{bw:.1}\" height=\"{}\" fill=\"{color}\"/>\
             <text x=\"{:.1}\" y=\"{}\" class=\"tick\">{n}</text>",
            ml - 6.0,
            y + 14.0,
            esc(label),
            row_h - 6.0,
            ml + bw + 6.0,
            y + 14.0
        );
    }
    out.push_str("</svg>");
    out
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1340px}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #ddd}\
.sub{color:#666;margin-bottom:12px}table{border-collapse:collapse;margin:6px 0}\
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}\
td:first-child,th:first-child{text-align:left}.ok{color:#1a7f37;font-weight:600}\
.bad{color:#c62828;font-weight:600}.grid2{display:grid;grid-template-columns:1fr 1fr;gap:8px 18px}\
svg.chart{width:100%;max-width:680px;height:auto;background:#fff}svg .title{font-size:14px;font-weight:600}\
svg .tick{font-size:11px;fill:#444}svg .axis{font-size:12px;fill:#333}svg .legend{font-size:11px}\
svg .grid{stroke:#e6e6e6}svg .frame{fill:none;stroke:#999}svg .empty{font-size:13px;fill:#999}\
code{background:#f4f4f4;padding:1px 4px}";

fn page(title: &str, body: &str, data: &str) -> String {
    // `</` cannot appear inside the JSON block (it would end the script element).
    let data = data.replace("</", "<\\/");
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body>{body}\
         <script type=\"application/json\" id=\"result-data\">{data}</script></body></html>",
        esc(title)
    )
}

fn timeline_series(r: &RunResult, metric: Metric, palette: usize) -> Vec<Series> {
    let pick = |f: fn(&crate::result::PointLatency) -> u64| -> Vec<(f64, f64)> {
        r.timeline
            .iter()
            .filter_map(|p| {
                p.latency_us
                    .get(metric.name())
                    .map(|l| (f64::from(p.t), f(l) as f64))
            })
            .collect()
    };
    let base = metric.name().replace('_', " ");
    vec![
        Series::line(format!("{base} p50"), PALETTE[palette % 8], pick(|l| l.p50)),
        Series::line(
            format!("{base} p99"),
            PALETTE[(palette + 1) % 8],
            pick(|l| l.p99),
        ),
        Series::dashed(
            format!("{base} p99.9"),
            PALETTE[(palette + 2) % 8],
            pick(|l| l.p999),
        ),
    ]
}

fn summary_row(name: &str, s: &Summary) -> String {
    if s.count == 0 {
        return format!("<tr><td>{name}</td><td colspan=\"7\">—</td></tr>");
    }
    format!(
        "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        s.count,
        dur(s.min as f64),
        dur(s.p50 as f64),
        dur(s.p90 as f64),
        dur(s.p99 as f64),
        dur(s.p999 as f64),
        dur(s.max as f64)
    )
}

/// The percentile curve, up to the last percentile the sample size supports (1 − 1/count):
/// beyond it the curve would only repeat the maximum.
fn distribution(s: &Summary) -> Vec<(f64, f64)> {
    let top = 100.0 * (1.0 - 1.0 / s.count.max(1) as f64);
    let mut points: Vec<(f64, f64)> = s
        .distribution
        .iter()
        .filter(|&&(p, _)| p <= top)
        .map(|&(p, v)| (p, v as f64))
        .collect();
    if s.count > 0 {
        points.push((top.max(points.last().map_or(0.0, |p| p.0)), s.max as f64));
    }
    points
}

fn outcome_rows(r: &RunResult) -> Vec<(String, u64, &'static str)> {
    let mut rows = Vec::new();
    if let Some(v) = &r.verdicts {
        for (race, counts) in &v.races {
            for (i, (outcome, n)) in counts.outcomes.iter().enumerate() {
                let label = format!("{}: {}", snake(race), snake(outcome));
                let color = if snake(outcome) == "broken" {
                    "#c62828"
                } else {
                    PALETTE[i % 8]
                };
                rows.push((label, *n, color));
            }
        }
    }
    rows
}

fn snake<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The dashboard of one run.
pub fn run_page(r: &RunResult) -> String {
    let mut b = String::new();
    let ok = r.passed;
    let _ = write!(
        b,
        "<h1>{} — {}</h1><div class=\"sub\">{} · target {} ({}) · {} · {:.0}/s {} for {:.1} s · harness: {} thread(s), {}, coalescing {} µs{}</div>",
        esc(&r.label),
        esc(&r.scenario.name),
        esc(&r.scenario.description),
        esc(&r.target.address),
        esc(if r.target.name.is_empty() { &r.target.mode } else { &r.target.name }),
        esc(&r.load.kind),
        r.load.rate,
        esc(&r.load.arrival),
        r.load.generation_s,
        r.harness.threads,
        esc(&r.harness.io),
        r.harness.coalesce_us,
        r.harness
            .pin
            .as_ref()
            .map(|p| format!(", pinned to CPU {p}"))
            .unwrap_or_default()
            + if r.harness.spin { ", busy-polling" } else { "" }
    );
    let _ = write!(
        b,
        "<h2>Summary</h2><table><tr><th>started</th><th>passed</th><th>failed</th><th>success</th>\
         <th>proxy CPU / call</th><th>proxy CPU</th><th>harness CPU / call</th><th>retransmissions</th><th>lost (scenario)</th></tr>\
         <tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{:.3} %</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        r.load.started,
        r.verdicts.as_ref().map_or(r.registration.storm_ok, |v| v.ok),
        r.verdicts.as_ref().map_or(r.registration.storm_failed, |v| v.failed),
        if ok { "ok" } else { "bad" },
        r.success_pct,
        r.cpu.as_ref().map_or("—".into(), |c| format!("{:.1} µs", c.proxy_us_per_call)),
        r.cpu.as_ref().map_or("—".into(), |c| format!("{:.1} %", c.proxy_pct)),
        r.cpu.as_ref().map_or("—".into(), |c| format!("{:.1} µs", c.harness_us_per_call)),
        r.counters.retransmitted,
        r.counters.lost,
    );
    if r.partial {
        b.push_str("<p class=\"bad\">Interrupted: partial result (what was measured until the signal).</p>");
    }
    for why in &r.failed_because {
        let _ = write!(b, "<p class=\"bad\">Run failed: {}</p>", esc(why));
    }
    if let Some(v) = r.verdicts.as_ref().filter(|v| !v.failures.is_empty()) {
        b.push_str("<table><tr><th>failure</th><th>calls</th></tr>");
        for (f, n) in &v.failures {
            let _ = write!(
                b,
                "<tr><td class=\"bad\">{}</td><td>{n}</td></tr>",
                snake(f)
            );
        }
        b.push_str("</table>");
    }
    b.push_str("<h2>Throughput</h2><div class=\"grid2\">");
    let counts = |f: fn(&crate::metrics::Counts) -> u64| -> Vec<(f64, f64)> {
        r.timeline
            .iter()
            .map(|p| (f64::from(p.t), f(&p.counts) as f64))
            .collect()
    };
    let throughput = Chart {
        title: "per second (calls by intended start)",
        x_label: "seconds since load start",
        y_label: "per second",
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        series: vec![
            Series::line("started", PALETTE[0], counts(|c| c.started)),
            Series::line("completed", PALETTE[2], counts(|c| c.completed)),
            Series::line("failed", PALETTE[1], counts(|c| c.failed)),
            Series::dashed(
                "503 (shed, by arrival)",
                PALETTE[3],
                counts(|c| c.refused_503),
            ),
        ],
    };
    let datagrams = Chart {
        title: "harness datagrams per second",
        x_label: "seconds since load start",
        y_label: "datagrams / s",
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        series: vec![
            Series::line("sent", PALETTE[0], counts(|c| c.sent)),
            Series::line("received", PALETTE[2], counts(|c| c.received)),
            Series::line("retransmitted", PALETTE[3], counts(|c| c.retransmitted)),
            Series::dashed("lost (scenario)", PALETTE[1], counts(|c| c.lost)),
        ],
    };
    let _ = write!(
        b,
        "<div>{}</div><div>{}</div></div>",
        throughput.svg(),
        datagrams.svg()
    );
    b.push_str("<h2>Latency over time</h2><div class=\"grid2\">");
    let over_time = |title: &'static str, m: Metric| Chart {
        title,
        x_label: "seconds since load start",
        y_label: "latency",
        x_scale: Scale::Linear,
        y_scale: Scale::LogMicros,
        series: timeline_series(r, m, 0),
    };
    let first = if r.load.kind == "register" {
        over_time("REGISTER → 200", Metric::Register)
    } else {
        over_time("INVITE → first 180", Metric::Invite180)
    };
    let second = over_time(
        "CANCEL latency (winner's 200 → CANCEL at each loser)",
        Metric::CancelLatency,
    );
    let _ = write!(
        b,
        "<div>{}</div><div>{}</div></div>",
        first.svg(),
        second.svg()
    );
    b.push_str("<h2>Latency distributions</h2><table><tr><th>metric</th><th>count</th><th>min</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>");
    for m in Metric::ALL {
        b.push_str(&summary_row(&m.name().replace('_', " "), &r.latency(m)));
    }
    b.push_str("</table><div class=\"grid2\">");
    let dist = |title: &'static str, ms: &[Metric]| Chart {
        title,
        x_label: "percentile",
        y_label: "latency",
        x_scale: Scale::Percentile,
        y_scale: Scale::LogMicros,
        series: ms
            .iter()
            .enumerate()
            .map(|(i, &m)| {
                Series::line(
                    m.name().replace('_', " "),
                    PALETTE[i % 8],
                    distribution(&r.latency(m)),
                )
            })
            .collect(),
    };
    let _ = write!(
        b,
        "<div>{}</div><div>{}</div></div>",
        dist(
            "call setup",
            &[Metric::Invite100, Metric::Invite180, Metric::Invite200]
        )
        .svg(),
        dist(
            "cancel, register, harness lag",
            &[
                Metric::CancelLatency,
                Metric::Cancel487,
                Metric::Register,
                Metric::SendLag
            ]
        )
        .svg()
    );
    b.push_str("<h2>Races</h2>");
    if let Some(v) = &r.verdicts {
        if !v.races.is_empty() {
            b.push_str("<table><tr><th>race</th><th>scripted</th><th>provoked (on the wire)</th><th>outcomes</th></tr>");
            for (race, c) in &v.races {
                let outcomes: Vec<String> = c
                    .outcomes
                    .iter()
                    .map(|(o, n)| format!("{} {n}", snake(o)))
                    .collect();
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    snake(race),
                    c.scripted,
                    c.provoked,
                    esc(&outcomes.join(", "))
                );
            }
            b.push_str("</table>");
        }
    }
    b.push_str(&bars("race outcomes", &outcome_rows(r)));
    b.push_str("<h2>Run</h2><table>");
    let mut row = |k: &str, v: String| {
        let _ = write!(
            b,
            "<tr><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
            k,
            esc(&v)
        );
    };
    row("command", r.harness.command.clone());
    row(
        "topology",
        format!(
            "{} extensions × {} devices, {} caller socket(s)",
            r.scenario.topology.extensions,
            r.scenario.topology.devices,
            r.scenario.topology.callers
        ),
    );
    row(
        "registration",
        format!(
            "{}/{} devices in {:.2} s, {} failed{}, {} clearing REGISTERs failed; REGISTER→final p50 {} p99 {}",
            r.registration.registered,
            r.registration.devices,
            r.registration.seconds,
            r.registration.failed,
            if r.registration.failures_allowed { " (allowed)" } else { "" },
            r.registration.clear_failed,
            dur(r.registration.latency.p50 as f64),
            dur(r.registration.latency.p99 as f64)
        ),
    );
    if let Some(c) = &r.cpu {
        row(
            "CPU window",
            format!(
                "{:.2} s; proxy PIDs {:?}: {:.0} ms ({:.1} %); harness {:.0} ms ({:.1} %); machine busy {:.1} %, of which other processes {:.1} %; UDP rcvbuf drops {}",
                c.window_s,
                c.proxy_pids,
                c.proxy_ms,
                c.proxy_pct,
                c.harness_ms,
                c.harness_pct,
                c.machine_busy_pct,
                c.other_pct,
                c.udp_rcvbuf_errors.map_or("?".into(), |n| n.to_string())
            ),
        );
    }
    row("harness I/O", format!("{:?}", r.harness.io_counters));
    if let Some(s) = &r.reflector_sizes {
        row("reflector sizes", format!("{s:?}"));
    }
    b.push_str("</table>");
    let data = serde_json::to_string(r).unwrap_or_default();
    page(&format!("{} — sipfork-load", r.label), &b, &data)
}

/// One line per run, in the run's palette colour, labelled with the run.
fn per_run(runs: &[RunResult], points: impl Fn(&RunResult) -> Vec<(f64, f64)>) -> Vec<Series> {
    runs.iter()
        .enumerate()
        .map(|(i, r)| Series::line(r.label.clone(), PALETTE[i % 8], points(r)))
        .collect()
}

/// A comparison page for several runs (same scenario at the same rate, typically).
pub fn compare_page(runs: &[RunResult]) -> String {
    let mut b = String::from("<h1>sipfork-load — comparison</h1>");
    b.push_str(&compare_body(runs));
    let data = serde_json::to_string(runs).unwrap_or_default();
    page("sipfork-load comparison", &b, &data)
}

/// The page of a rate sweep: the highest rate with zero failed calls (`knee`), CPU per call,
/// p99s and success against the rate, then the runs side by side as on a comparison page.
pub fn sweep_page(runs: &[RunResult], knee: Option<f64>) -> String {
    let mut b = String::from("<h1>sipfork-load — rate sweep</h1>");
    let _ = write!(
        b,
        "<div class=\"sub\">{} runs, {} calls/s to {} calls/s</div><p class=\"{}\">{}</p>",
        runs.len(),
        runs.first().map_or(0.0, |r| r.load.rate),
        runs.last().map_or(0.0, |r| r.load.rate),
        if knee.is_some() { "ok" } else { "bad" },
        match knee {
            Some(k) => format!(
                "Highest rate with zero failed calls (and every lower rate too): {k} calls/s"
            ),
            None => "No rate of the sweep passed every call.".to_owned(),
        }
    );
    let vs_rate = |title, y_label, y_scale, series| Chart {
        title,
        x_label: "calls per second (offered)",
        y_label,
        x_scale: Scale::Linear,
        y_scale,
        series,
    };
    let points = |f: &dyn Fn(&RunResult) -> Option<f64>| -> Vec<(f64, f64)> {
        runs.iter()
            .filter_map(|r| f(r).map(|v| (r.load.rate, v)))
            .collect()
    };
    let p99 = |m: Metric| {
        points(&|r| {
            let s = r.latency(m);
            (s.count > 0).then_some(s.p99 as f64)
        })
    };
    let charts = [
        vs_rate(
            "proxy CPU per call",
            "µs",
            Scale::Linear,
            vec![Series::line(
                "proxy",
                PALETTE[0],
                points(&|r| r.cpu.as_ref().map(|c| c.proxy_us_per_call)),
            )],
        ),
        vs_rate(
            "p99 latency",
            "latency",
            Scale::LogMicros,
            vec![
                Series::line("INVITE → 180 p99", PALETTE[1], p99(Metric::Invite180)),
                Series::line("CANCEL latency p99", PALETTE[2], p99(Metric::CancelLatency)),
                Series::line("REGISTER → 200 p99", PALETTE[3], p99(Metric::Register)),
            ],
        ),
        vs_rate(
            "calls that passed",
            "%",
            Scale::Linear,
            vec![Series::line(
                "success",
                PALETTE[4],
                points(&|r| Some(r.success_pct)),
            )],
        ),
    ];
    b.push_str("<h2>Against the rate</h2><div class=\"grid2\">");
    for c in &charts {
        let _ = write!(b, "<div>{}</div>", c.svg());
    }
    b.push_str("</div>");
    b.push_str(&compare_body(runs));
    let data = serde_json::to_string(runs).unwrap_or_default();
    page("sipfork-load rate sweep", &b, &data)
}

fn compare_body(runs: &[RunResult]) -> String {
    let mut b = String::new();
    let _ = write!(
        b,
        "<div class=\"sub\">{} runs</div><h2>Runs</h2><table><tr><th>run</th><th>target</th><th>scenario</th><th>rate</th>\
         <th>calls</th><th>success</th><th>proxy CPU / call</th><th>proxy CPU</th><th>INVITE→180 p50 / p99 / p99.9</th>\
         <th>CANCEL latency p50 / p99 / p99.9</th><th>retrans.</th></tr>",
        runs.len()
    );
    for r in runs {
        let t = |m: Metric| {
            let s = r.latency(m);
            if s.count == 0 {
                "—".to_owned()
            } else {
                format!(
                    "{} / {} / {}",
                    dur(s.p50 as f64),
                    dur(s.p99 as f64),
                    dur(s.p999 as f64)
                )
            }
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.0}/s</td><td>{}</td><td class=\"{}\">{:.3} %</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.label),
            esc(if r.target.name.is_empty() { &r.target.mode } else { &r.target.name }),
            esc(&r.scenario.name),
            r.load.rate,
            r.load.started,
            if r.success_pct >= 100.0 - 1e-9 { "ok" } else { "bad" },
            r.success_pct,
            r.cpu.as_ref().map_or("—".into(), |c| format!("{:.1} µs", c.proxy_us_per_call)),
            r.cpu.as_ref().map_or("—".into(), |c| format!("{:.1} %", c.proxy_pct)),
            t(Metric::Invite180),
            t(Metric::CancelLatency),
            r.counters.retransmitted
        );
    }
    b.push_str("</table>");
    let cpu: Vec<(String, u64, &'static str)> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.cpu.as_ref().map(|c| {
                (
                    r.label.clone(),
                    c.proxy_us_per_call.round() as u64,
                    PALETTE[i % 8],
                )
            })
        })
        .collect();
    b.push_str("<h2>Proxy CPU per call (µs)</h2>");
    b.push_str(&bars("proxy CPU per call, µs", &cpu));
    b.push_str("<h2>Latency distributions</h2><div class=\"grid2\">");
    for (title, m) in [
        ("INVITE → first 180", Metric::Invite180),
        ("CANCEL latency", Metric::CancelLatency),
        ("INVITE → 200", Metric::Invite200),
        ("REGISTER → 200", Metric::Register),
    ] {
        let chart = Chart {
            title,
            x_label: "percentile",
            y_label: "latency",
            x_scale: Scale::Percentile,
            y_scale: Scale::LogMicros,
            series: per_run(runs, |r| distribution(&r.latency(m))),
        };
        let _ = write!(b, "<div>{}</div>", chart.svg());
    }
    b.push_str("</div><h2>Throughput and p99 over time</h2><div class=\"grid2\">");
    let completed = Chart {
        title: "completed per second",
        x_label: "seconds since load start",
        y_label: "per second",
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        series: per_run(runs, |r| {
            r.timeline
                .iter()
                .map(|p| (f64::from(p.t), p.counts.completed as f64))
                .collect()
        }),
    };
    let p99 = Chart {
        title: "INVITE → 180 p99 per second",
        x_label: "seconds since load start",
        y_label: "latency",
        x_scale: Scale::Linear,
        y_scale: Scale::LogMicros,
        series: per_run(runs, |r| {
            r.timeline
                .iter()
                .filter_map(|p| {
                    p.latency_us
                        .get(Metric::Invite180.name())
                        .map(|l| (f64::from(p.t), l.p99 as f64))
                })
                .collect()
        }),
    };
    let _ = write!(
        b,
        "<div>{}</div><div>{}</div></div>",
        completed.svg(),
        p99.svg()
    );
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(dur(850.0), "850 µs");
        assert_eq!(dur(1250.0), "1.25 ms");
        assert_eq!(dur(2_000_000.0), "2.00 s");
    }

    #[test]
    fn a_chart_without_data_says_so_and_escapes_titles() {
        let c = Chart {
            title: "a < b",
            x_label: "x",
            y_label: "y",
            x_scale: Scale::Linear,
            y_scale: Scale::LogMicros,
            series: vec![],
        };
        let svg = c.svg();
        assert!(svg.contains("no data") && svg.contains("a &lt; b"));
    }

    #[test]
    fn percentile_axis_stretches_the_tail() {
        assert!((transform(Scale::Percentile, 99.0) - 2.0).abs() < 1e-9);
        assert!((transform(Scale::Percentile, 99.9) - 3.0).abs() < 1e-9);
        let t = ticks(Scale::LogMicros, 1.0, 4.0);
        assert_eq!(t.first().unwrap().1, "10 µs");
        assert_eq!(t.last().unwrap().1, "10.00 ms");
    }
}
