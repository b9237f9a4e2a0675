//! The io_uring backend: one multishot `RecvMsg` per socket over a provided-buffer ring, sends as
//! `SendMsg` SQEs from a slab of copies, the mailbox eventfd as a multishot poll, and one
//! `io_uring_enter` per loop turn that submits the sends and waits.
//!
//! Pitfalls and what this file does about each:
//! - **Empty buffer ring.** When the kernel finds no provided buffer it ends the multishot receive
//!   with `ENOBUFS` (a CQE without `IORING_CQE_F_MORE`). Every buffer goes back to the ring right
//!   after the sink has seen its datagram, the tail is published once per turn, and any receive
//!   whose CQE lacked `F_MORE` (for whatever reason) is re-armed after that. Datagrams that
//!   arrive meanwhile wait in the socket queue; if that overflows, the kernel's drop count comes
//!   back through `SO_RXQ_OVFL` and is counted. `enobufs` and `rearms` are counted.
//! - **Oversize datagram.** Buffers hold `max_datagram` payload bytes; `MSG_TRUNC` in the
//!   `RecvMsgOut` header marks a longer one, which is counted as `truncated` and handed on
//!   flagged as such (its head only).
//! - **Sends outlive the call.** The outbox is cleared after `send` returns, so each datagram is
//!   copied into a slot of the send slab; the slot is freed on its CQE. With no free slot, `send`
//!   submits and waits for send completions, parking any receive CQE it reaps for the next `wait`.
//! - **Wake-ups.** The ring is set up with `SINGLE_ISSUER | DEFER_TASKRUN` when the kernel allows
//!   (completions then wake the task only when it waits, which is what makes a bounded batching
//!   window pay off, see `floor/RESULTS.md`), else plain. A normal wait asks for one completion;
//!   when only send completions arrived it handles them and waits again for what is left of the
//!   timeout, so a send that completes late (asynchronously) never holds back a datagram or a
//!   mailbox wake-up, and the sends' own CQEs never cost an extra turn.
//! - **Failed SQE push.** The send's slot goes back to the slab and the outbox's remaining
//!   datagrams are counted (`tx_dropped`, `sqe_push_failures`), never silently lost.
//! - **Teardown.** Drop cancels the receives and the poll and waits (bounded) for every in-flight
//!   operation before any buffer is freed; if the kernel does not finish in time the buffers are
//!   leaked rather than freed under it.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};
use socket2::SockAddr;

use super::{
    parse_rxq_ovfl, parse_sockaddr, Coalescer, IoOptions, IoStats, KernelDrops, RecvDatagram,
    SocketPicker, UdpBackend, Wake, CONTROL_LEN, NAME_LEN,
};
use crate::core::io::Outbox;
use crate::engine::mailbox::Waker;

const BUF_GROUP: u16 = 0;
const TAG_MASK: u64 = 0xff << 56;
const TAG_RECV: u64 = 1 << 56;
const TAG_SEND: u64 = 2 << 56;
const TAG_WAKE: u64 = 3 << 56;
const TAG_CANCEL: u64 = 4 << 56;
/// Poll on the shard's TCP epoll set (`engine::stream`), read by the shard loop after the wait.
const TAG_STREAM: u64 = 5 << 56;
/// `struct io_uring_recvmsg_out` that the kernel writes before name, control and payload.
const RECVMSG_OUT_LEN: usize = 16;
/// Submission queue entries; sends beyond this flush the queue mid-batch.
const SQ_ENTRIES: u32 = 1024;
/// How long Drop waits for the kernel to finish in-flight operations before leaking buffers.
const TEARDOWN_WAIT: Duration = Duration::from_secs(2);

/// A provided-buffer ring: the ring of `io_uring_buf` entries (mmap'd, page aligned, shared with
/// the kernel) and the buffers it points into.
struct BufRing {
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    memory: Vec<u8>,
    buf_size: usize,
    mask: u16,
    /// Tail as published to the kernel, plus buffers added since (published by `commit`).
    tail: u16,
    added: u16,
    leak: bool,
}

