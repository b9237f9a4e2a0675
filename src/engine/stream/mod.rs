//! TCP beside UDP, served by the shard loops (RFC 3261 §18: a proxy speaks both).
//!
//! Every shard binds its own `SO_REUSEPORT` listener on each TCP address, so the kernel spreads
//! new connections over the shards and each connection is owned, read and written by the shard
//! that accepted it. A shard's listeners and connections sit in one level-triggered epoll set
//! ([`Streams::fd`]) that the shard's UDP backend watches beside its sockets; after each wait the
//! loop calls [`Streams::poll`], which accepts, reads, cuts the bytes into messages with the
//! sans-IO framer (`core::transport::framer`) and hands each message to the handler as it hands
//! a datagram (source: the connection's peer address). [`Streams::divert`] takes out of the
//! outbox what the handler addressed to a peer with an open connection and writes it there, so
//! responses go back on the connection the request came on and a device registered over TCP is
//! reached over its own connection while it is up. A connection this shard opens for a TLS
//! target runs a rustls client session (the server's certificate verified against `[tls]
//! peer_ca`, the target's IP address as the server name); one whose handshake fails is reported
//! like a refused connect. With several shards, what one shard sends
//! to another shard's connection is handed to that shard ([`owners`]), and every shard's core
//! is told of a closed connection ([`Streams::take_gone`]).
//!
//! Limits, each counted in [`StreamStats`] when it closes a connection: the framer's (header
//! block, body, messages per second), an idle timeout, connections per source address and per
//! shard, and unsent bytes per connection (a peer that does not read).
//!
//! A listener marked for WebSocket ([`Streams::set_websocket`], `ws:` and `wss:`) serves
//! RFC 7118 instead of Content-Length framing: see [`ws`].
#![deny(clippy::undocumented_unsafe_blocks)]

mod client_cert;
pub mod owners;
mod ws;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};

use crate::core::io::{Datagram, Outbox};
use crate::core::shard::ShardId;
use crate::core::transport::framer::{Frame, FrameError, Framer, Limits, PONG};
use crate::core::transport::Transport;
use crate::engine::counters::counters;
use crate::time::{Duration, Instant};

/// Stream limits of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// Framing limits per connection.
    pub limits: Limits,
    /// A connection that delivered nothing for this long is closed.
    pub idle: Duration,
    /// Open connections per source IP address (per shard).
    pub max_per_source: u32,
    /// Open connections per shard.
    pub max_connections: u32,
    /// Unsent bytes a connection may hold before it is closed (its peer is not reading).
    pub max_unsent: usize,
    /// Connections this shard opens itself (for transmits the core marked `connect`).
    pub max_outbound: u32,
    /// An outbound connection not up after this long fails.
    pub connect_timeout: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            limits: Limits::default(),
            idle: Duration::from_secs(300),
            max_per_source: 64,
            max_connections: 10_000,
            max_unsent: 1 << 20,
            max_outbound: 1024,
            connect_timeout: Duration::from_secs(4),
        }
    }
}

impl StreamOptions {
    /// The `[tcp]` settings.
    pub fn from_config(c: &crate::config::TcpConfig) -> Self {
        StreamOptions {
            limits: Limits {
                max_header: c.max_header_bytes as usize,
                max_body: c.max_body_bytes as usize,
                max_per_second: c.max_messages_per_second,
            },
            idle: c.idle,
            max_per_source: c.max_connections_per_source,
            max_outbound: c.max_outbound_connections,
            connect_timeout: c.connect_timeout,
            ..StreamOptions::default()
        }
    }
}

counters! {
/// Stream counters of one shard.
pub struct StreamStats {
    /// Connections accepted.
    pub accepted,
    /// Connections refused at accept: the source already holds `max_per_source`.
    pub refused_per_source,
    /// Connections refused at accept: the shard holds `max_connections`.
    pub refused_full,
    /// Messages framed and handed to the handler.
    pub messages,
    /// CRLFCRLF keep-alive pings answered with CRLF.
    pub pings,
    /// Messages written to a connection.
    pub sent,
    /// Connections the peer closed (or reset).
    pub closed_peer,
    /// Connections closed after `idle` without a message.
    pub closed_idle,
    /// Connections closed for a header block or body over the limit.
    pub closed_oversize,
    /// Connections closed for more messages per second than allowed.
    pub closed_over_limit,
    /// Connections closed for a missing or malformed Content-Length.
    pub closed_bad_framing,
    /// Connections closed because their peer did not read what was sent.
    pub closed_unsent,
    /// TLS connections closed for a failed handshake or a bad record.
    pub closed_tls,
    /// Messages handed to the shard owning the connection they go to (`owners`).
    pub relayed,
    /// Messages for another shard's connection that were lost: that connection had closed
    /// by the time they arrived, or (counted by the sender) they could not be handed over.
    pub relay_lost,
    /// Connections opened by this shard (for requests toward a `;transport=tcp` or TLS target).
    pub connects,
    /// Connections this shard opened that failed before they were up (refused, unreachable,
    /// timed out; for TLS also a failed or late handshake): the core ends the branches waiting
    /// on them (503).
    pub connect_failed,
    /// Connections not opened: the shard holds `max_outbound` already, or a TLS target without
    /// a TLS client configuration (a failure too).
    pub refused_outbound,
    /// WebSocket connections upgraded (the `101` sent).
    pub ws_upgraded,
    /// WebSocket upgrades refused with a 4xx (no `sip` subprotocol, a bad version or key, an
    /// Origin not allowed, not a WebSocket upgrade); one over the size limit counts as oversize.
    pub ws_refused,
    /// TLS connections whose peer presented a client certificate that verified against
    /// `[tls] ca` (its names identify a trunk with `trunk_certificate`).
    pub client_cert_verified,
    /// TLS handshakes refused for the client certificate presented (not issued by `[tls] ca`,
    /// expired, not for client use, malformed).
    pub client_cert_refused,
    /// Accepted TLS connections closed because a reload changed `[tls] ca` (their client
    /// certificate, or the handshake under way, was verified against the old CA).
    pub closed_ca_changed,
}
}

