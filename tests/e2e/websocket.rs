//! WebSocket (RFC 7118, issue 16 point 6) end to end, in a fresh network namespace: the binary
//! with two shards and `listen = ["udp:…", "tls:…", "ws:…", "wss:…"]`, `[tls]` a certificate
//! the test generates for 127.0.0.1, and a `web` device class for whatever registers over a
//! WebSocket. Two browser-like clients (`tungstenite`; the `wss:` one over a rustls session that
//! trusts only the generated certificate) register 1001 with `….invalid;transport=ws`/`wss`
//! Contacts beside a UDP device. A UDP caller's INVITE rings all three (`SIP/2.0/WS` and `WSS`
//! Vias naming the listeners, one text frame per message); the WS client answers, the ACK and the
//! caller's BYE come over its WebSocket, and the WSS client and the UDP device get their CANCEL.
//! An upgrade without the `sip` subprotocol gets 400 and is counted.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use crate::harness::{free_port, Appliance, Io, Scratch, Setup};
use crate::netns;
use crate::tcp::{answer, final_over_udp, invite};
use crate::tls::write_certificate;

const TEST: &str =
    "websocket::browsers_over_ws_and_wss_ring_beside_a_udp_device_and_the_ws_one_answers";

/// A WebSocket client's SIP traffic: its messages are WebSocket text messages.
trait Sip {
    fn send_sip(&mut self, text: &str);
    /// The next SIP message whose first line starts with `start` (others are skipped).
    fn next_sip(&mut self, start: &str) -> Result<String, String>;
}

impl<S: Read + Write> Sip for WebSocket<S> {
    fn send_sip(&mut self, text: &str) {
        self.send(Message::text(text))
            .expect("send over the WebSocket");
    }

    fn next_sip(&mut self, start: &str) -> Result<String, String> {
        loop {
            match self.read() {
                Ok(Message::Text(t)) if t.as_str().starts_with(start) => {
                    return Ok(t.as_str().to_owned())
                }
                Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)) => {}
                other => return Err(format!("waiting for {start:?}: {other:?}")),
            }
        }
    }
}

