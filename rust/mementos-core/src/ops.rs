//! Column operations built on the compaction engine: `compress` (one exactly sized output
//! buffer) and `replay` (per-row figures), over any supported Arrow string layout.

use std::collections::HashMap;
use std::mem::take;
use std::sync::Arc;

use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, Int64Array, LargeStringArray, RecordBatch};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Schema};
use rayon::prelude::*;

use crate::compact::{
    engine, evicted_bytes, inplace_plan, replay, tutorial_plan, write_pieces, EngineOptions, Piece, Plan, ReplayStats,
    Scratch, Stream, Tracking, TutorialItems, Units,
};
use crate::error::CoreError;
use crate::output::{self, Column, PerRow};
use crate::par::{self, map_chunks, Work};
use crate::rows::{column_rows, Rows};
use crate::scan::{scan_into, Token};

/// Which rewrite [`compress_arrays`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// The tutorial's `compress_trace` (rebuilt from stripped blocks and summaries).
    Tutorial,
    /// The inference engine's in-place eviction (the text left in the KV cache).
    Inplace,
}

impl std::str::FromStr for Style {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        crate::error::parse_choice("style", s, &[("tutorial", Style::Tutorial), ("inplace", Style::Inplace)])
    }
}

/// Options of [`compress_arrays`].
#[derive(Clone, Copy, Debug)]
pub struct CompressOptions {
    pub style: Style,
    pub engine: EngineOptions,
    pub threads: Option<usize>,
}

/// Check option combinations shared by compress and replay.
pub fn check_engine_options(o: &EngineOptions) -> Result<(), CoreError> {
    if o.keep_last_k < -1 {
        return Err(CoreError::InvalidArgument(format!(
            "keep_last_k must be -1 (keep all) or >= 0, got {}",
            o.keep_last_k
        )));
    }
    if o.keep_last_block_for_answer && o.keep_last_k != 0 {
        return Err(CoreError::InvalidArgument("keep_last_block_for_answer applies only with keep_last_k=0".into()));
    }
    Ok(())
}

/// The rewrite plan of a run of rows: pieces, and for each row its end in `pieces` and its
/// output length (`None` for a null row).
struct RewritePlan {
    pieces: Vec<Piece>,
    row_end: Vec<usize>,
    lens: Vec<Option<usize>>,
}

fn plan_rows(rows: &dyn Rows, range: std::ops::Range<usize>, opts: &CompressOptions) -> RewritePlan {
    let mut plan = RewritePlan {
        pieces: Vec::new(),
        row_end: Vec::with_capacity(range.len()),
        lens: Vec::with_capacity(range.len()),
    };
    let mut tokens: Vec<Token> = Vec::new();
    let mut items = TutorialItems::default();
    let mut sc = Scratch::default();
    let mut row_pieces = Vec::new();
    for i in range {
        if !rows.is_valid(i) {
            plan.row_end.push(plan.pieces.len());
            plan.lens.push(None);
            continue;
        }
        let text = rows.bytes(i);
        scan_into(text, &mut tokens);
        match opts.style {
            Style::Tutorial => {
                tutorial_plan(text, &tokens, &mut items, opts.engine.keep_last_k, &mut row_pieces);
            }
            Style::Inplace => {
                inplace_plan(text, &tokens, &opts.engine, &mut sc, &mut row_pieces);
            }
        }
        plan.lens.push(Some(row_pieces.iter().map(Piece::len).sum()));
        plan.pieces.append(&mut row_pieces);
        plan.row_end.push(plan.pieces.len());
    }
    plan
}

