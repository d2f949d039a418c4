"""What the tokenized format's per-token columns mean, and the stage-2 attention mask they define.

Per token: ``labels`` (the id inside the assistant turn, :data:`IGNORE_INDEX` elsewhere),
``segment`` (an index into :data:`SEGMENTS`), ``block_index`` (the engine's id of the block a
token or its bound memento belongs to, -1 elsewhere) and ``evict_at`` (the first query position
that no longer sees the token, :data:`EVICT_NEVER` when none), all read off the inference
engine's plan in Rust. Stage-2 mask: query ``q`` attends to key ``t`` when
``t <= q < evict_at[t]`` (:func:`dense_mask` for short rows; docs/EXPORT.md has the
FlexAttention ``mask_mod``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

import mementos_fast._core as _core
from mementos_fast.compaction import EngineRules
from mementos_fast.errors import MementoValueError

__all__ = ["EVICT_NEVER", "IGNORE_INDEX", "SEG", "SEGMENTS", "STAGE2_DEFAULTS", "dense_mask", "stage2_mask"]

#: Segment kinds of the ``segment`` column of the tokenized format (the value is the index), from
#: the Rust crate ``mementos-export`` that writes them (``seg::NAMES``, the only definition).
#: ``chat``: template tokens (``<|im_start|>``, role names, ``<|im_end|>``, template newlines);
#: ``prompt``: system prompt and problem text; ``think``: ``<think>`` / ``</think>``;
#: ``block_start`` / ``block_end`` and ``summary_start`` / ``summary_end``: the four delimiters;
#: ``block``: block content; ``memento``: memento content; ``between``: text inside ``<think>``
#: outside any unit (and text before ``<think>``); ``answer``: text after ``</think>``.
SEGMENTS: tuple[str, ...] = _core.SEGMENTS
SEG = {name: i for i, name in enumerate(SEGMENTS)}
#: ``labels`` of a token without loss (-100), from ``mementos-export``.
IGNORE_INDEX: int = _core.IGNORE_INDEX
#: ``evict_at`` of a token no later token loses sight of (2**31 - 1), from ``mementos-export``.
EVICT_NEVER: int = _core.EVICT_NEVER
#: The stage-2 options (FORMAT.md section 5), with their defaults: the engine's rules
#: (:class:`mementos_fast.compaction.EngineRules`).
STAGE2_DEFAULTS = asdict(EngineRules())


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
        raise MementoValueError(
            f"a dense mask of {t} tokens takes {t * t / 2**30:.1f} GiB: use the "
            "FlexAttention mask_mod of docs/EXPORT.md, or raise max_tokens"
        )
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
