"""Loading, statistics and the command line, end to end."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mementos_fast as mf
from mementos_fast import cli, reference, stats, synthetic
from mementos_fast.loading import load, sample_path


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return synthetic.generate_table(240, seed=17, malformed_rate=0.2)


@pytest.fixture()
def hub_dir(tmp_path, table):
    """A local directory laid out like the hub repository: data/ (default) and full/ shards,
    each shard holding one domain, as on the hub."""
    for config in ("data", "full"):
        (tmp_path / config).mkdir()
    domains = table.column("domain").to_pylist()
    for i, d in enumerate(sorted(set(domains))):
        part = table.filter(pa.array([x == d for x in domains]))
        pq.write_table(part, tmp_path / "data" / f"train-{i:05d}-of-00003.parquet")
        pq.write_table(part.slice(0, 10), tmp_path / "full" / f"train-{i:05d}-of-00003.parquet")
    return tmp_path


def close(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-12))


def test_domain_medians_equal_reference(table):
    got = {r["domain"]: r for r in stats.domain_table(stats.row_stats(table))}
    rows = table.select(["response", "domain"]).to_pylist()
    expected = reference.domain_medians(reference.analyze(rows))
    assert set(got) == set(expected)
    for domain, med in expected.items():
        assert got[domain]["n_rows"] == med["n_rows"]
        for field in stats.MEDIAN_FIELDS:
            assert close(got[domain][f"median_{field}"], med[field]), (domain, field)


def test_row_stats_and_validation(table):
    s = stats.row_stats(table)
    assert s.num_rows == table.num_rows
    assert s.column("skipped").to_pylist() == [
        reference.analyze_row(r) is None for r in table.column("response").to_pylist()
    ]
    v = stats.validation_summary(s)
    assert sum(x["rows"] for x in v) == table.num_rows and v[0]["status"] == "ok"


def test_block_table_matches_reference(table):
    parsed = mf.parse_batch(table.column("response"))
    bt = stats.block_table(parsed, table.column("domain"))
    expected = [
        (i, len(b), len(s))
        for r in table.column("response").to_pylist()
        if (p := reference.parse_trace(r))["blocks"] and len(p["blocks"]) == len(p["summaries"])
        for i, (b, s) in enumerate(zip(p["blocks"], p["summaries"]))
    ]
    got = list(
        zip(
            bt.column("position").to_pylist(),
            bt.column("block_chars").to_pylist(),
            bt.column("summary_chars").to_pylist(),
        )
    )
    assert got == expected


def test_load_hub_layout_configs_and_sample(hub_dir, table):
    rows = sum(b.num_rows for b in load(str(hub_dir)))
    assert rows == table.num_rows
    assert sum(b.num_rows for b in load(str(hub_dir), "full")) == 30
    sampled = pa.Table.from_batches(list(load(str(hub_dir), sample=60, seed=1)))
    assert sampled.num_rows == 60
    # Shards are grouped by domain: a sample must still cover every domain.
    assert set(sampled.column("domain").to_pylist()) == set(table.column("domain").to_pylist())
    again = pa.Table.from_batches(list(load(str(hub_dir), sample=60, seed=1)))
    assert again.equals(sampled)
    first = pa.Table.from_batches(list(load(str(hub_dir), limit=25, batch_size=10)))
    assert first.num_rows == 25 and len(set(first.column("domain").to_pylist())) == 1
    assert sum(b.num_rows for b in load(str(hub_dir / "data" / "train-*.parquet"))) == table.num_rows


def test_load_jsonl_table_and_datasets(tmp_path, table):
    path = tmp_path / "x.jsonl"
    with path.open("w") as f:
        for r in table.slice(0, 20).to_pylist():
            f.write(json.dumps(r) + "\n")
    assert sum(b.num_rows for b in load(str(path))) == 20
    assert sum(b.num_rows for b in load(table, limit=7)) == 7
    assert sum(b.num_rows for b in mf.load(table, limit=3)) == 3  # the top-level entry point
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset(table)
    got = pa.Table.from_batches([b for b in load(ds, batch_size=64)])
    assert got.num_rows == table.num_rows
    # The hub code path (datasets streaming, Arrow batches) pointed at local files.
    pq.write_table(table, tmp_path / "t.parquet")
    stream = datasets.load_dataset("parquet", data_files=str(tmp_path / "t.parquet"), split="train", streaming=True)
    assert sum(b.num_rows for b in load(stream, batch_size=50)) == table.num_rows


def test_load_errors(tmp_path):
    with pytest.raises(mf.MementoValueError):
        list(load(str(tmp_path)))


def assert_png_not_blank(path):
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.shape[0] > 100 and float(np.std(img)) > 0.01, path


def test_cli_analyze_real_traces(real, real_dir, tmp_path, capsys):
    assert cli.main(["analyze", str(real_dir), "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Per domain" in out and "no_blocks" in out
    rows = pq.read_table(tmp_path / "rows.parquet")
    assert rows.num_rows == len(real)
    assert sorted(rows.column("n_blocks").to_pylist()) == [0, 5]
    for name in [
        "blocks_per_trace.png",
        "ratio_by_domain.png",
        "block_vs_memento.png",
        "ratio_by_position.png",
        "visible_context.png",
    ]:
        assert_png_not_blank(tmp_path / name)


def test_cli_analyze_hub_dir_sample(hub_dir, tmp_path):
    out = tmp_path / "rep"
    assert cli.main(["analyze", str(hub_dir), "--sample", "90", "--out", str(out), "--quiet", "--no-plots"]) == 0
    assert pq.read_table(out / "rows.parquet").num_rows == 90
    assert "math" in (out / "domains.csv").read_text()


def test_cli_validate_exit_codes(real_dir, tmp_path, table):
    assert cli.main(["validate", str(real_dir)]) == 1
    good = table.filter(
        pa.array([s == "ok" for s in mf.parse_batch(table.column("response")).column("status").to_pylist()])
    )
    pq.write_table(good, tmp_path / "good.parquet")
    assert cli.main(["validate", str(tmp_path / "good.parquet")]) == 0


def test_cli_show(real_dir, capsys):
    assert cli.main(["show", str(real_dir), "--row", "0", "--width", "80", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "block 1" in out and "memento" in out and "% of block" in out and "final answer" in out


def test_builtin_sample_runs_offline(tmp_path, capsys):
    if not sample_path().exists():
        pytest.skip("built-in sample not present")
    assert cli.main(["analyze", "--out", str(tmp_path), "--quiet"]) == 0
    rows = pq.read_table(tmp_path / "rows.parquet")
    assert set(rows.column("domain").to_pylist()) == {"math", "code", "science"}


def test_cli_show_keep_last_k(real_dir, capsys):
    assert cli.main(["show", str(real_dir), "--row", "0", "--no-color", "--keep-last-k", "1"]) == 0
    out = capsys.readouterr().out
    # The real model output has 5 complete blocks: with k=1 the first four are evicted.
    assert out.count("[evicted from the context") == 4
    assert cli.main(["show", str(real_dir), "--row", "0", "--no-color", "--keep-last-k", "-1"]) == 0
    assert "[evicted" not in capsys.readouterr().out


def test_count_rows_and_timing(hub_dir, table, tmp_path):
    from mementos_fast.loading import count_rows

    assert count_rows(str(hub_dir)) == table.num_rows
    assert count_rows(table) == table.num_rows
    assert count_rows("microsoft/OpenMementos") is None
    assert cli.main(["analyze", str(hub_dir), "--out", str(tmp_path), "--quiet", "--no-plots"]) == 0
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["rows"] == table.num_rows and 0 < timing["parse_seconds"] <= timing["seconds"]


def test_cli_analyze_full_config_alignment_and_replay(tmp_path):
    table = synthetic.generate_full_table(120, seed=5, corrupt_rate=0.4)
    rows = synthetic.generate_full_rows(120, seed=5, corrupt_rate=0.4)
    (tmp_path / "hub" / "full").mkdir(parents=True)
    pq.write_table(table, tmp_path / "hub" / "full" / "train-00000-of-00001.parquet")
    out = tmp_path / "rep"
    assert cli.main(["analyze", str(tmp_path / "hub"), "--config", "full", "--out", str(out), "--no-plots"]) == 0
    alignment = json.loads((out / "alignment.json").read_text())
    got = {r["status"]: r["rows"] for r in alignment["statuses"]}
    want: dict[str, int] = {}
    for r in rows:
        want[r["corruption"] or "ok"] = want.get(r["corruption"] or "ok", 0) + 1
    assert got == want
    report = (out / "report.md").read_text()
    assert "## Context replay" in report and "## `full` config alignment" in report
    stats_table = pq.read_table(out / "rows.parquet")
    ratios = stats_table.column("replay_peak_ratio").to_pylist()
    assert all(r is None or 0 < r <= 1 for r in ratios)


@pytest.mark.parametrize("env", [{}, {"ARROW_DEFAULT_MEMORY_POOL": "system"}])
def test_importing_the_package_leaves_pyarrows_pool_alone(env):
    """pyarrow's own choice (mimalloc in its wheels) or the user's: the package no longer picks
    jemalloc, whose second of retained freed read buffers took the tokenized export over 1 GiB
    (_allocator)."""
    import subprocess
    import sys

    environ = {**{k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}, **env}

    def pool(first: str) -> str:
        code = first + "import pyarrow as pa; print(pa.default_memory_pool().backend_name)"
        run = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
        return run.stdout.strip()

    assert pool("import mementos_fast; ") == pool("") == env.get("ARROW_DEFAULT_MEMORY_POOL", pool(""))


@pytest.mark.parametrize(("env", "want"), [({}, "10000"), ({"MIMALLOC_PURGE_DELAY": "5"}, "5")])
def test_importing_the_package_sets_the_cores_mimalloc_purge_delay(env, want):
    """mimalloc (the core's allocator) reads the delay when the core loads: a user's value stands."""
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if not k.startswith("MIMALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", "import mementos_fast"],
        env={**environ, **env, "MIMALLOC_VERBOSE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    delays = {line.split(":")[1].strip() for line in out.stderr.splitlines() if "option 'purge_delay'" in line}
    assert delays == {want}
