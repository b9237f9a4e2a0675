//! The engine: threads, sockets, clocks and rings around the sans-IO core.
//!
//! [`start`] binds one `SO_REUSEPORT` socket per shard and listen address, spawns one thread per
//! shard (pinned to a core when asked), opens each shard's UDP backend *on that thread* (io_uring's
//! `SINGLE_ISSUER` binds the ring to its creator), builds each shard's handler there, and runs the
//! shard loop ([`shard::run`]). [`Engine::shutdown`] sets the stop flag, wakes every shard and
//! joins them, returning the handlers.
//!
//! This is the only module with `unsafe` and OS calls; every unsafe block says why it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod bpf;
pub mod clock;
pub mod control;
pub mod counters;
pub mod io;
pub mod mailbox;
pub mod os;
pub mod persist;
pub mod shard;
pub mod steer;
pub mod stream;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use crate::core::shard::ShardId;
use clock::Clock;
use control::{ControlQueue, Controller};
use io::{IoKind, IoOptions, IoSetupError};
use mailbox::Mesh;
use shard::{Handler, ShardParts, ShardSnapshot, SharedStats};

/// Where shard threads run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Pinning {
    /// Let the scheduler place them.
    Off,
    /// Shard `i` on the `i`-th core the process may use (wrapping around).
    #[default]
    Auto,
    /// Shard `i` on core `cores[i % len]`.
    Cores(Vec<usize>),
}

/// What the engine needs to start (the CLI/config layer fills it).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Listen addresses (one socket per shard on each; port 0 picks one port for all shards).
    pub listen: Vec<SocketAddr>,
    /// Number of shards (threads).
    pub shards: u16,
    /// Backend choice (`SIPFORK_IO` overrides it).
    pub io: IoKind,
    /// Backend tuning, including the coalescing window.
    pub io_options: IoOptions,
    /// Thread placement.
    pub pinning: Pinning,
    /// Letters each cross-shard ring holds.
    pub mailbox_capacity: usize,
    /// Receive and send buffer of each UDP socket, bytes.
    pub socket_buffer: usize,
    /// The interface and settings for `io = "xdp"` (`None`: xdp cannot be chosen).
    pub xdp: Option<io::xdp::XdpOptions>,
    /// Kernel steering ([`steer`]) with these rules; `None`: off.
    pub steering: Option<crate::core::steer::WireParams>,
    /// TCP listen addresses (one `SO_REUSEPORT` listener per shard on each; see [`stream`]).
    pub stream_listen: Vec<SocketAddr>,
    /// For each of `stream_listen`: the rustls configuration when it accepts TLS.
    pub stream_tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    /// For each of `stream_listen`: the WebSocket settings when it serves WebSocket (`ws:`,
    /// `wss:`; RFC 7118). Missing entries: none.
    pub stream_ws: Vec<Option<Arc<crate::core::transport::ws::WsSettings>>>,
    /// Limits of the TCP connections.
    pub stream_options: stream::StreamOptions,
    /// The client configuration of TLS connections the shards open (`[tls] peer_ca`).
    pub stream_tls_client: Option<Arc<rustls::ClientConfig>>,
    /// The server name a TLS connection to each of these addresses verifies (and sends as
    /// SNI); any other address is verified as an IP address (`TlsConfig::peer_names`).
    pub stream_tls_names: stream::TlsPeerNames,
}

impl EngineConfig {
    /// `shards` shards on `listen` with default I/O settings.
    pub fn new(listen: SocketAddr, shards: u16) -> Self {
        Self {
            listen: vec![listen],
            shards,
            io: IoKind::Auto,
            io_options: IoOptions::default(),
            pinning: Pinning::Auto,
            mailbox_capacity: 4096,
            socket_buffer: io::socket::SOCKET_BUFFER,
            xdp: None,
            steering: None,
            stream_listen: Vec::new(),
            stream_tls: Vec::new(),
            stream_ws: Vec::new(),
            stream_options: stream::StreamOptions::default(),
            stream_tls_client: None,
            stream_tls_names: stream::TlsPeerNames::default(),
        }
    }
}

