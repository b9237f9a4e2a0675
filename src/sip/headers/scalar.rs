//! Single-token headers: Call-ID (§20.8), Max-Forwards (§20.22), Expires (§20.19), Min-Expires
//! (§20.23) and Retry-After (§20.33) of RFC 3261.
//!
//! Overlarge numbers are errors, never clamped: RFC 4475 §3.1.2.4/§3.1.2.5 leave it to the element
//! (a registrar may treat a bad Expires as absent), and only the caller knows its role.

use crate::sip::error::ParseError;
use crate::sip::scan::{is_call_id, parse_u32, Cursor};

use super::params::Params;

/// `callid = word [ "@" word ]`.
pub(crate) fn parse_call_id(value: &[u8]) -> Result<&[u8], ParseError> {
    if is_call_id(value) {
        Ok(value)
    } else {
        Err(ParseError::BadCallId)
    }
}

/// `Max-Forwards = 1*DIGIT`, at most 255 (RFC 4475 §3.1.2.4 sends 300).
pub(crate) fn parse_max_forwards(value: &[u8]) -> Result<u8, ParseError> {
    parse_u32(value)
        .and_then(|v| u8::try_from(v).ok())
        .ok_or(ParseError::BadMaxForwards)
}

/// `delta-seconds = 1*DIGIT`, at most 2^32-1.
pub(crate) fn parse_delta_seconds(value: &[u8], err: ParseError) -> Result<u32, ParseError> {
    parse_u32(value).ok_or(err)
}

/// A parsed Retry-After.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter<'b> {
    /// Seconds to wait.
    pub seconds: u32,
    /// The comment, without its parentheses.
    pub comment: Option<&'b [u8]>,
    /// The `duration` parameter.
    pub duration: Option<u32>,
    /// All parameters.
    pub params: Params<'b>,
}

/// `Retry-After = delta-seconds [ comment ] *( SEMI retry-param )`.
pub(crate) fn parse_retry_after(value: &[u8]) -> Result<RetryAfter<'_>, ParseError> {
    let bad = ParseError::BadRetryAfter;
    let mut c = Cursor::new(value);
    let seconds = c.number().flatten().ok_or(bad)?;
    c.skip_lws();
    let comment = if c.peek() == Some(b'(') {
        Some(comment(&mut c).ok_or(bad)?)
    } else {
        None
    };
    let mut duration = None;
    let params = Params::parse(&mut c, bad, |name, v| {
        if name.eq_ignore_ascii_case(b"duration") {
            duration = Some(v.and_then(parse_u32).ok_or(bad)?);
        }
        Ok(())
    })?;
    c.skip_lws();
    if !c.at_end() {
        return Err(bad);
    }
    Ok(RetryAfter {
        seconds,
        comment,
        duration,
        params,
    })
}

/// `comment = LPAREN *(ctext / quoted-pair / comment) RPAREN`; returns the inner text.
fn comment<'b>(c: &mut Cursor<'b>) -> Option<&'b [u8]> {
    let start = c.pos();
    let mut depth = 0u32;
    loop {
        match c.peek()? {
            b'(' => depth += 1,
            b')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    c.set_pos(c.pos() + 1);
                    return Some(c.slice(start + 1, c.pos() - 1));
                }
            }
            b'\\' => c.set_pos(c.pos() + 1),
            _ => {}
        }
        c.set_pos(c.pos() + 1);
        if c.at_end() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids() {
        assert!(parse_call_id(b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{").is_ok());
        assert!(parse_call_id(b"a84b4c76e66710@pc33.atlanta.com").is_ok());
        for bad in [&b""[..], b"a b", b"@x", b"x@", b"a@b@c"] {
            assert_eq!(parse_call_id(bad), Err(ParseError::BadCallId), "{bad:?}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_max_forwards(b"0068"), Ok(68));
        assert_eq!(parse_max_forwards(b"300"), Err(ParseError::BadMaxForwards));
        assert_eq!(
            parse_delta_seconds(b"4294967295", ParseError::BadExpires),
            Ok(u32::MAX)
        );
        assert_eq!(
            parse_delta_seconds(b"4294967296", ParseError::BadExpires),
            Err(ParseError::BadExpires)
        );
    }

    #[test]
    fn retry_after() {
        let r = parse_retry_after(b"18000;duration=3600").unwrap();
        assert_eq!((r.seconds, r.duration), (18000, Some(3600)));
        let r = parse_retry_after(b"120 (I'm in a (meeting))").unwrap();
        assert_eq!(r.comment, Some(&b"I'm in a (meeting)"[..]));
        assert_eq!(
            parse_retry_after(b"949302838503028349304023988"),
            Err(ParseError::BadRetryAfter)
        );
        assert_eq!(
            parse_retry_after(b"5 (open"),
            Err(ParseError::BadRetryAfter)
        );
    }
}
