"""`analyze --tokenizer`: the per-row token figures (one pass in Rust) against Hugging Face counts of
the tutorial's items and against `replay_batch`; the tokenizer cache; `qwen3` everywhere."""

from __future__ import annotations

import csv
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mementos_fast as mf
from mementos_fast import cli, reference, stats, synthetic
from mementos_fast.chat import MEMENTO_PROMPT_TEMPLATE
from mementos_fast.compaction import MODELS
from mementos_fast.tokenizer import clear_cache
from mementos_fast.tokens import analyze_tokens, checked_counter, early_counter, token_counter

tk = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def qwen3() -> mf.LoadedTokenizer:
    try:
        return mf.load_tokenizer(mf.qwen3_tokenizer_path())
    except mf.MementoValueError as e:
        pytest.skip(str(e))


def hf_len(tok, text: str) -> int:
    return len(tok.encode(text, add_special_tokens=False).ids)


def tutorial_figures(tok, text: str | None) -> dict | None:
    """The tutorial's token figures of one row, with Hugging Face `encode` (the oracle)."""
    if text is None:
        return None
    p = reference.parse_trace(text)
    blocks = sum(hf_len(tok, b) for b in p["blocks"])
    summaries = sum(hf_len(tok, s) for s in p["summaries"])
    return {
        "response_tokens": hf_len(tok, text),
        "block_tokens": blocks,
        "summary_tokens": summaries,
        "token_ratio": summaries / blocks if blocks else None,
    }


def check(
    loaded: mf.LoadedTokenizer, texts: list[str | None], problems: list[str | None] | None = None, **engine
) -> pa.RecordBatch:
    """analyze_tokens equals the oracle on every row, and its replay equals replay_batch's."""
    got = analyze_tokens(texts, loaded, problem=problems, model="qwen3-8b", threads=2, **engine)
    rows = got.to_pylist()
    prompt_len = 0
    if problems is not None:
        want_prompts = [
            None if p is None else hf_len(loaded.tokenizer, MEMENTO_PROMPT_TEMPLATE.format(problem=p)) for p in problems
        ]
        assert got.column("prompt_tokens").to_pylist() == want_prompts
        prompt_len = [p or 0 for p in want_prompts]
    for i, text in enumerate(texts):
        want = tutorial_figures(loaded.tokenizer, text)
        if want is None:
            assert rows[i]["response_tokens"] is None
            continue
        assert {k: rows[i][k] for k in want} == pytest.approx(want), f"row {i}: {text[:120]!r}"
    replay = mf.replay_batch(texts, tokenizer=loaded, model="qwen3-8b", prompt_len=prompt_len, **engine)
    assert got.column("replay_peak_tokens").equals(replay.column("peak_len"))
    assert got.column("replay_full_peak_tokens").equals(replay.column("full_peak_len"))
    assert got.column("kv_auc_tokens").equals(replay.column("kv_auc"))
    assert got.column("peak_kv_bytes").equals(replay.column("peak_kv_bytes"))
    assert got.column("full_peak_kv_bytes").equals(replay.column("full_peak_kv_bytes"))
    np.testing.assert_allclose(
        got.column("replay_mean_tokens").to_numpy(zero_copy_only=False),
        replay.column("mean_len").to_numpy(zero_copy_only=False),
        rtol=1e-12,
    )
    return got


def test_real_rows_equal_hf_and_replay(qwen3, real):
    texts = [r["response"] for r in real]
    problems = [r["problem"] for r in real]
    for engine in (
        {},
        {"keep_last_k": 1},
        {"keep_last_k": -1},
        {"mask_delimiters": True},
        {"keep_last_block_for_answer": True},
        {"restart_mode": True},
        {"compact_on_summary_end": False, "keep_last_block_for_answer": True},
    ):
        check(qwen3, texts, problems, **engine)


def test_generated_malformed_adversarial_rows(qwen3):
    rows = synthetic.generate_rows(60, seed=31, malformed_rate=0.3)
    texts = [r["response"] for r in rows] + [synthetic.adversarial(k, 2000) for k in synthetic.ADVERSARIAL_KINDS]
    texts += [None, "", "   ", "no delimiters at all", "<think>\n<|block_start|>  \n<|block_end|></think>"]
    problems = [r["problem"] for r in rows] + [None] * (len(texts) - len(rows))
    got = check(qwen3, texts, problems)
    assert got.column("response_tokens").null_count == 1
    check(qwen3, texts, None, keep_last_k=2)


