//! Bindings of the compaction engine: `compress_batch`, `compress`, `replay_batch`, `replay_curve`.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, LargeStringArray};
use mementos_core::compact::{replay, Chars, CurvePoint, EngineOptions, Scratch};
use mementos_core::ops::{check_engine_options, compress_arrays, replay_arrays, CompressOptions, PromptLen, Style};
use mementos_core::scan::scan;
use mementos_core::CoreError;
use pyo3::prelude::*;
use pyo3_arrow::input::AnyArray;
use pyo3_arrow::{PyArray, PyRecordBatch};

use mementos_core::compact::Units;
use mementos_core::scan::Delim;
use mementos_tokens::SegmentCounter;

use crate::tokens::TokenCounter;
use crate::{collect_arrays, run};

/// Replay units in tokens: each delimiter is one token, each segment between delimiters is
/// counted by the tokenizer's counter (exactly as the whole response would be, since the
/// delimiters are special tokens that split the input first).
struct TokenUnits<'a>(&'a dyn SegmentCounter);

impl Units for TokenUnits<'_> {
    fn text(&self, s: &[u8]) -> u64 {
        if s.is_empty() {
            return 0;
        }
        // Segments are cut at ASCII delimiters out of rows checked by `check_utf8`, so they are valid UTF-8.
        self.0.count(std::str::from_utf8(s).expect("segment of a valid UTF-8 row")) as u64
    }
    fn delim(&self, _: Delim) -> u64 {
        1
    }
}

fn engine_options(keep_last_k: i64, mask_delimiters: bool, keep_last_block_for_answer: bool) -> EngineOptions {
    EngineOptions { keep_last_k, mask_delimiters, keep_last_block_for_answer }
}

fn refs(arrays: &[ArrayRef]) -> Vec<&dyn Array> {
    arrays.iter().map(|a| a.as_ref()).collect()
}

/// Rewrite a column of traces. See `mementos_fast.compress_batch`.
#[pyfunction]
#[pyo3(signature = (column, keep_last_k=1, *, style="tutorial", mask_delimiters=false, keep_last_block_for_answer=false, threads=None))]
#[allow(clippy::too_many_arguments)]
fn compress_batch<'py>(
    py: Python<'py>,
    column: AnyArray,
    keep_last_k: i64,
    style: &str,
    mask_delimiters: bool,
    keep_last_block_for_answer: bool,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let arrays = collect_arrays(column)?;
    let style: Result<Style, CoreError> = style.parse();
    let out = run(py, || {
        let opts = CompressOptions {
            style: style?,
            engine: engine_options(keep_last_k, mask_delimiters, keep_last_block_for_answer),
            threads,
        };
        compress_arrays(&refs(&arrays), &opts)
    })?;
    let array = PyArray::from_array_ref(Arc::new(out));
    let obj = array.to_pyarrow(py)?.unbind();
    Ok(obj.into_bound(py))
}

/// Rewrite one trace. See `mementos_fast.compress`.
#[pyfunction]
#[pyo3(signature = (text, keep_last_k=1, *, style="tutorial", mask_delimiters=false, keep_last_block_for_answer=false))]
fn compress(py: Python<'_>, text: &str, keep_last_k: i64, style: &str, mask_delimiters: bool, keep_last_block_for_answer: bool) -> PyResult<String> {
    let style: Result<Style, CoreError> = style.parse();
    run(py, || {
        let opts = CompressOptions {
            style: style?,
            engine: engine_options(keep_last_k, mask_delimiters, keep_last_block_for_answer),
            threads: Some(1),
        };
        let out: LargeStringArray = compress_arrays(&[&LargeStringArray::from(vec![text])], &opts)?;
        Ok(out.value(0).to_string())
    })
}

