//! Connections the shards open themselves, through real shards (both backends, one and two
//! shards) with a test handler that sends every UDP datagram on to a test-side TCP listener
//! marked [`Transmit::connect`](crate::core::io::Transmit::connect): the connection is opened,
//! the bytes queued until it is up, answers on it come back to the handler as TCP messages from
//! the listener's address, later transmits (from either shard) reuse it; a refused or
//! timed-out connect and one over `max_outbound` are reported to every shard's handler and
//! counted; and a transmit without the mark never connects.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{StreamOptions, StreamStats};
use crate::core::io::{Datagram, Inbound, Outbox};
use crate::core::transport::Transport;
use crate::engine::io::IoKind;
use crate::engine::shard::Handler;
use crate::engine::{start, Engine, EngineConfig, EngineError, Pinning};
use crate::time::Instant;

/// What the handlers saw, shared with the test.
#[derive(Default)]
struct Seen {
    /// Messages that came over a connection: source, transport, bytes.
    messages: Vec<(SocketAddr, Transport, Vec<u8>)>,
    /// `flow_failed` reports (shard handler index is not kept: every shard is told).
    failed: Vec<SocketAddr>,
    /// A turn ended with its outbox not cleared (everything in it had gone over a connection,
    /// and the arena kept it).
    stale_outbox: bool,
}

/// Sends each UDP datagram to `target`; `marked`: with the connect mark.
struct Dialer {
    outbox: Outbox,
    target: SocketAddr,
    marked: bool,
    seen: Arc<Mutex<Seen>>,
}

impl Handler for Dialer {
    fn handle_datagram(&mut self, _now: Instant, d: Datagram<'_>) -> Inbound {
        if d.transport == Transport::Udp {
            self.outbox.push(self.target, d.bytes);
            if d.bytes.starts_with(b"UDP") {
                // Marked to stay on UDP although a connection with the target is open.
                self.outbox.keep_udp(self.outbox.len() - 1, self.target);
            } else if self.marked {
                self.outbox.connect_last(Transport::Tcp);
            }
        } else {
            let mut seen = self.seen.lock().unwrap();
            seen.messages.push((d.from, d.transport, d.bytes.to_vec()));
        }
        Inbound::Handled
    }

    fn flow_failed(&mut self, _now: Instant, peer: SocketAddr, transport: Transport) {
        assert_eq!(transport, Transport::Tcp);
        self.seen.lock().unwrap().failed.push(peer);
    }

    fn observe_load(&mut self, _now: Instant, _worked: std::time::Duration, _handled: u64) {
        // Called at the end of every turn, after the sends.
        if self.outbox.wants_connect() {
            self.seen.lock().unwrap().stale_outbox = true;
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }
}

const MSG: &[u8] = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK1\r\nContent-Length: 2\r\n\r\nhi";

fn start_dialer(
    kind: IoKind,
    shards: u16,
    opts: StreamOptions,
    target: SocketAddr,
    marked: bool,
) -> Option<(Engine<Dialer>, Arc<Mutex<Seen>>)> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let cfg = EngineConfig {
        io: kind,
        pinning: Pinning::Off,
        stream_listen: vec!["127.0.0.1:0".parse().unwrap()],
        stream_options: opts,
        ..EngineConfig::new("127.0.0.1:0".parse().unwrap(), shards)
    };
    let shared = Arc::clone(&seen);
    match start(cfg, move |_, _| Dialer {
        outbox: Outbox::new(),
        target,
        marked,
        seen: Arc::clone(&shared),
    }) {
        Ok(e) => Some((e, seen)),
        Err(e @ EngineError::Backend { .. }) if kind == IoKind::Uring => {
            eprintln!("skipping the io_uring run: {e}");
            None
        }
        Err(e) => panic!("{kind:?}: {e}"),
    }
}

fn total(engine: &Engine<Dialer>, f: impl Fn(&StreamStats) -> u64) -> u64 {
    engine.stats().iter().map(|s| f(&s.streams)).sum()
}

/// Waits (bounded, 5 s) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

/// Sends `MSG` to the engine's UDP address from `n` sockets (the kernel spreads them over the
/// shards).
fn poke(engine: &Engine<Dialer>, n: usize) {
    let udp = engine.local_addrs()[0];
    for _ in 0..n {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(MSG, udp).unwrap();
    }
}

fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    s.read_exact(&mut got).unwrap();
    got
}

