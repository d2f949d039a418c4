//! Batch parsing over Arrow string arrays, zero-copy.
//!
//! Input: any string layout [`crate::rows`] reads. Output: a `RecordBatch` whose text columns
//! are `Utf8View` arrays pointing into the *input's* buffers: no text byte is copied (strings of
//! 12 bytes or fewer are inlined in their view, as the Arrow spec requires). Rows are split into
//! chunks of balanced byte size and parsed in parallel ([`crate::par`]); chunk outputs are
//! concatenated in order.

use std::mem::take;
use std::ops::Range;
use std::sync::Arc;

use std::collections::HashMap;

use arrow_array::builder::make_view;
use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, ListArray, RecordBatch, StringViewArray, StructArray};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Fields, Schema};

use crate::error::CoreError;
use crate::output::{self, dictionary, dictionary_type, list_type, Column};
use crate::par::{self, Work};
use crate::parse::{parse_row, Parsed, SpanKind};
use crate::rows::{column_rows, rows_of, Rows};
use crate::scan::Token;
use crate::status::Status;

/// Options of [`parse_array`].
#[derive(Clone, Debug, Default)]
pub struct ParseOptions {
    /// Also return the lossless segmentation as a `spans` column.
    pub spans: bool,
    /// Worker threads: `None` uses rayon's global pool (all cores), `Some(1)` runs on the
    /// calling thread, `Some(n)` a dedicated pool of `n` threads.
    pub threads: Option<usize>,
}

crate::accumulators! {
    /// What parsing a run of rows produced, concatenated in row order afterwards. Lists (blocks,
    /// summaries, spans) are flat values plus one count per row.
    struct Chunk {
        valid: bool,
        block_views: u128,
        block_counts: usize,
        block_item_chars: i32,
        block_item_words: i32,
        summary_item_chars: i32,
        summary_item_words: i32,
        summary_views: u128,
        summary_counts: usize,
        reasoning: u128,
        reasoning_valid: bool,
        answer: u128,
        block_chars: i64,
        block_words: i64,
        summary_chars: i64,
        summary_words: i64,
        status: i8,
        error_offset: i64,
        span_kind: i8,
        span_start: i64,
        span_end: i64,
        span_counts: usize,
    }
}

fn parse_chunk(rows: &dyn Rows, range: Range<usize>, spans: bool) -> Chunk {
    let mut c = Chunk::default();
    let mut tokens: Vec<Token> = Vec::new();
    let mut p = Parsed::default();
    for i in range {
        let valid = rows.is_valid(i);
        c.valid.push(valid);
        if !valid {
            c.block_counts.push(0);
            c.summary_counts.push(0);
            c.reasoning.push(0);
            c.reasoning_valid.push(false);
            c.answer.push(0);
            for v in [&mut c.block_chars, &mut c.block_words, &mut c.summary_chars, &mut c.summary_words] {
                v.push(0);
            }
            c.status.push(0);
            c.error_offset.push(0);
            c.span_counts.push(0);
            continue;
        }
        let text = rows.bytes(i);
        parse_row(text, &mut tokens, &mut p, spans);
        c.block_views.extend(p.blocks.iter().map(|r| rows.view(i, r.clone())));
        c.block_counts.push(p.blocks.len());
        c.block_item_chars.extend(p.block_items.iter().map(|s| s.chars as i32));
        c.block_item_words.extend(p.block_items.iter().map(|s| s.words as i32));
        c.summary_item_chars.extend(p.summary_items.iter().map(|s| s.chars as i32));
        c.summary_item_words.extend(p.summary_items.iter().map(|s| s.words as i32));
        c.summary_views.extend(p.summaries.iter().map(|r| rows.view(i, r.clone())));
        c.summary_counts.push(p.summaries.len());
        c.reasoning.push(p.reasoning.clone().map_or(0, |r| rows.view(i, r)));
        c.reasoning_valid.push(p.reasoning.is_some());
        c.answer.push(p.final_answer.clone().map_or_else(|| make_view(b"", 0, 0), |r| rows.view(i, r)));
        c.block_chars.push(p.block_stats.chars as i64);
        c.block_words.push(p.block_stats.words as i64);
        c.summary_chars.push(p.summary_stats.chars as i64);
        c.summary_words.push(p.summary_stats.words as i64);
        c.status.push(p.status as i8);
        c.error_offset.push(p.error_offset.unwrap_or(0) as i64);
        if spans {
            c.span_counts.push(p.spans.len());
            for s in &p.spans {
                c.span_kind.push(s.kind as i8);
                c.span_start.push(s.start as i64);
                c.span_end.push(s.end as i64);
            }
        } else {
            c.span_counts.push(0);
        }
    }
    c
}

