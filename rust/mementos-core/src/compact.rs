//! Rewriting and context replay: what a Memento model keeps in context.
//!
//! Two rewrites of a trace:
//!
//! - **tutorial** ([`tutorial_plan`]): the seed tutorial's `compress_trace`, byte for byte: the
//!   trace is rebuilt from the stripped blocks and summaries, with the last `keep_last_k` blocks
//!   kept and only the memento for the others. Where the tutorial is buggy (no `</think>`: it
//!   appends the whole response again) the row is returned unchanged.
//! - **inplace** ([`inplace_plan`]): the text that is in the model's KV cache at the end of
//!   generation under the inference engine's block masking (FORMAT.md section 5): every byte is
//!   kept except the content of evicted blocks.
//!
//! And a **replay** ([`replay`]) of generation under the same rules, unit by unit (characters,
//! or tokens through a [`Units`] implementation), reporting the total length, the peak and the
//! mean visible length, and optionally the curve.
//!
//! The engine ([`engine`]) sees every delimiter occurrence as the special token it is when the
//! text is tokenized, wherever it sits; its rules:
//! - `<|block_start|>` opens a block; open blocks form a stack (nested starts);
//! - `<|block_end|>` closes the innermost open block; with no open block it is ignored;
//! - `<|summary_start|>` binds to the newest closed block that has no summary yet (ignored when
//!   there is none); `<|summary_end|>` completes the bound block (ignored when nothing is bound);
//! - a completed block is evicted per `keep_last_k`: `-1` never, `0` at its own
//!   `<|summary_end|>` (or, with `keep_last_block_for_answer`, at the next `<|block_start|>`),
//!   `k > 0` at the `<|summary_end|>` that completes the k-th block after it;
//! - blocks never completed (no summary, cut off) are never evicted.
//!
//! All of it is linear in the row: one scan, one pass over the tokens, and eviction bookkeeping
//! in a `BTreeMap` of disjoint evicted intervals (block ranges from a stack are nested or
//! disjoint, so an eviction either falls inside an evicted interval or swallows whole ones).

use std::collections::BTreeMap;
use std::ops::Range;

use crate::parse::pairs;
use crate::scan::{Delim, Token};
use crate::text::strip_range;

/// Options of the inference engine's block masking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// `-1` keeps every block; `0` evicts each block at its own `<|summary_end|>`; `k > 0` keeps
    /// the last `k` complete blocks.
    pub keep_last_k: i64,
    /// `false`: only the content strictly between `<|block_start|>` and `<|block_end|>` is
    /// removed (Qwen3, OLMo 3); `true`: the two delimiters go too (Phi-4).
    pub mask_delimiters: bool,
    /// Only with `keep_last_k == 0`: the newest complete block is evicted when the next
    /// `<|block_start|>` arrives, so it stays visible while the answer is written.
    pub keep_last_block_for_answer: bool,
}


/// A closed block: indexes (into the row's token list) of its `<|block_start|>` and `<|block_end|>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineBlock {
    pub open: usize,
    pub close: usize,
    /// Index of the `<|summary_end|>` token that completed it, if any.
    pub completed_at: Option<usize>,
}

/// Block `block` (index into the closed blocks) leaves the cache right after token `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eviction {
    pub at: usize,
    pub block: usize,
}

/// Scratch and output of [`engine`], reused across rows.
#[derive(Clone, Debug, Default)]
pub struct EngineState {
    pub blocks: Vec<EngineBlock>,
    pub evictions: Vec<Eviction>,
    open: Vec<usize>,
    unsummarized: Vec<usize>,
    completed: Vec<usize>,
}

