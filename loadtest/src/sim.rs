//! A deterministic simulated network on virtual time: the harness's agents against sipfork's real
//! proxy `Core` (one or more shards, routed as the engine routes) or against the null reflector.
//!
//! This is what the harness's own logic is tested on (ARCHITECTURE.md §10: the race classifier
//! is checked against the real proxy before it is trusted on real sockets), and how reflector
//! runs learn the sizes of what sipfork sends ([`ProxySizes::measure`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use sipfork::config::Config;
use sipfork::core::io::{Datagram, Inbound};
use sipfork::core::shard::{stable_hash, ShardId};
use sipfork::core::transaction::TimerValues;
use sipfork::core::{Core, CoreParams};
use sipfork::engine::shard::Handler;
use sipfork::sip::{self, Method};
use sipfork::time::{Duration, Instant};

use crate::agent::{Agent, Roles, Shared};
use crate::plan::{Endpoint, Plan};
use crate::reflect::{HintReflector, ProxySizes};
use crate::scenario::Transport;

/// What plays the proxy.
enum Proxy {
    Sipfork(Vec<Core>),
    Reflector(HintReflector),
}

/// What the proxy sent in answer to one datagram (or on a timer: `input` empty).
#[derive(Clone, Debug)]
pub struct Exchange {
    /// The datagram it received.
    pub input: Vec<u8>,
    /// What it sent: destination and bytes.
    pub outputs: Vec<(SocketAddr, Vec<u8>)>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// Options of a sipfork proxy in the simulator (and of `sipfork_config`).
#[derive(Clone, Debug, Default)]
pub struct ProxyOptions {
    /// `[proxy] fork = "q-groups"` instead of parallel.
    pub q_groups: bool,
    /// `[proxy] single_answer = true`.
    pub single_answer: bool,
    /// `[auth] mode = "digest"` with the scenario's password template.
    pub digest: bool,
    /// Shards.
    pub shards: u16,
    /// `[server] io` (`auto`, `uring`, `mmsg`), when set.
    pub io: Option<String>,
    /// `[server] coalesce_us`, when set.
    pub coalesce_us: Option<u32>,
    /// `[server] pin_cores`, when set (a CPU list).
    pub pin_cores: Option<Vec<usize>>,
    /// `[registrar] max_contacts`, when set (default: the scenario's devices + 2).
    pub max_contacts: Option<u32>,
    /// `[auth] algorithms`, when set (digest only), e.g. `["MD5", "SHA-256"]`.
    pub algorithms: Option<Vec<String>>,
    /// `[tls] cert` and `key` (a `--transport tls` scenario needs them).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Writes a self-signed certificate for `ip` into `dir/cert.pem` and its key into `dir/key.pem`
/// (created if missing); returns both paths, absolute.
pub fn write_self_signed(dir: &Path, ip: IpAddr) -> Result<(PathBuf, PathBuf), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let generated = rcgen::generate_simple_self_signed(vec![ip.to_string()])
        .map_err(|e| format!("certificate: {e}"))?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).map_err(|e| format!("{}: {e}", cert.display()))?;
    std::fs::write(&key, generated.key_pair.serialize_pem())
        .map_err(|e| format!("{}: {e}", key.display()))?;
    Ok((cert, key))
}

/// A sipfork configuration serving `plan`'s extensions on its target address.
pub fn sipfork_config(plan: &Plan, o: &ProxyOptions) -> String {
    let t = &plan.scenario.topology;
    let first = t.first_extension;
    let last = first + t.extensions - 1;
    let digits = first.to_string().len();
    let mut server = String::new();
    if let Some(io) = &o.io {
        server.push_str(&format!("io = \"{io}\"\n"));
    }
    if let Some(us) = o.coalesce_us {
        server.push_str(&format!("coalesce_us = {us}\n"));
    }
    if let Some(cpus) = &o.pin_cores {
        server.push_str(&format!("pin_cores = {cpus:?}\n"));
    }
    let listen = match t.transport {
        Transport::Udp => format!("\"{}\"", plan.target),
        tr => format!("[\"udp:{0}\", \"{tr}:{0}\"]", plan.target, tr = tr.core()),
    };
    // One address plays every device and caller: a connection each, and a caller's connection
    // carries every call it places.
    let mut streams = String::new();
    if !t.transport.is_udp() {
        streams.push_str(
            "[tcp]\nmax_connections_per_source = 1000000\nmax_messages_per_second = 10000000\n",
        );
    }
    if let Some((cert, key)) = &o.tls {
        streams.push_str(&format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ));
    }
    format!(
        "[server]\nlisten = {listen}\ndomain = \"{domain}\"\nshards = {shards}\n{server}\
         [registrar]\nmin_expires = 10\nmax_contacts = {contacts}\n\
         [auth]\nmode = \"{auth}\"\n{algorithms}\
         [proxy]\nfork = \"{fork}\"\nsingle_answer = {single}\n\
         # One address plays every phone and caller: the per-source limit would take it for a flood.\n\
         [overload]\nrate_limit = 0\n\
         {streams}\
         [[extensions]]\nnumbers = \"{first:0digits$}-{last:0digits$}\"\n{password}",
        domain = plan.domain,
        shards = o.shards.max(1),
        contacts = o.max_contacts.unwrap_or(t.devices + 2),
        auth = if o.digest { "digest" } else { "none" },
        algorithms = match (&o.algorithms, o.digest) {
            (Some(a), true) => format!("algorithms = {a:?}\n"),
            _ => String::new(),
        },
        fork = if o.q_groups { "q-groups" } else { "parallel" },
        single = o.single_answer,
        password = if o.digest {
            format!("password = \"{}\"\n", plan.scenario.registration.password)
        } else {
            String::new()
        },
    )
}

