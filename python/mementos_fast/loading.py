"""Loading OpenMementos-style data as ``pyarrow.RecordBatch`` es, never as Python row dicts.

Sources: ``None`` (the built-in sample), a hub id such as ``microsoft/OpenMementos`` (through
``datasets``, Arrow-formatted), local Parquet or JSONL files (one path or a list), globs, directories laid out like the
hub repository (``data/train-*.parquet`` for ``default``, ``full/train-*.parquet`` for ``full``),
a ``datasets.Dataset`` / ``IterableDataset``, or a pyarrow Table / RecordBatch.

The hub's shards are grouped by domain, so "the first N rows" are all code: ``sample=N`` draws a
deterministic sample spread over every shard (local files: uniform over all rows; hub: shuffled
stream), ``limit=N`` takes the first N rows.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import random
from collections.abc import Generator, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from mementos_fast.errors import MementoValueError

HUB_ID = "microsoft/OpenMementos"
CONFIG_DIRS = {"default": "data", "full": "full"}
DEFAULT_BATCH_SIZE = 1024


def sample_path() -> Path:
    """The built-in sample shipped in the package (hand-written traces, not real data)."""
    return Path(str(resources.files("mementos_fast").joinpath("data").joinpath("sample.jsonl")))


def resolve_files(source: str | os.PathLike, config: str = "default", split: str = "train") -> list[Path]:
    """Local files for ``source``: a file, a glob, or a directory (hub layout or flat).

    Raises :class:`MementoValueError` naming ``source`` when nothing readable is there."""
    s = os.path.expanduser(str(source))
    if any(ch in s for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(s) if os.path.isfile(p))
        if not files:
            raise MementoValueError(f"{source}: no file matches this pattern")
        return files
    p = Path(s)
    if p.is_file():
        return [p]
    if not p.exists():
        raise MementoValueError(f"{source}: no such file or directory (a hub dataset is named like owner/name)")
    if not p.is_dir():
        raise MementoValueError(f"{source}: not a regular file or directory")
    sub = p / CONFIG_DIRS.get(config, config)
    base = sub if sub.is_dir() else p
    files = sorted(base.glob(f"{split}-*.parquet")) or sorted(base.glob("*.parquet")) or sorted(base.glob("*.jsonl"))
    if not files:
        raise MementoValueError(
            f"{source}: no Parquet or JSONL files in this directory (looked for "
            f"{CONFIG_DIRS.get(config, config)}/{split}-*.parquet, *.parquet, *.jsonl)"
        )
    return files


def _looks_like_path(source: str) -> bool:
    """A string meant as a local path rather than a hub id (``owner/name`` or ``name``)."""
    return (
        source.startswith(("/", "./", "../", "~", "."))
        or source.count("/") > 1
        or "\\" in source
        or source.endswith("/")
    )


def _is_local(source: str) -> bool:
    return (
        os.path.exists(os.path.expanduser(source))
        or any(ch in source for ch in "*?[")
        or source.endswith((".parquet", ".jsonl", ".json"))
        or _looks_like_path(source)
    )


def _reason(e: BaseException) -> str:
    """The first line of a pyarrow error, without pyarrow's own hints."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _parquet(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except pa.ArrowCancelled:  # Ctrl-C inside pyarrow: an interrupt, not a bad file
        raise KeyboardInterrupt from None
    except (pa.ArrowException, OSError) as e:
        if path.stat().st_size == 0:
            raise MementoValueError(f"{path}: empty file (0 bytes), not a Parquet file") from None
        raise MementoValueError(
            f"{path}: not a readable Parquet file ({_reason(e)}); is it truncated or still being written?"
        ) from None


def _read_json(path: Path) -> pa.Table:
    """A JSON Lines file as one table. pyarrow reads JSON in blocks that must each hold whole
    rows; rows of several MB exist (long traces), so the block grows until the longest row fits."""
    size = path.stat().st_size
    if size == 0:
        raise MementoValueError(f"{path}: empty file (0 bytes): no rows to read")
    block = 1 << 20
    while True:
        try:
            table = pajson.read_json(path, read_options=pajson.ReadOptions(block_size=block))
            break
        except pa.ArrowInvalid as e:
            if "straddl" in str(e) and block <= size:
                block = min(block * 4, size + 1, (1 << 31) - 1)
                continue
            raise MementoValueError(
                f"{path}: not valid JSON Lines ({_reason(e)}); each line must be one "
                'JSON object such as {"response": "..."}'
            ) from None
        except OSError as e:
            raise MementoValueError(f"{path}: cannot read ({_reason(e)})") from None
    if table.num_rows == 0:
        raise MementoValueError(f"{path}: no rows (the file holds only blank lines)")
    return table


