//! Loopback tests run against both backends (io_uring skipped with a printed reason when the
//! probe fails). Each test binds its own 127.0.0.1 port 0 sockets, so tests run in parallel.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::core::io::Outbox;
use crate::engine::io::socket::bind_reuseport;
use crate::engine::mailbox::Waker;

struct Fixture {
    backend: Box<dyn UdpBackend>,
    addr: SocketAddr,
    waker: Arc<Waker>,
}

/// Opens `kind` on a fresh loopback socket; `None` (with the reason printed) if io_uring is not
/// available here.
fn open_on_loopback(kind: IoKind, opts: &IoOptions) -> Option<Fixture> {
    let socket = bind_reuseport("127.0.0.1:0".parse().unwrap()).expect("bind");
    let addr = socket.local_addr().unwrap();
    let waker = Arc::new(Waker::new().unwrap());
    match open(kind, vec![socket], Arc::clone(&waker), opts) {
        Ok(opened) => {
            assert!(opened.fallback_reason.is_none());
            Some(Fixture {
                backend: opened.backend,
                addr,
                waker,
            })
        }
        Err(e) if kind == IoKind::Uring => {
            eprintln!("skipping the io_uring run: {e}");
            None
        }
        Err(e) => panic!("{kind:?}: {e}"),
    }
}

fn peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Waits on the backend until `want` datagrams arrived or 5 s passed; echoes each if `echo`.
fn collect(f: &mut Fixture, want: usize, echo: bool) -> Vec<(SocketAddr, Vec<u8>)> {
    collect_until(f, want, echo, false)
}

/// As `collect`; with `settle`, also stops at the first 50 ms without a datagram.
fn collect_until(
    f: &mut Fixture,
    want: usize,
    echo: bool,
    settle: bool,
) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut got = Vec::new();
    let mut out = Outbox::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < want && Instant::now() < deadline {
        let wake = f
            .backend
            .wait(Some(Duration::from_millis(50)), &mut |d| {
                got.push((d.from, d.bytes.to_vec()));
                if echo {
                    out.push(d.from, d.bytes);
                }
            })
            .unwrap();
        if settle && wake.received == 0 {
            break;
        }
        f.backend.send(&out).unwrap();
        out.clear();
    }
    // One more turn submits the last sends (io_uring submits them with the next wait).
    f.backend
        .wait(Some(Duration::ZERO), &mut |d| {
            got.push((d.from, d.bytes.to_vec()))
        })
        .unwrap();
    got
}

const KINDS: [IoKind; 2] = [IoKind::Mmsg, IoKind::Uring];

#[test]
fn echo_is_exact_for_many_datagrams_from_several_peers() {
    for kind in KINDS {
        let Some(mut f) = open_on_loopback(kind, &IoOptions::default()) else {
            continue;
        };
        let peers: Vec<UdpSocket> = (0..4).map(|_| peer()).collect();
        const PER_PEER: u32 = 300;
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        for round in 0..PER_PEER / 50 {
            for (p, s) in peers.iter().enumerate() {
                for i in 0..50 {
                    let msg = format!("peer {p} datagram {}", round * 50 + i);
                    s.send_to(msg.as_bytes(), f.addr).unwrap();
                }
            }
            got.extend(collect(&mut f, 200, true));
            // Read the echoes per round: a peer's default receive queue holds only a few hundred.
            for (p, s) in peers.iter().enumerate() {
                for i in 0..50 {
                    let (n, src) = s.recv_from(&mut buf).unwrap();
                    assert_eq!(src, f.addr);
                    let want = format!("peer {p} datagram {}", round * 50 + i);
                    assert_eq!(&buf[..n], want.as_bytes(), "{kind:?}");
                }
            }
        }
        assert_eq!(got.len(), 4 * PER_PEER as usize, "{kind:?}");
        for (p, s) in peers.iter().enumerate() {
            let from = s.local_addr().unwrap();
            let mine: Vec<String> = got
                .iter()
                .filter(|(a, _)| *a == from)
                .map(|(_, b)| String::from_utf8(b.clone()).unwrap())
                .collect();
            let want: Vec<String> = (0..PER_PEER)
                .map(|i| format!("peer {p} datagram {i}"))
                .collect();
            assert_eq!(mine, want, "{kind:?}: peer {p} in order, exactly once");
        }
        let st = f.backend.stats();
        assert_eq!(st.rx_datagrams, 4 * u64::from(PER_PEER));
        assert_eq!(st.tx_datagrams, 4 * u64::from(PER_PEER));
        assert_eq!(
            (st.tx_errors, st.truncated, st.kernel_drops, st.rx_errors),
            (0, 0, 0, 0)
        );
        assert!(st.batches > 0 && st.batches <= st.waits);
    }
}

