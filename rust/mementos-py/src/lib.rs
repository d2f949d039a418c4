//! `mementos_fast._core`: the thin PyO3 layer over `mementos-core`.
//!
//! Arrow arrives through the PyCapsule interface (`__arrow_c_array__` / `__arrow_c_stream__`,
//! via pyo3-arrow), never by type checks. All heavy work goes through [`run`], which releases
//! the GIL, catches Rust panics and maps core errors to the package's Python exceptions.

mod bpe;
mod compact;
mod engine;
mod errors;
mod export;
mod tokens;

use std::panic::{catch_unwind, AssertUnwindSafe};

use arrow_array::{Array, ArrayRef};
use mementos_core::{parse_arrays, CoreError, ParseOptions};
use pyo3::prelude::*;
use pyo3_arrow::input::AnyArray;
use pyo3_arrow::PyRecordBatch;

pub(crate) use errors::{Class, ToPyErr};

/// Run `f` without the GIL, in this process's pool (`mementos_core::par::thread_pool`: rayon's
/// global pool does not survive `fork()`, so a forked worker such as `datasets.map(num_proc=N)`
/// gets its own); a panic becomes `MementoInternalError`, an error of a pure crate its class
/// ([`ToPyErr`]).
pub(crate) fn run<T, E, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> Result<T, E> + Send,
    T: Send,
    E: ToPyErr + Send,
{
    run_with(py, None, f)
}

/// [`run`] for a call given `threads`: with `Some(1)` the work stays on the calling thread (it
/// never waits for the pool, which another thread may be keeping busy, as `analyze --tokenizer`
/// does while its main thread parses); otherwise as [`run`].
pub(crate) fn run_with<T, E, F>(py: Python<'_>, threads: Option<usize>, f: F) -> PyResult<T>
where
    F: FnOnce() -> Result<T, E> + Send,
    T: Send,
    E: ToPyErr + Send,
{
    let outcome = py.detach(|| {
        if threads == Some(1) {
            return catch_unwind(AssertUnwindSafe(f)).map(|r| r.map_err(Failure::Crate));
        }
        match mementos_core::par::thread_pool(None) {
            Ok(pool) => pool.install(|| catch_unwind(AssertUnwindSafe(f))).map(|r| r.map_err(Failure::Crate)),
            Err(e) => Ok(Err(Failure::Pool(e))),
        }
    });
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(Failure::Crate(e))) => Err(e.to_py_err(py)),
        Ok(Err(Failure::Pool(e))) => Err(e.to_py_err(py)),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Class::Internal.err(py, format!("internal error (Rust panic): {msg}")))
        }
    }
}

/// Hand the memory freed so far back to the OS, on every thread of the current pool and on the
/// calling thread (`mi_collect(true)`: mimalloc keeps freed memory `MIMALLOC_PURGE_DELAY`, 10 s,
/// and purges it only while it allocates). For one-off work that frees much more than it keeps:
/// loading a tokenizer parses its JSON on two threads (the pool's), and the parse trees, about
/// 160 MiB for Qwen3, were held through the export that followed (RSS after the load 310 MiB, 148
/// MiB with `MIMALLOC_PURGE_DELAY=0`, by hand).
pub(crate) fn return_freed_memory() {
    // SAFETY: mi_collect only releases memory mimalloc holds free; it may run on any thread.
    rayon::broadcast(|_| unsafe { libmimalloc_sys::mi_collect(true) });
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// [`run`] for work that cannot fail.
pub(crate) fn run_ok<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> PyResult<T> {
    run(py, || Ok::<T, CoreError>(f()))
}

enum Failure<E> {
    Crate(E),
    Pool(CoreError),
}

/// The arrays of a column given through the Arrow PyCapsule interface.
pub(crate) fn collect_arrays(py: Python<'_>, column: AnyArray) -> PyResult<Vec<ArrayRef>> {
    let reader = column.into_reader()?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|e| Class::Error.err(py, e.to_string()))
}

/// Parse a column of traces. See `mementos_fast.parse_batch` for the documentation.
#[pyfunction]
#[pyo3(signature = (column, *, spans=false, threads=None))]
fn parse_batch<'py>(
    py: Python<'py>,
    column: AnyArray,
    spans: bool,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let arrays = collect_arrays(py, column)?;
    let opts = ParseOptions { spans, threads };
    let batch = run_with(py, threads, || {
        let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
        parse_arrays(&refs, &opts)
    })?;
    PyRecordBatch::new(batch).into_pyarrow(py)
}

