//! Header names, header rows and comma-separated values (RFC 3261 §7.3, §7.3.1, §7.3.3, §20).
//!
//! Names are matched case-insensitively without hashing: `(length, first letter)` picks at most
//! one candidate (two or three where a second letter decides), then one case-insensitive compare
//! confirms it. Compact forms (`v`, `f`, `t`, ...) map to the same [`HeaderName`] as their long
//! form, so every accessor sees `v:` rows as Via rows.
//!
//! Invariant: a [`Header`]'s slices all point into the message's bytes, and `row` is exactly the
//! octets of that row including its final CRLF, so a builder may copy rows verbatim.
//!
//! The `match` in [`HeaderName::from_bytes`] and the tables below were generated from one list of
//! names; the unit test `every_name_round_trips` fails if a hand edit breaks any of them.

use super::scan::trim_lws;

/// A header field name, compact forms folded into their long form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum HeaderName {
    /// `Accept`.
    Accept,
    /// `Accept-Contact` (compact `a`).
    AcceptContact,
    /// `Accept-Encoding`.
    AcceptEncoding,
    /// `Accept-Language`.
    AcceptLanguage,
    /// `Alert-Info`.
    AlertInfo,
    /// `Allow`.
    Allow,
    /// `Allow-Events` (compact `u`).
    AllowEvents,
    /// `Authentication-Info`.
    AuthenticationInfo,
    /// `Authorization`.
    Authorization,
    /// `Call-ID` (compact `i`).
    CallId,
    /// `Call-Info`.
    CallInfo,
    /// `Contact` (compact `m`).
    Contact,
    /// `Content-Disposition`.
    ContentDisposition,
    /// `Content-Encoding` (compact `e`).
    ContentEncoding,
    /// `Content-Language`.
    ContentLanguage,
    /// `Content-Length` (compact `l`).
    ContentLength,
    /// `Content-Type` (compact `c`).
    ContentType,
    /// `CSeq`.
    CSeq,
    /// `Date`.
    Date,
    /// `Error-Info`.
    ErrorInfo,
    /// `Event` (compact `o`).
    Event,
    /// `Expires`.
    Expires,
    /// `From` (compact `f`).
    From,
    /// `Identity` (compact `y`).
    Identity,
    /// `In-Reply-To`.
    InReplyTo,
    /// `Max-Forwards`.
    MaxForwards,
    /// `MIME-Version`.
    MimeVersion,
    /// `Min-Expires`.
    MinExpires,
    /// `Min-SE`.
    MinSe,
    /// `Organization`.
    Organization,
    /// `P-Asserted-Identity`.
    PAssertedIdentity,
    /// `P-Preferred-Identity`.
    PPreferredIdentity,
    /// `Path`.
    Path,
    /// `Priority`.
    Priority,
    /// `Privacy`.
    Privacy,
    /// `Proxy-Authenticate`.
    ProxyAuthenticate,
    /// `Proxy-Authorization`.
    ProxyAuthorization,
    /// `Proxy-Require`.
    ProxyRequire,
    /// `RAck`.
    RAck,
    /// `Reason`.
    Reason,
    /// `Record-Route`.
    RecordRoute,
    /// `Refer-To` (compact `r`).
    ReferTo,
    /// `Referred-By` (compact `b`).
    ReferredBy,
    /// `Reject-Contact` (compact `j`).
    RejectContact,
    /// `Replaces`.
    Replaces,
    /// `Reply-To`.
    ReplyTo,
    /// `Request-Disposition` (compact `d`).
    RequestDisposition,
    /// `Require`.
    Require,
    /// `Retry-After`.
    RetryAfter,
    /// `Route`.
    Route,
    /// `RSeq`.
    RSeq,
    /// `Server`.
    Server,
    /// `Service-Route`.
    ServiceRoute,
    /// `Session-Expires` (compact `x`).
    SessionExpires,
    /// `Subject` (compact `s`).
    Subject,
    /// `Subscription-State`.
    SubscriptionState,
    /// `Supported` (compact `k`).
    Supported,
    /// `Timestamp`.
    Timestamp,
    /// `To` (compact `t`).
    To,
    /// `Unsupported`.
    Unsupported,
    /// `User-Agent`.
    UserAgent,
    /// `Via` (compact `v`).
    Via,
    /// `Warning`.
    Warning,
    /// `WWW-Authenticate`.
    WwwAuthenticate,
    /// Any header not listed above: kept byte-exact and forwarded unchanged.
    Other,
}

