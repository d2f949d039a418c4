//! Python-compatible text primitives over UTF-8 bytes: `str.strip()`, `len()` and
//! `len(str.split())`, with exactly Python's whitespace set (`str.isspace()`).
//!
//! Python's whitespace: `\t \n \v \f \r`, `\x1c`-`\x1f`, space, U+0085, U+00A0, U+1680,
//! U+2000-U+200A, U+2028, U+2029, U+202F, U+205F, U+3000. (U+180E, U+200B and U+FEFF are *not*
//! whitespace.) The Python test suite checks this list against `str.isspace` over all code points.

use std::ops::Range;

/// ASCII whitespace as Python sees it.
const fn ascii_space_table() -> [bool; 128] {
    let mut t = [false; 128];
    let mut c = 9;
    while c <= 13 {
        t[c] = true;
        c += 1;
    }
    let mut c = 28;
    while c <= 32 {
        t[c] = true;
        c += 1;
    }
    t
}
static ASCII_SPACE: [bool; 128] = ascii_space_table();

/// Length in bytes of the UTF-8 sequence introduced by `lead` (1 for invalid lead bytes, so that
/// scanning always makes progress).
#[inline]
fn utf8_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// If a Python whitespace character starts at `b[i]`, its length in bytes; otherwise 0.
#[inline]
pub fn space_len_at(b: &[u8], i: usize) -> usize {
    let c = b[i];
    if c < 0x80 {
        return ASCII_SPACE[c as usize] as usize;
    }
    let b1 = b.get(i + 1).copied().unwrap_or(0);
    let b2 = b.get(i + 2).copied().unwrap_or(0);
    let is_space = match c {
        0xC2 => b1 == 0x85 || b1 == 0xA0,
        0xE1 => b1 == 0x9A && b2 == 0x80,
        0xE2 => (b1 == 0x80 && (b2 <= 0x8A || b2 == 0xA8 || b2 == 0xA9 || b2 == 0xAF)) || (b1 == 0x81 && b2 == 0x9F),
        0xE3 => b1 == 0x80 && b2 == 0x80,
        _ => false,
    };
    match (is_space, c) {
        (false, _) => 0,
        (true, 0xC2) => 2,
        (true, _) => 3,
    }
}

/// Is the Unicode scalar `ch` whitespace for Python's `str.isspace()`?
pub fn is_py_space(ch: char) -> bool {
    let mut buf = [0u8; 4];
    let s = ch.encode_utf8(&mut buf);
    space_len_at(s.as_bytes(), 0) == s.len()
}

/// Where `strip_range(b, range)` starts: the first byte of `range` after its leading Python
/// whitespace (`range.end` when the range is blank, i.e. when the stripped text is empty). It is
/// half of a strip, for the callers that only ask "is it blank?" or "where does text start?".
pub fn skip_space(b: &[u8], range: Range<usize>) -> usize {
    let (mut lo, hi) = (range.start, range.end);
    while lo < hi {
        let n = space_len_at(b, lo);
        if n == 0 || lo + n > hi {
            break;
        }
        lo += n;
    }
    lo
}

/// `range` narrowed as Python's `str.strip()` would narrow the text it covers.
pub fn strip_range(b: &[u8], range: Range<usize>) -> Range<usize> {
    let (lo, mut hi) = (skip_space(b, range.clone()), range.end);
    while lo < hi {
        // Step back to the start of the last character.
        let mut s = hi - 1;
        while s > lo && (b[s] & 0xC0) == 0x80 && hi - s < 4 {
            s -= 1;
        }
        let n = space_len_at(b, s);
        if n == 0 || s + n != hi {
            break;
        }
        hi = s;
    }
    lo..hi
}

/// Code points (Python `len`) and whitespace-separated words (Python `len(s.split())`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TextStats {
    pub chars: u64,
    pub words: u64,
}

impl std::ops::AddAssign for TextStats {
    fn add_assign(&mut self, o: Self) {
        self.chars += o.chars;
        self.words += o.words;
    }
}

