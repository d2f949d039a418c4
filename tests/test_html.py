"""The HTML viewer and report (mementos_fast.html): data checked against the engine's plan and
replay, self-containment, the CLI, and the pages rendered in a real headless Chromium (skipped
with a message when none is installed: `apt-get install -y chromium`, or set MEMENTOS_CHROMIUM).
Screenshots are kept under reports/tmp/ (gitignored)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import mementos_fast as mf
from mementos_fast import cli
from mementos_fast import html as mh

ROOT = Path(__file__).resolve().parents[1]
# The real Memento model output (as tests/conftest.py finds the real traces); a generated trace without it.
REAL = next(
    (
        Path(c) / "memento_model_outputs.jsonl"
        for c in (
            os.environ.get("MEMENTOS_REAL_DATA"),
            ROOT.parent / "shared" / "data" / "real",
            "/work/shared/data/real",
        )
        if c and (Path(c) / "memento_model_outputs.jsonl").exists()
    ),
    Path("/nonexistent"),
)
ARTIFACTS = ROOT / "reports" / "tmp" / "html"


def trace(n: int, answer: str = "42") -> str:
    parts = ["<think>\n"]
    for i in range(n):
        parts.append(f"<|block_start|> reasoning of block {i} é {'x' * (20 + 7 * i)} <|block_end|>\n")
        parts.append(f"<|summary_start|> memento {i} <|summary_end|>\n")
    parts.append(f"</think>\n{answer}")
    return "".join(parts)


def real_response() -> str:
    if REAL.exists():
        return json.loads(REAL.read_text().splitlines()[0])["response"]
    from mementos_fast import synthetic

    return synthetic.generate_rows(1, seed=3)[0]["response"]  # a clean checkout without the workspace


# ---------------------------------------------------------------- data, no browser


@pytest.mark.parametrize(
    "text",
    [
        trace(6),
        trace(1),
        trace(0),
        "no delimiters at all",
        "<think><|block_start|> a <|block_end|><|summary_start|> m",
        "<think><|block_start|> a <|block_start|> nested <|block_end|> tail <|block_end|>"
        "<|summary_start|> s1 <|summary_end|><|summary_start|> s2 <|summary_end|></think>x",
        "",
        "<think>\n<|block_start|> ü " * 3,
    ],
)
def test_viewer_data_follows_the_plan_and_the_replay(text: str) -> None:
    d = mh.viewer_data(text)
    raw = text.encode()
    assert d["positions"][0] == 0 and d["positions"][-1] == len(raw)
    assert d["positions"] == sorted(set(d["positions"]))
    assert len(d["generated"]) == len(d["positions"])
    for k in d["ks"]:
        plan = mf.eviction_plan([text], k).to_pylist()[0]
        p = d["plans"][str(k)]
        assert p["trigger"] == plan["trigger"]
        assert len(d["units"]) == plan["n_blocks"]
        assert [u["start"] for u in d["units"]] == plan["block_start"]
        replay = mf.replay_batch([text], k).to_pylist()[0]
        assert p["peak"] == replay["peak_len"]
        assert p["visible"][-1] == replay["final_len"]
        assert len(p["visible"]) == len(d["positions"])
    assert d["plans"]["-1"]["visible"] == d["generated"]  # no compaction: everything stays
    # Every byte outside the units' delimiters is shown somewhere (lossless display).
    shown = bytearray(len(raw))
    for u in d["units"]:
        a, b = u["content"]
        shown[a:b] = b"\x01" * (b - a)
        if "memento" in u:
            a, b = u["memento"]["content"]
            shown[a:b] = b"\x01" * (b - a)
    for g in d["gaps"] + ([d["answer"]] if d["answer"] else []):
        assert not any(shown[g["start"] : g["end"]]), "shown twice"
        shown[g["start"] : g["end"]] = b"\x01" * (g["end"] - g["start"])
    delims = {m.start(): m.end() for m in re.finditer(rb"<\|(block|summary)_(start|end)\|>", raw)}
    i = 0
    while i < len(raw):
        if i in delims and not shown[i]:
            i = delims[i]
            continue
        assert shown[i], (i, raw[max(0, i - 20) : i + 20])
        i += 1


def test_blocks_and_mementos_match_the_parse() -> None:
    text = trace(5)
    d = mh.viewer_data(text)
    p = mf.parse(text)
    assert [u["text"].strip() for u in d["units"]] == p.blocks
    assert [u["memento"]["text"].strip() for u in d["units"]] == p.summaries
    assert [u["chars"] for u in d["units"]] == [len(u["text"]) for u in d["units"]]
    assert d["final_answer"] == "42"
    assert d["answer"] == {"start": len(text.encode()) - 3, "end": len(text.encode()), "text": "\n42"}
    assert not any("42" in g["text"] for g in d["gaps"])


def test_evictions_per_k() -> None:
    text = trace(6)
    d = mh.viewer_data(text)
    end = d["positions"][-1]

    def evicted(k: int, pos: int) -> set[int]:
        return {i for i, t in enumerate(d["plans"][str(k)]["trigger"]) if t is not None and pos > t}

    assert evicted(-1, end) == set()
    assert evicted(0, end) == set(range(6))
    assert evicted(2, end) == set(range(4))  # block j leaves at the summary end of block j + 2


def test_tokens_equal_the_tokenizer() -> None:
    pytest.importorskip("tokenizers")
    try:
        path = mf.qwen3_tokenizer_path()
    except Exception as e:  # pragma: no cover
        pytest.skip(f"no Qwen3 tokenizer: {e}")
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(path))
    text = real_response()
    d = mh.viewer_data(text, tokenizer="qwen3")
    assert d["unit"] == "tokens"
    for u in d["units"][:6]:
        assert u["tokens"] == len(hf.encode(u["text"], add_special_tokens=False).ids)
        if "memento" in u:
            assert u["memento"]["tokens"] == len(hf.encode(u["memento"]["text"], add_special_tokens=False).ids)
    curve = mf.replay_curve(text, 0, tokenizer=mf.load_tokenizer(path))
    assert d["total_units"] == curve.column("generated").to_pylist()[-1]


def test_a_counter_gives_the_same_page_as_the_tokenizer() -> None:
    """The CLI hands its run's counter to the report: the viewer's data is the same as with the
    tokenizer itself (sizes and curves in tokens)."""
    pytest.importorskip("tokenizers")
    try:
        mf.qwen3_tokenizer_path()
    except Exception as e:  # pragma: no cover
        pytest.skip(f"no Qwen3 tokenizer: {e}")
    from mementos_fast.tokens import early_counter, token_counter

    text = real_response()
    want = mh.viewer_data(text, tokenizer="qwen3")
    for counter in (token_counter("qwen3"), early_counter("qwen3")):
        assert mh.viewer_data(text, tokenizer=counter) == want


def test_page_is_self_contained_and_marks_the_problem(tmp_path: Path) -> None:
    bad = (
        "<think><|block_start|> one <|block_end|><|summary_start|> m1 <|summary_end|>"
        "<|block_end|> stray end</think>answer"
    )
    p = mf.parse(bad)
    assert p.status != "ok"
    page = mh.write_viewer(bad, tmp_path / "v.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert f"byte {p.error_offset:,}" in page and 'id="problem"' in page
    assert p.status in page
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)[1])
    assert data["ks"] == list(mh.DEFAULT_KS)


def test_script_breakout_is_escaped(tmp_path: Path) -> None:
    text = (
        "<think><|block_start|> </script><script>alert(1)</script> <|block_end|>"
        "<|summary_start|> <b>m</b> <|summary_end|></think>x"
    )
    page = mh.viewer_html(text)
    assert "<script>alert(1)" not in page and "&lt;/script&gt;" in page and "<b>m</b>" not in page


def test_bad_arguments_name_the_mistake() -> None:
    with pytest.raises(mf.MementoValueError, match="keep_last_k=7"):
        mh.viewer_data(trace(2), k=7)
    with pytest.raises(mf.MementoValueError, match="-1"):
        mh.viewer_data(trace(2), ks=[-3, 0])
    with pytest.raises(mf.MementoValueError, match="response string"):
        mh.viewer_data(None)  # type: ignore[arg-type]


def test_cli_show_html(tmp_path: Path, capsys) -> None:
    out = tmp_path / "row3.html"
    assert cli.main(["show", "--row", "3", "--html", str(out), "--keep-last-k", "4"]) == 0
    page = out.read_text()
    data = json.loads(re.search(r'id="data">(.*?)</script>', page, re.S)[1])
    assert data["k"] == 4 and 4 in data["ks"]
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # the CLI checks options before any work: argparse's exit 2
        cli.main(["show", "--row", "3", "--html", str(out), "--keep-last-k", "-5"])
    assert e.value.code == 2
    assert "must be at least -1" in capsys.readouterr().err
    # A user's mistake: one line naming it, exit status 2, no page written.
    bad = tmp_path / "bad.html"
    assert cli.main(["show", "--row", "3", "--html", str(bad), "--tokenizer", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert "no tokenizer.json" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not bad.exists()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert cli.main(["analyze", "--out", str(out), "--quiet"]) == 0
    return out


def test_analyze_writes_report_html(report_dir: Path) -> None:
    out = report_dir
    page = (out / "report.html").read_text()
    validation = json.loads((out / "validation.json").read_text())
    md = (out / "report.md").read_text()
    assert page.count("<table>") == len(re.findall(r"^\|---", md, re.M)) >= 3  # every table of report.md
    for v in validation:
        assert f"<td>{v['rows']}</td>" in page
    assert "data:image/png;base64," in page
    assert page.count("<img") == len(list(out.glob("*.png")))
    for v in validation:
        name = mh._viewer_name(v["status"])
        assert f'href="{name}"' in page, v["status"]
        viewer = (out / name).read_text()
        assert f"row {v['examples'][0]}: {v['status']}" in viewer  # the first row of that status
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)


# ---------------------------------------------------------------- in a real browser


def find_browser() -> str | None:
    env = os.environ.get("MEMENTOS_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


BROWSER = find_browser()
needs_browser = pytest.mark.skipif(
    BROWSER is None,
    reason="no headless Chromium found: `apt-get install -y chromium` (or set MEMENTOS_CHROMIUM) "
    "to run the browser tests of the HTML viewer",
)


def browse(page: Path, fragment: str = "", *, screenshot: Path | None = None, tmp: Path) -> str:
    """Load `page#fragment` in headless Chromium; the DOM after scripts ran (or a screenshot)."""
    args = [
        BROWSER,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--virtual-time-budget=3000",
    ]
    if screenshot is not None:
        args += ["--window-size=1280,1500", f"--screenshot={screenshot}"]
    else:
        args += ["--dump-dom"]
    url = page.resolve().as_uri() + (f"#{fragment}" if fragment else "")
    r = subprocess.run([*args, url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


class Dom(HTMLParser):
    """The parts of the dumped DOM the tests read."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.blocks: dict[int, set[str]] = {}
        self.state: dict[str, str] = {}
        self.body: dict[str, str] = {}
        self.errors: list[str] = []
        self.options: list[str] = []
        self.polylines = 0
        self._in_errors = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = a
        if tag == "details" and "data-i" in a:
            self.blocks[int(a["data-i"])] = set(a.get("class", "").split())
        if a.get("id") == "state":
            self.state = a
        if a.get("id") == "errors":
            self._in_errors = True
        if tag == "option":
            self.options.append(a.get("value", ""))
        if tag == "polyline":
            self.polylines += 1

    def handle_endtag(self, tag):
        if tag == "ul":
            self._in_errors = False

    def handle_data(self, data):
        if self._in_errors and data.strip():
            self.errors.append(data)


