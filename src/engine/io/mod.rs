//! UDP backends behind one small trait: io_uring ([`uring`]), recvmmsg/sendmmsg + epoll
//! ([`mmsg`]), and later AF_XDP, without the core or the shard loop knowing which one runs.
//!
//! A backend owns a shard's sockets and waits on them plus the shard's mailbox eventfd. Per loop
//! turn the shard calls [`UdpBackend::send`] once with the outbox, then [`UdpBackend::wait`] once,
//! which submits the sends, blocks until something is ready (or the timeout), and hands every ready
//! datagram to a sink: one virtual call per batch, not per datagram.
//!
//! Invariant: nothing is lost silently. Every datagram the backend drops (truncated, a failed
//! send, the kernel's own socket-queue drops reported through `SO_RXQ_OVFL`) is counted in
//! [`IoStats`].

pub mod mmsg;
pub mod socket;
pub mod uring;
pub mod xdp;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use crate::core::io::Outbox;
use crate::engine::counters::counters;
use crate::engine::mailbox::Waker;

/// One received datagram, borrowed from the backend's receive buffer for the sink call.
#[derive(Clone, Copy, Debug)]
pub struct RecvDatagram<'a> {
    /// Source address.
    pub from: SocketAddr,
    /// Local address of the socket it arrived on.
    pub local: SocketAddr,
    /// Payload.
    pub bytes: &'a [u8],
    /// The datagram was longer than `max_datagram` (`MSG_TRUNC`): `bytes` is only its head,
    /// enough for the handler to answer a request with 513.
    pub truncated: bool,
}

/// What ended a [`UdpBackend::wait`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wake {
    /// Datagrams handed to the sink.
    pub received: usize,
    /// The mailbox eventfd fired (another shard left letters, or shutdown).
    pub mailbox: bool,
}

counters! {
/// Counters of one backend; plain numbers, copied out by [`UdpBackend::stats`].
pub struct IoStats {
    /// Datagrams delivered to the sink.
    pub rx_datagrams,
    /// Payload bytes delivered to the sink.
    pub rx_bytes,
    /// Datagrams the kernel accepted for sending.
    pub tx_datagrams,
    /// Payload bytes the kernel accepted for sending.
    pub tx_bytes,
    /// Datagrams whose send failed (counted and dropped).
    pub tx_errors,
    /// Receive errors other than an empty buffer ring.
    pub rx_errors,
    /// Datagrams larger than `max_datagram` (MSG_TRUNC): counted, and their head handed to the
    /// handler as truncated (a request gets 513), never processed as a whole message.
    pub truncated,
    /// Datagrams the kernel dropped on a full socket queue (`SO_RXQ_OVFL`, summed over sockets).
    pub kernel_drops,
    /// Multishot receives ended by an empty provided-buffer ring (ENOBUFS).
    pub enobufs,
    /// Multishot receives re-armed (after ENOBUFS or any other termination).
    pub rearms,
    /// Calls to `wait`.
    pub waits,
    /// Waits that delivered at least one datagram.
    pub batches,
    /// Waits that were bounded coalescing windows.
    pub coalesce_waits,
    /// Mailbox eventfd wake-ups seen.
    pub mailbox_wakes,
    /// Waits that returned with nothing (timeout or spurious).
    pub empty_waits,
    /// Datagrams dropped before reaching the kernel: the rest of an outbox after a failed
    /// io_uring SQE push, or a run `sendmmsg` found the socket's send buffer full for.
    pub tx_dropped,
    /// io_uring SQE pushes that failed (the send slot is returned, the datagrams counted in
    /// `tx_dropped`).
    pub sqe_push_failures,
    /// AF_XDP: datagrams received through the AF_XDP socket (also in `rx_datagrams`).
    pub xdp_rx,
    /// AF_XDP: datagrams sent through the AF_XDP socket (also in `tx_datagrams`).
    pub xdp_tx,
    /// AF_XDP: datagrams handed to the kernel socket instead (no neighbour entry yet, larger
    /// than the MTU, another local address, or no free frame).
    pub xdp_kernel_tx,
    /// AF_XDP: frames on the socket that were not a datagram to the listen address (dropped).
    pub xdp_rx_invalid,
    /// AF_XDP: lookups in the kernel's neighbour table.
    pub xdp_neigh_lookups,
}
}