/// Benchmark peer: count `byte` over every row with one memchr pass on the calling thread.
#[pyfunction]
fn _count_byte(py: Python<'_>, column: AnyArray, byte: u8) -> PyResult<u64> {
    let arrays = collect_arrays(py, column)?;
    run(py, || {
        let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
        mementos_core::count_byte(&refs, byte)
    })
}

/// One parsed trace (byte offsets into the UTF-8 encoding of the text).
#[pyclass(frozen, get_all, module = "mementos_fast._core")]
struct Parsed {
    blocks: Vec<String>,
    summaries: Vec<String>,
    reasoning: Option<String>,
    final_answer: String,
    status: &'static str,
    error_offset: Option<usize>,
    spans: Vec<(&'static str, usize, usize)>,
}

#[pymethods]
impl Parsed {
    fn __repr__(&self) -> String {
        format!(
            "Parsed(status={:?}, blocks={}, summaries={}, final_answer={:?}, error_offset={:?})",
            self.status,
            self.blocks.len(),
            self.summaries.len(),
            self.final_answer.chars().take(40).collect::<String>(),
            self.error_offset
        )
    }
}

/// Parse one trace. See `mementos_fast.parse`.
#[pyfunction]
fn parse(py: Python<'_>, text: &str) -> PyResult<Parsed> {
    run_ok(py, || {
        let p = mementos_core::parse::parse(text);
        let s = |r: &std::ops::Range<usize>| text[r.clone()].to_string();
        Parsed {
            blocks: p.blocks.iter().map(s).collect(),
            summaries: p.summaries.iter().map(s).collect(),
            reasoning: p.reasoning.as_ref().map(s),
            final_answer: p.final_answer.as_ref().map(s).unwrap_or_default(),
            status: p.status.name(),
            error_offset: p.error_offset,
            spans: p.spans.iter().map(|sp| (sp.kind.name(), sp.start, sp.end)).collect(),
        }
    })
}

/// `(name, description)` of every row status, in dictionary order.
fn statuses() -> Vec<(&'static str, &'static str)> {
    mementos_core::Status::ALL.iter().map(|s| (s.name(), s.description())).collect()
}

/// The names and lists the Python package reads instead of copying them (each in the order of
/// its Rust enum, which is the code in the Arrow columns).
fn add_constants(m: &Bound<'_, PyModule>) -> PyResult<()> {
    use mementos_core::align::{AlignStatus, BlockMatch};
    let py = m.py();
    let delimiters: Vec<&str> = mementos_core::Delim::ALL.iter().map(|d| d.text()).collect();
    m.add("DELIMITERS", pyo3::types::PyTuple::new(py, delimiters)?)?;
    m.add("STATUSES", statuses())?;
    m.add("ALIGN_STATUSES", AlignStatus::ALL.iter().map(|s| (s.name(), s.description())).collect::<Vec<_>>())?;
    m.add("BLOCK_MATCHES", BlockMatch::ALL.iter().map(|b| b.name()).collect::<Vec<_>>())?;
    m.add("SPAN_KINDS", mementos_core::SpanKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>())?;
    m.add("SEGMENTS", pyo3::types::PyTuple::new(py, mementos_export::seg::NAMES)?)?;
    m.add("IGNORE_INDEX", mementos_export::IGNORE_INDEX)?;
    m.add("EVICT_NEVER", mementos_export::NEVER)?;
    Ok(())
}

/// Deliberately panic inside the core (tests check that it arrives as MementoInternalError).
#[pyfunction]
fn _debug_panic(py: Python<'_>) -> PyResult<()> {
    run(py, || -> Result<(), CoreError> { panic!("deliberate panic for testing") })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(parse_batch, m)?)?;
    m.add_function(wrap_pyfunction!(parse, m)?)?;
    m.add_function(wrap_pyfunction!(_debug_panic, m)?)?;
    m.add_function(wrap_pyfunction!(_count_byte, m)?)?;
    m.add_class::<Parsed>()?;
    compact::register(m)?;
    tokens::register(m)?;
    export::register(m)?;
    bpe::register(m)?;
    errors::register(m)?;
    add_constants(m)?;
    m.add("BUILD_PROFILE", if cfg!(debug_assertions) { "debug" } else { "release" })?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
