"""Statistics over parsed batches: per-row table, per-domain medians and means, validation.

Everything is computed from ``parse_batch`` columns with pyarrow/numpy: no Python loop over rows.
The per-domain medians follow the tutorial exactly (its skip rule: rows with no blocks or with
different block and summary counts are left out) and equal ``reference.domain_medians``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import mementos_fast._core as _core
from mementos_fast.parsing import parse_batch

#: Per-row fields whose per-domain median the tutorial reports (plus ``n_rows``).
MEDIAN_FIELDS = [
    "n_blocks",
    "block_chars",
    "summary_chars",
    "block_words",
    "summary_words",
    "char_ratio",
    "word_ratio",
    "mean_block_chars",
    "mean_summary_chars",
]
META = ["domain", "source", "difficulty"]
#: Per-row token fields (``analyze --tokenizer``) whose per-domain median and mean are reported.
TOKEN_FIELDS = [
    "response_tokens",
    "block_tokens",
    "summary_tokens",
    "token_ratio",
    "mean_block_tokens",
    "mean_summary_tokens",
    "replay_peak_tokens",
    "replay_mean_tokens",
    "kv_auc_tokens",
    "peak_kv_bytes",
    "full_peak_kv_bytes",
]


def _own(arr: pa.Array) -> pa.Array:
    """A copy of ``arr`` in fresh buffers. A column of a ``parse_batch`` result shares the lifetime
    of the whole result, whose text views keep the input's buffers alive; copying the small
    numeric columns lets each input batch be freed once its statistics are taken."""
    return pc.take(arr, pa.array(np.arange(len(arr), dtype=np.int64)))


def _groups(column: pa.Array | pa.ChunkedArray | None, n: int) -> list[tuple[Any, np.ndarray]]:
    """(value, boolean mask over the rows) for each distinct value of ``column`` (null included),
    sorted by ``str`` of the value; ``column=None`` is one group of ``n`` rows whose value is None.
    Found with ``pyarrow.compute`` (one ``unique``, one comparison per group), no loop over rows."""
    if column is None:
        return [(None, np.ones(n, dtype=bool))] if n else []
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    out = []
    for value in sorted(pc.unique(column).to_pylist(), key=str):
        hit = pc.is_null(column) if value is None else pc.fill_null(pc.equal(column, value), False)
        out.append((value, np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)))
    return out


def _div(num: pa.Array, den: pa.Array) -> pa.Array:
    """num / den as float64, null where den is 0 or null."""
    den_f = pc.cast(den, pa.float64())
    safe = pc.if_else(pc.equal(den_f, 0.0), None, den_f)
    return pc.divide(pc.cast(num, pa.float64()), safe)


def row_stats(
    batch: pa.RecordBatch | pa.Table,
    *,
    response: str = "response",
    row_offset: int = 0,
    parsed: pa.RecordBatch | None = None,
) -> pa.Table:
    """One row of statistics per input row: metadata, counts, ratios, status, tutorial skip flag.

    ``parsed`` reuses a ``parse_batch`` result of the same rows instead of parsing again.
    """
    if parsed is None:
        parsed = parse_batch(batch.column(response))
    cols: dict[str, Any] = {"row": pa.array(np.arange(row_offset, row_offset + batch.num_rows))}
    for m in META:
        if m in batch.schema.names:
            cols[m] = _own(batch.column(m))
    for c in ["n_blocks", "n_summaries", "block_chars", "summary_chars", "block_words", "summary_words"]:
        cols[c] = _own(parsed.column(c))
    cols["char_ratio"] = _div(parsed.column("summary_chars"), parsed.column("block_chars"))
    cols["word_ratio"] = _div(parsed.column("summary_words"), parsed.column("block_words"))
    cols["mean_block_chars"] = _div(parsed.column("block_chars"), parsed.column("n_blocks"))
    cols["mean_summary_chars"] = _div(parsed.column("summary_chars"), parsed.column("n_summaries"))
    cols["response_bytes"] = pc.binary_length(batch.column(response))
    cols["status"] = pc.cast(parsed.column("status"), pa.string())
    cols["error_offset"] = _own(parsed.column("error_offset"))
    # The tutorial's skip rule: no blocks, or block and summary counts differ.
    cols["skipped"] = pc.or_kleene(
        pc.equal(parsed.column("n_blocks"), 0), pc.not_equal(parsed.column("n_blocks"), parsed.column("n_summaries"))
    )
    return pa.table(cols)


def domain_table(stats: pa.Table) -> list[dict[str, Any]]:
    """Per domain (tutorial rows only): ``n_rows``, the median and mean of every MEDIAN_FIELDS
    (and of every TOKEN_FIELDS present: the table of ``analyze --tokenizer``)."""
    kept = stats.filter(pc.invert(pc.fill_null(stats.column("skipped"), True)))
    domain = kept.column("domain") if "domain" in kept.column_names else None
    fields = MEDIAN_FIELDS + [f for f in TOKEN_FIELDS if f in kept.column_names]
    out = []
    for d, mask in _groups(domain, kept.num_rows):
        row: dict[str, Any] = {"domain": d, "n_rows": int(mask.sum())}
        for f in fields:
            values = kept.column(f).to_numpy(zero_copy_only=False)[mask].astype(float)
            values = values[~np.isnan(values)]
            row[f"median_{f}"] = float(np.median(values)) if values.size else None
            row[f"mean_{f}"] = float(values.mean()) if values.size else None
        out.append(row)
    return out


def validation_summary(stats: pa.Table, examples: int = 5) -> list[dict[str, Any]]:
    """Count of rows per status with the first few row indexes of each; rows whose response is
    null are counted as ``null (no response)``, last."""
    rows = stats.column("row").to_numpy()
    out = []
    groups = [(s, m) for s, m in _groups(stats.column("status"), stats.num_rows) if s is not None]
    for s, mask in sorted(groups, key=lambda g: (g[0] != "ok", g[0])):
        idx = rows[mask]
        out.append({"status": s, "rows": int(idx.size), "examples": idx[:examples].tolist()})
    null = rows[pc.is_null(stats.column("status")).to_numpy(zero_copy_only=False)]
    if null.size:
        out.append({"status": "null (no response)", "rows": int(null.size), "examples": null[:examples].tolist()})
    return out


def markdown_table(records: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A small Markdown table (numbers rounded for reading)."""
    if not records:
        return "(no rows)\n"
    columns = columns or list(records[0])

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in records]
    return "\n".join(lines) + "\n"


