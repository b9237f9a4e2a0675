//! The harness on TCP, TLS, WS or WSS (`--transport tcp|tls|ws|wss`): the same sans-IO [`Agent`]
//! as over UDP, driven by a loop of its own that owns one connection per device and per caller.
//!
//! Every device and every caller connects from its own local address (the port the plan gives
//! it, bound before `connect`), so a device's Contact is its connection's address and the proxy
//! reaches it over that connection; a caller's INVITE, ACK, CANCEL and BYE all go over the
//! caller's one connection (pipelined, like SIPp's `-t t1`; `topology.callers` sets how many
//! callers share the calls). What the agent sends from local address `X` is written to the
//! connection bound to `X`, whatever its destination (the proxy is the only peer); what a
//! connection delivers is framed by Content-Length (sipfork's own
//! `core::transport::framer`) and handed to the agent as a datagram that arrived on `X` from
//! the proxy. Over WebSocket the connection opens with the upgrade and each message is one
//! WebSocket message instead ([`crate::ws`]).
//!
//! One thread per agent (one with every connection, or devices and callers apart with
//! `--threads 2`), one level-triggered epoll set. TLS: a rustls client session per connection
//! trusting the CA file of `--tls-ca`; what the agent writes before the handshake ends is held by
//! the session and sent when it completes.
//!
//! Over a stream the agents arm no retransmission (timers A, E and G are for unreliable
//! transports, RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1): `retransmitted` stays 0 and only timer
//! H's give-up remains.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration as StdDuration;

use sipfork::core::io::Datagram;
use sipfork::core::transport::framer::{Frame, Framer, Limits};
use sipfork::engine::clock::Clock;
use sipfork::engine::shard::Handler;

use crate::agent::Agent;
use crate::scenario::Transport;
use crate::ws::{WsClient, WsIn};

/// Connection counters of a stream run (in the result's `harness.io_counters`, `stream_*`).
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Connections established.
    pub connected: AtomicU64,
    /// Connections the proxy (or the network) closed during the run.
    pub closed_by_peer: AtomicU64,
    /// Connections closed by the harness for a framing or TLS error.
    pub closed_bad: AtomicU64,
    /// Messages the agent sent on a connection that was closed (lost, as a UDP drop would be).
    pub unsent: AtomicU64,
    /// Messages framed and handed to the agents.
    pub messages_in: AtomicU64,
    /// Messages written.
    pub messages_out: AtomicU64,
    /// A connection's protocol failure has been printed (the first of the run only).
    told_bad: AtomicBool,
}

impl StreamCounters {
    /// `(name, value)` pairs for the result.
    pub fn named(&self) -> [(&'static str, u64); 6] {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("stream_connected", g(&self.connected)),
            ("stream_closed_by_peer", g(&self.closed_by_peer)),
            ("stream_closed_bad", g(&self.closed_bad)),
            ("stream_unsent", g(&self.unsent)),
            ("stream_messages_in", g(&self.messages_in)),
            ("stream_messages_out", g(&self.messages_out)),
        ]
    }
}