def _check_columns(path: Path, names: list[str], require: list[str] | None) -> None:
    missing = [c for c in require or () if c not in names]
    if missing:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise MementoValueError(
            f"{path}: no {', '.join(repr(c) for c in missing)} column "
            f"(its columns: {shown or 'none'}); point at OpenMementos-style data"
        )


def _present(columns: list[str] | None, names: list[str]) -> list[str] | None:
    """The wanted ``columns`` a file has (None: all of them)."""
    return [c for c in columns if c in names] if columns else None


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Errors while a Parquet file's data is read: a one-line error naming the file."""
    try:
        yield
    except pa.ArrowCancelled:  # Ctrl-C inside pyarrow: an interrupt, not a bad file
        raise KeyboardInterrupt from None
    except (pa.ArrowException, OSError) as e:
        raise MementoValueError(f"{path}: cannot read ({_reason(e)}); is it truncated or corrupt?") from None


def _open(path: Path, columns: list[str] | None, require: list[str] | None) -> pq.ParquetFile | pa.Table:
    """A Parquet file opened (data not read yet), or a JSON Lines file read as a table of the
    wanted ``columns``; either way with the ``require``d columns checked."""
    if path.suffix == ".parquet":
        pf = _parquet(path)
        _check_columns(path, pf.schema_arrow.names, require)
        return pf
    table = _read_json(path)
    _check_columns(path, table.column_names, require)
    wanted = _present(columns, table.column_names)
    return table if wanted is None else table.select(wanted)


