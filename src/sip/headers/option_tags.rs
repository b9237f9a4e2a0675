//! Option-tag lists: Require (§20.32), Proxy-Require (§20.29), Supported (§20.37) and
//! Unsupported (§20.40) of RFC 3261. `option-tag = token`, comma-separated over all rows.
//!
//! A proxy answers 420 listing the Proxy-Require tags it does not know (RFC 3261 §16.3 step 5),
//! so the tags are handed out exactly as written.

use crate::sip::error::ParseError;
use crate::sip::scan::Cursor;

/// List element parser for option tags.
pub(crate) fn parse_option_tag<'b>(c: &mut Cursor<'b>) -> Result<&'b [u8], ParseError> {
    c.skip_lws();
    c.token().ok_or(ParseError::BadOptionTag)
}
