//! Framing one UDP datagram and indexing its header rows (RFC 3261 §7, §7.3.1, §7.5, §18.3).
//!
//! One pass over the header section. A SIMD pass (`structural`) marks line ends and colons as
//! bit masks, 64 octets at a time; per row, the first marked octet is the colon (else the row has
//! none), the next line end after it ends the line (a CR must be followed by LF and a bare LF is
//! an error, so no stray line break survives into a forwarded row), the name is classified from
//! case-folded 8-octet words (`HeaderName::classify`), and the row continues while the next line
//! starts with SP or HTAB (a fold). Content-Length is read while indexing; the body is never scanned: it is the next
//! Content-Length octets, and anything after them in the datagram is discarded (§18.3).
//!
//! Nearly every row is `Name: value` + CRLF with one SP after the colon and no other whitespace
//! around the name or the value, and no fold: the walk checks that shape with two 4-octet
//! words (`is_common`) and stores the row; any other row takes the general path (`general_name`, `general_value`,
//! out of line), which checks the same things in the order the errors are reported.
//!
//! Line ends are strictly CRLF. A lone LF is rejected rather than tolerated: every row handed
//! to a builder can then be copied verbatim and stays valid on the wire.
//!
//! Invariant: every offset stored in a [`Message`] is within its `bytes`, and `bytes` is at most
//! `u16::MAX` long; the index never allocates (at most [`MAX_ROWS`] rows, inline).

use core::ops::Range;

use memchr::memchr;

use super::error::ParseError;
use super::header::{Entry, Header, HeaderName};
use super::method::Method;
use super::scan::{find_line_end, is_lws, is_opaque, is_scheme, is_token, is_wsp, parse_u32};
use super::structural::{Cursor, Found, AHEAD_BLOCKS};
use super::uri::Uri;
use crate::simd::Kernel;

/// Most header rows one message may have.
///
/// RFC 4475 `longreq` has 34 Via rows among 44 rows; carrier traffic adds Diversion,
/// History-Info and long Via/Record-Route chains, so 128 rows leave room. At 8 bytes a row the
/// index is 1 KiB, small enough to live on the stack. A request whose forwarded copy would not
/// fit is refused at intake (`build::ROWS_ADDED_BY_FORWARDING`).
pub const MAX_ROWS: usize = 128;

const NO_ROW: u8 = u8::MAX;

/// The start line, as offsets into the message bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    Request {
        method_end: u16,
        uri_start: u16,
        uri_end: u16,
    },
    Response {
        status: u16,
        reason_start: u16,
    },
}

/// What the start line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind<'b> {
    /// A request: method and Request-URI as written.
    Request {
        /// The method.
        method: Method<'b>,
        /// The Request-URI, not yet parsed (see [`Message::request_uri`]).
        uri: &'b [u8],
    },
    /// A response: status code and reason phrase (possibly empty, any UTF-8).
    Response {
        /// Status code, 100..=699.
        status: u16,
        /// Reason phrase as written.
        reason: &'b [u8],
    },
}

/// A framed, indexed SIP message borrowing the datagram it came from.
#[derive(Clone)]
pub struct Message<'b> {
    /// The message as framed: leading CRLFs and trailing datagram octets cut off.
    bytes: &'b [u8],
    line: Line,
    /// Offset of the CRLF that ends the start line.
    line_end: u16,
    /// Offset where the header rows end (the empty line's CRLF).
    header_end: u16,
    /// Offset of the body.
    body_start: u16,
    content_length: Option<u32>,
    count: u8,
    /// Index of the first row of each header name, `NO_ROW` if absent.
    first: [u8; HeaderName::COUNT],
    rows: [Entry; MAX_ROWS],
}

/// Parses one datagram into a borrowed, indexed message.
///
/// Checks the start line, every header row's shape, and the framing; typed header values are
/// parsed later, on demand, by the accessors. Never allocates, never panics. A thin wrapper of
/// [`parse_into`], which a hot path uses to fill one index in place.
pub fn parse(datagram: &[u8]) -> Result<Message<'_>, ParseError> {
    let mut msg = Message::empty();
    build(&mut msg, datagram, false, Kernel::detect())?;
    Ok(msg)
}

/// [`parse`] into an index the caller owns: nothing is moved or cleared but the few fields a
/// parse sets (the row array is only written up to the new row count).
///
/// After an `Err`, `msg` holds an unspecified (but memory-safe, never panicking) index and
/// must be parsed into again before use.
///
/// ```
/// use sipfork::sip::{parse_into, Message, Method};
/// let bytes = b"OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
///     To: <sip:bob@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\nCall-ID: c\r\n\
///     CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n";
/// let mut msg = Message::empty();
/// parse_into(&mut msg, bytes).unwrap();
/// assert_eq!(msg.method(), Some(Method::Options));
/// assert_eq!(msg.header_count(), 6);
/// ```
pub fn parse_into<'b>(msg: &mut Message<'b>, datagram: &'b [u8]) -> Result<(), ParseError> {
    build(msg, datagram, false, Kernel::detect())
}

/// Best-effort index of a request that [`parse`] rejected, so that an error response can still
/// copy its Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6).
///
/// The start line is split at its first two spaces without further checks, rows are indexed up to
/// the first malformed one, and the body is empty. `None` for responses (they are dropped, never
/// answered) and for datagrams without a line end.
pub fn salvage(datagram: &[u8]) -> Option<Message<'_>> {
    let mut msg = Message::empty();
    build(&mut msg, datagram, true, Kernel::detect()).ok()?;
    Some(msg)
}

