//! `cargo test -p mementos-tokens`: counts from Arrow equal whole-text `tokenizers` encodes, with
//! a small byte-level BPE built here; the derivation arithmetic is checked with a mock counter.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, LargeStringArray, RecordBatch, StringArray, StringViewArray};
use mementos_core::parse::parse;
use mementos_core::Delim;
use mementos_tokens::{count_arrays, count_text, counter_for, CountOptions, HfCounter, SegmentCounter, TokensError};
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// A GPT-2-style byte-level BPE: the 256 byte symbols plus a few merges.
fn small_bpe(with_delimiters: bool) -> String {
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    let mut vocab: ahash::AHashMap<String, u32> = alphabet.iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
    let merges: Vec<(String, String)> =
        [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("o", "n"), ("Ġ", "Ġ"), ("1", "2")]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    for (a, b) in &merges {
        let n = vocab.len() as u32;
        vocab.entry(format!("{a}{b}")).or_insert(n);
    }
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().unwrap();
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
    if with_delimiters {
        tok.add_special_tokens(Delim::ALL.iter().map(|d| AddedToken::from(d.text(), true))).unwrap();
    }
    tok.to_string(false).unwrap()
}

fn hf() -> HfCounter {
    HfCounter::from_json(&small_bpe(true)).unwrap()
}

/// The whole-text reference: `encode(text, add_special_tokens=false)`.
fn encode_len(c: &HfCounter, text: &str) -> i64 {
    c.tokenizer().encode(text, false).unwrap().len() as i64
}

const ROWS: &[&str] = &[
    "<think>\n<|block_start|> the thin one in 12 <|block_end|>\n<|summary_start|> the 12 <|summary_end|>\n</think>\n\nanswer",
    "<think><|block_start|>a \"<|summary_start|>q<|summary_end|>\"<|block_end|><|summary_start|> b <|summary_end|></think>",
    "no think at all, just text with <| and < and |>",
    "",
    "   ",
    "<think><think></think></think>",
    "<|block_start|> unclosed <|block_start|> twice <|block_end|> tail",
    "<think>\r\n<|block_start|>\r\n€ 😀 ünï 日本 \t<|block_end|><|summary_start|>\u{a0}x\u{a0}<|summary_end|></think>",
];

fn i32_list(batch: &RecordBatch, name: &str, row: usize) -> Vec<i32> {
    batch.column_by_name(name).unwrap().as_list::<i32>().value(row).as_primitive::<Int32Type>().values().to_vec()
}

fn i64_at(batch: &RecordBatch, name: &str, row: usize) -> i64 {
    batch.column_by_name(name).unwrap().as_primitive::<Int64Type>().value(row)
}

#[test]
fn counts_equal_whole_encodes() {
    let c = hf();
    let batch = count_arrays(&[&StringArray::from(ROWS.to_vec())], &c, &CountOptions { threads: Some(1), ..Default::default() }).unwrap();
    for (i, row) in ROWS.iter().enumerate() {
        assert_eq!(i64_at(&batch, "total_tokens", i), encode_len(&c, row), "{row:?}");
        assert_eq!(count_text(row, &c) as i64, encode_len(&c, row));
        let p = parse(row);
        let spans: Vec<i64> = p.spans.iter().map(|s| encode_len(&c, &row[s.start..s.end])).collect();
        assert_eq!(i32_list(&batch, "span_tokens", i).iter().map(|&x| x as i64).collect::<Vec<_>>(), spans);
        let stripped: Vec<i32> = p.blocks.iter().map(|r| encode_len(&c, &row[r.clone()]) as i32).collect();
        assert_eq!(i32_list(&batch, "block_tokens_stripped", i), stripped, "{row:?}");
        let stripped: Vec<i32> = p.summaries.iter().map(|r| encode_len(&c, &row[r.clone()]) as i32).collect();
        assert_eq!(i32_list(&batch, "summary_tokens_stripped", i), stripped, "{row:?}");
        let ctx = i32_list(&batch, "block_tokens", i);
        assert_eq!(ctx.iter().map(|&x| x as i64).sum::<i64>(), i64_at(&batch, "block_tokens_total", i));
    }
    // Row 0 in detail: " the thin one in 12 " in context, "the thin one in 12" stripped.
    assert_eq!(i32_list(&batch, "block_tokens", 0), vec![encode_len(&c, " the thin one in 12 ") as i32]);
    let ratio = batch.column_by_name("compression_ratio").unwrap().as_primitive::<Float64Type>();
    assert!(ratio.is_valid(0) && ratio.is_null(2));
    assert_eq!(batch.schema().metadata()["backend"], "hf");
}

