"""Rewriting traces and replaying generation under the inference engine's block masking.

- :func:`compress_batch` / :func:`compress`: the tutorial's ``compress_trace`` (``style="tutorial"``)
  or the text left in the KV cache at the end of generation (``style="inplace"``).
- :func:`replay_batch` / :func:`replay_curve`: total, peak, mean and AUC of the visible length per
  row (and KV bytes for a model), in characters or real tokens.
- :func:`eviction_plan`: the engine's plan itself (blocks, mementos, triggers, evicted ranges).

One engine computes all of them, in Rust: the rules of the Memento vLLM overlay
(``vllm/vllm/v1/core/block_masking/tracker.py`` and ``processor.py`` in microsoft/memento;
FORMAT.md section 5; docs/COMPACTION.md). Only complete blocks (closed, and a memento bound to
them ended) are evicted; a memento binds to the most recently opened closed block without one;
each ``<|summary_end|>`` evicts at most the oldest waiting block, when more than ``keep_last_k``
wait (``-1``: never). The switches, with the overlay's defaults: ``mask_delimiters`` (False),
``keep_last_block_for_answer`` (False; k = 0 only), ``restart_mode`` (False),
``compact_on_summary_end`` (True).

Defaults of ``keep_last_k``: 1 for :func:`compress` / :func:`compress_batch` (the tutorial's
``compress_trace`` default, which ``style="tutorial"`` reproduces), 0 for everything that follows the
engine (:func:`replay_batch`, :func:`replay_curve`, :func:`eviction_plan`): the setting of the
paper's context figures (FORMAT.md section 5), each block evicted at its own ``<|summary_end|>``.
docs/COMPACTION.md says why they differ.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import mementos_fast._core as _core
from mementos_fast._arrow import as_arrow_strings
from mementos_fast.errors import MementoTypeError, MementoValueError

__all__ = [
    "MODELS",
    "EngineRules",
    "KVShape",
    "compress",
    "compress_batch",
    "eviction_plan",
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


@dataclass(frozen=True)
class EngineRules:
    """The engine's block-masking rules (the module doc), as one value: what every function here
    hands to the core, and what :func:`eviction_plan` records in its schema metadata."""

    keep_last_k: int = 0
    mask_delimiters: bool = False
    keep_last_block_for_answer: bool = False
    restart_mode: bool = False
    compact_on_summary_end: bool = True

    def metadata(self) -> dict[str, str]:
        """The rules as schema metadata (``"true"``, ``"false"``, the number)."""
        return {k: str(v).lower() for k, v in asdict(self).items()}


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
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
    threads: int | None = None,
) -> pa.Array:
    """Rewrite every trace of a column; returns a ``large_string`` array (nulls stay null).

    ``style="tutorial"``: byte for byte the tutorial's ``compress_trace(response, k)``
    (:func:`mementos_fast.reference.compress_trace`, FORMAT.md section 7) wherever the tutorial is
    well defined (blocks found, as many blocks as mementos, a ``</think>``), for every ``k >= 0``:
    the parts ``<think>``, per block either ``<|block_start|>b<|block_end|>`` and
    ``<|summary_start|>s<|summary_end|>`` (the last ``k`` blocks) or the memento part alone,
    ``</think>``, and the text after the last ``</think>``, joined by ``"\n"``, where ``b`` and
    ``s`` are the regexes' raw captures (not stripped). Rows the tutorial leaves unchanged (no
    blocks, or different counts) are unchanged. Two documented choices where it is not well
    defined: a row **without** ``</think>`` is returned unchanged (the tutorial appends the whole
    response a second time), and ``keep_last_k=-1`` keeps every block (the tutorial's arithmetic
    ``i >= n + 1`` would keep none). The engine's switches do not apply to this style.

    ``style="inplace"``: what the inference engine leaves in the KV cache at the end of
    generation: every byte except the ranges its plan evicted (see the module doc and
    :func:`eviction_plan`).

    The output is written into one exactly sized buffer, with the GIL released, in linear time.
    """
    rules = EngineRules(keep_last_k, mask_delimiters, keep_last_block_for_answer, restart_mode, compact_on_summary_end)
    return _core.compress_batch(as_arrow_strings(column), style=style, threads=threads, **asdict(rules))


def compress(
    text: str,
    keep_last_k: int = 1,
    *,
    style: str = "tutorial",
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
) -> str:
    """:func:`compress_batch` for one trace."""
    rules = EngineRules(keep_last_k, mask_delimiters, keep_last_block_for_answer, restart_mode, compact_on_summary_end)
    return _core.compress(text, style=style, **asdict(rules))


def eviction_plan(
    column: Any,
    keep_last_k: int = 0,
    *,
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
    threads: int | None = None,
) -> pa.RecordBatch:
    """The inference engine's eviction plan of every trace, as Arrow: one row per input row (null
    rows null), one list element per block the engine tracks, in the order of its
    ``<|block_start|>``. The same plan drives ``compress(style="inplace")``, :func:`replay_batch`,
    ``show --keep-last-k`` and the tokenized export's ``evict_at``.

    Columns: ``n_blocks``, ``n_complete``, ``n_evicted`` (int32), and list<int64> columns of UTF-8
    **byte** offsets into the row, null where there is none: ``block_start`` (its
    ``<|block_start|>``), ``block_end`` (just after its ``<|block_end|>``; null: never closed),
    ``summary_start`` / ``summary_end`` (its memento: start of the bound ``<|summary_start|>``,
    just after the ``<|summary_end|>`` that completed it), ``trigger`` (start of the token right
    after which the block leaves the cache: a ``<|summary_end|>``, or a ``<|block_start|>`` with
    ``keep_last_block_for_answer``), ``evict_start`` / ``evict_end`` (the byte range removed),
    ``rewind_to`` (``restart_mode``: start of the ``<|summary_start|>`` prefill restarts at).
    See docs/COMPACTION.md.
    """
    rules = EngineRules(keep_last_k, mask_delimiters, keep_last_block_for_answer, restart_mode, compact_on_summary_end)
    batch = _core.eviction_plan(as_arrow_strings(column), threads=threads, **asdict(rules))
    return batch.replace_schema_metadata(rules.metadata())


def _prompt_lens(prompt_len: Any) -> tuple[int, list[int] | None]:
    if prompt_len is None or isinstance(prompt_len, (bool, float, str, bytes)):
        raise MementoTypeError(
            f"prompt_len must be an int (the same for every row) or one int per row, "
            f"got {type(prompt_len).__name__}; pass 0 for no prompt"
        )
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
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
    prompt_len: int | Any = 0,
    prompt: Any = None,
    require_assistant_section: bool = True,
    tokenizer: Any = None,
    model: str | KVShape | dict[str, int] | None = None,
    backend: str = "auto",
    threads: int | None = None,
    tokens: Any = None,
) -> pa.RecordBatch:
    """Replay each trace as generation proceeds under the engine's rules.

    Columns (lengths in characters unless ``tokenizer`` is given): ``prompt_len`` (in the cache from
    the start), ``total_len`` (generated), ``peak_len`` (largest visible length, taken just before
    each eviction), ``mean_len`` (``kv_auc / total_len``), ``final_len``, ``kv_auc`` (KV AUC: the
    sum over generated units of the visible length after each), ``full_peak_len``,
    ``full_mean_len`` and ``full_kv_auc`` (the same without compaction), ``peak_ratio`` and
    ``mean_ratio`` (compacted / uncompacted), ``recomputed_len`` (``restart_mode``: units whose KV is
    computed a second time, prefill restarting at a memento's ``<|summary_start|>``),
    ``complete_blocks``, ``evicted_blocks``.

    ``tokenizer``: lengths in real tokens instead of characters: anything
    :func:`mementos_fast.load_tokenizer` accepts (a ``tokenizers.Tokenizer``, a ``tokenizer.json``
    path, ``"qwen3"``, a hub id, a ``transformers`` tokenizer) or a counter from
    :func:`mementos_fast.tokens.token_counter`. Each delimiter is one token; every segment between
    delimiters is counted in Rust exactly as Hugging Face ``tokenizers`` counts it (``backend``
    as in :func:`mementos_fast.count_tokens`). The schema metadata says which unit was used.

    The prompt: ``prompt_len``, an int for every row or one value per row (array-like), in the same
    unit; and/or ``prompt``, a column of prompt **texts** (one per row; its units are added to
    ``prompt_len``). Delimiters in a prompt text are tracked as the overlay's
    ``process_prompt_tokens`` does: a complete block there joins the queue of waiting blocks (and
    is evicted by a later ``<|summary_end|>`` of the response), but nothing is evicted while the
    prompt is read. ``require_assistant_section`` (the overlay's default, True): only delimiters
    after the first ``<|im_start|>assistant`` of the prompt count; a prompt without that header is
    taken as not yet rendered with the chat template (the header would follow it), so none of its
    delimiters count. The response itself is always tracked.

    ``model``: a preset name (``qwen3-8b``, ``qwen3-32b``, ``phi-4``), a :class:`KVShape` or a dict;
    adds ``peak_kv_bytes``, ``mean_kv_bytes``, ``full_peak_kv_bytes``, ``kv_auc_bytes`` and
    ``full_kv_auc_bytes``. KV bytes are meaningful for token lengths only, so a model requires
    ``tokenizer``.

    ``tokens``: the former name of ``tokenizer`` (deprecated; removed in the next release).
    """
    tokenizer = _renamed(tokenizer, tokens)
    if model is not None and tokenizer is None:
        raise MementoValueError("model= converts tokens to KV bytes: pass tokenizer= as well")
    shape = _kv_shape(model) if model is not None else None
    counter = _counter(tokenizer, backend) if tokenizer is not None else None
    same, per_row = _prompt_lens(prompt_len)
    rules = EngineRules(keep_last_k, mask_delimiters, keep_last_block_for_answer, restart_mode, compact_on_summary_end)
    batch = _core.replay_batch(
        as_arrow_strings(column),
        **asdict(rules),
        prompt_len=same,
        prompt_lens=per_row,
        prompt=as_arrow_strings(prompt) if prompt is not None else None,
        require_assistant_section=require_assistant_section,
        counter=counter,
        threads=threads,
    )
    if shape is not None:
        batch = add_kv_bytes(batch, shape)
    unit = f"tokens ({counter.backend})" if counter is not None else "characters"
    return batch.replace_schema_metadata({"unit": unit})


def _renamed(tokenizer: Any, tokens: Any) -> Any:
    """``tokenizer=``, or the deprecated ``tokens=`` it replaced (with a DeprecationWarning)."""
    if tokens is None:
        return tokenizer
    if tokenizer is not None:
        raise MementoValueError("tokens= is the deprecated name of tokenizer=: pass only tokenizer=")
    warnings.warn(
        "tokens= is deprecated and will be removed in the next release: pass tokenizer= (the same "
        "values: a tokenizer, a tokenizer.json path, 'qwen3', a hub id or a token counter)",
        DeprecationWarning,
        stacklevel=3,
    )
    return tokens


def _counter(tokenizer: Any, backend: str) -> _core.TokenCounter:
    if isinstance(tokenizer, _core.TokenCounter):
        return tokenizer
    from mementos_fast.tokens import token_counter

    return token_counter(tokenizer, backend)


def add_kv_bytes(batch: pa.RecordBatch, model: str | KVShape | dict[str, int]) -> pa.RecordBatch:
    """Add ``peak_kv_bytes``, ``mean_kv_bytes``, ``full_peak_kv_bytes``, ``kv_auc_bytes`` and
    ``full_kv_auc_bytes`` (float64: an AUC in bytes overflows int64 on long rows) to a token-unit
    replay."""
    per_token = _kv_shape(model).bytes_per_token
    cols = {
        "peak_kv_bytes": pc.multiply(batch.column("peak_len"), per_token),
        "mean_kv_bytes": pc.multiply(batch.column("mean_len"), float(per_token)),
        "full_peak_kv_bytes": pc.multiply(batch.column("full_peak_len"), per_token),
        "kv_auc_bytes": pc.multiply(pc.cast(batch.column("kv_auc"), pa.float64()), float(per_token)),
        "full_kv_auc_bytes": pc.multiply(pc.cast(batch.column("full_kv_auc"), pa.float64()), float(per_token)),
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
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
    prompt_len: int = 0,
    tokenizer: Any = None,
    backend: str = "auto",
    tokens: Any = None,
) -> pa.Table:
    """The visible-length curve of one trace, for plotting (in tokens with ``tokenizer=``, as in
    :func:`replay_batch`; ``tokens=`` is its deprecated former name).

    A table with ``generated`` (units generated so far), ``visible`` (units in the cache) and
    ``eviction`` (true for the drop right after an eviction, at the same ``generated``): one
    point after each segment between delimiters, each delimiter, and each eviction.
    """
    tokenizer = _renamed(tokenizer, tokens)
    rules = EngineRules(keep_last_k, mask_delimiters, keep_last_block_for_answer, restart_mode, compact_on_summary_end)
    pts = _core.replay_curve(
        text,
        **asdict(rules),
        prompt_len=prompt_len,
        counter=_counter(tokenizer, backend) if tokenizer is not None else None,
    )
    g, v, e = zip(*pts) if pts else ((), (), ())
    return pa.table(
        {"generated": pa.array(g, pa.int64()), "visible": pa.array(v, pa.int64()), "eviction": pa.array(e, pa.bool_())}
    )
