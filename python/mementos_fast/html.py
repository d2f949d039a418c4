"""Self-contained HTML: a trace viewer (``show --html``) and the ``analyze`` report (``report.html``).

Every page is one file with its CSS, JavaScript, data and images inline (no network, no CDN). The
viewer shows a trace block by block, each memento beside its block with its size in characters
(and tokens with a tokenizer), the row's status with the byte offset of its first structural
problem highlighted, and the final answer. A slider over the generation (one step per segment
between delimiters, and per delimiter) and a keep-last-k selector grey out the blocks the
inference engine has evicted at that point. What is evicted comes from the engine's own plan
(:func:`mementos_fast.eviction_plan`), computed here in Python for every k offered and embedded as
JSON: the page only compares the slider's byte position with each block's ``trigger`` offset. The
visible-context curve under the slider is :func:`mementos_fast.replay_curve`, also embedded.

The page reads ``#pos=BYTES&k=K`` (or ``#step=N``, ``open=all``) from its URL, so a given moment
can be linked to, and tested in a headless browser (tests/test_html.py).
"""

from __future__ import annotations

import base64
import bisect
import html as _html
import json
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

import mementos_fast as mf
from mementos_fast.errors import MementoValueError
from mementos_fast.tokenizer import is_qwen3

__all__ = ["DEFAULT_KS", "note_examples", "viewer_data", "viewer_html", "write_report", "write_viewer"]

#: The keep-last-k values a viewer offers (-1, no compaction, is always included: it is the
#: dashed reference curve).
DEFAULT_KS: tuple[int, ...] = (-1, 0, 1, 2, 3, 5)

_DELIMS = mf._core.DELIMITERS
# Every delimiter has exactly one '<', at its first byte: occurrences never overlap, so this
# alternation finds the same occurrences as the core's scanner.
_DELIM_RE = re.compile(b"|".join(re.escape(d.encode()) for d in _DELIMS))
_BS, _BE, _SS, _SE = (len(d) for d in _DELIMS[2:])


def _asset(name: str) -> str:
    return resources.files("mementos_fast").joinpath("data").joinpath(name).read_text(encoding="utf-8")


def _resolve_tokenizer(tokenizer: Any) -> Any:
    """None, a :class:`LoadedTokenizer`, or a counter from ``token_counter`` (used as it is: the
    CLI hands over the one its run counted with, so the report loads nothing again)."""
    if tokenizer is None or isinstance(tokenizer, mf._core.TokenCounter):
        return tokenizer
    if is_qwen3(tokenizer):
        tokenizer = mf.qwen3_tokenizer_path()
    if isinstance(tokenizer, mf.LoadedTokenizer):
        return tokenizer
    return mf.load_tokenizer(tokenizer)


def _piece_tokens(pieces: list[str], tok: Any) -> list[int]:
    """The token count of each piece (its whole text, each delimiter one token)."""
    if not pieces:
        return []
    if isinstance(tok, mf._core.TokenCounter):
        return mf._core.count_totals(pa.array(pieces, pa.large_string()), tok).column("tokens").to_pylist()
    return mf.count_tokens(pieces, tok, stripped=False).column("total_tokens").to_pylist()


def _segment_ends(raw: bytes) -> list[int]:
    """Byte offsets at the end of each non-empty segment of generation (text between delimiters,
    and each delimiter), in order: the points after which the replay records the visible length."""
    ends: list[int] = []
    pos = 0
    for m in _DELIM_RE.finditer(raw):
        if m.start() > pos:
            ends.append(m.start())
        ends.append(m.end())
        pos = m.end()
    if len(raw) > pos:
        ends.append(len(raw))
    return ends


def _curves(response: str, ks: Sequence[int], ends: list[int], tok: Any) -> dict[str, dict[str, Any]]:
    """Per k: the replay curve's points and the visible length after each slider step."""
    out: dict[str, dict[str, Any]] = {}
    for k in ks:
        t = mf.replay_curve(response, k, tokenizer=tok)
        g = t.column("generated").to_pylist()
        v = t.column("visible").to_pylist()
        ev = t.column("eviction").to_pylist()
        # Step s (0 = nothing generated yet) is the s-th non-eviction point; the visible length at
        # that step is the one after any evictions recorded at the same point.
        visible: list[int] = []
        for vi, e in zip(v, ev):
            if e:
                visible[-1] = vi
            else:
                visible.append(vi)
        if len(visible) != len(ends) + 1:
            raise mf.MementoInternalError(
                f"replay curve has {len(visible) - 1} segment points, the text {len(ends)} segments"
            )
        out[str(k)] = {
            "curve": [[a, b] for a, b in zip(g, v)],
            "visible": visible,
            "generated": [a for a, e in zip(g, ev) if not e],
        }
    return out


