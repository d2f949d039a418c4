//! Throughput of the scanning primitives on a file (default: a synthetic ASCII-heavy buffer).
//! (A fused single pass that counted while scanning was tried and measured slower than these two
//! passes, the second reading each row from cache: 4.9 against 7.0 GB/s on real traces.)
//! `cargo run --release -p mementos-core --example scan_speed [FILE]`
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program: its output is the point
use std::time::Instant;

use mementos_core::scan::scan_into;
use mementos_core::text::count_chars_words;

fn main() {
    let data = match std::env::args().nth(1) {
        Some(p) => std::fs::read(p).expect("read"),
        None => "Let me check \\( x \\le 3 \\) again, π ≤ θ. <|block_start|> word word <|block_end|> "
            .repeat(2_000_000)
            .into_bytes(),
    };
    let mb = data.len() as f64 / 1e6;
    let time = |name: &str, f: &mut dyn FnMut() -> u64| {
        let t = Instant::now();
        let mut x = 0;
        for _ in 0..5 {
            x += f();
        }
        println!("{name:>14}: {:>8.0} MB/s ({x})", mb * 5.0 / t.elapsed().as_secs_f64());
    };
    let mut t = Vec::new();
    time("memchr '<'", &mut || memchr_count(&data));
    time("scan_into", &mut || {
        scan_into(&data, &mut t);
        t.len() as u64
    });
    time("count", &mut || count_chars_words(&data).words);
    // Row by row (15 KB rows, as in OpenMementos-sized traces): scan, then count from cache.
    time("rows: 2 passes", &mut || {
        data.chunks(15_000)
            .map(|r| {
                scan_into(r, &mut t);
                count_chars_words(r).words + t.len() as u64
            })
            .sum()
    });
}

fn memchr_count(d: &[u8]) -> u64 {
    d.iter().filter(|&&b| b == b'<').count() as u64
}
