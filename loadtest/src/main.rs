//! `sipfork-load`: the command line of the load harness. See `loadtest/README.md`.
//!
//! ```text
//! sipfork-load run [--preset NAME | --scenario FILE] [--target ADDR] [--reflector] [overrides...]
//! sipfork-load reflect [--listen ADDR] [--io auto|uring|mmsg] [--coalesce-us N] [--secs N]
//! sipfork-load report RESULT.json [-o OUT.html]
//! sipfork-load compare A.json B.json ... -o OUT.html
//! sipfork-load presets
//! sipfork-load proxy-config [--preset NAME | --scenario FILE] [--target ADDR] [--shards N]
//!                           [--q-groups] [--single-answer] [--digest]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sipfork::engine::io::IoKind;
use sipfork::engine::{start, EngineConfig, Pinning};
use sipfork_load::dashboard;
use sipfork_load::plan::Plan;
use sipfork_load::reflect::HintReflector;
use sipfork_load::result::RunResult;
use sipfork_load::runner::{self, ProxyPids, RunOptions};
use sipfork_load::scenario::{Arrival, Scenario, PRESETS};
use sipfork_load::sim::{sipfork_config, ProxyOptions};

const USAGE: &str = "usage:
  sipfork-load run [--preset NAME | --scenario FILE] [--target 127.0.0.1:5060] [--reflector]
        [--rate N] [--duration S] [--max N] [--drain S] [--arrival constant|poisson] [--seed N]
        [--extensions E] [--devices D] [--loss P] [--single-answer] [--expect-final CODE]
        [--io auto|uring|mmsg] [--coalesce-us N] [--threads 1|2] [--pin CPU[,CPU]] [--spin]
        [--proxy-pid auto|none|PID[,PID]] [--out DIR] [--label TEXT] [--target-name TEXT] [--quiet]
  sipfork-load reflect [--listen 127.0.0.1:5060] [--io auto|uring|mmsg] [--coalesce-us N]
        [--shards N] [--pin CPU[,CPU]] [--secs N]
  sipfork-load report RESULT.json [-o OUT.html]
  sipfork-load compare A.json B.json ... -o OUT.html
  sipfork-load presets
  sipfork-load proxy-config [--preset NAME | --scenario FILE] [--target ADDR] [--shards N]
        [--io auto|uring|mmsg] [--coalesce-us N] [--pin CPU[,CPU]] [--q-groups] [--single-answer]
        [--digest]";

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("sipfork-load: {msg}");
    std::process::exit(2);
}

struct Args {
    rest: Vec<String>,
}

impl Args {
    fn flag(&mut self, name: &str) -> bool {
        match self.rest.iter().position(|a| a == name) {
            Some(i) => {
                self.rest.remove(i);
                true
            }
            None => false,
        }
    }

    fn value(&mut self, name: &str) -> Option<String> {
        let i = self.rest.iter().position(|a| a == name)?;
        if i + 1 >= self.rest.len() {
            fail(format!("{name} needs a value"));
        }
        let v = self.rest.remove(i + 1);
        self.rest.remove(i);
        Some(v)
    }

    fn parsed<T: std::str::FromStr>(&mut self, name: &str) -> Option<T> {
        self.value(name).map(|v| {
            v.parse()
                .unwrap_or_else(|_| fail(format!("{name}: cannot read {v:?}")))
        })
    }

    fn done(self) {
        if let Some(a) = self.rest.first() {
            fail(format!("unknown argument {a:?}\n{USAGE}"));
        }
    }
}

fn cpus(list: &str) -> Vec<usize> {
    list.split(',')
        .map(|c| {
            c.trim()
                .parse()
                .unwrap_or_else(|_| fail(format!("bad CPU list {list:?}")))
        })
        .collect()
}

fn io_kind(v: Option<String>) -> IoKind {
    v.map_or(IoKind::Auto, |v| {
        IoKind::parse(&v).unwrap_or_else(|| fail("--io auto|uring|mmsg"))
    })
}