/// Binds one `SO_REUSEPORT` TCP listener per shard on each address (port 0: the first bind
/// picks the port, the others share it).
pub fn bind_stream_listeners(
    addrs: &[SocketAddr],
    shards: usize,
) -> Result<Vec<Vec<TcpListener>>, (SocketAddr, io::Error)> {
    let mut per_shard: Vec<Vec<TcpListener>> = (0..shards).map(|_| Vec::new()).collect();
    for &addr in addrs {
        let mut bound = addr;
        for listeners in per_shard.iter_mut() {
            let l = bind_one(bound).map_err(|e| (addr, e))?;
            bound = l.local_addr().map_err(|e| (addr, e))?;
            listeners.push(l);
        }
    }
    Ok(per_shard)
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// epoll tokens below this are listeners (their index); from it on, connection slots.
const CONN_BASE: u64 = 1 << 32;
/// Bytes read from one connection per poll at most, so one sender cannot hold the shard.
const READ_PER_POLL: usize = 256 << 10;
/// Connections accepted per listener per poll at most.
const ACCEPT_PER_POLL: usize = 64;
/// epoll events taken per poll.
const EVENTS: usize = 256;
/// How often idle connections are looked for.
const SWEEP: Duration = Duration::from_secs(1);

struct Conn {
    sock: TcpStream,
    /// The TLS session: a server session on a connection accepted on a TLS listener, a client
    /// session on one this shard opened toward a TLS target.
    tls: Option<Box<rustls::Connection>>,
    peer: SocketAddr,
    local: SocketAddr,
    framer: Framer,
    unsent: Vec<u8>,
    last_message: Instant,
    writable_armed: bool,
    /// Framing failed: no more reads; closed once what the handler answered is written.
    closing: Option<Close>,
    /// Opened by this shard and not up yet: fails at this deadline; writes queue meanwhile.
    connecting: Option<Instant>,
    /// Opened by this shard (counts toward `max_outbound`, not per source).
    outbound: bool,
    /// Accepted on a WebSocket listener: WebSocket framing instead of the framer's.
    ws: Option<Box<ws::WsConn>>,
    /// Accepted on a TLS listener: the names of the client certificate the peer presented and
    /// the listener verified, read once when the handshake is done (`client_cert`).
    peer_cert: Option<crate::core::transport::peer_cert::PeerCert>,
}

impl Conn {
    /// A connection just accepted (`connecting` None) or just opened by this shard, not up
    /// before `connecting`.
    fn new(
        sock: TcpStream,
        tls: Option<Box<rustls::Connection>>,
        (peer, local): (SocketAddr, SocketAddr),
        limits: Limits,
        now: Instant,
        connecting: Option<Instant>,
    ) -> Conn {
        Conn {
            sock,
            tls,
            peer,
            local,
            framer: Framer::new(limits),
            unsent: Vec::new(),
            last_message: now,
            // An opened connection waits for writability to learn that it is up.
            writable_armed: connecting.is_some(),
            closing: None,
            connecting,
            outbound: connecting.is_some(),
            ws: None,
            peer_cert: None,
        }
    }

    fn transport(&self) -> Transport {
        match (self.ws.is_some(), self.tls.is_some()) {
            (true, true) => Transport::Wss,
            (true, false) => Transport::Ws,
            (false, true) => Transport::Tls,
            (false, false) => Transport::Tcp,
        }
    }

    /// Bytes read (decrypted) into the framer, or the WebSocket codec.
    fn push(&mut self, plain: &[u8]) {
        match self.ws.as_mut() {
            Some(ws) => ws.push(plain),
            None => self.framer.push(plain),
        }
    }
}

/// Why a connection is closed.
#[derive(Clone, Copy, Debug)]
enum Close {
    Peer,
    Idle,
    Framing(FrameError),
    Unsent,
    Tls,
    /// A WebSocket handshake refused, or a bad WebSocket frame or message.
    Ws(crate::core::transport::ws::WsError),
    /// A reload changed `[tls] ca`, and the old CA verified the connection's client certificate.
    CaChanged,
}

/// A shard's TCP listeners and connections.
pub struct Streams {
    epoll: OwnedFd,
    listeners: Vec<(TcpListener, SocketAddr, Option<Arc<rustls::ServerConfig>>)>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    by_peer: HashMap<SocketAddr, usize>,
    per_source: HashMap<IpAddr, u32>,
    opts: StreamOptions,
    stats: StreamStats,
    events: Vec<libc::epoll_event>,
    read_buf: Vec<u8>,
    next_sweep: Instant,
    /// A connection still had bytes to read when its poll budget ran out.
    more: bool,
    /// Connections whose framing failed, closed at the end of [`Streams::divert`].
    closing: Vec<usize>,
    /// The process's connection owners and this shard's id (several shards).
    owners: Option<(Arc<owners::FlowOwners>, ShardId)>,
    /// This shard's snapshots of that table, for the lookups of [`Streams::divert`].
    owners_view: Option<owners::View>,
    /// Connections closed since [`Streams::take_gone`]: peer and transport.
    gone: Vec<(SocketAddr, Transport)>,
    /// Connections this shard opened that failed, since [`Streams::take_failed`].
    failed: Vec<(SocketAddr, Transport)>,
    /// Open connections this shard opened itself.
    outbound: u32,
    /// The time of the last poll (an outbound connection's deadline counts from it).
    now: Instant,
    /// The client configuration of TLS connections this shard opens (`[tls] peer_ca`); `None`:
    /// none is opened.
    tls_client: Option<Arc<rustls::ClientConfig>>,
    /// The names TLS connections to these addresses verify ([`TlsPeerNames`]).
    tls_names: TlsPeerNames,
    /// For each listener (by index): the WebSocket settings when it serves WebSocket.
    websocket: Vec<Option<Arc<crate::core::transport::ws::WsSettings>>>,
}

/// The server name a TLS connection this shard opens to each address must verify (a next hop or
/// trunk configured by host name; also sent as SNI). Any other address: its IP address.
pub type TlsPeerNames =
    Arc<std::collections::BTreeMap<SocketAddr, rustls::pki_types::ServerName<'static>>>;

/// A reload's new `[tls]` for the shards: the listeners' server configuration and the client
/// configuration of the TLS connections they open.
#[derive(Clone, Debug)]
pub struct TlsRenewal {
    /// For connections accepted on TLS listeners from now on.
    pub server: Arc<rustls::ServerConfig>,
    /// For TLS connections opened from now on (`None`: no more TLS out).
    pub client: Option<Arc<rustls::ClientConfig>>,
    /// The names those connections verify.
    pub names: TlsPeerNames,
    /// `[tls] ca` changed: the accepted connections whose client certificate the old CA
    /// verified are closed (their peer reconnects and is verified against the new one).
    pub ca_changed: bool,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("listeners", &self.listeners.len())
            .field("connections", &self.by_peer.len())
            .finish_non_exhaustive()
    }
}

