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

from mementos_fast import parse_batch

#: Per-row fields whose per-domain median the tutorial reports (plus ``n_rows``).
MEDIAN_FIELDS = ["n_blocks", "block_chars", "summary_chars", "block_words", "summary_words",
                 "char_ratio", "word_ratio", "mean_block_chars", "mean_summary_chars"]
META = ["domain", "source", "difficulty"]


def _own(arr: pa.Array) -> pa.Array:
    """A copy of ``arr`` in fresh buffers. A column of a ``parse_batch`` result shares the lifetime
    of the whole result, whose text views keep the input's buffers alive; copying the small
    numeric columns lets each input batch be freed once its statistics are taken."""
    return pc.take(arr, pa.array(np.arange(len(arr), dtype=np.int64)))


def _div(num: pa.Array, den: pa.Array) -> pa.Array:
    """num / den as float64, null where den is 0 or null."""
    den_f = pc.cast(den, pa.float64())
    safe = pc.if_else(pc.equal(den_f, 0.0), None, den_f)
    return pc.divide(pc.cast(num, pa.float64()), safe)


def row_stats(batch: pa.RecordBatch | pa.Table, *, response: str = "response", row_offset: int = 0,
              parsed: pa.RecordBatch | None = None) -> pa.Table:
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
    cols["skipped"] = pc.or_kleene(pc.equal(parsed.column("n_blocks"), 0),
                                   pc.not_equal(parsed.column("n_blocks"), parsed.column("n_summaries")))
    return pa.table(cols)


def domain_table(stats: pa.Table) -> list[dict[str, Any]]:
    """Per domain (tutorial rows only): ``n_rows``, the median and mean of every MEDIAN_FIELDS."""
    kept = stats.filter(pc.invert(pc.fill_null(stats.column("skipped"), True)))
    domains = kept.column("domain").to_numpy(zero_copy_only=False) if "domain" in kept.column_names \
        else np.array([None] * kept.num_rows)
    out = []
    for d in sorted({x for x in domains}, key=str):
        mask = domains == d
        row: dict[str, Any] = {"domain": d, "n_rows": int(mask.sum())}
        for f in MEDIAN_FIELDS:
            values = kept.column(f).to_numpy(zero_copy_only=False)[mask].astype(float)
            values = values[~np.isnan(values)]
            row[f"median_{f}"] = float(np.median(values)) if values.size else None
            row[f"mean_{f}"] = float(values.mean()) if values.size else None
        out.append(row)
    return out


def validation_summary(stats: pa.Table, examples: int = 5) -> list[dict[str, Any]]:
    """Count of rows per status with the first few row indexes of each; rows whose response is
    null are counted as ``null (no response)``, last."""
    status = stats.column("status").to_numpy(zero_copy_only=False)
    rows = stats.column("row").to_numpy()
    out = []
    for s in sorted({x for x in status if x is not None}, key=lambda x: (x != "ok", x)):
        idx = rows[status == s]
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
    keep = pc.fill_null(pc.and_(pc.greater(parsed.column("n_blocks"), 0),
                                pc.equal(parsed.column("n_blocks"), parsed.column("n_summaries"))), False)
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
    cols: dict[str, Any] = {"position": pa.array(position), "block_chars": pa.array(b), "summary_chars": pa.array(m),
                            "ratio": _div(pa.array(m), pa.array(b))}
    if domain is not None:
        cols["domain"] = pc.take(domain, pa.array(item_row[item_keep]))
    return pa.table(cols)


def replay_table(stats: pa.Table) -> list[dict[str, Any]]:
    """Per domain: median and mean of the replay's peak and mean visible-context ratios
    (compacted / uncompacted), over rows whose status is ``ok``."""
    if "replay_peak_ratio" not in stats.column_names:
        return []
    ok = stats.filter(pc.equal(stats.column("status"), "ok"))
    domains = ok.column("domain").to_pylist() if "domain" in ok.column_names else [None] * ok.num_rows
    peak = ok.column("replay_peak_ratio").to_numpy(zero_copy_only=False).astype(float)
    mean = ok.column("replay_mean_ratio").to_numpy(zero_copy_only=False).astype(float)
    out = []
    for d in sorted(set(domains), key=str):
        m = np.array([x == d for x in domains])
        if m.any():
            out.append({"domain": d, "n_rows": int(m.sum()), "median_peak_ratio": float(np.nanmedian(peak[m])),
                        "mean_peak_ratio": float(np.nanmean(peak[m])),
                        "median_mean_ratio": float(np.nanmedian(mean[m]))})
    return out


def alignment_table(aligned: pa.RecordBatch) -> pa.Table:
    """The numbers of an ``align_full_batch`` result worth keeping (copied out of the batch)."""
    keep = ["status", "n_blocks", "blocks_exact", "blocks_whitespace", "blocks_different", "min_similarity"]
    return pa.table({c: _own(aligned.column(c)) for c in keep})


def alignment_summary(aligned: pa.Table) -> dict[str, list[dict[str, Any]]]:
    """Rows per alignment status, and blocks per match kind."""
    counts = pc.value_counts(aligned.column("status")).to_pylist()
    statuses = sorted(({"status": c["values"], "rows": c["counts"]} for c in counts), key=lambda r: -r["rows"])
    blocks = [{"match": k, "blocks": int(pc.sum(aligned.column(f"blocks_{k}")).as_py() or 0)}
              for k in ("exact", "whitespace", "different")]
    return {"statuses": statuses, "blocks": blocks}
