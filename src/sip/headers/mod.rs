//! Typed, lazily parsed header values (RFC 3261 §20 and the extensions a proxy and registrar use).
//!
//! Each accessor parses on every call and allocates nothing; callers keep the results they reuse.
//! Required headers (Via, From, To, Call-ID, CSeq) report absence as
//! [`ParseError::MissingHeader`]; optional ones return `Option`. A single-valued accessor reads the
//! first row: repeated rows are [`crate::sip::validate`]'s concern, not the accessor's.

pub mod contact;
pub mod cseq;
pub mod date;
pub mod digest;
pub mod list;
pub mod media;
pub mod name_addr;
pub mod option_tags;
pub mod params;
pub mod reason;
pub mod scalar;
pub mod via;

use crate::sip::error::ParseError;
use crate::sip::header::HeaderName;
use crate::sip::message::Message;

use self::contact::{parse_contact, ContactValue};
use self::cseq::{parse_cseq, CSeq};
use self::date::{parse_date, SipDate};
use self::digest::{parse_challenge, parse_credentials, DigestChallenge, DigestCredentials};
use self::list::ListIter;
use self::media::{parse_content_type, ContentType};
use self::name_addr::{parse_route, parse_single, NameAddr};
use self::option_tags::parse_option_tag;
use self::reason::{parse_reason, Reason};
use self::scalar::{
    parse_call_id, parse_delta_seconds, parse_max_forwards, parse_retry_after, RetryAfter,
};
use self::via::{parse_via, Via};

/// Every Via value, top first, over all rows.
pub type Vias<'m, 'b> = ListIter<'m, 'b, Via<'b>>;
/// Every Contact value over all rows.
pub type Contacts<'m, 'b> = ListIter<'m, 'b, ContactValue<'b>>;
/// Every Route / Record-Route value over all rows.
pub type Routes<'m, 'b> = ListIter<'m, 'b, NameAddr<'b>>;
/// Every option tag of one header over all rows.
pub type OptionTags<'m, 'b> = ListIter<'m, 'b, &'b [u8]>;
/// Every Reason value over all rows.
pub type Reasons<'m, 'b> = ListIter<'m, 'b, Reason<'b>>;

