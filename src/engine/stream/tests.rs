//! TCP through real shards (both backends) with the reflector as handler: a framed message comes
//! back on its own connection, pings get pongs, and each limit closes the connection and counts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::StreamOptions;
use crate::core::transport::framer::Limits;
use crate::engine::io::IoKind;
use crate::engine::shard::Reflector;
use crate::engine::{start, Engine, EngineConfig, EngineError, Pinning};

const OPTIONS: &[u8] = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK1\r\nContent-Length: 5\r\n\r\nhello";

fn engine(kind: IoKind, opts: StreamOptions) -> Option<Engine<Reflector>> {
    reflector(EngineConfig {
        io: kind,
        pinning: Pinning::Off,
        stream_listen: vec!["127.0.0.1:0".parse().unwrap()],
        stream_options: opts,
        ..EngineConfig::new("127.0.0.1:0".parse().unwrap(), 2)
    })
}

/// `cfg`'s shards running a reflector each (`None`: io_uring is not available here).
pub(super) fn reflector(cfg: EngineConfig) -> Option<Engine<Reflector>> {
    let kind = cfg.io;
    match start(cfg, |_, _| Reflector::new(1)) {
        Ok(e) => Some(e),
        Err(e @ EngineError::Backend { .. }) if kind == IoKind::Uring => {
            eprintln!("skipping the io_uring run: {e}");
            None
        }
        Err(e) => panic!("{kind:?}: {e}"),
    }
}

pub(super) fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads until the peer closes (true) or `want` bytes arrived (false).
pub(super) fn read_n(s: &mut TcpStream, want: usize) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(e) => panic!("read: {e}"),
        }
    }
    (got, false)
}

pub(super) fn total<H>(engine: &Engine<H>, f: impl Fn(&super::StreamStats) -> u64) -> u64 {
    engine.stats().iter().map(|s| f(&s.streams)).sum()
}

