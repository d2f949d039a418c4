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