/// The simulated world.
pub struct Sim {
    /// Virtual time.
    pub now: Instant,
    proxy_addr: SocketAddr,
    proxy: Proxy,
    /// The agents (one with both roles, or caller and devices apart).
    pub agents: Vec<Agent>,
    /// What agents and proxy share.
    pub shared: Arc<Shared>,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// One-way latency of every datagram.
    pub latency: Duration,
    /// Extra delay per datagram, uniform in `[0, jitter)` (reorders datagrams that cross).
    pub jitter: Duration,
    rng: crate::plan::Rng,
    /// The proxy's exchanges, when recording.
    pub trace: Option<Vec<Exchange>>,
    /// Every datagram delivered (time, from, to, first line and Call-ID), when recording.
    pub log: Option<Vec<String>>,
    /// Datagrams from the proxy this filter matches are lost (a broken proxy, for tests of the
    /// verdicts).
    pub drop_from_proxy: Option<fn(&[u8]) -> bool>,
}

impl Sim {
    /// `plan` against sipfork's `Core` configured by `options`; `split` puts the caller and the
    /// devices in two agents, as two harness threads would.
    pub fn sipfork(plan: Arc<Plan>, options: &ProxyOptions, split: bool) -> Sim {
        let cfg = Arc::new(
            Config::from_toml(&sipfork_config(&plan, options)).expect("generated config parses"),
        );
        let shards = options.shards.max(1);
        let cores = (0..shards)
            .map(|s| {
                Core::new(
                    Arc::clone(&cfg),
                    CoreParams {
                        shard: ShardId(s),
                        shards,
                        local: plan.target,
                        secret: [7; 32],
                        wall_epoch_us: 1_800_000_000_000_000,
                        timers: TimerValues::default(),
                    },
                    Instant::ZERO,
                )
            })
            .collect();
        Self::with_proxy(plan, Proxy::Sipfork(cores), split)
    }

    /// `plan` (in reflector mode) against the null reflector.
    pub fn reflector(plan: Arc<Plan>, split: bool) -> Sim {
        Self::with_proxy(plan, Proxy::Reflector(HintReflector::new()), split)
    }

    fn with_proxy(plan: Arc<Plan>, proxy: Proxy, split: bool) -> Sim {
        let shared = Arc::new(Shared::default());
        let agents = if split {
            vec![
                Agent::new(
                    Arc::clone(&plan),
                    Roles {
                        caller: true,
                        devices: false,
                    },
                    Arc::clone(&shared),
                    0,
                ),
                Agent::new(
                    Arc::clone(&plan),
                    Roles {
                        caller: false,
                        devices: true,
                    },
                    Arc::clone(&shared),
                    0,
                ),
            ]
        } else {
            vec![Agent::new(
                Arc::clone(&plan),
                Roles::BOTH,
                Arc::clone(&shared),
                0,
            )]
        };
        Sim {
            now: Instant::ZERO,
            proxy_addr: plan.target,
            proxy,
            agents,
            shared,
            queue: BinaryHeap::new(),
            seq: 0,
            latency: Duration::from_micros(50),
            jitter: Duration::ZERO,
            rng: crate::plan::Rng::new(0x5eed),
            trace: None,
            drop_from_proxy: None,
            log: None,
        }
    }

    /// Calls and transactions alive in the proxy (0 for the reflector).
    pub fn proxy_calls(&self) -> usize {
        match &self.proxy {
            Proxy::Sipfork(cores) => cores.iter().map(Core::proxy_calls).sum(),
            Proxy::Reflector(_) => 0,
        }
    }