/// Why the engine did not start or did not stop cleanly.
#[derive(Debug)]
pub enum EngineError {
    /// Bad configuration.
    Config(&'static str),
    /// A listen address could not be bound (or is served by another process).
    Bind(io::socket::BindError),
    /// A TCP listen address could not be bound.
    BindStream(SocketAddr, std::io::Error),
    /// Creating the cross-shard mesh failed.
    Setup(std::io::Error),
    /// A shard could not open its backend.
    Backend {
        /// The shard.
        shard: ShardId,
        /// Why.
        error: IoSetupError,
    },
    /// A shard thread could not be spawned.
    Spawn(std::io::Error),
    /// A shard thread panicked.
    Panicked(ShardId),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(why) => write!(f, "engine config: {why}"),
            Self::Bind(e) => write!(f, "{e}"),
            Self::BindStream(addr, e) => write!(f, "cannot listen on TCP {addr}: {e}"),
            Self::Setup(e) => write!(f, "engine setup: {e}"),
            Self::Backend { shard, error } => write!(f, "shard {}: {error}", shard.0),
            Self::Spawn(e) => write!(f, "spawning shard thread: {e}"),
            Self::Panicked(shard) => write!(f, "shard {} panicked", shard.0),
        }
    }
}

impl std::error::Error for EngineError {}

/// Stops a running engine from any thread (signal handler thread, admin API).
#[derive(Clone, Debug)]
pub struct StopHandle {
    stop: Arc<AtomicBool>,
    mesh: Arc<Mesh>,
}

impl StopHandle {
    /// Asks every shard to finish its turn, flush, and return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.mesh.wake_all();
    }
}

/// Reads every shard's published counters without locks (see [`shard::SharedStats`]).
#[derive(Clone, Debug)]
pub struct StatsReader(Vec<Arc<SharedStats>>, Arc<steer::SteeringState>);

impl StatsReader {
    /// Latest counters of every shard, in shard order.
    pub fn snapshot(&self) -> Vec<ShardSnapshot> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, s)| s.snapshot(ShardId(i as u16)))
            .collect()
    }

    /// Whether datagrams are steered in the kernel.
    pub fn steering(&self) -> &steer::SteeringState {
        &self.1
    }
}

/// A running engine.
pub struct Engine<H> {
    /// `None` only from a shard whose backend failed, which `start` never returns.
    threads: Vec<JoinHandle<Option<H>>>,
    stats: Vec<Arc<SharedStats>>,
    controller: Controller<H>,
    local_addrs: Vec<SocketAddr>,
    stream_addrs: Vec<SocketAddr>,
    clock: Clock,
    stopper: StopHandle,
    /// The XDP program of `io = "xdp"`, detached when the engine and its shards are gone.
    _xdp: Option<Arc<io::xdp::Attachment>>,
    steering: Arc<steer::SteeringState>,
}

impl<H> fmt::Debug for Engine<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("shards", &self.threads.len())
            .field("local_addrs", &self.local_addrs)
            .finish()
    }
}

