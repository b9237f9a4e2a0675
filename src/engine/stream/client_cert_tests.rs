//! Client certificates through real shards: real rustls clients connect to a TLS listener built
//! from a `[tls]` with `ca` (the configuration the appliance builds), and every message reaches
//! the handler with the names of the certificate its connection presented (also when the
//! message is handed to the other shard), which `Config::trunk_of` turns into the trunk; a
//! connection without a certificate carries none, and one whose certificate another CA issued
//! is refused at the handshake and counted.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use super::tests::{connect, total, wait_for};
use crate::config::Config;
use crate::core::io::{Datagram, Inbound, Outbox};
use crate::core::shard::ShardId;
use crate::engine::io::IoKind;
use crate::engine::shard::Handler;
use crate::engine::{start, Engine, EngineConfig, Pinning};
use crate::time::Instant;

/// What a handler saw: its shard, the message's last byte, the certificate names, the trunk.
type Seen = Arc<Mutex<Vec<(u16, u8, Option<Vec<String>>, Option<String>)>>>;

/// Handles a message on the shard its last byte names (else hands it there), records what it
/// came with and answers `"<shard> <trunk or stranger>\n"` on its connection.
struct Recorder {
    me: ShardId,
    cfg: Arc<Config>,
    seen: Seen,
    outbox: Outbox,
    /// A renewal a control job handed over (a reload's), for the engine to take.
    renewal: Option<crate::engine::stream::TlsRenewal>,
}

