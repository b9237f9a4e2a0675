use super::*;
use crate::time::Duration;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(extra: &str) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nHost: sip.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}

fn good_request() -> Vec<u8> {
    upgrade_request("Sec-WebSocket-Protocol: sip\r\nOrigin: https://phone.example.com\r\n")
}

/// A client frame: masked with a fixed key.
fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![b0];
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn text(payload: &[u8]) -> Vec<u8> {
    client_frame(0x80 | opcode::TEXT, payload)
}

const OPTIONS: &[u8] = b"OPTIONS sip:1000@example.com SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n";
const MESSAGE: &[u8] =
    b"MESSAGE sip:1000@example.com SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK2\r\nl: 5\r\n\r\nhello";
const NO_LENGTH: &[u8] =
    b"MESSAGE sip:1000@example.com SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK3\r\n\r\nhi";

/// An event as owned values, for comparing.
#[derive(Debug, PartialEq, Eq, Clone)]
enum Ev {
    Up(Vec<u8>),
    Msg(Vec<u8>),
    Keepalive,
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>),
}

fn settings() -> Arc<WsSettings> {
    Arc::new(WsSettings {
        max_message: 4096,
        max_handshake: 2048,
        ..WsSettings::default()
    })
}

/// Every event for `chunks` pushed one after another, and the error that ended them.
fn events_with(s: Arc<WsSettings>, chunks: &[&[u8]]) -> (Vec<Ev>, Option<WsError>) {
    let mut c = WsCodec::new(s);
    let mut out = Vec::new();
    for chunk in chunks {
        c.push(chunk);
        loop {
            match c.next_event(Instant::ZERO) {
                Ok(None) => break,
                Ok(Some(e)) => out.push(match e {
                    WsEvent::Upgraded(a) => Ev::Up(a),
                    WsEvent::Message(m) => Ev::Msg(m.to_vec()),
                    WsEvent::Keepalive => Ev::Keepalive,
                    WsEvent::Ping(p) => Ev::Ping(p.to_vec()),
                    WsEvent::Pong => Ev::Pong,
                    WsEvent::Close(code) => Ev::Close(code),
                }),
                Err(e) => {
                    assert_eq!(c.next_event(Instant::ZERO), Err(e), "errors stick");
                    return (out, Some(e));
                }
            }
        }
    }
    (out, None)
}

fn events(chunks: &[&[u8]]) -> (Vec<Ev>, Option<WsError>) {
    events_with(settings(), chunks)
}

/// A codec with `s` past a good handshake.
fn upgraded(s: WsSettings) -> WsCodec {
    let mut c = WsCodec::new(Arc::new(s));
    c.push(&good_request());
    assert!(matches!(
        c.next_event(Instant::ZERO),
        Ok(Some(WsEvent::Upgraded(_)))
    ));
    c
}

/// The events after a good handshake.
fn after_upgrade(frames: &[u8]) -> (Vec<Ev>, Option<WsError>) {
    let (mut ev, err) = events(&[&good_request(), frames]);
    assert!(matches!(ev.first(), Some(Ev::Up(_))), "{ev:?} {err:?}");
    ev.remove(0);
    (ev, err)
}

