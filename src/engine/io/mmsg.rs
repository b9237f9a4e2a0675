//! The portable backend: `epoll` over the shard's sockets and its mailbox eventfd, `recvmmsg`
//! (up to `batch` datagrams per call, `MSG_DONTWAIT`) and `sendmmsg`. Runs wherever io_uring is
//! disabled (`kernel.io_uring_disabled`, a container's seccomp profile, an old kernel).
//!
//! Sends are synchronous: the outbox's bytes are handed to `sendmmsg` in place and never copied.
//! A socket whose send buffer is full (EAGAIN) gets no wait: the rest of that run is dropped and
//! counted (`tx_dropped`), as the kernel drops UDP under pressure anyway; waiting would stall the
//! whole shard. A coalescing window sleeps in `ppoll` on the mailbox eventfd, so a letter from
//! another shard ends it at once.
//! Receives land in `batch` buffers of `max_datagram` bytes; a longer datagram comes back with
//! `MSG_TRUNC` and is counted and dropped. The epoll set is level-triggered, so a socket left with
//! data after the per-wait work limit is reported again at once by the next wait.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use socket2::SockAddr;

use super::{
    parse_rxq_ovfl, parse_sockaddr, Coalescer, IoOptions, IoSetupError, IoStats, KernelDrops,
    RecvDatagram, SocketPicker, UdpBackend, Wake, CONTROL_LEN, NAME_LEN,
};
use crate::core::io::Outbox;
use crate::engine::mailbox::Waker;

/// epoll token of the mailbox eventfd (sockets use their index).
const WAKE_TOKEN: u64 = u64::MAX;
/// recvmmsg calls per socket per wait: bounds one turn's work so timers are not starved.
const MAX_RECV_CALLS_PER_WAIT: usize = 4;

/// Raw `mmsghdr`/`iovec` arrays. Their pointers are rewritten before every system call and
/// point into buffers owned by the same backend (receive) or borrowed for the call (send).
struct RawHeaders {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
}

// SAFETY: the raw pointers inside are never dereferenced by us, only passed to the kernel within
// one call after being rewritten; moving the arrays to another thread is therefore harmless.
unsafe impl Send for RawHeaders {}

impl RawHeaders {
    fn new(n: usize) -> Self {
        // SAFETY: mmsghdr and iovec are plain C structs for which all-zero is a valid value.
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zero_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Self {
            hdrs: vec![zero_hdr; n],
            iovs: vec![zero_iov; n],
        }
    }
}

/// recvmmsg/sendmmsg + epoll backend.
pub struct MmsgBackend {
    sockets: Vec<UdpSocket>,
    locals: Vec<SocketAddr>,
    picker: SocketPicker,
    epoll: OwnedFd,
    waker: Arc<Waker>,
    batch: usize,
    max_datagram: usize,
    rx_bufs: Vec<u8>,
    rx_names: Vec<[u8; NAME_LEN]>,
    // The kernel writes cmsgs with plain byte copies; our parser reads bytes, so no alignment.
    rx_control: Vec<[u8; CONTROL_LEN]>,
    rx: RawHeaders,
    tx: RawHeaders,
    tx_addrs: Vec<SockAddr>,
    events: Vec<libc::epoll_event>,
    coalescer: Coalescer,
    kernel_drops: KernelDrops,
    pwait2: bool,
    stats: IoStats,
}

