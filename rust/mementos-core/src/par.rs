//! Parallelism of every crate, in one place: the `threads` argument, the thread pools and the
//! chunking of rows.
//!
//! - **`threads`**: `None` runs on the current rayon pool (all cores; inside the Python binding
//!   that is this process's pool, see [`thread_pool`]), `Some(1)` on the calling thread,
//!   `Some(n)` on a pool of `n` threads. `Some(0)` is [`CoreError::InvalidArgument`]
//!   ([`check_threads`]), whichever function it is given to.
//! - **Pools** are built once per thread count and per process, then reused: a fresh pool per call
//!   costs thread start-up on every call and starts the per-thread caches of the tokenizers
//!   (`mementos-bpe`'s piece cache, `tokenizers`' word cache) cold every time. Rayon's pools do
//!   not survive `fork()` (their threads are gone in the child, whose first parallel call would
//!   wait forever), so the cache belongs to the process that built it: a forked child (say a
//!   `datasets.map(num_proc=N)` worker) builds its own on first use.
//! - **Chunks**: rows are cut into contiguous ranges of balanced byte size ([`chunk_ranges`]),
//!   about [`CHUNKS_PER_THREAD`] per thread so that uneven rows still share out evenly, never
//!   smaller than what the [`Work`] makes worth a task, never larger than [`MAX_CHUNK`] (each
//!   chunk's output buffers stay small). Input too small for two chunks runs on the calling
//!   thread. Results come back in row order.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use rayon::ThreadPool;

use crate::error::CoreError;
use crate::rows::Rows;

/// Chunks per thread: enough that a few long rows cannot leave threads idle at the end.
pub const CHUNKS_PER_THREAD: usize = 16;
/// The largest chunk: bounds the per-chunk output buffers, which are concatenated afterwards.
pub const MAX_CHUNK: usize = 4 << 20;

/// What a byte of input costs, which sets the smallest chunk worth a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// Scanning, parsing, rewriting, replaying in characters: GB/s per core.
    Scan,
    /// Tokenizing: a few MB/s per core.
    Tokenize,
}

impl Work {
    /// Bytes of the smallest chunk.
    pub const fn min_chunk(self) -> usize {
        match self {
            Work::Scan => 256 << 10,
            Work::Tokenize => 16 << 10,
        }
    }
}

/// `threads` must be `None` or at least 1.
pub fn check_threads(threads: Option<usize>) -> Result<(), CoreError> {
    if threads == Some(0) {
        return Err(CoreError::InvalidArgument("threads must be at least 1 (or None for all cores)".into()));
    }
    Ok(())
}

/// The pools of this process, by thread count (`None`: one thread per core).
struct Pools {
    pid: u32,
    by_threads: HashMap<Option<usize>, Arc<ThreadPool>>,
}

/// The pool of this process with `threads` threads (`None`: one per core), built on first use.
pub fn thread_pool(threads: Option<usize>) -> Result<Arc<ThreadPool>, CoreError> {
    check_threads(threads)?;
    static POOLS: Mutex<Option<Pools>> = Mutex::new(None);
    let pid = std::process::id();
    let mut slot = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if slot.as_ref().is_some_and(|p| p.pid != pid) {
        // Pools inherited through fork() have no threads in this process: never drop them
        // (that would signal threads that do not exist here and wait for them).
        if let Some(old) = slot.take() {
            #[allow(clippy::mem_forget)] // deliberate leak: dropping a forked parent's pool deadlocks
            std::mem::forget(old);
        }
    }
    let pools = slot.get_or_insert_with(|| Pools { pid, by_threads: HashMap::new() });
    if let Some(p) = pools.by_threads.get(&threads) {
        return Ok(p.clone());
    }
    let mut builder = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("mementos-{i}"));
    if let Some(n) = threads {
        builder = builder.num_threads(n);
    }
    let pool = Arc::new(builder.build().map_err(|e| {
        CoreError::InvalidArgument(format!("cannot start {} worker threads: {e}", threads.unwrap_or(0)))
    })?);
    pools.by_threads.insert(threads, pool.clone());
    Ok(pool)
}

