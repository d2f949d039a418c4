"""parse_batch / parse against the tutorial reference, on real, generated and adversarial input."""

from __future__ import annotations

import random
import threading

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mementos_fast as mf
from mementos_fast import reference, synthetic

DELIMS = ["<think>", "</think>", "<|block_start|>", "<|block_end|>", "<|summary_start|>", "<|summary_end|>"]
PREFIXES = ["<", "<|", "<|block_", "<thi", "</think", "<|summary", "<|block_end|", "|>", ">"]
SPACES = [
    " ",
    "\n",
    "\t",
    "\r\n",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x1f",
    "\x85",
    "\xa0",
    "\u1680",
    "\u2000",
    "\u2009",
    "\u200a",
    "\u2028",
    "\u2029",
    "\u202f",
    "\u205f",
    "\u3000",
    "\u200b",
    "\ufeff",
    "\u180e",
]  # the last three are NOT whitespace for Python
WORDS = ["x", "word", "π", "≤", "θ→", "°C", "🎉", "日本語", "é", "e\u0301", "\\frac{1}{2}", "$$", "a<b", "<div>"]


def expected_row(text: str | None) -> dict | None:
    """What parse_batch must return for one row, computed with the reference."""
    if text is None:
        return None
    ref = reference.parse_trace(text)
    return {
        "blocks": ref["blocks"],
        "summaries": ref["summaries"],
        "reasoning": ref["reasoning"],
        "final_answer": ref["final_answer"],
        "n_blocks": len(ref["blocks"]),
        "n_summaries": len(ref["summaries"]),
        "block_chars": sum(len(b) for b in ref["blocks"]),
        "summary_chars": sum(len(s) for s in ref["summaries"]),
        "block_words": sum(len(b.split()) for b in ref["blocks"]),
        "summary_words": sum(len(s.split()) for s in ref["summaries"]),
        "block_char_counts": [len(b) for b in ref["blocks"]],
        "summary_char_counts": [len(s) for s in ref["summaries"]],
        "block_word_counts": [len(b.split()) for b in ref["blocks"]],
        "summary_word_counts": [len(s.split()) for s in ref["summaries"]],
    }


FIELDS = [
    "blocks",
    "summaries",
    "reasoning",
    "final_answer",
    "n_blocks",
    "n_summaries",
    "block_chars",
    "summary_chars",
    "block_words",
    "summary_words",
    "block_char_counts",
    "summary_char_counts",
    "block_word_counts",
    "summary_word_counts",
]


def assert_matches_reference(texts: list[str | None], **kw) -> pa.RecordBatch:
    batch = mf.parse_batch(pa.array(texts, type=pa.large_string()), spans=True, **kw)
    got = batch.select(FIELDS).to_pylist()
    for i, text in enumerate(texts):
        exp = expected_row(text)
        if exp is None:
            assert all(v is None for v in got[i].values()), i
        else:
            assert got[i] == exp, f"row {i}: {text[:200]!r}"
    assert_lossless(texts, batch)
    return batch


def assert_lossless(texts: list[str | None], batch: pa.RecordBatch) -> None:
    for text, spans in zip(texts, batch.column("spans").to_pylist()):
        if text is None:
            assert spans is None
            continue
        raw = text.encode()
        pos = 0
        for sp in spans:
            assert sp["start"] == pos and sp["end"] > sp["start"], sp
            pos = sp["end"]
        assert pos == len(raw)
        assert b"".join(raw[s["start"] : s["end"]] for s in spans) == raw


def soup(rng: random.Random, n_parts: int) -> str:
    """A random mix of delimiters, their prefixes, whitespace of every kind and multi-byte text."""
    pools = [DELIMS, DELIMS, PREFIXES, SPACES, SPACES, WORDS, WORDS]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(n_parts))


# --- equality with the reference -------------------------------------------------------------


