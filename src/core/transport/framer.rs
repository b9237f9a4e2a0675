//! Cuts a TCP or TLS byte stream into SIP messages (RFC 3261 §18.3): a header block up to the
//! first empty line, then exactly `Content-Length` bytes of body. Sans-IO: the engine pushes the
//! bytes each read returned and takes out whole messages and keep-alive pings.
//!
//! Limits guard the connection's memory and the shard's time: a header block longer than
//! [`Limits::max_header`] without its empty line, a `Content-Length` above [`Limits::max_body`],
//! a missing or malformed `Content-Length`, or more than [`Limits::max_per_second`] messages in
//! one second each end the connection with a [`FrameError`] the engine counts and closes on
//! (a stream cannot be resynchronised once its framing is lost).
//!
//! Keep-alives (RFC 5626 §4.4.1, §3.5.1): a client "ping" is a double CRLF between messages and
//! is answered with a single CRLF "pong" ([`Frame::Ping`]); a lone CRLF between messages (RFC
//! 3261 §7.5 lets a sender put empty lines before a start line) is skipped.

use crate::time::{Duration, Instant};

/// Framing limits for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest header block (start line and headers, with the empty line), bytes.
    pub max_header: usize,
    /// Largest body (`Content-Length`), bytes.
    pub max_body: usize,
    /// Most messages (keep-alives included) per connection in one second.
    pub max_per_second: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header: 16 << 10,
            max_body: 64 << 10,
            max_per_second: 1000,
        }
    }
}

/// What the stream delivered next.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One whole SIP message, header block and body.
    Message(&'a [u8]),
    /// A CRLFCRLF keep-alive ping: answer with [`PONG`].
    Ping,
}

/// The answer to a [`Frame::Ping`].
pub const PONG: &[u8] = b"\r\n";

/// Why a connection's framing failed; the connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No empty line within [`Limits::max_header`] bytes.
    HeaderTooLarge,
    /// `Content-Length` above [`Limits::max_body`].
    BodyTooLarge,
    /// No `Content-Length`, a non-numeric one, or two that disagree.
    BadContentLength,
    /// More than [`Limits::max_per_second`] messages in one second.
    TooManyMessages,
}

impl FrameError {
    /// Whether the connection is closed for its size (the `oversize` counter), rather than its
    /// rate or its framing.
    pub fn is_oversize(self) -> bool {
        matches!(self, FrameError::HeaderTooLarge | FrameError::BodyTooLarge)
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameError::HeaderTooLarge => "header block over the limit",
            FrameError::BodyTooLarge => "Content-Length over the limit",
            FrameError::BadContentLength => "missing or malformed Content-Length",
            FrameError::TooManyMessages => "too many messages per second",
        })
    }
}

/// The framer of one connection.
#[derive(Debug)]
pub struct Framer {
    limits: Limits,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed out (dropped on the next call).
    consumed: usize,
    /// Header block length and body length of the message at the front, once known.
    pending: Option<(usize, usize)>,
    rate: Rate,
    failed: Option<FrameError>,
}

/// Messages counted per one-second window (the connections' `max_per_second` limits).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Rate {
    window: Option<Instant>,
    in_window: u32,
}

impl Rate {
    /// Counts one message at `now`; false when that makes more than `max` in its second.
    pub(super) fn admit(&mut self, now: Instant, max: u32) -> bool {
        match self.window {
            Some(start) if now.saturating_since(start) < Duration::from_secs(1) => {
                self.in_window += 1;
            }
            _ => {
                self.window = Some(now);
                self.in_window = 1;
            }
        }
        self.in_window <= max
    }
}

impl Framer {
    /// A framer for a new connection.
    pub fn new(limits: Limits) -> Self {
        Framer {
            limits,
            buf: Vec::new(),
            consumed: 0,
            pending: None,
            rate: Rate::default(),
            failed: None,
        }
    }

