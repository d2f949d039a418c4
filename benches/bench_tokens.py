"""Token counting with the real Qwen3 tokenizer: count_tokens against the tutorial's way (one
Python ``encode`` per block and memento) and against HF ``encode_batch_fast`` on whole responses,
in the same run, on one core and on two.

Run: pytest benches/bench_tokens.py --benchmark-only   (MEMENTOS_BENCH_TOKENS_MB=8 by default)

Every implementation's result is checked inside the benchmark: the tutorial's per-item counts and
the whole-response counts of ``encode_batch_fast`` are the references; count_tokens must give
exactly both (its stripped lists and its totals). ``count_tokens_in_context_only`` is
``stripped=False`` (no tutorial-style recount), checked on totals and sampled in-context blocks.
``hf_*_1core`` sets TOKENIZERS_PARALLELISM=false
(HF's own switch) for the call; ``*_2cores`` use two threads.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import pyarrow as pa
import pytest

import mementos_fast as mf
from mementos_fast import reference, synthetic

tk = pytest.importorskip("tokenizers")


@pytest.fixture(scope="session")
def qwen3():
    try:
        return mf.load_tokenizer(mf.qwen3_tokenizer_path())
    except mf.MementoValueError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def token_corpus(bench_big):
    size = (int(os.environ.get("MEMENTOS_BENCH_TOKENS_MB", 8)) if bench_big else 1) << 20
    if not bench_big:
        size //= 8  # 128 KiB: the test run only checks that every implementation agrees
    rows = synthetic.generate_bytes(size, seed=2026, malformed_rate=0.02)
    return rows, pa.array(rows, type=pa.large_string())


_cache: dict[str, object] = {}


def tutorial_counts(tok, rows: list[str]) -> list[tuple[list[int], list[int]]]:
    """The tutorial's token compression: parse with its regexes, one encode per block and memento."""
    out = []
    for text in rows:
        p = reference.parse_trace(text)
        out.append(
            (
                [len(tok.encode(b, add_special_tokens=False).ids) for b in p["blocks"]],
                [len(tok.encode(s, add_special_tokens=False).ids) for s in p["summaries"]],
            )
        )
    return out


def whole_counts(tok, rows: list[str]) -> list[int]:
    return [len(e.ids) for e in tok.encode_batch_fast(rows, add_special_tokens=False)]


@contextmanager
def hf_parallelism(enabled: bool):
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if enabled else "false"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def references(qwen3, rows):
    """(tutorial per-item counts, whole-response counts), computed once per session."""
    if "refs" not in _cache:
        with hf_parallelism(True):
            _cache["refs"] = (tutorial_counts(qwen3.tokenizer, rows), whole_counts(qwen3.tokenizer, rows))
    return _cache["refs"]


def cpu_timed(fn, cpu: list[float]):
    """``fn`` recording the process CPU time of each call (all threads): on a shared machine the
    wall clock depends on the other tenants, the CPU time much less."""

    def run(*args, **kwargs):
        t = time.process_time()
        out = fn(*args, **kwargs)
        cpu.append(time.process_time() - t)
        return out

    return run


IMPLS = [
    "tutorial_per_block",
    "hf_encode_batch_fast_1core",
    "hf_encode_batch_fast_2cores",
    "count_tokens_hf_1core",
    "count_tokens_hf_2cores",
    "count_tokens_hf_in_context_only_2cores",
    "count_tokens_fast_1core",
    "count_tokens_fast_2cores",
    "count_tokens_fast_in_context_only_2cores",
]


@pytest.mark.parametrize("impl", IMPLS)
def test_count_tokens(benchmark, qwen3, token_corpus, impl):
    rows, column = token_corpus
    tutorial, whole = references(qwen3, rows)
    tok = qwen3.tokenizer
    nbytes = sum(len(r.encode()) for r in rows)
    benchmark.group = "tokens/realistic"
    benchmark.extra_info.update(
        bytes=nbytes,
        rows=len(rows),
        impl=impl,
        fixture="realistic",
        tokens=sum(whole),
        baseline=impl == "tutorial_per_block",
    )
    cpu: list[float] = []
    if impl == "tutorial_per_block":
        got = benchmark.pedantic(cpu_timed(tutorial_counts, cpu), args=(tok, rows), rounds=1, iterations=1)
        assert got == tutorial
    elif impl.startswith("hf_encode_batch_fast"):
        with hf_parallelism(impl.endswith("2cores")):
            got = benchmark.pedantic(
                cpu_timed(whole_counts, cpu), args=(tok, rows), rounds=3, iterations=1, warmup_rounds=1
            )
        assert got == whole
    else:
        threads = 1 if impl.endswith("1core") else 2
        stripped = "in_context_only" not in impl
        backend = "fast" if "_fast_" in impl else "hf"
        batch = benchmark.pedantic(
            cpu_timed(mf.count_tokens, cpu),
            args=(column, qwen3),
            kwargs={"threads": threads, "stripped": stripped, "backend": backend},
            rounds=3,
            iterations=1,
            warmup_rounds=1,
        )
        assert batch.schema.metadata[b"backend"] == backend.encode()
        assert batch.column("total_tokens").to_pylist() == whole
        if stripped:
            got = list(
                zip(
                    batch.column("block_tokens_stripped").to_pylist(),
                    batch.column("summary_tokens_stripped").to_pylist(),
                )
            )
            assert got == [(list(b), list(s)) for b, s in tutorial]
        else:  # the in-context items, checked per block against the reference encoder
            sample = range(0, len(rows), max(1, len(rows) // 8))
            blocks = batch.column("block_tokens").to_pylist()
            for i in sample:
                raw = [m.group(1) for m in reference.BLOCK_RE.finditer(rows[i])]
                assert blocks[i] == [len(tok.encode(b, add_special_tokens=False).ids) for b in raw]
    benchmark.extra_info["cpu_s_min"] = min(cpu)