/// Replay a column under the engine's rules, lengths in characters. See `mementos_fast.replay_batch`.
#[pyfunction]
#[pyo3(signature = (column, keep_last_k=0, *, mask_delimiters=false, keep_last_block_for_answer=false, prompt_len=0, prompt_lens=None, counter=None, threads=None))]
#[allow(clippy::too_many_arguments)]
fn replay_batch<'py>(
    py: Python<'py>,
    column: AnyArray,
    keep_last_k: i64,
    mask_delimiters: bool,
    keep_last_block_for_answer: bool,
    prompt_len: u64,
    prompt_lens: Option<Vec<u64>>,
    counter: Option<PyRef<'py, TokenCounter>>,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let arrays = collect_arrays(column)?;
    let inner = counter.map(|c| c.inner.clone());
    let batch = run(py, || {
        let opts = engine_options(keep_last_k, mask_delimiters, keep_last_block_for_answer);
        let prompt = match &prompt_lens {
            Some(v) => PromptLen::PerRow(v),
            None => PromptLen::Same(prompt_len),
        };
        match &inner {
            Some(c) => {
                // Token units hand `&str` pieces to the tokenizer: the rows must be UTF-8.
                mementos_tokens::check_utf8(mementos_core::batch::column_rows(&refs(&arrays))?.as_ref())?;
                replay_arrays(&refs(&arrays), &opts, prompt, &TokenUnits(c.as_ref()), threads)
            }
            None => replay_arrays(&refs(&arrays), &opts, prompt, &Chars, threads),
        }
    })?;
    PyRecordBatch::new(batch).into_pyarrow(py)
}

/// The visible-length curve of one trace in characters: `(generated, visible, eviction)` points.
#[pyfunction]
#[pyo3(signature = (text, keep_last_k=0, *, mask_delimiters=false, keep_last_block_for_answer=false, prompt_len=0, counter=None))]
fn replay_curve(
    py: Python<'_>,
    text: &str,
    keep_last_k: i64,
    mask_delimiters: bool,
    keep_last_block_for_answer: bool,
    prompt_len: u64,
    counter: Option<PyRef<'_, TokenCounter>>,
) -> PyResult<Vec<(u64, u64, bool)>> {
    let inner = counter.map(|c| c.inner.clone());
    run(py, || {
        let opts = engine_options(keep_last_k, mask_delimiters, keep_last_block_for_answer);
        check_engine_options(&opts)?;
        let tokens = scan(text.as_bytes());
        let mut curve: Vec<CurvePoint> = Vec::new();
        let units: &dyn Units = match &inner {
            Some(c) => &TokenUnits(c.as_ref()),
            None => &Chars,
        };
        replay(text.as_bytes(), &tokens, &opts, prompt_len, units, &mut Scratch::default(), &mut Vec::new(), Some(&mut curve));
        Ok(curve.iter().map(|p| (p.generated, p.visible, p.eviction)).collect())
    })
}

/// Align `full`-config fields with `response`. See `mementos_fast.align_full_batch`.
#[pyfunction]
#[pyo3(signature = (response, sentences, blocks, block_summaries, *, threads=None))]
fn align_full_batch<'py>(
    py: Python<'py>,
    response: AnyArray,
    sentences: AnyArray,
    blocks: AnyArray,
    block_summaries: AnyArray,
    threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let one = |a: AnyArray, name: &str| -> PyResult<ArrayRef> {
        let parts = collect_arrays(a)?;
        match parts.len() {
            1 => Ok(parts.into_iter().next().expect("one")),
            0 => Err(crate::package_error(py, "MementoValueError", format!("{name}: empty input"))),
            n => Err(crate::package_error(py, "MementoValueError", format!("{name}: {n} chunks; pass one RecordBatch at a time"))),
        }
    };
    let (r, s, b, m) = (one(response, "response")?, one(sentences, "sentences")?, one(blocks, "blocks")?, one(block_summaries, "block_summaries")?);
    let batch = run(py, || mementos_core::align::align_full(r.as_ref(), s.as_ref(), b.as_ref(), m.as_ref(), threads))?;
    PyRecordBatch::new(batch).into_pyarrow(py)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(compress_batch, m)?)?;
    m.add_function(wrap_pyfunction!(compress, m)?)?;
    m.add_function(wrap_pyfunction!(replay_batch, m)?)?;
    m.add_function(wrap_pyfunction!(replay_curve, m)?)?;
    m.add_function(wrap_pyfunction!(align_full_batch, m)?)?;
    Ok(())
}
