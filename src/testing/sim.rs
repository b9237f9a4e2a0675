//! A deterministic world on virtual time: the proxy's shard cores, scripted phones, and a
//! seeded network between them (latency, jitter, random loss, targeted drops).
//!
//! Routing follows the engine exactly: a datagram to the proxy arrives on the shard the kernel
//! would pick (a hash of the source address, as `SO_REUSEPORT` does), and a core's
//! `Inbound::ForShard` hands the same bytes to the owning shard. Every datagram is logged, so a
//! failing test prints the whole exchange.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::core::io::{Datagram, Inbound};
use crate::core::shard::{stable_hash, ShardId};
use crate::core::transaction::TimerValues;
use crate::core::transport::Transport;
use crate::core::{Core, CoreParams};
use crate::testing::phone::{Behaviour, Phone};
use crate::time::{Duration, Instant};

/// Index of a phone in the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PhoneId(pub usize);

/// A tiny seeded PRNG (xorshift64*): deterministic across platforms.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
    /// Uniform in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// Link behaviour for every datagram.
#[derive(Clone, Debug)]
pub struct Netem {
    /// One-way latency.
    pub latency: Duration,
    /// Extra random delay, uniform in `0..jitter` (can reorder).
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
}

impl Default for Netem {
    fn default() -> Self {
        Netem {
            latency: Duration::from_millis(1),
            jitter: Duration::ZERO,
            loss: 0.0,
        }
    }
}

/// A one-shot (or n-shot) drop rule for scripted loss.
struct DropRule {
    from: Option<SocketAddr>,
    to: Option<SocketAddr>,
    start_line: String,
    cseq_method: Option<String>,
    remaining: usize,
}

/// One line of the traffic log.
#[derive(Clone, Debug)]
pub struct Trace {
    /// When it was sent.
    pub at: Instant,
    /// Sender.
    pub from: SocketAddr,
    /// Receiver.
    pub to: SocketAddr,
    /// First line of the message.
    pub line: String,
    /// What happened to it.
    pub fate: &'static str,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// The simulated world.
pub struct World {
    now: Instant,
    rng: Rng,
    /// The proxy's address.
    pub proxy: SocketAddr,
    cores: Vec<Core>,
    phones: Vec<Phone>,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// Link behaviour.
    pub netem: Netem,
    drops: Vec<DropRule>,
    /// Every datagram sent, in order.
    pub log: Vec<Trace>,
    /// The engine's receive buffer size: a longer datagram reaches the core as a truncated
    /// head, as `MSG_TRUNC` makes it on a socket.
    pub max_datagram: usize,
    /// Every CDR the cores emitted (`[policy] cdr`), in order.
    pub cdrs: Vec<crate::core::cdr::Cdr>,
    /// Phones connected over TCP or TLS ([`World::connect`]): what their messages arrive on.
    streams: std::collections::HashMap<SocketAddr, Transport>,
    /// The verified client certificate names of a phone's TLS connection
    /// ([`World::connect_with_certificate`]).
    certs: std::collections::HashMap<SocketAddr, crate::core::transport::peer_cert::PeerCert>,
    /// Every connection a core asked the engine to open (`Transmit::connect`), in order: the
    /// destination and transport. A phone at the destination accepts it (its messages then
    /// arrive over it); any other destination refuses it (the core is told at once, as the
    /// engine tells it of a refused connect), unless listed in `connect_silent`.
    pub connects: Vec<(SocketAddr, Transport)>,
    /// Destinations whose connects neither succeed nor fail ([`World::fail_connect`] ends them).
    pub connect_silent: Vec<SocketAddr>,
    /// Phones' addresses that refuse connections (nothing listens on TCP there).
    pub connect_refused: Vec<SocketAddr>,
    /// Destinations of datagrams the core marked to go over UDP although a connection with
    /// them is open (`Transmit::connect == Some(Udp)`), in order.
    pub kept_udp: Vec<SocketAddr>,
}

/// Default config for simulated worlds: extensions 1000-1099 without auth, on 127.0.0.1:5060.
pub const DEFAULT_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:5060"
domain = "example.com"
shards = 1
[registrar]
min_expires = 10
[auth]
mode = "none"
[[extensions]]
numbers = "1000-1099"
"#;

impl World {
    /// A world with `shards` proxy shards configured by `config`, network randomness from `seed`.
    pub fn new(config: &str, shards: u16, seed: u64) -> World {
        Self::with_timers(config, shards, seed, TimerValues::default())
    }

