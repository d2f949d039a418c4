"""A deterministic generator of realistic MEMENTO traces, malformed variants and adversarial
inputs, for tests and benchmarks.

Traces are assembled from pools of hand-written sentences per domain (LaTeX for math, code
fences with ``<`` and ``->`` for code, units and Greek letters for science, some non-ASCII text
and non-breaking spaces), with block and memento sizes drawn around the published medians
(blocks of a few thousand characters, mementos ~15-25% of their block) and whitespace around the
delimiters varied between traces, because the format does not fix it. Same seed, same output,
in any process (only ``random.Random(seed)`` is used).
"""

from __future__ import annotations

import random
from typing import Any

from mementos_fast._core import DELIMITERS

DOMAINS = ("math", "code", "science")
_SOURCES = {
    "math": ("ai2-adapt-dev/openmath-2-math", "AIME", "olympiads"),
    "code": ("codeforces", "leetcode", "atcoder"),
    "science": ("stackexchange-physics", "organic-chemistry-questions", "camel-chemistry"),
}
_MEDIAN_BLOCKS = {"math": 9, "code": 9, "science": 7}
_MEDIAN_BLOCK_CHARS = {"math": 3800, "code": 3000, "science": 2300}

_COMMON = [
    "Okay, so I need to figure out what the problem is really asking before doing anything.",
    "Wait, let me check that again, because the sign might be wrong.",
    "Hmm, that doesn't look right. Let me go back a step.",
    "Let me verify this with a small example first.",
    "So far so good: the two expressions agree.",
    "Alternatively, maybe there is a simpler way to see it.",
    "Actually, I think I made an arithmetic slip there.",
    "Let me write down what I know so far.",
]
_POOLS = {
    "math": _COMMON
    + [
        "The area of the trapezoid is \\( \\frac{(r + s)}{2} \\times h = 72 \\), so \\( r + s = 24 \\).",
        "$$\n\\left( \\frac{|r - s|}{2} \\right)^2 + 6^2 = 12^2 \\implies |r - s| = 12\\sqrt{3}\n$$",
        "Since \\( x \\le 3 \\) and \\( x \\ge -1 \\), the interval is \\( [-1, 3] \\).",
        "Using the identity \\( (a+b)^2 = a^2 + 2ab + b^2 \\), expand both sides.",
        "If θ = π/6 then sin θ = 1/2, so the height is 3 cm.",
        "By AM–GM, \\( \\frac{a + b}{2} \\ge \\sqrt{ab} \\) with equality iff a = b.",
        "So the discriminant is \\( b^2 - 4ac = 16 - 4\\cdot 3 = 4 > 0 \\): two real roots.",
        "Therefore the answer should be \\( \\boxed{504} \\), but let me double-check.",
        "Mod 7, the powers of 3 cycle: 3, 2, 6, 4, 5, 1, so 3^100 ≡ 4.",
    ],
    "code": _COMMON
    + [
        "```python\ndef solve(a: list[int]) -> int:\n    best = 0\n    for i in range(len(a)):\n"
        "        if a[i] < best:\n            best = a[i]\n    return best\n```",
        "```cpp\n#include <vector>\nint main() {\n    std::vector<int> v(n);\n    for (int i = 0; i < n; ++i) "
        "std::cin >> v[i];\n    std::cout << (x << 2) << '\\n';\n}\n```",
        "The complexity is O(n log n) because of the sort; n ≤ 2·10^5 so that is fine.",
        "Edge case: when n == 1 the loop body never runs, so return a[0] directly.",
        "Use a monotonic stack: while stack and a[stack[-1]] <= a[i]: stack.pop().",
        'The HTML template prints <div class="row"> for each item -> that\'s the bug.',
        "If dp[i] -> dp[i+1] only depends on the previous state, we can keep two rows.",
    ],
    "science": _COMMON
    + [
        "The molar mass of NaCl is 58.44 g/mol, so 5.844 g is 0.1 mol.",
        "At 25 °C the equilibrium constant is K = 1.8 × 10⁻⁵, so pH ≈ 2.87.",
        "The wavelength λ = 500 nm gives an energy E = hc/λ ≈ 2.48 eV.",
        "With Δ\u00a0G = ΔH − TΔS and ΔS > 0, the reaction becomes spontaneous at high T.",
        "The bond length is about 1.54 Å for a C–C single bond.",
        "Newton's second law gives F = ma = 2 kg × 9.8 m/s² = 19.6 N.",
        "The electron configuration of Fe is [Ar] 3d⁶ 4s², so Fe³⁺ is 3d⁵.",
        "Hmm, the units don't match: µmol versus mmol, a factor of 1000 🤔.",
    ],
}
_SUMMARY_POOL = [
    "Derived r+s=24 from area; legs l=12.",
    "Checked the sign; the root x=3 is valid, x=-1 rejected.",
    "Plan: sort, then two pointers; O(n log n).",
    "Computed moles: 0.1 mol NaCl; concentration 0.5 M.",
    "Verified small case n=1; edge case handled.",
    "Key identity: (r+s)^2+(r-s)^2=2(r^2+s^2) ⇒ 504.",
    "Rejected brute force (too slow); use prefix sums.",
    "Energy E=hc/λ≈2.48 eV; consistent with visible light.",
]
_ANSWERS = {
    "math": "The answer is \\(\\boxed{504}\\).",
    "code": "```python\nprint(solve(list(map(int, input().split()))))\n```",
    "science": "The pH is approximately 2.87.",
}
# Whitespace layouts around the delimiters: (after <think>, inside pair, between pairs).
_LAYOUTS = [("\n", " ", "\n"), ("\n", "\n", "\n\n"), ("", "", ""), ("\n", " ", "\r\n"), (" ", "\t", " \n")]

