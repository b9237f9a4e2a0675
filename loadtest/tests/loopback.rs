//! The whole harness on real loopback sockets, against the null reflector started in this
//! process: registration, a short open loop, verdicts, CPU, and the result files.

use std::time::Duration;

use sipfork_load::metrics::Metric;
use sipfork_load::result::RunResult;
use sipfork_load::runner::{run, ProxyPids, RunOptions};
use sipfork_load::scenario::Scenario;

mod common;

#[test]
fn a_short_fork3_run_through_the_reflector_passes_and_writes_its_files() {
    let (reflector, target) = common::start_reflector();

    let mut s = Scenario::preset("fork3").unwrap();
    s.topology.extensions = 10;
    // High ports, unlikely to be in use by anything else on a test machine.
    s.topology.device_port = 46_100;
    s.topology.caller_port = 46_000;
    s.load.rate = 100.0;
    s.load.duration_s = 0.3;
    s.load.max = 30;
    s.caller.hold_ms = sipfork_load::scenario::Dist::Const(50.0);
    let dir = std::env::temp_dir().join(format!("sipfork-load-test-{}", std::process::id()));
    let result = run(RunOptions {
        proxy_pids: ProxyPids::Given(vec![std::process::id()]),
        ..common::reflector_run(s, target, "loopback", &dir)
    })
    .expect("run");
    drop(reflector);
    assert_eq!(result.registration.registered, 30);
    let v = result.verdicts.as_ref().unwrap();
    assert_eq!((v.calls, v.ok), (30, 30), "{v:#?}");
    assert_eq!(result.latency(Metric::CancelLatency).count, 60);
    assert!(result.latency(Metric::Invite180).p50 < Duration::from_millis(50).as_micros() as u64);
    let cpu = result.cpu.as_ref().unwrap();
    assert!(cpu.window_s > 0.3 && cpu.proxy_ms > 0.0, "{cpu:?}");
    let back = RunResult::read(&dir.join("loopback.json")).unwrap();
    assert_eq!(back, result, "the JSON file reads back to the same result");
    let html = std::fs::read_to_string(dir.join("loopback.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("result-data"));
    assert!(
        !html.contains(" src=") && !html.contains(" href="),
        "nothing fetched"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_sweep_runs_each_rate_finds_the_knee_and_writes_one_page() {
    use sipfork_load::sweep;
    let (reflector, target) = common::start_reflector();
    let mut s = Scenario::preset("fork3").unwrap();
    s.topology.extensions = 5;
    s.topology.device_port = 46_300;
    s.topology.caller_port = 46_200;
    s.load.duration_s = 0.2;
    s.caller.hold_ms = sipfork_load::scenario::Dist::Const(20.0);
    let dir = std::env::temp_dir().join(format!("sipfork-load-sweep-{}", std::process::id()));
    // A dot in the label stays in the file names.
    let base = common::reflector_run(s, target, "sweep.1", &dir);
    let rates = sweep::parse_ramp("50:100:50").unwrap();
    let mut seen = 0;
    let results = sweep::sweep(&base, &rates, false, |_| seen += 1).expect("sweep");
    drop(reflector);
    assert_eq!(seen, 2);
    let rates_run: Vec<f64> = results.iter().map(|r| r.load.rate).collect();
    assert_eq!(rates_run, vec![50.0, 100.0]);
    assert!(
        results.iter().all(|r| r.passed),
        "{:?}",
        results
            .iter()
            .map(|r| &r.failed_because)
            .collect::<Vec<_>>()
    );
    assert_eq!(results[1].load.started, 20, "100/s for 0.2 s");
    let summary = sweep::summarize("sweep.1", &results);
    assert_eq!(summary.knee, Some(100.0));
    for label in ["sweep.1-r50", "sweep.1-r100"] {
        let back = RunResult::read(&dir.join(format!("{label}.json"))).unwrap();
        assert_eq!(back.label, label);
    }
    let page = sipfork_load::dashboard::sweep_page(&results, summary.knee);
    assert!(page.contains("100 calls/s") && page.contains("proxy CPU per call"));
    let _ = std::fs::remove_dir_all(dir);
}