def block_table(parsed: pa.RecordBatch, domain: pa.Array | None = None) -> pa.Table:
    """One row per block of the tutorial rows: domain, position, block and memento chars, ratio.

    Uses the per-item counts the core returns (``block_char_counts``, ``summary_char_counts``), so
    no text is touched again.
    """
    keep = pc.fill_null(
        pc.and_(
            pc.greater(parsed.column("n_blocks"), 0), pc.equal(parsed.column("n_blocks"), parsed.column("n_summaries"))
        ),
        False,
    )
    bcounts = parsed.column("block_char_counts")
    counts = pc.fill_null(pc.list_value_length(bcounts), 0).to_numpy()
    item_row = np.repeat(np.arange(len(counts)), counts)
    item_keep = np.repeat(keep.to_numpy(zero_copy_only=False), counts)
    position = (np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts))[item_keep]
    b = pc.list_flatten(bcounts).to_numpy()[item_keep]  # boolean indexing copies
    # Kept rows have as many summaries as blocks, so the flattened summary counts line up.
    scounts = parsed.column("summary_char_counts")
    s_keep = np.repeat(keep.to_numpy(zero_copy_only=False), pc.fill_null(pc.list_value_length(scounts), 0).to_numpy())
    m = pc.list_flatten(scounts).to_numpy()[s_keep]
    cols: dict[str, Any] = {
        "position": pa.array(position),
        "block_chars": pa.array(b),
        "summary_chars": pa.array(m),
        "ratio": _div(pa.array(m), pa.array(b)),
    }
    if domain is not None:
        cols["domain"] = pc.take(domain, pa.array(item_row[item_keep]))
    return pa.table(cols)


