//! Time `FastBpe::from_json` (the load of a `tokenizer.json`), for comparing builds.
//!
//! `cargo run --release -p mementos-bpe --example load_time -- TOKENIZER_JSON [ROUNDS]`
//!
//! Reads the file once, then loads it ROUNDS times (default 7) and prints every wall time, the
//! best and the median.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program: its output is the point

use std::time::Instant;

use mementos_bpe::FastBpe;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 2 {
        eprintln!("usage: load_time TOKENIZER_JSON [ROUNDS]");
        std::process::exit(2);
    }
    let json = std::fs::read_to_string(&args[1]).expect("tokenizer.json");
    let rounds: usize = args.get(2).map_or(7, |r| r.parse().expect("ROUNDS"));
    let mut times = Vec::new();
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let bpe = FastBpe::from_json(&json).expect("a supported tokenizer");
        times.push(t.elapsed().as_secs_f64());
        drop(bpe);
    }
    let all: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
    times.sort_by(f64::total_cmp);
    println!(
        "{}: {} bytes, {} rounds [{}] s: best {:.3} s, median {:.3} s",
        args[1],
        json.len(),
        times.len(),
        all.join(" "),
        times[0],
        times[times.len() / 2]
    );
}