#[test]
fn layouts_threads_and_nulls() {
    let c = hf();
    let rows: Vec<Option<String>> =
        (0..600).map(|i| if i % 50 == 7 { None } else { Some(format!("{} {}", ROWS[i % ROWS.len()], "the 12 ".repeat(i % 40))) }).collect();
    let base = count_arrays(&[&StringArray::from(rows.clone())], &c, &CountOptions { threads: Some(1), ..Default::default() }).unwrap();
    assert_eq!(base.column(0).null_count(), 12);
    let large = LargeStringArray::from(rows.clone());
    let view = StringViewArray::from(rows.iter().map(|r| r.as_deref()).collect::<Vec<_>>());
    let (a, b) = (StringArray::from(rows[..100].to_vec()), LargeStringArray::from(rows[100..].to_vec()));
    for threads in [Some(1), Some(2), None] {
        let opts = CountOptions { threads, ..Default::default() };
        assert_eq!(count_arrays(&[&large], &c, &opts).unwrap(), base);
        assert_eq!(count_arrays(&[&view], &c, &opts).unwrap(), base);
        assert_eq!(count_arrays(&[&a, &b], &c, &opts).unwrap(), base);
    }
}

/// Counts bytes: the derivations must then be plain byte arithmetic.
struct Bytes;
impl SegmentCounter for Bytes {
    fn count(&self, text: &str) -> usize {
        text.len()
    }
    fn name(&self) -> &str {
        "bytes"
    }
}

#[test]
fn derivations_with_a_mock_counter() {
    let row = "pre<think> x <|block_start|> ab <think> c <|block_end|><|summary_start|>s<|summary_end|>\n</think> answer";
    let batch = count_arrays(&[&StringArray::from(vec![row])], &Bytes, &CountOptions::default()).unwrap();
    // 7 delimiters, one token each; the other bytes one token each.
    let found = mementos_core::scan(row.as_bytes());
    assert_eq!(found.len(), 7);
    let delim_bytes: usize = found.iter().map(|t| t.delim.len()).sum();
    assert_eq!(i64_at(&batch, "total_tokens", 0), (row.len() - delim_bytes + 7) as i64);
    assert_eq!(i32_list(&batch, "block_tokens", 0), vec![4 + 1 + 3]); // " ab " <think> " c "
    assert_eq!(i32_list(&batch, "block_tokens_stripped", 0), vec![3 + 1 + 2]); // "ab " <think> " c"
    assert_eq!(i32_list(&batch, "summary_tokens", 0), vec![1]);
    assert_eq!(i64_at(&batch, "think_preamble_tokens", 0), 3 + 1);
    assert_eq!(i64_at(&batch, "between_tokens", 0), 3 + 1);
    assert_eq!(i64_at(&batch, "answer_tokens", 0), 7);
    assert_eq!(batch.schema().metadata()["backend"], "bytes");
}

#[test]
fn without_stripped_columns() {
    let c = hf();
    let a = StringArray::from(ROWS.to_vec());
    let full = count_arrays(&[&a], &c, &CountOptions::default()).unwrap();
    let lean = count_arrays(&[&a], &c, &CountOptions { threads: None, stripped: false }).unwrap();
    assert_eq!(lean.num_columns() + 2, full.num_columns());
    for f in lean.schema().fields() {
        assert_eq!(lean.column_by_name(f.name()).unwrap(), full.column_by_name(f.name()).unwrap());
    }
}

#[test]
fn backend_and_tokenizer_errors() {
    assert!(matches!(counter_for("nope", &small_bpe(true)), Err(TokensError::UnknownBackend(..))));
    assert!(counter_for("hf", &small_bpe(true)).is_ok());
    assert!(matches!(HfCounter::from_json(&small_bpe(false)), Err(TokensError::MissingDelimiter("<think>"))));
    assert!(matches!(HfCounter::from_json("{"), Err(TokensError::Tokenizer(_))));
}

#[test]
fn invalid_utf8_is_an_error_naming_the_row() {
    use arrow_buffer::{Buffer, OffsetBuffer, ScalarBuffer};
    // Row 1 holds the bytes of "ok" then 0xFF: invalid UTF-8, which `StringArray::new_unchecked`
    // accepts as a C-interface import or `pa.Array.from_buffers` would.
    let values = Buffer::from(b"<think>a</think>ok\xff".to_vec());
    let offsets = OffsetBuffer::new(ScalarBuffer::from(vec![0i32, 16, 19]));
    let a = unsafe { StringArray::new_unchecked(offsets, values, None) };
    for total in [false, true] {
        let err = if total {
            mementos_tokens::total_arrays(&[&a], &Bytes, &CountOptions::default()).unwrap_err()
        } else {
            count_arrays(&[&a], &Bytes, &CountOptions::default()).unwrap_err()
        };
        let msg = err.to_string();
        assert!(msg.contains("row 1: invalid UTF-8 at byte 2"), "{msg}");
    }
    // Null rows are not read.
    let nulls = arrow_buffer::NullBuffer::from(vec![true, false]);
    let a = unsafe { StringArray::new_unchecked(a.offsets().clone(), a.values().clone(), Some(nulls)) };
    assert!(count_arrays(&[&a], &Bytes, &CountOptions::default()).is_ok());
}