def replay_table(stats: pa.Table) -> list[dict[str, Any]]:
    """Per domain: median and mean of the replay's peak and mean visible-context ratios
    (compacted / uncompacted), over rows whose status is ``ok``."""
    if "replay_peak_ratio" not in stats.column_names:
        return []
    ok = stats.filter(pc.equal(stats.column("status"), "ok"))
    domain = ok.column("domain") if "domain" in ok.column_names else None
    peak = ok.column("replay_peak_ratio").to_numpy(zero_copy_only=False).astype(float)
    mean = ok.column("replay_mean_ratio").to_numpy(zero_copy_only=False).astype(float)
    out = []
    for d, m in _groups(domain, ok.num_rows):
        if m.any():
            out.append(
                {
                    "domain": d,
                    "n_rows": int(m.sum()),
                    "median_peak_ratio": float(np.nanmedian(peak[m])),
                    "mean_peak_ratio": float(np.nanmean(peak[m])),
                    "median_mean_ratio": float(np.nanmedian(mean[m])),
                }
            )
    return out


def alignment_table(aligned: pa.RecordBatch) -> pa.Table:
    """The numbers of an ``align_full_batch`` result worth keeping (copied out of the batch)."""
    keep = ["status", "n_blocks", "blocks_exact", "blocks_whitespace", "blocks_different", "min_similarity"]
    return pa.table({c: _own(aligned.column(c)) for c in keep})


def alignment_summary(aligned: pa.Table) -> dict[str, list[dict[str, Any]]]:
    """Rows per alignment status, and blocks per match kind."""
    counts = pc.value_counts(aligned.column("status")).to_pylist()
    statuses = sorted(({"status": c["values"], "rows": c["counts"]} for c in counts), key=lambda r: -r["rows"])
    blocks = [
        {"match": k, "blocks": int(pc.sum(aligned.column(f"blocks_{k}")).as_py() or 0)} for k in _core.BLOCK_MATCHES
    ]
    return {"statuses": statuses, "blocks": blocks}


def add_token_columns(rows: pa.Table, tokens: pa.RecordBatch) -> pa.Table:
    """A :func:`row_stats` table with the per-row token figures of
    :func:`mementos_fast.tokens.analyze_tokens` (same rows, same order) appended, plus
    ``mean_block_tokens`` / ``mean_summary_tokens`` (per block / memento of the row)."""
    if tokens.num_rows != rows.num_rows:
        raise ValueError(f"{tokens.num_rows} token rows for {rows.num_rows} rows")
    for name in tokens.schema.names:
        rows = rows.append_column(name, tokens.column(name))
    rows = rows.append_column("mean_block_tokens", _div(tokens.column("block_tokens"), rows.column("n_blocks")))
    return rows.append_column("mean_summary_tokens", _div(tokens.column("summary_tokens"), rows.column("n_summaries")))


#: The paper's published figures (FORMAT.md section 4): per domain where it gives them per domain.
PAPER = {
    "median_n_blocks": {"math": 9, "code": 9, "science": 7},
    "median_char_ratio": {"math": 0.16, "code": 0.18, "science": 0.23},
    "tokens_per_block": 1150,
    "tokens_per_memento": 194,
    "block_tokens_per_trace": 10900,
    "memento_tokens_per_trace": 1850,
    "compression": 6.0,
    "peak_kv_gb": (1.8, 0.7),  # Qwen3-8B, base model -> Memento model, averaged over benchmarks
}


def _token_figures(t: pa.Table) -> dict[str, Any]:
    """The paper's figures measured on ``t`` (tutorial rows of one domain, or all)."""

    def col(name: str) -> np.ndarray:
        v = t.column(name).to_numpy(zero_copy_only=False).astype(float)
        return v[~np.isnan(v)]

    def med(name: str) -> float | None:
        v = col(name)
        return float(np.median(v)) if v.size else None

    def ratio(num: float, den: float) -> float | None:
        return num / den if den else None

    blocks, summaries = col("block_tokens").sum(), col("summary_tokens").sum()
    out: dict[str, Any] = {
        "median_n_blocks": med("n_blocks"),
        "median_char_ratio": med("char_ratio"),
        "median_token_ratio": med("token_ratio"),
        "tokens_per_block": ratio(blocks, col("n_blocks").sum()),
        "tokens_per_memento": ratio(summaries, col("n_summaries").sum()),
        "block_tokens_per_trace": ratio(blocks, t.num_rows),
        "memento_tokens_per_trace": ratio(summaries, t.num_rows),
        "compression": ratio(blocks, summaries),
        "peak_kv_gb": None,
    }
    if "peak_kv_bytes" in t.column_names and t.num_rows:
        out["peak_kv_gb"] = (col("full_peak_kv_bytes").mean() / 1e9, col("peak_kv_bytes").mean() / 1e9)
    return out