fn build<'b>(
    msg: &mut Message<'b>,
    datagram: &'b [u8],
    salvage: bool,
    kernel: Kernel,
) -> Result<(), ParseError> {
    // RFC 3261 §7.5: CRLFs before the start line are ignored (they are also RFC 5626 keep-alives).
    let skip = datagram
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(ParseError::Empty)?;
    let b = datagram.get(skip..).unwrap_or(&[]);
    if b.len() > usize::from(u16::MAX) {
        return Err(ParseError::MessageTooLarge);
    }
    let mut ahead = [(0, 0); AHEAD_BLOCKS];
    let mut cursor = Cursor::new(b, kernel, &mut ahead);
    let line_end = match cursor.line_end(0) {
        Some(e) if b.get(e) == Some(&b'\r') && b.get(e + 1) == Some(&b'\n') => e,
        Some(e) if e + 1 < b.len() || b.get(e) == Some(&b'\n') => {
            return Err(ParseError::BadLineEnd)
        }
        _ => return Err(ParseError::UnterminatedHeaders),
    };
    let first_line = b.get(..line_end).unwrap_or(&[]);
    let line = if salvage {
        salvage_request_line(first_line)?
    } else {
        start_line(first_line)?
    };
    msg.bytes = b;
    msg.line = line;
    msg.line_end = line_end as u16;
    msg.header_end = 0;
    msg.body_start = 0;
    msg.content_length = None;
    msg.count = 0;
    msg.first = [NO_ROW; HeaderName::COUNT];
    match index_rows(b, line_end + 2, msg, &mut cursor) {
        Ok(header_end) => {
            let body_start = header_end + 2;
            let end = match msg.content_length {
                Some(n) => {
                    let end = body_start.saturating_add(n as usize);
                    if end > b.len() {
                        if !salvage {
                            return Err(ParseError::ContentLengthTooLarge);
                        }
                        // An answer copies headers only: the body's true extent does not matter.
                        msg.content_length = None;
                        b.len()
                    } else {
                        end
                    }
                }
                // RFC 3261 §18.3: without Content-Length, a datagram's body runs to its end.
                None => b.len(),
            };
            msg.bytes = b.get(..end).unwrap_or(b);
            msg.header_end = header_end as u16;
            msg.body_start = body_start as u16;
            Ok(())
        }
        Err((_, row_start)) if salvage => {
            msg.bytes = b.get(..row_start).unwrap_or(b);
            msg.header_end = row_start as u16;
            msg.body_start = row_start as u16;
            msg.content_length = None;
            Ok(())
        }
        Err((e, _)) => Err(e),
    }
}

/// Indexes header rows from `pos` to the empty line. Returns the offset of the empty line, or the
/// error with the offset of the row that caused it. `msg.count` is the number of rows indexed
/// either way (a salvaged request keeps the rows before its first bad one).
#[inline(always)]
fn index_rows(
    b: &[u8],
    pos: usize,
    msg: &mut Message<'_>,
    cursor: &mut Cursor<'_>,
) -> Result<usize, (ParseError, usize)> {
    // The row count lives in a register while walking and is stored once.
    let mut count = 0;
    let result = walk_rows(b, pos, msg, cursor, &mut count);
    msg.count = count as u8;
    result
}

/// The row walk of [`index_rows`]; `count` is the number of rows stored in `msg.rows`.
#[inline(always)]
fn walk_rows(
    b: &[u8],
    mut pos: usize,
    msg: &mut Message<'_>,
    cursor: &mut Cursor<'_>,
    count: &mut usize,
) -> Result<usize, (ParseError, usize)> {
    loop {
        let row_start = pos;
        let fail = |e: ParseError| Err((e, row_start));
        let Some(&c0) = b.get(pos) else {
            return fail(ParseError::UnterminatedHeaders);
        };
        if c0 == b'\r' {
            return match b.get(pos + 1) {
                Some(b'\n') => Ok(pos),
                None => fail(ParseError::UnterminatedHeaders),
                Some(_) => fail(ParseError::BadLineEnd),
            };
        }
        if !is_token(c0) {
            // A row starts with a name; a leading SP/HTAB here would continue no row.
            return fail(if c0 == b'\n' {
                ParseError::BadLineEnd
            } else {
                ParseError::BadHeaderName
            });
        }
        // The first physical line holds the name and the colon (HCOLON allows no fold): the
        // first structural octet of the row is its colon, else the row has none. The line end
        // after the colon is the next line-end bit: the reader stays in the masks' block.
        cursor.seek(pos);
        let colon = match cursor.next_structural() {
            Some(Found::Colon(colon)) => colon,
            Some(Found::LineEnd(eol)) => {
                return fail(crlf_at(b, eol).err().unwrap_or(ParseError::MissingColon))
            }
            None => return fail(ParseError::UnterminatedHeaders),
        };
        let Some(mut eol) = cursor.next_line_end() else {
            return fail(ParseError::UnterminatedHeaders);
        };
        // Nearly every row is `Name: value` + CRLF with no fold and no other whitespace around
        // the name or the value: two 4-octet words check that. Any other row takes the general
        // path, which checks the same things in the order the errors are reported.
        let common = is_common(b, colon, eol);
        // The lib's tests (random datagrams among them) hold the fast path to the general one.
        #[cfg(test)]
        if common {
            assert_eq!(general_name(b, pos, colon, eol), Ok(colon - pos));
            // No fold follows a common row, so the general path returns `eol` unchanged.
            assert_eq!(general_value(b, colon, eol), Ok((colon + 2, eol, eol)));
        }
        let name_len = if common {
            colon - pos
        } else {
            match general_name(b, pos, colon, eol) {
                Ok(name_len) => name_len,
                Err(e) => return fail(e),
            }
        };
        let name = HeaderName::classify(b.get(pos..).unwrap_or(&[]), name_len);
        // A known name matched case-folded words. Folding (OR 0x20) maps only letters and CR
        // onto letters or `-`, and no CR lies before the colon, the row's first structural
        // octet; so a match is a token name (see `HeaderName::classify`). Any other name is
        // checked octet by octet.
        if name == HeaderName::Other {
            if let Err(e) = check_other_name(b.get(pos..pos + name_len).unwrap_or(&[])) {
                return fail(e);
            }
        }
        let (vs, ve) = if common {
            (colon + 2, eol)
        } else {
            match general_value(b, colon, eol) {
                Ok((vs, ve, row_eol)) => {
                    eol = row_eol;
                    (vs, ve)
                }
                Err(e) => return fail(e),
            }
        };
        if name == HeaderName::ContentLength {
            if let Err(e) = content_length(b.get(vs..ve).unwrap_or(&[]), &mut msg.content_length) {
                return fail(e);
            }
        }
        let idx = *count;
        let Some(slot) = msg.rows.get_mut(idx) else {
            return fail(ParseError::TooManyHeaders);
        };
        *slot = Entry {
            start: row_start as u16,
            value_start: vs as u16,
            value_end: ve as u16,
            name_len: name_len.min(255) as u8,
            name,
        };
        if let Some(first) = msg.first.get_mut(name.index()) {
            if *first == NO_ROW {
                *first = idx as u8;
            }
        }
        *count = idx + 1;
        pos = eol + 2;
    }
}

