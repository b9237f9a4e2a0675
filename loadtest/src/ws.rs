//! The WebSocket client side of a `--transport ws|wss` connection (RFC 6455, RFC 7118), sans-IO:
//! the upgrade request first; each SIP message the agent writes goes in one masked text frame
//! (held until the proxy's 101, as RFC 6455 §4.1 wants); what arrives is unframed into whole
//! messages (fragments joined), a ping is answered with its pong, a close ends the connection.
//! Frame headers are tungstenite's; the stream loop (`stream.rs`) owns the socket and the TLS
//! session and moves the bytes.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Largest message accepted from the proxy (sipfork's own default is 64 KiB).
const MAX_MESSAGE: usize = 1 << 20;

/// What the proxy's bytes gave.
#[derive(Debug, PartialEq, Eq)]
pub enum WsIn {
    /// The 101 arrived: the held frames may go now ([`WsClient::take_held`]).
    Upgraded,
    /// A whole SIP message: [`WsClient::message`].
    Message,
    /// A close frame (answered in the output), or nothing more can come.
    Closed,
}

/// One connection's WebSocket state.
pub struct WsClient {
    key: String,
    upgraded: bool,
    /// Frames written before the 101.
    held: Vec<u8>,
    /// Received bytes; those before `consumed` are decoded (dropped on the next push, so a read
    /// of many frames is not shifted once per frame).
    input: Vec<u8>,
    consumed: usize,
    /// A fragmented message so far.
    partial: Vec<u8>,
    /// Inside a fragmented message (its first frame came without FIN).
    fragmented: bool,
    /// The message decoded last.
    message: Vec<u8>,
    /// xorshift state for the frame masks (a client masks every frame, RFC 6455 §5.3).
    mask: u32,
}

impl WsClient {
    /// A client for a connection to `host`; writes the upgrade request into `out`.
    pub fn start(host: &str, seed: u32, out: &mut Vec<u8>) -> WsClient {
        let key = tungstenite::handshake::client::generate_key();
        out.extend_from_slice(
            format!(
                "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Protocol: sip\r\n\r\n"
            )
            .as_bytes(),
        );
        WsClient {
            key,
            upgraded: false,
            held: Vec::new(),
            input: Vec::new(),
            consumed: 0,
            partial: Vec::new(),
            fragmented: false,
            message: Vec::new(),
            // Spread the seeds: neighbouring connections must not share a mask sequence.
            mask: seed.wrapping_mul(0x9E37_79B9) | 1,
        }
    }

    /// Whether the proxy's 101 has arrived.
    pub fn upgraded(&self) -> bool {
        self.upgraded
    }

    /// Frames `msg` into `out` once upgraded, else into the held frames.
    pub fn send(&mut self, msg: &[u8], out: &mut Vec<u8>) {
        let mask = self.next_mask();
        let to = if self.upgraded { out } else { &mut self.held };
        frame(OpCode::Data(Data::Text), msg, mask, to);
    }

    /// A fresh mask for each frame (RFC 6455 §5.3; a load harness needs no cryptographic one).
    fn next_mask(&mut self) -> [u8; 4] {
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        self.mask.to_be_bytes()
    }

