//! WebSocket for SIP (RFC 7118 over RFC 6455): the server's opening handshake and the frame
//! codec of one WS or WSS connection. Sans-IO, like [`super::framer`]: the engine pushes the
//! (decrypted) bytes each read returned and takes out events; what they ask to send back is
//! built here too ([`WsEvent::Upgraded`]'s answer, [`frame`], [`WsError::http_answer`]).
//!
//! Handshake (RFC 6455 §4.2, RFC 7118 §4): an HTTP/1.1 `GET` with a `Host`,
//! `Upgrade: websocket`, `Connection: Upgrade`, `Sec-WebSocket-Version: 13`, a
//! `Sec-WebSocket-Key` of 16 bytes in base64, and `Sec-WebSocket-Protocol` listing `sip`; with
//! `allowed_origins` configured, an `Origin` among them. It is answered `101 Switching
//! Protocols` with `Sec-WebSocket-Accept` and `Sec-WebSocket-Protocol: sip`; anything else gets a
//! 4xx ([`WsError::Handshake`]: 400, 403 for an Origin, 426 for a version, 431 for a request over
//! the size limit) and the connection is closed. The request is parsed with `httparse`, the
//! accept key is base64(SHA-1(key + GUID)).
//!
//! Frames (RFC 6455 §5, RFC 7118 §5): every client frame must be masked (else close 1002); RSV
//! bits and unknown opcodes are errors (1002); a text or binary message, reassembled from its
//! fragments up to `max_message` bytes (else 1009), is exactly one SIP message: a text message
//! must be UTF-8 (else 1007), and a `Content-Length`, if present, must agree with the body
//! (else 1007). A message that is only CRLFs is a keep-alive (CRLFCRLF is answered with a CRLF
//! message like a stream ping, RFC 5626 §4.4.1; a lone CRLF is skipped). Ping is answered with
//! Pong, Close with Close and the connection ends. Messages, Pings, Pongs and keep-alives count
//! toward `max_per_second` (else 1008). A peer's Close must carry a code a peer may send
//! (1000..=1003, 1007..=1011, 3000..=4999, else 1002) and a UTF-8 reason (else 1007). The
//! `sip` subprotocol is matched exactly (a case-sensitive token). What sipfork sends is one
//! unmasked frame per SIP message: text when it is UTF-8, binary when not.

use std::sync::Arc;

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::config::websocket::WsConfig;
use crate::config::TcpConfig;
use crate::time::Instant;

/// The GUID of RFC 6455 §1.3, appended to the client's key before hashing.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Frame opcodes (RFC 6455 §5.2).
pub mod opcode {
    /// A fragment of the message being assembled.
    pub const CONTINUATION: u8 = 0x0;
    /// A UTF-8 text message (what sipfork sends).
    pub const TEXT: u8 = 0x1;
    /// A binary message.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// Close status codes (RFC 6455 §7.4.1) sipfork sends.
pub mod status {
    /// Normal closure (an answered Close without a code).
    pub const NORMAL: u16 = 1000;
    /// Going away (the idle timeout).
    pub const GOING_AWAY: u16 = 1001;
    /// A protocol error (unmasked frame, RSV bits, a bad opcode or fragment).
    pub const PROTOCOL: u16 = 1002;
    /// Data not consistent with the message type (bad UTF-8, a wrong Content-Length).
    pub const BAD_PAYLOAD: u16 = 1007;
    /// Policy violation (too many messages per second).
    pub const POLICY: u16 = 1008;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
}

/// What a `ws:` or `wss:` listener accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsSettings {
    /// `None`: any `Origin`, or none; `Some`: the upgrade's `Origin` must be one of these
    /// (ASCII case ignored), else 403.
    pub allowed_origins: Option<Vec<String>>,
    /// Largest opening handshake request, bytes (else 431).
    pub max_handshake: usize,
    /// Largest message after reassembly, bytes (else close 1009).
    pub max_message: usize,
    /// Most messages (pings and keep-alives included) per connection in one second.
    pub max_per_second: u32,
}

