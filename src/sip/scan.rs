//! Byte classes and the cursor the typed header parsers walk with (RFC 3261 §25.1).
//!
//! Every class is one bit in a 256-entry table, so a class test is one load and one AND. The
//! invariant the rest of `sip` relies on: inside a header value handed out by the index, CR and LF
//! only occur as part of a fold (CRLF followed by SP or HTAB), so the cursor may treat CR and LF
//! as linear whitespace without re-checking line structure.

use super::error::ParseError;

/// `token` characters: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~".
const TOKEN: u16 = 1;
/// SP or HTAB.
const WSP: u16 = 1 << 1;
/// SP, HTAB, CR, LF: linear whitespace inside an already indexed (fold-checked) value.
const LWS: u16 = 1 << 2;
/// RFC 3261 `unreserved`: alphanum / mark.
const UNRESERVED: u16 = 1 << 3;
/// Extra characters allowed unescaped in a URI user part: `user-unreserved` ("&" "=" "+" "$" ","
/// ";" "?" "/") and, deliberately liberal, "#" (phones dial feature codes such as `*21#` raw).
const USER_EXTRA: u16 = 1 << 4;
/// Extra characters allowed in a password: "&" "=" "+" "$" ",".
const PASSWORD_EXTRA: u16 = 1 << 5;
/// `param-unreserved`: "[" "]" "/" ":" "&" "+" "$".
const PARAM_EXTRA: u16 = 1 << 6;
/// `hnv-unreserved`: "[" "]" "/" "?" ":" "+" "$".
const HEADER_EXTRA: u16 = 1 << 7;
/// Characters of a host name or IPv4 address: alphanum "-" "." and, liberally, "_".
const HOST: u16 = 1 << 8;
/// `word` of a Call-ID: token characters and "(" ")" "<" ">" ":" "\" DQUOTE "/" "[" "]" "?" "{" "}".
const WORD: u16 = 1 << 9;
/// Hexadecimal digit.
const HEX: u16 = 1 << 10;
/// Characters of a generic parameter value that is not a quoted string: token, or a host that may
/// be an IPv6 address with or without brackets (RFC 5118 §4.5 shows both for `received`).
const GEN_VALUE: u16 = 1 << 11;
/// Characters of a `tel` URI number: digits, hex digits, "*" "#" "+" and visual separators.
const TEL_NUMBER: u16 = 1 << 12;
/// Scheme characters after the first letter: ALPHA / DIGIT / "+" / "-" / ".".
const SCHEME: u16 = 1 << 13;
/// Host characters that cannot appear in an IPv4 address (letters, "-", "_").
const HOST_NAME: u16 = 1 << 15;
/// Characters allowed in an opaque (non-SIP, non-tel) URI: visible ASCII except `<` `>` `"`, and
/// UTF-8 octets.
const OPAQUE: u16 = 1 << 14;

