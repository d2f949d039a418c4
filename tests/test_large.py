"""Columns beyond 2 GiB and 4 GiB: 64-bit offsets, view windows over a >4 GiB values buffer.

These allocate about 9 GB, so the default test run (which must fit a laptop: under 3 GB of RSS)
leaves them out: run them with ``MEMENTOS_LARGE_TESTS=1 python -m pytest tests/test_large.py``
(CI does, as a separate step). They are skipped when less than 14 GB is available.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

import mementos_fast as mf
from mementos_fast import synthetic


def available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


_opted_in = os.environ.get("MEMENTOS_LARGE_TESTS") == "1"
needs_memory = pytest.mark.skipif(
    not _opted_in or available_bytes() < 14 * 2**30,
    reason="allocates ~9 GB: set MEMENTOS_LARGE_TESTS=1 (and have ~14 GB free) to run it",
)


@pytest.fixture(scope="module")
def unit() -> pa.Array:
    return pa.array(synthetic.generate_bytes(64 << 20, seed=21, malformed_rate=0.05), type=pa.large_string())


def check_repeats(batch: pa.RecordBatch, unit_batch: pa.RecordBatch, reps: int) -> None:
    n = unit_batch.num_rows
    assert batch.num_rows == n * reps
    for col in ("n_blocks", "block_chars", "summary_words", "status", "error_offset"):
        assert batch.column(col).slice((reps - 1) * n, n).equals(unit_batch.column(col)), col
    # Text views in the last copy (beyond 4 GiB) resolve to the same strings as in the first.
    last = batch.slice((reps - 1) * n, 50)
    assert last.column("blocks").to_pylist() == unit_batch.slice(0, 50).column("blocks").to_pylist()
    assert last.column("final_answer").to_pylist() == unit_batch.slice(0, 50).column("final_answer").to_pylist()


@needs_memory
def test_large_string_beyond_4_gib(unit):
    reps = -(-(4 * 2**30 + 2**28) // unit.buffers()[2].size)  # > 4 GiB of text in one buffer
    col = pa.concat_arrays([unit] * reps)
    assert col.buffers()[2].size > 2**32
    unit_batch = mf.parse_batch(unit)
    check_repeats(mf.parse_batch(col), unit_batch, reps)
    del col


@needs_memory
def test_string_view_beyond_2_gib(unit):
    view_unit = unit.cast(pa.string_view())
    reps = -(-(2**31 + 2**28) // unit.buffers()[2].size)
    col = pa.chunked_array([view_unit] * reps)
    unit_batch = mf.parse_batch(view_unit)
    check_repeats(mf.parse_batch(col), unit_batch, reps)
