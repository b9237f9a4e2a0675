//! A run on real sockets: the agents on `sipfork::engine::start` (one harness thread with every
//! caller and device socket, or two: callers and devices apart), the CPU of the proxy and of the
//! harness over the load window, a live one-line progress display, and the result files.
//!
//! Bounded: the run stops by itself after the registration timeout + the load duration + the
//! drain + 30 s at most, whatever the proxy does.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipfork::engine::io::{IoKind, IoOptions};
use sipfork::engine::{start, Engine, EngineConfig, Pinning};

use crate::agent::{Agent, Roles, Shared};
use crate::cpu;
use crate::dashboard;
use crate::plan::Plan;
use crate::reflect::ProxySizes;
use crate::result::{assemble, Context, Cpu, Harness, RunResult};
use crate::scenario::{Action, Scenario};
use crate::stream::{StreamCounters, StreamThread};

/// Which processes are the proxy, for its CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyPids {
    /// Every process holding the target's UDP port, plus descendants.
    Auto,
    /// These (plus descendants).
    Given(Vec<u32>),
    /// Do not measure.
    Off,
}

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The scenario (after overrides).
    pub scenario: Scenario,
    /// Proxy (or reflector) address.
    pub target: SocketAddr,
    /// Null reflector mode.
    pub reflect: bool,
    /// Harness I/O backend.
    pub io: IoKind,
    /// Harness coalescing window, µs (0: off; a window delays the harness's own timestamps).
    pub coalesce_us: u64,
    /// 1: one harness thread; 2: callers and devices on two threads.
    pub threads: u32,
    /// CPUs to pin the harness threads to (thread `i` on `pin[i % len]`).
    pub pin: Option<Vec<usize>>,
    /// Harness threads busy-poll instead of sleeping (see `Agent::set_spin`).
    pub spin: bool,
    /// The proxy's processes.
    pub proxy_pids: ProxyPids,
    /// Run label (file names).
    pub label: String,
    /// What runs at the target, for the report.
    pub target_name: String,
    /// Where to write `LABEL.json` and `LABEL.html` (none: nowhere).
    pub out_dir: Option<PathBuf>,
    /// Live progress line on stderr.
    pub progress: bool,
    /// The command line, for the report.
    pub command: String,
    /// Write a JSON line of live counters this often (`--stats-every`).
    pub stats_every: Option<Duration>,
    /// Where the JSON lines go (`-`: stdout; default `OUT/LABEL.stats.jsonl`).
    pub stats_out: Option<PathBuf>,
    /// `(i, n)`: this is harness instance `i` of `n` against one proxy (`--instance i/N`).
    pub instance: Option<(u32, u32)>,
    /// `--transport tls`: the PEM file of the certificates the harness trusts (`--tls-ca`).
    pub tls_ca: Option<PathBuf>,
}

impl RunOptions {
    /// `scenario` against `target`, labelled `label`, with `run`'s defaults: a proxy (not the
    /// reflector), backend `auto`, no coalescing, one thread, no pinning, proxy CPU found from
    /// the target's port, no files, no progress line, no stats lines, not an instance.
    pub fn new(scenario: Scenario, target: SocketAddr, label: impl Into<String>) -> RunOptions {
        RunOptions {
            scenario,
            target,
            reflect: false,
            io: IoKind::Auto,
            coalesce_us: 0,
            threads: 1,
            pin: None,
            spin: false,
            proxy_pids: ProxyPids::Auto,
            label: label.into(),
            target_name: String::new(),
            out_dir: None,
            progress: false,
            command: String::new(),
            stats_every: None,
            stats_out: None,
            instance: None,
            tls_ca: None,
        }
    }
}

/// Set by SIGINT/SIGTERM once [`on_interrupt`] installed the handler: the run stops, judges what
/// ended, and writes a result with `partial: true`.
pub static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn interrupted(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the SIGINT/SIGTERM handler that sets [`INTERRUPTED`].
pub fn on_interrupt() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, interrupted as *const () as libc::sighandler_t);
        libc::signal(
            libc::SIGTERM,
            interrupted as *const () as libc::sighandler_t,
        );
    }
}

