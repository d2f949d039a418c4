//! Property tests of the core: lossless spans, equality with a naive model of the tutorial's
//! regexes, Python-exact text measures, and no panic on arbitrary bytes.

mod common;

use common::trace;
use mementos_core::parse::{parse, parse_row, Parsed};
use mementos_core::text::{count_chars_words, is_py_space};
use proptest::prelude::*;

fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// The tutorial's `findall(open(.*?)close)` written the obvious way with `str::find`.
fn model_pairs<'a>(s: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(a) = s[pos..].find(open) {
        let from = pos + a + open.len();
        match s[from..].find(close) {
            Some(b) => {
                out.push(py_strip(&s[from..from + b]));
                pos = from + b + close.len();
            }
            None => break,
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)))]

    #[test]
    fn spans_cover_the_row(s in trace(300)) {
        let p = parse(&s);
        let mut pos = 0;
        for sp in &p.spans {
            prop_assert_eq!(sp.start, pos);
            prop_assert!(sp.end > sp.start);
            pos = sp.end;
        }
        prop_assert_eq!(pos, s.len());
    }

    #[test]
    fn tutorial_fields_equal_model(s in trace(300)) {
        let p = parse(&s);
        let text = |r: &std::ops::Range<usize>| &s[r.clone()];
        prop_assert_eq!(p.blocks.iter().map(text).collect::<Vec<_>>(), model_pairs(&s, "<|block_start|>", "<|block_end|>"));
        prop_assert_eq!(p.summaries.iter().map(text).collect::<Vec<_>>(), model_pairs(&s, "<|summary_start|>", "<|summary_end|>"));
        let reasoning = s.find("<think>").and_then(|a| s[a + 7..].find("</think>").map(|b| &s[a + 7..a + 7 + b]));
        prop_assert_eq!(p.reasoning.as_ref().map(text), reasoning);
        let answer = s.rfind("</think>").map(|a| py_strip(&s[a + 8..]));
        prop_assert_eq!(p.final_answer.as_ref().map(text), answer);
        prop_assert_eq!(p.error_offset.is_none(), p.status == mementos_core::Status::Ok);
    }

    #[test]
    fn text_measures_equal_model(s in "(\\PC|\\s|[\u{85}\u{a0}\u{2000}-\u{200b}\u{2028}\u{3000}]){0,200}") {
        let st = count_chars_words(s.as_bytes());
        prop_assert_eq!(st.chars, s.chars().count() as u64);
        prop_assert_eq!(st.words, s.split(is_py_space).filter(|w| !w.is_empty()).count() as u64);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut out = Parsed::default();
        parse_row(&b, &mut Vec::new(), &mut out, true);
        let covered: usize = out.spans.iter().map(|s| s.end - s.start).sum();
        prop_assert_eq!(covered, b.len());
        let _ = count_chars_words(&b);
    }
}