/// A rustls client configuration trusting the certificates of PEM file `ca`.
pub fn tls_client(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
    if certs.is_empty() {
        return Err(format!("--tls-ca {}: no certificate in it", ca.display()));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
    }
    // ring, as sipfork's own server side (rustls marks it deprecated only for its lack of
    // post-quantum key exchange).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One connection: a device's or a caller's.
struct Conn {
    stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    framer: Framer,
    tls: Option<rustls::ClientConnection>,
    /// The WebSocket layer (`--transport ws|wss`), inside TLS where there is TLS.
    ws: Option<WsClient>,
    /// Bytes written by the agent that the socket did not take yet (plain TCP; a TLS session
    /// holds its own).
    pending: Vec<u8>,
    /// A WebSocket frame being built (reused).
    frame_buf: Vec<u8>,
    /// Registered for `EPOLLOUT`.
    want_out: bool,
    /// In `Conns::to_flush`.
    queued: bool,
    open: bool,
}

/// The connections of one agent, the epoll set over them, and the run's counters.
struct Conns {
    conns: Vec<Conn>,
    by_local: HashMap<SocketAddr, usize>,
    epoll: i32,
    counters: Arc<StreamCounters>,
    /// Connections written to since the last flush: flushed once per turn, not per message.
    to_flush: Vec<usize>,
}

fn epoll_ctl(epoll: i32, op: i32, fd: i32, events: u32, token: usize) {
    let mut ev = libc::epoll_event {
        events,
        u64: token as u64,
    };
    // SAFETY: epoll_ctl on descriptors this thread owns, with a live event struct.
    unsafe {
        libc::epoll_ctl(epoll, op, fd, &mut ev);
    }
}

const IN: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
const IN_OUT: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLOUT) as u32;

