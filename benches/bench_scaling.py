"""Cost against trace size, on realistic and adversarial single rows.

mementos_fast should cost the same per byte at 1 KB and at 64 MB per row; the regex reference
goes quadratic on some adversarial inputs (thousands of unclosed `<|block_start|>`): each start
makes the non-greedy search scan to the end of the row. The reference is only run up to a size
where it finishes in seconds; its growth is visible within that range.

Run: pytest benches/bench_scaling.py --benchmark-only
"""

from __future__ import annotations

import pyarrow as pa
import pytest

import mementos_fast as mf
from mementos_fast import reference, synthetic

KB = 1 << 10
SIZES = [1 * KB, 16 * KB, 64 * KB, 256 * KB, 4096 * KB, 65536 * KB]
SMALL_SIZES = [1 * KB, 16 * KB]
# Largest row the reference is timed on, per input kind. It is quadratic on unclosed starts (each
# `<|block_start|>` without an end rescans to the end of the row) and on `no_whitespace` (a run of
# `<think>` with no `</think>`: the think regex rescans from every start).
REFERENCE_CAP = {
    "realistic": 4096 * KB,
    "unclosed_starts": 256 * KB,
    "many_lt_pipe": 4096 * KB,
    "no_whitespace": 256 * KB,
    "split_delimiters": 4096 * KB,
}
KINDS = list(REFERENCE_CAP)

_rows: dict[tuple[str, int], str] = {}


def make_row(kind: str, size: int) -> str:
    key = (kind, size)
    if key not in _rows:
        if kind == "realistic":
            # One long trace: realistic blocks repeated inside a single <think>.
            unit = synthetic.generate_trace(__import__("random").Random(5), "math")["response"]
            body = unit[unit.index("<|block_start|>") : unit.rindex("</think>")]
            text = "<think>\n" + body * (size // len(body.encode()) + 1)
            _rows[key] = text[:size] + "\n</think>\nanswer"
        else:
            _rows[key] = synthetic.adversarial(kind, size)
    return _rows[key]


def reference_parse(text: str) -> tuple[int, int]:
    p = reference.parse_trace(text)
    return len(p["blocks"]), sum(len(b) for b in p["blocks"])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s // KB}KB")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("impl", ["reference", "mementos_fast_1core"])
def test_scaling(benchmark, bench_big, impl, kind, size):
    if not bench_big and size not in SMALL_SIZES:
        pytest.skip("large sizes only when measuring (--benchmark-only)")
    if impl == "reference" and size > REFERENCE_CAP[kind]:
        pytest.skip("the reference takes too long beyond this size")
    text = make_row(kind, size)
    nbytes = len(text.encode())
    benchmark.group = f"scaling/{kind}"
    benchmark.extra_info.update(bytes=nbytes, impl=impl, fixture=kind, size=size)
    if impl == "reference":
        result = benchmark.pedantic(reference_parse, args=(text,), rounds=1, iterations=1)
    else:
        col = pa.array([text], type=pa.large_string())
        batch = benchmark.pedantic(mf.parse_batch, args=(col,), kwargs={"threads": 1}, rounds=3, iterations=1)
        result = (batch.column("n_blocks")[0].as_py(), batch.column("block_chars")[0].as_py())
    if impl != "reference" and size <= REFERENCE_CAP[kind]:
        assert result == reference_parse(text)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s // KB}KB")
@pytest.mark.parametrize("kind", ["realistic", "unclosed_starts", "no_whitespace"])
@pytest.mark.parametrize("impl", ["reference", "mementos_fast_1core", "mementos_fast_inplace_1core"])
def test_compress_scaling(benchmark, bench_big, impl, kind, size):
    """compress_batch per row size: linear on every input (the tutorial's compress_trace parses
    with the same regexes, so it inherits their quadratic cases)."""
    if not bench_big and size not in SMALL_SIZES:
        pytest.skip("large sizes only when measuring (--benchmark-only)")
    if impl == "reference" and size > REFERENCE_CAP[kind]:
        pytest.skip("the reference takes too long beyond this size")
    text = make_row(kind, size)
    benchmark.group = f"scaling/compress_{kind}"
    benchmark.extra_info.update(bytes=len(text.encode()), impl=impl, fixture=kind, size=size)
    if impl == "reference":
        out = benchmark.pedantic(reference.compress_trace, args=(text, 1), rounds=1, iterations=1)
        assert isinstance(out, str)
        return
    col = pa.array([text], type=pa.large_string())
    style = "inplace" if "inplace" in impl else "tutorial"
    out = benchmark.pedantic(
        mf.compress_batch, args=(col, 1), kwargs={"style": style, "threads": 1}, rounds=3, iterations=1
    )
    if style == "tutorial" and size <= REFERENCE_CAP[kind] and "</think>" in text:
        assert out[0].as_py() == reference.compress_trace(text, 1)
    if style == "inplace":
        assert len(out[0].as_py()) <= len(text)