/// Run the engine's rules over the delimiter occurrences of one row.
pub fn engine(tokens: &[Token], opts: &EngineOptions, st: &mut EngineState) {
    st.blocks.clear();
    st.evictions.clear();
    st.open.clear();
    st.unsummarized.clear();
    st.completed.clear();
    let k = opts.keep_last_k;
    let for_answer = k == 0 && opts.keep_last_block_for_answer;
    let mut bound: Option<usize> = None;
    let mut pending: Option<usize> = None; // keep_last_block_for_answer: completed, not yet evicted
    for (i, t) in tokens.iter().enumerate() {
        match t.delim {
            Delim::BlockStart => {
                if let Some(b) = pending.take() {
                    st.evictions.push(Eviction { at: i, block: b });
                }
                st.open.push(i);
            }
            Delim::BlockEnd => {
                if let Some(open) = st.open.pop() {
                    st.unsummarized.push(st.blocks.len());
                    st.blocks.push(EngineBlock { open, close: i, completed_at: None });
                }
            }
            Delim::SummaryStart => bound = st.unsummarized.last().copied(),
            Delim::SummaryEnd => {
                let Some(b) = bound.take() else { continue };
                if let Some(pos) = st.unsummarized.iter().rposition(|&x| x == b) {
                    st.unsummarized.remove(pos);
                }
                st.blocks[b].completed_at = Some(i);
                if k < 0 {
                    continue;
                }
                if for_answer {
                    if let Some(prev) = pending.replace(b) {
                        st.evictions.push(Eviction { at: i, block: prev });
                    }
                    continue;
                }
                st.completed.push(b);
                let n = st.completed.len();
                if n as i64 > k {
                    st.evictions.push(Eviction { at: i, block: st.completed[n - 1 - k as usize] });
                }
            }
            Delim::ThinkStart | Delim::ThinkEnd => {}
        }
    }
}

/// Byte range of the row that evicting `b` removes.
#[inline]
pub fn evicted_bytes(tokens: &[Token], b: &EngineBlock, mask_delimiters: bool) -> Range<usize> {
    let (open, close) = (&tokens[b.open], &tokens[b.close]);
    if mask_delimiters {
        open.start..close.end()
    } else {
        open.end()..close.start
    }
}

/// One piece of a rewritten row: bytes of the row, or a literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Src(Range<usize>),
    Lit(&'static str),
}

