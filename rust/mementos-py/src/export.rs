//! The tokenized SFT export (crate `mementos-export`): `_core.Exporter` and
//! `_core.export_tokenized`. The public API is `mementos_fast.export` (python/mementos_fast/export/).

use std::sync::Arc;

use arrow_array::{ArrayRef, Int8Array, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema};
use mementos_core::compact::EngineOptions;
use mementos_core::scan::Delim;
use mementos_core::CoreError;
use mementos_export::{export_batches, export_packed, Encoder, ExportError, ExportOptions, Overflow, RowFate};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use pyo3_arrow::input::AnyArray;
use pyo3_arrow::PyRecordBatch;

use crate::{collect_arrays, return_freed_memory, run, ToPyErr};

/// A tokenizer loaded for the export (the exact fast BPE when it supports it, else `tokenizers`).
#[pyclass(frozen, module = "mementos_fast._core")]
pub(crate) struct Exporter {
    inner: Arc<Encoder>,
}

#[pymethods]
impl Exporter {
    /// Load from a `tokenizer.json` string with the delimiters registered. `backend`: `"auto"`
    /// (fast when supported), `"fast"` (error when unsupported) or `"hf"`.
    #[new]
    #[pyo3(signature = (tokenizer_json, backend = "auto"))]
    fn new(py: Python<'_>, tokenizer_json: &str, backend: &str) -> PyResult<Self> {
        let enc = run(py, || Encoder::load(tokenizer_json, backend).inspect(|_| return_freed_memory()))?;
        Ok(Exporter { inner: Arc::new(enc) })
    }

    /// Load a `tokenizer.json` file as it is on disk (read and parsed without the GIL): the
    /// delimiters it lacks are registered as `load_tokenizer` registers them. `mementos_fast` uses
    /// it only for files in `tokens.VERIFIED_FAST_FILES`.
    #[staticmethod]
    #[pyo3(signature = (path, backend = "auto"))]
    fn from_file(py: Python<'_>, path: std::path::PathBuf, backend: &str) -> PyResult<Self> {
        let enc = run(py, || {
            let json = std::fs::read_to_string(&path)
                .map_err(|e| ExportError::Tokenizer(format!("{}: {e}", path.display())))?;
            let enc = Encoder::load_file_json(&json, backend);
            drop(json);
            return_freed_memory();
            enc
        })?;
        Ok(Exporter { inner: Arc::new(enc) })
    }

    /// The id of each delimiter: `{text: id}`.
    #[getter]
    fn delimiter_ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let ids = PyDict::new(py);
        for (d, id) in Delim::ALL.iter().zip(self.inner.delimiter_ids()) {
            ids.set_item(d.text(), id)?;
        }
        Ok(ids)
    }

    /// `"fast"` or `"hf"`.
    #[getter]
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    /// Why the fast BPE is not used (None when it is).
    #[getter]
    fn fast_refused(&self) -> Option<String> {
        self.inner.fast_refused().map(str::to_string)
    }

    fn __repr__(&self) -> String {
        format!("Exporter(backend={:?})", self.inner.backend())
    }
}

fn fate_code(f: &RowFate) -> i8 {
    match f {
        RowFate::Kept => 0,
        RowFate::Truncated => 1,
        RowFate::NullText => 2,
        RowFate::PromptTooLong => 3,
        RowFate::TooLong => 4,
        RowFate::InvalidUtf8 => 5,
        RowFate::TokenizerError => 6,
    }
}

/// `export_tokenized`'s result: the rows, the fates, the packing order.
type Exported<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>, Option<Bound<'py, PyAny>>);

/// Tokenize (problem, response) columns. Returns `(batches, fates, rows)`: the output rows (or
/// packed sequences) as a list of record batches (one per chunk of rows the threads took, in
/// order; one batch when packed), one fate code per input row (0 kept, 1 truncated, 2 null text, 3 prompt
/// too long, 4 too long, 5 invalid UTF-8), and with `pack` the kept-row index of every packed row
/// in sequence order (None otherwise).
#[pyfunction]
#[pyo3(signature = (problem, response, exporter, *, keep_last_k=0, mask_delimiters=false,
    keep_last_block_for_answer=false, restart_mode=false, compact_on_summary_end=true,
    system_prompt=None, max_length=None, overflow="truncate", pack=None, threads=None))]
#[allow(clippy::too_many_arguments)]
fn export_tokenized<'py>(
    py: Python<'py>,
    problem: AnyArray,
    response: AnyArray,
    exporter: &Exporter,
    keep_last_k: i64,
    mask_delimiters: bool,
    keep_last_block_for_answer: bool,
    restart_mode: bool,
    compact_on_summary_end: bool,
    system_prompt: Option<String>,
    max_length: Option<usize>,
    overflow: &str,
    pack: Option<u32>,
    threads: Option<usize>,
) -> PyResult<Exported<'py>> {
    let overflow: Result<Overflow, CoreError> = overflow.parse();
    let opts = ExportOptions {
        engine: EngineOptions {
            keep_last_k,
            mask_delimiters,
            keep_last_block_for_answer,
            restart_mode,
            compact_on_summary_end,
        },
        system_prompt,
        max_length,
        overflow: overflow.map_err(|e| e.to_py_err(py))?,
        threads,
    };
    let p = collect_arrays(py, problem)?;
    let r = collect_arrays(py, response)?;
    let enc = &exporter.inner;
    let (batches, fates, packing) = run(py, || {
        let pr: Vec<&dyn arrow_array::Array> = p.iter().map(|a| a.as_ref()).collect();
        let rr: Vec<&dyn arrow_array::Array> = r.iter().map(|a| a.as_ref()).collect();
        match pack {
            Some(cap) => export_packed(enc, &opts, &pr, &rr, cap).map(|(e, p)| (vec![e.batch], e.fates, Some(p))),
            None => export_batches(enc, &opts, &pr, &rr).map(|(b, f)| (b, f, None)),
        }
    })?;
    let fates: ArrayRef = Arc::new(Int8Array::from(fates.iter().map(fate_code).collect::<Vec<_>>()));
    let fates =
        RecordBatch::try_new(Arc::new(Schema::new(vec![Field::new("fate", DataType::Int8, false)])), vec![fates])
            .map_err(|e| CoreError::from(e).to_py_err(py))?;
    let rows = match packing {
        Some(pk) => {
            let rows: ArrayRef = Arc::new(UInt32Array::from(pk.rows));
            let b = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("row", DataType::UInt32, false)])),
                vec![rows],
            )
            .map_err(|e| CoreError::from(e).to_py_err(py))?;
            Some(PyRecordBatch::new(b).into_pyarrow(py)?)
        }
        None => None,
    };
    let batches = batches.into_iter().map(|b| PyRecordBatch::new(b).into_pyarrow(py)).collect::<PyResult<Vec<_>>>()?;
    Ok((PyList::new(py, batches)?.into_any(), PyRecordBatch::new(fates).into_pyarrow(py)?, rows))
}

/// Register the export in `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Exporter>()?;
    m.add_function(wrap_pyfunction!(export_tokenized, m)?)?;
    Ok(())
}
