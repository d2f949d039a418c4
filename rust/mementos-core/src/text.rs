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

/// `range` narrowed as Python's `str.strip()` would narrow the text it covers.
pub fn strip_range(b: &[u8], range: Range<usize>) -> Range<usize> {
    let (mut lo, mut hi) = (range.start, range.end);
    while lo < hi {
        let n = space_len_at(b, lo);
        if n == 0 || lo + n > hi {
            break;
        }
        lo += n;
    }
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
    let (len, space) = if c < 0x80 {
        (1, ASCII_SPACE[c as usize])
    } else {
        (utf8_len(c), space_len_at(b, i) != 0)
    };
    st.chars += 1;
    if !space && !*in_word {
        st.words += 1;
    }
    *in_word = !space;
    (i + len).min(b.len())
}

/// Count code points and words of `b` (valid UTF-8) exactly as Python's `len(s)` and
/// `len(s.split())`. ASCII runs are processed 16 bytes at a time with SSE2 on x86_64.
pub fn count_chars_words(b: &[u8]) -> TextStats {
    let mut st = TextStats::default();
    let mut in_word = false;
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is part of the x86_64 baseline; loads are unaligned and in bounds.
        unsafe {
            use std::arch::x86_64::*;
            let c32 = _mm_set1_epi8(32);
            let c9 = _mm_set1_epi8(9);
            let c4 = _mm_set1_epi8(4);
            let c28 = _mm_set1_epi8(28);
            let c3 = _mm_set1_epi8(3);
            while i + 16 <= b.len() {
                let v = _mm_loadu_si128(b.as_ptr().add(i) as *const __m128i);
                if _mm_movemask_epi8(v) != 0 {
                    // Non-ASCII inside: characters may straddle the chunk end, go scalar.
                    let end = i + 16;
                    while i < end {
                        i = step(b, i, &mut st, &mut in_word);
                    }
                    continue;
                }
                let sp = _mm_cmpeq_epi8(v, c32);
                let a = _mm_sub_epi8(v, c9);
                let in1 = _mm_cmpeq_epi8(_mm_min_epu8(a, c4), a);
                let d = _mm_sub_epi8(v, c28);
                let in2 = _mm_cmpeq_epi8(_mm_min_epu8(d, c3), d);
                let space = _mm_or_si128(_mm_or_si128(sp, in1), in2);
                let nonspace = !(_mm_movemask_epi8(space) as u32) & 0xFFFF;
                let prev = (nonspace << 1) | (in_word as u32);
                st.words += (nonspace & !prev).count_ones() as u64;
                in_word = nonspace & 0x8000 != 0;
                st.chars += 16;
                i += 16;
            }
        }
    }
    while i < b.len() {
        i = step(b, i, &mut st, &mut in_word);
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py_strip(s: &str) -> &str {
        s.trim_matches(is_py_space)
    }

    #[test]
    fn whitespace_set() {
        let spaces: Vec<u32> = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| is_py_space(c))
            .map(|c| c as u32)
            .collect();
        let mut expected: Vec<u32> = vec![9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 0x85, 0xA0, 0x1680];
        expected.extend(0x2000..=0x200A);
        expected.extend([0x2028, 0x2029, 0x202F, 0x205F, 0x3000]);
        assert_eq!(spaces, expected);
    }

    #[test]
    fn strip_matches_model() {
        for s in ["", " ", " a ", "\u{3000}x\u{a0}", "\u{85}\u{2028}é\u{1c}", "日本\u{2009}", "\u{200b}a\u{feff}", "a\u{2029}b"] {
            let r = strip_range(s.as_bytes(), 0..s.len());
            assert_eq!(&s[r], py_strip(s), "{s:?}");
        }
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