fn run_chunks(rows: &dyn Rows, opts: &ParseOptions) -> Result<Chunk, CoreError> {
    Ok(Chunk::concat(par::map_chunks(rows, opts.threads, Work::Scan, |r| parse_chunk(rows, r, opts.spans))?))
}

fn status_names() -> Vec<&'static str> {
    Status::ALL.iter().map(|s| s.name()).collect()
}

/// What several columns share: the input's buffers (for views), the row validity and the list
/// offsets.
struct Shared {
    buffers: Arc<[Buffer]>,
    row_nulls: Option<NullBuffer>,
    /// Null when the row is null or its status is ok.
    error_nulls: NullBuffer,
    block_offsets: OffsetBuffer<i32>,
    summary_offsets: OffsetBuffer<i32>,
}

impl Shared {
    fn views(&self, v: Vec<u128>, nulls: Option<NullBuffer>) -> ArrayRef {
        // SAFETY: every view was made by `make_view` from a sub-slice of a row that lies inside
        // buffer `buffer_index` at `offset`, on a UTF-8 boundary (delimiters are ASCII and
        // stripping removes whole characters), so the views are valid for these buffers.
        Arc::new(unsafe { StringViewArray::new_unchecked(ScalarBuffer::from(v), self.buffers.clone(), nulls) })
    }
    fn view_list(&self, v: Vec<u128>, offsets: &OffsetBuffer<i32>) -> ArrayRef {
        let item = Arc::new(Field::new("item", DataType::Utf8View, false));
        Arc::new(ListArray::new(item, offsets.clone(), self.views(v, None), self.row_nulls.clone()))
    }
    fn int_list(&self, v: Vec<i32>, offsets: &OffsetBuffer<i32>) -> ArrayRef {
        let item = Arc::new(Field::new("item", DataType::Int32, false));
        Arc::new(ListArray::new(item, offsets.clone(), Arc::new(Int32Array::from(v)), self.row_nulls.clone()))
    }
    fn counts(&self, counts: &[usize]) -> ArrayRef {
        Arc::new(Int32Array::new(counts.iter().map(|&n| n as i32).collect(), self.row_nulls.clone()))
    }
    fn i64s(&self, v: Vec<i64>) -> ArrayRef {
        Arc::new(Int64Array::new(ScalarBuffer::from(v), self.row_nulls.clone()))
    }
}

fn view_list_type() -> DataType {
    list_type(DataType::Utf8View, false)
}

fn int_list_type() -> DataType {
    list_type(DataType::Int32, false)
}

fn spans_type() -> DataType {
    list_type(DataType::Struct(span_fields()), false)
}

/// The parsed rows and what several columns share.
struct Built {
    c: Chunk,
    s: Shared,
}

/// Every output column of [`parse_array`], in order (`spans` only with [`ParseOptions::spans`]).
const OUTPUT: [Column<Built>; 17] = [
    Column::new("blocks", view_list_type, |b| b.s.view_list(take(&mut b.c.block_views), &b.s.block_offsets)),
    Column::new("summaries", view_list_type, |b| b.s.view_list(take(&mut b.c.summary_views), &b.s.summary_offsets)),
    Column::new(
        "reasoning",
        || DataType::Utf8View,
        |b| b.s.views(take(&mut b.c.reasoning), Some(NullBuffer::from(take(&mut b.c.reasoning_valid)))),
    ),
    Column::new("final_answer", || DataType::Utf8View, |b| b.s.views(take(&mut b.c.answer), b.s.row_nulls.clone())),
    Column::new("n_blocks", || DataType::Int32, |b| b.s.counts(&b.c.block_counts)),
    Column::new("n_summaries", || DataType::Int32, |b| b.s.counts(&b.c.summary_counts)),
    Column::new("block_chars", || DataType::Int64, |b| b.s.i64s(take(&mut b.c.block_chars))),
    Column::new("summary_chars", || DataType::Int64, |b| b.s.i64s(take(&mut b.c.summary_chars))),
    Column::new("block_words", || DataType::Int64, |b| b.s.i64s(take(&mut b.c.block_words))),
    Column::new("summary_words", || DataType::Int64, |b| b.s.i64s(take(&mut b.c.summary_words))),
    Column::new("status", dictionary_type, |b| {
        dictionary(take(&mut b.c.status), b.s.row_nulls.clone(), &status_names())
    }),
    Column::new(
        "error_offset",
        || DataType::Int64,
        |b| Arc::new(Int64Array::new(ScalarBuffer::from(take(&mut b.c.error_offset)), Some(b.s.error_nulls.clone()))),
    ),
    Column::new("block_char_counts", int_list_type, |b| {
        b.s.int_list(take(&mut b.c.block_item_chars), &b.s.block_offsets)
    }),
    Column::new("summary_char_counts", int_list_type, |b| {
        b.s.int_list(take(&mut b.c.summary_item_chars), &b.s.summary_offsets)
    }),
    Column::new("block_word_counts", int_list_type, |b| {
        b.s.int_list(take(&mut b.c.block_item_words), &b.s.block_offsets)
    }),
    Column::new("summary_word_counts", int_list_type, |b| {
        b.s.int_list(take(&mut b.c.summary_item_words), &b.s.summary_offsets)
    }),
    Column::optional("spans", spans_type, spans_column),
];

