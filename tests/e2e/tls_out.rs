//! TLS out (issue 16): the binary, in a fresh network namespace (it feeds requests naming a
//! third party), with two shards, `listen = ["udp:…", "tls:…"]` and `[tls] peer_ca` naming the
//! device's certificate. A device registered over UDP with a `;transport=tls` Contact (a
//! test-side rustls server on its port, certificate with the 127.0.0.1 IP SAN) gets the INVITE
//! over a TLS connection sipfork opens (TLS Via, two Record-Routes), and its 486 reaches the
//! UDP caller; a `sips:` device whose certificate `peer_ca` does not name gets no request (the
//! handshake fails) and the caller gets 500 at once; requests naming a third party with
//! `sips:` or `;transport=tls` (Request-URI, Route) never make sipfork connect to it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{free_port, Appliance, Io, Scratch, Setup};
use crate::netns;
use crate::tcp::{answer, final_over_udp, invite, read_message, register_udp};
use crate::tls::write_certificate;

const TEST: &str = "tls_out::a_tls_contact_is_called_over_a_verified_connection_sipfork_opens";

/// A device at a fresh port: UDP for its REGISTER, a TCP listener for sipfork's connection,
/// and a certificate for 127.0.0.1 (PEM, and the server configuration presenting it).
struct Device {
    addr: SocketAddr,
    udp: UdpSocket,
    listener: TcpListener,
    pem: String,
    server: Arc<rustls::ServerConfig>,
}

fn device() -> Device {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let udp = UdpSocket::bind(addr).expect("device UDP port");
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let listener = TcpListener::bind(addr).expect("device TCP port");
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(c.key_pair.serialize_der().into());
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![c.cert.der().clone()], key)
        .unwrap();
    Device {
        addr,
        udp,
        listener,
        pem: c.cert.pem(),
        server: Arc::new(server),
    }
}

/// The connection sipfork opens to `listener`, waited for at most `within`.
fn accept_within(listener: &TcpListener, within: Duration) -> Option<TcpStream> {
    listener.set_nonblocking(true).unwrap();
    let until = Instant::now() + within;
    while Instant::now() < until {
        if let Ok((s, _)) = listener.accept() {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_tls_contact_is_called_over_a_verified_connection_sipfork_opens() {
    if !netns::inside() {
        netns::run_inside("tls-out", TEST, &[]);
        return;
    }
    let dir = Scratch::new("tls-out");
    write_certificate(&dir.0);
    let trusted = device();
    let untrusted = device();
    // peer_ca: the trusted device's certificate only.
    std::fs::write(dir.0.join("peer.pem"), &trusted.pem).unwrap();
    let mut setup = Setup {
        shards: 2,
        persist: false,
        tls: true,
        ..Setup::new(Io::Mmsg)
    };
    // The harness writes these extensions right after its [tls] cert and key.
    setup.auth = "none";
    setup.extensions = format!("peer_ca = \"peer.pem\"\n\n{}", setup.extensions);
    let app = Appliance::start(&dir.0, setup).expect("mmsg always starts");
    let third = TcpListener::bind("127.0.0.23:0").expect("bind the third party");
    let third_addr = third.local_addr().unwrap();

    // The trusted device registers over UDP naming TLS; a UDP caller rings it.
    let contact = format!("sip:1001@{};transport=tls", trusted.addr);
    let reg = register_udp(trusted.addr, app.sip, 1001, &contact);
    trusted.udp.send_to(reg.as_bytes(), app.sip).unwrap();
    let ok = final_over_udp(&trusted.udp);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let caller = udp.local_addr().unwrap();
    udp.send_to(
        invite("UDP", caller, app.sip, 1001, 1, 0).as_bytes(),
        app.sip,
    )
    .unwrap();
    let sock = accept_within(&trusted.listener, Duration::from_secs(5)).expect("sipfork connects");
    let session = rustls::ServerConnection::new(Arc::clone(&trusted.server)).unwrap();
    let mut tls = rustls::StreamOwned::new(session, sock);
    let mut pending = Vec::new();
    let got = read_message(&mut tls, &mut pending);
    assert!(got.starts_with(&format!("INVITE {contact} ")), "{got}");
    assert!(got.contains("Via: SIP/2.0/TLS "), "{got}");
    assert_eq!(
        got.matches("Record-Route:").count() + got.matches(">, <").count(),
        2,
        "{got}"
    );
    assert!(
        got.contains(&format!(":{};transport=tls;", app.tls.port())),
        "{got}"
    );
    tls.write_all(answer(&got, "486 Busy Here").as_bytes())
        .unwrap();
    tls.flush().unwrap();
    let fin = final_over_udp(&udp);
    assert!(fin.starts_with("SIP/2.0 486"), "{fin}");
    assert_eq!(app.metric_sum("sipfork_tcp_connects_total"), 1);

    // The untrusted device: a sips: Contact; its certificate is not in peer_ca.
    let contact = format!("sips:1002@{}", untrusted.addr);
    let reg = register_udp(untrusted.addr, app.sip, 1002, &contact);
    untrusted.udp.send_to(reg.as_bytes(), app.sip).unwrap();
    let ok = final_over_udp(&untrusted.udp);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let started = Instant::now();
    udp.send_to(
        invite("UDP", caller, app.sip, 1002, 2, 0).as_bytes(),
        app.sip,
    )
    .unwrap();
    let sock =
        accept_within(&untrusted.listener, Duration::from_secs(5)).expect("sipfork connects");
    let session = rustls::ServerConnection::new(Arc::clone(&untrusted.server)).unwrap();
    let mut tls = rustls::StreamOwned::new(session, sock);
    let mut plain = Vec::new();
    let read = tls.read_to_end(&mut plain);
    assert!(
        plain.is_empty(),
        "{read:?}: {:?}",
        String::from_utf8_lossy(&plain)
    );
    let fin = final_over_udp(&udp);
    assert!(fin.starts_with("SIP/2.0 5"), "{fin}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(app.metric_sum("sipfork_tcp_connect_failed_total") >= 1);
    assert!(app.metric_sum("sipfork_tcp_closed_tls_total") >= 1);

    // Requests naming the third party over TLS: answered 4xx, no connection to it.
    let to_third = invite("UDP", caller, app.sip, 1001, 3, 0).replacen(
        &format!("INVITE sip:1001@{} ", app.sip),
        &format!("INVITE sips:1001@{third_addr} "),
        1,
    );
    let tls_third = invite("UDP", caller, app.sip, 1001, 4, 0).replacen(
        &format!("INVITE sip:1001@{} ", app.sip),
        &format!("INVITE sip:1001@{third_addr};transport=tls "),
        1,
    );
    let routed = invite("UDP", caller, app.sip, 1003, 5, 0).replacen(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\nRoute: <sips:{third_addr};lr>\r\n"),
        1,
    );
    for req in [to_third, tls_third, routed] {
        udp.send_to(req.as_bytes(), app.sip).unwrap();
        let fin = final_over_udp(&udp);
        assert!(fin.starts_with("SIP/2.0 4"), "{fin}");
    }
    assert!(
        accept_within(&third, Duration::from_millis(300)).is_none(),
        "sipfork connected to the third party"
    );
    assert_eq!(app.metric_sum("sipfork_tcp_connects_total"), 2);
}
