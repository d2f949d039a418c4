"""Allocator choices made at import, before the libraries they concern load.

pyarrow's memory pool for this process: jemalloc, chosen before pyarrow loads.

Arrow reads ``ARROW_DEFAULT_MEMORY_POOL`` once, when ``libarrow`` loads, and every buffer it
allocates (Parquet pages, decompression, the arrays it returns, C++-internal scratch) comes from
that pool; ``pyarrow.set_memory_pool`` afterwards only changes the pool Python-level calls pass
explicitly. Reading Parquet a batch at a time frees and allocates a batch's worth of buffers each
time: jemalloc keeps freed pages for reuse a while instead of handing them back to the OS at
once (``analyze --tokenizer`` of 820 MB took 2.2-2.3 s with it against 2.5-2.6 s with the system
allocator and 2.7-3.1 s with pyarrow's default mimalloc, by hand; benches/bench_analyze_tokens.py
compares ``analyze_tokenizer_qwen3`` with ``analyze_tokenizer_qwen3_mimalloc``).

How long it keeps them is a time, so what it holds grows with the speed of the machine: Arrow's
jemalloc keeps freed pages for 1 s (its ``dirty_decay_ms``), which on a machine twice as fast as
the one the export was first measured on held about 250 MiB of freed read buffers and took the
tokenized export of 274 MB over 1 GiB of RSS (998-1,086 MiB in four runs, by hand). With the
jemalloc choice comes ``JE_ARROW_MALLOC_CONF=dirty_decay_ms:100`` (the rest of Arrow's settings
stand): 883-938 MiB for the same export in four runs, and ``analyze`` within a few percent of
its time before (by hand; a decay of 0 gave 725-760 MiB but made ``analyze`` about a fifth
slower: every batch faulted its pages in again).

Nothing is changed when the user chose a pool (the variable is set; then Arrow's own jemalloc
settings stand too unless ``JE_ARROW_MALLOC_CONF`` is set), when pyarrow is already loaded (too
late: the choice would not apply), or when this pyarrow was built without jemalloc (its
``arrow/util/config.h`` says so; Arrow would print a warning for an unsupported backend).

The compiled core allocates with mimalloc. Each tokenized-export slice allocates its token
columns (~20 bytes per token) and frees them once written; mimalloc purges freed memory after
``MIMALLOC_PURGE_DELAY`` milliseconds, and the pages of the next slice are then faulted in and
zeroed again by the kernel. :func:`retain_freed_memory` sets a 10 s delay (mimalloc reads the
variable when the core's library loads; a user's setting stands): freed memory is reused for that
long before it goes back to the OS (to compare, run benches/bench_export_tokenized.py with
``MIMALLOC_PURGE_DELAY=1000``). Unlike jemalloc's above, this did not move the export's peak
beyond its spread: 929-942 MiB against 883-938 MiB with 1 s, by hand.

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
JEMALLOC_CONF = "JE_ARROW_MALLOC_CONF"
#: Arrow's jemalloc hands freed pages back to the OS after 100 ms instead of 1 s (see above).
JEMALLOC_DECAY = "dirty_decay_ms:100"


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
    can still take effect and nobody chose otherwise, with :data:`JEMALLOC_DECAY` unless
    ``JE_ARROW_MALLOC_CONF`` is set; whether the pool was set."""
    if VARIABLE in os.environ or "pyarrow" in sys.modules or not pyarrow_has_jemalloc():
        return False
    os.environ[VARIABLE] = "jemalloc"
    os.environ.setdefault(JEMALLOC_CONF, JEMALLOC_DECAY)
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
