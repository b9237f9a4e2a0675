//! `sipfork-load`: the command line of the load harness (clap). See `loadtest/README.md`.
//!
//! Exit codes: 0 the run passed (every call passed its verdict, every device registered); 1 it
//! did not (a call failed, a device did not register, a sweep found no passing rate, a merged
//! run failed); 2 a usage or setup error (bad arguments, unreadable files, sockets that cannot be
//! bound); 130 interrupted by SIGINT/SIGTERM (the partial result was written).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sipfork::engine::io::xdp::{XdpMode, XdpOptions};
use sipfork::engine::io::IoKind;
use sipfork::engine::{start, EngineConfig, Pinning};
use sipfork_load::dashboard;
use sipfork_load::plan::Plan;
use sipfork_load::reflect::HintReflector;
use sipfork_load::result::RunResult;
use sipfork_load::runner::{self, ProxyPids, RunOptions};
use sipfork_load::scenario::{Arrival, Scenario, Transport, PRESETS};
use sipfork_load::sim::{sipfork_config, ProxyOptions};

/// Exit code of an interrupted run (128 + SIGINT).
const EXIT_INTERRUPTED: i32 = 130;

const EXIT_CODES: &str = "Exit codes: 0 passed; 1 failed (a call failed its verdict, a device did \
not register, a sweep found no passing rate); 2 usage or setup error; 130 interrupted (SIGINT/SIGTERM: \
the partial result was written with \"partial\": true).";

/// Open-loop SIP forking load harness: plays caller and devices against any proxy, checks every
/// call, measures µs latencies.
#[derive(Parser)]
#[command(name = "sipfork-load", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register the devices, place calls at an open-loop rate, judge every call, write
    /// OUT/LABEL.json and OUT/LABEL.html.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// A rate sweep: `run` at each rate of --ramp FROM:TO:STEP, the knee, one page.
    #[command(after_help = EXIT_CODES)]
    Sweep(RunArgs),
    /// Merge the results of N harness instances (`run --instance i/N`) into one.
    Merge(MergeArgs),
    /// The null reflector: sends each datagram to the addresses of its hint, no SIP work.
    Reflect(ReflectArgs),
    /// Re-render a result's dashboard.
    Report {
        /// A result file (LABEL.json).
        input: PathBuf,
        /// The page to write (default: the input with .html).
        #[arg(short = 'o', long = "out")]
        out: Option<PathBuf>,
    },
    /// Runs side by side on one page.
    Compare {
        /// Result files.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The page to write.
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
    },
    /// List the built-in presets.
    Presets,
    /// Print a sipfork configuration serving the scenario's extensions.
    ProxyConfig(ProxyConfigArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum ArrivalArg {
    Constant,
    Poisson,
}

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

#[derive(Clone, Copy, ValueEnum)]
enum IoArg {
    Auto,
    Uring,
    Mmsg,
}

impl IoArg {
    fn kind(self) -> IoKind {
        match self {
            IoArg::Auto => IoKind::Auto,
            IoArg::Uring => IoKind::Uring,
            IoArg::Mmsg => IoKind::Mmsg,
        }
    }

    fn name(self) -> &'static str {
        match self {
            IoArg::Auto => "auto",
            IoArg::Uring => "uring",
            IoArg::Mmsg => "mmsg",
        }
    }
}

