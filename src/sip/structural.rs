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

/// Blocks whose masks a [`Cursor`] computes up front, in one call of the kernel: 2 KiB, which
/// holds the header section of nearly every datagram. Blocks past it are classified on demand.
pub(crate) const AHEAD_BLOCKS: usize = 32;

impl Kernel {
    /// Masks of the first blocks of `b` (up to `out.len()`, the last one zero-padded), in one
    /// call; returns how many blocks were filled.
    #[inline]
    fn fill(self, b: &[u8], out: &mut [(u64, u64)]) -> usize {
        match self {
            Kernel::Scalar => fill_with(b, out, scalar),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE2 is part of the x86_64 baseline.
            Kernel::Sse2 => unsafe { fill_sse2(b, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2` is only chosen after `is_x86_feature_detected!("avx2")`.
            Kernel::Avx2 => unsafe { fill_avx2(b, out) },
        }
    }
}

/// The loop of [`Kernel::fill`]; inlined into each kernel's `target_feature` function so that
/// the block kernel inlines into it.
#[inline(always)]
fn fill_with(
    b: &[u8],
    out: &mut [(u64, u64)],
    kernel: impl Fn(&[u8; BLOCK]) -> (u64, u64),
) -> usize {
    let mut n = 0;
    let mut chunks = b.chunks_exact(BLOCK);
    for (slot, chunk) in out.iter_mut().zip(&mut chunks) {
        let block: &[u8; BLOCK] = chunk.try_into().unwrap_or(&[0; BLOCK]);
        *slot = kernel(block);
        n += 1;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        if let Some(slot) = out.get_mut(n) {
            *slot = kernel(&padded(tail));
            n += 1;
        }
    }
    n
}

/// The last, partial block of a message, zero-padded (a zero is no structural octet).
#[inline]
fn padded(tail: &[u8]) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    if let Some(dst) = block.get_mut(..tail.len()) {
        dst.copy_from_slice(tail);
    }
    block
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn fill_sse2(b: &[u8], out: &mut [(u64, u64)]) -> usize {
    // SAFETY: this function runs with SSE2 enabled.
    fill_with(b, out, |block| unsafe { sse2(block) })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill_avx2(b: &[u8], out: &mut [(u64, u64)]) -> usize {
    // SAFETY: this function runs with AVX2 enabled.
    fill_with(b, out, |block| unsafe { avx2(block) })
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
#[inline]
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
#[inline]
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