impl Streams {
    /// Watches `listeners` (this shard's) in a new epoll set; a listener with a rustls
    /// configuration accepts TLS.
    pub fn new(
        listeners: Vec<(TcpListener, Option<Arc<rustls::ServerConfig>>)>,
        opts: StreamOptions,
    ) -> io::Result<Streams> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut with_addrs = Vec::with_capacity(listeners.len());
        for (i, (l, tls)) in listeners.into_iter().enumerate() {
            l.set_nonblocking(true)?;
            ctl(
                &epoll,
                libc::EPOLL_CTL_ADD,
                l.as_raw_fd(),
                libc::EPOLLIN as u32,
                i as u64,
            )?;
            let local = l.local_addr()?;
            with_addrs.push((l, local, tls));
        }
        Ok(Streams {
            epoll,
            listeners: with_addrs,
            conns: Vec::new(),
            free: Vec::new(),
            by_peer: HashMap::new(),
            per_source: HashMap::new(),
            opts,
            stats: StreamStats::default(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            read_buf: vec![0; 64 << 10],
            next_sweep: Instant::FAR_FUTURE,
            more: false,
            closing: Vec::new(),
            owners: None,
            owners_view: None,
            gone: Vec::new(),
            failed: Vec::new(),
            outbound: 0,
            now: Instant::ZERO,
            tls_client: None,
            tls_names: TlsPeerNames::default(),
            websocket: Vec::new(),
        })
    }

    /// Shares the process's table of connection owners: this shard (`me`) enters its
    /// connections, and [`Streams::divert`] hands what goes to another shard's connection to
    /// that shard.
    pub fn share_owners(&mut self, owners: Arc<owners::FlowOwners>, me: ShardId) {
        self.owners_view = Some(owners::View::of(Arc::clone(&owners)));
        self.owners = Some((owners, me));
    }

    /// TLS connections this shard opens from now on verify their server and present our
    /// certificate with `config`; `None`: no TLS connection is opened (a TLS transmit fails).
    pub fn set_tls_client(&mut self, config: Option<Arc<rustls::ClientConfig>>) {
        self.tls_client = config;
    }

    /// TLS connections this shard opens from now on to an address of `names` verify (and send
    /// as SNI) its name instead of the IP address.
    pub fn set_tls_peer_names(&mut self, names: TlsPeerNames) {
        self.tls_names = names;
    }

    /// Marks listeners (by index, as given to [`Streams::new`]) that serve WebSocket (RFC 7118):
    /// `Some(settings)` for a `ws:` listener, or a `wss:` one (which has a TLS configuration).
    pub fn set_websocket(
        &mut self,
        per_listener: Vec<Option<Arc<crate::core::transport::ws::WsSettings>>>,
    ) {
        self.websocket = per_listener;
    }

