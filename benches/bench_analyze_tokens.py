"""The main job in tokens: `mementos-fast analyze --tokenizer qwen3`, end to end, against Hugging Face
`encode_batch_fast` on the same responses, in the same run; and `count_tokens` called per batch with
a tokenizer *path* against `encode_batch_fast` on one core.

Run: pytest benches/bench_analyze_tokens.py --benchmark-only -s
     (MEMENTOS_BENCH_ANALYZE_TOKENS_MB, default 256: the generated corpus, in the hub layout)

- `analyze/tokens` group: the whole `mementos-fast analyze DIR --tokenizer qwen3` in a fresh
  process, the mean of 3 such runs (interpreter start, tokenizer load and check, Parquet
  reading, parsing, statistics, token counts, replays, report; the baseline is one run) against
  `encode_batch_fast` of every response with two threads
  (`TOKENIZERS_PARALLELISM=true`, the machine's two cores), which only counts whole responses and
  starts from Python strings already in memory. The baseline encodes in batches of 1,024 rows and
  keeps only the counts: one call over the whole corpus holds every `Encoding` (ids, tokens,
  offsets...) at once and ran out of 24 GB at 1 GB of responses. `analyze` without `--tokenizer` is measured too.
  The token columns are checked against HF: `response_tokens` of every row equals the baseline's
  counts, and `block_tokens` / `summary_tokens` equal the tutorial's per-item encodes on a sample.
  The ratio and the whole-dataset time it implies (12 GB of responses in the `default` config, at
  this run's throughput plus its fixed start-up cost) are printed and kept in `extra_info`.
- `tokens/count_per_batch` group: `count_tokens(batch, "/path/tokenizer.json", threads=1)` once per
  batch of 1,024 rows, as a streaming user would call it, against `encode_batch_fast` per batch
  with `TOKENIZERS_PARALLELISM=false`. The tokenizer is loaded once per process (the cache); the
  first, cold call's extra time is recorded as `extra_info["cold_first_call_s"]`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mementos_fast as mf
from mementos_fast import reference, synthetic

tk = pytest.importorskip("tokenizers")

SHARDS = 6
DATASET_BYTES = 12e9  # responses of the `default` config: 228,557 traces, median ~13K tokens
BATCH = 1024
ANALYZE_ROUNDS = 3


@pytest.fixture(scope="session")
def qwen3_path():
    try:
        return str(mf.qwen3_tokenizer_path())
    except mf.MementoValueError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def token_hub_corpus(tmp_path_factory, bench_big):
    """A generated corpus in the hub layout (shards grouped by domain, 1% malformed rows)."""
    mb = float(os.environ.get("MEMENTOS_BENCH_ANALYZE_TOKENS_MB", 256)) if bench_big else 1.0
    root = tmp_path_factory.mktemp("hub_tokens")
    (root / "data").mkdir()
    per_shard = int(mb * 2**20 / SHARDS)
    responses: list[str] = []
    for i in range(SHARDS):
        domain = ("code", "math", "science")[i * 3 // SHARDS]
        rng = random.Random(1000 + i)
        part, size = [], 0
        while size < per_shard:
            r = synthetic.generate_trace(rng, domain, malformed="unclosed_block" if rng.random() < 0.01 else None)
            part.append(r)
            size += len(r["response"].encode())
        table = pa.table({c: [r[c] for r in part] for c in ("problem", "response", "domain", "source")})
        table = table.append_column("difficulty", pa.array([r["difficulty"] for r in part], type=pa.int64()))
        pq.write_table(table, root / "data" / f"train-{i:05d}-of-{SHARDS:05d}.parquet", row_group_size=1000)
        responses += [r["response"] for r in part]
    return root, responses, sum(len(r.encode()) for r in responses)


class _Parallelism:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        self.old = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "true" if self.enabled else "false"

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = self.old


_hf: dict[str, object] = {}


def hf_counts(tok, responses: list[str]) -> list[int]:
    """HF token counts of every response, `BATCH` rows per `encode_batch_fast` call, counts only kept."""
    return [
        len(e.ids)
        for i in range(0, len(responses), BATCH)
        for e in tok.encode_batch_fast(responses[i : i + BATCH], add_special_tokens=False)
    ]


def hf_tokenizer(path: str):
    """The Qwen3 tokenizer as HF users load it, with the delimiters registered (as analyze does)."""
    if "tok" not in _hf:
        _hf["tok"] = mf.load_tokenizer(path).tokenizer
    return _hf["tok"]


RUN = textwrap.dedent("""
    import sys, time
    t = time.perf_counter()
    from mementos_fast import cli
    args = ["analyze", sys.argv[1], "--out", sys.argv[2], "--quiet", "--no-plots"] + sys.argv[3:]
    rc = cli.main(args)
    # VmHWM: this process's peak resident set (Linux; 0 elsewhere).
    try:
        hwm = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
    except (OSError, IndexError):
        hwm = 0
    print("RC", rc, time.perf_counter() - t, hwm)