/// Is the row with its colon at `colon` and its first line end at `eol` a common row: one SP
/// after the colon, no whitespace before the colon or at the value's ends, CRLF, and no fold
/// after it? Two 4-octet words: `[p, ':', SP, v]` and `[p, CR, LF, n]`.
#[inline(always)]
fn is_common(b: &[u8], colon: usize, eol: usize) -> bool {
    let word = |at: usize| -> Option<u32> {
        let w: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_le_bytes(w))
    };
    let (Some(around_colon), Some(around_eol)) =
        (word(colon.wrapping_sub(1)), word(eol.wrapping_sub(1)))
    else {
        return false;
    };
    let [before_colon, _, _, value_first] = around_colon.to_le_bytes();
    let [value_last, _, _, next] = around_eol.to_le_bytes();
    around_colon & 0x00ff_ff00 == 0x0020_3a00
        && around_eol & 0x00ff_ff00 == 0x000a_0d00
        && !is_wsp(before_colon)
        && !is_lws(value_first)
        && !is_lws(value_last)
        && !is_wsp(next)
}

/// The general path of a row's name (see [`walk_rows`]): checks the CRLF that ends the first
/// line, and returns the name's length without the whitespace before the colon.
#[inline(never)]
fn general_name(b: &[u8], pos: usize, colon: usize, eol: usize) -> Result<usize, ParseError> {
    crlf_at(b, eol)?;
    let mut name_end = colon;
    while name_end > pos && b.get(name_end - 1).is_some_and(|&c| is_wsp(c)) {
        name_end -= 1;
    }
    Ok(name_end - pos)
}

/// A name that is no known one must be all token octets (whitespace inside it means the row
/// has no colon where one was due).
#[inline(never)]
fn check_other_name(name: &[u8]) -> Result<(), ParseError> {
    match name.iter().find(|&&c| !is_token(c)) {
        Some(&bad) if is_wsp(bad) => Err(ParseError::MissingColon),
        Some(_) => Err(ParseError::BadHeaderName),
        None => Ok(()),
    }
}

/// The general path of a row's value (see [`walk_rows`]): follows folds (a CRLF followed by
/// SP/HTAB continues the row) and trims the value. Returns the value's bounds and the offset of
/// the CRLF that ends the row.
#[inline(never)]
fn general_value(
    b: &[u8],
    colon: usize,
    mut eol: usize,
) -> Result<(usize, usize, usize), ParseError> {
    while matches!(b.get(eol + 2), Some(b' ' | b'\t')) {
        // Folds are rare: a plain search finds their line ends, so that the row walk's cursor
        // is not handed to this call (it stays in registers).
        let next = find_line_end(b, eol + 3).ok_or(ParseError::UnterminatedHeaders)?;
        crlf_at(b, next)?;
        eol = next;
    }
    let mut vs = colon + 1;
    while vs < eol && b.get(vs).is_some_and(|&c| is_lws(c)) {
        vs += 1;
    }
    let mut ve = eol;
    while ve > vs && b.get(ve - 1).is_some_and(|&c| is_lws(c)) {
        ve -= 1;
    }
    Ok((vs, ve, eol))
}

/// Reads a Content-Length value into `framing` (equal repeats allowed, RFC 3261 §20.14).
#[inline(never)]
fn content_length(value: &[u8], framing: &mut Option<u32>) -> Result<(), ParseError> {
    let n = match parse_u32(value) {
        Some(n) => n,
        None if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
            return Err(ParseError::ContentLengthTooLarge)
        }
        None => return Err(ParseError::BadContentLength),
    };
    match *framing {
        Some(prev) if prev != n => Err(ParseError::ConflictingContentLength),
        _ => {
            *framing = Some(n);
            Ok(())
        }
    }
}

/// Checks that the line end found at `e` is a CRLF.
#[inline(always)]
fn crlf_at(b: &[u8], e: usize) -> Result<(), ParseError> {
    match (b.get(e), b.get(e + 1)) {
        (Some(b'\r'), Some(b'\n')) => Ok(()),
        (Some(b'\r'), None) => Err(ParseError::UnterminatedHeaders),
        _ => Err(ParseError::BadLineEnd),
    }
}

/// Parses a Request-Line or Status-Line (without its CRLF).
///
/// The common shapes are recognised with a few word compares: `METHOD sip:opaque SIP/2.0`
/// ([`common_request_line`]), and a status line that starts `SIP/2.0 ` (the general path would
/// find its SP at 7 and accept the version: only the code and the reason are left to check);
/// anything else takes the general path, so the errors are the ones it always reported.
#[inline(always)]
fn start_line(line: &[u8]) -> Result<Line, ParseError> {
    if let Some(l) = common_request_line(line) {
        return Ok(l);
    }
    if word_at(line, 0).is_some_and(|w| w | LETTERS_AT_0 == u64::from_le_bytes(*b"sip/2.0 ")) {
        return code_and_reason(line, 7);
    }
    general_start_line(line)
}

/// `SIP/2.0` with the letters case-folded (an OR of 0x20 into the three letter octets only, so
/// that no other octet can fold onto the text), as a little-endian word read from `line[at..]`:
/// `" SIP/2.0"` (a request's tail) or `"SIP/2.0 "` (a status line's head).
const LETTERS_AT_1: u64 = 0x2020_2000;
const LETTERS_AT_0: u64 = 0x0020_2020;

