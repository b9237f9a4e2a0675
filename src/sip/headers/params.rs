//! Header parameters: `*( SEMI generic-param )` (RFC 3261 §25.1).
//!
//! `generic-param = token [ EQUAL gen-value ]`, `gen-value = token / host / quoted-string`, and
//! SEMI/EQUAL allow linear whitespace (folds included) on both sides. A [`Params`] is validated
//! when its header is parsed; iterating it afterwards only re-splits, and cannot fail.

use crate::sip::error::ParseError;
use crate::sip::scan::{unquote, Cursor};

/// One parameter: name and, if given, value (quoted strings keep their quotes).
pub type Param<'b> = (&'b [u8], Option<&'b [u8]>);

/// The parameters of one header value, as written (values still quoted where they were).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Params<'b> {
    raw: &'b [u8],
}

/// One `gen-value`: a quoted string (with its quotes) or a run of token/host characters; the
/// flag says whether it is a plain token.
fn gen_value<'b>(c: &mut Cursor<'b>, err: ParseError) -> Result<(&'b [u8], bool), ParseError> {
    if c.peek() == Some(b'"') {
        return c.quoted().map(|q| (q, false));
    }
    match c.gen_value() {
        (v, token) if !v.is_empty() => Ok((v, token)),
        _ => Err(err),
    }
}

/// One parameter as read: name, value, and whether the value is a plain token.
type RawParam<'b> = (&'b [u8], Option<(&'b [u8], bool)>);

/// Reads one `SEMI generic-param` at the cursor, or returns `Ok(None)` with the cursor unmoved
/// when no `;` follows.
fn next_param<'b>(c: &mut Cursor<'b>, err: ParseError) -> Result<Option<RawParam<'b>>, ParseError> {
    if !c.eat_separator(b';') {
        return Ok(None);
    }
    let name = c.token().ok_or(err)?;
    let value = if c.eat_separator(b'=') {
        Some(gen_value(c, err)?)
    } else {
        None
    };
    Ok(Some((name, value)))
}

impl<'b> Params<'b> {
    /// Parses parameters at the cursor, handing each to `each` (which picks out the ones its
    /// header defines). Stops before the first octet that does not start another `;param`
    /// (a comma, the end, or garbage the caller then rejects). Syntax errors are `err`.
    pub(crate) fn parse(
        c: &mut Cursor<'b>,
        err: ParseError,
        mut each: impl FnMut(&'b [u8], Option<&'b [u8]>) -> Result<(), ParseError>,
    ) -> Result<Params<'b>, ParseError> {
        Self::parse_with_kind(c, err, |name, value| each(name, value.map(|(v, _)| v)))
    }

    /// Like [`Params::parse`], also telling `each` whether a value is a plain token, so that a
    /// header whose grammar wants a token there (Via `branch`, `tag`) need not scan it again.
    pub(crate) fn parse_with_kind(
        c: &mut Cursor<'b>,
        err: ParseError,
        mut each: impl FnMut(&'b [u8], Option<(&'b [u8], bool)>) -> Result<(), ParseError>,
    ) -> Result<Params<'b>, ParseError> {
        let start = c.pos();
        let mut end = start;
        while let Some((name, value)) = next_param(c, err)? {
            each(name, value)?;
            end = c.pos();
        }
        Ok(Params {
            raw: c.slice(start, end),
        })
    }

    /// The parameters as written, from the first `;` (with any whitespace before it).
    pub fn raw(&self) -> &'b [u8] {
        self.raw
    }

    /// Is there no parameter?
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The parameter named `name` (case-insensitive): `Some(None)` when present without value,
    /// `Some(Some(v))` with one (quoted strings keep their quotes; see [`unquote`]).
    pub fn get(&self, name: &str) -> Option<Option<&'b [u8]>> {
        self.into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The value of `name` with quotes removed, when present with a value.
    pub fn get_unquoted(&self, name: &str) -> Option<&'b [u8]> {
        self.get(name).flatten().map(unquote)
    }
}

impl<'b> IntoIterator for Params<'b> {
    type Item = Param<'b>;
    type IntoIter = ParamIter<'b>;
    fn into_iter(self) -> ParamIter<'b> {
        ParamIter {
            cursor: Cursor::new(self.raw),
        }
    }
}

/// Iterator over [`Params`]: `(name, value)` in order.
#[derive(Clone, Debug)]
pub struct ParamIter<'b> {
    cursor: Cursor<'b>,
}

impl<'b> Iterator for ParamIter<'b> {
    type Item = Param<'b>;
    fn next(&mut self) -> Option<Self::Item> {
        let (name, value) = next_param(&mut self.cursor, ParseError::BadParam)
            .ok()
            .flatten()?;
        Some((name, value.map(|(v, _)| v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_lws_and_quotes() {
        let v = b" ; newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33 ; x=\"a;b\", next";
        let mut c = Cursor::new(v);
        let mut seen = Vec::new();
        let p = Params::parse(&mut c, ParseError::BadParam, |n, v| {
            seen.push((n, v));
            Ok(())
        })
        .unwrap();
        assert_eq!(c.rest(), b", next");
        let expected: Vec<(&[u8], Option<&[u8]>)> = vec![
            (b"newparam", Some(b"newvalue")),
            (b"secondparam", None),
            (b"q", Some(b"0.33")),
            (b"x", Some(b"\"a;b\"")),
        ];
        assert_eq!(seen, expected);
        assert_eq!(p.into_iter().collect::<Vec<_>>(), expected);
        assert_eq!(p.get("Q"), Some(Some(&b"0.33"[..])));
        assert_eq!(p.get_unquoted("x"), Some(&b"a;b"[..]));
        assert_eq!(p.get("secondparam"), Some(None));
    }

    #[test]
    fn empty_parameters_are_errors() {
        for bad in [&b";;"[..], b"; =x", b";a=", b";a=\"open"] {
            let mut c = Cursor::new(bad);
            assert!(
                Params::parse(&mut c, ParseError::BadParam, |_, _| Ok(())).is_err(),
                "{bad:?}"
            );
        }
    }
}