/// The scenario from `--preset`/`--scenario` with the command-line overrides applied.
fn scenario(a: &mut Args) -> Scenario {
    let mut s = match (a.value("--preset"), a.value("--scenario")) {
        (Some(_), Some(_)) => fail("--preset or --scenario, not both"),
        (Some(p), None) => Scenario::preset(&p).unwrap_or_else(|e| fail(e)),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(&f).unwrap_or_else(|e| fail(format!("{f}: {e}")));
            Scenario::from_toml(&text).unwrap_or_else(|e| fail(format!("{f}: {e}")))
        }
        (None, None) => Scenario::preset("fork3").unwrap_or_else(|e| fail(e)),
    };
    if let Some(v) = a.parsed("--rate") {
        s.load.rate = v;
    }
    if let Some(v) = a.parsed("--duration") {
        s.load.duration_s = v;
    }
    if let Some(v) = a.parsed("--max") {
        s.load.max = v;
    }
    if let Some(v) = a.parsed("--drain") {
        s.load.drain_s = v;
    }
    if let Some(v) = a.value("--arrival") {
        s.load.arrival = match v.as_str() {
            "constant" => Arrival::Constant,
            "poisson" => Arrival::Poisson,
            _ => fail("--arrival constant|poisson"),
        };
    }
    if let Some(v) = a.parsed("--seed") {
        s.load.seed = v;
    }
    if let Some(v) = a.parsed("--extensions") {
        s.topology.extensions = v;
    }
    if let Some(v) = a.parsed("--devices") {
        s.topology.devices = v;
    }
    if let Some(v) = a.parsed("--loss") {
        s.network.loss = v;
    }
    if a.flag("--single-answer") {
        s.expect.single_answer = true;
    }
    if let Some(v) = a.parsed("--expect-final") {
        s.expect.final_status = Some(v);
    }
    if a.flag("--no-registration") {
        s.registration.enabled = false;
    }
    if a.flag("--allow-registration-failures") {
        s.registration.allow_failures = true;
    }
    if let Some(v) = a.parsed("--local-ip") {
        s.topology.ip = v;
    }
    if a.flag("--digest") {
        s.registration.digest = true;
        s.caller.digest = true;
    }
    if let Some(v) = a.parsed("--max-branches") {
        s.expect.max_branches = Some(v);
    }
    s.validate().unwrap_or_else(|e| fail(e));
    s
}

fn cmd_run(mut a: Args, command: String) {
    let mut s = scenario(&mut a);
    let target: SocketAddr = a
        .parsed("--target")
        .unwrap_or_else(|| "127.0.0.1:5060".parse().expect("static address"));
    // A registrar that is not on this machine's loopback is someone's live one: the harness
    // does not remove the bindings of its range unless told to (`--clear`).
    let (clear, no_clear) = (a.flag("--clear"), a.flag("--no-clear"));
    if clear && no_clear {
        fail("--clear or --no-clear, not both");
    }
    s.registration.clear = if clear || no_clear {
        clear
    } else {
        s.registration.clear && target.ip().is_loopback()
    };
    let reflect = a.flag("--reflector");
    let io = io_kind(a.value("--io"));
    let coalesce_us = a.parsed("--coalesce-us").unwrap_or(0);
    let threads = a.parsed("--threads").unwrap_or(1u32);
    if !(1..=2).contains(&threads) {
        fail("--threads 1|2");
    }
    let pin = a.value("--pin").map(|p| cpus(&p));
    let spin = a.flag("--spin");
    let proxy_pids = match a.value("--proxy-pid").as_deref() {
        None | Some("auto") => ProxyPids::Auto,
        Some("none") => ProxyPids::Off,
        Some(list) => ProxyPids::Given(
            list.split(',')
                .map(|p| {
                    p.parse()
                        .unwrap_or_else(|_| fail("--proxy-pid auto|none|PID[,PID]"))
                })
                .collect(),
        ),
    };
    let label = a.value("--label").unwrap_or_else(|| {
        format!(
            "{}-{}-r{}",
            s.name,
            if reflect { "reflector" } else { "proxy" },
            s.load.rate
        )
    });
    let target_name = a.value("--target-name").unwrap_or_default();
    let out_dir = Some(PathBuf::from(
        a.value("--out").unwrap_or_else(|| "loadtest/runs".into()),
    ));
    let progress = !a.flag("--quiet");
    let ramp = a
        .value("--ramp")
        .map(|r| sipfork_load::sweep::parse_ramp(&r).unwrap_or_else(|e| fail(e)));
    let keep_going = a.flag("--keep-going");
    a.done();
    let o = RunOptions {
        scenario: s,
        target,
        reflect,
        io,
        coalesce_us,
        threads,
        pin,
        spin,
        proxy_pids,
        label,
        target_name,
        out_dir: out_dir.clone(),
        progress,
        command,
    };
    if let Some(rates) = ramp {
        return cmd_sweep(o, &rates, keep_going);
    }
    let r = runner::run(o).unwrap_or_else(|e| fail(e));
    print_summary(&r, out_dir.as_deref());
    if !r.passed {
        std::process::exit(1);
    }
}

