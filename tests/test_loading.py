"""The loader's read-ahead (``loading.prefetch``): same batches, same order, errors where they happen."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest

from mementos_fast import loading


def _batches(n: int, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"bad batch {i}")
        yield pa.record_batch({"response": [f"row {i}"]})


def test_prefetch_keeps_order_and_values():
    got = [b.column(0)[0].as_py() for b in loading.prefetch(_batches(50))]
    assert got == [f"row {i}" for i in range(50)]


def test_prefetch_raises_the_readers_error_at_its_batch():
    it = loading.prefetch(_batches(10, fail_at=3))
    assert [next(it).column(0)[0].as_py() for _ in range(3)] == ["row 0", "row 1", "row 2"]
    with pytest.raises(ValueError, match="bad batch 3"):
        next(it)


def test_prefetch_stops_reading_when_the_consumer_stops():
    read = []

    def slow():
        for i in range(1000):
            read.append(i)
            time.sleep(0.001)
            yield pa.record_batch({"response": [str(i)]})

    before = set(threading.enumerate())
    it = loading.prefetch(slow(), depth=1)
    next(it)
    (reader,) = set(threading.enumerate()) - before
    it.close()
    time.sleep(0.3)
    n = len(read)
    time.sleep(0.2)
    assert len(read) == n <= 4  # the reader stopped, at most a batch or two ahead
    reader.join(timeout=5)
    assert not reader.is_alive()


def test_prefetch_of_nothing():
    assert list(loading.prefetch(iter([]))) == []