impl HeaderName {
    /// Number of variants, [`HeaderName::Other`] included.
    pub const COUNT: usize = 65;

    /// Every named variant (all but [`HeaderName::Other`]).
    pub const KNOWN: [HeaderName; Self::COUNT - 1] = [
        HeaderName::Accept,
        HeaderName::AcceptContact,
        HeaderName::AcceptEncoding,
        HeaderName::AcceptLanguage,
        HeaderName::AlertInfo,
        HeaderName::Allow,
        HeaderName::AllowEvents,
        HeaderName::AuthenticationInfo,
        HeaderName::Authorization,
        HeaderName::CallId,
        HeaderName::CallInfo,
        HeaderName::Contact,
        HeaderName::ContentDisposition,
        HeaderName::ContentEncoding,
        HeaderName::ContentLanguage,
        HeaderName::ContentLength,
        HeaderName::ContentType,
        HeaderName::CSeq,
        HeaderName::Date,
        HeaderName::ErrorInfo,
        HeaderName::Event,
        HeaderName::Expires,
        HeaderName::From,
        HeaderName::Identity,
        HeaderName::InReplyTo,
        HeaderName::MaxForwards,
        HeaderName::MimeVersion,
        HeaderName::MinExpires,
        HeaderName::MinSe,
        HeaderName::Organization,
        HeaderName::PAssertedIdentity,
        HeaderName::PPreferredIdentity,
        HeaderName::Path,
        HeaderName::Priority,
        HeaderName::Privacy,
        HeaderName::ProxyAuthenticate,
        HeaderName::ProxyAuthorization,
        HeaderName::ProxyRequire,
        HeaderName::RAck,
        HeaderName::Reason,
        HeaderName::RecordRoute,
        HeaderName::ReferTo,
        HeaderName::ReferredBy,
        HeaderName::RejectContact,
        HeaderName::Replaces,
        HeaderName::ReplyTo,
        HeaderName::RequestDisposition,
        HeaderName::Require,
        HeaderName::RetryAfter,
        HeaderName::Route,
        HeaderName::RSeq,
        HeaderName::Server,
        HeaderName::ServiceRoute,
        HeaderName::SessionExpires,
        HeaderName::Subject,
        HeaderName::SubscriptionState,
        HeaderName::Supported,
        HeaderName::Timestamp,
        HeaderName::To,
        HeaderName::Unsupported,
        HeaderName::UserAgent,
        HeaderName::Via,
        HeaderName::Warning,
        HeaderName::WwwAuthenticate,
    ];

