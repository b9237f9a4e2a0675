//! URIs: `sip`/`sips` (RFC 3261 §19.1), `tel` (RFC 3966), anything else kept opaque, and the
//! comparison rules of RFC 3261 §19.1.4.
//!
//! Parsing validates the whole grammar once and keeps every component as a slice of the original
//! bytes, still escaped. `%HH` escapes are decoded on demand, exactly once, and only in the
//! components whose grammar has `escaped` (user, password, parameters, headers): in a host or a
//! method a `%` is an error or a literal, never an escape.
//!
//! Invariant: a parsed [`SipUri`]'s parameter and header spans have been validated, so their
//! iterators only split, they never fail.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::ParseError;
use super::scan::{
    find, hex_value, host_run, is_hex, is_host, is_opaque, is_scheme, is_tel_number, parse_port,
    valid_uri_part, UriPart,
};

/// A URI scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme<'b> {
    /// `sip`.
    Sip,
    /// `sips`.
    Sips,
    /// `tel`.
    Tel,
    /// Any other scheme, as written (a proxy answers 416 for these).
    Other(&'b [u8]),
}

/// A host: domain name, IPv4 address or IPv6 reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host<'b> {
    /// A domain name as written (compare case-insensitively).
    Domain(&'b [u8]),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address (written as `[...]`).
    V6(Ipv6Addr),
}

impl<'b> Host<'b> {
    /// Parses `hostname / IPv4address / IPv6reference` (brackets required for IPv6).
    pub fn parse(raw: &'b [u8]) -> Result<Host<'b>, ParseError> {
        match Self::scan(raw)? {
            (host, len) if len == raw.len() => Ok(host),
            _ => Err(ParseError::BadUri),
        }
    }

    /// Reads the host at the start of `s`, up to the first octet that cannot belong to one, and
    /// returns it with its length. Host characters only, no empty label, no label starting with
    /// "-", one trailing dot allowed; digits and dots only must be IPv4.
    pub(crate) fn scan(s: &'b [u8]) -> Result<(Host<'b>, usize), ParseError> {
        // Most hosts sipfork reads (Via sent-by, device contacts) are dotted quads: read in one
        // pass, they skip the general walk's three.
        match scan_dotted_quad(s) {
            Some((addr, len)) => Ok((Host::V4(addr), len)),
            None => Self::scan_general(s),
        }
    }

    /// [`Host::scan`] without the dotted-quad shortcut: the host run, its labels, then IPv4
    /// when it holds digits and dots only.
    fn scan_general(s: &'b [u8]) -> Result<(Host<'b>, usize), ParseError> {
        let bad = ParseError::BadUri;
        if s.first() == Some(&b'[') {
            let close = find(s, b']').ok_or(bad)?;
            let inner = s.get(1..close).unwrap_or(&[]);
            return parse_ipv6(inner)
                .map(|a| (Host::V6(a), close + 1))
                .ok_or(bad);
        }
        let (len, name_chars) = host_run(s);
        let raw = s.get(..len).unwrap_or(&[]);
        // Labels: none empty, none starting with "-"; one trailing dot is allowed.
        let labels_ok = !matches!(raw.first(), None | Some(b'.' | b'-'))
            && !raw
                .windows(2)
                .any(|w| w[0] == b'.' && matches!(w[1], b'.' | b'-'));
        if !labels_ok {
            Err(bad)
        } else if name_chars {
            Ok((Host::Domain(raw), len))
        } else {
            parse_ipv4(raw).map(|a| (Host::V4(a), len)).ok_or(bad)
        }
    }

    /// RFC 3261 §19.1.4 host comparison: domains case-insensitively, addresses by value; a name
    /// never equals an address.
    pub fn matches(&self, other: &Host<'_>) -> bool {
        match (self, other) {
            (Host::Domain(a), Host::Domain(b)) => a.eq_ignore_ascii_case(b),
            (Host::V4(a), Host::V4(b)) => a == b,
            (Host::V6(a), Host::V6(b)) => a == b,
            _ => false,
        }
    }

    /// The address, if this host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::V4(a) => Some(IpAddr::V4(*a)),
            Host::V6(a) => Some(IpAddr::V6(*a)),
            Host::Domain(_) => None,
        }
    }
}