    /// Appends bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held (a partial message), for memory accounting.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.consumed
    }

    /// The next whole message or ping, `Ok(None)` when more bytes are needed. After an error
    /// every call returns the same error.
    pub fn next_frame(&mut self, now: Instant) -> Result<Option<Frame<'_>>, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.compact();
        match self.scan() {
            Ok(None) => Ok(None),
            Ok(Some(kind)) => {
                if let Err(e) = self.count(now) {
                    self.failed = Some(e);
                    return Err(e);
                }
                Ok(Some(match kind {
                    Scanned::Ping => Frame::Ping,
                    Scanned::Message(len) => {
                        let start = self.consumed;
                        self.consumed += len;
                        Frame::Message(&self.buf[start..start + len])
                    }
                }))
            }
            Err(e) => {
                self.failed = Some(e);
                Err(e)
            }
        }
    }

    fn compact(&mut self) {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
    }

    fn count(&mut self, now: Instant) -> Result<(), FrameError> {
        if self.rate.admit(now, self.limits.max_per_second) {
            Ok(())
        } else {
            Err(FrameError::TooManyMessages)
        }
    }

    /// Finds the frame at the front of `buf` (after `compact`); a ping is consumed here, a
    /// message's length is returned for the caller to hand out.
    fn scan(&mut self) -> Result<Option<Scanned>, FrameError> {
        if self.pending.is_none() {
            // Between messages: pings and stray empty lines.
            loop {
                let rest = &self.buf[self.consumed..];
                if rest.starts_with(b"\r\n\r\n") {
                    self.consumed += 4;
                    return Ok(Some(Scanned::Ping));
                }
                if rest.starts_with(b"\r\n") && rest.len() > 2 && rest[2] != b'\r' {
                    self.consumed += 2;
                    continue;
                }
                if rest.is_empty() || b"\r\n\r".starts_with(rest) {
                    // Nothing, or the start of a ping still arriving.
                    return Ok(None);
                }
                break;
            }
            let rest = &self.buf[self.consumed..];
            let Some(end) = crate::sip::scan::find_short(rest, b"\r\n\r\n") else {
                return if rest.len() > self.limits.max_header {
                    Err(FrameError::HeaderTooLarge)
                } else {
                    Ok(None)
                };
            };
            let header = end + 4;
            if header > self.limits.max_header {
                return Err(FrameError::HeaderTooLarge);
            }
            let body = content_length(&rest[..end])?;
            if body > self.limits.max_body {
                return Err(FrameError::BodyTooLarge);
            }
            self.pending = Some((header, body));
        }
        let (header, body) = self.pending.expect("set above");
        if self.buf.len() - self.consumed < header + body {
            return Ok(None);
        }
        self.pending = None;
        Ok(Some(Scanned::Message(header + body)))
    }
}

enum Scanned {
    Ping,
    Message(usize),
}

/// The `Content-Length` (or compact `l`) of a header block, without its empty line. Folded
/// lines (RFC 3261 §7.3.1) start with whitespace and are never a header name.
fn content_length(block: &[u8]) -> Result<usize, FrameError> {
    content_length_if_any(block)?.ok_or(FrameError::BadContentLength)
}

