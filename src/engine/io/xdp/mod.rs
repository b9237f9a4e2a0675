//! The AF_XDP backend (`io = "xdp"`): each shard owns the AF_XDP socket of its NIC queue
//! (shard i → queue i) with its own UMEM and rings, beside its ordinary kernel UDP sockets on the
//! same port, which stay for everything the XDP program leaves to the kernel (fragments, other
//! addresses) and for sends the socket cannot make (no neighbour entry yet, oversize, no free
//! frame). See `docs/xdp.md`.
//!
//! Pieces: [`bpf`] (the hand-assembled program, its XSKMAP and `bpf_link`), [`xsk`] (socket,
//! UMEM, rings), [`packet`] (the sans-IO frame codec), [`neigh`] (the kernel neighbour table),
//! [`checks`] (privileges, memlock, queues). [`attach`] runs once per engine before the shards
//! start; [`XdpBackend::open`] once per shard on its thread.

pub mod checks;
pub mod neigh;
pub mod packet;
pub mod program;
pub mod xsk;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mmsg::MmsgBackend;
use super::{IoOptions, IoSetupError, IoStats, RecvDatagram, UdpBackend, Wake};
use crate::core::io::Outbox;
use crate::engine::mailbox::Waker;
use packet::{Link, Mac};

/// Native (driver) or generic (skb) XDP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Native where the driver supports it, else generic (logged).
    #[default]
    Auto,
    /// Native (driver) mode or fail.
    Native,
    /// Generic (skb) mode: works on every interface, costs an skb per frame.
    Generic,
}

impl XdpMode {
    /// Parses `auto`, `native`/`drv`, `generic`/`skb`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            "native" | "drv" | "driver" => Some(Self::Native),
            "generic" | "skb" => Some(Self::Generic),
            _ => None,
        }
    }
}

/// What `io = "xdp"` needs beyond the common options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpOptions {
    /// The interface whose queues the shards bind (`[server] interface`).
    pub interface: String,
    /// Attach mode.
    pub mode: XdpMode,
    /// UMEM frames per shard (half receive, half send; a power of two ≥ 64).
    pub frames: u32,
}

impl XdpOptions {
    /// Defaults for `interface`.
    pub fn new(interface: impl Into<String>) -> Self {
        Self {
            interface: interface.into(),
            mode: XdpMode::Auto,
            frames: 2048,
        }
    }
}

/// The program attached to the interface for the engine's lifetime; dropping the last reference
/// (the engine and every shard's backend hold one) detaches it.
#[derive(Debug)]
pub struct Attachment {
    /// Interface name.
    pub interface: String,
    /// Interface index.
    pub ifindex: u32,
    /// Its MAC (the source of every frame sent).
    pub mac: Mac,
    /// Its MTU: larger datagrams go through the kernel, which fragments them.
    pub mtu: usize,
    /// The address the program steers (the listen address).
    pub listen: SocketAddr,
    /// `"native"` or `"generic"`, as attached.
    pub mode: &'static str,
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
}

fn xdp_err(why: impl Into<String>) -> IoSetupError {
    IoSetupError::Xdp(why.into())
}