/// The scenario and its overrides (run, sweep, proxy-config).
#[derive(Args)]
struct ScenarioArgs {
    /// A built-in preset (default fork3; `presets` lists them).
    #[arg(long, conflicts_with = "scenario")]
    preset: Option<String>,
    /// A scenario TOML file.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Calls (or storm REGISTERs) per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of generation.
    #[arg(long)]
    duration: Option<f64>,
    /// At most this many calls.
    #[arg(long)]
    max: Option<u64>,
    /// Seconds to wait after generation for every call to end.
    #[arg(long)]
    drain: Option<f64>,
    /// Arrival process.
    #[arg(long, value_enum)]
    arrival: Option<ArrivalArg>,
    /// Seed of every random choice.
    #[arg(long)]
    seed: Option<u64>,
    /// The number call 0 carries in its identifiers (Call-ID, branch, From tag).
    #[arg(long, value_name = "N")]
    call_base: Option<u32>,
    /// Extensions called round robin.
    #[arg(long)]
    extensions: Option<u32>,
    /// Devices per extension.
    #[arg(long)]
    devices: Option<u32>,
    /// Drop probability on every lossy leg.
    #[arg(long)]
    loss: Option<f64>,
    /// The proxy forwards one 2xx only (it ACKs and BYEs late answers itself).
    #[arg(long)]
    single_answer: bool,
    /// The final status the caller must get when nobody answers.
    #[arg(long)]
    expect_final: Option<u16>,
    /// The proxy rings at most N devices per call (its max_branches).
    #[arg(long, value_name = "N")]
    max_branches: Option<u32>,
    /// The Expires the devices ask for, seconds (they refresh at half of it while calls run).
    #[arg(long, value_name = "SECS")]
    expires: Option<u32>,
    /// Skip the registration phase (the proxy already knows the devices).
    #[arg(long)]
    no_registration: bool,
    /// Devices that fail to register do not fail the run.
    #[arg(long)]
    allow_registration_failures: bool,
    /// Digest: answer 401 to REGISTERs and 407 to INVITEs with the extension's credentials
    /// (proxy-config: a proxy that challenges).
    #[arg(long)]
    digest: bool,
    /// The harness's sockets' IP (an address of this machine the proxy reaches).
    #[arg(long, value_name = "IP")]
    local_ip: Option<IpAddr>,
    /// Devices register here instead of at the target: device k of every extension at the
    /// (k mod N)-th address (a cluster: calls to one node, devices on several).
    #[arg(long, value_name = "ADDR[,ADDR]", value_delimiter = ',')]
    register_at: Vec<SocketAddr>,
    /// What the devices and callers talk to the proxy over: one UDP socket each, or one TCP,
    /// TLS, WebSocket or secure WebSocket connection each from its own port (proxy-config: the
    /// proxy listens on it too).
    #[arg(long, value_enum)]
    transport: Option<TransportArg>,
    /// This is harness instance i of N against one proxy (its own extensions, ports and 1/N of
    /// the rate); `merge` adds the results.
    #[arg(long, value_name = "i/N")]
    instance: Option<String>,
}

