"""The reference: a pure-Python reproduction of the seed tutorial, kept as the correctness oracle.

Every fast path of ``mementos_fast`` is tested against these functions, and the benchmarks use them
as the baseline. They stay plain Python (only ``re`` and ``statistics``) and readable; they are not
meant to be fast.

Behaviour reproduced (``FORMAT.md`` section 7), with the decisions the tutorial leaves open:

- ``parse_trace``: blocks and summaries come from two *independent* non-greedy searches, each item
  stripped with ``str.strip()``; ``reasoning`` is the first ``<think>(.*?)</think>`` match, not
  stripped, and ``None`` when there is no match (decision); ``final_answer`` is the text after the
  last ``</think>``, stripped, ``""`` when there is none.
- ``analyze_row`` skips (returns ``None``) rows with no blocks or with different block and summary
  counts; ratios are totals (summary chars / block chars), ``None`` when the block side is 0
  (decision: the tutorial would divide by zero).
- ``compress_trace`` is the tutorial's function exactly (FORMAT.md section 7): the parts
  ``<think>``, the last ``keep_last_k`` blocks with their memento and only the memento for the
  others, each re-emitted from the regexes' **raw** captures (not stripped, no space added),
  ``</think>``, then the text after the last ``</think>`` (not stripped), all joined by ``"\n"``.
  Without ``</think>`` that text is the whole response, which gets appended again: **a bug of the
  tutorial, kept on purpose** so the oracle stays faithful (``compress_batch`` documents its own
  behaviour there).
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

BLOCK_RE = re.compile(r"<\|block_start\|>(.*?)<\|block_end\|>", re.DOTALL)
SUMMARY_RE = re.compile(r"<\|summary_start\|>(.*?)<\|summary_end\|>", re.DOTALL)
THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)

#: Python's whitespace: every code point ``c`` with ``chr(c).isspace()`` (checked by a test).
PY_WHITESPACE: frozenset[str] = frozenset(
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)


def parse_trace(response: str) -> dict[str, Any]:
    """The tutorial's parse: ``blocks``, ``summaries``, ``reasoning``, ``final_answer``."""
    blocks = [b.strip() for b in BLOCK_RE.findall(response)]
    summaries = [s.strip() for s in SUMMARY_RE.findall(response)]
    m = THINK_RE.search(response)
    reasoning = m.group(1) if m else None
    final_answer = response.split("</think>")[-1].strip() if "</think>" in response else ""
    return {"blocks": blocks, "summaries": summaries, "reasoning": reasoning, "final_answer": final_answer}


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def analyze_row(response: str) -> dict[str, Any] | None:
    """Per-row statistics, or ``None`` when the tutorial skips the row."""
    p = parse_trace(response)
    blocks, summaries = p["blocks"], p["summaries"]
    if not blocks or len(blocks) != len(summaries):
        return None
    block_chars = sum(len(b) for b in blocks)
    summary_chars = sum(len(s) for s in summaries)
    block_words = sum(len(b.split()) for b in blocks)
    summary_words = sum(len(s.split()) for s in summaries)
    return {
        "n_blocks": len(blocks),
        "block_chars": block_chars,
        "summary_chars": summary_chars,
        "block_words": block_words,
        "summary_words": summary_words,
        "char_ratio": _ratio(summary_chars, block_chars),
        "word_ratio": _ratio(summary_words, block_words),
        "mean_block_chars": block_chars / len(blocks),
        "mean_summary_chars": summary_chars / len(summaries),
    }


def analyze(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``analyze_row`` over rows with ``response`` and ``domain``; skipped rows are left out."""
    out = []
    for row in rows:
        stats = analyze_row(row["response"])
        if stats is not None:
            stats["domain"] = row.get("domain")
            out.append(stats)
    return out


def domain_medians(stats: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per domain: the median of every numeric field (``None`` values ignored) and ``n_rows``."""
    by_domain: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for s in stats:
        by_domain[s["domain"]].append(s)
    out: dict[str, dict[str, float]] = {}
    for domain, rows in sorted(by_domain.items(), key=lambda kv: str(kv[0])):
        fields = [k for k, v in rows[0].items() if k != "domain" and (v is None or isinstance(v, (int, float)))]
        med: dict[str, float] = {"n_rows": len(rows)}
        for f in fields:
            values = [r[f] for r in rows if r.get(f) is not None]
            if values:
                med[f] = statistics.median(values)
        out[domain] = med
    return out


def compress_trace(response: str, keep_last_k: int = 1) -> str:
    """The tutorial's compaction: keep the last ``keep_last_k`` blocks, mementos for the rest."""
    blocks = BLOCK_RE.findall(response)
    summaries = SUMMARY_RE.findall(response)
    if not blocks or len(blocks) != len(summaries):
        return response
    parts = ["<think>"]
    for i, (b, s) in enumerate(zip(blocks, summaries)):
        if i >= len(blocks) - keep_last_k:
            parts.append("<|block_start|>" + b + "<|block_end|>")
        parts.append("<|summary_start|>" + s + "<|summary_end|>")
    parts.append("</think>")
    parts.append(response.split("</think>")[-1])
    return "\n".join(parts)


def to_messages(problem: str, response: str) -> dict[str, list[dict[str, str]]]:
    """The tutorial's chat conversion for SFT."""
    return {"messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": response}]}
