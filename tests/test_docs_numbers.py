"""Measured numbers in README.md and docs/*.md are quoted from the reports in reports/, never typed.

A quote is a span ``<!-- bench {ROW.FIELD} FORMAT -->TEXT<!-- /bench -->`` (benches/report.py
describes the syntax); its TEXT must be the value in the report's ``## Data`` block, formatted.
``python benches/report.py --update-docs`` rewrites the quotes after a report is regenerated.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_report():
    spec = importlib.util.spec_from_file_location("bench_report", REPO / "benches" / "report.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


report = _load_report()
REPORTS = sorted((REPO / "reports").glob("BENCHMARKS*.md"))


def test_every_quoted_number_equals_its_report():
    problems = report.check_docs()
    assert not problems, "quoted numbers differ from reports/ (run `python benches/report.py --update-docs`):\n" + (
        "\n".join(problems)
    )


def test_the_docs_quote_the_reports():
    counts = {doc.name: len(report.quotes(doc)) for doc in report.DOCS}
    # the README's benchmark section, EXPORT.md's tokenized export, FAST_BPE.md's and TOKENS.md's HF tables
    assert counts["README.md"] >= 100 and counts["EXPORT.md"] >= 20, counts
    assert counts["FAST_BPE.md"] >= 8 and counts["TOKENS.md"] >= 8, counts


@pytest.mark.parametrize("raw", sorted((REPO / "reports" / "json").glob("*.json")), ids=lambda p: p.stem)
def test_report_is_generated_from_its_raw_json(raw):
    md = REPO / "reports" / (raw.stem + ".md")
    assert md.is_file(), f"{raw.name} has no report {md.name}"
    want = report.render(json.loads(raw.read_text()), str(raw.relative_to(REPO)))
    assert md.read_text(encoding="utf-8") == want, (
        f"{md.name} is not what report.py writes from {raw.name}: "
        f"python benches/report.py --json {raw.relative_to(REPO)} --out {md.relative_to(REPO)}"
    )


@pytest.mark.parametrize("md", REPORTS, ids=lambda p: p.stem)
def test_data_block_covers_every_table_row(md):
    text = md.read_text(encoding="utf-8")
    data = report.read_values(md)
    shown = report.values_from_tables(text.split(f"\n{report.DATA_HEADING}\n")[0])
    assert sorted(data) == sorted(shown)
    for row, fields in shown.items():  # the tables show the data, rounded
        for field, value in fields.items():
            shown_to = 0.5 if field == "mb_per_s" else 0.06  # MB/s are shown as integers
            assert data[row][field] == pytest.approx(value, rel=0.06, abs=shown_to), (row, field)


def _doc(tmp_path: Path, text: str) -> Path:
    doc = tmp_path / "doc.md"
    doc.write_text(text, encoding="utf-8")
    return doc


def test_a_drifted_quote_fails_and_update_rewrites_it(tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    span = re.search(r"<!-- bench \{analyze/tokens/analyze_tokenizer_qwen3\.x\} \.1f -->([^<]*)<!-- /bench -->", readme)
    assert span, "the README quotes analyze --tokenizer's ratio"
    right = span.group(1)
    doc = _doc(tmp_path, readme[: span.start(1)] + "99.9" + readme[span.end(1) :])
    problems = report.check_docs([doc])
    assert len(problems) == 1 and "quotes '99.9'" in problems[0] and f"says {right!r}" in problems[0], problems
    assert report.update_docs([doc]) and report.check_docs([doc]) == []
    assert doc.read_text(encoding="utf-8") == readme


def test_expressions_formats_and_explicit_reports(tmp_path):
    name = "BENCHMARKS_tokens_2026-11-29.md"
    vals = report.read_values(REPO / "reports" / name)
    a, b = vals["export/tokenized/mementos_fast_1t"]["mean_s"], vals["export/tokenized/mementos_fast_2t"]["mean_s"]
    one, two = (f"{{{name}:export/tokenized/mementos_fast_{t}.mean_s}}" for t in ("1t", "2t"))
    text = f"<!-- bench {one}/{two} .3f -->0<!-- /bench -->x"
    doc = _doc(tmp_path, text)
    report.update_docs([doc])
    assert doc.read_text() == text.replace("-->0<", f"-->{a / b:.3f}<")


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- bench {parse/realistic/reference.x} .1f -->1.0<!-- /bench -->", "names no report"),
        ("<!-- bench-report BENCHMARKS.md -->\n<!-- bench {parse/nope/reference.x} .1f -->1<!-- /bench -->", "no row"),
        (
            "<!-- bench-report BENCHMARKS.md -->\n<!-- bench {parse/realistic/reference.nope} .1f -->1<!-- /bench -->",
            "no field",
        ),
        ("<!-- bench {NOPE.md:parse/realistic/reference.x} .1f -->1<!-- /bench -->", "no report NOPE.md"),
        ("<!-- bench-report BENCHMARKS.md -->\n<!-- bench __import__('os') .1f -->1<!-- /bench -->", "only numbers"),
        ("text\n<!-- bench {BENCHMARKS.md:parse/realistic/reference.x} .1f -->1.0<!-- /bench -->x", "begins the line"),
    ],
)
def test_bad_quotes_are_named(tmp_path, text, message):
    problems = report.check_docs([_doc(tmp_path, text)])
    assert len(problems) == 1 and message in problems[0], problems


# Ratios and throughputs in the README's benchmark section must be quotes. Allowed unquoted: the
# issues' goals, and the peers row (a script's output, no generated report; see reports/README.md).
ALLOWED = ("issue's 40x", "issue's 30x", "3-10x below", "bench_peers_bpe.py")
MEASURE = re.compile(r"\d[\d,.]*\s?(?:x|MB/s|ms)\b|\d[\d,.]*\s(?:s|minutes)\b")


def test_readme_benchmark_numbers_are_all_quoted():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Benchmarks\n") : readme.index("\n## ", readme.index("## Benchmarks\n") + 3)]
    section = re.sub(r"```.*?```", "", report.SPAN.sub("", section), flags=re.S)
    loose = [
        (line, m.group(0))
        for line in section.splitlines()
        if not any(a in line for a in ALLOWED)
        for m in MEASURE.finditer(re.sub(r"`[^`]*`", "", line))
    ]
    assert not loose, "measured numbers typed into the README instead of quoted from reports/:\n" + "\n".join(
        f"{n!r} in: {line}" for line, n in loose
    )


def test_a_new_preset_report_is_quoted_by_the_docs(tmp_path):
    doc = _doc(
        tmp_path,
        "<!-- bench-report BENCHMARKS_tokens_2026-11-29.md -->\n[table](reports/BENCHMARKS_tokens_2026-11-29.md)\n"
        "<!-- bench {BENCHMARKS_analyze_pool_2026-11-29.md:analyze/tokens/analyze_tokenizer_qwen3.mean_s} .2f -->"
        "3.06<!-- /bench -->",
    )
    report.repoint("tokens", "BENCHMARKS_tokens_2026-12-01.md", [doc])
    text = doc.read_text()
    assert "BENCHMARKS_tokens_2026-11-29" not in text and text.count("BENCHMARKS_tokens_2026-12-01.md") == 2
    assert "BENCHMARKS_analyze_pool_2026-11-29.md" in text


def test_cli_formats_raw_json_outside_reports(tmp_path):
    raw = REPO / "reports" / "json" / "BENCHMARKS_analyze_pool_2026-11-29.json"
    out = tmp_path / "r.md"
    subprocess.run(
        [sys.executable, str(REPO / "benches" / "report.py"), "--json", str(raw), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    assert not (tmp_path / "json").exists()  # raw results are kept only for reports in reports/
    text = out.read_text()
    assert "| analyze_tokenizer_qwen3 | 3062.2 ms |" in text and report.DATA_MARK in text


@pytest.mark.parametrize("doc", report.DOCS, ids=lambda p: p.name)
def test_quoted_docs_render_as_before(doc):
    """The spans are invisible on GitHub: each is inline HTML inside its paragraph or table cell."""
    markdown_it = pytest.importorskip("markdown_it")
    html = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(doc.read_text(encoding="utf-8"))
    visible = re.sub(r"<pre>.*?</pre>|<code>.*?</code>", "", re.sub(r"<!--.*?-->", "", html, flags=re.S), flags=re.S)
    assert "**" not in visible, "an emphasis around a quote did not render"
    assert "bench {" not in visible and "/bench" not in visible


def test_a_preset_runs_measures_and_merges(tmp_path, monkeypatch):
    """The --preset path end to end on a trivial benchmark: every run measured, results merged, the
    runs (environment, arguments) kept, the report and its data block rendered."""
    bench = tmp_path / "bench_trivial.py"
    bench.write_text(
        "import os\n\n"
        "def test_trivial(benchmark):\n"
        "    benchmark.group = 'trivial/' + os.environ['MEMENTOS_TRIVIAL']\n"
        "    benchmark.extra_info.update(impl='sum', bytes=8000, baseline=True)\n"
        "    benchmark.pedantic(sum, args=(range(1000),), rounds=2, iterations=1)\n"
    )
    runs = [{"env": {"MEMENTOS_TRIVIAL": name}, "args": [str(bench)]} for name in ("a", "b")]
    monkeypatch.setitem(report.PRESETS, "trivial", runs)
    data = report.run_preset("trivial")
    assert [r["env"]["MEMENTOS_TRIVIAL"] for r in data["mementos_runs"]] == ["a", "b"]
    vals = report.values(data)
    assert sorted(vals) == ["trivial/a/sum", "trivial/b/sum"] and vals["trivial/a/sum"]["x"] == 1.0
    text = report.render(data, "reports/json/BENCHMARKS_trivial_2026-12-01.json")
    assert "- `MEMENTOS_TRIVIAL=b pytest" in text and '"trivial/b/sum": {"mean_s":' in text