/// Scalar step over one character at `b[i]`; returns the next index.
#[inline]
fn step(b: &[u8], i: usize, st: &mut TextStats, in_word: &mut bool) -> usize {
    let c = b[i];
    let (len, space) = if c < 0x80 { (1, ASCII_SPACE[c as usize]) } else { (utf8_len(c), space_len_at(b, i) != 0) };
    st.chars += 1;
    if !space && !*in_word {
        st.words += 1;
    }
    *in_word = !space;
    (i + len).min(b.len())
}

/// Count code points and words of `b` (valid UTF-8) exactly as Python's `len(s)` and
/// `len(s.split())`.
///
/// On x86_64 the bulk runs 64 bytes per step with SSE2 (part of the x86_64 baseline): ASCII
/// whitespace *and* the multi-byte whitespace characters are classified with vector compares, so
/// non-ASCII text stays on the fast path. Words are counted as rising edges of the non-space mask.
pub fn count_chars_words(b: &[u8]) -> TextStats {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("popcnt")
            && std::is_x86_feature_detected!("bmi1")
        {
            // SAFETY: AVX2, POPCNT and BMI1 are available (checked at runtime).
            return unsafe { count_avx2(b) };
        }
        count_with(b, |p| unsafe { simd::classify64(p) })
    }
    #[cfg(not(target_arch = "x86_64"))]
    count_scalar_from(b, 0, TextStats::default(), false)
}

/// The AVX2 loop: [`count_with`]'s steps, except that continuation bytes are summed in a vector
/// accumulator (flushed every 127 chunks) instead of through a bit mask and a popcount per chunk.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt,bmi1")]
unsafe fn count_avx2(b: &[u8]) -> TextStats {
    use std::arch::x86_64::*;
    let mut cs = CountState::default();
    let mut i = 0;
    let mut cont = 0u64;
    let zero = _mm256_setzero_si256();
    while i + 66 <= b.len() {
        // Each byte lane of `acc` counts down by at most 2 per chunk: 127 chunks fit in an i8.
        let mut acc = zero;
        let mut n = 0;
        while n < 127 && i + 66 <= b.len() {
            // SAFETY: reads b[i..i + 66], in bounds by the loop condition; AVX2 is enabled.
            let (c, contv) = unsafe { simd::classify64_avx2(b.as_ptr().add(i)) };
            acc = _mm256_add_epi8(acc, contv);
            cs.step(c, u64::MAX);
            i += 64;
            n += 1;
        }
        // Lanes hold -count; negate to 0..=254 and sum them.
        let sums = _mm256_sad_epu8(_mm256_sub_epi8(zero, acc), zero);
        let mut lanes = [0u64; 4];
        // SAFETY: `lanes` is 32 bytes, an unaligned store of one 256-bit vector fits.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, sums) };
        cont += lanes.iter().sum::<u64>();
    }
    cs.st.chars -= cont;
    // SAFETY: SSE2 is part of the x86_64 baseline; `tail` keeps the reads inside its buffer.
    cs.tail(b, i, |p| unsafe { simd::classify64(p) })
}

/// Running state of the 64-bytes-per-step count.
#[cfg(target_arch = "x86_64")]
#[derive(Default)]
struct CountState {
    st: TextStats,
    in_word: bool,
    /// Space bits of a multi-byte space character that began in the last chunk.
    spill: u64,
}

#[cfg(target_arch = "x86_64")]
impl CountState {
    /// Account for one classified chunk, of which the bytes set in `valid` are real.
    #[inline(always)]
    fn step(&mut self, c: simd::Class64, valid: u64) {
        let space = c.space | self.spill;
        self.spill = c.spill;
        let nonspace = !space;
        let starts = nonspace & !((nonspace << 1) | self.in_word as u64) & valid;
        self.st.words += starts.count_ones() as u64;
        self.st.chars += (!c.cont & valid).count_ones() as u64;
        self.in_word = nonspace >> 63 != 0;
    }