impl Handler for Recorder {
    fn handle_datagram(&mut self, _now: Instant, d: Datagram<'_>) -> Inbound {
        let last = *d.bytes.last().unwrap();
        let owner = ShardId(u16::from(last - b'0'));
        if owner != self.me {
            return Inbound::ForShard(owner);
        }
        let names = d
            .peer_cert
            .map(|c| c.names().iter().map(|n| n.to_string()).collect());
        let trunk = self
            .cfg
            .trunk_of(d.from, d.transport, d.peer_cert.map(|c| &**c))
            .map(|t| String::from_utf8_lossy(t).into_owned());
        let answer = format!("{} {}\n", self.me.0, trunk.as_deref().unwrap_or("stranger"));
        self.seen
            .lock()
            .unwrap()
            .push((self.me.0, last, names, trunk));
        self.outbox.push(d.from, answer.as_bytes());
        Inbound::Handled
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn outbox(&mut self) -> &mut Outbox {
        &mut self.outbox
    }
    fn take_tls_renewal(&mut self) -> Option<crate::engine::stream::TlsRenewal> {
        self.renewal.take()
    }
}

/// A certificate (DER) and its key: a CA when `ca`, else a leaf for `names` (client use).
struct Issued {
    der: CertificateDer<'static>,
    pem: String,
    key: KeyPair,
    cert: rcgen::Certificate,
}

fn issue(names: &[&str], ca: bool, issuer: Option<&Issued>) -> Issued {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    if ca {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    } else {
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
    }
    let cert = match issuer {
        Some(i) => params.signed_by(&key, &i.cert, &i.key).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    Issued {
        der: cert.der().clone(),
        pem: cert.pem(),
        key,
        cert,
    }
}

/// A TLS client trusting `ca`, presenting `client` when given; handshake done.
fn client(
    addr: std::net::SocketAddr,
    ca: &Issued,
    client: Option<&Issued>,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![c.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(session, connect(addr));
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// A framed message whose last byte names the shard that is to handle it.
fn message(shard: u8) -> Vec<u8> {
    let mut m = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nContent-Length: 1\r\n\r\n".to_vec();
    m.push(b'0' + shard);
    m
}

/// Sends a message for each shard and reads the two answers (sorted).
fn ask(tls: &mut impl ReadWrite) -> Vec<String> {
    tls.write_all(&[message(0), message(1)].concat()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.iter().filter(|&&b| b == b'\n').count() < 2 {
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let mut lines: Vec<String> = String::from_utf8(got)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A fresh directory holding `ca.pem` and a server certificate it issued for 127.0.0.1
/// (`cert.pem`, `key.pem`); the CA.
fn certificate_dir(name: &str) -> (std::path::PathBuf, Issued) {
    let dir = std::env::temp_dir().join(format!("sipfork-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = issue(&[], true, None);
    let server = issue(&["127.0.0.1"], false, Some(&ca));
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.join("cert.pem"), &server.pem).unwrap();
    std::fs::write(dir.join("key.pem"), server.key.serialize_pem()).unwrap();
    (dir, ca)
}

/// A `[tls]` config with `ca` at `dir/ca_file` for the trunk of `pbx1.example.net`.
fn trunk_config(dir: &std::path::Path, ca_file: &str) -> Arc<Config> {
    Arc::new(
        Config::from_toml(&format!(
            "[server]\nlisten = [\"udp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]\n[auth]\nmode = \"none\"\n\
             [[extensions]]\nnumbers = \"3000\"\ntrunk = \"127.0.0.1:5090\"\ntrunk_certificate = \"pbx1.example.net\"\n\
             [tls]\ncert = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\nca = \"{0}/{ca_file}\"\n",
            dir.display()
        ))
        .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// Two shards of `kind` with a TLS listener of `cfg`'s `[tls]`, recording into `seen`; `None`
/// when the kernel has no io_uring.
fn start_recorders(kind: IoKind, cfg: &Arc<Config>, seen: &Seen) -> Option<Engine<Recorder>> {
    let engine_cfg = EngineConfig {
        io: kind,
        pinning: Pinning::Off,
        stream_listen: vec!["127.0.0.1:0".parse().unwrap()],
        stream_tls: vec![Some(Arc::clone(&cfg.tls.as_ref().unwrap().server))],
        ..EngineConfig::new("127.0.0.1:0".parse().unwrap(), 2)
    };
    let (c, s) = (Arc::clone(cfg), Arc::clone(seen));
    match start(engine_cfg, move |me, _| Recorder {
        me,
        cfg: Arc::clone(&c),
        seen: Arc::clone(&s),
        outbox: Outbox::new(),
        renewal: None,
    }) {
        Ok(e) => Some(e),
        Err(e @ crate::engine::EngineError::Backend { .. }) if kind == IoKind::Uring => {
            eprintln!("skipping the io_uring run: {e}");
            None
        }
        Err(e) => panic!("{kind:?}: {e}"),
    }
}

#[test]
fn a_renewal_with_another_ca_closes_the_connections_the_old_one_vouched_for() {
    let (dir, ca) = certificate_dir("ca-renewal");
    let pbx = issue(&["pbx1.example.net"], false, Some(&ca));
    let new_ca = issue(&[], true, None);
    let new_pbx = issue(&["pbx1.example.net"], false, Some(&new_ca));
    std::fs::write(dir.join("new-ca.pem"), &new_ca.pem).unwrap();
    let cfg = trunk_config(&dir, "ca.pem");
    let renewed = trunk_config(&dir, "new-ca.pem");
    let renewal = |cfg: &Config, ca_changed| crate::engine::stream::TlsRenewal {
        server: Arc::clone(&cfg.tls.as_ref().unwrap().server),
        client: None,
        names: Default::default(),
        ca_changed,
    };
    for kind in [IoKind::Mmsg, IoKind::Uring] {
        let Some(engine) = start_recorders(kind, &cfg, &Seen::default()) else {
            continue;
        };
        let addr = engine.stream_addrs()[0];
        let renew = |r: crate::engine::stream::TlsRenewal| {
            engine
                .controller()
                .ask_all(
                    move |h: &mut Recorder, _| h.renewal = Some(r.clone()),
                    std::time::Duration::from_secs(5),
                )
                .unwrap();
        };
        let mut trunk = client(addr, &ca, Some(&pbx));
        assert_eq!(ask(&mut trunk), ["0 3000", "1 3000"], "{kind:?}");
        let mut phone = client(addr, &ca, None);
        assert_eq!(ask(&mut phone), ["0 stranger", "1 stranger"], "{kind:?}");
        // A renewal with the same CA (a new server certificate, say) keeps both connections.
        renew(renewal(&cfg, false));
        assert_eq!(ask(&mut trunk), ["0 3000", "1 3000"], "{kind:?}");
        assert_eq!(total(&engine, |s| s.closed_ca_changed), 0, "{kind:?}");
        // Another CA: the trunk's connection closes, counted; the phone's (no certificate) stays.
        renew(renewal(&renewed, true));
        wait_for(&engine, 1, |s| s.closed_ca_changed);
        let mut buf = [0u8; 64];
        assert!(!matches!(trunk.read(&mut buf), Ok(n) if n > 0), "{kind:?}");
        assert_eq!(ask(&mut phone), ["0 stranger", "1 stranger"], "{kind:?}");
        // The old CA's certificate no longer gets in; the new CA's is the trunk.
        let mut old = client(addr, &ca, Some(&pbx));
        let _ = old.write_all(&message(0));
        assert!(!matches!(old.read(&mut buf), Ok(n) if n > 0), "{kind:?}");
        let mut again = client(addr, &ca, Some(&new_pbx));
        assert_eq!(ask(&mut again), ["0 3000", "1 3000"], "{kind:?}");
        assert_eq!(total(&engine, |s| s.closed_ca_changed), 1, "{kind:?}");
        engine.shutdown().unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_verified_certificates_names_reach_the_handler_on_every_shard() {
    let (dir, ca) = certificate_dir("client-cert");
    let pbx = issue(&["pbx1.example.net"], false, Some(&ca));
    let rogue_ca = issue(&[], true, None);
    let rogue = issue(&["pbx1.example.net"], false, Some(&rogue_ca));
    let cfg = trunk_config(&dir, "ca.pem");
    for kind in [IoKind::Mmsg, IoKind::Uring] {
        let seen: Seen = Arc::default();
        let Some(engine) = start_recorders(kind, &cfg, &seen) else {
            continue;
        };
        let addr = engine.stream_addrs()[0];
        // The trunk's certificate, from an address that is not the trunk's: both messages (one
        // of them handed to the other shard) carry its names, and it is the trunk.
        let mut trunk = client(addr, &ca, Some(&pbx));
        assert_eq!(ask(&mut trunk), ["0 3000", "1 3000"], "{kind:?}");
        let names = Some(vec!["pbx1.example.net".to_string()]);
        {
            let seen = seen.lock().unwrap();
            assert_eq!(seen.len(), 2, "{kind:?}");
            assert!(
                seen.iter().all(|(.., n, _)| *n == names),
                "{kind:?} {seen:?}"
            );
        }
        wait_for(&engine, 1, |s| s.client_cert_verified);
        // No client certificate (a phone): no names, a stranger.
        let mut phone = client(addr, &ca, None);
        assert_eq!(ask(&mut phone), ["0 stranger", "1 stranger"], "{kind:?}");
        assert!(seen.lock().unwrap()[2..]
            .iter()
            .all(|(.., n, t)| n.is_none() && t.is_none()));
        // A certificate with the trunk's name from another CA: the handshake is refused (with
        // TLS 1.3 the client learns it at its first read), nothing is delivered, it is counted.
        let mut forged = client(addr, &ca, Some(&rogue));
        let _ = forged.write_all(&message(0));
        let mut buf = [0u8; 64];
        assert!(!matches!(forged.read(&mut buf), Ok(n) if n > 0), "{kind:?}");
        wait_for(&engine, 1, |s| s.client_cert_refused);
        assert_eq!(total(&engine, |s| s.client_cert_verified), 1, "{kind:?}");
        assert_eq!(seen.lock().unwrap().len(), 4, "{kind:?}");
        engine.shutdown().unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
