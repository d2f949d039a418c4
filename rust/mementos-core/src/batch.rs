//! Batch parsing over Arrow string arrays, zero-copy.
//!
//! Input: any string layout [`crate::rows`] reads. Output: a `RecordBatch` whose text columns
//! are `Utf8View` arrays pointing into the *input's* buffers: no text byte is copied (strings of
//! 12 bytes or fewer are inlined in their view, as the Arrow spec requires). Rows are split into
//! chunks of balanced byte size and parsed in parallel ([`crate::par`]); chunk outputs are
//! concatenated in order.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::builder::make_view;
use arrow_array::types::Int8Type;
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Int32Array, Int64Array, Int8Array, ListArray, RecordBatch, StringArray,
    StringViewArray, StructArray,
};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Fields, Schema};

use crate::error::CoreError;
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

/// Columns of one chunk of rows, concatenated in order afterwards.
#[derive(Default)]
struct Chunk {
    valid: Vec<bool>,
    block_views: Vec<u128>,
    block_counts: Vec<usize>,
    block_item_chars: Vec<i32>,
    block_item_words: Vec<i32>,
    summary_item_chars: Vec<i32>,
    summary_item_words: Vec<i32>,
    summary_views: Vec<u128>,
    summary_counts: Vec<usize>,
    reasoning: Vec<u128>,
    reasoning_valid: Vec<bool>,
    answer: Vec<u128>,
    block_chars: Vec<i64>,
    block_words: Vec<i64>,
    summary_chars: Vec<i64>,
    summary_words: Vec<i64>,
    status: Vec<i8>,
    error_offset: Vec<i64>,
    span_kind: Vec<i8>,
    span_start: Vec<i64>,
    span_end: Vec<i64>,
    span_counts: Vec<usize>,
}

impl Chunk {
    fn extend(&mut self, o: Chunk) {
        self.valid.extend(o.valid);
        self.block_views.extend(o.block_views);
        self.block_counts.extend(o.block_counts);
        self.block_item_chars.extend(o.block_item_chars);
        self.block_item_words.extend(o.block_item_words);
        self.summary_item_chars.extend(o.summary_item_chars);
        self.summary_item_words.extend(o.summary_item_words);
        self.summary_views.extend(o.summary_views);
        self.summary_counts.extend(o.summary_counts);
        self.reasoning.extend(o.reasoning);
        self.reasoning_valid.extend(o.reasoning_valid);
        self.answer.extend(o.answer);
        self.block_chars.extend(o.block_chars);
        self.block_words.extend(o.block_words);
        self.summary_chars.extend(o.summary_chars);
        self.summary_words.extend(o.summary_words);
        self.status.extend(o.status);
        self.error_offset.extend(o.error_offset);
        self.span_kind.extend(o.span_kind);
        self.span_start.extend(o.span_start);
        self.span_end.extend(o.span_end);
        self.span_counts.extend(o.span_counts);
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
    let parts = par::map_chunks(rows, opts.threads, Work::Scan, |r| parse_chunk(rows, r, opts.spans))?;
    let mut all = Chunk::default();
    for p in parts {
        all.extend(p);
    }
    Ok(all)
}

fn dictionary(keys: Vec<i8>, nulls: Option<NullBuffer>, names: Vec<&'static str>) -> DictionaryArray<Int8Type> {
    let keys = Int8Array::new(ScalarBuffer::from(keys), nulls);
    DictionaryArray::try_new(keys, Arc::new(StringArray::from(names))).expect("keys are in range")
}

/// The dictionary type of the `status` and span `kind` columns.
pub fn dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8))
}

fn status_names() -> Vec<&'static str> {
    Status::ALL.iter().map(|s| s.name()).collect()
}