    fn next_event(&self) -> Option<Instant> {
        let q = self.queue.peek().map(|r| r.0.at);
        let p = match &self.proxy {
            Proxy::Sipfork(cores) => cores.iter().filter_map(Core::poll_timeout).min(),
            Proxy::Reflector(r) => r.poll_timeout(),
        };
        let a = self.agents.iter().filter_map(Handler::poll_timeout).min();
        [q, p, a].into_iter().flatten().min()
    }

    fn transmit(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.seq += 1;
        let jitter = (self.rng.unit() * self.jitter.as_micros() as f64) as u64;
        self.queue.push(Reverse(InFlight {
            at: self.now + self.latency + Duration::from_micros(jitter),
            seq: self.seq,
            from,
            to,
            bytes,
        }));
    }

    fn flush_agent(&mut self, i: usize) {
        let proxy = self.proxy_addr;
        let ob = self.agents[i].outbox();
        let out: Vec<(SocketAddr, SocketAddr, Vec<u8>)> = ob
            .transmits()
            .iter()
            .map(|t| (t.from.unwrap_or(proxy), t.to, ob.bytes(t).to_vec()))
            .collect();
        self.agents[i].outbox().clear();
        for (from, to, bytes) in out {
            self.transmit(from, to, bytes);
        }
    }

    fn flush_proxy(&mut self, shard: usize, input: &[u8]) {
        let out: Vec<(SocketAddr, Vec<u8>)> = match &mut self.proxy {
            Proxy::Sipfork(cores) => {
                let core = &mut cores[shard];
                let out = core
                    .outbox()
                    .iter()
                    .map(|(to, b)| (to, b.to_vec()))
                    .collect();
                core.outbox().clear();
                core.drain_persist(|_| {});
                core.drain_notices(drop);
                out
            }
            Proxy::Reflector(r) => {
                let out = r.outbox().iter().map(|(to, b)| (to, b.to_vec())).collect();
                r.outbox().clear();
                out
            }
        };
        if let Some(trace) = &mut self.trace {
            if !out.is_empty() || !input.is_empty() {
                trace.push(Exchange {
                    input: input.to_vec(),
                    outputs: out.clone(),
                });
            }
        }
        for (to, bytes) in out {
            if self.drop_from_proxy.is_some_and(|drop| drop(&bytes)) {
                continue;
            }
            self.transmit(self.proxy_addr, to, bytes);
        }
    }

    fn deliver(&mut self, f: InFlight) {
        if let Some(log) = &mut self.log {
            let line = f.bytes.split(|&b| b == b'\r').next().unwrap_or(&[]);
            let cid = sip::parse(&f.bytes)
                .ok()
                .and_then(|m| {
                    m.call_id()
                        .ok()
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                })
                .unwrap_or_default();
            log.push(format!(
                "{:?} {} -> {} {} [{cid}]",
                self.now,
                f.from,
                f.to,
                String::from_utf8_lossy(line)
            ));
        }
        if f.to == self.proxy_addr {
            let now = self.now;
            let d = Datagram {
                from: f.from,
                local: self.proxy_addr,
                bytes: &f.bytes,
                transport: sipfork::core::transport::Transport::Udp,
                peer_cert: None,
            };
            match &mut self.proxy {
                Proxy::Sipfork(cores) => {
                    let n = cores.len() as u64;
                    let mut shard = (stable_hash(f.from.to_string().as_bytes()) % n) as usize;
                    if let Inbound::ForShard(s) = cores[shard].handle_datagram(now, d) {
                        self.flush_proxy(shard, &[]);
                        shard = s.index();
                        if let Proxy::Sipfork(cores) = &mut self.proxy {
                            cores[shard].handle_datagram(now, d);
                        }
                    }
                    self.flush_proxy(shard, &f.bytes);
                }
                Proxy::Reflector(r) => {
                    r.handle_datagram(now, d);
                    self.flush_proxy(0, &f.bytes);
                }
            }
            return;
        }
        let plan = Arc::clone(self.agents[0].plan());
        let role = match plan.endpoint(f.to) {
            Some(Endpoint::Caller(_)) => |a: &Agent| a.caller.is_some(),
            Some(Endpoint::Device(_)) => |a: &Agent| a.devices.is_some(),
            None => return,
        };
        if let Some(i) = self.agents.iter().position(role) {
            let d = Datagram {
                from: f.from,
                local: f.to,
                bytes: &f.bytes,
                transport: sipfork::core::transport::Transport::Udp,
                peer_cert: None,
            };
            self.agents[i].handle_datagram(self.now, d);
            self.flush_agent(i);
        }
    }