/// Rewrite every row. The output is a `LargeUtf8` array written into one exactly sized values
/// buffer (plans first, then a parallel fill of disjoint slices). Null rows stay null.
pub fn compress_arrays(arrays: &[&dyn Array], opts: &CompressOptions) -> Result<LargeStringArray, CoreError> {
    check_engine_options(&opts.engine)?;
    let rows = column_rows(arrays)?;
    let rows = rows.as_ref();
    let plans = map_chunks(rows, opts.threads, Work::Scan, |r| {
        let start = r.start;
        (start, plan_rows(rows, r, opts))
    })?;
    let mut offsets: Vec<i64> = Vec::with_capacity(rows.len() + 1);
    offsets.push(0);
    let mut valid = Vec::with_capacity(rows.len());
    let mut chunk_bytes = Vec::with_capacity(plans.len());
    let mut total = 0usize;
    for (_, p) in &plans {
        let before = total;
        for l in &p.lens {
            total += l.unwrap_or(0);
            offsets.push(total as i64);
            valid.push(l.is_some());
        }
        chunk_bytes.push(total - before);
    }
    let mut values = vec![0u8; total];
    let mut slices: Vec<&mut [u8]> = Vec::with_capacity(plans.len());
    let mut rest: &mut [u8] = &mut values;
    for &n in &chunk_bytes {
        let (a, b) = rest.split_at_mut(n);
        slices.push(a);
        rest = b;
    }
    let fill = |((start, plan), out): (&(usize, RewritePlan), &mut [u8])| {
        let mut pos = 0;
        let mut from = 0;
        for (j, &end) in plan.row_end.iter().enumerate() {
            if plan.lens[j].is_some() {
                pos += write_pieces(rows.bytes(start + j), &plan.pieces[from..end], &mut out[pos..]);
            }
            from = end;
        }
    };
    if plans.len() == 1 {
        plans.iter().zip(slices).for_each(fill);
    } else {
        par::install(opts.threads, || plans.par_iter().zip(slices.into_par_iter()).for_each(fill))?;
    }
    let nulls = if valid.iter().all(|&v| v) { None } else { Some(NullBuffer::from(valid)) };
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    // SAFETY: every row is a concatenation of whole UTF-8 sequences: sub-slices of a valid row cut
    // at delimiter boundaries (ASCII) or at the ends of a `str.strip()` (whole characters), and
    // ASCII literals; offsets are monotonic and end at `values.len()`.
    Ok(unsafe { LargeStringArray::new_unchecked(offsets, Buffer::from_vec(values), nulls) })
}

/// Prompt length of each row, in the replay's units.
#[derive(Clone, Copy, Debug)]
pub enum PromptLen<'a> {
    Same(u64),
    PerRow(&'a [u64]),
}

impl PromptLen<'_> {
    #[inline]
    fn get(&self, i: usize) -> u64 {
        match self {
            PromptLen::Same(n) => *n,
            PromptLen::PerRow(v) => v[i],
        }
    }
}

/// The prompt of each row as text: its delimiters are tracked as the overlay's
/// `process_prompt_tokens` does (a complete block there joins the queue; nothing is evicted while
/// the prompt is read).
#[derive(Clone, Copy)]
pub struct PromptText<'a> {
    pub rows: &'a dyn Rows,
    /// The overlay's `require_assistant_section`: delimiters count only after the first
    /// `<|im_start|>assistant` (optional whitespace between). A prompt without that header is
    /// taken as not rendered yet: the header is assumed at its end, so none of its delimiters count.
    pub require_assistant_section: bool,
}

const IM_START: &[u8] = b"<|im_start|>";

/// End of the first `<|im_start|>` + optional ASCII whitespace + `assistant` in `text`.
pub fn assistant_header_end(text: &[u8]) -> Option<usize> {
    let finder = memchr::memmem::Finder::new(IM_START);
    for at in finder.find_iter(text) {
        let mut j = at + IM_START.len();
        while j < text.len() && text[j].is_ascii_whitespace() {
            j += 1;
        }
        if text[j..].starts_with(b"assistant") {
            return Some(j + b"assistant".len());
        }
    }
    None
}

/// The replay's figures saturate at `i64::MAX`.
fn sat(x: u128) -> i64 {
    x.min(i64::MAX as u128) as i64
}

/// `num / den`, null when `den` is 0.
fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

