"""mementos_fast: fast tools for MEMENTO reasoning traces (OpenMementos) over Arrow.

The heavy lifting happens in a Rust core (``mementos_fast._core``) that scans the six delimiters
in one linear pass and returns Arrow arrays that share the input's buffers. See README.md.
"""

from __future__ import annotations

import warnings

# First: sets the core's mimalloc purge delay before the core loads.
import mementos_fast._allocator as _allocator  # noqa: F401
import mementos_fast._core as _core
from mementos_fast import errors
from mementos_fast.compaction import (
    MODELS,
    KVShape,
    compress,
    compress_batch,
    eviction_plan,
    replay_batch,
    replay_curve,
)
from mementos_fast.errors import *  # noqa: F403  (the exception classes: errors.__all__)
from mementos_fast.export import export_sft
from mementos_fast.full import align_full_batch, assemble_response
from mementos_fast.loading import load
from mementos_fast.parsing import STATUSES, Parsed, parse, parse_batch
from mementos_fast.parsing import raise_first_problem as raise_first_problem
from mementos_fast.tokenizer import LoadedTokenizer, load_tokenizer, qwen3_tokenizer_path
from mementos_fast.tokens import count_tokens

__version__: str = _core.__version__

__all__ = [
    "MODELS",
    "STATUSES",
    "FastBpe",
    "KVShape",
    "LoadedTokenizer",
    "Parsed",
    "__version__",
    "align_full_batch",
    "assemble_response",
    "compress",
    "compress_batch",
    "count_tokens",
    "eviction_plan",
    "export_sft",
    "load",
    "load_tokenizer",
    "parse",
    "parse_batch",
    "qwen3_tokenizer_path",
    "replay_batch",
    "replay_curve",
]
__all__ += errors.__all__

if _core.BUILD_PROFILE != "release":
    warnings.warn(
        "mementos_fast was built in debug mode and will be much slower; "
        "install it with `pip install .` or `maturin develop --release`.",
        RuntimeWarning,
        stacklevel=2,
    )

#: Exact byte-level BPE token counter (GPT-2, Qwen2/Qwen3, Llama-3 ``tokenizer.json``); see
#: docs/FAST_BPE.md. ``FastBpe(json_text)``, ``.count(text)``, ``.encode(text)``,
#: ``.count_batch(column, threads=None)``.
FastBpe = _core.FastBpe