    /// The frames held until the 101.
    pub fn take_held(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.held)
    }

    /// Adds bytes received from the proxy.
    pub fn push(&mut self, bytes: &[u8]) {
        self.input.drain(..self.consumed);
        self.consumed = 0;
        self.input.extend_from_slice(bytes);
    }

    /// The message [`WsIn::Message`] announced.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// The next event in what was pushed; `Ok(None)` when more bytes are needed. Answers
    /// (pongs, the close's echo) are written into `out`.
    pub fn next(&mut self, out: &mut Vec<u8>) -> Result<Option<WsIn>, String> {
        if !self.upgraded {
            return self.handshake();
        }
        loop {
            let mut cursor = Cursor::new(&self.input[self.consumed..]);
            let Some((header, len)) =
                FrameHeader::parse(&mut cursor).map_err(|e| format!("frame: {e}"))?
            else {
                return Ok(None);
            };
            let start = self.consumed + cursor.position() as usize;
            if len > MAX_MESSAGE as u64 {
                return Err(format!("a {len}-byte frame"));
            }
            let end = start + len as usize;
            if self.input.len() < end {
                return Ok(None);
            }
            // What a server may not send (RFC 6455 §5.1–§5.5): a masked frame, RSV bits (no
            // extension was agreed), a fragmented or long control frame.
            if header.mask.is_some() {
                return Err("a masked frame from the server".into());
            }
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err("RSV bits without an extension".into());
            }
            if matches!(header.opcode, OpCode::Control(_)) && (!header.is_final || len > 125) {
                return Err("a fragmented or long control frame".into());
            }
            let (mask, payload) = (self.next_mask(), &self.input[start..end]);
            let event = match header.opcode {
                OpCode::Data(data) => {
                    // A continuation only inside a message; a new message only outside one.
                    let continues = data == Data::Continue;
                    if continues != self.fragmented {
                        return Err(format!("{data:?} frame out of place"));
                    }
                    if self.partial.len() + payload.len() > MAX_MESSAGE {
                        return Err("an oversize message".into());
                    }
                    self.partial.extend_from_slice(payload);
                    self.fragmented = !header.is_final;
                    header.is_final.then_some(WsIn::Message)
                }
                OpCode::Control(Control::Ping) => {
                    frame(OpCode::Control(Control::Pong), payload, mask, out);
                    None
                }
                OpCode::Control(Control::Pong) => None,
                OpCode::Control(Control::Close) => {
                    let code = payload.get(..2).unwrap_or(&[]);
                    frame(OpCode::Control(Control::Close), code, mask, out);
                    Some(WsIn::Closed)
                }
                OpCode::Control(other) => return Err(format!("opcode {other:?}")),
            };
            self.consumed = end;
            if event == Some(WsIn::Message) {
                self.message.clear();
                std::mem::swap(&mut self.message, &mut self.partial);
            }
            if event.is_some() {
                return Ok(event);
            }
        }
    }

    /// Reads the proxy's answer to the upgrade request.
    fn handshake(&mut self) -> Result<Option<WsIn>, String> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let used = match response.parse(&self.input[self.consumed..]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("upgrade answer: {e}")),
        };
        if response.code != Some(101) {
            return Err(format!("upgrade answered {:?}", response.code));
        }
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        if header("Sec-WebSocket-Accept") != Some(accept.as_bytes()) {
            return Err("a wrong Sec-WebSocket-Accept".into());
        }
        if header("Sec-WebSocket-Protocol") != Some(b"sip".as_slice()) {
            return Err("no Sec-WebSocket-Protocol: sip".into());
        }
        // RFC 6455 §4.1: without these the client must fail the connection.
        let has = |name: &str, token: &str| {
            header(name).is_some_and(|v| {
                v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
            })
        };
        if !has("Upgrade", "websocket") || !has("Connection", "Upgrade") {
            return Err("no Upgrade: websocket / Connection: Upgrade".into());
        }
        self.consumed = used;
        self.upgraded = true;
        Ok(Some(WsIn::Upgraded))
    }
}

