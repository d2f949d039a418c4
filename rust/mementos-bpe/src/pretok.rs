//! The split patterns of byte-level BPE tokenizers, as linear hand-written scanners.
//!
//! Each scanner returns, for a position, the end of the match that Oniguruma (the engine Hugging
//! Face `tokenizers` uses) finds there: the alternatives are tried in order, each greedy, with
//! exactly the backtracking the pattern allows (worked out per alternative below). Every character
//! is covered by some alternative, so the matches tile the text and no gap is ever left.
//!
//! Character classes come from [`crate::tables`], measured from HF itself, so `\p{L}`, `\p{N}`,
//! `\s` and the case folding of `(?i:...)` agree with it code point by code point.

use std::sync::OnceLock;

use crate::tables;

/// The split patterns this crate reproduces (recognised from the exact pattern text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// GPT-2 (also the built-in regex of HF's `ByteLevel(use_regex=true)`):
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    Gpt2,
    /// Qwen2 / Qwen2.5 / Qwen3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Qwen2,
    /// Llama-3: as Qwen2 but `\p{N}{1,3}`.
    Llama3,
}

pub const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
pub const QWEN2_PATTERN: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Pattern {
    /// The pattern whose text is exactly `s`, if it is one of the supported ones.
    pub fn recognise(s: &str) -> Option<Pattern> {
        match s {
            GPT2_PATTERN => Some(Pattern::Gpt2),
            QWEN2_PATTERN => Some(Pattern::Qwen2),
            LLAMA3_PATTERN => Some(Pattern::Llama3),
            _ => None,
        }
    }
}

/// Character class: letter, number, whitespace (`\s`) or other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Class {
    L = 0,
    N = 1,
    S = 2,
    O = 3,
}

fn in_ranges(t: &[(u32, u32)], c: u32) -> bool {
    let i = t.partition_point(|&(_, hi)| hi < c);
    i < t.len() && t[i].0 <= c
}

fn class_slow(c: u32) -> Class {
    if in_ranges(tables::LETTER, c) {
        Class::L
    } else if in_ranges(tables::NUMBER, c) {
        Class::N
    } else if in_ranges(tables::SPACE, c) {
        Class::S
    } else {
        Class::O
    }
}

/// Classes of the Basic Multilingual Plane, one byte each (64 KiB, built once).
fn bmp() -> &'static [Class] {
    static BMP: OnceLock<Box<[Class]>> = OnceLock::new();
    BMP.get_or_init(|| (0..0x10000u32).map(class_slow).collect())
}

#[inline]
pub fn class(c: u32) -> Class {
    if c < 0x10000 {
        bmp()[c as usize]
    } else {
        class_slow(c)
    }
}

/// Decode the char starting at byte `i` of valid UTF-8: (code point, byte length).
#[inline(always)]
fn decode(b: &[u8], i: usize) -> (u32, usize) {
    let b0 = b[i] as u32;
    if b0 < 0x80 {
        (b0, 1)
    } else if b0 < 0xE0 {
        (((b0 & 0x1F) << 6) | (b[i + 1] as u32 & 0x3F), 2)
    } else if b0 < 0xF0 {
        (((b0 & 0x0F) << 12) | ((b[i + 1] as u32 & 0x3F) << 6) | (b[i + 2] as u32 & 0x3F), 3)
    } else {
        (
            ((b0 & 0x07) << 18)
                | ((b[i + 1] as u32 & 0x3F) << 12)
                | ((b[i + 2] as u32 & 0x3F) << 6)
                | (b[i + 3] as u32 & 0x3F),
            4,
        )
    }
}

/// Class of the char at `i` (`None` at the end) and its byte length.
#[inline(always)]
fn class_at(b: &[u8], i: usize) -> Option<(Class, u32, usize)> {
    if i >= b.len() {
        return None;
    }
    let (c, l) = decode(b, i);
    Some((class(c), c, l))
}

/// End of the run of chars of class `k` starting at `i`.
#[inline(always)]
fn run_of(b: &[u8], mut i: usize, k: Class) -> usize {
    loop {
        if k == Class::L {
            i = ascii_letters(b, i);
        }
        if i >= b.len() {
            return i;
        }
        let x = b[i];
        if x < 0x80 {
            if ASCII[x as usize] != k {
                return i;
            }
            i += 1;
        } else {
            let (c, l) = decode(b, i);
            if class(c) != k {
                return i;
            }
            i += l;
        }
    }
}

