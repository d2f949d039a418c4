//! The delimiter scanner: one `memchr` pass over `<` bytes.
//!
//! Every delimiter contains exactly one `<`, at its first byte, so two occurrences of delimiters
//! can never overlap: the list of occurrences found by checking each `<` is the complete,
//! unambiguous set, and its size is bounded by the number of `<` bytes (linear on any input).

use memchr::memchr_iter;

/// The six delimiters of the MEMENTO format, matched byte-exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Delim {
    ThinkStart = 0,
    ThinkEnd = 1,
    BlockStart = 2,
    BlockEnd = 3,
    SummaryStart = 4,
    SummaryEnd = 5,
}

impl Delim {
    pub const ALL: [Delim; 6] = [
        Delim::ThinkStart,
        Delim::ThinkEnd,
        Delim::BlockStart,
        Delim::BlockEnd,
        Delim::SummaryStart,
        Delim::SummaryEnd,
    ];

    /// The delimiter's exact text.
    pub const fn text(self) -> &'static str {
        match self {
            Delim::ThinkStart => "<think>",
            Delim::ThinkEnd => "</think>",
            Delim::BlockStart => "<|block_start|>",
            Delim::BlockEnd => "<|block_end|>",
            Delim::SummaryStart => "<|summary_start|>",
            Delim::SummaryEnd => "<|summary_end|>",
        }
    }

    /// Length in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub const fn len(self) -> usize {
        self.text().len()
    }
}

/// One delimiter occurrence at byte offset `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub delim: Delim,
    pub start: usize,
}

impl Token {
    #[inline]
    pub fn end(&self) -> usize {
        self.start + self.delim.len()
    }
}

/// Which delimiter (if any) starts at `text[pos]`, where `text[pos] == b'<'`.
#[inline]
fn delim_at(text: &[u8], pos: usize) -> Option<Delim> {
    let rest = &text[pos + 1..];
    match rest.first()? {
        b'|' => {
            let r = &rest[1..];
            if r.starts_with(b"block_start|>") {
                Some(Delim::BlockStart)
            } else if r.starts_with(b"block_end|>") {
                Some(Delim::BlockEnd)
            } else if r.starts_with(b"summary_start|>") {
                Some(Delim::SummaryStart)
            } else if r.starts_with(b"summary_end|>") {
                Some(Delim::SummaryEnd)
            } else {
                None
            }
        }
        b't' => rest.starts_with(b"think>").then_some(Delim::ThinkStart),
        b'/' => rest.starts_with(b"/think>").then_some(Delim::ThinkEnd),
        _ => None,
    }
}

/// Append every delimiter occurrence of `text`, in order, to `out` (which is cleared first).
///
/// On x86_64 the `<` bytes are found 64 at a time as a bit mask (AVX2 when the CPU has it,
/// else SSE2, part of the x86_64 baseline) and the mask's bits are walked in place, which
/// avoids one `memchr` call per `<`; the last 0-63 bytes, and other architectures, use `memchr`.
pub fn scan_into(text: &[u8], out: &mut Vec<Token>) {
    out.clear();
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available (checked at runtime).
            unsafe { scan_avx2(text, out) };
        } else {
            // SAFETY: SSE2 is part of the x86_64 baseline; `lt_mask_sse2` reads p[0..64], which
            // `scan_with` guarantees is inside `text`.
            scan_with(text, out, |p| unsafe { simd::lt_mask_sse2(p) });
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    scan_memchr_from(text, 0, out);
}

/// [`scan_into`] with `memchr` only (the portable path; tests check the vector paths against it).
pub fn scan_into_memchr(text: &[u8], out: &mut Vec<Token>) {
    out.clear();
    scan_memchr_from(text, 0, out);
}

