//! A trunk recognised by its TLS client certificate, through the real binary (digest on,
//! `[tls] ca`, trunk 3000 with `trunk_certificate = "pbx1.example.net"` and a configured
//! address nothing listens on): a PBX presenting a certificate for that name issued by the CA
//! calls the carrier next hop from its own (ephemeral) address and the call goes out with the
//! trunk's P-Asserted-Identity, unchallenged; a connection without a certificate gets 407 for
//! the same INVITE; a certificate with the trunk's name from another CA is refused at the
//! handshake. `/metrics` counts one verified and one refused client certificate.
//!
//! Forged identities go to a running proxy, so the test runs in a fresh network namespace with
//! only loopback (skipped with a printed reason without root).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use crate::harness::{Appliance, Io, Scratch, Setup};
use crate::netns;
use crate::tcp::read_message;
use crate::tls::{write_certificate, Tls};

const TEST_NAME: &str = "tls_trunk::a_trunk_is_recognised_by_its_client_certificate";

#[test]
fn a_trunk_is_recognised_by_its_client_certificate() {
    if netns::inside() {
        return in_namespace();
    }
    netns::run_inside("tls-trunk", TEST_NAME, &[]);
}

/// A certificate and its key (a CA when `ca`, else a client leaf for `name`).
struct Issued {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn issue(name: Option<&str>, issuer: Option<&Issued>) -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(name.map(String::from).into_iter().collect::<Vec<_>>()).unwrap();
    match name {
        None => params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained),
        Some(_) => params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth],
    }
    let cert = match issuer {
        Some(i) => params.signed_by(&key, &i.cert, &i.key).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    Issued { cert, key }
}

/// Connects to `addr` trusting `server`, presenting `client` when given. The handshake's end
/// as the client sees it (with TLS 1.3 a refused client certificate shows at the first read).
fn connect(addr: SocketAddr, server: &CertificateDer<'static>, client: Option<&Issued>) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.clone()).unwrap();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![c.cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(session, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// An INVITE from the PBX (From: the trunk's number) to the carrier number.
fn invite(local: SocketAddr, server: SocketAddr, n: u32) -> String {
    format!(
        "INVITE sip:0049301234@{server} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-trunk-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:3000@{server}>;tag=pbx{n}\r\nTo: <sip:0049301234@{server}>\r\n\
         Call-ID: trunk-{n}@e2e\r\nCSeq: 1 INVITE\r\nContact: <sip:3000@{local};transport=tls>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The first final response on `tls` (provisional ones skipped).
fn final_response(tls: &mut Tls) -> String {
    let mut pending = Vec::new();
    loop {
        let m = read_message(tls, &mut pending);
        if !m.starts_with("SIP/2.0 1") {
            return m;
        }
    }
}

fn in_namespace() {
    let dir = Scratch::new("tls-trunk");
    let server_cert = write_certificate(&dir.0);
    let ca = issue(None, None);
    std::fs::write(dir.0.join("ca.pem"), ca.cert.pem()).unwrap();
    let pbx = issue(Some("pbx1.example.net"), Some(&ca));
    let rogue_ca = issue(None, None);
    let rogue = issue(Some("pbx1.example.net"), Some(&rogue_ca));
    let carrier = UdpSocket::bind("127.0.0.1:0").unwrap();
    carrier
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let hop = carrier.local_addr().unwrap();
    let setup = Setup {
        shards: 2,
        persist: false,
        tls: true,
        auth: "digest",
        // The extensions follow `[tls]` in the generated file: its first line is a `[tls]` key.
        extensions: format!(
            "ca = \"ca.pem\"\n\
             [[extensions]]\nnumbers = \"1000-1999\"\npassword = \"pw-{{number}}\"\n\
             [[extensions]]\nnumbers = \"3000\"\ntrunk = \"127.0.0.1:9\"\n\
             trunk_certificate = \"pbx1.example.net\"\n\
             [[routes]]\nprefix = \"00\"\nnext_hop = \"sip:{hop}\"\n"
        ),
        ..Setup::new(Io::Mmsg)
    };
    let Some(app) = Appliance::start(&dir.0, setup) else {
        return;
    };

    // The PBX with its certificate, from an address that is not the trunk's.
    let mut trunk = connect(app.tls, &server_cert, Some(&pbx));
    let local = trunk.sock.local_addr().unwrap();
    trunk
        .write_all(invite(local, app.sip, 1).as_bytes())
        .unwrap();
    let mut buf = [0u8; 65536];
    let n = carrier
        .recv(&mut buf)
        .expect("the INVITE reaches the carrier");
    let out = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(out.starts_with("INVITE sip:0049301234@"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("P-Asserted-Identity: <sip:3000@")),
        "{out}\n{}",
        app.log()
    );

    // The same INVITE over a connection without a certificate: a stranger, challenged.
    let mut stranger = connect(app.tls, &server_cert, None);
    let local = stranger.sock.local_addr().unwrap();
    stranger
        .write_all(invite(local, app.sip, 2).as_bytes())
        .unwrap();
    let answer = final_response(&mut stranger);
    assert!(answer.starts_with("SIP/2.0 407"), "{answer}");

    // The trunk's name in a certificate from another CA: refused at the handshake.
    let mut forged = connect(app.tls, &server_cert, Some(&rogue));
    let local = forged.sock.local_addr().unwrap();
    let _ = forged.write_all(invite(local, app.sip, 3).as_bytes());
    let mut byte = [0u8; 1];
    assert!(!matches!(forged.read(&mut byte), Ok(1)), "forged: answered");

    carrier
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while let Ok(n) = carrier.recv(&mut buf) {
        let m = String::from_utf8_lossy(&buf[..n]);
        assert!(
            !m.contains("Call-ID: trunk-2@") && !m.contains("Call-ID: trunk-3@"),
            "{m}"
        );
    }
    assert_eq!(app.metric_sum("sipfork_tcp_client_cert_verified_total"), 1);
    assert_eq!(app.metric_sum("sipfork_tcp_client_cert_refused_total"), 1);
}