/// Output schema of [`parse_array`].
pub fn output_schema(spans: bool) -> Schema {
    let view_list = DataType::List(Arc::new(Field::new("item", DataType::Utf8View, false)));
    let int_list = DataType::List(Arc::new(Field::new("item", DataType::Int32, false)));
    let mut fields = vec![
        Field::new("blocks", view_list.clone(), true),
        Field::new("summaries", view_list, true),
        Field::new("reasoning", DataType::Utf8View, true),
        Field::new("final_answer", DataType::Utf8View, true),
        Field::new("n_blocks", DataType::Int32, true),
        Field::new("n_summaries", DataType::Int32, true),
        Field::new("block_chars", DataType::Int64, true),
        Field::new("summary_chars", DataType::Int64, true),
        Field::new("block_words", DataType::Int64, true),
        Field::new("summary_words", DataType::Int64, true),
        Field::new("status", dictionary_type(), true),
        Field::new("error_offset", DataType::Int64, true),
        Field::new("block_char_counts", int_list.clone(), true),
        Field::new("summary_char_counts", int_list.clone(), true),
        Field::new("block_word_counts", int_list.clone(), true),
        Field::new("summary_word_counts", int_list, true),
    ];
    if spans {
        fields.push(Field::new(
            "spans",
            DataType::List(Arc::new(Field::new("item", DataType::Struct(span_fields()), false))),
            true,
        ));
    }
    Schema::new(fields)
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
    let buffers: Arc<[Buffer]> = rows.buffers().into();
    let row_nulls = if c.valid.iter().all(|&v| v) { None } else { Some(NullBuffer::from(c.valid.clone())) };
    // SAFETY: every view was made by `make_view` from a sub-slice of a row that lies inside
    // buffer `buffer_index` at `offset`, on a UTF-8 boundary (delimiters are ASCII and stripping
    // removes whole characters), so the views are valid for these buffers.
    let views = |v: Vec<u128>, nulls: Option<NullBuffer>| -> ArrayRef {
        Arc::new(unsafe { StringViewArray::new_unchecked(ScalarBuffer::from(v), buffers.clone(), nulls) })
    };
    let item = Arc::new(Field::new("item", DataType::Utf8View, false));
    let block_offsets = OffsetBuffer::<i32>::from_lengths(c.block_counts.iter().copied());
    let summary_offsets = OffsetBuffer::<i32>::from_lengths(c.summary_counts.iter().copied());
    let list = |v: Vec<u128>, offsets: &OffsetBuffer<i32>| -> ArrayRef {
        Arc::new(ListArray::new(item.clone(), offsets.clone(), views(v, None), row_nulls.clone()))
    };
    let int_item = Arc::new(Field::new("item", DataType::Int32, false));
    let int_list = |v: Vec<i32>, offsets: &OffsetBuffer<i32>| -> ArrayRef {
        Arc::new(ListArray::new(int_item.clone(), offsets.clone(), Arc::new(Int32Array::from(v)), row_nulls.clone()))
    };
    let counts_i32 = |counts: &[usize]| -> ArrayRef {
        Arc::new(Int32Array::new(counts.iter().map(|&n| n as i32).collect(), row_nulls.clone()))
    };
    let i64s = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::new(ScalarBuffer::from(v), row_nulls.clone())) };
    let error_valid: Vec<bool> = c.valid.iter().zip(&c.status).map(|(&v, &s)| v && s != Status::Ok as i8).collect();

    let mut columns: Vec<ArrayRef> = vec![
        list(c.block_views, &block_offsets),
        list(c.summary_views, &summary_offsets),
        views(c.reasoning, Some(NullBuffer::from(c.reasoning_valid))),
        views(c.answer, row_nulls.clone()),
        counts_i32(&c.block_counts),
        counts_i32(&c.summary_counts),
        i64s(c.block_chars),
        i64s(c.summary_chars),
        i64s(c.block_words),
        i64s(c.summary_words),
        Arc::new(dictionary(c.status, row_nulls.clone(), status_names())),
        Arc::new(Int64Array::new(ScalarBuffer::from(c.error_offset), Some(NullBuffer::from(error_valid)))),
        int_list(c.block_item_chars, &block_offsets),
        int_list(c.summary_item_chars, &summary_offsets),
        int_list(c.block_item_words, &block_offsets),
        int_list(c.summary_item_words, &summary_offsets),
    ];
    if opts.spans {
        let kinds = dictionary(c.span_kind, None, SpanKind::ALL.iter().map(|k| k.name()).collect());
        let starts = Int64Array::new(ScalarBuffer::from(c.span_start), None);
        let ends = Int64Array::new(ScalarBuffer::from(c.span_end), None);
        let structs = StructArray::new(span_fields(), vec![Arc::new(kinds), Arc::new(starts), Arc::new(ends)], None);
        let field = Arc::new(Field::new("item", DataType::Struct(span_fields()), false));
        columns.push(Arc::new(ListArray::new(
            field,
            OffsetBuffer::from_lengths(c.span_counts.iter().copied()),
            Arc::new(structs),
            row_nulls.clone(),
        )));
    }
    Ok(RecordBatch::try_new(Arc::new(output_schema(opts.spans)), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::LargeStringArray;

    const ROW: &str = "<think>\n<|block_start|> first block, long enough to need a buffer <|block_end|>\n<|summary_start|> short <|summary_end|>\n</think>\n\nThe answer is 42.";

    fn check(batch: &RecordBatch) {
        let blocks = batch.column(0).as_list::<i32>();
        assert_eq!(blocks.value(0).as_string_view().value(0), "first block, long enough to need a buffer");
        assert_eq!(blocks.value(0).as_string_view().len(), 1);
        assert!(batch.column(0).is_null(1));
        assert_eq!(batch.column(1).as_list::<i32>().value(0).as_string_view().value(0), "short");
        assert_eq!(batch.column(3).as_string_view().value(0), "The answer is 42.");
        assert_eq!(batch.column(3).as_string_view().value(2), "");
        assert!(batch.column(2).is_null(2));
        let status = batch.column(10).as_dictionary::<Int8Type>();
        assert_eq!(status.keys().value(0), Status::Ok as i8);
        assert_eq!(status.keys().value(2), Status::NoThink as i8);
        assert!(status.is_null(1));
        assert!(batch.column(11).is_null(0));
        assert_eq!(batch.column(11).as_primitive::<arrow_array::types::Int64Type>().value(2), 0);
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
    fn rejects_non_strings() {
        let err = parse_array(&Int32Array::from(vec![1]), &ParseOptions::default()).unwrap_err();
        assert!(matches!(err, CoreError::UnsupportedType(DataType::Int32)));
    }
}
