//! What must hold before a proxy or registrar acts on a message (RFC 3261 §8.2, §16.3 step 1,
//! §18.1.2, §18.2.1).
//!
//! [`check_request`] parses, once, every field that each request handler reads, and enforces the
//! rules the typed accessors alone do not: mandatory headers present, single-valued headers not
//! repeated, CSeq method equal to the request method (for ACK and CANCEL too), and for REGISTER a
//! well-formed Contact list. Max-Forwards may be absent (a proxy adds one). Failures are
//! [`ParseError`]s whose [`ParseError::disposition`] is the answer (400/505) for requests and a
//! silent drop for responses ([`check_response`]).
//!
//! What is legal but refused (unknown URI scheme → 416, unknown Proxy-Require → 420,
//! Max-Forwards 0 → 483, unknown method → 501) is policy and stays with the proxy: these checks
//! pass, and [`Essentials`] carries what the proxy needs to decide.

use super::error::ParseError;
use super::header::HeaderName;
use super::headers::cseq::CSeq;
use super::headers::name_addr::NameAddr;
use super::headers::via::Via;
use super::message::{Kind, Message};
use super::method::Method;
use super::uri::Uri;

/// Fields every request handler needs, parsed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Essentials<'b> {
    /// Request method.
    pub method: Method<'b>,
    /// Request-URI.
    pub request_uri: Uri<'b>,
    /// Topmost Via value.
    pub top_via: Via<'b>,
    /// Call-ID.
    pub call_id: &'b [u8],
    /// CSeq (its method equals `method`).
    pub cseq: CSeq<'b>,
    /// From (its tag may be absent: RFC 2543 peers, RFC 4475 `inv2543`).
    pub from: NameAddr<'b>,
    /// To.
    pub to: NameAddr<'b>,
    /// Max-Forwards, `None` when absent.
    pub max_forwards: Option<u8>,
}

/// Fields every response handler needs, parsed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseEssentials<'b> {
    /// Status code.
    pub status: u16,
    /// Topmost Via value (the one that names us, if the response is ours).
    pub top_via: Via<'b>,
    /// Call-ID.
    pub call_id: &'b [u8],
    /// CSeq.
    pub cseq: CSeq<'b>,
    /// From.
    pub from: NameAddr<'b>,
    /// To.
    pub to: NameAddr<'b>,
}

/// Headers without which no request or response can be matched to a transaction (§8.1.1).
const MANDATORY: [HeaderName; 5] = [
    HeaderName::Via,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
];

/// Headers whose grammar allows exactly one value (§7.3.1: only list headers may repeat).
const SINGLE_VALUED: [HeaderName; 6] = [
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::MaxForwards,
    HeaderName::ContentLength,
];

fn check_header_counts(msg: &Message<'_>) -> Result<(), ParseError> {
    if let Some(&missing) = MANDATORY.iter().find(|&&name| !msg.has(name)) {
        return Err(ParseError::MissingHeader(missing));
    }
    if let Some(&repeated) = SINGLE_VALUED.iter().find(|&&name| msg.repeats(name)) {
        return Err(ParseError::RepeatedHeader(repeated));
    }
    Ok(())
}

/// Validates a request for a proxy or registrar and returns its essential fields.
pub fn check_request<'b>(msg: &Message<'b>) -> Result<Essentials<'b>, ParseError> {
    let Kind::Request { method, .. } = msg.kind() else {
        return Err(ParseError::BadStartLine);
    };
    let request_uri = msg.request_uri().ok_or(ParseError::BadStartLine)??;
    //= rfc3261#section-19.1.1
    //# headers: ... not allowed in the Request-URI of a request (Table 1: "Request-URI: x")
    if request_uri.as_sip().is_some_and(|u| !u.headers.is_empty()) {
        return Err(ParseError::HeadersInRequestUri);
    }
    check_header_counts(msg)?;
    let top_via = msg.top_via()?;
    let cseq = msg.cseq()?;
    //= rfc3261#section-8.2 (RFC 4475 §3.1.2.17)
    //# the method in the CSeq header field value MUST match the method of the request
    if cseq.method != method {
        return Err(ParseError::CSeqMethodMismatch);
    }
    let call_id = msg.call_id()?;
    let from = msg.from()?;
    let to = msg.to()?;
    let max_forwards = msg.max_forwards()?;
    if method == Method::Register {
        // The registrar stores these; a malformed one must be a 400 before any binding changes.
        for contact in msg.contacts() {
            contact?;
        }
    }
    Ok(Essentials {
        method,
        request_uri,
        top_via,
        call_id,
        cseq,
        from,
        to,
        max_forwards,
    })
}

/// Validates a response; on error the response is dropped silently (§18.1.2).
pub fn check_response<'b>(msg: &Message<'b>) -> Result<ResponseEssentials<'b>, ParseError> {
    let status = msg.status().ok_or(ParseError::BadStartLine)?;
    check_header_counts(msg)?;
    let top_via = msg.top_via()?;
    let cseq = msg.cseq()?;
    let call_id = msg.call_id()?;
    let from = msg.from()?;
    let to = msg.to()?;
    Ok(ResponseEssentials {
        status,
        top_via,
        call_id,
        cseq,
        from,
        to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse;

    const BASE: &str =
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
        From: <sip:a@x>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n";

    fn check(extra: &str) -> Result<(), ParseError> {
        let text = format!("{BASE}{extra}\r\n");
        let m = parse(text.as_bytes()).unwrap();
        check_request(&m).map(|_| ())
    }

    #[test]
    fn accepts_minimal_request_without_max_forwards() {
        let text = format!("{BASE}\r\n");
        let m = parse(text.as_bytes()).unwrap();
        let e = check_request(&m).unwrap();
        assert_eq!(e.max_forwards, None);
        assert_eq!(e.cseq.number, 1);
        assert_eq!(e.from.tag, Some(&b"1"[..]));
    }

    #[test]
    fn rejects_repeats_and_mismatches() {
        assert_eq!(
            check("Max-Forwards: 1\r\nMax-Forwards: 2\r\n"),
            Err(ParseError::RepeatedHeader(HeaderName::MaxForwards))
        );
        assert_eq!(
            check("i: c2\r\n"),
            Err(ParseError::RepeatedHeader(HeaderName::CallId))
        );
        assert_eq!(
            check("Max-Forwards: 256\r\n"),
            Err(ParseError::BadMaxForwards)
        );
        let m = parse(b"BYE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@x>\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n").unwrap();
        assert_eq!(
            check_request(&m).unwrap_err(),
            ParseError::CSeqMethodMismatch
        );
    }

    #[test]
    fn responses() {
        let m = parse(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n").unwrap();
        let r = check_response(&m).unwrap();
        assert_eq!(r.status, 180);
        assert_eq!(r.to.tag, Some(&b"2"[..]));
        let m =
            parse(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 INVITE\r\n\r\n").unwrap();
        assert_eq!(
            check_response(&m).unwrap_err(),
            ParseError::MissingHeader(HeaderName::From)
        );
    }
}