/// Connects from `local` to `peer` (bound first, so the proxy sees the plan's address).
fn connect(local: SocketAddr, peer: SocketAddr) -> Result<TcpStream, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(
        Domain::for_address(local),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(|e| format!("socket: {e}"))?;
    // A port of the previous run may still be in TIME_WAIT.
    s.set_reuse_address(true).map_err(|e| e.to_string())?;
    s.bind(&local.into())
        .map_err(|e| format!("bind {local}: {e}"))?;
    s.connect_timeout(&peer.into(), StdDuration::from_secs(5))
        .map_err(|e| format!("connect {local} -> {peer}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(s.into())
}

impl Conn {
    /// Queues bytes for the wire (into the TLS session where there is one); false when the
    /// session refuses them.
    fn write(&mut self, bytes: &[u8]) -> bool {
        match &mut self.tls {
            Some(tls) => tls.writer().write_all(bytes).is_ok(),
            None => {
                self.pending.extend_from_slice(bytes);
                true
            }
        }
    }
}

/// Hands one whole message of a connection (`(proxy, local address, transport)`) to the agent.
fn deliver(
    counters: &StreamCounters,
    agent: &mut Agent,
    now: sipfork::time::Instant,
    (from, local, transport): (SocketAddr, SocketAddr, sipfork::core::transport::Transport),
    bytes: &[u8],
) {
    counters.messages_in.fetch_add(1, Ordering::Relaxed);
    agent.handle_datagram(
        now,
        Datagram {
            from,
            local,
            bytes,
            transport,
            peer_cert: None,
        },
    );
}

/// Hands bytes read off the wire (after TLS) to a connection's framing layer (fields apart from
/// its `Conn`, whose TLS session is borrowed while it reads).
fn received(ws: &mut Option<WsClient>, framer: &mut Framer, bytes: &[u8]) {
    match ws {
        Some(ws) => ws.push(bytes),
        None => framer.push(bytes),
    }
}

impl Conns {
    fn open(
        endpoints: &[(SocketAddr, SocketAddr)],
        tls: Option<&Arc<rustls::ClientConfig>>,
        ws: bool,
        counters: Arc<StreamCounters>,
    ) -> Result<Conns, String> {
        // SAFETY: plain epoll_create1; the descriptor is closed in Drop.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(format!("epoll: {}", std::io::Error::last_os_error()));
        }
        let mut set = Conns {
            conns: Vec::with_capacity(endpoints.len()),
            by_local: HashMap::with_capacity(endpoints.len()),
            epoll,
            counters,
            to_flush: Vec::with_capacity(endpoints.len()),
        };
        for &(local, peer) in endpoints {
            let stream = connect(local, peer)?;
            let tls = match tls {
                Some(config) => {
                    let name = rustls::pki_types::ServerName::IpAddress(peer.ip().into());
                    Some(
                        rustls::ClientConnection::new(Arc::clone(config), name)
                            .map_err(|e| format!("TLS {local}: {e}"))?,
                    )
                }
                None => None,
            };
            let i = set.conns.len();
            // The upgrade request goes first, as the loop's first write.
            let mut upgrade = Vec::new();
            let ws = ws.then(|| WsClient::start(&peer.to_string(), i as u32, &mut upgrade));
            let want_out = tls.is_some() || ws.is_some();
            epoll_ctl(
                epoll,
                libc::EPOLL_CTL_ADD,
                stream.as_raw_fd(),
                if want_out { IN_OUT } else { IN },
                i,
            );
            set.conns.push(Conn {
                stream,
                local,
                peer,
                framer: Framer::new(Limits {
                    max_header: 64 << 10,
                    max_body: 1 << 20,
                    // The proxy paces nothing: a caller's connection carries every call's answers.
                    max_per_second: u32::MAX,
                }),
                tls,
                ws,
                pending: Vec::new(),
                frame_buf: Vec::new(),
                want_out,
                queued: false,
                open: true,
            });
            set.by_local.insert(local, i);
            if !upgrade.is_empty() && !set.conns[i].write(&upgrade) {
                return Err(format!("TLS {local}: the upgrade request was refused"));
            }
            set.counters.connected.fetch_add(1, Ordering::Relaxed);
        }
        Ok(set)
    }

    fn close(&mut self, i: usize, bad: bool) {
        let c = &mut self.conns[i];
        if !c.open {
            return;
        }
        c.open = false;
        epoll_ctl(self.epoll, libc::EPOLL_CTL_DEL, c.stream.as_raw_fd(), 0, i);
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
        let counter = if bad {
            &self.counters.closed_bad
        } else {
            &self.counters.closed_by_peer
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes what connection `i` holds; watches for writability while some is left.
    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if !c.open {
            return;
        }
        let mut failed = false;
        if let Some(tls) = &mut c.tls {
            while tls.wants_write() {
                match tls.write_tls(&mut c.stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
        } else {
            let mut done = 0;
            while done < c.pending.len() {
                match c.stream.write(&c.pending[done..]) {
                    Ok(0) => {
                        failed = true;
                        break;
                    }
                    Ok(n) => done += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            c.pending.drain(..done);
        }
        if failed {
            self.close(i, false);
            return;
        }
        let left = match &c.tls {
            Some(tls) => tls.wants_write(),
            None => !c.pending.is_empty(),
        };
        if left != c.want_out {
            c.want_out = left;
            let events = if left { IN_OUT } else { IN };
            epoll_ctl(
                self.epoll,
                libc::EPOLL_CTL_MOD,
                c.stream.as_raw_fd(),
                events,
                i,
            );
        }
    }

    /// Queues `msg` on the connection bound to `from`.
    fn send(&mut self, from: Option<SocketAddr>, msg: &[u8]) {
        let Some(&i) = from.and_then(|f| self.by_local.get(&f)) else {
            self.counters.unsent.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let c = &mut self.conns[i];
        if !c.open {
            self.counters.unsent.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let written = match &mut c.ws {
            Some(ws) => {
                let mut framed = std::mem::take(&mut c.frame_buf);
                ws.send(msg, &mut framed);
                let ok = c.write(&framed);
                framed.clear();
                c.frame_buf = framed;
                ok
            }
            None => c.write(msg),
        };
        if !written {
            self.close(i, true);
            return;
        }
        self.counters.messages_out.fetch_add(1, Ordering::Relaxed);
        self.queue_flush(i);
    }

    /// Has connection `i` flushed at the end of this turn.
    fn queue_flush(&mut self, i: usize) {
        if !std::mem::replace(&mut self.conns[i].queued, true) {
            self.to_flush.push(i);
        }
    }

    /// Reads what connection `i` has, frames it and hands each message to `agent`.
    fn read(&mut self, i: usize, clock: &Clock, agent: &mut Agent, buf: &mut [u8]) {
        let c = &self.conns[i];
        let transport = match (c.tls.is_some(), c.ws.is_some()) {
            (false, false) => Transport::Tcp,
            (true, false) => Transport::Tls,
            (false, true) => Transport::Ws,
            (true, true) => Transport::Wss,
        }
        .core();
        // Whether something (the held frames, a pong) waits to be written after this read.
        let mut answered = false;
        let mut eof = false;
        let mut bad = false;
        {
            let c = &mut self.conns[i];
            if !c.open {
                return;
            }
            // At most 1 MiB per turn, so one busy connection cannot starve the others.
            for _ in 0..16 {
                match &mut c.tls {
                    Some(tls) => match tls.read_tls(&mut c.stream) {
                        Ok(0) => {
                            eof = true;
                        }
                        Ok(_) => {
                            if tls.process_new_packets().is_err() {
                                bad = true;
                                break;
                            }
                            loop {
                                match tls.reader().read(buf) {
                                    Ok(0) => {
                                        eof = true;
                                        break;
                                    }
                                    Ok(n) => received(&mut c.ws, &mut c.framer, &buf[..n]),
                                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                                    Err(_) => {
                                        eof = true;
                                        break;
                                    }
                                }
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => eof = true,
                    },
                    None => match c.stream.read(buf) {
                        Ok(0) => eof = true,
                        Ok(n) => received(&mut c.ws, &mut c.framer, &buf[..n]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => eof = true,
                    },
                }
                if eof {
                    break;
                }
            }
            let now = clock.now();
            while let Some(ws) = &mut c.ws {
                let mut out = std::mem::take(&mut c.frame_buf);
                let event = ws.next(&mut out);
                if let Ok(Some(WsIn::Upgraded)) = event {
                    out.extend_from_slice(&ws.take_held());
                }
                if !out.is_empty() {
                    answered = true;
                    if !c.write(&out) {
                        bad = true;
                    }
                }
                out.clear();
                c.frame_buf = out;
                match event {
                    Ok(Some(WsIn::Message)) => {
                        let bytes = c.ws.as_ref().map_or(&[][..], |ws| ws.message());
                        deliver(
                            &self.counters,
                            agent,
                            now,
                            (c.peer, c.local, transport),
                            bytes,
                        );
                    }
                    Ok(Some(WsIn::Upgraded)) => {}
                    Ok(Some(WsIn::Closed)) => {
                        eof = true;
                        break;
                    }
                    Ok(None) => break,
                    Err(why) => {
                        // The first such failure of the run is told (the rest are counted).
                        if !self.counters.told_bad.swap(true, Ordering::Relaxed) {
                            eprintln!("harness: WebSocket {} closed: {why}", c.local);
                        }
                        bad = true;
                        break;
                    }
                }
                if bad {
                    break;
                }
            }
            while c.ws.is_none() {
                match c.framer.next_frame(now) {
                    Ok(Some(Frame::Message(bytes))) => {
                        deliver(
                            &self.counters,
                            agent,
                            now,
                            (c.peer, c.local, transport),
                            bytes,
                        );
                    }
                    // A pong (or a ping) from the proxy: nothing to answer.
                    Ok(Some(Frame::Ping)) => {}
                    Ok(None) => break,
                    Err(_) => {
                        bad = true;
                        break;
                    }
                }
            }
        }
        if bad {
            self.close(i, true);
        } else if eof {
            if answered {
                // The close's echo goes out before the connection ends.
                self.flush(i);
            }
            self.close(i, false);
        } else if self.conns[i].tls.is_some() || answered {
            // The session may have handshake records, held messages or a pong to send now.
            self.flush(i);
        }
    }

    /// Sends what the agent's outbox holds: queued per connection, then one write each.
    fn drain(&mut self, agent: &mut Agent) {
        let out = agent.outbox();
        for t in out.transmits() {
            let bytes = out.bytes(t);
            self.send(t.from, bytes);
        }
        out.clear();
        let mut to_flush = std::mem::take(&mut self.to_flush);
        for &i in &to_flush {
            self.conns[i].queued = false;
            self.flush(i);
        }
        to_flush.clear();
        self.to_flush = to_flush;
    }
}

impl Drop for Conns {
    fn drop(&mut self) {
        // SAFETY: the epoll descriptor this set created; the streams close themselves.
        unsafe {
            libc::close(self.epoll);
        }
    }
}

/// A running stream harness thread.
pub struct StreamThread {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Agent, String>>,
}

impl StreamThread {
    /// Connects every endpoint (`(local, proxy)` pairs) and then runs `agent` over the
    /// connections until [`StreamThread::shutdown`]. `make` builds the agent once the
    /// connections are up, given the engine clock's offset from the run's epoch (µs).
    pub fn start(
        endpoints: Vec<(SocketAddr, SocketAddr)>,
        tls: Option<Arc<rustls::ClientConfig>>,
        ws: bool,
        counters: Arc<StreamCounters>,
        pin: Option<usize>,
        make: impl FnOnce(&Clock) -> Agent + Send + 'static,
    ) -> Result<StreamThread, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sipfork-load-stream".into())
            .spawn(move || {
                if let Some(cpu) = pin {
                    core_pin(cpu);
                }
                let mut conns = match Conns::open(&endpoints, tls.as_ref(), ws, counters) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        return Err(e);
                    }
                };
                let clock = Clock::start();
                let mut agent = make(&clock);
                run_loop(&mut conns, &clock, &mut agent, &stopped);
                Ok(agent)
            })
            .map_err(|e| format!("harness thread: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(StreamThread { stop, thread }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err("harness thread ended before connecting".into()),
        }
    }

    /// Stops the loop and returns its agent.
    pub fn shutdown(self) -> Result<Agent, String> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .join()
            .map_err(|_| "harness thread panicked".to_owned())?
    }
}

fn core_pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn run_loop(conns: &mut Conns, clock: &Clock, agent: &mut Agent, stop: &AtomicBool) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; 64 << 10];
    let mut pwait2 = true;
    while !stop.load(Ordering::Acquire) {
        let now = clock.now();
        agent.handle_timeout(now);
        conns.drain(agent);
        // Sleep until the agent's next deadline (at most 50 ms, so that a stop is seen), to
        // the microsecond where the kernel has epoll_pwait2 (5.11+), else to the millisecond.
        let wait = agent
            .poll_timeout()
            .map_or(StdDuration::from_millis(50), |t| {
                StdDuration::from_micros(t.saturating_since(clock.now()).as_micros() as u64)
                    .min(StdDuration::from_millis(50))
            });
        let n = wait_events(conns.epoll, &mut events, wait, &mut pwait2);
        for ev in events.iter().take(n) {
            let (i, bits) = (ev.u64 as usize, ev.events);
            if bits & libc::EPOLLOUT as u32 != 0 {
                conns.flush(i);
            }
            if bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32
                != 0
            {
                conns.read(i, clock, agent, &mut buf);
            }
        }
        conns.drain(agent);
    }
}

/// Waits at most `wait` for events of `epoll`; returns how many (0 on an error or a signal).
fn wait_events(
    epoll: i32,
    events: &mut [libc::epoll_event],
    wait: StdDuration,
    pwait2: &mut bool,
) -> usize {
    let max = events.len() as i32;
    if *pwait2 {
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `events` has `max` entries, `ts` is live; a null sigmask leaves the mask alone.
        let n =
            unsafe { libc::epoll_pwait2(epoll, events.as_mut_ptr(), max, &ts, std::ptr::null()) };
        if n >= 0 {
            return n as usize;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
            return 0;
        }
        *pwait2 = false;
    }
    let ms = wait.as_micros().div_ceil(1000) as i32;
    // SAFETY: `events` has `max` entries.
    let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), max, ms) };
    n.max(0) as usize
}