    /// Connections accepted on this shard's TLS listeners, and TLS connections it opens, from
    /// now on get the renewed configurations (handed over by a reload); open connections keep
    /// their session, except, when the CA changed, accepted ones that presented a client
    /// certificate or are still in their handshake (verified against the old CA): those close.
    pub fn renew_tls(&mut self, renewal: TlsRenewal) {
        if renewal.ca_changed {
            let vouched: Vec<usize> = (self.conns.iter().enumerate())
                .filter_map(|(slot, c)| {
                    let c = c.as_ref()?;
                    let accepted_tls = !c.outbound && c.tls.as_ref().is_some();
                    let handshaking = c.tls.as_ref().is_some_and(|t| t.is_handshaking());
                    (c.peer_cert.is_some() || (accepted_tls && handshaking)).then_some(slot)
                })
                .collect();
            if !vouched.is_empty() {
                tracing::info!(
                    connections = vouched.len(),
                    "[tls] ca changed: closing the connections verified against the old CA"
                );
            }
            for slot in vouched {
                self.close(slot, Close::CaChanged);
            }
        }
        for tls in self
            .listeners
            .iter_mut()
            .filter_map(|(_, _, tls)| tls.as_mut())
        {
            *tls = Arc::clone(&renewal.server);
        }
        self.tls_client = renewal.client;
        self.tls_names = renewal.names;
    }

    /// The connections closed since the last call, with their transports (the engine tells
    /// every shard's handler: bindings over them may live on any shard).
    pub fn take_gone(&mut self) -> Vec<(SocketAddr, Transport)> {
        std::mem::take(&mut self.gone)
    }

    /// The connections this shard opened that failed before they were up (refused,
    /// unreachable, timed out) since the last call: the engine tells the handler, whose
    /// branches waiting on them end (`Core::flow_failed`).
    pub fn take_failed(&mut self) -> Vec<(SocketAddr, Transport)> {
        std::mem::take(&mut self.failed)
    }

