//! The number a URI names: one function for every place that asks which extension (and so which
//! shard) a request is for — the dispatcher's owner look-up, §16.5 resolution and the registrar.

use std::borrow::Cow;

use crate::sip::Uri;

/// The number a URI is for: the user part of a SIP URI (unescaped), or a tel URI's digits
/// without visual separators (RFC 3966 §5.1.1). Borrowed unless something had to be removed;
/// empty for other schemes and SIP URIs without a user.
pub fn of_uri<'b>(uri: &Uri<'b>) -> Cow<'b, [u8]> {
    match uri {
        Uri::Sip(u) => u.user_unescaped().unwrap_or(Cow::Borrowed(b"")),
        Uri::Tel(t) if t.number.iter().copied().any(is_visual_separator) => Cow::Owned(
            t.number
                .iter()
                .copied()
                .filter(|&c| !is_visual_separator(c))
                .collect(),
        ),
        Uri::Tel(t) => Cow::Borrowed(t.number),
        Uri::Other(_) => Cow::Borrowed(b""),
    }
}

fn is_visual_separator(c: u8) -> bool {
    matches!(c, b'-' | b'.' | b'(' | b')')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(uri: &str) -> Vec<u8> {
        of_uri(&Uri::parse(uri.as_bytes()).unwrap()).into_owned()
    }

    #[test]
    fn sip_tel_and_other_schemes() {
        assert_eq!(number("sip:1000@example.com"), b"1000");
        assert_eq!(number("sip:%31000@example.com"), b"1000");
        assert_eq!(number("tel:1000"), b"1000");
        assert_eq!(number("tel:+1-201-555-0123"), b"+12015550123");
        assert_eq!(number("sip:example.com"), b"");
        assert_eq!(number("mailto:a@b"), b"");
    }
}
