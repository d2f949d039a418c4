//! Counting a column: one scan + parse per row (mementos-core), one count per text piece between
//! delimiters, every figure derived from those piece counts.

use std::collections::HashMap;
use std::mem::take;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Schema};
use mementos_core::output::{self, Column, PerRow};
use mementos_core::par::{map_chunks, Work};
use mementos_core::scan::scan_into;
use mementos_core::{column_rows, parse_row, CoreError, Delim, Parsed, Rows, SpanKind, Token};

use crate::SegmentCounter;

/// Options of [`count_arrays`].
#[derive(Clone, Debug)]
pub struct CountOptions {
    /// Worker threads, as everywhere (`mementos_core::par`): `None` all cores, `Some(1)` the
    /// calling thread, `Some(n)` a pool of `n` threads (built once, reused).
    pub threads: Option<usize>,
    /// Also count the tutorial's stripped items (`*_tokens_stripped` columns). Their edges
    /// differ from the in-context text, so this counts most block text a second time.
    pub stripped: bool,
}

impl Default for CountOptions {
    fn default() -> Self {
        CountOptions { threads: None, stripped: true }
    }
}

/// Per-row scratch space, reused across rows.
#[derive(Default)]
pub(crate) struct Scratch {
    pub(crate) tokens: Vec<Token>,
    parsed: Parsed,
    /// Count of each piece between delimiters: `gaps[k]` is the text before token `k`
    /// (`gaps[n]` the text after the last one).
    pub(crate) gaps: Vec<u32>,
    /// `prefix[k]` = sum of `gaps[..k]`.
    pub(crate) prefix: Vec<u64>,
    pub(crate) pairs: Vec<(usize, usize)>,
}

/// The token figures of one row.
struct RowTokens {
    total: i64,
    block_total: i64,
    summary_total: i64,
    preamble: i64,
    between: i64,
    answer: i64,
}

mementos_core::accumulators! {
    /// Columns of one chunk of rows: the figures of each row (`None` for a null row), the list
    /// values flat with one length per row.
    struct Chunk {
        rows: Option<RowTokens>,
        block_counts: usize,
        block_ctx: i32,
        block_strip: i32,
        summary_counts: usize,
        summary_ctx: i32,
        summary_strip: i32,
        span_counts: usize,
        span_tok: i32,
    }
}

impl Chunk {
    fn push_null(&mut self) {
        self.rows.push(None);
        self.block_counts.push(0);
        self.summary_counts.push(0);
        self.span_counts.push(0);
    }
}

/// Row text as `&str`, after [`check_utf8`] accepted the rows.
pub(crate) fn row_str(bytes: &[u8]) -> &str {
    simdutf8::basic::from_utf8(bytes).expect("rows were checked by check_utf8")
}

/// Check that every non-null row is valid UTF-8. Arrow requires it of string arrays, but an
/// array imported through the C data interface (or built with `pa.Array.from_buffers`) is not
/// validated by its producer, and the tokenizers take `&str`. One linear pass (far cheaper than
/// tokenizing); the error names the first bad row and byte.
pub fn check_utf8(rows: &dyn Rows) -> Result<(), CoreError> {
    for i in 0..rows.len() {
        if !rows.is_valid(i) {
            continue;
        }
        if simdutf8::basic::from_utf8(rows.bytes(i)).is_ok() {
            continue;
        }
        // Only a bad row pays for the position of the error.
        if let Err(e) = std::str::from_utf8(rows.bytes(i)) {
            return Err(CoreError::InvalidArgument(format!(
                "row {i}: invalid UTF-8 at byte {} of the row; Arrow string data must be UTF-8 (decode or repair \
                 the bytes before building the array)",
                e.valid_up_to()
            )));
        }
    }
    Ok(())
}