const fn classes() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut c = 0u16;
        let alpha = b.is_ascii_alphabetic();
        let digit = b.is_ascii_digit();
        let alnum = alpha || digit;
        if alnum
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            )
        {
            c |= TOKEN | WORD | GEN_VALUE;
        }
        if matches!(b, b' ' | b'\t') {
            c |= WSP | LWS;
        }
        if matches!(b, b'\r' | b'\n') {
            c |= LWS;
        }
        if alnum
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            )
        {
            c |= UNRESERVED;
        }
        if matches!(
            b,
            b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/' | b'#'
        ) {
            c |= USER_EXTRA;
        }
        if matches!(b, b'&' | b'=' | b'+' | b'$' | b',') {
            c |= PASSWORD_EXTRA;
        }
        if matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$') {
            c |= PARAM_EXTRA;
        }
        if matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$') {
            c |= HEADER_EXTRA;
        }
        if alnum || matches!(b, b'-' | b'.' | b'_') {
            c |= HOST;
        }
        if alpha || matches!(b, b'-' | b'_') {
            c |= HOST_NAME;
        }
        if matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        ) {
            c |= WORD;
        }
        if b.is_ascii_hexdigit() {
            c |= HEX;
        }
        if matches!(b, b':' | b'[' | b']') {
            c |= GEN_VALUE;
        }
        if b.is_ascii_hexdigit() || matches!(b, b'*' | b'#' | b'+' | b'-' | b'.' | b'(' | b')') {
            c |= TEL_NUMBER;
        }
        if alnum || matches!(b, b'+' | b'-' | b'.') {
            c |= SCHEME;
        }
        if (b > 0x20 && b < 0x7f && !matches!(b, b'<' | b'>' | b'"')) || b >= 0x80 {
            c |= OPAQUE;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CLASS: [u16; 256] = classes();

#[inline(always)]
fn has(b: u8, class: u16) -> bool {
    CLASS[usize::from(b)] & class != 0
}

/// Is `b` a `token` character?
#[inline(always)]
pub fn is_token(b: u8) -> bool {
    has(b, TOKEN)
}

/// Is `b` SP or HTAB?
#[inline(always)]
pub fn is_wsp(b: u8) -> bool {
    has(b, WSP)
}

/// Is `b` linear whitespace inside an indexed value (SP, HTAB, or the CR/LF of a fold)?
#[inline(always)]
pub fn is_lws(b: u8) -> bool {
    has(b, LWS)
}

/// Is `b` a `word` character (Call-ID)?
pub fn is_word(b: u8) -> bool {
    has(b, WORD)
}

/// Is `b` a host name / IPv4 character?
pub fn is_host(b: u8) -> bool {
    has(b, HOST)
}

/// Length of the run of host characters at the start of `s`, and whether any of them is a
/// letter, `-` or `_` (otherwise the run can only be an IPv4 address). One table load per octet.
#[inline]
pub fn host_run(s: &[u8]) -> (usize, bool) {
    let mut name = 0u16;
    let mut len = 0;
    for &b in s {
        let class = CLASS[usize::from(b)];
        if class & HOST == 0 {
            break;
        }
        name |= class;
        len += 1;
    }
    (len, name & HOST_NAME != 0)
}

/// Octets of a Call-ID: `word` characters and "@".
static CALL_ID_OCTET: [bool; 256] = {
    let class = classes();
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = class[i] & WORD != 0 || i == b'@' as usize;
        i += 1;
    }
    t
};

/// Is `s` a Call-ID, `word [ "@" word ]`: word characters and at most one "@" that is neither
/// first nor last? One table load and one AND per octet, then the "@" found word-at-a-time.
pub fn is_call_id(s: &[u8]) -> bool {
    let mut octets_ok = true;
    for &b in s {
        octets_ok &= CALL_ID_OCTET[usize::from(b)];
    }
    octets_ok
        && match find(s, b'@') {
            None => !s.is_empty(),
            Some(at) => {
                at > 0 && at + 1 < s.len() && find(s.get(at + 1..).unwrap_or(&[]), b'@').is_none()
            }
        }
}

/// Is `b` a scheme character after the first letter?
pub fn is_scheme(b: u8) -> bool {
    has(b, SCHEME)
}

/// Is `b` allowed in an opaque URI?
pub fn is_opaque(b: u8) -> bool {
    has(b, OPAQUE)
}

/// Is `b` allowed in a `tel` number?
pub fn is_tel_number(b: u8) -> bool {
    has(b, TEL_NUMBER)
}

/// Which URI component a run of characters belongs to: each allows a different set unescaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriPart {
    /// `user`, plus "#" (phones dial feature codes such as `*21#` unescaped).
    User,
    /// `password`.
    Password,
    /// `pname` / `pvalue` of a URI parameter.
    Param,
    /// `hname` / `hvalue` of a URI header.
    Header,
}

impl UriPart {
    fn class(self) -> u16 {
        match self {
            UriPart::User => UNRESERVED | USER_EXTRA,
            UriPart::Password => UNRESERVED | PASSWORD_EXTRA,
            UriPart::Param => UNRESERVED | PARAM_EXTRA,
            UriPart::Header => UNRESERVED | HEADER_EXTRA,
        }
    }
}

