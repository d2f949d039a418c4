"""Benchmark fixtures. Sizes are small when benchmarks are disabled (the default test run, where
each benchmark runs once as a test) and large with `--benchmark-only`.

Environment: MEMENTOS_BENCH_MB (realistic corpus, default 200), MEMENTOS_BENCH_PEAK_MB (peak
memory column, default 1024).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pytest

from mementos_fast import synthetic


def bench_enabled(config: pytest.Config) -> bool:
    return not config.getoption("benchmark_disable", default=True)


@pytest.fixture(scope="session")
def bench_big(request) -> bool:
    """True when benchmarks are measured (large inputs), False when they run once as tests."""
    return bench_enabled(request.config)


@dataclass
class Corpus:
    name: str
    rows: list[str]
    column: pa.Array

    @property
    def nbytes(self) -> int:
        return sum(len(r.encode()) for r in self.rows)


def _long_trace(seed: int, size: int) -> str:
    import random

    unit = synthetic.generate_trace(random.Random(seed), ("math", "code", "science")[seed % 3])["response"]
    body = unit[unit.index("<|block_start|>") : unit.rindex("</think>")]
    text = "<think>\n" + body * (size // len(body.encode()) + 1)
    text = text[: text.rindex("<|block_start|>")]  # end on a whole unit
    return text + "</think>\n\nThe answer is 42."


def _mb(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@pytest.fixture(scope="session")
def corpora(request) -> dict[str, Corpus]:
    big = bench_enabled(request.config)
    size = (_mb("MEMENTOS_BENCH_MB", 200) if big else 2) << 20
    realistic = synthetic.generate_bytes(size, seed=2026, malformed_rate=0.02)
    # Many small traces: one or two blocks each.
    rng_rows = synthetic.generate_rows(20_000 if big else 500, seed=99)
    small = [r["response"][:1500] for r in rng_rows]
    # A few very long traces (10 MB each when measuring): realistic blocks repeated in one <think>.
    huge = [_long_trace(seed, (10 << 20) if big else (100 << 10)) for seed in range(3)]
    out = {
        "realistic": Corpus("realistic", realistic, pa.array(realistic, type=pa.large_string())),
        "small_traces": Corpus("small_traces", small, pa.array(small, type=pa.large_string())),
        "huge_traces": Corpus("huge_traces", huge, pa.array(huge, type=pa.large_string())),
    }
    return out