def viewer_data(
    response: str,
    *,
    ks: Iterable[int] = DEFAULT_KS,
    k: int = 0,
    tokenizer: Any = None,
    title: str | None = None,
    problem: str | None = None,
) -> dict[str, Any]:
    """Everything the viewer page shows, as plain data (the page embeds it as JSON).

    ``tokenizer``: ``None`` (sizes and the curve in characters), ``"qwen3"``, a tokenizer.json
    path, a hub id, a loaded tokenizer or a counter from ``token_counter`` (sizes in characters and
    tokens, the curve in tokens).
    """
    if not isinstance(response, str):
        raise MementoValueError(f"the viewer needs a response string, got {type(response).__name__}")
    ks = sorted({-1, *(int(x) for x in ks)})
    if ks[0] < -1:
        raise MementoValueError(f"keep_last_k must be -1 (no compaction) or more, got {ks[0]}")
    if k not in ks:
        raise MementoValueError(f"keep_last_k={k} is not among the values offered ({ks})")
    tok = _resolve_tokenizer(tokenizer)
    raw = response.encode("utf-8")
    parsed = mf.parse(response)

    plans = {}
    for kk in ks:
        plans[str(kk)] = mf.eviction_plan([response], kk).to_pylist()[0]
    base = plans[str(ks[0])]
    for kk in ks:
        for col in ("block_start", "block_end", "summary_start", "summary_end"):
            if plans[str(kk)][col] != base[col]:  # pragma: no cover - the engine tracks blocks whatever k
                raise mf.MementoInternalError(f"eviction plan's {col} differs between k values")

    def text(a: int, b: int) -> str:
        return raw[a:b].decode("utf-8", errors="replace")

    n = base["n_blocks"] or 0
    starts = sorted(
        [x for x in base["block_start"] if x is not None] + [x for x in base["summary_start"] if x is not None]
    )
    think_end = raw.find(b"</think>")

    def next_start(after: int) -> int:
        j = bisect.bisect_right(starts, after)
        stop = starts[j] if j < len(starts) else len(raw)
        if think_end >= 0 and after < think_end < stop:
            stop = think_end
        return stop

    covered: list[tuple[int, int]] = []

    def part(start: int, end: int | None, open_len: int, close_len: int) -> dict[str, Any]:
        """A block or a memento from its delimiters' offsets: its content runs from after the
        opening delimiter to before the closing one (or, unclosed, to the next thing that starts)."""
        c0 = start + open_len
        c1 = end - close_len if end is not None else next_start(start)
        covered.append((start, end if end is not None else c1))
        return {"start": start, "end": end, "content": [c0, c1], "text": text(c0, c1), "closed": end is not None}

    units: list[dict[str, Any]] = []
    for i in range(n):
        unit = {"i": i, **part(base["block_start"][i], base["block_end"][i], _BS, _BE)}
        if base["summary_start"][i] is not None:
            unit["memento"] = part(base["summary_start"][i], base["summary_end"][i], _SS, _SE)
        units.append(unit)

    # Text outside every block and memento (the think tags, text between units, the answer).
    gaps: list[dict[str, Any]] = []
    pos = 0
    for a, b in sorted(covered):
        if a > pos:
            gaps.append({"start": pos, "end": a})
        pos = max(pos, b)
    if pos < len(raw):
        gaps.append({"start": pos, "end": len(raw)})
    # The final answer (after the last </think>, as the tutorial reads it) is shown on its own when
    # no block or memento reaches into it.
    last_think = raw.rfind(b"</think>")
    answer = None
    if last_think >= 0 and gaps and gaps[-1]["end"] == len(raw) and gaps[-1]["start"] <= last_think + 8:
        a = last_think + 8
        answer = {"start": a, "end": len(raw), "text": text(a, len(raw))}
        gaps[-1]["end"] = a
        if gaps[-1]["start"] == a:
            gaps.pop()
    for g in gaps:
        g["text"] = text(g["start"], g["end"])

    # Sizes: characters always; tokens of exactly the displayed texts with count_tokens.
    pieces = [u["text"] for u in units] + [u["memento"]["text"] for u in units if "memento" in u]
    for u in units:
        u["chars"] = len(u["text"])
        if "memento" in u:
            u["memento"]["chars"] = len(u["memento"]["text"])
    unit_name = "chars"
    if tok is not None:
        unit_name = "tokens"
        counts = _piece_tokens(pieces, tok)
        it = iter(counts)
        for u in units:
            u["tokens"] = next(it)
        for u in units:
            if "memento" in u:
                u["memento"]["tokens"] = next(it)

    ends = _segment_ends(raw)
    curves = _curves(response, ks, ends, tok)
    positions = [0, *ends]
    generated = curves[str(ks[0])]["generated"]
    out_plans = {}
    for kk in ks:
        p = plans[str(kk)]
        c = curves[str(kk)]
        out_plans[str(kk)] = {
            "trigger": p["trigger"],
            "evict_start": p["evict_start"],
            "evict_end": p["evict_end"],
            "n_evicted": p["n_evicted"],
            "curve": c["curve"],
            "visible": c["visible"],
            "peak": max(v for _, v in c["curve"]),
        }
    return {
        "title": title or "Memento trace",
        "problem": problem,
        "status": parsed.status,
        "status_text": mf.STATUSES.get(parsed.status, ""),
        "error_offset": parsed.error_offset,
        "n_bytes": len(raw),
        "n_chars": len(response),
        "units": units,
        "gaps": gaps,
        "final_answer": parsed.final_answer,
        "answer": answer,
        "ks": ks,
        "k": k,
        "unit": unit_name,
        "positions": positions,
        "generated": generated,
        "total_units": generated[-1] if generated else 0,
        "plans": out_plans,
    }


