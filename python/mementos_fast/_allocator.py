"""Allocator choices made at import, before the libraries they concern load.

pyarrow's memory pool for this process: jemalloc, chosen before pyarrow loads.

Arrow reads ``ARROW_DEFAULT_MEMORY_POOL`` once, when ``libarrow`` loads, and every buffer it
allocates (Parquet pages, decompression, the arrays it returns, C++-internal scratch) comes from
that pool; ``pyarrow.set_memory_pool`` afterwards only changes the pool Python-level calls pass
explicitly. Reading Parquet a batch at a time frees and allocates a batch's worth of buffers each
time: pyarrow's default (mimalloc) hands those pages back to the OS and faults them in again,
jemalloc keeps them (benches/bench_analyze_tokens.py compares ``analyze_tokenizer_qwen3`` with
``analyze_tokenizer_qwen3_mimalloc``, which sets ``ARROW_DEFAULT_MEMORY_POOL=mimalloc``).

Nothing is changed when the user chose a pool (the variable is set), when pyarrow is already
loaded (too late: the choice would not apply), or when this pyarrow was built without jemalloc
(its ``arrow/util/config.h`` says so; Arrow would print a warning for an unsupported backend).
The compiled core allocates with mimalloc. Each tokenized-export slice allocates its token
columns (~20 bytes per token) and frees them once written; mimalloc purges freed memory after
``MIMALLOC_PURGE_DELAY`` milliseconds, and the pages of the next slice are then faulted in and
zeroed again by the kernel. :func:`retain_freed_memory` sets a 10 s delay (mimalloc reads the
variable when the core's library loads; a user's setting stands): freed memory is reused for that
long before it goes back to the OS (to compare, run benches/bench_export_tokenized.py with
``MIMALLOC_PURGE_DELAY=1000``, mimalloc's default).

This module imports nothing heavy; importing it makes the choices, and ``mementos_fast/__init__.py``
imports it before anything that imports pyarrow or the compiled core.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"
PURGE_DELAY = "MIMALLOC_PURGE_DELAY"
PURGE_DELAY_MS = "10000"


def pyarrow_has_jemalloc() -> bool:
    """Whether the installed pyarrow was built with jemalloc (read from its headers, without
    importing it); False when that cannot be told."""
    try:
        spec = importlib.util.find_spec("pyarrow")
    except (ImportError, ValueError):  # pragma: no cover - a broken installation
        return False
    for location in (spec.submodule_search_locations or []) if spec else []:
        config = Path(location) / "include" / "arrow" / "util" / "config.h"
        try:
            text = config.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        return any(line.split() == ["#define", "ARROW_JEMALLOC"] for line in text.splitlines())
    return False


def prefer_jemalloc() -> bool:
    """Set ``ARROW_DEFAULT_MEMORY_POOL=jemalloc`` for this process (and its children) when that
    can still take effect and nobody chose otherwise; whether it was set."""
    if VARIABLE in os.environ or "pyarrow" in sys.modules or not pyarrow_has_jemalloc():
        return False
    os.environ[VARIABLE] = "jemalloc"
    return True


def jemalloc_for_python_calls() -> None:
    """When pyarrow was loaded before this package (so :func:`prefer_jemalloc` could not act) and
    nobody chose a pool: pyarrow's Python-level calls at least take jemalloc buffers
    (``pyarrow.set_memory_pool``; C++-internal buffers stay on the default pool)."""
    if os.environ.get(VARIABLE):
        return
    import contextlib

    import pyarrow as pa

    with contextlib.suppress(NotImplementedError, AttributeError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())


def retain_freed_memory() -> bool:
    """Set ``MIMALLOC_PURGE_DELAY`` (10 s) for the compiled core's mimalloc when it has not loaded
    yet and nobody chose a delay; whether it was set."""
    if PURGE_DELAY in os.environ or "mementos_fast._core" in sys.modules:
        return False
    os.environ[PURGE_DELAY] = PURGE_DELAY_MS
    return True


prefer_jemalloc()
retain_freed_memory()