/// Token indexes `(open, close)` of the tutorial's non-greedy `open(.*?)close` matches (the same
/// pairing as mementos-core's tutorial fields, so item `i` here is `blocks[i]` there).
pub(crate) fn pairs(tokens: &[Token], open: Delim, close: Delim, out: &mut Vec<(usize, usize)>) {
    out.clear();
    let mut from = None;
    for (k, t) in tokens.iter().enumerate() {
        match from {
            None if t.delim == open => from = Some(k),
            Some(a) if t.delim == close => {
                out.push((a, k));
                from = None;
            }
            _ => {}
        }
    }
}

impl Scratch {
    /// Count every piece of `text` between the delimiters of `self.tokens`.
    pub(crate) fn count_gaps(&mut self, text: &str, counter: &dyn SegmentCounter) {
        self.gaps.clear();
        let mut pos = 0;
        for t in &self.tokens {
            self.gaps.push(counter.count(&text[pos..t.start]) as u32);
            pos = t.end();
        }
        self.gaps.push(counter.count(&text[pos..]) as u32);
        self.prefix.clear();
        self.prefix.push(0);
        let mut acc = 0u64;
        for &g in &self.gaps {
            acc += g as u64;
            self.prefix.push(acc);
        }
    }

    /// Tokens strictly between tokens `a` and `b` (`a < b`): pieces plus inner delimiters.
    pub(crate) fn between_tokens(&self, a: usize, b: usize) -> u64 {
        self.prefix[b + 1] - self.prefix[a + 1] + (b - a - 1) as u64
    }

    /// Tokens of the stripped item `r`, which lies inside the content between tokens `a`, `b`.
    /// Stripping removes whitespace only, so inner delimiters stay inside `r`: only the first
    /// and last piece can change, the others are reused.
    pub(crate) fn stripped_tokens(
        &self,
        text: &str,
        counter: &dyn SegmentCounter,
        a: usize,
        b: usize,
        r: Range<usize>,
    ) -> u64 {
        let (raw_start, raw_end) = (self.tokens[a].end(), self.tokens[b].start);
        if r.start == raw_start && r.end == raw_end {
            return self.between_tokens(a, b);
        }
        if r.is_empty() {
            return 0;
        }
        // The pieces next to the delimiters, counted as parts of the pieces already counted.
        let part = |from: usize, to: usize, sub: Range<usize>, whole: u32| {
            counter.count_range(&text[from..to], sub.start - from..sub.end - from, whole as usize) as u64
        };
        if b == a + 1 {
            return part(raw_start, raw_end, r, self.gaps[a + 1]);
        }
        let first_end = self.tokens[a + 1].start;
        let last_start = self.tokens[b - 1].end();
        let first = if r.start == raw_start {
            self.gaps[a + 1] as u64
        } else {
            part(raw_start, first_end, r.start..first_end, self.gaps[a + 1])
        };
        let last = if r.end == raw_end {
            self.gaps[b] as u64
        } else {
            part(last_start, raw_end, last_start..r.end, self.gaps[b])
        };
        // Inner pieces a+2 ..= b-1, plus the b-a-1 inner delimiters.
        first + (self.prefix[b] - self.prefix[a + 2]) + last + (b - a - 1) as u64
    }
}

