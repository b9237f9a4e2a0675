//! The `ws_framer` fuzz target's body (`fuzz/fuzz_targets/ws_framer.rs`), also run on its
//! committed seeds (`fuzz/seeds/ws_framer`) and on proptest input by `tests/core/ws_fuzz.rs`:
//! the WebSocket codec (`core::transport::ws`) fed a stream cut into reads.
//!
//! Input: byte 0 picks the limits (message and handshake sizes); byte 1's low bit puts a valid
//! upgrade request in front of the stream (so the frames are fuzzed, not only the handshake);
//! then `(cut: u8)` bytes choose where the stream is split into reads (`cut` octets each), up to
//! the first zero; every byte after it is the stream. Nothing may panic; the events and the
//! error are the same however the stream was split (one push of the whole stream is the
//! reference); the upgrade comes first and once; no message is over the limit; an error sticks.

use std::sync::Arc;

use crate::core::transport::ws::{WsCodec, WsError, WsEvent, WsSettings};
use crate::time::Instant;

/// A valid opening handshake (RFC 6455 §1.3's key), put in front of the stream on request.
pub const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: sip.example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Protocol: sip\r\n\r\n";

/// One event as owned values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The `101` answer.
    Upgraded,
    /// A SIP message.
    Message(Vec<u8>),
    /// CRLFCRLF.
    Keepalive,
    /// A Ping and its payload.
    Ping(Vec<u8>),
    /// A Pong.
    Pong,
    /// A Close and its code.
    Close(Option<u16>),
}

/// What one input gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Every event, in order.
    pub events: Vec<Event>,
    /// The error that ended the stream, if any.
    pub error: Option<WsError>,
}

fn feed(settings: &Arc<WsSettings>, reads: &[&[u8]]) -> Summary {
    let mut codec = WsCodec::new(Arc::clone(settings));
    let mut s = Summary::default();
    for r in reads {
        codec.push(r);
        loop {
            match codec.next_event(Instant::ZERO) {
                Ok(None) => break,
                Ok(Some(e)) => s.events.push(match e {
                    WsEvent::Upgraded(_) => Event::Upgraded,
                    WsEvent::Message(m) => Event::Message(m.to_vec()),
                    WsEvent::Keepalive => Event::Keepalive,
                    WsEvent::Ping(p) => Event::Ping(p.to_vec()),
                    WsEvent::Pong => Event::Pong,
                    WsEvent::Close(c) => Event::Close(c),
                }),
                Err(e) => {
                    assert_eq!(codec.next_event(Instant::ZERO), Err(e), "errors stick");
                    s.error = Some(e);
                    return s;
                }
            }
        }
    }
    s
}

/// Runs one input; panics when an invariant fails.
pub fn run(data: &[u8]) -> Summary {
    let [pick, mode, rest @ ..] = data else {
        return Summary::default();
    };
    let settings = Arc::new(WsSettings {
        allowed_origins: None,
        max_message: 64 + usize::from(pick & 0x0f) * 64,
        max_handshake: 160 + usize::from(pick >> 4) * 64,
        max_per_second: u32::MAX,
    });
    let zero = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let (cuts, tail) = (&rest[..zero], rest.get(zero + 1..).unwrap_or(&[]));
    let mut stream = Vec::with_capacity(UPGRADE.len() + tail.len());
    if mode & 1 == 1 {
        stream.extend_from_slice(UPGRADE);
    }
    stream.extend_from_slice(tail);
    let mut reads = Vec::new();
    let mut at = 0;
    for &c in cuts {
        let end = (at + usize::from(c)).min(stream.len());
        reads.push(&stream[at..end]);
        at = end;
    }
    reads.push(&stream[at..]);

    let whole = feed(&settings, &[&stream]);
    let split = feed(&settings, &reads);
    assert_eq!(whole, split, "the same however the stream is cut");
    let ups = whole
        .events
        .iter()
        .filter(|e| **e == Event::Upgraded)
        .count();
    assert!(ups <= 1);
    if let Some(first) = whole.events.first() {
        assert_eq!(*first, Event::Upgraded, "nothing before the upgrade");
    }
    for e in &whole.events {
        if let Event::Message(m) = e {
            assert!(m.len() <= settings.max_message);
            assert!(!m.is_empty());
        }
        if let Event::Ping(p) = e {
            assert!(p.len() <= 125);
        }
    }
    whole
}
