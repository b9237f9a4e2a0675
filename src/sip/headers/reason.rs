//! Reason (RFC 3326): `reason-value = protocol *(SEMI reason-params)`, with `cause` and `text`.
//!
//! A forking proxy puts `Reason: SIP ;cause=200 ;text="Call completed elsewhere"` in the CANCELs
//! of losing branches (RFC 3326 §2); phones read it to avoid logging a missed call.

use crate::sip::error::ParseError;
use crate::sip::scan::{parse_u32, unquote, Cursor};

use super::params::Params;

/// One Reason value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reason<'b> {
    /// `SIP`, `Q.850` or another token.
    pub protocol: &'b [u8],
    /// The `cause` parameter.
    pub cause: Option<u16>,
    /// The `text` parameter without its quotes.
    pub text: Option<&'b [u8]>,
    /// All parameters.
    pub params: Params<'b>,
}

/// List element parser for Reason.
pub(crate) fn parse_reason<'b>(c: &mut Cursor<'b>) -> Result<Reason<'b>, ParseError> {
    let bad = ParseError::BadReason;
    c.skip_lws();
    let protocol = c.token().ok_or(bad)?;
    let (mut cause, mut text) = (None, None);
    let params = Params::parse(c, bad, |name, value| {
        if name.eq_ignore_ascii_case(b"cause") {
            let v = value
                .and_then(parse_u32)
                .and_then(|v| u16::try_from(v).ok());
            cause = Some(v.ok_or(bad)?);
        } else if name.eq_ignore_ascii_case(b"text") {
            text = Some(unquote(value.ok_or(bad)?));
        }
        Ok(())
    })?;
    Ok(Reason {
        protocol,
        cause,
        text,
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let mut c = Cursor::new(b"SIP ;cause=200 ;text=\"Call completed elsewhere\"");
        let r = parse_reason(&mut c).unwrap();
        assert_eq!(r.protocol, b"SIP");
        assert_eq!(r.cause, Some(200));
        assert_eq!(r.text, Some(&b"Call completed elsewhere"[..]));
        let mut c = Cursor::new(b"SIP;cause=x");
        assert_eq!(parse_reason(&mut c), Err(ParseError::BadReason));
    }
}
