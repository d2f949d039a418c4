//! `mementos_fast._core`: the thin PyO3 layer over `mementos-core`.
//!
//! Arrow arrives through the PyCapsule interface (`__arrow_c_array__` / `__arrow_c_stream__`,
//! via pyo3-arrow), never by type checks. All heavy work goes through [`run`], which releases
//! the GIL, catches Rust panics and maps core errors to the package's Python exceptions.

mod bpe;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use arrow_array::{Array, ArrayRef};
use mementos_core::{parse_arrays, CoreError, ParseOptions};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3_arrow::input::AnyArray;
use pyo3_arrow::PyRecordBatch;

mod compact;
mod export;
mod tokens;

create_exception!(_core, MementoError, PyException, "Base class of every mementos_fast error.");
create_exception!(
    _core,
    MementoInternalError,
    MementoError,
    "A bug inside mementos_fast (a Rust panic caught at the boundary). Please report it."
);

/// Raise a Python exception class defined in `mementos_fast.errors`.
pub(crate) fn package_error(py: Python<'_>, class: &str, msg: String) -> PyErr {
    match py.import("mementos_fast.errors").and_then(|m| m.getattr(class)) {
        Ok(cls) => PyErr::from_type(cls.cast_into().expect("exception class"), msg),
        Err(e) => e,
    }
}

fn map_core_error(py: Python<'_>, e: CoreError) -> PyErr {
    match e {
        CoreError::UnsupportedType(_) => package_error(py, "MementoTypeError", e.to_string()),
        CoreError::InvalidArgument(_) => package_error(py, "MementoValueError", e.to_string()),
        CoreError::Arrow(_) => MementoError::new_err(e.to_string()),
    }
}

/// This process's rayon pool. Rayon's global pool does not survive `fork()` (its threads are
/// gone in the child, whose first parallel call then waits forever): a forked worker such as
/// `datasets.map(num_proc=N)` after any call in the parent hung. So every call runs inside a pool
/// owned by the process that created it; a child makes its own on first use.
fn process_pool() -> Result<Arc<rayon::ThreadPool>, CoreError> {
    static POOL: Mutex<Option<(u32, Arc<rayon::ThreadPool>)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut slot = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((owner, pool)) = slot.as_ref() {
        if *owner == pid {
            return Ok(pool.clone());
        }
    }
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .build()
            .map_err(|e| CoreError::InvalidArgument(format!("cannot start the worker threads: {e}")))?,
    );
    // The parent's pool has no threads in this process: never drop it (that would talk to them).
    if let Some(old) = slot.replace((pid, pool.clone())) {
        std::mem::forget(old);
    }
    Ok(pool)
}

/// Run `f` without the GIL, in this process's pool; a panic becomes `MementoInternalError`, a core
/// error its Python class.
pub(crate) fn run<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> Result<T, CoreError> + Send,
    T: Send,
{
    let outcome = py.detach(|| match process_pool() {
        Ok(pool) => pool.install(|| catch_unwind(AssertUnwindSafe(f))),
        Err(e) => Ok(Err(e)),
    });
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(map_core_error(py, e)),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(MementoInternalError::new_err(format!("internal error (Rust panic): {msg}")))
        }
    }
}

pub(crate) fn collect_arrays(column: AnyArray) -> PyResult<Vec<ArrayRef>> {
    let reader = column.into_reader()?;
    reader.collect::<Result<Vec<_>, _>>().map_err(|e| MementoError::new_err(e.to_string()))
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
    if threads == Some(0) {
        return Err(package_error(py, "MementoValueError", "threads must be at least 1".into()));
    }
    let arrays = collect_arrays(column)?;
    let opts = ParseOptions { spans, threads };
    let batch = run(py, || {
        let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
        parse_arrays(&refs, &opts)
    })?;
    PyRecordBatch::new(batch).into_pyarrow(py)
}

/// Benchmark peer: count `byte` over every row with one memchr pass on the calling thread.
#[pyfunction]
fn _count_byte(py: Python<'_>, column: AnyArray, byte: u8) -> PyResult<u64> {
    let arrays = collect_arrays(column)?;
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
    run(py, || {
        let p = mementos_core::parse::parse(text);
        let s = |r: &std::ops::Range<usize>| text[r.clone()].to_string();
        Ok(Parsed {
            blocks: p.blocks.iter().map(s).collect(),
            summaries: p.summaries.iter().map(s).collect(),
            reasoning: p.reasoning.as_ref().map(s),
            final_answer: p.final_answer.as_ref().map(s).unwrap_or_default(),
            status: p.status.name(),
            error_offset: p.error_offset,
            spans: p.spans.iter().map(|sp| (sp.kind.name(), sp.start, sp.end)).collect(),
        })
    })
}

/// `(name, description)` of every row status, in dictionary order.
#[pyfunction]
fn statuses() -> Vec<(&'static str, &'static str)> {
    mementos_core::Status::ALL.iter().map(|s| (s.name(), s.description())).collect()
}

/// Deliberately panic inside the core (tests check that it arrives as MementoInternalError).
#[pyfunction]
fn _debug_panic(py: Python<'_>) -> PyResult<()> {
    run(py, || -> Result<(), CoreError> { panic!("deliberate panic for testing") })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(parse_batch, m)?)?;
    m.add_function(wrap_pyfunction!(parse, m)?)?;
    m.add_function(wrap_pyfunction!(statuses, m)?)?;
    m.add_function(wrap_pyfunction!(_debug_panic, m)?)?;
    m.add_function(wrap_pyfunction!(_count_byte, m)?)?;
    m.add_class::<Parsed>()?;
    compact::register(m)?;
    tokens::register(m)?;
    export::register(m)?;
    bpe::register(m)?;
    m.add("MementoError", py.get_type::<MementoError>())?;
    m.add("MementoInternalError", py.get_type::<MementoInternalError>())?;
    m.add("BUILD_PROFILE", if cfg!(debug_assertions) { "debug" } else { "release" })?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