def _esc(s: str) -> str:
    return _html.escape(s, quote=True)


def _piece(s: str, a: int, b: int, problem_at: int | None, raw: bytes) -> str:
    """The escaped text of source bytes [a, b), with the problem marker when it falls inside."""
    if problem_at is None or not (a <= problem_at <= b):
        return _esc(s)
    head = raw[a:problem_at].decode("utf-8", errors="replace")
    return (
        _esc(head) + f'<mark class="problem" id="problem" title="first structural problem, byte {problem_at:,}">'
        f"&#9888; byte {problem_at:,}</mark>" + _esc(s[len(head) :])
    )


def _size(d: dict[str, Any]) -> str:
    s = f"{d['chars']:,} chars"
    if "tokens" in d:
        s += f", {d['tokens']:,} tokens"
    return s


def viewer_html(response: str, **kwargs: Any) -> str:
    """The viewer page of one trace (see :func:`viewer_data` for the arguments)."""
    d = viewer_data(response, **kwargs)
    raw = response.encode("utf-8")
    err = d["error_offset"] if d["status"] not in ("ok", None) else None
    # The marker goes into the first displayed piece that reaches the offset (delimiters are not
    # displayed, so an offset on one lands at the nearest displayed point).
    displayed: list[tuple[int, int, str]] = []
    for u in d["units"]:
        displayed.append((u["content"][0], u["content"][1], f"b{u['i']}"))
        if "memento" in u:
            displayed.append((u["memento"]["content"][0], u["memento"]["content"][1], f"m{u['i']}"))
    for j, g in enumerate(d["gaps"]):
        displayed.append((g["start"], g["end"], f"g{j}"))
    if d["answer"] is not None:
        displayed.append((d["answer"]["start"], d["answer"]["end"], "a"))
    mark_in = None
    if err is not None:
        after = sorted((b, a, key) for a, b, key in displayed if b >= err)
        if after:
            _, a, mark_in = after[0]
            d["_mark_at"] = max(err, a)

    def body(a: int, b: int, s: str, key: str) -> str:
        return _piece(s, a, b, d.get("_mark_at") if key == mark_in else None, raw)

    items: list[tuple[int, str]] = []
    for u in d["units"]:
        i = u["i"]
        block_size = _size(u)
        end_attr = "" if u["end"] is None else str(u["end"])
        flags = (
            ""
            if u["closed"]
            else ' <span class="tag" style="display:inline-block;background:#fde2e1">never closed</span>'
        )
        has_problem = " has-problem" if mark_in == f"b{i}" else ""
        block = (
            f'<details class="block{has_problem}" open data-i="{i}" data-start="{u["start"]}" '
            f'data-end="{end_attr}">'
            f'<summary>block {i + 1} <span class="size">{block_size}</span>{flags}'
            f'<span class="tag ev">evicted</span><span class="tag gen">being generated</span></summary>'
            f'<pre class="text">{body(u["content"][0], u["content"][1], u["text"], f"b{i}")}</pre></details>'
        )
        if "memento" in u:
            m = u["memento"]
            pct = ""
            if u["chars"]:
                pct = f", {100 * m['chars'] / u['chars']:.0f}% of the block"
                if "tokens" in m and u.get("tokens"):
                    pct += f" ({100 * m['tokens'] / u['tokens']:.0f}% in tokens)"
            open_tag = (
                ""
                if m["closed"]
                else ' <span class="tag" style="display:inline-block;background:#fde2e1">never closed</span>'
            )
            memento = (
                f'<div class="memento" data-m="{i}" data-start="{m["start"]}">'
                f'<div class="head">memento {i + 1} <span class="size">{_size(m)}{pct}</span>{open_tag}</div>'
                f'<pre class="text">{body(m["content"][0], m["content"][1], m["text"], f"m{i}")}</pre></div>'
            )
        else:
            memento = '<div class="memento"><div class="nomemento">no memento: this block is never evicted</div></div>'
        items.append((u["start"], f'<div class="unit">{block}{memento}</div>'))
    for j, g in enumerate(d["gaps"]):
        if g["text"].strip() or mark_in == f"g{j}":
            items.append(
                (
                    g["start"],
                    f'<div class="gap" data-start="{g["start"]}"><pre class="text">'
                    f"{body(g['start'], g['end'], g['text'], f'g{j}')}</pre></div>",
                )
            )
    items.sort(key=lambda x: x[0])

    ok = d["status"] == "ok"
    status = f'<span class="{"status-ok" if ok else "status-bad"}">{_esc(str(d["status"]))}</span>'
    if err is not None:
        status += (
            f' at <a href="#problem" onclick="document.getElementById(\'problem\').scrollIntoView();'
            f'return false;">byte {err:,}</a>'
        )
    if d["status_text"]:
        status += f' <span class="meta">({_esc(d["status_text"])})</span>'
    n_mem = sum(1 for u in d["units"] if "memento" in u)
    problem = f'<p class="meta"><b>Problem:</b> {_esc(d["problem"])}</p>' if d["problem"] else ""
    a = d["answer"]
    answer_start = "" if a is None else f' data-start="{a["start"]}"'
    if a is not None and a["text"].strip():
        answer = body(a["start"], a["end"], a["text"], "a")
    elif d["final_answer"]:
        answer = _esc(d["final_answer"])
    else:
        answer = '<span class="meta">(empty: no text after the last &lt;/think&gt;)</span>'
        if a is not None and mark_in == "a":
            answer += body(a["start"], a["end"], a["text"], "a")
    data_json = json.dumps(
        {k: d[k] for k in ("ks", "k", "unit", "positions", "generated", "total_units", "plans")}, separators=(",", ":")
    ).replace("</", "<\\/")
    unit = d["unit"]
    peaks = ", ".join(f"k={k}: {d['plans'][str(k)]['peak']:,}" for k in d["ks"])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(d["title"])}</title>
