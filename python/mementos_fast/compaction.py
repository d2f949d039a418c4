"""Rewriting traces and replaying generation under the inference engine's block masking.

- :func:`compress_batch` / :func:`compress`: the tutorial's ``compress_trace`` (``style="tutorial"``)
  or the text left in the KV cache at the end of generation (``style="inplace"``).
- :func:`replay_batch` / :func:`replay_curve`: total, peak and mean visible length per row (and KV
  bytes for a model), in characters or real tokens.

The engine's rules (FORMAT.md section 5, docs/COMPACTION.md): only complete blocks (block end
plus a summary bound to it) are evicted; ``keep_last_k=-1`` keeps everything, ``0`` evicts each
block at its own ``<|summary_end|>``, ``k > 0`` keeps the last k complete blocks;
``mask_delimiters`` also removes ``<|block_start|>``/``<|block_end|>``;
``keep_last_block_for_answer`` (k = 0 only) delays each eviction to the next ``<|block_start|>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mementos_fast import _core
from mementos_fast._arrow import as_arrow_strings
from mementos_fast.errors import MementoTypeError, MementoValueError

__all__ = [
    "MODELS",
    "KVShape",
    "compress",
    "compress_batch",
    "replay_batch",
    "replay_curve",
]


@dataclass(frozen=True)
class KVShape:
    """The KV-cache shape of a model: bytes per cached token = 2 (K and V) x layers x KV heads x
    head dim x bytes per value."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int = 2  # bf16

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes


#: Model presets (bf16), from the models' configurations.
MODELS: dict[str, KVShape] = {
    "qwen3-8b": KVShape(36, 8, 128),
    "qwen3-32b": KVShape(64, 8, 128),
    "phi-4": KVShape(40, 10, 128),
}


def _kv_shape(model: str | KVShape | dict[str, int]) -> KVShape:
    if isinstance(model, KVShape):
        return model
    if isinstance(model, dict):
        try:
            return KVShape(**model)
        except TypeError as e:
            raise MementoValueError(f"a custom model shape needs layers, kv_heads, head_dim (dtype_bytes): {e}") from e
    if isinstance(model, str) and model.lower() in MODELS:
        return MODELS[model.lower()]
    raise MementoValueError(f"unknown model {model!r}: use one of {sorted(MODELS)} or a KVShape")


def compress_batch(
    column: Any,
    keep_last_k: int = 1,
    *,
    style: str = "tutorial",
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    threads: int | None = None,
) -> pa.Array:
    """Rewrite every trace of a column; returns a ``large_string`` array (nulls stay null).

    ``style="tutorial"``: byte-identical to the tutorial's ``compress_trace(response, k)`` (the
    reference) for ``k >= 0``: ``<think>``, then per block ``block`` + memento (the last ``k``) or
    the memento alone, re-emitted with one space inside each delimiter pair and joined by
    newlines, ``</think>``, then the text after the last ``</think>``. Rows the tutorial leaves
    unchanged (no blocks, or block and summary counts differ) are unchanged. **Deviation**: a row
    without ``</think>`` is returned unchanged, where the tutorial appends the whole response a
    second time (a bug). ``keep_last_k=-1`` keeps every block.

    ``style="inplace"``: what the inference engine leaves in the KV cache at the end of
    generation: every byte except the content of evicted blocks (see the module doc).

    The output is written into one exactly sized buffer, with the GIL released, in linear time.
    """
    return _core.compress_batch(
        as_arrow_strings(column),
        keep_last_k,
        style=style,
        mask_delimiters=mask_delimiters,
        keep_last_block_for_answer=keep_last_block_for_answer,
        threads=threads,
    )


def compress(
    text: str,
    keep_last_k: int = 1,
    *,
    style: str = "tutorial",
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
) -> str:
    """:func:`compress_batch` for one trace."""
    return _core.compress(
        text,
        keep_last_k,
        style=style,
        mask_delimiters=mask_delimiters,
        keep_last_block_for_answer=keep_last_block_for_answer,
    )


def _prompt_lens(prompt_len: Any) -> tuple[int, list[int] | None]:
    if prompt_len is None or isinstance(prompt_len, (bool, float, str, bytes)):
        raise MementoTypeError(f"prompt_len must be an int (the same for every row) or one int per row, "
                               f"got {type(prompt_len).__name__}; pass 0 for no prompt")
    if isinstance(prompt_len, (int, np.integer)):
        if prompt_len < 0:
            raise MementoValueError("prompt_len must be >= 0")
        return int(prompt_len), None
    values = prompt_len if isinstance(prompt_len, (pa.Array, pa.ChunkedArray)) else pa.array(prompt_len)
    if values.null_count:
        raise MementoValueError("prompt_len has nulls")
    if len(values) and pc.min(values).as_py() < 0:
        raise MementoValueError("prompt_len must be >= 0")
    return 0, values.to_pylist()