/// A shard's UDP I/O.
pub trait UdpBackend: Send {
    /// `"io_uring"` or `"mmsg"` (logged at start-up, exported in metrics).
    fn name(&self) -> &'static str;
    /// Queues every datagram of `out` for sending. After it returns `out` may be cleared: a
    /// backend whose sends outlive the call copies the bytes. The sends reach the kernel at the
    /// latest in the next [`UdpBackend::wait`]. A datagram that cannot be sent is counted.
    fn send(&mut self, out: &Outbox) -> io::Result<()>;
    /// Submits queued sends, blocks until datagrams, a mailbox wake-up or `timeout` (`None`:
    /// no limit), and hands every ready datagram to `sink`.
    fn wait(
        &mut self,
        timeout: Option<Duration>,
        sink: &mut dyn FnMut(RecvDatagram<'_>),
    ) -> io::Result<Wake>;
    /// Counters so far.
    fn stats(&self) -> IoStats;
}

/// Which backend to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoKind {
    /// io_uring when the probe succeeds, else mmsg (with the reason logged).
    #[default]
    Auto,
    /// io_uring or fail.
    Uring,
    /// recvmmsg/sendmmsg + epoll.
    Mmsg,
    /// AF_XDP on `[server] interface` (never chosen by `Auto`); opened by the engine, which
    /// attaches the XDP program first (see [`xdp`]).
    Xdp,
}

impl IoKind {
    /// Parses `auto`, `uring`/`io_uring`, `mmsg`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Self::Auto),
            "uring" | "io_uring" | "io-uring" => Some(Self::Uring),
            "mmsg" => Some(Self::Mmsg),
            "xdp" | "af_xdp" => Some(Self::Xdp),
            _ => None,
        }
    }

    /// The configured kind, overridden by the environment variable `SIPFORK_IO` when it is set to
    /// a valid kind (an operator's escape hatch where io_uring misbehaves).
    pub fn with_env_override(self) -> Self {
        std::env::var("SIPFORK_IO")
            .ok()
            .and_then(|v| Self::parse(&v))
            .unwrap_or(self)
    }
}

/// Tuning shared by the backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoOptions {
    /// Largest datagram accepted; longer ones are counted as truncated (the handler sees only
    /// their head, flagged, and answers a request with 513). SIP over UDP
    /// is normally below the path MTU, but INVITEs with large SDP reach a few KiB.
    pub max_datagram: usize,
    /// io_uring: provided receive buffers (a power of two, at most 32768).
    pub recv_buffers: u16,
    /// io_uring: send slots (sends in flight at once).
    pub send_slots: u32,
    /// mmsg: datagrams per recvmmsg/sendmmsg call; both: a wake-up with fewer datagrams than this
    /// counts as "little work" for coalescing.
    pub batch: usize,
    /// Bounded batching window: after a wake-up that found little work, the next wait lasts up to
    /// this long for more before returning (`None`: off). Adaptive (see `Coalescer`): windows
    /// pause while they catch too little. Default 100 µs, the latency budget of DECISIONS.md.
    pub coalesce: Option<Duration>,
    /// io_uring: ask for `SINGLE_ISSUER | DEFER_TASKRUN` (falls back without them).
    pub defer_taskrun: bool,
}

impl Default for IoOptions {
    fn default() -> Self {
        Self {
            max_datagram: 4096,
            recv_buffers: 1024,
            send_slots: 1024,
            batch: 64,
            coalesce: Some(Duration::from_micros(100)),
            defer_taskrun: true,
        }
    }
}

/// Why no backend could be opened.
#[derive(Debug)]
pub enum IoSetupError {
    /// io_uring was required and is unavailable (sysctl, seccomp, old kernel), with the reason.
    UringUnavailable(String),
    /// A system call needed by the backend failed.
    Os {
        /// What was being set up.
        what: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The options are unusable.
    BadOptions(&'static str),
    /// AF_XDP cannot run here, with the reason (privileges, interface, queues, program).
    Xdp(String),
}

impl fmt::Display for IoSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UringUnavailable(why) => write!(f, "io_uring unavailable: {why}"),
            Self::Os { what, source } => write!(f, "{what}: {source}"),
            Self::BadOptions(why) => write!(f, "bad I/O options: {why}"),
            Self::Xdp(why) => write!(f, "AF_XDP: {why}"),
        }
    }
}

