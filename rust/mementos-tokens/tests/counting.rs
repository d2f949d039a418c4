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
    let mut vocab: ahash::AHashMap<String, u32> =
        alphabet.iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
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
    let batch = count_arrays(
        &[&StringArray::from(ROWS.to_vec())],
        &c,
        &CountOptions { threads: Some(1), ..Default::default() },
    )
    .unwrap();
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
        (0..600)
            .map(|i| {
                if i % 50 == 7 {
                    None
                } else {
                    Some(format!("{} {}", ROWS[i % ROWS.len()], "the 12 ".repeat(i % 40)))
                }
            })
            .collect();
    let base =
        count_arrays(&[&StringArray::from(rows.clone())], &c, &CountOptions { threads: Some(1), ..Default::default() })
            .unwrap();
    assert_eq!(base.column_by_name("total_tokens").unwrap().null_count(), 12);
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
    let row =
        "pre<think> x <|block_start|> ab <think> c <|block_end|><|summary_start|>s<|summary_end|>\n</think> answer";
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

/// A GPT-2-style BPE with an extra added token `extra` (e.g. one containing "letter space").
fn small_bpe_with(extra: &str) -> String {
    let json = small_bpe(true);
    let mut tok: Tokenizer = json.parse().unwrap();
    let _ = tok.add_tokens([AddedToken::from(extra, false)]);
    tok.to_string(false).unwrap()
}

/// Texts with every kind of edge: words, several spaces, newlines, punctuation, digits, non-ASCII.
fn edge_texts() -> Vec<String> {
    let words = ["the", "thin", "12", "in", "on", "a", "é", "日本", "x!", "\"q\"", "he", "it's", "I'M"];
    let gaps = [" ", "  ", "\n", " \n ", "\t", "\r\n", ", ", ". ", ""];
    let mut out = Vec::new();
    let mut seed = 7u64;
    let mut next = |n: usize| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n
    };
    for _ in 0..400 {
        let mut s = String::new();
        for _ in 0..next(4) {
            s += gaps[next(gaps.len())];
        }
        for _ in 0..1 + next(30) {
            s += words[next(words.len())];
            s += gaps[next(gaps.len())];
        }
        out.push(s);
    }
    out.extend(
        ["a b", " a b ", "ab cd ef", "  x y  ", "\nfoo bar baz\n", "he the he", " a\u{301} b c "].map(String::from),
    );
    out
}

#[test]
fn fast_count_range_equals_counting_the_range() {
    for extra in ["<|endoftext|>", "he t", "e th"] {
        let json = small_bpe_with(extra);
        let fast = mementos_tokens::FastCounter::from_json(&json).unwrap();
        let hf = HfCounter::from_json(&json).unwrap();
        for text in edge_texts() {
            let whole = fast.count(&text);
            assert_eq!(whole as i64, encode_len(&hf, &text), "{text:?}");
            let r = mementos_core::text::strip_range(text.as_bytes(), 0..text.len());
            let want = encode_len(&hf, &text[r.clone()]) as usize;
            assert_eq!(fast.count_range(&text, r.clone(), whole), want, "{extra:?} {text:?} {r:?}");
            // Any range that starts and ends on character boundaries.
            let b: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
            for (i, j) in [(1, b.len() - 2), (b.len() / 3, b.len() - 1), (0, b.len() / 2)] {
                if i < j && j < b.len() {
                    let r = b[i]..b[j];
                    assert_eq!(
                        fast.count_range(&text, r.clone(), whole),
                        encode_len(&hf, &text[r.clone()]) as usize,
                        "{text:?} {r:?}"
                    );
                }
            }
        }
    }
}

/// Token units from a counter, as the bindings' replay uses them (each delimiter one token).
struct Units<'a>(&'a dyn SegmentCounter);
impl mementos_core::compact::Units for Units<'_> {
    fn text(&self, s: &[u8]) -> u64 {
        self.0.count(std::str::from_utf8(s).unwrap()) as u64
    }
    fn delim(&self, _: Delim) -> u64 {
        1
    }
}

#[test]
fn analyze_equals_encodes_and_the_token_replay() {
    use mementos_core::compact::EngineOptions;
    use mementos_core::ops::{replay_arrays, PromptLen};
    use mementos_tokens::{analyze_arrays, AnalyzeOptions, FastCounter};

    let mut rows: Vec<Option<String>> = ROWS.iter().map(|r| Some(r.to_string())).collect();
    for (i, t) in edge_texts().into_iter().enumerate().take(60) {
        rows.push(Some(format!(
            "<think>\n<|block_start|>{t}<|block_end|>\n<|summary_start|> {t}x <|summary_end|>\n</think>\n{i}"
        )));
    }
    rows.push(None);
    let array = StringArray::from(rows.clone());
    let prompts =
        StringArray::from(rows.iter().map(|r| r.as_ref().map(|_| "<|im_start|>user\nq<|im_end|>")).collect::<Vec<_>>());
    let hf = hf();
    let fast = FastCounter::from_json(&small_bpe(true)).unwrap();
    for counter in [&hf as &dyn SegmentCounter, &fast] {
        for keep_last_k in [0, 1, -1] {
            let opts = AnalyzeOptions { engine: EngineOptions { keep_last_k, ..Default::default() }, threads: Some(2) };
            let got = analyze_arrays(&[&array], Some(&[&prompts]), counter, &opts).unwrap();
            let prompt = count_text("<|im_start|>user\nq<|im_end|>", counter) as u64;
            let lens: Vec<u64> = rows.iter().map(|r| if r.is_some() { prompt } else { 0 }).collect();
            let replay =
                replay_arrays(&[&array], &opts.engine, PromptLen::PerRow(&lens), None, &Units(counter), Some(1))
                    .unwrap();
            for name in ["peak_len", "kv_auc", "full_peak_len"] {
                let theirs = replay.column_by_name(name).unwrap();
                let ours = got.column_by_name(match name {
                    "peak_len" => "replay_peak_tokens",
                    "kv_auc" => "kv_auc_tokens",
                    _ => "replay_full_peak_tokens",
                });
                assert_eq!(ours.unwrap(), theirs, "{name}");
            }
            for (i, row) in rows.iter().enumerate() {
                let Some(row) = row else {
                    assert!(got.column_by_name("response_tokens").unwrap().is_null(i));
                    continue;
                };
                let p = parse(row);
                let blocks: i64 = p.blocks.iter().map(|r| encode_len(&hf, &row[r.clone()])).sum();
                let summaries: i64 = p.summaries.iter().map(|r| encode_len(&hf, &row[r.clone()])).sum();
                assert_eq!(i64_at(&got, "response_tokens", i), encode_len(&hf, row));
                assert_eq!(i64_at(&got, "prompt_tokens", i), prompt as i64);
                assert_eq!(
                    (i64_at(&got, "block_tokens", i), i64_at(&got, "summary_tokens", i)),
                    (blocks, summaries),
                    "{row:?}"
                );
            }
        }
    }
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