/// Checks everything `io = "xdp"` needs and attaches the program for `listen` (the bound listen
/// address) on `opts.interface` for `shards` shards. Fails with the reason.
pub fn attach(
    listen: SocketAddr,
    shards: usize,
    opts: &XdpOptions,
) -> Result<Arc<Attachment>, IoSetupError> {
    if listen.ip().is_unspecified() {
        return Err(xdp_err(format!(
            "io = \"xdp\" needs a specific listen address on {} (not {})",
            opts.interface,
            listen.ip()
        )));
    }
    if !opts.frames.is_power_of_two() || opts.frames < 64 {
        return Err(xdp_err("xdp frames must be a power of two >= 64"));
    }
    let caps =
        checks::effective_caps().map_err(|e| xdp_err(format!("reading capabilities: {e}")))?;
    let umem = shards as u64 * u64::from(opts.frames) * u64::from(xsk::FRAME_SIZE);
    checks::privileges(caps, checks::memlock_limit(), umem).map_err(xdp_err)?;
    let name = &opts.interface;
    let ifindex = checks::ifindex(name).map_err(xdp_err)?;
    let (rx, tx) = checks::queues(name).map_err(xdp_err)?;
    checks::enough_queues(name, rx, tx, shards).map_err(xdp_err)?;
    let mac = checks::mac(name).map_err(xdp_err)?;
    let mtu = checks::mtu(name).map_err(xdp_err)?;
    let map = program::create_xskmap(rx.max(shards) as u32)
        .map_err(|e| xdp_err(format!("creating the XSKMAP: {e}")))?;
    let prog = program::load(&program::program(&listen, map.as_raw_fd())).map_err(xdp_err)?;
    let try_attach = |flags: u32| program::attach(&prog, ifindex, flags);
    let busy = |e: io::Error| {
        if e.raw_os_error() == Some(libc::EBUSY) || e.raw_os_error() == Some(libc::EEXIST) {
            xdp_err(format!(
                "attaching to {name}: another XDP program is attached ({e}); sipfork's own \
                 attachment ends with its process, so this one belongs to another tool — \
                 remove it with `ip link set dev {name} xdp off`"
            ))
        } else {
            xdp_err(format!("attaching the XDP program to {name}: {e}"))
        }
    };
    let (link, mode) = match opts.mode {
        XdpMode::Native => (
            try_attach(program::XDP_FLAGS_DRV_MODE).map_err(busy)?,
            "native",
        ),
        XdpMode::Generic => (
            try_attach(program::XDP_FLAGS_SKB_MODE).map_err(busy)?,
            "generic",
        ),
        XdpMode::Auto => match try_attach(program::XDP_FLAGS_DRV_MODE) {
            Ok(l) => (l, "native"),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EEXIST)) => {
                return Err(busy(e))
            }
            Err(e) => {
                tracing::warn!(interface = %name, error = %e, "native XDP unavailable, attaching in generic mode");
                (
                    try_attach(program::XDP_FLAGS_SKB_MODE).map_err(busy)?,
                    "generic",
                )
            }
        },
    };
    tracing::info!(interface = %name, ifindex, mode, queues = rx, shards, %listen, "XDP program attached");
    Ok(Arc::new(Attachment {
        interface: name.clone(),
        ifindex,
        mac,
        mtu,
        listen,
        mode,
        map,
        _prog: prog,
        _link: link,
    }))
}

/// How long a neighbour-table answer is trusted before it is asked again.
const NEIGH_TTL: Duration = Duration::from_secs(30);
/// How long after a missing entry the table is asked again (sends meanwhile go to the kernel,
/// which resolves the address).
const NEIGH_RETRY: Duration = Duration::from_millis(200);

/// Where frames for an address go.
#[derive(Clone, Copy, Debug)]
struct Next {
    mac: Option<Mac>,
    vlan: Option<u16>,
    at: Instant,
}

/// One shard's AF_XDP socket plus its kernel sockets (an inner [`MmsgBackend`]).
pub struct XdpBackend {
    xsk: xsk::Xsk,
    kernel: MmsgBackend,
    att: Arc<Attachment>,
    epoll: OwnedFd,
    events: [libc::epoll_event; 2],
    /// Learned from received frames: the request's source MAC (and VLAN) per source address.
    learned: HashMap<IpAddr, Next>,
    /// Answers of the kernel's neighbour table.
    resolved: HashMap<IpAddr, Next>,
    neigh: neigh::Neighbours,
    fallback: Outbox,
    stats: IoStats,
    max_datagram: usize,
    batch: u32,
}

/// Source addresses whose MAC is remembered at most (one per device or router seen).
const MAX_LEARNED: usize = 1 << 18;
const XSK_TOKEN: u64 = 0;
const KERNEL_TOKEN: u64 = 1;