/// Every output column of [`replay_arrays`], in order. `peak_ratio` and `mean_ratio` are
/// compacted / uncompacted (null when the uncompacted figure is 0).
const REPLAY: [Column<PerRow<ReplayStats>>; 14] = [
    Column::new("prompt_len", || DataType::Int64, |r| r.values::<Int64Type>(|s| s.prompt_len as i64)),
    Column::new("total_len", || DataType::Int64, |r| r.values::<Int64Type>(|s| s.total_len as i64)),
    Column::new("peak_len", || DataType::Int64, |r| r.values::<Int64Type>(|s| s.peak_len as i64)),
    Column::new("mean_len", || DataType::Float64, |r| r.values::<Float64Type>(|s| s.mean_len)),
    Column::new("final_len", || DataType::Int64, |r| r.values::<Int64Type>(|s| s.final_len as i64)),
    Column::new("kv_auc", || DataType::Int64, |r| r.values::<Int64Type>(|s| sat(s.kv_auc))),
    Column::new("full_peak_len", || DataType::Int64, |r| r.values::<Int64Type>(|s| s.full_peak() as i64)),
    Column::new("full_mean_len", || DataType::Float64, |r| r.values::<Float64Type>(|s| s.full_mean())),
    Column::new("full_kv_auc", || DataType::Int64, |r| r.values::<Int64Type>(|s| sat(s.full_auc()))),
    Column::new(
        "peak_ratio",
        || DataType::Float64,
        |r| r.options::<Float64Type>(|s| ratio(s.peak_len as f64, s.full_peak() as f64)),
    ),
    Column::new("mean_ratio", || DataType::Float64, |r| r.options::<Float64Type>(|s| ratio(s.mean_len, s.full_mean()))),
    Column::new("recomputed_len", || DataType::Int64, |r| r.values::<Int64Type>(|s| s.recomputed_len as i64)),
    Column::new("complete_blocks", || DataType::Int32, |r| r.values::<Int32Type>(|s| s.complete_blocks as i32)),
    Column::new("evicted_blocks", || DataType::Int32, |r| r.values::<Int32Type>(|s| s.evicted_blocks as i32)),
];

/// Output schema of [`replay_arrays`].
pub fn replay_schema() -> Schema {
    output::schema(&REPLAY, false)
}

#[allow(clippy::too_many_arguments)] // the per-chunk scratch buffers are separate so one row borrows them apart
fn replay_row(
    rows: &dyn Rows,
    prompt_text: Option<&PromptText<'_>>,
    i: usize,
    opts: &EngineOptions,
    prompt_len: u64,
    units: &dyn Units,
    tokens: &mut Vec<Token>,
    resp_tokens: &mut Vec<Token>,
    sc: &mut Scratch,
    prefix: &mut Vec<u64>,
) -> ReplayStats {
    let text = rows.bytes(i);
    let Some(p) = prompt_text.filter(|p| p.rows.is_valid(i)) else {
        scan_into(text, tokens);
        return replay(Stream::response(text, tokens), opts, prompt_len, units, sc, prefix, None);
    };
    let prompt = p.rows.bytes(i);
    scan_into(prompt, tokens);
    let np = tokens.len();
    let first_tracked = if p.require_assistant_section {
        match assistant_header_end(prompt) {
            Some(end) => tokens.iter().take_while(|t| t.start < end).count(),
            None => np,
        }
    } else {
        0
    };
    scan_into(text, resp_tokens);
    tokens.extend_from_slice(resp_tokens);
    let row = Stream { prompt, text, tokens, tracking: Tracking { first_tracked, first_generated: np } };
    replay(row, opts, prompt_len, units, sc, prefix, None)
}

/// Replay every row under the engine's rules; one row of figures per input row (null rows null).
/// `peak_ratio` and `mean_ratio` are compacted / uncompacted (null when the uncompacted figure is 0).
pub fn replay_arrays(
    arrays: &[&dyn Array],
    opts: &EngineOptions,
    prompt: PromptLen<'_>,
    prompt_text: Option<(&[&dyn Array], bool)>,
    units: &dyn Units,
    threads: Option<usize>,
) -> Result<RecordBatch, CoreError> {
    check_engine_options(opts)?;
    let rows = column_rows(arrays)?;
    let rows = rows.as_ref();
    if let PromptLen::PerRow(v) = prompt {
        if v.len() != rows.len() {
            return Err(CoreError::InvalidArgument(format!(
                "prompt_len has {} values for {} rows",
                v.len(),
                rows.len()
            )));
        }
    }
    let prompt_rows = match prompt_text {
        Some((a, _)) => Some(column_rows(a)?),
        None => None,
    };
    let prompt_text = match (&prompt_rows, prompt_text) {
        (Some(r), Some((_, require))) => {
            if r.len() != rows.len() {
                return Err(CoreError::InvalidArgument(format!(
                    "prompt has {} rows for {} responses",
                    r.len(),
                    rows.len()
                )));
            }
            Some(PromptText { rows: r.as_ref(), require_assistant_section: require })
        }
        _ => None,
    };
    let parts = map_chunks(rows, threads, units.work(), |r| {
        let (mut tokens, mut resp_tokens) = (Vec::new(), Vec::new());
        let mut sc = Scratch::default();
        let mut prefix = Vec::new();
        r.map(|i| {
            rows.is_valid(i).then(|| {
                replay_row(
                    rows,
                    prompt_text.as_ref(),
                    i,
                    opts,
                    prompt.get(i),
                    units,
                    &mut tokens,
                    &mut resp_tokens,
                    &mut sc,
                    &mut prefix,
                )
            })
        })
        .collect::<Vec<Option<ReplayStats>>>()
    })?;
    let mut all = PerRow::new(parts.into_iter().flatten().collect());
    Ok(output::record_batch(&REPLAY, false, &mut all, HashMap::new())?)
}