def evicted_of(dom: Dom) -> set[int]:
    return {i for i, c in dom.blocks.items() if "evicted" in c}


@pytest.fixture(scope="module")
def real_page(tmp_path_factory) -> tuple[Path, dict, str]:
    tmp = tmp_path_factory.mktemp("viewer")
    text = real_response()
    path = mh.write_viewer(text, tmp / "viewer.html", title="real trace")
    return path, mh.viewer_data(text), text


@needs_browser
def test_browser_viewer_greys_what_the_plan_evicts(real_page, tmp_path: Path) -> None:
    path, d, _ = real_page
    n = len(d["units"])
    assert n >= 3
    end = d["positions"][-1]
    triggers = [t for t in d["plans"]["0"]["trigger"] if t is not None]
    assert len(triggers) >= 2
    mid = (triggers[0] + triggers[1]) // 2 + 1
    seen = {}
    for fragment, k, pos in [
        (f"pos={end}&k=0", 0, end),
        (f"pos={mid}&k=0", 0, mid),
        (f"pos={end}&k=-1", -1, end),
        (f"pos={end}&k=2", 2, end),
        ("pos=0&k=0", 0, 0),
    ]:
        dom = Dom(browse(path, fragment, tmp=tmp_path))
        assert dom.body.get("data-ready") == "1", "the page's script did not finish"
        assert dom.errors == [], dom.errors
        assert sorted(dom.blocks) == list(range(n))
        step_pos = max(p for p in d["positions"] if p <= pos)
        want = {i for i, t in enumerate(d["plans"][str(k)]["trigger"]) if t is not None and step_pos > t}
        assert evicted_of(dom) == want, fragment
        assert dom.state["data-k"] == str(k) and int(dom.state["data-pos"]) == step_pos
        assert dom.state["data-evicted"] == ",".join(map(str, sorted(want)))
        assert dom.options == [str(k) for k in d["ks"]]
        assert dom.polylines == 2  # the visible curve and the no-compaction reference
        seen[fragment] = dom
    at_end, at_mid = seen[f"pos={end}&k=0"], seen[f"pos={mid}&k=0"]
    assert evicted_of(at_mid) == {0} and evicted_of(at_end) == {
        i for i, t in enumerate(d["plans"]["0"]["trigger"]) if t is not None
    }
    assert evicted_of(seen[f"pos={end}&k=-1"]) == set()
    assert evicted_of(seen[f"pos={end}&k=2"]) < evicted_of(at_end)
    # Moving the slider: blocks not generated yet are faded, the one being written is outlined.
    start = seen["pos=0&k=0"]
    assert all("future" in c for c in start.blocks.values())
    assert not any("future" in c for c in at_end.blocks.values())
    assert sum("future" in c for c in at_mid.blocks.values()) == sum(1 for u in d["units"] if u["start"] >= mid)
    assert (
        int(at_mid.state["data-visible"])
        == d["plans"]["0"]["visible"][d["positions"].index(max(p for p in d["positions"] if p <= mid))]
    )