impl BufRing {
    fn new(entries: u16, buf_size: usize) -> io::Result<Self> {
        let ring_bytes = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: anonymous private mapping with no address hint; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            ring: ptr.cast(),
            ring_bytes,
            memory: vec![0; usize::from(entries) * buf_size],
            buf_size,
            mask: entries - 1,
            tail: 0,
            added: 0,
            leak: false,
        })
    }

    /// Puts buffer `bid` back (visible to the kernel after `commit`).
    fn recycle(&mut self, bid: u16) {
        let slot = usize::from(self.tail.wrapping_add(self.added) & self.mask);
        let addr = self.memory[usize::from(bid) * self.buf_size..].as_ptr() as u64;
        // SAFETY: `slot <= mask < entries`, inside the mapping. The kernel only reads entries
        // between its head and our published tail, and this slot is past the tail.
        let entry = unsafe { &mut *self.ring.add(slot) };
        entry.set_addr(addr);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(bid);
        self.added += 1;
    }

    /// Publishes recycled buffers to the kernel.
    fn commit(&mut self) {
        if self.added == 0 {
            return;
        }
        self.tail = self.tail.wrapping_add(self.added);
        self.added = 0;
        // SAFETY: the tail lives in the first entry's reserved field, inside the mapping, and is
        // only ever accessed atomically (the kernel reads it with an acquire load).
        let tail = unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.ring).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }

    fn buffer(&self, bid: u16, len: usize) -> Option<&[u8]> {
        let start = usize::from(bid).checked_mul(self.buf_size)?;
        self.memory.get(start..start + len.min(self.buf_size))
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leak {
            std::mem::forget(std::mem::take(&mut self.memory));
            return;
        }
        // SAFETY: unmaps exactly the mapping made in `new`; the ring is unregistered (or the
        // io_uring instance is gone) by the time this runs, see UringBackend's field order.
        unsafe { libc::munmap(self.ring.cast(), self.ring_bytes) };
    }
}

/// One send in flight: its own copy of the bytes and the kernel-facing headers pointing at it.
struct SendSlot {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: SockAddr,
    data: Vec<u8>,
}

/// io_uring backend. Must be used from the thread that created it (`SINGLE_ISSUER`).
pub struct UringBackend {
    // Field order matters for Drop: the ring goes before the memory it points into.
    ring: IoUring,
    bufs: BufRing,
    slots: Box<[SendSlot]>,
    recv_msghdr: Box<libc::msghdr>,
    sockets: Vec<UdpSocket>,
    locals: Vec<SocketAddr>,
    picker: SocketPicker,
    recv_armed: Vec<bool>,
    /// Sockets whose multishot receive ended and waits to be re-armed (`recv_armed` false), so a
    /// turn over thousands of sockets (a load generator's devices) skips the scan when none did.
    disarmed: usize,
    waker: Arc<Waker>,
    wake_armed: bool,
    stream_fd: Option<std::os::fd::RawFd>,
    stream_armed: bool,
    free_slots: Vec<u32>,
    inflight_sends: usize,
    /// CQEs reaped but not processed yet (by `send` waiting for a free slot).
    pending: Vec<cqueue::Entry>,
    batch: usize,
    coalescer: Coalescer,
    kernel_drops: KernelDrops,
    stats: IoStats,
    mode: &'static str,
    /// Test hook: every SQE push fails.
    #[cfg(test)]
    refuse_pushes: bool,
}

// SAFETY: the raw pointers (buffer ring mapping, msghdrs in the slab and template) point into
// memory owned by this value and are only used through `&mut self`. Moving the backend to another
// thread is sound; with SINGLE_ISSUER the kernel then refuses submits (EEXIST), an error, not UB.
unsafe impl Send for UringBackend {}

