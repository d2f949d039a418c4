"""Loading OpenMementos-style data as ``pyarrow.RecordBatch`` es, never as Python row dicts.

Sources: ``None`` (the built-in sample), a hub id such as ``microsoft/OpenMementos`` (through
``datasets``, Arrow-formatted), local Parquet or JSONL files, globs, directories laid out like the
hub repository (``data/train-*.parquet`` for ``default``, ``full/train-*.parquet`` for ``full``),
a ``datasets.Dataset`` / ``IterableDataset``, or a pyarrow Table / RecordBatch.

The hub's shards are grouped by domain, so "the first N rows" are all code: ``sample=N`` draws a
deterministic sample spread over every shard (local files: uniform over all rows; hub: shuffled
stream), ``limit=N`` takes the first N rows.
"""

from __future__ import annotations

import glob
import os
import random
from collections.abc import Iterator
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
    return Path(str(resources.files("mementos_fast").joinpath("data", "sample.jsonl")))


def resolve_files(source: str | os.PathLike, config: str = "default", split: str = "train") -> list[Path]:
    """Local files for ``source``: a file, a glob, or a directory (hub layout or flat)."""
    s = str(source)
    if any(ch in s for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(s))
    else:
        p = Path(s)
        if p.is_file():
            files = [p]
        elif p.is_dir():
            sub = p / CONFIG_DIRS.get(config, config)
            base = sub if sub.is_dir() else p
            files = sorted(base.glob(f"{split}-*.parquet")) or sorted(base.glob("*.parquet")) \
                or sorted(base.glob("*.jsonl"))
        else:
            files = []
    if not files:
        raise MementoValueError(f"no Parquet or JSONL files found for {s!r} (config {config!r})")
    return files


def _is_local(source: str) -> bool:
    return os.path.exists(source) or any(ch in source for ch in "*?[") or source.endswith(
        (".parquet", ".jsonl", ".json"))


def _read_file(path: Path, columns: list[str] | None, batch_size: int) -> Iterator[pa.RecordBatch]:
    if path.suffix == ".parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)
    else:
        table = pajson.read_json(path)
        if columns:
            table = table.select([c for c in columns if c in table.column_names])
        yield from table.to_batches(max_chunksize=batch_size)


def _file_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        return pq.ParquetFile(path).metadata.num_rows
    return pajson.read_json(path).num_rows


def _sample_files(files: list[Path], n: int, seed: int, columns, batch_size: int) -> Iterator[pa.RecordBatch]:
    counts = [_file_rows(f) for f in files]
    total = sum(counts)
    picks = sorted(random.Random(seed).sample(range(total), min(n, total)))
    start = 0
    for f, c in zip(files, counts):
        local = [i - start for i in picks if start <= i < start + c]
        start += c
        if not local:
            continue
        table = pq.read_table(f, columns=columns) if f.suffix == ".parquet" else pajson.read_json(f)
        if columns and f.suffix != ".parquet":
            table = table.select([c for c in columns if c in table.column_names])
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
        return sum(_file_rows(f) for f in files if f.suffix == ".parquet") if all(
            f.suffix == ".parquet" for f in files) else None
    return None


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
) -> Iterator[pa.RecordBatch]:
    """Yield ``pyarrow.RecordBatch`` es of ``source`` (see the module docstring)."""
    if (sample is not None and sample < 0) or (limit is not None and limit < 0):
        raise MementoValueError("sample and limit must be >= 0")
    n = sample if sample is not None else limit
    if source is None:
        source = str(sample_path())
    if isinstance(source, pa.RecordBatch):
        source = pa.Table.from_batches([source])
    if isinstance(source, pa.Table):
        table = source.select(columns) if columns else source
        if sample is not None:
            idx = sorted(random.Random(seed).sample(range(table.num_rows), min(sample, table.num_rows)))
            table = table.take(pa.array(idx, type=pa.int64()))
        return _limit(iter(table.to_batches(max_chunksize=batch_size)), n)
    if hasattr(source, "with_format") and hasattr(source, "column_names"):  # datasets objects
        return _limit(_from_datasets(source, columns, sample, seed, batch_size), n)
    if isinstance(source, (str, os.PathLike)):
        s = str(source)
        if _is_local(s):
            files = resolve_files(s, config, split)
            if sample is not None:
                return _limit(_sample_files(files, sample, seed, columns, batch_size), n)
            return _limit((b for f in files for b in _read_file(f, columns, batch_size)), n)
        return _limit(_from_hub(s, config, split, streaming, columns, sample, seed, batch_size), n)
    raise MementoValueError(f"cannot load from {type(source).__name__}")


def _from_hub(repo: str, config, split, streaming, columns, sample, seed, batch_size) -> Iterator[pa.RecordBatch]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MementoValueError("loading from the hub needs `pip install mementos-fast[hub]`") from e
    ds = datasets.load_dataset(repo, config, split=split, streaming=True if streaming is None else streaming)
    yield from _from_datasets(ds, columns, sample, seed, batch_size)
