"""A new user's mistakes, run as a user runs them: the command line in a subprocess.

Every user error is one line on stderr naming the file or the option and what to do, exit
status 2, no traceback, and no file left behind; interrupts and closed pipes exit quietly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mementos_fast as mf
from mementos_fast import synthetic

CLI = [sys.executable, "-m", "mementos_fast.cli"]


def cli(*args: str, cwd: Path | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout, **kw)


def user_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, one line on stderr containing every needle, no traceback; returns the line."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def listing(path: Path) -> list[str]:
    """Every entry under ``path`` (hidden ones included), relative."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    """A small local copy laid out like the hub repository (data/ and full/)."""
    d = tmp_path_factory.mktemp("hub") / "OpenMementos"
    (d / "data").mkdir(parents=True)
    (d / "full").mkdir()
    table = synthetic.generate_table(40, seed=1, malformed_rate=0.2)
    pq.write_table(table, d / "data" / "train-00000-of-00001.parquet")
    return d


# --- paths and files ------------------------------------------------------------------------


def test_missing_local_path(tmp_path):
    line = user_error(
        cli("analyze", "./OpenMementos", "--out", tmp_path / "r", cwd=tmp_path),
        "./OpenMementos",
        "no such file or directory",
    )
    assert "hub" in line  # says what a hub id looks like
    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("empty.jsonl", b"", "empty file"),
        ("empty.parquet", b"", "empty file"),
        ("random.jsonl", bytes(range(256)) * 40, "not valid JSON Lines"),
        ("blank.jsonl", b"\n\n", "no rows"),
    ],
)
def test_unreadable_files(tmp_path, name, content, needle):
    (tmp_path / name).write_bytes(content)
    out = tmp_path / "r"
    user_error(cli("analyze", tmp_path / name, "--out", out), name, needle)
    assert not out.exists()
    if name == "random.jsonl":  # the other commands read through the same checks
        user_error(cli("validate", tmp_path / name), name)
        user_error(cli("export-sft", tmp_path / name, "--out", tmp_path / "sft.jsonl"), name)
    assert listing(tmp_path) == [name]


def test_truncated_parquet(tmp_path):
    pq.write_table(synthetic.generate_table(20, seed=3), tmp_path / "t.parquet")
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "t.parquet").write_bytes(data[: len(data) // 2])
    user_error(cli("analyze", tmp_path / "t.parquet", "--out", tmp_path / "r"), "t.parquet", "truncated")
    assert listing(tmp_path) == ["t.parquet"]


def test_parquet_without_response(tmp_path):
    pq.write_table(pa.table({"text": ["a", "b"], "domain": ["math", "code"]}), tmp_path / "x.parquet")
    line = user_error(cli("analyze", tmp_path / "x.parquet", "--out", tmp_path / "r"), "x.parquet", "'response'")
    assert "text, domain" in line  # names the columns it has
    user_error(cli("show", tmp_path / "x.parquet"), "'response'")
    user_error(cli("export-sft", tmp_path / "x.parquet", "--out", tmp_path / "o.jsonl"), "'response'")
    assert listing(tmp_path) == ["x.parquet"]


def test_response_that_is_not_text(tmp_path):
    (tmp_path / "n.jsonl").write_text('{"response": 5}\n{"response": 6}\n')
    user_error(cli("analyze", tmp_path / "n.jsonl", "--out", tmp_path / "r"), "n.jsonl", "not text")


def test_config_full_without_full_columns(tmp_path, hub):
    user_error(
        cli("analyze", hub / "data", "--config", "full", "--out", tmp_path / "r"), "--config full", "block_summaries"
    )
    assert listing(tmp_path) == []


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,needle",
    [
        (["analyze", "--batch-size", "0"], "--batch-size"),
        (["analyze", "--batch-size", "x"], "--batch-size"),
        (["analyze", "--keep-last-k", "-5"], "--keep-last-k"),
        (["analyze", "--sample", "5", "--limit", "3"], "--sample and --limit"),
        (["analyze", "--sample", "-1"], "--sample"),
        (["validate", "--max-list", "-1"], "--max-list"),
        (["show", "--row", "-2"], "--row"),
        (["show", "--width", "3"], "--width"),
        (["analyze", "--config", "nope"], "--config"),
        (["export-sft", "--out", "x.jsonl", "--output", "parquet"], "--output parquet"),
        (["export-sft", "--out", "x.jsonl", "--format", "chatml", "--tokenizer", "qwen3"], "--tokenizer"),
        (["export-sft", "--out", "x.jsonl", "--format", "chatml", "--max-length", "10"], "--max-length"),
        (["export-sft", "--out", "x.jsonl", "--shard-mb", "0"], "--shard-mb"),
        (["export-sft", "--out", "x.jsonl", "--keep-last-k", "3"], "--variant compressed"),
        (["export-sft"], "--out"),
    ],
)
def test_bad_option_values(tmp_path, args, needle):
    user_error(cli(*args, cwd=tmp_path), needle)
    assert listing(tmp_path) == []  # nothing written: options are checked before any work


def test_keep_last_k_checked_before_the_report(tmp_path):
    user_error(cli("analyze", "--keep-last-k", "-5", "--out", tmp_path / "r"), "--keep-last-k")
    assert not (tmp_path / "r").exists()


def test_every_option_has_help():
    import argparse

    from mementos_fast import cli as cli_mod
    from mementos_fast import integrations

    parsers: list[argparse.ArgumentParser] = []
    orig = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        parsers.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    try:
        for main in (cli_mod.main, integrations.main):
            with pytest.raises(SystemExit):
                main([])
    finally:
        argparse.ArgumentParser.parse_args = orig  # type: ignore[method-assign]
    missing = []
    for top in parsers:
        subs = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
        for sp in subs:
            for name, p in sp.choices.items():
                for a in p._actions:
                    if not isinstance(a, argparse._HelpAction) and not a.help:
                        missing.append(f"{top.prog} {name} {a.option_strings or a.dest}")
    assert not missing, missing


# --- outputs -------------------------------------------------------------------------------


def test_out_is_an_existing_file(tmp_path):
    (tmp_path / "taken").write_text("mine")
    user_error(cli("analyze", "--out", tmp_path / "taken"), "--out", "taken", "existing file")
    assert (tmp_path / "taken").read_text() == "mine"
    (tmp_path / "x.jsonl").write_text("mine")
    user_error(cli("export-sft", "--out", tmp_path / "x.jsonl"), "--out", "x.jsonl", "--overwrite")
    assert (tmp_path / "x.jsonl").read_text() == "mine"
    assert listing(tmp_path) == ["taken", "x.jsonl"]


def test_out_under_a_path_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "sub" / "report"
    line = user_error(cli("analyze", "--out", bad), str(bad))
    assert ".tmp" not in line  # names the user's path, not a hidden temporary
    line = user_error(cli("export-sft", "--out", tmp_path / "file" / "x.jsonl"), "x.jsonl")
    assert ".tmp" not in line
    assert listing(tmp_path) == ["file"]


def test_reused_out_keeps_no_stale_files(tmp_path, hub):
    out = tmp_path / "r"
    assert cli("analyze", hub / "data", "--out", out, "--config", "default").returncode == 0
    first = listing(out)
    assert "visible_context.png" in first and "blocks_per_trace.png" in first
    (out / "notes.txt").write_text("the user's own file")
    # Second run without plots into the same folder: the earlier plots go, the user's file stays.
    assert cli("analyze", hub / "data", "--out", out, "--no-plots").returncode == 0
    second = listing(out)
    assert not [n for n in second if n.endswith(".png")], second
    assert "notes.txt" in second and "report.md" in second
    assert not [n for n in second if n.startswith(".mementos-tmp")], second


# --- real data, huge rows, rows without blocks -----------------------------------------------


def test_analyze_every_real_file(tmp_path, real_dir):
    for f in sorted(real_dir.glob("*.jsonl")):
        out = tmp_path / f.stem
        r = cli("analyze", f, "--out", out)
        assert r.returncode == 0, (f.name, r.stderr)
        assert "Traceback" not in r.stderr
        assert (out / "report.md").exists() and (out / "blocks_per_trace.png").exists()
    raw = (tmp_path / "openthoughts_raw_trace" / "validation.json").read_text()
    assert json.loads(raw)[0]["status"] == "no_blocks"


def test_analyze_rows_without_blocks(tmp_path):
    rows = [
        {"response": "<think>just thinking " * 50 + "</think> 42"},
        {"response": "no think at all"},
        {"response": None},
    ]
    (tmp_path / "raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = cli("analyze", tmp_path / "raw.jsonl", "--out", tmp_path / "r")
    assert r.returncode == 0, r.stderr
    validation = json.loads((tmp_path / "r" / "validation.json").read_text())
    assert {v["status"]: v["rows"] for v in validation} == {"no_blocks": 1, "no_think": 1, "null (no response)": 1}
    assert len(list((tmp_path / "r").glob("*.png"))) == 4  # no ok row: no example trace to draw


def test_jsonl_rows_of_several_mb(tmp_path):
    big = synthetic.generate_trace(__import__("random").Random(5), "math")["response"]
    body = big[big.index("<|block_start|>") : big.rindex("</think>")]
    huge = "<think>\n" + body * (3_000_000 // len(body) + 1) + "</think>\n\nThe answer."
    rows = [{"response": "<think></think>short"}, {"response": huge}, {"response": "x"}]
    (tmp_path / "big.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = cli("analyze", tmp_path / "big.jsonl", "--out", tmp_path / "r", "--no-plots")
    assert r.returncode == 0, r.stderr
    assert "3 rows" in r.stdout
    got = pa.concat_tables(pa.Table.from_batches([b]) for b in mf.load(str(tmp_path / "big.jsonl")))
    assert got.column("response").to_pylist() == [r["response"] for r in rows]


# --- show and validate -----------------------------------------------------------------------


def test_show_a_trace_without_blocks(real_dir):
    r = cli("show", real_dir / "openthoughts_raw_trace.jsonl", "--width", "100")
    assert r.returncode == 0, r.stderr
    assert "no_blocks" in r.stdout
    assert "reasoning, not split into blocks" in r.stdout and "Okay, so I have this problem" in r.stdout
    assert "inside the last block" not in r.stdout


def test_show_row_out_of_range():
    user_error(cli("show", "--row", "1000"), "row 1000", "out of range")


def test_validate_says_how_many_rows_it_left_out(tmp_path):
    rows = [{"response": "<think><|block_start|> unclosed"} for _ in range(5)]
    (tmp_path / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = cli("validate", tmp_path / "bad.jsonl", "--max-list", "2")
    assert r.returncode == 1
    assert len([x for x in r.stdout.splitlines() if x.startswith("row ")]) == 2
    assert "3 more malformed rows not listed" in r.stdout


# --- interrupts and pipes --------------------------------------------------------------------


def test_broken_pipe_is_quiet(tmp_path):
    for args in (["analyze", "--out", tmp_path / "r", "--no-plots"], ["export-sft", "--out", "-"]):
        p = subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.readline()
        p.stdout.close()  # like `| head -1`
        err = p.stderr.read().decode()
        p.wait(timeout=120)
        assert "Traceback" not in err and "BrokenPipe" not in err, err
        assert p.returncode in (0, 141), (p.returncode, err)


@pytest.fixture(scope="module")
def slow_source(tmp_path_factory) -> Path:
    """A few dozen batches; with ``SLOW_CLI`` each one takes 0.2 s, so the command is still running
    when it is interrupted, however fast the machine is."""
    path = tmp_path_factory.mktemp("slow") / "big.parquet"
    pq.write_table(pa.concat_tables([synthetic.generate_table(50, seed=9)] * 40), path)
    return path


# The command line with every batch slowed down (0.2 s before the work), so that an interrupt sent
# once it has started writing always lands mid-run: the test cannot pass because the command won
# the race and finished first.
SLOW_CLI = [
    sys.executable,
    "-c",
    "import sys, time; from mementos_fast import cli; f = cli._text_response;"
    "cli._text_response = lambda b: (time.sleep(0.2), f(b))[1];"
    "sys.argv[0] = 'mementos-fast'; sys.exit(cli.main())",
]


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_is_quiet_and_leaves_nothing(tmp_path, slow_source, sig, code):
    src = slow_source
    work = tmp_path / "work"
    work.mkdir()
    for args in (
        ["export-sft", src, "--out", "sft.jsonl", "--batch-size", "64"],
        ["analyze", src, "--out", "report", "--batch-size", "64", "--no-plots"],
    ):
        p = subprocess.Popen([*SLOW_CLI, *map(str, args)], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Wait until the command has started writing (its temporary is there), then interrupt it.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not [n for n in listing(work) if "tmp" in n]:
            time.sleep(0.02)
        p.send_signal(sig)
        err = p.stderr.read().decode()
        p.wait(timeout=60)
        assert p.returncode == code, (args, p.returncode, err)
        assert "Traceback" not in err, err
        left = listing(work)
        assert not [n for n in left if "tmp" in n], left  # no hidden temporary left
        assert "sft.jsonl" not in left and not (work / "report" / "report.md").exists()


def test_a_bug_keeps_its_traceback_and_asks_to_report_it():
    code = (
        "import sys; from mementos_fast import cli;"
        "cli.cmd_show = lambda a: 1 / 0;"
        "sys.argv = ['mementos-fast', 'show'];"
        "sys.exit(cli.main())"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "ZeroDivisionError" in r.stderr and "report it" in r.stderr


# --- the library side of the same reports ------------------------------------------------------


def test_help_shows_real_signatures():
    import inspect

    assert "sample" in str(inspect.signature(mf.load))
    assert "only_ok" in str(inspect.signature(mf.export_sft))


def test_replay_batch_prompt_len_none():
    with pytest.raises(mf.MementoTypeError, match="prompt_len"):
        mf.replay_batch(pa.array(["<think>a</think>"]), 0, prompt_len=None)


def test_load_sample_and_limit_exclude_each_other():
    with pytest.raises(mf.MementoValueError, match="either sample"):
        mf.load(sample=3, limit=2)


def test_datasets_map_without_arrow_format():
    """The README's snippet: Dataset.map(export_table, batched=True) gets a LazyBatch."""
    datasets = pytest.importorskip("datasets")
    from mementos_fast import integrations

    table = synthetic.generate_table(30, seed=4, malformed_rate=0.0)
    ds = datasets.Dataset(table)
    out = ds.map(
        integrations.export_table, batched=True, fn_kwargs={"format": "chatml"}, remove_columns=ds.column_names
    )
    from mementos_fast.export import transform_table

    assert out["text"] == transform_table(table, "chatml").column("text").to_pylist()