/// A dotted quad (1 to 3 digits per octet, each ≤ 255) at the start of `s` that the host run
/// ends right after (the next octet is not a host character), with its length: exactly the
/// hosts for which [`Host::scan`]'s general walk returns an IPv4 address. `None` sends the
/// host to that walk.
#[inline]
fn scan_dotted_quad(s: &[u8]) -> Option<(Ipv4Addr, usize)> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            (s.get(i) == Some(&b'.')).then_some(())?;
            i += 1;
        }
        let (mut value, start) = (0u16, i);
        while let Some(&c) = s.get(i).filter(|c| c.is_ascii_digit() && i - start < 3) {
            value = value * 10 + u16::from(c - b'0');
            i += 1;
        }
        (i > start).then_some(())?;
        *octet = u8::try_from(value).ok()?;
    }
    // A fourth dot, a fourth digit or a letter: the run goes on, the general walk decides.
    if s.get(i).is_some_and(|&c| is_host(c)) {
        return None;
    }
    Some((Ipv4Addr::from(octets), i))
}

/// Parses a dotted-quad IPv4 address (1 to 3 digits per octet).
pub fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let (mut index, mut value, mut digits) = (0usize, 0u16, 0u8);
    for &c in s {
        if c == b'.' {
            if digits == 0 {
                return None;
            }
            *octets.get_mut(index)? = u8::try_from(value).ok()?;
            (index, value, digits) = (index + 1, 0, 0);
        } else if c.is_ascii_digit() && digits < 3 {
            value = value * 10 + u16::from(c - b'0');
            digits += 1;
        } else {
            return None;
        }
    }
    if index != 3 || digits == 0 {
        return None;
    }
    *octets.get_mut(3)? = u8::try_from(value).ok()?;
    Some(Ipv4Addr::from(octets))
}

/// Parses an IPv6 address without brackets.
pub fn parse_ipv6(s: &[u8]) -> Option<Ipv6Addr> {
    if s.len() > 45 || !s.iter().all(|&c| is_hex(c) || c == b':' || c == b'.') {
        return None;
    }
    core::str::from_utf8(s).ok()?.parse().ok()
}

/// Parses an address given with or without IPv6 brackets (as in Via `received`, RFC 5118 §4.5).
pub fn parse_ip(s: &[u8]) -> Option<IpAddr> {
    match s {
        [b'[', inner @ .., b']'] => parse_ipv6(inner).map(IpAddr::V6),
        _ => parse_ipv4(s)
            .map(IpAddr::V4)
            .or_else(|| parse_ipv6(s).map(IpAddr::V6)),
    }
}

/// A parsed URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uri<'b> {
    /// `sip:` or `sips:`.
    Sip(SipUri<'b>),
    /// `tel:`.
    Tel(TelUri<'b>),
    /// Any other scheme: syntax checked loosely, content opaque.
    Other(OpaqueUri<'b>),
}

/// A `sip:`/`sips:` URI; components are slices of the original, still escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipUri<'b> {
    /// The whole URI as written.
    pub raw: &'b [u8],
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part (escaped), if any.
    pub user: Option<&'b [u8]>,
    /// The password (escaped), if any.
    pub password: Option<&'b [u8]>,
    /// The host.
    pub host: Host<'b>,
    /// The host as written (IPv6 with brackets), for copying.
    pub host_raw: &'b [u8],
    /// The explicit port.
    pub port: Option<u16>,
    /// `;name[=value]` parameters.
    pub params: UriParams<'b>,
    /// `?name=value&...` headers.
    pub headers: UriHeaders<'b>,
}

/// A `tel:` URI (RFC 3966).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelUri<'b> {
    /// The whole URI as written.
    pub raw: &'b [u8],
    /// The number with its visual separators (`+1-201-555-0123`).
    pub number: &'b [u8],
    /// `;name[=value]` parameters.
    pub params: UriParams<'b>,
}

/// A URI of a scheme this element does not interpret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpaqueUri<'b> {
    /// The whole URI as written.
    pub raw: &'b [u8],
    /// The scheme as written.
    pub scheme: &'b [u8],
    /// Everything after the colon.
    pub rest: &'b [u8],
}

