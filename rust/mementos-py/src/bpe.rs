//! `_core.FastBpe`: exact byte-level BPE counting (crate `mementos-bpe`) over Arrow columns.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef};
use mementos_bpe::FastBpe as Bpe;
use pyo3::prelude::*;
use pyo3_arrow::input::AnyArray;
use pyo3_arrow::PyArray;

use crate::{collect_arrays, run, run_ok};

/// An exact byte-level BPE tokenizer loaded from a `tokenizer.json` (counts and ids equal to
/// Hugging Face `tokenizers` with `add_special_tokens=False`).
#[pyclass(frozen, name = "FastBpe", module = "mementos_fast._core")]
pub struct FastBpe {
    inner: Arc<Bpe>,
}

#[pymethods]
impl FastBpe {
    /// Load a `tokenizer.json` given as a string. Raises `MementoUnsupportedTokenizer` naming
    /// the feature that cannot be reproduced exactly, `MementoValueError` for invalid JSON.
    #[new]
    fn new(py: Python<'_>, json: &str) -> PyResult<Self> {
        Ok(FastBpe { inner: Arc::new(run(py, || Bpe::from_json(json))?) })
    }

    /// Number of tokens of `text`.
    fn count(&self, py: Python<'_>, text: &str) -> PyResult<usize> {
        let b = &self.inner;
        run_ok(py, || b.count(text))
    }

    /// Token ids of `text`.
    fn encode(&self, py: Python<'_>, text: &str) -> PyResult<Vec<u32>> {
        let b = &self.inner;
        run_ok(py, || b.encode(text))
    }

    /// Token count of every row of an Arrow string column (nulls stay null), in parallel.
    #[pyo3(signature = (column, threads=None))]
    fn count_batch<'py>(
        &self,
        py: Python<'py>,
        column: AnyArray,
        threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let arrays = collect_arrays(py, column)?;
        let bpe = &self.inner;
        let counts = run(py, || {
            let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            mementos_tokens::bpe_count_arrays(bpe, &refs, threads)
        })?;
        let array: ArrayRef = Arc::new(counts);
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
