//! Date (RFC 3261 §20.17): `rfc1123-date = wkday "," SP date1 SP time SP "GMT"`.
//!
//! Only GMT is legal; RFC 4475 §3.1.2.12 sends `EST`, which is a [`ParseError::BadDate`]. A proxy
//! or registrar does not need Date, so the error matters only to callers that read it.

use crate::sip::error::ParseError;

/// A Date header value (always GMT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipDate {
    /// Year (four digits).
    pub year: u16,
    /// Month, 1..=12.
    pub month: u8,
    /// Day of month, 1..=31.
    pub day: u8,
    /// Hour, 0..=23.
    pub hour: u8,
    /// Minute, 0..=59.
    pub minute: u8,
    /// Second, 0..=60 (leap second).
    pub second: u8,
}

const WEEKDAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

fn two_digits(s: &[u8]) -> Option<u8> {
    match s {
        [a, b] if a.is_ascii_digit() && b.is_ascii_digit() => Some((a - b'0') * 10 + (b - b'0')),
        _ => None,
    }
}

/// Parses `Sat, 13 Nov 2010 23:29:00 GMT` (29 octets exactly).
pub(crate) fn parse_date(value: &[u8]) -> Result<SipDate, ParseError> {
    let bad = ParseError::BadDate;
    let [w0, w1, w2, b',', b' ', d0, d1, b' ', m0, m1, m2, b' ', y0, y1, y2, y3, b' ', h0, h1, b':', n0, n1, b':', s0, s1, b' ', b'G', b'M', b'T'] =
        *value
    else {
        return Err(bad);
    };
    if !WEEKDAYS.contains(&&[w0, w1, w2][..]) {
        return Err(bad);
    }
    let month = MONTHS.iter().position(|m| *m == [m0, m1, m2]).ok_or(bad)? as u8 + 1;
    let year = [y0, y1, y2, y3]
        .iter()
        .try_fold(0u16, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + u16::from(d - b'0'))
        })
        .ok_or(bad)?;
    let date = SipDate {
        year,
        month,
        day: two_digits(&[d0, d1]).ok_or(bad)?,
        hour: two_digits(&[h0, h1]).ok_or(bad)?,
        minute: two_digits(&[n0, n1]).ok_or(bad)?,
        second: two_digits(&[s0, s1]).ok_or(bad)?,
    };
    let valid =
        (1..=31).contains(&date.day) && date.hour < 24 && date.minute < 60 && date.second <= 60;
    if valid {
        Ok(date)
    } else {
        Err(bad)
    }
}

impl SipDate {
    /// Seconds since 1970-01-01T00:00:00Z (days-from-civil, proleptic Gregorian).
    pub fn unix_seconds(&self) -> i64 {
        let (y, m, d) = (
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
        );
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gmt_only() {
        let d = parse_date(b"Sat, 15 Oct 2005 04:44:56 GMT").unwrap();
        assert_eq!(
            (d.year, d.month, d.day, d.hour, d.minute, d.second),
            (2005, 10, 15, 4, 44, 56)
        );
        assert_eq!(d.unix_seconds(), 1_129_351_496);
        assert_eq!(
            parse_date(b"Fri, 01 Jan 2010 16:00:00 EST"),
            Err(ParseError::BadDate)
        );
        assert_eq!(
            parse_date(b"Fry, 01 Jan 2010 16:00:00 GMT"),
            Err(ParseError::BadDate)
        );
        assert_eq!(
            parse_date(b"Fri, 01 Jan 2010 24:00:00 GMT"),
            Err(ParseError::BadDate)
        );
        assert_eq!(parse_date(b""), Err(ParseError::BadDate));
    }
}
