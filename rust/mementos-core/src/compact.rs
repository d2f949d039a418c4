//! Rewriting and context replay: what a Memento model keeps in context.
//!
//! **One engine, one plan.** [`engine`] runs the inference engine's block-masking rules (the
//! Memento vLLM overlay, `vllm/vllm/v1/core/block_masking/tracker.py` and `processor.py` in the
//! public repository microsoft/memento; FORMAT.md section 5) over a row's delimiter occurrences
//! and produces a [`Plan`]: every block the engine tracks (its `<|block_start|>`, `<|block_end|>`,
//! the `<|summary_start|>` / `<|summary_end|>` bound to it) and every eviction (the trigger token,
//! the block, the restart rewind). Every consumer reads that plan and none recomputes it:
//!
//! - the **inplace** rewrite ([`inplace_plan`]): the text in the KV cache at the end of generation;
//! - the **replay** ([`replay`]): visible length, peak, mean and AUC as generation proceeds, in
//!   characters or tokens ([`Units`]);
//! - the **eviction plan** as Arrow ([`crate::ops::plan_arrays`]): byte ranges per block, which the
//!   terminal view and the tokenized export's per-token `evict_at` read.
//!
//! The rules, to the letter of the overlay (each delimiter is one special token to the model,
//! wherever it sits):
//! - `<|block_start|>` opens a block (open blocks form a stack); with
//!   `keep_last_block_for_answer` and `keep_last_k == 0` it first flushes the oldest waiting block;
//! - `<|block_end|>` closes the innermost open block; ignored when none is open;
//! - `<|summary_start|>` binds to the **most recently opened** block that is closed and has no
//!   summary yet (blocks searched from the newest `<|block_start|>` backwards); when there is none
//!   it changes nothing (a summary already in progress stays bound);
//! - `<|summary_end|>` completes the bound block, which joins the queue of waiting blocks; then,
//!   with `compact_on_summary_end`, at most one eviction: the oldest waiting block, when more than
//!   `keep_last_k` wait (`-1`: never); with `keep_last_block_for_answer` the eviction is deferred
//!   to the next `<|block_start|>`;
//! - the evicted range is the content strictly between the block's delimiters, or the delimiters
//!   too with `mask_delimiters` or `restart_mode`; in `restart_mode` prefill restarts at the
//!   `<|summary_start|>` of the block whose summary just ended (of the flushed block for a
//!   deferred eviction), so those tokens are computed a second time;
//! - delimiters in the prompt are tracked (a complete block there joins the queue) but evict
//!   nothing while the prompt is read.
//!
//! The **tutorial** rewrite ([`tutorial_plan`]) is not the engine: it is the seed tutorial's
//! `compress_trace`, byte for byte (FORMAT.md section 7).
//!
//! Everything is linear in the row (a binary heap of bindable blocks makes the binding
//! `O(log blocks)`), and evictions are applied through a map of disjoint evicted intervals (block
//! ranges from a stack are nested or disjoint, so an eviction either falls inside an evicted
//! interval or swallows whole ones).

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::ops::Range;

use crate::parse::pairs;
use crate::scan::{Delim, Token};
use crate::text::strip_range;

/// Options of the inference engine's block masking (the overlay's `BlockMaskingConfig`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// `-1` keeps every block; `0` evicts each block at its own `<|summary_end|>`; `k > 0` keeps
    /// the last `k` complete blocks.
    pub keep_last_k: i64,
    /// `false`: only the content strictly between `<|block_start|>` and `<|block_end|>` is
    /// removed (Qwen3, OLMo 3); `true`: the two delimiters go too (Phi-4).
    pub mask_delimiters: bool,
    /// Only with `keep_last_k == 0`: a completed block is evicted when the next
    /// `<|block_start|>` arrives, so the last one stays visible while the answer is written.
    pub keep_last_block_for_answer: bool,
    /// The evicted range is always `<|block_start|>`..`<|block_end|>` inclusive, and prefill
    /// restarts at the memento's `<|summary_start|>` (its tokens are computed a second time).
    pub restart_mode: bool,
    /// When false, `<|summary_end|>` triggers nothing (only the deferred flush of
    /// `keep_last_block_for_answer` evicts).
    pub compact_on_summary_end: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            keep_last_k: 0,
            mask_delimiters: false,
            keep_last_block_for_answer: false,
            restart_mode: false,
            compact_on_summary_end: true,
        }
    }
}

