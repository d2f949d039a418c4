"""The main job at scale: `mementos-fast analyze` over a generated corpus laid out like the hub
repository (`data/train-XXXXX-of-NNNNN.parquet`, shards grouped by domain).

Run: pytest benches/bench_analyze.py --benchmark-only   (MEMENTOS_BENCH_ANALYZE_GB, default 2)
Reports rows/s, MB/s, the peak RSS of the analyze process and the share of time spent parsing; the
per-row statistics are checked against the reference on a sample of rows.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mementos_fast import reference, synthetic

SHARDS = 12


@pytest.fixture(scope="session")
def hub_corpus(tmp_path_factory, bench_big):
    gb = float(os.environ.get("MEMENTOS_BENCH_ANALYZE_GB", 2)) if bench_big else 0.02
    root = tmp_path_factory.mktemp("hub")
    (root / "data").mkdir()
    per_shard = int(gb * 2**30 / SHARDS)
    total_bytes = 0
    rows = 0
    for i in range(SHARDS):
        domain = ("code", "math", "science")[i * 3 // SHARDS]  # grouped by domain, like the hub
        rng = random.Random(i)
        part, size = [], 0
        while size < per_shard:
            r = synthetic.generate_trace(rng, domain, malformed="unclosed_block" if rng.random() < 0.01 else None)
            part.append(r)
            size += len(r["response"].encode())
        table = pa.table({c: [r[c] for r in part] for c in ("problem", "response", "domain", "source")})
        table = table.append_column("difficulty", pa.array([r["difficulty"] for r in part], type=pa.int64()))
        # Row groups of 1,000 rows (tens of MB), as in real Parquet exports; the reader holds one at a time.
        pq.write_table(table, root / "data" / f"train-{i:05d}-of-{SHARDS:05d}.parquet", row_group_size=1000)
        total_bytes += size
        rows += len(part)
    return root, rows, total_bytes


RUN = textwrap.dedent("""
    import json, sys
    from mementos_fast import cli
    rc = cli.main(["analyze", sys.argv[1], "--out", sys.argv[2], "--quiet", "--no-plots"])
    peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(json.dumps({"rc": rc, "peak_rss": peak}))
""")


def test_analyze_hub_corpus(benchmark, hub_corpus, tmp_path):
    root, rows, nbytes = hub_corpus
    out = tmp_path / "report"
    benchmark.group = "analyze/hub_corpus"

    def run():
        p = subprocess.run([sys.executable, "-c", RUN, str(root), str(out)], capture_output=True, text=True, check=True)
        return json.loads(p.stdout.strip().splitlines()[-1])

    result = benchmark.pedantic(run, rounds=1, iterations=1)
    assert result["rc"] == 0
    timing = json.loads((out / "timing.json").read_text())
    stats = pq.read_table(out / "rows.parquet")
    assert timing["rows"] == rows == stats.num_rows
    # Check per-row statistics against the reference on a sample of rows of every shard.
    first = pq.read_table(root / "data" / f"train-{0:05d}-of-{SHARDS:05d}.parquet", columns=["response"])
    for i, text in enumerate(first.column("response").to_pylist()[:300]):
        ref = reference.analyze_row(text)
        got = stats.slice(i, 1).to_pylist()[0]
        assert got["skipped"] == (ref is None)
        if ref is not None:
            assert (got["n_blocks"], got["block_chars"], got["summary_words"]) == (
                ref["n_blocks"],
                ref["block_chars"],
                ref["summary_words"],
            )
    benchmark.extra_info.update(
        impl="mementos-fast analyze",
        fixture=f"{nbytes / 2**30:.2f} GB hub layout",
        bytes=nbytes,
        rows=rows,
        rows_per_s=rows / timing["seconds"],
        parse_share=timing["parse_seconds"] / timing["seconds"],
        peak_rss_mb=result["peak_rss"] / 2**20,
        corpus_mb=nbytes / 2**20,
    )
    if nbytes >= 2**30:  # bounded memory: well under the corpus size on the real-size run
        assert result["peak_rss"] < nbytes / 3
