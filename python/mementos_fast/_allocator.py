"""Allocator choices made at import, before the libraries they concern load.

The compiled core allocates with mimalloc. Each tokenized-export slice allocates its token
columns (~20 bytes per token) and frees them once written; mimalloc purges freed memory after
``MIMALLOC_PURGE_DELAY`` milliseconds, and the pages of the next slice are then faulted in and
zeroed again by the kernel. :func:`retain_freed_memory` sets a 10 s delay (mimalloc reads the
variable when the core's library loads; a user's setting stands): freed memory is reused for that
long before it goes back to the OS (to compare, run benches/bench_export_tokenized.py with
``MIMALLOC_PURGE_DELAY=1000``). pyarrow's default pool is mimalloc too, and reads the same
variable when ``libarrow`` loads.

pyarrow's pool is left as pyarrow chooses it (``ARROW_DEFAULT_MEMORY_POOL``, mimalloc by default).
Until stop 20 importing the package set it to jemalloc, for ``analyze``; on a machine about twice
as fast as the one that choice was measured on, Arrow's jemalloc kept about a second of freed
read buffers (its ``dirty_decay_ms``), 250 MiB or so, and took the tokenized export of 274 MB over
1 GiB of RSS (998-1,086 MiB in four runs of stop 19's code, by hand; with a tokenizer load's
memory handed back, 933-1,030 MiB with jemalloc against 781-806 MiB with pyarrow's mimalloc), while
``analyze --tokenizer`` was faster with mimalloc in both benchmark runs of the day that compared
them (reports/BENCHMARKS_tokens-jemalloc1/2_2026-11-30.md; by hand, alternating processes gave
jemalloc the edge by about 5%, and the 2026-11-29 report at 256 MB by 27%: the pools' order moves
with the machine). benches/bench_analyze_tokens.py compares ``analyze_tokenizer_qwen3`` with
``analyze_tokenizer_qwen3_jemalloc``, which sets ``ARROW_DEFAULT_MEMORY_POOL=jemalloc``.

This module imports nothing heavy; importing it makes the choice, and ``mementos_fast/__init__.py``
imports it before anything that imports the compiled core.
"""

from __future__ import annotations

import os
import sys

PURGE_DELAY = "MIMALLOC_PURGE_DELAY"
PURGE_DELAY_MS = "10000"


def retain_freed_memory() -> bool:
    """Set ``MIMALLOC_PURGE_DELAY`` (10 s) for the compiled core's mimalloc when it has not loaded
    yet and nobody chose a delay; whether it was set."""
    if PURGE_DELAY in os.environ or "mementos_fast._core" in sys.modules:
        return False
    os.environ[PURGE_DELAY] = PURGE_DELAY_MS
    return True


retain_freed_memory()