impl UringBackend {
    /// Probes io_uring and sets up the rings. On failure returns why, with the sockets, so the
    /// caller can fall back to another backend.
    pub fn new(
        sockets: Vec<UdpSocket>,
        waker: Arc<Waker>,
        opts: &IoOptions,
    ) -> Result<Self, (String, Vec<UdpSocket>)> {
        let parts = match Self::setup(&sockets, opts) {
            Ok(parts) => parts,
            Err(why) => return Err((why, sockets)),
        };
        let mut backend = parts.finish(sockets, waker, opts);
        match backend.start() {
            Ok(()) => {
                tracing::info!(mode = backend.mode, "io_uring ring set up");
                Ok(backend)
            }
            Err(why) => {
                let sockets = std::mem::take(&mut backend.sockets);
                drop(backend); // cancels whatever was armed before giving the sockets back
                Err((why, sockets))
            }
        }
    }

    fn setup(sockets: &[UdpSocket], opts: &IoOptions) -> Result<Parts, String> {
        if !opts.recv_buffers.is_power_of_two() || opts.recv_buffers > 32768 || opts.send_slots == 0
        {
            return Err("recv_buffers must be a power of two ≤ 32768 and send_slots > 0".into());
        }
        let cq = (u32::from(opts.recv_buffers) * 2 + opts.send_slots * 2)
            .next_power_of_two()
            .max(4096);
        let build = |defer: bool| {
            let mut b = IoUring::builder();
            b.setup_cqsize(cq);
            if defer {
                b.setup_single_issuer().setup_defer_taskrun();
            }
            b.build(SQ_ENTRIES)
        };
        let (ring, mode) = match opts.defer_taskrun.then(|| build(true)) {
            Some(Ok(r)) => (r, "defer_taskrun"),
            _ => (
                build(false).map_err(|e| {
                    format!(
                        "io_uring_setup: {e} (kernel.io_uring_disabled, seccomp, or no io_uring)"
                    )
                })?,
                "plain",
            ),
        };
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("opcode probe: {e}"))?;
        for (code, name) in [
            (opcode::RecvMsg::CODE, "RecvMsg"),
            (opcode::SendMsg::CODE, "SendMsg"),
            (opcode::PollAdd::CODE, "PollAdd"),
            (opcode::AsyncCancel::CODE, "AsyncCancel"),
        ] {
            if !probe.is_supported(code) {
                return Err(format!("io_uring lacks opcode {name}"));
            }
        }
        let buf_size = RECVMSG_OUT_LEN + NAME_LEN + CONTROL_LEN + opts.max_datagram;
        let bufs = BufRing::new(opts.recv_buffers, buf_size)
            .map_err(|e| format!("buffer ring mmap: {e}"))?;
        // SAFETY: the mapping has `recv_buffers` entries and outlives the registration: the
        // backend's field order drops the ring (which unregisters everything) before `bufs`.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.ring as u64, opts.recv_buffers, BUF_GROUP, 0)
                .map_err(|e| format!("provided buffer ring (kernel 5.19+): {e}"))?;
        }
        for s in sockets {
            // io_uring polls internally; a blocking socket keeps O_NONBLOCK semantics out of it.
            s.set_nonblocking(false)
                .map_err(|e| format!("socket mode: {e}"))?;
        }
        Ok(Parts { ring, bufs, mode })
    }

    /// Arms one multishot receive on socket `i`.
    fn arm_recv(&mut self, i: usize) -> io::Result<()> {
        let fd = self.sockets[i].as_raw_fd();
        let sqe = opcode::RecvMsgMulti::new(Fd(fd), &*self.recv_msghdr, BUF_GROUP)
            .build()
            .user_data(TAG_RECV | i as u64);
        self.push(&sqe)?;
        if !std::mem::replace(&mut self.recv_armed[i], true) {
            self.disarmed = self.disarmed.saturating_sub(1);
        }
        Ok(())
    }

    fn arm_wake(&mut self) -> io::Result<()> {
        let sqe = opcode::PollAdd::new(Fd(self.waker.fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(TAG_WAKE);
        self.push(&sqe)?;
        self.wake_armed = true;
        Ok(())
    }

    fn arm_stream(&mut self) -> io::Result<()> {
        let Some(fd) = self.stream_fd else {
            return Ok(());
        };
        let sqe = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(TAG_STREAM);
        self.push(&sqe)?;
        self.stream_armed = true;
        Ok(())
    }

    /// Queues one SQE, flushing the submission queue first if it is full.
    fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        #[cfg(test)]
        if self.refuse_pushes {
            return Err(io::Error::other("test hook: SQE push refused"));
        }
        loop {
            // SAFETY: every SQE built in this file points only at memory owned by the backend
            // that stays valid until the operation's final CQE (slab slots are freed on their CQE;
            // the msghdr template and the buffer ring live as long as the ring).
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.reap_pending(),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Submits and waits for `want` completions or `limit` (`None`: no limit).
    fn enter(&mut self, want: usize, limit: Option<Duration>) -> io::Result<()> {
        let result = match limit {
            Some(t) => {
                let ts = Timespec::from(t);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            None => self.ring.submitter().submit_and_wait(want),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Waits until a completion other than a send's (a datagram, a wake-up) is pending or
    /// `timeout` passed. Send completions that arrive meanwhile are handled on the way.
    fn wait_for_event(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            self.enter(1, left)?;
            self.reap_pending();
            if !self.pending.is_empty() || left == Some(Duration::ZERO) {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
        }
    }

    /// Moves every CQE from the completion queue to `pending`, handling send completions now.
    fn reap_pending(&mut self) {
        let start = self.pending.len();
        self.pending.extend(self.ring.completion());
        let mut i = start;
        while i < self.pending.len() {
            if self.pending[i].user_data() & TAG_MASK == TAG_SEND {
                let cqe = self.pending.swap_remove(i);
                self.complete_send(&cqe);
            } else {
                i += 1;
            }
        }
    }

    fn complete_send(&mut self, cqe: &cqueue::Entry) {
        let slot = (cqe.user_data() & !TAG_MASK) as u32;
        if cqe.result() < 0 {
            self.stats.tx_errors += 1;
        } else {
            self.stats.tx_datagrams += 1;
            self.stats.tx_bytes += cqe.result() as u64;
        }
        self.inflight_sends = self.inflight_sends.saturating_sub(1);
        self.free_slots.push(slot);
    }

    /// Handles one receive CQE; returns whether a datagram reached the sink.
    fn complete_recv(
        &mut self,
        cqe: &cqueue::Entry,
        sink: &mut dyn FnMut(RecvDatagram<'_>),
    ) -> bool {
        let socket = (cqe.user_data() & !TAG_MASK) as usize;
        if !cqueue::more(cqe.flags()) {
            if let Some(armed) = self.recv_armed.get_mut(socket) {
                if std::mem::replace(armed, false) {
                    self.disarmed += 1;
                }
            }
        }
        let bid = cqueue::buffer_select(cqe.flags());
        let mut delivered = false;
        if cqe.result() < 0 {
            match -cqe.result() {
                libc::ENOBUFS => self.stats.enobufs += 1,
                libc::ECANCELED => {}
                _ => self.stats.rx_errors += 1,
            }
        } else if let Some(bid) = bid {
            delivered = self.deliver(socket, bid, cqe.result() as usize, sink);
        } else {
            self.stats.rx_errors += 1;
        }
        if let Some(bid) = bid {
            self.bufs.recycle(bid);
        }
        delivered
    }

    fn deliver(
        &mut self,
        socket: usize,
        bid: u16,
        len: usize,
        sink: &mut dyn FnMut(RecvDatagram<'_>),
    ) -> bool {
        let Some(local) = self.locals.get(socket).copied() else {
            self.stats.rx_errors += 1;
            return false;
        };
        let Some(buf) = self.bufs.buffer(bid, len) else {
            self.stats.rx_errors += 1;
            return false;
        };
        let Ok(out) = io_uring::types::RecvMsgOut::parse(buf, &self.recv_msghdr) else {
            self.stats.rx_errors += 1;
            return false;
        };
        if let Some(total) = parse_rxq_ovfl(out.control_data()) {
            self.stats.kernel_drops += self.kernel_drops.update(socket, total);
        }
        let Some(from) = parse_sockaddr(out.name_data()) else {
            self.stats.rx_errors += 1;
            return false;
        };
        let bytes = out.payload_data();
        let truncated = out.is_payload_truncated();
        if truncated {
            self.stats.truncated += 1;
        } else {
            self.stats.rx_datagrams += 1;
            self.stats.rx_bytes += bytes.len() as u64;
        }
        sink(RecvDatagram {
            from,
            local,
            bytes,
            truncated,
        });
        true
    }

    /// Processes every pending CQE, publishes recycled buffers, re-arms what ended.
    fn process(&mut self, sink: &mut dyn FnMut(RecvDatagram<'_>)) -> io::Result<Wake> {
        let mut wake = Wake::default();
        let mut cqes = std::mem::take(&mut self.pending);
        for cqe in &cqes {
            match cqe.user_data() & TAG_MASK {
                TAG_RECV => wake.received += usize::from(self.complete_recv(cqe, sink)),
                TAG_SEND => self.complete_send(cqe),
                TAG_STREAM if !cqueue::more(cqe.flags()) => self.stream_armed = false,
                TAG_WAKE => {
                    if !cqueue::more(cqe.flags()) {
                        self.wake_armed = false;
                    }
                    if cqe.result() >= 0 {
                        self.waker.drain();
                        self.stats.mailbox_wakes += 1;
                        wake.mailbox = true;
                    }
                }
                _ => {}
            }
        }
        cqes.clear();
        self.pending = cqes;
        // Buffers first, then re-arm: a receive re-armed on an empty ring ends again at once.
        self.bufs.commit();
        if self.disarmed > 0 {
            for i in 0..self.recv_armed.len() {
                if !self.recv_armed[i] {
                    self.arm_recv(i)?;
                    self.stats.rearms += 1;
                }
            }
        }
        if !self.wake_armed {
            self.arm_wake()?;
        }
        if !self.stream_armed {
            self.arm_stream()?;
        }
        Ok(wake)
    }

    /// Cancels receives and the poll, then waits (bounded) until the kernel holds no pointer
    /// into our memory. Returns false if it did not finish in time.
    fn quiesce(&mut self) -> bool {
        let cancel = opcode::AsyncCancel2::new(CancelBuilder::any())
            .build()
            .user_data(TAG_CANCEL);
        let cancel_pushed = self.push(&cancel).is_ok();
        let deadline = Instant::now() + TEARDOWN_WAIT;
        let mut cancel_done = !cancel_pushed;
        loop {
            let busy = self.inflight_sends > 0
                || self.wake_armed
                || self.stream_armed
                || self.recv_armed.iter().any(|&a| a);
            if !busy && cancel_done {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let ts = Timespec::from((deadline - now).min(Duration::from_millis(50)));
            let args = SubmitArgs::new().timespec(&ts);
            if let Err(e) = self.ring.submitter().submit_with_args(1, &args) {
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) {
                    return false;
                }
            }
            let cqes: Vec<cqueue::Entry> = self.ring.completion().collect();
            for cqe in cqes {
                match cqe.user_data() & TAG_MASK {
                    TAG_SEND => self.complete_send(&cqe),
                    TAG_RECV => {
                        let mut ignore = |_: RecvDatagram<'_>| {};
                        self.complete_recv(&cqe, &mut ignore);
                    }
                    TAG_WAKE if !cqueue::more(cqe.flags()) => self.wake_armed = false,
                    TAG_STREAM if !cqueue::more(cqe.flags()) => self.stream_armed = false,
                    TAG_CANCEL => cancel_done = true,
                    _ => {}
                }
            }
            self.bufs.commit();
        }
    }
}

/// What `setup` builds before the backend takes ownership of the sockets.
struct Parts {
    ring: IoUring,
    bufs: BufRing,
    mode: &'static str,
}

impl Parts {
    fn finish(self, sockets: Vec<UdpSocket>, waker: Arc<Waker>, opts: &IoOptions) -> UringBackend {
        let zero_addr: SocketAddr = (std::net::Ipv4Addr::UNSPECIFIED, 0).into();
        let slots: Box<[SendSlot]> = (0..opts.send_slots)
            .map(|_| SendSlot {
                // SAFETY: msghdr is a plain C struct; all-zero is a valid (empty) value.
                msg: unsafe { std::mem::zeroed() },
                iov: libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                },
                addr: SockAddr::from(zero_addr),
                data: Vec::new(),
            })
            .collect();
        // SAFETY: as above.
        let mut recv_msghdr: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msghdr.msg_namelen = NAME_LEN as libc::socklen_t;
        recv_msghdr.msg_controllen = CONTROL_LEN;
        let locals: Vec<SocketAddr> = sockets
            .iter()
            .map(|s| s.local_addr().unwrap_or(zero_addr))
            .collect();
        let n = sockets.len();
        let mut backend = UringBackend {
            ring: self.ring,
            bufs: self.bufs,
            free_slots: (0..opts.send_slots).rev().collect(),
            slots,
            recv_msghdr,
            picker: SocketPicker::new(&locals),
            locals,
            recv_armed: vec![false; n],
            disarmed: n,
            sockets,
            waker,
            wake_armed: false,
            stream_fd: opts.stream_fd,
            stream_armed: false,
            inflight_sends: 0,
            pending: Vec::with_capacity(usize::from(opts.recv_buffers) * 2),
            batch: opts.batch,
            coalescer: Coalescer::new(opts),
            kernel_drops: KernelDrops::new(n),
            stats: IoStats::default(),
            mode: self.mode,
            #[cfg(test)]
            refuse_pushes: false,
        };
        for bid in 0..opts.recv_buffers {
            backend.bufs.recycle(bid);
        }
        backend.bufs.commit();
        backend
    }
}

impl UringBackend {
    /// `"defer_taskrun"` or `"plain"`: how the ring was set up.
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// Arms the receives and the wake poll and checks that the kernel accepts them (multishot
    /// RecvMsg needs kernel 6.0; an older one fails the SQE with EINVAL at once).
    fn start(&mut self) -> Result<(), String> {
        for i in 0..self.sockets.len() {
            self.arm_recv(i)
                .map_err(|e| format!("arming receive: {e}"))?;
        }
        self.arm_wake()
            .map_err(|e| format!("arming wake poll: {e}"))?;
        self.arm_stream()
            .map_err(|e| format!("arming stream poll: {e}"))?;
        let ts = Timespec::new();
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => {}
            Err(e) => return Err(format!("io_uring_enter: {e}")),
        }
        self.pending.extend(self.ring.completion());
        for cqe in &self.pending {
            let tag = cqe.user_data() & TAG_MASK;
            if (tag == TAG_RECV || tag == TAG_WAKE)
                && cqe.result() < 0
                && cqe.result() != -libc::ENOBUFS
            {
                return Err(format!(
                    "multishot {} rejected: {} (kernel too old?)",
                    if tag == TAG_RECV { "RecvMsg" } else { "poll" },
                    io::Error::from_raw_os_error(-cqe.result())
                ));
            }
        }
        Ok(())
    }
}

impl UdpBackend for UringBackend {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn send(&mut self, out: &Outbox) -> io::Result<()> {
        for (i, t) in out.transmits().iter().enumerate() {
            let Some(socket) = self.picker.pick(t) else {
                self.stats.tx_errors += 1; // no socket of that address family or local address
                continue;
            };
            let bytes = out.bytes(t);
            let slot_index = loop {
                if let Some(s) = self.free_slots.pop() {
                    break s;
                }
                // Every slot is in flight: let the kernel finish some.
                match self.ring.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => {
                    }
                    Err(e) => return Err(e),
                }
                self.reap_pending();
            };
            let slot = &mut self.slots[slot_index as usize];
            slot.data.clear();
            slot.data.extend_from_slice(bytes);
            slot.addr = SockAddr::from(t.to);
            slot.iov = libc::iovec {
                iov_base: slot.data.as_mut_ptr().cast(),
                iov_len: slot.data.len(),
            };
            slot.msg.msg_name = slot.addr.as_ptr() as *mut libc::c_void;
            slot.msg.msg_namelen = slot.addr.len();
            slot.msg.msg_iov = &mut slot.iov;
            slot.msg.msg_iovlen = 1;
            let fd = self.sockets[socket].as_raw_fd();
            let sqe = opcode::SendMsg::new(Fd(fd), &slot.msg)
                .build()
                .user_data(TAG_SEND | u64::from(slot_index));
            self.inflight_sends += 1;
            if let Err(e) = self.push(&sqe) {
                // Nothing was queued: the slot is free again; this datagram and the rest of the
                // outbox are dropped, and counted.
                self.inflight_sends -= 1;
                self.free_slots.push(slot_index);
                self.stats.sqe_push_failures += 1;
                self.stats.tx_dropped += (out.len() - i) as u64;
                return Err(e);
            }
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
        let ready_now = !self.pending.is_empty();
        if ready_now {
            self.enter(1, Some(Duration::ZERO))?;
        } else if let Some(w) = window {
            // A window wants a batch; send completions among it only make the batch smaller.
            self.stats.coalesce_waits += 1;
            self.enter(self.batch, Some(w))?;
        } else {
            self.wait_for_event(timeout)?;
        }
        self.pending.extend(self.ring.completion());
        let wake = self.process(sink)?;
        if wake.received > 0 {
            self.stats.batches += 1;
        } else if !wake.mailbox {
            self.stats.empty_waits += 1;
        }
        self.coalescer
            .after_wait(window.is_some() && !ready_now, wake.received);
        Ok(wake)
    }

    fn stats(&self) -> IoStats {
        self.stats
    }
}

#[cfg(test)]
impl UringBackend {
    /// Test hook: occupies a send slot with an operation that never completes by itself (a poll
    /// on `fd`, which nobody makes readable), as a send stuck in the kernel would.
    pub(super) fn stall_a_send(&mut self, fd: i32) {
        let slot = self.free_slots.pop().expect("a free send slot");
        let sqe = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
            .build()
            .user_data(TAG_SEND | u64::from(slot));
        self.inflight_sends += 1;
        self.push(&sqe).expect("push");
    }

    /// Test hook: makes every SQE push fail (`true`) or work again.
    pub(super) fn refuse_pushes(&mut self, refuse: bool) {
        self.refuse_pushes = refuse;
    }

    /// Send slots free now, and sends in flight.
    pub(super) fn send_slots(&self) -> (usize, usize) {
        (self.free_slots.len(), self.inflight_sends)
    }
}

impl Drop for UringBackend {
    fn drop(&mut self) {
        if !self.quiesce() {
            tracing::warn!("io_uring teardown timed out: leaking its buffers rather than freeing them under the kernel");
            self.bufs.leak = true;
            std::mem::forget(std::mem::take(&mut self.slots));
        }
        let _ = self.ring.submitter().unregister_buf_ring(BUF_GROUP);
    }
}
