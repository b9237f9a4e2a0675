//! The structural pass of the indexer: one SIMD sweep over the message that marks line ends
//! (CR, LF) and colons, 64 octets at a time, as bit masks (the stage 1 of simdjson).
//!
//! The row indexer (`message::index_rows`) walks these masks with a forward-only [`Cursor`]:
//! the first structural bit from a row's start is its colon (or, if it is a CR/LF, the row has
//! none), the next line-end bit after the colon ends the physical line, and folds and the next
//! row continue from there. Every query moves forward, so one block's masks are held at a time
//! and each block of the header section is classified exactly once; the body is never touched.
//!
//! Kernels: AVX2 (two 32-octet compares per block) when the CPU has it, else SSE2 (baseline on
//! x86_64, four 16-octet compares), and a portable scalar kernel everywhere else. The choice is
//! made once per parse from `is_x86_feature_detected!` (a cached atomic load). All kernels
//! produce identical masks; `tests::kernels_agree` and the property tests in `message` check it.
//!
//! This is the only module of `sip` with `unsafe` code: the `std::arch` intrinsics and the
//! `#[target_feature]` calls, each on a 64-octet array the caller owns, so no load can leave it.
#![allow(unsafe_code)]

/// Octets classified per block (one bit each in a `u64`).
pub(crate) const BLOCK: usize = 64;

/// Which kernel computes a block's masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Portable: one octet at a time.
    #[cfg_attr(all(target_arch = "x86_64", not(test)), allow(dead_code))]
    Scalar,
    /// x86_64 SSE2: four 16-octet compares.
    #[cfg(target_arch = "x86_64")]
    Sse2,
    /// x86_64 AVX2: two 32-octet compares.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    #[inline]
    pub(crate) fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                return Kernel::Avx2;
            }
            Kernel::Sse2
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Kernel::Scalar
        }
    }

    /// Every kernel this CPU runs, scalar first (for tests that compare them).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut v = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            v.push(Kernel::Sse2);
            if std::arch::is_x86_feature_detected!("avx2") {
                v.push(Kernel::Avx2);
            }
        }
        v
    }

    /// `(line ends, colons)` of one 64-octet block: bit `i` is set when octet `i` is CR or LF,
    /// respectively `:`.
    #[inline]
    pub(crate) fn masks(self, block: &[u8; BLOCK]) -> (u64, u64) {
        match self {
            Kernel::Scalar => scalar(block),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE2 is part of the x86_64 baseline.
            Kernel::Sse2 => unsafe { sse2(block) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is only chosen after `is_x86_feature_detected!("avx2")`.
            Kernel::Avx2 => unsafe { avx2(block) },
        }
    }
}

fn scalar(block: &[u8; BLOCK]) -> (u64, u64) {
    let (mut eol, mut colon) = (0u64, 0u64);
    for (i, &b) in block.iter().enumerate() {
        eol |= u64::from(b == b'\r' || b == b'\n') << i;
        colon |= u64::from(b == b':') << i;
    }
    (eol, colon)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn sse2(block: &[u8; BLOCK]) -> (u64, u64) {
    use std::arch::x86_64::*;
    let cr = _mm_set1_epi8(b'\r' as i8);
    let lf = _mm_set1_epi8(b'\n' as i8);
    let co = _mm_set1_epi8(b':' as i8);
    let (mut eol, mut colon) = (0u64, 0u64);
    for k in 0..4 {
        // SAFETY: `16 * k + 16 <= 64`: the unaligned load stays inside `block`.
        let v = unsafe { _mm_loadu_si128(block.as_ptr().add(16 * k).cast()) };
        let e = _mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf));
        let c = _mm_cmpeq_epi8(v, co);
        eol |= u64::from(_mm_movemask_epi8(e) as u16) << (16 * k);
        colon |= u64::from(_mm_movemask_epi8(c) as u16) << (16 * k);
    }
    (eol, colon)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2(block: &[u8; BLOCK]) -> (u64, u64) {
    use std::arch::x86_64::*;
    let cr = _mm256_set1_epi8(b'\r' as i8);
    let lf = _mm256_set1_epi8(b'\n' as i8);
    let co = _mm256_set1_epi8(b':' as i8);
    // SAFETY: both 32-octet unaligned loads lie inside the 64-octet `block`.
    let (lo, hi) = unsafe {
        (
            _mm256_loadu_si256(block.as_ptr().cast()),
            _mm256_loadu_si256(block.as_ptr().add(32).cast()),
        )
    };
    let e_lo = _mm256_or_si256(_mm256_cmpeq_epi8(lo, cr), _mm256_cmpeq_epi8(lo, lf));
    let e_hi = _mm256_or_si256(_mm256_cmpeq_epi8(hi, cr), _mm256_cmpeq_epi8(hi, lf));
    let c_lo = _mm256_cmpeq_epi8(lo, co);
    let c_hi = _mm256_cmpeq_epi8(hi, co);
    let eol = u64::from(_mm256_movemask_epi8(e_lo) as u32)
        | u64::from(_mm256_movemask_epi8(e_hi) as u32) << 32;
    let colon = u64::from(_mm256_movemask_epi8(c_lo) as u32)
        | u64::from(_mm256_movemask_epi8(c_hi) as u32) << 32;
    (eol, colon)
}

