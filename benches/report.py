"""Run the benchmark suite and write the table the README shows.

    python benches/report.py                 # runs `pytest benches --benchmark-only`, writes reports/BENCHMARKS.md
    python benches/report.py --json A B      # only format existing pytest-benchmark JSON files (merged)
    python benches/report.py --save R.json   # also keep the raw results of this run
    python benches/report.py -- -k parse     # extra pytest arguments after `--`

Throughput is bytes / mean time; "x reference" is the ratio to the reference implementation
measured in the same run and the same group (fixture). The machine is described from the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_suite(extra: list[str], save: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = save or Path(tmp) / "bench.json"
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            str(ROOT / "benches"),
            "--benchmark-only",
            "-q",
            f"--benchmark-json={out}",
            *extra,
        ]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        return json.loads(out.read_text())


def machine(data: dict) -> str:
    info = data.get("machine_info", {})
    cpu = info.get("cpu", {})
    brand = cpu.get("brand_raw") or platform.processor() or "unknown CPU"
    return (
        f"{brand}, {os.cpu_count()} logical cores, Python {info.get('python_version', platform.python_version())}, "
        f"{info.get('system', platform.system())} {info.get('release', platform.release())}"
    )


def table(data: dict) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b.get("group") or b["name"]].append(b)
    lines = [f"Machine: {machine(data)}. Date: {data.get('datetime', '')[:10]}.", ""]
    for group in sorted(groups):
        rows = groups[group]
        if any("peak_increase_mb" in r["extra_info"] for r in rows):
            lines += [
                f"**{group}**",
                "",
                "| implementation | column | peak RSS increase | share of column | result's own buffers |",
                "| --- | --- | --- | --- | --- |",
            ]
            for r in rows:
                e = r["extra_info"]
                own = f"{e['result_own_mb']:.1f} MB" if "result_own_mb" in e else "n/a"
                lines.append(
                    f"| {e.get('impl')} | {e['column_mb']:.0f} MB | {e['peak_increase_mb']:.1f} MB "
                    f"| {e['ratio']:.1%} | {own} |"
                )
            lines.append("")
            continue
        if any("peak_rss_mb" in r["extra_info"] for r in rows):
            lines += [
                f"**{group}**",
                "",
                "| job | corpus | time | throughput | rows/s | parsing share | peak RSS |",
                "| --- | --- | --- | --- | --- | --- | --- |",
            ]
            for r in rows:
                e, mean = r["extra_info"], r["stats"]["mean"]
                lines.append(
                    f"| {e['impl']} | {e['fixture']}, {e['rows']:,} rows | {mean:.1f} s "
                    f"| {e['bytes'] / mean / 1e6:,.0f} MB/s | {e['rows_per_s']:,.0f} "
                    f"| {e['parse_share']:.0%} | {e['peak_rss_mb']:,.0f} MB |"
                )
            lines.append("")
            continue
        if group.startswith("scaling/"):
            lines += [
                f"**{group}** (time per byte should stay flat as rows grow)",
                "",
                "| implementation | row size | time | ns per byte |",
                "| --- | --- | --- | --- |",
            ]
            for r in sorted(rows, key=lambda r: (r["extra_info"]["impl"], r["extra_info"]["size"])):
                e, mean = r["extra_info"], r["stats"]["mean"]
                lines.append(
                    f"| {e['impl']} | {e['size'] / 1024:,.0f} KB | {mean * 1e3:,.2f} ms "
                    f"| {mean / e['bytes'] * 1e9:.2f} |"
                )
            lines.append("")
            continue
        ref = next((r for r in rows if r["extra_info"].get("baseline")), None) or next(
            (r for r in rows if str(r["extra_info"].get("impl", "")).startswith("reference")), None
        )
        base = ref["extra_info"].get("impl", "reference") if ref else "reference"
        lines += [
            f"**{group}**",
            "",
            f"| implementation | mean time | throughput | x {base} |",
            "| --- | --- | --- | --- |",
        ]
        for r in sorted(rows, key=lambda r: r["stats"]["mean"], reverse=True):
            e, mean = r["extra_info"], r["stats"]["mean"]
            mbps = e["bytes"] / mean / 1e6 if e.get("bytes") else float("nan")
            ratio = f"{ref['stats']['mean'] / mean:.1f}x" if ref else "n/a"
            lines.append(f"| {e.get('impl', r['name'])} | {mean * 1e3:.1f} ms | {mbps:,.0f} MB/s | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--json", type=Path, nargs="+", help="format these pytest-benchmark JSON files (merged) instead of running"
    )
    ap.add_argument("--save", type=Path, help="keep the raw pytest-benchmark JSON of this run here")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "BENCHMARKS.md")
    ap.add_argument("pytest_args", nargs="*")
    args = ap.parse_args()
    if args.json:
        parts = [json.loads(p.read_text()) for p in args.json]
        data = parts[0]
        for extra in parts[1:]:
            data["benchmarks"] += extra["benchmarks"]
    else:
        data = run_suite(args.pytest_args, args.save)
    text = table(data)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Benchmark report\n\nGenerated by `python benches/report.py`.\n\n" + text + "\n")
    print(text)


if __name__ == "__main__":
    main()
