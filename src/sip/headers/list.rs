//! Walking the values of a list header over all of its rows (RFC 3261 §7.3.1).
//!
//! `Via: a, b` followed by `v: c` is the list `a, b, c`. Each element is parsed by its grammar
//! straight from the row (one pass, no pre-splitting), then `COMMA` or the end of the row must
//! follow. The first error ends the iteration: after a malformed element there is no reliable
//! place to resume. The elements before it are handed out, so the first element is the same
//! whether read alone (`top_via`) or through the iterator.

use crate::sip::error::ParseError;
use crate::sip::header::HeaderName;
use crate::sip::message::Message;
use crate::sip::scan::Cursor;

/// Parser of one list element at a cursor.
pub type ElementParser<'b, T> = fn(&mut Cursor<'b>) -> Result<T, ParseError>;

/// Iterator over the parsed elements of one list header, across all its rows.
pub struct ListIter<'m, 'b, T> {
    msg: &'m Message<'b>,
    name: HeaderName,
    next_row: usize,
    cursor: Option<Cursor<'b>>,
    parse: ElementParser<'b, T>,
    error: ParseError,
    allow_empty_row: bool,
    done: bool,
}

impl<'m, 'b, T> ListIter<'m, 'b, T> {
    /// Iterates the elements of `name` in `msg`. `error` reports octets between elements that
    /// are not a comma; `allow_empty_row` lets a row have no element at all (`Supported:`).
    pub(crate) fn new(
        msg: &'m Message<'b>,
        name: HeaderName,
        parse: ElementParser<'b, T>,
        error: ParseError,
        allow_empty_row: bool,
    ) -> Self {
        ListIter {
            msg,
            name,
            next_row: 0,
            cursor: None,
            parse,
            error,
            allow_empty_row,
            done: false,
        }
    }

    fn fail(&mut self, e: ParseError) -> Option<Result<T, ParseError>> {
        self.done = true;
        Some(Err(e))
    }
}

impl<'b, T> Iterator for ListIter<'_, 'b, T> {
    type Item = Result<T, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let Some(cursor) = self.cursor.as_mut() else {
                let (index, row) = self.msg.next_row_named(self.name, self.next_row)?;
                self.next_row = index + 1;
                if row.value.is_empty() {
                    if self.allow_empty_row {
                        continue;
                    }
                    return self.fail(self.error);
                }
                self.cursor = Some(Cursor::new(row.value));
                continue;
            };
            if cursor.at_end() {
                // A comma with nothing after it: an empty element.
                return self.fail(self.error);
            }
            let item = match (self.parse)(cursor) {
                Ok(item) => item,
                Err(e) => return self.fail(e),
            };
            cursor.skip_lws();
            if cursor.at_end() {
                self.cursor = None;
            } else if cursor.eat(b',') {
                // The next element is checked (and an empty one reported) on the next call, so
                // that this valid element is still handed out.
                cursor.skip_lws();
            } else {
                // Octets after the element that do not start another: the element is malformed.
                return self.fail(self.error);
            }
            return Some(Ok(item));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::sip::{parse, ParseError};

    fn vias(rows: &str) -> (Result<usize, ParseError>, Vec<Result<usize, ParseError>>) {
        let text = format!("SIP/2.0 200 OK\r\n{rows}\r\n");
        let m = parse(text.as_bytes()).unwrap();
        let top = m.top_via().map(|v| v.raw.len());
        (top, m.vias().map(|v| v.map(|v| v.raw.len())).collect())
    }

    #[test]
    fn elements_before_an_error_are_kept() {
        // A trailing comma: the first value is fine, the empty second one is the error.
        let (top, all) = vias("Via: SIP/2.0/UDP a,\r\nVia: SIP/2.0/UDP b\r\n");
        assert_eq!(top, Ok(13));
        assert_eq!(all, vec![Ok(13), Err(ParseError::BadVia)]);
        // Garbage after a value makes that value malformed.
        let (top, all) = vias("Via: SIP/2.0/UDP a junk\r\n");
        assert_eq!(top, Err(ParseError::BadVia));
        assert_eq!(all, vec![Err(ParseError::BadVia)]);
        let (top, all) = vias("Via: SIP/2.0/UDP a , SIP/2.0/TCP b\r\nv: SIP/2.0/UDP c\r\n");
        assert_eq!(top, Ok(13));
        assert_eq!(all, vec![Ok(13), Ok(13), Ok(13)]);
        let (top, _) = vias("Max-Forwards: 1\r\n");
        assert_eq!(
            top,
            Err(ParseError::MissingHeader(crate::sip::HeaderName::Via))
        );
    }
}
