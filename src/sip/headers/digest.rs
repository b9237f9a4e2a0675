//! Authorization / Proxy-Authorization credentials and WWW-/Proxy-Authenticate challenges
//! (RFC 3261 §20.7, §20.27, §20.28, §20.44, §22.4; RFC 8760 algorithms).
//!
//! `credentials = "Digest" LWS dig-resp *(COMMA dig-resp)`; each directive is
//! `name EQUAL (token / quoted-string)`. Quoted values are handed out without their quotes. A
//! quoted-pair inside a value (legal, never seen from real phones) is kept as written and flagged
//! in `escaped`, so a verifier can unescape or refuse instead of silently hashing the wrong bytes.
//! A directive given twice is an error: which one a verifier used would be ambiguous.

use crate::sip::error::ParseError;
use crate::sip::scan::{has_quoted_pair, is_lws, unquote, Cursor};

/// Digest credentials from Authorization or Proxy-Authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestCredentials<'b> {
    /// The scheme as written (`Digest`, any case).
    pub scheme: &'b [u8],
    /// `username`.
    pub username: &'b [u8],
    /// `realm`.
    pub realm: &'b [u8],
    /// `nonce`.
    pub nonce: &'b [u8],
    /// `uri` (digest-uri).
    pub uri: &'b [u8],
    /// `response`.
    pub response: &'b [u8],
    /// `algorithm` (`MD5`, `SHA-256`, ...).
    pub algorithm: Option<&'b [u8]>,
    /// `cnonce`.
    pub cnonce: Option<&'b [u8]>,
    /// `qop`.
    pub qop: Option<&'b [u8]>,
    /// `nc` (8 hex digits).
    pub nc: Option<&'b [u8]>,
    /// `opaque`.
    pub opaque: Option<&'b [u8]>,
    /// Some quoted value contains a quoted-pair (`\x`), left unprocessed in the value.
    pub escaped: bool,
}

/// A Digest challenge from WWW-Authenticate or Proxy-Authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DigestChallenge<'b> {
    /// The scheme as written.
    pub scheme: &'b [u8],
    /// `realm`.
    pub realm: &'b [u8],
    /// `nonce`.
    pub nonce: &'b [u8],
    /// `domain`.
    pub domain: Option<&'b [u8]>,
    /// `opaque`.
    pub opaque: Option<&'b [u8]>,
    /// `stale=true` (case-insensitive).
    pub stale: bool,
    /// `algorithm`.
    pub algorithm: Option<&'b [u8]>,
    /// `qop` options, as written inside the quotes (`auth,auth-int`).
    pub qop: Option<&'b [u8]>,
    /// Some quoted value contains a quoted-pair.
    pub escaped: bool,
}

/// Reads `scheme LWS` and checks the scheme is Digest; `unsupported` otherwise.
fn digest_scheme<'b>(
    c: &mut Cursor<'b>,
    err: ParseError,
    unsupported: ParseError,
) -> Result<&'b [u8], ParseError> {
    c.skip_lws();
    let scheme = c.token().ok_or(err)?;
    if !scheme.eq_ignore_ascii_case(b"Digest") {
        return Err(unsupported);
    }
    if !c.peek().is_some_and(is_lws) {
        return Err(err);
    }
    Ok(scheme)
}

/// Walks `name EQUAL (token / quoted-string) *(COMMA ...)`, calling `each(name, value)` with
/// quotes removed; returns whether any quoted value held a quoted-pair.
fn auth_params<'b>(
    c: &mut Cursor<'b>,
    err: ParseError,
    mut each: impl FnMut(&'b [u8], &'b [u8]) -> Result<(), ParseError>,
) -> Result<bool, ParseError> {
    let mut escaped = false;
    loop {
        c.skip_lws();
        let name = c.token().ok_or(err)?;
        if !c.eat_separator(b'=') {
            return Err(err);
        }
        let value = if c.peek() == Some(b'"') {
            let inner = unquote(c.quoted().map_err(|_| err)?);
            escaped |= has_quoted_pair(inner);
            inner
        } else {
            c.token().ok_or(err)?
        };
        each(name, value)?;
        c.skip_lws();
        if c.at_end() {
            return Ok(escaped);
        }
        if !c.eat(b',') {
            return Err(err);
        }
    }
}

const CREDENTIAL_DIRECTIVES: [&[u8]; 10] = [
    b"username",
    b"realm",
    b"nonce",
    b"uri",
    b"response",
    b"algorithm",
    b"cnonce",
    b"qop",
    b"nc",
    b"opaque",
];
const CHALLENGE_DIRECTIVES: [&[u8]; 7] = [
    b"realm",
    b"nonce",
    b"domain",
    b"opaque",
    b"stale",
    b"algorithm",
    b"qop",
];

