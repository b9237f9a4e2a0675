//! The structural pass of the indexer: the message's line ends (CR, LF) and colons as bit masks,
//! 64 octets at a time (`crate::simd` computes them: AVX2, SSE2 or scalar).
//!
//! The row indexer (`message::index_rows`) walks these masks with a forward-only [`Cursor`]:
//! the first structural bit from a row's start is its colon (or, if it is a CR/LF, the row has
//! none), the next line-end bit after the colon ends the physical line, and folds and the next
//! row continue from there. The first [`AHEAD_BLOCKS`] blocks are classified up front in one
//! call; later blocks one at a time when the walk reaches them. The body is rarely touched.

use crate::simd::{padded, Kernel, BLOCK};

/// Blocks whose masks a [`Cursor`] computes up front, in one call of the kernel: 2 KiB, which
/// holds the header section of nearly every datagram. Blocks past it are classified on demand.
pub(crate) const AHEAD_BLOCKS: usize = 32;

/// The array a [`Cursor`] fills with the masks of the first [`AHEAD_BLOCKS`] blocks. The
/// caller holds it (on its stack), so that the cursor is small and no 512-octet array is moved.
pub(crate) type Ahead = [(u64, u64); AHEAD_BLOCKS];

/// A forward-only reader of the structural masks of `b`: the first [`AHEAD_BLOCKS`] blocks
/// computed up front, later ones one at a time as the reader reaches them.
pub(crate) struct Cursor<'a> {
    b: &'a [u8],
    kernel: Kernel,
    /// The masks of the blocks computed up front.
    ahead: &'a [(u64, u64)],
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

/// The masks of the block at offset `base` of `b` (zero-padded past its end). The cursor's
/// fields are passed by value, so that the cursor itself never leaves registers for this call.
#[inline(never)]
fn load(b: &[u8], kernel: Kernel, base: usize) -> (u64, u64) {
    match b.get(base..base + BLOCK) {
        Some(whole) => {
            let block: &[u8; BLOCK] = whole.try_into().unwrap_or(&[0; BLOCK]);
            kernel.masks(block)
        }
        None => kernel.masks(&padded(b.get(base..).unwrap_or(&[]))),
    }
}

impl<'a> Cursor<'a> {
    /// A reader at offset 0 of `b`; `ahead` is filled with the masks of its first blocks.
    #[inline]
    pub(crate) fn new(b: &'a [u8], kernel: Kernel, ahead: &'a mut Ahead) -> Self {
        let filled = kernel.fill(b, ahead);
        let ahead: &'a [(u64, u64)] = ahead.get(..filled).unwrap_or(&[]);
        let (eol, colon) = ahead.first().copied().unwrap_or((0, 0));
        Cursor {
            b,
            kernel,
            ahead,
            k: 0,
            eol,
            colon,
        }
    }

    /// The masks of block `k` (offset `64 k`); octets past the end read as zero, which is no
    /// structural octet.
    #[inline(always)]
    fn block(&self, k: usize) -> (u64, u64) {
        match self.ahead.get(k) {
            Some(&masks) => masks,
            None => load(self.b, self.kernel, k * BLOCK),
        }
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

    /// Moves the reader to the next block; `false` past the end of the message.
    #[inline(always)]
    fn advance(&mut self) -> bool {
        let k = self.k + 1;
        // A block computed up front lies inside the message; past them, check.
        (self.eol, self.colon) = match self.ahead.get(k) {
            Some(&masks) => masks,
            None if k * BLOCK >= self.b.len() => return false,
            None => load(self.b, self.kernel, k * BLOCK),
        };
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
        let mut ahead = [(0, 0); AHEAD_BLOCKS];
        let mut c = Cursor::new(b, Kernel::detect(), &mut ahead);
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
                let mut ahead = [(0, 0); AHEAD_BLOCKS];
                let mut c = Cursor::new(&bytes, kernel, &mut ahead);
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