/// One JSON line of `--stats-every`: what the agents have counted so far.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct StatsLine {
    /// Seconds since the run began (registration included).
    pub t_s: f64,
    /// `registering`, `load` or `drain`.
    pub phase: String,
    /// Devices registered so far.
    pub registered: u64,
    /// Calls (REGISTERs) started so far.
    pub started: u64,
    /// Calls started per second since the previous line.
    pub calls_per_s: f64,
    /// Ended without a failure the caller could see (the verdicts come at the end).
    pub caller_completed: u64,
    /// Ended with a failure the caller could see.
    pub caller_failed: u64,
    /// Started and not ended.
    pub open: u64,
    /// INVITE→180 (a storm: REGISTER→200) p99 of the last full second, µs.
    pub p99_us: u64,
    /// Retransmissions the harness sent so far.
    pub retransmitted: u64,
}

/// What the live displays read from [`Shared`].
struct Live {
    last_started: u64,
    last_at: Instant,
}

impl Live {
    fn line(&mut self, shared: &Shared, epoch: Instant, loading: bool) -> StatsLine {
        let now = Instant::now();
        let started = shared.started.load(Ordering::Relaxed);
        let completed = shared.completed.load(Ordering::Relaxed);
        let failed = shared.failed.load(Ordering::Relaxed);
        let dt = now.saturating_duration_since(self.last_at).as_secs_f64();
        let rate = if dt > 0.0 {
            started.saturating_sub(self.last_started) as f64 / dt
        } else {
            0.0
        };
        self.last_started = started;
        self.last_at = now;
        StatsLine {
            t_s: epoch.elapsed().as_secs_f64(),
            phase: if !loading {
                "registering"
            } else if shared.caller_done.load(Ordering::Relaxed) {
                "drain"
            } else {
                "load"
            }
            .to_owned(),
            registered: shared.registered.load(Ordering::Relaxed),
            started,
            calls_per_s: rate,
            caller_completed: completed,
            caller_failed: failed,
            open: started.saturating_sub(completed + failed),
            p99_us: shared.last_p99_us.load(Ordering::Relaxed),
            retransmitted: shared.retransmitted.load(Ordering::Relaxed),
        }
    }
}

/// Refuses scenarios the reflector's proxy model does not cover.
pub fn check_reflectable(s: &Scenario) -> Result<(), String> {
    if s.caller.cancel_after_ms.is_some() {
        return Err("reflector mode models a parallel fork without caller CANCEL".into());
    }
    if s.network.loss > 0.0 {
        return Err(
            "reflector mode has no retransmission model: use a scenario without loss".into(),
        );
    }
    if s.device.iter().any(|d| d.q.is_some()) {
        return Err("reflector mode models parallel forking, not q-groups".into());
    }
    if s.device.iter().any(|d| d.action == Action::Silent) {
        return Err("reflector mode needs every device to answer the INVITE".into());
    }
    Ok(())
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a pointer to a live rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn run_id() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
    nanos ^ std::process::id().rotate_left(16)
}

/// One harness thread: the engine's UDP sockets, or the stream driver's connections.
enum Side {
    Udp(Engine<Agent>),
    Stream(StreamThread),
}

/// What every side of a run shares beyond the plan: the stream transport's TLS configuration
/// and counters.
struct Streams {
    tls: Option<Arc<rustls::ClientConfig>>,
    counters: Arc<StreamCounters>,
}