def test_layouts_and_threads_agree(qwen3):
    texts = [r["response"] for r in synthetic.generate_rows(40, seed=5)]
    base = analyze_tokens(pa.array(texts), qwen3, threads=1)
    for column in (
        pa.array(texts, pa.large_string()),
        pa.array(texts, pa.string_view()),
        pa.chunked_array([pa.array(texts[:13]), pa.array(texts[13:])]),
    ):
        for threads in (None, 2):
            assert analyze_tokens(column, qwen3, threads=threads).equals(base)
    assert base.schema.metadata[b"backend"] == b"fast"
    assert analyze_tokens(texts, qwen3, backend="hf").select(base.schema.names).equals(base)
    with pytest.raises(mf.MementoValueError):
        analyze_tokens(texts, qwen3, problem=texts[:3])
    with pytest.raises(mf.MementoValueError):
        analyze_tokens(texts, qwen3, keep_last_k=2, keep_last_block_for_answer=True)


# ---- the tokenizer cache and the name qwen3 ---------------------------------------------


def small_bpe(extra: list[str] | None = None) -> tk.Tokenizer:
    from tokenizers import models, pre_tokenizers, trainers

    tok = tk.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([r["response"] for r in synthetic.generate_rows(20, seed=1)], trainer)
    if extra:
        tok.add_tokens(extra)
    return tok


def test_cache_serves_once_and_never_stale(tmp_path):
    path = tmp_path / "tokenizer.json"
    small_bpe().save(str(path))
    text = ["<think>zqxjv zqxjv zqxjv</think>"]
    first = mf.load_tokenizer(path)
    assert mf.load_tokenizer(str(path)) is first
    folder = mf.load_tokenizer(tmp_path)  # another name for the same file: shared, named as asked
    assert folder.tokenizer is first.tokenizer and folder.name == str(tmp_path)
    before = mf.count_tokens(text, str(path)).column("total_tokens")[0].as_py()
    assert token_counter(str(path)) is token_counter(first)  # one counter, one self-check
    # Rewritten in place: the new content is loaded, not the cached one.
    small_bpe(["zqxjv"]).save(str(path))
    second = mf.load_tokenizer(path)
    assert second is not first and second.tokenizer.token_to_id("zqxjv") is not None
    after = mf.count_tokens(text, str(path)).column("total_tokens")[0].as_py()
    assert after == 2 + 3 + 2 < before  # <think>, </think>, three words of one token and two spaces
    # Replaced by another file (new inode) of the same content as the first: loaded again.
    other = tmp_path / "other.json"
    small_bpe().save(str(other))
    os.replace(other, path)
    third = mf.load_tokenizer(path)
    assert third is not second and mf.count_tokens(text, path).column("total_tokens")[0].as_py() == before
    # A tokenizer object is keyed by its content: the same object is served once, a changed one again.
    obj = small_bpe()
    assert mf.load_tokenizer(obj) is mf.load_tokenizer(obj)
    loaded = mf.load_tokenizer(obj)
    obj.add_tokens(["zqxjv"])
    assert mf.load_tokenizer(obj) is not loaded


