//! `_core.FastBpe`: exact byte-level BPE counting (crate `mementos-bpe`) over Arrow columns.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array};
use mementos_bpe::{BpeError, FastBpe as Bpe};
use mementos_core::batch::{rows_of, Rows};
use mementos_core::CoreError;
use pyo3::prelude::*;
use pyo3_arrow::input::AnyArray;
use pyo3_arrow::PyArray;
use rayon::prelude::*;

use crate::{collect_arrays, package_error, run};

/// An exact byte-level BPE tokenizer loaded from a `tokenizer.json` (counts and ids equal to
/// Hugging Face `tokenizers` with `add_special_tokens=False`).
#[pyclass(frozen, name = "FastBpe", module = "mementos_fast._core")]
pub struct FastBpe {
    inner: Arc<Bpe>,
}

fn row_text(rows: &dyn Rows, i: usize) -> Result<Option<&str>, CoreError> {
    if !rows.is_valid(i) {
        return Ok(None);
    }
    std::str::from_utf8(rows.bytes(i))
        .map(Some)
        .map_err(|e| CoreError::InvalidArgument(format!("row {i}: invalid UTF-8 at byte {}", e.valid_up_to())))
}

fn count_rows(bpe: &Bpe, rows: &dyn Rows, parallel: bool) -> Result<Vec<Option<i64>>, CoreError> {
    let one = |i: usize| row_text(rows, i).map(|t| t.map(|t| bpe.count(t) as i64));
    if !parallel {
        return (0..rows.len()).map(one).collect();
    }
    // Contiguous ranges of about 64 KiB of text each (at least one row), so that the threads
    // share the work evenly whatever the row sizes; each range is counted sequentially.
    let mut ranges = Vec::new();
    let (mut start, mut acc) = (0, 0usize);
    for i in 0..rows.len() {
        acc += if rows.is_valid(i) { rows.bytes(i).len() } else { 0 } + 64;
        if acc >= 64 << 10 {
            ranges.push(start..i + 1);
            (start, acc) = (i + 1, 0);
        }
    }
    if start < rows.len() {
        ranges.push(start..rows.len());
    }
    let parts: Vec<Vec<Option<i64>>> =
        ranges.into_par_iter().map(|r| r.map(one).collect::<Result<Vec<_>, _>>()).collect::<Result<_, _>>()?;
    Ok(parts.into_iter().flatten().collect())
}

#[pymethods]
impl FastBpe {
    /// Load a `tokenizer.json` given as a string. Raises `MementoUnsupportedTokenizer` naming
    /// the feature that cannot be reproduced exactly, `MementoValueError` for invalid JSON.
    #[new]
    fn new(py: Python<'_>, json: &str) -> PyResult<Self> {
        match run(py, || Ok(Bpe::from_json(json)))? {
            Ok(b) => Ok(FastBpe { inner: Arc::new(b) }),
            Err(e @ BpeError::Unsupported(_)) => Err(package_error(py, "MementoUnsupportedTokenizer", e.to_string())),
            Err(e) => Err(package_error(py, "MementoValueError", e.to_string())),
        }
    }

    /// Number of tokens of `text`.
    fn count(&self, py: Python<'_>, text: &str) -> PyResult<usize> {
        let b = &self.inner;
        run(py, || Ok(b.count(text)))
    }

    /// Token ids of `text`.
    fn encode(&self, py: Python<'_>, text: &str) -> PyResult<Vec<u32>> {
        let b = &self.inner;
        run(py, || Ok(b.encode(text)))
    }

    /// Token count of every row of an Arrow string column (nulls stay null), in parallel.
    #[pyo3(signature = (column, threads=None))]
    fn count_batch<'py>(
        &self,
        py: Python<'py>,
        column: AnyArray,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if threads == Some(0) {
            return Err(package_error(py, "MementoValueError", "threads must be at least 1".into()));
        }
        let arrays = collect_arrays(column)?;
        let bpe = &self.inner;
        let counts = run(py, || {
            let work = || -> Result<Vec<Option<i64>>, CoreError> {
                let mut out = Vec::new();
                for a in &arrays {
                    out.extend(count_rows(bpe, rows_of(a.as_ref())?.as_ref(), threads != Some(1))?);
                }
                Ok(out)
            };
            match threads {
                None | Some(1) => work(),
                Some(n) => rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .map_err(|e| CoreError::InvalidArgument(format!("cannot start {n} threads: {e}")))?
                    .install(work),
            }
        })?;
        let array: ArrayRef = Arc::new(Int64Array::from(counts));
        let exported = PyArray::from_array_ref(array).into_pyobject(py)?;
        py.import("pyarrow")?.getattr("array")?.call1((exported,))
    }

    fn __repr__(&self) -> String {
        format!("FastBpe(pattern={:?})", self.inner.pattern())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<FastBpe>()
}