impl<'b> Uri<'b> {
    /// Parses a URI; any syntax error is [`ParseError::BadUri`].
    #[inline]
    pub fn parse(raw: &'b [u8]) -> Result<Uri<'b>, ParseError> {
        // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ), then ":".
        let colon = raw.iter().position(|&c| !is_scheme(c)).unwrap_or(raw.len());
        if !raw.first().is_some_and(u8::is_ascii_alphabetic) || raw.get(colon) != Some(&b':') {
            return Err(ParseError::BadUri);
        }
        let scheme = raw.get(..colon).unwrap_or(&[]);
        let rest = raw.get(colon + 1..).unwrap_or(&[]);
        if scheme.eq_ignore_ascii_case(b"sip") {
            parse_sip(raw, rest, false).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case(b"sips") {
            parse_sip(raw, rest, true).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case(b"tel") {
            parse_tel(raw, rest).map(Uri::Tel)
        } else if !rest.is_empty() && rest.iter().all(|&c| is_opaque(c)) {
            Ok(Uri::Other(OpaqueUri { raw, scheme, rest }))
        } else {
            Err(ParseError::BadUri)
        }
    }

    /// The URI as written.
    pub fn raw(&self) -> &'b [u8] {
        match self {
            Uri::Sip(u) => u.raw,
            Uri::Tel(u) => u.raw,
            Uri::Other(u) => u.raw,
        }
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme<'b> {
        match self {
            Uri::Sip(u) if u.secure => Scheme::Sips,
            Uri::Sip(_) => Scheme::Sip,
            Uri::Tel(_) => Scheme::Tel,
            Uri::Other(u) => Scheme::Other(u.scheme),
        }
    }

    /// The SIP/SIPS URI, if it is one.
    pub fn as_sip(&self) -> Option<&SipUri<'b>> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// URI equivalence: RFC 3261 §19.1.4 for SIP/SIPS, RFC 3966 §4 for tel, and for other
    /// schemes a case-insensitive scheme with an identical remainder.
    pub fn equivalent(&self, other: &Uri<'_>) -> bool {
        match (self, other) {
            (Uri::Sip(a), Uri::Sip(b)) => a.equivalent(b),
            (Uri::Tel(a), Uri::Tel(b)) => a.equivalent(b),
            (Uri::Other(a), Uri::Other(b)) => {
                a.scheme.eq_ignore_ascii_case(b.scheme) && a.rest == b.rest
            }
            _ => false,
        }
    }
}

#[inline]
fn parse_sip<'b>(raw: &'b [u8], rest: &'b [u8], secure: bool) -> Result<SipUri<'b>, ParseError> {
    let bad = ParseError::BadUri;
    // The userinfo ends at the only "@": neither host, parameters nor headers may contain one.
    let (user, password, hostpart) = match find(rest, b'@') {
        Some(at) => {
            let userinfo = rest.get(..at).unwrap_or(&[]);
            let (user, password) = match find(userinfo, b':') {
                Some(c) => (userinfo.get(..c).unwrap_or(&[]), userinfo.get(c + 1..)),
                None => (userinfo, None),
            };
            if user.is_empty() || !valid_uri_part(user, UriPart::User) {
                return Err(bad);
            }
            if password.is_some_and(|p| !valid_uri_part(p, UriPart::Password)) {
                return Err(bad);
            }
            (Some(user), password, rest.get(at + 1..).unwrap_or(&[]))
        }
        None => (None, None, rest),
    };
    let (host, host_len) = Host::scan(hostpart)?;
    let host_raw = hostpart.get(..host_len).unwrap_or(&[]);
    let mut tail = hostpart.get(host_len..).unwrap_or(&[]);
    let mut port = None;
    if let Some(after) = tail.strip_prefix(b":") {
        let digits = after
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(after.len());
        port = Some(parse_port(after.get(..digits).unwrap_or(&[])).ok_or(bad)?);
        tail = after.get(digits..).unwrap_or(&[]);
    }
    let (params_raw, headers_raw) = match find(tail, b'?') {
        Some(q) => (tail.get(..q).unwrap_or(&[]), tail.get(q + 1..)),
        None => (tail, None),
    };
    let params = match params_raw {
        [] => &[][..],
        [b';', p @ ..] if p.split(|&c| c == b';').all(valid_uri_param) => p,
        _ => return Err(bad),
    };
    let headers = headers_raw.unwrap_or(&[]);
    if headers_raw.is_some() && !headers.split(|&c| c == b'&').all(valid_uri_header) {
        return Err(bad);
    }
    Ok(SipUri {
        raw,
        secure,
        user,
        password,
        host,
        host_raw,
        port,
        params: UriParams { raw: params },
        headers: UriHeaders { raw: headers },
    })
}

/// `pname [ "=" pvalue ]`, both non-empty.
fn valid_uri_param(p: &[u8]) -> bool {
    let (name, value) = split_eq(p);
    !name.is_empty()
        && valid_uri_part(name, UriPart::Param)
        && value.is_none_or(|v| !v.is_empty() && valid_uri_part(v, UriPart::Param))
}

/// `hname "=" hvalue`, name non-empty, value possibly empty.
fn valid_uri_header(h: &[u8]) -> bool {
    match split_eq(h) {
        (name, Some(value)) => {
            !name.is_empty()
                && valid_uri_part(name, UriPart::Header)
                && valid_uri_part(value, UriPart::Header)
        }
        (_, None) => false,
    }
}

fn split_eq(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    match find(s, b'=') {
        Some(i) => (s.get(..i).unwrap_or(&[]), s.get(i + 1..)),
        None => (s, None),
    }
}

fn parse_tel<'b>(raw: &'b [u8], rest: &'b [u8]) -> Result<TelUri<'b>, ParseError> {
    let end = find(rest, b';').unwrap_or(rest.len());
    let number = rest.get(..end).unwrap_or(&[]);
    let digits_ok = match number.strip_prefix(b"+") {
        Some(global) => global.iter().any(u8::is_ascii_digit) && !global.contains(&b'+'),
        None => {
            number.iter().any(|&c| is_hex(c) || c == b'*' || c == b'#') && !number.contains(&b'+')
        }
    };
    if !digits_ok || !number.iter().all(|&c| is_tel_number(c)) {
        return Err(ParseError::BadUri);
    }
    let params = rest.get(end + 1..).unwrap_or(&[]);
    if end < rest.len() && !params.split(|&c| c == b';').all(valid_uri_param) {
        return Err(ParseError::BadUri);
    }
    Ok(TelUri {
        raw,
        number,
        params: UriParams { raw: params },
    })
}

/// The `;name[=value]` parameters of a URI, names and values still escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UriParams<'b> {
    raw: &'b [u8],
}

impl<'b> UriParams<'b> {
    /// The parameters as written, without the leading `;`.
    pub fn raw(&self) -> &'b [u8] {
        self.raw
    }