def test_qwen3_name_everywhere_without_the_hub(qwen3, monkeypatch):
    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(tk.Tokenizer, "from_pretrained", no_hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    clear_cache()
    loaded = mf.load_tokenizer("qwen3")
    assert loaded.name == "qwen3" and loaded.ids == qwen3.ids
    assert mf.load_tokenizer("Qwen3") is loaded
    by_path = mf.load_tokenizer(str(mf.qwen3_tokenizer_path()))
    assert by_path.name == str(mf.qwen3_tokenizer_path()) and by_path.tokenizer is loaded.tokenizer
    assert token_counter(by_path) is token_counter(loaded)
    texts = [r["response"] for r in synthetic.generate_rows(5, seed=2)]
    want = [hf_len(qwen3.tokenizer, t) for t in texts]
    assert mf.count_tokens(texts, "qwen3").column("total_tokens").to_pylist() == want
    assert mf.replay_batch(texts, -1, tokenizer="qwen3").column("total_len").to_pylist() == want
    assert analyze_tokens(texts, "qwen3").column("response_tokens").to_pylist() == want


# ---- the command line ---------------------------------------------------------------------


def test_cli_analyze_tokenizer_qwen3(qwen3, real, real_dir, tmp_path, capsys):
    out = tmp_path / "tok"
    assert (
        cli.main(
            [
                "analyze",
                str(real_dir),
                "--out",
                str(out),
                "--quiet",
                "--tokenizer",
                "qwen3",
                "--model",
                "qwen3-32b",
                "--keep-last-k",
                "1",
            ]
        )
        == 0
    )
    report = capsys.readouterr().out
    assert "The paper's figures beside the measured ones" in report and "~1,150" in report
    rows = pq.read_table(out / "rows.parquet")
    for name in (
        "block_tokens",
        "summary_tokens",
        "token_ratio",
        "response_tokens",
        "replay_peak_tokens",
        "replay_mean_tokens",
        "kv_auc_tokens",
        "peak_kv_bytes",
        "prompt_tokens",
        "mean_block_tokens",
    ):
        assert name in rows.column_names, name
    texts = [r["response"] for r in real]
    for i, text in enumerate(texts):
        want = tutorial_figures(qwen3.tokenizer, text)
        assert {k: rows.column(k)[i].as_py() for k in want} == pytest.approx(want)
    replay = mf.replay_batch(texts, 1, tokenizer=qwen3, model="qwen3-32b", prompt_len=rows.column("prompt_tokens"))
    assert rows.column("peak_kv_bytes").to_pylist() == replay.column("peak_kv_bytes").to_pylist()
    assert (
        rows.column("peak_kv_bytes")[0].as_py()
        == rows.column("replay_peak_tokens")[0].as_py() * MODELS["qwen3-32b"].bytes_per_token
    )
    with open(out / "domains.csv") as f:
        domains = list(csv.DictReader(f))
    assert domains and "median_token_ratio" in domains[0] and "mean_token_ratio" in domains[0]
    for name in ("token_ratio_by_domain.png", "kv_curve.png"):
        assert (out / name).stat().st_size > 1000


def test_cli_analyze_without_tokenizer_is_unchanged(real_dir, tmp_path, capsys):
    assert cli.main(["analyze", str(real_dir), "--out", str(tmp_path), "--quiet", "--no-plots"]) == 0
    rows = pq.read_table(tmp_path / "rows.parquet")
    assert not any("token" in c for c in rows.column_names)
    assert "Tokens" not in (tmp_path / "report.md").read_text()
    assert cli.main(["analyze", str(real_dir), "--out", str(tmp_path), "--model", "phi-4"]) == 2
    assert "--tokenizer" in capsys.readouterr().err


def test_token_report_on_generated_domains(qwen3):
    table = synthetic.generate_table(90, seed=4, malformed_rate=0.1)
    parsed = mf.parse_batch(table.column("response"))
    rows = stats.row_stats(table, parsed=parsed)
    rows = stats.add_token_columns(
        rows, analyze_tokens(table.column("response"), qwen3, problem=table.column("problem"), model="qwen3-8b")
    )
    lines = "\n".join(stats.token_report(rows, tokenizer="qwen3", model="qwen3-8b"))
    for d in ("code", "math", "science", "all"):
        assert f"| {d}" in lines or f" {d} |" in lines
    assert "(paper 9)" in lines and "(paper 0.23)" in lines
    per_domain = {r["domain"]: r for r in stats.domain_table(rows)}
    kept = rows.filter(pa.compute.invert(rows.column("skipped")))
    math = kept.filter(pa.compute.equal(kept.column("domain"), "math"))
    assert per_domain["math"]["median_token_ratio"] == pytest.approx(
        float(np.median(math.column("token_ratio").to_numpy(zero_copy_only=False)))
    )


# ---- the early counter (built from the file in Rust while Python loads the tokenizer) -------


@pytest.mark.parametrize("extra", [None, ["<|block_start|>", "zqxjv"]])
def test_early_counter_counts_like_the_loaded_tokenizer(tmp_path, real, extra):
    path = tmp_path / "tokenizer.json"
    small_bpe(extra).save(str(path))
    clear_cache()
    early = early_counter(path)
    assert early is not None and early.backend == "fast"
    loaded = mf.load_tokenizer(path)
    texts = [r["response"] for r in real] + [
        r["response"] for r in synthetic.generate_rows(30, seed=5, malformed_rate=0.3) if r["response"]
    ]
    texts.append("<|block_start|>zqxjv<|block_end|><|summary_start|> a <|summary_end|>\n</think>x")
    want = [hf_len(loaded.tokenizer, t) for t in texts]
    assert [early.count(t) for t in texts] == want
    counter, accepted = checked_counter(path, early)
    assert accepted and counter is early and token_counter(path) is early  # cached: one self-check


def test_early_counter_only_for_supported_local_files(tmp_path, qwen3):
    from tokenizers import models

    assert early_counter("some-org/some-model") is None  # a hub id: loaded the usual way
    assert early_counter(tmp_path / "missing.json") is None
    wordpiece = tk.Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    wordpiece.save(str(tmp_path / "wp.json"))
    assert early_counter(tmp_path / "wp.json") is None  # not a byte-level BPE: no fast counter
    early = early_counter("qwen3")
    assert early is not None
    texts = [r["response"] for r in synthetic.generate_rows(5, seed=6)]
    assert [early.count(t) for t in texts] == [hf_len(qwen3.tokenizer, t) for t in texts]


def test_cli_recounts_when_the_early_counter_is_rejected(real_dir, tmp_path, monkeypatch):
    """Figures of an early counter the self-check rejects are counted again with the counter the
    loaded tokenizer gives: the output equals a run without the early counter."""
    args = ["analyze", str(real_dir), "--quiet", "--no-plots", "--tokenizer", "qwen3", "--batch-size", "2"]
    assert cli.main([*args, "--out", str(tmp_path / "a")]) == 0
    used = []

    def reject(spec, early):
        used.append(early)
        return token_counter(spec, "hf"), False

    monkeypatch.setattr(cli, "checked_counter", reject)
    assert cli.main([*args, "--out", str(tmp_path / "b")]) == 0
    assert used and used[0] is not None
    a, b = (pq.read_table(tmp_path / d / "rows.parquet") for d in "ab")
    tokens = [c for c in a.column_names if "token" in c]
    assert tokens and a.select(tokens).equals(b.select(tokens))


def test_verified_files_pass_the_self_check(qwen3):
    """Every verified file present here passes the runtime self-check it is spared: the installed
    Qwen3 file when its hash is listed (the benchmarks' tokenizer), else the listing is stale."""
    import hashlib

    from mementos_fast.tokens import VERIFIED_FAST_FILES, _self_check, verified_file

    path = mf.qwen3_tokenizer_path()
    if hashlib.sha256(path.read_bytes()).hexdigest() not in VERIFIED_FAST_FILES:
        pytest.skip(f"the installed Qwen3 tokenizer.json is not a verified file ({path})")
    assert verified_file("qwen3") and verified_file(path) and verified_file(path.parent)
    early = early_counter("qwen3")
    assert early is not None and _self_check(qwen3, early) is None


def test_unverified_files_are_self_checked(tmp_path, monkeypatch):
    """A file not listed gets the self-check (and a rejected early counter is not used); a verified
    one does not load the tokenizer in Python at all."""
    from mementos_fast import tokens

    path = tmp_path / "tokenizer.json"
    small_bpe().save(str(path))
    clear_cache()
    assert not tokens.verified_file(path) and not tokens.verified_file("some-org/some-model")
    early = early_counter(path)
    checks = []
    monkeypatch.setattr(tokens, "_self_check", lambda loaded, counter: checks.append(counter) or "differs")
    with pytest.warns(RuntimeWarning, match="falls back to the hf backend"):
        counter, accepted = checked_counter(path, early)
    assert checks and checks[0] is early and not accepted and counter.backend == "hf"
    import hashlib

    monkeypatch.setitem(tokens.VERIFIED_FAST_FILES, hashlib.sha256(path.read_bytes()).hexdigest(), "test")
    monkeypatch.setattr(tokens, "load_tokenizer", lambda spec: pytest.fail("loaded a verified file"))
    clear_cache()
    checks.clear()
    counter, accepted = checked_counter(path, early)
    assert accepted and counter is early and not checks


def test_cli_loads_no_tokenizer_in_python_for_a_verified_file(qwen3, real_dir, tmp_path, monkeypatch):
    """`analyze --tokenizer qwen3` with the verified Qwen3 file: counting, the self-check and the
    report's viewer pages all use the counter built in Rust; the output equals a run that loads
    the tokenizer (the file made unverified)."""
    from mementos_fast import tokens

    if not tokens.verified_file("qwen3"):
        pytest.skip("the installed Qwen3 tokenizer.json is not a verified file")
    args = ["analyze", str(real_dir), "--quiet", "--no-plots", "--tokenizer", "qwen3"]
    monkeypatch.setattr(tokens, "VERIFIED_FAST_FILES", {})
    assert cli.main([*args, "--out", str(tmp_path / "loaded")]) == 0
    monkeypatch.undo()
    clear_cache()
    calls = []
    monkeypatch.setattr(tokens, "load_tokenizer", lambda spec: calls.append(spec))
    monkeypatch.setattr(mf, "load_tokenizer", lambda spec: calls.append(spec))
    assert cli.main([*args, "--out", str(tmp_path / "verified")]) == 0
    assert calls == []
    a, b = (pq.read_table(tmp_path / d / "rows.parquet") for d in ("loaded", "verified"))
    assert a.equals(b)
    pages = sorted(p.name for p in (tmp_path / "verified").glob("viewer-*.html"))
    assert pages and pages == sorted(p.name for p in (tmp_path / "loaded").glob("viewer-*.html"))
    for name in pages:
        assert (tmp_path / "verified" / name).read_text() == (tmp_path / "loaded" / name).read_text()