impl EngineOptions {
    /// Whether evicting a block removes its two delimiters too.
    #[inline]
    pub fn evicts_delimiters(&self) -> bool {
        self.mask_delimiters || self.restart_mode
    }

    #[inline]
    fn defers(&self) -> bool {
        self.keep_last_block_for_answer && self.keep_last_k == 0
    }
}

/// A block as the engine tracks it: indexes into the row's delimiter list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanBlock {
    /// The block's `<|block_start|>`.
    pub open: usize,
    /// Its `<|block_end|>`, when it was closed.
    pub close: Option<usize>,
    /// The `<|summary_start|>` bound to it.
    pub summary_open: Option<usize>,
    /// The `<|summary_end|>` that completed it.
    pub summary_close: Option<usize>,
    /// Index into [`Plan::evictions`] when it was evicted.
    pub eviction: Option<usize>,
}

impl PlanBlock {
    /// Closed and its memento complete: the only blocks the engine ever evicts.
    #[inline]
    pub fn is_complete(&self) -> bool {
        self.close.is_some() && self.summary_close.is_some()
    }
}

/// Block `block` (index into [`Plan::blocks`]) leaves the cache right after token `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eviction {
    pub at: usize,
    pub block: usize,
    /// `restart_mode`: the `<|summary_start|>` token prefill restarts at (tokens from it through
    /// `at` are computed again).
    pub rewind_to: Option<usize>,
}

/// The engine's plan of one row, and its scratch (reused across rows).
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Every block in the order of its `<|block_start|>` (the overlay's block ids).
    pub blocks: Vec<PlanBlock>,
    /// Evictions in time order (increasing `at`; at most one per token).
    pub evictions: Vec<Eviction>,
    /// `restart_mode` with blocks completed in the prompt: the earliest `<|summary_start|>` among
    /// them, where prefill restarts before generation.
    pub prompt_rewind: Option<usize>,
    open: Vec<usize>,
    bindable: BinaryHeap<usize>,
    waiting: VecDeque<usize>,
}

/// Which of a row's delimiter occurrences the engine sees, and which of those were generated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tracking {
    /// Occurrences before this index are not tracked (`require_assistant_section`: they precede
    /// the assistant header).
    pub first_tracked: usize,
    /// Occurrences before this index are in the prompt: tracked, but they evict nothing.
    pub first_generated: usize,
}

impl Plan {
    fn evict_oldest(&mut self, at: usize, rewind_of: Option<usize>, opts: &EngineOptions) {
        let Some(b) = self.waiting.pop_front() else {
            return;
        };
        let rewind_to = if opts.restart_mode {
            // The overlay rewinds to the summary of the block whose summary just ended, or of the
            // flushed block for a deferred eviction.
            self.blocks[rewind_of.unwrap_or(b)].summary_open
        } else {
            None
        };
        self.blocks[b].eviction = Some(self.evictions.len());
        self.evictions.push(Eviction { at, block: b, rewind_to });
    }
}

/// Run the engine's rules over the delimiter occurrences of one row (the whole row generated).
pub fn engine(tokens: &[Token], opts: &EngineOptions, plan: &mut Plan) {
    engine_tracked(tokens, Tracking::default(), opts, plan)
}

/// [`engine`] over a stream whose first occurrences are untracked or in the prompt.
pub fn engine_tracked(tokens: &[Token], tracking: Tracking, opts: &EngineOptions, plan: &mut Plan) {
    plan.blocks.clear();
    plan.evictions.clear();
    plan.prompt_rewind = None;
    plan.open.clear();
    plan.bindable.clear();
    plan.waiting.clear();
    let k = opts.keep_last_k;
    let mut current: Option<usize> = None; // the block whose summary is in progress
    let prompt_rewind = |plan: &Plan| plan.waiting.iter().filter_map(|&b| plan.blocks[b].summary_open).min();
    for (i, t) in tokens.iter().enumerate().skip(tracking.first_tracked) {
        let generated = i >= tracking.first_generated;
        if opts.restart_mode && i == tracking.first_generated && i > 0 {
            // The overlay's `process_prompt_tokens`: prefill restarts at the earliest memento of
            // the blocks the prompt completed.
            plan.prompt_rewind = prompt_rewind(plan);
        }
        match t.delim {
            Delim::BlockStart => {
                if generated && opts.defers() && !plan.waiting.is_empty() {
                    plan.evict_oldest(i, None, opts);
                }
                plan.open.push(plan.blocks.len());
                plan.blocks.push(PlanBlock {
                    open: i,
                    close: None,
                    summary_open: None,
                    summary_close: None,
                    eviction: None,
                });
            }
            Delim::BlockEnd => {
                if let Some(b) = plan.open.pop() {
                    plan.blocks[b].close = Some(i);
                    plan.bindable.push(b);
                }
            }
            Delim::SummaryStart => {
                if let Some(b) = plan.bindable.pop() {
                    plan.blocks[b].summary_open = Some(i);
                    current = Some(b);
                }
            }
            Delim::SummaryEnd => {
                let Some(b) = current.take() else { continue };
                plan.blocks[b].summary_close = Some(i);
                plan.waiting.push_back(b);
                if generated && opts.compact_on_summary_end && !opts.defers() && k >= 0 && plan.waiting.len() as i64 > k
                {
                    plan.evict_oldest(i, Some(b), opts);
                }
            }
            Delim::ThinkStart | Delim::ThinkEnd => {}
        }
    }
    if opts.restart_mode && tracking.first_generated >= tokens.len() && tracking.first_generated > 0 {
        plan.prompt_rewind = prompt_rewind(plan);
    }
}

