//! CSeq (RFC 3261 §8.1.1.5, §20.16): `CSeq = 1*DIGIT LWS Method`.
//!
//! The number must fit in 32 bits (RFC 3261 §8.1.1.5: "MUST be expressible as a 32-bit unsigned
//! integer"); a larger one is [`ParseError::CSeqOutOfRange`], not a wrapped value.

use crate::sip::error::ParseError;
use crate::sip::method::Method;
use crate::sip::scan::{is_lws, Cursor};

/// A parsed CSeq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CSeq<'b> {
    /// Sequence number.
    pub number: u32,
    /// Method (case-sensitive, compared with the request method).
    pub method: Method<'b>,
}

/// Parses a CSeq value.
#[inline]
pub(crate) fn parse_cseq(value: &[u8]) -> Result<CSeq<'_>, ParseError> {
    let mut c = Cursor::new(value);
    c.skip_lws();
    let number = match c.number() {
        Some(Some(n)) => n,
        Some(None) => return Err(ParseError::CSeqOutOfRange),
        None => return Err(ParseError::BadCSeq),
    };
    if !c.peek().is_some_and(is_lws) {
        return Err(ParseError::BadCSeq);
    }
    c.skip_lws();
    let method = c.token().ok_or(ParseError::BadCSeq)?;
    c.skip_lws();
    if !c.at_end() {
        return Err(ParseError::BadCSeq);
    }
    Ok(CSeq {
        number,
        method: Method::from_bytes(method),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            parse_cseq(b"0009\r\n  INVITE").unwrap(),
            CSeq {
                number: 9,
                method: Method::Invite
            }
        );
        assert_eq!(parse_cseq(b"4294967295 ACK").unwrap().number, u32::MAX);
        assert_eq!(
            parse_cseq(b"139122385 !interesting-Method0123456789_*+`.%indeed'~")
                .unwrap()
                .method,
            Method::Other(b"!interesting-Method0123456789_*+`.%indeed'~")
        );
    }

    #[test]
    fn rejects() {
        assert_eq!(
            parse_cseq(b"36893488147419103232 REGISTER"),
            Err(ParseError::CSeqOutOfRange)
        );
        for bad in [
            &b"INVITE"[..],
            b"1",
            b"1INVITE",
            b"1 INVITE x",
            b"-1 INVITE",
            b"",
        ] {
            assert_eq!(parse_cseq(bad), Err(ParseError::BadCSeq), "{bad:?}");
        }
    }
}