MALFORMED_KINDS: tuple[str, ...] = (
    "no_think",
    "unclosed_think",
    "unclosed_block",
    "nested_block",
    "block_without_summary",
    "summary_without_block",
    "text_between_units",
    "empty_block",
    "empty_summary",
    "placeholder_missing",
    "placeholder_failed",
    "no_blocks",
    "stray_block_end",
    "delimiter_prefixes",
)
ADVERSARIAL_KINDS: tuple[str, ...] = (
    "unclosed_starts",
    "many_lt",
    "many_lt_pipe",
    "no_whitespace",
    "split_delimiters",
    "huge_block",
)


def _text(rng: random.Random, pool: list[str], target: int) -> str:
    parts: list[str] = []
    n = 0
    while n < target:
        s = rng.choice(pool)
        parts.append(s)
        n += len(s) + 1
    return " ".join(parts)


def _size(rng: random.Random, median: float) -> int:
    return max(40, int(rng.lognormvariate(0, 0.5) * median))


def generate_trace(
    rng: random.Random, domain: str | None = None, *, n_blocks: int | None = None, malformed: str | None = None
) -> dict[str, Any]:
    """One trace in the dataset's columns plus ``malformed`` (None or the injected kind)."""
    domain = domain or rng.choice(DOMAINS)
    pool = _POOLS[domain]
    if n_blocks is None:
        n_blocks = min(30, max(1, int(rng.lognormvariate(0, 0.45) * _MEDIAN_BLOCKS[domain])))
    after_think, inner, between = rng.choice(_LAYOUTS)
    units = []
    for _ in range(n_blocks):
        block = _text(rng, pool, _size(rng, _MEDIAN_BLOCK_CHARS[domain]))
        summary = _text(rng, _SUMMARY_POOL, int(len(block) * rng.uniform(0.15, 0.25)))
        units.append([block, summary])
    if domain == "code" and rng.random() < 0.06:
        # Code that quotes a delimiter: the format has no escaping, so this is ambiguous on purpose
        # (``<think>`` gives delimiter_in_content, ``<|block_end|>`` closes the block early).
        quoted = rng.choice(['"<think>"', '"<|block_end|>"'])
        units[rng.randrange(n_blocks)][0] += f" A tokenizer test: assert tok.encode({quoted}) == [151667]."
    answer = "" if rng.random() < 0.1 else "\n\n" + _ANSWERS[domain]
    m = malformed
    if m == "empty_block":
        units[rng.randrange(n_blocks)][0] = " \n "
    elif m == "empty_summary":
        units[rng.randrange(n_blocks)][1] = "\n"
    elif m == "placeholder_missing":
        units[rng.randrange(n_blocks)][1] = "[Missing summary]"
    elif m == "placeholder_failed":
        units[rng.randrange(n_blocks)][1] = "Summarization failed"
    elif m == "delimiter_prefixes":
        units[0][0] += " then <|block_ and <thi and <|summary and </think and <|block_end| appear "
    pieces = []
    for i, (block, summary) in enumerate(units):
        b = f"<|block_start|>{inner}{block}{inner}<|block_end|>"
        s = f"<|summary_start|>{inner}{summary}{inner}<|summary_end|>"
        if m == "nested_block" and i == n_blocks // 2:
            b = f"<|block_start|>{inner}{block[:50]}<|block_start|>{block[50:]}{inner}<|block_end|>"
        if m == "block_without_summary" and i == n_blocks // 2:
            s = ""
        if m == "summary_without_block" and i == n_blocks // 2:
            b = ""
        if m == "stray_block_end" and i == n_blocks // 2:
            s += "<|block_end|>"
        if m == "text_between_units" and i == n_blocks // 2 and i > 0:
            b = "Some stray words between units. " + b
        pieces.append(b + "\n" + s)
    think = "<think>" + after_think + between.join(pieces) + "\n</think>" + answer
    if m == "no_blocks":
        think = "<think>" + after_think + _text(rng, pool, 2000) + "\n</think>" + answer
    elif m == "no_think":
        think = think.replace("<think>", "", 1)
    elif m == "unclosed_think":
        think = think[: think.rindex("</think>")]
    elif m == "unclosed_block":
        last = think.rindex("<|block_start|>")
        think = think[: last + 15 + max(1, (think.index("<|block_end|>", last) - last) // 2)]
    elif m == "text_between_units" and n_blocks == 1:
        think = think.replace("<|summary_end|>", "<|summary_end|> stray text ", 1)
    difficulty = rng.randint(1, 10) if domain == "code" else (rng.randint(1, 10) if rng.random() < 0.05 else None)
    return {
        "problem": _text(rng, pool, 300),
        "response": think,
        "domain": domain,
        "source": rng.choice(_SOURCES[domain]),
        "difficulty": difficulty,
        "malformed": malformed,
    }


def generate_rows(n: int, seed: int = 0, *, malformed_rate: float = 0.0, domains=None) -> list[dict[str, Any]]:
    """``n`` traces; a fraction ``malformed_rate`` of them malformed, cycling through the kinds."""
    rng = random.Random(seed)
    domains = tuple(domains or DOMAINS)
    rows = []
    for i in range(n):
        malformed = MALFORMED_KINDS[i % len(MALFORMED_KINDS)] if rng.random() < malformed_rate else None
        rows.append(generate_trace(rng, rng.choice(domains), malformed=malformed))
    return rows


def generate_table(n: int, seed: int = 0, *, malformed_rate: float = 0.0):
    """``generate_rows`` as a ``pyarrow.Table`` in the OpenMementos ``default`` columns."""
    import pyarrow as pa

    rows = generate_rows(n, seed, malformed_rate=malformed_rate)
    return pa.table(
        {
            "problem": [r["problem"] for r in rows],
            "response": [r["response"] for r in rows],
            "domain": [r["domain"] for r in rows],
            "source": [r["source"] for r in rows],
            "difficulty": pa.array([r["difficulty"] for r in rows], type=pa.int64()),
        }
    )


def generate_bytes(target_bytes: int, seed: int = 0, *, malformed_rate: float = 0.0) -> list[str]:
    """Responses until their total UTF-8 size reaches ``target_bytes``."""
    rng = random.Random(seed)
    out: list[str] = []
    total = 0
    i = 0
    while total < target_bytes:
        malformed = MALFORMED_KINDS[i % len(MALFORMED_KINDS)] if rng.random() < malformed_rate else None
        text = generate_trace(rng, malformed=malformed)["response"]
        out.append(text)
        total += len(text.encode())
        i += 1
    return out


def adversarial(kind: str, size: int) -> str:
    """An input of about ``size`` bytes on which naive (regex) parsers go quadratic or fail."""
    if kind == "unclosed_starts":
        unit = "<|block_start|> text without an end "
    elif kind == "many_lt":
        unit = "<"
    elif kind == "many_lt_pipe":
        unit = "<|"
    elif kind == "no_whitespace":
        unit = "<think><|block_start|>x=1;y=2<|block_end|><|summary_start|>s<|summary_end|>abc"
    elif kind == "split_delimiters":
        unit = "".join(d[:k] for d in DELIMITERS for k in range(1, len(d)))
    elif kind == "huge_block":
        body = ("word " * (size // 5 + 1))[:size]
        return f"<think><|block_start|>{body}<|block_end|><|summary_start|>s<|summary_end|></think>a"
    else:
        raise ValueError(f"unknown adversarial kind {kind!r}; one of {ADVERSARIAL_KINDS}")
    return (unit * (size // len(unit) + 1))[:size]


#: Corruptions :func:`generate_full_rows` can inject, each the alignment status it must produce.
FULL_CORRUPTIONS = (
    "bad_range",
    "not_contiguous",
    "not_covering",
    "field_count_mismatch",
    "summary_mismatch",
    "block_text_differs",
    "null_field",
)


def _sentences(rng: random.Random, pool: list[str], target: int) -> list[str]:
    out: list[str] = []
    n = 0
    while n < target:
        s = rng.choice(pool).strip()
        out.append(s)
        n += len(s) + 1
    return out


def generate_full_rows(n: int, seed: int = 0, *, corrupt_rate: float = 0.0) -> list[dict[str, Any]]:
    """Rows of the OpenMementos ``full`` config: ``problem``, ``response``, ``domain``, ``source``,
    ``difficulty``, ``sentences``, ``blocks`` (inclusive ``[first, last]`` sentence indices) and
    ``block_summaries``, plus ``corruption`` (None or the kind injected, one of
    :data:`FULL_CORRUPTIONS`, cycling). Clean rows reproduce the pipeline's shape: each response
    block is its sentences joined by spaces, with some spaces turned into newlines (so some blocks
    match only after normalising whitespace)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        domain = rng.choice(DOMAINS)
        pool = _POOLS[domain]
        n_blocks = min(12, max(1, int(rng.lognormvariate(0, 0.45) * _MEDIAN_BLOCKS[domain] / 2)))
        sentences: list[str] = []
        blocks: list[list[int]] = []
        summaries: list[str] = []
        texts: list[str] = []
        for _ in range(n_blocks):
            sents = _sentences(rng, pool, _size(rng, _MEDIAN_BLOCK_CHARS[domain] / 3))
            blocks.append([len(sentences), len(sentences) + len(sents) - 1])
            sentences.extend(sents)
            text = " ".join(sents)
            if rng.random() < 0.3:
                text = text.replace(". ", ".\n", 1)
            texts.append(text)
            summaries.append(_text(rng, _SUMMARY_POOL, int(len(text) * 0.2)))
        answer = _ANSWERS[domain]
        corruption = FULL_CORRUPTIONS[i % len(FULL_CORRUPTIONS)] if rng.random() < corrupt_rate else None
        resp_texts, resp_summaries = list(texts), list(summaries)
        k = rng.randrange(n_blocks)
        if corruption == "bad_range":
            blocks[k] = [blocks[k][1] + 1, blocks[k][1]]
        elif corruption == "not_contiguous":
            if n_blocks > 1:
                blocks[max(k, 1)][0] -= 1  # overlaps the block before
            else:
                corruption = None
        elif corruption == "not_covering":
            sentences.append("A trailing sentence that no block covers.")
        elif corruption == "field_count_mismatch":
            summaries.pop()
        elif corruption == "summary_mismatch":
            summaries[k] = summaries[k] + " (edited)"
        elif corruption == "block_text_differs":
            resp_texts[k] = resp_texts[k] + " An extra sentence only in the response."
        response = (
            "<think>\n"
            + "".join(
                f"<|block_start|> {b} <|block_end|>\n<|summary_start|> {s} <|summary_end|>\n\n"
                for b, s in zip(resp_texts, resp_summaries)
            )
            + "</think>\n"
            + answer
        )
        row = {
            "problem": _text(rng, pool, 300),
            "response": response,
            "domain": domain,
            "source": rng.choice(_SOURCES[domain]),
            "difficulty": rng.randint(1, 10) if domain == "code" else None,
            "sentences": sentences,
            "blocks": blocks,
            "block_summaries": summaries,
            "corruption": corruption,
        }
        if corruption == "null_field":
            row["sentences"] = None
        rows.append(row)
    return rows


def generate_full_table(n: int, seed: int = 0, *, corrupt_rate: float = 0.0):
    """:func:`generate_full_rows` as a ``pyarrow.Table`` in the ``full`` config's columns."""
    import pyarrow as pa

    rows = generate_full_rows(n, seed, corrupt_rate=corrupt_rate)
    cols = ["problem", "response", "domain", "source", "difficulty", "sentences", "blocks", "block_summaries"]
    schema = pa.schema(
        [
            ("problem", pa.string()),
            ("response", pa.string()),
            ("domain", pa.string()),
            ("source", pa.string()),
            ("difficulty", pa.int64()),
            ("sentences", pa.list_(pa.string())),
            ("blocks", pa.list_(pa.list_(pa.int64()))),
            ("block_summaries", pa.list_(pa.string())),
        ]
    )
    return pa.table({c: [r[c] for r in rows] for c in cols}, schema=schema)
