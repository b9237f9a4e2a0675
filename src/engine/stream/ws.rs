//! WebSocket connections (RFC 7118 `ws:` and `wss:` listeners): a connection accepted on such a
//! listener carries a [`WsConn`] beside (or, for `wss:`, inside) its TLS session. The bytes read
//! go to the sans-IO codec (`core::transport::ws`) instead of the Content-Length framer; each
//! WebSocket message is handed to the handler like a datagram (transport `Ws`/`Wss`), and what
//! is written to the connection leaves as one unmasked frame per message (text when it is
//! UTF-8, else binary).
//!
//! An upgraded connection silent for half the idle timeout gets one Ping (browsers cannot send
//! Pings, and their SIP stacks' keep-alives are often off); its Pong is activity, and without
//! an answer the connection closes at the idle timeout as any other.
//!
//! What the codec asks to send back (the `101` answer, Pongs, keep-alive answers, the answer to
//! a Close) waits in [`WsConn::pending`] and goes out ahead of the next write, so it is never
//! overtaken by an answer to a message. A connection that ends gets its last words in
//! [`WsConn::farewell`]: the refused handshake's HTTP answer, or a Close frame with the status
//! code of what ended it (1002, 1007, 1008, 1009; 1001 for the idle timeout).

use std::sync::Arc;

use super::{Close, Conn, StreamStats};
use crate::core::io::Datagram;
use crate::core::transport::ws::{
    close_frame, frame, opcode, shrink, status, WsCodec, WsError, WsEvent, WsSettings,
};
use crate::time::Instant;

/// The WebSocket side of one connection.
#[derive(Debug)]
pub(super) struct WsConn {
    codec: WsCodec,
    /// Frames (or the handshake answer) to send before anything else.
    pending: Vec<u8>,
    /// What [`WsConn::wrap`] builds, reused from one message to the next.
    out: Vec<u8>,
    /// A keep-alive Ping was sent and nothing came back since.
    pinged: bool,
}

impl WsConn {
    pub(super) fn new(settings: Arc<WsSettings>) -> Box<WsConn> {
        Box::new(WsConn {
            codec: WsCodec::new(settings),
            pending: Vec::new(),
            out: Vec::new(),
            pinged: false,
        })
    }

    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.codec.push(bytes);
    }

    /// The bytes to write for the SIP message `plain`: what is pending, then `plain` as one
    /// frame, text when it is UTF-8 and binary when not (a binary body, a Latin-1 display name:
    /// a text frame that is not UTF-8 fails the connection, RFC 6455 §8.1; RFC 7118 §5.1 allows
    /// both). An empty `plain` sends only what is pending; before the handshake is done no
    /// message goes out.
    pub(super) fn wrap(&mut self, plain: &[u8]) -> &[u8] {
        shrink(&mut self.out);
        self.out.extend_from_slice(&self.pending);
        shrink(&mut self.pending);
        if !plain.is_empty() && self.codec.is_upgraded() {
            let op = if std::str::from_utf8(plain).is_ok() {
                opcode::TEXT
            } else {
                opcode::BINARY
            };
            frame(op, plain, &mut self.out);
        }
        &self.out
    }

    /// Whether the keep-alive Ping is due: an upgraded connection silent for half the idle
    /// timeout that was not pinged since it was last heard from.
    pub(super) fn wants_ping(&self) -> bool {
        self.codec.is_upgraded() && !self.pinged
    }

    /// Queues the keep-alive Ping (sent by the next write): a browser cannot send Pings itself
    /// and its SIP stack's keep-alives are often off, so the idle timeout would otherwise close
    /// a quiet but live connection. Its Pong counts as activity.
    pub(super) fn ping(&mut self) {
        self.pinged = true;
        frame(opcode::PING, b"", &mut self.pending);
    }

    /// The last bytes of a connection closed for `why`: what is pending, then the refused
    /// handshake's answer or a Close frame; nothing for a connection whose peer is gone or not
    /// reading.
    pub(super) fn farewell(&mut self, why: Close) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.pending);
        match why {
            Close::Ws(e) => match e.http_answer() {
                Some(answer) => out.extend_from_slice(&answer),
                None => out.extend(close_frame(e.close_code().unwrap_or(status::PROTOCOL))),
            },
            Close::Idle if self.codec.is_upgraded() => {
                out.extend(close_frame(status::GOING_AWAY));
            }
            _ => {}
        }
        out
    }
}

/// Hands every whole SIP message the codec holds to `deliver`; queues the answers to the
/// handshake, Pings, keep-alives and a Close. A Close from the peer ends the connection
/// (`Close::Peer`, after its answer); a codec error ends it with [`Close::Ws`].
pub(super) fn drain(
    conn: &mut Conn,
    now: Instant,
    deliver: &mut dyn FnMut(Datagram<'_>),
    stats: &mut StreamStats,
    delivered: &mut usize,
) -> Result<(), Close> {
    let transport = conn.transport();
    let (from, local) = (conn.peer, conn.local);
    let Some(ws) = conn.ws.as_mut() else {
        return Ok(());
    };
    loop {
        let event = match ws.codec.next_event(now) {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(()),
            Err(e) => return Err(Close::Ws(e)),
        };
        match event {
            WsEvent::Upgraded(answer) => {
                stats.ws_upgraded += 1;
                ws.pending.extend_from_slice(&answer);
            }
            WsEvent::Message(bytes) => {
                stats.messages += 1;
                *delivered += 1;
                conn.last_message = now;
                ws.pinged = false;
                deliver(Datagram {
                    from,
                    local,
                    bytes,
                    transport,
                    peer_cert: conn.peer_cert.as_ref(),
                });
            }
            WsEvent::Keepalive => {
                stats.pings += 1;
                conn.last_message = now;
                ws.pinged = false;
                frame(opcode::TEXT, b"\r\n", &mut ws.pending);
            }
            WsEvent::Ping(payload) => {
                stats.pings += 1;
                conn.last_message = now;
                ws.pinged = false;
                frame(opcode::PONG, payload, &mut ws.pending);
            }
            WsEvent::Pong => {
                conn.last_message = now;
                ws.pinged = false;
            }
            WsEvent::Close(code) => {
                // Echo the peer's code (RFC 6455 §5.5.1); no code: a Close without one.
                match code {
                    Some(code) => ws.pending.extend(close_frame(code)),
                    None => frame(opcode::CLOSE, b"", &mut ws.pending),
                }
                return Err(Close::Peer);
            }
        }
    }
}

/// Counts a connection closed for a WebSocket error: the handshake refused, oversize (a
/// handshake or message over the limit), over the message rate, or a bad frame or payload.
pub(super) fn count_close(e: WsError, stats: &mut StreamStats) {
    match e {
        e if e.is_oversize() => stats.closed_oversize += 1,
        WsError::Handshake(_) => stats.ws_refused += 1,
        WsError::TooMany => stats.closed_over_limit += 1,
        WsError::Protocol | WsError::BadPayload | WsError::TooBig => stats.closed_bad_framing += 1,
    }
}
