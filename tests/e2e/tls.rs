//! TLS beside UDP (`listen = ["udp:…", "tls:…"]`, `[tls]` with a certificate the test generates
//! for 127.0.0.1). A rustls client that trusts only that certificate registers over TLS beside a
//! UDP device of the same extension; a UDP caller's INVITE rings both, the UDP device answers and
//! the TLS device gets its CANCEL and the ACK of its 487 on its own connection. Then the
//! certificate files are replaced and SIGHUP reloads: new connections get the new certificate
//! (on both shards; one that trusts only the old one fails its handshake), the open connection
//! keeps its session and is still called; a broken renewal is refused and the renewed
//! certificate stays.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};

use crate::harness::{Appliance, Io, Scratch, Setup};
use crate::tcp::{answer, final_over_udp, invite, options, read_message, register};

/// A client TLS session over TCP.
pub(crate) type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Writes a fresh self-signed certificate for 127.0.0.1 and its key as `cert.pem` and `key.pem`
/// in `dir` (the appliance's `[tls]`); returns the certificate.
pub(crate) fn write_certificate(dir: &Path) -> CertificateDer<'static> {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), c.key_pair.serialize_pem()).unwrap();
    c.cert.der().clone()
}

/// Connects to `addr` trusting only `trusted` and completes the handshake (an error when the
/// server presents another certificate).
pub(crate) fn connect(addr: SocketAddr, trusted: &CertificateDer<'static>) -> std::io::Result<Tls> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(session, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// The certificate the server presented.
fn presented(tls: &Tls) -> CertificateDer<'static> {
    tls.conn.peer_certificates().expect("a server certificate")[0].clone()
}

/// The next message on a UDP socket whose first line starts with `start`.
fn udp_message(sock: &UdpSocket, start: &str) -> String {
    let mut buf = [0u8; 65536];
    loop {
        let n = sock.recv(&mut buf).expect("a message over UDP");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with(start) {
            return text;
        }
    }
}

/// The next message on a connection whose first line starts with `start`.
fn tls_message(tls: &mut Tls, pending: &mut Vec<u8>, start: &str) -> String {
    eprintln!("waiting for {start:?} over TLS");
    loop {
        let m = read_message(tls, pending);
        if m.starts_with(start) {
            return m;
        }
    }
}

fn with_contact(response: String, contact: SocketAddr) -> String {
    response.replace(
        "Content-Length: 0\r\n",
        &format!("Contact: <sip:1001@{contact}>\r\nContent-Length: 0\r\n"),
    )
}

#[test]
fn tls_device_forked_to_and_certificate_renewed_on_reload() {
    for io in [Io::Mmsg, Io::Uring] {
        let dir = Scratch::new(&format!("tls-reload-{}", io.metric_name()));
        let first = write_certificate(&dir.0);
        let setup = Setup {
            shards: 2,
            persist: false,
            tls: true,
            ..Setup::new(io)
        };
        if let Some(app) = Appliance::start(&dir.0, setup) {
            fork_and_renew(&app, &dir.0, first);
        }
    }
}

