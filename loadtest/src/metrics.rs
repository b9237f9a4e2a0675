//! Latency histograms (hdrhistogram, microsecond resolution) and a per-second timeline.
//!
//! Every latency is recorded in µs from the moment the harness took as the event's time: a
//! received datagram's time is the clock reading of its receive batch (one read per batch), an
//! INVITE's time is its *intended* send time from the open-loop schedule, so a harness or proxy
//! stall shows up in the latencies instead of silently thinning the load (no coordinated
//! omission).

use hdrhistogram::Histogram;
use serde::Serialize;

use sipfork::time::Instant;

/// The measured latencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// INVITE (intended send) → 100 Trying at the caller.
    Invite100,
    /// INVITE (intended send) → first 180 at the caller.
    Invite180,
    /// INVITE (intended send) → first 2xx at the caller.
    Invite200,
    /// The winner's 200 OK leaving its device → the CANCEL reaching each loser.
    CancelLatency,
    /// The caller's CANCEL → the 487 at the caller.
    Cancel487,
    /// REGISTER (intended send for the storm, actual send in the registration phase) → 200.
    Register,
    /// How late the harness sent an INVITE or REGISTER after its intended time.
    SendLag,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 7] = [
        Metric::Invite100,
        Metric::Invite180,
        Metric::Invite200,
        Metric::CancelLatency,
        Metric::Cancel487,
        Metric::Register,
        Metric::SendLag,
    ];

    /// Name in the JSON result.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Invite100 => "invite_to_100",
            Metric::Invite180 => "invite_to_180",
            Metric::Invite200 => "invite_to_200",
            Metric::CancelLatency => "cancel_latency",
            Metric::Cancel487 => "caller_cancel_to_487",
            Metric::Register => "register_to_200",
            Metric::SendLag => "send_lag",
        }
    }

    /// Whether the per-second timeline keeps percentiles of it.
    fn in_timeline(self) -> bool {
        matches!(
            self,
            Metric::Invite180 | Metric::CancelLatency | Metric::Register | Metric::Invite200
        )
    }
}

/// Highest latency a histogram holds (one hour in µs); longer values are clamped.
const MAX_US: u64 = 3_600_000_000;

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, sigfig).expect("invariant: static histogram bounds")
}

/// Counters of one second of the run.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Counts {
    /// Calls (or REGISTERs) started.
    pub started: u64,
    /// Calls that passed their verdict (a REGISTER storm: REGISTERs that got a 2xx). While the
    /// run goes on, the agents count here what the caller saw; the result replaces that with
    /// the verdicts (the caller's view stays in `caller_completed`).
    pub completed: u64,
    /// Calls that failed their verdict (a REGISTER storm: REGISTERs that did not get a 2xx).
    pub failed: u64,
    /// Datagrams the harness sent.
    pub sent: u64,
    /// Datagrams the harness received.
    pub received: u64,
    /// Retransmissions the harness sent.
    pub retransmitted: u64,
    /// Retransmitted messages the harness received (duplicates of something it already had).
    pub duplicates: u64,
    /// Datagrams dropped on purpose (scenario loss).
    pub lost: u64,
    /// Calls that ended at the caller without a caller-side failure (what `completed` counted
    /// before the verdicts; the caller cannot see a device left ringing).
    #[serde(default)]
    pub caller_completed: u64,
    /// Calls that ended at the caller with a caller-side failure (wrong final, timeout).
    #[serde(default)]
    pub caller_failed: u64,
    /// Calls whose first final was a `503` (a shedding or limiting proxy), counted in the second
    /// the 503 arrived.
    #[serde(default)]
    pub refused_503: u64,
}

impl Counts {
    /// Adds `o` to these counts.
    pub fn add(&mut self, o: &Counts) {
        self.started += o.started;
        self.completed += o.completed;
        self.failed += o.failed;
        self.sent += o.sent;
        self.received += o.received;
        self.retransmitted += o.retransmitted;
        self.duplicates += o.duplicates;
        self.lost += o.lost;
        self.caller_completed += o.caller_completed;
        self.caller_failed += o.caller_failed;
        self.refused_503 += o.refused_503;
    }
}

/// One second of the timeline.
#[derive(Clone, Debug)]
pub struct Second {
    /// Counters.
    pub counts: Counts,
    /// Latencies recorded in this second (by the time of the event that ended them).
    pub latencies: Vec<(Metric, Histogram<u64>)>,
}

/// Histograms and timeline of one agent (merged over agents at the end).
#[derive(Clone, Debug)]
pub struct Metrics {
    /// Whole-run histograms.
    pub histograms: Vec<(Metric, Histogram<u64>)>,
    /// Whole-run counters.
    pub totals: Counts,
    /// Per-second timeline from `origin`.
    pub seconds: Vec<Second>,
    /// Time zero of the timeline (the load phase's start).
    pub origin: Option<Instant>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            histograms: Metric::ALL.iter().map(|&m| (m, histogram(3))).collect(),
            totals: Counts::default(),
            seconds: Vec::new(),
            origin: None,
        }
    }
}

/// Longest timeline kept (an hour): events later than that count only in the totals.
const MAX_SECONDS: usize = 3600;

impl Metrics {
    /// Starts the timeline at `origin`.
    pub fn set_origin(&mut self, origin: Instant) {
        self.origin = Some(origin);
    }

    fn second(&mut self, at: Instant) -> Option<&mut Second> {
        let origin = self.origin?;
        let i = (at.saturating_since(origin).as_micros() / 1_000_000) as usize;
        if i >= MAX_SECONDS {
            return None;
        }
        while self.seconds.len() <= i {
            self.seconds.push(Second {
                counts: Counts::default(),
                latencies: Metric::ALL
                    .iter()
                    .filter(|m| m.in_timeline())
                    .map(|&m| (m, histogram(2)))
                    .collect(),
            });
        }
        self.seconds.get_mut(i)
    }