    /// The last 0-65 bytes from `b[i..]`, copied into a buffer padded with spaces and classified
    /// the same way, their bits masked to the real length (padding spaces cannot complete a
    /// multi-byte whitespace character nor start a word inside the mask), so no byte goes
    /// through the scalar path.
    #[inline(always)]
    fn tail(mut self, b: &[u8], i: usize, classify: impl Fn(*const u8) -> simd::Class64) -> TextStats {
        let rest = b.len() - i;
        if rest > 0 {
            let mut buf = [b' '; 130];
            buf[..rest].copy_from_slice(&b[i..]);
            let mut k = 0;
            while k < rest {
                let n = rest - k;
                let valid = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
                // `classify` reads buf[k..k + 66] with k <= 64: inside the 130-byte buffer.
                self.step(classify(unsafe { buf.as_ptr().add(k) }), valid);
                k += 64;
            }
        }
        self.st
    }
}

/// The 64-bytes-per-step loop around a classifier, then [`CountState::tail`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn count_with(b: &[u8], classify: impl Fn(*const u8) -> simd::Class64) -> TextStats {
    let mut cs = CountState::default();
    let mut i = 0;
    while i + 66 <= b.len() {
        // `classify` reads b[i..i + 66], in bounds by the loop condition.
        cs.step(classify(unsafe { b.as_ptr().add(i) }), u64::MAX);
        i += 64;
    }
    cs.tail(b, i, classify)
}

fn count_scalar_from(b: &[u8], mut i: usize, mut st: TextStats, mut in_word: bool) -> TextStats {
    while i < b.len() {
        i = step(b, i, &mut st, &mut in_word);
    }
    st
}

