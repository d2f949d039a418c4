//! Column operations built on the compaction engine: `compress` (one exactly sized output
//! buffer) and `replay` (per-row figures), over any supported Arrow string layout.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, Int32Array, Int64Array, LargeStringArray, RecordBatch};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema};
use rayon::prelude::*;

use crate::batch::{column_rows, Rows};
use crate::compact::{inplace_plan, replay, tutorial_plan, write_pieces, EngineOptions, Piece, ReplayStats, Scratch, TutorialItems, Units};
use crate::error::CoreError;
use crate::par::{map_chunks, with_threads};
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
        match s {
            "tutorial" => Ok(Style::Tutorial),
            "inplace" => Ok(Style::Inplace),
            other => Err(CoreError::InvalidArgument(format!("style must be 'tutorial' or 'inplace', got {other:?}"))),
        }
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
        return Err(CoreError::InvalidArgument(format!("keep_last_k must be -1 (keep all) or >= 0, got {}", o.keep_last_k)));
    }
    if o.keep_last_block_for_answer && o.keep_last_k != 0 {
        return Err(CoreError::InvalidArgument("keep_last_block_for_answer applies only with keep_last_k=0".into()));
    }
    Ok(())
}

/// The rewrite plan of a run of rows: pieces, and for each row its end in `pieces` and its
/// output length (`None` for a null row).
struct Plan {
    pieces: Vec<Piece>,
    row_end: Vec<usize>,
    lens: Vec<Option<usize>>,
}

fn plan_rows(rows: &dyn Rows, range: std::ops::Range<usize>, opts: &CompressOptions) -> Plan {
    let mut plan = Plan { pieces: Vec::new(), row_end: Vec::with_capacity(range.len()), lens: Vec::with_capacity(range.len()) };
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
    let plans = map_chunks(rows, opts.threads, |r| {
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
    let fill = |((start, plan), out): (&(usize, Plan), &mut [u8])| {
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
        with_threads(opts.threads, || plans.par_iter().zip(slices.into_par_iter()).for_each(fill))?;
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

/// Output schema of [`replay_arrays`].
pub fn replay_schema() -> Schema {
    Schema::new(vec![
        Field::new("total_len", DataType::Int64, true),
        Field::new("peak_len", DataType::Int64, true),
        Field::new("mean_len", DataType::Float64, true),
        Field::new("final_len", DataType::Int64, true),
        Field::new("full_peak_len", DataType::Int64, true),
        Field::new("full_mean_len", DataType::Float64, true),
        Field::new("peak_ratio", DataType::Float64, true),
        Field::new("mean_ratio", DataType::Float64, true),
        Field::new("complete_blocks", DataType::Int32, true),
        Field::new("evicted_blocks", DataType::Int32, true),
    ])
}

/// Replay every row under the engine's rules; one row of figures per input row (null rows null).
/// `peak_ratio` and `mean_ratio` are compacted / uncompacted (null when the uncompacted figure is 0).
pub fn replay_arrays(
    arrays: &[&dyn Array],
    opts: &EngineOptions,
    prompt: PromptLen<'_>,
    units: &dyn Units,
    threads: Option<usize>,
) -> Result<RecordBatch, CoreError> {
    check_engine_options(opts)?;
    let rows = column_rows(arrays)?;
    let rows = rows.as_ref();
    if let PromptLen::PerRow(v) = prompt {
        if v.len() != rows.len() {
            return Err(CoreError::InvalidArgument(format!("prompt_len has {} values for {} rows", v.len(), rows.len())));
        }
    }
    let parts = map_chunks(rows, threads, |r| {
        let mut tokens = Vec::new();
        let mut sc = Scratch::default();
        let mut prefix = Vec::new();
        r.map(|i| {
            rows.is_valid(i).then(|| {
                let text = rows.bytes(i);
                scan_into(text, &mut tokens);
                (replay(text, &tokens, opts, prompt.get(i), units, &mut sc, &mut prefix, None), prompt.get(i))
            })
        })
        .collect::<Vec<Option<(ReplayStats, u64)>>>()
    })?;
    let all: Vec<Option<(ReplayStats, u64)>> = parts.into_iter().flatten().collect();
    let valid: Vec<bool> = all.iter().map(Option::is_some).collect();
    let nulls = if valid.iter().all(|&v| v) { None } else { Some(NullBuffer::from(valid)) };
    let i64s = |f: &dyn Fn(&ReplayStats, u64) -> u64| -> ArrayRef {
        Arc::new(Int64Array::new(all.iter().map(|o| o.map_or(0, |(s, p)| f(&s, p) as i64)).collect(), nulls.clone()))
    };
    let f64s = |f: &dyn Fn(&ReplayStats, u64) -> f64| -> ArrayRef {
        Arc::new(Float64Array::new(all.iter().map(|o| o.map_or(0.0, |(s, p)| f(&s, p))).collect(), nulls.clone()))
    };
    let ratio = |num: f64, den: f64| if den > 0.0 { Some(num / den) } else { None };
    let ratios = |f: &dyn Fn(&ReplayStats, u64) -> Option<f64>| -> ArrayRef {
        Arc::new(Float64Array::from(all.iter().map(|o| o.and_then(|(s, p)| f(&s, p))).collect::<Vec<_>>()))
    };
    let i32s = |f: &dyn Fn(&ReplayStats) -> u32| -> ArrayRef {
        Arc::new(Int32Array::new(all.iter().map(|o| o.map_or(0, |(s, _)| f(&s) as i32)).collect(), nulls.clone()))
    };
    let columns: Vec<ArrayRef> = vec![
        i64s(&|s, _| s.total_len),
        i64s(&|s, _| s.peak_len),
        f64s(&|s, _| s.mean_len),
        i64s(&|s, _| s.final_len),
        i64s(&|s, p| s.full_peak(p)),
        f64s(&|s, p| s.full_mean(p)),
        ratios(&|s, p| ratio(s.peak_len as f64, s.full_peak(p) as f64)),
        ratios(&|s, p| ratio(s.mean_len, s.full_mean(p))),
        i32s(&|s| s.complete_blocks),
        i32s(&|s| s.evicted_blocks),
    ];
    Ok(RecordBatch::try_new(Arc::new(replay_schema()), columns)?)
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
                    s += &format!("<|block_start|> block {b} of {i} {} <|block_end|>\n<|summary_start|> s{b} <|summary_end|>\n", "w ".repeat(i % 300));
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
            let o = |threads| CompressOptions { style, engine: EngineOptions { keep_last_k: 1, ..Default::default() }, threads };
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
        let b = replay_arrays(&[&a], &EngineOptions::default(), PromptLen::Same(5), &Chars, Some(1)).unwrap();
        assert_eq!(b.num_rows(), 200);
        assert!(b.column(0).is_null(5));
        let keep_all = EngineOptions { keep_last_k: -1, ..Default::default() };
        let full = replay_arrays(&[&a], &keep_all, PromptLen::Same(5), &Chars, Some(1)).unwrap();
        assert_eq!(full.column(1), full.column(4));
        let bad = EngineOptions { keep_last_k: 2, keep_last_block_for_answer: true, ..Default::default() };
        assert!(replay_arrays(&[&a], &bad, PromptLen::Same(0), &Chars, None).is_err());
    }
}