fn count_row(text: &str, counter: &dyn SegmentCounter, want_stripped: bool, s: &mut Scratch, c: &mut Chunk) {
    parse_row(text.as_bytes(), &mut s.tokens, &mut s.parsed, true);
    s.count_gaps(text, counter);
    let n = s.tokens.len();
    let (mut block_total, mut summary_total) = (0i64, 0i64);
    for (open, close, stripped, counts, ctx, strip, total) in [
        (
            Delim::BlockStart,
            Delim::BlockEnd,
            &s.parsed.blocks,
            &mut c.block_counts,
            &mut c.block_ctx,
            &mut c.block_strip,
            &mut block_total,
        ),
        (
            Delim::SummaryStart,
            Delim::SummaryEnd,
            &s.parsed.summaries,
            &mut c.summary_counts,
            &mut c.summary_ctx,
            &mut c.summary_strip,
            &mut summary_total,
        ),
    ] {
        let mut pairs_buf = take(&mut s.pairs);
        pairs(&s.tokens, open, close, &mut pairs_buf);
        debug_assert_eq!(pairs_buf.len(), stripped.len());
        let mut sum = 0u64;
        for (&(a, b), r) in pairs_buf.iter().zip(stripped.iter()) {
            let in_ctx = s.between_tokens(a, b);
            sum += in_ctx;
            ctx.push(in_ctx as i32);
            if want_stripped {
                strip.push(s.stripped_tokens(text, counter, a, b, r.clone()) as i32);
            }
        }
        counts.push(pairs_buf.len());
        *total = sum as i64;
        s.pairs = pairs_buf;
    }

    // Per-span counts: every piece and every delimiter lies inside exactly one span (span
    // boundaries are delimiter boundaries), so walk both in order.
    let spans = &s.parsed.spans;
    let first_span = c.span_tok.len();
    c.span_tok.extend(std::iter::repeat_n(0, spans.len()));
    let out = &mut c.span_tok[first_span..];
    let mut j = 0usize;
    let mut add = |start: usize, end: usize, count: u64| {
        if start == end {
            return;
        }
        while spans[j].end <= start {
            j += 1;
        }
        out[j] += count as i32;
    };
    let mut pos = 0;
    for (k, t) in s.tokens.iter().enumerate() {
        add(pos, t.start, s.gaps[k] as u64);
        add(t.start, t.end(), 1);
        pos = t.end();
    }
    add(pos, text.len(), s.gaps[n] as u64);
    let (mut pre, mut between, mut answer) = (0i64, 0i64, 0i64);
    for (sp, &tok) in spans.iter().zip(out.iter()) {
        match sp.kind {
            SpanKind::Preamble | SpanKind::ThinkStart => pre += tok as i64,
            SpanKind::Between => between += tok as i64,
            SpanKind::Answer => answer += tok as i64,
            _ => {}
        }
    }
    c.span_counts.push(spans.len());
    let total = (s.prefix[n + 1] + n as u64) as i64;
    c.rows.push(Some(RowTokens { total, block_total, summary_total, preamble: pre, between, answer }));
}

fn count_chunk(rows: &dyn Rows, range: Range<usize>, counter: &dyn SegmentCounter, stripped: bool) -> Chunk {
    let mut c = Chunk::default();
    let mut s = Scratch::default();
    for i in range {
        if rows.is_valid(i) {
            count_row(row_str(rows.bytes(i)), counter, stripped, &mut s, &mut c);
        } else {
            c.push_null();
        }
    }
    c
}

/// The counted rows.
struct Counted {
    rows: PerRow<RowTokens>,
    c: Chunk,
}

fn token_list_type() -> DataType {
    output::list_type(DataType::Int32, false)
}

/// A list column of token counts: row `i` holds the next `lengths[i]` of `values`.
fn token_list(rows: &PerRow<RowTokens>, values: Vec<i32>, lengths: &[usize]) -> ArrayRef {
    rows.list(Arc::new(Int32Array::from(values)), lengths.iter().copied())
}