/// Scalar reference of [`count_chars_words`] (used by tests to check the vector paths).
pub fn count_chars_words_scalar(b: &[u8]) -> TextStats {
    count_scalar_from(b, 0, TextStats::default(), false)
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    pub struct Class64 {
        /// Bit k: byte k belongs to a whitespace character (ASCII or multi-byte).
        pub space: u64,
        /// Bits 0-1: the first bytes of the *next* chunk that continue a whitespace character.
        pub spill: u64,
        /// Bit k: byte k is a UTF-8 continuation byte (not a character start).
        pub cont: u64,
    }

    /// The bytes that start a 3-byte whitespace character (U+1680, U+2000..U+200A, U+2028,
    /// U+2029, U+202F, U+205F, U+3000), from the bytes `v`, the next ones `n1` and the ones after
    /// `n2`. Written once for both vector widths: a macro because the operations (`and`, `or`,
    /// `eq`, `in_range` of 128 or 256 bits) are intrinsics of different types.
    macro_rules! three_byte_spaces {
        ($v:expr, $n1:expr, $n2:expr, $and:ident, $or:ident, $eq:ident, $in_range:ident) => {{
            let (v, n1, n2) = ($v, $n1, $n2);
            // U+2000..U+200A, U+2028, U+2029, U+202F
            let tail = $or($in_range(n2, 0x80, 0x0A), $or($or($eq(n2, 0xA8), $eq(n2, 0xA9)), $eq(n2, 0xAF)));
            let a = $and($and($eq(v, 0xE2), $eq(n1, 0x80)), tail);
            let b = $and($and($eq(v, 0xE2), $eq(n1, 0x81)), $eq(n2, 0x9F)); // U+205F
            let c = $and($and($eq(v, 0xE1), $eq(n1, 0x9A)), $eq(n2, 0x80)); // U+1680
            let d = $and($and($eq(v, 0xE3), $eq(n1, 0x80)), $eq(n2, 0x80)); // U+3000
            $or($or(a, b), $or(c, d))
        }};
    }

    #[inline(always)]
    unsafe fn eq(v: __m128i, x: u8) -> __m128i {
        _mm_cmpeq_epi8(v, _mm_set1_epi8(x as i8))
    }

    /// `lo <= v <= lo + span` on unsigned bytes.
    #[inline(always)]
    unsafe fn in_range(v: __m128i, lo: u8, span: u8) -> __m128i {
        let d = _mm_sub_epi8(v, _mm_set1_epi8(lo as i8));
        _mm_cmpeq_epi8(_mm_min_epu8(d, _mm_set1_epi8(span as i8)), d)
    }

    #[inline(always)]
    unsafe fn mask(v: __m128i) -> u64 {
        _mm_movemask_epi8(v) as u32 as u64
    }

    /// Classify the 64 bytes at `p`; reads `p[0..66]`.
    ///
    /// # Safety
    /// `p..p + 66` must be readable.
    #[inline(always)]
    pub unsafe fn classify64(p: *const u8) -> Class64 {
        let (mut ascii_space, mut cont, mut lead2, mut lead3) = (0u64, 0u64, 0u64, 0u64);
        for lane in 0..4 {
            let at = p.add(16 * lane);
            let v = _mm_loadu_si128(at as *const __m128i);
            let sp = _mm_or_si128(_mm_or_si128(eq(v, b' '), in_range(v, 9, 4)), in_range(v, 28, 3));
            ascii_space |= mask(sp) << (16 * lane);
            if _mm_movemask_epi8(v) == 0 {
                continue; // all ASCII
            }
            cont |= mask(_mm_cmplt_epi8(v, _mm_set1_epi8(-64))) << (16 * lane); // 0x80..=0xBF
            let v1 = _mm_loadu_si128(at.add(1) as *const __m128i);
            let v2 = _mm_loadu_si128(at.add(2) as *const __m128i);
            // U+0085, U+00A0
            let l2 = _mm_and_si128(eq(v, 0xC2), _mm_or_si128(eq(v1, 0x85), eq(v1, 0xA0)));
            lead2 |= mask(l2) << (16 * lane);
            let l3 = three_byte_spaces!(v, v1, v2, _mm_and_si128, _mm_or_si128, eq, in_range);
            lead3 |= mask(l3) << (16 * lane);
        }
        let (l2, l3) = (lead2 as u128, lead3 as u128);
        let multi = l2 | l2 << 1 | l3 | l3 << 1 | l3 << 2;
        Class64 { space: ascii_space | multi as u64, spill: (multi >> 64) as u64, cont }
    }

    #[inline(always)]
    unsafe fn eq8(v: __m256i, x: u8) -> __m256i {
        _mm256_cmpeq_epi8(v, _mm256_set1_epi8(x as i8))
    }

    /// `lo <= v <= lo + span` on unsigned bytes: shift `lo` to -128, then one signed compare.
    #[inline(always)]
    unsafe fn in_range8(v: __m256i, lo: u8, span: u8) -> __m256i {
        let d = _mm256_add_epi8(v, _mm256_set1_epi8(0x80u8.wrapping_sub(lo) as i8));
        _mm256_cmpgt_epi8(_mm256_set1_epi8((span as i8).wrapping_sub(127)), d)
    }

    #[inline(always)]
    unsafe fn mask8(v: __m256i) -> u64 {
        _mm256_movemask_epi8(v) as u32 as u64
    }

    /// [`classify64`] with 32-byte lanes and one early exit, taken by most chunks: no byte pair
    /// can begin a multi-byte whitespace character (no `C2 85`, `C2 A0`, nor `E1`-`E3` followed by
    /// `80`, `81` or `9A`), so the space bits are the ASCII ones. Only the remaining chunks
    /// (a few percent on realistic text) run the exact test. (A first exit for all-ASCII chunks
    /// made the branch less predictable and was slower on realistic traces.)
    ///
    /// Returns the classes with `cont` left 0, and the continuation bytes as a vector holding,
    /// per byte lane, minus the number of continuation bytes at that lane in the two halves.
    ///
    /// # Safety
    /// `p..p + 66` must be readable and the CPU must support AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn classify64_avx2(p: *const u8) -> (Class64, __m256i) {
        let v0 = _mm256_loadu_si256(p as *const __m256i);
        let v1 = _mm256_loadu_si256(p.add(32) as *const __m256i);
        let ascii_sp =
            |v: __m256i| _mm256_or_si256(_mm256_or_si256(eq8(v, b' '), in_range8(v, 9, 4)), in_range8(v, 28, 3));
        let ascii_space = mask8(ascii_sp(v0)) | mask8(ascii_sp(v1)) << 32;
        // Continuation bytes (0x80..=0xBF) as -1 per byte, both halves added: the caller sums
        // them in a vector accumulator, so `Class64::cont` stays 0 here.
        let cont_of = |v: __m256i| _mm256_cmpgt_epi8(_mm256_set1_epi8(-64), v);
        let contv = _mm256_add_epi8(cont_of(v0), cont_of(v1));
        let cont = 0;
        let n1_0 = _mm256_loadu_si256(p.add(1) as *const __m256i);
        let n1_1 = _mm256_loadu_si256(p.add(33) as *const __m256i);
        let two =
            |v: __m256i, n1: __m256i| _mm256_and_si256(eq8(v, 0xC2), _mm256_or_si256(eq8(n1, 0x85), eq8(n1, 0xA0)));
        let three_lead = |v: __m256i, n1: __m256i| {
            _mm256_and_si256(in_range8(v, 0xE1, 2), _mm256_or_si256(in_range8(n1, 0x80, 1), eq8(n1, 0x9A)))
        };
        let (l2_0, l2_1) = (two(v0, n1_0), two(v1, n1_1));
        let cand =
            _mm256_or_si256(_mm256_or_si256(l2_0, l2_1), _mm256_or_si256(three_lead(v0, n1_0), three_lead(v1, n1_1)));
        if _mm256_testz_si256(cand, cand) != 0 {
            return (Class64 { space: ascii_space, spill: 0, cont }, contv);
        }
        let lead2 = mask8(l2_0) | mask8(l2_1) << 32;
        let mut lead3 = 0u64;
        for (lane, v, n1) in [(0usize, v0, n1_0), (1, v1, n1_1)] {
            let n2 = _mm256_loadu_si256(p.add(32 * lane + 2) as *const __m256i);
            let l3 = three_byte_spaces!(v, n1, n2, _mm256_and_si256, _mm256_or_si256, eq8, in_range8);
            lead3 |= mask8(l3) << (32 * lane);
        }
        let (l2, l3) = (lead2 as u128, lead3 as u128);
        let multi = l2 | l2 << 1 | l3 | l3 << 1 | l3 << 2;
        (Class64 { space: ascii_space | multi as u64, spill: (multi >> 64) as u64, cont }, contv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py_strip(s: &str) -> &str {
        s.trim_matches(is_py_space)
    }

    #[test]
    fn whitespace_set() {
        let spaces: Vec<u32> =
            (0..=0x10FFFFu32).filter_map(char::from_u32).filter(|&c| is_py_space(c)).map(|c| c as u32).collect();
        let mut expected: Vec<u32> = vec![9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 0x85, 0xA0, 0x1680];
        expected.extend(0x2000..=0x200A);
        expected.extend([0x2028, 0x2029, 0x202F, 0x205F, 0x3000]);
        assert_eq!(spaces, expected);
    }

    #[test]
    fn strip_matches_model() {
        for s in [
            "",
            " ",
            " a ",
            "\u{3000}x\u{a0}",
            "\u{85}\u{2028}é\u{1c}",
            "日本\u{2009}",
            "\u{200b}a\u{feff}",
            "a\u{2029}b",
        ] {
            let r = strip_range(s.as_bytes(), 0..s.len());
            assert_eq!(&s[r.clone()], py_strip(s), "{s:?}");
            let lo = skip_space(s.as_bytes(), 0..s.len());
            assert_eq!(lo == s.len(), r.is_empty(), "{s:?}");
            if !r.is_empty() {
                assert_eq!(lo, r.start, "{s:?}");
            }
        }
    }

    fn model(s: &str) -> TextStats {
        let words = s.split(is_py_space).filter(|w| !w.is_empty()).count() as u64;
        TextStats { chars: s.chars().count() as u64, words }
    }

    /// The dispatched count, the scalar count and the SSE2 classifier all equal the model.
    fn check_every_path(s: &str) {
        assert_eq!(count_chars_words(s.as_bytes()), model(s), "{s:?}");
        assert_eq!(count_chars_words_scalar(s.as_bytes()), model(s), "{s:?}");
        #[cfg(target_arch = "x86_64")]
        assert_eq!(count_with(s.as_bytes(), |p| unsafe { simd::classify64(p) }), model(s), "{s:?}");
    }

    #[test]
    fn simd_matches_model_on_random_mixes() {
        let pieces = [
            "a", "word", " ", "\n", "\t", "\x1c", "\x0b", "\u{85}", "\u{a0}", "\u{1680}", "\u{2000}", "\u{200a}",
            "\u{200b}", "\u{2028}", "\u{2029}", "\u{202f}", "\u{205f}", "\u{3000}", "\u{feff}", "\u{180e}", "é", "π",
            "≤", "—", "\u{2080}", "\u{20ac}", "日本", "🎉", "\u{c2}", "°", "\u{1681}", "\u{3001}",
        ];
        let mut rng = crate::testing::XorShift(0x2545F4914F6CDD1D);
        for _ in 0..3000 {
            let s = rng.text(&pieces, 200);
            check_every_path(&s);
        }
    }

    /// Long texts where multi-byte whitespace is rare, so that most 64-byte chunks take the
    /// vector path's early exits (all ASCII, or non-ASCII without a whitespace lead pair) and
    /// a few run the exact test; every path is checked against the model and the scalar count.
    #[test]
    fn sparse_multibyte_spaces() {
        let common = ["word", " ", "\n", "é", "π", "≤", "—", "\u{201c}", "\u{2075}", "°", "日本", "\u{e280}", "x"];
        let rare = ["\u{a0}", "\u{85}", "\u{2009}", "\u{2028}", "\u{205f}", "\u{3000}", "\u{1680}", "\u{202f}"];
        let mut rng = crate::testing::XorShift(0xD1B54A32D192ED03);
        for _ in 0..500 {
            let mut s = String::new();
            for _ in 0..rng.below(600) {
                let r = rng.next_u64();
                if r % 40 == 0 {
                    s.push_str(rare[(r / 40 % rare.len() as u64) as usize]);
                } else {
                    s.push_str(common[(r % common.len() as u64) as usize]);
                }
            }
            check_every_path(&s);
        }
    }

    /// Texts longer than one flush of the AVX2 continuation-byte accumulator (127 chunks of 64
    /// bytes), dense in continuation bytes, at lengths around the chunk and flush boundaries.
    #[test]
    fn long_texts_cross_accumulator_flushes() {
        let unit = "日本語 π≤θ \u{3000}é\u{a0}word 🎉—\u{2028}";
        for reps in [1usize, 200, 300, 333, 700, 1500] {
            let base = unit.repeat(reps);
            for extra in ["", "x", "ab", "\u{3000}", "é", " 🎉"] {
                let s = format!("{base}{extra}");
                assert_eq!(count_chars_words(s.as_bytes()), model(&s), "len {}", s.len());
                assert_eq!(count_chars_words_scalar(s.as_bytes()), model(&s), "len {}", s.len());
            }
        }
        let ascii = "word and words, ".repeat(1000); // 16,000 bytes, all ASCII
        assert_eq!(count_chars_words(ascii.as_bytes()), model(&ascii));
        let cjk = "漢字".repeat(5000); // 30,000 bytes, two thirds continuation bytes, no space
        assert_eq!(count_chars_words(cjk.as_bytes()), TextStats { chars: 10_000, words: 1 });
        // Period 4: lanes 1-3 of every 32 see two continuation bytes per chunk, the most an
        // accumulator lane can take (127 * 2 = 254 fits a byte, 128 * 2 would wrap to 0).
        let emoji = "🎉".repeat(5000);
        assert_eq!(count_chars_words(emoji.as_bytes()), TextStats { chars: 5000, words: 1 });
    }

    #[test]
    fn counts_match_model() {
        let cases = [
            "",
            "hello world",
            "  lead and trail  ",
            "a\u{a0}b\u{3000}c d\u{200b}e",
            "long ascii text with many words that spans several sixteen byte chunks of input....",
            "π ≤ θ → ° emoji 🎉 mixed with ascii words ascii words ascii words ascii\u{2028}x",
            "\x1c\x1d\x1e\x1f\x0b\x0c",
        ];
        for s in cases {
            let st = count_chars_words(s.as_bytes());
            let words = s.split(is_py_space).filter(|w| !w.is_empty()).count() as u64;
            assert_eq!(st, TextStats { chars: s.chars().count() as u64, words }, "{s:?}");
        }
    }
}
