//! The main job in tokens: per row, one scan, one count of every piece between delimiters, and
//! from those counts the tutorial's token figures *and* the context replay under the inference
//! engine's rules (mementos-core's [`replay`], fed the piece counts instead of recounting).

use std::mem::take;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Schema};
use mementos_core::compact::{replay, EngineOptions, Scratch as ReplayScratch, Stream, Units};
use mementos_core::ops::check_engine_options;
use mementos_core::output::{self, Column, PerRow};
use mementos_core::par::{map_chunks, Work};
use mementos_core::scan::scan_into;
use mementos_core::text::strip_range;
use mementos_core::{column_rows, CoreError, Delim, Rows, Token};

use crate::count::{backend_metadata, pairs, row_str, Scratch};
use crate::{count_text, SegmentCounter};

/// Options of [`analyze_arrays`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AnalyzeOptions {
    /// The engine's rules for the replay.
    pub engine: EngineOptions,
    /// Worker threads, as in [`crate::CountOptions::threads`].
    pub threads: Option<usize>,
}

/// Replay units that reuse the piece counts of the row (`gaps`): the replay asks for the units of
/// each text piece between delimiter occurrences, in order, and gets the count already made.
/// A slice that is not one of the row's pieces (never, with the current engine) is counted.
struct PieceUnits<'a> {
    base: usize,
    len: usize,
    tokens: &'a [Token],
    gaps: &'a [u32],
    counter: &'a dyn SegmentCounter,
}

impl PieceUnits<'_> {
    fn piece(&self, s: &[u8]) -> Option<u64> {
        let off = (s.as_ptr() as usize).checked_sub(self.base)?;
        // Piece k starts where token k-1 ends (piece 0 at 0) and ends where token k starts.
        let k = self.tokens.partition_point(|t| t.end() <= off);
        let start = if k == 0 { 0 } else { self.tokens[k - 1].end() };
        let end = match self.tokens.get(k) {
            Some(t) => t.start,
            None => self.len, // the tail
        };
        let end_ok = off + s.len() == end;
        (start == off && end_ok).then(|| self.gaps[k] as u64)
    }
}

impl Units for PieceUnits<'_> {
    fn text(&self, s: &[u8]) -> u64 {
        if s.is_empty() {
            return 0;
        }
        self.piece(s).unwrap_or_else(|| self.counter.count(row_str(s)) as u64)
    }
    fn delim(&self, _: Delim) -> u64 {
        1
    }
}

/// The figures of one row.
struct RowFigures {
    response: i64,
    blocks: i64,
    summaries: i64,
    peak: i64,
    mean: f64,
    auc: i64,
    full_peak: i64,
}

mementos_core::accumulators! {
    /// The figures of a run of rows (`None` for a null response) and each row's prompt tokens.
    struct Chunk {
        rows: Option<RowFigures>,
        prompt: Option<i64>,
    }
}

/// Scratch reused across the rows of a chunk.
#[derive(Default)]
struct RowScratch {
    count: Scratch,
    replay: ReplayScratch,
    prefix: Vec<u64>,
}

/// The sum over the tutorial's items between `open` and `close` (its non-greedy pairing) of
/// `len(tok.encode(item.strip()))`.
fn stripped_sum(s: &mut Scratch, text: &str, counter: &dyn SegmentCounter, open: Delim, close: Delim) -> u64 {
    let mut buf = take(&mut s.pairs);
    pairs(&s.tokens, open, close, &mut buf);
    let sum = buf
        .iter()
        .map(|&(a, b)| {
            let r: Range<usize> = strip_range(text.as_bytes(), s.tokens[a].end()..s.tokens[b].start);
            s.stripped_tokens(text, counter, a, b, r)
        })
        .sum();
    s.pairs = buf;
    sum
}