@needs_browser
def test_browser_screenshot_and_problem_page(real_page, tmp_path: Path) -> None:
    path, d, _ = real_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "viewer.png"
    shot.unlink(missing_ok=True)
    mid = d["positions"][len(d["positions"]) // 2]
    browse(path, f"pos={mid}&k=0", screenshot=shot, tmp=tmp_path)
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    bad = (
        "<think><|block_start|> one <|block_end|><|summary_start|> m1 <|summary_end|>"
        "<|block_start|> two <|summary_start|> never closed"
    )
    page = mh.write_viewer(bad, tmp_path / "bad.html", tokenizer=None)
    dom = Dom(browse(page, "", tmp=tmp_path))
    assert dom.errors == [] and dom.body.get("data-ready") == "1"
    assert len(dom.blocks) == 2


@needs_browser
def test_browser_report_pages(report_dir: Path, tmp_path: Path) -> None:
    out = report_dir
    html = browse(out / "report.html", tmp=tmp_path)
    assert "<table>" in html and "data:image/png;base64," in html
    viewers = sorted(out.glob("viewer-*.html"))
    assert len(viewers) >= 2  # the sample has ok and malformed rows
    for v in viewers:
        dom = Dom(browse(v, "", tmp=tmp_path))
        assert dom.body.get("data-ready") == "1" and dom.errors == [], v.name
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browse(out / "report.html", screenshot=ARTIFACTS / "report.png", tmp=tmp_path)
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="the README's screenshot command calls `chromium`: `apt-get install -y chromium` to run it",
)
def test_readme_screenshot_command_runs_as_written(tmp_path: Path) -> None:
    """The README's command for docs/viewer.png (not run by test_docs: it needs the workspace's real
    traces beside the checkout) runs here as written, from a checkout-like folder beside them."""
    if not REAL.exists():
        pytest.skip(f"no real traces ({REAL})")
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(mementos-fast show \.\./shared/data/real/.*?)```", readme, re.S)
    assert block, "the README's viewer screenshot command is gone"
    ws = tmp_path / "ws"
    (ws / "repo" / "docs").mkdir(parents=True)
    (ws / "shared").symlink_to(REAL.parents[2], target_is_directory=True)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    r = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block[1]],
        cwd=ws / "repo",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    made = (ws / "repo" / "docs" / "viewer.png").read_bytes()
    assert _png_size(made) == _png_size((ROOT / "docs" / "viewer.png").read_bytes())
    page = (ws / "repo" / "viewer.html").read_text()
    assert "memento_model_outputs.jsonl, row 0" in page and "tokens" in page
