"""An independent Python model of the Memento vLLM overlay's block masking, token by token: the
test oracle of the Rust engine (issue: "One engine, exactly the two references").

Written from reading the overlay (microsoft/memento, ``vllm/vllm/v1/core/block_masking/tracker.py``
and ``processor.py``), not from the Rust code. Text is cut into "tokens": each delimiter (and
``<|im_start|>``, ``assistant``) is one token, every other character is a token of its own, so a
token position is an index into that list. The model processes the prompt's tokens as
``process_prompt_tokens`` does (tracked, nothing compacted), then each generated token as
``process_token`` does, and records every compaction range (start inclusive, end exclusive, in
token positions), every restart rewind, and the visible length after each generated token.

To keep the oracle fast enough for long traces, a run of ordinary text between two special tokens
is one token of weight ``len(run)`` (its characters); nothing in the rules looks inside such runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DELIMS = ["<think>", "</think>", "<|block_start|>", "<|block_end|>", "<|summary_start|>", "<|summary_end|>"]
BS, BE, SS, SE = DELIMS[2:]
IM_START = "<|im_start|>"
SPLIT_RE = re.compile("(" + "|".join(map(re.escape, [*DELIMS, IM_START, "assistant"])) + ")")


def tokenize(text: str) -> list[str]:
    return [t for t in SPLIT_RE.split(text) if t]


@dataclass
class Block:
    start: int
    end: int | None = None
    summary_start: int | None = None
    summary_end: int | None = None


@dataclass
class State:
    open_blocks: list[int] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    in_summary: bool = False
    current: int | None = None
    last_im_start: int | None = None
    assistant_at: int | None = None
    rewinds: list[tuple[int, int]] = field(default_factory=list)  # (at position, rewind to position)

    def start_summary(self, pos: int) -> None:
        for b in reversed(range(len(self.blocks))):
            blk = self.blocks[b]
            if blk.end is not None and blk.summary_start is None:
                blk.summary_start = pos
                self.in_summary = True
                self.current = b
                return

    def end_summary(self, pos: int) -> int | None:
        if not self.in_summary or self.current is None:
            return None
        b = self.current
        self.blocks[b].summary_end = pos
        self.in_summary = False
        self.current = None
        self.pending.append(b)
        return b

    def compaction(self, k: int, mask: bool, restart: bool) -> tuple[int, tuple[int, int]] | None:
        if k < 0 or len(self.pending) <= k:
            return None
        b = self.pending.pop(0)
        blk = self.blocks[b]
        assert blk.end is not None
        if restart or mask:
            return b, (blk.start, blk.end + 1)
        return b, (blk.start + 1, blk.end)


@dataclass(frozen=True)
class Config:
    keep_last_k: int = 0
    mask_delimiters: bool = False
    keep_last_block_for_answer: bool = False
    restart_mode: bool = False
    compact_on_summary_end: bool = True
    require_assistant_section: bool = False


def _assistant_gate(st: State, tok: str, pos: int, cfg: Config) -> bool:
    """The overlay's assistant-section detection; True when the token is tracked."""
    if tok == IM_START:
        st.last_im_start = pos
    if (
        cfg.require_assistant_section
        and tok == "assistant"
        and st.assistant_at is None
        and st.last_im_start is not None
        and pos - st.last_im_start <= 2
    ):
        st.assistant_at = pos
    if not cfg.require_assistant_section:
        return True
    return st.assistant_at is not None and pos > st.assistant_at


