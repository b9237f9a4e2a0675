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

/// Sends each UDP datagram to `target`; `marked`: with the connect mark for `transport`.
struct Dialer {
    outbox: Outbox,
    target: SocketAddr,
    marked: bool,
    transport: Transport,
    seen: Arc<Mutex<Seen>>,
    /// A renewal handed to the shard after its next control job (as a reload does).
    renewal: Option<super::TlsRenewal>,
}

impl Handler for Dialer {
    fn handle_datagram(&mut self, _now: Instant, d: Datagram<'_>) -> Inbound {
        if d.transport == Transport::Udp {
            self.outbox.push(self.target, d.bytes);
            if d.bytes.starts_with(b"UDP") {
                // Marked to stay on UDP although a connection with the target is open.
                self.outbox.keep_udp(self.outbox.len() - 1, self.target);
            } else if self.marked {
                self.outbox.connect_last(self.transport);
            }
        } else {
            let mut seen = self.seen.lock().unwrap();
            seen.messages.push((d.from, d.transport, d.bytes.to_vec()));
        }
        Inbound::Handled
    }

    fn flow_failed(&mut self, _now: Instant, peer: SocketAddr, transport: Transport) {
        assert_eq!(transport, self.transport);
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

    fn take_tls_renewal(&mut self) -> Option<super::TlsRenewal> {
        self.renewal.take()
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
    let cfg = EngineConfig {
        io: kind,
        pinning: Pinning::Off,
        stream_listen: vec!["127.0.0.1:0".parse().unwrap()],
        stream_options: opts,
        ..EngineConfig::new("127.0.0.1:0".parse().unwrap(), shards)
    };
    launch(cfg, target, marked, Transport::Tcp)
}

/// Starts `cfg`'s shards with a [`Dialer`] each (`None`: io_uring is not available here).
fn launch(
    cfg: EngineConfig,
    target: SocketAddr,
    marked: bool,
    transport: Transport,
) -> Option<(Engine<Dialer>, Arc<Mutex<Seen>>)> {
    let kind = cfg.io;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = Arc::clone(&seen);
    match start(cfg, move |_, _| Dialer {
        outbox: Outbox::new(),
        target,
        marked,
        transport,
        seen: Arc::clone(&shared),
        renewal: None,
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

// --- TLS out: the connection runs a rustls client session. ---

/// A certificate for `ip` (PEM) and its rustls forms.
struct Cert {
    pem: String,
    key_pem: String,
    der: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn cert_for(ip: &str) -> Cert {
    let c = rcgen::generate_simple_self_signed(vec![ip.into()]).unwrap();
    Cert {
        pem: c.cert.pem(),
        key_pem: c.key_pair.serialize_pem(),
        der: c.cert.der().clone(),
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(c.key_pair.serialize_der().into()),
    }
}

/// The rustls client configuration `[tls]` builds with `cert`/`key` = `ours` and `peer_ca` =
/// `trusted` (through the configuration loader, as the binary does).
fn client_config(name: &str, ours: &Cert, trusted: &Cert) -> Arc<rustls::ClientConfig> {
    configured(name, ours, trusted, "")
        .stream_tls_client
        .expect("a client configuration")
}

/// The engine settings of a configuration with `[tls]` as [`client_config`]'s and `more`
/// (routes, trunks) after it.
fn configured(name: &str, ours: &Cert, trusted: &Cert, more: &str) -> EngineConfig {
    let dir = std::env::temp_dir().join(format!("sipfork-tls-out-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), &ours.pem).unwrap();
    std::fs::write(dir.join("key.pem"), &ours.key_pem).unwrap();
    std::fs::write(dir.join("peer.pem"), &trusted.pem).unwrap();
    let toml = format!(
        "[server]\nlisten = [\"udp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]\n[auth]\nmode = \"none\"\n\
         [tls]\ncert = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\npeer_ca = \"{0}/peer.pem\"\n{more}",
        dir.display()
    );
    let cfg = crate::config::Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(cfg.tls.as_ref().expect("[tls]").connects());
    crate::app::engine_config(&cfg)
}

fn start_tls_dialer(
    kind: IoKind,
    shards: u16,
    target: SocketAddr,
    client: Option<Arc<rustls::ClientConfig>>,
    opts: StreamOptions,
) -> Option<(Engine<Dialer>, Arc<Mutex<Seen>>)> {
    let cfg = EngineConfig {
        io: kind,
        pinning: Pinning::Off,
        stream_listen: vec!["127.0.0.1:0".parse().unwrap()],
        stream_options: opts,
        stream_tls_client: client,
        ..EngineConfig::new("127.0.0.1:0".parse().unwrap(), shards)
    };
    launch(cfg, target, true, Transport::Tls)
}

/// A test-side listener and shards dialing it over TLS with `client`.
#[allow(clippy::type_complexity)]
fn tls_dialer_to_listener(
    kind: IoKind,
    shards: u16,
    client: &Arc<rustls::ClientConfig>,
) -> Option<(TcpListener, SocketAddr, Engine<Dialer>, Arc<Mutex<Seen>>)> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let (engine, seen) = start_tls_dialer(
        kind,
        shards,
        target,
        Some(Arc::clone(client)),
        StreamOptions::default(),
    )?;
    Some((listener, target, engine, seen))
}

/// A test-side TLS server presenting `cert`; asks for a client certificate chaining to
/// `client_ca` when given.
fn server_config(cert: &Cert, client_ca: Option<&Cert>) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(
        builder
            .with_single_cert(vec![cert.der.clone()], cert.key.clone_key())
            .unwrap(),
    )
}

/// The next connection on `listener`, served as TLS with `server` (5-s read timeout).
fn accept_tls(
    listener: &TcpListener,
    server: &Arc<rustls::ServerConfig>,
) -> rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    let (sock, _) = listener.accept().unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let session = rustls::ServerConnection::new(Arc::clone(server)).unwrap();
    rustls::StreamOwned::new(session, sock)
}

#[test]
fn a_tls_target_gets_a_verified_tls_connection_with_our_client_certificate() {
    let ours = cert_for("127.0.0.1");
    let theirs = cert_for("127.0.0.1");
    let client = client_config("ok", &ours, &theirs);
    // The server asks for a client certificate: mutual TLS with ours.
    let server = server_config(&theirs, Some(&ours));
    for (kind, shards) in [(IoKind::Mmsg, 1), (IoKind::Mmsg, 2), (IoKind::Uring, 2)] {
        let Some((listener, target, engine, seen)) = tls_dialer_to_listener(kind, shards, &client)
        else {
            continue;
        };
        poke(&engine, 1);
        let mut tls = accept_tls(&listener, &server);
        let mut got = vec![0u8; MSG.len()];
        tls.read_exact(&mut got).unwrap();
        assert_eq!(got, MSG, "{kind:?}");
        let presented = tls.conn.peer_certificates().expect("a client certificate");
        assert_eq!(presented[0], ours.der, "{kind:?}");
        // Later transmits, from either shard, take the same connection, encrypted.
        poke(&engine, 8);
        let mut more = vec![0u8; 8 * MSG.len()];
        tls.read_exact(&mut more).unwrap();
        assert_eq!(more, MSG.repeat(8));
        // The server's message comes back to the handler as TLS from its address.
        tls.write_all(MSG).unwrap();
        tls.flush().unwrap();
        wait_until("the answer", || !seen.lock().unwrap().messages.is_empty());
        let (src, transport, bytes) = seen.lock().unwrap().messages[0].clone();
        assert_eq!((src, transport, &bytes[..]), (target, Transport::Tls, MSG));
        assert_eq!(total(&engine, |s| s.connects), 1, "{kind:?} {shards}");
        assert_eq!(total(&engine, |s| s.connect_failed), 0);
        assert!(seen.lock().unwrap().failed.is_empty());
        engine.shutdown().unwrap();
    }
}

/// A test-side TLS server presenting `cert` to one connection: what it read before the
/// handshake ended (it fails: nothing is expected).
fn serve_once(listener: TcpListener, cert: &Cert) -> std::thread::JoinHandle<Vec<u8>> {
    let server = server_config(cert, None);
    std::thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let session = rustls::ServerConnection::new(server).unwrap();
        let mut tls = rustls::StreamOwned::new(session, sock);
        let mut got = Vec::new();
        let _ = tls.read_to_end(&mut got);
        got
    })
}

#[test]
fn an_untrusted_or_misnamed_server_certificate_fails_the_connect_and_gets_nothing() {
    let ours = cert_for("127.0.0.1");
    let trusted = cert_for("127.0.0.1");
    let client = client_config("bad", &ours, &trusted);
    // A certificate peer_ca does not name; a trusted one whose IP SAN names another address.
    let untrusted = cert_for("127.0.0.1");
    let elsewhere = cert_for("127.0.0.2");
    let trusts_elsewhere = client_config("misnamed", &ours, &elsewhere);
    for (kind, shards) in [(IoKind::Mmsg, 1), (IoKind::Mmsg, 2), (IoKind::Uring, 2)] {
        for (case, client, cert) in [
            ("untrusted", &client, &untrusted),
            ("misnamed", &trusts_elsewhere, &elsewhere),
        ] {
            let Some((listener, target, engine, seen)) =
                tls_dialer_to_listener(kind, shards, client)
            else {
                continue;
            };
            let server = serve_once(listener, cert);
            poke(&engine, 1);
            wait_until("the failure reports", || {
                seen.lock().unwrap().failed.len() == usize::from(shards)
            });
            assert!(seen.lock().unwrap().failed.iter().all(|&p| p == target));
            assert_eq!(total(&engine, |s| s.connect_failed), 1, "{kind:?} {case}");
            assert_eq!(total(&engine, |s| s.closed_tls), 1, "{kind:?} {case}");
            assert!(seen.lock().unwrap().messages.is_empty());
            engine.shutdown().unwrap();
            assert!(
                server.join().unwrap().is_empty(),
                "{kind:?} {case}: data sent"
            );
        }
    }
}

#[test]
fn without_a_client_configuration_a_tls_transmit_fails_and_connects_nowhere() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let Some((engine, seen)) =
        start_tls_dialer(IoKind::Mmsg, 1, target, None, StreamOptions::default())
    else {
        return;
    };
    poke(&engine, 1);
    wait_until("the refusal", || seen.lock().unwrap().failed.len() == 1);
    assert_eq!(total(&engine, |s| s.refused_outbound), 1);
    assert_eq!(total(&engine, |s| s.connects), 0);
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "a connection was opened");
    engine.shutdown().unwrap();
}

#[test]
fn a_handshake_the_server_never_answers_fails_at_the_connect_timeout() {
    let ours = cert_for("127.0.0.1");
    let client = client_config("silent", &ours, &ours);
    // Accepted by the kernel, never read: the TCP connect succeeds, the handshake hangs.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let opts = StreamOptions {
        connect_timeout: Duration::from_millis(1500),
        ..StreamOptions::default()
    };
    let Some((engine, seen)) = start_tls_dialer(IoKind::Mmsg, 1, target, Some(client), opts) else {
        return;
    };
    let started = std::time::Instant::now();
    poke(&engine, 1);
    wait_until("the connect", || total(&engine, |s| s.connects) == 1);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        seen.lock().unwrap().failed.is_empty(),
        "failed before its timeout"
    );
    wait_until("the timeout", || seen.lock().unwrap().failed.len() == 1);
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(total(&engine, |s| s.connect_failed), 1);
    engine.shutdown().unwrap();
    drop(listener);
}