impl<'b> Message<'b> {
    fn required(&self, name: HeaderName) -> Result<&'b [u8], ParseError> {
        self.first_value(name)
            .ok_or(ParseError::MissingHeader(name))
    }

    /// The topmost Via value (the first value of the first Via row): the first item of
    /// [`Message::vias`], which stops at the first value's end.
    #[inline]
    pub fn top_via(&self) -> Result<Via<'b>, ParseError> {
        self.vias()
            .next()
            .unwrap_or(Err(ParseError::MissingHeader(HeaderName::Via)))
    }

    /// Every Via value in order, comma-separated values and rows alike.
    pub fn vias(&self) -> Vias<'_, 'b> {
        ListIter::new(self, HeaderName::Via, parse_via, ParseError::BadVia, false)
    }

    /// Call-ID.
    #[inline]
    pub fn call_id(&self) -> Result<&'b [u8], ParseError> {
        parse_call_id(self.required(HeaderName::CallId)?)
    }

    /// CSeq.
    #[inline]
    pub fn cseq(&self) -> Result<CSeq<'b>, ParseError> {
        parse_cseq(self.required(HeaderName::CSeq)?)
    }

    /// From.
    #[inline]
    pub fn from(&self) -> Result<NameAddr<'b>, ParseError> {
        parse_single(self.required(HeaderName::From)?)
    }

    /// To.
    #[inline]
    pub fn to(&self) -> Result<NameAddr<'b>, ParseError> {
        parse_single(self.required(HeaderName::To)?)
    }

    /// Max-Forwards: `Ok(None)` when absent (a proxy then adds 70, RFC 3261 §16.6 step 3).
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        self.first_value(HeaderName::MaxForwards)
            .map(parse_max_forwards)
            .transpose()
    }

    /// Every Contact value over all rows.
    pub fn contacts(&self) -> Contacts<'_, 'b> {
        ListIter::new(
            self,
            HeaderName::Contact,
            parse_contact,
            ParseError::BadNameAddr,
            false,
        )
    }

    /// Expires.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.first_value(HeaderName::Expires)
            .map(|v| parse_delta_seconds(v, ParseError::BadExpires))
            .transpose()
    }

    /// Min-Expires.
    pub fn min_expires(&self) -> Result<Option<u32>, ParseError> {
        self.first_value(HeaderName::MinExpires)
            .map(|v| parse_delta_seconds(v, ParseError::BadMinExpires))
            .transpose()
    }

    /// Content-Type.
    pub fn content_type(&self) -> Option<Result<ContentType<'b>, ParseError>> {
        self.first_value(HeaderName::ContentType)
            .map(parse_content_type)
    }

    /// Route values, first to last.
    pub fn routes(&self) -> Routes<'_, 'b> {
        ListIter::new(
            self,
            HeaderName::Route,
            parse_route,
            ParseError::BadNameAddr,
            false,
        )
    }

    /// Record-Route values, first to last.
    pub fn record_routes(&self) -> Routes<'_, 'b> {
        ListIter::new(
            self,
            HeaderName::RecordRoute,
            parse_route,
            ParseError::BadNameAddr,
            false,
        )
    }

    /// Path values (RFC 3327), first to last.
    pub fn paths(&self) -> Routes<'_, 'b> {
        ListIter::new(
            self,
            HeaderName::Path,
            parse_route,
            ParseError::BadNameAddr,
            false,
        )
    }

    fn option_tags(&self, name: HeaderName) -> OptionTags<'_, 'b> {
        ListIter::new(self, name, parse_option_tag, ParseError::BadOptionTag, true)
    }

    /// Require option tags.
    pub fn require(&self) -> OptionTags<'_, 'b> {
        self.option_tags(HeaderName::Require)
    }

    /// Proxy-Require option tags.
    pub fn proxy_require(&self) -> OptionTags<'_, 'b> {
        self.option_tags(HeaderName::ProxyRequire)
    }

    /// Supported option tags.
    pub fn supported(&self) -> OptionTags<'_, 'b> {
        self.option_tags(HeaderName::Supported)
    }

    /// Unsupported option tags.
    pub fn unsupported(&self) -> OptionTags<'_, 'b> {
        self.option_tags(HeaderName::Unsupported)
    }

    /// The first Authorization row as Digest credentials.
    pub fn authorization(&self) -> Option<Result<DigestCredentials<'b>, ParseError>> {
        self.authorizations(HeaderName::Authorization).next()
    }

    /// The first Proxy-Authorization row as Digest credentials.
    pub fn proxy_authorization(&self) -> Option<Result<DigestCredentials<'b>, ParseError>> {
        self.authorizations(HeaderName::ProxyAuthorization).next()
    }

    /// Every row of Authorization or Proxy-Authorization (one per realm) as Digest credentials.
    pub fn authorizations(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<DigestCredentials<'b>, ParseError>> + '_ {
        self.rows(name).map(|h| parse_credentials(h.value))
    }

    /// The first WWW-Authenticate challenge.
    pub fn www_authenticate(&self) -> Option<Result<DigestChallenge<'b>, ParseError>> {
        self.first_value(HeaderName::WwwAuthenticate)
            .map(parse_challenge)
    }

    /// The first Proxy-Authenticate challenge.
    pub fn proxy_authenticate(&self) -> Option<Result<DigestChallenge<'b>, ParseError>> {
        self.first_value(HeaderName::ProxyAuthenticate)
            .map(parse_challenge)
    }

    /// User-Agent, as written (opaque product tokens and comments).
    pub fn user_agent(&self) -> Option<&'b [u8]> {
        self.first_value(HeaderName::UserAgent)
    }

    /// Every Reason value (RFC 3326).
    pub fn reasons(&self) -> Reasons<'_, 'b> {
        ListIter::new(
            self,
            HeaderName::Reason,
            parse_reason,
            ParseError::BadReason,
            false,
        )
    }

    /// The first Reason value.
    pub fn reason(&self) -> Option<Result<Reason<'b>, ParseError>> {
        self.reasons().next()
    }

    /// Retry-After.
    pub fn retry_after(&self) -> Option<Result<RetryAfter<'b>, ParseError>> {
        self.first_value(HeaderName::RetryAfter)
            .map(parse_retry_after)
    }

    /// Date.
    pub fn date(&self) -> Option<Result<SipDate, ParseError>> {
        self.first_value(HeaderName::Date).map(parse_date)
    }
}