/// Checks that `part` is made of characters allowed in a URI component, `%HH` escapes included.
/// Empty is allowed; callers that need 1* check length themselves.
pub fn valid_uri_part(part: &[u8], which: UriPart) -> bool {
    let class = which.class();
    let mut i = 0;
    while let Some(&b) = part.get(i) {
        if b == b'%' {
            match (part.get(i + 1), part.get(i + 2)) {
                (Some(&h), Some(&l)) if has(h, HEX) && has(l, HEX) => i += 3,
                _ => return false,
            }
        } else if has(b, class) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Value of one hexadecimal digit (callers have checked it is one).
pub fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Is `b` a hexadecimal digit?
pub fn is_hex(b: u8) -> bool {
    has(b, HEX)
}

/// Trims SP, HTAB, CR and LF from both ends of an indexed value.
pub fn trim_lws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if is_lws(*first) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = s {
        if is_lws(*last) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Parses `1*DIGIT` into a `u32`; `None` when empty, not all digits, or above 2^32-1.
pub fn parse_u32(digits: &[u8]) -> Option<u32> {
    if digits.is_empty() {
        return None;
    }
    let mut v: u32 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u32::from(d - b'0'))?;
    }
    Some(v)
}

/// Parses a port (`1*DIGIT`, at most 65535).
pub fn parse_port(digits: &[u8]) -> Option<u16> {
    parse_u32(digits).and_then(|v| u16::try_from(v).ok())
}

/// Strips the surrounding DQUOTEs of a quoted string; returns other values unchanged. Quoted pairs
/// (`\x`) stay as written: see [`has_quoted_pair`].
pub fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

/// Does the inner text of a quoted string contain a quoted-pair (`\x`)?
pub fn has_quoted_pair(inner: &[u8]) -> bool {
    memchr::memchr(b'\\', inner).is_some()
}

/// Offset of the first CR or LF at or after `from`: where the line starting there ends.
/// (memchr's SSE2 searcher called directly, inlined, measured 15% slower on the INVITE than this
/// runtime-dispatched AVX2 `memchr2`.)
#[inline(always)]
pub fn find_line_end(b: &[u8], from: usize) -> Option<usize> {
    memchr::memchr2(b'\r', b'\n', b.get(from..)?).map(|i| from + i)
}

/// Offset of the first `needle` (a few octets, not empty) in `b`: each occurrence of its first
/// octet checked in place. In a SIP head, where that octet recurs every few dozen octets, this
/// costs less than `memmem::find`, which builds a searcher on every call (≈ 1,700 instructions).
pub fn find_short(b: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, _) = needle.split_first()?;
    memchr::memchr_iter(first, b).find(|&at| b[at..].starts_with(needle))
}

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// Offset of the first `needle` in `b[from..to]`. Reads whole little-endian 8-octet words
/// (SWAR: an exact zero-octet test on `word ^ needle`), which beats a call into `memchr` for the
/// few octets a header name spans. Words may extend past `to` while they stay inside `b`.
#[inline(always)]
pub fn find_byte(b: &[u8], from: usize, to: usize, needle: u8) -> Option<usize> {
    let pattern = u64::from_le_bytes([needle; 8]);
    let mut i = from;
    while i < to {
        let Some(word) = b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) else {
            return b
                .get(i..to)?
                .iter()
                .position(|&c| c == needle)
                .map(|p| i + p);
        };
        let x = u64::from_le_bytes(word) ^ pattern;
        // High bit set exactly in the octets of `x` that are zero (no carries between octets).
        let zero = !(((x & LOW7) + LOW7) | x | LOW7);
        if zero != 0 {
            let at = i + (zero.trailing_zeros() / 8) as usize;
            return (at < to).then_some(at);
        }
        i += 8;
    }
    None
}

/// Offset of the first `needle` in `hay` (SWAR, see [`find_byte`]): for the short strings of a
/// URI or a start line this beats `memchr`, whose per-call set-up dominates below ~64 octets.
#[inline]
pub fn find(hay: &[u8], needle: u8) -> Option<usize> {
    find_byte(hay, 0, hay.len(), needle)
}

/// A forward-only reader over one header value (or one URI), used by the typed parsers.
///
/// Every method is total: running off the end yields `None`/`false`, never a panic.
#[derive(Clone, Debug)]
pub struct Cursor<'b> {
    bytes: &'b [u8],
    pos: usize,
}