/// Waits (bounded) until a counter reaches `want` (the shards publish once per turn).
pub(super) fn wait_for<H>(engine: &Engine<H>, want: u64, f: impl Fn(&super::StreamStats) -> u64) {
    for _ in 0..200 {
        if total(engine, &f) >= want {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("counter stayed at {} (wanted {want})", total(engine, &f));
}

#[test]
fn messages_come_back_on_their_connection_split_or_pipelined() {
    for kind in [IoKind::Mmsg, IoKind::Uring] {
        let Some(engine) = engine(kind, StreamOptions::default()) else {
            continue;
        };
        let addr = engine.stream_addrs()[0];
        let mut conns: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
        for c in &mut conns {
            // Split mid-header, then two pipelined in one write.
            c.write_all(&OPTIONS[..20]).unwrap();
            std::thread::sleep(Duration::from_millis(5));
            c.write_all(&OPTIONS[20..]).unwrap();
            let two = [OPTIONS, OPTIONS].concat();
            c.write_all(&two).unwrap();
        }
        for c in &mut conns {
            let (got, closed) = read_n(c, 3 * OPTIONS.len());
            assert!(!closed, "{kind:?}");
            assert_eq!(got, [OPTIONS, OPTIONS, OPTIONS].concat(), "{kind:?}");
        }
        // A keep-alive ping gets its pong, on the same connection.
        conns[0].write_all(b"\r\n\r\n").unwrap();
        assert_eq!(read_n(&mut conns[0], 2).0, b"\r\n", "{kind:?}");
        wait_for(&engine, 4, |s| s.accepted);
        wait_for(&engine, 12, |s| s.messages);
        wait_for(&engine, 1, |s| s.pings);
        assert_eq!(total(&engine, |s| s.messages), 12);
        drop(conns);
        wait_for(&engine, 4, |s| s.closed_peer);
        engine.shutdown().unwrap();
    }
}

#[test]
fn limits_close_connections_and_count() {
    let opts = StreamOptions {
        limits: Limits {
            max_header: 256,
            max_body: 16,
            max_per_second: 500,
        },
        idle: Duration::from_millis(300),
        max_per_source: 3,
        ..StreamOptions::default()
    };
    let Some(engine) = engine(IoKind::Mmsg, opts) else {
        return;
    };
    let addr = engine.stream_addrs()[0];
    // Header block without its empty line past the limit.
    let mut c = connect(addr);
    c.write_all(&[b'A'; 300]).unwrap();
    assert!(read_n(&mut c, 1).1, "closed");
    wait_for(&engine, 1, |s| s.closed_oversize);
    // A body over the limit: closed as soon as the header is read.
    let mut c = connect(addr);
    c.write_all(b"MESSAGE sip:x SIP/2.0\r\nContent-Length: 17\r\n\r\n")
        .unwrap();
    assert!(read_n(&mut c, 1).1, "closed");
    wait_for(&engine, 2, |s| s.closed_oversize);
    // No Content-Length.
    let mut c = connect(addr);
    c.write_all(b"MESSAGE sip:x SIP/2.0\r\nVia: x\r\n\r\n")
        .unwrap();
    assert!(read_n(&mut c, 1).1, "closed");
    wait_for(&engine, 1, |s| s.closed_bad_framing);
    // More than 500 messages in a second on one connection: the first 500 are echoed.
    let mut c = connect(addr);
    c.write_all(&OPTIONS.repeat(501)).unwrap();
    let (got, closed) = read_n(&mut c, 501 * OPTIONS.len());
    assert!(closed);
    assert_eq!(got.len(), 500 * OPTIONS.len());
    wait_for(&engine, 1, |s| s.closed_over_limit);
    // Idle: closed after 300 ms without a message.
    let mut c = connect(addr);
    let t = std::time::Instant::now();
    assert!(read_n(&mut c, 1).1, "closed");
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    wait_for(&engine, 1, |s| s.closed_idle);
    // Three connections from one address per shard; with two shards at most six stay open.
    let held: Vec<TcpStream> = (0..8).map(|_| connect(addr)).collect();
    wait_for(&engine, 2, |s| s.refused_per_source);
    drop(held);
    engine.shutdown().unwrap();
}

/// A server configuration with a certificate generated for 127.0.0.1, and a client
/// configuration trusting only that certificate.
pub(super) fn tls_pair() -> (rustls::ServerConfig, std::sync::Arc<rustls::ClientConfig>) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let cert = CertificateDer::from(generated.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (server, std::sync::Arc::new(client))
}

#[test]
fn tls_messages_and_keepalives_come_back_encrypted_on_their_connection() {
    use rustls::pki_types::ServerName;
    use std::sync::Arc;

    let (server, client) = tls_pair();
    for kind in [IoKind::Mmsg, IoKind::Uring] {
        let cfg = EngineConfig {
            io: kind,
            pinning: Pinning::Off,
            stream_listen: vec!["127.0.0.1:0".parse().unwrap()],
            stream_tls: vec![Some(Arc::new(server.clone()))],
            ..EngineConfig::new("127.0.0.1:0".parse().unwrap(), 1)
        };
        let engine = match start(cfg, |_, _| Reflector::new(1)) {
            Ok(e) => e,
            Err(e @ EngineError::Backend { .. }) if kind == IoKind::Uring => {
                eprintln!("skipping the io_uring run: {e}");
                continue;
            }
            Err(e) => panic!("{kind:?}: {e}"),
        };
        let addr = engine.stream_addrs()[0];
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let session = rustls::ClientConnection::new(Arc::clone(&client), name).unwrap();
        let mut tls = rustls::StreamOwned::new(session, connect(addr));
        tls.write_all(&[OPTIONS, OPTIONS].concat()).unwrap();
        let mut got = vec![0u8; 2 * OPTIONS.len()];
        tls.read_exact(&mut got).unwrap();
        assert_eq!(got, [OPTIONS, OPTIONS].concat(), "{kind:?}");
        tls.write_all(b"\r\n\r\n").unwrap();
        let mut pong = [0u8; 2];
        tls.read_exact(&mut pong).unwrap();
        assert_eq!(&pong, b"\r\n", "{kind:?}");
        // Plain TCP on the TLS port is not a TLS record: closed and counted.
        let mut plain = connect(addr);
        plain.write_all(OPTIONS).unwrap();
        assert!(read_n(&mut plain, 1).1, "{kind:?}: closed");
        wait_for(&engine, 1, |s| s.closed_tls);
        wait_for(&engine, 2, |s| s.messages);
        engine.shutdown().unwrap();
    }
}
