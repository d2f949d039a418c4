"""Parsing traces: :func:`parse` (one trace) and :func:`parse_batch` (a column, in Rust over Arrow).

Re-exported by :mod:`mementos_fast`; the other modules import from here, never from the package
``__init__``, so there is no import cycle through it.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

import mementos_fast._core as _core
from mementos_fast._arrow import as_arrow_strings
from mementos_fast.errors import MementoFormatError, MementoTypeError

__all__ = ["STATUSES", "Parsed", "parse", "parse_batch", "raise_first_problem"]

#: Every row status, in the order of the ``status`` column's dictionary, with its meaning.
STATUSES: dict[str, str] = dict(_core.STATUSES)

Parsed = _core.Parsed


def parse(text: str) -> _core.Parsed:
    """Parse one trace.

    Returns an object with ``blocks``, ``summaries`` (stripped, as the tutorial), ``reasoning``
    (the first ``<think>...</think>`` content, unstripped, or ``None``), ``final_answer``
    (after the last ``</think>``, stripped, ``""`` when there is none), ``status``,
    ``error_offset`` and ``spans``: ``(kind, start, end)`` byte ranges of the UTF-8 text whose
    concatenation is the input.
    """
    if not isinstance(text, str):
        raise MementoTypeError(f"parse() takes a str, got {type(text).__name__}")
    return _core.parse(text)


def parse_batch(
    column: Any,
    *,
    strict: bool = False,
    spans: bool = False,
    threads: int | None = None,
) -> pa.RecordBatch:
    """Parse a column of traces into a ``pyarrow.RecordBatch`` (one row per input row).

    ``column``: any Arrow string data through the PyCapsule interface (pyarrow ``string``,
    ``large_string``, ``string_view``, chunked arrays, a polars Series, a ``datasets`` Arrow
    column) or a list of ``str``. Nulls stay null.

    Columns: ``blocks`` and ``summaries`` (lists of string_view, stripped as the tutorial),
    ``reasoning`` and ``final_answer`` (string_view), ``n_blocks``, ``n_summaries``,
    ``block_chars``, ``summary_chars`` (code points), ``block_words``, ``summary_words``
    (``str.split()`` words), ``status`` (dictionary string, ``"ok"`` when well-formed, see
    ``STATUSES``), ``error_offset`` (byte offset of the problem, null when ok),
    ``block_char_counts``, ``summary_char_counts``, ``block_word_counts``, ``summary_word_counts``
    (list<int32>: the same measures per item, parallel to ``blocks`` / ``summaries``) and, with
    ``spans=True``, ``spans`` (list of ``{kind, start, end}`` byte ranges covering the row).

    Text columns are views into the input's buffers: no text is copied (note that many
    ``pyarrow.compute`` kernels do not accept ``string_view`` yet: ``.cast(pa.large_string())``
    copies when one is needed). The GIL is released;
    ``threads=None`` uses every core, ``threads=1`` the calling thread only.

    ``strict=True`` raises :class:`MementoFormatError` for the first row whose status is not
    ``"ok"``, naming the row, the byte offset and the problem.
    """
    batch = _core.parse_batch(as_arrow_strings(column), spans=spans, threads=threads)
    if strict:
        raise_first_problem(batch)
    return batch


def raise_first_problem(batch: pa.RecordBatch, row_offset: int = 0) -> None:
    """Raise :class:`MementoFormatError` for the first non-ok row of a ``parse_batch`` result."""
    import pyarrow.compute as pc

    status = batch.column("status")
    bad = pc.and_kleene(pc.is_valid(status), pc.not_equal(status.indices, 0))
    idx = pc.index(bad, True).as_py()
    if idx >= 0:
        name = status[idx].as_py()
        offset = batch.column("error_offset")[idx].as_py()
        raise MementoFormatError(row_offset + idx, offset, name, STATUSES[name])
