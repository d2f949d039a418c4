"""What the compiled module promises every caller: one exception hierarchy created in Rust, the same
class for the same bad input from every entry point, and the names the package reads from ``_core``
instead of copying them."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pytest

import mementos_fast as mf
from mementos_fast import _core, errors


def test_one_hierarchy_created_in_rust():
    for name in errors.__all__:
        cls = getattr(_core, name)
        assert getattr(errors, name) is cls
        assert getattr(mf, name) is cls
        assert cls.__module__ == "mementos_fast.errors"
        assert cls.__doc__
    assert mf.MementoTypeError.__mro__[1:3] == (mf.MementoError, TypeError)
    assert mf.MementoValueError.__mro__[1:3] == (mf.MementoError, ValueError)
    assert mf.MementoUnsupportedTokenizer.__bases__ == (mf.MementoValueError,)
    assert mf.MementoFormatError.__bases__ == (mf.MementoError, ValueError)
    assert mf.MementoInternalError.__bases__ == (mf.MementoError,)
    assert mf.MementoError.__bases__ == (Exception,)


def test_format_error_message_attributes_pickle():
    e = mf.MementoFormatError(3, 17, "nested_block", "a block inside a block")
    assert str(e) == "row 3: nested_block at byte 17: a block inside a block"
    assert (e.row, e.offset, e.status, e.detail) == (3, 17, "nested_block", "a block inside a block")
    assert str(mf.MementoFormatError(0, None, "no_think")) == "row 0: no_think at byte None"
    assert str(mf.MementoFormatError(row=1, offset=2, status="s", detail="")) == "row 1: s at byte 2"
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is mf.MementoFormatError
    assert (back.row, back.offset, back.status, back.detail, str(back)) == (3, 17, "nested_block", e.detail, str(e))
    with pytest.raises(TypeError, match="status"):
        mf.MementoFormatError(1, 2)
    # Every class pickles (Ray and multiprocessing send them between processes).
    for cls in (mf.MementoError, mf.MementoValueError, mf.MementoTypeError, mf.MementoUnsupportedTokenizer):
        back = pickle.loads(pickle.dumps(cls("why")))
        assert type(back) is cls and str(back) == "why"


def test_strict_parse_raises_the_rust_class():
    with pytest.raises(mf.MementoFormatError) as info:
        mf.parse_batch(["<think> no end"], strict=True)
    assert isinstance(info.value, ValueError) and info.value.row == 0


def _entry_points():
    """Every column function of `_core`, called with `column` and `threads`."""
    col_fns = {
        "parse_batch": lambda c, t: _core.parse_batch(c, threads=t),
        "compress_batch": lambda c, t: _core.compress_batch(c, threads=t),
        "compress_batch_inplace": lambda c, t: _core.compress_batch(c, style="inplace", threads=t),
        "replay_batch": lambda c, t: _core.replay_batch(c, threads=t),
        "eviction_plan": lambda c, t: _core.eviction_plan(c, threads=t),
    }
    return col_fns


@pytest.mark.parametrize("name", sorted(_entry_points()))
def test_same_bad_input_same_class(name):
    fn = _entry_points()[name]
    with pytest.raises(mf.MementoValueError, match="threads must be at least 1"):
        fn(pa.array(["<think>x</think>"]), 0)
    with pytest.raises(mf.MementoTypeError, match="expected an Arrow string array"):
        fn(pa.array([1, 2]), None)
    fn(pa.array(["<think>x</think>", None]), 2)  # and good input works on a pool of two


def test_constants_come_from_core():
    from mementos_fast import full, tokenizer

    assert tokenizer.DELIMITERS is _core.DELIMITERS
    assert _core.DELIMITERS == (
        "<think>",
        "</think>",
        "<|block_start|>",
        "<|block_end|>",
        "<|summary_start|>",
        "<|summary_end|>",
    )
    assert dict(_core.STATUSES) == mf.STATUSES
    assert next(iter(mf.STATUSES)) == "ok"
    assert dict(_core.ALIGN_STATUSES) == full.ALIGN_STATUSES
    assert next(iter(full.ALIGN_STATUSES)) == "ok" and len(full.ALIGN_STATUSES) == 8
    assert _core.BLOCK_MATCHES == ["exact", "whitespace", "different"]
    # The Arrow columns use these lists as their codes / dictionaries.
    spans = mf.parse_batch(["<think>\n<|block_start|> a <|block_end|>\n</think>\nb"], spans=True)
    kinds = spans.column("spans")[0].values.field("kind").dictionary.to_pylist()
    assert kinds == _core.SPAN_KINDS
    status = mf.parse_batch(["x"]).column("status")
    assert status.dictionary.to_pylist() == [name for name, _ in _core.STATUSES]
    assert _core.SEGMENTS[0] == "chat" and _core.SEGMENTS[-1] == "answer"


STATUS = pa.dictionary(pa.int8(), pa.string())
INT_LIST = pa.list_(pa.field("item", pa.int32(), nullable=False))
OFFSETS = pa.list_(pa.int64())

#: The columns of every batch `_core` returns, in order (Rust declares each once; the schema and the
#: order are derived from that declaration). Optional columns are marked with the option they need.
OUTPUTS = {
    "parse_batch": [
        ("blocks", pa.list_(pa.field("item", pa.string_view(), nullable=False))),
        ("summaries", pa.list_(pa.field("item", pa.string_view(), nullable=False))),
        ("reasoning", pa.string_view()),
        ("final_answer", pa.string_view()),
        ("n_blocks", pa.int32()),
        ("n_summaries", pa.int32()),
        ("block_chars", pa.int64()),
        ("summary_chars", pa.int64()),
        ("block_words", pa.int64()),
        ("summary_words", pa.int64()),
        ("status", STATUS),
        ("error_offset", pa.int64()),
        ("block_char_counts", INT_LIST),
        ("summary_char_counts", INT_LIST),
        ("block_word_counts", INT_LIST),
        ("summary_word_counts", INT_LIST),
        ("spans", "spans"),
    ],
    "align_full_batch": [
        ("status", STATUS),
        ("problem_block", pa.int32()),
        ("n_sentences", pa.int32()),
        ("n_blocks", pa.int32()),
        ("n_block_summaries", pa.int32()),
        ("n_response_blocks", pa.int32()),
        ("n_response_summaries", pa.int32()),
        ("blocks_exact", pa.int32()),
        ("blocks_whitespace", pa.int32()),
        ("blocks_different", pa.int32()),
        ("summaries_equal", pa.int32()),
        ("min_similarity", pa.float64()),
        ("block_match", pa.list_(pa.field("item", pa.string(), nullable=False))),
        ("block_similarity", pa.list_(pa.field("item", pa.float32(), nullable=False))),
    ],
    "replay_batch": [
        ("prompt_len", pa.int64()),
        ("total_len", pa.int64()),
        ("peak_len", pa.int64()),
        ("mean_len", pa.float64()),
        ("final_len", pa.int64()),
        ("kv_auc", pa.int64()),
        ("full_peak_len", pa.int64()),
        ("full_mean_len", pa.float64()),
        ("full_kv_auc", pa.int64()),
        ("peak_ratio", pa.float64()),
        ("mean_ratio", pa.float64()),
        ("recomputed_len", pa.int64()),
        ("complete_blocks", pa.int32()),
        ("evicted_blocks", pa.int32()),
    ],
    "eviction_plan": [
        ("n_blocks", pa.int32()),
        ("n_complete", pa.int32()),
        ("n_evicted", pa.int32()),
        *[
            (name, OFFSETS)
            for name in (
                "block_start",
                "block_end",
                "summary_start",
                "summary_end",
                "trigger",
                "evict_start",
                "evict_end",
                "rewind_to",
            )
        ],
    ],
    "count_tokens": [
        ("total_tokens", pa.int64()),
        ("block_tokens", INT_LIST),
        ("summary_tokens", INT_LIST),
        ("block_tokens_stripped", "stripped"),
        ("summary_tokens_stripped", "stripped"),
        ("block_tokens_total", pa.int64()),
        ("summary_tokens_total", pa.int64()),
        ("compression_ratio", pa.float64()),
        ("think_preamble_tokens", pa.int64()),
        ("between_tokens", pa.int64()),
        ("answer_tokens", pa.int64()),
        ("span_tokens", INT_LIST),
    ],
    "analyze_tokens": [
        ("response_tokens", pa.int64()),
        ("prompt_tokens", "prompts"),
        ("block_tokens", pa.int64()),
        ("summary_tokens", pa.int64()),
        ("token_ratio", pa.float64()),
        ("replay_peak_tokens", pa.int64()),
        ("replay_mean_tokens", pa.float64()),
        ("kv_auc_tokens", pa.int64()),
        ("replay_full_peak_tokens", pa.int64()),
    ],
}


def _check_columns(batch: pa.RecordBatch, fn: str, option: str | None):
    """`batch` has exactly the columns of OUTPUTS[fn] (those needing `option` only with it)."""
    expect = [(n, t) for n, t in OUTPUTS[fn] if not isinstance(t, str) or t == option]
    assert batch.schema.names == [n for n, _ in expect], fn
    for name, t in expect:
        if not isinstance(t, str):
            assert batch.schema.field(name).type == t, (fn, name)


def _traces() -> pa.Array:
    from mementos_fast import synthetic

    return pa.array([r["response"] for r in synthetic.generate_rows(12, seed=3, malformed_rate=0.4)] + [None])


def test_engine_outputs_columns_pinned():
    from mementos_fast import synthetic

    col = _traces()
    _check_columns(_core.parse_batch(col), "parse_batch", None)
    _check_columns(_core.parse_batch(col, spans=True), "parse_batch", "spans")
    _check_columns(
        mf.align_full_batch(synthetic.generate_full_table(12, seed=3, corrupt_rate=0.5)), "align_full_batch", None
    )
    _check_columns(_core.replay_batch(col), "replay_batch", None)
    _check_columns(_core.eviction_plan(col), "eviction_plan", None)


def test_token_outputs_columns_pinned():
    try:
        tok = mf.load_tokenizer(mf.qwen3_tokenizer_path())
    except mf.MementoValueError as e:
        pytest.skip(str(e))
    from mementos_fast import tokens

    col = _traces()
    _check_columns(mf.count_tokens(col, tok), "count_tokens", "stripped")
    _check_columns(mf.count_tokens(col, tok, stripped=False), "count_tokens", None)
    _check_columns(tokens.analyze_tokens(col, tok), "analyze_tokens", None)
    problems = pa.array(["What is 6 x 7?"] * len(col))
    _check_columns(tokens.analyze_tokens(col, tok, problem=problems), "analyze_tokens", "prompts")


def test_one_status_representation():
    """`status` is the same type in parse and align output: int8 codes into a dictionary that lists
    every status of that function in code order (`_core.STATUSES` / `_core.ALIGN_STATUSES`)."""
    from mementos_fast import synthetic

    parsed = mf.parse_batch(_traces()).column("status")
    aligned = mf.align_full_batch(synthetic.generate_full_table(40, seed=5, corrupt_rate=0.6)).column("status")
    assert parsed.type == aligned.type == STATUS
    assert parsed.dictionary.to_pylist() == [name for name, _ in _core.STATUSES]
    assert aligned.dictionary.to_pylist() == [name for name, _ in _core.ALIGN_STATUSES]
    assert len(set(aligned.to_pylist())) > 2  # several statuses, decoded to their names