#[test]
fn a_burst_larger_than_the_buffer_ring_is_rearmed_without_loss() {
    let opts = IoOptions {
        recv_buffers: 8,
        ..IoOptions::default()
    };
    let Some(mut f) = open_on_loopback(IoKind::Uring, &opts) else {
        return;
    };
    let s = peer();
    const BURST: usize = 500;
    for i in 0..BURST {
        s.send_to(format!("burst {i}").as_bytes(), f.addr).unwrap();
    }
    let got = collect(&mut f, BURST, false);
    let st = f.backend.stats();
    assert_eq!(
        got.len(),
        BURST,
        "socket queue holds what the ring could not: {st:?}"
    );
    for (i, (_, b)) in got.iter().enumerate() {
        assert_eq!(b, format!("burst {i}").as_bytes());
    }
    assert!(st.enobufs >= 1, "ring of 8 must run dry: {st:?}");
    assert!(st.rearms >= st.enobufs, "every ENOBUFS is re-armed: {st:?}");
    assert_eq!(st.kernel_drops, 0);
}

#[test]
fn kernel_queue_drops_are_counted_not_silent() {
    for kind in KINDS {
        let socket = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        // Shrink the receive queue (plain SO_RCVBUF; the kernel's minimum is a few KiB).
        socket2::SockRef::from(&socket)
            .set_recv_buffer_size(4096)
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let waker = Arc::new(Waker::new().unwrap());
        let mut f = match open(
            kind,
            vec![socket],
            Arc::clone(&waker),
            &IoOptions::default(),
        ) {
            Ok(o) => Fixture {
                backend: o.backend,
                addr,
                waker,
            },
            Err(e) => {
                assert_eq!(kind, IoKind::Uring, "{e}");
                eprintln!("skipping the io_uring run: {e}");
                continue;
            }
        };
        let s = peer();
        const SENT: usize = 2000;
        let payload = [7u8; 1000];
        // io_uring receives while we send (its multishot is armed), so send faster than one
        // wake-up: in one go, before the test thread waits again.
        for _ in 0..SENT {
            s.send_to(&payload, f.addr).unwrap();
        }
        let mut received = collect_until(&mut f, SENT, false, true).len();
        // SO_RXQ_OVFL reports drops on the next datagram queued after them: send a marker.
        s.send_to(b"marker", f.addr).unwrap();
        let got = collect(&mut f, 1, false);
        assert_eq!(
            got.last().map(|(_, b)| b.as_slice()),
            Some(&b"marker"[..]),
            "{kind:?}"
        );
        received += got.len() - 1;
        let st = f.backend.stats();
        assert!(
            st.kernel_drops > 0,
            "{kind:?}: a 4 KiB queue must overflow: {st:?}"
        );
        assert_eq!(
            received as u64 + st.kernel_drops,
            SENT as u64,
            "{kind:?}: {st:?}"
        );
    }
}