def token_report(stats: pa.Table, *, tokenizer: str = "", model: str | None = None, keep_last_k: int = 0) -> list[str]:
    """Markdown lines of the token sections of ``analyze --tokenizer``: the per-domain token
    table, then the paper's published figures beside the measured ones, per domain (tutorial rows:
    blocks present and block and summary counts equal)."""
    if "token_ratio" not in stats.column_names:
        return []
    kept = stats.filter(pc.invert(pc.fill_null(stats.column("skipped"), True)))
    domains = sorted(pc.unique(kept.column("domain")).to_pylist(), key=str) if "domain" in kept.column_names else []
    groups = [(str(d), kept.filter(pc.equal(kept.column("domain"), d))) for d in domains]
    if len(groups) != 1:
        groups.append(("all", kept))
    measured = {name: _token_figures(t) for name, t in groups}
    per_domain = [r for r in domain_table(stats)]
    cols = (
        ["domain", "n_rows"]
        + [
            f"median_{f}"
            for f in ("block_tokens", "summary_tokens", "token_ratio", "response_tokens", "replay_peak_tokens")
        ]
        + ["mean_token_ratio", "mean_mean_block_tokens", "mean_mean_summary_tokens"]
    )
    if "peak_kv_bytes" in stats.column_names:
        cols.append("median_peak_kv_bytes")
    cols = [c for c in cols if not per_domain or c in per_domain[0]]

    def num(v: float | None, digits: int = 0) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "-"
        return f"{v:,.{digits}f}"

    def cell(fig: str, name: str) -> str:
        v = measured[name][fig]
        paper = PAPER.get(fig)
        if fig == "peak_kv_gb":
            if v is None:
                return "-"
            full, peak = v
            return f"{full:.2f} -> {peak:.2f} GB ({full / peak:.1f}x)" if peak else f"{full:.2f} -> {peak:.2f} GB"
        digits = 2 if "ratio" in fig else 1 if fig == "compression" else 0
        text = num(v, digits) + ("x" if fig == "compression" and v is not None else "")
        if isinstance(paper, dict) and name in paper:
            text += f" (paper {paper[name]})"
        return text

    rows = [
        ("median blocks per trace", "median_n_blocks", "math 9, code 9, science 7"),
        ("median memento/block ratio, chars", "median_char_ratio", "math 0.16, code 0.18, science 0.23"),
        ("median memento/block ratio, tokens", "median_token_ratio", "not published (chars above)"),
        ("tokens per block", "tokens_per_block", "~1,150"),
        ("tokens per memento", "tokens_per_memento", "~194"),
        ("block tokens per trace", "block_tokens_per_trace", "~10,900"),
        ("memento tokens per trace", "memento_tokens_per_trace", "~1,850"),
        ("block / memento tokens", "compression", "~6x"),
        (
            f"mean peak KV, no compaction -> keep_last_k={keep_last_k} ({model or 'no model'})",
            "peak_kv_gb",
            "1.8 -> 0.7 GB (Qwen3-8B, ~2.5x; benchmarks)",
        ),
    ]
    names = [n for n, _ in groups]
    table = ["| figure | paper | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 2)]
    table += [f"| {label} | {paper} | " + " | ".join(cell(fig, n) for n in names) + " |" for label, fig, paper in rows]
    return [
        f"## Tokens ({tokenizer}; tutorial rows)",
        "",
        markdown_table(per_domain, cols),
        "## The paper's figures beside the measured ones",
        "",
        "The paper does not say which tokenizer produced its dataset token figures (its pipeline counts "
        f"with tiktoken's cl100k_base); these are counted with {tokenizer}. Its peak-KV figure is measured "
        "at inference on benchmarks; here it is the replay of the dataset's traces under the engine's rules "
        "(prompt included).",
        "",
        "\n".join(table),
        "",
    ]