impl std::error::Error for IoSetupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Os { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl IoSetupError {
    pub(crate) fn os(what: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Os { what, source }
    }
}

/// An opened backend and, when `Auto` fell back to mmsg, why.
pub struct Opened {
    /// The backend.
    pub backend: Box<dyn UdpBackend>,
    /// Why io_uring was not used (only for `Auto` → mmsg).
    pub fallback_reason: Option<String>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("backend", &self.backend.name())
            .field("fallback_reason", &self.fallback_reason)
            .finish()
    }
}

/// Opens the backend `kind` over `sockets`, waking on `waker` (apply
/// [`IoKind::with_env_override`] first where the operator's override should count). Must run on
/// the thread that will call `wait` (io_uring's `SINGLE_ISSUER` binds the ring to it).
pub fn open(
    kind: IoKind,
    sockets: Vec<UdpSocket>,
    waker: Arc<Waker>,
    opts: &IoOptions,
) -> Result<Opened, IoSetupError> {
    if sockets.is_empty() {
        return Err(IoSetupError::BadOptions("no sockets"));
    }
    if opts.max_datagram == 0 || opts.max_datagram > 65_535 || opts.batch == 0 {
        return Err(IoSetupError::BadOptions(
            "max_datagram must be 1..=65535 and batch > 0",
        ));
    }
    let mmsg = |sockets, reason| {
        let backend = mmsg::MmsgBackend::new(sockets, waker.clone(), opts)?;
        Ok(Opened {
            backend: Box::new(backend),
            fallback_reason: reason,
        })
    };
    match kind {
        IoKind::Xdp => Err(IoSetupError::Xdp(
            "io = \"xdp\" is opened by the engine with its interface (xdp::XdpBackend::open)"
                .into(),
        )),
        IoKind::Mmsg => mmsg(sockets, None),
        IoKind::Uring => {
            let backend = uring::UringBackend::new(sockets, waker.clone(), opts)
                .map_err(|(e, _)| IoSetupError::UringUnavailable(e))?;
            Ok(Opened {
                backend: Box::new(backend),
                fallback_reason: None,
            })
        }
        IoKind::Auto => match uring::UringBackend::new(sockets, waker.clone(), opts) {
            Ok(backend) => Ok(Opened {
                backend: Box::new(backend),
                fallback_reason: None,
            }),
            Err((why, sockets)) => mmsg(sockets, Some(why)),
        },
    }
}

/// Chooses the socket a datagram leaves from: the one bound to its [`Transmit::from`] when that
/// is set (a load generator's device sockets), else the first socket of the destination's family.
///
/// [`Transmit::from`]: crate::core::io::Transmit::from
#[derive(Debug, Default)]
pub(crate) struct SocketPicker {
    first_v4: Option<usize>,
    first_v6: Option<usize>,
    by_local: std::collections::HashMap<SocketAddr, usize>,
}

impl SocketPicker {
    pub(crate) fn new(locals: &[SocketAddr]) -> Self {
        Self {
            first_v4: locals.iter().position(SocketAddr::is_ipv4),
            first_v6: locals.iter().position(SocketAddr::is_ipv6),
            by_local: locals.iter().enumerate().map(|(i, &a)| (a, i)).collect(),
        }
    }

    /// The socket index for `t`; `None` when no socket fits (counted as a send error).
    pub(crate) fn pick(&self, t: &crate::core::io::Transmit) -> Option<usize> {
        match t.from {
            Some(from) => self.by_local.get(&from).copied(),
            None if t.to.is_ipv4() => self.first_v4,
            None => self.first_v6,
        }
    }
}

/// Parses a kernel `sockaddr_in` / `sockaddr_in6` from raw bytes (as io_uring's `RecvMsgOut`
/// and recvmmsg's name buffers hold them). Safe: reads only within `raw`.
pub(crate) fn parse_sockaddr(raw: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*raw.first()?, *raw.get(1)?]));
    let port = u16::from_be_bytes([*raw.get(2)?, *raw.get(3)?]);
    if family == libc::AF_INET {
        let ip: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
    } else if family == libc::AF_INET6 {
        let flow = u32::from_be_bytes(raw.get(4..8)?.try_into().ok()?);
        let ip: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
        let scope = u32::from_ne_bytes(raw.get(24..28)?.try_into().ok()?);
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(ip),
            port,
            flow,
            scope,
        )))
    } else {
        None
    }
}

