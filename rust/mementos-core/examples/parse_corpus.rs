//! One-core throughput of `parse_array` on a corpus file, against a memchr pass over the same bytes.
//! The file holds rows as (u32 little-endian length, UTF-8 bytes) records; write one with
//! `benches/dump_corpus.py`. `cargo run --release -p mementos-core --example parse_corpus FILE [ROUNDS]`
//! (ROUNDS=1 under `valgrind --tool=callgrind` for stable instruction counts).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program: its output is the point
use std::time::Instant;

use arrow_array::{Array, LargeStringArray};
use mementos_core::batch::{count_byte, parse_array, ParseOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: parse_corpus FILE [ROUNDS]");
    let rounds: usize = args.next().map_or(5, |r| r.parse().expect("ROUNDS is a number"));
    let data = std::fs::read(path).expect("read corpus");
    let mut rows = Vec::new();
    let mut at = 0;
    while at + 4 <= data.len() {
        let n = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        rows.push(std::str::from_utf8(&data[at + 4..at + 4 + n]).expect("UTF-8 row"));
        at += 4 + n;
    }
    let array = LargeStringArray::from(rows);
    let mb = array.values().len() as f64 / 1e6;
    let opts = ParseOptions { spans: false, threads: Some(1) };
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..rounds {
        let t = Instant::now();
        let batch = parse_array(&array, &opts).expect("parse");
        best.0 = best.0.min(t.elapsed().as_secs_f64());
        assert_eq!(batch.num_rows(), array.len());
        let t = Instant::now();
        let n = count_byte(&[&array], b'<').expect("count");
        best.1 = best.1.min(t.elapsed().as_secs_f64());
        assert!(n > 0);
    }
    println!("parse_array (1 thread): {:>8.0} MB/s", mb / best.0);
    println!("memchr '<' floor:       {:>8.0} MB/s", mb / best.1);
    println!("ratio to floor:         {:>8.2}x", best.0 / best.1);
}