def test_real_rows_equal_reference(real):
    assert_matches_reference([r["response"] for r in real])


def test_real_model_output_is_ok(real):
    batch = mf.parse_batch([r["response"] for r in real])
    statuses = dict(zip([r["source"] for r in real], batch.column("status").to_pylist()))
    assert statuses["AIME 2025 Problem 5"] == "ok"
    assert statuses["ai2-adapt-dev/openmath-2-math"] == "no_blocks"


def test_generated_realistic_and_malformed_equal_reference():
    rows = synthetic.generate_rows(600, seed=7, malformed_rate=0.4)
    assert_matches_reference([r["response"] for r in rows])


def test_ten_thousand_delimiter_soups_equal_reference():
    rng = random.Random(1234)
    texts = [soup(rng, rng.randint(0, 40)) for _ in range(10_000)]
    batch = assert_matches_reference(texts)
    # The soups exercise many statuses, not just one.
    assert len(set(batch.column("status").to_pylist())) >= 12


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(DELIMS + PREFIXES + SPACES + WORDS), st.text(max_size=8)), max_size=30))
def test_hypothesis_equal_reference(parts):
    text = "".join(parts)
    assert_matches_reference([text])
    single = mf.parse(text)
    exp = expected_row(text)
    assert (single.blocks, single.summaries, single.reasoning, single.final_answer) == (
        exp["blocks"],
        exp["summaries"],
        exp["reasoning"],
        exp["final_answer"],
    )


@pytest.mark.slow
@settings(max_examples=20_000, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(DELIMS + PREFIXES + SPACES + WORDS), st.text()), max_size=60))
def test_hypothesis_equal_reference_long(parts):
    assert_matches_reference(["".join(parts)])


def test_parse_single_matches_batch():
    rows = [r["response"] for r in synthetic.generate_rows(50, seed=3, malformed_rate=0.5)]
    batch = mf.parse_batch(rows, spans=True).to_pylist()
    for text, b in zip(rows, batch):
        p = mf.parse(text)
        assert p.blocks == b["blocks"] and p.summaries == b["summaries"]
        assert p.status == b["status"] and p.error_offset == b["error_offset"]
        assert [list(s) for s in p.spans] == [[s["kind"], s["start"], s["end"]] for s in b["spans"]]


# --- Arrow inputs ----------------------------------------------------------------------------

MATRIX_TEXTS = [
    "<think>\n<|block_start|> a block long enough to live in a buffer <|block_end|>\n"
    "<|summary_start|> tiny <|summary_end|>\n</think>\n\nanswer",
    None,
    "",
    "<think><|block_start|>π≤θ<|block_end|><|summary_start|>日本<|summary_end|></think>🎉",
    "no delimiters",
]


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda t: pa.array(t, type=pa.string()), id="string"),
        pytest.param(lambda t: pa.array(t, type=pa.large_string()), id="large_string"),
        pytest.param(lambda t: pa.array(t, type=pa.string_view()), id="string_view"),
        pytest.param(lambda t: pa.chunked_array([t[:2], t[2:]], type=pa.string()), id="chunked"),
        pytest.param(lambda t: pa.chunked_array([t[:1], [], t[1:]], type=pa.string_view()), id="chunked_view"),
        pytest.param(lambda t: pa.array(["pad", *t, "pad"], type=pa.string()).slice(1, len(t)), id="sliced"),
        pytest.param(lambda t: pa.array(["pad", *t], type=pa.string_view()).slice(1), id="sliced_view"),
        pytest.param(lambda t: pl.Series(t, dtype=pl.String), id="polars"),
        pytest.param(lambda t: list(t), id="list"),
        pytest.param(lambda t: pa.table({"response": t}).column("response"), id="table_column"),
    ],
)
def test_arrow_type_matrix(make):
    expected = mf.parse_batch(pa.array(MATRIX_TEXTS)).to_pylist()
    assert mf.parse_batch(make(MATRIX_TEXTS)).to_pylist() == expected
    assert expected[0]["blocks"] == ["a block long enough to live in a buffer"]
    assert expected[1]["status"] is None and expected[2]["status"] == "empty"


