//! Token counting bindings (`mementos-tokens`): a loaded counter object and the column counts.
//! The public API is `mementos_fast.count_tokens` (python/mementos_fast/tokens.py).

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use mementos_core::CoreError;
use mementos_tokens::{
    analyze_arrays, count_arrays, counter_for, total_arrays, AnalyzeOptions, CountOptions, FastCounter, SegmentCounter,
    TokensError,
};
use pyo3::prelude::*;
use pyo3_arrow::input::AnyArray;
use pyo3_arrow::PyRecordBatch;

use crate::engine::engine_binding;
use crate::{collect_arrays, run, run_with};

/// mimalloc for the whole extension: the `tokenizers` pipeline allocates per piece (normalized
/// strings with per-byte alignments, splits, tokens) and glibc malloc took ~40% of counting time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A token counting backend loaded once from a tokenizer JSON (delimiters registered).
#[pyclass(frozen, module = "mementos_fast._core")]
pub(crate) struct TokenCounter {
    pub(crate) inner: Arc<dyn SegmentCounter>,
}

#[pymethods]
impl TokenCounter {
    /// Load `backend` ("hf") from the JSON produced by `tokenizers.Tokenizer.to_str()`.
    #[new]
    #[pyo3(signature = (tokenizer_json, backend = "hf"))]
    fn new(py: Python<'_>, tokenizer_json: &str, backend: &str) -> PyResult<Self> {
        let inner = run(py, || counter_for(backend, tokenizer_json))?;
        Ok(TokenCounter { inner: Arc::from(inner) })
    }

    /// The fast backend from a `tokenizer.json` file as it is on disk, the six delimiters
    /// registered as `load_tokenizer` registers them (read and built without the GIL).
    #[staticmethod]
    fn fast_from_file(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let inner = run(py, || -> Result<_, TokensError> {
            let json = std::fs::read_to_string(&path)
                .map_err(|e| TokensError::Tokenizer(format!("{}: {e}", path.display())))?;
            FastCounter::from_file_json(&json)
        })?;
        Ok(TokenCounter { inner: Arc::new(inner) })
    }

    /// The backend's name.
    #[getter]
    fn backend(&self) -> String {
        self.inner.name().to_string()
    }

    /// Tokens of one whole text (each delimiter one token).
    fn count(&self, py: Python<'_>, text: &str) -> PyResult<u64> {
        // One text, no parallel work: on the calling thread, never queued behind the pool.
        run_with(py, Some(1), || Ok::<_, CoreError>(mementos_tokens::count_text(text, self.inner.as_ref())))
    }

    /// Tokens of one piece without delimiters, as the backend counts it.
    fn count_piece(&self, py: Python<'_>, text: &str) -> PyResult<usize> {
        run_with(py, Some(1), || Ok::<_, CoreError>(self.inner.count(text)))
    }

    fn __repr__(&self) -> String {
        format!("TokenCounter(backend={:?})", self.inner.name())
    }
}

/// Count a column of responses. See `mementos_fast.count_tokens`.
#[pyfunction]
#[pyo3(signature = (column, counter, *, threads=None, stripped=true))]
fn count_tokens<'py>(
    py: Python<'py>,
    column: AnyArray,
    counter: &TokenCounter,
    threads: Option<usize>,
    stripped: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let arrays = collect_arrays(py, column)?;
    let opts = CountOptions { threads, stripped };
    let batch = run(py, || {
        let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
        count_arrays(&refs, counter.inner.as_ref(), &opts)
    })?;
    PyRecordBatch::new(batch).into_pyarrow(py)
}

/// Whole-text token counts of a column, as a one-column (`tokens`, int64) RecordBatch.
#[pyfunction]
#[pyo3(signature = (column, counter, *, threads=None))]
fn count_totals<'py>(
    py: Python<'py>,
    column: AnyArray,
    counter: &TokenCounter,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let arrays = collect_arrays(py, column)?;
    let opts = CountOptions { threads, stripped: false };
    let batch = run(py, || {
        let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
        let totals: ArrayRef = Arc::new(total_arrays(&refs, counter.inner.as_ref(), &opts)?);
        let schema = Schema::new(vec![Field::new("tokens", DataType::Int64, true)]);
        Ok::<_, CoreError>(RecordBatch::try_new(Arc::new(schema), vec![totals])?)
    })?;
    PyRecordBatch::new(batch).into_pyarrow(py)
}

engine_binding! {
    /// Token figures and the token replay of a column, from one scan per row. See
    /// `mementos_fast.tokens.analyze_tokens`.
    signature((column, counter, *, prompts=None, keep_last_k=0), (threads=None))
    fn analyze_tokens<'py>(
        (py: Python<'py>, column: AnyArray, counter: &TokenCounter, prompts: Option<AnyArray>, keep_last_k: i64),
        sw,
        (threads: Option<usize>)
    ) -> PyResult<Bound<'py, PyAny>> {
        let arrays = collect_arrays(py, column)?;
        let prompt_arrays = prompts.map(|p| collect_arrays(py, p)).transpose()?;
        let opts = AnalyzeOptions { engine: sw.engine(keep_last_k), threads };
        let batch = run(py, || {
            let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            let prompt_refs: Option<Vec<&dyn Array>> =
                prompt_arrays.as_ref().map(|v| v.iter().map(|a| a.as_ref()).collect());
            analyze_arrays(&refs, prompt_refs.as_deref(), counter.inner.as_ref(), &opts)
        })?;
        PyRecordBatch::new(batch).into_pyarrow(py)
    }
}

/// Register the token counting functions in `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TokenCounter>()?;
    m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(count_totals, m)?)?;
    m.add_function(wrap_pyfunction!(analyze_tokens, m)?)?;
    m.add("TOKEN_BACKENDS", mementos_tokens::BACKENDS.to_vec())?;
    Ok(())
}
