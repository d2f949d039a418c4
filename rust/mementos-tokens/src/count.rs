//! Counting a column: one scan + parse per row (mementos-core), one count per text piece between
//! delimiters, every figure derived from those piece counts.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float64Array, Int32Array, Int64Array, ListArray, RecordBatch};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema};
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

/// Columns of one chunk of rows.
#[derive(Default)]
struct Chunk {
    valid: Vec<bool>,
    total: Vec<i64>,
    block_counts: Vec<usize>,
    block_ctx: Vec<i32>,
    block_strip: Vec<i32>,
    summary_counts: Vec<usize>,
    summary_ctx: Vec<i32>,
    summary_strip: Vec<i32>,
    block_total: Vec<i64>,
    summary_total: Vec<i64>,
    preamble: Vec<i64>,
    between: Vec<i64>,
    answer: Vec<i64>,
    span_counts: Vec<usize>,
    span_tok: Vec<i32>,
}

impl Chunk {
    fn extend(&mut self, o: Chunk) {
        self.valid.extend(o.valid);
        self.total.extend(o.total);
        self.block_counts.extend(o.block_counts);
        self.block_ctx.extend(o.block_ctx);
        self.block_strip.extend(o.block_strip);
        self.summary_counts.extend(o.summary_counts);
        self.summary_ctx.extend(o.summary_ctx);
        self.summary_strip.extend(o.summary_strip);
        self.block_total.extend(o.block_total);
        self.summary_total.extend(o.summary_total);
        self.preamble.extend(o.preamble);
        self.between.extend(o.between);
        self.answer.extend(o.answer);
        self.span_counts.extend(o.span_counts);
        self.span_tok.extend(o.span_tok);
    }

    fn push_null(&mut self) {
        self.valid.push(false);
        for v in [
            &mut self.total,
            &mut self.block_total,
            &mut self.summary_total,
            &mut self.preamble,
            &mut self.between,
            &mut self.answer,
        ] {
            v.push(0);
        }
        self.block_counts.push(0);
        self.summary_counts.push(0);
        self.span_counts.push(0);
    }
}

/// Row text as `&str`, after [`check_utf8`] accepted the rows.
pub(crate) fn row_str(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("rows were checked by check_utf8")
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
    c.valid.push(true);
    c.total.push((s.prefix[n + 1] + n as u64) as i64);

    for (open, close, stripped, counts, ctx, strip, total) in [
        (
            Delim::BlockStart,
            Delim::BlockEnd,
            &s.parsed.blocks,
            &mut c.block_counts,
            &mut c.block_ctx,
            &mut c.block_strip,
            &mut c.block_total,
        ),
        (
            Delim::SummaryStart,
            Delim::SummaryEnd,
            &s.parsed.summaries,
            &mut c.summary_counts,
            &mut c.summary_ctx,
            &mut c.summary_strip,
            &mut c.summary_total,
        ),
    ] {
        let mut pairs_buf = std::mem::take(&mut s.pairs);
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
        total.push(sum as i64);
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
    c.preamble.push(pre);
    c.between.push(between);
    c.answer.push(answer);
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

/// Output schema of [`count_arrays`] (the `*_stripped` columns only with `stripped`); the
/// metadata key `backend` names the counter.
pub fn output_schema(backend: &str, stripped: bool) -> Schema {
    let int_list = DataType::List(Arc::new(Field::new("item", DataType::Int32, false)));
    let mut fields = vec![
        Field::new("total_tokens", DataType::Int64, true),
        Field::new("block_tokens", int_list.clone(), true),
        Field::new("summary_tokens", int_list.clone(), true),
        Field::new("block_tokens_stripped", int_list.clone(), true),
        Field::new("summary_tokens_stripped", int_list.clone(), true),
        Field::new("block_tokens_total", DataType::Int64, true),
        Field::new("summary_tokens_total", DataType::Int64, true),
        Field::new("compression_ratio", DataType::Float64, true),
        Field::new("think_preamble_tokens", DataType::Int64, true),
        Field::new("between_tokens", DataType::Int64, true),
        Field::new("answer_tokens", DataType::Int64, true),
        Field::new("span_tokens", int_list, true),
    ];
    if !stripped {
        fields.retain(|f| !f.name().ends_with("_stripped"));
    }
    Schema::new_with_metadata(fields, HashMap::from([("backend".to_string(), backend.to_string())]))
}

/// Count the rows of `rows` (see the crate docs for the columns).
pub fn count_rows(
    rows: &dyn Rows,
    counter: &dyn SegmentCounter,
    opts: &CountOptions,
) -> Result<RecordBatch, CoreError> {
    check_utf8(rows)?;
    let parts = map_chunks(rows, opts.threads, Work::Tokenize, |r| count_chunk(rows, r, counter, opts.stripped))?;
    let mut c = Chunk::default();
    for p in parts {
        c.extend(p);
    }
    let nulls = if c.valid.iter().all(|&v| v) { None } else { Some(NullBuffer::from(c.valid.clone())) };
    let item = Arc::new(Field::new("item", DataType::Int32, false));
    let list = |values: Vec<i32>, counts: &[usize]| -> ArrayRef {
        Arc::new(ListArray::new(
            item.clone(),
            OffsetBuffer::from_lengths(counts.iter().copied()),
            Arc::new(Int32Array::from(values)),
            nulls.clone(),
        ))
    };
    let i64s = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::new(ScalarBuffer::from(v), nulls.clone())) };
    let ratio: Float64Array = c
        .valid
        .iter()
        .zip(c.block_total.iter().zip(&c.summary_total))
        .map(|(&v, (&b, &s))| (v && s > 0).then(|| b as f64 / s as f64))
        .collect();
    let mut columns: Vec<ArrayRef> =
        vec![i64s(c.total), list(c.block_ctx, &c.block_counts), list(c.summary_ctx, &c.summary_counts)];
    if opts.stripped {
        columns.push(list(c.block_strip, &c.block_counts));
        columns.push(list(c.summary_strip, &c.summary_counts));
    }
    columns.extend([
        i64s(c.block_total),
        i64s(c.summary_total),
        Arc::new(ratio) as ArrayRef,
        i64s(c.preamble),
        i64s(c.between),
        i64s(c.answer),
        list(c.span_tok, &c.span_counts),
    ]);
    Ok(RecordBatch::try_new(Arc::new(output_schema(counter.name(), opts.stripped)), columns)?)
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
