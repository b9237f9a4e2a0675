//! The JSON result of a run (schema `sipfork-load/1`, documented in `loadtest/README.md`), and
//! its assembly from the agents' records.
//!
//! Every latency summary is in microseconds; every rate per second; CPU in milliseconds of one
//! core over the load window (from the load phase's start to the end of the drain) and in µs per
//! call (or per REGISTER for a register load).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::metrics::{Counts, Metric, Metrics, Summary};
use crate::plan::Plan;
use crate::reflect::ProxySizes;
use crate::scenario::{LoadKind, Scenario};
use crate::verdict::{judge_each, Judgement};

/// Schema name and version written into every result.
pub const SCHEMA: &str = "sipfork-load/1";

/// What was measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Target {
    /// Address the harness sent to.
    pub address: String,
    /// `proxy` or `reflector`.
    pub mode: String,
    /// What ran there, as the operator described it (`--label`), e.g. `sipfork uring 1 shard`.
    pub name: String,
}

/// How the harness ran.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Harness {
    /// sipfork-load version.
    pub version: String,
    /// The command line.
    pub command: String,
    /// Harness threads (1: caller and devices together; 2: apart).
    pub threads: u32,
    /// I/O backend of the harness's threads.
    pub io: String,
    /// Coalescing window of the harness's own backend, µs (0: off).
    pub coalesce_us: u64,
    /// CPUs the harness threads were pinned to, if any.
    pub pin: Option<String>,
    /// The harness busy-polled (its CPU figures are then a whole core).
    #[serde(default)]
    pub spin: bool,
    /// UDP sockets the harness used (callers + devices).
    pub sockets: u32,
    /// Harness backend counters (summed over its threads).
    pub io_counters: BTreeMap<String, u64>,
}

/// The open loop as planned and as run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Load {
    /// `calls` or `register`.
    pub kind: String,
    /// Intended rate per second.
    pub rate: f64,
    /// `constant` or `poisson`.
    pub arrival: String,
    /// Calls (REGISTERs) planned.
    pub planned: u64,
    /// Calls (REGISTERs) started.
    pub started: u64,
    /// Seconds from the first to the last intended start.
    pub generation_s: f64,
    /// Seconds of the load window (start of load to the end of the drain).
    pub window_s: f64,
}

/// The registration phase, and the REGISTER storm if that was the load.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Registration {
    /// Devices to register.
    pub devices: u64,
    /// Devices registered.
    pub registered: u64,
    /// Devices whose REGISTER was refused or unanswered in the phase (the `Contact: *` clears
    /// are counted apart, in `clear_failed`).
    pub failed: u64,
    /// `Contact: *` clearing REGISTERs refused or unanswered.
    #[serde(default)]
    pub clear_failed: u64,
    /// Registration failures do not fail the run (`--allow-registration-failures`).
    #[serde(default)]
    pub failures_allowed: bool,
    /// Seconds the phase took.
    pub seconds: f64,
    /// REGISTER → final in the phase, µs.
    pub latency: Summary,
    /// Storm REGISTERs that got a 2xx.
    pub storm_ok: u64,
    /// Storm REGISTERs that did not.
    pub storm_failed: u64,
    /// Refreshing REGISTERs (devices re-register at half their expiry while calls run) answered
    /// 2xx.
    #[serde(default)]
    pub refreshed: u64,
    /// Refreshing REGISTERs refused or left unanswered: they fail the run like `failed`.
    #[serde(default)]
    pub refresh_failed: u64,
}

/// CPU over the load window.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Cpu {
    /// Seconds of the window.
    pub window_s: f64,
    /// Processes counted as the proxy.
    pub proxy_pids: Vec<u32>,
    /// Proxy CPU, ms.
    pub proxy_ms: f64,
    /// Proxy CPU, % of one core.
    pub proxy_pct: f64,
    /// Proxy CPU per call (or REGISTER), µs.
    pub proxy_us_per_call: f64,
    /// Harness CPU, ms.
    pub harness_ms: f64,
    /// Harness CPU, % of one core.
    pub harness_pct: f64,
    /// Harness CPU per call (or REGISTER), µs.
    pub harness_us_per_call: f64,
    /// System-wide UDP receive-buffer drops in the window.
    pub udp_rcvbuf_errors: Option<u64>,
    /// The whole machine's busy time in the window, % of one core (all CPUs: up to 100 × CPUs).
    #[serde(default)]
    pub machine_busy_pct: f64,
    /// Busy time of everything else (machine − proxy − harness), % of one core: a run with much
    /// of it shared the CPUs with other work and its figures are suspect.
    #[serde(default)]
    pub other_pct: f64,
}

/// Percentiles of one metric in one second.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PointLatency {
    /// Values.
    pub count: u64,
    /// Median, µs.
    pub p50: u64,
    /// 99th percentile, µs.
    pub p99: u64,
    /// 99.9th percentile, µs.
    pub p999: u64,
    /// Largest, µs.
    pub max: u64,
}