impl XdpBackend {
    /// Opens shard `queue`'s socket on the attachment's interface and registers it in the map.
    pub fn open(
        queue: u32,
        att: Arc<Attachment>,
        xdp: &XdpOptions,
        sockets: Vec<UdpSocket>,
        waker: Arc<Waker>,
        opts: &IoOptions,
    ) -> Result<Self, IoSetupError> {
        let kernel_opts = IoOptions {
            coalesce: None,
            ..opts.clone()
        };
        let kernel = MmsgBackend::new(sockets, waker, &kernel_opts)?;
        let xsk = xsk::Xsk::open(att.ifindex, queue, xdp.frames).map_err(|(what, e)| {
            xdp_err(format!("{what} on {} queue {queue}: {e}", att.interface))
        })?;
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(IoSetupError::os("epoll_create1")(io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor this process owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        for (watch, token) in [(xsk.fd(), XSK_TOKEN), (kernel.epoll_fd(), KERNEL_TOKEN)] {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: token,
            };
            // SAFETY: valid epoll fd, valid fd to watch, pointer to a live epoll_event.
            let r =
                unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, watch, &mut ev) };
            if r != 0 {
                return Err(IoSetupError::os("epoll_ctl(xdp)")(
                    io::Error::last_os_error(),
                ));
            }
        }
        program::set_socket(&att.map, queue, xsk.fd())
            .map_err(|e| xdp_err(format!("registering queue {queue} in the XSKMAP: {e}")))?;
        tracing::info!(queue, interface = %att.interface, mode = att.mode, zerocopy = xsk.zerocopy, "AF_XDP socket bound");
        Ok(Self {
            xsk,
            kernel,
            att,
            epoll,
            events: [libc::epoll_event { events: 0, u64: 0 }; 2],
            learned: HashMap::new(),
            resolved: HashMap::new(),
            neigh: neigh::Neighbours::open().map_err(IoSetupError::os("netlink socket"))?,
            fallback: Outbox::new(),
            stats: IoStats::default(),
            max_datagram: opts.max_datagram,
            batch: opts.batch.clamp(1, 4096) as u32,
        })
    }

    /// Hands every frame in the receive ring (at most a few batches) to `sink`.
    fn drain(&mut self, sink: &mut dyn FnMut(RecvDatagram<'_>)) -> usize {
        let (listen, max) = (self.att.listen, self.max_datagram);
        let stats = &mut self.stats;
        let learned = &mut self.learned;
        let mut delivered = 0;
        let mut each = |frame: &[u8]| {
            let Ok(p) = packet::parse(frame) else {
                stats.xdp_rx_invalid += 1;
                return;
            };
            if p.to.ip() != listen.ip() || p.to.port() != listen.port() {
                stats.xdp_rx_invalid += 1;
                return;
            }
            let src = (Some(p.link.src), p.link.vlan);
            match learned.get_mut(&p.from.ip()) {
                Some(n) if (n.mac, n.vlan) == src => {}
                _ => {
                    if learned.len() >= MAX_LEARNED {
                        learned.clear(); // bounded; senders are learned again by their next datagram
                    }
                    learned.insert(
                        p.from.ip(),
                        Next {
                            mac: src.0,
                            vlan: src.1,
                            at: Instant::now(),
                        },
                    );
                }
            }
            let truncated = p.payload.len() > max;
            let bytes = &p.payload[..p.payload.len().min(max)];
            if truncated {
                stats.truncated += 1;
            }
            stats.xdp_rx += 1;
            stats.rx_datagrams += 1;
            stats.rx_bytes += bytes.len() as u64;
            delivered += 1;
            sink(RecvDatagram {
                from: p.from,
                local: listen,
                bytes,
                truncated,
            });
        };
        for _ in 0..4 {
            if self.xsk.receive(self.batch, &mut each) == 0 {
                break;
            }
        }
        delivered
    }

    /// The next hop for `ip`: the MAC it last sent from, else the kernel's neighbour entry.
    fn next_hop(&mut self, ip: IpAddr) -> Option<(Mac, Option<u16>)> {
        if let Some(n) = self.learned.get(&ip) {
            return n.mac.map(|m| (m, n.vlan));
        }
        let now = Instant::now();
        if let Some(n) = self.resolved.get(&ip) {
            let ttl = if n.mac.is_some() {
                NEIGH_TTL
            } else {
                NEIGH_RETRY
            };
            if now.duration_since(n.at) < ttl {
                return n.mac.map(|m| (m, n.vlan));
            }
        }
        self.stats.xdp_neigh_lookups += 1;
        let mac = self.neigh.lookup(self.att.ifindex, ip).ok().flatten();
        if self.resolved.len() > 65_536 {
            self.resolved.clear(); // bounded: a flood of destinations costs lookups, not memory
        }
        self.resolved.insert(
            ip,
            Next {
                mac,
                vlan: None,
                at: now,
            },
        );
        mac.map(|m| (m, None))
    }
}

/// Whether a datagram from `from` (`None`: the default socket) to `to` may leave through the
/// AF_XDP socket, which sends only from the listen address, in its family.
fn eligible(listen: &SocketAddr, from: Option<SocketAddr>, to: SocketAddr) -> bool {
    from.is_none_or(|f| f == *listen) && to.is_ipv4() == listen.is_ipv4()
}

/// Whether `len` payload bytes fit the interface MTU as one unfragmented IP packet (larger ones go
/// through the kernel socket, which fragments them).
fn fits_mtu(listen: &SocketAddr, len: usize, mtu: usize) -> bool {
    packet::header_len(listen, None) - 14 + len <= mtu
}

