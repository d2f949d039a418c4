"""parse_batch against the tutorial reference and a raw memchr lower bound, in the same run.

Run: pytest benches/bench_parse.py --benchmark-only   (MEMENTOS_BENCH_MB=200 by default)
Every implementation's result is checked against the reference inside the benchmark.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import pyarrow.compute as pc
import pytest

import mementos_fast as mf
import peers
from mementos_fast import reference

COLUMNS = ["n_blocks", "n_summaries", "block_chars", "summary_chars", "block_words", "summary_words"]

_expected_cache: dict[str, dict[str, list[int]]] = {}


def reference_columns(rows: list[str]) -> dict[str, list[int]]:
    """The tutorial's parse plus its per-row sums, in pure Python (the baseline)."""
    out: dict[str, list[int]] = {c: [] for c in COLUMNS}
    for text in rows:
        p = reference.parse_trace(text)
        blocks, summaries = p["blocks"], p["summaries"]
        out["n_blocks"].append(len(blocks))
        out["n_summaries"].append(len(summaries))
        out["block_chars"].append(sum(len(b) for b in blocks))
        out["summary_chars"].append(sum(len(s) for s in summaries))
        out["block_words"].append(sum(len(b.split()) for b in blocks))
        out["summary_words"].append(sum(len(s.split()) for s in summaries))
    return out


def expected(corpus) -> dict[str, list[int]]:
    if corpus.name not in _expected_cache:
        _expected_cache[corpus.name] = reference_columns(corpus.rows)
    return _expected_cache[corpus.name]


def fast(threads):
    def run(corpus):
        batch = mf.parse_batch(corpus.column, threads=threads)
        return {c: batch.column(c).to_pylist() for c in COLUMNS}, batch

    return run


IMPLS = {
    "reference": lambda corpus: (reference_columns(corpus.rows), None),
    "mementos_fast_1core": fast(1),
    "mementos_fast_all_cores": fast(None),
}


@pytest.mark.parametrize("fixture", ["realistic", "small_traces", "huge_traces"])
@pytest.mark.parametrize("impl", list(IMPLS))
def test_parse(benchmark, corpora, impl, fixture):
    corpus = corpora[fixture]
    benchmark.group = f"parse/{fixture}"
    benchmark.extra_info.update(bytes=corpus.nbytes, rows=len(corpus.rows), impl=impl, fixture=fixture)
    if impl == "reference":
        result, _ = benchmark.pedantic(IMPLS[impl], args=(corpus,), rounds=1, iterations=1)
    else:
        # Time only the parse; converting to Python lists for the check happens afterwards.
        threads = 1 if impl.endswith("1core") else None
        batch = benchmark.pedantic(
            mf.parse_batch, args=(corpus.column,), kwargs={"threads": threads}, rounds=5, iterations=1, warmup_rounds=1
        )
        result = {c: batch.column(c).to_pylist() for c in COLUMNS}
    assert result == expected(corpus)


@pytest.mark.parametrize("fixture", ["realistic", "small_traces", "huge_traces"])
@pytest.mark.parametrize("impl", ["pyarrow_compute", "polars"])
def test_parse_peers(benchmark, corpora, impl, fixture):
    """Other dataframe engines computing the same statistics (checked on well-formed rows)."""
    import polars as pl

    corpus = corpora[fixture]
    benchmark.group = f"parse/{fixture}"
    benchmark.extra_info.update(bytes=corpus.nbytes, rows=len(corpus.rows), impl=impl, fixture=fixture)
    if impl == "polars":
        arg, fn = pl.from_arrow(corpus.column), peers.polars
    else:
        arg, fn = corpus.column, peers.pyarrow_compute
    result = benchmark.pedantic(fn, args=(arg,), rounds=2, iterations=1)
    ok = [s == "ok" for s in mf.parse_batch(corpus.column).column("status").to_pylist()]
    exp = expected(corpus)
    for c in COLUMNS:
        assert [v for v, k in zip(result[c], ok) if k] == [v for v, k in zip(exp[c], ok) if k], c


def test_memchr_lower_bound(benchmark, corpora):
    """One memchr pass counting `<` over the same bytes: the floor for any delimiter scanner."""
    corpus = corpora["realistic"]
    benchmark.group = "parse/realistic"
    benchmark.extra_info.update(
        bytes=corpus.nbytes, rows=len(corpus.rows), impl="memchr_lower_bound", fixture="realistic"
    )
    n = benchmark.pedantic(
        mf._core._count_byte, args=(corpus.column, ord("<")), rounds=5, iterations=1, warmup_rounds=1
    )
    assert n == pc.sum(pc.count_substring(corpus.column, "<")).as_py()