/// One second of the timeline.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Point {
    /// Second since the load phase's start.
    pub t: u32,
    /// Counters of that second (calls counted by their intended start).
    pub counts: Counts,
    /// Latency percentiles of events in that second.
    pub latency_us: BTreeMap<String, PointLatency>,
}

/// A whole run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// [`SCHEMA`].
    pub schema: String,
    /// Short name of the run (file names, plot legends).
    pub label: String,
    /// The scenario as run (after command-line overrides).
    pub scenario: Scenario,
    /// What was measured.
    pub target: Target,
    /// How the harness ran.
    pub harness: Harness,
    /// Unix time the run started, seconds.
    pub started_unix_s: f64,
    /// The open loop.
    pub load: Load,
    /// Registration.
    pub registration: Registration,
    /// Per-call verdicts and races (call loads).
    pub verdicts: Option<Judgement>,
    /// Calls (REGISTERs) that passed, % of those started.
    pub success_pct: f64,
    /// The run passed: every call (REGISTER) passed, and every device registered (unless
    /// registration failures were allowed). The exit code is 0 exactly when this is true.
    #[serde(default)]
    pub passed: bool,
    /// Why it did not pass, one line each.
    #[serde(default)]
    pub failed_because: Vec<String>,
    /// The run was interrupted (SIGINT/SIGTERM) and this is what was measured until then (the
    /// calls that had ended are judged; those still open are not).
    #[serde(default)]
    pub partial: bool,
    /// `i/N` when this is one of N harness instances against one proxy (`--instance`), or
    /// `merged N` for the merge of N instances.
    #[serde(default)]
    pub instance: Option<String>,
    /// Whole-run latency summaries by metric name, µs.
    pub latency_us: BTreeMap<String, Summary>,
    /// Whole-run counters.
    pub counters: Counts,
    /// CPU, when measured.
    pub cpu: Option<Cpu>,
    /// Per-second timeline.
    pub timeline: Vec<Point>,
    /// Reflector mode: the sizes the reflector was told to send.
    pub reflector_sizes: Option<ProxySizes>,
    /// Every whole-run histogram as `(value µs, count)` pairs, by metric name (and
    /// [`REGISTRATION_HISTOGRAM`]), so that `merge` adds instances exactly.
    #[serde(default)]
    pub histograms: BTreeMap<String, Vec<(u64, u64)>>,
}

/// The key of the registration phase's REGISTER → final histogram in `histograms`.
pub const REGISTRATION_HISTOGRAM: &str = "registration_phase";

/// Sets `success_pct`, `passed` and `failed_because` from the verdicts (or the storm's
/// counts), the registration and `partial`: the run's one success figure.
pub fn judge_run(r: &mut RunResult) {
    let (ok, failed) = match &r.verdicts {
        Some(j) => (j.ok, j.failed),
        None => (r.registration.storm_ok, r.registration.storm_failed),
    };
    r.success_pct = if ok + failed == 0 {
        0.0
    } else {
        100.0 * ok as f64 / (ok + failed) as f64
    };
    let mut why = Vec::new();
    if failed > 0 {
        why.push(format!("{failed} of {} failed their verdict", ok + failed));
    }
    if ok + failed == 0 {
        why.push("nothing was started".to_owned());
    }
    if r.registration.failed > 0 && !r.registration.failures_allowed {
        why.push(format!(
            "{} of {} devices did not register (--allow-registration-failures to run anyway)",
            r.registration.failed, r.registration.devices
        ));
    }
    if r.registration.refresh_failed > 0 && !r.registration.failures_allowed {
        why.push(format!(
            "{} refreshing REGISTERs failed (--allow-registration-failures to run anyway)",
            r.registration.refresh_failed
        ));
    }
    if r.partial {
        why.push("interrupted before the end (partial result)".to_owned());
    }
    r.passed = why.is_empty();
    r.failed_because = why;
}

/// What the runner measured around the agents.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Run label.
    pub label: String,
    /// Target description.
    pub target_name: String,
    /// Harness description.
    pub harness: Harness,
    /// Unix start time.
    pub started_unix_s: f64,
    /// Load window, seconds.
    pub window_s: f64,
    /// CPU, if measured.
    pub cpu: Option<Cpu>,
    /// The run was interrupted: judge only the calls that ended.
    pub partial: bool,
    /// `i/N` when this is one of N harness instances.
    pub instance: Option<String>,
}