/// Per-row block counts of the eviction plan.
struct PlanCounts {
    n_blocks: i32,
    n_complete: i32,
    n_evicted: i32,
}

crate::accumulators! {
    /// The eviction plans of a run of rows: counts per row, one value per tracked block in each
    /// list (a byte offset, `None` for "none").
    struct PlanParts {
        rows: Option<PlanCounts>,
        block_start: Option<i64>,
        block_end: Option<i64>,
        summary_start: Option<i64>,
        summary_end: Option<i64>,
        trigger: Option<i64>,
        evict_start: Option<i64>,
        evict_end: Option<i64>,
        rewind_to: Option<i64>,
    }
}

struct Planned {
    rows: PerRow<PlanCounts>,
    lists: PlanParts,
}

impl PerRow<PlanCounts> {
    /// A list column of offsets, one element per tracked block.
    fn offsets(&self, values: Vec<Option<i64>>) -> ArrayRef {
        let lengths = self.rows.iter().map(|r| r.as_ref().map_or(0, |c| c.n_blocks as usize));
        output::list_array(Arc::new(Int64Array::from(values)), true, lengths, self.nulls.clone())
    }
}

fn offsets_type() -> DataType {
    output::list_type(DataType::Int64, true)
}

/// Every output column of [`plan_arrays`], in order.
const PLAN: [Column<Planned>; 11] = [
    Column::new("n_blocks", || DataType::Int32, |p| p.rows.values::<Int32Type>(|c| c.n_blocks)),
    Column::new("n_complete", || DataType::Int32, |p| p.rows.values::<Int32Type>(|c| c.n_complete)),
    Column::new("n_evicted", || DataType::Int32, |p| p.rows.values::<Int32Type>(|c| c.n_evicted)),
    Column::new("block_start", offsets_type, |p| p.rows.offsets(take(&mut p.lists.block_start))),
    Column::new("block_end", offsets_type, |p| p.rows.offsets(take(&mut p.lists.block_end))),
    Column::new("summary_start", offsets_type, |p| p.rows.offsets(take(&mut p.lists.summary_start))),
    Column::new("summary_end", offsets_type, |p| p.rows.offsets(take(&mut p.lists.summary_end))),
    Column::new("trigger", offsets_type, |p| p.rows.offsets(take(&mut p.lists.trigger))),
    Column::new("evict_start", offsets_type, |p| p.rows.offsets(take(&mut p.lists.evict_start))),
    Column::new("evict_end", offsets_type, |p| p.rows.offsets(take(&mut p.lists.evict_end))),
    Column::new("rewind_to", offsets_type, |p| p.rows.offsets(take(&mut p.lists.rewind_to))),
];

/// Output schema of [`plan_arrays`]: one row per input row, one list element per block the
/// engine tracks (in the order of its `<|block_start|>`). Offsets are UTF-8 byte offsets into the
/// row; a null element means "none" (never closed, no memento, never evicted).
pub fn plan_schema() -> Schema {
    output::schema(&PLAN, false)
}