    /// The parameter whose (unescaped) name equals `name` case-insensitively: `Some(None)` when
    /// present without a value (`;lr`), `Some(Some(value))` with one.
    pub fn get(&self, name: &str) -> Option<Option<&'b [u8]>> {
        self.get_raw(name.as_bytes())
    }

    /// Like [`UriParams::get`] with a name that may itself be escaped.
    pub fn get_raw(&self, name: &[u8]) -> Option<Option<&'b [u8]>> {
        self.into_iter()
            .find(|(n, _)| escaped_eq(n, name, true))
            .map(|(_, v)| v)
    }
}

impl<'b> IntoIterator for UriParams<'b> {
    type Item = (&'b [u8], Option<&'b [u8]>);
    type IntoIter = UriParamIter<'b>;
    fn into_iter(self) -> UriParamIter<'b> {
        UriParamIter {
            rest: (!self.raw.is_empty()).then_some(self.raw),
        }
    }
}

/// Iterator over [`UriParams`].
#[derive(Clone, Debug)]
pub struct UriParamIter<'b> {
    rest: Option<&'b [u8]>,
}

impl<'b> Iterator for UriParamIter<'b> {
    type Item = (&'b [u8], Option<&'b [u8]>);
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest?;
        let (piece, next) = match find(rest, b';') {
            Some(i) => (rest.get(..i).unwrap_or(&[]), rest.get(i + 1..)),
            None => (rest, None),
        };
        self.rest = next;
        Some(split_eq(piece))
    }
}

/// The `?name=value&...` headers of a URI, still escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct UriHeaders<'b> {
    raw: &'b [u8],
}

impl<'b> UriHeaders<'b> {
    /// The headers as written, without the leading `?`.
    pub fn raw(&self) -> &'b [u8] {
        self.raw
    }

    /// Are there any headers?
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

