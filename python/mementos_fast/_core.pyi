"""Type stubs for the compiled module ``mementos_fast._core`` (checked with mypy.stubtest)."""

import os
from typing import Any, final

import pyarrow as pa

__version__: str
BUILD_PROFILE: str

# The exception hierarchy (rust/mementos-py/src/errors.rs; re-exported by mementos_fast.errors)
class MementoError(Exception): ...
class MementoInternalError(MementoError): ...
class MementoTypeError(MementoError, TypeError): ...
class MementoValueError(MementoError, ValueError): ...
class MementoUnsupportedTokenizer(MementoValueError): ...

class MementoFormatError(MementoError, ValueError):
    row: int
    offset: int | None
    status: str
    detail: str
    def __init__(self, row: int, offset: int | None, status: str, detail: str = "") -> None: ...
    def __reduce__(self) -> tuple[type[MementoFormatError], tuple[int, int | None, str, str]]: ...

# Names and lists the package reads from here instead of copying them (each in its Rust enum's order)
DELIMITERS: tuple[str, ...]
STATUSES: list[tuple[str, str]]
ALIGN_STATUSES: list[tuple[str, str]]
BLOCK_MATCHES: list[str]
SPAN_KINDS: list[str]
SEGMENTS: tuple[str, ...]
IGNORE_INDEX: int
EVICT_NEVER: int

@final
class Parsed:
    @property
    def blocks(self) -> list[str]: ...
    @property
    def summaries(self) -> list[str]: ...
    @property
    def reasoning(self) -> str | None: ...
    @property
    def final_answer(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def error_offset(self) -> int | None: ...
    @property
    def spans(self) -> list[tuple[str, int, int]]: ...

def parse_batch(column: Any, *, spans: bool = False, threads: int | None = None) -> pa.RecordBatch: ...
def parse(text: str) -> Parsed: ...
def _debug_panic() -> None: ...
def _count_byte(column: Any, byte: int) -> int: ...
def compress_batch(
    column: Any,
    keep_last_k: int = 1,
    *,
    style: str = "tutorial",
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
    threads: int | None = None,
) -> pa.Array: ...
def compress(
    text: str,
    keep_last_k: int = 1,
    *,
    style: str = "tutorial",
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
) -> str: ...
def replay_batch(
    column: Any,
    keep_last_k: int = 0,
    *,
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
    prompt_len: int = 0,
    prompt_lens: list[int] | None = None,
    prompt: Any = None,
    require_assistant_section: bool = True,
    counter: TokenCounter | None = None,
    threads: int | None = None,
) -> pa.RecordBatch: ...
def replay_curve(
    text: str,
    keep_last_k: int = 0,
    *,
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
    prompt_len: int = 0,
    counter: TokenCounter | None = None,
) -> list[tuple[int, int, bool]]: ...
def eviction_plan(
    column: Any,
    keep_last_k: int = 0,
    *,
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
    threads: int | None = None,
) -> pa.RecordBatch: ...
def align_full_batch(
    response: Any, sentences: Any, blocks: Any, block_summaries: Any, *, threads: int | None = None
) -> pa.RecordBatch: ...

# Token counting (rust/mementos-py/src/tokens.rs; public API in mementos_fast.tokens)
TOKEN_BACKENDS: list[str]

@final
class TokenCounter:
    def __new__(cls, tokenizer_json: str, backend: str = "hf") -> TokenCounter: ...
    @staticmethod
    def fast_from_file(path: str | os.PathLike[str]) -> TokenCounter: ...
    @property
    def backend(self) -> str: ...
    def count(self, text: str) -> int: ...
    def count_piece(self, text: str) -> int: ...

def count_tokens(
    column: Any, counter: TokenCounter, *, threads: int | None = None, stripped: bool = True
) -> pa.RecordBatch: ...
def count_totals(column: Any, counter: TokenCounter, *, threads: int | None = None) -> pa.RecordBatch: ...
def analyze_tokens(
    column: Any,
    counter: TokenCounter,
    *,
    prompts: Any = None,
    keep_last_k: int = 0,
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
    threads: int | None = None,
) -> pa.RecordBatch: ...

@final
class FastBpe:
    def __new__(cls, json: str) -> FastBpe: ...
    def count(self, text: str) -> int: ...
    def encode(self, text: str) -> list[int]: ...
    def count_batch(self, column: Any, threads: int | None = None) -> pa.Int64Array: ...

@final
class Exporter:
    def __new__(cls, tokenizer_json: str, backend: str = "auto") -> Exporter: ...
    @staticmethod
    def from_file(path: str | os.PathLike[str], backend: str = "auto") -> Exporter: ...
    @property
    def delimiter_ids(self) -> dict[str, int]: ...
    @property
    def backend(self) -> str: ...
    @property
    def fast_refused(self) -> str | None: ...

def export_tokenized(
    problem: Any,
    response: Any,
    exporter: Exporter,
    *,
    keep_last_k: int = 0,
    mask_delimiters: bool = False,
    keep_last_block_for_answer: bool = False,
    restart_mode: bool = False,
    compact_on_summary_end: bool = True,
    system_prompt: str | None = None,
    max_length: int | None = None,
    overflow: str = "truncate",
    pack: int | None = None,
    threads: int | None = None,
) -> tuple[list[pa.RecordBatch], pa.RecordBatch, pa.RecordBatch | None]: ...
