//! What several integration tests share: sipfork itself and the null reflector, in this
//! process.
#![allow(dead_code)] // each test file uses part of it

pub mod netns;

use netns::Namespaces;

use std::net::SocketAddr;

use std::sync::Arc;

use sipfork::app::shard::Shard;
use sipfork::config::Config;
use sipfork::core::transaction::TimerValues;
use sipfork::core::{Core, CoreParams};
use sipfork::engine::io::IoKind;
use sipfork::engine::{start, Engine, EngineConfig, Pinning};
use sipfork_load::reflect::HintReflector;

/// sipfork serving `cfg` (a configuration's text) on its listen address, one shard, recvmmsg,
/// no persistence. Its threads are in the calling thread's network namespace.
pub fn start_sipfork(cfg: &str) -> Result<Engine<Shard>, String> {
    let cfg = Arc::new(Config::from_toml(cfg).map_err(|e| e.to_string())?);
    let listen = cfg.server.listen;
    let mut engine = EngineConfig::new(listen, 1);
    engine.io = IoKind::Mmsg;
    engine.pinning = Pinning::Off;
    start(engine, move |id, clock| {
        let core = Core::new(
            Arc::clone(&cfg),
            CoreParams {
                shard: id,
                shards: 1,
                local: listen,
                secret: [9; 32],
                wall_epoch_us: 1_800_000_000_000_000,
                timers: TimerValues::default(),
            },
            clock.now(),
        );
        Shard::new(core, None)
    })
    .map_err(|e| e.to_string())
}

/// The null reflector on an ephemeral 127.0.0.1 port, recvmmsg, and its address.
pub fn start_reflector() -> (Engine<HintReflector>, SocketAddr) {
    let mut config = EngineConfig::new("127.0.0.1:0".parse().expect("static address"), 1);
    config.pinning = Pinning::Off;
    config.io = IoKind::Mmsg;
    let engine = start(config, |_, _| HintReflector::new()).expect("reflector starts");
    let addr = engine.local_addrs()[0];
    (engine, addr)
}

/// `RunOptions` of a quiet reflector run of `s` labelled `label`, writing into `dir`.
pub fn reflector_run(
    s: sipfork_load::scenario::Scenario,
    target: SocketAddr,
    label: &str,
    dir: &std::path::Path,
) -> sipfork_load::runner::RunOptions {
    sipfork_load::runner::RunOptions {
        reflect: true,
        io: IoKind::Mmsg,
        proxy_pids: sipfork_load::runner::ProxyPids::Off,
        target_name: "in-process reflector".into(),
        out_dir: Some(dir.to_path_buf()),
        command: "test".into(),
        ..sipfork_load::runner::RunOptions::new(s, target, label)
    }
}

/// The `sipfork-load` binary in the harness's namespace: 30 fork3 calls with digest at 100/s to
/// `target`, its sockets on `local`, result files in `dir` as `label`.
pub fn run_fork3_from_harness(
    ns: &Namespaces,
    target: std::net::SocketAddr,
    local: &str,
    label: &str,
    dir: &std::path::Path,
) -> std::process::Output {
    run_fork3_with(ns, target, local, label, dir, &[])
}

/// [`run_fork3_from_harness`] with `extra` arguments (such as `--reflector`).
pub fn run_fork3_with(
    ns: &Namespaces,
    target: std::net::SocketAddr,
    local: &str,
    label: &str,
    dir: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.harness,
            env!("CARGO_BIN_EXE_sipfork-load"),
        ])
        .args(["run", "--preset", "fork3", "--extensions", "10"])
        .args([
            "--rate",
            "100",
            "--duration",
            "0.3",
            "--max",
            "30",
            "--digest",
        ])
        .args(["--target", &target.to_string(), "--local-ip", local])
        .args(["--proxy-pid", "none", "--quiet", "--label", label])
        .args(extra)
        .arg("--out")
        .arg(dir)
        .output()
        .expect("sipfork-load runs")
}