#[test]
fn the_rfc_6455_example_key_gives_its_accept_value() {
    assert_eq!(accept_key(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn a_good_upgrade_is_answered_101_with_the_accept_key_and_the_sip_subprotocol() {
    let (ev, err) = events(&[&good_request()]);
    assert_eq!(err, None);
    let Ev::Up(answer) = &ev[0] else {
        panic!("{ev:?}")
    };
    let answer = String::from_utf8(answer.clone()).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nUpgrade: websocket\r\n"));
    assert!(answer.contains("\r\nConnection: Upgrade\r\n"));
    assert!(answer.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(answer.contains("\r\nSec-WebSocket-Protocol: sip\r\n"));
    assert!(answer.ends_with("\r\n\r\n"));
    // `sip` among other subprotocols, over two headers.
    let req =
        upgrade_request("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: xmpp, sip\r\n");
    assert!(matches!(events(&[&req]).0[..], [Ev::Up(_)]));
}

#[test]
fn bad_upgrades_get_a_4xx_answer() {
    let refused = |req: &[u8]| events(&[req]).1;
    // No `sip` subprotocol, or none at all.
    assert_eq!(
        refused(&upgrade_request("Sec-WebSocket-Protocol: chat\r\n")),
        Some(WsError::Handshake(400))
    );
    assert_eq!(refused(&upgrade_request("")), Some(WsError::Handshake(400)));
    // Another version: 426 naming 13.
    let req = String::from_utf8(good_request())
        .unwrap()
        .replace("Version: 13", "Version: 8");
    assert_eq!(refused(req.as_bytes()), Some(WsError::Handshake(426)));
    let answer = String::from_utf8(WsError::Handshake(426).http_answer().unwrap()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 426 "), "{answer}");
    assert!(answer.contains("Sec-WebSocket-Version: 13\r\n"));
    // A key that is not 16 bytes of base64, or two keys.
    for bad in ["abc", "dGhlIHNhbXBsZSBub25j", "!!!!!!!!!!!!!!!!!!!!!!=="] {
        let req = String::from_utf8(good_request()).unwrap().replace(KEY, bad);
        assert_eq!(
            refused(req.as_bytes()),
            Some(WsError::Handshake(400)),
            "{bad}"
        );
    }
    let req = upgrade_request(&format!(
        "Sec-WebSocket-Protocol: sip\r\nSec-WebSocket-Key: {KEY}\r\n"
    ));
    assert_eq!(refused(&req), Some(WsError::Handshake(400)));
    // No Upgrade / Connection / Host, another method, HTTP/1.0, garbage.
    for (from, to) in [
        ("Upgrade: websocket\r\n", ""),
        (
            "Connection: keep-alive, Upgrade\r\n",
            "Connection: keep-alive\r\n",
        ),
        ("Host: sip.example.com\r\n", ""),
        ("GET / HTTP/1.1", "POST / HTTP/1.1"),
        ("GET / HTTP/1.1", "GET / HTTP/1.0"),
        ("GET / HTTP/1.1", "REGISTER sip:example.com SIP/2.0"),
    ] {
        let req = String::from_utf8(good_request()).unwrap().replace(from, to);
        assert_eq!(
            refused(req.as_bytes()),
            Some(WsError::Handshake(400)),
            "{to}"
        );
    }
    assert_eq!(
        refused(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
        Some(WsError::Handshake(400))
    );
    let answer = String::from_utf8(WsError::Handshake(400).http_answer().unwrap()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"));
    assert!(answer.contains("Connection: close\r\n"));
    assert_eq!(WsError::Protocol.http_answer(), None);
}

#[test]
fn an_oversize_upgrade_gets_431_before_its_end() {
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    big.resize(3000, b'a');
    let (ev, err) = events(&[&big]);
    assert!(ev.is_empty());
    assert_eq!(err, Some(WsError::Handshake(431)));
    assert!(err.unwrap().is_oversize());
    let answer = String::from_utf8(err.unwrap().http_answer().unwrap()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
}

#[test]
fn allowed_origins_refuse_another_or_no_origin_with_403() {
    let s = Arc::new(WsSettings {
        allowed_origins: Some(vec!["https://Phone.Example.com".into()]),
        ..WsSettings::default()
    });
    assert!(matches!(
        events_with(Arc::clone(&s), &[&good_request()]).0[..],
        [Ev::Up(_)]
    ));
    let other = String::from_utf8(good_request())
        .unwrap()
        .replace("phone.example.com", "evil.example.net");
    assert_eq!(
        events_with(Arc::clone(&s), &[other.as_bytes()]).1,
        Some(WsError::Handshake(403))
    );
    let none = upgrade_request("Sec-WebSocket-Protocol: sip\r\n");
    assert_eq!(
        events_with(Arc::clone(&s), &[&none]).1,
        Some(WsError::Handshake(403))
    );
    // Without the setting any Origin, or none, is fine.
    assert!(matches!(events(&[&none]).0[..], [Ev::Up(_)]));
}

#[test]
fn one_sip_message_per_text_or_binary_message() {
    let mut frames = text(OPTIONS);
    frames.extend(client_frame(0x80 | opcode::BINARY, MESSAGE));
    frames.extend(text(NO_LENGTH));
    let (ev, err) = after_upgrade(&frames);
    assert_eq!(err, None);
    assert_eq!(
        ev,
        vec![
            Ev::Msg(OPTIONS.to_vec()),
            Ev::Msg(MESSAGE.to_vec()),
            Ev::Msg(NO_LENGTH.to_vec())
        ]
    );
}

#[test]
fn every_split_of_the_stream_gives_the_same_events() {
    let mut stream = good_request();
    stream.extend(text(OPTIONS));
    stream.extend(client_frame(opcode::TEXT, &MESSAGE[..20]));
    stream.extend(client_frame(0x80 | opcode::PING, b"hb"));
    stream.extend(client_frame(opcode::CONTINUATION, &MESSAGE[20..40]));
    stream.extend(client_frame(0x80 | opcode::CONTINUATION, &MESSAGE[40..]));
    stream.extend(text(b"\r\n\r\n"));
    stream.extend(text(b"\r\n"));
    let mut big = OPTIONS[..OPTIONS.len() - 4].to_vec();
    big.extend_from_slice(b"\r\nX-Pad: ");
    big.resize(300, b'p');
    big.extend_from_slice(b"\r\n\r\n");
    stream.extend(text(&big));
    stream.extend(client_frame(0x80 | opcode::PONG, b""));
    stream.extend(client_frame(0x80 | opcode::CLOSE, &1000u16.to_be_bytes()));
    let (whole, err) = events(&[&stream]);
    assert_eq!(err, None);
    assert_eq!(whole.len(), 8, "{whole:?}");
    assert_eq!(whole[1], Ev::Msg(OPTIONS.to_vec()));
    assert_eq!(whole[2], Ev::Ping(b"hb".to_vec()));
    assert_eq!(whole[3], Ev::Msg(MESSAGE.to_vec()));
    assert_eq!(whole[4], Ev::Keepalive);
    assert_eq!(whole[5], Ev::Msg(big.clone()));
    assert_eq!(whole[6..], [Ev::Pong, Ev::Close(Some(1000))]);
    for cut in 1..stream.len() {
        let (ev, err) = events(&[&stream[..cut], &stream[cut..]]);
        assert_eq!((ev, err), (whole.clone(), None), "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(events(&bytes), (whole, None));
}

#[test]
fn ping_pong_and_close() {
    let (ev, err) = after_upgrade(&client_frame(0x80 | opcode::PING, b"abc"));
    assert_eq!((ev, err), (vec![Ev::Ping(b"abc".to_vec())], None));
    let (ev, _) = after_upgrade(&client_frame(0x80 | opcode::PONG, b"x"));
    assert_eq!(ev, vec![Ev::Pong]);
    let (ev, _) = after_upgrade(&client_frame(0x80 | opcode::CLOSE, &1001u16.to_be_bytes()));
    assert_eq!(ev, vec![Ev::Close(Some(1001))]);
    let (ev, _) = after_upgrade(&client_frame(0x80 | opcode::CLOSE, b""));
    assert_eq!(ev, vec![Ev::Close(None)]);
    let (_, err) = after_upgrade(&client_frame(0x80 | opcode::CLOSE, b"x"));
    assert_eq!(err, Some(WsError::Protocol));
}

#[test]
fn unmasked_rsv_bad_opcode_and_bad_fragments_are_protocol_errors() {
    let mut unmasked = vec![0x80 | opcode::TEXT, OPTIONS.len() as u8];
    unmasked.extend_from_slice(OPTIONS);
    assert_eq!(after_upgrade(&unmasked).1, Some(WsError::Protocol));
    assert_eq!(
        WsError::Protocol.close_code(),
        Some(status::PROTOCOL),
        "close 1002"
    );
    for bad in [
        client_frame(0x80 | 0x40 | opcode::TEXT, OPTIONS), // RSV1 without an extension
        client_frame(0x80 | 0x3, b"x"),                    // reserved data opcode
        client_frame(0x80 | 0xB, b"x"),                    // reserved control opcode
        client_frame(0x80 | opcode::CONTINUATION, b"x"),   // nothing to continue
        client_frame(opcode::PING, b"x"),                  // a fragmented control frame
        client_frame(0x80 | opcode::PING, &[0; 126]),      // a control frame over 125 bytes
    ] {
        assert_eq!(after_upgrade(&bad).1, Some(WsError::Protocol), "{bad:02x?}");
    }
    // A new data frame inside a fragmented message.
    let mut frames = client_frame(opcode::TEXT, b"OPT");
    frames.extend(text(OPTIONS));
    assert_eq!(after_upgrade(&frames).1, Some(WsError::Protocol));
}

#[test]
fn oversize_messages_close_with_1009_as_soon_as_the_length_says_so() {
    let big = vec![b'a'; 5000];
    let frame = text(&big);
    // Only the header is there: already refused.
    let (ev, err) = after_upgrade(&frame[..8]);
    assert_eq!((ev, err), (vec![], Some(WsError::TooBig)));
    assert!(WsError::TooBig.is_oversize());
    assert_eq!(WsError::TooBig.close_code(), Some(status::TOO_BIG));
    // Fragments adding up over the limit.
    let mut frames = Vec::new();
    for _ in 0..4 {
        frames.extend(client_frame(opcode::CONTINUATION, &[b'a'; 1200]));
    }
    frames[0] = opcode::TEXT;
    assert_eq!(after_upgrade(&frames).1, Some(WsError::TooBig));
    // A 64-bit length with the top bit set.
    let mut huge = vec![0x80 | opcode::TEXT, 0x80 | 127];
    huge.extend_from_slice(&u64::MAX.to_be_bytes());
    huge.extend_from_slice(&[0; 4]);
    assert_eq!(after_upgrade(&huge).1, Some(WsError::Protocol));
}

#[test]
fn a_content_length_that_disagrees_or_bad_utf8_is_a_bad_payload() {
    let short = String::from_utf8(MESSAGE.to_vec())
        .unwrap()
        .replace("l: 5", "l: 4");
    assert_eq!(
        after_upgrade(&text(short.as_bytes())).1,
        Some(WsError::BadPayload)
    );
    let long = String::from_utf8(MESSAGE.to_vec())
        .unwrap()
        .replace("l: 5", "l: 50");
    assert_eq!(
        after_upgrade(&text(long.as_bytes())).1,
        Some(WsError::BadPayload)
    );
    let garbage = String::from_utf8(MESSAGE.to_vec())
        .unwrap()
        .replace("l: 5", "l: x5");
    assert_eq!(
        after_upgrade(&text(garbage.as_bytes())).1,
        Some(WsError::BadPayload)
    );
    assert_eq!(
        after_upgrade(&text(b"\xff\xfe\r\n\r\n")).1,
        Some(WsError::BadPayload)
    );
    assert_eq!(WsError::BadPayload.close_code(), Some(status::BAD_PAYLOAD));
    // Binary may carry any bytes.
    let bin = b"MESSAGE sip:1@x SIP/2.0\r\nl: 2\r\n\r\n\xff\xfe";
    let (ev, err) = after_upgrade(&client_frame(0x80 | opcode::BINARY, bin));
    assert_eq!((ev, err), (vec![Ev::Msg(bin.to_vec())], None));
}

#[test]
fn garbage_after_the_upgrade_is_a_protocol_error_not_a_message() {
    let (ev, err) = after_upgrade(OPTIONS);
    assert!(ev.is_empty());
    assert_eq!(err, Some(WsError::Protocol));
}

#[test]
fn more_messages_per_second_than_allowed_close_with_1008() {
    let mut c = upgraded(WsSettings {
        max_per_second: 3,
        ..WsSettings::default()
    });
    for _ in 0..3 {
        c.push(&text(OPTIONS));
        assert!(matches!(
            c.next_event(Instant::ZERO),
            Ok(Some(WsEvent::Message(_)))
        ));
    }
    // A second later the window starts over.
    let later = Instant::ZERO + Duration::from_secs(1);
    for _ in 0..3 {
        c.push(&client_frame(0x80 | opcode::PING, b""));
        assert!(matches!(c.next_event(later), Ok(Some(WsEvent::Ping(_)))));
    }
    c.push(&text(b"\r\n\r\n"));
    assert_eq!(c.next_event(later), Err(WsError::TooMany));
    // Unsolicited Pongs count too.
    let s = Arc::new(WsSettings {
        max_per_second: 2,
        ..WsSettings::default()
    });
    let mut frames = Vec::new();
    for _ in 0..3 {
        frames.extend(client_frame(0x80 | opcode::PONG, b""));
    }
    let (ev, err) = events_with(s, &[&good_request(), &frames]);
    assert_eq!(
        (&ev[1..], err),
        (&[Ev::Pong, Ev::Pong][..], Some(WsError::TooMany))
    );
    assert_eq!(WsError::TooMany.close_code(), Some(status::POLICY));
}

#[test]
fn our_frames_are_unmasked_final_and_sized_by_the_shortest_length() {
    let mut out = Vec::new();
    frame(opcode::TEXT, b"hi", &mut out);
    assert_eq!(out, b"\x81\x02hi");
    for (n, header) in [(125usize, 2usize), (126, 4), (65535, 4), (65536, 10)] {
        let mut out = Vec::new();
        frame(opcode::TEXT, &vec![b'x'; n], &mut out);
        assert_eq!(out.len(), n + header, "{n}");
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1] & 0x80, 0, "unmasked");
    }
    assert_eq!(close_frame(1002), b"\x88\x02\x03\xea");
}

#[test]
fn a_close_code_a_peer_may_not_send_or_a_reason_not_utf8_is_refused() {
    let close = |payload: &[u8]| after_upgrade(&client_frame(0x80 | opcode::CLOSE, payload));
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
    ] {
        assert_eq!(
            close(&code.to_be_bytes()),
            (vec![Ev::Close(Some(code))], None)
        );
    }
    // Reserved, or only for what an endpoint saw (1005, 1006, 1015): never echoed.
    for code in [0u16, 999, 1004, 1005, 1006, 1012, 1015, 2999, 5000, 65535] {
        assert_eq!(
            close(&code.to_be_bytes()),
            (vec![], Some(WsError::Protocol)),
            "{code}"
        );
    }
    let mut with_reason = 1000u16.to_be_bytes().to_vec();
    with_reason.extend_from_slice("bye \u{e9}".as_bytes());
    assert_eq!(close(&with_reason), (vec![Ev::Close(Some(1000))], None));
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.extend_from_slice(b"bye \xe9");
    assert_eq!(close(&bad_reason), (vec![], Some(WsError::BadPayload)));
}

#[test]
fn the_sip_subprotocol_is_matched_exactly() {
    for other in ["SIP", "Sip", "sips", "sip2"] {
        let req = upgrade_request(&format!("Sec-WebSocket-Protocol: {other}\r\n"));
        assert_eq!(events(&[&req]).1, Some(WsError::Handshake(400)), "{other}");
    }
    let req = upgrade_request("Sec-WebSocket-Protocol: chat, sip\r\n");
    assert!(matches!(events(&[&req]).0[..], [Ev::Up(_)]));
}

#[test]
fn after_a_large_fragmented_message_the_buffers_shrink_back() {
    let mut c = upgraded(WsSettings {
        max_message: 1 << 20,
        ..WsSettings::default()
    });
    // A 300 KiB MESSAGE in three fragments.
    let body = vec![b'a'; 300 << 10];
    let mut msg = format!(
        "MESSAGE sip:1000@example.com SIP/2.0\r\nVia: SIP/2.0/WS x.invalid;branch=z9hG4bK4\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    msg.extend_from_slice(&body);
    let third = msg.len() / 3;
    let mut frames = client_frame(opcode::TEXT, &msg[..third]);
    frames.extend(client_frame(opcode::CONTINUATION, &msg[third..2 * third]));
    frames.extend(client_frame(0x80 | opcode::CONTINUATION, &msg[2 * third..]));
    c.push(&frames);
    match c.next_event(Instant::ZERO) {
        Ok(Some(WsEvent::Message(m))) => assert_eq!(m, &msg[..]),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.next_event(Instant::ZERO), Ok(None));
    assert!(
        c.message.capacity() <= KEEP_CAPACITY,
        "{}",
        c.message.capacity()
    );
    // The next small message leaves the read buffer small too.
    c.push(&text(OPTIONS));
    assert!(matches!(
        c.next_event(Instant::ZERO),
        Ok(Some(WsEvent::Message(_)))
    ));
    assert_eq!(c.next_event(Instant::ZERO), Ok(None));
    c.push(&text(OPTIONS));
    assert!(c.buf.capacity() <= KEEP_CAPACITY, "{}", c.buf.capacity());
}