impl MmsgBackend {
    /// Sets up epoll over `sockets` and the waker's eventfd.
    pub fn new(
        sockets: Vec<UdpSocket>,
        waker: Arc<Waker>,
        opts: &IoOptions,
    ) -> Result<Self, IoSetupError> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(IoSetupError::os("epoll_create1")(io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let add = |fd: i32, token: u64| -> io::Result<()> {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: token,
            };
            // SAFETY: valid epoll fd, valid fd to watch, pointer to a live epoll_event.
            let rc =
                unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        add(waker.fd(), WAKE_TOKEN).map_err(IoSetupError::os("epoll_ctl(eventfd)"))?;
        let mut locals = Vec::with_capacity(sockets.len());
        for (i, s) in sockets.iter().enumerate() {
            s.set_nonblocking(true)
                .map_err(IoSetupError::os("set_nonblocking"))?;
            add(s.as_raw_fd(), i as u64).map_err(IoSetupError::os("epoll_ctl(socket)"))?;
            locals.push(s.local_addr().map_err(IoSetupError::os("local_addr"))?);
        }
        let batch = opts.batch;
        let unspecified: SocketAddr = (std::net::Ipv4Addr::UNSPECIFIED, 0).into();
        let n_sockets = sockets.len();
        Ok(Self {
            sockets,
            picker: SocketPicker::new(&locals),
            locals,
            epoll,
            waker,
            batch,
            max_datagram: opts.max_datagram,
            rx_bufs: vec![0; batch * opts.max_datagram],
            rx_names: vec![[0; NAME_LEN]; batch],
            rx_control: vec![[0; CONTROL_LEN]; batch],
            rx: RawHeaders::new(batch),
            tx: RawHeaders::new(batch),
            tx_addrs: vec![SockAddr::from(unspecified); batch],
            events: vec![libc::epoll_event { events: 0, u64: 0 }; n_sockets + 1],
            coalescer: Coalescer::new(opts),
            kernel_drops: KernelDrops::new(n_sockets),
            pwait2: true,
            stats: IoStats::default(),
        })
    }

    /// The epoll descriptor (readable when a socket or the mailbox is): the AF_XDP backend
    /// nests it in its own epoll set.
    pub(crate) fn epoll_fd(&self) -> std::os::fd::RawFd {
        self.epoll.as_raw_fd()
    }

    /// Blocks in epoll for at most `timeout`; returns the number of ready events.
    fn epoll_wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let max = self.events.len() as i32;
        if self.pwait2 {
            let ts = timeout.map(|t| libc::timespec {
                tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: t.subsec_nanos() as libc::c_long,
            });
            let ts_ptr = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: `events` has `max` entries; `ts_ptr` is null or points to a live timespec;
            // a null sigmask leaves the mask alone.
            let n = unsafe {
                libc::epoll_pwait2(
                    self.epoll.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    max,
                    ts_ptr,
                    std::ptr::null(),
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOSYS) {
                return Err(err);
            }
            self.pwait2 = false; // kernel older than 5.11: millisecond epoll_wait from now on
        }
        // Round up: waking early would only spin the loop until the deadline.
        let ms = timeout.map_or(-1, |t| {
            i32::try_from(t.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
        });
        // SAFETY: `events` has `max` entries.
        let n =
            unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), self.events.as_mut_ptr(), max, ms) };
        if n >= 0 {
            Ok(n as usize)
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Receives what `socket` has (at most the work limit) into the sink.
    fn receive(&mut self, socket: usize, sink: &mut dyn FnMut(RecvDatagram<'_>)) -> usize {
        let Some(fd) = self.sockets.get(socket).map(|s| s.as_raw_fd()) else {
            return 0;
        };
        let local = self.locals[socket];
        let mut delivered = 0;
        for _ in 0..MAX_RECV_CALLS_PER_WAIT {
            for i in 0..self.batch {
                let iov = &mut self.rx.iovs[i];
                iov.iov_base = self.rx_bufs[i * self.max_datagram..].as_mut_ptr().cast();
                iov.iov_len = self.max_datagram;
                let h = &mut self.rx.hdrs[i];
                h.msg_hdr.msg_name = self.rx_names[i].as_mut_ptr().cast();
                h.msg_hdr.msg_namelen = NAME_LEN as libc::socklen_t;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = self.rx_control[i].as_mut_ptr().cast();
                h.msg_hdr.msg_controllen = CONTROL_LEN;
                h.msg_hdr.msg_flags = 0;
                h.msg_len = 0;
            }
            // SAFETY: every header points at buffers of this backend with the lengths set above;
            // they stay alive and unaliased for the duration of the call.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.rx.hdrs.as_mut_ptr(),
                    self.batch as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) | Some(libc::EINTR) => {}
                    // ECONNREFUSED etc.: an ICMP error queued on the socket; the next call goes on.
                    _ => self.stats.rx_errors += 1,
                }
                break;
            }
            let n = n as usize;
            for i in 0..n {
                let h = &self.rx.hdrs[i].msg_hdr;
                let control_len = h.msg_controllen.min(CONTROL_LEN);
                if let Some(total) = parse_rxq_ovfl(&self.rx_control[i][..control_len]) {
                    self.stats.kernel_drops += self.kernel_drops.update(socket, total);
                }
                let truncated = h.msg_flags & libc::MSG_TRUNC != 0;
                let Some(from) =
                    parse_sockaddr(&self.rx_names[i][..(h.msg_namelen as usize).min(NAME_LEN)])
                else {
                    self.stats.rx_errors += 1;
                    continue;
                };
                let len = (self.rx.hdrs[i].msg_len as usize).min(self.max_datagram);
                let bytes = &self.rx_bufs[i * self.max_datagram..i * self.max_datagram + len];
                if truncated {
                    self.stats.truncated += 1;
                } else {
                    self.stats.rx_datagrams += 1;
                    self.stats.rx_bytes += len as u64;
                }
                delivered += 1;
                sink(RecvDatagram {
                    from,
                    local,
                    bytes,
                    truncated,
                });
            }
            if n < self.batch {
                break;
            }
        }
        delivered
    }

    /// Sends `count` prepared headers on `fd`, retrying past a failed datagram (counted).
    fn flush_sends(&mut self, fd: i32, count: usize) {
        let mut done = 0;
        while done < count {
            // SAFETY: headers `done..count` point at live outbox bytes and socket addresses that
            // outlive this call.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.tx.hdrs[done..].as_mut_ptr(),
                    (count - done) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                for h in &self.tx.hdrs[done..done + n as usize] {
                    self.stats.tx_datagrams += 1;
                    self.stats.tx_bytes += u64::from(h.msg_len);
                }
                done += n as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    // The send buffer is full: waiting for room would stall every datagram and
                    // timer of the shard. Drop the rest of this run, counted.
                    self.stats.tx_dropped += (count - done) as u64;
                    return;
                }
                _ => {
                    // This datagram cannot go (no route, too big): count it and go on with the
                    // rest.
                    self.stats.tx_errors += 1;
                    done += 1;
                }
            }
        }
    }

    /// Sleeps up to `window` unless the mailbox eventfd becomes readable (then at once).
    fn sleep_unless_woken(&self, window: Duration) {
        let ts = libc::timespec {
            tv_sec: window.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: window.subsec_nanos() as libc::c_long,
        };
        let mut p = libc::pollfd {
            fd: self.waker.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd, a live timespec, a null sigmask. The eventfd stays readable:
        // the epoll_wait that follows reports it and drains it.
        unsafe { libc::ppoll(&mut p, 1, &ts, std::ptr::null()) };
    }
}

