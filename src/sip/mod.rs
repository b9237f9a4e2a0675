//! SIP messages: bytes to borrowed views (RFC 3261 §7, §18.3, §19, §20, §25).
//!
//! [`parse`] frames one UDP datagram and indexes its header rows in a single pass, without
//! allocating and without copying: a [`Message`] is a set of 16-bit offsets into the datagram.
//! Typed values (Via, From/To, CSeq, Contact, digest credentials, URIs...) are parsed on demand by
//! its accessors, and [`validate`] checks what a proxy or registrar must check before acting.
//!
//! ```
//! use sipfork::sip::{parse, HeaderName, Method};
//! let bytes = b"OPTIONS sip:bob@example.com SIP/2.0\r\n\
//!     Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n\
//!     Max-Forwards: 70\r\nTo: <sip:bob@example.com>\r\n\
//!     From: <sip:alice@example.com>;tag=1928301774\r\nCall-ID: a84b4c76e66710\r\n\
//!     CSeq: 63104 OPTIONS\r\nContent-Length: 0\r\n\r\n";
//! let msg = parse(bytes).unwrap();
//! assert_eq!(msg.method(), Some(Method::Options));
//! assert_eq!(msg.top_via().unwrap().branch, Some(&b"z9hG4bK776asdhds"[..]));
//! assert_eq!(msg.from().unwrap().tag, Some(&b"1928301774"[..]));
//! assert_eq!(msg.first(HeaderName::MaxForwards).unwrap().row, b"Max-Forwards: 70\r\n");
//! ```
//!
//! Invariant for everything in here: nothing panics on any input, and every slice handed out
//! points into the bytes given to [`parse`], so [`Message::offset_of`] can turn it into a range
//! a builder splices with.
#![forbid(unsafe_code)]

pub mod build;
pub mod error;
pub mod header;
pub mod headers;
pub mod message;
pub mod method;
pub mod scan;
mod structural;
pub mod uri;
pub mod validate;

pub use error::{Disposition, DropReason, ParseError};
pub use header::{CommaSplit, Header, HeaderName};
pub use headers::contact::{Contact, ContactValue};
pub use headers::cseq::CSeq;
pub use headers::date::SipDate;
pub use headers::digest::{DigestChallenge, DigestCredentials};
pub use headers::media::ContentType;
pub use headers::name_addr::NameAddr;
pub use headers::params::Params;
pub use headers::reason::Reason;
pub use headers::scalar::RetryAfter;
pub use headers::via::{Via, MAGIC_COOKIE};
pub use headers::{Contacts, OptionTags, Reasons, Routes, Vias};
pub use message::{parse, parse_into, salvage, Kind, Message, MAX_ROWS};
pub use method::Method;
pub use uri::{Host, OpaqueUri, Scheme, SipUri, TelUri, Uri};
pub use validate::{check_request, check_response, Essentials, ResponseEssentials};

/// Does this datagram claim to be a response (`SIP/` first)? Lets a caller that could not parse
/// a datagram pick [`ParseError::disposition`]'s `is_request` without a second parse.
pub fn looks_like_response(datagram: &[u8]) -> bool {
    let start = datagram
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(datagram.len());
    datagram
        .get(start..start + 4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
}