/// A forward-only reader of the structural masks of `b`, holding one block at a time.
pub(crate) struct Cursor<'a> {
    b: &'a [u8],
    kernel: Kernel,
    /// Offset of the block whose masks are held (a multiple of [`BLOCK`]), or `usize::MAX`.
    base: usize,
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

impl<'a> Cursor<'a> {
    pub(crate) fn new(b: &'a [u8], kernel: Kernel) -> Self {
        Cursor {
            b,
            kernel,
            base: usize::MAX,
            eol: 0,
            colon: 0,
        }
    }

    /// Loads the masks of the block starting at `base`; octets past the end read as zero,
    /// which is no structural octet.
    #[inline]
    fn load(&mut self, base: usize) {
        let masks = match self.b.get(base..base + BLOCK) {
            Some(whole) => {
                let block: &[u8; BLOCK] = whole.try_into().unwrap_or(&[0; BLOCK]);
                self.kernel.masks(block)
            }
            None => {
                let mut block = [0u8; BLOCK];
                let tail = self.b.get(base..).unwrap_or(&[]);
                if let Some(dst) = block.get_mut(..tail.len()) {
                    dst.copy_from_slice(tail);
                }
                self.kernel.masks(&block)
            }
        };
        (self.eol, self.colon) = masks;
        self.base = base;
    }

    /// First set bit at or after `from` in the mask `pick` selects from `(eol, colon)`.
    #[inline(always)]
    fn next(&mut self, from: usize, pick: impl Fn(u64, u64) -> u64) -> Option<usize> {
        let mut base = from & !(BLOCK - 1);
        let mut shift = from - base;
        loop {
            if base >= self.b.len() {
                return None;
            }
            if base != self.base {
                self.load(base);
            }
            let m = pick(self.eol, self.colon) >> shift;
            if m != 0 {
                return Some(from.max(base) + m.trailing_zeros() as usize);
            }
            base += BLOCK;
            shift = 0;
        }
    }

    /// Offset of the first CR or LF at or after `from`.
    #[inline(always)]
    pub(crate) fn line_end(&mut self, from: usize) -> Option<usize> {
        self.next(from, |eol, _| eol)
    }

    /// The first colon or line end at or after `from`, whichever comes first.
    #[inline(always)]
    pub(crate) fn first_structural(&mut self, from: usize) -> Option<Found> {
        let at = self.next(from, |eol, colon| eol | colon)?;
        Some(if self.b.get(at) == Some(&b':') {
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

    fn blocks(bytes: &[u8]) -> Vec<[u8; BLOCK]> {
        bytes
            .chunks(BLOCK)
            .map(|c| {
                let mut b = [0u8; BLOCK];
                b[..c.len()].copy_from_slice(c);
                b
            })
            .collect()
    }

    #[test]
    fn kernels_agree_on_every_octet_in_every_lane() {
        for kernel in Kernel::available() {
            for lane in 0..BLOCK {
                for octet in 0..=255u8 {
                    let mut block = [b'a'; BLOCK];
                    block[lane] = octet;
                    let (eol, colon) = kernel.masks(&block);
                    let bit = 1u64 << lane;
                    assert_eq!(eol == bit, matches!(octet, b'\r' | b'\n'), "{kernel:?}");
                    assert_eq!(eol & !bit, 0, "{kernel:?}");
                    assert_eq!(colon == bit, octet == b':', "{kernel:?}");
                    assert_eq!(colon & !bit, 0, "{kernel:?}");
                }
            }
        }
    }

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
        fn kernels_agree_on_random_blocks(bytes in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':'), any::<u8>()], 0..300)) {
            for block in blocks(&bytes) {
                let expected = scalar(&block);
                for kernel in Kernel::available() {
                    prop_assert_eq!(kernel.masks(&block), expected, "{:?}", kernel);
                }
            }
        }

        #[test]
        fn cursor_matches_plain_searches(bytes in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':'), Just(b'a')], 0..300),
            steps in proptest::collection::vec(0usize..80, 1..20)) {
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