impl ScenarioArgs {
    /// The scenario with the overrides applied, and the instance it is narrowed to.
    fn scenario(&self) -> (Scenario, Option<(u32, u32)>) {
        let mut s = match (&self.preset, &self.scenario) {
            (Some(p), _) => Scenario::preset(p).unwrap_or_else(|e| fail(e)),
            (None, Some(f)) => {
                let text = std::fs::read_to_string(f)
                    .unwrap_or_else(|e| fail(format!("{}: {e}", f.display())));
                Scenario::from_toml(&text).unwrap_or_else(|e| fail(format!("{}: {e}", f.display())))
            }
            (None, None) => Scenario::preset("fork3").unwrap_or_else(|e| fail(e)),
        };
        let l = &mut s.load;
        l.rate = self.rate.unwrap_or(l.rate);
        l.duration_s = self.duration.unwrap_or(l.duration_s);
        l.max = self.max.unwrap_or(l.max);
        l.drain_s = self.drain.unwrap_or(l.drain_s);
        l.seed = self.seed.unwrap_or(l.seed);
        l.call_base = self.call_base.unwrap_or(l.call_base);
        if let Some(a) = self.arrival {
            l.arrival = match a {
                ArrivalArg::Constant => Arrival::Constant,
                ArrivalArg::Poisson => Arrival::Poisson,
            };
        }
        let t = &mut s.topology;
        t.extensions = self.extensions.unwrap_or(t.extensions);
        t.devices = self.devices.unwrap_or(t.devices);
        t.ip = self.local_ip.unwrap_or(t.ip);
        if !self.register_at.is_empty() {
            t.registrars.clone_from(&self.register_at);
        }
        if let Some(tr) = self.transport {
            t.transport = match tr {
                TransportArg::Udp => Transport::Udp,
                TransportArg::Tcp => Transport::Tcp,
                TransportArg::Tls => Transport::Tls,
                TransportArg::Ws => Transport::Ws,
                TransportArg::Wss => Transport::Wss,
            };
        }
        s.network.loss = self.loss.unwrap_or(s.network.loss);
        s.expect.single_answer |= self.single_answer;
        s.expect.final_status = self.expect_final.or(s.expect.final_status);
        s.expect.max_branches = self.max_branches.or(s.expect.max_branches);
        s.registration.expires = self.expires.unwrap_or(s.registration.expires);
        s.registration.enabled &= !self.no_registration;
        s.registration.allow_failures |= self.allow_registration_failures;
        if self.digest {
            s.registration.digest = true;
            s.caller.digest = true;
        }
        s.validate().unwrap_or_else(|e| fail(e));
        let instance = self.instance.as_deref().map(|text| {
            let (i, n) = sipfork_load::merge::parse_instance(text).unwrap_or_else(|e| fail(e));
            sipfork_load::merge::apply_instance(&mut s, i, n).unwrap_or_else(|e| fail(e));
            (i, n)
        });
        (s, instance)
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    scenario: ScenarioArgs,
    /// The proxy's address (IPv4 or [IPv6]:port).
    #[arg(long, default_value = "127.0.0.1:5060")]
    target: SocketAddr,
    /// Null reflector mode (`reflect` runs at the target).
    #[arg(long)]
    reflector: bool,
    /// Remove every binding of the range first (Contact: *); the default on a loopback target.
    #[arg(long, conflicts_with = "no_clear")]
    clear: bool,
    /// Do not remove bindings first; the default when the target is not loopback.
    #[arg(long)]
    no_clear: bool,
    /// The harness's I/O backend.
    #[arg(long, value_enum, default_value = "auto")]
    io: IoArg,
    /// The harness's coalescing window, µs (0: off).
    #[arg(long, default_value_t = 0)]
    coalesce_us: u64,
    /// 1: one harness thread; 2: callers and devices apart.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=2))]
    threads: u32,
    /// Pin the harness threads to these CPUs.
    #[arg(long, value_name = "CPU[,CPU]", value_parser = cpus)]
    pin: Option<Vec<usize>>,
    /// Busy-poll instead of sleeping.
    #[arg(long)]
    spin: bool,
    /// The proxy's processes for its CPU: auto (who holds the target's port), none, or PIDs.
    #[arg(long, default_value = "auto", value_name = "auto|none|PID[,PID]")]
    proxy_pid: String,
    /// Where LABEL.json and LABEL.html go.
    #[arg(long, default_value = "loadtest/runs")]
    out: PathBuf,
    /// Name of the run (files, legends).
    #[arg(long)]
    label: Option<String>,
    /// What runs at the target, for the report.
    #[arg(long, default_value = "")]
    target_name: String,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
    /// A sweep: one run per rate FROM:TO:STEP.
    #[arg(long, value_name = "FROM:TO:STEP")]
    ramp: Option<String>,
    /// A sweep runs every rate, also after one failed.
    #[arg(long)]
    keep_going: bool,
    /// Write a JSON line of live counters this often (e.g. 1s, 500ms).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    stats_every: Option<Duration>,
    /// Where the JSON lines go (`-`: stdout; default OUT/LABEL.stats.jsonl).
    #[arg(long, value_name = "PATH")]
    stats_file: Option<PathBuf>,
    /// `--transport tls|wss`: PEM file of the certificate(s) to trust (proxy-config --tls-dir
    /// writes DIR/cert.pem).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
}

#[derive(Args)]
struct MergeArgs {
    /// The instances' result files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// The merged result to write (its .html beside it).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
}

#[derive(Args)]
struct ReflectArgs {
    /// Listen address: loopback, or any address inside a named network namespace (`ip netns
    /// exec`, as tests and `scripts/xdp_bench.sh` run it).
    #[arg(long, default_value = "127.0.0.1:5060")]
    listen: SocketAddr,
    /// I/O backend.
    #[arg(long, value_enum, default_value = "auto")]
    io: IoArg,
    /// AF_XDP on this interface instead of --io (as sipfork's `io = "xdp"`: shard i binds
    /// queue i; --listen must be an address of the interface).
    #[arg(long, value_name = "INTERFACE", conflicts_with = "io")]
    xdp: Option<String>,
    /// XDP attach mode with --xdp: auto, native or generic.
    #[arg(long, default_value = "auto", requires = "xdp", value_parser = xdp_mode)]
    xdp_mode: XdpMode,
    /// Coalescing window, µs (0: off).
    #[arg(long, default_value_t = 0)]
    coalesce_us: u64,
    /// Shards.
    #[arg(long, default_value_t = 1)]
    shards: u16,
    /// Pin the shards to these CPUs.
    #[arg(long, value_name = "CPU[,CPU]", value_parser = cpus)]
    pin: Option<Vec<usize>>,
    /// Stop after this many seconds (or SIGTERM).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    secs: u64,
}

#[derive(Args)]
struct ProxyConfigArgs {
    #[command(flatten)]
    scenario: ScenarioArgs,
    /// The proxy's listen address.
    #[arg(long, default_value = "127.0.0.1:5060")]
    target: SocketAddr,
    /// Shards.
    #[arg(long, default_value_t = 1)]
    shards: u16,
    /// I/O backend.
    #[arg(long, value_enum)]
    io: Option<IoArg>,
    /// Coalescing window, µs.
    #[arg(long)]
    coalesce_us: Option<u32>,
    /// Pin the shards to these CPUs.
    #[arg(long, value_name = "CPU[,CPU]", value_parser = cpus)]
    pin: Option<Vec<usize>>,
    /// fork = "q-groups".
    #[arg(long)]
    q_groups: bool,
    /// With `--transport tls|wss`: write a self-signed certificate for the target's IP into
    /// DIR/cert.pem and DIR/key.pem, named by the config's `[tls]` (the harness's --tls-ca is
    /// DIR/cert.pem).
    #[arg(long, value_name = "DIR")]
    tls_dir: Option<PathBuf>,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("sipfork-load: {msg}");
    std::process::exit(2);
}

fn cpus(list: &str) -> Result<Vec<usize>, String> {
    list.split(',')
        .map(|c| {
            c.trim()
                .parse()
                .map_err(|_| format!("bad CPU list {list:?}"))
        })
        .collect()
}

/// `1s`, `500ms`, `2.5s`, `1m`.
fn duration(text: &str) -> Result<Duration, String> {
    let (num, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((text, "s"), |i| text.split_at(i));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{text:?}: want e.g. 1s or 500ms"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("{text:?}: unit ms, s or m")),
    };
    if !(0.01..=3600.0).contains(&secs) {
        return Err(format!("{text:?}: between 10ms and 1h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn cmd_run(a: RunArgs, sweep: bool) {
    let (mut s, instance) = a.scenario.scenario();
    // A registrar that is not on this machine's loopback is someone's live one: the harness
    // does not remove the bindings of its range unless told to (`--clear`).
    s.registration.clear = if a.clear || a.no_clear {
        a.clear
    } else {
        s.registration.clear && a.target.ip().is_loopback()
    };
    let proxy_pids = match a.proxy_pid.as_str() {
        "auto" => ProxyPids::Auto,
        "none" => ProxyPids::Off,
        list => ProxyPids::Given(
            list.split(',')
                .map(|p| {
                    p.parse()
                        .unwrap_or_else(|_| fail("--proxy-pid auto|none|PID[,PID]"))
                })
                .collect(),
        ),
    };
    let label = a.label.clone().unwrap_or_else(|| {
        format!(
            "{}-{}-r{}",
            s.name,
            if a.reflector { "reflector" } else { "proxy" },
            s.load.rate
        )
    });
    let label = match instance {
        Some((i, n)) => format!("{label}-i{i}of{n}"),
        None => label,
    };
    let ramp = a
        .ramp
        .as_deref()
        .map(|r| sipfork_load::sweep::parse_ramp(r).unwrap_or_else(|e| fail(e)));
    if sweep && ramp.is_none() {
        fail("sweep needs --ramp FROM:TO:STEP");
    }
    let out_dir = Some(a.out.clone());
    let o = RunOptions {
        scenario: s,
        target: a.target,
        reflect: a.reflector,
        io: a.io.kind(),
        coalesce_us: a.coalesce_us,
        threads: a.threads,
        pin: a.pin.clone(),
        spin: a.spin,
        proxy_pids,
        label,
        target_name: a.target_name.clone(),
        out_dir: out_dir.clone(),
        progress: !a.quiet,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        stats_every: a.stats_every,
        stats_out: a.stats_file.clone(),
        instance,
        tls_ca: a.tls_ca.clone(),
    };
    runner::on_interrupt();
    if let Some(rates) = ramp {
        return cmd_sweep(o, &rates, a.keep_going);
    }
    let r = runner::run(o).unwrap_or_else(|e| fail(e));
    print_summary(&r, out_dir.as_deref());
    if r.partial {
        std::process::exit(EXIT_INTERRUPTED);
    }
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
    if results.last().is_some_and(|r| r.partial) {
        std::process::exit(EXIT_INTERRUPTED);
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
        "  registration registered={} failed={} clear_failed={} refreshed={} refresh_failed={}",
        r.registration.registered,
        r.registration.failed,
        r.registration.clear_failed,
        r.registration.refreshed,
        r.registration.refresh_failed
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

fn cmd_merge(a: MergeArgs) {
    let runs: Vec<RunResult> = a
        .inputs
        .iter()
        .map(|f| RunResult::read(f).unwrap_or_else(|e| fail(e)))
        .collect();
    let label = a
        .out
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".json").unwrap_or(n).to_owned())
        .unwrap_or_else(|| fail("merge: -o names a file"));
    let m = sipfork_load::merge::merge(&label, &runs).unwrap_or_else(|e| fail(e));
    let dir = a
        .out
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    runner::write_outputs(&dir, &m).unwrap_or_else(|e| fail(e));
    print_summary(&m, Some(&dir));
    if !m.passed {
        std::process::exit(1);
    }
}

/// Whether this process runs in a named network namespace (`ip netns add`, as tests and the
/// bench scripts make them: `ip netns exec NAME`): its namespace is one of `/run/netns/*`.
fn in_named_netns() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(me) = std::fs::metadata("/proc/thread-self/ns/net") else {
        return false;
    };
    std::fs::read_dir("/run/netns").is_ok_and(|dir| {
        dir.flatten().any(|e| {
            std::fs::metadata(e.path()).is_ok_and(|m| m.dev() == me.dev() && m.ino() == me.ino())
        })
    })
}

fn xdp_mode(s: &str) -> Result<XdpMode, String> {
    XdpMode::parse(s).ok_or_else(|| format!("{s:?}: auto, native or generic"))
}

fn cmd_reflect(a: ReflectArgs) {
    if !a.listen.ip().is_loopback() && !in_named_netns() {
        fail("--listen must be a loopback address, or the reflector must run in a namespace of ip netns add (ip netns exec)");
    }
    let mut config = EngineConfig::new(a.listen, a.shards);
    config.io = a.io.kind();
    if let Some(interface) = a.xdp {
        config.io = IoKind::Xdp;
        config.xdp = Some(XdpOptions {
            mode: a.xdp_mode,
            ..XdpOptions::new(interface)
        });
    }
    config.io_options.coalesce = (a.coalesce_us > 0).then(|| Duration::from_micros(a.coalesce_us));
    config.pinning = match a.pin {
        Some(p) => Pinning::Cores(p),
        None => Pinning::Off,
    };
    let secs = a.secs;
    let engine = start(config, |_, _| HintReflector::new()).unwrap_or_else(|e| fail(e));
    let stop = engine.stop_handle();
    println!(
        "reflector listening on {:?} (pid {}), stops after {secs} s or SIGTERM",
        engine.local_addrs(),
        std::process::id()
    );
    runner::on_interrupt();
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < until
        && !runner::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.stop();
    let stats = engine.stats();
    let handlers = engine.shutdown().unwrap_or_else(|e| fail(e));
    for (h, s) in handlers.iter().zip(stats) {
        println!(
            "DONE shard={} backend={} received={} sent={} without_hint={} xdp_rx={} xdp_tx={} waits={} per_busy_turn={:.2}",
            s.shard.0,
            s.backend,
            h.stats.received,
            h.stats.sent,
            h.stats.without_hint,
            s.io.xdp_rx,
            s.io.xdp_tx,
            s.io.waits,
            s.per_busy_turn()
        );
    }
}

fn cmd_report(input: PathBuf, out: Option<PathBuf>) {
    let r = RunResult::read(&input).unwrap_or_else(|e| fail(e));
    let out = out.unwrap_or_else(|| {
        let text = input.to_string_lossy();
        PathBuf::from(text.strip_suffix(".json").unwrap_or(&text).to_owned() + ".html")
    });
    std::fs::write(&out, dashboard::run_page(&r)).unwrap_or_else(|e| fail(e));
    println!("wrote {}", out.display());
}

fn cmd_compare(inputs: Vec<PathBuf>, out: PathBuf) {
    let runs: Vec<RunResult> = inputs
        .iter()
        .map(|f| RunResult::read(f).unwrap_or_else(|e| fail(e)))
        .collect();
    std::fs::write(&out, dashboard::compare_page(&runs)).unwrap_or_else(|e| fail(e));
    println!("wrote {}", out.display());
}

fn cmd_proxy_config(a: ProxyConfigArgs) {
    let (s, _) = a.scenario.scenario();
    let o = ProxyOptions {
        q_groups: a.q_groups,
        // The scenario's expectations (`--single-answer`, `--digest`) are what the proxy must do.
        single_answer: s.expect.single_answer,
        digest: s.registration.digest || s.caller.digest,
        shards: a.shards,
        io: a.io.map(|io| io.name().to_owned()),
        coalesce_us: a.coalesce_us,
        pin_cores: a.pin,
        max_contacts: None,
        algorithms: None,
        tls: None,
    };
    let o = match (s.topology.transport.is_tls(), &a.tls_dir) {
        (true, Some(dir)) => ProxyOptions {
            tls: Some(
                sipfork_load::sim::write_self_signed(dir, a.target.ip())
                    .unwrap_or_else(|e| fail(e)),
            ),
            ..o
        },
        (true, None) => fail("proxy-config --transport tls|wss needs --tls-dir DIR"),
        _ => o,
    };
    let plan = Plan::new(s, a.target, false, 0).unwrap_or_else(|e| fail(e));
    print!("{}", sipfork_config(&plan, &o));
}

fn main() {
    match Cli::parse().command {
        Command::Run(a) => cmd_run(a, false),
        Command::Sweep(a) => cmd_run(a, true),
        Command::Merge(a) => cmd_merge(a),
        Command::Reflect(a) => cmd_reflect(a),
        Command::Report { input, out } => cmd_report(input, out),
        Command::Compare { inputs, out } => cmd_compare(inputs, out),
        Command::ProxyConfig(a) => cmd_proxy_config(a),
        Command::Presets => {
            for (name, _) in PRESETS {
                let s = Scenario::preset(name).unwrap_or_else(|e| fail(e));
                println!("{name:24} {}", s.description);
            }
        }
    }
}