impl WsSettings {
    /// The settings of `[websocket]` with `[tcp]`'s header and rate limits.
    pub fn from_config(tcp: &TcpConfig, ws: &WsConfig) -> WsSettings {
        WsSettings {
            allowed_origins: ws.allowed_origins.clone(),
            max_handshake: tcp.max_header_bytes as usize,
            max_message: ws.max_message_bytes as usize,
            max_per_second: tcp.max_messages_per_second,
        }
    }
}

impl Default for WsSettings {
    /// The settings of the configuration's defaults.
    fn default() -> Self {
        let tcp = TcpConfig::default();
        WsSettings::from_config(&tcp, &WsConfig::defaults(&tcp))
    }
}

/// What the connection delivered next.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent<'a> {
    /// The handshake was accepted: write this `101` answer, then frames follow.
    Upgraded(Vec<u8>),
    /// One whole SIP message.
    Message(&'a [u8]),
    /// A CRLFCRLF keep-alive message: answer with a CRLF text message ([`frame`]).
    Keepalive,
    /// A Ping: answer with a Pong carrying the same payload.
    Ping(&'a [u8]),
    /// A Pong (activity only).
    Pong,
    /// The peer's Close, with its status code if it gave one: answer with a Close and end the
    /// connection.
    Close(Option<u16>),
}

/// Why a connection ends; every later call returns the same error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsError {
    /// The opening handshake was refused with this HTTP status ([`WsError::http_answer`]).
    Handshake(u16),
    /// A protocol error: an unmasked frame, RSV bits, an unknown opcode, a bad fragment or
    /// control frame (close 1002).
    Protocol,
    /// A message over `max_message` (close 1009).
    TooBig,
    /// A text message not UTF-8, or a SIP message whose Content-Length disagrees with its body
    /// (close 1007).
    BadPayload,
    /// More than `max_per_second` messages in one second (close 1008).
    TooMany,
}

impl WsError {
    /// Whether the connection ends for its size (a handshake or message over the limit).
    pub fn is_oversize(self) -> bool {
        matches!(self, WsError::TooBig | WsError::Handshake(431))
    }

    /// The Close status code sent for it (none for a refused handshake: no frames yet).
    pub fn close_code(self) -> Option<u16> {
        match self {
            WsError::Handshake(_) => None,
            WsError::Protocol => Some(status::PROTOCOL),
            WsError::TooBig => Some(status::TOO_BIG),
            WsError::BadPayload => Some(status::BAD_PAYLOAD),
            WsError::TooMany => Some(status::POLICY),
        }
    }

    /// The HTTP answer of a refused handshake.
    pub fn http_answer(self) -> Option<Vec<u8>> {
        let WsError::Handshake(code) = self else {
            return None;
        };
        let reason = match code {
            403 => "Forbidden",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Bad Request",
        };
        // A version we do not speak: name the one we do (RFC 6455 §4.4).
        let version = if code == 426 {
            "Sec-WebSocket-Version: 13\r\n"
        } else {
            ""
        };
        Some(
            format!(
                "HTTP/1.1 {code} {reason}\r\n{version}Connection: close\r\nContent-Length: 0\r\n\r\n"
            )
            .into_bytes(),
        )
    }
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::Handshake(code) => write!(f, "WebSocket handshake refused ({code})"),
            WsError::Protocol => f.write_str("WebSocket protocol error"),
            WsError::TooBig => f.write_str("WebSocket message over the limit"),
            WsError::BadPayload => f.write_str("WebSocket message not a well-framed SIP message"),
            WsError::TooMany => f.write_str("too many WebSocket messages per second"),
        }
    }
}