def test_sigterm_handler_is_restored():
    """The CLI installs its SIGTERM handler only around a command and restores the previous one."""
    from mementos_fast import cli as cli_mod

    before = signal.getsignal(signal.SIGTERM)
    assert cli_mod.main(["validate", "--limit", "1"]) in (0, 1)
    assert signal.getsignal(signal.SIGTERM) == before


def test_invalid_utf8_in_arrow_data_is_a_clear_error():
    """Arrow string data built from raw buffers is not validated by pyarrow: the token paths
    (which hand text to a tokenizer) check it and name the row, never a Rust panic."""
    good = b"<think><|block_start|> a <|block_end|><|summary_start|> s <|summary_end|></think> ok"
    offsets = pa.array([0, len(good), len(good) + 4], type=pa.int32()).buffers()[1]
    arr = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(good + b"ab\xff\xfe")])
    tok = mf.load_tokenizer(mf.qwen3_tokenizer_path())
    for call in (
        lambda: mf.count_tokens(arr, tok),
        lambda: mf.replay_batch(arr, 0, tokenizer=tok),
        lambda: mf.count_tokens(arr, tok, backend="hf"),
    ):
        with pytest.raises(mf.MementoValueError, match="row 1: invalid UTF-8 at byte 2"):
            call()
    # The valid row alone counts as usual.
    assert mf.count_tokens(arr.slice(0, 1), tok).column("total_tokens")[0].as_py() > 0