impl UdpBackend for XdpBackend {
    fn name(&self) -> &'static str {
        "xdp"
    }

    fn send(&mut self, out: &Outbox) -> io::Result<()> {
        let listen = self.att.listen;
        let limit = self.att.mtu;
        for t in out.transmits() {
            let bytes = out.bytes(t);
            let hop = if eligible(&listen, t.from, t.to) && fits_mtu(&listen, bytes.len(), limit) {
                self.next_hop(t.to.ip())
            } else {
                None // another local address or family, or a datagram the kernel fragments
            };
            let sent = match hop {
                Some((mac, vlan)) => {
                    let link = Link {
                        dst: mac,
                        src: self.att.mac,
                        vlan,
                    };
                    self.xsk
                        .send(|buf| packet::write(buf, &link, listen, t.to, bytes))
                }
                None => false,
            };
            if sent {
                self.stats.xdp_tx += 1;
                self.stats.tx_datagrams += 1;
                self.stats.tx_bytes += bytes.len() as u64;
            } else {
                self.stats.xdp_kernel_tx += 1;
                self.fallback
                    .push_from_with(t.from, t.to, |b| b.extend_from_slice(bytes));
            }
        }
        if let Err(e) = self.xsk.flush() {
            self.stats.tx_errors += 1;
            tracing::warn!(error = %e, "AF_XDP transmit kick failed");
        }
        if !self.fallback.is_empty() {
            let r = self.kernel.send(&self.fallback);
            self.fallback.clear();
            r?;
        }
        Ok(())
    }

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        sink: &mut dyn FnMut(RecvDatagram<'_>),
    ) -> io::Result<Wake> {
        self.stats.waits += 1;
        let mut wake = Wake {
            received: self.drain(sink),
            mailbox: false,
        };
        let kernel_ready = if wake.received > 0 {
            true
        } else {
            if self.xsk.tx_pending() {
                if let Err(e) = self.xsk.flush() {
                    self.stats.tx_errors += 1;
                    tracing::warn!(error = %e, "AF_XDP transmit kick failed");
                }
            }
            let ms = timeout.map_or(-1, |t| {
                i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            });
            // SAFETY: `events` is writable for the count passed.
            let n = unsafe {
                libc::epoll_wait(self.epoll.as_raw_fd(), self.events.as_mut_ptr(), 2, ms)
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
            }
            wake.received += self.drain(sink);
            self.events[..n.max(0) as usize]
                .iter()
                .any(|e| e.u64 == KERNEL_TOKEN)
        };
        if kernel_ready {
            let k = self.kernel.wait(Some(Duration::ZERO), sink)?;
            wake.received += k.received;
            wake.mailbox |= k.mailbox;
        }
        if wake.received > 0 {
            self.stats.batches += 1;
        } else if !wake.mailbox {
            self.stats.empty_waits += 1;
        }
        Ok(wake)
    }

    fn stats(&self) -> IoStats {
        let k = self.kernel.stats();
        let x = self.xsk.stats();
        let o = &self.stats;
        IoStats {
            rx_datagrams: k.rx_datagrams + o.rx_datagrams,
            rx_bytes: k.rx_bytes + o.rx_bytes,
            tx_errors: k.tx_errors + o.tx_errors + x.invalid,
            truncated: k.truncated + o.truncated,
            kernel_drops: k.kernel_drops + x.rx_dropped,
            waits: o.waits,
            batches: o.batches,
            empty_waits: o.empty_waits,
            xdp_rx: o.xdp_rx,
            xdp_tx: o.xdp_tx,
            xdp_kernel_tx: o.xdp_kernel_tx,
            xdp_rx_invalid: o.xdp_rx_invalid,
            xdp_neigh_lookups: o.xdp_neigh_lookups,
            // tx_datagrams/tx_bytes: the kernel's count covers the fallback sends, ours the
            // AF_XDP ones (xdp_kernel_tx counts a fallback datagram before the kernel takes it).
            tx_datagrams: k.tx_datagrams + o.tx_datagrams,
            tx_bytes: k.tx_bytes + o.tx_bytes,
            ..k
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_datagrams_from_the_listen_address_that_fit_the_mtu_take_the_af_xdp_path() {
        let listen: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let peer: SocketAddr = "10.0.0.2:5062".parse().unwrap();
        let v6: SocketAddr = "[fd00::2]:5060".parse().unwrap();
        assert!(eligible(&listen, None, peer));
        assert!(eligible(&listen, Some(listen), peer));
        assert!(!eligible(
            &listen,
            Some("10.0.0.1:5070".parse().unwrap()),
            peer
        ));
        assert!(!eligible(&listen, None, v6));
        // IPv4: 20 + 8 header bytes; 1472 payload bytes fill a 1500-byte MTU exactly.
        assert!(fits_mtu(&listen, 1472, 1500));
        assert!(!fits_mtu(&listen, 1473, 1500));
        // IPv6: 40 + 8.
        let listen6: SocketAddr = "[fd00::1]:5060".parse().unwrap();
        assert!(fits_mtu(&listen6, 1452, 1500));
        assert!(!fits_mtu(&listen6, 1453, 1500));
    }
}