    /// As [`World::new`] with explicit RFC 3261 timer values.
    pub fn with_timers(config: &str, shards: u16, seed: u64, timers: TimerValues) -> World {
        let cfg = Arc::new(Config::from_toml(config).expect("test config parses"));
        let proxy = cfg.server.listen;
        let mut secret = [0u8; 32];
        let mut r = Rng::new(seed ^ 0x5eed);
        for b in secret.iter_mut() {
            *b = r.next_u64() as u8;
        }
        let cores = (0..shards)
            .map(|s| {
                Core::new(
                    Arc::clone(&cfg),
                    CoreParams {
                        shard: ShardId(s),
                        shards,
                        local: proxy,
                        secret,
                        wall_epoch_us: 1_800_000_000_000_000,
                        timers,
                    },
                    Instant::ZERO,
                )
            })
            .collect();
        World {
            now: Instant::ZERO,
            rng: Rng::new(seed),
            proxy,
            cores,
            phones: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            netem: Netem::default(),
            drops: Vec::new(),
            log: Vec::new(),
            max_datagram: crate::engine::io::IoOptions::default().max_datagram,
            cdrs: Vec::new(),
            streams: std::collections::HashMap::new(),
            certs: std::collections::HashMap::new(),
            connects: Vec::new(),
            connect_silent: Vec::new(),
            connect_refused: Vec::new(),
            kept_udp: Vec::new(),
        }
    }