def run(prompt: list[str], generated: list[str], cfg: Config) -> tuple[State, list[tuple[int, int, int]]]:
    """Process the prompt, then the generated tokens. Returns the state and the compactions as
    ``(trigger position, start, end)``."""
    st = State()
    for pos, tok in enumerate(prompt):
        if not _assistant_gate(st, tok, pos, cfg):
            continue
        if tok == BS:
            st.blocks.append(Block(pos))
            st.open_blocks.append(len(st.blocks) - 1)
        elif tok == BE:
            if st.open_blocks:
                st.blocks[st.open_blocks.pop()].end = pos
        elif tok == SS:
            st.start_summary(pos)
        elif tok == SE:
            st.end_summary(pos)
    if cfg.restart_mode and st.pending:
        starts = [st.blocks[b].summary_start for b in st.pending if st.blocks[b].summary_start is not None]
        if starts:
            st.rewinds.append((len(prompt) - 1, min(starts)))
    compactions: list[tuple[int, int, int]] = []
    k = cfg.keep_last_k
    defer = cfg.keep_last_block_for_answer and k == 0
    for j, tok in enumerate(generated):
        pos = len(prompt) + j
        if not _assistant_gate(st, tok, pos, cfg):
            continue
        if tok == BS:
            if defer and st.pending:
                got = st.compaction(0, cfg.mask_delimiters, cfg.restart_mode)
                if got is not None:
                    compactions.append((pos, *got[1]))
                    if cfg.restart_mode:
                        st.rewinds.append((pos, st.blocks[got[0]].summary_start))
            st.blocks.append(Block(pos))
            st.open_blocks.append(len(st.blocks) - 1)
        elif tok == BE:
            if st.open_blocks:
                st.blocks[st.open_blocks.pop()].end = pos
        elif tok == SS:
            st.start_summary(pos)
        elif tok == SE:
            b = st.end_summary(pos)
            if cfg.compact_on_summary_end and b is not None and not defer:
                got = st.compaction(k, cfg.mask_delimiters, cfg.restart_mode)
                if got is not None:
                    compactions.append((pos, *got[1]))
                    if cfg.restart_mode:
                        st.rewinds.append((pos, st.blocks[b].summary_start))
    return st, compactions


def inplace(text: str, cfg: Config) -> str:
    """The text left in the cache at the end: every token outside the compacted ranges."""
    toks = tokenize(text)
    _, comps = run([], toks, cfg)
    gone = set()
    for _, s, e in comps:
        gone.update(range(s, e))
    return "".join(t for i, t in enumerate(toks) if i not in gone)


def replay(text: str, cfg: Config, prompt: str = "", prompt_len: int = 0) -> dict[str, int]:
    """Characters: each token weighs its length. Visible length after each generated token."""
    ptoks, gtoks = tokenize(prompt), tokenize(text)
    st, comps = run(ptoks, gtoks, cfg)
    allt = ptoks + gtoks
    weight = [len(t) for t in allt]
    by_trigger: dict[int, list[tuple[int, int]]] = {}
    for at, s, e in comps:
        by_trigger.setdefault(at, []).append((s, e))
    gone: set[int] = set()
    visible = prompt_len + sum(weight[: len(ptoks)])
    start_visible = visible
    peak = visible
    auc = 0
    for j in range(len(gtoks)):
        pos = len(ptoks) + j
        # each character of the token is one unit: sum_{i=1..w} (visible + i)
        w = weight[pos]
        auc += w * visible + w * (w + 1) // 2
        visible += w
        peak = max(peak, visible)
        for s, e in by_trigger.get(pos, []):
            new = set(range(s, e)) - gone
            visible -= sum(weight[i] for i in new)
            gone |= new
    recomputed = 0
    prefix = [0]
    for w in weight:
        prefix.append(prefix[-1] + w)
    for at, to in st.rewinds:
        recomputed += prefix[at + 1] - prefix[to]
    total = sum(weight[len(ptoks) :])
    return {
        "prompt_len": start_visible,
        "total_len": total,
        "peak_len": peak,
        "final_len": visible,
        "kv_auc": auc,
        "recomputed_len": recomputed,
        "evicted_blocks": len(comps),
        "complete_blocks": sum(1 for b in st.blocks if b.end is not None and b.summary_end is not None),
    }


def plan_bytes(text: str, cfg: Config) -> list[dict[str, int | None]]:
    """Per block (in start order): byte offsets as ``mementos_fast.eviction_plan`` reports them."""
    toks = tokenize(text)
    st, comps = run([], toks, cfg)
    starts = [0]
    for t in toks:
        starts.append(starts[-1] + len(t.encode()))
    trig = {}
    for at, s, e in comps:
        trig[(s, e)] = at
    out = []
    for blk in st.blocks:
        row: dict[str, int | None] = {
            "block_start": starts[blk.start],
            "block_end": starts[blk.end + 1] if blk.end is not None else None,
            "summary_start": starts[blk.summary_start] if blk.summary_start is not None else None,
            "summary_end": starts[blk.summary_end + 1] if blk.summary_end is not None else None,
            "trigger": None,
            "evict_start": None,
            "evict_end": None,
        }
        if blk.end is not None:
            rng = (blk.start, blk.end + 1) if (cfg.mask_delimiters or cfg.restart_mode) else (blk.start + 1, blk.end)
            if rng in trig:
                row.update(trigger=starts[trig[rng]], evict_start=starts[rng[0]], evict_end=starts[rng[1]])
        out.append(row)
    return out