/// The engine's eviction plan of every row, as Arrow (see [`plan_schema`] and docs/COMPACTION.md):
/// `block_start` (offset of the block's `<|block_start|>`), `block_end` (end of its
/// `<|block_end|>`), `summary_start` / `summary_end` (its memento's delimiters: start of the
/// first, end of the second), `trigger` (start of the token after which the block leaves the
/// cache), `evict_start` / `evict_end` (the byte range removed), `rewind_to` (`restart_mode`: start
/// of the `<|summary_start|>` prefill restarts at).
pub fn plan_arrays(
    arrays: &[&dyn Array],
    opts: &EngineOptions,
    threads: Option<usize>,
) -> Result<RecordBatch, CoreError> {
    check_engine_options(opts)?;
    let rows = column_rows(arrays)?;
    let rows = rows.as_ref();
    let parts = map_chunks(rows, threads, Work::Scan, |r| {
        let mut part = PlanParts::default();
        let mut tokens = Vec::new();
        let mut plan = Plan::default();
        for i in r {
            if !rows.is_valid(i) {
                part.rows.push(None);
                continue;
            }
            scan_into(rows.bytes(i), &mut tokens);
            engine(&tokens, opts, &mut plan);
            let n_complete = plan.blocks.iter().filter(|b| b.is_complete()).count();
            let (n_blocks, n_evicted) = (plan.blocks.len() as i32, plan.evictions.len() as i32);
            part.rows.push(Some(PlanCounts { n_blocks, n_complete: n_complete as i32, n_evicted }));
            let at = |offset: Option<usize>| offset.map(|o| o as i64);
            for b in &plan.blocks {
                let ev = b.eviction.map(|e| &plan.evictions[e]);
                let range = ev.map(|_| evicted_bytes(&tokens, b, opts));
                part.block_start.push(at(Some(tokens[b.open].start)));
                part.block_end.push(at(b.close.map(|c| tokens[c].end())));
                part.summary_start.push(at(b.summary_open.map(|s| tokens[s].start)));
                part.summary_end.push(at(b.summary_close.map(|s| tokens[s].end())));
                part.trigger.push(at(ev.map(|e| tokens[e.at].start)));
                part.evict_start.push(at(range.as_ref().map(|r| r.start)));
                part.evict_end.push(at(range.as_ref().map(|r| r.end)));
                part.rewind_to.push(at(ev.and_then(|e| e.rewind_to).map(|s| tokens[s].start)));
            }
        }
        part
    })?;
    let mut lists = PlanParts::concat(parts);
    let rows = PerRow::new(take(&mut lists.rows));
    Ok(output::record_batch(&PLAN, false, &mut Planned { rows, lists }, HashMap::new())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compact::Chars;
    use arrow_array::{StringArray, StringViewArray};

    fn rows(n: usize) -> Vec<Option<String>> {
        (0..n)
            .map(|i| {
                if i % 11 == 5 {
                    return None;
                }
                let mut s = String::from("<think>\n");
                for b in 0..(i % 7) {
                    s += &format!(
                        "<|block_start|> block {b} of {i} {} <|block_end|>\n<|summary_start|> s{b} <|summary_end|>\n",
                        "w ".repeat(i % 300)
                    );
                }
                s += "</think>\nanswer";
                Some(s)
            })
            .collect()
    }

    #[test]
    fn compress_parallel_equals_sequential_and_layouts() {
        let data = rows(3000);
        let a = StringArray::from(data.clone());
        let v = StringViewArray::from(data.iter().map(|r| r.as_deref()).collect::<Vec<_>>());
        for style in [Style::Tutorial, Style::Inplace] {
            let o = |threads| CompressOptions {
                style,
                engine: EngineOptions { keep_last_k: 1, ..Default::default() },
                threads,
            };
            let one = compress_arrays(&[&a], &o(Some(1))).unwrap();
            let two = compress_arrays(&[&a], &o(Some(2))).unwrap();
            let chunks = compress_arrays(&[&a.slice(0, 1000), &v.slice(1000, 2000)], &o(Some(2))).unwrap();
            assert_eq!(one, two);
            assert_eq!(one, chunks);
            assert!(one.is_null(5));
            assert_eq!(one.value_offsets().last().copied().unwrap() as usize, one.values().len());
        }
    }

    #[test]
    fn replay_columns() {
        let data = rows(200);
        let a = StringArray::from(data);
        let b = replay_arrays(&[&a], &EngineOptions::default(), PromptLen::Same(5), None, &Chars, Some(1)).unwrap();
        assert_eq!(b.num_rows(), 200);
        assert!(b.column_by_name("total_len").unwrap().is_null(5));
        let keep_all = EngineOptions { keep_last_k: -1, ..Default::default() };
        let full = replay_arrays(&[&a], &keep_all, PromptLen::Same(5), None, &Chars, Some(1)).unwrap();
        assert_eq!(full.column_by_name("peak_len"), full.column_by_name("full_peak_len"));
        assert_eq!(full.column_by_name("kv_auc"), full.column_by_name("full_kv_auc"));
        let bad = EngineOptions { keep_last_k: 2, keep_last_block_for_answer: true, ..Default::default() };
        assert!(replay_arrays(&[&a], &bad, PromptLen::Same(0), None, &Chars, None).is_err());
    }
}