/// Starts the shards. `make_handler(shard, clock)` runs on each shard's own thread.
pub fn start<H, F>(config: EngineConfig, make_handler: F) -> Result<Engine<H>, EngineError>
where
    H: Handler + Send + 'static,
    F: Fn(ShardId, &Clock) -> H + Send + Sync + 'static,
{
    if config.shards == 0 || config.listen.is_empty() {
        return Err(EngineError::Config(
            "need at least one shard and one listen address",
        ));
    }
    let n = usize::from(config.shards);
    let sockets = io::socket::bind_shard_sockets(&config.listen, n, config.socket_buffer)
        .map_err(EngineError::Bind)?;
    let local_addrs = sockets[0]
        .iter()
        .map(|s| s.local_addr())
        .collect::<Result<Vec<_>, _>>()
        .map_err(EngineError::Setup)?;
    let kind = config.io.with_env_override();
    let xdp = match (kind, &config.xdp) {
        (IoKind::Xdp, None) => {
            return Err(EngineError::Config(
                "io = \"xdp\" needs [server] interface (the NIC whose queues the shards bind)",
            ))
        }
        (IoKind::Xdp, Some(x)) => Some((
            io::xdp::attach(local_addrs[0], n, x).map_err(|error| EngineError::Backend {
                shard: ShardId(0),
                error,
            })?,
            x.clone(),
        )),
        _ => None,
    };
    // Shard i's socket is index i of each address's reuseport group (bound in shard order).
    let groups: Vec<&std::net::UdpSocket> = sockets[0].iter().collect();
    let steering = match steer::attach(&groups, config.shards, config.steering.as_ref()) {
        // The reuseport program sees only the kernel sockets' datagrams: an AF_XDP frame goes to
        // the shard of the queue it arrived on, and the mailbox hands it to its owner.
        steer::SteeringState::Kernel if xdp.is_some() => steer::SteeringState::Unavailable(
            "io = \"xdp\": AF_XDP frames reach the shard of their receive queue, not the \
             reuseport program (it steers only what reaches the kernel sockets)"
                .into(),
        ),
        state => state,
    };
    match &steering {
        steer::SteeringState::Unavailable(why) => {
            tracing::warn!(reason = %why, "kernel steering unavailable, the mailbox hands datagrams to their owners")
        }
        state => tracing::info!(steering = state.name(), "datagram steering"),
    }
    let steering = Arc::new(steering);
    let stream_listeners = stream::bind_stream_listeners(&config.stream_listen, n)
        .map_err(|(addr, e)| EngineError::BindStream(addr, e))?;
    let stream_addrs = stream_listeners[0]
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<Vec<_>, _>>()
        .map_err(EngineError::Setup)?;
    let mut stream_listeners = stream_listeners.into_iter();
    let mesh = Mesh::new(n, config.mailbox_capacity).map_err(EngineError::Setup)?;
    // With several shards, which one owns each TCP/TLS connection (`stream::owners`).
    let flow_owners = (n > 1).then(|| Arc::new(stream::owners::FlowOwners::new()));
    let clock = Clock::start();
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = StopHandle {
        stop: Arc::clone(&stop),
        mesh: Arc::clone(&mesh),
    };
    let cores = match &config.pinning {
        Pinning::Off => Vec::new(),
        Pinning::Auto => core_affinity::get_core_ids().unwrap_or_default(),
        Pinning::Cores(ids) => ids.iter().map(|&id| core_affinity::CoreId { id }).collect(),
    };
    let make_handler = Arc::new(make_handler);
    let (ready_tx, ready_rx) = mpsc::channel::<(ShardId, Result<(), IoSetupError>)>();
    let mut threads = Vec::with_capacity(n);
    let mut stats = Vec::with_capacity(n);
    let mut controls = Vec::with_capacity(n);
    for (i, shard_sockets) in sockets.into_iter().enumerate() {
        let id = ShardId(i as u16);
        let shared = Arc::new(SharedStats::default());
        stats.push(Arc::clone(&shared));
        let control = Arc::new(ControlQueue::new());
        controls.push((Arc::clone(&control), Arc::clone(mesh.waker(id))));
        let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        let (mesh, stop, ready, make_handler) = (
            Arc::clone(&mesh),
            Arc::clone(&stop),
            ready_tx.clone(),
            Arc::clone(&make_handler),
        );
        let mut opts = config.io_options.clone();
        let xdp = xdp.clone();
        let shard_streams: Vec<_> = stream_listeners
            .next()
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, l)| (l, config.stream_tls.get(i).cloned().flatten()))
            .collect();
        let stream_options = config.stream_options;
        let tls_client = config.stream_tls_client.clone();
        let tls_names = config.stream_tls_names.clone();
        let stream_ws = config.stream_ws.clone();
        let flow_owners = flow_owners.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("sipfork-shard-{i}"))
            .spawn(move || {
                if let Some(core) = core {
                    if !core_affinity::set_for_current(core) {
                        tracing::warn!(shard = i, core = core.id, "could not pin shard thread");
                    }
                }
                // Timers of this thread (the coalescing window, the core's deadlines) fire within
                // 1 µs instead of the default 50 µs slack, so the window is the latency bound.
                // SAFETY: prctl with integer arguments only; failure leaves the default slack.
                unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
                let waker = Arc::clone(mesh.waker(id));
                let streams = if shard_streams.is_empty() {
                    None
                } else {
                    match stream::Streams::new(shard_streams, stream_options) {
                        Ok(mut s) => {
                            s.set_tls_client(tls_client);
                            s.set_tls_peer_names(tls_names);
                            s.set_websocket(stream_ws);
                            if let Some(owners) = flow_owners {
                                s.share_owners(owners, id);
                            }
                            Some(s)
                        }
                        Err(e) => {
                            let _ = ready.send((id, Err(IoSetupError::os("tcp epoll")(e))));
                            return None;
                        }
                    }
                };
                opts.stream_fd = streams.as_ref().map(stream::Streams::fd);
                let opened = match &xdp {
                    Some((att, x)) => io::xdp::XdpBackend::open(i as u32, Arc::clone(att), x, shard_sockets, Arc::clone(&waker), &opts)
                        .map(|b| io::Opened { backend: Box::new(b), fallback_reason: None }),
                    None => io::open(kind, shard_sockets, Arc::clone(&waker), &opts),
                };
                let opened = match opened {
                    Ok(opened) => opened,
                    Err(error) => {
                        let _ = ready.send((id, Err(error)));
                        return None;
                    }
                };
                match &opened.fallback_reason {
                    Some(why) => tracing::warn!(shard = i, backend = opened.backend.name(), reason = %why, "io_uring unavailable, using fallback"),
                    None => tracing::info!(shard = i, backend = opened.backend.name(), "shard started"),
                }
                let handler = make_handler(id, &clock);
                let _ = ready.send((id, Ok(())));
                let parts = ShardParts {
                    id,
                    backend: opened.backend,
                    mailbox: mesh.endpoint(id),
                    waker,
                    clock,
                    stop,
                    stats: shared,
                    control,
                    streams,
                };
                Some(shard::run(handler, parts))
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                stopper.stop();
                threads.into_iter().for_each(|t| drop(t.join()));
                return Err(EngineError::Spawn(e));
            }
        }
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..n {
        match ready_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((shard, Err(error))) => {
                failure.get_or_insert(EngineError::Backend { shard, error });
            }
            Err(_) => {
                failure.get_or_insert(EngineError::Panicked(ShardId(0)));
                break;
            }
        }
    }
    if let Some(e) = failure {
        stopper.stop();
        threads.into_iter().for_each(|t| drop(t.join()));
        return Err(e);
    }
    Ok(Engine {
        threads,
        stats,
        controller: Controller::new(controls),
        local_addrs,
        stream_addrs,
        clock,
        stopper,
        _xdp: xdp.map(|(att, _)| att),
        steering,
    })
}