/// A transmit marked for TLS to an address whose only connection is a plain TCP one accepted by
/// the shards (on this shard or another, which the sending shard's core may not know of) never
/// goes over it (RFC 3261 §26.2.2, RFC 5630): it fails like a refused connect, reported to
/// every shard, and the plain peer reads nothing.
#[test]
fn a_tls_transmit_never_takes_a_plain_connection_to_its_address() {
    for (kind, shards) in [(IoKind::Mmsg, 1), (IoKind::Mmsg, 2), (IoKind::Uring, 2)] {
        // The peer's address, known before it connects: it is the TLS target.
        let target = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let (ours, theirs) = (cert_for("127.0.0.1"), cert_for("127.0.0.1"));
        let client = client_config("plain-peer", &ours, &theirs);
        let Some((engine, seen)) =
            start_tls_dialer(kind, shards, target, Some(client), StreamOptions::default())
        else {
            continue;
        };
        // The peer connects in over plain TCP from the target address.
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_reuse_address(true).unwrap();
        sock.bind(&target.into()).unwrap();
        sock.connect(&engine.stream_addrs()[0].into()).unwrap();
        let mut plain: TcpStream = sock.into();
        wait_until("the accept", || total(&engine, |s| s.accepted) == 1);
        poke(&engine, 4);
        wait_until("the refusals", || {
            seen.lock().unwrap().failed.len() >= usize::from(shards)
        });
        assert!(seen.lock().unwrap().failed.iter().all(|&p| p == target));
        assert_eq!(total(&engine, |s| s.sent), 0, "{kind:?} {shards}");
        assert_eq!(total(&engine, |s| s.relayed), 0, "{kind:?} {shards}");
        assert_eq!(total(&engine, |s| s.connects), 0, "{kind:?} {shards}");
        plain.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert!(
            matches!(plain.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{kind:?} {shards}: the plain peer was written to"
        );
        engine.shutdown().unwrap();
    }
}

/// A TLS next hop configured by host name (`sip:localhost:PORT;transport=tls`) is verified
/// against that name, which is sent as SNI: a certificate naming only `localhost` (no IP
/// address) passes. Written by IP address, the same certificate fails and nothing is sent.
#[test]
fn a_next_hop_named_by_host_verifies_that_name_and_sends_it_as_sni() {
    let ours = cert_for("127.0.0.1");
    let theirs = cert_for("localhost");
    for (kind, shards) in [(IoKind::Mmsg, 1), (IoKind::Mmsg, 2), (IoKind::Uring, 2)] {
        for by_name in [true, false] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let target = listener.local_addr().unwrap();
            let host = if by_name { "localhost" } else { "127.0.0.1" };
            let route = format!(
                "[[routes]]\nprefix = \"\"\nnext_hop = \"sip:{host}:{};transport=tls\"\n",
                target.port()
            );
            let from_config = configured("named", &ours, &theirs, &route);
            assert_eq!(from_config.stream_tls_names.len(), usize::from(by_name));
            let cfg = EngineConfig {
                io: kind,
                pinning: Pinning::Off,
                stream_listen: vec!["127.0.0.1:0".parse().unwrap()],
                ..EngineConfig::new("127.0.0.1:0".parse().unwrap(), shards)
            };
            let cfg = EngineConfig {
                stream_tls_client: from_config.stream_tls_client,
                stream_tls_names: from_config.stream_tls_names,
                ..cfg
            };
            let Some((engine, seen)) = launch(cfg, target, true, Transport::Tls) else {
                continue;
            };
            poke(&engine, 1);
            let mut tls = accept_tls(&listener, &server_config(&theirs, None));
            let mut got = vec![0u8; MSG.len()];
            let read = tls.read_exact(&mut got);
            if by_name {
                read.unwrap();
                assert_eq!(got, MSG, "{kind:?}");
                assert_eq!(tls.conn.server_name(), Some("localhost"), "{kind:?}");
                assert!(seen.lock().unwrap().failed.is_empty());
            } else {
                assert!(
                    read.is_err(),
                    "{kind:?}: verified against an IP it does not name"
                );
                wait_until("the failure reports", || {
                    seen.lock().unwrap().failed.len() == usize::from(shards)
                });
                assert_eq!(total(&engine, |s| s.closed_tls), 1, "{kind:?}");
            }
            engine.shutdown().unwrap();
        }
    }
}