/// End of the run of ASCII letters starting at `i`, 8 bytes at a time (stops early, at most 7
/// bytes before the end of `b`; the caller finishes byte by byte).
#[inline(always)]
fn ascii_letters(b: &[u8], mut i: usize) -> usize {
    const HI: u64 = 0x8080_8080_8080_8080;
    while i + 8 <= b.len() {
        let w = u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        // Per byte, without carries between bytes: x = (b & 0x7F) | 0x20 is in 0x61..=0x7A
        // exactly when b is an ASCII letter (or a non-ASCII byte, masked out with `w & HI`).
        let x = (w & !HI) | 0x2020_2020_2020_2020;
        let at_least_a = x.wrapping_add(0x1F1F_1F1F_1F1F_1F1F); // high bit: x >= 0x61
        let past_z = x.wrapping_add(0x0505_0505_0505_0505); // high bit: x >= 0x7B
        let other = !(at_least_a & !past_z & !w) & HI;
        if other != 0 {
            return i + (other.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i
}

/// ASCII classes (checked against the tables by a test).
static ASCII: [Class; 128] = {
    let mut t = [Class::O; 128];
    let mut i = 0;
    while i < 128 {
        let c = i as u8;
        t[i] = if c.is_ascii_alphabetic() {
            Class::L
        } else if c.is_ascii_digit() {
            Class::N
        } else if (c >= 9 && c <= 13) || c == b' ' {
            Class::S
        } else {
            Class::O
        };
        i += 1;
    }
    t
};

fn fold_is(c: u32, set: &[(u32, u32)]) -> bool {
    in_ranges(set, c)
}

/// Length (bytes, after the apostrophe) of a contraction `s|t|re|ve|m|ll|d` at `i`, matched
/// case-insensitively (with HF's case folding) when `ci`.
#[inline]
fn contraction(b: &[u8], i: usize, ci: bool) -> Option<usize> {
    let (c1, l1) = if i < b.len() {
        decode(b, i)
    } else {
        return None;
    };
    let is = |c: u32, lower: u8, fold: &[(u32, u32)]| {
        if ci {
            fold_is(c, fold)
        } else {
            c == lower as u32
        }
    };
    if is(c1, b's', tables::FOLD_S)
        || is(c1, b't', tables::FOLD_T)
        || is(c1, b'm', tables::FOLD_M)
        || is(c1, b'd', tables::FOLD_D)
    {
        return Some(l1);
    }
    let second = |lower: u8, fold: &[(u32, u32)]| -> Option<usize> {
        if i + l1 < b.len() {
            let (c2, l2) = decode(b, i + l1);
            if is(c2, lower, fold) {
                return Some(l1 + l2);
            }
        }
        None
    };
    if is(c1, b'r', tables::FOLD_R) || is(c1, b'v', tables::FOLD_V) {
        return second(b'e', tables::FOLD_E);
    }
    if is(c1, b'l', tables::FOLD_L) {
        return second(b'l', tables::FOLD_L);
    }
    None
}

/// End of the whitespace alternatives at `i` (a whitespace char): `\s+(?!\S)|\s+`, preceded for
/// Qwen2/Llama-3 by `\s*[\r\n]+`.
#[inline]
fn whitespace_end(b: &[u8], i: usize, crlf_alt: bool) -> usize {
    // The maximal run of whitespace [i, j), remembering its last char's start and last CR/LF.
    let (mut j, mut last_start, mut last_crlf) = (i, i, None);
    while j < b.len() {
        let x = b[j];
        if x < 0x80 {
            // ASCII (indentation, newlines): no decoding.
            if ASCII[x as usize] != Class::S {
                break;
            }
            if x == b'\r' || x == b'\n' {
                last_crlf = Some(j);
            }
            last_start = j;
            j += 1;
            continue;
        }
        let (c, l) = decode(b, j);
        if class(c) != Class::S {
            break;
        }
        last_start = j;
        j += l;
    }
    if crlf_alt {
        // `\s*[\r\n]+`: greedy `\s*` backs off to the last CR/LF of the run; `[\r\n]+` takes it
        // (no CR/LF follows it inside the run, and the run ends at a non-space).
        if let Some(k) = last_crlf {
            return k + 1;
        }
    }
    // `\s+(?!\S)`: the whole run if it ends the text; else back off one char (the next char
    // is then whitespace), which needs a run of two or more. Otherwise `\s+` takes the one char.
    if j == b.len() || last_start == i {
        j
    } else {
        last_start
    }
}

impl Pattern {
    /// End of the match starting at byte `i` (`i < text.len()`, on a char boundary).
    #[inline(always)]
    pub fn match_end(self, b: &[u8], i: usize) -> usize {
        let (c, l) = decode(b, i);
        let k = if c < 0x80 { ASCII[c as usize] } else { class(c) };
        if c == b'\'' as u32 {
            if let Some(n) = contraction(b, i + 1, self != Pattern::Gpt2) {
                return i + 1 + n;
            }
        }
        match self {
            Pattern::Gpt2 => {
                // ` ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`: an optional space then a run of one class.
                if c == b' ' as u32 {
                    if let Some((k2, _, _)) = class_at(b, i + l) {
                        if k2 != Class::S {
                            return run_of(b, i + 1, k2);
                        }
                    }
                } else if k != Class::S {
                    return run_of(b, i, k);
                }
                whitespace_end(b, i, false)
            }
            Pattern::Qwen2 | Pattern::Llama3 => {
                // `[^\r\n\p{L}\p{N}]?\p{L}+`
                if k == Class::L {
                    return run_of(b, i, Class::L);
                }
                let next = class_at(b, i + l);
                if k != Class::N && c != b'\r' as u32 && c != b'\n' as u32 {
                    if let Some((Class::L, _, _)) = next {
                        return run_of(b, i + l, Class::L);
                    }
                }
                // `\p{N}` / `\p{N}{1,3}`
                if k == Class::N {
                    let mut e = i + l;
                    if self == Pattern::Llama3 {
                        for _ in 0..2 {
                            match class_at(b, e) {
                                Some((Class::N, _, l2)) => e += l2,
                                _ => break,
                            }
                        }
                    }
                    return e;
                }
                // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
                let others_from = if k == Class::O {
                    Some(i)
                } else if c == b' ' as u32 && matches!(next, Some((Class::O, _, _))) {
                    Some(i + 1)
                } else {
                    None
                };
                if let Some(s) = others_from {
                    let mut e = run_of(b, s, Class::O);
                    while e < b.len() && (b[e] == b'\r' || b[e] == b'\n') {
                        e += 1;
                    }
                    return e;
                }
                whitespace_end(b, i, true)
            }
        }
    }
}

/// Iterator over the pieces of `text` under a pattern.
pub struct Pieces<'a> {
    text: &'a [u8],
    pos: usize,
    pattern: Pattern,
}

impl<'a> Pieces<'a> {
    pub fn new(text: &'a str, pattern: Pattern) -> Self {
        Pieces { text: text.as_bytes(), pos: 0, pattern }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];
    #[inline(always)]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.pos >= self.text.len() {
            return None;
        }
        let s = self.pos;
        self.pos = self.pattern.match_end(self.text, s);
        Some(&self.text[s..self.pos])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_letter_runs_match_the_byte_loop() {
        let text = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ@[`{ \x7F\xC3\xA9Zz09_-'";
        for start in 0..text.len() {
            for end in start..=text.len() {
                let b = &text[..end];
                let mut want = start;
                while want < b.len() && b[want].is_ascii_alphabetic() {
                    want += 1;
                }
                let got = ascii_letters(b, start);
                assert!(got <= want && (got == want || got + 8 > b.len()), "{start} {end}: {got} vs {want}");
            }
        }
        for x in 0..=255u8 {
            let b = [b'a', b'a', b'a', x, b'a', b'a', b'a', b'a'];
            assert_eq!(ascii_letters(&b, 0), if x.is_ascii_alphabetic() { 8 } else { 3 }, "byte {x:#x}");
        }
    }

    #[test]
    fn ascii_table_agrees_with_measured_classes() {
        for c in 0..128u32 {
            assert_eq!(ASCII[c as usize], class_slow(c), "code point {c}");
        }
    }

    fn split(p: Pattern, s: &str) -> Vec<&str> {
        Pieces::new(s, p).map(|x| std::str::from_utf8(x).unwrap()).collect()
    }

    #[test]
    fn qwen_examples() {
        assert_eq!(split(Pattern::Qwen2, "Hello world's 123"), ["Hello", " world", "'s", " ", "1", "2", "3"]);
        assert_eq!(split(Pattern::Qwen2, "a  \n\n  b"), ["a", "  \n\n", " ", " b"]);
        assert_eq!(split(Pattern::Qwen2, "x  "), ["x", "  "]);
        assert_eq!(split(Pattern::Qwen2, "'LL 'ſt"), ["'LL", " '", "ſt"]);
        assert_eq!(split(Pattern::Qwen2, "'ſt"), ["'ſ", "t"]);
        assert_eq!(split(Pattern::Llama3, "12345"), ["123", "45"]);
        assert_eq!(split(Pattern::Gpt2, "I'll  go!!\n"), ["I", "'ll", " ", " go", "!!", "\n"]);
    }
}