/// Bytes reserved for a source address in receive buffers (`sockaddr_in6`).
pub(crate) const NAME_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// Bytes reserved for control data: one `SO_RXQ_OVFL` cmsg (`CMSG_SPACE(4)`).
pub(crate) const CONTROL_LEN: usize =
    cmsg_align(std::mem::size_of::<libc::cmsghdr>()) + cmsg_align(4);

const fn cmsg_align(n: usize) -> usize {
    let a = std::mem::size_of::<usize>();
    (n + a - 1) & !(a - 1)
}

/// The `SO_RXQ_OVFL` drop counter in received control data, if present. The kernel adds the cmsg
/// only once the socket has dropped something; the value is cumulative for the socket.
pub(crate) fn parse_rxq_ovfl(control: &[u8]) -> Option<u32> {
    let header = std::mem::size_of::<libc::cmsghdr>();
    let mut at = 0usize;
    while at + header <= control.len() {
        let len_bytes: [u8; 8] = control.get(at..at + 8)?.try_into().ok()?;
        let len = usize::try_from(u64::from_ne_bytes(len_bytes)).ok()?;
        let level = i32::from_ne_bytes(control.get(at + 8..at + 12)?.try_into().ok()?);
        let kind = i32::from_ne_bytes(control.get(at + 12..at + 16)?.try_into().ok()?);
        if len < header {
            return None;
        }
        if level == libc::SOL_SOCKET && kind == libc::SO_RXQ_OVFL {
            let v: [u8; 4] = control.get(at + header..at + header + 4)?.try_into().ok()?;
            return Some(u32::from_ne_bytes(v));
        }
        at += cmsg_align(len);
    }
    None
}

/// Tracks each socket's cumulative `SO_RXQ_OVFL` value and folds increases into a counter.
#[derive(Debug, Default)]
pub(crate) struct KernelDrops {
    seen: Vec<u32>,
}

impl KernelDrops {
    pub(crate) fn new(sockets: usize) -> Self {
        Self {
            seen: vec![0; sockets],
        }
    }

    /// Records the socket's latest cumulative value; returns how many new drops it reveals.
    pub(crate) fn update(&mut self, socket: usize, cumulative: u32) -> u64 {
        match self.seen.get_mut(socket) {
            Some(seen) if cumulative > *seen => {
                let new = u64::from(cumulative - *seen);
                *seen = cumulative;
                new
            }
            _ => 0,
        }
    }
}

/// Shared by both backends: decides when the next wait is a bounded coalescing window.
///
/// A window costs one timer wake-up of its own, so it only pays when it gathers at least two
/// datagrams that would each have woken the shard. The coalescer therefore keeps a moving average
/// of what its windows caught and, when that falls below [`Coalescer::MIN_CATCH`], skips windows
/// for the next [`Coalescer::BACKOFF`] small wake-ups before trying again (measured: at 13,500
/// datagrams/s a 100 µs window catches ≈ 1 and doubles the CPU per datagram; at 33,750/s it
/// catches ≈ 3.4 and saves ≈ 20 %).
#[derive(Debug)]
pub(crate) struct Coalescer {
    window: Option<Duration>,
    little: usize,
    next_is_window: bool,
    /// Moving average of datagrams per window, in sixteenths.
    catch_x16: u32,
    skip: u32,
}

impl Coalescer {
    /// Average catch per window below which windows are paused.
    pub(crate) const MIN_CATCH: u32 = 2;
    /// Small wake-ups without a window after a poor average, before the next trial window.
    pub(crate) const BACKOFF: u32 = 64;

    pub(crate) fn new(opts: &IoOptions) -> Self {
        Self {
            window: opts.coalesce.filter(|w| !w.is_zero()),
            little: opts.batch,
            next_is_window: false,
            catch_x16: 16 * (Self::MIN_CATCH + 2), // optimistic: try windows from the start
            skip: 0,
        }
    }

    /// The window for this wait, if it should be one; `timeout` caps it.
    pub(crate) fn window(&self, timeout: Option<Duration>) -> Option<Duration> {
        let w = self.window.filter(|_| self.next_is_window)?;
        Some(timeout.map_or(w, |t| t.min(w)))
    }

