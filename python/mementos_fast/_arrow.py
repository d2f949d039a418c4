"""Turning what users pass into Arrow string data, without copying when it already is Arrow."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from mementos_fast.errors import MementoTypeError


def as_arrow_strings(column: Any) -> Any:
    """Return ``column`` as something exposing the Arrow PyCapsule interface.

    Arrow data (pyarrow arrays and chunked arrays, polars Series, arro3, nanoarrow...) is passed
    through untouched: the Rust core reads it by ``__arrow_c_array__`` / ``__arrow_c_stream__``.
    A Python iterable of ``str`` (or ``None``) is converted once with ``pyarrow.array``.
    """
    if hasattr(column, "__arrow_c_array__") or hasattr(column, "__arrow_c_stream__"):
        if hasattr(column, "__arrow_c_schema__") and not (
            hasattr(column, "__arrow_c_array__") or hasattr(column, "__arrow_c_stream__")
        ):
            raise MementoTypeError("expected Arrow string data, got a schema")
        return column
    if isinstance(column, (str, bytes)):
        raise MementoTypeError("expected a column of traces, got a single string: use mementos_fast.parse(text)")
    if isinstance(column, Iterable):
        try:
            return pa.array(list(column), type=pa.large_string())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise MementoTypeError(f"expected strings (or None): {e}") from e
    raise MementoTypeError(f"expected Arrow string data or a list of str, got {type(column).__name__}")