/// Appends one unmasked, final frame (server to client, RFC 6455 §5.1) to `out`.
pub fn frame(op: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + 10);
    out.push(0x80 | (op & 0x0f));
    let n = payload.len();
    if n < 126 {
        out.push(n as u8);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// A Close frame with `code`.
pub fn close_frame(code: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    frame(opcode::CLOSE, &code.to_be_bytes(), &mut out);
    out
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The codec of one connection: the handshake, then frames.
#[derive(Debug)]
pub struct WsCodec {
    settings: Arc<WsSettings>,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed out (dropped on the next call).
    consumed: usize,
    upgraded: bool,
    /// The opcode of the fragmented message being assembled in `message`.
    fragmented: Option<u8>,
    message: Vec<u8>,
    /// `message` was handed out: emptied on the next call.
    message_out: bool,
    rate: super::framer::Rate,
    failed: Option<WsError>,
}

/// Where the next event's bytes are (found without holding a borrow across the loop).
enum Found {
    Upgraded(Vec<u8>),
    Message(usize, usize),
    Assembled,
    Keepalive,
    Ping(usize, usize),
    Pong,
    Close(Option<u16>),
}

impl WsCodec {
    /// The codec of a connection just accepted on a WebSocket listener.
    pub fn new(settings: Arc<WsSettings>) -> WsCodec {
        WsCodec {
            settings,
            buf: Vec::new(),
            consumed: 0,
            upgraded: false,
            fragmented: None,
            message: Vec::new(),
            message_out: false,
            rate: super::framer::Rate::default(),
            failed: None,
        }
    }

    /// Whether the handshake is done (frames flow).
    pub fn is_upgraded(&self) -> bool {
        self.upgraded
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The next event, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self, now: Instant) -> Result<Option<WsEvent<'_>>, WsError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.compact();
        if self.message_out {
            shrink(&mut self.message);
            self.message_out = false;
        }
        let found = match self.scan(now) {
            Ok(Some(found)) => found,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.failed = Some(e);
                return Err(e);
            }
        };
        Ok(Some(match found {
            Found::Upgraded(answer) => WsEvent::Upgraded(answer),
            Found::Message(start, end) => WsEvent::Message(&self.buf[start..end]),
            Found::Assembled => {
                self.message_out = true;
                WsEvent::Message(&self.message)
            }
            Found::Keepalive => WsEvent::Keepalive,
            Found::Ping(start, end) => WsEvent::Ping(&self.buf[start..end]),
            Found::Pong => WsEvent::Pong,
            Found::Close(code) => WsEvent::Close(code),
        }))
    }

    fn compact(&mut self) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
            if self.buf.is_empty() {
                shrink(&mut self.buf);
            }
        }
    }

    fn count(&mut self, now: Instant) -> Result<(), WsError> {
        if self.rate.admit(now, self.settings.max_per_second) {
            Ok(())
        } else {
            Err(WsError::TooMany)
        }
    }

    fn scan(&mut self, now: Instant) -> Result<Option<Found>, WsError> {
        if !self.upgraded {
            return self.handshake();
        }
        loop {
            let rest = &self.buf[self.consumed..];
            let Some((header, op, fin, len)) = frame_header(rest)? else {
                return Ok(None);
            };
            let control = op >= opcode::CLOSE;
            if !control
                && len.saturating_add(self.message.len() as u64) > self.settings.max_message as u64
            {
                return Err(WsError::TooBig);
            }
            let total = header + len as usize;
            if rest.len() < total {
                return Ok(None);
            }
            let (start, end) = (self.consumed + header, self.consumed + total);
            let mask: [u8; 4] = self.buf[start - 4..start].try_into().expect("4 bytes");
            for (i, b) in self.buf[start..end].iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            self.consumed = end;
            match op {
                opcode::CLOSE => {
                    let code = close_code(&self.buf[start..end])?;
                    return Ok(Some(Found::Close(code)));
                }
                opcode::PING => {
                    self.count(now)?;
                    return Ok(Some(Found::Ping(start, end)));
                }
                opcode::PONG => {
                    self.count(now)?;
                    return Ok(Some(Found::Pong));
                }
                opcode::TEXT | opcode::BINARY if self.fragmented.is_none() => {
                    if !fin {
                        self.fragmented = Some(op);
                        self.message.extend_from_slice(&self.buf[start..end]);
                        continue;
                    }
                    match classify(op, &self.buf[start..end])? {
                        Kind::Skip => continue,
                        Kind::Keepalive => {
                            self.count(now)?;
                            return Ok(Some(Found::Keepalive));
                        }
                        Kind::Sip => {
                            self.count(now)?;
                            return Ok(Some(Found::Message(start, end)));
                        }
                    }
                }
                opcode::CONTINUATION => {
                    let Some(first) = self.fragmented else {
                        return Err(WsError::Protocol);
                    };
                    self.message.extend_from_slice(&self.buf[start..end]);
                    if !fin {
                        continue;
                    }
                    self.fragmented = None;
                    let kind = classify(first, &self.message)?;
                    if !matches!(kind, Kind::Sip) {
                        shrink(&mut self.message);
                    }
                    match kind {
                        Kind::Skip => continue,
                        Kind::Keepalive => {
                            self.count(now)?;
                            return Ok(Some(Found::Keepalive));
                        }
                        Kind::Sip => {
                            self.count(now)?;
                            return Ok(Some(Found::Assembled));
                        }
                    }
                }
                // A data frame inside a fragmented message, or an unknown opcode.
                _ => return Err(WsError::Protocol),
            }
        }
    }

    /// The opening handshake, once its empty line arrived.
    fn handshake(&mut self) -> Result<Option<Found>, WsError> {
        let rest = &self.buf[self.consumed..];
        let Some(end) = crate::sip::scan::find_short(rest, b"\r\n\r\n") else {
            return if rest.len() > self.settings.max_handshake {
                Err(WsError::Handshake(431))
            } else {
                Ok(None)
            };
        };
        if end + 4 > self.settings.max_handshake {
            return Err(WsError::Handshake(431));
        }
        let answer = answer_upgrade(&rest[..end + 4], &self.settings)?;
        self.consumed += end + 4;
        self.upgraded = true;
        Ok(Some(Found::Upgraded(answer)))
    }
}

