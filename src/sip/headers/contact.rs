//! Contact (RFC 3261 §10.2.1, §20.10; RFC 5626 `+sip.instance` and `reg-id`).
//!
//! `Contact: ( STAR / (contact-param *(COMMA contact-param)) )`, with
//! `contact-params = c-p-q / c-p-expires / contact-extension`. The registrar needs q (kept as
//! thousandths so that it compares exactly), expires, the instance URN and reg-id; every other
//! parameter stays in [`NameAddr::params`] and is stored with the binding unchanged.

use crate::sip::error::ParseError;
use crate::sip::scan::{parse_u32, unquote, Cursor};

use super::name_addr::{parse_name_addr, Form, NameAddr};

/// One Contact value.
// Values are produced one at a time on the stack; boxing the large variant would allocate.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContactValue<'b> {
    /// `*` (only valid in a REGISTER with `Expires: 0`; the registrar checks that).
    Star,
    /// An address with its contact parameters.
    Addr(Contact<'b>),
}

/// An address-valued Contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contact<'b> {
    /// The address and all its parameters.
    pub addr: NameAddr<'b>,
    /// `q` in thousandths (0..=1000): `q=0.7` is 700.
    pub q: Option<u16>,
    /// The `expires` parameter.
    pub expires: Option<u32>,
    /// `+sip.instance` without its quotes (`<urn:uuid:...>`).
    pub instance: Option<&'b [u8]>,
    /// `reg-id`.
    pub reg_id: Option<u32>,
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
pub fn parse_qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v {
        [i] => (*i, &[][..]),
        [i, b'.', frac @ ..] if frac.len() <= 3 => (*i, frac),
        _ => return None,
    };
    if !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let thousandths = frac
        .iter()
        .chain(core::iter::repeat(&b'0'))
        .take(3)
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    match int {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// List element parser for Contact.
pub(crate) fn parse_contact<'b>(c: &mut Cursor<'b>) -> Result<ContactValue<'b>, ParseError> {
    c.skip_lws();
    if c.peek() == Some(b'*') {
        c.eat(b'*');
        let save = c.pos();
        c.skip_lws();
        return if c.at_end() || c.peek() == Some(b',') {
            c.set_pos(save);
            Ok(ContactValue::Star)
        } else {
            Err(ParseError::BadNameAddr)
        };
    }
    let addr = parse_name_addr(c, Form::Any)?;
    let mut contact = Contact {
        addr,
        q: None,
        expires: None,
        instance: None,
        reg_id: None,
    };
    for (name, value) in addr.params {
        if name.eq_ignore_ascii_case(b"q") {
            contact.q = Some(value.and_then(parse_qvalue).ok_or(ParseError::BadQValue)?);
        } else if name.eq_ignore_ascii_case(b"expires") {
            contact.expires = Some(value.and_then(parse_u32).ok_or(ParseError::BadExpires)?);
        } else if name.eq_ignore_ascii_case(b"+sip.instance") {
            let v = value
                .filter(|v| v.starts_with(b"\""))
                .ok_or(ParseError::BadContactParam)?;
            contact.instance = Some(unquote(v));
        } else if name.eq_ignore_ascii_case(b"reg-id") {
            contact.reg_id = Some(
                value
                    .and_then(parse_u32)
                    .ok_or(ParseError::BadContactParam)?,
            );
        }
    }
    Ok(ContactValue::Addr(contact))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue(b"0.7"), Some(700));
        assert_eq!(parse_qvalue(b"0.33"), Some(330));
        assert_eq!(parse_qvalue(b"0.001"), Some(1));
        assert_eq!(parse_qvalue(b"1"), Some(1000));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        assert_eq!(parse_qvalue(b"0"), Some(0));
        for bad in [&b"1.5"[..], b"0.1234", b"2", b"", b".5", b"0.x"] {
            assert_eq!(parse_qvalue(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn outbound_parameters() {
        let v = b"<sip:line1@192.0.2.2;transport=tcp>; reg-id=1;q=0.5;expires=600;\r\n +sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";foo";
        let mut c = Cursor::new(v);
        let ContactValue::Addr(ct) = parse_contact(&mut c).unwrap() else {
            panic!("star")
        };
        assert_eq!(ct.reg_id, Some(1));
        assert_eq!(ct.q, Some(500));
        assert_eq!(ct.expires, Some(600));
        assert_eq!(
            ct.instance,
            Some(&b"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"[..])
        );
        assert_eq!(ct.addr.params.get("foo"), Some(None));
    }

    #[test]
    fn star_and_errors() {
        let mut c = Cursor::new(b"*");
        assert_eq!(parse_contact(&mut c).unwrap(), ContactValue::Star);
        for (v, e) in [
            (
                &b"<sip:a@b>;expires=280297596632815"[..],
                ParseError::BadExpires,
            ),
            (b"<sip:a@b>;q=2", ParseError::BadQValue),
            (b"<sip:a@b>;+sip.instance=abc", ParseError::BadContactParam),
            (b"* x", ParseError::BadNameAddr),
            (b"\"Joe\" <sip:joe@example.org>;;;;", ParseError::BadParam),
        ] {
            let mut c = Cursor::new(v);
            assert_eq!(
                parse_contact(&mut c).unwrap_err(),
                e,
                "{}",
                String::from_utf8_lossy(v)
            );
        }
    }
}