/// As [`content_length`], `None` when the header block has none (a WebSocket message needs
/// none: the message is the frame, RFC 7118 §5).
pub(super) fn content_length_if_any(block: &[u8]) -> Result<Option<usize>, FrameError> {
    let mut found: Option<usize> = None;
    for line in block.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = trim(&line[..colon]);
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let value = trim(&line[colon + 1..]);
        if value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
            return Err(FrameError::BadContentLength);
        }
        let n = value
            .iter()
            .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(FrameError::BadContentLength);
        }
        found = Some(n);
    }
    Ok(found)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:1000@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n";

    fn with_body(body: &str) -> Vec<u8> {
        format!(
            "MESSAGE sip:1000@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK2\r\nl:  {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// Every frame the framer gives out for `chunks` pushed one after another.
    fn frames(limits: Limits, chunks: &[&[u8]]) -> (Vec<Option<Vec<u8>>>, Option<FrameError>) {
        let mut f = Framer::new(limits);
        let now = Instant::ZERO;
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            loop {
                match f.next_frame(now) {
                    Ok(Some(Frame::Message(m))) => out.push(Some(m.to_vec())),
                    Ok(Some(Frame::Ping)) => out.push(None),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    #[test]
    fn a_message_split_at_every_byte_comes_out_whole_once() {
        let msg = with_body("hello over tcp");
        for cut in 1..msg.len() {
            let (out, err) = frames(Limits::default(), &[&msg[..cut], &msg[cut..]]);
            assert_eq!(err, None);
            assert_eq!(out, vec![Some(msg.clone())], "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = msg.chunks(1).collect();
        assert_eq!(frames(Limits::default(), &bytes).0, vec![Some(msg.clone())]);
    }

    #[test]
    fn pipelined_messages_and_keepalives() {
        let body = with_body("x");
        let mut stream = Vec::new();
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(&body);
        stream.extend_from_slice(b"\r\n"); // a stray empty line before a start line
        stream.extend_from_slice(OPTIONS);
        let (out, err) = frames(Limits::default(), &[&stream]);
        assert_eq!(err, None);
        assert_eq!(
            out,
            vec![
                Some(OPTIONS.to_vec()),
                None,
                Some(body),
                Some(OPTIONS.to_vec())
            ]
        );
        // A ping split across two reads is still one ping.
        assert_eq!(frames(Limits::default(), &[b"\r\n", b"\r\n"]).0, vec![None]);
        assert_eq!(
            frames(Limits::default(), &[b"\r", b"\n\r", b"\n"]).0,
            vec![None]
        );
    }

    #[test]
    fn limits_end_the_connection() {
        let small = Limits {
            max_header: 64,
            max_body: 4,
            max_per_second: 2,
        };
        // A header block growing past the limit without its empty line.
        let (_, err) = frames(small, &[&[b'A'; 65]]);
        assert_eq!(err, Some(FrameError::HeaderTooLarge));
        // Just under the limit, still waiting.
        assert_eq!(frames(small, &[&[b'A'; 64]]), (vec![], None));
        // A whole header block that is too long.
        assert_eq!(
            frames(small, &[OPTIONS]).1,
            Some(FrameError::HeaderTooLarge)
        );
        let roomy = Limits {
            max_header: 1024,
            ..small
        };
        // The body limit is known from the header: no need to wait for the body.
        assert_eq!(
            frames(roomy, &[&with_body("12345")[..100]]).1,
            Some(FrameError::BodyTooLarge)
        );
        assert!(FrameError::BodyTooLarge.is_oversize());
        let (out, err) = frames(roomy, &[OPTIONS, OPTIONS, OPTIONS]);
        assert_eq!((out.len(), err), (2, Some(FrameError::TooManyMessages)));
    }

    #[test]
    fn the_rate_window_moves_on() {
        let limits = Limits {
            max_per_second: 2,
            ..Limits::default()
        };
        let mut f = Framer::new(limits);
        let t0 = Instant::from_micros(5_000_000);
        for i in 0..6u64 {
            f.push(OPTIONS);
            let t = t0 + Duration::from_millis(1000 * (i / 2) + i % 2);
            assert!(
                matches!(f.next_frame(t), Ok(Some(Frame::Message(_)))),
                "{i}"
            );
        }
        f.push(OPTIONS);
        assert_eq!(
            f.next_frame(t0 + Duration::from_millis(2002)),
            Err(FrameError::TooManyMessages)
        );
        // Once failed, always failed.
        assert_eq!(
            f.next_frame(t0 + Duration::from_secs(9)),
            Err(FrameError::TooManyMessages)
        );
    }

    #[test]
    fn content_length_must_be_there_and_agree() {
        let cases: [(&[u8], Result<usize, FrameError>); 8] = [
            (b"INVITE x SIP/2.0\r\nContent-Length: 12", Ok(12)),
            (b"INVITE x SIP/2.0\r\ncontent-length:7\r\nL : 7", Ok(7)),
            (
                b"INVITE x SIP/2.0\r\nVia: a\r\n",
                Err(FrameError::BadContentLength),
            ),
            (
                b"INVITE x SIP/2.0\r\nl: 1\r\nl: 2",
                Err(FrameError::BadContentLength),
            ),
            (
                b"INVITE x SIP/2.0\r\nl: -1",
                Err(FrameError::BadContentLength),
            ),
            (
                b"INVITE x SIP/2.0\r\nl: 12a",
                Err(FrameError::BadContentLength),
            ),
            (
                b"INVITE x SIP/2.0\r\nl: 99999999999",
                Err(FrameError::BadContentLength),
            ),
            // The start line is never a header, whatever it contains.
            (b"l: 5 SIP/2.0\r\nl: 3", Ok(3)),
        ];
        for (block, want) in cases {
            assert_eq!(
                content_length(block),
                want,
                "{}",
                String::from_utf8_lossy(block)
            );
        }
    }

    #[test]
    fn garbage_fails_or_waits_never_panics() {
        let (out, err) = frames(Limits::default(), &[b"\x00\x01garbage\r\n\r\n"]);
        assert_eq!((out, err), (vec![], Some(FrameError::BadContentLength)));
        let (out, err) = frames(Limits::default(), &[b"\r\n\r\n\r\n\r\n\r\n"]);
        assert_eq!((out, err), (vec![None, None], None));
    }
}