""")

#: The largest peak RSS (MiB) of the fresh `analyze` processes, per extra arguments.
_peak_mib: dict[tuple, float] = {}


def _analyze(root, out, extra: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", RUN, str(root), str(out), *extra],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    wall = time.perf_counter() - t
    assert p.returncode == 0 and "RC 0" in p.stdout, p.stderr[-2000:]
    hwm_kib = int(p.stdout.split("RC 0")[-1].split()[1])
    key = (*extra, *(env or {}).items())
    _peak_mib[key] = max(_peak_mib.get(key, 0.0), hwm_kib / 1024)
    return wall


# `..._jemalloc`: the same run with ARROW_DEFAULT_MEMORY_POOL=jemalloc instead of pyarrow's default
# (mimalloc), the package's choice until stop 20 (python/mementos_fast/_allocator.py says why it went).
IMPLS = [
    "hf_encode_batch_fast_2threads",
    "analyze_tokenizer_qwen3",
    "analyze_tokenizer_qwen3_jemalloc",
    "analyze_no_tokenizer",
]
_results: dict[str, float] = {}


@pytest.mark.parametrize("impl", IMPLS)
def test_analyze_tokens_end_to_end(benchmark, token_hub_corpus, qwen3_path, tmp_path, impl, bench_big):
    root, responses, nbytes = token_hub_corpus
    benchmark.group = "analyze/tokens"
    benchmark.extra_info.update(
        impl=impl, bytes=nbytes, rows=len(responses), fixture="hub layout, generated", baseline=impl.startswith("hf_")
    )
    tok = hf_tokenizer(qwen3_path)
    if impl.startswith("hf_"):

        def run():
            t = time.perf_counter()
            with _Parallelism(True):
                counts = hf_counts(tok, responses)
            _results[impl] = time.perf_counter() - t
            return counts

        _hf["counts"] = benchmark.pedantic(run, rounds=1, iterations=1)
        return
    out = tmp_path / "report"
    extra = ["--tokenizer", "qwen3"] if "tokenizer_qwen3" in impl else []
    env = {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"} if impl.endswith("_jemalloc") else None
    # A run lasts seconds against the baseline's minutes: the mean of ANALYZE_ROUNDS fresh
    # processes, so that a burst of noise on a shared machine does not decide the ratio alone.
    # One untimed process first: in the runs of 2026-11-30 the first process of each `--tokenizer`
    # implementation took about 1 s more than its next two (3.3-4.2 s against 2.3-3.1 s), whatever
    # the pool (the first without `--tokenizer` did not).
    rounds = ANALYZE_ROUNDS if bench_big else 1
    warmup = 1 if bench_big else 0
    last = benchmark.pedantic(_analyze, args=(root, out, extra, env), rounds=rounds, iterations=1, warmup_rounds=warmup)
    stats = getattr(benchmark, "stats", None)
    wall = stats.stats.mean if stats else last
    _results[impl] = wall
    timing = json.loads((out / "timing.json").read_text())
    rows = pq.read_table(out / "rows.parquet")
    assert timing["rows"] == rows.num_rows == len(responses)
    benchmark.extra_info["token_seconds"] = timing.get("token_seconds", 0.0)
    peak = _peak_mib.get((*extra, *(env or {}).items()), 0.0)
    if peak:  # the largest of the runs' peak RSS ("max_rss_mib": not a peak-RSS table row)
        benchmark.extra_info["max_rss_mib"] = peak
    if not extra:
        assert "response_tokens" not in rows.column_names
        return
    if "counts" not in _hf:
        with _Parallelism(True):
            _hf["counts"] = hf_counts(tok, responses)
    assert rows.column("response_tokens").to_pylist() == _hf["counts"]
    step = max(1, len(responses) // 200)
    blocks, summaries = rows.column("block_tokens").to_pylist(), rows.column("summary_tokens").to_pylist()
    for i in range(0, len(responses), step):
        p = reference.parse_trace(responses[i])
        assert blocks[i] == sum(len(tok.encode(b, add_special_tokens=False).ids) for b in p["blocks"])
        assert summaries[i] == sum(len(tok.encode(s, add_special_tokens=False).ids) for s in p["summaries"])
    base = _results.get("hf_encode_batch_fast_2threads")
    if base:
        ratio = base / wall
        # Whole dataset at this run's end-to-end throughput (fixed start-up costs included, so the
        # estimate is pessimistic for a larger corpus).
        mbps = nbytes / wall / 1e6
        estimate = DATASET_BYTES / (nbytes / wall)
        benchmark.extra_info.update(x_hf_2threads=ratio, mb_per_s=mbps, dataset_estimate_s=estimate)
        print(
            f"\nanalyze --tokenizer qwen3: {wall:.2f} s for {nbytes / 1e6:.0f} MB ({mbps:.0f} MB/s), "
            f"HF encode_batch_fast 2 threads {base:.2f} s: {ratio:.1f}x; 12 GB of responses: "
            f"{estimate / 60:.1f} min at this throughput"
        )


@pytest.mark.parametrize("impl", ["hf_encode_batch_fast_1core_per_batch", "count_tokens_path_1core_per_batch"])
def test_count_tokens_path_per_batch(benchmark, token_hub_corpus, qwen3_path, impl):
    _, responses, nbytes = token_hub_corpus
    batches = [pa.array(responses[i : i + BATCH], pa.large_string()) for i in range(0, len(responses), BATCH)]
    lists = [responses[i : i + BATCH] for i in range(0, len(responses), BATCH)]
    benchmark.group = "tokens/count_per_batch"
    benchmark.extra_info.update(impl=impl, bytes=nbytes, rows=len(responses), baseline=impl.startswith("hf_"))
    tok = hf_tokenizer(qwen3_path)
    want = None
    if impl.startswith("hf_"):

        def run():
            with _Parallelism(False):
                return [len(e.ids) for b in lists for e in tok.encode_batch_fast(b, add_special_tokens=False)]

        got = benchmark.pedantic(run, rounds=1, iterations=1)
        _hf["counts_1core"] = got
        return
    from mementos_fast.tokenizer import clear_cache

    def run():
        return [
            n for b in batches for n in mf.count_tokens(b, qwen3_path, threads=1).column("total_tokens").to_pylist()
        ]

    clear_cache()
    t = time.perf_counter()
    mf.count_tokens(batches[0], qwen3_path, threads=1)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    mf.count_tokens(batches[0], qwen3_path, threads=1)
    benchmark.extra_info["cold_first_call_s"] = cold - (time.perf_counter() - t)
    got = benchmark.pedantic(run, rounds=3, iterations=1)
    want = _hf.get("counts_1core")
    if want is None:
        want = hf_counts(tok, responses)
    assert got == want