<style>{_asset("viewer.css")}</style></head>
<body>
<ul id="errors"></ul>
<header class="top"><h1>{_esc(d["title"])}</h1>{problem}
<div class="meta">status: {status} &middot; <b>{len(d["units"])}</b> blocks, <b>{n_mem}</b> mementos &middot;
{d["n_chars"]:,} chars, {d["n_bytes"]:,} bytes{f", {d['total_units']:,} tokens" if unit == "tokens" else ""}
&middot; peak visible {unit}: {peaks}</div></header>
<div id="controls"><div class="row">
<label>keep-last-k <select id="k"></select></label>
<input type="range" id="slider" aria-label="position in the generation" step="1">
<button id="expand" type="button">collapse / expand all</button></div>
<div id="readout"></div>
<svg id="curve" role="img" aria-label="visible context during generation"></svg>
<div id="state" hidden></div></div>
<main>
{"".join(html for _, html in items)}
<section class="answer"{answer_start}><h2>Final answer</h2><pre class="text">{answer}</pre></section>
</main>
<footer>Evictions follow the engine's plan (mementos_fast.eviction_plan, mask_delimiters=false): a block turns
grey once the token after which the engine evicts it has been generated. Faded: not generated yet.
Made by mementos-fast {_esc(mf.__version__)}.</footer>
<script type="application/json" id="data">{data_json}</script>
<script>{_asset("viewer.js")}</script>
</body></html>
"""


def write_viewer(response: str, path: str | Path, **kwargs: Any) -> Path:
    """Write the viewer page of one trace to ``path`` (see :func:`viewer_data`)."""
    path = Path(path)
    page = viewer_html(response, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def note_examples(
    examples: dict[str, tuple[int, str]], batch: pa.RecordBatch, parsed: pa.RecordBatch, row_offset: int
) -> None:
    """Remember the first row of each status not seen yet (``examples[status] = (row, response)``),
    for the report's viewer pages. pyarrow finds the first index of each status: no loop over rows."""
    status = parsed.column("status")
    if pa.types.is_dictionary(status.type):
        codes, names = status.indices, status.dictionary.to_pylist()
    else:
        codes, names = status, None
    for code in pc.unique(codes).to_pylist():
        if code is None:
            continue
        name = names[code] if names is not None else code
        if name in examples:
            continue
        i = pc.index(codes, pa.scalar(code, codes.type)).as_py()
        text = batch.column("response")[i].as_py()
        if isinstance(text, str):
            examples[name] = (row_offset + i, text)


