"""SFT export: ``messages``, byte-exact Memento ChatML and tokenized rows with stage-2 metadata.

Everything works on Arrow: a source is read as ``pyarrow.RecordBatch`` es by
:func:`mementos_fast.load`, each batch is turned into an output table by :func:`transform_table`
(Arrow compute for the text formats; one call into the Rust crate ``mementos-export`` for the
tokenized format) and written by a sink that never leaves a final-looking file behind when it is
interrupted (temporary name in the destination's directory, fsync, rename). See docs/EXPORT.md.

The package, by job:

- :mod:`~mementos_fast.export.formats`: the ``messages`` / ``chatml`` / ``tokenized`` columns of a batch;
- :mod:`~mementos_fast.export.labels`: what the token columns mean (:data:`SEGMENTS`, :data:`IGNORE_INDEX`,
  :data:`EVICT_NEVER`) and the stage-2 mask (:func:`dense_mask`, :func:`stage2_mask`);
- :mod:`~mementos_fast.export.sinks`: :class:`ExportSink` (JSONL, Parquet shards, ``datasets``), atomic;
- :mod:`~mementos_fast.export.api`: :func:`transform_table` and :func:`export_sft`, which take the
  options as one :class:`~mementos_fast.options.ExportOptions` (re-exported here) or its fields as
  keywords.

This module re-exports the public names; the private helpers are imported from their module.

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

from mementos_fast.export.api import export_sft, transform_table
from mementos_fast.export.formats import DELIMITERS, FORMATS, MEMENTO_CHAT_TEMPLATE, METADATA, exporter, render_chatml
from mementos_fast.export.labels import (
    EVICT_NEVER,
    IGNORE_INDEX,
    SEG,
    SEGMENTS,
    STAGE2_DEFAULTS,
    dense_mask,
    stage2_mask,
)
from mementos_fast.export.sinks import OUTPUTS, ExportSink, jsonl_bytes
from mementos_fast.options import ExportOptions

__all__ = [
    "DELIMITERS",
    "EVICT_NEVER",
    "FORMATS",
    "IGNORE_INDEX",
    "MEMENTO_CHAT_TEMPLATE",
    "METADATA",
    "OUTPUTS",
    "SEG",
    "SEGMENTS",
    "STAGE2_DEFAULTS",
    "ExportOptions",
    "ExportSink",
    "dense_mask",
    "export_sft",
    "exporter",
    "jsonl_bytes",
    "render_chatml",
    "stage2_mask",
    "transform_table",
]
