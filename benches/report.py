"""Run the benchmark suite, write a report in reports/, and quote its numbers into the docs.

    python benches/report.py                   # runs `pytest benches --benchmark-only`, writes reports/BENCHMARKS.md
    python benches/report.py -- -k parse       # extra pytest arguments after `--`
    python benches/report.py --preset tokens   # the runs of one named report (PRESETS), written to
                                               # reports/BENCHMARKS_tokens_<date>.md + reports/json/...json
    python benches/report.py --json A B --out reports/X.md   # only format existing pytest-benchmark JSON (merged)
    python benches/report.py --save R.json     # also keep the raw results of this run
    python benches/report.py --update-docs     # rewrite every quoted number in README.md and docs/ from the reports
    python benches/report.py --check-docs      # list quoted numbers that differ from their report (exit 1)
    python benches/report.py --list-quotes     # every quoted number of the docs and the report value behind it

Throughput is bytes / mean time; "x BASE" is the ratio to the group's baseline measured in the same
run and the same group (fixture). The machine is described from the run.

Every report ends with a `## Data` section: one JSON object per table row (`group/impl`, with
`@<size>KB` for the scaling groups) holding its numbers at full precision (`mean_s`, `mb_per_s`,
`x`, `ns_per_byte` and every number of the benchmark's extra_info). The docs quote them in spans

    <!-- bench {ROW.FIELD} FORMAT -->31.7<!-- /bench -->x

where the braces may hold `REPORT:ROW.FIELD` (REPORT a file name in reports/) or name only the
row, then the report is the one named by the last `<!-- bench-report REPORT -->` above the span.
Several references may be combined with numbers and `+ - * /` (`{a.mean_s}/{b.mean_s}`); FORMAT is
a Python format spec (`.1f`, `,.0f`). tests/test_docs_numbers.py fails when a span's text is not
the formatted value; `--update-docs` rewrites the span texts.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import operator
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
RAW = REPORTS / "json"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Named reports: the runs (environment, pytest arguments) whose merged results make one report.
# `--preset NAME` runs them in order and writes reports/BENCHMARKS_NAME_<UTC date>.md and its raw
# JSON in reports/json/ (the README quotes it: run `--preset NAME --update-docs` on an idle machine
# with the release build installed, then commit reports/ and the docs).
PRESETS: dict[str, list[dict]] = {
    "tokens": [
        {
            "env": {"MEMENTOS_BENCH_ANALYZE_TOKENS_MB": "1024"},
            "args": ["benches/bench_analyze_tokens.py", "-k", "end_to_end"],
        },
        {"env": {"MEMENTOS_BENCH_TOKENIZED_MB": "40"}, "args": ["benches/bench_export_tokenized.py", "-k", "not peak"]},
        {
            "env": {"MEMENTOS_BENCH_TOKENIZED_PEAK_MB": "250"},
            "args": ["benches/bench_export_tokenized.py", "-k", "peak"],
        },
    ],
}


def run_pytest(paths_and_args: list[str], env: dict[str, str], out: Path) -> dict:
    """One pytest-benchmark run; its environment (every MEMENTOS_* variable) and arguments are kept
    in the results as `mementos_runs`, so the report can say how it was measured."""
    env = {**{k: v for k, v in os.environ.items() if k.startswith("MEMENTOS_")}, **env}
    cmd = [sys.executable, "-m", "pytest", *paths_and_args, "--benchmark-only", "-q", f"--benchmark-json={out}"]
    print("+", " ".join(f"{k}={v}" for k, v in env.items()), " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, **env})
    data = json.loads(out.read_text())
    data["mementos_runs"] = [{"env": env, "args": paths_and_args}]
    return data


def run_suite(extra: list[str], save: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return run_pytest(["benches", *extra], {}, save or Path(tmp) / "bench.json")


def run_preset(name: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return merge(
            [run_pytest(run["args"], run["env"], Path(tmp) / f"run{i}.json") for i, run in enumerate(PRESETS[name])]
        )


def merge(parts: list[dict]) -> dict:
    data = dict(parts[0])
    data["benchmarks"] = [b for p in parts for b in p["benchmarks"]]
    runs = [r for p in parts for r in p.get("mementos_runs", [])]
    if runs:
        data["mementos_runs"] = runs
    return data


def machine(data: dict) -> str:
    info = data.get("machine_info", {})
    cpu = info.get("cpu", {})
    brand = cpu.get("brand_raw") or platform.processor() or "unknown CPU"
    cores = cpu.get("count") or os.cpu_count()
    return (
        f"{brand}, {cores} logical cores, Python {info.get('python_version', platform.python_version())}, "
        f"{info.get('system', platform.system())} {info.get('release', platform.release())}"
    )


def _kind(rows: list[dict], group: str) -> str:
    if any("peak_increase_mb" in r["extra_info"] for r in rows):
        return "peak_increase"
    if any("peak_rss_mb" in r["extra_info"] for r in rows):
        return "job"
    if any("peak_rss_mib" in r["extra_info"] for r in rows):
        return "peak_rss"
    if any("hf_mean_s" in r["extra_info"] for r in rows):
        return "alternating"
    if group.startswith("scaling/"):
        return "scaling"
    return "speed"


def _groups(data: dict) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b.get("group") or b["name"]].append(b)
    return groups


def _impl(r: dict) -> str:
    return str(r["extra_info"].get("impl", r["name"]))


def _reference(rows: list[dict]) -> dict | None:
    return next((r for r in rows if r["extra_info"].get("baseline")), None) or next(
        (r for r in rows if _impl(r).startswith("reference")), None
    )


def values(data: dict) -> dict[str, dict[str, float]]:
    """The numbers of every table row at full precision, by row id (`group/impl[@<size>KB]`)."""
    out: dict[str, dict[str, float]] = {}
    for group, rows in sorted(_groups(data).items()):
        kind = _kind(rows, group)
        ref = _reference(rows) if kind == "speed" else None
        for r in rows:
            e, mean = r["extra_info"], r["stats"]["mean"]
            row = f"{group}/{_impl(r)}"
            v: dict[str, float] = {"mean_s": mean}
            if kind == "scaling":
                row += f"@{e['size'] / 1024:.0f}KB"
                v["ns_per_byte"] = mean / e["bytes"] * 1e9
            if e.get("bytes") and kind != "scaling":
                v["mb_per_s"] = e["bytes"] / mean / 1e6
            if kind == "peak_rss" and e.get("seconds"):
                v["mb_per_s"] = e["input_mb"] / e["seconds"]
            if ref is not None:
                v["x"] = ref["stats"]["mean"] / mean
            for k, x in e.items():
                if isinstance(x, (int, float)) and not isinstance(x, bool):
                    v.setdefault(k, x)
            if row in out:  # the same benchmark merged from two runs: keep both, the later one numbered
                n = 2
                while f"{row}#{n}" in out:
                    n += 1
                print(f"warning: two results for the table row {row!r}; the later one is {row}#{n}", file=sys.stderr)
                row = f"{row}#{n}"
            out[row] = v
    return out


def _head(group: str, columns: list[str], note: str = "") -> list[str]:
    """A table's heading (the group, bold, then ``note``), a blank line, its header row and rule."""
    return [
        f"**{group}**" + (f" {note}" if note else ""),
        "",
        "| " + " | ".join(columns) + " |",
        "|" + " --- |" * len(columns),
    ]


