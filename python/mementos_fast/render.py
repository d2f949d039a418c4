"""Pretty-printing one trace: each block with its memento and the memento's size as a % of the
block, then the final answer. Colour with ``rich`` on a terminal, plain text when piped."""

from __future__ import annotations

import shutil
import sys
import textwrap
from typing import TextIO

import mementos_fast as mf


def evicted_blocks(response: str, keep_last_k: int) -> set[int]:
    """Indexes (in the tutorial's ``blocks`` list) of the blocks whose content the inference engine
    has evicted by the end of generation. Read from the engine's plan
    (:func:`mementos_fast.eviction_plan`, FORMAT.md section 5), never recomputed here: a block is
    shown as evicted when one of the plan's evicted byte ranges covers its content."""
    if keep_last_k < 0:
        return set()
    plan = mf.eviction_plan([response], keep_last_k).to_pylist()[0]
    ranges = [(s, e) for s, e in zip(plan["evict_start"], plan["evict_end"]) if s is not None and e is not None]
    if not ranges:
        return set()
    raw = response.encode("utf-8")
    out: set[int] = set()
    # The tutorial's blocks are the non-greedy <|block_start|>...<|block_end|> pairs, in order.
    pos, i = 0, 0
    while True:
        a = raw.find(b"<|block_start|>", pos)
        if a < 0:
            break
        a += len(b"<|block_start|>")
        z = raw.find(b"<|block_end|>", a)
        if z < 0:
            break
        if z > a and any(s <= a and z <= e for s, e in ranges):
            out.add(i)
        pos, i = z + len(b"<|block_end|>"), i + 1
    return out


def render_text(
    response: str, *, width: int | None = None, max_block_chars: int | None = 1200, keep_last_k: int | None = None
) -> str:
    """The plain-text rendering of one trace; with ``keep_last_k``, evicted block contents are
    replaced by a marker, showing what the model still has in context."""
    evicted = evicted_blocks(response, keep_last_k) if keep_last_k is not None else set()
    width = width or min(shutil.get_terminal_size((100, 24)).columns, 120)
    p = mf.parse(response)
    out: list[str] = [
        f"status: {p.status}" + (f" at byte {p.error_offset}" if p.error_offset is not None else ""),
        f"blocks: {len(p.blocks)}   mementos: {len(p.summaries)}",
        "",
    ]

    def wrap(text: str, indent: str) -> str:
        if max_block_chars is not None and len(text) > max_block_chars:
            text = text[:max_block_chars] + f" [... {len(text) - max_block_chars:,} more chars]"
        paras = [
            textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent) if line.strip() else ""
            for line in text.splitlines()
        ]
        return "\n".join(paras)

    for i, block in enumerate(p.blocks):
        out.append(f"── block {i + 1} ({len(block):,} chars) " + "─" * max(0, width - 30))
        out.append(f"  [evicted from the context: {len(block):,} chars]" if i in evicted else wrap(block, "  "))
        if i < len(p.summaries):
            s = p.summaries[i]
            pct = f"{100 * len(s) / len(block):.0f}% of block" if block else "n/a"
            out.append(f"  ▸ memento ({len(s):,} chars, {pct})")
            out.append(wrap(s, "    "))
        out.append("")
    for j in range(len(p.blocks), len(p.summaries)):
        out.append(f"  ▸ memento {j + 1} without a block: {p.summaries[j][:200]}")
    if not p.blocks and p.reasoning and p.reasoning.strip():
        # A raw trace (no blocks): its reasoning is the whole story.
        reasoning = p.reasoning.strip()
        out.append(f"── reasoning, not split into blocks ({len(reasoning):,} chars) " + "─" * max(0, width - 50))
        out.append(wrap(reasoning, "  "))
        out.append("")
    out.append("── final answer " + "─" * max(0, width - 16))
    if p.final_answer:
        out.append(wrap(p.final_answer, "  "))
    elif p.blocks and p.status == "ok":
        out.append("  (empty: the answer is inside the last block)")
    else:
        out.append(
            "  (empty: no text after </think>)" if "</think>" in response else "  (none: the trace has no </think>)"
        )
    return "\n".join(out) + "\n"


def show(
    response: str,
    *,
    width: int | None = None,
    file: TextIO | None = None,
    color: bool | None = None,
    keep_last_k: int | None = None,
) -> None:
    """Print a trace; coloured with rich when writing to a terminal (or ``color=True``)."""
    file = file or sys.stdout
    text = render_text(response, width=width, keep_last_k=keep_last_k)
    use_color = file.isatty() if color is None else color
    if use_color:
        try:
            from rich.console import Console
            from rich.text import Text
        except ImportError:
            use_color = False
    if not use_color:
        file.write(text)
        return
    console = Console(file=file, width=width, highlight=False)
    for line in text.splitlines():
        style = (
            "bold cyan"
            if line.startswith("──")
            else "green"
            if line.lstrip().startswith("▸")
            else "bold red"
            if line.startswith("status:") and "ok" not in line
            else None
        )
        console.print(Text(line, style=style or ""))