#[test]
fn oversize_datagrams_are_counted_and_handed_on_as_truncated_heads() {
    for kind in KINDS {
        let opts = IoOptions {
            max_datagram: 512,
            ..IoOptions::default()
        };
        let Some(mut f) = open_on_loopback(kind, &opts) else {
            continue;
        };
        let s = peer();
        s.send_to(&[1u8; 513], f.addr).unwrap();
        s.send_to(&[2u8; 512], f.addr).unwrap();
        s.send_to(&[3u8; 9000], f.addr).unwrap();
        s.send_to(b"small", f.addr).unwrap();
        // (first byte, length seen, truncated) of each datagram, in order.
        let mut got: Vec<(u8, usize, bool)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < 4 && Instant::now() < deadline {
            f.backend
                .wait(Some(Duration::from_millis(50)), &mut |d| {
                    got.push((d.bytes[0], d.bytes.len(), d.truncated))
                })
                .unwrap();
        }
        assert_eq!(
            got,
            vec![
                (1, 512, true),
                (2, 512, false),
                (3, 512, true),
                (b's', 5, false)
            ],
            "{kind:?}"
        );
        let st = f.backend.stats();
        assert_eq!((st.truncated, st.rx_datagrams), (2, 2), "{kind:?}: {st:?}");
    }
}

#[test]
fn an_idle_wait_honours_its_timeout() {
    for kind in KINDS {
        let Some(mut f) = open_on_loopback(kind, &IoOptions::default()) else {
            continue;
        };
        let t0 = Instant::now();
        let wake = f
            .backend
            .wait(Some(Duration::from_millis(40)), &mut |_| {
                panic!("no datagram expected")
            })
            .unwrap();
        let took = t0.elapsed();
        assert_eq!(wake, Wake::default(), "{kind:?}");
        assert!(
            took >= Duration::from_millis(40),
            "{kind:?}: woke early after {took:?}"
        );
        assert!(
            took < Duration::from_millis(1000),
            "{kind:?}: overslept {took:?}"
        );
        let zero = Instant::now();
        f.backend.wait(Some(Duration::ZERO), &mut |_| {}).unwrap();
        assert!(
            zero.elapsed() < Duration::from_millis(100),
            "{kind:?}: zero timeout must not block"
        );
    }
}

#[test]
fn a_mailbox_wake_up_ends_an_unbounded_wait() {
    for kind in KINDS {
        let Some(mut f) = open_on_loopback(kind, &IoOptions::default()) else {
            continue;
        };
        let waker = Arc::clone(&f.waker);
        let t0 = Instant::now();
        let th = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            waker.park(); // as a sleeping shard would be
            assert!(waker.wake_if_parked());
        });
        let wake = f.backend.wait(None, &mut |_| {}).unwrap();
        th.join().unwrap();
        assert!(wake.mailbox, "{kind:?}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(f.backend.stats().mailbox_wakes, 1);
        // The eventfd was drained: the next wait times out instead of returning at once.
        let wake = f
            .backend
            .wait(Some(Duration::from_millis(20)), &mut |_| {})
            .unwrap();
        assert!(!wake.mailbox, "{kind:?}: wake-up must be consumed");
    }
}

#[test]
fn sends_to_many_destinations_leave_in_order_even_beyond_the_send_slab() {
    for kind in KINDS {
        let opts = IoOptions {
            send_slots: 4,
            batch: 8,
            ..IoOptions::default()
        };
        let Some(mut f) = open_on_loopback(kind, &opts) else {
            continue;
        };
        let peers: Vec<UdpSocket> = (0..3).map(|_| peer()).collect();
        let mut out = Outbox::new();
        for i in 0..60 {
            let to = peers[i % 3].local_addr().unwrap();
            out.push(to, format!("out {i}").as_bytes());
        }
        f.backend.send(&out).unwrap();
        out.clear();
        f.backend.wait(Some(Duration::ZERO), &mut |_| {}).unwrap();
        let mut seen: HashMap<usize, Vec<String>> = HashMap::new();
        let mut buf = [0u8; 64];
        for (p, s) in peers.iter().enumerate() {
            for _ in 0..20 {
                let n = s.recv(&mut buf).unwrap();
                seen.entry(p)
                    .or_default()
                    .push(String::from_utf8(buf[..n].to_vec()).unwrap());
            }
        }
        for p in 0..3 {
            let want: Vec<String> = (0..60)
                .filter(|i| i % 3 == p)
                .map(|i| format!("out {i}"))
                .collect();
            assert_eq!(seen[&p], want, "{kind:?}");
        }
        // The last sends' completions are collected by a later wait.
        f.backend
            .wait(Some(Duration::from_millis(10)), &mut |_| {})
            .unwrap();
        assert_eq!(f.backend.stats().tx_datagrams, 60, "{kind:?}");
    }
}

