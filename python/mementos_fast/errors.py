"""The exception hierarchy: everything raised on purpose derives from :class:`MementoError`."""

from __future__ import annotations

from mementos_fast._core import MementoError, MementoInternalError

__all__ = [
    "MementoError",
    "MementoFormatError",
    "MementoInternalError",
    "MementoTypeError",
    "MementoUnsupportedTokenizer",
    "MementoValueError",
]


class MementoTypeError(MementoError, TypeError):
    """An argument of the wrong type (for example a column that is not Arrow string data)."""


class MementoValueError(MementoError, ValueError):
    """An argument with an invalid value."""


class MementoUnsupportedTokenizer(MementoValueError):
    """A tokenizer the fast BPE backend cannot reproduce exactly (the message names the feature).

    Callers fall back to Hugging Face ``tokenizers`` for it; counts are never approximated.
    """


class MementoFormatError(MementoError, ValueError):
    """A trace breaks the MEMENTO format (raised by ``strict=True`` modes).

    Attributes: ``row`` (index in the batch), ``offset`` (byte offset in the row's UTF-8 text),
    ``status`` (the status name, see ``mementos_fast.STATUSES``) and ``detail``.
    """

    def __init__(self, row: int, offset: int | None, status: str, detail: str = "") -> None:
        self.row = row
        self.offset = offset
        self.status = status
        self.detail = detail
        msg = f"row {row}: {status} at byte {offset}"
        if detail:
            msg += f": {detail}"
        super().__init__(msg)

    def __reduce__(self):  # keep it picklable across processes (Ray, multiprocessing)
        return (type(self), (self.row, self.offset, self.status, self.detail))
