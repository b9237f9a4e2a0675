//! SIMD kernels of the parser's structural pass (`sip::structural`): 64 octets in, two bit masks
//! out (CR-or-LF, and `:`), as in the stage 1 of simdjson.
//!
//! Kernels: AVX2 (two 32-octet compares per block) when the CPU has it, else SSE2 (baseline on
//! x86_64, four 16-octet compares), and a portable scalar kernel everywhere else. The choice is
//! made once per parse from `is_x86_feature_detected!` (a cached atomic load). All kernels
//! produce identical masks (the tests below and the property tests in `sip::message` check it).
//!
//! This module sits outside `src/sip` because `sip` and `core` are sans-IO and free of `unsafe`
//! (`tests/sans_io.rs`): the `std::arch` intrinsics and the calls into `#[target_feature]`
//! functions live here, behind a safe API, each load inside a 64-octet array the caller owns.

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

impl Kernel {
    /// Masks of the first blocks of `b` (up to `out.len()`, the last one zero-padded), in one
    /// call; returns how many blocks were filled.
    #[inline]
    pub(crate) fn fill(self, b: &[u8], out: &mut [(u64, u64)]) -> usize {
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
pub(crate) fn padded(tail: &[u8]) -> [u8; BLOCK] {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    proptest! {
        #[test]
        fn kernels_agree_on_random_input(bytes in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':'), any::<u8>()], 0..300)) {
            let mut expected = [(0, 0); 8];
            let n = Kernel::Scalar.fill(&bytes, &mut expected);
            prop_assert_eq!(n, bytes.len().div_ceil(BLOCK));
            for kernel in Kernel::available() {
                let mut got = [(0, 0); 8];
                prop_assert_eq!(kernel.fill(&bytes, &mut got), n);
                prop_assert_eq!(got, expected, "{:?}", kernel);
            }
        }
    }
}
