//! Header names, header rows and comma-separated values (RFC 3261 §7.3, §7.3.1, §7.3.3, §20).
//!
//! Names are matched case-insensitively without hashing or byte loops: the name is read as
//! little-endian 8-octet words with case folded, and `(length, first word)` is one `match` on
//! constants (plus one or two more word compares for names longer than 8 octets). Compact forms (`v`, `f`, `t`, ...) map to the same [`HeaderName`] as their long
//! form, so every accessor sees `v:` rows as Via rows.
//!
//! Invariant: a [`Header`]'s slices all point into the message's bytes, and `row` is exactly the
//! octets of that row including its final CRLF, so a builder may copy rows verbatim.
//!
//! The word constants in `HeaderName::classify` and the tables below were generated from one
//! list of names; the unit test `every_name_round_trips` fails if a hand edit breaks any of them.

use super::scan::{is_token, trim_lws};

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
    /// Anything that is not a token is [`HeaderName::Other`].
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if name.iter().all(|&b| is_token(b)) {
            Self::classify(name, name.len())
        } else {
            HeaderName::Other
        }
    }

    /// Classifies the first `len` octets of `window`, which must hold no CR (the row walk calls
    /// it on the octets before a row's colon, its first structural octet, and checks a name it
    /// does not know octet by octet afterwards); `window` may extend past the name so that the
    /// name can be read in whole 8-octet words.
    ///
    /// OR-ing 0x20 into every octet folds case exactly for token characters: the only other
    /// octets it maps onto a letter or `-` are upper-case letters and CR, and CR is no token
    /// character. `(length, first word)` then selects at most one name; longer names compare
    /// their remaining words too.
    #[inline(always)]
    pub(crate) fn classify(window: &[u8], len: usize) -> HeaderName {
        if len == 1 {
            return window
                .first()
                .map_or(HeaderName::Other, |&b| Self::from_compact(b | 0x20));
        }
        let w0 = lower_word(window, len, 0);
        let w1 = if len > 8 {
            lower_word(window, len, 1)
        } else {
            0
        };
        let w2 = if len > 16 {
            lower_word(window, len, 2)
        } else {
            0
        };
        match (len, w0) {
            (2, 0x2020202020206f74) => HeaderName::To,       // To
            (3, 0x2020202020616976) => HeaderName::Via,      // Via
            (4, 0x2020202071657363) => HeaderName::CSeq,     // CSeq
            (4, 0x2020202065746164) => HeaderName::Date,     // Date
            (4, 0x202020206d6f7266) => HeaderName::From,     // From
            (4, 0x2020202068746170) => HeaderName::Path,     // Path
            (4, 0x202020206b636172) => HeaderName::RAck,     // RAck
            (4, 0x2020202071657372) => HeaderName::RSeq,     // RSeq
            (5, 0x202020776f6c6c61) => HeaderName::Allow,    // Allow
            (5, 0x202020746e657665) => HeaderName::Event,    // Event
            (5, 0x2020206574756f72) => HeaderName::Route,    // Route
            (6, 0x2020747065636361) => HeaderName::Accept,   // Accept
            (6, 0x202065732d6e696d) => HeaderName::MinSe,    // Min-SE
            (6, 0x20206e6f73616572) => HeaderName::Reason,   // Reason
            (6, 0x2020726576726573) => HeaderName::Server,   // Server
            (7, 0x2064692d6c6c6163) => HeaderName::CallId,   // Call-ID
            (7, 0x20746361746e6f63) => HeaderName::Contact,  // Contact
            (7, 0x2073657269707865) => HeaderName::Expires,  // Expires
            (7, 0x2079636176697270) => HeaderName::Privacy,  // Privacy
            (7, 0x2065726975716572) => HeaderName::Require,  // Require
            (7, 0x207463656a627573) => HeaderName::Subject,  // Subject
            (7, 0x20676e696e726177) => HeaderName::Warning,  // Warning
            (8, 0x797469746e656469) => HeaderName::Identity, // Identity
            (8, 0x797469726f697270) => HeaderName::Priority, // Priority
            (8, 0x6f742d7265666572) => HeaderName::ReferTo,  // Refer-To
            (8, 0x736563616c706572) => HeaderName::Replaces, // Replaces
            (8, 0x6f742d796c706572) => HeaderName::ReplyTo,  // Reply-To
            (9, 0x666e692d6c6c6163) if w1 == 0x202020202020206f => HeaderName::CallInfo, // Call-Info
            (9, 0x6574726f70707573) if w1 == 0x2020202020202064 => HeaderName::Supported, // Supported
            (9, 0x6d617473656d6974) if w1 == 0x2020202020202070 => HeaderName::Timestamp, // Timestamp
            (10, 0x6e692d7472656c61) if w1 == 0x2020202020206f66 => HeaderName::AlertInfo, // Alert-Info
            (10, 0x6e692d726f727265) if w1 == 0x2020202020206f66 => HeaderName::ErrorInfo, // Error-Info
            (10, 0x6567612d72657375) if w1 == 0x202020202020746e => HeaderName::UserAgent, // User-Agent
            (11, 0x796c7065722d6e69) if w1 == 0x20202020206f742d => HeaderName::InReplyTo, // In-Reply-To
            (11, 0x697078652d6e696d) if w1 == 0x2020202020736572 => HeaderName::MinExpires, // Min-Expires
            (11, 0x6465727265666572) if w1 == 0x202020202079622d => HeaderName::ReferredBy, // Referred-By
            (11, 0x66612d7972746572) if w1 == 0x2020202020726574 => HeaderName::RetryAfter, // Retry-After
            (11, 0x726f707075736e75) if w1 == 0x2020202020646574 => HeaderName::Unsupported, // Unsupported
            (12, 0x76652d776f6c6c61) if w1 == 0x2020202073746e65 => HeaderName::AllowEvents, // Allow-Events
            (12, 0x2d746e65746e6f63) if w1 == 0x2020202065707974 => HeaderName::ContentType, // Content-Type
            (12, 0x77726f662d78616d) if w1 == 0x2020202073647261 => HeaderName::MaxForwards, // Max-Forwards
            (12, 0x7265762d656d696d) if w1 == 0x202020206e6f6973 => HeaderName::MimeVersion, // MIME-Version
            (12, 0x617a696e6167726f) if w1 == 0x202020206e6f6974 => HeaderName::Organization, // Organization
            (12, 0x722d64726f636572) if w1 == 0x202020206574756f => HeaderName::RecordRoute, // Record-Route
            (13, 0x7a69726f68747561) if w1 == 0x2020206e6f697461 => HeaderName::Authorization, // Authorization
            (13, 0x65722d79786f7270) if w1 == 0x2020206572697571 => HeaderName::ProxyRequire, // Proxy-Require
            (13, 0x2d65636976726573) if w1 == 0x2020206574756f72 => HeaderName::ServiceRoute, // Service-Route
            (14, 0x632d747065636361) if w1 == 0x2020746361746e6f => HeaderName::AcceptContact, // Accept-Contact
            (14, 0x2d746e65746e6f63) if w1 == 0x20206874676e656c => HeaderName::ContentLength, // Content-Length
            (14, 0x632d7463656a6572) if w1 == 0x2020746361746e6f => HeaderName::RejectContact, // Reject-Contact
            (15, 0x652d747065636361) if w1 == 0x20676e69646f636e => HeaderName::AcceptEncoding, // Accept-Encoding
            (15, 0x6c2d747065636361) if w1 == 0x2065676175676e61 => HeaderName::AcceptLanguage, // Accept-Language
            (15, 0x2d6e6f6973736573) if w1 == 0x2073657269707865 => HeaderName::SessionExpires, // Session-Expires
            (16, 0x2d746e65746e6f63) if w1 == 0x676e69646f636e65 => HeaderName::ContentEncoding, // Content-Encoding
            (16, 0x2d746e65746e6f63) if w1 == 0x65676175676e616c => HeaderName::ContentLanguage, // Content-Language
            (16, 0x687475612d777777) if w1 == 0x6574616369746e65 => HeaderName::WwwAuthenticate, // WWW-Authenticate
            (18, 0x75612d79786f7270) if w1 == 0x616369746e656874 && w2 == 0x2020202020206574 => {
                HeaderName::ProxyAuthenticate
            } // Proxy-Authenticate
            (18, 0x7069726373627573) if w1 == 0x6174732d6e6f6974 && w2 == 0x2020202020206574 => {
                HeaderName::SubscriptionState
            } // Subscription-State
            (19, 0x69746e6568747561) if w1 == 0x692d6e6f69746163 && w2 == 0x20202020206f666e => {
                HeaderName::AuthenticationInfo
            } // Authentication-Info
            (19, 0x2d746e65746e6f63) if w1 == 0x7469736f70736964 && w2 == 0x20202020206e6f69 => {
                HeaderName::ContentDisposition
            } // Content-Disposition
            (19, 0x7472657373612d70) if w1 == 0x746e6564692d6465 && w2 == 0x2020202020797469 => {
                HeaderName::PAssertedIdentity
            } // P-Asserted-Identity
            (19, 0x75612d79786f7270) if w1 == 0x74617a69726f6874 && w2 == 0x20202020206e6f69 => {
                HeaderName::ProxyAuthorization
            } // Proxy-Authorization
            (19, 0x2d74736575716572) if w1 == 0x7469736f70736964 && w2 == 0x20202020206e6f69 => {
                HeaderName::RequestDisposition
            } // Request-Disposition
            (20, 0x7265666572702d70) if w1 == 0x6e6564692d646572 && w2 == 0x2020202079746974 => {
                HeaderName::PPreferredIdentity
            } // P-Preferred-Identity
            _ => HeaderName::Other,
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

/// Word `i` (octets `8i..8i+8`) of a name of `len` octets at the start of `window`, with 0x20
/// OR-ed into every octet and octets past the name reading as 0x20.
#[inline(always)]
fn lower_word(window: &[u8], len: usize, i: usize) -> u64 {
    let start = 8 * i;
    let n = len.saturating_sub(start).min(8);
    let raw = match window.get(start..start + 8) {
        Some(w) => <[u8; 8]>::try_from(w).map_or(0, u64::from_le_bytes),
        None => {
            let mut buf = [0u8; 8];
            for (dst, src) in buf.iter_mut().zip(window.iter().skip(start).take(n)) {
                *dst = *src;
            }
            u64::from_le_bytes(buf)
        }
    };
    (raw & KEEP[n]) | 0x2020_2020_2020_2020
}

/// `KEEP[n]`: the low `n` octets of a word (a load instead of a shift and two selects).
const KEEP: [u64; 9] = {
    let mut keep = [u64::MAX; 9];
    let mut n = 0;
    while n < 8 {
        keep[n] = (1u64 << (8 * n)) - 1;
        n += 1;
    }
    keep
};

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
        for name in HeaderName::KNOWN {
            // In the indexer the name is read from a window that runs on into the row.
            let row = format!("{}: value\r\n", name.as_str().to_ascii_uppercase());
            assert_eq!(
                HeaderName::classify(row.as_bytes(), name.as_str().len()),
                name
            );
            let mut wrong = name.as_str().as_bytes().to_vec();
            if let Some(last) = wrong.last_mut() {
                *last = b'~';
            }
            assert_eq!(HeaderName::classify(&wrong, wrong.len()), HeaderName::Other);
        }
        assert_eq!(HeaderName::from_bytes(b"Call\rID"), HeaderName::Other);
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