def _parse_in_child(_):
    col = pa.array(synthetic.generate_bytes(3 << 20, seed=2), type=pa.large_string())
    return mf.parse_batch(col).num_rows


def test_forked_workers_do_not_hang():
    """``datasets.map(num_proc=N)`` forks after the parent used the thread pool: the children's
    parallel calls must run (rayon's global pool does not survive fork; each process has its own)."""
    import multiprocessing

    col = pa.array(synthetic.generate_bytes(3 << 20, seed=2), type=pa.large_string())
    n = mf.parse_batch(col).num_rows  # the parent's pool is up
    with multiprocessing.get_context("fork").Pool(2) as pool:
        res = pool.map_async(_parse_in_child, range(2))
        assert res.get(timeout=120) == [n, n]


def test_several_files_from_a_shell_glob(hub, tmp_path):
    """`mementos-fast validate data/train-*.parquet`: the shell passes one argument per file."""
    pq.write_table(synthetic.generate_table(10, seed=8), tmp_path / "train-1.parquet")
    pq.write_table(synthetic.generate_table(15, seed=9), tmp_path / "train-2.parquet")
    r = cli("validate", tmp_path / "train-1.parquet", tmp_path / "train-2.parquet")
    assert r.returncode == 0, r.stderr
    assert "25 rows, 0 malformed" in r.stderr
    user_error(cli("validate", tmp_path / "train-1.parquet", tmp_path / "nope.parquet"), "nope.parquet")


