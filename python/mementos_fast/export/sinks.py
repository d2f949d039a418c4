"""Sinks that write export tables to their destination atomically: JSON Lines (one file, or
stdout), Parquet shards or a ``datasets.save_to_disk`` directory, each with a manifest.

Nothing appears under the final name until the sink is closed: data goes to a hidden temporary
beside it and is renamed into place (:mod:`mementos_fast._atomic`, shared with ``ray-export`` and
``analyze``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mementos_fast import _atomic as atomic
from mementos_fast.errors import MementoValueError

__all__ = ["OUTPUTS", "ExportSink", "jsonl_bytes"]

OUTPUTS = ("jsonl", "parquet", "datasets")


def jsonl_bytes(table: pa.Table, *, engine: str | None = None) -> bytes:
    """``table`` as JSON Lines (UTF-8, one object per row, keys in column order).

    ``engine``: ``"polars"`` (Rust, about 5x faster; used when polars is installed),
    ``"json"`` (the standard library over ``to_pylist``), or None for the best available.
    Both give the same values.
    """
    if engine in (None, "polars"):
        try:
            import io

            import polars as pl
        except ImportError:
            if engine == "polars":
                raise
        else:
            buf = io.BytesIO()
            frame = pl.from_arrow(table, rechunk=False)
            if not isinstance(frame, pl.DataFrame):  # pragma: no cover - a Table is always a DataFrame
                frame = frame.to_frame()
            frame.write_ndjson(buf)
            return buf.getvalue()
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default).encode
    return "".join(dumps(r) + "\n" for r in table.to_pylist()).encode()


def _json_default(o: Any) -> Any:  # numpy scalars from to_pylist never happen; keep bytes safe
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


#: Parquet shards: zstd, no dictionary pages (token ids are near-unique per page, so pyarrow's
#: dictionary attempt and fallback cost a third of the write time and saved nothing).
_PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "use_dictionary": False}


def _parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """:data:`_PARQUET_OPTIONS`, with min/max statistics for the flat columns only (``n_tokens``,
    ``domain``...: what a reader can filter row groups on). The per-token list columns get none:
    a token id's minimum and maximum select nothing (and cost up to 8% of a tokenized shard's write,
    benches/bench_export_tokenized.py ``-k statistics``)."""
    flat = [f.name for f in schema if not pa.types.is_nested(f.type)]
    return {**_PARQUET_OPTIONS, "write_statistics": flat if len(flat) < len(schema) else True}


#: Parquet shards of per-token list columns (the tokenized export) are written with polars when it
#: is installed: its writer takes about a third of pyarrow's CPU on them (pyarrow's computes and
#: RLE-encodes level histograms it cannot be told to skip; benches/bench_export_tokenized.py
#: ``-k parquet_write``). Polars writes a whole file at once, so tables are buffered until they
#: hold this many Arrow bytes (or ``shard_bytes``, if smaller), then written as one shard with a
#: row group per buffered table.
POLARS_SHARD_BYTES = 32 << 20

PARQUET_ENGINES = ("auto", "polars", "pyarrow")


def _has_token_lists(schema: pa.Schema) -> bool:
    return any(
        (pa.types.is_list(f.type) or pa.types.is_large_list(f.type))
        and (pa.types.is_integer(f.type.value_type) or pa.types.is_floating(f.type.value_type))
        for f in schema
    )


def _parquet_engine(engine: str, schema: pa.Schema) -> str:
    """The writer of a table of ``schema``: ``"auto"`` is polars for tables with lists of numbers
    (when polars is installed), pyarrow otherwise."""
    if engine not in PARQUET_ENGINES:
        raise MementoValueError(f"parquet_engine must be one of {PARQUET_ENGINES}, got {engine!r}")
    if engine == "pyarrow" or (engine == "auto" and not _has_token_lists(schema)):
        return "pyarrow"
    try:
        import polars  # noqa: F401
    except ImportError:
        if engine == "polars":
            raise MementoValueError("parquet_engine='polars' needs polars: pip install polars") from None
        return "pyarrow"
    return "polars"


def write_parquet_polars(tables: list[pa.Table], file: Any) -> None:
    """``tables`` (one schema) as one Parquet file written by polars to ``file`` (a path or a
    binary file object): zstd, a row group per table, min/max statistics (polars has no
    per-column choice). Lists come back as ``element`` items and strings as ``large_string``
    when pyarrow reads the file; values are unchanged."""
    import polars as pl

    frames = []
    for t in tables:
        frame = pl.from_arrow(t, rechunk=False)
        if isinstance(frame, pl.DataFrame) and frame.height:  # a Table always gives a DataFrame
            frames.append(frame)
    if not frames:
        raise MementoValueError("no rows to write")  # an empty shard is written by pyarrow
    frame = pl.concat(frames, rechunk=False) if len(frames) > 1 else frames[0]
    rows = max(f.height for f in frames)
    frame.write_parquet(file, compression="zstd", compression_level=1, statistics=True, row_group_size=rows)


class _WriteBehind:
    """Runs ``write(table)`` on one background thread while the caller computes the next table.

    At most one write is in flight (``submit`` waits for the previous one first), so at most two
    tables are alive; writes happen in submission order; a write's exception is raised in the
    caller at the next ``submit`` or at ``wait``. Leaving the ``with`` block always waits for the
    thread, so nothing writes after the caller aborts the sink.
    """

    def __init__(self, write: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._write = write
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mementos-export-writer")
        self._pending: Any = None

    def submit(self, table: pa.Table) -> None:
        self.wait()
        self._pending = self._pool.submit(self._write, table)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> _WriteBehind:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


class ExportSink:
    """Writes export tables to ``out`` as JSONL, Parquet shards or a ``datasets`` directory.

    Nothing appears under the final name until :meth:`close` succeeds: data goes to a hidden
    temporary file or directory beside ``out`` (same file system), is fsynced, then renamed.
    :meth:`abort` (or an exception inside ``with``) removes the temporary data. A process killed
    half-way leaves only a hidden ``.NAME.tmp-*`` entry, never ``out``.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        output: str | None = None,
        *,
        shard_bytes: int = 256 << 20,
        overwrite: bool = False,
        parquet_engine: str = "auto",
    ) -> None:
        self.out = Path(out)
        self.stdout = str(out) == "-"
        self.output = output or _infer_output(str(out))
        if self.output not in OUTPUTS:
            raise MementoValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.stdout and self.output != "jsonl":
            raise MementoValueError("only JSONL can be written to stdout")
        if not self.stdout and self.out.exists() and not overwrite:
            raise MementoValueError(f"{self.out} exists (pass overwrite=True / --overwrite)")
        self.shard_bytes = shard_bytes
        self.parquet_engine = parquet_engine
        _parquet_engine(parquet_engine, pa.schema([]))  # a bad name fails here, before any output
        self._engine: str | None = None  # decided by the first table
        self._pending: list[pa.Table] = []  # polars: tables not written yet
        self._pending_bytes = 0
        self.rows = 0
        self.bytes = 0
        self.files: list[str] = []
        self._schema: pa.Schema | None = None
        self._file: Any = None
        self._writer: Any = None
        self._shard = 0
        self._shard_path: Path | None = None
        self._cleanup_dir: Path | None = None  # datasets: the staging folder around the dataset
        self.tmp: Path | None = None
        if self.stdout:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if self.output == "jsonl":
            self.tmp, self._file = atomic.temp_file(self.out)
        else:
            self.tmp = atomic.temp_dir(self.out)

    def _tmp(self) -> Path:
        """The temporary file or directory (none when writing to stdout)."""
        if self.tmp is None:
            raise MementoValueError("this sink writes to stdout: it has no temporary file")
        return self.tmp

    # -- writing ----------------------------------------------------------------------------
    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0 and self._schema is not None:
            return
        if self._schema is None:
            self._schema = table.schema
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        if self.output == "jsonl":
            self._write_jsonl(table)
        elif self.output == "parquet":
            self._write_parquet(table)
        else:
            self._write_arrow(table)
        self.rows += table.num_rows

    def _write_jsonl(self, table: pa.Table) -> None:
        data = jsonl_bytes(table)
        f = sys.stdout.buffer if self.stdout else self._file
        f.write(data)
        self.bytes += len(data)

    def _write_parquet(self, table: pa.Table) -> None:
        if self._engine is None:
            self._engine = _parquet_engine(self.parquet_engine, table.schema)
        if self._engine == "polars":
            if table.num_rows:
                self._pending.append(table)
                self._pending_bytes += table.nbytes
            if self._pending_bytes >= min(self.shard_bytes, POLARS_SHARD_BYTES):
                self._flush_polars()
            return
        if self._writer is None:
            self._shard_path = self._tmp() / f"part-{self._shard:05d}.parquet"
            self._file = open(self._shard_path, "wb")  # noqa: SIM115 - closed in _close_shard / abort
            self._writer = pq.ParquetWriter(self._file, table.schema, **_parquet_options(table.schema))
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        if self._file.tell() >= self.shard_bytes:
            self._close_shard()

    def _flush_polars(self) -> None:
        """Write the buffered tables as one shard (polars), fsynced. Should polars fail on them
        (a column type it cannot take, say), ``"auto"`` writes the shard and the rest of the
        export with pyarrow, with a warning; an explicit ``"polars"`` is an error naming why."""
        if not self._pending:
            return
        path = self._tmp() / f"part-{self._shard:05d}.parquet"
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        try:
            # Polars writes the file by its path: through a Python file object it takes about a
            # fifth more CPU (its writes cross into Python; measured by hand on 54 MB tables).
            write_parquet_polars(pending, path)
        except Exception as e:
            if self.parquet_engine == "polars":
                raise MementoValueError(f"polars could not write {path.name}: {e}") from e
            import warnings

            warnings.warn(
                f"polars could not write {path.name} ({type(e).__name__}: {e}); writing with pyarrow",
                RuntimeWarning,
                stacklevel=2,
            )
            path.unlink(missing_ok=True)
            self._engine = "pyarrow"
            for table in pending:
                self._write_parquet(table)
            return
        # Outside the fallback: a failing fsync is the file system's error, not polars'.
        atomic.fsync_path(path)
        self.bytes += path.stat().st_size
        self.files.append(path.name)
        self._shard += 1

    def _close_shard(self) -> None:
        self._flush_polars()
        if self._writer is None:
            return
        self._writer.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self.bytes += self._file.tell()
        self._file.close()
        if self._shard_path is not None:
            self.files.append(self._shard_path.name)
        self._writer = self._file = None
        self._shard += 1

    def _write_arrow(self, table: pa.Table) -> None:
        if self._writer is None:
            self._shard_path = self._tmp() / "rows.arrow"
            self._file = pa.OSFile(str(self._shard_path), "wb")
            self._writer = pa.ipc.new_stream(self._file, table.schema)
        self._writer.write_table(table)

    # -- finishing --------------------------------------------------------------------------
    def close(self, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
        """Finish, fsync and rename into place; write ``manifest`` (JSON) beside / inside and
        return it completed with ``rows_written``, ``bytes_written`` and ``files``."""
        manifest = dict(manifest or {})
        if self.stdout:
            sys.stdout.buffer.flush()
            manifest.update(rows_written=self.rows, bytes_written=self.bytes, files=[])
            return manifest
        if self.output == "jsonl":
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            self._replace(self._tmp(), self.out)
            manifest.update(rows_written=self.rows, bytes_written=self.bytes, files=[self.out.name])
            atomic.write_json(self.out.with_name(self.out.name + ".manifest.json"), manifest)
            return manifest
        if self.output == "parquet":
            self._close_shard()
            if not self.files and self._schema is not None:
                self._open_empty()  # no rows: one empty shard with the schema (pyarrow)
                self._close_shard()
            manifest.update(rows_written=self.rows, bytes_written=self.bytes, files=list(self.files))
            atomic.write_json(self._tmp() / "_manifest.json", manifest)
        else:
            self._finish_datasets(manifest)
        atomic.fsync_path(self._tmp())
        self._replace(self._tmp(), self.out)
        return manifest

    def _open_empty(self) -> None:
        self._shard_path = self._tmp() / f"part-{self._shard:05d}.parquet"
        self._file = open(self._shard_path, "wb")  # noqa: SIM115 - closed in _close_shard / abort
        self._writer = pq.ParquetWriter(self._file, self._schema, **_parquet_options(self._schema))

    def _finish_datasets(self, manifest: dict[str, Any]) -> None:
        import datasets

        if self._writer is None:
            self._shard_path = self._tmp() / "rows.arrow"
            self._file = pa.OSFile(str(self._shard_path), "wb")
            self._writer = pa.ipc.new_stream(self._file, self._schema or pa.schema([]))
        self._writer.close()
        self._file.close()
        self._writer = self._file = None
        ds = datasets.Dataset.from_file(str(self._shard_path))
        target = self._tmp() / "dataset"
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            # An empty dataset still needs one (empty) shard for load_from_disk.
            shards = {"num_shards": 1} if len(ds) == 0 else {"max_shard_size": self.shard_bytes}
            ds.save_to_disk(str(target), **shards)
        finally:
            if bars:
                datasets.enable_progress_bars()
        del ds
        if self._shard_path is not None:
            self._shard_path.unlink()
        for p in target.iterdir():
            atomic.fsync_path(p)
        files = sorted(p.name for p in target.iterdir())
        manifest.update(
            rows_written=self.rows, files=files, bytes_written=sum((target / f).stat().st_size for f in files)
        )
        atomic.write_json(target / "_manifest.json", manifest)
        atomic.fsync_path(target)
        # The dataset directory itself becomes the output.
        inner = self.tmp
        self.tmp = target
        self._cleanup_dir = inner

    def _replace(self, src: Path, dst: Path) -> None:
        atomic.replace(src, dst)
        if self._cleanup_dir is not None:
            shutil.rmtree(self._cleanup_dir, ignore_errors=True)

    def abort(self) -> None:
        """Remove the temporary data (the final name is never touched)."""
        with contextlib.suppress(Exception):
            if self._writer is not None:
                self._writer.close()
        with contextlib.suppress(Exception):
            if self._file is not None:
                self._file.close()
        if self.tmp is not None and self.tmp.exists():
            if self.tmp.is_dir():
                shutil.rmtree(self.tmp, ignore_errors=True)
            else:
                self.tmp.unlink(missing_ok=True)
        if self._cleanup_dir is not None:
            shutil.rmtree(self._cleanup_dir, ignore_errors=True)

    def __enter__(self) -> ExportSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def _infer_output(out: str) -> str:
    if out == "-" or out.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    return "parquet"


# Kept for callers of the former single-module export (same behaviour, one implementation).
_umask = atomic.umask
_fsync_path = atomic.fsync_path
_write_json_atomic = atomic.write_json