def replay_batch(
    column: Any,
    keep_last_k: int = 0,
    *,
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    prompt_len: int | Any = 0,
    tokens: Any = None,
    model: str | KVShape | dict[str, int] | None = None,
    backend: str = "auto",
    threads: int | None = None,
) -> pa.RecordBatch:
    """Replay each trace as generation proceeds under the engine's rules.

    Columns (lengths in characters; ``prompt_len`` is counted in every visible length):
    ``total_len`` (generated), ``peak_len`` (largest visible length, taken just before each
    eviction), ``mean_len`` (area under the visible-length curve / ``total_len``), ``final_len``,
    ``full_peak_len`` and ``full_mean_len`` (the same without compaction), ``peak_ratio`` and
    ``mean_ratio`` (compacted / uncompacted), ``complete_blocks``, ``evicted_blocks``.

    ``tokens``: lengths in real tokens instead of characters: anything
    :func:`mementos_fast.load_tokenizer` accepts (a ``tokenizers.Tokenizer``, a ``tokenizer.json``
    path, a hub id, a ``transformers`` tokenizer) or a counter from
    :func:`mementos_fast.tokens.token_counter`. Each delimiter is one token; every segment between
    delimiters is counted in Rust exactly as Hugging Face ``tokenizers`` counts it (``backend``
    as in :func:`mementos_fast.count_tokens`). The column metadata says which unit was used.
    ``prompt_len``: an int for every row, or one value per row (array-like), in the same unit
    (``count_tokens(..., problem=...)`` gives ``prompt_tokens``).
    ``model``: a preset name (``qwen3-8b``, ``qwen3-32b``, ``phi-4``), a :class:`KVShape` or a dict;
    adds ``peak_kv_bytes``, ``mean_kv_bytes`` and ``full_peak_kv_bytes``. KV bytes are meaningful
    for token lengths only, so a model requires ``tokens``.
    """
    if model is not None and tokens is None:
        raise MementoValueError("model= converts tokens to KV bytes: pass tokens= (a tokenizer) as well")
    shape = _kv_shape(model) if model is not None else None
    counter = _counter(tokens, backend) if tokens is not None else None
    same, per_row = _prompt_lens(prompt_len)
    batch = _core.replay_batch(
        as_arrow_strings(column),
        keep_last_k,
        mask_delimiters=mask_delimiters,
        keep_last_block_for_answer=keep_last_block_for_answer,
        prompt_len=same,
        prompt_lens=per_row,
        counter=counter,
        threads=threads,
    )
    if shape is not None:
        batch = add_kv_bytes(batch, shape)
    unit = f"tokens ({counter.backend})" if counter is not None else "characters"
    return batch.replace_schema_metadata({"unit": unit})


def _counter(tokens: Any, backend: str) -> _core.TokenCounter:
    if isinstance(tokens, _core.TokenCounter):
        return tokens
    from mementos_fast.tokens import token_counter

    return token_counter(tokens, backend)


def add_kv_bytes(batch: pa.RecordBatch, model: str | KVShape | dict[str, int]) -> pa.RecordBatch:
    """Add ``peak_kv_bytes``, ``mean_kv_bytes``, ``full_peak_kv_bytes`` to a token-unit replay."""
    per_token = _kv_shape(model).bytes_per_token
    cols = {
        "peak_kv_bytes": pc.multiply(batch.column("peak_len"), per_token),
        "mean_kv_bytes": pc.multiply(batch.column("mean_len"), float(per_token)),
        "full_peak_kv_bytes": pc.multiply(batch.column("full_peak_len"), per_token),
    }
    for name, col in cols.items():
        batch = batch.append_column(name, col)
    return batch


def replay_curve(
    text: str,
    keep_last_k: int = 0,
    *,
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    prompt_len: int = 0,
    tokens: Any = None,
    backend: str = "auto",
) -> pa.Table:
    """The visible-length curve of one trace, for plotting (in tokens with ``tokens=``, as in
    :func:`replay_batch`).

    A table with ``generated`` (units generated so far), ``visible`` (units in the cache) and
    ``eviction`` (true for the drop right after an eviction, at the same ``generated``): one
    point after each segment between delimiters, each delimiter, and each eviction.
    """
    pts = _core.replay_curve(
        text,
        keep_last_k,
        mask_delimiters=mask_delimiters,
        keep_last_block_for_answer=keep_last_block_for_answer,
        prompt_len=prompt_len,
        counter=_counter(tokens, backend) if tokens is not None else None,
    )
    g, v, e = zip(*pts) if pts else ((), (), ())
    return pa.table({"generated": pa.array(g, pa.int64()), "visible": pa.array(v, pa.int64()),
                     "eviction": pa.array(e, pa.bool_())})
