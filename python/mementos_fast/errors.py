"""The exception hierarchy: everything raised on purpose derives from :class:`MementoError`.

The classes are created once, in Rust, when the compiled module is imported
(rust/mementos-py/src/errors.rs), so an error raised by the core and one raised here are the same
class. ``MementoTypeError`` and ``MementoValueError`` also derive from ``TypeError`` and
``ValueError``; ``MementoFormatError(row, offset, status, detail="")`` carries those four
attributes (its message is ``row {row}: {status} at byte {offset}: {detail}``) and pickles.
"""

from __future__ import annotations

from mementos_fast._core import (
    MementoError,
    MementoFormatError,
    MementoInternalError,
    MementoTypeError,
    MementoUnsupportedTokenizer,
    MementoValueError,
)

__all__ = [
    "MementoError",
    "MementoFormatError",
    "MementoInternalError",
    "MementoTypeError",
    "MementoUnsupportedTokenizer",
    "MementoValueError",
]
