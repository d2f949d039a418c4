"""Table-in, table-out functions for Hugging Face ``datasets`` and Ray Data.

Every function here takes a ``pyarrow.Table`` (or ``RecordBatch``) of OpenMementos rows and
returns a ``pyarrow.Table``, so the same function plugs into both engines without converting
rows to Python objects:

``datasets`` (Arrow formatting, batched)::

    ds = datasets.load_dataset("microsoft/OpenMementos", split="train").with_format("arrow")
    sft = ds.map(mementos_fast.integrations.export_table, batched=True, batch_size=1000,
                 fn_kwargs={"format": "chatml"}, remove_columns=ds.column_names)

Ray Data (``batch_format="pyarrow"``)::

    ds = ray.data.read_parquet("s3://bucket/openmementos/data/")
    ds.map_batches(mementos_fast.integrations.export_table, batch_format="pyarrow",
                   fn_kwargs={"format": "chatml"}).write_parquet("s3://bucket/sft/")

For the tokenized format on Ray, use :class:`SFTExporter` with ``concurrency=N`` (an actor pool)
so that each worker loads its tokenizer once. See docs/EXPORT.md.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mementos_fast.errors import MementoValueError
from mementos_fast.options import ExportOptions

__all__ = [
    "SFTExporter",
    "compress_table",
    "export_table",
    "parse_table",
    "ray_export",
    "stats_table",
]


def _table(batch: Any) -> pa.Table:
    """A ``pyarrow.Table`` of ``batch``: a Table, a RecordBatch, a ``datasets`` batch (the
    ``LazyBatch`` that ``Dataset.map(batched=True)`` passes without Arrow formatting: its Arrow
    table is used as is, no Python rows) or any mapping of column name to values."""
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    arrow = getattr(batch, "pa_table", None)  # datasets.formatting.LazyBatch
    if isinstance(arrow, pa.Table) and isinstance(batch, Mapping) and list(batch.keys()) == arrow.column_names:
        return arrow
    if isinstance(batch, Mapping):
        return pa.table({k: v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v) for k, v in batch.items()})
    raise MementoValueError(
        f"expected a pyarrow Table or RecordBatch (or a datasets batch), got {type(batch).__name__}"
    )


def _own(arr: Any) -> pa.Array:
    """A copy in fresh buffers (parse results share the input's buffers, and engines that
    serialise a table would otherwise drag every view's backing buffer along)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return pc.take(arr, pa.array(np.arange(len(arr), dtype=np.int64)))


def parse_table(
    batch: pa.Table | pa.RecordBatch, *, column: str = "response", spans: bool = False, keep_columns: bool = True
) -> pa.Table:
    """The input columns plus ``parse_batch``'s per-row results: its per-row numbers and status, in
    its order (``n_blocks``, ``n_summaries``, ``block_chars``, ``summary_chars``, ``block_words``,
    ``summary_words``, ``status``, ``error_offset``), then ``final_answer`` (and ``spans`` with
    ``spans=True``); the item lists (``blocks``, ``summaries``, per-item counts) and ``reasoning``
    are left out.

    Results are copied out (``status`` as ``string``, text as ``large_string``) so the table
    serialises on its own (Ray moves tables between processes; ``datasets`` writes them to its cache).
    """
    import mementos_fast as mf

    table = _table(batch)
    parsed = mf.parse_batch(table.column(column), spans=spans)
    out = table if keep_columns else pa.table({})
    for field in parsed.schema:
        if pa.types.is_dictionary(field.type):  # the status
            out = out.append_column(field.name, _own(parsed.column(field.name).cast(pa.string())))
        elif pa.types.is_integer(field.type):
            out = out.append_column(field.name, _own(parsed.column(field.name)))
    out = out.append_column("final_answer", parsed.column("final_answer").cast(pa.large_string()))
    if spans:
        sp = parsed.column("spans")
        sp = sp.cast(pa.list_(pa.struct([("kind", pa.string()), ("start", pa.int64()), ("end", pa.int64())])))
        out = out.append_column("spans", sp)
    return out


def stats_table(batch: pa.Table | pa.RecordBatch, *, column: str = "response") -> pa.Table:
    """One row of statistics per input row (``mementos_fast.stats.row_stats``): metadata,
    counts, ratios, status and the tutorial's skip flag. Combine the pieces with
    ``mementos_fast.stats.domain_table`` for the per-domain medians."""
    from mementos_fast import stats

    return stats.row_stats(_table(batch), response=column)


def compress_table(
    batch: pa.Table | pa.RecordBatch,
    *,
    keep_last_k: int = 1,
    style: str = "tutorial",
    column: str = "response",
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
) -> pa.Table:
    """The input with ``column`` replaced by ``mementos_fast.compress_batch`` of it."""
    import mementos_fast as mf

    compress_batch = getattr(mf, "compress_batch", None)
    if compress_batch is None:
        raise MementoValueError("compress_table needs mementos_fast.compress_batch (not in this build)")
    table = _table(batch)
    new = compress_batch(
        table.column(column),
        keep_last_k,
        style=style,
        mask_delimiters=mask_delimiters,
        keep_last_block_for_answer=keep_last_block_for_answer,
    )
    return table.set_column(table.column_names.index(column), column, new)


def export_table(batch: pa.Table | pa.RecordBatch, options: ExportOptions | None = None, **fields: Any) -> pa.Table:
    """SFT rows for one table (``mementos_fast.export.transform_table``). ``options``: an
    :class:`~mementos_fast.options.ExportOptions`; or its fields as keywords, which replace
    those of ``options`` (``fn_kwargs={"format": "chatml"}`` of ``Dataset.map`` / ``map_batches``;
    a misspelt name is an error listing the options). Dropped rows are left out, so the output
    can be shorter than the input: pass ``remove_columns=ds.column_names`` to
    ``datasets.Dataset.map``."""
    from mementos_fast.export import transform_table

    return transform_table(_table(batch), options=options, **fields)


class SFTExporter:
    """A callable for ``ray.data.Dataset.map_batches(SFTExporter, fn_constructor_kwargs=...,
    concurrency=N, batch_format="pyarrow")``: the tokenizer is prepared once per worker.
    ``options`` / ``**fields`` as in :func:`export_table`.

    ``drops`` accumulates the dropped rows by reason in this worker (for a manifest, use
    :func:`mementos_fast.export.export_sft` on one machine, or count rows before and after).
    """

    def __init__(self, options: ExportOptions | None = None, **fields: Any) -> None:
        from mementos_fast.export import exporter

        options = ExportOptions.of(options, **fields)
        if options.format == "tokenized":
            # The compiled exporter (tokenizer loaded once per worker, fast BPE when supported).
            options = dataclasses.replace(options, tokenizer=exporter(options.tokenizer))
        self.options = options
        self.drops: Counter = Counter()

    def __call__(self, batch: pa.Table | pa.RecordBatch) -> pa.Table:
        from mementos_fast.export import transform_table

        return transform_table(_table(batch), options=self.options, drops=self.drops)


def ray_export(
    source: str,
    out: str,
    format: str | None = None,
    *,
    options: ExportOptions | None = None,
    concurrency: int | None = None,
    batch_size: int = 256,
    **fields: Any,
) -> dict[str, Any]:
    """Export Parquet files at ``source`` (a path or glob Ray can read: local, NFS, ``s3://``,
    ``gs://``...) to Parquet files under ``out`` on a running Ray cluster (``ray.init()`` is
    called with ``address="auto"`` semantics when none is connected). Returns a manifest.

    ``options`` / ``**fields`` as in :func:`export_table` (``format``, the third argument, is a
    shorthand for ``options.format``); the tokenized format's tokenizer defaults to ``qwen3``.

    Local outputs are atomic: Ray writes into a hidden sibling directory that is renamed to
    ``out`` (with ``_manifest.json`` inside) once every task has finished. Rows dropped are
    counted in total (``rows_read - rows_written``); per-reason counts need the single-machine
    :func:`mementos_fast.export.export_sft`.
    """
    import glob
    import time
    import uuid
    from pathlib import Path

    import pyarrow.parquet as pq

    import mementos_fast as mf
    from mementos_fast import _atomic as atomic

    opts = ExportOptions.of(options, **fields, **({"format": format} if format is not None else {}))
    if opts.format == "tokenized" and opts.tokenizer is None:
        opts = dataclasses.replace(opts, tokenizer="qwen3")
    opts.check()
    if concurrency is not None and concurrency < 1:
        raise MementoValueError(f"concurrency must be >= 1, got {concurrency}")
    if "://" not in source and not glob.glob(source):
        raise MementoValueError(f"{source}: no such file or directory (and no file matches it as a glob)")
    if "://" not in out and Path(out).exists():
        raise MementoValueError(f"{Path(out).resolve()} exists")
    try:
        import ray
        import ray.data
    except ImportError:
        raise MementoValueError("ray-export needs Ray Data: pip install 'mementos-fast[ray]'") from None
    if not ray.is_initialized():
        ray.init()
    t0 = time.perf_counter()
    cpus = float(ray.cluster_resources().get("CPU", 1))
    actors = concurrency or max(1, int(cpus) - 1)
    # The actor pool must leave room for the read and write tasks, or they wait forever for a CPU
    # (2 actors on a 2-CPU machine used to hang): each of the actors + 2 gets an equal share.
    share = min(1.0, cpus / (actors + 2)) if opts.format == "tokenized" else 1.0
    remote: dict[str, Any] = {"num_cpus": share} if share < 1.0 else {}
    ds = ray.data.read_parquet(source, ray_remote_args=remote)
    rows_read = ds.count()  # from the Parquet footers
    if opts.format == "tokenized":
        mapped = ds.map_batches(
            SFTExporter,
            batch_format="pyarrow",
            batch_size=batch_size,
            concurrency=actors,
            num_cpus=share,
            fn_constructor_kwargs={"options": opts},
        )
    else:
        mapped = ds.map_batches(
            export_table, batch_format="pyarrow", batch_size=batch_size, fn_kwargs={"options": opts}
        )
    local = "://" not in out
    target = out
    if local:
        dest = Path(out).resolve()
        if dest.exists():
            raise MementoValueError(f"{dest} exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        target = str(dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    mapped.write_parquet(target, ray_remote_args=remote)
    rows_written = 0
    files: list[str] = []
    if local:
        for p in sorted(Path(target).glob("*.parquet")):
            rows_written += pq.ParquetFile(p).metadata.num_rows
            files.append(p.name)
    else:  # pragma: no cover - needs object storage
        rows_written = ray.data.read_parquet(target).count()
    manifest = {
        "format": opts.format,
        "output": "parquet",
        "engine": "ray",
        "source": source,
        **{k: v for k, v in opts.kwargs().items() if k not in ("format", "tokenizer")},
        "tokenizer": str(opts.tokenizer) if opts.format == "tokenized" else None,
        "rows_read": rows_read,
        "rows_written": rows_written,
        "rows_dropped": rows_read - rows_written,
        "files": files,
        "seconds": round(time.perf_counter() - t0, 3),
        "mementos_fast": mf.__version__,
    }
    if local:
        atomic.write_json(Path(target) / "_manifest.json", manifest)
        atomic.fsync_path(Path(target))
        atomic.replace(Path(target), dest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Deprecated: ``python -m mementos_fast.integrations ray-export ...`` is
    ``mementos-fast ray-export ...`` (same options); kept as an alias for one release."""
    import sys

    from mementos_fast import cli

    print(
        "mementos-fast: warning: `python -m mementos_fast.integrations ray-export` is deprecated; "
        "use `mementos-fast ray-export` (same arguments)",
        file=sys.stderr,
    )
    return cli.main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