fn scan_memchr_from(text: &[u8], from: usize, out: &mut Vec<Token>) {
    for pos in memchr_iter(b'<', &text[from..]) {
        if let Some(delim) = delim_at(text, from + pos) {
            out.push(Token { delim, start: from + pos });
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scan_avx2(text: &[u8], out: &mut Vec<Token>) {
    // SAFETY: AVX2 is enabled for this function; `scan_with` keeps p[0..64] inside `text`.
    scan_with(text, out, |p| unsafe { simd::lt_mask_avx2(p) })
}

/// The 64-bytes-per-step loop: `lt_mask(p)` gives bit k set when `p[k] == b'<'`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn scan_with(text: &[u8], out: &mut Vec<Token>, lt_mask: impl Fn(*const u8) -> u64) {
    let mut i = 0;
    while i + 64 <= text.len() {
        // `lt_mask` reads text[i..i + 64], in bounds by the loop condition.
        let mut m = lt_mask(unsafe { text.as_ptr().add(i) });
        while m != 0 {
            let pos = i + m.trailing_zeros() as usize;
            m &= m - 1;
            if let Some(delim) = delim_at(text, pos) {
                out.push(Token { delim, start: pos });
            }
        }
        i += 64;
    }
    scan_memchr_from(text, i, out);
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    /// Bit k set when `p[k] == b'<'`, for k in 0..64.
    ///
    /// # Safety
    /// `p..p + 64` must be readable.
    #[inline(always)]
    pub unsafe fn lt_mask_sse2(p: *const u8) -> u64 {
        let lt = _mm_set1_epi8(b'<' as i8);
        let mut m = 0u64;
        for lane in 0..4 {
            let v = _mm_loadu_si128(p.add(16 * lane) as *const __m128i);
            m |= (_mm_movemask_epi8(_mm_cmpeq_epi8(v, lt)) as u32 as u64) << (16 * lane);
        }
        m
    }

    /// [`lt_mask_sse2`] with two 32-byte loads.
    ///
    /// # Safety
    /// `p..p + 64` must be readable and the CPU must support AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn lt_mask_avx2(p: *const u8) -> u64 {
        let lt = _mm256_set1_epi8(b'<' as i8);
        let a = _mm256_cmpeq_epi8(_mm256_loadu_si256(p as *const __m256i), lt);
        let b = _mm256_cmpeq_epi8(_mm256_loadu_si256(p.add(32) as *const __m256i), lt);
        // Most chunks hold no `<`: one test instead of two mask extractions.
        let any = _mm256_or_si256(a, b);
        if _mm256_testz_si256(any, any) != 0 {
            return 0;
        }
        let lo = _mm256_movemask_epi8(a) as u32 as u64;
        let hi = _mm256_movemask_epi8(b) as u32 as u64;
        lo | hi << 32
    }
}

/// Every delimiter occurrence of `text`, in order.
pub fn scan(text: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    scan_into(text, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_all_six() {
        let s = "<think>a<|block_start|>b<|block_end|><|summary_start|>c<|summary_end|></think>d";
        let kinds: Vec<Delim> = scan(s.as_bytes()).iter().map(|t| t.delim).collect();
        assert_eq!(
            kinds,
            vec![
                Delim::ThinkStart,
                Delim::BlockStart,
                Delim::BlockEnd,
                Delim::SummaryStart,
                Delim::SummaryEnd,
                Delim::ThinkEnd
            ]
        );
    }

    #[test]
    fn prefixes_are_not_delimiters() {
        for s in ["<|block_", "<thi", "<|summary", "</think", "<|block_end|", "<<<", "<|", "<"] {
            assert!(scan(s.as_bytes()).is_empty(), "{s}");
        }
    }

    /// The vector paths (AVX2 when present, SSE2 always) equal the `memchr` path, including
    /// delimiters that straddle a 64-byte boundary and `<` in the last 63 bytes.
    #[test]
    fn vector_paths_equal_memchr() {
        let mut rng = crate::testing::XorShift(0x9E3779B97F4A7C15);
        for _ in 0..2000 {
            let s = rng.text(crate::testing::PIECES, 120);
            let mut expect = Vec::new();
            scan_into_memchr(s.as_bytes(), &mut expect);
            assert_eq!(scan(s.as_bytes()), expect, "{s:?}");
            #[cfg(target_arch = "x86_64")]
            {
                let mut sse2 = Vec::new();
                scan_with(s.as_bytes(), &mut sse2, |p| unsafe { simd::lt_mask_sse2(p) });
                assert_eq!(sse2, expect, "{s:?}");
            }
        }
    }

    #[test]
    fn adjacent_and_after_lt_runs() {
        let s = "<<<<|block_end|><<think></think>";
        let t = scan(s.as_bytes());
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].start, 3);
        assert_eq!(t[1].delim, Delim::ThinkStart);
    }
}