/// Run `f` with `threads` workers available to its rayon calls (see the module docs).
pub fn install<T: Send>(threads: Option<usize>, f: impl FnOnce() -> T + Send) -> Result<T, CoreError> {
    check_threads(threads)?;
    match threads {
        None | Some(1) => Ok(f()),
        Some(n) => Ok(thread_pool(Some(n))?.install(f)),
    }
}

/// Split rows into contiguous ranges of roughly `target` bytes (at least one row each; a row
/// counts 64 bytes more than its text, so that many empty rows still split).
pub fn chunk_ranges(rows: &dyn Rows, target: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut acc) = (0, 0usize);
    for i in 0..rows.len() {
        acc += rows.size(i) + 64;
        if acc >= target {
            out.push(start..i + 1);
            (start, acc) = (i + 1, 0);
        }
    }
    if start < rows.len() {
        out.push(start..rows.len());
    }
    out
}

/// The chunks `rows` are processed in with `threads` (one range of every row when the work
/// stays on the calling thread).
pub fn plan(rows: &dyn Rows, threads: Option<usize>, work: Work) -> Vec<Range<usize>> {
    let n = threads.unwrap_or_else(rayon::current_num_threads).max(1);
    let total: usize = (0..rows.len()).map(|i| rows.size(i)).sum();
    if n == 1 || total < 2 * work.min_chunk() {
        return std::iter::once(0..rows.len()).collect();
    }
    let target = (total / (n * CHUNKS_PER_THREAD)).clamp(work.min_chunk(), MAX_CHUNK);
    chunk_ranges(rows, target)
}

/// Map `f` over the chunks of `rows` ([`plan`]) in parallel; results in row order. One chunk runs
/// on the calling thread.
pub fn map_chunks<T: Send>(
    rows: &dyn Rows,
    threads: Option<usize>,
    work: Work,
    f: impl Fn(Range<usize>) -> T + Sync + Send,
) -> Result<Vec<T>, CoreError> {
    check_threads(threads)?;
    let ranges = plan(rows, threads, work);
    if let [one] = ranges.as_slice() {
        return Ok(vec![f(one.clone())]);
    }
    install(threads, || ranges.par_iter().map(|r| f(r.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::rows_of;
    use arrow_array::StringArray;

    #[test]
    fn zero_threads_is_an_invalid_argument() {
        let a = StringArray::from(vec!["x"]);
        let rows = rows_of(&a).unwrap();
        for r in [
            map_chunks(rows.as_ref(), Some(0), Work::Scan, |r| r.len()).map(|_| ()),
            install(Some(0), || ()),
            thread_pool(Some(0)).map(|_| ()),
        ] {
            assert!(matches!(r, Err(CoreError::InvalidArgument(_))));
        }
    }

    #[test]
    fn pools_are_reused() {
        let a = thread_pool(Some(3)).unwrap();
        let b = thread_pool(Some(3)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.current_num_threads(), 3);
        assert_eq!(install(Some(3), rayon::current_num_threads).unwrap(), 3);
    }

    #[test]
    fn chunks_cover_rows_in_order() {
        let rows: Vec<Option<String>> =
            (0..5000).map(|i| if i % 7 == 0 { None } else { Some("y".repeat(i % 900)) }).collect();
        let a = StringArray::from(rows);
        let rows = rows_of(&a).unwrap();
        for (threads, work) in
            [(Some(1), Work::Scan), (Some(2), Work::Scan), (Some(2), Work::Tokenize), (None, Work::Tokenize)]
        {
            let ranges = plan(rows.as_ref(), threads, work);
            assert_eq!(ranges.first().unwrap().start, 0);
            assert_eq!(ranges.last().unwrap().end, 5000);
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start && !w[0].is_empty()));
            if threads == Some(1) {
                assert_eq!(ranges.len(), 1);
            }
            let got: Vec<usize> = map_chunks(rows.as_ref(), threads, work, |r| r.collect::<Vec<_>>()).unwrap().concat();
            assert_eq!(got, (0..5000).collect::<Vec<_>>());
        }
        assert!(plan(rows.as_ref(), Some(2), Work::Tokenize).len() > 2);
    }
}