fn engine_for(
    o: &RunOptions,
    plan: &Arc<Plan>,
    shared: &Arc<Shared>,
    epoch: Instant,
    roles: Roles,
    thread: usize,
    streams: &Streams,
) -> Result<Side, String> {
    let make = {
        let (plan, shared, spin) = (Arc::clone(plan), Arc::clone(shared), o.spin);
        move |clock: &sipfork::engine::clock::Clock| {
            let offset =
                (epoch.elapsed().as_micros() as u64).saturating_sub(clock.now().as_micros());
            let mut agent = Agent::new(Arc::clone(&plan), roles, Arc::clone(&shared), offset);
            agent.set_spin(spin);
            agent
        }
    };
    if !plan.scenario.topology.transport.is_udp() {
        let mut endpoints = Vec::new();
        if roles.caller {
            endpoints.extend(plan.callers.iter().map(|&c| (c, plan.target)));
        }
        if roles.devices {
            endpoints.extend(
                (0..plan.devices.len() as u32)
                    .map(|d| (plan.devices[d as usize], plan.registrar(d))),
            );
        }
        let pin = o
            .pin
            .as_ref()
            .filter(|c| !c.is_empty())
            .map(|c| c[thread % c.len()]);
        return StreamThread::start(
            endpoints,
            streams.tls.clone(),
            plan.scenario.topology.transport.is_ws(),
            Arc::clone(&streams.counters),
            pin,
            make,
        )
        .map(Side::Stream);
    }
    let mut listen: Vec<SocketAddr> = Vec::new();
    if roles.caller {
        listen.extend(&plan.callers);
    }
    if roles.devices {
        listen.extend(&plan.devices);
    }
    let mut config = EngineConfig::new(listen[0], 1);
    config.listen = listen;
    config.io = o.io;
    config.io_options = IoOptions {
        coalesce: (o.coalesce_us > 0).then(|| Duration::from_micros(o.coalesce_us)),
        recv_buffers: 4096,
        ..IoOptions::default()
    };
    config.pinning = match &o.pin {
        Some(cpus) if !cpus.is_empty() => Pinning::Cores(vec![cpus[thread % cpus.len()]]),
        _ => Pinning::Off,
    };
    start(config, move |_, clock| make(clock))
        .map(Side::Udp)
        .map_err(|e| format!("harness sockets: {e}"))
}

#[derive(Clone, Copy)]
struct Snapshot {
    at: Instant,
    proxy_ns: u64,
    harness_ns: u64,
    drops: Option<u64>,
    idle: Option<(f64, usize)>,
}

fn snapshot(pids: &[u32]) -> Snapshot {
    Snapshot {
        at: Instant::now(),
        proxy_ns: cpu::cpu_ns(pids),
        harness_ns: cpu::process_cpu_ns(std::process::id()),
        drops: cpu::udp_rcvbuf_errors(),
        idle: cpu::machine_idle_s(),
    }
}