def test_hub_id_that_cannot_be_reached(tmp_path):
    pytest.importorskip("datasets")
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1"}
    user_error(
        cli("analyze", "nosuchowner/nosuchdata", "--out", tmp_path / "r", env=env),
        "nosuchowner/nosuchdata",
        "Hugging Face hub",
    )
    assert listing(tmp_path) == []


# --- ray-export: a subcommand of mementos-fast, with the export options declared once ---------


def test_ray_export_help_lists_the_shared_export_options():
    r = cli("ray-export", "--help")
    assert r.returncode == 0, r.stderr
    for opt in (
        "--format",
        "--variant",
        "--keep-last-k",
        "--style",
        "--tokenizer",
        "--max-length",
        "--overflow",
        "--stage2-keep-last-k",
        "--mask-delimiters",
        "--keep-last-block-for-answer",
        "--restart-mode",
        "--pack",
        "--system-prompt",
        "--only-ok",
        "--concurrency",
        "--batch-size",
    ):
        assert opt in r.stdout, opt
    # export-sft declares the same export options (one declaration, two commands).
    e = cli("export-sft", "--help")
    for opt in ("--stage2-keep-last-k", "--restart-mode", "--pack", "--only-ok"):
        assert opt in e.stdout, opt


def test_ray_export_user_mistakes_are_one_line(tmp_path):
    user_error(cli("ray-export", tmp_path / "missing", tmp_path / "out"), "missing", "no such file")
    user_error(
        cli("ray-export", tmp_path, tmp_path / "out", "--format", "chatml", "--max-length", "10"),
        "--max-length",
        "tokenized",
    )
    user_error(cli("ray-export", tmp_path, tmp_path / "out", "--keep-last-k", "0"), "--keep-last-k", "compressed")
    (tmp_path / "taken").mkdir()
    user_error(cli("ray-export", tmp_path, tmp_path / "taken"), "taken", "exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_integrations_ray_export_is_a_deprecated_alias(tmp_path):
    old = [sys.executable, "-m", "mementos_fast.integrations"]
    r = subprocess.run([*old, "ray-export", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage: mementos-fast ray-export" in r.stdout
    assert r.stderr.count("\n") == 1 and "deprecated" in r.stderr and "mementos-fast ray-export" in r.stderr
    r = subprocess.run(
        [*old, "ray-export", str(tmp_path / "missing"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and "deprecated" in lines[0] and "missing" in lines[1], r.stderr