def test_empty_column():
    batch = mf.parse_batch(pa.array([], type=pa.string()))
    assert batch.num_rows == 0 and "status" in batch.schema.names


def test_rejects_non_string_columns():
    with pytest.raises(mf.MementoTypeError):
        mf.parse_batch(pa.array([1, 2, 3]))
    with pytest.raises(TypeError):
        mf.parse_batch("a single string")
    with pytest.raises(TypeError):
        mf.parse(b"bytes")  # type: ignore[arg-type]


def test_output_shares_input_buffers():
    text = (
        "<think><|block_start|> " + "long block text " * 100 + " <|block_end|>"
        "<|summary_start|> a memento that is long enough <|summary_end|></think> the answer is here"
    )
    for typ in (pa.string(), pa.large_string(), pa.string_view()):
        col = pa.array([text] * 3, type=typ)
        data_addresses = {b.address for b in col.buffers()[2:] if b is not None}
        batch = mf.parse_batch(col)
        blocks = batch.column("blocks").values
        # A string_view array's buffers: validity, views, then the data buffers (variadic).
        out_addresses = {b.address for b in blocks.buffers()[2:] if b is not None}
        assert out_addresses <= data_addresses or all(
            any(a <= o < a + col.buffers()[2].size for a in data_addresses) for o in out_addresses
        ), typ


def test_peak_memory_well_below_column_size():
    rows = synthetic.generate_bytes(40 << 20, seed=11)
    col = pa.array(rows, type=pa.large_string())
    size = col.buffers()[2].size
    before = pa.total_allocated_bytes()
    batch = mf.parse_batch(col)
    grew = pa.total_allocated_bytes() - before
    assert batch.num_rows == len(rows)
    # Only views and counters are allocated (by Rust, outside pyarrow's pool): nothing near the text size.
    assert grew < size / 3


# --- statuses and strict mode ----------------------------------------------------------------

OK_ROW = "<think>\n<|block_start|> step <|block_end|>\n<|summary_start|> s <|summary_end|>\n</think>\nanswer"
CRAFTED = {
    "ok": (OK_ROW, None),
    "empty": (" \n ", 0),
    "no_think": ("plain answer", 0),
    "no_blocks": ("<think> raw reasoning </think> 4", 7),
    "text_before_think": ("hi " + OK_ROW, 0),
    "unit_outside_think": (OK_ROW + "<|block_start|>", len(OK_ROW)),
    "stray_delimiter": (
        "<think><|block_end|><|block_start|>a<|block_end|><|summary_start|>b<|summary_end|></think>",
        7,
    ),
    "unclosed_think": ("<think><|block_start|>a<|block_end|><|summary_start|>b<|summary_end|>", 0),
    "unclosed_block": ("<think><|block_start|>a<|block_end|><|summary_start|>b<|summary_end|><|block_start|>cut", 69),
    "nested_block": ("<think><|block_start|>a<|block_start|>b<|block_end|><|block_end|>", 23),
    "block_without_summary": (
        "<think><|block_start|>a<|block_end|>\n<|block_start|>b<|block_end|><|summary_start|>s<|summary_end|></think>",
        7,
    ),
    "summary_without_block": (
        "<think><|summary_start|>s<|summary_end|><|block_start|>a<|block_end|>"
        "<|summary_start|>b<|summary_end|></think>",
        7,
    ),
    "unclosed_summary": ("<think><|block_start|>a<|block_end|><|summary_start|>s</think>", 36),
    "text_between_units": (
        "<think><|block_start|>a<|block_end|><|summary_start|>s<|summary_end|> oops "
        "<|block_start|>b<|block_end|><|summary_start|>t<|summary_end|></think>",
        70,
    ),
    "empty_block": ("<think><|block_start|> \n <|block_end|><|summary_start|>s<|summary_end|></think>", 7),
    "empty_summary": ("<think><|block_start|>a<|block_end|><|summary_start|>\u3000<|summary_end|></think>", 36),
    "placeholder_summary": (
        "<think><|block_start|>a<|block_end|><|summary_start|> [Missing summary] <|summary_end|></think>",
        54,
    ),
    "count_mismatch": (
        '<think><|block_start|>print("<|summary_start|>x<|summary_end|>")<|block_end|>'
        "<|summary_start|>s<|summary_end|></think>",
        29,
    ),
    "delimiter_in_content": (
        '<think><|block_start|>s = "<think>"<|block_end|><|summary_start|>s<|summary_end|></think>',
        27,
    ),
}