fn spans_column(b: &mut Built) -> ArrayRef {
    let (c, s) = (&mut b.c, &b.s);
    let kinds = dictionary(take(&mut c.span_kind), None, &SpanKind::ALL.map(|k| k.name()));
    let starts = Int64Array::new(ScalarBuffer::from(take(&mut c.span_start)), None);
    let ends = Int64Array::new(ScalarBuffer::from(take(&mut c.span_end)), None);
    let structs = StructArray::new(span_fields(), vec![kinds, Arc::new(starts), Arc::new(ends)], None);
    output::list_array(Arc::new(structs), false, c.span_counts.iter().copied(), s.row_nulls.clone())
}

/// Output schema of [`parse_array`].
pub fn output_schema(spans: bool) -> Schema {
    output::schema(&OUTPUT, spans)
}

fn span_fields() -> Fields {
    Fields::from(vec![
        Field::new("kind", dictionary_type(), false),
        Field::new("start", DataType::Int64, false),
        Field::new("end", DataType::Int64, false),
    ])
}

/// Parse every row of a string array. Malformed rows get a status; only a non-string input (or
/// a row larger than 4 GiB) is an error.
pub fn parse_array(array: &dyn Array, opts: &ParseOptions) -> Result<RecordBatch, CoreError> {
    build(rows_of(array)?.as_ref(), opts)
}

/// Parse the chunks of one column as a single batch (one parallel run, one output batch).
pub fn parse_arrays(arrays: &[&dyn Array], opts: &ParseOptions) -> Result<RecordBatch, CoreError> {
    if let [one] = arrays {
        return parse_array(*one, opts);
    }
    build(column_rows(arrays)?.as_ref(), opts)
}

/// The raw lower bound the benchmarks compare against: one `memchr` pass over every row's bytes
/// counting `byte`, on the calling thread. Parsing cannot be faster than finding the `<`s.
pub fn count_byte(arrays: &[&dyn Array], byte: u8) -> Result<u64, CoreError> {
    let mut n = 0u64;
    for a in arrays {
        let rows = rows_of(*a)?;
        for i in 0..rows.len() {
            if rows.is_valid(i) {
                n += memchr::memchr_iter(byte, rows.bytes(i)).count() as u64;
            }
        }
    }
    Ok(n)
}

