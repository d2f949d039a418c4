"""The report's plots (PNG, matplotlib with the Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import mementos_fast as mf


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def visible_curve(text: str, keep_last_k: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visible context (chars) over one trace: positions, without compaction, with compaction.

    The compacted curve is the core's replay under the inference engine's rules
    (:func:`mementos_fast.replay_curve`, ``mask_delimiters=False``); at an eviction the position
    repeats with the lower value, so the drop is vertical.
    """
    curve = mf.replay_curve(text, keep_last_k)
    x = curve.column("generated").to_numpy()
    return x, x.copy(), curve.column("visible").to_numpy()


def save_all(
    stats: pa.Table,
    blocks: pa.Table,
    out: Path,
    *,
    example: str | None = None,
    keep_last_k: int = 0,
    tokenizer: Any = None,
    model: str | None = None,
) -> list[Path]:
    """Write every plot into ``out``; returns the paths written.

    With token columns in ``stats`` (``analyze --tokenizer``): the token ratio by domain; with
    ``tokenizer`` (a tokenizer or counter) and an ``example``: the KV curve of that trace in tokens
    and, for ``model`` (a preset), in GB.
    """
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    kept = stats.filter(pa.compute.invert(pa.compute.fill_null(stats.column("skipped"), True)))
    domains = (
        sorted({d for d in kept.column("domain").to_pylist()}, key=str) if "domain" in kept.column_names else [None]
    )
    dom = np.array(kept.column("domain").to_pylist()) if "domain" in kept.column_names else None

    def by_domain(col: str, table: pa.Table, d_arr) -> list[np.ndarray]:
        v = table.column(col).to_numpy(zero_copy_only=False).astype(float)
        return [v[(d_arr == d) if d_arr is not None else slice(None)] for d in domains]

    def no_data(ax, what: str) -> None:
        """An empty plot says why instead of failing (e.g. raw traces: no row has blocks)."""
        ax.text(0.5, 0.5, f"no data: {what}", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_xticks([])
        ax.set_yticks([])

    def save(fig, name: str) -> None:
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    if kept.num_rows:
        ax.boxplot(by_domain("n_blocks", kept, dom), tick_labels=[str(d) for d in domains])
    else:
        no_data(ax, "no row has blocks with a memento each")
    ax.set(title="Blocks per trace by domain", ylabel="blocks")
    save(fig, "blocks_per_trace.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    if kept.num_rows:
        ax.boxplot([x[~np.isnan(x)] for x in by_domain("char_ratio", kept, dom)], tick_labels=[str(d) for d in domains])
    else:
        no_data(ax, "no row has blocks with a memento each")
    ax.set(title="Memento / block size (chars) by domain", ylabel="ratio")
    save(fig, "ratio_by_domain.png")

    bdom = np.array(blocks.column("domain").to_pylist()) if "domain" in blocks.column_names else None
    fig, ax = plt.subplots(figsize=(6, 5))
    bc = blocks.column("block_chars").to_numpy(zero_copy_only=False)
    sc = blocks.column("summary_chars").to_numpy(zero_copy_only=False)
    if len(bc):
        for d in domains:
            m = (bdom == d) if bdom is not None else slice(None)
            ax.scatter(np.maximum(bc[m], 1), np.maximum(sc[m], 1), s=4, alpha=0.4, label=str(d))
        ax.set(xscale="log", yscale="log")
        ax.legend()
    else:
        no_data(ax, "no blocks")
    ax.set(xlabel="block chars", ylabel="memento chars", title="Block vs memento size")
    save(fig, "block_vs_memento.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    pos = blocks.column("position").to_numpy()
    ratio = blocks.column("ratio").to_numpy(zero_copy_only=False).astype(float)
    top = int(min(pos.max(initial=0), 30)) + 1
    med = [np.nanmedian(ratio[pos == i]) if np.any(pos == i) else np.nan for i in range(top)]
    if len(pos):
        ax.plot(range(1, top + 1), med, marker="o")
    else:
        no_data(ax, "no blocks")
    ax.set(xlabel="block position", ylabel="median memento/block ratio", title="Ratio by block position")
    save(fig, "ratio_by_position.png")

    if example:
        x, full, kept_curve = visible_curve(example, keep_last_k)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(x, full, label="no compaction")
        ax.plot(x, kept_curve, label=f"keep last {keep_last_k} block(s)")
        ax.set(xlabel="generated chars", ylabel="visible chars", title="Visible context over one trace")
        ax.legend()
        save(fig, "visible_context.png")

    if "token_ratio" in kept.column_names:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.boxplot(
            [x[~np.isnan(x)] for x in by_domain("token_ratio", kept, dom)], tick_labels=[str(d) for d in domains]
        )
        ax.set(title="Memento / block size (tokens) by domain", ylabel="summary_tokens / block_tokens")
        save(fig, "token_ratio_by_domain.png")

    if example and tokenizer is not None:
        fig = kv_curve_figure(example, tokenizer, keep_last_k=keep_last_k, model=model)
        save(fig, "kv_curve.png")
    return written


def kv_curve_figure(text: str, tokenizer: Any, *, keep_last_k: int = 0, model: str | None = None):
    """The visible context of one trace in tokens, without compaction and under the engine's rules
    (:func:`mementos_fast.replay_curve`), with a second axis in GB of KV cache for ``model``."""
    plt = _plt()
    curve = mf.replay_curve(text, keep_last_k, tokenizer=tokenizer)
    x = curve.column("generated").to_numpy()
    y = curve.column("visible").to_numpy()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, x, label="no compaction")
    ax.plot(x, y, label=f"keep last {keep_last_k} block(s)")
    ax.set(xlabel="generated tokens", ylabel="tokens in the KV cache", title="KV cache over one trace")
    ax.legend(loc="upper left")
    if model is not None:
        from mementos_fast.compaction import _kv_shape

        per_token = _kv_shape(model).bytes_per_token / 1e9
        right = ax.secondary_yaxis("right", functions=(lambda t: t * per_token, lambda g: g / per_token))
        right.set_ylabel(f"GB ({model}, bf16)")
    return fig