impl<H> Engine<H> {
    /// The bound listen addresses (with the port picked when 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The bound TCP listen addresses (with the port picked when 0 was asked for).
    pub fn stream_addrs(&self) -> &[SocketAddr] {
        &self.stream_addrs
    }

    /// The engine clock (its epoch is the start-up time).
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.threads.len()
    }

    /// Latest counters of every shard.
    pub fn stats(&self) -> Vec<ShardSnapshot> {
        self.stats_reader().snapshot()
    }

    /// A handle for another thread (metrics, admin) to read the counters; it stays valid after
    /// shutdown and then shows the final values.
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(self.stats.clone(), Arc::clone(&self.steering))
    }

    /// A handle that stops the engine from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        self.stopper.clone()
    }

    /// A handle for other threads to run jobs on the shards (see [`control`]).
    pub fn controller(&self) -> Controller<H> {
        self.controller.clone()
    }

    /// The first shard whose thread ended on its own (it panicked): the process should stop.
    pub fn exited_shard(&self) -> Option<ShardId> {
        self.threads
            .iter()
            .position(JoinHandle::is_finished)
            .map(|i| ShardId(i as u16))
    }

    /// Stops every shard and returns their handlers in shard order.
    pub fn shutdown(mut self) -> Result<Vec<H>, EngineError> {
        self.stopper.stop();
        let threads = std::mem::take(&mut self.threads);
        let mut handlers = Vec::with_capacity(threads.len());
        for (i, t) in threads.into_iter().enumerate() {
            match t.join() {
                Ok(Some(h)) => handlers.push(h),
                Ok(None) | Err(_) => return Err(EngineError::Panicked(ShardId(i as u16))),
            }
        }
        Ok(handlers)
    }
}

impl<H> Drop for Engine<H> {
    /// An engine dropped without `shutdown` still stops and joins its shards, so its sockets and
    /// threads never outlive it.
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.stopper.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