#[test]
fn a_marked_transmit_opens_one_connection_which_later_transmits_and_answers_use() {
    for (kind, shards) in [(IoKind::Mmsg, 1), (IoKind::Mmsg, 2), (IoKind::Uring, 2)] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let Some((engine, seen)) =
            start_dialer(kind, shards, StreamOptions::default(), target, true)
        else {
            continue;
        };
        poke(&engine, 1);
        let (mut conn, from) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(read_exactly(&mut conn, MSG.len()), MSG, "{kind:?}");
        // Later datagrams, whichever shard takes them, go over the same connection.
        poke(&engine, 8);
        assert_eq!(read_exactly(&mut conn, 8 * MSG.len()), MSG.repeat(8));
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "{kind:?}: a second connection");
        // One marked to stay on UDP goes to the target's UDP port, not over the connection.
        let target_udp = UdpSocket::bind(target).unwrap();
        target_udp
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(b"UDP answer", engine.local_addrs()[0])
            .unwrap();
        let mut buf = [0u8; 64];
        let n = target_udp.recv(&mut buf).expect("over UDP");
        assert_eq!(&buf[..n], b"UDP answer");
        // What the peer sends on it reaches the handler as TCP from the peer's address.
        conn.write_all(MSG).unwrap();
        wait_until("the answer", || !seen.lock().unwrap().messages.is_empty());
        let (src, transport, bytes) = seen.lock().unwrap().messages[0].clone();
        assert_eq!((src, transport, &bytes[..]), (target, Transport::Tcp, MSG));
        assert_eq!(total(&engine, |s| s.connects), 1, "{kind:?} {shards}");
        assert_eq!(total(&engine, |s| s.sent), 9, "{kind:?} {shards}");
        assert_eq!(from.ip(), target.ip());
        // The peer closes: the connection is gone; the next datagram opens a new one.
        drop(conn);
        wait_until("the close", || total(&engine, |s| s.closed_peer) == 1);
        poke(&engine, 1);
        listener.set_nonblocking(false).unwrap();
        let (mut again, _) = listener.accept().unwrap();
        again
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(read_exactly(&mut again, MSG.len()), MSG);
        assert_eq!(total(&engine, |s| s.connects), 2);
        assert!(seen.lock().unwrap().failed.is_empty());
        assert!(
            !seen.lock().unwrap().stale_outbox,
            "{kind:?}: an outbox left uncleared"
        );
        engine.shutdown().unwrap();
    }
}

#[test]
fn a_refused_connect_is_reported_to_every_shard_and_counted() {
    for (kind, shards) in [(IoKind::Mmsg, 1), (IoKind::Mmsg, 2), (IoKind::Uring, 2)] {
        // A port nothing listens on.
        let target = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let Some((engine, seen)) =
            start_dialer(kind, shards, StreamOptions::default(), target, true)
        else {
            continue;
        };
        poke(&engine, 1);
        wait_until("the failure reports", || {
            seen.lock().unwrap().failed.len() == usize::from(shards)
        });
        assert!(seen.lock().unwrap().failed.iter().all(|&p| p == target));
        assert_eq!(total(&engine, |s| s.connect_failed), 1, "{kind:?}");
        assert_eq!(total(&engine, |s| s.connects), 1);
        engine.shutdown().unwrap();
    }
}

#[test]
fn a_connect_that_hangs_fails_at_its_timeout_and_the_cap_refuses_more() {
    // A listener whose backlog is full: the kernel drops further SYNs, the connect hangs.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let full: TcpListener = socket.into();
    let target = full.local_addr().unwrap();
    let fillers: Vec<TcpStream> = (0..2)
        .filter_map(|_| TcpStream::connect_timeout(&target, Duration::from_millis(300)).ok())
        .collect();
    assert!(!fillers.is_empty());
    let opts = StreamOptions {
        connect_timeout: Duration::from_millis(2000),
        // Shorter than the connect timeout: a connection still connecting is not idle.
        idle: Duration::from_millis(100),
        max_outbound: 1,
        ..StreamOptions::default()
    };
    let Some((engine, seen)) = start_dialer(IoKind::Mmsg, 1, opts, target, true) else {
        return;
    };
    poke(&engine, 1);
    wait_until("the connect", || total(&engine, |s| s.connects) == 1);
    // Past the first idle sweep (1 s): still connecting, neither failed nor closed as idle.
    std::thread::sleep(Duration::from_millis(1300));
    assert!(
        seen.lock().unwrap().failed.is_empty(),
        "failed before its timeout"
    );
    assert_eq!(total(&engine, |s| s.closed_idle), 0);
    wait_until("the timeout", || seen.lock().unwrap().failed.len() == 1);
    assert_eq!(total(&engine, |s| s.connect_failed), 1);
    assert_eq!(total(&engine, |s| s.closed_idle), 0);
    engine.shutdown().unwrap();

    // max_outbound = 0: nothing is opened, the failure is reported at once.
    let opts = StreamOptions {
        max_outbound: 0,
        ..StreamOptions::default()
    };
    let Some((engine, seen)) = start_dialer(IoKind::Mmsg, 1, opts, target, true) else {
        return;
    };
    poke(&engine, 1);
    wait_until("the refusal", || seen.lock().unwrap().failed.len() == 1);
    assert_eq!(total(&engine, |s| s.refused_outbound), 1);
    assert_eq!(total(&engine, |s| s.connects), 0);
    engine.shutdown().unwrap();
    drop(fillers);
}

#[test]
fn an_unmarked_transmit_never_connects() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let Some((engine, seen)) =
        start_dialer(IoKind::Mmsg, 2, StreamOptions::default(), target, false)
    else {
        return;
    };
    poke(&engine, 4);
    std::thread::sleep(Duration::from_millis(300));
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "a connection was opened");
    assert_eq!(total(&engine, |s| s.connects), 0);
    assert!(seen.lock().unwrap().failed.is_empty());
    engine.shutdown().unwrap();
}