    /// Classifies a raw header name (case-insensitive; one letter means a compact form).
    #[inline]
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        let Some(&first) = name.first() else {
            return HeaderName::Other;
        };
        if name.len() == 1 {
            return Self::from_compact(first | 0x20);
        }
        let candidate = match (name.len(), first | 0x20) {
            (2, b't') => HeaderName::To,
            (3, b'v') => HeaderName::Via,
            (4, b'c') => HeaderName::CSeq,
            (4, b'd') => HeaderName::Date,
            (4, b'f') => HeaderName::From,
            (4, b'p') => HeaderName::Path,
            (4, b'r') => match name.get(1).map(|b| b | 0x20) {
                Some(b'a') => HeaderName::RAck,
                Some(b's') => HeaderName::RSeq,
                _ => return HeaderName::Other,
            },
            (5, b'a') => HeaderName::Allow,
            (5, b'e') => HeaderName::Event,
            (5, b'r') => HeaderName::Route,
            (6, b'a') => HeaderName::Accept,
            (6, b'm') => HeaderName::MinSe,
            (6, b'r') => HeaderName::Reason,
            (6, b's') => HeaderName::Server,
            (7, b'c') => match name.get(1).map(|b| b | 0x20) {
                Some(b'a') => HeaderName::CallId,
                Some(b'o') => HeaderName::Contact,
                _ => return HeaderName::Other,
            },
            (7, b'e') => HeaderName::Expires,
            (7, b'p') => HeaderName::Privacy,
            (7, b'r') => HeaderName::Require,
            (7, b's') => HeaderName::Subject,
            (7, b'w') => HeaderName::Warning,
            (8, b'i') => HeaderName::Identity,
            (8, b'p') => HeaderName::Priority,
            (8, b'r') => match name.get(4).map(|b| b | 0x20) {
                Some(b'r') => HeaderName::ReferTo,
                Some(b'a') => HeaderName::Replaces,
                Some(b'y') => HeaderName::ReplyTo,
                _ => return HeaderName::Other,
            },
            (9, b'c') => HeaderName::CallInfo,
            (9, b's') => HeaderName::Supported,
            (9, b't') => HeaderName::Timestamp,
            (10, b'a') => HeaderName::AlertInfo,
            (10, b'e') => HeaderName::ErrorInfo,
            (10, b'u') => HeaderName::UserAgent,
            (11, b'i') => HeaderName::InReplyTo,
            (11, b'm') => HeaderName::MinExpires,
            (11, b'r') => match name.get(2).map(|b| b | 0x20) {
                Some(b'f') => HeaderName::ReferredBy,
                Some(b't') => HeaderName::RetryAfter,
                _ => return HeaderName::Other,
            },
            (11, b'u') => HeaderName::Unsupported,
            (12, b'a') => HeaderName::AllowEvents,
            (12, b'c') => HeaderName::ContentType,
            (12, b'm') => match name.get(1).map(|b| b | 0x20) {
                Some(b'a') => HeaderName::MaxForwards,
                Some(b'i') => HeaderName::MimeVersion,
                _ => return HeaderName::Other,
            },
            (12, b'o') => HeaderName::Organization,
            (12, b'r') => HeaderName::RecordRoute,
            (13, b'a') => HeaderName::Authorization,
            (13, b'p') => HeaderName::ProxyRequire,
            (13, b's') => HeaderName::ServiceRoute,
            (14, b'a') => HeaderName::AcceptContact,
            (14, b'c') => HeaderName::ContentLength,
            (14, b'r') => HeaderName::RejectContact,
            (15, b'a') => match name.get(7).map(|b| b | 0x20) {
                Some(b'e') => HeaderName::AcceptEncoding,
                Some(b'l') => HeaderName::AcceptLanguage,
                _ => return HeaderName::Other,
            },
            (15, b's') => HeaderName::SessionExpires,
            (16, b'c') => match name.get(8).map(|b| b | 0x20) {
                Some(b'e') => HeaderName::ContentEncoding,
                Some(b'l') => HeaderName::ContentLanguage,
                _ => return HeaderName::Other,
            },
            (16, b'w') => HeaderName::WwwAuthenticate,
            (18, b'p') => HeaderName::ProxyAuthenticate,
            (18, b's') => HeaderName::SubscriptionState,
            (19, b'a') => HeaderName::AuthenticationInfo,
            (19, b'c') => HeaderName::ContentDisposition,
            (19, b'p') => match name.get(1).map(|b| b | 0x20) {
                Some(b'-') => HeaderName::PAssertedIdentity,
                Some(b'r') => HeaderName::ProxyAuthorization,
                _ => return HeaderName::Other,
            },
            (19, b'r') => HeaderName::RequestDisposition,
            (20, b'p') => HeaderName::PPreferredIdentity,
            _ => return HeaderName::Other,
        };
        if name.eq_ignore_ascii_case(candidate.as_str().as_bytes()) {
            candidate
        } else {
            HeaderName::Other
        }
    }

    fn from_compact(lower: u8) -> HeaderName {
        match lower {
            b'a' => HeaderName::AcceptContact,
            b'u' => HeaderName::AllowEvents,
            b'i' => HeaderName::CallId,
            b'm' => HeaderName::Contact,
            b'e' => HeaderName::ContentEncoding,
            b'l' => HeaderName::ContentLength,
            b'c' => HeaderName::ContentType,
            b'o' => HeaderName::Event,
            b'f' => HeaderName::From,
            b'y' => HeaderName::Identity,
            b'r' => HeaderName::ReferTo,
            b'b' => HeaderName::ReferredBy,
            b'j' => HeaderName::RejectContact,
            b'd' => HeaderName::RequestDisposition,
            b'x' => HeaderName::SessionExpires,
            b's' => HeaderName::Subject,
            b'k' => HeaderName::Supported,
            b't' => HeaderName::To,
            b'v' => HeaderName::Via,
            _ => HeaderName::Other,
        }
    }

    /// The canonical long name (`"Call-ID"`, `"WWW-Authenticate"`); empty for [`HeaderName::Other`].
    pub fn as_str(self) -> &'static str {
        match self {
            HeaderName::Accept => "Accept",
            HeaderName::AcceptContact => "Accept-Contact",
            HeaderName::AcceptEncoding => "Accept-Encoding",
            HeaderName::AcceptLanguage => "Accept-Language",
            HeaderName::AlertInfo => "Alert-Info",
            HeaderName::Allow => "Allow",
            HeaderName::AllowEvents => "Allow-Events",
            HeaderName::AuthenticationInfo => "Authentication-Info",
            HeaderName::Authorization => "Authorization",
            HeaderName::CallId => "Call-ID",
            HeaderName::CallInfo => "Call-Info",
            HeaderName::Contact => "Contact",
            HeaderName::ContentDisposition => "Content-Disposition",
            HeaderName::ContentEncoding => "Content-Encoding",
            HeaderName::ContentLanguage => "Content-Language",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::CSeq => "CSeq",
            HeaderName::Date => "Date",
            HeaderName::ErrorInfo => "Error-Info",
            HeaderName::Event => "Event",
            HeaderName::Expires => "Expires",
            HeaderName::From => "From",
            HeaderName::Identity => "Identity",
            HeaderName::InReplyTo => "In-Reply-To",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::MimeVersion => "MIME-Version",
            HeaderName::MinExpires => "Min-Expires",
            HeaderName::MinSe => "Min-SE",
            HeaderName::Organization => "Organization",
            HeaderName::PAssertedIdentity => "P-Asserted-Identity",
            HeaderName::PPreferredIdentity => "P-Preferred-Identity",
            HeaderName::Path => "Path",
            HeaderName::Priority => "Priority",
            HeaderName::Privacy => "Privacy",
            HeaderName::ProxyAuthenticate => "Proxy-Authenticate",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::RAck => "RAck",
            HeaderName::Reason => "Reason",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::ReferTo => "Refer-To",
            HeaderName::ReferredBy => "Referred-By",
            HeaderName::RejectContact => "Reject-Contact",
            HeaderName::Replaces => "Replaces",
            HeaderName::ReplyTo => "Reply-To",
            HeaderName::RequestDisposition => "Request-Disposition",
            HeaderName::Require => "Require",
            HeaderName::RetryAfter => "Retry-After",
            HeaderName::Route => "Route",
            HeaderName::RSeq => "RSeq",
            HeaderName::Server => "Server",
            HeaderName::ServiceRoute => "Service-Route",
            HeaderName::SessionExpires => "Session-Expires",
            HeaderName::Subject => "Subject",
            HeaderName::SubscriptionState => "Subscription-State",
            HeaderName::Supported => "Supported",
            HeaderName::Timestamp => "Timestamp",
            HeaderName::To => "To",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Via => "Via",
            HeaderName::Warning => "Warning",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            HeaderName::Other => "",
        }
    }

    /// The compact form, for the names that have one.
    pub fn compact(self) -> Option<u8> {
        match self {
            HeaderName::AcceptContact => Some(b'a'),
            HeaderName::AllowEvents => Some(b'u'),
            HeaderName::CallId => Some(b'i'),
            HeaderName::Contact => Some(b'm'),
            HeaderName::ContentEncoding => Some(b'e'),
            HeaderName::ContentLength => Some(b'l'),
            HeaderName::ContentType => Some(b'c'),
            HeaderName::Event => Some(b'o'),
            HeaderName::From => Some(b'f'),
            HeaderName::Identity => Some(b'y'),
            HeaderName::ReferTo => Some(b'r'),
            HeaderName::ReferredBy => Some(b'b'),
            HeaderName::RejectContact => Some(b'j'),
            HeaderName::RequestDisposition => Some(b'd'),
            HeaderName::SessionExpires => Some(b'x'),
            HeaderName::Subject => Some(b's'),
            HeaderName::Supported => Some(b'k'),
            HeaderName::To => Some(b't'),
            HeaderName::Via => Some(b'v'),
            _ => None,
        }
    }

    /// Whether the grammar makes this header a comma-separated list, so that several rows may be
    /// combined into one and one row may hold several values (RFC 3261 §7.3.1). Values of other
    /// headers (Date, User-Agent, Authorization, ...) may contain commas that separate nothing.
    pub fn is_list(self) -> bool {
        matches!(
            self,
            HeaderName::Accept
                | HeaderName::AcceptContact
                | HeaderName::AcceptEncoding
                | HeaderName::AcceptLanguage
                | HeaderName::AlertInfo
                | HeaderName::Allow
                | HeaderName::AllowEvents
                | HeaderName::CallInfo
                | HeaderName::Contact
                | HeaderName::ContentEncoding
                | HeaderName::ContentLanguage
                | HeaderName::ErrorInfo
                | HeaderName::InReplyTo
                | HeaderName::PAssertedIdentity
                | HeaderName::PPreferredIdentity
                | HeaderName::Path
                | HeaderName::ProxyRequire
                | HeaderName::Reason
                | HeaderName::RecordRoute
                | HeaderName::RejectContact
                | HeaderName::RequestDisposition
                | HeaderName::Require
                | HeaderName::Route
                | HeaderName::ServiceRoute
                | HeaderName::Supported
                | HeaderName::Unsupported
                | HeaderName::Via
                | HeaderName::Warning
        )
    }

    /// Position of this name in per-name tables.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// One header row of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'b> {
    /// The classified name.
    pub name: HeaderName,
    /// The name as written (`v`, `VIA`, `Via`).
    pub raw_name: &'b [u8],
    /// The value with leading and trailing whitespace removed; interior folds (CRLF + SP/HTAB)
    /// are kept as written.
    pub value: &'b [u8],
    /// The whole row, name through the CRLF that ends it (folds included), for verbatim copying.
    pub row: &'b [u8],
}

