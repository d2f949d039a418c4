//! Parallel map over the rows of a column: byte-balanced chunks of contiguous rows, run on
//! rayon (the global pool, a dedicated pool of `n` threads, or the calling thread alone).

use std::ops::Range;

use rayon::prelude::*;

use crate::batch::{chunk_ranges, Rows};
use crate::error::CoreError;

/// Run `f` on rayon with `threads` workers (`None`: the global pool; `Some(1)`: this thread).
pub fn with_threads<T: Send>(threads: Option<usize>, f: impl FnOnce() -> T + Send) -> Result<T, CoreError> {
    match threads {
        None => Ok(f()),
        Some(0) => Err(CoreError::InvalidArgument("threads must be at least 1".into())),
        Some(1) => Ok(f()),
        Some(n) => Ok(rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| CoreError::InvalidArgument(format!("cannot start {n} threads: {e}")))?
            .install(f)),
    }
}

/// Map `f` over byte-balanced chunks of rows, in parallel, results in row order.
pub fn map_chunks<T: Send>(
    rows: &dyn Rows,
    threads: Option<usize>,
    f: impl Fn(Range<usize>) -> T + Sync + Send,
) -> Result<Vec<T>, CoreError> {
    if threads == Some(0) {
        return Err(CoreError::InvalidArgument("threads must be at least 1".into()));
    }
    let total: usize = (0..rows.len()).map(|i| if rows.is_valid(i) { rows.bytes(i).len() } else { 0 }).sum();
    let n = threads.unwrap_or_else(rayon::current_num_threads).max(1);
    if n == 1 || total < (1 << 20) {
        return Ok(vec![f(0..rows.len())]);
    }
    let target = (total / (n * 8)).max(256 << 10);
    let ranges = chunk_ranges(rows, target);
    with_threads(threads, || ranges.par_iter().map(|r| f(r.clone())).collect())
}