/// RFC 5922 §7.2 toward a peer named by host name: its certificate must carry that exact name as
/// a `dNSName`; a wildcard (`*.example.net`), which rustls' own check accepts, or another name
/// fails the handshake and nothing is sent.
#[test]
fn a_named_peer_needs_its_exact_name_not_a_wildcard() {
    let ours = cert_for("127.0.0.1");
    for (cert_name, passes) in [
        ("sbc.example.net", true),
        ("*.example.net", false),
        ("other.example.net", false),
    ] {
        let theirs = cert_for(cert_name);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let client = configured("exact", &ours, &theirs, "").stream_tls_client;
        let names = [(
            target,
            rustls::pki_types::ServerName::try_from("sbc.example.net").unwrap(),
        )];
        let cfg = EngineConfig {
            io: IoKind::Mmsg,
            pinning: Pinning::Off,
            stream_listen: vec!["127.0.0.1:0".parse().unwrap()],
            stream_tls_client: client,
            stream_tls_names: Arc::new(names.into_iter().collect()),
            ..EngineConfig::new("127.0.0.1:0".parse().unwrap(), 1)
        };
        let (engine, seen) = launch(cfg, target, true, Transport::Tls).expect("mmsg");
        poke(&engine, 1);
        let mut tls = accept_tls(&listener, &server_config(&theirs, None));
        let mut got = vec![0u8; MSG.len()];
        let read = tls.read_exact(&mut got);
        if passes {
            read.unwrap();
            assert_eq!(got, MSG);
            assert_eq!(tls.conn.server_name(), Some("sbc.example.net"));
        } else {
            assert!(read.is_err(), "{cert_name}: accepted");
            wait_until("the failure report", || {
                seen.lock().unwrap().failed.len() == 1
            });
            assert_eq!(total(&engine, |s| s.closed_tls), 1, "{cert_name}");
        }
        engine.shutdown().unwrap();
    }
}

