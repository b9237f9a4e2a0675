//! Walking the values of a list header over all of its rows (RFC 3261 §7.3.1).
//!
//! `Via: a, b` followed by `v: c` is the list `a, b, c`. Each element is parsed by its grammar
//! straight from the row (one pass, no pre-splitting), then `COMMA` or the end of the row must
//! follow. The first error ends the iteration: after a malformed element there is no reliable
//! place to resume.

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
            let item = match (self.parse)(cursor) {
                Ok(item) => item,
                Err(e) => return self.fail(e),
            };
            cursor.skip_lws();
            if cursor.at_end() {
                self.cursor = None;
            } else if cursor.eat(b',') {
                cursor.skip_lws();
                if cursor.at_end() {
                    return self.fail(self.error);
                }
            } else {
                return self.fail(self.error);
            }
            return Some(Ok(item));
        }
    }
}