/// Runs `o` and returns (and writes) the result.
pub fn run(o: RunOptions) -> Result<RunResult, String> {
    let mut plan = Plan::new(o.scenario.clone(), o.target, o.reflect, run_id())?;
    if o.reflect {
        check_reflectable(&o.scenario)?;
        plan.sizes = ProxySizes::measure(&plan);
    }
    let plan = Arc::new(plan);
    let pids = match &o.proxy_pids {
        ProxyPids::Auto => cpu::pids_holding(o.target),
        ProxyPids::Given(p) => {
            let mut p = p.clone();
            let all: Vec<u32> = std::fs::read_dir("/proc")
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| e.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            cpu::with_descendants(&mut p, &all);
            p
        }
        ProxyPids::Off => Vec::new(),
    };
    if o.proxy_pids == ProxyPids::Auto && pids.is_empty() {
        eprintln!(
            "warning: no process holds {}; proxy CPU will read 0",
            o.target
        );
    }
    raise_fd_limit();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let transport = o.scenario.topology.transport;
    if o.reflect && !transport.is_udp() {
        return Err("reflector mode runs over UDP only".into());
    }
    let streams = Streams {
        tls: match (transport.is_tls(), &o.tls_ca) {
            (true, Some(ca)) => Some(crate::stream::tls_client(ca)?),
            (true, None) => {
                return Err(
                    "--transport tls|wss needs --tls-ca FILE (the proxy's CA or certificate)"
                        .into(),
                )
            }
            _ => None,
        },
        counters: Arc::new(StreamCounters::default()),
    };
    let shared = Arc::new(Shared::default());
    let epoch = Instant::now();
    let engines: Vec<Side> = if o.threads >= 2 {
        vec![
            engine_for(
                &o,
                &plan,
                &shared,
                epoch,
                Roles {
                    caller: false,
                    devices: true,
                },
                0,
                &streams,
            )?,
            engine_for(
                &o,
                &plan,
                &shared,
                epoch,
                Roles {
                    caller: true,
                    devices: false,
                },
                1,
                &streams,
            )?,
        ]
    } else {
        vec![engine_for(
            &o,
            &plan,
            &shared,
            epoch,
            Roles::BOTH,
            0,
            &streams,
        )?]
    };
    let s = &o.scenario;
    let limit = Duration::from_secs_f64(
        s.registration.timeout_s + s.load.duration_s + s.load.drain_s + 30.0,
    );
    let mut first: Option<Snapshot> = None;
    let mut last: Option<Snapshot> = None;
    let mut announced_registration = false;
    let mut next_progress = Instant::now() + Duration::from_secs(1);
    let mut stats = match o.stats_every {
        Some(every) => Some((open_stats(&o)?, every, Instant::now() + every)),
        None => None,
    };
    let [mut live, mut live_stats] = [(); 2].map(|_| Live {
        last_started: 0,
        last_at: Instant::now(),
    });
    let mut interrupted = false;
    while epoch.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(5));
        if INTERRUPTED.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        if let Some((out, every, next)) = &mut stats {
            if Instant::now() >= *next {
                *next += *every;
                let line = live_stats.line(&shared, epoch, first.is_some());
                let text = serde_json::to_string(&line).map_err(|e| e.to_string())?;
                writeln!(out, "{text}").map_err(|e| format!("--stats-every: {e}"))?;
                out.flush().map_err(|e| format!("--stats-every: {e}"))?;
            }
        }
        let load_start = shared.load_start_us.load(Ordering::Acquire);
        if first.is_none()
            && load_start != u64::MAX
            && epoch.elapsed().as_micros() as u64 >= load_start
        {
            first = Some(snapshot(&pids));
        }
        if !announced_registration && shared.registration_done.load(Ordering::Acquire) {
            announced_registration = true;
            let failed = shared.registration_failed.load(Ordering::Relaxed);
            if o.progress {
                eprintln!(
                    "registration: {} of {} devices registered, {failed} failed",
                    shared.registered.load(Ordering::Relaxed),
                    plan.devices.len()
                );
            }
        }
        if shared.load_done.load(Ordering::Acquire) {
            last = Some(snapshot(&pids));
            break;
        }
        if o.progress && Instant::now() >= next_progress {
            next_progress += Duration::from_secs(1);
            progress_line(&live.line(&shared, epoch, first.is_some()));
        }
    }
    if o.progress {
        progress_line(&live.line(&shared, epoch, first.is_some()));
        eprintln!();
    }
    if interrupted {
        eprintln!("interrupted: judging the calls that ended, writing a partial result");
    }
    let timed_out = last.is_none() && !interrupted;
    let last = last.unwrap_or_else(|| snapshot(&pids));
    // Let the last ACKs and 200s land before the sockets close.
    std::thread::sleep(Duration::from_millis(300));
    let mut io_counters = std::collections::BTreeMap::new();
    let mut agents = Vec::new();
    for side in engines {
        let engine = match side {
            Side::Udp(engine) => engine,
            Side::Stream(thread) => {
                agents.push(thread.shutdown()?);
                continue;
            }
        };
        for shard in engine.stats() {
            for (name, v) in sipfork::engine::io::IoStats::NAMES
                .iter()
                .zip(shard.io.to_array())
            {
                *io_counters.entry((*name).to_owned()).or_insert(0) += v;
            }
            io_counters.insert("backend_".to_owned() + shard.backend, 1);
        }
        agents.extend(
            engine
                .shutdown()
                .map_err(|e| format!("harness shutdown: {e}"))?,
        );
    }
    if !transport.is_udp() {
        for (name, v) in streams.counters.named() {
            io_counters.insert(name.to_owned(), v);
        }
        io_counters.insert(format!("backend_{}", transport.core()), 1);
    }
    let first = first.unwrap_or(last);
    let window = last.at.saturating_duration_since(first.at).as_secs_f64();
    let units = shared.started.load(Ordering::Relaxed).max(1) as f64;
    let proxy_ms = last.proxy_ns.saturating_sub(first.proxy_ns) as f64 / 1e6;
    let harness_ms = last.harness_ns.saturating_sub(first.harness_ns) as f64 / 1e6;
    let machine_busy = match (first.idle, last.idle) {
        (Some((a, cpus)), Some((b, _))) if window > 0.0 => {
            100.0 * (cpus as f64 * window - (b - a)).max(0.0) / window
        }
        _ => 0.0,
    };
    let cpu = (o.proxy_pids != ProxyPids::Off).then(|| Cpu {
        window_s: window,
        proxy_pids: pids.clone(),
        proxy_ms,
        proxy_pct: 100.0 * proxy_ms / 1000.0 / window.max(1e-9),
        proxy_us_per_call: proxy_ms * 1000.0 / units,
        harness_ms,
        harness_pct: 100.0 * harness_ms / 1000.0 / window.max(1e-9),
        harness_us_per_call: harness_ms * 1000.0 / units,
        udp_rcvbuf_errors: match (first.drops, last.drops) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        machine_busy_pct: machine_busy,
        other_pct: (machine_busy - 100.0 * (proxy_ms + harness_ms) / 1000.0 / window.max(1e-9))
            .max(0.0),
    });
    let harness = Harness {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        command: o.command.clone(),
        threads: o.threads.clamp(1, 2),
        io: format!("{:?}", o.io).to_lowercase(),
        coalesce_us: o.coalesce_us,
        pin: o.pin.as_ref().map(|p| {
            p.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }),
        spin: o.spin,
        sockets: (plan.callers.len() + plan.devices.len()) as u32,
        io_counters,
    };
    let refs: Vec<&Agent> = agents.iter().collect();
    let result = assemble(
        &plan,
        &refs,
        Context {
            label: o.label.clone(),
            target_name: o.target_name.clone(),
            harness,
            started_unix_s,
            window_s: window,
            cpu,
            partial: interrupted,
            instance: o.instance.map(|(i, n)| format!("{i}/{n}")),
        },
    );
    if let Some(dir) = &o.out_dir {
        write_outputs(dir, &result)?;
    }
    if timed_out {
        eprintln!("warning: the run hit its time limit before every call ended");
    }
    Ok(result)
}