/// Writes one final, masked frame of `payload` into `out`.
fn frame(opcode: OpCode, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    let header = FrameHeader {
        opcode,
        mask: Some(mask),
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked server frame.
    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![opcode | if fin { 0x80 } else { 0 }];
        match u16::try_from(payload.len()).unwrap() {
            n @ 0..=125 => v.push(n as u8),
            n => {
                v.push(126);
                v.extend_from_slice(&n.to_be_bytes());
            }
        }
        v.extend_from_slice(payload);
        v
    }

    fn upgraded() -> (WsClient, Vec<u8>) {
        let mut out = Vec::new();
        let mut ws = WsClient::start("127.0.0.1:5060", 42, &mut out);
        let request = String::from_utf8(out.clone()).unwrap();
        assert!(request.starts_with("GET / HTTP/1.1\r\n"));
        assert!(request.contains("Sec-WebSocket-Protocol: sip\r\n"));
        ws.send(b"REGISTER early", &mut out);
        assert_eq!(out.len(), request.len(), "nothing framed before the 101");
        let accept = tungstenite::handshake::derive_accept_key(ws.key.as_bytes());
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
        );
        // The answer in two pieces, a frame right behind it.
        let (a, b) = answer.as_bytes().split_at(20);
        ws.push(a);
        assert_eq!(ws.next(&mut out), Ok(None));
        ws.push(b);
        ws.push(&server_frame(0x1, true, b"SIP/2.0 200 OK"));
        assert_eq!(ws.next(&mut out), Ok(Some(WsIn::Upgraded)));
        assert_eq!(ws.next(&mut out), Ok(Some(WsIn::Message)));
        assert_eq!(ws.message(), b"SIP/2.0 200 OK");
        (ws, Vec::new())
    }

    /// Unmasks one client frame (short payloads only): (opcode byte, payload).
    fn unmask(f: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(f[1] & 0x80, 0x80, "a client frame is masked");
        let len = (f[1] & 0x7f) as usize;
        let mask = &f[2..6];
        let payload = f[6..6 + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4]);
        (f[0], payload.collect())
    }

    #[test]
    fn the_held_frame_goes_after_the_101_and_frames_are_masked() {
        let (mut ws, _) = upgraded();
        let held = ws.take_held();
        assert_eq!(unmask(&held), (0x81, b"REGISTER early".to_vec()));
        let mut out = Vec::new();
        ws.send(b"INVITE", &mut out);
        assert_eq!(unmask(&out), (0x81, b"INVITE".to_vec()));
        assert_ne!(&held[2..6], &out[2..6], "a fresh mask per frame");
    }

    #[test]
    fn fragments_are_joined_and_a_ping_gets_its_pong() {
        let (mut ws, mut out) = upgraded();
        ws.push(&server_frame(0x1, false, b"SIP/2.0 "));
        ws.push(&server_frame(0x9, true, b"hi"));
        ws.push(&server_frame(0x0, true, b"180 Ringing"));
        assert_eq!(ws.next(&mut out), Ok(Some(WsIn::Message)));
        assert_eq!(ws.message(), b"SIP/2.0 180 Ringing");
        assert_eq!(unmask(&out), (0x8a, b"hi".to_vec()));
        assert_eq!(ws.next(&mut out), Ok(None));
    }

    #[test]
    fn a_close_is_echoed_and_a_bad_upgrade_or_masked_frame_fails() {
        let (mut ws, mut out) = upgraded();
        ws.push(&server_frame(0x8, true, &[0x03, 0xe9, b'x']));
        assert_eq!(ws.next(&mut out), Ok(Some(WsIn::Closed)));
        assert_eq!(unmask(&out), (0x88, vec![0x03, 0xe9]));

        let (mut ws, mut out) = upgraded();
        ws.push(&[0x81, 0x81, 1, 2, 3, 4, b'x']);
        assert!(ws.next(&mut out).is_err());

        let mut out = Vec::new();
        let mut ws = WsClient::start("h", 1, &mut out);
        ws.push(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert!(ws.next(&mut out).is_err());
        let mut ws = WsClient::start("h", 1, &mut out);
        ws.push(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope\r\n\r\n");
        assert!(ws.next(&mut out).is_err());
        // Right key and protocol, but no Upgrade/Connection rows.
        let mut ws = WsClient::start("h", 1, &mut out);
        let accept = tungstenite::handshake::derive_accept_key(ws.key.as_bytes());
        ws.push(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: {accept}\r\n\
                 Sec-WebSocket-Protocol: sip\r\n\r\n"
            )
            .as_bytes(),
        );
        assert!(ws.next(&mut out).is_err());
        // A continuation with no message begun; a long ping; RSV bits.
        for bad in [
            server_frame(0x0, true, b"x"),
            server_frame(0x9, true, &[0; 126]),
            server_frame(0x1 | 0x40, true, b"x"),
        ] {
            let (mut ws, mut out) = upgraded();
            ws.push(&bad);
            assert!(ws.next(&mut out).is_err(), "{:x?}", &bad[..2]);
        }
    }
}