impl<'b> Cursor<'b> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'b [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    /// The byte under the cursor.
    #[inline]
    pub fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Current offset into the bytes given to [`Cursor::new`].
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Moves back to an offset obtained from [`Cursor::pos`].
    pub fn set_pos(&mut self, pos: usize) {
        self.pos = pos.min(self.bytes.len());
    }

    /// The bytes between two offsets of this cursor (empty when out of order or out of range).
    pub fn slice(&self, from: usize, to: usize) -> &'b [u8] {
        self.bytes.get(from..to).unwrap_or(&[])
    }

    /// Everything not yet consumed.
    pub fn rest(&self) -> &'b [u8] {
        self.bytes.get(self.pos..).unwrap_or(&[])
    }

    /// Is everything consumed?
    pub fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    /// Skips linear whitespace (SP, HTAB and folds).
    #[inline]
    pub fn skip_lws(&mut self) {
        // Usually there is none: test once before looping.
        if self.peek().is_some_and(is_lws) {
            self.take_while(is_lws);
        }
    }

    /// Consumes `b` if it is next.
    #[inline]
    pub fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Consumes `SWS b SWS` (the RFC's SEMI, COMMA, SLASH, EQUAL, COLON) if `b` comes next after
    /// optional whitespace; otherwise leaves the cursor where it was.
    pub fn eat_separator(&mut self, b: u8) -> bool {
        let save = self.pos;
        self.skip_lws();
        if self.eat(b) {
            self.skip_lws();
            true
        } else {
            self.pos = save;
            false
        }
    }

    /// Consumes the longest run of bytes for which `keep` holds (possibly empty).
    #[inline]
    pub fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'b [u8] {
        // Work on a local slice so the loop keeps its index in a register.
        let rest = self.rest();
        let n = rest.iter().position(|&b| !keep(b)).unwrap_or(rest.len());
        self.pos += n;
        rest.get(..n).unwrap_or(&[])
    }

    /// Consumes a run of `gen-value` characters (token, `:`, `[`, `]`) and says whether it was
    /// made of token characters only, in one pass.
    #[inline]
    pub fn gen_value(&mut self) -> (&'b [u8], bool) {
        let rest = self.rest();
        let mut all_token = true;
        let mut n = 0;
        for &b in rest {
            let class = CLASS[usize::from(b)];
            if class & GEN_VALUE == 0 {
                break;
            }
            all_token &= class & TOKEN != 0;
            n += 1;
        }
        self.pos += n;
        (rest.get(..n).unwrap_or(&[]), all_token)
    }

    /// Consumes a non-empty token.
    #[inline]
    pub fn token(&mut self) -> Option<&'b [u8]> {
        let t = self.take_while(is_token);
        (!t.is_empty()).then_some(t)
    }

    /// Consumes a quoted string starting at the cursor and returns it with its quotes.
    /// Quoted pairs (`\` followed by any octet but CR/LF, up to 0x7F) are skipped over.
    pub fn quoted(&mut self) -> Result<&'b [u8], ParseError> {
        let start = self.pos;
        if !self.eat(b'"') {
            return Err(ParseError::UnterminatedQuote);
        }
        loop {
            let rest = self.rest();
            let Some(i) = memchr::memchr2(b'"', b'\\', rest) else {
                self.pos = self.bytes.len();
                return Err(ParseError::UnterminatedQuote);
            };
            self.pos += i;
            if self.eat(b'"') {
                return Ok(self.slice(start, self.pos));
            }
            // A backslash: the next octet is quoted.
            self.pos += 1;
            match self.peek() {
                Some(b) if b < 0x80 && b != b'\r' && b != b'\n' => self.pos += 1,
                _ => return Err(ParseError::UnterminatedQuote),
            }
        }
    }

    /// Consumes `1*DIGIT` as a `u32`; `None` (cursor unmoved) when no digit is next; `Some(None)`
    /// when the digits overflow 2^32-1.
    pub fn number(&mut self) -> Option<Option<u32>> {
        let digits = self.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() {
            return None;
        }
        Some(parse_u32(digits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_class_matches_rfc3261() {
        for b in 0u8..=255 {
            let expected = b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
            assert_eq!(is_token(b), expected, "byte {b:#x}");
        }
    }

    #[test]
    fn uri_parts_accept_escapes_and_reject_bad_ones() {
        assert!(valid_uri_part(b"v%61lue%25%34%31", UriPart::Param));
        assert!(!valid_uri_part(b"bad%4", UriPart::Param));
        assert!(!valid_uri_part(b"bad%zz", UriPart::User));
        assert!(valid_uri_part(
            b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
            UriPart::User
        ));
        assert!(valid_uri_part(
            b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)",
            UriPart::Password
        ));
        assert!(!valid_uri_part(b"a b", UriPart::User));
        assert!(!valid_uri_part(b"a@b", UriPart::User));
    }

    /// `is_call_id` as it was (one pass counting "@"s): the oracle of the property test.
    fn is_call_id_counting(s: &[u8]) -> bool {
        let mut all = WORD;
        let mut ats = 0usize;
        for &b in s {
            all &= CLASS[usize::from(b)] | if b == b'@' { WORD } else { 0 };
            ats += usize::from(b == b'@');
        }
        all & WORD != 0
            && ats <= 1
            && !matches!(s.first(), None | Some(b'@'))
            && s.last() != Some(&b'@')
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

        /// The Call-ID check accepts exactly what the counting one accepted, on Call-ID-shaped
        /// octets (words, "@"s first, last and doubled, the octets a word may not hold) and on
        /// any octets.
        #[test]
        fn call_id_check_matches_the_counting_one(
            shaped in proptest::collection::vec(proptest::prop_oneof![
                proptest::prelude::Just(b'a'), proptest::prelude::Just(b'7'),
                proptest::prelude::Just(b'@'), proptest::prelude::Just(b'.'),
                proptest::prelude::Just(b'<'), proptest::prelude::Just(b' '),
                proptest::prelude::Just(b';'), proptest::prelude::Just(b'\r'),
                proptest::prelude::any::<u8>()], 0..48),
            any in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48),
        ) {
            for s in [&shaped, &any] {
                proptest::prop_assert_eq!(is_call_id(s), is_call_id_counting(s), "{:?}", s);
            }
        }

        /// `find_short` finds what `memmem::find` finds, for the needles sipfork gives it
        /// (the header block's end, `;oc`), on octets made of line ends, semicolons and `o`/`c`
        /// and on any octets.
        #[test]
        fn find_short_matches_memmem(
            shaped in proptest::collection::vec(proptest::prop_oneof![
                proptest::prelude::Just(b'\r'), proptest::prelude::Just(b'\n'),
                proptest::prelude::Just(b';'), proptest::prelude::Just(b'o'),
                proptest::prelude::Just(b'c'), proptest::prelude::any::<u8>()], 0..64),
            any in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            for s in [&shaped, &any] {
                for needle in [&b"\r\n\r\n"[..], b";oc"] {
                    proptest::prop_assert_eq!(
                        find_short(s, needle), memchr::memmem::find(s, needle), "{:?}", s);
                }
            }
        }
    }

    #[test]
    fn quoted_strings_end_at_the_first_unescaped_quote() {
        let mut c = Cursor::new(br#""J Rosenberg \\\""  <x>"#);
        assert_eq!(c.quoted().unwrap(), br#""J Rosenberg \\\"""#);
        let mut c = Cursor::new(b"\"open <sip:x>");
        assert_eq!(c.quoted(), Err(ParseError::UnterminatedQuote));
        let mut c = Cursor::new(b"\"ends in backslash\\");
        assert_eq!(c.quoted(), Err(ParseError::UnterminatedQuote));
    }

    #[test]
    fn numbers_detect_overflow() {
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"0009"), Some(9));
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_port(b"65536"), None);
        let mut c = Cursor::new(b"36893488147419103232 REGISTER");
        assert_eq!(c.number(), Some(None));
    }

    #[test]
    fn find_byte_matches_a_plain_search() {
        let hay = b"Content-Length : 12\r\nX: y:z\r\n\x80:\xff";
        for from in 0..hay.len() {
            for to in from..=hay.len() {
                let expected = hay[from..to]
                    .iter()
                    .position(|&c| c == b':')
                    .map(|p| from + p);
                assert_eq!(find_byte(hay, from, to, b':'), expected, "{from}..{to}");
            }
        }
        assert_eq!(find_line_end(b"ab\ncd", 0), Some(2));
        assert_eq!(find_line_end(b"ab", 5), None);
    }

    #[test]
    fn trim_handles_folds() {
        assert_eq!(trim_lws(b"\r\n  a b \r\n "), b"a b");
        assert_eq!(trim_lws(b"   "), b"");
    }
}