impl<'b> IntoIterator for UriHeaders<'b> {
    type Item = (&'b [u8], &'b [u8]);
    type IntoIter = core::iter::FilterMap<
        core::slice::Split<'b, u8, fn(&u8) -> bool>,
        fn(&'b [u8]) -> Option<(&'b [u8], &'b [u8])>,
    >;
    fn into_iter(self) -> Self::IntoIter {
        fn amp(c: &u8) -> bool {
            *c == b'&'
        }
        fn pair(h: &[u8]) -> Option<(&[u8], &[u8])> {
            match split_eq(h) {
                (n, Some(v)) if !n.is_empty() => Some((n, v)),
                _ => None,
            }
        }
        self.raw
            .split(amp as fn(&u8) -> bool)
            .filter_map(pair as fn(&'b [u8]) -> Option<_>)
    }
}

/// Decodes every `%HH` escape once. Borrows when there is none; allocates only when there is.
pub fn unescape(s: &[u8]) -> Cow<'_, [u8]> {
    if find(s, b'%').is_none() {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        match (c, s.get(i + 1), s.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if is_hex(h) && is_hex(l) => {
                out.push(hex_value(h) << 4 | hex_value(l));
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

/// RFC 2396 `reserved`: an escaped reserved character is not equivalent to the literal one.
fn is_reserved(c: u8) -> bool {
    matches!(
        c,
        b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b','
    )
}

/// The characters of `s` for comparison: escapes of non-reserved characters decoded, escaped
/// reserved characters kept distinct from literal ones, letters folded when `fold_case`.
fn normalized(s: &[u8], fold_case: bool) -> impl Iterator<Item = u16> + '_ {
    let mut i = 0;
    core::iter::from_fn(move || {
        let c = *s.get(i)?;
        let (v, escaped_reserved) = match (c, s.get(i + 1), s.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if is_hex(h) && is_hex(l) => {
                i += 3;
                let v = hex_value(h) << 4 | hex_value(l);
                (v, is_reserved(v))
            }
            _ => {
                i += 1;
                (c, false)
            }
        };
        let v = if fold_case { v.to_ascii_lowercase() } else { v };
        Some(u16::from(v) | if escaped_reserved { 0x100 } else { 0 })
    })
}

/// Compares two escaped strings as RFC 3261 §19.1.4 does.
pub fn escaped_eq(a: &[u8], b: &[u8], fold_case: bool) -> bool {
    if a == b {
        return true;
    }
    normalized(a, fold_case).eq(normalized(b, fold_case))
}

/// Parameters that must match whenever either URI has them (RFC 3261 §19.1.4).
const STRICT_PARAMS: [&str; 5] = ["transport", "user", "ttl", "method", "maddr"];

impl<'b> SipUri<'b> {
    /// The user part with escapes decoded exactly once (`%00` becomes a NUL octet; the AOR is never
    /// cut there).
    pub fn user_unescaped(&self) -> Option<Cow<'b, [u8]>> {
        self.user.map(unescape)
    }

    /// A parameter by name (see [`UriParams::get`]).
    pub fn param(&self, name: &str) -> Option<Option<&'b [u8]>> {
        self.params.get(name)
    }

    /// The `transport` parameter value.
    pub fn transport(&self) -> Option<&'b [u8]> {
        self.param("transport").flatten()
    }

    /// The port requests for this URI go to when it names none (RFC 3261 §19.1.2): 5061 for a
    /// `sips:` URI or one with `;transport=tls`, else 5060.
    pub fn default_port(&self) -> u16 {
        default_port(
            self.secure
                || self
                    .transport()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"tls")),
        )
    }

    /// Is the `lr` parameter present (RFC 3261 §19.1.1 loose routing)?
    pub fn lr(&self) -> bool {
        self.param("lr").is_some()
    }

    /// The `maddr` parameter value.
    pub fn maddr(&self) -> Option<&'b [u8]> {
        self.param("maddr").flatten()
    }

    /// The `user` parameter value (`phone`, `ip`, ...).
    pub fn user_param(&self) -> Option<&'b [u8]> {
        self.param("user").flatten()
    }

    /// RFC 3261 §19.1.4 equivalence.
    ///
    /// Parameters and headers are compared pairwise, so a URI with more than
    /// [`MAX_COMPARED_PARAMS`] of either is equivalent only to the very same bytes: comparing
    /// never costs more than a bounded multiple of the URIs' length (a request with hundreds of
    /// parameters must not cost milliseconds before its digest is looked at).
    pub fn equivalent(&self, other: &SipUri<'_>) -> bool {
        if too_many_to_compare(self.params, self.headers)
            || too_many_to_compare(other.params, other.headers)
        {
            return self.raw == other.raw;
        }
        let same_opt = |a: Option<&[u8]>, b: Option<&[u8]>, fold: bool| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => escaped_eq(a, b, fold),
            _ => false,
        };
        if self.secure != other.secure
            || !same_opt(self.user, other.user, false)
            || !same_opt(self.password, other.password, false)
            || !self.host.matches(&other.host)
            || self.port != other.port
        {
            return false;
        }
        let strict_ok = STRICT_PARAMS
            .iter()
            .all(|p| match (self.param(p), other.param(p)) {
                (None, None) => true,
                (Some(a), Some(b)) => same_opt(a, b, true),
                _ => false,
            });
        // Other parameters are compared only when both URIs carry them; a repeated name is
        // judged by its first occurrence on both sides (as `param` reads it), which keeps the
        // relation reflexive and symmetric.
        let others_ok = self.params.into_iter().all(|(name, _)| {
            match (self.params.get_raw(name), other.params.get_raw(name)) {
                (Some(a), Some(b)) => same_opt(a, b, true),
                _ => true,
            }
        });
        strict_ok && others_ok && headers_match(self.headers, other.headers)
    }
}