/// The little-endian word of the 8 octets of `b` at `at`, if there are 8.
#[inline(always)]
fn word_at(b: &[u8], at: usize) -> Option<u64> {
    let w: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(w))
}

/// `Method SP sip:opaque SP SIP/2.0` with a `sip` Request-URI: the Line the general path gives
/// it, or `None` (then the general path decides).
#[inline(always)]
fn common_request_line(line: &[u8]) -> Option<Line> {
    let tail = line.len().checked_sub(8)?;
    if word_at(line, tail)? | LETTERS_AT_1 != u64::from_le_bytes(*b" sip/2.0") {
        return None;
    }
    let method_end = line.iter().position(|&c| !is_token(c))?;
    if method_end == 0 || line.get(method_end) != Some(&b' ') {
        return None;
    }
    let uri_start = method_end + 1;
    let uri = line.get(uri_start..tail)?;
    // `sip:` and at least one opaque octet; SP is no opaque octet, so the URI ends at `tail`.
    let scheme: [u8; 4] = uri.get(..4)?.try_into().ok()?;
    if u32::from_le_bytes(scheme) | 0x0020_2020 != u32::from_le_bytes(*b"sip:")
        || !all_opaque(uri.get(4..).filter(|rest| !rest.is_empty())?)
    {
        return None;
    }
    Some(Line::Request {
        method_end: method_end as u16,
        uri_start: uri_start as u16,
        uri_end: tail as u16,
    })
}

/// Is every octet of `s` an `opaque` URI octet (`scan::is_opaque`: above SP, not DEL, `<`,
/// `>` or `"`)? Eight octets at a time: for a word `x`, `(x - 0x01..01 * n) & !x & 0x80..80` is
/// non-zero exactly when some octet of `x` is below `n` (n <= 0x80), and an octet equal to `k`
/// is a zero octet of `x ^ k..k`.
#[inline(always)]
fn all_opaque(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    #[inline(always)]
    fn below(x: u64, n: u8) -> u64 {
        x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH
    }
    #[inline(always)]
    fn bad(x: u64) -> u64 {
        below(x, 0x21)
            | below(x ^ (ONES * 0x7f), 1)
            | below(x ^ (ONES * u64::from(b'<')), 1)
            | below(x ^ (ONES * u64::from(b'>')), 1)
            | below(x ^ (ONES * u64::from(b'"')), 1)
    }
    let Some(last) = s.len().checked_sub(8) else {
        return s.iter().all(|&c| is_opaque(c));
    };
    let mut acc = 0;
    let mut at = 0;
    while at < last {
        acc |= word_at(s, at).map_or(HIGH, bad);
        at += 8;
    }
    // The last word overlaps the previous one rather than reading past the end.
    acc |= word_at(s, last).map_or(HIGH, bad);
    acc == 0
}

/// The general path of [`start_line`]: every shape, every error.
#[inline(never)]
fn general_start_line(line: &[u8]) -> Result<Line, ParseError> {
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        return status_line(line);
    }
    // Request-Line = Method SP Request-URI SP SIP-Version: exactly one SP between elements.
    let method_end = line
        .iter()
        .position(|&c| !is_token(c))
        .unwrap_or(line.len());
    if method_end == 0 || line.get(method_end) != Some(&b' ') {
        return Err(ParseError::BadStartLine);
    }
    let uri_start = method_end + 1;
    let after_method = line.get(uri_start..).unwrap_or(&[]);
    let uri_len = memchr(b' ', after_method).ok_or(ParseError::BadStartLine)?;
    if uri_len == 0 {
        return Err(ParseError::BadStartLine);
    }
    let uri_end = uri_start + uri_len;
    check_uri_shape(line.get(uri_start..uri_end).unwrap_or(&[]))?;
    version(line.get(uri_end + 1..).unwrap_or(&[]))?;
    Ok(Line::Request {
        method_end: method_end as u16,
        uri_start: uri_start as u16,
        uri_end: uri_end as u16,
    })
}

/// Status-Line = SIP-Version SP Status-Code SP Reason-Phrase. A missing final SP before an empty
/// reason is tolerated (the reason is opaque anyway).
fn status_line(line: &[u8]) -> Result<Line, ParseError> {
    let sp = memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
    version(line.get(..sp).unwrap_or(&[]))?;
    code_and_reason(line, sp)
}

/// The rest of a Status-Line whose version (up to the SP at `sp`) was accepted: a three-digit
/// code in 100..=699, then the end or SP and the reason.
#[inline(always)]
fn code_and_reason(line: &[u8], sp: usize) -> Result<Line, ParseError> {
    let code = line.get(sp + 1..sp + 4).ok_or(ParseError::BadStatusCode)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::BadStatusCode);
    }
    let status = code
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    if !(100..=699).contains(&status) {
        return Err(ParseError::BadStatusCode);
    }
    let reason_start = match line.get(sp + 4) {
        None => sp + 4,
        Some(b' ') => sp + 5,
        Some(_) => return Err(ParseError::BadStatusCode),
    };
    Ok(Line::Response {
        status,
        reason_start: reason_start as u16,
    })
}

/// SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT, case-insensitive; only 2.0 is supported.
fn version(v: &[u8]) -> Result<(), ParseError> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        return Ok(());
    }
    let numbers = match v.get(..4) {
        Some(p) if p.eq_ignore_ascii_case(b"SIP/") => v.get(4..).unwrap_or(&[]),
        _ => return Err(ParseError::BadStartLine),
    };
    let mut parts = numbers.splitn(2, |&c| c == b'.');
    let major = parts.next().and_then(parse_u32);
    let minor = parts.next().and_then(parse_u32);
    match (major, minor) {
        (Some(2), Some(0)) => Ok(()),
        (Some(_), Some(_)) => Err(ParseError::VersionNotSupported),
        _ => Err(ParseError::BadStartLine),
    }
}