/// A buffer's capacity kept between messages: one large message does not keep its size for the
/// rest of the connection.
pub const KEEP_CAPACITY: usize = 64 << 10;

/// Empties `v`, giving its memory back when it grew over [`KEEP_CAPACITY`].
pub fn shrink(v: &mut Vec<u8>) {
    if v.capacity() > KEEP_CAPACITY {
        *v = Vec::new();
    } else {
        v.clear();
    }
}

/// What a whole message is.
enum Kind {
    /// A SIP message.
    Sip,
    /// CRLFCRLF: a keep-alive, answered.
    Keepalive,
    /// Only CRLFs otherwise (a lone CRLF): skipped.
    Skip,
}

/// A whole message of opcode `op`: text must be UTF-8, a `Content-Length` must agree with the
/// body after the header block.
fn classify(op: u8, bytes: &[u8]) -> Result<Kind, WsError> {
    if op == opcode::TEXT && std::str::from_utf8(bytes).is_err() {
        return Err(WsError::BadPayload);
    }
    if bytes.iter().all(|&b| b == b'\r' || b == b'\n') {
        return Ok(if bytes == b"\r\n\r\n" {
            Kind::Keepalive
        } else {
            Kind::Skip
        });
    }
    if let Some(end) = crate::sip::scan::find_short(bytes, b"\r\n\r\n") {
        let body = bytes.len() - (end + 4);
        match super::framer::content_length_if_any(&bytes[..end]) {
            Ok(None) => {}
            Ok(Some(n)) if n == body => {}
            _ => return Err(WsError::BadPayload),
        }
    }
    Ok(Kind::Sip)
}