/// Every output column of [`count_arrays`], in order (the `*_stripped` columns only with
/// [`CountOptions::stripped`]).
const OUTPUT: [Column<Counted>; 12] = [
    Column::new("total_tokens", || DataType::Int64, |o| o.rows.values::<Int64Type>(|r| r.total)),
    Column::new("block_tokens", token_list_type, |o| token_list(&o.rows, take(&mut o.c.block_ctx), &o.c.block_counts)),
    Column::new("summary_tokens", token_list_type, |o| {
        token_list(&o.rows, take(&mut o.c.summary_ctx), &o.c.summary_counts)
    }),
    Column::optional("block_tokens_stripped", token_list_type, |o| {
        token_list(&o.rows, take(&mut o.c.block_strip), &o.c.block_counts)
    }),
    Column::optional("summary_tokens_stripped", token_list_type, |o| {
        token_list(&o.rows, take(&mut o.c.summary_strip), &o.c.summary_counts)
    }),
    Column::new("block_tokens_total", || DataType::Int64, |o| o.rows.values::<Int64Type>(|r| r.block_total)),
    Column::new("summary_tokens_total", || DataType::Int64, |o| o.rows.values::<Int64Type>(|r| r.summary_total)),
    Column::new(
        "compression_ratio",
        || DataType::Float64,
        |o| {
            o.rows.options::<Float64Type>(|r| {
                (r.summary_total > 0).then(|| r.block_total as f64 / r.summary_total as f64)
            })
        },
    ),
    Column::new("think_preamble_tokens", || DataType::Int64, |o| o.rows.values::<Int64Type>(|r| r.preamble)),
    Column::new("between_tokens", || DataType::Int64, |o| o.rows.values::<Int64Type>(|r| r.between)),
    Column::new("answer_tokens", || DataType::Int64, |o| o.rows.values::<Int64Type>(|r| r.answer)),
    Column::new("span_tokens", token_list_type, |o| token_list(&o.rows, take(&mut o.c.span_tok), &o.c.span_counts)),
];

/// The schema metadata naming the counting backend (key `backend`).
pub(crate) fn backend_metadata(backend: &str) -> HashMap<String, String> {
    HashMap::from([("backend".to_string(), backend.to_string())])
}

/// Output schema of [`count_arrays`] (the `*_stripped` columns only with `stripped`); the
/// metadata key `backend` names the counter.
pub fn output_schema(backend: &str, stripped: bool) -> Schema {
    output::schema(&OUTPUT, stripped).with_metadata(backend_metadata(backend))
}

/// Count the rows of `rows` (see the crate docs for the columns).
pub fn count_rows(
    rows: &dyn Rows,
    counter: &dyn SegmentCounter,
    opts: &CountOptions,
) -> Result<RecordBatch, CoreError> {
    check_utf8(rows)?;
    let parts = map_chunks(rows, opts.threads, Work::Tokenize, |r| count_chunk(rows, r, counter, opts.stripped))?;
    let mut c = Chunk::concat(parts);
    let rows = PerRow::new(take(&mut c.rows));
    Ok(output::record_batch(&OUTPUT, opts.stripped, &mut Counted { rows, c }, backend_metadata(counter.name()))?)
}

/// Count the chunks of one string column as one batch.
pub fn count_arrays(
    arrays: &[&dyn Array],
    counter: &dyn SegmentCounter,
    opts: &CountOptions,
) -> Result<RecordBatch, CoreError> {
    count_rows(column_rows(arrays)?.as_ref(), counter, opts)
}

/// Tokens of a whole text as the model sees it (each delimiter one token).
pub fn count_text(text: &str, counter: &dyn SegmentCounter) -> u64 {
    let mut tokens = Vec::new();
    scan_into(text.as_bytes(), &mut tokens);
    let mut pos = 0;
    let mut n = tokens.len() as u64;
    for t in &tokens {
        n += counter.count(&text[pos..t.start]) as u64;
        pos = t.end();
    }
    n + counter.count(&text[pos..]) as u64
}

/// Whole-text token counts of every row (null rows stay null), e.g. rendered prompts.
pub fn total_arrays(
    arrays: &[&dyn Array],
    counter: &dyn SegmentCounter,
    opts: &CountOptions,
) -> Result<Int64Array, CoreError> {
    let rows = column_rows(arrays)?;
    let rows = rows.as_ref();
    check_utf8(rows)?;
    let parts = map_chunks(rows, opts.threads, Work::Tokenize, |r| {
        r.map(|i| rows.is_valid(i).then(|| count_text(row_str(rows.bytes(i)), counter) as i64)).collect::<Vec<_>>()
    })?;
    Ok(parts.into_iter().flatten().collect())
}