/// Cheap shape check of the Request-URI while framing: `scheme ":" 1*opaque-char`. Catches
/// `<sip:...>` and stray octets; the full grammar is checked by [`Message::request_uri`].
fn check_uri_shape(uri: &[u8]) -> Result<(), ParseError> {
    let colon = memchr(b':', uri).ok_or(ParseError::BadRequestUri)?;
    let (scheme, rest) = uri.split_at(colon);
    let scheme_ok =
        scheme.first().is_some_and(u8::is_ascii_alphabetic) && scheme.iter().all(|&c| is_scheme(c));
    if !scheme_ok || rest.len() < 2 || !rest.iter().all(|&c| is_opaque(c)) {
        return Err(ParseError::BadRequestUri);
    }
    Ok(())
}

/// The lenient split used by [`salvage`]: method, URI and version at the first two spaces.
fn salvage_request_line(line: &[u8]) -> Result<Line, ParseError> {
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        return Err(ParseError::BadStartLine);
    }
    let method_end = memchr(b' ', line).ok_or(ParseError::BadStartLine)?;
    let uri_start = method_end + 1;
    let uri_end =
        memchr(b' ', line.get(uri_start..).unwrap_or(&[])).map_or(line.len(), |n| uri_start + n);
    Ok(Line::Request {
        method_end: method_end as u16,
        uri_start: uri_start as u16,
        uri_end: uri_end as u16,
    })
}

impl Message<'static> {
    /// An empty index (no start line, no rows) for [`parse_into`] to fill.
    pub fn empty() -> Self {
        Message {
            bytes: &[],
            line: Line::Response {
                status: 0,
                reason_start: 0,
            },
            line_end: 0,
            header_end: 0,
            body_start: 0,
            content_length: None,
            count: 0,
            first: [NO_ROW; HeaderName::COUNT],
            rows: [Entry::EMPTY; MAX_ROWS],
        }
    }
}

impl<'b> Message<'b> {
    /// The message as framed: from the start line through the last body octet that
    /// Content-Length covers (trailing datagram octets cut off).
    pub fn bytes(&self) -> &'b [u8] {
        self.bytes
    }

    fn span(&self, from: usize, to: usize) -> &'b [u8] {
        self.bytes.get(from..to).unwrap_or(&[])
    }

    /// Request or response, with the start line's parts.
    pub fn kind(&self) -> Kind<'b> {
        match self.line {
            Line::Request {
                method_end,
                uri_start,
                uri_end,
            } => Kind::Request {
                method: Method::from_bytes(self.span(0, usize::from(method_end))),
                uri: self.span(usize::from(uri_start), usize::from(uri_end)),
            },
            Line::Response {
                status,
                reason_start,
            } => Kind::Response {
                status,
                reason: self.span(usize::from(reason_start), usize::from(self.line_end)),
            },
        }
    }

    /// Is this a request?
    pub fn is_request(&self) -> bool {
        matches!(self.line, Line::Request { .. })
    }

    /// The request method, for requests.
    pub fn method(&self) -> Option<Method<'b>> {
        match self.line {
            Line::Request { method_end, .. } => {
                Some(Method::from_bytes(self.span(0, usize::from(method_end))))
            }
            Line::Response { .. } => None,
        }
    }

    /// The status code, for responses.
    pub fn status(&self) -> Option<u16> {
        match self.line {
            Line::Response { status, .. } => Some(status),
            Line::Request { .. } => None,
        }
    }

    /// The Request-URI as written, for requests.
    pub fn request_uri_raw(&self) -> Option<&'b [u8]> {
        match self.line {
            Line::Request {
                uri_start, uri_end, ..
            } => Some(self.span(usize::from(uri_start), usize::from(uri_end))),
            Line::Response { .. } => None,
        }
    }

    /// The parsed Request-URI, for requests; errors are [`ParseError::BadRequestUri`].
    pub fn request_uri(&self) -> Option<Result<Uri<'b>, ParseError>> {
        self.request_uri_raw()
            .map(|raw| Uri::parse(raw).map_err(|_| ParseError::BadRequestUri))
    }

    /// The start line without its CRLF.
    pub fn start_line(&self) -> &'b [u8] {
        self.span(0, usize::from(self.line_end))
    }

    /// Every header row in order.
    pub fn headers(&self) -> impl Iterator<Item = Header<'b>> + '_ {
        (0..usize::from(self.count)).map(move |i| self.row_at(i))
    }

    /// Number of header rows.
    pub fn header_count(&self) -> usize {
        usize::from(self.count)
    }

    /// The rows of one header name, in order (compact and long forms alike).
    pub fn rows(&self, name: HeaderName) -> impl Iterator<Item = Header<'b>> + '_ {
        let from = self.first_index(name).unwrap_or(usize::from(self.count));
        (from..usize::from(self.count))
            .filter(move |&i| self.rows.get(i).is_some_and(|e| e.name == name))
            .map(move |i| self.row_at(i))
    }

    /// Is there a row of `name`? (`first(name).is_some()` without building the row.)
    pub fn has(&self, name: HeaderName) -> bool {
        self.first_index(name).is_some()
    }

    /// Is there more than one row of `name`? (`rows(name).nth(1).is_some()` without building
    /// rows.)
    pub fn repeats(&self, name: HeaderName) -> bool {
        self.first_index(name).is_some_and(|first| {
            self.rows
                .get(first + 1..usize::from(self.count))
                .is_some_and(|rest| rest.iter().any(|e| e.name == name))
        })
    }

    /// The first row of a header name.
    pub fn first(&self, name: HeaderName) -> Option<Header<'b>> {
        self.first_index(name).map(|i| self.row_at(i))
    }

    /// Values of a header over all its rows: comma-split for list headers (quotes and `<>`
    /// respected, whitespace trimmed), whole row values otherwise.
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = &'b [u8]> + '_ {
        self.rows(name).flat_map(|h| h.values())
    }

    /// Value of the first row of `name` (trimmed), the common case for single-valued headers.
    pub fn first_value(&self, name: HeaderName) -> Option<&'b [u8]> {
        let e = self.rows.get(self.first_index(name)?)?;
        Some(self.span(usize::from(e.value_start), usize::from(e.value_end)))
    }

    /// How many rows of `name` the message has.
    pub fn count_rows(&self, name: HeaderName) -> usize {
        self.rows(name).count()
    }

    /// The body (exactly Content-Length octets, or the rest of the datagram without one).
    pub fn body(&self) -> &'b [u8] {
        self.bytes
            .get(usize::from(self.body_start)..)
            .unwrap_or(&[])
    }

    /// The Content-Length value used for framing (`None` when absent).
    pub fn content_length(&self) -> Option<u32> {
        self.content_length
    }

    /// All header rows as one slice: from after the start line's CRLF to before the empty line.
    pub fn header_section(&self) -> &'b [u8] {
        self.span(usize::from(self.line_end) + 2, usize::from(self.header_end))
    }

    /// The offsets, within [`Message::bytes`], of a slice obtained from this message (a row, a
    /// value, a URI, a parameter...). `None` if `sub` does not lie inside the message.
    pub fn offset_of(&self, sub: &[u8]) -> Option<Range<usize>> {
        let base = self.bytes.as_ptr() as usize;
        let start = (sub.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(sub.len())?;
        (end <= self.bytes.len()).then_some(start..end)
    }

    /// The next row named `name` at or after row index `from`, with its index.
    pub(crate) fn next_row_named(
        &self,
        name: HeaderName,
        from: usize,
    ) -> Option<(usize, Header<'b>)> {
        let start = from.max(self.first_index(name)?);
        (start..usize::from(self.count))
            .find(|&i| self.rows.get(i).is_some_and(|e| e.name == name))
            .map(|i| (i, self.row_at(i)))
    }

    fn first_index(&self, name: HeaderName) -> Option<usize> {
        match self.first.get(name.index()) {
            Some(&i) if i != NO_ROW => Some(usize::from(i)),
            _ => None,
        }
    }

    fn row_at(&self, i: usize) -> Header<'b> {
        let e = self.rows.get(i).copied().unwrap_or(Entry::EMPTY);
        let row_end = match self.rows.get(i + 1) {
            Some(next) if i + 1 < usize::from(self.count) => usize::from(next.start),
            _ => usize::from(self.header_end),
        };
        let start = usize::from(e.start);
        let raw_name = if e.name_len < u8::MAX {
            self.span(start, start + usize::from(e.name_len))
        } else {
            let row = self.span(start, row_end);
            let len = row.iter().position(|&c| !is_token(c)).unwrap_or(row.len());
            self.span(start, start + len)
        };
        Header {
            name: e.name,
            raw_name,
            value: self.span(usize::from(e.value_start), usize::from(e.value_end)),
            row: self.span(start, row_end),
        }
    }
}