fn request(url: &str) -> tungstenite::handshake::client::Request {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    req
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A browser's REGISTER of 1001 over `t` (`WS` or `WSS`): no address of its own to give, so an
/// `.invalid` host in Via and Contact (RFC 7118 §5.2).
fn register(server: SocketAddr, t: &str, host: &str) -> String {
    let lower = t.to_ascii_lowercase();
    format!(
        "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/{t} {host}.invalid;branch=z9hG4bK-{lower}reg;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:1001@{server}>;tag=r{lower}\r\nTo: <sip:1001@{server}>\r\n\
         Call-ID: reg-{lower}@e2e\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:1001@{host}.invalid;transport={lower}>\r\nUser-Agent: e2e-browser\r\n\
         Expires: 300\r\nContent-Length: 0\r\n\r\n"
    )
}

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

/// The route set a caller takes from a 2xx: its Record-Route values, reversed.
fn route_set(ok: &str) -> String {
    let mut rr: Vec<&str> = ok
        .lines()
        .filter_map(|l| l.strip_prefix("Record-Route:"))
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    rr.reverse();
    rr.join(", ")
}

#[test]
fn browsers_over_ws_and_wss_ring_beside_a_udp_device_and_the_ws_one_answers() {
    if !netns::inside() {
        netns::run_inside("websocket", TEST, &[]);
        return;
    }
    let dir = Scratch::new("websocket");
    let cert = write_certificate(&dir.0);
    let ws_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let wss_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut setup = Setup::new(Io::Mmsg);
    setup.shards = 2;
    setup.persist = false;
    setup.tls = true;
    setup.extra_listen = vec![format!("ws:{ws_addr}"), format!("wss:{wss_addr}")];
    setup.extensions += "\n[[device_classes]]\nname = \"web\"\ntransport = [\"ws\", \"wss\"]\n";
    let app = Appliance::start(&dir.0, setup).expect("mmsg always starts");

    // The WS browser.
    let (mut ws, answer101) =
        tungstenite::client::client(request(&format!("ws://{ws_addr}/")), tcp(ws_addr))
            .expect("WebSocket upgrade");
    assert_eq!(answer101.headers()["Sec-WebSocket-Protocol"], "sip");
    ws.send_sip(&register(app.sip, "WS", "df7jal23ls0d"));
    let ok = ws
        .next_sip("SIP/2.0 ")
        .unwrap_or_else(|e| panic!("{e}\n{}", app.log()));
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");

    // The WSS browser: TLS trusting only the generated certificate, then the upgrade.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tls = rustls::StreamOwned::new(session, tcp(wss_addr));
    let (mut wss, _) = tungstenite::client::client(request(&format!("wss://{wss_addr}/")), tls)
        .expect("WebSocket upgrade over TLS");
    wss.send_sip(&register(app.sip, "WSS", "k3jd9q0x1p2z"));
    let ok = wss
        .next_sip("SIP/2.0 ")
        .unwrap_or_else(|e| panic!("{e}\n{}", app.log()));
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");

    // The UDP device.
    let udp_dev = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp_dev
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let udp_local = udp_dev.local_addr().unwrap();
    let reg = crate::tcp::register(udp_local, app.sip, 1001)
        .replace("SIP/2.0/TCP", "SIP/2.0/UDP")
        .replace(";transport=tcp", "")
        .replace("Call-ID: reg-", "Call-ID: reg-udp-");
    udp_dev.send_to(reg.as_bytes(), app.sip).unwrap();
    assert!(udp_message(&udp_dev, "SIP/2.0 ").starts_with("SIP/2.0 200"));

    let devices = app.get_ok("/extensions/1001/devices");
    for want in [
        "\"WS\"",
        "\"WSS\"",
        "\"UDP\"",
        "\"web\"",
        "df7jal23ls0d.invalid",
    ] {
        assert!(devices.contains(want), "{want}: {devices}");
    }

    // A UDP caller: all three ring, each over its own transport.
    let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
    caller
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let caller_addr = caller.local_addr().unwrap();
    let inv = invite("UDP", caller_addr, app.sip, 1001, 1, 0);
    caller.send_to(inv.as_bytes(), app.sip).unwrap();
    let on_ws = ws
        .next_sip("INVITE ")
        .unwrap_or_else(|e| panic!("{e}\n{}", app.log()));
    let on_wss = wss
        .next_sip("INVITE ")
        .unwrap_or_else(|e| panic!("{e}\n{}", app.log()));
    let on_udp = udp_message(&udp_dev, "INVITE ");
    assert!(
        on_ws.contains(&format!("Via: SIP/2.0/WS {ws_addr};branch=")),
        "{on_ws}"
    );
    assert!(
        on_wss.contains(&format!("Via: SIP/2.0/WSS {wss_addr};branch=")),
        "{on_wss}"
    );
    assert!(on_udp.contains("Via: SIP/2.0/UDP "), "{on_udp}");
    // RFC 5658: the WebSocket side's Record-Route names the ws: listener.
    assert!(
        on_ws.contains(&format!("sip:{ws_addr};transport=ws;lr")),
        "{on_ws}"
    );
    // All ring (a branch is cancelled once it sent a provisional response); the WS browser
    // then answers.
    wss.send_sip(&answer(&on_wss, "180 Ringing"));
    udp_dev
        .send_to(answer(&on_udp, "180 Ringing").as_bytes(), app.sip)
        .unwrap();
    ws.send_sip(&answer(&on_ws, "180 Ringing"));
    assert!(udp_message(&caller, "SIP/2.0 180").contains("inv-1001-1@e2e"));
    let ok = answer(&on_ws, "200 OK").replace(
        "Content-Length: 0\r\n",
        "Contact: <sip:1001@df7jal23ls0d.invalid;transport=ws>\r\nContent-Length: 0\r\n",
    );
    ws.send_sip(&ok);
    let fin = final_over_udp(&caller);
    assert!(fin.starts_with("SIP/2.0 200"), "{fin}");
    assert!(fin.contains("df7jal23ls0d.invalid;transport=ws"), "{fin}");
    // The others are cancelled over their own transports.
    let cancel = wss
        .next_sip("CANCEL ")
        .unwrap_or_else(|e| panic!("{e}\n{}", app.log()));
    assert!(cancel.contains("Reason: SIP;cause=200"), "{cancel}");
    wss.send_sip(&answer(&cancel, "200 OK"));
    wss.send_sip(&answer(&on_wss, "487 Request Terminated"));
    let cancel = udp_message(&udp_dev, "CANCEL ");
    udp_dev
        .send_to(answer(&cancel, "200 OK").as_bytes(), app.sip)
        .unwrap();
    udp_dev
        .send_to(
            answer(&on_udp, "487 Request Terminated").as_bytes(),
            app.sip,
        )
        .unwrap();

    // The caller's ACK and BYE, through our Record-Routes, reach the WS browser over its
    // WebSocket (the `.invalid` Request-URI is never resolved).
    let routes = route_set(&fin);
    let in_dialog = |method: &str, cseq: u32| {
        format!(
            "{method} sip:1001@df7jal23ls0d.invalid;transport=ws SIP/2.0\r\n\
             Via: SIP/2.0/UDP {caller_addr};branch=z9hG4bK-{method}-1;rport\r\n\
             Route: {routes}\r\nMax-Forwards: 70\r\nFrom: <sip:1000@{0}>;tag=c1\r\n\
             To: <sip:1001@{0}>;tag=dev\r\nCall-ID: inv-1001-1@e2e\r\nCSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            app.sip
        )
    };
    caller
        .send_to(in_dialog("ACK", 1).as_bytes(), app.sip)
        .unwrap();
    let ack = ws
        .next_sip("ACK ")
        .unwrap_or_else(|e| panic!("{e}\n{}", app.log()));
    assert!(ack.contains("Via: SIP/2.0/WS "), "{ack}");
    caller
        .send_to(in_dialog("BYE", 2).as_bytes(), app.sip)
        .unwrap();
    let bye = ws
        .next_sip("BYE ")
        .unwrap_or_else(|e| panic!("{e}\n{}", app.log()));
    assert!(bye.contains("Via: SIP/2.0/WS "), "{bye}");
    ws.send_sip(&answer(&bye, "200 OK"));
    let bye_ok = final_over_udp(&caller);
    assert!(
        bye_ok.starts_with("SIP/2.0 200") && bye_ok.contains("BYE"),
        "{bye_ok}"
    );

    // An upgrade without the `sip` subprotocol: 400, closed, counted.
    let mut plain = tcp(ws_addr);
    plain
        .write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        got.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(app.metric_sum("sipfork_tcp_ws_upgraded_total") >= 2);
    assert_eq!(app.metric_sum("sipfork_tcp_ws_refused_total"), 1);
}