/// Builds the result from the agents (one with both sides, or caller and devices apart).
pub fn assemble(plan: &Plan, agents: &[&Agent], cx: Context) -> RunResult {
    let mut metrics = Metrics::default();
    for a in agents {
        metrics.merge(a.metrics());
    }
    let caller = agents.iter().find_map(|a| a.caller.as_ref());
    let devices = agents.iter().find_map(|a| a.devices.as_ref());
    let s = &plan.scenario;
    // The caller's own view of each call stays in `caller_*`; `completed`/`failed` become the
    // verdicts, by each call's intended start second, so that every figure agrees.
    let caller_view = |c: &mut Counts| {
        c.caller_completed = c.completed;
        c.caller_failed = c.failed;
    };
    caller_view(&mut metrics.totals);
    for sec in &mut metrics.seconds {
        caller_view(&mut sec.counts);
    }
    let verdicts = match (s.load.kind, caller, devices) {
        (LoadKind::Calls, Some(c), Some(d)) => {
            metrics.totals.completed = 0;
            metrics.totals.failed = 0;
            for sec in &mut metrics.seconds {
                sec.counts.completed = 0;
                sec.counts.failed = 0;
            }
            let seconds = &mut metrics.seconds;
            let totals = &mut metrics.totals;
            Some(judge_each(plan, c, d, cx.partial, |call, v| {
                let t = plan
                    .starts
                    .get(call as usize)
                    .map_or(0, |us| us / 1_000_000) as usize;
                let counts = seconds.get_mut(t).map(|sec| &mut sec.counts);
                for k in [Some(&mut *totals), counts].into_iter().flatten() {
                    if v.ok() {
                        k.completed += 1;
                    } else {
                        k.failed += 1;
                    }
                }
            }))
        }
        _ => None,
    };
    let mut registration = Registration {
        devices: plan.devices.len() as u64,
        ..Registration::default()
    };
    if let Some(d) = devices {
        let r = &d.reg;
        registration.registered = r.registered;
        registration.failed = r.refused + r.timed_out;
        registration.clear_failed = r.clear_failed;
        registration.failures_allowed = s.registration.allow_failures;
        registration.seconds = r.phase_secs;
        registration.latency = Summary::of(&r.phase_latency, false);
        registration.storm_ok = metrics.histogram(Metric::Register).len();
        registration.storm_failed = r.storm_failed;
        registration.refreshed = r.refreshed;
        registration.refresh_failed = r.refresh_failed;
    }
    let started = metrics.totals.started;
    let generation_s = plan
        .starts
        .get(started.saturating_sub(1) as usize)
        .map_or(0.0, |&us| us as f64 / 1e6);
    let latency_us = Metric::ALL
        .iter()
        .map(|&m| (m.name().to_owned(), Summary::of(metrics.histogram(m), true)))
        .collect();
    let timeline = metrics
        .seconds
        .iter()
        .enumerate()
        .map(|(t, sec)| Point {
            t: t as u32,
            counts: sec.counts.clone(),
            latency_us: sec
                .latencies
                .iter()
                .filter(|(_, h)| !h.is_empty())
                .map(|(m, h)| {
                    (
                        m.name().to_owned(),
                        PointLatency {
                            count: h.len(),
                            p50: h.value_at_quantile(0.5),
                            p99: h.value_at_quantile(0.99),
                            p999: h.value_at_quantile(0.999),
                            max: h.max(),
                        },
                    )
                })
                .collect(),
        })
        .collect();
    let mut histograms: BTreeMap<String, Vec<(u64, u64)>> = Metric::ALL
        .iter()
        .map(|&m| {
            (
                m.name().to_owned(),
                crate::merge::pairs(metrics.histogram(m)),
            )
        })
        .collect();
    if let Some(d) = devices {
        histograms.insert(
            REGISTRATION_HISTOGRAM.to_owned(),
            crate::merge::pairs(&d.reg.phase_latency),
        );
    }
    let mut r = RunResult {
        schema: SCHEMA.to_owned(),
        label: cx.label,
        scenario: s.clone(),
        target: Target {
            address: plan.target.to_string(),
            mode: if plan.reflect { "reflector" } else { "proxy" }.to_owned(),
            name: cx.target_name,
        },
        harness: cx.harness,
        started_unix_s: cx.started_unix_s,
        load: Load {
            kind: match s.load.kind {
                LoadKind::Calls => "calls",
                LoadKind::Register => "register",
            }
            .to_owned(),
            rate: s.load.rate,
            arrival: format!("{:?}", s.load.arrival).to_lowercase(),
            planned: u64::from(plan.count()),
            started,
            generation_s,
            window_s: cx.window_s,
        },
        registration,
        verdicts,
        success_pct: 0.0,
        passed: false,
        failed_because: Vec::new(),
        partial: cx.partial,
        instance: cx.instance,
        latency_us,
        counters: metrics.totals.clone(),
        cpu: cx.cpu,
        timeline,
        reflector_sizes: plan.reflect.then_some(plan.sizes),
        histograms,
    };
    judge_run(&mut r);
    r
}

impl RunResult {
    /// Reads a result file.
    pub fn read(path: &std::path::Path) -> Result<RunResult, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let r: RunResult =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if r.schema != SCHEMA {
            return Err(format!(
                "{}: schema {} (want {SCHEMA})",
                path.display(),
                r.schema
            ));
        }
        Ok(r)
    }

    /// The summary of metric `m`.
    pub fn latency(&self, m: Metric) -> Summary {
        self.latency_us.get(m.name()).cloned().unwrap_or_default()
    }
}