impl core::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Message")
            .field("start_line", &String::from_utf8_lossy(self.start_line()))
            .field("rows", &self.count)
            .field("body_len", &self.body().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Everything an index holds, for comparing two parses of the same bytes.
    type Snapshot = (
        usize,
        usize,
        Line,
        u16,
        u16,
        u16,
        Option<u32>,
        Vec<Entry>,
        [u8; HeaderName::COUNT],
    );

    fn snapshot(datagram: &[u8], salvage: bool, kernel: Kernel) -> Result<Snapshot, ParseError> {
        let mut m = Message::empty();
        build(&mut m, datagram, salvage, kernel)?;
        Ok((
            m.bytes.as_ptr() as usize - datagram.as_ptr() as usize,
            m.bytes.len(),
            m.line,
            m.line_end,
            m.header_end,
            m.body_start,
            m.content_length,
            m.rows[..usize::from(m.count)].to_vec(),
            m.first,
        ))
    }

    /// SIP-shaped datagrams: rows from a small vocabulary of names, values with colons, folds,
    /// stray CR/LF and long runs (rows crossing 64-octet blocks), sometimes a broken piece.
    fn datagram() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1"[..]),
            Just(&b"v: SIP/2.0/UDP [2001:db8::1]:5060"[..]),
            Just(&b"To: <sip:1001@example.com>"[..]),
            Just(&b"From: \"A\" <sip:a@b>;tag=x"[..]),
            Just(&b"Call-ID: abc@host"[..]),
            Just(&b"CSeq: 1 INVITE"[..]),
            Just(&b"Content-Length: 4"[..]),
            Just(&b"Content-Length: 99999999999"[..]),
            Just(
                &b"X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"[..]
            ),
            Just(&b"NoColon"[..]),
            Just(&b"Bad Name: x"[..]),
            Just(&b" folded: on"[..]),
            Just(&b"\t"[..]),
            Just(&b":"[..]),
            Just(&b"\r"[..]),
            Just(&b"\n"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\r\n "[..]),
            Just(&b"Subject: \xc3\xa9\x00"[..]),
        ];
        let start = prop_oneof![
            Just(&b"INVITE sip:1001@example.com SIP/2.0\r\n"[..]),
            Just(&b"SIP/2.0 180 Ringing\r\n"[..]),
            Just(&b"\r\nREGISTER sip:example.com SIP/2.0\r\n"[..]),
            Just(&b"BAD\r\n"[..]),
        ];
        (
            start,
            proptest::collection::vec((piece, prop_oneof![Just(true), Just(false)]), 0..80),
            prop_oneof![Just(&b"\r\n"[..]), Just(&b""[..])],
            prop_oneof![Just(&b"body"[..]), Just(&b""[..]), Just(&b"x:y\r\n"[..])],
        )
            .prop_map(|(start, rows, end, body)| {
                let mut d = start.to_vec();
                for (piece, crlf) in rows {
                    d.extend_from_slice(piece);
                    if crlf {
                        d.extend_from_slice(b"\r\n");
                    }
                }
                d.extend_from_slice(end);
                d.extend_from_slice(body);
                d
            })
    }

    /// The start line's word-compare paths against the general path, exhaustively near the
    /// common shapes: each base line takes a fast path, then every octet value replaces or is
    /// inserted at every position, every octet is deleted, and every prefix and suffix is cut.
    #[test]
    fn fast_start_lines_match_the_general_path_on_every_one_octet_change() {
        let bases: [&[u8]; 5] = [
            b"INVITE sip:bob@example.com;transport=udp SIP/2.0",
            b"ACK sip:a SIP/2.0",
            b"SIP/2.0 180 Ringing",
            b"SIP/2.0 200",
            b"sip/2.0 487 Request Terminated",
        ];
        let mut fast = 0;
        for base in bases {
            let status = word_at(base, 0)
                .is_some_and(|w| w | LETTERS_AT_0 == u64::from_le_bytes(*b"sip/2.0 "));
            assert!(common_request_line(base).is_some() || status, "{base:?}");
            let mut lines: Vec<Vec<u8>> = Vec::new();
            for at in 0..=base.len() {
                lines.push(base[..at].to_vec());
                lines.push(base[at..].to_vec());
                if at < base.len() {
                    let mut deleted = base.to_vec();
                    deleted.remove(at);
                    lines.push(deleted);
                }
                for octet in 0..=255u8 {
                    let mut inserted = base.to_vec();
                    inserted.insert(at, octet);
                    lines.push(inserted);
                    if at < base.len() {
                        let mut replaced = base.to_vec();
                        replaced[at] = octet;
                        lines.push(replaced);
                    }
                }
            }
            for line in &lines {
                assert_eq!(
                    start_line(line),
                    general_start_line(line),
                    "{:?}",
                    String::from_utf8_lossy(line)
                );
                if let Some(l) = common_request_line(line) {
                    fast += 1;
                    assert_eq!(Ok(l), general_start_line(line));
                }
            }
        }
        assert!(
            fast > 10_000,
            "the request fast path was taken {fast} times"
        );
    }

    #[test]
    fn all_opaque_sees_every_octet_at_every_position() {
        for len in 0..=20 {
            for at in 0..len {
                for octet in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = octet;
                    assert_eq!(all_opaque(&s), is_opaque(octet), "{len} {at} {octet}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The SIMD structural pass and the scalar one index every datagram identically
        /// (including which error they report), for parse and salvage alike.
        #[test]
        fn simd_and_scalar_index_identically(d in datagram()) {
            for salvage in [false, true] {
                let expected = snapshot(&d, salvage, Kernel::Scalar);
                for kernel in Kernel::available() {
                    prop_assert_eq!(&snapshot(&d, salvage, kernel), &expected, "{:?}", kernel);
                }
            }
        }

        /// The start line's common shapes give what the general path gives, on start lines
        /// near the common shapes (case, spaces, schemes, versions, codes and URI octets
        /// varied) and on any octets.
        #[test]
        fn common_start_lines_match_the_general_path(
            method in prop_oneof![Just("INVITE"), Just("ACK"), Just(""), Just("IN VITE"), Just("<x>")],
            scheme in prop_oneof![Just("sip:"), Just("SiP:"), Just("sips:"), Just("tel:"), Just("sip"), Just("s1p:")],
            uri in proptest::collection::vec(prop_oneof![
                Just(b'a'), Just(b'@'), Just(b' '), Just(b'<'), Just(b'>'), Just(b'"'),
                Just(0x7f), Just(0x80), Just(0x21), Just(0x20), Just(0x1f), Just(0xff), any::<u8>()], 0..40),
            version in prop_oneof![Just("SIP/2.0"), Just("sip/2.0"), Just("SIP/2.1"), Just("SIP/20"),
                Just("SIP/2.0 "), Just("SIP/2\x000"), Just("SIO/2.0"), Just("SIP/2.0\t")],
            code in prop_oneof![Just("180"), Just("099"), Just("700"), Just("18"), Just("1800"), Just("2x0")],
            reason in prop_oneof![Just(""), Just(" "), Just(" Ringing"), Just("x")],
            any_line in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut request = format!("{method} {scheme}").into_bytes();
            request.extend_from_slice(&uri);
            request.extend_from_slice(format!(" {version}").as_bytes());
            let status = format!("{version} {code}{reason}").into_bytes();
            for line in [&request, &status, &any_line] {
                prop_assert_eq!(start_line(line), general_start_line(line), "{:?}", line);
            }
        }

        /// The word-at-a-time opaque check agrees with the octet table.
        #[test]
        fn all_opaque_matches_the_table(s in proptest::collection::vec(
            prop_oneof![20 => Just(b'a'), 1 => any::<u8>()], 0..70)) {
            prop_assert_eq!(all_opaque(&s), s.iter().all(|&c| is_opaque(c)));
        }

        /// The same on arbitrary octets.
        #[test]
        fn simd_and_scalar_agree_on_any_octets(d in proptest::collection::vec(any::<u8>(), 0..400)) {
            for salvage in [false, true] {
                let expected = snapshot(&d, salvage, Kernel::Scalar);
                for kernel in Kernel::available() {
                    prop_assert_eq!(&snapshot(&d, salvage, kernel), &expected, "{:?}", kernel);
                }
            }
        }
    }

    #[test]
    fn parse_into_reuses_one_index() {
        let mut m = Message::empty();
        parse_into(&mut m, OPTIONS).unwrap();
        assert_eq!(m.header_count(), 4);
        let short = b"SIP/2.0 200 OK\r\nCall-ID: y\r\n\r\n";
        parse_into(&mut m, short).unwrap();
        assert_eq!(m.header_count(), 1);
        assert_eq!(m.status(), Some(200));
        assert!(m.first(HeaderName::Via).is_none());
        assert_eq!(m.call_id().ok(), Some(&b"y"[..]));
        assert!(parse_into(&mut m, b"junk").is_err());
        parse_into(&mut m, OPTIONS).unwrap();
        assert_eq!(m.rows(HeaderName::Via).count(), 2);
    }

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nv: SIP/2.0/UDP h2\r\nCall-ID: x\r\nContent-Length: 4\r\n\r\nbodyNOISE";

    #[test]
    fn frames_by_content_length_and_indexes_rows() {
        let m = parse(OPTIONS).unwrap();
        assert_eq!(m.body(), b"body");
        assert!(m.bytes().ends_with(b"\r\n\r\nbody"));
        assert_eq!(m.header_count(), 4);
        assert_eq!(m.rows(HeaderName::Via).count(), 2);
        let v2 = m.rows(HeaderName::Via).nth(1).unwrap();
        assert_eq!(v2.raw_name, b"v");
        assert_eq!(v2.value, b"SIP/2.0/UDP h2");
        assert_eq!(v2.row, b"v: SIP/2.0/UDP h2\r\n");
        assert_eq!(m.first_value(HeaderName::CallId), Some(&b"x"[..]));
        let range = m.offset_of(v2.value).unwrap();
        assert_eq!(&OPTIONS[range.clone()], b"SIP/2.0/UDP h2");
        assert_eq!(
            range.start,
            OPTIONS.windows(2).position(|w| w == b"v:").unwrap() + 3
        );
        assert_eq!(m.offset_of(b"elsewhere"), None);
    }

    #[test]
    fn folded_rows_keep_their_folds_and_trim_ends() {
        let m =
            parse(b"SIP/2.0 200 OK\r\nSubject : \r\n  I know\r\n\tyou\r\nTo: x\r\n\r\n").unwrap();
        let s = m.first(HeaderName::Subject).unwrap();
        assert_eq!(s.value, b"I know\r\n\tyou");
        assert_eq!(s.row, b"Subject : \r\n  I know\r\n\tyou\r\n");
        assert_eq!(m.status(), Some(200));
    }

    #[test]
    fn framing_errors() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"", ParseError::Empty),
            (b"\r\n\r\n", ParseError::Empty),
            (
                b"OPTIONS sip:a SIP/2.0\r\nTo: x\r\n",
                ParseError::UnterminatedHeaders,
            ),
            (
                b"OPTIONS sip:a SIP/2.0\nTo: x\r\n\r\n",
                ParseError::BadLineEnd,
            ),
            (
                b"OPTIONS sip:a SIP/2.0\r\nTo: x\rY\r\n\r\n",
                ParseError::BadLineEnd,
            ),
            (
                b"OPTIONS sip:a SIP/2.0\r\nTo x\r\n\r\n",
                ParseError::MissingColon,
            ),
            (
                b"OPTIONS sip:a SIP/2.0\r\n To: x\r\n\r\n",
                ParseError::BadHeaderName,
            ),
            (
                b"OPTIONS sip:a SIP/2.0\r\nl: 5\r\n\r\nabc",
                ParseError::ContentLengthTooLarge,
            ),
            (
                b"OPTIONS sip:a SIP/2.0\r\nl: five\r\n\r\n",
                ParseError::BadContentLength,
            ),
            (
                b"OPTIONS sip:a SIP/2.0\r\nl: 1\r\nl: 2\r\n\r\nab",
                ParseError::ConflictingContentLength,
            ),
            (b"OPTIONS  sip:a SIP/2.0\r\n\r\n", ParseError::BadStartLine),
            (b"OPTIONS sip:a SIP/2.0 \r\n\r\n", ParseError::BadStartLine),
            (
                b"OPTIONS <sip:a> SIP/2.0\r\n\r\n",
                ParseError::BadRequestUri,
            ),
            (
                b"OPTIONS sip:a SIP/7.0\r\n\r\n",
                ParseError::VersionNotSupported,
            ),
            (b"SIP/2.0 4294967301 x\r\n\r\n", ParseError::BadStatusCode),
            (b"SIP/2.0 099 x\r\n\r\n", ParseError::BadStatusCode),
        ];
        for (bytes, err) in cases {
            assert_eq!(
                parse(bytes).unwrap_err(),
                *err,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn too_many_rows_is_an_error_not_a_panic() {
        let mut m = b"OPTIONS sip:a SIP/2.0\r\n".to_vec();
        for _ in 0..MAX_ROWS {
            m.extend_from_slice(b"X: y\r\n");
        }
        m.extend_from_slice(b"\r\n");
        assert!(parse(&m).is_ok());
        let mut more = m.clone();
        more.truncate(more.len() - 2);
        more.extend_from_slice(b"X: y\r\n\r\n");
        assert_eq!(parse(&more).unwrap_err(), ParseError::TooManyHeaders);
    }

    #[test]
    fn long_names_are_measured_again() {
        let name = "N".repeat(300);
        let msg = format!("OPTIONS sip:a SIP/2.0\r\n{name} : v\r\n\r\n");
        let m = parse(msg.as_bytes()).unwrap();
        let h = m.headers().next().unwrap();
        assert_eq!(h.raw_name, name.as_bytes());
        assert_eq!(h.value, b"v");
    }

    #[test]
    fn salvage_keeps_rows_before_the_error() {
        let bytes = b"OPTIONS sip:a SIP/7.0\r\nVia: SIP/2.0/UDP h\r\nCall-ID: c\r\nbroken\r\n\r\n";
        assert_eq!(parse(bytes).unwrap_err(), ParseError::VersionNotSupported);
        let m = salvage(bytes).unwrap();
        assert_eq!(m.header_count(), 2);
        assert_eq!(m.first_value(HeaderName::CallId), Some(&b"c"[..]));
        assert!(m.body().is_empty());
        assert!(salvage(b"SIP/2.0 200 OK\r\n\r\n").is_none());
    }

    #[test]
    fn leading_crlf_is_ignored_and_missing_reason_tolerated() {
        let m = parse(b"\r\n\r\nSIP/2.0 100\r\n\r\n").unwrap();
        assert_eq!(
            m.kind(),
            Kind::Response {
                status: 100,
                reason: b""
            }
        );
        assert!(m.bytes().starts_with(b"SIP/2.0"));
    }
}
