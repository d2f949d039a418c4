"""Ray Data path: map_batches(..., batch_format="pyarrow") over generated Parquet shards on a local
instance gives the same rows as the single-machine path (parse, statistics, compress, export)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")  # the only reason to skip: `pip install mementos-fast[ray]`

import mementos_fast as mf  # noqa: E402
from mementos_fast import export as ex  # noqa: E402
from mementos_fast import integrations as it  # noqa: E402
from mementos_fast import synthetic  # noqa: E402

SHARDS = 3
ROWS = 60


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    import ray.data

    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False, ignore_reinit_error=True
    )
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    tables = []
    for i in range(SHARDS):
        t = synthetic.generate_table(ROWS, seed=100 + i, malformed_rate=0.2)
        pq.write_table(t, d / f"train-{i:05d}-of-{SHARDS:05d}.parquet", row_group_size=25)
        tables.append(t)
    return d, pa.concat_tables(tables)


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    """A small byte-level BPE saved as tokenizer.json (workers load it by path)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(synthetic.generate_bytes(200_000, seed=1), trainer=trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def _collect(ds) -> pa.Table:
    return pa.concat_tables([ray.get(r) for r in ds.to_arrow_refs()])


def test_ray_matches_single_machine(ray_local, shards, tokenizer_json):
    import ray.data

    directory, table = shards
    ds = ray.data.read_parquet(str(directory))

    # parse
    parsed = _collect(ds.map_batches(it.parse_table, batch_format="pyarrow", batch_size=32))
    assert parsed.num_rows == table.num_rows
    assert parsed.column("status").to_pylist() == mf.parse_batch(table.column("response")).column("status").to_pylist()
    assert parsed.column("response").to_pylist() == table.column("response").to_pylist()

    # statistics
    stats = _collect(ds.map_batches(it.stats_table, batch_format="pyarrow", batch_size=32))
    local = it.stats_table(table)
    for col in ("n_blocks", "block_chars", "summary_chars", "char_ratio", "status"):
        assert stats.column(col).to_pylist() == local.column(col).to_pylist()

    # compress
    comp = _collect(
        ds.map_batches(
            it.compress_table, batch_format="pyarrow", batch_size=32, fn_kwargs={"keep_last_k": 1, "style": "inplace"}
        )
    )
    assert (
        comp.column("response").to_pylist()
        == mf.compress_batch(table.column("response"), 1, style="inplace").to_pylist()
    )

    # export: text formats as plain functions, tokenized through an actor that loads the tokenizer once
    for fmt, kw in [("messages", {}), ("chatml", {"only_ok": True})]:
        got = _collect(
            ds.map_batches(it.export_table, batch_format="pyarrow", batch_size=32, fn_kwargs={"format": fmt, **kw})
        )
        assert got.to_pylist() == ex.transform_table(table, fmt, **kw).to_pylist()
    opts = {"max_length": 2000, "overflow": "drop", "variant": "compressed", "keep_last_k": 0}
    got = _collect(
        ds.map_batches(
            it.SFTExporter,
            batch_format="pyarrow",
            batch_size=32,
            concurrency=1,
            fn_constructor_kwargs={"format": "tokenized", "tokenizer": str(tokenizer_json), **opts},
        )
    )
    expected = ex.transform_table(table, "tokenized", tokenizer=str(tokenizer_json), **opts)
    assert 0 < got.num_rows < table.num_rows
    assert got.column("input_ids").to_pylist() == expected.column("input_ids").to_pylist()
    assert got.column("segment").to_pylist() == expected.column("segment").to_pylist()


def test_ray_export_is_atomic_and_loads_back(ray_local, shards, tmp_path):
    datasets = pytest.importorskip("datasets")
    directory, table = shards
    out = tmp_path / "sft"
    m = it.ray_export(str(directory), str(out), "chatml", only_ok=True)
    ok = mf.parse_batch(table.column("response")).column("status").cast(pa.string()).to_pylist()
    n_ok = ok.count("ok")
    assert m["rows_read"] == table.num_rows and m["rows_written"] == n_ok
    assert m["rows_dropped"] == table.num_rows - n_ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sft"]  # no temporary left
    assert json.loads((out / "_manifest.json").read_text())["rows_written"] == n_ok
    back = datasets.load_dataset("parquet", data_files=str(out / "*.parquet"), split="train")
    expected = [
        ex.render_chatml(p, r)
        for p, r, s in zip(table.column("problem").to_pylist(), table.column("response").to_pylist(), ok)
        if s == "ok"
    ]
    assert sorted(back["text"]) == sorted(expected)
    assert back.column_names == ["text", "domain", "source", "difficulty"]
    with pytest.raises(mf.MementoValueError, match="exists"):
        it.ray_export(str(directory), str(out), "chatml")


def test_ray_export_command(ray_local, shards, tmp_path, capsys):
    directory, table = shards
    out = tmp_path / "msgs"
    from mementos_fast import cli

    assert (
        cli.main(
            [
                "ray-export",
                str(directory),
                str(out),
                "--format",
                "messages",
                "--variant",
                "compressed",
                "--keep-last-k",
                "0",
                "--style",
                "inplace",
            ]
        )
        == 0
    )
    m = json.loads(capsys.readouterr().out)
    assert m["rows_written"] == m["rows_read"] == table.num_rows and m["keep_last_k"] == 0
    back = pq.read_table(out)
    got = sorted(row[1]["content"] for row in back.column("messages").to_pylist())
    assert got == sorted(mf.compress_batch(table.column("response"), 0, style="inplace").to_pylist())


def test_ray_export_with_as_many_actors_as_cpus(ray_local, shards, tokenizer_json, tmp_path):
    """`ray-export --concurrency 2` on 2 CPUs used to hang: the two tokenizer actors took every CPU
    and the read and write tasks waited forever. The actors now leave them a share."""
    import threading

    directory, table = shards
    out = tmp_path / "tok"
    result: dict = {}

    def export() -> None:
        result["m"] = it.ray_export(
            str(directory), str(out), "tokenized", tokenizer=str(tokenizer_json), concurrency=2, batch_size=32
        )

    t = threading.Thread(target=export, daemon=True)
    t.start()
    t.join(timeout=300)
    assert not t.is_alive(), "ray_export with concurrency=2 on 2 CPUs did not finish in 300 s"
    assert result["m"]["rows_written"] == table.num_rows
    assert pq.read_table(out).num_rows == table.num_rows
