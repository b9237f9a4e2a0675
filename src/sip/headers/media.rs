//! Content-Type (RFC 3261 §20.15): `media-type = m-type SLASH m-subtype *(SEMI m-parameter)`.

use crate::sip::error::ParseError;
use crate::sip::scan::Cursor;

use super::params::Params;

/// A parsed Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentType<'b> {
    /// The type (`application`), case-insensitive.
    pub media_type: &'b [u8],
    /// The subtype (`sdp`), case-insensitive.
    pub subtype: &'b [u8],
    /// Parameters (`boundary=...`, `charset=...`).
    pub params: Params<'b>,
}

impl ContentType<'_> {
    /// Is this `type/subtype` (case-insensitive)?
    pub fn is(&self, media_type: &str, subtype: &str) -> bool {
        self.media_type.eq_ignore_ascii_case(media_type.as_bytes())
            && self.subtype.eq_ignore_ascii_case(subtype.as_bytes())
    }
}

/// Parses a Content-Type value.
pub(crate) fn parse_content_type(value: &[u8]) -> Result<ContentType<'_>, ParseError> {
    let bad = ParseError::BadContentType;
    let mut c = Cursor::new(value);
    let media_type = c.token().ok_or(bad)?;
    if !c.eat_separator(b'/') {
        return Err(bad);
    }
    let subtype = c.token().ok_or(bad)?;
    let params = Params::parse(&mut c, bad, |_, _| Ok(()))?;
    c.skip_lws();
    if !c.at_end() {
        return Err(bad);
    }
    Ok(ContentType {
        media_type,
        subtype,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let ct = parse_content_type(b"multipart/mixed;boundary=7a9cbec02ceef655").unwrap();
        assert!(ct.is("Multipart", "MIXED"));
        assert_eq!(
            ct.params.get("boundary"),
            Some(Some(&b"7a9cbec02ceef655"[..]))
        );
        assert!(parse_content_type(b"application/sdp")
            .unwrap()
            .is("application", "sdp"));
        for bad in [&b"application"[..], b"application/", b"/sdp", b"a/b c"] {
            assert!(parse_content_type(bad).is_err());
        }
    }
}