def test_every_status_is_documented_and_crafted():
    assert set(CRAFTED) == set(mf.STATUSES)
    assert all(mf.STATUSES.values())


@pytest.mark.parametrize("status", sorted(CRAFTED))
def test_crafted_status(status):
    text, offset = CRAFTED[status]
    row = mf.parse_batch([text]).to_pylist()[0]
    assert (row["status"], row["error_offset"]) == (status, offset)
    assert mf.parse(text).status == status
    if status == "placeholder_summary":
        assert text.encode()[offset:].startswith(b"[Missing summary]")


def test_summarization_failed_placeholder():
    text = "<think><|block_start|>a<|block_end|><|summary_start|>Summarization failed<|summary_end|></think>"
    assert mf.parse(text).status == "placeholder_summary"


def test_strict_names_row_offset_and_problem():
    rows = [OK_ROW, None, OK_ROW, CRAFTED["nested_block"][0]]
    assert mf.parse_batch(rows[:3], strict=True).num_rows == 3
    with pytest.raises(mf.MementoFormatError) as info:
        mf.parse_batch(rows, strict=True)
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, mf.MementoError)
    assert (err.row, err.offset, err.status) == (3, 23, "nested_block")
    assert "row 3" in str(err) and "byte 23" in str(err)


# --- threads, concurrency, panics ------------------------------------------------------------


def test_threads_give_identical_results():
    rows = synthetic.generate_bytes(6 << 20, seed=5, malformed_rate=0.2)
    col = pa.array(rows, type=pa.large_string())
    one = mf.parse_batch(col, threads=1, spans=True)
    assert mf.parse_batch(col, threads=2, spans=True).equals(one)
    assert mf.parse_batch(col, spans=True).equals(one)
    with pytest.raises(mf.MementoValueError):
        mf.parse_batch(col, threads=0)


def test_concurrent_python_threads():
    rows = synthetic.generate_bytes(4 << 20, seed=9, malformed_rate=0.2)
    col = pa.array(rows)
    expected = mf.parse_batch(col)
    results: list[pa.RecordBatch] = []
    errors: list[BaseException] = []

    def work():
        try:
            for _ in range(3):
                results.append(mf.parse_batch(col))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 18 and all(r.equals(expected) for r in results)


def test_rust_panic_becomes_python_exception():
    with pytest.raises(mf.MementoInternalError, match="deliberate panic"):
        mf._core._debug_panic()
    # The interpreter and the module still work afterwards.
    assert mf.parse(OK_ROW).status == "ok"


def test_adversarial_inputs_do_not_crash():
    for kind in synthetic.ADVERSARIAL_KINDS:
        text = synthetic.adversarial(kind, 1 << 16)  # the reference is quadratic on some kinds
        row = mf.parse_batch([text], spans=True).to_pylist()[0]
        assert row["status"] in mf.STATUSES
        assert_lossless([text], mf.parse_batch([text], spans=True))
        exp = expected_row(text)
        assert row["n_blocks"] == exp["n_blocks"] and row["block_chars"] == exp["block_chars"]
