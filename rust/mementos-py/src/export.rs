//! The tokenized SFT export (crate `mementos-export`): `_core.Exporter` and
//! `_core.export_tokenized`. The public API is `mementos_fast.export` (python/mementos_fast/export.py).

use std::sync::Arc;

use arrow_array::{ArrayRef, Int8Array, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema};
use mementos_core::compact::EngineOptions;
use mementos_core::CoreError;
use mementos_export::{export_arrays, export_packed, Encoder, ExportOptions, Overflow, RowFate};
use pyo3::prelude::*;
use pyo3_arrow::input::AnyArray;
use pyo3_arrow::PyRecordBatch;

use crate::{collect_arrays, package_error, run};

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
        if !matches!(backend, "auto" | "fast" | "hf") {
            return Err(package_error(
                py,
                "MementoValueError",
                format!("backend must be 'auto', 'fast' or 'hf', got {backend:?}"),
            ));
        }
        let enc = run(py, || Encoder::from_json(tokenizer_json, backend != "hf").map_err(CoreError::from))?;
        if backend == "fast" && enc.backend() != "fast" {
            let why = enc.fast_refused().unwrap_or("unsupported").to_string();
            return Err(package_error(py, "MementoUnsupportedTokenizer", why));
        }
        Ok(Exporter { inner: Arc::new(enc) })
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
    }
}

/// Tokenize (problem, response) columns. Returns `(batch, fates, rows)`: the output rows (or
/// packed sequences), one fate code per input row (0 kept, 1 truncated, 2 null text, 3 prompt
/// too long, 4 too long), and with `pack` the kept-row index of every packed row in sequence
/// order (None otherwise).
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
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>, Option<Bound<'py, PyAny>>)> {
    let err = |m: String| package_error(py, "MementoValueError", m);
    if threads == Some(0) {
        return Err(err("threads must be at least 1".into()));
    }
    if keep_last_k < -1 {
        return Err(err(format!("keep_last_k must be -1 (never evict) or >= 0, got {keep_last_k}")));
    }
    if max_length == Some(0) || pack == Some(0) {
        return Err(err("max_length and pack must be >= 1".into()));
    }
    let overflow = match overflow {
        "truncate" => Overflow::Truncate,
        "drop" => Overflow::Drop,
        o => return Err(err(format!("overflow must be 'truncate' or 'drop', got {o:?}"))),
    };
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
        overflow,
        threads,
    };
    let p = collect_arrays(problem)?;
    let r = collect_arrays(response)?;
    let enc = &exporter.inner;
    let (out, packing) = run(py, || {
        let pr: Vec<&dyn arrow_array::Array> = p.iter().map(|a| a.as_ref()).collect();
        let rr: Vec<&dyn arrow_array::Array> = r.iter().map(|a| a.as_ref()).collect();
        match pack {
            Some(cap) => export_packed(enc, &opts, &pr, &rr, cap).map(|(e, p)| (e, Some(p))),
            None => export_arrays(enc, &opts, &pr, &rr).map(|e| (e, None)),
        }
    })?;
    let fates: ArrayRef = Arc::new(Int8Array::from(out.fates.iter().map(fate_code).collect::<Vec<_>>()));
    let fates =
        RecordBatch::try_new(Arc::new(Schema::new(vec![Field::new("fate", DataType::Int8, false)])), vec![fates])
            .map_err(|e| err(e.to_string()))?;
    let rows = match packing {
        Some(pk) => {
            let rows: ArrayRef = Arc::new(UInt32Array::from(pk.rows));
            let b = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("row", DataType::UInt32, false)])),
                vec![rows],
            )
            .map_err(|e| err(e.to_string()))?;
            Some(PyRecordBatch::new(b).into_pyarrow(py)?)
        }
        None => None,
    };
    Ok((PyRecordBatch::new(out.batch).into_pyarrow(py)?, PyRecordBatch::new(fates).into_pyarrow(py)?, rows))
}

/// Register the export in `_core`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Exporter>()?;
    m.add_function(wrap_pyfunction!(export_tokenized, m)?)?;
    Ok(())
}
