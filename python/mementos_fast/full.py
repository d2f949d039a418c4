"""The OpenMementos ``full`` config: alignment of ``sentences`` / ``blocks`` / ``block_summaries``
with ``response``, and re-assembly of a ``response`` from those fields in any delimiter layout.

This module is the Python face of the Rust alignment, ``rust/mementos-core/src/align.rs``
(``mementos_core::align``; named ``full`` here after the config it reads, ``align`` in Rust after
what it does): :func:`align_full_batch` is one ``_core.align_full_batch`` call per record batch
whose columns are returned as they are, and :data:`ALIGN_STATUSES` is the Rust enum's list. Nothing
here recomputes a check; :func:`assemble_response` only builds text.

The checks (one status per row, the first failure wins):
``null_field``, ``bad_range``, ``not_contiguous``, ``not_covering``, ``field_count_mismatch``,
``summary_mismatch``, ``block_text_differs``; ``ok`` for a clean row. Each compared block is
``exact`` (its sentences joined by one space), ``whitespace`` (the same ``str.split()`` words:
the pipeline strips sentences and turns single newlines into spaces) or ``different``, with a
similarity (Dice coefficient of the word multisets). See docs/COMPACTION.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

import mementos_fast._core as _core
from mementos_fast.errors import MementoValueError

__all__ = ["ALIGN_STATUSES", "ResponseLayout", "align_full_batch", "assemble_response"]

#: Alignment statuses, in the order the checks run.
ALIGN_STATUSES: dict[str, str] = dict(_core.ALIGN_STATUSES)

_FIELDS = ("response", "sentences", "blocks", "block_summaries")
#: The six delimiters, from the core (think, block and memento start / end, in its ``Delim`` order).
_DELIMITERS: tuple[str, ...] = _core.DELIMITERS


def _table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, dict) or hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    raise MementoValueError(f"expected a RecordBatch or Table with {', '.join(_FIELDS)}, got {type(data).__name__}")


def align_full_batch(batch: Any, *, threads: int | None = None) -> pa.RecordBatch:
    """Check a batch of ``full`` rows against their ``response``; one output row per input row.

    ``batch``: a ``pyarrow.RecordBatch`` or ``Table`` (or a dict of columns) with ``response``,
    ``sentences`` (list<string>), ``blocks`` (list<list<int>>, inclusive sentence indices) and
    ``block_summaries`` (list<string>). Lists are read in place (no copy of the text).

    Columns: ``status`` (``ok`` or the first problem, see :data:`ALIGN_STATUSES`),
    ``problem_block`` (index of the block at fault, when one is), ``n_sentences``, ``n_blocks``,
    ``n_block_summaries``, ``n_response_blocks``, ``n_response_summaries``, ``blocks_exact``,
    ``blocks_whitespace``, ``blocks_different``, ``summaries_equal``, ``min_similarity``, and per
    block ``block_match`` (``exact`` / ``whitespace`` / ``different``) and ``block_similarity``.
    """
    table = _table(batch)
    missing = [f for f in _FIELDS if f not in table.schema.names]
    if missing:
        raise MementoValueError(f"missing column(s): {', '.join(missing)}")
    # One call per record batch (its columns are aligned single arrays, read in place).
    fields = table.select(list(_FIELDS))
    batches = fields.to_batches() or [pa.RecordBatch.from_pylist([], fields.schema)]
    out = [_core.align_full_batch(*b.columns, threads=threads) for b in batches]
    return out[0] if len(out) == 1 else pa.Table.from_batches(out).combine_chunks().to_batches()[0]


@dataclass(frozen=True)
class ResponseLayout:
    """How :func:`assemble_response` writes a trace. The defaults reproduce the OpenMementos
    ``response`` layout; change the delimiters to re-render the data for another model."""

    think_start: str = _DELIMITERS[0]
    think_end: str = _DELIMITERS[1]
    block_start: str = _DELIMITERS[2]
    block_end: str = _DELIMITERS[3]
    summary_start: str = _DELIMITERS[4]
    summary_end: str = _DELIMITERS[5]
    #: Between the sentences of a block.
    sentence_sep: str = " "
    #: Inside each delimiter pair, on both sides of the text.
    pad: str = " "
    #: After the think start, between a block and its summary, after each summary.
    after_think_start: str = "\n"
    block_to_summary: str = "\n"
    after_unit: str = "\n\n"
    #: After the think end, before the answer.
    before_answer: str = "\n"


def assemble_response(
    data: Any,
    *,
    layout: ResponseLayout | None = None,
    answers: Any = None,
) -> pa.Array:
    """Build ``response`` strings from ``sentences``, ``blocks`` and ``block_summaries``.

    ``data``: a RecordBatch / Table / dict with those columns. ``answers``: the final answers
    (array-like, one per row); by default the ``final_answer`` parsed from a ``response`` column
    when there is one, else empty. Rows with a null field, or a block range outside the
    sentences, give null. Returns a ``large_string`` array.
    """
    layout = layout or ResponseLayout()
    table = _table(data)
    for f in ("sentences", "blocks", "block_summaries"):
        if f not in table.schema.names:
            raise MementoValueError(f"missing column {f!r}")
    if answers is None:
        if "response" in table.schema.names:
            from mementos_fast.parsing import parse_batch

            answers = (
                pa.concat_arrays(
                    [
                        parse_batch(c).column("final_answer").cast(pa.large_string())
                        for c in table.column("response").chunks
                    ]
                )
                if table.num_rows
                else pa.array([], pa.large_string())
            )
            answers = answers.to_pylist()
        else:
            answers = [""] * table.num_rows
    else:
        answers = list(answers.to_pylist() if hasattr(answers, "to_pylist") else answers)
    if len(answers) != table.num_rows:
        raise MementoValueError(f"answers has {len(answers)} values for {table.num_rows} rows")
    L = layout
    out: list[str | None] = []
    for sents, blocks, sums, ans in zip(
        table.column("sentences").to_pylist(),
        table.column("blocks").to_pylist(),
        table.column("block_summaries").to_pylist(),
        answers,
    ):
        if sents is None or blocks is None or sums is None:
            out.append(None)
            continue
        units = []
        ok = True
        for i, pair in enumerate(blocks):
            if pair is None or len(pair) != 2 or not (0 <= pair[0] <= pair[1] < len(sents)):
                ok = False
                break
            text = L.sentence_sep.join(sents[pair[0] : pair[1] + 1])
            summary = (sums[i] if i < len(sums) else "") or ""
            units.append(
                f"{L.block_start}{L.pad}{text}{L.pad}{L.block_end}{L.block_to_summary}"
                f"{L.summary_start}{L.pad}{summary.strip()}{L.pad}{L.summary_end}{L.after_unit}"
            )
        if not ok:
            out.append(None)
            continue
        out.append(f"{L.think_start}{L.after_think_start}{''.join(units)}{L.think_end}{L.before_answer}{ans or ''}")
    return pa.array(out, pa.large_string())