impl Piece {
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Piece::Src(r) => r.len(),
            Piece::Lit(s) => s.len(),
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Disjoint intervals (start -> end), merged as evictions arrive.
#[derive(Default, Debug)]
struct Intervals(BTreeMap<usize, usize>);

impl Intervals {
    /// Add `r`, calling `gone` for each interval it swallows. Returns false when `r` already lies
    /// inside an interval (nothing new is removed).
    fn add(&mut self, r: Range<usize>, mut gone: impl FnMut(Range<usize>)) -> bool {
        if let Some((_, &e)) = self.0.range(..=r.start).next_back() {
            if e >= r.end {
                return false;
            }
        }
        while let Some((&s, &e)) = self.0.range(r.start..r.end).next() {
            self.0.remove(&s);
            gone(s..e);
        }
        self.0.insert(r.start, r.end);
        true
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// Scratch for the rewrites, reused across rows.
#[derive(Default, Debug)]
pub struct Scratch {
    pub engine: EngineState,
    evicted: Intervals,
}

/// The in-place rewrite of one row: every byte but the content of blocks evicted by the end of
/// generation. `pieces` is overwritten; the result is its concatenation.
pub fn inplace_plan(text: &[u8], tokens: &[Token], opts: &EngineOptions, sc: &mut Scratch, pieces: &mut Vec<Piece>) {
    pieces.clear();
    engine(tokens, opts, &mut sc.engine);
    sc.evicted.clear();
    for ev in &sc.engine.evictions {
        let r = evicted_bytes(tokens, &sc.engine.blocks[ev.block], opts.mask_delimiters);
        if !r.is_empty() {
            sc.evicted.add(r, |_| {});
        }
    }
    let mut pos = 0;
    for (&s, &e) in &sc.evicted.0 {
        if s > pos {
            pieces.push(Piece::Src(pos..s));
        }
        pos = e;
    }
    if pos < text.len() || text.is_empty() {
        pieces.push(Piece::Src(pos..text.len()));
    }
}

/// The tutorial's stripped blocks and summaries (the same pairing as [`crate::parse`], without
/// the text statistics the parser also computes).
#[derive(Clone, Debug, Default)]
pub struct TutorialItems {
    pub blocks: Vec<Range<usize>>,
    pub summaries: Vec<Range<usize>>,
}

impl TutorialItems {
    pub fn fill(&mut self, text: &[u8], tokens: &[Token]) {
        self.blocks.clear();
        self.summaries.clear();
        pairs(tokens, Delim::BlockStart, Delim::BlockEnd, |r| self.blocks.push(strip_range(text, r)));
        pairs(tokens, Delim::SummaryStart, Delim::SummaryEnd, |r| self.summaries.push(strip_range(text, r)));
    }
}

/// The tutorial's `compress_trace` over a row's tokens. `keep_last_k < 0` keeps every block (the
/// tutorial's arithmetic would keep none; negative k is not meaningful there). Rows the tutorial
/// leaves unchanged (no blocks, or different block and summary counts), and rows without
/// `</think>` (where the tutorial appends the response a second time), come back unchanged.
pub fn tutorial_plan(text: &[u8], tokens: &[Token], items: &mut TutorialItems, keep_last_k: i64, pieces: &mut Vec<Piece>) {
    pieces.clear();
    items.fill(text, tokens);
    let n = items.blocks.len();
    let last_end = tokens.iter().rev().find(|t| t.delim == Delim::ThinkEnd);
    let (Some(last_end), true) = (last_end, n > 0 && n == items.summaries.len()) else {
        pieces.push(Piece::Src(0..text.len()));
        return;
    };
    pieces.push(Piece::Lit("<think>"));
    for (i, (b, s)) in items.blocks.iter().zip(&items.summaries).enumerate() {
        if keep_last_k < 0 || i as i64 >= n as i64 - keep_last_k {
            pieces.push(Piece::Lit("\n<|block_start|> "));
            pieces.push(Piece::Src(b.clone()));
            pieces.push(Piece::Lit(" <|block_end|>"));
        }
        pieces.push(Piece::Lit("\n<|summary_start|> "));
        pieces.push(Piece::Src(s.clone()));
        pieces.push(Piece::Lit(" <|summary_end|>"));
    }
    pieces.push(Piece::Lit("\n</think>"));
    pieces.push(Piece::Src(last_end.end()..text.len()));
}

/// Append the concatenation of `pieces` of `text` to `out`.
pub fn write_pieces(text: &[u8], pieces: &[Piece], out: &mut [u8]) -> usize {
    let mut pos = 0;
    for p in pieces {
        let src: &[u8] = match p {
            Piece::Src(r) => &text[r.clone()],
            Piece::Lit(s) => s.as_bytes(),
        };
        out[pos..pos + src.len()].copy_from_slice(src);
        pos += src.len();
    }
    pos
}

/// How lengths are measured in a replay.
pub trait Units: Sync {
    /// Units of a text segment between delimiters (valid UTF-8).
    fn text(&self, s: &[u8]) -> u64;
    /// Units of one delimiter.
    fn delim(&self, d: Delim) -> u64;
}

/// Characters (Unicode code points, as Python's `len`); a delimiter counts its characters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Chars;

impl Units for Chars {
    #[inline]
    fn text(&self, s: &[u8]) -> u64 {
        count_code_points(s)
    }
    #[inline]
    fn delim(&self, d: Delim) -> u64 {
        d.len() as u64
    }
}

/// Code points of valid UTF-8: the bytes that are not continuation bytes.
#[inline]
pub fn count_code_points(s: &[u8]) -> u64 {
    s.iter().map(|&b| ((b as i8) >= -0x40) as u64).sum()
}

/// Per-row figures of a replay. Lengths are in the replay's units; `prompt_len` is included in
/// every visible length (the prompt is in the cache the whole time) but not in `total_len`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReplayStats {
    /// Units generated (the whole response).
    pub total_len: u64,
    /// Largest visible length (prompt + generated - evicted), taken before each eviction.
    pub peak_len: u64,
    /// Area under the visible-length curve divided by `total_len` (visible length after each
    /// generated unit, averaged). Equals `prompt_len` for an empty row.
    pub mean_len: f64,
    /// Visible length at the end of generation.
    pub final_len: u64,
    /// Blocks completed (block end plus a bound summary) and blocks evicted.
    pub complete_blocks: u32,
    pub evicted_blocks: u32,
}

impl ReplayStats {
    /// Peak of the uncompacted run: everything stays.
    pub fn full_peak(&self, prompt_len: u64) -> u64 {
        prompt_len + self.total_len
    }

