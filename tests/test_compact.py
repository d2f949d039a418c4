"""compress_batch / compress / replay_batch / replay_curve: parity with the tutorial, the engine's
rules (against a plain-Python model of them), the properties the issue lists, hand-checked replay
figures."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mementos_fast as mf
import overlay_model
from mementos_fast import reference, synthetic
from mementos_fast.loading import sample_path

DELIMS = overlay_model.DELIMS
BS, BE, SS, SE = DELIMS[2:]


# ---------------------------------------------------------------------------------------------
# The oracle of the engine: an independent model of the overlay's tracker/processor
# (tests/overlay_model.py), token by token.


def model_inplace(text: str, k: int, mask: bool = False, kfa: bool = False, **kw) -> str:
    return overlay_model.inplace(text, overlay_model.Config(k, mask, kfa, **kw))


def model_replay(text: str, k: int, mask: bool = False, kfa: bool = False, prompt: int = 0, **kw):
    return overlay_model.replay(text, overlay_model.Config(k, mask, kfa, **kw), prompt_len=prompt)


# ---------------------------------------------------------------------------------------------
# Inputs

pieces = st.sampled_from(
    DELIMS * 3 + ["<|block_", "<thi", "a", "word ", " ", "\n", "\u3000", "\xa0", "é", "🙂", "x=1;", "<", "<|"]
)
traces = st.lists(pieces, max_size=40).map("".join)


def _sample_rows() -> list[str]:
    import json

    with sample_path().open(encoding="utf-8") as f:
        return [json.loads(line)["response"] for line in f if line.strip()]


@pytest.fixture(scope="module")
def generated() -> list[str]:
    rows = [r["response"] for r in synthetic.generate_rows(400, seed=7, malformed_rate=0.5)]
    return rows + _sample_rows()


# ---------------------------------------------------------------------------------------------
# style="tutorial": the reference, byte for byte


@pytest.mark.parametrize("k", [0, 1, 2, 3, 100])
def test_tutorial_equals_reference(k, generated, real):
    rows = generated + [r["response"] for r in real]
    out = mf.compress_batch(pa.array(rows, pa.large_string()), k).to_pylist()
    checked = 0
    for text, got in zip(rows, out):
        if "</think>" in text:
            assert got == reference.compress_trace(text, k)
            checked += 1
        else:
            assert got == text  # documented deviation: the tutorial appends the response again
    assert checked > 300


def test_tutorial_bug_rows_are_returned_unchanged():
    text = f"<think>{BS} a {BE}{SS} b {SE}"  # no </think>
    assert reference.compress_trace(text, 0) == f"<think>\n{SS} b {SE}\n</think>\n" + text  # the bug
    assert mf.compress(text, 0) == text


def test_tutorial_contract_example():
    # FORMAT.md section 7: raw captures, and the tail joined with "\n" like every other part.
    text = f"<think>\n{BS}A{BE}\n{SS}a{SE}\n</think>\nX"
    want = f"<think>\n{SS}a{SE}\n</think>\n\nX"
    assert reference.compress_trace(text, 0) == want
    assert mf.compress(text, 0) == want
    assert mf.compress_batch([text], 0).to_pylist() == [want]
    # k >= n keeps every block as captured (spaces and all)
    text = f"<think>{BS} A {BE}{SS} a {SE}</think>"
    assert mf.compress(text, 3) == f"<think>\n{BS} A {BE}\n{SS} a {SE}\n</think>\n"


def test_tutorial_is_the_seed_function():
    # The seed tutorial's compress_trace, as FORMAT.md section 7 states it, written out here a
    # second time independently of mementos_fast.reference.
    block_re = re.compile(r"<\|block_start\|>(.*?)<\|block_end\|>", re.DOTALL)
    summary_re = re.compile(r"<\|summary_start\|>(.*?)<\|summary_end\|>", re.DOTALL)

    def seed(response: str, k: int) -> str:
        blocks, summaries = block_re.findall(response), summary_re.findall(response)
        if not blocks or len(blocks) != len(summaries):
            return response
        parts = ["<think>"]
        for i, (b, s) in enumerate(zip(blocks, summaries)):
            if i >= len(blocks) - k:
                parts.append(f"<|block_start|>{b}<|block_end|>")
            parts.append(f"<|summary_start|>{s}<|summary_end|>")
        parts += ["</think>", response.split("</think>")[-1]]
        return "\n".join(parts)

    rows = [r["response"] for r in synthetic.generate_rows(300, seed=11, malformed_rate=0.3)]
    rows += [f"<think>{BS}x{BE}{SS}y{SE}" * 50 + "</think>", f"{BS}{BE}{SS}{SE}</think>"]  # no whitespace, many
    for k in (0, 1, 5, 60):
        for text in rows:
            assert reference.compress_trace(text, k) == seed(text, k)
            if "</think>" in text:
                assert mf.compress(text, k) == seed(text, k)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(traces, st.integers(0, 4))
def test_tutorial_hypothesis(text, k):
    got = mf.compress(text, k)
    assert got == (reference.compress_trace(text, k) if "</think>" in text else text)


# ---------------------------------------------------------------------------------------------
# style="inplace": the engine's rules


RULES = [
    # (trace, k, mask, kfa, expected)
    (
        f"<think>{BS}A{BE}{SS}a{SE}{BS}B{BE}{SS}b{SE}</think>x",
        0,
        False,
        False,
        f"<think>{BS}{BE}{SS}a{SE}{BS}{BE}{SS}b{SE}</think>x",
    ),
    (
        f"<think>{BS}A{BE}{SS}a{SE}{BS}B{BE}{SS}b{SE}</think>x",
        1,
        False,
        False,
        f"<think>{BS}{BE}{SS}a{SE}{BS}B{BE}{SS}b{SE}</think>x",
    ),
    (f"<think>{BS}A{BE}{SS}a{SE}{BS}B{BE}{SS}b{SE}</think>x", 0, True, False, f"<think>{SS}a{SE}{SS}b{SE}</think>x"),
    (
        f"<think>{BS}A{BE}{SS}a{SE}{BS}B{BE}{SS}b{SE}</think>x",
        0,
        False,
        True,
        f"<think>{BS}{BE}{SS}a{SE}{BS}B{BE}{SS}b{SE}</think>x",
    ),
    (
        f"<think>{BS}A{BE}{SS}a{SE}{BS}B{BE}{SS}b{SE}</think>x",
        -1,
        True,
        False,
        f"<think>{BS}A{BE}{SS}a{SE}{BS}B{BE}{SS}b{SE}</think>x",
    ),
    # a block without summary is never evicted; the summary binds to the newest closed block
    (f"<think>{BS}A{BE}{BS}B{BE}{SS}b{SE}</think>", 0, False, False, f"<think>{BS}A{BE}{BS}{BE}{SS}b{SE}</think>"),
    # a later summary binds to the older block still without one
    (
        f"<think>{BS}A{BE}{BS}B{BE}{SS}b{SE}{SS}a{SE}</think>",
        0,
        False,
        False,
        f"<think>{BS}{BE}{BS}{BE}{SS}b{SE}{SS}a{SE}</think>",
    ),
    # a stray end is ignored; a block cut off is never evicted
    (f"<think>{BE}{BS}A{BE}{SS}a{SE}{BS}cut", 0, False, False, f"<think>{BE}{BS}{BE}{SS}a{SE}{BS}cut"),
    # nested starts form a stack: the summary binds to the most recently OPENED closed block (the
    # inner one), as the overlay's start_summary walks blocks from the newest start backwards
    (f"{BS}o {BS}i{BE} o{BE}{SS}s{SE}", 0, False, False, f"{BS}o {BS}{BE} o{BE}{SS}s{SE}"),
    # the example: b binds B, a binds A; both evicted (B first)
    (f"{BS}A{BE}{BS}B{BE}{SS}b{SE}{SS}a{SE}", 0, False, False, f"{BS}{BE}{BS}{BE}{SS}b{SE}{SS}a{SE}"),
    # keep_last_block_for_answer: the deferred blocks wait in a queue; a block start flushes one
    (
        f"{BS}A{BE}{BS}B{BE}{SS}b{SE}{SS}a{SE}{BS}C{BE}{SS}c{SE}",
        0,
        False,
        True,
        f"{BS}A{BE}{BS}{BE}{SS}b{SE}{SS}a{SE}{BS}C{BE}{SS}c{SE}",
    ),
    # stray summary delimiters are ignored
    (f"{SE}{SS}x{SE}{BS}A{BE}{SS}a{SE}", 0, False, False, f"{SE}{SS}x{SE}{BS}{BE}{SS}a{SE}"),
    # an unclosed summary never completes its block
    (f"{BS}A{BE}{SS}a", 0, False, False, f"{BS}A{BE}{SS}a"),
    # text between units, think tags and the answer always stay
    (
        f"pre<think>mid{BS}A{BE} between {SS}a{SE} after</think> answer",
        0,
        True,
        False,
        f"pre<think>mid between {SS}a{SE} after</think> answer",
    ),
]


@pytest.mark.parametrize(("text", "k", "mask", "kfa", "expected"), RULES)
def test_engine_rule_table(text, k, mask, kfa, expected):
    assert mf.compress(text, k, style="inplace", mask_delimiters=mask, keep_last_block_for_answer=kfa) == expected
    assert model_inplace(text, k, mask, kfa) == expected


def _is_subsequence(small: str, big: str) -> bool:
    it = iter(big)
    return all(ch in it for ch in small)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(traces, st.sampled_from([-1, 0, 1, 2, 5]), st.booleans(), st.booleans(), st.booleans(), st.booleans())
def test_inplace_properties(text, k, mask, kfa, restart, on_end):
    kfa = kfa and k == 0
    sw = {"restart_mode": restart, "compact_on_summary_end": on_end}
    out = mf.compress(text, k, style="inplace", mask_delimiters=mask, keep_last_block_for_answer=kfa, **sw)
    assert out == model_inplace(text, k, mask, kfa, **sw)
    assert _is_subsequence(out, text)
    if k == -1:
        assert out == text
    if k >= 0 and not kfa:
        longer = mf.compress(text, k + 1, style="inplace", mask_delimiters=mask)
        assert len(longer) >= len(out)


def test_inplace_batch_equals_model(generated):
    col = pa.array(generated, pa.string())
    for k, mask in [(0, False), (1, True), (2, False), (-1, False)]:
        out = mf.compress_batch(col, k, style="inplace", mask_delimiters=mask).to_pylist()
        assert out == [model_inplace(t, k, mask) for t in generated]
    # only the content of evicted blocks goes: the rest of the bytes survive in order
    out = mf.compress_batch(col, 0, style="inplace").to_pylist()
    for text, got in zip(generated, out):
        if mf.parse(text).status != "ok":
            continue  # (quoted delimiters inside an evicted block go with it)
        assert got.count("<|summary_start|>") == text.count("<|summary_start|>")
        assert got.count(BS) == text.count(BS)
        assert got.split("</think>")[-1] == text.split("</think>")[-1]
        assert [s for s in mf.parse(got).summaries] == mf.parse(text).summaries


def test_compress_arrow_layouts_nulls_and_slices():
    rows = [f"<think>{BS} a {BE}{SS} b {SE}</think>x", None, "", "plain"]
    expect = [mf.compress(r, 0) if r is not None else None for r in rows]
    for typ in (pa.string(), pa.large_string(), pa.string_view()):
        assert mf.compress_batch(pa.array(rows, typ), 0).to_pylist() == expect
    sliced = pa.array(["skip", *rows], pa.string()).slice(1)
    assert mf.compress_batch(sliced, 0).to_pylist() == expect
    chunked = pa.chunked_array([pa.array(rows[:2]), pa.array(rows[2:])])
    out = mf.compress_batch(chunked, 0)
    assert out.type == pa.large_string()
    assert out.to_pylist() == expect
    assert mf.compress_batch(rows, 0).to_pylist() == expect  # a list of str


def test_compress_parallel_equals_one_thread():
    rows = synthetic.generate_bytes(3 << 20, seed=5, malformed_rate=0.2)
    col = pa.array(rows, pa.large_string())
    for style in ("tutorial", "inplace"):
        one = mf.compress_batch(col, 1, style=style, threads=1)
        assert one.equals(mf.compress_batch(col, 1, style=style, threads=2))


def test_bad_arguments():
    with pytest.raises(mf.MementoValueError, match="style"):
        mf.compress_batch(["x"], style="bogus")
    with pytest.raises(mf.MementoValueError, match="keep_last_k"):
        mf.compress_batch(["x"], -2, style="inplace")
    with pytest.raises(mf.MementoValueError, match="keep_last_block_for_answer"):
        mf.compress_batch(["x"], 1, style="inplace", keep_last_block_for_answer=True)
    with pytest.raises(mf.MementoTypeError):
        mf.compress_batch(pa.array([1, 2]))
    with pytest.raises(mf.MementoValueError, match="tokens"):
        mf.replay_batch(["x"], model="qwen3-8b")


# ---------------------------------------------------------------------------------------------
# Replay


def test_replay_by_hand():
    # prompt 10; <think> 7 chars, block start 15, "AAAA" 4, block end 13, summary start 17,
    # "s" 1, summary end 15 -> 82 visible; the eviction drops the 4 block chars -> 78;
    # "</think>x" (9) -> 87 at the end, which is the peak here.
    text = f"<think>{BS}AAAA{BE}{SS}s{SE}</think>x"
    b = mf.replay_batch([text], 0, prompt_len=10).to_pylist()[0]
    assert b["total_len"] == 81
    assert b["peak_len"] == 87
    assert b["final_len"] == 87
    assert b["full_peak_len"] == 91
    assert b["peak_ratio"] == pytest.approx(87 / 91)
    assert b["evicted_blocks"] == 1 and b["complete_blocks"] == 1
    # mean: sum over units of the visible length after each unit, / 81
    area = sum(10 + i for i in range(1, 73)) + sum(78 + i for i in range(1, 10))
    assert b["mean_len"] == pytest.approx(area / 81)
    assert b["full_mean_len"] == pytest.approx(10 + 82 / 2)
    curve = mf.replay_curve(text, 0, prompt_len=10).to_pylist()
    assert {"generated": 72, "visible": 82, "eviction": False} in curve
    assert {"generated": 72, "visible": 78, "eviction": True} in curve
    assert curve[-1] == {"generated": 81, "visible": 87, "eviction": False}


def test_replay_two_blocks_by_hand():
    # Two blocks of 100 chars with 1-char mementos, no think tags, k = 0 vs k = -1.
    unit = f"{BS}{'x' * 100}{BE}{SS}s{SE}"
    text = unit + unit
    n = len(text)  # 2 * (15 + 100 + 13 + 17 + 1 + 15) = 322
    k0 = mf.replay_batch([text], 0).to_pylist()[0]
    assert k0["total_len"] == n == 322
    assert k0["peak_len"] == 161 + 161 - 100  # second summary end, before the second eviction
    assert k0["final_len"] == n - 200
    keep = mf.replay_batch([text], -1).to_pylist()[0]
    assert keep["peak_len"] == keep["final_len"] == n and keep["peak_ratio"] == 1.0
    masked = mf.replay_batch([text], 0, mask_delimiters=True).to_pylist()[0]
    assert masked["final_len"] == n - 2 * (15 + 100 + 13)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    traces,
    st.sampled_from([-1, 0, 1, 2, 5]),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(0, 50),
)
def test_replay_equals_model(text, k, mask, kfa, restart, on_end, prompt):
    kfa = kfa and k == 0
    sw = {"restart_mode": restart, "compact_on_summary_end": on_end}
    got = mf.replay_batch(
        [text], k, mask_delimiters=mask, keep_last_block_for_answer=kfa, prompt_len=prompt, **sw
    ).to_pylist()[0]
    want = model_replay(text, k, mask, kfa, prompt=prompt, **sw)
    for key in want:
        assert got[key] == want[key], key
    n = want["total_len"]
    assert got["mean_len"] == pytest.approx(want["kv_auc"] / n if n else prompt)


def test_replay_batch_generated_and_prompt_lengths(generated):
    rows = generated[:120]
    prompts = list(range(len(rows)))
    out = mf.replay_batch(pa.array(rows), 1, prompt_len=prompts).to_pylist()
    for text, p, got in zip(rows, prompts, out):
        want = model_replay(text, 1, prompt=p)
        assert {key: got[key] for key in want} == want
    assert mf.replay_batch(pa.array(["a", None]), 0).column("peak_len").to_pylist() == [1, None]
    with pytest.raises(mf.MementoValueError):
        mf.replay_batch(pa.array(["a", "b"]), 0, prompt_len=[1])


def test_replay_compacts_realistic_traces(generated):
    ok = [t for t in generated if mf.parse(t).status == "ok"]
    out = mf.replay_batch(pa.array(ok), 0)
    ratios = out.column("peak_ratio").to_pylist()
    assert all(r < 1.0 for r in ratios)
    # realistic traces keep about a block plus mementos: well under half the trace at the peak
    assert sorted(ratios)[len(ratios) // 2] < 0.5


def test_concurrent_python_threads_and_adversarial_rows():
    import threading

    rows = [synthetic.adversarial(kind, 20_000) for kind in synthetic.ADVERSARIAL_KINDS]
    rows += synthetic.generate_bytes(1 << 20, seed=9)
    col = pa.array(rows, pa.large_string())
    expect = mf.compress_batch(col, 1, threads=1)
    expect_replay = mf.replay_batch(col, 0, threads=1)
    errors: list[BaseException] = []

    def work():
        try:
            for _ in range(3):
                assert mf.compress_batch(col, 1).equals(expect)
                assert mf.replay_batch(col, 0).equals(expect_replay)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for text, got in zip(rows, expect.to_pylist()):
        assert got == (reference.compress_trace(text, 1) if "</think>" in text else text)


def test_replay_in_real_tokens_with_kv_bytes(real):
    from mementos_fast.tokenizer import load_tokenizer, qwen3_tokenizer_path

    try:
        loaded = load_tokenizer(qwen3_tokenizer_path())
    except mf.MementoError as e:  # pragma: no cover - the package is installed by the test command
        pytest.skip(str(e))
    tok = loaded.tokenizer
    rows = [r["response"] for r in real] + _sample_rows()[:10]
    out = mf.replay_batch(pa.array(rows), 0, tokenizer=loaded, model="qwen3-8b", prompt_len=100)
    assert out.schema.metadata[b"unit"].startswith(b"tokens")
    for text, r in zip(rows, out.to_pylist()):
        n = len(tok.encode(text, add_special_tokens=False).ids)
        assert r["total_len"] == n
        assert r["full_peak_len"] == n + 100
        # the KV cache at the end holds exactly the tokens of the in-place rewrite (delimiters kept)
        kept = mf.compress(text, 0, style="inplace")
        assert r["final_len"] == 100 + len(tok.encode(kept, add_special_tokens=False).ids)
        assert r["peak_kv_bytes"] == r["peak_len"] * 2 * 36 * 8 * 128 * 2
    custom = mf.replay_batch(pa.array(rows[:1]), 0, tokenizer=loaded, model=mf.KVShape(2, 1, 4, 4))
    assert custom.column("peak_kv_bytes")[0].as_py() == custom.column("peak_len")[0].as_py() * 64
    curve = mf.replay_curve(rows[0], 0, tokenizer=loaded)
    assert curve.column("generated").to_pylist()[-1] == len(tok.encode(rows[0], add_special_tokens=False).ids)
    with pytest.raises(mf.MementoValueError, match="unknown model"):
        mf.replay_batch(pa.array(rows[:1]), 0, tokenizer=loaded, model="gpt-9")


def test_tokens_is_a_deprecated_alias_of_tokenizer():
    """replay_batch / replay_curve took the tokenizer as ``tokens=`` before: still accepted for one
    release, with a DeprecationWarning, and gives the same result."""
    from mementos_fast.tokenizer import load_tokenizer, qwen3_tokenizer_path

    try:
        loaded = load_tokenizer(qwen3_tokenizer_path())
    except mf.MementoError as e:  # pragma: no cover - the package is installed by the test command
        pytest.skip(str(e))
    rows = _sample_rows()[:5]
    want = mf.replay_batch(rows, 0, tokenizer=loaded, model="qwen3-8b")
    with pytest.warns(DeprecationWarning, match="tokenizer="):
        got = mf.replay_batch(rows, 0, tokens=loaded, model="qwen3-8b")
    assert got.equals(want, check_metadata=True)
    with pytest.warns(DeprecationWarning, match="tokenizer="):
        curve = mf.replay_curve(rows[0], 0, tokens=loaded)
    assert curve.equals(mf.replay_curve(rows[0], 0, tokenizer=loaded))
    with pytest.raises(mf.MementoValueError, match="only tokenizer="):
        mf.replay_batch(rows, 0, tokenizer=loaded, tokens=loaded)


# ---------------------------------------------------------------------------------------------
# Overlay parity on every kind of row, every switch; the plan; the prompt


SWITCHES = [
    {},
    {"mask_delimiters": True},
    {"restart_mode": True},
    {"compact_on_summary_end": False},
    {"mask_delimiters": True, "restart_mode": True},
]


def _all_rows(generated, real) -> list[str]:
    rows = generated[:150] + generated[-30:] + [r["response"] for r in real]
    rows += [synthetic.adversarial(kind, 3000) for kind in synthetic.ADVERSARIAL_KINDS]
    rows += [
        f"{BS}A{BE}{BS}B{BE}{SS}b{SE}{SS}a{SE}",
        f"{BS}o {BS}i{BE}{SS}s1{SE} o{BE}{SS}s2{SE}",
        f"{BS}A{BE}{SS}a{SS}b{SE}{SE}",
        f"{SS}{SE}{BE}{BS}{BS}{BE}{SS}x{SE}{BE}{SS}y{SE}",
    ]
    return rows


@pytest.mark.parametrize("k", [-1, 0, 1, 2, 5])
@pytest.mark.parametrize("sw", SWITCHES, ids=lambda d: ",".join(d) or "defaults")
def test_overlay_parity_everywhere(k, sw, generated, real):
    rows = _all_rows(generated, real)
    col = pa.array(rows, pa.large_string())
    out = mf.compress_batch(col, k, style="inplace", **sw).to_pylist()
    rep = mf.replay_batch(col, k, **sw).to_pylist()
    plan = mf.eviction_plan(col, k, **sw).to_pylist()
    cfg = overlay_model.Config(k, **sw)
    keys = ("block_start", "block_end", "summary_start", "summary_end", "trigger", "evict_start", "evict_end")
    for text, got, r, p in zip(rows, out, rep, plan):
        assert got == overlay_model.inplace(text, cfg)
        want = overlay_model.replay(text, cfg)
        assert {key: r[key] for key in want} == want
        blocks = overlay_model.plan_bytes(text, cfg)
        assert [{key: p[key][i] for key in keys} for i in range(p["n_blocks"])] == blocks


@pytest.mark.parametrize("k", [0])
def test_overlay_parity_keep_last_block_for_answer(k, generated, real):
    rows = _all_rows(generated, real)
    for sw in SWITCHES:
        out = mf.compress_batch(rows, k, style="inplace", keep_last_block_for_answer=True, **sw).to_pylist()
        rep = mf.replay_batch(rows, k, keep_last_block_for_answer=True, **sw).to_pylist()
        cfg = overlay_model.Config(k, keep_last_block_for_answer=True, **sw)
        for text, got, r in zip(rows, out, rep):
            assert got == overlay_model.inplace(text, cfg)
            want = overlay_model.replay(text, cfg)
            assert {key: r[key] for key in want} == want


def test_eviction_plan_columns_and_consumers():
    text = f"<think>{BS}A{BE}{SS}a{SE}\n{BS}B{BE}{SS}b{SE}</think>x"
    plan = mf.eviction_plan([text, None], 0)
    assert plan.num_rows == 2
    assert plan.schema.metadata[b"keep_last_k"] == b"0"
    row = plan.to_pylist()[0]
    assert row["n_blocks"] == 2 and row["n_complete"] == 2 and row["n_evicted"] == 2
    a_start = text.index(BS)
    assert row["block_start"][0] == a_start
    assert row["block_end"][0] == text.index(BE) + len(BE)
    assert row["evict_start"][0] == a_start + len(BS) and row["evict_end"][0] == text.index(BE)
    assert row["trigger"][0] == text.index(SE)
    assert row["rewind_to"] == [None, None]
    # the in-place rewrite is the row minus the plan's evicted ranges
    kept = "".join(text[s:e] for s, e in _complement(row, len(text.encode())))
    assert kept == mf.compress(text, 0, style="inplace")
    assert plan.to_pylist()[1]["n_blocks"] is None
    restart = mf.eviction_plan([text], 0, restart_mode=True).to_pylist()[0]
    assert restart["rewind_to"] == [text.index(SS), text.index(SS, text.index(SS) + 1)]
    assert restart["evict_start"][0] == a_start


def _complement(row, n):
    pos = 0
    for s, e in sorted(
        zip((x for x in row["evict_start"] if x is not None), (x for x in row["evict_end"] if x is not None))
    ):
        if s > pos:
            yield pos, s
        pos = max(pos, e)
    yield pos, n


def test_prompt_text_is_tracked_like_process_prompt_tokens():
    unit = lambda b, s: f"{BS}{b}{BE}{SS}{s}{SE}"  # noqa: E731
    resp = unit("RRRR", "r") + unit("QQQQ", "q")
    prompt = "<|im_start|>user\nsee " + unit("U", "u") + "<|im_end|>\n<|im_start|>assistant\n" + unit("PPPP", "p")
    for k in (0, 1):
        for sw in SWITCHES:
            cfg = overlay_model.Config(k, require_assistant_section=True, **sw)
            got = mf.replay_batch([resp], k, prompt=[prompt], **sw).to_pylist()[0]
            want = overlay_model.replay(resp, cfg, prompt=prompt)
            assert {key: got[key] for key in want} == want, (k, sw)
    # k = 0: the prompt's assistant block waits in the queue and is evicted first, by the first
    # summary end of the response; the user's block is never tracked.
    got = mf.replay_batch([resp], 0, prompt=[prompt]).to_pylist()[0]
    assert got["prompt_len"] == len(prompt)
    assert got["final_len"] == len(prompt) + len(resp) - 4 - 4  # PPPP and RRRR gone, QQQQ waits
    # without the header requirement the user's block is tracked too (and evicted first)
    free = mf.replay_batch([resp], 0, prompt=[prompt], require_assistant_section=False).to_pylist()[0]
    assert free["final_len"] == len(prompt) + len(resp) - 1 - 4
    # a prompt without a chat header: the header is taken to follow it, so nothing in it counts
    raw = mf.replay_batch([resp], 0, prompt=[unit("PPPP", "p")]).to_pylist()[0]
    assert raw["final_len"] == len(unit("PPPP", "p")) + len(resp) - 8
    # prompt_len adds to the prompt text
    assert mf.replay_batch([resp], 0, prompt=[prompt], prompt_len=7).to_pylist()[0]["prompt_len"] == len(prompt) + 7
    with pytest.raises(mf.MementoValueError, match="prompt"):
        mf.replay_batch([resp, resp], 0, prompt=[prompt])


def test_kv_auc_and_restart_by_hand():
    text = f"<think>{BS}AAAA{BE}{SS}s{SE}</think>x"
    b = mf.replay_batch([text], 0, prompt_len=10).to_pylist()[0]
    area = sum(10 + i for i in range(1, 73)) + sum(78 + i for i in range(1, 10))
    assert b["kv_auc"] == area
    assert b["full_kv_auc"] == sum(10 + i for i in range(1, 82))
    r = mf.replay_batch([text], 0, restart_mode=True).to_pylist()[0]
    assert r["recomputed_len"] == len(SS) + 1 + len(SE)
    assert r["final_len"] == len(text) - len(BS) - 4 - len(BE)