/// Sends one datagram from `s` and waits until it arrived: a small wake-up, which earns the next
/// wait a coalescing window. Returns the datagrams that wait delivered.
fn earn_a_window(f: &mut Fixture, s: &UdpSocket) -> usize {
    s.send_to(b"first", f.addr).unwrap();
    let mut first = 0;
    while first == 0 {
        first = f
            .backend
            .wait(Some(Duration::from_secs(1)), &mut |_| {})
            .unwrap()
            .received;
    }
    first
}

#[test]
fn a_coalescing_window_gathers_a_trickle_into_one_batch() {
    for kind in KINDS {
        let opts = IoOptions {
            coalesce: Some(Duration::from_millis(30)),
            ..IoOptions::default()
        };
        let Some(mut f) = open_on_loopback(kind, &opts) else {
            continue;
        };
        let s = peer();
        assert_eq!(earn_a_window(&mut f, &s), 1, "{kind:?}");
        // The next wait is a window: datagrams sent during it come back together.
        let addr = f.addr;
        let sender = std::thread::spawn(move || {
            for i in 0..5 {
                s.send_to(format!("trickle {i}").as_bytes(), addr).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let mut n = 0;
        let wake = f
            .backend
            .wait(Some(Duration::from_secs(1)), &mut |_| n += 1)
            .unwrap();
        sender.join().unwrap();
        assert_eq!(wake.received, n);
        let st = f.backend.stats();
        assert_eq!(st.coalesce_waits, 1, "{kind:?}: {st:?}");
        assert!(
            n >= 4,
            "{kind:?}: a 30 ms window should catch the 10 ms trickle, got {n}"
        );
    }
}

#[test]
fn ipv6_listeners_echo_on_both_backends() {
    for kind in KINDS {
        let socket = match bind_reuseport("[::1]:0".parse().unwrap()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipping: no ::1 here ({e})");
                return;
            }
        };
        let addr = socket.local_addr().unwrap();
        let waker = Arc::new(Waker::new().unwrap());
        let mut f = match open(
            kind,
            vec![socket],
            Arc::clone(&waker),
            &IoOptions::default(),
        ) {
            Ok(o) => Fixture {
                backend: o.backend,
                addr,
                waker,
            },
            Err(e) => {
                assert_eq!(kind, IoKind::Uring, "{e}");
                eprintln!("skipping the io_uring run: {e}");
                continue;
            }
        };
        let s = UdpSocket::bind("[::1]:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(b"over v6", f.addr).unwrap();
        let got = collect(&mut f, 1, true);
        assert_eq!(
            got,
            vec![(s.local_addr().unwrap(), b"over v6".to_vec())],
            "{kind:?}"
        );
        let mut buf = [0u8; 16];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"over v6"[..], f.addr), "{kind:?}");
    }
}

#[test]
fn auto_falls_back_to_mmsg_with_a_reason_when_io_uring_cannot_be_set_up() {
    // A buffer count io_uring rejects stands in for a kernel or sandbox without io_uring.
    let opts = IoOptions {
        recv_buffers: 1000,
        ..IoOptions::default()
    };
    let socket = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let waker = Arc::new(Waker::new().unwrap());
    let opened = open(IoKind::Auto, vec![socket], Arc::clone(&waker), &opts).unwrap();
    assert_eq!(opened.backend.name(), "mmsg");
    assert!(
        opened
            .fallback_reason
            .as_deref()
            .is_some_and(|r| r.contains("power of two")),
        "{opened:?}"
    );
    // The sockets came back intact: the fallback serves them.
    let mut f = Fixture {
        backend: opened.backend,
        addr,
        waker,
    };
    let s = peer();
    s.send_to(b"still served", f.addr).unwrap();
    assert_eq!(collect(&mut f, 1, false).len(), 1);
    let socket = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
    let err = open(
        IoKind::Uring,
        vec![socket],
        Arc::new(Waker::new().unwrap()),
        &opts,
    )
    .unwrap_err();
    assert!(matches!(err, IoSetupError::UringUnavailable(_)), "{err}");
}

#[test]
fn a_transmit_leaves_from_the_socket_it_names() {
    for kind in KINDS {
        let sockets: Vec<UdpSocket> = (0..3)
            .map(|_| bind_reuseport("127.0.0.1:0".parse().unwrap()).expect("bind"))
            .collect();
        let locals: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        let waker = Arc::new(Waker::new().unwrap());
        let mut backend = match open(kind, sockets, waker, &IoOptions::default()) {
            Ok(opened) => opened.backend,
            Err(e) if kind == IoKind::Uring => {
                eprintln!("skipping the io_uring run: {e}");
                continue;
            }
            Err(e) => panic!("{kind:?}: {e}"),
        };
        let p = peer();
        let to = p.local_addr().unwrap();
        let mut out = Outbox::new();
        out.push_from_with(Some(locals[2]), to, |b| b.extend_from_slice(b"two"));
        out.push_from_with(Some(locals[1]), to, |b| b.extend_from_slice(b"one"));
        out.push_with(to, |b| b.extend_from_slice(b"default"));
        let unknown: SocketAddr = "127.0.0.1:9".parse().unwrap();
        out.push_from_with(Some(unknown), to, |b| b.extend_from_slice(b"nowhere"));
        backend.send(&out).unwrap();
        backend.wait(Some(Duration::ZERO), &mut |_| {}).unwrap();
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        for _ in 0..3 {
            let (n, src) = p.recv_from(&mut buf).unwrap();
            got.push((src, buf[..n].to_vec()));
        }
        assert_eq!(
            got,
            vec![
                (locals[2], b"two".to_vec()),
                (locals[1], b"one".to_vec()),
                (locals[0], b"default".to_vec()),
            ],
            "{kind:?}"
        );
        assert_eq!(
            backend.stats().tx_errors,
            1,
            "{kind:?}: the unknown source is counted"
        );
    }
}

/// io_uring: a send that stays in flight (here a slot held by an operation that never
/// completes, as a send blocked in the kernel would be) must not hold back a datagram or a
/// mailbox wake-up: each ends the wait at once.
#[test]
fn a_send_that_goes_async_does_not_stall_a_datagram_or_a_wake_up() {
    let socket = bind_reuseport("127.0.0.1:0".parse().unwrap()).expect("bind");
    let addr = socket.local_addr().unwrap();
    let waker = Arc::new(Waker::new().unwrap());
    // No coalescing window: this is about the normal wait.
    let opts = IoOptions {
        coalesce: None,
        ..IoOptions::default()
    };
    let mut b = match uring::UringBackend::new(vec![socket], Arc::clone(&waker), &opts) {
        Ok(b) => b,
        Err((why, _)) => {
            eprintln!("skipping the io_uring run: {why}");
            return;
        }
    };
    let (stuck, _keep) = std::os::unix::net::UnixStream::pair().unwrap();
    b.stall_a_send(std::os::fd::AsRawFd::as_raw_fd(&stuck));
    let s = peer();
    s.send_to(b"one", addr).unwrap();
    let t0 = Instant::now();
    let mut got = 0;
    while got == 0 && t0.elapsed() < Duration::from_secs(3) {
        got += b
            .wait(Some(Duration::from_secs(3)), &mut |_| {})
            .unwrap()
            .received;
    }
    assert_eq!(got, 1);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());

    let t0 = Instant::now();
    let w = Arc::clone(&waker);
    let th = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        w.park();
        assert!(w.wake_if_parked());
    });
    let wake = b.wait(Some(Duration::from_secs(3)), &mut |_| {}).unwrap();
    th.join().unwrap();
    assert!(
        wake.mailbox,
        "{wake:?} after {:?}: {:?}",
        t0.elapsed(),
        b.stats()
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(b.send_slots().1, 1, "the stuck send is still in flight");
}