impl<'b> Header<'b> {
    /// The comma-separated values of this row if its header is a list (see
    /// [`HeaderName::is_list`]); otherwise the whole value once. An empty value yields nothing.
    pub fn values(&self) -> CommaSplit<'b> {
        CommaSplit::new(self.value, self.name.is_list())
    }
}

/// One row of the fixed-capacity index: 16-bit offsets into the message bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Offset of the first octet of the name.
    pub start: u16,
    /// Offset of the first octet of the trimmed value.
    pub value_start: u16,
    /// Offset one past the last octet of the trimmed value.
    pub value_end: u16,
    /// Length of the raw name, or 255 when it is 255 or longer (then it is measured again).
    pub name_len: u8,
    /// The classified name.
    pub name: HeaderName,
}

impl Entry {
    pub const EMPTY: Entry = Entry {
        start: 0,
        value_start: 0,
        value_end: 0,
        name_len: 0,
        name: HeaderName::Other,
    };
}

/// Iterator over the values of a list header: splits at commas that are outside quoted strings
/// and outside `<...>`, trimming linear whitespace around each value. Empty elements (`a,,b`)
/// are yielded as empty slices so that typed parsers can reject them.
#[derive(Clone, Debug)]
pub struct CommaSplit<'b> {
    rest: &'b [u8],
    split: bool,
    done: bool,
}