/// Stores `value` in the slot of directive `name` (case-insensitive) unless it was already seen;
/// directives not in `names` are extensions and ignored.
fn directive<'b>(
    names: &[&[u8]],
    slots: &mut [Option<&'b [u8]>],
    name: &[u8],
    value: &'b [u8],
    err: ParseError,
) -> Result<(), ParseError> {
    let Some(slot) = names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .and_then(|i| slots.get_mut(i))
    else {
        return Ok(());
    };
    if slot.is_some() {
        return Err(err);
    }
    *slot = Some(value);
    Ok(())
}

/// Parses an Authorization / Proxy-Authorization value.
pub(crate) fn parse_credentials(value: &[u8]) -> Result<DigestCredentials<'_>, ParseError> {
    let err = ParseError::BadCredentials;
    let mut c = Cursor::new(value);
    let scheme = digest_scheme(&mut c, err, ParseError::UnsupportedAuthScheme)?;
    let mut slots = [None; CREDENTIAL_DIRECTIVES.len()];
    let escaped = auth_params(&mut c, err, |name, v| {
        directive(&CREDENTIAL_DIRECTIVES, &mut slots, name, v, err)
    })?;
    let [username, realm, nonce, uri, response, algorithm, cnonce, qop, nc, opaque] = slots;
    Ok(DigestCredentials {
        scheme,
        username: username.ok_or(err)?,
        realm: realm.ok_or(err)?,
        nonce: nonce.ok_or(err)?,
        uri: uri.ok_or(err)?,
        response: response.ok_or(err)?,
        algorithm,
        cnonce,
        qop,
        nc,
        opaque,
        escaped,
    })
}

/// Parses a WWW-Authenticate / Proxy-Authenticate value.
pub(crate) fn parse_challenge(value: &[u8]) -> Result<DigestChallenge<'_>, ParseError> {
    let err = ParseError::BadChallenge;
    let mut c = Cursor::new(value);
    let scheme = digest_scheme(&mut c, err, ParseError::UnsupportedAuthScheme)?;
    let mut slots = [None; CHALLENGE_DIRECTIVES.len()];
    let escaped = auth_params(&mut c, err, |name, v| {
        directive(&CHALLENGE_DIRECTIVES, &mut slots, name, v, err)
    })?;
    let [realm, nonce, domain, opaque, stale, algorithm, qop] = slots;
    Ok(DigestChallenge {
        scheme,
        realm: realm.ok_or(err)?,
        nonce: nonce.ok_or(err)?,
        domain,
        opaque,
        stale: stale.is_some_and(|s| s.eq_ignore_ascii_case(b"true")),
        algorithm,
        qop,
        escaped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_rfc3665() {
        let v = b"Digest username=\"bob\", realm=\"atlanta.example.com\",\r\n qop=\"auth\", nonce=\"1cec4341ae6cbe5a359ea9c8e88df84f\", opaque=\"\",\r\n uri=\"sips:ss2.biloxi.example.com\",\r\n response=\"71ba27c64bd01de719686aa4590d5824\"";
        let d = parse_credentials(v).unwrap();
        assert_eq!(d.username, b"bob");
        assert_eq!(d.realm, b"atlanta.example.com");
        assert_eq!(d.nonce, b"1cec4341ae6cbe5a359ea9c8e88df84f");
        assert_eq!(d.uri, b"sips:ss2.biloxi.example.com");
        assert_eq!(d.response, b"71ba27c64bd01de719686aa4590d5824");
        assert_eq!(d.qop, Some(&b"auth"[..]));
        assert_eq!(d.opaque, Some(&b""[..]));
        assert!(!d.escaped);
    }

    #[test]
    fn credential_errors() {
        assert_eq!(
            parse_credentials(b"NoOneKnowsThisScheme opaque-data=here"),
            Err(ParseError::UnsupportedAuthScheme)
        );
        let missing = b"Digest username=\"bob\", realm=\"r\", nonce=\"n\", uri=\"sip:x\"";
        assert_eq!(parse_credentials(missing), Err(ParseError::BadCredentials));
        let twice = b"Digest username=\"a\", username=\"b\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"";
        assert_eq!(parse_credentials(twice), Err(ParseError::BadCredentials));
        let d = parse_credentials(
            b"Digest username=\"a\\\"b\", realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\", nc=00000001",
        )
        .unwrap();
        assert!(d.escaped);
        assert_eq!(d.nc, Some(&b"00000001"[..]));
        assert!(parse_credentials(b"Digest username=\"a\" realm=\"r\"").is_err());
    }

    #[test]
    fn challenge_from_rfc3665() {
        let v = b"Digest realm=\"atlanta.example.com\", qop=\"auth\",\r\n nonce=\"ea9c8e88df84f1cec4341ae6cbe5a359\",\r\n opaque=\"\", stale=FALSE, algorithm=MD5";
        let c = parse_challenge(v).unwrap();
        assert_eq!(c.realm, b"atlanta.example.com");
        assert_eq!(c.nonce, b"ea9c8e88df84f1cec4341ae6cbe5a359");
        assert!(!c.stale);
        assert_eq!(c.algorithm, Some(&b"MD5"[..]));
        assert_eq!(c.qop, Some(&b"auth"[..]));
    }
}
