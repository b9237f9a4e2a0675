//! From, To, Route, Record-Route and the address part of Contact (RFC 3261 §20.10, §20.20,
//! §20.30, §20.34, §20.39, §25.1).
//!
//! `( name-addr / addr-spec ) *( SEMI param )` with
//! `name-addr = [ display-name ] LAQUOT addr-spec RAQUOT` and
//! `display-name = *(token LWS) / quoted-string`. A display name glued to `<` (`caller<sip:..>`)
//! is accepted (RFC 4475 §3.1.1.6 lists it as a known grammar bug). In the addr-spec form the URI
//! ends at the first `;`, `,` or whitespace: everything after belongs to the header, never to the
//! URI (RFC 3261 §20.10), and a `?` in such a URI is an error because it needed the brackets.

use crate::sip::error::ParseError;
use crate::sip::scan::{find, is_lws, unquote, Cursor};
use crate::sip::uri::Uri;

use super::params::Params;

/// An address with its header parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'b> {
    /// This value's octets, display name through the last parameter.
    pub raw: &'b [u8],
    /// Display name: the inner text of a quoted string (quoted-pairs as written), or the
    /// token words as written.
    pub display: Option<&'b [u8]>,
    /// The URI.
    pub uri: Uri<'b>,
    /// Was the URI enclosed in `<>`?
    pub bracketed: bool,
    /// The `tag` parameter.
    pub tag: Option<&'b [u8]>,
    /// All header parameters (tag included), in order.
    pub params: Params<'b>,
}

/// Whether the addr-spec form (no angle brackets) is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    /// From, To, Contact: `name-addr / addr-spec`.
    Any,
    /// Route, Record-Route, Path, Service-Route: `name-addr` only.
    Bracketed,
}

/// Parses one name-addr or addr-spec with its parameters at the cursor.
#[inline]
pub(crate) fn parse_name_addr<'b>(
    c: &mut Cursor<'b>,
    form: Form,
) -> Result<NameAddr<'b>, ParseError> {
    let bad = ParseError::BadNameAddr;
    c.skip_lws();
    let start = c.pos();
    let mut display = None;
    let bracketed = match c.peek() {
        Some(b'"') => {
            display = Some(unquote(c.quoted()?));
            c.skip_lws();
            if !c.eat(b'<') {
                return Err(bad);
            }
            true
        }
        Some(b'<') => {
            c.eat(b'<');
            true
        }
        _ => {
            let words_start = c.pos();
            let mut words_end = words_start;
            while c.token().is_some() {
                words_end = c.pos();
                c.skip_lws();
            }
            if words_end > words_start && c.eat(b'<') {
                display = Some(c.slice(words_start, words_end));
                true
            } else {
                c.set_pos(words_start);
                false
            }
        }
    };
    let uri = if bracketed {
        let rest = c.rest();
        let close = find(rest, b'>').ok_or(bad)?;
        let uri = Uri::parse(rest.get(..close).unwrap_or(&[]))?;
        c.set_pos(c.pos() + close + 1);
        uri
    } else {
        if form == Form::Bracketed {
            return Err(bad);
        }
        let raw = c.take_while(|b| b != b';' && b != b',' && !is_lws(b));
        if raw.is_empty() {
            return Err(bad);
        }
        if raw.contains(&b'?') {
            return Err(ParseError::UnbracketedUri);
        }
        Uri::parse(raw)?
    };
    let mut tag = None;
    let params = Params::parse_with_kind(c, ParseError::BadParam, |name, value| {
        if name.eq_ignore_ascii_case(b"tag") {
            let token = value.and_then(|(v, token)| token.then_some(v));
            tag = Some(token.ok_or(ParseError::BadParam)?);
        }
        Ok(())
    })?;
    Ok(NameAddr {
        raw: c.slice(start, c.pos()),
        display,
        uri,
        bracketed,
        tag,
        params,
    })
}

/// Parses a whole single-valued header (From, To): one address, then nothing but whitespace.
#[inline]
pub(crate) fn parse_single(value: &[u8]) -> Result<NameAddr<'_>, ParseError> {
    let mut c = Cursor::new(value);
    let addr = parse_name_addr(&mut c, Form::Any)?;
    c.skip_lws();
    if c.at_end() {
        Ok(addr)
    } else {
        Err(ParseError::TrailingGarbage)
    }
}

/// List element parser for Route / Record-Route / Path / Service-Route.
pub(crate) fn parse_route<'b>(c: &mut Cursor<'b>) -> Result<NameAddr<'b>, ParseError> {
    parse_name_addr(c, Form::Bracketed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::uri::Scheme;

    #[test]
    fn display_names() {
        let a = parse_single(
            br#""J Rosenberg \\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(a.display, Some(&br#"J Rosenberg \\\""#[..]));
        assert_eq!(a.tag, Some(&b"98asjd8"[..]));
        let a = parse_single(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display, Some(&b"caller"[..]));
        let a = parse_single(b"token1~` token2'+_ token3*%!.- <sip:mundane@example.com>").unwrap();
        assert_eq!(a.display, Some(&b"token1~` token2'+_ token3*%!.-"[..]));
        assert!(a.bracketed);
    }

    #[test]
    fn addr_spec_parameters_belong_to_the_header() {
        let a = parse_single(b"sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert_eq!(a.uri.raw(), b"sip:+19725552222@gw1.example.net");
        assert_eq!(a.params.get("unknownparam"), Some(None));
        let a = parse_single(b"<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert!(a.params.is_empty());
        assert_eq!(a.uri.as_sip().unwrap().param("unknownparam"), Some(None));
        let a =
            parse_single(b"sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(a.tag, Some(&b"1918181833n"[..]));
        let a = parse_single(b"isbn:2983792873").unwrap();
        assert_eq!(a.uri.scheme(), Scheme::Other(b"isbn"));
    }

    #[test]
    fn rejects() {
        let cases: &[(&[u8], ParseError)] = &[
            (
                b"\"Mr. J. User <sip:j.user@example.com>",
                ParseError::UnterminatedQuote,
            ),
            (
                b"\"Watson, Thomas\" < sip:t.watson@example.org >",
                ParseError::BadUri,
            ),
            (
                b"sip:user@example.com?Route=%3Csip:sip.example.com%3E",
                ParseError::UnbracketedUri,
            ),
            (
                b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
                ParseError::BadUri,
            ),
            (b"<sip:a@b", ParseError::BadNameAddr),
            (b"\"x\" sip:a@b", ParseError::BadNameAddr),
            (b"<sip:a@b>;tag", ParseError::BadParam),
            (b"<sip:a@b> junk", ParseError::TrailingGarbage),
            (b"<sip:a@b>;;", ParseError::BadParam),
        ];
        for (v, e) in cases {
            assert_eq!(
                parse_single(v).unwrap_err(),
                *e,
                "{}",
                String::from_utf8_lossy(v)
            );
        }
        let mut c = Cursor::new(b"sip:a@b");
        assert_eq!(parse_route(&mut c).unwrap_err(), ParseError::BadNameAddr);
    }
}