/// io_uring: a failed SQE push returns the send slot and counts the outbox's datagrams.
#[test]
fn a_failed_sqe_push_is_counted_and_leaks_no_send_slot() {
    let socket = bind_reuseport("127.0.0.1:0".parse().unwrap()).expect("bind");
    let waker = Arc::new(Waker::new().unwrap());
    let mut b = match uring::UringBackend::new(vec![socket], waker, &IoOptions::default()) {
        Ok(b) => b,
        Err((why, _)) => {
            eprintln!("skipping the io_uring run: {why}");
            return;
        }
    };
    let s = peer();
    let to = s.local_addr().unwrap();
    let before = b.send_slots();
    let mut out = Outbox::new();
    for i in 0..3 {
        out.push(to, format!("d{i}").as_bytes());
    }
    b.refuse_pushes(true);
    assert!(b.send(&out).is_err());
    assert_eq!(b.send_slots(), before, "slot back, nothing in flight");
    let st = b.stats();
    assert_eq!((st.sqe_push_failures, st.tx_dropped), (1, 3));
    b.refuse_pushes(false);
    b.send(&out).unwrap();
    b.wait(Some(Duration::ZERO), &mut |_| {}).unwrap();
    let mut buf = [0u8; 64];
    for i in 0..3 {
        let (n, _) = s.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], format!("d{i}").as_bytes());
    }
}

