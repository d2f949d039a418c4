"""Peer implementations of the tutorial's per-row parse statistics, for the benchmarks.

- ``pyarrow_compute``: ``split_pattern`` on the delimiters, ``utf8_trim_whitespace``,
  ``utf8_length`` and ``utf8_split_whitespace``, grouped back to rows.
- ``polars``: ``str.extract_all`` with the tutorial's non-greedy regexes, ``strip_chars``,
  ``len_chars`` and ``count_matches(r"\\S+")``.

Neither reproduces the tutorial on every malformed row (pyarrow's split cannot express the
non-greedy search across an unclosed start; polars and Arrow use their own whitespace sets), so the
benchmarks check them against the reference on the well-formed rows only.
"""

from __future__ import annotations

import heapq
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

COLUMNS = ["n_blocks", "n_summaries", "block_chars", "summary_chars", "block_words", "summary_words"]
PAIRS = {"block": ("<|block_start|>", "<|block_end|>"), "summary": ("<|summary_start|>", "<|summary_end|>")}
COUNT = {"block": "n_blocks", "summary": "n_summaries"}


def _arrow_pairs(col: pa.Array, open_: str, close: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    after = pc.list_slice(pc.split_pattern(col, open_), 1)
    flat = pc.list_flatten(after)
    parent = pc.list_parent_indices(after)
    has_end = pc.match_substring(flat, close)
    content = pc.filter(pc.list_element(pc.split_pattern(flat, close, max_splits=1), 0), has_end)
    parent = pc.filter(parent, has_end).to_numpy()
    stripped = pc.utf8_trim_whitespace(content)
    chars = pc.utf8_length(stripped).to_numpy()
    words = pc.list_value_length(pc.utf8_split_whitespace(stripped)).to_numpy()
    n = len(col)
    return (
        np.bincount(parent, minlength=n),
        np.bincount(parent, weights=chars, minlength=n).astype(np.int64),
        np.bincount(parent, weights=words, minlength=n).astype(np.int64),
    )


def pyarrow_compute(col: pa.Array) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for side, (o, c) in PAIRS.items():
        n, chars, words = _arrow_pairs(col, o, c)
        out[COUNT[side]] = n.tolist()
        out[f"{side}_chars"] = chars.tolist()
        out[f"{side}_words"] = words.tolist()
    return out


def polars(series) -> dict[str, list[int]]:
    import polars as pl

    out: dict[str, list[int]] = {}
    for side, (o, c) in PAIRS.items():
        pattern = "(?s)" + o.replace("|", r"\|") + ".*?" + c.replace("|", r"\|")
        matches = series.str.extract_all(pattern)
        inner = matches.list.eval(pl.element().str.slice(len(o)).str.head(-len(c)).str.strip_chars())
        out[COUNT[side]] = matches.list.len().fill_null(0).to_list()
        out[f"{side}_chars"] = inner.list.eval(pl.element().str.len_chars()).list.sum().fill_null(0).to_list()
        out[f"{side}_words"] = inner.list.eval(pl.element().str.count_matches(r"\S+")).list.sum().fill_null(0).to_list()
    return out


# ---------------------------------------------------------------------------------------------
# The inference engine's in-place eviction in plain Python (re.finditer over the delimiters, then
# slicing): the peer of compress_batch(style="inplace").

_DELIM_RE = re.compile(r"<think>|</think>|<\|block_start\|>|<\|block_end\|>|<\|summary_start\|>|<\|summary_end\|>")


def inplace_python(text: str, k: int = 0, mask: bool = False) -> str:
    """The engine's in-place rewrite in plain Python (the overlay's rules: a memento binds to the
    most recently opened closed block without one; a queue of waiting blocks, the oldest evicted
    when more than k wait)."""
    toks = [(m.group(), m.start(), m.end()) for m in _DELIM_RE.finditer(text)]
    open_, blocks, waiting, evicted = [], [], [], []
    bindable: list[int] = []  # max-heap of block ids, negated
    current = None
    for i, (d, _, _) in enumerate(toks):
        if d == "<|block_start|>":
            open_.append(len(blocks))
            blocks.append([i, None])
        elif d == "<|block_end|>":
            if open_:
                b = open_.pop()
                blocks[b][1] = i
                heapq.heappush(bindable, -b)
        elif d == "<|summary_start|>":
            if bindable:
                current = -heapq.heappop(bindable)
        elif d == "<|summary_end|>" and current is not None:
            waiting.append(current)
            current = None
            if 0 <= k < len(waiting):
                o, c = blocks[waiting.pop(0)]
                evicted.append((toks[o][1], toks[c][2]) if mask else (toks[o][2], toks[c][1]))
    out, pos = [], 0
    for s, e in sorted(evicted):
        if s >= pos:
            out.append(text[pos:s])
            pos = e
        elif e > pos:
            pos = e
    out.append(text[pos:])
    return "".join(out)