/// The status code of a peer's Close payload (none when empty). RFC 6455 §7.4: a code a peer
/// may send (1000..=1003, 1007..=1011, 3000..=4999; never 1005, 1006 or 1015, which only name
/// what an endpoint saw) else a protocol error; the reason after it must be UTF-8 (§5.5.1,
/// else 1007).
fn close_code(payload: &[u8]) -> Result<Option<u16>, WsError> {
    let &[hi, lo, ref reason @ ..] = payload else {
        return if payload.is_empty() {
            Ok(None)
        } else {
            Err(WsError::Protocol)
        };
    };
    let code = u16::from_be_bytes([hi, lo]);
    if !matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999) {
        return Err(WsError::Protocol);
    }
    if std::str::from_utf8(reason).is_err() {
        return Err(WsError::BadPayload);
    }
    Ok(Some(code))
}

/// A frame's header at the front of `bytes`: its length, opcode, FIN bit and payload length;
/// `None` until it is all there.
fn frame_header(bytes: &[u8]) -> Result<Option<(usize, u8, bool, u64)>, WsError> {
    let [b0, b1, ..] = *bytes else {
        return Ok(None);
    };
    let (fin, rsv, op) = (b0 & 0x80 != 0, b0 & 0x70, b0 & 0x0f);
    if rsv != 0 {
        return Err(WsError::Protocol); // no extension was negotiated
    }
    if b1 & 0x80 == 0 {
        return Err(WsError::Protocol); // RFC 6455 §5.1: a client masks every frame
    }
    let (len, at) = match b1 & 0x7f {
        126 => match bytes.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(b) => {
                let n = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                if n >> 63 != 0 {
                    return Err(WsError::Protocol);
                }
                (n, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if op >= opcode::CLOSE && (!fin || len > 125) {
        return Err(WsError::Protocol); // control frames are whole and short (§5.5)
    }
    if bytes.len() < at + 4 {
        return Ok(None);
    }
    Ok(Some((at + 4, op, fin, len)))
}

/// The `101` answer to an opening handshake request (its whole header block), or the status
/// it is refused with.
fn answer_upgrade(request: &[u8], settings: &WsSettings) -> Result<Vec<u8>, WsError> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(request) {
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return Err(WsError::Handshake(431)),
        _ => return Err(WsError::Handshake(400)),
    }
    if req.method != Some("GET") || req.version != Some(1) {
        return Err(WsError::Handshake(400));
    }
    let values = |name: &'static str| {
        req.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    // Comma-separated tokens of every header with this name.
    let tokens = |name: &'static str| {
        values(name).flat_map(|v| {
            v.split(|&b| b == b',')
                .map(|t| t.trim_ascii())
                .filter(|t| !t.is_empty())
        })
    };
    let has_token =
        |name: &'static str, token: &[u8]| tokens(name).any(|t| t.eq_ignore_ascii_case(token));
    if values("host").next().is_none()
        || !has_token("upgrade", b"websocket")
        || !has_token("connection", b"upgrade")
    {
        return Err(WsError::Handshake(400));
    }
    let mut keys = values("sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) => k.trim_ascii(),
        _ => return Err(WsError::Handshake(400)),
    };
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if decoded.map_or(true, |k| k.len() != 16) {
        return Err(WsError::Handshake(400));
    }
    if !values("sec-websocket-version").any(|v| v.trim_ascii() == b"13") {
        return Err(WsError::Handshake(426));
    }
    if let Some(allowed) = &settings.allowed_origins {
        let origin = values("origin").next().map(<[u8]>::trim_ascii);
        let ok =
            origin.is_some_and(|o| allowed.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(o)));
        if !ok {
            return Err(WsError::Handshake(403));
        }
    }
    // RFC 7118 §4: the `sip` subprotocol only, compared exactly as the token we answer
    // (RFC 6455 §4.2.2: a subprotocol is a case-sensitive token).
    if !tokens("sec-websocket-protocol").any(|t| t == b"sip") {
        return Err(WsError::Handshake(400));
    }
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: sip\r\n\r\n",
        accept_key(key)
    )
    .into_bytes())
}

#[cfg(test)]
mod tests;
