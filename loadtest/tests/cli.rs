//! The command line and what long runs need, on loopback against the null reflector started in
//! this process: SIGINT writes a partial result (exit 130), `--stats-every` writes JSON lines,
//! and N instances (`--instance i/N`) merge into one result.

use std::process::Command;
use std::time::Duration;

use sipfork_load::merge::{apply_instance, merge};
use sipfork_load::metrics::Metric;
use sipfork_load::result::RunResult;
use sipfork_load::runner::{run, RunOptions, StatsLine};
use sipfork_load::scenario::Scenario;

mod common;

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sipfork-load-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn sigint_writes_a_partial_result_and_exits_130() {
    let (engine, target) = common::start_reflector();
    let dir = tmp("sigint");
    // High ports, apart from the other tests'.
    let scenario = dir.join("s.toml");
    std::fs::write(
        &scenario,
        "name = \"long\"\n[load]\nrate = 100\nduration_s = 60\nmax = 6000\n\
         [topology]\nextensions = 10\ndevices = 3\ncaller_port = 47000\ndevice_port = 47100\n\
         [[device]]\naction = \"answer\"\nafter_ms = { const = 20 }\n\
         [[device]]\naction = \"ring\"\n[caller]\nhold_ms = { const = 20 }\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipfork-load"))
        .arg("run")
        .arg("--scenario")
        .arg(&scenario)
        .args(["--reflector", "--target", &target.to_string()])
        .args(["--proxy-pid", "none", "--quiet", "--label", "sigint"])
        .args(["--stats-every", "200ms"])
        .arg("--out")
        .arg(&dir)
        .spawn()
        .expect("sipfork-load starts");
    std::thread::sleep(Duration::from_millis(2500));
    // SAFETY: kill with a live child's PID.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    drop(engine);
    assert_eq!(status.code(), Some(130), "interrupted runs exit 130");
    let r = RunResult::read(&dir.join("sigint.json")).expect("the partial result was written");
    assert!(r.partial && !r.passed, "{:?}", r.failed_because);
    assert!(r.failed_because.iter().any(|w| w.contains("interrupted")));
    let v = r.verdicts.as_ref().unwrap();
    assert!(
        r.load.started > 50 && r.load.started < 6000,
        "{}",
        r.load.started
    );
    assert!(
        v.calls > 0 && v.calls <= r.load.started,
        "the calls that ended are judged: {} of {}",
        v.calls,
        r.load.started
    );
    assert_eq!(v.ok, v.calls, "{v:#?}");
    let stats = std::fs::read_to_string(dir.join("sigint.stats.jsonl")).unwrap();
    let lines: Vec<StatsLine> = stats
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(lines.len() >= 5, "{} lines", lines.len());
    let last = lines.last().unwrap();
    assert_eq!(last.phase, "load");
    assert!(last.started > 0 && last.calls_per_s > 50.0, "{last:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn two_instances_against_one_proxy_merge_into_one_result() {
    let (engine, target) = common::start_reflector();
    let dir = tmp("instances");
    let mut whole = Scenario::preset("fork3").unwrap();
    whole.topology.extensions = 20;
    whole.topology.caller_port = 47_300;
    whole.topology.device_port = 47_400;
    whole.load.rate = 200.0;
    whole.load.duration_s = 0.3;
    whole.caller.hold_ms = sipfork_load::scenario::Dist::Const(20.0);
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let mut s = whole.clone();
            apply_instance(&mut s, i, 2).unwrap();
            let o = RunOptions {
                instance: Some((i, 2)),
                ..common::reflector_run(s, target, &format!("inst-i{i}of2"), &dir)
            };
            std::thread::spawn(move || run(o).expect("instance runs"))
        })
        .collect();
    let parts: Vec<RunResult> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    drop(engine);
    for p in &parts {
        assert!(p.passed, "{}: {:?}", p.label, p.failed_because);
        assert_eq!(p.load.started, 30, "100/s each for 0.3 s");
    }
    assert_ne!(
        parts[0].scenario.topology.first_extension,
        parts[1].scenario.topology.first_extension
    );
    let m = merge("inst-merged", &parts).unwrap();
    assert!(m.passed, "{:?}", m.failed_because);
    assert_eq!(m.instance.as_deref(), Some("merged 2"));
    assert_eq!(m.load.started, 60);
    assert_eq!(m.load.rate, 200.0);
    assert_eq!(m.registration.registered, 60);
    let v = m.verdicts.as_ref().unwrap();
    assert_eq!((v.calls, v.ok), (60, 60));
    let cancel = m.latency(Metric::CancelLatency);
    assert_eq!(cancel.count, 120, "two losers per call, both instances");
    let slowest = parts
        .iter()
        .map(|p| p.latency(Metric::CancelLatency).max)
        .max()
        .unwrap();
    assert_eq!(cancel.max, slowest);
    let timeline: u64 = m.timeline.iter().map(|p| p.counts.completed).sum();
    assert_eq!(timeline, 60);
    // Through the command line too.
    let out = Command::new(env!("CARGO_BIN_EXE_sipfork-load"))
        .arg("merge")
        .arg(dir.join("inst-i0of2.json"))
        .arg(dir.join("inst-i1of2.json"))
        .arg("-o")
        .arg(dir.join("merged.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = RunResult::read(&dir.join("merged.json")).unwrap();
    assert_eq!(back.verdicts.as_ref().unwrap().calls, 60);
    assert!(dir.join("merged.html").exists());
    let _ = std::fs::remove_dir_all(dir);
}
