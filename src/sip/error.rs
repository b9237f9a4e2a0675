//! What can be wrong with a message, and what to do about it (RFC 3261 §8.2, §16.3, §18.3, §21).
//!
//! A [`ParseError`] is a small `Copy` value: no allocation on the error path, so a flood of
//! garbage costs no more than a flood of good messages. Every error knows the words of its reason
//! phrase and its [`Disposition`]: a request gets an answer, a response is dropped silently
//! (RFC 3261 §16.7 / §18.1.2: a malformed response is discarded), and datagrams that are not SIP
//! at all (keep-alives, stray octets) are dropped and counted.

use super::header::HeaderName;

/// Why a message (or one of its header fields) could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// Nothing but CR/LF (a keep-alive) or no octets at all.
    Empty,
    /// The datagram is larger than a UDP datagram can be (offsets are 16 bit).
    MessageTooLarge,
    /// The first line is neither a Request-Line nor a Status-Line.
    BadStartLine,
    /// The Request-URI is not a URI (for example `<sip:...>`, or an unknown scheme's bad syntax).
    BadRequestUri,
    /// The Request-URI carries `?headers`, which RFC 3261 §19.1.1 forbids there.
    HeadersInRequestUri,
    /// A well-formed SIP-Version other than SIP/2.0 (answer 505).
    VersionNotSupported,
    /// The status code is not three digits in 100..=699.
    BadStatusCode,
    /// A line ends in a bare CR or a bare LF instead of CRLF.
    BadLineEnd,
    /// A header name has a character that is not a token character, or a row starts with
    /// whitespace where no header precedes it.
    BadHeaderName,
    /// A header row has no colon after its name.
    MissingColon,
    /// More header rows than the index holds ([`crate::sip::MAX_ROWS`]).
    TooManyHeaders,
    /// The datagram ends before the empty line that closes the header section.
    UnterminatedHeaders,
    /// Content-Length is not a number.
    BadContentLength,
    /// Content-Length is larger than what follows the header section.
    ContentLengthTooLarge,
    /// Two Content-Length rows disagree, so the body cannot be framed.
    ConflictingContentLength,
    /// A required header is absent.
    MissingHeader(HeaderName),
    /// A header that may appear once appears more than once.
    RepeatedHeader(HeaderName),
    /// Via does not follow `sent-protocol LWS sent-by *(SEMI via-params)`.
    BadVia,
    /// CSeq is not `number LWS method`.
    BadCSeq,
    /// CSeq number above 2^32-1.
    CSeqOutOfRange,
    /// The CSeq method differs from the request method.
    CSeqMethodMismatch,
    /// Call-ID is empty or not `word ["@" word]`.
    BadCallId,
    /// Max-Forwards is not a number in 0..=255.
    BadMaxForwards,
    /// A quoted string has no closing quote.
    UnterminatedQuote,
    /// A From/To/Contact/Route value is not a name-addr or addr-spec followed by parameters.
    BadNameAddr,
    /// An addr-spec (URI without `<>`) contains `?`, `;` or `,` that needed the brackets.
    UnbracketedUri,
    /// A URI in a header is malformed (scheme, userinfo, host, port, parameters or escapes).
    BadUri,
    /// A header parameter is malformed (empty name, bad value).
    BadParam,
    /// Expires or an expires parameter is not a number in 0..=2^32-1.
    BadExpires,
    /// A `q` parameter is not a qvalue (0 to 1 with at most three decimals).
    BadQValue,
    /// A `reg-id` is not a number, or `+sip.instance` is not a quoted string.
    BadContactParam,
    /// Content-Type is not `type/subtype *(;param)`.
    BadContentType,
    /// An option tag list (Require, Supported, ...) holds something that is not a token.
    BadOptionTag,
    /// Authorization / Proxy-Authorization is malformed or lacks a required digest parameter.
    BadCredentials,
    /// Authorization uses a scheme other than Digest.
    UnsupportedAuthScheme,
    /// WWW-Authenticate / Proxy-Authenticate is malformed.
    BadChallenge,
    /// Reason is malformed.
    BadReason,
    /// Retry-After is malformed or above 2^32-1.
    BadRetryAfter,
    /// Date is not an RFC 1123 date in GMT.
    BadDate,
    /// Min-Expires is not a number in 0..=2^32-1.
    BadMinExpires,
    /// A header value holds octets after its grammar ended.
    TrailingGarbage,
}

/// What to do with a message that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Answer the request with this status code and reason phrase.
    Reply(u16, &'static str),
    /// Discard without answering; count it under this reason.
    Drop(DropReason),
}

/// Why a datagram was discarded without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A malformed response: RFC 3261 §18.1.2 / §16.7 discard it silently.
    MalformedResponse,
    /// Not a SIP message at all (empty, keep-alive CRLFs, or no recognisable start line).
    NotSip,
}

