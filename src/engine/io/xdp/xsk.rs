//! One AF_XDP socket with its own UMEM and four rings, through raw `socket`/`setsockopt`/`mmap`/
//! `bind` calls (the layout of `linux/if_xdp.h`, whose structs and constants `libc` provides).
//!
//! Frame ownership: every UMEM frame is at any time in exactly one place — the fill ring or the
//! receive ring (the kernel's), in the hands of the receive loop until it returns it to the fill
//! ring, in the transmit free list, or in the TX/completion rings (the kernel's). Nothing is
//! allocated per datagram.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bytes per UMEM frame (one datagram each; aligned chunk mode needs a power of two ≥ 2048).
pub const FRAME_SIZE: u32 = 4096;

/// A mapped region, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by one socket, moved with it to the shard thread.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(fd: Option<i32>, len: usize, offset: i64) -> io::Result<Self> {
        let (flags, fd) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
            ),
        };
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL); the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: null"))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mmap returned; nothing refers to it any more (the
        // rings holding pointers into it are dropped with their owner first or together).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One ring: producer and consumer indices shared with the kernel, descriptors behind them.
struct Ring {
    _map: Mapping,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut u8,
    mask: u32,
    size: u32,
}

// SAFETY: the pointers point into `map`, which moves with the ring; one thread uses a ring.
unsafe impl Send for Ring {}

impl Ring {
    fn new(
        fd: i32,
        off: &libc::xdp_ring_offset,
        size: u32,
        desc_len: usize,
        pgoff: i64,
    ) -> io::Result<Self> {
        let len = off.desc as usize + size as usize * desc_len;
        let map = Mapping::new(Some(fd), len, pgoff)?;
        let base = map.ptr.as_ptr();
        // SAFETY: the kernel's offsets lie inside the mapping of `len` bytes it sized for them.
        let at = |o: u64| unsafe { base.add(o as usize) };
        Ok(Self {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            desc: at(off.desc),
            mask: size - 1,
            size,
            _map: map,
        })
    }
    fn producer(&self) -> &AtomicU32 {
        // SAFETY: a 4-byte aligned index inside the live mapping, only accessed atomically.
        unsafe { &*self.producer }
    }
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.consumer }
    }
    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }
    /// Free slots a producer may fill.
    fn free(&self) -> u32 {
        let cons = self.consumer().load(Ordering::Acquire);
        self.size - self.producer().load(Ordering::Relaxed).wrapping_sub(cons)
    }
    /// Entries a consumer may read.
    fn ready(&self) -> u32 {
        let prod = self.producer().load(Ordering::Acquire);
        prod.wrapping_sub(self.consumer().load(Ordering::Relaxed))
    }
    fn slot<T>(&self, index: u32) -> *mut T {
        // SAFETY: `index & mask` < size, and the mapping holds `size` descriptors of T.
        unsafe { self.desc.cast::<T>().add((index & self.mask) as usize) }
    }
}

/// An AF_XDP socket bound to one queue, with its UMEM.
pub struct Xsk {
    fd: OwnedFd,
    umem: Mapping,
    fill: Ring,
    comp: Ring,
    rx: Ring,
    tx: Ring,
    /// Frames free for sending.
    tx_free: Vec<u64>,
    /// Frames taken from the receive ring, to go back to the fill ring.
    rx_done: Vec<u64>,
    /// Whether the socket runs in zero-copy mode (never on veth).
    pub zerocopy: bool,
}

/// Receive and transmit statistics the kernel keeps for the socket.
#[derive(Clone, Copy, Debug, Default)]
pub struct XskStats {
    /// Frames dropped: no fill-ring frame, too big, or the receive ring full.
    pub rx_dropped: u64,
    /// Invalid descriptors we gave the kernel (a bug if ever non-zero).
    pub invalid: u64,
}