/// Byte range of the row that evicting block `b` removes.
#[inline]
pub fn evicted_bytes(tokens: &[Token], b: &PlanBlock, opts: &EngineOptions) -> Range<usize> {
    let close = b.close.expect("only closed blocks are evicted");
    let (open, close) = (&tokens[b.open], &tokens[close]);
    if opts.evicts_delimiters() {
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
pub struct Intervals(BTreeMap<usize, usize>);

impl Intervals {
    /// Add `r`, calling `gone` for each interval it swallows. Returns false when `r` already lies
    /// inside an interval (nothing new is removed).
    pub fn add(&mut self, r: Range<usize>, mut gone: impl FnMut(Range<usize>)) -> bool {
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

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The intervals in order.
    pub fn iter(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        self.0.iter().map(|(&s, &e)| s..e)
    }
}

/// Scratch for the rewrites and the replay, reused across rows.
#[derive(Default, Debug)]
pub struct Scratch {
    pub plan: Plan,
    evicted: Intervals,
}

/// The in-place rewrite of one row: every byte but the content of blocks evicted by the end of
/// generation. `pieces` is overwritten; the result is its concatenation.
pub fn inplace_plan(text: &[u8], tokens: &[Token], opts: &EngineOptions, sc: &mut Scratch, pieces: &mut Vec<Piece>) {
    pieces.clear();
    engine(tokens, opts, &mut sc.plan);
    sc.evicted.clear();
    for ev in &sc.plan.evictions {
        let r = evicted_bytes(tokens, &sc.plan.blocks[ev.block], opts);
        if !r.is_empty() {
            sc.evicted.add(r, |_| {});
        }
    }
    let mut pos = 0;
    for r in sc.evicted.iter() {
        if r.start > pos {
            pieces.push(Piece::Src(pos..r.start));
        }
        pos = r.end;
    }
    if pos < text.len() || text.is_empty() {
        pieces.push(Piece::Src(pos..text.len()));
    }
}

/// The tutorial's raw block and summary captures: what its two non-greedy regexes capture, not
/// stripped (the parser strips the same ranges for its fields).
#[derive(Clone, Debug, Default)]
pub struct TutorialItems {
    pub blocks: Vec<Range<usize>>,
    pub summaries: Vec<Range<usize>>,
}

impl TutorialItems {
    pub fn fill(&mut self, tokens: &[Token]) {
        self.blocks.clear();
        self.summaries.clear();
        pairs(tokens, Delim::BlockStart, Delim::BlockEnd, |r| self.blocks.push(r));
        pairs(tokens, Delim::SummaryStart, Delim::SummaryEnd, |r| self.summaries.push(r));
    }

    /// The same, each capture stripped as Python's `str.strip()` (the tutorial's parse).
    pub fn fill_stripped(&mut self, text: &[u8], tokens: &[Token]) {
        self.fill(tokens);
        for r in self.blocks.iter_mut().chain(self.summaries.iter_mut()) {
            *r = strip_range(text, r.clone());
        }
    }
}

/// The tutorial's `compress_trace(response, keep_last_k)`, byte for byte (FORMAT.md section 7):
/// the parts `<think>`, per block i of n either `<|block_start|>b<|block_end|>` and
/// `<|summary_start|>s<|summary_end|>` (when `i >= n - k`) or the summary part alone, `</think>`,
/// and the text after the last `</think>`, joined by `"\n"`; `b` and `s` are the regexes' raw
/// captures. Rows the tutorial leaves unchanged (no blocks, or different block and summary
/// counts) come back unchanged. Two documented choices where the tutorial is not well defined:
/// a row without `</think>` comes back unchanged (the tutorial appends the whole response a second
/// time), and `keep_last_k < 0` keeps every block (the tutorial's arithmetic would keep none).
pub fn tutorial_plan(
    text: &[u8],
    tokens: &[Token],
    items: &mut TutorialItems,
    keep_last_k: i64,
    pieces: &mut Vec<Piece>,
) {
    pieces.clear();
    items.fill(tokens);
    let n = items.blocks.len();
    let last_end = tokens.iter().rev().find(|t| t.delim == Delim::ThinkEnd);
    let (Some(last_end), true) = (last_end, n > 0 && n == items.summaries.len()) else {
        pieces.push(Piece::Src(0..text.len()));
        return;
    };
    pieces.push(Piece::Lit("<think>"));
    for (i, (b, s)) in items.blocks.iter().zip(&items.summaries).enumerate() {
        if keep_last_k < 0 || i as i64 >= n as i64 - keep_last_k {
            pieces.push(Piece::Lit("\n<|block_start|>"));
            pieces.push(Piece::Src(b.clone()));
            pieces.push(Piece::Lit("<|block_end|>"));
        }
        pieces.push(Piece::Lit("\n<|summary_start|>"));
        pieces.push(Piece::Src(s.clone()));
        pieces.push(Piece::Lit("<|summary_end|>"));
    }
    pieces.push(Piece::Lit("\n</think>\n"));
    pieces.push(Piece::Src(last_end.end()..text.len()));
}

/// Write the concatenation of `pieces` of `text` into `out`; returns the length written.
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
    /// What measuring a byte costs (sets the chunk size of a parallel replay).
    fn work(&self) -> crate::par::Work {
        crate::par::Work::Scan
    }
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
    #[cfg(target_arch = "x86_64")]
    {
        if s.len() >= 64 && std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is available (checked at runtime).
            return unsafe { count_code_points_avx2(s) };
        }
    }
    count_code_points_portable(s)
}

/// [`count_code_points`] compiled for AVX2 (the same loop, vectorized wider than the SSE2
/// baseline; the character replay counts every byte of every response with it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn count_code_points_avx2(s: &[u8]) -> u64 {
    count_code_points_portable(s)
}