    /// Advances to the next event and handles everything due then; false when nothing is left.
    pub fn step(&mut self) -> bool {
        let Some(at) = self.next_event() else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;
        while self.queue.peek().is_some_and(|r| r.0.at <= now) {
            if let Some(Reverse(f)) = self.queue.pop() {
                self.deliver(f);
            }
        }
        let due: Vec<usize> = match &self.proxy {
            Proxy::Sipfork(cores) => (0..cores.len())
                .filter(|&s| cores[s].poll_timeout().is_some_and(|t| t <= now))
                .collect(),
            Proxy::Reflector(_) => Vec::new(),
        };
        for s in due {
            if let Proxy::Sipfork(cores) = &mut self.proxy {
                cores[s].handle_timeout(now);
            }
            self.flush_proxy(s, &[]);
        }
        for i in 0..self.agents.len() {
            if self.agents[i].poll_timeout().is_some_and(|t| t <= now) {
                self.agents[i].handle_timeout(now);
                self.flush_agent(i);
            }
        }
        true
    }

    /// Runs until the load phase is over (then `grace` more), for at most `limit` of virtual
    /// time. Returns whether the load phase ended.
    pub fn run(&mut self, limit: Duration, grace: Duration) -> bool {
        let end = self.now + limit;
        while !self.shared.load_done.load(Ordering::Acquire) && self.now < end {
            if !self.step() {
                break;
            }
        }
        let done = self.shared.load_done.load(Ordering::Acquire);
        self.run_for(grace);
        done
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.next_event().is_some_and(|t| t <= end) {
            self.step();
        }
        self.now = self.now.max(end);
    }

    /// The logged lines of one Call-ID prefix (e.g. `c5.`), for failure messages.
    pub fn log_of(&self, call_id_prefix: &str) -> String {
        let needle = format!("[{call_id_prefix}");
        self.log
            .iter()
            .flatten()
            .filter(|l| l.contains(&needle))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The agent playing the caller side.
    pub fn caller_agent(&self) -> &Agent {
        self.agents
            .iter()
            .find(|a| a.caller.is_some())
            .expect("invariant: a sim has a caller side")
    }

    /// The agent playing the device side.
    pub fn device_agent(&self) -> &Agent {
        self.agents
            .iter()
            .find(|a| a.devices.is_some())
            .expect("invariant: a sim has a device side")
    }
}

impl ProxySizes {
    /// Runs a few calls of `plan`'s scenario through sipfork's own `Core` in memory and takes,
    /// for each kind of datagram it sends, the mean size (kinds the scenario never produces keep
    /// their defaults).
    pub fn measure(plan: &Plan) -> ProxySizes {
        let mut scenario = plan.scenario.clone();
        scenario.load.max = 6;
        scenario.load.rate = 50.0;
        scenario.load.drain_s = 10.0;
        scenario.network.loss = 0.0;
        scenario.registration.digest = false;
        scenario.load.kind = crate::scenario::LoadKind::Calls;
        let Ok(p) = Plan::new(scenario, plan.target, false, plan.run_id) else {
            return ProxySizes::default();
        };
        let p = Arc::new(p);
        let mut sim = Sim::sipfork(Arc::clone(&p), &ProxyOptions::default(), false);
        sim.trace = Some(Vec::new());
        sim.run(Duration::from_secs(60), Duration::from_secs(1));
        // Bytes and count per kind, in the order of `ProxySizes::fields_mut`.
        let mut bytes_seen = [0u64; 12];
        let mut count = [0u64; 12];
        for ex in sim.trace.take().unwrap_or_default() {
            let input_is_ack = sip::parse(&ex.input)
                .ok()
                .is_some_and(|m| m.method() == Some(Method::Ack));
            for (_, bytes) in &ex.outputs {
                let Ok(m) = sip::parse(bytes) else { continue };
                let kind = match (m.method(), m.status(), m.cseq().map(|c| c.method)) {
                    (None, Some(100), Ok(Method::Invite)) => 0,
                    (Some(Method::Invite), _, _) => 1,
                    (None, Some(101..=199), Ok(Method::Invite)) => 2,
                    (None, Some(200..=299), Ok(Method::Invite)) => 3,
                    (None, Some(_), Ok(Method::Invite)) => 4,
                    (Some(Method::Cancel), _, _) => 5,
                    (None, Some(_), Ok(Method::Cancel)) => 6,
                    (Some(Method::Ack), _, _) if !input_is_ack => 7,
                    (Some(Method::Ack), _, _) => 8,
                    (Some(Method::Bye), _, _) => 9,
                    (None, Some(_), Ok(Method::Bye)) => 10,
                    (None, Some(_), Ok(Method::Register)) => 11,
                    _ => continue,
                };
                bytes_seen[kind] += bytes.len() as u64;
                count[kind] += 1;
            }
        }
        let mut sizes = ProxySizes::default();
        for (i, field) in sizes.fields_mut().into_iter().enumerate() {
            if let Some(mean) = (bytes_seen[i] + count[i] / 2).checked_div(count[i]) {
                *field = mean as u32;
            }
        }
        sizes
    }
}