    /// The epoll set's descriptor: readable while a listener or connection is ready (the UDP
    /// backend puts it in its own wait set).
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// The listeners' addresses.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(_, a, _)| *a).collect()
    }

    /// Counters so far.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.by_peer.len()
    }

    /// Whether a connection to `peer` is open.
    pub fn has_peer(&self, peer: SocketAddr) -> bool {
        self.by_peer.contains_key(&peer)
    }

    /// When [`Streams::expire`] next has work, or now when input is left to read or a failed
    /// connect is to be reported.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        if self.more || !self.failed.is_empty() {
            Some(now)
        } else if self.by_peer.is_empty() {
            None
        } else {
            Some(self.next_sweep)
        }
    }

    /// Accepts and reads whatever is ready without blocking; every whole message goes to
    /// `deliver`. Returns the number of messages delivered.
    pub fn poll(&mut self, now: Instant, deliver: &mut dyn FnMut(Datagram<'_>)) -> usize {
        self.more = false;
        self.now = now;
        // SAFETY: `events` is a live buffer of `EVENTS` entries; a zero timeout never blocks.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                EVENTS as i32,
                0,
            )
        };
        let mut delivered = 0;
        for k in 0..usize::try_from(n).unwrap_or(0) {
            let ev = self.events[k];
            let (token, flags) = (ev.u64, ev.events);
            if token < CONN_BASE {
                self.accept(token as usize, now);
                continue;
            }
            let slot = (token - CONN_BASE) as usize;
            if self.conns[slot]
                .as_ref()
                .is_some_and(|c| c.connecting.is_some())
            {
                // An outbound connection: up, or failed (a refusal reports ERR and HUP).
                if !self.connected(slot, flags) {
                    continue;
                }
            }
            if flags & libc::EPOLLOUT as u32 != 0 {
                if let Err(why) = self.flush(slot) {
                    self.close(slot, why);
                    continue;
                }
            }
            if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                match self.read(slot, now, deliver) {
                    Ok(n) => delivered += n,
                    Err(why @ (Close::Framing(_) | Close::Ws(_))) => {
                        self.close_after_answers(slot, why)
                    }
                    Err(why) => self.close(slot, why),
                }
            }
        }
        delivered
    }

    fn accept(&mut self, index: usize, now: Instant) {
        for _ in 0..ACCEPT_PER_POLL {
            let (sock, peer) = match self.listeners[index].0.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return, // ECONNABORTED, EMFILE: the next poll tries again
            };
            let local = self.listeners[index].1;
            let tls = match &self.listeners[index].2 {
                None => None,
                Some(config) => match rustls::ServerConnection::new(Arc::clone(config)) {
                    Ok(session) => Some(Box::new(rustls::Connection::Server(session))),
                    Err(_) => {
                        self.stats.closed_tls += 1;
                        continue;
                    }
                },
            };
            if self.by_peer.len() >= self.opts.max_connections as usize {
                self.stats.refused_full += 1;
                continue; // dropped: closed
            }
            let from_source = self.per_source.entry(peer.ip()).or_insert(0);
            if *from_source >= self.opts.max_per_source {
                self.stats.refused_per_source += 1;
                continue;
            }
            if sock.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = sock.set_nodelay(true);
            *from_source += 1;
            let slot = self.free.pop().unwrap_or_else(|| {
                self.conns.push(None);
                self.conns.len() - 1
            });
            let token = CONN_BASE + slot as u64;
            if ctl(
                &self.epoll,
                libc::EPOLL_CTL_ADD,
                sock.as_raw_fd(),
                libc::EPOLLIN as u32,
                token,
            )
            .is_err()
            {
                self.release_source(peer.ip());
                self.free.push(slot);
                continue;
            }
            let mut conn = Conn::new(sock, tls, (peer, local), self.opts.limits, now, None);
            conn.ws = self
                .websocket
                .get(index)
                .cloned()
                .flatten()
                .map(ws::WsConn::new);
            self.conns[slot] = Some(conn);
            // A peer reconnecting from the same address replaces its old connection's entry.
            if let Some(old) = self.by_peer.insert(peer, slot) {
                self.close_slot_only(old);
            }
            if let Some((owners, me)) = &self.owners {
                owners.insert(
                    peer,
                    *me,
                    self.conns[slot]
                        .as_ref()
                        .map_or(Transport::Tcp, Conn::transport),
                );
            }
            if self.next_sweep == Instant::FAR_FUTURE {
                self.next_sweep = now + SWEEP;
            }
            self.stats.accepted += 1;
        }
        self.more = true; // more may be waiting in the backlog
    }

    fn read(
        &mut self,
        slot: usize,
        now: Instant,
        deliver: &mut dyn FnMut(Datagram<'_>),
    ) -> Result<usize, Close> {
        let Some(conn) = self.conns[slot].as_mut() else {
            return Ok(0);
        };
        let mut total = 0;
        let mut delivered = 0;
        let mut pongs = 0;
        loop {
            let n = match conn.sock.read(&mut self.read_buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Close::Peer),
            };
            match conn.tls.as_mut() {
                None => conn.push(&self.read_buf[..n]),
                Some(tls) => {
                    let was_handshaking = tls.is_handshaking();
                    let plain = decrypt(tls, &self.read_buf[..n])
                        .inspect_err(|e| client_cert::count_refused(tls, e, &mut self.stats))
                        .map_err(|_| Close::Tls)?;
                    // The handshake ends once, here (the records it reads are decrypted here).
                    if was_handshaking && !tls.is_handshaking() {
                        conn.peer_cert = client_cert::names(tls, &mut self.stats);
                    }
                    conn.push(&plain);
                }
            }
            total += n;
            // On a close (n = 0), what was whole before it is still delivered.
            drain(
                conn,
                now,
                deliver,
                &mut self.stats,
                &mut delivered,
                &mut pongs,
            )?;
            if n == 0 {
                return Err(Close::Peer);
            }
            if total >= READ_PER_POLL {
                self.more = true;
                break;
            }
        }
        for _ in 0..pongs {
            self.write(slot, PONG)?;
        }
        // Handshake records (and alerts) the session wants sent.
        self.write(slot, b"")?;
        Ok(delivered)
    }

    /// Stops reading a connection whose framing failed; the answers to the messages it
    /// delivered before still go out on it ([`Streams::divert`]), then it is closed.
    fn close_after_answers(&mut self, slot: usize, why: Close) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if conn.closing.is_none() {
            conn.closing = Some(why);
            let _ = ctl(
                &self.epoll,
                libc::EPOLL_CTL_DEL,
                conn.sock.as_raw_fd(),
                0,
                0,
            );
            self.closing.push(slot);
        }
    }

    /// Moves every transmit addressed to a peer with an open connection from `out` onto that
    /// connection; what is left goes out over UDP.
    ///
    /// With several shards, a transmit to a peer whose connection another shard owns goes to
    /// `relay(owner, peer, bytes)` (the engine posts it to that shard's mailbox, which writes
    /// it with [`Streams::write_relayed`]; false when it could not be handed over).
    ///
    /// A transmit the core marked [`crate::core::io::Transmit::connect`] whose peer has no
    /// connection anywhere opens one from this shard ([`Streams::connect`]); its bytes wait in
    /// the connection until it is up. Nothing else ever opens a connection.
    pub fn divert(
        &mut self,
        out: &mut Outbox,
        relay: &mut dyn FnMut(ShardId, SocketAddr, &[u8]) -> bool,
    ) {
        let elsewhere = self.owners.as_ref().is_some_and(|(o, _)| !o.is_empty());
        let connects = out.wants_connect();
        if self.by_peer.is_empty() && !elsewhere && self.closing.is_empty() && !connects {
            return;
        }
        // Moved out while the outbox is walked, so its snapshots can be refreshed (no shared
        // count is touched: a lookup of an unchanged table writes nothing shared).
        let me = self.owners.as_ref().map(|(_, me)| *me);
        let mut view = self.owners_view.take();
        out.retain(|t, bytes| {
            if t.connect == Some(Transport::Udp) {
                return true;
            }
            // A transmit the core marked for TLS (a `sips:` or `;transport=tls` target) never
            // goes over a plain connection to its address, here or on another shard, which the
            // core may not know of (RFC 3261 §26.2.2, RFC 5630): it fails like a refused connect.
            let plain =
                |over: Transport| t.connect == Some(Transport::Tls) && over != Transport::Tls;
            let slot = match self.by_peer.get(&t.to) {
                Some(&slot) => {
                    if self.conns[slot]
                        .as_ref()
                        .is_some_and(|c| plain(c.transport()))
                    {
                        self.stats.refused_outbound += 1;
                        self.failed.push((t.to, Transport::Tls));
                        return false;
                    }
                    slot
                }
                None => {
                    if let (Some(view), Some(me), true) = (view.as_mut(), me, elsewhere) {
                        match view.owner(t.to) {
                            Some((_, over)) if plain(over) => {
                                self.stats.refused_outbound += 1;
                                self.failed.push((t.to, Transport::Tls));
                                return false;
                            }
                            Some((owner, _)) if owner != me => {
                                if relay(owner, t.to, bytes) {
                                    self.stats.relayed += 1;
                                } else {
                                    self.stats.relay_lost += 1;
                                }
                                return false;
                            }
                            _ => {}
                        }
                    }
                    let Some(transport) = t.connect else {
                        return true;
                    };
                    match self.connect(t.to, transport) {
                        Some(slot) => slot,
                        None => return false, // failed: reported through take_failed
                    }
                }
            };
            match self.write(slot, bytes) {
                Ok(()) => self.stats.sent += 1,
                Err(why) => self.close(slot, why),
            }
            false
        });
        self.owners_view = view;
        for slot in std::mem::take(&mut self.closing) {
            if let Some(why) = self.conns[slot].as_ref().and_then(|c| c.closing) {
                self.close(slot, why);
            }
        }
    }

    /// Opens a connection to `peer` for a transmit the core marked (TCP, or TLS with a client
    /// configuration: a rustls client session whose server name is the host name `peer` was
    /// configured with, else `peer`'s IP address, which the server's certificate must carry):
    /// non-blocking, entered in the owners
    /// table like an accepted one, its writes queued until it is up (with TLS: encrypted once
    /// the handshake is done). `None` when it could not even start (over `max_outbound`, no TLS
    /// client configuration, or the socket calls failed): the failure is reported.
    fn connect(&mut self, peer: SocketAddr, transport: Transport) -> Option<usize> {
        let tls = match (transport, &self.tls_client) {
            (Transport::Tcp, _) => None,
            (Transport::Tls, Some(config)) => {
                let name =
                    self.tls_names.get(&peer).cloned().unwrap_or_else(|| {
                        rustls::pki_types::ServerName::IpAddress(peer.ip().into())
                    });
                rustls::ClientConnection::new(Arc::clone(config), name)
                    .ok()
                    .map(|c| Box::new(rustls::Connection::Client(c)))
            }
            _ => None,
        };
        if (transport == Transport::Tls && tls.is_none())
            || transport == Transport::Udp
            || transport.is_websocket() // clients connect in (RFC 7118); never opened
            || self.outbound >= self.opts.max_outbound
        {
            self.stats.refused_outbound += 1;
            self.failed.push((peer, transport));
            return None;
        }
        // Our listener's address for the transport (what the core knows as where the messages
        // arrive), and the source IP of the connection when the listener names one.
        let local = self
            .listeners
            .iter()
            .enumerate()
            .find(|(i, (_, a, l))| {
                l.is_some() == tls.is_some()
                    && a.is_ipv4() == peer.is_ipv4()
                    && self.websocket.get(*i).is_none_or(Option::is_none)
            })
            .map(|(_, (_, a, _))| *a);
        let started = (|| -> io::Result<TcpStream> {
            let socket = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))?;
            socket.set_nonblocking(true)?;
            socket.set_cloexec(true)?;
            socket.set_nodelay(true)?;
            if let Some(ip) = local.map(|a| a.ip()).filter(|ip| !ip.is_unspecified()) {
                socket.bind(&SocketAddr::new(ip, 0).into())?;
            }
            match socket.connect(&peer.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => return Err(e),
            }
            Ok(socket.into())
        })();
        let Ok(sock) = started else {
            self.stats.connect_failed += 1;
            self.failed.push((peer, transport));
            return None;
        };
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let token = CONN_BASE + slot as u64;
        let events = (libc::EPOLLIN | libc::EPOLLOUT) as u32;
        if ctl(
            &self.epoll,
            libc::EPOLL_CTL_ADD,
            sock.as_raw_fd(),
            events,
            token,
        )
        .is_err()
        {
            self.free.push(slot);
            self.stats.connect_failed += 1;
            self.failed.push((peer, transport));
            return None;
        }
        let now = self.now;
        let local = local.or_else(|| sock.local_addr().ok()).unwrap_or(peer);
        self.conns[slot] = Some(Conn::new(
            sock,
            tls,
            (peer, local),
            self.opts.limits,
            now,
            Some(now + self.opts.connect_timeout),
        ));
        self.by_peer.insert(peer, slot);
        if let Some((owners, me)) = &self.owners {
            owners.insert(peer, *me, transport);
        }
        if self.next_sweep == Instant::FAR_FUTURE {
            self.next_sweep = now + SWEEP;
        }
        self.outbound += 1;
        self.stats.connects += 1;
        Some(slot)
    }

    /// An outbound connection's first event: up (`true`: served from now on like an accepted
    /// one), or failed (`false`: closed and reported).
    fn connected(&mut self, slot: usize, flags: u32) -> bool {
        let Some(conn) = self.conns[slot].as_mut() else {
            return false;
        };
        let error = !matches!(conn.sock.take_error(), Ok(None))
            || flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
        if error {
            self.fail_connect(slot);
            return false;
        }
        if flags & libc::EPOLLOUT as u32 == 0 {
            return false; // not decided yet
        }
        conn.connecting = None;
        true
    }

    /// An outbound connection that never came up: closed, counted, reported to the core.
    fn fail_connect(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].as_ref() else {
            return;
        };
        let (peer, transport) = (conn.peer, conn.transport());
        self.stats.connect_failed += 1;
        if self.by_peer.get(&peer) == Some(&slot) {
            self.by_peer.remove(&peer);
            if let Some((owners, me)) = &self.owners {
                owners.remove(peer, *me);
            }
        }
        self.failed.push((peer, transport));
        self.close_slot_only(slot);
    }

    /// Writes a message another shard handed over to this shard's connection with `peer`
    /// (counted as lost when that connection closed meanwhile).
    pub fn write_relayed(&mut self, peer: SocketAddr, bytes: &[u8]) {
        let Some(&slot) = self.by_peer.get(&peer) else {
            self.stats.relay_lost += 1;
            return;
        };
        match self.write(slot, bytes) {
            Ok(()) => self.stats.sent += 1,
            Err(why) => self.close(slot, why),
        }
    }

    /// Writes `plain` to the connection (through its TLS session, if any; with TLS an empty
    /// `plain` sends what the session has pending, such as handshake records).
    fn write(&mut self, slot: usize, plain: &[u8]) -> Result<(), Close> {
        let Some(conn) = self.conns[slot].as_mut() else {
            return Ok(());
        };
        let plain = match conn.ws.as_mut() {
            Some(ws) => ws.wrap(plain),
            None => plain,
        };
        let records;
        let bytes = match conn.tls.as_mut() {
            None => plain,
            Some(tls) => {
                if !plain.is_empty() {
                    tls.writer().write_all(plain).map_err(|_| Close::Tls)?;
                }
                let mut out = Vec::new();
                while tls.wants_write() {
                    tls.write_tls(&mut out).map_err(|_| Close::Tls)?;
                }
                records = out;
                &records[..]
            }
        };
        let mut rest = bytes;
        if conn.unsent.is_empty() && conn.connecting.is_none() {
            while !rest.is_empty() {
                match conn.sock.write(rest) {
                    Ok(0) => return Err(Close::Peer),
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Err(Close::Peer),
                }
            }
        }
        if rest.is_empty() || conn.closing.is_some() {
            return Ok(()); // a closing connection gets what the socket takes at once
        }
        if conn.unsent.len() + rest.len() > self.opts.max_unsent {
            return Err(Close::Unsent);
        }
        conn.unsent.extend_from_slice(rest);
        if !conn.writable_armed {
            conn.writable_armed = true;
            let fd = conn.sock.as_raw_fd();
            ctl(
                &self.epoll,
                libc::EPOLL_CTL_MOD,
                fd,
                (libc::EPOLLIN | libc::EPOLLOUT) as u32,
                CONN_BASE + slot as u64,
            )
            .map_err(|_| Close::Peer)?;
        }
        Ok(())
    }

    fn flush(&mut self, slot: usize) -> Result<(), Close> {
        let Some(conn) = self.conns[slot].as_mut() else {
            return Ok(());
        };
        while !conn.unsent.is_empty() {
            match conn.sock.write(&conn.unsent) {
                Ok(0) => return Err(Close::Peer),
                Ok(n) => {
                    conn.unsent.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Err(Close::Peer),
            }
        }
        conn.writable_armed = false;
        let fd = conn.sock.as_raw_fd();
        ctl(
            &self.epoll,
            libc::EPOLL_CTL_MOD,
            fd,
            libc::EPOLLIN as u32,
            CONN_BASE + slot as u64,
        )
        .map_err(|_| Close::Peer)
    }

    /// Closes connections idle for longer than the idle timeout (looked at once a second).
    pub fn expire(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        // An upgraded WebSocket silent for half the idle timeout is pinged once first (ws.rs).
        let mut ping = Vec::new();
        let idle: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| {
                let c = c.as_ref()?;
                // (A connection still connecting fails at its own deadline, reported.)
                if c.connecting.is_some() {
                    return None;
                }
                let silent = now.saturating_since(c.last_message);
                if c.ws.as_ref().is_some_and(|ws| ws.wants_ping()) {
                    if silent >= self.opts.idle / 2 {
                        ping.push(slot);
                    }
                    return None;
                }
                (silent >= self.opts.idle).then_some(slot)
            })
            .collect();
        for slot in ping {
            if let Some(ws) = self.conns[slot].as_mut().and_then(|c| c.ws.as_mut()) {
                ws.ping();
            }
            if let Err(why) = self.write(slot, b"") {
                self.close(slot, why);
            }
        }
        let late: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(slot, c)| {
                c.as_ref()
                    .filter(|c| match c.connecting {
                        Some(deadline) => now >= deadline,
                        // A TLS handshake gets as long as the TCP connect did.
                        None => {
                            handshaking_out(c)
                                && now.saturating_since(c.last_message) >= self.opts.connect_timeout
                        }
                    })
                    .map(|_| slot)
            })
            .collect();
        for slot in late {
            self.fail_connect(slot);
        }
        for slot in idle {
            self.close(slot, Close::Idle);
        }
        self.next_sweep = if self.by_peer.is_empty() {
            Instant::FAR_FUTURE
        } else {
            now + SWEEP
        };
    }

    fn close(&mut self, slot: usize, why: Close) {
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            send_farewell(conn, why);
        }
        let Some(conn) = self.conns.get(slot).and_then(Option::as_ref) else {
            return;
        };
        if handshaking_out(conn) {
            // A TLS connection we opened whose handshake failed (the server's certificate not
            // trusted, an alert, the server closing): a failed connect, reported to the core.
            if matches!(why, Close::Tls) {
                self.stats.closed_tls += 1;
            }
            self.fail_connect(slot);
            return;
        }
        match why {
            Close::Peer => self.stats.closed_peer += 1,
            Close::Idle => self.stats.closed_idle += 1,
            Close::Unsent => self.stats.closed_unsent += 1,
            Close::Tls => self.stats.closed_tls += 1,
            Close::CaChanged => self.stats.closed_ca_changed += 1,
            Close::Framing(e) if e.is_oversize() => self.stats.closed_oversize += 1,
            Close::Framing(FrameError::TooManyMessages) => self.stats.closed_over_limit += 1,
            Close::Framing(_) => self.stats.closed_bad_framing += 1,
            Close::Ws(e) => ws::count_close(e, &mut self.stats),
        }
        if let Some(conn) = &self.conns[slot] {
            if self.by_peer.get(&conn.peer) == Some(&slot) {
                self.by_peer.remove(&conn.peer);
                self.gone.push((conn.peer, conn.transport()));
                if let Some((owners, me)) = &self.owners {
                    owners.remove(conn.peer, *me);
                }
            }
        }
        self.close_slot_only(slot);
    }

    /// Drops the connection in `slot` (its socket closes) without counting.
    fn close_slot_only(&mut self, slot: usize) {
        if let Some(conn) = self.conns[slot].take() {
            let _ = ctl(
                &self.epoll,
                libc::EPOLL_CTL_DEL,
                conn.sock.as_raw_fd(),
                0,
                0,
            );
            if conn.outbound {
                self.outbound -= 1;
            } else {
                self.release_source(conn.peer.ip());
            }
            self.free.push(slot);
        }
    }

    fn release_source(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_source.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&ip);
            }
        }
    }
}