fn build(rows: &dyn Rows, opts: &ParseOptions) -> Result<RecordBatch, CoreError> {
    let c = run_chunks(rows, opts)?;
    let row_nulls = output::validity(c.valid.iter().copied());
    let error_valid: Vec<bool> = c.valid.iter().zip(&c.status).map(|(&v, &s)| v && s != Status::Ok as i8).collect();
    let shared = Shared {
        buffers: rows.buffers().into(),
        row_nulls,
        error_nulls: NullBuffer::from(error_valid),
        block_offsets: OffsetBuffer::<i32>::from_lengths(c.block_counts.iter().copied()),
        summary_offsets: OffsetBuffer::<i32>::from_lengths(c.summary_counts.iter().copied()),
    };
    Ok(output::record_batch(&OUTPUT, opts.spans, &mut Built { c, s: shared }, HashMap::new())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::{LargeStringArray, StringArray};

    const ROW: &str = "<think>\n<|block_start|> first block, long enough to need a buffer <|block_end|>\n<|summary_start|> short <|summary_end|>\n</think>\n\nThe answer is 42.";

    fn col<'a>(batch: &'a RecordBatch, name: &str) -> &'a ArrayRef {
        batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"))
    }

    fn check(batch: &RecordBatch) {
        let blocks = col(batch, "blocks").as_list::<i32>();
        assert_eq!(blocks.value(0).as_string_view().value(0), "first block, long enough to need a buffer");
        assert_eq!(blocks.value(0).as_string_view().len(), 1);
        assert!(col(batch, "blocks").is_null(1));
        assert_eq!(col(batch, "summaries").as_list::<i32>().value(0).as_string_view().value(0), "short");
        assert_eq!(col(batch, "final_answer").as_string_view().value(0), "The answer is 42.");
        assert_eq!(col(batch, "final_answer").as_string_view().value(2), "");
        assert!(col(batch, "reasoning").is_null(2));
        let status = col(batch, "status").as_dictionary::<arrow_array::types::Int8Type>();
        assert_eq!(status.keys().value(0), Status::Ok as i8);
        assert_eq!(status.keys().value(2), Status::NoThink as i8);
        assert!(status.is_null(1));
        assert!(col(batch, "error_offset").is_null(0));
        assert_eq!(col(batch, "error_offset").as_primitive::<arrow_array::types::Int64Type>().value(2), 0);
    }

    #[test]
    fn all_layouts() {
        let data = vec![Some(ROW), None, Some("plain text, no think at all")];
        let opts = ParseOptions { spans: true, threads: Some(1) };
        check(&parse_array(&StringArray::from(data.clone()), &opts).unwrap());
        check(&parse_array(&LargeStringArray::from(data.clone()), &opts).unwrap());
        check(&parse_array(&StringViewArray::from(data.clone()), &opts).unwrap());
        // A sliced array: drop a leading row.
        let mut shifted = vec![Some("<think>x</think>")];
        shifted.extend(data);
        let sliced = StringArray::from(shifted).slice(1, 3);
        check(&parse_array(&sliced, &opts).unwrap());
    }

    #[test]
    fn parallel_equals_sequential() {
        let rows: Vec<String> = (0..4000).map(|i| format!("{ROW} {i} {}", "x ".repeat(i % 300))).collect();
        let a = StringArray::from(rows);
        let one = parse_array(&a, &ParseOptions { spans: true, threads: Some(1) }).unwrap();
        let two = parse_array(&a, &ParseOptions { spans: true, threads: Some(2) }).unwrap();
        assert_eq!(one, two);
    }

    #[test]
    fn chunks_equal_whole() {
        let rows: Vec<Option<String>> = (0..3000)
            .map(|i| if i % 97 == 0 { None } else { Some(format!("{ROW} {i} {}", "y ".repeat(i % 500))) })
            .collect();
        let whole = StringArray::from(rows.clone());
        let a = StringArray::from(rows[..1000].to_vec());
        let b = LargeStringArray::from(rows[1000..2000].to_vec());
        let c = StringViewArray::from(rows[2000..].iter().map(|r| r.as_deref()).collect::<Vec<_>>());
        for threads in [Some(1), Some(2)] {
            let opts = ParseOptions { spans: true, threads };
            let expect = parse_array(&whole, &opts).unwrap();
            let got = parse_arrays(&[&a, &b, &c], &opts).unwrap();
            assert_eq!(got, expect);
        }
    }

    #[test]
    fn schema_and_columns_agree() {
        for spans in [false, true] {
            let batch =
                parse_array(&StringArray::from(vec![Some(ROW), None]), &ParseOptions { spans, threads: Some(1) })
                    .unwrap();
            assert_eq!(batch.schema().as_ref(), &output_schema(spans));
            assert_eq!(batch.num_columns(), if spans { 17 } else { 16 });
            assert_eq!(col(&batch, "n_blocks").as_primitive::<arrow_array::types::Int32Type>().value(0), 1);
        }
    }

    #[test]
    fn rejects_non_strings() {
        let err = parse_array(&Int32Array::from(vec![1]), &ParseOptions::default()).unwrap_err();
        assert!(matches!(err, CoreError::UnsupportedType(DataType::Int32)));
    }
}