def _read_file(
    path: Path, columns: list[str] | None, batch_size: int, require: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    source = _open(path, columns, require)
    if isinstance(source, pa.Table):
        yield from source.to_batches(max_chunksize=batch_size)
        return
    with _reading(path):
        yield from source.iter_batches(batch_size=batch_size, columns=_present(columns, source.schema_arrow.names))


def _file_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        return _parquet(path).metadata.num_rows
    return _read_json(path).num_rows


def _sample_files(
    files: list[Path], n: int, seed: int, columns, batch_size: int, require: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    counts = [_file_rows(f) for f in files]
    total = sum(counts)
    picks = sorted(random.Random(seed).sample(range(total), min(n, total)))
    start = 0
    for f, c in zip(files, counts):
        local = [i - start for i in picks if start <= i < start + c]
        start += c
        if not local:
            continue
        source = _open(f, columns, require)
        if isinstance(source, pa.Table):
            table = source
        else:
            with _reading(f):
                table = source.read(columns=_present(columns, source.schema_arrow.names))
        yield from table.take(pa.array(local)).to_batches(max_chunksize=batch_size)


def count_rows(source: Any = None, config: str = "default", split: str = "train") -> int | None:
    """Rows ``load`` would yield without sample/limit, when cheaply known (local files, tables)."""
    if source is None:
        source = str(sample_path())
    if isinstance(source, (pa.Table, pa.RecordBatch)):
        return source.num_rows
    if isinstance(source, (str, os.PathLike)) and _is_local(str(source)):
        try:
            files = resolve_files(source, config, split)
        except MementoValueError:
            return None
        return (
            sum(_file_rows(f) for f in files if f.suffix == ".parquet")
            if all(f.suffix == ".parquet" for f in files)
            else None
        )
    return None


_DONE = object()
#: Live read-ahead threads and their stop events: joined at exit, before the interpreter and
#: pyarrow's thread pools are torn down (a thread still inside pyarrow then aborts the process).
_READERS: dict[Any, Any] = {}


def _stop_readers() -> None:
    for t, stop in list(_READERS.items()):
        stop.set()
        t.join(timeout=30)


atexit.register(_stop_readers)


def prefetch(batches: Iterator[pa.RecordBatch], depth: int = 1) -> Generator[pa.RecordBatch, None, None]:
    """``batches``, read ``depth`` batches ahead on a background thread.

    Parquet decoding (pyarrow) and the core's work both release the GIL, so reading batch N+1
    overlaps processing batch N. Order, values and errors are those of ``batches``: an exception
    of the reader is raised here, at the batch where it happened. When the consumer stops early
    (``close()``, an exception, Ctrl-C), the reader stops after the batch it is on, closes
    ``batches`` and is joined before ``close()`` returns (and, at the latest, at exit).
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for b in batches:
                if not put((b, None)):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            put((None, e))
            return
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()
        put((_DONE, None))

    t = threading.Thread(target=reader, name="mementos-prefetch", daemon=True)
    _READERS[t] = stop
    t.start()
    try:
        while True:
            item, err = q.get()
            if err is not None:
                raise err
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        t.join(timeout=30)
        _READERS.pop(t, None)


def _limit(batches: Iterator[pa.RecordBatch], limit: int | None) -> Iterator[pa.RecordBatch]:
    if limit is None:
        yield from batches
        return
    left = limit
    for b in batches:
        if left <= 0:
            return
        if b.num_rows > left:
            b = b.slice(0, left)
        left -= b.num_rows
        yield b


def _from_datasets(ds: Any, columns, sample, seed, batch_size) -> Iterator[pa.RecordBatch]:
    if columns:
        ds = ds.select_columns([c for c in columns if c in (ds.column_names or columns)])
    if sample is not None:
        ds = ds.shuffle(seed=seed, **({"buffer_size": 10_000} if _is_iterable_dataset(ds) else {}))
    for table in ds.with_format("arrow").iter(batch_size=batch_size):
        yield from table.to_batches()


def _is_iterable_dataset(ds: Any) -> bool:
    return type(ds).__name__ == "IterableDataset"


def load(
    source: Any = None,
    config: str = "default",
    split: str = "train",
    *,
    streaming: bool | None = None,
    columns: list[str] | None = None,
    sample: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    require: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield ``pyarrow.RecordBatch`` es of ``source`` (see the module docstring).

    ``sample`` (a deterministic sample of N rows over every shard) and ``limit`` (the first N
    rows) exclude each other. ``require``: columns every local file must have; a file without
    one raises :class:`MementoValueError` naming it. Unreadable, empty or truncated files and
    missing paths raise :class:`MementoValueError` naming the file."""
    if (sample is not None and sample < 0) or (limit is not None and limit < 0):
        raise MementoValueError("sample and limit must be >= 0")
    if sample is not None and limit is not None:
        raise MementoValueError(
            "pass either sample (N rows spread over every shard) or limit (the first N rows), not both"
        )
    if batch_size < 1:
        raise MementoValueError(f"batch_size must be >= 1, got {batch_size}")
    n = sample if sample is not None else limit
    if source is None:
        source = str(sample_path())
    if isinstance(source, pa.RecordBatch):
        source = pa.Table.from_batches([source])
    if isinstance(source, pa.Table):
        _check_columns(Path("the table"), source.column_names, require)
        table = source.select(columns) if columns else source
        if sample is not None:
            idx = sorted(random.Random(seed).sample(range(table.num_rows), min(sample, table.num_rows)))
            table = table.take(pa.array(idx, type=pa.int64()))
        return _limit(iter(table.to_batches(max_chunksize=batch_size)), n)
    if hasattr(source, "with_format") and hasattr(source, "column_names"):  # datasets objects
        return _limit(_from_datasets(source, columns, sample, seed, batch_size), n)
    if isinstance(source, (list, tuple)) and source and all(isinstance(x, (str, os.PathLike)) for x in source):
        # Several local paths (a shell expands `data/train-*.parquet` into one argument per file).
        files = [f for x in source for f in resolve_files(x, config, split)]
        if sample is not None:
            return _limit(_sample_files(files, sample, seed, columns, batch_size, require), n)
        return _limit((b for f in files for b in _read_file(f, columns, batch_size, require)), n)
    if isinstance(source, (str, os.PathLike)):
        s = str(source)
        if _is_local(s):
            files = resolve_files(s, config, split)
            if sample is not None:
                return _limit(_sample_files(files, sample, seed, columns, batch_size, require), n)
            return _limit((b for f in files for b in _read_file(f, columns, batch_size, require)), n)
        return _limit(_from_hub(s, config, split, streaming, columns, sample, seed, batch_size), n)
    raise MementoValueError(f"cannot load from {type(source).__name__}")


def _from_hub(repo: str, config, split, streaming, columns, sample, seed, batch_size) -> Iterator[pa.RecordBatch]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MementoValueError("loading from the hub needs `pip install mementos-fast[hub]`") from e
    try:
        ds = datasets.load_dataset(repo, config, split=split, streaming=True if streaming is None else streaming)
    except Exception as e:  # offline, unknown id, bad config: one line naming the source
        raise MementoValueError(
            f"{repo}: not a local path, and loading it from the Hugging Face hub failed "
            f"({type(e).__name__}: {_reason(e)})"
        ) from e
    yield from _from_datasets(ds, columns, sample, seed, batch_size)