/// Most parameters (or headers) per URI that equivalence compares pairwise.
pub const MAX_COMPARED_PARAMS: usize = 16;

fn too_many_to_compare(params: UriParams<'_>, headers: UriHeaders<'_>) -> bool {
    params.into_iter().nth(MAX_COMPARED_PARAMS).is_some()
        || headers.into_iter().nth(MAX_COMPARED_PARAMS).is_some()
}

/// Every header of each URI must appear in the other with the same value.
fn headers_match(a: UriHeaders<'_>, b: UriHeaders<'_>) -> bool {
    let contains = |set: UriHeaders<'_>, name: &[u8], value: &[u8]| {
        set.into_iter()
            .any(|(n, v)| escaped_eq(n, name, true) && escaped_eq(v, value, false))
    };
    a.into_iter().all(|(n, v)| contains(b, n, v)) && b.into_iter().all(|(n, v)| contains(a, n, v))
}

impl TelUri<'_> {
    /// RFC 3966 §4: numbers equal once visual separators are removed (hex digits case-folded),
    /// and the same parameters with the same values, in any order (pairwise, so past
    /// [`MAX_COMPARED_PARAMS`] only the very same bytes are equivalent, as for SIP URIs).
    pub fn equivalent(&self, other: &TelUri<'_>) -> bool {
        if [self.params, other.params]
            .iter()
            .any(|p| p.into_iter().nth(MAX_COMPARED_PARAMS).is_some())
        {
            return self.raw == other.raw;
        }
        let digits = |n: &[u8]| {
            n.iter()
                .filter(|c| !matches!(c, b'-' | b'.' | b'(' | b')'))
                .map(u8::to_ascii_lowercase)
                .collect::<Vec<u8>>()
        };
        let subset = |a: UriParams<'_>, b: UriParams<'_>| {
            a.into_iter().all(|(n, v)| {
                b.into_iter().any(|(m, w)| {
                    escaped_eq(n, m, true)
                        && match (v, w) {
                            (None, None) => true,
                            (Some(v), Some(w)) => escaped_eq(v, w, true),
                            _ => false,
                        }
                })
            })
        };
        digits(self.number) == digits(other.number)
            && subset(self.params, other.params)
            && subset(other.params, self.params)
    }
}