/// A WebSocket connection's last words ([`ws::WsConn::farewell`]), written as far as the
/// socket takes them at once (through its TLS session for `wss:`).
fn send_farewell(conn: &mut Conn, why: Close) {
    let Some(ws) = conn.ws.as_mut() else {
        return;
    };
    let mut bytes = ws.farewell(why);
    if bytes.is_empty() {
        return;
    }
    if let Some(tls) = conn.tls.as_mut() {
        if tls.writer().write_all(&bytes).is_err() {
            return;
        }
        tls.send_close_notify();
        bytes.clear();
        while tls.wants_write() {
            if tls.write_tls(&mut bytes).is_err() {
                return;
            }
        }
    }
    let mut rest = &conn.unsent[..];
    let joined;
    if !rest.is_empty() {
        joined = [rest, &bytes[..]].concat();
        rest = &joined;
    } else {
        rest = &bytes;
    }
    while !rest.is_empty() {
        match conn.sock.write(rest) {
            Ok(0) | Err(_) => return,
            Ok(n) => rest = &rest[n..],
        }
    }
}

/// Whether `conn` is a TLS connection this shard opened whose handshake is not done.
fn handshaking_out(conn: &Conn) -> bool {
    conn.outbound && conn.tls.as_ref().is_some_and(|t| t.is_handshaking())
}