fn setsockopt<T>(fd: i32, opt: i32, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size passed; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Xsk {
    /// Creates a socket on `ifindex`/`queue` with `frames` UMEM frames (half for receiving, half
    /// for sending; a power of two ≥ 64), copy or zero-copy as the driver allows, need-wakeup on.
    pub fn open(ifindex: u32, queue: u32, frames: u32) -> Result<Self, (&'static str, io::Error)> {
        let ring = frames / 2;
        // SAFETY: socket() takes no pointers; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(("socket(AF_XDP)", io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor this process owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        let len = frames as usize * FRAME_SIZE as usize;
        let umem = Mapping::new(None, len, 0).map_err(|e| ("mmap(UMEM)", e))?;
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr.as_ptr() as u64,
            len: len as u64,
            chunk_size: FRAME_SIZE,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(raw, libc::XDP_UMEM_REG, &reg).map_err(|e| ("setsockopt(XDP_UMEM_REG)", e))?;
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setsockopt(raw, opt, &(ring as i32)).map_err(|e| ("setsockopt(XDP ring size)", e))?;
        }
        // SAFETY: all-zero is a valid xdp_mmap_offsets (plain integers).
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` is writable for `optlen` bytes.
        let r = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut optlen,
            )
        };
        if r != 0 {
            return Err(("getsockopt(XDP_MMAP_OFFSETS)", io::Error::last_os_error()));
        }
        let desc = std::mem::size_of::<libc::xdp_desc>();
        let rx = Ring::new(raw, &off.rx, ring, desc, libc::XDP_PGOFF_RX_RING)
            .map_err(|e| ("mmap(rx ring)", e))?;
        let tx = Ring::new(raw, &off.tx, ring, desc, libc::XDP_PGOFF_TX_RING)
            .map_err(|e| ("mmap(tx ring)", e))?;
        let fill = Ring::new(raw, &off.fr, ring, 8, libc::XDP_UMEM_PGOFF_FILL_RING as i64)
            .map_err(|e| ("mmap(fill ring)", e))?;
        let comp = Ring::new(
            raw,
            &off.cr,
            ring,
            8,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as i64,
        )
        .map_err(|e| ("mmap(completion ring)", e))?;
        let mut xsk = Self {
            fd,
            umem,
            fill,
            comp,
            rx,
            tx,
            tx_free: (ring..frames)
                .map(|i| u64::from(i) * u64::from(FRAME_SIZE))
                .collect(),
            rx_done: Vec::with_capacity(ring as usize),
            zerocopy: false,
        };
        // Hand the first half of the frames to the kernel for receiving.
        xsk.rx_done = (0..ring)
            .map(|i| u64::from(i) * u64::from(FRAME_SIZE))
            .collect();
        xsk.refill();
        // SAFETY: all-zero is a valid sockaddr_xdp.
        let mut sa: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
        sa.sxdp_family = libc::AF_XDP as u16;
        sa.sxdp_ifindex = ifindex;
        sa.sxdp_queue_id = queue;
        sa.sxdp_flags = libc::XDP_USE_NEED_WAKEUP;
        // The previous socket on this queue (a restart) is torn down asynchronously: retry EBUSY.
        let mut tries = 0;
        loop {
            // SAFETY: `sa` is a live sockaddr_xdp of the size passed.
            let r = unsafe {
                libc::bind(
                    raw,
                    (&sa as *const libc::sockaddr_xdp).cast(),
                    std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            tries += 1;
            if e.raw_os_error() != Some(libc::EBUSY) || tries >= 20 {
                return Err(("bind(AF_XDP)", e));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // SAFETY: all-zero is a valid xdp_options.
        let mut opts: libc::xdp_options = unsafe { std::mem::zeroed() };
        let mut optlen = std::mem::size_of::<libc::xdp_options>() as libc::socklen_t;
        // SAFETY: `opts` is writable for `optlen` bytes.
        let r = unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_OPTIONS,
                (&mut opts as *mut libc::xdp_options).cast(),
                &mut optlen,
            )
        };
        xsk.zerocopy = r == 0 && opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0;
        Ok(xsk)
    }

    /// The socket's descriptor (for the XSKMAP and epoll).
    pub fn fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Returns received frames to the fill ring.
    fn refill(&mut self) {
        let n = self.fill.free().min(self.rx_done.len() as u32);
        if n == 0 {
            return;
        }
        let prod = self.fill.producer().load(Ordering::Relaxed);
        for k in 0..n {
            let addr = self.rx_done.pop().expect("invariant: n <= rx_done.len()");
            // SAFETY: slot of a free fill-ring entry (we are its only producer).
            unsafe { self.fill.slot::<u64>(prod.wrapping_add(k)).write(addr) };
        }
        self.fill
            .producer()
            .store(prod.wrapping_add(n), Ordering::Release);
    }

    /// Moves completed transmissions back to the free list.
    fn complete(&mut self) {
        let n = self.comp.ready();
        if n == 0 {
            return;
        }
        let cons = self.comp.consumer().load(Ordering::Relaxed);
        for k in 0..n {
            // SAFETY: a completion entry the kernel published (index below its producer).
            let addr = unsafe { self.comp.slot::<u64>(cons.wrapping_add(k)).read() };
            self.tx_free.push(addr & !u64::from(FRAME_SIZE - 1));
        }
        self.comp
            .consumer()
            .store(cons.wrapping_add(n), Ordering::Release);
    }

    /// Hands up to `max` received frames to `each(frame)`, then returns them to the kernel.
    /// Returns how many there were.
    pub fn receive(&mut self, max: u32, each: &mut dyn FnMut(&[u8])) -> usize {
        let n = self.rx.ready().min(max);
        let cons = self.rx.consumer().load(Ordering::Relaxed);
        for k in 0..n {
            // SAFETY: a receive descriptor the kernel published.
            let d = unsafe { self.rx.slot::<libc::xdp_desc>(cons.wrapping_add(k)).read() };
            let start = d.addr as usize;
            let end = start + d.len as usize;
            if end <= self.umem.len {
                // SAFETY: the range lies inside the UMEM, and the kernel wrote this frame and
                // will not touch it again until we put it back on the fill ring below.
                let frame = unsafe {
                    std::slice::from_raw_parts(self.umem.ptr.as_ptr().add(start), d.len as usize)
                };
                each(frame);
            }
            self.rx_done.push(d.addr & !u64::from(FRAME_SIZE - 1));
        }
        if n > 0 {
            self.rx
                .consumer()
                .store(cons.wrapping_add(n), Ordering::Release);
        }
        self.refill();
        n as usize
    }

    /// Whether the receive ring holds frames.
    pub fn has_rx(&self) -> bool {
        self.rx.ready() > 0
    }

    /// Queues one frame written by `write` into a free UMEM frame (it gets `FRAME_SIZE` bytes and
    /// returns the length, or `None` to send nothing). Returns false when nothing was queued: no
    /// free frame or TX slot, or `write` declined (the caller sends through the kernel instead).
    pub fn send(&mut self, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        if self.tx_free.is_empty() {
            self.complete();
        }
        if self.tx_free.is_empty() || self.tx.free() == 0 {
            return false;
        }
        let addr = *self.tx_free.last().expect("invariant: checked non-empty");
        // SAFETY: a frame on the free list belongs to us alone, inside the UMEM.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(
                self.umem.ptr.as_ptr().add(addr as usize),
                FRAME_SIZE as usize,
            )
        };
        let Some(len) = write(buf) else {
            return false;
        };
        self.tx_free.pop();
        let prod = self.tx.producer().load(Ordering::Relaxed);
        let d = libc::xdp_desc {
            addr,
            len: len as u32,
            options: 0,
        };
        // SAFETY: a free TX slot (checked above), we are its only producer.
        unsafe { self.tx.slot::<libc::xdp_desc>(prod).write(d) };
        self.tx
            .producer()
            .store(prod.wrapping_add(1), Ordering::Release);
        true
    }

    /// Whether frames wait in the TX ring for the kernel.
    pub fn tx_pending(&self) -> bool {
        self.tx.free() < self.tx.size
    }

    /// Tells the kernel to transmit what was queued (a `sendto` kick when it asks for one) and
    /// recycles completed frames. In copy mode one kick sends at most 32 frames and answers
    /// `EAGAIN` while more wait, so it kicks again (bounded) until the ring is empty.
    pub fn flush(&mut self) -> io::Result<()> {
        for _ in 0..256 {
            if !(self.tx.needs_wakeup() && self.tx_pending()) {
                break;
            }
            // SAFETY: a zero-length kick with no buffers or address.
            let r = unsafe {
                libc::sendto(
                    self.fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r >= 0 {
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // More frames than one kick takes: kick again.
                Some(libc::EAGAIN) => {}
                // The kernel is out of skbs or busy: the frames stay queued for the next kick.
                Some(libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN) => break,
                _ => return Err(e),
            }
        }
        self.complete();
        Ok(())
    }

    /// The kernel's counters for this socket.
    pub fn stats(&self) -> XskStats {
        // SAFETY: all-zero is a valid xdp_statistics.
        let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `s` is writable for `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut s as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return XskStats::default();
        }
        XskStats {
            rx_dropped: s.rx_dropped + s.rx_ring_full,
            invalid: s.rx_invalid_descs + s.tx_invalid_descs,
        }
    }
}
