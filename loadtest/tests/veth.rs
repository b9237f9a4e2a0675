//! A whole run between two network namespaces this test creates, joined by a veth pair: sipfork
//! (in this process, its engine threads in the proxy's namespace) on one end, the
//! `sipfork-load` binary (`--target`, `--local-ip`, `--digest`) on the other, over IPv4 and
//! IPv6. Needs root and ip(8); without them it says why and passes without running.

use std::process::Command;
use std::sync::mpsc;

mod common;
use common::netns::{enter, Namespaces};
use common::run_fork3_from_harness;
use sipfork_load::plan::Plan;
use sipfork_load::result::RunResult;
use sipfork_load::scenario::Scenario;
use sipfork_load::sim::{sipfork_config, ProxyOptions};

fn scenario(local: std::net::IpAddr) -> Scenario {
    let mut s = Scenario::preset("fork3").unwrap();
    s.topology.extensions = 10;
    s.topology.ip = local;
    s.load.rate = 100.0;
    s.load.duration_s = 0.3;
    s.load.max = 30;
    s.registration.digest = true;
    s.caller.digest = true;
    s.caller.hold_ms = sipfork_load::scenario::Dist::Const(50.0);
    s
}

/// sipfork serving `cfg` in namespace `ns`, until `stop` says so.
fn proxy(
    ns: String,
    cfg: String,
    ready: mpsc::Sender<Result<(), String>>,
    stop: mpsc::Receiver<()>,
) {
    let started = enter(&ns)
        .map_err(|e| format!("setns {ns}: {e}"))
        .and_then(|()| common::start_sipfork(&cfg));
    match started {
        Ok(engine) => {
            let _ = ready.send(Ok(()));
            let _ = stop.recv();
            engine.stop_handle().stop();
            let _ = engine.shutdown();
        }
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
}

#[test]
fn a_run_over_a_veth_pair_between_two_namespaces_passes() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: creating network namespaces and a veth pair needs root");
        return;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipped: ip(8) (iproute2) is not installed");
        return;
    }
    let tag = format!("lt{}", std::process::id() % 100_000);
    let ns =
        Namespaces::create(&tag, None, "10.213.0", "fd00:5f").expect("namespaces and veth pair");
    let dir = std::env::temp_dir().join(format!("sipfork-load-veth-{}", std::process::id()));
    for (target, local, label) in [
        ("10.213.0.1:5060", "10.213.0.2", "veth4"),
        ("[fd00:5f::1]:5060", "fd00:5f::2", "veth6"),
    ] {
        let target: std::net::SocketAddr = target.parse().unwrap();
        let plan = Plan::new(scenario(local.parse().unwrap()), target, false, 1).unwrap();
        let cfg = sipfork_config(
            &plan,
            &ProxyOptions {
                digest: true,
                ..ProxyOptions::default()
            },
        );
        let (ready_tx, ready) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel();
        let ns_proxy = ns.proxy.clone();
        let proxy = std::thread::spawn(move || proxy(ns_proxy, cfg, ready_tx, stop_rx));
        ready
            .recv()
            .unwrap()
            .expect("sipfork starts in the proxy namespace");
        let out = run_fork3_from_harness(&ns, target, local, label, &dir);
        let _ = stop.send(());
        proxy.join().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{label}: exit {:?}\n{stdout}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        let r = RunResult::read(&dir.join(format!("{label}.json"))).unwrap();
        assert!(r.passed, "{label}: {:?}", r.failed_because);
        assert_eq!(r.target.address, target.to_string());
        assert_eq!(r.registration.registered, 30, "{label}");
        assert!(
            !r.scenario.registration.clear,
            "not loopback: no Contact: * clears"
        );
        let v = r.verdicts.as_ref().unwrap();
        assert_eq!((v.calls, v.ok), (30, 30), "{label}: {v:#?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