impl<'b> CommaSplit<'b> {
    /// Splits `value` when `split` is true; otherwise yields it whole (once, unless empty).
    pub fn new(value: &'b [u8], split: bool) -> Self {
        CommaSplit {
            rest: value,
            split,
            done: trim_lws(value).is_empty(),
        }
    }
}

impl<'b> Iterator for CommaSplit<'b> {
    type Item = &'b [u8];

    fn next(&mut self) -> Option<&'b [u8]> {
        if self.done {
            return None;
        }
        if self.split {
            if let Some(at) = top_level_comma(self.rest) {
                let (element, rest) = self.rest.split_at(at);
                self.rest = rest.get(1..).unwrap_or(&[]);
                return Some(trim_lws(element));
            }
        }
        self.done = true;
        Some(trim_lws(self.rest))
    }
}

/// Offset of the first comma outside quoted strings and angle brackets.
pub(crate) fn top_level_comma(s: &[u8]) -> Option<usize> {
    let mut in_quote = false;
    let mut escaped = false;
    let mut depth = 0u32;
    for (i, &b) in s.iter().enumerate() {
        if in_quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quote = false;
            }
            continue;
        }
        match b {
            b'"' => in_quote = true,
            b'<' => depth += 1,
            b'>' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for name in HeaderName::KNOWN {
            let s = name.as_str();
            assert_eq!(HeaderName::from_bytes(s.as_bytes()), name, "{s}");
            assert_eq!(
                HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()),
                name,
                "{s}"
            );
            assert_eq!(
                HeaderName::from_bytes(s.to_ascii_uppercase().as_bytes()),
                name,
                "{s}"
            );
            if let Some(c) = name.compact() {
                assert_eq!(HeaderName::from_bytes(&[c]), name);
                assert_eq!(HeaderName::from_bytes(&[c.to_ascii_uppercase()]), name);
            }
            // One octet changed at the end must never classify as the same name.
            let mut wrong = s.as_bytes().to_vec();
            if let Some(last) = wrong.last_mut() {
                *last = b'#';
            }
            assert_eq!(HeaderName::from_bytes(&wrong), HeaderName::Other, "{s}");
        }
        assert_eq!(HeaderName::KNOWN.len() + 1, HeaderName::COUNT);
        assert_eq!(HeaderName::Other.index(), HeaderName::COUNT - 1);
    }

    #[test]
    fn near_misses_are_other() {
        for n in [
            &b"Vias"[..],
            b"C%6Fntact",
            b"Cal-ID",
            b"",
            b"q",
            b"Contacts",
            b"X-Via",
        ] {
            assert_eq!(HeaderName::from_bytes(n), HeaderName::Other, "{:?}", n);
        }
        assert_eq!(HeaderName::from_bytes(b"vIa"), HeaderName::Via);
        assert_eq!(
            HeaderName::from_bytes(b"MaX-fOrWaRdS"),
            HeaderName::MaxForwards
        );
    }

    #[test]
    fn comma_split_respects_quotes_and_brackets() {
        let v = br#""Mr. Watson, Jr" <sip:w@x;a=b,c>;q=0.7, <mailto:w@y> ;q=0.1 ,, sip:z"#;
        let parts: Vec<&[u8]> = CommaSplit::new(v, true).collect();
        assert_eq!(
            parts,
            vec![
                &br#""Mr. Watson, Jr" <sip:w@x;a=b,c>;q=0.7"#[..],
                b"<mailto:w@y> ;q=0.1",
                b"",
                b"sip:z"
            ]
        );
        let whole: Vec<&[u8]> = CommaSplit::new(b"Sat, 13 Nov 2010", false).collect();
        assert_eq!(whole, vec![&b"Sat, 13 Nov 2010"[..]]);
        assert_eq!(CommaSplit::new(b"  ", true).count(), 0);
    }
}