/// `--ramp`: one run per rate, the knee, one page; exit 0 when some rate passed.
fn cmd_sweep(o: RunOptions, rates: &[f64], keep_going: bool) {
    use sipfork_load::sweep;
    let dir = o.out_dir.clone();
    let label = o.label.clone();
    let results = sweep::sweep(&o, rates, keep_going, |r| {
        print_summary(r, dir.as_deref());
    })
    .unwrap_or_else(|e| fail(e));
    let summary = sweep::summarize(&label, &results);
    println!(
        "SWEEP label={label} rates={:?} knee={}",
        summary.runs,
        summary.knee.map_or("none".to_owned(), |k| format!("{k}"))
    );
    if let Some(dir) = &dir {
        let page = dir.join(format!("{label}-sweep.html"));
        let json = dir.join(format!("{label}-sweep.json"));
        std::fs::write(&page, dashboard::sweep_page(&results, summary.knee))
            .unwrap_or_else(|e| fail(e));
        std::fs::write(
            &json,
            serde_json::to_string_pretty(&summary).unwrap_or_default(),
        )
        .unwrap_or_else(|e| fail(e));
        println!("  wrote {} and {}", page.display(), json.display());
    }
    if summary.knee.is_none() {
        std::process::exit(1);
    }
}

fn print_summary(r: &RunResult, dir: Option<&std::path::Path>) {
    use sipfork_load::metrics::Metric;
    let l = |m: Metric| {
        let s = r.latency(m);
        format!("p50={} p99={} p99.9={} max={}", s.p50, s.p99, s.p999, s.max)
    };
    let (ok, failed) = match &r.verdicts {
        Some(v) => (v.ok, v.failed),
        None => (r.registration.storm_ok, r.registration.storm_failed),
    };
    println!(
        "RESULT label={} scenario={} mode={} rate={} started={} ok={ok} failed={failed} success_pct={:.3} passed={}{}",
        r.label,
        r.scenario.name,
        r.target.mode,
        r.load.rate,
        r.load.started,
        r.success_pct,
        r.passed,
        if r.partial { " partial=true" } else { "" }
    );
    for why in &r.failed_because {
        println!("  failed: {why}");
    }
    println!(
        "  registration registered={} failed={} clear_failed={}",
        r.registration.registered, r.registration.failed, r.registration.clear_failed
    );
    if let Some(c) = &r.cpu {
        println!(
            "  cpu window_s={:.2} proxy_pct={:.1} proxy_us_per_call={:.1} harness_pct={:.1} harness_us_per_call={:.1} machine_busy_pct={:.1} other_pct={:.1} udp_rcvbuf_drops={}",
            c.window_s,
            c.proxy_pct,
            c.proxy_us_per_call,
            c.harness_pct,
            c.harness_us_per_call,
            c.machine_busy_pct,
            c.other_pct,
            c.udp_rcvbuf_errors.map_or("?".into(), |v| v.to_string())
        );
    }
    if r.load.kind == "register" {
        println!("  register_to_200_us {}", l(Metric::Register));
    } else {
        println!("  invite_to_180_us {}", l(Metric::Invite180));
        println!("  cancel_latency_us {}", l(Metric::CancelLatency));
        println!("  invite_to_200_us {}", l(Metric::Invite200));
    }
    println!(
        "  retransmitted={} send_lag_p99_us={}",
        r.counters.retransmitted,
        r.latency(Metric::SendLag).p99
    );
    if let Some(v) = &r.verdicts {
        if !v.failures.is_empty() {
            println!("  failures {:?} examples {:?}", v.failures, v.examples);
            for (e, rec) in v.examples.iter().zip(&v.example_records).take(3) {
                println!("  call {}: {rec}", e.0);
            }
        }
        for (race, c) in &v.races {
            println!(
                "  race {race:?} scripted={} provoked={} not_provoked={} outcomes={:?}",
                c.scripted, c.provoked, c.not_provoked, c.outcomes
            );
        }
    }
    if let Some(d) = dir {
        println!("  wrote {}", d.join(format!("{}.json", r.label)).display());
    }
}