/// A TLS device of 1001 (trusting `first`, the running certificate) and a UDP device are rung;
/// then the certificate is renewed, and a broken renewal refused.
fn fork_and_renew(app: &Appliance, dir: &Path, first: CertificateDer<'static>) {
    // The TLS device: the handshake verifies the generated certificate for 127.0.0.1.
    let mut dev = connect(app.tls, &first).expect("handshake with the configured certificate");
    assert_eq!(presented(&dev), first);
    let mut pending = Vec::new();
    let local = dev.sock.local_addr().unwrap();
    let reg = register(local, app.sip, 1001)
        .replace("SIP/2.0/TCP", "SIP/2.0/TLS")
        .replace(";transport=tcp", ";transport=tls");
    dev.write_all(reg.as_bytes()).unwrap();
    let ok = tls_message(&mut dev, &mut pending, "SIP/2.0 ");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    // The UDP device of the same extension.
    let udp_dev = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp_dev
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let udp_local = udp_dev.local_addr().unwrap();
    let reg = register(udp_local, app.sip, 1001)
        .replace("SIP/2.0/TCP", "SIP/2.0/UDP")
        .replace(";transport=tcp", "")
        .replace("Call-ID: reg-", "Call-ID: reg-udp-");
    udp_dev.send_to(reg.as_bytes(), app.sip).unwrap();
    let ok = udp_message(&udp_dev, "SIP/2.0 ");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    let devices = app.get_ok("/extensions/1001/devices");
    assert!(
        devices.contains("TLS") && devices.contains("UDP"),
        "{devices}"
    );

    // A UDP caller: both devices ring, each over its own transport.
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    caller
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let caller_addr = caller.local_addr().unwrap();
    // Call `n` to 1001: the INVITEs that reach the TLS and the UDP device.
    let call = |n: u32, dev: &mut Tls, pending: &mut Vec<u8>| {
        let inv = invite("UDP", caller_addr, app.sip, 1001, n, 0);
        caller.send_to(inv.as_bytes(), app.sip).unwrap();
        let on_tls = tls_message(dev, pending, "INVITE ");
        (on_tls, udp_message(&udp_dev, "INVITE "))
    };
    let (on_tls, on_udp) = call(1, &mut dev, &mut pending);
    // Our Via names the TLS listener (RFC 3261 §18.2.2), not the UDP port.
    let tls_via = format!("Via: SIP/2.0/TLS {};branch=", app.tls);
    assert!(on_tls.contains(&tls_via), "{on_tls}");
    assert!(on_udp.contains("Via: SIP/2.0/UDP "), "{on_udp}");
    // The TLS device rings (a branch is cancelled once it sent a provisional response).
    dev.write_all(answer(&on_tls, "180 Ringing").as_bytes())
        .unwrap();
    let ringing = udp_message(&caller, "SIP/2.0 180");
    assert!(ringing.contains("inv-1001-1@e2e"), "{ringing}");
    // The UDP device answers; the TLS device gets its CANCEL on its connection.
    udp_dev
        .send_to(
            with_contact(answer(&on_udp, "200 OK"), udp_local).as_bytes(),
            app.sip,
        )
        .unwrap();
    let fin = final_over_udp(&caller);
    assert!(fin.starts_with("SIP/2.0 200"), "{fin}");
    let cancel = tls_message(&mut dev, &mut pending, "CANCEL ");
    assert!(
        cancel.contains("Reason: SIP;cause=200;text=\"Call completed elsewhere\""),
        "{cancel}"
    );
    dev.write_all(answer(&cancel, "200 OK").as_bytes()).unwrap();
    dev.write_all(answer(&on_tls, "487 Request Terminated").as_bytes())
        .unwrap();
    let ack = tls_message(&mut dev, &mut pending, "ACK ");
    assert!(ack.contains(&tls_via), "{ack}");

    // Renewed files, SIGHUP: applied without a restart.
    let second = write_certificate(dir);
    assert_ne!(first, second);
    app.signal("HUP");
    assert!(
        app.wait_log("reloaded: applied tls", 1, Duration::from_secs(10)),
        "{}",
        app.log()
    );
    // New connections (spread over both shards by the kernel) get the new certificate; one
    // that trusts only the old certificate fails its handshake.
    for _ in 0..8 {
        let c = connect(app.tls, &second).expect("handshake with the renewed certificate");
        assert_eq!(presented(&c), second);
    }
    let refused_before = app.metric_sum("sipfork_tcp_closed_tls_total");
    assert!(
        connect(app.tls, &first).is_err(),
        "the old certificate is gone"
    );
    // The client's alert ends the handshake: closed and counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.metric_sum("sipfork_tcp_closed_tls_total") <= refused_before {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            app.get_ok("/metrics")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The open connection keeps its session: answered and still rung.
    dev.write_all(options(local, app.sip, 7).as_bytes())
        .unwrap();
    let ok = tls_message(&mut dev, &mut pending, "SIP/2.0 ");
    assert!(
        ok.starts_with("SIP/2.0 200") && ok.contains("7 OPTIONS"),
        "{ok}"
    );
    let (on_tls, on_udp) = call(2, &mut dev, &mut pending);
    assert!(on_tls.contains("inv-1001-2@e2e"), "{on_tls}");
    dev.write_all(answer(&on_tls, "486 Busy Here").as_bytes())
        .unwrap();
    udp_dev
        .send_to(answer(&on_udp, "486 Busy Here").as_bytes(), app.sip)
        .unwrap();
    let fin = final_over_udp(&caller);
    assert!(fin.starts_with("SIP/2.0 486"), "{fin}");

    // A broken renewal is refused; new connections still get the renewed certificate.
    std::fs::write(dir.join("cert.pem"), "not a certificate\n").unwrap();
    app.signal("HUP");
    assert!(
        app.wait_log("reload refused", 1, Duration::from_secs(10)),
        "{}",
        app.log()
    );
    let c = connect(app.tls, &second).expect("the running certificate stays");
    assert_eq!(presented(&c), second);
    assert!(app.log().contains("tls.cert"), "{}", app.log());
}