/// RFC 3261 §19.1.2's default port: 5061 over TLS, else 5060 (the URI's, a Via's sent-by).
pub fn default_port(tls: bool) -> u16 {
    if tls {
        5061
    } else {
        5060
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri<'_> {
        match Uri::parse(s.as_bytes()) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn the_default_port_is_5061_for_sips_and_transport_tls_else_5060() {
        for (uri, port) in [
            ("sips:1002@127.0.0.1", 5061),
            ("SIPS:1002@127.0.0.1;transport=tcp", 5061),
            ("sip:1002@127.0.0.1;transport=TLS", 5061),
            ("sip:1002@127.0.0.1;transport=tcp", 5060),
            ("sip:1002@127.0.0.1", 5060),
        ] {
            assert_eq!(sip(uri).default_port(), port, "{uri}");
            // Where the proxy sends it, and what the registrar stores for such a Contact.
            let want = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            assert_eq!(crate::core::proxy::uri_destination(&sip(uri)), Some(want));
            let source = "127.0.0.1:40000".parse().unwrap();
            let contact = Uri::parse(uri.as_bytes()).unwrap();
            assert_eq!(
                crate::core::registrar::location::destination(
                    crate::config::NatMode::Auto,
                    &contact,
                    source
                ),
                want,
                "{uri}"
            );
        }
        assert_eq!(sip("sips:1002@127.0.0.1:5070").default_port(), 5061);
    }

    #[test]
    fn uris_with_too_many_parameters_are_equivalent_only_to_the_same_bytes() {
        let mut a = b"sip:1000@127.0.0.1:5060".to_vec();
        for i in 0..400 {
            a.extend_from_slice(format!(";p{i}=v{i}").as_bytes());
        }
        let mut b = a.clone();
        b.extend_from_slice(b";x=y");
        let (ua, ub) = (Uri::parse(&a).unwrap(), Uri::parse(&b).unwrap());
        assert!(ua.equivalent(&ua));
        assert!(!ua.equivalent(&ub));
        // Reordered parameters are equivalent below the bound, not above it.
        let few_a = Uri::parse(b"sip:1000@h;a=1;b=2").unwrap();
        let few_b = Uri::parse(b"sip:1000@h;b=2;a=1").unwrap();
        assert!(few_a.equivalent(&few_b));
    }

    #[test]
    fn parses_components() {
        let u = sip("sips:alice:secret@[2001:db8::10]:5070;transport=tcp;lr?Subject=hi&x=");
        assert!(u.secure);
        assert_eq!(u.user, Some(&b"alice"[..]));
        assert_eq!(u.password, Some(&b"secret"[..]));
        assert_eq!(u.host, Host::V6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.host_raw, b"[2001:db8::10]");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport(), Some(&b"tcp"[..]));
        assert!(u.lr());
        let headers: Vec<_> = u.headers.into_iter().collect();
        assert_eq!(headers, vec![(&b"Subject"[..], &b"hi"[..]), (b"x", b"")]);
        let v4 = sip("sip:192.0.2.4");
        assert_eq!(v4.host, Host::V4(Ipv4Addr::new(192, 0, 2, 4)));
        assert_eq!(v4.user, None);
    }

    #[test]
    fn semicolons_before_at_belong_to_the_user() {
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user, Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host, Host::Domain(b"example.com"));
        assert!(u.params.raw().is_empty());
    }

    #[test]
    fn escapes_decode_exactly_once() {
        let u = sip("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31");
        assert_eq!(u.user_unescaped().unwrap().as_ref(), b"caller");
        assert!(u.lr(), "escaped parameter name %6C%72 is lr");
        assert_eq!(
            unescape(u.param("name").flatten().unwrap()).as_ref(),
            b"value%41"
        );
        let null = sip("sip:null-%00-null@example.com");
        assert_eq!(null.user_unescaped().unwrap().as_ref(), b"null-\0-null");
        assert!(matches!(
            sip("sip:plain@x").user_unescaped(),
            Some(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "sip:",
            "sip:@host",
            "sip:a@",
            "sip:a@ho st",
            "sip:a@host:99999",
            "sip:a@host;",
            "sip:a@host;=x",
            "sip:a@host;p=",
            "sip:a%2@host",
            "sip:a@[::1",
            "sip:a@192.0.2.300",
            "sip:a@host?noequals",
            "sip:a@host x",
            "<sip:a@host>",
            "1sip:x",
            "tel:",
            "tel:+",
            "mailto:",
        ] {
            assert!(Uri::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn other_schemes_stay_opaque() {
        let u = Uri::parse(b"nobodyKnowsThisScheme:totallyopaquecontent").unwrap();
        assert_eq!(u.scheme(), Scheme::Other(b"nobodyKnowsThisScheme"));
        let u = Uri::parse(b"soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(u.scheme(), Scheme::Other(b"soap.beep"));
        let t = Uri::parse(b"tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(t.scheme(), Scheme::Tel);
    }

    /// The equivalent and non-equivalent pairs listed in RFC 3261 §19.1.4.
    #[test]
    fn rfc3261_comparison_examples() {
        let equal = [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            (
                "sip:carol@chicago.com;newparam=5",
                "sip:carol@chicago.com;security=on",
            ),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
        ];
        for (a, b) in equal {
            assert!(sip(a).equivalent(&sip(b)), "{a} == {b}");
            assert!(sip(b).equivalent(&sip(a)), "{b} == {a}");
        }
        let different = [
            (
                "SIP:ALICE@AtLanTa.CoM;Transport=udp",
                "sip:alice@AtLanTa.CoM;Transport=UDP",
            ),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            (
                "sip:bob@biloxi.com",
                "sip:bob@biloxi.com:6000;transport=tcp",
            ),
            (
                "sip:carol@chicago.com",
                "sip:carol@chicago.com?Subject=next%20meeting",
            ),
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
            (
                "sip:carol@chicago.com;security=on",
                "sip:carol@chicago.com;security=off",
            ),
            ("sip:a%3Bb@x", "sip:a;b@x"),
            ("sips:bob@biloxi.com", "sip:bob@biloxi.com"),
        ];
        for (a, b) in different {
            assert!(!sip(a).equivalent(&sip(b)), "{a} != {b}");
            assert!(!sip(b).equivalent(&sip(a)), "{b} != {a}");
        }
    }

    #[test]
    fn comparison_is_reflexive_with_repeated_parameters() {
        // Found by the fuzzer: a repeated parameter compared against the other URI's first one.
        for s in [
            "sip:a@b;x=1;x=2",
            "sip:a@b;transport=udp;transport=tcp?h=1&h=2",
        ] {
            assert!(sip(s).equivalent(&sip(s)), "{s}");
        }
        assert!(!sip("sip:a@b;x=1;x=2").equivalent(&sip("sip:a@b;x=2")));
    }

    #[test]
    fn tel_comparison_ignores_visual_separators() {
        let a = Uri::parse(b"tel:+1-201-555-0123").unwrap();
        let b = Uri::parse(b"tel:+1.201.555.0123").unwrap();
        let c = Uri::parse(b"tel:+1-201-555-0124").unwrap();
        assert!(a.equivalent(&b));
        assert!(!a.equivalent(&c));
    }

    #[test]
    fn ip_helpers() {
        assert_eq!(
            parse_ip(b"[2001:db8::9:255]"),
            Some("2001:db8::9:255".parse().unwrap())
        );
        assert_eq!(
            parse_ip(b"2001:db8::9:255"),
            Some("2001:db8::9:255".parse().unwrap())
        );
        assert_eq!(
            parse_ip(b"192.0.2.200"),
            Some("192.0.2.200".parse().unwrap())
        );
        assert_eq!(parse_ip(b"host"), None);
        assert_eq!(parse_ipv4(b"1.2.3"), None);
        assert_eq!(parse_ipv4(b"1.2.3.4.5"), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20000))]

        /// The dotted-quad shortcut changes nothing: `Host::scan` answers as the general walk
        /// on host-shaped octets (digits, dots, letters, `-`, `_`, what may follow a host) and
        /// on any octets.
        #[test]
        fn host_scan_matches_the_general_walk(
            shaped in proptest::collection::vec(proptest::prop_oneof![
                4 => proptest::prelude::Just(b'1'), 2 => proptest::prelude::Just(b'2'),
                2 => proptest::prelude::Just(b'5'), 1 => proptest::prelude::Just(b'9'),
                1 => proptest::prelude::Just(b'0'), 4 => proptest::prelude::Just(b'.'),
                1 => proptest::prelude::Just(b'a'), 1 => proptest::prelude::Just(b'-'),
                1 => proptest::prelude::Just(b'_'), 1 => proptest::prelude::Just(b':'),
                1 => proptest::prelude::Just(b';'), 1 => proptest::prelude::Just(b'>'),
                1 => proptest::prelude::any::<u8>()], 0..24),
            any in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
        ) {
            for s in [&shaped, &any] {
                proptest::prop_assert_eq!(Host::scan(s), Host::scan_general(s), "{:?}", s);
            }
        }
    }

    #[test]
    fn dotted_quads_take_the_shortcut_and_stop_where_the_host_stops() {
        for (s, len) in [
            (&b"127.0.0.1"[..], 9),
            (b"10.0.0.9:5070", 8),
            (b"255.255.255.255;lr", 15),
            (b"001.02.3.4>", 10),
        ] {
            assert_eq!(scan_dotted_quad(s).map(|(_, l)| l), Some(len), "{s:?}");
        }
        for s in [
            &b"256.0.0.1"[..],
            b"1.2.3.4.",
            b"1.2.3.4a",
            b"1.2.3",
            b"1.2.3.4567",
            b".1.2.3.4",
            b"1..2.3",
        ] {
            assert_eq!(scan_dotted_quad(s), None, "{s:?}");
        }
    }
}
