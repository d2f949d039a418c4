//! Count the tokens of text files on one thread, for profiling (`perf record`, callgrind).
//!
//! `cargo run --release -p mementos-bpe --example count_files -- TOKENIZER_JSON ROUNDS FILE...`
//!
//! Each file holds documents separated by NUL bytes; every round starts with an empty piece cache
//! and counts every document. Prints MB/s per file (best and median wall time) and MB per second
//! of the thread's CPU time (median).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program: its output is the point

use std::time::Instant;

use mementos_bpe::FastBpe;

/// CPU time of the calling thread in seconds (Linux `schedstat`: run time in ns), so that the
/// numbers stay meaningful on a machine shared with other jobs; `None` elsewhere.
fn thread_cpu() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(s.split_whitespace().next()?.parse::<f64>().ok()? / 1e9)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: count_files TOKENIZER_JSON ROUNDS FILE...");
        std::process::exit(2);
    }
    let json = std::fs::read_to_string(&args[1]).expect("tokenizer.json");
    let rounds: usize = args[2].parse().expect("ROUNDS");
    let mut bpe = FastBpe::from_json(&json).expect("a supported tokenizer");
    for path in &args[3..] {
        let text = std::fs::read_to_string(path).expect("a UTF-8 file");
        let docs: Vec<&str> = text.split('\0').collect();
        let mut times = Vec::new();
        let mut cpu = Vec::new();
        let mut tokens = 0;
        for _ in 0..rounds {
            bpe.clear_cache();
            let (t, c) = (Instant::now(), thread_cpu());
            tokens = docs.iter().map(|d| bpe.count(d)).sum::<usize>();
            times.push(t.elapsed().as_secs_f64());
            if let (Some(c0), Some(c1)) = (c, thread_cpu()) {
                cpu.push(c1 - c0);
            }
        }
        times.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        let mb = text.len() as f64 / 1e6;
        let per_cpu =
            cpu.get(cpu.len() / 2).map(|c| format!(", median {:.1} MB per CPU second", mb / c)).unwrap_or_default();
        println!(
            "{path}: {} docs, {mb:.2} MB, {tokens} tokens: best {:.1} MB/s, median {:.1} MB/s{per_cpu}",
            docs.len(),
            mb / times[0],
            mb / times[times.len() / 2]
        );
    }
}