impl ParseError {
    /// Words for a reason phrase, prefixed as the status line will carry them.
    pub fn reason(self) -> &'static str {
        use ParseError::*;
        match self {
            Empty => "Bad Request - empty message",
            MessageTooLarge => "Message Too Large",
            BadStartLine => "Bad Request - malformed start line",
            BadRequestUri => "Bad Request - malformed Request-URI",
            HeadersInRequestUri => "Bad Request - headers not allowed in Request-URI",
            VersionNotSupported => "Version Not Supported",
            BadStatusCode => "Bad Request - status code out of range",
            BadLineEnd => "Bad Request - line not ended by CRLF",
            BadHeaderName => "Bad Request - malformed header name",
            MissingColon => "Bad Request - header line without colon",
            TooManyHeaders => "Bad Request - too many header rows",
            UnterminatedHeaders => "Bad Request - header section not terminated",
            BadContentLength => "Bad Request - malformed Content-Length",
            ContentLengthTooLarge => "Bad Request - Content-Length larger than datagram",
            ConflictingContentLength => "Bad Request - conflicting Content-Length values",
            MissingHeader(name) => missing_reason(name),
            RepeatedHeader(name) => repeated_reason(name),
            BadVia => "Bad Request - malformed Via",
            BadCSeq => "Bad Request - malformed CSeq",
            CSeqOutOfRange => "Bad Request - CSeq number out of range",
            CSeqMethodMismatch => "Bad Request - CSeq method does not match request method",
            BadCallId => "Bad Request - malformed Call-ID",
            BadMaxForwards => "Bad Request - malformed Max-Forwards",
            UnterminatedQuote => "Bad Request - unterminated quoted string",
            BadNameAddr => "Bad Request - malformed address",
            UnbracketedUri => "Bad Request - URI with ? ; or , must be enclosed in <>",
            BadUri => "Bad Request - malformed URI",
            BadParam => "Bad Request - malformed header parameter",
            BadExpires => "Bad Request - malformed expires value",
            BadQValue => "Bad Request - malformed q value",
            BadContactParam => "Bad Request - malformed Contact parameter",
            BadContentType => "Bad Request - malformed Content-Type",
            BadOptionTag => "Bad Request - malformed option tag",
            BadCredentials => "Bad Request - malformed credentials",
            UnsupportedAuthScheme => "Bad Request - unsupported authorization scheme",
            BadChallenge => "Bad Request - malformed challenge",
            BadReason => "Bad Request - malformed Reason",
            BadRetryAfter => "Bad Request - malformed Retry-After",
            BadDate => "Bad Request - malformed Date",
            BadMinExpires => "Bad Request - malformed Min-Expires",
            TrailingGarbage => "Bad Request - unexpected characters after header value",
        }
    }

    /// The status code a request with this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            ParseError::VersionNotSupported => 505,
            ParseError::MessageTooLarge => 513,
            _ => 400,
        }
    }

    /// What to do: reply to a bad request, drop a bad response, drop what is not SIP.
    pub fn disposition(self, is_request: bool) -> Disposition {
        match self {
            ParseError::Empty => Disposition::Drop(DropReason::NotSip),
            _ if !is_request => Disposition::Drop(DropReason::MalformedResponse),
            _ => Disposition::Reply(self.status(), self.reason()),
        }
    }
}

fn missing_reason(name: HeaderName) -> &'static str {
    match name {
        HeaderName::Via => "Bad Request - missing Via",
        HeaderName::From => "Bad Request - missing From",
        HeaderName::To => "Bad Request - missing To",
        HeaderName::CallId => "Bad Request - missing Call-ID",
        HeaderName::CSeq => "Bad Request - missing CSeq",
        _ => "Bad Request - missing mandatory header",
    }
}

fn repeated_reason(name: HeaderName) -> &'static str {
    match name {
        HeaderName::From => "Bad Request - more than one From",
        HeaderName::To => "Bad Request - more than one To",
        HeaderName::CallId => "Bad Request - more than one Call-ID",
        HeaderName::CSeq => "Bad Request - more than one CSeq",
        HeaderName::MaxForwards => "Bad Request - more than one Max-Forwards",
        HeaderName::ContentLength => "Bad Request - more than one Content-Length",
        _ => "Bad Request - single-valued header repeated",
    }
}

impl core::fmt::Display for ParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_answered_and_responses_dropped() {
        assert_eq!(
            ParseError::VersionNotSupported.disposition(true),
            Disposition::Reply(505, "Version Not Supported")
        );
        assert_eq!(
            ParseError::BadCSeq.disposition(false),
            Disposition::Drop(DropReason::MalformedResponse)
        );
        assert_eq!(
            ParseError::Empty.disposition(true),
            Disposition::Drop(DropReason::NotSip)
        );
        assert_eq!(
            ParseError::MissingHeader(HeaderName::CallId).reason(),
            "Bad Request - missing Call-ID"
        );
    }

    #[test]
    fn reasons_fit_on_a_status_line() {
        // A reason phrase is TEXT-UTF8: no CR or LF, and short enough for any peer's buffers.
        let all = [
            ParseError::ContentLengthTooLarge,
            ParseError::UnbracketedUri,
            ParseError::CSeqMethodMismatch,
            ParseError::RepeatedHeader(HeaderName::Other),
        ];
        for e in all {
            let r = e.reason();
            assert!(r.len() < 64 && !r.contains(['\r', '\n']), "{r}");
        }
    }
}
