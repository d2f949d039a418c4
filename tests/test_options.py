"""One declaration of the export options (``mementos_fast.options.ExportOptions``) serves the
export functions, the table functions of ``integrations`` and the command line; one value of the
engine's rules (``compaction.EngineRules``) serves every engine call."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import pytest

import mementos_fast as mf
from mementos_fast import cli, synthetic
from mementos_fast import integrations as it
from mementos_fast.compaction import EngineRules
from mementos_fast.export import export_sft, transform_table
from mementos_fast.options import ExportOptions

TABLE = synthetic.generate_table(24, seed=7, malformed_rate=0.2)


@pytest.mark.parametrize("fn", [transform_table, export_sft])
def test_every_field_is_an_export_keyword_with_the_same_default(fn):
    """The signature (help, IDEs) lists every field with its default; the function declares them
    once, as ``**fields`` checked by ``ExportOptions.of``, beside ``options``."""
    params = inspect.signature(fn).parameters
    assert params["options"].default is None
    assert params["format"].default is None  # the shorthand for options.format
    for f in dataclasses.fields(ExportOptions):
        assert f.name in params, f"{fn.__name__} has no {f.name}"
        if f.name != "format":
            assert params[f.name].default == f.default, f.name
            assert params[f.name].kind is inspect.Parameter.KEYWORD_ONLY, f.name
    assert fn.__code__.co_flags & inspect.CO_VARKEYWORDS
    assert not {f.name for f in dataclasses.fields(ExportOptions)} & set(fn.__code__.co_varnames) - {"format"}


def test_keywords_replace_the_fields_of_options(tmp_path):
    expected = transform_table(TABLE, "chatml", only_ok=True)
    assert expected.column_names == ["text", "domain", "source", "difficulty"]
    opts = ExportOptions(format="messages", only_ok=True)
    assert transform_table(TABLE, options=dataclasses.replace(opts, format="chatml")).equals(expected)
    assert transform_table(TABLE, "chatml", options=opts).equals(expected)
    assert transform_table(TABLE, options=opts, format="chatml").equals(expected)
    assert not transform_table(TABLE, options=opts).equals(expected)
    with pytest.raises(mf.MementoValueError, match=r"unknown export option\(s\) fromat"):
        transform_table(TABLE, fromat="chatml")
    with pytest.raises(mf.MementoValueError, match="format must be one of messages, chatml, tokenized; got 'xml'"):
        transform_table(TABLE, options=ExportOptions(format="xml"))
    batches = TABLE.to_batches(max_chunksize=10)
    a = export_sft(out=tmp_path / "a.jsonl", batches=batches, options=ExportOptions(format="chatml", only_ok=True))
    b = export_sft(None, tmp_path / "b.jsonl", "chatml", batches=batches, only_ok=True)
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert {k: v for k, v in a.items() if k not in ("seconds", "files")} == {
        k: v for k, v in b.items() if k not in ("seconds", "files")
    }
    assert a["format"] == "chatml" and a["only_ok"] is True and a["rows_written"] == expected.num_rows


def test_export_table_takes_options_or_their_fields():
    expected = transform_table(TABLE, "chatml", only_ok=True)
    assert it.export_table(TABLE, ExportOptions(format="chatml", only_ok=True)).equals(expected)
    assert it.export_table(TABLE, format="chatml", only_ok=True).equals(expected)
    # keywords replace the fields of `options`
    assert it.export_table(TABLE, ExportOptions(format="messages", only_ok=True), format="chatml").equals(expected)
    assert it.SFTExporter(format="chatml", only_ok=True)(TABLE).equals(expected)
    assert it.SFTExporter(ExportOptions(format="chatml", only_ok=True))(TABLE).equals(expected)


def test_a_misspelt_option_names_the_valid_ones():
    with pytest.raises(mf.MementoValueError, match=r"unknown export option\(s\) max_lenght: .*max_length"):
        it.export_table(TABLE, format="tokenized", max_lenght=100)
    with pytest.raises(mf.MementoValueError, match="unknown export option"):
        it.SFTExporter(fromat="chatml")
    with pytest.raises(mf.MementoValueError, match="options must be an ExportOptions"):
        it.export_table(TABLE, "chatml")


def test_ray_export_checks_its_options_before_ray(tmp_path):
    with pytest.raises(mf.MementoValueError, match="max_length applies to the tokenized format"):
        it.ray_export(str(tmp_path), str(tmp_path / "out"), "chatml", max_length=10)
    with pytest.raises(mf.MementoValueError, match="unknown export option"):
        it.ray_export(str(tmp_path), str(tmp_path / "out"), options=ExportOptions(), only_okay=True)


def test_the_cli_flags_are_the_fields_with_their_defaults():
    p = argparse.ArgumentParser()
    cli.add_export_arguments(p)
    flags = {a.dest: a for a in p._actions if a.dest != "help"}
    declared = {f.name: f for f, _ in ExportOptions.flags()}
    assert set(flags) == set(declared)
    assert "compact_on_summary_end" not in flags  # no flag: the engine's default
    for name, action in flags.items():
        assert action.default == declared[name].default, name
    assert ExportOptions.from_args(p.parse_args([])) == ExportOptions()
    got = ExportOptions.from_args(
        p.parse_args(["--format", "tokenized", "--stage2-keep-last-k", "-1", "--max-length", "64", "--pack"])
    )
    assert got == ExportOptions(format="tokenized", stage2_keep_last_k=-1, max_length=64, pack=True)
    with pytest.raises(SystemExit):
        p.parse_args(["--stage2-keep-last-k", "-2"])


def test_engine_rules_are_what_the_plan_records():
    rules = EngineRules(2, restart_mode=True)
    plan = mf.eviction_plan(TABLE.column("response"), 2, restart_mode=True)
    assert {k.decode(): v.decode() for k, v in plan.schema.metadata.items()} == rules.metadata()
    assert rules.metadata()["restart_mode"] == "true" and rules.metadata()["keep_last_k"] == "2"