PEAK_SCRIPT = textwrap.dedent("""
    import gc, sys
    import pyarrow as pa
    import mementos_fast as mf
    from mementos_fast import synthetic
    target = int(sys.argv[1]) << 20
    unit = pa.array(synthetic.generate_bytes(min(target, 64 << 20), seed=3), type=pa.large_string())
    col = pa.concat_arrays([unit] * max(1, -(-target // unit.buffers()[2].size)))
    del unit; gc.collect()
    import ctypes
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back so the baseline RSS is honest
    size = col.buffers()[2].size
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    base = status("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    batch = mf.parse_batch(col)
    peak = status("VmHWM:")
    assert batch.num_rows == len(col)
    # What the result holds of its own (views, counters); its text buffers are the input's.
    own = sum(b.size for c in batch.columns for b in c.buffers() if b is not None
              and not (col.buffers()[2].address <= b.address < col.buffers()[2].address + size))
    print(size, peak - base, own)
""")


def test_parse_peak_memory(benchmark, bench_big):
    """Parsing a column of >= 1 GB (MEMENTOS_BENCH_PEAK_MB) raises peak RSS by < 1/3 of its size."""
    mb = int(os.environ.get("MEMENTOS_BENCH_PEAK_MB", 1024)) if bench_big else 64
    benchmark.group = "parse/peak_memory"

    def run():
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(mb)], capture_output=True, text=True, check=True)
        return [int(x) for x in out.stdout.split()]

    size, grew, own = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(
        bytes=size,
        column_mb=size / 2**20,
        peak_increase_mb=grew / 2**20,
        ratio=grew / size,
        result_own_mb=own / 2**20,
        impl="mementos_fast_all_cores",
        fixture=f"{mb}MB column",
    )
    gc.collect()
    assert grew < size / 3 and own < size / 3, (size, grew, own)


PEER_PEAK_SCRIPT = textwrap.dedent("""
    import ctypes, gc, sys
    import pyarrow as pa
    sys.path.insert(0, sys.argv[3])
    import mementos_fast as mf
    from mementos_fast import synthetic
    impl, target = sys.argv[1], int(sys.argv[2]) << 20
    col = pa.array(synthetic.generate_bytes(target, seed=4), type=pa.large_string())
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    if impl == "polars":
        import polars as pl
        import peers
        arg = pl.from_arrow(col)
    elif impl == "pyarrow_compute":
        import peers
    base = status("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")
    if impl == "reference":
        from mementos_fast import reference
        out = [reference.parse_trace(t) for t in col.to_pylist()]
    elif impl == "polars":
        out = peers.polars(arg)
    elif impl == "pyarrow_compute":
        out = peers.pyarrow_compute(col)
    else:
        out = mf.parse_batch(col, threads=1 if impl.endswith("1core") else None)
    print(col.buffers()[2].size, status("VmHWM:") - base)
""")


@pytest.mark.parametrize(
    "impl", ["reference", "pyarrow_compute", "polars", "mementos_fast_1core", "mementos_fast_all_cores"]
)
def test_parse_peak_memory_by_implementation(benchmark, bench_big, impl):
    """Peak RSS increase of each implementation parsing the same column (MEMENTOS_BENCH_PEERS_MB,
    default 256 MB), in a fresh process each."""
    mb = int(os.environ.get("MEMENTOS_BENCH_PEERS_MB", 256)) if bench_big else 4
    benchmark.group = "parse/peak_memory_by_implementation"
    here = os.path.dirname(os.path.abspath(__file__))

    def run():
        out = subprocess.run(
            [sys.executable, "-c", PEER_PEAK_SCRIPT, impl, str(mb), here], capture_output=True, text=True, check=True
        )
        return [int(x) for x in out.stdout.split()]

    size, grew = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(
        bytes=size,
        column_mb=size / 2**20,
        peak_increase_mb=grew / 2**20,
        ratio=grew / size,
        impl=impl,
        fixture=f"{mb}MB column",
    )
    assert size > 0 and grew >= -(8 << 20)
    if impl.startswith("mementos_fast") and bench_big:  # (fixed costs dominate a 4 MB column)
        assert grew < size / 3
