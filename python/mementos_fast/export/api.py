"""The export as calls: :func:`transform_table` (one table in, one table out: what the CLI,
``datasets.map`` and Ray Data run per batch) and :func:`export_sft` (a whole source into a sink,
with its manifest). See docs/EXPORT.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import mementos_fast._core as _core
from mementos_fast.compaction import compress_batch
from mementos_fast.errors import MementoValueError
from mementos_fast.export.formats import (
    METADATA,
    _chatml_column,
    _large,
    _messages_column,
    _tokenized,
    exporter,
    tokenizer_name,
)
from mementos_fast.export.labels import EVICT_NEVER, IGNORE_INDEX, SEGMENTS
from mementos_fast.export.sinks import ExportSink, _WriteBehind
from mementos_fast.loading import load, prefetch
from mementos_fast.options import ExportOptions
from mementos_fast.parsing import parse_batch

__all__ = ["export_sft", "transform_table"]


@ExportOptions.in_signature
def transform_table(
    table: pa.Table | pa.RecordBatch,
    format: str | None = None,
    *,
    options: ExportOptions | None = None,
    drops: Counter | None = None,
    threads: int | None = None,
    **fields: Any,
) -> pa.Table:
    """Turn one table of OpenMementos rows (``problem``, ``response`` and optional metadata)
    into export rows of ``format``. Dropped rows are counted by reason in ``drops``.

    The export's options are ``options`` (an :class:`~mementos_fast.options.ExportOptions`,
    default: the defaults) and its fields given as keywords, which replace those of ``options``
    (``format``, the second argument, too): ``variant``, ``keep_last_k``, ``style``,
    ``tokenizer``, ``max_length``, ``overflow``, ``stage2_keep_last_k``, ``mask_delimiters``,
    ``keep_last_block_for_answer``, ``restart_mode``, ``compact_on_summary_end``, ``pack``,
    ``system_prompt``, ``only_ok`` (docs/EXPORT.md); a misspelt name is an error listing them.

    Reasons: ``null_text`` (problem or response null), ``status:<name>`` (``only_ok`` and a
    malformed trace), ``prompt_too_long`` (the prompt alone reaches ``max_length``: every label
    would be masked), ``too_long`` (``overflow="drop"``), ``invalid_utf8`` (tokenized format: the
    problem or response bytes are not UTF-8, which Arrow arrays built from raw buffers or imported
    through the C data interface may hold), ``tokenizer_error`` (tokenized format: the ``tokenizers``
    crate refused the row's text, as a word-level model without an unknown token does on a word
    outside its vocabulary). ``truncated_rows`` counts kept rows cut
    to ``max_length``.

    Tokenized format only: the engine's rules (:attr:`ExportOptions.rules`, FORMAT.md section 5)
    set the per-token ``evict_at``; ``pack`` (with ``max_length``) bin-packs the rows into
    sequences of at most ``max_length`` tokens (adds ``position_ids`` and ``seq_lens``; metadata
    columns become lists, one value per packed row). ``threads``: worker threads (None: all cores).
    """
    opts = _options(options, format, fields)
    drops = Counter() if drops is None else drops
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
    if opts.only_ok and table.num_rows:
        status = parse_batch(table.column("response")).column("status").cast(pa.string())
        ok = pc.equal(status, "ok")
        for name, count in Counter(status.filter(pc.invert(ok)).to_pylist()).items():
            drops[f"status:{name}"] += count
        table = table.filter(ok)
    problem, response = table.column("problem"), table.column("response")
    if opts.format != "tokenized":
        # The chat and messages columns are built by Arrow kernels over one large_string array
        # each; the tokenized export's core reads every string type, chunked or not, in place
        # (joining the chunks and widening the offsets took about 10 ms per 8 MiB slice here).
        problem, response = _large(problem), _large(response)
    if opts.variant == "compressed":
        response = compress_batch(response, opts.keep_last_k, style=opts.style)  # one large_string array
    meta = {c: table.column(c).combine_chunks() for c in METADATA if c in table.column_names}
    if opts.format == "messages":
        cols: dict[str, Any] = {"messages": _messages_column(problem, response, opts.system_prompt)}
    elif opts.format == "chatml":
        cols = {"text": _chatml_column(problem, response, opts.system_prompt)}
    else:
        cols, keep, order = _tokenized(problem, response, opts, drops, threads=threads)
        if not keep.all():
            mask = pa.array(keep)
            meta = {c: a.filter(mask) for c, a in meta.items()}
        if order is not None:
            # One list per packed sequence: the metadata of its rows, in its order.
            offsets = cols["seq_lens"].offsets
            meta = {c: pa.LargeListArray.from_arrays(offsets, a.take(pa.array(order))) for c, a in meta.items()}
    cols.update(meta)
    return pa.table(cols)


def _options(options: ExportOptions | None, format: str | None, fields: dict[str, Any]) -> ExportOptions:
    """``options`` with ``format`` (when given) and ``fields`` replaced, checked."""
    if format is not None:
        fields["format"] = format
    return ExportOptions.of(options, **fields).check()


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


@ExportOptions.in_signature
def export_sft(
    source: Any = None,
    out: str | os.PathLike = "sft.jsonl",
    format: str | None = None,
    *,
    options: ExportOptions | None = None,
    output: str | None = None,
    shard_bytes: int = 256 << 20,
    overwrite: bool = False,
    config: str = "default",
    sample: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = 1024,
    batches: Iterable[pa.RecordBatch] | None = None,
    progress: Any = None,
    threads: int | None = None,
    parquet_engine: str = "auto",
    **fields: Any,
) -> dict[str, Any]:
    """Export ``source`` (anything :func:`mementos_fast.load` takes; the built-in sample by
    default) as SFT rows of ``format`` to ``out`` and return the manifest.

    The export's options: ``options`` and its fields as keywords, as in :func:`transform_table`.
    ``output``: ``"jsonl"`` (one file, streamed; ``"-"`` is stdout), ``"parquet"`` (a directory
    of ``part-NNNNN.parquet`` shards of about ``shard_bytes`` each) or ``"datasets"`` (a
    ``Dataset.save_to_disk`` directory); inferred from ``out`` when omitted (``.jsonl`` ->
    JSONL, otherwise Parquet). The manifest (``_manifest.json`` inside a directory, ignored by Parquet readers,
    ``OUT.manifest.json`` beside a JSONL file) records the options, rows read, written and
    dropped by reason. ``batches``: already loaded ``RecordBatch`` es (then ``source`` is ignored).
    ``parquet_engine``: ``"auto"`` (polars for the tokenized format's per-token lists when polars is
    installed, about a third of pyarrow's CPU; shards then hold about
    ``min(shard_bytes, 32 MiB)`` of Arrow data each), ``"polars"`` or ``"pyarrow"``.

    Tokenized format: ``pack=True`` with ``max_length`` packs rows into sequences (first-fit
    decreasing within each batch; the manifest reports ``packing_efficiency`` = tokens /
    (sequences x max_length)).
    """
    opts = _options(options, format, fields)
    tok = exporter(opts.tokenizer) if opts.format == "tokenized" else None
    # Each batch is exported with the compiled exporter, loaded once here.
    batch_opts = dataclasses.replace(opts, tokenizer=tok)
    tokens_written = sequences = 0
    reader: Any = None
    if batches is None:
        # Read one batch ahead on a background thread (as the CLI does): Parquet decoding overlaps
        # the work on the batch before. Closed below, which stops and joins the thread.
        reader = prefetch(iter(load(source, config, sample=sample, limit=limit, seed=seed, batch_size=batch_size)))
        batches = reader
    if opts.format == "tokenized":
        # Token columns take ~20 bytes per token: cut batches into slices of bounded text so
        # memory stays bounded whatever the batch size (packing works within a slice).
        batches = _sliced(batches, _TOKENIZED_SLICE_BYTES)
    drops: Counter = Counter()
    rows_read = bytes_read = 0
    t0 = time.perf_counter()
    with (
        contextlib.closing(reader) if reader is not None else contextlib.nullcontext(),
        ExportSink(out, output, shard_bytes=shard_bytes, overwrite=overwrite, parquet_engine=parquet_engine) as sink,
        _WriteBehind(sink.write) as writer,
    ):
        # Writing (Parquet encoding and zstd, or JSON) runs on a second thread while the next
        # batch is transformed: both release the GIL, so they overlap on two cores.
        for batch in batches:
            rows_read += batch.num_rows
            if "response" in batch.schema.names:
                bytes_read += pc.sum(pc.binary_length(batch.column("response"))).as_py() or 0
            table = transform_table(batch, options=batch_opts, drops=drops, threads=threads)
            if opts.format == "tokenized":
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
        rows_dropped = sum(drops.values())
        manifest = {
            "format": opts.format,
            "output": sink.output,
            "source": str(source) if source is not None else "built-in sample",
            **_options_manifest(opts, tok, tokens_written, sequences, rows_read - rows_dropped),
            "rows_read": rows_read,
            "rows_dropped": rows_dropped,
            "dropped": dict(sorted(drops.items())),
            "rows_truncated": truncated,
            "response_bytes_read": bytes_read,
            "seconds": round(elapsed, 3),
            "mementos_fast": _core.__version__,
        }
        manifest = sink.close(manifest)
    written = manifest["rows_packed"] if opts.pack else manifest["rows_written"]
    if written + manifest["rows_dropped"] != rows_read:  # pragma: no cover - invariant
        raise MementoValueError(f"row accounting is off: {manifest}")
    return manifest


def _options_manifest(
    opts: ExportOptions, tok: Any, tokens_written: int, sequences: int, rows_kept: int
) -> dict[str, Any]:
    """The manifest's record of the options that applied, with the tokenized format's tokenizer,
    codes and token count, and the packing's figures."""
    max_length = opts.max_length
    return {
        "variant": opts.variant,
        **({"keep_last_k": opts.keep_last_k, "style": opts.style} if opts.variant == "compressed" else {}),
        **({"max_length": max_length, "overflow": opts.overflow} if max_length is not None else {}),
        **(
            {
                "tokenizer": tokenizer_name(opts.tokenizer),
                "tokenizer_backend": tok.backend,
                "delimiter_ids": tok.delimiter_ids,
                "segments": list(SEGMENTS),
                "ignore_index": IGNORE_INDEX,
                "evict_never": EVICT_NEVER,
                "stage2": asdict(opts.rules),
                "tokens_written": tokens_written,
            }
            if tok is not None
            else {}
        ),
        **(
            {
                "packed": True,
                "sequences": sequences,
                "rows_packed": rows_kept,
                "packing_efficiency": round(tokens_written / (sequences * max_length), 4)
                if sequences and max_length
                else None,
            }
            if opts.pack
            else {}
        ),
        "system_prompt": opts.system_prompt,
        "only_ok": opts.only_ok,
    }