def table(data: dict) -> str:
    lines = [f"Machine: {machine(data)}. Date: {data.get('datetime', '')[:10]}.", ""]
    for group, rows in sorted(_groups(data).items()):
        kind = _kind(rows, group)
        if kind == "peak_increase":
            lines += _head(
                group, ["implementation", "column", "peak RSS increase", "share of column", "result's own buffers"]
            )
            for r in rows:
                e = r["extra_info"]
                own = f"{e['result_own_mb']:.1f} MB" if "result_own_mb" in e else "n/a"
                lines.append(
                    f"| {e.get('impl')} | {e['column_mb']:.0f} MB | {e['peak_increase_mb']:.1f} MB "
                    f"| {e['ratio']:.1%} | {own} |"
                )
        elif kind == "job":
            lines += _head(group, ["job", "corpus", "time", "throughput", "rows/s", "parsing share", "peak RSS"])
            for r in rows:
                e, mean = r["extra_info"], r["stats"]["mean"]
                lines.append(
                    f"| {e['impl']} | {e['fixture']}, {e['rows']:,} rows | {mean:.1f} s "
                    f"| {e['bytes'] / mean / 1e6:,.0f} MB/s | {e['rows_per_s']:,.0f} "
                    f"| {e['parse_share']:.0%} | {e['peak_rss_mb']:,.0f} MB |"
                )
        elif kind == "peak_rss":
            lines += _head(
                group,
                ["job", "input", "peak RSS", "time", "throughput", "packing efficiency"],
                "(a fresh process; time measured inside it)",
            )
            for r in rows:
                e = r["extra_info"]
                pack = f"{e['packing_efficiency']:.1%}" if "packing_efficiency" in e else "n/a"
                lines.append(
                    f"| {_impl(r)} | {e['input_mb']:,.1f} MB | {e['peak_rss_mib']:,.1f} MiB | {e['seconds']:.1f} s "
                    f"| {e['input_mb'] / e['seconds']:,.1f} MB/s | {pack} |"
                )
        elif kind == "alternating":
            cpu = all("x_hf_cpu" in r["extra_info"] for r in rows)  # reports from before stop 19 lack it
            lines += _head(
                group,
                ["implementation", "rounds", "mean time", "HF mean, same rounds", "x HF (means)", "x HF, lowest round"]
                + (["x HF in CPU time (means)"] if cpu else []),
                "(each round: one HF `encode_batch_fast` pass, "
                + ("one untimed export, " if any(r["extra_info"].get("warm_up_exports") for r in rows) else "")
                + "then the export; same minutes"
                + ("; CPU time: user + system of all the process's threads" if cpu else "")
                + ")",
            )
            for r in rows:
                e, mean = r["extra_info"], r["stats"]["mean"]
                lines.append(
                    f"| {_impl(r)} | {e['rounds']:.0f} | {mean * 1e3:.1f} ms | {e['hf_mean_s'] * 1e3:,.1f} ms "
                    f"| {e['x_hf']:.1f}x | {e['x_hf_min_round']:.1f}x |" + (f" {e['x_hf_cpu']:.1f}x |" if cpu else "")
                )
        elif kind == "scaling":
            lines += _head(
                group,
                ["implementation", "row size", "time", "ns per byte"],
                "(time per byte should stay flat as rows grow)",
            )
            for r in sorted(rows, key=lambda r: (r["extra_info"]["impl"], r["extra_info"]["size"])):
                e, mean = r["extra_info"], r["stats"]["mean"]
                lines.append(
                    f"| {e['impl']} | {e['size'] / 1024:,.0f} KB | {mean * 1e3:,.2f} ms "
                    f"| {mean / e['bytes'] * 1e9:.2f} |"
                )
        else:
            ref = _reference(rows)
            base = ref["extra_info"].get("impl", "reference") if ref else "reference"
            lines += _head(group, ["implementation", "mean time", "throughput", f"x {base}"])
            for r in sorted(rows, key=lambda r: r["stats"]["mean"], reverse=True):
                e, mean = r["extra_info"], r["stats"]["mean"]
                mbps = f"{e['bytes'] / mean / 1e6:,.0f} MB/s" if e.get("bytes") else "n/a"
                ratio = f"{ref['stats']['mean'] / mean:.1f}x" if ref else "n/a"
                lines.append(f"| {e.get('impl', r['name'])} | {mean * 1e3:.1f} ms | {mbps} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


DATA_HEADING = "## Data"
DATA_MARK = "<!-- bench-data -->"


def data_section(vals: dict[str, dict[str, float]], note: str = "") -> str:
    body = ",\n".join(
        f"{json.dumps(row)}: {json.dumps({k: round(v, 6) if isinstance(v, float) else v for k, v in fields.items()})}"
        for row, fields in sorted(vals.items())
    )
    return (
        f"{DATA_HEADING}\n\n"
        "The numbers of the tables above, one row per line, at full precision"
        f"{note}. The docs quote them (`python benches/report.py --update-docs`; "
        "tests/test_docs_numbers.py checks every quote).\n\n"
        f"{DATA_MARK}\n```json\n{{\n{body}\n}}\n```\n"
    )


def render(data: dict, raw: str | None = None) -> str:
    """The report; `raw` names the JSON file it is generated from (relative to the repository)."""
    source = ""
    if raw:
        md = "reports/" + Path(raw).stem + ".md"
        source = f" from `{raw}` (regenerate: `python benches/report.py --json {raw} --out {md}`)"
    how = ""
    runs = data.get("mementos_runs")
    if runs:
        how = "Measured with (`pytest ... --benchmark-only`, in this order, results merged):\n\n" + "".join(
            f"- `{' '.join([*(f'{k}={v}' for k, v in r['env'].items()), 'pytest', *map(_quote, r['args'])])}`\n"
            for r in runs
        )
        how += "\n"
    return (
        f"# Benchmark report\n\nGenerated by `python benches/report.py`{source}.\n\n{how}"
        + table(data)
        + "\n"
        + data_section(values(data))
    )


def _quote(arg: str) -> str:
    return f'"{arg}"' if " " in arg else arg


def read_values(report: Path) -> dict[str, dict[str, float]]:
    """The `## Data` block of a report."""
    text = report.read_text(encoding="utf-8")
    at = text.find(DATA_MARK)
    if at < 0:
        raise ValueError(f"{report.name} has no data block ({DATA_MARK}): regenerate it with benches/report.py")
    body = text[at + len(DATA_MARK) :].strip()
    if not body.startswith("```json"):
        raise ValueError(f"{report.name}: the data block is not a ```json fence")
    return json.loads(body[len("```json") : body.index("```", 7)])


# --- reports written before the data block existed -------------------------------------------


def _num(cell: str) -> float:
    return float(re.sub(r"[^0-9.eE+-]", "", cell.replace(",", "")))


def values_from_tables(md: str) -> dict[str, dict[str, float]]:
    """The numbers of a report's tables as displayed (for a report whose raw JSON was not kept)."""
    out: dict[str, dict[str, float]] = {}
    group = ""
    header: list[str] = []
    for line in md.splitlines():
        m = re.match(r"^\*\*(.+?)\*\*", line)
        if m:
            group, header = m.group(1), []
            continue
        if not line.startswith("|") or line.startswith("| ---"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not header:
            header = cells
            continue
        h, v = header, dict(zip(header, cells))
        row = f"{group}/{cells[0]}"
        f: dict[str, float] = {}
        if h[:3] == ["implementation", "mean time", "throughput"]:
            f["mean_s"] = _num(v["mean time"]) / 1e3
            if v["throughput"] != "n/a":  # no bytes measured (a load time, say)
                f["mb_per_s"] = _num(v["throughput"])
            if v[h[3]] != "n/a":
                f["x"] = _num(v[h[3]])
        elif h[:2] == ["job", "input"]:
            f["input_mb"] = _num(v["input"])
            f["peak_rss_mib"] = _num(v["peak RSS"])
            f["seconds"] = _num(v["time"])
            f["mb_per_s"] = _num(v["throughput"])
        elif h[0] == "job":
            f["mean_s"] = _num(v["time"])
            f["mb_per_s"] = _num(v["throughput"])
            f["rows"] = _num(re.search(r"([\d,]+) rows$", v["corpus"]).group(1))  # type: ignore[union-attr]
            f["rows_per_s"] = _num(v["rows/s"])
            f["parse_share"] = _num(v["parsing share"]) / 100
            f["peak_rss_mb"] = _num(v["peak RSS"])
        elif "peak RSS increase" in h:
            f["column_mb"] = _num(v["column"])
            f["peak_increase_mb"] = _num(v["peak RSS increase"])
            f["ratio"] = _num(v["share of column"]) / 100
            if v["result's own buffers"] != "n/a":
                f["result_own_mb"] = _num(v["result's own buffers"])
        elif h[:2] == ["implementation", "rounds"]:
            f["rounds"] = _num(v["rounds"])
            f["mean_s"] = _num(v["mean time"]) / 1e3
            f["hf_mean_s"] = _num(v["HF mean, same rounds"]) / 1e3
            f["x_hf"] = _num(v["x HF (means)"])
            f["x_hf_min_round"] = _num(v["x HF, lowest round"])
            if "x HF in CPU time (means)" in v:
                f["x_hf_cpu"] = _num(v["x HF in CPU time (means)"])
        elif h[1] == "row size":
            row += f"@{_num(v['row size']):.0f}KB"
            f["mean_s"] = _num(v["time"]) / 1e3
            f["ns_per_byte"] = _num(v["ns per byte"])
        else:
            raise ValueError(f"unknown table header {h}")
        if row in out:  # numbered as values() numbers them
            n = 2
            while f"{row}#{n}" in out:
                n += 1
            row = f"{row}#{n}"
        out[row] = f
    return out


def index_legacy(report: Path) -> None:
    text = report.read_text(encoding="utf-8")
    head = text.split(f"\n{DATA_HEADING}\n")[0].rstrip("\n") + "\n"
    note = " (here: as displayed, parsed from the tables by `report.py --index`, the raw JSON of this run was not kept)"
    report.write_text(head + "\n" + data_section(values_from_tables(head), note), encoding="utf-8")


# --- quoted numbers in the docs ---------------------------------------------------------------

SPAN = re.compile(r"<!-- bench (?P<expr>[^>]*?) (?P<fmt>\S+) -->(?P<text>.*?)<!-- /bench -->", re.S)
REPORT = re.compile(r"<!-- bench-report (?P<file>\S+) -->")
REF = re.compile(r"\{(?:(?P<file>[^{}:]+):)?(?P<row>[^{}]+)\.(?P<field>\w+)\}")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


@dataclass
class Quote:
    doc: Path
    line: int
    start: int  # of the span's text
    end: int
    text: str
    expr: str
    fmt: str
    report: str | None  # the bench-report in force, if any
    at_line_start: bool = False

    def where(self) -> str:
        doc = self.doc.resolve()
        return f"{doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc}:{self.line}"


def quotes(doc: Path) -> list[Quote]:
    text = doc.read_text(encoding="utf-8")
    marks = [(m.start(), m.group("file")) for m in REPORT.finditer(text)]
    out = []
    for m in SPAN.finditer(text):
        current = None
        for pos, name in marks:
            if pos < m.start():
                current = name
        out.append(
            Quote(
                doc,
                text.count("\n", 0, m.start()) + 1,
                m.start("text"),
                m.end("text"),
                m.group("text"),
                m.group("expr"),
                m.group("fmt"),
                current,
                m.start() == 0 or text[m.start() - 1] == "\n",
            )
        )
    return out


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval(node.operand)
    raise ValueError(f"only numbers, references and + - * / are allowed, not {ast.dump(node)}")


class Reports:
    """The data blocks of reports/, read once each."""

    def __init__(self) -> None:
        self.cache: dict[str, dict[str, dict[str, float]]] = {}

    def get(self, name: str) -> dict[str, dict[str, float]]:
        if name not in self.cache:
            path = REPORTS / name
            if not path.is_file():
                raise ValueError(f"no report {name} in reports/")
            self.cache[name] = read_values(path)
        return self.cache[name]

    def value(self, q: Quote) -> float:
        def sub(m: re.Match) -> str:
            name = m.group("file") or q.report
            if name is None:
                raise ValueError(f"{m.group(0)} names no report and no <!-- bench-report FILE --> precedes it")
            rows = self.get(name)
            row, field = m.group("row"), m.group("field")
            if row not in rows:
                raise ValueError(f"{name} has no row {row!r}")
            if field not in rows[row]:
                raise ValueError(f"{name} row {row!r} has no field {field!r} (it has {', '.join(rows[row])})")
            return repr(float(rows[row][field]))

        expr = REF.sub(sub, q.expr)
        return _eval(ast.parse(expr, mode="eval"))

    def expected(self, q: Quote) -> str:
        return format(self.value(q), q.fmt)


def check_docs(docs: list[Path] = DOCS) -> list[str]:
    """One line per quoted number that differs from its report (or cannot be resolved)."""
    reports, problems = Reports(), []
    for doc in docs:
        for q in quotes(doc):
            try:
                want = reports.expected(q)
            except (ValueError, SyntaxError) as e:
                problems.append(f"{q.where()}: {q.expr}: {e}")
                continue
            if q.text != want:
                problems.append(f"{q.where()}: quotes {q.text!r}, the report says {want!r} ({q.expr})")
            if q.at_line_start:
                problems.append(f"{q.where()}: a quote begins the line, which Markdown reads as an HTML block")
    return problems


def update_docs(docs: list[Path] = DOCS) -> list[str]:
    """Rewrite the quoted numbers from the reports; returns one line per change."""
    reports, changes = Reports(), []
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        for q in reversed(quotes(doc)):
            want = reports.expected(q)
            if q.text != want:
                changes.append(f"{q.where()}: {q.text} -> {want}")
                text = text[: q.start] + want + text[q.end :]
        if text != doc.read_text(encoding="utf-8"):
            doc.write_text(text, encoding="utf-8")
    return changes[::-1]


def list_quotes(docs: list[Path] = DOCS) -> list[str]:
    """One line per quoted number: where, the text, and the report values it comes from."""
    out = []
    for doc in docs:
        for q in quotes(doc):
            refs = [f"{m.group('file') or q.report}:{m.group('row')}.{m.group('field')}" for m in REF.finditer(q.expr)]
            out.append(f"{q.where()}\t{q.text}\t{q.expr} ({', '.join(dict.fromkeys(refs))})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--json", type=Path, nargs="+", help="format these pytest-benchmark JSON files (merged) instead of running"
    )
    ap.add_argument("--preset", choices=sorted(PRESETS), help="run the named report's benchmarks (see PRESETS)")
    ap.add_argument("--save", type=Path, help="keep the raw pytest-benchmark JSON of this run here")
    ap.add_argument("--out", type=Path, help="the report (default reports/BENCHMARKS.md, or the preset's)")
    ap.add_argument("--update-docs", action="store_true", help="then rewrite the docs' quoted numbers from reports/")
    ap.add_argument(
        "--check-docs", action="store_true", help="only check the docs' quoted numbers (exit 1 on a difference)"
    )
    ap.add_argument("--list-quotes", action="store_true", help="list every quoted number and its source")
    ap.add_argument("--index", type=Path, help="add the data block to a report whose raw JSON was not kept")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args()
    if args.check_docs:
        problems = check_docs()
        print("\n".join(problems) or "every quoted number equals its report")
        sys.exit(1 if problems else 0)
    if args.list_quotes:
        print("\n".join(list_quotes()))
        return
    if args.index:
        index_legacy(args.index)
        return
    if args.update_docs and not (args.json or args.preset or args.pytest_args):
        print("\n".join(update_docs()) or "the docs already quote the reports")
        return
    out = args.out
    if args.json:
        data = merge([json.loads(p.read_text()) for p in args.json])
    elif args.preset:
        data = run_preset(args.preset)
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        out = out or REPORTS / f"BENCHMARKS_{args.preset}_{date}.md"
    else:
        data = run_suite(args.pytest_args, args.save)
    out = (out or REPORTS / "BENCHMARKS.md").resolve()
    if args.save and args.preset:
        args.save.write_text(json.dumps(data, indent=1) + "\n")
    raw = None
    if out.parent == REPORTS:
        # every report in reports/ keeps its raw results in reports/json/, to be regenerated with --json
        path = RAW / (out.stem + ".json")
        if not (args.json and len(args.json) == 1 and args.json[0].resolve() == path):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=1) + "\n")
        raw = str(path.relative_to(ROOT))
    text = render(data, raw)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    if args.update_docs:
        if args.preset:
            repoint(args.preset, out.name)
        print("\n".join(update_docs()) or "the docs already quote the reports")


def repoint(preset: str, name: str, docs: list[Path] = DOCS) -> None:
    """Make the docs quote and link the new report of a preset (its file name holds the date)."""
    old = re.compile(rf"BENCHMARKS_{re.escape(preset)}_\d{{4}}-\d{{2}}-\d{{2}}\.md")
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        new = old.sub(name, text)
        if new != text:
            doc.write_text(new, encoding="utf-8")
            print(f"{doc}: now quotes {name}")


if __name__ == "__main__":
    main()
