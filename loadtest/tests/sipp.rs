//! The independence check: SIPp and the harness measure the same sipfork run and agree.
//!
//! sipfork runs in this process on 127.0.0.1. Each extension has two devices: SIPp
//! (`tests/sipp/uas_ring_cancel.xml`, one UAS for every extension, registered by
//! `tests/sipp/register.xml`) rings and must be CANCELled; the harness's own device answers after
//! 100 ms. The harness places the calls (`--no-clear`: SIPp's bindings stay). Every call the
//! harness placed must be one SIPp saw end as a successful cancelled call, and the two must
//! agree that none failed; then the harness's device is silenced (nobody answers: the calls end
//! at the harness's caller with no 2xx, and SIPp's device is never cancelled), and both must
//! count every call as failed.
//!
//! Skipped with a printed reason when `sipp` is not installed, unless `SIPFORK_REQUIRE_SIPP=1`
//! (set by `scripts/test.sh`, which installs it) makes its absence a failure.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};

use sipfork_load::plan::Plan;
use sipfork_load::result::RunResult;
use sipfork_load::scenario::Scenario;
use sipfork_load::sim::{sipfork_config, ProxyOptions};

mod common;

const CALLS: u32 = 40;

fn sipp_present() -> bool {
    let present = Command::new("sipp").arg("-v").output().is_ok();
    if !present {
        assert!(
            std::env::var_os("SIPFORK_REQUIRE_SIPP").is_none(),
            "sipp is required (SIPFORK_REQUIRE_SIPP is set) but not installed"
        );
        eprintln!("skipped: sipp is not installed (scripts/install-deps.sh installs it)");
    }
    present
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port on 127.0.0.1")
}

/// `SuccessfulCall(C)` and `FailedCall(C)` of SIPp's last statistics row (`-trace_stat`).
fn sipp_counts(stat: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(stat).expect("sipp statistics file");
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().expect("header").split(';').collect();
    let last: Vec<&str> = lines.next_back().expect("a row").split(';').collect();
    let col = |name: &str| -> u64 {
        let i = header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} in {header:?}"));
        last[i].trim().parse().expect("a count")
    };
    (col("SuccessfulCall(C)"), col("FailedCall(C)"))
}

fn scenario_file(dir: &Path, name: &str, device: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\n[load]\nrate = 50\nduration_s = 10\nmax = {CALLS}\ndrain_s = 3\n\
             [topology]\nextensions = 10\ndevices = 1\ncaller_port = 47500\ndevice_port = 47600\n\
             [[device]]\n{device}\n[caller]\nhold_ms = {{ const = 50 }}\n\
             [registration]\nclear = false\n"
        ),
    )
    .unwrap();
    path
}

/// One run: SIPp's UAS for every extension, the harness's caller and devices; returns the
/// harness's result and SIPp's (successful, failed).
fn measure(
    dir: &Path,
    proxy: &str,
    name: &str,
    device: &str,
    timeout_ms: u32,
) -> (RunResult, (u64, u64)) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let uas_port = free_port();
    // SIPp's UAS registers as the second device of every extension.
    let csv = dir.join("reg.csv");
    let mut rows = String::from("SEQUENTIAL\n");
    for ext in 1000..1010 {
        rows += &format!("{ext};<sip:{ext}@127.0.0.1:{uas_port}>\n");
    }
    std::fs::write(&csv, rows).unwrap();
    let register = Command::new("timeout")
        .args(["30", "sipp", proxy, "-sf"])
        .arg(manifest.join("../tests/sipp/register.xml"))
        .arg("-inf")
        .arg(&csv)
        .args(["-m", "10", "-r", "100", "-i", "127.0.0.1", "-p"])
        .arg(free_port().to_string())
        .args(["-nostdin", "-timeout", "20s", "-recv_timeout", "5000"])
        .current_dir(dir)
        .output()
        .expect("sipp registers");
    assert!(
        register.status.success(),
        "sipp register: {}",
        String::from_utf8_lossy(&register.stdout)
    );
    // The ring-then-cancel scenario with a recv timeout of `timeout_ms`.
    let xml = std::fs::read_to_string(manifest.join("../tests/sipp/uas_ring_cancel.xml"))
        .unwrap()
        .replace("timeout=\"15000\"", &format!("timeout=\"{timeout_ms}\""));
    let uas_xml = dir.join(format!("{name}-uas.xml"));
    std::fs::write(&uas_xml, xml).unwrap();
    let stat = dir.join(format!("{name}-stat.csv"));
    let mut uas = Command::new("timeout")
        .args(["60", "sipp", "-sf"])
        .arg(&uas_xml)
        .args(["-i", "127.0.0.1", "-p"])
        .arg(uas_port.to_string())
        .args(["-m", &CALLS.to_string(), "-nostdin", "-timeout", "50s"])
        .args(["-trace_stat", "-fd", "1", "-stf"])
        .arg(&stat)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sipp uas starts");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = Command::new(env!("CARGO_BIN_EXE_sipfork-load"))
        .arg("run")
        .arg("--scenario")
        .arg(scenario_file(dir, name, device))
        .args([
            "--target",
            proxy,
            "--proxy-pid",
            "none",
            "--quiet",
            "--label",
            name,
        ])
        .arg("--out")
        .arg(dir)
        .output()
        .expect("sipfork-load runs");
    let _ = uas.wait();
    let r = RunResult::read(&dir.join(format!("{name}.json"))).unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (r, sipp_counts(&stat))
}

#[test]
fn sipp_and_the_harness_agree_on_the_calls_of_one_sipfork_run() {
    if !sipp_present() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sipfork-load-sipp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let proxy = format!("127.0.0.1:{port}");
    let mut s = Scenario::preset("fork3").unwrap();
    s.topology.extensions = 10;
    let plan = Plan::new(s, proxy.parse().unwrap(), false, 1).unwrap();
    let engine = common::start_sipfork(&sipfork_config(&plan, &ProxyOptions::default()))
        .expect("sipfork starts");

    // Every call: the harness's device answers, SIPp's is cancelled.
    let (r, (sipp_ok, sipp_failed)) = measure(
        &dir,
        &proxy,
        "answered",
        "action = \"answer\"\nafter_ms = { const = 100 }",
        5000,
    );
    let v = r.verdicts.as_ref().unwrap();
    assert_eq!(r.registration.registered, 10);
    assert_eq!((v.calls, v.failed), (u64::from(CALLS), 0), "{v:#?}");
    assert_eq!(
        (sipp_ok, sipp_failed),
        (v.ok, v.failed),
        "SIPp's successful and failed calls are the harness's"
    );

    // Nobody answers: the harness's device stays silent, SIPp's is never cancelled (its recv
    // times out after 1 s), and the calls end with no 2xx at the caller. Both count all failed.
    let (r, (sipp_ok, sipp_failed)) =
        measure(&dir, &proxy, "unanswered", "action = \"silent\"", 1000);
    let v = r.verdicts.as_ref().unwrap();
    assert_eq!(v.calls, u64::from(CALLS));
    assert_eq!(
        (sipp_ok, sipp_failed),
        (v.ok, v.failed),
        "SIPp's successful and failed calls are the harness's: {v:#?}"
    );
    assert_eq!(v.failed, u64::from(CALLS));
    engine.stop_handle().stop();
    let _ = engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
