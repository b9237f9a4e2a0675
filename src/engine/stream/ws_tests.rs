//! WebSocket listeners through real shards (both backends) with the reflector as handler: a
//! `tungstenite` client upgrades with the `sip` subprotocol, each SIP message it sends comes
//! back as one text frame on its WebSocket, Ping gets Pong, CRLFCRLF gets CRLF, Close gets
//! Close; over TLS (`wss:`) the same. A refused upgrade gets its 4xx, an unmasked frame a Close
//! 1002, an oversize message a Close 1009, each closed and counted.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use tungstenite::client::IntoClientRequest;
use tungstenite::Message;

use super::tests::{connect, read_n, reflector, total, wait_for};
use super::StreamOptions;
use crate::core::transport::ws::WsSettings;
use crate::engine::io::IoKind;
use crate::engine::shard::Reflector;
use crate::engine::{Engine, EngineConfig, Pinning};

const OPTIONS: &str = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK1\r\nContent-Length: 5\r\n\r\nhello";

fn settings() -> Arc<WsSettings> {
    Arc::new(WsSettings {
        max_message: 2048,
        ..WsSettings::default()
    })
}

fn engine(kind: IoKind, tls: Option<Arc<rustls::ServerConfig>>) -> Option<Engine<Reflector>> {
    reflector(EngineConfig {
        io: kind,
        pinning: Pinning::Off,
        stream_listen: vec!["127.0.0.1:0".parse().unwrap()],
        stream_tls: vec![tls],
        stream_ws: vec![Some(settings())],
        stream_options: StreamOptions {
            idle: Duration::from_millis(400),
            ..StreamOptions::default()
        },
        ..EngineConfig::new("127.0.0.1:0".parse().unwrap(), 2)
    })
}

fn request(url: &str) -> tungstenite::handshake::client::Request {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    req
}