/// Writes `LABEL.json` and `LABEL.html` into `dir`.
pub fn write_outputs(dir: &std::path::Path, r: &RunResult) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    // `LABEL.json`, also when the label has a dot in it (`with_extension` would replace it).
    let file = |ext: &str| dir.join(format!("{}.{ext}", r.label));
    std::fs::write(file("json"), json).map_err(|e| e.to_string())?;
    std::fs::write(file("html"), dashboard::run_page(r)).map_err(|e| e.to_string())?;
    Ok(())
}

fn progress_line(l: &StatsLine) {
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r[{:6.1}s {}] started {} ({:.0}/s) ok {} failed {} (as the caller sees them) open {} p99 {} retrans {}   ",
        l.t_s,
        if l.phase == "registering" {
            format!("registering {}", l.registered)
        } else {
            l.phase.clone()
        },
        l.started,
        l.calls_per_s,
        l.caller_completed,
        l.caller_failed,
        l.open,
        dashboard::dur(l.p99_us as f64),
        l.retransmitted,
    );
    let _ = err.flush();
}

/// Where `--stats-every` writes.
fn open_stats(o: &RunOptions) -> Result<Box<dyn std::io::Write>, String> {
    let path = match (&o.stats_out, &o.out_dir) {
        (Some(p), _) if p.as_os_str() == "-" => return Ok(Box::new(std::io::stdout())),
        (Some(p), _) => p.clone(),
        (None, Some(dir)) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            dir.join(format!("{}.stats.jsonl", o.label))
        }
        (None, None) => return Ok(Box::new(std::io::stdout())),
    };
    let f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Box::new(std::io::BufWriter::new(f)))
}
