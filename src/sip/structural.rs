//! The structural pass of the indexer: the message's line ends (CR, LF) and colons as bit masks,
//! 64 octets at a time (`crate::simd` computes them: AVX2, SSE2 or scalar).
//!
//! The row indexer (`message::index_rows`) walks these masks with a forward-only [`Cursor`]:
//! the first structural bit from a row's start is its colon (or, if it is a CR/LF, the row has
//! none), the next line-end bit after the colon ends the physical line, and folds and the next
//! row continue from there. Blocks are classified [`CHUNK`] at a time (one call of the kernel)
//! when the walk reaches them, so the body is never classified.

use crate::simd::{Kernel, BLOCK};

/// Blocks whose masks a [`Cursor`] computes in one call of the kernel: 256 octets. The header
/// section of a typical request takes two or three such calls; the body is never classified.
pub(crate) const CHUNK: usize = 4;

/// The masks of [`CHUNK`] blocks that a [`Cursor`] fills; the caller holds it (on its stack,
/// apart from the cursor, so that the cursor's own fields can live in registers).
pub(crate) type Chunk = [(u64, u64); CHUNK];

/// A forward-only reader of the structural masks of `b`, computed [`CHUNK`] blocks at a time as
/// the reader reaches them.
pub(crate) struct Cursor<'a> {
    b: &'a [u8],
    kernel: Kernel,
    /// The masks of blocks `base .. base + CHUNK` (zero past the end of `b`).
    chunk: &'a mut Chunk,
    base: usize,
    /// The reader: the block it is in, and that block's masks with the bits before the reader
    /// cleared (what it has passed).
    k: usize,
    eol: u64,
    colon: u64,
}

/// What [`Cursor::first_structural`] found first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// A colon at this offset, before any line end.
    Colon(usize),
    /// A CR or LF at this offset, before any colon.
    LineEnd(usize),
}

/// Fills `chunk` with the masks of the [`CHUNK`] blocks from offset `64 k` of `b` (zero past
/// its end).
#[inline(never)]
fn fill_chunk(b: &[u8], kernel: Kernel, k: usize, chunk: &mut Chunk) {
    *chunk = [(0, 0); CHUNK];
    kernel.fill(b.get(k * BLOCK..).unwrap_or(&[]), chunk);
}

impl<'a> Cursor<'a> {
    /// A reader at offset 0 of `b`; `chunk` holds the masks of the blocks it is reading.
    #[inline(always)]
    pub(crate) fn new(b: &'a [u8], kernel: Kernel, chunk: &'a mut Chunk) -> Self {
        fill_chunk(b, kernel, 0, chunk);
        let [(eol, colon), ..] = *chunk;
        Cursor {
            b,
            kernel,
            chunk,
            base: 0,
            k: 0,
            eol,
            colon,
        }
    }

    /// The masks of block `k` (offset `64 k`); octets past the end read as zero, which is no
    /// structural octet.
    #[inline(always)]
    fn block(&mut self, k: usize) -> (u64, u64) {
        if let Some(&masks) = self.chunk.get(k.wrapping_sub(self.base)) {
            return masks;
        }
        fill_chunk(self.b, self.kernel, k, self.chunk);
        self.base = k;
        let [first, ..] = *self.chunk;
        first
    }

    /// Moves the reader forward to `pos` (a `pos` behind it leaves it where it is).
    #[inline(always)]
    pub(crate) fn seek(&mut self, pos: usize) {
        let k = pos / BLOCK;
        if k != self.k {
            if k < self.k {
                return;
            }
            (self.eol, self.colon) = self.block(k);
            self.k = k;
        }
        let keep = u64::MAX << (pos % BLOCK);
        self.eol &= keep;
        self.colon &= keep;
    }

    /// Moves the reader to `pos`, behind it or not.
    #[inline(always)]
    pub(crate) fn rewind(&mut self, pos: usize) {
        let k = pos / BLOCK;
        (self.eol, self.colon) = self.block(k);
        self.k = k;
        let keep = u64::MAX << (pos % BLOCK);
        self.eol &= keep;
        self.colon &= keep;
    }

    /// Moves the reader to the next block; `false` past the end of the message.
    #[inline(always)]
    fn advance(&mut self) -> bool {
        let k = self.k + 1;
        if k * BLOCK >= self.b.len() {
            return false;
        }
        (self.eol, self.colon) = self.block(k);
        self.k = k;
        true
    }

    /// The first CR or LF at or after the reader (which stays on it).
    #[inline(always)]
    pub(crate) fn next_line_end(&mut self) -> Option<usize> {
        while self.eol == 0 {
            if !self.advance() {
                return None;
            }
        }
        Some(self.k * BLOCK + self.eol.trailing_zeros() as usize)
    }

    /// The first colon or line end at or after the reader, whichever comes first (the reader
    /// stays on it).
    #[inline(always)]
    pub(crate) fn next_structural(&mut self) -> Option<Found> {
        loop {
            let m = self.eol | self.colon;
            if m != 0 {
                let at = self.k * BLOCK + m.trailing_zeros() as usize;
                return Some(if self.colon & m & m.wrapping_neg() != 0 {
                    Found::Colon(at)
                } else {
                    Found::LineEnd(at)
                });
            }
            if !self.advance() {
                return None;
            }
        }
    }

    /// Offset of the first CR or LF at or after `from` (not behind the reader).
    #[inline(always)]
    pub(crate) fn line_end(&mut self, from: usize) -> Option<usize> {
        self.seek(from);
        self.next_line_end()
    }

    /// The first colon or line end at or after `from` (not behind the reader), whichever comes
    /// first.
    #[cfg(test)]
    pub(crate) fn first_structural(&mut self, from: usize) -> Option<Found> {
        self.seek(from);
        self.next_structural()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cursor_finds_what_a_plain_search_finds() {
        let b = b"Via: a:b\r\nX\r\n\r\n";
        let mut chunk = [(0, 0); CHUNK];
        let mut c = Cursor::new(b, Kernel::detect(), &mut chunk);
        assert_eq!(c.first_structural(0), Some(Found::Colon(3)));
        assert_eq!(c.line_end(4), Some(8));
        assert_eq!(c.first_structural(10), Some(Found::LineEnd(11)));
        assert_eq!(c.line_end(14), Some(14));
        assert_eq!(c.line_end(15), None);
        assert_eq!(c.line_end(99), None);
    }

    proptest! {
        #[test]
        fn cursor_matches_plain_searches(bytes in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':'), Just(b'a')], 0..3000),
            steps in proptest::collection::vec(0usize..400, 1..20)) {
            for kernel in Kernel::available() {
                let mut chunk = [(0, 0); CHUNK];
                let mut c = Cursor::new(&bytes, kernel, &mut chunk);
                // Queries never go behind the reader (the cursor's contract, and how the row
                // walk uses it): a step lands at or after where the last line end left it.
                let (mut from, mut reader) = (0, 0);
                for &step in &steps {
                    from = (from + step).max(reader);
                    let eol = bytes.iter().skip(from).position(|&b| b == b'\r' || b == b'\n')
                        .map(|p| from + p);
                    let any = bytes.iter().skip(from)
                        .position(|&b| b == b'\r' || b == b'\n' || b == b':').map(|p| from + p);
                    let found = any.map(|at| if bytes[at] == b':' { Found::Colon(at) } else { Found::LineEnd(at) });
                    prop_assert_eq!(c.first_structural(from), found);
                    prop_assert_eq!(c.line_end(from), eol);
                    reader = eol.unwrap_or(bytes.len());
                }
            }
        }
    }
}