/// Sends two messages, a Ping and a CRLFCRLF keep-alive, reads their answers, closes.
fn exchange<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>, what: &str) {
    ws.send(Message::text(OPTIONS)).unwrap();
    ws.send(Message::binary(OPTIONS.as_bytes().to_vec()))
        .unwrap();
    for _ in 0..2 {
        match ws.read().unwrap() {
            Message::Text(t) => assert_eq!(t.as_str(), OPTIONS, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    ws.send(Message::Ping(b"hb".to_vec().into())).unwrap();
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"hb", "{what}"),
        other => panic!("{what}: {other:?}"),
    }
    ws.send(Message::text("\r\n\r\n")).unwrap();
    match ws.read().unwrap() {
        Message::Text(t) => assert_eq!(t.as_str(), "\r\n", "{what}"),
        other => panic!("{what}: {other:?}"),
    }
    ws.close(None).unwrap();
    // Our Close comes back (or the connection is already closed).
    match ws.read() {
        Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn a_websocket_client_gets_each_message_back_as_one_text_frame() {
    for kind in [IoKind::Mmsg, IoKind::Uring] {
        let Some(engine) = engine(kind, None) else {
            continue;
        };
        let addr = engine.stream_addrs()[0];
        for _ in 0..3 {
            let (mut ws, answer) =
                tungstenite::client::client(request(&format!("ws://{addr}/")), connect(addr))
                    .unwrap();
            assert_eq!(
                answer.headers()["Sec-WebSocket-Protocol"],
                "sip",
                "{kind:?}"
            );
            exchange(&mut ws, &format!("{kind:?}"));
        }
        wait_for(&engine, 3, |s| s.ws_upgraded);
        wait_for(&engine, 6, |s| s.messages);
        wait_for(&engine, 6, |s| s.pings);
        wait_for(&engine, 3, |s| s.closed_peer);
        engine.shutdown().unwrap();
    }
}

#[test]
fn wss_upgrades_inside_tls() {
    use rustls::pki_types::ServerName;

    let (server, client) = super::tests::tls_pair();
    let Some(engine) = engine(IoKind::Mmsg, Some(Arc::new(server))) else {
        return;
    };
    let addr = engine.stream_addrs()[0];
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let session = rustls::ClientConnection::new(client, name).unwrap();
    let tls = rustls::StreamOwned::new(session, connect(addr));
    let (mut ws, _) = tungstenite::client::client(request(&format!("wss://{addr}/")), tls).unwrap();
    exchange(&mut ws, "wss");
    wait_for(&engine, 1, |s| s.ws_upgraded);
    wait_for(&engine, 2, |s| s.messages);
    engine.shutdown().unwrap();
}

#[test]
fn refused_upgrades_bad_frames_and_idle_connections_are_closed_and_counted() {
    let Some(engine) = engine(IoKind::Mmsg, None) else {
        return;
    };
    let addr = engine.stream_addrs()[0];
    // No `sip` subprotocol: 400, closed.
    let mut c = connect(addr);
    c.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let (got, closed) = read_n(&mut c, 1 << 16);
    assert!(closed);
    assert!(
        got.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    wait_for(&engine, 1, |s| s.ws_refused);
    // A SIP message instead of an upgrade: 400 too.
    let mut c = connect(addr);
    c.write_all(OPTIONS.as_bytes()).unwrap();
    let (got, closed) = read_n(&mut c, 1 << 16);
    assert!(closed && got.starts_with(b"HTTP/1.1 400 "));
    wait_for(&engine, 2, |s| s.ws_refused);

    // After an upgrade, an unmasked frame: Close 1002.
    let upgraded = |what: &str| {
        let (ws, _) = tungstenite::client::client(request(&format!("ws://{addr}/")), connect(addr))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        ws.get_ref().try_clone().unwrap()
    };
    let mut raw = upgraded("unmasked");
    raw.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    let (got, closed) = read_n(&mut raw, 1 << 16);
    assert!(closed);
    assert_eq!(got, b"\x88\x02\x03\xea", "Close 1002");
    wait_for(&engine, 1, |s| s.closed_bad_framing);
    // A message over the limit: Close 1009, counted as oversize.
    let (mut ws, _) =
        tungstenite::client::client(request(&format!("ws://{addr}/")), connect(addr)).unwrap();
    ws.send(Message::text("x".repeat(4096))).unwrap();
    match ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1009),
        other => panic!("{other:?}"),
    }
    wait_for(&engine, 1, |s| s.closed_oversize);
    // Idle: a Ping at half the idle timeout; unanswered, Close 1001 after the idle timeout.
    let mut raw = upgraded("idle");
    let (got, closed) = read_n(&mut raw, 1 << 16);
    assert!(closed);
    assert_eq!(got, b"\x89\x00\x88\x02\x03\xe9", "Ping, then Close 1001");
    wait_for(&engine, 1, |s| s.closed_idle);
    assert_eq!(total(&engine, |s| s.messages), 0);
    engine.shutdown().unwrap();
}

#[test]
fn a_message_that_is_not_utf8_goes_out_as_a_binary_frame() {
    let Some(engine) = engine(IoKind::Mmsg, None) else {
        return;
    };
    let addr = engine.stream_addrs()[0];
    let (mut ws, _) =
        tungstenite::client::client(request(&format!("ws://{addr}/")), connect(addr)).unwrap();
    // A Latin-1 byte in the body: not UTF-8, so it can only travel as a binary message.
    let latin1: Vec<u8> = OPTIONS
        .replace("hello", "h\u{e9}llo")
        .chars()
        .map(|c| c as u8)
        .collect();
    assert!(std::str::from_utf8(&latin1).is_err());
    ws.send(Message::binary(latin1.clone())).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert_eq!(&b[..], &latin1[..]),
        other => panic!("{other:?}"),
    }
    // The connection is still open: a UTF-8 message still comes back as text.
    ws.send(Message::text(OPTIONS)).unwrap();
    match ws.read().unwrap() {
        Message::Text(t) => assert_eq!(t.as_str(), OPTIONS),
        other => panic!("{other:?}"),
    }
    wait_for(&engine, 2, |s| s.messages);
    assert_eq!(total(&engine, |s| s.closed_bad_framing), 0);
    engine.shutdown().unwrap();
}

#[test]
fn a_quiet_client_that_answers_our_pings_stays_open_past_the_idle_timeout() {
    let Some(engine) = engine(IoKind::Mmsg, None) else {
        return;
    };
    let addr = engine.stream_addrs()[0];
    let stream = connect(addr);
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let (mut ws, _) =
        tungstenite::client::client(request(&format!("ws://{addr}/")), stream).unwrap();
    // Silent (but answering Pings, as a browser does) for several idle timeouts of 400 ms.
    let until = std::time::Instant::now() + Duration::from_millis(3500);
    let mut pings = 0;
    while std::time::Instant::now() < until {
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1, // tungstenite queues the Pong, sent on the next read
            Ok(other) => panic!("{other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("closed after {pings} pings: {e}"),
        }
    }
    assert!(pings >= 2, "{pings}");
    ws.send(Message::text(OPTIONS)).unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                assert_eq!(t.as_str(), OPTIONS);
                break;
            }
            Ok(Message::Ping(_)) => {}
            Err(tungstenite::Error::Io(e))
                if std::time::Instant::now() < until
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(total(&engine, |s| s.closed_idle), 0);
    engine.shutdown().unwrap();
}