#[inline(always)]
fn count_code_points_portable(s: &[u8]) -> u64 {
    s.iter().map(|&b| ((b as i8) >= -0x40) as u64).sum()
}

/// Per-row figures of a replay, in the replay's units. The prompt is in the cache the whole time
/// (it counts in every visible length) but not in `total_len`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReplayStats {
    /// Units in the prompt (the length given plus the prompt text's units).
    pub prompt_len: u64,
    /// Units generated (the whole response).
    pub total_len: u64,
    /// Largest visible length (prompt + generated - evicted), taken before each eviction.
    pub peak_len: u64,
    /// `kv_auc / total_len` (the visible length after each generated unit, averaged); the
    /// prompt length for an empty row.
    pub mean_len: f64,
    /// KV AUC: the sum over generated units of the visible length after the unit.
    pub kv_auc: u128,
    /// Visible length at the end of generation.
    pub final_len: u64,
    /// `restart_mode`: units computed a second time (prefill restarts at a memento).
    pub recomputed_len: u64,
    /// Blocks completed (closed, and a bound summary ended) and blocks evicted.
    pub complete_blocks: u32,
    pub evicted_blocks: u32,
}

impl ReplayStats {
    /// Peak of the uncompacted run: everything stays.
    pub fn full_peak(&self) -> u64 {
        self.prompt_len + self.total_len
    }

    /// Mean of the uncompacted run: `prompt + (n + 1) / 2`.
    pub fn full_mean(&self) -> f64 {
        if self.total_len == 0 {
            self.prompt_len as f64
        } else {
            self.prompt_len as f64 + (self.total_len as f64 + 1.0) / 2.0
        }
    }