    /// A one-shard world with [`DEFAULT_CONFIG`].
    pub fn seeded(seed: u64) -> World {
        Self::new(DEFAULT_CONFIG, 1, seed)
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Adds a phone at `127.0.0.1:port` acting for `user`.
    pub fn add_phone(&mut self, name: &str, user: &str, port: u16) -> PhoneId {
        self.add_phone_at(name, user, ([127, 0, 0, 1], port).into())
    }

    /// Adds a phone at `addr` (another source address, e.g. for per-source limits).
    pub fn add_phone_at(&mut self, name: &str, user: &str, addr: SocketAddr) -> PhoneId {
        let port = addr.port();
        let id = PhoneId(self.phones.len());
        self.phones.push(Phone::new(
            name,
            user,
            addr,
            self.proxy,
            self.seq ^ port as u64,
        ));
        id
    }

    /// Adds a phone behind NAT: it sends from `127.0.0.1:port` but writes `private` into its
    /// Via and Contact, an address nothing in the simulation answers on.
    pub fn add_phone_behind_nat(
        &mut self,
        name: &str,
        user: &str,
        port: u16,
        private: SocketAddr,
    ) -> PhoneId {
        let id = self.add_phone(name, user, port);
        self.phones[id.0].private = Some(private);
        id
    }

    /// Datagrams sent to an address where nothing answers (a NATed phone's private Contact,
    /// a third party): with the egress rule none should ever be sent by the proxy.
    pub fn unreachable_sends(&self) -> Vec<&Trace> {
        self.log
            .iter()
            .filter(|t| t.fate == "no such host" || (t.from == self.proxy && !self.is_known(t.to)))
            .collect()
    }

    fn is_known(&self, addr: SocketAddr) -> bool {
        addr == self.proxy || self.phones.iter().any(|p| p.addr == addr)
    }

    /// The phone `id`.
    pub fn phone(&mut self, id: PhoneId) -> &mut Phone {
        &mut self.phones[id.0]
    }

    /// Read-only view of phone `id`.
    pub fn phone_ref(&self, id: PhoneId) -> &Phone {
        &self.phones[id.0]
    }

    /// The shard cores (for assertions on their state).
    pub fn cores(&self) -> &[Core] {
        &self.cores
    }

    /// Shard `i`'s core, to steer it (e.g. `Core::set_load`).
    pub fn core_mut(&mut self, i: usize) -> &mut Core {
        &mut self.cores[i]
    }

    /// Drops the next `n` datagrams whose first line starts with `start_line` (and whose CSeq
    /// method is `cseq_method`, when given), optionally only from/to the given addresses.
    pub fn drop_next(
        &mut self,
        n: usize,
        start_line: &str,
        cseq_method: Option<&str>,
        from: Option<SocketAddr>,
        to: Option<SocketAddr>,
    ) {
        self.drops.push(DropRule {
            from,
            to,
            start_line: start_line.to_owned(),
            cseq_method: cseq_method.map(str::to_owned),
            remaining: n,
        });
    }

    /// Sends a datagram through the network (phones and the proxy's outbox use this).
    fn transmit(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let line = first_line(&bytes);
        let cseq = cseq_method(&bytes);
        let scripted = self.drops.iter_mut().find(|r| {
            r.remaining > 0
                && line.starts_with(&r.start_line)
                && r.from.is_none_or(|f| f == from)
                && r.to.is_none_or(|t| t == to)
                && r.cseq_method.as_deref().is_none_or(|m| m == cseq)
        });
        let fate = if let Some(rule) = scripted {
            rule.remaining -= 1;
            "dropped (scripted)"
        } else if self.rng.chance(self.netem.loss) {
            "lost"
        } else {
            let jitter = self.rng.below(self.netem.jitter.as_micros() as u64);
            let at = self.now + self.netem.latency + Duration::from_micros(jitter);
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                at,
                seq: self.seq,
                from,
                to,
                bytes,
            }));
            "sent"
        };
        self.log.push(Trace {
            at: self.now,
            from,
            to,
            line,
            fate,
        });
    }

    fn next_event(&self) -> Option<Instant> {
        let q = self.queue.peek().map(|r| r.0.at);
        let c = self.cores.iter().filter_map(Core::poll_timeout).min();
        let p = self.phones.iter().filter_map(Phone::next_timer).min();
        [q, c, p].into_iter().flatten().min()
    }

    /// Advances to the next event and handles everything due then. False when nothing is left.
    pub fn step(&mut self) -> bool {
        let Some(at) = self.next_event() else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;
        while let Some(Reverse(f)) = self.queue.peek() {
            if f.at > now {
                break;
            }
            let Some(Reverse(f)) = self.queue.pop() else {
                break;
            };
            self.deliver(f.from, f.to, &f.bytes);
        }
        for s in 0..self.cores.len() {
            if self.cores[s].poll_timeout().is_some_and(|t| t <= now) {
                self.cores[s].handle_timeout(now);
                self.flush_core(s);
            }
        }
        for p in 0..self.phones.len() {
            if self.phones[p].next_timer().is_some_and(|t| t <= now) {
                let out = self.phones[p].handle_timeout(now);
                let from = self.phones[p].addr;
                for (to, bytes) in out {
                    self.transmit(from, to, bytes);
                }
            }
        }
        true
    }

    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        if to == self.proxy {
            let n = self.cores.len() as u64;
            let mut shard = (stable_hash(from.to_string().as_bytes()) % n) as usize;
            let transport = self.streams.get(&from).copied().unwrap_or(Transport::Udp);
            if bytes.len() > self.max_datagram && !transport.is_stream() {
                let d = Datagram {
                    from,
                    local: self.proxy,
                    bytes: &bytes[..self.max_datagram],
                    transport: Transport::Udp,
                    peer_cert: None,
                };
                self.cores[shard].handle_oversize(self.now, d);
                self.flush_core(shard);
                return;
            }
            // One hand-off at most, as in the engine.
            for _ in 0..2 {
                let d = Datagram {
                    from,
                    local: self.proxy,
                    bytes,
                    transport,
                    peer_cert: self.certs.get(&from),
                };
                match self.cores[shard].handle_datagram(self.now, d) {
                    Inbound::Handled => break,
                    Inbound::ForShard(s) => {
                        self.flush_core(shard);
                        shard = s.index();
                    }
                }
            }
            self.flush_core(shard);
        } else if let Some(p) = self.phones.iter().position(|p| p.addr == to) {
            let out = self.phones[p].handle_datagram(self.now, from, bytes);
            for (to, bytes) in out {
                self.transmit(to_addr(self.phones[p].addr), to, bytes);
            }
        } else {
            self.log.push(Trace {
                at: self.now,
                from,
                to,
                line: first_line(bytes),
                fate: "no such host",
            });
        }
    }

    fn flush_core(&mut self, s: usize) {
        let mut failed = Vec::new();
        for t in self.cores[s].outbox().transmits() {
            let Some(transport) = t.connect.filter(|t| t.is_stream()) else {
                if t.connect.is_some() {
                    self.kept_udp.push(t.to);
                }
                continue;
            };
            if self.streams.get(&t.to) == Some(&transport) {
                continue; // open already: reused
            }
            self.connects.push((t.to, transport));
            if self.connect_silent.contains(&t.to) {
                continue;
            }
            if self.phones.iter().any(|p| p.addr == t.to) && !self.connect_refused.contains(&t.to) {
                self.streams.insert(t.to, transport);
            } else {
                failed.push((t.to, transport));
            }
        }
        let out: Vec<(SocketAddr, Vec<u8>)> = self.cores[s]
            .outbox()
            .iter()
            // A connect that failed or hangs carries nothing (the engine queues until it is up).
            .filter(|(to, _)| {
                !failed.iter().any(|(f, _)| f == to)
                    && (!self.connect_silent.contains(to) || self.streams.contains_key(to))
            })
            .map(|(to, b)| (to, b.to_vec()))
            .collect();
        self.cores[s].outbox().clear();
        let mut persist = 0;
        self.cores[s].drain_persist(|_| persist += 1);
        self.cores[s].drain_notices(drop);
        let cdrs = &mut self.cdrs;
        self.cores[s].drain_cdrs(|c| cdrs.push(c));
        for (to, bytes) in out {
            self.transmit(self.proxy, to, bytes);
        }
        for (peer, transport) in failed {
            self.fail_connect_on(s, peer, transport);
        }
        // Core-to-core notes reach the other shard at once (the engine: within its next turn).
        let mut notes = Vec::new();
        self.cores[s].drain_shard_notes(|to, bytes| notes.push((to, bytes.to_vec())));
        for (to, bytes) in notes {
            self.cores[to.index()].handle_shard_note(self.now, ShardId(s as u16), &bytes);
            self.flush_core(to.index());
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.next_event().is_some_and(|t| t <= end) {
            self.step();
        }
        self.now = self.now.max(end);
    }

    /// Runs until `pred` holds (checked after every step), for at most `limit`. Returns whether
    /// it held.
    pub fn run_until(&mut self, limit: Duration, mut pred: impl FnMut(&World) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            if pred(self) {
                return true;
            }
            match self.next_event() {
                Some(t) if t <= end => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(end);
                    return pred(self);
                }
            }
        }
    }

    /// Has phone `id` something queued for it or a timer pending?
    pub fn quiet(&self) -> bool {
        self.queue.is_empty()
    }

    /// Phone `id` sends a REGISTER for its user (and retransmits it); nothing waits for the
    /// answer.
    pub fn start_register(&mut self, id: PhoneId, expires: u32) {
        let out = self.phones[id.0].register(self.now, expires);
        let from = self.phones[id.0].addr;
        for (to, bytes) in out {
            self.transmit(from, to, bytes);
        }
    }

    /// Registers phone `id` for its user with the proxy and runs until the 200 arrives.
    pub fn register(&mut self, id: PhoneId, expires: u32) {
        let out = self.phones[id.0].register(self.now, expires);
        let from = self.phones[id.0].addr;
        for (to, bytes) in out {
            self.transmit(from, to, bytes);
        }
        let ok = self.run_until(Duration::from_secs(5), |w| w.phones[id.0].registered);
        assert!(
            ok,
            "registration of {} failed\n{}",
            self.phones[id.0].name,
            self.dump()
        );
    }

    /// Phone `id` calls `number`; returns the call's index on that phone.
    pub fn call(&mut self, id: PhoneId, number: &str) -> usize {
        let (index, out) = self.phones[id.0].invite(self.now, number);
        let from = self.phones[id.0].addr;
        for (to, bytes) in out {
            self.transmit(from, to, bytes);
        }
        index
    }

    /// Phone `id` cancels its call `call`.
    pub fn cancel(&mut self, id: PhoneId, call: usize) {
        let out = self.phones[id.0].cancel(self.now, call);
        let from = self.phones[id.0].addr;
        for (to, bytes) in out {
            self.transmit(from, to, bytes);
        }
    }

    /// Phone `id` hangs up every dialog of its call `call` with BYE.
    pub fn hang_up(&mut self, id: PhoneId, call: usize) {
        let out = self.phones[id.0].bye(self.now, call);
        let from = self.phones[id.0].addr;
        for (to, bytes) in out {
            self.transmit(from, to, bytes);
        }
    }

    /// Phone `id` refreshes its call `call` with an UPDATE (see [`Phone::update`]).
    pub fn update(&mut self, id: PhoneId, call: usize, cseq: u32, extra: &str) {
        let out = self.phones[id.0].update(call, cseq, extra);
        let from = self.phones[id.0].addr;
        for (to, bytes) in out {
            self.transmit(from, to, bytes);
        }
    }

    /// Phone `id`, the callee, hangs up its answered incoming call `call` with BYE.
    pub fn hang_up_incoming(&mut self, id: PhoneId, call: usize) {
        let out = self.phones[id.0].bye_incoming(call);
        let from = self.phones[id.0].addr;
        for (to, bytes) in out {
            self.transmit(from, to, bytes);
        }
    }

    /// Phone `id` sends a non-INVITE request to `number` (see [`Phone::request`]).
    pub fn request(&mut self, id: PhoneId, method: &str, number: &str, extra: &str, body: &str) {
        let out = self.phones[id.0].request(method, number, extra, body);
        let from = self.phones[id.0].addr;
        for (to, bytes) in out {
            self.transmit(from, to, bytes);
        }
    }

    /// Sends raw bytes from phone `id`'s address to the proxy (hostile or odd input).
    pub fn send_raw(&mut self, id: PhoneId, bytes: &[u8]) {
        let from = self.phones[id.0].addr;
        let to = self.proxy;
        self.transmit(from, to, bytes.to_vec());
    }

    /// From now on phone `id`'s messages reach the proxy over a `transport` connection (a
    /// stream flow whose peer is the phone's address; the engine's framing is not simulated).
    pub fn connect(&mut self, id: PhoneId, transport: Transport) {
        self.streams.insert(self.phones[id.0].addr, transport);
    }

    /// As [`World::connect`], over a connection whose peer presented a client certificate
    /// with SAN dNSNames `names` that the listener verified (the engine's `client_cert`).
    pub fn connect_with_certificate(&mut self, id: PhoneId, transport: Transport, names: &[&str]) {
        let names =
            crate::core::transport::peer_cert::CertNames::from_certificate(names.iter().copied());
        self.certs.insert(self.phones[id.0].addr, Arc::new(names));
        self.connect(id, transport);
    }

    /// Phone `id`'s connection closes: every core is told, as the engine tells every shard;
    /// the phone's later messages arrive over UDP until it connects again.
    pub fn close_flow(&mut self, id: PhoneId) {
        let peer = self.phones[id.0].addr;
        self.certs.remove(&peer);
        if let Some(transport) = self.streams.remove(&peer) {
            for core in &mut self.cores {
                core.flow_closed(self.now, peer, transport);
            }
        }
    }

    /// The connection shard `s`'s core asked for to `peer` fails (refused or timed out): that
    /// core is told, as the engine tells the shard that opened it.
    fn fail_connect_on(&mut self, s: usize, peer: SocketAddr, transport: Transport) {
        self.cores[s].flow_failed(self.now, peer, transport);
        self.flush_core(s);
    }

    /// A connect to `peer` left pending (`connect_silent`) times out now: every core is told
    /// (only the one that asked has branches waiting on it).
    pub fn fail_connect(&mut self, peer: SocketAddr, transport: Transport) {
        for s in 0..self.cores.len() {
            self.fail_connect_on(s, peer, transport);
        }
    }

    /// Sets how phone `id` answers INVITEs.
    pub fn behave(&mut self, id: PhoneId, b: Behaviour) {
        self.phones[id.0].behaviour = b;
    }

    /// Calls (transactions or dialogs) alive in the proxy, over all shards.
    pub fn proxy_calls(&self) -> usize {
        self.cores.iter().map(Core::proxy_calls).sum()
    }

    /// The traffic log, one line per datagram, for failure messages.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for t in &self.log {
            let _ = writeln!(
                s,
                "{:?} {} -> {} {} [{}]",
                t.at, t.from, t.to, t.line, t.fate
            );
        }
        s
    }
}

fn to_addr(a: SocketAddr) -> SocketAddr {
    a
}

/// The first line of a message, for logs.
pub fn first_line(bytes: &[u8]) -> String {
    let end = bytes
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(bytes.len().min(80));
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The CSeq method of a message ("" if none).
pub fn cseq_method(bytes: &[u8]) -> String {
    crate::sip::parse(bytes)
        .ok()
        .and_then(|m| {
            m.cseq()
                .ok()
                .map(|c| String::from_utf8_lossy(c.method.as_bytes()).into_owned())
        })
        .unwrap_or_default()
}