    /// Mean of the uncompacted run: `prompt + (n + 1) / 2`.
    pub fn full_mean(&self, prompt_len: u64) -> f64 {
        if self.total_len == 0 {
            prompt_len as f64
        } else {
            prompt_len as f64 + (self.total_len as f64 + 1.0) / 2.0
        }
    }
}

/// A point of the visible-length curve: after `generated` units, `visible` units are cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CurvePoint {
    pub generated: u64,
    pub visible: u64,
    /// True for the drop right after an eviction (same `generated` as the point before it).
    pub eviction: bool,
}

/// Replay one row: generation appends the segments between delimiters and the delimiters one by
/// one; the engine evicts right after the trigger token is appended. `curve`, when given, gets a
/// point after every segment and after every eviction.
#[allow(clippy::too_many_arguments)]
pub fn replay(
    text: &[u8],
    tokens: &[Token],
    opts: &EngineOptions,
    prompt_len: u64,
    units: &dyn Units,
    sc: &mut Scratch,
    prefix: &mut Vec<u64>,
    mut curve: Option<&mut Vec<CurvePoint>>,
) -> ReplayStats {
    engine(tokens, opts, &mut sc.engine);
    // Units at each segment boundary: boundary 2i is before the gap before token i, 2i + 1
    // before token i, 2i + 2 after it.
    prefix.clear();
    prefix.push(0);
    let mut acc = 0u64;
    let mut pos = 0usize;
    for t in tokens {
        acc += units.text(&text[pos..t.start]);
        prefix.push(acc);
        acc += units.delim(t.delim);
        prefix.push(acc);
        pos = t.end();
    }
    acc += units.text(&text[pos..]);
    prefix.push(acc);

    let mut st = ReplayStats { total_len: acc, ..Default::default() };
    st.complete_blocks = sc.engine.blocks.iter().filter(|b| b.completed_at.is_some()).count() as u32;
    st.evicted_blocks = sc.engine.evictions.len() as u32;
    if let Some(c) = curve.as_deref_mut() {
        c.clear();
        c.push(CurvePoint { generated: 0, visible: prompt_len, eviction: false });
    }
    sc.evicted.clear();
    let mut visible = prompt_len;
    let mut peak = prompt_len;
    let mut area = 0f64;
    let mut next_ev = 0;
    let evictions = &sc.engine.evictions;
    let n_segments = prefix.len() - 1;
    for seg in 0..n_segments {
        let n = prefix[seg + 1] - prefix[seg];
        // Each of the n units adds one: sum_{j=1..n} (visible + j).
        area += n as f64 * visible as f64 + (n as f64) * (n as f64 + 1.0) / 2.0;
        visible += n;
        peak = peak.max(visible);
        if let Some(c) = curve.as_deref_mut() {
            if n > 0 {
                c.push(CurvePoint { generated: prefix[seg + 1], visible, eviction: false });
            }
        }
        if seg % 2 == 1 {
            let tok = seg / 2;
            while next_ev < evictions.len() && evictions[next_ev].at == tok {
                let b = &sc.engine.blocks[evictions[next_ev].block];
                let r = if opts.mask_delimiters { 2 * b.open + 1..2 * b.close + 2 } else { 2 * b.open + 2..2 * b.close + 1 };
                let mut removed = prefix[r.end] - prefix[r.start];
                let fresh = sc.evicted.add(r, |g| removed -= prefix[g.end] - prefix[g.start]);
                if fresh && removed > 0 {
                    visible -= removed;
                    if let Some(c) = curve.as_deref_mut() {
                        c.push(CurvePoint { generated: prefix[seg + 1], visible, eviction: true });
                    }
                }
                next_ev += 1;
            }
        }
    }
    st.peak_len = peak;
    st.final_len = visible;
    st.mean_len = if acc == 0 { prompt_len as f64 } else { area / acc as f64 };
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::scan;

    fn inplace(s: &str, k: i64, mask: bool, kfa: bool) -> String {
        let tokens = scan(s.as_bytes());
        let opts = EngineOptions { keep_last_k: k, mask_delimiters: mask, keep_last_block_for_answer: kfa };
        let mut pieces = Vec::new();
        inplace_plan(s.as_bytes(), &tokens, &opts, &mut Scratch::default(), &mut pieces);
        let mut out = vec![0u8; pieces.iter().map(Piece::len).sum()];
        write_pieces(s.as_bytes(), &pieces, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn tutorial(s: &str, k: i64) -> String {
        let tokens = scan(s.as_bytes());
        let mut pieces = Vec::new();
        tutorial_plan(s.as_bytes(), &tokens, &mut TutorialItems::default(), k, &mut pieces);
        let mut out = vec![0u8; pieces.iter().map(Piece::len).sum()];
        write_pieces(s.as_bytes(), &pieces, &mut out);
        String::from_utf8(out).unwrap()
    }

    const BS: &str = "<|block_start|>";
    const BE: &str = "<|block_end|>";
    const SS: &str = "<|summary_start|>";
    const SE: &str = "<|summary_end|>";

    fn unit(b: &str, s: &str) -> String {
        format!("{BS}{b}{BE}{SS}{s}{SE}")
    }

    #[test]
    fn inplace_rules() {
        let t = format!("<think>{}\n{}\n{}</think>ans", unit("A", "a"), unit("B", "b"), unit("C", "c"));
        let e = |x: &str| x.to_string();
        assert_eq!(inplace(&t, -1, false, false), t);
        assert_eq!(inplace(&t, 0, false, false), e(&format!("<think>{BS}{BE}{SS}a{SE}\n{BS}{BE}{SS}b{SE}\n{BS}{BE}{SS}c{SE}</think>ans")));
        assert_eq!(inplace(&t, 1, false, false), e(&format!("<think>{BS}{BE}{SS}a{SE}\n{BS}{BE}{SS}b{SE}\n{}</think>ans", unit("C", "c"))));
        assert_eq!(inplace(&t, 0, true, false), e(&format!("<think>{SS}a{SE}\n{SS}b{SE}\n{SS}c{SE}</think>ans")));
        assert_eq!(inplace(&t, 3, true, false), t);
        // keep_last_block_for_answer: C stays (no block start after it).
        assert_eq!(inplace(&t, 0, false, true), e(&format!("<think>{BS}{BE}{SS}a{SE}\n{BS}{BE}{SS}b{SE}\n{}</think>ans", unit("C", "c"))));
    }

    #[test]
    fn malformed_rules() {
        // A block without summary is never evicted; the summary binds to the newest closed block.
        let t = format!("<think>{BS}A{BE}{BS}B{BE}{SS}b{SE}</think>");
        assert_eq!(inplace(&t, 0, false, false), format!("<think>{BS}A{BE}{BS}{BE}{SS}b{SE}</think>"));
        // Stray end ignored; unclosed block never evicted.
        let t = format!("<think>{BE}{BS}A{BE}{SS}a{SE}{BS}cut off");
        assert_eq!(inplace(&t, 0, false, false), format!("<think>{BE}{BS}{BE}{SS}a{SE}{BS}cut off"));
        // Nested: the outer block closes last, so the summary binds to it; evicting it removes
        // the inner block too.
        let t = format!("<think>{BS}out {BS}in{BE} more{BE}{SS}s{SE}</think>");
        assert_eq!(inplace(&t, 0, false, false), format!("<think>{BS}{BE}{SS}s{SE}</think>"));
        // Nested, the summary inside the outer block binds to the inner one.
        let t = format!("<think>{BS}out {BS}in{BE}{SS}s1{SE} more{BE}</think>");
        assert_eq!(inplace(&t, 0, false, false), format!("<think>{BS}out {BS}{BE}{SS}s1{SE} more{BE}</think>"));
        // Both nested blocks completed: the outer eviction swallows the inner one.
        let t = format!("<think>{BS}out {BS}in{BE}{SS}s1{SE} more{BE}{SS}s2{SE}</think>");
        assert_eq!(inplace(&t, 0, false, false), format!("<think>{BS}{BE}{SS}s2{SE}</think>"));
        // Stray summary (nothing closed) ignored.
        let t = format!("<think>{SS}x{SE}{BS}A{BE}{SS}a{SE}</think>");
        assert_eq!(inplace(&t, 0, false, false), format!("<think>{SS}x{SE}{BS}{BE}{SS}a{SE}</think>"));
        assert_eq!(inplace("", 0, false, false), "");
    }

    #[test]
    fn tutorial_shape() {
        let t = format!("<think>\n{}\n{}\n</think>\n\nanswer", unit(" A ", " a "), unit("B", "b"));
        assert_eq!(
            tutorial(&t, 1),
            format!("<think>\n{SS} a {SE}\n{BS} B {BE}\n{SS} b {SE}\n</think>\n\nanswer")
        );
        assert_eq!(tutorial("no think", 1), "no think");
        let no_end = format!("<think>{}", unit("A", "a"));
        assert_eq!(tutorial(&no_end, 1), no_end);
    }

    #[test]
    fn replay_by_hand() {
        // prompt 10; "<think>" is 7 chars; block "AAAA" 4; summary "s" 1.
        let t = format!("<think>{}</think>x", unit("AAAA", "s"));
        let tokens = scan(t.as_bytes());
        let opts = EngineOptions::default();
        let mut curve = Vec::new();
        let st = replay(t.as_bytes(), &tokens, &opts, 10, &Chars, &mut Scratch::default(), &mut Vec::new(), Some(&mut curve));
        let total = t.chars().count() as u64;
        assert_eq!(st.total_len, total);
        // Before the eviction the cache holds 82; after it, 78, then "</think>x" brings 87.
        assert_eq!(st.peak_len, 10 + total - 4);
        assert!(curve.iter().any(|p| !p.eviction && p.visible == 10 + 7 + 15 + 4 + 13 + 17 + 1 + 15));
        assert_eq!(st.final_len, 10 + total - 4);
        assert_eq!(st.complete_blocks, 1);
        assert_eq!(st.evicted_blocks, 1);
        // Mean: per unit visible lengths, computed naively.
        let mut v = 10u64;
        let mut area = 0u64;
        for (i, _) in t.char_indices() {
            v += 1;
            area += v;
            if i + 1 == t.find(SE).unwrap() + SE.len() {
                v -= 4;
            }
        }
        assert!((st.mean_len - area as f64 / total as f64).abs() < 1e-9);
        assert!(curve.iter().any(|p| p.eviction && p.visible == 82 - 4));
        // k = -1: nothing evicted, peak = prompt + total.
        let st = replay(t.as_bytes(), &tokens, &EngineOptions { keep_last_k: -1, ..opts }, 10, &Chars, &mut Scratch::default(), &mut Vec::new(), None);
        assert_eq!(st.peak_len, 10 + total);
        assert_eq!(st.evicted_blocks, 0);
    }

    #[test]
    fn intervals_nested() {
        let mut iv = Intervals::default();
        assert!(iv.add(5..7, |_| {}));
        assert!(!iv.add(5..6, |_| {}));
        let mut gone = Vec::new();
        assert!(iv.add(2..10, |g| gone.push(g)));
        assert_eq!(gone, vec![5..7]);
        assert!(iv.add(12..14, |_| {}));
        assert_eq!(iv.0.len(), 2);
    }
}