    /// AUC of the uncompacted run: `sum_{j=1..n} (prompt + j)`.
    pub fn full_auc(&self) -> u128 {
        let (p, n) = (self.prompt_len as u128, self.total_len as u128);
        n * p + n * (n + 1) / 2
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

/// One row to replay: an optional prompt text and the generated text, with the delimiter
/// occurrences of both (`tokens[..tracking.first_generated]` are offsets into `prompt`, the rest
/// into `text`).
#[derive(Clone, Copy, Debug)]
pub struct Stream<'a> {
    pub prompt: &'a [u8],
    pub text: &'a [u8],
    pub tokens: &'a [Token],
    pub tracking: Tracking,
}

impl<'a> Stream<'a> {
    /// A response alone, every delimiter tracked and generated.
    pub fn response(text: &'a [u8], tokens: &'a [Token]) -> Self {
        Stream { prompt: b"", text, tokens, tracking: Tracking::default() }
    }
}

/// Replay one row: generation appends the segments between delimiters and the delimiters one by
/// one; the engine evicts right after the trigger token is appended. `prompt_len` units are in the
/// cache before the prompt text (if any). `curve`, when given, gets a point after every segment
/// and after every eviction.
#[allow(clippy::too_many_arguments)]
pub fn replay(
    row: Stream<'_>,
    opts: &EngineOptions,
    prompt_len: u64,
    units: &dyn Units,
    sc: &mut Scratch,
    prefix: &mut Vec<u64>,
    mut curve: Option<&mut Vec<CurvePoint>>,
) -> ReplayStats {
    let tokens = row.tokens;
    let np = row.tracking.first_generated.min(tokens.len());
    engine_tracked(tokens, row.tracking, opts, &mut sc.plan);
    // Units at segment boundaries: for a prompt token i (< np), 2i + 1 is before it and 2i + 2
    // after it; 2np + 1 is the end of the prompt; for a generated token i, 2i + 2 is before it
    // and 2i + 3 after it; 2n + 2 is the end of the row.
    let before = |i: usize| 2 * i + 1 + (i >= np) as usize;
    let after = |i: usize| 2 * i + 2 + (i >= np) as usize;
    prefix.clear();
    prefix.push(0);
    let mut acc = 0u64;
    let mut pos = 0usize;
    for (i, t) in tokens.iter().enumerate() {
        if i == np {
            acc += units.text(&row.prompt[pos..]);
            prefix.push(acc);
            pos = 0;
        }
        let src = if i < np { row.prompt } else { row.text };
        acc += units.text(&src[pos..t.start]);
        prefix.push(acc);
        acc += units.delim(t.delim);
        prefix.push(acc);
        pos = t.end();
    }
    if np == tokens.len() {
        acc += units.text(&row.prompt[pos..]);
        prefix.push(acc);
        pos = 0;
    }
    acc += units.text(&row.text[pos..]);
    prefix.push(acc);
    let start = 2 * np + 1;
    let prompt_units = prompt_len + prefix[start];

    let plan = &sc.plan;
    let mut st = ReplayStats { prompt_len: prompt_units, total_len: acc - prefix[start], ..Default::default() };
    st.complete_blocks = plan.blocks.iter().filter(|b| b.is_complete()).count() as u32;
    st.evicted_blocks = plan.evictions.len() as u32;
    if let Some(r) = plan.prompt_rewind {
        st.recomputed_len += prefix[start] - prefix[before(r)];
    }
    if let Some(c) = curve.as_deref_mut() {
        c.clear();
        c.push(CurvePoint { generated: 0, visible: prompt_units, eviction: false });
    }
    sc.evicted.clear();
    let mut visible = prompt_units;
    let mut peak = prompt_units;
    let mut area = 0u128;
    let mut next_ev = 0;
    for seg in start..prefix.len() - 1 {
        let n = prefix[seg + 1] - prefix[seg];
        // Each of the n units adds one: sum_{j=1..n} (visible + j).
        area += n as u128 * visible as u128 + (n as u128) * (n as u128 + 1) / 2;
        visible += n;
        peak = peak.max(visible);
        let generated = prefix[seg + 1] - prefix[start];
        if let Some(c) = curve.as_deref_mut() {
            if n > 0 {
                c.push(CurvePoint { generated, visible, eviction: false });
            }
        }
        while let Some(ev) = plan.evictions.get(next_ev).filter(|ev| after(ev.at) == seg + 1) {
            let b = &plan.blocks[ev.block];
            let close = b.close.expect("evicted blocks are closed");
            let r = if opts.evicts_delimiters() { before(b.open)..after(close) } else { after(b.open)..before(close) };
            let mut removed = prefix[r.end] - prefix[r.start];
            let fresh = sc.evicted.add(r, |g| removed -= prefix[g.end] - prefix[g.start]);
            if fresh && removed > 0 {
                visible -= removed;
                if let Some(c) = curve.as_deref_mut() {
                    c.push(CurvePoint { generated, visible, eviction: true });
                }
            }
            if let Some(s) = ev.rewind_to {
                st.recomputed_len += prefix[after(ev.at)] - prefix[before(s)];
            }
            next_ev += 1;
        }
    }
    st.peak_len = peak;
    st.final_len = visible;
    st.kv_auc = area;
    st.mean_len = if st.total_len == 0 { prompt_units as f64 } else { area as f64 / st.total_len as f64 };
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::scan;

    fn o(k: i64) -> EngineOptions {
        EngineOptions { keep_last_k: k, ..Default::default() }
    }

    fn inplace_with(s: &str, opts: &EngineOptions) -> String {
        let tokens = scan(s.as_bytes());
        let mut pieces = Vec::new();
        inplace_plan(s.as_bytes(), &tokens, opts, &mut Scratch::default(), &mut pieces);
        let mut out = vec![0u8; pieces.iter().map(Piece::len).sum()];
        write_pieces(s.as_bytes(), &pieces, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn inplace(s: &str, k: i64, mask: bool, kfa: bool) -> String {
        inplace_with(
            s,
            &EngineOptions {
                keep_last_k: k,
                mask_delimiters: mask,
                keep_last_block_for_answer: kfa,
                ..Default::default()
            },
        )
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
        assert_eq!(inplace(&t, -1, false, false), t);
        assert_eq!(
            inplace(&t, 0, false, false),
            format!("<think>{BS}{BE}{SS}a{SE}\n{BS}{BE}{SS}b{SE}\n{BS}{BE}{SS}c{SE}</think>ans")
        );
        assert_eq!(
            inplace(&t, 1, false, false),
            format!("<think>{BS}{BE}{SS}a{SE}\n{BS}{BE}{SS}b{SE}\n{}</think>ans", unit("C", "c"))
        );
        assert_eq!(inplace(&t, 0, true, false), format!("<think>{SS}a{SE}\n{SS}b{SE}\n{SS}c{SE}</think>ans"));
        assert_eq!(inplace(&t, 3, true, false), t);
        // keep_last_block_for_answer: C stays (no block start after it).
        assert_eq!(
            inplace(&t, 0, false, true),
            format!("<think>{BS}{BE}{SS}a{SE}\n{BS}{BE}{SS}b{SE}\n{}</think>ans", unit("C", "c"))
        );
        // restart_mode evicts the delimiters whatever mask_delimiters says.
        let restart = EngineOptions { restart_mode: true, ..o(0) };
        assert_eq!(inplace_with(&t, &restart), format!("<think>{SS}a{SE}\n{SS}b{SE}\n{SS}c{SE}</think>ans"));
        // compact_on_summary_end=false: nothing is evicted.
        assert_eq!(inplace_with(&t, &EngineOptions { compact_on_summary_end: false, ..o(0) }), t);
    }

    /// `inplace(input, k)` without masking is `expect`, for every `(input, k, expect)`.
    fn check_k(cases: &[(String, i64, String)]) {
        for (input, k, expect) in cases {
            assert_eq!(&inplace(input, *k, false, false), expect, "{input:?} k={k}");
        }
    }

    #[test]
    fn binding_follows_the_newest_block_start() {
        let example = format!("{BS}A{BE}{BS}B{BE}{SS}b{SE}{SS}a{SE}");
        check_k(&[
            // Nested: the summary binds to the most recently OPENED closed block (the inner one),
            // as the overlay's `start_summary` walks blocks from the newest start backwards.
            (
                format!("<think>{BS}out {BS}in{BE} more{BE}{SS}s{SE}</think>"),
                0,
                format!("<think>{BS}out {BS}{BE} more{BE}{SS}s{SE}</think>"),
            ),
            // Two summaries: the inner block first, then the outer; evicting the outer swallows it.
            (
                format!("<think>{BS}out {BS}in{BE} more{BE}{SS}s1{SE}{SS}s2{SE}</think>"),
                0,
                format!("<think>{BS}{BE}{SS}s1{SE}{SS}s2{SE}</think>"),
            ),
            // Summary inside the outer block binds to the inner one.
            (
                format!("<think>{BS}out {BS}in{BE}{SS}s1{SE} more{BE}</think>"),
                0,
                format!("<think>{BS}out {BS}{BE}{SS}s1{SE} more{BE}</think>"),
            ),
            // The issue's example: <bs>A<be><bs>B<be><ss>b<se><ss>a<se>: b binds B, a binds A; the
            // first summary end evicts B, the second A.
            (example.clone(), 0, format!("{BS}{BE}{BS}{BE}{SS}b{SE}{SS}a{SE}")),
            // With k = 1 the queue holds B then A: the second summary end evicts B only.
            (example, 1, format!("{BS}A{BE}{BS}{BE}{SS}b{SE}{SS}a{SE}")),
        ]);
    }

    #[test]
    fn malformed_rules() {
        check_k(&[
            // A block without summary is never evicted; the summary binds to the newest closed block.
            (
                format!("<think>{BS}A{BE}{BS}B{BE}{SS}b{SE}</think>"),
                0,
                format!("<think>{BS}A{BE}{BS}{BE}{SS}b{SE}</think>"),
            ),
            // Stray end ignored; unclosed block never evicted.
            (
                format!("<think>{BE}{BS}A{BE}{SS}a{SE}{BS}cut off"),
                0,
                format!("<think>{BE}{BS}{BE}{SS}a{SE}{BS}cut off"),
            ),
            // Stray summary (nothing closed) ignored.
            (
                format!("<think>{SS}x{SE}{BS}A{BE}{SS}a{SE}</think>"),
                0,
                format!("<think>{SS}x{SE}{BS}{BE}{SS}a{SE}</think>"),
            ),
            // A summary start with nothing to bind leaves the summary in progress bound: the end
            // completes A.
            (format!("{BS}A{BE}{SS}a{SS}again{SE}"), 0, format!("{BS}{BE}{SS}a{SS}again{SE}")),
            // A second summary start rebinds to the next bindable block; the first one never
            // completes.
            (format!("{BS}A{BE}{BS}B{BE}{SS}b{SS}a{SE}{SE}"), 0, format!("{BS}{BE}{BS}B{BE}{SS}b{SS}a{SE}{SE}")),
            (String::new(), 0, String::new()),
        ]);
    }

    #[test]
    fn deferred_eviction_is_a_queue() {
        let kfa = EngineOptions { keep_last_block_for_answer: true, ..o(0) };
        // Two blocks complete without a block start between: the next block start flushes only
        // the oldest; the other stays.
        let t = format!("{BS}A{BE}{BS}B{BE}{SS}b{SE}{SS}a{SE}{BS}C{BE}{SS}c{SE}");
        assert_eq!(inplace_with(&t, &kfa), format!("{BS}A{BE}{BS}{BE}{SS}b{SE}{SS}a{SE}{BS}C{BE}{SS}c{SE}"));
        // The flush happens even with compact_on_summary_end=false (the overlay's processor).
        let t = format!("{}{}", unit("A", "a"), unit("B", "b"));
        assert_eq!(
            inplace_with(&t, &EngineOptions { compact_on_summary_end: false, ..kfa }),
            format!("{BS}{BE}{SS}a{SE}{}", unit("B", "b"))
        );
        let tokens = scan(t.as_bytes());
        let mut plan = Plan::default();
        engine(&tokens, &kfa, &mut plan);
        assert_eq!(plan.evictions, vec![Eviction { at: 4, block: 0, rewind_to: None }]);
        engine(&tokens, &EngineOptions { restart_mode: true, ..kfa }, &mut plan);
        // Restart: the flushed block's memento is computed again.
        assert_eq!(plan.evictions, vec![Eviction { at: 4, block: 0, rewind_to: Some(2) }]);
    }

    #[test]
    fn prompt_blocks_are_tracked_and_evicted_later() {
        let prompt = unit("P", "p");
        let resp = unit("R", "r");
        let (pt, rt) = (scan(prompt.as_bytes()), scan(resp.as_bytes()));
        let tokens: Vec<Token> = pt.iter().chain(rt.iter()).copied().collect();
        let row = Stream {
            prompt: prompt.as_bytes(),
            text: resp.as_bytes(),
            tokens: &tokens,
            tracking: Tracking { first_tracked: 0, first_generated: 4 },
        };
        let mut sc = Scratch::default();
        let st = replay(row, &o(0), 0, &Chars, &mut sc, &mut Vec::new(), None);
        // The prompt's block waits in the queue; the response's summary end evicts the oldest
        // (the prompt's block), one eviction per summary end.
        assert_eq!(sc.plan.evictions, vec![Eviction { at: 7, block: 0, rewind_to: None }]);
        assert_eq!(st.prompt_len, prompt.len() as u64);
        assert_eq!(st.total_len, resp.len() as u64);
        assert_eq!(st.final_len, (prompt.len() + resp.len() - 1) as u64);
        // Untracked prompt (before the assistant header): only the response's block goes.
        let row = Stream { tracking: Tracking { first_tracked: 4, first_generated: 4 }, ..row };
        replay(row, &o(0), 0, &Chars, &mut sc, &mut Vec::new(), None);
        assert_eq!(sc.plan.evictions, vec![Eviction { at: 7, block: 0, rewind_to: None }]);
        assert_eq!(sc.plan.blocks[0].open, 4);
        // Restart mode: the prompt's completed block schedules a rewind to its memento.
        let row = Stream { tracking: Tracking { first_tracked: 0, first_generated: 4 }, ..row };
        let st = replay(row, &EngineOptions { restart_mode: true, ..o(0) }, 0, &Chars, &mut sc, &mut Vec::new(), None);
        assert_eq!(sc.plan.prompt_rewind, Some(2));
        // Recomputed: from the prompt's summary start to the end of the prompt, then from the
        // response's summary start through its end.
        let p_ss = prompt.find(SS).unwrap();
        let r_ss = resp.find(SS).unwrap();
        assert_eq!(st.recomputed_len, (prompt.len() - p_ss + resp.len() - r_ss) as u64);
    }

    #[test]
    fn tutorial_shape() {
        // The contract's example (FORMAT.md section 7), k = 0.
        let t = format!("<think>\n{BS}A{BE}\n{SS}a{SE}\n</think>\nX");
        assert_eq!(tutorial(&t, 0), format!("<think>\n{SS}a{SE}\n</think>\n\nX"));
        let t = format!("<think>\n{}\n{}\n</think>\n\nanswer", unit(" A ", " a "), unit("B", "b"));
        assert_eq!(tutorial(&t, 1), format!("<think>\n{SS} a {SE}\n{BS}B{BE}\n{SS}b{SE}\n</think>\n\n\nanswer"));
        assert_eq!(
            tutorial(&t, 5),
            format!("<think>\n{BS} A {BE}\n{SS} a {SE}\n{BS}B{BE}\n{SS}b{SE}\n</think>\n\n\nanswer")
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
        let row = Stream::response(t.as_bytes(), &tokens);
        let st = replay(row, &opts, 10, &Chars, &mut Scratch::default(), &mut Vec::new(), Some(&mut curve));
        let total = t.chars().count() as u64;
        assert_eq!(st.total_len, total);
        assert_eq!(st.prompt_len, 10);
        assert_eq!(st.peak_len, 10 + total - 4);
        assert!(curve.iter().any(|p| !p.eviction && p.visible == 10 + 7 + 15 + 4 + 13 + 17 + 1 + 15));
        assert_eq!(st.final_len, 10 + total - 4);
        assert_eq!(st.complete_blocks, 1);
        assert_eq!(st.evicted_blocks, 1);
        // Mean and AUC: per unit visible lengths, computed naively.
        let mut v = 10u64;
        let mut area = 0u64;
        for (i, _) in t.char_indices() {
            v += 1;
            area += v;
            if i + 1 == t.find(SE).unwrap() + SE.len() {
                v -= 4;
            }
        }
        assert_eq!(st.kv_auc, area as u128);
        assert!((st.mean_len - area as f64 / total as f64).abs() < 1e-9);
        assert!(curve.iter().any(|p| p.eviction && p.visible == 82 - 4));
        let st = replay(row, &o(-1), 10, &Chars, &mut Scratch::default(), &mut Vec::new(), None);
        assert_eq!(st.peak_len, 10 + total);
        assert_eq!(st.kv_auc, st.full_auc());
        assert_eq!(st.evicted_blocks, 0);
        // Restart mode: the memento (summary start through summary end) is computed again.
        let st = replay(
            row,
            &EngineOptions { restart_mode: true, ..opts },
            10,
            &Chars,
            &mut Scratch::default(),
            &mut Vec::new(),
            None,
        );
        assert_eq!(st.recomputed_len, (SS.len() + 1 + SE.len()) as u64);
        assert_eq!(st.final_len, 10 + total - 4 - (BS.len() + BE.len()) as u64);
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
