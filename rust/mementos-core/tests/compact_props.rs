//! Property tests (the fuzz targets of the compaction engine and the alignment): no panic on
//! arbitrary input, the rewrite properties, and replay figures consistent with the rewrite.

mod common;

use std::sync::Arc;

use arrow_array::builder::{Int64Builder, ListBuilder, StringBuilder};
use arrow_array::{Array, ArrayRef, LargeStringArray, StringArray};
use common::trace;
use mementos_core::align::align_full;
use mementos_core::compact::{
    count_code_points, inplace_plan, replay, write_pieces, Chars, EngineOptions, Piece, Scratch, Stream,
};
use mementos_core::ops::{compress_arrays, CompressOptions, Style};
use mementos_core::scan::scan;
use proptest::prelude::*;

fn opts() -> impl Strategy<Value = EngineOptions> {
    (-1i64..4, any::<bool>(), any::<bool>(), any::<bool>(), prop::bool::weighted(0.8)).prop_map(
        |(k, mask, kfa, restart, on_end)| EngineOptions {
            keep_last_k: k,
            mask_delimiters: mask,
            keep_last_block_for_answer: kfa && k == 0,
            restart_mode: restart,
            compact_on_summary_end: on_end,
        },
    )
}

fn inplace(s: &str, o: &EngineOptions) -> (String, Vec<Piece>) {
    let tokens = scan(s.as_bytes());
    let mut pieces = Vec::new();
    inplace_plan(s.as_bytes(), &tokens, o, &mut Scratch::default(), &mut pieces);
    let mut out = vec![0u8; pieces.iter().map(Piece::len).sum()];
    write_pieces(s.as_bytes(), &pieces, &mut out);
    (String::from_utf8(out).expect("valid UTF-8"), pieces)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)))]

    #[test]
    fn inplace_keeps_ordered_source_ranges(s in trace(200), o in opts()) {
        let (out, pieces) = inplace(&s, &o);
        let mut pos = 0;
        for p in &pieces {
            let Piece::Src(r) = p else { panic!("inplace emits source ranges only") };
            prop_assert!(r.start >= pos && r.end <= s.len());
            pos = r.end;
        }
        if o.keep_last_k == -1 {
            prop_assert_eq!(&out, &s);
        }
        if o.keep_last_k >= 0 && !o.keep_last_block_for_answer {
            let more = EngineOptions { keep_last_k: o.keep_last_k + 1, ..o };
            prop_assert!(inplace(&s, &more).0.len() >= out.len());
        }
        // Summaries and think tags are never removed.
        for d in ["<|summary_start|>", "<|summary_end|>", "<think>", "</think>"] {
            prop_assert!(out.matches(d).count() <= s.matches(d).count());
        }
    }

    #[test]
    fn code_points_are_chars(s in "\\PC{0,300}", pad in 0usize..70) {
        // Any length around the vector path's 64-byte threshold and its chunk tails.
        let s = "é".repeat(pad) + &s;
        prop_assert_eq!(count_code_points(s.as_bytes()), s.chars().count() as u64);
    }

    #[test]
    fn replay_agrees_with_the_rewrite(s in trace(200), o in opts(), prompt in 0u64..100) {
        let tokens = scan(s.as_bytes());
        let st = replay(Stream::response(s.as_bytes(), &tokens), &o, prompt, &Chars, &mut Scratch::default(), &mut Vec::new(), None);
        let (out, _) = inplace(&s, &o);
        prop_assert_eq!(st.total_len, count_code_points(s.as_bytes()));
        prop_assert_eq!(st.final_len, prompt + count_code_points(out.as_bytes()));
        prop_assert!(st.peak_len <= prompt + st.total_len);
        prop_assert!(st.peak_len >= st.final_len);
        prop_assert!(st.mean_len <= st.full_mean() + 1e-9);
        prop_assert!(st.kv_auc <= st.full_auc());
    }

    #[test]
    fn compress_batches_never_panic(rows in prop::collection::vec(prop::option::of(trace(200)), 0..20), k in -1i64..3) {
        let a = LargeStringArray::from(rows.clone());
        for style in [Style::Tutorial, Style::Inplace] {
            let o = CompressOptions { style, engine: EngineOptions { keep_last_k: k, ..Default::default() }, threads: Some(1) };
            let out = compress_arrays(&[&a], &o).unwrap();
            prop_assert_eq!(out.len(), rows.len());
        }
    }

    #[test]
    fn alignment_never_panics(
        response in trace(200),
        sents in prop::collection::vec(".{0,8}", 0..8),
        blocks in prop::collection::vec(prop::collection::vec(-2i64..10, 0..4), 0..6),
        sums in prop::collection::vec(".{0,8}", 0..6),
    ) {
        let mut sb = ListBuilder::new(StringBuilder::new());
        for s in &sents { sb.values().append_value(s); }
        sb.append(true);
        let mut bb = ListBuilder::new(ListBuilder::new(Int64Builder::new()));
        for b in &blocks {
            for &v in b { bb.values().values().append_value(v); }
            bb.values().append(true);
        }
        bb.append(true);
        let mut mb = ListBuilder::new(StringBuilder::new());
        for s in &sums { mb.values().append_value(s); }
        mb.append(true);
        let cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![response])), Arc::new(sb.finish()), Arc::new(bb.finish()), Arc::new(mb.finish())];
        let out = align_full(cols[0].as_ref(), cols[1].as_ref(), cols[2].as_ref(), cols[3].as_ref(), Some(1)).unwrap();
        prop_assert_eq!(out.num_rows(), 1);
        prop_assert!(out.column_by_name("status").unwrap().is_valid(0));
    }
}
