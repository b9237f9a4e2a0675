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

/// A forward-only reader of the structural masks of `b`: the first [`AHEAD_BLOCKS`] blocks
/// computed up front, later ones one at a time as the reader reaches them.
pub(crate) struct Cursor<'a> {
    b: &'a [u8],
    kernel: Kernel,
    ahead: [(u64, u64); AHEAD_BLOCKS],
    /// Blocks filled in `ahead`.
    ahead_len: usize,
    /// Offset of the block past `ahead` whose masks are held in `far`, or `usize::MAX`.
    far_base: usize,
    far: (u64, u64),
}

/// What [`Cursor::first_structural`] found first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// A colon at this offset, before any line end.
    Colon(usize),
    /// A CR or LF at this offset, before any colon.
    LineEnd(usize),
}

impl<'a> Cursor<'a> {
    #[inline]
    pub(crate) fn new(b: &'a [u8], kernel: Kernel) -> Self {
        let mut ahead = [(0, 0); AHEAD_BLOCKS];
        let ahead_len = kernel.fill(b, &mut ahead);
        Cursor {
            b,
            kernel,
            ahead,
            ahead_len,
            far_base: usize::MAX,
            far: (0, 0),
        }
    }

    /// The masks of block `k` (offset `64 k`); octets past the end read as zero, which is no
    /// structural octet.
    #[inline(always)]
    fn block(&mut self, k: usize) -> (u64, u64) {
        if let Some(&masks) = self.ahead.get(k).filter(|_| k < self.ahead_len) {
            return masks;
        }
        let base = k * BLOCK;
        if base != self.far_base {
            self.far = self.load(base);
            self.far_base = base;
        }
        self.far
    }

    #[inline(never)]
    fn load(&self, base: usize) -> (u64, u64) {
        match self.b.get(base..base + BLOCK) {
            Some(whole) => {
                let block: &[u8; BLOCK] = whole.try_into().unwrap_or(&[0; BLOCK]);
                self.kernel.masks(block)
            }
            None => self
                .kernel
                .masks(&padded(self.b.get(base..).unwrap_or(&[]))),
        }
    }

    /// First set bit at or after `from` in the mask `pick` selects from `(eol, colon)`, with
    /// whether it is set in the colon mask.
    #[inline(always)]
    fn next(&mut self, from: usize, pick: impl Fn(u64, u64) -> u64) -> Option<(usize, bool)> {
        let mut k = from / BLOCK;
        let mut shift = from % BLOCK;
        loop {
            if k * BLOCK >= self.b.len() {
                return None;
            }
            let (eol, colon) = self.block(k);
            let m = pick(eol, colon) >> shift;
            if m != 0 {
                let bit = shift + m.trailing_zeros() as usize;
                return Some((k * BLOCK + bit, colon >> bit & 1 != 0));
            }
            k += 1;
            shift = 0;
        }
    }

    /// Offset of the first CR or LF at or after `from`.
    #[inline(always)]
    pub(crate) fn line_end(&mut self, from: usize) -> Option<usize> {
        self.next(from, |eol, _| eol).map(|(at, _)| at)
    }

    /// The first colon or line end at or after `from`, whichever comes first.
    #[inline(always)]
    pub(crate) fn first_structural(&mut self, from: usize) -> Option<Found> {
        let (at, colon) = self.next(from, |eol, colon| eol | colon)?;
        Some(if colon {
            Found::Colon(at)
        } else {
            Found::LineEnd(at)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cursor_finds_what_a_plain_search_finds() {
        let b = b"Via: a:b\r\nX\r\n\r\n";
        let mut c = Cursor::new(b, Kernel::detect());
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
                let mut c = Cursor::new(&bytes, kernel);
                let mut from = 0;
                for &step in &steps {
                    from += step;
                    let eol = bytes.iter().skip(from).position(|&b| b == b'\r' || b == b'\n')
                        .map(|p| from + p);
                    let any = bytes.iter().skip(from)
                        .position(|&b| b == b'\r' || b == b'\n' || b == b':').map(|p| from + p);
                    let found = any.map(|at| if bytes[at] == b':' { Found::Colon(at) } else { Found::LineEnd(at) });
                    prop_assert_eq!(c.first_structural(from), found);
                    prop_assert_eq!(c.line_end(from), eol);
                }
            }
        }
    }
}