    /// Records a latency (µs) of an event that happened at `at`.
    pub fn record(&mut self, metric: Metric, at: Instant, us: u64) {
        let v = us.clamp(1, MAX_US);
        if let Some((_, h)) = self.histograms.iter_mut().find(|(m, _)| *m == metric) {
            h.saturating_record(v);
        }
        if metric.in_timeline() {
            if let Some(s) = self.second(at) {
                if let Some((_, h)) = s.latencies.iter_mut().find(|(m, _)| *m == metric) {
                    h.saturating_record(v);
                }
            }
        }
    }

    /// Adds to the counters of the second holding `at` and to the totals.
    pub fn count(&mut self, at: Instant, f: impl Fn(&mut Counts)) {
        f(&mut self.totals);
        if let Some(s) = self.second(at) {
            f(&mut s.counts);
        }
    }

    /// The whole-run histogram of `metric`.
    pub fn histogram(&self, metric: Metric) -> &Histogram<u64> {
        &self
            .histograms
            .iter()
            .find(|(m, _)| *m == metric)
            .expect("invariant: every metric has a histogram")
            .1
    }

    /// Folds another agent's metrics into these (same origin assumed).
    pub fn merge(&mut self, other: &Metrics) {
        for (m, h) in &other.histograms {
            if let Some((_, mine)) = self.histograms.iter_mut().find(|(x, _)| x == m) {
                let _ = mine.add(h);
            }
        }
        self.totals.add(&other.totals);
        if self.origin.is_none() {
            self.origin = other.origin;
        }
        for (i, s) in other.seconds.iter().enumerate() {
            while self.seconds.len() <= i {
                self.seconds.push(Second {
                    counts: Counts::default(),
                    latencies: s
                        .latencies
                        .iter()
                        .map(|(m, _)| (*m, histogram(2)))
                        .collect(),
                });
            }
            let mine = &mut self.seconds[i];
            mine.counts.add(&s.counts);
            for (m, h) in &s.latencies {
                if let Some((_, x)) = mine.latencies.iter_mut().find(|(y, _)| y == m) {
                    let _ = x.add(h);
                }
            }
        }
    }
}

/// Percentile summary of a histogram, as the JSON result holds it.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Smallest, µs.
    pub min: u64,
    /// Mean, µs.
    pub mean: f64,
    /// Median, µs.
    pub p50: u64,
    /// 90th percentile, µs.
    pub p90: u64,
    /// 99th percentile, µs.
    pub p99: u64,
    /// 99.9th percentile, µs.
    pub p999: u64,
    /// Largest, µs.
    pub max: u64,
    /// The distribution: `[percentile, value µs]` pairs on a log scale of 1/(1-p), for plots.
    pub distribution: Vec<(f64, u64)>,
}

impl Summary {
    /// Summarises `h` (with its percentile distribution when `with_distribution`).
    pub fn of(h: &Histogram<u64>, with_distribution: bool) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        let mut distribution = Vec::new();
        if with_distribution {
            let mut last = None;
            for v in h.iter_quantiles(4) {
                let p = v.quantile_iterated_to() * 100.0;
                let value = h.highest_equivalent(v.value_iterated_to());
                if last != Some((p * 1000.0) as u64) {
                    distribution.push((p, value));
                    last = Some((p * 1000.0) as u64);
                }
                if p >= 99.9999 {
                    break;
                }
            }
        }
        Summary {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            distribution,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sipfork::time::Duration;

    #[test]
    fn latencies_land_in_their_second_and_the_totals_with_microsecond_resolution() {
        let mut m = Metrics::default();
        let t0 = Instant::ZERO + Duration::from_secs(10);
        m.set_origin(t0);
        for i in 0..1000u64 {
            m.record(
                Metric::Invite180,
                t0 + Duration::from_micros(i * 2000),
                100 + i,
            );
        }
        m.record(Metric::CancelLatency, t0, 57);
        let h = m.histogram(Metric::Invite180);
        assert_eq!(h.len(), 1000);
        assert_eq!(h.min(), 100);
        assert_eq!(h.max(), 1099);
        assert_eq!(h.value_at_quantile(0.5), 599);
        assert_eq!(
            m.seconds.len(),
            2,
            "1000 events 2 ms apart span two seconds"
        );
        let s = Summary::of(m.histogram(Metric::CancelLatency), true);
        assert_eq!((s.count, s.p50, s.p999), (1, 57, 57));
        assert!(!s.distribution.is_empty());
    }

    #[test]
    fn merging_adds_histograms_and_seconds() {
        let t0 = Instant::ZERO;
        let mut a = Metrics::default();
        a.set_origin(t0);
        let mut b = a.clone();
        a.record(Metric::Register, t0, 10);
        b.record(Metric::Register, t0 + Duration::from_secs(3), 30);
        b.count(t0 + Duration::from_secs(3), |c| c.started += 2);
        a.merge(&b);
        assert_eq!(a.histogram(Metric::Register).len(), 2);
        assert_eq!(a.seconds.len(), 4);
        assert_eq!(a.seconds[3].counts.started, 2);
        assert_eq!(a.totals.started, 2);
    }

    #[test]
    fn events_before_the_origin_count_in_second_zero_and_huge_values_are_clamped() {
        let mut m = Metrics::default();
        m.set_origin(Instant::ZERO + Duration::from_secs(5));
        m.record(Metric::Invite180, Instant::ZERO, u64::MAX);
        assert_eq!(m.seconds.len(), 1);
        assert!(m.histogram(Metric::Invite180).max() >= MAX_US - MAX_US / 1000);
    }
}