/// mmsg: a coalescing window ends at once when a mailbox letter arrives.
#[test]
fn a_coalescing_window_wakes_for_the_mailbox() {
    let opts = IoOptions {
        coalesce: Some(Duration::from_millis(800)),
        ..IoOptions::default()
    };
    let mut f = open_on_loopback(IoKind::Mmsg, &opts).unwrap();
    let s = peer();
    assert_eq!(earn_a_window(&mut f, &s), 1);
    // The next wait is a window; a letter 20 ms in must end it.
    let waker = Arc::clone(&f.waker);
    let th = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        waker.park();
        assert!(waker.wake_if_parked());
    });
    let t0 = Instant::now();
    let wake = f
        .backend
        .wait(Some(Duration::from_secs(2)), &mut |_| {})
        .unwrap();
    th.join().unwrap();
    assert_eq!(f.backend.stats().coalesce_waits, 1);
    assert!(wake.mailbox);
    assert!(
        t0.elapsed() < Duration::from_millis(400),
        "slept through the letter: {:?}",
        t0.elapsed()
    );
}

/// mmsg: a full send buffer (EAGAIN) drops the run, counted, without waiting for room.
#[test]
fn a_full_send_buffer_drops_counted_without_stalling() {
    let socket = bind_reuseport("127.0.0.1:0".parse().unwrap()).expect("bind");
    let waker = Arc::new(Waker::new().unwrap());
    let mut b = mmsg::MmsgBackend::new(vec![socket], waker, &IoOptions::default()).unwrap();
    // A datagram socket pair whose reader never reads: its queue fills, then sends get EAGAIN.
    let (tx, _rx) = std::os::unix::net::UnixDatagram::pair().unwrap();
    tx.set_nonblocking(true).unwrap();
    while tx.send(b"fill").is_ok() {}
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tx);
    let mut took = Duration::ZERO;
    for _ in 0..20 {
        took += b.flush_connected(fd, &[b"a", b"b", b"c"]);
    }
    let st = b.stats();
    assert_eq!(st.tx_dropped, 60, "{st:?}");
    assert_eq!(st.tx_datagrams, 0);
    assert!(took < Duration::from_millis(50), "20 runs took {took:?}");
}
