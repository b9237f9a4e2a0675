//! `--transport tcp|tls|ws|wss` against the real sipfork binary: fork3 for a few seconds, every
//! device and the caller on a TCP (TLS, WebSocket, secure WebSocket) connection of its own, in a
//! fresh network namespace with only loopback.

use std::path::{Path, PathBuf};
use std::process::Command;

use sipfork_load::result::RunResult;
use sipfork_load::scenario::Transport;

/// The `sipfork` binary beside this crate's `sipfork-load` (one target directory: the workspace
/// test run builds both), built with the same profile when missing.
fn sipfork_binary() -> PathBuf {
    let lt = Path::new(env!("CARGO_BIN_EXE_sipfork-load"));
    let bin = lt.with_file_name("sipfork");
    if !bin.exists() {
        let profile = lt
            .parent()
            .and_then(Path::file_name)
            .and_then(|p| p.to_str())
            .unwrap_or("debug")
            .to_owned();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "sipfork", "--bin", "sipfork"]);
        if profile != "debug" {
            build.args(["--profile", &profile]);
        }
        let status = build
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build -p sipfork");
        assert!(status.success(), "building sipfork failed");
    }
    bin
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A network namespace of this test's own, removed on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("ltst{tag}{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// fork3 over `transport` for 3 s at 100 calls/s, 50 extensions, against the binary; the
/// result, after asserting that the run passed with every device and the caller connected
/// (none without root: network namespaces need it).
fn fork3_over(transport: &str) -> Option<RunResult> {
    if !is_root() {
        eprintln!("skipping: network namespaces need root");
        return None;
    }
    let sf = sipfork_binary();
    let lt = env!("CARGO_BIN_EXE_sipfork-load");
    let dir = std::env::temp_dir().join(format!("sipfork-load-{transport}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ns = Netns::new(transport);
    let args = format!("--preset fork3 --extensions 50 --transport {transport}");
    let (config_args, run_args) = if transport == "tls" || transport == "wss" {
        (
            format!("--tls-dir {}", dir.join("tls").display()),
            format!("--tls-ca {}", dir.join("tls/cert.pem").display()),
        )
    } else {
        (String::new(), String::new())
    };
    // Overload control off: the TLS handshakes of every connection arrive in one burst, and on a
    // busy two-core machine sipfork's load shedding has refused REGISTERs then
    // (`sipfork_overload_shed_total{method="REGISTER",reason="load"}`): the proxy's policy, not
    // what this test checks.
    let script = format!(
        r#"set -u
ip link set lo up
cd {dir}
{lt} proxy-config {args} {config_args} > sf.toml || exit 10
sed -i 's/^rate_limit = 0$/rate_limit = 0\nenabled = false/' sf.toml
{sf} --config sf.toml 2> sf.log &
SF=$!
sleep 0.5
timeout 60 {lt} run {args} {run_args} --rate 100 --duration 3 --drain 3 --quiet --proxy-pid $SF --out {dir} --label run > lt.out 2>&1
RC=$?
kill -TERM $SF; wait $SF
exit $RC
"#,
        dir = dir.display(),
        sf = sf.display(),
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "sh", "-c", &script])
        .output()
        .expect("ip netns exec");
    let log = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    assert!(
        out.status.success(),
        "{transport}: {:?}\n{}\n--- harness\n{}\n--- sipfork\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        log("lt.out"),
        log("sf.log")
    );
    assert!(log("sf.toml").contains(&format!("\"{transport}:127.0.0.1:5060\"")));
    let r = RunResult::read(&dir.join("run.json")).expect("result");
    assert!(r.passed, "{:?}", r.failed_because);
    assert_eq!(r.registration.registered, 150);
    let v = r.verdicts.as_ref().expect("verdicts");
    assert_eq!((v.calls, v.ok), (300, 300), "{v:#?}");
    let io = &r.harness.io_counters;
    assert_eq!(io.get(&format!("backend_{transport}")), Some(&1), "{io:?}");
    assert_eq!(
        io.get("stream_connected"),
        Some(&151),
        "150 devices, 1 caller"
    );
    assert_eq!(io.get("stream_unsent"), Some(&0), "{io:?}");
    assert_eq!(io.get("stream_closed_by_peer"), Some(&0), "{io:?}");
    assert_eq!(io.get("stream_closed_bad"), Some(&0), "{io:?}");
    // Each call: INVITE, ACK, BYE from the caller, 180 and a final from every device, at least.
    assert!(io["stream_messages_out"] >= 300 * 9, "{io:?}");
    assert_eq!(
        r.counters.retransmitted, 0,
        "no retransmission over a stream"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Some(r)
}

#[test]
fn fork3_over_tcp_against_the_sipfork_binary_fails_no_call() {
    if let Some(r) = fork3_over("tcp") {
        assert_eq!(r.scenario.topology.transport, Transport::Tcp);
    }
}

#[test]
fn fork3_over_tls_against_the_sipfork_binary_fails_no_call() {
    if let Some(r) = fork3_over("tls") {
        assert_eq!(r.scenario.topology.transport, Transport::Tls);
    }
}

#[test]
fn fork3_over_ws_against_the_sipfork_binary_fails_no_call() {
    if let Some(r) = fork3_over("ws") {
        assert_eq!(r.scenario.topology.transport, Transport::Ws);
    }
}

#[test]
fn fork3_over_wss_against_the_sipfork_binary_fails_no_call() {
    if let Some(r) = fork3_over("wss") {
        assert_eq!(r.scenario.topology.transport, Transport::Wss);
    }
}