_TABLE_SEP = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")


def _inline(s: str) -> str:
    s = _esc(s)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", s)


def markdown_to_html(md: str, links: dict[str, str] | None = None) -> str:
    """The subset of Markdown the analyze report uses: headings, paragraphs and pipe tables. In a
    table with a ``status`` column, a status listed in ``links`` links to its page."""
    links = links or {}
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 6)
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
            i += 1
        elif line.startswith("|") and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1]):
            header = [c.strip() for c in line.strip().strip("|").split("|")]
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            link_col = header.index("status") if "status" in header else None
            cells = ["<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in header) + "</tr></thead><tbody>"]
            for r in rows:
                tds = []
                for j, c in enumerate(r):
                    if j == link_col and c in links:
                        tds.append(f'<td><a href="{_esc(links[c])}">{_esc(c)}</a></td>')
                    else:
                        tds.append(f"<td>{_inline(c)}</td>")
                cells.append("<tr>" + "".join(tds) + "</tr>")
            out.append("".join(cells) + "</tbody></table>")
        elif line.strip():
            para = [line.strip()]
            i += 1
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("#", "|")):
                para.append(lines[i].strip())
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
        else:
            i += 1
    return "\n".join(out)


def _viewer_name(status: str) -> str:
    return "viewer-" + re.sub(r"[^A-Za-z0-9_.-]", "_", status) + ".html"


def write_report(
    out: str | Path,
    markdown: str,
    *,
    plots: Sequence[str | Path] = (),
    examples: dict[str, tuple[int, str]] | None = None,
    tokenizer: Any = None,
    keep_last_k: int = 0,
) -> Path:
    """Write ``out/report.html``: the report's Markdown as HTML, the PNG plots inline (data URIs),
    and, for each status in ``examples`` (``{status: (row, response)}``, see :func:`note_examples`),
    a viewer page ``out/viewer-<status>.html`` linked from the validation table."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = _resolve_tokenizer(tokenizer) if examples else None
    links: dict[str, str] = {}
    ks = sorted({*DEFAULT_KS, keep_last_k})
    for status, (row, response) in sorted((examples or {}).items()):
        name = _viewer_name(status)
        write_viewer(response, out / name, ks=ks, k=keep_last_k, tokenizer=tok, title=f"row {row}: {status}")
        links[status] = name
    imgs = []
    for p in plots:
        p = Path(p)
        if p.suffix.lower() == ".png" and p.exists():
            data = base64.b64encode(p.read_bytes()).decode("ascii")
            imgs.append(
                f'<figure style="display:inline-block;margin:0"><img alt="{_esc(p.stem)}" '
                f'src="data:image/png;base64,{data}"><figcaption class="meta">{_esc(p.name)}'
                f"</figcaption></figure>"
            )
    body = markdown_to_html(markdown, links)
    lines = markdown.splitlines()
    title = lines[0].lstrip("# ").strip() if lines else "mementos-fast report"
    viewers = ""
    if links:
        viewers = (
            "<h2>Example traces</h2><p>"
            + " &middot; ".join(f'<a href="{_esc(n)}">{_esc(s)} (row {examples[s][0]:,})</a>' for s, n in links.items())  # type: ignore[index]
            + "</p>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>{_asset("viewer.css")}</style></head>
<body><main>
{body}
{viewers}
{('<h2>Plots</h2><div class="plots">' + "".join(imgs) + "</div>") if imgs else ""}
</main></body></html>
"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