fn analyze_row(
    text: &str,
    prompt: u64,
    counter: &dyn SegmentCounter,
    opts: &AnalyzeOptions,
    s: &mut RowScratch,
    c: &mut Chunk,
) {
    let bytes = text.as_bytes();
    scan_into(bytes, &mut s.count.tokens);
    s.count.count_gaps(text, counter);
    let n = s.count.tokens.len();
    let total = s.count.prefix[n + 1] + n as u64;
    let blocks = stripped_sum(&mut s.count, text, counter, Delim::BlockStart, Delim::BlockEnd);
    let summaries = stripped_sum(&mut s.count, text, counter, Delim::SummaryStart, Delim::SummaryEnd);
    let units = PieceUnits {
        base: bytes.as_ptr() as usize,
        len: bytes.len(),
        tokens: &s.count.tokens,
        gaps: &s.count.gaps,
        counter,
    };
    let st = replay(
        Stream::response(bytes, &s.count.tokens),
        &opts.engine,
        prompt,
        &units,
        &mut s.replay,
        &mut s.prefix,
        None,
    );
    debug_assert_eq!(st.total_len, total);
    c.rows.push(Some(RowFigures {
        response: total as i64,
        blocks: blocks as i64,
        summaries: summaries as i64,
        peak: st.peak_len as i64,
        mean: st.mean_len,
        auc: st.kv_auc.min(i64::MAX as u128) as i64,
        full_peak: st.full_peak() as i64,
    }));
}

/// The analyzed rows.
struct Analyzed {
    rows: PerRow<RowFigures>,
    prompt: Vec<Option<i64>>,
}

fn int64() -> DataType {
    DataType::Int64
}

/// Every output column of [`analyze_arrays`], in order (`prompt_tokens` only with prompts).
const OUTPUT: [Column<Analyzed>; 9] = [
    Column::new("response_tokens", int64, |a| a.rows.values::<Int64Type>(|r| r.response)),
    Column::optional("prompt_tokens", int64, |a| Arc::new(Int64Array::from(take(&mut a.prompt)))),
    Column::new("block_tokens", int64, |a| a.rows.values::<Int64Type>(|r| r.blocks)),
    Column::new("summary_tokens", int64, |a| a.rows.values::<Int64Type>(|r| r.summaries)),
    Column::new(
        "token_ratio",
        || DataType::Float64,
        |a| a.rows.options::<Float64Type>(|r| (r.blocks > 0).then(|| r.summaries as f64 / r.blocks as f64)),
    ),
    Column::new("replay_peak_tokens", int64, |a| a.rows.values::<Int64Type>(|r| r.peak)),
    Column::new("replay_mean_tokens", || DataType::Float64, |a| a.rows.values::<Float64Type>(|r| r.mean)),
    Column::new("kv_auc_tokens", int64, |a| a.rows.values::<Int64Type>(|r| r.auc)),
    Column::new("replay_full_peak_tokens", int64, |a| a.rows.values::<Int64Type>(|r| r.full_peak)),
];

/// Output schema of [`analyze_arrays`] (`prompt_tokens` only when prompts are given).
pub fn analyze_schema(backend: &str, with_prompts: bool) -> Schema {
    output::schema(&OUTPUT, with_prompts).with_metadata(backend_metadata(backend))
}

/// Token figures and the token replay of every row of `rows` (see [`analyze_arrays`]).
pub fn analyze_rows(
    rows: &dyn Rows,
    prompts: Option<&dyn Rows>,
    counter: &dyn SegmentCounter,
    opts: &AnalyzeOptions,
) -> Result<RecordBatch, CoreError> {
    check_engine_options(&opts.engine)?;
    crate::check_utf8(rows)?;
    if let Some(p) = prompts {
        crate::check_utf8(p)?;
    }
    if let Some(p) = prompts {
        if p.len() != rows.len() {
            return Err(CoreError::InvalidArgument(format!("{} prompts for {} responses", p.len(), rows.len())));
        }
    }
    let parts = map_chunks(rows, opts.threads, Work::Tokenize, |range| {
        let mut c = Chunk::default();
        let mut s = RowScratch::default();
        for i in range {
            let prompt = prompts.and_then(|p| p.is_valid(i).then(|| count_text(row_str(p.bytes(i)), counter)));
            if rows.is_valid(i) {
                analyze_row(row_str(rows.bytes(i)), prompt.unwrap_or(0), counter, opts, &mut s, &mut c);
            } else {
                c.rows.push(None);
            }
            c.prompt.push(prompt.map(|p| p as i64));
        }
        c
    })?;
    let mut c = Chunk::concat(parts);
    let mut out = Analyzed { rows: PerRow::new(take(&mut c.rows)), prompt: c.prompt };
    Ok(output::record_batch(&OUTPUT, prompts.is_some(), &mut out, backend_metadata(counter.name()))?)
}