    /// After a wait: a wake-up that delivered a little work (but some) earns a window next time,
    /// unless windows have lately caught too little; a window is never followed by another, so
    /// an idle shard blocks normally.
    pub(crate) fn after_wait(&mut self, was_window: bool, received: usize) {
        self.next_is_window = false;
        if self.window.is_none() {
            return;
        }
        if was_window {
            let caught = u32::try_from(received.min(1024)).unwrap_or(1024);
            self.catch_x16 = self.catch_x16 - self.catch_x16 / 8 + caught * 2;
            if self.catch_x16 < 16 * Self::MIN_CATCH {
                self.skip = Self::BACKOFF;
                self.catch_x16 = 16 * Self::MIN_CATCH; // the trial after the pause decides afresh
            }
            return;
        }
        if received == 0 || received >= self.little {
            return;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return;
        }
        self.next_is_window = true;
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn sockaddrs_parse_from_kernel_layout() {
        let v4: SocketAddr = "127.0.0.9:5060".parse().unwrap();
        let raw = socket2::SockAddr::from(v4);
        // SAFETY: SockAddr's storage is valid for `len()` bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), raw.len() as usize) };
        assert_eq!(parse_sockaddr(bytes), Some(v4));
        let v6: SocketAddr = "[::1]:5070".parse().unwrap();
        let raw = socket2::SockAddr::from(v6);
        // SAFETY: as above.
        let bytes =
            unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), raw.len() as usize) };
        assert_eq!(parse_sockaddr(bytes), Some(v6));
        assert_eq!(parse_sockaddr(&[1, 2]), None);
        assert_eq!(parse_sockaddr(&[]), None);
    }

    #[test]
    fn rxq_ovfl_is_found_and_garbage_is_ignored() {
        let mut c = vec![0u8; CONTROL_LEN];
        c[..8].copy_from_slice(&20u64.to_ne_bytes());
        c[8..12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        c[12..16].copy_from_slice(&libc::SO_RXQ_OVFL.to_ne_bytes());
        c[16..20].copy_from_slice(&7u32.to_ne_bytes());
        assert_eq!(parse_rxq_ovfl(&c), Some(7));
        assert_eq!(parse_rxq_ovfl(&c[..10]), None);
        c[..8].copy_from_slice(&3u64.to_ne_bytes());
        assert_eq!(parse_rxq_ovfl(&c), None);
        let mut drops = KernelDrops::new(1);
        assert_eq!(drops.update(0, 7), 7);
        assert_eq!(drops.update(0, 9), 2);
        assert_eq!(drops.update(0, 9), 0);
        assert_eq!(drops.update(5, 9), 0);
    }

    #[test]
    fn coalescing_window_follows_only_a_small_batch() {
        let opts = IoOptions {
            coalesce: Some(Duration::from_micros(100)),
            batch: 64,
            ..IoOptions::default()
        };
        let mut c = Coalescer::new(&opts);
        assert_eq!(c.window(None), None);
        c.after_wait(false, 3);
        assert_eq!(c.window(None), Some(Duration::from_micros(100)));
        assert_eq!(
            c.window(Some(Duration::from_micros(10))),
            Some(Duration::from_micros(10))
        );
        c.after_wait(true, 3);
        assert_eq!(
            c.window(None),
            None,
            "a window is never followed by another"
        );
        c.after_wait(false, 64);
        assert_eq!(c.window(None), None, "a full batch needs no window");
        c.after_wait(false, 0);
        assert_eq!(c.window(None), None);
    }

    #[test]
    fn windows_that_catch_too_little_pause_then_retry() {
        let opts = IoOptions {
            coalesce: Some(Duration::from_micros(100)),
            ..IoOptions::default()
        };
        let mut c = Coalescer::new(&opts);
        let mut windows = 0;
        for _ in 0..1000 {
            c.after_wait(false, 1);
            if c.window(None).is_some() {
                windows += 1;
                c.after_wait(true, 1); // each window catches one datagram: not worth it
            }
        }
        assert!(
            (10..=40).contains(&windows),
            "paused most of the time: {windows} windows"
        );
        let mut c = Coalescer::new(&opts);
        let mut windows = 0;
        for _ in 0..1000 {
            c.after_wait(false, 1);
            if c.window(None).is_some() {
                windows += 1;
                c.after_wait(true, 4);
            }
        }
        assert_eq!(windows, 1000, "windows that catch 4 keep going");
    }
}