#[cfg(test)]
impl MmsgBackend {
    /// Test hook: sends `payloads` on `fd` (a connected socket: no destination address) the way
    /// `send` does, returning the time it took.
    pub(super) fn flush_connected(&mut self, fd: i32, payloads: &[&[u8]]) -> Duration {
        for (i, p) in payloads.iter().enumerate() {
            let iov = &mut self.tx.iovs[i];
            iov.iov_base = p.as_ptr() as *mut libc::c_void;
            iov.iov_len = p.len();
            let h = &mut self.tx.hdrs[i];
            h.msg_hdr.msg_name = std::ptr::null_mut();
            h.msg_hdr.msg_namelen = 0;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
        }
        let t0 = std::time::Instant::now();
        self.flush_sends(fd, payloads.len());
        t0.elapsed()
    }
}

impl UdpBackend for MmsgBackend {
    fn name(&self) -> &'static str {
        "mmsg"
    }

    fn send(&mut self, out: &Outbox) -> io::Result<()> {
        let mut run_socket: Option<usize> = None;
        let mut run = 0usize;
        for t in out.transmits() {
            let Some(socket) = self.picker.pick(t) else {
                self.stats.tx_errors += 1; // no socket of that address family or local address
                continue;
            };
            if run == self.batch || (run > 0 && run_socket != Some(socket)) {
                if let Some(s) = run_socket {
                    let fd = self.sockets[s].as_raw_fd();
                    self.flush_sends(fd, run);
                }
                run = 0;
            }
            run_socket = Some(socket);
            let bytes = out.bytes(t);
            self.tx_addrs[run] = SockAddr::from(t.to);
            let iov = &mut self.tx.iovs[run];
            iov.iov_base = bytes.as_ptr() as *mut libc::c_void;
            iov.iov_len = bytes.len();
            let h = &mut self.tx.hdrs[run];
            h.msg_hdr.msg_name = self.tx_addrs[run].as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = self.tx_addrs[run].len();
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            run += 1;
        }
        if let (Some(s), true) = (run_socket, run > 0) {
            let fd = self.sockets[s].as_raw_fd();
            self.flush_sends(fd, run);
        }
        Ok(())
    }

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        sink: &mut dyn FnMut(RecvDatagram<'_>),
    ) -> io::Result<Wake> {
        self.stats.waits += 1;
        let window = self.coalescer.window(timeout);
        let ready = match window {
            Some(w) => {
                // Bounded batching window: sleep without being woken per datagram (but by a
                // mailbox letter), then take whatever arrived meanwhile.
                self.stats.coalesce_waits += 1;
                self.sleep_unless_woken(w);
                self.epoll_wait(Some(Duration::ZERO))
            }
            None => self.epoll_wait(timeout),
        };
        let ready = match ready {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => 0,
            Err(e) => return Err(e),
        };
        let mut wake = Wake::default();
        for k in 0..ready {
            let token = self.events[k].u64;
            if token == WAKE_TOKEN {
                self.waker.drain();
                self.stats.mailbox_wakes += 1;
                wake.mailbox = true;
            } else {
                wake.received += self.receive(token as usize, sink);
            }
        }
        if wake.received > 0 {
            self.stats.batches += 1;
        } else if !wake.mailbox {
            self.stats.empty_waits += 1;
        }
        self.coalescer.after_wait(window.is_some(), wake.received);
        Ok(wake)
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}