/// Per row of a column of responses, from one scan and one count of each text piece:
///
/// - `response_tokens`: the whole response (each delimiter one token);
/// - `prompt_tokens` (with `prompts`, a column of rendered prompts as long as the responses):
///   the prompt, which the replay counts in every visible length;
/// - `block_tokens`, `summary_tokens`: the tutorial's token length summed over its stripped
///   blocks / mementos; `token_ratio` = summary / block (null without block tokens);
/// - `replay_peak_tokens`, `replay_mean_tokens`, `kv_auc_tokens`: the largest and the mean
///   visible context and the KV AUC (sum over generated tokens of the visible length) of the
///   replay under `opts.engine` (as `replay_arrays` in tokens), `replay_full_peak_tokens` the
///   peak without compaction (prompt + response).
///
/// Null responses give null rows.
pub fn analyze_arrays(
    arrays: &[&dyn Array],
    prompts: Option<&[&dyn Array]>,
    counter: &dyn SegmentCounter,
    opts: &AnalyzeOptions,
) -> Result<RecordBatch, CoreError> {
    let rows = column_rows(arrays)?;
    let prompt_rows = prompts.map(column_rows).transpose()?;
    analyze_rows(rows.as_ref(), prompt_rows.as_deref(), counter, opts)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::StringArray;

    use super::*;

    /// Counts bytes, and how often it is asked.
    #[derive(Default)]
    struct Calls(AtomicUsize);
    impl SegmentCounter for Calls {
        fn count(&self, text: &str) -> usize {
            self.0.fetch_add(1, Ordering::Relaxed);
            text.len()
        }
        fn name(&self) -> &str {
            "calls"
        }
    }

    #[test]
    fn the_replay_reuses_the_piece_counts() {
        // Items without outer whitespace: the stripped items need no count either.
        let row = "pre<think><|block_start|>abc<|block_end|><|summary_start|>s<|summary_end|>mid<|block_start|>de<|block_end|><|summary_start|>t<|summary_end|></think>";
        let n_tokens = mementos_core::scan(row.as_bytes()).len();
        let counter = Calls::default();
        let opts = AnalyzeOptions { threads: Some(1), ..Default::default() };
        let got = analyze_arrays(&[&StringArray::from(vec![row])], None, &counter, &opts).unwrap();
        assert_eq!(counter.0.load(Ordering::Relaxed), n_tokens + 1, "one count per piece, none for the replay");
        let col = |n: &str| got.column_by_name(n).unwrap().as_primitive::<Int64Type>().value(0);
        assert_eq!(col("block_tokens"), 5);
        assert_eq!(col("summary_tokens"), 2);
        // k = 0: "abc" leaves at the first <|summary_end|>, "de" at the second; the peak is just
        // before the second eviction (nothing but `</think>` follows it): everything generated up
        // to there minus "abc".
        let before_second = row.find("</think>").unwrap();
        let delims = mementos_core::scan(&row.as_bytes()[..before_second]).len();
        let text_units = before_second
            - mementos_core::scan(&row.as_bytes()[..before_second]).iter().map(|t| t.delim.len()).sum::<usize>();
        assert_eq!(col("replay_peak_tokens") as usize, text_units + delims - 3);
    }
}
