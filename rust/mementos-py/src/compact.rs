//! Bindings of the compaction engine: `compress_batch`, `compress`, `replay_batch`, `replay_curve`.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, LargeStringArray};
use mementos_core::compact::{replay, Chars, CurvePoint, Scratch, Stream};
use mementos_core::ops::{
    check_engine_options, compress_arrays, plan_arrays, replay_arrays, CompressOptions, PromptLen, Style,
};
use mementos_core::scan::scan;
use mementos_core::CoreError;
use pyo3::prelude::*;
use pyo3_arrow::input::AnyArray;
use pyo3_arrow::{PyArray, PyRecordBatch};

use mementos_core::compact::Units;
use mementos_tokens::TokenUnits;

use crate::engine::engine_binding;
use crate::tokens::TokenCounter;
use crate::{collect_arrays, run, run_with, Class};

fn refs(arrays: &[ArrayRef]) -> Vec<&dyn Array> {
    arrays.iter().map(|a| a.as_ref()).collect()
}

engine_binding! {
    /// Rewrite a column of traces. See `mementos_fast.compress_batch`.
    signature((column, keep_last_k=1, *, style="tutorial"), (threads=None))
    fn compress_batch<'py>(
        (py: Python<'py>, column: AnyArray, keep_last_k: i64, style: &str),
        sw,
        (threads: Option<usize>)
    ) -> PyResult<Bound<'py, PyAny>> {
        let arrays = collect_arrays(py, column)?;
        let style: Result<Style, CoreError> = style.parse();
        let out = run(py, || {
            let opts = CompressOptions { style: style?, engine: sw.engine(keep_last_k), threads };
            compress_arrays(&refs(&arrays), &opts)
        })?;
        let array = PyArray::from_array_ref(Arc::new(out));
        let obj = array.to_pyarrow(py)?.unbind();
        Ok(obj.into_bound(py))
    }
}

engine_binding! {
    /// Rewrite one trace. See `mementos_fast.compress`.
    signature((text, keep_last_k=1, *, style="tutorial"), ())
    fn compress<'py>((py: Python<'py>, text: &str, keep_last_k: i64, style: &str), sw, ()) -> PyResult<String> {
        let style: Result<Style, CoreError> = style.parse();
        run(py, || -> Result<String, CoreError> {
            let opts = CompressOptions { style: style?, engine: sw.engine(keep_last_k), threads: Some(1) };
            let out: LargeStringArray = compress_arrays(&[&LargeStringArray::from(vec![text])], &opts)?;
            Ok(out.value(0).to_string())
        })
    }
}

engine_binding! {
    /// Replay a column under the engine's rules. See `mementos_fast.replay_batch`.
    signature(
        (column, keep_last_k=0, *),
        (prompt_len=0, prompt_lens=None, prompt=None, require_assistant_section=true, counter=None, threads=None)
    )
    fn replay_batch<'py>(
        (py: Python<'py>, column: AnyArray, keep_last_k: i64),
        sw,
        (
            prompt_len: u64,
            prompt_lens: Option<Vec<u64>>,
            prompt: Option<AnyArray>,
            require_assistant_section: bool,
            counter: Option<PyRef<'py, TokenCounter>>,
            threads: Option<usize>,
        )
    ) -> PyResult<Bound<'py, PyAny>> {
        let arrays = collect_arrays(py, column)?;
        let prompt_arrays = prompt.map(|p| collect_arrays(py, p)).transpose()?;
        let inner = counter.map(|c| c.inner.clone());
        let batch = run_with(py, threads, || {
            let opts = sw.engine(keep_last_k);
            let lens = match &prompt_lens {
                Some(v) => PromptLen::PerRow(v),
                None => PromptLen::Same(prompt_len),
            };
            let prompt_refs = prompt_arrays.as_ref().map(|a| refs(a));
            let prompt_text = prompt_refs.as_deref().map(|r| (r, require_assistant_section));
            match &inner {
                Some(c) => mementos_tokens::replay_tokens(&refs(&arrays), &opts, lens, prompt_text, c.as_ref(), threads),
                None => replay_arrays(&refs(&arrays), &opts, lens, prompt_text, &Chars, threads),
            }
        })?;
        PyRecordBatch::new(batch).into_pyarrow(py)
    }
}

engine_binding! {
    /// The visible-length curve of one trace: `(generated, visible, eviction)` points.
    signature((text, keep_last_k=0, *), (prompt_len=0, counter=None))
    fn replay_curve<'py>(
        (py: Python<'py>, text: &str, keep_last_k: i64),
        sw,
        (prompt_len: u64, counter: Option<PyRef<'py, TokenCounter>>)
    ) -> PyResult<Vec<(u64, u64, bool)>> {
        let inner = counter.map(|c| c.inner.clone());
        run(py, || -> Result<Vec<(u64, u64, bool)>, CoreError> {
            let opts = sw.engine(keep_last_k);
            check_engine_options(&opts)?;
            let tokens = scan(text.as_bytes());
            let mut curve: Vec<CurvePoint> = Vec::new();
            let units: &dyn Units = match &inner {
                Some(c) => &TokenUnits(c.as_ref()),
                None => &Chars,
            };
            let row = Stream::response(text.as_bytes(), &tokens);
            replay(row, &opts, prompt_len, units, &mut Scratch::default(), &mut Vec::new(), Some(&mut curve));
            Ok(curve.iter().map(|p| (p.generated, p.visible, p.eviction)).collect())
        })
    }
}

engine_binding! {
    /// The engine's eviction plan of every row. See `mementos_fast.eviction_plan`.
    signature((column, keep_last_k=0, *), (threads=None))
    fn eviction_plan<'py>((py: Python<'py>, column: AnyArray, keep_last_k: i64), sw, (threads: Option<usize>))
        -> PyResult<Bound<'py, PyAny>> {
        let arrays = collect_arrays(py, column)?;
        let batch = run(py, || plan_arrays(&refs(&arrays), &sw.engine(keep_last_k), threads))?;
        PyRecordBatch::new(batch).into_pyarrow(py)
    }
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
        let parts = collect_arrays(py, a)?;
        match parts.len() {
            1 => Ok(parts.into_iter().next().expect("one")),
            0 => Err(Class::Value.err(py, format!("{name}: empty input"))),
            n => Err(Class::Value.err(py, format!("{name}: {n} chunks; pass one RecordBatch at a time"))),
        }
    };
    let (r, s, b, m) = (
        one(response, "response")?,
        one(sentences, "sentences")?,
        one(blocks, "blocks")?,
        one(block_summaries, "block_summaries")?,
    );
    let batch = run(py, || mementos_core::align::align_full(r.as_ref(), s.as_ref(), b.as_ref(), m.as_ref(), threads))?;
    PyRecordBatch::new(batch).into_pyarrow(py)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(compress_batch, m)?)?;
    m.add_function(wrap_pyfunction!(compress, m)?)?;
    m.add_function(wrap_pyfunction!(replay_batch, m)?)?;
    m.add_function(wrap_pyfunction!(replay_curve, m)?)?;
    m.add_function(wrap_pyfunction!(eviction_plan, m)?)?;
    m.add_function(wrap_pyfunction!(align_full_batch, m)?)?;
    Ok(())
}
