"""SFT export throughput against a plain-Python reference export, in the same run.

Run: pytest benches/bench_export.py --benchmark-only   (MEMENTOS_BENCH_EXPORT_MB=100 by default;
the short_rows fixture is a fifth of that in 1,500-character traces)

The reference is the tutorial's export: ``reference.to_messages`` per row plus ``json.dumps``, one
line per row. Every implementation's output is read back and checked inside the benchmark:
``messages`` rows must equal the reference's, ``chatml`` texts must equal ``render_chatml``.
``extra_info`` records rows/s and MB/s (response + problem bytes read per second).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mementos_fast import export as ex
from mementos_fast import reference, synthetic

_cache: dict[str, object] = {}


def _make_corpus(kind: str, mb: int) -> pa.Table:
    key = f"{kind}{mb}"
    if key not in _cache:
        parts, total, i = [], 0, 0
        while total < mb << 20:
            t = synthetic.generate_table(500, seed=4242 + i, malformed_rate=0.02)
            if kind == "short_rows":  # many small traces: per-row overhead dominates
                t = t.set_column(1, "response", pc.utf8_slice_codeunits(t.column("response"), 0, 1500))
            total += pc.sum(pc.binary_length(t.column("response"))).as_py()
            parts.append(t)
            i += 1
        _cache[key] = pa.concat_tables(parts).combine_chunks()
    return _cache[key]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def export_corpora(bench_big):
    mb = int(os.environ.get("MEMENTOS_BENCH_EXPORT_MB", 100)) if bench_big else 2
    return lambda kind: _make_corpus(kind, mb if kind == "realistic" else max(1, mb // 5))


def _nbytes(table: pa.Table) -> int:
    return sum(pc.sum(pc.binary_length(table.column(c))).as_py() for c in ("problem", "response"))


def reference_export(table: pa.Table, out: Path) -> None:
    """The tutorial's way: Python rows, to_messages, json.dumps, one line each."""
    with open(out, "w", encoding="utf-8") as f:
        for row in table.to_pylist():
            rec = reference.to_messages(row["problem"], row["response"])
            rec.update(domain=row["domain"], source=row["source"], difficulty=row["difficulty"])
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _expected_messages(table: pa.Table) -> list[dict]:
    key = f"msgs{id(table)}"
    if key not in _cache:
        _cache[key] = [
            {
                **reference.to_messages(r["problem"], r["response"]),
                "domain": r["domain"],
                "source": r["source"],
                "difficulty": r["difficulty"],
            }
            for r in table.to_pylist()
        ]
    return _cache[key]  # type: ignore[return-value]


def _read(out: Path, output: str) -> list[dict]:
    if output == "jsonl":
        with open(out, encoding="utf-8") as f:
            return [json.loads(line) for line in f]
    return pq.read_table(out).to_pylist()  # _manifest.json is ignored by the dataset reader


IMPLS = {
    "reference_python": ("messages", "jsonl"),
    "mementos_fast_jsonl": (None, "jsonl"),
    "mementos_fast_parquet": (None, "parquet"),
}


@pytest.mark.parametrize("fixture", ["realistic", "short_rows"])
@pytest.mark.parametrize("fmt", ["messages", "chatml"])
@pytest.mark.parametrize("impl", list(IMPLS))
def test_export(benchmark, export_corpora, tmp_path, impl, fmt, fixture):
    table = export_corpora(fixture)
    if impl == "reference_python" and fmt != "messages":
        pytest.skip("the tutorial only has the messages format")
    output = IMPLS[impl][1]
    out = tmp_path / ("sft.jsonl" if output == "jsonl" else "sft")
    benchmark.group = f"export/{fmt}/{fixture}"
    nbytes = _nbytes(table)
    benchmark.extra_info.update(rows=table.num_rows, bytes=nbytes, impl=impl, fmt=fmt, output=output, fixture=fixture)

    def clean():
        if out.is_dir():
            shutil.rmtree(out)
        out.unlink(missing_ok=True)
        out.with_name(out.name + ".manifest.json").unlink(missing_ok=True)

    if impl == "reference_python":
        benchmark.pedantic(reference_export, args=(table, out), setup=clean, rounds=5, iterations=1, warmup_rounds=1)
    else:
        benchmark.pedantic(
            lambda: ex.export_sft(table, out, fmt, output=output, overwrite=True),
            setup=clean,
            rounds=5,
            iterations=1,
            warmup_rounds=1,
        )
    mean = benchmark.stats.stats.mean if benchmark.stats else None
    if mean:
        benchmark.extra_info.update(rows_per_s=table.num_rows / mean, mb_per_s=nbytes / mean / 1e6)
    got = _read(out, output)
    if fmt == "messages":
        assert got == _expected_messages(table)
    else:
        assert [g["text"] for g in got] == [
            ex.render_chatml(p, r)
            for p, r in zip(table.column("problem").to_pylist(), table.column("response").to_pylist())
        ]