fn cmd_reflect(mut a: Args) {
    let listen: SocketAddr = a
        .parsed("--listen")
        .unwrap_or_else(|| "127.0.0.1:5060".parse().expect("static address"));
    if !listen.ip().is_loopback() {
        fail("--listen must be a loopback address");
    }
    let mut config = EngineConfig::new(listen, a.parsed("--shards").unwrap_or(1));
    config.io = io_kind(a.value("--io"));
    let coalesce: u64 = a.parsed("--coalesce-us").unwrap_or(0);
    config.io_options.coalesce = (coalesce > 0).then(|| Duration::from_micros(coalesce));
    config.pinning = match a.value("--pin") {
        Some(p) => Pinning::Cores(cpus(&p)),
        None => Pinning::Off,
    };
    let secs: u64 = a.parsed("--secs").unwrap_or(300);
    if !(1..=3600).contains(&secs) {
        fail("--secs must be 1..=3600");
    }
    a.done();
    let engine = start(config, |_, _| HintReflector::new()).unwrap_or_else(|e| fail(e));
    let stop = engine.stop_handle();
    println!(
        "reflector listening on {:?} (pid {}), stops after {secs} s or SIGTERM",
        engine.local_addrs(),
        std::process::id()
    );
    install_sigterm();
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < until && !terminated() {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.stop();
    let stats = engine.stats();
    let handlers = engine.shutdown().unwrap_or_else(|e| fail(e));
    for (h, s) in handlers.iter().zip(stats) {
        println!(
            "DONE shard={} backend={} received={} sent={} without_hint={} waits={} per_busy_turn={:.2}",
            s.shard.0,
            s.backend,
            h.stats.received,
            h.stats.sent,
            h.stats.without_hint,
            s.io.waits,
            s.per_busy_turn()
        );
    }
}

static TERMINATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    TERMINATED.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn install_sigterm() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

fn terminated() -> bool {
    TERMINATED.load(std::sync::atomic::Ordering::SeqCst)
}

fn cmd_report(mut a: Args) {
    let out = a.value("-o");
    let input = a.rest.first().cloned().unwrap_or_else(|| fail(USAGE));
    a.rest.remove(0);
    a.done();
    let r = RunResult::read(std::path::Path::new(&input)).unwrap_or_else(|e| fail(e));
    let out = out.unwrap_or_else(|| input.trim_end_matches(".json").to_owned() + ".html");
    std::fs::write(&out, dashboard::run_page(&r)).unwrap_or_else(|e| fail(e));
    println!("wrote {out}");
}

fn cmd_compare(mut a: Args) {
    let out = a
        .value("-o")
        .unwrap_or_else(|| fail("compare needs -o OUT.html"));
    let runs: Vec<RunResult> = a
        .rest
        .drain(..)
        .map(|f| RunResult::read(std::path::Path::new(&f)).unwrap_or_else(|e| fail(e)))
        .collect();
    if runs.is_empty() {
        fail(USAGE);
    }
    std::fs::write(&out, dashboard::compare_page(&runs)).unwrap_or_else(|e| fail(e));
    println!("wrote {out}");
}

fn cmd_proxy_config(mut a: Args) {
    let s = scenario(&mut a);
    let target: SocketAddr = a
        .parsed("--target")
        .unwrap_or_else(|| "127.0.0.1:5060".parse().expect("static address"));
    let o = ProxyOptions {
        q_groups: a.flag("--q-groups"),
        // `scenario` took `--single-answer` as the scenario's expectation: the proxy must match it.
        single_answer: s.expect.single_answer,
        // `scenario` took `--digest` (digest REGISTERs and INVITEs): the proxy must challenge.
        digest: s.registration.digest || s.caller.digest,
        shards: a.parsed("--shards").unwrap_or(1),
        io: a.value("--io"),
        coalesce_us: a.parsed("--coalesce-us"),
        pin_cores: a.value("--pin").map(|p| cpus(&p)),
        max_contacts: None,
        algorithms: None,
    };
    a.done();
    let plan = Plan::new(s, target, false, 0).unwrap_or_else(|e| fail(e));
    print!("{}", sipfork_config(&plan, &o));
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let command = argv.join(" ");
    let Some(sub) = argv.get(1).cloned() else {
        fail(USAGE)
    };
    let a = Args {
        rest: argv[2..].to_vec(),
    };
    match sub.as_str() {
        "run" => cmd_run(a, command),
        "reflect" => cmd_reflect(a),
        "report" => cmd_report(a),
        "compare" => cmd_compare(a),
        "proxy-config" => cmd_proxy_config(a),
        "presets" => {
            for (name, _) in PRESETS {
                let s = Scenario::preset(name).unwrap_or_else(|e| fail(e));
                println!("{name:24} {}", s.description);
            }
        }
        "-h" | "--help" | "help" => println!("{USAGE}"),
        other => fail(format!("unknown command {other:?}\n{USAGE}")),
    }
}
