//! Rate sweeps: the same scenario at rising rates, one run each, until a rate fails; the knee is
//! the highest rate at which that run and every slower one passed (no failed call, every device
//! registered). `run --ramp FROM:TO:STEP` and `sweep` do this, and write one page
//! ([`crate::dashboard::sweep_page`]) with CPU per call, p99s and success against the rate.

use serde::{Deserialize, Serialize};

use crate::result::RunResult;
use crate::runner::{self, RunOptions};

/// Longest sweep (runs).
pub const MAX_STEPS: usize = 200;

/// The rates of `FROM:TO:STEP` (both ends included; `FROM:TO` steps by `TO - FROM`).
pub fn parse_ramp(text: &str) -> Result<Vec<f64>, String> {
    let bad = || format!("--ramp {text:?}: want FROM:TO:STEP, e.g. 1000:8000:1000");
    let parts: Vec<f64> = text
        .split(':')
        .map(|p| p.trim().parse::<f64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (from, to, step) = match parts[..] {
        [from, to, step] => (from, to, step),
        [from, to] => (from, to, (to - from).max(1.0)),
        _ => return Err(bad()),
    };
    if !(from > 0.0 && to >= from && step > 0.0 && [from, to, step].iter().all(|v| v.is_finite())) {
        return Err(format!("{}: need 0 < FROM ≤ TO and STEP > 0", bad()));
    }
    let n = ((to - from) / step + 1e-9).floor() as usize + 1;
    if n > MAX_STEPS {
        return Err(format!("--ramp {text:?}: {n} runs, at most {MAX_STEPS}"));
    }
    Ok((0..n).map(|i| from + step * i as f64).collect())
}

/// The highest rate whose run passed with every slower run passing too (`(rate, passed)` in any
/// order); `None` when the slowest failed.
pub fn knee(runs: &[(f64, bool)]) -> Option<f64> {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    sorted
        .iter()
        .take_while(|(_, passed)| *passed)
        .last()
        .map(|(rate, _)| *rate)
}

/// What a sweep found (written as `LABEL-sweep.json` beside the runs).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SweepSummary {
    /// The sweep's label (each run is `LABEL-rRATE`).
    pub label: String,
    /// Rates run, in order, and whether each passed.
    pub runs: Vec<(f64, bool)>,
    /// Highest rate with zero failed calls at it and below.
    pub knee: Option<f64>,
}

/// Runs `base` at each of `rates` (label `LABEL-rRATE`), stopping after the first rate that fails
/// unless `keep_going`; `each` sees every result as it comes. Returns the results in rate order.
pub fn sweep(
    base: &RunOptions,
    rates: &[f64],
    keep_going: bool,
    mut each: impl FnMut(&RunResult),
) -> Result<Vec<RunResult>, String> {
    let mut results = Vec::new();
    for &rate in rates {
        let mut o = base.clone();
        o.scenario.load.rate = rate;
        o.label = format!("{}-r{rate}", base.label);
        let r = runner::run(o)?;
        each(&r);
        let (passed, partial) = (r.passed, r.partial);
        results.push(r);
        if partial || (!passed && !keep_going) {
            break;
        }
        // Let the proxy finish the last run's transactions before the next registration phase.
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    Ok(results)
}

/// The summary of `results` (in rate order).
pub fn summarize(label: &str, results: &[RunResult]) -> SweepSummary {
    let runs: Vec<(f64, bool)> = results.iter().map(|r| (r.load.rate, r.passed)).collect();
    SweepSummary {
        label: label.to_owned(),
        knee: knee(&runs),
        runs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_include_both_ends_and_refuse_nonsense() {
        assert_eq!(
            parse_ramp("1000:4000:1000").unwrap(),
            vec![1000.0, 2000.0, 3000.0, 4000.0]
        );
        assert_eq!(parse_ramp("100:250:100").unwrap(), vec![100.0, 200.0]);
        assert_eq!(parse_ramp("50:150").unwrap(), vec![50.0, 150.0]);
        assert_eq!(parse_ramp("7:7:1").unwrap(), vec![7.0]);
        for bad in [
            "",
            "1000",
            "a:b:c",
            "0:10:1",
            "10:5:1",
            "1:10:0",
            "1:100000:1",
        ] {
            assert!(parse_ramp(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_knee_is_the_highest_rate_with_every_slower_rate_passing() {
        assert_eq!(knee(&[]), None);
        assert_eq!(knee(&[(100.0, false)]), None);
        assert_eq!(
            knee(&[(300.0, false), (100.0, true), (200.0, true)]),
            Some(200.0)
        );
        // A lucky pass above a failure is not the knee.
        assert_eq!(
            knee(&[(100.0, true), (200.0, false), (300.0, true)]),
            Some(100.0)
        );
    }
}