/// A reload that renames a TLS peer reaches the shard: connections opened after the renewal
/// verify (and send as SNI) the new name; before it the old name fails against the certificate.
#[test]
fn a_renewal_hands_the_new_peer_names_to_the_next_connection() {
    let ours = cert_for("127.0.0.1");
    let theirs = cert_for("second.example.net");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let client = configured("renamed", &ours, &theirs, "").stream_tls_client;
    let named = |name: &str| -> super::TlsPeerNames {
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        Arc::new([(target, name)].into_iter().collect())
    };
    let cfg = EngineConfig {
        io: IoKind::Mmsg,
        pinning: Pinning::Off,
        stream_listen: vec!["127.0.0.1:0".parse().unwrap()],
        stream_tls_client: client.clone(),
        stream_tls_names: named("first.example.net"),
        ..EngineConfig::new("127.0.0.1:0".parse().unwrap(), 1)
    };
    let (engine, seen) = launch(cfg, target, true, Transport::Tls).expect("mmsg");
    let server = server_config(&theirs, None);
    poke(&engine, 1);
    let mut first = accept_tls(&listener, &server);
    let mut got = vec![0u8; MSG.len()];
    assert!(first.read_exact(&mut got).is_err(), "the old name passed");
    wait_until("the failure report", || {
        seen.lock().unwrap().failed.len() == 1
    });
    let renewal = super::TlsRenewal {
        server: Arc::clone(&server),
        client,
        names: named("second.example.net"),
        ca_changed: false,
    };
    engine
        .controller()
        .ask(crate::core::shard::ShardId(0), move |h: &mut Dialer, _| {
            h.renewal = Some(renewal)
        })
        .unwrap()
        .wait(Duration::from_secs(5))
        .unwrap();
    poke(&engine, 1);
    let mut second = accept_tls(&listener, &server);
    second.read_exact(&mut got).unwrap();
    assert_eq!(got, MSG);
    assert_eq!(second.conn.server_name(), Some("second.example.net"));
    engine.shutdown().unwrap();
}