/// Hands every whole message the framer holds to `deliver`; counts pings for the caller to
/// answer once the framer is no longer borrowed.
fn drain(
    conn: &mut Conn,
    now: Instant,
    deliver: &mut dyn FnMut(Datagram<'_>),
    stats: &mut StreamStats,
    delivered: &mut usize,
    pongs: &mut usize,
) -> Result<(), Close> {
    if conn.ws.is_some() {
        return ws::drain(conn, now, deliver, stats, delivered);
    }
    let transport = conn.transport();
    loop {
        match conn.framer.next_frame(now) {
            Ok(None) => return Ok(()),
            Ok(Some(Frame::Ping)) => {
                stats.pings += 1;
                *pongs += 1;
                conn.last_message = now;
            }
            Ok(Some(Frame::Message(bytes))) => {
                stats.messages += 1;
                *delivered += 1;
                conn.last_message = now;
                deliver(Datagram {
                    from: conn.peer,
                    local: conn.local,
                    bytes,
                    transport,
                    peer_cert: conn.peer_cert.as_ref(),
                });
            }
            Err(e) => return Err(Close::Framing(e)),
        }
    }
}

/// Feeds TLS records read from the socket to the session and returns the plaintext they carried
/// (an error: the TLS session failed, `Some` with rustls' reason when it gave one).
fn decrypt(
    tls: &mut rustls::Connection,
    mut records: &[u8],
) -> Result<Vec<u8>, Option<rustls::Error>> {
    let mut plain = Vec::new();
    while !records.is_empty() {
        tls.read_tls(&mut records).map_err(|_| None)?;
        tls.process_new_packets().map_err(Some)?;
        match tls.reader().read_to_end(&mut plain) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(None),
        }
    }
    Ok(plain)
}

fn ctl(epoll: &OwnedFd, op: i32, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: valid epoll fd and watched fd, pointer to a live epoll_event (ignored for DEL).
    let rc = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), op, fd, &mut ev) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod outbound_tests;

#[cfg(test)]
mod client_cert_tests;

#[cfg(test)]
mod ws_tests;
