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

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mementos_fast.errors import MementoValueError

__all__ = [
    "SFTExporter",
    "compress_table",
    "export_table",
    "parse_table",
    "stats_table",
]


def _table(batch: pa.Table | pa.RecordBatch) -> pa.Table:
    return pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch


def _own(arr: Any) -> pa.Array:
    """A copy in fresh buffers (parse results share the input's buffers, and engines that
    serialise a table would otherwise drag every view's backing buffer along)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return pc.take(arr, pa.array(np.arange(len(arr), dtype=np.int64)))


def parse_table(batch: pa.Table | pa.RecordBatch, *, column: str = "response", spans: bool = False,
                keep_columns: bool = True) -> pa.Table:
    """The input columns plus ``parse_batch``'s per-row results: ``status``, ``error_offset``,
    ``n_blocks``, ``n_summaries``, ``block_chars``, ``summary_chars``, ``block_words``,
    ``summary_words``, ``final_answer`` (and ``spans`` with ``spans=True``).

    Text results are copied out as ``large_string`` so the table serialises on its own (Ray
    moves tables between processes; ``datasets`` writes them to its cache).
    """
    import mementos_fast as mf

    table = _table(batch)
    parsed = mf.parse_batch(table.column(column), spans=spans)
    out = table if keep_columns else pa.table({})
    fields = ["status", "error_offset", "n_blocks", "n_summaries", "block_chars", "summary_chars",
              "block_words", "summary_words"]
    for name in fields:
        arr = parsed.column(name)
        if name == "status":
            arr = arr.cast(pa.string())
        out = out.append_column(name, _own(arr))
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


def compress_table(batch: pa.Table | pa.RecordBatch, *, keep_last_k: int = 1, style: str = "tutorial",
                   column: str = "response", mask_delimiters: bool = False,
                   keep_last_block_for_answer: bool = False) -> pa.Table:
    """The input with ``column`` replaced by ``mementos_fast.compress_batch`` of it."""
    import mementos_fast as mf

    compress_batch = getattr(mf, "compress_batch", None)
    if compress_batch is None:
        raise MementoValueError("compress_table needs mementos_fast.compress_batch (not in this build)")
    table = _table(batch)
    new = compress_batch(table.column(column), keep_last_k, style=style, mask_delimiters=mask_delimiters,
                         keep_last_block_for_answer=keep_last_block_for_answer)
    return table.set_column(table.column_names.index(column), column, new)


def export_table(batch: pa.Table | pa.RecordBatch, *, format: str = "messages", tokenizer: Any = None,
                 **options: Any) -> pa.Table:
    """SFT rows of ``format`` for one table (``mementos_fast.export.transform_table``; options:
    ``variant``, ``keep_last_k``, ``style``, ``max_length``, ``overflow``, ``system_prompt``,
    ``only_ok``). Dropped rows are left out, so the output can be shorter than the input: pass
    ``remove_columns=ds.column_names`` to ``datasets.Dataset.map``."""
    from mementos_fast.export import transform_table

    return transform_table(_table(batch), format, tokenizer=tokenizer, **options)


class SFTExporter:
    """A callable for ``ray.data.Dataset.map_batches(SFTExporter, fn_constructor_kwargs=...,
    concurrency=N, batch_format="pyarrow")``: the tokenizer is prepared once per worker.

    ``drops`` accumulates the dropped rows by reason in this worker (for a manifest, use
    :func:`mementos_fast.export.export_sft` on one machine, or count rows before and after).
    """

    def __init__(self, format: str = "messages", tokenizer: Any = None, **options: Any) -> None:
        from mementos_fast.export import _as_tokenizer

        self.format = format
        self.tokenizer = _as_tokenizer(tokenizer) if format == "tokenized" else None
        self.options = options
        self.drops: Counter = Counter()

    def __call__(self, batch: pa.Table | pa.RecordBatch) -> pa.Table:
        from mementos_fast.export import transform_table

        return transform_table(_table(batch), self.format, tokenizer=self.tokenizer, drops=self.drops,
                               **self.options)
